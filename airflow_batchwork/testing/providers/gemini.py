"""Google Gemini API batch mode, served under ``/gemini`` (reference §4); store namespace ``google``.

Wire behaviour worth knowing:

- Every route exists under ``v1``, ``v1beta`` and ``v1alpha`` (google-genai 3.x defaults to ``v1``, the
  REST docs use ``v1beta``). Auth is ``x-goog-api-key`` (or ``?key=``). A missing key is the real 403
  ``PERMISSION_DENIED`` ("unregistered callers"); the key ``invalid`` is the real 400 ``INVALID_ARGUMENT``
  "API key not valid" with an ``ErrorInfo`` reason ``API_KEY_INVALID``. Gemini has no 401 for API keys.
- Batches are raw LRO Operations: ``metadata.state`` is ``BATCH_STATE_*``; ``batchStats`` counters are
  int64 as strings with zeros omitted; ``done: true`` only once terminal. Output is in ``response`` and
  mirrored in ``metadata.output`` (google-genai reads the mirror).
- Inline jobs (body over 20 MB is a 400) return ``inlinedResponses``; file jobs (``inputConfig.fileName``
  from a resumable upload) get a generated ``responsesFile`` served at
  ``/download/{v}/files/{id}:download?alt=media`` and ``/{v}/files/{id}:download?alt=media``.
- Item errors are ``google.rpc.Status`` objects: a numeric gRPC ``code``, ``message`` (``details`` omitted
  when empty), never a ``status`` string; only HTTP error bodies carry ``status`` names. ``[[error]]`` gives
  ``{"error": {"code": 3, message}}`` (INVALID_ARGUMENT); ``[[transient]]`` gives code 14 (UNAVAILABLE), or
  8 / 13 / 4 when the request's text also names ``RESOURCE_EXHAUSTED`` / ``INTERNAL`` / ``DEADLINE_EXCEEDED``.
  ``[[expire]]`` keeps that request from finishing, so the whole batch ends ``BATCH_STATE_EXPIRED`` with an
  Operation ``error`` and, as on the real API, no results at all. A cancelled batch ends
  ``BATCH_STATE_CANCELLED`` with the responses of the requests finished before the cancel.
- Strict input: create bodies, upload-start bodies and uploaded lines are judged by the shipped schema
  (``testing/schemas/google.json``, generated from the GAPIC protos) after the proto3 JSON parser's own
  leniency (original snake_case field names, int64 given as numbers). A create body the schema refuses is a
  400 ``INVALID_ARGUMENT`` naming the field (``Unknown name "x" at 'path': Cannot find field.``, with a
  ``google.rpc.BadRequest`` field violation), before any batch exists. An uploaded line the schema refuses
  fails only that request (its result line's ``error`` is code 3); a line that is not a JSON object, or a
  file with no requests, fails the batch (``BATCH_STATE_FAILED`` with an Operation ``error``) after a short
  pending phase.
- Explicit context caching (CacheService): ``POST /{v}/cachedContents`` takes a ``CachedContent`` (judged by
  the shipped schema) and answers it with ``name: cachedContents/{id}``, ``createTime``/``updateTime``/
  ``expireTime`` and ``usageMetadata.totalTokenCount`` (input-only fields are not echoed); ``ttl`` (``"Ns"``)
  or ``expireTime`` sets the expiry, 1 hour if neither (caching guide). A cache below the model's minimum
  (``min_tokens`` of the Google block in ``data/prices.json``) is the 400 ``Cached content is too small.
  total_token_count=N, min_total_token_count=M`` users report. ``GET``/``DELETE /{v}/cachedContents/{id}``
  and the paged list ``GET /{v}/cachedContents``; an unknown or expired name is a 403 ``PERMISSION_DENIED``.
  A batch item naming ``cachedContent`` is answered with the cache's system instruction and contents before
  its own, ``usageMetadata.cachedContentTokenCount`` = the cache's token count (inside ``promptTokenCount``);
  it fails (item ``error``) when the cache is unknown or expired (code 7), was made for another model, or
  the item also sets ``systemInstruction``, ``tools`` or ``toolConfig`` (code 3, the API's "Tool config,
  tools and system instruction should not be set in the request when using cached content." as users
  report it).
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import secrets
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import cache
from importlib import resources
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

import airflow_batchwork.testing.conformance as conformance
import airflow_batchwork.testing.echo as echo
from airflow_batchwork.testing.providers.base import ApiError, ProviderSpec, find_batch, paginate, query_int, rfc3339
from airflow_batchwork.testing.providers.files import jsonl, jsonl_lines
from airflow_batchwork.testing.store import (
    BatchError,
    BatchView,
    Item,
    ItemResult,
    Outcome,
    Store,
    StoredFile,
)

__all__ = ["SPEC"]

NAME = "google"
PREFIX = "/gemini"
VERSIONS = ("v1", "v1beta", "v1alpha")
MAX_INLINE_BYTES = 20 * 1024 * 1024
_UPLOAD_GRANULARITY = 8 * 1024 * 1024
_FILE_TTL = 48 * 3600
_TYPE = "type.googleapis.com/google.ai.generativelanguage.v1main."
_GENERATE = "batchGenerateContent"
_EMBED = "asyncBatchEmbedContent"
_BATCH_TYPES = {_GENERATE: "GenerateContentBatch", _EMBED: "EmbedContentBatch"}

_STATE = {
    "validating": "BATCH_STATE_PENDING",
    "in_progress": "BATCH_STATE_RUNNING",
    "finalizing": "BATCH_STATE_RUNNING",
    # Gemini has no cancelling state: the job keeps running until the cancel takes effect.
    "cancelling": "BATCH_STATE_RUNNING",
    "ended": "BATCH_STATE_SUCCEEDED",
    "failed": "BATCH_STATE_FAILED",
    "expired": "BATCH_STATE_EXPIRED",
    "cancelled": "BATCH_STATE_CANCELLED",
}
_STATUS_NAMES = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    409: "ALREADY_EXISTS",
    429: "RESOURCE_EXHAUSTED",
    499: "CANCELLED",
    500: "INTERNAL",
    501: "NOT_IMPLEMENTED",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}
# google.rpc.Code values: Operation.error and per-item errors are google.rpc.Status {code, message, details}.
_RPC_CANCELLED = 1
_RPC_INVALID_ARGUMENT = 3
_RPC_DEADLINE_EXCEEDED = 4
_RPC_RESOURCE_EXHAUSTED = 8
_RPC_INTERNAL = 13
_RPC_UNAVAILABLE = 14
_RPC_PERMISSION_DENIED = 7
_CACHE_DEFAULT_TTL = 3600.0
_CACHE_NOT_FOUND = "CachedContent not found (or permission denied)"
_CACHE_CONFLICT = ("Tool config, tools and system instruction should not be set in the request when using "
                   "cached content.")
# A `[[transient]]` request fails with UNAVAILABLE, or with the retryable code its text names.
_TRANSIENT_CODES = {"RESOURCE_EXHAUSTED": _RPC_RESOURCE_EXHAUSTED, "INTERNAL": _RPC_INTERNAL,
                    "DEADLINE_EXCEEDED": _RPC_DEADLINE_EXCEEDED}
_BAD_REQUEST = "type.googleapis.com/google.rpc.BadRequest"
_UNREGISTERED = (
    "Method doesn't allow unregistered callers (callers without established identity). "
    "Please use API Key or other form of API consumer identity to call this API."
)


# -- auth and errors ------------------------------------------------------------------------------


def _is_upload_chunk(request: Request) -> bool:
    # The upload URL's upload_id is the credential of a resumable session; the key is not re-checked.
    return "/upload/" in request.url.path and "upload_id" in request.query_params


def _check_request(request: Request) -> None:
    if _is_upload_chunk(request):
        return
    key = request.headers.get("x-goog-api-key") or request.query_params.get("key")
    if key is None or not key.strip():
        raise ApiError(403, _UNREGISTERED)
    if key.strip() == "invalid":
        raise ApiError(400, "API key not valid. Please pass a valid API key.", code="API_KEY_INVALID")


def _error_body(error: ApiError, request_id: str) -> dict[str, Any]:
    default = "INTERNAL" if error.status >= 500 else "FAILED_PRECONDITION"
    body: dict[str, Any] = {
        "code": error.status,
        "message": error.message,
        "status": error.type or _STATUS_NAMES.get(error.status, default),
    }
    details: list[dict[str, Any]] = []
    if error.code and error.code.isupper():
        details.append({
            "@type": "type.googleapis.com/google.rpc.ErrorInfo",
            "reason": error.code,
            "domain": "googleapis.com",
            "metadata": {"service": "generativelanguage.googleapis.com"},
        })
    if error.param:
        details.append({"@type": _BAD_REQUEST,
                        "fieldViolations": [{"field": error.param, "description": error.message}]})
    retry_after = error.headers.get("retry-after")
    if error.status == 429 and retry_after:
        details.append({"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": f"{retry_after}s"})
    if details:
        body["details"] = details
    return {"error": body}


def _status(code: int, message: str) -> dict[str, Any]:
    """A google.rpc.Status, the shape of an item's ``error`` (numeric code; empty ``details`` omitted)."""
    return {"code": code, "message": message}


