"""The bundled sample dataset: where it lives once installed.

The sample ships as package data (``videor4/curation/sample_data``) in the official M4-ViteVQA
layout, so ``videor4 demo`` and the tests work after a plain ``pip install`` without the
(non-redistributable) real dataset. It is rebuilt by ``scripts/build_sample_data.py``; see
``docs/sample_data.md`` for what each video and question is.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

SAMPLE_SPLIT = "sample"
"""Split name: the annotation file is ``Annotations/ViteVQA_0.0.2_sample.json``."""

SAMPLE_ANNOTATION = f"Annotations/ViteVQA_0.0.2_{SAMPLE_SPLIT}.json"
ANSWER_FRAMES = "answer_frames.json"


def sample_root() -> Path:
    """Dataset root of the bundled sample (holds ``Annotations/``, ``videos/``, ``img_dir/``).

    ``importlib.resources`` finds it inside an installed wheel as well as in an editable checkout;
    the package is a regular directory in both cases, so a real filesystem path is returned
    (decoders such as cv2/decord need paths, not file-like objects).
    """
    root = Path(str(resources.files("videor4.curation") / "sample_data"))
    if not root.is_dir():  # e.g. imported from a zip: fall back to this file's folder
        root = Path(__file__).resolve().parent / "sample_data"
    return root


def sample_annotation_path() -> Path:
    """The official-format annotation JSON of the sample split."""
    return sample_root() / SAMPLE_ANNOTATION


def load_answer_frames() -> dict[int, tuple[str, tuple[int, ...]]]:
    """``question_id -> (video_id, 0-based frame indices where the answer is visible)``.

    Ground truth for evidence tests: frame index ``i`` is ``img_dir/<video_id>/<i+1>.jpg`` and
    ``i / fps`` seconds into ``videos/<video_id>.mp4``.
    """
    data = json.loads((sample_root() / ANSWER_FRAMES).read_text(encoding="utf-8"))
    return {
        int(qid): (entry["video_id"], tuple(int(i) for i in entry["frame_index"]))
        for qid, entry in data["questions"].items()
    }
