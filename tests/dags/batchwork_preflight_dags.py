"""DAGs for the pre-flight tests (tests/test_preflight.py): mistakes caught before the paid call.

Outputs and connections come from Airflow Variables / env vars the tests set per test.
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import DAG

from airflow_batchwork.operators.batch import CollectResultsOperator, SubmitBatchOperator

START = pendulum.datetime(2026, 1, 1, tz="UTC")
TWO = [{"custom_id": "a", "prompt": "hello there"}, {"custom_id": "b", "prompt": "second"}]
OUTPUT = "{{ var.value.batchwork_preflight_output }}"
# Retries are set on purpose: an error that retrying cannot fix must fail at once anyway.
RETRIES = {"retries": 3, "retry_delay": timedelta(seconds=0)}

with DAG(dag_id="preflight_unwritable_output", schedule=None, start_date=START, default_args=RETRIES) as _d1:
    _submit = SubmitBatchOperator(task_id="submit", model="openai/gpt-4o-mini", requests=TWO, output_path=OUTPUT)
    CollectResultsOperator(task_id="collect", job=_submit.output, output_path=OUTPUT, poll_interval=1)

with DAG(dag_id="preflight_undefined_variable", schedule=None, start_date=START, default_args=RETRIES) as _d2:
    _submit = SubmitBatchOperator(task_id="submit", model="openai/gpt-4o-mini", requests=TWO,
                                  output_path="file:///tmp/batchwork-preflight/{{ no_such_variable }}/")
    CollectResultsOperator(task_id="collect", job=_submit.output,
                           output_path="file:///tmp/batchwork-preflight/{{ no_such_variable }}/")

with DAG(dag_id="preflight_refused_key", schedule=None, start_date=START, default_args=RETRIES) as _d3:
    SubmitBatchOperator(task_id="submit", model="openai/gpt-4o-mini", requests=TWO)

with DAG(dag_id="preflight_wrong_provider_conn", schedule=None, start_date=START, default_args=RETRIES) as _d4:
    _submit = SubmitBatchOperator(task_id="submit", model="openai/gpt-4o-mini", requests=TWO)
    CollectResultsOperator(task_id="collect", job=_submit.output, output_path=OUTPUT, conn_id="batchwork_groq",
                           poll_interval=1)

with DAG(dag_id="preflight_ok_with_output_path", schedule=None, start_date=START) as _d5:
    _submit = SubmitBatchOperator(task_id="submit", model="openai/gpt-4o-mini", requests=TWO, output_path=OUTPUT)
    CollectResultsOperator(task_id="collect", job=_submit.output, output_path=OUTPUT, poll_interval=1)
