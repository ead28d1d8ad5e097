"""What every training stage shares: accelerate set-up, the optimizer-step loop, checkpoints, logs, export.

Why this is careful about distribution (each point is a way a multi-GPU run goes wrong silently):

* **One Accelerator per stage.** accelerate registers every prepared model/optimizer on its Accelerator and
  ``save_state`` writes all of them; a shared Accelerator made a later stage's checkpoint hold the earlier stages'
  models, so a resume loaded the *previous* stage's weights. Each stage builds its own (:func:`make_accelerator`)
  and :meth:`StageTrainer.close` frees it with everything it holds.
* **One optimizer step per accumulation window, on every backend.** A step is ``micro_batches_per_step()``
  forward/backward passes on every rank — the same count on all ranks, padded with zero-weight passes when a
  rank has less work (filtered GRPO groups, over-long SFT examples), because DDP's gradient all-reduce, FSDP and
  ZeRO-3's parameter gathers are collectives that hang if one rank skips them. DDP syncs only on the last pass
  (``no_sync``); under DeepSpeed the gradient-accumulation boundary is set explicitly on that pass and the
  engine's own ``gradient_accumulation_steps``/micro batch are set from the stage config before ``prepare``
  (its ``backward`` otherwise steps the optimizer on every call and rescales the loss by its accumulation count).
* **Global normalisation.** A step's loss is a sum over its tokens divided by the *global* token count (all
  ranks, all passes), times the world size because data-parallel backends average gradients over ranks: two
  ranks give the same update as one rank with the doubled batch (tested on CPU with gloo).
* **Checkpoints are a pure function of the step.** Weights, optimizer, scheduler and RNG states (accelerate's
  ``save_state``) plus ``trainer_state.json``; the data order is a pure function of the seed and the step, so a
  killed stage resumes to the same weights as an uninterrupted one (tested end to end through ``videor4 train``).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from tqdm import tqdm

from videor4.contracts.atomic import write_json_atomic, write_text_atomic
from videor4.contracts.errors import UserError
from videor4.training.rollout import PromptState, collate
from videor4.training.sft_config import OptimConfig

CHECKPOINTS = "checkpoints"
FINAL = "final"
TRAINER_STATE = "trainer_state.json"
METRICS = "metrics.jsonl"
WANDB_RUN_ID = "wandb_run_id.txt"


# --- models and accelerate ----------------------------------------------------------------------------------
def make_accelerator(mixed_precision: str = "auto") -> Any:
    """A fresh Accelerator for one stage; 'auto' = bf16 on capable CUDA, else fp32.

    The launcher's settings (``accelerate launch --config_file …``: DDP, FSDP, DeepSpeed, CPU) come from the
    environment; the stage trainer fills in what depends on the stage (DeepSpeed micro batch and accumulation).
    """
    import torch
    from accelerate import Accelerator

    if mixed_precision == "auto":
        mixed_precision = "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "no"
    # The schedule is computed in optimizer steps, so the scheduler must step once per optimizer step. Without a
    # GPU, several processes (torchrun / accelerate launch) are a gloo CPU group only when accelerate is told so.
    return Accelerator(mixed_precision=mixed_precision, step_scheduler_with_optimizer=False, cpu=no_gpu())


def no_gpu() -> bool:
    """A plain CPU process group is wanted: no GPU, and no DeepSpeed/FSDP launch (those bring their own)."""
    import torch

    launched = any(os.environ.get(f"ACCELERATE_USE_{k}", "false").lower() == "true" for k in ("DEEPSPEED", "FSDP"))
    return not torch.cuda.is_available() and not launched


def load_policy(model_dir: str | Path) -> tuple[Any, Any]:
    """Model (fp32 master weights; autocast gives bf16 compute) and processor from a local directory."""
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    path = Path(model_dir)
    if not (path / "config.json").is_file():
        raise UserError(f"model directory {path} has no config.json (expected a save_pretrained checkpoint)")
    model = AutoModelForImageTextToText.from_pretrained(path, dtype=torch.float32)
    return model, AutoProcessor.from_pretrained(path)


def compute_dtype(accelerator: Any) -> Any:
    """The dtype the policy computes in (bf16/fp16 under mixed precision, else fp32): frozen models use it."""
    import torch

    return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(str(accelerator.mixed_precision), torch.float32)


def batch_inputs(
    sequences: Sequence[tuple[Sequence[int], Sequence[int], Any]], processor: Any
) -> tuple[dict[str, Any], Any]:
    """Left-padded model inputs (the rollout engine's own collate) and the matching (B, T) loss mask."""
    import torch

    tok = processor.tokenizer
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.convert_tokens_to_ids("<|endoftext|>")
    prompts = [PromptState(list(ids), [], encoded) for ids, _, encoded in sequences]
    batch = collate(prompts, pad, tok.convert_tokens_to_ids("<|image_pad|>"))
    width = batch["input_ids"].shape[1]
    mask = torch.zeros((len(sequences), width), dtype=torch.float32)
    for row, (_, m, _) in enumerate(sequences):
        mask[row, width - len(m):] = torch.tensor(m, dtype=torch.float32)
    return batch, mask


def token_logprobs(model: Any, batch: dict[str, Any], temperature: float = 1.0) -> Any:
    """``log p(x_t | x_<t)`` for t ≥ 1, shape (B, T − 1), computed in fp32 (logits / temperature)."""
    out = model(**batch, use_cache=False)
    logits = out.logits[:, :-1].float()
    if temperature != 1.0:
        logits = logits / temperature
    targets = batch["input_ids"][:, 1:]
    return logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1) - logits.logsumexp(dim=-1)


