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


def test_decision_spans_are_the_calls_values_and_the_answer_where_it_is_written() -> None:
    """Only a call's tool name and argument numbers, and the answer (also where the turn states it), are
    decisions; prose, JSON keys and an unterminated call are not."""
    from videor4.contracts.tool_protocol import decision_spans

    call = ('<think>A sign at the top left in image 2; 3 of them are small.</think>\n<tool_call>\n{"name": "crop", '
            '"arguments": {"image": 2, "bbox_2d": [0.1, 0.25, 0.5, -1]}}\n</tool_call>')
    assert [call[a:b] for a, b in decision_spans(call)] == ["crop", "2", "0.1", "0.25", "0.5", "-1"]
    answer = '<think>Now it reads "47", so 47.</think>\n<answer>47</answer>'
    assert [answer[a:b] for a, b in decision_spans(answer)] == ["47", "47", "47"]
    assert decision_spans('<think>no decision</think>\n<tool_call>\n{"name": "clip", "arguments": {"start": 1') == []
    assert decision_spans("<think>x</think><answer></answer>") == [(24, 24)]


def test_decision_weight_weighs_the_decision_tokens_only(toy, tiny_processor) -> None:
    """``decision_weight`` keeps the token ids and the context mask, and puts the weight exactly on the tokens of
    the decisions (the gold-view probe finds them this way)."""
    from videor4.contracts.shard_io import read_stage
    from videor4.training.sft_trainer import CoTRenderer

    data_root, shards = toy
    tok = tiny_processor.tokenizer
    for row in [*read_stage(shards, "drp"), *read_stage(shards, "crp")]:
        plain = CoTRenderer(tiny_processor, data_root, PROMPT, OPS).encode(row)
        weighted = CoTRenderer(tiny_processor, data_root, PROMPT, OPS, decision_weight=4.0).encode(row)
        assert weighted.input_ids == plain.input_ids
        assert [w > 0 for w in weighted.loss_mask] == [m > 0 for m in plain.loss_mask]
        assert set(weighted.loss_mask) == {0, 1.0, 4.0}
        heavy = tok.decode([t for t, w in zip(weighted.input_ids, weighted.loss_mask) if w == 4.0])
        answer = [m.text for m in row.messages if m.role == "assistant"][-1]
        final = answer.split("<answer>")[1].split("</answer>")[0]
        assert heavy.endswith(final) and "name" not in heavy and "think" not in heavy


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


@pytest.mark.parametrize("extra", [{}, {"first_turns_per_step": 2}], ids=["plain", "first-turns"])
def test_resume_gives_the_same_weights(tiny_model_dir, toy, tmp_path, extra) -> None:
    """N steps straight == k steps, 'pre-emption', a fresh trainer resuming, N − k steps (weights, logs); also with
    first turns added to every step (their draw depends on the step only, so the resumed run draws the same)."""
    import torch
    from safetensors.torch import load_file

    from videor4.training.stage_trainer import read_metrics

    cfg = dict(max_steps=5, per_device_batch_size=2, gradient_accumulation_steps=2, bucket_window=4,
               lr_scheduler="linear", warmup_ratio=0.2, **extra)
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


