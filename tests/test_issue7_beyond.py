"""Structured output, embeddings, per-item cost and automatic resubmission, over real HTTP against the emulator."""

from __future__ import annotations

import json
import math
import uuid
from pathlib import Path
from typing import Any, Literal

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pydantic import BaseModel

from airflow_batchwork.adapters import adapter_class
from airflow_batchwork.core import BatchClient, ConfigurationError, Credentials, ModelRefError, parse_model
from airflow_batchwork.engine.ledger import FsspecLedger
from airflow_batchwork.engine.resubmit import collect_with_retries, retryable
from airflow_batchwork.testing import Emulator
from airflow_batchwork.testing.echo import conforming_instance
from airflow_batchwork.values.pricing import PriceTable, load_prices


class Review(BaseModel):
    title: str
    stars: int
    sentiment: Literal["positive", "negative"]
    tags: list[str]


SCHEMA = Review.model_json_schema()

# model -> the path, in the item body the emulator received, of the provider's native structured output field.
STRUCTURED = {
    "openai/gpt-4o-mini": ("response_format", "json_schema", "schema"),
    "openai.responses/gpt-4.1": ("text", "format", "schema"),
    "anthropic/claude-haiku-4-5": ("output_config", "format", "schema"),
    "google/gemini-2.5-flash": ("request", "generationConfig", "responseJsonSchema"),
    "groq/llama-3.3-70b-versatile": ("response_format", "json_schema", "schema"),
    "mistral/mistral-small-latest": ("response_format", "json_schema", "schema"),
    "together/meta-llama/Llama-3.3-70B-Instruct-Turbo": ("response_format", "json_schema", "schema"),
    "xai/grok-4": ("chat_get_completion", "response_format", "json_schema", "schema"),
    "xai.responses/grok-4": ("responses", "text", "format", "schema"),
}
PROVIDER_MODELS = {
    "openai": "openai/gpt-4o-mini",
    "anthropic": "anthropic/claude-haiku-4-5",
    "google": "google/gemini-2.5-flash",
    "groq": "groq/llama-3.3-70b-versatile",
    "mistral": "mistral/mistral-small-latest",
    "together": "together/meta-llama/Llama-3.3-70B-Instruct-Turbo",
    "xai": "xai/grok-4",
}


def client_for(emulator: Emulator, provider: str) -> BatchClient:
    return BatchClient({provider: Credentials(api_key="test-key", base_url=emulator.base_url(provider))})


def dig(body: Any, path: tuple[str, ...]) -> Any:
    for key in path:
        body = body[key]
    return body


def items_of(emulator: Emulator, batch_id: str) -> list[Any]:
    """The requests the emulator holds for a provider batch (xAI keeps each add-requests call as a group)."""
    views = [b for b in emulator.batches() if b.id == batch_id or b.metadata.get("batch_id") == batch_id]
    return [item for view in views for item in view.items]


def rows_of(path: Path | str) -> dict[str, dict[str, Any]]:
    return {r["custom_id"]: r for r in pq.read_table(path).to_pylist()}


# --- structured output -------------------------------------------------------------------------------


@pytest.mark.parametrize("model", list(STRUCTURED))
async def test_structured_output_round_trip(emulator: Emulator, tmp_path: Path, model: str) -> None:
    provider = parse_model(model).provider
    requests = [{"custom_id": "good", "prompt": "Review: great phone"},
                {"custom_id": "broken", "prompt": "Review: meh [[invalid]]"},
                {"custom_id": "plain", "prompt": "no schema here", "output_schema": None}]
    async with client_for(emulator, provider) as client:
        job = await client.submit(model, requests[:2], output_schema=Review, defaults={"max_output_tokens": 200})
        await client.wait(job, poll_interval=0.1, timeout=60)
        manifest = await client.write_parquet(job, f"file://{tmp_path}/out.parquet")

    # The schema travelled in the provider's own structured output field, and the handle carries it.
    items = items_of(emulator, job.batch_ids[0])
    assert len(items) == 2 and all(dig(item.body, STRUCTURED[model]) == SCHEMA for item in items)
    assert job.structured is not None and list(job.structured["schemas"].values()) == [SCHEMA]

    assert manifest["counts"] == {"invalid_output": 1, "succeeded": 1}
    table = pq.read_table(tmp_path / "out.parquet")
    assert table.schema.field("structured").type == pa.string()
    rows = {r["custom_id"]: r for r in table.to_pylist()}
    good = rows["good"]
    assert good["status"] == "succeeded" and good["error_code"] is None
    assert json.loads(good["structured"]) == conforming_instance(SCHEMA, "echo: Review: great phone")
    Review.model_validate_json(good["structured"])
    broken = rows["broken"]
    assert (broken["status"], broken["error_code"], broken["structured"]) == ("invalid_output", "invalid_output", None)
    assert "does not match output_schema" in broken["error_message"] and "'title' is a required property" in \
        broken["error_message"]
    assert broken["text"]  # the raw reply stays for inspection


