"""The one configuration system for curation.

Each component owns its pydantic config (``MediaConfig`` in ``media``,
``OCRConfig`` in ``ocr`` …); :class:`CurationConfig` composes them so a run is
described by one object that loads from YAML, takes CLI overrides, and hashes
into cache keys. Hashes are per *stage* so that changing, say, a matching
threshold re-runs matching but never OCR.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from videor4.contracts.bundled import resolve_yaml
from videor4.contracts.errors import UserError, describe_validation_error, user_input
from videor4.contracts.media import MediaConfig
from videor4.contracts.shard_io import ShardConfig
from videor4.curation.detect import DetectorConfig
from videor4.curation.evidence import MatchConfig
from videor4.curation.ocr import OCRConfig
from videor4.curation.sampling import DedupeConfig
from videor4.curation.text_tracking import TrackingConfig
from videor4.curation.trajectories import TrajectoryConfig


class SamplingConfig(BaseModel):
    """Which frames are analysed (OCR + detection) before dedupe."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    mode: Literal["all", "fps", "uniform"] = Field(
        "all", description="all: every frame; fps: a fixed rate; uniform: N frames spread over the clip")
    fps: float = Field(2.0, gt=0, description="analysis rate for mode=fps")
    num_frames: int = Field(16, gt=0, description="frame count for mode=uniform")


_ANALYSIS = ("media_preference", "media", "sampling", "dedupe", "detection_dedupe", "detection_interval_s", "ocr",
             "tracking", "detector")


class CurationConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    media_preference: Literal["auto", "video", "frames"] = Field(
        "auto", description="which layout to read when both exist (auto = videos/ first)")
    media: MediaConfig = MediaConfig()
    sampling: SamplingConfig = SamplingConfig()
    dedupe: DedupeConfig = DedupeConfig()
    detection_dedupe: DedupeConfig = Field(
        DedupeConfig(pixel_delta=25.0, max_changed_fraction=0.15),
        description="objects change less often than text: the detector re-runs only when this much of the "
        "picture changed since its last run (detections are ~0.5 s/frame on 2 cores)")
    detection_interval_s: float = Field(
        1.0, ge=0, description="and at most once per this many seconds of video (objects only feed question "
        "key-phrase evidence, which needs no per-frame boxes)")
    ocr: OCRConfig = OCRConfig()
    tracking: TrackingConfig = TrackingConfig()
    detector: DetectorConfig = DetectorConfig()
    matching: MatchConfig = MatchConfig()
    trajectories: TrajectoryConfig = TrajectoryConfig()
    shards: ShardConfig = ShardConfig()

    def stage_hash(self, stage: Literal["analysis", "matching", "synthesis", "all"]) -> str:
        """Short hash of the settings that change a stage's output."""
        sections = {
            "analysis": _ANALYSIS,
            "matching": _ANALYSIS + ("matching",),
            "synthesis": _ANALYSIS + ("matching", "trajectories"),
            "all": tuple(type(self).model_fields),
        }[stage]
        # Thread counts change speed, never results: a run resumed on another runner reuses its cache.
        data = self.model_dump(mode="json", include=set(sections), exclude={"ocr": {"num_threads"}})
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:12]

    @property
    def config_hash(self) -> str:
        return self.stage_hash("all")


CONFIGS_DIR = Path(__file__).resolve().parent / "configs"


def resolve_config_path(path: Path | str) -> Path:
    """A YAML path, or the name of a bundled curation config (``curation/configs/<name>.yaml``)."""
    return resolve_yaml(path, CONFIGS_DIR, "config")


def load_config(path: Path | None = None, overrides: dict[str, Any] | None = None) -> CurationConfig:
    """YAML file or bundled config name (optional) + dotted overrides such as ``{"ocr.backend": "rapidocr"}``."""
    data: dict[str, Any] = {}
    if path is not None:
        path = resolve_config_path(path)
        with user_input(f"config {path}: cannot read"):
            data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
        if not isinstance(data, dict):
            raise UserError(f"config {path}: expected a mapping at the top level")
    for dotted, value in (overrides or {}).items():
        if value is None:
            continue
        node = data
        *parents, leaf = dotted.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    try:
        return CurationConfig.model_validate(data)
    except ValidationError as exc:
        raise UserError(f"config: {describe_validation_error(exc)}") from exc
