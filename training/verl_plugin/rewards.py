"""The Video-R4 rewards (accuracy, format, R_div, R_rep, R_cur) behind verl's reward-manager interface.

Nothing is re-implemented: a verl trajectory is turned back into the project's ``Rollout`` (the assistant turns
the agent loop recorded, and the observations re-executed from those turns by the same executor the tools
used — it is deterministic), and the values come from ``videor4.training.grpo_trainer.reward_columns`` (which
images feed R_div/R_rep) and ``videor4.training.rewards.compute_rewards`` (the registry), exactly the calls the
bundled GRPO trainer makes. The reward specs are the bundled recipe's (``recipe`` + ``stage``) unless listed.

Groups. R_cur needs the share of a prompt's G rollouts that used tools, so rollouts are scored per group
(verl's ``uid``):

* :meth:`VideoR4RewardManager.score_batch` scores a batch (any number of groups) in one call;
* :meth:`VideoR4RewardManager.run_single` is what verl 0.9.1's reward loop calls, once per finished
  trajectory: each rollout's features are computed as it arrives, then it waits until its group's
  ``group_size`` rollouts (``actor_rollout_ref.rollout.n``) are in and the group is scored together. All
  rollouts of a group must reach the same manager, so the recipe runs one reward worker
  (``reward.num_workers: 1``; checked). A group that does not fill within ``group_timeout_s`` (a failed
  rollout) is scored with the rollouts present, and a warning says so.

Features come from the bundled trainer's frozen encoder: the vision tower alone of the recipe stage's
``feature_encoder`` checkpoint, else of the stage's starting checkpoint (``actor_rollout_ref.model.path``), via
``videor4.training.features.load_vision_tower`` + ``VisionTowerEncoder``, loaded only when an enabled reward
needs features.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field
from verl import DataProto
from verl.experimental.reward_loop.reward_manager import register
from verl.experimental.reward_loop.reward_manager.base import RewardManagerBase

from videor4.contracts.chat import EncodedImages, Turn
from videor4.contracts.errors import UserError
from videor4.contracts.media import MediaConfig
from videor4.contracts.tool_protocol import extract_answer, parse_tool_calls
from videor4.training.features import FeatureEncoder, VisionTowerEncoder, load_vision_tower
from videor4.training.grpo_trainer import reward_columns
from videor4.training.rewards import RewardSpec, compute_rewards, required_features
from videor4.training.rollout import Rollout
from videor4.training.verl_plugin import REWARD_MANAGER
from videor4.training.verl_plugin.agent_loop import CALLS_RUN, STOP, TURN_IDS, TURNS
from videor4.training.verl_plugin.tools import TrajectorySession

logger = logging.getLogger(__name__)


class EncoderSettings(BaseModel):
    """The frozen feature encoder of R_div/R_rep."""

    model_config = ConfigDict(extra="forbid")

    model_path: str | None = Field(None, description="checkpoint whose vision tower encodes; None = the recipe "
                                   "stage's feature_encoder, else actor_rollout_ref.model.path (the stage's start)")
    device: str = Field("auto", description="'auto' (cuda if visible, else cpu), 'cpu', 'cuda:0', …")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field("auto", description="weights dtype")
    batch_size: int = Field(16, ge=1, description="images per vision-tower pass")


class VerlRewardSettings(BaseModel):
    """``reward.reward_kwargs.videor4`` in the verl config."""

    model_config = ConfigDict(extra="forbid")

    recipe: str | None = Field("qwen2.5-vl-7b", description="bundled recipe name or YAML whose GRPO stage "
                               "`stage` gives the reward specs")
    stage: str = Field("rld", description="GRPO stage of `recipe` (rld or rlc)")
    rewards: list[RewardSpec] | None = Field(None, description="explicit specs (replace the recipe's)")
    data_root: str | None = Field(None, description="replaces the data root recorded at export")
    media: dict[str, Any] = Field(default_factory=dict, description="MediaConfig fields for decoding")
    encoder: EncoderSettings = Field(default_factory=EncoderSettings)
    group_size: int | None = Field(None, ge=1, description="rollouts per group; None = actor_rollout_ref.rollout.n")
    group_timeout_s: float = Field(600.0, gt=0, description="how long a rollout waits for the rest of its group")

    def grpo_stage(self) -> Any:
        """The recipe's GRPO stage config (None without a recipe)."""
        if self.recipe is None:
            return None
        from videor4.training.curriculum import load_recipe

        recipe = load_recipe(self.recipe)
        stage = next((s for s in recipe.stages if s.name == self.stage and s.kind == "grpo"), None)
        if stage is None:
            names = [s.name for s in recipe.stages if s.kind == "grpo"]
            raise UserError(f"recipe {recipe.name} has no GRPO stage {self.stage!r} (GRPO stages: {names})")
        return stage.grpo

    def reward_specs(self) -> list[RewardSpec]:
        if self.rewards is not None:
            return list(self.rewards)
        grpo = self.grpo_stage()
        if grpo is None:
            raise UserError("reward_kwargs.videor4 needs `rewards` or a `recipe` with GRPO stage `stage`")
        return list(grpo.rewards)


