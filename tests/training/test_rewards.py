"""Each Video-R4 reward against hand-computed values, the registry, and the default feature encoder."""

from __future__ import annotations

import math

import numpy as np
import pytest

from videor4.contracts.errors import UserError
from videor4.training.rewards import (
    REWARDS,
    RewardSpec,
    accuracy_anls_reward,
    accuracy_reward,
    compute_rewards,
    curiosity_reward,
    diversity,
    diversity_reward,
    format_reward,
    register_reward,
    representativeness,
    representativeness_reward,
    required_features,
    video_r4_rewards,
)

CALL = '<tool_call>\n{"name": "crop", "arguments": {"image": 1, "bbox_2d": [0.1, 0.1, 0.5, 0.5]}}\n</tool_call>'


def test_accuracy_uses_the_official_normalizer_and_the_last_answer() -> None:
    completions = [
        ["<think>x</think>\n<answer>The F05.</answer>"],  # article + period stripped by the EvalAI processing
        ["<think>x</think>\n" + CALL, "<think>y</think>\n<answer>f05</answer>"],
        ["<think>x</think>\n<answer>F0S</answer>"],
        ["no answer tags at all"],
    ]
    answers = [["F05"]] * 4
    assert accuracy_reward(completions, answers=answers) == [1.0, 1.0, 0.0, 0.0]
    anls = accuracy_anls_reward(completions, answers=answers)
    assert anls[:2] == [0.0, 1.0]  # ANLS only lower()s and strip()s: "the f05." is 5 edits from "f05" → below 0.5
    assert anls[2] == pytest.approx(1 - 1 / 3)  # one substitution in three characters, above the 0.5 threshold
    assert anls[3] == 0.0


def test_format_reward_needs_think_then_calls_or_one_answer() -> None:
    good = [
        ["<think>read it</think>\n<answer>F05</answer>"],
        ["<think>zoom</think>\n" + CALL, "<think>now legible</think>\n<answer>F05</answer>"],
        ["<think>two calls</think>\n" + CALL + "\n" + CALL, "<think>ok</think><answer>a</answer>"],
    ]
    bad = [
        ["<answer>F05</answer>"],  # no reasoning
        ["<think>x</think>\n<answer>F05</answer> trailing words"],
        ["<think>x</think>\n" + CALL],  # never answers
        ["<think>x</think>\n<tool_call>{not json}</tool_call>", "<think>y</think><answer>a</answer>"],
        ["<think>x</think>\n<answer>a</answer>", "<think>y</think><answer>b</answer>"],  # answered, then went on
        ["<think>x<think>y</think></think>\n<answer>a</answer>"],
        ["<think>x</think>\n<answer></answer>"],
    ]
    assert format_reward(good) == [1.0] * len(good)
    assert format_reward(bad) == [0.0] * len(bad)


def test_diversity_with_known_vectors() -> None:
    v = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    c = 1 / math.sqrt(2)
    # Ordered pairs: (1,2),(2,1) have cos 0; the four pairs with vector 3 have cos 1/√2.
    expected = (2 * 1.0 + 4 * (1 - c)) / (3 * 2)
    assert diversity(v) == pytest.approx(expected)
    assert diversity(v * np.array([[3.0], [0.5], [2.0]])) == pytest.approx(expected)  # scale-free
    assert diversity(np.array([[1.0, 2.0], [2.0, 4.0]])) == pytest.approx(0.0)  # same direction
    assert diversity(np.array([[1.0, 0.0], [-1.0, 0.0]])) == pytest.approx(2.0)  # opposite
    assert diversity(np.zeros((1, 4))) == 0.0 and diversity(np.zeros((0, 4))) == 0.0  # n < 2 → 0
    assert diversity_reward([[], []], crop_features=[v, v[:1]]) == [pytest.approx(expected), 0.0]


