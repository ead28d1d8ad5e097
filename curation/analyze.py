"""Per-video analysis: decode → sample → dedupe → OCR + detection.

This is the expensive stage (OCR is ~0.4 s per 960x540 frame on two cores), so its
result is stored once per (video content, analysis settings, backend
versions) in a content-addressed artifact and never recomputed: a rerun, a
resumed run after a crash, or a second worker that gets the same video finds
the artifact and does no OCR. Artifacts are written with temp-file + rename,
so a killed run leaves either a complete artifact or none.

Plain functions, no Prefect: the flow in ``videor4.pipelines`` only schedules
them (DESIGN §10, datatrove style).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

from videor4.contracts.atomic import write_json_atomic
from videor4.contracts.dataset import VideoSource
from videor4.contracts.media import ReadAhead, UnreadableMediaError, open_video, uniform_indices
from videor4.curation.config import CurationConfig
from videor4.curation.detect import Detector, create_detector
from videor4.curation.evidence import FrameObservation
from videor4.curation.ocr import OCRBackend, TextBox, create_ocr, load_precomputed_ocr
from videor4.curation.sampling import NearDuplicateFilter, fps_indices
from videor4.curation.text_tracking import TextTracker

ARTIFACT_VERSION = 3  # 2: region OCR / tracking counters; 3: line counters, detector only where questions need it


@dataclass
class VideoAnalysis:
    """Everything the matcher needs about one video, plus counters for the run summary."""

    video_id: str
    num_frames: int
    fps: float
    width: int
    height: int
    decoder: str
    ocr_backend: str
    detector_backend: str
    sampled: list[int]
    kept: list[int]
    representative: dict[int, int]
    observations: list[FrameObservation]
    ocr_calls: int = 0  # whole-frame model reads
    region_ocr_calls: int = 0  # reads of changed regions only (text tracking)
    tracked_frames: int = 0  # kept frames whose text was (partly) carried over from an earlier read
    lines_recognized: int = 0  # text lines the OCR recogniser read
    lines_unchanged: int = 0  # lines detected again where pixels had not changed: earlier text kept, not re-read
    detector_calls: int = 0
    seconds: float = 0.0
    from_cache: bool = field(default=False, compare=False)

    def timestamp(self, frame_index: int) -> float:
        return frame_index / self.fps

    def by_frame(self) -> dict[int, list[FrameObservation]]:
        out: dict[int, list[FrameObservation]] = {i: [] for i in self.kept}
        for o in self.observations:
            out.setdefault(o.frame_index, []).append(o)
        return out

    def to_json(self) -> dict:
        d = asdict(self)
        d.pop("from_cache")
        d["representative"] = {str(k): v for k, v in self.representative.items()}
        d["artifact_version"] = ARTIFACT_VERSION
        return d

    @classmethod
    def from_json(cls, d: dict) -> VideoAnalysis:
        d = dict(d)
        d.pop("artifact_version", None)
        d["representative"] = {int(k): v for k, v in d["representative"].items()}
        d["observations"] = [FrameObservation(**{**o, "bbox": tuple(o["bbox"])}) for o in d["observations"]]
        return cls(**d, from_cache=True)


def media_fingerprint(source: VideoSource) -> str:
    """Content hash of a video file, or names+sizes of a frame folder (cheap, stable across copies)."""
    h = hashlib.sha1()
    try:
        if source.kind == "video":
            with open(source.path, "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    h.update(block)
        else:
            for p in sorted(source.path.iterdir()):
                h.update(f"{p.name}:{p.stat().st_size};".encode())
    except OSError as exc:  # the first read of the media: permissions, I/O errors are the video's reject
        raise UnreadableMediaError(f"{source.path}: cannot read ({exc.strerror or exc})") from exc
    return h.hexdigest()[:16]


def backend_names(cfg: CurationConfig, ocr: OCRBackend | None, detector: Detector | None) -> tuple[str, str]:
    ocr_name = f"{ocr.name} {ocr.version}" if ocr is not None else "precomputed video_ocr"
    det_name = f"{detector.name} {detector.version}" if detector is not None else "none"
    return ocr_name, det_name


def artifact_path(cache_dir: Path, source: VideoSource, cfg: CurationConfig, backends: tuple[str, str]) -> Path:
    key = hashlib.sha1(
        json.dumps([ARTIFACT_VERSION, source.kind, media_fingerprint(source), cfg.stage_hash("analysis"),
                    list(backends)]).encode()
    ).hexdigest()[:16]
    # The stage hash in the name lets `videor4 runs status` count a run's finished videos without hashing media.
    return Path(cache_dir) / "analysis" / f"{source.video_id}-{cfg.stage_hash('analysis')}-{key}.json"


def _sample(cfg: CurationConfig, num_frames: int, fps: float) -> list[int]:
    s = cfg.sampling
    if s.mode == "fps":
        return fps_indices(num_frames, fps, s.fps)
    if s.mode == "uniform":
        return uniform_indices(num_frames, s.num_frames)
    return list(range(num_frames))


def _ocr_observations(frame_index: int, ts: float, boxes: Iterable[TextBox], w: int, h: int,
                      backend: str) -> list[FrameObservation]:
    return [FrameObservation(frame_index, ts, "ocr", b.text, b.bbox_norm(w, h), float(b.score), backend)
            for b in boxes if b.text.strip()]


def analyze_video(source: VideoSource, cfg: CurationConfig, *, ocr: OCRBackend | None = None,
                  detector: Detector | None = None, precomputed_ocr: Path | None = None,
                  cache_dir: Path | None = None, objects: bool = True) -> VideoAnalysis:
    """Analyse one video, reusing its artifact when one exists for the same inputs.

    With ``precomputed_ocr`` (the dataset's ``video_ocr/<id>.json``) no OCR model
    runs at all: the official boxes are used for the sampled frames. ``objects=False``
    (no question of the video can use a detected object, :func:`~videor4.curation.evidence.needs_objects`)
    runs no detector; the artifact then records detector ``none``.
    """
    if precomputed_ocr is None and ocr is None:
        ocr = create_ocr(cfg.ocr)
    if not objects:
        detector = None
    elif detector is None and cfg.detector.backend != "none":
        detector = create_detector(cfg.detector)
    backends = backend_names(cfg, None if precomputed_ocr else ocr, detector)
    path = artifact_path(cache_dir, source, cfg, backends) if cache_dir is not None else None
    if path is not None and path.is_file():
        try:
            return VideoAnalysis.from_json(json.loads(path.read_text(encoding="utf-8")))
        except (ValueError, KeyError, TypeError):
            path.unlink(missing_ok=True)  # an artifact from an incompatible version: recompute

    t0 = time.perf_counter()
    dedupe = NearDuplicateFilter(cfg.dedupe)
    scene = NearDuplicateFilter(cfg.detection_dedupe)
    per_frame: list[tuple[list[FrameObservation], Future[list] | None, int, float]] = []
    kept: list[int] = []
    det_calls = 0
    tracker = TextTracker(ocr, cfg.ocr, cfg.tracking) if precomputed_ocr is None and ocr is not None else None
    last_detection = -float("inf")
    # Decoding with the frames' near-duplicate signatures (ReadAhead) and the object detector run on threads of
    # their own while OCR reads the frames before: the OCR runtime leaves a core idle during tracking and its own
    # pre/post-processing, which OpenCV's decoder, resize and detector kernels fill (docs/scaling.md).
    # Observations are still listed frame by frame, text before objects, exactly as when everything ran in line.
    with open_video(source.path, config=cfg.media, video_id=source.video_id) as reader, \
            ThreadPoolExecutor(max_workers=1, thread_name_prefix="detector") as detecting:
        sampled = _sample(cfg, reader.num_frames, reader.fps)
        # Frame folders number their files from 0 or 1 (consecutively); the reader knows the numbering.
        pre = (load_precomputed_ocr(precomputed_ocr, getattr(reader, "frame_numbers", None))
               if precomputed_ocr else None)
        signed = ReadAhead(reader.read(sampled), depth=16, prepare=lambda item: (*item, dedupe.signature(item[1])))
        with signed as frames:
            for idx, image, signature in frames:
                if not dedupe.keep(idx, image, signature):
                    continue
                kept.append(idx)
                ts = reader.timestamp(idx)
                if pre is not None:
                    boxes = pre.get(idx, [])
                else:
                    assert tracker is not None  # no precomputed OCR -> a model was created above
                    boxes = tracker.read(image, ts, last=idx == sampled[-1])
                objects = None
                if (detector is not None and ts - last_detection >= cfg.detection_interval_s
                        and scene.keep(idx, image)):
                    last_detection = ts
                    det_calls += 1
                    objects = detecting.submit(detector.detect, image)
                per_frame.append((_ocr_observations(idx, ts, boxes, reader.width, reader.height, backends[0]),
                                  objects, idx, ts))
        observations: list[FrameObservation] = []
        for texts, objects, idx, ts in per_frame:
            observations += texts
            for d in objects.result() if objects is not None else ():
                x1, y1, x2, y2 = d.bbox
                box = (x1 / reader.width, y1 / reader.height, x2 / reader.width, y2 / reader.height)
                observations.append(FrameObservation(idx, ts, "object", d.label, tuple(min(max(v, 0.0), 1.0)
                                                for v in box), float(d.score), backends[1]))
        result = VideoAnalysis(
            video_id=source.video_id, num_frames=reader.num_frames, fps=reader.fps, width=reader.width,
            height=reader.height, decoder=reader.backend, ocr_backend=backends[0], detector_backend=backends[1],
            sampled=list(sampled), kept=kept, representative=dict(dedupe.representative),
            observations=observations, detector_calls=det_calls,
            ocr_calls=tracker.counters.full_reads if tracker else 0,
            region_ocr_calls=tracker.counters.region_reads if tracker else 0,
            tracked_frames=tracker.counters.tracked_frames if tracker else 0,
            lines_recognized=tracker.counters.lines_recognized if tracker else 0,
            lines_unchanged=tracker.counters.lines_unchanged if tracker else 0,
            seconds=round(time.perf_counter() - t0, 3))
    if path is not None:
        write_json_atomic(path, result.to_json())
    return result


def video_ocr_json(analysis: VideoAnalysis) -> dict[str, list[dict]]:
    """The analysis's OCR in the official ``video_ocr/<id>.json`` format, one key per frame (1-based).

    Dropped near-duplicates carry their representative's text and unsampled frames are empty, so a
    later run with ``--ocr precomputed`` reuses this OCR with the same frame indices and runs no model.
    """
    by_frame = {i: [] for i in range(analysis.num_frames)}
    kept = analysis.by_frame()
    for frame, rep in analysis.representative.items():
        for o in kept.get(rep, []):
            if o.kind == "ocr":
                x1, y1, x2, y2 = (v * s for v, s in zip(o.bbox, (analysis.width, analysis.height) * 2))
                by_frame[frame].append({"points": [round(v, 1) for v in (x1, y1, x2, y1, x2, y2, x1, y2)],
                                        "ocr": o.text})
    return {str(i + 1): boxes for i, boxes in by_frame.items()}
