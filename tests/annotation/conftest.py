"""A real Label Studio for the annotation tests, started fast from a migrated template data dir.

First start of Label Studio migrates its SQLite DB (~35–45 s on 2 cores). ``ls_template`` does that once
into ``$VIDEOR4_LS_TEMPLATE_DIR`` (default ``<repo>/.cache/labelstudio-template-<version>``, kept across
sessions; delete it to rebuild) and every test module copies it into a temp dir and starts its own server
on a free 127.0.0.1 port (~5–10 s), terminated by PID at module teardown. The template holds the admin user
and the API token in its 0600 credentials file, so copies log in with the same token.

The server binary comes from ``.venv-labelstudio`` (``make labelstudio``) or ``$VIDEOR4_LABEL_STUDIO_BIN``;
without it these tests fail with that instruction rather than skip: QC cannot be tested without a server.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from videor4.annotation.server import LabelStudioServer, ServerConfig, find_binary, free_port
from videor4.contracts.errors import UserError

REPO = Path(__file__).resolve().parents[2]
LS_VERSION = "1.23.2"
MIGRATED_MARKER = ".videor4-migrated"


@pytest.fixture(scope="session")
def ls_binary() -> Path:
    try:
        return find_binary()
    except UserError as exc:
        pytest.fail(f"{exc} — the annotation tests need a real Label Studio server")


@pytest.fixture(scope="session")
def ls_template(ls_binary: Path) -> Path:
    """A migrated Label Studio data dir (admin user + token inside), built once and reused."""
    template = Path(os.environ.get("VIDEOR4_LS_TEMPLATE_DIR") or REPO / ".cache" / f"labelstudio-template-{LS_VERSION}")
    if (template / MIGRATED_MARKER).is_file():
        return template
    template.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".ls-template-", dir=template.parent))
    root = Path(tempfile.mkdtemp(prefix="ls-docroot-"))
    try:
        server = LabelStudioServer(ServerConfig(data_dir=staging, document_root=root, port=free_port(),
                                                binary=ls_binary, startup_timeout_s=300))
        with server:
            pass
        (staging / MIGRATED_MARKER).write_text(LS_VERSION)
        shutil.rmtree(template, ignore_errors=True)
        staging.rename(template)  # atomic: a half-migrated template is never picked up
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        shutil.rmtree(root, ignore_errors=True)
    return template


@dataclass
class RunningLS:
    server: LabelStudioServer
    data_root: Path
    data_dir: Path
    start_seconds: float

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def token(self) -> str:
        return self.server.credentials.token


def copy_template(template: Path, dest: Path) -> Path:
    shutil.copytree(template, dest, ignore=shutil.ignore_patterns("*.log", "videor4_server.json"))
    return dest


@pytest.fixture(scope="module")
def label_studio(ls_template: Path, ls_binary: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningLS]:
    """A running server per test module, document root = a fresh data root holding the sample's videos."""
    from videor4.curation.sample import sample_root

    base = tmp_path_factory.mktemp("ls")
    data_root = base / "data_root"
    shutil.copytree(sample_root() / "videos", data_root / "videos")
    data_dir = copy_template(ls_template, base / "ls-data")
    server = LabelStudioServer(ServerConfig(data_dir=data_dir, document_root=data_root, port=free_port(),
                                            binary=ls_binary))
    seconds = server.start()
    try:
        yield RunningLS(server, data_root, data_dir, seconds)
    finally:
        server.stop()


# --- shard rows built from the bundled sample -------------------------------------------------------------------
def sample_rows() -> list:
    """Five rows over the sample's real videos: four CoT trajectories (one crop each) and one RL row.

    Uncertainties 0.9 / 0.6 / 0.5 put three CoT rows under a 0.8 confidence threshold; the fourth CoT row and
    the RL row are confident. Evidence frames are the sample's ground-truth answer frames.
    """
    import json

    from videor4.contracts.evidence_schema import EvidenceItem
    from videor4.contracts.shard_schema import (
        QC,
        CoTRow,
        MediaRef,
        Message,
        Provenance,
        RLRow,
        VideoRef,
        make_sample_id,
    )
    from videor4.curation.sample import load_answer_frames, sample_annotation_path

    records = {r["question_id"]: r for r in json.loads(sample_annotation_path().read_text())["data"]}
    frames = load_answer_frames()
    qids = sorted(frames)[:5]
    uncertainty = [0.9, 0.6, 0.5, 0.05, 0.1]
    rows = []
    for k, qid in enumerate(qids):
        rec = records[qid]
        vid, answer_frames = frames[qid]
        stage = "drp" if k < 4 else "rld"
        fps = 10.0
        evidence = [EvidenceItem(frame_index=f, timestamp_s=f / fps, bbox=[0.1 + 0.05 * j, 0.2, 0.5, 0.35],
                                 text=rec["answers"][0], kind="ocr", match="answer", score=1 - uncertainty[k])
                    for j, f in enumerate(answer_frames)]
        common = dict(
            sample_id=make_sample_id(vid, qid, stage), stage=stage, question_id=qid, video_id=vid,
            question=rec["question"], answers=list(rec["answers"]), source1=rec["source1"], source2=rec["source2"],
            video=VideoRef(path=f"videos/{vid}.mp4", kind="video", fps=fps, num_frames=30),
            initial_frames=[0, 10, 20], evidence=evidence,
            qc=QC(status="auto_pass", uncertainty=uncertainty[k]),
            provenance=Provenance(toolkit_version="test", split="sample", source_file="ViteVQA_0.0.2_sample.json",
                                  decoder="opencv", ocr_backend="test", detector_backend="none", config_hash="t"))
        if stage == "rld":
            rows.append(RLRow(**common, difficulty=0.4, answer_in_initial=False, required_ops=["crop"]))
            continue
        f0 = answer_frames[0]
        init = [MediaRef(frame_index=i, timestamp_s=i / fps) for i in (0, 10, 20)]
        crop = MediaRef(frame_index=f0, timestamp_s=f0 / fps, bbox=evidence[0].bbox)
        messages = [
            Message(role="system", text="You can call clip and crop. <tools>…</tools>"),
            Message(role="user", text=f"<image><image><image>{rec['question']}", images=init),
            Message(role="assistant", text='<think>The text is small.</think>\n<tool_call>{"name": "crop", '
                    '"arguments": {"image": 1, "bbox_2d": [0.1, 0.2, 0.5, 0.35]}}</tool_call>'),
            Message(role="tool", text="<image>", images=[crop]),
            Message(role="assistant", text=f"<think>It reads {rec['answers'][0]}.</think>\n"
                    f"<answer>{rec['answers'][0]}</answer>"),
        ]
        rows.append(CoTRow(**common, messages=messages, ops=["crop"], verified=True))
    return rows


def write_sample_shards(shards: Path, data_root: Path) -> list:
    """Write :func:`sample_rows` with the toolkit's one shard writer, plus a manifest naming the data root."""
    from videor4.contracts.shard_io import write_manifest, write_stage

    rows = sample_rows()
    for stage in ("drp", "crp", "rld", "rlc"):
        write_stage(shards, stage, [r for r in rows if r.stage == stage])
    write_manifest(shards, {"data_root": str(data_root), "source_splits": ["sample"]})
    return rows


@pytest.fixture(scope="session")
def make_sample_shards():
    """:func:`write_sample_shards` as a fixture (test modules cannot import a conftest by name)."""
    return write_sample_shards
