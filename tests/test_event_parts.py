"""Small parts of the event-driven layer: trigger serialization, console links, outlets, payload parsing."""

from __future__ import annotations

import pytest
from airflow.sdk import Asset, AssetAlias

from airflow_batchwork.assets import batch_completions, event_extra, results_outlet
from airflow_batchwork.links import BatchConsoleLink, batch_console_url
from airflow_batchwork.triggers.batch import BatchCompleteTrigger
from airflow_batchwork.triggers.webhook import WebhookBatchCompleteTrigger
from airflow_batchwork.values.errors import ConfigurationError
from airflow_batchwork.webhooks.events import GEMINI, OPENAI, WebhookPayloadError

JOB = {"version": 1, "provider": "openai", "model": "openai.chat/gpt-4o-mini",
       "batches": [{"id": "batch_1", "request_count": 2}], "request_count": 2}


def test_webhook_trigger_serializes_and_upgrades_a_plain_trigger() -> None:
    plain = BatchCompleteTrigger(job=JOB, conn_id="c", poll_interval=600, end_time=123.0)
    woken = WebhookBatchCompleteTrigger.from_trigger(plain, wake_check_interval=2)
    path, kwargs = woken.serialize()
    assert path == "airflow_batchwork.triggers.webhook.WebhookBatchCompleteTrigger"
    assert kwargs == {**plain.serialize()[1], "wake_check_interval": 2.0}
    assert WebhookBatchCompleteTrigger(**kwargs).serialize() == (path, kwargs)


def test_console_links() -> None:
    assert batch_console_url(JOB) == "https://platform.openai.com/batches/batch_1"
    gemini = {**JOB, "provider": "google", "model": "google/gemini-2.5-flash",
              "batches": [{"id": "batches/x", "request_count": 2}]}
    assert batch_console_url(gemini) is None

    class Submitted:
        model = "google/gemini-2.5-flash"

    # No handle and a provider without console page: an empty link, without an XCom lookup.
    assert BatchConsoleLink().get_link(Submitted(), ti_key=None) == ""  # type: ignore[arg-type]


def test_console_link_only_for_the_providers_own_api() -> None:
    assert batch_console_url(JOB, "https://api.openai.com/v1") == "https://platform.openai.com/batches/batch_1"
    assert batch_console_url(JOB, None) == "https://platform.openai.com/batches/batch_1"
    assert batch_console_url(JOB, "http://127.0.0.1:8090/openai/v1") is None  # the emulator
    assert batch_console_url(JOB, "https://llm-gateway.example.com/v1") is None

    class Failed:
        model = "openai/gpt-4o-mini"
        _console_url = ""  # set by execute before anything could fail

    # A task that failed before it had a batch: empty link, no XCom lookup (no "XCom not found" warning).
    assert BatchConsoleLink().get_link(Failed(), ti_key=None) == ""  # type: ignore[arg-type]


def test_results_outlets() -> None:
    assert results_outlet("s3://b/out/", None, dag_id="d", task_id="t") == Asset(name="s3://b/out/", uri="s3://b/out/")
    assert results_outlet("s3://b/{{ ds }}/", None, dag_id="d", task_id="t") == AssetAlias("batchwork-results:d.t")
    assert results_outlet("s3://b/{{ ds }}/", False, dag_id="d", task_id="t") is None
    with pytest.raises(ConfigurationError, match="templated"):
        results_outlet("s3://b/out/", "s3://b/{{ ds }}/", dag_id="d", task_id="t")
    extra = event_extra({"path": "p", "files": ["a", "b"], "rows": 3, "counts": {"succeeded": 3}, "cost_usd": 0.5,
                         "state": "completed"})
    assert extra == {"path": "p", "rows": 3, "counts": {"succeeded": 3}, "state": "completed", "file_count": 2,
                     "cost_usd": 0.5}
    assert batch_completions("openai").uri == "batchwork://openai/batches"


def test_provider_payloads() -> None:
    notice = OPENAI.parse({"id": "evt_1", "object": "event", "type": "batch.expired", "created_at": 1,
                           "data": {"id": "batch_9"}})
    assert notice is not None and (notice.batch_id, notice.status, notice.event_id) == ("batch_9", "expired", "evt_1")
    assert OPENAI.parse({"type": "response.completed", "data": {"id": "resp_1"}}) is None
    gemini = GEMINI.parse({"type": "batch.succeeded", "version": "v1", "timestamp": "2026-01-01T00:00:00Z",
                           "data": {"id": "batch_123456", "output_file_uri": "gs://b/out.jsonl"}})
    assert gemini is not None and (gemini.batch_id, gemini.status, gemini.output_uri) == (
        "batches/batch_123456", "completed", "gs://b/out.jsonl")
    with pytest.raises(WebhookPayloadError):
        OPENAI.parse({"type": "batch.completed", "data": {}})
