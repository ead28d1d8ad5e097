"""Multi-turn rumination rollouts: generate, execute clip/crop, append observations, repeat.

The loop is engine-agnostic: a :class:`RolloutEngine` turns a batch of :class:`PromptState` (token ids +
images) into one assistant turn each. :class:`HFEngine` uses ``transformers`` ``generate`` (CPU tests, small
GPUs); ``videor4.training.vllm_engine.VLLMEngine`` uses vLLM on GPUs. Tool calls run through the shared
``ClipCropExecutor``, and every piece of text is rendered by ``videor4.contracts.chat``, so a rollout's token
ids are exactly the ids SFT would build for the same conversation (tested).

Token bookkeeping: the ids the engine generated are kept verbatim (never re-tokenized) and are the only ones
with ``loss_mask`` 1; the prompt, the ``<|im_end|>`` the loop appends after a stop at ``</tool_call>``, and
observation turns are 0. A rollout ends with one stop reason:

* ``answer``      — the turn contains ``<answer>…</answer>``;
* ``eos``         — the turn ended without an answer or a tool call;
* ``max_calls``   — the model called a tool after the call budget was spent;
* ``max_images``  — the model called a tool while the image budget was full;
* ``max_tokens``  — the generated-token budget or the context cap ran out mid-turn.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
from pydantic import BaseModel, ConfigDict, Field
from tqdm import tqdm

from videor4.contracts.chat import (
    VISION_TOKENS,
    EncodedImages,
    Turn,
    build_messages,
    encode_chat,
    encode_images,
    observation_turn,
    tokenize_segments,
)
from videor4.contracts.errors import UserError
from videor4.contracts.executor import ClipCropExecutor, ImageRef, OpsConfig, ToolObservation
from videor4.contracts.tool_protocol import (
    TOOL_STOP,
    ToolCall,
    ToolCallError,
    extract_answer,
    has_answer,
    parse_tool_calls,
)
from videor4.contracts.view import PromptConfig, ShardView, fit_image

StopReason = Literal["answer", "eos", "max_calls", "max_images", "max_tokens"]


class RolloutLimits(BaseModel):
    """Token budgets of one rollout (a GRPO stage's ``rollout:`` block; the view comes from the recipe)."""

    model_config = ConfigDict(extra="forbid")

    max_new_tokens: int = Field(768, ge=1, description="generated tokens per rollout, all turns together")
    max_turn_tokens: int = Field(512, ge=1, description="generated tokens per assistant turn")
    max_context_tokens: int = Field(16384, ge=1, description="prompt + generated + observations cap")


def turn_budget(limits: RolloutLimits, generated: int, context_tokens: int) -> int:
    """Tokens the next assistant turn may generate: the per-turn, per-rollout and context budgets at once."""
    context_left = limits.max_context_tokens - context_tokens
    return max(0, min(limits.max_turn_tokens, limits.max_new_tokens - generated, context_left))


class RolloutConfig(RolloutLimits):
    """What the rollout loop needs: the token budgets and the view (``ops`` for the executor, ``prompt`` for
    the chat rendering)."""

    ops: OpsConfig = Field(default_factory=OpsConfig, description="clip/crop budgets and geometry")
    prompt: PromptConfig = Field(default_factory=PromptConfig, description="frames, pixel budgets, tools on/off")

    @property
    def view(self) -> ShardView:
        return ShardView(prompt=self.prompt, ops=self.ops)

    @classmethod
    def of(cls, limits: RolloutLimits, view: ShardView) -> RolloutConfig:
        return cls(**limits.model_dump(), ops=view.ops, prompt=view.prompt)


@dataclass
class PromptState:
    """What an engine needs to continue one conversation: all token ids so far and the images in order."""

    input_ids: list[int]
    images: list[np.ndarray]
    encoded: EncodedImages


@dataclass
class Generation:
    token_ids: list[int]  # generated ids, up to and including the stop token
    text: str  # decoded, without a trailing <|im_end|>
    finished: bool  # stopped on a stop token/string (False: ran out of max_new_tokens)
    logprobs: list[float] | None = None  # the sampler's log-prob of each generated id (for IS correction)


class RolloutEngine(Protocol):
    """Generates one assistant turn for each prompt state of a batch."""

    tokenizer: Any
    processor: Any

    def generate(self, prompts: Sequence[PromptState], max_new_tokens: Sequence[int], stop: Sequence[str]) -> list[Generation]: ...


@dataclass
class RolloutSample:
    """One question to roll out; ``executor_factory(sample)`` opens its video and picks the initial frames."""

    sample_id: str
    question: str
    source: str | Path = ""
    answers: tuple[str, ...] = ()
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class Rollout:
    sample_id: str
    input_ids: list[int]
    loss_mask: list[int]  # 1 only on model-generated tokens
    prompt_length: int
    images: list[np.ndarray]  # as shown to the model, in context order
    refs: list[ImageRef]  # re-executable references of ``images``
    encoded: EncodedImages  # processed pixels of ``images`` (for the trainer's forward pass)
    turns: list[Turn]  # assistant texts with their observations
    calls: list[ToolCall | ToolCallError]
    observations: list[ToolObservation]
    messages: list[dict[str, Any]]  # the chat (with image placeholders), as SFT would store it
    final_text: str
    answer: str
    stop_reason: StopReason
    generated_tokens: int
    # The sampler's log-prob of every token, aligned with ``input_ids`` (0 where the loop, not the model, wrote
    # the token); None when the engine does not report them.
    sampler_logprobs: list[float] | None = None


class _Live:
    """Mutable per-rollout state while the batch loop runs."""

    def __init__(self, sample: RolloutSample, executor: ClipCropExecutor, processor: Any, config: RolloutConfig):
        self.sample, self.executor, self.processor, self.config = sample, executor, processor, config
        refs = list(executor.context)
        duration = executor.reader.num_frames / executor.reader.fps
        self.messages, shown = build_messages(
            sample.question, refs, executor.render_many(refs), config=config.prompt, ops=config.ops, duration_s=duration
        )
        chat = encode_chat(processor, self.messages, shown, add_generation_prompt=True)
        self.state = PromptState(chat.input_ids, shown, chat.images)
        self.mask = chat.loss_mask
        self.logprobs: list[float] | None = [0.0] * len(chat.input_ids)
        self.prompt_length = len(chat.input_ids)
        self.turns: list[Turn] = []
        self.generated = 0
        self.stop: StopReason | None = None

    def budget(self) -> int:
        return turn_budget(self.config, self.generated, len(self.state.input_ids))

    def append(self, ids: list[int], mask_value: int, logprobs: list[float] | None = None) -> None:
        self.state.input_ids += ids
        self.mask += [mask_value] * len(ids)
        if self.logprobs is not None:
            if mask_value and logprobs is None:
                self.logprobs = None  # the engine did not report them: no IS correction for this rollout
            else:
                self.logprobs += list(logprobs) if logprobs is not None else [0.0] * len(ids)

    def step(self, gen: Generation) -> StopReason | None:
        """Record one generated turn; on tool calls, execute them and append the observation turn."""
        self.generated += len(gen.token_ids)
        self.append(gen.token_ids, 1, gen.logprobs)
        self.turns.append(Turn(gen.text))
        self.messages.append({"role": "assistant", "content": gen.text})
        if has_answer(gen.text):
            return "answer"
        if not gen.finished:
            return "max_tokens"
        calls = parse_tool_calls(gen.text) if self.config.prompt.tools else []
        if not calls:
            return "eos"
        ops, executor = self.config.ops, self.executor
        if executor.calls_made >= ops.max_calls:
            return "max_calls"
        if len(executor.context) >= ops.max_images:
            return "max_images"
        observations = [executor.execute(c) for c in calls]
        self.turns[-1].observations = observations
        tokenizer = self.processor.tokenizer
        new_images = [fit_image(self.config.prompt, r, im) for o in observations for r, im in zip(o.refs, o.images)]
        encoded = encode_images(self.processor, new_images)
        # A stop on </tool_call> leaves the turn open; the template closes it (not model-generated: mask 0).
        user, segments = observation_turn(observations, turn_closed=_ends_with_im_end(gen, tokenizer))
        self.messages.append(user)
        ids, _ = tokenize_segments(tokenizer, segments, encoded.num_tokens)
        self.append(ids, 0)
        self.state.images += new_images
        self.state.encoded.pixel_values += encoded.pixel_values
        self.state.encoded.image_grid_thw += encoded.image_grid_thw
        self.state.encoded.num_tokens += encoded.num_tokens
        return None

    def finish(self) -> Rollout:
        final = self.turns[-1].assistant if self.turns else ""
        return Rollout(
            sample_id=self.sample.sample_id,
            input_ids=self.state.input_ids,
            loss_mask=self.mask,
            prompt_length=self.prompt_length,
            images=self.state.images,
            refs=list(self.executor.context),
            encoded=self.state.encoded,
            turns=self.turns,
            calls=[c for t in self.turns if t.observations for c in parse_tool_calls(t.assistant)],
            observations=[o for t in self.turns for o in t.observations],
            messages=self.messages,
            final_text=final,
            answer=extract_answer(final),
            stop_reason=self.stop or "eos",
            generated_tokens=self.generated,
            sampler_logprobs=self.logprobs,
        )


def _ends_with_im_end(gen: Generation, tokenizer: Any) -> bool:
    return bool(gen.token_ids) and gen.token_ids[-1] == tokenizer.convert_tokens_to_ids("<|im_end|>")


def run_rollouts(
    engine: RolloutEngine,
    samples: Sequence[RolloutSample],
    executor_factory: Callable[[RolloutSample], ClipCropExecutor],
    config: RolloutConfig | None = None,
    progress: bool = False,
    sync: Callable[[bool], bool] | None = None,
) -> list[Rollout]:
    """Roll out every sample, batching one generate call per turn across the samples still running.

    ``executor_factory`` builds each sample's executor (use :func:`video_executor_factory`, which applies
    ``config.ops`` and the prompt's display sizes); the loop closes each executor's reader when its rollout ends.
    Pass a sample G times for a GRPO group: each copy gets its own executor.

    ``sync`` makes distributed ranks turn in lockstep (needed when the model's weights are sharded, ZeRO-3 or
    FSDP, where every forward pass is a collective): it answers "does any rank still generate?" for this rank's
    answer; a rank whose rollouts are done keeps joining with a one-token dummy turn until all are.
    """
    config = config or RolloutConfig()
    live = [_Live(s, executor_factory(s), engine.processor, config) for s in samples]
    stop = [TOOL_STOP] if config.prompt.tools else []
    bar = tqdm(total=len(live), desc="rollouts", unit="rollout", disable=not progress)
    running = live
    while running or (sync is not None and live):
        for r in running:
            if r.stop is None and r.budget() == 0:
                r.stop = "max_tokens"
        active = [r for r in running if r.stop is None]
        if sync is not None and not sync(bool(active)):
            break
        if active:
            generations = engine.generate([r.state for r in active], [r.budget() for r in active], stop)
            for r, gen in zip(active, generations):
                r.stop = r.step(gen)
        elif sync is not None:  # others still generate: join their collectives with a throw-away turn
            engine.generate([live[-1].state], [1], stop)
        for r in running:
            if r.stop is not None:
                r.executor.reader.close()
                bar.update(1)
        running = [r for r in running if r.stop is None]
    bar.close()
    return [r.finish() for r in live]


def video_executor_factory(config: RolloutConfig, media_config: Any = None) -> Callable[[RolloutSample], ClipCropExecutor]:
    """Executors over ``sample.source`` (mp4 or frame folder) with the view's uniform initial frames."""
    from videor4.contracts.media import MediaConfig, open_video

    media_config = media_config or MediaConfig()
    view = config.view

    def factory(sample: RolloutSample) -> ClipCropExecutor:
        return view.executor(open_video(sample.source, config=media_config))

    return factory


def collate(prompts: Sequence[PromptState], pad_id: int, image_token_id: int) -> dict[str, Any]:
    """Left-padded model inputs for a batch: ids, attention mask, mm token types, pixels, grids.

    Shared by the HF engine and by training forward passes, so both feed the model identically.
    """
    import torch

    width = max(len(p.input_ids) for p in prompts)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(prompts), width), dtype=torch.long)
    for row, p in enumerate(prompts):
        ids[row, width - len(p.input_ids):] = torch.tensor(p.input_ids, dtype=torch.long)
        attention[row, width - len(p.input_ids):] = 1
    batch: dict[str, Any] = {
        "input_ids": ids,
        "attention_mask": attention,
        "mm_token_type_ids": (ids == image_token_id).to(torch.int32),
    }
    blocks = [b for p in prompts for b in p.encoded.pixel_values]
    if blocks:
        batch["pixel_values"] = torch.cat(blocks)
        batch["image_grid_thw"] = torch.stack([g for p in prompts for g in p.encoded.image_grid_thw])
    return batch


