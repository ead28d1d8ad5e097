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
import threading
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
    engine: Literal["openvino", "onnxruntime"] = Field(
        "openvino", description="rapidocr: the runtime its ONNX models run on. Measured on 2 Xeon cores (make bench): "
        "OpenVINO detects 2.5-3.8x and recognises 1.4-1.6x faster than ONNX Runtime (rapidocr's own default), "
        "with the same text; 'onnxruntime' stays available."
    )
    precision: Literal["f32", "bf16"] = Field(
        "bf16", description="rapidocr on openvino: inference precision. 'bf16' (OpenVINO's own default on CPUs with "
        "AMX / AVX512-BF16; f32 runs where the CPU lacks them) recognises ~2x and detects ~1.6x faster than f32; on "
        "1,758 real lines 26 read differently: 4 in spacing ('25, 1983' / '25,1983'), the rest noise detections, "
        "an upside-down caption and one fragment (make bench, docs/backends.md). 'f32' gives the same readings on "
        "every CPU. The precision that ran is in the cache key."
    )
    num_threads: int = Field(0, ge=0, description="rapidocr: inference threads per model; 0 = the runtime's default.")
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

    def read_regions(self, image: np.ndarray, regions: Sequence[tuple[int, int, int, int]],
                     det_scale: float | None = None) -> list[TextBox]:
        """Text of several regions ``(x1, y1, x2, y2)`` of one image, in image pixels (one batch where the engine
        allows): what the text tracker reads when only parts of a frame changed."""
        ...


@runtime_checkable
class LineRecognizer(Protocol):
    """An OCR backend whose detection and recognition are separate steps (rapidocr's), so that a line whose box
    is already known is read without detecting it, and detected lines that are known not to have changed need
    not be recognised again."""

    def detect_regions(self, image: np.ndarray, regions: Sequence[tuple[int, int, int, int]],
                       det_scale: float | None = None) -> list[tuple[float, ...]]:
        """Text-line quads (x1,y1,...,x4,y4 pixels of ``image``) found in the regions, without reading them."""
        ...

    def recognize(self, image: np.ndarray, quads: Sequence[Sequence[float]]) -> list[TextBox | None]:
        """Read each line ``quads[i]`` of ``image`` in one batched call: ``result[i]`` is its text with the quad
        as ``points``, or None where it read as blank or below ``min_score``."""
        ...


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
    """rapidocr with its wheel's bundled ONNX models, passed by path so nothing is looked up online.

    rapidocr does the pre- and post-processing (detection resizing and DB boxes, line crops, the 180-degree line
    classifier, CTC decoding); the inference sessions are ONNX Runtime's or, by default, OpenVINO's
    (:class:`_OpenVINOSession`, built here so that its precision is set explicitly). Detection and recognition
    are separate steps, so that lines from several regions are recognised in one batch (:meth:`read_regions`)
    and lines whose boxes are known are read without detection (:meth:`recognize`).
    """

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
        # rapidocr builds its models on first use; build them now (threads would race to) and swap the engine.
        models_in_use = {"det": self._engine._load_det_model(), "cls": self._engine._load_cls_model(),
                         "rec": self._engine._load_rec_model()}
        if config.engine == "openvino":
            for kind, path in (("det", det), ("cls", cls), ("rec", rec)):
                session = models_in_use[kind].session = _OpenVINOSession(path, config.num_threads, config.precision)
            runtime = f"openvino {version('openvino')} {session.precision}"
        else:
            runtime = f"onnxruntime {version('onnxruntime')}"
        self.version = f"{version('rapidocr')} {det.stem}+{rec.stem} {runtime}"

    @staticmethod
    def _bundled(models: Path, kind: str) -> Path:
        found = sorted(models.glob(f"*{kind}*.onnx"))
        if not found:
            raise UserError(f"{models}: the installed rapidocr wheel ships no '{kind}' ONNX model; reinstall rapidocr")
        return found[-1]

    def read(self, image: np.ndarray, det_scale: float | None = None) -> list[TextBox]:
        if image.size == 0:
            return []
        return self.read_regions(image, [(0, 0, image.shape[1], image.shape[0])], det_scale)

    def read_regions(self, image: np.ndarray, regions: Sequence[tuple[int, int, int, int]],
                     det_scale: float | None = None) -> list[TextBox]:
        return [b for b in self.recognize(image, self.detect_regions(image, regions, det_scale)) if b is not None]

    def detect_regions(self, image: np.ndarray, regions: Sequence[tuple[int, int, int, int]],
                       det_scale: float | None = None) -> list[tuple[float, ...]]:
        """Text-line quads (x1,y1,...,x4,y4 in ``image`` pixels) detected in each region, at ``det_scale``
        (default: the image's own :func:`detection_scale`), in reading order per region."""
        from rapidocr.main import RapidOCRError
        from rapidocr.utils.process_img import map_boxes_to_original

        scale = detection_scale(image.shape, self.config) if det_scale is None else det_scale
        quads: list[tuple[float, ...]] = []
        for x1, y1, x2, y2 in regions:
            region = image[y1:y2, x1:x2]
            if region.size == 0:
                continue
            small = np.ascontiguousarray(_scaled(region, scale)[..., ::-1])  # rapidocr takes arrays as BGR
            img, op_record = self._engine.preprocess_img(small)
            try:
                _, found = self._engine.detect_and_crop(img, op_record)
            except RapidOCRError:  # nothing detected
                continue
            for box in map_boxes_to_original(found.boxes, op_record, *small.shape[:2]):
                quads.append(_shifted((np.asarray(box, dtype=np.float64) / scale).reshape(-1), x1, y1))
        return quads

    def recognize(self, image: np.ndarray, quads: Sequence[Sequence[float]]) -> list[TextBox | None]:
        """Recognise the lines ``quads`` cut from ``image`` at its own resolution, all in one batched call
        (rapidocr's line classifier and recogniser, which sort lines by width and run them in batches)."""
        from rapidocr.main import RapidOCRError
        from rapidocr.utils.process_img import get_rotate_crop_image

        h, w = image.shape[:2]
        boxes = [np.clip(np.asarray(q, dtype=np.float32).reshape(4, 2), 0, [w, h]).astype(np.float32) for q in quads]
        usable = [i for i, b in enumerate(boxes) if np.ptp(b[:, 0]) >= 2 and np.ptp(b[:, 1]) >= 2]
        out: list[TextBox | None] = [None] * len(boxes)
        if image.size == 0 or not usable:
            return out
        bgr = np.ascontiguousarray(image[..., ::-1])
        try:
            upright, _ = self._engine.cls_and_rotate([get_rotate_crop_image(bgr, boxes[i].copy()) for i in usable])
            result = self._engine.recognize_txt(upright)
        except RapidOCRError:
            return out
        for i, text, score in zip(usable, result.txts, result.scores):
            if float(score) >= self.config.min_score and str(text).strip():
                out[i] = TextBox(text=str(text), score=float(score), points=tuple(float(v) for v in quads[i]))
        return out


