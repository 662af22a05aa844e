"""Every example DAG runs end to end with dag.test() against the emulator."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from airflow_batchwork.testing import Emulator
from airflow_batchwork.testing.airflow_env import connection_env
from tests.airflow_helpers import load_dag, task_states, xcom


@pytest.fixture
def offline(airflow_db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.setenv("AIRFLOW_VAR_BATCHWORK_OUTPUT_ROOT", f"file://{tmp_path}/out")
    with Emulator(processing_seconds=0.5) as emu:
        for key, value in connection_env(emu).items():
            monkeypatch.setenv(key, value)
        yield tmp_path


def test_enrichment(offline: Path) -> None:
    run = load_dag("batchwork_enrichment").test()
    assert run.state == "success", task_states(run)
    manifest = xcom(run, "collect")
    assert manifest["rows"] == 5 and manifest["counts"] == {"succeeded": 4, "errored": 1}
    table = pq.read_table(manifest["path"].removeprefix("file://"))
    assert table.num_rows == 5
    texts = table.column("text").drop_null().to_pylist()
    assert all(t.startswith("echo: Write a one-line product summary") for t in texts)


def test_nightly_eval_maps_over_models(offline: Path) -> None:
    run = load_dag("batchwork_nightly_eval").test()
    assert run.state == "success", task_states(run)
    scores = xcom(run, "compare")
    assert len(scores) == 7 and set(scores.values()) == {1.0}
    assert {"openai.chat/gpt-4o-mini", "anthropic/claude-haiku-4-5", "google.chat/gemini-2.5-flash"} <= set(scores)
    files = sorted((offline / "out" / "eval").rglob("*.parquet"))
    assert len(files) == 7
    schemas = {pq.read_schema(f).remove_metadata() for f in files}
    assert len(schemas) == 1


def test_backfill_from_file(offline: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    source = offline / "tickets.parquet"
    ids = [f"t{i:04d}" for i in range(30)]
    pq.write_table(pa.table({"ticket_id": ids, "body": [f"ticket body {i}" for i in range(30)],
                             "extra": list(range(30))}), source)
    monkeypatch.setenv("AIRFLOW_VAR_BATCHWORK_BACKFILL_INPUT", f"file://{source}")
    run = load_dag("batchwork_backfill_migration").test()
    assert run.state == "success", task_states(run)
    manifest = xcom(run, "collect")
    assert manifest["rows"] == 30
    table = pq.read_table(manifest["path"].removeprefix("file://"))
    assert sorted(table.column("custom_id").to_pylist()) == ids


# Runs without a logical date: what `airflow dags trigger`, the REST API and the UI's trigger button create.
@pytest.mark.parametrize("dag_id", ["batchwork_enrichment", "batchwork_nightly_eval", "batchwork_backfill_migration"])
def test_example_triggered_by_hand(offline: Path, monkeypatch: pytest.MonkeyPatch, dag_id: str) -> None:
    source = offline / "tickets.parquet"
    pq.write_table(pa.table({"ticket_id": ["t1", "t2"], "body": ["a", "b"]}), source)
    monkeypatch.setenv("AIRFLOW_VAR_BATCHWORK_BACKFILL_INPUT", f"file://{source}")
    run = load_dag(dag_id).test(logical_date=None)
    assert run.logical_date is None
    assert run.state == "success", task_states(run)
    files = sorted((offline / "out").rglob("*.parquet"))
    assert files, "no Parquet written"
    run_folder = run.run_id.replace(":", "-").replace("+", "-")
    assert all(run_folder in str(f) and run.run_after.strftime("%Y-%m-%d") in str(f) for f in files), files
