"""The four-stage curriculum end-to-end through ``videor4 train`` on the tiny model, resume/skip, recipe checks,
the bundled recipes and accelerate configs, and (when it exists) ``videor4 eval run`` on the final checkpoint."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import yaml

from tests.training.toy_data import VIEW, toy_dataset, toy_recipe
from videor4.contracts.errors import UserError
from videor4.pipelines.cli import main
from videor4.training.curriculum import RECIPES_DIR, load_recipe

STAGES = ["drp-sft", "rld", "crp-sft", "rlc"]


def _recipe(path: Path) -> Path:
    return toy_recipe(
        path, sft={"max_steps": 2, "learning_rate": 1e-3, "per_device_batch_size": 2, "save_steps": 1, "report_to": []},
        grpo={"max_steps": 1, "learning_rate": 1e-3, "num_generations": 2, "micro_batch_size": 2,
              "rollout": {"max_new_tokens": 8, "max_turn_tokens": 8}, "beta": 0.04, "report_to": ["tensorboard"]})


@pytest.fixture(scope="module")
def run(tmp_path_factory, tiny_video):
    """One 4-stage run through the CLI (shared by the tests below)."""
    root = tmp_path_factory.mktemp("curriculum")
    data_root, shards = toy_dataset(root, tiny_video)
    recipe = _recipe(root / "recipe.yaml")
    args = ["train", "--recipe", str(recipe), "--output", str(root / "out"), "--shards", str(shards),
            "--data-root", str(data_root)]
    assert main(args) == 0
    return root, args, data_root


def test_four_stages_each_start_from_the_previous_one(run) -> None:
    from videor4.training.stage_trainer import read_metrics

    root, _, _ = run
    out = root / "out"
    dirs = [out / f"{k:02d}-{name}" for k, name in enumerate(STAGES, start=1)]
    previous = out / "base-model"
    for d in dirs:
        done = json.loads((d / "stage_done.json").read_text())
        assert (d / "final" / "model.safetensors").is_file() and (d / "final" / "tokenizer.json").is_file()
        assert Path(done["init"]) == previous  # and, for RL stages, the KL reference
        previous = Path(done["final"])
        metrics = read_metrics(d)
        assert [m["step"] for m in metrics] == list(range(1, done["steps"] + 1))
    assert {"loss", "tokens", "learning_rate"} <= read_metrics(dirs[0])[-1].keys()
    rl = read_metrics(dirs[3])[-1]
    for key in ("reward", "reward/accuracy", "reward/format", "reward/diversity", "reward/representativeness",
                "reward/curiosity", "tool_call_rate", "calls_per_rollout", "accuracy", "kl", "clip_fraction"):
        assert key in rl
    assert (dirs[3] / "tb").is_dir()
    assert [p.name for p in (dirs[0] / "checkpoints").iterdir()] == ["step-000001"]  # mid-stage only


def test_resume_skips_finished_stages_and_a_plain_rerun_refuses(run, capsys) -> None:
    root, args, _ = run
    final = root / "out" / "04-rlc" / "final" / "model.safetensors"
    before = final.stat().st_mtime_ns
    assert main(args + ["--resume"]) == 0
    assert final.stat().st_mtime_ns == before
    assert capsys.readouterr().out.count("done, skipping") == 4
    assert main(args) == 2
    assert "--resume" in capsys.readouterr().err


def test_eval_run_scores_the_final_checkpoint(run, tmp_path) -> None:
    root, _, data_root = run
    preds = tmp_path / "preds.jsonl"
    code = main(["eval", "run", "--model", str(root / "out" / "04-rlc" / "final"), "--data-root", str(data_root),
                 "--split", "toy", "--out", str(preds)])
    assert code == 0
    rows = [json.loads(line) for line in preds.read_text().splitlines() if line.strip()]
    assert sorted(r["question_id"] for r in rows) == [1, 2, 3, 4]


def test_a_recipe_view_that_conflicts_with_the_shards_is_refused(tmp_path, tiny_video, capsys) -> None:
    """The toy shards were written for a 3-frame view; a recipe asking for 4 frames must not train on them."""
    data_root, shards = toy_dataset(tmp_path, tiny_video)
    recipe = yaml.safe_load(_recipe(tmp_path / "recipe.yaml").read_text())
    recipe["prompt"], recipe["ops"] = {"num_frames": 4}, {"max_calls": 1}  # max_calls alone would be fine
    (tmp_path / "four.yaml").write_text(yaml.safe_dump(recipe))
    code = main(["train", "--recipe", str(tmp_path / "four.yaml"), "--output", str(tmp_path / "out"),
                 "--shards", str(shards), "--data-root", str(data_root)])
    err = capsys.readouterr().err
    assert code == 2 and "prompt.num_frames: recorded 3, requested 4" in err and "max_calls" not in err
    assert not (tmp_path / "out" / "01-drp-sft" / "final").exists()


def test_eval_run_takes_the_checkpoints_view_and_refuses_a_conflicting_one(run, tmp_path, capsys) -> None:
    from videor4.contracts.view import load_view

    root, _, data_root = run
    final = root / "out" / "04-rlc" / "final"
    assert load_view(final) == VIEW  # the checkpoint records the view it was trained with
    code = main(["eval", "run", "--model", str(final), "--data-root", str(data_root), "--split", "toy",
                 "--out", str(tmp_path / "p.jsonl"), "--frames", "5"])
    assert code == 2 and "prompt.num_frames: recorded 3, requested 5" in capsys.readouterr().err


def test_recipe_errors_are_one_line_user_errors(tmp_path, capsys) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nstages:\n  - {name: a, kind: sft, data: {stages: [drp]}, sft: {lerning_rate: 1}}\n")
    with pytest.raises(UserError, match="lerning_rate"):
        load_recipe(bad)
    assert main(["train", "--recipe", str(tmp_path / "missing.yaml")]) == 2
    assert "tiny-cpu" in capsys.readouterr().err  # lists the bundled recipes
    wrong = tmp_path / "wrong.yaml"
    wrong.write_text(yaml.safe_dump({"name": "w", "build_tiny_model": True, "stages": [
        {"name": "a", "kind": "sft", "data": {"stages": ["rld"]}}]}))
    assert main(["train", "--recipe", str(wrong), "--output", str(tmp_path / "o"), "--shards", str(tmp_path)]) == 2
    assert "reads drp/crp" in capsys.readouterr().err


@pytest.mark.parametrize("name", sorted(p.stem for p in RECIPES_DIR.glob("*.yaml")))
def test_bundled_recipes_validate(name) -> None:
    recipe = load_recipe(name)
    kinds = [(s.name, s.kind) for s in recipe.stages]
    if name in ("tiny-cpu", "qwen2.5-vl-7b", "ablation-no-rcur"):
        assert kinds == [("drp-sft", "sft"), ("rld", "grpo"), ("crp-sft", "sft"), ("rlc", "grpo")]
    rl = [s.grpo for s in recipe.stages if s.kind == "grpo"]
    if name == "qwen2.5-vl-7b":
        g = rl[0]
        assert (g.num_generations, g.beta, g.learning_rate, g.rollout.max_new_tokens, g.epsilon) == (8, 0.04, 1e-6, 768, 0.2)
        assert recipe.prompt.num_frames == 16 and recipe.prompt.frame_max_pixels == 128 * 28 * 28
        assert recipe.ops.max_calls == 3 and g.engine == "vllm" and recipe.model is None
    if name == "ablation-no-rcur":
        assert all("curiosity" not in [r.name for r in g.rewards] for g in rl)
    if name == "ablation-drp-crp-rlc":
        assert kinds == [("drp-sft", "sft"), ("crp-sft", "sft"), ("rlc", "grpo")]
    if name == "ablation-crp-sft-only":
        assert kinds == [("crp-sft", "sft")]


@pytest.mark.parametrize("name", ["deepspeed_zero2", "deepspeed_zero3", "fsdp"])
def test_accelerate_configs_load(name) -> None:
    from accelerate.commands.config.config_args import load_config_from_file

    config = load_config_from_file(str(RECIPES_DIR.parent / "accelerate_configs" / f"{name}.yaml"))
    assert config.mixed_precision == "bf16"
    assert config.distributed_type.value == ("FSDP" if name == "fsdp" else "DEEPSPEED")


@pytest.mark.gpu
def test_tiny_recipe_trains_in_bf16_on_cuda(tmp_path, tiny_video) -> None:
    """The four stages on a CUDA device in bf16 (skipped visibly without one): every stage trains and exports."""
    import torch

    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    from videor4.training.stage_trainer import make_accelerator, read_metrics

    assert make_accelerator("auto").mixed_precision == "bf16"
    data_root, shards = toy_dataset(tmp_path, tiny_video)
    recipe = yaml.safe_load(_recipe(tmp_path / "recipe.yaml").read_text())
    recipe["mixed_precision"] = "bf16"
    (tmp_path / "bf16.yaml").write_text(yaml.safe_dump(recipe))
    assert main(["train", "--recipe", str(tmp_path / "bf16.yaml"), "--output", str(tmp_path / "out"),
                 "--shards", str(shards), "--data-root", str(data_root)]) == 0
    for k, name in enumerate(STAGES, start=1):
        log = read_metrics(tmp_path / "out" / f"{k:02d}-{name}")
        assert log and all(math.isfinite(m["loss"]) for m in log)
        assert (tmp_path / "out" / f"{k:02d}-{name}" / "final" / "config.json").is_file()
