#!/usr/bin/env python
"""Rebuild the bundled sample dataset (``curation/sample_data``) from the shared media.

Why a generator instead of hand-made files: the sample must be reproducible from freely licensed
sources (see ``curation/sample_data/ATTRIBUTION.md``), and every byte of it must be explainable.
Each video is a short "text-rich clip" made from a real photo or the real Pexels clip: a Ken Burns
pan/zoom, a slideshow with hard cuts, or a landscape reframe of a portrait video. The mp4 is encoded
first (H.264, 10 fps) and the ``img_dir`` JPEGs are then produced by *decoding that mp4*, as the
official M4-ViteVQA release extracted frames from its videos, so both layouts hold the same frames.

Usage::

    python scripts/build_sample_data.py [SHARED_SAMPLES_DIR] [--out DIR] [--verify]

``SHARED_SAMPLES_DIR`` defaults to ``../shared/samples`` relative to the repository root.
``--verify`` runs rapidocr on the recorded answer frames and reports any Text answer it cannot read.
The output is byte-identical across runs with the same PyAV/libx264/OpenCV builds (single-threaded
encoder, bit-exact muxing, fixed JPEG quality).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import av
import cv2
import numpy as np

from videor4.contracts.media import write_mp4

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_SHARED = REPO_ROOT.parent / "shared" / "samples"
DEFAULT_OUT = REPO_ROOT / "curation" / "sample_data"

WIDTH, HEIGHT = 960, 540
FPS = 10
JPEG_QUALITY = 85
X264_CRF = 23
# Encoding: videor4.contracts.media.write_mp4 (reproducible bytes: one thread, bit-exact muxing, no mb-tree, which
# gave run-to-run different bytes for the Pexels-derived clips; a keyframe every second).
ANNOTATION_NAME = "ViteVQA_0.0.2_sample.json"

Box = tuple[float, float, float, float]  # x, y, w, h in source pixels


# --------------------------------------------------------------------------------------------
# Sources: every media file used, with an optional sub-rectangle (some EasyOCR examples are
# collages of several photos; we cut out single photos).
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ImageSource:
    """A still photo (or a rectangle of one) from the shared samples."""

    path: str
    rect: tuple[int, int, int, int] | None = None  # x, y, w, h inside the file

    def load(self, shared: Path) -> np.ndarray:
        img = cv2.imread(str(shared / self.path), cv2.IMREAD_COLOR)
        if img is None:
            raise FileNotFoundError(shared / self.path)
        if self.rect is not None:
            x, y, w, h = self.rect
            img = img[y : y + h, x : x + w]
        return np.ascontiguousarray(img)


SOURCES: dict[str, ImageSource] = {
    "louvre": ImageSource("images/easyocr_french.jpg"),
    "who_poster": ImageSource("images/easyocr_english.png"),
    "hotel": ImageSource("images/scenetext_segmented_word01.jpg"),
    "stationery": ImageSource("images/scenetext_segmented_word02.jpg"),
    "freephone": ImageSource("images/scenetext_segmented_word03.jpg"),
    "fosters": ImageSource("images/scenetext_segmented_word04.jpg"),
    "sanyo": ImageSource("images/scenetext_segmented_word05.jpg"),
    "yuyuan": ImageSource("images/easyocr_example2.png", (0, 0, 362, 191)),
    "no_litter": ImageSource("images/easyocr_example2.png", (0, 192, 293, 210)),
    "seoul": ImageSource("images/easyocr_example2.png", (0, 411, 298, 188)),
    "here": ImageSource("images/scenetext_word02.jpg"),
    "riser": ImageSource("images/scenetext_word03.jpg"),
    "produkt": ImageSource("images/scenetext_word04.jpg"),
}
PEXELS_VIDEO = "videos/pexels_scene_cut.mp4"


# --------------------------------------------------------------------------------------------
# Shots and videos
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PhotoShot:
    """``n_frames`` of one photo, the view moving from ``start`` to ``end`` (eased).

    layout "fill": the box (16:9) fills the frame (Ken Burns). layout "fit": the box is fitted inside
    the frame over a blurred, darkened copy of itself (how portrait/4:3 media look in 16:9 edits).
    ``None`` boxes mean the whole photo.
    """

    source: str
    n_frames: int
    start: Box | None = None
    end: Box | None = None
    layout: str = "fit"
    zoom: float = 1.0  # for "fit": end box = start box scaled by 1/zoom about its centre


@dataclass(frozen=True)
class ClipShot:
    """A reframed segment of the Pexels clip: source frames ``first..last`` every ``step``.

    The 1080-wide, 16:9 crop window's top edge follows ``tops`` (source frame, y) keyframes,
    linearly interpolated — a virtual tilt that keeps the burnt-in captions in view.
    """

    first: int
    last: int
    step: int
    tops: tuple[tuple[int, float], ...]

    @property
    def source_frames(self) -> list[int]:
        return list(range(self.first, self.last + 1, self.step))


@dataclass(frozen=True)
class VideoSpec:
    video_id: str
    slug: str
    description: str
    shots: tuple[PhotoShot | ClipShot, ...]


@dataclass(frozen=True)
class QA:
    """One question; ``frames`` are 0-based frame indices where the answer (evidence) is visible."""

    question_id: int
    video_id: str
    question: str
    answers: tuple[str, ...]
    source1: str
    source2: str
    frames: tuple[int, ...] = field(default=())


VIDEOS: tuple[VideoSpec, ...] = (
    VideoSpec(
        "90001",
        "louvre_signpost_pan",
        "Ken Burns tilt-and-zoom down a Paris signpost (five direction signs) next to the Louvre: "
        "starts wide on the top three signs, ends close on 'Musée du LOUVRE' and "
        "'Théâtre du PALAIS-ROYAL'; the top sign leaves the frame half-way.",
        (PhotoShot("louvre", 30, (0, 140, 692, 389.25), (100, 490, 480, 270), layout="fill"),),
    ),
    VideoSpec(
        "90002",
        "shopfront_slideshow",
        "Slideshow, hard cuts every 0.7 s: HOTEL sign under flower boxes -> 'Stationery Box' shop "
        "front -> green 'Customer Freephone Private Hire Service' sign -> blue FOSTER'S display -> "
        "SANYO 'PRO xtraX' projector. 4:3 photos fitted over a blurred background, slow zoom-in.",
        tuple(
            PhotoShot(name, 7, zoom=1.06)
            for name in ("hotel", "stationery", "freephone", "fosters", "sanyo")
        ),
    ),
    VideoSpec(
        "90003",
        "who_poster_zoom",
        "Slow zoom from the whole WHO coronavirus-prevention poster into its lower half "
        "('Avoid close contact…', 'Thoroughly cook meat and eggs', the WHO logo).",
        (PhotoShot("who_poster", 30, (26, 0, 853.33, 480), (225, 210, 480, 270), layout="fill"),),
    ),
    VideoSpec(
        "90004",
        "asian_road_signs",
        "Three street-sign photos with hard cuts (1 s each): blue 'Yuyuan Rd.' street sign, "
        "white 'NO LITTER / MINATO CITY' sign, green Seoul/Pyeongyang distance sign. The photos "
        "come from the EasyOCR example figure and carry its red detection boxes.",
        tuple(PhotoShot(name, 10, zoom=1.08) for name in ("yuyuan", "no_litter", "seoul")),
    ),
    VideoSpec(
        "90005",
        "pexels_intro_captions",
        "Landscape reframe of the first 3 s of a portrait Pexels clip: a woman sitting on steps with "
        "the caption 'here's how to create', then two men walking under a bridge with "
        "'a SIMPLE & EASY' (the crop tilts down to follow the caption), then quick cuts.",
        (ClipShot(0, 87, 3, ((0, 400.0), (27, 400.0), (42, 1000.0), (87, 1000.0))),),
    ),
    VideoSpec(
        "90006",
        "pexels_fast_cut_editor",
        "Landscape reframe of the last 3 s of the Pexels clip: a couple dressed in black under the "
        "title 'Fast CUT intro', wide shots, then a video-editor screen with 'FIRST cut down'.",
        (ClipShot(87, 174, 3, ((87, 1000.0), (156, 1000.0), (159, 250.0), (174, 250.0))),),
    ),
    VideoSpec(
        "90007",
        "word_closeups",
        "Three close-ups with hard cuts: 'HERE' on a light panel (1.2 s), 'riser' on a dark red "
        "display (only 0.6 s), 'Produkt' on a green LCD (1.2 s).",
        (
            PhotoShot("here", 12, zoom=1.05),
            PhotoShot("riser", 6, zoom=1.05),
            PhotoShot("produkt", 12, zoom=1.05),
        ),
    ),
)


def _q(qid: int, vid: str, question: str, answers: Sequence[str], s1: str, s2: str,
       frames: Sequence[int]) -> QA:
    return QA(qid, vid, question, tuple(answers), s1, s2, tuple(frames))


SINGLE, MULTI, TEXT, VISUAL = "Single frame", "Multi frame", "Text", "Visual"

QUESTIONS: tuple[QA, ...] = (
    # 90001 louvre signpost
    _q(900001, "90001", "What is written on the brown sign?",
       ["LES ARTS DÉCORATIFS", "les arts decoratifs", "arts décoratifs"], SINGLE, TEXT, [0, 15]),
    _q(900002, "90001", "Which theatre does the lowest sign on the post point to?",
       ["Théâtre du Palais-Royal", "theatre du palais royal", "palais-royal"], SINGLE, TEXT, [29]),
    _q(900003, "90001", "Which museum does the sign just below the brown sign point to?",
       ["Musée du Louvre", "musee du louvre", "louvre"], SINGLE, TEXT, [22, 29]),
    _q(900004, "90001", "What colour is the sign that says LES ARTS DÉCORATIFS?",
       ["brown", "dark brown"], SINGLE, VISUAL, [0]),
    # 90002 shopfront slideshow: shots at frames 0-6, 7-13, 14-20, 21-27, 28-34
    _q(900005, "90002", "What word is on the black sign under the flower boxes?",
       ["HOTEL", "hotel"], SINGLE, TEXT, [0, 3]),
    _q(900006, "90002", "What is the name of the shop shown right after the hotel sign?",
       ["Stationery Box", "stationery box"], MULTI, TEXT, [10]),
    _q(900007, "90002", "Which brand name is written on the blue display with the red F logo?",
       ["FOSTER'S", "fosters", "foster's"], SINGLE, TEXT, [24]),
    _q(900008, "90002", "Which company made the multimedia projector shown at the end?",
       ["SANYO", "sanyo"], SINGLE, TEXT, [31]),
    _q(900009, "90002", "What service does the green sign offer besides Customer Freephone?",
       ["Private Hire Service", "private hire"], SINGLE, TEXT, [17]),
    _q(900010, "90002", "What colour are the flowers above the HOTEL sign?",
       ["red"], SINGLE, VISUAL, [0]),
    # 90003 WHO poster
    _q(900011, "90003", "Which organization published this poster?",
       ["World Health Organization", "WHO", "the World Health Organization"], SINGLE, TEXT, [0, 29]),
    _q(900012, "90003", "According to the poster, what should be cooked thoroughly?",
       ["meat and eggs", "meat & eggs"], SINGLE, TEXT, [0, 29]),
    _q(900013, "90003", "Besides soap and water, what can you clean your hands with?",
       ["alcohol-based hand rub", "alcohol based hand rub", "hand rub"], SINGLE, TEXT, [0]),
    _q(900014, "90003", "What colour is the background of the poster?",
       ["blue", "light blue"], SINGLE, VISUAL, [0]),
    _q(900015, "90003", "Which animal is drawn in pink next to the last tip?",
       ["pig", "a pig"], SINGLE, VISUAL, [0, 29]),
    # 90004 road signs: shots at frames 0-9, 10-19, 20-29
    _q(900016, "90004", "What is the road name written in English on the blue street sign?",
       ["Yuyuan Rd.", "Yuyuan Road", "yuyuan rd"], SINGLE, TEXT, [4]),
    _q(900017, "90004", "What does the black English text on the white sign say?",
       ["NO LITTER", "no litter"], SINGLE, TEXT, [14]),
    _q(900018, "90004", "How far away is Seoul according to the green road sign?",
       ["56Km", "56 km", "56 kilometers"], SINGLE, TEXT, [24]),
    _q(900019, "90004", "Which city named on the last sign is further away?",
       ["Pyeongyang", "Pyongyang"], SINGLE, TEXT, [24]),
    _q(900020, "90004", "What colour is the road sign shown after the NO LITTER sign?",
       ["green"], MULTI, VISUAL, [24]),
    # 90005 pexels captions (output frame k = source frame 3k)
    _q(900021, "90005", "What caption appears over the woman sitting on the steps?",
       ["here's how to create", "heres how to create"], SINGLE, TEXT, [7]),
    _q(900022, "90005", "The caption continues in the next shot; what is the full caption?",
       ["here's how to create a simple & easy", "heres how to create a simple and easy"],
       MULTI, TEXT, [7, 15]),
    _q(900023, "90005", "What colour is the hoodie of the man on the right when 'a SIMPLE' appears?",
       ["blue"], SINGLE, VISUAL, [12]),
    # 90006 pexels fast cut (output frame k = source frame 87 + 3k)
    _q(900024, "90006", "What word is written in large letters below 'Fast' in the title?",
       ["CUT", "cut"], SINGLE, TEXT, [1, 4]),
    _q(900025, "90006", "What caption is shown on the editing screen after the shots of the couple?",
       ["FIRST cut down", "first cut down"], MULTI, TEXT, [29]),
    _q(900026, "90006", "How many people stand together under the 'Fast CUT' title?",
       ["2", "two"], SINGLE, VISUAL, [1, 24]),
    _q(900027, "90006", "What colour is the hoodie the young man wears?",
       ["black"], SINGLE, VISUAL, [1, 24]),
    # 90007 close-ups: shots at frames 0-11, 12-17, 18-29
    _q(900028, "90007", "What word is shown on the green LCD display?",
       ["Produkt", "produkt"], SINGLE, TEXT, [24]),
    _q(900029, "90007", "Which word flashes briefly on the dark red display between the other two?",
       ["riser"], MULTI, TEXT, [14]),
    _q(900030, "90007", "What word is shown first in the video?",
       ["HERE", "here"], SINGLE, TEXT, [5]),
)


# --------------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------------
def ease(t: float) -> float:
    """Smoothstep, so pans start and stop gently like a real camera move."""
    return t * t * (3.0 - 2.0 * t)


def lerp_box(a: Box, b: Box, t: float) -> Box:
    return tuple(float(x + (y - x) * t) for x, y in zip(a, b))  # type: ignore[return-value]


def render_window(img: np.ndarray, box: Box, size: tuple[int, int]) -> np.ndarray:
    """Resample the (sub-pixel) ``box`` of ``img`` to ``size`` (w, h) with one affine warp."""
    x, y, w, h = box
    out_w, out_h = size
    sx, sy = out_w / w, out_h / h
    mat = np.array([[sx, 0.0, -x * sx], [0.0, sy, -y * sy]], dtype=np.float64)
    interp = cv2.INTER_AREA if sx < 1.0 else cv2.INTER_CUBIC
    return cv2.warpAffine(img, mat, (out_w, out_h), flags=interp, borderMode=cv2.BORDER_REFLECT)


def render_fit(img: np.ndarray, box: Box) -> np.ndarray:
    """Fit ``box`` inside the frame over a blurred, darkened copy (no content is cut off)."""
    x, y, w, h = box
    scale = min(WIDTH / w, HEIGHT / h)
    fg_w, fg_h = int(round(w * scale)), int(round(h * scale))
    bg = render_window(img, box, (WIDTH // 8, HEIGHT // 8))
    bg = cv2.resize(cv2.GaussianBlur(bg, (0, 0), 3.0), (WIDTH, HEIGHT), interpolation=cv2.INTER_LINEAR)
    frame = (bg.astype(np.float32) * 0.55).astype(np.uint8)
    fg = render_window(img, box, (fg_w, fg_h))
    ox, oy = (WIDTH - fg_w) // 2, (HEIGHT - fg_h) // 2
    frame[oy : oy + fg_h, ox : ox + fg_w] = fg
    return frame


def zoom_box(box: Box, zoom: float) -> Box:
    x, y, w, h = box
    nw, nh = w / zoom, h / zoom
    return (x + (w - nw) / 2, y + (h - nh) / 2, nw, nh)


def photo_shot_frames(shot: PhotoShot, shared: Path) -> Iterator[np.ndarray]:
    img = SOURCES[shot.source].load(shared)
    full: Box = (0.0, 0.0, float(img.shape[1]), float(img.shape[0]))
    start = shot.start or full
    end = shot.end or zoom_box(start, shot.zoom)
    if shot.layout == "fill":
        for box in (start, end):
            if abs(box[2] / box[3] - WIDTH / HEIGHT) > 0.01:
                raise ValueError(f"fill box {box} of {shot.source} is not 16:9")
    for i in range(shot.n_frames):
        t = ease(i / (shot.n_frames - 1)) if shot.n_frames > 1 else 0.0
        box = lerp_box(start, end, t)
        yield render_window(img, box, (WIDTH, HEIGHT)) if shot.layout == "fill" else render_fit(img, box)


def interpolate_top(tops: Sequence[tuple[int, float]], src: int) -> float:
    """Piecewise-linear keyframes; two keyframes one sample apart make a hard reframe."""
    xs = [k for k, _ in tops]
    ys = [v for _, v in tops]
    return float(np.interp(src, xs, ys))


def clip_shot_frames(shot: ClipShot, shared: Path) -> Iterator[np.ndarray]:
    """Decode the Pexels clip once, sequentially, keeping only the sampled frames (memory-light)."""
    wanted = set(shot.source_frames)
    with av.open(str(shared / PEXELS_VIDEO)) as container:
        for index, frame in enumerate(container.decode(video=0)):
            if index > shot.last:
                break
            if index not in wanted:
                continue
            img = frame.to_ndarray(format="bgr24")
            src_w = img.shape[1]
            win_h = src_w * HEIGHT / WIDTH
            top = min(max(interpolate_top(shot.tops, index), 0.0), img.shape[0] - win_h)
            yield render_window(img, (0.0, top, float(src_w), win_h), (WIDTH, HEIGHT))


def video_frames(spec: VideoSpec, shared: Path) -> Iterator[np.ndarray]:
    for shot in spec.shots:
        if isinstance(shot, PhotoShot):
            yield from photo_shot_frames(shot, shared)
        else:
            yield from clip_shot_frames(shot, shared)


# --------------------------------------------------------------------------------------------
# Encoding / decoding
# --------------------------------------------------------------------------------------------
def decode_to_jpegs(mp4: Path, out_dir: Path) -> int:
    """Write ``1.jpg … N.jpg`` (1-based, not zero-padded, like the official img_dir)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    count = 0
    with av.open(str(mp4)) as container:
        for count, frame in enumerate(container.decode(video=0), start=1):
            img = frame.to_ndarray(format="bgr24")
            ok = cv2.imwrite(str(out_dir / f"{count}.jpg"), img, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY, cv2.IMWRITE_JPEG_OPTIMIZE, 1])
            if not ok:
                raise OSError(f"could not write {out_dir / f'{count}.jpg'}")
    return count


