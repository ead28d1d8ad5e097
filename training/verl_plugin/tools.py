"""``clip`` and ``crop`` as verl tools (``BaseTool``), run by the project's one ``ClipCropExecutor``.

A Video-R4 trajectory has *one* executor for both tools: ``crop``'s image numbers count every image in the
context (initial frames, then each observation's images) and the call budget covers clip and crop together.
So the state lives in a :class:`TrajectorySession` shared by the two tool objects, keyed by

* verl's per-trajectory ``AgentData`` (verl 0.9's tool agent loop calls ``create`` → ``execute`` → ``release``
  around *every call* and passes ``agent_data`` to ``execute``): the session lives as long as the trajectory's
  ``AgentData`` and closes its video when that is collected;
* otherwise the instance id: ``create(instance_id=X)`` on both tools, any number of ``execute``, ``release`` —
  the per-trajectory lifecycle of ``BaseTool``'s contract; the session closes when the last tool releases X.

A session opens lazily on the first call from the sample's ``create_kwargs`` (written by
:mod:`videor4.training.verl_plugin.data`: video reference, data root, initial frames and the view) through
``ShardView.executor`` — the one executor factory — so budgets, error observations, image labels and pixels
are the bundled runtime's. Tools return the observation text and its images fitted to the view's pixel budget
(verl's agent loop takes images from tools, not video: a clip is its frames).
"""

from __future__ import annotations

import asyncio
import threading
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from uuid import uuid4

import numpy as np
from PIL import Image
from verl.tools.base_tool import BaseTool
from verl.tools.schemas import OpenAIFunctionToolSchema, ToolResponse

from videor4.contracts.executor import ImageRef, ToolObservation
from videor4.contracts.media import MediaConfig, open_video
from videor4.contracts.tool_protocol import TOOL_NAMES, TOOL_SCHEMAS, ToolCall, ToolCallError
from videor4.contracts.view import ShardView, fit_image


@dataclass
class TrajectorySession:
    """One trajectory's executor (context, call count, frame cache) and the observations it produced."""

    sample_id: str
    view: ShardView
    executor: Any
    observations: list[ToolObservation] = field(default_factory=list)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    holders: set[int] = field(default_factory=set)

    @classmethod
    def open(cls, create_kwargs: dict[str, Any], data_root: str | Path | None = None,
             media: MediaConfig | None = None) -> TrajectorySession:
        missing = {"video", "initial_frames", "view"} - set(create_kwargs)
        if missing:
            raise ValueError(f"create_kwargs lack {sorted(missing)}: export the data with "
                             "`videor4 shards export --format verl` (extra_info.tools_kwargs)")
        root = Path(data_root or create_kwargs.get("data_root") or ".")
        view = ShardView.model_validate(create_kwargs["view"])
        reader = open_video(root / create_kwargs["video"]["path"], config=media or MediaConfig(),
                            video_id=create_kwargs.get("video_id"))
        executor = view.executor(reader, create_kwargs["initial_frames"])
        return cls(str(create_kwargs.get("sample_id", "")), view, executor)

    def exhausted(self) -> str | None:
        """Why the rollout must stop before running another call (the bundled loop's ``max_calls`` /
        ``max_images`` stop reasons), or None."""
        ops = self.view.ops
        if self.executor.calls_made >= ops.max_calls:
            return "max_calls"
        if len(self.executor.context) >= ops.max_images:
            return "max_images"
        return None

    async def run(self, call: ToolCall | ToolCallError) -> ToolObservation:
        """Execute one call; calls of a trajectory run one at a time, in the order they were issued."""
        async with self.lock:
            observation = await asyncio.to_thread(self.executor.execute, call)
        self.observations.append(observation)
        return observation

    def fitted(self, refs: Sequence[ImageRef], images: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Images as the model is shown them: fitted to the view's frame/crop pixel budget (as the bundled
        rollout loop and prompt builder do)."""
        return [fit_image(self.view.prompt, ref, image) for ref, image in zip(refs, images)]

    def close(self) -> None:
        self.executor.reader.close()


# Sessions of trajectories run by verl's agent loop (keyed by its AgentData, weakly) or by instance id.
_BY_AGENT: weakref.WeakKeyDictionary[Any, TrajectorySession] = weakref.WeakKeyDictionary()
_BY_ID: dict[str, TrajectorySession] = {}
_OPEN_LOCK = threading.Lock()


def trajectory_session(agent_data: Any) -> TrajectorySession | None:
    """The session of a trajectory run by verl's agent loop (None before its first tool call)."""
    return _BY_AGENT.get(agent_data)


