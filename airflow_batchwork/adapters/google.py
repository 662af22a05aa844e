"""Google Gemini API batch mode: `batches/…` long-running Operations on generativelanguage.googleapis.com.

Small jobs go inline in the create call; a job whose inline body would exceed the API's 20 MB limit is
written as JSONL, uploaded with the resumable Files protocol and referenced by `inputConfig.fileName`.
Results come inline in the finished Operation or as a JSONL responses file, correlated by `key`.

Explicit context caching (`cache_prefix=True`, docs/pay-once.md): when every request of a batch shares one
system prompt long enough for the model's cache minimum, `create_tracked` first creates one `cachedContents/…`
resource holding it (`POST /v1beta/cachedContents`, proto `CachedContent`) and sends every item with
`cachedContent` naming it and without its own `systemInstruction` (the API refuses both together). The name is
recorded in the shard's ledger entry, so a retried or killed submit reuses it, and the collect deletes it
(`release`). Otherwise the prompt is sent with every item as before, with a log line saying why.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from typing import Any, ClassVar

import httpx
import pyarrow as pa
import pyarrow.compute as pc

from airflow_batchwork.adapters.arrow_lines import (
    all_zero,
    complete_chunks,
    const,
    empty_batch,
    field,
    first_element,
    map_values,
    only_where,
    parse_chunks,
    read_lines,
)
from airflow_batchwork.adapters.base import (
    EndpointSpec,
    ProviderAdapter,
    ProviderLimits,
    Refusal,
    cache_token_columns,
    dumps,
    first_unsupported,
    int_or_none,
    parse_time,
)
from airflow_batchwork.adapters.content import BOTH, ContentSupport, media, tool_calls_json
from airflow_batchwork.adapters.http import check_id, default_error_parser
from airflow_batchwork.adapters.openai_compat import SPOOL_BYTES, error_fields, plain_items
from airflow_batchwork.values.calls import CallProgress
from airflow_batchwork.values.errors import ProviderAPIError
from airflow_batchwork.values.pricing import load_prices
from airflow_batchwork.values.recorder import CHARS_PER_TOKEN
from airflow_batchwork.values.refs import ModelRef
from airflow_batchwork.values.requests import (
    BatchRequest,
    ChatMessage,
    ContentPart,
    FilePart,
    ImagePart,
    NamedToolChoice,
    PlainSpec,
    PlainText,
    TextPart,
    ToolCallPart,
)
from airflow_batchwork.values.result_schema import ITEM_SCHEMA, items_to_batch, without_cache_counts
from airflow_batchwork.values.status import BatchState, BatchStatus, Counts, FinishReason, ItemResult

log = logging.getLogger(__name__)

API_VERSION = "v1beta"
BATCH_NAME = re.compile(r"^batches/[A-Za-z0-9_-]{1,200}\Z")
FILE_NAME = re.compile(r"^files/[A-Za-z0-9_-]{1,200}\Z")
MODEL_PATH = re.compile(r"^(models|tunedModels)/[A-Za-z0-9._-]{1,200}\Z")
# The resumable protocol takes the file in chunks; 8 MB is what the official SDK sends per request.
UPLOAD_CHUNK_BYTES = 8 * 1024 * 1024
#: A recorded upload is named by a retried create only while it lives this much longer (seconds): the Files API
#: deletes a file 48 hours after its upload (`File.expirationTime`), and the batch still has to read it.
UPLOAD_REUSE_MARGIN = 3600.0
DISPLAY_NAME = "batchwork"
MAX_DISPLAY_NAME = 512
CACHED_CONTENT_NAME = re.compile(r"^cachedContents/[A-Za-z0-9_-]{1,200}\Z")
# `CachedContent.display_name`: "Maximum 128 Unicode characters" (proto comment).
MAX_CACHE_DISPLAY_NAME = 128
# Our own key on an encoded line of a `cache_prefix` request: never sent (`create` drops it).
CACHE_MARK = "batchworkCachePrefix"
# Used when the price table has no minimum for the model (the highest minimum the caching guide lists).
CACHE_MIN_TOKENS_DEFAULT = 4096

# Raw REST sends BATCH_STATE_*; the SDKs and docs show JOB_STATE_* (Vertex names), so both are read.
STATES: dict[str, BatchState] = {
    "BATCH_STATE_UNSPECIFIED": "validating", "BATCH_STATE_PENDING": "validating",
    "BATCH_STATE_RUNNING": "in_progress", "BATCH_STATE_SUCCEEDED": "completed",
    "BATCH_STATE_FAILED": "failed", "BATCH_STATE_CANCELLED": "cancelled", "BATCH_STATE_EXPIRED": "expired",
    "JOB_STATE_UNSPECIFIED": "validating", "JOB_STATE_PENDING": "validating",
    "JOB_STATE_QUEUED": "validating", "JOB_STATE_RUNNING": "in_progress",
    "JOB_STATE_UPDATING": "in_progress", "JOB_STATE_PAUSED": "in_progress",
    "JOB_STATE_CANCELLING": "cancelling", "JOB_STATE_SUCCEEDED": "completed",
    "JOB_STATE_PARTIALLY_SUCCEEDED": "completed", "JOB_STATE_FAILED": "failed",
    "JOB_STATE_CANCELLED": "cancelled", "JOB_STATE_EXPIRED": "expired",
}
TERMINAL: frozenset[BatchState] = frozenset({"completed", "failed", "expired", "cancelled"})

FINISH_REASONS: dict[str, FinishReason] = {
    "STOP": "stop", "MAX_TOKENS": "length",
    "SAFETY": "content_filter", "RECITATION": "content_filter", "BLOCKLIST": "content_filter",
    "PROHIBITED_CONTENT": "content_filter", "SPII": "content_filter", "IMAGE_SAFETY": "content_filter",
}

# google.rpc.Code: an item's `error` is a google.rpc.Status, whose `code` is this number (no `status` name).
RPC_CODES: dict[int, str] = {
    0: "OK", 1: "CANCELLED", 2: "UNKNOWN", 3: "INVALID_ARGUMENT", 4: "DEADLINE_EXCEEDED", 5: "NOT_FOUND",
    6: "ALREADY_EXISTS", 7: "PERMISSION_DENIED", 8: "RESOURCE_EXHAUSTED", 9: "FAILED_PRECONDITION",
    10: "ABORTED", 11: "OUT_OF_RANGE", 12: "UNIMPLEMENTED", 13: "INTERNAL", 14: "UNAVAILABLE",
    15: "DATA_LOSS", 16: "UNAUTHENTICATED",
}


def rpc_code_name(error: object) -> str | None:
    """The google.rpc.Code name of an item error: its numeric `code` (the wire shape, google.rpc.Status),
    else a `status` string some proxies add; a number outside google.rpc.Code stays as its digits."""
    if not isinstance(error, Mapping):
        return None
    code = error.get("code")
    if isinstance(code, str) and code.lstrip("-").isdigit():
        code = int(code)
    if isinstance(code, int) and not isinstance(code, bool) and code in RPC_CODES:
        return RPC_CODES[code]
    status = error.get("status")
    if isinstance(status, str) and status:
        return status
    return None if code is None else str(code)


# (our field, generationConfig field)
GENERATION_FIELDS = (
    ("max_output_tokens", "maxOutputTokens"), ("temperature", "temperature"), ("top_p", "topP"),
    ("top_k", "topK"), ("stop_sequences", "stopSequences"), ("seed", "seed"),
    ("presence_penalty", "presencePenalty"), ("frequency_penalty", "frequencyPenalty"),
)
# The fields a batch item's request may have (protos: GenerateContentRequest / EmbedContentRequest, minus
# `model`, which is the batch's); `provider_options` naming anything else is refused before any call.
GENERATE_FIELDS = frozenset({"contents", "systemInstruction", "tools", "toolConfig", "safetySettings",
                             "generationConfig", "cachedContent"})
EMBED_FIELDS = frozenset({"content", "taskType", "title", "outputDimensionality"})
EMBEDDING_UNSUPPORTED = (
    "system", "max_output_tokens", "temperature", "top_p", "top_k", "stop_sequences", "seed",
    "presence_penalty", "frequency_penalty", "output_schema",
)


def merge_provider_options(body: dict[str, Any], request: BatchRequest) -> dict[str, Any]:
    """`provider_options` over the built request; nested objects (e.g. `generationConfig`) are merged
    one level deep, so an option such as `responseMimeType` does not drop the mapped fields."""
    for key, value in (request.provider_options or {}).items():
        if isinstance(value, Mapping) and isinstance(body.get(key), dict):
            body[key] = {**body[key], **value}
        else:
            body[key] = value
    return body


def _parts(message: ChatMessage) -> list[dict[str, Any]]:
    if isinstance(message.content, str):
        return [{"text": message.content}]
    return [_part(part) for part in message.content]


def _part(part: ContentPart) -> dict[str, Any]:
    """One content part as a Gemini `Part`: text, `inlineData` / `fileData` (a URL), `functionCall`,
    `functionResponse` (whose `response` is an object: other outputs are wrapped as `{"output": …}`)."""
    if isinstance(part, TextPart):
        return {"text": part.text}
    if isinstance(part, ImagePart | FilePart):
        found = media(part)
        if found.kind == "url":
            return {"fileData": {"mimeType": found.media_type, "fileUri": found.value}}
        return {"inlineData": {"mimeType": found.media_type, "data": found.value}}
    if isinstance(part, ToolCallPart):
        return {"functionCall": {"name": part.tool_name, "args": dict(part.input)}}
    output = part.output if isinstance(part.output, dict) else {"output": part.output}
    return {"functionResponse": {"name": part.tool_name, "response": output}}


def _tool_fields(request: BatchRequest) -> dict[str, Any]:
    """`tools` (function declarations, JSON Schema parameters as `parametersJsonSchema`) and `toolConfig`."""
    if not request.tools:
        return {}
    out: dict[str, Any] = {"tools": [{"functionDeclarations": [
        {"name": t.name, "description": t.description or "", "parametersJsonSchema": dict(t.parameters)}
        for t in request.tools]}]}
    choice = request.tool_choice
    if isinstance(choice, NamedToolChoice):
        out["toolConfig"] = {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": [choice.tool_name]}}
    elif choice is not None:
        mode = {"auto": "AUTO", "required": "ANY", "none": "NONE"}[choice]
        out["toolConfig"] = {"functionCallingConfig": {"mode": mode}}
    return out


def generate_content_request(request: BatchRequest) -> dict[str, Any]:
    """A `GenerateContentRequest` (model omitted: the batch's model applies)."""
    body: dict[str, Any] = {
        "contents": [
            {"role": "model" if m.role == "assistant" else "user", "parts": _parts(m)}
            for m in request.conversation()
        ],
    }
    system = request.system_text()
    if system:
        body["systemInstruction"] = {"parts": [{"text": system}]}
    body.update(_tool_fields(request))
    config = {theirs: getattr(request, ours) for ours, theirs in GENERATION_FIELDS
              if getattr(request, ours) is not None}
    if request.output_schema is not None:
        # JSON Schema proper goes in `responseJsonSchema`; `responseSchema` takes only an OpenAPI subset.
        config.update(responseMimeType="application/json", responseJsonSchema=dict(request.output_schema))
    if config:
        body["generationConfig"] = config
    return merge_provider_options(body, request)


def embed_content_request(request: BatchRequest) -> dict[str, Any]:
    """An `EmbedContentRequest` (model omitted: the batch's model applies)."""
    body: dict[str, Any] = {"content": {"parts": [{"text": request.value or ""}]}}
    if request.dimensions is not None:
        body["outputDimensionality"] = request.dimensions
    return merge_provider_options(body, request)


def strip_cache_mark(line: bytes) -> bytes:
    """An encoded line without our `cache_prefix` mark (the API would refuse the unknown field)."""
    if CACHE_MARK.encode() not in line:
        return line
    data = json.loads(line)
    data.pop(CACHE_MARK, None)
    return dumps(data)


def display_name(metadata: Mapping[str, str]) -> str:
    """`batch.displayName` carrying the job's metadata (Gemini batches have no metadata field)."""
    if not metadata:
        return DISPLAY_NAME
    name = f"{DISPLAY_NAME} {json.dumps(dict(sorted(metadata.items())), separators=(',', ':'))}"
    return name if len(name) <= MAX_DISPLAY_NAME else DISPLAY_NAME


def metadata_from_display_name(name: object) -> dict[str, str] | None:
    """The metadata `display_name` encoded, or None for a batch not named by us."""
    if not isinstance(name, str) or not name.startswith(DISPLAY_NAME + " {"):
        return None
    try:
        value = json.loads(name[len(DISPLAY_NAME) + 1:])
    except ValueError:
        return None
    return {str(k): str(v) for k, v in value.items()} if isinstance(value, dict) else None


def fill_from_generate(item: ItemResult, response: Mapping[str, Any]) -> None:
    """Text, finish reason and usage from a `GenerateContentResponse`."""
    candidates = response.get("candidates") or []
    candidate = candidates[0] if candidates and isinstance(candidates[0], Mapping) else {}
    parts = (candidate.get("content") or {}).get("parts") or []
    # Thought summaries are parts flagged `thought: true`; they are not the answer.
    texts = [p["text"] for p in parts if isinstance(p, Mapping) and isinstance(p.get("text"), str)
             and not p.get("thought")]
    item.text = "".join(texts) if texts else None
    raw = candidate.get("finishReason")
    if raw is None and not candidates and (response.get("promptFeedback") or {}).get("blockReason"):
        item.finish_reason = "content_filter"
    elif raw is not None:
        item.finish_reason = FINISH_REASONS.get(str(raw), "other")
        calls = [p["functionCall"] for p in parts
                 if isinstance(p, Mapping) and isinstance(p.get("functionCall"), Mapping)]
        if item.finish_reason == "stop" and calls:
            item.finish_reason = "tool_calls"
        item.tool_calls = tool_calls_json(item.custom_id, ((c.get("id"), c.get("name"), c.get("args")) for c in calls))
    usage = response.get("usageMetadata")
    if isinstance(usage, Mapping):
        item.input_tokens = int_or_none(usage.get("promptTokenCount"))
        candidates_tokens = int_or_none(usage.get("candidatesTokenCount"))
        thoughts = int_or_none(usage.get("thoughtsTokenCount"))
        # Zero counts are omitted on the wire; thinking tokens are billed as output.
        if candidates_tokens is not None or thoughts is not None or item.input_tokens is not None:
            item.output_tokens = (candidates_tokens or 0) + (thoughts or 0)
        item.total_tokens = int_or_none(usage.get("totalTokenCount"))
        if item.total_tokens is None and item.input_tokens is not None:
            item.total_tokens = item.input_tokens + (item.output_tokens or 0)


def fill_from_embed(item: ItemResult, response: Mapping[str, Any]) -> None:
    """The vector of an `EmbedContentResponse`."""
    embedding = response.get("embedding") or {}
    values = embedding.get("values") if isinstance(embedding, Mapping) else None
    item.embedding = [float(x) for x in values] if isinstance(values, list) else None
    item.finish_reason = "stop"
    usage = response.get("usageMetadata")
    if isinstance(usage, Mapping):
        item.input_tokens = int_or_none(usage.get("promptTokenCount"))
        item.total_tokens = int_or_none(usage.get("totalTokenCount")) or item.input_tokens


def parse_entry(data: Mapping[str, Any], raw: str, batch_id: str, fill: Any) -> ItemResult | None:
    """One inline `{response | error, metadata: {key}}` entry or file line `{key, response | error}`.

    Returns None for an entry without a key (nothing to join it to)."""
    metadata = data.get("metadata")
    key = data.get("key")
    if key is None and isinstance(metadata, Mapping):
        key = metadata.get("key")
    if not isinstance(key, str):
        return None
    item = ItemResult(custom_id=key, status="succeeded", batch_id=batch_id, response=raw)
    response = data.get("response")
    if isinstance(response, Mapping) and not data.get("error"):
        fill(item, response)
        return item
    error = data.get("error")
    code, message = error_fields(error)
    code = rpc_code_name(error) or code
    item.status, item.finish_reason = "errored", "error"
    item.error_code = code or "error"
    item.error_message = message or "the provider returned no error message"
    return item


_PART = pa.struct([
    ("text", pa.string()), ("thought", pa.bool_()), ("functionCall", pa.struct([("name", pa.string())])),
])
GENERATE_LINE_SCHEMA = pa.schema([
    ("key", pa.string()),
    ("response", pa.struct([
        ("candidates", pa.list_(pa.struct([
            ("content", pa.struct([("parts", pa.list_(_PART))])), ("finishReason", pa.string()),
        ]))),
        ("usageMetadata", pa.struct([
            ("promptTokenCount", pa.int64()), ("candidatesTokenCount", pa.int64()),
            ("totalTokenCount", pa.int64()), ("thoughtsTokenCount", pa.int64()),
            ("cachedContentTokenCount", pa.int64()),  # the prompt-cache count `cache_tokens` reads
        ])),
    ])),
    ("error", pa.struct([("code", pa.int64()), ("message", pa.string()), ("status", pa.string())])),
])
_RPC_NUMBERS = pa.array(list(RPC_CODES), pa.int64())
_RPC_NAMES = pa.array(list(RPC_CODES.values()), pa.string())
_LOWER_FINISH: dict[str, str] = {k.lower(): v for k, v in FINISH_REASONS.items()}


def parse_generate_chunk(chunk: bytes, batch_id: str) -> pa.RecordBatch | None:
    """Result columns for a chunk of file-mode `{key, response | error}` lines, computed in Arrow; None
    when a line needs the line parser (thought or function-call parts, blocked prompts, odd shapes)."""
    parsed = read_lines(chunk, GENERATE_LINE_SCHEMA, id_column="key")
    if parsed is None:
        return None
    lines, table = parsed
    n = len(lines)
    if n == 0:
        return empty_batch()
    response, error = table.column("response").combine_chunks(), table.column("error").combine_chunks()
    ok = pc.and_(pc.is_valid(response), pc.is_null(error))
    if not pc.all(pc.xor(pc.is_valid(response), pc.is_valid(error))).as_py():
        return None
    candidates = field(response, "candidates")
    if not pc.all(pc.or_(pc.invert(ok), pc.greater(pc.fill_null(pc.list_value_length(candidates), 0), 0))).as_py():
        return None
    parts_of_all = pc.list_flatten(field(pc.list_flatten(candidates), "content", "parts"))
    if len(parts_of_all) and not (
        pc.all(pc.invert(pc.fill_null(field(parts_of_all, "thought"), False))).as_py()
        and field(parts_of_all, "functionCall").null_count == len(parts_of_all)
        and field(parts_of_all, "text").null_count == 0
    ):
        return None
    first = first_element(only_where(ok, candidates))
    parts = field(first, "content", "parts")
    if not pc.all(pc.or_(pc.invert(ok), pc.greater(pc.fill_null(pc.list_value_length(parts), 0), 0))).as_py():
        return None
    texts = pa.ListArray.from_arrays(parts.offsets, field(pc.list_flatten(parts), "text"), mask=parts.is_null())
    usage = field(response, "usageMetadata")
    prompt, answer = field(usage, "promptTokenCount"), field(usage, "candidatesTokenCount")
    thoughts = field(usage, "thoughtsTokenCount")
    any_count = pc.or_(pc.or_(pc.is_valid(prompt), pc.is_valid(answer)), pc.is_valid(thoughts))
    output = pc.if_else(any_count, pc.add(pc.fill_null(answer, 0), pc.fill_null(thoughts, 0)), pa.nulls(n, pa.int64()))
    strings, ints = pa.nulls(n, pa.string()), pa.nulls(n, pa.int64())
    failed = pc.invert(ok)
    columns = {
        "custom_id": table.column("key").combine_chunks(),
        "batch_id": const(batch_id, n),
        "status": pc.if_else(ok, const("succeeded", n), const("errored", n)),
        "text": only_where(ok, pc.binary_join(texts, "")),
        "finish_reason": pc.if_else(ok, map_values(field(first, "finishReason"), _LOWER_FINISH), const("error", n)),
        "input_tokens": pc.if_else(ok, prompt, ints),
        "output_tokens": pc.if_else(ok, output, ints),
        "total_tokens": pc.if_else(ok, pc.coalesce(field(usage, "totalTokenCount"), pc.add(prompt, output)), ints),
        "error_code": pc.if_else(failed, pc.coalesce(
            pc.take(_RPC_NAMES, pc.index_in(field(error, "code"), _RPC_NUMBERS)), field(error, "status"),
            pc.cast(field(error, "code"), pa.string()), const("error", n)), strings),
        "error_message": pc.if_else(failed, pc.coalesce(field(error, "message"),
                                                        const("the provider returned no error message", n)), strings),
        "response": lines,
        "embedding": pa.nulls(n, ITEM_SCHEMA.field("embedding").type),
        "tool_calls": pa.nulls(n, pa.string()),
    }
    batch = pa.RecordBatch.from_arrays([columns[f.name] for f in ITEM_SCHEMA], schema=ITEM_SCHEMA)
    return without_cache_counts(batch) if all_zero([field(usage, "cachedContentTokenCount")]) else batch


def operation_output(operation: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The batch output: `response` of a done Operation, else its `metadata.output` mirror."""
    for output in (operation.get("response"), (operation.get("metadata") or {}).get("output")):
        if isinstance(output, Mapping) and (
            output.get("responsesFile") or output.get("inlinedResponses")
            or output.get("inlinedEmbedContentResponses")
        ):
            return output
    return None


def operation_status(operation: Mapping[str, Any], check: Any) -> BatchStatus:
    """Normalize a raw batch Operation (`metadata.state`, string `batchStats` with zeros omitted)."""
    metadata = operation.get("metadata") or {}
    raw = str(metadata.get("state") or "")
    state: BatchState = STATES.get(raw, "in_progress")
    error = operation.get("error")
    if operation.get("done") and state not in TERMINAL:
        state = "failed" if error else "completed"
    stats = metadata.get("batchStats") or {}
    total = int_or_none(stats.get("requestCount")) or 0
    succeeded = int_or_none(stats.get("successfulRequestCount")) or 0
    failed = int_or_none(stats.get("failedRequestCount")) or 0
    rest = max(total - succeeded - failed, 0)
    counts = Counts(
        total=total, succeeded=succeeded, errored=failed,
        expired=rest if state == "expired" else 0,
        canceled=rest if state == "cancelled" else 0,
        processing=0 if state in TERMINAL else rest,
    )
    _, message = error_fields(error)
    return BatchStatus(id=check(operation.get("name")), state=state, counts=counts, raw_state=raw,
                       error_message=message)


class GoogleAdapter(ProviderAdapter):
    provider: ClassVar[str] = "google"
    endpoints: ClassVar[tuple[EndpointSpec, ...]] = (
        EndpointSpec("chat", "text", "batchGenerateContent"),
        EndpointSpec("embedding", "embedding", "asyncBatchEmbedContent"),
    )
    string_default: ClassVar[str] = "chat"
    factory_default: ClassVar[str] = "chat"
    key_env_vars: ClassVar[tuple[str, ...]] = ("GEMINI_API_KEY", "GOOGLE_API_KEY")
    default_base_url: ClassVar[str] = "https://generativelanguage.googleapis.com"
    # Input file <= 2 GB (batch guide). No request-count limit is documented; 100,000 is our own cap.
    limits: ClassVar[ProviderLimits] = ProviderLimits(100_000, 2 * 1024**3, 2 * 1024**3)
    # An errored entry's google.rpc.Code, by name (its numeric `error.code` mapped through RPC_CODES).
    retryable_error_codes: ClassVar[frozenset[str]] = frozenset({
        "RESOURCE_EXHAUSTED", "UNAVAILABLE", "INTERNAL", "DEADLINE_EXCEEDED",
    })
    # Implicit caching is on by default (Gemini 2.5+): `usageMetadata.cachedContentTokenCount` reports the
    # cached part, which `promptTokenCount` includes (google-genai `GenerateContentResponseUsageMetadata`).
    # Explicit caching (`cachedContent` naming a cachedContents resource): see `create_tracked`.
    prompt_cache_automatic: ClassVar[bool] = True
    cache_tokens_in_input: ClassVar[bool] = True
    cache_hit_pattern: ClassVar[str | None] = r'"cachedContentTokenCount":\s*[1-9]'

    @classmethod
    def cache_tokens(cls, responses: pa.Array) -> tuple[pa.Array, pa.Array, pa.Array] | None:
        def counts(entry: Any) -> tuple[int, int] | None:
            response = entry.get("response") if isinstance(entry, Mapping) else None
            usage = response.get("usageMetadata") if isinstance(response, Mapping) else None
            if not isinstance(usage, Mapping) or entry.get("error"):
                return None
            return int_or_none(usage.get("cachedContentTokenCount")) or 0, 0
        return cache_token_columns(responses, counts)
    id_pattern: ClassVar[re.Pattern[str]] = BATCH_NAME
    # Above this create-body size a batch is uploaded as a file (inline requests must stay under 20 MB).
    # Set it on an instance (`client.adapter("google").inline_max_bytes = …`) to move the switch.
    inline_max_bytes: int = 20 * 1024 * 1024
    list_page_size: int = 100

    def auth_headers(self, api_key: str) -> dict[str, str]:
        return {"x-goog-api-key": api_key}

    @staticmethod
    def parse_error(response: httpx.Response) -> tuple[str | None, str]:
        """(`status`, message) of a `{"error": {code, message, status, details}}` body."""
        try:
            body = response.json()
        except ValueError:
            return default_error_parser(response)
        error = body.get("error") if isinstance(body, dict) else None
        if isinstance(error, dict) and error.get("message"):
            status = error.get("status") or error.get("code")
            return (str(status) if status is not None else None), str(error["message"])
        return default_error_parser(response)

    # --- payloads --------------------------------------------------------------------------------
    def content_support(self, ref: ModelRef) -> ContentSupport:
        if ref.endpoint == "embedding":
            return super().content_support(ref)
        # `Part.inlineData` (base64 `Blob`) or `Part.fileData` (a `fileUri`), any media type the model takes;
        # `FunctionDeclaration.description` is REQUIRED in the proto.
        return ContentSupport(image_sources=BOTH, file_sources=BOTH, tools=True, tool_description_required=True)

    def check_request(self, ref: ModelRef, request: BatchRequest) -> Refusal | None:
        known = EMBED_FIELDS if ref.endpoint == "embedding" else GENERATE_FIELDS
        for key in request.provider_options or {}:
            if key not in known:
                what = "EmbedContentRequest" if ref.endpoint == "embedding" else "GenerateContentRequest"
                return (f"provider_options.{key}", f"is not a field of Gemini's {what}",
                        f"use one of {', '.join(sorted(known))} (lowerCamelCase), or remove it")
        if ref.endpoint == "embedding":
            return first_unsupported(request, EMBEDDING_UNSUPPORTED, "google", ref.endpoint)
        return first_unsupported(request, ("dimensions",), "google", ref.endpoint)

    def encode(self, ref: ModelRef, request: BatchRequest) -> bytes:
        """The file-mode line `{"key", "request"}`; `create` turns it into an inline entry when inlining."""
        build = embed_content_request if ref.kind == "embedding" else generate_content_request
        line: dict[str, Any] = {"key": request.custom_id, "request": build(request)}
        if request.cache_prefix and ref.kind != "embedding" and "systemInstruction" in line["request"] \
                and "cachedContent" not in line["request"]:
            line[CACHE_MARK] = True  # a candidate for explicit caching (create_tracked); stripped before sending
        return dumps(line)

    def plain_encoder(self, ref: ModelRef) -> Callable[[Sequence[PlainSpec]], list[bytes]]:
        """`encode` of plain text requests (no messages, tools or output schema): the same line, in the same key
        order, built in one call per request (embeddings: `encode` of each)."""
        if ref.kind == "embedding":
            return super().plain_encoder(ref)

        def item(request: PlainText) -> dict[str, Any]:
            body: dict[str, Any] = {"contents": [{"role": "user", "parts": [{"text": request.prompt or ""}]}]}
            system = request.system
            if system:
                body["systemInstruction"] = {"parts": [{"text": system}]}
            config = {theirs: value for ours, theirs in GENERATION_FIELDS
                      if (value := getattr(request, ours)) is not None}
            if config:
                body["generationConfig"] = config
            if request.provider_options:
                merge_provider_options(body, request)  # type: ignore[arg-type]  # a PlainSpec reads as a request
            line: dict[str, Any] = {"key": request.custom_id, "request": body}
            if request.cache_prefix and "systemInstruction" in body and "cachedContent" not in body:
                line[CACHE_MARK] = True  # as `encode`
            return line

        return plain_items(item)  # type: ignore[arg-type]

    @staticmethod
    def model_path(ref: ModelRef) -> str:
        path = ref.model if ref.model.startswith(("models/", "tunedModels/")) else f"models/{ref.model}"
        return check_id(path, what="google model", pattern=MODEL_PATH)

    # --- calls -----------------------------------------------------------------------------------
    async def create(self, ref: ModelRef, items: Iterable[bytes], *, metadata: Mapping[str, str]) -> str:
        return await self._create_batch(ref, items, metadata=metadata, progress=CallProgress())

    async def _create_batch(self, ref: ModelRef, items: Iterable[bytes], *, metadata: Mapping[str, str],
                            progress: CallProgress) -> str:
        """Create the batch: inline, or from a JSONL file uploaded once, whose `files/…` name is recorded in
        the ledger before the paid create (a retry after a kill re-uses it instead of leaving an orphan)."""
        lines = [strip_cache_mark(line) for line in items]
        url = f"/{API_VERSION}/{self.model_path(ref)}:{ref.spec.path}"
        batch: dict[str, Any] = {"displayName": display_name(metadata)}
        body: bytes | None = None
        if sum(len(line) + 1 for line in lines) <= self.inline_max_bytes:
            entries = []
            for line in lines:
                data = json.loads(line)
                entries.append({"request": data["request"], "metadata": {"key": data["key"]}})
            batch["inputConfig"] = {"requests": {"requests": entries}}
            body = dumps({"batch": batch})
            if len(body) > self.inline_max_bytes:
                body = None
        if body is None:
            file_name = progress.get("file_name")
            if file_name and not await self._upload_reusable(file_name):
                file_name = None
            if not file_name:
                file_name = await self.upload(lines)
                progress.record(file_name=file_name)
            batch["inputConfig"] = {"fileName": check_id(file_name, what="google file name", pattern=FILE_NAME)}
            body = dumps({"batch": batch})
        response = await self.http.request(
            "POST", url, retry_safe=False, content=body, headers={"content-type": "application/json"}
        )
        return self.check_id(response.json().get("name"))

    # --- explicit context caching (cachedContents) ---------------------------------------------------
    #: Lifetime of a created cache (seconds): long enough for a batch to reach its items (the batch guide's
    #: 24-hour target, 48 hours before a batch expires); the collect deletes it earlier. Set it on an instance
    #: (`client.adapter("google").cached_content_ttl = …`) to change it.
    cached_content_ttl: float = 48 * 3600
    #: A batch with fewer requests than this makes no cache (it would pay storage to be read once); it reads the
    #: job's cache when an earlier batch of the job made one, else sends its prompt as is.
    cached_content_min_requests: int = 2

    def cache_plan(self, ref: ModelRef, entries: Sequence[Mapping[str, Any]]) -> tuple[Any, str | None]:
        """(the shared `systemInstruction` to cache, None) for a batch that can use explicit caching, else
        (None, why not); (None, None) when no request asked for it."""
        marked = sum(1 for e in entries if e.get(CACHE_MARK))
        if not marked:
            return None, None
        if marked != len(entries):
            return None, "not every request of the batch has cache_prefix and a system prompt"
        requests = [e.get("request") or {} for e in entries]
        if len({dumps(r.get("systemInstruction")) for r in requests}) != 1:
            return None, "the requests do not all share the same system prompt"
        if any(r.get("tools") or r.get("toolConfig") for r in requests):
            return None, "requests with tools or tool_config cannot name a cache holding only the system prompt"
        system = requests[0]["systemInstruction"]
        text = "".join(str(p.get("text") or "") for p in system.get("parts") or [] if isinstance(p, Mapping))
        price = load_prices().lookup(ref)
        minimum = (price.min_cache_tokens if price is not None else None) or CACHE_MIN_TOKENS_DEFAULT
        estimate = len(text) / CHARS_PER_TOKEN
        if estimate < minimum:
            return None, (f"the system prompt is about {estimate:,.0f} tokens ({CHARS_PER_TOKEN} characters per "
                          f"token), below {ref.model}'s minimum of {minimum:,} for a cache")
        return system, None

    @staticmethod
    def cache_display_name(metadata: Mapping[str, str], prefix: str) -> str | None:
        """`CachedContent.displayName` naming the job (identity and input fingerprint, no shard: the shards of a
        job share one cache) and the prefix's digest, so a try can find the cache an earlier try of the same job
        made; None for a job without an identity (its caches are never looked up: another job could own them)."""
        if "batchwork_id" not in metadata:
            return None
        tags = {"batchwork_id": metadata["batchwork_id"], "batchwork_fp": metadata.get("batchwork_fp", ""),
                "prefix": prefix}
        name = display_name(tags)
        return name if len(name) <= MAX_CACHE_DISPLAY_NAME else None

    async def create_tracked(self, ref: ModelRef, items: Iterable[bytes], *, metadata: Mapping[str, str],
                             progress: CallProgress) -> str:
        """`create`, with one cachedContents resource holding the batch's shared system prompt when its requests
        asked for `cache_prefix` (see the module docstring); the resource's name is kept in `progress`."""
        lines = list(items)
        if not any(CACHE_MARK.encode() in line for line in lines):
            return await self._create_batch(ref, lines, metadata=metadata, progress=progress)
        entries = [json.loads(line) for line in lines]
        system, reason = self.cache_plan(ref, entries)
        name = None
        if system is not None:
            name, reason = await self._cached_content(ref, system, metadata, progress, len(entries))
        if name is None:
            log.info("Gemini explicit caching is not used for %d requests: %s; each request carries its system "
                     "prompt (implicit caching may still apply)", len(lines), reason)
            return await self._create_batch(ref, lines, metadata=metadata, progress=progress)
        sent = []
        for entry in entries:
            request = {k: v for k, v in entry["request"].items() if k != "systemInstruction"}
            request["cachedContent"] = name
            sent.append(dumps({"key": entry["key"], "request": request}))
        log.info("Gemini batch of %d requests reads the system prompt from %s", len(sent), name)
        return await self._create_batch(ref, sent, metadata=metadata, progress=progress)

    async def _cached_content(self, ref: ModelRef, system: Any, metadata: Mapping[str, str],
                              progress: CallProgress, count: int = 2) -> tuple[str | None, str | None]:
        """(name, None) of the cache holding `system` for this job: the one this shard's earlier try recorded, or
        an earlier shard of this submit made, or (jobs with an identity) one found by its display name (an
        earlier try's, its answer lost), if it still exists; else a new one. (None, why): the API refused it."""
        prefix = hashlib.sha256(dumps([self.model_path(ref), system])).hexdigest()[:16]
        # Caches this adapter made, by job (identity, fingerprint) and prefix: the other shards of the job reuse
        # them. A job without an identity is not told apart from another, so each of its batches makes its own.
        made: dict[tuple[str, str, str], str] = self.__dict__.setdefault("_prefix_caches", {})
        job = (metadata.get("batchwork_id", ""), metadata.get("batchwork_fp", ""), prefix)
        for known in (progress.get("cached_content"), made.get(job) if job[0] else None):
            if known and await self._cache_alive(str(known)):
                log.info("Reusing %s for the shared system prompt", known)
                progress.record(cached_content=str(known), resources=[str(known)])
                return str(known), None
        display = self.cache_display_name(metadata, prefix)
        if display is not None:
            found = await self._find_cache(display, ref)
            if found:
                log.info("Found %s made by an earlier try of this job: reusing it", found)
                made[job] = found
                progress.record(cached_content=found, resources=[found])
                return found, None
        if count < self.cached_content_min_requests:
            return None, (f"a new cache for {count} request(s) would cost storage for little or no reading (a "
                          f"batch needs {self.cached_content_min_requests} requests to make one)")
        body = self.cache_body(ref, system, display or f"{DISPLAY_NAME} {prefix}")
        try:
            response = await self.http.request("POST", f"/{API_VERSION}/cachedContents", retry_safe=False,
                                               content=dumps(body), headers={"content-type": "application/json"})
        except ProviderAPIError as exc:
            if exc.status_code == 400:  # e.g. "Cached content is too small" (a minimum above our table's)
                return None, f"the API refused the cache ({exc.message})"
            raise
        created = response.json()
        name = check_id(created.get("name"), what="google cachedContent name", pattern=CACHED_CONTENT_NAME)
        tokens = int_or_none((created.get("usageMetadata") or {}).get("totalTokenCount"))
        made[job] = name
        progress.record(cached_content=name, cached_content_tokens=tokens, resources=[name])
        log.info("Created %s (%s tokens, expires %s) for the shared system prompt", name,
                 "?" if tokens is None else f"{tokens:,}", created.get("expireTime"))
        return name, None

    def cache_body(self, ref: ModelRef, system: Any, display: str) -> dict[str, Any]:
        """The `CachedContent` create body: model, display name, the system instruction, a TTL (`"Ns"`)."""
        return {"model": self.model_path(ref), "displayName": display, "systemInstruction": system,
                "ttl": f"{int(self.cached_content_ttl)}s"}

    async def _cache_alive(self, name: str) -> bool:
        path = f"/{API_VERSION}/{check_id(name, what='google cachedContent name', pattern=CACHED_CONTENT_NAME)}"
        try:
            await self.http.request("GET", path, retry_safe=True)
        except ProviderAPIError as exc:
            if exc.status_code in (403, 404):  # expired or deleted
                return False
            raise
        return True

    async def _find_cache(self, display: str, ref: ModelRef) -> str | None:
        """A live cache of this model named `display` (GET /v1beta/cachedContents, paged)."""
        token: str | None = None
        model = self.model_path(ref)
        for _ in range(50):
            params: dict[str, Any] = {"pageSize": 100}
            if token:
                params["pageToken"] = token
            page = (await self.http.request("GET", f"/{API_VERSION}/cachedContents", retry_safe=True,
                                            params=params)).json()
            for cached in page.get("cachedContents") or []:
                if cached.get("displayName") == display and cached.get("model") == model:
                    return check_id(cached.get("name"), what="google cachedContent name", pattern=CACHED_CONTENT_NAME)
            token = page.get("nextPageToken")
            if not token:
                return None
        return None

    async def release(self, resources: Sequence[str]) -> None:
        """Delete the cachedContents a submit created (at collect); one already gone (expired) is fine, and a
        failed delete only logs: the cache expires at its TTL anyway."""
        for name in resources:
            if not CACHED_CONTENT_NAME.match(name):
                continue
            try:
                await self.http.request("DELETE", f"/{API_VERSION}/{name}", retry_safe=True)
                log.info("Deleted %s", name)
            except ProviderAPIError as exc:
                if exc.status_code in (403, 404):
                    log.info("%s is already gone (expired or deleted)", name)
                else:
                    log.warning("Could not delete %s (%s); it expires at its TTL", name, exc)

    async def upload(self, lines: Iterable[bytes]) -> str:
        """Upload JSONL with the resumable protocol; return the `files/…` name."""
        with tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES) as spool:
            for line in lines:
                spool.write(line)
                spool.write(b"\n")
            size = spool.tell()
            spool.seek(0)
            start = await self.http.request(
                "POST", f"/upload/{API_VERSION}/files", retry_safe=False,
                json={"file": {"displayName": "batchwork-input.jsonl"}},
                headers={
                    "X-Goog-Upload-Protocol": "resumable", "X-Goog-Upload-Command": "start",
                    "X-Goog-Upload-Header-Content-Length": str(size),
                    "X-Goog-Upload-Header-Content-Type": "application/jsonl",
                },
            )
            upload_url = start.headers.get("x-goog-upload-url")
            if not upload_url:
                message = "the upload start returned no x-goog-upload-url"
                raise ProviderAPIError("google", start.status_code, message, code="upload")
            # The key travels with every call of this client: never to another origin.
            upload_url = self.http.check_origin(upload_url, what="upload URL")
            offset = 0
            while True:
                chunk = spool.read(UPLOAD_CHUNK_BYTES)
                last = offset + len(chunk) >= size
                response = await self.http.request(
                    "POST", upload_url, retry_safe=False, content=chunk,
                    headers={"X-Goog-Upload-Command": "upload, finalize" if last else "upload",
                             "X-Goog-Upload-Offset": str(offset)},
                )
                offset += len(chunk)
                if last:
                    break
        file = response.json().get("file") or {}
        return check_id(file.get("name"), what="google file name", pattern=FILE_NAME)

    async def _upload_reusable(self, file_name: str) -> bool:
        """Whether an upload an earlier try recorded can still be named by the create: it exists and does not
        expire within `UPLOAD_REUSE_MARGIN` (a retry days after a kill uploads again instead of failing)."""
        path = f"/{API_VERSION}/{check_id(file_name, what='google file name', pattern=FILE_NAME)}"
        try:
            file = (await self.http.request("GET", path, retry_safe=True)).json()
        except ProviderAPIError as error:
            if error.status_code not in (403, 404):  # the API answers 403 for a file that no longer exists
                raise
            log.info("The recorded upload %s is gone (HTTP %d); uploading the shard again", file_name,
                     error.status_code)
            return False
        expires = parse_time(file.get("expirationTime"))
        if file.get("state") == "FAILED" or (expires is not None and expires < time.time() + UPLOAD_REUSE_MARGIN):
            log.info("The recorded upload %s expires at %s; uploading the shard again", file_name,
                     file.get("expirationTime"))
            return False
        return True

    async def _operation(self, batch_id: str) -> dict[str, Any]:
        path = f"/{API_VERSION}/{self.check_id(batch_id)}"
        return dict((await self.http.request("GET", path, retry_safe=True)).json())

    async def status(self, batch_id: str) -> BatchStatus:
        return operation_status(await self._operation(batch_id), self.check_id)

    result_id_key: ClassVar[str] = "key"

    def read_result_line(self, ref: ModelRef, batch_id: str, line: str, state: str) -> ItemResult | None:
        fill = fill_from_embed if ref.kind == "embedding" else fill_from_generate
        data = json.loads(line)
        if not isinstance(data, Mapping):
            raise TypeError("a result entry is not a JSON object")
        return parse_entry(data, line, batch_id, fill)

    async def result_batches(self, ref: ModelRef, batch_id: str, *, rows: int = 10_000
                             ) -> AsyncIterator[pa.RecordBatch]:
        """File-mode generate results are parsed vectorized (falling back line by line); the rest as items."""
        output = operation_output(await self._operation(batch_id))
        file_name = output.get("responsesFile") if output else None
        if not file_name or ref.kind == "embedding" or output.get("inlinedResponses"):  # type: ignore[union-attr]
            async for records in super().result_batches(ref, batch_id, rows=rows):
                yield records
            return

        def parse(chunk: bytes) -> pa.RecordBatch:
            records = parse_generate_chunk(chunk, batch_id)
            if records is None:
                records = items_to_batch(self.parse_result_text(ref, batch_id, chunk.decode("utf-8", errors="replace")))
            return records

        async for records in parse_chunks(self._download_chunks(str(file_name)), parse, GENERATE_LINE_SCHEMA, "key"):
            yield records

    async def _download_chunks(self, file_name: str) -> AsyncIterator[bytes]:
        name = check_id(file_name, what="google responses file", pattern=FILE_NAME)
        path = f"/download/{API_VERSION}/{name}:download"
        async with self.http.stream("GET", path, params={"alt": "media"}) as response:
            async for chunk in complete_chunks(response.aiter_bytes()):
                yield chunk

    async def results(self, ref: ModelRef, batch_id: str) -> AsyncIterator[ItemResult]:
        operation = await self._operation(batch_id)
        output = operation_output(operation)
        if output is None:
            state = operation_status(operation, self.check_id).state
            if state == "expired":
                # Gemini keeps nothing of an expired batch (batch guide): there are no rows to give.
                log.warning("Gemini batch %s expired; the API keeps no results of expired batches", batch_id)
            return
        inlined = output.get("inlinedResponses") or output.get("inlinedEmbedContentResponses") or {}
        entries = inlined.get("inlinedResponses") if isinstance(inlined, Mapping) else None
        for entry in entries or []:
            item = self.parse_result_line(ref, batch_id, json.dumps(entry, ensure_ascii=False))
            if item is not None:
                yield item
        file_name = output.get("responsesFile")
        if file_name:
            name = check_id(file_name, what="google responses file", pattern=FILE_NAME)
            path = f"/download/{API_VERSION}/{name}:download"
            async with self.http.stream("GET", path, params={"alt": "media"}) as response:
                async for line in response.aiter_lines():
                    if line.strip():
                        item = self.parse_result_line(ref, batch_id, line)
                        if item is not None:
                            yield item

    async def cancel(self, batch_id: str) -> BatchStatus:
        # The cancel call answers an empty object; the state is read back.
        await self.http.request("POST", f"/{API_VERSION}/{self.check_id(batch_id)}:cancel", retry_safe=True)
        return await self.status(batch_id)

    async def list_batches(self, *, limit: int = 100) -> AsyncIterator[BatchStatus]:
        async for operation in self._list_raw(limit=limit):
            yield operation_status(operation, self.check_id)

    async def _list_raw(self, *, limit: int) -> AsyncIterator[dict[str, Any]]:
        token: str | None = None
        seen = 0
        while seen < limit:
            params: dict[str, Any] = {"pageSize": min(self.list_page_size, limit - seen)}
            if token:
                params["pageToken"] = token
            page = (await self.http.request(
                "GET", f"/{API_VERSION}/batches", retry_safe=True, params=params
            )).json()
            for operation in page.get("operations") or []:
                if seen >= limit:
                    return
                seen += 1
                yield operation
            token = page.get("nextPageToken")
            if not token:
                return

    async def find_batch(self, metadata: Mapping[str, str], *, limit: int = 500) -> str | None:
        async for operation in self._list_raw(limit=limit):
            tags = metadata_from_display_name((operation.get("metadata") or {}).get("displayName"))
            if tags is None or not all(tags.get(k) == v for k, v in metadata.items()):
                continue
            if operation_status(operation, self.check_id).state != "failed":
                return self.check_id(operation.get("name"))
        return None
