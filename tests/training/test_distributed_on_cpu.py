"""Multi-process and DeepSpeed training on CPU, compared with a plain one-process run of the same global batch.

* Two real ranks (torchrun, gloo) give the same update as one rank with the doubled batch — SFT, and GRPO where
  one rank filters all its groups and must still join every collective of the other's passes (no hang).
* The shipped DeepSpeed configs (``training/accelerate_configs/deepspeed_zero{2,3}.yaml``) launch through
  ``accelerate launch`` and build real DeepSpeed engines on DeepSpeed's CPU accelerator; with two passes per step
  they take exactly one optimizer step per step with the un-rescaled loss (same losses and weights as the plain
  run). DeepSpeed on CPU runs one process here: accelerate does not set up a multi-process DeepSpeed group
  without GPUs (each process would see world 1 while DeepSpeed sees 2); multi-GPU ZeRO is what
  ``scripts/gpu_check.sh`` checks. FSDP: accelerate refuses it without an accelerator device ("There are
  currently no available devices found"), so it is checked on a GPU only.

Each run is ``tests/training/distributed_worker.py`` in its own process group; a hang hits the subprocess
timeout, never the suite's.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

REPO = Path(__file__).resolve().parents[2]
WORKER = REPO / "tests" / "training" / "distributed_worker.py"
CONFIGS = REPO / "training" / "accelerate_configs"


def _torchrun(world: int) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(world)]


def _accelerate(config: str) -> list[str]:
    accelerate = shutil.which("accelerate", path=str(Path(sys.executable).parent))
    assert accelerate, "accelerate's launcher is installed with the train extra"
    return [accelerate, "launch", "--config_file", str(CONFIGS / f"{config}.yaml"), "--num_processes", "1",
            "--mixed_precision", "no"]


def _run(mode: str, launcher: list[str], out: Path, model_dir: Path, video: Path) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run([*launcher, str(WORKER), mode, str(out), str(model_dir), str(video)],
                          cwd=REPO, capture_output=True, text=True, timeout=900,
                          env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", "DS_ACCELERATOR": "cpu"})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    return {"done": json.loads((out / "done.json").read_text()),
            "weights": load_file(str(out / "weights.safetensors")),
            "metrics": json.loads((out / "metrics.json").read_text())}


def _assert_same_update(one: dict, other: dict, base: dict) -> None:
    """Equal within float noise: 3e-5 is 3 % of one AdamW step at lr 1e-3 (reduction order differs between
    backends, and Adam amplifies it for gradients near its epsilon); an extra or a missing optimizer step moves
    the weights by ~1e-3. A rescaled loss barely moves Adam's step, which is why grad norms are compared too."""
    assert one["weights"].keys() == other["weights"].keys() == base.keys()
    for name, a in one["weights"].items():
        diff = float((other["weights"][name] - a).abs().max())
        assert diff <= 3e-5, f"{name}: max difference {diff:.2e}"
    moved = sum(not torch.equal(a, base[k]) for k, a in one["weights"].items())
    assert moved > len(base) // 2  # the update is real: most tensors changed


@pytest.fixture(scope="module")
def base_weights(tiny_model_dir) -> dict:
    from videor4.training.stage_trainer import load_policy

    return {k: v.detach().clone() for k, v in load_policy(tiny_model_dir)[0].state_dict().items()}


@pytest.fixture(scope="module")
def plain(tiny_model_dir, tiny_video, tmp_path_factory) -> dict:
    """The reference: one process, no DeepSpeed, two passes per step (SFT) / both prompts (GRPO)."""
    root = tmp_path_factory.mktemp("plain")
    return {mode: _run(mode, _torchrun(1), root / mode, tiny_model_dir, tiny_video) for mode in ("sft", "grpo")}


def test_sft_two_ranks_equal_one_rank_with_the_doubled_batch(plain, tiny_model_dir, tiny_video, tmp_path,
                                                            base_weights) -> None:
    one = plain["sft"]
    two = _run("sft", _torchrun(2), tmp_path, tiny_model_dir, tiny_video)
    assert (one["done"]["world"], two["done"]["world"], two["done"]["backend"]) == (1, 2, "MULTI_CPU")
    _assert_same_update(one, two, base_weights)
    assert [m["loss"] for m in one["metrics"]] == pytest.approx([m["loss"] for m in two["metrics"]], rel=1e-5)
    assert [m["tokens"] for m in one["metrics"]] == [m["tokens"] for m in two["metrics"]]


def test_grpo_two_ranks_one_of_them_filtering_all_its_groups(plain, tiny_model_dir, tiny_video, tmp_path,
                                                             base_weights) -> None:
    """Rank 0's only group has all-equal rewards (no rollout to train); rank 1's has signal. Rank 0 pads with
    zero-weight passes so every collective is matched, and the update equals the one-rank run's."""
    one = plain["grpo"]
    two = _run("grpo", _torchrun(2), tmp_path, tiny_model_dir, tiny_video)
    _assert_same_update(one, two, base_weights)
    assert len(one["metrics"]) == len(two["metrics"]) == 2
    for a, b in zip(one["metrics"], two["metrics"]):
        assert a["trained_rollouts"] == 4 and b["trained_rollouts"] == 2  # per rank: 4 on one, mean of 0 and 4
        assert a["zero_advantage_group_fraction"] == 0.5 and b["zero_advantage_group_fraction"] == 0.5
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5, abs=1e-7)
        assert a["kl"] == pytest.approx(b["kl"], rel=1e-5, abs=1e-9)
    assert two["metrics"][1]["kl"] > 0  # the second step drifts from the frozen reference: its term is exercised


@pytest.mark.parametrize("config", ["deepspeed_zero2", "deepspeed_zero3"])
@pytest.mark.parametrize("mode", ["sft", "grpo"])
def test_shipped_deepspeed_configs_launch_and_step_once_per_accumulation_window(
        plain, mode, config, tiny_model_dir, tiny_video, tmp_path, base_weights) -> None:
    ds = _run(mode, _accelerate(config), tmp_path, tiny_model_dir, tiny_video)
    stage = int(config[-1])
    assert ds["done"]["backend"] == "DEEPSPEED" and ds["done"]["zero_stage"] == stage
    assert ds["done"]["sharded"] == (stage == 3)  # ZeRO-3: gathered generation, lockstep, a DeepSpeed reference
    _assert_same_update(plain[mode], ds, base_weights)
    for a, b in zip(plain[mode]["metrics"], ds["metrics"]):
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-5, abs=1e-7)
        assert b["grad_norm"] == pytest.approx(a["grad_norm"], rel=1e-4)  # DeepSpeed's own clip norm: unscaled
