"""OCR backends: scene text as (text, score, quadrilateral) per frame.

The default, ``rapidocr``, runs PaddleOCR's PP-OCR detection/recognition ONNX
models that ship inside the ``rapidocr`` wheel, so it works offline with no
download. ``paddleocr`` (optional extra ``video-r4[paddle]``) runs PaddleOCR 3.x
from local model folders. ``precomputed`` means the dataset's own
``video_ocr/<id>.json`` is used instead of running a model
(:func:`load_precomputed_ocr`). Every backend reports ``name`` and ``version``,
which go into each evidence row so results stay traceable to the model.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

import cv2
import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from videor4.contracts.errors import UserError

PRECOMPUTED_NAME = "precomputed"
PRECOMPUTED_VERSION = "m4-vitevqa video_ocr"


@dataclass(frozen=True)
class TextBox:
    """One text line: ``points`` are x1,y1,...,x4,y4 in pixels (the official video_ocr order)."""

    text: str
    score: float
    points: tuple[float, ...]

    @property
    def bbox(self) -> tuple[float, float, float, float]:
        """Axis-aligned pixel box ``(x1, y1, x2, y2)`` around the quadrilateral."""
        xs, ys = self.points[0::2], self.points[1::2]
        return min(xs), min(ys), max(xs), max(ys)

    def bbox_norm(self, width: int, height: int) -> tuple[float, float, float, float]:
        """:attr:`bbox` divided by the image size and clipped to [0, 1] (the evidence/crop format)."""
        x1, y1, x2, y2 = self.bbox
        return (
            min(max(x1 / width, 0.0), 1.0),
            min(max(y1 / height, 0.0), 1.0),
            min(max(x2 / width, 0.0), 1.0),
            min(max(y2 / height, 0.0), 1.0),
        )


class OCRConfig(BaseModel):
    """Which OCR engine reads frames, and how."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    backend: Literal["rapidocr", "paddleocr", "precomputed"] = Field(
        "rapidocr",
        description="'rapidocr': PP-OCR ONNX models bundled in the rapidocr wheel (offline); "
        "'paddleocr': PaddleOCR 3.x with local model folders; 'precomputed': the dataset's video_ocr JSON.",
    )
    min_score: float = Field(0.5, ge=0, le=1, description="Drop text lines recognised with a lower score.")
    max_side: int = Field(
        1920, ge=32, description="Frames with a longer side are downscaled before OCR (boxes are mapped back)."
    )
    det_min_side: int = Field(
        736, ge=32, description="Text detection upscales frames whose shorter side is below this (rapidocr's own "
        "default, 736: small captions are found more reliably); regions re-read by the text tracker are "
        "detected at their frame's scale."
    )
    num_threads: int = Field(0, ge=0, description="rapidocr: onnxruntime threads per model; 0 = onnxruntime default.")
    det_model_dir: Path | None = Field(
        None, description="paddleocr: folder with the detection model (inference.onnx + inference.yml, or Paddle files)."
    )
    rec_model_dir: Path | None = Field(None, description="paddleocr: folder with the recognition model.")
    det_model_name: str | None = Field(
        None, description="paddleocr: the detection model's name (e.g. PP-OCRv5_mobile_det); default: from inference.yml."
    )
    rec_model_name: str | None = Field(
        None, description="paddleocr: the recognition model's name (e.g. PP-OCRv5_mobile_rec); default: from inference.yml."
    )


@runtime_checkable
class OCRBackend(Protocol):
    """Reads text lines from an RGB uint8 image.

    ``det_scale``: when the image is a region cut from a larger frame, the scale at which that frame
    would be detected (:func:`detection_scale`), so the region's text is detected at the same size
    as in a whole-frame read; ``None`` means the image is a whole frame.
    """

    name: str
    version: str

    def read(self, image: np.ndarray, det_scale: float | None = None) -> list[TextBox]: ...


