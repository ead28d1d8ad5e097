"""verl's tool agent loop, speaking the Video-R4 protocol token for token like the bundled rollout loop.

Stock ``tool_agent`` + a Qwen2.5-VL checkpoint would render observations as a ``tool`` role the model never saw
in SFT (Qwen2.5-VL's chat template has no tool handling), parse calls with another regex, drop unparseable
calls silently and let the model continue after the budget. :class:`VideoR4ToolAgentLoop` (agent name
``videor4_tool_agent``, the ``agent_name`` of every exported row) keeps verl's loop, server calls, token
bookkeeping and tools, and changes only what the protocol decides:

* calls are read by :func:`videor4.contracts.tool_protocol.parse_tool_calls` (:class:`VideoR4ToolParser`,
  verl tool-parser ``videor4``); generation stops at ``</tool_call>`` as in the bundled engines, and a turn
  holding ``<answer>…</answer>`` ends the rollout;
* calls verl cannot dispatch (bad JSON, unknown tool) go to the trajectory's executor, which answers with its
  error observation and counts them against the budget;
* a tool call after the call or image budget is spent ends the rollout (stop reasons ``max_calls`` /
  ``max_images``), as in the bundled loop;
* each turn may generate what the bundled loop allows (``RolloutLimits`` exported with the sample: per turn, per
  rollout, whole context), and a turn cut off by that limit ends the rollout (``max_tokens``);
* observation turns are rendered by :mod:`videor4.contracts.chat` (``observation_content``,
  ``message_segments``, ``tokenize_segments``): a ``user`` turn of ``<tool_response>`` blocks, with the
  ``<|im_end|>`` that closes a turn stopped at ``</tool_call>`` added with loss mask 0;
* the system prompt is the exported one (it declares clip/crop); verl passes no tool schemas to the template.

Each trajectory records in ``extra_fields`` its assistant turns (text and generated token ids), which turns
were answered by observations (and how many calls ran) and its stop reason; the reward manager
(:mod:`.rewards`) rebuilds the rollout from them.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import numpy as np
from verl.experimental.agent_loop.agent_loop import register
from verl.experimental.agent_loop.tool_agent_loop import AgentData, AgentState, ToolAgentLoop
from verl.experimental.agent_loop.tool_parser import FunctionCall, ToolParser
from verl.utils.tokenizer.continuous_token import MergeResult

from videor4.contracts.chat import encode_images, observation_turn, tokenize_segments
from videor4.contracts.executor import ToolObservation
from videor4.contracts.tool_protocol import TOOL_STOP, ToolCall, ToolCallError, has_answer, parse_tool_calls
from videor4.training.rollout import RolloutLimits, decode_turn, turn_budget
from videor4.training.verl_plugin import AGENT_NAME, TOOL_PARSER
from videor4.training.verl_plugin.tools import VideoR4Tool, session_for, trajectory_session

# extra_fields keys a trajectory records (read by the reward manager)
TURNS = "videor4_turns"  # assistant turn texts (decode_turn of the generated ids)
TURN_IDS = "videor4_turn_ids"  # generated token ids of each turn
CALLS_RUN = "videor4_calls_run"  # per turn: how many of its parsed calls were executed (0 = no observation)
STOP = "videor4_stop"  # answer | eos | max_calls | max_images | max_tokens


class ParsedCall(FunctionCall):
    """verl's ``FunctionCall`` for one ``<tool_call>`` block; ``error`` holds why it is not a valid call."""

    error: str | None = None

    @classmethod
    def of(cls, call: ToolCall | ToolCallError) -> ParsedCall:
        if isinstance(call, ToolCallError):
            return cls(name="", arguments=call.raw, error=call.message)
        return cls(name=call.name, arguments=json.dumps(call.arguments, ensure_ascii=False))

    def to_call(self) -> ToolCall | ToolCallError:
        if self.error is not None:
            return ToolCallError(self.arguments, self.error)
        return ToolCall(self.name, json.loads(self.arguments))


