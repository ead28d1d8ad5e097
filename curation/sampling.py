"""Which frames to look at: uniform/fps sampling and near-duplicate dropping.

OCR costs ~0.4 s per 960x540 frame on two CPU cores, while text-rich clips hold many
frames that are pixel-for-pixel the same shot. Sampling bounds the count;
:class:`NearDuplicateFilter` skips frames that look like the last frame kept
and remembers which kept frame stands for each skipped one, so OCR results
computed on the kept frame can be copied to the frames it represents.
"""

from __future__ import annotations

import math
from typing import Literal

import cv2
import numpy as np
from pydantic import BaseModel, ConfigDict, Field

THUMB_SIZE = (64, 36)  # (w, h): 20x20-pixel cells on 1280x720, small enough to average out codec noise
_DHASH_SIZE = 8  # 8x8 = 64-bit difference hash


def fps_indices(num_frames: int, native_fps: float, target_fps: float) -> list[int]:
    """Frames at ``target_fps``: the frame shown at each time ``k / target_fps``.

    Every frame when the target rate is not below the native one.
    """
    if native_fps <= 0 or target_fps <= 0:
        raise ValueError(f"frame rates must be positive, got native={native_fps}, target={target_fps}")
    if target_fps >= native_fps:
        return list(range(max(num_frames, 0)))
    step = native_fps / target_fps
    return [int(k * step) for k in range(math.ceil(num_frames / step))]


class DedupeConfig(BaseModel):
    """When a frame counts as a near-duplicate of the last kept frame."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    method: Literal["thumb", "dhash", "none"] = Field(
        "thumb",
        description="'thumb': compare 64x36 grayscale thumbnails cell by cell (sensitive to small "
        "text changes); 'dhash': 64-bit difference hash (cheaper, tolerant, may miss a changed "
        "caption); 'none': keep every frame.",
    )
    pixel_delta: float = Field(
        12.0, gt=0, description="thumb: grey levels (0-255) a thumbnail cell must change by to count as changed."
    )
    max_changed_fraction: float = Field(
        0.001,
        ge=0,
        le=1,
        description="thumb: a frame is a duplicate when at most this fraction of cells changed "
        "(0.001 of 64x36 = 2 cells, about 0.1% of the picture).",
    )
    max_hamming: int = Field(4, ge=0, le=64, description="dhash: a frame is a duplicate within this many differing bits.")


class NearDuplicateFilter:
    """Streaming near-duplicate filter; feed frames in ascending index order.

    Each frame is compared with the last *kept* frame (not the previous one),
    so a slow pan cannot drift away unnoticed one small step at a time.
    """

    def __init__(self, config: DedupeConfig = DedupeConfig()) -> None:
        self.config = config
        # Every frame fed so far -> the kept frame that stands for it (kept frames map to themselves).
        self.representative: dict[int, int] = {}
        self._last_fed = -1
        self._last_index = -1  # last kept frame
        self._last_signature: np.ndarray | None = None

    def keep(self, frame_index: int, image: np.ndarray, signature: np.ndarray | None = None) -> bool:
        """True if ``image`` differs enough from the last kept frame to be processed.

        ``signature``: :meth:`signature` of ``image`` when the caller computed it already (e.g. on the thread that
        decodes frames ahead); computed here otherwise.
        """
        if frame_index <= self._last_fed:
            raise ValueError(f"frames must be fed in ascending order, got {frame_index} after {self._last_fed}")
        self._last_fed = frame_index
        if signature is None:
            signature = self.signature(image)
        if self._last_signature is not None and signature is not None and self._is_duplicate(signature):
            self.representative[frame_index] = self._last_index
            return False
        self._last_index, self._last_signature = frame_index, signature
        self.representative[frame_index] = frame_index
        return True

    def signature(self, image: np.ndarray) -> np.ndarray | None:
        """What two frames are compared by (``None`` when the filter keeps every frame); a pure function of the
        image, so it may be computed on any thread."""
        if self.config.method == "none":
            return None
        gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY) if image.ndim == 3 else image
        if self.config.method == "thumb":
            return cv2.resize(gray, THUMB_SIZE, interpolation=cv2.INTER_AREA).astype(np.int16)
        small = cv2.resize(gray, (_DHASH_SIZE + 1, _DHASH_SIZE), interpolation=cv2.INTER_AREA)
        return (small[:, 1:] > small[:, :-1]).ravel()

    def _is_duplicate(self, signature: np.ndarray) -> bool:
        assert self._last_signature is not None  # for the type checker: keep() only calls after a kept frame
        if self.config.method == "thumb":
            changed = np.abs(signature - self._last_signature) > self.config.pixel_delta
            return float(changed.mean()) <= self.config.max_changed_fraction
        return int(np.count_nonzero(signature != self._last_signature)) <= self.config.max_hamming
