"""BatchCompleteTrigger on its own: serialization, one terminal event, timeout → cancel, faults."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
from airflow.triggers.base import TriggerEvent

from airflow_batchwork.core import BatchClient, Credentials, JobHandle
from airflow_batchwork.testing import Emulator
from airflow_batchwork.testing.airflow_env import EMULATOR_API_KEY, connection_env
from airflow_batchwork.testing.faults import FaultConfig
from airflow_batchwork.triggers.batch import BatchCompleteTrigger


@pytest.fixture
def emu(monkeypatch: pytest.MonkeyPatch) -> Iterator[Emulator]:
    with Emulator(processing_seconds=0.6) as emulator:
        for key, value in connection_env(emulator).items():
            monkeypatch.setenv(key, value)
        yield emulator


async def submit(emulator: Emulator, provider: str = "openai", n: int = 2) -> JobHandle:
    model = {"openai": "openai/gpt-4o-mini", "anthropic": "anthropic/claude"}[provider]
    creds = {provider: Credentials(EMULATOR_API_KEY, emulator.base_url(provider))}
    async with BatchClient(creds) as client:
        return await client.submit(model, [{"prompt": f"p{i}"} for i in range(n)])


async def all_events(trigger: BatchCompleteTrigger) -> list[TriggerEvent]:
    return [event async for event in trigger.run()]


def test_serialize_round_trip_has_no_secret() -> None:
    job = {"provider": "openai", "model": "openai.chat/m", "batches": [{"id": "batch_1", "request_count": 2}],
           "request_count": 2, "conn_id": "batchwork_openai"}
    trigger = BatchCompleteTrigger(job=job, conn_id="my_conn", poll_interval=5, end_time=123.0)
    classpath, kwargs = trigger.serialize()
    assert classpath == "airflow_batchwork.triggers.batch.BatchCompleteTrigger"
    again = BatchCompleteTrigger(**kwargs)
    assert again.serialize() == (classpath, kwargs)
    assert (again.job, again.conn_id, again.poll_interval, again.end_time) == (trigger.job, "my_conn", 5.0, 123.0)
    text = json.dumps(kwargs)
    assert EMULATOR_API_KEY not in text and "password" not in text and "prompt" not in text


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
async def test_one_terminal_event_with_counts(emu: Emulator, provider: str) -> None:
    job = await submit(emu, provider)
    events = await all_events(BatchCompleteTrigger(job=job.to_dict(), poll_interval=0.1, end_time=time.time() + 30))
    assert len(events) == 1
    payload: dict[str, Any] = events[0].payload
    assert payload["status"] == "completed"
    assert payload["counts"]["total"] == 2 and payload["counts"]["succeeded"] == 2
    assert payload["batch_ids"] == job.batch_ids and payload["job"] == job.to_dict()


async def test_timeout_cancels_the_batches(emu: Emulator) -> None:
    emu.processing_seconds = 60
    job = await submit(emu)
    events = await all_events(BatchCompleteTrigger(job=job.to_dict(), poll_interval=0.1, end_time=time.time() + 0.5))
    assert [e.payload["status"] for e in events] == ["timeout"]
    assert "cancelled" in events[0].payload["message"]
    assert [r for r in emu.requests if r.method == "POST" and r.path.endswith(f"{job.batch_ids[0]}/cancel")]


async def test_transient_faults_are_tolerated(emu: Emulator) -> None:
    job = await submit(emu)
    emu.faults = FaultConfig(server_error_every=2, rate_limit_every=3, retry_after_seconds=0)
    events = await all_events(BatchCompleteTrigger(job=job.to_dict(), poll_interval=0.1, end_time=time.time() + 60))
    assert [e.payload["status"] for e in events] == ["completed"]
    assert any(r.fault for r in emu.requests)


async def test_unknown_batch_is_an_error_event(emu: Emulator) -> None:
    job = {"provider": "openai", "model": "openai.chat/m", "batches": [{"id": "batch_nope", "request_count": 1}],
           "request_count": 1}
    events = await all_events(BatchCompleteTrigger(job=job, poll_interval=0.1, end_time=time.time() + 30))
    assert [e.payload["status"] for e in events] == ["error"]
    assert "404" in events[0].payload["message"]


async def test_missing_credentials_is_an_error_event(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AIRFLOW_CONN_BATCHWORK_XAI", raising=False)
    job = {"provider": "anthropic", "model": "anthropic/m", "batches": [{"id": "msgbatch_1", "request_count": 1}],
           "request_count": 1}
    monkeypatch.delenv("AIRFLOW_CONN_BATCHWORK_ANTHROPIC", raising=False)
    events = await all_events(BatchCompleteTrigger(job=job, poll_interval=0.1, end_time=time.time() + 30))
    assert [e.payload["status"] for e in events] == ["error"]
    assert "ANTHROPIC_API_KEY" in events[0].payload["message"]


async def test_on_kill_cancels(emu: Emulator) -> None:
    emu.processing_seconds = 60
    job = await submit(emu, "anthropic")
    trigger = BatchCompleteTrigger(job=job.to_dict(), poll_interval=0.1, end_time=time.time() + 60)
    task = asyncio.ensure_future(all_events(trigger))
    await asyncio.sleep(0.3)
    task.cancel()
    await trigger.on_kill()
    creds = {"anthropic": Credentials(EMULATOR_API_KEY, emu.base_url("anthropic"))}
    async with BatchClient(creds) as client:
        status = await client.status(job)
    assert status.state in ("cancelling", "cancelled")


async def test_triggers_share_one_client_per_provider(emu: Emulator) -> None:
    """Twenty triggers of one provider and connection poll through one client, closed after the last."""
    from airflow_batchwork.triggers.clients import SHARED_CLIENTS

    jobs = [await submit(emu) for _ in range(20)]
    seen: set[int] = set()
    status = BatchClient.status

    async def spy(self: BatchClient, job: Any) -> Any:
        seen.add(id(self))
        assert len(SHARED_CLIENTS) == 1
        return await status(self, job)

    BatchClient.status = spy  # type: ignore[method-assign]
    try:
        triggers = [BatchCompleteTrigger(job=j.to_dict(), poll_interval=0.2, end_time=time.time() + 120)
                    for j in jobs]
        events = await asyncio.gather(*(all_events(t) for t in triggers))
    finally:
        BatchClient.status = status  # type: ignore[method-assign]
    assert [e[0].payload["status"] for e in events] == ["completed"] * 20
    assert len(seen) == 1
    assert len(SHARED_CLIENTS) == 0
