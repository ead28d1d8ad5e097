"""Object detection backends: labelled boxes per frame for "Visual" questions.

The default, ``opencv``, uses the only pretrained detectors available offline:
the Haar cascades and the HOG people detector inside OpenCV 4.x (the 4.12 pin
matters: 5.x wheels drop both). They cover a few classes (faces, upright
people, licence plates) and are weak compared with a modern detector;
``ultralytics`` runs any YOLO weights the user has on disk (labels come from
the model). ``none`` detects nothing, for OCR-only runs.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol, runtime_checkable

import cv2
import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from videor4.contracts.errors import UserError

OpenCVClass = Literal["face", "person", "licence_plate"]

# label -> Haar cascade file in cv2.data.haarcascades and its (scaleFactor, minNeighbors, minSize).
_CASCADES: dict[str, tuple[str, float, int, tuple[int, int]]] = {
    "face": ("haarcascade_frontalface_default.xml", 1.1, 5, (24, 24)),
    "licence_plate": ("haarcascade_russian_plate_number.xml", 1.1, 4, (40, 12)),
}


@dataclass(frozen=True)
class Detection:
    """One object: ``bbox`` is x1, y1, x2, y2 in pixels of the image given to ``detect``."""

    label: str
    score: float
    bbox: tuple[float, float, float, float]


class DetectorConfig(BaseModel):
    """Which detector finds objects in frames, and its thresholds."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    backend: Literal["opencv", "ultralytics", "none"] = Field(
        "opencv",
        description="'opencv': Haar cascades + HOG people detector shipped with OpenCV (offline); "
        "'ultralytics': YOLO weights from `weights`; 'none': no detection.",
    )
    weights: Path | None = Field(
        None,
        description="ultralytics: a .pt weights file; a model .yaml name (e.g. yolov8n.yaml) builds the "
        "architecture with random weights, for testing code paths only.",
    )
    conf: float = Field(0.25, ge=0, le=1, description="Drop detections scoring below this.")
    nms_iou: float = Field(0.45, gt=0, le=1, description="Boxes of one label overlapping more than this IoU are merged.")
    opencv_classes: tuple[OpenCVClass, ...] = Field(
        ("face", "person"),
        description="opencv: which of its detectors to run. 'licence_plate' is opt-in: its cascade "
        "(trained on Russian plates) also fires on street signs and text panels, which OCR covers.",
    )
    max_side: int = Field(960, ge=64, description="opencv: frames are downscaled to this longer side first (speed).")
    imgsz: int = Field(640, ge=32, description="ultralytics: inference size (letterboxed square).")
    device: str = Field("cpu", description="ultralytics: torch device, e.g. 'cpu' or 'cuda:0'.")


@runtime_checkable
class Detector(Protocol):
    """Finds labelled boxes in an RGB uint8 image."""

    name: str
    version: str
    labels: tuple[str, ...]

    def detect(self, image: np.ndarray) -> list[Detection]: ...


def _squash(margin: float) -> float:
    """Classic detectors give unbounded margins; a logistic maps them monotonically to (0, 1).

    It is not a calibrated probability: it only lets one ``conf`` threshold apply to every backend.
    """
    return 1.0 / (1.0 + math.exp(-margin))


