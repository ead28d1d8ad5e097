"""The bundled sample dataset: official format, both layouts agree, answers really readable.

Real decodes (cv2, PyAV, decord) and real OCR (rapidocr) on the shipped files; OCR runs only on the
frames recorded in ``answer_frames.json`` so the whole module stays around half a minute on 2 cores.
"""

from __future__ import annotations

import importlib.util
import json
import re
import sys
from functools import lru_cache
from pathlib import Path
from types import ModuleType

import av
import cv2
import numpy as np
import pytest

from videor4.curation.sample import (
    ANSWER_FRAMES,
    SAMPLE_SPLIT,
    load_answer_frames,
    sample_annotation_path,
    sample_root,
)

REPO = Path(__file__).resolve().parents[2]
SHARED_SAMPLES = REPO.parent / "shared" / "samples"
RECORD_FIELDS = {
    "question": str,
    "answers": list,
    "video_id": str,
    "question_id": int,
    "video_width": int,
    "video_height": int,
    "source1": str,
    "source2": str,
}


def _load_generator() -> ModuleType:
    """The generator script holds the OCR normalization used to pick the answers; reuse it."""
    path = REPO / "scripts" / "build_sample_data.py"
    spec = importlib.util.spec_from_file_location("build_sample_data", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("build_sample_data", module)
    spec.loader.exec_module(module)
    return module


GEN = _load_generator()


@lru_cache(maxsize=1)
def _dataset() -> dict:
    return json.loads(sample_annotation_path().read_text(encoding="utf-8"))


def _records() -> list[dict]:
    return _dataset()["data"]


def _video_ids() -> list[str]:
    return sorted({r["video_id"] for r in _records()})


def _jpgs(video_id: str) -> list[Path]:
    return list((sample_root() / "img_dir" / video_id).glob("*.jpg"))


def test_split_name_and_header() -> None:
    assert sample_annotation_path().name == f"ViteVQA_0.0.2_{SAMPLE_SPLIT}.json"
    data = _dataset()
    assert (data["dataset_type"], data["dataset_name"], data["dataset_version"]) == ("sample", "vtvqa", "0.0.2")


@pytest.mark.parametrize("index", range(len(_records())))
def test_record_has_official_fields_and_types(index: int) -> None:
    record = _records()[index]
    assert set(record) == set(RECORD_FIELDS)
    for name, kind in RECORD_FIELDS.items():
        assert type(record[name]) is kind, f"record {index} field {name}"
    assert 1 <= len(record["answers"]) <= 5 and all(isinstance(a, str) and a.strip() for a in record["answers"])
    assert re.fullmatch(r"\d{5}", record["video_id"])
    assert record["source1"] in {"Single frame", "Multi frame"}
    assert record["source2"] in {"Text", "Visual"}
    assert record["question"].endswith("?")


def test_coverage_of_question_kinds() -> None:
    records = _records()
    assert len(_video_ids()) >= 6
    assert len(records) >= 15
    assert len({r["question_id"] for r in records}) == len(records), "question ids must be unique"
    assert {r["source2"] for r in records} == {"Text", "Visual"}
    assert {r["source1"] for r in records} == {"Single frame", "Multi frame"}
    assert all(any(r["video_id"] == v for r in records) for v in _video_ids())


@pytest.mark.parametrize("video_id", _video_ids())
def test_both_layouts_exist_with_one_based_frame_names(video_id: str) -> None:
    assert (sample_root() / "videos" / f"{video_id}.mp4").is_file()
    names = sorted(int(p.stem) for p in _jpgs(video_id))
    assert names == list(range(1, len(names) + 1)), "frames are 1.jpg … N.jpg, no gaps, no zero padding"
    assert 30 <= len(names) <= 50


def _decode_cv2(path: Path) -> tuple[list[np.ndarray], float, tuple[int, int]]:
    cap = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame)
    fps, size = cap.get(cv2.CAP_PROP_FPS), (int(cap.get(3)), int(cap.get(4)))
    cap.release()
    return frames, fps, size


