"""Curation speed and quality: the OCR engine, the evidence stage and the whole curation, on real long-shot footage
(a terminal screen recording and a slide deck, `benchmarks/data/longshot`) and on the cut-heavy bundled sample.

Every speed is a ratio against a baseline measured in the same run (the machine is shared; absolute numbers move
with its load, which each table states):

* OCR engines: the same real frames read by each engine, rounds interleaved; text agreement with ONNX Runtime.
* Per dataset: the *anchor* — rapidocr with its own defaults (ONNX Runtime, detection at 736 px) reading every
  ``--anchor-stride``-th frame, as frames/s — and the *reference* — every frame read whole with the default engine,
  whose answered questions recall is measured against. Stage rows (decode → dedupe → OCR → match, nothing cached)
  vary one setting each; the whole curation (+ trajectory synthesis, verification, shards; from an empty cache)
  is split into stages, and its verification is checked against reading every claimed view whole.

"Frames/s" is video frames covered per second of wall time, what decides the cost of M4-ViteVQA (1.32 M frames).

    python benchmarks/bench_curation.py [--quick] [--data longshot|sample|both] [--anchor-stride N]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

os.environ.setdefault("PREFECT_LOGGING_LEVEL", "ERROR")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

M4_FRAMES = 1_320_000
HERE = Path(__file__).resolve().parent
LONGSHOT = HERE / "data" / "longshot"
NO_DETECTOR = {"detector.backend": "none"}
EVERY_FRAME = {"dedupe.method": "none", "tracking.method": "none", "detector.backend": "none"}


def load() -> str:
    one, five, _ = os.getloadavg()
    return f"load average {one:.1f} (1 min) / {five:.1f} (5 min) on {os.cpu_count()} cores"


def hours(fps: float, machines: int = 1) -> str:
    return f"{M4_FRAMES / fps / 3600 / machines:,.1f} h"


# -- datasets ----------------------------------------------------------------------------------------------------
class Dataset:
    """A dataset root in the official layout and the split to curate."""

    def __init__(self, name: str, root: Path, split: str) -> None:
        from videor4.contracts.dataset import load_split, locate_media

        self.name, self.root, self.split = name, root, split
        self.data = load_split(root, split)
        self.sources = [locate_media(root, v) for v in self.data.video_ids]
        self.records = {v: [r for r in self.data.records if r.video_id == v] for v in self.data.video_ids}
        self.frames = 0
        from videor4.contracts.media import open_video

        self.shapes = set()
        for s in self.sources:
            with open_video(s.path) as reader:
                self.frames += reader.num_frames
                self.shapes.add(f"{reader.width}x{reader.height}")

    def describe(self) -> str:
        return (f"{self.name}: {len(self.sources)} videos, {self.frames} frames ({', '.join(sorted(self.shapes))}), "
                f"{len(self.data.records)} questions")


def longshot() -> Dataset:
    return Dataset("long-shot footage (benchmarks/data/longshot)", LONGSHOT, "longshot")


def sample() -> Dataset:
    from videor4.curation.sample import SAMPLE_SPLIT, sample_root

    return Dataset("bundled sample (cut-heavy)", sample_root(), SAMPLE_SPLIT)


# -- instrumentation ---------------------------------------------------------------------------------------------
class StageClock:
    """Seconds inside each model call, split by curation phase (analysis or synthesis).

    The backends' methods are wrapped on the instances the flow uses (rapidocr's ``read`` goes through
    ``detect_regions`` and ``recognize``, so each second is counted once); the phase switches when
    ``curate_video`` enters and leaves ``analyze_and_match``.
    """

    def __init__(self) -> None:
        self.seconds: dict[tuple[str, str], float] = defaultdict(float)
        self.phase = "synthesis"

    def wrap(self, obj, method: str, name: str) -> None:
        if obj is None or getattr(obj, f"_bench_{method}", False) or not hasattr(obj, method):
            return
        fn = getattr(obj, method)

        def timed(*args, **kwargs):
            t = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.seconds[(self.phase, name)] += time.perf_counter() - t

        setattr(obj, method, timed)
        setattr(obj, f"_bench_{method}", True)

    def reset(self) -> None:
        self.seconds.clear()

    def __getitem__(self, key: tuple[str, str]) -> float:
        return self.seconds.get(key, 0.0)


CLOCK = StageClock()


def backends(overrides: dict):
    """The flow's per-process models for these settings, loaded (off the clock) and instrumented."""
    from videor4.curation.config import load_config
    from videor4.pipelines.curate_flow import _backends

    cfg = load_config(None, overrides)
    ocr, det, verify = _backends(cfg.model_dump_json())
    for model in {id(m): m for m in (ocr, verify) if m is not None}.values():
        CLOCK.wrap(model, "detect_regions", "ocr detection")
        CLOCK.wrap(model, "recognize", "ocr recognition")
        CLOCK.wrap(model, "read_regions", "ocr (one-step engine)")
    CLOCK.wrap(det, "detect", "object detector")
    return cfg, ocr, det, verify