class _OpenVINOSession:
    """An OpenVINO CPU session with rapidocr's session interface (``__call__(batch) -> output``).

    The precision is set explicitly, so that the configuration (not the CPU's defaults) says what runs, and the
    precision that really ran is recorded: bf16 falls back to f32 on a CPU without bf16 arithmetic.
    A compiled model is shared; each thread gets its own infer request (requests are not thread-safe).
    """

    def __init__(self, model: Path, threads: int, precision: str) -> None:
        import openvino

        core = openvino.Core()
        if precision == "bf16" and "BF16" not in core.get_property("CPU", "OPTIMIZATION_CAPABILITIES"):
            precision = "f32"  # this CPU has no bf16 arithmetic: say what really runs (it is in the cache key)
        self.precision = precision
        options = {"INFERENCE_PRECISION_HINT": precision}
        if threads:
            options["INFERENCE_NUM_THREADS"] = threads
        self._compiled = core.compile_model(core.read_model(str(model)), "CPU", options)
        self._local = threading.local()

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        request = getattr(self._local, "request", None)
        if request is None:
            request = self._local.request = self._compiled.create_infer_request()
        request.infer([batch])
        return request.get_output_tensor().data.copy()  # the request's buffer is reused by its next call


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

    def read_regions(self, image: np.ndarray, regions: Sequence[tuple[int, int, int, int]],
                     det_scale: float | None = None) -> list[TextBox]:
        out = []
        for x1, y1, x2, y2 in regions:
            for b in self.read(np.ascontiguousarray(image[y1:y2, x1:x2]), det_scale=det_scale):
                out.append(TextBox(b.text, b.score, _shifted(b.points, x1, y1)))
        return out


def _shifted(points: Sequence[float], dx: float, dy: float) -> tuple[float, ...]:
    """Quad points moved by (dx, dy): a region's boxes in its frame's pixels."""
    return tuple(float(v) + (dx if i % 2 == 0 else dy) for i, v in enumerate(points))


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
