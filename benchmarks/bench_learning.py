"""``make bench-learning``: does the curriculum teach rumination? The micro benchmark, end to end on CPU.

One command runs the whole chain a 7B run takes, at micro scale, through the same code
(docs/learning_benchmark.md):

    videor4 micro-data   → train split (+ the base model's pretraining images) and a test split (TEST_SEED)
    videor4 micro-model  → the micro Qwen2.5-VL: random init, pretrained to read (vision + language alignment)
    videor4 curate       → evidence, verified DRP/CRP trajectories, CoT/RL shards (precomputed OCR); the test
                           split too, whose verified trajectories the gold-view probe teacher-forces each row on
    videor4 train        → micro-cpu: DRP-SFT → RLd → CRP-SFT → RLc, and the ablations branching from it
    videor4 eval run     → every row on the test split, official Acc/ANLS; the full model at 0…4 calls

and writes ``<out>/results.json`` (``rows``, ``scaling``, ``seconds``, plus margins, per-kind scores and the
settings), ``<out>/table.md`` and ``<out>/curves.png`` (training curves from each stage's metrics.jsonl).

Stages are reused, not retrained: rows drp_sft/rld/crp_sft/full are the four checkpoints of one curriculum run;
no_rcur (RLd → CRP-SFT → RLc without R_cur) and drp_crp_rlc (CRP-SFT → RLc) branch from its DRP-SFT checkpoint;
crp_sft_only and no_tools start from the base model. Jobs run as separate processes, two at a time (one torch
thread each: on 2 shared cores a two-thread process spent ~10x the CPU time per step spinning), as soon as what
they need exists; a job whose output exists is skipped, so a rerun resumes, and ``TEST_SEED=N`` only renders
and evaluates a new test split. Every job's wall and CPU seconds are recorded (``seconds``; ``cpu_seconds``)
so that runs on a busy machine can be compared.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
ROWS = ("no_tools", "drp_sft", "rld", "crp_sft", "full", "no_rcur", "drp_crp_rlc", "crp_sft_only")
ROW_TITLES = {
    "no_tools": "No-tool baseline (direct answers, same compute)", "drp_sft": "DRP-SFT", "rld": "+ RLd",
    "crp_sft": "+ CRP-SFT", "full": "+ RLc (full curriculum)", "no_rcur": "w/o R_cur",
    "drp_crp_rlc": "DRP → CRP → RLc", "crp_sft_only": "CRP-SFT only"}
SCALING_CALLS = (0, 1, 2, 3, 4)


# --- settings ---------------------------------------------------------------------------------------------------
@dataclass
class Settings:
    out: Path
    seed: int = 0
    test_seed: int = 0
    train: int = 1500
    test: int = 500
    pretrain_scenes: int = 300
    text_steps: int = 0
    vision_steps: int = 800
    language_steps: int = 1200
    # The base's pretraining curriculum after the data's own centred crops: sets whose crops sit ever further
    # off-centre (margins per side in text heights), the vision step on each, alignment again on the last
    # (docs/learning_benchmark.md, "The base reads only centred crops"). Empty: the single-set base.
    pretrain_margins: tuple[tuple[float, float], ...] = ((0.6, 1.0), (0.4, 1.3))
    jobs: int = 2
    eval_batch: int = 64
    recipe: str = "micro-cpu"
    overrides: dict[str, Any] = field(default_factory=dict)  # dotted recipe overrides (CI uses smaller numbers)

    @property
    def data(self) -> Path:
        return self.out / "data"

    @property
    def test_root(self) -> Path:
        return self.out / f"test-seed{self.test_seed}"

    @property
    def pretrain_sets(self) -> list[Path]:
        """The folders of the curriculum's further pretraining sets, in order (``pretrain.npz`` in each)."""
        return [self.out / "pretrain" / f"margin-{lo:g}-{hi:g}" for lo, hi in self.pretrain_margins]

    @property
    def replay_set(self) -> Path | None:
        """What the SFT stages replay: the base's last pretraining set (None: the data root's pretrain.npz)."""
        sets = self.pretrain_sets
        return sets[-1] / "pretrain.npz" if sets else None

    @property
    def shards(self) -> Path:
        return self.out / "curated" / "shards"

    @property
    def test_shards(self) -> Path:
        """The test split curated like the training split: its verified trajectories are the gold views the
        teacher-forced probe (:func:`gold_view`) runs on."""
        return self.out / f"curated-test-seed{self.test_seed}" / "shards"


