"""Media readers: every backend decodes the same frames, frame folders sort numerically, errors name the file."""

from __future__ import annotations

import types
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
from pydantic import ValidationError

from videor4.contracts.errors import UserError
from videor4.contracts.media import MediaConfig, MediaError, ReadAhead, VideoReader, open_video

NUM_FRAMES, WIDTH, HEIGHT, FPS = 48, 320, 240, 24
DECODERS = ("opencv", "pyav", "decord")


def synthetic_frame(i: int) -> np.ndarray:
    """RGB frame with a rectangle moving 5 px per frame and the frame number drawn."""
    image = np.full((HEIGHT, WIDTH, 3), 40, np.uint8)
    cv2.rectangle(image, (5 * i, 60), (5 * i + 40, 120), (255, 200, 0), -1)
    cv2.putText(image, str(i), (10, 220), cv2.FONT_HERSHEY_SIMPLEX, 2, (255, 255, 255), 3)
    return image


def rectangle_left(rgb: np.ndarray) -> int:
    """x of the moving rectangle's left edge, read back from decoded pixels."""
    row = rgb[90, :, 0].astype(int)
    return int(np.argmax(row > 150))


@pytest.fixture(scope="module")
def videos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("videos")
    mp4v = root / "mp4v.mp4"
    writer = cv2.VideoWriter(str(mp4v), cv2.VideoWriter_fourcc(*"mp4v"), FPS, (WIDTH, HEIGHT))
    for i in range(NUM_FRAMES):
        writer.write(cv2.cvtColor(synthetic_frame(i), cv2.COLOR_RGB2BGR))
    writer.release()
    h264 = root / "h264.mp4"  # B-frames and reordering: the common case for real videos
    with av.open(str(h264), "w") as container:
        stream = container.add_stream("libx264", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        for i in range(NUM_FRAMES):
            container.mux(stream.encode(av.VideoFrame.from_ndarray(synthetic_frame(i), format="rgb24")))
        container.mux(stream.encode())
    return {"mp4v": mp4v, "h264": h264}


def test_cv2_is_the_pinned_opencv_with_classic_detectors() -> None:
    # DESIGN §9: a stray opencv 5.x wheel can shadow cv2 and drop these classes.
    assert cv2.__version__.startswith("4.12."), cv2.__version__
    assert hasattr(cv2, "CascadeClassifier") and hasattr(cv2, "HOGDescriptor")


@pytest.mark.parametrize("codec", ["mp4v", "h264"])
def test_all_decoders_agree_on_count_timing_and_pixels(videos: dict[str, Path], codec: str) -> None:
    wanted = [47, 0, 10, 11, 10, 30]
    decoded = {}
    for decoder in DECODERS:
        with open_video(videos[codec], config=MediaConfig(decoder=decoder)) as reader:
            assert isinstance(reader, VideoReader)
            assert (reader.num_frames, reader.width, reader.height) == (NUM_FRAMES, WIDTH, HEIGHT)
            assert reader.fps == pytest.approx(FPS)
            assert reader.backend.startswith(decoder)
            assert reader.video_id == codec
            frames = reader.read(wanted)
            assert isinstance(frames, types.GeneratorType)  # streamed, not a list of the whole video
            decoded[decoder] = list(frames)
    for decoder, frames in decoded.items():
        assert [i for i, _ in frames] == [0, 10, 11, 30, 47], decoder  # ascending, unique
        for index, rgb in frames:
            assert rgb.shape == (HEIGHT, WIDTH, 3) and rgb.dtype == np.uint8
            assert abs(rectangle_left(rgb) - 5 * index) <= 2, (decoder, index)  # the right frame, in RGB order
            reference = dict(decoded["opencv"])[index].astype(int)
            assert np.abs(rgb.astype(int) - reference).mean() < 2.0, (decoder, index)


def test_opencv_cursor_reads_exact_frames_in_any_call_order(videos: dict[str, Path]) -> None:
    """The OpenCV reader keeps its capture between calls: reads ahead continue, reads behind restart, generators
    interleave, threads keep their own cursor — and every frame is the one a fresh sequential decode gives."""
    import threading

    path = videos["h264"]
    with open_video(path, config=MediaConfig(decoder="opencv")) as reader:
        truth = dict(reader.read(range(NUM_FRAMES)))
    with open_video(path, config=MediaConfig(decoder="opencv")) as reader:
        for wanted in ([5, 6], [20], [3], [3], [47, 46], [0, 12]):  # ahead, behind, repeat, end, start
            for index, rgb in reader.read(wanted):
                assert np.array_equal(rgb, truth[index]), index
        first, second = reader.read([10, 30, 40]), reader.read([2, 35])  # interleaved, the second goes behind
        got = [next(first), next(second), next(first), next(second), next(first)]
        assert [i for i, _ in got] == [10, 2, 30, 35, 40]
        for index, rgb in got:
            assert np.array_equal(rgb, truth[index]), index
        errors: list[str] = []

        def worker(order: list[int]) -> None:
            for index in order:
                for i, rgb in reader.read([index]):
                    if not np.array_equal(rgb, truth[i]):
                        errors.append(f"frame {i} differs in a thread")

        threads = [threading.Thread(target=worker, args=(o,)) for o in ([1, 30, 7, 44], [40, 2, 25, 9])]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors
    with open_video(path, config=MediaConfig(decoder="opencv")) as reader:
        list(reader.read([40]))
        grabs = 0
        real = cv2.VideoCapture

        class Counting:
            def __init__(self, *args) -> None:
                self._cap = real(*args)

            def grab(self) -> bool:
                nonlocal grabs
                grabs += 1
                return self._cap.grab()

            def __getattr__(self, name: str):
                return getattr(self._cap, name)

        cv2.VideoCapture = Counting
        try:
            reader.close()  # a fresh capture, counted
            list(reader.read([40]))
            list(reader.read([42, 44]))  # ahead of the cursor: 4 more grabs, not a decode from frame 0
        finally:
            cv2.VideoCapture = real
        assert grabs == 41 + 4


def test_read_ahead_yields_the_same_frames_and_stops_cleanly(videos: dict[str, Path]) -> None:
    """Decoding ahead on a thread changes nothing the consumer sees: the same frames in the same order (with the
    ``prepare`` result next to them), a decode error at its place, and no thread left decoding after the block."""
    import itertools
    import threading

    path = videos["h264"]
    with open_video(path, config=MediaConfig(decoder="opencv")) as reader:
        truth = list(reader.read(range(0, NUM_FRAMES, 3)))
    with open_video(path, config=MediaConfig(decoder="opencv")) as reader:
        with ReadAhead(reader.read(range(0, NUM_FRAMES, 3)), depth=2,
                       prepare=lambda item: (*item, rectangle_left(item[1]))) as frames:
            got = list(frames)
    assert [i for i, _, _ in got] == [i for i, _ in truth]
    assert all(np.array_equal(a, b) for (_, a, _), (_, b) in zip(got, truth))
    assert [left for _, _, left in got] == [rectangle_left(rgb) for _, rgb in truth]

    # A decode error after three frames: those three arrive, then the error, in the consumer.
    def damaged():
        for i in range(3):
            yield i, np.zeros(1)
        raise MediaError("damaged.mp4: cannot decode frame 3")

    seen: list[int] = []
    with pytest.raises(MediaError, match="damaged.mp4"), ReadAhead(damaged(), depth=8) as frames:
        for i, _ in frames:
            seen.append(i)
    assert seen == [0, 1, 2]

    # Leaving the block early stops the producer, even on an endless source.
    before = threading.active_count()
    with ReadAhead(((i, np.zeros(1)) for i in itertools.count()), depth=3) as frames:
        assert [i for i, _ in itertools.islice(frames, 5)] == [0, 1, 2, 3, 4]
    assert threading.active_count() == before
    with pytest.raises(RuntimeError, match="context manager"):
        next(iter(ReadAhead(iter([]))))


def test_auto_decoder_is_opencv(videos: dict[str, Path]) -> None:
    assert open_video(videos["mp4v"]).backend.startswith("opencv")


def test_time_index_mapping_is_stable_and_clamped(videos: dict[str, Path]) -> None:
    reader = open_video(videos["mp4v"], video_id="00042")
    assert reader.video_id == "00042"
    assert reader.timestamp(12) == pytest.approx(0.5)
    assert reader.frame_at(reader.timestamp(37)) == 37
    assert reader.frame_at(0.52) == 12
    assert reader.frame_at(-3.0) == 0
    assert reader.frame_at(100.0) == NUM_FRAMES - 1
    with pytest.raises(IndexError, match="48"):
        list(reader.read([3, 48]))


def test_frames_dir_sorts_numerically_and_reads_rgb(tmp_path: Path) -> None:
    frames_dir = tmp_path / "00007"
    frames_dir.mkdir()
    for number in range(1, 13):  # 1.jpg .. 12.jpg: lexical order would put 10 after 1
        bgr = cv2.cvtColor(synthetic_frame(number - 1), cv2.COLOR_RGB2BGR)
        cv2.imwrite(str(frames_dir / f"{number}.jpg"), bgr)
    (frames_dir / "notes.txt").write_text("ignored: not an image")
    reader = open_video(frames_dir, config=MediaConfig(frames_fps=10))
    assert (reader.video_id, reader.backend, reader.num_frames) == ("00007", "frames-dir", 12)
    assert (reader.width, reader.height, reader.fps) == (WIDTH, HEIGHT, 10)
    assert reader.frame_files[9].name == "10.jpg"
    assert reader.timestamp(9) == pytest.approx(0.9)
    for index, rgb in reader.read([11, 9, 1]):
        assert abs(rectangle_left(rgb) - 5 * index) <= 2, index


@pytest.mark.parametrize("decoder", DECODERS)
def test_corrupt_video_raises_media_error_naming_file(tmp_path: Path, decoder: str) -> None:
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"\x00\x00\x00\x18ftypmp42 this is not a video" * 10)
    with pytest.raises(MediaError, match="broken.mp4") as caught:
        open_video(bad, config=MediaConfig(decoder=decoder))
    assert isinstance(caught.value, UserError)
    assert "\n" not in str(caught.value)


