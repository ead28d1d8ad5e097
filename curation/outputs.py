"""Writing a curation run's tables: evidence, per-question summary, rejects.

The column set and types of ``evidence.parquet`` are the DESIGN §3 contract,
so they are spelled out here once as an Arrow schema rather than inferred from
whatever pandas guesses for an empty frame. Every file is written to a
temporary name and renamed, so a reader never sees half a table.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict

import pyarrow as pa

from videor4.contracts.dataset import Reject
from videor4.curation.evidence import QuestionSummary

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
QUESTIONS_SCHEMA = pa.schema([
    ("question_id", pa.int64()), ("video_id", pa.string()), ("status", pa.string()), ("reason", pa.string()),
    ("n_rows", pa.int32()), ("best_frame", pa.int32()), ("first_frame", pa.int32()), ("last_frame", pa.int32()),
    ("best_score", pa.float64()), ("best_text", pa.string()),
])
CANDIDATES_SCHEMA = pa.schema([
    ("sample_id", pa.string()), ("stage", pa.string()), ("variant", pa.int32()), ("question_id", pa.int64()),
    ("video_id", pa.string()), ("ops", pa.list_(pa.string())), ("verified", pa.bool_()), ("reason", pa.string()),
    ("reocr_text", pa.string()), ("selected", pa.bool_()),
])
REJECTS_SCHEMA = pa.schema([
    ("stage", pa.string()), ("reason", pa.string()), ("message", pa.string()), ("file", pa.string()),
    ("record_index", pa.int64()), ("field", pa.string()), ("video_id", pa.string()), ("question_id", pa.int64()),
])


def evidence_table(rows: Iterable[dict]) -> pa.Table:
    ordered = sorted(rows, key=lambda r: (r["question_id"], -r["score"], r["frame_index"], r["match"], r["bbox"]))
    return pa.Table.from_pylist(ordered, schema=EVIDENCE_SCHEMA)


def questions_table(summaries: Iterable[QuestionSummary]) -> pa.Table:
    return pa.Table.from_pylist([asdict(s) for s in sorted(summaries, key=lambda s: s.question_id)],
                                schema=QUESTIONS_SCHEMA)


def rejects_table(rejects: Iterable[Reject]) -> pa.Table:
    rows = sorted((r.to_dict() for r in rejects), key=lambda r: (r["stage"], r["video_id"], r["question_id"]))
    return pa.Table.from_pylist(rows, schema=REJECTS_SCHEMA)


def candidates_table(candidates: Iterable[dict]) -> pa.Table:
    """Every synthesized trajectory, verified or not, with the reason it failed (the verification report)."""
    return pa.Table.from_pylist(sorted(candidates, key=lambda c: c["sample_id"]), schema=CANDIDATES_SCHEMA)
