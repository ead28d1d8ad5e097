"""``videor4 eval transfer``: the paper's zero-shot transfer table through lmms-eval.

One checkpoint answers MP-DocVQA val, SlidesVQA test, MVBench, Video-MME and Video-MMMU with rumination (the
``videor4`` lmms-eval model: the rollout code of ``videor4 eval run``), then again as the single-pass
``--no-tools`` baseline with the same loaded engine, and the two are printed side by side. Every benchmark is
lmms-eval's own task (prompts, parsing, metric) except SlidesVQA test, which lmms-eval lacks and this package
ships (``lmms_eval_tasks/slidesvqa``); ``--m4-root`` adds the M4-ViteVQA validation splits (``m4_vitevqa_*``,
this package's task) with the numbers DESIGN §8 reports.

Nothing is downloaded: ``HF_HUB_OFFLINE``/``HF_DATASETS_OFFLINE`` are set, datasets come from ``--hf-home``'s
caches (what an earlier online lmms-eval run or ``huggingface-cli download`` left there) or from local dataset
folders given with ``--data NAME=DIR``, and videos from the folders under ``--hf-home`` where lmms-eval's video
tasks look for them. Module-level imports stay light: ``eval_cli`` imports this module to register the command.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from videor4.contracts.errors import UserError

TASKS_DIR = Path(__file__).resolve().parent / "lmms_eval_tasks"
"""lmms-eval ``--include_path`` holding this package's tasks (``m4_vitevqa*``, ``slidesvqa_test``)."""


@dataclass(frozen=True)
class Benchmark:
    name: str  # --benchmarks / --data key
    title: str  # row label, as the paper names it
    task: str  # lmms-eval task or group
    metric: str  # lmms-eval metric of the table (all metrics go to the JSON)
    label: str  # how the table names the metric
    scale: float  # factor to percent
    video_dir: str | None = None  # folder under HF_HOME where lmms-eval's task reads the videos


BENCHMARKS = {
    b.name: b
    for b in (
        Benchmark("mp-docvqa", "MP-DocVQA val", "multidocvqa_val", "anls", "ANLS", 100.0),
        Benchmark("slidesvqa", "SlidesVQA test", "slidesvqa_test", "anls", "ANLS", 100.0),
        Benchmark("mvbench", "MVBench", "mvbench", "mvbench_accuracy", "Acc (mean of 20 tasks)", 1.0, "mvbench_video"),
        Benchmark("videomme", "Video-MME (w/o subs)", "videomme", "videomme_perception_score", "Acc", 1.0, "videomme"),
        Benchmark("video-mmmu", "Video-MMMU", "video_mmmu", "mmmu_acc", "Acc (mean of 3 tracks)", 100.0,
                  "video_mmmu"),
    )
}
M4_SPLITS = ("t1s1val", "t1s2val", "t2val")
# DESIGN §8 (Video-R4 paper, M4-ViteVQA Acc / ANLS); the paper's transfer numbers are not in DESIGN.
REPORTED = {
    "m4_vitevqa_t1s1val": {"Video-R4-7B": (56.17, 65.22), "Qwen2.5-VL-7B": (26.53, 44.91)},
    "m4_vitevqa_t1s2val": {"Video-R4-7B": (52.69, 61.89), "Qwen2.5-VL-7B": (24.34, 39.60)},
    "m4_vitevqa_t2val": {"Video-R4-7B": (64.21, 69.99), "Qwen2.5-VL-7B": (32.81, 50.82)},
}


