"""Speed of the official-metric implementation (Acc + ANLS) on 100k predictions.

Predictions are built from the real validation answers (exact, re-cased,
article-prefixed, typo'd, wrong, long; the distinct count is printed), and
the normalizer cache is cleared before every row, so caching does not flatter
the numbers.

    VIDEOR4_M4_ROOT=/path/to/m4-vitevqa python benchmarks/bench_metrics.py [--n 100000]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import tempfile
import time
from pathlib import Path

from videor4.contracts.metrics import acc_score, anls_score, normalize_answer, prepare_answers, score_batch
from videor4.training.eval_cli import score_predictions

SPLITS = ("t1s1val", "t1s2val", "t2val")


def _prediction(gt: str, rng: random.Random) -> str:
    kind = rng.randrange(6)
    if kind == 0:
        return gt
    if kind == 1:
        return f"The {gt.upper()}."
    if kind == 2 and gt:
        i = rng.randrange(len(gt))
        return gt[:i] + rng.choice("abcdefghij0123456789") + gt[i + 1:]
    if kind == 3:
        return f"{gt} {rng.randrange(10_000)}"
    if kind == 4:
        return " ".join([gt] * rng.randint(2, 6))
    return f"wrong answer {rng.randrange(1_000_000)}"


def _timed(label: str, n: int, fn) -> tuple[str, int, float]:
    normalize_answer.cache_clear()
    start = time.perf_counter()
    fn()
    return label, n, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", default=os.environ.get("VIDEOR4_M4_ROOT"),
                        help="M4-ViteVQA root (default: $VIDEOR4_M4_ROOT)")
    parser.add_argument("--n", type=int, default=100_000, help="number of predictions")
    args = parser.parse_args()
    if not args.data_root:
        parser.error("set --data-root or VIDEOR4_M4_ROOT")
    paths = [Path(args.data_root) / "Annotations" / f"ViteVQA_0.0.2_{s}.json" for s in SPLITS]
    records = [r for p in paths for r in json.loads(p.read_text())["data"]]

    rng = random.Random(0)
    chosen = [records[i % len(records)] for i in range(args.n)]
    preds = [_prediction(rng.choice(r["answers"]), rng) for r in chosen]
    gts = [r["answers"] for r in chosen]
    per_question = {r["question_id"]: prepare_answers(r["answers"]) for r in records}
    prepared = [per_question[r["question_id"]] for r in chosen]

    # End to end: JSONL parsing + validation + scoring, one full pass over the 3 splits per round.
    # (Splits share some questions; a predictions file holds each question id once.)
    rounds = max(1, args.n // len(records))
    unique = list({r["question_id"]: r for r in records}.values())
    with tempfile.TemporaryDirectory() as tmp:
        pred_files = []
        for k in range(rounds):
            path = Path(tmp) / f"preds{k}.jsonl"
            path.write_text("".join(json.dumps({"question_id": r["question_id"],
                                                "pred_answer": _prediction(r["answers"][0], rng)}) + "\n"
                                    for r in unique))
            pred_files.append(path)
        rows = [
            _timed("acc_score + anls_score (raw GT lists)", args.n,
                   lambda: [(acc_score(p, g), anls_score(p, g)) for p, g in zip(preds, gts)]),
            _timed("score_batch (raw GT lists)", args.n, lambda: score_batch(preds, gts)),
            _timed("score_batch (prepared GTs)", args.n, lambda: score_batch(preds, prepared)),
            _timed("score_predictions (JSONL, 3 splits)", rounds * len(records),
                   lambda: [score_predictions(paths, f) for f in pred_files]),
        ]

    print(f"{args.n} predictions, {len(set(preds))} distinct, {len(records)} questions")
    print("| path | predictions | seconds | predictions/s | s per 10k |")
    print("|---|---:|---:|---:|---:|")
    for label, n, seconds in rows:
        print(f"| {label} | {n} | {seconds:.3f} | {n / seconds:,.0f} | {seconds / n * 10_000:.3f} |")


if __name__ == "__main__":
    main()
