"""The DAG that `make demo` (`python -m airflow_batchwork.testing.demo`) runs against the emulator.

Packaged with the wheel, so the demo works from an installed package, not only from a clone. Five product
descriptions are summarised in one OpenAI batch; one of them carries the emulator's `[[error]]` marker, to
show an errored row next to the succeeded ones.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import dag, task

from airflow_batchwork.operators.batch import CollectResultsOperator, SubmitBatchOperator

OUTPUT = "{{ var.value.get('batchwork_output_root', 'file:///tmp/batchwork-output') }}/enrichment/{{ ds }}/"
PRODUCTS = [
    ("sku-1001", "Stainless steel water bottle, 750 ml, keeps drinks cold for 24 hours."),
    ("sku-1002", "Wireless ergonomic mouse with silent clicks and a 12-month battery."),
    ("sku-1003", "Organic cotton t-shirt, relaxed fit, available in six colours."),
    ("sku-1004", "Cast iron skillet, 26 cm, pre-seasoned, oven safe to 260 °C."),
    ("sku-1005", "Noise-cancelling headphones [[error]] (the emulator fails this item on purpose)."),
]


@dag(dag_id="batchwork_demo", schedule=None, start_date=pendulum.datetime(2026, 11, 1, tz="UTC"), catchup=False,
     tags=["batchwork", "demo"])
def batchwork_demo() -> None:
    @task
    def products() -> list[dict[str, str]]:
        return [{"custom_id": sku, "prompt": f"Write a one-line product summary: {text}"} for sku, text in PRODUCTS]

    submit = SubmitBatchOperator(
        task_id="submit", model="openai/gpt-4o-mini", requests=products(), output_path=OUTPUT,
        defaults={"system": "You write concise, factual product copy.", "max_output_tokens": 60},
    )
    # results_asset=False: dag.test() runs without a DAG processor, which is what registers assets; an
    # asset event from here would only log "AssetModel not found". Real deployments keep the default.
    CollectResultsOperator(task_id="collect", job=submit.output, output_path=OUTPUT, poll_interval=1,
                           results_asset=False)


demo_dag = batchwork_demo()
