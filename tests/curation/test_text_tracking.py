"""Motion-compensated OCR on real photos: carried text must match what the model reads, changes must be read.

The OCR model is the real rapidocr one; a thin wrapper only records which calls reach it, so each test can
assert both *what* the tracker returns and *how much* OCR it spent.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from videor4.curation.ocr import OCRConfig, TextBox, create_ocr
from videor4.curation.text_tracking import TextTracker, TrackingConfig

IMAGES = Path(__file__).resolve().parents[1] / "data" / "images"
EVERY_FRAME = TrackingConfig(recheck_interval_s=0.0)  # look for changes on every frame


class RecordingOCR:
    """The real model, plus a log of (image or region shape, det_scale) per text detection and of the lines
    that reach the recogniser."""

    def __init__(self, ocr) -> None:
        self.ocr, self.name, self.version = ocr, ocr.name, ocr.version
        self.calls: list[tuple[tuple[int, ...], float | None]] = []
        self.recognized: list[str] = []

    def read(self, image: np.ndarray, det_scale: float | None = None) -> list[TextBox]:
        self.calls.append((image.shape, det_scale))
        return self.ocr.read(image, det_scale=det_scale)

    def read_regions(self, image, regions, det_scale=None) -> list[TextBox]:
        return [b for b in self.recognize(image, self.detect_regions(image, regions, det_scale)) if b is not None]

    def detect_regions(self, image, regions, det_scale=None):
        self.calls += [((y2 - y1, x2 - x1, 3), det_scale) for x1, y1, x2, y2 in regions]
        return self.ocr.detect_regions(image, regions, det_scale)

    def recognize(self, image, quads):
        boxes = self.ocr.recognize(image, quads)
        self.recognized += [b.text.upper() if b is not None else "" for b in boxes]
        return boxes


@pytest.fixture(scope="module")
def model():
    return create_ocr(OCRConfig())


@pytest.fixture
def ocr(model) -> RecordingOCR:
    return RecordingOCR(model)


@pytest.fixture
def ocr_f32() -> RecordingOCR:
    """The model in f32 (the default precision is bf16 where the CPU has it).

    Why: under bf16 the recogniser may read a marginal line of a shifted frame slightly differently; with changes
    looked for on every frame, the tracker then (rightly) re-reads the frame whole, which is not what a test of
    carrying text along the motion is about.
    """
    return RecordingOCR(create_ocr(OCRConfig(precision="f32")))


def load_rgb(name: str) -> np.ndarray:
    return cv2.cvtColor(cv2.imread(str(IMAGES / name)), cv2.COLOR_BGR2RGB)


def texts(boxes: list[TextBox]) -> set[str]:
    return {b.text.upper() for b in boxes}


def hotel(boxes: list[TextBox]) -> TextBox:
    (box,) = [b for b in boxes if b.text.upper() == "HOTEL"]
    return box


def pan(image: np.ndarray, steps: int, dx: int, dy: int, size: tuple[int, int]) -> list[np.ndarray]:
    """A camera window of ``size`` moving right/down by (dx, dy) per frame from the top-left corner."""
    w, h = size
    return [np.ascontiguousarray(image[k * dy: k * dy + h, k * dx: k * dx + w]) for k in range(steps)]


def test_pan_carries_text_along_the_motion(ocr_f32: RecordingOCR) -> None:
    # The camera pans right and down; the strips it brings into view are far from the HOTEL sign.
    ocr = ocr_f32
    frames = pan(load_rgb("scenetext_segmented_word01.jpg"), 8, 4, 2, (600, 420))
    tracker = TextTracker(ocr, OCRConfig(precision="f32"), EVERY_FRAME)
    first = hotel(tracker.read(frames[0], 0.0))
    for k, frame in enumerate(frames[1:], start=1):
        moved = hotel(tracker.read(frame, k / 10))
        # The sign moves left/up with the camera's motion; the carried box follows within 2 px.
        assert moved.bbox == pytest.approx((first.bbox[0] - 4 * k, first.bbox[1] - 2 * k,
                                            first.bbox[2] - 4 * k, first.bbox[3] - 2 * k), abs=2.0)
        # And it agrees with what the model reads on that very frame.
        direct = hotel(ocr.ocr.read(frame))
        assert moved.bbox == pytest.approx(direct.bbox, abs=12.0)
    c = tracker.counters
    assert c.full_reads == 1 and c.tracked_frames == 7
    # Only strips brought into view by the pan were read again, never a whole frame.
    for shape, det_scale in ocr.calls[1:]:
        assert det_scale is not None and shape[0] * shape[1] < 0.35 * 600 * 420


def test_new_caption_is_read_in_its_region_only(ocr: RecordingOCR) -> None:
    still = load_rgb("scenetext_segmented_word01.jpg")
    captioned = still.copy()
    cv2.rectangle(captioned, (30, 380), (330, 450), (20, 20, 20), -1)
    cv2.putText(captioned, "GATE 42", (45, 432), cv2.FONT_HERSHEY_SIMPLEX, 1.4, (255, 255, 255), 3, cv2.LINE_AA)
    tracker = TextTracker(ocr, OCRConfig(), EVERY_FRAME)
    before = tracker.read(still, 0.0)
    assert tracker.read(still, 0.1) == before and len(ocr.calls) == 1  # nothing changed: no OCR at all
    after = tracker.read(captioned, 0.2)
    assert "GATE 42" in texts(after) and "HOTEL" in texts(after)
    assert hotel(after).bbox == pytest.approx(hotel(before).bbox, abs=1.0)  # carried along the (nil) motion
    (shape, det_scale), = ocr.calls[1:]
    assert det_scale == pytest.approx(736 / 480) and shape[0] * shape[1] < 0.2 * 640 * 480
    assert tracker.counters.region_reads == 1 and tracker.counters.full_reads == 1
    # The captioned frame is the new reference: showing it again costs nothing.
    assert texts(tracker.read(captioned, 0.3)) == texts(after) and len(ocr.calls) == 2


def test_cut_and_zoom_trigger_whole_reads(ocr: RecordingOCR) -> None:
    sign = load_rgb("scenetext_segmented_word01.jpg")
    other = cv2.resize(load_rgb("easyocr_french.jpg")[:390], (640, 480))
    tracker = TextTracker(ocr, OCRConfig(), EVERY_FRAME)
    tracker.read(sign, 0.0)
    assert {"PALAIS", "LOUVRE"} & {w for t in texts(tracker.read(other, 0.1)) for w in t.split()}
    assert tracker.counters.cuts == 2  # the first frame and the cut
    # A slow zoom into the centre, 1.3x in all (> max_scale_change 1.2): once the text has grown by
    # 1.2x it may have become readable, so the frame is read whole again, once.
    h, w = other.shape[:2]
    for k, zoom in enumerate((1.05, 1.1, 1.15, 1.2, 1.25, 1.3), start=2):
        mx, my = w * (1 - 1 / zoom) / 2, h * (1 - 1 / zoom) / 2
        warp = np.array([[zoom, 0, -mx * zoom], [0, zoom, -my * zoom]])
        tracker.read(cv2.warpAffine(other, warp, (w, h), flags=cv2.INTER_LINEAR), k / 10)
    c = tracker.counters
    assert c.cuts == 2 and c.zoom_reads == 1 and c.full_reads == 3, c


def test_changes_wait_for_the_recheck_interval_but_not_past_the_last_frame(ocr: RecordingOCR) -> None:
    still = load_rgb("scenetext_segmented_word01.jpg")
    captioned = still.copy()
    cv2.rectangle(captioned, (30, 380), (330, 450), (20, 20, 20), -1)
    cv2.putText(captioned, "GATE 42", (45, 432), cv2.FONT_HERSHEY_SIMPLEX, 1.4, (255, 255, 255), 3, cv2.LINE_AA)
    tracker = TextTracker(ocr, OCRConfig(), TrackingConfig(recheck_interval_s=0.5))
    tracker.read(still, 0.0)
    assert "GATE 42" not in texts(tracker.read(captioned, 0.2))  # within 0.5 s of the last read: carried
    assert "GATE 42" in texts(tracker.read(captioned, 0.3, last=True))  # the video ends: checked now
    tracker = TextTracker(ocr, OCRConfig(), TrackingConfig(recheck_interval_s=0.5))
    tracker.read(still, 0.0)
    assert "GATE 42" in texts(tracker.read(captioned, 0.5))


def test_method_none_reads_every_frame_whole(ocr: RecordingOCR) -> None:
    still = load_rgb("scenetext_segmented_word01.jpg")
    tracker = TextTracker(ocr, OCRConfig(), TrackingConfig(method="none"))
    for k in range(3):
        assert "HOTEL" in texts(tracker.read(still, k / 10))
    assert tracker.counters.full_reads == 3 and [s for _, s in ocr.calls] == [None] * 3


def test_region_read_at_frame_scale_finds_the_same_text(model) -> None:
    frame = load_rgb("scenetext_segmented_word01.jpg")
    whole = hotel(model.read(frame))
    x1, y1, x2, y2 = (int(v) for v in whole.bbox)
    region = frame[y1 - 20: y2 + 20, x1 - 20: x2 + 20]
    from videor4.curation.ocr import detection_scale

    part = hotel(model.read(np.ascontiguousarray(region), det_scale=detection_scale(frame.shape, OCRConfig())))
    assert (part.bbox[0] + x1 - 20, part.bbox[1] + y1 - 20) == pytest.approx(whole.bbox[:2], abs=4.0)


def test_detection_scale_follows_rapidocr_rule() -> None:
    from videor4.curation.ocr import detection_scale

    assert detection_scale((540, 960, 3), OCRConfig()) == pytest.approx(736 / 540)  # small frames: enlarged
    assert detection_scale((1080, 1920, 3), OCRConfig()) == 1.0
    assert detection_scale((2160, 3840, 3), OCRConfig()) == pytest.approx(1920 / 3840)  # capped at max_side
    assert detection_scale((540, 960, 3), OCRConfig(det_min_side=540)) == 1.0


def _screen(lines: list[tuple[str, tuple[int, int]]], size: tuple[int, int] = (960, 540)) -> np.ndarray:
    """A flat dark screen (a terminal, a UI) with white text lines at the given positions."""
    img = np.full((size[1], size[0], 3), 24, np.uint8)
    for text, (x, y) in lines:
        cv2.putText(img, text, (x, y), cv2.FONT_HERSHEY_SIMPLEX, 1.0, (235, 235, 235), 2, cv2.LINE_AA)
    return img


def test_unchanged_lines_in_a_reread_region_keep_their_text_without_recognition(ocr: RecordingOCR) -> None:
    """A caption appears just under a sign: the region read covers the sign too (its line is re-read whole when
    a region cuts it), but the sign's pixels did not change, so only the caption reaches the recogniser."""
    still = load_rgb("scenetext_segmented_word01.jpg")
    captioned = still.copy()
    cv2.rectangle(captioned, (140, 326), (500, 371), (20, 20, 20), -1)  # 20 px under the sign's box (y 206-306)
    cv2.putText(captioned, "GATE 42", (200, 363), cv2.FONT_HERSHEY_SIMPLEX, 1.2, (255, 255, 255), 3, cv2.LINE_AA)
    tracker = TextTracker(ocr, OCRConfig(), EVERY_FRAME)
    before = tracker.read(still, 0.0)
    first = list(ocr.recognized)
    after = tracker.read(captioned, 0.1)
    assert "GATE 42" in texts(after) and hotel(after).text == hotel(before).text
    assert tracker.counters.region_reads >= 1 and tracker.counters.lines_unchanged >= 1
    assert "HOTEL" not in ocr.recognized[len(first):] and "GATE 42" in ocr.recognized[len(first):]
    # The model still answers the same on the whole captioned frame: nothing was carried that it would not read.
    assert {"HOTEL", "GATE 42"} <= texts(ocr.ocr.read(captioned))