@pytest.mark.parametrize("video_id", _video_ids())
def test_mp4_and_img_dir_hold_the_same_frames(video_id: str) -> None:
    mp4 = sample_root() / "videos" / f"{video_id}.mp4"
    jpgs = _jpgs(video_id)
    frames, fps, size = _decode_cv2(mp4)
    with av.open(str(mp4)) as container:
        pyav_count = sum(1 for _ in container.decode(video=0))
    assert len(frames) == pyav_count == len(jpgs)
    assert fps == pytest.approx(10.0)
    record = next(r for r in _records() if r["video_id"] == video_id)
    assert size == (record["video_width"], record["video_height"])
    # img_dir was decoded from the mp4: the same pictures up to JPEG loss (and decoder colour rounding).
    for index in (0, len(frames) // 2, len(frames) - 1):
        jpg = cv2.imread(str(sample_root() / "img_dir" / video_id / f"{index + 1}.jpg"))
        assert jpg.shape == frames[index].shape
        assert np.abs(jpg.astype(np.int16) - frames[index]).mean() < 4.0, f"frame {index}"


@pytest.mark.parametrize("video_id", _video_ids())
def test_decord_reads_the_same_count(video_id: str) -> None:
    decord = pytest.importorskip("decord")
    reader = decord.VideoReader(str(sample_root() / "videos" / f"{video_id}.mp4"))
    assert len(reader) == len(_jpgs(video_id))
    assert reader[len(reader) - 1].shape == (540, 960, 3)


def test_answer_frames_sidecar_covers_every_question() -> None:
    frames = load_answer_frames()
    assert set(frames) == {r["question_id"] for r in _records()}
    for record in _records():
        video_id, indices = frames[record["question_id"]]
        assert video_id == record["video_id"]
        assert indices and all(0 <= i < len(_jpgs(video_id)) for i in indices)
    assert json.loads((sample_root() / ANSWER_FRAMES).read_text())["fps"] == 10


@pytest.fixture(scope="module")
def ocr_texts() -> dict[tuple[str, int], str]:
    """Normalized rapidocr text of every frame a Text question points at (each frame read once)."""
    from rapidocr import RapidOCR

    engine = RapidOCR()
    frames = load_answer_frames()
    wanted = sorted({(frames[r["question_id"]][0], i) for r in _records() if r["source2"] == "Text"
                     for i in frames[r["question_id"]][1]})
    texts = {}
    for video_id, index in wanted:
        result = engine(str(sample_root() / "img_dir" / video_id / f"{index + 1}.jpg"))
        texts[(video_id, index)] = GEN.normalize("".join(result.txts or ()))
    return texts


def test_every_text_answer_is_read_by_ocr(ocr_texts: dict[tuple[str, int], str]) -> None:
    """Found in one answer frame, or (Multi frame) pieced together from its frames in order."""
    frames = load_answer_frames()
    unread = []
    for record in (r for r in _records() if r["source2"] == "Text"):
        video_id, indices = frames[record["question_id"]]
        texts = [ocr_texts[(video_id, i)] for i in indices]
        if not any(GEN.answer_in_frames(GEN.normalize(a), texts) for a in record["answers"]):
            unread.append((record["question_id"], record["answers"][0], texts))
    assert not unread, f"answers rapidocr cannot read: {unread}"


def test_normalization_folds_case_accents_and_punctuation() -> None:
    assert GEN.normalize("LES ARTS DÉCORATIFS") == GEN.normalize("les arts decoratifs") == "lesartsdecoratifs"
    assert GEN.answer_in_frames("hereshowtocreateasimpleeasy", ["xxhereshowtocreateyy", "asimpleeasy"])
    assert not GEN.answer_in_frames("asimpleeasyhereshowtocreate", ["hereshowtocreate", "asimpleeasy"])


def test_attribution_names_every_source_file() -> None:
    text = (sample_root() / "ATTRIBUTION.md").read_text(encoding="utf-8")
    for source in {s.path for s in GEN.SOURCES.values()} | {GEN.PEXELS_VIDEO}:
        assert Path(source).name in text, source
    for licence in ("Apache-2.0", "Pexels"):
        assert licence in text


@pytest.mark.skipif(not SHARED_SAMPLES.is_dir(), reason="../shared/samples (the source media) is not beside the repo")
def test_generator_rebuilds_the_bundled_sample(tmp_path: Path) -> None:
    """Annotations byte-identical, frames the same pictures (bytes may differ across codec builds)."""
    counts = GEN.build(SHARED_SAMPLES, tmp_path)
    for name in (f"Annotations/{sample_annotation_path().name}", ANSWER_FRAMES):
        assert (tmp_path / name).read_bytes() == (sample_root() / name).read_bytes(), name
    for video_id, count in counts.items():
        assert count == len(_jpgs(video_id))
        for index in (0, count - 1):
            rebuilt = cv2.imread(str(tmp_path / "img_dir" / video_id / f"{index + 1}.jpg")).astype(np.int16)
            shipped = cv2.imread(str(sample_root() / "img_dir" / video_id / f"{index + 1}.jpg"))
            assert np.abs(rebuilt - shipped).mean() < 2.0, (video_id, index)