class _Rejected(Exception):
    """A request the model answers with a per-entry error (INVALID_ARGUMENT unless `code` says otherwise)."""

    def __init__(self, message: str, code: int = _RPC_INVALID_ARGUMENT) -> None:
        super().__init__(message)
        self.code = code


# -- strict input: the shipped schema (testing/schemas/google.json) decides --------------------------

_CREATE_SCHEMA = {_GENERATE: "BatchGenerateContentRequest", _EMBED: "AsyncBatchEmbedContentRequest"}
_LINE_SCHEMA = {_GENERATE: "GenerateContentRequestLine", _EMBED: "EmbedContentRequestLine"}
_UNKNOWN = re.compile(
    r"^(?P<path>.*): Additional properties are not allowed \((?P<names>.+) (?:was|were) unexpected\)$")


_INT64 = "^-?[0-9]+$"


def _resolve(schema: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """``schema`` and the schemas it is made of (``$ref``, ``allOf``), referenced ones resolved."""
    defs = conformance.document(NAME)["$defs"]
    out: list[Mapping[str, Any]] = []
    todo = [schema]
    while todo:
        current = todo.pop()
        out.append(current)
        if "$ref" in current:
            todo.append(defs[str(current["$ref"]).rsplit("/", 1)[-1]])
        todo.extend(current.get("allOf", ()))
    return out


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


def _canonical(value: Any, schema: Mapping[str, Any]) -> Any:
    """Proto3 JSON parsers take a field by its original snake_case name as well as its lowerCamel
    ``json_name``: rename the former to the latter where the schema defines the field, leaving free-form
    JSON (``Struct``, ``Value``, a response schema's own property names) as it is."""
    parts = _resolve(schema)
    if isinstance(value, int) and not isinstance(value, bool) and any(p.get("pattern") == _INT64 for p in parts):
        return str(value)  # int64 fields are strings in JSON, but parsers take numbers too
    if isinstance(value, list):
        items = next((p["items"] for p in parts if isinstance(p.get("items"), Mapping)), None)
        return [_canonical(v, items) for v in value] if items is not None else value
    if not isinstance(value, dict):
        return value
    props: dict[str, Any] = {}
    for part in parts:
        props.update(part.get("properties") or {})
    extra = next((p["additionalProperties"] for p in parts if isinstance(p.get("additionalProperties"), Mapping)),
                 None)
    if not props and extra is None:
        return value
    out: dict[str, Any] = {}
    for key, inner in value.items():
        name = key
        if key not in props and _camel(key) in props and _camel(key) not in value:
            name = _camel(key)
        sub = props.get(name, extra)
        out[name] = _canonical(inner, sub) if isinstance(sub, Mapping) else inner
    return out


def _schema_problem(type_name: str, body: Any) -> tuple[str, str] | None:
    """(field path, Google-style message) for the first way ``body`` breaks ``type_name``, else None."""
    problems = conformance.violations(NAME, type_name, body)
    if not problems:
        return None
    first = problems[0]
    unknown = _UNKNOWN.match(first)
    if unknown:
        path = unknown["path"] if unknown["path"] != "(root)" else ""
        names = unknown["names"].split(", ")[0].strip("'")
        message = f'Invalid JSON payload received. Unknown name "{names}" at \'{path}\': Cannot find field.'
        return (f"{path}.{names}" if path else names), message
    path, _, detail = first.partition(": ")
    path = "" if path == "(root)" else path
    return path, f"Invalid value at '{path}': {detail}"


# -- small wire helpers ---------------------------------------------------------------------------


def _get(obj: object, camel: str) -> Any:
    """A field by its lowerCamel or snake_case name (protobuf JSON accepts both)."""
    if not isinstance(obj, Mapping):
        return None
    if camel in obj:
        return obj[camel]
    snake = "".join(f"_{c.lower()}" if c.isupper() else c for c in camel)
    return obj.get(snake)


def _nonzero(values: Mapping[str, int]) -> dict[str, int]:
    """Proto3 JSON: zero-valued numbers are omitted."""
    return {k: v for k, v in values.items() if v}


def _origin(request: Request) -> str:
    return f"{request.url.scheme}://{request.url.netloc}"


def _version(request: Request) -> str:
    version = str(request.path_params.get("version"))
    if version not in VERSIONS:
        raise ApiError(404, f"Unknown request URL: {request.method} {request.url.path}.")
    return version


def _positive_int(value: object, name: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise _Rejected(f"* {name}: must be a positive integer, got {value!r}")
    return value


# -- the echo model dressed as GenerateContentResponse / EmbedContentResponse ---------------------


def _messages(contents: object) -> list[dict[str, Any]]:
    if not isinstance(contents, list) or not contents:
        raise _Rejected("* GenerateContentRequest.contents: contents is not specified")
    messages = []
    for content in contents:
        if not isinstance(content, Mapping):
            raise _Rejected("* GenerateContentRequest.contents: each content must be an object")
        role = content.get("role") or "user"
        if role not in ("user", "model"):
            raise _Rejected(f"* GenerateContentRequest.contents.role: Please use a valid role: user, model. "
                            f"Got {role!r}.")
        messages.append({"role": "assistant" if role == "model" else "user", "content": content.get("parts")})
    return messages


def _classify(part: Mapping[str, Any]) -> str | None:
    blob = _get(part, "inlineData") or _get(part, "fileData")
    if not isinstance(blob, Mapping):
        return None
    return "image" if str(_get(blob, "mimeType") or "").startswith("image/") else "file"


def _forced_function(request: Mapping[str, Any]) -> tuple[str, Mapping[str, Any]] | None:
    """(name, parameters) of the function a request forces (mode ANY), refusing undeclared names."""
    declared: dict[str, Mapping[str, Any]] = {}
    for tool in _get(request, "tools") or []:
        for decl in _get(tool, "functionDeclarations") or []:
            schema = _get(decl, "parametersJsonSchema") or _get(decl, "parameters") or {"type": "object"}
            declared[str(_get(decl, "name"))] = schema
    config = _get(_get(request, "toolConfig") or {}, "functionCallingConfig") or {}
    allowed = _get(config, "allowedFunctionNames") or []
    for name in allowed:
        if name not in declared:
            raise _Rejected(f"* GenerateContentRequest.tool_config.function_calling_config.allowed_function_names: "
                            f"function {name!r} is not declared in tools")
    if _get(config, "mode") != "ANY" or not declared:
        return None
    name = allowed[0] if allowed else next(iter(declared))
    return name, declared[name]


@cache
def _cache_minimums() -> tuple[dict[str, int], int]:
    """Minimum cacheable token count per model, from the dated table the package ships (data/prices.json)."""
    text = resources.files("airflow_batchwork").joinpath("data/prices.json").read_text(encoding="utf-8")
    terms = json.loads(text)["providers"][NAME]["prompt_cache"]
    return dict(terms["min_tokens"]), int(terms["min_tokens_default"])


def _content_words(contents: object) -> int:
    items = contents if isinstance(contents, list) else [contents] if contents else []
    return sum(echo.count_words(echo.content_text(c.get("parts") if isinstance(c, Mapping) else None))
               for c in items)


def _seconds(value: object) -> float | None:
    """A google.protobuf.Duration in JSON (``"3600s"``, ``"1.5s"``) as seconds."""
    if isinstance(value, str) and re.fullmatch(r"-?[0-9]+(\.[0-9]{1,9})?s", value):
        return float(value[:-1])
    return None


@dataclass
class _CachedContent:
    name: str
    model: str
    display_name: str | None
    system: Any
    contents: list[Any]
    tools: Any
    tool_config: Any
    tokens: int
    created_at: float
    expires_at: float


def _generate(request: Mapping[str, Any], model: str, response_id: str, cached: _CachedContent | None = None,
              ) -> tuple[dict[str, Any], int, int]:
    if cached is not None:  # the cache's system instruction and contents come before the item's own
        request = {**request, "contents": [*cached.contents, *(_get(request, "contents") or [])]}
        if cached.system is not None:
            request["systemInstruction"] = cached.system
    messages = _messages(_get(request, "contents"))
    system = _get(request, "systemInstruction")
    if isinstance(system, Mapping):
        system = system.get("parts")
    config = _get(request, "generationConfig") or {}
    max_tokens = _positive_int(_get(config, "maxOutputTokens"), "GenerationConfig.max_output_tokens")
    json_out = _get(config, "responseMimeType") == "application/json"
    schema = _get(config, "responseJsonSchema") or _get(config, "responseSchema") if json_out else None
    reply = echo.generate(messages, system=system, max_tokens=max_tokens, schema=schema,
                          media=echo.count_parts([m["content"] for m in messages], _classify),
                          tool=_forced_function(request))
    parts: list[dict[str, Any]] = [{"text": reply.text}]
    if reply.tool_call is not None:
        parts = [{"functionCall": {"name": reply.tool_call.name, "args": reply.tool_call.arguments}}]
    response = {
        "candidates": [
            {
                "content": {"parts": parts, "role": "model"},
                "finishReason": "MAX_TOKENS" if reply.truncated else "STOP",
                "index": 0,
            }
        ],
        "usageMetadata": _nonzero({
            "promptTokenCount": reply.input_tokens,
            "cachedContentTokenCount": cached.tokens if cached is not None else 0,
            "candidatesTokenCount": reply.output_tokens,
            "totalTokenCount": reply.total_tokens,
        }),
        "modelVersion": model.removeprefix("models/"),
        "responseId": response_id,
    }
    return response, reply.input_tokens, reply.output_tokens


def _embed(request: Mapping[str, Any]) -> tuple[dict[str, Any], int, int]:
    content = _get(request, "content")
    text = echo.content_text(content.get("parts") if isinstance(content, Mapping) else None)
    if not text:
        raise _Rejected("* EmbedContentRequest.content: content is not specified")
    dimensions = _positive_int(
        _get(request, "outputDimensionality"), "EmbedContentRequest.output_dimensionality"
    )
    values = echo.embed(text, dimensions or echo.DEFAULT_EMBEDDING_DIMENSIONS)
    return {"embedding": {"values": values}}, echo.count_words(text), 0


# -- input parsing --------------------------------------------------------------------------------


def _inline_items(requests: object) -> list[tuple[str, Mapping[str, Any]]]:
    entries = _get(requests, "requests")
    if not isinstance(entries, list) or not entries:
        raise ApiError(400, "* BatchGenerateContentRequest.batch.input_config.requests.requests: "
                            "at least one request is required")
    items: list[tuple[str, Mapping[str, Any]]] = []
    for index, entry in enumerate(entries):
        where = f"batch.input_config.requests.requests[{index}]"
        if not isinstance(entry, Mapping) or not isinstance(entry.get("request"), Mapping):
            raise ApiError(400, f"* {where}.request: request is not specified")
        metadata = entry.get("metadata")
        if metadata is not None and not isinstance(metadata, Mapping):
            raise ApiError(400, f"Invalid JSON payload received. {where}.metadata: expected an object.")
        key = (metadata or {}).get("key")
        items.append((str(key) if key is not None else f"#{index}", entry))
    return items


def _file_items(data: bytes) -> tuple[list[tuple[str, Mapping[str, Any]]], list[BatchError]]:
    items: list[tuple[str, Mapping[str, Any]]] = []
    errors: list[BatchError] = []
    for lineno, _, line in jsonl_lines(data.decode("utf-8", errors="replace")):
        if not isinstance(line, dict):
            errors.append(BatchError("invalid_line", f"Line {lineno} of the input file is not a JSON object.",
                                     lineno))
            continue
        key = line.get("key")
        items.append((str(key) if key is not None else f"#{lineno}", line))
    if not items and not errors:
        errors.append(BatchError("empty_file", "The input file contains no requests."))
    return items, errors


# -- routes ---------------------------------------------------------------------------------------


@dataclass
class _Upload:
    display_name: str
    mime_type: str
    declared_size: int | None
    data: bytearray = field(default_factory=bytearray)


class _GeminiRoutes:
    """Handlers for one emulator's Gemini routes over the shared store."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._lock = threading.Lock()
        self._uploads: dict[str, _Upload] = {}
        self._mime_types: dict[str, str] = {}
        self._caches: dict[str, _CachedContent] = {}

    def routes(self) -> list[BaseRoute]:
        # `{id}:verb` routes come before `{id}`: Starlette's `{id}` would also match "x:verb".
        return [
            Route("/{version}/models/{model}:batchGenerateContent", self.create_generate, methods=["POST"]),
            Route("/{version}/models/{model}:asyncBatchEmbedContent", self.create_embed, methods=["POST"]),
            Route("/{version}/batches", self.list_batches, methods=["GET"]),
            Route("/{version}/batches/{batch_id}:cancel", self.cancel_batch, methods=["POST"]),
            Route("/{version}/batches/{batch_id}", self.get_batch, methods=["GET"]),
            Route("/{version}/batches/{batch_id}", self.delete_batch, methods=["DELETE"]),
            Route("/upload/{version}/files", self.upload, methods=["POST"]),
            Route("/download/{version}/files/{file_id}:download", self.download, methods=["GET"]),
            Route("/{version}/files/{file_id}:download", self.download, methods=["GET"]),
            Route("/{version}/files/{file_id}", self.get_file, methods=["GET"]),
            Route("/{version}/cachedContents", self.create_cache, methods=["POST"]),
            Route("/{version}/cachedContents", self.list_caches, methods=["GET"]),
            Route("/{version}/cachedContents/{cache_id}", self.get_cache, methods=["GET"]),
            Route("/{version}/cachedContents/{cache_id}", self.delete_cache, methods=["DELETE"]),
        ]

    # objects

    def _file_object(self, stored: StoredFile, origin: str) -> dict[str, Any]:
        name = f"files/{stored.id}"
        obj: dict[str, Any] = {
            "name": name,
            "displayName": stored.filename,
            "mimeType": self._mime_types.get(stored.id, "application/jsonl"),
            "sizeBytes": str(stored.size),
            "createTime": rfc3339(stored.created_at),
            "updateTime": rfc3339(stored.created_at),
            "expirationTime": rfc3339(stored.created_at + _FILE_TTL),
            "sha256Hash": base64.b64encode(hashlib.sha256(stored.data).hexdigest().encode()).decode(),
            "uri": f"{origin}{PREFIX}/v1beta/{name}",
            "state": "ACTIVE",
            "source": stored.purpose,
        }
        if stored.purpose == "GENERATED":
            obj["downloadUri"] = f"{origin}{PREFIX}/download/v1beta/{name}:download?alt=media"
        return obj

    def _operation(self, view: BatchView) -> dict[str, Any]:
        counts = view.counts
        batch_type = _BATCH_TYPES[view.endpoint]
        updated = max(t for t in (view.created_at, view.in_progress_at, view.cancel_requested_at,
                                  view.ended_at) if t is not None)
        metadata: dict[str, Any] = {"@type": _TYPE + batch_type, "model": view.model}
        if view.extra.get("display_name") is not None:
            metadata["displayName"] = view.extra["display_name"]
        if view.extra.get("file_name"):
            metadata["inputConfig"] = {"fileName": view.extra["file_name"]}
        metadata["createTime"] = rfc3339(view.created_at)
        if view.ended_at is not None:
            metadata["endTime"] = rfc3339(view.ended_at)
        metadata["updateTime"] = rfc3339(updated)
        metadata["batchStats"] = {
            k: str(v)
            for k, v in _nonzero({
                "requestCount": counts.total,
                "successfulRequestCount": counts.succeeded,
                "failedRequestCount": counts.errored,
                "pendingRequestCount": counts.processing + counts.expired + counts.canceled,
            }).items()
        }
        metadata["state"] = _STATE[view.phase]
        metadata["name"] = view.id
        operation: dict[str, Any] = {"name": view.id, "metadata": metadata}
        if not view.terminal:
            return operation
        operation["done"] = True
        if view.phase in ("ended", "cancelled"):
            output = self._output(view)
            metadata["output"] = output
            operation["response"] = {"@type": _TYPE + batch_type + "Output", **output}
        elif view.phase == "expired":
            operation["error"] = {
                "code": _RPC_DEADLINE_EXCEEDED,
                "message": "The batch was pending or running for more than 48 hours and expired; "
                           "expired batches have no results.",
            }
        else:
            operation["error"] = {
                "code": _RPC_INVALID_ARGUMENT,
                "message": "; ".join(e.message for e in view.errors) or "The batch failed.",
            }
        return operation

    def _output(self, view: BatchView) -> dict[str, Any]:
        if view.extra.get("responses_file"):
            return {"responsesFile": view.extra["responses_file"]}
        lines = [r.line for r in view.results or () if r.outcome in ("succeeded", "errored")]
        lines = self.store.faults.result_entries(NAME, lines, id_keys=("metadata",))
        return {"inlinedResponses": {"inlinedResponses": lines} if lines else {}}

    def _batch(self, batch_id: str) -> BatchView:
        return find_batch(self.store, NAME, f"batches/{batch_id}",
                          ApiError(404, f"Batch batches/{batch_id} not found."))

    # batches

    async def create_generate(self, request: Request) -> Response:
        return await self._create(request, _GENERATE)

    async def create_embed(self, request: Request) -> Response:
        return await self._create(request, _EMBED)

    async def _create(self, request: Request, method: str) -> Response:
        _version(request)
        raw = await request.body()
        if len(raw) > MAX_INLINE_BYTES:
            raise ApiError(400, f"Request payload size exceeds the limit: {MAX_INLINE_BYTES} bytes.")
        try:
            body = json.loads(raw or b"{}")
        except ValueError as exc:
            raise ApiError(400, f"Invalid JSON payload received. {exc}") from exc
        batch = body.get("batch") if isinstance(body, dict) else None
        if not isinstance(batch, Mapping):
            raise ApiError(400, "* BatchGenerateContentRequest.batch: batch is not specified")
        type_name = _CREATE_SCHEMA[method]
        received = body
        body = _canonical(body, {"$ref": f"#/$defs/{type_name}"})
        batch = body["batch"]
        problem = _schema_problem(type_name, body)
        if problem is not None:
            raise ApiError(400, problem[1], param=problem[0] or None)
        config = _get(batch, "inputConfig")
        file_name = _get(config, "fileName")
        requests = _get(config, "requests")
        if (file_name is None) == (requests is None):
            raise ApiError(400, "* batch.input_config: exactly one of file_name or requests must be set")
        errors: list[BatchError] = []
        if requests is not None:
            items = _inline_items(requests)
        else:
            stored = self._live_file(str(file_name).removeprefix("files/"))
            if stored is None or stored.purpose != "UPLOADED":
                raise ApiError(
                    400, f"* batch.input_config.file_name: File {file_name} not found or not readable."
                )
            items, errors = _file_items(stored.data)
        model = f"models/{request.path_params['model']}"
        inline = requests is not None
        view = self.store.create_batch(
            NAME,
            endpoint=method,
            items=items,
            model=model,
            errors=errors,
            render=lambda item, outcome: self._render(method, model, inline, item, outcome),
            on_end=None if inline else self._write_responses_file,
            # `create_body` (the parsed body as received) lets tests judge what a client sent.
            extra={"display_name": _get(batch, "displayName"), "file_name": file_name, "create_body": received},
            id_prefix="batches/",
        )
        return JSONResponse(self._operation(view))

    async def get_batch(self, request: Request) -> Response:
        _version(request)
        return JSONResponse(self._operation(self._batch(request.path_params["batch_id"])))

    async def cancel_batch(self, request: Request) -> Response:
        _version(request)
        view = self._batch(request.path_params["batch_id"])
        if view.terminal and view.phase != "cancelled":
            raise ApiError(400, f"Batch {view.id} is already in a terminal state ({_STATE[view.phase]}).",
                           type="FAILED_PRECONDITION")
        self.store.cancel_batch(NAME, view.id)
        return JSONResponse({})

    async def delete_batch(self, request: Request) -> Response:
        _version(request)
        view = self._batch(request.path_params["batch_id"])
        self.store.delete_batch(NAME, view.id)
        return JSONResponse({})

    async def list_batches(self, request: Request) -> Response:
        _version(request)
        limit = query_int(request, "pageSize", default=50, low=1, high=1000)
        newest_first = list(reversed(self.store.batches(NAME)))
        after = None
        token = request.query_params.get("pageToken")
        if token:
            try:
                after = base64.urlsafe_b64decode(token.encode()).decode()
            except (ValueError, UnicodeDecodeError):
                after = None
            if after not in {b.id for b in newest_first}:
                raise ApiError(400, "Invalid page token.")
        page, has_more = paginate(newest_first, lambda b: b.id, limit=limit, after=after)
        body: dict[str, Any] = {"operations": [self._operation(b) for b in page]}
        if has_more:
            body["nextPageToken"] = base64.urlsafe_b64encode(page[-1].id.encode()).decode()
        return JSONResponse(body)

    # cached contents (explicit context caching)

    def _cache_object(self, cached: _CachedContent) -> dict[str, Any]:
        obj: dict[str, Any] = {"name": cached.name, "model": cached.model}
        if cached.display_name is not None:
            obj["displayName"] = cached.display_name
        obj.update(createTime=rfc3339(cached.created_at), updateTime=rfc3339(cached.created_at),
                   expireTime=rfc3339(cached.expires_at), usageMetadata=_nonzero({"totalTokenCount": cached.tokens}))
        return obj

    def _live_cache(self, name: str) -> _CachedContent | None:
        with self._lock:
            cached = self._caches.get(name)
            if cached is not None and cached.expires_at <= self.store.now():
                del self._caches[name]  # expired caches are deleted by the service
                cached = None
        return cached

    def _cache(self, cache_id: str) -> _CachedContent:
        cached = self._live_cache(f"cachedContents/{cache_id}")
        if cached is None:
            raise ApiError(403, _CACHE_NOT_FOUND)
        return cached

    async def create_cache(self, request: Request) -> Response:
        _version(request)
        raw = await request.body()
        try:
            body = json.loads(raw or b"{}")
        except ValueError as exc:
            raise ApiError(400, f"Invalid JSON payload received. {exc}") from exc
        if not isinstance(body, dict):
            raise ApiError(400, "Invalid JSON payload received. Expected an object.")
        body = _canonical(body, {"$ref": "#/$defs/CachedContent"})
        problem = _schema_problem("CachedContent", body)
        if problem is not None:
            raise ApiError(400, problem[1], param=problem[0] or None)
        model = str(_get(body, "model"))
        if not re.fullmatch(r"models/[A-Za-z0-9._-]+", model):
            raise ApiError(400, f"* CachedContent.model: invalid model name {model!r}; use models/{{model}}")
        system = _get(body, "systemInstruction")
        contents = _get(body, "contents") or []
        tokens = _content_words(system) + _content_words(contents)
        minimums, default = _cache_minimums()
        minimum = minimums.get(model.removeprefix("models/"), default)
        if tokens < minimum:
            raise ApiError(400, f"Cached content is too small. total_token_count={tokens}, "
                                f"min_total_token_count={minimum}")
        now = self.store.now()
        ttl = _seconds(_get(body, "ttl"))
        expire = _get(body, "expireTime")
        if expire is not None:
            expires_at = datetime.fromisoformat(str(expire).replace("Z", "+00:00")).timestamp()
        else:
            expires_at = now + (ttl if ttl is not None else _CACHE_DEFAULT_TTL)
        if expires_at <= now:
            raise ApiError(400, "* CachedContent.expiration: the expiration time must be in the future")
        name = f"cachedContents/{secrets.token_hex(8)}"
        display = _get(body, "displayName")
        cached = _CachedContent(name=name, model=model, display_name=None if display is None else str(display),
                                system=system, contents=list(contents), tools=_get(body, "tools"),
                                tool_config=_get(body, "toolConfig"), tokens=tokens, created_at=now,
                                expires_at=expires_at)
        with self._lock:
            self._caches[name] = cached
        return JSONResponse(self._cache_object(cached))

    async def get_cache(self, request: Request) -> Response:
        _version(request)
        return JSONResponse(self._cache_object(self._cache(request.path_params["cache_id"])))

    async def delete_cache(self, request: Request) -> Response:
        _version(request)
        cached = self._cache(request.path_params["cache_id"])
        with self._lock:
            self._caches.pop(cached.name, None)
        return JSONResponse({})

    async def list_caches(self, request: Request) -> Response:
        _version(request)
        limit = query_int(request, "pageSize", default=50, low=1, high=1000)
        with self._lock:
            names = list(self._caches)
        live = [c for c in (self._live_cache(n) for n in names) if c is not None]
        token = request.query_params.get("pageToken")
        after = None
        if token:
            after = base64.urlsafe_b64decode(token.encode()).decode(errors="replace")
            if after not in {c.name for c in live}:
                raise ApiError(400, "Invalid page token.")
        page, has_more = paginate(live, lambda c: c.name, limit=limit, after=after)
        body: dict[str, Any] = {}
        if page:
            body["cachedContents"] = [self._cache_object(c) for c in page]
        if has_more:
            body["nextPageToken"] = base64.urlsafe_b64encode(page[-1].name.encode()).decode()
        return JSONResponse(body)

    def _referenced_cache(self, request: Mapping[str, Any], model: str) -> _CachedContent | None:
        """The live cache a generate request names in `cachedContent` (None: it names none)."""
        name = _get(request, "cachedContent")
        if name is None:
            return None
        if any(_get(request, f) is not None for f in ("systemInstruction", "tools", "toolConfig")):
            raise _Rejected(_CACHE_CONFLICT)
        cached = self._live_cache(str(name))
        if cached is None:
            raise _Rejected(_CACHE_NOT_FOUND, _RPC_PERMISSION_DENIED)
        if cached.model != model:
            raise _Rejected(f"Model used by GenerateContent request ({model}) and CachedContent ({cached.model}) "
                            "has to be the same.")
        return cached

    # files

    async def upload(self, request: Request) -> Response:
        version = _version(request)
        upload_id = request.query_params.get("upload_id")
        command = request.headers.get("x-goog-upload-command", "").lower()
        if upload_id is None:
            return await self._start_upload(request, version, command)
        final = {"x-goog-upload-status": "final"}
        with self._lock:
            pending = self._uploads.get(upload_id)
        if pending is None:
            raise ApiError(
                404, "The upload session was not found or has already been finalized.", headers=final
            )
        offset = request.headers.get("x-goog-upload-offset")
        if offset is None or not offset.isdigit() or int(offset) != len(pending.data):
            raise ApiError(
                400,
                f"Invalid X-Goog-Upload-Offset {offset!r}: the server holds {len(pending.data)} bytes.",
                headers=final,
            )
        pending.data += await request.body()
        if "finalize" not in command:
            return Response(b"", headers={"x-goog-upload-status": "active"})
        with self._lock:
            self._uploads.pop(upload_id, None)
        if pending.declared_size is not None and pending.declared_size != len(pending.data):
            raise ApiError(400, f"The upload has {len(pending.data)} bytes but {pending.declared_size} were "
                                "declared in X-Goog-Upload-Header-Content-Length.", headers=final)
        stored = self.store.add_file(NAME, bytes(pending.data), pending.display_name, "UPLOADED")
        self._mime_types[stored.id] = pending.mime_type
        return JSONResponse({"file": self._file_object(stored, _origin(request))}, headers=final)

    async def _start_upload(self, request: Request, version: str, command: str) -> Response:
        if request.headers.get("x-goog-upload-protocol", "").lower() != "resumable" or command != "start":
            raise ApiError(400, "Only the resumable upload protocol is emulated: send "
                                "X-Goog-Upload-Protocol: resumable and X-Goog-Upload-Command: start.")
        raw = await request.body()
        try:
            body = json.loads(raw) if raw.strip() else {}
        except ValueError as exc:
            raise ApiError(400, f"Invalid JSON payload received. {exc}") from exc
        if isinstance(body, dict):
            body = _canonical(body, {"$ref": "#/$defs/CreateFileRequest"})
        problem = _schema_problem("CreateFileRequest", body)
        if problem is not None:
            raise ApiError(400, problem[1], param=problem[0] or None)
        meta = _get(body, "file") or {}
        size = request.headers.get("x-goog-upload-header-content-length")
        mime = request.headers.get("x-goog-upload-header-content-type") or _get(meta, "mimeType")
        upload = _Upload(
            display_name=str(_get(meta, "displayName") or "upload"),
            mime_type=str(mime or "application/octet-stream"),
            declared_size=int(size) if size and size.isdigit() else None,
        )
        upload_id = secrets.token_urlsafe(24)
        with self._lock:
            self._uploads[upload_id] = upload
        query = f"upload_id={upload_id}&upload_protocol=resumable"
        url = f"{_origin(request)}{PREFIX}/upload/{version}/files?{query}"
        return Response(b"", headers={
            "x-goog-upload-url": url,
            "x-goog-upload-status": "active",
            "x-goog-upload-chunk-granularity": str(_UPLOAD_GRANULARITY),
            "x-goog-upload-control-url": url,
        })

    def _live_file(self, file_id: str) -> StoredFile | None:
        """The file, or None once it is gone: the Files API deletes an upload 48 hours after it was made."""
        stored = self.store.get_file(NAME, file_id)
        if stored is not None and stored.purpose == "UPLOADED" and stored.created_at + _FILE_TTL <= self.store.now():
            return None
        return stored

    def _file(self, file_id: str) -> StoredFile:
        stored = self._live_file(file_id)
        if stored is None:
            raise ApiError(
                403, f"You do not have permission to access the File {file_id} or it may not exist."
            )
        return stored

    async def get_file(self, request: Request) -> Response:
        _version(request)
        return JSONResponse(self._file_object(self._file(request.path_params["file_id"]), _origin(request)))

    async def download(self, request: Request) -> Response:
        _version(request)
        stored = self._file(request.path_params["file_id"])
        if request.query_params.get("alt") != "media":
            return JSONResponse(self._file_object(stored, _origin(request)))
        if stored.purpose != "GENERATED":
            raise ApiError(400, "Only generated files can be downloaded; uploaded files cannot.")
        data = self.store.faults.result_file(NAME, stored, id_key="key")
        return Response(data, media_type=self._mime_types.get(stored.id, "application/jsonl"))

    # results

    def _render(self, method: str, model: str, inline: bool, item: Item, outcome: Outcome) -> ItemResult:
        entry = item.body
        request = entry.get("request")
        line: dict[str, Any] = {} if inline or "key" not in entry else {"key": entry["key"]}
        input_tokens = output_tokens = 0
        if outcome == "succeeded":
            try:
                if not inline:
                    # A file line is checked on its own: a bad line fails that request, not the batch.
                    type_name = _LINE_SCHEMA[method]
                    problem = _schema_problem(type_name, _canonical(entry, {"$ref": f"#/$defs/{type_name}"}))
                    if problem is not None:
                        raise _Rejected(problem[1])
                if not isinstance(request, Mapping):
                    raise _Rejected("request: a request object is required")
                new_id = self.store.new_id
                if method == _EMBED:
                    reply = _embed(request)
                else:
                    reply = _generate(request, model, new_id("resp-"), self._referenced_cache(request, model))
                line["response"], input_tokens, output_tokens = reply
            except _Rejected as exc:
                outcome = "errored"
                line["error"] = _status(exc.code, str(exc))
        elif outcome == "errored" and item.marker == "transient":
            text = json.dumps(request)
            code = next((c for name, c in _TRANSIENT_CODES.items() if name in text), _RPC_UNAVAILABLE)
            line["error"] = _status(code, echo.TRANSIENT_MESSAGE)
        elif outcome == "errored":
            line["error"] = _status(_RPC_INVALID_ARGUMENT, echo.ERROR_MESSAGE)
        else:
            # Never shown: expired batches have no output and a cancel drops unfinished requests.
            line["error"] = _status(_RPC_CANCELLED, f"The request was {outcome}.")
        if inline and entry.get("metadata") is not None:
            line["metadata"] = entry["metadata"]
        return ItemResult(item.custom_id, outcome, line, input_tokens, output_tokens)

    def _write_responses_file(self, view: BatchView) -> Mapping[str, Any]:
        if view.phase not in ("ended", "cancelled"):
            return {}
        lines: Sequence[Mapping[str, Any]] = [
            r.line for r in view.results or () if r.outcome in ("succeeded", "errored")
        ]
        stored = self.store.add_file(NAME, jsonl(lines), f"{view.id}-responses.jsonl", "GENERATED")
        self._mime_types[stored.id] = "application/jsonl"
        return {"responses_file": f"files/{stored.id}"}


SPEC = ProviderSpec(
    name=NAME,
    prefix=PREFIX,
    routes=lambda store: _GeminiRoutes(store).routes(),
    check_request=_check_request,
    error_body=_error_body,
    request_id_header="x-request-id",
    request_id_prefix="req_",
    aliases=("gemini",),
    # Google's media downloads (`alt=media`) honour `Range` (Google API media-download docs); metadata does not.
    byte_ranges=lambda scope: scope["method"] == "GET" and scope["path"].endswith(":download")
    and b"alt=media" in scope.get("query_string", b""),
)
