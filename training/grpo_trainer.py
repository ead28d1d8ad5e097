"""GRPO on RL shards (RLd, RLc) with tool-using multi-turn rollouts and the Video-R4 rewards.

Why not TRL: its GRPO drops rollout images with a custom rollout function and cannot return video clips from
tools (DESIGN §9), so this is a compact loop on transformers + accelerate with the same maths:

1. For each prompt, G rollouts through the rollout engine (``run_rollouts``: the policy writes ``<think>``,
   calls ``clip``/``crop``, the shared executor returns pixels, until ``<answer>`` or a budget).
2. Rewards from the registry (``videor4.training.rewards``), ``A_i = (R_i − mean_g)/(std_g + ε)`` per group
   (unbiased std, as TRL); groups whose rewards are all equal carry no signal and are dropped (configurable).
3. The PPO-clipped token objective ``−min(ρ_t A, clip(ρ_t, 1−ε, 1+ε_high) A) + β·KL_t`` with
   ``ρ_t = π_θ/π_old`` and the k3 estimator ``KL_t = e^{ref−logp} − (ref−logp) − 1`` to a frozen reference
   (the policy at the start of the stage). Only tokens the policy generated count: prompt, the ``<|im_end|>`` the
   loop appends after ``</tool_call>`` and observation turns are masked out by ``Rollout.loss_mask``.

With ``num_iterations = 1`` (default) the old policy is the current one, ``ρ = 1`` and the clip is inactive (as in
TRL); ``num_iterations = μ > 1`` reuses each rollout batch for μ optimizer steps, where clipping matters.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from videor4.contracts.dataset import media_path
from videor4.contracts.errors import UserError
from videor4.contracts.executor import ClipCropExecutor, OpsConfig
from videor4.contracts.media import MediaConfig, open_video
from videor4.contracts.shard_schema import RLRow
from videor4.contracts.view import PromptConfig, ShardView
from videor4.training.features import FeatureEncoder
from videor4.training.grpo_config import GRPOConfig
from videor4.training.rewards import accuracy_reward, compute_rewards, required_features
from videor4.training.rollout import (
    HFEngine,
    HFEngineConfig,
    Rollout,
    RolloutConfig,
    RolloutEngine,
    RolloutSample,
    run_rollouts,
)
from videor4.training.stage_trainer import StageTrainer, batch_inputs, make_accelerator, to_device, token_logprobs


# --- the maths (pure functions, tested against direct formulas) ---------------------------------------------
def group_advantages(rewards: Any, group_size: int, epsilon: float = 1e-4, scale: bool = True) -> Any:
    """``(R − mean_g) / (std_g + ε)`` over consecutive groups of ``group_size`` (unbiased std, as TRL)."""
    import torch

    grouped = torch.as_tensor(rewards, dtype=torch.float64).view(-1, group_size)
    centred = grouped - grouped.mean(dim=1, keepdim=True)
    if scale:
        centred = centred / (grouped.std(dim=1, keepdim=True) + epsilon)
    return centred.view(-1)


def truncated_is_weights(trainer_logp: Any, sampler_logp: Any, cap: float) -> Any:
    """``min(π_train / π_sampler, cap)`` per token (TRL's ``token_truncate``): the sampler (vLLM) and the trainer
    compute slightly different probabilities for the same tokens; the cap bounds the variance this adds."""
    import torch

    return torch.exp(trainer_logp - sampler_logp).clamp(max=cap).detach()


def zero_signal_groups(rewards: Any, group_size: int, tolerance: float = 1e-9) -> Any:
    """Bool per group: all its rewards equal (advantage 0 everywhere, so no gradient from the policy term)."""
    import torch

    grouped = torch.as_tensor(rewards, dtype=torch.float64).view(-1, group_size)
    return (grouped.max(dim=1).values - grouped.min(dim=1).values) <= tolerance


def clipped_objective(
    logp: Any,
    old_logp: Any,
    advantages: Any,
    mask: Any,
    *,
    epsilon: float,
    epsilon_high: float | None = None,
    beta: float = 0.0,
    ref_logp: Any = None,
    loss_type: str = "token",
    normalizer: float | None = None,
    is_weight: Any = None,
) -> tuple[Any, dict[str, Any]]:
    """GRPO loss of a (micro-)batch: tensors are (B, T) except ``advantages`` (B,).

    ``normalizer`` is the whole batch's denominator when gradients accumulate over micro-batches: its number
    of completion tokens (``token``) or rollouts (``sequence``); None = this batch's own. ``is_weight`` (B, T)
    multiplies the policy-gradient term: the truncated importance-sampling correction between the sampler's
    and the trainer's log-probs (the KL term is not reweighted, as in TRL). Returns the loss and sums for logging
    (``kl_sum``, ``clipped_tokens``, ``tokens``).
    """
    import torch

    eps_high = epsilon if epsilon_high is None else epsilon_high
    ratio = torch.exp(logp - old_logp)
    adv = advantages.unsqueeze(1).to(logp.dtype)
    unclipped = ratio * adv
    clipped = torch.clamp(ratio, 1 - epsilon, 1 + eps_high) * adv
    per_token = -torch.min(unclipped, clipped)
    if is_weight is not None:
        per_token = per_token * is_weight.to(per_token.dtype)
    kl = None
    if beta:
        delta = ref_logp - logp
        kl = torch.exp(delta) - delta - 1
        per_token = per_token + beta * kl
    mask = mask.to(per_token.dtype)
    if loss_type == "token":
        loss = (per_token * mask).sum() / (normalizer if normalizer is not None else mask.sum().clamp(min=1))
    elif loss_type == "sequence":
        per_seq = (per_token * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1)
        loss = per_seq.sum() / (normalizer if normalizer is not None else per_seq.numel())
    else:
        raise ValueError(f"unknown loss_type {loss_type!r}")
    is_clipped = ((ratio < 1 - epsilon) & (adv < 0)) | ((ratio > 1 + eps_high) & (adv > 0))
    stats = {
        "tokens": mask.sum().detach(),
        "clipped_tokens": (is_clipped.to(mask.dtype) * mask).sum().detach(),
        "kl_sum": (kl * mask).sum().detach() if kl is not None else torch.zeros(()),
    }
    return loss, stats


# --- rollout batch ------------------------------------------------------------------------------------------
class RolloutBatch:
    """One optimizer batch: the rollouts, their rewards/advantages and the fixed log-probs (old, reference)."""

    def __init__(self, rollouts: list[Rollout], rewards: list[float], components: dict[str, list[float]],
                 advantages: list[float], keep: list[bool], metrics: dict[str, float]):
        self.rollouts, self.rewards, self.components = rollouts, rewards, components
        self.advantages, self.keep, self.metrics = advantages, keep, metrics
        # Per pass (keyed by its first rollout index): the old policy's, the reference's and the IS weights.
        self.old_logp: dict[int, Any] = {}
        self.ref_logp: dict[int, Any] = {}
        self.is_weight: dict[int, Any] = {}


def reward_columns(rollouts: Sequence[Rollout], answers: Sequence[Sequence[str]], group_ids: Sequence[int],
                   encoder: FeatureEncoder | None, needs: set[str]) -> dict[str, Any]:
    """The per-rollout columns rewards read; image features only for the columns an enabled reward needs."""
    columns: dict[str, Any] = {
        "answers": list(answers), "group_ids": list(group_ids),
        "num_calls": [len(r.calls) for r in rollouts], "stop_reasons": [r.stop_reason for r in rollouts],
        "final_answers": [r.answer for r in rollouts],
        "completion_ids": [[t for t, m in zip(r.input_ids, r.loss_mask) if m] for r in rollouts],
    }
    if not needs:
        return columns
    if encoder is None:
        raise ValueError(f"rewards need {sorted(needs)} but no feature encoder was given")
    if "crop_features" in needs:
        columns["crop_features"] = [encoder.encode([im for o in r.observations if o.ok and o.tool == "crop"
                                                    for im in o.images]) for r in rollouts]
    if "clip_features" in needs:
        clips = [[o for o in r.observations if o.ok and o.tool == "clip"] for r in rollouts]
        columns["clip_features"] = [encoder.encode(c[-1].images if c else []) for c in clips]
    if "frame_features" in needs:
        by_group: dict[int, Any] = {}  # the initial frames are the same for every rollout of a group
        for r, g in zip(rollouts, group_ids):
            if g not in by_group:
                shown = len(r.images) - sum(len(o.images) for o in r.observations)
                by_group[g] = encoder.encode(r.images[:shown])
        columns["frame_features"] = [by_group[g] for g in group_ids]
    return columns


def group_samples(rows: Sequence[RLRow], group_size: int, data_root: str | Path) -> list[RolloutSample]:
    """``group_size`` rollouts of each row, one GRPO group per row (``meta``: the row and its group index)."""
    return [RolloutSample(f"{row.sample_id}#{g}", row.question, media_path(data_root, row.video.path),
                          tuple(row.answers), {"row": row, "group": k})
            for k, row in enumerate(rows) for g in range(group_size)]


def row_executor(sample: RolloutSample, view: ShardView, data_root: str | Path, media: MediaConfig) -> ClipCropExecutor:
    """The executor of one rollout of an RL row: the row's video (inside the data root), its initial frames."""
    row: RLRow = sample.meta["row"]
    reader = open_video(media_path(data_root, row.video.path), config=media, video_id=row.video_id)
    return view.executor(reader, row.initial_frames)


def score_rollouts(specs: Sequence[Any], rollouts: Sequence[Rollout], samples: Sequence[RolloutSample],
                   encoder: FeatureEncoder | None, needs: set[str]) -> tuple[list[float], dict[str, list[float]]]:
    """Total reward per rollout of :func:`group_samples` and each component, as the enabled ``specs`` give them."""
    columns = reward_columns(rollouts, [s.answers for s in samples], [s.meta["group"] for s in samples], encoder,
                             needs)
    return compute_rewards(specs, [[t.assistant for t in r.turns] for r in rollouts], **columns)


def rollout_metrics(rollouts: Sequence[Rollout], rewards: Sequence[float], components: dict[str, list[float]],
                    answers: Sequence[Sequence[str]], zero_groups: int, groups: int) -> dict[str, float]:
    n = len(rollouts)
    calls = [len(r.calls) for r in rollouts]
    metrics = {
        "reward": float(np.mean(rewards)), "reward_std": float(np.std(rewards)),
        "tool_call_rate": sum(c > 0 for c in calls) / n, "calls_per_rollout": float(np.mean(calls)),
        "accuracy": float(np.mean(accuracy_reward([[r.final_text] for r in rollouts], answers))),
        "completion_tokens": float(np.mean([r.generated_tokens for r in rollouts])),
        "zero_advantage_group_fraction": zero_groups / max(groups, 1),
    }
    metrics.update({f"reward/{name}": float(np.mean(v)) for name, v in components.items()})
    for reason in ("answer", "eos", "max_calls", "max_images", "max_tokens"):
        metrics[f"stop/{reason}"] = sum(r.stop_reason == reason for r in rollouts) / n
    return metrics


class GRPOTrainer(StageTrainer):
    """GRPO over RL rows: prompts are drawn in a seeded order, G rollouts each, one batch per μ steps.

    Distributed: every rank rolls out its own prompts. Passes (forward/backward over ``micro_batch_size``
    rollouts) are padded to the same count on all ranks with zero-weight passes when a rank filtered more groups;
    with sharded weights (ZeRO-3, FSDP) rollouts and generate calls run in lockstep too. The frozen reference and
    the frozen feature encoder never train: the reference is prepared like the policy (its shards under ZeRO-3 and
    FSDP) in the policy's compute dtype; the encoder (a vision tower, small) is replicated and needs no
    collectives.
    """

    def __init__(self, model: Any, processor: Any, rows: Sequence[RLRow], config: GRPOConfig,
                 output_dir: str | Path, *, data_root: str | Path, prompt: PromptConfig, ops: OpsConfig,
                 ref_model: Any = None, accelerator: Any = None, name: str = "grpo",
                 engine_factory: Callable[[Any, Any], RolloutEngine] | None = None,
                 feature_encoder: FeatureEncoder | None = None, media: MediaConfig | None = None):
        self.rows = list(rows)
        if not self.rows:
            raise UserError(f"stage {name}: no RL rows to train on")
        if config.beta and ref_model is None:
            raise ValueError("beta > 0 needs a reference model (the policy at the start of the stage)")
        self.grpo = config
        self.data_root = Path(data_root)
        self.media = media or MediaConfig()
        self.view = ShardView(prompt=prompt, ops=ops)
        self.rollout_config = RolloutConfig.of(config.rollout, self.view)
        self.accelerator = accelerator or make_accelerator()
        super().__init__(model, processor, config, output_dir, self.accelerator, name)
        self.ref_model = self._prepare_frozen(ref_model) if config.beta else None
        self.engine_factory = engine_factory or self._default_engine
        self.engine: RolloutEngine | None = None
        self.feature_needs = required_features(config.rewards)
        if self.feature_needs and feature_encoder is None:
            raise ValueError(f"rewards need {sorted(self.feature_needs)}: pass a frozen feature encoder")
        self.feature_encoder = feature_encoder
        self.batch: RolloutBatch | None = None

    def _prepare_frozen(self, model: Any) -> Any:
        """The KL reference, in the policy's compute dtype, placed/sharded like the policy, never trained.

        DeepSpeed: an inference engine from the training config (ZeRO-3 partitions it like the policy; stages
        0–2 keep a full bf16 copy per GPU, as TRL does); FSDP: wrapped with the launcher's FSDP settings; else the
        device. It is not registered with the Accelerator, so checkpoints hold the policy only.
        """
        import copy

        from videor4.training.stage_trainer import compute_dtype

        acc = self.accelerator
        model = model.to(dtype=compute_dtype(acc)).eval().requires_grad_(False)
        if self.dist.deepspeed:
            import deepspeed

            ds = copy.deepcopy(acc.state.deepspeed_plugin.deepspeed_config)
            for key in ("optimizer", "scheduler", "gradient_accumulation_steps", "gradient_clipping"):
                ds.pop(key, None)
            if self.dist.zero_stage != 3:
                ds["zero_optimization"] = {"stage": 0}
            engine, *_ = deepspeed.initialize(model=model, config=ds)
            engine.eval()  # (DeepSpeedEngine.eval returns None)
            return engine
        if self.dist.fsdp:
            wrapped = acc.prepare_model(model, evaluation_mode=True)
            acc._models.remove(wrapped)  # not part of the training state (save_state would checkpoint it)
            wrapped.eval()
            return wrapped
        return model.to(acc.device)

    # -- schedule ------------------------------------------------------------------------------------------------
    def prompts_per_batch(self) -> int:
        return self.grpo.prompts_per_step * self.accelerator.num_processes

    def compute_total_steps(self) -> int:
        cfg = self.grpo
        if cfg.max_steps:
            return cfg.max_steps
        batches = math.ceil(cfg.num_epochs * len(self.rows) / self.prompts_per_batch())
        return max(1, batches * cfg.num_iterations)

    def micro_batch_size(self) -> int:
        return self.grpo.micro_batch_size

    def micro_batches_per_step(self) -> int:
        """Upper bound of passes per step on a rank: all its rollouts (no group filtered)."""
        return math.ceil(self.grpo.prompts_per_step * self.grpo.num_generations / self.grpo.micro_batch_size)

    def samples_seen(self, step: int) -> int:
        return math.ceil(step / self.grpo.num_iterations) * self.prompts_per_batch()

    def prompt_rows(self, batch_index: int) -> list[RLRow]:
        """This process's prompts of batch ``batch_index``: a seeded permutation per epoch, no state to save."""
        acc, k = self.accelerator, self.grpo.prompts_per_step
        out = []
        for j in range(k):
            q = batch_index * self.prompts_per_batch() + acc.process_index * k + j
            epoch, i = divmod(q, len(self.rows))
            out.append(self.rows[int(np.random.default_rng([self.grpo.seed, epoch]).permutation(len(self.rows))[i])])
        return out

    # -- rollouts ------------------------------------------------------------------------------------------------
    def _default_engine(self, model: Any, processor: Any) -> RolloutEngine:
        cfg = self.grpo
        if cfg.engine == "vllm":
            try:
                from videor4.training.vllm_engine import build_training_engine
            except ImportError as exc:
                raise UserError(f"engine 'vllm' needs vllm and videor4.training.vllm_engine ({exc})") from exc
            return build_training_engine(model, processor, cfg, self.rollout_config, self.dist)
        return HFEngine(model, processor, HFEngineConfig(
            do_sample=True, temperature=cfg.temperature, top_p=cfg.top_p, batch_size=cfg.engine_batch_size,
            return_logprobs=bool(cfg.is_correction)))

    def is_correction_active(self) -> bool:
        """The truncated IS correction runs when asked, or by default with the vLLM sampler."""
        cfg = self.grpo
        return cfg.is_correction if cfg.is_correction is not None else cfg.engine == "vllm"

    def _executor(self, sample: RolloutSample) -> ClipCropExecutor:
        return row_executor(sample, self.view, self.data_root, self.media)

    @contextlib.contextmanager
    def _generation_model(self) -> Iterator[None]:
        """Make the unwrapped policy generate-ready: ZeRO-3 gathers it whole for the rollouts (TRL's default),
        FSDP gathers the root's own parameters (its wrapped layers gather themselves, in lockstep)."""
        if self.dist.fsdp:
            from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

            with FSDP.summon_full_params(self.model, recurse=False, writeback=False):
                yield
        else:
            with self.dist.gathered(list(self.accelerator.unwrap_model(self.model).parameters())):
                yield

    def generate_batch(self, batch_index: int) -> RolloutBatch:
        acc, cfg = self.accelerator, self.grpo
        rows = self.prompt_rows(batch_index)
        samples = group_samples(rows, cfg.num_generations, self.data_root)
        policy = acc.unwrap_model(self.model)
        if self.engine is None:
            self.engine = self.engine_factory(policy, self.processor)
        own_weights = hasattr(self.engine, "update_weights")  # vLLM holds its own copy: push the new weights
        if own_weights:
            self.engine.update_weights(policy, self.dist, self.model)
        lockstep = self.dist.any if self.dist.sharded and not own_weights else None
        if hasattr(self.engine, "lockstep"):
            self.engine.lockstep = lockstep
        with contextlib.nullcontext() if own_weights else self._generation_model():
            policy.eval()
            with acc.autocast():
                rollouts = run_rollouts(self.engine, samples, self._executor, self.rollout_config, sync=lockstep)
        group_ids = [s.meta["group"] for s in samples]
        answers = [s.answers for s in samples]
        rewards, components = score_rollouts(cfg.rewards, rollouts, samples, self.feature_encoder, self.feature_needs)
        advantages = group_advantages(rewards, cfg.num_generations, cfg.advantage_epsilon, cfg.scale_rewards)
        zero = zero_signal_groups(rewards, cfg.num_generations)
        keep = [not (cfg.filter_zero_advantage and bool(zero[g])) for g in group_ids]
        metrics = rollout_metrics(rollouts, rewards, components, answers, int(zero.sum()), len(rows))
        batch = RolloutBatch(rollouts, rewards, components, advantages.tolist(), keep, metrics)
        self._fixed_logprobs(batch)
        return batch

    def _passes(self, batch: RolloutBatch) -> list[list[int] | None]:
        """This rank's passes over the kept rollouts, padded with zero-weight passes (None) to the largest count
        of any rank: a pass is a collective for DDP/FSDP/DeepSpeed, so no rank may skip one."""
        kept = [i for i, k in enumerate(batch.keep) if k]
        size = self.grpo.micro_batch_size
        passes: list[list[int] | None] = [kept[j:j + size] for j in range(0, len(kept), size)]
        count = int(self.dist.max(len(passes))) if self.dist.world > 1 else len(passes)
        return passes + [None] * (count - len(passes))

    def _inputs(self, batch: RolloutBatch, indices: list[int] | None) -> tuple[dict[str, Any], Any, float]:
        """Model inputs, loss mask and weight of a pass (a padding pass reuses rollout 0 with weight 0)."""
        rollouts = [batch.rollouts[i] for i in (indices or [0])]
        inputs, mask = batch_inputs([(r.input_ids, r.loss_mask, r.encoded) for r in rollouts], self.processor)
        return to_device(inputs, self.accelerator.device), mask.to(self.accelerator.device), float(indices is not None)

    def _fixed_logprobs(self, batch: RolloutBatch) -> None:
        """Per pass, once per rollout batch: the reference's log-probs (β > 0); the old policy's when μ > 1 or the
        IS correction needs them; the truncated IS weights from the sampler's own log-probs (and their stats)."""
        import torch

        use_is = self.is_correction_active() and all(r.sampler_logprobs is not None for r in batch.rollouts)
        need_old = self.grpo.num_iterations > 1 or use_is
        if not need_old and self.ref_model is None:
            return
        weight_sum = tokens = capped = 0.0
        with torch.no_grad(), self.accelerator.autocast():
            for indices in self._passes(batch):
                inputs, mask, _ = self._inputs(batch, indices)
                key = indices[0] if indices else -1
                if need_old:
                    batch.old_logp[key] = old = token_logprobs(self.model, inputs, self.grpo.temperature)
                    if use_is and indices:
                        sampler = self._sampler_logprobs(batch, indices, old.shape[1]).to(old.device)
                        batch.is_weight[key] = weights = truncated_is_weights(old, sampler, self.grpo.is_cap)
                        generated = mask[:, 1:] > 0
                        weight_sum += float(weights[generated].sum())
                        tokens += float(generated.sum())
                        capped += float((weights[generated] >= self.grpo.is_cap).sum())
                if self.ref_model is not None:
                    batch.ref_logp[key] = token_logprobs(self.ref_model, inputs, self.grpo.temperature)
        if use_is:  # over every rank's trained tokens (the same keys on all ranks: metrics are all-reduced)
            all_tokens = self.dist.sum(tokens)
            if all_tokens:
                batch.metrics.update(is_weight_mean=self.dist.sum(weight_sum) / all_tokens,
                                     is_capped_fraction=self.dist.sum(capped) / all_tokens)

    @staticmethod
    def _sampler_logprobs(batch: RolloutBatch, indices: list[int], width: int) -> Any:
        """The sampler's log-probs of a pass's rollouts, left-padded like the inputs, shifted to predictions."""
        import torch

        out = torch.zeros((len(indices), width), dtype=torch.float32)
        for row, i in enumerate(indices):
            values = torch.tensor(batch.rollouts[i].sampler_logprobs[1:], dtype=torch.float32)
            out[row, width - len(values):] = values
        return out

    # -- optimisation --------------------------------------------------------------------------------------------
    def training_step(self, step: int) -> dict[str, float]:
        import torch

        acc, cfg = self.accelerator, self.grpo
        if step % cfg.num_iterations == 0 or self.batch is None:
            self.batch = self.generate_batch(step // cfg.num_iterations)
        batch = self.batch
        self.model.train()
        passes = self._passes(batch)
        real = [p for p in passes if p is not None]
        tokens = sum(sum(batch.rollouts[i].loss_mask[1:]) for m in real for i in m)
        rollouts = sum(len(m) for m in real)
        normalizer = self.normalizer(tokens if cfg.loss_type == "token" else rollouts)
        totals = {"loss": 0.0, "tokens": 0.0, "clipped_tokens": 0.0, "kl_sum": 0.0}
        for k, indices in enumerate(passes):
            inputs, mask, weight = self._inputs(batch, indices)
            key = indices[0] if indices else -1
            with self.micro_step(k, len(passes)), acc.autocast():
                logp = token_logprobs(self.model, inputs, cfg.temperature)
                old = batch.old_logp.get(key, logp.detach())
                advantages = torch.tensor([batch.advantages[i] for i in (indices or [0])], device=logp.device)
                loss, stats = clipped_objective(
                    logp, old, advantages, mask[:, 1:] * weight, epsilon=cfg.epsilon, epsilon_high=cfg.epsilon_high,
                    beta=cfg.beta, ref_logp=batch.ref_logp.get(key), loss_type=cfg.loss_type, normalizer=normalizer,
                    is_weight=batch.is_weight.get(key))
                self.backward(loss)
            totals["loss"] += float(loss.detach())
            for name in ("tokens", "clipped_tokens", "kl_sum"):
                totals[name] += float(stats[name])
        metrics = dict(batch.metrics)
        # Pass losses are scaled by the world size (gradients are averaged over ranks): their mean is the loss.
        metrics.update(loss=totals["loss"], trained_rollouts=float(rollouts))
        metrics = self.mean_across_processes(metrics)
        all_tokens = max(self.dist.sum(totals["tokens"]), 1.0)  # token means over every rank's tokens
        metrics.update(kl=self.dist.sum(totals["kl_sum"]) / all_tokens,
                       clip_fraction=self.dist.sum(totals["clipped_tokens"]) / all_tokens)
        return metrics
