"""Oracle visual tokens for the micro base model: is the box-grounding plateau the language model's or the
encoder's? (docs/learning_benchmark.md, "Oracle visual tokens"). An experiment harness, not a pipeline step:
it is kept so that the page's figures can be re-run and compared, which the first oracle run's could not.

Phases, each a separate run over one work folder:

* ``A``: a random-init micro Qwen2.5-VL's language model learns the box questions of a pretraining set
  (``videor4 micro-data --pretrain N``) with the vision encoder's output replaced by **oracle tokens**: per merged
  token a learned embedding of its grid position, and on the token under a sign's text centre a learned embedding
  of the sign's colour and of its box (``--box-emb``). Held-out scenes are scored with greedy boxes (IoU >= 0.5)
  against the any-sign bar (``micro_base.any_sign_box_rate``). ``--init resume`` continues a saved run;
  ``--permute`` relabels each training question's frame colours at random (no colour tied to a layout).
* ``B``: the real encoder (random init, or the one of ``--init MODEL_DIR``) is **distilled** into the frozen
  oracle tokens of ``A`` (mean squared error, sign tokens weighted ``--sign-weight``); the language model of ``A``
  is then scored on the encoder's tokens.
* ``C``: box alignment of the whole model of ``--init MODEL_DIR`` through the real encoder.
* ``E``: ``A``'s model scored on held-out scenes and on training scenes (memorised or bound?).

Measured on 2 CPU cores, one core a run (0.56 s a step of 32 for ``A``, 0.35 s for ``B``). Example::

    videor4 micro-data --out data/pt --pretrain 3000 --pretrain-crop-margin 0.4 1.3 --seed 0 --train 0 --test 0
    python benchmarks/oracle_tokens.py --phase A --data data/pt --work runs/oracle
    python benchmarks/oracle_tokens.py --phase B --data data/pt --work runs/oracle
"""
import argparse
import collections
import json
import re
import sys
import time
from pathlib import Path

import numpy as np
import torch
from transformers import AutoModelForImageTextToText, AutoProcessor
from transformers.modeling_outputs import BaseModelOutputWithPooling

from videor4.training import micro_base as mb
from videor4.training.rollout import HFEngine, HFEngineConfig, PromptState
from videor4.training.stage_trainer import batch_inputs
from videor4.training.tiny_model import build_tiny_model

p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
p.add_argument("--data", required=True, help="pretraining set (folder holding pretrain.npz)")
p.add_argument("--work", required=True, help="work folder: models, oracle embeddings and <phase><tag>.log")
p.add_argument("--phase", choices=["A", "B", "C", "E"], required=True, help="see the module doc")
p.add_argument("--steps", type=int, default=2500)
p.add_argument("--eval-every", type=int, default=500, help="score held-out boxes every N steps")
p.add_argument("--init", default="", help="A: 'resume'; B: encoder from this model dir (default: random init); "
               "C: the model dir to align")
p.add_argument("--sign-weight", type=float, default=4.0, help="B: loss weight of sign tokens against the others")
p.add_argument("--tag", default="", help="suffix of B's model folder and of the log")
p.add_argument("--box-emb", choices=["linear", "digits"], default="linear",
               help="oracle box: a linear map of its four numbers, or the sum of embeddings of their 12 digits")
p.add_argument("--seed", type=int, default=0)
p.add_argument("--permute", action="store_true", help="A: permute each training question's frame colours")
p.add_argument("--lr", type=float, default=1e-3)
args = p.parse_args()
torch.manual_seed(args.seed)
Path(args.work).mkdir(parents=True, exist_ok=True)
log = open(f"{args.work}/{args.phase}{args.tag}.log", "a")


def say(*a):
    print(*a, file=log, flush=True)


d = mb.load_pretrain_set(args.data)
items = mb.pretrain_questions(d, args.data)
boxes = [i for i in items if i["kind"] == "box"]
held_scenes = mb.held_out_scenes(d, 0.1, 0)
held_pool = [i for i in boxes if i["scene"] in held_scenes]
held = [held_pool[k] for k in sorted(np.random.default_rng(1).permutation(len(held_pool))[:150])]
train = [i for i in boxes if i["scene"] not in held_scenes]
colours = sorted({re.match(r"Where is the text of the (\w+) sign", i["question"]).group(1) for i in boxes})
signs = collections.defaultdict(list)  # frame -> [(colour, box)]
for i in boxes:
    c = colours.index(re.match(r"Where is the text of the (\w+) sign", i["question"]).group(1))
    signs[i["frames"][0]].append((c, [float(v) for v in re.findall(r"\d+(?:\.\d+)?", i["answer"])][-4:]))
