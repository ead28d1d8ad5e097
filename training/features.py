"""Image features for the diversity and representativeness rewards (pluggable encoder).

R_div and R_rep compare images in a feature space. The default encoder is the policy's own vision tower
(Qwen2.5-VL ``get_image_features``: patch tokens after the 2×2 merger), mean-pooled per image and L2-normalized:
no extra model has to be loaded or sharded next to a 7B policy, and the space is the one the policy itself
reads images in. L2 normalization bounds ``‖v − u‖₂`` by 2, so ``R_rep = exp(−mean min-distance)`` stays in a
useful range (raw pooled features have arbitrary scale, which would push ``exp(−d)`` to 0). Any object with an
``encode(images) -> (n, d) array`` method can replace it (a CLIP/SigLIP wrapper, a cached lookup, …).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np


class FeatureEncoder(Protocol):
    """Maps RGB uint8 images (H, W, 3) to one feature vector each."""

    def encode(self, images: Sequence[np.ndarray]) -> np.ndarray: ...


class VisionTowerEncoder:
    """Mean-pooled, L2-normalized vision-tower features of a Qwen2.5-VL model (no gradients).

    ``batch_size`` bounds how many images go through the tower at once (their patch sequences are
    concatenated, so memory grows with the total pixel count).
    """

    def __init__(self, model: Any, processor: Any, batch_size: int = 16, normalize: bool = True):
        self.model, self.processor, self.batch_size, self.normalize = model, processor, batch_size, normalize

    def encode(self, images: Sequence[np.ndarray]) -> np.ndarray:
        import torch

        if not images:
            return np.zeros((0, 0), dtype=np.float32)
        pooled = []
        device = next(self.model.parameters()).device
        for start in range(0, len(images), self.batch_size):
            chunk = list(images[start : start + self.batch_size])
            inputs = self.processor.image_processor(images=chunk, return_tensors="pt")
            with torch.no_grad():
                out = self.model.get_image_features(
                    inputs["pixel_values"].to(device), inputs["image_grid_thw"].to(device)
                )
            pooled += [tokens.float().mean(dim=0) for tokens in out.pooler_output]
        features = torch.stack(pooled)
        if self.normalize:
            features = torch.nn.functional.normalize(features, dim=-1)
        return features.cpu().numpy()
