"""Loader: official JSON validation, quirks, rejects, both media layouts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from videor4.contracts.dataset import load_annotation_file, load_split, locate_media, missing_media_rejects
from videor4.contracts.errors import UserError


@pytest.mark.parametrize("split,n_qa,n_videos", [("t1s1val", 1971, 596), ("t1s2val", 1620, 525), ("t2val", 762, 179)])
def test_real_validation_counts(m4_annotations: Path, split: str, n_qa: int, n_videos: int) -> None:
    data = load_split(m4_annotations, split)
    assert len(data.records) == n_qa
    assert len(data.video_ids) == n_videos
    assert data.rejects == []
    assert {r.source1 for r in data.records} <= {"Single frame", "Multi frame"}
    assert {r.source2 for r in data.records} <= {"Text", "Visual", "Knowledge"}
    assert all(r.split == split and 1 <= len(r.answers) <= 5 for r in data.records)


def _write(tmp_path: Path, records: list) -> Path:
    p = tmp_path / "Annotations" / "ViteVQA_0.0.2_x.json"
    p.parent.mkdir(parents=True)
    p.write_text(json.dumps({"dataset_type": "x", "dataset_name": "vtvqa", "dataset_version": "0.0.2",
                             "data": records}))
    return p


GOOD = {"question": "What?", "answers": ["a"], "video_id": "00001", "question_id": 1, "video_width": 640,
        "video_height": 360, "source1": "Mutli frames", "source2": "TEXT"}


def test_quirks_normalized_and_bad_records_rejected(tmp_path: Path) -> None:
    bad_answers = {**GOOD, "question_id": 2, "answers": []}
    bad_vid = {**GOOD, "question_id": 3, "video_id": "12ab"}
    missing = {k: v for k, v in GOOD.items() if k != "source2"} | {"question_id": 4}
    dup = dict(GOOD)
    path = _write(tmp_path, [GOOD, bad_answers, bad_vid, missing, dup, "not a record"])
    data = load_annotation_file(path)
    assert [r.question_id for r in data.records] == [1]
    rec = data.records[0]
    assert (rec.source1, rec.source2) == ("Multi frame", "Text")
    reasons = {(r.record_index, r.field, r.reason) for r in data.rejects}
    assert reasons == {(1, "answers", "bad_record"), (2, "video_id", "bad_record"), (3, "source2", "bad_record"),
                       (4, "question_id", "duplicate_question_id"), (5, "<record>", "bad_record")}
    for r in data.rejects:  # one clear line naming file, record and field
        assert "ViteVQA_0.0.2_x.json" in r.message and f"record {r.record_index}" in r.message
        assert r.field in r.message and "\n" not in r.message


def test_user_errors_for_missing_root_split_and_bad_json(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="does not exist"):
        load_split(tmp_path / "nope", "x")
    _write(tmp_path, [GOOD])
    with pytest.raises(UserError, match=r"splits under .*: x"):
        load_split(tmp_path, "t9")
    (tmp_path / "Annotations" / "ViteVQA_0.0.2_x.json").write_text("{broken")
    with pytest.raises(UserError, match="not a readable JSON"):
        load_split(tmp_path, "x")


def test_locate_media_prefers_video_and_falls_back(tmp_path: Path) -> None:
    (tmp_path / "videos").mkdir()
    (tmp_path / "img_dir" / "00001").mkdir(parents=True)
    (tmp_path / "img_dir" / "00002").mkdir(parents=True)
    (tmp_path / "videos" / "00001.mp4").write_bytes(b"x")
    assert locate_media(tmp_path, "00001").kind == "video"
    assert locate_media(tmp_path, "00001", "frames").kind == "frames"
    assert locate_media(tmp_path, "00002").kind == "frames"
    assert locate_media(tmp_path, "00002", "video") is None
    assert locate_media(tmp_path, "00003") is None
    data = load_annotation_file(_write(tmp_path, [GOOD | {"video_id": "00003"}]))
    rej = missing_media_rejects(data, "00003", "auto")
    assert len(rej) == 1 and rej[0].reason == "missing_media" and "00003" in rej[0].message
