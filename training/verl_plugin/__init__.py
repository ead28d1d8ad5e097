"""Video-R4 as a verl plug-in: RL at cluster scale with verl's trainer (optional extra, own environment).

verl (https://github.com/volcengine/verl) runs GRPO with FSDP/Megatron actors and vLLM/SGLang rollout servers.
This package hands it the Video-R4 pieces without a second copy of any of them:

* :mod:`.data` — RL shard rows → the Parquet verl's ``RLHFDataset`` reads (prompt with ``<image>``
  placeholders, ``images``, ``reward_model.ground_truth``, ``extra_info.tools_kwargs``, ``agent_name``), and
  back (lossless). Needs no verl: ``videor4 shards export --format verl`` runs in the main environment.
* :mod:`.tools` — ``clip`` and ``crop`` as verl ``BaseTool`` s over the one ``ClipCropExecutor``.
* :mod:`.agent_loop` — verl's tool agent loop with the project's tool-call parser and observation rendering,
  so verl's rollout tokens are the bundled runtime's.
* :mod:`.rewards` — the Video-R4 reward registry (accuracy, format, R_div, R_rep, R_cur per group) behind
  verl's reward-manager interface.
* ``configs/`` — the tool YAML, the agent-loop YAML and the verl configs of RLd/RLc for Qwen2.5-VL-7B.

verl 0.9.1 pins ``transformers<5.11`` while the toolkit runs 5.23, so everything importing verl lives in
``.venv-verl`` (``make venv-verl``; docs/training.md, "Train on verl").
"""

from __future__ import annotations

from pathlib import Path

AGENT_NAME = "videor4_tool_agent"  # verl agent-loop name written into every exported row
DATA_SOURCE = "videor4/m4-vitevqa"
REWARD_MANAGER = "videor4"  # verl reward-loop registry name
TOOL_PARSER = "videor4"  # verl tool-parser registry name (rollout.multi_turn.format)
CONFIGS = Path(__file__).resolve().parent / "configs"


def config_path(name: str) -> Path:
    """A bundled config file (``tools.yaml``, ``agent_loops.yaml``, ``rld-qwen2.5-vl-7b.yaml``, …)."""
    path = CONFIGS / name
    if not path.is_file():
        raise FileNotFoundError(f"no bundled verl config {name!r}; have: {sorted(p.name for p in CONFIGS.iterdir())}")
    return path