def trajectory_rollout(sample_id: str, extra_fields: dict[str, Any], create_kwargs: dict[str, Any],
                       data_root: str | Path | None = None, media: MediaConfig | None = None) -> Rollout:
    """The project's ``Rollout`` of a verl trajectory: its recorded assistant turns, and the observations of
    the turns that were answered re-executed on a fresh executor of the same view (bit-identical to what the
    tools returned). Fields no reward reads (``messages``, ``encoded``) are left empty; ``input_ids`` /
    ``loss_mask`` hold the generated tokens only."""
    if TURNS not in extra_fields:
        raise ValueError(f"sample {sample_id}: no {TURNS!r} in the trajectory's extra fields; roll out with the "
                         f"videor4 agent loop (agent_name videor4_tool_agent)")
    session = TrajectorySession.open(create_kwargs, data_root, media)
    try:
        executor = session.executor
        initial = list(executor.context)
        images = session.fitted(initial, executor.render_many(initial))
        turns: list[Turn] = []
        calls, observations = [], []
        for text, ran in zip(extra_fields[TURNS], extra_fields.get(CALLS_RUN, [0] * len(extra_fields[TURNS]))):
            turn = Turn(text)
            if ran:
                parsed = parse_tool_calls(text)[: int(ran)]
                turn.observations = [executor.execute(call) for call in parsed]
                calls += parsed
                observations += turn.observations
                images += [image for o in turn.observations for image in session.fitted(o.refs, o.images)]
            turns.append(turn)
        generated = [int(t) for ids in extra_fields.get(TURN_IDS, []) for t in ids]
        final = turns[-1].assistant if turns else ""
        return Rollout(sample_id=sample_id, input_ids=generated, loss_mask=[1] * len(generated), prompt_length=0,
                       images=images, refs=list(executor.context), encoded=EncodedImages([], [], []), turns=turns,
                       calls=calls, observations=observations, messages=[], final_text=final,
                       answer=extract_answer(final), stop_reason=extra_fields.get(STOP, "eos"),
                       generated_tokens=len(generated))
    finally:
        session.close()


@dataclass
class _Member:
    key: Any
    rollout: Rollout
    columns: dict[str, Any]


@dataclass
class _Group:
    members: list[_Member] = field(default_factory=list)
    done: asyncio.Event = field(default_factory=asyncio.Event)
    results: dict[Any, dict[str, Any]] = field(default_factory=dict)


class _LockedEncoder:
    """Encodes one batch at a time (rollouts are prepared in worker threads)."""

    def __init__(self, encoder: FeatureEncoder):
        self.encoder, self.lock = encoder, threading.Lock()

    def encode(self, images: Sequence[np.ndarray]) -> np.ndarray:
        with self.lock:
            return self.encoder.encode(images)


def _item_value(item: Any, key: str, default: Any = None) -> Any:
    value = item.non_tensor_batch.get(key, default)
    return value.item() if isinstance(value, np.ndarray) and value.ndim == 0 else value


