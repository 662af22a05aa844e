"""BatchWebhookNotifier against a local HTTP server: signed deliveries, retries on 5xx, no retry on 4xx."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import openai
import pytest

from airflow_batchwork.notifications.webhook import BatchWebhookNotifier, WebhookDeliveryError
from airflow_batchwork.webhooks.signing import generate_secret, verify
from tests.webhook_helpers import Receiver

SECRET = generate_secret()
MANIFEST = {"path": "s3://bucket/out/", "files": ["s3://bucket/out/part-00000.parquet"], "rows": 3,
            "counts": {"succeeded": 2, "errored": 1}, "provider": "openai", "model": "openai.chat/gpt-4o-mini",
            "batch_ids": ["batch_1"], "state": "completed", "cost_usd": 0.0012}


@dataclass
class TaskInstance:
    """The part of Airflow's RuntimeTaskInstance a task callback's context offers."""

    dag_id: str = "enrich"
    run_id: str = "manual__1"
    task_id: str = "collect"
    map_index: int = -1
    try_number: int = 1

    def xcom_pull(self, task_ids: str, key: str = "return_value") -> Any:
        return dict(MANIFEST) if task_ids == "collect" else None


def _context() -> dict[str, Any]:
    return {"ti": TaskInstance(), "task": None}


def test_delivery_is_signed_and_retried_on_5xx() -> None:
    with Receiver(statuses=[503, 502, 200]) as receiver:
        BatchWebhookNotifier(url=receiver.url, secret=SECRET, backoff=0.01)(_context())

    assert len(receiver.received) == 3
    ids = {r.headers["webhook-id"] for r in receiver.received}
    assert len(ids) == 1  # every attempt is the same message, re-signed
    last = receiver.received[-1]
    verify(SECRET, last.headers, last.body)  # the same verifier the intake uses
    openai.OpenAI(api_key="unused", webhook_secret=SECRET).webhooks.verify_signature(last.body, last.headers)
    event = json.loads(last.body)
    assert event["type"] == "batchwork.job.completed"
    data = event["data"]
    assert (data["path"], data["rows"], data["counts"], data["cost_usd"]) == (
        "s3://bucket/out/", 3, {"succeeded": 2, "errored": 1}, 0.0012)
    assert data["job"] == {"provider": "openai", "model": "openai.chat/gpt-4o-mini", "batch_ids": ["batch_1"]}
    assert data["airflow"] == {"dag_id": "enrich", "run_id": "manual__1", "task_id": "collect", "map_index": -1,
                               "try_number": 1}


def test_client_errors_are_not_retried_and_retries_are_bounded() -> None:
    with Receiver(statuses=[400]) as receiver, pytest.raises(WebhookDeliveryError, match="HTTP 400"):
        BatchWebhookNotifier(url=receiver.url, secret=SECRET, backoff=0.01)(_context())
    assert len(receiver.received) == 1

    with Receiver(statuses=[500]) as receiver, pytest.raises(WebhookDeliveryError, match="after 3 attempts"):
        BatchWebhookNotifier(url=receiver.url, secret=SECRET, max_attempts=3, backoff=0.01)(_context())
    assert len(receiver.received) == 3


def test_transport_errors_are_retried() -> None:
    with Receiver() as receiver:
        dead = receiver.url
    with pytest.raises(WebhookDeliveryError, match="ConnectError"):
        BatchWebhookNotifier(url=dead, secret=SECRET, max_attempts=2, backoff=0.01)(_context())


def test_secret_and_url_from_a_connection(monkeypatch: pytest.MonkeyPatch) -> None:
    rotated = generate_secret()
    with Receiver() as receiver:
        monkeypatch.setenv("AIRFLOW_CONN_MY_HOOK", json.dumps(
            {"conn_type": "http", "password": f"{SECRET} {rotated}", "extra": {"url": receiver.url}}))
        BatchWebhookNotifier(conn_id="my_hook")(_context())
    received = receiver.received[0]
    assert len(received.headers["webhook-signature"].split()) == 2
    verify(rotated, received.headers, received.body)
