"""RL shard rows ⇄ the Parquet rows verl's ``RLHFDataset`` reads (``videor4 shards export --format verl``).

One exported row per RL shard row (RLd or RLc), in the layout of verl's multimodal tool examples:

* ``prompt`` — the chat *before* the first assistant turn (system prompt declaring clip/crop, the user turn
  with the labelled initial frames and the question), exactly as :func:`videor4.contracts.chat.build_messages`
  renders it for the bundled runtime, stored through the shard codec: each image is an ``<image>`` placeholder
  in the message text (verl's placeholder too), so verl rebuilds the same content parts;
* ``images`` — the initial frames *as the model is shown them* (rendered by the view's executor, fitted to the
  frame pixel budget), as ``{"bytes": PNG}`` (lossless: the pixels equal the runtime's) or JPEG (smaller);
* ``data_source``, ``ability``, ``reward_model`` (``ground_truth`` = every accepted answer), ``agent_name``;
* ``extra_info`` — ``index``, ``sample_id``, ``stage``, ``tools_kwargs`` (per tool, the ``create_kwargs`` the
  clip/crop tools open the trajectory with: video reference, data root, initial frame indices and the view —
  prompt + ops — the frames were rendered with) and ``shard_row``, the whole RL row as JSON, so
  :func:`shard_row` gives the shard row back unchanged.

Nothing here imports verl: the export runs in the toolkit's main environment.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np
import pyarrow as pa

from videor4.contracts.atomic import write_json_atomic, write_table_atomic
from videor4.contracts.chat import build_messages
from videor4.contracts.dataset import media_path
from videor4.contracts.errors import UserError
from videor4.contracts.executor import ImageRef
from videor4.contracts.media import MediaConfig, encode_jpeg, open_video
from videor4.contracts.shard_codec import chat_to_shard_messages
from videor4.contracts.shard_io import read_manifest, read_stage
from videor4.contracts.shard_schema import RL_STAGES, SHARD_IMAGE_TOKEN, RLRow
from videor4.contracts.view import ShardView, resolve_view, view_from_manifest
from videor4.training.rollout import RolloutLimits
from videor4.training.verl_plugin import AGENT_NAME, DATA_SOURCE

ImageFormat = Literal["png", "jpeg"]
# verl's RLHFDataset splits message text on "<image>" (and "<video>", "<audio>"): the shard codec's placeholder
# must be that exact string, and no question may contain the others.
VERL_IMAGE_PLACEHOLDER = "<image>"
_OTHER_PLACEHOLDERS = ("<video>", "<audio>")
TOOL_NAMES_WITH_KWARGS = ("clip", "crop")
assert SHARD_IMAGE_TOKEN == VERL_IMAGE_PLACEHOLDER, "the shard codec's image token must be verl's placeholder"


def create_kwargs(row: RLRow, view: ShardView, data_root: str | Path, limits: RolloutLimits | None = None
                  ) -> dict[str, Any]:
    """What a clip/crop tool needs to open this sample's trajectory (verl passes it to ``BaseTool.create``), plus
    the rollout's token budgets, which the agent loop applies as the bundled loop does."""
    return {
        "sample_id": row.sample_id,
        "data_root": str(Path(data_root).resolve()),
        "video_id": row.video_id,
        "video": row.video.model_dump(mode="json"),
        "initial_frames": [int(i) for i in row.initial_frames],
        "view": view.model_dump(mode="json"),
        "limits": (limits or RolloutLimits()).model_dump(mode="json"),
    }


def encode_image(image_rgb: np.ndarray, image_format: ImageFormat = "png", jpeg_quality: int = 95) -> bytes:
    """PNG (lossless) or JPEG bytes of an RGB image."""
    if image_format == "jpeg":
        return encode_jpeg(image_rgb, jpeg_quality)
    ok, buf = cv2.imencode(".png", cv2.cvtColor(image_rgb, cv2.COLOR_RGB2BGR))
    if not ok:
        raise ValueError("PNG encoding failed")
    return buf.tobytes()


def prompt_messages(row: RLRow, view: ShardView, reader: Any
                    ) -> tuple[list[dict[str, Any]], list[ImageRef], list[np.ndarray]]:
    """The runtime's first prompt for ``row``: HF chat messages, the initial frames' refs and the frames as
    shown (fitted to the frame budget), in order — what the bundled rollout loop starts from."""
    executor = view.executor(reader, row.initial_frames)
    refs = list(executor.context)
    messages, shown = build_messages(row.question, refs, executor.render_many(refs), config=view.prompt,
                                     ops=view.ops, duration_s=reader.num_frames / reader.fps)
    return messages, refs, shown