def register_transfer(eval_subparsers: argparse._SubParsersAction) -> None:
    """Add ``eval transfer`` to the ``eval`` command group."""
    p = eval_subparsers.add_parser(
        "transfer",
        help="zero-shot transfer table (MP-DocVQA, SlidesVQA, MVBench, Video-MME, Video-MMMU) through lmms-eval",
        description="Run a checkpoint with rumination and as the --no-tools baseline on lmms-eval benchmarks and "
        "print the table. Needs `pip install 'video-r4[eval]'`; reads data only from local caches/folders.",
    )
    p.add_argument("--model", required=True, type=Path, help="model directory (from save_pretrained)")
    p.add_argument("--hf-home", required=True, type=Path,
                   help="HF_HOME with the benchmarks' dataset caches and lmms-eval's video folders")
    p.add_argument("--benchmarks", default=",".join(BENCHMARKS),
                   help=f"comma-separated subset of {','.join(BENCHMARKS)} (default: all)")
    p.add_argument("--data", action="append", default=[], metavar="NAME=DIR",
                   help="local dataset folder for a benchmark (its Hugging Face repo layout), instead of the cache")
    p.add_argument("--m4-root", type=Path, help="also M4-ViteVQA val splits from this dataset root")
    p.add_argument("--m4-splits", default=",".join(M4_SPLITS), help="M4-ViteVQA splits with --m4-root")
    p.add_argument("--out", type=Path, help="folder for transfer.json, lmms-eval results and rollout records")
    p.add_argument("--limit", type=int, default=None, help="first N questions of each task (smoke runs)")
    p.add_argument("--no-baseline", action="store_true", help="skip the --no-tools baseline run")
    p.add_argument("--max-calls", type=int, default=None, help="tool-call budget per question (default 4)")
    p.add_argument("--frames", type=int, default=None,
                   help="initial frames (default: the checkpoint's recorded view, else 8; pages: evenly spread)")
    p.add_argument("--page-fps", type=float, default=1.0, help="pages per second when pages become frames")
    p.add_argument("--decoder", choices=("auto", "opencv", "pyav", "decord"), default="auto",
                   help="video decoder; decord seeks (use it for long videos: Video-MME, Video-MMMU)")
    p.add_argument("--max-new-tokens", type=int, default=768, help="generated tokens per question, all turns")
    p.add_argument("--batch-size", type=int, default=8, help="questions rolled out together")
    p.add_argument("--engine", choices=("hf", "vllm"), default="hf", help="generation engine (vllm needs a GPU)")
    p.add_argument("--device", default="auto", help="hf engine device: auto, cpu, cuda:0, ...")
    p.add_argument("--format", choices=("table", "json"), default="table", help="stdout: Markdown table or JSON")
    p.set_defaults(func=_run, loads_models=True)


def _run(args: argparse.Namespace) -> int:
    result = run_transfer(
        model_dir=args.model, hf_home=args.hf_home, benchmarks=_names(args.benchmarks),
        data=_data_paths(args.data), m4_root=args.m4_root, m4_splits=_names(args.m4_splits), out=args.out,
        limit=args.limit, baseline=not args.no_baseline, max_calls=args.max_calls, frames=args.frames,
        page_fps=args.page_fps, decoder=args.decoder, max_new_tokens=args.max_new_tokens, batch_size=args.batch_size,
        engine=args.engine, device=args.device,
    )
    print(json.dumps(result, indent=2) if args.format == "json" else format_transfer_table(result))
    return 0