def test_truncated_video_raises_media_error(videos: dict[str, Path], tmp_path: Path) -> None:
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(videos["h264"].read_bytes()[:2000])  # header survives, moov/mdat do not
    with pytest.raises(MediaError, match="cut.mp4"):
        reader = open_video(cut)
        list(reader.read(range(reader.num_frames)))


def test_missing_and_bad_frame_sources_raise_media_error(tmp_path: Path) -> None:
    with pytest.raises(MediaError, match="nope.mp4"):
        open_video(tmp_path / "nope.mp4")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(MediaError, match="empty"):
        open_video(empty)
    named = tmp_path / "named"
    named.mkdir()
    cv2.imwrite(str(named / "1.jpg"), np.zeros((8, 8, 3), np.uint8))
    cv2.imwrite(str(named / "frame_2.jpg"), np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(MediaError, match="frame_2.jpg"):
        open_video(named)
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    cv2.imwrite(str(corrupt / "1.jpg"), np.zeros((8, 8, 3), np.uint8))
    (corrupt / "2.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(MediaError, match="2.jpg"):
        list(open_video(corrupt).read([0, 1]))


def test_config_is_frozen_and_validated() -> None:
    config = MediaConfig()
    with pytest.raises(ValidationError):
        config.decoder = "pyav"  # type: ignore[misc]
    with pytest.raises(ValidationError):
        MediaConfig(decoder="ffmpeg")  # type: ignore[arg-type]
    with pytest.raises(ValidationError):
        MediaConfig(frames_fps=0)
