"""The emulator's deterministic model (contract §8), shared by every emulated provider.

Pure functions only: no HTTP, no provider wire shapes. Provider route modules translate their
request bodies into ``(messages, system, max_tokens)`` and render :class:`Reply` into their own
response objects.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "DEFAULT_EMBEDDING_DIMENSIONS",
    "MARKERS",
    "Reply",
    "content_text",
    "count_words",
    "embed",
    "find_marker",
    "generate",
    "marker_token",
]

DEFAULT_EMBEDDING_DIMENSIONS = 8

# Item-fault markers, in priority order: when a request carries several, the first listed wins.
# Add new markers here (e.g. "invalid"); providers decide what each marker means on their wire.
MARKERS: tuple[str, ...] = ("error", "expire")

# Content-part types whose ``text`` counts as message text (chat, Responses API, Anthropic blocks).
_TEXT_PART_TYPES = frozenset({"text", "input_text", "output_text"})


@dataclass(frozen=True)
class Reply:
    """One deterministic completion: the text and its word-based token counts."""

    text: str
    input_tokens: int
    output_tokens: int
    truncated: bool = False
    """True when ``max_tokens`` cut the reply short (finish reason "length" / "max_tokens")."""

    @property
    def total_tokens(self) -> int:
        """input_tokens + output_tokens."""
        return self.input_tokens + self.output_tokens


def marker_token(name: str) -> str:
    """The literal text of a marker, e.g. ``"[[error]]"`` for ``"error"``."""
    return f"[[{name}]]"


def _strings(value: object) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, Mapping):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _strings(item)


def find_marker(payload: object, markers: Sequence[str] = MARKERS) -> str | None:
    """Return the first of ``markers`` whose ``[[name]]`` occurs in any string inside ``payload``.

    ``payload`` is a request body (any JSON value); every string in it is searched, so a marker in
    the prompt, a message, the system prompt or an embedding input all count.
    """
    texts = list(_strings(payload))
    for name in markers:
        token = marker_token(name)
        if any(token in text for text in texts):
            return name
    return None


def content_text(content: object) -> str:
    """Text of one message's content: a string as is, or the text parts of a part list joined by newlines.

    Non-text parts (images, tool calls, ...) are ignored; ``None`` gives ``""``.
    """
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, Mapping):
        content = [content]
    if isinstance(content, list | tuple):
        texts = [
            part["text"]
            for part in content
            if isinstance(part, Mapping)
            and part.get("type", "text") in _TEXT_PART_TYPES
            and isinstance(part.get("text"), str)
        ]
        return "\n".join(texts)
    return str(content)


def count_words(*texts: str) -> int:
    """Number of whitespace-separated words across ``texts`` (the emulator's token count)."""
    return sum(len(text.split()) for text in texts)


def generate(
    messages: Iterable[Mapping[str, Any]],
    system: object = None,
    max_tokens: int | None = None,
) -> Reply:
    """Echo the last user message.

    ``messages`` are ``{"role", "content"}`` mappings (content: string or part list); ``system`` is a
    string or part list. The reply is ``"echo: "`` + the last user message's text; input tokens count
    the words of the system prompt and every message; with ``max_tokens`` the reply is cut to that
    many words and marked truncated.
    """
    texts = [content_text(system)]
    last_user = ""
    for message in messages:
        text = content_text(message.get("content"))
        texts.append(text)
        if message.get("role") == "user":
            last_user = text
    text = f"echo: {last_user}"
    words = text.split()
    truncated = max_tokens is not None and len(words) > max_tokens
    if truncated:
        text = " ".join(words[: max(max_tokens or 0, 0)])
    return Reply(
        text=text,
        input_tokens=count_words(*texts),
        output_tokens=count_words(text),
        truncated=truncated,
    )


def embed(text: str, dimensions: int = DEFAULT_EMBEDDING_DIMENSIONS) -> list[float]:
    """Deterministic unit vector of ``dimensions`` floats derived from a hash of ``text``."""
    if dimensions < 1:
        raise ValueError(f"dimensions must be at least 1, got {dimensions}")
    raw = hashlib.shake_256(text.encode("utf-8")).digest(4 * dimensions)
    values = [int.from_bytes(raw[i : i + 4], "big") / 2**31 - 1.0 for i in range(0, len(raw), 4)]
    norm = math.sqrt(sum(value * value for value in values))
    if norm == 0.0:  # practically unreachable; keeps the result a unit vector regardless
        return [1.0] + [0.0] * (dimensions - 1)
    return [value / norm for value in values]