def verl_record(row: RLRow, view: ShardView, data_root: str | Path, index: int, *, reader: Any,
                limits: RolloutLimits | None = None, image_format: ImageFormat = "png") -> dict[str, Any]:
    """One verl dataset row for an RL shard row (``reader`` is the row's opened video)."""
    if any(p in text for text in (row.question, *row.answers) for p in (VERL_IMAGE_PLACEHOLDER, *_OTHER_PLACEHOLDERS)):
        raise UserError(f"sample {row.sample_id}: question or answers contain a verl media placeholder "
                        f"({', '.join((VERL_IMAGE_PLACEHOLDER, *_OTHER_PLACEHOLDERS))}); verl would read it as media")
    messages, refs, shown = prompt_messages(row, view, reader)
    shard_messages = chat_to_shard_messages(messages, refs)
    kwargs = create_kwargs(row, view, data_root, limits)
    return {
        "data_source": DATA_SOURCE,
        "prompt": [{"role": m.role, "content": m.text} for m in shard_messages],
        "images": [{"bytes": encode_image(image, image_format)} for image in shown],
        "ability": "video_qa",
        "reward_model": {"style": "rule", "ground_truth": list(row.answers)},
        "agent_name": AGENT_NAME,
        "extra_info": {
            "index": index,
            "sample_id": row.sample_id,
            "stage": row.stage,
            "question": row.question,
            "need_tools_kwargs": True,
            "tools_kwargs": {name: {"create_kwargs": kwargs} for name in TOOL_NAMES_WITH_KWARGS},
            "shard_row": row.model_dump_json(),
        },
    }


def shard_row(record: dict[str, Any]) -> RLRow:
    """The RL shard row an exported record came from (the exact inverse of :func:`verl_record`)."""
    extra = record["extra_info"]
    row = RLRow.model_validate_json(extra["shard_row"])
    if row.sample_id != extra["sample_id"]:
        raise ValueError(f"record {extra['sample_id']}: shard_row holds sample {row.sample_id}")
    return row


def export_settings(shards: Path, recipe: str | Path | None, stage: str) -> tuple[ShardView, RolloutLimits]:
    """The view and token budgets an RL stage rolls out with: the shards' recorded view with a recipe's
    compatible settings, and the budgets of the recipe's GRPO stage reading ``stage`` shards — as
    ``videor4 train`` resolves them (without a recipe: the recorded view and default budgets)."""
    manifest = read_manifest(shards)
    if recipe is None:
        return resolve_view(view_from_manifest(manifest), None, None, f"export of {shards}"), RolloutLimits()
    from videor4.training.curriculum import load_recipe, stage_view

    loaded = load_recipe(recipe)
    grpo = [s for s in loaded.stages if s.kind == "grpo" and stage in s.data.stages]
    if not grpo:
        raise UserError(f"recipe {loaded.name} has no GRPO stage reading {stage} shards")
    return stage_view(loaded, manifest, grpo[0].name), grpo[0].grpo.rollout


def write_records(records: Sequence[dict[str, Any]], path: Path) -> Path:
    """Atomically write exported records as one Parquet file (row groups small enough to stream)."""
    table = pa.Table.from_pylist(list(records))
    return write_table_atomic(table, path, row_group_size=64, compression="zstd")


def export_verl(shards: str | Path, out: str | Path, *, data_root: str | Path | None = None,
                recipe: str | Path | None = None, stages: Iterable[str] = RL_STAGES, limit: int | None = None,
                image_format: ImageFormat = "png", media: MediaConfig | None = None) -> dict[str, Path]:
    """Write ``<out>/<stage>.parquet`` (verl's RL dataset) for each RL stage, plus ``<out>/view.json``.

    ``data_root`` defaults to the one recorded in the shards' manifest. Rows keep their shard order (sorted by
    ``sample_id``); ``limit`` keeps the first rows of each stage (smoke runs).
    """
    shards, out = Path(shards), Path(out)
    manifest = read_manifest(shards)
    root = Path(data_root) if data_root else (Path(manifest["data_root"]) if manifest.get("data_root") else None)
    if root is None:
        raise UserError(f"{shards}: the manifest records no data_root; pass --data-root (the exported images are "
                        "decoded from the videos)")
    media = media or MediaConfig()
    written: dict[str, Path] = {}
    views: dict[str, Any] = {}
    for stage in stages:
        if stage not in RL_STAGES:
            raise UserError(f"verl export reads RL shards ({'/'.join(RL_STAGES)}), not {stage!r}")
        rows = [r for r in read_stage(shards, stage) if isinstance(r, RLRow)]
        if limit is not None:
            rows = rows[:limit]
        if not rows:
            continue
        view, limits = export_settings(shards, recipe, stage)
        views[stage] = view.model_dump(mode="json")
        records = []
        for index, row in enumerate(rows):
            path = media_path(root, row.video.path)
            if not path.exists():
                raise UserError(f"sample {row.sample_id}: video {path} not found; pass --data-root")
            with open_video(path, config=media, video_id=row.video_id) as reader:
                records.append(verl_record(row, view, root, index, reader=reader, limits=limits,
                                           image_format=image_format))
        written[stage] = write_records(records, out / f"{stage}.parquet")
    if not written:
        raise UserError(f"{shards}: no RL rows in stages {', '.join(stages)}")
    write_json_atomic(out / "view.json", {"shards": str(shards.resolve()), "data_root": str(root.resolve()),
                                          "views": views, "files": {s: p.name for s, p in written.items()}}, indent=2)
    return written


def read_records(path: str | Path) -> list[dict[str, Any]]:
    """Exported rows as plain dicts (``pyarrow``; what ``datasets.load_dataset("parquet")`` also gives)."""
    import pyarrow.parquet as pq

    return pq.read_table(path).to_pylist()
