"""Supervised fine-tuning on CoT shards (DRP-SFT, CRP-SFT).

Why the chat is re-rendered here instead of stored as tokens: shards keep media as references, so every
observation is re-executed on the video with the shared ``ClipCropExecutor`` (or decoded from embedded JPEG
bytes) and the conversation goes through ``videor4.contracts.chat.encode_chat`` — the same rendering the rollout
loop and evaluation use. The loss is next-token NLL on assistant tokens only (their text and closing
``<|im_end|>``); system, question, frames and tool observations are context.

The stage machinery (accelerate, the optimizer-step loop, checkpoints, logs, export) is
:class:`videor4.training.stage_trainer.StageTrainer`, shared with GRPO.

Batches: examples are shuffled per epoch, sorted by length within windows of ``bucket_window`` examples and cut
into micro-batches (less padding), and micro-batches are shuffled within their window. A step's loss is the
token mean over all its micro-batches on all ranks, so ``gradient_accumulation_steps`` and the number of GPUs
change memory and speed, not the objective. With ``replay`` set, each step also trains on a few of the base's
own pretraining questions (:class:`videor4.training.micro_base.ReplayQuestions`), so SFT keeps what it could do;
with ``first_turns_per_step``, on the first turns of a few of its own rows (:func:`first_turn`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from videor4.contracts.chat import EncodedChat, encode_chat
from videor4.contracts.dataset import media_path
from videor4.contracts.errors import UserError
from videor4.contracts.executor import OpsConfig
from videor4.contracts.media import MediaConfig, decode_jpeg, open_video
from videor4.contracts.shard_codec import shard_messages_to_chat
from videor4.contracts.shard_schema import CoTRow
from videor4.contracts.view import PromptConfig, ShardView, fit_image
from videor4.training.sft_config import SFTConfig
from videor4.training.stage_trainer import StageTrainer, batch_inputs, make_accelerator, to_device, token_logprobs


# --- CoT data -----------------------------------------------------------------------------------------------
class CoTRenderer:
    """Turns a CoT row into model inputs: media re-executed from refs (or decoded from JPEG bytes), then the
    shared chat encoding. ``prompt`` and ``ops`` must be the configs the shards were synthesized with.
    ``decision_weight`` ≠ 1 marks the decision tokens in the mask (``contracts.chat.tokenize_segments``): the
    gold-view probe finds them that way. SFT trains with 1; weighting them up in the loss was measured and did not
    help (docs/learning_benchmark.md)."""

    def __init__(self, processor: Any, data_root: str | Path | None, prompt: PromptConfig, ops: OpsConfig,
                 media: MediaConfig | None = None, decision_weight: float = 1.0):
        self.processor, self.prompt, self.ops, self.decision_weight = processor, prompt, ops, decision_weight
        self.data_root = Path(data_root) if data_root is not None else None
        self.media = media or MediaConfig()

    def images(self, row: CoTRow) -> list[np.ndarray]:
        _, refs = shard_messages_to_chat(row.messages)
        media = [m for message in row.messages for m in message.images]
        if all(m.jpeg for m in media):
            raw = [decode_jpeg(m.jpeg) for m in media]
        else:
            if self.data_root is None:
                raise UserError(f"{row.sample_id}: shard media are references; give the data root (--data-root)")
            with open_video(media_path(self.data_root, row.video.path), config=self.media,
                            video_id=row.video_id) as reader:
                raw = ShardView(prompt=self.prompt, ops=self.ops).executor(reader, row.initial_frames).render_many(refs)
        return [fit_image(self.prompt, ref, image) for ref, image in zip(refs, raw)]

    def encode(self, row: CoTRow) -> EncodedChat:
        chat, _ = shard_messages_to_chat(row.messages)
        return encode_chat(self.processor, chat, self.images(row), decision_weight=self.decision_weight)


def first_turn(row: CoTRow) -> CoTRow:
    """``row`` cut after its first assistant turn: the question, the initial frames and the first decision."""
    k = next((i for i, m in enumerate(row.messages) if m.role == "assistant"), None)
    if k is None:
        raise UserError(f"{row.sample_id}: a CoT row without an assistant turn")
    return row.model_copy(update={"messages": row.messages[: k + 1]})


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
        self._filler: EncodedChat | None = None
        self.replay = None
        if config.replay is not None:
            from videor4.training.micro_base import ReplayQuestions

            r = config.replay
            self.replay = ReplayQuestions(r.questions, processor, per_step=r.per_step, seed=config.seed,
                                          held_out=r.held_out, held_out_seed=r.held_out_seed, data_root=data_root,
                                          copy_per_step=r.copy_per_step)
        self.accelerator = accelerator or make_accelerator()
        super().__init__(model, processor, config, output_dir, self.accelerator, name)

    def micro_batch_size(self) -> int:
        return self.sft_config.per_device_batch_size

    def micro_batches_per_step(self) -> int:
        return self.sft_config.gradient_accumulation_steps

    def micro_per_step(self) -> int:
        """Micro-batches of the data stream one optimizer step consumes on all ranks together."""
        return self.sft_config.gradient_accumulation_steps * self.accelerator.num_processes

    def compute_total_steps(self) -> int:
        cfg = self.sft_config
        if cfg.max_steps:
            return cfg.max_steps
        return max(1, math.ceil(cfg.num_epochs * self.batches.per_epoch / self.micro_per_step()))

    def samples_seen(self, step: int) -> int:
        return step * self.micro_per_step() * self.sft_config.per_device_batch_size

    def filler(self) -> EncodedChat:
        """A conversation for a zero-weight pass (every example of a pass was too long): the shortest of the first
        window that fits, so the pass exercises the same modules (vision included) as a real one."""
        if self._filler is None:
            candidates = [self.renderer.encode(row) for row in self.rows[: self.sft_config.bucket_window]]
            fitting = [c for c in candidates if len(c.input_ids) <= self.sft_config.max_length]
            if not fitting:
                raise UserError(f"stage {self.name}: max_length {self.sft_config.max_length} is shorter than every "
                                "conversation; raise sft.max_length")
            self._filler = min(fitting, key=lambda c: len(c.input_ids))
        return self._filler

    def training_step(self, step: int) -> dict[str, float]:
        acc, world = self.accelerator, self.accelerator.num_processes
        base = step * self.micro_per_step()
        passes = self.micro_batches_per_step()
        micro = [self.batches[base + k * world + acc.process_index] for k in range(passes)]
        tokens = sum(sum(e.loss_mask[1:]) for b in micro for e in b)
        norm = self.normalizer(tokens)
        loss_sum = replay_sum = copy_sum = first_sum = 0.0
        for k, examples in enumerate(micro):
            # Every pass runs on every rank (collectives); a pass whose examples were all too long is a
            # zero-weight pass over a short conversation.
            weight = 1.0 if examples else 0.0
            examples = examples or [self.filler()]
            batch, mask = batch_inputs([(e.input_ids, e.loss_mask, e.images) for e in examples], self.processor)
            batch, mask = to_device(batch, acc.device), mask.to(acc.device)
            with self.micro_step(k, passes), acc.autocast():
                logp = token_logprobs(self.model, batch)
                nll = -(logp * mask[:, 1:]).sum() * weight
                loss = nll / norm
                # Replay and first turns are added to the step's last pass, not passes of their own: the number
                # of backward passes (and so DDP's sync and DeepSpeed's accumulation boundary) stays what the
                # data stream implies.
                if self.replay is not None and k == passes - 1:
                    replay, copy = self.replay_loss(step)
                    loss = loss + self.sft_config.replay.weight * (replay + copy)
                    replay_sum, copy_sum = float(replay.detach()), float(copy.detach())
                if self.sft_config.first_turns_per_step and k == passes - 1:
                    first = self.first_turn_loss(step)
                    loss = loss + first
                    first_sum = float(first.detach())
                self.backward(loss)
            loss_sum += float(nll.detach())
        metrics = {"loss": self.dist.sum(loss_sum) / max(self.dist.sum(tokens), 1.0),
                   "tokens": self.dist.sum(tokens), "skipped_too_long": self.dist.sum(self.batches.skipped)}
        if self.sft_config.first_turns_per_step:
            metrics["first_turn_loss"] = self.dist.sum(first_sum) / self.dist.world
        if self.replay is not None:
            metrics["replay_loss"] = self.dist.sum(replay_sum) / self.dist.world
            if self.replay.copies is not None:
                metrics["replay_copy_loss"] = self.dist.sum(copy_sum) / self.dist.world
        return metrics

    def first_turn_draw(self, step: int, rank: int) -> list[int]:
        """Rows whose first turns step ``step`` adds on ``rank``: a pure function of (seed, step, rank), so a
        resumed run draws the same ones and ranks draw different ones."""
        rng = np.random.default_rng([self.sft_config.seed, 3, step, rank])
        n = min(self.sft_config.first_turns_per_step, len(self.rows))
        return sorted(int(i) for i in rng.choice(len(self.rows), n, replace=False))

    def first_turn_loss(self, step: int) -> Any:
        """Token-mean NLL of this step's first turns on this rank (:func:`first_turn`). Why: the first turn is
        the decision of where to look, one turn in a trajectory's several; on the micro benchmark whole-trajectory
        SFT leaves the first box at its prior (the same digits whatever position the reasoning names), and with 8
        first turns a step it follows the named position (docs/learning_benchmark.md)."""
        rank = self.accelerator.process_index
        logp, mask = self.extra_logprobs([self.renderer.encode(first_turn(self.rows[i]))
                                          for i in self.first_turn_draw(step, rank)])
        return -(logp * mask).sum() / mask.sum().clamp(min=1)

    def extra_logprobs(self, encoded: list[EncodedChat]) -> tuple[Any, Any]:
        """Next-token log-probabilities of conversations added to a step (replay, first turns) and their loss
        mask, both aligned to the predicted tokens, on this rank's device."""
        batch, mask = batch_inputs([(e.input_ids, e.loss_mask, e.images) for e in encoded], self.processor)
        batch, mask = to_device(batch, self.accelerator.device), mask.to(self.accelerator.device)
        return token_logprobs(self.model, batch), mask[:, 1:]

    def replay_loss(self, step: int) -> tuple[Any, Any]:
        """Mean answer NLL of this step's replayed pretraining questions on this rank (each answer weighs the
        same, as in pretraining; DDP's gradient mean makes it the mean over ranks), and the loss on the repeats
        of its copy sequences (0 when none are replayed)."""
        from videor4.training.micro_base import copy_loss, per_answer_loss

        rank, device = self.accelerator.process_index, self.accelerator.device
        replay = per_answer_loss(*self.extra_logprobs(self.replay.batch(step, rank)))
        copies = self.replay.copy_batch(step, rank)
        if copies is None:
            return replay, replay.new_zeros(())
        return replay, copy_loss(self.model, tuple(t.to(device) for t in copies))[0]
