"""M4-ViteVQA as an lmms-eval task: the official JSON of a local root, scored like ``videor4 eval score``.

lmms-eval executes this file when it loads an ``m4_vitevqa_*`` task. The root comes from ``$VIDEOR4_M4_ROOT``
(``M4_ROOT`` is the YAML's ``dataset_path``; lmms-eval reads the annotation file through ``datasets``, then
:func:`m4_process_docs` rebuilds the questions with the project's validating loader, in annotation order, and
finds each question's media the way ``eval run`` does).

Scores come from :func:`videor4.training.eval_cli.score_predictions`, the function behind ``videor4 eval
score``: Acc and ANLS over every question of the split in percent, a question with no prediction (not run, or
no media to run it on) scoring 0 and counted in ``missing``, so the numbers equal ``eval score`` on the same
predictions. ``doc_to_visual`` gives the media path (an ``.mp4`` for the ``videos/`` layout, which every
lmms-eval video model reads; a frame folder for ``img_dir/``, which the ``videor4`` model reads).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import datasets

from videor4.contracts.dataset import annotation_path, load_annotation_file, locate_media
from videor4.contracts.errors import UserError

ROOT_ENV = "VIDEOR4_M4_ROOT"


def _root() -> str:
    value = os.environ.get(ROOT_ENV, "").strip()
    if not value:
        raise UserError(f"the m4_vitevqa tasks read the dataset root from ${ROOT_ENV}: set it to a folder with "
                        "Annotations/ViteVQA_0.0.2_<split>.json and videos/ or img_dir/")
    root = Path(value).expanduser().resolve()
    if not (root / "Annotations").is_dir():
        raise UserError(f"${ROOT_ENV}={root} has no Annotations/ folder")
    return str(root)


M4_ROOT = _root()


def m4_process_docs(dataset: datasets.Dataset) -> datasets.Dataset:
    """The split's questions that have media, from the project's loader (a bad record stops the task)."""
    split = str(dataset.split)
    path = annotation_path(Path(M4_ROOT), split)
    data = load_annotation_file(path, split=split)
    if data.rejects:
        raise UserError(f"{data.rejects[0].message}; scores need every question of {split}")
    rows = []
    for record in data.records:
        media = locate_media(Path(M4_ROOT), record.video_id)
        if media is None:
            continue  # no question to ask; it still counts (as 0, in `missing`) in the split's scores
        rows.append({
            "question_id": record.question_id, "question": record.question, "answers": list(record.answers),
            "video_id": record.video_id, "media": str(media.path), "source1": record.source1,
            "source2": record.source2, "annotation_file": str(path),
        })
    if not rows:
        raise UserError(f"no question of {split} has media under {M4_ROOT} (videos/<id>.mp4 or img_dir/<id>/)")
    return datasets.Dataset.from_list(rows)


def m4_doc_to_visual(doc: dict[str, Any]) -> list[str]:
    return [doc["media"]]


def m4_doc_to_text(doc: dict[str, Any], lmms_eval_specific_kwargs: dict[str, Any] | None = None) -> str:
    kwargs = lmms_eval_specific_kwargs or {}
    return f"{kwargs.get('pre_prompt', '')}{doc['question']}{kwargs.get('post_prompt', '')}"


def m4_process_results(doc: dict[str, Any], results: list[Any]) -> dict[str, dict[str, Any]]:
    entry = {"question_id": doc["question_id"], "pred_answer": str(results[0]), "annotation_file": doc["annotation_file"]}
    return {"acc": entry, "anls": entry, "missing": entry}


def _score(results: list[dict[str, Any]]) -> dict[str, Any]:
    from videor4.training.eval_cli import score_predictions

    files = sorted({r["annotation_file"] for r in results})
    return score_predictions(files, {r["question_id"]: r["pred_answer"] for r in results})


def m4_aggregate_acc(results: list[dict[str, Any]]) -> float:
    return _score(results)["acc"]


def m4_aggregate_anls(results: list[dict[str, Any]]) -> float:
    return _score(results)["anls"]


def m4_aggregate_missing(results: list[dict[str, Any]]) -> int:
    return _score(results)["missing"]
