"""DAGs of the parts-and-tools tests (issue 17): one image, one PDF (where the provider takes PDFs), one
forced tool call and one tool-result follow-up per provider, submitted and collected by the operators."""

from __future__ import annotations

import base64
import tempfile
from pathlib import Path
from typing import Any

import pendulum
from airflow.sdk import DAG

from airflow_batchwork.operators.batch import CollectResultsOperator, SubmitBatchOperator

START = pendulum.datetime(2026, 1, 1, tz="UTC")
OUTPUT = "{{ var.value.batchwork_test_output }}"
PNG = base64.b64decode("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5E"
                       "rkJggg==")
PDF = b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n"
# The image is read from a file URL at submit time (inlined as base64); the PDF is given as a data URL.
_FILES = Path(tempfile.gettempdir()) / "batchwork-parts-dags"
_FILES.mkdir(exist_ok=True)
(_FILES / "photo.png").write_bytes(PNG)
WEATHER = {
    "name": "get_weather",
    "description": "Current weather of a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer",
                   "minimum": 1}}, "required": ["city", "days"], "additionalProperties": False},
}
NAMED = {"type": "tool", "tool_name": "get_weather"}
# provider -> (model, takes PDFs, forced tool_choice)
PROVIDERS: dict[str, tuple[str, bool, Any]] = {
    "anthropic": ("anthropic/claude-haiku-4-5", True, NAMED),
    "google": ("google/gemini-2.5-flash", True, NAMED),
    "groq": ("groq/meta-llama/llama-4-scout-17b-16e-instruct", False, NAMED),
    "mistral": ("mistral/mistral-small-latest", True, NAMED),
    "together": ("together/meta-llama/Llama-4-Scout-17B-16E-Instruct", False, "required"),
    "openai": ("openai/gpt-4o-mini", True, NAMED),
    "openai.responses": ("openai.responses/gpt-4o-mini", True, NAMED),
    "xai": ("xai/grok-4", False, NAMED),
    "xai.responses": ("xai.responses/grok-4", False, "required"),
}


def parts_requests(pdf: bool, choice: Any) -> list[dict[str, Any]]:
    requests: list[dict[str, Any]] = [
        {"custom_id": "image", "messages": [{"role": "user", "content": [
            {"type": "text", "text": "describe this"},
            {"type": "image", "image": f"file://{_FILES / 'photo.png'}"}]}]},
        {"custom_id": "tool", "prompt": "weather in Paris", "tools": [WEATHER], "tool_choice": choice},
        {"custom_id": "followup", "tools": [WEATHER], "messages": [
            {"role": "user", "content": "weather in Paris"},
            {"role": "assistant", "content": [{"type": "tool-call", "tool_call_id": "call_1",
                                               "tool_name": "get_weather", "input": {"city": "Paris", "days": 1}}]},
            {"role": "tool", "content": [{"type": "tool-result", "tool_call_id": "call_1",
                                          "tool_name": "get_weather", "output": {"temp_c": 21}}]},
            {"role": "user", "content": "thanks, summarize"}]},
    ]
    if pdf:
        requests.append({"custom_id": "pdf", "messages": [{"role": "user", "content": [
            {"type": "text", "text": "summarize"},
            {"type": "file", "data": "data:application/pdf;base64," + base64.b64encode(PDF).decode(),
             "filename": "doc.pdf"}]}]})
    return requests


for _provider, (_model, _pdf, _choice) in PROVIDERS.items():
    _key = _provider.replace(".", "_")
    with DAG(dag_id=f"test_parts_{_key}", schedule=None, start_date=START) as _dag:
        _submit = SubmitBatchOperator(task_id="submit", model=_model, requests=parts_requests(_pdf, _choice),
                                      defaults={"max_output_tokens": 64})
        CollectResultsOperator(task_id="collect", job=_submit.output, poll_interval=0.2,
                               output_path=OUTPUT + f"/{_key}/")
    globals()[f"parts_{_key}"] = _dag
