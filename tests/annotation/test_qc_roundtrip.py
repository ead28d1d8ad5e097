"""Push → annotate (through the real API, as the UI does) → pull → shards changed, against a real Label Studio.

Tests run in file order and share one server and one shards directory: each step builds on the previous one,
like a reviewer's session. The last test stops the server and checks that nothing is half-done.
"""

from __future__ import annotations

import copy
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import requests

from videor4.annotation.client import QCClient
from videor4.annotation.routing import RoutingConfig
from videor4.annotation.verdicts import read_rejected_rows
from videor4.contracts.rejects import REJECTS_FILE
from videor4.contracts.shard_io import content_hash, iter_rows, read_manifest, shard_files
from videor4.pipelines.cli import main
from videor4.pipelines.qc_flows import qc_pull, qc_push

PROJECT = "qc-roundtrip"


@pytest.fixture(scope="module")
def env(label_studio, prefect_home, make_sample_shards, tmp_path_factory):
    shards = tmp_path_factory.mktemp("run") / "shards"
    rows = make_sample_shards(shards, label_studio.data_root)
    client = QCClient.connect(label_studio.url, label_studio.token)
    return {"ls": label_studio, "shards": shards, "rows": {r.sample_id: r for r in rows}, "client": client,
            "timings": {}}


def _rows(shards: Path) -> dict:
    return {r.sample_id: r for r in iter_rows(shards)}


def _tasks(env) -> dict:
    pid = env["client"].project_by_title(PROJECT)
    return {t.data["sample_id"]: t for t in env["client"].iter_tasks(pid, with_annotations=True)}


def test_push_routes_by_confidence_and_creates_tasks(env):
    t0 = time.perf_counter()
    summary = qc_push(env["shards"], env["ls"].url, env["ls"].token, PROJECT,
                      RoutingConfig(threshold=0.8, audit_fraction=0.0), progress=False)
    env["timings"]["push_s"] = time.perf_counter() - t0
    doubtful = {sid for sid, r in env["rows"].items() if r.qc.uncertainty > 0.2}
    assert summary.routed["low_confidence"] == len(doubtful) == 3
    assert summary.routed["auto_pass"] == 2 and summary.tasks_created == 3
    rows = _rows(env["shards"])
    assert {sid for sid, r in rows.items() if r.qc.status == "pending"} == doubtful
    assert all(r.qc.status == "auto_pass" for sid, r in rows.items() if sid not in doubtful)
    assert read_manifest(env["shards"])["qc"] == {"auto_pass": 2, "pending": 3}

    tasks = _tasks(env)
    assert set(tasks) == doubtful
    task = tasks[sorted(doubtful)[0]]
    row = env["rows"][task.data["sample_id"]]
    # evidence boxes arrive as editable pre-annotations in percent coordinates, one per evidence item
    boxes = task.predictions[0].result
    assert [b["id"] for b in boxes] == [f"ev{i}" for i in range(len(row.evidence))]
    assert boxes[0]["value"]["x"] == pytest.approx(100 * row.evidence[0].bbox[0])
    assert task.data["frame_indices"] == sorted({e.frame_index for e in row.evidence},
                                                key=[e.frame_index for e in row.evidence].index)
    # media are real JPEGs rendered from the video and served by the server's local-files storage
    url = task.data["frames"][0]
    assert url.startswith("/data/local-files/?d=qc_media/")
    resp = requests.get(env["ls"].url + url, headers={"Authorization": f"Token {env['ls'].token}"}, timeout=10)
    assert resp.status_code == 200 and resp.content[:2] == b"\xff\xd8"
    assert len(task.data["crops"]) == 1 and [t["author"] for t in task.data["chat"]][:2] == ["user", "assistant"]


def test_repush_is_idempotent(env, capsys):
    before = _tasks(env)
    rc = main(["qc", "push", "--shards", str(env["shards"]), "--url", env["ls"].url, "--api-key", env["ls"].token,
               "--project", PROJECT, "--audit-fraction", "0", "--no-progress", "--json"])
    assert rc == 0
    assert '"tasks_created": 0' in capsys.readouterr().out
    assert set(_tasks(env)) == set(before) and len(_tasks(env)) == 3


def _annotate(env, task, result, completed_by=None):
    kwargs = {"completed_by": completed_by} if completed_by else {}
    return env["client"].sdk.annotations.create(task.id, result=result, lead_time=12.5, **kwargs)


def _verdict(choice):
    return {"from_name": "verdict", "to_name": "chat", "type": "choices", "value": {"choices": [choice]}}


