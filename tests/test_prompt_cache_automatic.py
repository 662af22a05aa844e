"""Providers that cache long prompt prefixes on their own (OpenAI, Groq, xAI, Gemini): the cached tokens
they report in their usage fill `cache_read_tokens` (with `cache_prefix=True`) and are priced at the
provider's cached-input rate from the dated price table (always). Against the emulator over real sockets
for OpenAI (which models automatic caching); for xAI and Gemini on their real result lines with the
cache count set, checked against the schemas generated from their SDK types."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from airflow_batchwork.adapters import adapter_class
from airflow_batchwork.core import RESULT_SCHEMA, BatchClient, Credentials, RequestValidationError
from airflow_batchwork.testing import Emulator, conformance
from airflow_batchwork.values.pricing import load_prices

MODEL = "openai/gpt-4o-mini"


def long_system(word: str) -> str:
    return " ".join(f"{word}{i}" for i in range(1500))  # 1,500 tokens in the emulator's count


def client_for(emulator: Emulator, *providers: str) -> BatchClient:
    return BatchClient({p: Credentials(api_key="k", base_url=emulator.base_url(p)) for p in providers})


async def run(emulator: Emulator, tmp_path: Path, name: str, system: str, **submit: Any
              ) -> tuple[list[dict[str, Any]], pa.Schema, list[dict[str, Any]]]:
    requests = [{"custom_id": f"{name}{i}", "prompt": f"question {i}", "system": system} for i in range(5)]
    async with client_for(emulator, "openai") as client:
        job = await client.submit(MODEL, requests, **submit)
        assert len(job.batches) == 1  # no priming batch: OpenAI caches on its own
        await client.wait(job, poll_interval=0.1, timeout=60)
        await client.write_parquet(job, f"{tmp_path}/{name}.parquet")
    [batch] = [b for b in emulator.batches("openai") if b.id == job.batch_ids[0]]
    table = pq.read_table(tmp_path / f"{name}.parquet")
    rows = sorted(table.to_pylist(), key=lambda r: r["custom_id"])
    return rows, table.schema.remove_metadata(), [dict(i.body) for i in batch.items]


def expected_cost(row: dict[str, Any], cached: int) -> float:
    price = load_prices(None).lookup(MODEL)
    assert price is not None and price.prompt_cache is not None
    read = float(price.prompt_cache["read"])
    return ((row["input_tokens"] - cached) * price.batch_input + cached * price.batch_input * read
            + row["output_tokens"] * price.batch_output) / 1e6


async def test_openai_cached_tokens_fill_the_column_and_are_priced_at_the_cached_rate(
        emulator: Emulator, tmp_path: Path) -> None:
    rows, schema, bodies = await run(emulator, tmp_path, "marked", long_system("rule"), cache_prefix=True)
    # Nothing is added to the request: OpenAI has no marker for automatic caching.
    assert not any("cache" in json.dumps(body) for body in bodies)
    assert schema.names[-2:] == ["cache_read_tokens", "cache_write_tokens"]
    # The first request writes the 1,500-token prefix, the four after it read 1,408 tokens (128-token steps).
    assert [r["cache_read_tokens"] for r in rows] == [0, 1408, 1408, 1408, 1408]
    assert [r["cache_write_tokens"] for r in rows] == [0] * 5
    for row in rows:
        line = json.loads(row["response"])
        assert conformance.violations("openai", "BatchRequestOutput", line) == []
        assert line["response"]["body"]["usage"]["prompt_tokens_details"]["cached_tokens"] == row["cache_read_tokens"]
        assert row["cost_usd"] == pytest.approx(expected_cost(row, row["cache_read_tokens"]), rel=1e-9)
    # The cached rate (0.5 x input for gpt-4o-mini, dated in prices.json) makes a reading row cheaper.
    assert rows[1]["cost_usd"] < expected_cost(rows[1], 0)


async def test_without_cache_prefix_the_schema_is_unchanged_and_the_cost_still_right(
        emulator: Emulator, tmp_path: Path) -> None:
    rows, schema, _ = await run(emulator, tmp_path, "plain", long_system("law"))
    assert schema == RESULT_SCHEMA
    reads = [json.loads(r["response"])["response"]["body"]["usage"]["prompt_tokens_details"]["cached_tokens"]
             for r in rows]
    assert reads == [0, 1408, 1408, 1408, 1408]
    for row, cached in zip(rows, reads, strict=True):
        assert row["cost_usd"] == pytest.approx(expected_cost(row, cached), rel=1e-9)


async def test_cache_prefix_refused_where_the_provider_reports_no_cached_tokens(emulator: Emulator) -> None:
    for provider, model in (("together", "together/meta-llama/Llama-3.3-70B-Instruct-Turbo"),
                            ("mistral", "mistral/mistral-small-latest")):
        async with client_for(emulator, provider) as client:
            before = len(emulator.requests)
            with pytest.raises(RequestValidationError, match=r"requests\[0\]\.cache_prefix.*reports no cached"):
                await client.submit(model, [{"custom_id": "a", "prompt": "x", "system": "s"}], cache_prefix=True)
            assert len(emulator.requests) == before


async def one_line(emulator: Emulator, tmp_path: Path, provider: str, model: str) -> dict[str, Any]:
    """The raw result line of one request, as the provider's emulator delivered it."""
    async with client_for(emulator, provider) as client:
        job = await client.submit(model, [{"custom_id": "a", "prompt": "hello there", "system": "be brief"}])
        await client.wait(job, poll_interval=0.1, timeout=60)
        await client.write_parquet(job, f"{tmp_path}/{provider}.parquet")
    [row] = pq.read_table(tmp_path / f"{provider}.parquet").to_pylist()
    line: dict[str, Any] = json.loads(row["response"])
    return line


