"""Pieces shared by providers that speak OpenAI's formats: chat bodies, chat results, result lines,
and the Files + Batches flow (OpenAI and Groq run it as is; others reuse the parts they share)."""

from __future__ import annotations

import base64
import json
import logging
import mimetypes
import struct
import tempfile
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import pyarrow as pa
from orjson import dumps as orjson_dumps

from airflow_batchwork.adapters.arrow_lines import CHAT_LINE_SCHEMA, complete_chunks, parse_chat_chunk, parse_chunks
from airflow_batchwork.adapters.base import ProviderAdapter, cache_token_columns, dumps, int_or_none, merge_options
from airflow_batchwork.adapters.content import compact, media, tool_calls_json
from airflow_batchwork.values.calls import CallProgress
from airflow_batchwork.values.parts import Media
from airflow_batchwork.values.refs import ModelRef
from airflow_batchwork.values.requests import (
    BatchRequest,
    ContentPart,
    FilePart,
    ImagePart,
    NamedToolChoice,
    PlainSpec,
    PlainText,
    TextPart,
    ToolCallPart,
    ToolResultPart,
)
from airflow_batchwork.values.result_schema import items_to_batch
from airflow_batchwork.values.status import BatchState, BatchStatus, Counts, FinishReason, ItemResult
from airflow_batchwork.values.structured import is_strict_compatible, schema_name

FINISH_REASONS: dict[str, FinishReason] = {
    "stop": "stop", "end_turn": "stop", "stop_sequence": "stop", "eos": "stop",
    "length": "length", "max_tokens": "length", "max_output_tokens": "length", "model_length": "length",
    "content_filter": "content_filter", "safety": "content_filter", "refusal": "content_filter",
    "tool_calls": "tool_calls", "function_call": "tool_calls", "tool_use": "tool_calls",
    "error": "error",
}
SPOOL_BYTES = 8 * 1024 * 1024
log = logging.getLogger(__name__)


def finish_reason(raw: object) -> FinishReason | None:
    if raw is None:
        return None
    return FINISH_REASONS.get(str(raw).lower(), "other")


@dataclass(frozen=True)
class ChatDialect:
    """How one OpenAI-style chat API spells parts and tool calls.

    `file`: "openai" (`{"type": "file", "file": {"file_data", "filename"}}`), "mistral"
    (`{"type": "document_url", "document_url", "document_name"}`) or None (no file parts).
    `tool_call_index`: assistant `tool_calls[]` entries carry their `index` (Together's SDK requires it).
    `tool_name_in_result`: tool messages carry the tool's `name` (Mistral)."""

    file: str | None = "openai"
    tool_call_index: bool = False
    tool_name_in_result: bool = False
    required_choice: str = "required"


OPENAI_CHAT = ChatDialect()


def _chat_part(part: ContentPart, dialect: ChatDialect) -> dict[str, Any]:
    if isinstance(part, TextPart):
        return {"type": "text", "text": part.text}
    found = media(part)  # type: ignore[arg-type]
    if isinstance(part, ImagePart):
        return {"type": "image_url", "image_url": {"url": found.data_url()}}
    if dialect.file == "mistral":
        out: dict[str, Any] = {"type": "document_url", "document_url": found.data_url()}
        if found.filename:
            out["document_name"] = found.filename
        return out
    return {"type": "file", "file": {"file_data": found.data_url(), "filename": _filename(found)}}


