"""Everything curation does for one video: analyse → match → synthesize → shard rows.

Work is partitioned by video so that any executor (a thread, a Dask or Ray
worker) can run this function with no shared state; the outputs are merged
and sorted afterwards. Both expensive stages leave an atomic,
content-addressed artifact (analysis: OCR + detection; synthesis: verified
trajectories and rows), so a resumed or repeated run skips them.
"""

from __future__ import annotations

import hashlib
import json
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

from videor4 import __version__
from videor4.contracts.atomic import write_json_atomic
from videor4.contracts.dataset import QARecord, VideoSource, precomputed_ocr_path
from videor4.contracts.evidence_schema import EvidenceRow
from videor4.contracts.media import MediaError, encode_jpeg, open_video
from videor4.contracts.rejects import Reject
from videor4.contracts.shard_codec import to_image_ref
from videor4.contracts.shard_schema import QC, CoTRow, Provenance, RLRow, VideoRef, make_sample_id
from videor4.curation.analyze import VideoAnalysis, analyze_video
from videor4.curation.config import CurationConfig
from videor4.curation.detect import Detector, create_detector
from videor4.curation.evidence import QuestionSummary, match_video, needs_objects, propagate
from videor4.curation.ocr import OCRBackend
from videor4.curation.trajectories import FrameCache, Trajectory, TrajectorySynthesizer, split_bucket

SYNTHESIS_VERSION = 1


@dataclass
class VideoResult:
    """What one video contributes to the run (all plain data, cheap to send between processes)."""

    video_id: str
    analysis: VideoAnalysis | None
    rows: list[EvidenceRow] = field(default_factory=list)
    summaries: list[QuestionSummary] = field(default_factory=list)
    rejects: list[Reject] = field(default_factory=list)
    cot_rows: list[CoTRow] = field(default_factory=list)
    rl_rows: list[RLRow] = field(default_factory=list)
    candidates: list[dict] = field(default_factory=list)
    synthesis_cached: bool = False
    synthesis_seconds: float = 0.0  # time spent synthesizing and verifying (0 when cached)
    views_recognized: int = 0  # claimed views verified by recognising their evidence lines alone (no detection)
    views_read_whole: int = 0  # claimed views re-read whole (detection + recognition)


def curate_video(source: VideoSource, records: list[QARecord], cfg: CurationConfig, data_root: Path,
                 cache_dir: Path, ocr: OCRBackend | None, detector: Detector | None,
                 verify_ocr: OCRBackend) -> VideoResult:
    """Run every stage for one video; whatever fails becomes rejects for its questions, never the run's end.

    A run over thousands of videos must not die on one (an unreadable file, a frame the OCR model chokes on):
    the video's questions are rejected with the stage and reason, and the other videos go on.
    """
    result = analyze_and_match(source, records, cfg, data_root, cache_dir, ocr, detector)
    if result.analysis is None:
        return result
    t0 = time.perf_counter()
    try:
        _synthesize(result, source, records, cfg, data_root, cache_dir, verify_ocr)
        if cfg.shards.embed_media and result.cot_rows:
            result.cot_rows = embed_media(result.cot_rows, source, cfg)
    except Exception as exc:  # noqa: BLE001 - one video's failure is its questions' reject (see docstring)
        # Evidence and question summaries stand; no trajectory or RL row of this video is kept.
        return VideoResult(source.video_id, result.analysis, result.rows, result.summaries,
                           rejects=failure_rejects(records, source, "synthesis", exc))
    if not result.synthesis_cached:
        result.synthesis_seconds = round(time.perf_counter() - t0, 3)
    return result


def analyze_and_match(source: VideoSource, records: list[QARecord], cfg: CurationConfig, data_root: Path,
                      cache_dir: Path | None, ocr: OCRBackend | None, detector: Detector | None) -> VideoResult:
    """The analysis and evidence-matching stages alone (no synthesis): what ``make bench`` times as the stage.

    ``cache_dir=None`` analyses without reading or writing the cache.
    """
    pre = precomputed_ocr_path(data_root, source.video_id) if cfg.ocr.backend == "precomputed" else None
    if cfg.ocr.backend == "precomputed" and pre is None:
        return VideoResult(source.video_id, None, rejects=_rejects(
            records, "ocr", "missing_precomputed_ocr", str(source.path),
            f"video {source.video_id}: --ocr precomputed but video_ocr/{source.video_id}.json is missing"))
    try:
        # The detector runs only for videos with a question a detected object can answer (cheap before expensive).
        if detector is None and cfg.detector.backend != "none":
            detector = create_detector(cfg.detector)
        objects = detector is not None and needs_objects(records, detector.labels)
        analysis = analyze_video(source, cfg, ocr=ocr, detector=detector, precomputed_ocr=pre, cache_dir=cache_dir,
                                 objects=objects)
    except Exception as exc:  # noqa: BLE001 - one video's failure is its questions' reject (see curate_video)
        return VideoResult(source.video_id, None, rejects=failure_rejects(records, source, "analysis", exc))
    timestamps = {i: analysis.timestamp(i) for i in range(analysis.num_frames)}
    observations = propagate(analysis.by_frame(), analysis.representative, timestamps)
    rows, summaries = match_video(records, observations, cfg.matching)
    return VideoResult(source.video_id, analysis, rows, summaries)


