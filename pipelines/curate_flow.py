"""The ``curate`` Prefect flow: one task per video, outputs merged deterministically.

Prefect is only the executor here (retries, concurrency, task runners, run
names that say what runs); the work is :func:`videor4.curation.curate_video.curate_video`.
Caching is that function's content-addressed artifacts rather than Prefect's
result store, because they are written atomically (crash-safe) and are found
the same way by every task runner — threads, Dask or Ray workers.
"""

from __future__ import annotations

import functools
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from prefect import flow, task
from prefect.task_runners import ThreadPoolTaskRunner
from tqdm import tqdm

from videor4 import __version__
from videor4.contracts.atomic import write_json_atomic, write_table_atomic
from videor4.contracts.dataset import (
    QARecord,
    SplitData,
    VideoSource,
    load_split,
    locate_media,
    missing_media_rejects,
)
from videor4.contracts.errors import UserError, user_input
from videor4.contracts.evidence_schema import evidence_table
from videor4.contracts.rejects import REJECTS_FILE, Reject, write_rejects
from videor4.contracts.run_lock import RunLock
from videor4.contracts.shard_io import content_hash, counts, shard_files, write_manifest, write_stage
from videor4.curation.analyze import video_ocr_json
from videor4.curation.config import CurationConfig
from videor4.curation.curate_video import VideoResult, curate_video
from videor4.curation.detect import create_detector
from videor4.curation.ocr import OCRConfig, create_ocr
from videor4.curation.outputs import candidates_table, questions_table
from videor4.curation.run_manifest import fail_run, finish_run, start_run
from videor4.pipelines import prefect_env


@dataclass
class RunSummary:
    split: str
    out: str
    videos: int = 0
    videos_ok: int = 0
    videos_cached: int = 0  # videos whose analysis (decode, OCR, detection) came from the cache
    videos_synthesis_cached: int = 0  # videos whose verified trajectories came from the cache (no synthesis run)
    frames_decoded: int = 0
    frames_ocr: int = 0
    ocr_calls: int = 0  # whole-frame OCR reads this run
    region_ocr_calls: int = 0  # reads of changed regions only (text tracking)
    tracked_frames: int = 0  # frames whose text was carried along the motion from an earlier read
    detector_calls: int = 0
    questions: int = 0
    questions_with_answer_evidence: int = 0
    questions_with_any_evidence: int = 0
    evidence_rows: int = 0
    trajectories: int = 0
    trajectories_verified: int = 0
    synthesis_seconds: float = 0.0
    trajectories_per_s: float = 0.0
    verification_rate: float = 0.0
    trajectory_rejects_by_reason: dict[str, int] = field(default_factory=dict)
    shard_counts: dict[str, int] = field(default_factory=dict)
    shards_hash: str = ""
    rejects: int = 0
    rejects_by_reason: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    config_hash: str = ""
    toolkit_version: str = __version__

    def lines(self) -> list[str]:
        reasons = ", ".join(f"{k}: {v}" for k, v in self.trajectory_rejects_by_reason.items())
        return [
            f"split {self.split}: {self.videos_ok}/{self.videos} videos analysed ({self.videos_cached} from cache, "
            f"{self.videos_synthesis_cached} with cached trajectories)",
            (f"frames decoded {self.frames_decoded}, kept {self.frames_ocr}; OCR this run: {self.ocr_calls} whole "
             f"frames, {self.region_ocr_calls} changed regions, {self.tracked_frames} frames carried by tracking"),
            f"questions {self.questions}: {self.questions_with_answer_evidence} with answer evidence, "
            f"{self.questions_with_any_evidence} with any evidence; {self.evidence_rows} evidence rows",
            f"trajectories {self.trajectories_verified}/{self.trajectories} verified by execution "
            f"({100 * self.verification_rate:.1f}%)" + (f"; rejected: {reasons}" if reasons else "")
            + (f"; {self.trajectories_per_s:.2f} trajectories/s per worker" if self.trajectories_per_s else ""),
            "shards " + ", ".join(f"{k} {v}" for k, v in self.shard_counts.items()),
            f"rejects {self.rejects}" + (f" {self.rejects_by_reason}" if self.rejects_by_reason else ""),
            f"time {self.seconds:.1f} s",
        ]


