"""Anthropic Message Batches API, served under ``/anthropic`` (reference §3).

Wire behaviour worth knowing:

- ``processing_status`` is ``in_progress`` until the batch ends, ``canceling`` between a cancel and
  its end, then ``ended``; ``request_counts`` keep every request under ``processing`` until then.
- The shape of each request (``custom_id`` pattern and uniqueness; ``params`` with ``model``,
  ``max_tokens``, ``messages``; no keys beyond ``requests`` / ``custom_id`` / ``params``, the closed
  ``BatchCreateParams`` and ``Request`` types) is checked at create time (400). ``params`` itself is
  validated when the request is processed, as the real API does ("validated asynchronously"): against the
  SDK's ``MessageCreateParamsNonStreaming`` from ``schemas/anthropic.json`` (an unknown key, a wrong type,
  a value outside an enum, ``max_tokens < 1``), then the per-model rules (sampling parameters on Claude
  Opus 4.7 and later, temperature with top_p on Claude 4, assistant prefill from the 4.6 models on). A
  failing request gives an ``errored`` result with an ``invalid_request_error``, not a 400.
- ``results_url`` is an absolute URL on the emulator's own origin, null until ``ended``.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
from collections.abc import AsyncIterator, Mapping
from functools import cache
from importlib import resources
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Route

import airflow_batchwork.testing.conformance as conformance
import airflow_batchwork.testing.echo as echo
from airflow_batchwork.testing.faults import VALIDATION_FAILURE_MESSAGE
from airflow_batchwork.testing.providers.base import (
    ApiError,
    ProviderSpec,
    find_batch,
    paginate,
    query_int,
    read_json,
    rfc3339,
)
from airflow_batchwork.testing.store import BatchView, Item, ItemResult, Outcome, Store

__all__ = ["SPEC"]

NAME = "anthropic"
PREFIX = "/anthropic"
MAX_REQUESTS_PER_BATCH = 100_000
CUSTOM_ID_PATTERN = re.compile(r"^[a-zA-Z0-9_-]{1,64}\Z")  # \Z: "$" would let a trailing newline through
_DAY = 24 * 3600
_SAMPLING = ("temperature", "top_p", "top_k")
# Models that still honour sampling parameters: the Claude 3 family takes all three, Claude 4 models up to
# 4.6 take temperature or top_p (not both). Everything else (Opus 4.7 and later) answers 400.
_SAMPLING_ALL = re.compile(r"^claude-3[-.]")
_SAMPLING_ONE = re.compile(r"^claude-(?:opus|sonnet|haiku)-4(?:-[0-6])?(?:-\d{8})?\Z")
# Models that accept a conversation ending with an assistant turn (prefill): up to the 4.5 models.
_PREFILL_OK = re.compile(r"^claude-(?:3[-.]|(?:opus|sonnet|haiku)-4(?:-[0-5])?(?:-\d{8})?$)")


@cache
def _closed_keys(name: str) -> frozenset[str]:
    """The keys a closed type of ``schemas/anthropic.json`` defines."""
    defs = conformance.document(NAME)["$defs"]
    schema = defs[name]
    while "$ref" in schema:
        schema = defs[schema["$ref"].rsplit("/", 1)[-1]]
    return frozenset(schema["properties"])


def _wire_path(problem: str) -> str:
    """A schema problem written the way the API writes them: ``messages.0.content: …`` paths, and an
    unknown key as ``<path>.<key>: Extra inputs are not permitted``."""
    path, _, message = problem.partition(": ")
    path = "" if path == "(root)" else re.sub(r"\[(\d+)\]", r".\1", path).lstrip(".")
    extra = re.match(r"Additional properties are not allowed \('([^']+)'", message)
    if extra:
        path, message = ".".join(p for p in (path, extra.group(1)) if p), "Extra inputs are not permitted"
    text = f"{path}: {message}" if path else message
    return text if len(text) <= 300 else text[:297] + "..."


def params_problem(params: Mapping[str, Any]) -> str | None:
    """Why the real API would error this request's ``params``, or None."""
    sampling = {k: v for k, v in params.items() if k in _SAMPLING}
    rest = {k: v for k, v in params.items() if k not in _SAMPLING}
    problems = conformance.violations(NAME, "MessageCreateParamsNonStreaming", rest)
    problems += conformance.violations(NAME, "SamplingParams", sampling)
    if problems:
        return _wire_path(problems[0])
    model = str(params["model"])
    if _SAMPLING_ALL.match(model):
        pass
    elif _SAMPLING_ONE.match(model):
        if "temperature" in sampling and "top_p" in sampling:
            return "`temperature` and `top_p` cannot both be specified for this model. Please use only one."
    else:
        for name in _SAMPLING:
            if name in sampling and not (name == "temperature" and sampling[name] == 1):
                return f"`{name}` is deprecated for this model."
    temperature = sampling.get("temperature")
    if temperature is not None and not 0 <= temperature <= 1:
        return "temperature: Input should be less than or equal to 1"
    messages = params["messages"]
    if messages and messages[-1].get("role") == "assistant" and not _PREFILL_OK.match(model):
        return ("This model does not support assistant message prefill. "
                "The conversation must end with a user message.")
    if params["max_tokens"] < 1:
        return "max_tokens: Input should be greater than or equal to 1"
    return _tools_problem(params)