def _phases() -> None:
    """Let CLOCK know when curate_video is analysing (patched once, in this process)."""
    from videor4.curation import curate_video as module

    if getattr(module, "_bench_phases", False):
        return
    inner = module.analyze_and_match

    def analysis(*args, **kwargs):
        before, CLOCK.phase = CLOCK.phase, "analysis"
        try:
            return inner(*args, **kwargs)
        finally:
            CLOCK.phase = before

    module.analyze_and_match = analysis
    module._bench_phases = True


def _warm_view() -> None:
    """Import what trajectory text needs (transformers' smart_resize: seconds, once per process) off the clock."""
    from videor4.contracts.executor import ImageRef
    from videor4.contracts.view import PromptConfig, display_size

    display_size(PromptConfig(), ImageRef(0, 0.0), (640, 360))


# -- measurements ----------------------------------------------------------------------------------------------
def anchor_rate(ds: Dataset, stride: int) -> tuple[float, int]:
    """OCR of every frame as rapidocr does it by default (ONNX Runtime, its detection size): frames/s, measured
    on every ``stride``-th frame (each frame costs the same whichever frames are skipped)."""
    import rapidocr

    from videor4.contracts.media import open_video
    from videor4.curation.ocr import RapidOCRBackend

    models = Path(rapidocr.__file__).parent / "models"
    engine = rapidocr.RapidOCR(params={"Global.log_level": "error", **{
        f"{k.capitalize()}.model_path": str(RapidOCRBackend._bundled(models, k)) for k in ("det", "rec", "cls")}})
    frames = []
    for s in ds.sources:
        with open_video(s.path) as reader:
            frames += [im[..., ::-1].copy() for _, im in reader.read(range(0, reader.num_frames, stride))]
    engine(frames[0])  # model load and first-call set-up, off the clock
    t0 = time.perf_counter()
    for bgr in frames:
        engine(bgr)
    return len(frames) / (time.perf_counter() - t0), len(frames)


def stage(ds: Dataset, overrides: dict, *, workers: int = 1) -> dict:
    """decode → dedupe → OCR → match for every video, nothing cached; models loaded before the clock starts."""
    from videor4.curation.curate_video import analyze_and_match

    if workers > 1:
        return _stage_dask(ds, overrides, workers)
    cfg, ocr, det, _ = backends(overrides)
    CLOCK.reset()
    CLOCK.phase = "analysis"
    t0 = time.perf_counter()
    results = [analyze_and_match(s, ds.records[s.video_id], cfg, ds.root, None, ocr, det) for s in ds.sources]
    wall = time.perf_counter() - t0
    CLOCK.phase = "synthesis"
    return _summary(ds, [r.analysis for r in results], results, wall)


