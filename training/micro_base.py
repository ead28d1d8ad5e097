"""The micro base model: a random-init Qwen2.5-VL (``tiny_model`` size ``micro``) pretrained to *read* rendered
signs, the CPU-sized stand-in for the pretrained checkpoint a 7B run starts from (``videor4 micro-model``).

Why pretraining at all: a real run starts from Qwen2.5-VL-7B, which already reads text and knows where things
are; the curriculum teaches *when and where to look*. A model from random init does not read, and the curriculum's
few hundred trajectories cannot teach it: measured on 2 CPU cores, the whole micro model trained end to end on
"which number is on this crop" stayed at chance for 1,400 steps of 32, and DRP-SFT from random init answers with
one number for every question. So the base is built the way real VLMs are, in two steps on images of the
benchmark's kind from a split of their own (``videor4 micro-data --pretrain N`` → ``pretrain.npz``, never a train
or test video), with the benchmark's view and executor geometry, after a text step of its own:

0. **text** (:func:`pretrain_text`, off by default): the language model learns to copy from its context
   (induction heads) on random token sequences that repeat, as an LLM learns it from its text pretraining. Without
   it, after DRP-SFT the model restates the question's colour at chance. With it, and with SFT replaying copy
   sequences (``sft.replay.copy_per_step``), the colour is restated right 170 times in 170, but the first box is
   no better (6 of 98) and neither is accuracy, so the step stays off by default (docs/learning_benchmark.md);
1. **vision** (:func:`pretrain_vision`): the encoder alone, with small heads thrown away afterwards (as CLIP/OCR
   pretraining is): the two digits of a crop or of a lit big sign from the image's visual tokens in raster order
   (a linear read-out of their concatenation; a read-out of their mean stayed at chance, the mean loses the
   digits' order), the sign colour under each visual token, and each token's centre (Qwen2.5-VL's encoder has
   only relative positions, and a box is written from them);
2. **language alignment** (:func:`pretrain_language`, LLaVA's stage-1 idea): the whole model answers single-turn
   questions about those images — read a crop, read a big sign, the box of a sign's text, in which frames a sign
   is — through the chat rendering every stage uses (``contracts.chat``). **Every answer weighs the same** in the
   loss, not every token: a box answer is ~25 tokens and a reading 3, and with a per-token mean the boxes took the
   gradient (600 steps of 32: crop reading 4.2 % exact against 75 % with the reading questions alone). Batches
   that hold every kind equally often were measured too, and read worse (31.5 % against 72 % of unseen crops):
   reading, the skill the curriculum needs most, then gets a quarter of the batch.

Held-out figures are on **whole scenes** never trained on (:func:`held_out_scenes`): a sign is seen in up to eight
frames, so a crop held out alone has near-twins in training and would measure recall, not reading.

Tools, reasoning and the benchmark's questions are left to the curriculum.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from videor4.contracts.errors import UserError

PRETRAIN_FILE = "pretrain.npz"
DIGITS = 2  # the micro benchmark's answers are two-digit numbers
QA_KINDS = ("read_crop", "read_frame", "box", "images")
COPY_PER_STEP = 8  # copy sequences added to each alignment step after the text step (pretrain_language)


PretrainSet = dict[str, np.ndarray]


def load_pretrain_set(data: str | Path | PretrainSet) -> PretrainSet:
    """All arrays of a ``pretrain.npz`` (or the folder holding it), decompressed once: indexing an ``NpzFile``
    re-reads the array every time. An already loaded set is returned as it is, so that building the base loads
    the file once for both pretraining steps."""
    if isinstance(data, dict):
        return data
    path = Path(data)
    path = path / PRETRAIN_FILE if path.is_dir() else path
    if not path.is_file():
        raise UserError(f"{path}: no pretraining images (write them with `videor4 micro-data --pretrain N`)")
    with np.load(path) as npz:
        return {k: npz[k] for k in npz.files}


def pretrain_questions(d: PretrainSet, data: str | Path | PretrainSet) -> list[dict[str, Any]]:
    """The single-turn questions of a loaded pretraining set (``qa``), each with its ``kind``."""
    items = json.loads(str(d["qa"]))
    if "crop_scene" not in d or any(i.get("kind") not in QA_KINDS or "scene" not in i for i in items):
        where = "the pretraining set" if isinstance(data, dict) else str(data)
        raise UserError(f"{where}: pretraining questions without their kind or scene (written by an older `videor4 "
                        "micro-data`?); render them again with `videor4 micro-data --pretrain N`")
    return items


def held_out_scenes(d: dict[str, np.ndarray], fraction: float, seed: int) -> set[int]:
    """Scenes whose images and questions are never trained on: whole scenes, because a sign is seen in several
    frames (the same number in near-identical crops), so holding out single images would test recall."""
    scenes = np.unique(np.concatenate([d["crop_scene"], d["frame_scene"]]))
    n = max(1, int(round(len(scenes) * fraction)))
    if n >= len(scenes):
        raise UserError(f"{len(scenes)} pretraining scenes: too few to hold out {n}; render more (`--pretrain N`)")
    return {int(x) for x in np.random.default_rng(seed).permutation(scenes)[:n]}


def _max_tokens(sizes: np.ndarray, merge: int) -> int:
    return int(max((h // (14 * merge)) * (w // (14 * merge)) for h, w in sizes))


def _digits(texts: np.ndarray) -> np.ndarray:
    out = np.full((len(texts), DIGITS), -100, np.int64)
    for k, t in enumerate(texts):
        t = str(t)
        if len(t) == DIGITS and t.isdigit():
            out[k] = [int(c) for c in t]
    return out


def _images(arr: np.ndarray, sizes: np.ndarray, idx: Any) -> list[np.ndarray]:
    return [np.ascontiguousarray(arr[i, : sizes[i][0], : sizes[i][1]]) for i in idx]


def encode_question(d: PretrainSet, processor: Any, item: dict[str, Any], with_answer: bool = True) -> Any:
    """One pretraining question as a single-turn chat (its crop or frames, then the question), encoded by
    ``contracts.chat`` like every stage's conversations; the loss mask covers the answer only."""
    from videor4.contracts.chat import encode_chat

    if "crop" in item:
        images = _images(d["crops"], d["crop_sizes"], [item["crop"]])
    else:
        images = _images(d["frames"], d["frame_sizes"], item["frames"])
    content: list[dict[str, Any]] = []
    for k in range(len(images)):
        if len(images) > 1:
            content.append({"type": "text", "text": f"Image {k + 1}:\n"})
        content += [{"type": "image"}, {"type": "text", "text": "\n"}]
    content.append({"type": "text", "text": item["question"]})
    messages = [{"role": "user", "content": content}]
    if not with_answer:
        return encode_chat(processor, messages, images, add_generation_prompt=True)
    return encode_chat(processor, messages + [{"role": "assistant", "content": item["answer"]}], images)


