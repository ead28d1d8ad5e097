"""``videor4 shards``: look at training shards (stats, validate, one sample or one eval transcript as an HTML
page) and export them for other trainers.

It lives in ``pipelines`` because it wires curation's viewer and training's exporters together (curation never
imports training).
"""

from __future__ import annotations

import argparse
import json
import sys
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

    shards = _shards_dir(args.shards)
    print(json.dumps(read_manifest(shards), indent=2))
    print(f"not validated: run `videor4 shards validate {shards}` to check every file against the manifest",
          file=sys.stderr)
    return 0


def _validate(args: argparse.Namespace) -> int:
    from videor4.contracts.shard_io import read_manifest, validate_shards

    shards = _shards_dir(args.shards)
    problems = validate_shards(shards)
    for problem in problems:
        print(f"{shards}: {problem}", file=sys.stderr)
    if problems:
        print(f"videor4: error: {shards}: {len(problems)} problem(s); the shards are not valid", file=sys.stderr)
        return 2
    counts = read_manifest(shards)["counts"]
    print(f"{shards}: valid ({', '.join(f'{k} {v}' for k, v in counts.items())} rows; every file matches "
          "manifest.json)")
    return 0


def _inspect(args: argparse.Namespace) -> int:
    from videor4.contracts.atomic import write_text_atomic
    from videor4.contracts.dataset import media_path
    from videor4.contracts.errors import user_input
    from videor4.contracts.shard_io import read_manifest, read_shard_file, shard_files
    from videor4.contracts.view import view_from_manifest
    from videor4.curation.viewer import render_sample_html

    path: Path = args.shard
    if not path.exists():
        raise UserError(f"{path}: no such shard file or directory")
    if args.html.is_dir():
        raise UserError(f"--html {args.html} is a directory; give the path of the HTML file to write")
    if path.is_file() and path.name.endswith(".jsonl"):
        return _inspect_transcript(args)
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
    manifest = read_manifest(_shards_dir(path))
    data_root = args.data_root
    if data_root is None:
        data_root = Path(manifest.get("data_root", ""))
    if not media_path(data_root, row.video.path).exists() and not any(
            ref.jpeg for m in getattr(row, "messages", []) for ref in m.images):
        raise UserError(f"video {row.video.path} not found under {data_root}; pass --data-root")
    page = render_sample_html(row, Path(data_root), view_from_manifest(manifest))
    with user_input(f"--html {args.html}: cannot write"):
        write_text_atomic(args.html, page)
    print(f"wrote {args.html} (sample {row.sample_id})")
    return 0


def _inspect_transcript(args: argparse.Namespace) -> int:
    """One question of a ``videor4 eval run`` transcripts file (``<predictions>.transcripts.jsonl``)."""
    from videor4.contracts.atomic import write_text_atomic
    from videor4.contracts.dataset import locate_media
    from videor4.contracts.errors import user_input
    from videor4.curation.viewer import render_transcript_html

    path: Path = args.shard
    with user_input(f"{path}: not a readable transcripts file"):
        lines = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    lines = [t for t in lines if isinstance(t, dict) and "messages" in t]
    if not lines:
        raise UserError(f"{path}: no transcripts with replayable messages (written by `videor4 eval run`)")
    match = [t for t in lines if str(t["question_id"]) == str(args.sample)] if args.sample else lines[:1]
    if not match:
        raise UserError(f"question {args.sample} not in {path} ({len(lines)} transcripts; first: "
                        f"{lines[0]['question_id']})")
    transcript = match[0]
    video = Path(transcript.get("video_path", ""))
    if args.data_root is not None:  # the dataset moved since the run: find the video under the given root
        source = locate_media(args.data_root, str(transcript["video_id"]))
        if source is None:
            raise UserError(f"video {transcript['video_id']} not found under {args.data_root}")
        video = source.path
    if not video.exists():
        raise UserError(f"video {video} of question {transcript['question_id']} not found; pass --data-root")
    with user_input(f"--html {args.html}: cannot write"):
        write_text_atomic(args.html, render_transcript_html(transcript, video))
    print(f"wrote {args.html} (question {transcript['question_id']})")
    return 0


