"""A lean keep-alive HTTP/1.1 transport for the triggerer's status polls.

Measured (bench/trigger.py under py-spy): most of a poll's CPU went to httpcore's per-request machinery
(expiry checks that ask every pooled socket whether it is readable, anyio stream wrappers, the h11 state
machine). A status poll needs none of it: a small GET, a small answer. `LeanTransport` is an
`httpx.AsyncBaseTransport`, so httpx still builds the request (headers, auth) and reads the response
(content decoding, `.json()`, redirects, status codes), and every retry, error and Retry-After rule of
`adapters/http.py` applies unchanged; only the bytes on the wire go through an `asyncio.Protocol` here.

It serves GET requests without a body over plain TCP or TLS (the shared `ssl` context). Anything else (a
POST such as cancel, a request with a body) goes to an ordinary httpx transport, and so does a GET whose
answer this parser does not take (a 1xx, an HTTP version other than 1.x, malformed framing): a GET is
safe to repeat, so it is sent again through httpx. Where the environment names a proxy for a host
(HTTP(S)_PROXY, ALL_PROXY, NO_PROXY), every request to it goes through httpx's proxy transport. Pure
async throughout: name resolution runs in the loop's executor, as with every asyncio connection.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import contextvars
import re
import ssl
import time
import urllib.request
from typing import Any

import httpx

from airflow_batchwork.adapters.http import shared_ssl_context
from airflow_batchwork.triggers.answer_turns import answer_turn

# An idle keep-alive connection is not reused after this long (servers close theirs after a while).
KEEPALIVE_EXPIRY = 30.0
MAX_CONNECTIONS = 64
# Connections being opened at once per origin. Opening one is ~0.6 ms of the loop's CPU (socket, transport,
# protocol, the futures of asyncio's connect), and a burst of polls on an empty pool (the first polls, or
# every keep-alive connection expired after a pause longer than KEEPALIVE_EXPIRY) opened up to
# MAX_CONNECTIONS in the same loop iteration: ~40 ms in which no other trigger ran (bench/trigger.py
# --trace). The others wait for a connection to be given back or for their turn to open one.
MAX_CONNECTING = 4
MAX_HEAD = 64 * 1024
MAX_BODY = 64 * 1024 * 1024
# The read-timeout watchdog needs no context variables: a shared empty context instead of a copy.
_NO_CONTEXT = contextvars.Context()
# How often a pool with answers under way checks their read deadlines (at most; sooner for a shorter
# timeout). One timer per pool instead of one per poll: a poll's cancelled timer stayed in the loop's heap
# until its time (the 120 s read timeout), a GC-tracked object per recent poll that every young
# collection walked (bench/trigger.py --trace).
WATCH_EVERY = 1.0


# A path and query httpx would send as they are (no character it would percent-encode).
_PLAIN_PATH = re.compile(r"^[A-Za-z0-9._~!$&'()*+,;=:@/?-]*\Z")
# (client, pool, header lines, connect timeout, read timeout) of the GET head built once per origin.
_Head = tuple[httpx.AsyncClient, "_Pool", bytes, float | None, float | None]


class _Unusual(Exception):
    """An answer this parser does not take: the GET is sent again through httpx."""


def _no_body_status(status: int) -> bool:
    return status == 204 or status == 304 or 100 <= status < 200


class _Connection(asyncio.Protocol):
    """One keep-alive connection, one request at a time."""

    def __init__(self, pool: _Pool) -> None:
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.waiter: asyncio.Future[tuple[int, bytes, list[tuple[bytes, bytes]], bytes, bool]] | None = None
        self.closed = False
        self.idle_since = 0.0
        self.used = False
        self.head_only = False
        self.deadline: float | None = None  # loop time by which the answer under way must be in
        # The parse state of the answer under way.
        self._head: tuple[int, bytes, list[tuple[bytes, bytes]], bool] | None = None
        self._length: int | None = None
        self._chunked = False
        self._until_close = False

    # --- asyncio.Protocol ------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if self.waiter is None or self.waiter.done():
            # Bytes nobody asked for (after the answer, or while idle): the connection is in no known state.
            self.close()
            return
        try:
            done = self._parse()
        except _Unusual as exc:
            self._fail(exc)
            return
        if done is not None and not self.waiter.done():
            self.waiter.set_result(done)

    def eof_received(self) -> bool | None:
        if self.waiter is not None and self._until_close and self._head is not None:
            status, reason, headers, _ = self._head
            body = bytes(self.buffer)
            self.buffer.clear()
            if not self.waiter.done():
                self.waiter.set_result((status, reason, headers, body, False))
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.pool.forget(self)
        if self.waiter is not None and not self.waiter.done():
            sent_nothing = self._head is None and not self.buffer
            error: Exception = _Stale() if sent_nothing and self.used else httpx.RemoteProtocolError(
                "Server disconnected without sending a complete response")
            self.waiter.set_exception(error)

    # --- parsing ---------------------------------------------------------------------------------
    def _parse(self) -> tuple[int, bytes, list[tuple[bytes, bytes]], bytes, bool] | None:
        if self._head is None:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(self.buffer) > MAX_HEAD:
                    raise _Unusual("response head too large")
                return None
            head = bytes(self.buffer[:end])
            del self.buffer[:end + 4]
            lines = head.split(b"\r\n")
            parts = lines[0].split(b" ", 2)
            if len(parts) < 2 or parts[0] not in (b"HTTP/1.1", b"HTTP/1.0") or not parts[1].isdigit():
                raise _Unusual("not an HTTP/1.x status line")
            status = int(parts[1])
            if 100 <= status < 200:
                raise _Unusual("informational answer")
            keep_alive = parts[0] == b"HTTP/1.1"
            headers: list[tuple[bytes, bytes]] = []
            length: int | None = None
            chunked = False
            for line in lines[1:]:
                name, sep, value = line.partition(b":")
                if not sep or not name or name != name.strip():
                    raise _Unusual("malformed header line")
                value = value.strip()
                headers.append((name, value))
                lower = name.lower()
                if lower == b"content-length":
                    if not value.isdigit() or (length is not None and int(value) != length):
                        raise _Unusual("bad content-length")
                    length = int(value)
                elif lower == b"transfer-encoding":
                    if value.lower() != b"chunked":
                        raise _Unusual("transfer coding other than chunked")
                    chunked = True
                elif lower == b"connection":
                    tokens = {t.strip() for t in value.lower().split(b",")}
                    if b"close" in tokens:
                        keep_alive = False
                    elif b"keep-alive" in tokens:
                        keep_alive = True
            if self.head_only or _no_body_status(status):
                length, chunked = 0, False
            elif chunked:
                length = None
            elif length is None:
                self._until_close = True
                keep_alive = False
            if length is not None and length > MAX_BODY:
                raise _Unusual("body too large for a status answer")
            self._head = (status, parts[2] if len(parts) > 2 else b"", headers, keep_alive)
            self._length = length
            self._chunked = chunked
        status, reason, headers, keep_alive = self._head
        if self._chunked:
            body = self._dechunk()
            if body is None:
                return None
        elif self._length is not None:
            if len(self.buffer) < self._length:
                return None
            body = bytes(self.buffer[:self._length])
            del self.buffer[:self._length]
        else:  # delimited by the close of the connection: eof_received completes it
            if len(self.buffer) > MAX_BODY:
                raise _Unusual("body too large for a status answer")
            return None
        if self.buffer:  # bytes beyond the answer: not a state to reuse
            keep_alive = False
        return status, reason, headers, body, keep_alive

    def _dechunk(self) -> bytes | None:
        """The whole body once every chunk and the trailer are in the buffer, else None (nothing consumed)."""
        buf = self.buffer
        pos = 0
        pieces: list[bytes] = []
        while True:
            eol = buf.find(b"\r\n", pos)
            if eol < 0:
                if len(buf) - pos > 1024:
                    raise _Unusual("bad chunk size line")
                return None
            size_text = bytes(buf[pos:eol]).split(b";", 1)[0].strip()
            try:
                size = int(size_text, 16)
            except ValueError:
                raise _Unusual("bad chunk size") from None
            if size == 0:
                # Trailer lines, then an empty line.
                end = buf.find(b"\r\n\r\n", eol)
                if eol + 2 <= len(buf) and buf[eol:eol + 4] == b"\r\n\r\n":
                    end = eol
                if end < 0:
                    return None
                del buf[:end + 4]
                return b"".join(pieces)
            start = eol + 2
            if len(buf) < start + size + 2:
                if sum(map(len, pieces)) + size > MAX_BODY:
                    raise _Unusual("body too large for a status answer")
                return None
            if buf[start + size:start + size + 2] != b"\r\n":
                raise _Unusual("bad chunk end")
            pieces.append(bytes(buf[start:start + size]))
            pos = start + size + 2

    # --- use -------------------------------------------------------------------------------------
    def _fail(self, exc: Exception) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(exc)
        self.close()

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    async def exchange(self, head: bytes, read_timeout: float | None, head_only: bool
                       ) -> tuple[int, bytes, list[tuple[bytes, bytes]], bytes, bool]:
        assert self.transport is not None
        loop = asyncio.get_running_loop()
        self.waiter = waiter = loop.create_future()
        self._head, self._length, self._chunked, self._until_close = None, None, False, False
        self.head_only = head_only
        self.transport.write(head)
        if read_timeout is not None:
            self.deadline = loop.time() + read_timeout
            self.pool.watch(loop, read_timeout)
        try:
            return await waiter
        finally:
            self.deadline = None
            self.waiter = None
            self.used = True

    def _timed_out(self, waiter: asyncio.Future[Any]) -> None:
        if not waiter.done():
            waiter.set_exception(httpx.ReadTimeout("timed out waiting for the status answer"))
        self.close()


class _Stale(Exception):
    """A reused keep-alive connection closed by the server before our request reached it."""


class _Pool:
    """Idle connections of one origin, at most `limit` open at a time."""

    def __init__(self, scheme: str, host: str, port: int, limit: int, ssl_context: ssl.SSLContext | None) -> None:
        self.scheme, self.host, self.port = scheme, host, port
        self.ssl_context = ssl_context
        self.idle: collections.deque[_Connection] = collections.deque()
        self.proxy = proxy_for(f"{scheme}://{host}:{port}")
        self.slots = asyncio.Semaphore(limit)
        self.connecting = asyncio.Semaphore(MAX_CONNECTING)
        self.open: set[_Connection] = set()
        self._watchdog: asyncio.TimerHandle | None = None

    def watch(self, loop: asyncio.AbstractEventLoop, read_timeout: float) -> None:
        """Make sure the read deadlines are checked within `read_timeout` (see WATCH_EVERY)."""
        if self._watchdog is None or self._watchdog.when() > loop.time() + read_timeout:
            if self._watchdog is not None:
                self._watchdog.cancel()
            self._watchdog = loop.call_later(min(WATCH_EVERY, read_timeout), self._check_deadlines, loop,
                                             context=_NO_CONTEXT)

    def _check_deadlines(self, loop: asyncio.AbstractEventLoop) -> None:
        self._watchdog = None
        now, soonest = loop.time(), None
        for conn in list(self.open):
            deadline, waiter = conn.deadline, conn.waiter
            if deadline is None or waiter is None or waiter.done():
                continue
            if now >= deadline:
                conn._timed_out(waiter)
            elif soonest is None or deadline < soonest:
                soonest = deadline
        if soonest is not None:  # answers still under way: check again by the soonest deadline
            self._watchdog = loop.call_later(min(WATCH_EVERY, soonest - now), self._check_deadlines, loop,
                                             context=_NO_CONTEXT)

    def forget(self, conn: _Connection) -> None:
        self.open.discard(conn)
        with contextlib.suppress(ValueError):
            self.idle.remove(conn)

    async def connect(self, timeout: float | None) -> _Connection:
        loop = asyncio.get_running_loop()
        conn = _Connection(self)
        tls = self.ssl_context if self.scheme == "https" else None
        try:
            async with asyncio.timeout(timeout):
                await loop.create_connection(lambda: conn, self.host, self.port, ssl=tls,
                                             server_hostname=self.host if tls else None)
        except TimeoutError:
            raise httpx.ConnectTimeout(f"connecting to {self.host}:{self.port} timed out") from None
        except OSError as exc:
            raise httpx.ConnectError(str(exc)) from None
        self.open.add(conn)
        return conn

    async def connection(self, timeout: float | None) -> _Connection:
        """An idle connection, else a new one, at most `MAX_CONNECTING` being opened at a time."""
        conn = self.take_idle()
        if conn is not None:
            return conn
        async with self.connecting:
            # One may have been given back while this waited for its turn.
            return self.take_idle() or await self.connect(timeout)

    def take_idle(self) -> _Connection | None:
        now = time.monotonic()
        while self.idle:
            conn = self.idle.pop()  # the most recently used: the likeliest to be alive
            if not conn.closed and not conn.buffer and now - conn.idle_since < KEEPALIVE_EXPIRY:
                return conn
            conn.close()
        return None

    def give_back(self, conn: _Connection) -> None:
        conn.idle_since = time.monotonic()
        self.idle.append(conn)

    def close(self) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        for conn in list(self.open):
            conn.close()
        self.idle.clear()
        self.open.clear()


class LeanTransport(httpx.AsyncBaseTransport):
    """GET without a body over a small keep-alive pool; anything else through `fallback`."""

    def __init__(self, fallback: httpx.AsyncBaseTransport | None = None, *, max_connections: int = MAX_CONNECTIONS,
                 ssl_context: ssl.SSLContext | None = None) -> None:
        self._fallback = fallback
        self._max_connections = max_connections
        self._ssl_context = ssl_context
        self._pools: dict[tuple[str, str, int], _Pool] = {}
        self._proxied: dict[str, httpx.AsyncBaseTransport] = {}
        self._heads: dict[tuple[int, str, str], _Head] = {}
        self.lean_requests = 0
        self.fallback_requests = 0

    @property
    def fallback(self) -> httpx.AsyncBaseTransport:
        if self._fallback is None:
            self._fallback = httpx.AsyncHTTPTransport(verify=self._ssl_context or shared_ssl_context())
        return self._fallback

    def _pool(self, url: httpx.URL) -> _Pool:
        scheme = url.scheme
        port = url.port or (443 if scheme == "https" else 80)
        key = (scheme, url.host, port)
        pool = self._pools.get(key)
        if pool is None:
            context = (self._ssl_context or shared_ssl_context()) if scheme == "https" else None
            pool = self._pools[key] = _Pool(scheme, url.host, port, self._max_connections, context)
        return pool

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.scheme not in ("http", "https"):
            self.fallback_requests += 1
            return await self.fallback.handle_async_request(request)
        pool = self._pool(request.url)
        if pool.proxy is not None:
            self.fallback_requests += 1
            return await self._via_proxy(pool.proxy).handle_async_request(request)
        if request.method not in ("GET", "HEAD") or "content-length" in request.headers \
                or "transfer-encoding" in request.headers:
            self.fallback_requests += 1
            return await self.fallback.handle_async_request(request)
        try:
            response = await self._lean(request, pool)
        except _Unusual:
            self.fallback_requests += 1
            return await self.fallback.handle_async_request(request)
        self.lean_requests += 1
        return response

    def _via_proxy(self, proxy: str) -> httpx.AsyncBaseTransport:
        transport = self._proxied.get(proxy)
        if transport is None:
            transport = self._proxied[proxy] = httpx.AsyncHTTPTransport(
                verify=self._ssl_context or shared_ssl_context(), proxy=proxy)
        return transport

    async def fast_get(self, client: httpx.AsyncClient, url: str) -> httpx.Response | None:
        """GET `url` as `client.send(client.build_request("GET", url))` would, without httpx's per-request
        machinery: the request head is built by httpx once per origin and reused while the client holds
        no cookies (with cookies, httpx builds every head, so the Cookie header stays exact), and cookies
        an answer sets go into the client's jar. None: not for this path (the caller uses httpx); an answer
        the parser does not take is fetched again through httpx's transport."""
        origin, _, rest = url.partition("://")
        host, _, path = rest.partition("/")
        key = (id(client), origin, host)
        cached = None if client.cookies.jar else self._heads.get(key)
        if cached is not None and cached[0] is not client:
            cached = None
        request: httpx.Request | None = None
        if cached is None or not _PLAIN_PATH.match(path):
            request = client.build_request("GET", url)
            if request.url.scheme not in ("http", "https") or "content-length" in request.headers:
                return None
            pool = self._pool(request.url)
            if pool.proxy is not None:
                return None
            lines = b"".join(b"%s: %s\r\n" % (name, value) for name, value in request.headers.raw)
            timeout = request.extensions.get("timeout", {})
            cached = (client, pool, lines, timeout.get("connect"), timeout.get("read"))
            if not client.cookies.jar:
                self._heads[key] = cached
        _, pool, lines, connect_timeout, read_timeout = cached
        head = b"GET /%s HTTP/1.1\r\n%s\r\n" % (path.encode("ascii", "strict"), lines) if request is None else \
            b"GET %s HTTP/1.1\r\n%s\r\n" % (request.url.raw_path, lines)
        try:
            response = await self._exchange(pool, head, connect_timeout, read_timeout, head_only=False)
        except _Unusual:
            # Sent again through httpx's own transport, handled as `client.send` would.
            self.fallback_requests += 1
            request = request or client.build_request("GET", url)
            response = await self.fallback.handle_async_request(request)
            response.request = request
            client.cookies.extract_cookies(response)
            await response.aread()
            return response
        self.lean_requests += 1
        if response.status_code >= 400 or "set-cookie" in response.headers:
            response.request = request or client.build_request("GET", url)
            client.cookies.extract_cookies(response)
        response.read()
        return response

    async def _lean(self, request: httpx.Request, pool: _Pool) -> httpx.Response:
        timeouts = request.extensions.get("timeout", {})
        url = request.url
        target = url.raw_path
        head = b"".join([request.method.encode(), b" ", target, b" HTTP/1.1\r\n",
                         *(b"%s: %s\r\n" % (name, value) for name, value in request.headers.raw), b"\r\n"])
        response = await self._exchange(pool, head, timeouts.get("connect"), timeouts.get("read"),
                                        head_only=request.method == "HEAD")
        response.request = request
        return response

    async def _exchange(self, pool: _Pool, head: bytes, connect_timeout: float | None, read_timeout: float | None,
                        *, head_only: bool) -> httpx.Response:
        async with pool.slots:
            for _ in range(2):
                conn = await pool.connection(connect_timeout)
                try:
                    status, reason, headers, body, keep_alive = await conn.exchange(head, read_timeout, head_only)
                except _Stale:
                    continue  # the server closed it while idle: once more on a fresh connection
                except BaseException:
                    conn.close()  # cancelled or failed mid-answer: its state is unknown
                    raise
                if keep_alive and not conn.closed:
                    pool.give_back(conn)
                else:
                    conn.close()
                break
            else:
                raise httpx.RemoteProtocolError("Server disconnected without sending a response")
        # The connection is back in the pool; the answer is handled at its turn (triggers/answer_turns.py).
        await answer_turn()
        return httpx.Response(status, headers=headers, stream=httpx.ByteStream(body),
                              extensions={"http_version": b"HTTP/1.1", "reason_phrase": reason})

    async def aclose(self) -> None:
        for pool in self._pools.values():
            pool.close()
        self._pools.clear()
        self._heads.clear()
        for transport in [self._fallback, *self._proxied.values()]:
            if transport is not None:
                await transport.aclose()
        self._fallback = None
        self._proxied.clear()


def proxy_for(url: str) -> str | None:
    """The proxy the environment routes `url` through (HTTP(S)_PROXY, ALL_PROXY, NO_PROXY), or None."""
    parts = httpx.URL(url)
    proxies = urllib.request.getproxies()
    proxy = proxies.get(parts.scheme) or proxies.get("all")
    if not proxy or urllib.request.proxy_bypass(parts.host):
        return None
    return proxy
