"""``videor4`` as an lmms-eval model: the rumination runtime answering any lmms-eval task.

lmms-eval (``pip install 'video-r4[eval]'``) finds this model through its ``lmms_eval.models`` entry point
(``--model videor4 --model_args pretrained=DIR,max_calls=4``). Every request runs through the same code as
``videor4 eval run``: :func:`~videor4.training.rollout.run_rollouts` with ``HFEngine`` (or ``VLLMEngine`` on a
GPU), the shared clip/crop executor and chat rendering, and the tool protocol's ``extract_answer``. Only the
source of the pixels changes with the task:

* a video (``doc_to_visual`` gives a path to an ``.mp4``/… file or a frame folder) is opened with
  ``open_video``, as in ``eval run``;
* pages (several PIL images or image paths: a document, a slide deck) or a single image become a
  :class:`PageSequenceReader`, a video at ``page_fps`` (1 page per second by default), so ``clip`` re-reads a
  page range and ``crop`` zooms into a page exactly as they do on video frames.

Multiple-choice prompts (options listed as ``A. …`` / ``(A) …`` lines, as MVBench, Video-MME and Video-MMMU
write them) get the option letter lmms-eval's scorers expect: :func:`choice_letter` maps an answer that names
the option text instead of the letter. ``no_tools=True`` is the single-pass baseline (``eval run --no-tools``).

Only ``generate_until`` tasks are supported: a rumination model answers by generating; loglikelihood scoring of
fixed continuations would bypass the tools it is evaluated for.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
from lmms_eval.api.instance import GenerationResult, Instance, TokenCounts
from lmms_eval.api.model import lmms
from PIL import Image

from videor4.contracts.dataset import VIDEO_SUFFIXES
from videor4.contracts.errors import UserError
from videor4.contracts.media import FRAME_EXTENSIONS, PageSequenceReader
from videor4.contracts.metrics import normalize_answer

MODEL_NAME = "videor4"
_OPTION_LINE = re.compile(r"^\s*\(?([A-Z])[.)]\s*(\S.*?)\s*$", re.MULTILINE)
_LETTER_ONLY = re.compile(r"^\(?([A-Z])\)?\.?$", re.IGNORECASE)
_LETTER_MARK = re.compile(r"^\(?([A-Z])(?:\)|\.|:)")


def lmms_eval_manifests() -> list[Any]:
    """Entry point ``lmms_eval.models: videor4`` (lmms-eval's plug-in registration)."""
    from lmms_eval.models.registry_v2 import ModelManifest

    return [ModelManifest(model_id=MODEL_NAME, simple_class_path=f"{__name__}.VideoR4")]


def media_executor_factory(config: Any, page_fps: float = 1.0, media_config: Any = None) -> Callable[[Any], Any]:
    """Executors for rollout samples holding a video path (``source``) or pages (``meta["pages"]``).

    Videos go through ``video_executor_factory`` (what ``eval run`` uses); pages get a
    :class:`PageSequenceReader` and the executor of the same view (``ShardView.executor``).
    """
    from videor4.contracts.view import ShardView
    from videor4.training.rollout import video_executor_factory

    videos = video_executor_factory(config, media_config)
    view = ShardView(prompt=config.prompt, ops=config.ops)

    def factory(sample: Any) -> Any:
        pages = sample.meta.get("pages")
        if pages is None:
            return videos(sample)
        return view.executor(PageSequenceReader(pages, page_fps, video_id=sample.sample_id))

    return factory


def visual_source(visuals: Any) -> tuple[Path | None, list[Any] | None]:
    """``(video path, None)`` or ``(None, pages)`` for what a task's ``doc_to_visual`` returned."""
    items = [v for v in (visuals if isinstance(visuals, (list, tuple)) else [visuals]) if v is not None]
    if not items:
        raise UserError("the videor4 model needs a video, pages or an image; this task gives none")
    if all(isinstance(v, (str, Path)) for v in items):
        paths = [Path(v) for v in items]
        if len(paths) == 1 and (paths[0].is_dir() or paths[0].suffix.lower() in VIDEO_SUFFIXES):
            return paths[0], None
        if all(p.suffix.lower() in FRAME_EXTENSIONS for p in paths):
            return None, [Image.open(p) for p in paths]
        raise UserError(f"the videor4 model takes one video or a list of images, got paths {[str(p) for p in paths]}")
    if all(isinstance(v, (Image.Image, np.ndarray)) for v in items):
        return None, items
    kinds = sorted({type(v).__name__ for v in items})
    raise UserError(f"the videor4 model takes one video path or images, got {', '.join(kinds)}")


def choice_options(context: str) -> dict[str, str]:
    """``{letter: option text}`` of a multiple-choice prompt (lines ``A. x``, ``(A) x``, ``A) x``), else ``{}``.

    Only a run of consecutive letters from ``A`` counts, so a stray ``I. …`` line is not an option list.
    """
    options: dict[str, str] = {}
    for letter, text in _OPTION_LINE.findall(context):
        expected = chr(ord("A") + len(options))
        if letter == "A" and options:  # a second list restarts: keep the last one (the question's own options)
            options = {}
            expected = "A"
        if letter == expected:
            options[letter] = text
    return options if len(options) >= 2 else {}


def choice_letter(answer: str, context: str) -> str:
    """The option letter an answer picks in a multiple-choice ``context``; ``answer`` unchanged otherwise.

    First rule that applies: the answer is a letter (``B``, ``(B)``, ``B.``); its normalized text equals one
    option's; it starts with a letter mark (``B.``, ``(B)``, ``B:``); exactly one option's text contains it or is
    contained in it, on word boundaries. Text is compared with the official answer normalizer, the project's
    only one.
    """
    options = choice_options(context)
    text = answer.strip()
    if not options or not text:
        return answer
    match = _LETTER_ONLY.match(text)
    if match and match.group(1).upper() in options:
        return match.group(1).upper()
    norm = normalize_answer(text)
    normalized = {letter: normalize_answer(option) for letter, option in options.items()}
    same = [letter for letter, option in normalized.items() if option and option == norm]
    if len(same) == 1:
        return same[0]
    mark = _LETTER_MARK.match(text)
    if mark and mark.group(1) in options:
        return mark.group(1)
    if norm:
        words = f" {norm} "
        overlap = [letter for letter, option in normalized.items()
                   if option and (f" {option} " in words or words in f" {option} ")]
        if len(overlap) == 1:
            return overlap[0]
    return answer


class VideoR4(lmms):
    """lmms-eval model ``videor4``: a Qwen2.5-VL checkpoint answering with clip/crop rumination.

    Model args (``--model_args k=v,…``): ``pretrained`` (checkpoint directory), ``engine`` (``hf`` | ``vllm``),
    ``device``, ``dtype``, ``batch_size`` (questions rolled out together), ``max_calls``, ``no_tools``
    (single-pass baseline), ``frames`` (initial frames), ``max_new_tokens`` (all turns of one question),
    ``page_fps`` (rate at which pages become frames), ``decoder`` (``auto`` | ``opencv`` | ``pyav`` | ``decord``:
    ``decord`` seeks, the others decode from the start, which costs minutes per question on hour-long videos).
    Python callers may pass ``rollout_engine``, an already loaded engine (``eval transfer`` shares one between
    the rumination and the baseline runs).

    A task's own ``max_new_tokens`` is sized for a direct answer; the rollout budget is ``max_new_tokens`` here,
    and decoding is greedy, as in ``eval run``. ``records`` keeps one line per answered request (task, doc,
    answer, stop reason, tool calls and their observations) for reports.
    """

    is_simple = True

    def __init__(
        self,
        pretrained: str | None = None,
        engine: str = "hf",
        device: str | None = "auto",
        dtype: str = "auto",
        batch_size: int | str | None = 1,
        max_calls: int = 4,
        no_tools: bool = False,
        frames: int | None = None,
        max_new_tokens: int = 768,
        page_fps: float = 1.0,
        decoder: str = "auto",
        rollout_engine: Any = None,
        max_batch_size: int | None = None,  # passed by lmms-eval's CLI; batches are ``batch_size`` rollouts
        **unknown: Any,
    ) -> None:
        super().__init__()
        if unknown:
            raise UserError(f"videor4 model: unknown model_args {', '.join(sorted(unknown))}")
        batch = 1 if batch_size in (None, "auto") else int(batch_size)
        for name, value in (("batch_size", batch), ("frames", frames), ("max_new_tokens", max_new_tokens)):
            if value is not None and value < 1:
                raise UserError(f"videor4 model: {name} must be at least 1, got {value}")
        if max_calls < 0 or page_fps <= 0:
            raise UserError("videor4 model: max_calls must not be negative and page_fps must be positive")
        if decoder not in ("auto", "opencv", "pyav", "decord"):
            raise UserError(f"videor4 model: decoder must be auto, opencv, pyav or decord, got {decoder!r}")
        from videor4.contracts.media import MediaConfig

        self.batch_size = batch
        self.page_fps = float(page_fps)
        self.media_config = MediaConfig(decoder=decoder)
        from videor4.training.eval_run import eval_rollout_config

        self.rollout_config = eval_rollout_config(pretrained, frames=frames, max_calls=max_calls, tools=not no_tools,
                                                  max_new_tokens=max_new_tokens)
        self.engine = rollout_engine if rollout_engine is not None else load_engine(
            pretrained, engine, device or "auto", dtype, batch, self.rollout_config.ops.max_images)
        self.pretrained = pretrained
        self.records: list[dict[str, Any]] = []

    def generate_until(self, requests: list[Instance]) -> list[GenerationResult]:
        from tqdm import tqdm

        from videor4.training.rollout import run_rollouts

        factory = media_executor_factory(self.rollout_config, self.page_fps, self.media_config)
        out: list[GenerationResult] = []
        with tqdm(total=len(requests), desc="videor4 rumination", unit="question", disable=self.rank != 0) as bar:
            for start in range(0, len(requests), self.batch_size):
                batch = requests[start : start + self.batch_size]
                samples = [self._sample(r) for r in batch]  # per batch: pages of one batch in memory at a time
                for request, sample, rollout in zip(batch, samples,
                                                    run_rollouts(self.engine, samples, factory, self.rollout_config)):
                    answer = choice_letter(rollout.answer, sample.question)
                    self.records.append({
                        "task": request.args[4], "doc_id": request.args[3], "answer": answer,
                        "extracted": rollout.answer, "stop_reason": rollout.stop_reason,
                        "tool_calls": len(rollout.calls), "final_text": rollout.final_text,
                        "generated_tokens": rollout.generated_tokens,
                        "observations": [{"ok": o.ok, "tool": o.tool, "message": o.message,
                                          "refs": [asdict(r) for r in o.refs]} for o in rollout.observations],
                    })
                    counts = TokenCounts(input_tokens=len(rollout.input_ids) - rollout.generated_tokens,
                                         output_tokens=rollout.generated_tokens)
                    out.append(GenerationResult(answer, counts))
                bar.update(len(batch))
        return out

    def _sample(self, request: Instance) -> Any:
        from videor4.training.rollout import RolloutSample

        context, _gen_kwargs, doc_to_visual, doc_id, task, split = request.args
        video, pages = visual_source(doc_to_visual(self.task_dict[task][split][doc_id]))
        key = f"{task}/{split}/{doc_id}"
        meta: dict[str, Any] = {"task": task, "doc_id": doc_id}
        if pages is not None:
            meta["pages"] = pages
        return RolloutSample(key, context, video or "", (), meta)

    def stop_reasons(self, task: str | None = None) -> Counter[str]:
        return Counter(r["stop_reason"] for r in self.records if task is None or r["task"] == task)

    def loglikelihood(self, requests: list[Instance]) -> list[tuple[float, bool]]:
        raise NotImplementedError("the videor4 model answers by generating with tools; loglikelihood "
                                  "(multiple_choice output_type) tasks are not supported")

    def generate_until_multi_round(self, requests: list[Instance]) -> list[str]:
        raise NotImplementedError("the videor4 model runs its own multi-turn tool loop; "
                                  "multi-round tasks are not supported")


def load_engine(pretrained: str | Path | None, engine: str, device: str = "auto", dtype: str = "auto",
                batch_size: int = 8, max_images: int = 16) -> Any:
    """The rollout engine of ``eval run`` for a checkpoint directory: ``hf`` (any device) or ``vllm`` (GPU)."""
    if not pretrained:
        raise UserError("videor4 model: pass pretrained=<checkpoint directory>")
    if engine == "vllm":
        from videor4.training.vllm_engine import VLLMEngine, VLLMEngineConfig

        return VLLMEngine.from_pretrained(pretrained, VLLMEngineConfig(max_images=max_images))
    if engine != "hf":
        raise UserError(f"videor4 model: engine must be hf or vllm, got {engine!r}")
    from videor4.training.rollout import HFEngine, HFEngineConfig

    return HFEngine.from_pretrained(pretrained, HFEngineConfig(device=device, batch_size=batch_size, dtype=dtype))
