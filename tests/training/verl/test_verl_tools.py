"""clip/crop as verl tools: loaded by verl's own tool loader, run on a real bundled video, answering exactly
what the project's executor answers (images, labels, error observations, the shared call budget)."""

from __future__ import annotations

import asyncio
import gc

import numpy as np
import pytest
from verl.experimental.agent_loop.tool_agent_loop import AgentData
from verl.tools.schemas import OpenAIFunctionToolSchema
from verl.tools.tool_registry import initialize_tools_from_config

from videor4.contracts.media import open_video
from videor4.contracts.tool_protocol import TOOL_SCHEMAS, ToolCall
from videor4.contracts.view import fit_image
from videor4.training.verl_plugin import config_path
from videor4.training.verl_plugin import tools as verl_tools
from videor4.training.verl_plugin.data import create_kwargs
from videor4.training.verl_plugin.tools import VideoR4Tool


@pytest.fixture
def tools():
    loaded = initialize_tools_from_config(str(config_path("tools.yaml")))
    return {t.name: t for t in loaded}


def reference_executor(sample_rl, row):
    """The bundled runtime's executor for the same sample (the answers every tool call is checked against)."""
    reader = open_video(sample_rl.data_root / row.video.path)
    return sample_rl.view.executor(reader, row.initial_frames)


def assert_same_observation(response, expected, view):
    assert response.text == expected.message
    shown = [fit_image(view.prompt, ref, image) for ref, image in zip(expected.refs, expected.images)]
    assert len(response.image or []) == len(shown)
    for pil, image in zip(response.image or [], shown):
        assert np.array_equal(np.asarray(pil), image)


def test_tool_yaml_loads_through_verls_tool_registry(tools):
    assert sorted(tools) == ["clip", "crop"]
    assert all(isinstance(t, VideoR4Tool) for t in tools.values())
    for schema in TOOL_SCHEMAS:  # the schema verl holds is the project's declaration, not a copy
        # (verl's property model keeps type/description/enum: an array's "items" is dropped by verl itself)
        dumped = tools[schema["function"]["name"]].tool_schema.model_dump(exclude_unset=True, exclude_none=True)
        assert dumped == OpenAIFunctionToolSchema.model_validate(schema).model_dump(exclude_unset=True,
                                                                                    exclude_none=True)
        assert dumped["function"]["description"] == schema["function"]["description"]
        assert dumped["function"]["parameters"]["required"] == schema["function"]["parameters"]["required"]


def test_execute_returns_the_executors_frames_crops_and_errors(sample_rl, tools):
    row = sample_rl.rows["rlc"][0]
    kwargs = create_kwargs(row, sample_rl.view, sample_rl.data_root)
    view, ops = sample_rl.view, sample_rl.view.ops
    clip, crop = tools["clip"], tools["crop"]

    async def trajectory(instance: str, calls: list[tuple[str, dict]]) -> list:
        # BaseTool's per-trajectory lifecycle: both tools created with the trajectory's id, calls, release.
        for tool in (clip, crop):
            assert (await tool.create(instance, create_kwargs=kwargs))[0] == instance
        out = [await tools[name].execute(instance, args) for name, args in calls]
        for tool in (clip, crop):
            await tool.release(instance)
        return out

    def run_with_reference(instance: str, calls: list[tuple[str, dict]]) -> tuple[list, list]:
        """The verl tools' results, and the observations the toolkit's own executor gives for the same calls."""
        results = asyncio.run(trajectory(instance, calls))
        ref = reference_executor(sample_rl, row)
        expected = [ref.execute(ToolCall(name, args)) for name, args in calls]
        ref.reader.close()
        return results, expected

    # success: a clip returns new frames decoded from the video, a crop of one of them (image 5) zooms in
    calls = [("clip", {"start": 0.5, "end": 1.5}), ("crop", {"image": 5, "bbox_2d": [0.2, 0.2, 0.6, 0.6]}),
             ("clip", {"start": 2.0, "end": 2.9})]
    results, expected = run_with_reference("traj-ok", calls)
    for (response, reward, metrics), obs in zip(results, expected):
        assert_same_observation(response, obs, view)
        assert reward == 0.0 and metrics["ok"] == obs.ok
    assert expected[0].ok and len(results[0][0].image) == ops.clip_frames
    assert "Image 5: frame" in results[0][0].text and "Image 6: frame" in results[0][0].text
    assert expected[1].ok and len(results[1][0].image) == 1 and "Image 7: crop" in results[1][0].text
    # the budget is shared by clip and crop: the third call of a max_calls=2 trajectory is refused
    assert ops.max_calls == 2
    assert results[2][0].text.startswith("Error: tool call budget exhausted (2 calls)") and not results[2][0].image
    assert "traj-ok" not in verl_tools._BY_ID  # released by both tools: the session is gone

    # mistakes come back as error observations (and count against the budget), never as exceptions
    calls = [("crop", {"image": 1, "bbox_2d": [0.6, 0.2, 0.1, 0.5]}), ("clip", {"start": 10.0, "end": 12.0}),
             ("crop", {"image": 1, "bbox_2d": [0.1, 0.1, 0.5, 0.5]})]
    results, expected = run_with_reference("traj-errors", calls)
    for (response, _, metrics), obs in zip(results, expected):
        assert_same_observation(response, obs, view)
        assert metrics["ok"] is False and not response.image
    assert "degenerate box" in results[0][0].text
    assert "is outside the video (0 to 3.00s)" in results[1][0].text
    assert "budget exhausted" in results[2][0].text


def test_sessions_follow_verls_agent_data(sample_rl, tools):
    """verl 0.9's agent loop creates and releases a tool instance around every call; the trajectory's executor
    lives on with its AgentData, so a crop can number the frames an earlier clip returned."""
    row = sample_rl.rows["rld"][1]
    kwargs = create_kwargs(row, sample_rl.view, sample_rl.data_root)
    agent = AgentData(messages=[], image_data=[], video_data=None, audio_data=None, mm_processor_kwargs=None,
                      metrics={}, request_id="r1", tools_kwargs={"clip": {"create_kwargs": kwargs}})

    async def call(agent_data: AgentData, name: str, args: dict):
        tool = tools[name]
        instance, _ = await tool.create(create_kwargs=kwargs)
        try:
            return await tool.execute(instance, args, agent_data=agent_data)
        finally:
            await tool.release(instance)

    async def run(agent_data: AgentData):
        first = await call(agent_data, "clip", {"start": 0.0, "end": 1.0})
        return [first, await call(agent_data, "crop", {"image": 6, "bbox_2d": [0, 0, 1, 1]})]

    first, second = asyncio.run(run(agent))
    assert len(first[0].image) == 2 and len(second[0].image) == 1
    assert "crop of image 6 returned 1 image" in second[0].text
    session = verl_tools.trajectory_session(agent)
    assert session is not None and session.executor.calls_made == 2 and len(session.executor.context) == 7
    closed = []
    session.executor.reader.close = lambda: closed.append(True)
    del agent, session
    gc.collect()
    assert len(verl_tools._BY_AGENT) == 0 and closed == [True]  # the trajectory ended: its video was closed
