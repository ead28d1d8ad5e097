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
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import cv2
import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from videor4.contracts.chat import Turn, build_messages
from videor4.contracts.dataset import QARecord
from videor4.contracts.executor import ClipCropExecutor, ImageRef, OpsConfig, ToolObservation
from videor4.contracts.media import VideoReader, uniform_indices
from videor4.contracts.metrics import normalize_answer
from videor4.contracts.shard_codec import chat_to_shard_messages
from videor4.contracts.shard_schema import Message, make_sample_id
from videor4.contracts.tool_protocol import ToolCall, format_tool_call
from videor4.contracts.view import PromptConfig, display_size
from videor4.curation import evidence
from videor4.curation.evidence import MatchConfig, answer_match_score, best_answer_reading
from videor4.curation.ocr import OCRBackend


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
    sft_fraction_drp: float = Field(0.35, ge=0, le=1, description="share of DRP-eligible questions used for "
                                    "DRP-SFT (the rest go to RLd); 7k / (7k + 15k) in the paper")
    sft_fraction_crp: float = Field(0.4, ge=0, le=1, description="share of CRP-capable questions used for CRP-SFT "
                                    "(the rest go to RLc); 10k / (10k + 15k) in the paper")
    seed: int = Field(0, description="seed of template choice and of the SFT/RL split hash")


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


def _where(bbox: Sequence[float]) -> str:
    cx, cy = (bbox[0] + bbox[2]) / 2, (bbox[1] + bbox[3]) / 2
    v = "top" if cy < 1 / 3 else "bottom" if cy > 2 / 3 else "middle"
    h = "left" if cx < 1 / 3 else "right" if cx > 2 / 3 else "centre"
    return "in the centre" if (v, h) == ("middle", "centre") else f"at the {v} {h}".replace("middle ", "")


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
    dy = k * (bbox[3] - bbox[1])
    dx = dy * height / width
    return [max(0.0, bbox[0] - dx), max(0.0, bbox[1] - dy), min(1.0, bbox[2] + dx), min(1.0, bbox[3] + dy)]


def _grow_box(bbox: Sequence[float], scale: float) -> list[float]:
    cx, cy = (bbox[0] + bbox[2]) / 2, (bbox[1] + bbox[3]) / 2
    hw, hh = (bbox[2] - bbox[0]) * scale / 2, (bbox[3] - bbox[1]) * scale / 2
    return [max(0.0, cx - hw), max(0.0, cy - hh), min(1.0, cx + hw), min(1.0, cy + hh)]


def split_bucket(question_id: int, pairing: str, seed: int) -> float:
    """A stable number in [0, 1) per (question, pairing): the SFT/RL split needs no state and never drifts."""
    digest = hashlib.sha1(f"{seed}/{pairing}/{question_id}".encode()).hexdigest()
    return int(digest[:12], 16) / float(1 << 48)