def stage_rows(ds: Dataset, configs: list[tuple[str, dict]], rounds: int) -> dict[str, dict]:
    """Each configuration's evidence stage, interleaved video by video and repeated ``rounds`` times (the machine's
    load drifts; interleaving spreads it over every configuration): each configuration's fastest round counts."""
    from videor4.curation.curate_video import analyze_and_match

    models = {name: backends(overrides) for name, overrides in configs}  # held here: the flow caches only four
    walls: dict[str, list[float]] = {name: [0.0] * rounds for name, _ in configs}
    last: dict[str, list] = defaultdict(list)
    clocks: dict[str, dict] = defaultdict(lambda: defaultdict(float))
    for r in range(rounds):
        for s in ds.sources:
            for name, _ in configs:
                cfg, ocr, det, _ = models[name]
                CLOCK.reset()
                CLOCK.phase = "analysis"
                t = time.perf_counter()
                res = analyze_and_match(s, ds.records[s.video_id], cfg, ds.root, None, ocr, det)
                walls[name][r] += time.perf_counter() - t
                CLOCK.phase = "synthesis"
                if r == rounds - 1:
                    last[name].append(res)
                    for key, v in CLOCK.seconds.items():
                        clocks[name][key] += v
    out = {}
    for name, _ in configs:
        out[name] = _summary(ds, [x.analysis for x in last[name]], last[name], min(walls[name]))
        out[name]["clock"] = dict(clocks[name])
    return out


def _load(overrides: dict) -> None:
    backends(overrides)


def _stage_video(root: str, split: str, video_id: str, overrides: dict):
    from videor4.contracts.dataset import load_split, locate_media
    from videor4.curation.curate_video import analyze_and_match

    cfg, ocr, det, _ = backends(overrides)
    records = [r for r in load_split(Path(root), split).records if r.video_id == video_id]
    return analyze_and_match(locate_media(Path(root), video_id), records, cfg, Path(root), None, ocr, det)


