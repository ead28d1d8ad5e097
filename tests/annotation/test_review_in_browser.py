"""An annotator's review in the real Label Studio UI (headless Chromium), then ``videor4 qc pull`` with the real
re-synthesizer: the verdicts clicked in the browser are exactly the ones applied to the shards.

Everything is real: the server (``label_studio`` fixture, 127.0.0.1), the tasks (pushed from shard rows over
the bundled sample's videos by ``qc_push``), the browser (Debian's Chromium driven by Playwright, logged in
with the server's credentials), the pull (the CLI, which re-synthesizes the corrected sample with curation's
``TrajectorySynthesizer`` and re-OCR). Tests run in file order and share the server, the shards and the
browser page, like one reviewer's session. Screenshots of every task page land in pytest's tmp dir (the path
is printed); ``VIDEOR4_DOCS_SCREENSHOT=1`` also refreshes ``docs/img/labelstudio_review.png``.
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import pytest

from tests.browser import PAINTED_BOX_JS, chromium
from videor4.annotation.client import QCClient
from videor4.annotation.routing import RoutingConfig
from videor4.annotation.verdicts import read_rejected_rows
from videor4.contracts.rejects import REJECTS_FILE, read_rejects
from videor4.contracts.shard_io import iter_rows, read_manifest
from videor4.pipelines.cli import main
from videor4.pipelines.qc_flows import qc_push

PROJECT = "qc-browser"
REPO = Path(__file__).resolve().parents[2]
DOCS_SCREENSHOT = REPO / "docs" / "img" / "labelstudio_review.png"
ACCEPT_QID, CORRECT_QID, REJECT_QID = 900001, 900002, 900003  # the three rows push routes to humans
REJECT_REASON = "evidence not visible"
# Question 900002 ("Which theatre does the lowest sign on the post point to?") is shown on frame 29 of video
# 90001, where the sign reads "Théâtre / du PALAIS-ROYAL" inside this box (fractions of the frame; the bundled
# OCR finds the two lines at x 0.197–0.572, y 0.533–0.819). The reviewer types the answer as written and
# drags the pre-drawn box (wrong: x 0.10–0.50, y 0.20–0.35) onto the sign.
CORRECTED = "Théâtre du PALAIS-ROYAL"
SIGN_BOX = (0.18, 0.52, 0.59, 0.83)
BOX_TOL_PCT = 1.0  # a drag lands within a pixel or two; 1 % of the frame is ~8 px on screen

MAIN = ".lsf-main-view__annotation"
REGIONS_JS = """() => Htx.annotationStore.selected.regions.filter(r => r.type === 'rectangleregion').map(r => ({
    id: r.cleanId, x: r.x, y: r.y, w: r.width, h: r.height, item: r.item_index, labels: r.labels}))"""
TASK_READY_JS = """([tid, regions]) => {
  const a = window.Htx && Htx.annotationStore && Htx.annotationStore.selected;
  return !!a && String(Htx.task && Htx.task.id) === String(tid) && a.regions.length === regions;
}"""
IMAGES_READY_JS = """() => {  // the frames and the crops Image tags each show one picture (a page of their list)
  const imgs = Array.from(document.querySelectorAll('.lsf-main-view__annotation img[alt=image]'));
  return imgs.length === 2 && imgs.every(i => i.complete);
}"""
IMAGES_JS = """() => Array.from(document.querySelectorAll('.lsf-main-view__annotation img[alt=image]')).map(i => ({
  src: i.getAttribute('src'), w: i.naturalWidth, h: i.naturalHeight, complete: i.complete}))"""


@pytest.fixture(scope="module")
def review(label_studio, prefect_home, make_sample_shards, tmp_path_factory):
    """Sample shards pushed to a fresh project: three rows routed to humans, two auto_pass."""
    shards = tmp_path_factory.mktemp("review") / "shards"
    make_sample_shards(shards, label_studio.data_root)
    summary = qc_push(shards, label_studio.url, label_studio.token, PROJECT,
                      RoutingConfig(threshold=0.8, audit_fraction=0.0), progress=False)
    assert summary.tasks_created == 3
    client = QCClient.connect(label_studio.url, label_studio.token)
    pid = client.project_by_title(PROJECT)
    pushed = {r.sample_id: r for r in iter_rows(shards)}
    by_qid = {r.question_id: r for r in pushed.values()}
    tasks = {t.data["sample_id"]: t for t in client.iter_tasks(pid, with_annotations=True)}
    assert {by_qid[q].sample_id for q in (ACCEPT_QID, CORRECT_QID, REJECT_QID)} == set(tasks)
    return {"ls": label_studio, "shards": shards, "client": client, "pid": pid, "pushed": pushed, "by_qid": by_qid,
            "tasks": tasks, "shots": tmp_path_factory.mktemp("screenshots")}


@pytest.fixture(scope="module")
def page(review, tmp_path_factory):
    with chromium(tmp_path_factory.mktemp("chromium-profile"), width=1280, height=1700) as context:
        pg = context.pages[0] if context.pages else context.new_page()
        pg.set_default_timeout(30_000)
        yield pg


def _task(review, qid):
    return review["tasks"][review["by_qid"][qid].sample_id]


def _open(page, review, task) -> None:
    page.goto(f"{review['ls'].url}/projects/{review['pid']}/data?task={task.id}")
    page.wait_for_function(TASK_READY_JS, arg=[task.id, len(task.predictions[0].result)])
    page.wait_for_function(IMAGES_READY_JS)


def _frames_stage(page):
    stage = page.locator(f"{MAIN} .konvajs-content").first  # the first Image tag of the config: the frames
    stage.scroll_into_view_if_needed()
    return stage


def _painted_green(page) -> list[dict]:
    """Green pixel boxes (percent) of the frames stage's region canvases (the image canvas is left out)."""
    stage = _frames_stage(page)
    layers = stage.evaluate(PAINTED_BOX_JS, "green")
    return [lay for lay in layers if lay["share"] < 0.5 and lay["matching"]]