def test_replay_trains_on_the_base_pretraining_questions_too(tiny_model_dir, tiny_processor, toy, tmp_path) -> None:
    """``replay``: each step also trains on pretraining questions drawn outside the base's held-out scenes, the
    same ones for the same step (resumable), other ones on another rank; the weights then differ from plain SFT;
    ``copy_per_step`` adds copy sequences (same rule of draw) with a loss of their own; a missing question set is a
    one-line error before training."""
    import torch
    from safetensors.torch import load_file

    from videor4.contracts.errors import UserError
    from videor4.curation.micro_data import write_pretrain_set
    from videor4.training.micro_base import ReplayQuestions, held_out_scenes, load_pretrain_set
    from videor4.training.stage_trainer import read_metrics

    write_pretrain_set(tmp_path / "pre", 30, 4, workers=1)
    data_root, _ = toy
    replay = ReplayQuestions(tmp_path / "pre", None, per_step=6, seed=1, held_out=0.2, held_out_seed=0)
    held = held_out_scenes(load_pretrain_set(tmp_path / "pre"), 0.2, 0)
    draws = [replay.draw(s, r) for s in range(20) for r in range(2)]
    assert all(q["scene"] not in held for d in draws for q in d) and all(len(d) == 6 for d in draws)
    assert replay.draw(3, 0) == replay.draw(3, 0) and replay.draw(3, 0) != replay.draw(3, 1)

    cfg = dict(max_steps=3, per_device_batch_size=2, bucket_window=4, lr_scheduler="constant")
    on = {"questions": str(tmp_path / "pre"), "per_step": 4}
    with_replay = _sft(tiny_model_dir, toy, tmp_path / "replay", replay=on, **cfg).train()
    plain = _sft(tiny_model_dir, toy, tmp_path / "plain", **cfg).train()
    logged = read_metrics(tmp_path / "replay")
    assert len(logged) == 3 and all(np.isfinite(m["replay_loss"]) and m["replay_loss"] > 0 for m in logged)
    a, b = load_file(with_replay / "model.safetensors"), load_file(plain / "model.safetensors")
    assert any(not torch.equal(a[k], b[k]) for k in a)
    assert "replay_copy_loss" not in logged[0]
    # copy sequences replayed too (a base built with --text-steps): their own loss, logged, and other weights
    copying = _sft(tiny_model_dir, toy, tmp_path / "copy", replay={**on, "copy_per_step": 3}, **cfg).train()
    logged = read_metrics(tmp_path / "copy")
    assert all(np.isfinite(m["replay_copy_loss"]) and m["replay_copy_loss"] > 0 for m in logged)
    c = load_file(copying / "model.safetensors")
    assert any(not torch.equal(a[k], c[k]) for k in a)
    copies = ReplayQuestions(tmp_path / "pre", tiny_processor, per_step=6, seed=1, held_out=0.2,
                             held_out_seed=0, copy_per_step=3)
    first, again, other = copies.copy_batch(5, 0), copies.copy_batch(5, 0), copies.copy_batch(5, 1)
    assert first[0].shape[0] == 3 and torch.equal(first[0], again[0]) and not torch.equal(first[0], other[0])
    assert replay.copy_batch(5, 0) is None
    with pytest.raises(UserError, match="no pretraining images"):
        _sft(tiny_model_dir, toy, tmp_path / "bad", replay={"questions": "nowhere.npz"}, **cfg)
    assert not (data_root / "nowhere.npz").exists()


