"""Issue 7 through Airflow: dag.test() with deferral on every resubmission round, and the cost guard."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from airflow_batchwork.hooks import batchwork as batchwork_hook
from airflow_batchwork.testing import Emulator
from airflow_batchwork.testing.airflow_env import connection_env
from tests.airflow_helpers import load_dag, task_states, xcom


@pytest.fixture
def fresh_emulator(airflow_db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Emulator]:
    """Batches take 1.5 s, so collect defers on the job and again on the resubmission round."""
    monkeypatch.setenv("AIRFLOW_VAR_BATCHWORK_TEST_OUTPUT", f"file://{tmp_path}")
    # The hook caches resolved credentials per process; this emulator listens on a new port.
    cache = getattr(batchwork_hook, "_CREDENTIALS_CACHE", None)
    if cache is not None:
        cache.clear()
    with Emulator(processing_seconds=1.5) as emu:
        for key, value in connection_env(emu).items():
            monkeypatch.setenv(key, value)
        yield emu


def test_retry_round_structured_and_cost_through_dag_test(fresh_emulator: Emulator, tmp_path: Path) -> None:
    run = load_dag("test_issue7_retry").test()

    assert task_states(run) == {"submit": "success", "collect": "success"}
    handle = xcom(run, "submit")
    assert handle["structured"]["all"] in handle["structured"]["schemas"]
    batches = fresh_emulator.batches("openai")
    assert [b.request_count for b in batches] == [10, 3]          # exactly one extra batch, of the three
    manifest = xcom(run, "collect")
    assert manifest["counts"] == {"succeeded": 10} and manifest["attempts"] == {"1": 7, "2": 3}
    assert manifest["rounds"][1]["batch_ids"] == [batches[1].id]
    # The second round ran through BatchCompleteTrigger too: its batch was polled while it ran.
    assert len([r for r in fresh_emulator.requests if r.method == "GET" and r.path.endswith(batches[1].id)]) >= 2

    rows = {r["custom_id"]: r for r in pq.read_table(tmp_path / "out").to_pylist()}
    assert len(rows) == 10 and {c for c, r in rows.items() if r["attempt"] == 2} == {"r2", "r5", "r7"}
    for row in rows.values():
        assert json.loads(row["structured"]) == {"label": "positive", "score": 0.0}
        # cost = (input x 0.5 + output x 2.0) / 1e6 with the DAG's fixed price table
        assert row["cost_usd"] == pytest.approx((row["input_tokens"] * 0.5 + row["output_tokens"] * 2.0) / 1e6)
    assert manifest["cost_usd"] == pytest.approx(sum(r["cost_usd"] for r in rows.values()))
    history = pq.read_table(manifest["history_path"].removeprefix("file://"))
    assert sorted(history.column("custom_id").to_pylist()) == ["r2", "r5", "r7"]


def test_over_budget_fails_before_any_http_call_without_retries(fresh_emulator: Emulator) -> None:
    run = load_dag("test_issue7_over_budget").test()
    assert task_states(run) == {"submit": "failed"}
    assert fresh_emulator.requests == []
