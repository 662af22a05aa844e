"""Image and file content parts: where their bytes come from, their media type, and inlining at build time.

A part's payload (`ImagePart.image`, `FilePart.data`) is one of:
- an `http://` / `https://` URL, passed to providers that fetch URLs themselves;
- a `data:<media type>;base64,<data>` URL;
- raw `bytes`, or base64 text;
- a file on any other fsspec URL (`s3://…`, `gs://…`, `file://…`, `memory://…`), which `inline_parts` reads,
  streaming, and replaces by base64 text while the job is built, so its size counts in the per-request and
  per-batch byte limits like any other request byte.
"""

from __future__ import annotations

import base64
import binascii
import mimetypes
import re
from dataclasses import dataclass
from typing import Literal

import fsspec

from airflow_batchwork.values.errors import RequestValidationError
from airflow_batchwork.values.requests import BatchRequest, ChatMessage, FilePart, ImagePart

REMOTE_SCHEMES = ("http://", "https://")
_DATA_URL = re.compile(r"^data:(?P<type>[\w.+-]+/[\w.+-]+)?(?:;[\w=.+-]+)*?;base64,(?P<data>.*)$", re.DOTALL)
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
_CHUNK = 3 * 1024 * 1024  # a multiple of 3, so chunks encode to base64 that concatenates cleanly
_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", "image/png"), (b"\xff\xd8\xff", "image/jpeg"), (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"), (b"%PDF-", "application/pdf"),
)


@dataclass(frozen=True)
class Media:
    """A part's payload as providers take it: a URL to fetch, or base64 data with its media type."""

    kind: Literal["url", "base64"]
    value: str
    media_type: str | None
    filename: str | None = None

    def data_url(self) -> str:
        """A `data:` URL (base64), or the URL itself."""
        if self.kind == "url":
            return self.value
        return f"data:{self.media_type or 'application/octet-stream'};base64,{self.value}"


def sniff(head: bytes) -> str | None:
    """The media type of well-known image and PDF formats from their first bytes."""
    for magic, media_type in _MAGIC:
        if head.startswith(magic):
            return media_type
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    return None


def _guess(name: str) -> str | None:
    return mimetypes.guess_type(name.split("?", 1)[0])[0]


def is_fsspec_url(value: object) -> bool:
    """A string naming a file to read and inline (any scheme but http(s) and data)."""
    return isinstance(value, str) and bool(_SCHEME.match(value)) and not value.startswith(REMOTE_SCHEMES)


def media_of(part: ImagePart | FilePart) -> Media:
    """The payload of an (already inlined) part. Raises ValueError naming what is wrong."""
    payload = part.payload
    filename = part.filename if isinstance(part, FilePart) else None
    if isinstance(payload, bytes):
        return Media("base64", base64.b64encode(payload).decode("ascii"), part.media_type or sniff(payload[:16]),
                     filename)
    if payload.startswith(REMOTE_SCHEMES):
        return Media("url", payload, part.media_type or _guess(payload), filename)
    if payload.startswith("data:"):
        match = _DATA_URL.match(payload)
        if not match:
            raise ValueError("is a data URL that is not base64; write it as data:<media type>;base64,<data>")
        return Media("base64", match.group("data"), part.media_type or match.group("type"), filename)
    if _SCHEME.match(payload):
        raise ValueError(f"names a file ({payload[:80]}) that was not inlined; build the job with BatchClient "
                         "or the operators, which read it")
    head = b""
    try:
        head = base64.b64decode(payload[:24], validate=True)
    except (binascii.Error, ValueError):
        head = b""
    return Media("base64", payload, part.media_type or sniff(head), filename)


def _read_base64(url: str, limit: int) -> tuple[str, bytes]:
    """Stream a file into base64 text, refusing it as soon as the text would pass `limit` characters."""
    pieces: list[str] = []
    size = 0
    head = b""
    with fsspec.open(url, "rb") as handle:
        while True:
            chunk = handle.read(_CHUNK)
            if not chunk:
                break
            if not head:
                head = chunk[:16]
            text = base64.b64encode(chunk).decode("ascii")
            size += len(text)
            if size > limit:
                raise OverflowError(size)
            pieces.append(text)
    return "".join(pieces), head


def inline_parts(request: BatchRequest, *, max_bytes: int, where: str) -> BatchRequest:
    """`request` with every image/file part that names a file on an fsspec URL read and inlined as base64.

    The media type comes from the part, else the file name, else the file's first bytes. A file whose
    base64 text alone is over `max_bytes` (the provider's per-request limit) is refused while it is read."""
    if not request.messages or not any(is_fsspec_url(p.payload) for _, p in request.media_parts()):
        return request
    messages: list[ChatMessage] = []
    for m_index, message in enumerate(request.messages):
        if not isinstance(message.content, list):
            messages.append(message)
            continue
        content = []
        for p_index, part in enumerate(message.content):
            if isinstance(part, ImagePart | FilePart) and is_fsspec_url(part.payload):
                url = str(part.payload)
                field = "image" if isinstance(part, ImagePart) else "data"
                location = f"{where}.messages[{m_index}].content[{p_index}].{field}"
                try:
                    data, head = _read_base64(url, max_bytes)
                except OverflowError:
                    raise RequestValidationError(
                        location, f"the file {url} is over {max_bytes:,} bytes once base64-encoded, the "
                        f"per-request limit", "use a smaller file, or pass a URL the provider fetches itself"
                    ) from None
                except (OSError, ValueError, ImportError) as exc:
                    raise RequestValidationError(
                        location, f"cannot read {url}: {type(exc).__name__}: {exc}",
                        "check the URL and that the filesystem's package (s3fs, gcsfs, …) is installed"
                    ) from None
                media_type = part.media_type or _guess(url) or sniff(head)
                update: dict[str, object] = {field: data, "media_type": media_type}
                if isinstance(part, FilePart) and part.filename is None:
                    update["filename"] = url.rstrip("/").rsplit("/", 1)[-1] or None
                part = part.model_copy(update=update)
            content.append(part)
        messages.append(message.model_copy(update={"content": content}))
    return request.model_copy(update={"messages": messages})


def count_media(request: BatchRequest) -> tuple[int, int]:
    """(images, files) in a request."""
    parts = [p for _, p in request.media_parts()]
    return sum(isinstance(p, ImagePart) for p in parts), sum(isinstance(p, FilePart) for p in parts)
