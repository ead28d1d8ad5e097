"""A curriculum killed (SIGKILL) in the middle of stage 3 and resumed in a fresh process ends with the weights of an
uninterrupted run — end to end through ``videor4 train``, each run in its own process.

This is the failure a shared Accelerator caused: stage 3's checkpoint also held stages 1–2's models, so the
resumed process loaded the *previous* stage's weights into stage 3 (106 % away from an uninterrupted run).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch
from safetensors.torch import load_file

from tests.training.toy_data import toy_dataset, toy_recipe

REPO = Path(__file__).resolve().parents[2]
STAGES = ["drp-sft", "rld", "crp-sft", "rlc"]


def _recipe(path: Path) -> Path:
    sft = {"max_steps": 3, "learning_rate": 1e-3, "per_device_batch_size": 2, "save_steps": 1, "report_to": []}
    grpo = {"max_steps": 2, "learning_rate": 1e-3, "num_generations": 2, "micro_batch_size": 2, "save_steps": 1,
            "rollout": {"max_new_tokens": 8, "max_turn_tokens": 8}, "beta": 0.04, "report_to": []}
    # stage 3 is long enough to be killed in its middle
    return toy_recipe(path, sft=sft, grpo=grpo, name="resume-test", stage3_sft={**sft, "max_steps": 16, "save_steps": 2})


def _train(args: list[str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "videor4.pipelines.cli", "train", *args], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})


def _weights(out: Path, k: int) -> dict:
    return load_file(str(out / f"{k:02d}-{STAGES[k - 1]}" / "final" / "model.safetensors"))


def test_kill_in_stage_3_and_resume_in_a_fresh_process_gives_the_uninterrupted_weights(tmp_path, tiny_video) -> None:
    data_root, shards = toy_dataset(tmp_path, tiny_video)
    recipe = _recipe(tmp_path / "recipe.yaml")
    common = ["--recipe", str(recipe), "--shards", str(shards), "--data-root", str(data_root)]

    clean = _train([*common, "--output", str(tmp_path / "clean")])
    assert clean.wait(timeout=900) == 0, clean.stdout.read()[-3000:]

    out = tmp_path / "killed"
    proc = _train([*common, "--output", str(out)])
    mid = out / "03-crp-sft" / "checkpoints" / "step-000006" / "trainer_state.json"
    deadline = time.time() + 900
    while not mid.is_file() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    assert mid.is_file() and proc.poll() is None, "the run ended before stage 3's step-6 checkpoint"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    assert not (out / "03-crp-sft" / "final").exists()  # killed mid-stage: stages 1-2 done, stage 3 not

    resumed = _train([*common, "--output", str(out), "--resume"])
    log = resumed.stdout.read()
    assert resumed.wait(timeout=900) == 0, log[-3000:]
    assert "drp-sft: done, skipping" in log and "rld: done, skipping" in log
    for k in (3, 4):  # the interrupted stage and the one after it end on exactly the uninterrupted weights
        a, b = _weights(tmp_path / "clean", k), _weights(out, k)
        assert a.keys() == b.keys()
        different = [name for name in a if not torch.equal(a[name], b[name])]
        assert different == [], f"stage {k}: {len(different)} tensors differ, e.g. {different[:3]}"
    # and stage 3 really trained past its starting point (the comparison is not between two copies of stage 2)
    start, end = _weights(out, 2), _weights(out, 3)
    assert any(not torch.equal(start[name], end[name]) for name in start)
