"""Chaining the curriculum across ``videor4 train`` (SFT stages) and verl (RL stages).

Every stage starts from the previous stage's ``final/`` (a ``save_pretrained`` model + processor with the view
it was trained with, ``videor4_view.json``), as in ``videor4 train``:

* ``sft-recipe`` writes a one-stage recipe (the SFT stage of a bundled or given recipe, with its prompt/ops
  and hyper-parameters unchanged) for ``videor4 train --model PREVIOUS/final``;
* ``finalize`` turns a verl run's last checkpoint (``global_step_N/actor/huggingface``, saved because the verl
  configs list ``hf_model`` in ``checkpoint.save_contents``) into ``final/``: the model, the processor files
  of the stage's starting checkpoint when verl did not write them, and the view of the exported data.

``python -m videor4.training.verl_plugin.stages sft-recipe|finalize …`` (no verl needed).
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

import yaml

from videor4.contracts.errors import UserError
from videor4.contracts.view import ShardView, save_view

# processor/tokenizer files a Qwen2.5-VL final/ needs next to the weights
PROCESSOR_FILES = ("preprocessor_config.json", "video_preprocessor_config.json", "processor_config.json",
                   "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
                   "vocab.json", "merges.txt", "chat_template.json", "chat_template.jinja", "generation_config.json")


def sft_stage_recipe(recipe: str | Path, stage: str, out: str | Path) -> Path:
    """Write a recipe holding only SFT stage ``stage`` of ``recipe`` (same view and hyper-parameters)."""
    from videor4.training.curriculum import load_recipe

    loaded = load_recipe(recipe)
    chosen = [s for s in loaded.stages if s.name == stage]
    if not chosen or chosen[0].kind != "sft":
        names = [s.name for s in loaded.stages if s.kind == "sft"]
        raise UserError(f"recipe {loaded.name} has no SFT stage {stage!r} (SFT stages: {names}); "
                        "RL stages run on verl")
    one = loaded.model_copy(update={"name": f"{loaded.name}-{stage}", "stages": chosen})
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    header = f"# stage {stage} of recipe {loaded.name}, written by videor4.training.verl_plugin.stages\n"
    out.write_text(header + yaml.safe_dump(one.model_dump(mode="json"), sort_keys=False), encoding="utf-8")
    return out


def latest_step(checkpoints: Path) -> Path:
    """``global_step_N`` named by verl's tracker file, else the highest N present."""
    tracker = checkpoints / "latest_checkpointed_iteration.txt"
    if tracker.is_file():
        step = checkpoints / f"global_step_{tracker.read_text().strip()}"
        if step.is_dir():
            return step
    steps = sorted((p for p in checkpoints.glob("global_step_*") if re.fullmatch(r"global_step_\d+", p.name)),
                   key=lambda p: int(p.name.rsplit("_", 1)[1]))
    if not steps:
        raise UserError(f"{checkpoints}: no global_step_N checkpoint (trainer.default_local_dir of the verl run)")
    return steps[-1]


def finalize(checkpoints: str | Path, out: str | Path, *, view: ShardView | None = None,
             init_model: str | Path | None = None) -> Path:
    """Copy the last verl checkpoint's Hugging Face model to ``out`` (a stage ``final/``)."""
    step = latest_step(Path(checkpoints))
    hf = step / "actor" / "huggingface"
    if not (hf / "config.json").is_file() or not any(hf.glob("*.safetensors")):
        raise UserError(f"{hf}: no Hugging Face weights; run verl with actor.checkpoint.save_contents including "
                        "hf_model (the bundled configs do), or merge with `python -m verl.model_merger merge`")
    out = Path(out)
    if out.exists():
        shutil.rmtree(out)
    shutil.copytree(hf, out)
    if init_model is not None:
        for name in PROCESSOR_FILES:
            src = Path(init_model) / name
            if src.is_file() and not (out / name).exists():
                shutil.copy2(src, out / name)
    if view is not None:
        save_view(out, view)
    return out


def export_view(view_json: str | Path, stage: str) -> ShardView:
    """The view a ``videor4 shards export --format verl`` run recorded for ``stage`` (its ``view.json``)."""
    data = json.loads(Path(view_json).read_text(encoding="utf-8"))
    if stage not in data.get("views", {}):
        raise UserError(f"{view_json}: no view for stage {stage} (have {sorted(data.get('views', {}))})")
    return ShardView.model_validate(data["views"][stage])


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m videor4.training.verl_plugin.stages", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    sr = sub.add_parser("sft-recipe", help="write a one-stage recipe for an SFT stage of a recipe")
    sr.add_argument("--recipe", required=True, help="bundled recipe name or YAML (e.g. qwen2.5-vl-7b)")
    sr.add_argument("--stage", required=True, help="SFT stage name (e.g. drp-sft, crp-sft)")
    sr.add_argument("--out", required=True, type=Path, help="recipe YAML to write")
    fi = sub.add_parser("finalize", help="make final/ from a verl run's last checkpoint")
    fi.add_argument("--checkpoints", required=True, type=Path, help="the verl run's trainer.default_local_dir")
    fi.add_argument("--out", required=True, type=Path, help="final/ directory to write")
    fi.add_argument("--view", type=Path, help="view.json of the verl export (records the view in final/)")
    fi.add_argument("--stage", default="rld", help="stage whose exported view to record (rld, rlc)")
    fi.add_argument("--init", type=Path, help="the stage's starting checkpoint (processor files if verl wrote none)")
    args = parser.parse_args(argv)
    try:
        if args.command == "sft-recipe":
            print(sft_stage_recipe(args.recipe, args.stage, args.out))
        else:
            view = export_view(args.view, args.stage) if args.view else None
            print(finalize(args.checkpoints, args.out, view=view, init_model=args.init))
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
