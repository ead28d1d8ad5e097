"""SlideVQA test as an lmms-eval task: lmms-eval's own SlideVQA prompt and scoring, the deck as its pages.

Only ``doc_to_visual`` differs from ``lmms_eval.tasks.slidevqa``: the pages in order (``page_1`` … ``page_20``)
rather than up to five 2-column grids, so a rumination model reads the deck as frames it can clip and crop.
"""

from __future__ import annotations

from typing import Any

from lmms_eval.tasks.slidevqa.utils import PAGE_COLUMNS, slidevqa_doc_to_text, slidevqa_process_results
from PIL import Image

slidesvqa_doc_to_text = slidevqa_doc_to_text
slidesvqa_process_results = slidevqa_process_results


def slidesvqa_doc_to_visual(doc: dict[str, Any]) -> list[Image.Image]:
    pages = [doc[column].convert("RGB") for column in PAGE_COLUMNS if doc.get(column) is not None]
    if not pages:
        raise ValueError(f"slide deck {doc.get('deck_name')!r} has no pages")
    return pages
