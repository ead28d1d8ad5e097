"""Executable rumination trajectories from evidence (DRP and CRP), verified by running them.

A trajectory is written as the model would produce it — ``<think>`` reasoning,
``<tool_call>`` clip/crop calls, final ``<answer>`` — but every call is
*executed* on the real video with the shared :class:`ClipCropExecutor`, so
the observations stored in the shard are exactly the pixels a policy gets at
train time. Reasoning text only states what was actually read: OCR text of
the evidence rows, and the re-OCR of the pixels each crop returned.

Verification (beyond the paper): the crop that is claimed to show the answer
is re-OCR'd and must match a ground-truth answer; a clip must return a frame
in which the answer was seen. Trajectories that fail are kept as rejected
candidates with their reason, and the verification rate is reported.

* DRP — one op kind: crop-only (1 or 2 crops) when the answer is in an
  initial frame; clip-only when it is readable in frames not shown initially.
* CRP — interleaved: clip to the window where the answer appears → crop its
  text → optionally check a second frame → answer (2–3 steps).
"""

from __future__ import annotations

import hashlib
import random
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import cv2
import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from videor4.contracts.boxes import position_phrase
from videor4.contracts.chat import Turn, chat_messages
from videor4.contracts.dataset import QARecord
from videor4.contracts.evidence_schema import EvidenceItem
from videor4.contracts.executor import ClipCropExecutor, ImageRef, OpsConfig, ToolObservation
from videor4.contracts.media import VideoReader
from videor4.contracts.metrics import normalize_answer
from videor4.contracts.shard_codec import chat_to_shard_messages
from videor4.contracts.shard_schema import Message, make_sample_id
from videor4.contracts.tool_protocol import ToolCall, format_answer_turn, format_call_turn
from videor4.contracts.view import PromptConfig, ShardView, display_size
from videor4.curation import evidence
from videor4.curation.evidence import MatchConfig, answer_match_score, best_answer_reading
from videor4.curation.ocr import LineRecognizer, OCRBackend


