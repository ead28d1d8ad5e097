"""Pull the final answer out of a model's output.

Evaluation and the RL accuracy reward must read answers the same way, or a
policy is rewarded for outputs that evaluation then scores differently; both
call :func:`extract_answer`.

Order of precedence (first that applies):

1. the content of the **last** complete ``<answer>…</answer>`` (tags matched
   case-insensitively; an empty tag is an empty answer, not a miss);
2. the content of the last balanced ``\\boxed{…}`` (math-style outputs);
3. the last non-empty line of the text once complete ``<think>…</think>`` and
   ``<tool_call>…</tool_call>`` blocks are removed (so reasoning or a tool
   call is never mistaken for an answer);
4. ``""`` when nothing is left.

The result is stripped of surrounding whitespace and otherwise returned as
written: normalization belongs to the metrics.
"""

from __future__ import annotations

import re

__all__ = ["extract_answer"]

_ANSWER = re.compile(r"<answer>(.*?)</answer>", re.IGNORECASE | re.DOTALL)
_NOT_ANSWER_BLOCKS = re.compile(
    r"<think>.*?</think>|<tool_call>.*?</tool_call>", re.IGNORECASE | re.DOTALL
)
_BOXED = "\\boxed{"


def _last_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{`` whose braces balance, else None."""
    start = text.rfind(_BOXED)
    while start != -1:
        depth = 0
        for i in range(start + len(_BOXED) - 1, len(text)):
            if text[i] == "{":
                depth += 1
            elif text[i] == "}":
                depth -= 1
                if depth == 0:
                    return text[start + len(_BOXED) : i]
        start = text.rfind(_BOXED, 0, start)
    return None


def extract_answer(text: str) -> str:
    """The model's final answer in ``text`` (see the module doc for the rules)."""
    tagged = _ANSWER.findall(text)
    if tagged:
        return tagged[-1].strip()
    boxed = _last_boxed(text)
    if boxed is not None:
        return boxed.strip()
    lines = (line.strip() for line in _NOT_ANSWER_BLOCKS.sub("", text).splitlines())
    return next((line for line in reversed(list(lines)) if line), "")
