"""The Video-R4 rewards (DESIGN §5) as plain functions in a registry.

Every reward is ``fn(completions, **columns) -> list[float]`` (the TRL convention): ``completions[i]`` is the
list of assistant turns of rollout ``i`` and ``columns`` are per-rollout lists the trainer fills from the rollout
and its sample (``answers``, ``num_calls``, ``group_ids``, ``stop_reasons``, ``final_answers``,
``completion_ids`` — the generated token ids —, and the feature arrays below) plus that reward's own parameters
from :class:`RewardSpec.params`. A reward takes the columns it needs and ignores the rest (``**_``), so users add
their own with :func:`register_reward` and turn it on in a recipe without touching the trainer.

The total is ``R' = Σ_k w_k · R_k`` over the enabled rewards (:func:`compute_rewards`); the paper's weights are
``w_acc = w_format = 1`` and ``λ_div, λ_rep, λ_cur`` for the rest.

Edge cases (documented because each changes what the policy is pushed towards):

* ``diversity`` — fewer than two successful crops → 0 (nothing to be diverse about; it neither rewards nor
  punishes not cropping, which ``curiosity`` handles).
* ``representativeness`` — no successful clip → 0; otherwise ``C`` are the frames the *last* successful clip
  returned and ``V`` the input frames (the initial uniformly sampled view, which covers the whole video).
* ``curiosity`` — the call penalty is ``−β·max(n_calls − 1, 0)``: Pixel-Reasoner's ``β·min(N − n, 0)`` with
  ``N = 1``, so a rollout that makes no call is neither rewarded nor penalized by it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from videor4.contracts.errors import UserError
from videor4.contracts.metrics import acc_score, anls_score
from videor4.contracts.tool_protocol import extract_answer, well_formed

RewardFn = Callable[..., list[float]]
Completion = Sequence[str]  # the assistant turns of one rollout, in order

REWARDS: dict[str, RewardFn] = {}
# Feature columns (``crop_features``, ``frame_features``, ``clip_features``) a reward reads: computing them
# costs a vision-encoder pass per image, so the trainer computes only the ones an enabled reward declared.
FEATURE_NEEDS: dict[str, frozenset[str]] = {}
FEATURE_COLUMNS = frozenset({"crop_features", "frame_features", "clip_features"})


def register_reward(name: str, needs: Sequence[str] = ()) -> Callable[[RewardFn], RewardFn]:
    """Decorator adding a reward function to the registry under ``name`` (recipes refer to it by name).

    ``needs`` lists the feature columns the function reads (a subset of :data:`FEATURE_COLUMNS`).
    """
    unknown = set(needs) - FEATURE_COLUMNS
    if unknown:
        raise ValueError(f"unknown feature columns {sorted(unknown)}; choose from {sorted(FEATURE_COLUMNS)}")

    def add(fn: RewardFn) -> RewardFn:
        if name in REWARDS and REWARDS[name] is not fn:
            raise ValueError(f"reward {name!r} is already registered")
        REWARDS[name] = fn
        FEATURE_NEEDS[name] = frozenset(needs)
        return fn

    return add


def get_reward(name: str) -> RewardFn:
    if name not in REWARDS:
        raise UserError(f"unknown reward {name!r}; registered: {', '.join(sorted(REWARDS))}")
    return REWARDS[name]


def _final(turns: Completion | str) -> str:
    if isinstance(turns, str):
        return turns
    return turns[-1] if turns else ""


# --- accuracy -----------------------------------------------------------------------------------------------
@register_reward("accuracy")
def accuracy_reward(completions: Sequence[Completion], answers: Sequence[Sequence[str]], **_: Any) -> list[float]:
    """Official Acc (EvalAI normalization, exact match against any ground truth) of the extracted answer."""
    return [acc_score(extract_answer(_final(c)), gts) for c, gts in zip(completions, answers)]


@register_reward("accuracy_anls")
def accuracy_anls_reward(completions: Sequence[Completion], answers: Sequence[Sequence[str]], **_: Any) -> list[float]:
    """Official ANLS (thresholded at 0.5) of the extracted answer: partial credit for near-misses in OCR text."""
    return [anls_score(extract_answer(_final(c)), gts) for c, gts in zip(completions, answers)]


# --- format -------------------------------------------------------------------------------------------------
@register_reward("format")
def format_reward(completions: Sequence[Completion], **_: Any) -> list[float]:
    return [float(well_formed(c)) for c in completions]


# --- diversity / representativeness -------------------------------------------------------------------------
def _rows(features: Any) -> np.ndarray:
    arr = np.asarray(features, dtype=np.float64)
    return arr.reshape(0, 0) if arr.size == 0 else arr.reshape(arr.shape[0], -1)


def diversity(features: Any) -> float:
    """``1/(n(n−1)) Σ_i Σ_{j≠i} (1 − cos(v_i, v_j))``; 0 when n < 2."""
    v = _rows(features)
    n = v.shape[0]
    if n < 2:
        return 0.0
    unit = v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)
    cos = unit @ unit.T
    off_diagonal = (1.0 - cos).sum() - (1.0 - np.diag(cos)).sum()
    return float(off_diagonal / (n * (n - 1)))


def representativeness(frame_features: Any, clip_features: Any) -> float:
    """``exp(−(1/|V|) Σ_{v∈V} min_{u∈C} ‖v − u‖₂)``; 0 when C (or V) is empty."""
    v, c = _rows(frame_features), _rows(clip_features)
    if v.shape[0] == 0 or c.shape[0] == 0:
        return 0.0
    distances = np.linalg.norm(v[:, None, :] - c[None, :, :], axis=-1)
    return float(np.exp(-distances.min(axis=1).mean()))


@register_reward("diversity", needs=("crop_features",))
def diversity_reward(completions: Sequence[Completion], crop_features: Sequence[Any], **_: Any) -> list[float]:
    """R_div over the features of the crops each rollout selected (rewards looking at different regions)."""
    return [diversity(f) for f in crop_features]


@register_reward("representativeness", needs=("frame_features", "clip_features"))
def representativeness_reward(
    completions: Sequence[Completion], frame_features: Sequence[Any], clip_features: Sequence[Any], **_: Any
) -> list[float]:
    """R_rep: how well the last clip's frames cover the input frames (rewards clips that summarize the video)."""
    return [representativeness(v, c) for v, c in zip(frame_features, clip_features)]


