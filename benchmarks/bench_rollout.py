"""Rollout throughput of the HF engine with the tiny offline Qwen2.5-VL, on CPU (or whatever device is given).

Prints a Markdown table: generated tokens/s, context tokens/s (prompt + observations + generated, i.e. what the
model processed), and images/s (context images per second). A "scripted" row runs the same loop with a forced
clip -> crop -> answer policy, which measures the executor + rendering + tokenization overhead alone.

    .venv/bin/python benchmarks/bench_rollout.py [--device cpu] [--rollouts 8] [--max-new-tokens 64]

The tiny model's numbers measure the plumbing, not a real model's speed: with a 7B checkpoint, generation
dominates and vLLM is the engine to use.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--rollouts", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    args = parser.parse_args()

    import torch

    from videor4.contracts.tool_protocol import ToolCall, format_tool_call
    from videor4.contracts.view import PromptConfig
    from videor4.curation.sample import sample_root
    from videor4.training.rollout import (
        HFEngine,
        HFEngineConfig,
        RolloutConfig,
        RolloutSample,
        ScriptedEngine,
        run_rollouts,
        video_executor_factory,
    )
    from videor4.training.tiny_model import build_tiny_model

    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    tmp = Path(tempfile.mkdtemp(prefix="bench-rollout-"))
    model_dir = build_tiny_model(tmp / "tiny")
    video = sample_root() / "videos" / "90002.mp4"  # a real clip of the bundled sample (960x540, 35 frames)
    samples = [RolloutSample(str(k), "What is the name of the shop?", video) for k in range(args.rollouts)]
    script = [
        format_tool_call(ToolCall("clip", {"start": 1.0, "end": 3.0})),
        format_tool_call(ToolCall("crop", {"image": 10, "bbox_2d": [0.05, 0.3, 0.8, 0.7]})),
        "<answer>Stationery Box</answer>",
    ]

    rows = []
    for label, frames, batch in (("hf", 8, 1), ("hf", 8, 4), ("hf", 8, 8), ("hf", 16, 8), ("scripted", 8, 8)):
        cfg = RolloutConfig(
            max_new_tokens=args.max_new_tokens,
            max_turn_tokens=args.max_new_tokens,
            prompt=PromptConfig(num_frames=frames),
        )
        cfg.ops.max_images = max(cfg.ops.max_images, frames + cfg.ops.clip_frames)
        if label == "hf":
            engine = HFEngine.from_pretrained(model_dir, HFEngineConfig(device=args.device, batch_size=batch))
        else:
            engine = ScriptedEngine(HFEngine.from_pretrained(model_dir).processor, [script])
        run_rollouts(engine, samples[:batch], video_executor_factory(cfg), cfg)  # warm-up
        start = time.perf_counter()
        rollouts = run_rollouts(engine, samples, video_executor_factory(cfg), cfg)
        seconds = time.perf_counter() - start
        generated = sum(r.generated_tokens for r in rollouts)
        context = sum(len(r.input_ids) for r in rollouts)
        images = sum(len(r.images) for r in rollouts)
        rows.append((label, frames, batch, len(rollouts), seconds, generated / seconds, context / seconds, images / seconds))

    print(f"\ndevice={args.device} torch_threads={torch.get_num_threads()} max_new_tokens={args.max_new_tokens}\n")
    print("| engine | frames | batch | rollouts | s | gen tok/s | context tok/s | images/s |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for label, frames, batch, n, s, gen, ctx, img in rows:
        print(f"| {label} | {frames} | {batch} | {n} | {s:.2f} | {gen:.0f} | {ctx:.0f} | {img:.1f} |")


if __name__ == "__main__":
    main()
