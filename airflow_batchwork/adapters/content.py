"""What each provider/endpoint accepts beyond text (images, files, tools), checked before any API call,
and helpers shared by the adapters that map parts and tool calls."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from airflow_batchwork.values.parts import Media, media_of
from airflow_batchwork.values.requests import BatchRequest, FilePart, ImagePart, NamedToolChoice, tool_call_id

# (field, problem, fix), as `adapters.base.Refusal`.
Refusal = tuple[str, str, str]
ALL_CHOICES = frozenset({"auto", "required", "none", "tool"})


@dataclass(frozen=True)
class ContentSupport:
    """The parts and tools one provider endpoint takes. Sources: "url" (http(s), fetched by the provider)
    and "base64" (bytes, base64, data: URLs and inlined files). Media types: None means any."""

    image_sources: frozenset[str] = frozenset()
    image_types: frozenset[str] | None = None
    file_sources: frozenset[str] = frozenset()
    file_types: frozenset[str] | None = None
    tools: bool = False
    tool_choices: frozenset[str] = ALL_CHOICES
    tool_description_required: bool = False
    choice_fix: str = "use another tool_choice"
    extra: Mapping[str, str] = field(default_factory=dict)


TEXT_ONLY = ContentSupport()
BOTH = frozenset({"url", "base64"})
BASE64 = frozenset({"base64"})
URL = frozenset({"url"})
# The image formats the OpenAI-style chat vision APIs document (PNG, JPEG, WEBP, non-animated GIF).
CHAT_IMAGE_TYPES = frozenset({"image/png", "image/jpeg", "image/webp", "image/gif"})
PDF = frozenset({"application/pdf"})


def choice_kind(request: BatchRequest) -> str | None:
    choice = request.tool_choice
    if choice is None:
        return None
    return "tool" if isinstance(choice, NamedToolChoice) else str(choice)


def check_content(request: BatchRequest, support: ContentSupport, label: str) -> Refusal | None:
    """A reason `label` (e.g. "anthropic.messages") cannot take the parts or tools of `request`, or None."""
    who = f"request {request.custom_id!r}:"
    for location, part in request.media_parts():
        kind = "image" if isinstance(part, ImagePart) else "file"
        sources = support.image_sources if kind == "image" else support.file_sources
        types = support.image_types if kind == "image" else support.file_types
        if not sources:
            return (location, f"{who} {label} batches take no {kind} parts",
                    "remove the part, or use a provider that takes it (table in docs/providers.md)")
        try:
            media = media_of(part)
        except ValueError as exc:
            return (location, f"{who} the {kind} {exc}", "fix the part")
        if media.kind not in sources:
            fix = ("give the bytes, base64, a data: URL or a file URL (s3://…, file://…) so it is inlined"
                   if media.kind == "url" else "give an http(s) URL the provider can fetch")
            given = "a URL" if media.kind == "url" else "inline data"
            return (location, f"{who} {label} batches take no {kind} given as {given}", fix)
        if media.media_type is None:
            return (f"{location}.media_type", f"{who} the {kind}'s media type cannot be told from its name or bytes",
                    'set media_type, e.g. "image/png" or "application/pdf"')
        if types is not None and media.media_type not in types:
            return (f"{location}.media_type", f"{who} {label} batches take no {kind} of type {media.media_type!r}",
                    f"use one of: {', '.join(sorted(types))}")
    if request.tools and not support.tools:
        return ("tools", f"{who} {label} batches take no tools", "remove tools and tool_choice")
    if request.has_tool_parts() and not support.tools:
        return ("messages", f"{who} {label} batches take no tool calls or tool results in the conversation",
                "remove the tool-call and tool-result parts")
    choice = choice_kind(request)
    if choice is not None and request.tools and choice not in support.tool_choices:
        return ("tool_choice", f"{who} {label} batches take no tool_choice {choice!r}", support.choice_fix)
    if support.tool_description_required:
        for index, tool in enumerate(request.tools or []):
            if not tool.description:
                return (f"tools[{index}].description", f"{who} {label} requires a description for every tool",
                        "add a description saying what the tool does")
    return None


def media(part: ImagePart | FilePart) -> Media:
    """`media_of`, for parts `check_content` already accepted."""
    return media_of(part)


def arguments_object(raw: object) -> Any:
    """Tool-call arguments as a JSON value: JSON text is parsed; unparseable text is kept as is."""
    if isinstance(raw, str):
        try:
            return json.loads(raw) if raw.strip() else {}
        except ValueError:
            return raw
    return {} if raw is None else raw


def tool_calls_json(custom_id: str, calls: Iterable[tuple[object, object, object]]) -> str | None:
    """The `tool_calls` column: JSON list of `{id, name, arguments}`; None when there are none."""
    out = []
    for index, (call_id, name, arguments) in enumerate(calls):
        out.append({"id": str(call_id) if call_id else tool_call_id(custom_id, index), "name": str(name),
                    "arguments": arguments_object(arguments)})
    return json.dumps(out, separators=(",", ":"), ensure_ascii=False) if out else None


def compact(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)