@ToolParser.register(TOOL_PARSER)
class VideoR4ToolParser(ToolParser):
    """The project's call parser as a verl tool parser (``rollout.multi_turn.format: videor4``)."""

    @property
    def stop_token_ids(self) -> list[int]:
        ids = self.tokenizer.encode(TOOL_STOP, add_special_tokens=False)
        return list(ids) if len(ids) == 1 else []

    def finished(self, ids: list[int]) -> bool:
        """The turn ended on a stop (end of turn/text, ``</tool_call>``) rather than on its token limit."""
        ends = {self.tokenizer.convert_tokens_to_ids(t) for t in ("<|im_end|>", "<|endoftext|>")}
        return bool(ids) and (ids[-1] in ends or ids[-1] in self.stop_token_ids or
                              decode_turn(self.tokenizer, ids).endswith(TOOL_STOP))

    async def extract_tool_calls(self, responses_ids: list[int], tools: Any = None) -> tuple[str, list[FunctionCall]]:
        """Calls of a turn, read as the bundled loop reads them: none when the turn answers or was cut off by its
        token limit (the rollout ends there), else every ``<tool_call>`` block, valid or not."""
        ids = list(responses_ids)
        text = decode_turn(self.tokenizer, ids)
        if has_answer(text) or not self.finished(ids):
            return text, []
        return text, [ParsedCall.of(call) for call in parse_tool_calls(text)]


def _create_kwargs(tools_kwargs: dict[str, Any]) -> dict[str, Any]:
    """The sample's tool ``create_kwargs`` (the same for clip and crop in exported data)."""
    return next((kw["create_kwargs"] for kw in (tools_kwargs or {}).values() if kw.get("create_kwargs")), {})


def observation_of(message: dict[str, Any]) -> ToolObservation:
    """A verl tool message (text + images) as the observation the chat renderer takes."""
    content = message.get("content")
    if isinstance(content, str):
        return ToolObservation(ok=True, tool="", message=content)
    text = "".join(part.get("text", "") for part in content if part.get("type") == "text")
    images = [np.array(part["image"].convert("RGB")) for part in content if part.get("type") == "image"]
    return ToolObservation(ok=True, tool="", images=images, message=text)


