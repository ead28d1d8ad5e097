"""Crash safety (SIGKILL at several points, then resume) and scale-out on a real local Dask cluster."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq

from videor4.contracts.shard_io import content_hash, iter_rows
from videor4.curation.config import load_config
from videor4.curation.sample import SAMPLE_SPLIT, sample_root
from videor4.pipelines.cli import main
from videor4.pipelines.curate_flow import run_curate

# Small but complete: 3 videos, 4 frames each → real OCR, detection, synthesis and shards in seconds.
SMALL = {"sampling.mode": "uniform", "sampling.num_frames": 4}
LIMIT = 3


def _cli(out: Path) -> list[str]:
    return [sys.executable, "-m", "videor4.pipelines.cli", "curate", "--data-root", str(sample_root()), "--split",
            SAMPLE_SPLIT, "--out", str(out), "--limit", str(LIMIT), "--no-progress", "--config", str(out.parent /
                                                                                                  "small.yaml")]


def _env() -> dict[str, str]:
    from prefect.settings import PREFECT_API_URL

    # Subprocesses join the session's test Prefect server instead of starting their own.
    return {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value() or "", "PYTHONUNBUFFERED": "1"}


def _kill_when(out: Path, ready, timeout: float = 240.0) -> bool:
    """Start a curation subprocess and SIGKILL it as soon as ``ready(out)`` holds; False if it finished first."""
    proc = subprocess.Popen(_cli(out), env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + timeout
    try:
        while time.time() < deadline:
            if proc.poll() is not None:
                return False
            if ready(out):
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                return True
            time.sleep(0.05)
        raise AssertionError("kill point never reached")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _count(out: Path, stage: str) -> int:
    return len(list((out / "cache" / stage).glob("*.json")))


def test_sigkill_at_several_points_then_resume_matches_a_clean_run(prefect_home: Path, tmp_path: Path) -> None:
    import yaml

    (tmp_path / "small.yaml").write_text(yaml.safe_dump({"sampling": {"mode": "uniform", "num_frames": 4}}))
    clean = tmp_path / "clean"
    cfg = load_config(tmp_path / "small.yaml")
    run_curate(sample_root(), SAMPLE_SPLIT, clean, cfg, limit=LIMIT, workers=2, progress=False)
    expected = content_hash(clean / "shards")

    out = tmp_path / "killed"
    kills = [
        lambda o: (o / "run.json").is_file(),            # right after start, before any artifact
        lambda o: _count(o, "analysis") >= 1,             # mid-analysis
        lambda o: _count(o, "synthesis") >= 1,            # mid-synthesis
    ]
    killed = sum(_kill_when(out, ready) for ready in kills)
    assert killed >= 2, "the run finished before the kill points; make the workload larger"
    status = json.loads((out / "run.json").read_text())
    assert status["status"] == "running"  # a killed run never claims completion
    assert main(["runs", "status", str(out)]) == 0
    analysed_before, synthesized_before = _count(out, "analysis"), _count(out, "synthesis")
    assert analysed_before >= 1 and synthesized_before >= 1  # the kills left finished work behind

    done = subprocess.run(_cli(out), env=_env(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads((out / "run.json").read_text())["status"] == "completed"
    # The resume reused every finished artifact: no OCR and no synthesis for those videos (from its counters).
    stats = json.loads((out / "stats.json").read_text())
    assert stats["videos_cached"] == analysed_before and stats["videos_synthesis_cached"] == synthesized_before
    fresh = stats["videos_ok"] - analysed_before
    assert (stats["ocr_calls"] > 0) == (fresh > 0)  # OCR ran only for the videos that were not finished
    assert content_hash(out / "shards") == expected
    ids = [r.sample_id for r in iter_rows(out / "shards")]
    assert len(ids) == len(set(ids)) and ids
    assert pq.read_table(out / "evidence.parquet").equals(pq.read_table(clean / "evidence.parquet"))
    assert not list((out / "cache").glob("*/.*.tmp"))


def test_config_change_invalidates_only_affected_stages(prefect_home: Path, tmp_path: Path) -> None:
    cfg = load_config(None, SMALL)
    first = run_curate(sample_root(), SAMPLE_SPLIT, tmp_path, cfg, limit=1, workers=1, progress=False)
    assert first.ocr_calls > 0
    assert first.videos_synthesis_cached == 0 and first.trajectories > 0
    same = run_curate(sample_root(), SAMPLE_SPLIT, tmp_path, cfg, limit=1, workers=1, progress=False)
    assert same.ocr_calls == 0 and same.videos_synthesis_cached == 1 and same.synthesis_seconds == 0
    looser = load_config(None, {**SMALL, "trajectories.verify_min_score": 0.5})
    again = run_curate(sample_root(), SAMPLE_SPLIT, tmp_path, looser, limit=1, workers=1, progress=False)
    assert again.ocr_calls == 0 and again.videos_cached == 1  # synthesis settings do not touch OCR
    assert again.videos_synthesis_cached == 0 and again.synthesis_seconds > 0  # but synthesis reruns
    other_ocr = load_config(None, {**SMALL, "ocr.min_score": 0.6})
    third = run_curate(sample_root(), SAMPLE_SPLIT, tmp_path, other_ocr, limit=1, workers=1, progress=False)
    assert third.ocr_calls > 0 and third.videos_cached == 0


def test_dask_cluster_of_two_workers_gives_identical_output(prefect_home: Path, tmp_path: Path) -> None:
    cfg = load_config(None, SMALL)
    local = run_curate(sample_root(), SAMPLE_SPLIT, tmp_path / "local", cfg, limit=2, workers=2, progress=False)
    dask = run_curate(sample_root(), SAMPLE_SPLIT, tmp_path / "dask", cfg, limit=2, workers=2, progress=False,
                      runner="dask")
    assert dask.videos_ok == local.videos_ok == 2
    assert content_hash(tmp_path / "dask" / "shards") == content_hash(tmp_path / "local" / "shards")
    assert pq.read_table(tmp_path / "dask" / "evidence.parquet").equals(
        pq.read_table(tmp_path / "local" / "evidence.parquet"))
    run = json.loads((tmp_path / "dask" / "run.json").read_text())
    assert run["runner"] == "dask" and run["status"] == "completed"
