"""Fault injection over real sockets: storms, lost create answers, triggerer restarts, broken result
lines, interrupted collects. Nothing paid twice, no row lost or duplicated."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pyarrow.parquet as pq
import pytest

from airflow_batchwork.adapters.http import RetryPolicy
from airflow_batchwork.core import BatchClient, BatchworkError, Credentials, ProviderAPIError
from airflow_batchwork.engine.ledger import FsspecLedger, MemoryLedger
from airflow_batchwork.testing import Emulator
from airflow_batchwork.testing.airflow_env import connection_env
from airflow_batchwork.testing.faults import FaultConfig
from airflow_batchwork.triggers.batch import BatchCompleteTrigger
from tests.airflow_helpers import load_dag, task_states, xcom

MODELS = {
    "openai": "openai/gpt-4o-mini",
    "anthropic": "anthropic/claude-haiku-4-5",
    "google": "google/gemini-2.5-flash",
    "groq": "groq/llama-3.3-70b-versatile",
    "mistral": "mistral/mistral-small-latest",
    "together": "together/meta-llama/Llama-3.3-70B-Instruct-Turbo",
    "xai": "xai/grok-4",
}
# Providers whose batches carry our identity (metadata, display name or batch name) and can be listed.
FINDABLE = {"openai", "groq", "mistral", "google", "xai"}
REQUESTS = [{"custom_id": f"r{i:02d}", "prompt": f"item {i}"} for i in range(12)]


def client(emu: Emulator, provider: str) -> BatchClient:
    return BatchClient({provider: Credentials("k", emu.base_url(provider))})


@pytest.fixture
def emu() -> Iterator[Emulator]:
    with Emulator(processing_seconds=0.4) as emulator:
        yield emulator


@pytest.mark.parametrize("provider", sorted(MODELS))
async def test_lost_create_answer(emu: Emulator, provider: str) -> None:
    """The provider created the batch but the answer never arrived (the ambiguous submit): resolved by a
    provider-side lookup in the same try (identity tags; Anthropic: request count and creation window;
    Together: the recorded input file), so exactly one batch exists and a repeated submit re-attaches."""
    ledger = MemoryLedger()
    emu.faults = FaultConfig(lose_create_response_every=1, providers=provider)
    async with client(emu, provider) as c:
        job = await c.submit(MODELS[provider], REQUESTS[:3], ledger=ledger, identity=f"lost-{provider}")
        assert len(emu.batches(provider)) == 1
        assert job.batch_ids == [emu.batches(provider)[0].id]
        emu.faults = FaultConfig()
        again = await c.submit(MODELS[provider], REQUESTS[:3], ledger=ledger, identity=f"lost-{provider}")
        assert again.batch_ids == job.batch_ids and len(emu.batches(provider)) == 1


@pytest.mark.parametrize("provider", sorted(set(MODELS) - FINDABLE))
async def test_unfindable_orphan_can_fail_instead(emu: Emulator, provider: str) -> None:
    """An intent with no batch at the provider: `on_orphaned_intent="fail"` refuses to create again."""
    ledger = MemoryLedger()
    ledger.write({"identity": "orphan", "fingerprint": None, "model": MODELS[provider], "shards": []})
    async with client(emu, provider) as c:
        job = c.prepare(MODELS[provider], REQUESTS[:3])
        fingerprint = job.fingerprint
        job.close()
        ledger.write({"identity": "orphan", "fingerprint": fingerprint, "model": MODELS[provider],
                      "shards": [{"index": 0, "status": "intent", "request_count": 3, "intent_at": time.time()}]})
        with pytest.raises(BatchworkError, match="cannot be found"):
            await c.submit(MODELS[provider], REQUESTS[:3], ledger=ledger, identity="orphan",
                           on_orphaned_intent="fail")
        assert emu.batches(provider) == []


@pytest.fixture
def dag_emu(airflow_db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Emulator]:
    monkeypatch.setenv("AIRFLOW_VAR_BATCHWORK_TEST_OUTPUT", f"file://{tmp_path}")
    with Emulator(processing_seconds=0.5) as emulator:
        for key, value in connection_env(emulator).items():
            monkeypatch.setenv(key, value)
        yield emulator


def test_storm_one_in_three_dag_succeeds(dag_emu: Emulator, tmp_path: Path) -> None:
    dag_emu.faults = FaultConfig(rate_limit_every=3, server_error_every=4, retry_after_seconds=0)
    run = load_dag("test_fault_storm").test()
    assert task_states(run) == {"submit": "success", "collect": "success"}
    assert len(dag_emu.batches("openai")) == 1
    manifest = xcom(run, "collect")
    assert manifest["rows"] == 12 and manifest["counts"] == {"succeeded": 12}
    assert sum(dag_emu.fault_counts("openai").get("openai", {}).values()) >= 3


async def test_triggerer_restart_mid_poll(emu: Emulator, monkeypatch: pytest.MonkeyPatch) -> None:
    # The emulator's clock stands still until the first trigger is gone: no wall-clock margin.
    released, frozen = [False], time.time()
    emu.clock = lambda: time.time() + 3600 if released[0] else frozen
    async with client(emu, "openai") as c:
        job = await c.submit(MODELS["openai"], REQUESTS)
    for key, value in connection_env(emu).items():
        monkeypatch.setenv(key, value)
    first = BatchCompleteTrigger(job=job.to_dict(), poll_interval=0.1, end_time=time.time() + 60)
    running = asyncio.ensure_future(anext(first.run()))
    polled = [r for r in emu.requests if r.method == "GET" and r.path.endswith(job.batch_ids[0])]
    for _ in range(600):  # until it has polled at least once (event-driven, up to 60 s)
        if polled:
            break
        await asyncio.sleep(0.1)
        polled = [r for r in emu.requests if r.method == "GET" and r.path.endswith(job.batch_ids[0])]
    assert polled and not running.done()
    running.cancel()  # the triggerer process goes away mid-poll
    released[0] = True
    _, kwargs = first.serialize()
    events = [e async for e in BatchCompleteTrigger(**kwargs).run()]
    assert [e.payload["status"] for e in events] == ["completed"]
    assert events[0].payload["counts"]["succeeded"] == 12 and events[0].payload["counts"]["total"] == 12


@pytest.mark.parametrize("provider", ["openai", "anthropic", "together"])
async def test_broken_result_lines_become_errored_rows(emu: Emulator, tmp_path: Path, provider: str) -> None:
    ledger = FsspecLedger(f"file://{tmp_path}/state", f"broken-{provider}")
    async with client(emu, provider) as c:
        job = await c.submit(MODELS[provider], REQUESTS, ledger=ledger, identity=f"broken-{provider}")
        await c.wait(job, poll_interval=0.1, timeout=60)
        emu.faults = FaultConfig(truncate_results_every=4, malformed_results_every=5, providers=provider)
        manifest = await c.write_parquet(job, f"{tmp_path}/out.parquet")
    rows = pq.read_table(tmp_path / "out.parquet").to_pylist()
    assert sorted(r["custom_id"] for r in rows) == [r["custom_id"] for r in REQUESTS]  # one row per request
    broken = [r for r in rows if r["error_code"] == "parse_error"]
    assert broken and all(r["status"] == "errored" and "could not be read" in r["error_message"] for r in broken)
    assert sum(r["status"] == "succeeded" for r in rows) >= 12 - 3 - 3
    assert set(manifest["counts"]) <= {"succeeded", "errored", "missing"}


async def test_interrupted_collect_then_retry(emu: Emulator, tmp_path: Path) -> None:
    async with client(emu, "openai") as c:
        job = await c.submit(MODELS["openai"], REQUESTS, limits={"max_requests": 4})
        await c.wait(job, poll_interval=0.1, timeout=60)
        await c.write_parquet(job, f"{tmp_path}/out/")  # an earlier, complete collect
        before = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "out").iterdir()}
        # A client without retries: the 4th call (after one part was written) is cut mid-answer and ends
        # the collect (with the default policy a dropped call is retried and a download resumed).
        emu.faults = FaultConfig(drop_connection_every=4, providers="openai")
        async with BatchClient({"openai": Credentials("k", emu.base_url("openai"))},
                               retry=RetryPolicy(max_attempts=1)) as fragile:
            with pytest.raises((ProviderAPIError, httpx.TransportError)):
                await fragile.write_parquet(job, f"{tmp_path}/out/")
        # Nothing half-written is visible, and the earlier complete result is untouched.
        assert {p.name: p.stat().st_mtime_ns for p in (tmp_path / "out").iterdir()} == before
        emu.faults = FaultConfig()
        manifest = await c.write_parquet(job, f"{tmp_path}/out/")
    ids = pq.read_table(tmp_path / "out").column("custom_id").to_pylist()
    assert sorted(ids) == [r["custom_id"] for r in REQUESTS] and manifest["rows"] == 12
