"""xAI re-attach means "the batch holds every request of this job": a retry adopts a half-filled batch
only to complete it (each request exactly once), never adopts a cancelled one, and an add-requests page
that fails ambiguously is resolved by listing what the batch holds."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from airflow_batchwork.adapters.http import RetryPolicy
from airflow_batchwork.adapters.xai import XAIAdapter, batch_name
from airflow_batchwork.core import BatchClient, Credentials
from airflow_batchwork.engine.ledger import MemoryLedger
from airflow_batchwork.testing import Emulator
from airflow_batchwork.testing.faults import FaultConfig

MODEL = "xai/grok-4"
REQUESTS = [{"custom_id": f"x{i:03d}", "prompt": f"item {i}"} for i in range(40)]


@pytest.fixture
def emu() -> Iterator[Emulator]:
    with Emulator(processing_seconds=0.2) as emulator:
        yield emulator


@pytest.fixture(autouse=True)
def pages(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(XAIAdapter, "add_page_size", 10)


async def ended_rows(client: BatchClient, job: object) -> list[str]:
    await client.wait(job, poll_interval=0.1, timeout=60)
    return [item.custom_id async for item in client.results(job) if item.status == "succeeded"]


def intent_ledger(client: BatchClient, identity: str, calls: dict[str, object]) -> tuple[MemoryLedger, dict[str, str]]:
    prepared = client.prepare(MODEL, REQUESTS)
    fingerprint = prepared.fingerprint
    prepared.close()
    ledger = MemoryLedger()
    ledger.write({"identity": identity, "fingerprint": fingerprint, "model": MODEL, "shards": [
        {"index": 0, "status": "intent", "request_count": len(REQUESTS), "intent_at": time.time(), "calls": calls}]})
    tags = {"batchwork_id": identity, "batchwork_fp": fingerprint[:16], "batchwork_shard": "1/1"}
    return ledger, tags


async def test_half_filled_batch_is_completed_not_duplicated(emu: Emulator) -> None:
    async with BatchClient({"xai": Credentials("k", emu.base_url("xai"))}) as client:
        ledger, tags = intent_ledger(client, "half", {})
        # What a killed try left: the named batch with its first page only, and no id in the ledger.
        http = client.adapter("xai").http
        created = await http.request("POST", "/batches", retry_safe=False, json={"name": batch_name(tags)})
        batch_id = created.json()["batch_id"]
        first = b'{"batch_requests":[' + b",".join(
            client.adapter("xai").encode(*_ref_and(r)) for r in REQUESTS[:10]) + b"]}"
        await http.request("POST", f"/batches/{batch_id}/requests", retry_safe=False, content=first,
                           headers={"content-type": "application/json"})
        job = await client.submit(MODEL, REQUESTS, ledger=ledger, identity="half")
        assert job.batch_ids == [batch_id] and len(emu.batches("xai")) == 1
        rows = await ended_rows(client, job)
    assert sorted(rows) == [r["custom_id"] for r in REQUESTS]  # every request, once


async def test_cancelled_batch_is_never_adopted(emu: Emulator) -> None:
    async with BatchClient({"xai": Credentials("k", emu.base_url("xai"))}) as client:
        ledger, tags = intent_ledger(client, "gone", {})
        http = client.adapter("xai").http
        created = await http.request("POST", "/batches", retry_safe=False, json={"name": batch_name(tags)})
        cancelled = created.json()["batch_id"]
        await client.adapter("xai").cancel(cancelled)
        state = ledger.read()
        assert state is not None
        state["shards"][0]["calls"] = {"batch_id": cancelled}
        ledger.write(state)
        job = await client.submit(MODEL, REQUESTS, ledger=ledger, identity="gone")
        assert job.batch_ids != [cancelled] and len(emu.batches("xai")) == 2
        rows = await ended_rows(client, job)
    assert sorted(rows) == [r["custom_id"] for r in REQUESTS]


async def test_failed_pages_are_resolved_by_listing(emu: Emulator) -> None:
    """Pages dropped mid-answer (the emulator stored them) and pages answered 5xx (not stored): the batch
    ends with every request once, and it is never cancelled."""
    emu.faults = FaultConfig(server_error_every=3, drop_connection_every=4, providers="xai", random_seed=5)
    retry = RetryPolicy(base_delay=0.02, max_delay=0.2, max_elapsed=60)
    async with BatchClient({"xai": Credentials("k", emu.base_url("xai"))}, retry=retry) as client:
        job = await client.submit(MODEL, REQUESTS, ledger=MemoryLedger(), identity="pages")
        emu.faults = FaultConfig()
        rows = await ended_rows(client, job)
    assert sorted(rows) == [r["custom_id"] for r in REQUESTS]
    assert len(emu.batches("xai")) == 1 and emu.batches("xai")[0].cancel_requested_at is None


def _ref_and(request: dict[str, str]) -> tuple[object, object]:
    from airflow_batchwork.values.refs import parse_model
    from airflow_batchwork.values.requests import iter_requests

    ref = parse_model(MODEL)
    (_, parsed), = list(iter_requests([request], ref=ref))
    return ref, parsed
