"""One reader interface over video files and frame folders.

M4-ViteVQA ships either raw videos (``videos/<id>.mp4``) or decoded frames
(``img_dir/<id>/<n>.jpg``); every later step (OCR, detection, the clip/crop
executor) must see the same frame indices and pixels whichever layout the data
has, so both are hidden behind :class:`VideoReader`.

Frame index ``i`` is the 0-based position in decode (presentation) order for a
video, and the position in the numerically sorted frame files for a folder (whose
numbers must be consecutive); its time is ``i / fps``. Readers stream frames (``read`` is a generator) so memory
stays bounded by one frame per backend, whatever the video length.
"""

from __future__ import annotations

import itertools
import os
import queue
import re
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from fractions import Fraction
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, Protocol, runtime_checkable

import cv2
import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from videor4.contracts.errors import UserError

DecoderName = Literal["opencv", "pyav", "decord"]

# Measured by benchmarks/bench_decode.py (docs/backends.md): OpenCV decodes
# 1280x720 H.264 fastest on this kind of machine, so "auto" means OpenCV.
FASTEST_DECODER: DecoderName = "opencv"

FRAME_EXTENSIONS = (".jpg", ".jpeg", ".png")
_DECORD_CHUNK = 16  # frames per get_batch call: bounds memory, keeps batching benefits


def uniform_indices(num_frames: int, n: int) -> list[int]:
    """``n`` frames at the centres of ``n`` equal segments (as Qwen2.5-VL / Video-R1 sample).

    This is how the initial view of every sample and the frames of a ``clip`` are chosen, for synthesis,
    training and evaluation alike. Returns every frame when ``n >= num_frames``; sorted and unique because
    the segments are at least one frame long.
    """
    if n <= 0:
        raise ValueError(f"number of frames to sample must be positive, got {n}")
    if n >= num_frames:
        return list(range(max(num_frames, 0)))
    return [int((i + 0.5) * num_frames / n) for i in range(n)]


