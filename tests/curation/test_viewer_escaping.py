"""The HTML viewer shows shard text as text: markup in any field of a row never becomes markup in the page.

Shards come from elsewhere (a colleague's run, a download, a crafted file), and the page is opened in a browser.
Every string field of a CoT and an RL row carries ``<script>``: question, answers, ops, required_ops, provenance,
evidence text, QC, chat messages, the sample id, and the video path (a frame folder named with markup).
"""

from __future__ import annotations

import html
import shutil
from pathlib import Path

from tests.shard_rows import shard_rows, write_shards
from videor4.contracts.shard_schema import CoTRow
from videor4.curation.sample import sample_root
from videor4.curation.viewer import render_sample_html
from videor4.pipelines.cli import main

PAYLOAD = "<script>alert('x')</script><img src=x onerror=alert(1)>"
FOLDER = "img_dir/<script>90001"


def _data_root(tmp_path: Path) -> Path:
    root = tmp_path / "data"
    shutil.copytree(sample_root() / "img_dir" / "90001", root / FOLDER)
    return root


def _assert_inert(page: str) -> None:
    low = page.lower()
    assert "<script" not in low and "<img src=x" not in low
    assert html.escape(PAYLOAD) in page  # shown, as text


def test_every_string_field_is_escaped(tmp_path: Path) -> None:
    root = _data_root(tmp_path)
    for row in shard_rows(PAYLOAD, video_path=FOLDER):
        page = render_sample_html(row, root)
        _assert_inert(page)
        assert html.escape(FOLDER) in page
        if isinstance(row, CoTRow):
            assert page.count(html.escape(PAYLOAD)) >= 15  # question, answers, ops, provenance, evidence, chat …
        else:
            assert f"required ops crop, crop{html.escape(PAYLOAD)}" in page


def test_fields_the_schema_constrains_are_escaped_too(tmp_path: Path) -> None:
    """Literal fields (stage, roles, evidence kind/match, QC status) hold only known words in a valid shard, but
    the viewer escapes whatever it is given."""
    root = _data_root(tmp_path)
    cot, rl = shard_rows(video_path=FOLDER)
    evidence = [e.model_copy(update={"kind": PAYLOAD, "match": PAYLOAD}) for e in cot.evidence]
    messages = [m.model_copy(update={"role": PAYLOAD}) if m.role == "assistant" else m for m in cot.messages]
    crafted = cot.model_copy(update={"stage": PAYLOAD, "evidence": evidence, "messages": messages,
                                     "qc": cot.qc.model_copy(update={"status": PAYLOAD})})
    for row in (crafted, rl.model_copy(update={"stage": PAYLOAD})):
        _assert_inert(render_sample_html(row, root))


def test_shards_inspect_writes_an_inert_page(tmp_path: Path) -> None:
    root = _data_root(tmp_path)
    write_shards(tmp_path / "shards", root, shard_rows(PAYLOAD, video_path=FOLDER))
    for shard in ("cot/drp-00000.parquet", "rl/rld-00000.parquet"):
        out = tmp_path / f"{shard.replace('/', '-')}.html"
        assert main(["shards", "inspect", str(tmp_path / "shards" / shard), "--html", str(out)]) == 0
        _assert_inert(out.read_text())
