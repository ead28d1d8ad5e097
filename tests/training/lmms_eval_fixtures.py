"""Small local copies of the transfer benchmarks, each in its own Hugging Face repo layout.

lmms-eval's tasks load these exactly as they load the real data (``datasets.load_dataset`` on a folder with a
``README.md`` declaring the configs, parquet/JSON files with the real columns) once ``dataset_path`` points at
the folder; video tasks find their videos under ``HF_HOME`` where lmms-eval's task code looks. Content is real
and freely licensed (see ``tests/data/lmms_eval/ATTRIBUTION.md``): four slides of a CC BY 4.0 talk as document
pages and as a slide deck, an Apache-2.0 street-sign photo as a one-page document, the bundled sample's video
(``videor4/curation/sample_data``) for the video questions, and a lecture-style video rendered from the slides.
Questions and answers were written for these tests from what the pages and frames show.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import datasets
import numpy as np
import yaml

DATA = Path(__file__).resolve().parents[1] / "data"
PAGES = [DATA / "lmms_eval" / "pages" / f"slide_{i:02d}.jpg" for i in range(1, 5)]
PHOTO = DATA / "images" / "easyocr_french.jpg"  # Louvre street signs (Apache-2.0, tests/data/ATTRIBUTION.md)
SAMPLE_VIDEO = "90001"  # bundled sample: a street sign reading "LES ARTS DÉCORATIFS"

# MP-DocVQA rows: (questionId, question, answers, document pages, answer page index)
DOCVQA = [
    (9001, "Which group developed BSD at UC Berkeley?", ["Computer Systems Research Group", "CSRG"], PAGES, 1),
    (9002, "In which year did FreeBSD start from BSD Net-2?", ["1993"], PAGES, 3),
    (9003, "Which museum is signposted between the Palais du Louvre and the Musée du Louvre?",
     ["Les Arts Décoratifs"], [PHOTO], 0),
]
# SlideVQA rows: (qa_id, question, answer, evidence pages)
SLIDES = [
    (1, "Who is the author of the slides?", "Aaron Poffenberger", [1]),
    (2, "How many notable BSD systems are listed before the 'More' link?", "7", [3]),
]
# Video multiple choice on the bundled sample clip: question, options, index of the right one
VIDEO_MC = [
    ("What is written on the brown sign?", ["MUSEE DU LOUVRE", "LES ARTS DECORATIFS", "PALAIS ROYAL", "RUE DE RIVOLI"], 1),
    ("Which word appears on the brown sign?", ["DECORATIFS", "THEATRE", "MAIRIE", "OPERA"], 0),
]
LECTURE_MC = ("Which operating system does the lecture say FreeBSD started from?",
              ["BSD Net-2", "AT&T Unix System V", "Linux 1.0", "MINIX"], 0)


def _readme(root: Path, configs: list[dict]) -> None:
    root.mkdir(parents=True, exist_ok=True)
    (root / "README.md").write_text("---\n" + yaml.safe_dump({"configs": configs}, sort_keys=False) + "---\n")


def _parquet(rows: list[dict], features: datasets.Features, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    datasets.Dataset.from_list(rows, features=features).to_parquet(str(path))


def _image(path: Path) -> dict:
    return {"bytes": path.read_bytes(), "path": path.name}


def mp_docvqa(root: Path) -> Path:
    """``lmms-lab-encoder/MP-DocVQA`` layout: split ``val``, pages in ``image_1`` … ``image_20``, answers as a list repr."""
    features = datasets.Features({
        "questionId": datasets.Value("string"), "question": datasets.Value("string"),
        "doc_id": datasets.Value("string"), "page_ids": datasets.Value("string"),
        "answers": datasets.Value("string"), "answer_page_idx": datasets.Value("string"),
        "data_split": datasets.Value("string"),
        **{f"image_{i}": datasets.Image() for i in range(1, 21)},
    })
    rows = []
    for qid, question, answers, pages, page_idx in DOCVQA:
        row = {"questionId": str(qid), "question": question, "doc_id": f"doc{qid}",
               "page_ids": repr([p.stem for p in pages]), "answers": repr(answers),
               "answer_page_idx": str(page_idx), "data_split": "val"}
        row.update({f"image_{i}": _image(pages[i - 1]) if i <= len(pages) else None for i in range(1, 21)})
        rows.append(row)
    _parquet(rows, features, root / "data" / "val-00000-of-00001.parquet")
    _readme(root, [{"config_name": "default", "data_files": [{"split": "val", "path": "data/val-*"}]}])
    return root


def slidevqa(root: Path) -> Path:
    """``NTT-hil-insight/SlideVQA`` layout: split ``test``, deck pages in ``page_1`` … ``page_20``."""
    features = datasets.Features({
        "deck_name": datasets.Value("string"), "deck_url": datasets.Value("string"), "qa_id": datasets.Value("int64"),
        "question": datasets.Value("string"), "answer": datasets.Value("string"),
        "arithmetic_expression": datasets.Value("string"), "evidence_pages": datasets.Sequence(datasets.Value("int64")),
        **{f"page_{i}": datasets.Image() for i in range(1, 21)},
    })
    rows = []
    for qa_id, question, answer, evidence in SLIDES:
        row = {"deck_name": "bsd_for_linux_users", "deck_url": "akpoff/talks", "qa_id": qa_id, "question": question,
               "answer": answer, "arithmetic_expression": "None", "evidence_pages": evidence}
        row.update({f"page_{i}": _image(PAGES[i - 1]) if i <= len(PAGES) else None for i in range(1, 21)})
        rows.append(row)
    _parquet(rows, features, root / "data" / "test-00000-of-00001.parquet")
    _readme(root, [{"config_name": "default", "data_files": [{"split": "test", "path": "data/test-*"}]}])
    return root


def videomme(root: Path, hf_home: Path, sample_root: Path) -> Path:
    """``lmms-eval/Video-MME`` layout (config ``videomme``, split ``test``); videos in ``$HF_HOME/videomme/data``."""
    video_dir = hf_home / "videomme" / "data"
    video_dir.mkdir(parents=True, exist_ok=True)
    shutil.copy(sample_root / "videos" / f"{SAMPLE_VIDEO}.mp4", video_dir / f"sample{SAMPLE_VIDEO}.mp4")
    rows = [{"video_id": "001", "duration": "short", "domain": "Knowledge", "sub_category": "Humanity & History",
             "url": "", "videoID": f"sample{SAMPLE_VIDEO}", "question_id": f"001-{k + 1}", "task_type": "OCR Problems",
             "question": question, "options": [f"{chr(65 + i)}. {o}" for i, o in enumerate(options)],
             "answer": chr(65 + right)} for k, (question, options, right) in enumerate(VIDEO_MC)]
    features = datasets.Features({k: datasets.Value("string") for k in rows[0] if k != "options"}
                                 | {"options": datasets.Sequence(datasets.Value("string"))})
    _parquet(rows, features, root / "videomme" / "test-00000-of-00001.parquet")
    _readme(root, [{"config_name": "videomme", "data_files": [{"split": "test", "path": "videomme/test-*"}]}])
    return root


def mvbench(root: Path, hf_home: Path, sample_root: Path, tasks: dict[str, str]) -> Path:
    """``OpenGVLab/MVBench`` layout: ``json/<task>.json`` per config (split ``train``); videos under
    ``$HF_HOME/mvbench_video/<folder of the task>`` (``tasks`` maps task name to that folder)."""
    configs = []
    for task, folder in tasks.items():
        video_dir = hf_home / "mvbench_video" / folder
        video_dir.mkdir(parents=True, exist_ok=True)
        shutil.copy(sample_root / "videos" / f"{SAMPLE_VIDEO}.mp4", video_dir / f"{SAMPLE_VIDEO}.mp4")
        rows = [{"video": f"{SAMPLE_VIDEO}.mp4", "question": q, "candidates": options, "answer": options[right]}
                for q, options, right in VIDEO_MC]
        (root / "json").mkdir(parents=True, exist_ok=True)
        (root / "json" / f"{task}.json").write_text(json.dumps(rows))
        configs.append({"config_name": task, "data_files": [{"split": "train", "path": f"json/{task}.json"}]})
    _readme(root, configs)
    return root


def lecture_video(path: Path, seconds_per_page: float = 2.0, fps: float = 5.0) -> Path:
    """A short lecture-style video: the four slides in order, each held ``seconds_per_page``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    frames = [cv2.resize(cv2.imread(str(p)), (512, 384), interpolation=cv2.INTER_AREA) for p in PAGES]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (512, 384))
    for frame in frames:
        for _ in range(round(seconds_per_page * fps)):
            writer.write(frame)
    writer.release()
    return path


