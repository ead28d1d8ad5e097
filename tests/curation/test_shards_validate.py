"""``videor4 shards validate``: every shard file checked against the manifest and the schema, one line per problem.

``shards stats`` only prints the manifest, so it says that it has not validated anything; a truncated, foreign,
edited or misplaced shard is caught by ``validate`` (exit 2) with the file named.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.shard_rows import shard_rows, write_shards
from videor4.contracts.shard_io import MANIFEST, file_sha256, read_manifest, validate_shards
from videor4.contracts.shard_schema import COT_SCHEMA
from videor4.curation.sample import sample_root
from videor4.pipelines.cli import main


@pytest.fixture()
def shards(tmp_path: Path) -> Path:
    write_shards(tmp_path / "shards", sample_root())
    return tmp_path / "shards"


def _validate(shards: Path, capsys: pytest.CaptureFixture) -> tuple[int, list[str], str]:
    rc = main(["shards", "validate", str(shards)])
    captured = capsys.readouterr()
    problems = [line.removeprefix(f"{shards}: ") for line in captured.err.splitlines()
                if not line.startswith("videor4: error:")]
    return rc, problems, captured.out


def test_manifest_records_every_file_with_its_hash_and_rows(shards: Path, capsys: pytest.CaptureFixture) -> None:
    files = read_manifest(shards)["files"]
    assert set(files) == {"cot/crp-00000.parquet", "cot/drp-00000.parquet", "rl/rlc-00000.parquet",
                          "rl/rld-00000.parquet"}
    assert files["cot/drp-00000.parquet"] == {"rows": 1, "sha256": file_sha256(shards / "cot" / "drp-00000.parquet")}
    rc, problems, out = _validate(shards, capsys)
    assert (rc, problems) == (0, []) and "valid" in out and "drp 1" in out


def test_stats_says_it_has_not_validated(shards: Path, capsys: pytest.CaptureFixture) -> None:
    path = shards / "cot" / "drp-00000.parquet"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])  # truncated
    assert main(["shards", "stats", str(shards)]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["counts"]["drp"] == 1
    assert f"not validated: run `videor4 shards validate {shards}`" in captured.err


def test_a_truncated_shard_is_named(shards: Path, capsys: pytest.CaptureFixture) -> None:
    path = shards / "cot" / "drp-00000.parquet"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    rc, problems, _ = _validate(shards, capsys)
    assert rc == 2
    assert any(p.startswith("cot/drp-00000.parquet: content differs from manifest.json") for p in problems)
    assert any(p.startswith("cot/drp-00000.parquet: not a readable Parquet shard") for p in problems)
    assert any("counts.drp is 1, the files hold 0 rows" in p for p in problems)


def test_a_foreign_shard_and_a_missing_one_are_named(shards: Path, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture) -> None:
    other = tmp_path / "other"
    write_shards(other, sample_root(), shard_rows("-other"))
    shutil.copy(other / "cot" / "drp-00000.parquet", shards / "cot" / "drp-00001.parquet")  # from another run
    (shards / "rl" / "rld-00000.parquet").unlink()
    rc, problems, _ = _validate(shards, capsys)
    assert rc == 2
    assert "cot/drp-00001.parquet: not listed in manifest.json (a file from another run, or copied in)" in problems
    assert "rl/rld-00000.parquet: listed in manifest.json but missing" in problems
    assert "manifest.json: counts.drp is 1, the files hold 2 rows" in problems


def test_schema_tag_with_other_columns_and_rows_of_another_stage(shards: Path, capsys: pytest.CaptureFixture) -> None:
    foreign = pa.table({"sample_id": ["x"], "text": ["not a row"]}).replace_schema_metadata(COT_SCHEMA.metadata)
    pq.write_table(foreign, shards / "cot" / "crp-00000.parquet")
    shutil.copy(shards / "rl" / "rld-00000.parquet", shards / "rl" / "rlc-00000.parquet")  # rld rows in an rlc file
    manifest = read_manifest(shards)
    for name in ("cot/crp-00000.parquet", "rl/rlc-00000.parquet"):  # record them, as if written with the run
        manifest["files"][name] = {"rows": 1, "sha256": file_sha256(shards / name)}
    (shards / MANIFEST).write_text(json.dumps({**manifest, "counts": {**manifest["counts"], "rlc": 1},
                                               "qc": {"auto_pass": 3}}))
    rc, problems, _ = _validate(shards, capsys)  # hashes and counts agree: only the content is wrong
    assert rc == 2
    crp = next(p for p in problems if p.startswith("cot/crp-00000.parquet"))
    assert "columns differ from the shard schema" in crp and "missing: stage" in crp and "unexpected: text" in crp
    assert "rl/rlc-00000.parquet: 1 row(s) of another stage (first: 90001-900001-rld-0)" in problems


def test_an_edited_manifest_and_an_old_one_without_hashes(shards: Path, capsys: pytest.CaptureFixture) -> None:
    manifest = read_manifest(shards)
    (shards / MANIFEST).write_text(json.dumps({**manifest, "counts": {**manifest["counts"], "rld": 5},
                                               "qc": {"human_accept": 2}}))
    rc, problems, _ = _validate(shards, capsys)
    assert rc == 2 and "manifest.json: counts.rld is 5, the files hold 1 rows" in problems
    assert any(p.startswith("manifest.json: qc summary") for p in problems)
    (shards / MANIFEST).write_text(json.dumps({k: v for k, v in manifest.items() if k != "files"}))
    rc, problems, _ = _validate(shards, capsys)
    assert rc == 2 and problems == [("manifest.json: no file list with hashes (written by an older videor4; rerun "
                                     "the command that wrote the shards to rewrite it)")]
    assert validate_shards(shards) == problems