def to_device(batch: dict[str, Any], device: Any) -> dict[str, Any]:
    return {k: v.to(device) for k, v in batch.items()}


class Distributed:
    """The few collectives the trainers need, and what the launcher set up (a thin view of the Accelerator)."""

    def __init__(self, accelerator: Any):
        from accelerate.utils import DistributedType

        self.accelerator = accelerator
        self.world = accelerator.num_processes
        self.rank = accelerator.process_index
        kind = accelerator.distributed_type
        self.deepspeed = kind == DistributedType.DEEPSPEED
        self.fsdp = kind == DistributedType.FSDP
        plugin = accelerator.state.deepspeed_plugin if self.deepspeed else None
        self.zero_stage = int(plugin.zero_stage) if plugin is not None else 0
        # Parameters live in shards: every forward pass is a collective, so ranks must run the same passes.
        self.sharded = self.fsdp or self.zero_stage == 3

    def _reduce(self, value: float, op: str) -> float:
        if self.world == 1:
            return float(value)
        import torch

        tensor = torch.tensor([float(value)], dtype=torch.float64, device=self.accelerator.device)
        return float(self.accelerator.reduce(tensor, reduction=op).item())

    def sum(self, value: float) -> float:
        return self._reduce(value, "sum")

    def max(self, value: float) -> float:
        if self.world == 1:
            return float(value)
        import torch

        tensor = torch.tensor([float(value)], dtype=torch.float64, device=self.accelerator.device)
        return float(self.accelerator.gather(tensor).max().item())

    def any(self, flag: bool) -> bool:
        return self.max(1.0 if flag else 0.0) > 0

    @contextlib.contextmanager
    def gathered(self, params: Sequence[Any]) -> Iterator[None]:
        """Full parameters inside the block under ZeRO-3 (no-op otherwise): for pushing weights to vLLM."""
        if self.deepspeed and self.zero_stage == 3:
            import deepspeed

            with deepspeed.zero.GatheredParameters(list(params)):
                yield
        else:
            yield