def chat_messages(request: BatchRequest, dialect: ChatDialect = OPENAI_CHAT) -> list[dict[str, Any]]:
    """The OpenAI chat `messages` list, system first; assistant tool calls become `tool_calls`, each tool
    result one `tool` message."""
    messages: list[dict[str, Any]] = []
    system = request.system_text()
    if system:
        messages.append({"role": "system", "content": system})
    if request.messages is None:
        messages.append({"role": "user", "content": request.prompt or ""})
        return messages
    for message in request.conversation():
        if isinstance(message.content, str):
            messages.append({"role": message.role, "content": message.content})
        elif message.role == "tool":
            for result in message.content:
                assert isinstance(result, ToolResultPart)
                reply: dict[str, Any] = {"role": "tool", "tool_call_id": result.tool_call_id,
                                         "content": result.output_text()}
                if dialect.tool_name_in_result:
                    reply["name"] = result.tool_name
                messages.append(reply)
        elif message.role == "assistant" and any(isinstance(p, ToolCallPart) for p in message.content):
            calls = []
            for index, call in enumerate(p for p in message.content if isinstance(p, ToolCallPart)):
                entry: dict[str, Any] = {"id": call.tool_call_id, "type": "function",
                         "function": {"name": call.tool_name, "arguments": compact(call.input)}}
                if dialect.tool_call_index:
                    entry["index"] = index
                calls.append(entry)
            text = message.text
            messages.append({"role": "assistant", "content": text or None, "tool_calls": calls})
        else:
            messages.append({"role": message.role, "content": [_chat_part(p, dialect) for p in message.content]})
    return messages


def chat_tools(request: BatchRequest, dialect: ChatDialect = OPENAI_CHAT) -> dict[str, Any]:
    """`tools` (function tools) and `tool_choice` of an OpenAI-style chat body."""
    if not request.tools:
        return {}
    out: dict[str, Any] = {"tools": [
        {"type": "function", "function": {"name": t.name, **({"description": t.description} if t.description else {}),
                                          "parameters": dict(t.parameters)}}
        for t in request.tools]}
    choice = request.tool_choice
    if isinstance(choice, NamedToolChoice):
        out["tool_choice"] = {"type": "function", "function": {"name": choice.tool_name}}
    elif choice == "required":
        out["tool_choice"] = dialect.required_choice
    elif choice is not None:
        out["tool_choice"] = choice
    return out


def _filename(found: Media) -> str:
    """A file name for inline file data (OpenAI wants one with `file_data`): the part's, else `file.<ext>`."""
    if found.filename:
        return found.filename
    extension = (mimetypes.guess_extension(found.media_type or "") or ".bin").lstrip(".")
    return f"file.{extension}"


def responses_items(request: BatchRequest, *, system: bool = False) -> list[dict[str, Any]]:
    """A conversation as Responses `input` items (OpenAI `/v1/responses`, also xAI): messages with
    `input_text` / `input_image` / `input_file` parts (`output_text` in assistant turns), assistant tool
    calls as `function_call` items and tool results as `function_call_output` items. `system`: put the
    system text first as a system message (else the caller sends it as `instructions`)."""
    items: list[dict[str, Any]] = []
    system_text = request.system_text() if system else None
    if system_text:
        items.append({"role": "system", "content": system_text})
    for message in request.conversation():
        if isinstance(message.content, str):
            items.append({"role": message.role, "content": message.content})
            continue
        if message.role == "tool":
            items += [{"type": "function_call_output", "call_id": r.tool_call_id, "output": r.output_text()}
                      for r in message.content if isinstance(r, ToolResultPart)]
            continue
        content: list[dict[str, Any]] = []
        calls: list[dict[str, Any]] = []
        for part in message.content:
            if isinstance(part, ToolCallPart):
                calls.append({"type": "function_call", "call_id": part.tool_call_id, "name": part.tool_name,
                              "arguments": compact(part.input)})
            elif isinstance(part, TextPart):
                content.append({"type": "output_text", "text": part.text, "annotations": []}
                               if message.role == "assistant" else {"type": "input_text", "text": part.text})
            elif isinstance(part, ImagePart):
                content.append({"type": "input_image", "image_url": media(part).data_url(), "detail": "auto"})
            elif isinstance(part, FilePart):
                found = media(part)
                if found.kind == "url":
                    content.append({"type": "input_file", "file_url": found.value})
                else:
                    content.append({"type": "input_file", "file_data": found.data_url(),
                                    "filename": _filename(found)})
        if content:
            items.append({"role": message.role, "content": content})
        items += calls
    return items