def encode_jpeg(image_rgb: np.ndarray, quality: int = 90) -> bytes:
    """JPEG bytes of an RGB image (embedded shard media, QC review images, the HTML viewer)."""
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(image_rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError("JPEG encoding failed")
    return buf.tobytes()


def decode_jpeg(data: bytes) -> np.ndarray:
    """RGB pixels of JPEG bytes (the inverse of :func:`encode_jpeg`)."""
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise ValueError("not a decodable JPEG")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def write_mp4(frames: Iterable[np.ndarray], path: Path, fps: int, *, pixel_format: str = "rgb24", crf: int = 20,
              preset: str = "ultrafast") -> int:
    """Encode ``frames`` (H x W x 3, ``pixel_format`` "rgb24" or "bgr24") as H.264 yuv420p MP4 whose bytes are the
    same on every run; returns the number of frames.

    Why each setting: one encoder thread and bit-exact muxing, because threads and muxer metadata change the
    bytes; no macroblock-tree rate control, because with it libx264 gave run-to-run different bytes on real
    clips; a keyframe every second, so that ``clip`` seeks cheaply; ``+faststart`` so readers need not seek to
    the end. Written under a temporary name and renamed, so a killed run leaves no half video.
    """
    import av

    frames = iter(frames)
    first = next(frames)
    path = Path(path)
    tmp = path.with_name(f".tmp-{path.name}")
    count = 0
    with av.open(str(tmp), "w", format="mp4", options={"movflags": "+faststart", "fflags": "+bitexact"}) as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = first.shape[1], first.shape[0], "yuv420p"
        stream.codec_context.time_base = Fraction(1, fps)
        stream.thread_count = 1
        stream.options = {"crf": str(crf), "preset": preset, "threads": "1", "x264-params":
                          f"keyint={fps}:min-keyint={fps}:scenecut=0:threads=1:lookahead-threads=1:no-mbtree=1"}
        stream.codec_context.flags |= int(av.codec.context.Flags.bitexact)
        for image in itertools.chain([first], frames):
            frame = av.VideoFrame.from_ndarray(image, format=pixel_format)
            frame.pts = count
            frame.time_base = Fraction(1, fps)
            for packet in stream.encode(frame):
                out.mux(packet)
            count += 1
        for packet in stream.encode(None):
            out.mux(packet)
    os.replace(tmp, path)
    return count


class MediaError(UserError):
    """A video or frame folder that is missing, unreadable or corrupt."""

    reason = "corrupt_media"  # the reject reason curation records for the video's questions


class UnreadableMediaError(MediaError):
    """A video file or frame folder the operating system refuses to read (permissions, I/O error)."""

    reason = "unreadable_media"


class FrameGapError(MediaError):
    """A frame folder whose numbers skip (1, 5, 100): its frames cannot be timed (see FramesDirReader)."""

    reason = "frame_gap"


class MediaConfig(BaseModel):
    """How videos are decoded and how frame folders are timed."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    decoder: Literal["auto", "opencv", "pyav", "decord"] = Field(
        "auto", description="Video decoder; 'auto' picks the fastest measured one (OpenCV)."
    )
    frames_fps: float = Field(
        10.0,
        gt=0,
        description="Frame rate assumed for img_dir frame folders, which carry no timing "
        "(official M4-ViteVQA frames are commonly 10 fps).",
    )


@runtime_checkable
class VideoReader(Protocol):
    """Random access by index over a video's frames, streamed in ascending order."""

    video_id: str
    num_frames: int
    fps: float
    width: int
    height: int
    backend: str

    def timestamp(self, frame_index: int) -> float: ...

    def frame_at(self, t: float) -> int: ...

    def read(self, indices: Sequence[int]) -> Iterator[tuple[int, np.ndarray]]: ...

    def close(self) -> None: ...

    def __enter__(self) -> VideoReader: ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...


class _Reader:
    """Index/time arithmetic and index validation shared by every backend."""

    video_id: str
    num_frames: int
    fps: float
    width: int
    height: int
    backend: str
    path: Path

    def timestamp(self, frame_index: int) -> float:
        return frame_index / self.fps

    def frame_at(self, t: float) -> int:
        return min(max(round(t * self.fps), 0), self.num_frames - 1)

    def _wanted(self, indices: Sequence[int]) -> list[int]:
        """Unique ascending indices; out-of-range ones are a caller bug."""
        wanted = sorted({int(i) for i in indices})
        if wanted and (wanted[0] < 0 or wanted[-1] >= self.num_frames):
            raise IndexError(
                f"{self.path}: frame indices must lie in [0, {self.num_frames}), got {wanted[0]}..{wanted[-1]}"
            )
        return wanted

    def read(self, indices: Sequence[int]) -> Iterator[tuple[int, np.ndarray]]:
        raise NotImplementedError

    def close(self) -> None:
        """Nothing to release by default."""

    def __enter__(self) -> _Reader:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.video_id!r}, {self.num_frames} frames, "
            f"{self.fps:g} fps, {self.width}x{self.height}, {self.backend})"
        )