async def test_per_request_schemas_need_and_use_the_ids_file(emulator: Emulator, tmp_path: Path) -> None:
    other = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"],
             "additionalProperties": False}
    requests = [{"custom_id": "a", "prompt": "one", "output_schema": SCHEMA},
                {"custom_id": "b", "prompt": "two", "output_schema": other},
                {"custom_id": "c", "prompt": "three"}]
    async with client_for(emulator, "openai") as client:
        with pytest.raises(ConfigurationError, match="output_schema: requests use different output schemas"):
            await client.submit("openai/gpt-4o-mini", requests)
        ledger = FsspecLedger(f"file://{tmp_path}/state", "mixed")
        job = await client.submit("openai/gpt-4o-mini", requests, ledger=ledger, identity="mixed")
        await client.wait(job, poll_interval=0.1, timeout=60)
        await client.write_parquet(job, f"{tmp_path}/out.parquet")
    assert job.structured is not None and job.structured["all"] is None
    rows = rows_of(tmp_path / "out.parquet")
    assert json.loads(rows["b"]["structured"]) == {"n": 1}
    assert json.loads(rows["a"]["structured"])["stars"] == 1
    assert rows["c"]["structured"] is None and rows["c"]["text"] == "echo: three"
    # Strict mode only for schemas its subset accepts.
    bodies = {i.custom_id: i.body for i in items_of(emulator, job.batch_ids[0])}
    assert bodies["b"]["response_format"]["json_schema"]["strict"] is True
    assert "strict" not in bodies["a"]["response_format"]["json_schema"]


async def test_output_schema_refused_where_there_is_no_mechanism(emulator: Emulator) -> None:
    async with client_for(emulator, "openai") as client:
        with pytest.raises(ConfigurationError, match=r"requests\[0\]\.output_schema: not supported by openai"):
            await client.submit("openai.completion/gpt-3.5-turbo-instruct", [{"prompt": "x"}], output_schema=SCHEMA)
        with pytest.raises(ConfigurationError, match="not a valid JSON Schema"):
            await client.submit("openai/gpt-4o-mini", [{"prompt": "x"}], output_schema={"type": 12})


# --- embeddings --------------------------------------------------------------------------------------

EMBEDDING_MODELS = ["openai.embedding/text-embedding-3-small", "google.embedding/gemini-embedding-001",
                    "mistral.embedding/codestral-embed"]


@pytest.mark.parametrize("model", EMBEDDING_MODELS)
async def test_embedding_job_has_requested_dimensions(emulator: Emulator, tmp_path: Path, model: str) -> None:
    provider = parse_model(model).provider
    async with client_for(emulator, provider) as client:
        job = await client.submit(model, [{"custom_id": "a", "value": "first text"},
                                          {"custom_id": "b", "value": "second text"}], defaults={"dimensions": 24})
        await client.wait(job, poll_interval=0.1, timeout=60)
        manifest = await client.write_parquet(job, f"{tmp_path}/emb.parquet")
    assert manifest["counts"] == {"succeeded": 2}
    table = pq.read_table(tmp_path / "emb.parquet")
    assert table.schema.field("embedding").type == pa.list_(pa.float32())
    for row in table.to_pylist():
        assert len(row["embedding"]) == 24
        assert math.isclose(math.sqrt(sum(x * x for x in row["embedding"])), 1.0, rel_tol=1e-5)
    # Priced by input tokens only; Gemini's embedding results carry no token counts, so no cost (never a guess).
    if provider == "google":
        assert manifest["cost_usd"] is None
    else:
        assert manifest["cost_usd"] == pytest.approx(2 * 2 * load_prices().lookup(model).batch_input / 1e6)


@pytest.mark.parametrize("provider", ["groq", "together", "xai", "anthropic"])
def test_no_embedding_batches(provider: str) -> None:
    with pytest.raises(ModelRefError, match="unknown endpoint 'embedding'"):
        parse_model(f"{provider}.embedding/some-model")


# --- cost --------------------------------------------------------------------------------------------

FIXED = {"openai/gpt-4o-mini": {"input": 1.0, "output": 4.0, "batch_discount": 0.5}}


