"""Acc/ANLS against the official M4-ViteVQA evaluator, and answer extraction.

The official ``evaluator.py`` is the oracle: every question of the three real
validation splits is scored with many kinds of predictions, and our per-question
and aggregate floats must be *equal* (``==``) to the oracle's.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import os
import random
import re
import subprocess
import sys
import types
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

from videor4.contracts.metrics import (
    acc_score,
    anls_score,
    edit_distance,
    normalize_answer,
    prepare_answers,
    score_batch,
)
from videor4.contracts.tool_protocol import extract_answer

SPLITS = {"t1s1val": 1971, "t1s2val": 1620, "t2val": 762}


def _textbook_levenshtein(a: str, b: str) -> int:
    """Plain O(len(a)*len(b)) dynamic programme, independent of metrics.edit_distance."""
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, start=1):
        current = [i]
        for j, cb in enumerate(b, start=1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb)))
        previous = current
    return previous[-1]


@pytest.fixture(scope="module")
def m4_root() -> Path:
    if "VIDEOR4_M4_ROOT" not in os.environ:
        pytest.skip("VIDEOR4_M4_ROOT is unset: the real annotations and the official evaluator are needed")
    return Path(os.environ["VIDEOR4_M4_ROOT"]).resolve()


@pytest.fixture(scope="module")
def oracle(m4_root: Path) -> Iterator[types.ModuleType]:
    """The official evaluator module, loaded from the shared reference folder."""
    path = m4_root.parents[1] / "reference" / "m4vitevqa_evaluator.py"
    spec = importlib.util.spec_from_file_location("m4vitevqa_official_evaluator", path)
    module = importlib.util.module_from_spec(spec)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # its regex literal has an invalid escape
        spec.loader.exec_module(module)
    with pytest.MonkeyPatch.context() as patch:
        if importlib.util.find_spec("editdistance") is None:
            # STVQAANLSEvaluator() imports `editdistance` (a C extension, not a project
            # dependency) and only calls editdistance.eval(a, b); while this module's
            # tests run, a textbook DP stands in for it.
            patch.setitem(sys.modules, "editdistance", types.SimpleNamespace(eval=_textbook_levenshtein))
        yield module


@pytest.fixture(scope="module")
def val_questions(m4_root: Path) -> dict[str, list[dict]]:
    out = {}
    for split, n in SPLITS.items():
        data = json.loads((m4_root / "Annotations" / f"ViteVQA_0.0.2_{split}.json").read_text())["data"]
        assert len(data) == n
        out[split] = data
    return out


# ---------------------------------------------------------------- predictions

_DIGIT_WORDS = {"0": "zero", "1": "one", "2": "two", "3": "three", "4": "four", "5": "five",
                "6": "six", "7": "seven", "8": "eight", "9": "nine", "10": "ten"}
_WORD_DIGITS = {w: d for d, w in _DIGIT_WORDS.items()} | {"none": "0"}


def _swap_numbers(text: str) -> str:
    """'2 cats' <-> 'two cats': both directions, whole words only."""
    return re.sub(r"\b\w+\b", lambda m: _DIGIT_WORDS.get(m[0]) or _WORD_DIGITS.get(m[0].lower(), m[0]), text)


def _typo(text: str, rng: random.Random) -> str:
    if not text:
        return "x"
    i = rng.randrange(len(text))
    kind = rng.randrange(4)
    if kind == 0:
        return text[:i] + text[i + 1:]
    if kind == 1:
        return text[:i] + rng.choice("abcxyz019 ") + text[i:]
    if kind == 2:
        return text[:i] + rng.choice("abcxyz019") + text[i + 1:]
    return text[:i] + text[i + 1:i + 2] + text[i:i + 1] + text[i + 2:]


def _variants(gt: str, other: str, rng: random.Random) -> list[str]:
    """Predictions of many kinds for one ground truth (the GT itself first)."""
    return [
        gt, gt.upper(), gt.title(), f"  {gt}\t", f"\n{gt}\n", gt.replace(" ", "  "), gt.replace(" ", "\n"),
        gt.replace(" ", "\u00a0"), f"the {gt}", f"A {gt}", f"in {gt}", f"at the {gt}", f"{gt}.", f"{gt}!",
        f"{gt}?", f'"{gt}"', f"({gt})", f"{gt} - ok", f"-{gt}-", f"{gt}'s", f"{gt}, {gt}", _swap_numbers(gt),
        _typo(gt, rng), _typo(_typo(gt, rng), rng), "", " ", "\n", other, gt * 8, f"{gt} 😘", f"café {gt}",
        f"{gt}\u200b", "ø" + gt, "1,000", "1000", "3.5", "5.", "5", "1.000.000", "$5.00", "dont", "whats up",
        "somebody'd", "two", "2", "none", "Ten.", ". " * 40 + gt, gt.replace(".", ""), gt.replace(",", ""),
        gt + "." * 3, rng.choice(["yes", "no", "N/A", "-", "...", "[unk]"]),
    ]


def _prediction_set(val_questions, per_question: int) -> list[dict]:
    """Oracle entries: every question of every split, `per_question` varied predictions each."""
    rng = random.Random(20240521)
    entries = []
    all_answers = [a for qs in val_questions.values() for q in qs for a in q["answers"]]
    for questions in val_questions.values():
        for q in questions:
            gt = rng.choice(q["answers"])
            variants = _variants(gt, rng.choice(all_answers), rng)
            for pred in [variants[0], *rng.sample(variants[1:], per_question - 1)]:
                entries.append({"pred_answer": pred, "gt_answers": q["answers"]})
    return entries


# ------------------------------------------------------------ oracle checks

@pytest.mark.m4
def test_every_validation_question_matches_the_official_evaluator(oracle, val_questions):
    entries = _prediction_set(val_questions, per_question=6)
    assert len(entries) == 6 * sum(SPLITS.values())
    official_acc = oracle.STVQAAccuracyEvaluator()
    official_anls = oracle.STVQAANLSEvaluator()
    # Memoize the oracle's pure helpers so the aggregate pass below re-uses the
    # per-question pass (the oracle is ~50x slower than the code under test).
    official_acc.answer_processor = functools.lru_cache(maxsize=None)(official_acc.answer_processor)
    official_anls.get_edit_distance = functools.lru_cache(maxsize=None)(official_anls.get_edit_distance)
    accs, anlss = score_batch([e["pred_answer"] for e in entries], [e["gt_answers"] for e in entries])
    for entry, acc, anls in zip(entries, accs, anlss):
        assert acc == official_acc.eval_pred_list([entry]), entry
        assert anls == official_anls.eval_pred_list([entry]), entry
        assert acc_score(entry["pred_answer"], entry["gt_answers"]) == acc
        assert anls_score(entry["pred_answer"], entry["gt_answers"]) == anls
    # Aggregates: the official mean over the list, bit for bit.
    assert sum(accs) / len(accs) == official_acc.eval_pred_list(entries)
    assert sum(anlss) / len(anlss) == official_anls.eval_pred_list(entries)
    # The set is not degenerate: many right, many wrong, many partial ANLS.
    assert 0.2 < sum(accs) / len(accs) < 0.8
    assert sum(1 for a in anlss if 0 < a < 1) > 1000


@pytest.mark.m4
def test_per_split_aggregates_match_the_official_evaluator(oracle, val_questions):
    rng = random.Random(7)
    for questions in val_questions.values():
        entries = [{"pred_answer": rng.choice(_variants(q["answers"][0], "other", rng)), "gt_answers": q["answers"]}
                   for q in questions]
        accs, anlss = score_batch([e["pred_answer"] for e in entries], [e["gt_answers"] for e in entries])
        assert sum(accs) / len(accs) == oracle.STVQAAccuracyEvaluator().eval_pred_list(entries)
        assert sum(anlss) / len(anlss) == oracle.STVQAANLSEvaluator().eval_pred_list(entries)


@pytest.mark.m4
def test_normalizer_equals_official_processor_on_answers_and_tables(oracle, val_questions):
    official = oracle.EvalAIAnswerProcessor()
    texts = [a for qs in val_questions.values() for q in qs for a in q["answers"]]
    texts += [q["question"] for qs in val_questions.values() for q in qs]
    texts += list(official.CONTRACTIONS) + list(official.CONTRACTIONS.values()) + list(official.NUMBER_MAP)
    texts += [f"x{p}y" for p in official.PUNCTUATIONS] + [f"x {p}y" for p in official.PUNCTUATIONS]
    for text in texts:
        assert normalize_answer(text) == official(text), text


@pytest.mark.m4
def test_random_strings_match_the_official_evaluator(oracle):
    """Hypothesis-style: random strings over an alphabet dense in the tricky characters."""
    official = oracle.EvalAIAnswerProcessor()
    anls = oracle.STVQAANLSEvaluator()
    pieces = list("aAb5 .,-'s\n\t?!:/ø😘\u200b\u00a0İ") + ["the ", "in ", "two", "'s", "1,0", "3.5", "..."]
    rng = random.Random(12345)
    for _ in range(5000):
        s = "".join(rng.choice(pieces) for _ in range(rng.randint(0, 14)))
        t = "".join(rng.choice(pieces) for _ in range(rng.randint(0, 14)))
        assert normalize_answer(s) == official(s), s
        if s.lower().strip() or t.lower().strip():  # both empty: the official code divides by zero
            assert anls_score(s, [t]) == anls.get_anls(s, t), (s, t)
        assert acc_score(s, [t]) == oracle.STVQAAccuracyEvaluator().eval_pred_list(
            [{"pred_answer": s, "gt_answers": [t]}]), (s, t)


@pytest.mark.m4
def test_official_crash_cases_and_our_documented_choices(oracle):
    with pytest.raises(ZeroDivisionError):
        oracle.STVQAANLSEvaluator().get_anls(" ", "")
    with pytest.raises(ValueError):
        oracle.STVQAANLSEvaluator().eval_pred_list([{"pred_answer": "x", "gt_answers": []}])
    assert anls_score(" ", [""]) == 1.0
    assert anls_score("x", []) == 0.0
    # The official Acc already gives 0 for an empty GT list; we agree.
    assert acc_score("x", []) == oracle.STVQAAccuracyEvaluator().eval_pred_list(
        [{"pred_answer": "x", "gt_answers": []}]) == 0.0


# ----------------------------------------------------- oracle-free behaviour

@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("In the Park", "park"),            # `in` is an article here
        ("at an a the", ""),
        ("Two", "2"), ("none", "0"), ("ten cats", "10 cats"),
        ("1,000", "1000"), ("3.5", "3.5"), ("5.", "5"), ("U.S.A.", "usa"),
        ("x-y", "x y"),                     # a mark touching no space becomes a space ...
        ("x-y z -w", "xy z w"),             # ... but is deleted everywhere if it touches one anywhere
        ("dont", "don't"), ("somebody'd", "somebodyd"), ("It's", "it 's"),
        ("  multi\tline\nanswer ", "multi line answer"),
        ("5- x-y", "5 xy"),
        ("5-\u00a0x-y", "5 x y"),            # only \n and \t count as spaces for the punctuation rule
    ],
)
def test_normalize_answer_quirks(text, expected):
    assert normalize_answer(text) == expected


def test_period_rule_removes_only_the_first_32_periods():
    # re.UNICODE (32) lands in sub()'s count position in the official code.
    assert normalize_answer("x. " * 40).count(".") == 8
    assert normalize_answer("x. " * 32).count(".") == 0


def test_anls_keeps_whitespace_and_thresholds_at_half():
    assert anls_score("ab  c", ["ab c"]) == 1 - 1 / 5  # no whitespace collapse
    assert anls_score("abcd", ["abxy"]) == 0.5          # exactly half: kept
    assert anls_score("abcde", ["abxyz"]) == 0.0        # below half: zero
    assert anls_score("  HeLLo ", ["hello", "zzz"]) == 1.0


def test_edit_distance_equals_textbook_dp():
    rng = random.Random(99)
    alphabet = "abcab ø😘İ"
    for _ in range(3000):
        a = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 20)))
        b = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 90)))
        assert edit_distance(a, b) == _textbook_levenshtein(a, b) == edit_distance(b, a)


def test_prepared_answers_give_the_same_scores():
    gts = ["Two dogs", "2 dogs."]
    prepared = prepare_answers(gts)
    for pred in ["two dogs", "2 Dogs", "dogs", "", "cats"]:
        assert prepared.score(pred) == (acc_score(pred, gts), anls_score(pred, gts))
    with pytest.raises(ValueError):
        score_batch(["a"], [])


def test_metrics_import_without_torch():
    code = ("import sys, videor4.contracts.metrics, videor4.contracts.tool_protocol, "
            "videor4.training.eval_cli; assert 'torch' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)


# -------------------------------------------------------- answer extraction

@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("<think>hmm</think><answer> 42 </answer>", "42"),
        ("<answer>first</answer> then <ANSWER>second</ANSWER>", "second"),   # last one wins
        ("<answer>\nmulti\nline\n</answer>", "multi\nline"),
        ("<answer></answer>", ""),                                           # empty tag is an answer
        ("so the result is \\boxed{5} or \\boxed{\\frac{1}{2}}", "\\frac{1}{2}"),
        ("\\boxed{ok} and a broken \\boxed{oops", "ok"),                     # unbalanced boxed skipped
        ("<answer>tag</answer> beats \\boxed{box}", "tag"),
        ("Reasoning...\n\nThe sign says\nSTOP\n\n", "STOP"),                 # last non-empty line
        ("<think>line one\nline two</think>\n<tool_call>{\"name\": \"crop\"}</tool_call>", ""),
        ("<think>thinking</think>\nHello World", "Hello World"),
        ("<answer>unclosed", "<answer>unclosed"),                            # no complete tag: last line
        ("", ""),
    ],
)
def test_extract_answer(text, expected):
    assert extract_answer(text) == expected
