"""The emulator's deterministic model (contract §8), shared by every emulated provider.

Pure functions only: no HTTP, no provider wire shapes. Provider route modules translate their
request bodies into ``(messages, system, max_tokens)`` and render :class:`Reply` into their own
response objects.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "DEFAULT_EMBEDDING_DIMENSIONS",
    "MARKERS",
    "Reply",
    "ToolCall",
    "conforming_instance",
    "content_text",
    "count_parts",
    "count_words",
    "embed",
    "find_marker",
    "generate",
    "marker_token",
    "media_note",
    "structured_text",
]

DEFAULT_EMBEDDING_DIMENSIONS = 8

# Item-fault markers, in priority order: when a request carries several, the first listed wins.
# Add new markers here; providers decide what each marker means on their wire. ``transient`` fails an
# item with a retryable error the first time the emulator sees it and lets it succeed when sent again.
MARKERS: tuple[str, ...] = ("error", "expire", "transient")
# Reply markers shape a successful reply instead of its outcome: ``[[invalid]]`` makes a structured
# output request answer JSON that does not match its schema.
INVALID_OUTPUT_MARKER = "invalid"
ERROR_MESSAGE = "Emulated error: the request contains the [[error]] marker."
TRANSIENT_MESSAGE = "Emulated transient failure ([[transient]]): the server is overloaded; retry the request."

# Content-part types whose ``text`` counts as message text (chat, Responses API, Anthropic blocks).
_TEXT_PART_TYPES = frozenset({"text", "input_text", "output_text"})


@dataclass(frozen=True)
class ToolCall:
    """A deterministic tool call: ``arguments`` conform to the tool's JSON Schema."""

    name: str
    arguments: Any

    @property
    def arguments_json(self) -> str:
        return json.dumps(self.arguments, separators=(",", ":"), ensure_ascii=False)


def count_parts(value: object, classify: Callable[[Mapping[str, Any]], str | None]) -> tuple[int, int]:
    """(images, files) among every mapping inside ``value`` (messages, content lists, nested tool results),
    as ``classify`` names them ("image", "file" or None)."""
    images = files = 0
    stack: list[object] = [value]
    while stack:
        current = stack.pop()
        if isinstance(current, Mapping):
            kind = classify(current)
            if kind == "image":
                images += 1
            elif kind == "file":
                files += 1
            stack.extend(v for v in current.values() if isinstance(v, Mapping | list))
        elif isinstance(current, list):
            stack.extend(current)
    return images, files


def media_note(images: int, files: int) -> str:
    """`` (saw 1 image, 2 files)``: what the echo adds when a request carried images or files."""
    if not images and not files:
        return ""
    return f" (saw {images} image{'' if images == 1 else 's'}, {files} file{'' if files == 1 else 's'})"


@dataclass(frozen=True)
class Reply:
    """One deterministic completion: the text and its word-based token counts."""

    text: str
    input_tokens: int
    output_tokens: int
    truncated: bool = False
    """True when ``max_tokens`` cut the reply short (finish reason "length" / "max_tokens")."""
    tool_call: ToolCall | None = None
    """Set when the request forced a tool: the reply is this call instead of text."""

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
    schema: Mapping[str, Any] | None = None,
    *,
    media: tuple[int, int] = (0, 0),
    tool: tuple[str, Mapping[str, Any]] | None = None,
) -> Reply:
    """Echo the last user message.

    ``messages`` are ``{"role", "content"}`` mappings (content: string or part list); ``system`` is a
    string or part list. The reply is ``"echo: "`` + the last user message's text; input tokens count
    the words of the system prompt and every message; with ``max_tokens`` the reply is cut to that
    many words and marked truncated. With a JSON ``schema`` (structured output) the reply is
    :func:`structured_text` instead: JSON conforming to it, or not conforming on ``[[invalid]]``.
    """
    texts = [content_text(system)]
    last_user = ""
    for message in messages:
        text = content_text(message.get("content"))
        texts.append(text)
        if message.get("role") == "user":
            last_user = text
    text = f"echo: {last_user}{media_note(*media)}"
    if tool is not None:
        # A forced tool choice: call the tool with arguments that match its parameters schema.
        arguments = conforming_instance(tool[1] or {"type": "object"}, text)
        call = ToolCall(tool[0], arguments)
        return Reply(text="", input_tokens=count_words(*texts), output_tokens=count_words(call.arguments_json),
                     tool_call=call)
    if schema is not None:
        broken = any(marker_token(INVALID_OUTPUT_MARKER) in t for t in texts)
        text = structured_text(schema, text, broken=broken)
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


