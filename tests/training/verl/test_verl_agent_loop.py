"""verl's tool agent loop with the Video-R4 protocol produces the bundled rollout loop's tokens, masks, images
and stop reasons, call for call (the same scripted policies through both; see conftest ``runs``).

The only stand-in is the LLM server (vLLM/SGLang need a GPU): ``ScriptedServer`` returns scripted turns through
the real tokenizer. Everything else is real: verl 0.9.1's ``ToolAgentLoop`` machinery and ``RLHFDataset``, the
project's tools, executor and chat rendering, the tiny Qwen2.5-VL processor and the bundled sample videos.
"""

from __future__ import annotations

import numpy as np

from videor4.contracts.tool_protocol import TOOL_STOP
from videor4.training.verl_plugin.agent_loop import CALLS_RUN, STOP, TURN_IDS, TURNS


def test_agent_loop_tokens_equal_the_bundled_rollouts(runs):
    for outputs, rollouts in zip(runs.verl, runs.bundled):
        for (output, _, server), rollout in zip(outputs, rollouts):
            p = rollout.prompt_length
            assert output.prompt_ids == rollout.input_ids[:p]
            assert output.response_ids == rollout.input_ids[p:]
            assert output.response_mask == rollout.loss_mask[p:]  # observations and the added <|im_end|>: 0
            images = output.multi_modal_data["images"]
            assert len(images) == len(rollout.images)
            assert all(np.array_equal(np.asarray(a), b) for a, b in zip(images, rollout.images))
            extra = output.extra_fields
            assert extra[TURNS] == [t.assistant for t in rollout.turns]
            assert extra[STOP] == rollout.stop_reason
            assert sum(len(ids) for ids in extra[TURN_IDS]) == rollout.generated_tokens
            assert [bool(n) for n in extra[CALLS_RUN]] == [bool(t.observations) for t in rollout.turns]
            # generation stops at </tool_call> and each turn's budget is the bundled loop's (512 per turn)
            stop_id = runs.tokenizer.convert_tokens_to_ids(TOOL_STOP)
            assert all(stop_id in r["stop_token_ids"] and r["max_tokens"] == 512 for r in server.requests[:1])


def test_the_scripts_cover_every_stop_reason_and_error_path(runs):
    stops = [r.stop_reason for rollouts in runs.bundled for r in rollouts]
    assert {"answer", "eos", "max_calls"} <= set(stops)
    messages = [o.message for rollouts in runs.bundled for r in rollouts for o in r.observations]
    assert any("not valid JSON" in m for m in messages)  # a malformed call reached the executor...
    assert any("unknown tool 'zoom'" in m for m in messages)  # ...and so did an unknown tool
    group_b = runs.verl[1]
    assert group_b[2][0].extra_fields[STOP] == "max_calls"  # the third call of a max_calls=2 budget ends it
    texts = [runs.tokenizer.decode(o.response_ids) for o, _, _ in group_b]
    assert "<tool_response>\nError: tool call is not valid JSON" in texts[1]
    assert "<|im_start|>tool" not in "".join(texts)  # observations are user turns, as the model was trained
