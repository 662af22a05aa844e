"""The same job through all seven providers over real HTTP: one Parquet schema, equivalent rows."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from airflow_batchwork.core import RESULT_SCHEMA, BatchClient, Credentials
from airflow_batchwork.engine.ledger import FsspecLedger
from airflow_batchwork.testing import Emulator

MODELS = {
    "openai": "openai/gpt-4o-mini",
    "anthropic": "anthropic/claude-haiku-4-5",
    "google": "google/gemini-2.5-flash",
    "groq": "groq/llama-3.3-70b-versatile",
    "mistral": "mistral/mistral-small-latest",
    "together": "together/meta-llama/Llama-3.3-70B-Instruct-Turbo",
    "xai": "xai/grok-4",
}
FOUR = [
    {"custom_id": "ok", "prompt": "hello world"},
    {"custom_id": "chat", "system": "be brief", "messages": [
        {"role": "user", "content": "first question"}, {"role": "assistant", "content": "first answer"},
        {"role": "user", "content": "second question"}]},
    {"custom_id": "bad", "prompt": "boom [[error]]"},
    {"custom_id": "late", "prompt": "slow [[expire]]"},
]
# Gemini has no per-request expiry (an expired Gemini job keeps no results at all), so its fourth
# request carries no [[expire]] marker; docs/providers.md explains.
NO_ITEM_EXPIRY = {"google"}
COMPARED = ["custom_id", "status", "text", "finish_reason", "input_tokens", "output_tokens", "total_tokens"]


async def run_job(emulator: Emulator, provider: str, tmp_path: Path) -> pa.Table:
    ledger = FsspecLedger(f"file://{tmp_path}/state", f"job-{provider}")
    async with BatchClient({provider: Credentials("k", emulator.base_url(provider))}) as client:
        requests = [dict(r, prompt="slow") if r["custom_id"] == "late" and provider in NO_ITEM_EXPIRY else r
                    for r in FOUR]
        job = await client.submit(MODELS[provider], requests, defaults={"max_output_tokens": 64},
                                  ledger=ledger, identity=f"job-{provider}")
        await client.wait(job, poll_interval=0.1, timeout=60)
        manifest = await client.write_parquet(job, f"{tmp_path}/{provider}.parquet")
    assert manifest["rows"] == 4, manifest
    return pq.read_table(tmp_path / f"{provider}.parquet")


async def test_one_schema_equivalent_rows(emulator: Emulator, tmp_path: Path) -> None:
    tables = {provider: await run_job(emulator, provider, tmp_path) for provider in MODELS}
    def comparable(table: pa.Table) -> pa.Table:
        rows = table.select(COMPARED).sort_by("custom_id")
        return rows.filter(pc.not_equal(rows.column("custom_id"), "late"))

    reference = comparable(tables["openai"])
    for provider, table in tables.items():
        assert table.schema.remove_metadata() == RESULT_SCHEMA, provider
        rows = {r["custom_id"]: r for r in table.to_pylist()}
        assert rows["ok"]["text"] == "echo: hello world", provider
        assert rows["chat"]["text"] == "echo: second question", provider
        assert (rows["ok"]["input_tokens"], rows["ok"]["output_tokens"]) == (2, 3), provider
        assert rows["bad"]["status"] == "errored" and rows["bad"]["error_message"], provider
        assert rows["late"]["status"] == ("succeeded" if provider in NO_ITEM_EXPIRY else "expired"), provider
        assert all(r["provider"] == provider and r["response"] for r in rows.values() if r["status"] != "expired")
        assert comparable(table).equals(reference), (provider, comparable(table).to_pylist())