def per_answer_loss(logp: Any, mask: Any) -> Any:
    """Mean NLL of each sequence's answer tokens, then the mean over sequences: **every answer weighs the same**,
    not every token (a box answer is ~25 tokens and a reading 3; see the module doc)."""
    return (-(logp * mask).sum(1) / mask.sum(1).clamp(min=1)).mean()


class ReplayQuestions:
    """The base's pretraining questions, replayed in SFT steps (``SFTConfig.replay``).

    Why: SFT on a few hundred trajectories trains the protocol's wording, nearly every token of its loss, and the
    base's reading is lost (micro benchmark: after DRP-SFT the model reads the gold view of 8 of 86 held-out
    trajectories, with replay 37). The draw of step ``s`` on rank ``r`` is a pure function of ``(seed, s, r)``,
    so a resumed run replays the same questions; the base's held-out scenes are never replayed.
    ``copy_per_step`` > 0 also replays :class:`CopySequences`, as alignment does after the text step: DRP-SFT
    without them erases the base's copying (seed 0: 0.80 of held-out sequences copied whole before, 0 after; with
    8 a step, 0.85 after)."""

    def __init__(self, questions: str | Path, processor: Any, *, per_step: int, seed: int, held_out: float,
                 held_out_seed: int, data_root: str | Path | None = None, copy_per_step: int = 0):
        path = Path(questions)
        if not path.is_absolute() and data_root is not None:
            path = Path(data_root) / path
        self.d = load_pretrain_set(path)
        items = pretrain_questions(self.d, path)
        held = held_out_scenes(self.d, held_out, held_out_seed) if held_out > 0 else set()
        self.items = [i for i in items if i["scene"] not in held]
        if not self.items:
            raise UserError(f"{path}: no pretraining questions left to replay outside the held-out scenes")
        self.processor, self.per_step, self.seed = processor, per_step, seed
        self.copy_per_step = copy_per_step
        self.copies = CopySequences(processor.tokenizer, seed) if copy_per_step else None

    def draw(self, step: int, rank: int = 0) -> list[dict[str, Any]]:
        rng = np.random.default_rng([self.seed, step, rank])
        return [self.items[i] for i in rng.choice(len(self.items), min(self.per_step, len(self.items)), replace=False)]

    def batch(self, step: int, rank: int = 0) -> list[Any]:
        return [encode_question(self.d, self.processor, item) for item in self.draw(step, rank)]

    def copy_batch(self, step: int, rank: int = 0) -> tuple[Any, Any, Any] | None:
        """This step's copy sequences (``copy_per_step`` of them; None when copying is not replayed)."""
        return self.copies.draw(self.copy_per_step, step, rank) if self.copies is not None else None


