"""``scripts/gpu_check.sh`` stays runnable: its dry run (CPU, tiny shapes) takes every path the GPU run takes —
the whole curriculum twice (the second with the IS correction on), then the curriculum under ``accelerate launch``
with the shipped DeepSpeed ZeRO-2 config — and writes the report the GPU run would. It checks the script, not a
GPU (none exists here; the real run is for a machine with one)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_gpu_check_dry_run_trains_every_stage_and_reports(tmp_path: Path) -> None:
    env = {**os.environ, "DRY_RUN": "1", "OUT": str(tmp_path), "PYTHON": sys.executable}
    proc = subprocess.run(["bash", "scripts/gpu_check.sh"], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    tiny = json.loads((tmp_path / "tiny.json").read_text())
    big = json.loads((tmp_path / "big.json").read_text())
    stages = ["01-drp-sft", "02-rld", "03-crp-sft", "04-rlc"]
    for run in (tiny["tiny"], tiny["tiny-is"], big):
        assert list(run["stages"]) == stages
        assert all(s["exported"] and s["steps"] >= 1 for s in run["stages"].values())
    assert big["zero_stage"] == "2" and big["params"] > 100_000  # launched under the ZeRO-2 config
    assert (tmp_path / "gpu_check.log").is_file()