async def test_xai_reports_cached_tokens_in_prompt_tokens_details(emulator: Emulator, tmp_path: Path) -> None:
    line = await one_line(emulator, tmp_path, "xai", "xai/grok-4")
    body = line["batch_result"]["response"]["chat_get_completion"]
    body["usage"]["prompt_tokens_details"]["cached_tokens"] = 3
    assert conformance.violations("xai", "BatchResult", line) == []  # the shape xAI really sends
    error = {"batch_request_id": "b", "batch_result": {"error": "boom"}}
    assert conformance.violations("xai", "BatchResult", error) == []
    read, five, hour = adapter_class("xai").cache_tokens(pa.array([json.dumps(line), json.dumps(error), None]))
    assert (read.to_pylist(), five.to_pylist(), hour.to_pylist()) == ([3, None, None], [0, None, None],
                                                                      [0, None, None])


async def test_gemini_reports_cached_content_token_count(emulator: Emulator, tmp_path: Path) -> None:
    line = await one_line(emulator, tmp_path, "google", "google/gemini-2.5-flash")
    line["response"]["usageMetadata"]["cachedContentTokenCount"] = 2
    assert conformance.violations("google", "GenerateContentResponse", line["response"]) == []
    read, five, _ = adapter_class("google").cache_tokens(pa.array([json.dumps(line)]))
    assert (read.to_pylist(), five.to_pylist()) == ([2], [0])
    price = load_prices(None).lookup("google/gemini-2.5-flash")
    assert price is not None and price.prompt_cache is not None and price.prompt_cache["read"] == 0.1


async def test_resubmission_rounds_price_cached_tokens_too(emulator: Emulator, tmp_path: Path) -> None:
    from airflow_batchwork.engine.ledger import FsspecLedger
    from airflow_batchwork.engine.resubmit import collect_with_retries

    requests = [{"custom_id": f"q{i}", "prompt": f"question {i}", "system": long_system("code")} for i in range(3)]
    async with client_for(emulator, "openai") as client:
        job = await client.submit(MODEL, requests, ledger=FsspecLedger(f"{tmp_path}/state", "rounds"),
                                  identity="rounds")
        await collect_with_retries(client, job, f"{tmp_path}/rounds/", max_item_retries=1, poll_interval=0.1,
                                   timeout=60)
    rows = sorted(pq.read_table(f"{tmp_path}/rounds/").to_pylist(), key=lambda r: r["custom_id"])
    reads = [json.loads(r["response"])["response"]["body"]["usage"]["prompt_tokens_details"]["cached_tokens"]
             for r in rows]
    assert reads == [0, 1408, 1408]
    for row, cached in zip(rows, reads, strict=True):
        assert row["cost_usd"] == pytest.approx(expected_cost(row, cached), rel=1e-9)
