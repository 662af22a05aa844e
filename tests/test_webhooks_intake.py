"""The webhook intake plugin over real HTTP: rejections, and emulator webhooks that wake a waiting DAG at once."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
from fastapi import FastAPI

from airflow_batchwork.assets import batch_completions
from airflow_batchwork.plugins.webhooks import BatchworkWebhooksPlugin
from airflow_batchwork.testing import Emulator
from airflow_batchwork.testing.airflow_env import connection_env
from airflow_batchwork.webhooks.signing import generate_secret, signed_headers
from tests.airflow_helpers import load_dag, task_states, xcom
from tests.webhook_helpers import Receiver, forget_cached_credentials, serve_asgi

SECRET = generate_secret()


def _api_server_app() -> FastAPI:
    """Mount the plugin's apps the way Airflow's API server does (`init_plugins`: app.mount(url_prefix, app))."""
    root = FastAPI()
    for entry in BatchworkWebhooksPlugin.fastapi_apps:
        root.mount(entry["url_prefix"], entry["app"])
    return root


@pytest.fixture
def intake(airflow_db: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The intake on 127.0.0.1, secrets from the documented env vars; yields its origin."""
    monkeypatch.setenv("OPENAI_WEBHOOK_SECRET", SECRET)
    monkeypatch.setenv("GEMINI_WEBHOOK_SECRET", SECRET)
    with serve_asgi(_api_server_app()) as origin:
        yield origin


def _event(batch_id: str, event_type: str = "batch.completed") -> bytes:
    return json.dumps({"id": f"evt_{batch_id}", "object": "event", "type": event_type,
                       "created_at": int(time.time()), "data": {"id": batch_id}, "note": "body-only-marker"}).encode()


def _post(url: str, body: bytes, headers: dict[str, str]) -> httpx.Response:
    return httpx.post(url, content=body, headers={"content-type": "application/json", **headers})


