"""The ``curate`` Prefect flow: one task per video, outputs merged deterministically.

Prefect is only the executor here (retries, concurrency, task runners, run
names that say what runs); the work is the plain functions of
``videor4.curation``. Caching is the content-addressed analysis artifact of
``videor4.curation.analyze`` rather than Prefect's result store, because it is
written atomically (crash-safe) and is found the same way by every task
runner, thread, Dask or Ray worker.
"""

from __future__ import annotations

import functools
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from prefect import flow, task
from prefect.task_runners import ThreadPoolTaskRunner
from tqdm import tqdm

from videor4 import __version__
from videor4.curation.analyze import VideoAnalysis, analyze_video
from videor4.curation.atomic import write_json_atomic, write_table_atomic
from videor4.curation.config import CurationConfig
from videor4.curation.dataset import (QARecord, Reject, SplitData, VideoSource, load_split, locate_media,
                                      missing_media_rejects, precomputed_ocr_path)
from videor4.curation.detect import create_detector
from videor4.curation.evidence import QuestionSummary, match_video, propagate
from videor4.curation.media import MediaError
from videor4.curation.ocr import create_ocr
from videor4.curation.outputs import evidence_table, questions_table, rejects_table


@dataclass
class VideoResult:
    video_id: str
    analysis: VideoAnalysis | None
    rows: list[dict] = field(default_factory=list)
    summaries: list[QuestionSummary] = field(default_factory=list)
    rejects: list[Reject] = field(default_factory=list)


@dataclass
class RunSummary:
    split: str
    out: str
    videos: int = 0
    videos_ok: int = 0
    videos_cached: int = 0
    frames_decoded: int = 0
    frames_ocr: int = 0
    ocr_calls: int = 0
    detector_calls: int = 0
    questions: int = 0
    questions_with_answer_evidence: int = 0
    questions_with_any_evidence: int = 0
    evidence_rows: int = 0
    rejects: int = 0
    rejects_by_reason: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    config_hash: str = ""
    toolkit_version: str = __version__

    def lines(self) -> list[str]:
        return [
            f"split {self.split}: {self.videos_ok}/{self.videos} videos analysed ({self.videos_cached} from cache)",
            f"frames decoded {self.frames_decoded}, OCR'd {self.frames_ocr} (OCR calls this run: {self.ocr_calls})",
            f"questions {self.questions}: {self.questions_with_answer_evidence} with answer evidence, "
            f"{self.questions_with_any_evidence} with any evidence; {self.evidence_rows} evidence rows",
            f"rejects {self.rejects}" + (f" {self.rejects_by_reason}" if self.rejects_by_reason else ""),
            f"time {self.seconds:.1f} s",
        ]


@functools.lru_cache(maxsize=4)
def _backends(cfg_json: str):
    """One OCR model and detector per process and config (model load is the slow part; ORT runs are thread-safe)."""
    cfg = CurationConfig.model_validate_json(cfg_json)
    ocr = None if cfg.ocr.backend == "precomputed" else create_ocr(cfg.ocr)
    det = None if cfg.detector.backend == "none" else create_detector(cfg.detector)
    return ocr, det


def process_video(source: VideoSource, records: list[QARecord], cfg: CurationConfig, data_root: Path,
                  cache_dir: Path, annotation_file: str) -> VideoResult:
    """Analyse (or load the cached analysis of) one video and match its questions."""
    pre = precomputed_ocr_path(data_root, source.video_id) if cfg.ocr.backend == "precomputed" else None
    if cfg.ocr.backend == "precomputed" and pre is None:
        return VideoResult(source.video_id, None, rejects=[
            Reject(stage="ocr", reason="missing_precomputed_ocr", file=annotation_file, video_id=source.video_id,
                   question_id=r.question_id, record_index=r.record_index, field="video_id",
                   message=f"video {source.video_id}: --ocr precomputed but video_ocr/{source.video_id}.json missing")
            for r in records])
    ocr, det = _backends(cfg.model_dump_json())
    try:
        analysis = analyze_video(source, cfg, ocr=ocr, detector=det, precomputed_ocr=pre, cache_dir=cache_dir)
    except MediaError as exc:
        return VideoResult(source.video_id, None, rejects=[
            Reject(stage="media", reason="corrupt_media", file=str(source.path), video_id=source.video_id,
                   question_id=r.question_id, record_index=r.record_index, field="video_id", message=str(exc))
            for r in records])
    timestamps = {i: analysis.timestamp(i) for i in range(analysis.num_frames)}
    observations = propagate(analysis.by_frame(), analysis.representative, timestamps)
    rows, summaries = match_video(records, observations, cfg.matching)
    return VideoResult(source.video_id, analysis, rows, summaries)


