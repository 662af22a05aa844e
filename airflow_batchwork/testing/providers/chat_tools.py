"""Images, files and tools in OpenAI-style chat bodies, shared by the emulated chat APIs (OpenAI, Groq,
Mistral, Together, xAI): counting the parts the echo mentions, and answering a forced tool choice."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import airflow_batchwork.testing.echo as echo

IMAGE_TYPES = frozenset({"image_url", "input_image", "image"})
FILE_TYPES = frozenset({"file", "input_file", "document_url", "document"})


class ToolChoiceError(ValueError):
    """A tool choice the real API refuses (it names a tool that is not declared, or no tools are given)."""


def classify(part: Mapping[str, Any]) -> str | None:
    kind = part.get("type")
    if kind in IMAGE_TYPES:
        return "image"
    if kind in FILE_TYPES:
        return "file"
    return None


def media(messages: object) -> tuple[int, int]:
    """(images, files) in a chat `messages` list (or a Responses `input`)."""
    return echo.count_parts(messages, classify)


def _function(tool: Mapping[str, Any]) -> Mapping[str, Any]:
    """A tool's function definition: nested (`{type, function: {…}}`, chat) or flat (Responses)."""
    inner = tool.get("function")
    return inner if isinstance(inner, Mapping) else tool


def forced_tool(body: Mapping[str, Any], *, required: tuple[str, ...] = ("required",)
                ) -> tuple[str, Mapping[str, Any]] | None:
    """(name, parameters) of the tool a body forces: a `required`-like choice takes the first function tool,
    a named choice (`{"type": "function", "function": {"name"}}` or Responses' `{"type": "function", "name"}`)
    that tool. Raises ToolChoiceError for a named tool that is not declared."""
    tools = [t for t in body.get("tools") or [] if isinstance(t, Mapping) and t.get("type", "function") == "function"]
    declared = {str(_function(t).get("name")): _function(t).get("parameters") or {"type": "object"} for t in tools}
    choice = body.get("tool_choice")
    if isinstance(choice, Mapping):
        name = _function(choice).get("name")
        if name not in declared:
            raise ToolChoiceError(f"Invalid 'tool_choice': function {name!r} is not one of the given tools.")
        return str(name), declared[str(name)]
    if choice in required:
        if not declared:
            raise ToolChoiceError(f"Invalid 'tool_choice': {choice!r} needs at least one function tool.")
        name = next(iter(declared))
        return name, declared[name]
    return None


def check_tool_results(messages: list[Any]) -> None:
    """Chat: every `tool` message answers a call of an earlier assistant `tool_calls`; Responses: every
    `function_call_output` answers an earlier `function_call`. Raises ToolChoiceError as the APIs refuse."""
    called: set[object] = set()
    for message in messages:
        if not isinstance(message, Mapping):
            continue
        for call in message.get("tool_calls") or []:
            if isinstance(call, Mapping):
                called.add(call.get("id"))
        if message.get("type") == "function_call":
            called.add(message.get("call_id"))
        if message.get("role") == "tool" and message.get("tool_call_id") not in called:
            raise ToolChoiceError("Invalid parameter: messages with role 'tool' must be a response to a preceding "
                                  "message with 'tool_calls'.")
        if message.get("type") == "function_call_output" and message.get("call_id") not in called:
            raise ToolChoiceError(f"No tool call found for function call output with call_id {message.get('call_id')}.")


def reply(body: Mapping[str, Any], messages: list[Any], max_tokens: int | None, schema: Any = None,
          *, required: tuple[str, ...] = ("required",)) -> echo.Reply:
    """The echo reply of a chat body: it mentions the parts it saw, and calls a forced tool."""
    check_tool_results(messages)
    return echo.generate(messages, max_tokens=max_tokens, schema=schema, media=media(messages),
                         tool=forced_tool(body, required=required))


def finish_reason(reply: echo.Reply) -> str:
    """A chat choice's ``finish_reason``: ``tool_calls``, ``length`` (cut at the token limit) or ``stop``."""
    return "tool_calls" if reply.tool_call else "length" if reply.truncated else "stop"


def usage(reply: echo.Reply, **details: Any) -> dict[str, Any]:
    """A chat completion's ``usage``: prompt, completion and total tokens, then the provider's ``details``."""
    return {"prompt_tokens": reply.input_tokens, "completion_tokens": reply.output_tokens,
            "total_tokens": reply.total_tokens, **details}


def tool_calls(call: echo.ToolCall, new_id: Callable[[str], str], *, index: bool = False) -> list[dict[str, Any]]:
    """The assistant message's `tool_calls` list for one call (arguments as JSON text)."""
    entry: dict[str, Any] = {"id": new_id("call_"), "type": "function",
                             "function": {"name": call.name, "arguments": call.arguments_json}}
    if index:
        entry["index"] = 0
    return [entry]
