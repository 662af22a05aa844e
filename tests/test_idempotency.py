"""No double-paid batch: retries re-attach, changed input resubmits, lost create responses are found."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from airflow_batchwork.core import BatchClient, ConfigurationError, Credentials
from airflow_batchwork.engine.ledger import FsspecLedger, LedgerReadError, MemoryLedger
from airflow_batchwork.testing import Emulator
from airflow_batchwork.testing.airflow_env import connection_env
from tests.airflow_helpers import load_dag, task_states, xcom

REQUESTS = [{"custom_id": f"r{i}", "prompt": f"item {i}"} for i in range(5)]


@pytest.fixture
def emu(airflow_db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Emulator]:
    monkeypatch.setenv("AIRFLOW_VAR_BATCHWORK_TEST_OUTPUT", f"file://{tmp_path}")
    with Emulator(processing_seconds=0.5) as emulator:
        for key, value in connection_env(emulator).items():
            monkeypatch.setenv(key, value)
        yield emulator


def client(emu: Emulator, provider: str = "openai") -> BatchClient:
    return BatchClient({provider: Credentials("k", emu.base_url(provider))})


@pytest.mark.parametrize("store", ["fsspec", "task_state_store"])
def test_worker_lost_after_submit_reattaches(emu: Emulator, store: str) -> None:
    run = load_dag(f"test_retry_reattach_{store}").test()
    assert task_states(run) == {"submit": "success"}
    assert len(emu.batches("openai")) == 1
    assert xcom(run, "submit")["batches"][0]["id"] == emu.batches("openai")[0].id


async def test_same_input_reattaches_changed_input_resubmits(emu: Emulator) -> None:
    emu.processing_seconds = 600  # still running when the changed input cancels it, however slow the box
    ledger = MemoryLedger()
    async with client(emu) as c:
        first = await c.submit("openai/gpt-4o-mini", REQUESTS, ledger=ledger, identity="job-1")
        again = await c.submit("openai/gpt-4o-mini", REQUESTS, ledger=ledger, identity="job-1")
        assert again.batch_ids == first.batch_ids
        assert len(emu.batches("openai")) == 1
        changed = await c.submit("openai/gpt-4o-mini", REQUESTS[:4], ledger=ledger, identity="job-1")
        assert changed.batch_ids != first.batch_ids
        stale = await c.status(first)
    assert stale.state in ("cancelling", "cancelled")
    assert len(emu.batches("openai")) == 2


async def test_changed_input_can_fail_instead(emu: Emulator) -> None:
    ledger = MemoryLedger()
    async with client(emu) as c:
        await c.submit("openai/gpt-4o-mini", REQUESTS, ledger=ledger, identity="job-2")
        with pytest.raises(ConfigurationError, match="the input changed"):
            await c.submit("openai/gpt-4o-mini", REQUESTS[:2], ledger=ledger, identity="job-2",
                           on_changed_input="fail")


async def test_intent_without_id_is_found_by_metadata(emu: Emulator) -> None:
    """A create whose response was lost: the ledger holds only the intent; the batch is found by its tags."""
    ledger = MemoryLedger()
    async with client(emu) as c:
        first = await c.submit("openai/gpt-4o-mini", REQUESTS, ledger=ledger, identity="job-3")
        assert ledger.state is not None
        ledger.state["handle"] = None
        ledger.state["shards"][0] = {"index": 0, "status": "intent", "request_count": 5}
        again = await c.submit("openai/gpt-4o-mini", REQUESTS, ledger=ledger, identity="job-3")
    assert again.batch_ids == first.batch_ids
    assert len(emu.batches("openai")) == 1


async def test_multi_shard_resume_submits_only_missing_shards(emu: Emulator) -> None:
    ledger = MemoryLedger()
    async with client(emu) as c:
        full = await c.submit("openai/gpt-4o-mini", REQUESTS, ledger=ledger, identity="job-4",
                              limits={"max_requests": 2})
        assert len(full.batches) == 3
        assert ledger.state is not None
        ledger.state["handle"] = None
        del ledger.state["shards"][2]
        resumed = await c.submit("openai/gpt-4o-mini", REQUESTS, ledger=ledger, identity="job-4",
                                 limits={"max_requests": 2})
    assert resumed.batch_ids[:2] == full.batch_ids[:2]
    assert len(emu.batches("openai")) == 4


def test_corrupt_state_is_not_treated_as_absent(tmp_path: Path) -> None:
    ledger = FsspecLedger(f"file://{tmp_path}", "job-5")
    (tmp_path / "job-5.json").write_text("{not json")
    with pytest.raises(LedgerReadError, match="corrupt"):
        ledger.read()