say("bar", mb.any_sign_box_rate(items, held), "held", len(held), "train", len(train), "colours", colours)

work = args.work
if args.phase == "A" and args.init == "resume":
    src = f"{work}/A_model"
elif args.phase == "A":
    build_tiny_model(f"{work}/init", seed=args.seed, size="micro")
    src = f"{work}/init"
else:
    src = args.init if args.phase == "C" else f"{work}/A_model"
model = AutoModelForImageTextToText.from_pretrained(src, dtype=torch.float32)
processor = AutoProcessor.from_pretrained(src)
W = model.config.text_config.hidden_size
visual = model.model.visual
real_forward = visual.forward
ROWS, COLS = 3, 4


class Oracle(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.pos = torch.nn.Embedding(ROWS * COLS, W)
        self.colour = torch.nn.Embedding(len(colours), W)
        self.box = torch.nn.Linear(4, W)
        self.digits = torch.nn.Embedding(4 * 3 * 10, W)

    def box_vec(self, b):
        if args.box_emb == "linear":
            return self.box(torch.tensor(b))
        idx = []
        for j, v in enumerate(b):
            s = f"{min(int(round(v * 1000)), 999):03d}"
            idx += [(j * 3 + k) * 10 + int(ch) for k, ch in enumerate(s)]
        return self.digits.weight[idx].sum(0)

    def tokens(self, f):
        f, perm = f if isinstance(f, tuple) else (f, None)
        t = self.pos.weight.clone()
        for c, b in signs[f]:
            c = c if perm is None else int(perm[c])
            cx, cy = (b[0] + b[2]) / 2, (b[1] + b[3]) / 2
            k = min(int(cy * ROWS), ROWS - 1) * COLS + min(int(cx * COLS), COLS - 1)
            t[k] = t[k] + self.colour.weight[c] + self.box_vec(b)
        return t

    def sign_mask(self, f):
        m = torch.zeros(ROWS * COLS)
        for c, b in signs[f]:
            cx, cy = (b[0] + b[2]) / 2, (b[1] + b[3]) / 2
            m[min(int(cy * ROWS), ROWS - 1) * COLS + min(int(cx * COLS), COLS - 1)] = 1
        return m


oracle = Oracle()
queue: collections.deque = collections.deque()


def oracle_forward(pixel_values, grid_thw=None, **kw):
    fs = [queue.popleft() for _ in range(len(grid_thw))]
    for g in grid_thw:
        assert int(g[1]) // 2 == ROWS and int(g[2]) // 2 == COLS, g
    t = torch.cat([oracle.tokens(f) for f in fs])
    return BaseModelOutputWithPooling(last_hidden_state=t, pooler_output=t)


def use_oracle(on):
    visual.forward = oracle_forward if on else real_forward


engine = HFEngine(model, processor, HFEngineConfig(batch_size=25, device="cpu", dtype="float32"))


def box_eval(qs, on):
    model.eval()
    use_oracle(on)
    queue.clear()
    with torch.no_grad():
        prompts = [mb.encode_question(d, processor, i, with_answer=False) for i in qs]
        for i in qs:
            queue.extend(i["frames"])
        out = engine.generate([PromptState(list(e.input_ids), [], e.images) for e in prompts],
                              [40] * len(prompts), ["<|im_end|>"])
    model.train()
    ious = np.array([mb.answer_box_iou(i["answer"], g.text) for i, g in zip(qs, out)])
    return round(float((ious >= 0.5).mean()), 3), round(float(ious.mean()), 3)


def permuted(i):
    perm = rng.permutation(len(colours))
    c = re.match(r"Where is the text of the (\w+) sign", i["question"]).group(1)
    q = dict(i, question=f"Where is the text of the {colours[perm[colours.index(c)]]} sign?")
    q["frames"] = [(f, perm) for f in i["frames"]]
    return q


def box_loss(batch_items, on):
    use_oracle(on)
    queue.clear()
    if args.permute:
        batch_items = [permuted(i) for i in batch_items]
    for i in batch_items:
        queue.extend(i["frames"])
    batch_items = [dict(i, frames=[f[0] if isinstance(f, tuple) else f for f in i["frames"]]) for i in batch_items]
    enc = [mb.encode_question(d, processor, i) for i in batch_items]
    batch, mask = batch_inputs([(e.input_ids, e.loss_mask, e.images) for e in enc], processor)
    logits = model(**batch, use_cache=False).logits[:, :-1].float()
    targets = batch["input_ids"][:, 1:]
    logp = logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1) - logits.logsumexp(-1)
    return mb.per_answer_loss(logp, mask[:, 1:])