def responses_tools(request: BatchRequest) -> dict[str, Any]:
    """`tools` and `tool_choice` of a Responses body. Responses function tools are strict unless told
    otherwise, so `strict` is sent: true only for schemas its strict subset accepts."""
    if not request.tools:
        return {}
    out: dict[str, Any] = {"tools": [
        {"type": "function", "name": t.name, **({"description": t.description} if t.description else {}),
         "parameters": dict(t.parameters), "strict": is_strict_compatible(t.parameters)}
        for t in request.tools]}
    choice = request.tool_choice
    if isinstance(choice, NamedToolChoice):
        out["tool_choice"] = {"type": "function", "name": choice.tool_name}
    elif choice is not None:
        out["tool_choice"] = choice
    return out


def fill_response_tool_calls(item: ItemResult, body: Mapping[str, Any]) -> None:
    """`tool_calls` from the `function_call` output items of a Responses body."""
    item.tool_calls = tool_calls_json(item.custom_id, (
        (o.get("call_id") or o.get("id"), o.get("name"), o.get("arguments"))
        for o in body.get("output") or [] if isinstance(o, Mapping) and o.get("type") == "function_call"))


def json_schema_format(schema: Mapping[str, Any]) -> dict[str, Any]:
    """`{name, schema, strict?}`: the JSON Schema spec of OpenAI-style structured output. `strict` is sent
    only for schemas its strict subset accepts (`is_strict_compatible`)."""
    spec: dict[str, Any] = {"name": schema_name(schema), "schema": dict(schema)}
    if is_strict_compatible(schema):
        spec["strict"] = True
    return spec


def chat_body(ref: ModelRef, request: BatchRequest, *, max_tokens_field: str = "max_tokens",
              dialect: ChatDialect = OPENAI_CHAT) -> dict[str, Any]:
    """An OpenAI-style `/v1/chat/completions` body; `output_schema` becomes
    `response_format: {type: "json_schema", json_schema: {name, schema, strict}}`."""
    body: dict[str, Any] = {"model": ref.model, "messages": chat_messages(request, dialect)}
    body.update(chat_tools(request, dialect))
    if request.max_output_tokens is not None:
        body[max_tokens_field] = request.max_output_tokens
    for ours, theirs in (
        ("temperature", "temperature"), ("top_p", "top_p"), ("stop_sequences", "stop"), ("seed", "seed"),
        ("presence_penalty", "presence_penalty"), ("frequency_penalty", "frequency_penalty"),
    ):
        value = getattr(request, ours)
        if value is not None:
            body[theirs] = value
    if request.output_schema is not None:
        body["response_format"] = {"type": "json_schema", "json_schema": json_schema_format(request.output_schema)}
    return merge_options(body, request)


def plain_chat_body(ref: ModelRef, *, max_tokens_field: str = "max_tokens", url: str | None = None
                    ) -> Callable[[PlainText], dict[str, Any]]:
    """`chat_body` of a plain request (`PlainSpec`: a prompt, no messages, tools or output schema), the same
    dict in the same key order, with no intermediate object: for the adapters' `plain_encoder`. With `url`,
    the OpenAI files line around it (`OpenAIFilesBatchAdapter.line`), in the same call."""
    model = ref.model

    def body(request: PlainText) -> dict[str, Any]:
        system = request.system
        user = {"role": "user", "content": request.prompt or ""}
        out: dict[str, Any] = {"model": model, "messages": [{"role": "system", "content": system}, user]
                               if system else [user]}
        if request.max_output_tokens is not None:
            out[max_tokens_field] = request.max_output_tokens
        if request.temperature is not None:
            out["temperature"] = request.temperature
        if request.top_p is not None:
            out["top_p"] = request.top_p
        if request.stop_sequences is not None:
            out["stop"] = request.stop_sequences
        if request.seed is not None:
            out["seed"] = request.seed
        if request.presence_penalty is not None:
            out["presence_penalty"] = request.presence_penalty
        if request.frequency_penalty is not None:
            out["frequency_penalty"] = request.frequency_penalty
        if request.provider_options:
            out.update(request.provider_options)
        if url is None:
            return out
        return {"custom_id": request.custom_id, "method": "POST", "url": url, "body": out}

    return body


