"""The offline tiny Qwen2.5-VL kit: saved like a real checkpoint, loads, runs forward and generate."""

from __future__ import annotations

import numpy as np
import torch
from transformers import AutoModelForImageTextToText, AutoProcessor

from videor4.contracts.chat import VISION_TOKENS
from videor4.training.tiny_model import SPECIAL_TOKENS, build_tiny_model


def _inputs(processor):
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "image"}, {"type": "text", "text": "What sign?"}]}]
    text = processor.apply_chat_template(messages, add_generation_prompt=True)
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (56, 84, 3), dtype=np.uint8), rng.integers(0, 256, (28, 28, 3), dtype=np.uint8)]
    return processor(text=[text], images=images, return_tensors="pt")


def test_build_reload_forward_generate(tiny_model_dir) -> None:
    processor = AutoProcessor.from_pretrained(tiny_model_dir)
    model = AutoModelForImageTextToText.from_pretrained(tiny_model_dir).eval()
    assert type(model).__name__ == "Qwen2_5_VLForConditionalGeneration"
    assert type(processor).__name__ == "Qwen2_5_VLProcessor"
    assert 100_000 < model.num_parameters() < 1_000_000
    tok = processor.tokenizer
    ids = tok.convert_tokens_to_ids(SPECIAL_TOKENS + ["<tool_call>", "</tool_call>"])
    assert len(set(ids)) == len(ids) and tok.unk_token_id not in ids
    assert tok.tokenize("</tool_call><|im_end|>") == ["</tool_call>", "<|im_end|>"]
    assert model.config.image_token_id == tok.convert_tokens_to_ids("<|image_pad|>")

    batch = _inputs(processor)
    # 56x84 image -> 4x6 patches -> 6 tokens; 28x28 upscaled to the 28*28 min -> 2x2 patches -> 1 token.
    assert batch["image_grid_thw"].tolist() == [[1, 4, 6], [1, 2, 2]]
    assert int((batch["input_ids"] == model.config.image_token_id).sum()) == 7
    with torch.inference_mode():
        logits = model(**batch).logits
    assert logits.shape[:2] == batch["input_ids"].shape and torch.isfinite(logits).all()

    suppress = tok.convert_tokens_to_ids(VISION_TOKENS)
    out = model.generate(**batch, max_new_tokens=12, do_sample=False, suppress_tokens=suppress)
    new = out[0, batch["input_ids"].shape[1]:].tolist()
    assert 0 < len(new) <= 12 and not set(new) & set(suppress)


def test_deterministic_under_seed(tmp_path) -> None:
    a, b, c = (build_tiny_model(tmp_path / name, seed=s) for name, s in (("a", 0), ("b", 0), ("c", 1)))
    assert (a / "tokenizer.json").read_text() == (b / "tokenizer.json").read_text()
    ma, mb, mc = (AutoModelForImageTextToText.from_pretrained(p).eval() for p in (a, b, c))
    sa, sb, sc = (m.state_dict() for m in (ma, mb, mc))
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)
    batch = _inputs(AutoProcessor.from_pretrained(a))
    gen = [m.generate(**batch, max_new_tokens=8, do_sample=False).tolist() for m in (ma, mb)]
    assert gen[0] == gen[1]
