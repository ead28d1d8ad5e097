"""Bad input, concurrent runs and crafted files: nothing lost, nothing leaked, one clear line (issue 17).

One test per probe, each with the input that used to break things: two ``videor4 curate`` processes on one
``--out``; odd ``question_id``/``video_id`` values; a video the OS refuses to read and a frame folder with gaps;
a failure while a run writes its outputs; ``--output`` of another recipe's run; every user mistake that used to
print a traceback; ``qc serve --stop`` on a PID that is not Label Studio; shard video paths leaving the data root.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from tests.contracts.test_run_lock import read_only_dir
from tests.shard_rows import shard_rows, write_shards
from videor4.contracts.dataset import load_annotation_file, media_path
from videor4.contracts.errors import UserError
from videor4.contracts.media import FrameGapError, open_video
from videor4.contracts.run_lock import LOCK_FILE, RunLock, read_holder
from videor4.contracts.shard_schema import RL_SCHEMA
from videor4.curation.sample import SAMPLE_SPLIT, sample_annotation_path, sample_root
from videor4.pipelines.cli import main

REPO = Path(__file__).resolve().parents[2]
QUICK = {"sampling": {"mode": "uniform", "num_frames": 4}, "detector": {"backend": "none"}}


def _quick_config(tmp_path: Path) -> Path:
    path = tmp_path / "quick.yaml"
    path.write_text(yaml.safe_dump(QUICK))
    return path


def _one_error_line(err: str) -> str:
    """The stderr of a refused command: exactly one ``videor4: error:`` line and no traceback."""
    assert "Traceback" not in err, err[-3000:]
    lines = [line for line in err.splitlines() if line.startswith("videor4: error:")]
    assert len(lines) == 1, err[-3000:]
    return lines[0]


def _cli_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(PREFECT_HOME=str(home), PYTHONUNBUFFERED="1")
    return env


def _unreadable(path: Path) -> None:
    """A file the OS refuses to read: mode 000 for a normal user; root reads anything, so then a file whose
    reads fail with an I/O error (/proc/self/mem at offset 0)."""
    if os.geteuid() == 0:
        path.symlink_to("/proc/self/mem")
    else:
        path.write_bytes(b"\x00" * 64)
        path.chmod(0)


# --- probe 1: two runs into one --out ---------------------------------------------------------------------------
def test_a_second_curate_into_the_same_out_is_refused_naming_the_first(tmp_path: Path) -> None:
    out = tmp_path / "out"
    args = [sys.executable, "-m", "videor4.pipelines.cli", "curate", "--data-root", str(sample_root()), "--split",
            SAMPLE_SPLIT, "--out", str(out), "--limit", "1", "--config", str(_quick_config(tmp_path)),
            "--no-progress"]
    env = _cli_env(tmp_path / "prefect-home")
    first = subprocess.Popen(args, env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 300
        while (holder := read_holder(out)) is None or holder.pid != first.pid:
            assert first.poll() is None, first.communicate()[1][-3000:]
            assert time.monotonic() < deadline, "the first run never took the lock"
            time.sleep(0.2)
        second = subprocess.run(args, env=env, cwd=REPO, capture_output=True, text=True, timeout=300, check=False)
        assert first.poll() is None, "the second run should be refused while the first still runs"
        assert second.returncode == 2, second.stderr[-3000:]
        line = _one_error_line(second.stderr)
        assert f"pid {first.pid} on {socket.gethostname()}, started 20" in line and "in use by another run" in line
        _, stderr = first.communicate(timeout=1200)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    assert first.returncode == 0, stderr[-3000:]
    run = json.loads((out / "run.json").read_text())
    assert run["status"] == "completed" and run["attempt"] == 1 and run["pid"] == first.pid
    assert not (out / LOCK_FILE).exists() and (out / "shards" / "manifest.json").is_file()


# --- probes 2, 3, 9: odd ids, an unreadable video and a frame folder with gaps are rejects of their own ------------
@pytest.fixture(scope="module")
def odd_data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Sample questions plus three odd records; 90001 unreadable, 90002 frames numbered 1, 5, 100, 90003 fine."""
    root = tmp_path_factory.mktemp("odd-data")
    doc = json.loads(sample_annotation_path().read_text())
    base = next(r for r in doc["data"] if r["video_id"] == "90003")
    doc["data"] += [
        {**base, "question_id": True, "question": "a bool id?"},
        {**base, "question_id": 2**70, "question": "an id beyond int64?"},
        {**base, "question_id": 990003, "video_id": "90003\n", "question": "a newline after the id?"},
    ]
    (root / "Annotations").mkdir()
    (root / "Annotations" / sample_annotation_path().name).write_text(json.dumps(doc))
    (root / "videos").mkdir()
    shutil.copy(sample_root() / "videos" / "90003.mp4", root / "videos" / "90003.mp4")
    _unreadable(root / "videos" / "90001.mp4")
    frames = root / "img_dir" / "90002"
    frames.mkdir(parents=True)
    for src, number in ((1, 1), (2, 5), (3, 100)):
        shutil.copy(sample_root() / "img_dir" / "90002" / f"{src}.jpg", frames / f"{number}.jpg")
    return root


