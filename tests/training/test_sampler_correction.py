"""The sampler side of GRPO: the vLLM training engine is built as TRL's colocate mode builds it and receives every
weight, and the truncated importance-sampling correction sees the sampler's own log-probs.

vLLM needs a GPU, so its module is a stand-in here (it records what it is given — the only mock in this file,
and the reason ``scripts/gpu_check.sh`` runs the real one); the HF engine's log-probs are real.
"""

from __future__ import annotations

import contextlib
import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from tests.training.fake_vllm import install_fake_vllm
from videor4.contracts.chat import VISION_TOKENS
from videor4.contracts.executor import OpsConfig
from videor4.contracts.view import PromptConfig, ShardView
from videor4.training.grpo_config import GRPOConfig
from videor4.training.grpo_trainer import truncated_is_weights
from videor4.training.rollout import (
    HFEngine,
    HFEngineConfig,
    RolloutConfig,
    RolloutLimits,
    RolloutSample,
    run_rollouts,
    video_executor_factory,
)
from videor4.training.stage_trainer import batch_inputs, load_policy, token_logprobs


class _Dist:
    def __init__(self, world: int, rank: int):
        self.world, self.rank, self.fsdp, self.gathers = world, rank, False, 0
        self.accelerator = SimpleNamespace(local_process_index=rank, wait_for_everyone=lambda: None)

    @contextlib.contextmanager
    def gathered(self, params):
        self.gathers += 1
        yield


@pytest.fixture
def fake_vllm(monkeypatch):
    created: list[dict] = []

    class LLM:
        def __init__(self, **kwargs):
            created.append(kwargs)
            self.loaded: list[tuple[str, torch.Tensor]] = []
            self.resets = 0
            model = SimpleNamespace(load_weights=lambda weights: self.loaded.extend(weights))
            worker = SimpleNamespace(model_runner=SimpleNamespace(model=model))
            self.llm_engine = SimpleNamespace(model_executor=SimpleNamespace(driver_worker=worker))

        def reset_prefix_cache(self):
            self.resets += 1

    install_fake_vllm(monkeypatch, LLM)
    for key in ("RANK", "LOCAL_RANK", "WORLD_SIZE"):
        monkeypatch.delenv(key, raising=False)
    return created


@pytest.mark.parametrize("world", [1, 2])
def test_training_engine_is_built_like_trls_colocate_mode(fake_vllm, tiny_model_dir: Path, world: int) -> None:
    from videor4.training.vllm_engine import build_training_engine

    model, processor = load_policy(tiny_model_dir)
    rollout = RolloutConfig.of(RolloutLimits(max_context_tokens=4096), ShardView(
        prompt=PromptConfig(num_frames=16), ops=OpsConfig(max_images=32)))
    engine = build_training_engine(model, processor, GRPOConfig(engine="vllm", seed=7, temperature=0.9), rollout,
                                   _Dist(world, world - 1))
    (kwargs,) = fake_vllm
    assert kwargs["limit_mm_per_prompt"] == {"image": 32, "video": 0}  # the recipe's budget, not vLLM's default
    assert kwargs["max_model_len"] == 4096 and kwargs["seed"] == 7 + (world - 1)  # ranks sample differently
    assert kwargs["logprobs_mode"] == "processed_logprobs" and engine.config.logprobs
    assert (kwargs.get("distributed_executor_backend") == "external_launcher") == (world > 1)
    assert engine.config.temperature == 0.9


def test_update_weights_pushes_every_parameter_each_gathered(fake_vllm, tiny_model_dir: Path) -> None:
    from videor4.training.vllm_engine import build_training_engine

    model, processor = load_policy(tiny_model_dir)
    dist = _Dist(1, 0)
    engine = build_training_engine(model, processor, GRPOConfig(engine="vllm"), RolloutConfig(), dist)
    engine.update_weights(model, dist)
    names = [name for name, _ in model.named_parameters()]
    assert [name for name, _ in engine.llm.loaded] == names and dist.gathers == len(names)  # ZeRO-3: one at a time
    assert all(torch.equal(t, p) for (_, t), (_, p) in zip(engine.llm.loaded, model.named_parameters()))
    assert engine.llm.resets == 1  # prefixes cached with the old weights are dropped


