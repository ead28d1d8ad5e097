"""A self-contained HTML page showing one shard sample or one ``videor4 eval run`` transcript.

Frames are re-executed from their references (or taken from embedded JPEG
bytes), evidence boxes are drawn on full frames in green and the regions that
crops were taken from in orange; the chat turns follow in order with each
image where the model saw it. A transcript renders the same way — every turn of
the model, every frame its clips returned and every crop, the cropped regions
drawn on their frames — so a user sees a trained checkpoint ruminate.
"""

from __future__ import annotations

import base64
import html
from pathlib import Path

import cv2
import numpy as np

from videor4.contracts.dataset import media_path
from videor4.contracts.evidence_schema import EvidenceItem
from videor4.contracts.executor import ClipCropExecutor
from videor4.contracts.media import decode_jpeg, encode_jpeg, open_video
from videor4.contracts.metrics import acc_score
from videor4.contracts.shard_codec import to_image_ref
from videor4.contracts.shard_schema import SHARD_IMAGE_TOKEN, CoTRow, MediaRef, Message, ShardRow
from videor4.contracts.view import ShardView

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
    return "data:image/jpeg;base64," + base64.b64encode(encode_jpeg(image, 85)).decode()


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
    """Renders the images of one conversation: ``evidence`` (green) and crop regions (orange) drawn on frames."""

    def __init__(self, ex: ClipCropExecutor | None, evidence: list[EvidenceItem]):
        self.ex, self.evidence = ex, evidence

    @classmethod
    def for_row(cls, row: ShardRow, data_root: Path | None, view: ShardView) -> _Renderer:
        ex = None
        if data_root is not None:
            reader = open_video(media_path(data_root, row.video.path), video_id=row.video_id)
            ex = view.executor(reader, row.initial_frames)
        return cls(ex, list(row.evidence))

    def image(self, ref: MediaRef, crops_from: dict[int, list[list[float]]]) -> np.ndarray:
        if ref.jpeg:
            img = decode_jpeg(ref.jpeg)
        elif self.ex is not None:
            img = self.ex.render(to_image_ref(ref))
        else:
            raise ValueError("no embedded media and no data root to re-execute references from")
        if ref.bbox is not None:
            return img
        boxes = [(e.bbox, GREEN, e.text) for e in self.evidence if e.frame_index == ref.frame_index]
        boxes += [(b, ORANGE, "crop") for b in crops_from.get(ref.frame_index, [])]
        return _draw(img, boxes)

    def close(self) -> None:
        if self.ex is not None:
            self.ex.reader.close()


def render_sample_html(row: ShardRow, data_root: Path | None, view: ShardView | None = None) -> str:
    """``view`` is the shards' recorded view (crop geometry); None = the default view."""
    r = _Renderer.for_row(row, data_root, view or ShardView())
    try:
        return _page(row, r)
    finally:
        r.close()


def render_transcript_html(transcript: dict, video: Path) -> str:
    """One ``videor4 eval run`` transcript (a line of ``<predictions>.transcripts.jsonl``) as a page.

    ``video`` is the question's video (or frame folder); images are re-executed from the transcript's refs with
    the view it was run with, exactly as the model saw them.
    """
    messages = [Message.model_validate(m) for m in transcript["messages"]]
    view = ShardView.model_validate(transcript["view"])
    initial = [ref["frame_index"] for ref in transcript["initial_refs"]]
    with open_video(video, video_id=str(transcript["video_id"])) as reader:
        r = _Renderer(view.executor(reader, initial), [])
        crops_from = _crops_from(messages)
        calls = [o["tool"] for t in transcript["turns"] for o in t["observations"]]
        correct = acc_score(transcript["pred_answer"], transcript["answers"])
        parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{_h(transcript['question_id'])}</title>"
                 f"<style>{_CSS}</style></head><body>",
                 f"<h1>{_h(transcript['question'])}</h1>",
                 f"<p><b>Answer:</b> {_h(transcript['pred_answer'])} — {'correct' if correct else 'wrong'} "
                 f"(ground truth: {_h(' | '.join(transcript['answers']))})</p>",
                 f"<p class='meta'>question {_h(transcript['question_id'])} · video {_h(transcript['video_id'])} · "
                 f"model {_h(transcript['model'])} · stop {_h(transcript['stop_reason'])} · "
                 f"{_h(transcript['generated_tokens'])} generated tokens · tool calls "
                 f"{_h(' → '.join(calls) or 'none')}</p>",
                 "<h2>Rumination</h2>"]
        parts += [_message_html(m.role, m.text, m.images, r, crops_from) for m in messages]
        parts.append("</body></html>")
        return "".join(parts)


