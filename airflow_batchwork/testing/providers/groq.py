"""Groq Batch API, served under ``/groq`` (reference §5): OpenAI's Files + Batches routes at ``/openai/v1``.

Wire behaviour worth knowing (the rest is OpenAI's, see :mod:`.openai`):

- ``completion_window`` accepts any duration from ``24h`` to ``7d`` (hours or days); ``expires_at``
  follows it.
- Only ``/v1/chat/completions`` batches are emulated.
- ``GET /openai/v1/batches`` pages with an opaque cursor: ``{object, data, paging: {next_cursor}}``,
  next page via ``?cursor=``; ``?id=<b1>&id=<b2>`` (at most 200) fetches several batches at once.
- Result bodies are Groq chat completions (``service_tier: on_demand``, timing fields in ``usage``,
  ``x_groq``).
- The Batch object carries ``errors`` as a bare array (as in Groq's documentation; the SDK types it as
  ``{object, data}``) and has no ``model`` or ``usage`` fields.
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

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from airflow_batchwork.testing.providers.base import ApiError, ProviderSpec, paginate, query_int
from airflow_batchwork.testing.providers.openai import OpenAIBatchRoutes
from airflow_batchwork.testing.store import BatchView, Item, ItemResult, Outcome, Store

__all__ = ["SPEC", "GroqBatchRoutes", "check_request", "error_body"]

NAME = "groq"
PREFIX = "/groq"
API_PATH = "/openai/v1"
MAX_IDS_PER_LOOKUP = 200
_WINDOW = re.compile(r"^([1-9][0-9]*)([hd])$")
_HOUR = 3600
_ERROR_TYPES = {429: "tokens"}


def check_request(request: Request) -> None:
    """Bearer auth: a missing, empty or ``invalid`` key is a 401 ``invalid_api_key``."""
    scheme, _, key = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not key.strip() or key.strip() == "invalid":
        raise ApiError(401, "Invalid API Key", code="invalid_api_key")


def error_body(error: ApiError, request_id: str) -> dict[str, Any]:
    """``{"error": {message, type, code}}``."""
    default = "internal_server_error" if error.status >= 500 else "invalid_request_error"
    return {
        "error": {
            "message": error.message,
            "type": error.type or _ERROR_TYPES.get(error.status, default),
            "code": error.code,
        }
    }


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
        super().__init__(store, provider=NAME, endpoints=("/v1/chat/completions",))

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

    def batch_object(self, view: BatchView) -> dict[str, Any]:
        batch = super().batch_object(view)
        del batch["model"], batch["usage"]
        errors = batch["errors"]
        batch["errors"] = errors["data"] if errors else None
        hours = _window_hours(view.extra["completion_window"]) or 24
        batch["expires_at"] = int(view.created_at + hours * _HOUR)
        return batch

    def _render(self, endpoint: str, item: Item, outcome: Outcome) -> ItemResult:
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