def _names(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def _data_paths(items: list[str]) -> dict[str, Path]:
    out = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or not path:
            raise UserError(f"--data takes NAME=DIR, got {item!r}")
        out[name.strip()] = Path(path).expanduser()
    return out


def _task_specs(benchmarks: list[str], data: dict[str, Path], hf_home: Path, m4_root: Path | None,
                m4_splits: list[str]) -> list[tuple[str, str, str, Any]]:
    """``(row key, table title, lmms-eval task, task spec)`` per row, after checking the inputs exist."""
    unknown = [b for b in [*benchmarks, *data] if b not in BENCHMARKS]
    if unknown:
        raise UserError(f"unknown benchmark {unknown[0]!r}; choose from {', '.join(BENCHMARKS)}")
    if not benchmarks and m4_root is None:
        raise UserError("no benchmark selected")
    rows: list[tuple[str, str, str, Any]] = []
    for name in benchmarks:
        bench = BENCHMARKS[name]
        if bench.video_dir and not (hf_home / bench.video_dir).is_dir():
            raise UserError(f"{bench.title}: no {hf_home / bench.video_dir}/ (lmms-eval's task reads the videos "
                            f"there; see docs/transfer.md for the layout)")
        spec: Any = bench.task
        if name in data:
            if not data[name].is_dir():
                raise UserError(f"--data {name}={data[name]}: not a folder")
            spec = {"task": bench.task, "dataset_path": str(data[name].resolve())}
        rows.append((name, bench.title, bench.task, spec))
    if m4_root is not None:
        if not (m4_root / "Annotations").is_dir():
            raise UserError(f"--m4-root {m4_root} has no Annotations/ folder")
        unknown_splits = [s for s in m4_splits if not (m4_root / "Annotations" / f"ViteVQA_0.0.2_{s}.json").is_file()]
        if unknown_splits:
            raise UserError(f"--m4-root {m4_root}: no Annotations/ViteVQA_0.0.2_{unknown_splits[0]}.json")
        rows += [(f"m4_vitevqa_{s}", f"M4-ViteVQA {s}", f"m4_vitevqa_{s}", f"m4_vitevqa_{s}") for s in m4_splits]
    return rows


def _offline_env(hf_home: Path, m4_root: Path | None) -> None:
    """Before lmms-eval is imported: its video tasks read HF_HOME when their utils load; nothing may download."""
    os.environ["HF_HOME"] = str(hf_home.resolve())
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["HF_DATASETS_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    if m4_root is not None:
        os.environ["VIDEOR4_M4_ROOT"] = str(m4_root.resolve())


def run_transfer(
    model_dir: str | Path,
    hf_home: str | Path,
    benchmarks: list[str] | None = None,
    data: dict[str, Path] | None = None,
    *,
    m4_root: str | Path | None = None,
    m4_splits: list[str] | None = None,
    out: str | Path | None = None,
    limit: int | None = None,
    baseline: bool = True,
    max_calls: int | None = None,
    frames: int | None = None,
    page_fps: float = 1.0,
    decoder: str = "auto",
    max_new_tokens: int = 768,
    batch_size: int = 8,
    engine: str = "hf",
    device: str = "auto",
    rollout_engine: Any = None,
) -> dict[str, Any]:
    """Evaluate with rumination (and the no-tools baseline) and return the table's data.

    ``rollout_engine`` (Python callers) replaces loading ``model_dir``. The result holds, per row, the table's
    metric in percent for each mode, every lmms-eval metric, question counts, stop reasons, tool calls per
    question and wall time; with ``out`` it is written to ``transfer.json`` next to lmms-eval's results.
    """
    model_dir, hf_home = Path(model_dir), Path(hf_home)
    m4 = Path(m4_root) if m4_root is not None else None
    if not hf_home.is_dir():
        raise UserError(f"--hf-home {hf_home} is not a folder")
    if rollout_engine is None and not (model_dir / "config.json").is_file():
        raise UserError(f"model directory {model_dir} not found or has no config.json")
    if limit is not None and limit < 1:
        raise UserError("--limit must be at least 1")
    rows = _task_specs(list(BENCHMARKS) if benchmarks is None else benchmarks, dict(data or {}), hf_home, m4,
                       list(M4_SPLITS) if m4_splits is None else m4_splits)
    _offline_env(hf_home, m4)
    try:
        from lmms_eval.evaluator import simple_evaluate
        from lmms_eval.tasks import TaskManager

        from videor4.training.eval_run import eval_rollout_config
        from videor4.training.lmms_eval_model import MODEL_NAME, VideoR4, load_engine
    except ImportError as exc:
        raise UserError(f"eval transfer needs lmms-eval: pip install 'video-r4[eval]' ({exc})") from None
    from loguru import logger

    logger.remove()  # lmms-eval logs (and its tasks print) to stdout; stdout is for the table or the JSON
    logger.add(sys.stderr, level="WARNING")

    options = {"max_calls": max_calls if max_calls is not None else 4, "frames": frames,
               "max_new_tokens": max_new_tokens, "page_fps": page_fps, "decoder": decoder, "batch_size": batch_size}
    if rollout_engine is None:
        max_images = eval_rollout_config(model_dir, frames=frames, max_calls=max_calls).ops.max_images
        rollout_engine = load_engine(model_dir, engine, device, "auto", batch_size, max_images)
    manager = TaskManager(include_path=str(TASKS_DIR), model_name=MODEL_NAME)
    result: dict[str, Any] = {"model": str(model_dir), "engine": engine, "limit": limit, "options": options,
                              "rows": {key: {"title": title} for key, title, _, _ in rows}}
    modes = [("rumination", False)] + ([("no_tools", True)] if baseline else [])
    for mode, no_tools in modes:
        lm = VideoR4(rollout_engine=rollout_engine, no_tools=no_tools, **options)
        started = time.perf_counter()
        # lmms-eval pops keys from dict specs: each run gets its own copies
        with contextlib.redirect_stdout(sys.stderr):
            output = simple_evaluate(model=lm, tasks=[copy.deepcopy(spec) for *_, spec in rows],
                                     task_manager=manager, limit=limit, bootstrap_iters=0, log_samples=False,
                                     verbosity="WARNING")
        seconds = time.perf_counter() - started
        for key, _, task, _ in rows:
            result["rows"][key][mode] = _row(key, output, lm, task)
        result.setdefault("seconds", {})[mode] = seconds
        if out is not None:
            _write(Path(out) / mode, output, lm)
    if out is not None:
        Path(out).mkdir(parents=True, exist_ok=True)
        (Path(out) / "transfer.json").write_text(json.dumps(result, indent=2), encoding="utf-8")
    return result


def _leaf_tasks(task: str, output: dict[str, Any]) -> list[str]:
    groups = output.get("group_subtasks", {})
    return list(groups[task]) if groups.get(task) else [task]


def _row(key: str, output: dict[str, Any], lm: Any, task: str) -> dict[str, Any]:
    """The row's metrics for one mode: the table's number is the mean over a group's tasks."""
    leaves = _leaf_tasks(task, output)
    metrics = {leaf: {k.split(",")[0]: v for k, v in output["results"][leaf].items()
                      if "," in k and "stderr" not in k} for leaf in leaves}
    n = sum(output["n-samples"][leaf]["effective"] for leaf in leaves)
    stops: dict[str, int] = {}
    calls = 0
    for leaf in leaves:
        for reason, count in lm.stop_reasons(leaf).items():
            stops[reason] = stops.get(reason, 0) + count
        calls += sum(r["tool_calls"] for r in lm.records if r["task"] == leaf)
    row: dict[str, Any] = {"metrics": metrics, "n": n, "stop_reasons": stops,
                           "tool_calls_per_question": calls / n if n else 0.0}
    if key in BENCHMARKS:
        bench = BENCHMARKS[key]
        values = [metrics[leaf][bench.metric] for leaf in leaves]
        row["score"] = bench.scale * sum(values) / len(values)
    else:  # an M4 split: Acc / ANLS of the official evaluator, in percent already
        row["acc"], row["anls"] = metrics[key]["acc"], metrics[key]["anls"]
    return row


def _write(folder: Path, output: dict[str, Any], lm: Any) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    kept = {k: output[k] for k in ("results", "group_subtasks", "configs", "n-samples", "config") if k in output}
    (folder / "lmms_eval_results.json").write_text(json.dumps(kept, indent=2, default=str), encoding="utf-8")
    with open(folder / "rollouts.jsonl", "w", encoding="utf-8") as f:
        f.writelines(json.dumps(record, ensure_ascii=False, default=str) + "\n" for record in lm.records)


def format_transfer_table(result: dict[str, Any]) -> str:
    """Markdown: one row per benchmark, rumination next to the no-tools baseline (and reported M4 numbers)."""
    header = ("| benchmark | metric | Video-R4 (rumination) | no tools | Δ | calls/question | n | "
              "reported Video-R4-7B | reported Qwen2.5-VL-7B |")
    lines = [header, "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for key, row in result["rows"].items():
        ours, base = row.get("rumination", {}), row.get("no_tools")
        if key in BENCHMARKS:
            label = BENCHMARKS[key].label
            a, b = _pct(ours.get("score")), _pct(base.get("score")) if base else "—"
            delta = f"{ours['score'] - base['score']:+.2f}" if base else "—"
            reported = ("—", "—")
        else:
            label = "Acc / ANLS"
            a = f"{ours['acc']:.2f} / {ours['anls']:.2f}"
            b = f"{base['acc']:.2f} / {base['anls']:.2f}" if base else "—"
            delta = f"{ours['acc'] - base['acc']:+.2f} / {ours['anls'] - base['anls']:+.2f}" if base else "—"
            rep = REPORTED.get(key, {})
            reported = tuple(f"{v[0]:.2f} / {v[1]:.2f}" if v else "—"
                             for v in (rep.get("Video-R4-7B"), rep.get("Qwen2.5-VL-7B")))
        lines.append(f"| {row['title']} | {label} | {a} | {b} | {delta} | {ours['tool_calls_per_question']:.2f} | "
                     f"{ours['n']} | {reported[0]} | {reported[1]} |")
    return "\n".join(lines)


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}"