def video_mmmu(root: Path, hf_home: Path) -> Path:
    """``lmms-eval/VideoMMMU`` layout: configs Perception / Comprehension / Adaptation (split ``test``); videos
    in ``$HF_HOME/video_mmmu/<discipline>/<id>.mp4``."""
    configs = []
    question, options, right = LECTURE_MC
    for track in ("Perception", "Comprehension", "Adaptation"):
        qid = f"{track.lower()}_Computer_Science_1"
        lecture_video(hf_home / "video_mmmu" / "Engineering" / f"{qid}.mp4")
        rows = [{"id": qid, "question": question, "options": options, "answer": chr(65 + right),
                 "question_type": "multiple-choice", "link_selected": "", "image": None}]
        features = datasets.Features({"id": datasets.Value("string"), "question": datasets.Value("string"),
                                      "options": datasets.Sequence(datasets.Value("string")),
                                      "answer": datasets.Value("string"), "question_type": datasets.Value("string"),
                                      "link_selected": datasets.Value("string"), "image": datasets.Image()})
        _parquet(rows, features, root / track / "test-00000-of-00001.parquet")
        configs.append({"config_name": track, "data_files": [{"split": "test", "path": f"{track}/test-*"}]})
    _readme(root, configs)
    return root


def page_arrays() -> list[np.ndarray]:
    return [cv2.cvtColor(cv2.imread(str(p)), cv2.COLOR_BGR2RGB) for p in PAGES]


