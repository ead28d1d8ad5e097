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

import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict, Field

from videor4.contracts.atomic import write_json_atomic, write_table_atomic
from videor4.contracts.errors import UserError, describe_input_error, read_json_object, user_input
from videor4.contracts.shard_schema import (
    COT_SCHEMA,
    COT_STAGES,
    RL_SCHEMA,
    RL_STAGES,
    SCHEMA_VERSION,
    ShardRow,
    rows_to_table,
    table_to_rows,
)

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
        raise UserError(f"{path}: not a readable Parquet shard ({describe_input_error(exc)})") from exc
    version = (table.schema.metadata or {}).get(b"videor4.schema_version", b"?").decode(errors="replace")
    if version.split(".")[0] != SCHEMA_VERSION.split(".")[0]:
        raise UserError(f"{path}: shard schema version {version}, this toolkit reads {SCHEMA_VERSION}")
    problem = column_problem(table.schema)
    if problem:
        raise UserError(f"{path}: {problem}")
    with user_input(f"{path}: not a valid shard row"):
        return table_to_rows(table)


def column_problem(schema: pa.Schema) -> str | None:
    """Why a table's columns are not a shard stage's columns (names and types), or None when they are."""
    names = set(schema.names)
    closest = min((COT_SCHEMA, RL_SCHEMA), key=lambda s: len(names ^ set(s.names)))
    missing = [n for n in closest.names if n not in names]
    extra = [n for n in schema.names if n not in closest.names]
    if missing or extra:
        return ("columns differ from the shard schema"
                + (f"; missing: {', '.join(missing)}" if missing else "")
                + (f"; unexpected: {', '.join(extra)}" if extra else ""))
    wrong = [f.name for f in closest if not schema.field(f.name).type.equals(f.type)]
    return f"column types differ from the shard schema: {', '.join(wrong)}" if wrong else None


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
    """Counts per stage vs the paper's targets, schema version, QC summary and every file's row count and
    SHA-256 (what ``videor4 shards validate`` checks), plus the caller's fields; the computed fields win."""
    got = counts(shards)
    manifest = {
        **extra,
        "schema_version": SCHEMA_VERSION,
        "counts": got,
        "targets": TARGET_SIZES,
        "reached": {s: round(got[s] / TARGET_SIZES[s], 6) for s in got},
        "qc": qc_summary(shards),
        "files": {p.relative_to(shards).as_posix(): {"rows": pq.ParquetFile(p).metadata.num_rows,
                                                      "sha256": file_sha256(p)} for p in shard_files(shards)},
    }
    return write_json_atomic(Path(shards) / MANIFEST, manifest, indent=2)


# Manifest fields write_manifest computes from the files (a caller rewriting a manifest passes on only the others).
COMPUTED_MANIFEST_KEYS = ("schema_version", "counts", "targets", "reached", "qc", "files")


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def read_manifest(shards: Path) -> dict:
    return read_json_object(Path(shards) / MANIFEST, f"{shards}: no {MANIFEST} (not a shards directory written by "
                            "videor4)", "manifest")


def validate_shards(shards: Path) -> list[str]:
    """Every problem of a shards directory, one readable line each (empty: valid).

    Checks the manifest against the files (each listed file present with its recorded SHA-256 and row count, no
    unlisted Parquet file, counts per stage and QC summary as recorded), each file against the stage's schema
    (columns, types, schema version) and each row against the row model and the stage of its file name.
    """
    shards = Path(shards)
    manifest = read_manifest(shards)
    problems: list[str] = []
    version = str(manifest.get("schema_version", "?"))
    if version.split(".")[0] != SCHEMA_VERSION.split(".")[0]:
        problems.append(f"{MANIFEST}: schema version {version}, this toolkit reads {SCHEMA_VERSION}")
    listed = manifest.get("files")
    if not isinstance(listed, dict):
        problems.append(f"{MANIFEST}: no file list with hashes (written by an older videor4; rerun the command "
                        "that wrote the shards to rewrite it)")
        listed = {}
    present = sorted(p.relative_to(shards).as_posix() for d in ("cot", "rl") for p in (shards / d).glob("*.parquet"))
    for name in sorted(set(listed) - set(present)):
        problems.append(f"{name}: listed in {MANIFEST} but missing")
    rows_by_stage: dict[str, int] = {s: 0 for s in (*COT_STAGES, *RL_STAGES)}
    qc: dict[str, int] = {}
    for name in present:
        path = shards / name
        stage = Path(name).name.split("-")[0]
        if stage not in rows_by_stage or stage_dir(stage) != Path(name).parent.name:
            problems.append(f"{name}: not a shard file name (expected cot/drp-NNNNN.parquet … rl/rlc-NNNNN.parquet)")
            continue
        entry = listed.get(name)
        if listed and entry is None:
            problems.append(f"{name}: not listed in {MANIFEST} (a file from another run, or copied in)")
        elif isinstance(entry, dict) and entry.get("sha256") != file_sha256(path):
            problems.append(f"{name}: content differs from {MANIFEST} (truncated, replaced or edited since written)")
        try:
            rows = read_shard_file(path)
        except UserError as exc:
            problems.append(f"{name}: {str(exc).removeprefix(f'{path}: ')}")
            continue
        if isinstance(entry, dict) and entry.get("rows") != len(rows):
            problems.append(f"{name}: {len(rows)} rows, {MANIFEST} says {entry.get('rows')}")
        wrong = [r.sample_id for r in rows if r.stage != stage]
        if wrong:
            problems.append(f"{name}: {len(wrong)} row(s) of another stage (first: {wrong[0]})")
        rows_by_stage[stage] += len(rows)
        for r in rows:
            qc[r.qc.status] = qc.get(r.qc.status, 0) + 1
    recorded = manifest.get("counts", {})
    for stage, n in rows_by_stage.items():
        if recorded.get(stage, 0) != n:
            problems.append(f"{MANIFEST}: counts.{stage} is {recorded.get(stage)}, the files hold {n} rows")
    qc = dict(sorted(qc.items()))
    if manifest.get("qc", {}) != qc:
        problems.append(f"{MANIFEST}: qc summary {manifest.get('qc')} differs from the rows' {qc}")
    return problems


def read_training_rows(shards_dir: str | Path, stages: Sequence[str], limit: int | None = None,
                       qc_exclude: Sequence[str] = ("human_reject", "pending")) -> list[ShardRow]:
    """Rows a trainer uses: the named stages in shard order, without QC rejects or pending rows, cut to ``limit``."""
    shards_dir = Path(shards_dir)
    if not shards_dir.is_dir():
        raise UserError(f"shards directory not found: {shards_dir}")
    rows = [r for stage in stages for r in read_stage(shards_dir, stage) if r.qc.status not in qc_exclude]
    if not rows:
        raise UserError(f"{shards_dir}: no usable rows in stage(s) {', '.join(stages)}")
    return rows[:limit] if limit else rows