def test_gold_view_probe_tells_a_model_that_reads_from_one_that_does_not(tiny_model_dir, tiny_processor, toy,
                                                                         tmp_path) -> None:
    """The teacher-forced probe of ``training/gold_view_probe``. Its bookkeeping, with stand-in models that write
    the gold trajectory token for token (everything counts) or everything but the decisions (nothing counts); then
    real models: the random tiny model reads no gold view and writes no gold box (it must say no), and after SFT on
    the toy trajectories it reads some. Counts are of the rows that call a tool (reading) and of those whose first
    call is a crop (box); the toy rows do not restate their question, so no restatement is scored."""
    import torch

    from videor4.contracts.shard_io import read_stage
    from videor4.contracts.tool_protocol import parse_tool_calls
    from videor4.training.gold_view_probe import _find, probe_gold_trajectories, probe_model
    from videor4.training.sft_trainer import CoTRenderer

    data_root, shards = toy
    rows = [*read_stage(shards, "drp"), *read_stage(shards, "crp")]
    calling = [r for r in rows if any("<tool_call>" in m.text for m in r.messages if m.role == "assistant")]
    first = [parse_tool_calls(next(m.text for m in r.messages if m.role == "assistant"))[0].name for r in calling]
    crop_first = [n for n in first if n == "crop"]
    assert crop_first
    renderer = CoTRenderer(tiny_processor, data_root, PROMPT, OPS, decision_weight=2.0)
    vocab = len(tiny_processor.tokenizer)
    decisions = {tuple(e.input_ids): [w == 2.0 for w in e.loss_mask] for e in map(renderer.encode, rows)}

    class Scripted(torch.nn.Module):
        """Stand-in for a model (the probe's counting is under test): at each position the logits pick the gold
        next token, or, with ``miss_decisions``, a wrong one wherever the next token is a decision."""

        def __init__(self, miss_decisions: bool):
            super().__init__()
            self.miss = miss_decisions

        def forward(self, input_ids, **_):
            ids = input_ids[0].tolist()  # one conversation per batch: no padding
            flags = decisions[tuple(ids)]
            logits = torch.zeros(1, len(ids), vocab)
            for i in range(len(ids) - 1):
                nxt = ids[i + 1]
                logits[0, i, (nxt + 1) % vocab if self.miss and flags[i + 1] else nxt] = 1.0
            return type("Out", (), {"logits": logits})()

    processor = tiny_processor
    stages = ("drp", "crp")
    perfect = probe_model(Scripted(False), processor, shards, data_root, stages)
    assert (perfect["reads"], perfect["read_n"]) == (len(calling), len(calling))
    assert (perfect["box_iou50"], perfect["box_n"]) == (len(crop_first), len(crop_first))
    assert perfect["restate_n"] == 0  # the toy trajectories do not restate their question: nothing to score
    assert _find([5, 1, 2, 3, 1, 2], [1, 2], range(3, 6)) == [4, 5]  # the restatement's tokens, inside the turn
    assert _find([5, 1, 2, 3, 1, 2], [1, 2], range(3, 5)) == [] and _find([1, 2], [9], range(2)) == []
    blind = probe_model(Scripted(True), processor, shards, data_root, stages)
    assert blind["reads"] == 0 and blind["box_iou50"] == 0 and blind["box_n"] == len(crop_first)

    before = probe_gold_trajectories(tiny_model_dir, shards, data_root, stages=stages)
    assert before["reads"] == 0 and before["box_iou50"] == 0
    fitted = _sft(tiny_model_dir, toy, tmp_path / "fit", max_steps=40, per_device_batch_size=len(rows),
                  bucket_window=len(rows), lr_scheduler="constant").train()
    after = probe_gold_trajectories(fitted, shards, data_root, stages=stages)
    assert after["reads"] > 0, after


def test_phrase_probe_says_no_to_a_box_that_ignores_the_words(tiny_model_dir, tiny_processor, toy,
                                                              tmp_path) -> None:
    """The probe's "box follows the phrase" column: first crops whose reasoning names a corner (the toy rows get
    one written in) are decoded greedily after the gold words and after the mirrored words. A stand-in that writes
    a box in the corner its context names follows every row; one that writes the same box whatever the words
    (the prior-bound model this column was built to expose) follows none, though its box is where the gold words
    say for the rows that name its corner; the random tiny model writes no box and follows none."""
    import torch

    from videor4.contracts.shard_io import read_manifest, read_stage, write_manifest, write_stage
    from videor4.contracts.tool_protocol import parse_tool_calls
    from videor4.training.gold_view_probe import probe_model

    data_root, shards = toy
    corners = ["top left", "bottom right", "top right", "bottom left"]
    named: list[str] = []
    out = tmp_path / "shards"
    for stage in ("drp", "crp"):
        rows = []
        for row in read_stage(shards, stage):
            first = next(i for i, m in enumerate(row.messages) if m.role == "assistant")
            if parse_tool_calls(row.messages[first].text)[0].name == "crop":
                corner = corners[len(named) % 4]
                named.append(corner)
                messages = list(row.messages)
                messages[first] = messages[first].model_copy(update={"text": messages[first].text.replace(
                    "I look closer", f"The small text is at the {corner}; I look closer")})
                row = row.model_copy(update={"messages": messages})
            rows.append(row)
        write_stage(out, stage, rows)
    write_manifest(out, {k: v for k, v in read_manifest(shards).items() if k in ("source", "view", "data_root")})
    assert len(named) >= 2
    tok = tiny_processor.tokenizer
    vocab = len(tok)
    boxes = {"top left": "0.1,0.1,0.2,0.2]", "bottom right": "0.8,0.8,0.9,0.9]", "top right": "0.8,0.1,0.9,0.2]",
             "bottom left": "0.1,0.8,0.2,0.9]"}

    class Writes(torch.nn.Module):
        """Stand-in for a model (the probe's bookkeeping is under test): after ``[`` it spells the box of the
        corner its last turn names, or always the bottom-right box (``fixed``)."""

        def __init__(self, fixed: bool):
            super().__init__()
            self.fixed = fixed

        def forward(self, input_ids, **_):
            text = tok.decode(input_ids[0].tolist()).split("<|im_start|>assistant")[-1]
            corner = "bottom right" if self.fixed else next((c for c in corners if f"at the {c}" in text), None)
            logits = torch.zeros(1, input_ids.shape[1], vocab)
            written = text.split("[")[-1] if "[" in text else ""
            target = boxes.get(corner, "]")
            if target.startswith(written) and len(written) < len(target):
                logits[0, -1, tok.encode(target[len(written)], add_special_tokens=False)[0]] = 1.0
            return type("Out", (), {"logits": logits})()

    follower = probe_model(Writes(False), tiny_processor, out, data_root, ("drp", "crp"))
    assert follower["phrase_n"] == len(named) and follower["phrase_follows"] == len(named), follower
    fixed = probe_model(Writes(True), tiny_processor, out, data_root, ("drp", "crp"))
    assert fixed["phrase_follows"] == 0 and fixed["phrase_gold"] == named.count("bottom right") > 0, fixed
    from videor4.training.gold_view_probe import probe_gold_trajectories

    random_init = probe_gold_trajectories(tiny_model_dir, out, data_root, stages=("drp", "crp"))
    assert random_init["phrase_n"] == len(named) and random_init["phrase_follows"] == 0, random_init