def answer_box_iou(answer: str, predicted: str) -> float:
    """IoU of the boxes written in two answers (their last four numbers, ``[x1, y1, x2, y2]``); 0 when the
    prediction holds no box. Exact digits are the wrong score for a box: one off in the third decimal is a
    perfect crop, and "0 % exact" hid whether a model grounds at all (measured: it wrote one mean box)."""
    import re

    from videor4.contracts.boxes import box_iou

    def numbers(text: str) -> list[float]:
        return [float(v) for v in re.findall(r"\d+(?:\.\d+)?", text)][-4:]

    a, p = numbers(answer), numbers(predicted)
    return box_iou(a, p) if len(a) == 4 and len(p) == 4 else 0.0


def any_sign_box_rate(questions: Sequence[dict[str, Any]], asked: Sequence[dict[str, Any]]) -> float | None:
    """The share of ``asked`` box questions that a model knowing *where the signs are* but not *which one is
    asked* gets right (IoU ≥ 0.5): for each, the mean hit rate of the boxes of every sign of the same frames
    (``questions`` of the same scene and frames). It is the bar a box score has to clear to show grounding:
    measured on 2,700 pretraining scenes, box-only alignment plateaus at 33-34 % held out where this rate is 34 %,
    and on 270 scenes it reaches 73 % on training scenes while held-out scenes stay at 18-26 % (memorised).
    None when ``asked`` holds no box question: there is no bar to report, and 0 would read as one."""

    def frame(q: dict[str, Any]) -> tuple[Any, ...]:  # a frame index repeats across scenes
        return q["scene"], tuple(q["frames"])

    same: dict[tuple[Any, ...], list[str]] = {}
    for q in questions:
        if q["kind"] == "box":
            same.setdefault(frame(q), []).append(q["answer"])
    rates = [float(np.mean([answer_box_iou(q["answer"], other) >= 0.5 for other in same[frame(q)]]))
             for q in asked if q["kind"] == "box"]
    return round(float(np.mean(rates)), 3) if rates else None


def _progress(total: int, desc: str) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="step", mininterval=2.0)


def _fit(params: list[Any], optimizer: Any, steps: int, desc: str, step_loss: Any) -> None:
    """``steps`` optimizer steps on ``step_loss()`` (gradients clipped at norm 1), with a progress bar."""
    import torch

    bar = _progress(steps, desc)
    for _ in range(steps):
        loss = step_loss()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        bar.update(1)
        bar.set_postfix(loss=f"{float(loss.detach()):.3f}", refresh=False)
    bar.close()


def _save(model: Any, processor: Any, out_dir: Path) -> None:
    model.eval()
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    processor.save_pretrained(out_dir)


