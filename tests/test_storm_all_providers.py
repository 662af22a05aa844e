"""Fault storms for every provider: 5xx, 429 (with Retry-After) and dropped connections at 1 in 2 and
1 in 3 of all calls — creates, uploads, add-requests pages, polls, listings and result downloads (a
dropped download is resumed or restarted). A storm slows a job, it never ends it or pays twice: every
row present and correct, 0 extra batches, 0 batches cancelled by our own retries.

Storms are random at the given rate (the emulator's `random_seed` mode, seeded per test), so a client's
call pattern cannot alias with a fixed "every Nth" counter. `BATCHWORK_STORM_SEED` changes the seed.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from airflow_batchwork.adapters.http import RetryPolicy
from airflow_batchwork.adapters.xai import XAIAdapter
from airflow_batchwork.core import BatchClient, Credentials
from airflow_batchwork.engine.ledger import MemoryLedger
from airflow_batchwork.engine.parquet import committed_files
from airflow_batchwork.testing import Emulator
from airflow_batchwork.testing.faults import FaultConfig

MODELS = {
    "openai": "openai/gpt-4o-mini",
    "anthropic": "anthropic/claude-haiku-4-5",
    "google": "google/gemini-2.5-flash",
    "groq": "groq/llama-3.3-70b-versatile",
    "mistral": "mistral/mistral-small-latest",
    "together": "together/meta-llama/Llama-3.3-70B-Instruct-Turbo",
    "xai": "xai/grok-4",
}
SEED = int(os.environ.get("BATCHWORK_STORM_SEED", "7"))
N = 120
STORMS = {
    "5xx-1in2": FaultConfig(server_error_every=2),
    "drop-1in2": FaultConfig(drop_connection_every=2),
    "429-1in3": FaultConfig(rate_limit_every=3, retry_after_seconds=1),
    "mixed-1in3": FaultConfig(server_error_every=6, drop_connection_every=6, rate_limit_every=12,
                              retry_after_seconds=0),
}
FAST = RetryPolicy(base_delay=0.02, max_delay=0.3, max_elapsed=120)


@pytest.fixture(scope="module")
def emu() -> Iterator[Emulator]:
    with Emulator(processing_seconds=0.2) as emulator:
        yield emulator


@pytest.fixture(autouse=True)
def small_xai_pages(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(XAIAdapter, "add_page_size", 15)  # several add-requests pages per shard


@pytest.mark.parametrize("storm", sorted(STORMS))
@pytest.mark.parametrize("provider", sorted(MODELS))
async def test_storm(emu: Emulator, provider: str, storm: str, tmp_path: Path) -> None:
    before = {b.id for b in emu.batches(provider)}
    config = STORMS[storm]
    emu.faults = FaultConfig(**{**config.__dict__, "providers": provider, "random_seed": SEED,
                                "per_provider": {}})
    requests = [{"custom_id": f"s{i:04d}", "prompt": f"storm item {i}"} for i in range(N)]
    try:
        async with BatchClient({provider: Credentials("k", emu.base_url(provider))}, retry=FAST) as client:
            job = await client.submit(MODELS[provider], requests, ledger=MemoryLedger(), identity=f"storm-{storm}",
                                      limits={"max_requests": N // 2})
            await client.wait(job, poll_interval=0.1, timeout=180)
            manifest = await client.write_parquet(job, f"{tmp_path}/out/")
    finally:
        faults = emu.fault_counts(provider).get(provider, {})
        emu.faults = FaultConfig()
    assert sum(faults.values()) > 0  # the storm happened
    made = [b for b in emu.batches(provider) if b.id not in before]
    assert len(made) == 2, [b.id for b in made]  # 0 extra batches
    assert all(b.cancel_requested_at is None for b in made)  # never self-cancelled
    files = committed_files(f"{tmp_path}/out/")
    assert files is not None
    table = pq.read_table(files)
    rows = dict(zip(table.column("custom_id").to_pylist(), table.column("text").to_pylist(), strict=True))
    assert manifest["rows"] == N and len(rows) == N and manifest["duplicates_dropped"] == 0
    assert set(table.column("status").to_pylist()) == {"succeeded"}
    assert all(f"storm item {i}" in (rows[f"s{i:04d}"] or "") for i in range(N))  # each row its own answer
