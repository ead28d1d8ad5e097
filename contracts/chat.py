"""The one chat rendering used for SFT data, RL rollouts and evaluation.

A model trained on one rendering and evaluated on another is silently handicapped, so everything that turns a
question, its frames and its tool observations into tokens goes through this module:

* :func:`build_messages` — HF-style chat messages (``{"role", "content": [{"type": "text"|"image"}]}``) plus
  the ordered list of images the ``image`` placeholders stand for, resized to the pixel budget.
* :func:`render_segments` — the chat as text, exactly as Qwen2.5-VL's chat template renders it, cut into
  segments that say which text the assistant wrote (tested against ``apply_chat_template``).
* :func:`encode_chat` — token ids with image placeholders expanded, a loss mask that is 1 only on assistant
  tokens (their text and closing ``<|im_end|>``), and the processed pixels.

Layout: a system prompt declaring the tools in Qwen2.5 function-calling style (``# Tools`` … ``<tools>`` …
``</tools>``), a user turn with the question and the initial frames (each labelled with its number, frame
time and displayed size), then alternating assistant turns and user turns holding the tool observations
wrapped in ``<tool_response>`` … ``</tool_response>`` — the Qwen2.5 convention for tool results. Observations
use role ``user`` because Qwen2.5-VL's template has no ``tool`` role handling (it would print ``tool`` as a
role name the model never saw in training).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from videor4.contracts.executor import ImageRef, OpsConfig, ToolObservation, describe_image
from videor4.contracts.tool_protocol import TOOL_SCHEMAS, decision_spans
from videor4.contracts.view import PromptConfig, display_size, fit_image

# Qwen2.5-VL's placeholder for one image in rendered chat text (the shard codec uses its own, SHARD_IMAGE_TOKEN).
QWEN_IMAGE_PLACEHOLDER = "<|vision_start|><|image_pad|><|vision_end|>"
IMAGE_PAD = "<|image_pad|>"
# Vision special tokens of Qwen2.5-VL: never generated as text (engines suppress them).
VISION_TOKENS = ["<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"]
DEFAULT_SYSTEM = "You are a helpful assistant."

@dataclass
class Turn:
    """One assistant turn and the observations its tool calls produced (none for the final answer)."""

    assistant: str
    observations: list[ToolObservation] = field(default_factory=list)


def system_prompt(config: PromptConfig, ops: OpsConfig | None = None) -> str:
    """Instructions plus, with tools on, the Qwen2.5 ``# Tools`` block declaring clip and crop."""
    if not config.tools:
        return (
            f"{DEFAULT_SYSTEM} You answer questions about a video from the frames shown. Think inside "
            "<think></think>, then give only the short final answer inside <answer></answer>."
        )
    ops = ops or OpsConfig()
    tools = "\n".join(json.dumps(t, ensure_ascii=False) for t in TOOL_SCHEMAS)
    return (
        f"{DEFAULT_SYSTEM} You answer questions about a video. Small text is often unreadable in the frames "
        "shown, so look again before answering: clip a time window to get new frames, crop a region to zoom "
        "in. Think inside <think></think>; after each call you receive the new images; when you are sure, "
        "give only the short final answer inside <answer></answer>. You may make at most "
        f"{ops.max_calls} tool calls and see at most {ops.max_images} images.\n\n"
        "# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
        "You are provided with function signatures within <tools></tools> XML tags:\n"
        f"<tools>\n{tools}\n</tools>\n\n"
        "For each function call, return a json object with function name and arguments within "
        "<tool_call></tool_call> XML tags:\n<tool_call>\n"
        '{"name": <function-name>, "arguments": <args-json-object>}\n</tool_call>'
    )


def initial_content(
    question: str, refs: Sequence[ImageRef], shown_sizes: Sequence[tuple[int, int]], duration_s: float | None = None
) -> list[dict[str, Any]]:
    """The first user turn: what is shown, each frame with its label (``shown_sizes``: (w, h) as displayed),
    then the question."""
    span = f" of a {duration_s:.2f}s video" if duration_s is not None else ""
    content: list[dict[str, Any]] = [{"type": "text", "text": f"{len(refs)} frames{span}:\n"}]
    for number, (ref, size) in enumerate(zip(refs, shown_sizes), start=1):
        content.append({"type": "text", "text": describe_image(number, ref, size) + "\n"})
        content.append({"type": "image"})
        content.append({"type": "text", "text": "\n"})
    content.append({"type": "text", "text": f"Question: {question}"})
    return content