class CopySequences:
    """Random token sequences in which a segment comes back two more times after noise
    (``noise · seg · noise · seg · noise · seg``), over the tokenizer's ordinary tokens. Predicting the repeats'
    tokens after their first is possible only by copying from the context: the task on which induction heads form
    (Olsson et al., 2022, "In-context learning and induction heads"). ``held_out`` is a fixed set never trained
    on."""

    def __init__(self, tokenizer: Any, seed: int, held_out: int = 256):
        special = set(tokenizer.all_special_ids) | {tokenizer.convert_tokens_to_ids(t) for t in (
            "<|image_pad|>", "<|video_pad|>", "<|vision_start|>", "<|vision_end|>")}
        self.vocab = np.array([i for i in range(len(tokenizer)) if i not in special])
        self.pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else int(min(special))
        self.seed = seed
        self.rng = np.random.default_rng([seed, 0])
        self.held_out = self._batch(np.random.default_rng([seed, 1]), held_out)

    def batch(self, n: int) -> tuple[Any, Any, Any]:
        return self._batch(self.rng, n)

    def draw(self, n: int, step: int, rank: int = 0) -> tuple[Any, Any, Any]:
        """The ``n`` sequences of step ``step`` on rank ``rank``: a pure function of ``(seed, step, rank)``, so a
        resumed SFT run replays the same ones (:class:`ReplayQuestions` draws its questions the same way)."""
        return self._batch(np.random.default_rng([self.seed, 2, step, rank]), n)

    def _batch(self, rng: np.random.Generator, n: int) -> tuple[Any, Any, Any]:
        """(input ids, attention mask, loss mask): the mask marks the repeats' tokens after their first."""
        import torch

        seqs, masks = [], []
        for _ in range(n):
            seg = rng.choice(self.vocab, int(rng.integers(8, 41)))
            parts, m = [], []
            for k in range(3):
                noise = rng.choice(self.vocab, int(rng.integers(0, 21)))
                parts += [noise, seg]
                m += [np.zeros(len(noise), bool), np.r_[False, np.full(len(seg) - 1, k > 0)]]
            seqs.append(np.concatenate(parts))
            masks.append(np.concatenate(m))
        width = max(len(x) for x in seqs)
        ids = torch.full((n, width), self.pad, dtype=torch.long)
        attention, mask = torch.zeros(n, width, dtype=torch.long), torch.zeros(n, width, dtype=torch.bool)
        for k, (x, m) in enumerate(zip(seqs, masks)):
            ids[k, : len(x)], attention[k, : len(x)] = torch.from_numpy(x), 1
            mask[k, : len(x)] = torch.from_numpy(m)
        return ids, attention, mask


def copy_loss(model: Any, batch: tuple[Any, Any, Any]) -> tuple[Any, float]:
    """Mean next-token loss on the repeats' tokens and the share of sequences copied whole (every such token the
    argmax)."""
    import torch

    ids, attention, mask = batch
    logits = model(input_ids=ids, attention_mask=attention, use_cache=False).logits[:, :-1].float()
    target, m = ids[:, 1:], mask[:, 1:]
    loss = torch.nn.functional.cross_entropy(logits[m], target[m])
    return loss, float(((logits.argmax(-1) == target) | ~m).all(1).float().mean())


def held_out_copying(model: Any, sequences: CopySequences) -> float:
    import torch

    was_training = model.training
    model.eval()
    with torch.no_grad():
        _, copied = copy_loss(model, sequences.held_out)
    model.train(was_training)
    return round(copied, 3)


def pretrain_text(model_dir: str | Path, out_dir: str | Path | None = None, *, steps: int = 1500,
                  batch_size: int = 32, learning_rate: float = 1e-3, seed: int = 0) -> dict[str, Any]:
    """Teach the language model of ``model_dir`` to **copy from its context** (the step an LLM's text pretraining
    gives it) on :class:`CopySequences`, and save it to ``out_dir``.

    Why: a pretrained 7B model copies from its context before any VQA training; the micro model from random init
    does not, and nothing in the curriculum teaches it in isolation. Measured after DRP-SFT without this step,
    teacher-forced on the test split's gold trajectories: the colour the question names is restated right 10
    times in 70 (chance among 8 colours: 1 in 8). Returns the share of held-out sequences copied whole, before
    and after (seed 0: 0 -> 0.875; the loss sits at the unigram plateau for ~850 steps, then falls)."""
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    model_dir = Path(model_dir)
    out_dir = Path(out_dir) if out_dir is not None else model_dir
    torch.manual_seed(seed)
    model = AutoModelForImageTextToText.from_pretrained(model_dir, dtype=torch.float32)
    processor = AutoProcessor.from_pretrained(model_dir)
    sequences = CopySequences(processor.tokenizer, seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate)
    before = held_out_copying(model, sequences)
    started, cpu = time.time(), time.process_time()
    model.train()
    _fit(list(model.parameters()), optimizer, steps, "micro-model text",
         lambda: copy_loss(model, sequences.batch(batch_size))[0])
    result = {"steps": steps, "batch_size": batch_size, "held_out_copied_before": before,
              "held_out_copied": held_out_copying(model, sequences), "seconds": round(time.time() - started, 1),
              "cpu_seconds": round(time.process_time() - cpu, 1)}
    _save(model, processor, out_dir)
    return result


