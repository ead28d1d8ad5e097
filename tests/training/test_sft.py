"""SFT on CoT shards with the real tiny Qwen2.5-VL: rendering from refs, loss mask, loss decrease, resume.

The toy shards come from ``tests/training/toy_data.py`` (shared with the GRPO and curriculum tests).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.training.toy_data import OPS, PROMPT, VIDEO, toy_dataset
from videor4.contracts.executor import ClipCropExecutor, ImageRef
from videor4.contracts.view import fit_image


@pytest.fixture(scope="module")
def toy(tmp_path_factory, tiny_video) -> tuple[Path, Path]:
    return toy_dataset(tmp_path_factory.mktemp("toy"), tiny_video)


def test_cot_rows_render_like_the_rollout_builder(toy, tiny_processor) -> None:
    """Images re-executed from the shard refs equal the executor's pixels, and only assistant text is trained."""
    from videor4.contracts.media import open_video
    from videor4.contracts.shard_io import read_stage
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

    from videor4.contracts.media import open_video
    from videor4.contracts.shard_io import read_stage
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
    from videor4.contracts.shard_io import read_stage
    from videor4.training.sft_trainer import CoTRenderer
    from videor4.training.stage_trainer import batch_inputs

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
    from videor4.contracts.shard_io import read_stage
    from videor4.training.sft_config import SFTConfig
    from videor4.training.sft_trainer import SFTTrainer
    from videor4.training.stage_trainer import load_policy

    data_root, shards = toy
    model, processor = load_policy(tiny_model_dir)
    config = SFTConfig(**{"learning_rate": 3e-3, "report_to": [], "save_steps": 100, **cfg})
    rows = read_stage(shards, "drp") + read_stage(shards, "crp")
    return SFTTrainer(model, processor, rows, config, out, data_root=data_root, prompt=PROMPT, ops=OPS)


def test_sft_loss_decreases_on_a_fixed_batch(tiny_model_dir, toy, tmp_path) -> None:
    """Same 4 conversations every step (window = batch = all, one epoch repeated): the NLL must fall a lot."""
    from videor4.training.stage_trainer import read_metrics

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

    from videor4.training.stage_trainer import read_metrics

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


def test_freeze_vision_trains_the_language_model_and_merger_only(tiny_model_dir, toy, tmp_path) -> None:
    """``freeze_vision``: after real SFT steps the encoder's weights are bit-identical to the start and the merger's
    and language model's moved; without it the encoder moves too (the check can fail)."""
    import torch
    from safetensors.torch import load_file

    base = load_file(tiny_model_dir / "model.safetensors")
    cfg = dict(max_steps=3, per_device_batch_size=2, bucket_window=4, lr_scheduler="constant")

    def moved(final: Path) -> dict[str, bool]:
        after = load_file(final / "model.safetensors")
        groups: dict[str, bool] = {"encoder": False, "merger": False, "language": False}
        for key, value in after.items():
            vision = key.startswith("visual.") or ".visual." in key
            group = ("merger" if "merger." in key else "encoder") if vision else "language"
            groups[group] |= not torch.equal(base[key], value)
        return groups

    frozen = moved(_sft(tiny_model_dir, toy, tmp_path / "frozen", freeze_vision=True, **cfg).train())
    assert frozen == {"encoder": False, "merger": True, "language": True}, frozen
    free = moved(_sft(tiny_model_dir, toy, tmp_path / "free", **cfg).train())
    assert free == {"encoder": True, "merger": True, "language": True}, free
