"""Pay once: dedup inside a job and a response cache across runs, against the emulator over real sockets."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pendulum
import pyarrow.parquet as pq
import pytest

from airflow_batchwork.core import BatchClient, Credentials, JobHandle
from airflow_batchwork.engine.cache import ResponseCache
from airflow_batchwork.engine.ledger import FsspecLedger
from airflow_batchwork.testing import Emulator
from airflow_batchwork.testing.airflow_env import connection_env
from airflow_batchwork.values.errors import ConfigurationError
from airflow_batchwork.values.refs import parse_model

MODELS = ["openai/gpt-4o-mini", "anthropic/claude-haiku-4-5", "google/gemini-2.5-flash", "groq/llama-3.1-8b-instant",
          "mistral/mistral-small-latest", "together/meta-llama/Llama-3.3-70B-Instruct-Turbo", "xai/grok-4"]
COMPARED = ["custom_id", "status", "text", "finish_reason", "input_tokens", "output_tokens", "total_tokens",
            "response", "batch_id", "dedup_of"]


def client_for(emulator: Emulator, provider: str) -> BatchClient:
    return BatchClient({provider: Credentials(api_key="test-key", base_url=emulator.base_url(provider))})


def items_sent(emulator: Emulator, job: JobHandle) -> int:
    """How many items the emulator received in this job's batches (xAI keeps them in request groups that name
    their batch)."""
    ids = set(job.batch_ids)
    return sum(len(b.items) for b in emulator.batches() if b.id in ids or b.metadata.get("batch_id") in ids)


async def run_job(emulator: Emulator, tmp_path: Path, model: str, requests: list[dict[str, Any]], name: str,
                  **options: Any) -> tuple[JobHandle, dict[str, Any], dict[str, dict[str, Any]]]:
    provider = parse_model(model).provider
    collect_options = {k: v for k, v in options.items() if k in ("cache", "cache_mode")}
    async with client_for(emulator, provider) as client:
        ledger = FsspecLedger(f"{tmp_path}/state", name)
        job = await client.submit(model, requests, ledger=ledger, identity=name, **options)
        await client.wait(job, poll_interval=0.1, timeout=60)
        manifest = await client.write_parquet(job, f"{tmp_path}/{name}/", **collect_options)
    rows = {r["custom_id"]: r for r in pq.read_table(f"{tmp_path}/{name}/").to_pylist()}
    return job, manifest, rows


async def test_1000_requests_with_400_duplicates_send_600_items_and_write_1000_rows(
        emulator: Emulator, tmp_path: Path) -> None:
    requests = [{"custom_id": f"r{i:04d}", "prompt": f"question {i % 600}"} for i in range(1000)]
    job, manifest, rows = await run_job(emulator, tmp_path, "openai/gpt-4o-mini", requests, "dedup", dedup=True)

    assert items_sent(emulator, job) == 600
    assert job.request_count == 1000 and sum(b.request_count for b in job.batches) == 600
    assert manifest["rows"] == 1000 and len(rows) == 1000 and manifest["counts"] == {"succeeded": 1000}
    assert manifest["reuse"]["deduplicated"] == 400 and manifest["reuse"]["sent"] == 600
    for i in range(1000):
        row = rows[f"r{i:04d}"]
        assert row["text"] == f"echo: question {i % 600}"
        assert row["dedup_of"] == (f"r{i % 600:04d}" if i >= 600 else None)
        assert row["cached"] is False
    # Duplicates share an answer that was paid once: they cost nothing, and the saving is what they would have cost.
    first, copy = rows["r0001"], rows["r0601"]
    assert first["cost_usd"] > 0 and copy["cost_usd"] == 0
    assert manifest["reuse"]["saved_usd"] == pytest.approx(sum(rows[f"r{i % 600:04d}"]["cost_usd"]
                                                              for i in range(600, 1000)))
    assert manifest["cost_usd"] == pytest.approx(sum(r["cost_usd"] for r in rows.values()))


@pytest.mark.parametrize("model", MODELS)
async def test_dedup_key_ignores_custom_id_on_every_provider(emulator: Emulator, tmp_path: Path, model: str) -> None:
    requests = [{"custom_id": "a", "prompt": "same"}, {"custom_id": "b", "prompt": "same"},
                {"custom_id": "c", "prompt": "same", "temperature": 0.5},  # a different body: sent
                {"custom_id": "d", "prompt": "other"}, {"custom_id": "e", "prompt": "same"}]
    job, _, rows = await run_job(emulator, tmp_path, model, requests, "dedup", dedup=True)
    assert items_sent(emulator, job) == 3
    assert {k: r["dedup_of"] for k, r in rows.items()} == {"a": None, "b": "a", "c": None, "d": None, "e": "a"}
    assert rows["b"]["text"] == rows["a"]["text"] == "echo: same" and rows["e"]["status"] == "succeeded"


async def test_dedup_copies_an_errored_answer_too(emulator: Emulator, tmp_path: Path) -> None:
    requests = [{"custom_id": "a", "prompt": "boom [[error]]"}, {"custom_id": "b", "prompt": "boom [[error]]"}]
    job, _, rows = await run_job(emulator, tmp_path, "openai/gpt-4o-mini", requests, "err", dedup=True)
    assert items_sent(emulator, job) == 1
    assert rows["b"]["status"] == "errored" and rows["b"]["dedup_of"] == "a"
    assert rows["b"]["error_code"] == rows["a"]["error_code"]


async def test_second_run_with_cache_creates_no_batch_and_writes_identical_rows(
        emulator: Emulator, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    requests = [{"custom_id": f"q{i}", "prompt": f"fact {i % 40}"} for i in range(50)]
    cache = f"file://{tmp_path}/llm-cache/"
    before = len(emulator.batches("openai"))
    job1, manifest1, rows1 = await run_job(emulator, tmp_path, "openai/gpt-4o-mini", requests, "night1",
                                           dedup=True, cache=cache)
    assert items_sent(emulator, job1) == 40 and manifest1["reuse"]["stored_in_cache"] == 40
    assert all(r["cached"] is False for r in rows1.values())

    caplog.set_level(logging.INFO, logger="airflow_batchwork")
    job2, manifest2, rows2 = await run_job(emulator, tmp_path, "openai/gpt-4o-mini", requests, "night2",
                                           dedup=True, cache=cache)
    assert job2.batches == [] and len(emulator.batches("openai")) == before + 1
    assert manifest2["rows"] == 50 and manifest2["counts"] == {"succeeded": 50} and manifest2["batch_ids"] == []
    assert manifest2["cost_usd"] == 0 and manifest2["reuse"]["cached"] == 50
    assert manifest2["reuse"]["saved_usd"] == pytest.approx(manifest1["cost_usd"] + manifest1["reuse"]["saved_usd"])
    for custom_id, row in rows2.items():
        assert row["cached"] is True and row["cost_usd"] == 0
        assert {k: row[k] for k in COMPARED} == {k: rows1[custom_id][k] for k in COMPARED}
    assert "50 of 50 answers from cache" in caplog.text


async def test_partial_hits_log_the_saving(emulator: Emulator, tmp_path: Path,
                                           caplog: pytest.LogCaptureFixture) -> None:
    cache = f"{tmp_path}/cache/"
    prices = {"openai/gpt-4o-mini": {"input": 1000.0, "output": 1000.0, "batch_discount": 0.5}}
    warm = [{"custom_id": f"w{i}", "prompt": f"topic {i}"} for i in range(42)]
    await run_job(emulator, tmp_path, "openai/gpt-4o-mini", warm, "warm", cache=cache)
    requests = [{"custom_id": f"r{i}", "prompt": f"topic {i}"} for i in range(100)]
    caplog.set_level(logging.INFO, logger="airflow_batchwork")
    provider = "openai"
    async with client_for(emulator, provider) as client:
        job = await client.submit("openai/gpt-4o-mini", requests, cache=cache,
                                  ledger=FsspecLedger(f"{tmp_path}/state", "main"), identity="main")
        assert sum(b.request_count for b in job.batches) == 58
        await client.wait(job, poll_interval=0.1, timeout=60)
        manifest = await client.write_parquet(job, f"{tmp_path}/main.parquet", cache=cache, prices=prices)
    # "topic N" is 2 input tokens, "echo: topic N" 3 output tokens: $0.0025 per answer at these prices.
    assert manifest["reuse"]["cached"] == 42
    assert manifest["reuse"]["saved_usd"] == pytest.approx(42 * 0.0025)
    assert "42 of 100 answers from cache, $0.10 saved" in caplog.text
    assert "58 of 100 requests to send; 42 answers from the response cache" in caplog.text


async def test_errored_answers_are_not_cached(emulator: Emulator, tmp_path: Path) -> None:
    requests = [{"custom_id": "ok", "prompt": "fine"}, {"custom_id": "bad", "prompt": "boom [[error]]"}]
    cache = f"{tmp_path}/cache/"
    await run_job(emulator, tmp_path, "anthropic/claude-haiku-4-5", requests, "one", cache=cache)
    job, _, rows = await run_job(emulator, tmp_path, "anthropic/claude-haiku-4-5", requests, "two", cache=cache)
    assert items_sent(emulator, job) == 1
    assert rows["ok"]["cached"] is True and rows["bad"]["cached"] is False and rows["bad"]["status"] == "errored"


async def test_answers_failing_their_output_schema_are_not_cached(emulator: Emulator, tmp_path: Path) -> None:
    schema = {"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"],
              "additionalProperties": False}
    requests = [{"custom_id": "good", "prompt": "a name"}, {"custom_id": "broken", "prompt": "a name [[invalid]]"}]
    cache = f"{tmp_path}/cache/"
    _, _, first = await run_job(emulator, tmp_path, "openai/gpt-4o-mini", requests, "s1", cache=cache,
                                output_schema=schema)
    assert (first["good"]["status"], first["broken"]["status"]) == ("succeeded", "invalid_output")
    job, _, rows = await run_job(emulator, tmp_path, "openai/gpt-4o-mini", requests, "s2", cache=cache,
                                 output_schema=schema)
    assert items_sent(emulator, job) == 1
    assert rows["good"]["cached"] is True and rows["good"]["structured"] == first["good"]["structured"]
    assert rows["broken"]["cached"] is False and rows["broken"]["status"] == "invalid_output"


async def test_cache_modes_and_ttl(emulator: Emulator, tmp_path: Path) -> None:
    requests = [{"custom_id": "a", "prompt": "alpha"}, {"custom_id": "b", "prompt": "beta"}]
    cache = f"{tmp_path}/cache/"
    model = "openai/gpt-4o-mini"
    # read_only: looks up, stores nothing.
    job, manifest, _ = await run_job(emulator, tmp_path, model, requests, "ro", cache=cache, cache_mode="read_only")
    assert items_sent(emulator, job) == 2 and manifest["reuse"]["stored_in_cache"] == 0
    assert not list((tmp_path / "cache").glob("segments/*.parquet"))
    # read_write stores; a second read_write run sends nothing.
    await run_job(emulator, tmp_path, model, requests, "rw", cache=cache)
    job, _, rows = await run_job(emulator, tmp_path, model, requests, "rw2", cache=cache)
    assert job.batches == [] and all(r["cached"] for r in rows.values())
    # refresh: asks again and stores the new answers.
    job, manifest, rows = await run_job(emulator, tmp_path, model, requests, "fresh", cache=cache, cache_mode="refresh")
    assert items_sent(emulator, job) == 2 and not any(r["cached"] for r in rows.values())
    assert manifest["reuse"]["stored_in_cache"] == 2
    # A TTL shorter than the answers' age: they are not used.
    async with client_for(emulator, "openai") as client:
        old = ResponseCache(cache, ttl=1e-9)
        job = await client.submit(model, requests, cache=old, ledger=FsspecLedger(f"{tmp_path}/state", "ttl"),
                                  identity="ttl")
        assert sum(b.request_count for b in job.batches) == 2
        await client.cancel(job)


async def test_collect_killed_before_its_cache_commit_stores_nothing(emulator: Emulator, tmp_path: Path) -> None:
    """The collect dies when it moves the dataset into place (after streaming every answer into the cache's
    temporary segment): no answer is in the cache, the next job sends everything, a retried collect stores them."""
    from tests.test_incremental import DyingFS, Killed

    requests = [{"custom_id": "a", "prompt": "alpha"}, {"custom_id": "b", "prompt": "beta"}]
    cache = f"{tmp_path}/cache/"
    async with client_for(emulator, "openai") as client:
        job = await client.submit("openai/gpt-4o-mini", requests, cache=cache,
                                  ledger=FsspecLedger(f"{tmp_path}/state", "killed"), identity="killed")
        await client.wait(job, poll_interval=0.1, timeout=60)
        DyingFS.changes, DyingFS.die_at = 0, 1
        with pytest.raises(Killed):
            await client.write_parquet(job, f"dying://{tmp_path}/dataset/out.parquet", cache=cache)
        DyingFS.die_at = 0
        assert len(list((tmp_path / "cache" / "segments").glob("_tmp-*"))) == 1
        assert not list((tmp_path / "cache" / "segments").glob("0*.parquet"))
        again = await client.submit("openai/gpt-4o-mini", requests, cache=cache,
                                    ledger=FsspecLedger(f"{tmp_path}/state", "again"), identity="again")
        assert sum(b.request_count for b in again.batches) == 2
        await client.cancel(again)
        manifest = await client.write_parquet(job, f"{tmp_path}/out.parquet", cache=cache)
        assert manifest["reuse"]["stored_in_cache"] == 2
        third = await client.submit("openai/gpt-4o-mini", requests, cache=cache,
                                    ledger=FsspecLedger(f"{tmp_path}/state", "third"), identity="third")
        assert third.batches == []


async def test_a_killed_collect_leaves_no_partial_answers(emulator: Emulator, tmp_path: Path) -> None:
    """A collect killed while streaming into the cache leaves only a `_tmp-` file: readers skip it."""
    requests = [{"custom_id": "a", "prompt": "alpha"}]
    cache = tmp_path / "cache"
    (cache / "segments").mkdir(parents=True)
    (cache / "segments" / "_tmp-000000000000001-deadbeef.parquet").write_bytes(b"PAR1 half a file")
    job, _, rows = await run_job(emulator, tmp_path, "openai/gpt-4o-mini", requests, "after", cache=f"{cache}/")
    assert items_sent(emulator, job) == 1 and rows["a"]["cached"] is False
    assert len(list((cache / "segments").glob("0*.parquet"))) == 1


async def test_changed_input_of_a_skipped_row_is_a_changed_fingerprint(emulator: Emulator, tmp_path: Path) -> None:
    async with client_for(emulator, "openai") as client:
        ledger = FsspecLedger(f"{tmp_path}/state", "fp")
        first = [{"custom_id": "a", "prompt": "x"}, {"custom_id": "b", "prompt": "x"}]
        job1 = await client.submit("openai/gpt-4o-mini", first, dedup=True, ledger=ledger, identity="fp")
        again = await client.submit("openai/gpt-4o-mini", first, dedup=True, ledger=ledger, identity="fp")
        assert again.batch_ids == job1.batch_ids  # a retry re-attaches
        with pytest.raises(ConfigurationError, match="input changed"):
            await client.submit("openai/gpt-4o-mini", [first[0], {"custom_id": "c", "prompt": "x"}], dedup=True,
                                ledger=ledger, identity="fp", on_changed_input="fail")
        await client.cancel(job1)


async def test_bad_options_fail_before_any_call(emulator: Emulator, tmp_path: Path) -> None:
    requests = [{"custom_id": "a", "prompt": "x"}]
    async with client_for(emulator, "openai") as client:
        with pytest.raises(ConfigurationError, match=r"dedup.*state_path"):
            await client.submit("openai/gpt-4o-mini", requests, dedup=True)
        with pytest.raises(ConfigurationError, match=r"cache.*state_path"):
            await client.submit("openai/gpt-4o-mini", requests, cache=f"{tmp_path}/c/")
        with pytest.raises(ConfigurationError, match="cache_mode"):
            await client.submit("openai/gpt-4o-mini", requests, cache=f"{tmp_path}/c/", cache_mode="sometimes")
        with pytest.raises(ConfigurationError, match="cache_ttl"):
            await client.submit("openai/gpt-4o-mini", requests, cache=f"{tmp_path}/c/", cache_ttl=-1)
        with pytest.raises(ConfigurationError, match="cache"):
            await client.submit("openai/gpt-4o-mini", requests, cache="https://example.com/cache/")
        with pytest.raises(ConfigurationError, match="dedup"):
            await client.submit("openai/gpt-4o-mini", requests, dedup="yes")  # type: ignore[arg-type]


# --- the same DAG run twice ------------------------------------------------------------------------
@pytest.fixture
def airflow_emulator(airflow_db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Emulator]:
    monkeypatch.setenv("AIRFLOW_VAR_BATCHWORK_TEST_OUTPUT", f"file://{tmp_path}")
    with Emulator(processing_seconds=0.5) as emu:
        for key, value in connection_env(emu).items():
            monkeypatch.setenv(key, value)
        yield emu


def test_same_dag_run_twice_second_run_creates_no_batch(airflow_emulator: Emulator, tmp_path: Path) -> None:
    from tests.airflow_helpers import load_dag, task_states, xcom

    dag = load_dag("test_pay_once_nightly")
    first = dag.test(logical_date=pendulum.datetime(2026, 12, 1, tz="UTC"))
    assert task_states(first) == {"submit": "success", "collect": "success"}
    assert len(airflow_emulator.batches("openai")) == 1 and len(airflow_emulator.batches("openai")[0].items) == 8

    second = dag.test(logical_date=pendulum.datetime(2026, 12, 2, tz="UTC"))
    assert task_states(second) == {"submit": "success", "collect": "success"}
    assert len(airflow_emulator.batches("openai")) == 1  # no new batch
    assert xcom(second, "submit")["batches"] == []
    manifest = xcom(second, "collect")
    assert manifest["rows"] == 12 and manifest["reuse"]["cached"] == 12 and manifest["cost_usd"] == 0

    rows1 = {r["custom_id"]: r for r in pq.read_table(tmp_path / "out" / "2026-12-01").to_pylist()}
    rows2 = {r["custom_id"]: r for r in pq.read_table(tmp_path / "out" / "2026-12-02").to_pylist()}
    assert set(rows1) == set(rows2) and len(rows2) == 12
    for custom_id, row in rows2.items():
        assert row["cached"] is True and rows1[custom_id]["cached"] is False
        assert {k: row[k] for k in COMPARED} == {k: rows1[custom_id][k] for k in COMPARED}


def test_backfill_dag_twice_sends_only_the_changed_rows(airflow_emulator: Emulator, tmp_path: Path) -> None:
    import pyarrow as pa

    from airflow_batchwork.engine.incremental import KeyedDataset
    from tests.airflow_helpers import load_dag, task_states, xcom

    def source(texts: dict[str, str]) -> None:
        pq.write_table(pa.Table.from_pylist([{"id": k, "text": v, "region": "eu"} for k, v in texts.items()]),
                       tmp_path / "source.parquet")

    dag = load_dag("test_pay_once_backfill")
    texts = {f"k{i}": f"item {i}" for i in range(20)}
    source(texts)
    first = dag.test(logical_date=pendulum.datetime(2026, 12, 1, tz="UTC"))
    assert task_states(first) == {"submit": "success", "collect": "success"}
    texts["k3"], texts["k99"] = "item 3 revised", "item 99"
    source(texts)
    second = dag.test(logical_date=pendulum.datetime(2026, 12, 2, tz="UTC"))
    assert task_states(second) == {"submit": "success", "collect": "success"}
    assert [b["request_count"] for b in xcom(second, "submit")["batches"]] == [2]
    run = xcom(second, "collect")["incremental"]
    assert (run["new"], run["changed"], run["unchanged"], run["rows"]) == (1, 1, 19, 21)
    table = KeyedDataset(f"{tmp_path}/enriched/").read()
    assert table is not None and table.num_rows == 21
    rows = {r["custom_id"]: r for r in table.to_pylist()}
    assert rows["k3"]["text"] == "echo: item 3 revised" and rows["k99"]["region"] == "eu"


async def test_resubmission_rounds_refuse_a_job_with_skipped_rows(emulator: Emulator, tmp_path: Path) -> None:
    from airflow_batchwork.engine.resubmit import ResubmitRounds

    requests = [{"custom_id": "a", "prompt": "x"}, {"custom_id": "b", "prompt": "x"}]
    async with client_for(emulator, "openai") as client:
        job = await client.submit("openai/gpt-4o-mini", requests, dedup=True,
                                  ledger=FsspecLedger(f"{tmp_path}/state", "rounds"), identity="rounds")
        with pytest.raises(ConfigurationError, match="max_item_retries"):
            ResubmitRounds(job, f"{tmp_path}/out/", max_item_retries=2)
        await client.cancel(job)


def test_priming_through_the_operators(airflow_emulator: Emulator, tmp_path: Path) -> None:
    from tests.airflow_helpers import load_dag, task_states, xcom

    run = load_dag("test_pay_once_priming").test()
    assert task_states(run) == {"submit": "success", "collect": "success"}
    assert [b["request_count"] for b in xcom(run, "submit")["batches"]] == [1, 5]
    rows = {r["custom_id"]: r for r in pq.read_table(tmp_path / "primed.parquet").to_pylist()}
    assert rows["q0"]["cache_write_tokens"] == 4500
    assert all(rows[f"q{i}"]["cache_read_tokens"] == 4500 for i in range(1, 6))
