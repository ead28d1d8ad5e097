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
from videor4.contracts.shard_codec import chat_to_shard_messages
from videor4.contracts.shard_io import write_manifest, write_stage
from videor4.contracts.shard_schema import QC, CoTRow, Provenance, RLRow, VideoRef, make_sample_id
from videor4.contracts.tool_protocol import ToolCall, format_tool_call
from videor4.contracts.view import PromptConfig, ShardView

PROMPT = PromptConfig(num_frames=3, frame_max_pixels=4 * 28 * 28, crop_max_pixels=4 * 28 * 28)
OPS = OpsConfig(clip_frames=2, max_calls=2, max_images=8)
VIEW = ShardView(prompt=PROMPT, ops=OPS)
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
        initial_frames=VIEW.initial_frames(30), evidence=[], qc=QC(status="auto_pass"),
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
                ex = VIEW.executor(reader, common["initial_frames"])
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
    write_manifest(shards, {"source": "toy", "view": VIEW.model_dump(mode="json"),
                            "data_root": str(data_root.resolve())})
    (data_root / "Annotations").mkdir(exist_ok=True)
    records = [{"question": f"What code is shown in part {q}?", "answers": [a], "video_id": "00001",
                "question_id": q, "video_width": 224, "video_height": 128, "source1": "Single frame",
                "source2": "Text"} for q, a in ANSWERS.items()]
    (data_root / "Annotations" / "ViteVQA_0.0.2_toy.json").write_text(json.dumps(
        {"dataset_type": "toy", "dataset_name": "ViteVQA", "dataset_version": "0.0.2", "data": records}))
    return data_root, shards


def write_tiny_video(path: Path) -> Path:
    """A real 3 s, 10 fps, 224x128 mp4 whose frames show their index ("F00" … "F29")."""
    import cv2
    import numpy as np

    path.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, (224, 128))
    for i in range(30):
        img = np.full((128, 224, 3), (40 + 5 * i, 80, 160), np.uint8)
        cv2.putText(img, f"F{i:02d}", (30, 90), cv2.FONT_HERSHEY_SIMPLEX, 2, (255, 255, 255), 4)
        writer.write(img)
    writer.release()
    return path


REWARDS = [{"name": "accuracy"}, {"name": "format"}, {"name": "diversity", "weight": 0.2},
           {"name": "representativeness", "weight": 0.2}, {"name": "curiosity"}]


def toy_recipe(path: Path, *, sft: dict, grpo: dict, name: str = "test-tiny", stage3_sft: dict | None = None,
               **top: object) -> Path:
    """A four-stage recipe over the toy shards (DRP-SFT → RLd → CRP-SFT → RLc) with the toy view; ``stage3_sft``
    replaces the CRP-SFT stage's config, ``top`` the recipe's top-level fields."""
    import yaml

    grpo = {"rewards": REWARDS, **grpo}
    recipe = {"name": name, "build_tiny_model": True, "mixed_precision": "no", "prompt": PROMPT.model_dump(),
              "ops": OPS.model_dump(), **top, "stages": [
                  {"name": "drp-sft", "kind": "sft", "data": {"stages": ["drp"], "limit": 4}, "sft": sft},
                  {"name": "rld", "kind": "grpo", "data": {"stages": ["rld"], "limit": 2}, "grpo": grpo},
                  {"name": "crp-sft", "kind": "sft", "data": {"stages": ["crp"], "limit": 4},
                   "sft": stage3_sft or sft},
                  {"name": "rlc", "kind": "grpo", "data": {"stages": ["rlc"], "limit": 2}, "grpo": grpo}]}
    path.write_text(yaml.safe_dump(recipe))
    return path