class TrajectoryConfig(BaseModel):
    """How trajectories are built and verified, and how questions are split between SFT and RL."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    prompt: PromptConfig = Field(PromptConfig(), description="the model's view (same as training/eval)")
    ops: OpsConfig = Field(OpsConfig(), description="tool budgets and crop geometry (same as rollouts)")
    readable_px: float = Field(14.0, description="text boxes shorter than this (px, as displayed) need a crop")
    two_step_area: float = Field(0.01, description="answer boxes under this fraction of the frame get a 2-step crop")
    context_scale: float = Field(4.0, description="first crop of a 2-step crop: this many times the box size")
    crop_context: float = Field(0.8, ge=0, description="crops around text keep this many text heights of "
                                "surroundings on every side: OCR (and a reader) needs the sign around the letters")
    verify_min_score: float = Field(0.6, description="re-OCR of the answer crop must match an answer this well")
    verify_lines: bool = Field(
        True, description="re-read a claimed view by recognising the text line(s) its evidence located first (the "
        "box is known: no text detection); the view is read whole (detection + recognition) only when that reading "
        "does not show the answer. False: always read whole")
    sft_fraction_drp: float = Field(0.35, ge=0, le=1, description="share of DRP-eligible questions used for "
                                    "DRP-SFT (the rest go to RLd); 7k / (7k + 15k) in the paper")
    sft_fraction_crp: float = Field(0.4, ge=0, le=1, description="share of CRP-capable questions used for CRP-SFT "
                                    "(the rest go to RLc); 10k / (10k + 15k) in the paper")
    seed: int = Field(0, description="seed of template choice and of the SFT/RL split hash")

    @property
    def view(self) -> ShardView:
        """The view the trajectories are written for (recorded in the shard manifest)."""
        return ShardView(prompt=self.prompt, ops=self.ops)


@dataclass
class Trajectory:
    """One synthesized candidate, verified or rejected with a reason."""

    sample_id: str
    stage: str  # "drp" | "crp"
    variant: int
    question_id: int
    ops: list[str]
    initial: list[ImageRef]
    turns: list[Turn]
    answer: str
    verified: bool
    reason: str = ""
    reocr_text: str = ""
    messages: list[Message] = field(default_factory=list)


@dataclass(frozen=True)
class Difficulty:
    """How much looking a question needs, estimated from evidence and the initial view."""

    answer_in_initial: bool  # readable in an initial frame as displayed
    required_ops: tuple[str, ...]
    difficulty: float
    rl_stage: str  # "rld" | "rlc"


# --- templates: several phrasings per step, chosen per sample, each states only what was read -----------------
_INTRO = (
    "The question asks: {q} I have {n} frames covering {dur:.1f}s.",
    "I need to answer \"{q}\" from {n} frames of a {dur:.1f}s video.",
    "Question: {q} Let me check the {n} frames I was given ({dur:.1f}s of video).",
)
_SMALL_TEXT = (
    "Image {i} (t={t:.2f}s) has small text {where} that I cannot read reliably at this size, so I will zoom in.",
    "There is a small piece of text {where} in image {i} at {t:.2f}s; it is too small to read, so I crop it.",
    "In image {i} ({t:.2f}s) some text {where} is only a few pixels tall. Zooming in should make it legible.",
)
_CONTEXT_FIRST = (
    "The text is tiny, so I first zoom to the area around it.",
    "I will zoom in two steps: first the surrounding area.",
)
_RECROP = (
    "Image {i} shows the area; now I crop the text itself, {where} in it.",
    "The region is clearer in image {i}. Cropping tighter on the text {where}.",
)
_NEED_CLIP = (
    "The frames I have do not show text that answers this. I will look more densely at {s:.2f}-{e:.2f}s.",
    "None of the given frames lets me read the answer, so I re-watch {s:.2f}s to {e:.2f}s with more frames.",
    "I should look between {s:.2f}s and {e:.2f}s more closely; text in videos like this is often brief.",
)
_CLIP_SAW = (
    "Image {i} (t={t:.2f}s) from the clip shows text reading \"{text}\" {where}.",
    "In the new frames, image {i} at {t:.2f}s has the text \"{text}\" {where}.",
)
_CLIP_SAW_SMALL = (
    "Image {i} (t={t:.2f}s) from the clip has text {where}, still small; I crop it to read it exactly.",
    "The new image {i} at {t:.2f}s shows the text {where}, but it is small, so I zoom in on it.",
)
_CROP_READ = (
    "The zoomed image reads \"{text}\".",
    "Zoomed in, the text says \"{text}\".",
    "Now it is legible: \"{text}\".",
)
_CHECK_OTHER = (
    "Let me check the same text in image {i} ({t:.2f}s) to be sure.",
    "To confirm, I also zoom into image {i} at {t:.2f}s.",
)
_CONFIRMED = (
    "Image {i} reads \"{text}\" as well.",
    "The second view agrees: \"{text}\".",
)
_NOT_CLEARER = "Image {i} is no clearer; the first zoomed view stands."
_FINAL = (
    "So the answer is {a}.",
    "This answers the question: {a}.",
    "Therefore: {a}.",
)


def _box_in(parent: ImageRef, bbox: Sequence[float]) -> list[float]:
    """A source-normalized box expressed relative to a (cropped) context image, clamped, 3 decimals."""
    if parent.bbox is None:
        rel = list(bbox)
    else:
        px1, py1, px2, py2 = parent.bbox
        w, h = px2 - px1, py2 - py1
        rel = [(bbox[0] - px1) / w, (bbox[1] - py1) / h, (bbox[2] - px1) / w, (bbox[3] - py1) / h]
    return [round(min(max(v, 0.0), 1.0), 3) for v in rel]


def context_box(bbox: Sequence[float], width: int, height: int, k: float) -> list[float]:
    """``bbox`` widened by ``k`` text heights (its own pixel height) on every side, clamped to the frame."""
    return margin_box(bbox, width, height, (k, k, k, k))


def margin_box(bbox: Sequence[float], width: int, height: int, margins: Sequence[float]) -> list[float]:
    """``bbox`` widened by its own text height times ``margins`` (left, top, right, bottom), clamped to the frame:
    with unequal margins the text sits off-centre, as in the crops a model's own boxes give."""
    dy = [m * (bbox[3] - bbox[1]) for m in margins]
    dx = [d * height / width for d in dy]
    return [max(0.0, bbox[0] - dx[0]), max(0.0, bbox[1] - dy[1]), min(1.0, bbox[2] + dx[2]),
            min(1.0, bbox[3] + dy[3])]


