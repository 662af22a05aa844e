"""Emulator core: the echo model, the state store, faults, the server lifecycle and the CLI."""

from __future__ import annotations

import math
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import anthropic
import httpx
import openai
import psutil
import pytest

from airflow_batchwork.testing import Emulator, echo
from airflow_batchwork.testing.faults import FaultConfig
from airflow_batchwork.testing.store import BatchView, Item, ItemResult, Outcome, Renderer, Store

REPO_ROOT = Path(__file__).resolve().parents[1]


# -- echo model ------------------------------------------------------------------------------------


def test_echo_replies_to_the_last_user_message() -> None:
    reply = echo.generate(
        [
            {"role": "user", "content": "first question"},
            {"role": "assistant", "content": "an answer"},
            {"role": "user", "content": "what now"},
        ],
        system="you are terse",
    )
    assert reply.text == "echo: what now"
    assert reply.input_tokens == 3 + 2 + 2 + 2
    assert reply.output_tokens == 3
    assert reply.total_tokens == 12
    assert not reply.truncated


def test_echo_reads_text_parts_and_ignores_other_parts() -> None:
    content = [
        {"type": "text", "text": "look at"},
        {"type": "image_url", "image_url": {"url": "http://x"}},
        {"type": "input_text", "text": "this"},
    ]
    assert echo.content_text(content) == "look at\nthis"
    assert echo.content_text(None) == ""
    assert echo.generate([{"role": "user", "content": content}]).text == "echo: look at\nthis"
    assert echo.generate([{"role": "system", "content": "only system"}]).text == "echo: "


def test_echo_truncates_to_max_tokens() -> None:
    reply = echo.generate([{"role": "user", "content": "a b c d"}], max_tokens=3)
    assert (reply.text, reply.output_tokens, reply.truncated) == ("echo: a b", 3, True)
    exact = echo.generate([{"role": "user", "content": "a b"}], max_tokens=3)
    assert (exact.text, exact.truncated) == ("echo: a b", False)


def test_count_words() -> None:
    assert echo.count_words("a  b\n c", "", "d") == 4


def test_embedding_is_a_deterministic_unit_vector() -> None:
    vector = echo.embed("hello")
    assert len(vector) == echo.DEFAULT_EMBEDDING_DIMENSIONS == 8
    assert all(isinstance(v, float) for v in vector)
    assert math.isclose(math.fsum(v * v for v in vector), 1.0, rel_tol=1e-12)
    assert echo.embed("hello") == vector
    assert echo.embed("hello!") != vector
    wide = echo.embed("hello", dimensions=1536)
    assert len(wide) == 1536 and math.isclose(math.fsum(v * v for v in wide), 1.0, rel_tol=1e-12)
    assert echo.embed("x", dimensions=1) in ([1.0], [-1.0])
    with pytest.raises(ValueError):
        echo.embed("x", dimensions=0)


def test_find_marker_searches_every_string_in_priority_order() -> None:
    assert echo.find_marker({"messages": [{"role": "user", "content": "plain"}]}) is None
    assert (
        echo.find_marker({"messages": [{"content": [{"type": "text", "text": "x [[expire]]"}]}]}) == "expire"
    )
    assert echo.find_marker({"system": "[[expire]]", "prompt": "[[error]]"}) == "error"
    assert echo.find_marker("[[invalid]]", markers=("invalid", *echo.MARKERS)) == "invalid"
    assert echo.marker_token("error") == "[[error]]"


# -- store -----------------------------------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


def _render_counting(calls: list[str]) -> Renderer:
    def render(item: Item, outcome: Outcome) -> ItemResult:
        calls.append(item.custom_id)
        return ItemResult(item.custom_id, outcome, {"custom_id": item.custom_id, "outcome": outcome})

    return render


def _get(store: Store, batch_id: str) -> BatchView:
    view = store.get_batch("p", batch_id)
    assert view is not None
    return view


def test_store_lifecycle_is_computed_from_the_clock() -> None:
    clock = FakeClock()
    store = Store(processing_seconds=10.0, clock=clock)
    calls: list[str] = []
    items = [("a", {"p": "x"}), ("b", {"p": "[[error]] x"}), ("c", {"p": "[[expire]]"})]
    view = store.create_batch("p", endpoint="/e", items=items, render=_render_counting(calls), model="m")
    assert view.phase == "validating" and view.counts.processing == 3
    assert view.id.startswith("batch_")

    clock.now += 1.5
    view = _get(store, view.id)
    assert view.phase == "in_progress" and view.in_progress_at == 1_001.0
    clock.now = 1_000 + 9.5
    view = _get(store, view.id)
    assert view.phase == "finalizing"
    assert (view.counts.succeeded, view.counts.errored, view.counts.processing) == (1, 1, 1)
    assert view.results is None and calls == []

    clock.now = 1_000 + 10.0
    view = _get(store, view.id)
    assert view.phase == "expired" and view.terminal
    assert view.ended_at == 1_010.0
    assert view.results is not None
    assert [r.outcome for r in view.results] == ["succeeded", "errored", "expired"]
    store.get_batch("p", view.id)
    assert calls == ["a", "b", "c"]  # rendered exactly once
    assert store.get_batch("other", view.id) is None


