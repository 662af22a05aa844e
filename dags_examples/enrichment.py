"""Scheduled enrichment: every day, summarise the day's new product descriptions in one batch.

Runs offline against the emulator with `make demo`; with real keys, set the connection
`batchwork_openai` (or just `OPENAI_API_KEY`) and the Variable `batchwork_output_root`
(e.g. `s3://my-bucket/batchwork`).
"""

from __future__ import annotations

import pendulum
from airflow.sdk import dag, task

from airflow_batchwork.operators.batch import CollectResultsOperator, SubmitBatchOperator

OUTPUT_ROOT = "{{ var.value.get('batchwork_output_root', 'file:///tmp/batchwork-output') }}"
# Runs without a logical date (manual trigger, REST API, `airflow dags trigger`) have no `{{ ds }}`: key the
# output by the run's `run_after` date and its run id instead, which every run has (scheduled, backfilled
# or triggered by hand), so two runs on one day never overwrite each other.
RUN_FOLDER = "{{ dag_run.run_after | ds }}/{{ run_id | replace(':', '-') | replace('+', '-') }}"


@dag(
    dag_id="batchwork_enrichment",
    schedule="@daily",
    start_date=pendulum.datetime(2026, 11, 1, tz="UTC"),
    catchup=False,
    tags=["batchwork", "example"],
    default_args={"retries": 2},
)
def enrichment() -> None:
    @task
    def new_products() -> list[dict[str, str]]:
        """Stand-in for a warehouse query returning the rows to enrich."""
        rows = [
            ("sku-1001", "Stainless steel water bottle, 750 ml, keeps drinks cold for 24 hours."),
            ("sku-1002", "Wireless ergonomic mouse with silent clicks and a 12-month battery."),
            ("sku-1003", "Organic cotton t-shirt, relaxed fit, available in six colours."),
            ("sku-1004", "Cast iron skillet, 26 cm, pre-seasoned, oven safe to 260 °C."),
            ("sku-1005", "Noise-cancelling headphones [[error]] with a broken payload, to show errors."),
        ]
        return [{"custom_id": sku, "prompt": f"Write a one-line product summary: {text}"} for sku, text in rows]

    submit = SubmitBatchOperator(
        task_id="submit",
        model="openai/gpt-4o-mini",
        requests=new_products(),
        defaults={"system": "You write concise, factual product copy.", "max_output_tokens": 60,
                  "temperature": 0.2},
    )
    CollectResultsOperator(
        task_id="collect",
        job=submit.output,
        output_path=OUTPUT_ROOT + "/enrichment/" + RUN_FOLDER + "/",
        poll_interval=2,
    )


enrichment_dag = enrichment()
