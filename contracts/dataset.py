"""Loading M4-ViteVQA annotations and locating each video's media.

The official JSON has quirks (``"Mutli frames"``, ``"TEXT"``) and a real
release will contain the odd broken record or missing clip. A curation run
over hours must not die on one of them, nor silently lose it: each problem
becomes a :class:`Reject` with one readable line naming file, record and field,
and the rest of the split is processed.
"""

from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from videor4.contracts.errors import UserError, user_input
from videor4.contracts.rejects import Reject

log = logging.getLogger(__name__)

ANNOTATION_PATTERN = "ViteVQA_0.0.2_{split}.json"
VIDEO_SUFFIXES = (".mp4", ".avi", ".mkv", ".mov", ".webm")

# Official spellings (and the typos the release contains) → the canonical value.
_SOURCE1 = {"single frame": "Single frame", "multi frame": "Multi frame", "mutli frames": "Multi frame",
            "multi frames": "Multi frame", "single frames": "Single frame"}
_SOURCE2 = {"text": "Text", "visual": "Visual", "knowledge": "Knowledge"}
_VIDEO_ID = re.compile(r"[0-9]{5}")  # used with fullmatch: ASCII digits only, no trailing newline
# question_id is an int64 column in every table curation writes (evidence, questions, shards, rejects).
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1

MediaPreference = Literal["auto", "video", "frames"]


@dataclass(frozen=True)
class QARecord:
    """One validated question with everything needed to trace it back to its file."""

    question_id: int
    video_id: str
    question: str
    answers: tuple[str, ...]
    source1: str
    source2: str
    video_width: int
    video_height: int
    split: str
    source_file: str
    record_index: int


@dataclass(frozen=True)
class VideoSource:
    """Where a video's pixels live: an encoded file or a folder of frames."""

    video_id: str
    path: Path
    kind: Literal["video", "frames"]

    def relative_to(self, root: Path) -> str:
        return self.path.relative_to(root).as_posix()


@dataclass
class SplitData:
    split: str
    annotation_file: Path
    records: list[QARecord] = field(default_factory=list)
    rejects: list[Reject] = field(default_factory=list)

    @property
    def video_ids(self) -> list[str]:
        return sorted({r.video_id for r in self.records})


def annotation_path(root: Path, split: str) -> Path:
    return Path(root) / "Annotations" / ANNOTATION_PATTERN.format(split=split)


def available_splits(root: Path) -> list[str]:
    prefix, suffix = ANNOTATION_PATTERN.split("{split}")
    return sorted(p.name[len(prefix):-len(suffix)] for p in (Path(root) / "Annotations").glob(prefix + "*" + suffix))


def load_split(root: Path, split: str) -> SplitData:
    """Read and validate ``<root>/Annotations/ViteVQA_0.0.2_<split>.json``.

    A missing root or file is the user's mistake (:class:`UserError`); a bad
    record is the data's, and becomes a reject while the others load.
    """
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"data root {root} does not exist or is not a directory")
    path = annotation_path(root, split)
    if not path.is_file():
        have = ", ".join(available_splits(root)) or "none"
        raise UserError(f"annotation file {path} not found (splits under {root}/Annotations: {have})")
    return load_annotation_file(path, split=split)


def load_annotation_file(path: Path, split: str | None = None) -> SplitData:
    path = Path(path)
    with user_input(f"{path}: not a readable JSON file"):
        doc = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(doc, dict) or not isinstance(doc.get("data"), list):
        raise UserError(f"{path}: expected an object with a 'data' list (official M4-ViteVQA format)")
    split = split or str(doc.get("dataset_type") or path.stem)
    out = SplitData(split=split, annotation_file=path)
    seen: set[int] = set()
    for index, raw in enumerate(doc["data"]):
        try:
            rec = _validate_record(raw, index=index, split=split, path=path)
        except _BadField as bad:
            qid = raw.get("question_id", -1) if isinstance(raw, dict) else -1
            rej = Reject(stage="load", reason="bad_record", file=str(path), record_index=index, field=bad.field,
                         video_id=str(raw.get("video_id", "")) if isinstance(raw, dict) else "",
                         question_id=qid if is_int64(qid) else -1,
                         message=f"{path.name}: record {index}: field '{bad.field}': {bad.problem}")
            log.warning(rej.message)
            out.rejects.append(rej)
            continue
        if rec.question_id in seen:
            rej = Reject(stage="load", reason="duplicate_question_id", file=str(path), record_index=index,
                         field="question_id", video_id=rec.video_id, question_id=rec.question_id,
                         message=f"{path.name}: record {index}: field 'question_id': duplicate id {rec.question_id}")
            log.warning(rej.message)
            out.rejects.append(rej)
            continue
        seen.add(rec.question_id)
        out.records.append(rec)
    return out


def is_int64(value: Any) -> bool:
    """An integer (not a bool) that fits the int64 columns the writers use."""
    return isinstance(value, int) and not isinstance(value, bool) and INT64_MIN <= value <= INT64_MAX


