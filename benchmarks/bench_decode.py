"""Decode speed of each video backend, to pick ``MediaConfig.decoder="auto"``.

Builds a 1280x720 H.264 (libx264, yuv420p) clip of 300 frames from the Pexels
sample (real footage with cuts, resized) unless ``--video`` is given, then times
two access patterns per decoder:

* ``all``: every frame, the cost of OCR-ing a whole clip;
* ``every10``: every 10th frame, the cost of uniform sampling (decoders that
  can skip conversion of unwanted frames gain here).

Usage: ``python benchmarks/bench_decode.py [--video FILE] [--repeats 2]``
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import av
import cv2

from videor4.contracts.media import MediaConfig, open_video

SAMPLE = Path(__file__).resolve().parents[2] / "shared" / "samples" / "videos" / "pexels_scene_cut.mp4"
WIDTH, HEIGHT, FRAMES, FPS = 1280, 720, 300, 30


def build_clip(target: Path) -> Path:
    """Loop the sample's frames, resized to 1280x720, into an H.264 mp4."""
    source = open_video(SAMPLE)
    frames = [cv2.resize(rgb, (WIDTH, HEIGHT), interpolation=cv2.INTER_AREA) for _, rgb in source.read(range(source.num_frames))]
    with av.open(str(target), "w") as container:
        stream = container.add_stream("libx264", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        stream.options = {"preset": "veryfast", "crf": "23"}
        for i in range(FRAMES):
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frames[i % len(frames)], format="rgb24")))
        container.mux(stream.encode())
    return target


def frames_per_second(video: Path, decoder: str, step: int, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        with open_video(video, config=MediaConfig(decoder=decoder)) as reader:
            indices = range(0, reader.num_frames, step)
            count = sum(1 for _ in reader.read(indices))
        best = min(best, time.perf_counter() - start)
    return count / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--video", type=Path, help="video to decode (default: synthetic 1280x720 H.264 clip)")
    parser.add_argument("--repeats", type=int, default=2, help="best of N runs per cell")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        video = args.video or build_clip(Path(tmp) / "bench_1280x720.mp4")
        probe = open_video(video)
        print(f"{video.name}: {probe.num_frames} frames, {probe.width}x{probe.height}, {probe.fps:g} fps")
        print(f"{'decoder':<22}{'all (frames/s)':>16}{'every10 (frames/s)':>20}")
        for decoder in ("opencv", "pyav", "decord"):
            backend = open_video(video, config=MediaConfig(decoder=decoder)).backend
            every = frames_per_second(video, decoder, 1, args.repeats)
            sparse = frames_per_second(video, decoder, 10, args.repeats)
            print(f"{backend:<22}{every:>16.0f}{sparse:>20.0f}")


if __name__ == "__main__":
    main()
