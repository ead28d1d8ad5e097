"""GRPO: advantages and the clipped/KL objective against direct formulas (TRL is not installed, so the reference
is computed by hand here), the observation mask on real rollouts, reward plumbing with the Video-R4 rewards,
learning a toy reward with the real tiny model, and resume equivalence with sampling."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from tests.training.toy_data import OPS, PROMPT, toy_dataset
from videor4.contracts.shard_io import read_stage
from videor4.contracts.tool_protocol import ToolCall, format_tool_call
from videor4.training.features import VisionTowerEncoder, load_vision_tower
from videor4.training.grpo_config import GRPOConfig
from videor4.training.grpo_trainer import GRPOTrainer, clipped_objective, group_advantages, zero_signal_groups
from videor4.training.rewards import video_r4_rewards
from videor4.training.rollout import ScriptedEngine
from videor4.training.stage_trainer import batch_inputs, load_policy, read_metrics


@pytest.fixture(scope="module")
def toy(tmp_path_factory, tiny_video):
    return toy_dataset(tmp_path_factory.mktemp("toy"), tiny_video)


# --- maths against direct formulas --------------------------------------------------------------------------
def test_group_advantages_match_the_formula() -> None:
    rewards = [1.0, 0.0, 0.5, 0.5, 2.0, 2.0, 2.0, 2.0, 0.3, 0.9, 0.1, 0.7]
    got = group_advantages(rewards, 4, epsilon=1e-4).tolist()
    for g in range(3):
        r = rewards[4 * g: 4 * g + 4]
        mean = sum(r) / 4
        std = math.sqrt(sum((x - mean) ** 2 for x in r) / 3)  # unbiased, as TRL's torch.std
        assert got[4 * g: 4 * g + 4] == pytest.approx([(x - mean) / (std + 1e-4) for x in r])
    assert got[4:8] == [0.0] * 4
    assert zero_signal_groups(rewards, 4).tolist() == [False, True, False]
    assert group_advantages(rewards, 4, scale=False).tolist()[:4] == pytest.approx([0.5, -0.5, 0.0, 0.0])


def _direct_loss(logp, old, ref, adv, mask, eps_lo, eps_hi, beta, loss_type):
    """Loop-by-loop reference of the GRPO objective on python floats."""
    per_seq, num, den, clipped, kl_sum = [], 0.0, 0.0, 0, 0.0
    for b in range(len(logp)):
        seq_num, seq_den = 0.0, 0.0
        for t in range(len(logp[b])):
            if not mask[b][t]:
                continue
            ratio = math.exp(logp[b][t] - old[b][t])
            term = -min(ratio * adv[b], min(max(ratio, 1 - eps_lo), 1 + eps_hi) * adv[b])
            d = ref[b][t] - logp[b][t]
            kl = math.exp(d) - d - 1
            term += beta * kl
            seq_num, seq_den = seq_num + term, seq_den + 1
            kl_sum += kl
            clipped += (ratio < 1 - eps_lo and adv[b] < 0) or (ratio > 1 + eps_hi and adv[b] > 0)
        num, den = num + seq_num, den + seq_den
        per_seq.append(seq_num / max(seq_den, 1))
    loss = num / den if loss_type == "token" else sum(per_seq) / len(per_seq)
    return loss, clipped, kl_sum


@pytest.mark.parametrize("loss_type", ["token", "sequence"])
@pytest.mark.parametrize("beta", [0.0, 0.04])
def test_clipped_objective_matches_the_direct_formula(loss_type, beta) -> None:
    g = torch.Generator().manual_seed(0)
    logp = -torch.rand(3, 7, generator=g, dtype=torch.float64) * 3
    old = logp + (torch.rand(3, 7, generator=g, dtype=torch.float64) - 0.5) * 0.8  # ratios well outside 1 ± 0.2
    ref = logp + (torch.rand(3, 7, generator=g, dtype=torch.float64) - 0.5)
    adv = torch.tensor([1.3, -0.7, 0.4], dtype=torch.float64)
    mask = torch.tensor([[0, 0, 1, 1, 1, 0, 1], [0, 1, 1, 1, 1, 1, 1], [0, 0, 0, 0, 1, 1, 0]])
    loss, stats = clipped_objective(logp, old, adv, mask, epsilon=0.2, epsilon_high=0.28, beta=beta, ref_logp=ref,
                                    loss_type=loss_type)
    want, clipped, kl_sum = _direct_loss(logp.tolist(), old.tolist(), ref.tolist(), adv.tolist(), mask.tolist(),
                                         0.2, 0.28, beta, loss_type)
    assert float(loss) == pytest.approx(want, rel=1e-10)
    assert int(stats["clipped_tokens"]) == clipped > 0 and int(stats["tokens"]) == int(mask.sum())
    assert float(stats["kl_sum"]) == (pytest.approx(kl_sum) if beta else 0.0)

    # Accumulating micro-batches with the whole batch's normalizer gives the full-batch loss.
    norm = float(mask.sum()) if loss_type == "token" else 3.0
    parts = [clipped_objective(logp[i:i + 1], old[i:i + 1], adv[i:i + 1], mask[i:i + 1], epsilon=0.2,
                               epsilon_high=0.28, beta=beta, ref_logp=ref[i:i + 1], loss_type=loss_type,
                               normalizer=norm)[0] for i in range(3)]
    assert float(sum(parts)) == pytest.approx(want, rel=1e-10)


def test_masked_tokens_get_no_gradient_and_ratio_one_gives_the_policy_gradient() -> None:
    logp = (-torch.rand(2, 6, dtype=torch.float64)).requires_grad_(True)
    mask = torch.tensor([[0, 1, 1, 0, 0, 1], [1, 0, 0, 1, 1, 0]])
    adv = torch.tensor([0.5, -2.0], dtype=torch.float64)
    loss, _ = clipped_objective(logp, logp.detach(), adv, mask, epsilon=0.2, loss_type="token")
    loss.backward()
    assert float(loss.detach()) == pytest.approx(-(0.5 * 3 - 2.0 * 3) / 6)  # ratio 1: −mean(A) over tokens
    grad = logp.grad
    assert torch.all(grad[mask == 0] == 0)
    expected = (-adv.unsqueeze(1) / 6).expand(2, 6)
    torch.testing.assert_close(grad[mask == 1], expected[mask == 1])  # d(−ρA)/dlogp = −A at ρ = 1


# --- real rollouts through the trainer ----------------------------------------------------------------------
CLIP = "<think>Look again.</think>\n" + format_tool_call(ToolCall("clip", {"start": 0.4, "end": 0.7}))
CROP_A = "<think>Zoom.</think>\n" + format_tool_call(ToolCall("crop", {"image": 2, "bbox_2d": [0.0, 0.0, 0.5, 0.5]}))
CROP_B = "<think>Tighter.</think>\n" + format_tool_call(ToolCall("crop", {"image": 3, "bbox_2d": [0.5, 0.5, 1.0, 1.0]}))
RIGHT = "<think>It reads F05.</think>\n<answer>F05</answer>"
WRONG = "<answer>F99</answer>"


def test_video_r4_rewards_and_metrics_on_scripted_rollouts(tiny_model_dir, toy, tmp_path) -> None:
    """A forced policy (ScriptedEngine; the model still scores its tokens) with known tool use per rollout."""
    data_root, shards = toy
    row = next(r for r in read_stage(shards, "rld") if r.answers == ["F05"])
    scripts = [[CLIP, RIGHT], [CROP_A, CROP_B, RIGHT], [WRONG], [RIGHT]] + [[RIGHT]] * 4
    model, processor = load_policy(tiny_model_dir)
    ref = load_policy(tiny_model_dir)[0]
    cfg = GRPOConfig(num_generations=4, prompts_per_step=2, micro_batch_size=3, max_steps=1, rollout={"max_new_tokens": 400},
                     rewards=video_r4_rewards(lambda_div=0.5, lambda_rep=0.5, lambda_cur=1.0), beta=0.04,
                     report_to=[])
    encoder = VisionTowerEncoder(load_vision_tower(tiny_model_dir), processor)  # frozen: the starting checkpoint's
    trainer = GRPOTrainer(model, processor, [row], cfg, tmp_path / "rl", data_root=data_root, prompt=PROMPT,
                          ops=OPS, ref_model=ref, engine_factory=lambda m, p: ScriptedEngine(p, scripts),
                          feature_encoder=encoder)
    batch = trainer.generate_batch(0)
    c = batch.components
    assert c["accuracy"] == [1.0, 1.0, 0.0, 1.0] + [1.0] * 4
    assert c["format"] == [1.0, 1.0, 0.0, 1.0] + [1.0] * 4
    assert c["curiosity"] == pytest.approx([0.0, -0.05, 0.0, 0.0] + [0.0] * 4)  # 50 % use tools ≥ H: penalty only
    assert c["diversity"][1] > 0 and c["diversity"][0] == c["diversity"][2] == 0.0  # two different crops vs none
    assert 0 < c["representativeness"][0] <= 1 and c["representativeness"][1:] == [0.0] * 7  # only r0 clipped
    assert batch.keep == [True] * 4 + [False] * 4  # the all-equal group is filtered
    m = batch.metrics
    assert m["tool_call_rate"] == 0.25 and m["calls_per_rollout"] == 3 / 8 and m["accuracy"] == 7 / 8
    assert m["zero_advantage_group_fraction"] == 0.5 and m["stop/answer"] == 1.0

    # The mask covers exactly what the policy wrote: no prompt, observation or image token is trained.
    r = batch.rollouts[1]
    _, mask = batch_inputs([(r.input_ids, r.loss_mask, r.encoded)], processor)
    trained = [t for t, keep in zip(r.input_ids, mask[0].tolist()[-len(r.input_ids):]) if keep]
    assert processor.tokenizer.decode(trained) == CROP_A + CROP_B + RIGHT + "<|im_end|>"
    assert r.input_ids.count(processor.image_token_id) > 0 and processor.image_token_id not in trained

    trainer.batch = batch
    metrics = trainer.training_step(0)
    assert metrics["trained_rollouts"] == 4.0
    assert metrics["kl"] == pytest.approx(0.0, abs=1e-6)  # policy == reference before the first update
    assert metrics["clip_fraction"] == 0.0  # μ = 1: ratio is exactly 1


def _even_mass(model, processor, toy_rows, data_root) -> float:
    """Exact probability mass on even ids at the first generated position of a fixed prompt (no sampling noise)."""
    from videor4.training.rollout import RolloutConfig, RolloutSample, _Live, video_executor_factory

    cfg = RolloutConfig(prompt=PROMPT, ops=OPS)
    sample = RolloutSample("s", toy_rows[0].question, data_root / toy_rows[0].video.path)
    live = _Live(sample, video_executor_factory(cfg)(sample), processor, cfg)
    batch, _ = batch_inputs([(live.state.input_ids, live.mask, live.state.encoded)], processor)
    with torch.no_grad():
        probs = model(**batch).logits[0, -1].softmax(-1)
    live.executor.reader.close()
    return float(probs[::2].sum())


def _grpo(tiny_model_dir, toy, out, rewards, **cfg):
    data_root, shards = toy
    model, processor = load_policy(tiny_model_dir)
    config = GRPOConfig(**{"num_generations": 8, "prompts_per_step": 2, "micro_batch_size": 8,
                           "rollout": {"max_new_tokens": 6, "max_turn_tokens": 6}, "rewards": rewards, "report_to": [], "lr_scheduler": "constant",
                           "learning_rate": 1e-2, "save_steps": 100, **cfg})
    ref = load_policy(tiny_model_dir)[0] if config.beta else None
    return GRPOTrainer(model, processor, read_stage(shards, "rld"), config, out, data_root=data_root,
                       prompt=PROMPT, ops=OPS, ref_model=ref)


def test_grpo_increases_a_learnable_reward(tiny_model_dir, toy, tmp_path, parity_reward) -> None:
    data_root, shards = toy
    trainer = _grpo(tiny_model_dir, toy, tmp_path / "rl", parity_reward, max_steps=16, beta=0.04,
                    learning_rate=2e-2)
    rows = read_stage(shards, "rld")
    before = _even_mass(trainer.model, trainer.processor, rows, data_root)
    final = trainer.train()
    after_model, processor = load_policy(final)
    after = _even_mass(after_model, processor, rows, data_root)
    log = read_metrics(tmp_path / "rl")
    rewards = [m["reward"] for m in log]
    assert after > before + 0.1, (before, after)
    assert np.mean(rewards[-3:]) > np.mean(rewards[:2]) + 0.2, rewards
    assert log[0]["kl"] == pytest.approx(0.0, abs=1e-6) and log[-1]["kl"] > 0  # drifts from the frozen reference
    for key in ("reward/test_even_ids", "tool_call_rate", "calls_per_rollout", "accuracy", "clip_fraction", "kl"):
        assert key in log[-1]


def test_grpo_resume_gives_the_same_weights(tiny_model_dir, toy, tmp_path, parity_reward) -> None:
    """Sampling RNG, optimizer and schedule are restored: 3 steps == 1 step + resume + 2 steps."""
    from safetensors.torch import load_file

    cfg = dict(max_steps=3, num_generations=4, beta=0.0, lr_scheduler="linear")
    a = _grpo(tiny_model_dir, toy, tmp_path / "a", parity_reward, **cfg).train()
    assert _grpo(tiny_model_dir, toy, tmp_path / "b", parity_reward, **cfg).train(stop_after=1) is None
    b = _grpo(tiny_model_dir, toy, tmp_path / "b", parity_reward, **cfg).train()
    wa, wb = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
    for key in wa:
        torch.testing.assert_close(wa[key], wb[key], rtol=1e-5, atol=1e-6, msg=key)
    base = load_file(tiny_model_dir / "model.safetensors")
    assert any(not torch.equal(base[k], wa[k]) for k in wa)
    ra = [m["reward"] for m in read_metrics(tmp_path / "a")]
    rb = [m["reward"] for m in read_metrics(tmp_path / "b")]
    assert ra == rb


@pytest.mark.gpu
def test_grpo_step_in_bf16_on_cuda(tiny_model_dir, toy, tmp_path, parity_reward) -> None:
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    trainer = _grpo(tiny_model_dir, toy, tmp_path / "rl", parity_reward, max_steps=2, beta=0.04)
    assert trainer.accelerator.mixed_precision == "bf16" and trainer.accelerator.device.type == "cuda"
    trainer.train()
    assert all(np.isfinite(m["loss"]) for m in read_metrics(tmp_path / "rl"))
