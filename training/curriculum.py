"""The four-stage curriculum (DRP-SFT → RLd → CRP-SFT → RLc) described by one recipe YAML.

A recipe lists stages; each stage selects shard rows (stage names + limit), names its trainer (``sft`` or
``grpo``) and that trainer's config. Stage ``k`` starts from stage ``k−1``'s exported ``final/`` directory (the
first from the recipe's model), and for GRPO stages the frozen KL reference is that same starting point — the
policy at the start of the stage. Output layout::

    <output>/recipe.yaml                 the resolved recipe (a resumed run must match it)
    <output>/base-model/                 only when the recipe builds the tiny model
    <output>/01-drp-sft/{checkpoints,final,tb}/  metrics.jsonl  stage_done.json
    <output>/02-rld/ …

``--resume`` skips stages with a ``stage_done.json`` and continues an unfinished stage from its latest
checkpoint; without it an output directory that already holds stages is an error (never silently overwritten).
"""

from __future__ import annotations

import gc
import json
import time
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from videor4.contracts.atomic import write_json_atomic, write_text_atomic
from videor4.contracts.bundled import resolve_yaml
from videor4.contracts.errors import UserError, describe_validation_error, user_input
from videor4.contracts.executor import OpsConfig
from videor4.contracts.run_lock import run_lock
from videor4.contracts.shard_io import read_manifest, read_training_rows
from videor4.contracts.shard_schema import COT_STAGES, RL_STAGES, CoTRow, RLRow
from videor4.contracts.view import PromptConfig, ShardView, resolve_view, save_view, view_from_manifest
from videor4.training.grpo_config import GRPOConfig
from videor4.training.rewards import required_features
from videor4.training.sft_config import SFTConfig

RECIPES_DIR = Path(__file__).resolve().parent / "recipes"
DONE = "stage_done.json"


class DataSelection(BaseModel):
    """Which shard rows a stage trains on."""

    model_config = ConfigDict(extra="forbid")

    stages: list[Literal["drp", "crp", "rld", "rlc"]] = Field(description="shard stages to read, e.g. [drp]")
    limit: int | None = Field(None, ge=1, description="use at most this many rows (in shard order)")
    shards_dir: str | None = Field(None, description="overrides the recipe's shards_dir for this stage")


class SFTStage(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="stage name (directory <NN>-<name>)")
    kind: Literal["sft"] = "sft"
    data: DataSelection
    sft: SFTConfig = Field(default_factory=SFTConfig, description="trainer config")


class GRPOStage(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="stage name (directory <NN>-<name>)")
    kind: Literal["grpo"] = "grpo"
    data: DataSelection
    grpo: GRPOConfig = Field(default_factory=GRPOConfig, description="trainer config")


Stage = Annotated[SFTStage | GRPOStage, Field(discriminator="kind")]


