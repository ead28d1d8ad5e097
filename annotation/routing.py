"""Confidence routing: which samples a human must look at (beyond the paper).

Reviewing every sample does not scale to CoT-17k + RL-30k. Each sample gets a
confidence from what curation already measured — how well the best evidence
matched the answer (the matcher's score, which folds in OCR confidence), and
whether the trajectory re-verified — and only doubtful samples go to people.
A seeded random audit of the confident ones keeps the automatic path honest:
its human-reject rate estimates the error rate of ``auto_pass``.

The audit draw hashes ``(seed, sample_id)`` instead of consuming a random
stream, so a sample's fate does not depend on which other samples are in the
run: re-pushing, or pushing a superset, routes every sample the same way.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field

from pydantic import BaseModel, ConfigDict, Field

from videor4.contracts.shard_schema import CoTRow, ShardRow

REVIEWED = ("human_accept", "human_reject", "corrected")


class RoutingConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    threshold: float = Field(0.8, ge=0, le=1, description="samples with confidence below this go to humans")
    audit_fraction: float = Field(0.05, ge=0, le=1, description="share of confident samples also sent to "
                                  "humans, to measure the error rate of auto_pass")
    seed: int = Field(0, description="seed of the audit draw")


def uncertainty(row: ShardRow) -> float:
    """0 = certain … 1 = no usable evidence. An unverified trajectory is maximally doubtful."""
    if isinstance(row, CoTRow) and not row.verified:
        return 1.0
    if row.qc.uncertainty is not None:
        return float(row.qc.uncertainty)
    best = max((e.score for e in row.evidence if e.match == "answer"), default=0.0)
    return round(1.0 - best, 6)


def audit_draw(sample_id: str, seed: int) -> float:
    """A stable number in [0, 1) per sample and seed."""
    digest = hashlib.sha1(f"audit/{seed}/{sample_id}".encode()).hexdigest()
    return int(digest[:12], 16) / float(1 << 48)


@dataclass
class RoutingDecision:
    """Where each sample goes. ``already``: reviewed by a human (never re-routed); ``queued``: pending from an
    earlier push (kept for humans even if the threshold changed, since their task may be half-reviewed)."""

    queued: list[str] = field(default_factory=list)
    low_confidence: list[str] = field(default_factory=list)
    audit: list[str] = field(default_factory=list)
    auto_pass: list[str] = field(default_factory=list)
    already: list[str] = field(default_factory=list)
    scores: dict[str, float] = field(default_factory=dict)

    @property
    def to_humans(self) -> list[str]:
        return sorted(self.queued + self.low_confidence + self.audit)

    def counts(self) -> dict[str, int]:
        return {"queued": len(self.queued), "low_confidence": len(self.low_confidence), "audit": len(self.audit),
                "auto_pass": len(self.auto_pass), "already_reviewed": len(self.already)}


def route(rows: Sequence[ShardRow], cfg: RoutingConfig) -> RoutingDecision:
    """Rank by uncertainty and split: below-threshold confidence → humans, a seeded audit → humans, rest → auto."""
    out = RoutingDecision()
    for row in sorted(rows, key=lambda r: (-uncertainty(r), r.sample_id)):
        u = uncertainty(row)
        out.scores[row.sample_id] = u
        if row.qc.status in REVIEWED:
            out.already.append(row.sample_id)
        elif row.qc.status == "pending":
            out.queued.append(row.sample_id)
        elif 1.0 - u < cfg.threshold:
            out.low_confidence.append(row.sample_id)
        elif audit_draw(row.sample_id, cfg.seed) < cfg.audit_fraction:
            out.audit.append(row.sample_id)
        else:
            out.auto_pass.append(row.sample_id)
    return out
