"""DAGs for the issue-7 tests (structured output, cost, automatic resubmission) run with dag.test().

Outputs go to the Airflow Variable `batchwork_test_output`, which the tests set per test.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import DAG

from airflow_batchwork.operators.batch import CollectResultsOperator, SubmitBatchOperator

START = pendulum.datetime(2026, 1, 1, tz="UTC")
OUTPUT = "{{ var.value.batchwork_test_output }}"
# Three of ten items fail with a retryable error the first time the emulator sees them.
TEN = [{"custom_id": f"r{i}", "prompt": f"issue7 dag item {i}" + (" [[transient]]" if i in (2, 5, 7) else "")}
       for i in range(10)]
SENTIMENT = {"type": "object", "properties": {"label": {"type": "string", "enum": ["positive", "negative"]},
                                              "score": {"type": "number", "minimum": 0, "maximum": 1}},
             "required": ["label", "score"], "additionalProperties": False}
PRICES = {"openai/gpt-4o-mini": {"input": 1.0, "output": 4.0, "batch_discount": 0.5}}

with DAG(dag_id="test_issue7_retry", schedule=None, start_date=START) as retry_dag:
    _submit = SubmitBatchOperator(task_id="submit", model="openai/gpt-4o-mini", requests=TEN,
                                  defaults={"max_output_tokens": 64}, output_schema=SENTIMENT,
                                  max_cost_usd=1.0, prices=PRICES, state_path=OUTPUT + "/state")
    CollectResultsOperator(task_id="collect", job=_submit.output, poll_interval=0.5, output_path=OUTPUT + "/out/",
                           max_item_retries=2, keep_history=True, prices=PRICES)

with DAG(dag_id="test_issue7_over_budget", schedule=None, start_date=START) as over_budget_dag:
    SubmitBatchOperator(task_id="submit", model="anthropic/claude-sonnet-4-5", retries=2,
                        requests=[{"custom_id": f"r{i}", "prompt": "long text " * 500} for i in range(200)],
                        defaults={"max_output_tokens": 4000}, max_cost_usd=0.5)
