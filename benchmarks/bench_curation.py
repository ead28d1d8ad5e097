"""Curation speed and quality on the bundled sample: decode, OCR, the whole analysis stage, evidence recall.

For each configuration the analysis stage (decode → sample → dedupe → OCR → detection) runs from an empty
cache; "effective frames/s" is the number of video frames covered divided by wall time, which is what matters
for the full dataset (M4-ViteVQA: 1.32 M frames). Recall is the share of questions whose answer evidence is found
with OCR on every frame that is still found with the configuration (DESIGN target: ≥ 0.98).

    python benchmarks/bench_curation.py [--configs baseline,dedupe,fps2.5] [--workers 2]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("PREFECT_LOGGING_LEVEL", "ERROR")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

CONFIGS: dict[str, dict] = {
    "baseline (every frame, no dedupe)": {"dedupe.method": "none"},
    "dedupe (every frame, thumb dedupe)": {},
    "fps 2.5 + dedupe": {"sampling.mode": "fps", "sampling.fps": 2.5},
}


def decode_rate(root: Path) -> float:
    from videor4.curation.media import open_video

    n, t0 = 0, time.perf_counter()
    for video in sorted((root / "videos").glob("*.mp4")):
        with open_video(video) as reader:
            for _ in reader.read(range(reader.num_frames)):
                n += 1
    return n / (time.perf_counter() - t0)


def ocr_rate(root: Path, frames: int = 12) -> tuple[float, str]:
    import cv2

    from videor4.curation.ocr import OCRConfig, create_ocr

    ocr = create_ocr(OCRConfig())
    files = sorted((root / "img_dir").glob("*/*.jpg"))[:: max(1, 225 // frames)][:frames]
    images = [cv2.cvtColor(cv2.imread(str(f)), cv2.COLOR_BGR2RGB) for f in files]
    ocr.read(images[0])  # warm-up (ORT session init)
    t0 = time.perf_counter()
    for im in images:
        ocr.read(im)
    return len(images) / (time.perf_counter() - t0), f"{ocr.name} {ocr.version}"


def run_config(root: Path, overrides: dict, workers: int) -> tuple[dict, set[int]]:
    import pandas as pd

    from videor4.curation.config import load_config
    from videor4.curation.sample import SAMPLE_SPLIT
    from videor4.pipelines.curate_flow import run_curate

    with tempfile.TemporaryDirectory() as tmp:
        cfg = load_config(None, {**overrides, "detector.backend": "opencv"})
        t0 = time.perf_counter()
        s = run_curate(root, SAMPLE_SPLIT, Path(tmp), cfg, workers=workers, progress=False)
        wall = time.perf_counter() - t0
        q = pd.read_parquet(Path(tmp) / "questions.parquet")
        found = set(q.loc[q.status == "answer", "question_id"])
    frames = sum(1 for _ in (root / "img_dir").glob("*/*.jpg"))
    return {"wall_s": wall, "frames": frames, "ocr_calls": s.ocr_calls, "verification": s.verification_rate,
            "fps": frames / wall}, found


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--skip-stage", action="store_true", help="only decode and OCR rates (fast)")
    args = ap.parse_args(argv)
    from videor4.curation.sample import sample_root

    root = sample_root()
    print(f"bundled sample: {root} (7 videos, 225 frames at 960x540)")
    print("| measure | value |\n|---|---|")
    print(f"| decode (opencv, all frames) | {decode_rate(root):.0f} frames/s |")
    rate, name = ocr_rate(root)
    print(f"| OCR ({name}) | {rate:.2f} frames/s |")
    if args.skip_stage:
        return 0
    print("\n| configuration | OCR calls | wall s | effective frames/s | answer-evidence recall | verified traj. |")
    print("|---|---|---|---|---|---|")
    base: set[int] | None = None
    for name, overrides in CONFIGS.items():
        r, found = run_config(root, overrides, args.workers)
        base = found if base is None else base
        recall = len(found & base) / len(base) if base else float("nan")
        print(f"| {name} | {r['ocr_calls']} | {r['wall_s']:.1f} | {r['fps']:.2f} | {recall:.3f} | "
              f"{100 * r['verification']:.0f}% |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
