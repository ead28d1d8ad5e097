"""Multi-turn rollouts: scripted policies through the real tokenizer/executor, and the real tiny model via HF."""

from __future__ import annotations

import numpy as np
import pytest

from videor4.contracts.chat import VISION_TOKENS, encode_chat
from videor4.contracts.executor import OpsConfig
from videor4.contracts.tool_protocol import ToolCall, format_tool_call
from videor4.contracts.view import PromptConfig, fit_image
from videor4.training.rollout import (
    HFEngine,
    HFEngineConfig,
    RolloutConfig,
    RolloutSample,
    ScriptedEngine,
    run_rollouts,
    video_executor_factory,
)

PROMPT = PromptConfig(num_frames=3, frame_max_pixels=4 * 28 * 28, crop_max_pixels=6 * 28 * 28)
CLIP = "<think>Look between.</think>\n" + format_tool_call(ToolCall("clip", {"start": 0.5, "end": 1.5}))
CROP = "<think>Zoom.</think>\n" + format_tool_call(ToolCall("crop", {"image": 4, "bbox_2d": [0.1, 0.2, 0.6, 0.8]}))
ANSWER = "<think>It reads F05.</think>\n<answer>F05</answer>"


def config(**ops) -> RolloutConfig:
    return RolloutConfig(prompt=PROMPT, ops=OpsConfig(clip_frames=2, **ops), max_new_tokens=400)


def roll(processor, video, scripts, cfg=None, n=1):
    cfg = cfg or config()
    samples = [RolloutSample(f"s{k}", "What is written?", video) for k in range(n)]
    return run_rollouts(ScriptedEngine(processor, scripts), samples, video_executor_factory(cfg), cfg)


def test_scripted_rollout_matches_sft_rendering(tiny_processor, tiny_video) -> None:
    (r,) = roll(tiny_processor, tiny_video, [[CLIP, CROP, ANSWER]])
    assert r.stop_reason == "answer" and r.answer == "F05" and r.final_text == ANSWER
    assert [c.name for c in r.calls] == ["clip", "crop"] and all(o.ok for o in r.observations)
    assert len(r.refs) == len(r.images) == 3 + 2 + 1 and r.refs[-1].bbox is not None
    # Images are the executor's re-executable refs, fitted to the prompt budget.
    from videor4.contracts.executor import ClipCropExecutor
    from videor4.contracts.media import open_video

    with open_video(tiny_video) as reader:
        ex = ClipCropExecutor(reader, [], OpsConfig())
        for ref, img in zip(r.refs, r.images):
            np.testing.assert_array_equal(fit_image(PROMPT, ref, ex.render(ref)), img)
    # Token ids are exactly what SFT builds for the same conversation; the mask marks generated tokens only.
    sft = encode_chat(tiny_processor, r.messages, r.images)
    newline = tiny_processor.tokenizer("\n", add_special_tokens=False)["input_ids"]
    assert r.input_ids + newline == sft.input_ids  # the rollout ends at <|im_end|>, before the template's "\n"
    im_end = tiny_processor.tokenizer.convert_tokens_to_ids("<|im_end|>")
    diff = [i for i, (a, b) in enumerate(zip(r.loss_mask, sft.loss_mask)) if a != b]
    assert len(diff) == 2 and all(r.input_ids[i] == im_end and r.loss_mask[i] == 0 for i in diff)
    assert sum(r.loss_mask) == r.generated_tokens and r.loss_mask[: r.prompt_length] == [0] * r.prompt_length
    assert r.encoded.num_tokens and sum(r.encoded.num_tokens) == r.input_ids.count(tiny_processor.image_token_id)


@pytest.mark.parametrize(
    ("script", "ops", "reason", "calls"),
    [
        ([CLIP, CROP, CROP, ANSWER], {"max_calls": 2}, "max_calls", 2),
        ([CLIP, CROP, ANSWER], {"max_images": 5}, "max_images", 1),  # 3 frames + 2 clip frames fill it
        (["<think>no idea</think> maybe"], {}, "eos", 0),
        (["<think>" + "very long thoughts " * 200 + "</think>"], {}, "max_tokens", 0),
    ],
)
def test_stop_reasons(tiny_processor, tiny_video, script, ops, reason, calls) -> None:
    (r,) = roll(tiny_processor, tiny_video, [script], config(**ops))
    assert r.stop_reason == reason and len(r.calls) == calls
    assert r.generated_tokens <= 400 and sum(r.loss_mask) == r.generated_tokens


