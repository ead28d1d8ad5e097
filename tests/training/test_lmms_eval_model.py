"""The ``videor4`` lmms-eval model: plug-in registration, pages as a video, option letters, and real lmms-eval
requests (built by lmms-eval's evaluator from each benchmark's own task code and local fixtures in its format).

Policies: a trained 7B checkpoint cannot exist here, so tests that need sensible tool calls and answers drive
the runtime with the project's ``ScriptedEngine`` (a forced policy through the real tokenizer, processor,
executor and rollout loop); the tiny random checkpoint runs the same requests through the real ``HFEngine``.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.training import lmms_eval_fixtures as fx

fx.require_lmms_eval()

from lmms_eval import models as lmms_models

from videor4.contracts.media import PageSequenceReader, VideoReader
from videor4.contracts.metrics import edit_distance
from videor4.contracts.tool_protocol import ToolCall, format_answer_turn, format_call_turn
from videor4.training.eval_run import eval_rollout_config
from videor4.training.lmms_eval_model import (
    VideoR4,
    choice_letter,
    media_executor_factory,
)
from videor4.training.rollout import RolloutSample, ScriptedEngine
from videor4.training.transfer import TASKS_DIR


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    """A fake HF_HOME with lmms-eval's video folders plus local dataset folders in each benchmark's layout."""
    from videor4.curation.sample import sample_root

    base = tmp_path_factory.mktemp("lmms-eval")
    hf_home = base / "hf"
    with pytest.MonkeyPatch.context() as mp:
        fx.offline_hf_home(mp, hf_home)
        yield {
            "hf_home": hf_home,
            "docvqa": fx.mp_docvqa(base / "MP-DocVQA"),
            "slides": fx.slidevqa(base / "SlideVQA"),
            "videomme": fx.videomme(base / "Video-MME", hf_home, sample_root()),
            "mvbench": fx.mvbench(base / "MVBench", hf_home, sample_root(), {"action_count": "perception/videos"}),
        }


def _call(name: str, **arguments) -> str:
    return format_call_turn("I need a closer look.", [ToolCall(name, arguments)])


def _answer(text: str) -> str:
    return format_answer_turn("I can read it now.", text)


def test_lmms_eval_finds_the_model_through_its_entry_point() -> None:
    assert "videor4" in lmms_models.list_available_models()
    assert lmms_models.get_model("videor4") is VideoR4
    assert lmms_models.get_model_manifest("videor4").simple_class_path == "videor4.training.lmms_eval_model.VideoR4"


def test_pages_are_a_video_the_executor_can_clip_and_crop() -> None:
    pages = fx.page_arrays() + [np.asarray(Image.open(fx.PHOTO).convert("RGB"))]
    reader = PageSequenceReader(pages, fps=1.0)
    assert isinstance(reader, VideoReader)
    width, height = max(p.shape[1] for p in pages), max(p.shape[0] for p in pages)
    assert (reader.width, reader.height, reader.num_frames) == (width, height, 5)
    assert reader.timestamp(3) == 3.0 and reader.frame_at(3.4) == 3
    canvases = dict(reader.read([0, 4]))
    photo = pages[4]
    top, left = (height - photo.shape[0]) // 2, (width - photo.shape[1]) // 2
    assert np.array_equal(canvases[4][top : top + photo.shape[0], left : left + photo.shape[1]], photo)
    assert (canvases[4][:, :left] == 255).all() and canvases[4].shape == (height, width, 3)

    config = eval_rollout_config(frames=2)
    executor = media_executor_factory(config, page_fps=1.0)(RolloutSample("doc", "q", meta={"pages": pages}))
    assert [r.frame_index for r in executor.context] == [1, 3]  # two pages spread over five, as frames are
    clip = executor.execute(ToolCall("clip", {"start": 0, "end": 5}))
    assert clip.ok and [r.frame_index for r in clip.refs] == [0, 2, 4]
    assert np.array_equal(clip.images[1], dict(PageSequenceReader(pages).read([2]))[2])
    crop = executor.execute(ToolCall("crop", {"image": 1, "bbox_2d": [0.05, 0.1, 0.6, 0.8]}))
    assert crop.ok and crop.refs[0].frame_index == 1
    x1, y1, x2, y2 = executor.source_box(crop.refs[0])
    page = dict(PageSequenceReader(pages).read([1]))[1]
    assert np.array_equal(crop.images[0], page[y1:y2, x1:x2])  # the page's own pixels (large box: no resize)


def test_choice_letter_reads_the_options_lmms_eval_tasks_write(bench) -> None:
    from lmms_eval.tasks.mvbench.utils import mvbench_doc_to_text, mvbench_process_results
    from lmms_eval.tasks.videomme.utils import videomme_doc_to_text, videomme_process_results

    mv_doc = {"question": "What is parked outside?", "candidates": ["a car", "a bus", "a bike"], "answer": "a bus"}
    mv = mvbench_doc_to_text(mv_doc, {"post_prompt": "Only give the best option.\n"})
    mme_doc = {"question": "What is written on the brown sign?", "options": ["A. MUSEE", "B. LES ARTS DECORATIFS",
               "C. PALAIS", "D. OPERA"], "answer": "B", "domain": "Knowledge", "sub_category": "Humanity & History",
               "task_type": "OCR Problems", "duration": "short", "question_id": "1", "videoID": "v"}
    mme = videomme_doc_to_text(mme_doc, {"post_prompt": "\nAnswer with the option's letter from the given choices directly."})
    assert choice_letter("B", mv) == "B" and choice_letter("(b)", mv) == "B"
    assert choice_letter("a bus", mv) == "B" and choice_letter("The answer is a bus.", mv) == "B"
    assert choice_letter("les arts decoratifs!", mme) == "B" and choice_letter("B. LES ARTS DECORATIFS", mme) == "B"
    assert choice_letter("a train", mv) == "a train"  # no option matches: lmms-eval's parser decides
    assert choice_letter("a bus", "What is parked outside?") == "a bus"  # not a multiple-choice prompt
    # Why it matters: MVBench's scorer reads "a bus" as option A (the article), the mapped letter as B.
    score = lambda doc, pred: mvbench_process_results(doc, [pred])["mvbench_accuracy"]["score"]
    assert score(mv_doc, "a bus") == 0 and score(mv_doc, choice_letter("a bus", mv)) == 1
    assert videomme_process_results(mme_doc, [choice_letter("les arts decoratifs", mme)])[
        "videomme_perception_score"]["score"] == 1.0


def _docvqa_anls(pred: str, answers: list[str]) -> float:
    """MP-DocVQA's ANLS (lower-cased, stripped, 0.5 threshold), computed with the project's edit distance."""
    p = pred.lower().strip()
    best = max(1 - edit_distance(a.lower().strip(), p) / max(len(a.strip()), len(p)) for a in answers)
    return best if best >= 0.5 else 0.0


def test_documents_and_a_photo_are_answered_by_cropping_pages(bench, tiny_processor) -> None:
    answers = ["Computer Systems Research Group", "1993", "Les Arts Decoratif"]  # the last one misspelled
    scripts = [
        [_call("crop", image=2, bbox_2d=[0.0, 0.45, 1.0, 0.7]), _answer(answers[0])],
        [_call("crop", image=4, bbox_2d=[0.0, 0.1, 1.0, 0.4]), _answer(answers[1])],
        [_call("crop", image=1, bbox_2d=[0.1, 0.35, 0.5, 0.5]), _answer(answers[2])],
    ]
    lm = VideoR4(rollout_engine=ScriptedEngine(tiny_processor, scripts), batch_size=8)
    out = fx.evaluate(lm, [{"task": "multidocvqa_val", "dataset_path": str(bench["docvqa"])}])
    result = out["results"]["multidocvqa_val"]
    expected = [_docvqa_anls(a, gts) for a, (_, _, gts, _, _) in zip(answers, fx.DOCVQA)]
    assert expected[2] < 1.0
    assert result["anls,none"] == pytest.approx(sum(expected) / 3)
    assert result["accuracy,none"] == pytest.approx(2 / 3)
    pages = [len(doc[3]) for doc in fx.DOCVQA]
    for record, n_pages in zip(lm.records, pages):
        assert record["stop_reason"] == "answer" and record["tool_calls"] == 1
        (observation,) = record["observations"]
        assert observation["ok"] and observation["tool"] == "crop" and observation["refs"][0]["bbox"] is not None
        assert observation["refs"][0]["frame_index"] < n_pages
    assert [s["filtered_resps"][0] for s in out["samples"]["multidocvqa_val"]] == answers


def test_slide_deck_pages_are_clipped_like_video_frames(bench, tiny_processor) -> None:
    scripts = [[_call("clip", start=0, end=4), _answer("Aaron Poffenberger")],
               [_call("clip", start=0, end=4), _answer("7")]]
    lm = VideoR4(rollout_engine=ScriptedEngine(tiny_processor, scripts), batch_size=8, frames=2)
    out = fx.evaluate(lm, [{"task": "slidesvqa_test", "dataset_path": str(bench["slides"])}])
    result = out["results"]["slidesvqa_test"]
    assert result["em,none"] == 1.0 and result["anls,none"] == 1.0
    for record in lm.records:
        (observation,) = record["observations"]
        # pages 2 and 4 were shown first (frames=2); the clip brings back the unseen pages 1 and 3
        assert observation["ok"] and [r["frame_index"] for r in observation["refs"]] == [0, 2]
        assert [r["timestamp_s"] for r in observation["refs"]] == [0.0, 2.0]


@pytest.mark.parametrize("task", ["videomme", "mvbench_action_count"])
def test_video_multiple_choice_gets_option_letters(bench, tiny_processor, task) -> None:
    scripts = [[_call("clip", start=0.5, end=2.0), _answer("les arts decoratifs")],  # right, as option text
               [_call("clip", start=0.5, end=2.0), _answer("THEATRE")]]  # wrong
    lm = VideoR4(rollout_engine=ScriptedEngine(tiny_processor, scripts), batch_size=8)
    data = bench["videomme"] if task == "videomme" else bench["mvbench"]
    out = fx.evaluate(lm, [{"task": task, "dataset_path": str(data)}])
    metric = "videomme_perception_score" if task == "videomme" else "mvbench_accuracy"
    assert out["results"][task][f"{metric},none"] == 50.0
    letters = [chr(65 + options.index(ans)) for ans, (_, options, _) in zip(["LES ARTS DECORATIFS", "THEATRE"], fx.VIDEO_MC)]
    assert [r["answer"] for r in lm.records] == letters == ["B", "B"]
    for record in lm.records:
        refs = record["observations"][0]["refs"]
        assert refs and all(0.5 <= r["timestamp_s"] <= 2.0 for r in refs)  # new frames decoded from the video


def test_tiny_checkpoint_answers_real_requests(bench, tiny_model_dir) -> None:
    lm = VideoR4(pretrained=str(tiny_model_dir), device="cpu", frames=2, max_new_tokens=8, batch_size=4)
    out = fx.evaluate(lm, [{"task": "multidocvqa_val", "dataset_path": str(bench["docvqa"])}])
    assert {"anls,none", "accuracy,none"} <= out["results"]["multidocvqa_val"].keys()
    assert len(lm.records) == len(fx.DOCVQA)
    assert all(r["generated_tokens"] <= 8 and r["stop_reason"] in {"answer", "eos", "max_tokens", "max_calls",
                                                                   "max_images"} for r in lm.records)
    assert [s["filtered_resps"][0] for s in out["samples"]["multidocvqa_val"]] == [r["answer"] for r in lm.records]
    with pytest.raises(NotImplementedError, match="loglikelihood"):
        lm.loglikelihood([])


def test_lmms_eval_cli_runs_the_plugin(tiny_model_dir, tmp_path) -> None:
    """``python -m lmms_eval --model videor4`` (entry-point plug-in, --include_path tasks) on the bundled sample."""
    import json
    import os

    from videor4.curation.sample import sample_root

    env = {**os.environ, "VIDEOR4_M4_ROOT": str(sample_root()), "HF_HOME": str(tmp_path / "hf"),
           "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    args = [sys.executable, "-m", "lmms_eval", "--model", "videor4",
            "--model_args", f"pretrained={tiny_model_dir},device=cpu,frames=2,max_new_tokens=8",
            "--tasks", "m4_vitevqa_sample", "--include_path", str(TASKS_DIR), "--limit", "2",
            "--output_path", str(tmp_path / "out"), "--log_samples"]
    run = subprocess.run(args, env=env, capture_output=True, text=True, timeout=600, check=False)
    assert run.returncode == 0, run.stderr[-3000:]
    (results_file,) = Path(tmp_path / "out").rglob("*_results.json")
    results = json.loads(results_file.read_text())["results"]["m4_vitevqa_sample"]
    assert results["missing,none"] == 28  # 30 questions, 2 answered: scored like `eval score` on 2 predictions
    assert 0 <= results["acc,none"] <= 100 and 0 <= results["anls,none"] <= 100
