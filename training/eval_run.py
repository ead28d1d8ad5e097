"""``videor4 eval run``: a model answers a split with rumination, then the answers are scored.

Inference goes through the same prompt builder, executor and rollout loop as RL training, so the numbers
measure the policy that was trained. Output, next to ``--out``:

* ``preds.jsonl`` — ``{"question_id", "pred_answer"}`` per line, the input of ``videor4 eval score``;
* ``preds.jsonl.transcripts.jsonl`` — every turn, tool call, observation (as re-executable image refs) and
  stop reason, for error analysis.

Runs are resumable: questions already in the predictions file are skipped. Each batch first appends its
transcripts, then atomically replaces the predictions file, so the predictions file is the commit point; on
restart, transcript lines of uncommitted (or half-written) batches are dropped.

Module-level imports stay light: ``videor4 eval score`` imports this module to register ``run``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from videor4.contracts.errors import UserError

TRANSCRIPTS_SUFFIX = ".transcripts.jsonl"


def register_run(eval_subparsers: argparse._SubParsersAction) -> None:
    """Add ``eval run`` to the ``eval`` command group."""
    p = eval_subparsers.add_parser(
        "run",
        help="run a model with clip/crop rumination over a split, write predictions and score them",
        description="Answer every question of <data-root>/Annotations/ViteVQA_0.0.2_<split>.json with a "
        "local Qwen2.5-VL checkpoint directory, write predictions + transcripts, print Acc/ANLS as JSON.",
    )
    p.add_argument("--model", required=True, type=Path, help="model directory (from save_pretrained)")
    p.add_argument("--data-root", required=True, type=Path, help="dataset root (Annotations/, videos/ or img_dir/)")
    p.add_argument("--split", required=True, help="split name, e.g. t1s1val")
    p.add_argument("--out", required=True, type=Path, help="predictions JSONL (resumed if it exists)")
    p.add_argument("--max-calls", type=int, default=None, help="tool-call budget per question (default: the "
                   "checkpoint's trained budget, recorded in its videor4_view.json, else 4)")
    p.add_argument("--no-tools", action="store_true", help="single-pass baseline: no tools declared, one turn")
    p.add_argument("--limit", type=int, default=None, help="only the first N questions of the split")
    p.add_argument("--frames", type=int, default=None,
                   help="frames in the initial view (default: the view the checkpoint was trained with, recorded in "
                   "its videor4_view.json, else 8); a value that differs from the recorded view is refused")
    p.add_argument("--max-new-tokens", type=int, default=768, help="generated tokens per question, all turns")
    p.add_argument("--batch-size", type=int, default=8, help="questions rolled out together")
    p.add_argument("--engine", choices=("hf", "vllm"), default="hf", help="generation engine (vllm needs a GPU)")
    p.add_argument("--device", default="auto", help="hf engine device: auto, cpu, cuda:0, ...")
    p.set_defaults(func=_run, loads_models=True)


def _run(args: argparse.Namespace) -> int:
    result = evaluate(
        model_dir=args.model,
        data_root=args.data_root,
        split=args.split,
        out=args.out,
        max_calls=args.max_calls,
        tools=not args.no_tools,
        limit=args.limit,
        frames=args.frames,
        max_new_tokens=args.max_new_tokens,
        batch_size=args.batch_size,
        engine=args.engine,
        device=args.device,
    )
    print(json.dumps(result, indent=2))
    return 0


def evaluate(
    model_dir: str | Path,
    data_root: str | Path,
    split: str,
    out: str | Path,
    *,
    max_calls: int | None = None,
    tools: bool = True,
    limit: int | None = None,
    frames: int | None = None,
    max_new_tokens: int = 768,
    batch_size: int = 8,
    engine: str = "hf",
    device: str = "auto",
) -> dict[str, Any]:
    """Run (or resume) inference over a split and return the scores of ``score_predictions`` plus run stats."""
    from videor4.contracts.dataset import annotation_path, load_split, locate_media
    from videor4.training.eval_cli import score_predictions
    from videor4.training.rollout import RolloutSample

    model_dir, data_root, out = Path(model_dir), Path(data_root), Path(out)
    if not (model_dir / "config.json").is_file():
        raise UserError(f"model directory {model_dir} not found or has no config.json")
    for name, value in (("--frames", frames), ("--batch-size", batch_size), ("--max-new-tokens", max_new_tokens)):
        if value is not None and value < 1:
            raise UserError(f"{name} must be at least 1, got {value}")
    if limit is not None and limit < 0 or max_calls is not None and max_calls < 0:
        raise UserError("--limit and --max-calls must not be negative")
    data = load_split(data_root, split)
    for reject in data.rejects:
        print(f"videor4: skipped: {reject.message}", file=sys.stderr)
    records = data.records[:limit] if limit is not None else data.records

    config = eval_rollout_config(model_dir, frames=frames, max_calls=max_calls, tools=tools,
                                 max_new_tokens=max_new_tokens)
    out.parent.mkdir(parents=True, exist_ok=True)  # --out runs/x/preds.jsonl in a folder that does not exist yet
    done = _resume(out)
    todo, no_media = [], []
    for record in records:
        if record.question_id in done:
            continue
        media = locate_media(data_root, record.video_id)
        if media is None:
            no_media.append(record.question_id)
            continue
        todo.append(RolloutSample(str(record.question_id), record.question, media.path, record.answers,
                                  {"question_id": record.question_id, "video_id": record.video_id}))
    for qid in no_media:
        print(f"videor4: skipped question {qid}: no videos/<id>.mp4 or img_dir/<id>/ under {data_root}", file=sys.stderr)

    stops: Counter[str] = Counter()
    if todo:
        stops = _infer(todo, config, model_dir, out, done, batch_size, engine, device)
    if not done:
        raise UserError(f"no predictions were made for split {split} (no questions with media)")
    result = score_predictions([annotation_path(data_root, split)], out)
    result["run"] = {
        "model": str(model_dir),
        "predicted_now": sum(stops.values()),
        "resumed": len(done) - sum(stops.values()),
        "no_media": len(no_media),
        "stop_reasons": dict(stops),
        "tools": tools,
    }
    return result


def eval_rollout_config(model_dir: str | Path | None = None, *, frames: int | None = None,
                        max_calls: int | None = None, tools: bool = True, max_new_tokens: int = 768) -> Any:
    """The rollout config of ``videor4 eval run`` (and of the lmms-eval ``videor4`` model) for these options.

    The view is the checkpoint's recorded one (``videor4_view.json``, what it was trained on); options may change
    budgets and tools, not pixels (a conflicting ``frames`` is refused). When the initial frames alone would
    fill the image budget, the budget grows by one clip.
    """
    from videor4.contracts.executor import OpsConfig
    from videor4.contracts.view import PromptConfig, load_view, resolve_view
    from videor4.training.rollout import RolloutConfig

    prompt = PromptConfig(tools=tools) if frames is None else PromptConfig(num_frames=frames, tools=tools)
    ops = OpsConfig(max_calls=max_calls) if max_calls is not None else None
    recorded = load_view(Path(model_dir)) if model_dir is not None else None
    view = resolve_view(recorded, prompt, ops, f"eval --model {model_dir}")
    if view.prompt.num_frames >= view.ops.max_images:
        view = view.model_copy(update={"ops": view.ops.model_copy(
            update={"max_images": view.prompt.num_frames + view.ops.clip_frames})})
    return RolloutConfig(max_new_tokens=max_new_tokens, ops=view.ops, prompt=view.prompt)


def _infer(
    todo: Sequence[Any], config: Any, model_dir: Path, out: Path, done: dict[int, str], batch_size: int,
    engine_name: str, device: str,
) -> Counter[str]:
    from tqdm import tqdm

    from videor4.contracts.atomic import write_text_atomic
    from videor4.training.rollout import HFEngine, HFEngineConfig, run_rollouts, video_executor_factory

    if engine_name == "vllm":
        from videor4.training.vllm_engine import VLLMEngine, VLLMEngineConfig

        # vLLM must accept every image a rollout can hold (initial frames + tool images) and its whole context.
        engine: Any = VLLMEngine.from_pretrained(model_dir, VLLMEngineConfig(
            max_images=config.ops.max_images, max_model_len=config.max_context_tokens))
    else:
        engine = HFEngine.from_pretrained(model_dir, HFEngineConfig(device=device, batch_size=batch_size))
    factory = video_executor_factory(config)
    stops: Counter[str] = Counter()
    transcripts = out.with_name(out.name + TRANSCRIPTS_SUFFIX)
    with tqdm(total=len(todo), desc="eval run", unit="question") as bar:
        for start in range(0, len(todo), batch_size):
            batch = todo[start : start + batch_size]
            rollouts = run_rollouts(engine, batch, factory, config)
            lines = "".join(json.dumps(_transcript(s, r, model_dir, config), ensure_ascii=False) + "\n" for s, r in zip(batch, rollouts))
            with open(transcripts, "a", encoding="utf-8") as f:
                f.write(lines)
            for sample, rollout in zip(batch, rollouts):
                done[sample.meta["question_id"]] = rollout.answer
                stops[rollout.stop_reason] += 1
            write_text_atomic(out, _predictions_text(done))
            bar.update(len(batch))
    return stops


def _predictions_text(done: dict[int, str]) -> str:
    return "".join(json.dumps({"question_id": q, "pred_answer": a}, ensure_ascii=False) + "\n" for q, a in done.items())


def _resume(out: Path) -> dict[int, str]:
    """Predictions already committed; transcripts of uncommitted batches are dropped so lines match."""
    from videor4.contracts.atomic import write_text_atomic

    done: dict[int, str] = {}
    if out.exists():
        for number, line in enumerate(out.read_text(encoding="utf-8").splitlines(), start=1):
            try:
                row = json.loads(line)
                done[int(row["question_id"])] = str(row["pred_answer"])
            except (ValueError, KeyError, TypeError):
                raise UserError(f"{out}:{number}: not a predictions line; remove the file or pick another --out") from None
    transcripts = out.with_name(out.name + TRANSCRIPTS_SUFFIX)
    if transcripts.exists():
        kept = []
        for line in transcripts.read_text(encoding="utf-8").splitlines():
            try:
                if json.loads(line)["question_id"] in done:
                    kept.append(line + "\n")
            except (ValueError, KeyError, TypeError):
                continue  # a half-written line from an interrupted batch
        write_text_atomic(transcripts, "".join(kept))
    return done


def _transcript(sample: Any, rollout: Any, model_dir: Path, config: Any) -> dict[str, Any]:
    """One question's rumination: turns with observations, and the chat as a shard stores it (``messages``: text
    with image tokens + re-executable refs) with the view, so the HTML viewer can replay every image."""
    from videor4.contracts.shard_codec import chat_to_shard_messages

    return {
        "question_id": sample.meta["question_id"],
        "video_id": sample.meta["video_id"],
        "question": sample.question,
        "answers": list(sample.answers),
        "pred_answer": rollout.answer,
        "stop_reason": rollout.stop_reason,
        "generated_tokens": rollout.generated_tokens,
        "model": str(model_dir),
        "turns": [
            {
                "assistant": turn.assistant,
                "observations": [
                    {"ok": o.ok, "tool": o.tool, "message": o.message, "refs": [asdict(r) for r in o.refs]}
                    for o in turn.observations
                ],
            }
            for turn in rollout.turns
        ],
        "initial_refs": [asdict(r) for r in rollout.refs[: len(rollout.refs) - sum(len(o.refs) for o in rollout.observations)]],
        "video_path": str(sample.source),
        "view": config.view.model_dump(mode="json"),
        "messages": [m.model_dump(mode="json") for m in chat_to_shard_messages(rollout.messages, rollout.refs)],
    }
