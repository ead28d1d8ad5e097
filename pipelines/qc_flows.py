"""Prefect flows for human QC: ``qc_push`` (route + send to Label Studio) and ``qc_pull`` (verdicts → shards).

Prefect is the executor (run history, retries of the import batches); the
work lives in :mod:`videor4.annotation`. Both flows talk to the server before
touching any file and rewrite shards only at the very end, so a server that
is down or fails mid-way leaves the shards exactly as they were; every shard,
rejects and manifest write is atomic.

The Label Studio API key never reaches Prefect in clear: Prefect stores every flow parameter in its database
(and shows it in the UI) as given, before the flow validates it, so ``qc_push`` / ``qc_pull`` wrap the key in
a ``pydantic.SecretStr`` before the flow run is created; Prefect records ``**********`` and the flow unwraps
it only to connect (tested by reading Prefect's database files after a real push and pull).
"""

from __future__ import annotations

import functools
import inspect
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from prefect import Flow, flow, task
from prefect.cache_policies import NO_CACHE
from pydantic import SecretStr
from tqdm import tqdm

from videor4.annotation.client import LabelStudioUnavailable, QCClient
from videor4.annotation.labeling import MediaTarget, build_task, label_config
from videor4.annotation.routing import RoutingConfig, route
from videor4.annotation.verdicts import (
    Resynthesize,
    Verdict,
    agreement,
    apply_verdicts,
    read_rejected_rows,
    resolve,
    write_qc_rejects,
)
from videor4.contracts.errors import UserError
from videor4.contracts.evidence_schema import EvidenceItem
from videor4.contracts.shard_io import (
    COMPUTED_MANIFEST_KEYS,
    read_manifest,
    read_stage,
    write_manifest,
    write_stage,
)
from videor4.contracts.shard_schema import COT_STAGES, RL_STAGES, CoTRow, RLRow, ShardRow
from videor4.contracts.view import ShardView, view_from_manifest
from videor4.curation.config import CurationConfig

STAGES = (*COT_STAGES, *RL_STAGES)


@dataclass
class PushSummary:
    project: str
    project_id: int
    routed: dict[str, int] = field(default_factory=dict)
    tasks_created: int = 0
    tasks_existing: int = 0
    seconds: float = 0.0

    def lines(self) -> list[str]:
        r = self.routed
        return [f"routing: {r.get('low_confidence', 0)} low-confidence + {r.get('audit', 0)} audit "
                f"+ {r.get('queued', 0)} already pending → humans; {r.get('auto_pass', 0)} auto_pass; "
                f"{r.get('already_reviewed', 0)} already reviewed",
                f"project {self.project!r} (id {self.project_id}): {self.tasks_created} tasks created, "
                f"{self.tasks_existing} already there ({self.seconds:.1f} s)"]


@dataclass
class PullSummary:
    project: str
    tasks: int = 0
    verdicts: dict[str, int] = field(default_factory=dict)
    changes: dict[str, int] = field(default_factory=dict)
    rejects_total: int = 0
    agreement: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    def lines(self) -> list[str]:
        a = self.agreement
        agree = ("no task has several annotations" if not a.get("tasks_with_several_annotations") else
                 f"{a['tasks_with_several_annotations']} tasks with several annotations: majority agreement "
                 f"{a['majority_agreement']}, Fleiss κ {a['fleiss_kappa']}, Cohen κ {a['cohen_kappa']}")
        return [f"pulled {self.tasks} tasks, verdicts: {dict(sorted(self.verdicts.items())) or 'none yet'}",
                f"applied: {dict(sorted(self.changes.items())) or 'nothing new'}; "
                f"{self.rejects_total} rows in rejects.parquet ({self.seconds:.1f} s)",
                f"agreement: {agree}"]


# --- shard I/O (one reader/writer: videor4.contracts.shard_io) ------------------------------------------------
def rows_by_stage(shards: Path) -> dict[str, list[ShardRow]]:
    if not Path(shards).is_dir():
        raise UserError(f"{shards}: no such shards directory")
    rows = {stage: read_stage(shards, stage) for stage in STAGES}
    if not any(rows.values()):
        raise UserError(f"{shards}: no shard rows found (expected cot/*.parquet or rl/*.parquet)")
    return rows


def save_rows(shards: Path, before: dict[str, list[ShardRow]], after: Sequence[ShardRow],
              manifest_extra: dict[str, Any]) -> list[str]:
    """Rewrite only the stages whose rows changed, then the manifest (its QC summary is recomputed)."""
    by_stage: dict[str, list[ShardRow]] = {s: [] for s in STAGES}
    for row in after:
        by_stage[row.stage].append(row)
    key = lambda rows: sorted(rows, key=lambda r: r.sample_id)  # noqa: E731
    changed = [s for s in STAGES if key(by_stage[s]) != key(before.get(s, []))]
    for stage in changed:
        write_stage(shards, stage, by_stage[stage])
    manifest = read_manifest(shards)
    extra = {k: v for k, v in manifest.items() if k not in COMPUTED_MANIFEST_KEYS}
    write_manifest(shards, {**extra, **manifest_extra})
    return changed


