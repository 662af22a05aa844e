"""Nightly eval: the same eval set through several models side by side (dynamic task mapping).

One mapped submit per model, one mapped collect per job, and a comparison task that reads the
manifests. Switching or adding a provider is a change to MODELS only.
"""

from __future__ import annotations

from typing import Any

import pendulum
from airflow.sdk import dag, task

from airflow_batchwork.operators.batch import CollectResultsOperator, SubmitBatchOperator

MODELS = [
    "openai/gpt-4o-mini",
    "anthropic/claude-haiku-4-5",
    "google/gemini-2.5-flash",
    "groq/llama-3.3-70b-versatile",
    "mistral/mistral-small-latest",
    "together/meta-llama/Llama-3.3-70B-Instruct-Turbo",
    "xai/grok-4",
]
EVAL_SET = [
    {"custom_id": "capital-fr", "prompt": "What is the capital of France? Answer in one word."},
    {"custom_id": "sum-2-3", "prompt": "What is 2 + 3? Answer with a number."},
    {"custom_id": "opposite-hot", "prompt": "Give the opposite of 'hot' in one word."},
]
OUTPUT_ROOT = "{{ var.value.get('batchwork_output_root', 'file:///tmp/batchwork-output') }}"
# Runs without a logical date (manual trigger, REST API, `airflow dags trigger`) have no `{{ ds }}`: key the
# output by the run's `run_after` date and its run id instead, which every run has (scheduled, backfilled
# or triggered by hand), so two runs on one day never overwrite each other.
RUN_FOLDER = "{{ dag_run.run_after | ds }}/{{ run_id | replace(':', '-') | replace('+', '-') }}"


@dag(
    dag_id="batchwork_nightly_eval",
    schedule="0 2 * * *",
    start_date=pendulum.datetime(2026, 11, 1, tz="UTC"),
    catchup=False,
    tags=["batchwork", "example"],
)
def nightly_eval() -> None:
    submit = SubmitBatchOperator.partial(
        task_id="submit", requests=EVAL_SET, defaults={"max_output_tokens": 16, "temperature": 0},
    ).expand(model=MODELS)

    collect = CollectResultsOperator.partial(task_id="collect", poll_interval=2).expand_kwargs(
        submit.output.map(
            lambda job: {
                "job": job,
                "output_path": OUTPUT_ROOT + "/eval/" + RUN_FOLDER + "/" + job["model"].replace("/", "__") + ".parquet",
            }
        )
    )

    @task
    def compare(manifests: list[dict[str, Any]]) -> dict[str, float]:
        """Success rate per model (a real eval would score the texts too)."""
        scores = {m["model"]: m["counts"].get("succeeded", 0) / max(m["rows"], 1) for m in manifests}
        for model, score in sorted(scores.items()):
            print(f"{model:45s} {score:6.1%}")
        return scores

    compare(collect.output)


nightly_eval_dag = nightly_eval()
