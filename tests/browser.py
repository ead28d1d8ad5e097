"""Headless Chromium for the browser tests: Playwright driving Debian's ``chromium``, never a downloaded browser.

``make test`` installs both: Playwright (its wheel carries the driver) with the ``dev`` extra, Chromium with
``scripts/install_system_deps.sh``. A missing one fails the test with that instruction — a UI that is not
looked at is not tested, so these tests never skip.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from playwright.sync_api import BrowserContext

# Flags that work on the test machines (no GPU, no sandbox, no network chatter of the browser itself).
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def chromium_executable() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if not found:
        pytest.fail("chromium is missing: run `make system-deps` (scripts/install_system_deps.sh, as root) or "
                    "`sudo apt-get install -y chromium`")
    return found


@contextmanager
def chromium(profile: Path, *, width: int = 1280, height: int = 1000) -> Iterator[BrowserContext]:
    """A headless Chromium with a fresh profile in ``profile`` (one browser context, closed on exit)."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("playwright is missing: `.venv/bin/pip install -e '.[dev]'` (make test does this)")
    executable = chromium_executable()
    with sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            str(profile), executable_path=executable, headless=True, args=CHROMIUM_ARGS,
            viewport={"width": width, "height": height})
        try:
            yield context
        finally:
            context.close()


# JS: the bounding box (percent of the canvas) of the painted pixels of one colour family, per canvas of a
# Konva stage. Label Studio paints the image and its regions on separate canvases, so a region layer that
# holds exactly the box's pixels proves the box is drawn where the region says.
PAINTED_BOX_JS = """(stage, family) => {
  const match = { green: (r, g, b) => g > r + 40 && g > b + 40 }[family];
  return Array.from(stage.querySelectorAll('canvas')).map(cv => {
    const W = cv.width, H = cv.height, d = cv.getContext('2d').getImageData(0, 0, W, H).data;
    let painted = 0, n = 0, x1 = W, y1 = H, x2 = -1, y2 = -1;
    for (let i = 0; i < d.length; i += 4) {
      if (!d[i + 3]) continue;
      painted++;
      if (!match(d[i], d[i + 1], d[i + 2])) continue;
      n++; const p = i / 4, u = p % W, v = (p - u) / W;
      x1 = Math.min(x1, u); x2 = Math.max(x2, u); y1 = Math.min(y1, v); y2 = Math.max(y2, v);
    }
    return {painted, matching: n, share: painted / (W * H),
            box: n ? [100 * x1 / W, 100 * y1 / H, 100 * (x2 + 1) / W, 100 * (y2 + 1) / H] : null};
  });
}"""