def _grow_box(bbox: Sequence[float], scale: float) -> list[float]:
    cx, cy = (bbox[0] + bbox[2]) / 2, (bbox[1] + bbox[3]) / 2
    hw, hh = (bbox[2] - bbox[0]) * scale / 2, (bbox[3] - bbox[1]) * scale / 2
    return [max(0.0, cx - hw), max(0.0, cy - hh), min(1.0, cx + hw), min(1.0, cy + hh)]


def split_bucket(question_id: int, pairing: str, seed: int) -> float:
    """A stable number in [0, 1) per (question, pairing): the SFT/RL split needs no state and never drifts."""
    digest = hashlib.sha1(f"{seed}/{pairing}/{question_id}".encode()).hexdigest()
    return int(digest[:12], 16) / float(1 << 48)


class FrameCache:
    """A :class:`VideoReader` that keeps the frames it decoded, for the many executors of one video.

    Every trajectory gets its own executor (its own image context), and each would decode its frames from the
    start of the video again — the readers decode sequentially from frame 0 for exactness — although the
    trajectories of one video share their initial frames and mostly their clip windows. Frames are kept up to
    ``max_bytes``, least recently used first out; pixels are the reader's own, so renders are unchanged.
    """

    def __init__(self, reader: VideoReader, max_bytes: int = 256 << 20) -> None:
        self._reader, self._max_bytes = reader, max_bytes
        self._frames: OrderedDict[int, np.ndarray] = OrderedDict()
        self.decode_passes = 0

    def __getattr__(self, name: str):  # num_frames, fps, width, height, timestamp, frame_at, ...
        return getattr(self._reader, name)

    def read(self, indices: Sequence[int]) -> Iterator[tuple[int, np.ndarray]]:
        wanted = sorted(set(indices))
        missing = [i for i in wanted if i not in self._frames]
        if missing:
            self.decode_passes += 1
            for index, frame in self._reader.read(missing):
                self._frames[index] = frame
        out = [(i, self._frames[i]) for i in wanted]
        for i in wanted:
            self._frames.move_to_end(i)
        size = sum(f.nbytes for f in self._frames.values())
        while size > self._max_bytes and len(self._frames) > len(wanted):
            size -= self._frames.popitem(last=False)[1].nbytes
        yield from out