def resolve_data_root(shards: Path, data_root: Path | None) -> Path:
    """``--data-root``, else the dataset root recorded in the manifest by curation."""
    root = Path(data_root or read_manifest(shards).get("data_root") or "")
    if not str(root) or not root.is_dir():
        raise UserError(f"data root {str(root) or '(none recorded)'} not found; pass --data-root (the dataset "
                        "root the shards were curated from)")
    return root


def _reveal(api_key: SecretStr | str | None) -> str | None:
    return api_key.get_secret_value() if isinstance(api_key, SecretStr) else api_key


def _secret_api_key(qc_flow: Flow) -> Callable[..., Any]:
    """Call ``qc_flow`` with its ``api_key`` argument wrapped in a SecretStr, so Prefect stores only asterisks."""
    signature = inspect.signature(qc_flow.fn)

    @functools.wraps(qc_flow.fn)
    def call(*args: Any, **kwargs: Any) -> Any:
        bound = signature.bind(*args, **kwargs)
        key = bound.arguments.get("api_key")
        if key is not None and not isinstance(key, SecretStr):
            bound.arguments["api_key"] = SecretStr(key)
        return qc_flow(*bound.args, **bound.kwargs)

    call.flow = qc_flow  # type: ignore[attr-defined]
    return call


def preflight(shards: Path, url: str, api_key: str | None) -> None:
    """The checks a user's mistake fails (bad shards dir, server down, wrong key), run before any flow starts so
    the CLI answers with one line instead of a failed flow run's log."""
    rows_by_stage(shards)
    read_manifest(shards)
    QCClient.connect(url, api_key)


# --- push ------------------------------------------------------------------------------------------------------
@task(name="build-review-tasks", cache_policy=NO_CACHE)
def build_review_tasks(rows: list[ShardRow], target: MediaTarget, progress: bool) -> list[dict[str, Any]]:
    return [build_task(r, target) for r in tqdm(rows, desc="render review media", unit="sample",
                                                disable=not progress)]


@task(name="import-review-tasks", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=2,
      retry_condition_fn=lambda task, run, state: isinstance(state.result(raise_on_failure=False),
                                                              LabelStudioUnavailable))
def import_batch(client: QCClient, project_id: int, batch: list[dict[str, Any]]) -> int:
    return len(client.import_tasks(project_id, batch))


@_secret_api_key
@flow(name="qc-push")
def qc_push(shards: Path, url: str, api_key: SecretStr | None, project: str = "videor4-qc",
            routing: RoutingConfig = RoutingConfig(), data_root: Path | None = None, embed_media: bool = False,
            batch_size: int = 100, progress: bool = True) -> PushSummary:
    """Route every sample, send the doubtful ones to Label Studio, mark the shards (pending / auto_pass).

    ``api_key`` may be a plain string: it is wrapped in a SecretStr before Prefect sees it.
    """
    t0 = time.perf_counter()
    shards = Path(shards)
    before = rows_by_stage(shards)
    data_root = resolve_data_root(shards, data_root)
    client = QCClient.connect(url, _reveal(api_key))  # server down → one clear line before anything is touched
    rows = [r for stage in STAGES for r in before[stage]]
    decision = route(rows, routing)
    pid = client.ensure_project(project, label_config(), "Video-R4 trajectory review (videor4 qc push)")
    target = MediaTarget(data_root.resolve(), embed=embed_media, view=shards_view(shards) or ShardView())
    if not embed_media:
        target.media_dir.mkdir(parents=True, exist_ok=True)
        client.ensure_local_storage(pid, str(target.media_dir))
    existing = client.task_ids_by_sample(pid)
    humans = set(decision.to_humans)
    new_rows = [r for r in rows if r.sample_id in humans and r.sample_id not in existing]
    tasks = build_review_tasks(new_rows, target, progress)
    created = sum(import_batch(client, pid, tasks[k:k + batch_size]) for k in range(0, len(tasks), batch_size))
    marked = []
    for r in rows:
        u = decision.scores[r.sample_id]
        if r.sample_id in humans:
            r = r.model_copy(update={"qc": r.qc.model_copy(update={"status": "pending", "uncertainty": u})})
        elif r.sample_id not in decision.already:
            r = r.model_copy(update={"qc": r.qc.model_copy(update={"status": "auto_pass", "uncertainty": u})})
        marked.append(r)
    summary = PushSummary(project, pid, decision.counts(), created, len(humans) - len(new_rows))
    save_rows(shards, before, marked, {"qc_routing": {
        "project": project, "url": url, **routing.model_dump(), **summary.routed,
        "time": datetime.now(timezone.utc).isoformat(timespec="seconds")}})
    summary.seconds = round(time.perf_counter() - t0, 2)
    return summary


