"""The verl plug-in tests (training/verl_plugin) run against the real verl classes, in ``.venv-verl``.

verl 0.9.1 pins transformers<5.11 and the main ``.venv`` runs 5.23, so these tests live in their own
environment (``make venv-verl``; the Makefile's ``test`` recipe runs them there). Collected only under that
interpreter (or with ``VIDEOR4_REQUIRE_VERL=1``, as the Makefile sets): in the main environment they are left
out and the run's summary says so. Where they are collected, a missing verl is a collection *error*, never a
skip.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
IN_VERL_ENV = Path(sys.prefix).name == ".venv-verl" or os.environ.get("VIDEOR4_REQUIRE_VERL") == "1"

if not IN_VERL_ENV:
    collect_ignore_glob = ["test_*.py"]

    def pytest_terminal_summary(terminalreporter) -> None:
        terminalreporter.write_line(
            "tests/training/verl: NOT COLLECTED in this environment — the verl plug-in tests run in .venv-verl "
            "(`make test` runs them; `make venv-verl` builds it)", yellow=True)


SAMPLE_ROOT = REPO / "curation" / "sample_data"


@dataclass
class SampleRL:
    """RL shards over the bundled sample videos (real mp4s), with a small view for CPU speed."""

    data_root: Path
    shards: Path
    view: object
    rows: dict


@pytest.fixture(scope="session")
def sample_rl(tmp_path_factory: pytest.TempPathFactory) -> SampleRL:
    import json

    from videor4.contracts.executor import OpsConfig
    from videor4.contracts.shard_io import write_manifest, write_stage
    from videor4.contracts.shard_schema import QC, Provenance, RLRow, VideoRef, make_sample_id
    from videor4.contracts.view import PromptConfig, ShardView

    view = ShardView(prompt=PromptConfig(num_frames=4, frame_max_pixels=8 * 28 * 28, crop_max_pixels=8 * 28 * 28),
                     ops=OpsConfig(clip_frames=2, max_calls=2, max_images=8))
    records = json.loads((SAMPLE_ROOT / "Annotations" / "ViteVQA_0.0.2_sample.json").read_text())["data"]
    picked = [next(r for r in records if r["video_id"] == vid) for vid in ("90001", "90002")]
    rows: dict[str, list] = {"rld": [], "rlc": []}
    for rec in picked:
        for stage, ops in (("rld", ["crop"]), ("rlc", ["clip", "crop"])):
            rows[stage].append(RLRow(
                sample_id=make_sample_id(rec["video_id"], rec["question_id"], stage), stage=stage,
                question_id=rec["question_id"], video_id=rec["video_id"], question=rec["question"],
                answers=rec["answers"], source1=rec["source1"], source2=rec["source2"],
                video=VideoRef(path=f"videos/{rec['video_id']}.mp4", kind="video", fps=10.0, num_frames=30),
                initial_frames=view.initial_frames(30), evidence=[], qc=QC(status="auto_pass"),
                provenance=Provenance(toolkit_version="test", split="sample", source_file="sample.json",
                                      decoder="opencv", ocr_backend="none", detector_backend="none", config_hash="0"),
                difficulty=0.5, answer_in_initial=False, required_ops=ops))
    shards = tmp_path_factory.mktemp("verl-shards") / "shards"
    for stage, stage_rows in rows.items():
        write_stage(shards, stage, stage_rows)
    write_manifest(shards, {"view": view.model_dump(mode="json"), "data_root": str(SAMPLE_ROOT)})
    return SampleRL(SAMPLE_ROOT, shards, view, {s: sorted(r, key=lambda x: x.sample_id) for s, r in rows.items()})


# --- the same scripted trajectories through verl's agent loop and through the bundled rollout loop -----------------
def _call(name: str, **arguments) -> str:
    import json

    return "<tool_call>\n" + json.dumps({"name": name, "arguments": arguments}) + "\n</tool_call>"


def group_scripts(answer: str) -> dict[str, list[list[str]]]:
    """Per RLc row, G = 4 scripted policies covering the protocol: clips, crops of crops, a malformed call, an
    unknown tool, the call budget (max_calls = 2), answers right and wrong, no answer at all."""
    return {
        "a": [
            [f"<think>Text is small; look again.</think>\n{_call('clip', start=0.5, end=1.5)}",
             f"<think>Now it reads clearly.</think>\n<answer>{answer}</answer>"],
            [f"<think>I can read it.</think>\n<answer>{answer}</answer>"],
            ["<think>Hard to say.</think>\n<answer>nothing</answer>"],
            ["<think>Hmm.</think> I am not sure what it says."],
        ],
        "b": [
            [f"<think>Zoom in.</think>\n{_call('crop', image=1, bbox_2d=[0.1, 0.1, 0.6, 0.6])}",
             f"<think>Closer.</think>\n{_call('crop', image=5, bbox_2d=[0.2, 0.3, 0.8, 0.9])}",
             f"<think>Done.</think>\n<answer>{answer}</answer>"],
            ["<think>Try.</think>\n<tool_call>\n{\"name\": \"clip\", \"arguments\": {start: 1}}\n</tool_call>",
             f"<think>Oops.</think>\n<answer>{answer}</answer>"],
            [f"<think>Zoom.</think>\n{_call('zoom', level=2)}",
             f"<think>Clip instead.</think>\n{_call('clip', start=1.0, end=2.0)}",
             f"<think>And crop.</think>\n{_call('crop', image=5, bbox_2d=[0.0, 0.0, 0.5, 0.5])}"],
            ["<think>Guess.</think>\n<answer>a guess</answer>"],
        ],
    }


class ScriptedServer:
    """Stand-in for verl's LLM server (vLLM/SGLang need a GPU): answers each turn from a script through the real
    tokenizer, honouring the stop token ids and ``max_tokens`` verl sends, like the bundled ``ScriptedEngine``."""

    def __init__(self, tokenizer, turns: list[str]):
        self.tokenizer, self.turns, self.requests = tokenizer, turns, []

    async def generate(self, *, request_id, prompt_ids, sampling_params, **_):
        from verl.workers.rollout.replica import TokenOutput

        self.requests.append({"request_id": request_id, "prompt_len": len(prompt_ids), **sampling_params})
        text = self.turns[len(self.requests) - 1] if len(self.requests) <= len(self.turns) else ""
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        stops = set(sampling_params.get("stop_token_ids") or [])
        cut = next((i + 1 for i, t in enumerate(ids) if t in stops), None)
        ids = ids[:cut] if cut else ids + [self.tokenizer.convert_tokens_to_ids("<|im_end|>")]
        return TokenOutput(token_ids=ids[: sampling_params.get("max_tokens", len(ids))])


@dataclass
class Runs:
    rows: list  # the RLc rows, one group each
    scripts: list  # per row, its G scripts
    verl: list  # per row, per script: (AgentLoopOutput, dataset item, ScriptedServer)
    bundled: list  # per row, per script: the bundled loop's Rollout
    processor: object
    tokenizer: object


@pytest.fixture(scope="session")
def runs(sample_rl, tiny_model_dir, tmp_path_factory) -> Runs:
    import asyncio

    from omegaconf import OmegaConf
    from verl.experimental.agent_loop.agent_loop import DictConfigWrap, ToolListWrap
    from verl.tools.tool_registry import initialize_tools_from_config
    from verl.utils import hf_processor, hf_tokenizer
    from verl.utils.dataset.rl_dataset import RLHFDataset

    from videor4.contracts.media import open_video
    from videor4.training.rollout import RolloutConfig, RolloutLimits, RolloutSample, ScriptedEngine, run_rollouts
    from videor4.training.verl_plugin import config_path
    from videor4.training.verl_plugin.agent_loop import VideoR4ToolAgentLoop
    from videor4.training.verl_plugin.data import export_verl

    tmp = tmp_path_factory.mktemp("verl-runs")
    written = export_verl(sample_rl.shards, tmp / "data", stages=["rlc"])
    tokenizer, processor = hf_tokenizer(str(tiny_model_dir)), hf_processor(str(tiny_model_dir))
    data_config = OmegaConf.create({"prompt_key": "prompt", "image_key": "images", "max_prompt_length": 8192,
                                    "return_raw_chat": True, "cache_dir": str(tmp / "cache")})
    dataset = RLHFDataset(str(written["rlc"]), tokenizer, data_config, processor)
    config = OmegaConf.create({"actor_rollout_ref": {"rollout": {
        "prompt_length": 8192, "response_length": 8192, "full_determinism": False,
        "multi_turn": {"max_user_turns": None, "max_assistant_turns": None, "max_parallel_calls": 2,
                       "max_tool_response_length": 8192, "tool_response_truncate_side": "middle",
                       "format": "videor4"}}}, "data": data_config})
    tools = initialize_tools_from_config(str(config_path("tools.yaml")))
    view = sample_rl.view
    rows = sample_rl.rows["rlc"]
    scripts = [group_scripts(row.answers[0])[key] for row, key in zip(rows, "ab")]

    async def verl_rollout(item, turns):
        server = ScriptedServer(tokenizer, turns)
        loop = VideoR4ToolAgentLoop(trainer_config=DictConfigWrap(config), server_manager=server,
                                    tokenizer=tokenizer, processor=processor, dataset_cls=RLHFDataset,
                                    data_config=DictConfigWrap(data_config), hf_model_type="qwen2_5_vl",
                                    tools=ToolListWrap(tools))
        sampling = {"temperature": 1.0, "top_p": 1.0, "top_k": -1, "repetition_penalty": 1.0, "logprobs": False}
        output = await loop.run(sampling, raw_prompt=item["raw_prompt"], tools_kwargs=item["tools_kwargs"],
                                extra_info=item["extra_info"])
        return output, server

    verl_out, bundled = [], []
    for index, (row, group) in enumerate(zip(rows, scripts)):
        outputs = []
        for turns in group:
            item = dataset[index]
            output, server = asyncio.run(verl_rollout(item, turns))
            outputs.append((output, item, server))
        verl_out.append(outputs)
        engine = ScriptedEngine(processor, group)
        samples = [RolloutSample(f"{row.sample_id}#{g}", row.question, sample_rl.data_root / row.video.path,
                                 tuple(row.answers)) for g in range(len(group))]
        bundled.append(run_rollouts(engine, samples,
                                    lambda s, row=row: view.executor(open_video(s.source), row.initial_frames),
                                    RolloutConfig.of(RolloutLimits(), view)))
    return Runs(rows, scripts, verl_out, bundled, processor, tokenizer)
