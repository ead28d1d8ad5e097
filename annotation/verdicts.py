"""Annotations → verdicts → shard rows, plus inter-annotator agreement and the rejects table.

One annotation becomes one :class:`Decision` (accept / reject / corrected);
several annotations of a task are resolved by majority (ties: the latest one
wins) into one :class:`Verdict`. Applying verdicts is a pure function of
(rows, rejected rows, verdicts), so a second pull of the same annotations
changes nothing, and a verdict that flips from reject to accept restores the
row from ``rejects.parquet`` — rejected samples leave the training shards but
are never lost.
"""

from __future__ import annotations

import io
import math
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from itertools import combinations
from pathlib import Path
from typing import Any, Literal

import pyarrow.parquet as pq

from videor4.annotation.client import TaskReview
from videor4.annotation.labeling import EVIDENCE_CONTROL
from videor4.contracts.evidence_schema import EvidenceItem
from videor4.contracts.rejects import REJECTS_FILE, Reject, read_rejects, write_rejects
from videor4.contracts.shard_schema import QC, CoTRow, ShardRow, rows_to_table, table_to_rows

Label = Literal["accept", "reject", "corrected"]
STATUS: dict[str, str] = {"accept": "human_accept", "reject": "human_reject", "corrected": "corrected"}
BOX_TOLERANCE_PCT = 0.05  # moves smaller than this (percent of the image) are rounding, not an edit


@dataclass(frozen=True)
class Box:
    """A rectangle as the annotator left it: frame, source-normalized x1,y1,x2,y2, label, and the evidence
    index it was pre-drawn from (``None`` for a box the annotator drew)."""

    frame_index: int
    bbox: tuple[float, float, float, float]
    label: str
    source: int | None


@dataclass(frozen=True)
class Decision:
    """One annotator's verdict on one task."""

    label: Label
    annotator: str
    time: str
    reasons: tuple[str, ...] = ()
    corrected_answer: str | None = None
    boxes: tuple[Box, ...] | None = None  # None: the pre-drawn boxes were left as they were


@dataclass(frozen=True)
class Verdict:
    """The resolved verdict of a task: the majority label and the decision that carries it."""

    sample_id: str
    decision: Decision
    shown_frames: tuple[int, ...]
    n_annotations: int
    labels: tuple[str, ...]

    @property
    def status(self) -> str:
        return STATUS[self.decision.label]

    @property
    def reason(self) -> str | None:
        d = self.decision
        if d.label == "reject":
            return "; ".join(d.reasons) or "rejected (no reason given)"
        if d.label == "corrected":
            parts = ([f"answer corrected to {d.corrected_answer!r}"] if d.corrected_answer else []) + (
                [f"evidence boxes corrected ({len(d.boxes)} boxes)"] if d.boxes is not None else [])
            return "; ".join(parts)
        return None


# --- one annotation → one decision -----------------------------------------------------------------------------
def _rect(result: dict[str, Any], frames: Sequence[int]) -> Box | None:
    if result.get("from_name") != EVIDENCE_CONTROL or result.get("type") != "rectanglelabels":
        return None
    v = result["value"]
    k = int(result.get("item_index") or 0)
    if not 0 <= k < len(frames):
        return None
    clamp = lambda t: min(1.0, max(0.0, t / 100.0))  # noqa: E731
    bbox = (clamp(v["x"]), clamp(v["y"]), clamp(v["x"] + v["width"]), clamp(v["y"] + v["height"]))
    rid = str(result.get("id", ""))
    source = int(rid[2:]) if rid.startswith("ev") and rid[2:].isdigit() else None
    return Box(frames[k], bbox, (v.get("rectanglelabels") or ["answer"])[0], source)


def _same_boxes(a: Sequence[Box], b: Sequence[Box]) -> bool:
    key = lambda x: (x.frame_index, x.label)  # noqa: E731
    if sorted(map(key, a)) != sorted(map(key, b)) or len(a) != len(b):
        return False
    rest = list(b)
    for box in a:
        match = next((o for o in rest if key(o) == key(box) and all(
            abs(p - q) * 100 <= BOX_TOLERANCE_PCT for p, q in zip(box.bbox, o.bbox))), None)
        if match is None:
            return False
        rest.remove(match)
    return True


def parse_annotation(ann: dict[str, Any], review: TaskReview, emails: dict[int, str]) -> Decision | None:
    """An annotation's result → a decision; ``None`` for cancelled (skipped) or empty annotations."""
    if ann.get("was_cancelled"):
        return None
    results = ann.get("result") or []
    by_name: dict[str, dict[str, Any]] = {r.get("from_name"): r.get("value", {}) for r in results}
    verdict = (by_name.get("verdict", {}).get("choices") or [None])[0]
    reasons = tuple(by_name.get("reject_reason", {}).get("choices") or ())
    text = by_name.get("corrected_answer", {}).get("text") or []
    corrected = (text[0] if isinstance(text, list) and text else str(text) if text else "").strip() or None
    boxes = [b for r in results if (b := _rect(r, review.frame_indices)) is not None]
    predicted = [b for res in review.prediction_results[:1] for r in res
                 if (b := _rect(r, review.frame_indices)) is not None]
    has_box_results = any(r.get("from_name") == EVIDENCE_CONTROL for r in results)
    changed = tuple(boxes) if has_box_results and not _same_boxes(boxes, predicted) else None
    if verdict is None and corrected is None and changed is None:
        return None
    label: Label = "reject" if verdict == "reject" else "corrected" if (corrected or changed is not None) else "accept"
    who = emails.get(int(ann.get("completed_by") or 0)) or str(ann.get("completed_by"))
    when = str(ann.get("updated_at") or ann.get("created_at") or "")
    return Decision(label, who, when, reasons, corrected, changed)