class OpenCVDetector:
    """Haar cascades (face, licence_plate) and the HOG+SVM people detector (person)."""

    name = "opencv"

    def __init__(self, config: DetectorConfig) -> None:
        self.config = config
        self.labels: tuple[str, ...] = tuple(dict.fromkeys(config.opencv_classes))
        if not self.labels:
            raise UserError("detector: opencv_classes is empty; use backend 'none' to skip detection")
        self.version = f"{cv2.__version__} " + "+".join(self.labels)
        self._cascades: dict[str, cv2.CascadeClassifier] = {}
        for label in self.labels:
            if label in _CASCADES:
                cascade = cv2.CascadeClassifier(cv2.data.haarcascades + _CASCADES[label][0])
                if cascade.empty():
                    raise UserError(f"detector: OpenCV {cv2.__version__} lacks {_CASCADES[label][0]}; install opencv 4.12")
                self._cascades[label] = cascade
        self._hog: cv2.HOGDescriptor | None = None
        if "person" in self.labels:
            self._hog = cv2.HOGDescriptor()
            self._hog.setSVMDetector(cv2.HOGDescriptor_getDefaultPeopleDetector())

    def detect(self, image: np.ndarray) -> list[Detection]:
        if image.size == 0:
            return []
        scale = min(1.0, self.config.max_side / max(image.shape[:2]))
        small = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA) if scale < 1 else image
        gray = cv2.equalizeHist(cv2.cvtColor(small, cv2.COLOR_RGB2GRAY))
        found: dict[str, tuple[list[list[int]], list[float]]] = {}
        for label, cascade in self._cascades.items():
            _, scale_factor, neighbours, min_size = _CASCADES[label]
            rects, _, weights = cascade.detectMultiScale3(
                gray, scaleFactor=scale_factor, minNeighbors=neighbours, minSize=min_size, outputRejectLevels=True
            )
            found[label] = ([list(r) for r in rects], [_squash(float(w)) for w in np.ravel(weights)])
        if self._hog is not None:
            rects, weights = self._hog.detectMultiScale(small, winStride=(8, 8), padding=(16, 16), scale=1.05)
            found["person"] = ([list(r) for r in rects], [_squash(float(w)) for w in np.ravel(weights)])
        detections = []
        for label, (rects, scores) in found.items():
            for i in _nms(rects, scores, self.config.conf, self.config.nms_iou):
                x, y, w, h = rects[i]
                bbox = (x / scale, y / scale, (x + w) / scale, (y + h) / scale)
                detections.append(Detection(label=label, score=scores[i], bbox=bbox))
        return sorted(detections, key=lambda d: -d.score)


def _nms(rects: list[list[int]], scores: list[float], conf: float, iou: float) -> list[int]:
    """Indices of boxes (x, y, w, h) that pass ``conf`` and survive non-maximum suppression."""
    if not rects:
        return []
    return [int(i) for i in np.ravel(cv2.dnn.NMSBoxes(rects, scores, conf, iou))]


class UltralyticsDetector:
    """A YOLO model from a local weights file; labels are the model's class names."""

    name = "ultralytics"

    def __init__(self, config: DetectorConfig) -> None:
        weights = config.weights
        if weights is None:
            raise UserError("detector: backend 'ultralytics' needs weights (a local .pt file)")
        is_architecture = weights.suffix in (".yaml", ".yml")
        if not is_architecture and not weights.is_file():
            raise UserError(f"{weights}: YOLO weights file not found (weights are never downloaded)")
        # Ultralytics probes the network (and may fetch assets) unless told it is offline.
        os.environ.setdefault("YOLO_OFFLINE", "1")
        import ultralytics

        try:
            self._model = ultralytics.YOLO(str(weights))
        except Exception as error:  # ultralytics raises many types for unreadable weights
            raise UserError(f"{weights}: cannot load YOLO model ({type(error).__name__}: {error})") from error
        names = self._model.names
        self.labels: tuple[str, ...] = tuple(names[i] for i in sorted(names))
        self.config = config
        self.version = f"{ultralytics.__version__} {weights.name}"

    def detect(self, image: np.ndarray) -> list[Detection]:
        if image.size == 0:
            return []
        result = self._model.predict(
            np.ascontiguousarray(image[..., ::-1]),  # ultralytics reads arrays as BGR
            conf=self.config.conf,
            iou=self.config.nms_iou,
            imgsz=self.config.imgsz,
            device=self.config.device,
            verbose=False,
        )[0]
        boxes = result.boxes
        xyxy, scores, classes = (t.cpu().numpy() for t in (boxes.xyxy, boxes.conf, boxes.cls))
        return [
            Detection(label=self.labels[int(c)], score=float(s), bbox=tuple(float(v) for v in box))  # type: ignore[arg-type]
            for box, s, c in zip(xyxy, scores, classes)
        ]


class NoDetector:
    """Detects nothing, so OCR-only runs need no special case downstream."""

    name = "none"
    version = "-"
    labels: tuple[str, ...] = ()

    def detect(self, image: np.ndarray) -> list[Detection]:
        return []


def create_detector(config: DetectorConfig) -> Detector:
    """Build the configured detector (models load once, here)."""
    if config.backend == "opencv":
        return OpenCVDetector(config)
    if config.backend == "ultralytics":
        return UltralyticsDetector(config)
    return NoDetector()
