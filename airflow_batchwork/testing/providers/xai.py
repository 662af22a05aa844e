"""xAI Batch API (REST), served under ``/xai/v1`` (reference §8).

Wire behaviour worth knowing:

- A batch is created by name (``POST /batches``) and filled by ``POST /batches/{id}/requests`` calls;
  each call becomes one group of items in the store (namespace ``xai.requests``) with its own
  processing window. A batch created with ``input_file_id`` is one store batch, sealed: adding
  requests to it is a 400. Invalid file lines cancel the batch "by xAI" with a message.
- There is no status enum: the Batch object carries ``state`` counters, ``cancel_time`` and
  ``expire_time``. A group's items count as pending until the group ends (partial results while a
  batch runs are not emulated). An ``[[expire]]`` item stays pending and has no result; the batch's
  ``expire_time`` is a grace period (``processing_seconds``, at least 1 s) after the end of its last group's
  processing window, so a request finishing at the window's end is never seen as expired.
- Results list only finished requests: success ``batch_result.response.<op>``, failure
  ``batch_result.error`` (a string, the REST reference's form). Cancelled or expired requests appear
  only in ``GET /batches/{id}/requests`` (state ``cancelled`` / ``pending``).
- Errors are ``{"code": <gRPC status text>, "error": <message>}``. No key: 401; the key ``invalid``:
  400 (xAI answers an incorrect key with 400); a POST body without ``Content-Type: application/json``,
  or an empty one where a body is required: 415. Times are RFC 3339.
"""

from __future__ import annotations

import base64
import binascii
import json
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

import airflow_batchwork.testing.conformance as conformance
import airflow_batchwork.testing.echo as echo
import airflow_batchwork.testing.providers.chat_tools as chat_tools
from airflow_batchwork.testing.providers.base import (
    ApiError,
    ProviderSpec,
    Rejected,
    bearer_key,
    find_batch,
    paginate,
    positive_int,
    query_int,
    read_json,
    response_format_schema,
    rfc3339,
    text_format_schema,
)
from airflow_batchwork.testing.providers.files import FileRoutes, FileWire, jsonl_lines, short_file_object
from airflow_batchwork.testing.store import BatchError, BatchView, Item, ItemResult, Outcome, Store

__all__ = ["SPEC"]

NAME = "xai"
PREFIX = "/xai/v1"
_GROUPS = "xai.requests"  # store namespace of the item groups added by add-requests calls

# Operation key of an inline entry / result -> the REST endpoint of its body, and back for file lines.
_OPS = {"chat_get_completion": "/v1/chat/completions", "responses": "/v1/responses"}
_URL_OPS = {url: op for op, url in _OPS.items()}
# Accepted by the real API but not emulated: a clear 400 beats a silently wrong result.
_UNEMULATED_OPS = ("image_generation", "image_edit", "video_generation", "video_extension")
_UNEMULATED_URLS = (
    "/v1/images/generations", "/v1/images/edits", "/v1/videos/generations", "/v1/videos",
    "/v1/videos/edits", "/v1/videos/extensions",
)
# The gRPC method that serves batched completions (the REST reference's metadata example).
_GRPC_ENDPOINT = "xai_api.Chat/GetCompletion"
_MB = 1024 * 1024
MAX_REQUEST_BYTES = 25 * _MB
MAX_FILE_BYTES = 200 * _MB
MAX_FILE_REQUESTS = 50_000
# At least this long between the end of a batch's processing window and its `expire_time`.
EXPIRY_GRACE_SECONDS = 1.0
# Deterministic cost: 1 tick = 1e-10 USD (xAI batch guide).
_TICKS_PER_INPUT_TOKEN = 2_000
_TICKS_PER_OUTPUT_TOKEN = 5_000

# `code` is the gRPC status description xAI puts next to the message.
_CODES = {
    400: "Client specified an invalid argument",
    401: "The request does not have valid authentication credentials",
    403: "The caller does not have permission to execute the specified operation",
    404: "Some requested entity was not found",
    405: "Operation is not implemented or not supported",
    415: "Client specified an invalid argument",
    422: "Client specified an invalid argument",
    429: "Some resource has been exhausted",
    500: "Internal error",
    503: "The service is currently unavailable",
}
# Per-request state of each store outcome; an expired request never ran, so it stays pending.
_STATE_OF_OUTCOME = {
    "succeeded": "succeeded", "errored": "failed", "canceled": "cancelled", "expired": "pending",
}


