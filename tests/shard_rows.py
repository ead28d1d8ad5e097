"""Small hand-made shard rows over the bundled sample's real videos, for tests of shard readers and consumers.

``text`` fills every free-text field (question, answers, ops, provenance, evidence, chat, sample id), so a test
can push any string — markup, say — through everything a consumer shows.
"""

from __future__ import annotations

from pathlib import Path

from videor4.contracts.evidence_schema import EvidenceItem
from videor4.contracts.shard_io import write_manifest, write_stage
from videor4.contracts.shard_schema import QC, CoTRow, MediaRef, Message, Provenance, RLRow, VideoRef

VIDEO, FPS, FRAMES = "videos/90001.mp4", 10.0, 30


def shard_rows(text: str = "", video_path: str = VIDEO) -> list[CoTRow | RLRow]:
    """One CoT row (a crop trajectory) and one RL row of sample video 90001; ``text`` goes into every string field."""
    t = text
    evidence = [EvidenceItem(frame_index=12, timestamp_s=1.2, bbox=[0.1, 0.2, 0.5, 0.35], text=f"ARTS{t}",
                             kind="ocr", match="answer", score=0.9)]
    common = dict(
        question_id=900001, video_id="90001", question=f"What is written on the sign?{t}",
        answers=[f"arts{t}", f"les arts{t}"], source1=f"Single frame{t}", source2=f"Text{t}",
        video=VideoRef(path=video_path, kind="video", fps=FPS, num_frames=FRAMES), initial_frames=[0, 10, 20],
        evidence=evidence, qc=QC(status="auto_pass", uncertainty=0.1, annotator=f"ann{t}", reason=f"why{t}"),
        provenance=Provenance(toolkit_version=f"test{t}", split=f"sample{t}", source_file=f"file{t}.json",
                              decoder=f"opencv{t}", ocr_backend=f"ocr{t}", detector_backend=f"none{t}",
                              config_hash=f"cfg{t}"))
    init = [MediaRef(frame_index=i, timestamp_s=i / FPS) for i in (0, 10, 20)]
    crop = MediaRef(frame_index=12, timestamp_s=1.2, bbox=[0.1, 0.2, 0.5, 0.35])
    messages = [
        Message(role="system", text=f"You can call clip and crop.{t}"),
        Message(role="user", text=f"<image><image><image>What is written on the sign?{t}", images=init),
        Message(role="assistant", text=f'<think>small{t}</think><tool_call>{{"name": "crop", "arguments": '
                '{"image": 1, "bbox_2d": [0.1, 0.2, 0.5, 0.35]}}</tool_call>'),
        Message(role="tool", text=f"<image>{t}", images=[crop]),
        Message(role="assistant", text=f"<answer>arts{t}</answer>"),
    ]
    cot = CoTRow(sample_id=f"90001-900001-drp-0{t}", stage="drp", messages=messages, ops=["crop", f"crop{t}"],
                 verified=True, **common)
    rl = RLRow(sample_id=f"90001-900001-rld-0{t}", stage="rld", difficulty=0.4, answer_in_initial=False,
               required_ops=["crop", f"crop{t}"], **common)
    return [cot, rl]


def write_shards(shards: Path, data_root: Path, rows: list[CoTRow | RLRow] | None = None) -> list[CoTRow | RLRow]:
    """Write rows with the toolkit's one shard writer, plus a manifest naming the data root."""
    rows = shard_rows() if rows is None else rows
    for stage in ("drp", "crp", "rld", "rlc"):
        write_stage(shards, stage, [r for r in rows if r.stage == stage])
    write_manifest(shards, {"data_root": str(data_root), "source_splits": ["sample"]})
    return rows