def plain_items(item: Callable[[PlainSpec], dict[str, Any]]) -> Callable[[Sequence[PlainSpec]], list[bytes]]:
    """A `plain_encoder`: `dumps` of `item(request)` of each request (orjson for the chunk, and when orjson
    refuses some value, `dumps` of each, as `encode` does)."""
    def encode(requests: Sequence[PlainSpec]) -> list[bytes]:
        try:
            return list(map(orjson_dumps, map(item, requests)))
        except TypeError:
            return [dumps(item(r)) for r in requests]

    return encode


def fill_from_chat_completion(item: ItemResult, body: Mapping[str, Any]) -> None:
    """Text, finish reason and usage from a `chat.completion` body."""
    choices = body.get("choices") or [{}]
    choice = choices[0] if isinstance(choices[0], dict) else {}
    message = choice.get("message") or {}
    content = message.get("content")
    if isinstance(content, list):
        content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
    item.text = content if isinstance(content, str) else None
    calls = [c for c in message.get("tool_calls") or [] if isinstance(c, Mapping)]
    item.tool_calls = tool_calls_json(item.custom_id, (
        (c.get("id"), (c.get("function") or {}).get("name"), (c.get("function") or {}).get("arguments"))
        for c in calls))
    item.finish_reason = finish_reason(choice.get("finish_reason"))
    if message.get("tool_calls") and item.finish_reason is None:
        item.finish_reason = "tool_calls"
    fill_usage(item, body.get("usage"), "prompt_tokens", "completion_tokens")


def body_cache_counts(body: object) -> tuple[int, int] | None:
    """(cached, written to cache) prompt tokens of a success body: `usage.prompt_tokens_details` of a chat
    completion, `usage.input_tokens_details` of a Responses body (`cached_tokens`, `cache_write_tokens`; SDK
    `CompletionUsage`/`ResponseUsage`). None: the body has no usage."""
    usage = body.get("usage") if isinstance(body, Mapping) else None
    if not isinstance(usage, Mapping):
        return None
    details = usage.get("prompt_tokens_details") or usage.get("input_tokens_details")
    details = details if isinstance(details, Mapping) else {}
    return int_or_none(details.get("cached_tokens")) or 0, int_or_none(details.get("cache_write_tokens")) or 0


def line_cache_counts(line: object) -> tuple[int, int] | None:
    """`body_cache_counts` of a batch output line `{custom_id, response: {status_code, body}}`."""
    response = line.get("response") if isinstance(line, Mapping) else None
    if not isinstance(response, Mapping) or response.get("status_code") not in (None, 200):
        return None
    return body_cache_counts(response.get("body"))


def fill_usage(item: ItemResult, usage: object, input_key: str, output_key: str) -> None:
    if not isinstance(usage, Mapping):
        return
    item.input_tokens = int_or_none(usage.get(input_key))
    item.output_tokens = int_or_none(usage.get(output_key))
    total = int_or_none(usage.get("total_tokens"))
    if total is None and item.input_tokens is not None:
        total = item.input_tokens + (item.output_tokens or 0)
    item.total_tokens = total


def error_fields(error: object) -> tuple[str | None, str | None]:
    """(code, message) from an error that may be an object, a string or missing."""
    if isinstance(error, Mapping):
        inner = error.get("error")
        if isinstance(inner, Mapping):
            error = inner
        code = error.get("code") or error.get("type") or error.get("status")
        message = error.get("message")
        return (str(code) if code is not None else None), (str(message) if message is not None else None)
    if isinstance(error, str):
        return None, error
    return None, None