def test_rejections_and_statuses(
    intake: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    url = f"{intake}/batchwork/webhooks/openai"
    body = _event("batch_rejections")
    caplog.set_level(logging.INFO, logger="airflow_batchwork.plugins.webhooks")

    assert httpx.post(f"{intake}/batchwork/webhooks/anthropic", content=body).status_code == 404
    unsigned = _post(url, body, {})
    assert (unsigned.status_code, unsigned.json()["error"]) == (400, "missing_header")
    wrong = _post(url, body, signed_headers(generate_secret(), body))
    assert (wrong.status_code, wrong.json()["error"]) == (401, "invalid_signature")
    stale = _post(url, body, signed_headers(SECRET, body, timestamp=int(time.time()) - 600))
    assert (stale.status_code, stale.json()["error"]) == (401, "timestamp_out_of_tolerance")
    future = _post(url, body, signed_headers(SECRET, body, timestamp=int(time.time()) + 600))
    assert future.status_code == 401
    tampered = _post(url, body.replace(b"batch_rejections", b"batch_elsewhere"), signed_headers(SECRET, body))
    assert tampered.status_code == 401
    not_json = b"not json"
    assert _post(url, not_json, signed_headers(SECRET, not_json)).status_code == 400
    huge = b"x" * (1024 * 1024 + 1)
    assert _post(url, huge, signed_headers(SECRET, huge)).status_code == 413

    other = json.dumps({"id": "evt_x", "object": "event", "type": "response.completed", "created_at": 1,
                        "data": {"id": "resp_1"}}).encode()
    assert _post(url, other, signed_headers(SECRET, other)).json() == {"status": "ignored"}

    headers = signed_headers(SECRET, body, webhook_id="msg_rejections")
    first = _post(url, body, headers)
    assert (first.status_code, first.json()["status"]) == (200, "accepted")
    replay = _post(url, body, headers)
    assert (replay.status_code, replay.json()["error"]) == (409, "replayed")
    # The sender's retry of the same webhook id, signed anew: acknowledged, not processed twice.
    redelivery = _post(url, body, signed_headers(SECRET, body, webhook_id="msg_rejections",
                                                 timestamp=int(headers["webhook-timestamp"]) + 1))
    assert (redelivery.status_code, redelivery.json()["status"]) == (200, "duplicate")

    monkeypatch.delenv("OPENAI_WEBHOOK_SECRET")
    assert _post(url, body, signed_headers(SECRET, body)).status_code == 503
    # Rejections are logged, bodies never.
    assert "Rejected openai webhook" in caplog.text and "body-only-marker" not in caplog.text


def test_emulator_webhooks_are_real_signed_events() -> None:
    """OpenAI's SDK unwraps the emulator's webhooks; a 5xx answer gets retried with the same webhook id."""
    with Receiver(statuses=[500, 200]) as receiver, Emulator(processing_seconds=0.3) as emu:
        emu.configure_webhook("openai", receiver.url, SECRET)
        client = openai.OpenAI(api_key="k", base_url=emu.base_url("openai"))
        line = {"custom_id": "a", "method": "POST", "url": "/v1/chat/completions",
                "body": {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}}
        uploaded = client.files.create(file=("in.jsonl", json.dumps(line).encode()), purpose="batch")
        batch = client.batches.create(input_file_id=uploaded.id, endpoint="/v1/chat/completions",
                                      completion_window="24h")
        delivery = emu.webhooks.wait_for(batch.id)

    assert delivery.ok and delivery.attempts == 2 and delivery.event_type == "batch.completed"
    first, second = receiver.received
    assert first.headers["webhook-id"] == second.headers["webhook-id"] == delivery.webhook_id
    assert first.headers["user-agent"].startswith("OpenAI/1.0")
    event = openai.OpenAI(api_key="k", webhook_secret=SECRET).webhooks.unwrap(second.body, second.headers)
    assert (event.type, event.object, event.data.id) == ("batch.completed", "event", batch.id)


def _asset_events(uri: str) -> list[dict]:
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        rows = session.scalars(select(AssetEvent).join(AssetModel, AssetEvent.asset_id == AssetModel.id)
                               .where(AssetModel.uri == uri))
        return [dict(row.extra) for row in rows]


def _queued_for(dag_id: str) -> bool:
    from airflow.models.asset import AssetDagRunQueue
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        return session.scalar(select(AssetDagRunQueue).where(AssetDagRunQueue.target_dag_id == dag_id)) is not None


@pytest.mark.parametrize("provider", ["openai", "google"])
def test_webhook_wakes_waiting_dag_before_its_next_poll(
    intake: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, provider: str
) -> None:
    route = "gemini" if provider == "google" else provider
    monkeypatch.setenv("AIRFLOW_VAR_BATCHWORK_TEST_OUTPUT", f"file://{tmp_path}")
    forget_cached_credentials()
    with Emulator(processing_seconds=3, webhooks={provider: (f"{intake}/batchwork/webhooks/{route}", SECRET)}) as emu:
        for key, value in connection_env(emu).items():
            monkeypatch.setenv(key, value)
        started = time.monotonic()
        run = load_dag(f"test_webhook_wake_{provider}").test()
        elapsed = time.monotonic() - started
        handle = xcom(run, "submit")
        batch_id = handle["batches"][0]["id"]
        delivery = emu.webhooks.wait_for(batch_id)
        polls = [r for r in emu.requests if r.method == "GET" and r.path.endswith(batch_id)]
    forget_cached_credentials()

    assert run.state == "success" and task_states(run) == {"submit": "success", "collect": "success"}
    # The collect task deferred with a 300 s poll interval; the webhook ended the wait within seconds.
    assert elapsed < 60, elapsed
    # A handful of status reads (collect, the trigger's first poll, the woken poll, collect again), no busy loop.
    assert delivery.ok and len(polls) < 10
    assert xcom(run, "collect")["counts"] == {"succeeded": 1, "errored": 1}

    # The webhook became an asset event on batchwork://<provider>/batches ...
    uri = batch_completions(provider).uri
    notices = [e for e in _asset_events(uri) if e["batch_id"] == batch_id]
    assert len(notices) == 1 and notices[0]["status"] == "completed"
    assert notices[0]["webhook_id"] == delivery.webhook_id
    # ... which queued the DAG scheduled on it; run it, and it sees the event.
    consumer = f"test_on_{provider}_completions"
    assert _queued_for(consumer)
    consumed = load_dag(consumer).test()
    assert consumed.state == "success"
    seen = xcom(consumed, "read")
    assert (seen["batch_id"], seen["asset_uri"]) == (batch_id, uri)