class TrajectorySynthesizer:
    """Builds and verifies the trajectories of one video's questions."""

    def __init__(self, reader: VideoReader, ocr: OCRBackend, cfg: TrajectoryConfig, match: MatchConfig):
        self.reader, self.ocr, self.cfg, self.match = reader, ocr, cfg, match
        self.duration = reader.num_frames / reader.fps
        self.initial_frames = uniform_indices(reader.num_frames, cfg.prompt.num_frames)

    # -- analysis --------------------------------------------------------------------------------------------
    def _shown_height(self, bbox: Sequence[float]) -> float:
        _, h = display_size(self.cfg.prompt, ImageRef(0, 0.0), (self.reader.width, self.reader.height))
        return (bbox[3] - bbox[1]) * h

    def _context(self, bbox: Sequence[float]) -> list[float]:
        return context_box(bbox, self.reader.width, self.reader.height, self.cfg.crop_context)

    def readable(self, row: dict) -> bool:
        return self._shown_height(row["bbox"]) >= self.cfg.readable_px

    def difficulty(self, answer_rows: Sequence[dict]) -> Difficulty:
        init = set(self.initial_frames)
        if not answer_rows:
            return Difficulty(False, (), 1.0, "rlc")
        if any(r["frame_index"] in init and self.readable(r) for r in answer_rows):
            return Difficulty(True, (), 0.0, "rld")
        if any(r["frame_index"] in init for r in answer_rows):
            return Difficulty(False, ("crop",), 0.4, "rld")
        if any(self.readable(r) for r in answer_rows):
            return Difficulty(False, ("clip",), 0.6, "rld")
        return Difficulty(False, ("clip", "crop"), 1.0, "rlc")

    # -- synthesis -------------------------------------------------------------------------------------------
    def synthesize(self, record: QARecord, answer_rows: Sequence[dict]) -> list[Trajectory]:
        """Every DRP/CRP candidate the evidence supports, each executed and verified."""
        if not answer_rows:
            return []
        rows = sorted(answer_rows, key=lambda r: (-r["score"], r["frame_index"]))
        init = set(self.initial_frames)
        out: list[Trajectory] = []
        in_init = [r for r in rows if r["frame_index"] in init]
        if in_init:
            out.append(self._drp_crop(record, in_init[0], variant=0))
        outside = [r for r in rows if r["frame_index"] not in init and self.readable(r)]
        if outside:
            out.append(self._drp_clip(record, rows, outside[0], variant=1))
        out.append(self._crp(record, rows, variant=0))
        return out

    def _start(self, record: QARecord, stage: str, variant: int) -> tuple[str, random.Random, ClipCropExecutor]:
        sid = make_sample_id(record.video_id, record.question_id, stage, variant)
        rng = random.Random(int(hashlib.sha1(f"{self.cfg.seed}/{sid}".encode()).hexdigest()[:12], 16))
        ex = ClipCropExecutor(self.reader, self.initial_frames, self.cfg.ops,
                              display_size=lambda ref, size: display_size(self.cfg.prompt, ref, size))
        return sid, rng, ex

    def _intro(self, record: QARecord, rng: random.Random) -> str:
        return rng.choice(_INTRO).format(q=record.question.strip(), n=len(self.initial_frames), dur=self.duration)

    def _call(self, ex: ClipCropExecutor, name: str, **arguments) -> tuple[str, ToolObservation]:
        call = ToolCall(name, arguments)
        return format_tool_call(call), ex.execute(call)

    def _read(self, image: np.ndarray, answers: Sequence[str] = ()) -> tuple[float, str]:
        return read_view(self.ocr, image, answers, self.match)

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
            turns.append(Turn(f"<think>{words}</think>\n<answer>{answer}</answer>"))
        traj = Trajectory(sample_id=sid, stage=stage, variant=variant, question_id=record.question_id, ops=ops,
                          initial=[ImageRef(i, self.reader.timestamp(i)) for i in self.initial_frames],
                          turns=turns, answer=answer, verified=verified, reason=reason, reocr_text=reocr)
        if verified:
            traj.messages = self.to_messages(record, traj, ex)
        return traj

    def _drp_crop(self, record: QARecord, row: dict, variant: int) -> Trajectory:
        sid, rng, ex = self._start(record, "drp", variant)
        image = self.initial_frames.index(row["frame_index"]) + 1
        parent = ex.context[image - 1]
        think = self._intro(record, rng) + " " + rng.choice(_SMALL_TEXT).format(
            i=image, t=parent.timestamp_s, where=_where(row["bbox"]))
        bbox = row["bbox"]
        area = (bbox[2] - bbox[0]) * (bbox[3] - bbox[1])
        if area < self.cfg.two_step_area:
            text, obs = self._call(ex, "crop", image=image, bbox_2d=_box_in(parent, _grow_box(bbox, self.cfg.context_scale)))
            turns = [Turn(f"<think>{think} {rng.choice(_CONTEXT_FIRST)}</think>\n{text}", [obs])]
            if not obs.ok:
                return self._finish(record, sid, "drp", variant, ["crop"], turns, ex, rng, reason=obs.message)
            second = len(ex.context)
            rel = _box_in(obs.refs[0], self._context(bbox))
            text, obs = self._call(ex, "crop", image=second, bbox_2d=rel)
            turns.append(Turn(f"<think>{rng.choice(_RECROP).format(i=second, where=_where(rel))}</think>\n{text}",
                              [obs]))
            ops = ["crop", "crop"]
        else:
            text, obs = self._call(ex, "crop", image=image, bbox_2d=_box_in(parent, self._context(bbox)))
            turns, ops = [Turn(f"<think>{think}</think>\n{text}", [obs])], ["crop"]
        if not obs.ok:
            return self._finish(record, sid, "drp", variant, ops, turns, ex, rng, reason=obs.message)
        return self._finish(record, sid, "drp", variant, ops, turns, ex, rng,
                            reading=self._read(obs.images[0], record.answers))

    def _window(self, rows: Sequence[dict], target: dict, reserve: int) -> tuple[float, float]:
        """A clip window over frames where the target's text is seen, around the target frame.

        The window holds at most as many unseen frames as one clip returns and leaves ``reserve``
        image slots for the crops that follow, so the executor returns every frame in it (the target
        included) and the later crops fit the image budget.
        """
        norm = normalize_answer(target["text"])
        seen = sorted({r["frame_index"] for r in rows if normalize_answer(r["text"]) == norm} | {target["frame_index"]})
        init = set(self.initial_frames)
        room = min(self.cfg.ops.clip_frames, self.cfg.ops.max_images - len(init) - reserve)
        chosen = [target["frame_index"]]
        others = sorted((f for f in seen if f != target["frame_index"]), key=lambda f: abs(f - target["frame_index"]))
        for f in others:
            lo, hi = min(chosen + [f]), max(chosen + [f])
            if sum(1 for g in range(lo, hi + 1) if g not in init) <= room:
                chosen.append(f)
        lo, hi = min(chosen), max(chosen)
        fps = self.reader.fps
        return round(max(0.0, (lo - 0.4) / fps), 3), round(min(self.duration, (hi + 0.4) / fps), 3)

    def _drp_clip(self, record: QARecord, rows: Sequence[dict], target: dict, variant: int) -> Trajectory:
        sid, rng, ex = self._start(record, "drp", variant)
        s, e = self._window(rows, target, reserve=0)
        think = self._intro(record, rng) + " " + rng.choice(_NEED_CLIP).format(s=s, e=e)
        text, obs = self._call(ex, "clip", start=s, end=e)
        turns = [Turn(f"<think>{think}</think>\n{text}", [obs])]
        if not obs.ok:
            return self._finish(record, sid, "drp", variant, ["clip"], turns, ex, rng, reason=obs.message)
        hit = self._evidence_in(obs, rows, ex, readable_only=True)
        if hit is None:
            return self._finish(record, sid, "drp", variant, ["clip"], turns, ex, rng,
                                reason="clip returned no frame in which the answer is readable")
        number, ref, row = hit
        saw = rng.choice(_CLIP_SAW).format(i=number, t=ref.timestamp_s, text=row["text"], where=_where(row["bbox"]))
        # Verified by re-reading the evidence region of the claimed clip frame; the last thought says what it showed.
        region = ex.render(ImageRef(ref.frame_index, ref.timestamp_s, tuple(self._context(row["bbox"]))))
        return self._finish(record, sid, "drp", variant, ["clip"], turns, ex, rng,
                            reading=self._read(region, record.answers),
                            thought=lambda _, answer: f"{saw} " + rng.choice(_FINAL).format(a=answer))

    def _evidence_in(self, obs: ToolObservation, rows: Sequence[dict], ex: ClipCropExecutor, readable_only: bool = False,
                     skip: set[int] = frozenset()) -> tuple[int, ImageRef, dict] | None:
        """The best-scoring answer row on a frame the observation returned: (image number, ref, row)."""
        first = len(ex.context) - len(obs.refs) + 1
        numbers = {ref.frame_index: (first + k, ref) for k, ref in enumerate(obs.refs)}
        for row in rows:  # rows are sorted best first
            f = row["frame_index"]
            if f in numbers and f not in skip and (not readable_only or self.readable(row)):
                return numbers[f][0], numbers[f][1], row
        return None

    def _crp(self, record: QARecord, rows: Sequence[dict], variant: int) -> Trajectory:
        sid, rng, ex = self._start(record, "crp", variant)
        target = rows[0]
        s, e = self._window(rows, target, reserve=2)
        think = self._intro(record, rng) + " " + rng.choice(_NEED_CLIP).format(s=s, e=e)
        text, obs = self._call(ex, "clip", start=s, end=e)
        turns = [Turn(f"<think>{think}</think>\n{text}", [obs])]
        ops = ["clip"]
        if not obs.ok:
            return self._finish(record, sid, "crp", variant, ops, turns, ex, rng, reason=obs.message)
        clip_obs = obs
        hit = self._evidence_in(obs, rows, ex)
        if hit is None:
            return self._finish(record, sid, "crp", variant, ops, turns, ex, rng,
                                reason="clip returned no frame in which the answer was seen")
        number, ref, row = hit
        step = rng.choice(_CLIP_SAW_SMALL).format(i=number, t=ref.timestamp_s, where=_where(row["bbox"]))
        text, obs = self._call(ex, "crop", image=number, bbox_2d=_box_in(ref, self._context(row["bbox"])))
        turns.append(Turn(f"<think>{step}</think>\n{text}", [obs]))
        ops.append("crop")
        if not obs.ok:
            return self._finish(record, sid, "crp", variant, ops, turns, ex, rng, reason=obs.message)
        first = self._read(obs.images[0], record.answers)
        other = self._evidence_in(clip_obs, rows, ex, skip={ref.frame_index})
        if first[1] and other is not None and normalize_answer(other[2]["text"]) == normalize_answer(row["text"]):
            # A third step: the same text in a second frame, as a check (CRP "check another frame"). It is
            # only written when a probe of that region, rendered outside the executor, reads the answer.
            n2, ref2, row2 = other
            box2 = self._context(row2["bbox"])
            probe = self._read(ex.render(ImageRef(ref2.frame_index, ref2.timestamp_s, tuple(box2))), record.answers)
            if probe[0] >= self.cfg.verify_min_score:
                read = rng.choice(_CROP_READ).format(text=first[1])
                check = rng.choice(_CHECK_OTHER).format(i=n2, t=ref2.timestamp_s)
                text, obs2 = self._call(ex, "crop", image=n2, bbox_2d=_box_in(ref2, box2))
                turns.append(Turn(f"<think>{read} {check}</think>\n{text}", [obs2]))
                ops.append("crop")
                if not obs2.ok:
                    return self._finish(record, sid, "crp", variant, ops, turns, ex, rng, reason=obs2.message)

                def confirm(_: str, answer: str) -> str:
                    """The last thought states what the check crop really shows."""
                    score2, second = self._read(obs2.images[0], record.answers)
                    said = rng.choice(_CONFIRMED) if score2 >= self.cfg.verify_min_score else _NOT_CLEARER
                    return said.format(i=len(ex.context), text=second) + " " + rng.choice(_FINAL).format(a=answer)

                return self._finish(record, sid, "crp", variant, ops, turns, ex, rng, reading=first, thought=confirm)
        return self._finish(record, sid, "crp", variant, ops, turns, ex, rng, reading=first)

    # -- chat ------------------------------------------------------------------------------------------------
    def to_messages(self, record: QARecord, traj: Trajectory, ex: ClipCropExecutor) -> list[Message]:
        """The chat exactly as the shared prompt builder renders it, with media as references."""
        initial_images = ex.render_many(traj.initial)
        messages, _ = build_messages(record.question, traj.initial, initial_images, traj.turns,
                                     config=self.cfg.prompt, ops=self.cfg.ops, duration_s=self.duration)
        refs = list(traj.initial) + [r for t in traj.turns for o in t.observations for r in o.refs]
        return chat_to_shard_messages(messages, refs)


def read_view(ocr: OCRBackend, image: np.ndarray, answers: Sequence[str], match: MatchConfig) -> tuple[float, str]:
    """Re-OCR pixels a model is shown: (best answer score, the reading that scored it).

    When the plain reading does not show an answer, the image is read once more with a replicated
    border: text detectors miss lines that touch the image edge, which tight crops do (the border adds
    no information). With no ``answers`` the score is 0 and the text is everything read.
    """
    best = (0.0, "")
    for pad in (0, max(8, round(0.15 * min(image.shape[:2])))):
        padded = cv2.copyMakeBorder(image, pad, pad, pad, pad, cv2.BORDER_REPLICATE) if pad else image
        h, w = padded.shape[:2]
        boxes = [evidence.Observation(0, 0.0, "ocr", b.text, b.bbox_norm(w, h), float(b.score), "")
                 for b in ocr.read(padded)]
        if not answers:
            return 0.0, " ".join(b.text for b in boxes).strip()
        best = max(best, best_answer_reading(answers, boxes, match), key=lambda t: t[0])
        if best[0] >= match.min_fuzzy_similarity:
            break
    return best
