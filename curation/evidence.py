"""Evidence matching: which frames, and where in them, answer a question.

Answers are compared to OCR text after the *official* EvalAI answer
processing (``videor4.contracts.metrics.normalize_answer``), so "evidence found"
means the same thing as "a model reading this text would score Acc = 1".
Answers split over several OCR boxes (two words detected separately, a
two-line sign) are found by also matching merged neighbouring boxes. The
question's key phrases are matched to OCR text and detector labels, which is
what Visual questions without readable answers still get.

The output is one row per matched observation (DESIGN §3 ``evidence.parquet``)
plus a per-question summary in which a question without evidence is kept with
its reason.
"""

from __future__ import annotations

import functools
import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from videor4.contracts.dataset import QARecord
from videor4.contracts.evidence_schema import EvidenceRow
from videor4.contracts.metrics import edit_distance, normalize_answer

# Words that carry no evidence: wh-words, auxiliaries and the like. Kept short on purpose:
# an over-eager list would hide real key phrases such as "time" or "name".
_STOPWORDS = frozenset(
    """a an the of in on at to for from by with and or is are was were be been being do does did what which who
    whom whose where when why how many much this that these those there here it its it's he she they them his her
    their you your we our i me my can could would should will shall may might must has have had not no yes if
    than then so as into onto about above below over under up down out off all any some each other such one
    video shown show shows written write says say said according word words text sign name called""".split()
)
# Question words that point at a detector class (label → words that refer to it).
_LABEL_WORDS = {
    "person": {"person", "people", "man", "men", "woman", "women", "he", "she", "boy", "girl", "player",
               "pedestrian", "someone", "who", "child"},
    "face": {"face", "faces", "man", "woman", "he", "she", "who", "person"},
    "license_plate": {"plate", "license", "licence", "registration", "car", "vehicle"},
}
_TOKEN = re.compile(r"[a-z0-9]+")


