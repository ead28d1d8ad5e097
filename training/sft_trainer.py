"""Supervised fine-tuning on CoT shards (DRP-SFT, CRP-SFT), and the stage machinery GRPO reuses.

Why the chat is re-rendered here instead of stored as tokens: shards keep media as references, so every
observation is re-executed on the video with the shared ``ClipCropExecutor`` (or decoded from embedded JPEG
bytes) and the conversation goes through ``videor4.contracts.chat.encode_chat`` — the same rendering the rollout
loop and evaluation use. The loss is next-token NLL on assistant tokens only (their text and closing
``<|im_end|>``); system, question, frames and tool observations are context.

:class:`StageTrainer` is what both trainers share: accelerate preparation (device placement, mixed precision,
DDP/FSDP/DeepSpeed), AdamW + schedule, resumable checkpoints (weights, optimizer, scheduler, RNG states, step —
the data position is a pure function of the seed and the step), ``metrics.jsonl`` + TensorBoard (+ W&B) logging
and the final ``save_pretrained`` export.

Batches: examples are shuffled per epoch, sorted by length within windows of ``bucket_window`` examples and cut
into micro-batches (less padding), and micro-batches are shuffled within their window. A step's loss is the
token mean over all its micro-batches, so ``gradient_accumulation_steps`` changes memory, not the objective.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from tqdm import tqdm

from videor4.contracts.atomic import write_json_atomic, write_text_atomic
from videor4.contracts.chat import EncodedChat, encode_chat
from videor4.contracts.errors import UserError
from videor4.contracts.executor import ClipCropExecutor, OpsConfig
from videor4.contracts.media import MediaConfig, open_video
from videor4.contracts.shard_codec import shard_messages_to_chat
from videor4.contracts.shard_io import read_stage
from videor4.contracts.shard_schema import CoTRow, ShardRow
from videor4.contracts.view import PromptConfig, display_size, fit_image
from videor4.training.rollout import PromptState, collate
from videor4.training.sft_config import OptimConfig, SFTConfig

CHECKPOINTS = "checkpoints"
FINAL = "final"
TRAINER_STATE = "trainer_state.json"
METRICS = "metrics.jsonl"


# --- models and accelerate ----------------------------------------------------------------------------------
def make_accelerator(mixed_precision: str = "auto") -> Any:
    """One Accelerator per process (accelerate keeps global state); 'auto' = bf16 on capable CUDA, else fp32."""
    import torch
    from accelerate import Accelerator

    if mixed_precision == "auto":
        mixed_precision = "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "no"
    # The schedule is computed in optimizer steps, so the scheduler must step once per optimizer step.
    return Accelerator(mixed_precision=mixed_precision, step_scheduler_with_optimizer=False)


def load_policy(model_dir: str | Path) -> tuple[Any, Any]:
    """Model (fp32 master weights; autocast gives bf16 compute) and processor from a local directory."""
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    path = Path(model_dir)
    if not (path / "config.json").is_file():
        raise UserError(f"model directory {path} has no config.json (expected a save_pretrained checkpoint)")
    model = AutoModelForImageTextToText.from_pretrained(path, dtype=torch.float32)
    return model, AutoProcessor.from_pretrained(path)


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


# --- logging ------------------------------------------------------------------------------------------------
class MetricsLogger:
    """``metrics.jsonl`` (one JSON object per logged step), TensorBoard, and W&B when installed and asked.

    On resume the JSONL is cut back to the resumed step and TensorBoard purges later events, so a resumed
    stage's logs read like an uninterrupted run's.
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
                self.wandb = wandb.init(project="videor4", name=run_name, config=config, resume="allow")

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


def read_metrics(stage_dir: str | Path) -> list[dict[str, Any]]:
    path = Path(stage_dir) / METRICS
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