def _wait_painted(page, expected: list[float]) -> list[dict]:
    for _ in range(40):
        layers = _painted_green(page)
        if layers and all(abs(a - b) <= BOX_TOL_PCT for a, b in zip(layers[0]["box"], expected)):
            return layers
        page.wait_for_timeout(100)
    return _painted_green(page)


def _drag(page, start: tuple[float, float], end: tuple[float, float], steps: int = 12) -> None:
    page.mouse.move(*start)
    page.mouse.down()
    for k in range(1, steps + 1):
        page.mouse.move(start[0] + (end[0] - start[0]) * k / steps, start[1] + (end[1] - start[1]) * k / steps)
    page.mouse.up()


def _submit(page, task) -> dict:
    with page.expect_response(lambda r: r.request.method == "POST"
                              and f"/api/tasks/{task.id}/annotations" in r.url) as resp:
        page.get_by_role("button", name="Submit current annotation", exact=True).click()
    assert resp.value.status == 201, resp.value.text()[:300]
    return resp.value.json()


def _results(annotation: dict) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for r in annotation["result"]:
        out.setdefault(r["from_name"], []).append(r)
    return out


# --- the session ---------------------------------------------------------------------------------------------
def test_annotator_logs_in_and_opens_the_project(review, page):
    ls = review["ls"]
    creds = ls.server.credentials
    page.goto(f"{ls.url}/user/login/")
    page.fill("#email", creds.username)
    page.fill("#password", creds.password)
    with page.expect_navigation():
        page.click("button[type=submit]")
    assert "/user/login" not in page.url
    who = page.request.get(f"{ls.url}/api/current-user/whoami")  # the browser's session cookie, no token
    assert who.ok and who.json()["email"] == creds.username

    page.goto(f"{ls.url}/projects/")
    page.get_by_text(PROJECT, exact=True).click()  # the project list → its task table
    rows = page.locator(".lsf-table-row")
    rows.filter(has_text="Ground truth:").first.wait_for()
    assert rows.count() == len(review["tasks"]) == 3
    task = _task(review, ACCEPT_QID)
    rows.filter(has_text=task.data["answers_text"]).click()  # a row opens its task for labeling
    page.wait_for_function(TASK_READY_JS, arg=[task.id, len(task.predictions[0].result)])
    assert f"task={task.id}" in page.url


