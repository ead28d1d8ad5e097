"""``videor4 curate``: run the curation flow on a dataset split."""

from __future__ import annotations

import argparse
from pathlib import Path

from videor4.pipelines import prefect_env


def add_curation_options(p: argparse.ArgumentParser) -> None:
    """Options shared by ``curate`` and ``demo`` (one definition, one meaning)."""
    p.add_argument("--out", type=Path, help="output directory (created; reruns reuse its cache)")
    p.add_argument("--config", type=Path, help="YAML file with a CurationConfig (see docs/curation.md)")
    p.add_argument("--limit", type=int, help="only the first N videos of the split (sorted by id)")
    p.add_argument("--ocr", choices=["rapidocr", "paddleocr", "precomputed"],
                   help="OCR backend (default rapidocr; precomputed = the dataset's video_ocr/<id>.json)")
    p.add_argument("--tracking", choices=["motion", "none"],
                   help="motion (default): read a shot once and follow its text, re-reading only changed regions; "
                   "none: OCR every kept frame whole (slower, the recall reference)")
    p.add_argument("--detector", choices=["opencv", "ultralytics", "none"], help="object detector (default opencv)")
    p.add_argument("--detector-weights", type=Path, help="weights file for --detector ultralytics (local path)")
    p.add_argument("--media", choices=["auto", "video", "frames"],
                   help="read videos/<id>.mp4 or img_dir/<id>/ (auto: video if present)")
    p.add_argument("--decoder", choices=["auto", "opencv", "pyav", "decord"], help="video decoder (auto = fastest)")
    p.add_argument("--frames-fps", type=float, help="frame rate of img_dir frame folders (default 10)")
    p.add_argument("--embed-media", action="store_true", default=None,
                   help="store JPEG bytes of every trajectory image in the shards (portable, larger)")
    p.add_argument("--workers", type=int, default=2, help="videos processed concurrently (default 2)")
    p.add_argument("--export-ocr", action="store_true",
                   help="also write OUT/video_ocr/<id>.json (official format) so later runs can use --ocr precomputed")
    p.add_argument("--runner", choices=["local", "dask", "ray"], default="local",
                   help="task runner: local threads (default), a Dask cluster, or Ray (see docs/scaling.md)")
    p.add_argument("--address", help="address of an existing Dask scheduler (tcp://host:8786) or Ray cluster")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def config_from_args(args: argparse.Namespace):
    from videor4.curation.config import load_config

    return load_config(args.config, {
        "ocr.backend": args.ocr, "tracking.method": args.tracking, "detector.backend": args.detector,
        "detector.weights": str(args.detector_weights) if args.detector_weights else None,
        "media_preference": args.media, "media.decoder": args.decoder, "media.frames_fps": args.frames_fps,
        "shards.embed_media": args.embed_media,
    })


def run_from_args(args: argparse.Namespace, data_root: Path, split: str, out: Path) -> int:
    prefect_env.configure()
    from videor4.contracts.dataset import load_split
    from videor4.contracts.errors import UserError
    from videor4.pipelines.curate_flow import run_curate

    if args.limit is not None and args.limit <= 0:
        raise UserError("--limit must be a positive number of videos")
    cfg = config_from_args(args)
    # Preflight: a user's mistake (data root, annotation file) is one line before any Prefect run starts;
    # run_curate then locks --out (which also refuses a file or an unwritable folder) and starts Prefect.
    load_split(data_root, split)
    summary = run_curate(data_root, split, out, cfg, limit=args.limit, workers=args.workers,
                         progress=not args.no_progress, runner=args.runner, address=args.address,
                         export_ocr=args.export_ocr)
    print("\n".join(summary.lines()))
    print(f"outputs in {out}/: evidence.parquet, questions.parquet, trajectories.parquet, rejects.parquet, "
          f"stats.json, shards/ (look at a sample: videor4 shards inspect {out}/shards --html sample.html)")
    return 0


def _handle(args: argparse.Namespace) -> int:
    from videor4.contracts.errors import UserError

    if args.out is None:
        raise UserError("--out is required")
    return run_from_args(args, args.data_root, args.split, args.out)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "curate", help="decode, OCR, detect and match evidence for a dataset split",
        description="Curate an M4-ViteVQA split (or any dataset in the official layout): decode frames, "
        "drop near-duplicates, run OCR and detection, and match answers/questions to evidence. Writes "
        "<out>/evidence.parquet, questions.parquet (per-question status), rejects.parquet and stats.json. "
        "Reruns reuse <out>/cache and repeat no OCR.")
    p.add_argument("--data-root", type=Path, required=True,
                   help="dataset root holding Annotations/ and videos/ or img_dir/")
    p.add_argument("--split", required=True, help="split name, e.g. t1s1val (file Annotations/ViteVQA_0.0.2_<split>.json)")
    add_curation_options(p)
    p.set_defaults(func=_handle)
