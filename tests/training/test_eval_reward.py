"""``videor4 eval reward``: the held-out reward of a checkpoint, with the trainer's rollouts and rewards.

The evaluator must see learning where there is some and none where there is none: the real tiny model is trained
by GRPO on a toy reward it can learn (the share of even token ids), and the evaluator, sampling fresh rollouts
with a fixed seed, must score the trained checkpoint above its start, prompt by prompt; the same checkpoint and
seed must give the same numbers (the paired comparison relies on it) and another seed other samples.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.training.toy_data import OPS, PROMPT, toy_dataset
from videor4.contracts.shard_io import read_stage
from videor4.contracts.view import ShardView
from videor4.training.grpo_config import GRPOConfig
from videor4.training.grpo_trainer import GRPOTrainer
from videor4.training.reward_eval import reward_on_rows
from videor4.training.stage_trainer import load_policy


@pytest.fixture(scope="module")
def toy(tmp_path_factory, tiny_video):
    return toy_dataset(tmp_path_factory.mktemp("toy"), tiny_video)


def test_heldout_reward_sees_what_grpo_taught(tiny_model_dir, toy, tmp_path, parity_reward) -> None:
    data_root, shards = toy
    rows = read_stage(shards, "rld")
    config = GRPOConfig(num_generations=8, prompts_per_step=2, micro_batch_size=8, max_steps=16, beta=0.04,
                        learning_rate=2e-2, lr_scheduler="constant", save_steps=100, report_to=[],
                        rollout={"max_new_tokens": 6, "max_turn_tokens": 6}, rewards=parity_reward)
    view = ShardView(prompt=PROMPT, ops=OPS)

    def held_out(model, seed: int = 0) -> dict:
        return reward_on_rows(model, rows, config, view, data_root, seed=seed)

    start = held_out(tiny_model_dir)
    assert held_out(tiny_model_dir) == start, "same checkpoint and seed: the same samples and rewards"
    assert held_out(tiny_model_dir, seed=1)["reward"] != start["reward"], "the seed draws other samples"
    assert start["prompts"] == len(rows) and start["rollouts"] == 8 * len(rows)
    assert sorted(start["per_prompt"]) == sorted(r.sample_id for r in rows)

    model, processor = load_policy(tiny_model_dir)
    ref = load_policy(tiny_model_dir)[0]
    final = GRPOTrainer(model, processor, rows, config, tmp_path / "rl", data_root=data_root, prompt=PROMPT,
                        ops=OPS, ref_model=ref).train()
    after = held_out(final)
    diff = [after["per_prompt"][k] - start["per_prompt"][k] for k in start["per_prompt"]]
    assert after["reward"] > start["reward"] + 0.1, (start["reward"], after["reward"])
    assert all(d > 0 for d in diff), diff


def test_cli_names_the_grpo_stages_when_the_stage_is_wrong(tiny_model_dir, toy, tmp_path) -> None:
    _, shards = toy
    recipe = tmp_path / "r.yaml"
    recipe.write_text("name: r\nmodel: null\nstages:\n  - {name: warm, kind: sft, data: {stages: [drp]}}\n"
                      "  - {name: rld, kind: grpo, data: {stages: [rld]}}\n")
    run = subprocess.run([sys.executable, "-m", "videor4.pipelines.cli", "eval", "reward", "--model",
                          str(tiny_model_dir), "--shards", str(shards), "--recipe", str(recipe), "--stage", "warm"],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 2 and "Traceback" not in run.stderr, run.stderr
    assert "no GRPO stage named 'warm' (GRPO stages: rld)" in run.stderr
