"""Suite-wide fixtures: offline, isolated Prefect, and the M4-ViteVQA root when available."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# Nothing in the suite may reach a model hub (DESIGN: offline machine); fail fast if something tries.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("YOLO_OFFLINE", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")


def m4_root() -> Path | None:
    value = os.environ.get("VIDEOR4_M4_ROOT")
    return Path(value).resolve() if value else None


@pytest.fixture(scope="session")
def m4_annotations() -> Path:
    """The real M4-ViteVQA validation annotations (licence forbids bundling them)."""
    root = m4_root()
    if root is None:
        pytest.skip("VIDEOR4_M4_ROOT is not set: the M4-ViteVQA files cannot be bundled (licence); CI sets it")
    if not (root / "Annotations").is_dir():
        pytest.fail(f"VIDEOR4_M4_ROOT={root} has no Annotations/ folder")
    return root


@pytest.fixture(scope="session")
def prefect_home(tmp_path_factory: pytest.TempPathFactory):
    """An ephemeral Prefect (temporary local server) with its own home, once per test session."""
    home = tmp_path_factory.mktemp("prefect-home")
    os.environ["PREFECT_HOME"] = str(home)
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield home


class SampleRun:
    """One curation run of the bundled sample, shared by every test that needs curated data or shards."""

    def __init__(self, out: Path, cfg, summary) -> None:
        self.out, self.cfg, self.summary = out, cfg, summary
        self.shards = out / "shards"


# Every 4th frame (2.5 fps of the 10 fps sample): the same code path as a full run at a quarter of the OCR cost.
SAMPLE_TEST_OVERRIDES = {"sampling.mode": "fps", "sampling.fps": 2.5}


@pytest.fixture(scope="session")
def sample_run(tmp_path_factory: pytest.TempPathFactory, prefect_home: Path) -> SampleRun:
    """Curate the bundled sample once (real decode, OCR, detection, synthesis, shards) for the whole session."""
    from videor4.curation.config import load_config
    from videor4.curation.sample import SAMPLE_SPLIT, sample_root
    from videor4.pipelines.curate_flow import run_curate

    out = tmp_path_factory.mktemp("sample-run")
    cfg = load_config(None, SAMPLE_TEST_OVERRIDES)
    summary = run_curate(sample_root(), SAMPLE_SPLIT, out, cfg, workers=2, progress=False)
    return SampleRun(out, cfg, summary)


@pytest.fixture(scope="session")
def tiny_video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real 3 s, 10 fps, 224x128 mp4 whose frames show their index (decoded through contracts.media)."""
    from tests.training.toy_data import write_tiny_video

    return write_tiny_video(tmp_path_factory.mktemp("video") / "00001.mp4")
