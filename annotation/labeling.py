"""Shard rows → Label Studio review tasks (data + evidence boxes as predictions).

A reviewer sees what the model will see: the question and ground truth, the
evidence frames with the matched boxes pre-drawn (editable), the crops the
trajectory looks at, and the chat turns. Frames are decoded from the source
video here — the same frames the executor returns at train time — and written
as JPEGs under ``<data_root>/qc_media/<sample_id>/`` served through a
local-files storage, or embedded as data URLs (``--embed-media``) when the
server cannot see the data root.

Box ids in predictions are ``ev<i>`` (index into ``row.evidence``) so
:mod:`videor4.annotation.verdicts` can tell a moved box from a new one.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from videor4.contracts.atomic import write_bytes_atomic
from videor4.contracts.dataset import media_path
from videor4.contracts.errors import UserError
from videor4.contracts.executor import ImageRef
from videor4.contracts.media import encode_jpeg, open_video
from videor4.contracts.shard_schema import SHARD_IMAGE_TOKEN, CoTRow, ShardRow
from videor4.contracts.view import ShardView

MEDIA_DIR = "qc_media"
EVIDENCE_CONTROL = "evidence"
FRAMES_OBJECT = "frames"
MODEL_VERSION = "videor4-evidence"
MAX_FRAMES = 6
MAX_CROPS = 8
JPEG_QUALITY = 88


def label_config() -> str:
    """The labeling config XML shipped with the package."""
    return (resources.files("videor4.annotation") / "labeling_config.xml").read_text(encoding="utf-8")


@dataclass(frozen=True)
class MediaTarget:
    """Where rendered images go: files under ``data_root/qc_media`` (served by local-files) or data URLs.

    ``view`` is the shards' recorded view: crops are rendered by its executor, so a reviewer sees exactly the
    pixels the model is trained on.
    """

    data_root: Path
    embed: bool = False
    view: ShardView = field(default_factory=ShardView)

    @property
    def media_dir(self) -> Path:
        return Path(self.data_root) / MEDIA_DIR

    def publish(self, rel: str, image_rgb: np.ndarray) -> str:
        data = encode_jpeg(image_rgb, JPEG_QUALITY)
        if self.embed:
            return "data:image/jpeg;base64," + base64.b64encode(data).decode()
        path = self.media_dir / rel
        if not path.is_file():  # content is a function of (video, frame, box): a re-push reuses it
            write_bytes_atomic(path, data)
        return f"/data/local-files/?d={MEDIA_DIR}/{rel}"


def evidence_frames(row: ShardRow) -> list[int]:
    """Frames shown for box review: answer evidence first (best score first), then question evidence."""
    order = sorted(row.evidence, key=lambda e: (e.match != "answer", -e.score, e.frame_index))
    frames: list[int] = []
    for e in order:
        if e.frame_index not in frames:
            frames.append(e.frame_index)
    return frames[:MAX_FRAMES]


def trajectory_crops(row: ShardRow) -> list[tuple[int, list[float]]]:
    """(frame, source-normalized box) of every crop the trajectory's messages show, in order, deduplicated."""
    if not isinstance(row, CoTRow):
        return []
    out: list[tuple[int, list[float]]] = []
    for msg in row.messages:
        for img in msg.images:
            if img.bbox is not None and (img.frame_index, list(img.bbox)) not in out:
                out.append((img.frame_index, list(img.bbox)))
    return out[:MAX_CROPS]


def _box_key(bbox: Sequence[float]) -> str:
    return "_".join(f"{v:.4f}" for v in bbox)


def _chat(row: ShardRow) -> list[dict[str, str]]:
    """Dialogue turns for the Paragraphs tag; the system prompt (tool declarations) is left out."""
    if not isinstance(row, CoTRow):
        return [{"author": "note", "text": f"{row.stage} sample (RL): no trajectory; review the answer and boxes."}]
    turns, k = [], 0
    for msg in row.messages:
        if msg.role == "system":
            continue
        text = msg.text
        while SHARD_IMAGE_TOKEN in text:
            k += 1
            text = text.replace(SHARD_IMAGE_TOKEN, f"[image {k}]", 1)
        turns.append({"author": msg.role, "text": text})
    return turns


def build_task(row: ShardRow, target: MediaTarget) -> dict[str, Any]:
    """One Label Studio task (``data`` + one prediction holding the evidence boxes) for a shard row."""
    frames = evidence_frames(row)
    crops = trajectory_crops(row)
    video_path = media_path(target.data_root, row.video.path)
    frame_refs = [ImageRef(f, f / row.video.fps) for f in frames]
    crop_refs = [ImageRef(f, f / row.video.fps, tuple(b)) for f, b in crops]
    images: list[np.ndarray] = []
    if frame_refs or crop_refs:
        try:
            with open_video(video_path, video_id=row.video_id) as reader:
                images = target.view.executor(reader, row.initial_frames).render_many(frame_refs + crop_refs)
        except UserError as exc:
            raise UserError(f"{row.sample_id}: cannot render review media ({exc}); is --data-root the dataset "
                            "root the shards were curated from?") from exc
    sid = row.sample_id
    frame_urls = [target.publish(f"{sid}/frame-{f:06d}.jpg", im) for f, im in zip(frames, images)]
    crop_urls = [target.publish(f"{sid}/crop-{f:06d}-{_box_key(b)}.jpg", im)
                 for (f, b), im in zip(crops, images[len(frames):])]
    height, width = (images[0].shape[:2] if frames else (0, 0))
    result = []
    for i, e in enumerate(row.evidence):
        if e.frame_index not in frames:
            continue
        x1, y1, x2, y2 = e.bbox
        result.append({
            "id": f"ev{i}", "from_name": EVIDENCE_CONTROL, "to_name": FRAMES_OBJECT, "type": "rectanglelabels",
            "item_index": frames.index(e.frame_index), "original_width": int(width),
            "original_height": int(height), "image_rotation": 0,
            "value": {"x": 100 * x1, "y": 100 * y1, "width": 100 * (x2 - x1), "height": 100 * (y2 - y1),
                      "rotation": 0, "rectanglelabels": [e.match]},
        })
    ops = " → ".join(row.ops) if isinstance(row, CoTRow) and row.ops else "none"
    verified = f" · verified {row.verified}" if isinstance(row, CoTRow) else ""
    confidence = "" if row.qc.uncertainty is None else f" · confidence {1 - row.qc.uncertainty:.2f}"
    frame_list = ", ".join(f"#{f} ({f / row.video.fps:.2f}s)" for f in frames) or "none"
    data = {
        "sample_id": sid,
        "question": row.question,
        "answers_text": "Ground truth: " + " | ".join(row.answers),
        "meta": f"{row.stage.upper()} · video {row.video_id} · ops {ops}{verified}{confidence} · frames {frame_list}",
        "frames": frame_urls,
        "frame_indices": frames,
        "crops": crop_urls,
        "chat": _chat(row),
    }
    score = None if row.qc.uncertainty is None else round(1 - row.qc.uncertainty, 6)
    return {"data": data, "predictions": [{"model_version": MODEL_VERSION, "score": score, "result": result}]}