def observation_content(observations: Sequence[ToolObservation]) -> list[dict[str, Any]]:
    """One user turn with each observation as ``<tool_response>`` text followed by its images."""
    content: list[dict[str, Any]] = []
    for k, obs in enumerate(observations):
        content.append({"type": "text", "text": ("\n" if k else "") + f"<tool_response>\n{obs.message}\n"})
        content.extend({"type": "image"} for _ in obs.images)
        content.append({"type": "text", "text": "\n</tool_response>" if obs.images else "</tool_response>"})
    return content


def chat_messages(
    question: str,
    refs: Sequence[ImageRef],
    sizes: Sequence[tuple[int, int]],
    turns: Sequence[Turn] = (),
    *,
    config: PromptConfig | None = None,
    ops: OpsConfig | None = None,
    duration_s: float | None = None,
) -> list[dict[str, Any]]:
    """The chat messages of :func:`build_messages` without the images: the text depends on the initial frames'
    rendered ``sizes`` ((w, h), shown at :func:`~videor4.contracts.view.display_size`) only.

    Why a text-only builder: the shards store images as references, so curation writes a trajectory's chat
    without resizing (or even decoding) a single frame for it.
    """
    config = config or PromptConfig()
    shown = [display_size(config, r, size) for r, size in zip(refs, sizes)]
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": system_prompt(config, ops)},
        {"role": "user", "content": initial_content(question, refs, shown, duration_s)},
    ]
    for turn in turns:
        messages.append({"role": "assistant", "content": turn.assistant})
        if turn.observations:
            messages.append({"role": "user", "content": observation_content(turn.observations)})
    return messages


def build_messages(
    question: str,
    refs: Sequence[ImageRef],
    images: Sequence[np.ndarray],
    turns: Sequence[Turn] = (),
    *,
    config: PromptConfig | None = None,
    ops: OpsConfig | None = None,
    duration_s: float | None = None,
) -> tuple[list[dict[str, Any]], list[np.ndarray]]:
    """Chat messages with image placeholders and the images they stand for, in order, fitted to the budget.

    ``refs``/``images`` are the initial frames (rendered by the executor); ``turns`` the assistant turns so far
    with their observations. The result is what SFT trains on and what rollouts/eval extend turn by turn.
    """
    config = config or PromptConfig()
    messages = chat_messages(question, refs, [(im.shape[1], im.shape[0]) for im in images], turns, config=config,
                             ops=ops, duration_s=duration_s)
    shown = [fit_image(config, r, im) for r, im in zip(refs, images)]
    shown.extend(fit_image(config, r, im) for turn in turns for o in turn.observations
                 for r, im in zip(o.refs, o.images))
    return messages, shown


def message_segments(message: dict[str, Any]) -> list[tuple[str, bool]]:
    """One message as Qwen2.5-VL's template renders it: ``(text, written_by_assistant)`` pieces."""
    content = message["content"]
    if not isinstance(content, str):
        content = "".join(QWEN_IMAGE_PLACEHOLDER if part.get("type") == "image" else part.get("text", "") for part in content)
    header = f"<|im_start|>{message['role']}\n"
    if message["role"] == "assistant":
        return [(header, False), (content + "<|im_end|>", True), ("\n", False)]
    return [(header + content + "<|im_end|>\n", False)]


GENERATION_PROMPT = "<|im_start|>assistant\n"