@functools.lru_cache(maxsize=4)
def _backends(cfg_json: str):
    """One OCR model and detector per process and config: loading is the slow part, and ORT runs are thread-safe.

    Trajectory verification re-reads crops with a real OCR model even when the
    analysis used the dataset's precomputed OCR.
    """
    cfg = CurationConfig.model_validate_json(cfg_json)
    ocr = None if cfg.ocr.backend == "precomputed" else create_ocr(cfg.ocr)
    verify = ocr or create_ocr(OCRConfig(**{**cfg.ocr.model_dump(), "backend": "rapidocr"}))
    det = None if cfg.detector.backend == "none" else create_detector(cfg.detector)
    return ocr, det, verify


def process_video(source: VideoSource, records: list[QARecord], cfg: CurationConfig, data_root: Path,
                  cache_dir: Path) -> VideoResult:
    ocr, det, verify = _backends(cfg.model_dump_json())
    return curate_video(source, records, cfg, data_root, cache_dir, ocr, det, verify)


@task(name="curate-video", task_run_name="curate-video-{source.video_id}", retries=1, retry_delay_seconds=1)
def process_video_task(source: VideoSource, records: list[QARecord], cfg: CurationConfig, data_root: Path,
                       cache_dir: Path) -> VideoResult:
    return process_video(source, records, cfg, data_root, cache_dir)


@flow(name="videor4-curate", flow_run_name="curate-{split}", log_prints=False)
def curate_flow(data_root: Path, split: str, out: Path, cfg: CurationConfig, limit: int | None = None,
                progress: bool = True, runner: str = "local", export_ocr: bool = False) -> RunSummary:
    """Curate one split into ``<out>``: evidence, per-question status, trajectories, shards, rejects, stats."""
    t0 = time.perf_counter()
    data_root, out = Path(data_root), Path(out)
    data = load_split(data_root, split)
    video_ids = data.video_ids[:limit] if limit else data.video_ids
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
    run = start_run(out, split=split, data_root=data_root, video_ids=video_ids, cfg=cfg, runner=runner)
    try:
        cache_dir = out / "cache"
        futures = [process_video_task.submit(s, by_video[s.video_id], cfg, data_root, cache_dir) for s in sources]
        results: list[VideoResult] = []
        for fut in tqdm(futures, desc=f"curate {split}", unit="video", disable=not progress):
            res = fut.result()
            for rej in res.rejects[:1]:
                print(rej.message)
            results.append(res)
        summary = write_outputs(data, video_ids, results, rejects, cfg, out, t0, export_ocr)
    except BaseException as exc:  # interrupted too: run.json must not say "running" for a run that ended
        fail_run(out, run, exc)
        raise
    finish_run(out, run, asdict(summary))
    return summary


