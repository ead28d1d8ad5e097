"""A micro text-rich video QA benchmark, rendered procedurally in the official M4-ViteVQA layout.

``videor4 micro-data`` writes a dataset root the toolkit reads like the real one —
``Annotations/ViteVQA_0.0.2_<split>.json``, ``videos/<id>.mp4`` and the official precomputed OCR
``video_ocr/<id>.json`` (``{frame: [{"points": [8 numbers], "ocr": text}]}``) — whose questions can only be
answered by looking again, so a model that learns to clip and crop visibly beats one that does not:

* **crop** questions ask for the number on a *static* sign whose digits are a few pixels tall at the model's
  frame size (``prompt.frame_max_pixels``) and about four times taller in a crop of the text (the executor's
  crop fitted to ``prompt.crop_max_pixels``): see :meth:`MicroSpec.geometry`, which derives and checks the sizes
  from the view;
* **clip** questions ask for the number on a sign that *slides in* between two of the initially sampled frames
  (``uniform_indices`` decides which), lights its big digits up only while it stands still, and leaves before the
  next sampled frame: the sampled frame where it enters is the cue that tells which window to clip;
* **clip+crop** questions are the same with small digits: clip to the window, then crop the text.

Every video also holds distractors of the same kind — other static signs (elsewhere in space) and another
sliding sign in another window (elsewhere in time), each with its own number — and questions name the sign by
colour, colour and shape, or position. Answers are two-digit numbers (10–99, all different within a video), so
guessing scores 1/90 ≈ 1.1 %. Pixels are real fonts (the DejaVu TTFs shipped inside the pinned OpenCV wheel, so
every machine renders the same glyphs), varied backgrounds (gradients, stripes, tiles, blobs, clutter), sensor
noise, camera drift and zoom, motion blur on sliding signs, and H.264 compression.

Everything is a pure function of ``(seed, split, index)``: the same command writes the same questions and
pixels, videos render in parallel processes, and a test split from an unseen seed is one flag away.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from videor4.contracts.atomic import atomic_write, write_json_atomic
from videor4.contracts.dataset import ANNOTATION_PATTERN
from videor4.contracts.executor import ImageRef, OpsConfig
from videor4.contracts.media import uniform_indices, write_mp4
from videor4.contracts.view import PromptConfig, ShardView, display_size

QuestionKind = Literal["crop", "clip", "clip+crop"]
KINDS: tuple[QuestionKind, ...] = ("crop", "clip", "clip+crop")

# The micro view (recorded in the shards by curation/configs/micro.yaml; the test checks they agree): 4 frames of
# 112x84 px (12 visual tokens each), crops of about 56x56 px (4 tokens: one per digit column), clips of 4
# frames, at most 3 calls.
MICRO_PROMPT = PromptConfig(num_frames=4, frame_max_pixels=12 * 28 * 28, crop_max_pixels=6 * 28 * 28,
                            min_pixels=28 * 28)
MICRO_OPS = OpsConfig(clip_frames=4, max_calls=3, max_images=12, crop_short_side=56, crop_max_pixels=6 * 28 * 28)
MICRO_VIEW = ShardView(prompt=MICRO_PROMPT, ops=MICRO_OPS)

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (214, 40, 40), "green": (40, 160, 60), "blue": (45, 85, 215), "yellow": (245, 215, 40),
    "purple": (135, 55, 175), "orange": (245, 135, 25), "white": (245, 245, 245), "pink": (240, 110, 180),
}
SHAPES = ("rectangular", "round", "hexagonal")
ROWS, COLS = ("top", "middle", "bottom"), ("left", "centre", "right")


def _position_phrase(row: int, col: int) -> str:
    if (row, col) == (1, 1):
        return "in the centre"
    if row == 1:
        return f"on the {COLS[col]}"
    if col == 1:
        return f"at the {ROWS[row]}"
    return f"at the {ROWS[row]} {COLS[col]}"


class MicroSpec(BaseModel):
    """Sizes and timing of the micro videos; :meth:`geometry` derives what the model sees from the view."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    width: int = Field(448, description="video width (px)")
    height: int = Field(336, description="video height (px)")
    fps: int = Field(10, description="frames per second")
    num_frames: int = Field(32, description="frames per video (3.2 s at 10 fps)")
    small_digit_px: tuple[int, int] = Field((15, 18), description="digit height of small text (source px)")
    big_digit_px: tuple[int, int] = Field((72, 80), description="digit height of big text (source px)")
    margin: int = Field(20, description="camera drift range (px): the scene is rendered this much larger")
    questions_per_video: int = Field(2, ge=1, le=3, description="questions per video (each about another sign)")
    pretrain_crop_margin: tuple[float, float] = Field(
        (0.8, 0.8), description="pretraining crops: the margin around the text on each side, in text heights, drawn "
        "per side uniformly from this range. (0.8, 0.8) is the centred crop curation writes; a range also teaches "
        "reading the off-centre crops a model's own boxes give (docs/learning_benchmark.md)")
    prompt: PromptConfig = MICRO_PROMPT
    ops: OpsConfig = MICRO_OPS

    @field_validator("pretrain_crop_margin")
    @classmethod
    def _margin_range(cls, v: tuple[float, float]) -> tuple[float, float]:
        if not 0 <= v[0] <= v[1] <= 3:
            raise ValueError(f"{v[0]:g}..{v[1]:g} text heights: need 0 <= low <= high <= 3")
        return v

    @property
    def view(self) -> ShardView:
        return ShardView(prompt=self.prompt, ops=self.ops)

    @property
    def initial_frames(self) -> list[int]:
        return uniform_indices(self.num_frames, self.prompt.num_frames)

    def geometry(self) -> dict[str, float]:
        """Displayed sizes of the text, derived from the view: small digits are unreadable in a frame and
        readable in a crop; big digits are readable in a frame. Raises if a size breaks that."""
        frame_w, frame_h = display_size(self.prompt, ImageRef(0, 0.0), (self.width, self.height))
        scale = frame_h / self.height
        small, big = self.small_digit_px, self.big_digit_px
        # The crop curation writes: the text box grown by 0.8 text heights per side (TrajectoryConfig.crop_context)
        # and padded by ops.crop_pad, rendered by the executor and fitted to prompt.crop_max_pixels.
        text_w, text_h = 1.75 * small[0], small[0]
        region_w = (text_w + 1.6 * text_h) * (1 + 2 * self.ops.crop_pad)
        region_h = (text_h + 1.6 * text_h) * (1 + 2 * self.ops.crop_pad)
        up = min(self.ops.crop_short_side / min(region_w, region_h),
                 math.sqrt(self.ops.crop_max_pixels / (region_w * region_h)))
        rendered = (max(1, round(region_w * max(up, 1.0))), max(1, round(region_h * max(up, 1.0))))
        crop_w, crop_h = display_size(self.prompt, ImageRef(0, 0.0, (0.0, 0.0, 0.5, 0.5)), rendered)
        crop_scale = crop_h / region_h
        out = {
            "frame_display_w": frame_w, "frame_display_h": frame_h, "frame_scale": scale,
            "small_digit_in_frame_px": small[1] * scale, "big_digit_in_frame_px": big[0] * scale,
            "crop_display_w": crop_w, "crop_display_h": crop_h,
            "small_digit_in_crop_px": small[0] * crop_scale,
        }
        if out["small_digit_in_frame_px"] > 6:
            raise ValueError(f"small text is {out['small_digit_in_frame_px']:.1f} px tall in a frame: readable")
        if out["small_digit_in_crop_px"] < 14:
            raise ValueError(f"small text is {out['small_digit_in_crop_px']:.1f} px tall in a crop: too small")
        if out["big_digit_in_frame_px"] < 14:
            raise ValueError(f"big text is {out['big_digit_in_frame_px']:.1f} px tall in a frame: too small")
        return out


