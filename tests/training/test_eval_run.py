"""``videor4 eval run`` with the tiny model on a small dataset in the official layout (answers are garbage)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import pytest

from videor4.pipelines.cli import main

QUESTIONS = ["What is written?", "Which frame number?", "What color is the background?"]


@pytest.fixture(scope="module")
def data_root(tmp_path_factory, tiny_video) -> Path:
    """Two videos: 00001 as an mp4, 00002 as an img_dir frame folder; 3 + 2 questions, one without media."""
    root = tmp_path_factory.mktemp("m4")
    (root / "videos").mkdir()
    shutil.copy(tiny_video, root / "videos" / "00001.mp4")
    frames = root / "img_dir" / "00002"
    frames.mkdir(parents=True)
    cap = cv2.VideoCapture(str(tiny_video))
    for n in range(1, 21):
        ok, bgr = cap.read()
        cv2.imwrite(str(frames / f"{n}.jpg"), bgr)
    cap.release()
    base = {"answers": ["F05"], "video_width": 224, "video_height": 128, "source1": "Single frame", "source2": "Text"}
    data = [{**base, "question": q, "video_id": "00001", "question_id": 100 + k} for k, q in enumerate(QUESTIONS)]
    data += [{**base, "question": q, "video_id": "00002", "question_id": 200 + k} for k, q in enumerate(QUESTIONS[:2])]
    data += [{**base, "question": "Lost?", "video_id": "00003", "question_id": 300}]
    doc = {"dataset_type": "tiny", "dataset_name": "M4-ViteVQA", "dataset_version": "0.0.2", "data": data}
    (root / "Annotations").mkdir()
    (root / "Annotations" / "ViteVQA_0.0.2_tiny.json").write_text(json.dumps(doc))
    return root


def _run(model, root, out, *extra, capsys):
    args = ["eval", "run", "--model", str(model), "--data-root", str(root), "--split", "tiny", "--out", str(out),
            "--frames", "3", "--max-new-tokens", "12", "--batch-size", "2", "--device", "cpu", *extra]
    code = main(args)
    captured = capsys.readouterr()
    return code, captured


def test_run_resume_and_score(tiny_model_dir, data_root, tmp_path, capsys) -> None:
    out = tmp_path / "not" / "yet" / "preds.jsonl"  # --out's folder is created
    code, cap = _run(tiny_model_dir, data_root, out, "--limit", "4", capsys=capsys)
    assert code == 0, cap.err
    result = json.loads(cap.out)
    assert {"acc", "anls", "n", "missing", "splits", "run"} <= result.keys()
    assert result["n"] == 6 and result["missing"] == 2 and result["run"]["predicted_now"] == 4
    preds = [json.loads(line) for line in out.read_text().splitlines()]
    assert [p["question_id"] for p in preds] == [100, 101, 102, 200]
    assert all(set(p) == {"question_id", "pred_answer"} and isinstance(p["pred_answer"], str) for p in preds)
    transcripts = [json.loads(line) for line in out.with_name("preds.jsonl.transcripts.jsonl").read_text().splitlines()]
    assert [t["question_id"] for t in transcripts] == [100, 101, 102, 200]
    t = transcripts[3]
    assert t["video_id"] == "00002" and len(t["initial_refs"]) == 3 and t["turns"] and t["stop_reason"]

    # Resume: the 4 done questions are skipped, the 5th is predicted, the one without media is reported.
    code, cap = _run(tiny_model_dir, data_root, out, capsys=capsys)
    assert code == 0, cap.err
    result = json.loads(cap.out)
    assert result["run"]["predicted_now"] == 1 and result["run"]["resumed"] == 4 and result["run"]["no_media"] == 1
    assert result["missing"] == 1 and "question 300" in cap.err
    assert [json.loads(x)["question_id"] for x in out.read_text().splitlines()] == [100, 101, 102, 200, 201]
    assert len(out.with_name("preds.jsonl.transcripts.jsonl").read_text().splitlines()) == 5


def test_resume_drops_uncommitted_transcripts(tiny_model_dir, data_root, tmp_path, capsys) -> None:
    out = tmp_path / "p.jsonl"
    out.write_text(json.dumps({"question_id": 100, "pred_answer": "x"}) + "\n")
    side = tmp_path / "p.jsonl.transcripts.jsonl"
    side.write_text(json.dumps({"question_id": 100}) + "\n" + json.dumps({"question_id": 101}) + "\n" + '{"quest')
    code, cap = _run(tiny_model_dir, data_root, out, "--limit", "2", "--no-tools", capsys=capsys)
    assert code == 0, cap.err
    assert [json.loads(x)["question_id"] for x in side.read_text().splitlines()] == [100, 101]
    result = json.loads(cap.out)
    assert result["run"]["tools"] is False and result["run"]["predicted_now"] == 1
    one = json.loads(side.read_text().splitlines()[1])
    assert len(one["turns"]) == 1 and one["turns"][0]["observations"] == []


@pytest.mark.parametrize(
    ("model", "split", "needle"),
    [("missing-model", "tiny", "config.json"), (None, "t9", "annotation file")],
)
def test_user_errors(tiny_model_dir, data_root, tmp_path, capsys, model, split, needle) -> None:
    model = tmp_path / model if model else tiny_model_dir
    code = main(["eval", "run", "--model", str(model), "--data-root", str(data_root), "--split", split,
                 "--out", str(tmp_path / "o.jsonl")])
    err = capsys.readouterr().err
    assert code == 2 and needle in err and len(err.strip().splitlines()) == 1


def test_bundled_sample(tiny_model_dir, tmp_path, capsys) -> None:
    from videor4.curation.sample import sample_root

    root = Path(sample_root())
    split = sorted(root.glob("Annotations/ViteVQA_0.0.2_*.json"))[0].stem.split("_")[-1]
    out = tmp_path / "sample.jsonl"
    code = main(["eval", "run", "--model", str(tiny_model_dir), "--data-root", str(root), "--split", split,
                 "--out", str(out), "--limit", "2", "--frames", "2", "--max-new-tokens", "8", "--device", "cpu"])
    cap = capsys.readouterr()
    assert code == 0, cap.err
    assert json.loads(cap.out)["run"]["predicted_now"] == 2 and len(out.read_text().splitlines()) == 2


def test_a_transcript_renders_every_turn_image_and_crop_box(tiny_processor, data_root, tmp_path, capsys) -> None:
    """``videor4 shards inspect <preds>.transcripts.jsonl`` replays a rollout that clipped and cropped: one message
    block per chat message, one image per image ref, the crop's region drawn on its frame (the model is forced:
    the tiny random model seldom calls tools)."""
    import re

    from videor4.training.eval_run import _transcript, eval_rollout_config
    from videor4.training.rollout import RolloutSample, ScriptedEngine, run_rollouts, video_executor_factory

    clip = '<think>Look again.</think>\n<tool_call>\n{"name": "clip", "arguments": {"start": 0.4, "end": 0.7}}\n</tool_call>'
    crop = ('<think>Zoom.</think>\n<tool_call>\n{"name": "crop", "arguments": {"image": 4, "bbox_2d": [0.1, 0.3, '
            '0.6, 0.8]}}\n</tool_call>')
    config = eval_rollout_config(frames=3, max_new_tokens=400)
    video = data_root / "videos" / "00001.mp4"
    sample = RolloutSample("100", "What is written?", video, ("F05",), {"question_id": 100, "video_id": "00001"})
    (rollout,) = run_rollouts(ScriptedEngine(tiny_processor, [[clip, crop, "<think>F05.</think>\n<answer>F05</answer>"]]),
                              [sample], video_executor_factory(config), config)
    assert [o.tool for o in rollout.observations] == ["clip", "crop"] and rollout.answer == "F05"
    transcripts = tmp_path / "preds.jsonl.transcripts.jsonl"
    transcripts.write_text(json.dumps(_transcript(sample, rollout, Path("model"), config)) + "\n")

    page_path = tmp_path / "t.html"
    assert main(["shards", "inspect", str(transcripts), "--sample", "100", "--html", str(page_path)]) == 0
    page = page_path.read_text()
    assert page.count("<div class='msg ") == len(rollout.messages)
    assert page.count("<img ") == len(rollout.refs) == 3 + 3 + 1  # initial frames, the clip's frames, the crop
    assert "correct" in page and "clip → crop" in page
    # the cropped frame is drawn with the crop's region in orange: decode its image and look for orange pixels
    import base64

    from videor4.contracts.media import decode_jpeg

    crop_frame = rollout.observations[1].refs[0].frame_index
    figures = re.findall(r"<img src='data:image/jpeg;base64,([^']+)'><figcaption>frame (\d+) [^<]*</figcaption>", page)
    drawn = [decode_jpeg(base64.b64decode(b64)) for b64, frame in figures if int(frame) == crop_frame]
    orange = [int(((im[..., 0] > 200) & (im[..., 1] > 100) & (im[..., 1] < 200) & (im[..., 2] < 80)).sum())
              for im in drawn]
    assert drawn and max(orange) > 50