def test_representativeness_with_a_known_nearest_neighbour_geometry() -> None:
    frames = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0], [3.0, 4.0]])
    clip = np.array([[0.0, 0.0], [10.0, 10.0]])
    # Nearest clip frame per input frame: 0 (itself), 10 (either), 10 (either), 5 (the origin).
    assert representativeness(frames, clip) == pytest.approx(math.exp(-(0 + 10 + 10 + 5) / 4))
    assert representativeness(frames, frames) == pytest.approx(1.0)  # the clip covers every frame
    assert representativeness(frames, np.zeros((0, 2))) == 0.0  # no clip → 0
    values = representativeness_reward([[], []], frame_features=[frames, frames], clip_features=[clip, []])
    assert values == [pytest.approx(math.exp(-25 / 4)), 0.0]


@pytest.mark.parametrize(
    ("calls", "expected"),
    [
        ([0, 0, 0, 0], [0.0, 0.0, 0.0, 0.0]),  # 0 % tool use: nobody used tools, nothing to reward
        ([0, 1, 0, 0], [0.0, 0.5 * (0.3 - 0.25), 0.0, 0.0]),  # 25 %: the one caller gets α(H − r)
        ([0, 3, 0, 0], [0.0, 0.5 * 0.05 - 0.05 * 2, 0.0, 0.0]),  # … minus β per extra call
        ([1, 2, 1, 4], [0.0, -0.05, 0.0, -0.15]),  # 100 %: no bonus (r ≥ H), only the call penalty
    ],
)
def test_curiosity_on_groups_with_0_25_100_percent_tool_use(calls, expected) -> None:
    out = curiosity_reward([[]] * 4, num_calls=calls, group_ids=[7] * 4, alpha=0.5, target_rate=0.3, beta=0.05)
    assert out == pytest.approx(expected)


def test_curiosity_rate_is_per_group() -> None:
    out = curiosity_reward([[]] * 8, num_calls=[1, 0, 0, 0, 1, 1, 1, 1], group_ids=[0] * 4 + [1] * 4)
    assert out[0] == pytest.approx(0.5 * (0.3 - 0.25)) and out[4:] == [0.0] * 4


def test_total_is_the_weighted_sum_and_users_can_register_rewards() -> None:
    @register_reward("test_length_bonus")
    def length_bonus(completions, scale: float = 1.0, **_):
        return [scale * len(c) for c in completions]

    try:
        completions = [["<think>a</think><answer>F05</answer>"], ["<think>a</think>\n" + CALL, "oops"]]
        specs = [RewardSpec(name="accuracy"), RewardSpec(name="format", weight=0.5),
                 RewardSpec(name="curiosity", weight=2.0), RewardSpec(name="test_length_bonus", params={"scale": 0.1})]
        total, parts = compute_rewards(specs, completions, answers=[["F05"], ["F05"]], num_calls=[0, 1], group_ids=[0, 0])
        assert parts["accuracy"] == [1.0, 0.0] and parts["format"] == [1.0, 0.0]
        assert parts["curiosity"] == [0.0, 0.0]  # 50 % of the group used tools ≥ H
        assert total == pytest.approx([1.0 + 0.5 + 0.1, 0.2])
    finally:
        REWARDS.pop("test_length_bonus")
    with pytest.raises(UserError, match="unknown reward"):
        compute_rewards([RewardSpec(name="nope")], completions)


def test_paper_defaults_and_feature_needs() -> None:
    names = [s.name for s in video_r4_rewards()]
    assert names == ["accuracy", "format", "diversity", "representativeness", "curiosity"]
    assert [s.name for s in video_r4_rewards(lambda_cur=0)] == names[:-1]
    assert required_features(video_r4_rewards()) == {"crop_features", "frame_features", "clip_features"}
    assert required_features([RewardSpec(name="accuracy"), RewardSpec(name="curiosity")]) == set()