def test_store_cancel_and_end_hook() -> None:
    clock = FakeClock()
    store = Store(processing_seconds=10.0, clock=clock)
    ended: list[str] = []

    def on_end(view: BatchView) -> dict[str, str]:
        ended.append(view.id)
        return {"output": "file-1"}

    items: list[tuple[str, dict[str, str]]] = [(f"r{i}", {}) for i in range(4)]
    view = store.create_batch("p", endpoint="/e", items=items, render=_render_counting([]), on_end=on_end)
    clock.now += 1.0 + 8.0 * 2 / 4  # half of the items are done
    cancelled = store.cancel_batch("p", view.id)
    assert cancelled is not None
    view = cancelled
    assert view.phase == "cancelling" and view.cancel_requested_at == clock.now
    clock.now += 5.0
    view = _get(store, view.id)
    assert view.phase == "cancelled"
    assert [r.outcome for r in view.results or ()] == ["succeeded", "succeeded", "canceled", "canceled"]
    assert (view.counts.succeeded, view.counts.canceled) == (2, 2)
    assert view.extra["output"] == "file-1" and ended == [view.id]
    assert store.cancel_batch("p", view.id).phase == "cancelled"  # type: ignore[union-attr]


def test_store_ids_are_monotonic_and_prefixed() -> None:
    store = Store()
    ids = [store.new_id("msgbatch_") for _ in range(20)]
    assert all(i.startswith("msgbatch_") for i in ids)
    assert ids == sorted(ids) and len(set(ids)) == 20
    assert Store().new_id("x") != store.new_id("x")


# -- server lifecycle ----------------------------------------------------------------------------


@pytest.fixture
def emu() -> Iterator[Emulator]:
    with Emulator(processing_seconds=0.2) as emulator:
        yield emulator


def test_binds_loopback_on_a_free_port(emu: Emulator) -> None:
    assert emu.url == f"http://127.0.0.1:{emu.port}"
    assert emu.base_url("openai") == f"http://127.0.0.1:{emu.port}/openai/v1"
    assert emu.base_url("anthropic") == f"http://127.0.0.1:{emu.port}/anthropic"
    listening = {
        c.laddr for c in psutil.Process().net_connections(kind="tcp") if c.status == psutil.CONN_LISTEN
    }
    assert ("127.0.0.1", emu.port) in listening
    assert httpx.get(emu.url + "/").json()["providers"]["openai"] == emu.base_url("openai")


def test_unknown_provider_lists_the_known_ones(emu: Emulator) -> None:
    with pytest.raises(ValueError, match="openai, anthropic"):
        emu.base_url("nope")
    assert set(emu.providers) >= {"openai", "anthropic"}


def test_stop_releases_the_port_and_is_idempotent() -> None:
    emulator = Emulator().start()
    port = emulator.port
    assert emulator.running
    emulator.stop()
    emulator.stop()
    assert not emulator.running
    with pytest.raises(RuntimeError):
        _ = emulator.port
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", port))


def test_processing_seconds_is_settable_at_runtime(emu: Emulator) -> None:
    emu.processing_seconds = 3.0
    assert emu.store.processing_seconds == 3.0
    with pytest.raises(ValueError):
        emu.processing_seconds = -1


def test_the_clock_is_settable_at_runtime() -> None:
    clock = FakeClock()
    with Emulator(processing_seconds=100) as emulator:
        sdk = openai.OpenAI(base_url=emulator.base_url("openai"), api_key="k", max_retries=0)
        emulator.clock = clock
        assert emulator.clock is clock and emulator.store.clock is clock
        line = b'{"custom_id":"a","method":"POST","url":"/v1/chat/completions","body":{"model":"m","messages":[]}}'
        upload = sdk.files.create(file=("in.jsonl", line + b"\n"), purpose="batch")
        batch = sdk.batches.create(input_file_id=upload.id, endpoint="/v1/chat/completions", completion_window="24h")
        assert batch.created_at == 1_000
        clock.now += 101  # past the batch's end by the emulator's clock, not the wall clock
        assert sdk.batches.retrieve(batch.id).status == "completed"
        with pytest.raises(TypeError, match="clock must be a callable"):
            emulator.clock = 5.0  # type: ignore[assignment]


