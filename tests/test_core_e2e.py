"""The core against the emulator over real sockets: submit → wait → results → Parquet."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from airflow_batchwork.core import RESULT_SCHEMA, BatchClient, Credentials, JobHandle, JobStatus, parse_model
from airflow_batchwork.engine.parquet import JOB_METADATA_KEY
from airflow_batchwork.testing import Emulator

THREE = [
    {"custom_id": "ok", "prompt": "hello world"},
    {"custom_id": "bad", "prompt": "boom [[error]]"},
    {"custom_id": "late", "prompt": "slow [[expire]]"},
]
TEXT_MODELS = [
    "openai/gpt-4o-mini",
    "openai.responses/gpt-5.5",
    "openai.completion/gpt-3.5-turbo-instruct",
    "anthropic/claude-sonnet-4-5",
]


def client_for(emulator: Emulator, provider: str) -> BatchClient:
    return BatchClient({provider: Credentials(api_key="test-key", base_url=emulator.base_url(provider))})


@pytest.mark.parametrize("model", TEXT_MODELS)
async def test_three_request_job_to_parquet(emulator: Emulator, tmp_path: Path, model: str) -> None:
    provider = parse_model(model).provider
    progress: list[JobStatus] = []
    async with client_for(emulator, provider) as client:
        job = await client.submit(model, THREE, defaults={"max_output_tokens": 50})
        assert job.request_count == 3 and len(job.batches) == 1
        final = await client.wait(job, poll_interval=0.1, timeout=30, on_progress=progress.append)
        manifest = await client.write_parquet(job, f"file://{tmp_path}/out.parquet")

    # An item can only expire with its batch's window, so a provider may report the batch as expired.
    assert final.state in ("completed", "expired")
    assert progress and progress[-1].terminal
    assert manifest["rows"] == 3
    assert manifest["counts"] == {"succeeded": 1, "errored": 1, "expired": 1}
    table = pq.read_table(tmp_path / "out.parquet")
    assert table.schema.remove_metadata() == RESULT_SCHEMA
    assert json.loads(table.schema.metadata[JOB_METADATA_KEY])["batches"][0]["id"] == job.batch_ids[0]
    rows = {row["custom_id"]: row for row in table.to_pylist()}
    assert set(rows) == {"ok", "bad", "late"}

    ok = rows["ok"]
    assert (ok["status"], ok["text"], ok["finish_reason"]) == ("succeeded", "echo: hello world", "stop")
    assert (ok["input_tokens"], ok["output_tokens"], ok["total_tokens"]) == (2, 3, 5)
    assert (ok["provider"], ok["model"], ok["batch_id"]) == (provider, str(parse_model(model)), job.batch_ids[0])
    assert json.loads(ok["response"])["custom_id"] == "ok"
    assert ok["error_code"] is None and ok["error_message"] is None

    bad = rows["bad"]
    assert bad["status"] == "errored" and bad["text"] is None
    assert bad["error_code"] and bad["error_message"]
    assert json.loads(bad["response"])["custom_id"] == "bad"
    assert rows["late"]["status"] == "expired" and rows["late"]["text"] is None


async def test_openai_embeddings_to_parquet(emulator: Emulator, tmp_path: Path) -> None:
    async with client_for(emulator, "openai") as client:
        job = await client.submit(
            "openai.embedding/text-embedding-3-small",
            [{"custom_id": "a", "value": "hello"}, {"custom_id": "b", "value": "world", "dimensions": 4}],
            defaults={"dimensions": 16},
        )
        await client.wait(job, poll_interval=0.1, timeout=30)
        await client.write_parquet(job, f"{tmp_path}/emb.parquet")
    rows = {r["custom_id"]: r for r in pq.read_table(tmp_path / "emb.parquet").to_pylist()}
    assert len(rows["a"]["embedding"]) == 16 and len(rows["b"]["embedding"]) == 4
    assert math.isclose(sum(x * x for x in rows["a"]["embedding"]), 1.0, rel_tol=1e-5)
    assert rows["a"]["status"] == "succeeded" and rows["a"]["text"] is None


async def test_reattach_from_handle_dict(emulator: Emulator) -> None:
    async with client_for(emulator, "anthropic") as first:
        job = await first.submit("anthropic/claude-haiku-4-5", [{"prompt": "one"}, {"prompt": "two"}])
    saved = json.dumps(job.to_dict())
    async with client_for(emulator, "anthropic") as second:
        again = JobHandle.coerce(saved)
        await second.wait(again, poll_interval=0.1, timeout=30)
        texts = sorted([item.text async for item in second.results(again)])  # type: ignore[type-var]
    assert texts == ["echo: one", "echo: two"]


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
async def test_cancel_reports_cancelled(provider: str) -> None:
    with Emulator(processing_seconds=30) as slow:
        async with BatchClient({provider: Credentials("k", slow.base_url(provider))}) as client:
            model = "openai/gpt-4o-mini" if provider == "openai" else "anthropic/claude"
            job = await client.submit(model, [{"prompt": "a"}, {"prompt": "b"}])
            await client.cancel(job)
            final = await client.wait(job, poll_interval=0.1, timeout=30)
            rows = [item async for item in client.results(job)]
    assert final.state == "cancelled"
    assert final.counts.total == 2
    assert all(row.status in ("canceled", "succeeded") for row in rows)


async def test_sharding_splits_and_collects_once(emulator: Emulator, tmp_path: Path) -> None:
    requests = [{"custom_id": f"r{i}", "prompt": f"item {i}"} for i in range(7)]
    async with client_for(emulator, "openai") as client:
        job = await client.submit("openai/gpt-4o-mini", requests, limits={"max_requests": 3})
        assert [b.request_count for b in job.batches] == [3, 3, 1]
        await client.wait(job, poll_interval=0.1, timeout=30)
        manifest = await client.write_parquet(job, f"{tmp_path}/parts/")
    assert len(manifest["files"]) == 3
    table = pq.read_table(tmp_path / "parts")
    assert sorted(table.column("custom_id").to_pylist()) == sorted(r["custom_id"] for r in requests)


async def test_list_batches_pages(emulator: Emulator) -> None:
    async with client_for(emulator, "openai") as client:
        ids = []
        for _ in range(3):
            ids.append((await client.submit("openai/gpt-4o-mini", [{"prompt": "x"}])).batch_ids[0])
        listed = [b.id async for b in client.adapter("openai").list_batches(limit=250)]
    assert set(ids) <= set(listed)
