"""Anthropic Message Batches carry no metadata: an ambiguous create is resolved from the batch list
(a snapshot taken before the create, the request count, the creation time). Another job's batch of the
same size made just before ours is never adopted; ours is, so nothing is paid twice."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from airflow_batchwork.core import BatchClient, Credentials
from airflow_batchwork.engine.ledger import MemoryLedger
from airflow_batchwork.testing import Emulator
from airflow_batchwork.testing.faults import FaultConfig

MODEL = "anthropic/claude-haiku-4-5"
REQUESTS = [{"custom_id": f"a{i:02d}", "prompt": f"item {i}"} for i in range(8)]


@pytest.fixture
def emu() -> Iterator[Emulator]:
    with Emulator(processing_seconds=0.2) as emulator:
        yield emulator


async def test_same_size_batch_of_another_job_is_not_adopted(emu: Emulator) -> None:
    async with BatchClient({"anthropic": Credentials("k", emu.base_url("anthropic"))}) as client:
        other = await client.submit(MODEL, [{**r, "prompt": "other " + r["prompt"]} for r in REQUESTS])
        emu.faults = FaultConfig(lose_create_response_every=1, providers="anthropic")
        ledger = MemoryLedger()
        ours = await client.submit(MODEL, REQUESTS, ledger=ledger, identity="ours")
        emu.faults = FaultConfig()
        again = await client.submit(MODEL, REQUESTS, ledger=ledger, identity="ours")
    ids = [b.id for b in emu.batches("anthropic")]
    assert len(ids) == 2 and ours.batch_ids == [ids[1]] != other.batch_ids  # ours, not the other job's
    assert again.batch_ids == ours.batch_ids
