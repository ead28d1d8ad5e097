"""The official M4-ViteVQA metrics, Acc and ANLS, reproduced to the last bit.

Papers report M4-ViteVQA numbers with the dataset's ``evaluator.py``
(``STVQAAccuracyEvaluator`` and ``STVQAANLSEvaluator``), so a score from this
toolkit is only comparable if it is *bitwise* equal to that code's output,
quirks included. This module is an independent implementation (the official
file is used only as a test oracle) and it is the project's only answer
normalizer: curation's OCR-to-answer matching, the RL accuracy reward and
``videor4 eval score`` all call :func:`normalize_answer`.

Behaviour kept from the official code on purpose (see docs/metrics.md):

* the article list is ``a an the in at`` (``in``/``at`` are dropped too);
* the trailing-period regex is called as ``sub("", text, re.UNICODE)``, which
  passes ``re.UNICODE == 32`` as the *count*: only the first 32 periods that
  are not followed by a digit are removed; its ``(?!<=\\d)`` prefix is a
  look-ahead that can never fail, so it has no effect;
* a punctuation mark is deleted when it touches a space *anywhere* in the
  answer, otherwise every occurrence is replaced by a space, so the result for
  one character depends on the whole string; the official "digit,digit" branch
  never fires because commas are deleted before it runs;
* ANLS only lower-cases and strips both strings (no whitespace collapse).

Where the official code crashes we return a documented value instead:
ANLS of two strings that are both empty after ``lower().strip()`` is 1.0 (they
are identical), and a question with no ground-truth answers scores 0.0 for both
metrics (the official Acc already gives 0.0; its ANLS raises on ``max([])``).

Importable without torch or any compiled dependency.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

__all__ = [
    "PreparedAnswers",
    "acc_score",
    "anls_score",
    "edit_distance",
    "normalize_answer",
    "prepare_answers",
    "score_batch",
]

ANLS_THRESHOLD = 0.5
"""Similarities below this count as 0 (the ST-VQA definition of ANLS)."""

_ARTICLES = frozenset({"a", "an", "the", "in", "at"})

_NUMBER_WORDS = {
    "none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4",
    "five": "5", "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10",
}

# Characters handled by the punctuation rule (``.`` has its own rule). The list
# includes odd members of the official list (a lone surrogate, DEL, an emoji,
# currency signs, a zero-width space) because they change scores.
_PUNCTUATION = frozenset(
    ':£$\udcd3\x7f😘₱€¢\u200b¥↱ø;/[]"{}()=+\\_->@`,?!<'
)

_PERIOD = re.compile(r"\.(?!\d)")
_PERIOD_MAX_REMOVED = int(re.UNICODE)  # the official count argument, i.e. 32


def _parse_pairs(table: str) -> dict[str, str]:
    return dict(line.split() for line in table.strip().splitlines())


# The VQA/EvalAI contraction table: data that must match the official one for
# equal scores. Entries that can never match are left out: keys with upper-case
# letters (the text is lower-cased first), keys containing "'s" (split into
# " 's" first) and identity entries. ``somebody'd -> somebodyd`` is the
# official (reversed) entry and is kept as is.
_CONTRACTIONS = _parse_pairs("""
aint ain't
arent aren't
cant can't
couldve could've
couldnt couldn't
couldn'tve couldn't've
couldnt've couldn't've
didnt didn't
doesnt doesn't
dont don't
hadnt hadn't
hadnt've hadn't've
hadn'tve hadn't've
hasnt hasn't
havent haven't
hed he'd
hed've he'd've
he'dve he'd've
hes he's
howd how'd
howll how'll
hows how's
isnt isn't
itd it'd
itd've it'd've
it'dve it'd've
itll it'll
maam ma'am
mightnt mightn't
mightnt've mightn't've
mightn'tve mightn't've
mightve might've
mustnt mustn't
mustve must've
neednt needn't
notve not've
oclock o'clock
oughtnt oughtn't
'ows'at 'ow's'at
shant shan't
shed've she'd've
she'dve she'd've
shouldve should've
shouldnt shouldn't
shouldnt've shouldn't've
shouldn'tve shouldn't've
somebody'd somebodyd
somebodyd've somebody'd've
somebody'dve somebody'd've
somebodyll somebody'll
somebodys somebody's
someoned someone'd
someoned've someone'd've
someone'dve someone'd've
someonell someone'll
someones someone's
somethingd something'd
somethingd've something'd've
something'dve something'd've
somethingll something'll
thats that's
thered there'd
thered've there'd've
there'dve there'd've
therere there're
theres there's
theyd they'd
theyd've they'd've
they'dve they'd've
theyll they'll
theyre they're
theyve they've
twas 'twas
wasnt wasn't
wed've we'd've
we'dve we'd've
weve we've
werent weren't
whatll what'll
whatre what're
whats what's
whatve what've
whens when's
whered where'd
wheres where's
whereve where've
whod who'd
whod've who'd've
who'dve who'd've
wholl who'll
whos who's
whove who've
whyll why'll
whyre why're
whys why's
wont won't
wouldve would've
wouldnt wouldn't
wouldnt've wouldn't've
wouldn'tve wouldn't've
yall y'all
yall'll y'all'll
y'allll y'all'll
yall'd've y'all'd've
y'alld've y'all'd've
y'all'dve y'all'd've
youd you'd
youd've you'd've
you'dve you'd've
youll you'll
youre you're
youve you've
""")


@functools.lru_cache(maxsize=1 << 16)
def normalize_answer(text: str) -> str:
    """EvalAI answer processing, as used by the official Acc.

    Cached because the same ground-truth answers are normalized again and
    again (every RL rollout, every evaluation run).
    """
    text = text.lower().replace(",", "").replace("?", "").replace("'s", " 's").strip()
    text = text.replace("\n", " ").replace("\t", " ")
    marks = _PUNCTUATION.intersection(text)
    if marks:
        # Decided on the text *before* any replacement, for each mark separately.
        text = text.translate(
            {ord(m): "" if (m + " " in text or " " + m in text) else " " for m in marks}
        )
    if "." in text:
        text = _PERIOD.sub("", text, _PERIOD_MAX_REMOVED)
    words = (_NUMBER_WORDS.get(w, w) for w in text.lower().split())
    return " ".join(_CONTRACTIONS.get(w, w) for w in words if w not in _ARTICLES)


def edit_distance(a: str, b: str) -> int:
    """Levenshtein distance over code points (unit costs).

    Bit-parallel (Myers 1999 / Hyyrö 2001): one pass over ``b`` with a few
    big-int operations per character, which keeps pure-Python ANLS fast
    without a compiled dependency.
    """
    if len(a) < len(b):
        a, b = b, a
    if not b:
        return len(a)
    # `b` is the pattern (the shorter string), `a` the text.
    masks: dict[str, int] = {}
    for i, ch in enumerate(b):
        masks[ch] = masks.get(ch, 0) | (1 << i)
    full = (1 << len(b)) - 1
    top = 1 << (len(b) - 1)
    plus, minus, dist = full, 0, len(b)
    for ch in a:
        eq = masks.get(ch, 0)
        xv = eq | minus
        xh = (((eq & plus) + plus) ^ plus) | eq
        h_plus = minus | ~(xh | plus)
        h_minus = plus & xh
        if h_plus & top:
            dist += 1
        elif h_minus & top:
            dist -= 1
        h_plus = (h_plus << 1) | 1
        h_minus <<= 1
        plus = (h_minus | ~(xv | h_plus)) & full
        minus = h_plus & xv
    return dist


def _anls_pair(pred: str, gt: str) -> float:
    """Similarity of two already lower-cased and stripped strings."""
    longest = max(len(pred), len(gt))
    if longest == 0:
        return 1.0  # official code divides by zero; identical strings score 1
    if pred == gt:
        return 1.0
    if 2 * abs(len(pred) - len(gt)) > longest:
        return 0.0  # distance >= length gap > half: below threshold whatever the text
    similarity = 1 - edit_distance(pred, gt) / longest  # same float ops as the official code
    return similarity if similarity >= ANLS_THRESHOLD else 0.0


def anls_score(pred: str, gts: Iterable[str]) -> float:
    """ANLS of one prediction: best thresholded similarity over the answers."""
    pred = pred.lower().strip()
    return max((_anls_pair(pred, gt.lower().strip()) for gt in gts), default=0.0)


def acc_score(pred: str, gts: Iterable[str]) -> float:
    """Acc of one prediction: 1.0 if it normalizes to any normalized answer."""
    pred = normalize_answer(pred)
    return 1.0 if any(pred == normalize_answer(gt) for gt in gts) else 0.0


@dataclass(frozen=True, slots=True)
class PreparedAnswers:
    """One question's ground truths, processed once for both metrics."""

    normalized: frozenset[str]
    lowered: tuple[str, ...]

    def score(self, pred: str) -> tuple[float, float]:
        """(Acc, ANLS) of ``pred`` against these answers."""
        acc = 1.0 if normalize_answer(pred) in self.normalized else 0.0
        lowered = pred.lower().strip()
        anls = max((_anls_pair(lowered, gt) for gt in self.lowered), default=0.0)
        return acc, anls


def prepare_answers(gts: Iterable[str]) -> PreparedAnswers:
    """Process a question's answers once; reuse the result for every prediction."""
    gts = tuple(gts)
    return PreparedAnswers(
        normalized=frozenset(normalize_answer(gt) for gt in gts),
        lowered=tuple(gt.lower().strip() for gt in gts),
    )


def score_batch(
    preds: Sequence[str], gts: Sequence[Sequence[str] | PreparedAnswers]
) -> tuple[list[float], list[float]]:
    """Per-question (Acc list, ANLS list) for aligned predictions and answers.

    ``gts`` items may be raw answer lists or :class:`PreparedAnswers` (prepare
    them once when the same questions are scored repeatedly). Aggregate with
    ``sum(scores) / len(scores)`` in question order to match the official
    evaluator bit for bit.
    """
    if len(preds) != len(gts):
        raise ValueError(f"{len(preds)} predictions for {len(gts)} questions")
    accs: list[float] = []
    anlss: list[float] = []
    for pred, answers in zip(preds, gts):
        prepared = answers if isinstance(answers, PreparedAnswers) else prepare_answers(answers)
        acc, anls = prepared.score(pred)
        accs.append(acc)
        anlss.append(anls)
    return accs, anlss