# --- logging ------------------------------------------------------------------------------------------------
class MetricsLogger:
    """``metrics.jsonl`` (one JSON object per logged step), TensorBoard, and W&B when installed and asked.

    On resume the JSONL is cut back to the resumed step, TensorBoard purges later events and W&B continues the
    same run (its id is kept in the stage directory), so a resumed stage's logs read like an uninterrupted run's.
    """

    def __init__(self, stage_dir: Path, report_to: Sequence[str], resume_step: int, enabled: bool, run_name: str,
                 config: dict[str, Any]):
        self.enabled = enabled
        self.path = stage_dir / METRICS
        self.tb = self.wandb = None
        if not enabled:
            return
        stage_dir.mkdir(parents=True, exist_ok=True)
        if self.path.is_file():
            kept = [line for line in self.path.read_text(encoding="utf-8").splitlines()
                    if line.strip() and json.loads(line).get("step", 0) <= resume_step]
            write_text_atomic(self.path, "".join(line + "\n" for line in kept))
        if "tensorboard" in report_to:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(stage_dir / "tb"), purge_step=resume_step + 1 if resume_step else None)
        if "wandb" in report_to:
            try:
                import wandb
            except ImportError:
                warnings.warn("report_to lists wandb but it is not installed; logging to metrics.jsonl/TensorBoard only")
            else:
                id_file = stage_dir / WANDB_RUN_ID
                run_id = id_file.read_text(encoding="utf-8").strip() if id_file.is_file() else wandb.util.generate_id()
                write_text_atomic(id_file, run_id)
                self.wandb = wandb.init(project="videor4", name=run_name, id=run_id, config=config, resume="allow")

    def log(self, step: int, metrics: dict[str, float]) -> None:
        if not self.enabled:
            return
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps({"step": step, **metrics}, sort_keys=True) + "\n")
        if self.tb is not None:
            for key, value in metrics.items():
                self.tb.add_scalar(key, value, step)
            self.tb.flush()
        if self.wandb is not None:
            self.wandb.log(metrics, step=step)

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()
        if self.wandb is not None:
            self.wandb.finish()


def vision_encoder(model: Any) -> Any:
    """The vision tower of a Qwen2.5-VL model without its merger: the patch embedding and the transformer blocks
    (``model.model.visual`` in transformers ≥ 4.52, ``model.visual`` before). The merger that projects patches into
    the language model stays trainable when the encoder is frozen, as in LLaVA-style fine-tuning."""
    import torch

    visual = getattr(getattr(model, "model", None), "visual", None)
    visual = visual if visual is not None else getattr(model, "visual", None)
    if visual is None:
        raise UserError(f"freeze_vision: {type(model).__name__} has no vision tower (expected a Qwen2.5-VL model)")
    return torch.nn.ModuleList([m for name, m in visual.named_children() if name != "merger"])


def read_metrics(stage_dir: str | Path) -> list[dict[str, Any]]:
    path = Path(stage_dir) / METRICS
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