class Recipe(BaseModel):
    """A whole curriculum: model, data, the shared view of the data (prompt + ops) and the stages in order."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="recipe name (logged)")
    model: str | None = Field(None, description="local directory of the starting checkpoint (never downloaded)")
    build_tiny_model: bool = Field(False, description="start from the tiny random Qwen2.5-VL (CPU smoke runs)")
    shards_dir: str | None = Field(None, description="shards directory (cot/, rl/, manifest.json)")
    data_root: str | None = Field(None, description="dataset root the shards' video paths are relative to")
    mixed_precision: Literal["auto", "no", "bf16", "fp16"] = Field(
        "auto", description="'auto' = bf16 on capable CUDA devices, fp32 on CPU"
    )
    prompt: PromptConfig | None = Field(
        None, description="the model's view; unset = the view recorded in the shards' manifest. Fields set here "
        "replace the recorded ones; a field that changes what trajectories state (frames, pixel budgets) must "
        "equal the recorded value or the run is refused")
    ops: OpsConfig | None = Field(
        None, description="clip/crop budgets and geometry; unset = the shards' recorded view. Budgets (max_calls, "
        "max_images) may differ from synthesis; crop geometry and clip_frames may not")
    stages: list[Stage] = Field(min_length=1, description="stages in order; each starts from the previous one")


def resolve_recipe_path(recipe: str | Path) -> Path:
    """A YAML path, or the name of a bundled recipe (``tiny-cpu``, ``qwen2.5-vl-7b``, …)."""
    return resolve_yaml(recipe, RECIPES_DIR, "recipe")


def load_recipe(recipe: str | Path, **overrides: Any) -> Recipe:
    """Parse and validate a recipe; non-None ``overrides`` replace top-level fields (the CLI flags)."""
    path = resolve_recipe_path(recipe)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise UserError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(raw, dict):
        raise UserError(f"{path}: a recipe is a mapping with name, model, stages, …")
    raw.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return Recipe.model_validate(raw)
    except ValidationError as exc:
        raise UserError(f"{path}: {describe_validation_error(exc)}") from None


def stage_dirs(recipe: Recipe, output_dir: Path) -> list[Path]:
    return [output_dir / f"{k:02d}-{stage.name}" for k, stage in enumerate(recipe.stages, start=1)]


def _check_output(recipe: Recipe, output_dir: Path, resume: bool) -> None:
    """Refuse an output directory holding trained stages of this run (without --resume) or of another recipe.

    ``recipe.yaml`` is only (re)written when no stage of a different recipe has started there, so pointing
    ``--output`` at another recipe's run never overwrites it.
    """
    resolved = yaml.safe_dump(recipe.model_dump(mode="json"), sort_keys=False)
    saved = output_dir / "recipe.yaml"
    with user_input(saved):
        previous = saved.read_text(encoding="utf-8") if saved.is_file() else None
    any_stage = any(p.is_dir() for p in output_dir.glob("[0-9][0-9]-*"))
    if previous is not None and previous != resolved and resume:
        raise UserError(f"{saved}: the recipe changed since this run started; resume with the same recipe")
    if previous is not None and previous != resolved and any_stage:
        try:
            name = (yaml.safe_load(previous) or {}).get("name", "?")
        except (yaml.YAMLError, AttributeError):
            name = "?"
        raise UserError(f"{output_dir} holds a run of a different recipe ({name!r}, {saved}); choose another --output")
    started = any(d.exists() for d in stage_dirs(recipe, output_dir))
    if started and not resume:
        raise UserError(f"{output_dir} already holds a run; pass --resume to continue it or choose another --output")
    write_text_atomic(saved, resolved)


def _base_model(recipe: Recipe, output_dir: Path) -> Path:
    if recipe.model:
        return Path(recipe.model)
    if not recipe.build_tiny_model:
        raise UserError("the recipe names no model; set `model:` in the YAML or pass --model DIR")
    base = output_dir / "base-model"
    if not (base / "config.json").is_file():
        from videor4.training.tiny_model import build_tiny_model

        build_tiny_model(base, seed=0)
    return base


def _data_root(recipe: Recipe, manifest: dict[str, Any]) -> Path | None:
    """``data_root`` of the recipe/CLI, else the dataset root curation recorded in the shards' manifest."""
    root = recipe.data_root or manifest.get("data_root")
    return Path(root) if root else None


def stage_view(recipe: Recipe, manifest: dict[str, Any], stage_name: str) -> ShardView:
    """The view a stage renders with: the shards' recorded view, with the recipe's compatible settings."""
    return resolve_view(view_from_manifest(manifest), recipe.prompt, recipe.ops,
                        f"recipe {recipe.name}, stage {stage_name}")


