"""Motion-compensated OCR: read a shot once, then follow its text instead of re-reading it.

Why: OCR costs ~0.3–0.4 s per frame on two cores, and consecutive frames of a text-rich clip mostly show
the *same* text, moved by a pan, a zoom or camera shake. Exact near-duplicate dropping
(:class:`~videor4.curation.sampling.NearDuplicateFilter`) catches only still frames. The tracker
estimates the global motion between the last frame it read (the *reference*) and the current frame
from sparse optical flow (a few hundred corners, pyramidal Lucas–Kanade, RANSAC similarity fit on a
320-pixel-wide grey copy: ~2–4 ms), warps the reference onto the current frame and compares them:

* nothing changed → the reference's text boxes, moved by the motion, are the frame's OCR (no model call);
* a few regions changed (a new caption, a ticker, the strip a pan brought into view) → only those
  regions are read, the rest is carried over, and the current frame becomes the reference;
* the motion cannot be estimated (a cut), much of the picture changed, or the picture was zoomed by
  more than ``max_scale_change`` since the last whole read (text that was too small may now be
  readable) → the whole frame is read again — where it has any contrast (flat parts hold no text; a blank
  frame costs nothing).

A still picture whose content changed (a screen recording, a slide deck) defeats the motion fit but not the
in-place comparison, so it is read where it changed rather than as a cut. Lines detected in re-read pixels that
did not change keep their text without reaching the recogniser; the rest of a frame's regions are recognised in
one batch.

The recall cost of this is measured against OCR on every frame by ``make bench``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import cv2
import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from videor4.contracts.boxes import box_area, box_iou
from videor4.curation.evidence import box_union
from videor4.curation.ocr import LineRecognizer, OCRBackend, OCRConfig, TextBox, detection_scale


class TrackingConfig(BaseModel):
    """When text read on an earlier frame may stand for the current frame's."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    method: Literal["motion", "none"] = Field(
        "motion", description="'motion': read a frame once and follow its text through camera motion, "
        "re-reading only changed regions; 'none': read every kept frame whole.")
    analysis_width: int = Field(320, ge=64, description="width of the grey copy motion is estimated on (pixels)")
    max_corners: int = Field(300, ge=8, description="corners tracked from the reference frame")
    min_inliers: int = Field(12, ge=3, description="fewer motion inliers than this = a cut: read the whole frame")
    min_inlier_fraction: float = Field(
        0.3, gt=0, le=1, description="and at least this share of the reliably tracked corners must agree on one "
        "motion (moving people and parallax disagree; the regions they change are re-read anyway)")
    cell_px: int = Field(8, ge=2, description="changed-region grid cell, in analysis pixels (8 = 24 px at 960 wide)")
    pixel_delta: float = Field(
        12.0, gt=0, description="a cell changed when its mean grey difference after motion compensation "
        "exceeds this (0-255)")
    max_changed_fraction: float = Field(
        0.35, ge=0, le=1, description="more changed area than this: read the whole frame (cheaper than pieces)")
    max_scale_change: float = Field(
        1.2, gt=1, description="read the whole frame again once the picture is zoomed in or out by this "
        "factor since its last whole read")
    margin_px: int = Field(16, ge=0, description="pixels added around a changed region before it is read")
    ink_contrast: float = Field(
        8.0, ge=0, description="a whole-frame read detects text only where the frame has local contrast above this "
        "(grey levels, morphological gradient at half resolution): flat parts cannot hold legible text, and a "
        "frame without any (a black or blank screen) costs no model call. 0: always detect in the whole frame")
    recheck_interval_s: float = Field(
        0.5, ge=0, description="within a shot, changes are re-read at most this often (seconds of video); "
        "in between, the last read's text is carried along the motion. Cuts are read at once. Text that "
        "stays on screen at least this long is never missed; 0 re-reads every changed frame.")