@pytest.mark.parametrize("inlier_fraction", [0.3, 1.0])
def test_a_screen_whose_content_changes_is_read_where_it_changed_not_as_a_cut(ocr: RecordingOCR,
                                                                              inlier_fraction: float) -> None:
    """Numbers update on a still screen; the unchanged title keeps its text and only the changed part is read.

    With the default fit the motion is found (nil); a fit that must explain every corner (1.0) finds none once
    the numbers changed, which is what re-laid-out screens do to it: the picture did not move, so it is still
    read where it changed rather than as a cut.
    """
    title = ("QUARTERLY REPORT", (40, 60))
    a = _screen([title] + [(f"ITEM {k}: {1000 + 37 * k}", (40, 140 + 50 * k)) for k in range(5)])
    b = _screen([title] + [(f"ITEM {k}: {2000 + 91 * k}", (40, 140 + 50 * k)) for k in range(5)])
    tracker = TextTracker(ocr, OCRConfig(), TrackingConfig(recheck_interval_s=0.0, min_inlier_fraction=inlier_fraction))
    assert "QUARTERLY REPORT" in texts(tracker.read(a, 0.0))
    read_a = len(ocr.recognized)
    after = texts(tracker.read(b, 0.1))
    c = tracker.counters
    assert c.cuts == 1 and c.full_reads == 1 and c.region_reads >= 1  # the first frame only was read whole
    assert c.still_changes == (inlier_fraction == 1.0)
    assert {"QUARTERLY REPORT", "ITEM 0: 2000", "ITEM 4: 2364"} <= after and not {"ITEM 0: 1000"} & after
    assert "QUARTERLY REPORT" not in ocr.recognized[read_a:]  # carried: its part of the screen did not change


def test_a_frame_without_contrast_costs_no_model_call(ocr: RecordingOCR) -> None:
    tracker = TextTracker(ocr, OCRConfig(), EVERY_FRAME)
    assert tracker.read(np.full((540, 960, 3), 12, np.uint8), 0.0) == []
    assert tracker.counters.full_reads == 1 and tracker.counters.blank_frames == 1 and ocr.calls == []
    # A whole read of a screen detects only where its text is, not in the flat rest.
    screen = _screen([("EXIT 42", (60, 80))])
    tracker = TextTracker(ocr, OCRConfig(), EVERY_FRAME)
    assert texts(tracker.read(screen, 0.0)) == {"EXIT 42"}
    assert sum(s[0] * s[1] for s, _ in ocr.calls) < 0.2 * 960 * 540
