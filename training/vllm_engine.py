"""vLLM as a :class:`~videor4.training.rollout.RolloutEngine` (GPU only; optional extra ``video-r4[vllm]``).

Same contract as ``HFEngine``: prompt states in (token ids + images), one assistant turn each out, token ids
kept verbatim. A whole batch (e.g. a GRPO group) goes to vLLM in one ``LLM.generate`` call with per-prompt
``SamplingParams``, so vLLM schedules it with continuous batching.

Two details keep its token accounting identical to the HF path:

* our ids carry each image's ``<|image_pad|>`` already expanded; vLLM expands one placeholder per image itself,
  so each run of pads is collapsed to one before sending (the images are pre-fitted to multiples of 28 px
  inside the processor's pixel range, so vLLM's processor expands them to the same count);
* single-token stops (``</tool_call>`` in Qwen2.5) go in ``stop_token_ids`` and the output ids are taken from
  ``CompletionOutput.token_ids`` (text is re-decoded from them), never from re-tokenized text.

Not exercised on this project's CPU CI (no GPU, vLLM not installed); its input/output mapping is tested
against a stand-in ``vllm`` module.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from videor4.contracts.chat import VISION_TOKENS
from videor4.contracts.errors import UserError
from videor4.training.rollout import Generation, PromptState, decode_turn


class VLLMEngineConfig(BaseModel):
    """vLLM engine and sampling settings."""

    model_config = ConfigDict(extra="forbid")

    temperature: float = Field(0.0, ge=0, description="0 = greedy")
    top_p: float = Field(1.0, gt=0, le=1, description="nucleus sampling mass")
    max_model_len: int = Field(16384, ge=256, description="context length vLLM reserves KV cache for")
    max_images: int = Field(16, ge=1, description="limit_mm_per_prompt for images (match OpsConfig.max_images)")
    gpu_memory_utilization: float = Field(0.85, gt=0, le=1, description="fraction of GPU memory vLLM may use")
    tensor_parallel_size: int = Field(1, ge=1, description="GPUs per model replica")
    seed: int = Field(0, description="engine seed (per-request seeds would make a GRPO group identical)")
    colocate: bool = Field(False, description="run inside the training processes (TRL's colocate mode): vLLM's "
                           "external launcher uses the ranks torchrun/accelerate started")
    logprobs: bool = Field(False, description="report the sampled tokens' log-probs after temperature/top-p "
                           "(logprobs_mode=processed_logprobs), for the GRPO importance-sampling correction")


class VLLMEngine:
    def __init__(self, llm: Any, processor: Any, config: VLLMEngineConfig | None = None):
        self.llm, self.processor, self.config = llm, processor, config or VLLMEngineConfig()
        self.tokenizer = processor.tokenizer
        self.image_token_id = self.tokenizer.convert_tokens_to_ids("<|image_pad|>")

    @classmethod
    def from_pretrained(cls, model_dir: str | Path, config: VLLMEngineConfig | None = None):
        try:
            import vllm
        except ImportError:
            raise UserError("the vllm engine needs vLLM and a CUDA GPU: pip install 'video-r4[vllm]'") from None
        from transformers import AutoProcessor

        config = config or VLLMEngineConfig()
        path = Path(model_dir)
        if not (path / "config.json").is_file():
            raise UserError(f"model directory {path} has no config.json (expected a saved Qwen2.5-VL checkpoint)")
        extra: dict[str, Any] = {}
        if config.colocate:  # one vLLM per training rank, in-process, sharing its GPU (TRL's colocate mode)
            extra.update(distributed_executor_backend="external_launcher", max_num_batched_tokens=4096)
        if config.logprobs:
            extra["logprobs_mode"] = "processed_logprobs"
        llm = vllm.LLM(
            model=str(path),
            max_model_len=config.max_model_len,
            limit_mm_per_prompt={"image": config.max_images, "video": 0},
            gpu_memory_utilization=config.gpu_memory_utilization,
            tensor_parallel_size=config.tensor_parallel_size,
            seed=config.seed,
            **extra,
        )
        return cls(llm, AutoProcessor.from_pretrained(path), config)

    def generate(self, prompts: Sequence[PromptState], max_new_tokens: Sequence[int], stop: Sequence[str]) -> list[Generation]:
        from PIL import Image
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        tok = self.tokenizer
        encoded = {s: tok(s, add_special_tokens=False)["input_ids"] for s in stop}
        stop_ids = [ids[0] for ids in encoded.values() if len(ids) == 1]
        stop_strings = [s for s, ids in encoded.items() if len(ids) != 1]
        inputs = [
            TokensPrompt(
                prompt_token_ids=collapse_image_pads(p.input_ids, self.image_token_id),
                multi_modal_data={"image": [Image.fromarray(im) for im in p.images]} if p.images else None,
            )
            for p in prompts
        ]
        params = [
            SamplingParams(
                max_tokens=limit,
                temperature=self.config.temperature,
                top_p=self.config.top_p,
                stop=stop_strings,
                stop_token_ids=stop_ids,
                include_stop_str_in_output=True,
                skip_special_tokens=False,
                bad_words=list(VISION_TOKENS),
                logprobs=0 if self.config.logprobs else None,
            )
            for limit in max_new_tokens
        ]
        outputs = self.llm.generate(inputs, sampling_params=params, use_tqdm=False)
        return [self._generation(out.outputs[0]) for out in outputs]

    def _generation(self, completion: Any) -> Generation:
        ids = list(completion.token_ids)
        finished = completion.finish_reason == "stop"
        logprobs = None
        if self.config.logprobs and completion.logprobs is not None:
            logprobs = [float(step[token].logprob) for token, step in zip(ids, completion.logprobs)]
        # A stop token id is reported in stop_reason; make sure the turn ends with it, as with HF generate.
        if finished and isinstance(completion.stop_reason, int) and (not ids or ids[-1] != completion.stop_reason):
            ids.append(completion.stop_reason)
            logprobs = None if logprobs is None else [*logprobs, 0.0]  # not sampled: appended by the engine
        return Generation(ids, decode_turn(self.tokenizer, ids), finished, logprobs)


def collapse_image_pads(ids: Sequence[int], image_token_id: int) -> list[int]:
    """One ``<|image_pad|>`` per image (vLLM expands each itself from the image it is given)."""
    return [t for i, t in enumerate(ids) if t != image_token_id or i == 0 or ids[i - 1] != image_token_id]


class TrainingVLLMEngine(VLLMEngine):
    """vLLM colocated with the trainer (TRL's "colocate" mode): same GPU, weights pushed before each batch.

    Built with vLLM's external launcher (every training rank holds its own engine in-process; vLLM V1 cannot take
    weight updates otherwise), a per-rank seed (ranks must not sample identical rollouts), the recipe's image
    and context limits, and sampled-token log-probs for the importance-sampling correction. Before every rollout
    batch the policy's weights are pushed through vLLM's model ``load_weights`` (the path TRL uses), parameter by
    parameter and gathered first when they are sharded (ZeRO-3; FSDP full state dict), so vLLM never receives a
    shard. Not run on this project's CI (no GPU); ``scripts/gpu_check.sh`` exercises it on one GPU.
    """

    def _vllm_model(self) -> Any:
        engine = getattr(self.llm, "llm_engine", None)
        executor = getattr(engine, "model_executor", None)
        worker = getattr(executor, "driver_worker", None)
        runner = getattr(getattr(worker, "worker", worker), "model_runner", None)
        target = getattr(runner, "model", None)
        if target is None or not hasattr(target, "load_weights"):
            raise UserError("this vLLM version does not expose the colocated model for weight updates; "
                            "use engine: hf, or a vLLM version TRL's colocate mode supports")
        return target

    def update_weights(self, model: Any, dist: Any = None, wrapped: Any = None) -> None:
        """Push ``model``'s weights (``wrapped``: the FSDP root, whose full state dict is gathered instead)."""
        target = self._vllm_model()
        if dist is not None and dist.fsdp:
            from torch.distributed.fsdp import FullStateDictConfig, StateDictType
            from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

            with FSDP.state_dict_type(wrapped, StateDictType.FULL_STATE_DICT,
                                      FullStateDictConfig(offload_to_cpu=False, rank0_only=False)):
                target.load_weights(wrapped.state_dict().items())
        else:
            for name, param in model.named_parameters():
                with (dist.gathered([param]) if dist is not None else contextlib.nullcontext()):
                    target.load_weights([(name, param.detach())])
        if hasattr(self.llm, "reset_prefix_cache"):
            self.llm.reset_prefix_cache()  # cached prefixes were computed with the old weights


