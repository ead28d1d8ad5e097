"""`videor4 eval score` and `score_predictions` on real validation splits and on bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from videor4.contracts.metrics import acc_score, anls_score
from videor4.pipelines.cli import main
from videor4.training.eval_cli import score_predictions


@pytest.fixture(scope="module")
def annotations() -> Path:
    if "VIDEOR4_M4_ROOT" not in os.environ:
        pytest.skip("VIDEOR4_M4_ROOT is unset: the real M4-ViteVQA annotation files are needed")
    return Path(os.environ["VIDEOR4_M4_ROOT"]).resolve() / "Annotations"


def _split_file(annotations: Path, split: str) -> Path:
    return annotations / f"ViteVQA_0.0.2_{split}.json"


def _records(path: Path) -> list[dict]:
    return json.loads(path.read_text())["data"]


def _write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def _mixed_predictions(records: list[dict]) -> dict[int, str]:
    """Every 10th question missing, the rest right, near-miss, or wrong."""
    preds = {}
    for i, r in enumerate(records):
        gt = r["answers"][-1]
        if i % 10 == 0:
            continue
        preds[r["question_id"]] = [gt.upper(), f"the {gt}.", gt[:-1], "zzz", f" {gt} "][i % 5]
    return preds


def _run(argv: list[str], capsys) -> tuple[int, str, str]:
    rc = main(argv)
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.mark.m4
def test_score_one_split_matches_the_metrics(annotations, tmp_path, capsys):
    path = _split_file(annotations, "t1s1val")
    records = _records(path)
    preds = _mixed_predictions(records)
    pred_file = _write_jsonl(tmp_path / "preds.jsonl",
                             [{"question_id": q, "pred_answer": a} for q, a in preds.items()])

    rc, out, err = _run(["eval", "score", "--annotations", str(path), "--predictions", str(pred_file)], capsys)
    assert rc == 0, err
    result = json.loads(out)
    # Missing predictions score 0; sums in annotation order (the metrics equal the oracle: test_metrics.py).
    accs = [acc_score(preds[r["question_id"]], r["answers"]) if r["question_id"] in preds else 0.0 for r in records]
    anlss = [anls_score(preds[r["question_id"]], r["answers"]) if r["question_id"] in preds else 0.0
             for r in records]
    assert result["acc"] == 100 * (sum(accs) / len(accs))
    assert result["anls"] == 100 * (sum(anlss) / len(anlss))
    assert result["n"] == 1971 and result["missing"] == 198
    assert result["splits"]["t1s1val"]["n"] == 1971
    assert 0 < result["acc"] < result["anls"] < 100
    assert score_predictions([path], preds) == result  # the Python API gives the same dict


@pytest.mark.m4
def test_ground_truth_predictions_score_100_on_every_split(annotations, tmp_path, capsys):
    paths = [_split_file(annotations, s) for s in ("t1s1val", "t1s2val", "t2val")]
    rows = {r["question_id"]: r["answers"][0] for p in paths for r in _records(p)}
    pred_file = _write_jsonl(tmp_path / "gt.jsonl", [{"question_id": q, "pred_answer": a} for q, a in rows.items()])

    rc, out, err = _run(["eval", "score", "--annotations", *map(str, paths), "--predictions", str(pred_file),
                         "--by", "source1,source2"], capsys)
    assert rc == 0, err
    result = json.loads(out)
    assert (result["acc"], result["anls"], result["n"], result["missing"]) == (100.0, 100.0, 1971 + 1620 + 762, 0)
    assert {s: v["n"] for s, v in result["splits"].items()} == {"t1s1val": 1971, "t1s2val": 1620, "t2val": 762}
    assert set(result["by"]["source1"]) == {"Single frame", "Multi frame"}
    assert set(result["by"]["source2"]) == {"Text", "Visual", "Knowledge"}
    assert sum(g["n"] for g in result["splits"]["t2val"]["by"]["source2"].values()) == 762
    assert "| t1s2val | 1620 | 0 | 100.00 | 100.00 |" in err  # several splits: the table goes to stderr


@pytest.mark.m4
def test_table_format_and_the_installed_entry_point(annotations, tmp_path):
    path = _split_file(annotations, "t2val")
    records = _records(path)
    pred_file = _write_jsonl(tmp_path / "p.jsonl", [{"question_id": r["question_id"], "pred_answer": "no idea"}
                                                    for r in records[:500]])
    entry_point = Path(sys.executable).parent / "videor4"
    base = [str(entry_point), "eval", "score", "--annotations", str(path), "--predictions", str(pred_file)]
    done = subprocess.run(base, capture_output=True, text=True, check=True)
    assert json.loads(done.stdout)["missing"] == 262
    table = subprocess.run([*base, "--format", "table"], capture_output=True, text=True, check=True).stdout
    assert table.splitlines()[0] == "| split | n | missing | Acc | ANLS |"
    assert table.splitlines()[2].startswith("| t2val | 762 | 262 |")


# --------------------------------------------------------- bad input (no M4 data needed)

@pytest.fixture
def small_split(tmp_path: Path) -> Path:
    """A real-shaped annotation file with the official label typos."""
    records = [
        {"question": "What brand?", "answers": ["Nike"], "question_id": 1, "video_id": "00001",
         "video_width": 1280, "video_height": 720, "source1": "Mutli frames", "source2": "TEXT"},
        {"question": "How many?", "answers": ["two", "2"], "question_id": 2, "video_id": "00002",
         "video_width": 1280, "video_height": 720, "source1": "Single frame", "source2": "Visual"},
        {"question": "Which city?", "answers": ["Paris"], "question_id": 3, "video_id": "00002",
         "video_width": 1280, "video_height": 720, "source1": "Multi frame", "source2": "Text"},
    ]
    path = tmp_path / "ViteVQA_0.0.2_tinyval.json"
    path.write_text(json.dumps({"dataset_type": "tinyval", "dataset_name": "vtvqa",
                                "dataset_version": "0.0.2", "data": records}))
    return path


def test_label_typos_are_merged_in_breakdowns(small_split, tmp_path):
    preds = _write_jsonl(tmp_path / "p.jsonl", [{"question_id": 1, "pred_answer": "nike"},
                                                {"question_id": 2, "pred_answer": "2"}])
    result = score_predictions([small_split], preds, by=["source1", "source2"])
    assert result["by"]["source1"]["Multi frame"] == {"acc": 50.0, "anls": 50.0, "n": 2, "missing": 1}
    assert result["by"]["source2"]["Text"]["n"] == 2 and set(result["by"]["source2"]) == {"Text", "Visual"}
    assert result["acc"] == 100 * (2 / 3)


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        (['{"question_id": 1, "pred_answer": "a"}', "", '{"question_id": 2, "pred_answer": "b"'], ":3: not valid JSON"),
        (['{"question_id": 1}'], ':1: missing field "pred_answer"'),
        (['{"question_id": "1", "pred_answer": "a"}'], ':1: "question_id" must be an integer'),
        (['{"question_id": true, "pred_answer": "a"}'], ':1: "question_id" must be an integer'),
        (['{"question_id": 1, "pred_answer": null}'], ':1: "pred_answer" must be a string'),
        (['[1, "a"]'], ":1: expected an object"),
        (['{"question_id": 1, "pred_answer": "a"}', '{"question_id": 99, "pred_answer": "b"}'],
         ":2: unknown question_id 99"),
        (['{"question_id": 1, "pred_answer": "a"}', '{"question_id": 2, "pred_answer": "b"}',
          '{"question_id": 3, "pred_answer": "c"}', '{"question_id": 1, "pred_answer": "d"}'],
         ":4: duplicate question_id 1 (first on line 1)"),
    ],
)
def test_bad_prediction_lines_exit_2_with_the_line_number(small_split, tmp_path, capsys, lines, message):
    preds = _write_jsonl(tmp_path / "bad.jsonl", lines)
    rc, out, err = _run(["eval", "score", "--annotations", str(small_split), "--predictions", str(preds)], capsys)
    assert rc == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("videor4: error: ")
    assert f"{preds}{message}" in err


def test_missing_files_and_bad_flags_exit_2(small_split, tmp_path, capsys):
    preds = _write_jsonl(tmp_path / "ok.jsonl", [{"question_id": 1, "pred_answer": "a"}])
    cases = [
        (["--annotations", str(small_split), "--predictions", str(tmp_path / "nope.jsonl")],
         "predictions file not found"),
        (["--annotations", str(tmp_path / "nope.json"), "--predictions", str(preds)], "annotation file not found"),
        (["--annotations", str(small_split), str(small_split), "--predictions", str(preds)], "given twice"),
        (["--annotations", str(small_split), "--predictions", str(preds), "--by", "source3"],
         "cannot break down by source3"),
    ]
    for args, message in cases:
        rc, out, err = _run(["eval", "score", *args], capsys)
        assert rc == 2 and err.count("\n") == 1 and message in err, err
    rc, _, _ = _run(["eval"], capsys)
    assert rc == 2


def test_bad_annotation_record_names_file_and_index(small_split, tmp_path, capsys):
    doc = json.loads(small_split.read_text())
    del doc["data"][1]["answers"]
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps(doc))
    preds = _write_jsonl(tmp_path / "ok.jsonl", [{"question_id": 1, "pred_answer": "a"}])
    rc, _, err = _run(["eval", "score", "--annotations", str(broken), "--predictions", str(preds)], capsys)
    # A partial split would not be comparable to published numbers: refused, naming record and field.
    assert rc == 2
    last = err.splitlines()[-1]
    assert last.startswith("videor4: error: broken.json: record 1: field 'answers'")
    assert last.endswith("scores need every question of tinyval")
