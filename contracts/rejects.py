"""Rejects: everything a stage could not use, kept with its stage and reason (never silently dropped).

One record type, one Arrow schema and one writer for every stage — loading (a bad record), media (a missing or
corrupt video), synthesis (a trajectory that failed verification) and QC (a sample an annotator rejected) — so
"why is this question not in my shards?" has one place to look. Curation writes ``<out>/rejects.parquet``;
QC writes ``<shards>/rejects.parquet`` (its rejects travel with the shards they left, each holding the full
row so a later verdict can bring it back bit-for-bit).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Literal

import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict, Field

from videor4.contracts.atomic import write_table_atomic
from videor4.contracts.errors import user_input

REJECTS_FILE = "rejects.parquet"
RejectStage = Literal["load", "media", "ocr", "analysis", "synthesis", "qc"]


class Reject(BaseModel):
    """Something that could not be used, with where it came from and why."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    stage: RejectStage = Field(description="the stage that rejected it")
    reason: str = Field(description="short machine-readable key, e.g. bad_record, corrupt_media, unverified")
    message: str = Field("", description="one readable line for a person")
    file: str = Field("", description="the input file concerned (annotation JSON, video)")
    record_index: int = Field(-1, description="index of the record in the annotation file (-1: n/a)")
    field: str = Field("", description="the record field at fault")
    video_id: str = ""
    question_id: int = -1
    sample_id: str = Field("", description="the shard sample concerned (synthesis, QC)")
    annotator: str | None = None
    time: str | None = Field(None, description="ISO-8601 UTC time of a human verdict")
    row: bytes | None = Field(None, description="the full shard row (QC: restorable), in its stage's Parquet schema")

    def to_dict(self) -> dict:
        return self.model_dump()


REJECTS_SCHEMA = pa.schema([
    ("stage", pa.string()), ("reason", pa.string()), ("message", pa.string()), ("file", pa.string()),
    ("record_index", pa.int64()), ("field", pa.string()), ("video_id", pa.string()), ("question_id", pa.int64()),
    ("sample_id", pa.string()), ("annotator", pa.string()), ("time", pa.string()), ("row", pa.binary()),
])


def rejects_table(rejects: Iterable[Reject]) -> pa.Table:
    rows = sorted((r.model_dump() for r in rejects),
                  key=lambda r: (r["stage"], r["video_id"], r["question_id"], r["sample_id"], r["reason"]))
    return pa.Table.from_pylist(rows, schema=REJECTS_SCHEMA)


def write_rejects(path: Path, rejects: Iterable[Reject]) -> Path:
    """The one writer: every reject of a run (or of a shards directory) in one atomic file."""
    return write_table_atomic(rejects_table(rejects), Path(path))


def read_rejects(path: Path) -> list[Reject]:
    path = Path(path)
    if not path.is_file():
        return []
    with user_input(f"{path}: not a readable rejects file"):
        return [Reject.model_validate(r) for r in pq.read_table(path).to_pylist()]