# --- the shared stage loop ----------------------------------------------------------------------------------
class StageTrainer:
    """Optimizer-step loop with resumable checkpoints; subclasses implement :meth:`training_step`.

    A subclass says how big its passes are (:meth:`micro_batch_size`) and how many make a step on each rank
    (:meth:`micro_batches_per_step`), runs exactly that many :meth:`backward` calls per step, and normalises its
    losses with :meth:`normalizer`. Layout of ``output_dir``: ``checkpoints/step-NNNNNN/`` (accelerate state +
    ``trainer_state.json``), ``final/`` (``save_pretrained`` model + processor), ``metrics.jsonl``, ``tb/``.
    """

    def __init__(self, model: Any, processor: Any, config: OptimConfig, output_dir: str | Path,
                 accelerator: Any = None, name: str = "stage"):
        import torch
        from accelerate.utils import set_seed
        from transformers import get_scheduler

        self.config, self.processor, self.name = config, processor, name
        self.output_dir = Path(output_dir)
        self.accelerator = accelerator or make_accelerator()
        self.dist = Distributed(self.accelerator)
        set_seed(config.seed)
        if config.gradient_checkpointing:
            model.gradient_checkpointing_enable()
            model.config.use_cache = False
        self.total_steps = self.compute_total_steps()
        self._configure_deepspeed()
        if config.freeze_vision:
            vision_encoder(model).requires_grad_(False)
        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=config.learning_rate, betas=config.adam_betas,
                                      weight_decay=config.weight_decay)
        scheduler = get_scheduler(config.lr_scheduler, optimizer,
                                  num_warmup_steps=round(config.warmup_ratio * self.total_steps),
                                  num_training_steps=self.total_steps)
        self.model, self.optimizer, self.scheduler = self.accelerator.prepare(model, optimizer, scheduler)
        self.step = 0

    def _configure_deepspeed(self) -> None:
        """Stage-specific DeepSpeed values, set before ``prepare`` (the launcher's config leaves them to us).

        accelerate cannot infer ``train_micro_batch_size_per_gpu`` without a DataLoader (``auto`` raises), and the
        engine's accumulation count must equal the passes per step or it steps the optimizer mid-step.
        """
        if not self.dist.deepspeed:
            return
        ds = self.accelerator.state.deepspeed_plugin.deepspeed_config
        micro, passes = self.micro_batch_size(), self.micro_batches_per_step()
        ds["train_micro_batch_size_per_gpu"] = micro
        ds["gradient_accumulation_steps"] = passes
        ds["train_batch_size"] = micro * passes * self.dist.world
        ds["gradient_clipping"] = self.config.max_grad_norm
        self.accelerator.gradient_accumulation_steps = passes

    # -- subclass hooks ------------------------------------------------------------------------------------------
    def compute_total_steps(self) -> int:
        raise NotImplementedError

    def micro_batch_size(self) -> int:
        """Sequences per forward/backward pass on one rank."""
        raise NotImplementedError

    def micro_batches_per_step(self) -> int:
        """Forward/backward passes per optimizer step on each rank (equal on all ranks)."""
        raise NotImplementedError

    def training_step(self, step: int) -> dict[str, float]:
        """Forward + backward for optimizer step ``step`` (gradients accumulate); returns metrics to log."""
        raise NotImplementedError

    def samples_seen(self, step: int) -> int:
        """Data position after ``step`` optimizer steps (recorded in checkpoints for humans; order is seeded)."""
        raise NotImplementedError

    # -- helpers for training_step -------------------------------------------------------------------------------
    def normalizer(self, local_count: float) -> float:
        """Divide a step's summed loss by this: the global count of what it sums over, over the world size
        (data-parallel backends average gradients across ranks)."""
        return max(self.dist.sum(local_count), 1.0) / self.dist.world

    @contextlib.contextmanager
    def micro_step(self, index: int, count: int) -> Iterator[None]:
        """Context of pass ``index`` of ``count``: gradients are synchronised (DDP) or the accumulation boundary
        is set (DeepSpeed) on the last pass only."""
        last = index == count - 1
        acc = self.accelerator
        if self.dist.deepspeed:
            acc.sync_gradients = last
            try:
                yield
            finally:
                acc.sync_gradients = True
        else:
            with contextlib.nullcontext() if last else acc.no_sync(self.model):
                yield

    def backward(self, loss: Any) -> None:
        """Backward of a pass whose loss is already normalised for the whole step (DeepSpeed must not rescale)."""
        if self.dist.deepspeed:
            self.accelerator.backward(loss, scale_wrt_gas=False)
        else:
            self.accelerator.backward(loss)

    # -- loop ----------------------------------------------------------------------------------------------------
    def train(self, stop_after: int | None = None) -> Path | None:
        """Train to ``total_steps`` (resuming from the latest checkpoint if any) and export ``final/``.

        ``stop_after`` ends the run after that many optimizer steps with a checkpoint and no export, as if the job
        had been pre-empted (used to test and to split long stages into jobs). Returns ``final/`` or None.
        """
        import torch

        acc = self.accelerator
        self.resume()
        logger = MetricsLogger(self.output_dir, self.config.report_to, self.step, acc.is_main_process, self.name,
                               self.config.model_dump(mode="json"))
        bar = tqdm(total=self.total_steps, initial=self.step, desc=self.name, unit="step",
                   disable=not acc.is_local_main_process)
        try:
            while self.step < self.total_steps:
                started = time.perf_counter()
                self.model.train()
                metrics = self.training_step(self.step)
                grad_norm = acc.clip_grad_norm_(self.model.parameters(), self.config.max_grad_norm)
                if self.dist.deepspeed:  # DeepSpeed clips inside its step and keeps the norm
                    grad_norm = self.model.get_global_grad_norm()
                self.optimizer.step()
                self.scheduler.step()
                self.optimizer.zero_grad(set_to_none=True)
                self.step += 1
                metrics.update(learning_rate=self.scheduler.get_last_lr()[0],
                               grad_norm=float(grad_norm) if grad_norm is not None else float("nan"),
                               step_seconds=time.perf_counter() - started)
                if torch.cuda.is_available():  # the peak of this process so far (scripts/gpu_check.sh reports it)
                    metrics["gpu_peak_gib"] = torch.cuda.max_memory_allocated() / 2**30
                if self.step % self.config.logging_steps == 0 or self.step == self.total_steps:
                    logger.log(self.step, metrics)
                bar.update(1)
                bar.set_postfix({k: f"{v:.4g}" for k, v in metrics.items() if k in ("loss", "reward")})
                stopping = stop_after is not None and self.step >= stop_after and self.step < self.total_steps
                if stopping or (self.step % self.config.save_steps == 0 and self.step < self.total_steps):
                    self.save_checkpoint()
                if stopping:
                    return None
        finally:
            bar.close()
            logger.close()
        return self.save_final(self.output_dir / FINAL)

    def close(self) -> None:
        """Release the stage's engines, optimizer states and prepared objects (the next stage starts clean)."""
        import gc

        import torch

        self.accelerator.free_memory()
        self.model = self.optimizer = self.scheduler = None
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    # -- checkpoints ---------------------------------------------------------------------------------------------
    def checkpoints(self) -> list[Path]:
        root = self.output_dir / CHECKPOINTS
        found = [p for p in root.glob("step-*") if (p / TRAINER_STATE).is_file()] if root.is_dir() else []
        return sorted(found, key=lambda p: int(p.name.split("-")[1]))

    def save_checkpoint(self) -> Path:
        """Accelerate state (weights, optimizer, scheduler, RNG) written to a temp dir, then renamed into place,
        so a crash mid-save never leaves a checkpoint that looks complete."""
        acc = self.accelerator
        root = self.output_dir / CHECKPOINTS
        final = root / f"step-{self.step:06d}"
        tmp = root / f".tmp-step-{self.step:06d}"
        if acc.is_main_process and tmp.exists():
            shutil.rmtree(tmp)
        acc.wait_for_everyone()
        acc.save_state(str(tmp))
        if acc.is_main_process:
            write_json_atomic(tmp / TRAINER_STATE, {
                "stage": self.name, "step": self.step, "total_steps": self.total_steps,
                "samples_seen": self.samples_seen(self.step), "config": self.config.model_dump(mode="json"),
            }, indent=2)
            if final.exists():
                shutil.rmtree(final)
            os.replace(tmp, final)
            for old in self.checkpoints()[: -self.config.save_total_limit]:
                shutil.rmtree(old)
        acc.wait_for_everyone()
        return final

    def resume(self) -> None:
        found = self.checkpoints()
        if not found:
            return
        latest = found[-1]
        state = json.loads((latest / TRAINER_STATE).read_text(encoding="utf-8"))
        if state["total_steps"] != self.total_steps:
            raise UserError(f"{latest}: checkpoint is from a stage of {state['total_steps']} steps, this one has "
                            f"{self.total_steps}; the recipe or data changed — use a new --output")
        self.accelerator.load_state(str(latest))
        self.step = int(state["step"])

    def save_final(self, path: Path) -> Path:
        """``save_pretrained`` of model and processor (what the next stage and ``videor4 eval run`` load)."""
        acc = self.accelerator
        acc.wait_for_everyone()
        state_dict = acc.get_state_dict(self.model)
        if acc.is_main_process:
            tmp = path.with_name(f".tmp-{path.name}")
            if tmp.exists():
                shutil.rmtree(tmp)
            acc.unwrap_model(self.model).save_pretrained(tmp, state_dict=state_dict)
            self.processor.save_pretrained(tmp)
            if path.exists():
                shutil.rmtree(path)
            os.replace(tmp, path)
        acc.wait_for_everyone()
        return path

    def mean_across_processes(self, metrics: dict[str, float]) -> dict[str, float]:
        import torch

        if self.dist.world == 1 or not metrics:
            return metrics
        keys = sorted(metrics)
        values = torch.tensor([metrics[k] for k in keys], device=self.accelerator.device, dtype=torch.float64)
        return dict(zip(keys, self.accelerator.reduce(values, reduction="mean").tolist()))
