"""``videor4 shards``: look at training shards (stats, one sample as an HTML page)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from videor4.contracts.errors import UserError


def _shards_dir(path: Path) -> Path:
    """A shards directory from itself, a stage folder or one shard file."""
    for cand in (path, path.parent, path.parent.parent):
        if (cand / "manifest.json").is_file():
            return cand
    raise UserError(f"{path}: no manifest.json here or above (expected <out>/shards/…)")


def _stats(args: argparse.Namespace) -> int:
    from videor4.contracts.shard_io import read_manifest

    print(json.dumps(read_manifest(_shards_dir(args.shards)), indent=2))
    return 0


def _inspect(args: argparse.Namespace) -> int:
    from videor4.contracts.atomic import write_text_atomic
    from videor4.contracts.shard_io import read_manifest, read_shard_file, shard_files
    from videor4.curation.viewer import render_sample_html

    path: Path = args.shard
    if not path.exists():
        raise UserError(f"{path}: no such shard file or directory")
    if path.is_file():
        rows = read_shard_file(path)
    else:
        rows = [row for f in shard_files(_shards_dir(path)) for row in read_shard_file(f)]
    if not rows:
        raise UserError(f"{path}: no samples")
    if args.sample:
        match = [r for r in rows if r.sample_id == args.sample]
        if not match:
            raise UserError(f"sample {args.sample} not in {path} ({len(rows)} samples; first: {rows[0].sample_id})")
        row = match[0]
    else:
        row = rows[0]
    data_root = args.data_root
    if data_root is None:
        data_root = Path(read_manifest(_shards_dir(path)).get("data_root", ""))
    if not (Path(data_root) / row.video.path).exists() and not any(
            ref.jpeg for m in getattr(row, "messages", []) for ref in m.images):
        raise UserError(f"video {row.video.path} not found under {data_root}; pass --data-root")
    write_text_atomic(args.html, render_sample_html(row, Path(data_root)))
    print(f"wrote {args.html} (sample {row.sample_id})")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("shards", help="inspect and validate training shards",
                       description="Look at the Parquet shards written by `videor4 curate`.")
    s = p.add_subparsers(dest="shards_command", metavar="SUBCOMMAND")
    st = s.add_parser("stats", help="print the manifest: counts per stage vs targets, yields, QC summary")
    st.add_argument("shards", type=Path, help="the shards directory (<out>/shards)")
    st.set_defaults(func=_stats)
    ins = s.add_parser("inspect", help="render one sample as a self-contained HTML page",
                       description="Render a sample (frames with evidence boxes, crops, the chat turns) as HTML.")
    ins.add_argument("shard", type=Path, help="a shard file (e.g. shards/cot/crp-00000.parquet) or shards dir")
    ins.add_argument("--sample", help="sample_id to show (default: the first)")
    ins.add_argument("--html", type=Path, required=True, help="output HTML file")
    ins.add_argument("--data-root", type=Path, help="dataset root (default: the one recorded in manifest.json)")
    ins.set_defaults(func=_inspect)
