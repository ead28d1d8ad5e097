"""A self-contained HTML page showing one shard sample, so a person can look instead of reading JSON.

Frames are re-executed from their references (or taken from embedded JPEG
bytes), evidence boxes are drawn on full frames in green and the regions that
crops were taken from in orange; the chat turns follow in order with each
image where the model saw it.
"""

from __future__ import annotations

import base64
import html
from pathlib import Path

import cv2
import numpy as np

from videor4.contracts.executor import ClipCropExecutor
from videor4.contracts.media import open_video
from videor4.contracts.shard_codec import to_image_ref
from videor4.contracts.shard_schema import SHARD_IMAGE_TOKEN, CoTRow, MediaRef, ShardRow

GREEN, ORANGE = (40, 200, 60), (255, 150, 0)

_CSS = """
body{font-family:system-ui,sans-serif;margin:24px;background:#fafafa;color:#222;max-width:1100px}
h1{font-size:20px} .meta{color:#555;font-size:13px} table{border-collapse:collapse;font-size:13px}
td,th{border:1px solid #ccc;padding:3px 6px} .msg{border-radius:8px;padding:10px 14px;margin:10px 0;
white-space:pre-wrap;font-size:14px} .system{background:#eee;font-size:12px;max-height:120px;overflow:auto}
.user{background:#e8f0fe} .assistant{background:#e6f4ea} .tool{background:#fff4e5}
.role{font-weight:bold;font-size:12px;text-transform:uppercase;color:#555} img{max-width:min(100%,480px);
border:1px solid #999;margin:4px 0;display:block} .imgs{display:flex;flex-wrap:wrap;gap:8px}
.imgs figure{margin:0;max-width:260px} figcaption{font-size:11px;color:#555}
"""


def _data_url(image: np.ndarray) -> str:
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 85])
    assert ok
    return "data:image/jpeg;base64," + base64.b64encode(buf.tobytes()).decode()


def _draw(image: np.ndarray, boxes: list[tuple[list[float], tuple[int, int, int], str]]) -> np.ndarray:
    out = image.copy()
    h, w = out.shape[:2]
    thick = max(2, round(min(h, w) / 200))
    for box, colour, label in boxes:
        x1, y1, x2, y2 = (round(v * s) for v, s in zip(box, (w, h, w, h)))
        cv2.rectangle(out, (x1, y1), (x2, y2), colour, thick)
        if label:
            cv2.putText(out, label[:30], (x1, max(12, y1 - 4)), cv2.FONT_HERSHEY_SIMPLEX, 0.4 * thick, colour, thick)
    return out


class _Renderer:
    def __init__(self, row: ShardRow, data_root: Path | None):
        self.row = row
        self.ex: ClipCropExecutor | None = None
        if data_root is not None:
            reader = open_video(Path(data_root) / row.video.path, video_id=row.video_id)
            self.ex = ClipCropExecutor(reader, row.initial_frames)

    def image(self, ref: MediaRef, crops_from: dict[int, list[list[float]]]) -> np.ndarray:
        if ref.jpeg:
            img = cv2.cvtColor(cv2.imdecode(np.frombuffer(ref.jpeg, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
        elif self.ex is not None:
            img = self.ex.render(to_image_ref(ref))
        else:
            raise ValueError("no embedded media and no data root to re-execute references from")
        if ref.bbox is not None:
            return img
        boxes = [(e.bbox, GREEN, e.text) for e in self.row.evidence if e.frame_index == ref.frame_index]
        boxes += [(b, ORANGE, "crop") for b in crops_from.get(ref.frame_index, [])]
        return _draw(img, boxes)

    def close(self) -> None:
        if self.ex is not None:
            self.ex.reader.close()


def render_sample_html(row: ShardRow, data_root: Path | None) -> str:
    r = _Renderer(row, data_root)
    try:
        return _page(row, r)
    finally:
        r.close()


def _page(row: ShardRow, r: _Renderer) -> str:
    esc = html.escape
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{esc(row.sample_id)}</title>"
             f"<style>{_CSS}</style></head><body>",
             f"<h1>{esc(row.question)}</h1>",
             f"<p><b>Answers:</b> {esc(' | '.join(row.answers))}</p>",
             f"<p class='meta'>sample {esc(row.sample_id)} · stage {row.stage} · video {esc(row.video_id)} "
             f"({esc(row.video.path)}, {row.video.num_frames} frames @ {row.video.fps:g} fps) · "
             f"{esc(row.source1)} / {esc(row.source2)} · QC {row.qc.status}"
             + (" · verified" if isinstance(row, CoTRow) and row.verified else "") + "<br>"
             f"{esc(row.provenance.ocr_backend)} · {esc(row.provenance.detector_backend)} · "
             f"{esc(row.provenance.decoder)} · config {row.provenance.config_hash}</p>"]
    parts.append("<h2>Evidence</h2><table><tr><th>frame</th><th>time</th><th>kind</th><th>match</th><th>text</th>"
                 "<th>score</th></tr>" + "".join(
                     f"<tr><td>{e.frame_index}</td><td>{e.timestamp_s:.2f}s</td><td>{e.kind}</td><td>{e.match}</td>"
                     f"<td>{esc(e.text)}</td><td>{e.score:.2f}</td></tr>" for e in row.evidence) + "</table>")
    if isinstance(row, CoTRow):
        crops_from: dict[int, list[list[float]]] = {}
        for m in row.messages:
            for ref in m.images:
                if ref.bbox is not None:
                    crops_from.setdefault(ref.frame_index, []).append(ref.bbox)
        parts.append(f"<h2>Trajectory ({' → '.join(row.ops)})</h2>")
        for m in row.messages:
            parts.append(_message_html(m.role, m.text, m.images, r, crops_from))
    else:
        refs = [MediaRef(frame_index=i, timestamp_s=i / row.video.fps) for i in row.initial_frames]
        parts.append(f"<h2>Initial view</h2><p class='meta'>difficulty {row.difficulty:.2f} · required ops "
                     f"{', '.join(row.required_ops) or 'none'}</p><div class='imgs'>")
        for ref in refs:
            parts.append(f"<figure><img src='{_data_url(r.image(ref, {}))}'>"
                         f"<figcaption>frame {ref.frame_index} · {ref.timestamp_s:.2f}s</figcaption></figure>")
        parts.append("</div>")
    parts.append("</body></html>")
    return "".join(parts)


def _message_html(role: str, text: str, images: list[MediaRef], r: _Renderer,
                  crops_from: dict[int, list[list[float]]]) -> str:
    pieces = text.split(SHARD_IMAGE_TOKEN)
    body: list[str] = []
    for k, piece in enumerate(pieces):
        body.append(html.escape(piece))
        if k < len(pieces) - 1 and k < len(images):
            ref = images[k]
            label = f"frame {ref.frame_index} · {ref.timestamp_s:.2f}s" + (" · crop" if ref.bbox else "")
            body.append(f"<figure><img src='{_data_url(r.image(ref, crops_from))}'><figcaption>{label}"
                        f"</figcaption></figure>")
    return f"<div class='msg {role}'><div class='role'>{role}</div>{''.join(body)}</div>"