@pytest.mark.parametrize("qid", [ACCEPT_QID, CORRECT_QID, REJECT_QID])
def test_task_page_shows_question_frames_crops_and_evidence_boxes(review, page, qid):
    task = _task(review, qid)
    row = review["by_qid"][qid]
    _open(page, review, task)
    main_view = page.locator(MAIN)
    assert main_view.get_by_text(row.question, exact=True).is_visible()
    assert main_view.get_by_text(task.data["answers_text"], exact=True).is_visible()
    phrases = main_view.locator("[class*=phrase--]")
    assert phrases.count() == len(task.data["chat"])
    for k, turn in enumerate(task.data["chat"]):
        assert " ".join(turn["text"].split())[:60] in " ".join(phrases.nth(k).inner_text().split()), k

    # the pre-drawn evidence: the prediction's regions, each with its id, frame and box
    prediction = {r["id"]: r for r in task.predictions[0].result}
    regions = page.evaluate(REGIONS_JS)
    assert [r["id"] for r in regions] == [f"ev{i}" for i in range(len(row.evidence))] == list(prediction)
    for reg in regions:
        want = prediction[reg["id"]]
        assert reg["item"] == want["item_index"] and reg["labels"] == want["value"]["rectanglelabels"]
        assert [reg["x"], reg["y"], reg["w"], reg["h"]] == pytest.approx(
            [want["value"][k] for k in ("x", "y", "width", "height")], abs=1e-6)

    frames, crops = task.data["frames"], task.data["crops"]
    first = task.predictions[0].result[0]
    video_size = (first["original_width"], first["original_height"])  # the frames are full video frames
    pagers = main_view.locator(".lsf-pagination__page-indicator")
    for k in range(len(frames)):  # page through the frames: each is loaded and shows its boxes, drawn
        assert " ".join(pagers.first.inner_text().split()) == f"{k + 1} of {len(frames)}"
        page.wait_for_function(IMAGES_READY_JS)
        frame_img, crop_img = page.evaluate(IMAGES_JS)
        assert (frame_img["w"], frame_img["h"]) == video_size, frame_img
        assert crop_img["w"] > 0 and crop_img["h"] > 0, crop_img
        on_page = [r for r in regions if r["item"] == k]
        assert on_page, f"frame page {k} has no evidence box"
        want = [min(r["x"] for r in on_page), min(r["y"] for r in on_page),
                max(r["x"] + r["w"] for r in on_page), max(r["y"] + r["h"] for r in on_page)]
        layers = _wait_painted(page, want)
        assert len(layers) == 1 and layers[0]["box"] == pytest.approx(want, abs=BOX_TOL_PCT), (layers, want)
        page.screenshot(path=str(review["shots"] / f"task-{qid}-frame-{k + 1}.png"))
        if k + 1 < len(frames):
            src = frame_img["src"]
            main_view.locator(".lsf-pagination").first.locator(
                ".lsf-pagination__btn_arrow-right:not(.lsf-pagination__btn_arrow-right-double)").click()
            page.wait_for_function("(src) => { const i = document.querySelector("
                                   "'.lsf-main-view__annotation img[alt=image]'); return i && i.complete && "
                                   "i.getAttribute('src') !== src; }", arg=src)
    assert " ".join(pagers.nth(1).inner_text().split()) == f"1 of {len(crops)}"
    print(f"\nscreenshots: {review['shots']}")


