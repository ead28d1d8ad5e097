"""The one box-overlap measure (curation's text tracking and the micro base's grounding score both use it)."""

from __future__ import annotations

import pytest

from videor4.contracts.boxes import box_area, box_iou


def test_iou_of_known_overlaps() -> None:
    assert box_iou((0, 0, 2, 2), (0, 0, 2, 2)) == 1.0
    assert box_iou((0, 0, 2, 2), (1, 0, 3, 2)) == pytest.approx(2 / 6)  # half of each: 2 / (4 + 4 - 2)
    assert box_iou((0, 0, 1, 1), (0, 0, 2, 2)) == pytest.approx(0.25)  # one inside the other
    assert box_iou((0, 0, 1, 1), (1, 0, 2, 1)) == 0.0  # touching edges do not overlap
    assert box_iou((0, 0, 1, 1), (5, 5, 6, 6)) == 0.0
    assert box_iou((0, 0, 0, 0), (0, 0, 0, 0)) == 0.0  # two empty boxes: no division by zero


def test_inverted_boxes_have_no_area() -> None:
    assert box_area((2, 2, 1, 1)) == 0.0
    assert box_iou((0, 0, 2, 2), (2, 2, 0, 0)) == 0.0
