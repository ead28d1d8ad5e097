"""``videor4 eval reward``: a checkpoint's GRPO reward on RL prompts it never trained on.

Why: a GRPO stage logs the reward of the prompts it is training on, which says little about whether the policy
improved. The question an RL stage must answer is held out: sample the stage's rollouts on prompts from another
split and score them with the stage's own rewards. This module does exactly what the trainer's rollout step does
(:meth:`~videor4.training.grpo_trainer.GRPOTrainer.generate_batch`) — same view and executor, same rollout limits,
temperature and reward functions with their weights, taken from the recipe's stage — without training, and with
a fixed seed, so two checkpoints are compared on the same prompts with the same sampling noise source.

The reward's mean is reported with its standard error over *prompts* (the samples of one prompt are correlated;
prompts are the independent units), so a difference between two checkpoints can be judged against its noise.
The frozen feature encoder of R_div/R_rep is the stage's starting checkpoint in training; pass the same
``--feature-encoder`` when comparing checkpoints, or the two rewards measure diversity in different spaces.
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from videor4.contracts.errors import UserError
from videor4.contracts.shard_schema import RLRow
from videor4.contracts.view import ShardView
from videor4.training.grpo_config import GRPOConfig


def reward_on_rows(model_dir: str | Path, rows: Sequence[RLRow], grpo: GRPOConfig, view: ShardView,
                   data_root: str | Path, *, samples: int | None = None, seed: int = 0,
                   feature_encoder: str | Path | None = None, media: Any = None) -> dict[str, Any]:
    """Roll out ``samples`` (default: the stage's G) completions per row with ``model_dir`` and score them.

    Returns the mean total reward, its standard error over prompts, each component's mean, accuracy, calls per
    rollout and stop reasons, with the counts, and each prompt's mean reward (``per_prompt``, by row sample_id:
    two checkpoints evaluated on the same rows compare prompt by prompt).
    """
    import functools

    import torch

    from videor4.contracts.media import MediaConfig
    from videor4.training.features import VisionTowerEncoder, load_vision_tower
    from videor4.training.grpo_trainer import group_samples, rollout_metrics, row_executor, score_rollouts
    from videor4.training.rewards import required_features
    from videor4.training.rollout import HFEngine, HFEngineConfig, RolloutConfig, run_rollouts
    from videor4.training.stage_trainer import load_policy

    if not rows:
        raise UserError("no RL rows to evaluate the reward on")
    g = samples or grpo.num_generations
    model, processor = load_policy(model_dir)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = model.to(device).eval()
    engine = HFEngine(model, processor, HFEngineConfig(do_sample=True, temperature=grpo.temperature,
                                                       top_p=grpo.top_p, batch_size=grpo.engine_batch_size))
    needs = required_features(grpo.rewards)
    encoder = None
    if needs:
        tower = load_vision_tower(feature_encoder or model_dir, device)
        encoder = VisionTowerEncoder(tower, processor, grpo.feature_batch_size)
    config = RolloutConfig.of(grpo.rollout, view)
    executor = functools.partial(row_executor, view=view, data_root=data_root, media=media or MediaConfig())

    torch.manual_seed(seed)
    rewards: list[float] = []
    components: dict[str, list[float]] = {}
    metrics: list[dict[str, float]] = []
    per_prompt: dict[str, float] = {}  # row sample_id -> mean reward of its samples
    chunk = max(1, grpo.engine_batch_size // g)  # whole groups per generate batch
    for start in range(0, len(rows), chunk):
        part = rows[start : start + chunk]
        batch = group_samples(part, g, data_root)
        with torch.no_grad():
            rollouts = run_rollouts(engine, batch, executor, config)
        got, parts = score_rollouts(grpo.rewards, rollouts, batch, encoder, needs)
        rewards += got
        for name, values in parts.items():
            components.setdefault(name, []).extend(values)
        per_prompt.update({row.sample_id: float(np.mean(got[j * g : (j + 1) * g])) for j, row in enumerate(part)})
        metrics.append({**rollout_metrics(rollouts, got, parts, [s.answers for s in batch], 0, len(part)),
                        "n": len(rollouts)})
    n = sum(m["n"] for m in metrics)

    def mean_of(key: str) -> float:
        return sum(m[key] * m["n"] for m in metrics) / n

    means = list(per_prompt.values())
    sem = float(np.std(means, ddof=1) / math.sqrt(len(means))) if len(means) > 1 else float("nan")
    return {
        "model": str(model_dir), "prompts": len(rows), "samples_per_prompt": g, "rollouts": n, "seed": seed,
        "reward": float(np.mean(rewards)), "reward_sem": sem,
        "components": {name: float(np.mean(v)) for name, v in components.items()},
        "accuracy": mean_of("accuracy"), "calls_per_rollout": mean_of("calls_per_rollout"),
        "stop": {key.split("/", 1)[1]: mean_of(key) for key in metrics[0] if key.startswith("stop/")},
        "per_prompt": per_prompt,
    }


def register_reward(eval_subparsers: argparse._SubParsersAction) -> None:
    """Add ``eval reward`` to the ``eval`` command group."""
    p = eval_subparsers.add_parser(
        "reward", help="a checkpoint's GRPO reward on held-out RL prompts (same rollouts and rewards as training)",
        description="Sample the rollouts of a recipe's GRPO stage on RL rows of shards the checkpoint did not "
        "train on (e.g. the curated test split) and score them with that stage's rewards and weights. Prints JSON: "
        "mean reward ± standard error over prompts, each reward component, accuracy, calls, stop reasons.")
    p.add_argument("--model", required=True, type=Path, help="checkpoint directory (a stage's final/)")
    p.add_argument("--shards", required=True, type=Path, help="shards directory holding the held-out RL rows")
    p.add_argument("--recipe", required=True, help="recipe YAML or bundled recipe name (its stage gives rewards, "
                   "temperature, rollout limits and the RL shard stages)")
    p.add_argument("--stage", required=True, help="name of the recipe's GRPO stage, e.g. rld")
    p.add_argument("--data-root", type=Path, default=None, help="dataset root (default: the shards' manifest's)")
    p.add_argument("--samples", type=int, default=None, help="rollouts per prompt (default: the stage's G)")
    p.add_argument("--limit", type=int, default=None, help="only the first N prompts")
    p.add_argument("--seed", type=int, default=0, help="sampling seed (the same for checkpoints compared)")
    p.add_argument("--feature-encoder", type=Path, default=None,
                   help="checkpoint whose vision tower embeds images for R_div/R_rep (default: --model); give the "
                   "stage's starting checkpoint to compare checkpoints in one feature space")
    p.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    p.set_defaults(func=_run, loads_models=True)


def _run(args: argparse.Namespace) -> int:
    from videor4.contracts.atomic import write_json_atomic
    from videor4.contracts.shard_io import read_manifest, read_training_rows
    from videor4.training.curriculum import GRPOStage, load_recipe, stage_view

    if args.samples is not None and args.samples < 1 or args.limit is not None and args.limit < 1:
        raise UserError("--samples and --limit must be at least 1")
    recipe = load_recipe(args.recipe)
    stage = next((s for s in recipe.stages if s.name == args.stage), None)
    if not isinstance(stage, GRPOStage):
        names = ", ".join(s.name for s in recipe.stages if isinstance(s, GRPOStage)) or "none"
        raise UserError(f"recipe {recipe.name}: no GRPO stage named {args.stage!r} (GRPO stages: {names})")
    rows = read_training_rows(args.shards, stage.data.stages, args.limit)
    manifest = read_manifest(args.shards)
    data_root = args.data_root or manifest.get("data_root")
    if not data_root:
        raise UserError(f"{args.shards}: the manifest records no data_root; pass --data-root")
    result = reward_on_rows(args.model, rows, stage.grpo, stage_view(recipe, manifest, stage.name), data_root,
                            samples=args.samples, seed=args.seed, feature_encoder=args.feature_encoder)
    if args.out is not None:
        write_json_atomic(args.out, result, indent=2)
    print(json.dumps(result, indent=2))
    return 0