def _tools_problem(params: Mapping[str, Any]) -> str | None:
    """The API's own checks of tools beyond their shape: a forced tool exists, results answer calls."""
    names = [t.get("name") for t in params.get("tools") or []]
    choice = params.get("tool_choice") or {}
    if choice.get("type") in ("any", "tool") and not names:
        return "tool_choice: tools must be provided when tool_choice is any or tool"
    if choice.get("type") == "tool" and choice.get("name") not in names:
        return f"tool_choice.name: tool {choice.get('name')!r} not found in tools"
    called: set[str] = set()
    for index, message in enumerate(params["messages"]):
        for block in message.get("content") if isinstance(message.get("content"), list) else []:
            if block.get("type") == "tool_use":
                called.add(block.get("id"))
            elif block.get("type") == "tool_result" and block.get("tool_use_id") not in called:
                return (f"messages.{index}.content: unexpected `tool_use_id` found in `tool_result` blocks: "
                        f"{block.get('tool_use_id')}. Each `tool_result` block must have a corresponding "
                        "`tool_use` block in the previous message.")
    return None


def _classify(block: Mapping[str, Any]) -> str | None:
    kind = block.get("type")
    return "image" if kind == "image" else "file" if kind == "document" else None


def forced_tool(params: Mapping[str, Any]) -> tuple[str, Mapping[str, Any]] | None:
    """(name, input_schema) of the tool a request forces (`tool_choice` any → the first tool), or None."""
    tools = [t for t in params.get("tools") or [] if "input_schema" in t]
    choice = params.get("tool_choice") or {}
    if not tools or choice.get("type") not in ("any", "tool"):
        return None
    tool = next((t for t in tools if t.get("name") == choice.get("name")), tools[0])
    return str(tool["name"]), tool["input_schema"]

_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    504: "timeout_error",
    529: "overloaded_error",
}


def _check_request(request: Request) -> None:
    key = request.headers.get("x-api-key")
    if key is None:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        key = token if scheme.lower() == "bearer" else None
    if key is None:
        raise ApiError(401, "x-api-key header is required")
    if not key.strip() or key.strip() == "invalid":
        raise ApiError(401, "invalid x-api-key")
    if not request.headers.get("anthropic-version"):
        raise ApiError(400, "anthropic-version: header is required")


def _error_body(error: ApiError, request_id: str) -> dict[str, Any]:
    default = "api_error" if error.status >= 500 else "invalid_request_error"
    return {
        "type": "error",
        "error": {"type": error.type or _ERROR_TYPES.get(error.status, default), "message": error.message},
        "request_id": request_id,
    }