class HFEngineConfig(BaseModel):
    """Sampling and batching of :class:`HFEngine`."""

    model_config = ConfigDict(extra="forbid")

    do_sample: bool = Field(False, description="sample (True) or greedy decode (False)")
    temperature: float = Field(1.0, gt=0, description="sampling temperature")
    top_p: float = Field(1.0, gt=0, le=1, description="nucleus sampling mass")
    top_k: int = Field(0, ge=0, description="top-k when sampling; 0 = the full softmax, which GRPO needs: its "
                       "log-probs are those of the untruncated distribution (transformers' default is 50)")
    batch_size: int = Field(8, ge=1, description="conversations per generate call")
    return_logprobs: bool = Field(False, description="report the sampled tokens' log-probs (processed scores: "
                                  "after temperature/top-p), for the GRPO importance-sampling correction")
    device: str = Field("auto", description="'auto' (cuda if available, else cpu), 'cpu', 'cuda:0', ...")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field("auto", description="model weights dtype")


class HFEngine:
    """``transformers`` generate as a :class:`RolloutEngine` (left-padded batches, vision tokens suppressed)."""

    def __init__(self, model: Any, processor: Any, config: HFEngineConfig | None = None):
        self.model, self.processor, self.config = model, processor, config or HFEngineConfig()
        self.tokenizer = processor.tokenizer
        tok = self.tokenizer
        self.pad_id = tok.pad_token_id if tok.pad_token_id is not None else tok.convert_tokens_to_ids("<|endoftext|>")
        self.image_token_id = tok.convert_tokens_to_ids("<|image_pad|>")
        self.eos_ids = [tok.convert_tokens_to_ids(t) for t in ("<|im_end|>", "<|endoftext|>")]
        self.suppress = [tok.convert_tokens_to_ids(t) for t in VISION_TOKENS]

    @classmethod
    def from_pretrained(cls, model_dir: str | Path, config: HFEngineConfig | None = None) -> HFEngine:
        import torch
        from transformers import AutoModelForImageTextToText, AutoProcessor

        config = config or HFEngineConfig()
        path = Path(model_dir)
        if not (path / "config.json").is_file():
            raise UserError(f"model directory {path} has no config.json (expected a saved Qwen2.5-VL checkpoint)")
        device = config.device if config.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
        dtype = "auto" if config.dtype == "auto" else getattr(torch, config.dtype)
        model = AutoModelForImageTextToText.from_pretrained(path, dtype=dtype).to(device).eval()
        return cls(model, AutoProcessor.from_pretrained(path), config)

    # Set by a distributed trainer whose weights are sharded (ZeRO-3/FSDP): "does any rank still have a batch?".
    # Every rank then calls ``model.generate`` equally often (transformers syncs the tokens inside one call).
    lockstep: Callable[[bool], bool] | None = None

    def generate(self, prompts: Sequence[PromptState], max_new_tokens: Sequence[int], stop: Sequence[str]) -> list[Generation]:
        out: list[Generation] = []
        size = self.config.batch_size
        starts = list(range(0, len(prompts), size))
        k = 0
        while k < len(starts) or self.lockstep is not None:
            mine = k < len(starts)
            if self.lockstep is not None and not self.lockstep(mine):
                break
            if mine:
                start = starts[k]
                out += self._generate(prompts[start : start + size], max_new_tokens[start : start + size], stop)
            else:  # another rank still generates: join with a one-token dummy batch
                self._generate(prompts[-1:], [1], stop)
            k += 1
        return out

    def _generate(self, prompts: Sequence[PromptState], limits: Sequence[int], stop: Sequence[str]) -> list[Generation]:
        import torch

        tok = self.tokenizer
        # A stop string that is one token (``</tool_call>`` in Qwen2.5) is an extra eos id: exact and free.
        encoded = {s: tok(s, add_special_tokens=False)["input_ids"] for s in stop}
        stop_ids = [ids[0] for ids in encoded.values() if len(ids) == 1]
        stop_strings = [s for s, ids in encoded.items() if len(ids) != 1]
        batch = {k: v.to(self.model.device) for k, v in collate(prompts, self.pad_id, self.image_token_id).items()}
        if "pixel_values" in batch:
            batch["pixel_values"] = batch["pixel_values"].to(self.model.dtype)
        kwargs: dict[str, Any] = {"stop_strings": stop_strings, "tokenizer": tok} if stop_strings else {}
        if self.config.return_logprobs:
            kwargs.update(output_scores=True, return_dict_in_generate=True)
        if self.config.do_sample:
            kwargs.update(do_sample=True, temperature=self.config.temperature, top_p=self.config.top_p,
                          top_k=self.config.top_k)
        else:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        with torch.inference_mode():
            output = self.model.generate(
                **batch,
                max_new_tokens=max(limits),
                eos_token_id=self.eos_ids + stop_ids,
                pad_token_id=self.pad_id,
                suppress_tokens=self.suppress,
                **kwargs,
            )
        sequences = output.sequences if self.config.return_logprobs else output
        generated = sequences[:, batch["input_ids"].shape[1]:]
        logprobs: list[list[float] | None] = [None] * len(generated)
        if self.config.return_logprobs:  # log-softmax of the processed scores at each step, at the sampled id
            steps = torch.stack(output.scores, dim=1).float().log_softmax(dim=-1)
            logprobs = steps.gather(-1, generated[:, : steps.shape[1]].unsqueeze(-1)).squeeze(-1).tolist()
        return [self._trim(ids, limit, stop_ids, stop_strings, lp)
                for ids, limit, lp in zip(generated.tolist(), limits, logprobs)]

    def _trim(self, ids: list[int], limit: int, stop_ids: list[int], stop_strings: list[str],
              logprobs: list[float] | None = None) -> Generation:
        """Cut a row at its first stop (inclusive) or at its own token limit (rows share one generate call)."""
        ids = ids[:limit]
        ends = set(self.eos_ids + stop_ids)
        cut = next((i + 1 for i, t in enumerate(ids) if t in ends), None)
        if stop_strings:
            text_cut = _first_stop_string(self.tokenizer, ids[:cut] if cut else ids, stop_strings)
            cut = text_cut if text_cut is not None else cut
        finished = cut is not None
        ids = ids[:cut] if finished else ids
        return Generation(ids, decode_turn(self.tokenizer, ids), finished,
                          None if logprobs is None else logprobs[: len(ids)])