class OpenCVReader(_Reader):
    """cv2.VideoCapture: ``grab()`` skips unwanted frames, ``retrieve()`` converts wanted ones only.

    Frames are reached by grabbing sequentially from frame 0 — exact, whereas ``CAP_PROP_POS_FRAMES`` seeks land on
    keyframes for some codecs. The capture stays open between calls with its position (a *cursor*): a call whose
    frames lie ahead continues from there instead of decoding the video from the start again, which is what the
    many small reads of trajectory synthesis and evaluation do. A call that needs an earlier frame reopens it.
    Each thread has its own cursor (a capture is not thread-safe); interleaved calls of one thread share it and
    stay exact, since a frame is retrieved right after it is grabbed.
    """

    def __init__(self, path: Path, video_id: str) -> None:
        self.path, self.video_id = path, video_id
        self.backend = f"opencv {cv2.__version__}"
        cap = cv2.VideoCapture(str(path))
        if not cap.isOpened():
            cap.release()
            raise MediaError(f"{path}: cannot open video with OpenCV (corrupt or unsupported file)")
        self.fps = cap.get(cv2.CAP_PROP_FPS)
        self.width = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH))
        self.height = int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
        self.num_frames = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        cap.release()
        _check_stream(path, self.num_frames, self.fps, self.width, self.height)
        self._cursor = threading.local()  # .cap, and .position: the frame the next grab yields

    def read(self, indices: Sequence[int]) -> Iterator[tuple[int, np.ndarray]]:
        wanted = self._wanted(indices)
        cursor = self._cursor
        for index in wanted:
            if getattr(cursor, "cap", None) is None or cursor.position > index:  # behind the cursor: from frame 0
                self.close()
                cursor.cap, cursor.position = cv2.VideoCapture(str(self.path)), 0
            cap = cursor.cap
            while cursor.position <= index:
                if not cap.grab():
                    position = cursor.position
                    self.close()
                    raise MediaError(f"{self.path}: video ends at frame {position}, expected {self.num_frames}")
                cursor.position += 1
            ok, bgr = cap.retrieve()  # right after grabbing ``index``: nothing runs in between
            if not ok:
                self.close()
                raise MediaError(f"{self.path}: cannot decode frame {index}")
            yield index, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)

    def close(self) -> None:
        """Release this thread's capture (another thread's is released with it when that thread ends)."""
        cap = getattr(self._cursor, "cap", None)
        if cap is not None:
            cap.release()
        self._cursor.cap, self._cursor.position = None, 0


class PyAVReader(_Reader):
    """PyAV (FFmpeg bindings), decoding sequentially with FFmpeg's own threading."""

    def __init__(self, path: Path, video_id: str) -> None:
        import av

        self.path, self.video_id = path, video_id
        self.backend = f"pyav {av.__version__}"
        try:
            with av.open(str(path)) as container:
                if not container.streams.video:
                    raise MediaError(f"{path}: file has no video stream")
                stream = container.streams.video[0]
                rate = stream.average_rate or stream.guessed_rate
                self.fps = float(rate) if rate else 0.0
                self.width, self.height = stream.codec_context.width, stream.codec_context.height
                # stream.frames is the container's count; when the container
                # does not record it, counting packets needs no decoding.
                self.num_frames = stream.frames or sum(
                    1 for packet in container.demux(stream) if packet.size
                )
        except av.FFmpegError as error:
            raise MediaError(f"{path}: cannot open video with PyAV ({error.strerror})") from error
        _check_stream(path, self.num_frames, self.fps, self.width, self.height)

    def read(self, indices: Sequence[int]) -> Iterator[tuple[int, np.ndarray]]:
        import av

        wanted = self._wanted(indices)
        if not wanted:
            return
        try:
            with av.open(str(self.path)) as container:
                stream = container.streams.video[0]
                stream.thread_type = "AUTO"
                targets = iter(wanted)
                target = next(targets)
                for position, frame in enumerate(container.decode(stream)):
                    if position == target:
                        yield position, frame.to_ndarray(format="rgb24")
                        target = next(targets, None)
                        if target is None:
                            return
        except av.FFmpegError as error:
            raise MediaError(f"{self.path}: cannot decode video with PyAV ({error})") from error
        raise MediaError(f"{self.path}: video ends before frame {target}, expected {self.num_frames}")


class DecordReader(_Reader):
    """decord, fetching wanted frames with ``get_batch`` in small chunks."""

    def __init__(self, path: Path, video_id: str) -> None:
        import decord

        self.path, self.video_id = path, video_id
        self.backend = f"decord {decord.__version__}"
        try:
            self._vr = decord.VideoReader(str(path), ctx=decord.cpu(0))
        except (decord.DECORDError, RuntimeError) as error:  # decord raises plain RuntimeError on bad files
            raise MediaError(f"{path}: cannot open video with decord ({str(error).splitlines()[0]})") from error
        self.num_frames = len(self._vr)
        self.fps = float(self._vr.get_avg_fps())
        self.height, self.width = self._vr[0].shape[:2] if self.num_frames else (0, 0)
        self._vr.seek(0)
        _check_stream(path, self.num_frames, self.fps, self.width, self.height)

    def read(self, indices: Sequence[int]) -> Iterator[tuple[int, np.ndarray]]:
        wanted = self._wanted(indices)
        for start in range(0, len(wanted), _DECORD_CHUNK):
            chunk = wanted[start : start + _DECORD_CHUNK]
            frames = self._vr.get_batch(chunk).asnumpy()
            yield from zip(chunk, frames)

    def close(self) -> None:
        del self._vr


