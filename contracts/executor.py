"""The clip/crop tool executor shared by trajectory synthesis, QC, training rollouts and evaluation (DESIGN §4).

One module runs the ops for both sides so that an observation synthesized into a CoT shard and the
observation a policy gets during RL are the same pixels. Every image the executor produces is described by an
:class:`ImageRef` (frame index + box in *source-frame* coordinates) and rendered only from that reference, so a
shard can store references instead of pixels and re-execute them at train time bit-for-bit.

Protocol, as the model sees it::

    <tool_call>
    {"name": "clip", "arguments": {"start": 1.0, "end": 2.5}}
    </tool_call>
    <tool_call>
    {"name": "crop", "arguments": {"image": 3, "bbox_2d": [0.1, 0.2, 0.5, 0.4]}}
    </tool_call>

* ``clip`` — ``start``/``end`` in seconds. Returns up to ``clip_frames`` frames the model has not seen yet,
  sampled uniformly inside the window (clamped to the video), decoded from the source.
* ``crop`` — ``image`` is 1-based over every image in the context so far (initial frames, then each
  observation's images, in order). ``bbox_2d`` is ``[x1, y1, x2, y2]`` normalized to 0–1 on that image; if any
  value is greater than 1 the box is read as pixel coordinates of that image *as the model was shown it*
  (its size is stated in the label that introduced it; see ``display_size``). The box is padded by ``crop_pad`` of its size,
  clamped to the image, grown to at least ``crop_min_side`` source pixels, and small results are upscaled.

Mistakes never raise: they become ``ok=False`` observations with a message the model can act on, and every
attempted call (valid or not) counts towards ``max_calls`` so a looping policy is stopped by the budget.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from videor4.contracts.media import uniform_indices
from videor4.contracts.tool_protocol import TOOL_NAMES, ToolCall, ToolCallError, parse_tool_calls

if TYPE_CHECKING:
    from videor4.contracts.media import VideoReader


class OpsConfig(BaseModel):
    """Budgets and geometry of the clip/crop ops; defaults follow Pixel-Reasoner (≤4 calls, ≤16 images)."""

    model_config = ConfigDict(extra="forbid")

    clip_frames: int = Field(8, ge=1, description="K: most new frames one clip call returns")
    max_calls: int = Field(4, ge=0, description="most tool calls (valid or not) per trajectory")
    max_images: int = Field(16, ge=1, description="most images in the context, initial frames included")
    crop_min_side: int = Field(28, ge=1, description="smallest crop side in source pixels (one Qwen2.5-VL patch merge)")
    crop_pad: float = Field(0.1, ge=0.0, le=1.0, description="context added on each side, as a fraction of the box size")
    crop_short_side: int = Field(
        224, ge=1, description="crops whose short side is smaller are upscaled to reach this many pixels"
    )
    crop_max_pixels: int = Field(
        448 * 448, ge=28 * 28, description="upscaling never makes a crop larger than this many pixels"
    )


@dataclass(frozen=True)
class ImageRef:
    """A re-executable reference to one image: a frame, optionally cropped.

    ``bbox`` is normalized to [0, 1] in source-frame coordinates and snapped to whole source pixels, so a crop
    of a crop is stored as one box on the frame and renders exactly like a direct crop of that region.
    """

    frame_index: int
    timestamp_s: float
    bbox: tuple[float, float, float, float] | None = None


@dataclass
class ToolObservation:
    """What one call returned. ``message`` is the text the model sees next to ``images``."""

    ok: bool
    tool: str
    refs: list[ImageRef] = field(default_factory=list)
    images: list[np.ndarray] = field(default_factory=list)
    message: str = ""


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


class ClipCropExecutor:
    """Runs clip/crop calls for one trajectory against one video.

    ``context`` starts with the initial frames and grows with every observation; the 1-based position of a ref in
    it is the number the model uses in ``crop``. Source frames are cached per trajectory, so crops of frames
    already shown cost no decode.

    ``display_size(ref, (w, h))`` maps an image's rendered size to the size the model is shown (the prompt
    builder resizes images to a pixel budget); pixel boxes and image labels use the displayed size, so the
    coordinates a model reads off an image mean what it thinks they mean. Default: shown as rendered.
    """

    def __init__(
        self,
        reader: VideoReader,
        initial_frames: Sequence[int],
        config: OpsConfig | None = None,
        display_size: Callable[[ImageRef, tuple[int, int]], tuple[int, int]] | None = None,
    ):
        self.reader = reader
        self.config = config or OpsConfig()
        self.display_size = display_size or (lambda ref, size: size)
        self.context: list[ImageRef] = [ImageRef(i, reader.timestamp(i)) for i in initial_frames]
        self.calls_made = 0
        self._frames: dict[int, np.ndarray] = {}

    # -- rendering -------------------------------------------------------------------------------------------
    def render(self, ref: ImageRef) -> np.ndarray:
        """Deterministically re-execute a ref: decode the frame, cut the box, upscale a small crop."""
        return self.render_many([ref])[0]

    def render_many(self, refs: Sequence[ImageRef]) -> list[np.ndarray]:
        """Render several refs with one ascending, streaming decode of the frames not cached yet."""
        missing = sorted({r.frame_index for r in refs} - self._frames.keys())
        if missing:
            for index, frame in self.reader.read(missing):
                self._frames[index] = frame
        return [self._cut(self._frames[r.frame_index], r.bbox) for r in refs]

    def _cut(self, frame: np.ndarray, bbox: tuple[float, float, float, float] | None) -> np.ndarray:
        if bbox is None:
            return frame
        height, width = frame.shape[:2]
        x1, y1, x2, y2 = (round(v * s) for v, s in zip(bbox, (width, height, width, height)))
        region = frame[y1:y2, x1:x2]
        w, h = x2 - x1, y2 - y1
        cfg = self.config
        scale = min(cfg.crop_short_side / min(w, h), math.sqrt(cfg.crop_max_pixels / (w * h)))
        if scale <= 1.0:
            return np.ascontiguousarray(region)
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
        return cv2.resize(region, size, interpolation=cv2.INTER_CUBIC)

    def source_box(self, ref: ImageRef) -> tuple[int, int, int, int]:
        """The ref's region in source pixels (the whole frame when ``bbox`` is None)."""
        w, h = self.reader.width, self.reader.height
        if ref.bbox is None:
            return 0, 0, w, h
        x1, y1, x2, y2 = ref.bbox
        return round(x1 * w), round(y1 * h), round(x2 * w), round(y2 * h)

    def rendered_size(self, ref: ImageRef) -> tuple[int, int]:
        """(width, height) of ``render(ref)`` without decoding — the frame of reference of pixel boxes."""
        x1, y1, x2, y2 = self.source_box(ref)
        w, h = x2 - x1, y2 - y1
        if ref.bbox is None:
            return w, h
        cfg = self.config
        scale = min(cfg.crop_short_side / min(w, h), math.sqrt(cfg.crop_max_pixels / (w * h)))
        return (w, h) if scale <= 1.0 else (max(1, round(w * scale)), max(1, round(h * scale)))

    def shown_size(self, ref: ImageRef) -> tuple[int, int]:
        """(width, height) of the image as the model sees it; pixel boxes are read in this frame."""
        return self.display_size(ref, self.rendered_size(ref))

    def describe(self, number: int, ref: ImageRef) -> str:
        return describe_image(number, ref, self.shown_size(ref))

    # -- execution -------------------------------------------------------------------------------------------
    def execute_text(self, assistant_text: str) -> list[ToolObservation]:
        """Execute every tool call in an assistant turn, in order."""
        return [self.execute(call) for call in parse_tool_calls(assistant_text)]

    def execute(self, call: ToolCall | ToolCallError) -> ToolObservation:
        """Run one call; budget and argument problems come back as ``ok=False`` observations."""
        tool = call.name if isinstance(call, ToolCall) else "invalid"
        if self.calls_made >= self.config.max_calls:
            return self._error(tool, f"tool call budget exhausted ({self.config.max_calls} calls); give your <answer> now")
        self.calls_made += 1
        if isinstance(call, ToolCallError):
            return self._error(tool, call.message)
        if call.name == "clip":
            return self._clip(call.arguments)
        if call.name == "crop":
            return self._crop(call.arguments)
        return self._error(tool, f"unknown tool {call.name!r}; available tools: {', '.join(TOOL_NAMES)}")

    def _error(self, tool: str, message: str) -> ToolObservation:
        return ToolObservation(ok=False, tool=tool, message=f"Error: {message}.")

    def _free_slots(self) -> int:
        return self.config.max_images - len(self.context)

    def _clip(self, args: dict[str, Any]) -> ToolObservation:
        start, end = _number(args.get("start")), _number(args.get("end"))
        if start is None or end is None:
            return self._error("clip", 'clip needs numeric "start" and "end" in seconds')
        duration = self.reader.num_frames / self.reader.fps
        if end <= start:
            return self._error("clip", f"empty or inverted window [{start:g}, {end:g}]; end must be after start")
        if end < 0 or start >= duration:
            return self._error("clip", f"window [{start:g}, {end:g}] is outside the video (0 to {duration:.2f}s)")
        if self._free_slots() <= 0:
            return self._error("clip", f"image budget exhausted ({self.config.max_images} images); give your <answer> now")
        fps = self.reader.fps
        first = max(0, math.ceil(start * fps - 1e-6))
        last = min(self.reader.num_frames - 1, math.floor(end * fps + 1e-6))
        seen = {r.frame_index for r in self.context if r.bbox is None}
        fresh = [i for i in range(first, last + 1) if i not in seen]
        if not fresh:
            return self._error(
                "clip", f"no unseen frames in [{start:g}, {end:g}]s; pick another window or crop a shown image"
            )
        count = min(self.config.clip_frames, self._free_slots(), len(fresh))
        picked = [fresh[j] for j in uniform_indices(len(fresh), count)]
        refs = [ImageRef(i, self.reader.timestamp(i)) for i in picked]
        return self._observe("clip", refs, f"clip [{start:g}, {end:g}]s returned {len(refs)} new frames.")

    def _crop(self, args: dict[str, Any]) -> ToolObservation:
        image, box = args.get("image"), args.get("bbox_2d")
        if isinstance(image, bool) or not isinstance(image, int):
            return self._error("crop", 'crop needs an integer "image" (1-based image number)')
        if not 1 <= image <= len(self.context):
            return self._error("crop", f"image {image} does not exist; images are numbered 1 to {len(self.context)}")
        values = [_number(v) for v in box] if isinstance(box, list) and len(box) == 4 else []
        if len(values) != 4 or any(v is None for v in values):
            return self._error("crop", 'crop needs "bbox_2d": [x1, y1, x2, y2] with four numbers')
        if self._free_slots() <= 0:
            return self._error("crop", f"image budget exhausted ({self.config.max_images} images); give your <answer> now")
        parent = self.context[image - 1]
        x1, y1, x2, y2 = values  # type: ignore[misc]
        if x2 <= x1 or y2 <= y1:
            return self._error("crop", f"degenerate box {values}: need x1 < x2 and y1 < y2")
        if max(values) > 1.0:  # pixel coordinates of image `image` as rendered
            rw, rh = self.shown_size(parent)
            x1, x2, y1, y2 = x1 / rw, x2 / rw, y1 / rh, y2 / rh
        if x2 <= 0 or y2 <= 0 or x1 >= 1 or y1 >= 1:
            return self._error("crop", f"box {values} lies outside image {image}")
        ref = ImageRef(parent.frame_index, parent.timestamp_s, self._compose(parent, (x1, y1, x2, y2)))
        return self._observe("crop", [ref], f"crop of image {image} returned 1 image.")

    def _compose(self, parent: ImageRef, box: tuple[float, float, float, float]) -> tuple[float, float, float, float]:
        """Map a box on ``parent`` to a padded, clamped, min-size box on the source frame, snapped to pixels."""
        px1, py1, px2, py2 = self.source_box(parent)
        pw, ph = px2 - px1, py2 - py1
        x1, y1, x2, y2 = px1 + box[0] * pw, py1 + box[1] * ph, px1 + box[2] * pw, py1 + box[3] * ph
        pad = self.config.crop_pad
        x1, x2 = _grow(x1 - pad * (x2 - x1), x2 + pad * (x2 - x1), px1, px2, self.config.crop_min_side)
        y1, y2 = _grow(y1 - pad * (y2 - y1), y2 + pad * (y2 - y1), py1, py2, self.config.crop_min_side)
        w, h = self.reader.width, self.reader.height
        return x1 / w, y1 / h, x2 / w, y2 / h

    def _observe(self, tool: str, refs: list[ImageRef], summary: str) -> ToolObservation:
        first = len(self.context) + 1
        self.context.extend(refs)
        labels = [self.describe(first + k, ref) for k, ref in enumerate(refs)]
        return ToolObservation(True, tool, refs, self.render_many(refs), " ".join([summary, *labels]))


def describe_image(number: int, ref: ImageRef, size: tuple[int, int]) -> str:
    """One-line label of context image ``number`` (1-based) shown next to it: where it comes from and its size."""
    where = f"frame {ref.frame_index} at {ref.timestamp_s:.2f}s"
    if ref.bbox is not None:
        where = f"crop [{', '.join(f'{v:.3f}' for v in ref.bbox)}] of {where}"
    return f"Image {number}: {where}, {size[0]}x{size[1]} px"


def _grow(lo: float, hi: float, low_limit: int, high_limit: int, min_side: int) -> tuple[int, int]:
    """Clamp [lo, hi] to the limits on whole pixels, then widen it around its centre to ``min_side``."""
    lo_i, hi_i = max(low_limit, math.floor(lo)), min(high_limit, math.ceil(hi))
    side = min(min_side, high_limit - low_limit)
    if hi_i - lo_i < side:
        lo_i = min(max(round((lo_i + hi_i - side) / 2), low_limit), high_limit - side)
        hi_i = lo_i + side
    return lo_i, hi_i
