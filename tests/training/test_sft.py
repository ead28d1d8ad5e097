"""SFT on CoT shards with the real tiny Qwen2.5-VL: rendering from refs, loss mask, loss decrease, resume.

``toy_dataset`` (also imported by test_grpo / test_curriculum) writes a real dataset root around the session's
tiny mp4 and real shards whose CoT chats were produced by executing clip/crop with the shared executor and the
shared prompt builder — the same path trajectory synthesis takes, minus OCR.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from videor4.curation.ops import ClipCropExecutor, ImageRef, OpsConfig, ToolCall, format_tool_call
from videor4.curation.sampling import uniform_indices
from videor4.curation.shard_schema import QC, CoTRow, Provenance, RLRow, VideoRef, make_sample_id
from videor4.curation.shards import write_manifest, write_stage
from videor4.curation.trajectories import chat_to_shard_messages
from videor4.training.prompts import PromptConfig, Turn, build_messages, display_size, fit_image

PROMPT = PromptConfig(num_frames=3, frame_max_pixels=4 * 28 * 28, crop_max_pixels=4 * 28 * 28)
OPS = OpsConfig(clip_frames=2, max_calls=2, max_images=8)
VIDEO = "videos/00001.mp4"
ANSWERS = {1: "F05", 2: "F12", 3: "F20", 4: "F27"}


def _turns(question_id: int, kind: str, ex: ClipCropExecutor) -> list[Turn]:
    answer = ANSWERS[question_id]
    frame = int(answer[1:])
    calls = []
    if kind in ("clip", "crp"):
        calls.append(ToolCall("clip", {"start": frame / 10, "end": (frame + 1) / 10}))
    if kind in ("crop", "crp"):
        calls.append(ToolCall("crop", {"image": 3 + (kind == "crp"), "bbox_2d": [0.1, 0.3, 0.6, 0.8]}))
    turns = []
    for call in calls:
        turns.append(Turn(f"<think>I look closer with {call.name}.</think>\n{format_tool_call(call)}",
                          [ex.execute(call)]))
    turns.append(Turn(f"<think>It reads {answer}.</think>\n<answer>{answer}</answer>"))
    return turns


def _common(question_id: int, stage: str) -> dict:
    return dict(
        sample_id=make_sample_id("00001", question_id, stage), stage=stage, question_id=question_id,
        video_id="00001", question=f"What code is shown in part {question_id}?", answers=[ANSWERS[question_id]],
        source1="Single frame", source2="Text", video=VideoRef(path=VIDEO, kind="video", fps=10.0, num_frames=30),
        initial_frames=uniform_indices(30, PROMPT.num_frames), evidence=[], qc=QC(status="auto_pass"),
        provenance=Provenance(toolkit_version="test", split="toy", source_file="toy.json", decoder="opencv",
                              ocr_backend="none", detector_backend="none", config_hash="0"),
    )


def toy_dataset(root: Path, video: Path) -> tuple[Path, Path]:
    """``(data_root, shards_dir)``: DRP/CRP CoT rows and RLd/RLc rows over one 3 s video, plus an annotation
    file (split ``toy``) so ``videor4 eval run`` can score a model on the same questions."""
    from videor4.curation.media import open_video

    data_root, shards = root / "data", root / "shards"
    (data_root / "videos").mkdir(parents=True, exist_ok=True)
    shutil.copy(video, data_root / VIDEO)
    rows: dict[str, list] = {"drp": [], "crp": [], "rld": [], "rlc": []}
    with open_video(data_root / VIDEO) as reader:
        for qid in ANSWERS:
            for stage, kind in (("drp", "crop" if qid % 2 else "clip"), ("crp", "crp")):
                common = _common(qid, stage)
                ex = ClipCropExecutor(reader, common["initial_frames"], OPS,
                                      display_size=lambda ref, size: display_size(PROMPT, ref, size))
                initial = list(ex.context)
                turns = _turns(qid, kind, ex)
                messages, _ = build_messages(common["question"], initial, ex.render_many(initial), turns,
                                             config=PROMPT, ops=OPS, duration_s=3.0)
                refs = initial + [r for t in turns for o in t.observations for r in o.refs]
                rows[stage].append(CoTRow(**common, messages=chat_to_shard_messages(messages, refs),
                                          ops=[c for c in kind.replace("crp", "clip crop").split()], verified=True))
            for stage, ops in (("rld", ["crop"]), ("rlc", ["clip", "crop"])):
                rows[stage].append(RLRow(**_common(qid, stage), difficulty=0.5, answer_in_initial=False,
                                         required_ops=ops))
    for stage, stage_rows in rows.items():
        write_stage(shards, stage, stage_rows)
    write_manifest(shards, {"source": "toy"})
    (data_root / "Annotations").mkdir(exist_ok=True)
    records = [{"question": f"What code is shown in part {q}?", "answers": [a], "video_id": "00001",
                "question_id": q, "video_width": 224, "video_height": 128, "source1": "Single frame",
                "source2": "Text"} for q, a in ANSWERS.items()]
    (data_root / "Annotations" / "ViteVQA_0.0.2_toy.json").write_text(json.dumps(
        {"dataset_type": "toy", "dataset_name": "ViteVQA", "dataset_version": "0.0.2", "data": records}))
    return data_root, shards


@pytest.fixture(scope="module")
def toy(tmp_path_factory, tiny_video) -> tuple[Path, Path]:
    return toy_dataset(tmp_path_factory.mktemp("toy"), tiny_video)


def test_cot_rows_render_like_the_rollout_builder(toy, tiny_processor) -> None:
    """Images re-executed from the shard refs equal the executor's pixels, and only assistant text is trained."""
    from videor4.curation.media import open_video
    from videor4.curation.shards import read_stage
    from videor4.training.sft_trainer import CoTRenderer

    data_root, shards = toy
    row = read_stage(shards, "crp")[0]
    renderer = CoTRenderer(tiny_processor, data_root, PROMPT, OPS)
    images = renderer.images(row)
    refs = [ImageRef(m.frame_index, m.timestamp_s, None if m.bbox is None else tuple(m.bbox))
            for msg in row.messages for m in msg.images]
    assert len(images) == 3 + 1 + 1  # initial frames, one clip frame, one crop
    with open_video(data_root / VIDEO) as reader:
        ex = ClipCropExecutor(reader, [], OPS)
        for ref, image in zip(refs, images):
            np.testing.assert_array_equal(fit_image(PROMPT, ref, ex.render(ref)), image)
    enc = renderer.encode(row)
    tok = tiny_processor.tokenizer
    trained = tok.decode([t for t, m in zip(enc.input_ids, enc.loss_mask) if m])
    assistant = [m.text for m in row.messages if m.role == "assistant"]
    assert trained == "".join(a + "<|im_end|>" for a in assistant)
    assert "<tool_response>" not in trained and "Question" not in trained
    assert sum(enc.images.num_tokens) == enc.input_ids.count(tok.convert_tokens_to_ids("<|image_pad|>"))