# -- auth and errors ------------------------------------------------------------------------------


def _check_request(request: Request) -> None:
    key = bearer_key(request)
    if not key:
        raise ApiError(401, "No credentials presented. Send an `Authorization: Bearer <XAI_API_KEY>` header.")
    if key == "invalid":
        raise ApiError(
            400, f"Incorrect API key provided: {key[:2]}***{key[-2:]}. "
            "You can obtain an API key from https://console.x.ai.",
        )


def _error_body(error: ApiError, request_id: str) -> dict[str, Any]:
    default = "Internal error" if error.status >= 500 else "Client specified an invalid argument"
    return {"code": error.type or _CODES.get(error.status, default), "error": error.message}


async def _json_body(request: Request) -> dict[str, Any]:
    """The JSON object body of a POST; 415 without a JSON content type or with an empty body."""
    raw = await request.body()
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if not raw:
        raise ApiError(415, "The request body is empty; send a JSON body (`Content-Type: application/json`).")
    if media_type != "application/json":
        raise ApiError(415, "Expected request with `Content-Type: application/json`.")
    return await read_json(request)


def _token(key: str) -> str:
    return base64.urlsafe_b64encode(key.encode()).decode().rstrip("=")


def _after(request: Request) -> str | None:
    token = request.query_params.get("pagination_token")
    if not token:
        return None
    try:
        return base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError):
        raise ApiError(400, f"Invalid pagination_token {token!r}.") from None


# -- schema checks (schemas/xai.json; the OpenAI-shaped bodies against schemas/openai.json) ----------

# Operation key -> the OpenAI type its body must be (xAI serves OpenAI-compatible bodies there).
_OPENAI_BODY_TYPES = {"chat_get_completion": "CreateChatCompletionRequest", "responses": "CreateResponse"}


def _problems(provider: str, name: str, instance: object, where: str) -> list[str]:
    return [f"{where}.{p}" if not p.startswith("(root)") else f"{where}{p[6:]}"
            for p in conformance.violations(provider, name, instance)]


def _body_problems(op: str, body: object, where: str) -> list[str]:
    """What OpenAI's type refuses in an operation body (the other operations are not emulated)."""
    name = _OPENAI_BODY_TYPES.get(op)
    return _problems("openai", name, body, where) if name else []


def _refuse(problems: list[str]) -> None:
    """A body the REST gateway cannot deserialize: 422, as xAI answers "an invalid format for a field"."""
    if problems:
        shown = "; ".join(problems[:5]) + (f"; and {len(problems) - 5} more" if len(problems) > 5 else "")
        raise ApiError(422, f"Failed to deserialize the JSON body into the target type: {shown}")


# -- endpoint bodies (the echo model dressed as each endpoint's response) ------------------------


def _max_tokens(body: Mapping[str, Any], *names: str) -> int | None:
    return positive_int(body, *names, refuse=lambda name, value: f"{name}: expected an integer >= 1, got {value!r}")


def _cost(input_tokens: int, output_tokens: int) -> int:
    return input_tokens * _TICKS_PER_INPUT_TOKEN + output_tokens * _TICKS_PER_OUTPUT_TOKEN


def _chat_completion(body: Mapping[str, Any], now: int) -> tuple[dict[str, Any], int, int]:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages or not all(isinstance(m, dict) for m in messages):
        raise Rejected("messages: expected a non-empty array of message objects")
    try:
        reply = chat_tools.reply(body, messages, _max_tokens(body, "max_completion_tokens", "max_tokens"),
                                 response_format_schema(body))
    except chat_tools.ToolChoiceError as exc:
        raise Rejected(str(exc)) from None
    message: dict[str, Any] = {"role": "assistant", "content": reply.text, "refusal": None}
    if reply.tool_call is not None:
        message = {"role": "assistant", "content": None, "refusal": None,
                   "tool_calls": chat_tools.tool_calls(reply.tool_call, lambda p: f"{p}{uuid.uuid4().hex[:24]}")}
    response = {
        "id": f"{uuid.uuid4()}_us-east-1",
        "object": "chat.completion",
        "created": now,
        "model": body["model"],
        "choices": [
            {
                "index": 0,
                "message": message,
                "finish_reason": chat_tools.finish_reason(reply),
            }
        ],
        "usage": chat_tools.usage(
            reply,
            prompt_tokens_details={
                "text_tokens": reply.input_tokens, "audio_tokens": 0, "image_tokens": 0, "cached_tokens": 0,
            },
            completion_tokens_details={
                "reasoning_tokens": 0, "audio_tokens": 0,
                "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0,
            },
            num_sources_used=0,
            cost_in_usd_ticks=_cost(reply.input_tokens, reply.output_tokens),
        ),
        "system_fingerprint": "fp_batchwork_emulator",
    }
    return response, reply.input_tokens, reply.output_tokens


