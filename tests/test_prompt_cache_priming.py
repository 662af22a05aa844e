"""Prompt-cache priming (Anthropic) against the emulator over real sockets: the priming batch ends before the
main one is created, the main batch's rows report cache reads, and the cost uses the cached-token rates."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
import pytest

from airflow_batchwork.core import BatchClient, Credentials, JobHandle, RequestValidationError
from airflow_batchwork.testing import Emulator
from airflow_batchwork.values.pricing import load_prices

SYSTEM = " ".join(f"rule{i}" for i in range(5000))  # 5,000 emulator tokens, above haiku-4-5's 4,096 minimum
MODEL = "anthropic/claude-haiku-4-5"


def client_for(emulator: Emulator) -> BatchClient:
    return BatchClient({"anthropic": Credentials(api_key="k", base_url=emulator.base_url("anthropic"))})


async def test_priming_batch_ends_before_the_main_batch_and_main_rows_read_the_cache(
        emulator: Emulator, tmp_path: Path) -> None:
    requests = [{"custom_id": f"r{i}", "prompt": f"question {i}", "system": SYSTEM} for i in range(30)]
    async with client_for(emulator) as client:
        job = await client.submit(MODEL, requests, cache_prefix=True)
        assert [b.request_count for b in job.batches] == [1, 29]
        await client.wait(job, poll_interval=0.1, timeout=60)
        manifest = await client.write_parquet(job, f"{tmp_path}/out.parquet")
    views = {b.id: b for b in emulator.batches("anthropic")}
    priming, main = views[job.batch_ids[0]], views[job.batch_ids[1]]
    assert priming.ended_at is not None and priming.ended_at <= main.created_at
    rows = {r["custom_id"]: r for r in pq.read_table(tmp_path / "out.parquet").to_pylist()}
    assert manifest["rows"] == 30
    assert (rows["r0"]["cache_write_tokens"], rows["r0"]["cache_read_tokens"]) == (5000, 0)
    for i in range(1, 30):
        assert (rows[f"r{i}"]["cache_read_tokens"], rows[f"r{i}"]["cache_write_tokens"]) == (5000, 0)
        assert rows[f"r{i}"]["input_tokens"] == 2  # the cached prefix is not in input_tokens

    # Cost from the dated prompt-cache terms: batch input price x (2.0 per 1h write | 0.1 per read).
    price = load_prices().lookup(MODEL)
    assert price is not None and price.prompt_cache is not None
    base = (2 * price.batch_input + 3 * price.batch_output) / 1e6
    assert rows["r0"]["cost_usd"] == pytest.approx(base + 5000 * 2.0 * price.batch_input / 1e6)
    assert rows["r1"]["cost_usd"] == pytest.approx(base + 5000 * 0.1 * price.batch_input / 1e6)
    # The handle says the job marks a prefix, through XCom too.
    assert JobHandle.coerce(job.to_dict()).model_extra == {"prompt_cache": True}


async def test_without_priming_a_cold_batch_writes_once_per_item(emulator: Emulator, tmp_path: Path) -> None:
    requests = [{"custom_id": f"r{i}", "prompt": f"other {i}", "system": SYSTEM + " cold"} for i in range(5)]
    async with client_for(emulator) as client:
        job = await client.submit(MODEL, requests, cache_prefix=True, prime_cache=False)
        assert len(job.batches) == 1
        await client.wait(job, poll_interval=0.1, timeout=60)
        await client.write_parquet(job, f"{tmp_path}/cold.parquet")
    rows = pq.read_table(tmp_path / "cold.parquet").to_pylist()
    assert [r["cache_write_tokens"] for r in rows] == [5001] * 5 and all(r["cache_read_tokens"] == 0 for r in rows)


async def test_short_prefix_is_not_primed(emulator: Emulator, tmp_path: Path) -> None:
    requests = [{"custom_id": f"r{i}", "prompt": f"q {i}", "system": "be brief"} for i in range(4)]
    async with client_for(emulator) as client:
        job = await client.submit(MODEL, requests, cache_prefix=True)
        assert len(job.batches) == 1
        await client.wait(job, poll_interval=0.1, timeout=60)
        await client.write_parquet(job, f"{tmp_path}/short.parquet")
    rows = pq.read_table(tmp_path / "short.parquet").to_pylist()
    assert all(r["cache_read_tokens"] == 0 and r["cache_write_tokens"] == 0 for r in rows)


async def test_cache_prefix_refused_where_the_provider_has_no_cache_control(emulator: Emulator) -> None:
    async with BatchClient({"openai": Credentials(api_key="k", base_url=emulator.base_url("openai"))}) as client:
        with pytest.raises(RequestValidationError, match=r"requests\[0\]\.cache_prefix"):
            await client.submit("openai/gpt-4o-mini", [{"custom_id": "a", "prompt": "x", "system": "s"}],
                                cache_prefix=True)
