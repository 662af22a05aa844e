"""Large jobs: files in, automatic sharding at each provider's binding limit, input columns carried through."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from airflow_batchwork.core import BatchClient, ConfigurationError, Credentials
from airflow_batchwork.engine.ledger import FsspecLedger
from airflow_batchwork.engine.sources import read_requests
from airflow_batchwork.testing import Emulator
from airflow_batchwork.testing.airflow_env import connection_env
from tests.airflow_helpers import load_dag, task_states, xcom


def client(emu: Emulator, provider: str) -> BatchClient:
    return BatchClient({provider: Credentials("k", emu.base_url(provider))})


@pytest.mark.parametrize(
    ("model", "limits", "expected"),
    [
        ("openai/gpt-4o-mini", {"max_requests": 4}, [4, 4, 2]),
        ("groq/llama-3.3-70b-versatile", {"max_requests": 4}, [4, 4, 2]),
        ("together/meta-llama/Llama-3.3-70B-Instruct-Turbo", {"max_requests": 4}, [4, 4, 2]),
        ("mistral/mistral-small-latest", {"max_requests": 5}, [5, 5]),
        # Anthropic's binding limit in practice is bytes (256 MB), lowered here to ~3 requests' worth.
        ("anthropic/claude-haiku-4-5", {"max_bytes": 500}, None),
    ],
)
async def test_sharding_at_binding_limit(emulator: Emulator, tmp_path: Path, model: str,
                                         limits: dict[str, int], expected: list[int] | None) -> None:
    provider = model.split("/")[0]
    requests = [{"custom_id": f"r{i:02d}", "prompt": f"item {i}"} for i in range(10)]
    before = len(emulator.batches(provider))
    async with client(emulator, provider) as c:
        job = await c.submit(model, requests, limits=limits)
        sizes = [b.request_count for b in job.batches]
        if expected is not None:
            assert sizes == expected
        else:
            assert len(sizes) > 1 and sum(sizes) == 10
        await c.wait(job, poll_interval=0.1, timeout=60)
        manifest = await c.write_parquet(job, f"{tmp_path}/out/")
    assert len(emulator.batches(provider)) - before == len(sizes)
    assert len(manifest["files"]) == len(sizes)
    ids = pq.read_table(tmp_path / "out").column("custom_id").to_pylist()
    assert sorted(ids) == [r["custom_id"] for r in requests]


async def test_passthrough_columns_join_back(emulator: Emulator, tmp_path: Path) -> None:
    source = tmp_path / "tickets.parquet"
    pq.write_table(pa.table({"ticket_id": [f"t{i}" for i in range(6)], "body": [f"text {i}" for i in range(6)],
                             "region": ["eu", "us", "eu", "apac", "us", "eu"], "score": [1, 2, 3, 4, 5, 6]}), source)
    requests = read_requests(f"file://{source}", columns={"custom_id": "ticket_id", "prompt": "body"},
                             passthrough=["region", "score"])
    ledger = FsspecLedger(f"file://{tmp_path}/state", "backfill-1")
    async with client(emulator, "openai") as c:
        job = await c.submit("openai/gpt-4o-mini", requests, ledger=ledger, identity="backfill-1",
                             limits={"max_requests": 4})
        assert job.passthrough == ["region", "score"]
        await c.wait(job, poll_interval=0.1, timeout=60)
        await c.write_parquet(job, f"{tmp_path}/out/")
    table = pq.read_table(tmp_path / "out").sort_by("custom_id")
    assert table.column("region").to_pylist() == ["eu", "us", "eu", "apac", "us", "eu"]
    assert table.column("score").to_pylist() == [1, 2, 3, 4, 5, 6]
    assert table.column("text").to_pylist()[0] == "echo: text 0"


async def test_passthrough_needs_a_state_store(emulator: Emulator, tmp_path: Path) -> None:
    source = tmp_path / "in.jsonl"
    source.write_text(json.dumps({"custom_id": "a", "prompt": "x", "region": "eu"}) + "\n")
    before = len(emulator.requests)
    async with client(emulator, "openai") as c:
        with pytest.raises(ConfigurationError, match="passthrough_columns"):
            await c.submit("openai/gpt-4o-mini", read_requests(str(source), passthrough=["region"]))
    assert len(emulator.requests) == before


@pytest.fixture
def dag_env(airflow_db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Emulator]:
    monkeypatch.setenv("AIRFLOW_VAR_BATCHWORK_TEST_OUTPUT", f"file://{tmp_path}")
    with Emulator(processing_seconds=1) as emu:
        for key, value in connection_env(emu).items():
            monkeypatch.setenv(key, value)
        yield emu


def test_120k_requests_three_batches_one_dataset(dag_env: Emulator, tmp_path: Path) -> None:
    with (tmp_path / "requests.jsonl").open("w") as out:
        for i in range(120_000):
            out.write(json.dumps({"custom_id": f"row-{i:06d}", "prompt": f"classify row {i}"}) + "\n")
    run = load_dag("test_scale_120k").test()
    assert task_states(run) == {"submit": "success", "collect": "success"}
    handle = xcom(run, "submit")
    assert [b["request_count"] for b in handle["batches"]] == [50_000, 50_000, 20_000]
    assert len(dag_env.batches("openai")) == 3
    manifest = xcom(run, "collect")
    assert manifest["rows"] == 120_000 and manifest["counts"] == {"succeeded": 120_000}
    ids = pq.read_table(tmp_path / "results", columns=["custom_id"]).column("custom_id")
    assert len(ids) == 120_000 and pc.count_distinct(ids).as_py() == 120_000