def _validate_requests(body: Mapping[str, Any]) -> list[tuple[str, Mapping[str, Any]]]:
    for key in body:
        if key not in _closed_keys("BatchCreateParams"):
            raise ApiError(400, f"{key}: Extra inputs are not permitted")
    requests = body.get("requests")
    if not isinstance(requests, list):
        raise ApiError(400, "requests: Field required")
    if not 1 <= len(requests) <= MAX_REQUESTS_PER_BATCH:
        raise ApiError(400, f"requests: must contain between 1 and {MAX_REQUESTS_PER_BATCH} items")
    items: list[tuple[str, Mapping[str, Any]]] = []
    seen: set[str] = set()
    for index, entry in enumerate(requests):
        where = f"requests.{index}"
        if not isinstance(entry, dict):
            raise ApiError(400, f"{where}: Input should be an object")
        for key in entry:
            if key not in _closed_keys("MessageBatchRequest"):
                raise ApiError(400, f"{where}.{key}: Extra inputs are not permitted")
        custom_id = entry.get("custom_id")
        if not isinstance(custom_id, str) or not CUSTOM_ID_PATTERN.match(custom_id):
            raise ApiError(400, f"{where}.custom_id: String should match pattern '^[a-zA-Z0-9_-]{{1,64}}$'")
        if custom_id in seen:
            raise ApiError(
                400, f"{where}.custom_id: duplicate custom_id {custom_id!r}; custom_ids must be unique"
            )
        seen.add(custom_id)
        params = entry.get("params")
        if not isinstance(params, dict):
            raise ApiError(400, f"{where}.params: Field required")
        for name, kind in (("model", str), ("max_tokens", int), ("messages", list)):
            if name not in params:
                raise ApiError(400, f"{where}.params.{name}: Field required")
            if not isinstance(params[name], kind) or isinstance(params[name], bool):
                raise ApiError(400, f"{where}.params.{name}: Input should be a valid {kind.__name__}")
        items.append((custom_id, params))
    return items


def _batch_object(view: BatchView, origin: str) -> dict[str, Any]:
    counts = view.counts
    if view.terminal:
        status = "ended"
        request_counts = {
            "processing": 0,
            "succeeded": counts.succeeded,
            "errored": counts.errored,
            "canceled": counts.canceled,
            "expired": counts.expired,
        }
    else:
        status = "canceling" if view.phase == "cancelling" else "in_progress"
        # The real API only reports per-outcome counts once the whole batch has ended.
        request_counts = {
            "processing": counts.total,
            "succeeded": 0,
            "errored": 0,
            "canceled": 0,
            "expired": 0,
        }
    return {
        "id": view.id,
        "type": "message_batch",
        "processing_status": status,
        "request_counts": request_counts,
        "ended_at": rfc3339(view.ended_at),
        "created_at": rfc3339(view.created_at),
        "expires_at": rfc3339(view.created_at + _DAY),
        "archived_at": None,
        "cancel_initiated_at": rfc3339(view.cancel_requested_at),
        "results_url": f"{origin}{PREFIX}/v1/messages/batches/{view.id}/results" if view.terminal else None,
    }


def _origin(request: Request) -> str:
    return f"{request.url.scheme}://{request.url.netloc}"


@cache
def _cache_minimums() -> tuple[dict[str, int], int]:
    """Minimum cacheable prefix per model, from the dated table the package ships (data/prices.json)."""
    text = resources.files("airflow_batchwork").joinpath("data/prices.json").read_text(encoding="utf-8")
    terms = json.loads(text)["providers"][NAME]["prompt_cache"]
    return dict(terms["min_tokens"]), int(terms["min_tokens_default"])


def _cache_breakpoint(params: Mapping[str, Any]) -> tuple[str, int, str] | None:
    """(key, tokens, ttl) of the prefix up to the last block carrying ``cache_control`` (system blocks, then
    message content blocks, in order), or None when nothing is marked or the prefix is below the model's
    minimum (the API then caches nothing and reports zeros)."""
    blocks: list[Mapping[str, Any]] = []
    system = params.get("system")
    if isinstance(system, str):
        blocks.append({"type": "text", "text": system})
    elif isinstance(system, list):
        blocks += [b for b in system if isinstance(b, Mapping)]
    for message in params.get("messages") or []:
        content = message.get("content")
        if isinstance(content, str):
            blocks.append({"type": "text", "text": content})
        elif isinstance(content, list):
            blocks += [b for b in content if isinstance(b, Mapping)]
    marked = [i for i, b in enumerate(blocks) if b.get("cache_control")]
    if not marked:
        return None
    prefix = blocks[: marked[-1] + 1]
    tokens = sum(len(echo.content_text(b).split()) for b in prefix)
    minimums, default = _cache_minimums()
    if tokens < minimums.get(str(params.get("model")), default):
        return None
    plain = [{k: v for k, v in b.items() if k != "cache_control"} for b in prefix]
    key = hashlib.sha256(json.dumps([params.get("model"), plain], sort_keys=True).encode()).hexdigest()
    ttl = str((blocks[marked[-1]].get("cache_control") or {}).get("ttl") or "5m")
    return key, tokens, ttl