def detection_scale(shape: Sequence[int], config: OCRConfig) -> float:
    """The factor a whole frame of ``shape`` (h, w, ...) is resized by before text detection.

    Frames larger than ``max_side`` are shrunk to it; smaller frames are enlarged until the shorter side
    reaches ``det_min_side`` (without exceeding ``max_side``): detection on small text works better
    enlarged, which is why rapidocr enlarges to 736 by default.
    """
    h, w = int(shape[0]), int(shape[1])
    if max(h, w) > config.max_side:
        return config.max_side / max(h, w)
    return max(1.0, min(config.det_min_side / max(min(h, w), 1), config.max_side / max(h, w)))


def _scaled(image: np.ndarray, scale: float) -> np.ndarray:
    if scale == 1.0:
        return image
    size = (max(1, round(image.shape[1] * scale)), max(1, round(image.shape[0] * scale)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)


def _boxes(texts: Sequence[str], scores: Sequence[float], quads: Any, scale: float, min_score: float) -> list[TextBox]:
    """Engine output -> TextBoxes in original-image pixels, low scores and blank texts dropped."""
    out = []
    for text, score, quad in zip(texts, scores, quads):
        if float(score) >= min_score and str(text).strip():
            points = tuple(float(v) / scale for v in np.asarray(quad, dtype=float).reshape(-1))
            out.append(TextBox(text=str(text), score=float(score), points=points))
    return out


class RapidOCRBackend:
    """rapidocr with its wheel's bundled ONNX models, passed by path so nothing is looked up online."""

    name = "rapidocr"

    def __init__(self, config: OCRConfig) -> None:
        from importlib.metadata import version

        import rapidocr

        self.config = config
        models = Path(rapidocr.__file__).parent / "models"
        det, rec, cls = (self._bundled(models, kind) for kind in ("det", "rec", "cls"))
        threads = config.num_threads or -1
        # The image reaches rapidocr already at detection scale (:func:`detection_scale`), so its own
        # resizing is switched off: "max" with a limit no frame reaches only rounds sides to 32.
        self._engine = rapidocr.RapidOCR(
            params={
                "Global.log_level": "error",
                "Global.text_score": config.min_score,
                "Global.max_side_len": 1 << 16,
                "Det.limit_type": "max",
                "Det.limit_side_len": 1 << 16,
                "Det.model_path": str(det),
                "Rec.model_path": str(rec),
                "Cls.model_path": str(cls),
                "EngineConfig.onnxruntime.intra_op_num_threads": threads,
                "EngineConfig.onnxruntime.inter_op_num_threads": threads,
            }
        )
        self.version = f"{version('rapidocr')} {det.stem}+{rec.stem}"

    @staticmethod
    def _bundled(models: Path, kind: str) -> Path:
        found = sorted(models.glob(f"*{kind}*.onnx"))
        if not found:
            raise UserError(f"{models}: the installed rapidocr wheel ships no '{kind}' ONNX model; reinstall rapidocr")
        return found[-1]

    def read(self, image: np.ndarray, det_scale: float | None = None) -> list[TextBox]:
        if image.size == 0:
            return []
        scale = detection_scale(image.shape, self.config) if det_scale is None else det_scale
        small = _scaled(image, scale)
        result = self._engine(np.ascontiguousarray(small[..., ::-1]))  # rapidocr takes arrays as BGR
        if result.boxes is None or result.txts is None:
            return []
        return _boxes(result.txts, result.scores, result.boxes, scale, self.config.min_score)


class PaddleOCRBackend:
    """PaddleOCR 3.x on local model folders (it downloads its models unless given folders)."""

    name = "paddleocr"

    def __init__(self, config: OCRConfig) -> None:
        if config.det_model_dir is None or config.rec_model_dir is None:
            raise UserError("ocr: the paddleocr backend needs det_model_dir and rec_model_dir (local model folders)")
        for folder in (config.det_model_dir, config.rec_model_dir):
            if not folder.is_dir():
                raise UserError(f"{folder}: paddleocr model folder not found")
        # Without this PaddleX probes model hosters on start-up, which fails offline.
        os.environ.setdefault("PADDLE_PDX_DISABLE_MODEL_SOURCE_CHECK", "True")
        try:
            import paddleocr
        except ImportError as error:
            raise UserError("ocr: backend 'paddleocr' needs PaddleOCR: pip install 'video-r4[paddle]'") from error
        self.config = config
        det_name = config.det_model_name or _model_name(config.det_model_dir)
        rec_name = config.rec_model_name or _model_name(config.rec_model_dir)
        self._engine = paddleocr.PaddleOCR(
            text_detection_model_dir=str(config.det_model_dir),
            text_detection_model_name=det_name,
            text_recognition_model_dir=str(config.rec_model_dir),
            text_recognition_model_name=rec_name,
            use_doc_orientation_classify=False,
            use_doc_unwarping=False,
            use_textline_orientation=False,
            text_rec_score_thresh=config.min_score,
            engine="onnxruntime",
        )
        self.version = f"{paddleocr.__version__} {det_name}+{rec_name}"

    def read(self, image: np.ndarray, det_scale: float | None = None) -> list[TextBox]:
        if image.size == 0:
            return []
        # PaddleOCR resizes for detection by its own rule (the model folder's DetResizeForTest); a region
        # is enlarged to its frame's scale so its text keeps the size it has in a whole-frame read.
        scale = min(1.0, self.config.max_side / max(image.shape[:2])) if det_scale is None else det_scale
        small = _scaled(image, scale)
        out = []
        for page in self._engine.predict(np.ascontiguousarray(small[..., ::-1])):  # BGR, like cv2
            out += _boxes(page["rec_texts"], page["rec_scores"], page["rec_polys"], scale, self.config.min_score)
        return out


def _model_name(model_dir: Path) -> str:
    """The model name PaddleX wrote into ``inference.yml`` (``Global.model_name``)."""
    import yaml

    meta = model_dir / "inference.yml"
    try:
        name = yaml.safe_load(meta.read_text())["Global"]["model_name"]
    except (OSError, yaml.YAMLError, KeyError, TypeError) as error:
        raise UserError(f"{meta}: cannot read Global.model_name; set det_model_name/rec_model_name") from error
    return str(name)


def write_paddle_model_dirs(target: Path) -> tuple[Path, Path]:
    """Package rapidocr's bundled PP-OCR ONNX models as PaddleX model folders, for offline PaddleOCR.

    PaddleOCR 3.x downloads its models unless given folders holding ``inference.onnx`` and an
    ``inference.yml`` (pre/post-processing); the recognizer's character list is stored in the ONNX
    metadata key ``character``. Returns ``(det_model_dir, rec_model_dir)``; the settings mirror
    rapidocr's (normalisation 0.5/0.5, recognizer input 3x48x320).
    """
    import onnxruntime
    import rapidocr
    import yaml

    models = Path(rapidocr.__file__).parent / "models"
    det_onnx, rec_onnx = RapidOCRBackend._bundled(models, "det"), RapidOCRBackend._bundled(models, "rec")
    session = onnxruntime.InferenceSession(str(rec_onnx), providers=["CPUExecutionProvider"])
    characters = session.get_modelmeta().custom_metadata_map["character"].splitlines()
    decode = {"DecodeImage": {"channel_first": False, "img_mode": "BGR"}}
    specs = {
        "det": (det_onnx, {
            "PreProcess": {"transform_ops": [
                decode,
                {"DetResizeForTest": {"resize_long": 960}},
                {"NormalizeImage": {"mean": [0.5] * 3, "std": [0.5] * 3, "scale": "1./255.", "order": "hwc"}},
                {"ToCHWImage": None},
            ]},
            "PostProcess": {"name": "DBPostProcess", "thresh": 0.3, "box_thresh": 0.6, "unclip_ratio": 1.5},
        }),
        "rec": (rec_onnx, {
            "PreProcess": {"transform_ops": [decode, {"RecResizeImg": {"image_shape": [3, 48, 320]}}]},
            "PostProcess": {"name": "CTCLabelDecode", "character_dict": characters},
        }),
    }
    dirs = []
    for kind, (onnx_file, spec) in specs.items():
        folder = Path(target) / kind
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(onnx_file, folder / "inference.onnx")
        # PaddleX knows PP-OCRv6 models as e.g. "PP-OCRv6_small_det"; rapidocr names them "PP-OCRv6_det_small".
        version, task, size = onnx_file.stem.split("_")
        meta = {"Global": {"model_name": f"{version}_{size}_{task}"}, **spec}
        (folder / "inference.yml").write_text(yaml.safe_dump(meta, allow_unicode=True), encoding="utf-8")
        dirs.append(folder)
    return dirs[0], dirs[1]


def create_ocr(config: OCRConfig) -> OCRBackend:
    """Build the configured OCR engine (models load once, here)."""
    if config.backend == "rapidocr":
        return RapidOCRBackend(config)
    if config.backend == "paddleocr":
        return PaddleOCRBackend(config)
    raise UserError("ocr: backend 'precomputed' reads video_ocr/<id>.json with load_precomputed_ocr; it runs on no image")


def load_precomputed_ocr(path: Path, frame_numbers: Sequence[int] | None = None) -> dict[int, list[TextBox]]:
    """Read an official ``video_ocr/<video_id>.json``: ``{frame: [{"points": [8 numbers], "ocr": str}]}``.

    Keys name frames by number (``"1"``, ``"00001"``, ``"1.jpg"`` or an int). The result is keyed by
    0-based frame index, as everywhere in the toolkit:

    * with ``frame_numbers`` (the numbers of the video's frame files in order, e.g.
      ``FramesDirReader.frame_numbers``), a key's index is its number's position there;
    * without, the keys must be consecutive numbers and the first key is frame 0 (the JSON covers
      every frame); otherwise a :class:`UserError` asks for ``frame_numbers``.

    Entries have no confidence, so their score is 1.0; ``points`` may also be four ``[x, y]`` pairs.
    """
    path = Path(path)
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise UserError(f"{path}: cannot read precomputed OCR ({error.strerror})") from error
    except json.JSONDecodeError as error:
        raise UserError(f"{path}: invalid JSON at line {error.lineno}: {error.msg}") from error
    if not isinstance(raw, dict):
        raise UserError(f"{path}: precomputed OCR must be a JSON object {{frame: [entries]}}")

    by_number: dict[int, list[TextBox]] = {}
    for key, entries in raw.items():
        stem = Path(str(key)).stem
        if not stem.isdigit():
            raise UserError(f"{path}: frame key {key!r} is not a frame number")
        if not isinstance(entries, list):
            raise UserError(f"{path}: frame {key!r} must map to a list of entries")
        by_number[int(stem)] = [_precomputed_box(path, key, i, entry) for i, entry in enumerate(entries)]

    if frame_numbers is not None:
        position = {number: index for index, number in enumerate(frame_numbers)}
        missing = sorted(set(by_number) - set(position))
        if missing:
            raise UserError(f"{path}: frame {missing[0]} is not among the video's {len(position)} frames")
        return {position[number]: boxes for number, boxes in sorted(by_number.items())}
    numbers = sorted(by_number)
    if numbers and numbers[-1] - numbers[0] != len(numbers) - 1:
        raise UserError(f"{path}: frame keys are not consecutive; pass the video's frame_numbers to place them")
    return {number - numbers[0]: by_number[number] for number in numbers}


def _precomputed_box(path: Path, key: str, i: int, entry: Any) -> TextBox:
    where = f"{path}: frame {key!r} entry {i}"
    if not isinstance(entry, dict) or "points" not in entry or "ocr" not in entry:
        raise UserError(f"{where}: expected an object with 'points' and 'ocr'")
    try:
        points = tuple(float(v) for v in np.asarray(entry["points"], dtype=float).reshape(-1))
    except (TypeError, ValueError) as error:
        raise UserError(f"{where}: 'points' must be numbers") from error
    if len(points) != 8:
        raise UserError(f"{where}: 'points' must hold 8 numbers (x1,y1..x4,y4), got {len(points)}")
    return TextBox(text=str(entry["ocr"]), score=1.0, points=points)