def _stage_dask(ds: Dataset, overrides: dict, workers: int) -> dict:
    """The same on a local Dask cluster: one process per core, one inference thread each."""
    from distributed import Client, LocalCluster

    overrides = {**overrides, "ocr.num_threads": max(1, (os.cpu_count() or 1) // workers)}
    with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        client.run(_load, overrides)
        t0 = time.perf_counter()
        ids = [s.video_id for s in ds.sources]
        results = client.gather(client.map(_stage_video, [str(ds.root)] * len(ids), [ds.split] * len(ids), ids,
                                           [overrides] * len(ids), pure=False))
        wall = time.perf_counter() - t0
    return _summary(ds, [r.analysis for r in results], results, wall)


def _summary(ds: Dataset, analyses, results, wall: float) -> dict:
    return {"wall": wall, "fps": ds.frames / wall, "analyses": analyses, "results": results,
            "answered": {q.question_id for r in results for q in r.summaries if q.status == "answer"},
            "full": sum(a.ocr_calls for a in analyses), "region": sum(a.region_ocr_calls for a in analyses),
            "lines": sum(a.lines_recognized for a in analyses), "kept": sum(a.lines_unchanged for a in analyses),
            "detector": sum(a.detector_calls for a in analyses),
            "analysis_s": sum(a.seconds for a in analyses), "clock": dict(CLOCK.seconds)}


def curate(ds: Dataset, overrides: dict, out: Path, cache: Path | None = None) -> dict:
    """The whole curation as the flow runs each video (``process_video``) and writes the outputs, without
    Prefect's scheduling; videos one after the other, so every stage's time is its own."""
    from videor4.pipelines.curate_flow import process_video, write_outputs

    cfg, *_ = backends(overrides)
    _phases()
    _warm_view()
    cache = cache or out / "cache"
    CLOCK.reset()
    CLOCK.phase = "synthesis"
    t0 = time.perf_counter()
    results = [process_video(s, ds.records[s.video_id], cfg, ds.root, cache) for s in ds.sources]
    t_write = time.perf_counter()
    summary = write_outputs(ds.data, ds.data.video_ids, results, list(ds.data.rejects), cfg, out, t0)
    wall = time.perf_counter() - t0
    write_s = wall - (t_write - t0)
    analyses = [r.analysis for r in results if r.analysis is not None]
    out_d = _summary(ds, analyses, results, wall)
    synth = sum(r.synthesis_seconds for r in results)
    verified = {c["sample_id"] for r in results for c in r.candidates if c["verified"]}
    match_s = wall - write_s - synth - sum(a.seconds for a in analyses if not a.from_cache)
    out_d.update(write=write_s, synthesis=synth, matching=max(0.0, match_s),
                 trajectories=sum(len(r.candidates) for r in results), verified=verified,
                 by_recognition=sum(r.views_recognized for r in results),
                 read_whole=sum(r.views_read_whole for r in results), shards_hash=summary.shards_hash)
    return out_d


def flow(ds: Dataset, overrides: dict, out: Path) -> tuple[float, set[int]]:
    """``videor4 curate`` as users run it (Prefect flow, default local runner), from an empty cache."""
    import pandas as pd

    from videor4.curation.config import load_config
    from videor4.pipelines.curate_flow import run_curate

    backends(overrides)
    t0 = time.perf_counter()
    run_curate(ds.root, ds.split, out, load_config(None, overrides), workers=2, progress=False)
    wall = time.perf_counter() - t0
    q = pd.read_parquet(out / "questions.parquet")
    return wall, set(q.loc[q.status == "answer", "question_id"])


# -- tables --------------------------------------------------------------------------------------------------------
def engine_table(rounds: int = 3) -> None:
    """The same real frames through each engine and thread count, interleaved; detection and recognition apart."""
    from videor4.contracts.media import open_video
    from videor4.curation.ocr import OCRConfig, create_ocr, detection_scale
    from videor4.curation.sample import sample_root

    frames = []
    picked = ((LONGSHOT / "videos" / "91001.mp4", (120, 215)), (LONGSHOT / "videos" / "91002.mp4", (60, 150)),
              (sample_root() / "videos" / "90003.mp4", (10,)), (sample_root() / "videos" / "90004.mp4", (5,)))
    for video, picks in picked:
        with open_video(video) as reader:
            frames += [im for _, im in reader.read(picks)]
    configs = {
        "onnxruntime (rapidocr's default engine), 2 threads": OCRConfig(engine="onnxruntime"),
        "openvino f32, 2 threads": OCRConfig(precision="f32"),
        "openvino bf16, 2 threads (default)": OCRConfig(),
        "onnxruntime, 1 thread": OCRConfig(engine="onnxruntime", num_threads=1),
        "openvino f32, 1 thread": OCRConfig(precision="f32", num_threads=1),
    }
    engines = {name: create_ocr(c) for name, c in configs.items()}
    quads = {i: engines[next(iter(engines))].detect_regions(f, [(0, 0, f.shape[1], f.shape[0])])
             for i, f in enumerate(frames)}
    det = defaultdict(float)
    rec = defaultdict(float)
    texts: dict[str, list] = defaultdict(list)
    for ocr in engines.values():  # first call per engine and shape sets up kernels: off the clock
        for i, f in enumerate(frames):
            ocr.detect_regions(f, [(0, 0, f.shape[1], f.shape[0])])
            ocr.recognize(f, quads[i])
    for r in range(rounds):
        for name, ocr in engines.items():
            for i, f in enumerate(frames):
                t = time.perf_counter()
                ocr.detect_regions(f, [(0, 0, f.shape[1], f.shape[0])], detection_scale(f.shape, configs[name]))
                det[name] += time.perf_counter() - t
                t = time.perf_counter()
                read = ocr.recognize(f, quads[i])
                rec[name] += time.perf_counter() - t
                if r == 0:
                    texts[name] += [b.text if b else "" for b in read]
    lines = sum(len(q) for q in quads.values())
    base = next(iter(engines))
    print(f"OCR engines on {len(frames)} real frames (2 terminal, 2 slides, 2 sample; {lines} text lines), "
          f"{rounds} interleaved rounds; {load()}:")
    print("| engine | detection s/frame | recognition ms/line | detection speed-up | recognition speed-up | "
          "lines read as by onnxruntime |")
    print("|---|---|---|---|---|---|")
    for name in engines:
        same = sum(a == b for a, b in zip(texts[name], texts[base]))
        print(f"| {name} | {det[name] / rounds / len(frames):.3f} | {1000 * rec[name] / rounds / lines:.1f} | "
              f"{det[base] / det[name]:.2f}x | {rec[base] / rec[name]:.2f}x | {same}/{lines} |", flush=True)


def precision_table(stride: int = 7) -> None:
    """bf16 against f32 reading the same detected lines of every ``stride``-th frame of both datasets.

    Why: bf16 is the default precision because it is faster; this says what it costs in readings, line by line.
    """
    from videor4.contracts.media import open_video
    from videor4.curation.ocr import OCRConfig, create_ocr
    from videor4.curation.sample import sample_root

    f32, bf16 = create_ocr(OCRConfig(precision="f32")), create_ocr(OCRConfig(precision="bf16"))
    videos = sorted((LONGSHOT / "videos").glob("*.mp4")) + sorted((sample_root() / "videos").glob("*.mp4"))
    lines, same, spacing, differ = 0, 0, 0, []
    for video in videos:
        with open_video(video) as reader:
            frames = [im for _, im in reader.read(range(0, reader.num_frames, stride))]
        for f in frames:
            quads = f32.detect_regions(f, [(0, 0, f.shape[1], f.shape[0])])
            for a, b in zip(f32.recognize(f, quads), bf16.recognize(f, quads)):
                ta, tb = (a.text if a else ""), (b.text if b else "")
                lines += 1
                if ta == tb:
                    same += 1
                elif ta.replace(" ", "") == tb.replace(" ", ""):
                    spacing += 1
                else:
                    differ.append(f"{video.name}: {ta!r} / {tb!r}")
    print(f"\nbf16 vs f32 on the same detected lines (every {stride}th frame of both datasets): {lines} lines, "
          f"{same} read alike, {spacing} differ only in spaces, {len(differ)} differ otherwise "
          f"(f32 / bf16; '' = below the score threshold):")
    for d in sorted(set(differ)):
        print(f"  {d} (x{differ.count(d)})")


STAGE_CONFIGS = (
    ("defaults: dedupe + text tracking (+ ink gate, unchanged lines kept) + detector where questions need it", {}),
    ("defaults without the object detector", NO_DETECTOR),
    ("detection at det_min_side 640", {"ocr.det_min_side": 640}),
    ("detection at det_min_side 512", {"ocr.det_min_side": 512}),
    ("no ink gate (tracking.ink_contrast 0)", {"tracking.ink_contrast": 0}),
    ("openvino f32 (ocr.precision f32)", {"ocr.precision": "f32"}),
    ("onnxruntime engine", {"ocr.engine": "onnxruntime"}),
)


def dataset_tables(ds: Dataset, tmp: Path, stride: int, rounds: int) -> None:
    print(f"\n### {ds.describe()}\n")
    anchor, n_anchor = anchor_rate(ds, stride)
    print(f"anchor: rapidocr with its defaults (onnxruntime, detection at 736 px) reads {anchor:.2f} frames/s "
          f"(every {stride}th frame, {n_anchor} frames; measured again after the whole curation); {load()}",
          flush=True)
    ref = stage(ds, EVERY_FRAME)
    base = ref["answered"]
    print(f"reference: every frame read whole with the default engine, {ref['fps']:.2f} frames/s, "
          f"{len(base)} of {len(ds.data.records)} questions answered; {load()}\n", flush=True)

    def recall(found: set[int]) -> str:
        return f"{len(found & base) / len(base):.3f}" if base else "n/a"

    print("evidence stage (decode → dedupe → OCR → match [+ detector]), nothing cached; recall = share of the "
          "reference's answered questions still answered:")
    print("| configuration | whole-frame reads | region reads | lines recognised | lines kept unchanged | "
          "detector calls | wall s | frames/s | x anchor | answer-evidence recall | M4 on 1 machine | 8 machines |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")

    def stage_row(name: str, r: dict) -> None:
        print(f"| {name} | {r['full']} | {r['region']} | {r['lines']} | {r['kept']} | {r['detector']} | "
              f"{r['wall']:.1f} | {r['fps']:.1f} | {r['fps'] / anchor:.1f}x | {recall(r['answered'])} | "
              f"{hours(r['fps'])} | {hours(r['fps'], 8)} |", flush=True)

    stage_row("every frame read whole (reference)", ref)
    rows = stage_rows(ds, list(STAGE_CONFIGS), rounds)
    for name, _ in STAGE_CONFIGS:
        stage_row(name, rows[name])
    default = rows[STAGE_CONFIGS[0][0]]
    # Thread layout: one process with the runtime's threads (the default) against one process per core with one
    # thread each, alternately, on the same videos.
    seq_s, dask_s, dask = 0.0, 0.0, None
    for _ in range(rounds):
        dask = stage(ds, {}, workers=2)
        dask_s += dask["wall"]
        seq_s += stage(ds, {})["wall"]
    stage_row("defaults, Dask: 2 processes x 1 thread", {**dask, "fps": ds.frames * rounds / dask_s,
                                                          "wall": dask_s / rounds})
    data = tmp / f"{ds.split}-precomputed"
    shutil.copytree(ds.root / "Annotations", data / "Annotations")
    shutil.copytree(ds.root / "videos", data / "videos")
    from videor4.contracts.atomic import write_json_atomic
    from videor4.curation.analyze import video_ocr_json

    for a in ref["analyses"]:  # the reference's every-frame OCR, as the dataset's video_ocr
        write_json_atomic(data / "video_ocr" / f"{a.video_id}.json", video_ocr_json(a))
    pre = Dataset(ds.name, data, ds.split)
    stage_row("precomputed video_ocr (no model)", stage(pre, {"ocr.backend": "precomputed", **NO_DETECTOR}))
    print(f"\nthread layout: 2 processes x 1 thread vs 1 process x 2 threads (stage, {rounds} alternating rounds): "
          f"{seq_s / dask_s:.2f}x; {load()}")
    c = default["clock"]
    det_s = c.get(("analysis", "object detector"), 0)
    rest = default["analysis_s"] - c.get(("analysis", "ocr detection"), 0) - c.get(("analysis", "ocr recognition"), 0)
    print(f"defaults, where the stage's {default['wall']:.1f} s go: OCR detection "
          f"{c.get(('analysis', 'ocr detection'), 0):.1f} s, OCR recognition "
          f"{c.get(('analysis', 'ocr recognition'), 0):.1f} s, tracking + ink gate + waiting for frames "
          f"{rest:.1f} s, matching {max(0.0, default['wall'] - default['analysis_s']):.1f} s (the wall time left "
          f"over); on threads of their own, overlapped with these: object detector {det_s:.1f} s, decoding and "
          f"near-duplicate signatures")

    print(f"\nwhole curation (+ trajectory synthesis, verification, shards), from an empty cache; {load()}:")
    whole = curate(ds, {}, tmp / f"{ds.split}-whole")
    whole_f32 = curate(ds, {"ocr.precision": "f32"}, tmp / f"{ds.split}-whole-f32")
    flows = {threads: flow(ds, {"ocr.num_threads": threads}, tmp / f"{ds.split}-flow{threads}") for threads in (0, 1)}
    anchor_after, _ = anchor_rate(ds, stride)
    print(f"anchor measured again: {anchor_after:.2f} frames/s; the whole curation is compared with the mean of both")
    anchor = (anchor + anchor_after) / 2  # measured before the stage rows and after the whole curation
    strict = curate(ds, {"trajectories.verify_lines": False}, tmp / f"{ds.split}-strict",
                    cache=tmp / f"{ds.split}-whole" / "cache")
    c = whole["clock"]
    a_det, a_rec = c.get(("analysis", "ocr detection"), 0), c.get(("analysis", "ocr recognition"), 0)
    a_obj = c.get(("analysis", "object detector"), 0)
    s_det, s_rec = c.get(("synthesis", "ocr detection"), 0), c.get(("synthesis", "ocr recognition"), 0)
    analysis_rest = whole["analysis_s"] - a_det - a_rec  # the detector runs on its own thread, overlapped
    print("| configuration | wall s | frames/s | x anchor (same run) | answer-evidence recall | trajectories verified |"
          " views verified by recognising known lines / read whole | M4 on 1 machine | 8 machines |")
    print("|---|---|---|---|---|---|---|---|---|")
    print(f"| defaults | {whole['wall']:.1f} | {whole['fps']:.2f} | {whole['fps'] / anchor:.1f}x | "
          f"{recall(whole['answered'])} | {len(whole['verified'])}/{whole['trajectories']} | "
          f"{whole['by_recognition']} / {whole['read_whole']} | {hours(whole['fps'])} | {hours(whole['fps'], 8)} |")
    print(f"| ocr.precision f32 | {whole_f32['wall']:.1f} | {whole_f32['fps']:.2f} | {whole_f32['fps'] / anchor:.1f}x | "
          f"{recall(whole_f32['answered'])} | {len(whole_f32['verified'])}/{whole_f32['trajectories']} | "
          f"{whole_f32['by_recognition']} / {whole_f32['read_whole']} | {hours(whole_f32['fps'])} | "
          f"{hours(whole_f32['fps'], 8)} |")
    for threads, (wall, found) in flows.items():
        fps = ds.frames / wall
        default = " (default)" if not threads else ""
        print(f"| `videor4 curate` (Prefect, local runner, 2 videos at a time), ocr.num_threads {threads}{default} | "
              f"{wall:.1f} | {fps:.2f} | {fps / anchor:.1f}x | {recall(found)} | | | {hours(fps)} | {hours(fps, 8)} |")
    same = whole["verified"] == strict["verified"]
    print(f"| same analysis, every claimed view read whole (verify_lines: false; synthesis only) | "
          f"{strict['synthesis']:.1f} (synthesis) | | | | {len(strict['verified'])}/{strict['trajectories']} | "
          f"0 / {strict['read_whole']} | | |")
    print(f"\nverification: recognition of known lines gives the {'same' if same else 'DIFFERENT'} verified set as "
          f"reading every view whole ({len(whole['verified'] ^ strict['verified'])} differ); synthesis "
          f"{strict['synthesis'] / max(whole['synthesis'], 1e-9):.1f}x faster with it")
    print("\nwhole curation, time per stage (defaults):")
    print("| stage | s | share |\n|---|---|---|")
    parts = [("motion tracking + ink gate + waiting for frames (decoding and dedupe run ahead on a thread)",
              analysis_rest), ("OCR text detection", a_det), ("OCR text recognition", a_rec),
             ("evidence matching", whole["matching"]),
             ("trajectory synthesis (execution, chat, frames)", whole["synthesis"] - s_det - s_rec),
             ("verification: OCR recognition", s_rec), ("verification: OCR detection (views read whole)", s_det),
             ("writing tables and shards", whole["write"])]
    for name, s in parts:
        print(f"| {name} | {s:.1f} | {100 * s / whole['wall']:.0f}% |")
    print(f"| object detector (its own thread, overlapped with the analysis rows) | {a_obj:.1f} | |")
    print(f"\n({whole['trajectories']} trajectories, {whole['synthesis'] / max(whole['trajectories'], 1):.2f} s each; "
          f"shards {whole['shards_hash'][:16]}; {load()})", flush=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="the OCR engine table only")
    ap.add_argument("--data", choices=("longshot", "sample", "both"), default="both")
    ap.add_argument("--anchor-stride", type=int, default=6, help="the anchor reads every N-th frame (default 6)")
    ap.add_argument("--rounds", type=int, default=2, help="interleaved rounds of the stage rows (default 2)")
    args = ap.parse_args(argv)
    print(f"{os.cpu_count()} CPU cores; {load()}\n")
    engine_table()
    precision_table()
    if args.quick:
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        for make in {"longshot": (longshot,), "sample": (sample,), "both": (longshot, sample)}[args.data]:
            dataset_tables(make(), Path(tmp), args.anchor_stride, args.rounds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