def embed_media(rows: list[CoTRow], source: VideoSource, cfg: CurationConfig) -> list[CoTRow]:
    """Store each image's JPEG bytes next to its reference, so a shard trains without the videos."""
    out: list[CoTRow] = []
    with open_video(source.path, config=cfg.media, video_id=source.video_id) as video:
        reader = FrameCache(video)  # the rows of one video share most frames: decode each once
        for row in rows:
            ex = cfg.trajectories.view.executor(reader, row.initial_frames)
            messages = []
            for m in row.messages:
                images = [ref.model_copy(update={"jpeg": encode_jpeg(ex.render(to_image_ref(ref)),
                                                                     cfg.shards.jpeg_quality)})
                          for ref in m.images]
                messages.append(m.model_copy(update={"images": images}))
            out.append(row.model_copy(update={"messages": messages}))
    return out


def failure_rejects(records: list[QARecord], source: VideoSource, stage: str, exc: Exception) -> list[Reject]:
    """The rejects for a video whose ``stage`` raised ``exc``: stage ``media`` for media it cannot read or decode
    (reason ``corrupt_media``, ``unreadable_media``, ``frame_gap``: :class:`MediaError`'s ``reason``).

    Other errors keep the stage that raised them (``analysis_error``, ``synthesis_error``) and name the exception
    and the line it came from, so a bug that rejects videos is visible in ``rejects.parquet`` and the summary.
    """
    if isinstance(exc, MediaError):
        return _rejects(records, "media", exc.reason, str(source.path), str(exc))
    where = traceback.extract_tb(exc.__traceback__)[-1] if exc.__traceback__ else None
    at = f" (at {Path(where.filename).name}:{where.lineno})" if where else ""
    detail = " ".join(str(exc).split())[:300]
    return _rejects(records, stage, f"{stage}_error", str(source.path),
                    f"video {source.video_id}: {stage} failed: {type(exc).__name__}: {detail}{at}")


def _rejects(records: list[QARecord], stage: str, reason: str, file: str, message: str) -> list[Reject]:
    return [Reject(stage=stage, reason=reason, message=message, file=file, record_index=r.record_index,
                   field="video_id", video_id=r.video_id, question_id=r.question_id) for r in records]


def _synthesis_path(cache_dir: Path, source: VideoSource, analysis: VideoAnalysis, cfg: CurationConfig,
                    records: list[QARecord]) -> Path:
    key = hashlib.sha1(json.dumps([
        SYNTHESIS_VERSION, __version__, source.kind, analysis.ocr_backend, analysis.detector_backend,
        cfg.stage_hash("synthesis"), sorted((r.question_id, r.question, r.answers, r.split) for r in records),
        [analysis.num_frames, analysis.fps, analysis.sampled, analysis.kept],
    ], default=list).encode()).hexdigest()[:16]
    return Path(cache_dir) / "synthesis" / f"{source.video_id}-{cfg.stage_hash('synthesis')}-{key}.json"


