"""Images, PDFs and tool calls in batch requests (issue 17), over HTTP to the emulator, rows checked in Parquet."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from airflow_batchwork.core import BatchClient, Credentials
from airflow_batchwork.core.errors import RequestValidationError
from airflow_batchwork.core.ledger import FsspecLedger
from airflow_batchwork.testing import Emulator
from airflow_batchwork.testing.echo import conforming_instance

# A 1x1 PNG and a tiny PDF (just their magic bytes matter to the emulator and the sniffing).
PNG = base64.b64decode("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg==")
PDF = b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n"
WEATHER = {
    "name": "get_weather",
    "description": "Current weather of a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer",
                   "minimum": 1}}, "required": ["city", "days"], "additionalProperties": False},
}

# provider -> (model, takes PDFs, forced tool_choice it takes)
MODELS: dict[str, tuple[str, bool, Any]] = {
    "anthropic": ("anthropic/claude-haiku-4-5", True, {"type": "tool", "tool_name": "get_weather"}),
    "google": ("google/gemini-2.5-flash", True, {"type": "tool", "tool_name": "get_weather"}),
    "groq": ("groq/meta-llama/llama-4-scout-17b-16e-instruct", False, {"type": "tool", "tool_name": "get_weather"}),
    "mistral": ("mistral/mistral-small-latest", True, {"type": "tool", "tool_name": "get_weather"}),
    # Together cannot name a tool in tool_choice: "required" with one tool forces it.
    "together": ("together/meta-llama/Llama-4-Scout-17B-16E-Instruct", False, "required"),
}


def image_path(tmp_path: Path) -> Path:
    path = tmp_path / "photo.png"
    path.write_bytes(PNG)
    return path


def job_requests(provider: str, tmp_path: Path) -> list[dict[str, Any]]:
    _, pdf, choice = MODELS[provider]
    pdf_path = tmp_path / "doc.pdf"
    pdf_path.write_bytes(PDF)
    requests: list[dict[str, Any]] = [
        {"custom_id": "image", "messages": [{"role": "user", "content": [
            {"type": "text", "text": "describe this"},
            {"type": "image", "image": f"file://{image_path(tmp_path)}"}]}]},
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
            {"type": "file", "data": f"file://{pdf_path}", "media_type": "application/pdf"}]}]})
    return requests


def check_rows(provider: str, rows: dict[str, dict[str, Any]]) -> None:
    _, pdf, _ = MODELS[provider]
    assert rows["image"]["status"] == "succeeded", rows["image"]
    assert rows["image"]["text"] == "echo: describe this (saw 1 image, 0 files)"
    assert rows["image"]["tool_calls"] is None
    tool = rows["tool"]
    assert tool["status"] == "succeeded", tool
    assert tool["finish_reason"] == "tool_calls"
    calls = json.loads(tool["tool_calls"])
    assert [c["name"] for c in calls] == ["get_weather"]
    assert calls[0]["id"]
    assert calls[0]["arguments"] == conforming_instance(WEATHER["parameters"], calls[0]["arguments"]["city"])
    assert set(calls[0]["arguments"]) == {"city", "days"} and calls[0]["arguments"]["days"] >= 1
    assert rows["followup"]["status"] == "succeeded", rows["followup"]
    assert rows["followup"]["text"].startswith("echo: thanks, summarize")
    assert rows["followup"]["finish_reason"] == "stop"
    if pdf:
        assert rows["pdf"]["text"] == "echo: summarize (saw 0 images, 1 file)", rows["pdf"]


@pytest.mark.parametrize("provider", sorted(MODELS))
async def test_parts_and_tools_through_batch_client(provider: str, emulator: Emulator, tmp_path: Path) -> None:
    model = MODELS[provider][0]
    ledger = FsspecLedger(f"file://{tmp_path}/state", f"parts-{provider}")
    async with BatchClient({provider: Credentials("k", emulator.base_url(provider))}) as client:
        job = await client.submit(model, job_requests(provider, tmp_path), defaults={"max_output_tokens": 64},
                                  ledger=ledger, identity=f"parts-{provider}")
        await client.wait(job, poll_interval=0.1, timeout=60)
        await client.write_parquet(job, f"{tmp_path}/out.parquet")
    rows = {r["custom_id"]: r for r in pq.read_table(tmp_path / "out.parquet").to_pylist()}
    check_rows(provider, rows)


async def test_refused_before_any_call_names_request_part_and_provider(emulator: Emulator) -> None:
    async with BatchClient({"groq": Credentials("k", emulator.base_url("groq"))}) as client:
        with pytest.raises(RequestValidationError) as caught:
            await client.submit("groq/llama-3.3-70b-versatile", [{"custom_id": "doc", "messages": [
                {"role": "user", "content": [{"type": "file", "data": PDF, "media_type": "application/pdf"}]}]}])
    text = str(caught.value)
    assert "requests[0].messages[0].content[0]" in text and "'doc'" in text and "groq" in text, text
