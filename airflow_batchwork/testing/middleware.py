"""The ASGI middleware that puts the fault model on the wire and logs every provider request.

For each request under a provider's prefix it opens :meth:`Faults.request
<airflow_batchwork.testing.faults.Faults.request>` and then, as decided there: answers the provider's 429 or
5xx instead of the route; delays the response (``slow_seconds``); drops the connection after half of the first
body chunk; or, when the store flagged that this request created a batch whose answer must be lost, drops the
connection before any byte. Finally it appends a :class:`~airflow_batchwork.testing.store.RequestRecord`.

Byte ranges are served only where a provider spec opts in (``ProviderSpec.byte_ranges``, for downloads whose
real endpoint honours ``Range``): the whole answer is buffered, sent with ``Accept-Ranges: bytes`` and a strong
``ETag``, and a ``Range: bytes=N-`` / ``bytes=N-M`` request (with a matching or absent ``If-Range``) gets
``206 Partial Content`` with ``Content-Range`` (``416`` past the end). The request log then shows the 206.

Dropping a connection means closing its socket, so the client sees a transport error (httpx
``RemoteProtocolError``), never an HTTP answer. That needs the server's connection, which ``drop`` provides
(:class:`~airflow_batchwork.testing.emulator.Emulator` looks it up in uvicorn). Without it, a mid-response drop
raises inside the app after the partial body (servers then close the connection) and a lost create answer
becomes a provider-shaped 502.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from airflow_batchwork.testing.faults import FaultConfig, RequestFaults
from airflow_batchwork.testing.providers.base import ApiError, ProviderSpec
from airflow_batchwork.testing.store import RequestRecord, Store

__all__ = ["ConnectionDropped", "DropConnection", "FaultMiddleware", "error_for"]

# Closes the client connection of ``scope`` right away and returns an awaitable that ends once the server
# noticed, or None if it cannot (then the middleware falls back). The close happens before anything is
# awaited, so the request is logged before the client can see the error.
DropConnection = Callable[[Scope], Awaitable[None] | None]

_SERVER_ERROR_MESSAGES = {
    500: "The server had an error while processing your request (injected by the batchwork emulator).",
    502: "Bad gateway: the upstream server sent an invalid response (injected by the batchwork emulator).",
    503: "The service is temporarily unavailable; please retry (injected by the batchwork emulator).",
}


@dataclass
class _Sent:
    """The status line sent for a request: 500 until one is sent, 0 if the connection dropped before it."""

    status: int = 500
    recorded: bool = False


_RANGE = re.compile(r"bytes=(\d+)-(\d*)")


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return str(value.decode("latin-1"))
    return None


def ranged(scope: Scope, send: Send) -> Send:
    """Wrap ``send`` so a 200 answer honours the request's single ``Range`` (RFC 9110 sections 14.2-14.4).

    The body is buffered (emulator downloads are small); the wrapped send receives one start and one body."""
    held: list[Message] = []
    chunks: list[bytes] = []

    async def send_ranged(message: Message) -> None:
        if message["type"] == "http.response.start":
            held.append(message)
            return
        if message["type"] != "http.response.body" or not held:
            await send(message)
            return
        chunks.append(message.get("body", b""))
        if message.get("more_body"):
            return
        start, body = held.pop(), b"".join(chunks)
        status = start["status"]
        headers = [(k, v) for k, v in start.get("headers", ()) if k.lower() not in (b"content-length", b"etag")]
        if status != 200:
            await send({**start, "headers": [*headers, (b"content-length", str(len(body)).encode())]})
            await send({"type": "http.response.body", "body": body})
            return
        etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
        headers += [(b"accept-ranges", b"bytes"), (b"etag", etag.encode())]
        wanted = _RANGE.fullmatch((_header(scope, b"range") or "").strip())
        if_range = _header(scope, b"if-range")
        if wanted is not None and (if_range is None or if_range == etag):
            first = int(wanted.group(1))
            last = min(int(wanted.group(2)), len(body) - 1) if wanted.group(2) else len(body) - 1
            if first >= len(body) or last < first:
                status, headers, body = 416, [*headers, (b"content-range", f"bytes */{len(body)}".encode())], b""
            else:
                headers.append((b"content-range", f"bytes {first}-{last}/{len(body)}".encode()))
                status, body = 206, body[first:last + 1]
        await send({**start, "status": status, "headers": [*headers, (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})

    return send_ranged


class ConnectionDropped(ConnectionError):
    """Raised inside the app when a connection must drop but the server gave no way to close it."""


def error_for(fault: str, config: FaultConfig, status: int = 500) -> ApiError:
    """The provider-neutral error answering ``fault``; the provider spec renders its body."""
    if fault == "rate_limit":
        return ApiError(
            429,
            "Rate limit reached for requests (injected by the batchwork emulator). Please try again later.",
            code="rate_limit_exceeded",
            headers={"retry-after": str(config.retry_after_seconds)},
        )
    if fault == "server_error":
        return ApiError(status, _SERVER_ERROR_MESSAGES.get(status, _SERVER_ERROR_MESSAGES[500]))
    if fault == "lose_create_response":
        return ApiError(502, _SERVER_ERROR_MESSAGES[502])
    raise ValueError(f"fault {fault!r} is not answered with an HTTP error")


class FaultMiddleware:
    """ASGI middleware: injects the request's faults and logs every provider request in the store."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        store: Store,
        resolve: Callable[[str], ProviderSpec | None],
        drop: DropConnection | None = None,
    ) -> None:
        self.app = app
        self.store = store
        self.resolve = resolve
        self.drop = drop

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        spec = self.resolve(scope["path"]) if scope["type"] == "http" else None
        if spec is None:
            await self.app(scope, receive, send)
            return
        with self.store.faults.request(spec.name) as context:
            sent = _Sent()
            try:
                await self._serve(spec, context, sent, scope, receive, send)
            finally:
                self._record(spec, context, sent, scope)

    def _record(self, spec: ProviderSpec, context: RequestFaults, sent: _Sent, scope: Scope) -> None:
        """Log the request once (before a drop, so the record exists when the client sees the error)."""
        if not sent.recorded:
            sent.recorded = True
            record = RequestRecord(spec.name, scope["method"], scope["path"], sent.status, context.label)
            self.store.record_request(record)

    async def _serve(
        self, spec: ProviderSpec, context: RequestFaults, sent: _Sent, scope: Scope, receive: Receive, send: Send
    ) -> None:
        config = context.config
        held: Message | None = None  # the response start, held back until the first body chunk (mid-drop)
        dropped = False

        async def faulty_send(message: Message) -> None:
            nonlocal held, dropped
            if dropped:
                return  # the app may keep sending into the closed connection; nobody listens
            if message["type"] == "http.response.start":
                if config.slow_seconds > 0:
                    await asyncio.sleep(config.slow_seconds)
                if context.lose_response:
                    dropped = True
                    closing = self.drop(scope) if self.drop is not None else None
                    if closing is not None:
                        sent.status = 0
                        self._record(spec, context, sent, scope)
                        await closing
                        return
                    # No way to close the socket: the other realistic loss, a 502 after the batch was created.
                    sent.status = 502
                    await spec.error_response(error_for("lose_create_response", config))(scope, receive, send)
                    return
                sent.status = message["status"]
                if context.transport == "drop_connection":
                    held = message
                    return
                await send(message)
            elif message["type"] == "http.response.body" and held is not None:
                start, held = held, None
                body = message.get("body", b"")
                if len(body) < 2:
                    sent.status = 0  # nothing to cut in half: drop before any byte
                else:
                    await send(start)
                    await send({"type": "http.response.body", "body": body[: len(body) // 2], "more_body": True})
                dropped = True
                closing = self.drop(scope) if self.drop is not None else None
                self._record(spec, context, sent, scope)
                if closing is None:
                    raise ConnectionDropped("connection dropped by an injected emulator fault")
                await closing
            else:
                if message["type"] == "http.response.body" and not message.get("more_body"):
                    # Record before the last byte goes out: a client that has its answer finds the record.
                    self._record(spec, context, sent, scope)
                await send(message)

        if context.transport in ("rate_limit", "server_error"):
            error = error_for(context.transport, config, context.server_error_status)
            await spec.error_response(error)(scope, receive, faulty_send)
        elif spec.byte_ranges is not None and spec.byte_ranges(scope):
            await self.app(scope, receive, ranged(scope, faulty_send))
        else:
            await self.app(scope, receive, faulty_send)