def _first_stop_string(tokenizer: Any, ids: list[int], stops: Sequence[str]) -> int | None:
    """Smallest prefix length whose text contains a stop string (binary search: containment is monotone)."""
    if not any(s in tokenizer.decode(ids) for s in stops):
        return None
    lo, hi = 1, len(ids)
    while lo < hi:
        mid = (lo + hi) // 2
        if any(s in tokenizer.decode(ids[:mid]) for s in stops):
            hi = mid
        else:
            lo = mid + 1
    return lo


def decode_turn(tokenizer: Any, ids: list[int]) -> str:
    """Text of a turn as the chat stores it: special tokens kept, the closing ``<|im_end|>`` dropped."""
    text = tokenizer.decode(ids, skip_special_tokens=False)
    for end in ("<|im_end|>", "<|endoftext|>"):
        if text.endswith(end):
            return text[: -len(end)]
    return text


class ScriptedEngine:
    """A forced policy for tests and replays: returns pre-written assistant turns through the real tokenizer.

    Conversation ``k`` (in order of first appearance) plays ``scripts[k % len(scripts)]``, one string per turn.
    A turn holding a tool call ends at ``</tool_call>`` as a real stop would; any other turn ends with
    ``<|im_end|>`` as a model's end of turn. Token limits truncate exactly like generation would.
    """

    def __init__(self, processor: Any, scripts: Sequence[Sequence[str]]):
        self.processor, self.tokenizer, self.scripts = processor, processor.tokenizer, scripts
        self._conversations = 0

    def generate(self, prompts: Sequence[PromptState], max_new_tokens: Sequence[int], stop: Sequence[str]) -> list[Generation]:
        out = []
        for prompt, limit in zip(prompts, max_new_tokens):
            # The position lives on the conversation's own state (an ``id()`` key could be reused once an
            # earlier conversation is garbage-collected): [conversation number, next turn].
            position = prompt.__dict__.setdefault("_scripted", [self._conversations, 0])
            if position[0] == self._conversations:
                self._conversations += 1
            k, turn = position
            position[1] += 1
            script = self.scripts[k % len(self.scripts)]
            text = script[turn] if turn < len(script) else ""
            hit = min((text.find(s) + len(s) for s in stop if s in text), default=None)
            ids = self.tokenizer(text[:hit] if hit else text + "<|im_end|>", add_special_tokens=False)["input_ids"]
            finished = len(ids) <= limit
            ids = ids[:limit]
            out.append(Generation(ids, decode_turn(self.tokenizer, ids), finished))
        return out
