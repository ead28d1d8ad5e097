#!/usr/bin/env bash
# One-GPU check of the verl plug-in (training/verl_plugin), ≤ 10 minutes: a few RLd steps of verl 0.9.1's
# trainer (vLLM rollouts, FSDP actor, GRPO) with the Video-R4 tools, agent loop and reward manager, on a
# random-init small Qwen2.5-VL written locally (no download) and RL shards over the bundled sample videos.
#
#   PYTHON=/path/to/python bash scripts/gpu_check_verl.sh      # run from the repository root
#
# PYTHON must have verl 0.9.1 *with a rollout engine* and this toolkit installed without its deps, e.g. on a
# networked GPU machine:  python -m venv .venv-verl-gpu && .venv-verl-gpu/bin/pip install 'verl[vllm]==0.9.1' \
#   qwen-vl-utils opencv-python-headless==4.12.0.88 av decord && .venv-verl-gpu/bin/pip install --no-deps -e .
# (verl[vllm] brings torch 2.11, vllm 0.24, transformers 5.9.0.) The CPU environment .venv-verl has no vLLM.
# DRY_RUN=1 stops after composing verl's config (runs anywhere verl is installed, no GPU).
# Outputs: $OUT/check.log, the verl run under $OUT/run, and $OUT/run/final (finalize of the last checkpoint).
set -euo pipefail
PYTHON=${PYTHON:-.venv-verl/bin/python}
OUT=${OUT:-out/gpu-check-verl}
STEPS=${STEPS:-3}
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONUNBUFFERED=1
mkdir -p "$OUT"
exec > >(tee "$OUT/check.log") 2>&1
start=$(date +%s)

if [ "${DRY_RUN:-0}" != 1 ]; then
  nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || { echo "FAIL: no NVIDIA GPU visible"; exit 1; }
  "$PYTHON" -c "import vllm, verl; print('vllm', vllm.__version__)" \
    || { echo "FAIL: $PYTHON lacks vllm (verl's rollout engine); see the header of this script"; exit 1; }
fi

echo "== 1/4 small random-init Qwen2.5-VL (local tokenizer, head dims vLLM supports) and RL shards"
"$PYTHON" - "$OUT" <<'EOF'
import json, sys
from pathlib import Path

import torch
from transformers import GenerationConfig, Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

from videor4.contracts.executor import OpsConfig
from videor4.contracts.shard_io import write_manifest, write_stage
from videor4.contracts.shard_schema import QC, Provenance, RLRow, VideoRef, make_sample_id
from videor4.contracts.view import PromptConfig, ShardView
from videor4.training.tiny_model import build_tiny_model

out = Path(sys.argv[1])
model_dir = build_tiny_model(out / "small-model", seed=0)  # tokenizer + processor + config, written offline
config = Qwen2_5_VLConfig.from_pretrained(model_dir)
config.text_config.update(dict(hidden_size=256, intermediate_size=512, num_attention_heads=2,
                               num_key_value_heads=2, max_position_embeddings=16384))
config.text_config.rope_parameters["mrope_section"] = [16, 24, 24]  # head_dim 128
config.vision_config.update(dict(hidden_size=128, intermediate_size=256, num_heads=2, out_hidden_size=256))
torch.manual_seed(0)
model = Qwen2_5_VLForConditionalGeneration(config).to(torch.bfloat16)
model.generation_config = GenerationConfig.from_pretrained(model_dir)
model.save_pretrained(model_dir)
print("model", model_dir, sum(p.numel() for p in model.parameters()), "params")

root = Path("curation/sample_data").resolve()
view = ShardView(prompt=PromptConfig(num_frames=4, frame_max_pixels=64 * 28 * 28, crop_max_pixels=64 * 28 * 28),
                 ops=OpsConfig(clip_frames=4, max_calls=3, max_images=16))
records = json.loads((root / "Annotations" / "ViteVQA_0.0.2_sample.json").read_text())["data"]
rows = [RLRow(sample_id=make_sample_id(r["video_id"], r["question_id"], "rld"), stage="rld",
              question_id=r["question_id"], video_id=r["video_id"], question=r["question"], answers=r["answers"],
              source1=r["source1"], source2=r["source2"],
              video=VideoRef(path=f"videos/{r['video_id']}.mp4", kind="video", fps=10.0, num_frames=30),
              initial_frames=view.initial_frames(30), evidence=[], qc=QC(status="auto_pass"),
              provenance=Provenance(toolkit_version="gpu-check", split="sample", source_file="sample.json",
                                    decoder="opencv", ocr_backend="none", detector_backend="none", config_hash="0"),
              difficulty=0.5, answer_in_initial=False, required_ops=["crop"]) for r in records]
write_stage(out / "shards", "rld", rows)
write_manifest(out / "shards", {"view": view.model_dump(mode="json"), "data_root": str(root)})
print("rld rows", len(rows))
EOF

echo "== 2/4 export for verl"
"$PYTHON" -m videor4.pipelines.cli shards export "$OUT/shards" --format verl --out "$OUT/verl-data" --stages rld

echo "== 3/4 verl RLd: $STEPS steps on 1 GPU"
ARGS=(
  --config-path "$PWD/training/verl_plugin/configs" --config-name rld-qwen2.5-vl-7b
  actor_rollout_ref.model.path="$OUT/small-model" data.train_files="$OUT/verl-data/rld.parquet"
  trainer.default_local_dir="$OUT/run/checkpoints" trainer.n_gpus_per_node=1 trainer.nnodes=1
  trainer.total_training_steps="$STEPS" trainer.save_freq="$STEPS" trainer.logger='[console]'
  data.train_batch_size=4 actor_rollout_ref.actor.ppo_mini_batch_size=4 actor_rollout_ref.rollout.n=4
  data.max_prompt_length=2048 data.max_response_length=2048 data.dataloader_num_workers=0
  actor_rollout_ref.rollout.gpu_memory_utilization=0.3 actor_rollout_ref.rollout.limit_images=16
  actor_rollout_ref.rollout.agent.num_workers=1 actor_rollout_ref.actor.use_torch_compile=false
  reward.reward_kwargs.videor4.encoder.dtype=float32
)
if [ "${DRY_RUN:-0}" = 1 ]; then
  "$PYTHON" -m verl.trainer.main_ppo "${ARGS[@]}" --cfg job > "$OUT/verl-config.yaml"
  echo "DRY_RUN: composed verl config in $OUT/verl-config.yaml ($(wc -l < "$OUT/verl-config.yaml") lines)"
  exit 0
fi
timeout "${VERL_TIMEOUT:-420}" "$PYTHON" -m verl.trainer.main_ppo "${ARGS[@]}"

echo "== 4/4 finalize: the last checkpoint becomes final/ (the next SFT stage's start)"
"$PYTHON" -m videor4.training.verl_plugin.stages finalize --checkpoints "$OUT/run/checkpoints" \
  --out "$OUT/run/final" --view "$OUT/verl-data/view.json" --stage rld --init "$OUT/small-model"
"$PYTHON" -c "from transformers import AutoModelForImageTextToText as M; M.from_pretrained('$OUT/run/final')" \
  && echo "final/ loads"
grep -E "reward|score" "$OUT/check.log" | tail -5 || true
echo "PASS in $(( $(date +%s) - start )) s"
