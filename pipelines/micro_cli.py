"""``videor4 micro-data``: render the micro text-rich video QA benchmark (docs/learning_benchmark.md)."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from pydantic import ValidationError

from videor4.contracts.errors import UserError


def _run(args: argparse.Namespace) -> int:
    from videor4.curation.micro_data import MicroSpec, write_pretrain_set, write_split

    for name in ("train", "test", "pretrain"):
        if getattr(args, name) < 0:
            raise UserError(f"--{name} must not be negative")
    try:
        spec = MicroSpec(questions_per_video=args.questions_per_video,
                         pretrain_crop_margin=tuple(args.pretrain_crop_margin))
    except ValidationError as e:
        raise UserError(f"--pretrain-crop-margin: {e.errors()[0]['msg']}") from None
    summary: dict = {"out": str(args.out), "seed": args.seed, "geometry": spec.geometry(), "seconds": {}}
    for split, n in (("train", args.train), ("test", args.test)):
        if n:
            started = time.time()
            summary[split] = write_split(args.out, split, n, args.seed, spec, workers=args.workers)
            summary["seconds"][split] = round(time.time() - started, 1)
    if args.pretrain:
        started = time.time()
        summary["pretrain"] = write_pretrain_set(args.out, args.pretrain, args.seed + 1000, spec, workers=args.workers)
        summary["seconds"]["pretrain"] = round(time.time() - started, 1)
    print(json.dumps(summary, indent=2))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "micro-data", help="render the micro text-rich video QA benchmark (official M4-ViteVQA layout)",
        description="Render procedurally generated text-rich videos whose questions need clip and crop: "
        "<out>/Annotations/ViteVQA_0.0.2_micro{train,test}.json, videos/<id>.mp4, video_ocr/<id>.json (official "
        "precomputed OCR), micro_<split>_kinds.json (question kinds), and with --pretrain vision-pretraining images "
        "from scenes of their own split (pretrain.npz). Deterministic from --seed; reruns skip finished videos.")
    p.add_argument("--out", type=Path, required=True, help="dataset root to write")
    p.add_argument("--seed", type=int, default=0, help="seed of every video, question and pixel")
    p.add_argument("--train", type=int, default=1500, help="questions in split microtrain (0: none)")
    p.add_argument("--test", type=int, default=500, help="questions in split microtest (0: none)")
    p.add_argument("--pretrain", type=int, default=0, help="scenes of vision-pretraining images (0: none)")
    p.add_argument("--pretrain-crop-margin", type=float, nargs=2, metavar=("LOW", "HIGH"), default=(0.8, 0.8),
                   help="pretraining crops: margin around the text per side, in text heights, drawn from LOW..HIGH "
                   "(default 0.8 0.8: the centred crop curation writes; a range teaches off-centre crops too)")
    p.add_argument("--questions-per-video", type=int, default=2, choices=(1, 2, 3), help="questions per video")
    p.add_argument("--workers", type=int, default=2, help="rendering processes")
    p.set_defaults(func=_run)