# --- fonts ----------------------------------------------------------------------------------------------------
def font_paths() -> list[Path]:
    """The DejaVu TTFs inside the pinned ``opencv-python`` wheel (identical on every machine), light weight
    excluded (its strokes vanish at 15 px)."""
    folder = Path(cv2.__file__).parent / "qt" / "fonts"
    found = sorted(p for p in folder.glob("DejaVu*.ttf") if "ExtraLight" not in p.name)
    if not found:
        system = Path("/usr/share/fonts/truetype/dejavu")
        found = sorted(p for p in system.glob("DejaVuSans*.ttf") if "ExtraLight" not in p.name)
    if not found:
        raise FileNotFoundError(f"no DejaVu fonts in {folder} (opencv-python wheel) or /usr/share/fonts")
    return found


_FONT_CACHE: dict[tuple[str, int], Any] = {}


def _font(path: Path, size: int) -> Any:
    from PIL import ImageFont

    key = (str(path), size)
    if key not in _FONT_CACHE:
        _FONT_CACHE[key] = ImageFont.truetype(str(path), size)
    return _FONT_CACHE[key]


# --- signs ----------------------------------------------------------------------------------------------------
@dataclass
class Sprite:
    """An RGBA sign image; ``text_box`` is the ink box of its digits (x1, y1, x2, y2) in sprite pixels."""

    rgba: np.ndarray
    text_box: tuple[float, float, float, float]
    blank: np.ndarray  # the same sign without text (sliding, or before its number lights up)