def run_stage(recipe: Recipe, stage: SFTStage | GRPOStage, init_dir: Path, stage_dir: Path,
              stop_after: int | None = None, **trainer_kwargs: Any) -> Path | None:
    """Train one stage from ``init_dir``; returns its ``final/`` dir (None when stopped early by ``stop_after``).

    The stage gets its own Accelerator and trainer, freed at the end: its checkpoints hold only its own model,
    and the next stage starts with no engines, optimizer states or generation engines left over.
    ``trainer_kwargs`` go to the trainer (tests pass a scripted rollout engine this way).
    """
    from videor4.training.features import VisionTowerEncoder, load_vision_tower
    from videor4.training.grpo_trainer import GRPOTrainer
    from videor4.training.sft_trainer import SFTTrainer
    from videor4.training.stage_trainer import compute_dtype, load_policy, make_accelerator

    shards = stage.data.shards_dir or recipe.shards_dir
    if shards is None:
        raise UserError(f"stage {stage.name}: no shards directory; set shards_dir in the recipe or pass --shards DIR")
    allowed = COT_STAGES if stage.kind == "sft" else RL_STAGES
    wrong = [s for s in stage.data.stages if s not in allowed]
    if wrong:
        raise UserError(f"stage {stage.name}: a {stage.kind} stage reads {'/'.join(allowed)} shards, not {wrong}")
    rows = read_training_rows(shards, stage.data.stages, stage.data.limit)
    manifest = read_manifest(Path(shards))
    data_root = _data_root(recipe, manifest)
    view = stage_view(recipe, manifest, stage.name)
    accelerator = make_accelerator(recipe.mixed_precision)
    model, processor = load_policy(init_dir)
    common = dict(prompt=view.prompt, ops=view.ops, accelerator=accelerator, name=stage.name, **trainer_kwargs)
    if isinstance(stage, SFTStage):
        assert all(isinstance(r, CoTRow) for r in rows)
        trainer: Any = SFTTrainer(model, processor, rows, stage.sft, stage_dir, data_root=data_root, **common)
    else:
        assert all(isinstance(r, RLRow) for r in rows)
        if data_root is None:
            raise UserError(f"stage {stage.name}: rollouts decode the videos; give the data root (--data-root)")
        ref = load_policy(init_dir)[0] if stage.grpo.beta else None
        if required_features(stage.grpo.rewards) and "feature_encoder" not in common:
            tower = load_vision_tower(stage.grpo.feature_encoder or init_dir, accelerator.device,
                                      compute_dtype(accelerator))
            common["feature_encoder"] = VisionTowerEncoder(tower, processor, stage.grpo.feature_batch_size)
        trainer = GRPOTrainer(model, processor, rows, stage.grpo, stage_dir, data_root=data_root, ref_model=ref,
                              **common)
    started = time.time()
    try:
        final = trainer.train(stop_after=stop_after)
        if final is not None and accelerator.is_main_process:
            save_view(final, view)
            write_json_atomic(stage_dir / DONE, {
                "stage": stage.name, "kind": stage.kind, "init": str(init_dir), "final": str(final),
                "steps": trainer.total_steps, "rows": len(rows), "seconds_this_run": round(time.time() - started, 2),
            }, indent=2)
        accelerator.wait_for_everyone()
    finally:
        trainer.close()
        del trainer, model
        gc.collect()
    return final


def run_curriculum(recipe: Recipe, output_dir: str | Path, resume: bool = False) -> list[Path]:
    """Run (or resume) every stage in order; returns the ``final/`` directory of each stage.

    ``output_dir`` is locked for the run (a second ``videor4 train`` into it is refused, naming the holder);
    under ``accelerate launch`` every rank runs this and only rank 0 takes the lock.
    """
    with run_lock(output_dir, f"videor4 train --recipe {recipe.name}", main_process_only=True):
        return _run_curriculum(recipe, output_dir, resume)


def _run_curriculum(recipe: Recipe, output_dir: str | Path, resume: bool = False) -> list[Path]:
    from accelerate import PartialState

    from videor4.training.stage_trainer import no_gpu

    state = PartialState(cpu=no_gpu())  # the launcher's processes (one without a launcher); each stage has its own Accelerator
    output_dir = Path(output_dir)
    if state.is_main_process:
        output_dir.mkdir(parents=True, exist_ok=True)
        _check_output(recipe, output_dir, resume)
        _base_model(recipe, output_dir)
    state.wait_for_everyone()
    current = _base_model(recipe, output_dir)  # built above by the main process: now only its path
    finals: list[Path] = []
    for stage, stage_dir in zip(recipe.stages, stage_dirs(recipe, output_dir)):
        marker = stage_dir / DONE
        if marker.is_file():
            current = Path(json.loads(marker.read_text(encoding="utf-8"))["final"])
            print(f"[videor4 train] {stage.name}: done, skipping (final: {current})")
        else:
            print(f"[videor4 train] {stage.name}: {stage.kind} from {current}")
            final = run_stage(recipe, stage, current, stage_dir)
            assert final is not None
            current = final
        finals.append(current)
    return finals
