"""What every emulated provider shares: the provider spec, the API error, and small wire helpers.

A provider module exposes one :class:`ProviderSpec`; :class:`ProviderApp` serves it under its path
prefix and takes care of the parts that are the same everywhere but shaped per provider: the
request-id header, authentication, unknown URLs, and rendering :class:`ApiError` in the provider's
error body.
"""

from __future__ import annotations

import json
import logging
import secrets
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

from starlette.datastructures import MutableHeaders
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import BaseRoute, Router
from starlette.types import Message, Receive, Scope, Send

from airflow_batchwork.testing.store import BatchView, Store

__all__ = [
    "ApiError",
    "ProviderApp",
    "ProviderSpec",
    "Rejected",
    "bearer_key",
    "error_fields",
    "find_batch",
    "paginate",
    "positive_int",
    "query_int",
    "read_json",
    "request_id",
    "response_format_schema",
    "rfc3339",
    "text_format_schema",
    "unix",
]

log = logging.getLogger(__name__)

T = TypeVar("T")

_REQUEST_ID_KEY = "batchwork.request_id"


class ApiError(Exception):
    """An HTTP error a handler (or the fault middleware) answers with, in the provider's error shape.

    ``type`` overrides the provider's default error type for ``status``; ``code`` and ``param`` are
    used by providers whose error body has those fields (OpenAI).
    """

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str | None = None,
        code: str | None = None,
        param: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.code = code
        self.param = param
        self.headers = dict(headers or {})


class Rejected(Exception):
    """A request line the emulated endpoint answers with a per-item error (in the provider's own shape);
    ``param`` and ``code`` are used by the providers whose per-item error has those fields."""

    def __init__(self, message: str, param: str | None = None, code: str | None = "invalid_value") -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code


@dataclass(frozen=True)
class ProviderSpec:
    """Everything the emulator needs to serve one provider."""

    name: str
    """Registry key, e.g. ``"openai"``."""
    prefix: str
    """Mount path; ``Emulator.base_url(name)`` is the server origin + this."""
    routes: Callable[[Store], Sequence[BaseRoute]]
    """Builds the provider's routes (paths relative to ``prefix``) over the shared store."""
    check_request: Callable[[Request], None]
    """Raises :class:`ApiError` when auth or a required header is missing (runs before routing)."""
    error_body: Callable[[ApiError, str], dict[str, Any]]
    """Renders an error as the provider's JSON error body; the second argument is the request id."""
    request_id_header: str = "x-request-id"
    request_id_prefix: str = "req_"
    aliases: tuple[str, ...] = ()
    """Other names ``Emulator.base_url`` accepts for this provider (e.g. ``gemini`` for ``google``)."""
    byte_ranges: Callable[[Scope], bool] | None = None
    """Opt-in: True for the GET requests whose real endpoint honours HTTP ``Range`` (the middleware then
    answers ``Accept-Ranges``/``ETag`` and ``206`` partial content, see ``testing/middleware.py``). Only for
    downloads documented to serve ranges; None (the default) serves whole bodies only."""

    def new_request_id(self) -> str:
        """A fresh request id in this provider's style."""
        return f"{self.request_id_prefix}{secrets.token_hex(12)}"

    def error_response(self, error: ApiError, request_id: str | None = None) -> JSONResponse:
        """The complete HTTP response for ``error``."""
        rid = request_id or self.new_request_id()
        headers = {self.request_id_header: rid, **error.headers}
        return JSONResponse(self.error_body(error, rid), status_code=error.status, headers=headers)

    def owns(self, path: str) -> bool:
        """True if ``path`` is under this provider's prefix."""
        return path == self.prefix or path.startswith(self.prefix + "/")


