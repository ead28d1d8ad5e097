"""A tiny, random-init Qwen2.5-VL checkpoint built offline, for tests, benchmarks and smoke runs.

Every runtime code path (prompt rendering, HF generation, rollouts, ``videor4 eval run``) loads a model from a
directory with ``from_pretrained`` exactly as it would load ``Qwen/Qwen2.5-VL-7B-Instruct``. This module writes
such a directory without any download: a byte-level BPE tokenizer trained locally on a small built-in corpus,
with the Qwen2.5-VL special tokens and chat template; a Qwen2.5-VL model of a few hundred thousand parameters
(same architecture, same 14 px patches and 2×2 merge as the real model, so the 28 px crop minimum holds); and a
``Qwen2_5_VLProcessor`` tying image/video processors and tokenizer together. Its answers are garbage; its
shapes, token bookkeeping and multimodal plumbing are the real ones.
"""

from __future__ import annotations

import json
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

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


def build_tokenizer(vocab_size: int = 2048):
    """Train the byte-level BPE offline and wrap it as a transformers fast tokenizer with the chat template."""
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(_CORPUS * 4, trainer=trainer)
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


def build_tiny_model(out_dir: str | Path, seed: int = 0) -> Path:
    """Write tokenizer, processor and a random-init Qwen2.5-VL model to ``out_dir``; return the directory.

    Deterministic for a given ``seed`` (the same weights, tokenizer and configs on every call).
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

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer()
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    vocab = (len(tokenizer) + 63) // 64 * 64
    config = Qwen2_5_VLConfig(
        text_config={
            "vocab_size": vocab,
            "hidden_size": 64,
            "intermediate_size": 128,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "max_position_embeddings": 4096,
            "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3]},
            "bos_token_id": ids["<|endoftext|>"],
            "eos_token_id": ids["<|im_end|>"],
            "pad_token_id": ids["<|endoftext|>"],
        },
        vision_config={
            "depth": 2,
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_heads": 2,
            "patch_size": 14,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
            "window_size": 112,
            "out_hidden_size": 64,
            "fullatt_block_indexes": [1],
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
    (out / "videor4_tiny.json").write_text(json.dumps({"seed": seed, "params": model.num_parameters()}))
    return out
