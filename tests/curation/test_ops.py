"""Tests for the shared clip/crop executor.

The executor is tested against an in-memory ``VideoReader`` (random frames, 10 fps) so crops can be
compared pixel by pixel with numpy slicing of the known source; one test also runs it on a real decoded
video through ``videor4.contracts.media.open_video``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence

import numpy as np
import pytest

from videor4.contracts.executor import ClipCropExecutor, ImageRef, OpsConfig
from videor4.contracts.tool_protocol import ToolCall, ToolCallError, format_tool_call, parse_tool_calls

W, H, FPS, N = 320, 180, 10.0, 30


class ArrayReader:
    """A VideoReader over a numpy array; counts decoded frames so caching can be checked."""

    backend = "array"

    def __init__(self, frames: np.ndarray, fps: float = FPS, video_id: str = "00001"):
        self.frames, self.fps, self.video_id = frames, fps, video_id
        self.num_frames, self.height, self.width = frames.shape[:3]
        self.decoded = 0

    def timestamp(self, frame_index: int) -> float:
        return frame_index / self.fps

    def frame_at(self, t: float) -> int:
        return int(min(max(round(t * self.fps), 0), self.num_frames - 1))

    def read(self, indices: Sequence[int]) -> Iterator[tuple[int, np.ndarray]]:
        for i in sorted(indices):
            self.decoded += 1
            yield i, self.frames[i].copy()

    def close(self) -> None:
        pass


@pytest.fixture
def frames() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, size=(N, H, W, 3), dtype=np.uint8)


def make(frames: np.ndarray, initial=(0, 10, 20), **cfg) -> ClipCropExecutor:
    return ClipCropExecutor(ArrayReader(frames), list(initial), OpsConfig(**cfg))


def crop_call(image: int, box) -> ToolCall:
    return ToolCall("crop", {"image": image, "bbox_2d": list(box)})


# -- parsing ---------------------------------------------------------------------------------------------------
def test_format_parse_round_trip() -> None:
    calls = [ToolCall("clip", {"start": 0.5, "end": 1.25}), crop_call(2, [0.1, 0.2, 0.3, 0.4])]
    text = "<think>look closer</think>\n" + "\n".join(format_tool_call(c) for c in calls)
    assert parse_tool_calls(text) == calls
    assert format_tool_call(calls[0]).startswith("<tool_call>\n{") and text.endswith("}\n</tool_call>")


def test_parse_errors_and_unterminated_block() -> None:
    parsed = parse_tool_calls(
        '<tool_call>{"name": "clip", "arguments": {"start": 1,}}</tool_call>'
        "<tool_call>[1, 2]</tool_call>"
        '<tool_call>{"name": "crop", "arguments": "x"}</tool_call>'
        '<tool_call>{"name": "clip", "arguments": {"start": 0, "end": 1}}'
    )
    assert [type(p) for p in parsed] == [ToolCallError, ToolCallError, ToolCallError, ToolCall]
    assert "not valid JSON" in parsed[0].message
    assert parse_tool_calls("no calls here <answer>5</answer>") == []


# -- crop ------------------------------------------------------------------------------------------------------
def test_normalized_crop_pixels_and_render(frames) -> None:
    ex = make(frames, crop_pad=0.0, crop_short_side=1)  # no pad, no upscale: exact slice
    obs = ex.execute(crop_call(2, [0.25, 0.5, 0.75, 1.0]))
    assert obs.ok and obs.tool == "crop" and len(ex.context) == 4
    (ref,) = obs.refs
    assert ref == ImageRef(10, 1.0, (0.25, 0.5, 0.75, 1.0))
    np.testing.assert_array_equal(obs.images[0], frames[10, 90:180, 80:240])
    np.testing.assert_array_equal(ex.render(ref), obs.images[0])
    assert "Image 4: crop [0.250, 0.500, 0.750, 1.000] of frame 10 at 1.00s, 160x90 px" in obs.message


def test_pixel_box_equals_normalized_box(frames) -> None:
    a = make(frames).execute(crop_call(1, [32, 18, 160, 90]))
    b = make(frames).execute(crop_call(1, [0.1, 0.1, 0.5, 0.5]))
    assert a.ok and a.refs == b.refs
    np.testing.assert_array_equal(a.images[0], b.images[0])


def test_padding_and_upscaling(frames) -> None:
    ex = make(frames, crop_pad=0.1, crop_short_side=112, crop_max_pixels=300 * 300)
    obs = ex.execute(crop_call(1, [100, 50, 200, 100]))  # 100x50 px box -> pad 10/5 px each side
    assert ex.source_box(obs.refs[0]) == (90, 45, 210, 105)
    h, w = obs.images[0].shape[:2]
    assert min(h, w) >= 112 and h * w <= 300 * 300 and (w, h) == ex.rendered_size(obs.refs[0])


def test_tiny_box_grows_to_min_side(frames) -> None:
    ex = make(frames, crop_pad=0.0, crop_short_side=1)
    obs = ex.execute(crop_call(1, [0.5, 0.5, 0.501, 0.502]))
    x1, y1, x2, y2 = ex.source_box(obs.refs[0])
    assert (x2 - x1, y2 - y1) == (28, 28) and x1 <= 160 <= x2 and y1 <= 90 <= y2
    # A tiny box in the corner stays inside the frame.
    corner = ex.execute(crop_call(1, [0.999, 0.999, 1.0, 1.0]))
    assert ex.source_box(corner.refs[0]) == (W - 28, H - 28, W, H)
    assert corner.images[0].shape[:2] == (28, 28)


def test_box_past_edge_is_clamped(frames) -> None:
    ex = make(frames, crop_pad=0.0, crop_short_side=1)
    obs = ex.execute(crop_call(1, [200, 100, 400, 250]))  # pixel box beyond 320x180
    assert obs.ok and ex.source_box(obs.refs[0]) == (200, 100, W, H)
    neg = ex.execute(crop_call(1, [-0.2, -0.1, 0.5, 0.5]))
    assert neg.ok and ex.source_box(neg.refs[0]) == (0, 0, 160, 90)


def test_crop_of_crop_composes(frames) -> None:
    ex = make(frames, crop_pad=0.1)
    first = ex.execute(crop_call(3, [0.2, 0.2, 0.8, 0.8]))
    second = ex.execute(crop_call(4, [0.5, 0.0, 1.0, 0.5]))  # image 4 = the first crop (upscaled)
    ref = second.refs[0]
    assert ref.frame_index == 20 and first.ok and second.ok
    # The composed box lies inside the first crop and renders like a direct, unpadded crop of the frame.
    p, c = ex.source_box(first.refs[0]), ex.source_box(ref)
    assert p[0] <= c[0] < c[2] <= p[2] and p[1] <= c[1] < c[3] <= p[3]
    direct = make(frames, crop_pad=0.0).execute(crop_call(3, list(ref.bbox)))
    assert direct.refs[0] == ref
    np.testing.assert_array_equal(direct.images[0], second.images[0])
    np.testing.assert_array_equal(ex.render(ref), second.images[0])


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        ({"image": 9, "bbox_2d": [0, 0, 1, 1]}, "does not exist"),
        ({"image": 0, "bbox_2d": [0, 0, 1, 1]}, "does not exist"),
        ({"image": "1", "bbox_2d": [0, 0, 1, 1]}, "integer"),
        ({"image": 1}, "bbox_2d"),
        ({"image": 1, "bbox_2d": [0, 0, 1]}, "bbox_2d"),
        ({"image": 1, "bbox_2d": [0.5, 0.2, 0.4, 0.6]}, "degenerate"),
        ({"image": 1, "bbox_2d": [0.3, 0.3, 0.3, 0.6]}, "degenerate"),
        ({"image": 1, "bbox_2d": [400, 200, 500, 300]}, "outside"),
    ],
)
def test_crop_errors(frames, args, needle) -> None:
    ex = make(frames)
    obs = ex.execute(ToolCall("crop", args))
    assert not obs.ok and needle in obs.message and obs.images == [] and obs.refs == []
    assert len(ex.context) == 3 and ex.calls_made == 1


# -- clip ------------------------------------------------------------------------------------------------------
def test_clip_returns_new_uniform_frames(frames) -> None:
    reader = ArrayReader(frames)
    ex = ClipCropExecutor(reader, [0, 10, 20], OpsConfig(clip_frames=4))
    obs = ex.execute(ToolCall("clip", {"start": 0.5, "end": 1.5}))  # frames 5..15 minus 10
    idx = [r.frame_index for r in obs.refs]
    assert obs.ok and len(idx) == 4 and 10 not in idx and idx == sorted(idx)
    assert all(5 <= i <= 15 for i in idx) and idx[-1] - idx[0] >= 6  # spread over the window
    for ref, img in zip(obs.refs, obs.images):
        assert ref.bbox is None and ref.timestamp_s == pytest.approx(ref.frame_index / FPS)
        np.testing.assert_array_equal(img, frames[ref.frame_index])
    assert "Image 4: frame" in obs.message and "Image 7: frame" in obs.message
    # A second clip over the same window only returns frames not seen yet.
    again = ex.execute(ToolCall("clip", {"start": 0.5, "end": 1.5}))
    assert not set(r.frame_index for r in again.refs) & set(idx + [10])


def test_clip_past_end_is_clamped(frames) -> None:
    ex = make(frames, initial=[0])
    obs = ex.execute(ToolCall("clip", {"start": 2.5, "end": 99}))
    assert obs.ok and [r.frame_index for r in obs.refs] and max(r.frame_index for r in obs.refs) <= N - 1
    assert min(r.frame_index for r in obs.refs) >= 25


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        ({"start": 2.0, "end": 1.0}, "inverted"),
        ({"start": 1.0, "end": 1.0}, "empty"),
        ({"start": 3.5, "end": 5.0}, "outside the video"),
        ({"start": -5.0, "end": -1.0}, "outside the video"),
        ({"start": "0", "end": 1.0}, "numeric"),
        ({"end": 1.0}, "numeric"),
        ({"start": 0.95, "end": 0.98}, "no unseen frames"),  # no frame between 9.5 and 9.8
    ],
)
def test_clip_errors(frames, args, needle) -> None:
    obs = make(frames).execute(ToolCall("clip", args))
    assert not obs.ok and needle in obs.message and obs.images == []


# -- budgets, unknown tools, determinism -----------------------------------------------------------------------
def test_unknown_tool_and_bad_json_count_as_calls(frames) -> None:
    ex = make(frames, max_calls=2)
    obs = ex.execute_text('<tool_call>{"name": "zoom", "arguments": {}}</tool_call><tool_call>{bad</tool_call>')
    assert [o.ok for o in obs] == [False, False]
    assert "unknown tool 'zoom'" in obs[0].message and "clip, crop" in obs[0].message
    assert "not valid JSON" in obs[1].message and ex.calls_made == 2
    over = ex.execute(crop_call(1, [0, 0, 1, 1]))
    assert not over.ok and "call budget" in over.message and ex.calls_made == 2


def test_image_budget(frames) -> None:
    ex = make(frames, max_images=6, max_calls=10, clip_frames=8)
    clip = ex.execute(ToolCall("clip", {"start": 0, "end": 3}))
    assert clip.ok and len(clip.refs) == 3 and len(ex.context) == 6  # truncated to the free slots
    obs = ex.execute(crop_call(1, [0, 0, 0.5, 0.5]))
    assert not obs.ok and "image budget" in obs.message
    assert not ex.execute(ToolCall("clip", {"start": 0, "end": 3})).ok


def test_deterministic_and_cached(frames) -> None:
    text = "\n".join(
        format_tool_call(c)
        for c in [ToolCall("clip", {"start": 0.0, "end": 2.9}), crop_call(5, [0.1, 0.3, 0.6, 0.9]), crop_call(12, [10, 10, 60, 40])]
    )
    runs = []
    for _ in range(2):
        ex = make(frames, max_images=16)
        runs.append((ex.execute_text(text), ex))
    (a, ex_a), (b, _) = runs
    assert [o.refs for o in a] == [o.refs for o in b] and all(o.ok for o in a)
    for oa, ob in zip(a, b):
        for ia, ib in zip(oa.images, ob.images):
            np.testing.assert_array_equal(ia, ib)
    # 8 clip frames decoded once; crops reuse cached frames.
    assert ex_a.reader.decoded == 8
    assert [r.frame_index for r in ex_a.context[:3]] == [0, 10, 20] and len(ex_a.context) == 13


def test_on_real_decoded_video(tmp_path) -> None:
    """The same ops on a real (tiny) mp4 via the media module's open_video."""
    import cv2

    from videor4.contracts import media
    path = tmp_path / "clip.mp4"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, (160, 96))
    for i in range(20):
        img = np.zeros((96, 160, 3), np.uint8)
        cv2.putText(img, str(i), (40, 70), cv2.FONT_HERSHEY_SIMPLEX, 2, (255, 255, 255), 3)
        writer.write(img)
    writer.release()
    with media.open_video(path) as reader:
        ex = ClipCropExecutor(reader, [0, 19])
        clip = ex.execute(ToolCall("clip", {"start": 0.5, "end": 1.0}))
        crop = ex.execute(crop_call(3, [0.2, 0.2, 0.8, 0.9]))
        assert clip.ok and crop.ok and [r.frame_index for r in clip.refs] == [5, 6, 7, 8, 9, 10]
        assert crop.images[0].shape[2] == 3 and min(crop.images[0].shape[:2]) >= 28
        np.testing.assert_array_equal(ex.render(crop.refs[0]), crop.images[0])
        assert json.dumps([r.__dict__ for r in ex.context])  # refs are plain, serializable values


def test_pixel_boxes_use_the_displayed_size(frames) -> None:
    """When the prompt shows frames at half size, pixel boxes and labels are in that half-size frame."""
    half = lambda ref, size: (size[0] // 2, size[1] // 2)  # noqa: E731
    ex = ClipCropExecutor(ArrayReader(frames), [0], OpsConfig(crop_pad=0.0), display_size=half)
    obs = ex.execute(crop_call(1, [16, 9, 80, 45]))  # = [0.1, 0.1, 0.5, 0.5] of a 160x90 view
    assert ex.source_box(obs.refs[0]) == (32, 18, 160, 90)
    assert ex.describe(1, ex.context[0]) == "Image 1: frame 0 at 0.00s, 160x90 px"