def test_accept(review, page):
    task = _task(review, ACCEPT_QID)
    _open(page, review, task)
    page.locator(MAIN).get_by_label("accept").check()
    ann = _results(_submit(page, task))
    assert [r["value"]["choices"] for r in ann["verdict"]] == [["accept"]]
    assert "corrected_answer" not in ann and "reject_reason" not in ann
    # the untouched pre-drawn boxes come back unchanged (verdicts compare them to the prediction)
    assert {r["id"]: r["value"]["x"] for r in ann["evidence"]} == {
        r["id"]: r["value"]["x"] for r in task.predictions[0].result}


def test_reject_with_a_reason(review, page):
    task = _task(review, REJECT_QID)
    _open(page, review, task)
    main_view = page.locator(MAIN)
    reason = main_view.get_by_label(REJECT_REASON)
    main_view.get_by_label("reject").check()
    reason.check()  # the reasons only show once "reject" is chosen
    ann = _results(_submit(page, task))
    assert [r["value"]["choices"] for r in ann["verdict"]] == [["reject"]]
    assert [r["value"]["choices"] for r in ann["reject_reason"]] == [[REJECT_REASON]]


def test_correct_the_answer_and_move_the_box(review, page):
    task = _task(review, CORRECT_QID)
    _open(page, review, task)
    main_view = page.locator(MAIN)
    answer_box = main_view.locator("input[name=corrected_answer]")
    answer_box.fill(CORRECTED)
    answer_box.press("Enter")  # a one-row TextArea adds its text on Enter
    main_view.get_by_label("accept").check()

    stage = _frames_stage(page)
    geo = stage.bounding_box()
    at = lambda x, y: (geo["x"] + x / 100 * geo["width"], geo["y"] + y / 100 * geo["height"])
    [box] = page.evaluate(REGIONS_JS)
    assert box["id"] == "ev0"
    centre = at(box["x"] + box["w"] / 2, box["y"] + box["h"] / 2)
    page.mouse.click(*centre)  # select the box, then drag it by its body …
    x1, y1, x2, y2 = (100 * v for v in SIGN_BOX)
    _drag(page, centre, (centre[0] + (x1 - box["x"]) / 100 * geo["width"],
                         centre[1] + (y1 - box["y"]) / 100 * geo["height"]))
    [moved] = page.evaluate(REGIONS_JS)
    assert [moved["x"], moved["y"]] == pytest.approx([x1, y1], abs=BOX_TOL_PCT)
    _drag(page, at(moved["x"] + moved["w"], moved["y"] + moved["h"]), at(x2, y2))  # … and its corner
    [fixed] = page.evaluate(REGIONS_JS)
    assert [fixed["x"], fixed["y"], fixed["x"] + fixed["w"], fixed["y"] + fixed["h"]] == pytest.approx(
        [x1, y1, x2, y2], abs=BOX_TOL_PCT)
    page.keyboard.press("Escape")  # deselect: the box is drawn (and shot) as reviewers see it
    layers = _wait_painted(page, [x1, y1, x2, y2])
    assert len(layers) == 1 and layers[0]["box"] == pytest.approx([x1, y1, x2, y2], abs=BOX_TOL_PCT)
    shot = review["shots"] / "task-corrected.png"
    page.screenshot(path=str(shot))
    if os.environ.get("VIDEOR4_DOCS_SCREENSHOT"):
        _write_docs_png(shot, DOCS_SCREENSHOT)

    ann = _results(_submit(page, task))
    assert [r["value"]["text"] for r in ann["corrected_answer"]] == [[CORRECTED]]
    assert [r["value"]["choices"] for r in ann["verdict"]] == [["accept"]]
    [ev] = ann["evidence"]
    v = ev["value"]
    assert ev["id"] == "ev0" and ev["item_index"] == 0
    assert [v["x"], v["y"], v["x"] + v["width"], v["y"] + v["height"]] == pytest.approx(
        [x1, y1, x2, y2], abs=BOX_TOL_PCT)