class FramesDirReader(_Reader):
    """A folder of ``<n>.jpg`` frames, ordered by the number in the name (1, 2, ..., 10).

    The numbers must be consecutive (from any start, usually 0 or 1): a folder carries no timing, so frame
    ``i`` is the ``i``-th file and its time is ``i / fps``. A gap (1, 5, 100) means frames are missing, and
    reading the files as consecutive would give every frame after it a wrong time, so such a folder is
    refused with :class:`FrameGapError` naming the gap (curation records a ``frame_gap`` reject).
    """

    backend = "frames-dir"

    def __init__(self, path: Path, video_id: str, fps: float) -> None:
        self.path, self.video_id, self.fps = path, video_id, fps
        files = [p for p in path.iterdir() if p.suffix.lower() in FRAME_EXTENSIONS]
        if not files:
            raise MediaError(f"{path}: frame folder holds no {'/'.join(FRAME_EXTENSIONS)} files")
        bad = next((p for p in files if not re.fullmatch(r"\d+", p.stem)), None)
        if bad is not None:
            raise MediaError(f"{bad}: frame file names must be numbers (e.g. 1.jpg, 00002.jpg)")
        files.sort(key=lambda p: int(p.stem))
        for before, after in itertools.pairwise(files):
            a, b = int(before.stem), int(after.stem)
            if b == a:
                raise FrameGapError(f"{path}: two files for frame {a} ({before.name}, {after.name})")
            if b != a + 1:
                missing = f"frame {a + 1}" if b == a + 2 else f"frames {a + 1}-{b - 1}"
                raise FrameGapError(f"{path}: frame files skip from {before.name} to {after.name} ({missing} "
                                    "missing); frames are timed by position, so a gap would shift every later "
                                    "frame: fill or renumber the files")
        self.frame_files: list[Path] = files
        # The numbers in the file names, for data keyed by them (precomputed OCR).
        self.frame_numbers: list[int] = [int(p.stem) for p in files]
        self.num_frames = len(files)
        self.height, self.width = self._load(files[0]).shape[:2]

    def read(self, indices: Sequence[int]) -> Iterator[tuple[int, np.ndarray]]:
        for index in self._wanted(indices):
            yield index, self._load(self.frame_files[index])

    @staticmethod
    def _load(file: Path) -> np.ndarray:
        bgr = cv2.imread(str(file), cv2.IMREAD_COLOR)
        if bgr is None:
            raise MediaError(f"{file}: cannot read image (corrupt or not an image)")
        return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


class PageSequenceReader(_Reader):
    """Pages (document pages, slides, one photo: PIL images or RGB arrays) read as a video of ``fps`` frames/s.

    Satisfies the ``VideoReader`` protocol, so the clip/crop executor runs on pages unchanged: page ``i`` is
    frame ``i`` at ``i / fps`` seconds. The executor needs one frame size, so pages smaller than the largest
    one are centred on a white canvas of that size (padding, never resampling: text keeps every pixel).
    Pages stay as given (PIL images or RGB arrays) and are converted when read.
    """

    backend = "pages"

    def __init__(self, pages: Sequence[Any], fps: float = 1.0, video_id: str = "pages") -> None:
        if not pages:
            raise MediaError(f"{video_id}: no pages to read")
        if fps <= 0:
            raise ValueError(f"page rate must be positive, got {fps}")
        self.video_id, self.fps, self.path = video_id, float(fps), Path(video_id)
        self._pages = list(pages)
        sizes = [_size(p) for p in self._pages]
        self.width, self.height = max(w for w, _ in sizes), max(h for _, h in sizes)
        self.num_frames = len(self._pages)

    def read(self, indices: Sequence[int]) -> Iterator[tuple[int, np.ndarray]]:
        for index in self._wanted(indices):
            yield index, self._canvas(_rgb(self._pages[index]))

    def _canvas(self, page: np.ndarray) -> np.ndarray:
        h, w = page.shape[:2]
        if (w, h) == (self.width, self.height):
            return page
        canvas = np.full((self.height, self.width, 3), 255, dtype=np.uint8)
        top, left = (self.height - h) // 2, (self.width - w) // 2
        canvas[top : top + h, left : left + w] = page
        return canvas


