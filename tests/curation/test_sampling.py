"""Frame sampling and near-duplicate filtering on real photos and their edits."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from videor4.contracts.media import uniform_indices
from videor4.curation.sampling import DedupeConfig, NearDuplicateFilter, fps_indices

IMAGES = Path(__file__).resolve().parents[1] / "data" / "images"


def load_rgb(name: str) -> np.ndarray:
    return cv2.cvtColor(cv2.imread(str(IMAGES / name)), cv2.COLOR_BGR2RGB)


def test_uniform_indices_are_segment_centres() -> None:
    assert uniform_indices(100, 4) == [12, 37, 62, 87]
    assert uniform_indices(10, 10) == list(range(10))
    assert uniform_indices(5, 8) == [0, 1, 2, 3, 4]
    assert uniform_indices(0, 8) == []
    for num_frames in range(1, 120):
        for n in (1, 3, 8, 16, 32):
            picked = uniform_indices(num_frames, n)
            assert picked == sorted(set(picked)) and len(picked) == min(n, num_frames)
            assert 0 <= picked[0] and picked[-1] < num_frames
    with pytest.raises(ValueError):
        uniform_indices(10, 0)


def test_fps_indices_follow_time() -> None:
    assert fps_indices(30, native_fps=30, target_fps=10) == list(range(0, 30, 3))
    assert fps_indices(31, native_fps=30, target_fps=10)[-1] == 30
    assert fps_indices(25, native_fps=25, target_fps=2) == [0, 12]  # 0.0 s, 0.5 s (frame 12.5 -> 12)
    assert fps_indices(12, native_fps=10, target_fps=30) == list(range(12))
    with pytest.raises(ValueError):
        fps_indices(10, native_fps=0, target_fps=1)


def caption(image: np.ndarray, text: str) -> np.ndarray:
    """The same shot with a small caption burnt in, like a subtitle change in a text-rich video."""
    out = image.copy()
    cv2.putText(out, text, (20, image.shape[0] - 20), cv2.FONT_HERSHEY_SIMPLEX, 0.9, (255, 255, 255), 2)
    return out


@pytest.mark.parametrize("method", ["thumb", "dhash"])
def test_duplicates_dropped_cuts_kept_and_representatives_recorded(method: str) -> None:
    hotel = load_rgb("scenetext_segmented_word01.jpg")
    shop = load_rgb("scenetext_segmented_word02.jpg")
    rng = np.random.default_rng(0)
    noisy = np.clip(hotel.astype(int) + rng.integers(-3, 4, hotel.shape), 0, 255).astype(np.uint8)
    reencoded = cv2.imdecode(cv2.imencode(".jpg", hotel, [cv2.IMWRITE_JPEG_QUALITY, 60])[1], cv2.IMREAD_COLOR)
    stream = [(0, hotel), (1, hotel.copy()), (2, noisy), (3, reencoded), (4, shop), (5, shop), (7, hotel)]
    dedupe = NearDuplicateFilter(DedupeConfig(method=method))
    kept = [index for index, image in stream if dedupe.keep(index, image)]
    assert kept == [0, 4, 7]
    assert dedupe.representative == {0: 0, 1: 0, 2: 0, 3: 0, 4: 4, 5: 4, 7: 7}


def test_thumb_keeps_a_changed_caption() -> None:
    # A new subtitle on an otherwise identical shot is new text: it must reach OCR.
    shot = load_rgb("scenetext_segmented_word02.jpg")
    dedupe = NearDuplicateFilter(DedupeConfig(method="thumb"))
    flags = [dedupe.keep(i, image) for i, image in enumerate([shot, caption(shot, "Open 9-5"), caption(shot, "Open 9-5")])]
    assert flags == [True, True, False]


def test_slow_drift_is_measured_against_the_last_kept_frame() -> None:
    image = load_rgb("scenetext_segmented_word01.jpg").astype(int)
    dedupe = NearDuplicateFilter(DedupeConfig(method="thumb", pixel_delta=12))
    # A fade by 1 grey level per frame: each step alone is far below the threshold,
    # 13 steps from the last kept frame are not.
    kept = [i for i in range(40) if dedupe.keep(i, np.clip(image - i, 0, 255).astype(np.uint8))]
    assert kept == [0, 13, 26, 39]
    assert dedupe.representative[12] == 0 and dedupe.representative[13] == 13 and dedupe.representative[25] == 13


def test_none_keeps_everything_and_order_is_enforced() -> None:
    image = load_rgb("scenetext_word02.jpg")
    dedupe = NearDuplicateFilter(DedupeConfig(method="none"))
    assert all(dedupe.keep(i, image) for i in range(5))
    assert dedupe.representative == {i: i for i in range(5)}
    with pytest.raises(ValueError, match="ascending"):
        dedupe.keep(3, image)