def test_pull_applies_exactly_the_verdicts_given_in_the_browser(review, capsys):
    ls, shards, pushed, by_qid = review["ls"], review["shards"], review["pushed"], review["by_qid"]
    capsys.readouterr()
    rc = main(["qc", "pull", "--shards", str(shards), "--url", ls.url, "--api-key", ls.token,
               "--project", PROJECT, "--json"])
    out = capsys.readouterr().out
    assert rc == 0, out
    summary = json.loads(next(line for line in out.splitlines() if line.startswith("{")))
    assert summary["verdicts"] == summary["changes"] == {"human_accept": 1, "human_reject": 1, "corrected": 1}
    rows = {r.sample_id: r for r in iter_rows(shards)}
    admin = ls.server.credentials.username

    accepted = rows[by_qid[ACCEPT_QID].sample_id]
    before = pushed[accepted.sample_id]
    assert accepted.qc.status == "human_accept" and accepted.qc.annotator == admin and accepted.qc.time
    assert accepted.model_copy(update={"qc": before.qc}) == before  # nothing but the verdict changed

    rejected_id = by_qid[REJECT_QID].sample_id
    assert rejected_id not in rows
    [reject] = read_rejects(shards / REJECTS_FILE)  # kept aside, with the reviewer's reason
    assert (reject.sample_id, reject.stage, reject.reason, reject.message, reject.annotator) == (
        rejected_id, "qc", "human_reject", REJECT_REASON, admin)
    [kept] = read_rejected_rows(shards)
    assert kept.qc.status == "human_reject" and kept.qc.reason == REJECT_REASON
    assert kept.model_copy(update={"qc": pushed[rejected_id].qc}) == pushed[rejected_id]  # the row, intact

    fixed = rows[by_qid[CORRECT_QID].sample_id]
    before = pushed[fixed.sample_id]
    assert fixed.qc.status == "corrected" and fixed.qc.annotator == admin
    assert fixed.answers == [CORRECTED] != before.answers
    # the moved box is the row's evidence now: same frame, the sign's box, the corrected text
    [ev] = fixed.evidence
    assert ev.frame_index == before.evidence[0].frame_index == 29 and ev.match == "answer" and ev.text == CORRECTED
    assert ev.bbox == pytest.approx(list(SIGN_BOX), abs=BOX_TOL_PCT / 100)
    # re-synthesized on the video and re-verified by re-OCR: a new trajectory that looks at frame 29 and answers
    # with the corrected text
    assert fixed.verified and fixed.messages != before.messages and fixed.ops
    assert fixed.messages[-1].role == "assistant" and fixed.messages[-1].text.endswith(f"<answer>{CORRECTED}</answer>")
    assert 29 in {img.frame_index for m in fixed.messages for img in m.images}

    for sid, row in rows.items():  # the confident rows were not touched
        if sid not in (accepted.sample_id, fixed.sample_id):
            assert row == pushed[sid] and row.qc.status == "auto_pass"
    manifest = read_manifest(shards)
    assert manifest["qc"] == {"auto_pass": 2, "corrected": 1, "human_accept": 1}
    assert manifest["qc_review"]["rejects"] == 1


def _write_docs_png(src: Path, dest: Path, max_bytes: int = 400_000) -> None:
    """The screenshot as a palette PNG small enough to commit (octree keeps the few saturated UI colours, e.g.
    the green box outline, that median cut merges away)."""
    from PIL import Image

    img = Image.open(src).convert("RGB")
    for colours in (256, 128, 64):
        buf = io.BytesIO()
        img.quantize(colors=colours, method=Image.Quantize.FASTOCTREE, dither=Image.Dither.NONE).save(
            buf, format="PNG", optimize=True)
        if buf.tell() <= max_bytes:
            break
    assert buf.tell() <= max_bytes, f"{dest.name} would be {buf.tell()} bytes"
    dest.write_bytes(buf.getvalue())