def test_error_observation_is_shown_to_the_model(tiny_processor, tiny_video) -> None:
    bad = format_tool_call(ToolCall("crop", {"image": 99, "bbox_2d": [0, 0, 1, 1]}))
    (r,) = roll(tiny_processor, tiny_video, [[bad, ANSWER]])
    assert r.stop_reason == "answer" and not r.observations[0].ok and r.observations[0].images == []
    assert "image 99 does not exist" in tiny_processor.tokenizer.decode(r.input_ids)


def test_batched_group_each_with_own_script(tiny_processor, tiny_video) -> None:
    rollouts = roll(tiny_processor, tiny_video, [[CLIP, ANSWER], [ANSWER], [CROP.replace('"image": 4', '"image": 3'), CLIP, ANSWER]], n=3)
    assert [len(r.calls) for r in rollouts] == [1, 0, 2] and {r.stop_reason for r in rollouts} == {"answer"}
    assert [len(r.images) for r in rollouts] == [5, 3, 6] and all(o.ok for r in rollouts for o in r.observations)


def test_no_tools_baseline_ignores_calls(tiny_processor, tiny_video) -> None:
    cfg = config().model_copy(update={"prompt": PROMPT.model_copy(update={"tools": False})})
    (r,) = roll(tiny_processor, tiny_video, [[CLIP + "\n" + ANSWER]], cfg)
    assert r.stop_reason == "answer" and r.calls == [] and len(r.images) == 3
    assert "<tools>" not in tiny_processor.tokenizer.decode(r.input_ids[: r.prompt_length])


def test_real_tiny_model_end_to_end(tiny_model_dir, tiny_video) -> None:
    engine = HFEngine.from_pretrained(tiny_model_dir, HFEngineConfig(device="cpu", batch_size=2))
    cfg = RolloutConfig(prompt=PROMPT, max_new_tokens=24, max_turn_tokens=16)
    samples = [RolloutSample(f"q{k}", q, tiny_video) for k, q in enumerate(["What is written?", "Which frame?", "Color?"])]
    runs = [run_rollouts(engine, samples, video_executor_factory(cfg), cfg) for _ in range(2)]
    vision = set(engine.tokenizer.convert_tokens_to_ids(VISION_TOKENS))
    for r, again in zip(*runs):
        assert r.input_ids == again.input_ids  # greedy decoding is deterministic
        generated = [t for t, m in zip(r.input_ids, r.loss_mask) if m]
        assert 0 < len(generated) == r.generated_tokens <= 24 and not set(generated) & vision
        assert r.stop_reason in {"answer", "eos", "max_calls", "max_images", "max_tokens"}
        assert r.input_ids[: r.prompt_length].count(engine.image_token_id) == sum(r.encoded.num_tokens[:3])
        assert isinstance(r.answer, str) and r.messages[-1]["role"] in {"assistant", "user"}


def test_hf_engine_stops_on_stop_string_and_batches(tiny_model_dir, tiny_video) -> None:
    engine = HFEngine.from_pretrained(tiny_model_dir, HFEngineConfig(device="cpu", batch_size=4))
    cfg = RolloutConfig(prompt=PROMPT)
    from videor4.training.rollout import _Live

    states = [
        _Live(RolloutSample(str(k), q, tiny_video), video_executor_factory(cfg)(RolloutSample("", "", tiny_video)), engine.processor, cfg).state
        for k, q in enumerate(["a?", "a much longer question about the sign?"])
    ]
    free = engine.generate(states, [10, 10], [])
    single = [engine.generate([s], [10], [])[0] for s in states]
    assert [g.token_ids for g in free] == [g.token_ids for g in single]  # left padding does not change greedy output
    # Stop on the text of generated tokens 3 (one token: an extra eos id) and 3-5 (a multi-token stop
    # string): generation ends right after the first occurrence, inclusive.
    ids = free[0].token_ids
    assert len(ids) >= 6 and not free[0].finished
    for span in (slice(2, 3), slice(2, 5)):
        stop_text = engine.tokenizer.decode(ids[span])
        first = next(i for i in range(len(ids)) if stop_text in engine.tokenizer.decode(ids[: i + 1]))
        stopped = engine.generate(states[:1], [10], [stop_text])[0]
        assert stopped.finished and stopped.token_ids == ids[: first + 1]
    assert len(engine.tokenizer(stop_text, add_special_tokens=False)["input_ids"]) > 1