@task(name="curate-video", task_run_name="curate-video-{source.video_id}", retries=1, retry_delay_seconds=1)
def process_video_task(source: VideoSource, records: list[QARecord], cfg: CurationConfig, data_root: Path,
                       cache_dir: Path, annotation_file: str) -> VideoResult:
    return process_video(source, records, cfg, data_root, cache_dir, annotation_file)


def select_videos(data: SplitData, limit: int | None) -> list[str]:
    ids = data.video_ids
    return ids[:limit] if limit else ids


@flow(name="videor4-curate", flow_run_name="curate-{split}", log_prints=False)
def curate_flow(data_root: Path, split: str, out: Path, cfg: CurationConfig, limit: int | None = None,
                progress: bool = True) -> RunSummary:
    """Curate one split into ``<out>/evidence.parquet`` (+ questions, rejects, stats)."""
    t0 = time.perf_counter()
    data_root, out = Path(data_root), Path(out)
    data = load_split(data_root, split)
    video_ids = select_videos(data, limit)
    by_video: dict[str, list[QARecord]] = {}
    for r in data.records:
        by_video.setdefault(r.video_id, []).append(r)
    rejects: list[Reject] = list(data.rejects)
    sources: list[VideoSource] = []
    for vid in video_ids:
        src = locate_media(data_root, vid, cfg.media_preference)
        if src is None:
            rej = missing_media_rejects(data, vid, cfg.media_preference)
            print(rej[0].message)
            rejects += rej
        else:
            sources.append(src)

    cache_dir = out / "cache"
    futures = [process_video_task.submit(s, by_video[s.video_id], cfg, data_root, cache_dir,
                                         str(data.annotation_file)) for s in sources]
    results: list[VideoResult] = []
    for fut in tqdm(futures, desc=f"curate {split}", unit="video", disable=not progress):
        res = fut.result()
        for rej in res.rejects:
            print(rej.message)
        results.append(res)
    return _write_outputs(data, video_ids, results, rejects, cfg, out, t0)


def _write_outputs(data: SplitData, video_ids: list[str], results: list[VideoResult], rejects: list[Reject],
                   cfg: CurationConfig, out: Path, t0: float) -> RunSummary:
    results.sort(key=lambda r: r.video_id)
    rows = [row for r in results for row in r.rows]
    summaries = [s for r in results for s in r.summaries]
    rejects = rejects + [rej for r in results for rej in r.rejects]
    write_table_atomic(evidence_table(rows), out / "evidence.parquet")
    write_table_atomic(questions_table(summaries), out / "questions.parquet")
    write_table_atomic(rejects_table(rejects), out / "rejects.parquet")
    ok = [r.analysis for r in results if r.analysis is not None]
    summary = RunSummary(
        split=data.split, out=str(out), videos=len(video_ids), videos_ok=len(ok),
        videos_cached=sum(a.from_cache for a in ok),
        frames_decoded=sum(len(a.sampled) for a in ok), frames_ocr=sum(len(a.kept) for a in ok),
        ocr_calls=sum(a.ocr_calls for a in ok if not a.from_cache),
        detector_calls=sum(a.detector_calls for a in ok if not a.from_cache),
        questions=len(summaries),
        questions_with_answer_evidence=sum(s.status == "answer" for s in summaries),
        questions_with_any_evidence=sum(s.status != "none" for s in summaries),
        evidence_rows=len(rows), rejects=len(rejects), config_hash=cfg.config_hash,
        seconds=round(time.perf_counter() - t0, 2))
    for rej in rejects:
        summary.rejects_by_reason[rej.reason] = summary.rejects_by_reason.get(rej.reason, 0) + 1
    write_json_atomic(out / "stats.json", asdict(summary), indent=2)
    write_json_atomic(out / "config.json", cfg.model_dump(mode="json"), indent=2)
    return summary


def run_curate(data_root: Path, split: str, out: Path, cfg: CurationConfig, *, limit: int | None = None,
               workers: int = 2, progress: bool = True) -> RunSummary:
    """Run the flow with ``workers`` videos in flight on a local thread pool."""
    runner = ThreadPoolTaskRunner(max_workers=max(1, workers))
    return curate_flow.with_options(task_runner=runner)(data_root, split, out, cfg, limit=limit,
                                                         progress=progress)