# -- running lmms-eval in tests ----------------------------------------------------------------------------------

def require_lmms_eval() -> None:
    """Skip (visibly) in the main environment; in .venv-lmms-eval (``make test`` sets
    ``VIDEOR4_REQUIRE_LMMS_EVAL=1``) a missing lmms-eval fails the import instead."""
    import importlib.util
    import os

    import pytest

    if os.environ.get("VIDEOR4_REQUIRE_LMMS_EVAL") == "1":
        import lmms_eval.evaluator  # noqa: F401  (an ImportError here fails the test module's collection)
    elif importlib.util.find_spec("lmms_eval") is None:
        pytest.skip("lmms-eval tests run in .venv-lmms-eval (`make test`); lmms-eval 0.7.3 needs av<16",
                    allow_module_level=True)


_MANAGERS: dict[str, object] = {}


def task_manager(model_name: str):
    """lmms-eval's task index with this package's tasks (indexing ~2000 YAML files takes seconds: once)."""
    from lmms_eval.tasks import TaskManager

    from videor4.training.transfer import TASKS_DIR

    if model_name not in _MANAGERS:
        _MANAGERS[model_name] = TaskManager(include_path=str(TASKS_DIR), model_name=model_name, verbosity="WARNING")
    return _MANAGERS[model_name]


def evaluate(model, tasks: list, model_name: str = "videor4", **kwargs) -> dict:
    """lmms-eval's ``simple_evaluate`` (its evaluator builds the requests and scores them) with samples logged."""
    from lmms_eval.evaluator import simple_evaluate

    return simple_evaluate(model=model, tasks=tasks, task_manager=task_manager(model_name), bootstrap_iters=0,
                           verbosity="WARNING", log_samples=True, **kwargs)


def offline_hf_home(monkeypatch, hf_home: Path) -> None:
    """Point lmms-eval's video tasks and the dataset cache at ``hf_home``; forbid hub access."""
    monkeypatch.setenv("HF_HOME", str(hf_home))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
