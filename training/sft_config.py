"""Configuration of a supervised (DRP-SFT / CRP-SFT) stage, and the optimisation fields every stage shares.

One pydantic model per trainer drives the recipe YAML, the CLI and Python alike (``SFTConfig(**yaml_block)``);
field descriptions are the documentation (``docs/training.md`` lists them).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class OptimConfig(BaseModel):
    """Optimiser, schedule, precision, checkpointing and logging of one training stage."""

    model_config = ConfigDict(extra="forbid")

    learning_rate: float = Field(1e-6, gt=0, description="peak learning rate (AdamW)")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay")
    adam_betas: tuple[float, float] = Field((0.9, 0.999), description="AdamW betas")
    max_grad_norm: float = Field(1.0, gt=0, description="gradient clipping norm")
    lr_scheduler: Literal["constant", "constant_with_warmup", "linear", "cosine"] = Field(
        "constant_with_warmup", description="learning-rate schedule (transformers.get_scheduler names)"
    )
    warmup_ratio: float = Field(0.0, ge=0, le=1, description="fraction of the stage's steps spent warming up")
    max_steps: int | None = Field(
        None, ge=1, description="optimizer steps of the stage; None = derived from num_epochs and the data size"
    )
    num_epochs: float = Field(1.0, gt=0, description="passes over the stage's data (used when max_steps is None)")
    seed: int = Field(0, description="seed of data order, sampling and initialisation of RNG states")
    gradient_checkpointing: bool = Field(False, description="trade compute for activation memory (large models)")
    freeze_vision: bool = Field(
        False, description="train the language model and the vision-language merger only, not the vision encoder "
        "(LLaMA-Factory's freeze_vision_tower, Qwen2.5-VL fine-tuning's tune_mm_vision: false): keeps the pretrained "
        "encoder's reading when a stage's data is small")
    save_steps: int = Field(50, ge=1, description="write a resumable checkpoint every this many optimizer steps")
    save_total_limit: int = Field(2, ge=1, description="mid-stage checkpoints kept (oldest removed first)")
    logging_steps: int = Field(1, ge=1, description="log metrics every this many optimizer steps")
    report_to: list[Literal["tensorboard", "wandb"]] = Field(
        default_factory=lambda: ["tensorboard"],
        description="metric sinks besides metrics.jsonl; wandb is used only if installed and listed",
    )


class ReplayConfig(BaseModel):
    """Questions of the base model's own pretraining replayed in every SFT step, so that SFT on a few hundred
    trajectories does not wipe out what the base could do (LLaVA-style data mixing). Measured on the micro
    benchmark: after DRP-SFT alone the model reads the gold view of 8 of 86 held-out trajectories, with replay 37
    (docs/learning_benchmark.md)."""

    model_config = ConfigDict(extra="forbid")

    questions: str = Field(
        description="the pretraining question set (pretrain.npz of `videor4 micro-data --pretrain N`, or its "
        "folder); a relative path is read from the data root")
    per_step: int = Field(8, ge=1, description="questions replayed per optimizer step on each device")
    weight: float = Field(1.0, gt=0, description="weight of their loss (a mean over questions, each answer "
                          "weighing the same, as in pretraining) added to the SFT loss")
    held_out: float = Field(0.1, ge=0, lt=1, description="fraction of scenes never replayed: the base's own "
                            "held-out scenes, so its held-out figures stay unseen")
    held_out_seed: int = Field(0, description="the --seed the base was built with (it picks those scenes)")
    copy_per_step: int = Field(0, ge=0, description="random token sequences that repeat (micro_base."
                               "CopySequences) added to every step, for a base built with `micro-model "
                               "--text-steps`: SFT without them erases its copying from the context; 0 = none")


class SFTConfig(OptimConfig):
    """Supervised fine-tuning on CoT shards: loss on assistant tokens only, observations re-executed."""

    learning_rate: float = Field(1e-5, gt=0, description="peak learning rate (AdamW)")
    per_device_batch_size: int = Field(1, ge=1, description="conversations per forward pass on one device")
    gradient_accumulation_steps: int = Field(1, ge=1, description="micro-batches per optimizer step")
    replay: ReplayConfig | None = Field(None, description="replay the base's pretraining questions in every "
                                        "step (see ReplayConfig); None = SFT data only")
    first_turns_per_step: int = Field(
        0, ge=0, description="conversations of the stage cut after their first assistant turn (the first "
        "decision: where to look) added to every step on each device, their loss a token mean of their own; "
        "measured on the micro benchmark, whole-trajectory SFT never learns to write the box its own reasoning "
        "has named, and with 8 a step it does (docs/learning_benchmark.md); 0 = none")
    max_length: int = Field(16384, ge=16, description="conversations longer than this (tokens) are skipped")
    bucket_window: int = Field(
        64, ge=1, description="length bucketing: examples are sorted by length within windows of this many "
        "(shuffled) examples, so a micro-batch holds similar lengths and pads little"
    )