def _response(body: Mapping[str, Any], now: int) -> tuple[dict[str, Any], int, int]:
    given = body.get("input")
    if isinstance(given, str):
        messages: list[Mapping[str, Any]] = [{"role": "user", "content": given}]
    elif isinstance(given, list) and given:
        messages = [m for m in given if isinstance(m, dict) and "role" in m]
    else:
        raise Rejected("input: expected a string or a non-empty array of input items")
    max_output_tokens = _max_tokens(body, "max_output_tokens")
    try:
        chat_tools.check_tool_results(given if isinstance(given, list) else [])
        forced = chat_tools.forced_tool(body)
    except chat_tools.ToolChoiceError as exc:
        raise Rejected(str(exc)) from None
    reply = echo.generate(messages, system=body.get("instructions"), max_tokens=max_output_tokens,
                          schema=text_format_schema(body), media=chat_tools.media(messages), tool=forced)
    status = "incomplete" if reply.truncated else "completed"
    response = {
        "id": str(uuid.uuid4()),
        "object": "response",
        "created_at": now,
        "model": body["model"],
        "status": status,
        "incomplete_details": {"reason": "max_output_tokens"} if reply.truncated else None,
        "output": [
            {
                "type": "message",
                "id": f"msg_{uuid.uuid4().hex}",
                "role": "assistant",
                "status": status,
                "content": [{"type": "output_text", "text": reply.text, "annotations": [], "logprobs": []}],
            }
        ] if reply.tool_call is None else [
            {"type": "function_call", "id": f"fc_{uuid.uuid4().hex}", "call_id": f"call_{uuid.uuid4().hex[:24]}",
             "name": reply.tool_call.name, "arguments": reply.tool_call.arguments_json, "status": "completed"}
        ],
        "max_output_tokens": max_output_tokens,
        "temperature": body.get("temperature"),
        "top_p": body.get("top_p"),
        "store": bool(body.get("store", True)),
        "usage": {
            "input_tokens": reply.input_tokens,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": reply.output_tokens,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": reply.total_tokens,
            "num_sources_used": 0,
            "cost_in_usd_ticks": _cost(reply.input_tokens, reply.output_tokens),
        },
    }
    return response, reply.input_tokens, reply.output_tokens


_RENDERERS: dict[str, Callable[[Mapping[str, Any], int], tuple[dict[str, Any], int, int]]] = {
    "chat_get_completion": _chat_completion,
    "responses": _response,
}


# -- input validation -----------------------------------------------------------------------------


def _operation(where: str, request: object) -> tuple[str, dict[str, Any]]:
    """The single (op, body) of a `batch_request`; ApiError if it is not one we serve."""
    if not isinstance(request, dict):
        raise ApiError(422, f"{where}: expected an object with one operation key")
    if len(request) != 1:
        raise ApiError(400, f"{where}: exactly one operation is required, got {sorted(request)}")
    op, body = next(iter(request.items()))
    if op in _UNEMULATED_OPS:
        raise ApiError(400, f"{where}.{op}: valid on xAI but not emulated; emulated: {', '.join(_OPS)}")
    if op not in _OPS:
        raise ApiError(400, f"{where}: unknown operation {op!r}; expected one of {', '.join(_OPS)}")
    if not isinstance(body, dict):
        raise ApiError(422, f"{where}.{op}: expected an object")
    if not isinstance(body.get("model"), str) or not body["model"]:
        raise ApiError(400, f"{where}.{op}.model: a model name is required")
    return op, body