async def test_cost_column_matches_hand_computed_values(emulator: Emulator, tmp_path: Path) -> None:
    requests = [{"custom_id": "a", "prompt": "hello world"},                  # 2 in, 3 out
                {"custom_id": "b", "system": "be brief", "prompt": "one two three"},   # 5 in, 4 out
                {"custom_id": "bad", "prompt": "boom [[error]]"}]             # no usage
    async with client_for(emulator, "openai") as client:
        job = await client.submit("openai/gpt-4o-mini", requests)
        await client.wait(job, poll_interval=0.1, timeout=60)
        manifest = await client.write_parquet(job, f"{tmp_path}/cost.parquet", prices=FIXED)
    rows = rows_of(tmp_path / "cost.parquet")
    # batch prices: 0.5 and 2.0 USD per 1M tokens
    assert (rows["a"]["input_tokens"], rows["a"]["output_tokens"]) == (2, 3)
    assert rows["a"]["cost_usd"] == pytest.approx((2 * 0.5 + 3 * 2.0) / 1e6)
    assert (rows["b"]["input_tokens"], rows["b"]["output_tokens"]) == (5, 4)
    assert rows["b"]["cost_usd"] == pytest.approx((5 * 0.5 + 4 * 2.0) / 1e6)
    assert rows["bad"]["cost_usd"] is None
    assert manifest["cost_usd"] == pytest.approx(7e-6 + 10.5e-6)


async def test_unknown_model_has_null_cost(emulator: Emulator, tmp_path: Path) -> None:
    async with client_for(emulator, "openai") as client:
        job = await client.submit("openai/gpt-9-unreleased", [{"custom_id": "a", "prompt": "hello world"}])
        await client.wait(job, poll_interval=0.1, timeout=60)
        manifest = await client.write_parquet(job, f"{tmp_path}/u.parquet", prices=FIXED)
    assert rows_of(tmp_path / "u.parquet")["a"]["cost_usd"] is None
    assert manifest["cost_usd"] is None


def test_price_table_is_dated_data_with_sources(tmp_path: Path) -> None:
    table = PriceTable.packaged()
    assert table.as_of and all(p["source"].startswith("https://") for p in table.data["providers"].values())
    price = table.lookup("openai/gpt-4o-mini")
    assert price is not None and (price.batch_input, price.batch_output) == (0.075, 0.3)
    assert table.lookup("google/models/gemini-2.5-flash") == table.lookup("google/gemini-2.5-flash")
    assert table.lookup("openai/gpt-9-unreleased") is None
    # A YAML file on any fsspec URL overrides model by model.
    (tmp_path / "p.yaml").write_text("as_of: '2027-01-01'\nproviders:\n  openai:\n    models:\n"
                                     "      gpt-4o-mini: {input: 1.0, output: 2.0}\n")
    merged = load_prices(f"file://{tmp_path}/p.yaml")
    custom = merged.lookup("openai/gpt-4o-mini")
    assert custom is not None and (custom.batch_input, custom.batch_output, custom.as_of) == (0.5, 1.0, "2027-01-01")
    assert merged.lookup("openai/gpt-4o") == table.lookup("openai/gpt-4o")
    with pytest.raises(ConfigurationError, match="batch_discount"):
        load_prices({"openai/gpt-4o-mini": {"input": 1, "output": 1, "batch_discount": 50}})


async def test_max_cost_refused_before_any_http_call(tmp_path: Path) -> None:
    requests = [{"custom_id": f"r{i}", "prompt": "x" * 4000} for i in range(100)]   # ~100k input tokens
    with Emulator(processing_seconds=0.2) as emu:
        async with client_for(emu, "openai") as client:
            with pytest.raises(ConfigurationError, match=r"max_cost_usd: the job's estimated cost is \$0\.0") as info:
                await client.submit("openai/gpt-4o-mini", requests, defaults={"max_output_tokens": 500},
                                    max_cost_usd=0.001)
            assert "raise max_cost_usd" in str(info.value)
            with pytest.raises(ConfigurationError, match=r"no price is known for openai\.chat/gpt-9"):
                await client.submit("openai/gpt-9", requests, max_cost_usd=100)
            assert emu.requests == []
            # (100k x 0.075 + 50k x 0.3) / 1e6 = 0.0225 USD: within 0.05.
            job = await client.submit("openai/gpt-4o-mini", requests, defaults={"max_output_tokens": 500},
                                      max_cost_usd=0.05)
            assert job.request_count == 100 and emu.requests


# --- automatic resubmission --------------------------------------------------------------------------


def ten_requests(tag: str, failing: dict[int, str]) -> list[dict[str, Any]]:
    return [{"custom_id": f"r{i}", "prompt": f"item {i} {tag}" + (f" {failing[i]}" if i in failing else "")}
            for i in range(10)]


