"""RL shards → verl's dataset: lossless, loaded by verl's own ``RLHFDataset``, same prompt as the bundled runtime.

Real parts only: the bundled sample videos, the project's executor and chat rendering, verl 0.9.1's
``RLHFDataset`` and Qwen2.5-VL continuous-token builder, and the tiny Qwen2.5-VL processor built offline.
"""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import torch
from omegaconf import OmegaConf
from verl.utils import hf_processor, hf_tokenizer
from verl.utils.dataset.rl_dataset import RLHFDataset
from verl.utils.tokenizer.continuous_token_wiring import create_continuous_token_builder

from videor4.contracts.media import open_video
from videor4.pipelines.cli import main as videor4_main
from videor4.training.rollout import RolloutConfig, RolloutLimits, RolloutSample, ScriptedEngine, run_rollouts
from videor4.training.verl_plugin import AGENT_NAME, DATA_SOURCE
from videor4.training.verl_plugin.data import export_verl, read_records, shard_row


def dataset_config(tmp_path, **extra):
    # filter_overlong_prompts stays off (as in the bundled verl configs): datasets runs that filter in a forked
    # pool, which can deadlock once earlier tests of the session have started torch/tokenizer threads.
    return OmegaConf.create({"prompt_key": "prompt", "image_key": "images", "max_prompt_length": 8192,
                             "filter_overlong_prompts": False, "return_raw_chat": True,
                             "cache_dir": str(tmp_path / "verl-cache"), **extra})


def test_export_is_lossless_and_carries_the_tool_kwargs(sample_rl, tmp_path):
    written = export_verl(sample_rl.shards, tmp_path / "verl")
    assert sorted(written) == ["rlc", "rld"]
    for stage, rows in sample_rl.rows.items():
        records = read_records(written[stage])
        assert [shard_row(r) for r in records] == rows  # every field of every RL row comes back unchanged
        for index, (record, row) in enumerate(zip(records, rows)):
            assert record["extra_info"]["sample_id"] == row.sample_id and record["extra_info"]["index"] == index
            assert record["data_source"] == DATA_SOURCE and record["agent_name"] == AGENT_NAME
            assert record["reward_model"]["ground_truth"] == row.answers
            kwargs = record["extra_info"]["tools_kwargs"]
            assert kwargs["clip"] == kwargs["crop"]
            create = kwargs["clip"]["create_kwargs"]
            assert create["initial_frames"] == row.initial_frames
            assert create["video"] == row.video.model_dump(mode="json")
            assert create["view"] == sample_rl.view.model_dump(mode="json")
            assert create["data_root"] == str(sample_rl.data_root.resolve())
            # one <image> placeholder per initial frame, each frame a PNG
            assert sum(m["content"].count("<image>") for m in record["prompt"]) == len(row.initial_frames)
            assert len(record["images"]) == len(row.initial_frames)
            assert all(img["bytes"].startswith(b"\x89PNG") for img in record["images"])
    view = json.loads((tmp_path / "verl" / "view.json").read_text())
    assert view["views"]["rld"] == sample_rl.view.model_dump(mode="json")


def test_cli_exports_with_a_recipe_view_and_jpeg(sample_rl, tmp_path):
    out = tmp_path / "cli"
    rc = videor4_main(["shards", "export", str(sample_rl.shards), "--format", "verl", "--out", str(out),
                       "--stages", "rld", "--limit", "1", "--image-format", "jpeg"])
    assert rc == 0
    table = pq.read_table(out / "rld.parquet")
    assert table.num_rows == 1 and not (out / "rlc.parquet").exists()
    record = table.to_pylist()[0]
    assert record["images"][0]["bytes"].startswith(b"\xff\xd8")  # JPEG
    assert shard_row(record) == sample_rl.rows["rld"][0]
    # a recipe whose view conflicts with the shards' recorded one is refused, naming the field
    assert videor4_main(["shards", "export", str(sample_rl.shards), "--format", "verl", "--out", str(out / "x"),
                         "--recipe", "qwen2.5-vl-7b"]) == 2


def test_rlhf_dataset_renders_the_bundled_runtimes_prompt(sample_rl, tiny_model_dir, tmp_path):
    written = export_verl(sample_rl.shards, tmp_path / "verl")
    tokenizer, processor = hf_tokenizer(str(tiny_model_dir)), hf_processor(str(tiny_model_dir))
    config = dataset_config(tmp_path)
    dataset = RLHFDataset(str(written["rlc"]), tokenizer, config, processor)
    assert len(dataset) == len(sample_rl.rows["rlc"])
    builder = create_continuous_token_builder(tokenizer, hf_model_type="qwen2_5_vl", processor=processor)
    view = sample_rl.view
    for index, row in enumerate(sample_rl.rows["rlc"]):
        item = dataset[index]
        assert item["agent_name"] == AGENT_NAME
        assert item["tools_kwargs"]["crop"]["create_kwargs"]["sample_id"] == row.sample_id
        messages = item["raw_prompt"]
        images, videos, _ = RLHFDataset._process_multi_modal_info(messages, 14, config)
        assert videos is None and len(images) == len(row.initial_frames)
        mm: dict = {}
        verl_ids = builder.build_initial_tokens(messages, tools=None, images=images, mm_inputs_out=mm)

        # The bundled runtime's prompt for the same row: its rollout loop, through its own executor factory.
        engine = ScriptedEngine(processor, [["<think>done</think>\n<answer>x</answer>"]])
        sample = RolloutSample(row.sample_id, row.question, sample_rl.data_root / row.video.path)
        [rollout] = run_rollouts(engine, [sample],
                                 lambda s, row=row: view.executor(open_video(s.source), row.initial_frames),
                                 RolloutConfig.of(RolloutLimits(), view))
        assert verl_ids == rollout.input_ids[: rollout.prompt_length]
        assert len(verl_ids) <= config.max_prompt_length
        assert torch.equal(mm["pixel_values"], torch.cat(rollout.encoded.pixel_values))  # PNG: same pixels
        assert torch.equal(mm["image_grid_thw"], torch.stack(rollout.encoded.image_grid_thw))
        for image, shown in zip(images, rollout.images):
            assert np.array_equal(np.asarray(image), shown)
