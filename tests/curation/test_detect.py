"""Detectors on real frames of the Pexels sample clip, plus the ultralytics code path offline."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from videor4.contracts.errors import UserError
from videor4.curation.detect import Detection, Detector, DetectorConfig, create_detector

IMAGES = Path(__file__).resolve().parents[1] / "data" / "images"
# Frame 120 of pexels_scene_cut.mp4 at 540x960: a woman (left) and a man (right) facing the camera.
# Face boxes measured by hand on the image, x1, y1, x2, y2.
FACES_F120 = [(296.0, 194.0, 421.0, 319.0), (154.0, 277.0, 263.0, 386.0)]


def load_rgb(name: str) -> np.ndarray:
    return cv2.cvtColor(cv2.imread(str(IMAGES / name)), cv2.COLOR_BGR2RGB)


def iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - w * h
    return w * h / union


def well_formed(detections: list[Detection], detector: Detector, image: np.ndarray) -> None:
    h, w = image.shape[:2]
    for d in detections:
        assert d.label in detector.labels and 0.0 <= d.score <= 1.0
        x1, y1, x2, y2 = d.bbox
        assert -1 <= x1 < x2 <= w + 1 and -1 <= y1 < y2 <= h + 1, d


@pytest.fixture(scope="module")
def opencv_detector() -> Detector:
    return create_detector(DetectorConfig())


def test_opencv_identity(opencv_detector: Detector) -> None:
    assert isinstance(opencv_detector, Detector)
    assert opencv_detector.name == "opencv" and opencv_detector.labels == ("face", "person")
    assert opencv_detector.version.startswith("4.12.")


def test_finds_both_faces_where_they_are(opencv_detector: Detector) -> None:
    image = load_rgb("pexels_scene_cut_f120.jpg")
    detections = opencv_detector.detect(image)
    well_formed(detections, opencv_detector, image)
    faces = [d for d in detections if d.label == "face"]
    assert len(faces) == 2
    for expected in FACES_F120:
        assert max(iou(d.bbox, expected) for d in faces) > 0.7


def test_boxes_are_in_input_pixels_whatever_the_resolution(opencv_detector: Detector) -> None:
    image = load_rgb("pexels_scene_cut_f120.jpg")
    full = cv2.resize(image, (1080, 1920), interpolation=cv2.INTER_CUBIC)  # the clip's native size
    faces = [d for d in opencv_detector.detect(full) if d.label == "face"]
    for x1, y1, x2, y2 in FACES_F120:
        assert max(iou(d.bbox, (2 * x1, 2 * y1, 2 * x2, 2 * y2)) for d in faces) > 0.7


def test_hog_finds_the_walking_person(opencv_detector: Detector) -> None:
    # Frame 30: two people walking away; HOG fires on the left one's lower body (x < 170, y > 480).
    image = load_rgb("pexels_scene_cut_f030.jpg")
    people = [d for d in opencv_detector.detect(image) if d.label == "person"]
    assert any(d.bbox[0] < 170 and d.bbox[2] < 200 and d.bbox[1] > 480 for d in people)


def test_no_people_on_a_shop_sign(opencv_detector: Detector) -> None:
    assert opencv_detector.detect(load_rgb("scenetext_segmented_word01.jpg")) == []
    assert opencv_detector.detect(np.zeros((0, 0, 3), np.uint8)) == []


def test_conf_threshold_and_class_subset() -> None:
    image = load_rgb("pexels_scene_cut_f120.jpg")
    faces_only = create_detector(DetectorConfig(opencv_classes=("face",), conf=0.99))
    found = faces_only.detect(image)
    assert found and all(d.label == "face" and d.score >= 0.99 for d in found)
    plates = create_detector(DetectorConfig(opencv_classes=("licence_plate",)))
    sign = load_rgb("easyocr_french.jpg")
    well_formed(plates.detect(sign), plates, sign)
    with pytest.raises(UserError, match="opencv_classes"):
        create_detector(DetectorConfig(opencv_classes=()))


def test_none_backend_detects_nothing() -> None:
    detector = create_detector(DetectorConfig(backend="none"))
    assert detector.labels == () and detector.detect(load_rgb("pexels_scene_cut_f120.jpg")) == []


def test_ultralytics_path_offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("ultralytics")
    monkeypatch.setenv("YOLO_CONFIG_DIR", str(tmp_path))
    with pytest.raises(UserError, match="needs weights"):
        create_detector(DetectorConfig(backend="ultralytics"))
    with pytest.raises(UserError, match="missing.pt"):
        create_detector(DetectorConfig(backend="ultralytics", weights=tmp_path / "missing.pt"))
    # An architecture file builds offline with random weights: enough to exercise the code path.
    detector = create_detector(DetectorConfig(backend="ultralytics", weights=Path("yolov8n.yaml"), conf=0.0))
    assert detector.name == "ultralytics" and detector.version.endswith("yolov8n.yaml")
    # labels come from the model: a yaml-built model names its 80 classes "0".."79"
    assert detector.labels == tuple(str(i) for i in range(80))
    image = load_rgb("pexels_scene_cut_f120.jpg")
    detections = detector.detect(image)
    assert detections  # conf=0 keeps the random model's boxes
    well_formed(detections, detector, image)
