"""Backfill migration: re-classify a historical table read from a file, too large for XCom.

Requests stream from a Parquet or JSONL file on any fsspec URL; a column mapping turns table columns
into request fields. The job is split into provider-sized batches automatically, and results land as
one Parquet part per batch under a folder.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import dag

from airflow_batchwork.operators.batch import CollectResultsOperator, SubmitBatchOperator

INPUT = "{{ var.value.get('batchwork_backfill_input', 'file:///tmp/batchwork-input/tickets.parquet') }}"
OUTPUT_ROOT = "{{ var.value.get('batchwork_output_root', 'file:///tmp/batchwork-output') }}"
# Runs without a logical date (manual trigger, REST API, `airflow dags trigger`) have no `{{ ds }}`: key the
# output by the run's `run_after` date and its run id instead, which every run has (scheduled, backfilled
# or triggered by hand), so two runs on one day never overwrite each other.
RUN_FOLDER = "{{ dag_run.run_after | ds }}/{{ run_id | replace(':', '-') | replace('+', '-') }}"


@dag(
    dag_id="batchwork_backfill_migration",
    schedule=None,
    start_date=pendulum.datetime(2026, 11, 1, tz="UTC"),
    catchup=False,
    tags=["batchwork", "example"],
    params={"model": "anthropic/claude-haiku-4-5"},
)
def backfill_migration() -> None:
    submit = SubmitBatchOperator(
        task_id="submit",
        model="{{ params.model }}",
        requests_path=INPUT,
        columns={"custom_id": "ticket_id", "prompt": "body"},
        defaults={"system": "Classify the support ticket as billing, bug, feature or other. Answer one word.",
                  "max_output_tokens": 5},
        limits={"max_requests": 2_000},
    )
    CollectResultsOperator(
        task_id="collect",
        job=submit.output,
        output_path=OUTPUT_ROOT + "/backfill/" + RUN_FOLDER + "/",
        poll_interval=2,
    )


backfill_migration_dag = backfill_migration()
