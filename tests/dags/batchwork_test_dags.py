"""DAGs used by the Airflow-layer tests (dag.test() needs them in the DAGs folder).

Outputs go to the Airflow Variable `batchwork_test_output`, which the tests set per test.
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import DAG

from airflow_batchwork.operators.batch import CollectResultsOperator, SubmitBatchOperator

THREE = [
    {"custom_id": "ok", "prompt": "hello world"},
    {"custom_id": "bad", "prompt": "boom [[error]]"},
    {"custom_id": "late", "prompt": "slow [[expire]]"},
]
START = pendulum.datetime(2026, 1, 1, tz="UTC")
OUTPUT = "{{ var.value.batchwork_test_output }}"

# Gemini has no per-request expiry (an expired Gemini job keeps no results), so its third request is plain.
GEMINI_THREE = [*THREE[:2], {"custom_id": "late", "prompt": "slow"}]

for _provider, _model in (("openai", "openai/gpt-4o-mini"), ("anthropic", "anthropic/claude-haiku-4-5"),
                          ("google", "google/gemini-2.5-flash"), ("xai", "xai/grok-4")):
    with DAG(dag_id=f"test_collect_{_provider}", schedule=None, start_date=START) as _dag:
        _submit = SubmitBatchOperator(task_id="submit", model=_model,
                                      requests=GEMINI_THREE if _provider == "google" else THREE,
                                      defaults={"max_output_tokens": 64})
        CollectResultsOperator(task_id="collect", job=_submit.output, poll_interval=0.5,
                               output_path=OUTPUT + "/{{ ds }}/")
    globals()[f"collect_{_provider}"] = _dag

with DAG(dag_id="test_wait_fail_on_error", schedule=None, start_date=START) as wait_fail_on_error:
    _submit = SubmitBatchOperator(task_id="submit", model="openai/gpt-4o-mini", requests=THREE,
                                  wait_for_completion=True, poll_interval=0.5)
    CollectResultsOperator(task_id="collect", job=_submit.output, fail_on_error=True,
                           output_path=OUTPUT + "/out.parquet")

with DAG(dag_id="test_bad_request", schedule=None, start_date=START) as bad_request:
    SubmitBatchOperator(task_id="submit", model="openai/gpt-4o-mini", retries=3, requests=[{"custom_id": "a"}])


class CrashAfterSubmit(SubmitBatchOperator):
    """Dies on its first try after the provider accepted the batch, before the XCom push (a lost worker)."""

    def execute(self, context):  # type: ignore[no-untyped-def]
        handle = super().execute(context)
        if context["ti"].try_number == 1:
            raise RuntimeError("simulated worker loss after submit")
        return handle


for _name, _state_path in (("fsspec", OUTPUT + "/state"), ("task_state_store", None)):
    with DAG(dag_id=f"test_retry_reattach_{_name}", schedule=None, start_date=START) as _dag:
        CrashAfterSubmit(task_id="submit", model="openai/gpt-4o-mini", requests=THREE, retries=1,
                         retry_delay=timedelta(0), state_path=_state_path)
    globals()[f"retry_reattach_{_name}"] = _dag

# 120,000 requests from a file: three OpenAI batches at the real 50,000-request limit.
with DAG(dag_id="test_scale_120k", schedule=None, start_date=START) as scale_120k:
    _submit = SubmitBatchOperator(task_id="submit", model="openai/gpt-4o-mini",
                                  requests_path=OUTPUT + "/requests.jsonl", state_path=OUTPUT + "/state",
                                  defaults={"max_output_tokens": 8})
    CollectResultsOperator(task_id="collect", job=_submit.output, poll_interval=1, output_path=OUTPUT + "/results/")

# A 429/5xx storm: every task may fail and retry; the submission ledger keeps it to one paid batch.
with DAG(dag_id="test_fault_storm", schedule=None, start_date=START,
         default_args={"retries": 4, "retry_delay": timedelta(0)}) as fault_storm:
    _submit = SubmitBatchOperator(task_id="submit", model="openai/gpt-4o-mini", state_path=OUTPUT + "/state",
                                  requests=[{"custom_id": f"r{i}", "prompt": f"item {i}"} for i in range(12)])
    CollectResultsOperator(task_id="collect", job=_submit.output, poll_interval=0.5, output_path=OUTPUT + "/out/")
