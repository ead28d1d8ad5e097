"""Shared fixtures for the training tests: a tiny Qwen2.5-VL checkpoint directory built offline."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Built once per session and loaded with ``from_pretrained`` like a real checkpoint."""
    from videor4.training.tiny_model import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny-qwen2.5-vl"), seed=0)


@pytest.fixture(scope="session")
def tiny_processor(tiny_model_dir: Path):
    from transformers import AutoProcessor

    return AutoProcessor.from_pretrained(tiny_model_dir)


@pytest.fixture(scope="session")
def tiny_video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real 3 s, 10 fps, 224x128 mp4 whose frames show their index (decoded through contracts.media)."""
    import cv2
    import numpy as np

    path = tmp_path_factory.mktemp("video") / "00001.mp4"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, (224, 128))
    for i in range(30):
        img = np.full((128, 224, 3), (40 + 5 * i, 80, 160), np.uint8)
        cv2.putText(img, f"F{i:02d}", (30, 90), cv2.FONT_HERSHEY_SIMPLEX, 2, (255, 255, 255), 4)
        writer.write(img)
    writer.release()
    return path