def write_outputs(data: SplitData, video_ids: list[str], results: list[VideoResult], rejects: list[Reject],
                  cfg: CurationConfig, out: Path, t0: float, export_ocr: bool = False) -> RunSummary:
    """Merge per-video results in video-id order (deterministic whatever order workers finished in).

    A run's outputs are one set: they are written into ``<out>/.staging-<pid>/`` and only moved into place once
    all of them exist (:func:`publish_outputs`), so a failure while writing (a value Arrow refuses, a full disk)
    leaves the previous run's outputs as they were.
    """
    for old in out.glob(".staging-*"):  # left by a killed run (we hold the output folder's lock)
        shutil.rmtree(old, ignore_errors=True)
    staging = out / f".staging-{os.getpid()}"
    try:
        s = _write_outputs(data, video_ids, results, rejects, cfg, staging, out, t0, export_ocr)
        publish_outputs(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return s


def publish_outputs(staging: Path, out: Path) -> None:
    """Move every file of ``staging`` to the same place under ``out``, then drop the shard files it replaced.

    Target folders are made and checked first, so on a sound file system nothing after that can fail: the
    moves are renames within one file system.
    """
    files = sorted(p.relative_to(staging) for p in staging.rglob("*") if p.is_file())
    for rel in files:
        target = out / rel
        for folder in reversed(rel.parents[:-1]):
            if (out / folder).exists() and not (out / folder).is_dir():
                raise UserError(f"{out}: cannot write this run's outputs: {out / folder} is not a folder (move it "
                                "away); the previous outputs are unchanged")
        with user_input(f"{out}: cannot write this run's outputs"):
            target.parent.mkdir(parents=True, exist_ok=True)
        if target.is_dir():
            raise UserError(f"{out}: cannot write this run's outputs: {target} is a folder (move it away); the "
                            "previous outputs are unchanged")
    for rel in files:
        os.replace(staging / rel, out / rel)
    for stale in set(shard_files(out / "shards")) - {out / rel for rel in files}:
        stale.unlink()


def _write_outputs(data: SplitData, video_ids: list[str], results: list[VideoResult], rejects: list[Reject],
                   cfg: CurationConfig, out: Path, final: Path, t0: float, export_ocr: bool) -> RunSummary:
    """Every output of the run into ``out`` (the staging folder); ``final`` is where they will be published."""
    results = sorted(results, key=lambda r: r.video_id)
    rows = [row for r in results for row in r.rows]
    summaries = [s for r in results for s in r.summaries]
    candidates = [c for r in results for c in r.candidates]
    rejects = rejects + [rej for r in results for rej in r.rejects]
    write_table_atomic(evidence_table(rows), out / "evidence.parquet")
    write_table_atomic(questions_table(summaries), out / "questions.parquet")
    write_table_atomic(candidates_table(candidates), out / "trajectories.parquet")
    unverified = [Reject(stage="synthesis", reason="unverified_trajectory", message=c["reason"],
                         video_id=c["video_id"], question_id=c["question_id"], sample_id=c["sample_id"])
                  for c in candidates if not c["verified"]]
    write_rejects(out / REJECTS_FILE, [*rejects, *unverified])
    shards = out / "shards"
    for stage in ("drp", "crp"):
        write_stage(shards, stage, [row for r in results for row in r.cot_rows if row.stage == stage], cfg.shards)
    for stage in ("rld", "rlc"):
        write_stage(shards, stage, [row for r in results for row in r.rl_rows if row.stage == stage], cfg.shards)

    ok = [r.analysis for r in results if r.analysis is not None]
    verified = sum(c["verified"] for c in candidates)
    s = RunSummary(
        split=data.split, out=str(final), videos=len(video_ids), videos_ok=len(ok),
        videos_cached=sum(a.from_cache for a in ok),
        videos_synthesis_cached=sum(r.synthesis_cached for r in results if r.analysis is not None),
        frames_decoded=sum(len(a.sampled) for a in ok), frames_ocr=sum(len(a.kept) for a in ok),
        ocr_calls=sum(a.ocr_calls for a in ok if not a.from_cache),
        region_ocr_calls=sum(a.region_ocr_calls for a in ok if not a.from_cache),
        tracked_frames=sum(a.tracked_frames for a in ok if not a.from_cache),
        detector_calls=sum(a.detector_calls for a in ok if not a.from_cache),
        questions=len(summaries),
        questions_with_answer_evidence=sum(q.status == "answer" for q in summaries),
        questions_with_any_evidence=sum(q.status != "none" for q in summaries),
        evidence_rows=len(rows), trajectories=len(candidates), trajectories_verified=verified,
        verification_rate=round(verified / len(candidates), 4) if candidates else 0.0,
        rejects=len(rejects), config_hash=cfg.config_hash, seconds=0.0,
        synthesis_seconds=round(sum(r.synthesis_seconds for r in results), 2))
    fresh = sum(1 for r in results for _ in r.candidates if not r.synthesis_cached)
    s.trajectories_per_s = round(fresh / s.synthesis_seconds, 3) if s.synthesis_seconds else 0.0
    for c in candidates:
        if not c["verified"]:
            key = c["reason"].split(" (")[0]
            s.trajectory_rejects_by_reason[key] = s.trajectory_rejects_by_reason.get(key, 0) + 1
    for rej in rejects:
        s.rejects_by_reason[rej.reason] = s.rejects_by_reason.get(rej.reason, 0) + 1
    write_manifest(shards, {
        "config_hash": cfg.config_hash, "toolkit_version": __version__, "source_splits": [data.split],
        "view": cfg.trajectories.view.model_dump(mode="json"),
        "data_root": str(Path(data.annotation_file).parent.parent.resolve()),
        "yields": {"questions": len(summaries), "questions_with_answer_evidence": s.questions_with_answer_evidence,
                   "trajectories": len(candidates), "verified": verified,
                   "selected_for_sft": sum(c["selected"] for c in candidates),
                   "trajectory_rejects_by_reason": s.trajectory_rejects_by_reason},
    })
    s.shard_counts = counts(shards)
    s.shards_hash = content_hash(shards)
    s.seconds = round(time.perf_counter() - t0, 2)
    if export_ocr:
        for r in results:
            if r.analysis is not None:
                write_json_atomic(out / "video_ocr" / f"{r.video_id}.json", video_ocr_json(r.analysis))
    write_json_atomic(out / "stats.json", asdict(s), indent=2)
    write_json_atomic(out / "config.json", cfg.model_dump(mode="json"), indent=2)
    return s


def make_task_runner(runner: str, workers: int, address: str | None = None):
    """Local threads by default; Dask or Ray (Prefect's own task runners) when one machine is not enough.

    With ``address`` the flow joins an existing cluster; without, Dask starts a local cluster of
    ``workers`` single-threaded worker processes (OCR models load once per worker process).
    """
    if runner == "local":
        if address:
            raise UserError("--address needs --runner dask or --runner ray")
        return ThreadPoolTaskRunner(max_workers=max(1, workers))
    if runner == "dask":
        from prefect_dask import DaskTaskRunner

        if address:
            return DaskTaskRunner(address=address)
        return DaskTaskRunner(cluster_kwargs={"n_workers": max(1, workers), "threads_per_worker": 1,
                                              "processes": True, "dashboard_address": None})
    if runner == "ray":
        try:
            from prefect_ray import RayTaskRunner
        except ImportError as exc:
            raise UserError("--runner ray needs the ray extra: pip install 'video-r4[ray]'") from exc
        return RayTaskRunner(address=address) if address else RayTaskRunner(
            init_kwargs={"num_cpus": max(1, workers), "include_dashboard": False})
    raise UserError(f"unknown runner {runner!r} (local, dask, ray)")


def run_curate(data_root: Path, split: str, out: Path, cfg: CurationConfig, *, limit: int | None = None,
               workers: int = 2, progress: bool = True, runner: str = "local",
               address: str | None = None, export_ocr: bool = False) -> RunSummary:
    """Run the flow with ``workers`` videos in flight on the chosen task runner.

    ``out`` is locked for the whole run before anything is written into it (one run per output folder: a
    second one is refused with a line naming the holder), and outside the flow, so that refusal, like an
    output folder that cannot be written, is one line rather than a failed flow run.
    """
    task_runner = make_task_runner(runner, workers, address)
    if runner == "dask" and not address and cfg.ocr.num_threads == 0:
        # Each local worker process runs its own OCR model; onnxruntime's default (one thread per core in
        # every process) would oversubscribe the machine, measured 0.86x for 2 workers on 2 cores.
        threads = max(1, (os.cpu_count() or 1) // max(1, workers))
        cfg = cfg.model_copy(update={"ocr": cfg.ocr.model_copy(update={"num_threads": threads})})
    with RunLock(out, f"videor4 curate --split {split}"):
        prefect_env.start_local_server()
        return curate_flow.with_options(task_runner=task_runner)(data_root, split, out, cfg, limit=limit,
                                                                  progress=progress, runner=runner,
                                                                  export_ocr=export_ocr)