# A result line with cached prompt tokens, in the OpenAI usage shape (`cached_tokens`, `cache_write_tokens`): the
# prompt-cache pre-check of a chunk (`ProviderAdapter.cache_hit_pattern`). A literal prefix (`"cache`) lets
# Python's `re` skip to it instead of trying a match at every quote (100k lines: ~0.045 s, was ~0.057).
USAGE_CACHE_HIT = r'"cache(?:d|_write)_tokens":\s*[1-9]'
EXPIRED_CODES = frozenset({"batch_expired", "expired"})
CANCELED_CODES = frozenset({"batch_cancelled", "batch_canceled", "cancelled", "canceled"})


def parse_result_line(line: str, batch_id: str, fill: Any) -> ItemResult | None:
    """One `{custom_id, response: {status_code, body}, error}` line; `fill(item, body)` reads a success body.

    Returns None for a line without a custom_id (nothing to join it to)."""
    data = json.loads(line)
    custom_id = data.get("custom_id")
    if not isinstance(custom_id, str):
        return None
    response = data.get("response") if isinstance(data.get("response"), Mapping) else None
    item = ItemResult(custom_id=custom_id, status="succeeded", batch_id=batch_id, response=line)
    status_code = int_or_none(response.get("status_code")) if response else None
    body = response.get("body") if response else None
    if response is not None and (status_code is None or status_code < 400) and isinstance(body, Mapping) \
            and not data.get("error"):
        fill(item, body)
        return item
    code, message = error_fields(data.get("error") or body)
    if code in EXPIRED_CODES:
        item.status = "expired"
    elif code in CANCELED_CODES:
        item.status = "canceled"
    else:
        item.status = "errored"
    item.error_code = code or (str(status_code) if status_code else "error")
    item.error_message = message or "the provider returned no error message"
    item.finish_reason = "error" if item.status == "errored" else None
    return item


OPENAI_STATES: dict[str, BatchState] = {
    "validating": "validating", "in_progress": "in_progress", "finalizing": "finalizing",
    "completed": "completed", "failed": "failed", "expired": "expired",
    "cancelling": "cancelling", "cancelled": "cancelled",
}


def openai_batch_status(batch: Mapping[str, Any], check_id: Any) -> BatchStatus:
    """Normalize an OpenAI-shaped Batch object."""
    raw = str(batch.get("status"))
    state = OPENAI_STATES.get(raw, "in_progress")
    counts_raw = batch.get("request_counts") or {}
    total = int_or_none(counts_raw.get("total")) or 0
    completed = int_or_none(counts_raw.get("completed")) or 0
    failed = int_or_none(counts_raw.get("failed")) or 0
    rest = max(total - completed - failed, 0)
    counts = Counts(
        total=total, succeeded=completed, errored=failed,
        expired=rest if state == "expired" else 0,
        canceled=rest if state == "cancelled" else 0,
        processing=0 if state in ("completed", "failed", "expired", "cancelled") else rest,
    )
    errors = batch.get("errors")
    data = errors.get("data") if isinstance(errors, Mapping) else errors
    message = None
    if isinstance(data, list) and data and isinstance(data[0], Mapping):
        message = "; ".join(str(e.get("message")) for e in data[:5] if isinstance(e, Mapping))
    return BatchStatus(id=check_id(batch.get("id")), state=state, counts=counts, raw_state=raw, error_message=message)