def resolve(review: TaskReview, emails: dict[int, str]) -> Verdict | None:
    """Majority label over the task's decisions; ties go to the most recent decision's label."""
    decisions = sorted((d for a in review.annotations if (d := parse_annotation(a, review, emails))),
                       key=lambda d: d.time)
    if not decisions:
        return None
    counts = Counter(d.label for d in decisions)
    top = max(counts.values())
    winner = next(d for d in reversed(decisions) if counts[d.label] == top)
    return Verdict(review.sample_id, winner, tuple(review.frame_indices), len(decisions),
                   tuple(d.label for d in decisions))


# --- agreement -------------------------------------------------------------------------------------------------
@dataclass
class Agreement:
    """Agreement over tasks with ≥ 2 annotations. Kappas are ``None`` where undefined (one category only,
    or no pair of annotators sharing ≥ 2 tasks for Cohen's)."""

    tasks: int = 0
    majority_agreement: float | None = None
    fleiss_kappa: float | None = None
    cohen_kappa: float | None = None
    cohen_pair: tuple[str, str] | None = None

    def as_dict(self) -> dict[str, Any]:
        r = lambda x: None if x is None else round(x, 4)  # noqa: E731
        return {"tasks_with_several_annotations": self.tasks, "majority_agreement": r(self.majority_agreement),
                "fleiss_kappa": r(self.fleiss_kappa), "cohen_kappa": r(self.cohen_kappa),
                "cohen_pair": list(self.cohen_pair) if self.cohen_pair else None}


def fleiss_kappa(items: Sequence[Sequence[str]]) -> float | None:
    """Fleiss' kappa, generalised to a varying number of raters per item (each item needs ≥ 2)."""
    items = [list(x) for x in items if len(x) >= 2]
    if not items:
        return None
    cats = sorted({c for x in items for c in x})
    total = sum(len(x) for x in items)
    p_j = [sum(x.count(c) for x in items) / total for c in cats]
    p_bar = sum((sum(x.count(c) ** 2 for c in cats) - len(x)) / (len(x) * (len(x) - 1)) for x in items) / len(items)
    p_e = sum(p * p for p in p_j)
    return None if math.isclose(p_e, 1.0) else (p_bar - p_e) / (1 - p_e)


def cohen_kappa(a: Sequence[str], b: Sequence[str]) -> float | None:
    n = len(a)
    if n < 2:
        return None
    p_o = sum(x == y for x, y in zip(a, b)) / n
    ca, cb = Counter(a), Counter(b)
    p_e = sum(ca[c] * cb[c] for c in set(a) | set(b)) / (n * n)
    return None if math.isclose(p_e, 1.0) else (p_o - p_e) / (1 - p_e)


def agreement(reviews: Sequence[TaskReview], emails: dict[int, str]) -> Agreement:
    per_task: list[dict[str, str]] = []  # annotator -> label, for tasks with several decisions
    for review in reviews:
        ds = [d for a in review.annotations if (d := parse_annotation(a, review, emails))]
        if len(ds) >= 2:
            per_task.append({d.annotator: d.label for d in sorted(ds, key=lambda d: d.time)} if len(
                {d.annotator for d in ds}) == len(ds) else {f"{d.annotator}#{i}": d.label for i, d in enumerate(ds)})
    out = Agreement(tasks=len(per_task))
    if not per_task:
        return out
    labels = [list(t.values()) for t in per_task]
    out.majority_agreement = sum(Counter(x).most_common(1)[0][1] / len(x) for x in labels) / len(labels)
    out.fleiss_kappa = fleiss_kappa(labels)
    annotators = sorted({a for t in per_task for a in t})
    best = max(((sum(1 for t in per_task if p in t and q in t), (p, q)) for p, q in combinations(annotators, 2)),
               default=(0, None))
    if best[0] >= 2 and best[1] is not None:
        p, q = best[1]
        shared = [t for t in per_task if p in t and q in t]
        out.cohen_kappa = cohen_kappa([t[p] for t in shared], [t[q] for t in shared])
        out.cohen_pair = (p, q)
    return out


# --- applying verdicts to rows ---------------------------------------------------------------------------------
Resynthesize = Callable[[ShardRow, str | None, list[EvidenceItem] | None], ShardRow | None]
"""``(corrected row, corrected answer or None, corrected evidence or None) -> re-synthesized and re-verified row,
or None when the corrected sample no longer yields a verified trajectory (the row is then rejected)."""