def session_for(agent_data: Any, instance_id: str | None, create_kwargs: dict[str, Any],
                data_root: str | Path | None = None, media: MediaConfig | None = None) -> TrajectorySession:
    """The trajectory's session, opened on first use (by ``AgentData`` when given, else by instance id)."""
    with _OPEN_LOCK:
        if agent_data is not None:
            session = _BY_AGENT.get(agent_data)
            if session is None:
                session = TrajectorySession.open(create_kwargs, data_root, media)
                _BY_AGENT[agent_data] = session
                weakref.finalize(agent_data, session.close)
            return session
        if instance_id is None:
            raise ValueError("a call needs either verl's agent_data or an instance id from create()")
        session = _BY_ID.get(instance_id)
        if session is None:
            session = _BY_ID[instance_id] = TrajectorySession.open(create_kwargs, data_root, media)
        return session


def tool_response(session: TrajectorySession, observation: ToolObservation) -> tuple[ToolResponse, float, dict]:
    """verl's (response, step reward, metrics) for an observation: its text and its images as shown."""
    images = [Image.fromarray(image) for image in session.fitted(observation.refs, observation.images)]
    text = observation.message
    response = ToolResponse(text=text, image=images) if images else ToolResponse(text=text)
    metrics = {"ok": observation.ok, "tool": observation.tool, "images": len(images),
               "calls_made": session.executor.calls_made}
    return response, 0.0, metrics


class VideoR4Tool(BaseTool):
    """``clip`` or ``crop`` (``config["name"]``); the schema is the project's ``TOOL_SCHEMAS`` entry.

    Tool config keys (``configs/tools.yaml``): ``type: native``, ``name``, and optionally ``data_root`` (replaces
    the data root recorded at export, e.g. on another cluster) and ``media`` (``MediaConfig`` fields).
    """

    def __init__(self, config: dict, tool_schema: OpenAIFunctionToolSchema | None = None):
        name = (config or {}).get("name") or (tool_schema.function.name if tool_schema else None)
        if name not in TOOL_NAMES:
            raise ValueError(f"VideoR4Tool config needs name in {TOOL_NAMES}, got {name!r}")
        self._tool_name = name
        super().__init__(config, tool_schema)
        if self.name != name:
            raise ValueError(f"tool_schema names {self.name!r} but config names {name!r}")
        self.media = MediaConfig(**config["media"]) if config.get("media") else MediaConfig()
        self.data_root = config.get("data_root")
        self._instances: dict[str, dict[str, Any]] = {}

    def get_openai_tool_schema(self) -> OpenAIFunctionToolSchema:
        schema = next(s for s in TOOL_SCHEMAS if s["function"]["name"] == self._tool_name)
        return OpenAIFunctionToolSchema.model_validate(schema)

    async def create(self, instance_id: str | None = None, create_kwargs: dict[str, Any] | None = None,
                     **kwargs: Any) -> tuple[str, ToolResponse]:
        """Register an instance of this trajectory's tool; the video opens on the first call."""
        instance_id = instance_id or uuid4().hex
        self._instances[instance_id] = dict(create_kwargs or {})
        return instance_id, ToolResponse()

    def session(self, instance_id: str, agent_data: Any = None) -> TrajectorySession:
        if instance_id not in self._instances:
            raise ValueError(f"{self.name}: unknown instance {instance_id!r}; call create() first")
        session = session_for(agent_data, None if agent_data is not None else instance_id,
                              self._instances[instance_id], self.data_root, self.media)
        if agent_data is None:
            session.holders.add(id(self))
        return session

    async def execute(self, instance_id: str, parameters: dict[str, Any], agent_data: Any = None,
                      **kwargs: Any) -> tuple[ToolResponse, float, dict]:
        """Run ``<name>(parameters)`` on the trajectory's executor; mistakes come back as error text."""
        session = self.session(instance_id, agent_data)
        return tool_response(session, await session.run(ToolCall(self.name, dict(parameters or {}))))

    async def execute_call(self, call: ToolCall | ToolCallError, agent_data: Any,
                           create_kwargs: dict[str, Any]) -> tuple[ToolResponse, float, dict]:
        """Run a call verl cannot dispatch by name (unparseable JSON, an unknown tool) on the trajectory's
        executor, which answers with its error observation and counts it against the budget, as the bundled
        runtime does."""
        session = session_for(agent_data, None, create_kwargs, self.data_root, self.media)
        return tool_response(session, await session.run(call))

    async def release(self, instance_id: str, **kwargs: Any) -> None:
        """Forget the instance; an instance-keyed session closes when no tool holds it any more."""
        self._instances.pop(instance_id, None)
        with _OPEN_LOCK:
            session = _BY_ID.get(instance_id)
            if session is not None:
                session.holders.discard(id(self))
                if not session.holders:
                    del _BY_ID[instance_id]
                    session.close()