class TrajectorySynthesizer:
    """Builds and verifies the trajectories of one video's questions."""

    def __init__(self, reader: VideoReader, ocr: OCRBackend, cfg: TrajectoryConfig, match: MatchConfig):
        self.reader = reader if isinstance(reader, FrameCache) else FrameCache(reader)
        self.ocr, self.cfg, self.match = ocr, cfg, match
        self.duration = reader.num_frames / reader.fps
        self.reads = ViewReadCounters()
        # Frames are shown at one size (the prompt's frame budget): how tall text looks follows from it.
        self._frame_shown_height = display_size(cfg.prompt, ImageRef(0, 0.0), (reader.width, reader.height))[1]
        self.initial_frames = cfg.view.initial_frames(reader.num_frames)

    # -- analysis --------------------------------------------------------------------------------------------
    def _shown_height(self, bbox: Sequence[float]) -> float:
        return (bbox[3] - bbox[1]) * self._frame_shown_height

    def _context(self, bbox: Sequence[float]) -> list[float]:
        return context_box(bbox, self.reader.width, self.reader.height, self.cfg.crop_context)

    def readable(self, row: EvidenceItem) -> bool:
        return self._shown_height(row.bbox) >= self.cfg.readable_px

    def difficulty(self, answer_rows: Sequence[EvidenceItem]) -> Difficulty:
        init = set(self.initial_frames)
        if not answer_rows:
            return Difficulty(False, (), 1.0, "rlc")
        if any(r.frame_index in init and self.readable(r) for r in answer_rows):
            return Difficulty(True, (), 0.0, "rld")
        if any(r.frame_index in init for r in answer_rows):
            return Difficulty(False, ("crop",), 0.4, "rld")
        if any(self.readable(r) for r in answer_rows):
            return Difficulty(False, ("clip",), 0.6, "rld")
        return Difficulty(False, ("clip", "crop"), 1.0, "rlc")

    # -- synthesis -------------------------------------------------------------------------------------------
    def synthesize(self, record: QARecord, answer_rows: Sequence[EvidenceItem]) -> list[Trajectory]:
        """Every DRP/CRP candidate the evidence supports, each executed and verified."""
        if not answer_rows:
            return []
        rows = sorted(answer_rows, key=lambda r: (-r.score, r.frame_index))
        init = set(self.initial_frames)
        out: list[Trajectory] = []
        in_init = [r for r in rows if r.frame_index in init]
        if in_init:
            out.append(self._drp_crop(record, rows, in_init[0], variant=0))
        outside = [r for r in rows if r.frame_index not in init and self.readable(r)]
        if outside:
            out.append(self._drp_clip(record, rows, outside[0], variant=1))
        out.append(self._crp(record, rows, variant=0))
        return out

    def _start(self, record: QARecord, stage: str, variant: int) -> tuple[str, random.Random, ClipCropExecutor]:
        sid = make_sample_id(record.video_id, record.question_id, stage, variant)
        rng = random.Random(int(hashlib.sha1(f"{self.cfg.seed}/{sid}".encode()).hexdigest()[:12], 16))
        ex = self.cfg.view.executor(self.reader, self.initial_frames)
        return sid, rng, ex

    def _intro(self, record: QARecord, rng: random.Random) -> str:
        return rng.choice(_INTRO).format(q=record.question.strip(), n=len(self.initial_frames), dur=self.duration)

    def _call(self, ex: ClipCropExecutor, name: str, **arguments) -> tuple[ToolCall, ToolObservation]:
        call = ToolCall(name, arguments)
        return call, ex.execute(call)

    def _read(self, ex: ClipCropExecutor, ref: ImageRef, image: np.ndarray, answers: Sequence[str],
              rows: Sequence[EvidenceItem]) -> tuple[float, str]:
        """Re-OCR ``image`` (the render of ``ref``), first by recognising the answer rows' lines it shows."""
        lines = self._lines(ex, ref, image, rows) if self.cfg.verify_lines else []
        return read_view(self.ocr, image, answers, self.match, lines, self.reads, self.cfg.verify_min_score)

    def _lines(self, ex: ClipCropExecutor, ref: ImageRef, image: np.ndarray,
               rows: Sequence[EvidenceItem]) -> list[tuple[float, float, float, float]]:
        """The boxes of ``rows`` on ``ref``'s frame, mapped through the ref's crop geometry into ``image`` pixels.

        Evidence boxes and ``ref.bbox`` are both in source-frame coordinates; ``image`` is the ref's source region
        resized, so the mapping is a shift and a scale. Lines mostly outside the view are left out.
        """
        sx1, sy1, sx2, sy2 = ex.source_box(ref)
        ih, iw = image.shape[:2]
        fx, fy = iw / (sx2 - sx1), ih / (sy2 - sy1)
        w, h = self.reader.width, self.reader.height
        out: list[tuple[float, float, float, float]] = []
        for row in rows:
            if row.frame_index != ref.frame_index:
                continue
            x1, y1, x2, y2 = ((row.bbox[0] * w - sx1) * fx, (row.bbox[1] * h - sy1) * fy,
                              (row.bbox[2] * w - sx1) * fx, (row.bbox[3] * h - sy1) * fy)
            cx1, cy1, cx2, cy2 = max(x1, 0.0), max(y1, 0.0), min(x2, float(iw)), min(y2, float(ih))
            if cx2 <= cx1 or cy2 <= cy1 or (cx2 - cx1) * (cy2 - cy1) < 0.5 * (x2 - x1) * (y2 - y1):
                continue
            if (cx1, cy1, cx2, cy2) not in out:
                out.append((cx1, cy1, cx2, cy2))
        return out

    def _answer_for(self, record: QARecord, text: str) -> str:
        scored = [(answer_match_score([a], text, self.match), -i, a) for i, a in enumerate(record.answers)]
        return max(scored)[2]

    def _finish(self, record: QARecord, sid: str, stage: str, variant: int, ops: list[str], turns: list[Turn],
                ex: ClipCropExecutor, rng: random.Random, reading: tuple[float, str] | None = None,
                reason: str = "", thought: Callable[[str, str], str] | None = None) -> Trajectory:
        """Judge the re-OCR ``reading`` (score, text) of the view claimed to show the answer, write the final
        answer turn and build the chat once.

        ``thought(reading_text, answer)`` words the last reasoning; by default it says what the zoomed view reads.
        A ``reason`` means the trajectory already failed (an executor error, evidence not returned).
        """
        reocr, verified = "", False
        if not reason:
            score, reocr = reading if reading is not None else (0.0, "")
            verified = score >= self.cfg.verify_min_score
            if not verified:
                reason = f"re-OCR of the claimed view does not show the answer (read {reocr[:60]!r})"
        answer = self._answer_for(record, reocr) if reocr else record.answers[0]
        turns = list(turns)
        if verified:
            words = thought(reocr, answer) if thought else (
                rng.choice(_CROP_READ).format(text=reocr) + " " + rng.choice(_FINAL).format(a=answer))
            turns.append(Turn(format_answer_turn(words, answer)))
        traj = Trajectory(sample_id=sid, stage=stage, variant=variant, question_id=record.question_id, ops=ops,
                          initial=[ImageRef(i, self.reader.timestamp(i)) for i in self.initial_frames],
                          turns=turns, answer=answer, verified=verified, reason=reason, reocr_text=reocr)
        if verified:
            traj.messages = self.to_messages(record, traj, ex)
        return traj

    def _drp_crop(self, record: QARecord, rows: Sequence[EvidenceItem], row: EvidenceItem, variant: int) -> Trajectory:
        sid, rng, ex = self._start(record, "drp", variant)
        image = self.initial_frames.index(row.frame_index) + 1
        parent = ex.context[image - 1]
        think = self._intro(record, rng) + " " + rng.choice(_SMALL_TEXT).format(
            i=image, t=parent.timestamp_s, where=position_phrase(row.bbox))
        bbox = row.bbox
        area = (bbox[2] - bbox[0]) * (bbox[3] - bbox[1])
        if area < self.cfg.two_step_area:
            call, obs = self._call(ex, "crop", image=image, bbox_2d=_box_in(parent, _grow_box(bbox, self.cfg.context_scale)))
            turns = [Turn(format_call_turn(f"{think} {rng.choice(_CONTEXT_FIRST)}", [call]), [obs])]
            if not obs.ok:
                return self._finish(record, sid, "drp", variant, ["crop"], turns, ex, rng, reason=obs.message)
            second = len(ex.context)
            rel = _box_in(obs.refs[0], self._context(bbox))
            call, obs = self._call(ex, "crop", image=second, bbox_2d=rel)
            thought = rng.choice(_RECROP).format(i=second, where=position_phrase(rel))
            turns.append(Turn(format_call_turn(thought, [call]), [obs]))
            ops = ["crop", "crop"]
        else:
            call, obs = self._call(ex, "crop", image=image, bbox_2d=_box_in(parent, self._context(bbox)))
            turns, ops = [Turn(format_call_turn(think, [call]), [obs])], ["crop"]
        if not obs.ok:
            return self._finish(record, sid, "drp", variant, ops, turns, ex, rng, reason=obs.message)
        return self._finish(record, sid, "drp", variant, ops, turns, ex, rng,
                            reading=self._read(ex, obs.refs[0], obs.images[0], record.answers, rows))

    def _window(self, rows: Sequence[EvidenceItem], target: EvidenceItem, reserve: int) -> tuple[float, float]:
        """A clip window over frames where the target's text is seen, around the target frame.

        The window holds at most as many unseen frames as one clip returns and leaves ``reserve``
        image slots for the crops that follow, so the executor returns every frame in it (the target
        included) and the later crops fit the image budget.
        """
        norm = normalize_answer(target.text)
        seen = sorted({r.frame_index for r in rows if normalize_answer(r.text) == norm} | {target.frame_index})
        init = set(self.initial_frames)
        room = min(self.cfg.ops.clip_frames, self.cfg.ops.max_images - len(init) - reserve)
        chosen = [target.frame_index]
        others = sorted((f for f in seen if f != target.frame_index), key=lambda f: abs(f - target.frame_index))
        for f in others:
            lo, hi = min(chosen + [f]), max(chosen + [f])
            if sum(1 for g in range(lo, hi + 1) if g not in init) <= room:
                chosen.append(f)
        lo, hi = min(chosen), max(chosen)
        fps = self.reader.fps
        return round(max(0.0, (lo - 0.4) / fps), 3), round(min(self.duration, (hi + 0.4) / fps), 3)

    def _drp_clip(self, record: QARecord, rows: Sequence[EvidenceItem], target: EvidenceItem, variant: int) -> Trajectory:
        sid, rng, ex = self._start(record, "drp", variant)
        s, e = self._window(rows, target, reserve=0)
        think = self._intro(record, rng) + " " + rng.choice(_NEED_CLIP).format(s=s, e=e)
        call, obs = self._call(ex, "clip", start=s, end=e)
        turns = [Turn(format_call_turn(think, [call]), [obs])]
        if not obs.ok:
            return self._finish(record, sid, "drp", variant, ["clip"], turns, ex, rng, reason=obs.message)
        hit = self._evidence_in(obs, rows, ex, readable_only=True)
        if hit is None:
            return self._finish(record, sid, "drp", variant, ["clip"], turns, ex, rng,
                                reason="clip returned no frame in which the answer is readable")
        number, ref, row = hit
        saw = rng.choice(_CLIP_SAW).format(i=number, t=ref.timestamp_s, text=row.text, where=position_phrase(row.bbox))
        # Verified by re-reading the evidence region of the claimed clip frame; the last thought says what it showed.
        region = ImageRef(ref.frame_index, ref.timestamp_s, tuple(self._context(row.bbox)))
        return self._finish(record, sid, "drp", variant, ["clip"], turns, ex, rng,
                            reading=self._read(ex, region, ex.render(region), record.answers, rows),
                            thought=lambda _, answer: f"{saw} " + rng.choice(_FINAL).format(a=answer))

    def _evidence_in(self, obs: ToolObservation, rows: Sequence[EvidenceItem], ex: ClipCropExecutor, readable_only: bool = False,
                     skip: set[int] = frozenset()) -> tuple[int, ImageRef, EvidenceItem] | None:
        """The best-scoring answer row on a frame the observation returned: (image number, ref, row)."""
        first = len(ex.context) - len(obs.refs) + 1
        numbers = {ref.frame_index: (first + k, ref) for k, ref in enumerate(obs.refs)}
        for row in rows:  # rows are sorted best first
            f = row.frame_index
            if f in numbers and f not in skip and (not readable_only or self.readable(row)):
                return numbers[f][0], numbers[f][1], row
        return None

    def _crp(self, record: QARecord, rows: Sequence[EvidenceItem], variant: int) -> Trajectory:
        sid, rng, ex = self._start(record, "crp", variant)
        target = rows[0]
        s, e = self._window(rows, target, reserve=2)
        think = self._intro(record, rng) + " " + rng.choice(_NEED_CLIP).format(s=s, e=e)
        call, obs = self._call(ex, "clip", start=s, end=e)
        turns = [Turn(format_call_turn(think, [call]), [obs])]
        ops = ["clip"]
        if not obs.ok:
            return self._finish(record, sid, "crp", variant, ops, turns, ex, rng, reason=obs.message)
        clip_obs = obs
        hit = self._evidence_in(obs, rows, ex)
        if hit is None:
            return self._finish(record, sid, "crp", variant, ops, turns, ex, rng,
                                reason="clip returned no frame in which the answer was seen")
        number, ref, row = hit
        step = rng.choice(_CLIP_SAW_SMALL).format(i=number, t=ref.timestamp_s, where=position_phrase(row.bbox))
        call, obs = self._call(ex, "crop", image=number, bbox_2d=_box_in(ref, self._context(row.bbox)))
        turns.append(Turn(format_call_turn(step, [call]), [obs]))
        ops.append("crop")
        if not obs.ok:
            return self._finish(record, sid, "crp", variant, ops, turns, ex, rng, reason=obs.message)
        first = self._read(ex, obs.refs[0], obs.images[0], record.answers, rows)
        other = self._evidence_in(clip_obs, rows, ex, skip={ref.frame_index})
        if first[1] and other is not None and normalize_answer(other[2].text) == normalize_answer(row.text):
            # A third step: the same text in a second frame, as a check (CRP "check another frame"). It is
            # only written when a probe of that region, rendered outside the executor, reads the answer.
            n2, ref2, row2 = other
            box2 = self._context(row2.bbox)
            probe_ref = ImageRef(ref2.frame_index, ref2.timestamp_s, tuple(box2))
            probe = self._read(ex, probe_ref, ex.render(probe_ref), record.answers, rows)
            if probe[0] >= self.cfg.verify_min_score:
                read = rng.choice(_CROP_READ).format(text=first[1])
                check = rng.choice(_CHECK_OTHER).format(i=n2, t=ref2.timestamp_s)
                call, obs2 = self._call(ex, "crop", image=n2, bbox_2d=_box_in(ref2, box2))
                turns.append(Turn(format_call_turn(f"{read} {check}", [call]), [obs2]))
                ops.append("crop")
                if not obs2.ok:
                    return self._finish(record, sid, "crp", variant, ops, turns, ex, rng, reason=obs2.message)

                def confirm(_: str, answer: str) -> str:
                    """The last thought states what the check crop really shows."""
                    score2, second = self._read(ex, obs2.refs[0], obs2.images[0], record.answers, rows)
                    said = rng.choice(_CONFIRMED) if score2 >= self.cfg.verify_min_score else _NOT_CLEARER
                    return said.format(i=len(ex.context), text=second) + " " + rng.choice(_FINAL).format(a=answer)

                return self._finish(record, sid, "crp", variant, ops, turns, ex, rng, reading=first, thought=confirm)
        return self._finish(record, sid, "crp", variant, ops, turns, ex, rng, reading=first)

    # -- chat ------------------------------------------------------------------------------------------------
    def to_messages(self, record: QARecord, traj: Trajectory, ex: ClipCropExecutor) -> list[Message]:
        """The chat exactly as the shared prompt builder renders it, with media as references."""
        sizes = [ex.rendered_size(r) for r in traj.initial]  # the text needs sizes only: nothing is resized
        messages = chat_messages(record.question, traj.initial, sizes, traj.turns, config=self.cfg.prompt,
                                 ops=self.cfg.ops, duration_s=self.duration)
        refs = list(traj.initial) + [r for t in traj.turns for o in t.observations for r in o.refs]
        return chat_to_shard_messages(messages, refs)