def build_training_engine(model: Any, processor: Any, grpo: Any, rollout: Any, dist: Any) -> TrainingVLLMEngine:
    """The GRPO trainer's vLLM engine: the full softmax at the trainer's temperature, the recipe's limits."""
    path = getattr(model, "name_or_path", "") or getattr(getattr(model, "config", None), "_name_or_path", "")
    config = VLLMEngineConfig(
        temperature=grpo.temperature, top_p=grpo.top_p, gpu_memory_utilization=grpo.vllm_gpu_memory_utilization,
        max_images=rollout.ops.max_images, max_model_len=rollout.max_context_tokens, seed=grpo.seed + dist.rank,
        colocate=dist.world > 1, logprobs=True)
    if dist.world > 1:  # vLLM's external launcher reads the launcher's ranks from the environment (as TRL sets)
        os.environ.setdefault("RANK", str(dist.rank))
        os.environ.setdefault("LOCAL_RANK", str(dist.accelerator.local_process_index))
        os.environ.setdefault("WORLD_SIZE", str(dist.world))
    engine = TrainingVLLMEngine.from_pretrained(path, config)
    engine.processor = processor
    dist.accelerator.wait_for_everyone()  # vLLM start-up desynchronises ranks; DeepSpeed then hangs (TRL's note)
    return engine
