"""BatchCompleteTrigger on its own: serialization, one terminal event, timeout → cancel, faults."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
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


async def test_triggers_share_one_client_per_provider() -> None:
    """Twenty triggers of one provider and connection poll through one client, closed after the last.

    The batches stay in progress (30 s) until every trigger has polled, so no trigger can finish (and
    close the shared client) before the last one starts, however slow the machine."""
    from airflow_batchwork.triggers.clients import SHARED_CLIENTS

    with Emulator(processing_seconds=30) as emulator:
        creds = {"openai": Credentials(EMULATOR_API_KEY, emulator.base_url("openai"))}
        async with BatchClient(creds) as client:
            jobs = [await client.submit("openai/gpt-4o-mini", [{"prompt": f"p{i}"}]) for i in range(20)]
        env = connection_env(emulator)
        seen: set[int] = set()
        polled: set[str] = set()
        everyone_polled = asyncio.Event()
        status = BatchClient.status

        async def spy(self: BatchClient, job: Any) -> Any:
            seen.add(id(self))
            assert len(SHARED_CLIENTS) == 1
            result = await status(self, job)
            polled.add(job.batch_ids[0])
            if len(polled) == len(jobs):
                everyone_polled.set()
            return result

        mp = pytest.MonkeyPatch()
        for key, value in env.items():
            mp.setenv(key, value)
        mp.setattr(BatchClient, "status", spy)
        try:
            triggers = [BatchCompleteTrigger(job=j.to_dict(), poll_interval=0.2, end_time=time.time() + 600)
                        for j in jobs]
            tasks = [asyncio.create_task(all_events(t)) for t in triggers]
            await asyncio.wait_for(everyone_polled.wait(), timeout=300)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        finally:
            mp.undo()
    assert len(seen) == 1
    assert len(SHARED_CLIENTS) == 0


async def test_sleeping_triggers_share_their_wake_up_timers(emu: Emulator, monkeypatch: pytest.MonkeyPatch) -> None:
    """Twenty triggers sleeping between polls hold one timer between them, not one each (a timer and its
    arguments per sleeping trigger were objects every full garbage collection walked), and all of them
    still wake up and poll again."""
    from airflow_batchwork.triggers import batch

    monkeypatch.setattr(batch, "START_JITTER_MAX", 0.0)
    emu.processing_seconds = 60
    jobs = [await submit(emu, n=1) for _ in range(20)]
    polls: dict[str, int] = {}
    status = BatchClient.status

    async def spy(self: BatchClient, job: Any) -> Any:
        result = await status(self, job)
        polls[job.batch_ids[0]] = polls.get(job.batch_ids[0], 0) + 1
        return result

    async def every_trigger_polled(times: int) -> None:
        while len(polls) < len(jobs) or min(polls.values()) < times:
            await asyncio.sleep(0.01)

    monkeypatch.setattr(BatchClient, "status", spy)
    tasks = [asyncio.create_task(all_events(BatchCompleteTrigger(job=j.to_dict(), poll_interval=1.0,
                                                                 end_time=time.time() + 600))) for j in jobs]
    try:
        await asyncio.wait_for(every_trigger_polled(1), timeout=120)
        loop = asyncio.get_running_loop()
        # The loop's pending timers (its private heap: what it will run when due), besides this test's own.
        timers = [h for h in loop._scheduled if not h.cancelled()]  # type: ignore[attr-defined]
        await asyncio.wait_for(every_trigger_polled(2), timeout=120)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    assert len(timers) <= 3, [h._callback for h in timers]

FIRST_TRIGGER = r"""
import asyncio, json, os, sys, threading, time
import airflow.jobs.triggerer_job_runner  # what a triggerer process has imported before any trigger
from airflow_batchwork.core import BatchClient, Credentials
from airflow_batchwork.testing import Emulator
from airflow_batchwork.testing.airflow_env import EMULATOR_API_KEY, connection_env
from airflow_batchwork.triggers import batch  # the triggerer loads the trigger class
from airflow_batchwork.triggers.batch import BatchCompleteTrigger

batch.START_JITTER_MAX = 0.0
on_loop = []  # modules imported by the loop's thread while the trigger runs
sys.addaudithook(lambda event, args: event == "import" and watching and threading.current_thread()
                 is threading.main_thread() and on_loop.append(args[0]))
watching = False


async def main():
    global watching
    with Emulator(processing_seconds=0.3) as emulator:
        os.environ.update(connection_env(emulator))
        creds = {"openai": Credentials(EMULATOR_API_KEY, emulator.base_url("openai"))}
        async with BatchClient(creds) as client:
            job = await client.submit("openai/gpt-4o-mini", [{"prompt": "p"}])
        trigger = BatchCompleteTrigger(job=job.to_dict(), poll_interval=0.1, end_time=time.time() + 60)
        watching = True
        events = [event.payload["status"] async for event in trigger.run()]
        watching = False
        print(json.dumps({"events": events, "imported": on_loop}))


asyncio.run(main())
"""


def test_the_first_trigger_imports_nothing_on_the_event_loop() -> None:
    """A triggerer's first trigger looks its connection up and polls without importing a module on the
    event loop: the async connection lookup's imports (Airflow's compat layer, asgiref, the Task SDK's
    secret cache) are paid when the trigger class is loaded, not inside one loop iteration that every
    other trigger waits on. A fresh process, since this one has imported everything already."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW_CONN_BATCHWORK", "OPENAI"))}
    out = subprocess.run([sys.executable, "-c", FIRST_TRIGGER], env=base, capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["events"] == ["completed"]
    assert result["imported"] == []
