"""Writing and reading the CoT-17k / RL-30k Parquet shards (DESIGN §3).

Layout: ``<shards>/cot/{drp,crp}-NNNNN.parquet``, ``<shards>/rl/{rld,rlc}-NNNNN.parquet``
and ``<shards>/manifest.json``. Rows are sorted by ``sample_id`` and cut into
files of ``rows_per_file`` with row groups of ``row_group_size`` so a trainer
can stream them; every file is written atomically. Two runs over the same
inputs give the same :func:`content_hash` (the hash covers row content, not
Parquet's file metadata).

This is the one reader/writer of shards: curation, QC (pull/apply) and the
trainer all go through it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict, Field

from videor4.contracts.atomic import write_json_atomic, write_table_atomic
from videor4.contracts.errors import UserError
from videor4.contracts.shard_schema import COT_STAGES, RL_STAGES, SCHEMA_VERSION, ShardRow, rows_to_table, table_to_rows

# The paper's dataset sizes: CoT-17k = DRP 7k + CRP 10k; RL-30k = RLd 15k + RLc 15k.
TARGET_SIZES = {"drp": 7000, "crp": 10000, "rld": 15000, "rlc": 15000}
MANIFEST = "manifest.json"


class ShardConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    rows_per_file: int = Field(2000, gt=0, description="rows per Parquet file")
    row_group_size: int = Field(128, gt=0, description="rows per row group (streaming granularity)")
    embed_media: bool = Field(False, description="store JPEG bytes of every image (portable shards)")
    jpeg_quality: int = Field(90, ge=50, le=100, description="quality of embedded JPEGs")


def stage_dir(stage: str) -> str:
    return "cot" if stage in COT_STAGES else "rl"


def shard_files(shards: Path, stage: str | None = None) -> list[Path]:
    stages = [stage] if stage else [*COT_STAGES, *RL_STAGES]
    return sorted(p for s in stages for p in (Path(shards) / stage_dir(s)).glob(f"{s}-*.parquet"))


def write_stage(shards: Path, stage: str, rows: Sequence[ShardRow], cfg: ShardConfig = ShardConfig()) -> list[Path]:
    """Replace a stage's files with ``rows`` (sorted by sample_id); stale files of the stage are removed."""
    rows = sorted(rows, key=lambda r: r.sample_id)
    ids = [r.sample_id for r in rows]
    if len(ids) != len(set(ids)):
        dup = next(i for i in ids if ids.count(i) > 1)
        raise ValueError(f"duplicate sample_id {dup} in stage {stage}")
    written: list[Path] = []
    for k in range(0, max(len(rows), 1), cfg.rows_per_file):
        chunk = rows[k:k + cfg.rows_per_file]
        path = Path(shards) / stage_dir(stage) / f"{stage}-{k // cfg.rows_per_file:05d}.parquet"
        write_table_atomic(rows_to_table(list(chunk), stage), path, row_group_size=cfg.row_group_size,
                           compression="zstd")
        written.append(path)
    for stale in set(shard_files(shards, stage)) - set(written):
        stale.unlink()
    return written


def read_stage(shards: Path, stage: str) -> list[ShardRow]:
    return [row for path in shard_files(shards, stage) for row in read_shard_file(path)]


def read_shard_file(path: Path) -> list[ShardRow]:
    try:
        table = pq.read_table(path)
    except (OSError, ValueError) as exc:
        raise UserError(f"{path}: not a readable Parquet shard ({exc})") from exc
    version = (table.schema.metadata or {}).get(b"videor4.schema_version", b"?").decode()
    if version.split(".")[0] != SCHEMA_VERSION.split(".")[0]:
        raise UserError(f"{path}: shard schema version {version}, this toolkit reads {SCHEMA_VERSION}")
    return table_to_rows(table)


def iter_rows(shards: Path, stages: Iterable[str] | None = None) -> Iterator[ShardRow]:
    for stage in stages or (*COT_STAGES, *RL_STAGES):
        yield from read_stage(shards, stage)


def content_hash(shards: Path) -> str:
    """SHA-256 over every row of every stage, in order; equal for equal data whatever the file bytes."""
    h = hashlib.sha256()
    for stage in (*COT_STAGES, *RL_STAGES):
        for path in shard_files(shards, stage):
            for rec in pq.read_table(path).to_pylist():
                h.update(json.dumps(rec, sort_keys=True, default=_bytes_hex).encode())
    return h.hexdigest()


def _bytes_hex(value: object) -> str:
    if isinstance(value, bytes):
        return hashlib.sha256(value).hexdigest()
    raise TypeError(type(value))


def counts(shards: Path) -> dict[str, int]:
    return {s: sum(pq.ParquetFile(p).metadata.num_rows for p in shard_files(shards, s)) for s in (*COT_STAGES, *RL_STAGES)}


def qc_summary(shards: Path) -> dict[str, int]:
    out: dict[str, int] = {}
    for path in shard_files(shards):
        for status in pq.read_table(path, columns=["qc"]).column("qc").combine_chunks().field("status").to_pylist():
            out[status] = out.get(status, 0) + 1
    return dict(sorted(out.items()))


def write_manifest(shards: Path, extra: dict) -> Path:
    """Counts per stage vs the paper's targets, schema version and QC summary, plus the caller's fields."""
    got = counts(shards)
    manifest = {
        "schema_version": SCHEMA_VERSION,
        "counts": got,
        "targets": TARGET_SIZES,
        "reached": {s: round(got[s] / TARGET_SIZES[s], 6) for s in got},
        "qc": qc_summary(shards),
        **extra,
    }
    return write_json_atomic(Path(shards) / MANIFEST, manifest, indent=2)


def read_manifest(shards: Path) -> dict:
    path = Path(shards) / MANIFEST
    if not path.is_file():
        raise UserError(f"{shards}: no {MANIFEST} (not a shards directory written by videor4)")
    return json.loads(path.read_text(encoding="utf-8"))