# --------------------------------------------------------------------------------------------
# Annotations
# --------------------------------------------------------------------------------------------
def official_record(qa: QA) -> dict:
    return {
        "question": qa.question,
        "answers": list(qa.answers),
        "video_id": qa.video_id,
        "question_id": qa.question_id,
        "video_width": WIDTH,
        "video_height": HEIGHT,
        "source1": qa.source1,
        "source2": qa.source2,
    }


def write_json(path: Path, obj: object) -> None:
    path.write_text(json.dumps(obj, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")


def write_annotations(out: Path, frame_counts: dict[str, int]) -> None:
    for qa in QUESTIONS:
        bad = [f for f in qa.frames if not 0 <= f < frame_counts[qa.video_id]]
        if bad or not qa.frames:
            raise ValueError(f"question {qa.question_id}: answer frames {qa.frames} out of range")
    (out / "Annotations").mkdir(parents=True, exist_ok=True)
    write_json(out / "Annotations" / ANNOTATION_NAME, {
        "dataset_type": "sample",
        "dataset_name": "vtvqa",
        "dataset_version": "0.0.2",
        "data": [official_record(qa) for qa in QUESTIONS],
    })
    write_json(out / "answer_frames.json", {
        "description": "question_id -> 0-based frame indices (frame_index i is img_dir/<video_id>/"
                       "<i+1>.jpg) where the answer or its visual evidence is visible",
        "fps": FPS,
        "questions": {str(qa.question_id): {"video_id": qa.video_id, "frame_index": list(qa.frames)}
                      for qa in QUESTIONS},
    })


# --------------------------------------------------------------------------------------------
# Verification (optional, slow: OCR)
# --------------------------------------------------------------------------------------------
def normalize(text: str) -> str:
    """Lower-case, accents folded, everything but letters/digits removed (OCR splits words)."""
    folded = unicodedata.normalize("NFKD", text.lower())
    return "".join(c for c in folded if c.isalnum() and not unicodedata.combining(c))


def answer_in_frames(answer: str, frame_texts: Sequence[str]) -> bool:
    """True if ``answer`` is inside one frame's text, or is pieced together in frame order.

    The second case is for Multi-frame questions whose answer is a caption split over two shots:
    the answer must split into consecutive pieces, each found in a later frame than the previous.
    All strings are already normalized.
    """
    if not answer:
        return True
    for i, text in enumerate(frame_texts):
        if answer in text:
            return True
        for cut in range(len(answer) - 1, 0, -1):
            if answer[:cut] in text and answer_in_frames(answer[cut:], frame_texts[i + 1 :]):
                return True
    return False


def verify_text_answers(out: Path) -> list[str]:
    """Return a message for each Text question none of whose answers rapidocr reads."""
    from rapidocr import RapidOCR

    engine = RapidOCR()
    cache: dict[tuple[str, int], str] = {}
    problems = []
    for qa in QUESTIONS:
        if qa.source2 != TEXT:
            continue
        texts = []
        for f in qa.frames:
            key = (qa.video_id, f)
            if key not in cache:
                res = engine(str(out / "img_dir" / qa.video_id / f"{f + 1}.jpg"))
                cache[key] = normalize("".join(res.txts or ()))
            texts.append(cache[key])
        if not any(answer_in_frames(normalize(a), texts) for a in qa.answers):
            problems.append(f"{qa.question_id} {qa.answers[0]!r} not in OCR of frames {qa.frames}: {texts}")
    return problems


# --------------------------------------------------------------------------------------------
def build(shared: Path, out: Path) -> dict[str, int]:
    """Rebuild ``out`` from scratch; returns frames per video."""
    for sub in ("videos", "img_dir", "Annotations"):
        shutil.rmtree(out / sub, ignore_errors=True)
    (out / "videos").mkdir(parents=True)
    counts: dict[str, int] = {}
    for spec in VIDEOS:
        mp4 = out / "videos" / f"{spec.video_id}.mp4"
        encoded = write_mp4(video_frames(spec, shared), mp4, FPS, pixel_format="bgr24", crf=X264_CRF,
                            preset="medium")
        decoded = decode_to_jpegs(mp4, out / "img_dir" / spec.video_id)
        if encoded != decoded:
            raise RuntimeError(f"{spec.video_id}: encoded {encoded} frames but decoded {decoded}")
        counts[spec.video_id] = decoded
        print(f"{spec.video_id} {spec.slug}: {decoded} frames, {mp4.stat().st_size / 1e3:.0f} kB")
    write_annotations(out, counts)
    return counts


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("shared", nargs="?", type=Path, default=DEFAULT_SHARED,
                        help="the shared samples folder (default: ../shared/samples from the repo root)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="dataset root to (re)write")
    parser.add_argument("--verify", action="store_true", help="OCR the answer frames afterwards")
    args = parser.parse_args(argv)
    if not (args.shared / PEXELS_VIDEO).is_file():
        print(f"error: {args.shared} does not look like the shared samples folder", file=sys.stderr)
        return 2
    build(args.shared, args.out)
    if args.verify:
        problems = verify_text_answers(args.out)
        for p in problems:
            print("UNREAD:", p)
        return 1 if problems else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
