"""A toy dataset for the training tests: a real dataset root around the session's tiny mp4 and real shards.

The CoT chats are produced by executing clip/crop with the shared executor and the shared prompt builder — the
same path trajectory synthesis takes, minus OCR — so SFT/GRPO/curriculum tests train on what curation writes.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from videor4.contracts.chat import Turn, build_messages
from videor4.contracts.executor import ClipCropExecutor, OpsConfig
from videor4.contracts.media import uniform_indices
from videor4.contracts.shard_codec import chat_to_shard_messages
from videor4.contracts.shard_io import write_manifest, write_stage
from videor4.contracts.shard_schema import QC, CoTRow, Provenance, RLRow, VideoRef, make_sample_id
from videor4.contracts.tool_protocol import ToolCall, format_tool_call
from videor4.contracts.view import PromptConfig, display_size

PROMPT = PromptConfig(num_frames=3, frame_max_pixels=4 * 28 * 28, crop_max_pixels=4 * 28 * 28)
OPS = OpsConfig(clip_frames=2, max_calls=2, max_images=8)
VIDEO = "videos/00001.mp4"
ANSWERS = {1: "F05", 2: "F12", 3: "F20", 4: "F27"}


def _turns(question_id: int, kind: str, ex: ClipCropExecutor) -> list[Turn]:
    answer = ANSWERS[question_id]
    frame = int(answer[1:])
    calls = []
    if kind in ("clip", "crp"):
        calls.append(ToolCall("clip", {"start": frame / 10, "end": (frame + 1) / 10}))
    if kind in ("crop", "crp"):
        calls.append(ToolCall("crop", {"image": 3 + (kind == "crp"), "bbox_2d": [0.1, 0.3, 0.6, 0.8]}))
    turns = []
    for call in calls:
        turns.append(Turn(f"<think>I look closer with {call.name}.</think>\n{format_tool_call(call)}",
                          [ex.execute(call)]))
    turns.append(Turn(f"<think>It reads {answer}.</think>\n<answer>{answer}</answer>"))
    return turns


def _common(question_id: int, stage: str) -> dict:
    return dict(
        sample_id=make_sample_id("00001", question_id, stage), stage=stage, question_id=question_id,
        video_id="00001", question=f"What code is shown in part {question_id}?", answers=[ANSWERS[question_id]],
        source1="Single frame", source2="Text", video=VideoRef(path=VIDEO, kind="video", fps=10.0, num_frames=30),
        initial_frames=uniform_indices(30, PROMPT.num_frames), evidence=[], qc=QC(status="auto_pass"),
        provenance=Provenance(toolkit_version="test", split="toy", source_file="toy.json", decoder="opencv",
                              ocr_backend="none", detector_backend="none", config_hash="0"),
    )


def toy_dataset(root: Path, video: Path) -> tuple[Path, Path]:
    """``(data_root, shards_dir)``: DRP/CRP CoT rows and RLd/RLc rows over one 3 s video, plus an annotation
    file (split ``toy``) so ``videor4 eval run`` can score a model on the same questions."""
    from videor4.contracts.media import open_video

    data_root, shards = root / "data", root / "shards"
    (data_root / "videos").mkdir(parents=True, exist_ok=True)
    shutil.copy(video, data_root / VIDEO)
    rows: dict[str, list] = {"drp": [], "crp": [], "rld": [], "rlc": []}
    with open_video(data_root / VIDEO) as reader:
        for qid in ANSWERS:
            for stage, kind in (("drp", "crop" if qid % 2 else "clip"), ("crp", "crp")):
                common = _common(qid, stage)
                ex = ClipCropExecutor(reader, common["initial_frames"], OPS,
                                      display_size=lambda ref, size: display_size(PROMPT, ref, size))
                initial = list(ex.context)
                turns = _turns(qid, kind, ex)
                messages, _ = build_messages(common["question"], initial, ex.render_many(initial), turns,
                                             config=PROMPT, ops=OPS, duration_s=3.0)
                refs = initial + [r for t in turns for o in t.observations for r in o.refs]
                rows[stage].append(CoTRow(**common, messages=chat_to_shard_messages(messages, refs),
                                          ops=[c for c in kind.replace("crp", "clip crop").split()], verified=True))
            for stage, ops in (("rld", ["crop"]), ("rlc", ["clip", "crop"])):
                rows[stage].append(RLRow(**_common(qid, stage), difficulty=0.5, answer_in_initial=False,
                                         required_ops=ops))
    for stage, stage_rows in rows.items():
        write_stage(shards, stage, stage_rows)
    write_manifest(shards, {"source": "toy"})
    (data_root / "Annotations").mkdir(exist_ok=True)
    records = [{"question": f"What code is shown in part {q}?", "answers": [a], "video_id": "00001",
                "question_id": q, "video_width": 224, "video_height": 128, "source1": "Single frame",
                "source2": "Text"} for q, a in ANSWERS.items()]
    (data_root / "Annotations" / "ViteVQA_0.0.2_toy.json").write_text(json.dumps(
        {"dataset_type": "toy", "dataset_name": "ViteVQA", "dataset_version": "0.0.2", "data": records}))
    return data_root, shards
