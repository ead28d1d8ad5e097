"""Evidence: which frames, and where in them, show a question's answer (or its key phrases) — DESIGN §3.

One typed row serves every place evidence appears: evidence matching produces :class:`EvidenceRow` records, they are
written to ``<out>/evidence.parquet`` with :data:`EVIDENCE_SCHEMA`, trajectory synthesis reads their fields, and a
shard row keeps them as :class:`EvidenceItem` (the same fields minus the ones the shard row already holds:
question, video, OCR backend in provenance).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field


class EvidenceItem(BaseModel):
    """What a shard row keeps of one piece of evidence (the rest of an :class:`EvidenceRow` is implied by the row)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    frame_index: int
    timestamp_s: float
    bbox: list[float] = Field(description="x1,y1,x2,y2 normalized to [0,1]")
    text: str = Field(description="OCR string or detector label")
    kind: Literal["ocr", "object"]
    match: Literal["answer", "question"]
    score: float


class EvidenceRow(EvidenceItem):
    """One row of ``evidence.parquet``: one matched observation of one question."""

    question_id: int
    video_id: str
    backend: str = Field(description="what produced it, e.g. 'rapidocr-onnx 3.10.0' or an OpenCV detector")

    def item(self) -> EvidenceItem:
        return EvidenceItem(**self.model_dump(include=set(EvidenceItem.model_fields)))


EVIDENCE_SCHEMA = pa.schema([
    pa.field("question_id", pa.int64(), nullable=False),
    pa.field("video_id", pa.string(), nullable=False),
    pa.field("frame_index", pa.int32(), nullable=False),
    pa.field("timestamp_s", pa.float64(), nullable=False),
    pa.field("kind", pa.string(), nullable=False),
    pa.field("text", pa.string(), nullable=False),
    pa.field("bbox", pa.list_(pa.float64(), 4), nullable=False),
    pa.field("match", pa.string(), nullable=False),
    pa.field("score", pa.float64(), nullable=False),
    pa.field("backend", pa.string(), nullable=False),
])


def evidence_table(rows: Iterable[EvidenceRow]) -> pa.Table:
    """The rows in the contract's column order and types, sorted per question, best first."""
    ordered = sorted(rows, key=lambda r: (r.question_id, -r.score, r.frame_index, r.match, r.bbox))
    return pa.Table.from_pylist([r.model_dump() for r in ordered], schema=EVIDENCE_SCHEMA)
