"""The chat <-> shard codec: HF-style chat messages and re-executable image references in shard rows.

Shards store a conversation as messages whose ``text`` marks each image with :data:`SHARD_IMAGE_TOKEN` and
whose ``images`` are :class:`MediaRef` references (frame, time, box in source-frame coordinates, optional JPEG
bytes). These two functions are exact inverses, so what synthesis writes is what SFT, QC and the viewer read.
"""

from __future__ import annotations

from collections.abc import Sequence

from videor4.contracts.executor import ImageRef
from videor4.contracts.shard_schema import SHARD_IMAGE_TOKEN, MediaRef, Message


def to_media_ref(ref: ImageRef, jpeg: bytes | None = None) -> MediaRef:
    return MediaRef(frame_index=ref.frame_index, timestamp_s=ref.timestamp_s,
                    bbox=None if ref.bbox is None else [float(v) for v in ref.bbox], jpeg=jpeg)


def to_image_ref(ref: MediaRef | dict) -> ImageRef:
    d = ref if isinstance(ref, dict) else ref.model_dump()
    return ImageRef(int(d["frame_index"]), float(d["timestamp_s"]), None if d["bbox"] is None else tuple(d["bbox"]))


def chat_to_shard_messages(messages: Sequence[dict], refs: Sequence[ImageRef]) -> list[Message]:
    """HF-style chat (content parts) → shard messages: text with ``<image>`` placeholders + refs in order."""
    out: list[Message] = []
    it = iter(refs)
    for m in messages:
        content = m["content"]
        if isinstance(content, str):
            out.append(Message(role=m["role"], text=content))
            continue
        parts, images = [], []
        for part in content:
            if part.get("type") == "image":
                parts.append(SHARD_IMAGE_TOKEN)
                images.append(to_media_ref(next(it)))
            else:
                parts.append(part.get("text", ""))
        out.append(Message(role=m["role"], text="".join(parts), images=images))
    return out


def shard_messages_to_chat(messages: Sequence[Message | dict]) -> tuple[list[dict], list[ImageRef]]:
    """The exact inverse: shard messages → HF-style chat with image parts, and the refs to render, in order."""
    chat: list[dict] = []
    refs: list[ImageRef] = []
    for m in messages:
        d = m if isinstance(m, dict) else m.model_dump()
        images = d.get("images") or []
        if not images and d["role"] in ("system", "assistant"):
            chat.append({"role": d["role"], "content": d["text"]})
            continue
        pieces = d["text"].split(SHARD_IMAGE_TOKEN)
        content: list[dict] = []
        for k, piece in enumerate(pieces):
            if piece:
                content.append({"type": "text", "text": piece})
            if k < len(pieces) - 1:
                content.append({"type": "image"})
        refs.extend(to_image_ref(r) for r in images)
        chat.append({"role": d["role"], "content": content})
    return chat, refs