def structured_text(schema: Mapping[str, Any], seed: str, *, broken: bool = False) -> str:
    """Compact JSON text for a structured output request: :func:`conforming_instance` of ``schema``; or
    (``broken``) that object without its first required property, else a value of the wrong type, else (a
    schema that accepts anything) unparseable text."""
    value = conforming_instance(schema, seed)
    if broken:
        root = _resolve(schema, schema)
        required = [name for name in root.get("required") or [] if isinstance(value, dict) and name in value]
        types = _types(root)
        if required:
            value = {k: v for k, v in value.items() if k != required[0]}
        elif types:
            value = 12345 if "string" in types else "not the requested structure"
        else:
            return '{"unterminated": '
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def conforming_instance(schema: Mapping[str, Any], seed: str = "echo") -> Any:
    """A deterministic value valid against ``schema`` (JSON Schema, or Gemini's OpenAPI-style subset).

    Handles ``$ref`` into ``$defs``/``definitions``, ``enum``, ``const``, ``anyOf``/``oneOf``/``allOf``,
    type lists, objects (every listed property), arrays (``minItems``, at least one item), strings
    (``minLength``/``maxLength``, common ``format``s; ``pattern`` is not honoured), numbers and integers
    (``minimum``/``maximum``, exclusive bounds), booleans and null. String values derive from ``seed``.
    """
    return _instance(schema, schema, seed, 0)


_FORMATS = {"date": "2026-01-01", "date-time": "2026-01-01T00:00:00Z", "time": "00:00:00Z",
            "email": "echo@example.com", "uri": "https://example.com/echo",
            "uuid": "00000000-0000-4000-8000-000000000000"}


def _resolve(schema: Mapping[str, Any], root: Mapping[str, Any]) -> Mapping[str, Any]:
    seen = 0
    while isinstance(schema.get("$ref"), str) and seen < 32:
        target: Any = root
        for part in str(schema["$ref"]).lstrip("#").strip("/").split("/"):
            target = target.get(part, {}) if isinstance(target, Mapping) and part else target
        schema = target if isinstance(target, Mapping) else {}
        seen += 1
    return schema


def _types(schema: Mapping[str, Any]) -> list[str]:
    raw = schema.get("type")
    names = [raw] if isinstance(raw, str) else list(raw) if isinstance(raw, list) else []
    types = [str(t).lower() for t in names]
    if not types:
        if "properties" in schema or "required" in schema:
            types = ["object"]
        elif "items" in schema:
            types = ["array"]
    return types


def _instance(schema: Mapping[str, Any], root: Mapping[str, Any], seed: str, depth: int) -> Any:
    schema = _resolve(schema, root)
    if "const" in schema:
        return schema["const"]
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        return schema["enum"][0]
    for key in ("anyOf", "oneOf"):
        options = [o for o in schema.get(key) or [] if isinstance(o, Mapping)]
        if options:
            chosen = next((o for o in options if _types(_resolve(o, root)) != ["null"]), options[0])
            return _instance(chosen, root, seed, depth + 1)
    merged = dict(schema)
    for part in schema.get("allOf") or []:
        if isinstance(part, Mapping):
            merged.update(_resolve(part, root))
    types = [t for t in _types(merged) if t != "null"] or _types(merged) or ["string"]
    kind = types[0]
    if kind == "object":
        props = merged.get("properties") or {}
        return {name: _instance(sub, root, seed, depth + 1) for name, sub in props.items()
                if isinstance(sub, Mapping) and depth < 16}
    if kind == "array":
        items = merged.get("items")
        if not isinstance(items, Mapping):
            items = {}
        count = max(int(merged.get("minItems") or 0), 1)
        if merged.get("maxItems") is not None:
            count = min(count, int(merged["maxItems"]))
        return [_instance(items, root, f"{seed} {i}" if i else seed, depth + 1) for i in range(count)]
    if kind in ("integer", "number"):
        return _number(merged, integer=kind == "integer")
    if kind == "boolean":
        return True
    if kind == "null":
        return None
    text = _FORMATS.get(str(merged.get("format")), seed)
    low, high = int(merged.get("minLength") or 0), merged.get("maxLength")
    if len(text) < low:
        text = text + "x" * (low - len(text))
    if high is not None:
        text = text[: int(high)]
    return text


def _number(schema: Mapping[str, Any], *, integer: bool) -> int | float:
    low = schema.get("minimum")
    high = schema.get("maximum")
    if isinstance(schema.get("exclusiveMinimum"), int | float) and not isinstance(schema["exclusiveMinimum"], bool):
        low = schema["exclusiveMinimum"] + (1 if integer else 0.5)
    if isinstance(schema.get("exclusiveMaximum"), int | float) and not isinstance(schema["exclusiveMaximum"], bool):
        high = schema["exclusiveMaximum"] - (1 if integer else 0.5)
    value: float = low if isinstance(low, int | float) else (min(high, 1) if isinstance(high, int | float) else 1)
    if integer:
        return math.ceil(value)
    return float(value)
