"""The verl reward manager gives the bundled rewards, R_cur per group included.

A hand-built verl batch (``DataProto``) of the two scripted groups' trajectories (conftest ``runs``: the verl
agent loop's outputs) is scored by ``VideoR4RewardManager`` — as a batch and one trajectory at a time through
verl's async ``run_single`` — and compared with the bundled trainer's own computation on the bundled loop's
rollouts of the same scripts: ``reward_columns`` + ``compute_rewards`` with the 7B recipe's specs, features from
a real frozen Qwen2.5-VL vision tower (the tiny model's).
"""

from __future__ import annotations

import asyncio
import logging

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from tensordict import TensorDict
from verl import DataProto
from verl.trainer.ppo.reward import load_reward_manager

from videor4.contracts.errors import UserError
from videor4.training.curriculum import load_recipe
from videor4.training.features import VisionTowerEncoder, load_vision_tower
from videor4.training.grpo_trainer import reward_columns
from videor4.training.rewards import compute_rewards, required_features
from videor4.training.verl_plugin.rewards import VideoR4RewardManager

SETTINGS = {"recipe": "qwen2.5-vl-7b", "stage": "rld", "group_timeout_s": 30}


def verl_config(tiny_model_dir, n: int = 4, num_workers: int = 1, **settings):
    return OmegaConf.create({
        "actor_rollout_ref": {"rollout": {"n": n}, "model": {"path": str(tiny_model_dir), "tokenizer_path": None}},
        "reward": {"num_workers": num_workers, "custom_reward_function": {"path": None},
                   "reward_manager": {"source": "importlib", "name": "VideoR4RewardManager",
                                      "module": {"path": "pkg://videor4.training.verl_plugin.rewards"}},
                   "reward_kwargs": {"videor4": {**SETTINGS, **settings}},
                   "reward_model": {"enable": False}, "sandbox_fusion": None},
    })


def hand_built_batch(runs, groups=(0, 1), drop: tuple[int, int] | None = None) -> DataProto:
    """One row per trajectory, as verl's reward loop hands them over: token tensors plus the dataset fields
    (uid = the prompt's group id, reward_model, extra_info, tools_kwargs) and the agent loop's extra fields."""
    picked = [(g, k, out) for g in groups for k, out in enumerate(runs.verl[g]) if (g, k) != drop]
    width_p = max(len(o.prompt_ids) for _, _, (o, _, _) in picked)
    width_r = max(len(o.response_ids) for _, _, (o, _, _) in picked)
    prompts = torch.zeros(len(picked), width_p, dtype=torch.long)
    responses = torch.zeros(len(picked), width_r, dtype=torch.long)
    attention = torch.zeros(len(picked), width_p + width_r, dtype=torch.long)
    for i, (_, _, (o, _, _)) in enumerate(picked):
        prompts[i, width_p - len(o.prompt_ids):] = torch.tensor(o.prompt_ids)
        responses[i, :len(o.response_ids)] = torch.tensor(o.response_ids)
        attention[i, width_p - len(o.prompt_ids):width_p + len(o.response_ids)] = 1

    def column(values):
        arr = np.empty(len(values), dtype=object)
        arr[:] = values
        return arr

    return DataProto(
        batch=TensorDict({"prompts": prompts, "responses": responses, "attention_mask": attention},
                         batch_size=len(picked)),
        non_tensor_batch={
            "uid": column([f"prompt-{g}" for g, _, _ in picked]),
            "session_id": column([k for _, k, _ in picked]),
            "data_source": column([item["data_source"] for _, _, (_, item, _) in picked]),
            "reward_model": column([item["reward_model"] for _, _, (_, item, _) in picked]),
            "extra_info": column([item["extra_info"] for _, _, (_, item, _) in picked]),
            "tools_kwargs": column([item["tools_kwargs"] for _, _, (_, item, _) in picked]),
            "tool_extra_fields": column([o.extra_fields for _, _, (o, _, _) in picked]),
        })


@pytest.fixture(scope="module")
def encoder(tiny_model_dir, runs):
    """The bundled trainer's default encoder: the starting checkpoint's vision tower alone, frozen."""
    return VisionTowerEncoder(load_vision_tower(tiny_model_dir), runs.processor)


