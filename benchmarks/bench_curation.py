"""Curation speed and quality on the bundled sample: decode, OCR, the analysis stage, the whole curation.

Stage table (the issue's end-to-end: decode → dedupe → OCR → match): every frame read whole (the recall
reference), dedupe only, dedupe + text tracking (default), the same on a local Dask cluster of 2 workers, with the
OpenCV detector, and on precomputed OCR. Whole-curation table: the same from an empty cache including trajectory
synthesis, verification and shards, and Dask 1 vs 2 workers. "Frames/s" is video frames covered divided by wall
time — what decides the cost of the full dataset (M4-ViteVQA: 1.32 M frames). Recall is the share of questions
whose answer evidence is found with OCR on every frame that the configuration still finds (target ≥ 0.98).

    python benchmarks/bench_curation.py [--quick | --stage-only]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("PREFECT_LOGGING_LEVEL", "ERROR")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

M4_FRAMES = 1_320_000


def decode_rate(root: Path) -> float:
    from videor4.contracts.media import open_video

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
    files = sorted((root / "img_dir").glob("*/*.jpg"))[::15][:frames]
    images = [cv2.cvtColor(cv2.imread(str(f)), cv2.COLOR_BGR2RGB) for f in files]
    ocr.read(images[0])  # warm-up (ORT session init)
    t0 = time.perf_counter()
    for im in images:
        ocr.read(im)
    return len(images) / (time.perf_counter() - t0), f"{ocr.name} {ocr.version}"


def curate(root: Path, out: Path, overrides: dict, *, workers: int = 2, runner: str = "local",
           export_ocr: bool = False) -> tuple[dict, set[int]]:
    import pandas as pd

    from videor4.curation.config import load_config
    from videor4.curation.sample import SAMPLE_SPLIT
    from videor4.pipelines.curate_flow import run_curate

    cfg = load_config(None, overrides)
    t0 = time.perf_counter()
    s = run_curate(root, SAMPLE_SPLIT, out, cfg, workers=workers, progress=False, runner=runner,
                   export_ocr=export_ocr)
    wall = time.perf_counter() - t0
    q = pd.read_parquet(out / "questions.parquet")
    frames = sum(1 for _ in (root / "img_dir").glob("*/*.jpg")) if (root / "img_dir").is_dir() else s.frames_decoded
    return {"wall": wall, "frames": frames, "ocr_calls": s.ocr_calls, "verification": s.verification_rate,
            "fps": frames / wall, "traj_s": s.trajectories_per_s}, set(q.loc[q.status == "answer", "question_id"])


def row(name: str, r: dict, found: set[int], base: set[int]) -> str:
    recall = len(found & base) / len(base) if base else float("nan")
    hours = M4_FRAMES / r["fps"] / 3600
    return (f"| {name} | {r['ocr_calls']} | {r['wall']:.1f} | {r['fps']:.2f} | {recall:.3f} | "
            f"{100 * r['verification']:.0f}% | {r['traj_s']:.2f} | {hours:,.0f} h |")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="decode and OCR rates only")
    ap.add_argument("--stage-only", action="store_true", help="only the analysis+matching stage table")
    args = ap.parse_args(argv)
    from videor4.curation.sample import sample_root

    root = sample_root()
    n_frames = sum(1 for _ in (root / "img_dir").glob("*/*.jpg"))
    print(f"bundled sample: {root} (7 videos, {n_frames} frames at 960x540); {os.cpu_count()} CPU cores")
    print("| measure | value |\n|---|---|")
    print(f"| decode (opencv, all frames) | {decode_rate(root):.0f} frames/s |")
    rate, name = ocr_rate(root)
    print(f"| OCR ({name}), one frame at a time | {rate:.2f} frames/s |", flush=True)
    if args.quick:
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        print()
        stage_table(root, Path(tmp))
        if not args.stage_only:
            print()
            pipeline_table(root, Path(tmp), n_frames)
    return 0


def pipeline_table(root: Path, tmp: Path, n_frames: int) -> None:
    """The whole curation (with trajectory synthesis, verification and shards) per configuration."""
    print("whole curation (decode → … → match → trajectory synthesis + verification → shards), from an empty cache:")
    print("| configuration | whole-frame OCR | wall s | effective frames/s | answer-evidence recall | verified "
          "trajectories | trajectories/s per worker | M4 (1.32 M frames) on 1 machine |")
    print("|---|---|---|---|---|---|---|---|")
    r, base = curate(root, tmp / "baseline", {"dedupe.method": "none", "tracking.method": "none"}, export_ocr=True)
    print(row("every frame read whole (reference)", r, base, base), flush=True)
    r, found = curate(root, tmp / "default", {})
    print(row("defaults (dedupe + text tracking + OpenCV detector)", r, found, base), flush=True)
    # Reusing precomputed OCR (what the M4 release ships as video_ocr/): the reference's, exported.
    data = tmp / "data"
    shutil.copytree(root / "Annotations", data / "Annotations")
    shutil.copytree(root / "videos", data / "videos")
    shutil.copytree(tmp / "baseline" / "video_ocr", data / "video_ocr")
    r, found = curate(data, tmp / "pre", {"ocr.backend": "precomputed"})
    r["frames"] = n_frames
    r["fps"] = n_frames / r["wall"]
    print(row("precomputed video_ocr", r, found, base), flush=True)
    rates = {}
    for n in (1, 2):
        r, found = curate(root, tmp / f"dask{n}", {}, workers=n, runner="dask")
        rates[n] = r["fps"]
        print(row(f"defaults, Dask {n} worker(s)", r, found, base), flush=True)
    print(f"\nscaling 1 → 2 Dask workers (whole curation): {rates[2] / rates[1]:.2f}x")


NO_DETECTOR = {"detector.backend": "none"}  # the end-to-end: decode -> dedupe -> OCR -> match


def stage_table(root: Path, tmp: Path) -> None:
    """decode → dedupe → OCR → match alone (no synthesis), nothing cached; recall against OCR on every frame."""
    from videor4.contracts.atomic import write_json_atomic
    from videor4.curation.analyze import video_ocr_json

    print("stage only (decode → dedupe → OCR → match, no trajectory synthesis), nothing cached; recall = share of "
          "the questions answered with OCR on every frame that are still answered:")
    print("| configuration | whole-frame OCR | region OCR | tracked frames | frames/s | answer-evidence recall | "
          f"M4 ({M4_FRAMES / 1e6:.2f} M frames) on 1 machine | on 8 machines |")
    print("|---|---|---|---|---|---|---|---|")
    base = None
    configs = (
        ("every frame read whole (reference)", {**NO_DETECTOR, "dedupe.method": "none", "tracking.method": "none"}, 1),
        ("dedupe only (no tracking)", {**NO_DETECTOR, "tracking.method": "none"}, 1),
        ("dedupe + text tracking (default)", NO_DETECTOR, 1),
        ("dedupe + text tracking, Dask 2 workers x 1 thread", NO_DETECTOR, 2),
        ("dedupe + text tracking + OpenCV detector", {}, 1),
    )
    rates, reference = {}, []
    for name, overrides, workers in configs:
        r = stage_rate(root, overrides, workers=workers, keep_analyses=base is None)
        if base is None:
            base, reference = r["answered"], r["analyses"]
        rates[name] = r["fps"]
        print(stage_row(name, r, base), flush=True)
    data = tmp / "stage-data"
    shutil.copytree(root / "Annotations", data / "Annotations")
    shutil.copytree(root / "videos", data / "videos")
    for a in reference:  # the every-frame OCR, in the dataset's video_ocr format
        write_json_atomic(data / "video_ocr" / f"{a.video_id}.json", video_ocr_json(a))
    r = stage_rate(data, {**NO_DETECTOR, "ocr.backend": "precomputed"})
    print(stage_row("precomputed video_ocr (no model)", r, base), flush=True)
    one, two = configs[2][0], configs[3][0]
    print(f"\nscaling 1 process -> Dask 2 workers (stage only): {rates[two] / rates[one]:.2f}x")


def stage_row(name: str, r: dict, base: set[int]) -> str:
    recall = len(r["answered"] & base) / len(base) if base else float("nan")
    hours = M4_FRAMES / r["fps"] / 3600
    return (f"| {name} | {r['full']} | {r['region']} | {r['tracked']} | {r['fps']:.1f} | {recall:.3f} | "
            f"{hours:,.1f} h | {hours / 8:,.1f} h |")


def stage_video(root: str, video_id: str, overrides: dict) -> dict:
    """Analyse and match one video, nothing cached (runs in this process or on a Dask worker)."""
    from videor4.contracts.dataset import load_split, locate_media
    from videor4.curation.config import load_config
    from videor4.curation.curate_video import analyze_and_match
    from videor4.curation.sample import SAMPLE_SPLIT
    from videor4.pipelines.curate_flow import _backends

    cfg = load_config(None, overrides)
    ocr, det, _ = _backends(cfg.model_dump_json())
    records = [r for r in load_split(Path(root), SAMPLE_SPLIT).records if r.video_id == video_id]
    r = analyze_and_match(locate_media(Path(root), video_id), records, cfg, Path(root), None, ocr, det)
    return {"analysis": r.analysis, "answered": {q.question_id for q in r.summaries if q.status == "answer"}}


def stage_rate(root: Path, overrides: dict, *, workers: int = 1, keep_analyses: bool = False) -> dict:
    """Frames/s of analysis + matching over every video, nothing cached; models loaded before the clock starts."""
    from videor4.contracts.dataset import load_split
    from videor4.curation.sample import SAMPLE_SPLIT

    video_ids = load_split(root, SAMPLE_SPLIT).video_ids
    if workers == 1:
        _warm(overrides)
        t0 = time.perf_counter()
        results = [stage_video(str(root), vid, overrides) for vid in video_ids]
        wall = time.perf_counter() - t0
    else:
        from distributed import Client, LocalCluster

        threads = max(1, (os.cpu_count() or 1) // workers)  # as `videor4 curate --runner dask` does
        overrides = {**overrides, "ocr.num_threads": threads}
        with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
                Client(cluster) as client:
            client.run(_warm, overrides)
            t0 = time.perf_counter()
            results = client.gather(client.map(stage_video, [str(root)] * len(video_ids), video_ids,
                                               [overrides] * len(video_ids), pure=False))
            wall = time.perf_counter() - t0
    analyses = [r["analysis"] for r in results]
    return {"fps": sum(a.num_frames for a in analyses) / wall, "wall": wall,
            "answered": set().union(*(r["answered"] for r in results)),
            "full": sum(a.ocr_calls for a in analyses), "region": sum(a.region_ocr_calls for a in analyses),
            "tracked": sum(a.tracked_frames for a in analyses), "analyses": analyses if keep_analyses else None}


def _warm(overrides: dict) -> None:
    """Load the models for ``overrides`` in this process (they are cached per process), off the clock."""
    from videor4.curation.config import load_config
    from videor4.pipelines.curate_flow import _backends

    _backends(load_config(None, overrides).model_dump_json())


if __name__ == "__main__":
    sys.exit(main())
