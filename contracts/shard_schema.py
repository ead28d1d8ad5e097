"""The one shard schema (DESIGN §3): typed records and their Arrow schemas.

Every writer and reader of ``shards/`` imports this module, so the columns,
their types and the schema version exist exactly once. Records are pydantic
models because they are built from many sources (synthesis, QC verdicts,
re-synthesis after corrections) and validation at the boundary is cheaper than
a corrupt shard discovered at training time.

Media are stored as references (frame index, time, normalized box in
source-frame coordinates) so the trainer re-executes them on the video; the
optional ``jpeg`` bytes make a shard portable (``--embed-media``).

Chat messages keep a plain ``text`` in which each ``<image>`` token (``SHARD_IMAGE_TOKEN``) marks
where the next entry of ``images`` goes; the prompt builder in
``videor4.contracts.chat`` turns that into the model's chat format, so SFT,
rollouts and evaluation render the same conversation.
"""

from __future__ import annotations

import hashlib
from typing import Literal

import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field

from videor4.contracts.evidence_schema import EvidenceItem

SCHEMA_VERSION = "1.0"
SHARD_IMAGE_TOKEN = "<image>"

Stage = Literal["drp", "crp", "rld", "rlc"]
COT_STAGES: tuple[Stage, ...] = ("drp", "crp")
RL_STAGES: tuple[Stage, ...] = ("rld", "rlc")
QCStatus = Literal["auto_pass", "pending", "human_accept", "human_reject", "corrected"]


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class MediaRef(_Record):
    """One image the model sees: a decoded frame, or a box of it (a crop)."""

    frame_index: int = Field(description="0-based position in the video's frame sequence")
    timestamp_s: float = Field(description="frame time in seconds (frame_index / fps)")
    bbox: list[float] | None = Field(
        default=None, description="x1,y1,x2,y2 normalized to [0,1] in source-frame coordinates; None = whole frame"
    )
    jpeg: bytes | None = Field(default=None, description="embedded JPEG bytes (only with --embed-media)")


class VideoRef(_Record):
    path: str = Field(description="path relative to the data root: videos/<id>.mp4 or img_dir/<id>")
    kind: Literal["video", "frames"]
    fps: float
    num_frames: int


class QC(_Record):
    status: QCStatus = "auto_pass"
    annotator: str | None = None
    time: str | None = Field(default=None, description="ISO-8601 UTC time of the verdict")
    reason: str | None = Field(default=None, description="reject reason or correction note")
    uncertainty: float | None = Field(default=None, description="routing score; higher = more doubtful")


class Provenance(_Record):
    toolkit_version: str
    split: str
    source_file: str = Field(description="annotation JSON the question came from")
    decoder: str
    ocr_backend: str
    detector_backend: str
    config_hash: str


class Message(_Record):
    role: Literal["system", "user", "assistant", "tool"]
    text: str
    images: list[MediaRef] = Field(default_factory=list)


class ShardRow(_Record):
    """Columns shared by CoT and RL rows."""

    sample_id: str
    stage: Stage
    question_id: int
    video_id: str
    question: str
    answers: list[str]
    source1: str
    source2: str
    video: VideoRef
    initial_frames: list[int] = Field(description="frame indices of the initial uniformly-sampled view")
    evidence: list[EvidenceItem]
    qc: QC
    provenance: Provenance


class CoTRow(ShardRow):
    messages: list[Message]
    ops: list[str] = Field(description="op names in call order, e.g. ['clip', 'crop']")
    verified: bool = Field(description="the ops were executed and the claimed crop re-OCR'd to the answer")


class RLRow(ShardRow):
    difficulty: float = Field(description="0 = answer readable in the initial view … 1 = needs composite ops")
    answer_in_initial: bool
    required_ops: list[str]