def test_frozen_vision_tower_encoder_pools_the_checkpoints_features(tiny_model_dir) -> None:
    """Default encoder = the policy's own vision tower, mean-pooled per image and L2-normalized."""
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from videor4.training.features import VisionTowerEncoder, load_vision_tower

    model = AutoModelForImageTextToText.from_pretrained(tiny_model_dir).eval()
    processor = AutoProcessor.from_pretrained(tiny_model_dir)
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (56, 84, 3), dtype=np.uint8), rng.integers(0, 255, (112, 56, 3), dtype=np.uint8)]
    images.append(images[0].copy())
    tower = load_vision_tower(tiny_model_dir)  # the vision weights alone, read from the checkpoint's safetensors
    assert not any(p.requires_grad for p in tower.parameters()) and not tower.training
    feats = VisionTowerEncoder(tower, processor, batch_size=2).encode(images)
    assert feats.shape == (3, model.config.vision_config.out_hidden_size)
    np.testing.assert_allclose(np.linalg.norm(feats, axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(feats[0], feats[2], rtol=1e-5, atol=1e-6)  # batching does not leak across images
    assert not np.allclose(feats[0], feats[1])
    one = processor.image_processor(images=[images[1]], return_tensors="pt")
    with torch.no_grad():
        tokens = model.get_image_features(one["pixel_values"], one["image_grid_thw"]).pooler_output[0]
    manual = torch.nn.functional.normalize(tokens.mean(0), dim=0).numpy()
    np.testing.assert_allclose(feats[1], manual, rtol=1e-4, atol=1e-5)


def test_reward_images_are_the_crops_the_last_clip_and_the_initial_view(tiny_processor, tiny_video) -> None:
    """Which pixels feed R_div / R_rep is pinned: every successful crop (failed calls contribute nothing), only
    the *last* successful clip's frames as C, and the initial frames as V (shared by the group)."""
    from videor4.contracts.executor import OpsConfig
    from videor4.contracts.view import PromptConfig
    from videor4.training.grpo_trainer import reward_columns
    from videor4.training.rollout import (
        RolloutConfig,
        RolloutSample,
        ScriptedEngine,
        run_rollouts,
        video_executor_factory,
    )

    def call(name: str, args: str) -> str:
        return f'<think>look</think>\n<tool_call>\n{{"name": "{name}", "arguments": {args}}}\n</tool_call>'

    script = [call("clip", '{"start": 0.0, "end": 0.9}'), call("crop", '{"image": 1, "bbox_2d": [0, 0, 0.5, 0.5]}'),
              call("crop", '{"image": 99, "bbox_2d": [0, 0, 0.5, 0.5]}'),  # fails: no image 99
              call("clip", '{"start": 2.0, "end": 2.9}'), call("crop", '{"image": 2, "bbox_2d": [0.5, 0.5, 1, 1]}'),
              "<think>done</think>\n<answer>F05</answer>"]
    cfg = RolloutConfig(prompt=PromptConfig(num_frames=3), ops=OpsConfig(clip_frames=2, max_calls=6, max_images=16),
                        max_new_tokens=2000, max_turn_tokens=400)
    samples = [RolloutSample("a", "What code?", tiny_video), RolloutSample("b", "What code?", tiny_video)]
    rollouts = run_rollouts(ScriptedEngine(tiny_processor, [script, ["<think>x</think>\n<answer>F</answer>"]]),
                            samples, video_executor_factory(cfg), cfg)

    seen: list[list[int]] = []

    class Recorder:  # a feature encoder that remembers which images it was given (by identity)
        def encode(self, images):
            seen.append([id(im) for im in images])
            return np.ones((len(images), 4)) if images else np.zeros((0, 0))

    needs = {"crop_features", "clip_features", "frame_features"}
    reward_columns(rollouts, [("F05",), ("F05",)], [0, 0], Recorder(), needs)
    tool, plain = rollouts
    obs = tool.observations
    crops = [im for o in obs if o.ok and o.tool == "crop" for im in o.images]
    assert [o.ok for o in obs] == [True, True, False, True, True] and len(crops) == 2
    last_clip = [o for o in obs if o.ok and o.tool == "clip"][-1]
    initial = tool.images[:3]
    assert seen[0] == [id(im) for im in crops]  # crop features of rollout a
    assert seen[1] == []  # rollout b made no crop
    assert seen[2] == [id(im) for im in last_clip.images] and seen[3] == []  # clip features: last clip only
    assert seen[4] == [id(im) for im in initial] and len(seen) == 5  # frame features once per group
    assert len(plain.images) == 3  # no tool call: only the initial view
