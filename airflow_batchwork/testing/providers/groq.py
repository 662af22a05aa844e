"""Groq Batch API, served under ``/groq`` (reference §5): OpenAI's Files + Batches routes at ``/openai/v1``.

Wire behaviour worth knowing (the rest is OpenAI's, see :mod:`.openai`):

- ``completion_window`` accepts any duration from ``24h`` to ``7d`` (hours or days); ``expires_at``
  follows it.
- Only ``/v1/chat/completions`` batches are emulated.
- ``GET /openai/v1/batches`` pages with an opaque cursor: ``{object, data, paging: {next_cursor}}``,
  next page via ``?cursor=``; ``?id=<b1>&id=<b2>`` (at most 200) fetches several batches at once.
- Result bodies are Groq chat completions (``service_tier: on_demand``, timing fields in ``usage``,
  ``x_groq``).
- The Batch object carries ``errors`` as ``{object: "list", data: [...]}`` (the SDK's type; Groq's
  documentation example shows a bare array, and the SDK decides) and has no ``model`` or ``usage``
  fields.
- File objects are the SDK's ``{id, object, bytes, created_at, filename, purpose}`` (no OpenAI
  ``status``/``expires_at``/``status_details``); uploads take only ``purpose=batch``, and results are
  stored as ``batch_output``. ``GET /openai/v1/files`` answers ``{object, data}``.
- Strict, against ``schemas/groq.json`` (the SDK's types): ``POST /openai/v1/batches`` bodies and the
  upload's ``purpose`` are refused with a 400 naming the fault; an input line whose ``body`` is not a
  valid chat request (unknown field, wrong type, bad content part, value outside an enum) becomes a
  per-item 400 in the error file, as a real request the model endpoint refuses.
- Errors are ``{"error": {message, type, code}}``; a missing, empty or ``invalid`` key is a 401
  ``invalid_api_key``.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import replace
from typing import Any

from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

import airflow_batchwork.testing.conformance as conformance
import airflow_batchwork.testing.echo as echo
import airflow_batchwork.testing.providers.chat_tools as chat_tools
from airflow_batchwork.testing.providers.base import (
    ApiError,
    ProviderSpec,
    bearer_key,
    error_fields,
    paginate,
    query_int,
    read_json,
)
from airflow_batchwork.testing.providers.files import plain_list, short_file_object
from airflow_batchwork.testing.providers.openai import OpenAIBatchRoutes, file_wire
from airflow_batchwork.testing.store import BatchView, Item, ItemResult, Outcome, Store

__all__ = ["SPEC", "GroqBatchRoutes", "check_request", "error_body"]

NAME = "groq"
PREFIX = "/groq"
API_PATH = "/openai/v1"
MAX_IDS_PER_LOOKUP = 200
_WINDOW = re.compile(r"^([1-9][0-9]*)([hd])\Z")
_HOUR = 3600
_ERROR_TYPES = {429: "tokens"}


def check_request(request: Request) -> None:
    """Bearer auth: a missing, empty or ``invalid`` key is a 401 ``invalid_api_key``."""
    if bearer_key(request) in ("", "invalid"):
        raise ApiError(401, "Invalid API Key", code="invalid_api_key")


def error_body(error: ApiError, request_id: str) -> dict[str, Any]:
    """``{"error": {message, type, code}}``."""
    fields = error_fields(error, _ERROR_TYPES, "internal_server_error")
    del fields["param"]
    return {"error": fields}


def _schema_error(name: str, instance: object, what: str) -> ApiError | None:
    """A 400 naming every fault of ``instance`` against Groq's type ``name``, or None."""
    problems = conformance.violations(NAME, name, instance)
    if not problems:
        return None
    param = problems[0].split(":", 1)[0]
    return ApiError(400, f"Invalid {what}: " + "; ".join(problems[:5]), param=None if param == "(root)" else param)


def _upload_purpose(form: FormData) -> str:
    purpose = form.get("purpose")
    error = _schema_error("FileUploadForm", {"purpose": purpose} if purpose is not None else {}, "upload form")
    if error is not None:
        raise error
    return str(purpose)


# OpenAI's Files API with Groq's file object, its one upload purpose and an unpaged list.
_FILES = file_wire(
    NAME,
    file_object=short_file_object,
    missing_file=lambda: ApiError(400, "Missing required parameter: 'file'.", code="missing_required_parameter"),
    purpose=_upload_purpose,
    list_style=plain_list(object="list"),
)


def _window_hours(window: str) -> int | None:
    match = _WINDOW.match(window)
    return int(match.group(1)) * (24 if match.group(2) == "d" else 1) if match else None


def _cursor(batch_id: str) -> str:
    raw = json.dumps({"id": batch_id}, separators=(",", ":")).encode()
    return "cursor_" + base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _cursor_id(cursor: str) -> str:
    try:
        payload = cursor.removeprefix("cursor_")
        data = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        return str(data["id"])
    except (ValueError, KeyError, TypeError, binascii.Error):
        raise ApiError(400, f"Invalid cursor: {cursor!r}.", code="invalid_cursor") from None