@dataclass
class ViewReadCounters:
    """How trajectory views were re-read (what :func:`read_view` spent on each)."""

    recognized: int = 0  # verdict from recognising the evidence's known lines alone (no detection)
    detected: int = 0  # read whole: detection + recognition (no known lines, or their reading showed no answer)


def read_view(ocr: OCRBackend, image: np.ndarray, answers: Sequence[str], match: MatchConfig,
              lines: Sequence[Sequence[float]] = (), counters: ViewReadCounters | None = None,
              accept: float | None = None) -> tuple[float, str]:
    """Re-OCR pixels a model is shown: (best answer score, the reading that scored it).

    ``lines`` are boxes ``(x1, y1, x2, y2)`` in pixels of ``image`` where the evidence located the answer's text.
    They are read first by the OCR model's recogniser alone (the box is known, so detection is not needed); if
    that reading scores ``accept`` (the caller's verdict threshold; default: as well as a plain reading must,
    ``min_fuzzy_similarity``), it is the reading returned.
    Otherwise the view is read whole, detection included: when the plain reading does not show an answer, once
    more with a replicated border (text detectors miss lines that touch the image edge, which tight crops do; the
    border adds no information). Either way the text comes from the model reading the view's own pixels: a box
    over something else, or text that is not the answer, reads as what is there. With no ``answers`` — or when
    nothing read resembles an answer — the text is everything read, so a rejection can say what the view showed.
    """
    counters = counters if counters is not None else ViewReadCounters()
    if lines and answers and isinstance(ocr, LineRecognizer):
        h, w = image.shape[:2]
        quads = [(x1, y1, x2, y1, x2, y2, x1, y2) for x1, y1, x2, y2 in lines]
        boxes = [evidence.FrameObservation(0, 0.0, "ocr", b.text, b.bbox_norm(w, h), float(b.score), "")
                 for b in ocr.recognize(image, quads) if b is not None]
        known = best_answer_reading(answers, boxes, match)
        if known[0] >= (match.min_fuzzy_similarity if accept is None else accept):
            counters.recognized += 1
            return known
    counters.detected += 1
    best, seen = (0.0, ""), ""
    for pad in (0, max(8, round(0.15 * min(image.shape[:2])))):
        padded = cv2.copyMakeBorder(image, pad, pad, pad, pad, cv2.BORDER_REPLICATE) if pad else image
        h, w = padded.shape[:2]
        boxes = [evidence.FrameObservation(0, 0.0, "ocr", b.text, b.bbox_norm(w, h), float(b.score), "")
                 for b in ocr.read(padded)]
        seen = seen or " ".join(b.text for b in boxes).strip()
        if not answers:
            return 0.0, seen
        best = max(best, best_answer_reading(answers, boxes, match), key=lambda t: t[0])
        if best[0] >= match.min_fuzzy_similarity:
            break
    return best if best[1] else (best[0], seen)
