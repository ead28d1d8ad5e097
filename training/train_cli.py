"""``videor4 train --recipe FILE.yaml [--output DIR] [--resume] …``: run a curriculum recipe.

Flags override the recipe's top-level fields, so one YAML serves several machines and datasets. Under
``accelerate launch`` every process runs this same command; accelerate reads the launcher's config
(``training/accelerate_configs/*.yaml``) from the environment.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def _run(args: argparse.Namespace) -> int:
    from videor4.contracts.errors import user_input
    from videor4.training.curriculum import load_recipe, run_curriculum

    with user_input(f"recipe {args.recipe}"):  # a binary or unreadable file: one line, not a traceback
        recipe = load_recipe(args.recipe, model=args.model, shards_dir=args.shards, data_root=args.data_root)
    output = Path(args.output) if args.output else Path("runs") / recipe.name
    finals = run_curriculum(recipe, output, resume=args.resume)
    print(json.dumps({"recipe": recipe.name, "output": str(output),
                      "stages": {s.name: str(f) for s, f in zip(recipe.stages, finals)},
                      "final_model": str(finals[-1])}, indent=2))
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``train`` command to the top-level CLI."""
    p = subparsers.add_parser(
        "train", help="run a training curriculum from a recipe YAML",
        description="Run the stages of a recipe (DRP-SFT → RLd → CRP-SFT → RLc by default), each from the "
        "previous stage's checkpoint. See docs/training.md.",
    )
    p.add_argument("--recipe", required=True, metavar="FILE",
                   help="recipe YAML, or a bundled recipe name (tiny-cpu, qwen2.5-vl-7b, ablation-…)")
    p.add_argument("--output", metavar="DIR", help="run directory (default: runs/<recipe name>)")
    p.add_argument("--resume", action="store_true",
                   help="skip finished stages and continue an unfinished one from its latest checkpoint")
    p.add_argument("--model", metavar="DIR", help="starting checkpoint directory (overrides the recipe's model)")
    p.add_argument("--shards", metavar="DIR", help="shards directory (overrides the recipe's shards_dir)")
    p.add_argument("--data-root", metavar="DIR", help="dataset root of the shards' videos (overrides data_root)")
    p.set_defaults(func=_run, loads_models=True)