def _crops_from(messages: list[Message]) -> dict[int, list[list[float]]]:
    """Frame index → the regions crops were taken from (drawn in orange on that frame)."""
    crops: dict[int, list[list[float]]] = {}
    for m in messages:
        for ref in m.images:
            if ref.bbox is not None:
                crops.setdefault(ref.frame_index, []).append(ref.bbox)
    return crops


def _h(value: object) -> str:
    """The one escaping helper: every value that reaches the page (text, ids, numbers, attributes) goes through it.

    Shards are data from elsewhere (a colleague's run, a download); a question, an op name or a config hash must
    never become markup or script in the viewer.
    """
    return html.escape(str(value), quote=True)


def _page(row: ShardRow, r: _Renderer) -> str:
    p = row.provenance
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{_h(row.sample_id)}</title>"
             f"<style>{_CSS}</style></head><body>",
             f"<h1>{_h(row.question)}</h1>",
             f"<p><b>Answers:</b> {_h(' | '.join(row.answers))}</p>",
             f"<p class='meta'>sample {_h(row.sample_id)} · stage {_h(row.stage)} · video {_h(row.video_id)} "
             f"({_h(row.video.path)}, {_h(row.video.num_frames)} frames @ {_h(f'{row.video.fps:g}')} fps) · "
             f"{_h(row.source1)} / {_h(row.source2)} · QC {_h(row.qc.status)}"
             + (" · verified" if isinstance(row, CoTRow) and row.verified else "") + "<br>"
             f"{_h(p.ocr_backend)} · {_h(p.detector_backend)} · {_h(p.decoder)} · config {_h(p.config_hash)} · "
             f"toolkit {_h(p.toolkit_version)} · split {_h(p.split)} · {_h(p.source_file)}</p>"]
    parts.append("<h2>Evidence</h2><table><tr><th>frame</th><th>time</th><th>kind</th><th>match</th><th>text</th>"
                 "<th>score</th></tr>" + "".join(
                     f"<tr><td>{_h(e.frame_index)}</td><td>{_h(f'{e.timestamp_s:.2f}')}s</td><td>{_h(e.kind)}</td>"
                     f"<td>{_h(e.match)}</td><td>{_h(e.text)}</td><td>{_h(f'{e.score:.2f}')}</td></tr>"
                     for e in row.evidence) + "</table>")
    if isinstance(row, CoTRow):
        crops_from = _crops_from(row.messages)
        parts.append(f"<h2>Trajectory ({_h(' → '.join(row.ops))})</h2>")
        for m in row.messages:
            parts.append(_message_html(m.role, m.text, m.images, r, crops_from))
    else:
        refs = [MediaRef(frame_index=i, timestamp_s=i / row.video.fps) for i in row.initial_frames]
        parts.append(f"<h2>Initial view</h2><p class='meta'>difficulty {_h(f'{row.difficulty:.2f}')} · required "
                     f"ops {_h(', '.join(row.required_ops) or 'none')}</p><div class='imgs'>")
        for ref in refs:
            parts.append(f"<figure><img src='{_h(_data_url(r.image(ref, {})))}'>"
                         f"<figcaption>frame {_h(ref.frame_index)} · {_h(f'{ref.timestamp_s:.2f}')}s</figcaption>"
                         "</figure>")
        parts.append("</div>")
    parts.append("</body></html>")
    return "".join(parts)


def _message_html(role: str, text: str, images: list[MediaRef], r: _Renderer,
                  crops_from: dict[int, list[list[float]]]) -> str:
    pieces = text.split(SHARD_IMAGE_TOKEN)
    body: list[str] = []
    for k, piece in enumerate(pieces):
        body.append(_h(piece))
        if k < len(pieces) - 1 and k < len(images):
            ref = images[k]
            label = f"frame {ref.frame_index} · {ref.timestamp_s:.2f}s" + (" · crop" if ref.bbox else "")
            body.append(f"<figure><img src='{_h(_data_url(r.image(ref, crops_from)))}'><figcaption>{_h(label)}"
                        f"</figcaption></figure>")
    return f"<div class='msg {_h(role)}'><div class='role'>{_h(role)}</div>{''.join(body)}</div>"
