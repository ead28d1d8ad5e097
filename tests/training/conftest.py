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


@pytest.fixture
def parity_reward():
    """A toy reward the random tiny model can learn in a few CPU steps: the fraction of even token ids."""
    import numpy as np

    from videor4.training.rewards import REWARDS, RewardSpec, register_reward

    @register_reward("test_even_ids")
    def even_ids(completions, completion_ids, **_):
        return [float(np.mean([t % 2 == 0 for t in ids])) if ids else 0.0 for ids in completion_ids]

    yield [RewardSpec(name="test_even_ids")]
    REWARDS.pop("test_even_ids")