def test_first_turns_train_the_first_decision_of_the_stage_rows_too(tiny_model_dir, toy, tmp_path) -> None:
    """``first_turns_per_step``: each step also trains on rows cut after their first assistant turn (the same rows
    for the same step and rank: resumable; other rows on another rank), with a loss of its own; the weights then
    differ from plain SFT, and the option off draws nothing."""
    import torch
    from safetensors.torch import load_file

    from videor4.contracts.errors import UserError
    from videor4.training.sft_trainer import first_turn
    from videor4.training.stage_trainer import read_metrics

    cfg = dict(max_steps=3, per_device_batch_size=2, bucket_window=4, lr_scheduler="constant")
    trainer = _sft(tiny_model_dir, toy, tmp_path / "first", first_turns_per_step=2, **cfg)
    row = next(r for r in trainer.rows if sum(m.role == "assistant" for m in r.messages) > 1)
    cut = first_turn(row)
    assert [m.role for m in cut.messages][-1] == "assistant" and sum(m.role == "assistant" for m in cut.messages) == 1
    assert cut.messages == row.messages[: len(cut.messages)] and len(cut.messages) < len(row.messages)
    encoded = trainer.renderer.encode(cut)
    assert 0 < sum(encoded.loss_mask) < sum(trainer.renderer.encode(row).loss_mask)
    draws = [trainer.first_turn_draw(s, r) for s in range(10) for r in range(2)]
    assert all(len(d) == 2 and len(set(d)) == 2 for d in draws)
    assert trainer.first_turn_draw(4, 0) == trainer.first_turn_draw(4, 0)
    assert any(trainer.first_turn_draw(s, 0) != trainer.first_turn_draw(s, 1) for s in range(10))
    final = trainer.train()
    logged = read_metrics(tmp_path / "first")
    assert len(logged) == 3 and all(np.isfinite(m["first_turn_loss"]) and m["first_turn_loss"] > 0 for m in logged)
    plain = _sft(tiny_model_dir, toy, tmp_path / "plain", **cfg).train()
    assert "first_turn_loss" not in read_metrics(tmp_path / "plain")[0]
    a, b = load_file(final / "model.safetensors"), load_file(plain / "model.safetensors")
    assert any(not torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(UserError, match="without an assistant turn"):
        first_turn(row.model_copy(update={"messages": [m for m in row.messages if m.role != "assistant"]}))
