"""The model's view of a sample: which frames it is shown, at what size, and what the tools return.

Trajectory text states sizes and coordinates ("Image 12: crop … 672x280 px", pixel boxes are read in the size
an image was shown at), so the pixels a model trains or is evaluated on must be rendered with the settings the
text was written with. :class:`ShardView` is those settings — the prompt's frame count and pixel budgets plus
the executor's budgets and crop geometry — recorded in full in every shard manifest (``manifest["view"]``).
Training, QC re-synthesis, the viewer and evaluation read it from there and refuse a conflicting setting
(:func:`check_view`), and every executor is built by :meth:`ShardView.executor`, the one factory.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from videor4.contracts.atomic import write_json_atomic
from videor4.contracts.errors import UserError
from videor4.contracts.executor import ClipCropExecutor, ImageRef, OpsConfig
from videor4.contracts.media import uniform_indices

if TYPE_CHECKING:
    from videor4.contracts.media import VideoReader


class PromptConfig(BaseModel):
    """What the model is shown: frame count, pixel budgets (which bound memory) and instructions."""

    model_config = ConfigDict(extra="forbid")

    num_frames: int = Field(8, ge=1, description="frames of the initial view, sampled uniformly over the video")
    frame_max_pixels: int = Field(
        128 * 28 * 28, ge=28 * 28, description="pixel budget of one frame (Video-R1 uses 128*28*28)"
    )
    crop_max_pixels: int = Field(256 * 28 * 28, ge=28 * 28, description="pixel budget of one crop observation")
    min_pixels: int = Field(56 * 56, ge=1, description="smallest image area (Qwen2.5-VL processor default)")
    resize_factor: int = Field(28, ge=1, description="image sides are multiples of patch_size * merge_size")
    tools: bool = Field(True, description="declare clip/crop; False gives the single-pass baseline prompt")


def display_size(config: PromptConfig, ref: ImageRef, size: tuple[int, int]) -> tuple[int, int]:
    """(w, h) an image of ``size`` is shown at: frames and crops each fitted to their pixel budget."""
    budget = config.frame_max_pixels if ref.bbox is None else config.crop_max_pixels
    w, h = size
    height, width = _smart_resize(h, w, config.resize_factor, config.min_pixels, budget)
    return width, height


def fit_image(config: PromptConfig, ref: ImageRef, image: np.ndarray) -> np.ndarray:
    """Resize to the displayed size, so the processor (same factor, wider limits) leaves it unchanged."""
    h, w = image.shape[:2]
    tw, th = display_size(config, ref, (w, h))
    if (tw, th) == (w, h):
        return image
    interp = cv2.INTER_AREA if tw * th < w * h else cv2.INTER_CUBIC
    return cv2.resize(image, (tw, th), interpolation=interp)


def _smart_resize(h: int, w: int, factor: int, min_pixels: int, max_pixels: int) -> tuple[int, int]:
    from transformers.models.qwen2_vl.image_processing_qwen2_vl import smart_resize

    return smart_resize(h, w, factor=factor, min_pixels=min_pixels, max_pixels=max_pixels)


# Fields of the view that do not change a single pixel or word of a trajectory: a consumer may differ there.
_FREE_FIELDS = {"ops": {"max_calls", "max_images"}, "prompt": {"tools"}}


class ShardView(BaseModel):
    """The view trajectories were synthesized with (and must be trained and evaluated with)."""

    model_config = ConfigDict(extra="forbid")

    prompt: PromptConfig = Field(default_factory=PromptConfig, description="frames, pixel budgets, tools on/off")
    ops: OpsConfig = Field(default_factory=OpsConfig, description="clip/crop budgets and crop geometry")

    def initial_frames(self, num_frames: int) -> list[int]:
        """The initial view of a video of ``num_frames`` frames: ``prompt.num_frames`` uniform frames."""
        return uniform_indices(num_frames, self.prompt.num_frames)

    def shown_size(self, ref: ImageRef, size: tuple[int, int]) -> tuple[int, int]:
        return display_size(self.prompt, ref, size)

    def executor(self, reader: VideoReader, initial_frames: Sequence[int] | None = None) -> ClipCropExecutor:
        """The one way to build an executor: this view's ops config and displayed sizes (so pixel boxes and
        image labels mean what the model was shown). ``initial_frames`` default to :meth:`initial_frames`."""
        frames = self.initial_frames(reader.num_frames) if initial_frames is None else list(initial_frames)
        prompt = self.prompt
        return ClipCropExecutor(reader, frames, self.ops, display_size=lambda ref, size: display_size(prompt, ref, size))


def differences(recorded: ShardView, used: ShardView, strict: bool = False) -> list[str]:
    """``section.field: recorded A, requested B`` for every setting that changes pixels or text (all: ``strict``)."""
    out = []
    for section in ("prompt", "ops"):
        a, b = getattr(recorded, section).model_dump(), getattr(used, section).model_dump()
        for key in sorted(a):
            if a[key] != b[key] and (strict or key not in _FREE_FIELDS.get(section, set())):
                out.append(f"{section}.{key}: recorded {a[key]!r}, requested {b[key]!r}")
    return out


def check_view(recorded: ShardView | None, used: ShardView, where: str) -> None:
    """Refuse to render a shard with a view that differs from the one its trajectories were written with."""
    if recorded is None:
        return
    diff = differences(recorded, used)
    if diff:
        raise UserError(f"{where}: conflicts with the recorded view the trajectories were written for "
                        f"({'; '.join(diff)}); drop the setting to use the recorded view, or re-curate with it")


def merge_view(recorded: ShardView | None, prompt: PromptConfig | None = None, ops: OpsConfig | None = None
               ) -> ShardView:
    """The recorded view with only the fields a user explicitly set (``model_fields_set``) replaced."""
    base = recorded or ShardView()

    def merged(section: str, requested: BaseModel | None) -> Any:
        current = getattr(base, section)
        if requested is None:
            return current
        data = current.model_dump()
        data.update({k: getattr(requested, k) for k in requested.model_fields_set})
        return type(current).model_validate(data)

    return ShardView(prompt=merged("prompt", prompt), ops=merged("ops", ops))


def resolve_view(recorded: ShardView | None, prompt: PromptConfig | None, ops: OpsConfig | None, where: str
                 ) -> ShardView:
    """What a consumer renders with: the recorded view, plus the user's settings where they change nothing the
    trajectories state (budgets, tools on/off); a conflicting setting is refused with both values named."""
    view = merge_view(recorded, prompt, ops)
    check_view(recorded, view, where)
    return view


def view_from_manifest(manifest: dict[str, Any]) -> ShardView | None:
    """The recorded view of a shard manifest (None for shards written before views were recorded)."""
    view = manifest.get("view")
    return None if view is None else ShardView.model_validate(view)


VIEW_FILE = "videor4_view.json"


def save_view(model_dir: Path, view: ShardView) -> Path:
    """Record next to a checkpoint the view it was trained with, so evaluation renders the same pixels."""
    return write_json_atomic(Path(model_dir) / VIEW_FILE, view.model_dump(mode="json"), indent=2)


def load_view(model_dir: Path) -> ShardView | None:
    path = Path(model_dir) / VIEW_FILE
    if not path.is_file():
        return None
    try:
        return ShardView.model_validate_json(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise UserError(f"{path}: not a valid view record ({str(exc).splitlines()[0]})") from None