def pretrain_vision(model_dir: str | Path, data: str | Path | PretrainSet, out_dir: str | Path | None = None, *,
                    steps: int = 800, batch_size: int = 32, learning_rate: float = 1e-3,
                    seed: int = 0, held_out: float = 0.1) -> dict[str, Any]:
    """Pretrain the vision encoder of the checkpoint in ``model_dir`` on ``data`` and save the model to ``out_dir``
    (default: in place). Returns read-out accuracies on the images of the ``held_out`` fraction of scenes (never
    trained on) and timings."""
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    model_dir = Path(model_dir)
    out_dir = Path(out_dir) if out_dir is not None else model_dir
    d = load_pretrain_set(data)
    torch.manual_seed(seed)
    model = AutoModelForImageTextToText.from_pretrained(model_dir, dtype=torch.float32)
    processor = AutoProcessor.from_pretrained(model_dir)
    vision = model.model.visual
    width = model.config.text_config.hidden_size
    n_colours = int(d["frame_colours"].max()) + 1
    merge = processor.image_processor.merge_size
    tokens_per = {"crop": _max_tokens(d["crop_sizes"], merge), "frame": _max_tokens(d["frame_sizes"], merge)}
    heads = torch.nn.ModuleDict({
        "crop_read": torch.nn.Linear(width * tokens_per["crop"], DIGITS * 10),
        "frame_read": torch.nn.Linear(width * tokens_per["frame"], DIGITS * 10),
        "colour": torch.nn.Linear(width, max(n_colours, 2)), "position": torch.nn.Linear(width, 2)})
    params = list(vision.parameters()) + list(heads.parameters())
    optimizer = torch.optim.AdamW(params, lr=learning_rate)

    n_crops, n_frames = len(d["crops"]), len(d["frames"])
    rng = np.random.default_rng(seed)
    held = held_out_scenes(d, held_out, seed)
    held_crop = np.isin(d["crop_scene"], list(held))
    held_frame = np.isin(d["frame_scene"], list(held))
    held_crops, train_crops = np.flatnonzero(held_crop), np.flatnonzero(~held_crop)
    held_frames, train_frames = np.flatnonzero(held_frame), np.flatnonzero(~held_frame)

    def read(kind: str, per_image: list[Any], texts: np.ndarray) -> tuple[Any, Any]:
        """Digits from the image's tokens laid out in raster order (zero-padded): a read-out that knows which
        token is where, as the language model does through its rotary positions."""
        n = tokens_per[kind]
        rows = torch.stack([torch.cat([t.reshape(-1), t.new_zeros(width * (n - len(t)))]) for t in per_image])
        logits = heads[f"{kind}_read"](rows).view(-1, DIGITS, 10)
        target = torch.from_numpy(_digits(texts))
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, 10), target.reshape(-1), ignore_index=-100)
        ok = (logits.argmax(-1) == target).all(1) & (target[:, 0] >= 0)
        return loss, ok

    def forward(crop_idx: np.ndarray, frame_idx: np.ndarray) -> dict[str, Any]:
        images = _images(d["crops"], d["crop_sizes"], crop_idx) + _images(d["frames"], d["frame_sizes"], frame_idx)
        enc = processor.image_processor(images=images, return_tensors="pt")
        out = vision(enc["pixel_values"], grid_thw=enc["image_grid_thw"])
        tokens = out.pooler_output if getattr(out, "pooler_output", None) is not None else out.last_hidden_state
        grids = enc["image_grid_thw"]
        counts = [int(g.prod()) // merge ** 2 for g in grids]
        per_image = list(tokens.split(counts))
        nc = len(crop_idx)
        losses, oks = {}, {}
        losses["crop_read"], oks["crop"] = read("crop", per_image[:nc], d["crop_text"][crop_idx])
        has_big = np.array([len(str(t)) == DIGITS for t in d["frame_text"][frame_idx]], bool)
        losses["frame_read"], oks["frame"] = read("frame", per_image[nc:], d["frame_text"][frame_idx])
        if not has_big.any():
            losses["frame_read"] = losses["frame_read"].new_zeros(())
        frame_tokens = tokens[sum(counts[:nc]):]
        colours = torch.from_numpy(np.concatenate([d["frame_colours"][i][:c] for i, c in zip(frame_idx,
                                                                                              counts[nc:])]))
        colour = heads["colour"](frame_tokens)
        losses["colour"] = torch.nn.functional.cross_entropy(colour, colours)
        centres = []
        for g in grids:
            h, w = int(g[1]) // merge, int(g[2]) // merge
            yy, xx = np.meshgrid((np.arange(h) + 0.5) / h, (np.arange(w) + 0.5) / w, indexing="ij")
            centres.append(np.stack([xx.reshape(-1), yy.reshape(-1)], 1))
        centres_t = torch.from_numpy(np.concatenate(centres)).float()
        position = heads["position"](tokens)
        losses["position"] = torch.nn.functional.mse_loss(position, centres_t) * 10
        return {"losses": losses, "crop_ok": oks["crop"], "frame_ok": oks["frame"][torch.from_numpy(has_big)],
                "colour_ok": (colour.argmax(-1) == colours).float().mean(),
                "position_err": (position - centres_t).abs().mean()}

    def evaluate() -> dict[str, float]:
        vision.eval()
        with torch.no_grad():
            r = forward(held_crops, held_frames)
        vision.train()
        return {"crop_read_acc": round(float(r["crop_ok"].float().mean()), 4),
                "frame_read_acc": round(float(r["frame_ok"].float().mean()), 4) if len(r["frame_ok"]) else None,
                "colour_acc": round(float(r["colour_ok"]), 4), "position_err": round(float(r["position_err"]), 4)}

    started, cpu = time.time(), time.process_time()
    vision.train()
    crops_per_batch = batch_size * 3 // 5  # crops are the harder read-out: three in five images

    def step_loss() -> Any:
        r = forward(rng.choice(train_crops, min(crops_per_batch, len(train_crops)), replace=False),
                    rng.choice(train_frames, min(batch_size - crops_per_batch, len(train_frames)), replace=False))
        return sum(r["losses"].values())

    _fit(params, optimizer, steps, "micro-model vision", step_loss)
    result = {"steps": steps, "batch_size": batch_size, "held_out": evaluate(),
              "held_out_images": {"crops": len(held_crops), "frames": len(held_frames), "scenes": len(held)},
              "images": {"crops": n_crops, "frames": n_frames},
              "seconds": round(time.time() - started, 1), "cpu_seconds": round(time.process_time() - cpu, 1)}
    _save(model, processor, out_dir)
    return result


def pretrain_language(model_dir: str | Path, data: str | Path | PretrainSet, out_dir: str | Path | None = None, *,
                      steps: int = 1200, batch_size: int = 32, learning_rate: float = 1e-3, seed: int = 0,
                      kinds: tuple[str, ...] = QA_KINDS, held_out: float = 0.1,
                      copy_per_step: int = 0) -> dict[str, Any]:
    """Teach the whole model the pretraining set's single-turn questions of ``kinds`` (chat rendering of
    ``contracts.chat``, loss on the answer tokens only, each answer weighted equally) and save it to ``out_dir``.

    Returns, per question kind, the exact-answer rate on the questions of the ``held_out`` fraction of scenes
    (never trained on; the same scenes as :func:`pretrain_vision` holds out for the same seed), before and after
    (teacher-forced argmax on every answer token: the same as greedy decoding getting the whole answer right),
    and for boxes the greedy answers' mean IoU and share with IoU ≥ 0.5 (:func:`answer_box_iou`).
    ``box_iou50_any_sign`` is what that share would be for a model that boxes a sign of the asked frame at random
    (:func:`any_sign_box_rate`): box scores at or under it show no grounding.

    ``copy_per_step`` > 0 adds as many :class:`CopySequences` to every step (their loss added to the answers'):
    without them alignment erases the copying that :func:`pretrain_text` taught (seed 0: 0.875 of held-out
    sequences copied whole before 1,200 steps of alignment, 0 after). The held-out copy rate is reported."""
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from videor4.training.rollout import HFEngine, HFEngineConfig, PromptState
    from videor4.training.stage_trainer import batch_inputs

    unknown = sorted(set(kinds) - set(QA_KINDS))
    if unknown:
        raise UserError(f"unknown pretraining question kinds {unknown}; kinds: {', '.join(QA_KINDS)}")
    model_dir = Path(model_dir)
    out_dir = Path(out_dir) if out_dir is not None else model_dir
    d = load_pretrain_set(data)
    items = [i for i in pretrain_questions(d, data) if i["kind"] in kinds]
    scenes = held_out_scenes(d, held_out, seed)
    pick = np.random.default_rng(seed + 1)  # up to 200 per kind, spread over all held-out scenes
    held = []
    for kind in kinds:
        pool = [i for i in items if i["scene"] in scenes and i["kind"] == kind]
        held += [pool[k] for k in sorted(pick.permutation(len(pool))[:200])]
    train = [i for i in items if i["scene"] not in scenes]
    torch.manual_seed(seed)
    model = AutoModelForImageTextToText.from_pretrained(model_dir, dtype=torch.float32)
    processor = AutoProcessor.from_pretrained(model_dir)
    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate)
    sequences = CopySequences(processor.tokenizer, seed)

    def encode(item: dict[str, Any], with_answer: bool = True) -> Any:
        return encode_question(d, processor, item, with_answer)

    def loss_and_exact(encoded: list[Any]) -> tuple[Any, list[bool]]:
        batch, mask = batch_inputs([(e.input_ids, e.loss_mask, e.images) for e in encoded], processor)
        out = model(**batch, use_cache=False)
        logits = out.logits[:, :-1].float()
        targets = batch["input_ids"][:, 1:]
        m = mask[:, 1:]
        logp = logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1) - logits.logsumexp(-1)
        exact = ((logits.argmax(-1) == targets) | (m == 0)).all(1)
        return per_answer_loss(logp, m), exact.tolist()

    rng = np.random.default_rng(seed)
    held_enc = [encode(i) for i in held]
    held_boxes = [i for i in held if i["kind"] == "box"][:100]
    engine = HFEngine(model, processor, HFEngineConfig(batch_size=20, device="cpu", dtype="float32"))

    def draw() -> list[int]:
        return rng.choice(len(train), min(batch_size, len(train)), replace=False).tolist()

    def box_scores() -> dict[str, float]:
        prompts = [encode(i, with_answer=False) for i in held_boxes]
        out = engine.generate([PromptState(list(e.input_ids), [], e.images) for e in prompts],
                              [40] * len(prompts), ["<|im_end|>"])
        ious = [answer_box_iou(i["answer"], g.text) for i, g in zip(held_boxes, out)]
        return {"box_iou": round(float(np.mean(ious)), 3), "box_iou50": round(float(np.mean(np.array(ious) >= 0.5)), 3)}

    def evaluate() -> dict[str, float]:
        model.eval()
        right: dict[str, list[bool]] = {}
        with torch.no_grad():
            for start in range(0, len(held_enc), 50):
                _, exact = loss_and_exact(held_enc[start:start + 50])
                for item, good in zip(held[start:start + 50], exact):
                    right.setdefault(item["kind"], []).append(good)
            scores = {k: round(sum(v) / len(v), 3) for k, v in sorted(right.items())}
            if held_boxes:
                scores.update(box_scores())
        model.train()
        return scores

    before = evaluate()
    copied_before = held_out_copying(model, sequences)
    started, cpu = time.time(), time.process_time()
    model.train()

    def step_loss() -> Any:
        loss, _ = loss_and_exact([encode(train[i]) for i in draw()])
        return loss + copy_loss(model, sequences.batch(copy_per_step))[0] if copy_per_step else loss

    _fit(list(model.parameters()), optimizer, steps, "micro-model language", step_loss)
    result = {"steps": steps, "batch_size": batch_size, "kinds": list(kinds), "questions": len(items),
              "held_out_questions": {k: sum(i["kind"] == k for i in held) for k in kinds},
              "held_out_exact_before": before, "held_out_exact": evaluate(),
              "box_iou50_any_sign": any_sign_box_rate(items, held_boxes),
              "copy_per_step": copy_per_step,
              "held_out_copied_before": copied_before, "held_out_copied": held_out_copying(model, sequences),
              "seconds": round(time.time() - started, 1), "cpu_seconds": round(time.process_time() - cpu, 1)}
    _save(model, processor, out_dir)
    return result


