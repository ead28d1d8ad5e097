"""``videor4 demo``: the whole pipeline on the bundled sample dataset."""

from __future__ import annotations

import argparse
from pathlib import Path

from videor4.pipelines.curate_cli import add_curation_options, run_from_args


def _handle(args: argparse.Namespace) -> int:
    from videor4.curation.sample import SAMPLE_SPLIT, sample_root

    out = args.out or Path("videor4-demo")
    print(f"videor4 demo: bundled sample dataset at {sample_root()}")
    return run_from_args(args, sample_root(), SAMPLE_SPLIT, out)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo", help="run curation end-to-end on the bundled sample dataset",
        description="Run the curation pipeline on the sample videos shipped inside the package "
        "(real, freely licensed text-rich media; see its ATTRIBUTION.md) and print where the outputs are.")
    add_curation_options(p)
    p.set_defaults(func=_handle)