def test_a_clock_may_look_at_the_batch_ids() -> None:
    with Emulator(processing_seconds=100) as emulator:
        # Ends every batch once two exist: the ids are read without a snapshot, which would ask this clock.
        emulator.clock = lambda: time.time() + (200 if len(emulator.batch_ids("openai")) >= 2 else 0)
        sdk = openai.OpenAI(base_url=emulator.base_url("openai"), api_key="k", max_retries=0)
        line = b'{"custom_id":"a","method":"POST","url":"/v1/chat/completions","body":{"model":"m","messages":[]}}'
        upload = sdk.files.create(file=("in.jsonl", line + b"\n"), purpose="batch")
        first = sdk.batches.create(input_file_id=upload.id, endpoint="/v1/chat/completions", completion_window="24h")
        assert sdk.batches.retrieve(first.id).status != "completed"
        second = sdk.batches.create(input_file_id=upload.id, endpoint="/v1/chat/completions", completion_window="24h")
        assert emulator.batch_ids() == emulator.batch_ids("openai") == [first.id, second.id]
        assert emulator.batch_ids("anthropic") == []
        assert sdk.batches.retrieve(first.id).status == "completed"


def test_requests_are_logged_with_provider_and_status(emu: Emulator) -> None:
    client = openai.OpenAI(base_url=emu.base_url("openai"), api_key="k", max_retries=0)
    client.batches.list()
    with pytest.raises(openai.NotFoundError):
        client.batches.retrieve("batch_missing")
    assert [(r.provider, r.method, r.path, r.status_code) for r in emu.requests] == [
        ("openai", "GET", "/openai/v1/batches", 200),
        ("openai", "GET", "/openai/v1/batches/batch_missing", 404),
    ]


# -- faults ----------------------------------------------------------------------------------------


def test_rate_limit_every_nth_request_is_a_provider_shaped_429() -> None:
    with Emulator(faults=FaultConfig(rate_limit_every=2)) as emu:
        url = emu.base_url("openai") + "/batches"
        headers = {"Authorization": "Bearer k"}
        statuses = [httpx.get(url, headers=headers) for _ in range(4)]
        assert [r.status_code for r in statuses] == [200, 429, 200, 429]
        limited = statuses[1]
        assert limited.headers["retry-after"] == "1"
        assert limited.headers["x-request-id"]
        assert limited.json()["error"]["code"] == "rate_limit_exceeded"
        assert [r.fault for r in emu.requests] == [None, "rate_limit", None, "rate_limit"]

        claude = anthropic.Anthropic(base_url=emu.base_url("anthropic"), api_key="k", max_retries=0)
        claude.messages.batches.list()
        with pytest.raises(anthropic.RateLimitError) as info:
            claude.messages.batches.list()
        assert info.value.body["error"]["type"] == "rate_limit_error"  # type: ignore[index]
        assert info.value.response.headers["retry-after"] == "1"

        no_retry = openai.OpenAI(base_url=emu.base_url("openai"), api_key="k", max_retries=0)
        no_retry.batches.list()  # 5th openai request: counters are per provider
        with pytest.raises(openai.RateLimitError):
            no_retry.batches.list()


def test_sdk_retries_through_an_injected_429() -> None:
    with Emulator(faults=FaultConfig(rate_limit_every=1)) as emu:
        client = openai.OpenAI(base_url=emu.base_url("openai"), api_key="k", max_retries=1)
        started = time.monotonic()
        with pytest.raises(openai.RateLimitError):
            client.batches.list()
        assert time.monotonic() - started >= 0.9  # honoured Retry-After: 1 before the retry
        emu.faults = FaultConfig()
        assert client.batches.list().data == []


def test_server_error_every_nth_request() -> None:
    with Emulator(faults=FaultConfig(server_error_every=1)) as emu:
        response = httpx.get(emu.base_url("anthropic") + "/v1/messages/batches", headers={"x-api-key": "k"})
        assert response.status_code == 500
        assert response.json()["error"]["type"] == "api_error"


# -- CLI -------------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_cli_serves_and_prints_base_urls() -> None:
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")])}
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "airflow_batchwork.testing.emulator",
            "--port",
            str(port),
            "--processing-seconds",
            "0.1",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        cwd=REPO_ROOT,
    )
    try:
        assert process.stdout is not None
        wanted = [f"http://127.0.0.1:{port}/openai/v1", f"http://127.0.0.1:{port}/anthropic"]
        lines: list[str] = []
        deadline = time.monotonic() + 30
        while not all(url in "\n".join(lines) for url in wanted) and time.monotonic() < deadline:
            line = process.stdout.readline()
            if not line:
                break
            lines.append(line.rstrip())
        output = "\n".join(lines)
        assert f"http://127.0.0.1:{port}/openai/v1" in output, output
        assert f"http://127.0.0.1:{port}/anthropic" in output, output
        assert re.search(r"processing_seconds=0\.1", output), output
        response = httpx.get(
            f"http://127.0.0.1:{port}/openai/v1/batches", headers={"Authorization": "Bearer k"}
        )
        assert response.status_code == 200
    finally:
        process.terminate()
        try:
            returncode = process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            raise
        finally:
            if process.stdout is not None:
                process.stdout.close()
    assert returncode == 0
