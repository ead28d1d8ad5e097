"""The tool protocol as the model writes it (DESIGN §4): tool declarations, calls, answers, well-formedness.

Qwen2.5 function-calling layout, shared by trajectory synthesis (which writes it), rollouts (which parse it),
rewards (which judge it) and evaluation (which reads the answer)::

    <think>…</think>
    <tool_call>
    {"name": "clip", "arguments": {"start": 1.0, "end": 2.5}}
    </tool_call>
    …
    <think>…</think>
    <answer>…</answer>

A model trained on one reading of these tags and scored on another is silently handicapped, so every parser
and formatter of them is here, once. What the calls *do* is :mod:`videor4.contracts.executor`.

Answer extraction, first rule that applies:

1. the content of the **last** complete ``<answer>…</answer>`` (tags matched case-insensitively; an empty tag
   is an empty answer, not a miss);
2. the content of the last balanced ``\\boxed{…}`` (math-style outputs);
3. the last non-empty line of the text once complete ``<think>…</think>`` and ``<tool_call>…</tool_call>``
   blocks are removed (so reasoning or a tool call is never mistaken for an answer);
4. ``""`` when nothing is left.

The result is stripped of surrounding whitespace and otherwise returned as written: normalization belongs to
the metrics (:mod:`videor4.contracts.metrics`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

TOOL_NAMES = ("clip", "crop")
# Engines stop a turn here; the executor then runs the calls and the observation turn follows.
TOOL_STOP = "</tool_call>"
# Added tokens of Qwen2.5's vocabulary that delimit a call: a stop on ``</tool_call>`` ends on a token boundary.
TOOL_CALL_TOKENS = ("<tool_call>", "</tool_call>")

TOOL_SCHEMAS: list[dict[str, Any]] = [
    {
        "type": "function",
        "function": {
            "name": "clip",
            "description": "Return new frames decoded from the video between two times, sampled uniformly "
            "(frames you have already seen are skipped).",
            "parameters": {
                "type": "object",
                "properties": {
                    "start": {"type": "number", "description": "window start in seconds"},
                    "end": {"type": "number", "description": "window end in seconds (after start)"},
                },
                "required": ["start", "end"],
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "crop",
            "description": "Zoom into a region of an image in the conversation; returns the region enlarged.",
            "parameters": {
                "type": "object",
                "properties": {
                    "image": {"type": "integer", "description": "image number (Image 1 is the first image shown)"},
                    "bbox_2d": {
                        "type": "array",
                        "items": {"type": "number"},
                        "description": "[x1, y1, x2, y2], normalized 0-1 or pixels of that image",
                    },
                },
                "required": ["image", "bbox_2d"],
            },
        },
    },
]

_CALL_RE = re.compile(r"<tool_call>(.*?)(</tool_call>|$)", re.DOTALL)
_ANSWER = re.compile(r"<answer>(.*?)</answer>", re.IGNORECASE | re.DOTALL)
_NOT_ANSWER_BLOCKS = re.compile(r"<think>.*?</think>|<tool_call>.*?</tool_call>", re.IGNORECASE | re.DOTALL)
_BOXED = "\\boxed{"
_CALL_NAME = re.compile(r'"name"\s*:\s*"([^"]*)"')
_NUMBER = re.compile(r"(?<![\w.])-?\d+(?:\.\d+)?(?![\w.])")  # a value, not the 2 of "bbox_2d"
_THINK = r"\s*<think>(?:(?!</?think>).)+</think>\s*"
_ANSWER_TURN = re.compile(_THINK + r"<answer>(?:(?!</?answer>).)+</answer>\s*", re.DOTALL)
_CALL_TURN = re.compile(_THINK + r"(?:<tool_call>(?:(?!</?tool_call>).)+</tool_call>\s*)+", re.DOTALL)


@dataclass(frozen=True)
class ToolCall:
    name: str
    arguments: dict[str, Any]


@dataclass(frozen=True)
class ToolCallError:
    """A ``<tool_call>`` block that could not be parsed; executing it yields an error observation."""

    raw: str
    message: str


def parse_tool_calls(text: str) -> list[ToolCall | ToolCallError]:
    """All ``<tool_call>{json}</tool_call>`` blocks of an assistant turn, in order.

    An unterminated trailing block is parsed too (engines may strip the stop string); a block that is not a
    JSON object with a string ``name`` and an object ``arguments`` becomes a :class:`ToolCallError`.
    """
    calls: list[ToolCall | ToolCallError] = []
    for match in _CALL_RE.finditer(text):
        raw = match.group(1).strip()
        try:
            payload = json.loads(raw)
        except json.JSONDecodeError as exc:
            calls.append(ToolCallError(raw, f"tool call is not valid JSON ({exc.msg} at char {exc.pos})"))
            continue
        if not isinstance(payload, dict) or not isinstance(payload.get("name"), str):
            calls.append(ToolCallError(raw, 'tool call must be a JSON object {"name": ..., "arguments": {...}}'))
        elif not isinstance(payload.get("arguments", {}), dict):
            calls.append(ToolCallError(raw, '"arguments" must be a JSON object'))
        else:
            calls.append(ToolCall(payload["name"], payload.get("arguments", {})))
    return calls


def format_tool_call(call: ToolCall) -> str:
    """The exact text :func:`parse_tool_calls` reads back (Qwen2.5 function-calling layout)."""
    body = json.dumps({"name": call.name, "arguments": call.arguments}, ensure_ascii=False)
    return f"<tool_call>\n{body}\n</tool_call>"


def format_answer_turn(thought: str, answer: str) -> str:
    """The final assistant turn: reasoning, then only the short answer."""
    return f"<think>{thought}</think>\n<answer>{answer}</answer>"


def format_call_turn(thought: str, calls: Sequence[ToolCall]) -> str:
    """An assistant turn that reasons and calls tools (it ends at the last ``</tool_call>``)."""
    return f"<think>{thought}</think>\n" + "\n".join(format_tool_call(c) for c in calls)


def decision_spans(text: str) -> list[tuple[int, int]]:
    """Character spans of an assistant turn's *decisions*: in each complete ``<tool_call>``, the tool's name and
    every number of its arguments (image index, window, box); the answer, and every other place in the turn
    where the answer's text is written (the reading the answer copies, e.g. ``it reads "78"``). The rest is the
    protocol's wording and prose (in a token mean the decisions are a seventh of a turn). The teacher-forced
    gold-view probe (``training/gold_view_probe``) scores a model on exactly these tokens."""
    spans: list[tuple[int, int]] = []
    for call in _CALL_RE.finditer(text):
        if not call.group(2):
            continue
        start, body = call.start(1), call.group(1)
        spans += [(start + m.start(1), start + m.end(1)) for m in _CALL_NAME.finditer(body)]
        args = body.find('"arguments"')
        if args >= 0:
            spans += [(start + m.start(), start + m.end()) for m in _NUMBER.finditer(body, args)]
    for answer in _ANSWER.finditer(text):
        spans.append(answer.span(1))
        value = answer.group(1).strip()
        if value:
            spans += [(m.start(), m.end()) for m in re.finditer(re.escape(value), text)]
    return sorted(set(spans))


def has_answer(text: str) -> bool:
    """Whether a turn holds a complete ``<answer>…</answer>`` (a rollout ends there)."""
    return _ANSWER.search(text) is not None


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


def well_formed(turns: Sequence[str] | str) -> bool:
    """Every turn is ``<think>…</think>`` then either valid tool calls or one ``<answer>…</answer>``; the last
    turn answers. A call must parse as JSON ``{"name", "arguments"}`` — an unparseable call is a format error
    even though the executor returns an error observation for it."""
    turns = [turns] if isinstance(turns, str) else list(turns)
    if not turns or not _ANSWER_TURN.fullmatch(turns[-1]):
        return False
    for turn in turns[:-1]:
        if not _CALL_TURN.fullmatch(turn) or not all(isinstance(c, ToolCall) for c in parse_tool_calls(turn)):
            return False
    return True
