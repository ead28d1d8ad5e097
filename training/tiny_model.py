"""Tiny and micro random-init Qwen2.5-VL checkpoints built offline, for tests, benchmarks and CPU training.

Every runtime code path (prompt rendering, HF generation, rollouts, ``videor4 eval run``) loads a model from a
directory with ``from_pretrained`` exactly as it would load ``Qwen/Qwen2.5-VL-7B-Instruct``. This module writes
such a directory without any download: a byte-level BPE tokenizer trained locally on a small built-in corpus,
with the Qwen2.5-VL special tokens and chat template; a Qwen2.5-VL model of a few hundred thousand parameters
(same architecture, same 14 px patches and 2×2 merge as the real model, so the 28 px crop minimum holds); and a
``Qwen2_5_VLProcessor`` tying image/video processors and tokenizer together. Its answers are garbage; its
shapes, token bookkeeping and multimodal plumbing are the real ones.

``size="micro"`` (:data:`MODEL_SIZES`) is the model the CPU learning benchmark trains from scratch
(``benchmarks/bench_learning.py``): a few million parameters, and a tokenizer that splits digits one per token
(as Qwen2.5's does), so that reading a number off pixels and writing a box or a time is per-digit
classification a small model can learn, and whose BPE is trained on the protocol's own texts (system prompt,
tool schemas, image labels, reasoning phrases) so conversations are short. ``size="tiny"`` is the original
few-hundred-thousand-parameter model, unchanged (tests pin its weights and tokenizer).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

from videor4.contracts.chat import VISION_TOKENS
from videor4.contracts.tool_protocol import TOOL_CALL_TOKENS

# Special tokens of Qwen2.5-VL (names as in the released tokenizer). ``<tool_call>`` / ``</tool_call>`` are
# added (non-special) tokens there too, so a stop on ``</tool_call>`` ends on a token boundary.
SPECIAL_TOKENS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    *VISION_TOKENS,
]
ADDED_TOKENS = list(TOOL_CALL_TOKENS)

# The chat template shipped with Qwen2.5-VL-*-Instruct (chat_template.json), verbatim.
QWEN2_5_VL_CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}{% if add_vision_id %}Picture {{ image_count.value }}: "
    "{% endif %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}{% set video_count.value = video_count.value + 1 %}"
    "{% if add_vision_id %}Video {{ video_count.value }}: {% endif %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

# Small corpus so the BPE learns merges for the protocol's tags, JSON, numbers and common QA words.
_CORPUS = [
    "<think>The sign in image 3 is small, so I crop it.</think>",
    '<tool_call>\n{"name": "crop", "arguments": {"image": 3, "bbox_2d": [0.12, 0.4, 0.56, 0.78]}}\n</tool_call>',
    '<tool_call>\n{"name": "clip", "arguments": {"start": 1.5, "end": 3.25}}\n</tool_call>',
    "<tool_response>\nclip [1.5, 3.25]s returned 8 new frames. Image 4: frame 15 at 1.50s, 320x180 px\n</tool_response>",
    "<answer>coca cola</answer> <answer>42</answer> <answer>open 24 hours</answer>",
    "What is written on the red sign? What is the name of the shop? What number is on the bus?",
    "You are a helpful assistant. Answer the question about the video. Think step by step.",
    "Here are 8 frames of the video with their timestamps. Frame at 0.00s Frame at 0.40s",
    "0123456789 0.0 0.1 0.2 0.25 0.5 0.75 1.0 10 100 2024 3.14 px seconds image frame crop clip",
    '# Tools\n\nYou may call one or more functions to assist with the user query.\n<tools>\n{"type": "function"}',
    "the of and a to in is on at an with for from by this that which what where when who how",
]


# Qwen2.5's pre-tokenization regex: ``\p{N}`` alone makes every digit its own pre-token, so BPE never merges
# digits ("47" is "4", "7"), and words keep their leading space.
_QWEN2_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)

# Words of the trajectories' reasoning, the benchmark's questions and tool observations (micro tokenizer only):
# frequent words become one token each, so a conversation is a few hundred tokens rather than a few thousand.
_MICRO_CORPUS = [
    "The question asks: What number is on the red sign? I have 4 frames covering 3.2s.",
    'I need to answer "What number is shown on the round blue sign?" from 4 frames of a 3.2s video.',
    "Question: What number is written on the sign at the top left? Let me check the 4 frames I was given.",
    "Image 3 (t=1.25s) has small text at the top left that I cannot read reliably at this size, so I will zoom in.",
    "There is a small piece of text in the centre in image 2 at 0.45s; it is too small to read, so I crop it.",
    "In image 1 (0.45s) some text at the bottom right is only a few pixels tall. Zooming in should make it legible.",
    "The text is tiny, so I first zoom to the area around it. I will zoom in two steps: first the surrounding area.",
    "Image 5 shows the area; now I crop the text itself, at the top centre in it. The region is clearer in image 6.",
    "Cropping tighter on the text at the bottom left.",
    "The frames I have do not show text that answers this. I will look more densely at 0.46-0.94s.",
    "None of the given frames lets me read the answer, so I re-watch 1.26s to 1.74s with more frames.",
    "I should look between 2.06s and 2.54s more closely; text in videos like this is often brief.",
    'Image 6 (t=0.60s) from the clip shows text reading "47" at the top right. In the new frames, image 7 at '
    '0.70s has the text "83" at the bottom.',
    "Image 5 (t=0.50s) from the clip has text in the centre, still small; I crop it to read it exactly.",
    "The new image 8 at 0.80s shows the text at the middle left, but it is small, so I zoom in on it.",
    'The zoomed image reads "47". Zoomed in, the text says "90". Now it is legible: "12".',
    "Let me check the same text in image 7 (0.70s) to be sure. To confirm, I also zoom into image 6 at 0.60s.",
    'Image 9 reads "47" as well. The second view agrees: "47". Image 9 is no clearer; the first zoomed view stands.',
    "So the answer is 47. This answers the question: 47. Therefore: 47.",
    "What number is on the red sign? What number is on the green square sign? What number appears on the yellow "
    "triangle sign that slides in? What number is on the purple circle? the orange diamond, the white hexagon, "
    "the blue banner, the pink plate, the cyan board, the grey panel, the brown card, the black label",
    "at the top left, at the top right, at the bottom left, at the bottom right, in the centre, at the top, at the "
    "bottom, on the left, on the right, round, square, triangular, rectangular, oval, diamond, hexagonal, sign, "
    "board, panel, plate, label, tag, banner, screen, display, counter, ticket, number, code, price, score, shown",
    "4 frames of a 3.20s video: Image 1: frame 4 at 0.40s, 112x84 px. Image 5: crop [0.125, 0.250, 0.375, 0.417] "
    "of frame 12 at 1.20s, 112x56 px",
    "clip [0.46, 0.94]s returned 4 new frames. crop of image 3 returned 1 image.",
    "Error: tool call budget exhausted (3 calls); give your <answer> now. Error: image 9 does not exist; images "
    "are numbered 1 to 8. Error: no unseen frames in [0.4, 0.8]s; pick another window or crop a shown image.",
]


def _protocol_corpus() -> list[str]:
    """The texts the chat rendering itself writes (system prompts with and without tools, tool schemas)."""
    from videor4.contracts.chat import system_prompt
    from videor4.contracts.view import PromptConfig

    return [system_prompt(PromptConfig()), system_prompt(PromptConfig(tools=False))]


def build_tokenizer(vocab_size: int = 2048, corpus: Sequence[str] | None = None, split_digits: bool = False):
    """Train the byte-level BPE offline and wrap it as a transformers fast tokenizer with the chat template.

    Defaults give the tiny model's tokenizer (unchanged). ``split_digits`` pre-tokenizes as Qwen2.5 does, one
    digit per token; ``corpus`` replaces the built-in training texts.
    """
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    if split_digits:
        bpe.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(_QWEN2_PATTERN), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ])
    else:
        bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(list(corpus if corpus is not None else _CORPUS) * 4, trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=SPECIAL_TOKENS[1:2] + SPECIAL_TOKENS[3:],
        chat_template=QWEN2_5_VL_CHAT_TEMPLATE,
        padding_side="left",
    )
    tokenizer.add_tokens(ADDED_TOKENS)
    return tokenizer


@dataclass(frozen=True)
class ModelSize:
    """Architecture and tokenizer of one size of the offline Qwen2.5-VL."""

    text: dict[str, Any]
    vision: dict[str, Any]
    vocab_size: int = 2048
    split_digits: bool = False
    micro_corpus: bool = False
    notes: str = field(default="", compare=False)


MODEL_SIZES: dict[str, ModelSize] = {
    "tiny": ModelSize(
        text={"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
              "num_key_value_heads": 2, "mrope_section": [2, 3, 3]},
        vision={"depth": 2, "hidden_size": 32, "intermediate_size": 64, "num_heads": 2, "fullatt_block_indexes": [1]},
        notes="~184k parameters: plumbing tests"),
    "micro": ModelSize(
        text={"hidden_size": 128, "intermediate_size": 384, "num_hidden_layers": 4, "num_attention_heads": 4,
              "num_key_value_heads": 2, "mrope_section": [4, 6, 6]},
        vision={"depth": 4, "hidden_size": 96, "intermediate_size": 256, "num_heads": 4,
                "fullatt_block_indexes": [1, 3]},
        vocab_size=1536, split_digits=True, micro_corpus=True,
        notes="the CPU learning benchmark's model (docs/learning_benchmark.md)"),
}


def build_tiny_model(out_dir: str | Path, seed: int = 0, size: str = "tiny") -> Path:
    """Write tokenizer, processor and a random-init Qwen2.5-VL model to ``out_dir``; return the directory.

    Deterministic for a given ``seed`` and ``size`` (the same weights, tokenizer and configs on every call).
    """
    import torch
    from transformers import (
        GenerationConfig,
        Qwen2_5_VLConfig,
        Qwen2_5_VLForConditionalGeneration,
        Qwen2_5_VLProcessor,
        Qwen2VLImageProcessor,
        Qwen2VLVideoProcessor,
    )

    if size not in MODEL_SIZES:
        raise ValueError(f"unknown model size {size!r}; sizes: {', '.join(MODEL_SIZES)}")
    spec = MODEL_SIZES[size]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if spec.micro_corpus:
        tokenizer = build_tokenizer(spec.vocab_size, _CORPUS + _MICRO_CORPUS + _protocol_corpus(), spec.split_digits)
    else:
        tokenizer = build_tokenizer(spec.vocab_size, split_digits=spec.split_digits)
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    vocab = (len(tokenizer) + 63) // 64 * 64
    text = dict(spec.text)
    mrope = text.pop("mrope_section")
    config = Qwen2_5_VLConfig(
        text_config={
            "vocab_size": vocab,
            **text,
            "max_position_embeddings": 4096,
            "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": mrope},
            "bos_token_id": ids["<|endoftext|>"],
            "eos_token_id": ids["<|im_end|>"],
            "pad_token_id": ids["<|endoftext|>"],
        },
        vision_config={
            **spec.vision,
            "patch_size": 14,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
            "window_size": 112,
            "out_hidden_size": spec.text["hidden_size"],
        },
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    model = Qwen2_5_VLForConditionalGeneration(config).eval()
    model.generation_config = GenerationConfig(
        bos_token_id=ids["<|endoftext|>"],
        eos_token_id=[ids["<|im_end|>"], ids["<|endoftext|>"]],
        pad_token_id=ids["<|endoftext|>"],
        do_sample=False,
    )
    processor = Qwen2_5_VLProcessor(
        image_processor=Qwen2VLImageProcessor(min_pixels=28 * 28, max_pixels=512 * 28 * 28),
        video_processor=Qwen2VLVideoProcessor(min_pixels=28 * 28, max_pixels=512 * 28 * 28),
        tokenizer=tokenizer,
        chat_template=QWEN2_5_VL_CHAT_TEMPLATE,
    )
    model.save_pretrained(out)
    processor.save_pretrained(out)
    info = {"seed": seed, "params": model.num_parameters()}
    if size != "tiny":
        info["size"] = size
    (out / "videor4_tiny.json").write_text(json.dumps(info))
    return out
