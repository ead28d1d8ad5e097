"""``videor4 eval``: score predictions with the official metrics (``eval score``).

``eval run`` (a model answers with rumination) lives in
``videor4.training.eval_run``, which needs torch; it is registered only when
that module exists, so ``eval score`` works in a torch-free install.

Scoring rules (docs/metrics.md): every question of every given annotation file
is scored in file order; a question without a prediction scores 0 on both
metrics and is counted in ``missing``; a prediction whose ``question_id`` is in
none of the files is an error. A question listed in two splits (the official
validation files share some) counts once in each split and in each for the
overall numbers, which therefore equal the official evaluator run on the
concatenated splits.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

from videor4.contracts.dataset import QARecord, load_annotation_file
from videor4.contracts.errors import UserError, describe_input_error, user_input
from videor4.contracts.metrics import prepare_answers

# QARecord fields a score can be broken down by; the loader already maps the
# official label typos ("Mutli frames", "TEXT") to the canonical labels.
BREAKDOWN_FIELDS = ("source1", "source2")


class _Scored(NamedTuple):
    record: QARecord
    acc: float
    anls: float
    missing: bool


def _load_split(path: Path) -> list[QARecord]:
    """Every question of one annotation file, or a UserError.

    The shared loader turns a bad record into a reject and goes on; a score over
    part of a split is not comparable to published numbers, so here any reject
    stops the evaluation.
    """
    if not path.is_file():
        raise UserError(f"annotation file not found: {path}")
    data = load_annotation_file(path)
    if data.rejects:
        more = f" (and {len(data.rejects) - 1} more)" if len(data.rejects) > 1 else ""
        raise UserError(f"{data.rejects[0].message}{more}; scores need every question of {data.split}")
    if not data.records:
        raise UserError(f"{path}: no questions in {data.split}")
    return data.records


def _read_predictions(path: Path) -> dict[int, tuple[str, int]]:
    """question_id -> (predicted answer, line number) from a JSONL file."""
    predictions: dict[int, tuple[str, int]] = {}
    try:
        with path.open(encoding="utf-8") as lines:
            for lineno, line in enumerate(lines, start=1):
                if not line.strip():
                    continue
                where = f"{path}:{lineno}"
                with user_input(where):  # invalid or too deeply nested JSON: one line
                    row = json.loads(line)
                if not isinstance(row, dict):
                    raise UserError(f'{where}: expected an object with "question_id" and "pred_answer"')
                for field in ("question_id", "pred_answer"):
                    if field not in row:
                        raise UserError(f'{where}: missing field "{field}"')
                qid, answer = row["question_id"], row["pred_answer"]
                if not isinstance(qid, int) or isinstance(qid, bool):
                    raise UserError(f'{where}: "question_id" must be an integer, got {json.dumps(qid)}')
                if not isinstance(answer, str):
                    raise UserError(f'{where}: "pred_answer" must be a string, got {json.dumps(answer)}')
                if qid in predictions:
                    first = predictions[qid][1]
                    raise UserError(f"{where}: duplicate question_id {qid} (first on line {first})")
                predictions[qid] = (answer, lineno)
    except FileNotFoundError:
        raise UserError(f"predictions file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:  # a directory, no permission, binary: one line
        raise UserError(f"predictions {path}: {describe_input_error(exc)}") from None
    return predictions


def _summary(rows: Sequence[_Scored], by: Sequence[str]) -> dict[str, Any]:
    """Acc/ANLS in percent over ``rows``; sums run in row order, like the official code."""
    n = len(rows)
    out: dict[str, Any] = {
        "acc": 100 * (sum(r.acc for r in rows) / n),
        "anls": 100 * (sum(r.anls for r in rows) / n),
        "n": n,
        "missing": sum(1 for r in rows if r.missing),
    }
    if by:
        out["by"] = {
            field: {
                label: _summary([r for r in rows if getattr(r.record, field) == label], ())
                for label in sorted({getattr(r.record, field) for r in rows})
            }
            for field in by
        }
    return out


def score_predictions(
    annotation_paths: Sequence[str | Path],
    predictions: Mapping[int, str] | str | Path,
    by: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Score predictions against one or more official annotation files.

    ``predictions`` is a ``{question_id: answer}`` mapping or a JSONL path.
    Returns ``{"acc", "anls", "n", "missing", "splits": {split: {...}}}`` in
    percent (0-100), plus ``"by": {field: {label: {...}}}`` overall and per
    split when ``by`` names fields of :data:`BREAKDOWN_FIELDS`.
    Raises :class:`UserError` for any problem in the inputs.
    """
    by = tuple(by or ())
    unknown_fields = [f for f in by if f not in BREAKDOWN_FIELDS]
    if unknown_fields:
        raise UserError(f"cannot break down by {', '.join(unknown_fields)}; choose from {', '.join(BREAKDOWN_FIELDS)}")
    if not annotation_paths:
        raise UserError("no annotation files given")
    splits: dict[str, list[QARecord]] = {}
    for path in annotation_paths:
        records = _load_split(Path(path))
        if records[0].split in splits:
            raise UserError(f"{path}: split {records[0].split} given twice")
        splits[records[0].split] = records

    if isinstance(predictions, (str, Path)):
        located = _read_predictions(Path(predictions))
        answers = {qid: answer for qid, (answer, _) in located.items()}
        source = str(predictions)
    else:
        located = {}
        answers = dict(predictions)
        source = "predictions"
    known = {r.question_id for records in splits.values() for r in records}
    unknown = next((qid for qid in answers if qid not in known), None)  # first in file order
    if unknown is not None:
        line = f":{located[unknown][1]}" if unknown in located else ""
        raise UserError(f"{source}{line}: unknown question_id {unknown} (not in {', '.join(splits)})")
    for qid, answer in answers.items():
        if not isinstance(answer, str):
            raise UserError(f"{source}: answer for question_id {qid} must be a string")

    rows_by_split = {}
    for split, records in splits.items():
        rows = []
        for r in records:
            pred = answers.get(r.question_id)
            acc, anls = (0.0, 0.0) if pred is None else prepare_answers(r.answers).score(pred)
            rows.append(_Scored(r, acc, anls, pred is None))
        rows_by_split[split] = rows
    result = _summary([r for rows in rows_by_split.values() for r in rows], by)
    result["splits"] = {split: _summary(rows, by) for split, rows in rows_by_split.items()}
    return result