class MatchConfig(BaseModel):
    """Thresholds of the matcher; every value is part of the evidence cache key."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    min_fuzzy_similarity: float = Field(0.8, description="1 - edit/len threshold for a fuzzy answer match")
    short_answer_len: int = Field(2, description="answers this short (chars, compacted) must equal a whole OCR token")
    max_merge: int = Field(3, description="how many neighbouring OCR boxes may be merged to match one answer")
    line_gap: float = Field(1.2, description="max gap between merged boxes, in box heights")
    min_key_len: int = Field(3, description="question words shorter than this are not key phrases")
    min_score: float = Field(0.3, description="matches scoring below this are not evidence")


@dataclass(frozen=True)
class FrameObservation:
    """One thing seen in one frame: an OCR line or a detected object."""

    frame_index: int
    timestamp_s: float
    kind: str  # "ocr" | "object"
    text: str
    bbox: tuple[float, float, float, float]  # normalized x1,y1,x2,y2
    score: float
    backend: str


@dataclass(frozen=True)
class _Unit:
    """A single OCR box, or several neighbouring boxes read together."""

    text: str
    bbox: tuple[float, float, float, float]
    score: float
    norm: str
    compact: str
    tokens: tuple[str, ...]


def _compact(norm: str) -> str:
    return "".join(_TOKEN.findall(norm))


@functools.lru_cache(maxsize=1 << 16)
def _normalized(text: str) -> tuple[str, str, tuple[str, ...]]:
    """(normalized, compacted, tokens) of an OCR text: a video shows the same lines in frame after frame."""
    norm = normalize_answer(text)
    return norm, _compact(norm), tuple(_TOKEN.findall(norm))


def _unit(text: str, bbox: tuple[float, float, float, float], score: float) -> _Unit:
    norm, compact, tokens = _normalized(text)
    return _Unit(text=text, bbox=bbox, score=score, norm=norm, compact=compact, tokens=tokens)


def box_union(a: Sequence[float], b: Sequence[float]) -> tuple[float, float, float, float]:
    """The smallest (x1, y1, x2, y2) box holding both boxes (any units, as long as both share them)."""
    return (min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3]))


def _neighbour_lists(boxes: Sequence[Sequence[float]], gap: float) -> list[list[int]]:
    """For each box ``i``, the boxes ``j`` that continue it, ascending: next on the same line (vertical overlap above
    half the smaller height, starting right of it within ``gap`` line heights), or the line below overlapping it
    horizontally (OCR boxes of consecutive lines often overlap by a few pixels, hence the negative lower bound).

    One array test on every pair at once: a frame of a screen recording holds dozens of boxes, and testing pairs
    one by one in Python dominated matching."""
    n = len(boxes)
    if n < 2:
        return [[] for _ in range(n)]
    b = np.asarray(boxes, dtype=np.float64)
    x1, y1, x2, y2 = (b[:, k] for k in range(4))
    hgt = y2 - y1
    ah, bh = hgt[:, None], hgt[None, :]
    h = np.maximum(np.maximum(ah, bh), 1e-6)
    v_overlap = np.minimum(y2[:, None], y2[None, :]) - np.maximum(y1[:, None], y1[None, :])
    h_overlap = np.minimum(x2[:, None], x2[None, :]) - np.maximum(x1[:, None], x1[None, :])
    same_line = (v_overlap > 0.5 * np.minimum(ah, bh)) & (x1[None, :] > x1[:, None]) & (
        x1[None, :] - x2[:, None] < gap * h)
    below = y1[None, :] - y2[:, None]
    stacked = (h_overlap > 0) & (-0.5 * h <= below) & (below < gap * h) & (y1[None, :] > y1[:, None])
    linked = same_line | stacked
    np.fill_diagonal(linked, False)
    return [np.flatnonzero(row).tolist() for row in linked]


def _frame_units(obs: Sequence[FrameObservation], cfg: MatchConfig) -> list[_Unit]:
    """Each OCR box, plus every reading-order chain of up to ``max_merge`` neighbouring boxes."""
    ocr = sorted((o for o in obs if o.kind == "ocr"), key=lambda o: (round(o.bbox[1], 2), o.bbox[0]))
    nxt = _neighbour_lists([o.bbox for o in ocr], cfg.line_gap)
    units = [_unit(o.text, o.bbox, o.score) for o in ocr]
    stack = [[i] for i in range(len(ocr))]
    while stack:
        chain = stack.pop()
        if len(chain) >= cfg.max_merge:
            continue
        for j in nxt[chain[-1]]:
            if j in chain:
                continue
            path = chain + [j]
            box = ocr[path[0]].bbox
            for k in path[1:]:
                box = box_union(box, ocr[k].bbox)
            units.append(_unit(" ".join(ocr[k].text for k in path), box, min(ocr[k].score for k in path)))
            stack.append(path)
    return units


def _answer_score(answer_norm: str, unit: _Unit, cfg: MatchConfig) -> float:
    return _text_score(answer_norm, unit.text, cfg.min_fuzzy_similarity, cfg.short_answer_len)


@functools.lru_cache(maxsize=1 << 16)
def _chars(text: str) -> Counter:
    return Counter(text)


def _similar(a: str, b: str, threshold: float) -> float | None:
    """1 - edit distance / longer length when that reaches ``threshold``, else None (the edit distance is at
    least the length difference, so most pairs are settled without computing it)."""
    longer = max(len(a), len(b))
    if 1.0 - abs(len(a) - len(b)) / longer < threshold:
        return None
    # Nor can it be below the number of characters the shorter string has that the other lacks.
    if sum((_chars(a) & _chars(b)).values()) / longer < threshold:
        return None
    sim = 1.0 - edit_distance(a, b) / longer
    return sim if sim >= threshold else None


@functools.lru_cache(maxsize=1 << 18)
def _text_score(answer_norm: str, text: str, min_fuzzy: float, short_len: int) -> float:
    """How well OCR ``text`` shows the normalized answer: a function of the two texts alone, so it is cached
    (the same lines are matched in frame after frame, for every question of a video)."""
    ans_c = _compact(answer_norm)
    norm, compact, tokens = _normalized(text)
    if not ans_c or not compact:
        return 0.0
    if answer_norm == norm or ans_c == compact:
        return 1.0
    ans_tokens = tuple(_TOKEN.findall(answer_norm))
    if len(ans_c) <= short_len:
        # "2", "No": only a whole token counts, and even then it is weak evidence.
        return 0.6 if ans_c in tokens else 0.0
    n = len(ans_tokens)
    if n and any(tokens[i:i + n] == ans_tokens for i in range(len(tokens) - n + 1)):
        return 0.7 + 0.3 * len(ans_c) / len(compact)
    sim = _similar(ans_c, compact, min_fuzzy)
    if sim is not None:
        return 0.9 * sim
    # The answer inside a longer line, with an OCR slip ("cook meat and I eggs"): fuzzy over token windows
    # (none can match when the line lacks too many of the answer's characters).
    best = 0.0
    if sum((_chars(ans_c) & _chars(compact)).values()) / len(ans_c) < min_fuzzy:
        return best
    for size in range(max(1, n - 1), n + 2):
        for i in range(len(tokens) - size + 1):
            sim = _similar(ans_c, "".join(tokens[i:i + size]), min_fuzzy)
            if sim is not None:
                best = max(best, 0.8 * sim * (0.7 + 0.3 * len(ans_c) / len(compact)))
    return best


def answer_match_score(answers: Iterable[str], text: str, cfg: MatchConfig) -> float:
    """How well ``text`` shows any of ``answers``: 0 … 1, the matcher's own scale."""
    unit = _unit(text, (0.0, 0.0, 1.0, 1.0), 1.0)
    return max((_answer_score(normalize_answer(a), unit, cfg) for a in answers), default=0.0)