def test_vllm_engine_missing_is_a_user_error(tiny_model_dir, monkeypatch) -> None:
    import sys

    from videor4.contracts.errors import UserError
    from videor4.training.vllm_engine import VLLMEngine

    monkeypatch.setitem(sys.modules, "vllm", None)  # vLLM is not installable here (no GPU)
    with pytest.raises(UserError, match="video-r4\\[vllm\\]"):
        VLLMEngine.from_pretrained(tiny_model_dir)


def test_vllm_engine_mapping_with_stand_in(tiny_processor, tiny_video, monkeypatch) -> None:
    """vLLM cannot run here (no GPU); a stand-in module checks what the engine sends and how it reads results.

    The stand-in follows vLLM's API: ``LLM.generate(prompts, sampling_params=[...])`` returning RequestOutputs
    whose ``outputs[0]`` has ``token_ids``, ``finish_reason`` and ``stop_reason`` (the stop token id, which
    vLLM may leave out of ``token_ids``).
    """
    from types import SimpleNamespace

    from tests.training.fake_vllm import install_fake_vllm
    from videor4.training.vllm_engine import VLLMEngine, collapse_image_pads

    tok = tiny_processor.tokenizer
    pad, stop_id = tok.convert_tokens_to_ids("<|image_pad|>"), tok.convert_tokens_to_ids("</tool_call>")
    scripts = iter([CLIP, ANSWER])
    seen = []

    class LLM:
        def generate(self, prompts, sampling_params, use_tqdm):
            seen.append((prompts, sampling_params))
            outs = []
            for _ in prompts:
                text = next(scripts)
                ids = tok(text, add_special_tokens=False)["input_ids"]
                if ids[-1] == stop_id:
                    outs.append(SimpleNamespace(token_ids=ids[:-1], finish_reason="stop", stop_reason=stop_id))
                else:
                    im_end = tok.convert_tokens_to_ids("<|im_end|>")
                    outs.append(SimpleNamespace(token_ids=ids + [im_end], finish_reason="stop", stop_reason=None))
            return [SimpleNamespace(outputs=[o]) for o in outs]

    install_fake_vllm(monkeypatch)

    cfg = config()
    (r,) = run_rollouts(VLLMEngine(LLM(), tiny_processor), [RolloutSample("v", "What?", tiny_video)], video_executor_factory(cfg), cfg)
    assert r.stop_reason == "answer" and [c.name for c in r.calls] == ["clip"] and len(r.images) == 5
    first, second = seen[0][0][0], seen[1][0][0]
    assert first["prompt_token_ids"].count(pad) == len(first["multi_modal_data"]["image"]) == 3
    assert second["prompt_token_ids"].count(pad) == len(second["multi_modal_data"]["image"]) == 5
    assert second["prompt_token_ids"] == collapse_image_pads(r.input_ids[: len(r.input_ids) - r.loss_mask[::-1].index(0)], pad)
    params = seen[0][1][0]
    assert params["stop_token_ids"] == [stop_id] and params["include_stop_str_in_output"] and "<|image_pad|>" in params["bad_words"]
    # The stop token vLLM reported is part of the turn, exactly as the HF engine returns it.
    sft = encode_chat(tiny_processor, r.messages, r.images)
    assert r.input_ids == sft.input_ids[:-1]