class ProviderApp:
    """ASGI app serving one provider's routes under its prefix."""

    def __init__(self, spec: ProviderSpec, store: Store) -> None:
        self.spec = spec
        self.router = Router(routes=list(spec.routes(store)), default=self._unknown_url)

    @staticmethod
    async def _unknown_url(scope: Scope, receive: Receive, send: Send) -> None:
        raise ApiError(404, f"Unknown request URL: {scope['method']} {scope['path']}.", code="unknown_url")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.router(scope, receive, send)
            return
        rid = self.spec.new_request_id()
        scope[_REQUEST_ID_KEY] = rid
        started = False

        async def send_with_request_id(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                MutableHeaders(scope=message).setdefault(self.spec.request_id_header, rid)
            await send(message)

        try:
            self.spec.check_request(Request(scope, receive))
            await self.router(scope, receive, send_with_request_id)
        except Exception as exc:
            if started:
                raise
            if isinstance(exc, ApiError):
                error = exc
            elif isinstance(exc, HTTPException):
                error = ApiError(exc.status_code, exc.detail, headers=exc.headers)
            else:
                log.exception("emulator bug while serving %s %s", scope["method"], scope["path"])
                error = ApiError(500, f"Emulator internal error: {exc!r}")
            await self.spec.error_response(error, rid)(scope, receive, send)


def error_fields(
    error: ApiError, types: Mapping[int, str] | None = None, server_type: str = "server_error"
) -> dict[str, Any]:
    """``{message, type, param, code}``, the error object of OpenAI-style bodies. ``type``: the error's own,
    else ``types[status]``, else ``server_type`` for a 5xx and ``invalid_request_error`` for the rest."""
    default = server_type if error.status >= 500 else "invalid_request_error"
    kind = error.type or (types or {}).get(error.status, default)
    return {"message": error.message, "type": kind, "param": error.param, "code": error.code}


def find_batch(store: Store, provider: str, batch_id: str, not_found: ApiError) -> BatchView:
    """The provider's batch ``batch_id`` from the shared store; raises ``not_found`` (the provider's 404)."""
    view = store.get_batch(provider, batch_id)
    if view is None:
        raise not_found
    return view


def bearer_key(request: Request) -> str:
    """The key of an ``Authorization: Bearer <key>`` header, stripped; empty without one."""
    scheme, _, key = request.headers.get("authorization", "").partition(" ")
    return key.strip() if scheme.lower() == "bearer" else ""


def request_id(request: Request) -> str:
    """The request id :class:`ProviderApp` assigned to this request (also sent as a header)."""
    return str(request.scope.get(_REQUEST_ID_KEY) or "")


async def read_json(request: Request) -> dict[str, Any]:
    """The request's JSON object body; ApiError 400 if it is not valid JSON or not an object."""
    raw = await request.body()
    try:
        body = json.loads(raw or b"null")
    except ValueError as exc:
        raise ApiError(400, f"We could not parse the JSON body of your request: {exc}") from exc
    if not isinstance(body, dict):
        raise ApiError(400, "The request body must be a JSON object.")
    return body


def query_int(request: Request, name: str, *, default: int, low: int, high: int) -> int:
    """An integer query parameter within ``[low, high]``; ApiError 400 otherwise."""
    raw = request.query_params.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = low - 1
    if not low <= value <= high:
        raise ApiError(
            400,
            f"Invalid '{name}': expected an integer between {low} and {high}, got {raw!r}.",
            code="invalid_value",
            param=name,
        )
    return value


def paginate(
    items: Sequence[T],
    key: Callable[[T], str],
    *,
    limit: int,
    after: str | None = None,
    before: str | None = None,
) -> tuple[list[T], bool]:
    """One page of ``items`` (already in list order) and whether more exist in the paging direction.

    ``after``: the items following that id; ``before``: the ``limit`` items just preceding it.
    An unknown cursor id gives an empty page.
    """
    ids = [key(item) for item in items]
    if before is not None:
        if before not in ids:
            return [], False
        end = ids.index(before)
        start = max(0, end - limit)
        return list(items[start:end]), start > 0
    start = 0
    if after is not None:
        if after not in ids:
            return [], False
        start = ids.index(after) + 1
    page = list(items[start : start + limit])
    return page, start + limit < len(items)


def positive_int(body: Mapping[str, Any], *names: str, refuse: Callable[[str, object], str]) -> int | None:
    """The first of ``names`` present in ``body``, which must be an integer >= 1 (else :class:`Rejected` with
    ``refuse(name, value)``, the provider's wording); None when none is present."""
    for name in names:
        value = body.get(name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise Rejected(refuse(name, value))
        return value
    return None


def unix(timestamp: float | None) -> int | None:
    """Unix seconds (int), or None."""
    return None if timestamp is None else int(timestamp)


def rfc3339(timestamp: float | None) -> str | None:
    """RFC 3339 UTC string with microseconds and a ``Z`` suffix, or None."""
    if timestamp is None:
        return None
    return datetime.fromtimestamp(timestamp, UTC).isoformat().replace("+00:00", "Z")


def response_format_schema(body: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The JSON Schema of a chat body's ``response_format: {type: json_schema, json_schema: {schema}}``."""
    fmt = body.get("response_format")
    if isinstance(fmt, Mapping) and fmt.get("type") == "json_schema" and isinstance(fmt.get("json_schema"), Mapping):
        schema = fmt["json_schema"].get("schema")
        return schema if isinstance(schema, Mapping) else None
    return None


def text_format_schema(body: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The JSON Schema of a Responses body's ``text.format: {type: json_schema, schema}``."""
    fmt = (body.get("text") or {}).get("format") if isinstance(body.get("text"), Mapping) else None
    if isinstance(fmt, Mapping) and fmt.get("type") == "json_schema" and isinstance(fmt.get("schema"), Mapping):
        return fmt["schema"]
    return None