class OpenAIFilesBatchAdapter(ProviderAdapter):
    """Upload a JSONL file, create a batch on it, read output and error files (OpenAI's flow)."""

    completion_window: ClassVar[str] = "24h"
    files_path: ClassVar[str] = "/files"
    batches_path: ClassVar[str] = "/batches"

    def auth_headers(self, api_key: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {api_key}"}

    def line(self, ref: ModelRef, request: BatchRequest, body: dict[str, Any]) -> bytes:
        return dumps({"custom_id": request.custom_id, "method": "POST", "url": ref.spec.path, "body": body})

    def plain_chat_lines(self, ref: ModelRef, *, max_tokens_field: str) -> Callable[[Sequence[PlainSpec]], list[bytes]]:
        """A `plain_encoder` of `line` over `plain_chat_body`, one Python call per request."""
        return plain_items(plain_chat_body(ref, max_tokens_field=max_tokens_field,  # type: ignore[arg-type]
                                           url=ref.spec.path))

    def fill(self, ref: ModelRef) -> Any:
        """The function that reads one success body of `ref`'s endpoint into an ItemResult."""
        return fill_from_chat_completion

    @classmethod
    def cache_tokens(cls, responses: pa.Array) -> tuple[pa.Array, pa.Array, pa.Array] | None:
        if not cls.prompt_cache_automatic:
            return None
        return cache_token_columns(responses, line_cache_counts)

    def batch_window(self) -> str:
        """The `completion_window` sent on create (per instance, for providers where it is configurable)."""
        return self.completion_window

    async def upload(self, items: Iterable[bytes]) -> str:
        with tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES) as spool:
            for item in items:
                spool.write(item)
                spool.write(b"\n")
            spool.seek(0)
            response = await self.http.request(
                # A repeated upload costs nothing but an unused file: safe to retry (httpx rewinds the file).
                "POST", self.files_path, retry_safe=True,
                files={"file": ("batchwork.jsonl", spool, "application/jsonl")}, data={"purpose": "batch"},
            )
        return self.check_id(response.json().get("id"), "file id")

    async def create(self, ref: ModelRef, items: Iterable[bytes], *, metadata: Mapping[str, str]) -> str:
        return await self.create_tracked(ref, items, metadata=metadata, progress=CallProgress())

    async def create_tracked(self, ref: ModelRef, items: Iterable[bytes], *, metadata: Mapping[str, str],
                             progress: CallProgress) -> str:
        """Upload the shard once (its file id is recorded before the paid create, so a retry reuses it
        instead of leaving another unused file), then create the batch."""
        file_id = progress.get("file_id")
        if not file_id:
            file_id = await self.upload(items)
            progress.record(file_id=file_id)
        file_id = self.check_id(file_id, "file id")
        body: dict[str, Any] = {
            "input_file_id": file_id, "endpoint": ref.spec.path, "completion_window": self.batch_window(),
        }
        if metadata:
            body["metadata"] = dict(metadata)
        response = await self.http.request("POST", self.batches_path, retry_safe=False, json=body)
        return self.check_id(response.json().get("id"))

    async def status(self, batch_id: str) -> BatchStatus:
        return openai_batch_status(await self._batch(batch_id), self.check_id)

    async def _batch(self, batch_id: str) -> dict[str, Any]:
        response = await self.http.request(
            "GET", f"{self.batches_path}/{self.check_id(batch_id)}", retry_safe=True
        )
        return dict(response.json())

    def result_file_ids(self, batch: Mapping[str, Any]) -> list[str]:
        return [str(batch[key]) for key in ("output_file_id", "error_file_id") if batch.get(key)]

    async def _result_chunks(self, batch_id: str) -> AsyncIterator[bytes]:
        """The output and error files, as chunks of whole lines."""
        batch = await self._batch(batch_id)
        for file_id in self.result_file_ids(batch):
            path = f"{self.files_path}/{self.check_id(file_id, 'file id')}/content"
            async with self.http.stream("GET", path) as response:
                async for chunk in complete_chunks(response.aiter_bytes()):
                    yield chunk

    def read_result_line(self, ref: ModelRef, batch_id: str, line: str, state: str) -> ItemResult | None:
        return parse_result_line(line, batch_id, self.fill(ref))

    async def results(self, ref: ModelRef, batch_id: str) -> AsyncIterator[ItemResult]:
        async for chunk in self._result_chunks(batch_id):
            for item in self.parse_result_text(ref, batch_id, chunk.decode("utf-8", errors="replace")):
                yield item

    async def result_batches(self, ref: ModelRef, batch_id: str, *, rows: int = 10_000
                             ) -> AsyncIterator[pa.RecordBatch]:
        """Chat results are parsed vectorized; other endpoints, and any chunk the fast path refuses,
        line by line."""
        fill = self.fill(ref)
        fast = fill is fill_from_chat_completion

        def parse(chunk: bytes) -> pa.RecordBatch:
            records = parse_chat_chunk(chunk, batch_id, dict(FINISH_REASONS), EXPIRED_CODES, CANCELED_CODES) \
                if fast else None
            if records is None:
                records = items_to_batch(self.parse_result_text(ref, batch_id, chunk.decode("utf-8", errors="replace")))
            return records

        async for records in parse_chunks(self._result_chunks(batch_id), parse, CHAT_LINE_SCHEMA if fast else None):
            yield records

    async def cancel(self, batch_id: str) -> BatchStatus:
        response = await self.http.request(
            "POST", f"{self.batches_path}/{self.check_id(batch_id)}/cancel", retry_safe=True
        )
        return openai_batch_status(response.json(), self.check_id)

    async def list_batches(self, *, limit: int = 100) -> AsyncIterator[BatchStatus]:
        async for batch in self._list_raw(limit=limit):
            yield openai_batch_status(batch, self.check_id)

    async def _list_raw(self, *, limit: int) -> AsyncIterator[dict[str, Any]]:
        after: str | None = None
        seen = 0
        while seen < limit:
            params: dict[str, Any] = {"limit": min(100, limit - seen)}
            if after:
                params["after"] = after
            page = (await self.http.request("GET", self.batches_path, retry_safe=True, params=params)).json()
            for batch in page.get("data") or []:
                seen += 1
                yield batch
            if not page.get("has_more") or not page.get("last_id"):
                return
            after = self.check_id(page["last_id"])

    async def find_batch(self, metadata: Mapping[str, str], *, limit: int = 500) -> str | None:
        async for batch in self._list_raw(limit=limit):
            tags = batch.get("metadata") or {}
            if all(tags.get(k) == v for k, v in metadata.items()) and batch.get("status") not in ("failed",):
                return self.check_id(batch.get("id"))
        return None