def _parse_file(data: bytes) -> tuple[list[tuple[str, Mapping[str, Any]]], list[BatchError]]:
    """Items `(custom_id, {op: body})` of a JSONL batch file, and its problems (any cancels the batch)."""
    items: list[tuple[str, Mapping[str, Any]]] = []
    errors: list[BatchError] = []
    seen: set[str] = set()
    for lineno, _, line in jsonl_lines(data.decode("utf-8", errors="replace")):
        if not isinstance(line, dict):
            errors.append(BatchError("invalid_json_line", "the line is not a JSON object", lineno))
            continue
        custom_id, url, body = line.get("custom_id"), line.get("url"), line.get("body")
        if not isinstance(custom_id, str) or not custom_id:
            errors.append(BatchError("invalid_line", "custom_id is required", lineno))
            continue
        problem = None
        if custom_id in seen:
            problem = f"custom_id {custom_id!r} is not unique"
        elif line.get("method") != "POST":
            problem = "method must be POST"
        elif url in _UNEMULATED_URLS:
            problem = f"url {url!r} is valid on xAI but not emulated"
        elif not isinstance(url, str) or url not in _URL_OPS:
            problem = f"unsupported url {url!r}"
        elif not isinstance(body, dict) or not isinstance(body.get("model"), str) or not body["model"]:
            problem = "body must be an object with a model"
        if not problem and isinstance(url, str):
            found = _problems(NAME, "BatchFileLine", line, "line") + _body_problems(_URL_OPS[url], body, "body")
            problem = "; ".join(found[:3]) or None
        if problem or not isinstance(url, str):
            errors.append(BatchError("invalid_line", problem or "url is required", lineno))
            continue
        seen.add(custom_id)
        items.append((custom_id, {_URL_OPS[url]: body}))
    if not items and not errors:
        errors.append(BatchError("empty_file", "the input file has no requests"))
    if len(items) > MAX_FILE_REQUESTS:
        errors.append(BatchError("too_many_requests", f"{len(items)} requests; at most {MAX_FILE_REQUESTS}"))
    return items, errors


_FILES = FileWire(
    provider=NAME,
    file_object=short_file_object,
    not_found=lambda file_id: ApiError(404, f"File {file_id} not found."),
    missing_file=lambda: ApiError(400, "file: a multipart field `file` is required"),
    purpose=lambda form: purpose if isinstance(purpose := form.get("purpose"), str) else "batch",
)


# -- the Batch object -----------------------------------------------------------------------------


@dataclass(frozen=True)
class _Summary:
    """What xAI reports about a batch, aggregated over its item groups."""

    num_requests: int
    num_pending: int
    num_success: int
    num_error: int
    num_cancelled: int
    cancel_time: float | None
    expire_time: float
    cancel_by_xai_message: str | None


def _is_file_batch(view: BatchView) -> bool:
    return "input_file_id" in view.extra


def _expiry_grace(view: BatchView) -> float:
    """Seconds between the end of processing and `expire_time` (xAI: processing ends well before expiry)."""
    return max(view.processing_seconds, EXPIRY_GRACE_SECONDS)


def _summarize(view: BatchView, groups: Sequence[BatchView]) -> _Summary:
    counts = {"requests": 0, "pending": 0, "succeeded": 0, "failed": 0, "cancelled": 0}
    requested = (view.cancel_requested_at, *(g.cancel_requested_at for g in groups))
    cancel_times = [t for t in requested if t is not None]
    message = None
    for group in groups:
        if group.phase == "failed":
            message = "Invalid input file: " + "; ".join(
                f"line {e.line}: {e.message}" if e.line else e.message for e in group.errors
            )
            cancel_times.append(group.ended_at or group.created_at)
            continue
        if _is_file_batch(group) and group.phase == "validating":
            continue  # the file is still being read: its requests are not counted yet
        counts["requests"] += group.request_count
        if group.terminal:
            for result in group.results or ():
                counts[_STATE_OF_OUTCOME[result.outcome]] += 1
        else:
            counts["pending"] += group.request_count
    # A batch expires a grace period after its last group's window ends, never at that same instant: a
    # client reading "1 pending" just before the window's end must not find expire_time already past.
    expire = max((g.created_at + g.processing_seconds for g in groups),
                 default=view.created_at + view.processing_seconds) + _expiry_grace(view)
    return _Summary(
        num_requests=counts["requests"], num_pending=counts["pending"], num_success=counts["succeeded"],
        num_error=counts["failed"], num_cancelled=counts["cancelled"],
        cancel_time=min(cancel_times) if cancel_times else None, expire_time=expire,
        cancel_by_xai_message=message,
    )


def _batch_object(view: BatchView, summary: _Summary) -> dict[str, Any]:
    return {
        "batch_id": view.id,
        "name": view.metadata["name"],
        "create_time": rfc3339(view.created_at),
        "expire_time": rfc3339(summary.expire_time),
        "create_api_key_id": view.metadata["create_api_key_id"],
        "cancel_time": rfc3339(summary.cancel_time),
        "cancel_by_xai_message": summary.cancel_by_xai_message,
        "state": {
            "num_requests": summary.num_requests,
            "num_pending": summary.num_pending,
            "num_success": summary.num_success,
            "num_error": summary.num_error,
            "num_cancelled": summary.num_cancelled,
        },
    }


