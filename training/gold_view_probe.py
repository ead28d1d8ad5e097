"""Which half of a crop question fails: grounding or reading, measured on the curated (gold) trajectories.

An evaluation transcript mixes the two: a wrong answer after a crop may come from a crop in the wrong place or
from a misread right crop. Teacher forcing a model on the *verified* trajectories of a held-out split separates
them, in the model's own protocol format (a single-turn probe asks in a format the trained model no longer
answers in, and measures that as much as the skill):

- **reads the gold view**: after the gold crop or clip, the final turn states the answer (``it reads "78"``, the
  first :func:`~videor4.contracts.tool_protocol.decision_spans` span of that turn); the model reads it when the
  argmax at every token of that span is the gold token;
- **first box IoU ≥ 0.5**: the first call's box written token by token (each number's digits predicted from the
  gold prefix) against the gold box, for trajectories whose first call is a crop (a first clip's window is not
  scored: the gold reasoning states the window before the call, so teacher forcing would score copying);
- **restates the question**: the first turn restates the question (``The question asks: …``); every token of that
  copy predicted right. It is copying from the context, which a pretrained LLM does before any VQA training and a
  random-init model does not (micro benchmark, DRP-SFT with replay: the question's colour in 10 of 70);
- **the box follows the phrase**: the gold reasoning names where the text is before the first crop (``small text at
  the bottom right``, :func:`~videor4.contracts.boxes.position_phrase`). For first crops named by a corner, the
  model decodes the box greedily after the gold words up to ``[``, once as they are and once with the corner
  mirrored (bottom right → top left). It follows the phrase when both boxes lie where their words say. A model
  that writes its prior box whatever the words (measured: DRP-SFT of the micro base, x1's first digit unchanged by
  the swap) scores no row: one box cannot lie in two opposite corners.

Used by ``make bench-learning`` (a column per row) and, for any checkpoint, from Python.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from videor4.contracts.errors import UserError
from videor4.contracts.tool_protocol import ToolCall, parse_tool_calls

_MARK = 2.0  # decision tokens are found by encoding with this decision weight (any value ≠ 1 marks them)


def probe_gold_trajectories(model_dir: str | Path, shards_dir: str | Path, data_root: str | Path | None,
                            stages: tuple[str, ...] = ("drp",), limit: int = 200) -> dict[str, Any]:
    """Teacher-forced reading and grounding of ``model_dir`` on up to ``limit`` CoT rows of ``stages`` that call
    a tool; returns counts and rates (``reads``, ``read_n``, ``read_rate``; ``box_iou50``, ``box_n``,
    ``box_rate``, ``box_iou_mean`` for first crops; ``restates``, ``restate_n``, ``restate_rate``;
    ``phrase_follows``, ``phrase_n``, ``phrase_rate`` and ``phrase_gold``: greedy boxes where the words say, for
    first crops named by a corner)."""
    from videor4.training.stage_trainer import load_policy

    model, processor = load_policy(model_dir)
    return probe_model(model, processor, shards_dir, data_root, stages, limit)


def probe_model(model: Any, processor: Any, shards_dir: str | Path, data_root: str | Path | None,
                stages: tuple[str, ...] = ("drp",), limit: int = 200) -> dict[str, Any]:
    """:func:`probe_gold_trajectories` for a loaded model (anything whose ``model(**batch).logits`` are next-token
    logits)."""
    import numpy as np
    import torch

    from videor4.contracts.shard_io import read_manifest, read_training_rows
    from videor4.contracts.view import view_from_manifest
    from videor4.training.micro_base import answer_box_iou
    from videor4.training.sft_trainer import CoTRenderer
    from videor4.training.stage_trainer import batch_inputs

    view = view_from_manifest(read_manifest(Path(shards_dir)))
    if view is None:
        raise UserError(f"{shards_dir}: shards without a recorded view; curate them again")
    rows = [r for r in read_training_rows(shards_dir, list(stages), None)
            if any("<tool_call>" in m.text for m in r.messages if m.role == "assistant")][:limit]
    if not rows:
        raise UserError(f"{shards_dir}: no {'/'.join(stages)} trajectories that call a tool")
    model.eval()
    renderer = CoTRenderer(processor, data_root, view.prompt, view.ops, decision_weight=_MARK)
    start = processor.tokenizer.convert_tokens_to_ids("<|im_start|>")
    reads, read_n, restates, restate_n = 0, 0, 0, 0
    follows, gold_where, phrase_n = 0, 0, 0
    box: list[float] = []
    for row in rows:
        enc = renderer.encode(row)
        ids, w = enc.input_ids, enc.loss_mask
        turns = [i for i, t in enumerate(ids) if t == start]
        batch, _ = batch_inputs([(ids, w, enc.images)], processor)
        off = batch["input_ids"].shape[1] - len(ids)
        with torch.no_grad():
            argmax = model(**batch, use_cache=False).logits[0].argmax(-1).tolist()
        predicted = [argmax[off + i - 1] for i in range(len(ids))]  # the model's token at position i
        first_turn = _first_turn(turns, len(ids))
        copy = _find(ids, processor.tokenizer.encode(" " + row.question, add_special_tokens=False), first_turn)
        if copy:
            restate_n += 1
            restates += all(predicted[i] == ids[i] for i in copy)
        span = _first_run(w, turns[-1], len(ids))
        if span:
            read_n += 1
            reads += all(predicted[i] == ids[i] for i in span)
        calls = parse_tool_calls(next(m.text for m in row.messages if m.role == "assistant"))
        first_call = [i for i in first_turn if w[i] == _MARK]
        if first_call and isinstance(calls[0], ToolCall) and calls[0].name == "crop":
            a, b = first_call[0], first_call[-1] + 1  # from the tool's name to the box's last number
            gold = processor.tokenizer.decode(ids[a:b]).split("bbox_2d")[-1]
            mine = processor.tokenizer.decode([predicted[i] if w[i] == _MARK else ids[i] for i in range(a, b)])
            box.append(answer_box_iou(gold, mine.split("bbox_2d")[-1]))
            swapped = _mirrored(row)
            if swapped is not None:
                phrase_n += 1
                landed = [_greedy_box_phrase(model, processor, e) == f"at the {corner}"
                          for e, corner in ((enc, swapped[1]), (renderer.encode(swapped[0]), _MIRROR[swapped[1]]))]
                gold_where += landed[0]
                follows += all(landed)
    return {"reads": reads, "read_n": read_n, "read_rate": round(reads / max(read_n, 1), 3),
            "box_iou50": int(sum(i >= 0.5 for i in box)), "box_n": len(box),
            "box_rate": round(float(np.mean([i >= 0.5 for i in box])) if box else 0.0, 3),
            "box_iou_mean": round(float(np.mean(box)) if box else 0.0, 3),
            "restates": restates, "restate_n": restate_n, "restate_rate": round(restates / max(restate_n, 1), 3),
            "phrase_follows": follows, "phrase_gold": gold_where, "phrase_n": phrase_n,
            "phrase_rate": round(follows / max(phrase_n, 1), 3)}


_MIRROR = {"top left": "bottom right", "bottom right": "top left", "top right": "bottom left",
           "bottom left": "top right"}


def _mirrored(row: Any) -> tuple[Any, str] | None:
    """``row`` with the corner its first turn names mirrored in that turn, and the corner it named; None when the
    first turn names no corner."""
    first = next(i for i, m in enumerate(row.messages) if m.role == "assistant")
    text = row.messages[first].text
    named = next((c for c in _MIRROR if f"at the {c}" in text), None)
    if named is None:
        return None
    messages = list(row.messages)
    messages[first] = messages[first].model_copy(
        update={"text": text.replace(f"at the {named}", f"at the {_MIRROR[named]}")})
    return row.model_copy(update={"messages": messages}), named


def _greedy_box_phrase(model: Any, processor: Any, enc: Any, max_new: int = 40) -> str | None:
    """Where the box the model writes greedily after the first turn's words up to ``"bbox_2d": [`` lies
    (:func:`~videor4.contracts.boxes.position_phrase`), or None if it writes no four numbers and ``]``. Forward
    passes only (no cache), so any model whose ``model(**batch).logits`` are next-token logits can be probed."""
    import re

    import torch

    from videor4.contracts.boxes import position_phrase
    from videor4.training.stage_trainer import batch_inputs

    tok = processor.tokenizer
    ids = enc.input_ids
    starts = [i for i, t in enumerate(ids) if t == tok.convert_tokens_to_ids("<|im_start|>")]
    text, cut = "", None
    for i in _first_turn(starts, len(ids)):
        text += tok.decode([ids[i]])
        if "bbox_2d" in text and "[" in text.split("bbox_2d")[-1]:
            cut = i + 1
            break
    if cut is None:
        return None
    prefix = list(ids[:cut])
    shown = sum(t == tok.convert_tokens_to_ids("<|vision_start|>") for t in prefix)
    images = type(enc.images)(enc.images.pixel_values[:shown], enc.images.image_grid_thw[:shown],
                              enc.images.num_tokens[:shown])
    batch, _ = batch_inputs([(prefix, [0] * len(prefix), images)], processor)
    written = ""
    with torch.no_grad():
        for _ in range(max_new):
            nxt = model(**batch, use_cache=False).logits[0, -1].argmax().view(1, 1)
            batch["input_ids"] = torch.cat([batch["input_ids"], nxt], 1)
            batch["attention_mask"] = torch.cat([batch["attention_mask"], torch.ones_like(nxt)], 1)
            if "mm_token_type_ids" in batch:
                batch["mm_token_type_ids"] = torch.cat([batch["mm_token_type_ids"], torch.zeros_like(nxt).int()], 1)
            written += tok.decode([int(nxt)])
            if "]" in written:
                break
    numbers = [float(x) for x in re.findall(r"\d+(?:\.\d+)?", written.split("]")[0])]
    return position_phrase(numbers[:4]) if len(numbers) >= 4 and "]" in written else None


def _find(ids: list[int], needle: list[int], where: range) -> list[int]:
    """Positions of the first occurrence of ``needle`` in ``ids`` inside ``where``, or []."""
    for i in where:
        if i + len(needle) <= where.stop and ids[i:i + len(needle)] == needle:
            return list(range(i, i + len(needle)))
    return []


def _first_run(weights: list[float], begin: int, end: int) -> list[int]:
    """Positions of the first run of decision tokens in ``[begin, end)``."""
    run: list[int] = []
    for i in range(begin, end):
        if weights[i] == _MARK:
            run.append(i)
        elif run:
            break
    return run


def _first_turn(turns: list[int], end: int) -> range:
    """Token positions of the first assistant turn (the third ``<|im_start|>``: system, question, assistant)."""
    return range(turns[2], turns[3] if len(turns) > 3 else end) if len(turns) > 2 else range(0)