class _AnthropicRoutes:
    """Handlers for one emulator's Anthropic routes over the shared store.

    Prompt caching: a request whose params mark a prefix with ``cache_control`` (long enough for the model)
    reads the cache entry of that prefix when another batch wrote it and it has not expired (reading renews
    it), else writes it. Items of one batch never read each other's writes (a cold batch writes once per
    item), which is why a job primes the cache with a one-request batch first. Usage reports it the way the
    API does: ``cache_read_input_tokens`` / ``cache_creation_input_tokens`` (split by TTL in
    ``cache_creation``), and ``input_tokens`` without the cached prefix.
    """

    def __init__(self, store: Store) -> None:
        self.store = store
        self.prompt_cache: dict[str, tuple[str, float]] = {}  # prefix key -> (writing batch token, expires at)

    def routes(self) -> list[BaseRoute]:
        base = "/v1/messages/batches"
        return [
            Route(base, self.create_batch, methods=["POST"]),
            Route(base, self.list_batches, methods=["GET"]),
            Route(base + "/{batch_id}", self.retrieve_batch, methods=["GET"]),
            Route(base + "/{batch_id}", self.delete_batch, methods=["DELETE"]),
            Route(base + "/{batch_id}/cancel", self.cancel_batch, methods=["POST"]),
            Route(base + "/{batch_id}/results", self.results, methods=["GET"]),
        ]

    def _batch(self, batch_id: str) -> BatchView:
        return find_batch(self.store, NAME, batch_id, ApiError(404, f"No message batch found with id '{batch_id}'."))

    async def create_batch(self, request: Request) -> Response:
        items = _validate_requests(await read_json(request))
        models = {params["model"] for _, params in items}
        view = self.store.create_batch(
            NAME,
            endpoint="/v1/messages",
            items=items,
            model=models.pop() if len(models) == 1 else None,
            render=functools.partial(self._render, batch=self.store.new_id("pc_")),
            id_prefix="msgbatch_",
            validation_failure="items",  # Message Batches have no failed state
        )
        return JSONResponse(_batch_object(view, _origin(request)))

    async def retrieve_batch(self, request: Request) -> Response:
        return JSONResponse(_batch_object(self._batch(request.path_params["batch_id"]), _origin(request)))

    async def cancel_batch(self, request: Request) -> Response:
        view = self._batch(request.path_params["batch_id"])
        view = self.store.cancel_batch(NAME, view.id) or view
        return JSONResponse(_batch_object(view, _origin(request)))

    async def delete_batch(self, request: Request) -> Response:
        view = self._batch(request.path_params["batch_id"])
        if not view.terminal:
            raise ApiError(
                400,
                f"Batch {view.id} cannot be deleted while it is processing; "
                "cancel it and wait until it has ended.",
            )
        self.store.delete_batch(NAME, view.id)
        return JSONResponse({"id": view.id, "type": "message_batch_deleted"})

    async def list_batches(self, request: Request) -> Response:
        limit = query_int(request, "limit", default=20, low=1, high=1000)
        after, before = request.query_params.get("after_id"), request.query_params.get("before_id")
        if after and before:
            raise ApiError(400, "Only one of 'before_id' and 'after_id' may be given.")
        newest_first = list(reversed(self.store.batches(NAME)))
        page, has_more = paginate(newest_first, lambda b: b.id, limit=limit, after=after, before=before)
        origin = _origin(request)
        return JSONResponse(
            {
                "data": [_batch_object(b, origin) for b in page],
                "has_more": has_more,
                "first_id": page[0].id if page else None,
                "last_id": page[-1].id if page else None,
            }
        )

    async def results(self, request: Request) -> Response:
        view = self._batch(request.path_params["batch_id"])
        if not view.terminal or view.results is None:
            raise ApiError(
                400,
                f"Batch {view.id} has not ended yet; "
                "results are available once processing_status is 'ended'.",
            )
        lines = self.store.faults.result_lines(NAME, [r.line for r in view.results])

        async def stream() -> AsyncIterator[bytes]:
            for line in lines:
                yield line.encode("utf-8")

        return StreamingResponse(stream(), media_type="application/binary")

    def _cache_usage(self, params: Mapping[str, Any], batch: str) -> tuple[int, int, int]:
        """(read, write 5m, write 1h) prefix tokens of one request that succeeds in `batch`."""
        point = _cache_breakpoint(params)
        if point is None:
            return 0, 0, 0
        key, tokens, ttl = point
        now = self.store.now()
        life = 3600.0 if ttl == "1h" else 300.0
        entry = self.prompt_cache.get(key)
        if entry is not None and entry[0] != batch and entry[1] > now:
            self.prompt_cache[key] = (entry[0], max(entry[1], now + life))
            return tokens, 0, 0
        if entry is None or entry[1] <= now:
            self.prompt_cache[key] = (batch, now + life)
        return 0, (tokens if ttl != "1h" else 0), (tokens if ttl == "1h" else 0)

    def _render(self, item: Item, outcome: Outcome, batch: str = "") -> ItemResult:
        if outcome == "succeeded":
            params = item.body
            problem = params_problem(params)
            if problem:
                return self._errored(item, problem)
            fmt = (params.get("output_config") or {}).get("format") or {}
            reply = echo.generate(
                params["messages"], system=params.get("system"), max_tokens=params["max_tokens"],
                schema=fmt.get("schema") if fmt.get("type") == "json_schema" else None,
                media=echo.count_parts(params["messages"], _classify), tool=forced_tool(params),
            )
            content: list[dict[str, Any]] = [{"type": "text", "text": reply.text, "citations": None}]
            if reply.tool_call is not None:
                content = [{"type": "tool_use", "id": self.store.new_id("toolu_"), "name": reply.tool_call.name,
                            "input": reply.tool_call.arguments}]
            read, write_5m, write_1h = self._cache_usage(params, batch)
            cached = read + write_5m + write_1h
            message = {
                "id": self.store.new_id("msg_"),
                "type": "message",
                "role": "assistant",
                "model": params["model"],
                "content": content,
                "stop_reason": "tool_use" if reply.tool_call else "max_tokens" if reply.truncated else "end_turn",
                "stop_sequence": None,
                "usage": {
                    "input_tokens": reply.input_tokens - cached,
                    "output_tokens": reply.output_tokens,
                    "cache_creation_input_tokens": write_5m + write_1h,
                    "cache_read_input_tokens": read,
                    "cache_creation": {"ephemeral_5m_input_tokens": write_5m, "ephemeral_1h_input_tokens": write_1h},
                    "server_tool_use": None,
                    "service_tier": "batch",
                },
            }
            line = {"custom_id": item.custom_id, "result": {"type": "succeeded", "message": message}}
            return ItemResult(item.custom_id, "succeeded", line, reply.input_tokens - cached, reply.output_tokens)
        if outcome == "errored" and item.marker == "fail_validation":
            return self._errored(item, VALIDATION_FAILURE_MESSAGE)
        if outcome == "errored" and item.marker == "transient":
            return self._errored(item, echo.TRANSIENT_MESSAGE, "overloaded_error")
        if outcome == "errored":
            return self._errored(item, echo.ERROR_MESSAGE)
        return ItemResult(item.custom_id, outcome, {"custom_id": item.custom_id, "result": {"type": outcome}})

    def _errored(self, item: Item, message: str, kind: str = "invalid_request_error") -> ItemResult:
        error = {
            "type": "error",
            "error": {"type": kind, "message": message},
            "request_id": self.store.new_id("req_"),
        }
        return ItemResult(
            item.custom_id,
            "errored",
            {"custom_id": item.custom_id, "result": {"type": "errored", "error": error}},
        )


SPEC = ProviderSpec(
    name=NAME,
    prefix=PREFIX,
    routes=lambda store: _AnthropicRoutes(store).routes(),
    check_request=_check_request,
    error_body=_error_body,
    request_id_header="request-id",
    request_id_prefix="req_",
)