def test_vllm_sampled_logprobs_reach_the_rollout(monkeypatch, tiny_processor, tiny_video) -> None:
    from videor4.training.vllm_engine import VLLMEngine, VLLMEngineConfig

    tok = tiny_processor.tokenizer
    answer = tok("<think>ok</think>\n<answer>F05</answer>", add_special_tokens=False)["input_ids"]
    im_end = tok.convert_tokens_to_ids("<|im_end|>")

    class LLM:
        def generate(self, prompts, sampling_params, use_tqdm):
            assert all(p["logprobs"] == 0 for p in sampling_params)  # the sampled token's own log-prob
            steps = [{t: SimpleNamespace(logprob=-0.1 * (k + 1))} for k, t in enumerate(answer)]
            out = SimpleNamespace(token_ids=answer, finish_reason="stop", stop_reason=im_end, logprobs=steps)
            return [SimpleNamespace(outputs=[out]) for _ in prompts]

    install_fake_vllm(monkeypatch)
    cfg = RolloutConfig(prompt=PromptConfig(num_frames=2))
    (r,) = run_rollouts(VLLMEngine(LLM(), tiny_processor, VLLMEngineConfig(logprobs=True)),
                        [RolloutSample("v", "What?", tiny_video)], video_executor_factory(cfg), cfg)
    generated = [lp for lp, m in zip(r.sampler_logprobs, r.loss_mask) if m]
    assert len(r.sampler_logprobs) == len(r.input_ids)
    assert generated == pytest.approx([-0.1 * (k + 1) for k in range(len(answer))] + [0.0])  # + the stop id vLLM adds
    assert all(lp == 0.0 for lp, m in zip(r.sampler_logprobs, r.loss_mask) if not m)


def test_hf_sampler_logprobs_are_the_renormalised_trainers_and_truncation_caps_the_weights(tiny_model_dir,
                                                                                          tiny_video) -> None:
    """HF generate samples at temperature 0.7 from the policy with the vision tokens suppressed, so its log-prob of
    each token is the trainer's renormalised without them: ``log p − log(1 − p_vision)`` — exactly the gap the IS
    weight measures (slightly below 1 here). A divergent sampler is capped at the truncation bound."""
    model, processor = load_policy(tiny_model_dir)
    model.eval()
    torch.manual_seed(0)
    engine = HFEngine(model, processor, HFEngineConfig(do_sample=True, temperature=0.7, return_logprobs=True))
    cfg = RolloutConfig(prompt=PromptConfig(num_frames=2), max_new_tokens=24, max_turn_tokens=24)
    rollouts = run_rollouts(engine, [RolloutSample(str(k), "What code?", tiny_video) for k in range(3)],
                            video_executor_factory(cfg), cfg)
    batch, mask = batch_inputs([(r.input_ids, r.loss_mask, r.encoded) for r in rollouts], processor)
    with torch.no_grad():
        trainer = token_logprobs(model, batch, temperature=0.7)
        full = (model(**batch).logits[:, :-1].float() / 0.7).log_softmax(-1)
    suppressed = processor.tokenizer.convert_tokens_to_ids(VISION_TOKENS)
    vision_mass = full[..., suppressed].logsumexp(-1).exp()
    sampler = torch.zeros_like(trainer)
    for row, r in enumerate(rollouts):
        values = torch.tensor(r.sampler_logprobs[1:])
        sampler[row, trainer.shape[1] - len(values):] = values
    generated = mask[:, 1:] > 0
    assert int(generated.sum()) > 20
    expected = trainer - torch.log1p(-vision_mass)
    torch.testing.assert_close(sampler[generated], expected[generated], atol=2e-4, rtol=1e-4)
    weights = truncated_is_weights(trainer, sampler, cap=3.0)
    torch.testing.assert_close(weights[generated], (1 - vision_mass)[generated], atol=2e-4, rtol=1e-4)
    drifted = truncated_is_weights(trainer, sampler - 2.0, cap=3.0)  # the sampler found these tokens e² less likely
    assert torch.allclose(drifted[generated], torch.full((int(generated.sum()),), 3.0))
    assert math.isclose(float(truncated_is_weights(torch.tensor([0.0]), torch.tensor([0.5]), 3.0)), math.exp(-0.5),
                        rel_tol=1e-6)
