"""Evidence matcher logic on hand-built observations (OCR itself is tested on real images elsewhere)."""

from __future__ import annotations

import numpy as np

from videor4.contracts.dataset import QARecord
from videor4.curation.evidence import FrameObservation, MatchConfig, key_phrases, match_question, propagate

CFG = MatchConfig()


def rec(question: str, answers: list[str], source2: str = "Text") -> QARecord:
    return QARecord(question_id=7, video_id="00001", question=question, answers=tuple(answers),
                    source1="Single frame", source2=source2, video_width=100, video_height=100, split="x",
                    source_file="f.json", record_index=0)


def ocr(frame: int, text: str, box: tuple[float, float, float, float], score: float = 0.95) -> FrameObservation:
    return FrameObservation(frame, frame / 10, "ocr", text, box, score, "rapidocr test")


def test_exact_answer_found_with_box_and_frames() -> None:
    obs = {0: [ocr(0, "OPEN 24 HOURS", (0.1, 0.1, 0.5, 0.2))], 1: [ocr(1, "Bakery", (0.6, 0.6, 0.9, 0.7))],
           2: [ocr(2, "bakery.", (0.62, 0.6, 0.9, 0.7))]}
    rows, summary = match_question(rec("What is the shop's name?", ["Bakery"]), obs, CFG)
    answer_rows = [r for r in rows if r.match == "answer"]
    assert {r.frame_index for r in answer_rows} == {1, 2}
    assert summary.status == "answer" and summary.first_frame == 1 and summary.last_frame == 2
    assert answer_rows[0].bbox == [0.6, 0.6, 0.9, 0.7]  # the exact (non-punctuated) reading ranks first
    assert all(0.0 < r.score <= 1.0 for r in rows)


def test_answer_split_over_two_boxes_is_merged() -> None:
    obs = {3: [ocr(3, "SUP", (0.40, 0.50, 0.48, 0.56)), ocr(3, "2J", (0.49, 0.50, 0.55, 0.56)),
               ocr(3, "far away", (0.0, 0.9, 0.1, 0.95))]}
    rows, summary = match_question(rec("What is the license plate number?", ["SUP 2J"]), obs, CFG)
    best = [r for r in rows if r.match == "answer"][0]
    assert best.text == "SUP 2J" and best.score > 0.9
    assert best.bbox == [0.40, 0.50, 0.55, 0.56]


def test_fuzzy_match_tolerates_an_ocr_typo_but_not_a_different_word() -> None:
    obs = {0: [ocr(0, "Wednesdav", (0.1, 0.1, 0.3, 0.2)), ocr(0, "Monday", (0.5, 0.1, 0.7, 0.2))]}
    rows, _ = match_question(rec("Which day of the week is it?", ["Wednesday"]), obs, CFG)
    texts = [r.text for r in rows if r.match == "answer"]
    assert texts == ["Wednesdav"]


def test_short_answers_need_a_whole_token() -> None:
    obs = {0: [ocr(0, "Speed 20 MPH", (0.1, 0.1, 0.3, 0.2)), ocr(0, "1200", (0.5, 0.5, 0.6, 0.6))]}
    rows, _ = match_question(rec("What is the MPH?", ["20"]), obs, CFG)
    assert [r.text for r in rows if r.match == "answer"] == ["Speed 20 MPH"]


def test_question_key_phrases_and_objects_when_answer_absent() -> None:
    obs = {0: [ocr(0, "GOLDEN GATE BAKERY", (0.1, 0.1, 0.5, 0.2)),
               FrameObservation(0, 0.0, "object", "person", (0.2, 0.3, 0.4, 0.9), 0.9, "opencv")]}
    assert "bakery" in key_phrases("What colour is the bakery sign the man holds?", CFG)
    rows, summary = match_question(rec("What colour is the bakery sign the man holds?", ["red"], "Visual"), obs, CFG)
    assert {(r.kind, r.match) for r in rows} == {("ocr", "question"), ("object", "question")}
    assert summary.status == "question_only" and summary.reason


def test_no_evidence_is_kept_with_reason() -> None:
    rows, summary = match_question(rec("Is GSW leading?", ["No"], "Visual"), {0: [ocr(0, "xyz", (0, 0, 1, 1))]}, CFG)
    assert rows == [] and summary.status == "none" and "visual question" in summary.reason