def format_table(result: Mapping[str, Any]) -> str:
    """A Markdown table like the paper's: Acc / ANLS per split, then overall."""
    lines = ["| split | n | missing | Acc | ANLS |", "|---|---:|---:|---:|---:|"]

    def add(name: str, s: Mapping[str, Any]) -> None:
        lines.append(f"| {name} | {s['n']} | {s['missing']} | {s['acc']:.2f} | {s['anls']:.2f} |")
        for field, groups in s.get("by", {}).items():
            for label, g in groups.items():
                add(f"{name} · {field}={label}", g)

    for split, summary in result["splits"].items():
        add(split, summary)
    if len(result["splits"]) > 1:
        add("all", result)
    return "\n".join(lines)


def _run_score(args: argparse.Namespace) -> int:
    by = [f.strip() for f in args.by.split(",") if f.strip()] if args.by else None
    result = score_predictions(args.annotations, args.predictions, by=by)
    if args.format == "table":
        print(format_table(result))
        return 0
    print(json.dumps(result, ensure_ascii=False))
    if len(result["splits"]) > 1:
        # Humans get the table too, on stderr so stdout stays one JSON document.
        print(format_table(result), file=sys.stderr)
    return 0


def _register_score(eval_sub: argparse._SubParsersAction) -> None:
    p = eval_sub.add_parser(
        "score",
        help="score a predictions JSONL with the official Acc/ANLS",
        description="Score predictions ({\"question_id\": int, \"pred_answer\": str} per line) against "
        "official M4-ViteVQA annotation files with the official Acc and ANLS (percent). "
        "Missing predictions count as wrong.",
    )
    p.add_argument("--annotations", nargs="+", required=True, metavar="FILE",
                   help="official annotation JSON(s), e.g. Annotations/ViteVQA_0.0.2_t1s1val.json")
    p.add_argument("--predictions", required=True, metavar="FILE", help="predictions JSONL")
    p.add_argument("--by", metavar="FIELDS",
                   help=f"comma-separated breakdown fields ({','.join(BREAKDOWN_FIELDS)})")
    p.add_argument("--format", choices=("json", "table"), default="json",
                   help="json (default; with several splits a table also goes to stderr) or table")
    p.set_defaults(func=_run_score)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``eval`` command group to the top-level CLI."""
    parser = subparsers.add_parser(
        "eval", help="score predictions with the official metrics, or run a model",
        description="Evaluate on M4-ViteVQA with the official Acc/ANLS.",
    )
    eval_sub = parser.add_subparsers(dest="eval_command", metavar="SUBCOMMAND")
    _register_score(eval_sub)
    # `eval run` needs torch: its module registers itself only where it exists.
    if importlib.util.find_spec("videor4.training.eval_run") is not None:
        importlib.import_module("videor4.training.eval_run").register_run(eval_sub)
    if importlib.util.find_spec("videor4.training.reward_eval") is not None:
        importlib.import_module("videor4.training.reward_eval").register_reward(eval_sub)
    # `eval transfer` imports lmms-eval (the `eval` extra) only when it runs.
    from videor4.training.transfer import register_transfer

    register_transfer(eval_sub)

    def _no_subcommand(_: argparse.Namespace) -> int:
        parser.print_help(sys.stderr)
        return 2

    parser.set_defaults(func=_no_subcommand)
