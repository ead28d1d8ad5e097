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
  random-init model does not (micro benchmark, DRP-SFT with replay: the question's colour in 10 of 70).

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
    ``box_rate``, ``box_iou_mean`` for first crops; ``restates``, ``restate_n``, ``restate_rate``)."""
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
    return {"reads": reads, "read_n": read_n, "read_rate": round(reads / max(read_n, 1), 3),
            "box_iou50": int(sum(i >= 0.5 for i in box)), "box_n": len(box),
            "box_rate": round(float(np.mean([i >= 0.5 for i in box])) if box else 0.0, 3),
            "box_iou_mean": round(float(np.mean(box)) if box else 0.0, 3),
            "restates": restates, "restate_n": restate_n, "restate_rate": round(restates / max(restate_n, 1), 3)}


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

