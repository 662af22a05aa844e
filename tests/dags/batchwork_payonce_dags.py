"""DAGs of the pay-once tests (tests/test_pay_once.py): a nightly enrichment with dedup and a response cache.

Everything lives under the Airflow Variable `batchwork_test_output`, which the tests set per test.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import DAG

from airflow_batchwork.operators.batch import CollectResultsOperator, SubmitBatchOperator

ROOT = "{{ var.value.batchwork_test_output }}"
NIGHTLY = [{"custom_id": f"row-{i}", "prompt": f"describe product {i % 8}"} for i in range(12)]

with DAG(dag_id="test_pay_once_nightly", schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC")) as nightly:
    _submit = SubmitBatchOperator(task_id="submit", model="openai/gpt-4o-mini", requests=NIGHTLY, dedup=True,
                                  cache=ROOT + "/llm-cache/", state_path=ROOT + "/state")
    CollectResultsOperator(task_id="collect", job=_submit.output, poll_interval=0.2, cache=ROOT + "/llm-cache/",
                           output_path=ROOT + "/out/{{ ds }}/")

with DAG(dag_id="test_pay_once_backfill", schedule=None,
         start_date=pendulum.datetime(2026, 1, 1, tz="UTC")) as backfill:
    _submit = SubmitBatchOperator(task_id="submit", model="openai/gpt-4o-mini", requests_path=ROOT + "/source.parquet",
                                  columns={"custom_id": "id", "prompt": "text"}, passthrough_columns=["region"],
                                  incremental=ROOT + "/enriched/", state_path=ROOT + "/state")
    CollectResultsOperator(task_id="collect", job=_submit.output, poll_interval=0.2, merge=True,
                           output_path=ROOT + "/enriched/")

SYSTEM = " ".join(f"rule{i}" for i in range(4500))
with DAG(dag_id="test_pay_once_priming", schedule=None,
         start_date=pendulum.datetime(2026, 1, 1, tz="UTC")) as priming:
    _submit = SubmitBatchOperator(task_id="submit", model="anthropic/claude-haiku-4-5", cache_prefix=True,
                                  requests=[{"custom_id": f"q{i}", "prompt": f"question {i}", "system": SYSTEM}
                                            for i in range(6)])
    CollectResultsOperator(task_id="collect", job=_submit.output, poll_interval=0.2,
                           output_path=ROOT + "/primed.parquet")