def test_embedded_jpeg_media_are_used_without_the_video(toy, tiny_processor) -> None:
    """With bytes embedded (``--embed-media``) no video is opened: the data root can be absent."""
    import cv2

    from videor4.curation.media import open_video
    from videor4.curation.shards import read_stage
    from videor4.training.sft_trainer import CoTRenderer

    data_root, shards = toy
    row = read_stage(shards, "drp")[0]
    messages = []
    with open_video(data_root / VIDEO) as reader:
        ex = ClipCropExecutor(reader, [], OPS)
        for msg in row.messages:
            media = []
            for m in msg.images:
                raw = ex.render(ImageRef(m.frame_index, m.timestamp_s, None if m.bbox is None else tuple(m.bbox)))
                ok, buf = cv2.imencode(".png", cv2.cvtColor(raw, cv2.COLOR_RGB2BGR))  # lossless for the check
                media.append(m.model_copy(update={"jpeg": buf.tobytes()}))
            messages.append(msg.model_copy(update={"images": media}))
    embedded = row.model_copy(update={"messages": messages})
    from_refs = CoTRenderer(tiny_processor, data_root, PROMPT, OPS).images(row)
    from_bytes = CoTRenderer(tiny_processor, None, PROMPT, OPS).images(embedded)
    assert len(from_bytes) == len(from_refs)
    for a, b in zip(from_refs, from_bytes):
        np.testing.assert_array_equal(a, b)