def observation_turn(observations: Sequence[ToolObservation], turn_closed: bool
                     ) -> tuple[dict[str, Any], list[tuple[str, bool]]]:
    """What follows an assistant turn that called tools: the ``user`` message of ``<tool_response>`` blocks and
    the segments to append — the ``<|im_end|>`` that closes a turn an engine stopped at ``</tool_call>`` (unless
    ``turn_closed``), the message, and the next generation prompt; none of it is model-written (mask 0)."""
    user = {"role": "user", "content": observation_content(observations)}
    close = [] if turn_closed else [("<|im_end|>", False)]
    return user, [*close, ("\n", False), *message_segments(user), (GENERATION_PROMPT, False)]


def render_segments(messages: Sequence[dict[str, Any]], add_generation_prompt: bool = False) -> list[tuple[str, bool]]:
    """The whole chat, including the template's default system turn when the first message is not one."""
    segments: list[tuple[str, bool]] = []
    if messages and messages[0]["role"] != "system":
        segments += message_segments({"role": "system", "content": DEFAULT_SYSTEM})
    for message in messages:
        segments += message_segments(message)
    if add_generation_prompt:
        segments.append((GENERATION_PROMPT, False))
    return segments


@dataclass
class EncodedImages:
    """Processor output for a list of images, kept per image so turns can be appended incrementally."""

    pixel_values: list[Any]  # torch tensors, one (patches, dim) block per image
    image_grid_thw: list[Any]  # one (3,) tensor per image
    num_tokens: list[int]  # <|image_pad|> tokens each image expands to


def encode_images(processor: Any, images: Sequence[np.ndarray]) -> EncodedImages:
    if not images:
        return EncodedImages([], [], [])
    out = processor.image_processor(images=list(images), return_tensors="pt")
    grids = list(out["image_grid_thw"])
    sizes = [int(g.prod()) for g in grids]
    merge = processor.image_processor.merge_size ** 2
    blocks = list(out["pixel_values"].split(sizes))
    return EncodedImages(blocks, grids, [n // merge for n in sizes])


def tokenize_segments(
    tokenizer: Any, segments: Sequence[tuple[str, bool]], image_tokens: Sequence[int], decision_weight: float = 1.0
) -> tuple[list[int], list[float]]:
    """Token ids and loss mask (0/1 unless weighted) of segments, expanding the k-th ``<|image_pad|>`` to
    ``image_tokens[k]`` pads.

    Segments are tokenized one by one (they always split at special tokens or a newline after one, so this
    equals tokenizing the joined text — tested); that is what lets rollouts append turns without re-tokenizing.
    With ``decision_weight`` ≠ 1 a trainable token whose characters fall in a :func:`decision_spans` span (a call's
    tool name and numbers, the answer) gets that weight instead of 1; the ids are the same (the offsets of the same
    tokenization). The gold-view probe marks decisions this way.
    """
    ids: list[int] = []
    mask: list[float] = []
    counts = iter(image_tokens)
    for text, trainable in segments:
        if IMAGE_PAD in text:
            parts = text.split(IMAGE_PAD)
            text = parts[0] + "".join(IMAGE_PAD * next(counts) + p for p in parts[1:])
        if trainable and decision_weight != 1.0:
            out = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
            spans = decision_spans(text)
            piece = out["input_ids"]
            mask += [decision_weight if any(a < e and s < b for s, e in spans) else 1.0
                     for a, b in out["offset_mapping"]]
        else:
            piece = tokenizer(text, add_special_tokens=False)["input_ids"]
            mask += [int(trainable)] * len(piece)
        ids += piece
    return ids, mask


@dataclass
class EncodedChat:
    input_ids: list[int]
    loss_mask: list[float]  # 0 on context; 1 on assistant-written tokens (decision_weight on their decisions)
    images: EncodedImages


def encode_chat(
    processor: Any,
    messages: Sequence[dict[str, Any]],
    images: Sequence[np.ndarray],
    add_generation_prompt: bool = False,
    decision_weight: float = 1.0,
) -> EncodedChat:
    """Token ids, assistant-only loss mask and pixels of a chat from :func:`build_messages` (used by SFT)."""
    encoded = encode_images(processor, images)
    segments = render_segments(messages, add_generation_prompt)
    ids, mask = tokenize_segments(processor.tokenizer, segments, encoded.num_tokens, decision_weight)
    return EncodedChat(ids, mask, encoded)