def test_pull_applies_accept_reject_and_correction(env):
    tasks = _tasks(env)
    accept_id, reject_id, correct_id = sorted(tasks)
    _annotate(env, tasks[accept_id], [_verdict("accept")])
    _annotate(env, tasks[reject_id], [_verdict("reject"), {"from_name": "reject_reason", "to_name": "chat",
              "type": "choices", "value": {"choices": ["evidence not visible", "bad crop"]}}])
    # the reviewer accepts, types a corrected answer and drags the first box (as the UI saves it: the
    # prediction's regions with their ids, one of them moved)
    moved = copy.deepcopy(tasks[correct_id].predictions[0].result)
    moved[0]["value"].update(x=40.0, y=60.0, width=20.0, height=10.0)
    _annotate(env, tasks[correct_id], [_verdict("accept"), *moved, {
        "from_name": "corrected_answer", "to_name": "chat", "type": "textarea", "value": {"text": ["ROUTE 66"]}}])

    calls = []

    def resynthesize(row, answer, evidence):
        calls.append((row.sample_id, answer, evidence))
        return row.model_copy(update={"verified": True, "ops": ["crop", "crop"]})

    t0 = time.perf_counter()
    summary = qc_pull(env["shards"], env["ls"].url, env["ls"].token, PROJECT, resynthesize=resynthesize)
    env["timings"]["pull_s"] = time.perf_counter() - t0
    assert summary.verdicts == {"human_accept": 1, "human_reject": 1, "corrected": 1}
    rows = _rows(env["shards"])

    accepted = rows[accept_id]
    assert accepted.qc.status == "human_accept" and accepted.qc.annotator == "admin@videor4.local"
    assert accepted.qc.time and accepted.answers == env["rows"][accept_id].answers

    assert reject_id not in rows  # left the training shards …
    rejects = pq.read_table(env["shards"] / REJECTS_FILE).to_pylist()
    assert [r["sample_id"] for r in rejects] == [reject_id]  # … but is kept, with its reason
    assert rejects[0]["stage"] == "qc" and rejects[0]["reason"] == "human_reject"
    assert rejects[0]["message"] == "evidence not visible; bad crop"
    assert read_rejected_rows(env["shards"])[0].messages == env["rows"][reject_id].messages

    fixed = rows[correct_id]
    assert fixed.qc.status == "corrected" and fixed.answers == ["ROUTE 66"]
    assert fixed.ops == ["crop", "crop"] and len(calls) == 1 and calls[0][1] == "ROUTE 66"
    moved_item = next(e for e in fixed.evidence if e.bbox == [0.4, 0.6, 0.6, 0.7])
    assert moved_item.text == "ROUTE 66" and moved_item.score == 1.0
    assert len(fixed.evidence) == len(env["rows"][correct_id].evidence)

    manifest = read_manifest(env["shards"])
    assert manifest["qc"] == {"auto_pass": 2, "corrected": 1, "human_accept": 1}
    assert manifest["qc_review"]["rejects"] == 1 and manifest["data_root"] == str(env["ls"].data_root)


def test_second_pull_changes_nothing(env, capsys):
    files = {p: p.stat().st_mtime_ns for p in [*shard_files(env["shards"]), env["shards"] / REJECTS_FILE]}
    digest = content_hash(env["shards"])
    rc = main(["qc", "pull", "--shards", str(env["shards"]), "--url", env["ls"].url, "--api-key", env["ls"].token,
               "--project", PROJECT, "--no-resynthesize"])
    assert rc == 0 and "applied: nothing new" in capsys.readouterr().out
    assert content_hash(env["shards"]) == digest
    assert {p: p.stat().st_mtime_ns for p in files} == files


def test_second_annotator_gives_agreement_and_majority(env):
    """A second reviewer disagrees on the accepted task: 1 vs 1 → the later verdict wins, agreement is 0.5."""
    sdk = env["client"].sdk
    user = sdk.users.create(username="reviewer2", email="reviewer2@videor4.local", password="reviewer-pass-123")
    tasks = _tasks(env)
    accept_id = sorted(tasks)[0]
    _annotate(env, tasks[accept_id], [_verdict("reject"), {"from_name": "reject_reason", "to_name": "chat",
              "type": "choices", "value": {"choices": ["wrong answer"]}}], completed_by=user.id)
    summary = qc_pull(env["shards"], env["ls"].url, env["ls"].token, PROJECT)
    assert summary.agreement["tasks_with_several_annotations"] == 1
    assert summary.agreement["majority_agreement"] == 0.5
    rows = _rows(env["shards"])
    assert accept_id not in rows
    restored = {r.sample_id: r for r in read_rejected_rows(env["shards"])}[accept_id]
    assert restored.qc.annotator == "reviewer2@videor4.local" and restored.qc.reason == "wrong answer"


def test_server_down_is_one_line_exit_2_and_leaves_shards_alone(env, capsys):
    files = {p: p.stat().st_mtime_ns for p in env["shards"].rglob("*") if p.is_file()}
    env["ls"].server.stop()
    for cmd in ("push", "pull"):
        rc = main(["qc", cmd, "--shards", str(env["shards"]), "--url", env["ls"].url, "--api-key",
                   env["ls"].token, "--project", PROJECT] + (["--no-resynthesize"] if cmd == "pull" else ["--no-progress"]))
        err = capsys.readouterr().err.strip()
        assert rc == 2, err
        assert err.startswith("videor4: error: Label Studio is not reachable at") and "\n" not in err
        assert "Traceback" not in err
    assert {p: p.stat().st_mtime_ns for p in env["shards"].rglob("*") if p.is_file()} == files
    print(f"\nLabel Studio start from template {env['ls'].start_seconds:.1f} s; "
          + ", ".join(f"{k} {v:.2f} s" for k, v in env["timings"].items()))