def test_batch_loss_mask_aligns_with_left_padding(toy, tiny_processor) -> None:
    from videor4.curation.shards import read_stage
    from videor4.training.sft_trainer import CoTRenderer, batch_inputs

    data_root, shards = toy
    renderer = CoTRenderer(tiny_processor, data_root, PROMPT, OPS)
    encs = [renderer.encode(r) for r in read_stage(shards, "drp")[:2]]
    batch, mask = batch_inputs([(e.input_ids, e.loss_mask, e.images) for e in encs], tiny_processor)
    for row, e in enumerate(encs):
        width = batch["input_ids"].shape[1]
        ids = batch["input_ids"][row, width - len(e.input_ids):].tolist()
        assert ids == e.input_ids
        assert mask[row, width - len(e.input_ids):].tolist() == [float(m) for m in e.loss_mask]
        assert mask[row, : width - len(e.input_ids)].sum() == 0
        assert batch["attention_mask"][row].sum() == len(e.input_ids)


def _sft(tiny_model_dir, toy, out, **cfg):
    from videor4.curation.shards import read_stage
    from videor4.training.sft_config import SFTConfig
    from videor4.training.sft_trainer import SFTTrainer, load_policy

    data_root, shards = toy
    model, processor = load_policy(tiny_model_dir)
    config = SFTConfig(**{"learning_rate": 3e-3, "report_to": [], "save_steps": 100, **cfg})
    rows = read_stage(shards, "drp") + read_stage(shards, "crp")
    return SFTTrainer(model, processor, rows, config, out, data_root=data_root, prompt=PROMPT, ops=OPS)


def test_sft_loss_decreases_on_a_fixed_batch(tiny_model_dir, toy, tmp_path) -> None:
    """Same 4 conversations every step (window = batch = all, one epoch repeated): the NLL must fall a lot."""
    from videor4.training.sft_trainer import read_metrics

    trainer = _sft(tiny_model_dir, toy, tmp_path / "sft", max_steps=12, per_device_batch_size=4,
                   gradient_accumulation_steps=2, bucket_window=8, lr_scheduler="constant",
                   report_to=["tensorboard"])
    final = trainer.train()
    losses = [m["loss"] for m in read_metrics(tmp_path / "sft")]
    assert len(losses) == 12 and all(np.isfinite(losses))
    assert losses[-1] < 0.75 * losses[0], losses
    assert all(b < a for a, b in zip(losses, losses[1:])), losses
    from transformers import AutoProcessor

    assert AutoProcessor.from_pretrained(final).tokenizer.convert_tokens_to_ids("<|image_pad|>") > 0
    assert (tmp_path / "sft" / "tb").is_dir()


def test_resume_gives_the_same_weights(tiny_model_dir, toy, tmp_path) -> None:
    """N steps straight == k steps, 'pre-emption', a fresh trainer resuming, N − k steps (weights, logs)."""
    import torch
    from safetensors.torch import load_file

    from videor4.training.sft_trainer import read_metrics

    cfg = dict(max_steps=5, per_device_batch_size=2, gradient_accumulation_steps=2, bucket_window=4,
               lr_scheduler="linear", warmup_ratio=0.2)
    straight = _sft(tiny_model_dir, toy, tmp_path / "straight", **cfg).train()
    assert _sft(tiny_model_dir, toy, tmp_path / "split", **cfg).train(stop_after=2) is None
    assert [p.name for p in (tmp_path / "split" / "checkpoints").iterdir()] == ["step-000002"]
    resumed = _sft(tiny_model_dir, toy, tmp_path / "split", **cfg).train()
    a, b = load_file(straight / "model.safetensors"), load_file(resumed / "model.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-6, msg=key)
    base = load_file(tiny_model_dir / "model.safetensors")
    assert any(not torch.equal(base[k], a[k]) for k in a)  # training changed the weights at all
    assert [m["step"] for m in read_metrics(tmp_path / "split")] == [1, 2, 3, 4, 5]
    la = [m["loss"] for m in read_metrics(tmp_path / "straight")]
    lb = [m["loss"] for m in read_metrics(tmp_path / "split")]
    np.testing.assert_allclose(la, lb, rtol=1e-5)