def _shape_mask(shape: str, w: int, h: int) -> Any:
    from PIL import Image, ImageDraw

    mask = Image.new("L", (w, h), 0)
    draw = ImageDraw.Draw(mask)
    if shape == "round":
        draw.ellipse((0, 0, w - 1, h - 1), fill=255)
    elif shape == "hexagonal":
        k = 0.22 * w
        draw.polygon([(k, 0), (w - 1 - k, 0), (w - 1, h / 2), (w - 1 - k, h - 1), (k, h - 1), (0, h / 2)], fill=255)
    else:
        draw.rounded_rectangle((0, 0, w - 1, h - 1), radius=max(2, h // 8), fill=255)
    return mask


def render_sign(rng: np.random.Generator, shape: str, colour: str, text: str, digit_px: int,
                plate_scale: float) -> Sprite:
    """A plate of ``shape``/``colour`` with ``text`` in a random DejaVu face, digits ``digit_px`` tall."""
    from PIL import Image, ImageDraw

    fonts = font_paths()
    path = fonts[int(rng.integers(len(fonts)))]
    size = max(6, round(digit_px / 0.73))
    font = _font(path, size)
    x1, y1, x2, y2 = font.getbbox(text)
    ink_w, ink_h = x2 - x1, y2 - y1
    margin_x = 0.5 * ink_h * plate_scale + (0.25 * ink_w if shape != "rectangular" else 0)
    margin_y = 0.45 * ink_h * plate_scale + (0.2 * ink_h if shape != "rectangular" else 0)
    w, h = round(ink_w + 2 * margin_x), round(ink_h + 2 * margin_y)
    fill = np.array(COLOURS[colour], dtype=float)
    fill = np.clip(fill * rng.uniform(0.88, 1.08), 0, 255)
    luminance = 0.299 * fill[0] + 0.587 * fill[1] + 0.114 * fill[2]
    ink = (20, 20, 20) if luminance > 140 else (250, 250, 250)
    border = tuple(int(v) for v in np.clip(fill * 0.55, 0, 255))
    mask = _shape_mask(shape, w, h)
    plate = Image.new("RGB", (w, h), tuple(int(v) for v in fill))
    edge = Image.new("RGB", (w, h), border)
    inner = _shape_mask(shape, max(2, w - 4), max(2, h - 4))
    inner_full = Image.new("L", (w, h), 0)
    inner_full.paste(inner, (2, 2))
    body = Image.composite(plate, edge, inner_full)
    blank = np.dstack([np.asarray(body), np.asarray(mask)])
    draw = ImageDraw.Draw(body)
    ox, oy = (w - ink_w) / 2 - x1, (h - ink_h) / 2 - y1
    draw.text((ox, oy), text, font=font, fill=ink)
    rgba = np.dstack([np.asarray(body), np.asarray(mask)])
    box = (ox + x1, oy + y1, ox + x2, oy + y2)
    return Sprite(rgba, box, blank)


def _paste_label(labels: np.ndarray, mask: np.ndarray, x: float, y: float, value: int) -> None:
    h, w = mask.shape
    x0, y0 = int(round(x)), int(round(y))
    cx1, cy1, cx2, cy2 = max(0, x0), max(0, y0), min(labels.shape[1], x0 + w), min(labels.shape[0], y0 + h)
    if cx2 > cx1 and cy2 > cy1:
        region = labels[cy1:cy2, cx1:cx2]
        region[mask[cy1 - y0:cy2 - y0, cx1 - x0:cx2 - x0]] = value


def _motion_blur(rgba: np.ndarray, dx: float) -> np.ndarray:
    k = int(min(15, abs(dx) * 0.6))
    if k < 2:
        return rgba
    kernel = np.zeros((1, k), np.float32)
    kernel[0, :] = 1.0 / k
    return cv2.filter2D(rgba, -1, kernel, borderType=cv2.BORDER_CONSTANT)


def _paste(canvas: np.ndarray, rgba: np.ndarray, x: float, y: float) -> None:
    """Alpha-blend ``rgba`` with its top-left corner at (x, y) (rounded), clipped to the canvas."""
    h, w = rgba.shape[:2]
    x0, y0 = int(round(x)), int(round(y))
    cx1, cy1 = max(0, x0), max(0, y0)
    cx2, cy2 = min(canvas.shape[1], x0 + w), min(canvas.shape[0], y0 + h)
    if cx2 <= cx1 or cy2 <= cy1:
        return
    part = rgba[cy1 - y0:cy2 - y0, cx1 - x0:cx2 - x0].astype(np.float32)
    alpha = part[..., 3:4] / 255.0
    region = canvas[cy1:cy2, cx1:cx2].astype(np.float32)
    canvas[cy1:cy2, cx1:cx2] = (region * (1 - alpha) + part[..., :3] * alpha).astype(np.uint8)


# --- backgrounds ------------------------------------------------------------------------------------------------
def _muted(rng: np.random.Generator, lo: int = 60, hi: int = 200) -> np.ndarray:
    grey = rng.uniform(lo, hi)
    return np.clip(grey + rng.normal(0, 18, 3), 0, 255)


def render_background(rng: np.random.Generator, w: int, h: int) -> np.ndarray:
    """A textured, low-saturation backdrop (so the saturated signs stand out by colour, not by contrast alone)."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    kind = rng.integers(4)
    a, b = _muted(rng), _muted(rng)
    angle = rng.uniform(0, math.pi)
    t = ((xx * math.cos(angle) + yy * math.sin(angle)) / (w + h) + 0.5)[..., None]
    base = a * (1 - t) + b * t
    if kind == 1:  # stripes
        period = rng.uniform(18, 60)
        s = (np.sin((xx * math.sin(angle) - yy * math.cos(angle)) * 2 * math.pi / period) > 0)[..., None]
        base = base + s * rng.uniform(-30, 30)
    elif kind == 2:  # tiles (a wall)
        tw, th = int(rng.integers(30, 70)), int(rng.integers(20, 45))
        shade = rng.normal(0, 12, (h // th + 2, w // tw + 2))
        rows = (yy // th).astype(int)
        cols = ((xx + (rows % 2) * tw / 2) // tw).astype(int)
        base = base + shade[rows, cols][..., None]
        base = base - 35 * (((yy % th) < 2) | (((xx + (rows % 2) * tw / 2) % tw) < 2))[..., None]
    elif kind == 3:  # blobs
        for _ in range(int(rng.integers(4, 9))):
            cx, cy = rng.uniform(0, w), rng.uniform(0, h)
            r = rng.uniform(20, 90)
            d = np.exp(-(((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * r * r)))[..., None]
            base = base * (1 - 0.6 * d) + _muted(rng) * 0.6 * d
    image = np.clip(base, 0, 255).astype(np.uint8)
    for _ in range(int(rng.integers(3, 9))):  # clutter: shapes without text
        colour = tuple(int(v) for v in _muted(rng, 30, 230))
        p1 = (int(rng.integers(0, w)), int(rng.integers(0, h)))
        if rng.random() < 0.5:
            p2 = (p1[0] + int(rng.integers(-120, 120)), p1[1] + int(rng.integers(-120, 120)))
            cv2.line(image, p1, p2, colour, int(rng.integers(1, 5)), cv2.LINE_AA)
        else:
            p2 = (p1[0] + int(rng.integers(10, 70)), p1[1] + int(rng.integers(10, 50)))
            cv2.rectangle(image, p1, p2, colour, -1 if rng.random() < 0.5 else 2, cv2.LINE_AA)
    return cv2.GaussianBlur(image, (0, 0), 0.8)


# --- scenes -----------------------------------------------------------------------------------------------------
@dataclass
class Sign:
    colour: str
    shape: str
    number: str
    slot: tuple[int, int]  # (row, col) of the 3x3 grid
    kind: Literal["static", "slide"]
    big: bool
    sprite: Sprite
    x: float  # top-left of the sprite in canvas pixels when standing still
    y: float
    gap: int = -1  # slide: between initial frames gap and gap + 1
    enter_from: int = -1  # slide: -1 left edge, +1 right edge
    text_frames: tuple[int, int] = (0, -1)  # slide: frames (inclusive) during which its number is lit

    def place(self, frame: int, initial: Sequence[int], width: int, margin: int) -> tuple[np.ndarray, float, float] | None:
        """(rgba, x, y) of the sign in ``frame`` (canvas pixels), or None when it is off screen."""
        if self.kind == "static":
            return self.sprite.rgba, self.x, self.y
        a = initial[self.gap]
        w = self.sprite.rgba.shape[1]
        off = -w - 4 if self.enter_from < 0 else width + 2 * margin + 4
        # Slides in over frames a-2 .. a+1, stands still a+1 .. a+6, slides out a+6 .. a+8 (gone by the next
        # initial frame, a+8 with the micro timing).
        if frame < a - 2 or frame >= a + 8:
            return None
        if frame <= a + 1:
            f = (frame - (a - 2)) / 3
            x, dx = off + (self.x - off) * f, (self.x - off) / 3
        elif frame <= a + 6:
            x, dx = self.x, 0.0
        else:
            f = (frame - (a + 6)) / 2
            x, dx = self.x + (off - self.x) * f, (off - self.x) / 2
        lit = self.text_frames[0] <= frame <= self.text_frames[1]
        rgba = self.sprite.rgba if lit else self.sprite.blank
        return _motion_blur(rgba, dx), x, self.y


@dataclass
class Question:
    question_id: int
    question: str
    answer: str
    kind: QuestionKind
    naming: str
    sign: int  # index into the video's signs


@dataclass
class VideoPlan:
    video_id: str
    signs: list[Sign]
    questions: list[Question]
    background: np.ndarray
    camera: list[np.ndarray] = field(default_factory=list)  # per frame 2x3 affine, canvas -> frame
    noise_sigma: float = 3.0
    labels: dict[int, np.ndarray] = field(default_factory=dict)  # pretraining: sign colour per pixel


def _rng(seed: int, split: str, index: int, part: str = "") -> np.random.Generator:
    digest = hashlib.sha256(f"videor4-micro/{seed}/{split}/{index}/{part}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def _slot_xy(spec: MicroSpec, slot: tuple[int, int], sprite: Sprite, rng: np.random.Generator) -> tuple[float, float]:
    row, col = slot
    cx = spec.width * (col + 0.5) / 3 + spec.margin + rng.uniform(-8, 8)
    cy = spec.height * (row + 0.5) / 3 + spec.margin + rng.uniform(-6, 6)
    h, w = sprite.rgba.shape[:2]
    # The whole sign stays in view whatever the camera drift (±0.9 margin): big signs are pulled inwards.
    lo_x, hi_x = 2 * spec.margin, spec.width - w
    lo_y, hi_y = 2 * spec.margin, spec.height - h
    return min(max(cx - w / 2, lo_x), max(lo_x, hi_x)), min(max(cy - h / 2, lo_y), max(lo_y, hi_y))


def _question_text(rng: np.random.Generator, sign: Sign, naming: str) -> str:
    if sign.kind == "slide":
        what = f"{sign.colour} sign" if naming == "colour" else f"{sign.colour} {sign.shape} sign"
        template = ("What number appears on the {w} that slides in?", "What number does the {w} show after it "
                    "slides in?", "Which number lights up on the {w} that moves in?")
        return template[int(rng.integers(len(template)))].format(w=what)
    if naming == "position":
        return f"What number is on the sign {_position_phrase(*sign.slot)}?"
    what = f"{sign.colour} sign" if naming == "colour" else f"{sign.colour} {sign.shape} sign"
    template = ("What number is on the {w}?", "What number is written on the {w}?", "Which number does the {w} show?")
    return template[int(rng.integers(len(template)))].format(w=what)


def plan_video(spec: MicroSpec, seed: int, split: str, index: int, video_id: str, first_qid: int,
               kinds: Sequence[QuestionKind]) -> VideoPlan:
    """Lay out one video for questions of ``kinds`` (one sign each) plus distractors, deterministically."""
    rng = _rng(seed, split, index)
    initial = spec.initial_frames
    gaps = list(range(len(initial) - 1))
    slides = [k for k in kinds if k != "crop"]
    n_static = max(sum(k == "crop" for k in kinds) + 1, int(rng.integers(2, 4)))
    n_slide = min(len(gaps), max(len(slides) + 1, int(rng.integers(1, 3))))
    slots = [(r, c) for r in range(3) for c in range(3)]
    order = rng.permutation(len(slots))
    chosen = [slots[i] for i in order[: n_static + n_slide]]
    colours = [list(COLOURS)[i] for i in rng.permutation(len(COLOURS))[: n_static + n_slide]]
    numbers = [str(n) for n in rng.choice(np.arange(10, 100), n_static + n_slide, replace=False)]
    slide_gaps = [int(g) for g in rng.permutation(gaps)[:n_slide]]
    # Sliding signs with big text are the "clip" questions, small text "clip+crop"; distractor slides get either.
    slide_big = [k == "clip" for k in slides] + [bool(rng.random() < 0.5) for _ in range(n_slide - len(slides))]
    signs: list[Sign] = []
    for j in range(n_static + n_slide):
        static = j < n_static
        big = False if static else slide_big[j - n_static]
        lo, hi = spec.big_digit_px if big else spec.small_digit_px
        shape = SHAPES[int(rng.integers(len(SHAPES)))]
        sprite = render_sign(rng, shape, colours[j], numbers[j], int(rng.integers(lo, hi + 1)),
                             plate_scale=0.5 if big else float(rng.uniform(1.6, 2.2)))
        x, y = _slot_xy(spec, chosen[j], sprite, rng)
        sign = Sign(colours[j], shape, numbers[j], chosen[j], "static" if static else "slide", big, sprite, x, y)
        if not static:
            g = slide_gaps[j - n_static]
            a = initial[g]
            sign.gap, sign.enter_from = g, (-1 if chosen[j][1] < 1 or (chosen[j][1] == 1 and rng.random() < 0.5)
                                            else 1)
            sign.text_frames = (a + int(rng.integers(1, 3)), a + int(rng.integers(5, 7)))
        signs.append(sign)
    questions: list[Question] = []
    static_ids = list(range(n_static))
    slide_ids = list(range(n_static, n_static + n_slide))
    for k, kind in enumerate(kinds):
        if kind == "crop":
            target = static_ids.pop(int(rng.integers(len(static_ids))))
            naming = ("colour", "colour+shape", "position")[int(rng.choice(3, p=[0.5, 0.25, 0.25]))]
        else:
            want_big = kind == "clip"
            target = next(i for i in slide_ids if signs[i].big == want_big)
            slide_ids.remove(target)
            naming = ("colour", "colour+shape")[int(rng.random() < 0.3)]
        questions.append(Question(first_qid + k, _question_text(rng, signs[target], naming), signs[target].number,
                                  kind, naming, target))
    background = render_background(rng, spec.width + 2 * spec.margin, spec.height + 2 * spec.margin)
    plan = VideoPlan(video_id, signs, questions, background, noise_sigma=float(rng.uniform(2.0, 6.0)))
    # Camera: a slow drift plus a slight zoom and sub-pixel shake, all within the rendered margin.
    start = rng.uniform(-0.5, 0.5, 2) * spec.margin
    end = np.clip(start + rng.uniform(-0.8, 0.8, 2) * spec.margin, -spec.margin * 0.9, spec.margin * 0.9)
    zoom0, zoom1 = 1.0, float(rng.uniform(0.98, 1.04))
    for f in range(spec.num_frames):
        t = f / max(1, spec.num_frames - 1)
        ox, oy = start + (end - start) * t + rng.normal(0, 0.4, 2)
        s = zoom0 + (zoom1 - zoom0) * t
        cx, cy = spec.width / 2, spec.height / 2
        # frame = s * (canvas - margin - offset - centre) + centre
        tx = cx - s * (spec.margin + ox + cx)
        ty = cy - s * (spec.margin + oy + cy)
        plan.camera.append(np.array([[s, 0, tx], [0, s, ty]], dtype=np.float64))
    return plan


def render_frames(spec: MicroSpec, plan: VideoPlan, seed: int, label_frames: Sequence[int] = ()
                  ) -> tuple[list[np.ndarray], dict[str, list[dict]]]:
    """RGB frames and the official precomputed OCR of every frame (text boxes of lit, fully visible signs).

    For frames in ``label_frames`` (pretraining only) ``plan.labels[f]`` is a map of the sign colour under each
    pixel (index into :data:`COLOURS` + 1, 0 = no sign).
    """
    rng = np.random.default_rng(int(hashlib.sha256(f"{seed}/{plan.video_id}/noise".encode()).hexdigest()[:12], 16))
    initial = spec.initial_frames
    static_canvas = plan.background.copy()
    for sign in plan.signs:
        if sign.kind == "static":
            _paste(static_canvas, sign.sprite.rgba, sign.x, sign.y)
    # Sensor noise: a few independent fields per video, shifted per frame (drawing one per frame dominated time).
    bank = [(rng.standard_normal((spec.height + 16, spec.width + 16, 3), dtype=np.float32) * plan.noise_sigma
             ).astype(np.int16) for _ in range(4)]
    frames, ocr = [], {}
    for f in range(spec.num_frames):
        canvas = static_canvas.copy()
        labels = np.zeros(canvas.shape[:2], np.uint8) if f in label_frames else None
        visible: list[tuple[Sign, float, float]] = []
        for sign in plan.signs:
            placed = sign.place(f, initial, spec.width, spec.margin)
            if placed is None:
                continue
            rgba, x, y = placed
            if sign.kind == "slide":
                _paste(canvas, rgba, x, y)
            if labels is not None:
                _paste_label(labels, rgba[..., 3] > 127, x, y, list(COLOURS).index(sign.colour) + 1)
            lit = sign.kind == "static" or sign.text_frames[0] <= f <= sign.text_frames[1]
            if lit and x == sign.x:
                visible.append((sign, x, y))
        m = plan.camera[f]
        frame = cv2.warpAffine(canvas, m, (spec.width, spec.height), flags=cv2.INTER_LINEAR,
                               borderMode=cv2.BORDER_REFLECT)
        dy, dx = (int(v) for v in rng.integers(0, 16, 2))
        noise = bank[f % len(bank)][dy:dy + spec.height, dx:dx + spec.width]
        frame = cv2.add(frame, noise, dtype=cv2.CV_8U)
        frames.append(frame)
        if labels is not None:
            plan.labels[f] = cv2.warpAffine(labels, m, (spec.width, spec.height), flags=cv2.INTER_NEAREST,
                                            borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        boxes = []
        for sign, x, y in visible:
            x1, y1, x2, y2 = sign.sprite.text_box
            corners = np.array([[x + x1, y + y1], [x + x2, y + y1], [x + x2, y + y2], [x + x1, y + y2]])
            pts = corners @ m[:, :2].T + m[:, 2]
            if pts.min() < 0 or pts[:, 0].max() > spec.width - 1 or pts[:, 1].max() > spec.height - 1:
                continue
            boxes.append({"points": [round(float(v), 1) for v in pts.reshape(-1)], "ocr": sign.number})
        ocr[str(f + 1)] = boxes
    return frames, ocr


# --- splits -----------------------------------------------------------------------------------------------------
SPLIT_ID_BASE = {"train": 10000, "test": 50000, "pretrain": 90000}


def split_kinds(n_videos: int, per_video: int, seed: int, split: str) -> list[tuple[QuestionKind, ...]]:
    """Question kinds per video, balanced over the split and shuffled: with ``per_video`` = 2 the videos cycle
    through the three pairs of different kinds (each kind is a third of the questions); 1 and 3 cycle through
    single kinds and take all three."""
    if per_video == 2:
        groups: list[tuple[QuestionKind, ...]] = [("crop", "clip"), ("crop", "clip+crop"), ("clip", "clip+crop")]
    elif per_video == 1:
        groups = [(k,) for k in KINDS]
    else:
        groups = [KINDS]
    cycle = [groups[i % len(groups)] for i in range(n_videos)]
    order = _rng(seed, split, -1, "kinds").permutation(n_videos)
    return [cycle[i] for i in order]


def _render_one(args: tuple[MicroSpec, int, str, int, str, int, tuple[QuestionKind, ...], str]) -> list[dict]:
    spec, seed, split, index, video_id, first_qid, kinds, root = args
    out = Path(root)
    plan = plan_video(spec, seed, split, index, video_id, first_qid, kinds)
    video, ocr_path = out / "videos" / f"{video_id}.mp4", out / "video_ocr" / f"{video_id}.json"
    if not (video.is_file() and ocr_path.is_file()):
        frames, ocr = render_frames(spec, plan, seed)
        write_mp4(frames, video, spec.fps)
        write_json_atomic(ocr_path, ocr)
    return [{"question": q.question, "answers": [q.answer], "video_id": video_id, "question_id": q.question_id,
             "video_width": spec.width, "video_height": spec.height, "source1": "Single frame", "source2": "Text",
             "_kind": q.kind, "_naming": q.naming} for q in plan.questions]


def split_name(split: str) -> str:
    return f"micro{split}"


def write_split(out: str | Path, split: Literal["train", "test"], n_questions: int, seed: int,
                spec: MicroSpec | None = None, workers: int = 2) -> dict[str, Any]:
    """Render ``n_questions`` questions (rounded up to whole videos) of ``split`` into ``out``.

    Writes ``Annotations/ViteVQA_0.0.2_micro<split>.json`` (official records), ``videos/``, ``video_ocr/`` and
    ``micro_<split>_kinds.json`` (question id → kind and naming, for per-kind scores). Rerunning skips videos
    already written. Returns a summary.
    """
    spec = spec or MicroSpec()
    spec.geometry()
    out = Path(out)
    for sub in ("Annotations", "videos", "video_ocr"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    per = spec.questions_per_video
    n_videos = math.ceil(n_questions / per) if n_questions > 0 else 0
    if n_videos > 40000:
        raise ValueError("at most 40000 videos per split (5-digit video ids)")
    kinds = split_kinds(n_videos, per, seed, split)
    base = SPLIT_ID_BASE[split]
    jobs = [(spec, seed, split, i, f"{base + i:05d}", (base + i) * 10, kinds[i], str(out)) for i in range(n_videos)]
    if workers > 1 and len(jobs) > 1:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            records = [r for rs in pool.map(_render_one, jobs, chunksize=8) for r in rs]
    else:
        records = [r for job in jobs for r in _render_one(job)]
    records = records[:n_questions] if n_questions > 0 else []
    kinds_map = {str(r["question_id"]): {"kind": r.pop("_kind"), "naming": r.pop("_naming")} for r in records}
    name = split_name(split)
    write_json_atomic(out / "Annotations" / ANNOTATION_PATTERN.format(split=name), {
        "dataset_type": name, "dataset_name": "videor4-micro", "dataset_version": "0.0.2", "data": records})
    write_json_atomic(out / f"micro_{split}_kinds.json", {"seed": seed, "kinds": kinds_map})
    counts = {k: sum(v["kind"] == k for v in kinds_map.values()) for k in KINDS}
    return {"split": name, "seed": seed, "videos": n_videos, "questions": len(records), "kinds": counts}


# --- the micro base model's vision pretraining --------------------------------------------------------------------
class _FrameReader:
    """Rendered frames as a :class:`VideoReader` for the executor (pretraining crops use the benchmark's geometry)."""

    def __init__(self, frames: Sequence[np.ndarray], fps: float):
        self.frames, self.fps = frames, fps
        self.num_frames, (self.height, self.width) = len(frames), frames[0].shape[:2]
        self.video_id, self.backend = "pretrain", "memory"

    def timestamp(self, i: int) -> float:
        return i / self.fps

    def read(self, indices: Sequence[int]):
        for i in indices:
            yield i, self.frames[i]


def _jpeg_roundtrip(image: np.ndarray, quality: int) -> np.ndarray:
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    return cv2.imdecode(buf, cv2.IMREAD_UNCHANGED) if ok else image


def pretrain_examples(spec: MicroSpec, seed: int, index: int) -> dict[str, list]:
    """Images of one pretraining scene (split ``pretrain``: never a benchmark video) as the model is shown them.

    * ``crops``: the executor's crop of every lit text (box grown as curation grows it, or by a margin drawn per
      side from ``spec.pretrain_crop_margin``), fitted to the view, with the number;
    * ``frames``: frames at the view's frame size with the colour of the sign under each visual token (majority
      of its 28x28 px) and the number of a lit big sign fully in view (else "");
    * ``qa``: single-turn questions a pretrained VLM answers and the micro one has to learn first — read a crop
      (``kind`` read_crop), read a big sign (read_frame), give the box of a sign's text (box), say in which of the
      initial frames a sign is (images) — with the images they refer to. No tools, no reasoning, no benchmark
      question.
    """
    from videor4.curation.trajectories import context_box, margin_box

    kinds = split_kinds(1, spec.questions_per_video, seed + index, "pretrain")[0]
    plan = plan_video(spec, seed, "pretrain", index, "pretrain", 0, kinds)
    initial = spec.initial_frames
    rng = _rng(seed, "pretrain", index, "frames")
    lit = sorted({f for s in plan.signs if s.kind == "slide" for f in range(s.text_frames[0], s.text_frames[1] + 1)})
    picked = sorted(set(initial) | set(rng.choice(lit, min(len(lit), 4), replace=False).tolist()))
    frames, ocr = render_frames(spec, plan, seed, label_frames=picked)
    frames = [_jpeg_roundtrip(f, int(rng.integers(70, 95))) if i in picked else f for i, f in enumerate(frames)]
    ex = spec.view.executor(_FrameReader(frames, spec.fps), initial)
    out: dict[str, list] = {"crops": [], "crop_text": [], "frames": [], "frame_colours": [], "frame_text": [],
                            "qa": []}
    tok = spec.prompt.resize_factor
    margin_rng = _rng(seed, "pretrain", index, "crop-margins")  # its own stream: the rest of the set is unchanged
    lo, hi = spec.pretrain_crop_margin
    colour_of = {s.number: s.colour for s in plan.signs}
    frame_pos: dict[int, int] = {}
    for f in picked:
        ref = ImageRef(f, f / spec.fps)
        shown = ex.shown_size(ref)
        image = cv2.resize(frames[f], shown, interpolation=cv2.INTER_AREA)
        labels = plan.labels[f]
        grid = []
        for r in range(shown[1] // tok):
            for c in range(shown[0] // tok):
                y1, y2 = r * labels.shape[0] * tok // shown[1], (r + 1) * labels.shape[0] * tok // shown[1]
                x1, x2 = c * labels.shape[1] * tok // shown[0], (c + 1) * labels.shape[1] * tok // shown[0]
                counts = np.bincount(labels[y1:y2, x1:x2].reshape(-1), minlength=len(COLOURS) + 1)
                grid.append(int(np.argmax(counts[1:]) + 1) if counts[1:].max() * 5 >= counts.sum() else 0)
        big = [b["ocr"] for b in ocr[str(f + 1)] if (b["points"][5] - b["points"][1]) > spec.big_digit_px[0] * 0.8]
        frame_pos[f] = len(out["frames"])
        out["frames"].append(image)
        out["frame_colours"].append(grid)
        out["frame_text"].append(big[0] if len(big) == 1 else "")  # small text is not readable in a frame
        for b in ocr[str(f + 1)]:
            pts = np.asarray(b["points"]).reshape(4, 2)
            box = (pts[:, 0].min() / spec.width, pts[:, 1].min() / spec.height,
                   pts[:, 0].max() / spec.width, pts[:, 1].max() / spec.height)
            grown = context_box(box, spec.width, spec.height, 0.8)
            colour = colour_of[b["ocr"]]
            out["qa"].append({"kind": "box", "frames": [frame_pos[f]],
                              "question": f"Where is the text of the {colour} sign?",
                              "answer": "[" + ", ".join(f"{round(v, 3):g}" for v in grown) + "]"})
            if b["ocr"] in big:
                out["qa"].append({"kind": "read_frame", "frames": [frame_pos[f]],
                                  "question": f"What number is on the {colour} sign?",
                                  "answer": b["ocr"]})
            out["qa"].append({"kind": "read_crop", "crop": len(out["crops"]), "question": "What number is on the sign?",
                              "answer": b["ocr"]})
            region = margin_box(box, spec.width, spec.height, margin_rng.uniform(lo, hi, 4).tolist())
            crop_ref = ImageRef(f, f / spec.fps, ex._compose(ref, tuple(region)))
            display = ex.shown_size(crop_ref)
            crop = ex.render(crop_ref)
            out["crops"].append(cv2.resize(crop, display, interpolation=cv2.INTER_AREA if crop.shape[1] > display[0]
                                           else cv2.INTER_CUBIC))
            out["crop_text"].append(b["ocr"])
    for sign in plan.signs:  # where a sign is seen among the initial frames (a sliding one: only as it enters)
        index = list(COLOURS).index(sign.colour) + 1
        seen = [k + 1 for k, f in enumerate(initial) if int((plan.labels[f] == index).sum()) > 300]
        out["qa"].append({"kind": "images", "frames": [frame_pos[f] for f in initial],
                          "question": f"In which images is the {sign.colour} sign?",
                          "answer": ", ".join(str(k) for k in seen) if seen else "none"})
    return out


def _pretrain_one(args: tuple[MicroSpec, int, int]) -> dict[str, list]:
    return pretrain_examples(*args)


def write_pretrain_set(out: str | Path, n_scenes: int, seed: int, spec: MicroSpec | None = None,
                       workers: int = 2) -> dict[str, Any]:
    """``out/pretrain.npz``: crops and frames of ``n_scenes`` pretraining scenes (see :func:`pretrain_examples`),
    padded to one size per kind with their true sizes recorded, and the scene of every image and question
    (``crop_scene``, ``frame_scene``, ``qa[i]["scene"]``): one sign is seen in several frames, so a held-out check
    must hold out whole scenes."""
    spec = spec or MicroSpec()
    jobs = [(spec, seed, i) for i in range(n_scenes)]
    if workers > 1:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            parts = list(pool.map(_pretrain_one, jobs, chunksize=8))
    else:
        parts = [_pretrain_one(j) for j in jobs]
    qa = []
    frame_base = crop_base = 0
    for scene, part in enumerate(parts):  # image references become indices into the merged arrays
        for item in part["qa"]:
            item = dict(item, scene=scene)
            if "frames" in item:
                item["frames"] = [frame_base + i for i in item["frames"]]
            else:
                item["crop"] = crop_base + item["crop"]
            qa.append(item)
        frame_base += len(part["frames"])
        crop_base += len(part["crops"])
    merged: dict[str, list] = {k: [x for p in parts for x in p[k]] for k in parts[0] if k != "qa"}

    def stack(images: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        h, w = max(i.shape[0] for i in images), max(i.shape[1] for i in images)
        arr = np.zeros((len(images), h, w, 3), np.uint8)
        for k, i in enumerate(images):
            arr[k, : i.shape[0], : i.shape[1]] = i
        return arr, np.array([i.shape[:2] for i in images], np.int32)

    crops, crop_sizes = stack(merged["crops"])
    frames, frame_sizes = stack(merged["frames"])
    def pad(rows: list[list[int]]) -> np.ndarray:
        arr = np.full((len(rows), max(len(r) for r in rows)), -1, np.int64)
        for k, r in enumerate(rows):
            arr[k, : len(r)] = r
        return arr

    arrays = dict(crops=crops, crop_sizes=crop_sizes, crop_text=np.array(merged["crop_text"]),
                  frames=frames, frame_sizes=frame_sizes, frame_colours=pad(merged["frame_colours"]),
                  frame_text=np.array(merged["frame_text"]), qa=np.array(json.dumps(qa)), seed=seed,
                  crop_margin=np.array(spec.pretrain_crop_margin),
                  crop_scene=np.repeat(np.arange(n_scenes), [len(p["crops"]) for p in parts]).astype(np.int32),
                  frame_scene=np.repeat(np.arange(n_scenes), [len(p["frames"]) for p in parts]).astype(np.int32))

    def save(tmp: Path) -> None:
        with open(tmp, "wb") as f:  # a file object: given a path, numpy would append ".npz" to the temporary name
            np.savez_compressed(f, **arrays)

    # Atomic: a run killed while writing leaves no half file that a resumed benchmark would take as finished.
    path = atomic_write(Path(out) / "pretrain.npz", save)
    return {"scenes": n_scenes, "crops": len(crops), "frames": len(frames), "qa": len(qa), "path": str(path)}


# --- the no-tool baseline's training data ---------------------------------------------------------------------------
DIRECT_THOUGHT = "I answer from the frames shown."


def write_direct_answer_shards(shards: str | Path, out: str | Path) -> dict[str, Any]:
    """SFT data for the no-tool baseline: every question of ``shards`` (CoT or RL row, once) as a single-pass
    chat — the no-tools system prompt, the same initial frames, one answer turn — written as a ``drp`` CoT stage
    of ``out`` with the source manifest's view, so ``videor4 train`` trains it like any SFT stage and
    ``videor4 eval run --no-tools`` asks it the same way."""
    from videor4.contracts.chat import Turn, chat_messages
    from videor4.contracts.dataset import media_path
    from videor4.contracts.errors import UserError
    from videor4.contracts.executor import ImageRef as Ref
    from videor4.contracts.media import open_video
    from videor4.contracts.shard_codec import chat_to_shard_messages
    from videor4.contracts.shard_io import COMPUTED_MANIFEST_KEYS, iter_rows, read_manifest, write_manifest, write_stage
    from videor4.contracts.shard_schema import CoTRow, make_sample_id
    from videor4.contracts.tool_protocol import format_answer_turn
    from videor4.contracts.view import view_from_manifest

    shards, out = Path(shards), Path(out)
    manifest = read_manifest(shards)
    view = view_from_manifest(manifest) or MICRO_VIEW
    prompt = view.prompt.model_copy(update={"tools": False})
    if not manifest.get("data_root"):
        raise UserError(f"{shards}: the manifest records no data_root (the videos the rows point to)")
    rows: dict[int, CoTRow] = {}
    sizes: dict[str, tuple[int, int]] = {}
    for row in iter_rows(shards):
        if row.question_id in rows:
            continue
        fps = row.video.fps
        refs = [Ref(i, i / fps) for i in row.initial_frames]
        if row.video_id not in sizes:  # the prompt states each image's size: the source's, from its header
            with open_video(media_path(manifest["data_root"], row.video.path)) as reader:
                sizes[row.video_id] = (reader.width, reader.height)
        turn = Turn(format_answer_turn(DIRECT_THOUGHT, row.answers[0]))
        messages = chat_messages(row.question, refs, [sizes[row.video_id]] * len(refs), [turn], config=prompt,
                                 ops=view.ops, duration_s=row.video.num_frames / fps)
        common = row.model_dump(exclude={"messages", "ops", "verified", "difficulty", "answer_in_initial",
                                         "required_ops", "sample_id", "stage"})
        rows[row.question_id] = CoTRow(**common, sample_id=make_sample_id(row.video_id, row.question_id, "drp", 9),
                                       stage="drp", messages=chat_to_shard_messages(messages, refs), ops=[],
                                       verified=True)
    write_stage(out, "drp", list(rows.values()))
    extra = {k: v for k, v in manifest.items() if k not in COMPUTED_MANIFEST_KEYS}
    extra["view"] = view.model_copy(update={"prompt": prompt}).model_dump(mode="json")
    extra["derived_from"] = str(shards)
    write_manifest(out, extra)
    return {"rows": len(rows), "out": str(out)}