def best_answer_reading(answers: Sequence[str], boxes: Sequence[FrameObservation], cfg: MatchConfig) -> tuple[float, str]:
    """The best-matching reading among OCR boxes and their merged neighbours (e.g. a re-OCR'd crop).

    Matching per box/chain rather than on the joined text keeps reading order from breaking a
    two-line answer.
    """
    best = (0.0, " ".join(b.text for b in boxes))
    for unit in _frame_units(boxes, cfg):
        score = max((_answer_score(normalize_answer(a), unit, cfg) for a in answers), default=0.0)
        if score > best[0]:
            best = (score, unit.text)
    return best


def key_phrases(question: str, cfg: MatchConfig) -> list[str]:
    """Content words of the question, plus any quoted phrase, in order, unique."""
    quoted = [normalize_answer(q) for q in re.findall(r"[\"“']([^\"”']{3,})[\"”']", question)]
    words = [w for w in _TOKEN.findall(normalize_answer(question))
             if len(w) >= cfg.min_key_len and w not in _STOPWORDS]
    return list(dict.fromkeys(quoted + words))


@dataclass(frozen=True)
class QuestionSummary:
    question_id: int
    video_id: str
    status: str  # "answer" | "question_only" | "none"
    reason: str
    n_rows: int
    best_frame: int
    first_frame: int
    last_frame: int
    best_score: float
    best_text: str