@dataclass
class TrackingCounters:
    """What the tracker did, for the run's stats.json."""

    full_reads: int = 0
    blank_frames: int = 0  # whole reads that needed no model call: nothing in the frame can hold text
    cuts: int = 0  # whole reads because the motion was lost (first frame, cut, flat picture that changed)
    zoom_reads: int = 0  # whole reads because the picture was zoomed by max_scale_change
    change_reads: int = 0  # whole reads because more than max_changed_fraction changed
    still_changes: int = 0  # motion lost but the picture did not move (a screen or slide whose content changed):
    #                         read as changed regions, not as a cut
    region_reads: int = 0
    tracked_frames: int = 0  # frames whose text came (at least partly) from an earlier read
    lines_recognized: int = 0  # text lines the recogniser read
    lines_unchanged: int = 0  # lines detected again in re-read pixels that had not changed: earlier text kept


def _warp_points(points: tuple[float, ...], m: np.ndarray) -> tuple[float, ...]:
    xy = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    out = xy @ m[:, :2].T + m[:, 2]
    return tuple(float(v) for v in out.reshape(-1))


def _overlaps(a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def _unchanged_line(box: tuple[float, float, float, float], carried: Sequence[TextBox], changed: np.ndarray,
                    cell: float) -> TextBox | None:
    """The carried line at ``box`` (frame pixels) when no cell under the box changed, else None.

    ``changed`` is the tracker's grid of changed cells (``cell`` frame pixels square); a box reaching past the
    grid (the frame's right or bottom strip) counts as changed.
    """
    x1, y1, x2, y2 = box
    gx1, gy1 = max(0, math.floor(x1 / cell)), max(0, math.floor(y1 / cell))
    gx2, gy2 = math.ceil(x2 / cell), math.ceil(y2 / cell)
    if gx2 > changed.shape[1] or gy2 > changed.shape[0] or changed[gy1:gy2, gx1:gx2].any():
        return None
    best = max(carried, key=lambda b: box_iou(b.bbox, box), default=None)
    return best if best is not None and box_iou(best.bbox, box) >= 0.6 else None


class TextTracker:
    """Per-video OCR front-end; feed frames in order (it keeps the reference frame's state)."""

    def __init__(self, ocr: OCRBackend, ocr_config: OCRConfig, config: TrackingConfig = TrackingConfig()) -> None:
        self.ocr, self.ocr_config, self.config = ocr, ocr_config, config
        self.counters = TrackingCounters()
        self._ref: np.ndarray | None = None  # grey analysis copy of the reference frame
        self._ref_corners: np.ndarray | None = None
        self._ref_boxes: list[TextBox] = []
        self._scale_since_read = 1.0
        self._read_at = -math.inf  # timestamp of the reference frame

    # -- public ---------------------------------------------------------------------------------
    def read(self, image: np.ndarray, timestamp: float, *, last: bool = False) -> list[TextBox]:
        """The text boxes of ``image`` (RGB, whole frame, shown at ``timestamp`` s), from the model or carried.

        ``last``: the video's last frame is always checked for changes, so text that appears in its final
        ``recheck_interval_s`` is not lost.
        """
        if self.config.method == "none":  # every frame read whole: the reference recall is measured against
            self.counters.full_reads += 1
            boxes = self.ocr.read(image)
            self.counters.lines_recognized += len(boxes)
            return boxes
        h, w = image.shape[:2]
        f = self.config.analysis_width / w
        self._full_grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY) if image.ndim == 3 else image
        grey = cv2.resize(self._full_grey, (self.config.analysis_width, max(8, round(h * f))),
                          interpolation=cv2.INTER_AREA)
        motion = self._motion(grey) if self._ref is not None else None
        changed = None
        if motion is None and self._ref is not None and self._ref.shape == grey.shape:
            # No motion fits, yet the picture may not have moved at all: a screen recording or a slide deck whose
            # content changed. Then only what changed is read, and unchanged lines (a slide's footer) are kept.
            changed = self._changed_cells(grey, np.eye(2, 3))
            if changed.mean() <= self.config.max_changed_fraction:
                motion = np.eye(2, 3)
                self.counters.still_changes += 1
        if motion is None:
            self.counters.cuts += 1
            return self._read_whole(image, grey, timestamp)
        full = motion.copy()
        full[:, 2] /= f  # analysis pixels -> frame pixels (same linear part: both images scale by f)
        carried = self._carry(self._ref_boxes, full, w, h)
        if changed is None and not last and timestamp - self._read_at < self.config.recheck_interval_s - 1e-6:
            self.counters.tracked_frames += 1
            return carried  # same shot, read moments ago: follow its text, look for changes later
        zoom = self._scale_since_read * math.sqrt(abs(float(np.linalg.det(motion[:, :2]))))
        if abs(math.log(zoom)) > math.log(self.config.max_scale_change):
            self.counters.zoom_reads += 1
            return self._read_whole(image, grey, timestamp)
        changed = self._changed_cells(grey, motion) if changed is None else changed
        if changed.mean() > self.config.max_changed_fraction:
            self.counters.change_reads += 1
            return self._read_whole(image, grey, timestamp, carried, changed, zoom)
        if not changed.any():
            self.counters.tracked_frames += 1
            return carried  # the reference stays: later frames are compared with it, so drift cannot pile up
        regions = self._regions(changed, f, w, h, carried)
        if sum((x2 - x1) * (y2 - y1) for x1, y1, x2, y2 in regions) > 2 * self.config.max_changed_fraction * w * h:
            self.counters.change_reads += 1
            return self._read_whole(image, grey, timestamp, carried, changed, zoom)
        self.counters.tracked_frames += 1
        self.counters.region_reads += len(regions)
        kept = [b for b in carried if not any(_overlaps(b.bbox, r) for r in regions)]
        fresh: list[TextBox] = []
        for box in self._read_regions(image, regions, carried, changed):
            # Overlapping regions may read the same line twice; keep it once.
            if not any(o.text == box.text and box_iou(o.bbox, box.bbox) > 0.5 for o in fresh):
                fresh.append(box)
        kept += fresh
        self._set_reference(grey, kept, zoom, timestamp)
        return kept

    # -- internals ------------------------------------------------------------------------------
    def _read_whole(self, image: np.ndarray, grey: np.ndarray, timestamp: float, carried: Sequence[TextBox] = (),
                    changed: np.ndarray | None = None, zoom: float = 1.0) -> list[TextBox]:
        """Read the whole frame; with ``carried``/``changed`` (the motion is known), lines whose pixels did not
        change keep their text. The zoom since the last whole read restarts unless only content changed."""
        self.counters.full_reads += 1
        regions = self._ink_regions(image, grey)
        boxes = self._read_regions(image, regions, carried, changed) if regions else []
        self.counters.blank_frames += not regions
        self._set_reference(grey, boxes, zoom if carried else 1.0, timestamp)
        return boxes

    def _ink_regions(self, image: np.ndarray, grey: np.ndarray) -> list[tuple[int, int, int, int]]:
        """The parts of a frame that can hold text: where local contrast reaches ``ink_contrast``.

        A cheap gate before the detector (a few ms): screens, slides and captions on flat backgrounds leave
        much of a frame flat. The parts are built like changed regions (cells, grown by a cell and a margin);
        when they cover most of the frame, the frame is read whole in one call.
        """
        h, w = image.shape[:2]
        if self.config.ink_contrast <= 0:
            return [(0, 0, w, h)]
        half = cv2.resize(self._full_grey, (max(1, w // 2), max(1, h // 2)), interpolation=cv2.INTER_AREA)
        gradient = cv2.morphologyEx(half, cv2.MORPH_GRADIENT, np.ones((3, 3), np.uint8))
        ink = cv2.resize((gradient > self.config.ink_contrast).astype(np.uint8), grey.shape[::-1],
                         interpolation=cv2.INTER_AREA) > 0
        if not ink.any():
            return []
        c = self.config.cell_px
        gh, gw = ink.shape[0] // c, ink.shape[1] // c
        cells = ink[: gh * c, : gw * c].reshape(gh, c, gw, c).any(axis=(1, 3))
        cells[-1, :] |= ink[gh * c - c:, : gw * c].reshape(-1, gw, c).any(axis=(0, 2))  # the strips the grid's
        cells[:, -1] |= ink[: gh * c, gw * c - c:].reshape(gh, c, -1).any(axis=(1, 2))  # last cells leave out
        regions = self._regions(cells, self.config.analysis_width / w, w, h, [])
        if sum((x2 - x1) * (y2 - y1) for x1, y1, x2, y2 in regions) > 0.7 * w * h:
            return [(0, 0, w, h)]
        return regions

    def _read_regions(self, image: np.ndarray, regions: Sequence[tuple[int, int, int, int]],
                      carried: Sequence[TextBox] = (), changed: np.ndarray | None = None) -> list[TextBox]:
        """The text of ``regions`` of ``image`` (frame pixels), all regions in one batch.

        With an engine whose detection and recognition are separate steps, a detected line lying in cells that
        did not change since the reference, at the place of a carried line, keeps that line's text: only lines
        that can read differently reach the recogniser (the same rule by which whole unchanged frames carry
        their text).
        """
        det_scale = detection_scale(image.shape, self.ocr_config)
        if not isinstance(self.ocr, LineRecognizer):
            boxes = self.ocr.read_regions(image, regions, det_scale)
            self.counters.lines_recognized += len(boxes)
            return boxes
        quads = self.ocr.detect_regions(image, regions, det_scale)
        same: dict[int, TextBox] = {}
        if carried and changed is not None:
            cell = self.config.cell_px * image.shape[1] / self.config.analysis_width
            for i, quad in enumerate(quads):
                old = _unchanged_line(TextBox("", 0.0, tuple(quad)).bbox, carried, changed, cell)
                if old is not None:
                    same[i] = TextBox(old.text, old.score, tuple(quad))
        todo = [i for i in range(len(quads)) if i not in same]
        read = dict(zip(todo, self.ocr.recognize(image, [quads[i] for i in todo])))
        self.counters.lines_unchanged += len(same)
        self.counters.lines_recognized += len(todo)
        # Detection order (reading order per region), as a whole read gives it.
        out = [same.get(i) or read.get(i) for i in range(len(quads))]
        return [b for b in out if b is not None]

    def _set_reference(self, grey: np.ndarray, boxes: list[TextBox], zoom: float, timestamp: float) -> None:
        self._ref, self._ref_boxes, self._scale_since_read, self._read_at = grey, boxes, zoom, timestamp
        self._ref_corners = cv2.goodFeaturesToTrack(grey, self.config.max_corners, 0.01, 5, blockSize=5)

    def _motion(self, grey: np.ndarray) -> np.ndarray | None:
        """2x3 similarity from the reference to ``grey`` (analysis pixels), or None for a cut."""
        c = self.config
        ref, p0 = self._ref, self._ref_corners
        assert ref is not None
        if ref.shape != grey.shape:
            return None
        if p0 is None or len(p0) < c.min_inliers:
            # A nearly flat picture (a plain slide): no corners to follow; call it still if it is.
            return np.eye(2, 3) if float(cv2.absdiff(ref, grey).mean()) < c.pixel_delta / 4 else None
        lk = {"winSize": (21, 21), "maxLevel": 3,
              "criteria": (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 20, 0.03)}
        p1, st, _ = cv2.calcOpticalFlowPyrLK(ref, grey, p0, None, **lk)
        back, st_back, _ = cv2.calcOpticalFlowPyrLK(grey, ref, p1, None, **lk)
        ok = (st.ravel() == 1) & (st_back.ravel() == 1) & (np.linalg.norm((back - p0).reshape(-1, 2), axis=1) < 1.0)
        if int(ok.sum()) < c.min_inliers:
            return None
        m, inliers = cv2.estimateAffinePartial2D(p0[ok], p1[ok], method=cv2.RANSAC, ransacReprojThreshold=1.0)
        if m is None or inliers is None:
            return None
        n = int(inliers.sum())
        if n < c.min_inliers or n < c.min_inlier_fraction * int(ok.sum()):
            return None
        return m

    def _changed_cells(self, grey: np.ndarray, motion: np.ndarray) -> np.ndarray:
        """Boolean grid: cells that differ from the motion-compensated reference, or were not in view."""
        h, w = grey.shape
        c = self.config.cell_px
        warped = cv2.warpAffine(self._ref, motion, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
        seen = cv2.warpAffine(np.full((h, w), 255, np.uint8), motion, (w, h), flags=cv2.INTER_NEAREST)
        diff = cv2.absdiff(cv2.GaussianBlur(grey, (3, 3), 0), cv2.GaussianBlur(warped, (3, 3), 0))
        gh, gw = h // c, w // c
        cells = diff[: gh * c, : gw * c].reshape(gh, c, gw, c).mean(axis=(1, 3))
        visible = seen[: gh * c, : gw * c].reshape(gh, c, gw, c).min(axis=(1, 3)) > 0
        return (cells > self.config.pixel_delta) | ~visible

    def _regions(self, changed: np.ndarray, f: float, w: int, h: int,
                 carried: list[TextBox]) -> list[tuple[int, int, int, int]]:
        """Frame-pixel rectangles to re-read: changed cells grown by a margin, widened to whole text lines.

        Rectangles are built from runs of changed cells row by row, so an L-shaped change (the two strips
        a diagonal pan uncovers) gives two thin rectangles rather than one covering the whole frame.
        """
        mask = cv2.dilate(changed.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
        cell = self.config.cell_px / f
        pad = self.config.margin_px
        open_rects: list[list[int]] = []  # [x0, y0, x1, y1] in cells, y1 = last row + 1
        done: list[list[int]] = []
        for y, row in enumerate(mask):
            xs = np.flatnonzero(np.diff(np.concatenate(([0], row.astype(np.int8), [0]))))
            still_open = []
            for x0, x1 in zip(xs[0::2], xs[1::2]):
                match = None
                for r in open_rects:
                    overlap = min(r[2], x1) - max(r[0], x0)
                    if r[3] == y and overlap > 0.5 * max(r[2] - r[0], x1 - x0):
                        match = r
                        break
                if match is not None:
                    open_rects.remove(match)
                    match[:] = [min(match[0], x0), match[1], max(match[2], x1), y + 1]
                    still_open.append(match)
                else:
                    still_open.append([int(x0), y, int(x1), y + 1])
            done += [r for r in open_rects]
            open_rects = still_open
        done += open_rects
        rects = [[x0 * cell - pad, y0 * cell - pad, x1 * cell + pad, y1 * cell + pad] for x0, y0, x1, y1 in done]
        # A carried line that a region cuts through is re-read whole, or half of it would be read twice.
        for r in rects:
            for b in carried:
                bx1, by1, bx2, by2 = b.bbox
                if _overlaps((bx1, by1, bx2, by2), tuple(r)):
                    r[:] = box_union(r, (bx1 - pad, by1 - pad, bx2 + pad, by2 + pad))
        # Merge rectangles whose union is barely larger than the two (one read instead of two).
        merged = True
        while merged:
            merged = False
            for i in range(len(rects)):
                for j in range(i + 1, len(rects)):
                    a, c = rects[i], rects[j]
                    union = box_union(a, c)
                    if box_area(union) <= 1.2 * (box_area(a) + box_area(c)):
                        rects[i] = list(union)
                        del rects[j]
                        merged = True
                        break
                if merged:
                    break
        out = []
        for x1, y1, x2, y2 in rects:
            x1, y1 = max(0, math.floor(x1)), max(0, math.floor(y1))
            x2, y2 = min(w, math.ceil(x2)), min(h, math.ceil(y2))
            if x2 - x1 >= 4 and y2 - y1 >= 4:
                out.append((x1, y1, x2, y2))
        return out

    @staticmethod
    def _carry(boxes: list[TextBox], m: np.ndarray, w: int, h: int) -> list[TextBox]:
        """Reference boxes moved by ``m``; lines whose centre left the picture are dropped."""
        out = []
        for b in boxes:
            pts = _warp_points(b.points, m)
            xs, ys = pts[0::2], pts[1::2]
            cx, cy = sum(xs) / len(xs), sum(ys) / len(ys)
            if 0 <= cx < w and 0 <= cy < h:
                clipped = tuple(min(max(v, 0.0), float(w if i % 2 == 0 else h)) for i, v in enumerate(pts))
                out.append(TextBox(b.text, b.score, clipped))
        return out