@dataclass
class Rejected:
    """A row that left the training shards, with why and who decided."""

    row: ShardRow
    reason: str


@dataclass
class ApplyResult:
    rows: list[ShardRow]
    rejected: list[Rejected]
    changes: Counter = field(default_factory=Counter)


def corrected_evidence(row: ShardRow, verdict: Verdict) -> list[EvidenceItem] | None:
    """Boxes on the frames the annotator saw are replaced by theirs; evidence on other frames is kept."""
    boxes = verdict.decision.boxes
    if boxes is None:
        return None
    shown = set(verdict.shown_frames)
    kept = [e for e in row.evidence if e.frame_index not in shown]
    answer = verdict.decision.corrected_answer
    new = []
    for b in boxes:
        base = row.evidence[b.source] if b.source is not None and b.source < len(row.evidence) else None
        text = answer if (answer and b.label == "answer") else base.text if base else (row.answers or [""])[0]
        new.append(EvidenceItem(frame_index=b.frame_index, timestamp_s=b.frame_index / row.video.fps,
                                bbox=[round(v, 6) for v in b.bbox], text=text,
                                kind=base.kind if base else "ocr", match=b.label, score=1.0))
    return sorted(kept + new, key=lambda e: (e.frame_index, e.bbox))


def _apply_one(row: ShardRow, verdict: Verdict, resynthesize: Resynthesize | None) -> tuple[ShardRow, str | None]:
    """The row after the verdict, and a reject reason if it must leave the training shards."""
    d = verdict.decision
    qc = QC(status=verdict.status, annotator=d.annotator, time=d.time, reason=verdict.reason,
            uncertainty=row.qc.uncertainty)
    if d.label != "corrected":
        return row.model_copy(update={"qc": qc}), (qc.reason if d.label == "reject" else None)
    evidence = corrected_evidence(row, verdict)
    update: dict[str, Any] = {}
    if d.corrected_answer:
        update["answers"] = [d.corrected_answer]
    if evidence is not None:
        update["evidence"] = evidence
    fixed = row.model_copy(update=update)
    if resynthesize is not None:
        redone = resynthesize(fixed, d.corrected_answer, evidence)
        if redone is None:
            return fixed.model_copy(update={"qc": qc.model_copy(update={
                "status": "human_reject", "reason": f"{qc.reason}; the corrected sample did not re-verify"})}), \
                "corrected sample did not re-verify"
        fixed = redone
    elif isinstance(fixed, CoTRow):  # the old trajectory no longer matches the corrected answer/boxes
        fixed = fixed.model_copy(update={"verified": False})
    return fixed.model_copy(update={"qc": qc}), None


def apply_verdicts(rows: Sequence[ShardRow], rejected: Sequence[ShardRow], verdicts: dict[str, Verdict],
                   resynthesize: Resynthesize | None = None) -> ApplyResult:
    """Apply verdicts to the shard rows and the previously rejected rows; pure and idempotent.

    A row whose QC already records the deciding annotation (same annotator and time) is left as it is, so
    pulling twice changes nothing and re-synthesis runs once per correction.
    """
    out = ApplyResult(rows=[], rejected=[])
    for row in [*rows, *rejected]:
        v = verdicts.get(row.sample_id)
        if v is not None and (row.qc.annotator, row.qc.time) != (v.decision.annotator, v.decision.time):
            row, reason = _apply_one(row, v, resynthesize)
            out.changes[row.qc.status] += 1
        if row.qc.status == "human_reject":
            out.rejected.append(Rejected(row, row.qc.reason or "rejected"))
        else:
            out.rows.append(row)
    return out


# --- the rejects table -----------------------------------------------------------------------------------------
def _row_blob(row: ShardRow) -> bytes:
    """The full row in its stage's exact Parquet schema: restores bit-for-bit, embedded JPEGs included."""
    buf = io.BytesIO()
    pq.write_table(rows_to_table([row], row.stage), buf)
    return buf.getvalue()


def write_qc_rejects(shards: Path, rejected: Sequence[Rejected]) -> Path:
    """``<shards>/rejects.parquet`` through the one reject writer; each reject holds its full row."""
    return write_rejects(Path(shards) / REJECTS_FILE, [
        Reject(stage="qc", reason="human_reject", message=r.reason, video_id=r.row.video_id,
               question_id=r.row.question_id, sample_id=r.row.sample_id, annotator=r.row.qc.annotator,
               time=r.row.qc.time, row=_row_blob(r.row))
        for r in sorted(rejected, key=lambda r: r.row.sample_id)])


def read_rejected_rows(shards: Path) -> list[ShardRow]:
    """The shard rows QC took out of the training shards (restorable by a later verdict)."""
    return [row for rej in read_rejects(Path(shards) / REJECTS_FILE) if rej.stage == "qc" and rej.row
            for row in table_to_rows(pq.read_table(io.BytesIO(rej.row)))]
