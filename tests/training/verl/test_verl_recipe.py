"""The verl RLd/RLc configs carry the bundled 7B recipe's hyper-parameters, load through verl's own loaders,
and the stage-chaining helpers turn recipes and verl checkpoints into the curriculum's ``final/`` layout.

Composition uses Hydra with verl's packaged ``ppo_trainer`` defaults (the config ``verl.trainer.main_ppo``
reads); nothing is launched (a verl run needs GPUs and vLLM: scripts/gpu_check_verl.sh).
"""

from __future__ import annotations

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from verl.experimental.agent_loop.agent_loop import _agent_loop_registry
from verl.experimental.agent_loop.tool_parser import ToolParser
from verl.trainer.ppo.reward import resolve_reward_manager_cls
from verl.utils.import_utils import resolve_config_path

from videor4.contracts.view import load_view
from videor4.training.curriculum import load_recipe
from videor4.training.verl_plugin import AGENT_NAME, CONFIGS, TOOL_PARSER
from videor4.training.verl_plugin.rewards import VerlRewardSettings, VideoR4RewardManager
from videor4.training.verl_plugin.stages import finalize, sft_stage_recipe

from .conftest import REPO

GPUS = 8


def composed(stage: str):
    with initialize_config_dir(config_dir=str(CONFIGS), version_base=None):
        return compose(f"{stage}-qwen2.5-vl-7b", overrides=[
            "actor_rollout_ref.model.path=/models/start", f"data.train_files=/data/{stage}.parquet",
            f"trainer.default_local_dir=/runs/{stage}/checkpoints"])


@pytest.mark.parametrize("stage", ["rld", "rlc"])
def test_verl_config_equals_the_bundled_recipe(stage, monkeypatch):
    monkeypatch.chdir(REPO)  # the configs' relative paths are from the repository root
    cfg = composed(stage)
    recipe = load_recipe("qwen2.5-vl-7b")
    grpo = next(s for s in recipe.stages if s.name == stage).grpo
    actor, rollout = cfg.actor_rollout_ref.actor, cfg.actor_rollout_ref.rollout
    assert cfg.trainer.n_gpus_per_node == GPUS
    assert cfg.data.train_batch_size == grpo.prompts_per_step * GPUS
    assert actor.ppo_mini_batch_size == cfg.data.train_batch_size and actor.ppo_epochs == grpo.num_iterations
    assert actor.ppo_micro_batch_size_per_gpu == grpo.micro_batch_size
    assert rollout.n == grpo.num_generations
    assert actor.optim.lr == grpo.learning_rate and actor.optim.lr_scheduler_type == grpo.lr_scheduler == "constant"
    assert actor.optim.weight_decay == grpo.weight_decay and list(actor.optim.betas) == list(grpo.adam_betas)
    assert actor.optim.clip_grad == actor.grad_clip == grpo.max_grad_norm
    assert actor.clip_ratio == actor.clip_ratio_low == grpo.epsilon
    assert actor.clip_ratio_high == (grpo.epsilon_high or grpo.epsilon)
    assert actor.use_kl_loss == (grpo.beta > 0) and actor.kl_loss_coef == grpo.beta
    assert actor.kl_loss_type == "low_var_kl" and actor.loss_agg_mode == {"token": "token-mean"}[grpo.loss_type]
    assert actor.entropy_coeff == 0 and "hf_model" in actor.checkpoint.save_contents
    assert rollout.temperature == grpo.temperature and rollout.top_p == grpo.top_p and rollout.top_k == -1
    assert cfg.algorithm.adv_estimator == "grpo" and cfg.algorithm.norm_adv_by_std_in_grpo == grpo.scale_rewards
    assert cfg.data.max_prompt_length + cfg.data.max_response_length == grpo.rollout.max_context_tokens
    assert cfg.actor_rollout_ref.model.enable_gradient_checkpointing == grpo.gradient_checkpointing
    assert cfg.trainer.save_freq == grpo.save_steps and cfg.trainer.total_epochs == grpo.num_epochs
    assert rollout.multi_turn.max_parallel_calls == recipe.ops.max_calls
    assert rollout.limit_images == recipe.ops.max_images
    # the plug-in is wired: agent loop, tool parser, tool YAML, reward manager, rewards of this stage
    assert rollout.agent.default_agent_loop == AGENT_NAME and rollout.multi_turn.format == TOOL_PARSER
    agent_loops = OmegaConf.load(resolve_config_path(rollout.agent.agent_loop_config_path))
    assert [a.name for a in agent_loops] == [AGENT_NAME]
    import videor4.training.verl_plugin.agent_loop  # noqa: F401 - what verl's instantiate of the YAML imports

    assert AGENT_NAME in _agent_loop_registry and TOOL_PARSER in ToolParser._registry
    assert OmegaConf.load(resolve_config_path(rollout.multi_turn.tool_config_path)).tools[0].config.name == "clip"
    assert resolve_reward_manager_cls(cfg) is VideoR4RewardManager and cfg.reward.num_workers == 1
    settings = VerlRewardSettings.model_validate(OmegaConf.to_container(cfg.reward.reward_kwargs.videor4))
    assert settings.stage == stage and settings.reward_specs() == grpo.rewards
    assert cfg.trainer.experiment_name == f"qwen2.5-vl-7b-{stage}"


def test_sft_stage_recipe_is_the_bundled_stage(tmp_path):
    bundled = load_recipe("qwen2.5-vl-7b")
    for stage in ("drp-sft", "crp-sft"):
        one = load_recipe(sft_stage_recipe("qwen2.5-vl-7b", stage, tmp_path / f"{stage}.yaml"))
        assert [s.name for s in one.stages] == [stage]
        assert one.stages[0] == next(s for s in bundled.stages if s.name == stage)
        assert one.prompt == bundled.prompt and one.ops == bundled.ops
    with pytest.raises(Exception, match="RL stages run on verl"):
        sft_stage_recipe("qwen2.5-vl-7b", "rld", tmp_path / "x.yaml")


def test_finalize_makes_final_from_the_last_verl_checkpoint(tiny_model_dir, sample_rl, tmp_path):
    import shutil

    from transformers import AutoModelForImageTextToText, AutoProcessor

    checkpoints = tmp_path / "checkpoints"
    for step in (50, 100):  # verl's layout: global_step_N/actor/huggingface (hf_model in save_contents)
        hf = checkpoints / f"global_step_{step}" / "actor" / "huggingface"
        hf.mkdir(parents=True)
        for f in ("config.json", "model.safetensors", "generation_config.json"):
            shutil.copy(tiny_model_dir / f, hf / f)
    (checkpoints / "latest_checkpointed_iteration.txt").write_text("100")
    final = finalize(checkpoints, tmp_path / "final", view=sample_rl.view, init_model=tiny_model_dir)
    assert load_view(final) == sample_rl.view  # evaluation renders the view the stage trained on
    AutoModelForImageTextToText.from_pretrained(final)  # a complete checkpoint: weights…
    AutoProcessor.from_pretrained(final)  # …and the processor copied from the stage's start