def videor4(*args: str) -> list[str]:
    return [sys.executable, "-m", "videor4.pipelines.cli", *args]


# --- recipes ------------------------------------------------------------------------------------------------------
def _set(tree: dict, dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    for p in parents:
        tree = tree[int(p)] if isinstance(tree, list) else tree.setdefault(p, {})
    tree[leaf] = value


def write_recipes(s: Settings) -> dict[str, Path]:
    """The bundled micro-cpu recipe and the ablations cut from it (same hyper-parameters, fewer stages)."""
    from videor4.training.curriculum import resolve_recipe_path
    from videor4.training.micro_base import COPY_PER_STEP

    # A JSON round trip unshares YAML anchors (`sft: *sft`): an override of one stage must not change another.
    base = json.loads(json.dumps(yaml.safe_load(resolve_recipe_path(s.recipe).read_text(encoding="utf-8"))))
    for replay in (st["sft"]["replay"] for st in base["stages"] if st["kind"] == "sft" and st["sft"].get("replay")):
        if s.text_steps:  # a base that learned to copy: SFT replays copy sequences, or it erases the copying
            replay.setdefault("copy_per_step", COPY_PER_STEP)
        if s.replay_set is not None:  # a curriculum base replays the last set it was aligned on
            replay["questions"] = str(s.replay_set)
    for dotted, value in s.overrides.items():
        _set(base, dotted, value)
    stages = {st["name"]: st for st in base["stages"]}
    no_cur = []
    for name in ("rld", "crp-sft", "rlc"):
        st = json.loads(json.dumps(stages[name]))
        if st["kind"] == "grpo":
            st["grpo"]["rewards"] = [r for r in st["grpo"]["rewards"] if r["name"] != "curiosity"]
        no_cur.append(st)
    sft = stages["drp-sft"]["sft"]
    drp_rows = _count_rows(s.shards, "drp")
    crp_rows = _count_rows(s.shards, "crp")
    batch = sft["per_device_batch_size"] * sft.get("gradient_accumulation_steps", 1)
    # The no-tool baseline sees as many training conversations as both SFT stages of the curriculum together.
    direct_steps = max(1, math.ceil(sft["num_epochs"] * drp_rows / batch) + math.ceil(
        stages["crp-sft"]["sft"]["num_epochs"] * crp_rows / batch))
    direct = {"name": "direct-sft", "kind": "sft", "data": {"stages": ["drp"]},
              "sft": {**sft, "max_steps": direct_steps}}
    variants = {
        "full": base["stages"],
        "no_rcur": no_cur,
        "drp_crp_rlc": [stages["crp-sft"], stages["rlc"]],
        "crp_sft_only": [stages["crp-sft"]],
        "no_tools": [direct],
    }
    out = {}
    folder = s.out / "recipes"
    folder.mkdir(parents=True, exist_ok=True)
    for name, stage_list in variants.items():
        recipe = {**base, "name": f"{base['name']}-{name}", "stages": stage_list}
        path = folder / f"{name}.yaml"
        text = yaml.safe_dump(recipe, sort_keys=False)
        if not path.is_file() or path.read_text(encoding="utf-8") != text:
            path.write_text(text, encoding="utf-8")
        out[name] = path
    return out


def _count_rows(shards: Path, stage: str) -> int:
    manifest = json.loads((shards / "manifest.json").read_text(encoding="utf-8"))
    return int(manifest["counts"].get(stage, 0))


# --- jobs ---------------------------------------------------------------------------------------------------------
@dataclass
class Job:
    name: str
    part: str  # the "seconds" key it counts towards
    needs: list[Path]
    done: Path  # exists when the job has finished
    argv: list[str] | None = None
    func: Any = None  # in-process job (cheap ones)
    prepare: Any = None  # called just before starting (writes recipes once the shards exist)


def _stage_done(run: Path, k: int, name: str) -> Path:
    return run / f"{k:02d}-{name}" / "stage_done.json"


def _final(run: Path, k: int, name: str) -> Path:
    return run / f"{k:02d}-{name}" / "final"


def eval_targets(s: Settings) -> dict[str, tuple[Path, list[str]]]:
    """Row / scaling point → (model dir, extra eval flags)."""
    runs = s.out / "runs"
    full = runs / "full"
    t = {
        "no_tools": (_final(runs / "no_tools", 1, "direct-sft"), ["--no-tools"]),
        "drp_sft": (_final(full, 1, "drp-sft"), []),
        "rld": (_final(full, 2, "rld"), []),
        "crp_sft": (_final(full, 3, "crp-sft"), []),
        "full": (_final(full, 4, "rlc"), []),
        "no_rcur": (_final(runs / "no_rcur", 3, "rlc"), []),
        "drp_crp_rlc": (_final(runs / "drp_crp_rlc", 2, "rlc"), []),
        "crp_sft_only": (_final(runs / "crp_sft_only", 1, "crp-sft"), []),
    }
    for k in SCALING_CALLS:
        t[f"calls{k}"] = (_final(full, 4, "rlc"), ["--max-calls", str(k)])
    return t


def build_jobs(s: Settings) -> list[Job]:
    data_done = s.data / "Annotations" / "ViteVQA_0.0.2_microtrain.json"
    test_done = s.test_root / "Annotations" / "ViteVQA_0.0.2_microtest.json"
    base = s.out / "base"
    runs = s.out / "runs"
    jobs = [
        Job("data", "generate", [], data_done, videor4(
            "micro-data", "--out", str(s.data), "--seed", str(s.seed), "--train", str(s.train), "--test", "0",
            "--pretrain", str(s.pretrain_scenes), "--workers", "1")),
        Job("test-data", "generate", [], test_done, videor4(
            "micro-data", "--out", str(s.test_root), "--seed", str(s.test_seed), "--train", "0", "--test",
            str(s.test), "--workers", "1")),
    ]
    for (lo, hi), folder in zip(s.pretrain_margins, s.pretrain_sets):  # same scenes as the data's set, moved crops
        jobs.append(Job(f"pretrain-set:{folder.name}", "generate", [], folder / "pretrain.npz", videor4(
            "micro-data", "--out", str(folder), "--seed", str(s.seed), "--train", "0", "--test", "0",
            "--pretrain", str(s.pretrain_scenes), "--pretrain-crop-margin", str(lo), str(hi), "--workers", "1")))
    jobs += [
        Job("base", "base", [data_done, *(f / "pretrain.npz" for f in s.pretrain_sets)],
            base / "videor4_micro_base.json", videor4(
            "micro-model", "--out", str(base), "--pretrain", str(s.data), *map(str, s.pretrain_sets),
            "--text-steps", str(s.text_steps),
            "--vision-steps", str(s.vision_steps),
            "--language-steps", str(s.language_steps), "--seed", str(s.seed))),
        Job("curate", "curate", [data_done], s.shards / "manifest.json", videor4(
            "curate", "--data-root", str(s.data), "--split", "microtrain", "--config", "micro", "--out",
            str(s.out / "curated"), "--workers", "1", "--no-progress")),
        Job("test-curate", "curate", [test_done], s.test_shards / "manifest.json", videor4(
            "curate", "--data-root", str(s.test_root), "--split", "microtest", "--config", "micro", "--out",
            str(s.test_shards.parent), "--workers", "1", "--no-progress")),
        Job("no-tools-shards", "curate", [s.shards / "manifest.json"], s.out / "direct-shards" / "manifest.json",
            func=lambda: _direct_shards(s)),
    ]
    base_ready = base / "videor4_micro_base.json"
    shards_ready = s.shards / "manifest.json"
    drp_done = _stage_done(runs / "full", 1, "drp-sft")

    def train(name: str, model: Path, shards: Path, last: Path, needs: list[Path]) -> Job:
        return Job(f"train:{name}", f"train:{name}", needs, last, videor4(
            "train", "--recipe", str(s.out / "recipes" / f"{name}.yaml"), "--model", str(model), "--shards",
            str(shards), "--data-root", str(s.data), "--output", str(runs / name), "--resume"),
            prepare=lambda: write_recipes(s))

    jobs += [
        train("full", base, s.shards, _stage_done(runs / "full", 4, "rlc"), [base_ready, shards_ready]),
        train("no_tools", base, s.out / "direct-shards", _stage_done(runs / "no_tools", 1, "direct-sft"),
              [base_ready, s.out / "direct-shards" / "manifest.json"]),
        train("crp_sft_only", base, s.shards, _stage_done(runs / "crp_sft_only", 1, "crp-sft"),
              [base_ready, shards_ready]),
        train("no_rcur", _final(runs / "full", 1, "drp-sft"), s.shards, _stage_done(runs / "no_rcur", 3, "rlc"),
              [drp_done]),
        train("drp_crp_rlc", _final(runs / "full", 1, "drp-sft"), s.shards,
              _stage_done(runs / "drp_crp_rlc", 2, "rlc"), [drp_done]),
    ]
    evals = s.out / "evals" / f"test-seed{s.test_seed}"
    for name, (model, flags) in eval_targets(s).items():
        if name == "calls3":
            continue  # the full row is the full model at its trained budget (3 calls)
        preds = evals / f"{name}.jsonl"
        jobs.append(Job(f"eval:{name}", "eval", [model.parent / "stage_done.json", test_done],
                        evals / f"{name}.done", videor4(
                            "eval", "run", "--model", str(model), "--data-root", str(s.test_root), "--split",
                            "microtest", "--out", str(preds), "--batch-size", str(s.eval_batch),
                            "--max-new-tokens", "400", *flags)))
    return jobs


def _direct_shards(s: Settings) -> None:
    from videor4.curation.micro_data import write_direct_answer_shards

    write_direct_answer_shards(s.shards, s.out / "direct-shards")


class Runner:
    """Runs jobs as soon as their inputs exist, ``slots`` at a time; records wall and CPU seconds per job."""

    def __init__(self, s: Settings):
        self.s = s
        self.logs = s.out / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.timing_path = s.out / "timing.json"
        self.timing: dict[str, dict[str, float]] = (
            json.loads(self.timing_path.read_text()) if self.timing_path.is_file() else {})

    def run(self, jobs: list[Job]) -> None:
        env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false",
               "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
        pending = [j for j in jobs if not j.done.exists()]
        running: dict[int, tuple[Job, float, Any, subprocess.Popen]] = {}
        for j in jobs:
            if j.done.exists():
                print(f"[bench-learning] {j.name}: done before, skipped", flush=True)
        while pending or running:
            ready = [j for j in pending if all(p.exists() for p in j.needs)]
            while ready and len(running) < self.s.jobs:
                job = ready.pop(0)
                pending.remove(job)
                if job.prepare is not None:
                    job.prepare()
                print(f"[bench-learning] {job.name}: start", flush=True)
                if job.func is not None:
                    started, cpu = time.time(), time.process_time()
                    job.func()
                    self._record(job, time.time() - started, time.process_time() - cpu)
                    continue
                log = open(self.logs / f"{job.name.replace(':', '-')}.log", "w")
                proc = subprocess.Popen(job.argv, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPO)
                # The Popen object is kept: a dropped one goes to subprocess's cleanup list, and the next Popen
                # would reap the finished child before os.wait4 below sees it (the job would never finish).
                running[proc.pid] = (job, time.time(), log, proc)
            if not running:
                if pending:
                    missing = {j.name: [str(p) for p in j.needs if not p.exists()] for j in pending}
                    raise SystemExit(f"bench-learning: jobs cannot start, inputs missing: {missing}")
                break
            pid, status, usage = os.wait4(-1, 0)
            if pid not in running:
                continue
            job, started, log, proc = running.pop(pid)
            log.close()
            code = os.waitstatus_to_exitcode(status)
            proc.returncode = code  # reaped here; the Popen object must not wait for it again
            if code != 0:
                self._kill(running)
                raise SystemExit(f"bench-learning: {job.name} failed (exit {code}); see {self.logs}/"
                                 f"{job.name.replace(':', '-')}.log")
            if job.name.startswith("eval:"):
                job.done.write_text("ok\n")
            self._record(job, time.time() - started, usage.ru_utime + usage.ru_stime)

    @staticmethod
    def _kill(running: dict) -> None:
        for pid in list(running):
            try:
                os.kill(pid, 15)
            except ProcessLookupError:
                pass

    def _record(self, job: Job, wall: float, cpu: float) -> None:
        self.timing[job.name] = {"part": job.part, "seconds": round(wall, 1), "cpu_seconds": round(cpu, 1),
                                 "finished": time.strftime("%H:%M:%S")}
        self.timing_path.write_text(json.dumps(self.timing, indent=2))
        print(f"[bench-learning] {job.name}: done in {wall:.0f} s ({cpu:.0f} CPU s)", flush=True)


# --- scoring ------------------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=1024)
def _video_text(root: Path, video_id: str, video_path: str) -> tuple[dict[int, list[Any]], int, int] | None:
    """The precomputed OCR of a video and its frame size, read once per video: every row of the benchmark
    evaluates the same test videos."""
    from videor4.contracts.dataset import precomputed_ocr_path
    from videor4.contracts.media import open_video
    from videor4.curation.ocr import load_precomputed_ocr

    path = precomputed_ocr_path(root, video_id)
    if path is None:
        return None
    video = Path(video_path)
    with open_video(video if video.is_absolute() else root / video, video_id=video_id) as reader:
        return load_precomputed_ocr(path), reader.width, reader.height


def crops_on_target(transcript: dict[str, Any], root: Path) -> tuple[int, int]:
    """(crop calls, those whose region holds the whole text of the answer in that frame), from the dataset's
    precomputed OCR: the grounding half of a crop question, apart from the reading half. A model that crops a
    fixed corner writes well-formed crops that hold nothing (measured: docs/learning_benchmark.md)."""
    crops = [o for turn in transcript["turns"] for o in turn["observations"] if o["tool"] == "crop" and o["ok"]]
    known = _video_text(root, str(transcript["video_id"]), str(transcript["video_path"])) if crops else None
    if known is None:
        return len(crops), 0
    ocr, w, h = known
    answers = {a.strip() for a in transcript["answers"]}
    hits = 0
    for o in crops:
        ref = o["refs"][0]
        x1, y1, x2, y2 = ref["bbox"]
        for box in ocr.get(ref["frame_index"], []):
            bx1, by1, bx2, by2 = box.bbox
            if box.text.strip() in answers and x1 * w <= bx1 and y1 * h <= by1 and bx2 <= x2 * w and by2 <= y2 * h:
                hits += 1
                break
    return len(crops), hits


def score_eval(s: Settings, name: str) -> dict[str, Any]:
    """Official Acc/ANLS (``score_predictions``) plus what the transcripts show: well-formed answers, tool calls
    per question, crop share of the calls, crops on the answer's text (:func:`crops_on_target`), per question
    kind; per-question Acc for paired comparisons."""
    from videor4.contracts.metrics import prepare_answers
    from videor4.contracts.tool_protocol import well_formed
    from videor4.training.eval_cli import score_predictions

    preds = s.out / "evals" / f"test-seed{s.test_seed}" / f"{name}.jsonl"
    annotations = s.test_root / "Annotations" / "ViteVQA_0.0.2_microtest.json"
    official = score_predictions([annotations], preds)
    kinds = json.loads((s.test_root / "micro_test_kinds.json").read_text())["kinds"]
    records = {r["question_id"]: r for r in json.loads(annotations.read_text())["data"]}
    transcripts = [json.loads(line) for line in
                   preds.with_name(preds.name + ".transcripts.jsonl").read_text().splitlines() if line.strip()]
    per_q: dict[int, float] = {}
    formed, calls, crops, clips, crop_hits, crop_calls = [], [], 0, 0, 0, 0
    by_kind: dict[str, list[float]] = {}
    for t in transcripts:
        qid = t["question_id"]
        acc, _ = prepare_answers(records[qid]["answers"]).score(t["pred_answer"])
        per_q[qid] = acc
        formed.append(well_formed([turn["assistant"] for turn in t["turns"]]))
        obs = [o for turn in t["turns"] for o in turn["observations"]]
        calls.append(len(obs))
        crops += sum(o["tool"] == "crop" for o in obs)
        clips += sum(o["tool"] == "clip" for o in obs)
        made, hit = crops_on_target(t, s.test_root)
        crop_calls, crop_hits = crop_calls + made, crop_hits + hit
        by_kind.setdefault(kinds[str(qid)]["kind"], []).append(acc)
    n = len(transcripts)
    return {
        "acc": round(official["acc"], 2), "anls": round(official["anls"], 2),
        "well_formed": round(100 * sum(formed) / max(n, 1), 2), "calls": round(sum(calls) / max(n, 1), 3),
        "crop_share": round(crops / (crops + clips), 3) if crops + clips else None, "n": official["n"],
        "crops_on_target": round(crop_hits / crop_calls, 3) if crop_calls else None,
        "by_kind": {k: round(100 * sum(v) / len(v), 2) for k, v in sorted(by_kind.items())},
        "_per_question": per_q,
    }


def gold_view(s: Settings, name: str) -> dict[str, Any] | None:
    """Teacher-forced on the test split's verified DRP trajectories (``training/gold_view_probe``): does the row's
    model read the gold crop or clip, and does it write the gold first box? Separates the reading half of a crop
    question from the grounding half, in the model's own format. Cached per row and test seed; None for the no-tool
    row (it never learned the protocol) or without curated test shards."""
    from videor4.contracts.atomic import write_json_atomic
    from videor4.training.gold_view_probe import probe_gold_trajectories

    if name == "no_tools" or not (s.test_shards / "manifest.json").is_file():
        return None
    cache = s.out / "evals" / f"test-seed{s.test_seed}" / f"{name}.gold_view.json"
    if cache.is_file():
        cached = json.loads(cache.read_text())
        if "phrase_n" in cached:  # a probe from before the phrase column is run again
            return cached
    model, _ = eval_targets(s)[name]
    result = probe_gold_trajectories(model, s.test_shards, s.test_root)
    write_json_atomic(cache, result)  # a killed report never leaves half a cache behind
    return result


def paired(a: dict[int, float], b: dict[int, float]) -> dict[str, float]:
    """Mean of (a − b) over the questions both answered, in points, with its standard error."""
    common = sorted(set(a) & set(b))
    diffs = [100 * (a[q] - b[q]) for q in common]
    n = len(diffs)
    mean = sum(diffs) / max(n, 1)
    var = sum((d - mean) ** 2 for d in diffs) / max(n - 1, 1)
    return {"diff": round(mean, 2), "se": round(math.sqrt(var / max(n, 1)), 2), "n": n}


# --- report -------------------------------------------------------------------------------------------------------
def report(s: Settings) -> dict[str, Any]:
    scored = {name: score_eval(s, name) for name in (*ROWS, *(f"calls{k}" for k in SCALING_CALLS if k != 3))}
    scored["calls3"] = scored["full"]
    rows = {name: {k: v for k, v in scored[name].items() if not k.startswith("_")} for name in ROWS}
    for name in ROWS:
        rows[name]["gold_view"] = gold_view(s, name)
    pq = {name: scored[name]["_per_question"] for name in scored}
    margins = {
        "rld_vs_drp_sft": paired(pq["rld"], pq["drp_sft"]),
        "full_vs_crp_sft": paired(pq["full"], pq["crp_sft"]),
        "full_vs_no_tools": paired(pq["full"], pq["no_tools"]),
        "full_vs_no_rcur": paired(pq["full"], pq["no_rcur"]),
        "full_vs_drp_crp_rlc": paired(pq["full"], pq["drp_crp_rlc"]),
        "full_vs_crp_sft_only": paired(pq["full"], pq["crp_sft_only"]),
        "calls1_vs_calls0": paired(pq["calls1"], pq["calls0"]),
        "calls2_vs_calls1": paired(pq["calls2"], pq["calls1"]),
    }
    timing = json.loads((s.out / "timing.json").read_text()) if (s.out / "timing.json").is_file() else {}
    seconds: dict[str, float] = {}
    cpu: dict[str, float] = {}
    for job in timing.values():
        if job["part"] == "_total":
            continue
        seconds[job["part"]] = round(seconds.get(job["part"], 0.0) + job["seconds"], 1)
        cpu[job["part"]] = round(cpu.get(job["part"], 0.0) + job["cpu_seconds"], 1)
    result = {
        "rows": rows,
        "scaling": {str(k): scored[f"calls{k}"]["acc"] for k in SCALING_CALLS},
        "seconds": seconds,
        "cpu_seconds": cpu,
        "wall_seconds": _wall(s),
        "margins": margins,
        "scaling_detail": {str(k): {kk: v for kk, v in scored[f"calls{k}"].items() if not kk.startswith("_")}
                           for k in SCALING_CALLS},
        "settings": {"seed": s.seed, "test_seed": s.test_seed, "train_questions": s.train,
                     "test_questions": s.test, "pretrain_scenes": s.pretrain_scenes,
                     "text_steps": s.text_steps, "vision_steps": s.vision_steps, "language_steps": s.language_steps,
                     "pretrain_margins": [list(m) for m in s.pretrain_margins],
                     "recipe": s.recipe, "overrides": s.overrides, "jobs": s.jobs},
        "curation": _curation_stats(s),
    }
    suffix = "" if s.test_seed == s.seed else f"-test{s.test_seed}"
    (s.out / f"results{suffix}.json").write_text(json.dumps(result, indent=2))
    table = format_table(result)
    (s.out / f"table{suffix}.md").write_text(table + "\n")
    print(table)
    try:
        plot_curves(s, s.out / "curves.png")
    except ImportError as exc:  # matplotlib is the optional `bench` extra
        print(f"[bench-learning] no plot ({exc}); pip install 'video-r4[bench]'")
    return result


def _wall(s: Settings) -> float | None:
    timing = json.loads((s.out / "timing.json").read_text()) if (s.out / "timing.json").is_file() else {}
    return timing.get("_total", {}).get("seconds") if isinstance(timing.get("_total"), dict) else None


def _curation_stats(s: Settings) -> dict[str, Any]:
    path = s.out / "curated" / "stats.json"
    if not path.is_file():
        return {}
    st = json.loads(path.read_text())
    return {k: st.get(k) for k in ("questions", "trajectories", "trajectories_verified", "verification_rate",
                                    "shard_counts")}


def format_table(result: dict[str, Any]) -> str:
    lines = ["| row | Acc | ANLS | well-formed % | calls / question | crop share | crops on the answer | "
             "restates the question | reads the gold view | gold first box | box follows the phrase | "
             "crop / clip / clip+crop Acc | n |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|"]
    for name in ROWS:
        r = result["rows"][name]
        kinds = " / ".join(f"{r['by_kind'].get(k, 0):.1f}" for k in ("crop", "clip", "clip+crop"))
        share = "–" if r["crop_share"] is None else f"{r['crop_share']:.2f}"
        on = "–" if r.get("crops_on_target") is None else f"{r['crops_on_target']:.2f}"
        g = r.get("gold_view")
        reads = "–" if not g else f"{g['reads']}/{g['read_n']}"
        restates = "–" if not g or not g.get("restate_n") else f"{g['restates']}/{g['restate_n']}"
        box = "–" if not g or not g["box_n"] else f"{g['box_iou50']}/{g['box_n']}"
        phrase = "–" if not g or not g.get("phrase_n") else f"{g['phrase_follows']}/{g['phrase_n']}"
        lines.append(f"| {ROW_TITLES[name]} (`{name}`) | {r['acc']:.1f} | {r['anls']:.1f} | {r['well_formed']:.1f} | "
                     f"{r['calls']:.2f} | {share} | {on} | {restates} | {reads} | {box} | {phrase} | {kinds} | "
                     f"{r['n']} |")
    lines += ["", "| calls allowed | " + " | ".join(str(k) for k in SCALING_CALLS) + " |",
              "|---|" + "---:|" * len(SCALING_CALLS),
              "| Acc of the full model | " + " | ".join(f"{result['scaling'][str(k)]:.1f}" for k in SCALING_CALLS)
              + " |", ""]
    lines.append("| margin (paired, same questions) | Δ Acc (points) | s.e. |")
    lines.append("|---|---:|---:|")
    for k, m in result["margins"].items():
        lines.append(f"| {k} | {m['diff']:+.1f} | {m['se']:.1f} |")
    lines += ["", "| part | wall s | CPU s |", "|---|---:|---:|"]
    for part in sorted(result["seconds"]):
        lines.append(f"| {part} | {result['seconds'][part]:.0f} | {result['cpu_seconds'].get(part, 0):.0f} |")
    if result.get("wall_seconds"):
        lines.append(f"| **whole benchmark (wall)** | {result['wall_seconds']:.0f} | |")
    return "\n".join(lines)


def plot_curves(s: Settings, path: Path) -> None:
    """Loss of the SFT stages; reward, accuracy, KL and calls per rollout of the RL stages (metrics.jsonl)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from videor4.training.stage_trainer import read_metrics

    runs = s.out / "runs"
    panels = [("loss", "SFT loss (assistant tokens)", "sft"), ("reward", "RL mean reward", "grpo"),
              ("accuracy", "RL rollout accuracy", "grpo"), ("kl", "RL KL to the stage start", "grpo"),
              ("calls_per_rollout", "RL tool calls per rollout", "grpo")]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.4))
    for run in sorted(p for p in runs.iterdir() if p.is_dir()) if runs.is_dir() else []:
        for stage in sorted(p for p in run.iterdir() if (p / "metrics.jsonl").is_file()):
            kind = json.loads((stage / "stage_done.json").read_text()).get("kind") if (
                stage / "stage_done.json").is_file() else None
            metrics = read_metrics(stage)
            for ax, (key, title, want) in zip(axes, panels):
                if kind and kind != want:
                    continue
                pts = [(m["step"], m[key]) for m in metrics if key in m]
                if pts:
                    ax.plot(*zip(*pts), label=f"{run.name}/{stage.name[3:]}", linewidth=1)
                ax.set_title(title, fontsize=9)
                ax.set_xlabel("step", fontsize=8)
    for ax in axes:
        if ax.lines:
            ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# --- main ---------------------------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None = None) -> Settings:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=REPO / "out" / "bench-learning",
                   help="working folder: data, models, runs, evals, results.json (a rerun resumes)")
    p.add_argument("--seed", type=int, default=int(os.environ.get("SEED", 0)), help="training data and model seed")
    p.add_argument("--test-seed", type=int, default=None, help="test split seed (default TEST_SEED or --seed)")
    p.add_argument("--train", type=int, default=1500, help="training questions")
    p.add_argument("--test", type=int, default=500, help="test questions")
    p.add_argument("--pretrain-scenes", type=int, default=300, help="scenes of the base model's pretraining images")
    p.add_argument("--text-steps", type=int, default=0,
                   help="micro-model text pretraining steps (copying; the SFT stages then replay copy sequences too)")
    p.add_argument("--vision-steps", type=int, default=800, help="micro-model vision pretraining steps")
    p.add_argument("--language-steps", type=int, default=1200, help="micro-model language alignment steps")
    p.add_argument("--pretrain-margins", nargs="*", default=["0.6:1.0", "0.4:1.3"], metavar="LOW:HIGH",
                   help="the base's pretraining curriculum after the centred set: one set per range, crops with "
                   "LOW..HIGH text heights of margin per side (default 0.6:1.0 0.4:1.3; none: the single-set base)")
    p.add_argument("--jobs", type=int, default=2, help="processes at a time (one torch thread each)")
    p.add_argument("--eval-batch", type=int, default=64, help="questions rolled out together in an evaluation")
    p.add_argument("--recipe", default="micro-cpu", help="the curriculum recipe the rows are cut from")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="recipe override, e.g. stages.1.grpo.max_steps=4 (YAML value)")
    p.add_argument("--report-only", action="store_true", help="score existing evaluations only")
    a = p.parse_args(argv)
    test_seed = a.test_seed if a.test_seed is not None else int(os.environ.get("TEST_SEED", a.seed))
    overrides = {k: yaml.safe_load(v) for k, v in (item.split("=", 1) for item in a.set)}
    from pydantic import ValidationError

    from videor4.curation.micro_data import MicroSpec

    margins = []
    for item in a.pretrain_margins:
        try:
            lo, hi = (float(x) for x in item.split(":"))
        except ValueError:
            p.error(f"--pretrain-margins: {item!r} is not LOW:HIGH (e.g. 0.6:1.0)")
        try:  # the bounds micro-data itself enforces, checked before hours of jobs start
            MicroSpec(pretrain_crop_margin=(lo, hi))
        except ValidationError as e:
            p.error(f"--pretrain-margins: {item!r}: {e.errors()[0]['msg']}")
        margins.append((lo, hi))
    return Settings(out=a.out, seed=a.seed, test_seed=test_seed, train=a.train, test=a.test,
                    pretrain_scenes=a.pretrain_scenes, text_steps=a.text_steps, vision_steps=a.vision_steps,
                    language_steps=a.language_steps, pretrain_margins=tuple(margins), jobs=a.jobs,
                    eval_batch=a.eval_batch, recipe=a.recipe, overrides=overrides)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    s = parse_args(argv)
    s.out.mkdir(parents=True, exist_ok=True)
    if "--report-only" not in argv:
        started = time.time()
        runner = Runner(s)
        runner.run(build_jobs(s))
        # The whole benchmark's wall time: this invocation's, added to earlier ones when a run was resumed.
        before = runner.timing.get("_total", {}).get("seconds", 0.0)
        ran = any(v.get("finished") and k != "_total" for k, v in runner.timing.items())
        if ran:
            runner.timing["_total"] = {"part": "_total", "seconds": round(before + time.time() - started, 1),
                                       "cpu_seconds": 0.0}
            runner.timing_path.write_text(json.dumps(runner.timing, indent=2))
    report(s)
    return 0


if __name__ == "__main__":
    sys.exit(main())