def _size(page: Any) -> tuple[int, int]:
    return page.size if hasattr(page, "convert") else (page.shape[1], page.shape[0])


def _rgb(page: Any) -> np.ndarray:
    if hasattr(page, "convert"):  # a PIL image
        return np.asarray(page.convert("RGB"))
    if page.ndim == 2:
        return np.repeat(page[:, :, None], 3, axis=2)
    return np.ascontiguousarray(page[:, :, :3])


def _check_stream(path: Path, num_frames: int, fps: float, width: int, height: int) -> None:
    if num_frames <= 0 or fps <= 0 or width <= 0 or height <= 0:
        raise MediaError(
            f"{path}: video reports {num_frames} frames at {fps:g} fps, {width}x{height} (corrupt or empty)"
        )


_DECODERS = {"opencv": OpenCVReader, "pyav": PyAVReader, "decord": DecordReader}


class ReadAhead:
    """Iterate ``frames`` (e.g. ``reader.read(indices)``) while a background thread decodes up to ``depth`` ahead,
    applying ``prepare`` to each item there (e.g. a frame's near-duplicate signature) when given.

    Why: the analysis of a frame (OCR, tracking) and the decoding of the next ones are independent, and decoding
    and OpenCV kernels release the GIL. On two cores the OCR runtime leaves one idle during its own pre- and
    post-processing and during tracking; decoding and the per-frame signatures run there instead of in between
    (docs/scaling.md). Items and their order are exactly those of ``frames`` (mapped by ``prepare``); an error
    while decoding is raised in the consumer, at the item where it happened.

    Use it as a context manager (``with ReadAhead(reader.read(idx)) as frames: for i, im in frames: ...``): leaving
    the block stops and joins the decoding thread even when the loop ends early, so that the reader is never
    closed under a running decode.
    """

    _END = object()

    def __init__(self, frames: Iterator[Any], depth: int = 4, prepare: Callable[[Any], Any] | None = None) -> None:
        self._frames, self._prepare = frames, prepare
        self._queue: queue.Queue = queue.Queue(maxsize=max(1, depth))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._decode, name="read-ahead", daemon=True)

    def _put(self, item: object) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _decode(self) -> None:
        try:
            for item in self._frames:
                if not self._put(item if self._prepare is None else self._prepare(item)):
                    return
        except BaseException as error:  # handed to the consumer, raised there
            self._put(error)
            return
        finally:
            close = getattr(self._frames, "close", None)
            if close is not None:
                close()
        self._put(self._END)

    def __enter__(self) -> ReadAhead:
        self._thread.start()
        return self

    def __iter__(self) -> Iterator[Any]:
        if self._thread.ident is None:
            raise RuntimeError("ReadAhead is a context manager: iterate it inside `with`")
        while True:
            item = self._queue.get()
            if item is self._END:
                return
            if isinstance(item, BaseException):
                raise item
            yield item

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._stop.set()
        self._thread.join()


def open_video(
    source: str | Path, *, config: MediaConfig = MediaConfig(), video_id: str | None = None
) -> VideoReader:
    """Open a video file or a frame folder; ``video_id`` defaults to the file/folder stem."""
    path = Path(source)
    video_id = video_id if video_id is not None else path.stem
    if path.is_dir():
        return FramesDirReader(path, video_id, config.frames_fps)
    if not path.is_file():
        raise MediaError(f"{path}: no such video file or frame folder")
    decoder = FASTEST_DECODER if config.decoder == "auto" else config.decoder
    return _DECODERS[decoder](path, video_id)