@pytest.mark.parametrize("provider", list(PROVIDER_MODELS))
async def test_three_transient_failures_resubmitted_once(emulator: Emulator, tmp_path: Path, provider: str) -> None:
    tag = uuid.uuid4().hex[:8]
    requests = ten_requests(tag, {2: "[[transient]]", 5: "[[transient]]", 7: "[[transient]]"})
    async with client_for(emulator, provider) as client:
        ledger = FsspecLedger(f"file://{tmp_path}/state", f"job-{tag}")
        job = await client.submit(PROVIDER_MODELS[provider], requests, defaults={"max_output_tokens": 64},
                                  ledger=ledger, identity=f"job-{tag}")
        before = len(emulator.batches(provider))
        manifest = await collect_with_retries(client, job, f"file://{tmp_path}/out/", max_item_retries=2,
                                              keep_history=True, poll_interval=0.1, timeout=60)
        after = emulator.batches(provider)
    assert len(after) == before + 1 and len(items_of(emulator, after[-1].id)) == 3
    assert manifest["counts"] == {"succeeded": 10} and manifest["rows"] == 10
    assert manifest["attempts"] == {"1": 7, "2": 3} and manifest["retried"] == 3
    assert [r["request_count"] for r in manifest["rounds"]] == [10, 3]
    table = pq.read_table(tmp_path / "out")
    assert table.num_rows == 10 and sorted(table.column("custom_id").to_pylist()) == sorted(r["custom_id"]
                                                                                           for r in requests)
    rows = {r["custom_id"]: r for r in table.to_pylist()}
    assert {cid for cid, r in rows.items() if r["attempt"] == 2} == {"r2", "r5", "r7"}
    assert all(r["status"] == "succeeded" and r["text"].startswith("echo: item") for r in rows.values())
    assert rows["r5"]["batch_id"] == after[-1].id
    history = pq.read_table(manifest["history_path"].removeprefix("file://")).to_pylist()
    assert sorted((h["custom_id"], h["attempt"], h["status"]) for h in history) == \
        [(f"r{i}", 1, "errored") for i in (2, 5, 7)]
    # Staged results are gone; only the small round ledgers stay, hidden from dataset readers.
    # The merged folder is committed like any folder output (engine/parquet.py): `_SUCCESS` written last.
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["_SUCCESS", "_batchwork-rounds",
                                                                     "_history.parquet", "part-00000.parquet"]


async def test_resubmission_is_idempotent_and_skips_permanent_errors(emulator: Emulator, tmp_path: Path) -> None:
    tag = uuid.uuid4().hex[:8]
    requests = ten_requests(tag, {1: "[[transient]]", 3: "[[error]]", 4: "[[expire]]"})
    async with client_for(emulator, "openai") as client:
        ledger = FsspecLedger(f"file://{tmp_path}/state", f"job-{tag}")
        job = await client.submit("openai/gpt-4o-mini", requests, ledger=ledger, identity=f"job-{tag}")
        before = len(emulator.batches("openai"))
        first = await collect_with_retries(client, job, f"{tmp_path}/out.parquet", max_item_retries=2,
                                           poll_interval=0.1, timeout=60)
        middle = len(emulator.batches("openai"))
        # A retried collect task: every round re-attaches to the batch it already submitted.
        again = await collect_with_retries(client, job, f"{tmp_path}/out.parquet", max_item_retries=2,
                                           poll_interval=0.1, timeout=60)
    # Round 2: the transient item and the expired one; round 3: the expired one again. [[error]] is final.
    assert middle - before == 2 and len(emulator.batches("openai")) == middle
    assert [r["request_count"] for r in first["rounds"]] == [10, 2, 1]
    assert first["rounds"] == again["rounds"] and first["counts"] == again["counts"]
    rows = rows_of(tmp_path / "out.parquet")
    assert (rows["r1"]["status"], rows["r1"]["attempt"]) == ("succeeded", 2)
    assert (rows["r3"]["status"], rows["r3"]["attempt"]) == ("errored", 1)
    assert (rows["r4"]["status"], rows["r4"]["attempt"]) == ("expired", 3)
    assert first["counts"] == {"errored": 1, "expired": 1, "succeeded": 8} and first["history_path"] is None


def test_retryable_codes_are_per_provider() -> None:
    items = pa.table({"status": ["errored", "errored", "expired", "errored", "succeeded"],
                      "error_code": ["overloaded_error", "invalid_request_error", "expired", None, None],
                      "error_message": ["Overloaded", "bad", None, "Service unavailable, try again", None]})
    assert retryable(items, adapter_class("anthropic")).to_pylist() == [True, False, True, False, False]
    assert retryable(items, adapter_class("xai")).to_pylist() == [True, False, True, True, False]


async def test_resubmission_needs_the_kept_requests(emulator: Emulator, tmp_path: Path) -> None:
    async with client_for(emulator, "openai") as client:
        job = await client.submit("openai/gpt-4o-mini", [{"prompt": "x"}])
        with pytest.raises(ConfigurationError, match="max_item_retries: the job kept no copy of its requests"):
            await collect_with_retries(client, job, f"{tmp_path}/o.parquet", max_item_retries=1, poll_interval=0.1)