# OpenAI's `/v1/responses` and `/v1/embeddings` bodies, also read by the providers that answer in them
# (xAI's responses, Mistral's embeddings).
def fill_from_response(item: ItemResult, body: Mapping[str, Any]) -> None:
    """Text, finish reason and usage from a `/v1/responses` body."""
    texts: list[str] = []
    tool_call = False
    for output in body.get("output") or []:
        if not isinstance(output, Mapping):
            continue
        if output.get("type") == "message":
            texts += [c.get("text", "") for c in output.get("content") or []
                      if isinstance(c, Mapping) and c.get("type") == "output_text"]
        elif output.get("type") == "function_call":
            tool_call = True
    item.text = "".join(texts) if texts else None
    fill_response_tool_calls(item, body)
    if body.get("status") == "incomplete":
        reason = (body.get("incomplete_details") or {}).get("reason")
        item.finish_reason = finish_reason(reason) or "other"
    else:
        item.finish_reason = "tool_calls" if tool_call else "stop"
    fill_usage(item, body.get("usage"), "input_tokens", "output_tokens")


def embedding_vector(value: object) -> list[float]:
    """An `Embedding.embedding`: a list of floats, or (with `encoding_format: "base64"`) the base64 of
    little-endian float32s."""
    if isinstance(value, str):
        raw = base64.b64decode(value)
        return [float(x) for x in struct.unpack(f"<{len(raw) // 4}f", raw[: len(raw) // 4 * 4])]
    return [float(x) for x in value or []] if isinstance(value, list) else []


def fill_from_embedding(item: ItemResult, body: Mapping[str, Any]) -> None:
    data = body.get("data") or []
    if data and isinstance(data[0], Mapping):
        item.embedding = embedding_vector(data[0].get("embedding"))
    item.finish_reason = "stop"
    fill_usage(item, body.get("usage"), "prompt_tokens", "completion_tokens")
    item.output_tokens = None