def _utf8(value: str) -> bool:
    """Encodable as UTF-8 (JSON allows lone surrogates such as "\\ud800"; Arrow and Parquet do not)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


class _BadField(Exception):
    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field, self.problem = field, problem


def _validate_record(raw: Any, *, index: int, split: str, path: Path) -> QARecord:
    if not isinstance(raw, dict):
        raise _BadField("<record>", f"expected an object, got {type(raw).__name__}")

    def need(name: str) -> Any:
        if name not in raw:
            raise _BadField(name, "missing")
        return raw[name]

    question = need("question")
    if not isinstance(question, str) or not question.strip():
        raise _BadField("question", "must be a non-empty string")
    if not _utf8(question):
        raise _BadField("question", "holds characters that are not valid Unicode text (lone surrogates)")
    answers = need("answers")
    if not isinstance(answers, list) or not answers or not all(isinstance(a, str) for a in answers):
        raise _BadField("answers", "must be a non-empty list of strings")
    if not all(_utf8(a) for a in answers):
        raise _BadField("answers", "hold characters that are not valid Unicode text (lone surrogates)")
    video_id = need("video_id")
    if isinstance(video_id, int) and not isinstance(video_id, bool):
        video_id = f"{video_id:05d}"
    if not isinstance(video_id, str) or not _VIDEO_ID.fullmatch(video_id):
        raise _BadField("video_id", f"must be a 5-digit string, got {video_id!r}")
    qid = need("question_id")
    if not is_int64(qid):
        raise _BadField("question_id", f"must be an integer within int64, got {qid!r}"[:200])
    dims = []
    for name in ("video_width", "video_height"):
        v = need(name)
        if not is_int64(v) or v <= 0:
            raise _BadField(name, f"must be a positive integer, got {v!r}")
        dims.append(v)
    s1 = _SOURCE1.get(str(need("source1")).strip().lower())
    if s1 is None:
        raise _BadField("source1", f"unknown value {raw['source1']!r} (expected Single frame / Multi frame)")
    s2 = _SOURCE2.get(str(need("source2")).strip().lower())
    if s2 is None:
        raise _BadField("source2", f"unknown value {raw['source2']!r} (expected Text / Visual / Knowledge)")
    return QARecord(question_id=qid, video_id=video_id, question=question, answers=tuple(answers), source1=s1,
                    source2=s2, video_width=dims[0], video_height=dims[1], split=split, source_file=str(path),
                    record_index=index)


def locate_media(root: Path, video_id: str, prefer: MediaPreference = "auto") -> VideoSource | None:
    """Find ``videos/<id>.<ext>`` or ``img_dir/<id>/``; ``None`` when neither exists.

    ``auto`` prefers the encoded video: decoding it is faster than reading JPEGs
    and it is the source the ``clip`` tool decodes fresh frames from.
    """
    root = Path(root)
    video = next((root / "videos" / f"{video_id}{s}" for s in VIDEO_SUFFIXES
                  if (root / "videos" / f"{video_id}{s}").is_file()), None)
    frames = root / "img_dir" / video_id
    frames_ok = frames.is_dir()
    order = {"auto": (video, frames if frames_ok else None), "video": (video,),
             "frames": (frames if frames_ok else None,)}[prefer]
    for cand in order:
        if cand is not None:
            return VideoSource(video_id=video_id, path=cand, kind="video" if cand.is_file() else "frames")
    return None


def media_path(data_root: str | Path, relative: str) -> Path:
    """``data_root / relative`` for a media path read from a shard (``video.path``), refused if it leaves the root.

    Shards name their video relative to the dataset root. A crafted or corrupt shard could name an absolute path
    or climb out with ``..``; every place that opens a shard's video goes through here, so none of them reads
    outside the data root. The check is on the path as written (symlinks inside the root are the dataset's own).
    """
    text = str(relative)
    normal = os.path.normpath(text) if text else ""
    if not text or "\0" in text or os.path.isabs(text) or normal == ".." or normal.startswith(".." + os.sep):
        raise UserError(f"video path {text!r} is not inside the data root {data_root} (a shard names its video "
                        "relative to the dataset root, e.g. videos/<id>.mp4)")
    return Path(data_root) / normal


def precomputed_ocr_path(root: Path, video_id: str) -> Path | None:
    p = Path(root) / "video_ocr" / f"{video_id}.json"
    return p if p.is_file() else None


def missing_media_rejects(data: SplitData, video_id: str, prefer: MediaPreference) -> list[Reject]:
    """One reject per question of a video whose media cannot be found."""
    want = {"auto": "videos/<id>.mp4 or img_dir/<id>/", "video": "videos/<id>.mp4", "frames": "img_dir/<id>/"}[prefer]
    return [
        Reject(stage="media", reason="missing_media", file=str(data.annotation_file), record_index=r.record_index,
               field="video_id", video_id=video_id, question_id=r.question_id,
               message=f"video {video_id}: no media found ({want.replace('<id>', video_id)}) "
                       f"for question {r.question_id}")
        for r in data.records if r.video_id == video_id
    ]