# --- the shared stage loop ----------------------------------------------------------------------------------
class StageTrainer:
    """Optimizer-step loop with resumable checkpoints; subclasses implement :meth:`training_step`.

    Layout of ``output_dir``: ``checkpoints/step-NNNNNN/`` (accelerate state + ``trainer_state.json``),
    ``final/`` (``save_pretrained`` model + processor), ``metrics.jsonl``, ``tb/``.
    """

    def __init__(self, model: Any, processor: Any, config: OptimConfig, output_dir: str | Path,
                 accelerator: Any = None, name: str = "stage"):
        import torch
        from accelerate.utils import set_seed
        from transformers import get_scheduler

        self.config, self.processor, self.name = config, processor, name
        self.output_dir = Path(output_dir)
        self.accelerator = accelerator or make_accelerator()
        set_seed(config.seed)
        if config.gradient_checkpointing:
            model.gradient_checkpointing_enable()
            model.config.use_cache = False
        self.total_steps = self.compute_total_steps()
        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=config.learning_rate, betas=config.adam_betas,
                                      weight_decay=config.weight_decay)
        scheduler = get_scheduler(config.lr_scheduler, optimizer,
                                  num_warmup_steps=round(config.warmup_ratio * self.total_steps),
                                  num_training_steps=self.total_steps)
        self.model, self.optimizer, self.scheduler = self.accelerator.prepare(model, optimizer, scheduler)
        self.step = 0

    # -- subclass hooks ------------------------------------------------------------------------------------------
    def compute_total_steps(self) -> int:
        raise NotImplementedError

    def training_step(self, step: int) -> dict[str, float]:
        """Forward + backward for optimizer step ``step`` (gradients accumulate); returns metrics to log."""
        raise NotImplementedError

    def samples_seen(self, step: int) -> int:
        """Data position after ``step`` optimizer steps (recorded in checkpoints for humans; order is seeded)."""
        raise NotImplementedError

    # -- loop ----------------------------------------------------------------------------------------------------
    def train(self, stop_after: int | None = None) -> Path | None:
        """Train to ``total_steps`` (resuming from the latest checkpoint if any) and export ``final/``.

        ``stop_after`` ends the run after that many optimizer steps with a checkpoint and no export, as if the job
        had been pre-empted (used to test and to split long stages into jobs). Returns ``final/`` or None.
        """
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
                self.optimizer.step()
                self.scheduler.step()
                self.optimizer.zero_grad(set_to_none=True)
                self.step += 1
                metrics.update(learning_rate=self.scheduler.get_last_lr()[0],
                               grad_norm=float(grad_norm) if grad_norm is not None else float("nan"),
                               step_seconds=time.perf_counter() - started)
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

        if self.accelerator.num_processes == 1 or not metrics:
            return metrics
        keys = sorted(metrics)
        values = torch.tensor([metrics[k] for k in keys], device=self.accelerator.device, dtype=torch.float64)
        return dict(zip(keys, self.accelerator.reduce(values, reduction="mean").tolist()))


# --- CoT data -----------------------------------------------------------------------------------------------
def load_rows(shards_dir: str | Path, stages: Sequence[str], limit: int | None = None,
              qc_exclude: Sequence[str] = ("human_reject", "pending")) -> list[ShardRow]:
    """Rows of the named stages, in shard order, without QC rejects, truncated to ``limit``."""
    shards_dir = Path(shards_dir)
    if not shards_dir.is_dir():
        raise UserError(f"shards directory not found: {shards_dir}")
    rows = [r for stage in stages for r in read_stage(shards_dir, stage) if r.qc.status not in qc_exclude]
    if not rows:
        raise UserError(f"{shards_dir}: no usable rows in stage(s) {', '.join(stages)}")
    return rows[:limit] if limit else rows