def bundled_rewards(runs, encoder, groups=(0, 1), drop=None):
    """What the bundled GRPO trainer computes for the same rollouts (its own functions, its own rollouts)."""
    specs = next(s for s in load_recipe("qwen2.5-vl-7b").stages if s.name == "rld").grpo.rewards
    picked = [(g, k, r) for g in groups for k, r in enumerate(runs.bundled[g]) if (g, k) != drop]
    rollouts = [r for _, _, r in picked]
    answers = [runs.rows[g].answers for g, _, _ in picked]
    columns = reward_columns(rollouts, answers, [g for g, _, _ in picked], encoder, required_features(specs))
    return compute_rewards(specs, [[t.assistant for t in r.turns] for r in rollouts], **columns)


def test_batch_scores_equal_the_bundled_rewards(runs, encoder, tiny_model_dir):
    config = verl_config(tiny_model_dir)
    # verl's own loader builds the manager from the config (importlib source, pkg:// module path)
    # its encoder is loaded lazily from actor_rollout_ref.model.path (the stage's start), as configured
    manager = load_reward_manager(config, runs.tokenizer)
    assert isinstance(manager, VideoR4RewardManager) and manager.model_path == str(tiny_model_dir)
    results = manager.score_batch(hand_built_batch(runs))
    total, components = bundled_rewards(runs, encoder)
    assert [r["reward_score"] for r in results] == pytest.approx(total, abs=1e-9)
    for name, values in components.items():
        assert [r["reward_extra_info"][name] for r in results] == pytest.approx(values, abs=1e-9)
    # the comparison has teeth: every term is active somewhere, and R_cur differs between the groups
    assert {"accuracy", "format", "diversity", "representativeness", "curiosity"} == set(components)
    for name in ("accuracy", "format", "diversity", "representativeness"):
        assert any(v > 0 for v in components[name]), name
    curiosity = components["curiosity"]
    assert curiosity[0] == pytest.approx(0.5 * (0.3 - 0.25))  # group a: 1 of 4 used tools → bonus, 1 call
    assert curiosity[4] == pytest.approx(-0.05)  # group b: 3 of 4 used tools → no bonus, 2 calls → penalty


def test_run_single_groups_rollouts_by_uid(runs, encoder, tiny_model_dir):
    """verl 0.9.1's reward loop scores one trajectory at a time: each waits for its group, then all are scored
    together, so the values equal the batch's."""
    manager = VideoR4RewardManager(verl_config(tiny_model_dir), runs.tokenizer, settings=dict(SETTINGS),
                                   encoder=encoder)
    data = hand_built_batch(runs)

    async def score_all():
        order = [5, 0, 7, 2, 1, 6, 3, 4]  # groups interleaved, out of order
        results = await asyncio.gather(*(manager.run_single(data[i:i + 1]) for i in order))
        return [r for _, r in sorted(zip(order, results))]

    results = asyncio.run(score_all())
    total, _ = bundled_rewards(runs, encoder)
    assert [r["reward_score"] for r in results] == pytest.approx(total, abs=1e-9)
    assert manager._groups == {}


def test_a_group_that_never_fills_is_scored_after_the_timeout(runs, encoder, tiny_model_dir, caplog):
    # the timeout counts from each rollout's arrival, after its (CPU-bound) preparation: 8 s leaves the three
    # present rollouts room to arrive on a loaded machine before the first one gives up
    manager = VideoR4RewardManager(verl_config(tiny_model_dir), runs.tokenizer,
                                   settings={**SETTINGS, "group_timeout_s": 8}, encoder=encoder)
    data = hand_built_batch(runs, groups=(1,), drop=(1, 3))  # one rollout of group b failed

    async def score_all():
        return await asyncio.gather(*(manager.run_single(data[i:i + 1]) for i in range(len(data))))

    with caplog.at_level(logging.WARNING):
        results = asyncio.run(score_all())
    total, _ = bundled_rewards(runs, encoder, groups=(1,), drop=(1, 3))
    assert [r["reward_score"] for r in results] == pytest.approx(total, abs=1e-9)
    assert "3 of 4 rollouts arrived" in caplog.text


def test_several_reward_workers_are_refused(runs, tiny_model_dir):
    with pytest.raises(UserError, match="reward.num_workers=1"):
        VideoR4RewardManager(verl_config(tiny_model_dir, num_workers=4), runs.tokenizer, settings=dict(SETTINGS))
