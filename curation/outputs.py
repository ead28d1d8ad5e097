"""Writing a curation run's tables: evidence, per-question summary, trajectory candidates (rejects: contracts.rejects).

The column set and types of ``evidence.parquet`` are the DESIGN §3 contract,
so they are spelled out here once as an Arrow schema rather than inferred from
whatever pandas guesses for an empty frame. Every file is written to a
temporary name and renamed, so a reader never sees half a table.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict

import pyarrow as pa

from videor4.curation.evidence import QuestionSummary

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
def questions_table(summaries: Iterable[QuestionSummary]) -> pa.Table:
    return pa.Table.from_pylist([asdict(s) for s in sorted(summaries, key=lambda s: s.question_id)],
                                schema=QUESTIONS_SCHEMA)


def candidates_table(candidates: Iterable[dict]) -> pa.Table:
    """Every synthesized trajectory, verified or not, with the reason it failed (the verification report)."""
    return pa.Table.from_pylist(sorted(candidates, key=lambda c: c["sample_id"]), schema=CANDIDATES_SCHEMA)
