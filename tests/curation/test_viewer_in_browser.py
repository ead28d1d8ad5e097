"""The trajectory viewer (``videor4 shards inspect --html``) looked at in a real browser, offline.

A curated sample of the bundled dataset is rendered by the CLI and opened from ``file://`` in headless
Chromium (Playwright, Debian's browser) with every request intercepted: the page must show each chat turn in
order, load every image the row references, carry the evidence boxes (green) and the crop sources (orange)
drawn on its full frames — checked on the decoded pixels, against the same frames without boxes — and ask
for nothing from the network.
"""

from __future__ import annotations

import base64
from pathlib import Path
from urllib.parse import urlparse

import cv2
import pytest

from tests.browser import chromium
from tests.conftest import SampleRun
from videor4.contracts.media import open_video
from videor4.contracts.shard_io import iter_rows, read_manifest
from videor4.contracts.shard_schema import SHARD_IMAGE_TOKEN, CoTRow
from videor4.pipelines.cli import main

# JS: for each box (fractions of the image), the share of points along its edges that have a pixel of the given
# colour within ``band`` pixels across the edge, and how many points were looked at. Points where the line
# cannot show are left out: at the image border (the line falls outside) and on another drawn box's edge
# (painted over). The viewer's lines are 2+ px wide, so a drawn box scores ~1, an undrawn frame ~0.
EDGE_SCORE_JS = """async ([src, boxes, others, colour, band]) => {
  const img = new Image(); img.src = src; await img.decode();
  const W = img.naturalWidth, H = img.naturalHeight, cv = document.createElement('canvas');
  cv.width = W; cv.height = H; const ctx = cv.getContext('2d'); ctx.drawImage(img, 0, 0);
  const d = ctx.getImageData(0, 0, W, H).data;
  const like = {green: (r, g, b) => g > 140 && g - r > 70 && g - b > 60,
                orange: (r, g, b) => r > 190 && r - b > 110 && g > 80 && g < 210}[colour];
  const px = ([x1, y1, x2, y2]) => [Math.round(x1 * W), Math.round(y1 * H), Math.round(x2 * W), Math.round(y2 * H)];
  const near = (u, v, [X1, Y1, X2, Y2], m) => u >= X1 - m && u <= X2 + m && v >= Y1 - m && v <= Y2 + m &&
      (Math.abs(u - X1) <= m || Math.abs(u - X2) <= m || Math.abs(v - Y1) <= m || Math.abs(v - Y2) <= m);
  const margin = band + 3, other = others.map(px);
  const hidden = (u, v) => u < margin || v < margin || u > W - 1 - margin || v > H - 1 - margin ||
      other.some(o => near(u, v, o, margin));
  const hit = (u, v, du, dv) => { for (let k = -band; k <= band; k++) {
      const x = Math.round(u + k * du), y = Math.round(v + k * dv);
      if (x < 0 || y < 0 || x >= W || y >= H) continue;
      const i = (y * W + x) * 4; if (like(d[i], d[i + 1], d[i + 2])) return true; } return false; };
  return boxes.map(box => {
    const [X1, Y1, X2, Y2] = px(box);
    let n = 0, ok = 0;
    for (let t = 0.05; t <= 0.95; t += 0.01) {
      const u = X1 + t * (X2 - X1), v = Y1 + t * (Y2 - Y1);
      for (const [a, b, du, dv] of [[u, Y1, 0, 1], [u, Y2, 0, 1], [X1, v, 1, 0], [X2, v, 1, 0]]) {
        if (hidden(a, b)) continue;
        n++; ok += hit(a, b, du, dv);
      }
    }
    return [n ? ok / n : null, n];
  });
}"""
DRAWN_MIN, UNDRAWN_MAX, MIN_POINTS = 0.9, 0.2, 20


def _pick_row(shards: Path) -> CoTRow:
    """A trajectory whose full frames carry both colours, each box clear of the frame's border (visible):
    evidence (green) and a crop's source region (orange)."""
    inside = lambda b: min(b[0], b[1]) > 0.01 and max(b[2], b[3]) < 0.99
    for row in iter_rows(shards, ["crp", "drp"]):
        full = {img.frame_index for m in row.messages for img in m.images if img.bbox is None}
        cropped = {img.frame_index for m in row.messages for img in m.images if img.bbox and inside(img.bbox)}
        if full & {e.frame_index for e in row.evidence if inside(e.bbox)} and full & cropped:
            return row
    pytest.fail(f"no trajectory in {shards} shows both an evidence frame and a crop's source frame")