# -- routes ---------------------------------------------------------------------------------------


class _XaiRoutes:
    """Handlers for one emulator's xAI routes over the shared store."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.files = FileRoutes(store, _FILES)

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/files", self.files.create_file, methods=["POST"]),  # xAI serves uploads only
            Route("/batches", self.create_batch, methods=["POST"]),
            Route("/batches", self.list_batches, methods=["GET"]),
            Route("/batches/{batch_id}:cancel", self.cancel_batch, methods=["POST"]),
            Route("/batches/{batch_id}", self.retrieve_batch, methods=["GET"]),
            Route("/batches/{batch_id}/requests", self.add_requests, methods=["POST"]),
            Route("/batches/{batch_id}/requests", self.list_requests, methods=["GET"]),
            Route("/batches/{batch_id}/results", self.results, methods=["GET"]),
        ]

    # state

    def _batch(self, batch_id: str) -> BatchView:
        return find_batch(self.store, NAME, batch_id, ApiError(404, f"Batch {batch_id} not found."))

    def _groups(self, view: BatchView) -> list[BatchView]:
        if _is_file_batch(view):
            return [view]
        return [g for g in self.store.batches(_GROUPS) if g.metadata.get("batch_id") == view.id]

    def _object(self, view: BatchView) -> dict[str, Any]:
        return _batch_object(view, _summarize(view, self._groups(view)))

    # batches

    async def create_batch(self, request: Request) -> Response:
        body = await _json_body(request)
        name = body.get("name")
        if not isinstance(name, str):
            raise ApiError(422 if "name" in body else 400, "name: a string is required")
        _refuse(_problems(NAME, "CreateBatchRequest", body, "body"))
        key = bearer_key(request)
        metadata = {"name": name, "create_api_key_id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"xai-key:{key}"))}
        file_id = body.get("input_file_id")
        if file_id in (None, ""):
            view = self.store.create_batch(NAME, endpoint="/v1/batches", items=(), render=self._render,
                                           metadata=metadata)
            return JSONResponse(self._object(view))
        if not isinstance(file_id, str):
            raise ApiError(422, "input_file_id: expected a string")
        stored = self.files.file(file_id)
        if stored.size > MAX_FILE_BYTES:
            raise ApiError(400, f"input_file_id: the file has {stored.size} bytes; at most {MAX_FILE_BYTES}")
        items, errors = _parse_file(stored.data)
        view = self.store.create_batch(
            NAME, endpoint="/v1/batches", items=items, errors=errors, render=self._render, metadata=metadata,
            extra={"input_file_id": file_id},
        )
        return JSONResponse(self._object(view))

    async def retrieve_batch(self, request: Request) -> Response:
        return JSONResponse(self._object(self._batch(request.path_params["batch_id"])))

    async def cancel_batch(self, request: Request) -> Response:
        view = self._batch(request.path_params["batch_id"])
        for group in self._groups(view):
            self.store.cancel_batch(group.provider, group.id)
        self.store.cancel_batch(NAME, view.id)
        return JSONResponse(self._object(self._batch(view.id)))

    async def list_batches(self, request: Request) -> Response:
        limit = query_int(request, "limit", default=100, low=1, high=1000)
        newest_first = list(reversed(self.store.batches(NAME)))
        page, more = paginate(newest_first, lambda b: b.id, limit=limit, after=_after(request))
        return JSONResponse({
            "batches": [self._object(b) for b in page],
            "pagination_token": _token(page[-1].id) if more and page else None,
        })

    async def add_requests(self, request: Request) -> Response:
        view = self._batch(request.path_params["batch_id"])
        if _is_file_batch(view):
            raise ApiError(400, f"Batch {view.id} is sealed (created from a file); no requests can be added.")
        body = await _json_body(request)
        entries = body.get("batch_requests")
        if not isinstance(entries, list):
            raise ApiError(422 if "batch_requests" in body else 400, "batch_requests: an array is required")
        if not entries:
            raise ApiError(400, "batch_requests: at least one request is required")
        groups = self._groups(view)
        if _summarize(view, groups).cancel_time is not None:
            raise ApiError(400, f"Batch {view.id} is cancelled; requests cannot be added.")
        taken = {item.custom_id for group in groups for item in group.items}
        items: list[tuple[str, Mapping[str, Any]]] = []
        for index, entry in enumerate(entries):
            where = f"batch_requests[{index}]"
            if not isinstance(entry, dict):
                raise ApiError(422, f"{where}: expected an object")
            request_id = entry.get("batch_request_id")
            if request_id is None:
                request_id = str(uuid.uuid4())
            if not isinstance(request_id, str) or not request_id:
                raise ApiError(422, f"{where}.batch_request_id: expected a non-empty string")
            if request_id in taken:
                raise ApiError(400, f"{where}.batch_request_id: {request_id!r} is already used in this batch")
            if len(json.dumps(entry)) > MAX_REQUEST_BYTES:
                raise ApiError(400, f"{where}: a batch request may be at most {MAX_REQUEST_BYTES} bytes")
            op, op_body = _operation(f"{where}.batch_request", entry.get("batch_request"))
            _refuse(_body_problems(op, op_body, f"{where}.batch_request.{op}"))
            taken.add(request_id)
            items.append((request_id, {op: op_body}))
        _refuse(_problems(NAME, "AddBatchRequestsRequest", body, "body"))
        self.store.create_batch(
            _GROUPS, endpoint="/v1/batches/requests", items=items, render=self._render,
            metadata={"batch_id": view.id}, id_prefix="batch_requests_",
        )
        return JSONResponse({})

    async def list_requests(self, request: Request) -> Response:
        view = self._batch(request.path_params["batch_id"])
        limit = query_int(request, "limit", default=100, low=1, high=1000)
        entries = []
        for group in self._groups(view):
            if group.phase == "failed" or (_is_file_batch(group) and group.phase == "validating"):
                continue
            results = group.results if group.terminal else None
            for index, item in enumerate(group.items):
                outcome = results[index].outcome if results else None
                state = _STATE_OF_OUTCOME[outcome] if outcome else "pending"
                entries.append({
                    "batch_request_id": item.custom_id,
                    "endpoint": _GRPC_ENDPOINT,
                    "model": next(iter(item.body.values()))["model"],
                    "state": state,
                    "create_time": rfc3339(group.created_at),
                    "finish_time": rfc3339(group.ended_at) if state != "pending" else None,
                })
        page, more = paginate(entries, lambda e: e["batch_request_id"], limit=limit, after=_after(request))
        return JSONResponse({
            "batch_request_metadata": page,
            "pagination_token": _token(page[-1]["batch_request_id"]) if more and page else None,
        })

    async def results(self, request: Request) -> Response:
        view = self._batch(request.path_params["batch_id"])
        limit = query_int(request, "limit", default=100, low=1, high=1000)
        lines = [
            result.line
            for group in self._groups(view) if group.terminal
            for result in group.results or () if result.outcome in ("succeeded", "errored")
        ]
        page, more = paginate(lines, lambda ln: ln["batch_request_id"], limit=limit, after=_after(request))
        start = lines.index(page[0]) if page else 0
        return JSONResponse({
            "results": self.store.faults.result_entries(NAME, page, id_keys=("batch_request_id",), start=start),
            "pagination_token": _token(page[-1]["batch_request_id"]) if more and page else None,
        })

    # results

    def _render(self, item: Item, outcome: Outcome) -> ItemResult:
        (op, body), = item.body.items()
        if outcome == "succeeded":
            try:
                response, input_tokens, output_tokens = _RENDERERS[op](body, int(self.store.now()))
            except Rejected as exc:
                return self._failed(item, str(exc))
            line = {"batch_request_id": item.custom_id, "batch_result": {"response": {op: response}}}
            return ItemResult(item.custom_id, "succeeded", line, input_tokens, output_tokens)
        if outcome == "errored" and item.marker == "transient":
            return self._failed(item, echo.TRANSIENT_MESSAGE)
        if outcome == "errored":
            return self._failed(item, echo.ERROR_MESSAGE)
        # Cancelled and expired requests get no result entry; this line is never served.
        return ItemResult(item.custom_id, outcome, {"batch_request_id": item.custom_id})

    @staticmethod
    def _failed(item: Item, message: str) -> ItemResult:
        line = {"batch_request_id": item.custom_id, "batch_result": {"error": message}}
        return ItemResult(item.custom_id, "errored", line)


SPEC = ProviderSpec(
    name=NAME,
    prefix=PREFIX,
    routes=lambda store: _XaiRoutes(store).routes(),
    check_request=_check_request,
    error_body=_error_body,
)