def make_sample_id(video_id: str, question_id: int, stage: str, variant: int = 0) -> str:
    """Deterministic id from the sample's path (video → question → stage → variant).

    The readable prefix keeps ids sortable and greppable; the hash suffix keeps them
    unique if a path component ever contains the separator.
    """
    path = f"{video_id}/{question_id}/{stage}/{variant}"
    return f"{video_id}-{question_id}-{stage}-{variant}-{hashlib.sha1(path.encode()).hexdigest()[:8]}"


# --- Arrow schemas -------------------------------------------------------------------------

_MEDIA = pa.struct(
    [
        ("frame_index", pa.int32()),
        ("timestamp_s", pa.float64()),
        ("bbox", pa.list_(pa.float64())),
        ("jpeg", pa.binary()),
    ]
)
_COMMON_FIELDS = [
    pa.field("sample_id", pa.string(), nullable=False),
    pa.field("stage", pa.string(), nullable=False),
    pa.field("question_id", pa.int64(), nullable=False),
    pa.field("video_id", pa.string(), nullable=False),
    pa.field("question", pa.string()),
    pa.field("answers", pa.list_(pa.string())),
    pa.field("source1", pa.string()),
    pa.field("source2", pa.string()),
    pa.field(
        "video",
        pa.struct(
            [("path", pa.string()), ("kind", pa.string()), ("fps", pa.float64()), ("num_frames", pa.int32())]
        ),
    ),
    pa.field("initial_frames", pa.list_(pa.int32())),
    pa.field(
        "evidence",
        pa.list_(
            pa.struct(
                [
                    ("frame_index", pa.int32()),
                    ("timestamp_s", pa.float64()),
                    ("bbox", pa.list_(pa.float64())),
                    ("text", pa.string()),
                    ("kind", pa.string()),
                    ("match", pa.string()),
                    ("score", pa.float64()),
                ]
            )
        ),
    ),
    pa.field(
        "qc",
        pa.struct(
            [
                ("status", pa.string()),
                ("annotator", pa.string()),
                ("time", pa.string()),
                ("reason", pa.string()),
                ("uncertainty", pa.float64()),
            ]
        ),
    ),
    pa.field(
        "provenance",
        pa.struct(
            [
                ("toolkit_version", pa.string()),
                ("split", pa.string()),
                ("source_file", pa.string()),
                ("decoder", pa.string()),
                ("ocr_backend", pa.string()),
                ("detector_backend", pa.string()),
                ("config_hash", pa.string()),
            ]
        ),
    ),
]
_SCHEMA_META = {b"videor4.schema_version": SCHEMA_VERSION.encode()}

COT_SCHEMA = pa.schema(
    _COMMON_FIELDS
    + [
        pa.field(
            "messages",
            pa.list_(pa.struct([("role", pa.string()), ("text", pa.string()), ("images", pa.list_(_MEDIA))])),
        ),
        pa.field("ops", pa.list_(pa.string())),
        pa.field("verified", pa.bool_()),
    ],
    metadata=_SCHEMA_META,
)
RL_SCHEMA = pa.schema(
    _COMMON_FIELDS
    + [
        pa.field("difficulty", pa.float64()),
        pa.field("answer_in_initial", pa.bool_()),
        pa.field("required_ops", pa.list_(pa.string())),
    ],
    metadata=_SCHEMA_META,
)


def schema_for(stage: str) -> pa.Schema:
    return COT_SCHEMA if stage in COT_STAGES else RL_SCHEMA


def row_model_for(stage: str) -> type[ShardRow]:
    return CoTRow if stage in COT_STAGES else RLRow


def rows_to_table(rows: list[ShardRow], stage: str) -> pa.Table:
    """Validated records → an Arrow table with the stage's exact schema."""
    return pa.Table.from_pylist([r.model_dump() for r in rows], schema=schema_for(stage))


def table_to_rows(table: pa.Table) -> list[ShardRow]:
    """Arrow table (any stage) → validated records; raises on schema drift."""
    out: list[ShardRow] = []
    for rec in table.to_pylist():
        out.append(row_model_for(rec["stage"]).model_validate(rec))
    return out
