"""The chat builder renders exactly like Qwen2.5-VL's template and masks only assistant tokens."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from videor4.contracts.chat import Turn, build_messages, chat_messages, encode_chat, render_segments, system_prompt
from videor4.contracts.executor import ClipCropExecutor, OpsConfig
from videor4.contracts.media import open_video
from videor4.contracts.tool_protocol import ToolCall, format_tool_call
from videor4.contracts.view import PromptConfig, display_size

CONFIG = PromptConfig(num_frames=4, frame_max_pixels=4 * 28 * 28, crop_max_pixels=6 * 28 * 28)


@pytest.fixture
def conversation(tiny_video):
    """A two-call rumination (clip, then crop) ending with an answer, executed on a real video."""
    reader = open_video(tiny_video)
    ex = ClipCropExecutor(reader, [0, 10, 20], OpsConfig(clip_frames=2), display_size=lambda r, s: display_size(CONFIG, r, s))
    initial = ex.render_many(ex.context)
    refs = list(ex.context)
    t1 = "<think>The text changes.</think>\n" + format_tool_call(ToolCall("clip", {"start": 0.5, "end": 1.5}))
    t2 = "<think>Zoom.</think>\n" + format_tool_call(ToolCall("crop", {"image": 4, "bbox_2d": [0.1, 0.2, 0.6, 0.8]}))
    turns = [Turn(t1, ex.execute_text(t1)), Turn(t2, ex.execute_text(t2)), Turn("<think>Read it.</think>\n<answer>F05</answer>")]
    reader.close()
    return build_messages("What is written?", refs, initial, turns, config=CONFIG, duration_s=3.0)


def test_system_prompt_declares_tools() -> None:
    text = system_prompt(CONFIG, OpsConfig(max_calls=3, max_images=12))
    tools = re.search(r"<tools>\n(.*)\n</tools>", text, re.DOTALL).group(1).splitlines()
    assert [json.loads(t)["function"]["name"] for t in tools] == ["clip", "crop"]
    assert "<tool_call>" in text and "<answer>" in text and "<think>" in text and "at most 3 tool calls" in text
    plain = system_prompt(CONFIG.model_copy(update={"tools": False}))
    assert "<tools>" not in plain and "<tool_call>" not in plain and "<answer>" in plain


def test_images_fit_the_budget(conversation) -> None:
    messages, images = conversation
    placeholders = sum(1 for m in messages if isinstance(m["content"], list) for p in m["content"] if p["type"] == "image")
    assert placeholders == len(images) == 3 + 2 + 1
    for img in images[:5]:
        h, w = img.shape[:2]
        assert h % 28 == 0 and w % 28 == 0 and h * w <= 4 * 28 * 28
    h, w = images[5].shape[:2]
    assert h % 28 == 0 and w % 28 == 0 and h * w <= 6 * 28 * 28
    # Labels state the displayed size, so pixel boxes read off an image mean the same to the executor.
    h0, w0 = images[0].shape[:2]
    assert messages[1]["content"][1]["text"] == f"Image 1: frame 0 at 0.00s, {w0}x{h0} px\n"


def test_text_only_builder_gives_the_same_messages(conversation, tiny_video) -> None:
    """Curation writes chats from the initial frames' sizes alone (no resizing): the text must be identical."""
    messages, images = conversation
    with open_video(tiny_video) as reader:
        size = (reader.width, reader.height)
        ex = ClipCropExecutor(reader, [0, 10, 20], OpsConfig(clip_frames=2),
                              display_size=lambda r, s: display_size(CONFIG, r, s))
        refs = list(ex.context)
        t1 = "<think>The text changes.</think>\n" + format_tool_call(ToolCall("clip", {"start": 0.5, "end": 1.5}))
        t2 = "<think>Zoom.</think>\n" + format_tool_call(ToolCall("crop", {"image": 4, "bbox_2d": [0.1, 0.2, 0.6, 0.8]}))
        turns = [Turn(t1, ex.execute_text(t1)), Turn(t2, ex.execute_text(t2)),
                 Turn("<think>Read it.</think>\n<answer>F05</answer>")]
    assert chat_messages("What is written?", refs, [size] * 3, turns, config=CONFIG, duration_s=3.0) == messages
    # a wrong size states a wrong label: the sizes are what the text depends on
    wrong = chat_messages("What is written?", refs, [(size[0] * 3, size[1])] * 3, turns, config=CONFIG, duration_s=3.0)
    assert wrong != messages


def test_rendering_equals_chat_template(conversation, tiny_processor) -> None:
    messages, _ = conversation
    for gen in (False, True):
        mine = "".join(t for t, _ in render_segments(messages, add_generation_prompt=gen))
        assert mine == tiny_processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=gen)
    # the template's default system turn when none is given
    short = [{"role": "user", "content": "hi"}]
    assert "".join(t for t, _ in render_segments(short)) == tiny_processor.apply_chat_template(short, tokenize=False)
    rendered = "".join(t for t, _ in render_segments(messages))
    assert rendered.count("<tool_response>") == 2 and "<|im_start|>user\n<tool_response>\nclip [0.5, 1.5]s" in rendered


def test_encode_chat_matches_processor_and_masks_assistant(conversation, tiny_processor) -> None:
    messages, images = conversation
    chat = encode_chat(tiny_processor, messages, images)
    text = tiny_processor.apply_chat_template(messages, tokenize=False)
    ref = tiny_processor(text=[text], images=images, return_tensors="pt")
    assert chat.input_ids == ref["input_ids"][0].tolist()
    assert [g.tolist() for g in chat.images.image_grid_thw] == ref["image_grid_thw"].tolist()
    assert np.array_equal(np.concatenate([b.numpy() for b in chat.images.pixel_values]), ref["pixel_values"].numpy())
    tok = tiny_processor.tokenizer
    trained = tok.decode([i for i, m in zip(chat.input_ids, chat.loss_mask) if m], skip_special_tokens=False)
    expected = "".join(m["content"] + "<|im_end|>" for m in messages if m["role"] == "assistant")
    assert trained == expected
    assert len(chat.loss_mask) == len(chat.input_ids) and 0 < sum(chat.loss_mask) < len(chat.loss_mask) // 2