# --- curiosity ----------------------------------------------------------------------------------------------
@register_reward("curiosity")
def curiosity_reward(
    completions: Sequence[Completion],
    num_calls: Sequence[int],
    group_ids: Sequence[Any],
    alpha: float = 0.5,
    target_rate: float = 0.3,
    beta: float = 0.05,
    **_: Any,
) -> list[float]:
    """Pixel-Reasoner's curiosity bonus and call penalty.

    For a rollout that used tools: ``+alpha·max(target_rate − r_group, 0) − beta·(n_calls − 1)`` where
    ``r_group`` is the fraction of its group (same ``group_ids`` value) that used tools. The bonus is large
    only while tool use is rare in the group, so it bootstraps the habit without rewarding calls forever; the
    penalty keeps the number of calls small once the habit exists. Rollouts without calls get 0.
    """
    counts: dict[Any, list[int]] = {}
    for g, n in zip(group_ids, num_calls):
        counts.setdefault(g, []).append(n)
    rate = {g: sum(n > 0 for n in ns) / len(ns) for g, ns in counts.items()}
    out = []
    for g, n in zip(group_ids, num_calls):
        if n <= 0:
            out.append(0.0)
        else:
            out.append(alpha * max(target_rate - rate[g], 0.0) - beta * max(n - 1, 0))
    return out


# --- combination --------------------------------------------------------------------------------------------
class RewardSpec(BaseModel):
    """One enabled reward: registry name, weight in R', and keyword parameters passed to the function."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="registered reward name (see videor4.training.rewards.REWARDS)")
    weight: float = Field(1.0, description="multiplier in the total reward (the paper's λ for div/rep/cur)")
    params: dict[str, Any] = Field(default_factory=dict, description="extra keyword arguments of the function")


def video_r4_rewards(
    lambda_div: float = 1.0, lambda_rep: float = 1.0, lambda_cur: float = 1.0, accuracy: str = "accuracy"
) -> list[RewardSpec]:
    """The paper's R' = R_acc + R_format + λ_div R_div + λ_rep R_rep + λ_cur R_cur (a zero λ drops the term)."""
    specs = [RewardSpec(name=accuracy), RewardSpec(name="format")]
    for name, weight in (("diversity", lambda_div), ("representativeness", lambda_rep), ("curiosity", lambda_cur)):
        if weight:
            specs.append(RewardSpec(name=name, weight=weight))
    return specs


def compute_rewards(
    specs: Sequence[RewardSpec], completions: Sequence[Completion], **columns: Any
) -> tuple[list[float], dict[str, list[float]]]:
    """Total reward per rollout and each component (unweighted), keyed by reward name."""
    components: dict[str, list[float]] = {}
    total = [0.0] * len(completions)
    for spec in specs:
        values = [float(v) for v in get_reward(spec.name)(completions, **columns, **spec.params)]
        if len(values) != len(completions):
            raise ValueError(f"reward {spec.name!r} returned {len(values)} values for {len(completions)} completions")
        components[spec.name] = values
        total = [t + spec.weight * v for t, v in zip(total, values)]
    return total, components


def required_features(specs: Sequence[RewardSpec]) -> set[str]:
    """Feature columns the enabled rewards read (the trainer skips encoding the others)."""
    return {column for s in specs for column in FEATURE_NEEDS.get(s.name, frozenset())}
