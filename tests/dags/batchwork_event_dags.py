"""DAGs for the event-driven tests: webhook-woken waits, asset-scheduled consumers, signed notifications.

Outputs go to the Airflow Variable `batchwork_test_output`, which the tests set per test.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import pendulum
from airflow.providers.standard.operators.python import PythonOperator
from airflow.sdk import DAG, Asset, AssetAlias

from airflow_batchwork.assets import batch_completions, results_alias
from airflow_batchwork.notifications.webhook import BatchWebhookNotifier
from airflow_batchwork.operators.batch import CollectResultsOperator, SubmitBatchOperator

START = pendulum.datetime(2026, 1, 1, tz="UTC")
OUTPUT = "{{ var.value.batchwork_test_output }}"
TWO = [{"custom_id": "a", "prompt": "hello there"}, {"custom_id": "b", "prompt": "boom [[error]]"}]
# A static results path (outlets need one at parse time); the same on every parse of this file.
STATIC_RESULTS = (Path(tempfile.gettempdir()) / "batchwork-event-dags" / "results.parquet").as_uri()


def _latest_event(uri: str | None = None, alias: str | None = None, **context: Any) -> dict[str, Any]:
    """The newest event of the inlet asset (or alias): its extra, plus the asset URI it landed on."""
    events = context["inlet_events"][Asset(uri) if uri else AssetAlias(alias or "")]
    return {**events[-1].extra, "asset_uri": events[-1].asset.uri}


# A 300 s poll interval: only the webhook can end these waits within a test's lifetime.
for _provider, _model in (("openai", "openai/gpt-4o-mini"), ("google", "google/gemini-2.5-flash")):
    with DAG(dag_id=f"test_webhook_wake_{_provider}", schedule=None, start_date=START) as _dag:
        _submit = SubmitBatchOperator(task_id="submit", model=_model, requests=TWO)
        CollectResultsOperator(task_id="collect", job=_submit.output, poll_interval=300, wake_on_webhook=True,
                               output_path=OUTPUT + "/wake/", inlets=[batch_completions(_provider)])
    globals()[f"webhook_wake_{_provider}"] = _dag

    # Starts (when the scheduler runs) on every completion webhook of that provider.
    with DAG(dag_id=f"test_on_{_provider}_completions", schedule=[batch_completions(_provider)], start_date=START,
             is_paused_upon_creation=False) as _dag:
        PythonOperator(task_id="read", python_callable=_latest_event,
                       op_kwargs={"uri": batch_completions(_provider).uri}, inlets=[batch_completions(_provider)])
    globals()[f"on_{_provider}_completions"] = _dag

# Results as assets: a static path is an Asset(output_path); a templated one goes through an alias.
with DAG(dag_id="test_results_asset", schedule=None, start_date=START) as results_asset_dag:
    _submit = SubmitBatchOperator(task_id="submit", model="openai/gpt-4o-mini", requests=TWO,
                                  wait_for_completion=True, poll_interval=0.3)
    CollectResultsOperator(task_id="collect_static", job=_submit.output, output_path=STATIC_RESULTS)
    CollectResultsOperator(task_id="collect_templated", job=_submit.output, output_path=OUTPUT + "/{{ ds }}/",
                           on_success_callback=BatchWebhookNotifier(url="{{ var.value.batchwork_notify_url }}",
                                                                    conn_id="batchwork_notify", backoff=0.05))

with DAG(dag_id="test_on_static_results", schedule=[Asset(STATIC_RESULTS)], start_date=START,
         is_paused_upon_creation=False) as on_static_results:
    PythonOperator(task_id="read", python_callable=_latest_event, op_kwargs={"uri": STATIC_RESULTS},
                   inlets=[Asset(STATIC_RESULTS)])

_ALIAS = results_alias("test_results_asset", "collect_templated")
with DAG(dag_id="test_on_templated_results", schedule=[_ALIAS], start_date=START,
         is_paused_upon_creation=False) as on_templated_results:
    PythonOperator(task_id="read", python_callable=_latest_event, op_kwargs={"alias": _ALIAS.name}, inlets=[_ALIAS])
