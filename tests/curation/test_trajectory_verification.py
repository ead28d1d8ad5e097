"""Trajectory verification must say *no*: a claimed view that does not show the answer is rejected.

A real 3 s mp4 carries two signs: "ROUTE 66" in every frame (top left) and "EXIT 42" only in frames 10–12, which
the initial 8-frame view (frames 1, 5, 9, 13, 16, 20, 24, 28) never shows. The synthesizer is given evidence
rows — right ones and wrong ones — and must verify exactly the trajectories whose executed views, re-read by the
real OCR model, show the answer: right text, box over the text, clip window over the frames the text is in.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from videor4.contracts.dataset import QARecord
from videor4.contracts.evidence_schema import EvidenceItem
from videor4.contracts.media import open_video
from videor4.curation.evidence import MatchConfig
from videor4.curation.ocr import OCRConfig, create_ocr
from videor4.curation.trajectories import TrajectoryConfig, TrajectorySynthesizer

W, H, FPS, N = 640, 360, 10.0, 30
ROUTE_BOX = (40, 30, 250, 75)  # x1, y1, x2, y2 in pixels, around the "ROUTE 66" text
EXIT_BOX = (380, 270, 590, 315)
EXIT_FRAMES = range(10, 13)
REJECTED = "re-OCR of the claimed view does not show the answer"


def _sign(img: np.ndarray, box: tuple[int, int, int, int], text: str) -> None:
    x1, y1, x2, y2 = box
    cv2.rectangle(img, (x1, y1), (x2, y2), (245, 245, 245), -1)
    cv2.putText(img, text, (x1 + 10, y2 - 12), cv2.FONT_HERSHEY_SIMPLEX, 1.1, (20, 20, 20), 3, cv2.LINE_AA)


@pytest.fixture(scope="module")
def video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("verify") / "00042.mp4"
    rng = np.random.default_rng(0)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), FPS, (W, H))
    for i in range(N):
        img = np.full((H, W, 3), (90, 120, 70), np.uint8)
        img = cv2.add(img, rng.integers(0, 20, img.shape, dtype=np.uint8))
        _sign(img, ROUTE_BOX, "ROUTE 66")
        if i in EXIT_FRAMES:
            _sign(img, EXIT_BOX, "EXIT 42")
        writer.write(img)
    writer.release()
    return path


@pytest.fixture(scope="module")
def ocr():
    return create_ocr(OCRConfig())


def _norm(box: tuple[int, int, int, int]) -> list[float]:
    return [box[0] / W, box[1] / H, box[2] / W, box[3] / H]


def _row(frame: int, box: tuple[int, int, int, int], text: str) -> EvidenceItem:
    return EvidenceItem(frame_index=frame, timestamp_s=frame / FPS, bbox=_norm(box), text=text, kind="ocr",
                        match="answer", score=0.99)


def _record(answer: str) -> QARecord:
    return QARecord(question_id=7, video_id="00042", question="What does the sign say?", answers=(answer,),
                    source1="Single frame", source2="Text", video_width=W, video_height=H, split="test",
                    source_file="test.json", record_index=0)


def _synthesize(video: Path, ocr, answer: str, rows: list[EvidenceItem]) -> dict[tuple[str, tuple[str, ...]], object]:
    with open_video(video) as reader:
        synth = TrajectorySynthesizer(reader, ocr, TrajectoryConfig(), MatchConfig())
        assert synth.initial_frames == [1, 5, 9, 13, 16, 20, 24, 28]
        return {(t.stage, tuple(t.ops)): t for t in synth.synthesize(_record(answer), rows)}


def test_right_evidence_verifies_crop_clip_and_composite(video: Path, ocr) -> None:
    crop = _synthesize(video, ocr, "ROUTE 66", [_row(13, ROUTE_BOX, "ROUTE 66")])
    assert crop[("drp", ("crop",))].verified, crop[("drp", ("crop",))].reason
    clip = _synthesize(video, ocr, "EXIT 42", [_row(11, EXIT_BOX, "EXIT 42")])
    assert clip[("drp", ("clip",))].verified, clip[("drp", ("clip",))].reason
    assert clip[("crp", ("clip", "crop"))].verified, clip[("crp", ("clip", "crop"))].reason


def test_claimed_text_absent_from_the_crop_is_rejected(video: Path, ocr) -> None:
    """The box is right, but the answer the trajectory claims ("HOTEL 9") is not what the pixels say."""
    out = _synthesize(video, ocr, "HOTEL 9", [_row(13, ROUTE_BOX, "HOTEL 9")])
    traj = out[("drp", ("crop",))]
    assert not traj.verified and traj.reason.startswith(REJECTED)
    assert "ROUTE" in traj.reason  # the reason says what was read instead
    assert traj.messages == []  # nothing of a rejected trajectory reaches the shards


def test_box_that_misses_the_text_is_rejected(video: Path, ocr) -> None:
    empty = (300, 140, 420, 185)  # plain background between the two signs
    out = _synthesize(video, ocr, "ROUTE 66", [_row(13, empty, "ROUTE 66")])
    traj = out[("drp", ("crop",))]
    assert not traj.verified and traj.reason.startswith(REJECTED)


def test_clip_window_that_misses_the_text_is_rejected(video: Path, ocr) -> None:
    """Evidence claims "EXIT 42" at frame 25; the clip around it returns frames where the sign is not shown."""
    out = _synthesize(video, ocr, "EXIT 42", [_row(25, EXIT_BOX, "EXIT 42")])
    clip = out[("drp", ("clip",))]
    assert not clip.verified and clip.reason.startswith(REJECTED)
    crp = out[("crp", ("clip", "crop"))]
    assert not crp.verified and crp.reason.startswith(REJECTED)


def test_rl_labels_follow_where_and_how_large_the_answer_is(video: Path, ocr) -> None:
    """difficulty / answer_in_initial / required_ops / RL stage of an RL row, for each kind of evidence."""
    small = (40, 30, 76, 38)  # 8 px tall at 640x360: ~5 px as displayed, unreadable without a crop
    with open_video(video) as reader:
        synth = TrajectorySynthesizer(reader, ocr, TrajectoryConfig(), MatchConfig())
        label = lambda rows: (lambda d: (d.answer_in_initial, d.required_ops, d.difficulty, d.rl_stage))(  # noqa: E731
            synth.difficulty(rows))
        assert label([_row(13, ROUTE_BOX, "ROUTE 66")]) == (True, (), 0.0, "rld")
        assert label([_row(13, small, "ROUTE 66")]) == (False, ("crop",), 0.4, "rld")
        assert label([_row(11, EXIT_BOX, "EXIT 42")]) == (False, ("clip",), 0.6, "rld")
        assert label([_row(11, small, "EXIT 42")]) == (False, ("clip", "crop"), 1.0, "rlc")
        assert label([]) == (False, (), 1.0, "rlc")
        # readable in an initial frame wins over any other evidence of the same answer
        assert label([_row(11, EXIT_BOX, "x"), _row(13, ROUTE_BOX, "x")]) == (True, (), 0.0, "rld")


class DetectionLog:
    """The real model; logs whole-view reads (detection + recognition) and lines recognised from known boxes.

    ``detect=False`` makes every whole-view read find nothing, so a verdict can only come from recognising the
    evidence's known lines: what that step alone says yes or no to.
    """

    def __init__(self, ocr, detect: bool = True) -> None:
        self.ocr, self.name, self.version, self.detect = ocr, ocr.name, ocr.version, detect
        self.reads = 0
        self.recognized: list[str] = []

    def read(self, image: np.ndarray, det_scale: float | None = None):
        self.reads += 1
        return self.ocr.read(image, det_scale) if self.detect else []

    def read_regions(self, image, regions, det_scale=None):
        return self.ocr.read_regions(image, regions, det_scale) if self.detect else []

    def detect_regions(self, image, regions, det_scale=None):
        return self.ocr.detect_regions(image, regions, det_scale) if self.detect else []

    def recognize(self, image, quads):
        boxes = self.ocr.recognize(image, quads)
        self.recognized += [b.text if b is not None else "" for b in boxes]
        return boxes


def test_right_evidence_is_verified_by_recognising_its_lines_without_detection(video: Path, ocr) -> None:
    log = DetectionLog(ocr)
    with open_video(video) as reader:
        synth = TrajectorySynthesizer(reader, log, TrajectoryConfig(), MatchConfig())
        route = [t for t in synth.synthesize(_record("ROUTE 66"), [_row(13, ROUTE_BOX, "ROUTE 66")])
                 if t.ops == ["crop"]]  # (its CRP clips around an initial frame: no unseen frames there)
        exit_ = synth.synthesize(_record("EXIT 42"), [_row(11, EXIT_BOX, "EXIT 42")])
    assert [(t.stage, t.ops, t.verified) for t in route + exit_] == [
        ("drp", ["crop"], True), ("drp", ["clip"], True), ("crp", ["clip", "crop"], True)]
    assert log.reads == 0  # no view was read whole: every verdict came from the known lines
    assert synth.reads.detected == 0 and synth.reads.recognized >= 3
    assert {"ROUTE 66", "EXIT 42"} <= {t.upper() for t in log.recognized}
    assert [t.reocr_text for t in route + exit_] == ["ROUTE 66", "EXIT 42", "EXIT 42"]


@pytest.mark.parametrize(
    ("answer", "frame", "box", "what"),
    [
        ("HOTEL 9", 13, ROUTE_BOX, "the box holds other text"),
        ("ROUTE 66", 13, (300, 140, 420, 185), "the box misses the text"),
        ("EXIT 42", 25, EXIT_BOX, "the clip window misses the frames the text is in"),
    ],
)
def test_recognition_alone_rejects_wrong_text_box_and_window(video: Path, ocr, answer, frame, box, what) -> None:
    """With whole-view reads finding nothing, only the recognition of the claimed lines can verify: it says no."""
    log = DetectionLog(ocr, detect=False)
    with open_video(video) as reader:
        synth = TrajectorySynthesizer(reader, log, TrajectoryConfig(), MatchConfig())
        out = synth.synthesize(_record(answer), [_row(frame, box, answer)])
    assert out and not any(t.verified for t in out), what
    judged = [t for t in out if not t.reason.startswith("Error:")]  # (a CRP around an initial frame cannot clip)
    assert judged and all(t.reason.startswith(REJECTED) for t in judged)
    assert log.recognized  # the claimed lines were read by the recogniser ...
    assert answer not in log.recognized  # ... and read as what is there instead
    assert synth.reads.recognized == 0


def test_read_view_recognises_known_lines_and_maps_nothing_it_did_not_read(video: Path, ocr) -> None:
    """``read_view`` on a rendered crop: the line box is recognised as it is; a box off the text reads nothing."""
    from videor4.contracts.executor import ClipCropExecutor, ImageRef
    from videor4.curation.trajectories import ViewReadCounters, read_view

    with open_video(video) as reader:
        ex = ClipCropExecutor(reader, [])
        ref = ImageRef(13, 1.3, (20 / W, 10 / H, 300 / W, 100 / H))  # a crop around the ROUTE 66 sign
        crop = ex.render(ref)
    sx1, sy1, sx2, sy2 = ex.source_box(ref)
    fx, fy = crop.shape[1] / (sx2 - sx1), crop.shape[0] / (sy2 - sy1)
    line = ((ROUTE_BOX[0] - sx1) * fx, (ROUTE_BOX[1] - sy1) * fy, (ROUTE_BOX[2] - sx1) * fx, (ROUTE_BOX[3] - sy1) * fy)
    blank = DetectionLog(ocr, detect=False)
    counters = ViewReadCounters()
    assert read_view(blank, crop, ["ROUTE 66"], MatchConfig(), [line], counters) == (1.0, "ROUTE 66")
    assert counters.recognized == 1 and blank.reads == 0
    below = (line[0], line[3] + 5, line[2], crop.shape[0] - 1)  # under the sign: plain background
    assert read_view(blank, crop, ["ROUTE 66"], MatchConfig(), [below], counters)[0] == 0.0
    assert counters.detected == 1 and blank.reads == 2  # fell back to the whole view (plain + bordered reads)
