"""Image features for the diversity and representativeness rewards: a frozen vision tower (pluggable encoder).

R_div and R_rep compare images in a feature space. If that space were the policy's own vision tower, the reward
would move as the policy learns (the same crops would score differently from step to step) — so the default
encoder is the vision tower of the stage's *starting* checkpoint (the reference policy), loaded alone (no
language model), frozen and replicated: no collectives, so it needs no lockstep under ZeRO-3 or FSDP. Patch
tokens after the 2×2 merger are mean-pooled per image and L2-normalized: normalization bounds ``‖v − u‖₂`` by 2,
so ``R_rep = exp(−mean min-distance)`` stays in a useful range (raw pooled features have arbitrary scale, which
would push ``exp(−d)`` to 0). Any object with an ``encode(images) -> (n, d) array`` method can replace it (a
CLIP/SigLIP wrapper, a cached lookup, …); ``feature_encoder:`` in a GRPO stage names another checkpoint.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from videor4.contracts.errors import UserError

# Where Qwen2.5-VL checkpoints keep the vision tower: transformers 5 layout first, then the released one.
_VISION_PREFIXES = ("model.visual.", "visual.")


class FeatureEncoder(Protocol):
    """Maps RGB uint8 images (H, W, 3) to one feature vector each."""

    def encode(self, images: Sequence[np.ndarray]) -> np.ndarray: ...


class VisionTowerEncoder:
    """Mean-pooled, L2-normalized features of a Qwen2.5-VL vision tower (no gradients).

    ``visual`` is the tower module (``model.model.visual`` of a loaded model, or :func:`load_vision_tower`).
    ``batch_size`` bounds how many images go through the tower at once (their patch sequences are concatenated,
    so memory grows with the total pixel count).
    """

    def __init__(self, visual: Any, processor: Any, batch_size: int = 16, normalize: bool = True):
        self.visual, self.processor, self.batch_size, self.normalize = visual, processor, batch_size, normalize

    def encode(self, images: Sequence[np.ndarray]) -> np.ndarray:
        import torch

        if not images:
            return np.zeros((0, 0), dtype=np.float32)
        pooled = []
        param = next(self.visual.parameters())
        merge = self.visual.spatial_merge_size ** 2
        for start in range(0, len(images), self.batch_size):
            chunk = list(images[start : start + self.batch_size])
            inputs = self.processor.image_processor(images=chunk, return_tensors="pt")
            grid = inputs["image_grid_thw"].to(param.device)
            with torch.no_grad():
                out = self.visual(inputs["pixel_values"].to(param.device, param.dtype), grid_thw=grid)
            tokens = out.pooler_output if hasattr(out, "pooler_output") else out
            pooled += [t.float().mean(dim=0) for t in torch.split(tokens, (grid.prod(-1) // merge).tolist())]
        features = torch.stack(pooled)
        if self.normalize:
            features = torch.nn.functional.normalize(features, dim=-1)
        return features.cpu().numpy()


def load_vision_tower(model_dir: str | Path, device: Any = "cpu", dtype: Any = None) -> Any:
    """The vision tower of a saved Qwen2.5-VL checkpoint, alone (its safetensors' vision weights only), frozen."""
    import torch
    from safetensors import safe_open
    from transformers import AutoConfig
    from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import Qwen2_5_VisionTransformerPretrainedModel

    path = Path(model_dir)
    if not (path / "config.json").is_file():
        raise UserError(f"feature encoder {path}: no config.json (expected a Qwen2.5-VL checkpoint directory)")
    config = AutoConfig.from_pretrained(path)
    index = path / "model.safetensors.index.json"
    files = sorted(set(json.loads(index.read_text())["weight_map"].values())) if index.is_file() else \
        ["model.safetensors"]
    state: dict[str, Any] = {}
    for name in files:
        with safe_open(str(path / name), framework="pt") as f:
            for key in f.keys():
                prefix = next((p for p in _VISION_PREFIXES if key.startswith(p)), None)
                if prefix is not None:
                    state[key[len(prefix):]] = f.get_tensor(key)
    if not state:
        raise UserError(f"feature encoder {path}: no vision-tower weights (model.visual.*) in its safetensors")
    visual = Qwen2_5_VisionTransformerPretrainedModel(config.vision_config)
    visual.load_state_dict(state, strict=True)
    return visual.to(device=device, dtype=dtype or torch.float32).eval().requires_grad_(False)
