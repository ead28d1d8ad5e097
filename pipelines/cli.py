"""The single ``videor4`` command-line entry point (DESIGN §7).

Each command group lives in the module that owns it and exposes
``register(subparsers)``; this file only wires them together, lazily, so
``videor4 eval score`` never pays for importing torch or Prefect.

Exit codes: 0 success, 2 usage or data error (one line on stderr, no
traceback), 1 an unexpected internal error.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.util
import io
import logging
import sys
from collections.abc import Sequence

from videor4 import __version__
from videor4.contracts.errors import UserError

# command -> (module that registers it, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("videor4.pipelines.demo_cli", "run curation end-to-end on the bundled sample dataset"),
    "curate": ("videor4.pipelines.curate_cli", "decode, OCR, detect and match evidence for a dataset split"),
    "runs": ("videor4.pipelines.runs_cli", "inspect curation runs (progress, stats)"),
    "shards": ("videor4.pipelines.shards_cli", "inspect, validate and export training shards; view transcripts"),
    "qc": ("videor4.pipelines.qc_cli", "human quality control in Label Studio (serve, push, pull)"),
    "eval": ("videor4.training.eval_cli", "score predictions with the official metrics, or run a model"),
    "train": ("videor4.training.train_cli", "run a training curriculum from a recipe YAML"),
    "micro-data": ("videor4.pipelines.micro_cli", "render the micro text-rich video benchmark (learning benchmark)"),
    "micro-model": ("videor4.training.micro_base", "build the micro Qwen2.5-VL pretrained to read (learning benchmark)"),
}


def build_parser(argv: Sequence[str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="videor4",
        description="Video-R4: curate text-rich video QA into visual-rumination training data, "
        "review it in Label Studio, and train/evaluate video LMMs that clip and crop.",
    )
    parser.add_argument("--version", action="version", version=f"videor4 {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    wanted = next((a for a in argv if not a.startswith("-")), None)
    for name, (module, help_text) in COMMANDS.items():
        if wanted == name:
            importlib.import_module(module).register(sub)
        else:
            # Cheap placeholder so `videor4 --help` lists every command without importing it.
            sub.add_parser(name, help=help_text, add_help=False)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0 if args.command is None else 2
    if getattr(args, "loads_models", False):
        _library_logs_to_stderr()
    try:
        return int(args.func(args) or 0)
    except UserError as exc:
        # The one place user errors are printed. Errors of reading a user's file become UserErrors where the
        # file is read (``videor4.contracts.errors.user_input``); anything else is a bug and keeps its traceback.
        print(f"videor4: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("videor4: interrupted", file=sys.stderr)
        return 130


def _library_logs_to_stderr() -> None:
    """Keep stdout for the command's report and stderr for its one-line errors. DeepSpeed, which transformers and
    accelerate import whenever it is installed, logs through a handler on *stdout* that it creates at import, and
    on a machine without a GPU its import warns "Setting accelerator to CPU" there, so ``videor4 train … | jq``
    read a log line before the JSON. It is imported here once: that import-time notice is dropped (running on CPU
    is what the user asked for), and its handler is pointed at stderr for whatever it logs later."""
    if importlib.util.find_spec("deepspeed") is None:
        return
    with contextlib.redirect_stdout(io.StringIO()):
        import deepspeed  # noqa: F401
    for handler in logging.getLogger("DeepSpeed").handlers:
        if type(handler) is logging.StreamHandler:
            handler.setStream(_CurrentStderr())


class _CurrentStderr:
    """Whatever ``sys.stderr`` is when a record is written (as logging's own last-resort handler does), not the
    stream of the moment the handler was set: a caller that swaps stderr (pytest's capture, a redirect) and closes
    its stream later must not leave DeepSpeed writing to a closed file."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
