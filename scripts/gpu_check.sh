#!/usr/bin/env bash
# One-GPU check of the bundled trainer, ≤ 10 minutes (docs/training.md, "What was verified where"):
#   1. the tiny curriculum on CUDA in bf16 (all four stages; then the RL stages with the IS correction on);
#   2. one step of each stage for a random-init model with Qwen2.5-VL-3B's shapes under DeepSpeed ZeRO-2
#      (accelerate launch, the shipped config, one process), with vLLM rollouts when vLLM is installed,
#      printing peak GPU memory and step times. Results: $OUT/tiny.json, $OUT/big.json, $OUT/gpu_check.log.
#
#   bash scripts/gpu_check.sh            # from the repository root, in an environment with the toolkit
#                                        # installed: pip install -e '.[train,deepspeed,vllm]'
# DRY_RUN=1 runs the same steps on the CPU with tiny shapes (checks the script, not the GPU).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-out/gpu-check}
PYTHON=${PYTHON:-python3}
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
mkdir -p "$OUT"
exec > >(tee "$OUT/gpu_check.log") 2>&1
DRY=()
if [ "${DRY_RUN:-0}" = 1 ]; then DRY=(--dry-run); export DS_ACCELERATOR=cpu; else nvidia-smi || true; fi
"$PYTHON" -c "import torch, transformers, accelerate; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), 'transformers', transformers.__version__, 'accelerate', accelerate.__version__)"
"$PYTHON" -c "import deepspeed; print('deepspeed', deepspeed.__version__)" || echo "deepspeed missing: part 2 runs without DeepSpeed"
"$PYTHON" -c "import vllm; print('vllm', vllm.__version__)" || echo "vllm missing: part 2 rolls out with HF generate"

start=$(date +%s)
echo "== 1/2 tiny curriculum"
timeout 300 "$PYTHON" scripts/gpu_check.py tiny --out "$OUT" "${DRY[@]}"
echo "== 2/2 one step per stage, Qwen2.5-VL-3B shapes"
if "$PYTHON" -c "import deepspeed" 2>/dev/null; then
  timeout 420 "$PYTHON" -m accelerate.commands.launch --config_file training/accelerate_configs/deepspeed_zero2.yaml \
    --num_processes 1 ${DRY_RUN:+--mixed_precision no} scripts/gpu_check.py big --out "$OUT" "${DRY[@]}"
else
  timeout 420 "$PYTHON" scripts/gpu_check.py big --out "$OUT" "${DRY[@]}"
fi
echo "== done in $(( $(date +%s) - start )) s"