def build_micro_base(out_dir: str | Path, data: str | Path | Sequence[str | Path] | None, *, seed: int = 0,
                     text_steps: int = 0, vision_steps: int = 800, language_steps: int = 1200) -> dict[str, Any]:
    """Random-init micro Qwen2.5-VL, then text pretraining (copying from the context), vision pretraining and
    language alignment, in ``out_dir``; the report (held-out figures of each step) is also written to
    ``out_dir/videor4_micro_base.json``.

    ``data`` may be several pretraining sets, a curriculum: vision and alignment on the first, then the vision
    step on each further set in order, then alignment again on the last (``vision_steps`` and ``language_steps``
    each time). Crops cut ever further off-centre (``micro-data --pretrain-crop-margin``) are read this way and
    not otherwise (seed 0, docs/learning_benchmark.md): trained on off-centre crops from random init the encoder
    stays at chance, and aligned on the last set alone the language model reads 14 % of them; this way 60 % of
    crops with margins of 0.5–1.2 text heights, where the one-set base reads 7 %."""
    from videor4.training.tiny_model import build_tiny_model

    paths = [] if data is None else [data] if isinstance(data, (str, Path)) else list(data)
    if (vision_steps or language_steps) and not paths:
        raise UserError("pretraining needs --pretrain (the pretrain.npz of `videor4 micro-data --pretrain N`)")
    sets = []
    for path in paths:  # a missing or outdated file is a one-line error before the model is built
        loaded = load_pretrain_set(path)
        pretrain_questions(loaded, path)
        sets.append(loaded)
    out_dir = Path(out_dir)
    build_tiny_model(out_dir, seed=seed, size="micro")
    report: dict[str, Any] = {"model": str(out_dir), "seed": seed, "pretrain": [str(p) for p in paths],
                              "text": None, "vision": None, "language": None}
    if text_steps:
        report["text"] = pretrain_text(out_dir, steps=text_steps, seed=seed)
    copy = COPY_PER_STEP if text_steps else 0  # copying is kept through alignment only if the text step taught it
    vision: list[dict[str, Any]] = []
    language: list[dict[str, Any]] = []
    for k, d in enumerate(sets):
        if vision_steps:
            vision.append(pretrain_vision(out_dir, d, steps=vision_steps, seed=seed))
        if language_steps and k in (0, len(sets) - 1):  # the first (easiest) set and the last one
            language.append(pretrain_language(out_dir, d, steps=language_steps, seed=seed, copy_per_step=copy))
    report["vision"] = vision[-1] if vision else None  # held out on the last set
    report["language"] = language[-1] if language else None
    if len(sets) > 1:
        report["vision_stages"], report["language_stages"] = vision, language
    (out_dir / "videor4_micro_base.json").write_text(json.dumps(report, indent=2))
    return report