def test_propagation_gives_dropped_frames_their_representatives_text() -> None:
    obs = {0: [ocr(0, "EXIT", (0.1, 0.1, 0.2, 0.2))], 3: []}
    out = propagate(obs, {0: 0, 1: 0, 2: 0, 3: 3}, {i: i / 10 for i in range(4)})
    assert [o.text for o in out[2]] == ["EXIT"] and out[2][0].frame_index == 2 and out[2][0].timestamp_s == 0.2
    assert out[3] == []


def test_stacked_lines_and_three_box_captions_are_merged() -> None:
    # Real OCR output of the sample's WHO poster and caption: lines overlap vertically by a few pixels.
    obs = {0: [ocr(0, "World Health", (0.70, 0.80, 0.90, 0.84)), ocr(0, "Organization", (0.71, 0.835, 0.89, 0.87)),
               ocr(0, "Thoroughly cook meat and eggs", (0.1, 0.5, 0.5, 0.54))],
           1: [ocr(1, "here's", (0.40, 0.30, 0.50, 0.35)), ocr(1, "how to", (0.39, 0.36, 0.52, 0.41)),
               ocr(1, "create", (0.40, 0.42, 0.51, 0.47))]}
    rows, _ = match_question(rec("Which organization published this poster?", ["World Health Organization"]), obs, CFG)
    assert rows[0].match == "answer" and rows[0].text == "World Health Organization"
    assert rows[0].bbox == [0.70, 0.80, 0.90, 0.87]
    rows, _ = match_question(rec("What caption appears?", ["here's how to create"]), obs, CFG)
    assert rows[0].text == "here's how to create" and rows[0].frame_index == 1


def test_fuzzy_window_inside_a_longer_line() -> None:
    obs = {0: [ocr(0, "Thoroughly cook meat and I eggs", (0.1, 0.5, 0.5, 0.54))]}
    rows, _ = match_question(rec("What should be cooked thoroughly?", ["meat and eggs"]), obs, CFG)
    assert [r.match for r in rows][:1] == ["answer"] and 0.3 < rows[0].score < 0.9
    rows, _ = match_question(rec("What should be cooked thoroughly?", ["fish and chips"]), obs, CFG)
    assert all(r.match != "answer" for r in rows)


def _continues(a: tuple, b: tuple, gap: float) -> bool:
    """The linking rule box by box, as matching wrote it before it became one array test: ``b`` continues ``a``."""
    ah, bh = a[3] - a[1], b[3] - b[1]
    h = max(ah, bh, 1e-6)
    v_overlap = min(a[3], b[3]) - max(a[1], b[1])
    h_overlap = min(a[2], b[2]) - max(a[0], b[0])
    same_line = v_overlap > 0.5 * min(ah, bh) and b[0] > a[0] and b[0] - a[2] < gap * h
    stacked = h_overlap > 0 and -0.5 * h <= b[1] - a[3] < gap * h and b[1] > a[1]
    return same_line or stacked


def test_vectorised_neighbours_equal_the_pairwise_rule() -> None:
    """Matching links boxes with one array test per frame; it must link exactly the pairs the pairwise rule links."""
    from videor4.curation.evidence import _neighbour_lists

    rng = np.random.default_rng(3)
    for trial in range(40):
        n = int(rng.integers(0, 30))
        boxes = []
        for _ in range(n):  # lines on a grid (many true neighbours) with jitter, plus strays
            x1, y1 = float(rng.choice([0.05, 0.3, 0.55]) + rng.normal(0, 0.02)), float(rng.integers(0, 12) * 0.06)
            boxes.append((x1, y1, x1 + float(rng.uniform(0.05, 0.3)), y1 + float(rng.uniform(0.02, 0.07))))
        for gap in (0.5, 1.5):
            expected = [[j for j in range(n) if j != i and _continues(boxes[i], boxes[j], gap)] for i in range(n)]
            assert _neighbour_lists(boxes, gap) == expected, (trial, gap)
    assert any(_neighbour_lists([(0, 0, 0.2, 0.05), (0.21, 0, 0.4, 0.05)], 1.5))  # the test can see a link