def match_question(record: QARecord, observations: Mapping[int, Sequence[FrameObservation]],
                   cfg: MatchConfig, units: Mapping[int, list[_Unit]] | None = None
                   ) -> tuple[list[dict], QuestionSummary]:
    """Match one question against every frame's observations.

    ``observations`` maps frame index → what was seen there (after dedupe
    propagation, so a dropped near-duplicate frame carries its representative's
    observations and the answer is tracked over its whole span). ``units``: each frame's
    :func:`frame_units`, when the caller matches several questions against the same frames.
    """
    units = units if units is not None else frame_units(observations, cfg)
    answers = [a for a in dict.fromkeys(normalize_answer(a) for a in record.answers) if _compact(a)]
    keys = key_phrases(record.question, cfg)
    q_words = set(_TOKEN.findall(normalize_answer(record.question)))
    rows: list[EvidenceRow] = []
    text_score: dict[str, float] = {}  # per unit text: frames repeat the same lines
    # Frames showing the same OCR boxes share one units list (frame_units): their text matches are the same, so
    # they are computed once per list — (answer units kept, key-phrase score or None per OCR box in order).
    by_units: dict[int, tuple[list[tuple[float, _Unit]], list[float | None]]] = {}
    for frame_index in sorted(observations):
        obs = observations[frame_index]
        if not obs:
            continue
        ts, backend_of = obs[0].timestamp_s, {o.kind: o.backend for o in obs}
        frame_units_ = units[frame_index]
        found = by_units.get(id(frame_units_))
        if found is None:
            best_answer: dict[tuple, tuple[float, _Unit]] = {}
            for unit in frame_units_:
                score = text_score.get(unit.text)
                if score is None:
                    score = text_score[unit.text] = max((_answer_score(a, unit, cfg) for a in answers), default=0.0)
                s = score * unit.score
                if s >= cfg.min_score:
                    best_answer[unit.bbox] = max(best_answer.get(unit.bbox, (0.0, unit)), (s, unit),
                                                 key=lambda t: t[0])
            # A merged unit that only re-finds a box matched on its own adds nothing.
            kept = _drop_covering(best_answer)
            key_scores: list[float | None] = []
            for o in obs:
                if o.kind != "ocr":
                    continue
                key_scores.append(None)
                if keys:
                    u = _unit(o.text, o.bbox, o.score)
                    hit = [k for k in keys if k in u.norm]
                    if hit and not any(unit.bbox == o.bbox for _, unit in kept):
                        s = 0.5 * o.score * min(1.0, sum(len(k) for k in hit) / max(len(u.compact), 1))
                        if s >= cfg.min_score * 0.5:
                            key_scores[-1] = s
            found = by_units[id(frame_units_)] = (kept, key_scores)
        kept, key_scores = found
        for s, unit in kept:
            rows.append(_row(record, frame_index, ts, "ocr", unit.text, unit.bbox, "answer", s, backend_of["ocr"]))
        ocr_seen = 0
        for o in obs:
            if o.kind == "ocr":
                s = key_scores[ocr_seen]
                ocr_seen += 1
                if s is not None:
                    rows.append(_row(record, frame_index, ts, "ocr", o.text, o.bbox, "question", s, o.backend))
            elif o.kind == "object" and (q_words & label_words(o.text)):
                rows.append(_row(record, frame_index, ts, "object", o.text, o.bbox, "question", 0.8 * o.score,
                                 o.backend))
    rows.sort(key=lambda r: (-r.score, r.frame_index, r.bbox))
    return rows, _summarize(record, rows)


def label_words(label: str) -> set[str]:
    """Question words that refer to a detector label (the label itself for labels without a word list)."""
    return _LABEL_WORDS.get(label, {label})


def needs_objects(records: Iterable[QARecord], labels: Iterable[str]) -> bool:
    """Whether any question could be matched to a detected object with one of ``labels``.

    The matcher links an object to a question only when a question word refers to its label
    (:func:`match_question`); when no question has such a word, detecting objects cannot add evidence, so the
    analysis skips the detector for that video.
    """
    words = set().union(*(label_words(label) for label in labels))
    return any(words & set(_TOKEN.findall(normalize_answer(r.question))) for r in records)


def _drop_covering(best: dict[tuple, tuple[float, _Unit]]) -> list[tuple[float, _Unit]]:
    items = sorted(best.values(), key=lambda t: (-t[0], t[1].bbox))
    kept: list[tuple[float, _Unit]] = []
    for s, unit in items:
        if any(_contains(unit.bbox, k.bbox) or _contains(k.bbox, unit.bbox) for _, k in kept):
            continue
        kept.append((s, unit))
    return kept