def _expected_boxes(row: CoTRow) -> list[dict]:
    """Per image of the row, in page order: what the viewer must have drawn on it."""
    crops_from: dict[int, list[list[float]]] = {}
    for m in row.messages:
        for img in m.images:
            if img.bbox is not None:
                crops_from.setdefault(img.frame_index, []).append(list(img.bbox))
    out = []
    for m in row.messages:
        for img in m.images:
            full = img.bbox is None
            evidence = [list(e.bbox) for e in row.evidence if e.frame_index == img.frame_index]
            out.append({"frame": img.frame_index, "green": evidence if full else [],
                        "orange": crops_from.get(img.frame_index, []) if full else []})
    return out


def _undrawn(data_root: Path, row: CoTRow, frame: int, size: tuple[int, int]) -> str:
    """The frame straight from the video, at the size the page shows it, with nothing drawn (a data: URL)."""
    with open_video(data_root / row.video.path, video_id=row.video_id) as reader:
        [(_, rgb)] = reader.read([frame])
    small = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)
    ok, buf = cv2.imencode(".png", cv2.cvtColor(small, cv2.COLOR_RGB2BGR))
    assert ok
    return "data:image/png;base64," + base64.b64encode(buf.tobytes()).decode()


def test_viewer_page_in_a_browser_shows_every_turn_image_and_box_offline(sample_run: SampleRun, tmp_path: Path):
    shards = sample_run.shards
    row = _pick_row(shards)
    html = tmp_path / "sample.html"
    assert main(["shards", "inspect", str(shards), "--sample", row.sample_id, "--html", str(html)]) == 0
    data_root = Path(read_manifest(shards)["data_root"])

    requested: list[str] = []
    blocked: list[str] = []

    def guard(route):  # every request the page makes passes here; only file: and data: may proceed
        url = route.request.url
        requested.append(url)
        if urlparse(url).scheme in ("file", "data"):
            route.continue_()
        else:
            blocked.append(url)
            route.abort()

    with chromium(tmp_path / "profile", width=1100, height=1400) as context:
        context.route("**/*", guard)
        page = context.pages[0] if context.pages else context.new_page()
        page.on("websocket", lambda ws: blocked.append(ws.url))
        page.goto(html.as_uri(), wait_until="load")

        # every turn, in order, with its text
        turns = page.locator("div.msg")
        assert turns.count() == len(row.messages)
        assert [turns.nth(k).locator(".role").inner_text().strip().lower() for k in range(turns.count())] == [
            m.role for m in row.messages]
        for k, m in enumerate(row.messages):
            shown = " ".join(turns.nth(k).inner_text().split())
            for piece in m.text.split(SHARD_IMAGE_TOKEN):
                assert " ".join(piece.split())[:80] in shown, (k, piece[:80])

        # every image the row references, where the model saw it, actually decoded
        images = page.evaluate("""() => Array.from(document.querySelectorAll('div.msg')).map(d =>
            Array.from(d.querySelectorAll('img')).map(i => ({src: i.getAttribute('src'), w: i.naturalWidth,
                                                              h: i.naturalHeight, complete: i.complete})))""")
        assert [len(imgs) for imgs in images] == [len(m.images) for m in row.messages]
        flat = [img for imgs in images for img in imgs]
        assert len(flat) == sum(len(m.images) for m in row.messages) == page.locator("img").count()
        assert all(i["complete"] and i["w"] > 0 and i["h"] > 0 for i in flat), flat
        assert all(i["src"].startswith("data:image/jpeg;base64,") for i in flat)

        # boxes drawn on the full frames: green evidence, orange crop sources; absent from the same undrawn frame
        expected = _expected_boxes(row)
        checked = {"green": 0, "orange": 0}
        for img, want in zip(flat, expected):
            for colour in ("green", "orange"):
                if not want[colour]:
                    continue
                others = want["orange" if colour == "green" else "green"]
                undrawn = _undrawn(data_root, row, want["frame"], (img["w"], img["h"]))
                drawn = page.evaluate(EDGE_SCORE_JS, [img["src"], want[colour], others, colour, 2])
                plain = page.evaluate(EDGE_SCORE_JS, [undrawn, want[colour], others, colour, 2])
                for box, (score, n), (score0, _) in zip(want[colour], drawn, plain):
                    if n < MIN_POINTS:  # a box along the frame's border or under another box: nothing to see
                        continue
                    assert score >= DRAWN_MIN, (colour, want["frame"], box, score)
                    assert score0 <= UNDRAWN_MAX, (colour, want["frame"], box, score0)
                    checked[colour] += 1
        assert checked["green"] >= 1 and checked["orange"] >= 1, checked

        page.screenshot(path=str(tmp_path / "viewer.png"), full_page=True)

    assert html.as_uri() in requested  # the guard saw the page itself …
    assert blocked == []  # … and nothing that would leave the machine
    assert {urlparse(u).scheme for u in requested} <= {"file", "data"}, requested