@register(AGENT_NAME)
class VideoR4ToolAgentLoop(ToolAgentLoop):
    """``ToolAgentLoop`` with the Video-R4 protocol (see the module doc)."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.tool_parser = VideoR4ToolParser(self.tokenizer)
        self.tool_parser_name = TOOL_PARSER
        # The exported system prompt already declares clip/crop; schemas given to the chat template would be
        # rendered a second time by templates that handle ``tools``.
        self.tool_schemas = []
        self.im_end_id = self.tokenizer.convert_tokens_to_ids("<|im_end|>")

    def turn_budget(self, agent_data: AgentData) -> int:
        """Tokens the next turn may generate: the bundled loop's per-turn, per-rollout and context budgets
        (``RolloutLimits`` exported with the sample)."""
        limits = RolloutLimits.model_validate(_create_kwargs(agent_data.tools_kwargs).get("limits") or {})
        generated = sum(len(ids) for ids in agent_data.extra_fields.get(TURN_IDS, []))
        return turn_budget(limits, generated, len(agent_data.prompt_ids))

    async def _handle_generating_state(self, agent_data: AgentData, sampling_params: dict[str, Any],
                                       ignore_termination: bool = False) -> AgentState:
        budget = self.turn_budget(agent_data)
        if budget == 0:
            agent_data.extra_fields[STOP] = "max_tokens"
            return AgentState.TERMINATED
        state = await super()._handle_generating_state(agent_data, {**sampling_params, "max_tokens": budget},
                                                       ignore_termination)
        ids = list(agent_data.response_ids)
        text = decode_turn(self.tokenizer, ids)
        extra = agent_data.extra_fields
        extra.setdefault(TURNS, []).append(text)
        extra.setdefault(TURN_IDS, []).append(ids)
        extra.setdefault(CALLS_RUN, []).append(0)
        if state == AgentState.TERMINATED:
            if has_answer(text):
                extra[STOP] = "answer"
            elif len(agent_data.response_mask) >= self.response_length or not self.tool_parser.finished(ids):
                extra[STOP] = "max_tokens"
            elif parse_tool_calls(text):
                extra[STOP] = "max_calls"  # verl's turn limits (max_user_turns / max_assistant_turns)
            else:
                extra[STOP] = "eos"
        return state

    def _session(self, agent_data: AgentData):
        """The trajectory's executor session, opened now if no call has run yet (budgets are checked before
        the first call too, as the bundled loop does)."""
        session = trajectory_session(agent_data)
        tool = next((t for t in self.tools.values() if isinstance(t, VideoR4Tool)), None)
        if session is None and tool is not None:
            session = session_for(agent_data, None, _create_kwargs(agent_data.tools_kwargs), tool.data_root, tool.media)
        return session

    async def _handle_processing_tools_state(self, agent_data: AgentData) -> AgentState:
        session = self._session(agent_data)
        reason = session.exhausted() if session is not None else None
        if reason is not None:
            agent_data.extra_fields[STOP] = reason
            return AgentState.TERMINATED
        agent_data.extra_fields[CALLS_RUN][-1] = min(len(agent_data.tool_calls), self.max_parallel_calls)
        state = await super()._handle_processing_tools_state(agent_data)
        if state == AgentState.TERMINATED:
            agent_data.extra_fields[STOP] = "max_tokens"
        return state

    async def _call_tool(self, tool_call: FunctionCall, tools_kwargs: dict[str, Any], agent_data: AgentData):
        active = getattr(agent_data, "_active_tools", self.tools)
        call = tool_call.to_call() if isinstance(tool_call, ParsedCall) else None
        if call is None or (isinstance(call, ToolCall) and call.name in active):
            return await super()._call_tool(tool_call, tools_kwargs, agent_data)
        tool = next((t for t in active.values() if isinstance(t, VideoR4Tool)), None)
        if tool is None:
            return await super()._call_tool(tool_call, tools_kwargs, agent_data)
        return await tool.execute_call(call, agent_data, _create_kwargs(tools_kwargs))

    async def ct_merge_context_msg(self, previous_messages: list[dict], updated_messages: list[dict],
                                   runtime_token_ids: list[int], response_mask: list[int],
                                   response_logprobs: list[float] | None = None, tools: list[dict] | None = None):
        appended = updated_messages[len(previous_messages):]
        if not appended or any(m.get("role") != "tool" for m in appended):
            return await super().ct_merge_context_msg(previous_messages, updated_messages, runtime_token_ids,
                                                      response_mask, response_logprobs, tools)
        ids = await asyncio.get_running_loop().run_in_executor(
            None, self.observation_turn_ids, appended, list(runtime_token_ids))
        merge = MergeResult(token_ids=list(runtime_token_ids) + ids, appended_token_count=len(ids), kind="context")
        mask, logprobs = self.continuous_token_builder.align_response_metadata(merge, response_mask,
                                                                                response_logprobs)
        return merge, mask, logprobs

    def observation_turn_ids(self, tool_messages: list[dict[str, Any]], runtime_token_ids: list[int]) -> list[int]:
        """Token ids of the observation turn the bundled loop appends after a tool-calling turn: the closing
        ``<|im_end|>`` when the turn stopped at ``</tool_call>``, the user turn of ``<tool_response>`` blocks
        with image pads expanded, and the next generation prompt."""
        observations = [observation_of(m) for m in tool_messages]
        encoded = encode_images(self.processor, [image for o in observations for image in o.images])
        ended = bool(runtime_token_ids) and runtime_token_ids[-1] == self.im_end_id
        _, segments = observation_turn(observations, turn_closed=ended)
        ids, _ = tokenize_segments(self.tokenizer, segments, encoded.num_tokens)
        return ids
