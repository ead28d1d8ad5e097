"""Configuration of a GRPO stage (RLd, RLc): rollouts, advantages, the clipped objective, KL, rewards."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from videor4.training.rewards import RewardSpec, video_r4_rewards
from videor4.training.rollout import RolloutLimits
from videor4.training.sft_config import OptimConfig


class GRPOConfig(OptimConfig):
    """Group-relative policy optimisation with tool-using multi-turn rollouts (DESIGN §5)."""

    learning_rate: float = Field(1e-6, gt=0, description="peak learning rate (AdamW); 1e-6 in Video-R1/Pixel-Reasoner")
    num_generations: int = Field(8, ge=2, description="G: rollouts per prompt (a group)")
    prompts_per_step: int = Field(1, ge=1, description="prompts per optimizer step on one device (× G rollouts)")
    micro_batch_size: int = Field(1, ge=1, description="rollouts per forward/backward pass")
    num_iterations: int = Field(
        1, ge=1, description="μ: optimizer steps per batch of rollouts; >1 makes the PPO ratio/clip bite"
    )
    epsilon: float = Field(0.2, gt=0, description="PPO clip range ε (ratio clipped to [1-ε, 1+ε])")
    epsilon_high: float | None = Field(None, gt=0, description="upper clip range (DAPO clip-higher); None = epsilon")
    beta: float = Field(
        0.04, ge=0, description="β_KL: weight of the KL to the frozen reference (0 = no reference model is loaded)"
    )
    advantage_epsilon: float = Field(1e-4, gt=0, description="ε in A = (R - mean) / (std + ε)")
    scale_rewards: bool = Field(True, description="divide by the group std (False: Dr.GRPO, mean-centering only)")
    loss_type: Literal["token", "sequence"] = Field(
        "token", description="'token': mean over all completion tokens of the batch; 'sequence': per-rollout "
        "token mean, then mean over rollouts (original GRPO)"
    )
    filter_zero_advantage: bool = Field(
        True, description="drop groups whose rewards are all equal (zero advantage, no learning signal)"
    )
    temperature: float = Field(1.0, gt=0, description="sampling temperature (log-probs use the same temperature)")
    top_p: float = Field(1.0, gt=0, le=1, description="nucleus sampling mass")
    rollout: RolloutLimits = Field(default_factory=RolloutLimits, description="token budgets of one rollout "
                                   "(max_new_tokens, max_turn_tokens, max_context_tokens); the view is the recipe's")
    engine: Literal["hf", "vllm"] = Field("hf", description="rollout engine: transformers generate or vLLM")
    engine_batch_size: int = Field(16, ge=1, description="conversations per HF generate call")
    vllm_gpu_memory_utilization: float = Field(
        0.3, gt=0, le=1, description="vLLM colocated with training: GPU memory share for its weights + KV cache")
    rewards: list[RewardSpec] = Field(
        default_factory=video_r4_rewards, description="enabled rewards with weights (R' = Σ weight · reward)"
    )
    feature_batch_size: int = Field(16, ge=1, description="images per vision-encoder pass for R_div/R_rep features")
    feature_encoder: str | None = Field(
        None, description="checkpoint directory whose vision tower (frozen) embeds images for R_div/R_rep; None = "
        "the stage's starting checkpoint (the reference policy), so the reward does not move as the policy learns")
    is_correction: bool | None = Field(
        None, description="truncated importance-sampling correction between the sampler's and the trainer's "
        "log-probs (TRL's token_truncate); None = on with the vLLM engine, off with HF generate (same model)")
    is_cap: float = Field(3.0, gt=0, description="upper bound of the per-token importance weight (TRL's default 3)")