class GroqBatchRoutes(OpenAIBatchRoutes):
    """OpenAI's Files + Batch handlers with Groq's paths, windows, batch object and paging."""

    def __init__(self, store: Store) -> None:
        super().__init__(store, provider=NAME, endpoints=("/v1/chat/completions",), files=_FILES)

    def routes(self) -> list[BaseRoute]:
        return [
            Route(API_PATH + route.path, route.endpoint, methods=sorted(route.methods or ()))
            for route in super().routes()
            if isinstance(route, Route)
        ]

    def check_completion_window(self, window: str) -> None:
        hours = _window_hours(window)
        if hours is None or not 24 <= hours <= 7 * 24:
            raise ApiError(
                400,
                f"Invalid value for 'completion_window': {window!r}. "
                "Durations from '24h' to '7d' are supported.",
                code="invalid_value",
            )

    # batches

    async def create_batch(self, request: Request) -> Response:
        error = _schema_error("CreateBatchRequest", await read_json(request), "batch create body")
        if error is not None:
            raise error
        return await super().create_batch(request)

    def batch_object(self, view: BatchView) -> dict[str, Any]:
        batch = super().batch_object(view)
        del batch["model"], batch["usage"]
        hours = _window_hours(view.extra["completion_window"]) or 24
        batch["expires_at"] = int(view.created_at + hours * _HOUR)
        return batch

    def _render(self, endpoint: str, item: Item, outcome: Outcome) -> ItemResult:
        if outcome in ("succeeded", "errored"):
            problems = conformance.violations(NAME, "ChatCompletionRequest", dict(item.body))
            if problems:
                param = problems[0].split(":", 1)[0]
                return self._rejected(
                    item, self.store.new_id("batch_req_"), self.store.new_id("req_"),
                    "Invalid request body: " + "; ".join(problems[:5]), param, None,
                )
        result = super()._render(endpoint, item, outcome)
        if result.outcome != "succeeded":
            return result
        # Groq's chat completion: its own service tiers, timing fields in usage, and `x_groq`.
        response = dict(result.line["response"])
        body = dict(response["body"])
        usage = body["usage"]
        body["usage"] = {
            "queue_time": 0.0,
            "prompt_tokens": usage["prompt_tokens"],
            "prompt_time": 0.0,
            "completion_tokens": usage["completion_tokens"],
            "completion_time": 0.0,
            "total_tokens": usage["total_tokens"],
            "total_time": 0.0,
        }
        body["choices"] = [
            {**choice, "message": {"role": "assistant", "content": choice["message"]["content"]}}
            for choice in body["choices"]
        ]
        # Parts and tools: the echo mentions what it saw, a forced tool choice answers with a call.
        try:
            reply = chat_tools.reply(item.body, list(item.body.get("messages") or []), None)
        except chat_tools.ToolChoiceError as exc:
            return self._rejected(item, self.store.new_id("batch_req_"), self.store.new_id("req_"),
                                  str(exc), "tool_choice", None)
        if reply.tool_call is not None:
            body["choices"] = [{**body["choices"][0], "finish_reason": "tool_calls", "message": {
                "role": "assistant", "content": None,
                "tool_calls": chat_tools.tool_calls(reply.tool_call, self.store.new_id)}}]
            body["usage"].update(completion_tokens=reply.output_tokens,
                                 total_tokens=body["usage"]["prompt_tokens"] + reply.output_tokens)
        elif any(chat_tools.media(item.body.get("messages"))) and not item.body.get("response_format"):
            content = body["choices"][0]["message"]["content"]
            note = echo.media_note(*chat_tools.media(item.body.get("messages")))
            if isinstance(content, str) and note not in content:
                body["choices"][0]["message"]["content"] = content + note
        body["service_tier"] = "on_demand"
        body["x_groq"] = {"id": response["request_id"]}
        response["body"] = body
        return replace(result, line={**result.line, "response": response})

    async def list_batches(self, request: Request) -> Response:
        ids = request.query_params.getlist("id")
        if ids:
            if len(ids) > MAX_IDS_PER_LOOKUP:
                raise ApiError(400, f"At most {MAX_IDS_PER_LOOKUP} batch ids may be requested at once.")
            found = [self.store.get_batch(self.provider, batch_id) for batch_id in ids]
            return JSONResponse({"object": "list", "data": [self.batch_object(b) for b in found if b]})
        # `limit` is not documented by Groq; it is accepted so tests can page through few batches.
        limit = query_int(request, "limit", default=20, low=1, high=100)
        cursor = request.query_params.get("cursor")
        after = _cursor_id(cursor) if cursor else None
        newest_first = list(reversed(self.store.batches(self.provider)))
        page, has_more = paginate(newest_first, lambda b: b.id, limit=limit, after=after)
        return JSONResponse(
            {
                "object": "list",
                "data": [self.batch_object(b) for b in page],
                "paging": {"next_cursor": _cursor(page[-1].id) if has_more and page else None},
            }
        )


SPEC = ProviderSpec(
    name=NAME,
    prefix=PREFIX,
    routes=lambda store: GroqBatchRoutes(store).routes(),
    check_request=check_request,
    error_body=error_body,
    request_id_header="x-request-id",
    request_id_prefix="req_",
)
