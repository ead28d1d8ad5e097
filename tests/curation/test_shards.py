"""Trajectories and shards from the real sample run: schema, three readers, re-execution, determinism, viewer."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from tests.conftest import SampleRun
from videor4.contracts.executor import ClipCropExecutor
from videor4.contracts.media import open_video
from videor4.contracts.shard_codec import shard_messages_to_chat, to_image_ref
from videor4.contracts.shard_io import content_hash, read_manifest, read_stage, shard_files
from videor4.contracts.shard_schema import COT_SCHEMA, RL_SCHEMA, CoTRow
from videor4.contracts.tool_protocol import parse_tool_calls
from videor4.curation.config import load_config
from videor4.curation.sample import SAMPLE_SPLIT, sample_root
from videor4.pipelines.cli import main
from videor4.pipelines.curate_flow import run_curate


def test_every_question_with_answer_evidence_yields_drp_and_crp(sample_run: SampleRun) -> None:
    questions = pd.read_parquet(sample_run.out / "questions.parquet")
    cands = pd.read_parquet(sample_run.out / "trajectories.parquet")
    with_answer = set(questions.loc[questions.status == "answer", "question_id"])
    assert with_answer
    for q in with_answer:
        stages = set(cands.loc[cands.question_id == q, "stage"])
        assert {"drp", "crp"} <= stages, q
    # Most candidates verify; failures carry a reason.
    assert cands.verified.mean() >= 0.5
    assert (cands.loc[~cands.verified, "reason"].str.len() > 0).all()
    assert (cands.loc[cands.verified, "reason"] == "").all()


def test_shards_load_in_pandas_pyarrow_dataset_and_hf_datasets(sample_run: SampleRun) -> None:
    from datasets import load_dataset

    manifest = read_manifest(sample_run.shards)
    assert manifest["targets"] == {"drp": 7000, "crp": 10000, "rld": 15000, "rlc": 15000}
    assert sum(manifest["counts"].values()) > 0
    for stage, schema in (("drp", COT_SCHEMA), ("crp", COT_SCHEMA), ("rld", RL_SCHEMA), ("rlc", RL_SCHEMA)):
        files = shard_files(sample_run.shards, stage)
        assert files, stage
        n = manifest["counts"][stage]
        assert pq.read_schema(files[0]).equals(schema, check_metadata=False)
        assert pq.read_schema(files[0]).metadata[b"videor4.schema_version"] == b"1.0"
        assert sum(len(pd.read_parquet(f)) for f in files) == n
        assert ds.dataset([str(f) for f in files], format="parquet").count_rows() == n
        if n:
            hf = load_dataset("parquet", data_files=[str(f) for f in files], split="train")
            assert len(hf) == n and hf[0]["sample_id"] == sorted(pd.read_parquet(files[0]).sample_id)[0]
        rows = read_stage(sample_run.shards, stage)
        assert [r.sample_id for r in rows] == sorted(r.sample_id for r in rows)  # stable order
        assert all(r.qc.status == "auto_pass" and r.provenance.config_hash == sample_run.cfg.config_hash
                   and r.provenance.ocr_backend.startswith("rapidocr") for r in rows)


def test_no_question_reused_across_a_stage_pairing(sample_run: SampleRun) -> None:
    ids = {s: {r.question_id for r in read_stage(sample_run.shards, s)} for s in ("drp", "crp", "rld", "rlc")}
    assert not ids["drp"] & ids["rld"]
    assert not ids["crp"] & ids["rlc"]


def test_cot_trajectories_reexecute_to_the_stored_observations(sample_run: SampleRun) -> None:
    """Running the assistant's tool calls on the video again yields exactly the stored image references."""
    rows = [r for s in ("drp", "crp") for r in read_stage(sample_run.shards, s)]
    assert rows
    for row in rows:
        assert isinstance(row, CoTRow) and row.verified
        chat, refs = shard_messages_to_chat(row.messages)
        assert chat[-1]["role"] == "assistant" and "<answer>" in chat[-1]["content"]
        with open_video(sample_root() / row.video.path, video_id=row.video_id) as reader:
            ex = ClipCropExecutor(reader, row.initial_frames, sample_run.cfg.trajectories.ops)
            produced = [r for r in ex.context]
            calls = []
            for m in row.messages:
                if m.role == "assistant":
                    for obs in ex.execute_text(m.text):
                        assert obs.ok, obs.message
                        produced += obs.refs
                    calls += [c.name for c in parse_tool_calls(m.text)]
        assert produced == refs
        assert calls == row.ops
        assert (row.stage == "drp") == (len(set(row.ops)) == 1)


def test_synthesis_is_deterministic(sample_run: SampleRun, tmp_path: Path) -> None:
    """Two syntheses of the same analysis give identical shard content (fresh synthesis, cached OCR)."""
    shutil.copytree(sample_run.out / "cache" / "analysis", tmp_path / "cache" / "analysis")
    run_curate(sample_root(), SAMPLE_SPLIT, tmp_path, sample_run.cfg, workers=2, progress=False)
    assert content_hash(tmp_path / "shards") == content_hash(sample_run.shards)


def test_embed_media_stores_decodable_jpegs(sample_run: SampleRun, tmp_path: Path) -> None:
    shutil.copytree(sample_run.out / "cache", tmp_path / "cache")
    cfg = load_config(None, {"sampling.mode": "fps", "sampling.fps": 2.5, "shards.embed_media": True})
    run_curate(sample_root(), SAMPLE_SPLIT, tmp_path, cfg, limit=2, workers=1, progress=False)
    rows = read_stage(tmp_path / "shards", "drp") + read_stage(tmp_path / "shards", "crp")
    assert rows
    row = rows[0]
    with open_video(sample_root() / row.video.path) as reader:
        ex = ClipCropExecutor(reader, row.initial_frames, cfg.trajectories.ops)
        for ref in (r for m in row.messages for r in m.images):
            img = cv2.imdecode(np.frombuffer(ref.jpeg, np.uint8), cv2.IMREAD_COLOR)
            assert img.shape[:2] == ex.render(to_image_ref(ref)).shape[:2]


def test_viewer_html_renders_in_headless_chromium(sample_run: SampleRun, tmp_path: Path) -> None:
    shard = shard_files(sample_run.shards, "crp")[0] if shard_files(sample_run.shards, "crp") else \
        shard_files(sample_run.shards, "drp")[0]
    html = tmp_path / "sample.html"
    assert main(["shards", "inspect", str(shard), "--html", str(html)]) == 0
    text = html.read_text()
    assert "data:image/jpeg;base64," in text and "&lt;tool_call&gt;" in text
    png = tmp_path / "shot.png"
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    assert chromium, "chromium is installed by `make test` (scripts/install_system_deps.sh)"
    subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                    "--disable-component-update", "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}",
                    f"--screenshot={png}", "--window-size=1100,1400", html.as_uri()],
                   check=True, capture_output=True, timeout=120)
    shot = cv2.imread(str(png))
    assert shot is not None and shot.shape[0] > 500
    assert shot.std() > 20  # not a blank page: text, frames and boxes were drawn


def test_inspect_errors(sample_run: SampleRun, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["shards", "inspect", str(tmp_path / "nope.parquet"), "--html", str(tmp_path / "x.html")]) == 2
    assert main(["shards", "inspect", str(sample_run.shards), "--sample", "missing", "--html",
                 str(tmp_path / "x.html")]) == 2
    assert "not in" in capsys.readouterr().err
    assert main(["shards", "stats", str(sample_run.shards)]) == 0
