"""Axis-aligned boxes ``(x1, y1, x2, y2)``: the one overlap measure shared by curation (tracking text lines across
frames) and training (scoring the boxes a model writes), in whatever unit both boxes share; and the words that name
where a normalized box is, which curation writes into the reasoning and the gold-view probe swaps."""

from __future__ import annotations

from collections.abc import Sequence


def box_area(box: Sequence[float]) -> float:
    return max(0.0, box[2] - box[0]) * max(0.0, box[3] - box[1])


def box_iou(a: Sequence[float], b: Sequence[float]) -> float:
    """Intersection over union; 0 for boxes that do not meet (and for two empty boxes)."""
    inter = box_area([max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3])])
    return inter / (box_area(a) + box_area(b) - inter or 1.0)


def position_phrase(bbox: Sequence[float]) -> str:
    """Where a normalized box's centre is, by thirds of the image: ``at the top left``, ``at the right``,
    ``in the centre``… (the reasoning's words before a crop; a box written after them should lie there)."""
    cx, cy = (bbox[0] + bbox[2]) / 2, (bbox[1] + bbox[3]) / 2
    v = "top" if cy < 1 / 3 else "bottom" if cy > 2 / 3 else "middle"
    h = "left" if cx < 1 / 3 else "right" if cx > 2 / 3 else "centre"
    return "in the centre" if (v, h) == ("middle", "centre") else f"at the {v} {h}".replace("middle ", "")
