"""M4-ViteVQA as an lmms-eval task: lmms-eval's evaluator scores it with exactly the numbers of
``videor4 eval score``, and the ``videor4`` model answers it exactly as ``videor4 eval run`` does.

``AnswerSheet`` is a minimal lmms-eval model that returns fixed predictions: it stands in for "any lmms-eval
model" so the scoring path (task, evaluator, aggregation) can be compared with ``eval score`` on chosen inputs.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.training import lmms_eval_fixtures as fx

fx.require_lmms_eval()

from lmms_eval.api.model import lmms

from videor4.contracts.dataset import load_annotation_file
from videor4.pipelines.cli import main


class AnswerSheet(lmms):
    """Answers each request from ``answers[question_id]`` (reads the doc the request points at)."""

    def __init__(self, answers: dict[int, str]) -> None:
        super().__init__()
        self.answers = answers

    def generate_until(self, requests):
        out = []
        for request in requests:
            _, _, doc_to_visual, doc_id, task, split = request.args
            doc = self.task_dict[task][split][doc_id]
            assert Path(doc_to_visual(doc)[0]).exists()  # the task hands every model a real media path
            out.append(self.answers[doc["question_id"]])
        return out

    def loglikelihood(self, requests):
        raise NotImplementedError

    def generate_until_multi_round(self, requests):
        raise NotImplementedError


def _variants(answers: list[str], k: int) -> str:
    """A spread of predictions: exact, case/punctuation/article changes, near misses, wrong, empty."""
    a = answers[k % len(answers)]
    return [a, a.upper(), f"The {a}.", a[:-1], a + "s", "completely wrong", "", f"  {a.lower()}  "][k % 8]


def _score_cli(annotations: list[Path], predictions: dict[int, str], path: Path, capsys) -> dict:
    path.write_text("".join(json.dumps({"question_id": q, "pred_answer": p}) + "\n" for q, p in predictions.items()))
    capsys.readouterr()
    assert main(["eval", "score", "--annotations", *map(str, annotations), "--predictions", str(path)]) == 0
    return json.loads(capsys.readouterr().out)


def _predictions(output: dict, task: str) -> dict[int, str]:
    """What lmms-eval scored: the logged samples' filtered responses, by question id."""
    return {s["doc"]["question_id"]: s["filtered_resps"][0] for s in output["samples"][task]}


@pytest.fixture
def sample_env(monkeypatch, tmp_path):
    from videor4.curation.sample import SAMPLE_SPLIT, sample_root

    fx.offline_hf_home(monkeypatch, tmp_path / "hf")
    monkeypatch.setenv("VIDEOR4_M4_ROOT", str(sample_root()))
    return sample_root() / "Annotations" / f"ViteVQA_0.0.2_{SAMPLE_SPLIT}.json"


def test_m4_task_scores_equal_eval_score(sample_env, tmp_path, capsys) -> None:
    records = load_annotation_file(sample_env).records
    answers = {r.question_id: _variants(list(r.answers), k) for k, r in enumerate(records)}
    output = fx.evaluate(AnswerSheet(answers), ["m4_vitevqa_sample"], model_name="answer_sheet", limit=26)
    result = output["results"]["m4_vitevqa_sample"]
    scored = _predictions(output, "m4_vitevqa_sample")
    assert list(scored) == [r.question_id for r in records[:26]]  # annotation order, 4 left unanswered
    official = _score_cli([sample_env], scored, tmp_path / "preds.jsonl", capsys)
    assert result["acc,none"] == official["acc"] and result["anls,none"] == official["anls"]
    assert result["missing,none"] == official["missing"] == 4
    assert 0 < official["acc"] < official["anls"] < 100  # the variants hit both metrics' edge cases
    # the prompt other models get asks for a short answer; the videor4 model gets eval run's bare question
    first = output["samples"]["m4_vitevqa_sample"][0]["arguments"][0]
    assert first.startswith(records[0].question) and first.endswith("Answer the question using a single word or phrase.")


def test_videor4_on_m4_answers_like_eval_run(sample_env, tiny_model_dir, tmp_path) -> None:
    from videor4.training.eval_run import evaluate as eval_run
    from videor4.training.lmms_eval_model import VideoR4

    root = sample_env.parents[1]
    options = {"frames": 2, "max_new_tokens": 8, "max_calls": 2}
    run = eval_run(tiny_model_dir, root, "sample", tmp_path / "run.jsonl", limit=3, batch_size=1, device="cpu",
                   **options)
    lm = VideoR4(pretrained=str(tiny_model_dir), device="cpu", batch_size=1, **options)
    output = fx.evaluate(lm, ["m4_vitevqa_sample"], limit=3)
    ran = {json.loads(line)["question_id"]: json.loads(line)["pred_answer"]
           for line in (tmp_path / "run.jsonl").read_text().splitlines()}
    assert _predictions(output, "m4_vitevqa_sample") == ran and len(ran) == 3
    result = output["results"]["m4_vitevqa_sample"]
    assert (result["acc,none"], result["anls,none"], result["missing,none"]) == (run["acc"], run["anls"], run["missing"])
    questions = [s["arguments"][0] for s in output["samples"]["m4_vitevqa_sample"]]
    assert questions == [r.question for r in load_annotation_file(sample_env).records[:3]]


@pytest.mark.m4
def test_m4_task_equals_eval_score_on_the_real_validation_splits(m4_annotations, monkeypatch, tmp_path, capsys):
    """The three official validation files (quirky answers and all) through lmms-eval's evaluator."""
    from videor4.curation.sample import sample_root

    root = tmp_path / "m4"
    (root / "videos").mkdir(parents=True)
    (root / "Annotations").symlink_to(m4_annotations / "Annotations")
    video = sample_root() / "videos" / "90001.mp4"  # media only has to exist: AnswerSheet does not decode it
    splits = ["t1s1val", "t1s2val", "t2val"]
    files = [root / "Annotations" / f"ViteVQA_0.0.2_{s}.json" for s in splits]
    answers: dict[int, str] = {}
    for path in files:
        for k, record in enumerate(load_annotation_file(path).records):
            answers.setdefault(record.question_id, _variants(list(record.answers), k))
            link = root / "videos" / f"{record.video_id}.mp4"
            if not link.exists():
                link.symlink_to(video)
    fx.offline_hf_home(monkeypatch, tmp_path / "hf")
    monkeypatch.setenv("VIDEOR4_M4_ROOT", str(root))
    output = fx.evaluate(AnswerSheet(answers), ["m4_vitevqa"], model_name="answer_sheet")
    for split, path in zip(splits, files):
        task = f"m4_vitevqa_{split}"
        official = _score_cli([path], _predictions(output, task), tmp_path / f"{split}.jsonl", capsys)
        result = output["results"][task]
        assert (result["acc,none"], result["anls,none"], result["missing,none"]) == (
            official["acc"], official["anls"], official["missing"])
        assert official["missing"] == 0 and 0 < official["acc"] < official["anls"] < 100


def test_m4_task_says_where_the_root_comes_from(monkeypatch, tmp_path) -> None:
    fx.offline_hf_home(monkeypatch, tmp_path / "hf")
    monkeypatch.delenv("VIDEOR4_M4_ROOT", raising=False)
    assert "VIDEOR4_M4_ROOT" not in os.environ
    with pytest.raises(Exception, match="VIDEOR4_M4_ROOT") as info:
        fx.evaluate(AnswerSheet({}), ["m4_vitevqa_sample"], model_name="answer_sheet")
    text = f"{info.value} {info.value.__cause__}"
    assert "Annotations/ViteVQA_0.0.2_<split>.json" in text