@pytest.fixture(scope="module")
def odd_run(odd_data_root: Path, prefect_home: Path, tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    tmp = tmp_path_factory.mktemp("odd-run")
    argv = ["curate", "--data-root", str(odd_data_root), "--split", SAMPLE_SPLIT, "--out", str(tmp / "out"),
            "--limit", "3", "--config", str(_quick_config(tmp)), "--no-progress"]
    return SimpleNamespace(argv=argv, out=tmp / "out", rc=main(argv))


def test_odd_question_and_video_ids_are_rejected_at_load_and_the_run_completes(odd_run: SimpleNamespace) -> None:
    assert odd_run.rc == 0
    rejects = pd.read_parquet(odd_run.out / "rejects.parquet")
    bad = rejects[rejects.reason == "bad_record"].sort_values("record_index")
    assert list(bad.field) == ["question_id", "question_id", "video_id"]
    assert list(bad.question_id) == [-1, -1, 990003]  # ids that fit no int64 column are not copied
    assert "got True" in bad.message.iloc[0] and "within int64" in bad.message.iloc[1]
    assert "'90003\\n'" in bad.message.iloc[2]
    assert json.loads((odd_run.out / "run.json").read_text())["status"] == "completed"
    assert set(pd.read_parquet(odd_run.out / "questions.parquet").video_id) == {"90003"}


def test_a_video_that_cannot_be_read_or_timed_is_a_reject_and_the_others_complete(odd_run: SimpleNamespace) -> None:
    rejects = pd.read_parquet(odd_run.out / "rejects.parquet")
    by_video = rejects[rejects.stage == "media"].groupby("video_id")["reason"].agg(set).to_dict()
    assert by_video == {"90001": {"unreadable_media"}, "90002": {"frame_gap"}}
    assert (rejects.video_id == "90001").sum() == 4 and (rejects.video_id == "90002").sum() == 6
    gap = rejects[rejects.reason == "frame_gap"].message.iloc[0]
    assert "1.jpg to 5.jpg" in gap and "frames 2-4 missing" in gap
    stats = json.loads((odd_run.out / "stats.json").read_text())
    assert stats["videos"] == 3 and stats["videos_ok"] == 1


def test_frame_folders_with_gaps_are_refused_by_the_reader(tmp_path: Path) -> None:
    frames = tmp_path / "00001"
    frames.mkdir()
    for number in (1, 2, 4):
        shutil.copy(sample_root() / "img_dir" / "90002" / "1.jpg", frames / f"{number}.jpg")
    with pytest.raises(FrameGapError, match=r"2.jpg to 4.jpg \(frame 3 missing\)"):
        open_video(frames)
    (frames / "3.jpg").write_bytes((frames / "1.jpg").read_bytes())
    assert open_video(frames).num_frames == 4  # consecutive again: read, frame i at i / fps


def test_video_id_with_a_trailing_newline_or_non_ascii_digits_is_a_bad_record(tmp_path: Path) -> None:
    doc = json.loads(sample_annotation_path().read_text())
    base = doc["data"][0]
    doc["data"] = [{**base, "video_id": "90001\n"}, {**base, "question_id": 7, "video_id": "٩٠٠٠١"},
                   {**base, "question_id": 8, "answers": ["\ud800"]}, {**base, "question_id": 9}]
    path = tmp_path / "ViteVQA_0.0.2_x.json"
    path.write_text(json.dumps(doc))
    data = load_annotation_file(path)
    assert [r.question_id for r in data.records] == [9]
    assert [(r.field, r.reason) for r in data.rejects] == [("video_id", "bad_record"), ("video_id", "bad_record"),
                                                           ("answers", "bad_record")]


# --- a run that fails while writing ends "failed", and the last run's outputs stay ------------------------------
def test_a_run_that_fails_late_is_marked_failed_and_leaves_the_previous_outputs(odd_run: SimpleNamespace,
                                                                                capfd: pytest.CaptureFixture) -> None:
    out = odd_run.out
    evidence = out / "evidence.parquet"
    before = (evidence.stat().st_ino, evidence.read_bytes())
    cot = out / "shards" / "cot"
    shutil.rmtree(cot)
    cot.write_text("a file where the run must write a folder")
    capfd.readouterr()
    assert main(odd_run.argv) == 2
    errors = [line for line in capfd.readouterr().err.splitlines() if line.startswith("videor4: error:")]
    assert len(errors) == 1 and "shards/cot" in errors[0] and "not a folder" in errors[0], errors
    run = json.loads((out / "run.json").read_text())
    assert run["status"] == "failed" and "cot" in run["error"] and run["attempt"] == 2
    assert (evidence.stat().st_ino, evidence.read_bytes()) == before  # nothing of the failed run was published
    assert not list(out.glob(".staging-*")) and not (out / LOCK_FILE).exists()
    proc = subprocess.run([sys.executable, "-m", "videor4.pipelines.cli", "runs", "status", str(out)],
                          capture_output=True, text=True, cwd=REPO, check=False)
    assert proc.returncode == 0 and "failed" in proc.stdout and "cot" in proc.stdout


# --- probe 4: --output of another recipe's run ----------------------------------------------------------------
def test_train_refuses_the_output_of_another_recipes_run(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    run = tmp_path / "run"
    (run / "01-crp-sft").mkdir(parents=True)
    other = yaml.safe_dump({"name": "ablation-crp-sft-only", "stages": [{"name": "crp-sft"}]})
    (run / "recipe.yaml").write_text(other)
    assert main(["train", "--recipe", "tiny-cpu", "--output", str(run)]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert "holds a run of a different recipe ('ablation-crp-sft-only'" in line
    assert (run / "recipe.yaml").read_text() == other and not (run / "base-model").exists()


def test_train_into_a_locked_output_is_refused_naming_the_holder(tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture) -> None:
    with RunLock(tmp_path / "run", "videor4 train --recipe other"):
        assert main(["train", "--recipe", "tiny-cpu", "--output", str(tmp_path / "run")]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert f"pid {os.getpid()}" in line and "videor4 train --recipe other" in line
    assert not (tmp_path / "run" / "recipe.yaml").exists()


# --- probe 7: a user's mistake is one line and exit 2, never a traceback -------------------------------------------
def _data_root_with(tmp: Path, annotation: bytes | None) -> Path:
    root = tmp / "data"
    (root / "Annotations").mkdir(parents=True)
    if annotation is not None:
        (root / "Annotations" / "ViteVQA_0.0.2_x.json").write_bytes(annotation)
    return root


def _curate(tmp: Path, root: Path, out: Path | None = None, config: Path | None = None) -> list[str]:
    split = SAMPLE_SPLIT if root == sample_root() else "x"
    return (["curate", "--data-root", str(root), "--split", split, "--out", str(out or tmp / "out"), "--no-progress"]
            + (["--config", str(config)] if config else []))


def _binary(tmp: Path, name: str) -> Path:
    path = tmp / name
    path.write_bytes(bytes(range(256)) * 4)
    return path


def _file(tmp: Path, name: str, text: str) -> Path:
    path = tmp / name
    path.write_text(text)
    return path


CURATE_MISTAKES = {
    "data root missing": (lambda t: _curate(t, t / "nope"), "does not exist"),
    "data root is a file": (lambda t: _curate(t, _file(t, "root", "x")), "not a directory"),
    "no annotation file": (lambda t: _curate(t, _data_root_with(t, None)), "not found"),
    "annotation not JSON": (lambda t: _curate(t, _data_root_with(t, b"{oops")), "not valid JSON"),
    "annotation binary": (lambda t: _curate(t, _data_root_with(t, bytes(range(256)))), "not UTF-8"),
    "annotation nested too deeply": (lambda t: _curate(t, _data_root_with(t, b"[" * 200000)), "nested too deeply"),
    "annotation not the official shape": (lambda t: _curate(t, _data_root_with(t, b"[1, 2]")), "'data' list"),
    "--out is a file": (lambda t: _curate(t, sample_root(), _file(t, "out-file", "x")), "cannot use as an output"),
    "--out read-only": (lambda t: _curate(t, sample_root(), read_only_dir(t)), "cannot write here"),
    "binary --config": (lambda t: _curate(t, sample_root(), config=_binary(t, "cfg.yaml")), "not UTF-8"),
}


@pytest.mark.parametrize("case", list(CURATE_MISTAKES))
def test_curate_mistakes_are_one_line_before_any_flow_runs(case: str, tmp_path: Path, prefect_home: Path,
                                                           capfd: pytest.CaptureFixture) -> None:
    build, expected = CURATE_MISTAKES[case]
    argv = build(tmp_path)
    capfd.readouterr()
    assert main(argv) == 2
    err = capfd.readouterr().err
    assert expected in _one_error_line(err)
    assert "starting the local Prefect server" not in err  # refused before Prefect was even started
    out_dir = Path(argv[argv.index("--out") + 1])
    assert not (out_dir.is_dir() and (out_dir / "run.json").exists())


def _shards(tmp: Path) -> Path:
    write_shards(tmp / "shards", sample_root())
    return tmp / "shards"


def _foreign_columns(tmp: Path) -> Path:
    """A Parquet file with the project's schema tag but other columns."""
    shards = _shards(tmp)
    table = pa.table({"sample_id": ["x"], "text": ["not a shard row"]}).replace_schema_metadata(RL_SCHEMA.metadata)
    pq.write_table(table, shards / "rl" / "rld-00000.parquet")
    return shards / "rl" / "rld-00000.parquet"


def _ls_data_dir(tmp: Path, name: str, text: str) -> Path:
    d = tmp / "ls-data"
    d.mkdir(exist_ok=True)
    (d / name).write_text(text)
    return d


def _predictions_nested(tmp: Path) -> list[str]:
    preds = _file(tmp, "preds.jsonl", '{"question_id": 900001, "pred_answer": "a"}\n' + "[" * 200000 + "\n")
    return ["eval", "score", "--annotations", str(sample_annotation_path()), "--predictions", str(preds)]


OTHER_MISTAKES = {
    "runs status: corrupt run.json": (
        lambda t: ["runs", "status", str(_file(t, "run.json", '{"status": "run').parent)], "not a readable run"),
    "runs status: run.json of another shape": (
        lambda t: ["runs", "status", str(_file(t, "run.json", '{"status": "running"}').parent)], "missing field"),
    "shards stats: corrupt manifest": (
        lambda t: ["shards", "stats", str(_file(_shards(t), "manifest.json", "{").parent)], "not a readable manifest"),
    "shards inspect: schema tag, other columns": (
        lambda t: ["shards", "inspect", str(_foreign_columns(t)), "--html", str(t / "x.html")],
        "columns differ from the shard schema"),
    "shards inspect: --html is a directory": (
        lambda t: ["shards", "inspect", str(_shards(t)), "--html", str(t)], "is a directory"),
    "train: binary recipe": (lambda t: ["train", "--recipe", str(_binary(t, "r.yaml"))], "not UTF-8"),
    "qc push: corrupt credentials": (
        lambda t: ["qc", "push", "--shards", str(_shards(t)), "--ls-data-dir",
                   str(_ls_data_dir(t, "videor4_credentials.json", "{")), "--url", "http://127.0.0.1:9"],
        "not a readable credentials file"),
    "qc serve --stop: corrupt pid file": (
        lambda t: ["qc", "serve", "--stop", "--ls-data-dir", str(_ls_data_dir(t, "videor4_server.json", "[1"))],
        "not a readable pid file"),
    "qc serve --port 70000": (
        lambda t: ["qc", "serve", "--data-root", str(t), "--ls-data-dir", str(t / "ls"), "--port", "70000"],
        "port: Input should be less than 65536"),
    "eval score: deeply nested JSON line": (_predictions_nested, ":2: nested too deeply"),
    "eval score: --predictions is a directory": (
        lambda t: ["eval", "score", "--annotations", str(sample_annotation_path()), "--predictions", str(t)],
        "is a directory"),
}


@pytest.mark.parametrize("case", list(OTHER_MISTAKES))
def test_other_mistakes_are_one_line(case: str, tmp_path: Path, capfd: pytest.CaptureFixture,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("VIDEOR4_LS_TOKEN", raising=False)
    build, expected = OTHER_MISTAKES[case]
    argv = build(tmp_path)
    capfd.readouterr()
    assert main(argv) == 2
    assert expected in _one_error_line(capfd.readouterr().err)


def test_serve_stop_never_claims_to_stop_a_process_that_is_not_label_studio(tmp_path: Path,
                                                                           capsys: pytest.CaptureFixture) -> None:
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        data_dir = _ls_data_dir(tmp_path, "videor4_server.json", json.dumps({"pid": bystander.pid}))
        assert main(["qc", "serve", "--stop", "--ls-data-dir", str(data_dir)]) == 0
        said = capsys.readouterr().out
        assert "nothing stopped" in said and f"pid {bystander.pid}" in said and "stopped Label Studio" not in said
        assert bystander.poll() is None and not (data_dir / "videor4_server.json").exists()
    finally:
        bystander.kill()
        bystander.wait()


# --- probe 9: a shard's video path may not leave the data root -------------------------------------------------
@pytest.fixture()
def escaping_rows(tmp_path: Path) -> SimpleNamespace:
    """A data root, and next to it (outside) a real video that rows reach with ``..`` or an absolute path."""
    root = tmp_path / "root"
    (root / "videos").mkdir(parents=True)
    outside = tmp_path / "outside"
    outside.mkdir()
    shutil.copy(sample_root() / "videos" / "90001.mp4", outside / "secret.mp4")
    paths = ["../outside/secret.mp4", str(outside / "secret.mp4"), "videos/../../outside/secret.mp4"]
    return SimpleNamespace(root=root, rows=[r for p in paths for r in shard_rows(video_path=p)])


def test_media_path_refuses_paths_leaving_the_root(tmp_path: Path) -> None:
    assert media_path(tmp_path, "videos/90001.mp4") == tmp_path / "videos" / "90001.mp4"
    assert media_path(tmp_path, "img_dir/<odd name>") == tmp_path / "img_dir" / "<odd name>"
    for bad in ("../x.mp4", "/etc/passwd", "videos/../../x.mp4", "..", ""):
        with pytest.raises(UserError, match="not inside the data root"):
            media_path(tmp_path, bad)


def test_every_consumer_of_a_shard_video_path_refuses_to_leave_the_data_root(escaping_rows: SimpleNamespace
                                                                            ) -> None:
    from videor4.annotation.labeling import MediaTarget, build_task
    from videor4.contracts.executor import OpsConfig
    from videor4.contracts.media import MediaConfig
    from videor4.contracts.shard_schema import CoTRow
    from videor4.contracts.view import PromptConfig, ShardView
    from videor4.curation.viewer import render_sample_html
    from videor4.pipelines.qc_flows import make_resynthesizer
    from videor4.training.grpo_trainer import GRPOTrainer
    from videor4.training.rollout import RolloutSample
    from videor4.training.sft_trainer import CoTRenderer

    root = escaping_rows.root
    trainer = SimpleNamespace(data_root=root, media=MediaConfig(), view=ShardView())
    resynthesize = make_resynthesizer(root)
    for row in escaping_rows.rows:
        consumers = {
            "viewer": lambda row=row: render_sample_html(row, root),
            "labeling": lambda row=row: build_task(row, MediaTarget(root, embed=True)),
            "qc re-synthesis": lambda row=row: resynthesize(row, None, None),
        }
        if isinstance(row, CoTRow):
            consumers["sft renderer"] = lambda row=row: CoTRenderer(None, root, PromptConfig(), OpsConfig()).images(row)
        else:
            sample = RolloutSample(row.sample_id, row.question, root, tuple(row.answers), {"row": row})
            consumers["grpo executor"] = lambda sample=sample: GRPOTrainer._executor(trainer, sample)
        for name, consume in consumers.items():
            with pytest.raises(UserError, match="not inside the data root"):
                consume()
                pytest.fail(f"{name} opened {row.video.path} outside {root}")