rng = np.random.default_rng(args.seed)
t0 = time.time()


def fit(params, step_loss, evaluate):
    """``args.steps`` AdamW steps (gradients clipped at norm 1), the loss logged every 50 and ``evaluate()``
    every ``--eval-every`` steps."""
    opt = torch.optim.AdamW(params, lr=args.lr)
    for step in range(1, args.steps + 1):
        loss = step_loss()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        if step % 50 == 0:
            say(step, round(float(loss.detach()), 4), round(time.time() - t0))
        if step % args.eval_every == 0:
            say("EVAL", step, *evaluate(), round(time.time() - t0))


def train_batch():
    return [train[k] for k in rng.choice(len(train), 32, replace=False)]


if args.phase == "A":
    if args.init == "resume":
        oracle.load_state_dict(torch.load(f"{work}/A_oracle.pt"), strict=False)
    params = [p for n, p in model.named_parameters() if not n.startswith("model.visual")] + list(oracle.parameters())
    fit(params, lambda: box_loss(train_batch(), True), lambda: ("oracle held iou50/iou", box_eval(held, True)))
    model.save_pretrained(f"{work}/A_model")
    processor.save_pretrained(f"{work}/A_model")
    torch.save(oracle.state_dict(), f"{work}/A_oracle.pt")
    sys.exit(0)

oracle.load_state_dict(torch.load(f"{work}/A_oracle.pt"), strict=False)
oracle.requires_grad_(False)
if args.phase == "E":
    tr = [train[k] for k in np.random.default_rng(2).permutation(len(train))[:150]]
    say("E: oracle held", box_eval(held, True), "train scenes", box_eval(tr, True))
    sys.exit(0)
say("start: oracle held", box_eval(held, True))
if args.init and args.phase == "B":
    init = AutoModelForImageTextToText.from_pretrained(args.init, dtype=torch.float32)
    visual.load_state_dict(init.model.visual.state_dict())
elif args.phase == "B":
    fresh = AutoModelForImageTextToText.from_pretrained(f"{work}/init", dtype=torch.float32)
    visual.load_state_dict(fresh.model.visual.state_dict())
say("encoder before distillation: held", box_eval(held, False))
frame_scene = d["frame_scene"]
train_frames = np.array([f for f in signs if int(frame_scene[f]) not in held_scenes])
held_frames = np.array([f for f in signs if int(frame_scene[f]) in held_scenes])


def distil(fs):
    images = mb._images(d["frames"], d["frame_sizes"], fs)
    enc = processor.image_processor(images=images, return_tensors="pt")
    use_oracle(False)
    out = visual(enc["pixel_values"], grid_thw=enc["image_grid_thw"]).pooler_output
    with torch.no_grad():
        tgt = torch.cat([oracle.tokens(f) for f in fs])
        w = 1 + (args.sign_weight - 1) * torch.cat([oracle.sign_mask(f) for f in fs])
    err = ((out - tgt) ** 2).mean(-1)
    return (err * w).sum() / w.sum(), err, w > 1, tgt


def distil_eval():
    with torch.no_grad():
        visual.eval()
        _, err, sign, tgt = distil(held_frames[:300])
        visual.train()
    var = float(((tgt - tgt.mean(0)) ** 2).mean())
    return ("held mse sign/bg", round(float(err[sign].mean()), 4), round(float(err[~sign].mean()), 4),
            "target var", round(var, 4), "box held (A's LM on encoder tokens)", box_eval(held, False))


if args.phase == "B":
    fit(list(visual.parameters()), lambda: distil(rng.choice(train_frames, 32, replace=False))[0], distil_eval)
    model.save_pretrained(f"{work}/B{args.tag}_model")
    processor.save_pretrained(f"{work}/B{args.tag}_model")
else:  # C: joint box fine-tuning of the distilled model through the real encoder
    fit(list(model.parameters()), lambda: box_loss(train_batch(), False), lambda: ("box held", box_eval(held, False)))
say("done", json.dumps({"seconds": round(time.time() - t0)}))
