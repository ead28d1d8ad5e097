"""One-GPU check of the bundled trainer (≤ 10 minutes): what the CPU tests cannot show.

1. ``tiny``: the four-stage curriculum (toy shards, tiny Qwen2.5-VL) on CUDA in bf16, every stage trained and
   exported; then the GRPO stages once more with the HF engine's sampler log-probs and the IS correction on.
2. ``big``: one optimizer step of each stage (DRP-SFT, RLd, CRP-SFT, RLc) for a random-init model with
   Qwen2.5-VL-3B's shapes (config written locally, nothing downloaded), under the process's launcher — run it
   under ``accelerate launch --config_file training/accelerate_configs/deepspeed_zero2.yaml`` — with the vLLM
   engine when vLLM is installed (else HF generate, said so), printing each stage's peak GPU memory and step time.

``scripts/gpu_check.sh`` runs both and writes ``$OUT/gpu_check.json``. ``--dry-run`` runs the same code on the
CPU with tiny shapes and fp32 (a test keeps it from rotting; it proves nothing about GPUs).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # tests/training/toy_data.py builds the shards

# Qwen2.5-VL-3B-Instruct's shapes (its config.json), with this toolkit's local tokenizer's vocabulary padded up.
QWEN25_VL_3B = {
    "text": dict(hidden_size=2048, intermediate_size=11008, num_hidden_layers=36, num_attention_heads=16,
                 num_key_value_heads=2, vocab_size=151936, max_position_embeddings=32768, tie_word_embeddings=True),
    "vision": dict(depth=32, hidden_size=1280, intermediate_size=3420, num_heads=16, out_hidden_size=2048,
                   fullatt_block_indexes=[7, 15, 23, 31]),
}


def _recipe(path: Path, *, model: str | None, precision: str, engine: str, steps: dict[str, int],
            is_correction: bool | None = None) -> Path:
    from tests.training.toy_data import toy_recipe

    sft = {"max_steps": steps["sft"], "learning_rate": 1e-4, "per_device_batch_size": 2, "save_steps": 100,
           "report_to": [], "gradient_checkpointing": model is not None}
    grpo = {"max_steps": steps["grpo"], "learning_rate": 1e-5, "num_generations": 4, "micro_batch_size": 2,
            "save_steps": 100, "report_to": [], "engine": engine, "beta": 0.04, "is_correction": is_correction,
            "gradient_checkpointing": model is not None, "vllm_gpu_memory_utilization": 0.25,
            "rollout": {"max_new_tokens": 48, "max_turn_tokens": 32}}
    return toy_recipe(path, sft=sft, grpo=grpo, name=path.stem, model=model, build_tiny_model=model is None,
                      mixed_precision=precision)


def _stage_report(run: Path) -> dict[str, dict]:
    from videor4.training.stage_trainer import read_metrics

    out = {}
    for stage_dir in sorted(p for p in run.glob("[0-9][0-9]-*") if p.is_dir()):
        log = read_metrics(stage_dir)
        out[stage_dir.name] = {
            "steps": len(log), "exported": (stage_dir / "final" / "config.json").is_file(),
            "step_seconds": [round(m["step_seconds"], 3) for m in log],
            "gpu_peak_gib": max((m.get("gpu_peak_gib", 0.0) for m in log), default=0.0),
            "loss": [round(m["loss"], 5) for m in log],
            "is_weight_mean": [round(m["is_weight_mean"], 5) for m in log if "is_weight_mean" in m],
        }
    return out


def _train(recipe: Path, shards: Path, data_root: Path, output: Path) -> float:
    from videor4.training.curriculum import load_recipe, run_curriculum

    started = time.perf_counter()
    run_curriculum(load_recipe(recipe, shards_dir=str(shards), data_root=str(data_root)), output)
    return time.perf_counter() - started


def tiny(out: Path, dry_run: bool) -> dict:
    from tests.training.toy_data import toy_dataset, write_tiny_video

    data_root, shards = toy_dataset(out / "data", write_tiny_video(out / "video" / "00001.mp4"))
    precision = "no" if dry_run else "bf16"
    report = {}
    for name, is_corr in (("tiny", None), ("tiny-is", True)):
        recipe = _recipe(out / f"{name}.yaml", model=None, precision=precision, engine="hf",
                         steps={"sft": 3, "grpo": 2}, is_correction=is_corr)
        seconds = _train(recipe, shards, data_root, out / name)
        report[name] = {"seconds": round(seconds, 1), "stages": _stage_report(out / name)}
    return report


def big(out: Path, dry_run: bool) -> dict:
    """One step per stage for a 3B-shaped random model (tiny shapes on a dry run)."""
    import torch
    from accelerate import PartialState
    from transformers import GenerationConfig, Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    from tests.training.toy_data import toy_dataset, write_tiny_video
    from videor4.training.tiny_model import build_tiny_model

    state = PartialState()
    model_dir = out / "model-3b-shapes"
    data_root, shards = toy_dataset(out / "data", write_tiny_video(out / "video" / "00001.mp4"))
    if state.is_main_process and not (model_dir / "model.safetensors.index.json").is_file() and not (
            model_dir / "model.safetensors").is_file():
        build_tiny_model(model_dir, seed=0)  # tokenizer, processor, chat template: written offline
        if not dry_run:
            config = Qwen2_5_VLConfig.from_pretrained(model_dir)
            config.text_config.update(QWEN25_VL_3B["text"])
            config.vision_config.update(QWEN25_VL_3B["vision"])
            torch.manual_seed(0)
            with torch.device("cuda"):
                model = Qwen2_5_VLForConditionalGeneration(config).to(torch.bfloat16)
            model.generation_config = GenerationConfig.from_pretrained(model_dir)
            model.save_pretrained(model_dir)
            del model
            torch.cuda.empty_cache()
    state.wait_for_everyone()
    try:
        import vllm  # noqa: F401

        engine = "hf" if dry_run else "vllm"
    except ImportError:
        engine = "hf"
    recipe = _recipe(out / "big.yaml", model=str(model_dir), precision="no" if dry_run else "bf16", engine=engine,
                     steps={"sft": 1, "grpo": 1})
    seconds = _train(recipe, shards, data_root, out / "big")
    return {"engine": engine, "engine_note": "" if engine == "vllm" or dry_run else "vllm not installed: HF generate",
            "zero_stage": os.environ.get("ACCELERATE_DEEPSPEED_ZERO_STAGE", "none"), "params": _params(model_dir),
            "seconds": round(seconds, 1), "stages": _stage_report(out / "big")}


def _params(model_dir: Path) -> int:
    """Parameter count from the checkpoint's safetensors headers (no weights loaded)."""
    from math import prod

    from safetensors import safe_open

    total = 0
    for path in model_dir.glob("*.safetensors"):
        with safe_open(str(path), framework="pt") as f:
            total += sum(prod(f.get_slice(key).get_shape()) for key in f.keys())
    return total


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("part", choices=["tiny", "big"])
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "out/gpu-check")))
    parser.add_argument("--dry-run", action="store_true", help="CPU, tiny shapes, fp32 (checks the script only)")
    args = parser.parse_args()
    os.environ.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    if not args.dry_run:
        import torch

        if not torch.cuda.is_available():
            print("FAIL: no CUDA device", file=sys.stderr)
            return 1
    out = args.out / args.part
    out.mkdir(parents=True, exist_ok=True)
    report = (tiny if args.part == "tiny" else big)(out, args.dry_run)
    from accelerate import PartialState

    if PartialState().is_main_process:
        (args.out / f"{args.part}.json").write_text(json.dumps(report, indent=2))
        print(json.dumps({args.part: report}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