def _export(args: argparse.Namespace) -> int:
    # Written by the verl plug-in (training/verl_plugin/data.py); runs without verl installed.
    from videor4.training.verl_plugin.data import export_verl

    written = export_verl(_shards_dir(args.shards), args.out, data_root=args.data_root, recipe=args.recipe,
                          stages=args.stages, limit=args.limit, image_format=args.image_format)
    print(json.dumps({stage: str(path) for stage, path in written.items()}, indent=2))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("shards", help="inspect and validate training shards",
                       description="Look at the Parquet shards written by `videor4 curate`.")
    s = p.add_subparsers(dest="shards_command", metavar="SUBCOMMAND")
    st = s.add_parser("stats", help="print the manifest: counts per stage vs targets, yields, QC summary")
    st.add_argument("shards", type=Path, help="the shards directory (<out>/shards)")
    st.set_defaults(func=_stats)
    va = s.add_parser("validate", help="check every shard file against the schema and the manifest",
                      description="Read every shard file and check it against manifest.json (listed files, their "
                      "SHA-256 and row counts, counts per stage, QC summary) and the shard schema (columns, types, "
                      "schema version, every row valid and of its file's stage). Prints one line per problem and "
                      "exits 2 if there is any.")
    va.add_argument("shards", type=Path, help="the shards directory (<out>/shards)")
    va.set_defaults(func=_validate)
    ins = s.add_parser("inspect", help="render one sample or one eval transcript as a self-contained HTML page",
                       description="Render a sample (frames with evidence boxes, crops, the chat turns) as HTML; "
                       "given the transcripts file of `videor4 eval run` (<predictions>.transcripts.jsonl), render "
                       "how the model ruminated on one question: every turn, every frame its clips returned and "
                       "every crop, the cropped regions drawn on their frames.")
    ins.add_argument("shard", type=Path, help="a shard file (e.g. shards/cot/crp-00000.parquet), a shards dir, or "
                     "an eval run transcripts file (*.transcripts.jsonl)")
    ins.add_argument("--sample", help="sample_id (shards) or question_id (transcripts) to show (default: the first)")
    ins.add_argument("--html", type=Path, required=True, help="output HTML file")
    ins.add_argument("--data-root", type=Path, help="dataset root (default: the one recorded in manifest.json, or "
                     "the video path a transcript recorded)")
    ins.set_defaults(func=_inspect)
    ex = s.add_parser("export", help="write the RL shards in another trainer's format (verl)",
                      description="Write RL shards (RLd, RLc) as the Parquet files verl's RLHF dataset reads: "
                      "<out>/<stage>.parquet and <out>/view.json. See docs/training.md, 'Train on verl'.")
    ex.add_argument("shards", type=Path, help="the shards directory (<out>/shards)")
    ex.add_argument("--format", required=True, choices=["verl"], help="target format")
    ex.add_argument("--out", type=Path, required=True, help="output directory")
    ex.add_argument("--data-root", type=Path, help="dataset root (default: the one recorded in manifest.json)")
    ex.add_argument("--recipe", help="recipe (bundled name or YAML) whose GRPO stages give the view and token "
                    "budgets (default: the shards' recorded view, default budgets)")
    ex.add_argument("--stages", nargs="+", default=["rld", "rlc"], choices=["rld", "rlc"], help="RL stages")
    ex.add_argument("--limit", type=int, help="export at most this many rows per stage (smoke runs)")
    ex.add_argument("--image-format", choices=["png", "jpeg"], default="png",
                    help="initial frames as PNG (lossless: the pixels the bundled runtime shows) or JPEG (smaller)")
    ex.set_defaults(func=_export)