class CoTRenderer:
    """Turns a CoT row into model inputs: media re-executed from refs (or decoded from JPEG bytes), then the
    shared chat encoding. ``prompt`` and ``ops`` must be the configs the shards were synthesized with."""

    def __init__(self, processor: Any, data_root: str | Path | None, prompt: PromptConfig, ops: OpsConfig,
                 media: MediaConfig | None = None):
        self.processor, self.prompt, self.ops = processor, prompt, ops
        self.data_root = Path(data_root) if data_root is not None else None
        self.media = media or MediaConfig()

    def images(self, row: CoTRow) -> list[np.ndarray]:
        _, refs = shard_messages_to_chat(row.messages)
        media = [m for message in row.messages for m in message.images]
        if all(m.jpeg for m in media):
            raw = [cv2.cvtColor(cv2.imdecode(np.frombuffer(m.jpeg, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
                   for m in media]
        else:
            if self.data_root is None:
                raise UserError(f"{row.sample_id}: shard media are references; give the data root (--data-root)")
            with open_video(self.data_root / row.video.path, config=self.media, video_id=row.video_id) as reader:
                executor = ClipCropExecutor(reader, row.initial_frames, self.ops,
                                            display_size=lambda ref, size: display_size(self.prompt, ref, size))
                raw = executor.render_many(refs)
        return [fit_image(self.prompt, ref, image) for ref, image in zip(refs, raw)]

    def encode(self, row: CoTRow) -> EncodedChat:
        chat, _ = shard_messages_to_chat(row.messages)
        return encode_chat(self.processor, chat, self.images(row))


class BucketedBatches:
    """Deterministic micro-batch ``m`` of the stream: a pure function of (seed, m), so resuming needs only ``m``.

    Per epoch the examples are permuted; each window of ``window`` examples is encoded, sorted by token length,
    cut into micro-batches of ``batch_size``, and the micro-batches are permuted. One window is cached.
    Conversations longer than ``max_length`` are dropped from their micro-batch (counted in ``skipped``).
    """

    def __init__(self, n: int, encode: Callable[[int], EncodedChat], batch_size: int, window: int, seed: int,
                 max_length: int):
        self.n, self.encode, self.batch_size, self.seed, self.max_length = n, encode, batch_size, seed, max_length
        self.window = max(window, batch_size)
        sizes = [min(self.window, n - start) for start in range(0, n, self.window)]
        self.batches_per_window = [math.ceil(s / batch_size) for s in sizes]
        self.offsets = np.cumsum([0, *self.batches_per_window])
        self.per_epoch = int(self.offsets[-1])
        self._cache: tuple[tuple[int, int], list[list[EncodedChat]]] | None = None
        self.skipped = 0

    def __getitem__(self, m: int) -> list[EncodedChat]:
        epoch, j = divmod(m, self.per_epoch)
        w = int(np.searchsorted(self.offsets, j, side="right") - 1)
        if self._cache is None or self._cache[0] != (epoch, w):
            perm = np.random.default_rng([self.seed, epoch]).permutation(self.n)
            members = perm[w * self.window:(w + 1) * self.window]
            encoded = {int(i): self.encode(int(i)) for i in members}
            order = sorted(encoded, key=lambda i: (len(encoded[i].input_ids), i))
            chunks = [order[k:k + self.batch_size] for k in range(0, len(order), self.batch_size)]
            shuffled = np.random.default_rng([self.seed, epoch, w]).permutation(len(chunks))
            batches = []
            for c in shuffled:
                kept = [encoded[i] for i in chunks[c] if len(encoded[i].input_ids) <= self.max_length]
                self.skipped += len(chunks[c]) - len(kept)
                batches.append(kept)
            self._cache = ((epoch, w), batches)
        return self._cache[1][j - int(self.offsets[w])]


class SFTTrainer(StageTrainer):
    """Next-token loss on assistant tokens of CoT conversations."""

    def __init__(self, model: Any, processor: Any, rows: Sequence[CoTRow], config: SFTConfig,
                 output_dir: str | Path, *, data_root: str | Path | None, prompt: PromptConfig, ops: OpsConfig,
                 accelerator: Any = None, name: str = "sft"):
        self.rows = list(rows)
        if not self.rows:
            raise UserError(f"stage {name}: no CoT rows to train on")
        self.sft_config = config
        self.renderer = CoTRenderer(processor, data_root, prompt, ops)
        self.batches = BucketedBatches(len(self.rows), lambda i: self.renderer.encode(self.rows[i]),
                                       config.per_device_batch_size, config.bucket_window, config.seed,
                                       config.max_length)
        self.accelerator = accelerator or make_accelerator()
        super().__init__(model, processor, config, output_dir, self.accelerator, name)

    def micro_per_step(self) -> int:
        return self.sft_config.gradient_accumulation_steps * self.accelerator.num_processes

    def compute_total_steps(self) -> int:
        cfg = self.sft_config
        if cfg.max_steps:
            return cfg.max_steps
        return max(1, math.ceil(cfg.num_epochs * self.batches.per_epoch / self.micro_per_step()))

    def samples_seen(self, step: int) -> int:
        return step * self.micro_per_step() * self.sft_config.per_device_batch_size

    def training_step(self, step: int) -> dict[str, float]:
        acc, world = self.accelerator, self.accelerator.num_processes
        base = step * self.micro_per_step()
        micro = [self.batches[base + k * world + acc.process_index]
                 for k in range(self.sft_config.gradient_accumulation_steps)]
        micro = [b for b in micro if b]
        tokens = sum(sum(e.loss_mask[1:]) for b in micro for e in b)
        loss_sum = 0.0
        for k, examples in enumerate(micro):
            batch, mask = batch_inputs([(e.input_ids, e.loss_mask, e.images) for e in examples], self.processor)
            batch, mask = to_device(batch, acc.device), mask.to(acc.device)
            sync = contextlib.nullcontext() if k == len(micro) - 1 else acc.no_sync(self.model)
            with sync, acc.autocast():
                logp = token_logprobs(self.model, batch)
                nll = -(logp * mask[:, 1:]).sum()
                acc.backward(nll / max(tokens, 1))
            loss_sum += float(nll.detach())
        return self.mean_across_processes({
            "loss": loss_sum / max(tokens, 1), "tokens": float(tokens), "skipped_too_long": float(self.batches.skipped),
        })