def _synthesize(result: VideoResult, source: VideoSource, records: list[QARecord], cfg: CurationConfig,
                data_root: Path, cache_dir: Path, verify_ocr: OCRBackend) -> None:
    analysis = result.analysis
    assert analysis is not None
    path = _synthesis_path(cache_dir, source, analysis, cfg, records)
    if path.is_file():
        try:
            d = json.loads(path.read_text(encoding="utf-8"))
            result.cot_rows = [CoTRow.model_validate(r) for r in d["cot"]]
            result.rl_rows = [RLRow.model_validate(r) for r in d["rl"]]
            result.candidates = d["candidates"]
            result.synthesis_cached = True
            return
        except (ValueError, KeyError):
            path.unlink(missing_ok=True)
    by_question: dict[int, list[EvidenceRow]] = {}
    for row in result.rows:
        if row.match == "answer":
            by_question.setdefault(row.question_id, []).append(row)
    video_ref = VideoRef(path=source.relative_to(Path(data_root)), kind=source.kind, fps=analysis.fps,
                         num_frames=analysis.num_frames)
    tcfg = cfg.trajectories
    with open_video(source.path, config=cfg.media, video_id=source.video_id) as reader:
        synth = TrajectorySynthesizer(reader, verify_ocr, tcfg, cfg.matching)
        # Questions are synthesized in the order of their evidence in the video, so that the frames they read
        # mostly lie ahead of the decoder's position (a frame behind it costs a decode from frame 0); each
        # trajectory is independent of the others (its own executor and seeded wording), so rows are the same
        # and are written in question order below.
        def first_evidence(rec: QARecord) -> tuple[int, int]:
            return min((r.frame_index for r in by_question.get(rec.question_id, [])), default=-1), rec.question_id

        made = {rec.question_id: synth.synthesize(rec, by_question.get(rec.question_id, []))
                for rec in sorted(records, key=first_evidence)}
        for rec in sorted(records, key=lambda r: r.question_id):
            answer_rows = by_question.get(rec.question_id, [])
            evidence = [r.item() for r in result.rows if r.question_id == rec.question_id][:32]
            common = dict(question_id=rec.question_id, video_id=rec.video_id, question=rec.question,
                          answers=list(rec.answers), source1=rec.source1, source2=rec.source2, video=video_ref,
                          initial_frames=list(synth.initial_frames), evidence=evidence,
                          provenance=Provenance(toolkit_version=__version__, split=rec.split,
                                                source_file=Path(rec.source_file).name, decoder=analysis.decoder,
                                                ocr_backend=analysis.ocr_backend,
                                                detector_backend=analysis.detector_backend,
                                                config_hash=cfg.config_hash))
            uncertainty = round(1.0 - max((r.score for r in answer_rows), default=0.0), 6)
            trajectories = made[rec.question_id]
            used = _select(rec, trajectories, tcfg.sft_fraction_drp, tcfg.sft_fraction_crp, tcfg.seed)
            for t in trajectories:
                result.candidates.append({"sample_id": t.sample_id, "stage": t.stage, "variant": t.variant,
                                          "question_id": t.question_id, "video_id": rec.video_id,
                                          "ops": list(t.ops), "verified": t.verified, "reason": t.reason,
                                          "reocr_text": t.reocr_text, "selected": t.sample_id in used})
                if t.sample_id in used:
                    result.cot_rows.append(CoTRow(sample_id=t.sample_id, stage=t.stage, messages=t.messages,
                                                  ops=t.ops, verified=True,
                                                  qc=QC(status="auto_pass", uncertainty=uncertainty), **common))
            diff = synth.difficulty(answer_rows)
            in_sft = {t.stage for t in trajectories if t.sample_id in used}
            paired = {"rld": "drp", "rlc": "crp"}[diff.rl_stage]
            if paired not in in_sft:  # a question trained by SFT is not reused by the RL stage it pairs with
                result.rl_rows.append(RLRow(
                    sample_id=make_sample_id(rec.video_id, rec.question_id, diff.rl_stage), stage=diff.rl_stage,
                    difficulty=diff.difficulty, answer_in_initial=diff.answer_in_initial,
                    required_ops=list(diff.required_ops), qc=QC(status="auto_pass", uncertainty=uncertainty),
                    **common))
    result.views_recognized, result.views_read_whole = synth.reads.recognized, synth.reads.detected
    write_json_atomic(path, {"cot": [r.model_dump(mode="json") for r in result.cot_rows],
                             "rl": [r.model_dump(mode="json") for r in result.rl_rows],
                             "candidates": result.candidates})


def _select(rec: QARecord, trajectories: list[Trajectory], frac_drp: float, frac_crp: float, seed: int) -> set[str]:
    """Which verified trajectories go to SFT shards (the hash split of DESIGN/docs: see docs/curation.md)."""
    used: set[str] = set()
    for stage, frac in (("drp", frac_drp), ("crp", frac_crp)):
        ok = [t for t in trajectories if t.stage == stage and t.verified]
        if ok and split_bucket(rec.question_id, stage, seed) < frac:
            used.update(t.sample_id for t in ok)
    return used
