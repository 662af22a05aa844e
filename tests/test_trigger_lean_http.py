"""The triggers' lean status-poll transport (airflow_batchwork/triggers/lean_http.py) over real sockets.

A raw asyncio server stands in for a provider so each test can choose the exact bytes of the answer
(framing, keep-alive, 1xx, cookies, a proxy); the calls go through `ProviderHTTP`, as an adapter's do.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest

from airflow_batchwork.adapters.http import ProviderHTTP, RetryPolicy
from airflow_batchwork.triggers.lean_http import LeanTransport
from airflow_batchwork.values.errors import ProviderAPIError

BODY = json.dumps({"id": "batch_1", "status": "in_progress"}).encode()


def ok(body: bytes = BODY, extra: bytes = b"", status: bytes = b"200 OK") -> bytes:
    return b"HTTP/1.1 %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n%s\r\n%s" % (
        status, len(body), extra, body)


@dataclass
class Seen:
    head: bytes
    body: bytes
    connection: int


@dataclass
class RawServer:
    """Answers each request with `answer(seen, index)` -> (bytes, close the connection after it?)."""

    answer: Callable[[Seen, int], tuple[bytes, bool]]
    seen: list[Seen] = field(default_factory=list)
    connections: int = 0
    port: int = 0

    handlers: set[asyncio.Task[None]] = field(default_factory=set)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.handlers.add(task)
        self.connections += 1
        number = self.connections
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                body = await reader.readexactly(length) if length else b""
                seen = Seen(head, body, number)
                self.seen.append(seen)
                data, close = self.answer(seen, len(self.seen) - 1)
                writer.write(data)
                await writer.drain()
                if close:
                    return
        finally:
            writer.close()


async def finish(http: ProviderHTTP, *servers: tuple[RawServer, asyncio.Server]) -> None:
    """Close the client, then every server and its connection handlers (each sees the client's close)."""
    await http.aclose()
    for raw, server in servers:
        server.close()
        if raw.handlers:
            await asyncio.wait(raw.handlers, timeout=30)


async def started(raw: RawServer) -> asyncio.Server:
    server = await asyncio.start_server(raw.handle, "127.0.0.1", 0)
    raw.port = server.sockets[0].getsockname()[1]
    return server


def http_for(raw: RawServer, transport: LeanTransport) -> ProviderHTTP:
    return ProviderHTTP("openai", f"http://127.0.0.1:{raw.port}/v1", {"authorization": "Bearer sk-test"},
                        transport=transport, retry=RetryPolicy(max_attempts=3, base_delay=0.01))


async def test_polls_reuse_one_keep_alive_connection() -> None:
    raw = RawServer(lambda seen, i: (ok(), False))
    server = await started(raw)
    transport = LeanTransport()
    http = http_for(raw, transport)
    try:
        for _ in range(5):
            response = await http.request("GET", "/batches/batch_1", retry_safe=True)
            assert response.json() == {"id": "batch_1", "status": "in_progress"}
    finally:
        await finish(http, (raw, server))
    assert raw.connections == 1
    assert transport.lean_requests == 5 and transport.fallback_requests == 0
    head = raw.seen[0].head.decode().lower()
    assert head.startswith("get /v1/batches/batch_1 http/1.1\r\n")
    assert "authorization: bearer sk-test\r\n" in head and f"host: 127.0.0.1:{raw.port}\r\n" in head
    assert all(s.head == raw.seen[0].head for s in raw.seen)  # the head built once is the head httpx builds


async def test_chunked_and_close_delimited_answers() -> None:
    chunked = (b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"
               b"5\r\n" + BODY[:5] + b"\r\n" + b"%x\r\n" % len(BODY[5:]) + BODY[5:] + b"\r\n0\r\n\r\n")
    delimited = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\r\n" + BODY
    raw = RawServer(lambda seen, i: (chunked, False) if i == 0 else (delimited, True))
    server = await started(raw)
    transport = LeanTransport()
    http = http_for(raw, transport)
    try:
        first = await http.request("GET", "/batches/batch_1", retry_safe=True)
        second = await http.request("GET", "/batches/batch_1", retry_safe=True)
        third = await http.request("GET", "/batches/batch_1", retry_safe=True)  # a new connection after the close
    finally:
        await finish(http, (raw, server))
    assert first.json() == second.json() == third.json() == json.loads(BODY)
    assert [s.connection for s in raw.seen] == [1, 1, 2]
    assert transport.fallback_requests == 0


async def test_an_answer_it_does_not_take_is_fetched_again_through_httpx() -> None:
    # A 1xx before the answer: the lean parser declines, httpx (which skips informational answers) takes it.
    early = b"HTTP/1.1 103 Early Hints\r\nlink: </x>\r\n\r\n" + ok()
    raw = RawServer(lambda seen, i: (early, False))
    server = await started(raw)
    transport = LeanTransport()
    http = http_for(raw, transport)
    try:
        response = await http.request("GET", "/batches/batch_1", retry_safe=True)
    finally:
        await finish(http, (raw, server))
    assert response.json() == json.loads(BODY)
    assert transport.fallback_requests == 1
    assert len(raw.seen) == 2  # the GET was sent once more, through httpx


async def test_error_answers_keep_retry_after_and_the_error_mapping() -> None:
    too_many = ok(b'{"error": {"code": "rate_limit", "message": "slow"}}', b"retry-after: 0\r\n",
                  b"429 Too Many Requests")
    missing = ok(b'{"error": {"code": "not_found", "message": "no batch"}}', status=b"404 Not Found")

    def answer(seen: Seen, i: int) -> tuple[bytes, bool]:
        if b"/batches/gone" in seen.head:
            return missing, False
        return (too_many if i == 0 else ok()), False

    raw = RawServer(answer)
    server = await started(raw)
    http = http_for(raw, LeanTransport())
    try:
        response = await http.request("GET", "/batches/batch_1", retry_safe=True)
        assert response.json() == json.loads(BODY)
        with pytest.raises(ProviderAPIError) as info:
            await http.request("GET", "/batches/gone", retry_safe=True)
    finally:
        await finish(http, (raw, server))
    assert info.value.status_code == 404 and info.value.code == "not_found"
    assert "no batch" in str(info.value) and "/v1/batches/gone" in str(info.value)
    assert "sk-test" not in str(info.value)


async def test_cookies_an_answer_sets_are_sent_back() -> None:
    def answer(seen: Seen, i: int) -> tuple[bytes, bool]:
        return (ok(extra=b"set-cookie: __cf_bm=abc; Path=/\r\n") if i == 0 else ok()), False

    raw = RawServer(answer)
    server = await started(raw)
    http = http_for(raw, LeanTransport())
    try:
        for _ in range(3):
            await http.request("GET", "/batches/batch_1", retry_safe=True)
    finally:
        await finish(http, (raw, server))
    assert b"cookie:" not in raw.seen[0].head.lower()
    assert all(b"cookie: __cf_bm=abc" in s.head.lower() for s in raw.seen[1:])


async def test_posts_go_through_httpx() -> None:
    raw = RawServer(lambda seen, i: (ok(), False))
    server = await started(raw)
    transport = LeanTransport()
    http = http_for(raw, transport)
    try:
        await http.request("POST", "/batches/batch_1/cancel", retry_safe=True, json={"a": 1})
    finally:
        await finish(http, (raw, server))
    assert raw.seen[0].head.startswith(b"POST /v1/batches/batch_1/cancel ") and raw.seen[0].body == b'{"a":1}'
    assert transport.lean_requests == 0 and transport.fallback_requests == 1


async def test_a_configured_proxy_is_used(monkeypatch: pytest.MonkeyPatch) -> None:
    proxy = RawServer(lambda seen, i: (ok(), False))
    proxy_server = await started(proxy)
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{proxy.port}")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.setenv("http_proxy", f"http://127.0.0.1:{proxy.port}")
    transport = LeanTransport()
    http = ProviderHTTP("openai", "http://api.invalid/v1", {"authorization": "Bearer sk-test"}, transport=transport)
    try:
        response = await http.request("GET", "/batches/batch_1", retry_safe=True)
    finally:
        await finish(http, (proxy, proxy_server))
    assert response.json() == json.loads(BODY)
    assert proxy.seen[0].head.startswith(b"GET http://api.invalid/v1/batches/batch_1 HTTP/1.1")
    assert transport.lean_requests == 0


async def test_a_cancelled_poll_closes_its_connection() -> None:
    answered = asyncio.Event()

    def answer(seen: Seen, i: int) -> tuple[bytes, bool]:
        answered.set()
        return (b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n{", False) if i == 0 else (ok(), False)

    raw = RawServer(answer)
    server = await started(raw)
    http = http_for(raw, LeanTransport())
    try:
        poll = asyncio.create_task(http.request("GET", "/batches/batch_1", retry_safe=True))
        await asyncio.wait_for(answered.wait(), 30)
        poll.cancel()
        with pytest.raises(asyncio.CancelledError):
            await poll
        response = await http.request("GET", "/batches/batch_1", retry_safe=True)
    finally:
        await finish(http, (raw, server))
    assert response.json() == json.loads(BODY)
    assert [s.connection for s in raw.seen] == [1, 2]  # the half-read connection was not reused


async def test_shared_trigger_clients_poll_through_the_lean_transport() -> None:
    """A trigger's shared client polls over the lean path: one connection, every poll counted as lean."""
    from airflow_batchwork.triggers.clients import SHARED_CLIENTS
    from airflow_batchwork.values.credentials import Credentials
    from airflow_batchwork.values.handle import JobHandle

    raw = RawServer(lambda seen, i: (ok(json.dumps({
        "id": "batch_1", "object": "batch", "status": "in_progress",
        "request_counts": {"total": 2, "completed": 1, "failed": 0}}).encode()), False))
    server = await started(raw)
    job = JobHandle.coerce({"version": 1, "provider": "openai", "model": "openai.chat/gpt-4o-mini",
                            "batches": [{"id": "batch_1", "request_count": 2}], "request_count": 2,
                            "conn_id": None, "submitted_at": "2026-12-01T00:00:00Z"})
    try:
        async with SHARED_CLIENTS.client("openai", Credentials("sk-test", f"http://127.0.0.1:{raw.port}/v1")) as client:
            for _ in range(3):
                status = await client.status(job)
                assert (status.state, status.counts.done, status.counts.total) == ("in_progress", 1, 2)
            transport = client.adapter("openai").http._transport
            assert isinstance(transport, LeanTransport) and transport.lean_requests == 3
    finally:
        server.close()
        await asyncio.wait(raw.handlers, timeout=30)
    assert raw.connections == 1 and len(raw.seen) == 3


async def test_a_burst_of_polls_opens_few_connections_at_a_time() -> None:
    """Polls arriving together on an empty pool (the first ones, or after every keep-alive connection
    expired) open at most MAX_CONNECTING connections at a time; every poll is still answered."""
    from airflow_batchwork.triggers.lean_http import MAX_CONNECTING

    polls = 12
    raw = RawServer(lambda seen, i: (ok(), False))
    server = await started(raw)
    loop = asyncio.get_running_loop()
    original = loop.create_connection
    opening = most = 0

    async def counted(*args: object, **kwargs: object) -> object:
        nonlocal opening, most
        opening += 1
        most = max(most, opening)
        try:
            await asyncio.sleep(0.01)  # a connect that takes a moment, as over a network
            return await original(*args, **kwargs)  # type: ignore[arg-type]
        finally:
            opening -= 1

    loop.create_connection = counted  # type: ignore[method-assign]
    http = http_for(raw, LeanTransport())
    try:
        answers = await asyncio.gather(*(http.request("GET", "/batches/batch_1", retry_safe=True)
                                         for _ in range(polls)))
    finally:
        loop.create_connection = original  # type: ignore[method-assign]
        await finish(http, (raw, server))
    assert [a.json() for a in answers] == [json.loads(BODY)] * polls
    assert 1 <= most <= MAX_CONNECTING


async def test_an_answer_that_never_comes_times_out() -> None:
    """The read timeout still ends a poll whose answer never comes (the server reads and says nothing)."""
    raw = RawServer(lambda seen, i: (b"", False))
    server = await started(raw)
    http = ProviderHTTP("openai", f"http://127.0.0.1:{raw.port}/v1", {"authorization": "Bearer sk-test"},
                        transport=LeanTransport(), retry=RetryPolicy(max_attempts=2, base_delay=0.01), timeout=0.2)
    try:
        with pytest.raises(ProviderAPIError) as info:
            await http.request("GET", "/batches/batch_1", retry_safe=True)
    finally:
        await finish(http, (raw, server))
    assert info.value.status_code == 0 and "ReadTimeout" in str(info.value)
    assert len(raw.seen) == 2  # tried twice, each on its own connection (a timed-out one is not reused)
    assert [s.connection for s in raw.seen] == [1, 2]


async def test_answered_polls_leave_no_timer_behind() -> None:
    """A poll's read timeout is no timer of its own: answered polls leave no cancelled timer waiting in the
    loop until its time (each was a GC-tracked object for the read timeout's 120 s)."""
    import gc

    raw = RawServer(lambda seen, i: (ok(), False))
    server = await started(raw)
    http = http_for(raw, LeanTransport())

    def timers() -> int:
        return sum(isinstance(o, asyncio.TimerHandle) for o in gc.get_objects())

    # A sleeping trigger's wake-up, due before any read timeout: what the loop's timer heap holds first.
    sleeping = asyncio.get_running_loop().call_later(60, lambda: None)
    try:
        await http.request("GET", "/batches/batch_1", retry_safe=True)
        before = timers()
        for _ in range(30):
            await http.request("GET", "/batches/batch_1", retry_safe=True)
        after = timers()
    finally:
        sleeping.cancel()
        await finish(http, (raw, server))
    assert after - before <= 1
