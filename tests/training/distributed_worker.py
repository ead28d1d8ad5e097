"""One training run per process group, for the multi-process tests (``torchrun --nproc-per-node N`` on CPU, gloo).

``python -m torch.distributed.run --nproc-per-node N tests/training/distributed_worker.py MODE OUT MODEL VIDEO
[--deepspeed CONFIG]``. Every rank builds the same toy shards (tests/training/toy_data.py), trains a few steps
of SFT or GRPO with settings that make the global batch the same whatever N is, and rank 0 writes the final
weights and the logged metrics to OUT, which the test compares across world sizes.

GRPO uses a scripted policy (``ScriptedEngine``: the same turns for conversation ``k`` of a group whatever the
rank) and the accuracy reward, with answers chosen so that in every step prompt 0's group gets all-equal rewards
(filtered: nothing to train on) and prompt 1's does not: with two ranks, rank 0 has no rollout to train and must
still join every collective of rank 1's passes.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))  # `tests` is not an installed package


def main(mode: str, out: Path, model_dir: Path, video: Path, sft_length: int = 0) -> None:
    import torch
    from safetensors.torch import save_file

    from tests.training.toy_data import OPS, PROMPT, toy_dataset
    from videor4.contracts.shard_io import read_stage
    from videor4.training.grpo_config import GRPOConfig
    from videor4.training.grpo_trainer import GRPOTrainer
    from videor4.training.rewards import RewardSpec
    from videor4.training.rollout import ScriptedEngine
    from videor4.training.sft_config import SFTConfig
    from videor4.training.sft_trainer import SFTTrainer
    from videor4.training.stage_trainer import load_policy, make_accelerator, read_metrics

    acc = make_accelerator("no")
    world = acc.num_processes
    root = out / f"rank{acc.process_index}"
    data_root, shards = toy_dataset(root, video)
    model, processor = load_policy(model_dir)
    if mode == "sft":
        # Global batch per step: 2 conversations, as 2 ranks × 1 pass or 1 rank × 2 accumulated passes.
        extra = {"max_length": sft_length} if sft_length else {}
        config = SFTConfig(max_steps=3, learning_rate=1e-3, lr_scheduler="constant", per_device_batch_size=1,
                           gradient_accumulation_steps=2 // world, bucket_window=4, report_to=[], save_steps=100,
                           **extra)
        trainer = SFTTrainer(model, processor, read_stage(shards, "drp") + read_stage(shards, "crp"), config,
                             root / "stage", data_root=data_root, prompt=PROMPT, ops=OPS, accelerator=acc)
    else:
        rows = read_stage(shards, "rld")
        # Prompts in draw order (the trainer's seeded permutation): steps take (0, 1) then (2, 3); rollout g of
        # every group plays script g, so prompts 0 and 2 get all-equal rewards and prompts 1 and 3 do not.
        truths = [rows[i].answers[0] for i in np.random.default_rng([0, 0]).permutation(len(rows))]
        assert len(set(truths)) == 4
        scripts = [[f"<think>It reads.</think>\n<answer>{a}</answer>"]
                   for a in (truths[1], truths[3], truths[1], "nope")]
        config = GRPOConfig(num_generations=4, prompts_per_step=2 // world, micro_batch_size=2, max_steps=2,
                            learning_rate=1e-3, lr_scheduler="constant", beta=0.04, seed=0, report_to=[],
                            save_steps=100, rewards=[RewardSpec(name="accuracy")], filter_zero_advantage=True,
                            rollout={"max_new_tokens": 64, "max_turn_tokens": 64})
        ref = load_policy(model_dir)[0]
        trainer = GRPOTrainer(model, processor, rows, config, root / "stage", data_root=data_root, prompt=PROMPT,
                              ops=OPS, ref_model=ref, accelerator=acc,
                              engine_factory=lambda m, p: ScriptedEngine(p, scripts))
    final = trainer.train()
    if acc.is_main_process:
        state = {k: v.detach().contiguous() for k, v in acc.unwrap_model(trainer.model).state_dict().items()}
        save_file(state, str(out / "weights.safetensors"))
        (out / "metrics.json").write_text(json.dumps(read_metrics(root / "stage")))
        (out / "done.json").write_text(json.dumps({
            "world": world, "final": str(final), "backend": str(acc.distributed_type).split(".")[-1],
            "zero_stage": trainer.dist.zero_stage, "sharded": trainer.dist.sharded}))
    acc.wait_for_everyone()
    trainer.close()
    torch.distributed.destroy_process_group() if torch.distributed.is_initialized() else None


if __name__ == "__main__":
    mode, out, model_dir, video, *rest = sys.argv[1:]
    main(mode, Path(out), Path(model_dir), Path(video), int(rest[0]) if rest else 0)
