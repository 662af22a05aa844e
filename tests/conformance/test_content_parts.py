"""Conformance of image/file parts and tools (issue 17): every request body we build with them is judged
by the provider's schema (generated from its SDK / protos), the emulator's answers to them too, and
wrong shapes are refused by the schema and by the strict emulator.

Every provider and endpoint that takes parts or tools: anthropic, google, groq, mistral, together, openai
(chat, responses), xai (chat, responses; its bodies are judged by OpenAI's types, as the xAI schema says)."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import fsspec
import pyarrow.parquet as pq
import pytest

from airflow_batchwork.core import BatchClient, Credentials
from airflow_batchwork.engine.submission import prepare_job
from airflow_batchwork.testing import Emulator, conformance
from airflow_batchwork.testing.providers.openai import REQUEST_TYPES
from airflow_batchwork.values.errors import BatchworkError

PNG = base64.b64decode("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5E"
                       "rkJggg==")
PDF = b"%PDF-1.4\n%%EOF\n"
TOOL = {"name": "lookup", "description": "Look a word up",
        "parameters": {"type": "object", "properties": {"word": {"type": "string"}, "n": {"type": "integer"}},
                       "required": ["word"]}}
OTHER = {"name": "noop", "description": "Do nothing", "parameters": {"type": "object", "properties": {}}}


def user(*parts: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"role": "user", "content": [{"type": "text", "text": "look"}, *parts]}]


def requests_for(pdf: bool, url_files: bool, choices: list[Any]) -> list[dict[str, Any]]:
    fs = fsspec.filesystem("memory")
    fs.pipe("/parts/photo.png", PNG)
    out: list[dict[str, Any]] = [
        {"custom_id": "img-bytes", "messages": user({"type": "image", "image": PNG})},
        {"custom_id": "img-b64", "messages": user({"type": "image", "image": base64.b64encode(PNG).decode(),
                                                   "media_type": "image/png"})},
        {"custom_id": "img-data-url", "messages": user(
            {"type": "image", "image": "data:image/png;base64," + base64.b64encode(PNG).decode()})},
        {"custom_id": "img-url", "messages": user({"type": "image", "image": "https://example.com/a.png"})},
        {"custom_id": "img-fsspec", "messages": user({"type": "image", "image": "memory:///parts/photo.png"})},
        {"custom_id": "tools-plain", "prompt": "hi", "tools": [TOOL, OTHER]},
        {"custom_id": "multi-turn", "tools": [TOOL], "messages": [
            {"role": "user", "content": "look up cat"},
            {"role": "assistant", "content": [
                {"type": "text", "text": "calling"},
                {"type": "tool-call", "tool_call_id": "c1", "tool_name": "lookup", "input": {"word": "cat"}}]},
            {"role": "tool", "content": [{"type": "tool-result", "tool_call_id": "c1", "tool_name": "lookup",
                                          "output": {"meaning": "a pet"}}]},
            {"role": "user", "content": "and dog?"}]},
    ]
    for index, choice in enumerate(choices):
        out.append({"custom_id": f"choice-{index}", "prompt": "hi", "tools": [TOOL, OTHER], "tool_choice": choice})
    if pdf:
        out.append({"custom_id": "pdf-bytes", "messages": user(
            {"type": "file", "data": PDF, "media_type": "application/pdf", "filename": "a.pdf"})})
        if url_files:
            out.append({"custom_id": "pdf-url", "messages": user(
                {"type": "file", "data": "https://example.com/a.pdf", "media_type": "application/pdf"})})
    return out


NAMED = {"type": "tool", "tool_name": "lookup"}
ALL = ["auto", "none", "required", NAMED]


def _anthropic(line: dict[str, Any]) -> list[str]:
    return conformance.violations("anthropic", "MessageBatchRequest", line)


def _google(line: dict[str, Any]) -> list[str]:
    return conformance.violations("google", "GenerateContentRequestLine", line)


def _openai_style(provider: str, model: str | None = None) -> Callable[[dict[str, Any]], list[str]]:
    line_def = "ChatBatchRequest" if provider == "mistral" else "BatchInputLine"

    def judge(line: dict[str, Any]) -> list[str]:
        body = {"model": model, **line["body"]} if model else line["body"]
        return conformance.violations(provider, line_def, line) + \
            conformance.violations(provider, "ChatCompletionRequest", body)
    return judge


def _openai(endpoint: str) -> Callable[[dict[str, Any]], list[str]]:
    def judge(line: dict[str, Any]) -> list[str]:
        return conformance.violations("openai", "BatchRequestInput", line) + \
            conformance.violations("openai", REQUEST_TYPES[endpoint], line["body"])
    return judge


def _xai(op: str) -> Callable[[dict[str, Any]], list[str]]:
    def judge(line: dict[str, Any]) -> list[str]:
        return conformance.violations("xai", "BatchRequestEntry", line) + \
            conformance.violations("openai", XAI_TYPES[op], line["batch_request"][op])
    return judge


XAI_TYPES = {"chat_get_completion": "CreateChatCompletionRequest", "responses": "CreateResponse"}


def _answer_openai(endpoint: str) -> Callable[[dict[str, Any]], list[str]]:
    kind = {"/v1/chat/completions": "CreateChatCompletionResponse", "/v1/responses": "Response"}[endpoint]

    def judge(line: dict[str, Any]) -> list[str]:
        return conformance.violations("openai", "BatchRequestOutput", line) + \
            conformance.violations("openai", kind, line["response"]["body"])
    return judge


def _answer_xai(line: dict[str, Any]) -> list[str]:
    return conformance.violations("xai", "BatchResult", line)


def _answer_anthropic(line: dict[str, Any]) -> list[str]:
    return conformance.violations("anthropic", "MessageBatchIndividualResponse", line)


def _answer_google(line: dict[str, Any]) -> list[str]:
    problems = conformance.violations("google", "InlinedResponse", line)
    return problems and conformance.violations("google", "GenerateContentResultLine", line)


def _answer_chat(provider: str) -> Callable[[dict[str, Any]], list[str]]:
    def judge(line: dict[str, Any]) -> list[str]:
        return conformance.violations(provider, "ResultLine", line) + \
            conformance.violations(provider, "ChatCompletion", line["response"]["body"])
    return judge


# provider: (model, PDFs, PDF by URL, tool choices taken, line judge, answer judge)
CASES: dict[str, tuple[str, bool, bool, list[Any], Any, Any]] = {
    "anthropic": ("anthropic/claude-haiku-4-5", True, True, ALL, _anthropic, _answer_anthropic),
    "google": ("google/gemini-2.5-flash", True, True, ALL, _google, _answer_google),
    "groq": ("groq/meta-llama/llama-4-scout-17b-16e-instruct", False, False, ALL, _openai_style("groq"),
             _answer_chat("groq")),
    "mistral": ("mistral/mistral-small-latest", True, True, ALL, _openai_style("mistral", "mistral-small-latest"),
                _answer_chat("mistral")),
    "together": ("together/meta-llama/Llama-4-Scout-17B-16E-Instruct", False, False, ["auto", "none", "required"],
                 _openai_style("together"), _answer_chat("together")),
    "openai": ("openai/gpt-4o-mini", True, False, ALL, _openai("/v1/chat/completions"),
               _answer_openai("/v1/chat/completions")),
    "openai.responses": ("openai.responses/gpt-4o-mini", True, True, ALL, _openai("/v1/responses"),
                         _answer_openai("/v1/responses")),
    "xai": ("xai/grok-4", False, False, ALL, _xai("chat_get_completion"), _answer_xai),
    "xai.responses": ("xai.responses/grok-4", False, False, ALL, _xai("responses"), _answer_xai),
}


@pytest.mark.parametrize("provider", sorted(CASES))
def test_every_body_with_parts_and_tools_conforms(provider: str) -> None:
    model, pdf, url_files, choices, judge, _ = CASES[provider]
    requests = requests_for(pdf, url_files, choices)
    with prepare_job(model, requests) as job:
        lines = [json.loads(raw) for shard in job.shards for raw in shard]
    assert len(lines) == len(requests)
    for line in lines:
        assert judge(line) == [], (line.get("custom_id") or line.get("key"), judge(line))
    text = json.dumps(lines)
    assert len({line.get("custom_id") or line.get("key") or line.get("batch_request_id") for line in lines}) \
        == len(requests)
    assert "memory://" not in text and base64.b64encode(PNG).decode() in text  # the fsspec file was inlined


@pytest.mark.parametrize("provider", sorted(CASES))
async def test_emulator_answers_to_parts_and_tools_conform(provider: str, emulator: Emulator,
                                                          tmp_path: Path) -> None:
    model, pdf, url_files, choices, _, answer_judge = CASES[provider]
    requests = requests_for(pdf, url_files, choices)
    async with BatchClient({provider.split(".")[0]: Credentials("k", emulator.base_url(provider.split(".")[0]))}
                           ) as client:
        job = await client.submit(model, requests)
        await client.wait(job, poll_interval=0.1, timeout=60)
        await client.write_parquet(job, f"{tmp_path}/out.parquet")
    rows = {r["custom_id"]: r for r in pq.read_table(tmp_path / "out.parquet").to_pylist()}
    assert set(rows) == {r["custom_id"] for r in requests}
    for custom_id, row in rows.items():
        assert row["status"] == "succeeded", (custom_id, row["error_message"])
        assert answer_judge(json.loads(row["response"])) == [], custom_id
    assert rows["img-bytes"]["text"].endswith("(saw 1 image, 0 files)")
    for index, choice in enumerate(choices):
        row = rows[f"choice-{index}"]
        forced = choice in ("required", NAMED)
        assert (row["finish_reason"] == "tool_calls") is forced, (choice, row)
        if forced:
            call = json.loads(row["tool_calls"])[0]
            assert call["name"] == "lookup" and isinstance(call["arguments"]["word"], str)
        else:
            assert row["tool_calls"] is None


# Wrong shapes, written in through provider_options so they reach the wire as is: another provider's part
# or tool format. The schema refuses each, and so does the strict emulator.
CHAT_WRONG_PART = {"messages": [{"role": "user", "content": [
    {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "aGk="}}]}]}
RESPONSES_WRONG_PART = {"input": [{"role": "user", "content": [
    {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}]}]}
WRONG: dict[str, tuple[str, dict[str, Any]]] = {
    "openai": ("CreateChatCompletionRequest", CHAT_WRONG_PART),
    "openai.responses": ("CreateResponse", RESPONSES_WRONG_PART),
    "xai": ("CreateChatCompletionRequest", CHAT_WRONG_PART),
    "xai.responses": ("CreateResponse", RESPONSES_WRONG_PART),
    "anthropic": ("MessageCreateParamsNonStreaming", {"messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}]}]}),
    "google": ("GenerateContentRequest", {"contents": [{"role": "user", "parts": [
        {"image": {"mimeType": "image/png", "data": "aGk="}}]}]}),
    "groq": ("ChatCompletionRequest", {"messages": [{"role": "user", "content": [
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "aGk="}}]}]}),
    "mistral": ("ChatCompletionRequest", {"messages": [{"role": "user", "content": [
        {"type": "input_image", "image_url": "https://example.com/a.png"}]}]}),
    "together": ("ChatCompletionRequest", {"messages": [{"role": "user", "content": [
        {"type": "file", "file": {"file_data": "data:application/pdf;base64,aGk="}}]}]}),
}
NESTED_TOOL = {"tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}]}
FLAT_TOOL = {"tools": [{"type": "function", "name": "f", "parameters": {}}]}
WRONG_TOOLS: dict[str, dict[str, Any]] = {
    "openai": FLAT_TOOL, "openai.responses": NESTED_TOOL, "xai": FLAT_TOOL, "xai.responses": NESTED_TOOL,
    "anthropic": {"tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}]},
    "google": {"tools": [{"functionDeclarations": [{"name": "f", "parametersJsonSchema": {}}]}]},  # no description
    "groq": {"tools": [{"type": "function", "name": "f", "parameters": {}}]},
    "mistral": {"tools": [{"type": "function", "name": "f", "parameters": {}}]},
    "together": {"tools": [{"type": "function", "name": "f", "parameters": {}}]},
}


WHOLE_BODY_JUDGED = {"google", "mistral", "xai", "xai.responses"}


def _schema_provider(case: str) -> str:
    return "openai" if case.startswith("xai") else case.split(".")[0]


def _body_of(provider: str, line: dict[str, Any]) -> dict[str, Any]:
    if provider.startswith("xai"):
        return dict(next(iter(line["batch_request"].values())))
    if provider == "anthropic":
        return dict(line["params"])
    if provider == "google":
        return dict(line["request"])
    if provider == "mistral":
        return {"model": "mistral-small-latest", **line["body"]}
    return dict(line["body"])


@pytest.mark.parametrize("provider", sorted(WRONG))
@pytest.mark.parametrize("kind", ["part", "tool"])
async def test_wrong_shapes_are_refused_by_schema_and_emulator(provider: str, kind: str, emulator: Emulator,
                                                               tmp_path: Path) -> None:
    model = CASES[provider][0]
    name, override = WRONG[provider]
    options = override if kind == "part" else WRONG_TOOLS[provider]
    requests = [{"custom_id": "wrong", "prompt": "x", "provider_options": options},
                {"custom_id": "fine", "prompt": "y"}]
    with prepare_job(model, requests) as job:
        lines = [json.loads(raw) for shard in job.shards for raw in shard]
    schema = _schema_provider(provider)
    assert conformance.violations(schema, name, _body_of(provider, lines[0]))
    assert not conformance.violations(schema, name, _body_of(provider, lines[1]))
    async with BatchClient({provider.split(".")[0]: Credentials("k", emulator.base_url(provider.split(".")[0]))}
                           ) as client:
        try:
            job = await client.submit(model, requests)
        except BatchworkError as exc:
            # Gemini, Mistral and xAI judge an inline create / add-requests body whole (400 / 422), as their APIs do.
            assert provider in WHOLE_BODY_JUDGED and ("400" in str(exc) or "422" in str(exc)), exc
            return
        await client.wait(job, poll_interval=0.1, timeout=60)
        await client.write_parquet(job, f"{tmp_path}/out.parquet")
    rows = {r["custom_id"]: r for r in pq.read_table(tmp_path / "out.parquet").to_pylist()}
    assert rows["wrong"]["status"] == "errored" and rows["fine"]["status"] == "succeeded", rows


@pytest.mark.parametrize("provider", sorted(CASES))
async def test_emulator_refuses_a_forced_tool_that_is_not_declared(provider: str, emulator: Emulator,
                                                                   tmp_path: Path) -> None:
    model = CASES[provider][0]
    undeclared = {
        "anthropic": {"tool_choice": {"type": "tool", "name": "missing"}},
        "openai.responses": {"tool_choice": {"type": "function", "name": "missing"}},
        "xai.responses": {"tool_choice": {"type": "function", "name": "missing"}},
        "google": {"toolConfig": {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["missing"]}}},
    }.get(provider, {"tool_choice": {"type": "function", "function": {"name": "missing"}}})
    if provider == "together":
        undeclared = {"tool_choice": "required", "tools": []}
    requests = [{"custom_id": "wrong", "prompt": "x", "tools": [TOOL], "provider_options": undeclared},
                {"custom_id": "fine", "prompt": "y"}]
    async with BatchClient({provider.split(".")[0]: Credentials("k", emulator.base_url(provider.split(".")[0]))}
                           ) as client:
        try:
            job = await client.submit(model, requests)
        except BatchworkError as exc:
            assert provider in WHOLE_BODY_JUDGED, exc
            return
        await client.wait(job, poll_interval=0.1, timeout=60)
        await client.write_parquet(job, f"{tmp_path}/out.parquet")
    rows = {r["custom_id"]: r for r in pq.read_table(tmp_path / "out.parquet").to_pylist()}
    assert rows["wrong"]["status"] == "errored" and rows["fine"]["status"] == "succeeded", rows


ORPHAN_RESULT: dict[str, dict[str, Any]] = {
    "anthropic": {"messages": [{"role": "user", "content": [
        {"type": "tool_result", "tool_use_id": "toolu_nope", "content": "1"}]}]},
    **{p: {"messages": [{"role": "user", "content": "x"}, {"role": "tool", "tool_call_id": "nope", "content": "1"}]}
       for p in ("groq", "mistral", "together", "openai", "xai")},
    **{p: {"input": [{"role": "user", "content": "x"},
                     {"type": "function_call_output", "call_id": "nope", "output": "1"}]}
       for p in ("openai.responses", "xai.responses")},
}


@pytest.mark.parametrize("provider", sorted(ORPHAN_RESULT))
async def test_emulator_refuses_a_tool_result_that_answers_no_call(provider: str, emulator: Emulator,
                                                                   tmp_path: Path) -> None:
    model = CASES[provider][0]
    requests = [{"custom_id": "wrong", "prompt": "x", "tools": [TOOL], "provider_options": ORPHAN_RESULT[provider]},
                {"custom_id": "fine", "prompt": "y"}]
    name = provider.split(".")[0]
    async with BatchClient({name: Credentials("k", emulator.base_url(name))}) as client:
        try:
            job = await client.submit(model, requests)
        except BatchworkError as exc:
            assert provider in WHOLE_BODY_JUDGED, exc
            return
        await client.wait(job, poll_interval=0.1, timeout=60)
        await client.write_parquet(job, f"{tmp_path}/out.parquet")
    rows = {r["custom_id"]: r for r in pq.read_table(tmp_path / "out.parquet").to_pylist()}
    assert rows["wrong"]["status"] == "errored" and rows["fine"]["status"] == "succeeded", rows