# --- pull ------------------------------------------------------------------------------------------------------
@_secret_api_key
@flow(name="qc-pull")
def qc_pull(shards: Path, url: str, api_key: SecretStr | None, project: str = "videor4-qc",
            resynthesize: Resynthesize | None = None) -> PullSummary:
    """Fetch annotations, resolve verdicts, apply them to the shards; idempotent (``api_key``: as for qc_push)."""
    t0 = time.perf_counter()
    shards = Path(shards)
    before = rows_by_stage(shards)
    read_manifest(shards)  # fail before talking to the server if this is not a shards dir
    client = QCClient.connect(url, _reveal(api_key))
    pid = client.project_by_title(project)
    if pid is None:
        raise UserError(f"no project {project!r} on {url}; push first (`videor4 qc push`) or pass --project")
    reviews = client.fetch_reviews(pid)
    emails = client.user_emails()
    verdicts: dict[str, Verdict] = {r.sample_id: v for r in reviews if (v := resolve(r, emails)) is not None}
    rows = [r for stage in STAGES for r in before[stage]]
    live = {r.sample_id for r in rows}
    rejected = [r for r in read_rejected_rows(shards) if r.sample_id not in live]  # live copy wins after a crash
    result = apply_verdicts(rows, rejected, verdicts, resynthesize)
    summary = PullSummary(project, len(reviews), dict(Counter(v.status for v in verdicts.values())),
                          dict(result.changes), len(result.rejected), agreement(reviews, emails).as_dict())
    if result.changes:
        write_qc_rejects(shards, result.rejected)  # first: a crash before the stages are rewritten loses nothing
        save_rows(shards, before, result.rows, {"qc_review": {
            "project": project, "url": url, "verdicts": summary.verdicts, "rejects": summary.rejects_total,
            "agreement": summary.agreement, "time": datetime.now(timezone.utc).isoformat(timespec="seconds")}})
    summary.seconds = round(time.perf_counter() - t0, 2)
    return summary


# --- re-synthesis after a correction (the curation synthesizer, run on the corrected sample) -------------------
def shards_view(shards: Path) -> ShardView | None:
    """The view recorded in a shards directory's manifest (what re-synthesis must write trajectories for)."""
    return view_from_manifest(read_manifest(shards))


def make_resynthesizer(data_root: Path, view: ShardView | None = None,
                       cfg: CurationConfig = CurationConfig()) -> Resynthesize:
    """A :data:`Resynthesize` hook backed by curation's :class:`TrajectorySynthesizer`.

    ``view`` is the shards' recorded view (:func:`shards_view`): a corrected sample's new trajectory is written
    for the same frames, pixel budgets and crop geometry as the rest of its shard.

    The corrected answer and boxes become the sample's answers and answer evidence; the trajectories are
    re-built by executing clip/crop on the video and re-verified by re-OCR, exactly as in curation. The OCR
    backend is created on first use, so a pull without corrections never loads it.
    """
    from videor4.contracts.dataset import QARecord, media_path
    from videor4.contracts.media import open_video
    from videor4.curation.ocr import create_ocr
    from videor4.curation.trajectories import TrajectorySynthesizer

    if view is not None:
        cfg = cfg.model_copy(update={"trajectories": cfg.trajectories.model_copy(
            update={"prompt": view.prompt, "ops": view.ops})})
    ocr_holder: list[Any] = []

    def resynthesize(row: ShardRow, answer: str | None, evidence: list[EvidenceItem] | None) -> ShardRow | None:
        if not ocr_holder:
            ocr_holder.append(create_ocr(cfg.ocr))
        with open_video(media_path(data_root, row.video.path), config=cfg.media, video_id=row.video_id) as reader:
            rec = QARecord(question_id=row.question_id, video_id=row.video_id, question=row.question,
                           answers=tuple(row.answers), source1=row.source1, source2=row.source2,
                           video_width=reader.width, video_height=reader.height, split=row.provenance.split,
                           source_file=row.provenance.source_file, record_index=-1)
            synth = TrajectorySynthesizer(reader, ocr_holder[0], cfg.trajectories, cfg.matching)
            answer_rows = [e for e in row.evidence if e.match == "answer"]
            if isinstance(row, RLRow):
                d = synth.difficulty(answer_rows)
                return row.model_copy(update={"difficulty": d.difficulty, "answer_in_initial": d.answer_in_initial,
                                              "required_ops": list(d.required_ops)})
            ok = [t for t in synth.synthesize(rec, answer_rows) if t.stage == row.stage and t.verified]
        if not ok:
            return None
        best = next((t for t in ok if t.sample_id == row.sample_id), ok[0])
        assert isinstance(row, CoTRow)
        return row.model_copy(update={"messages": best.messages, "ops": best.ops, "verified": True,
                                      "initial_frames": list(synth.initial_frames)})

    return resynthesize