def _run(args: Any) -> int:
    if min(args.text_steps, args.vision_steps, args.language_steps) < 0:
        raise UserError("--text-steps, --vision-steps and --language-steps must not be negative")
    report = build_micro_base(args.out, args.pretrain, seed=args.seed, text_steps=args.text_steps,
                              vision_steps=args.vision_steps, language_steps=args.language_steps)
    print(json.dumps(report, indent=2))
    return 0


def register(sub: Any) -> None:
    p = sub.add_parser(
        "micro-model", help="build the micro Qwen2.5-VL (random init + reading pretraining) for CPU training",
        description="Write a random-init micro Qwen2.5-VL (~2 M parameters, digits one token each) to --out, "
        "optionally teach its language model to copy from its context (--text-steps), "
        "pretrain its vision encoder on the images of `videor4 micro-data --pretrain N` (reading, colours, "
        "positions), then align the whole model on single-turn questions about them (read a crop, read a sign, "
        "where is a sign, in which frames). Prints held-out exact-answer rates before and after (and, for boxes, "
        "the greedy answers' IoU with the true box). The result is "
        "the --model of a micro-scale curriculum (docs/learning_benchmark.md). ~8 min on 2 cores with defaults.")
    p.add_argument("--out", type=Path, required=True, help="model directory to write")
    p.add_argument("--pretrain", type=Path, nargs="+",
                   help="pretrain.npz or the micro-data folder holding it; several (a curriculum, e.g. crops ever "
                   "further off-centre, `micro-data --pretrain-crop-margin`): vision and alignment on the first, "
                   "the vision step on each further one in order, alignment again on the last")
    p.add_argument("--text-steps", type=int, default=0,
                   help="text pretraining steps of 32 sequences, copying from the context (0, the default: skip; "
                   "1500 teach it, docs/learning_benchmark.md)")
    p.add_argument("--vision-steps", type=int, default=800,
                   help="vision pretraining steps of 32 images, on each --pretrain set (0: skip)")
    p.add_argument("--language-steps", type=int, default=1200,
                   help="language alignment steps of 32 questions (0: skip)")
    p.add_argument("--seed", type=int, default=0, help="seed of the weights and the pretraining order")
    p.set_defaults(func=_run, loads_models=True)
