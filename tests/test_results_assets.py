"""Collect publishes its Parquet output as an Asset; DAGs scheduled on it run and see counts in the event extra."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pendulum
import pytest

from airflow_batchwork.links import BatchConsoleLink
from airflow_batchwork.testing import Emulator
from airflow_batchwork.testing.airflow_env import connection_env
from airflow_batchwork.webhooks.signing import generate_secret, verify
from tests.airflow_helpers import load_dag, task_states, xcom
from tests.dags.batchwork_event_dags import STATIC_RESULTS
from tests.webhook_helpers import Receiver, forget_cached_credentials

SECRET = generate_secret()


@pytest.fixture
def env(airflow_db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Receiver]:
    monkeypatch.setenv("AIRFLOW_VAR_BATCHWORK_TEST_OUTPUT", f"file://{tmp_path}")
    forget_cached_credentials()
    with Emulator(processing_seconds=0.5) as emu, Receiver(statuses=[503, 200]) as receiver:
        for key, value in connection_env(emu).items():
            monkeypatch.setenv(key, value)
        monkeypatch.setenv("AIRFLOW_VAR_BATCHWORK_NOTIFY_URL", receiver.url)
        monkeypatch.setenv("AIRFLOW_CONN_BATCHWORK_NOTIFY", json.dumps({"conn_type": "http", "password": SECRET}))
        yield receiver
    forget_cached_credentials()


def _queued_for(dag_id: str) -> bool:
    from airflow.models.asset import AssetDagRunQueue
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        return session.scalar(select(AssetDagRunQueue).where(AssetDagRunQueue.target_dag_id == dag_id)) is not None


def test_downstream_dags_run_on_new_results(env: Receiver, tmp_path: Path) -> None:
    run = load_dag("test_results_asset").test(logical_date=pendulum.datetime(2026, 11, 20, tz="UTC"))
    assert task_states(run) == {"submit": "success", "collect_static": "success", "collect_templated": "success"}
    handle = xcom(run, "submit")
    # No console link for a batch on the emulator: the provider's console has no page for it
    # (real base URLs: tests/test_event_parts.py).
    assert handle["batches"] and xcom(run, "submit", key=BatchConsoleLink().xcom_key) in (None, "")

    # Static output path: Asset(output_path). Templated: the alias, resolved to the rendered path.
    for consumer, path in (("test_on_static_results", STATIC_RESULTS),
                           ("test_on_templated_results", f"file://{tmp_path}/2026-11-20/")):
        assert _queued_for(consumer), consumer
        consumed = load_dag(consumer).test()
        assert consumed.state == "success"
        extra = xcom(consumed, "read")
        assert extra["path"] == path and extra["asset_uri"] == path.rstrip("/")
        assert (extra["rows"], extra["counts"], extra["state"]) == (2, {"succeeded": 1, "errored": 1}, "completed")
        assert extra["batch_ids"] == [b["id"] for b in handle["batches"]]

    # The templated collect's on_success_callback posted a signed completion event (after one 503).
    assert len(env.received) == 2
    delivered = env.received[-1]
    verify(SECRET, delivered.headers, delivered.body)
    event = json.loads(delivered.body)
    assert event["type"] == "batchwork.job.completed"
    assert event["data"]["job"] == handle and event["data"]["path"] == f"file://{tmp_path}/2026-11-20/"