def _contains(outer: Sequence[float], inner: Sequence[float]) -> bool:
    eps = 1e-6
    return (outer[0] <= inner[0] + eps and outer[1] <= inner[1] + eps and outer[2] >= inner[2] - eps
            and outer[3] >= inner[3] - eps)


def _row(rec: QARecord, frame_index: int, ts: float, kind: str, text: str, bbox: Sequence[float], match: str,
         score: float, backend: str) -> EvidenceRow:
    return EvidenceRow(question_id=rec.question_id, video_id=rec.video_id, frame_index=int(frame_index),
                       timestamp_s=float(ts), kind=kind, text=text, bbox=[float(v) for v in bbox], match=match,
                       score=round(float(min(score, 1.0)), 6), backend=backend)


def _summarize(rec: QARecord, rows: list[EvidenceRow]) -> QuestionSummary:
    answer_rows = [r for r in rows if r.match == "answer"]
    use = answer_rows or rows
    if not use:
        reason = "no OCR text or object matched the answer or the question's key phrases"
        if rec.source2 == "Visual":
            reason += " (visual question: the answer may not be written in the video)"
        return QuestionSummary(rec.question_id, rec.video_id, "none", reason, 0, -1, -1, -1, 0.0, "")
    best = use[0]
    # Track the best text over time: the same reading (after normalization) in other frames.
    best_norm = normalize_answer(best.text)
    frames = [r.frame_index for r in use if normalize_answer(r.text) == best_norm]
    status = "answer" if answer_rows else "question_only"
    reason = "" if answer_rows else "answer text not found; only question key phrases / objects matched"
    return QuestionSummary(rec.question_id, rec.video_id, status, reason, len(rows), best.frame_index,
                           min(frames), max(frames), best.score, best.text)


def frame_units(observations: Mapping[int, Sequence[FrameObservation]], cfg: MatchConfig) -> dict[int, list[_Unit]]:
    """Every frame's match units (:func:`_frame_units`); frames showing the same boxes (a near-duplicate and its
    representative) share one list."""
    seen: dict[tuple, list[_Unit]] = {}
    out: dict[int, list[_Unit]] = {}
    for frame_index, obs in observations.items():
        key = tuple((o.text, o.bbox, o.score) for o in obs if o.kind == "ocr")
        if key not in seen:
            seen[key] = _frame_units(obs, cfg)
        out[frame_index] = seen[key]
    return out


def match_video(records: Iterable[QARecord], observations: Mapping[int, Sequence[FrameObservation]],
                cfg: MatchConfig) -> tuple[list[dict], list[QuestionSummary]]:
    rows: list[EvidenceRow] = []
    summaries: list[QuestionSummary] = []
    units = frame_units(observations, cfg)
    for rec in sorted(records, key=lambda r: r.question_id):
        r, s = match_question(rec, observations, cfg, units)
        rows.extend(r)
        summaries.append(s)
    return rows, summaries


def propagate(observations: Mapping[int, Sequence[FrameObservation]], representative: Mapping[int, int],
              timestamps: Mapping[int, float]) -> dict[int, list[FrameObservation]]:
    """Give every dropped near-duplicate frame the observations of the frame that stands for it."""
    out: dict[int, list[FrameObservation]] = {k: list(v) for k, v in observations.items()}
    by_rep: dict[int, list[int]] = defaultdict(list)
    for frame, rep in representative.items():
        if frame != rep:
            by_rep[rep].append(frame)
    for rep, frames in by_rep.items():
        for f in frames:
            out[f] = [FrameObservation(f, timestamps[f], o.kind, o.text, o.bbox, o.score, o.backend)
                      for o in observations.get(rep, ())]
    return out