@register(REWARD_MANAGER)
class VideoR4RewardManager(RewardManagerBase):
    """verl reward manager ``videor4`` (``reward.reward_manager.name: videor4``; see the module doc)."""

    def __init__(self, config: Any, tokenizer: Any, compute_score: Any = None, reward_router_address: Any = None,
                 reward_model_tokenizer: Any = None, *, settings: dict[str, Any] | VerlRewardSettings | None = None,
                 encoder: FeatureEncoder | None = None):
        super().__init__(config, tokenizer, compute_score)
        if settings is None:
            settings = dict((config.reward.get("reward_kwargs") or {}).get("videor4") or {})
        self.settings = VerlRewardSettings.model_validate(settings)
        self.specs = self.settings.reward_specs()
        self.needs = required_features(self.specs)
        self.media = MediaConfig(**self.settings.media)
        self.group_size = self.settings.group_size or int(config.actor_rollout_ref.rollout.n)
        workers = int(config.reward.get("num_workers") or 1)
        if workers != 1 and self.group_size > 1 and any(s.name == "curiosity" for s in self.specs):
            raise UserError(f"reward manager {REWARD_MANAGER}: R_cur scores a prompt's rollouts together, so all of a "
                            f"group must reach one reward worker; set reward.num_workers=1 (got {workers})")
        grpo = self.settings.grpo_stage()
        self.policy_path = config.actor_rollout_ref.model.get("path")
        self.model_path = (self.settings.encoder.model_path or (grpo.feature_encoder if grpo is not None else None)
                           or self.policy_path)
        self._encoder = _LockedEncoder(encoder) if encoder is not None else None
        self._encoder_lock = threading.Lock()
        self._groups: dict[Any, _Group] = {}

    # -- features ----------------------------------------------------------------------------------------------
    @property
    def encoder(self) -> FeatureEncoder | None:
        """The frozen encoder, loaded on first use (never when no enabled reward needs features)."""
        if not self.needs:
            return None
        with self._encoder_lock:
            if self._encoder is None:
                self._encoder = _LockedEncoder(self._load_encoder())
        return self._encoder

    def _load_encoder(self) -> FeatureEncoder:
        """The bundled trainer's encoder: the vision tower alone (``load_vision_tower``), frozen, with the
        policy's image processor."""
        import torch
        from transformers import AutoProcessor

        cfg = self.settings.encoder
        if not self.model_path:
            raise UserError("the R_div/R_rep encoder needs a model: set reward_kwargs.videor4.encoder.model_path")
        device = cfg.device if cfg.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
        dtype = None if cfg.dtype == "auto" else getattr(torch, cfg.dtype)
        tower = load_vision_tower(self.model_path, device, dtype)
        processor = AutoProcessor.from_pretrained(self.policy_path or self.model_path)
        return VisionTowerEncoder(tower, processor, batch_size=cfg.batch_size)

    # -- one trajectory ----------------------------------------------------------------------------------------
    def rollout_of(self, item: Any) -> tuple[Rollout, list[str], Any]:
        """(rollout, answers, group id) of one verl data item (a trajectory's final output)."""
        extra = _item_value(item, "tool_extra_fields") or _item_value(item, "extra_fields") or {}
        info = _item_value(item, "extra_info") or {}
        tools_kwargs = _item_value(item, "tools_kwargs") or info.get("tools_kwargs") or {}
        create_kwargs = next((kw["create_kwargs"] for kw in tools_kwargs.values() if kw.get("create_kwargs")), None)
        if create_kwargs is None:
            raise ValueError("trajectory without tools_kwargs.create_kwargs: export with `videor4 shards export "
                             "--format verl`")
        answers = [str(a) for a in _item_value(item, "reward_model")["ground_truth"]]
        uid = _item_value(item, "uid", info.get("sample_id"))
        rollout = trajectory_rollout(str(info.get("sample_id", uid)), dict(extra), create_kwargs,
                                     self.settings.data_root, self.media)
        return rollout, answers, uid

    def _results(self, rollouts: Sequence[Rollout], columns: dict[str, Any]) -> list[dict[str, Any]]:
        completions = [[t.assistant for t in r.turns] for r in rollouts]
        total, components = compute_rewards(self.specs, completions, **columns)
        out = []
        for i, value in enumerate(total):
            info = {name: float(values[i]) for name, values in components.items()}
            info["num_calls"] = float(columns["num_calls"][i])
            out.append({"reward_score": float(value), "reward_extra_info": info})
        return out

    # -- batch ---------------------------------------------------------------------------------------------------
    def score_batch(self, data: DataProto) -> list[dict[str, Any]]:
        """Scores of every trajectory of ``data``, groups taken from its ``uid`` column."""
        prepared = [self.rollout_of(data[i]) for i in range(len(data))]
        rollouts = [p[0] for p in prepared]
        columns = reward_columns(rollouts, [p[1] for p in prepared], [p[2] for p in prepared], self.encoder,
                                 self.needs)
        return self._results(rollouts, columns)

    async def run_batch(self, data: DataProto) -> list[dict[str, Any]]:
        return await asyncio.get_running_loop().run_in_executor(None, self.score_batch, data)

    # -- verl's reward loop: one trajectory at a time ------------------------------------------------------------
    def _member(self, item: Any) -> tuple[Any, _Member]:
        rollout, answers, uid = self.rollout_of(item)
        columns = reward_columns([rollout], [answers], [uid], self.encoder, self.needs)
        key = _item_value(item, "session_id", id(rollout))
        return uid, _Member(key, rollout, columns)

    def _finish(self, uid: Any, group: _Group) -> None:
        if group.done.is_set():
            return
        members = list(group.members)
        columns = {k: [v for m in members for v in m.columns[k]] for k in members[0].columns}
        for member, result in zip(members, self._results([m.rollout for m in members], columns)):
            group.results[member.key] = result
        group.done.set()
        if self._groups.get(uid) is group:
            del self._groups[uid]

    async def run_single(self, data: DataProto) -> dict[str, Any]:
        uid, member = await asyncio.get_running_loop().run_in_executor(None, self._member, data[-1])
        group = self._groups.setdefault(uid, _Group())
        group.members.append(member)
        if len(group.members) >= self.group_size:
            self._finish(uid, group)
        else:
            try:
                await asyncio.wait_for(group.done.wait(), timeout=self.settings.group_timeout_s)
            except asyncio.TimeoutError:
                logger.warning("group %s: %d of %d rollouts arrived within %.0f s; R_cur uses those present",
                               uid, len(group.members), self.group_size, self.settings.group_timeout_s)
                self._finish(uid, group)
        return group.results[member.key]
