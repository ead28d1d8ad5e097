"""``videor4 eval transfer``: the zero-shot transfer table from local benchmark fixtures, through lmms-eval.

The tiny random checkpoint answers (garbage, so scores are near 0); what is checked is the plumbing: each
benchmark runs lmms-eval's own task on data in its own layout, the no-tools baseline runs beside rumination,
and every number in the table is the one lmms-eval computed. MVBench (20 tasks, one video each) is covered by
``test_lmms_eval_model.py`` on one of its tasks; here the mean over a group is exercised by Video-MMMU's three.
"""

from __future__ import annotations

import json

import pytest

from tests.training import lmms_eval_fixtures as fx

fx.require_lmms_eval()

from videor4.contracts.dataset import annotation_path
from videor4.pipelines.cli import main
from videor4.training.eval_cli import score_predictions
from videor4.training.transfer import format_transfer_table

BENCHMARKS = ["mp-docvqa", "slidesvqa", "videomme", "video-mmmu"]


@pytest.fixture(scope="module")
def fixtures(tmp_path_factory):
    from videor4.curation.sample import sample_root

    base = tmp_path_factory.mktemp("transfer")
    hf_home = base / "hf"
    return {
        "hf_home": hf_home,
        "data": {
            "mp-docvqa": fx.mp_docvqa(base / "MP-DocVQA"),
            "slidesvqa": fx.slidevqa(base / "SlideVQA"),
            "videomme": fx.videomme(base / "Video-MME", hf_home, sample_root()),
            "video-mmmu": fx.video_mmmu(base / "VideoMMMU", hf_home),
        },
        "m4_root": sample_root(),
    }


@pytest.fixture
def env(monkeypatch, fixtures):
    # eval transfer sets these for its process; monkeypatch puts the test session's values back afterwards
    for name in ("HF_HOME", "HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE", "VIDEOR4_M4_ROOT"):
        monkeypatch.setenv(name, "unset-by-test")
    return fixtures


def test_transfer_table_from_local_benchmarks(env, tiny_model_dir, tmp_path, capsys) -> None:
    out = tmp_path / "transfer"
    args = ["eval", "transfer", "--model", str(tiny_model_dir), "--hf-home", str(env["hf_home"]),
            "--benchmarks", ",".join(BENCHMARKS), *[f"--data={k}={v}" for k, v in env["data"].items()],
            "--m4-root", str(env["m4_root"]), "--m4-splits", "sample", "--limit", "2", "--frames", "2",
            "--max-new-tokens", "8", "--batch-size", "4", "--device", "cpu", "--out", str(out), "--format", "json"]
    capsys.readouterr()
    assert main(args) == 0
    result = json.loads(capsys.readouterr().out)
    assert result == json.loads((out / "transfer.json").read_text())
    assert list(result["rows"]) == [*BENCHMARKS, "m4_vitevqa_sample"]
    counts = {"mp-docvqa": 2, "slidesvqa": 2, "videomme": 2, "video-mmmu": 3, "m4_vitevqa_sample": 2}
    for mode in ("rumination", "no_tools"):
        lmms = json.loads((out / mode / "lmms_eval_results.json").read_text())["results"]
        rollouts = [json.loads(line) for line in (out / mode / "rollouts.jsonl").read_text().splitlines()]
        assert len(rollouts) == sum(counts.values())
        for key, n in counts.items():
            assert result["rows"][key][mode]["n"] == n
        rows = result["rows"]
        assert rows["mp-docvqa"][mode]["score"] == 100 * lmms["multidocvqa_val"]["anls,none"]
        assert rows["slidesvqa"][mode]["score"] == 100 * lmms["slidesvqa_test"]["anls,none"]
        assert rows["videomme"][mode]["score"] == lmms["videomme"]["videomme_perception_score,none"]
        tracks = [lmms[f"video_mmmu_{t}"]["mmmu_acc,none"] for t in ("adaptation", "comprehension", "perception")]
        assert rows["video-mmmu"][mode]["score"] == pytest.approx(100 * sum(tracks) / 3)
        # M4 rows: the official Acc/ANLS of the answers the rollouts gave (unanswered questions count 0)
        m4 = {r["doc_id"]: r["answer"] for r in rollouts if r["task"] == "m4_vitevqa_sample"}
        from videor4.curation.sample import sample_root

        records = json.loads(annotation_path(sample_root(), "sample").read_text())["data"]
        official = score_predictions([annotation_path(sample_root(), "sample")],
                                     {records[doc]["question_id"]: answer for doc, answer in m4.items()})
        assert (rows["m4_vitevqa_sample"][mode]["acc"], rows["m4_vitevqa_sample"][mode]["anls"]) == (
            official["acc"], official["anls"])
        if mode == "no_tools":
            assert all(r["tool_calls"] == 0 and not r["observations"] for r in rollouts)
    table = format_transfer_table(result).splitlines()
    assert len(table) == 2 + len(counts)
    assert table[2].startswith("| MP-DocVQA val | ANLS |") and "| SlidesVQA test |" in table[3]
    assert table[-1].startswith("| M4-ViteVQA sample | Acc / ANLS |")


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (["--benchmarks", "chartqa"], "unknown benchmark 'chartqa'"),
        (["--benchmarks", "videomme"], "videomme/ (lmms-eval's task reads the videos there"),
        (["--benchmarks", "mp-docvqa", "--data", "mp-docvqa=/nonexistent/MP-DocVQA"], "not a folder"),
        (["--benchmarks", "mp-docvqa", "--data", "mp-docvqa"], "--data takes NAME=DIR"),
        (["--benchmarks", "", "--m4-root", "/nonexistent"], "has no Annotations/ folder"),
    ],
)
def test_transfer_user_errors(tiny_model_dir, tmp_path, capsys, extra, needle) -> None:
    (tmp_path / "hf").mkdir()
    code = main(["eval", "transfer", "--model", str(tiny_model_dir), "--hf-home", str(tmp_path / "hf"), *extra])
    err = capsys.readouterr().err
    assert code == 2 and needle in err and len(err.strip().splitlines()) == 1


def test_transfer_without_lmms_eval_says_which_extra(tiny_model_dir, tmp_path) -> None:
    """In an environment without lmms-eval (simulated by blocking its import), one line names the extra."""
    import subprocess
    import sys

    (tmp_path / "hf").mkdir()
    code = ("import sys; sys.modules['lmms_eval'] = None; from videor4.pipelines.cli import main; "
            f"sys.exit(main(['eval', 'transfer', '--model', {str(tiny_model_dir)!r}, '--hf-home', "
            f"{str(tmp_path / 'hf')!r}, '--benchmarks', 'mp-docvqa']))")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=False)
    assert run.returncode == 2 and "pip install 'video-r4[eval]'" in run.stderr
    assert len(run.stderr.strip().splitlines()) == 1
