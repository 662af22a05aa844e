"""Images, PDFs and tool calls in batch requests (issue 17), over HTTP to the emulator, rows checked in Parquet."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from airflow_batchwork.core import BatchClient, Credentials
from airflow_batchwork.engine.ledger import FsspecLedger
from airflow_batchwork.testing import Emulator
from airflow_batchwork.testing.echo import conforming_instance
from airflow_batchwork.values.errors import RequestValidationError

# A 1x1 PNG and a tiny PDF (just their magic bytes matter to the emulator and the sniffing).
PNG = base64.b64decode("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5E"
                       "rkJggg==")
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
    "openai": ("openai/gpt-4o-mini", True, {"type": "tool", "tool_name": "get_weather"}),
    "openai.responses": ("openai.responses/gpt-4o-mini", True, {"type": "tool", "tool_name": "get_weather"}),
    "xai": ("xai/grok-4", False, {"type": "tool", "tool_name": "get_weather"}),
    "xai.responses": ("xai.responses/grok-4", False, "required"),
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
    name = provider.split(".")[0]
    ledger = FsspecLedger(f"file://{tmp_path}/state", f"parts-{provider}")
    async with BatchClient({name: Credentials("k", emulator.base_url(name))}) as client:
        job = await client.submit(model, job_requests(provider, tmp_path), defaults={"max_output_tokens": 64},
                                  ledger=ledger, identity=f"parts-{provider.replace('.', '-')}")
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


@pytest.fixture
def airflow_emulator(airflow_db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    from airflow_batchwork.testing.airflow_env import connection_env

    monkeypatch.setenv("AIRFLOW_VAR_BATCHWORK_TEST_OUTPUT", f"file://{tmp_path}")
    with Emulator(processing_seconds=0.5) as emu:
        for key, value in connection_env(emu).items():
            monkeypatch.setenv(key, value)
        yield emu


@pytest.mark.parametrize("provider", sorted(MODELS))
def test_parts_and_tools_through_the_operators(provider: str, airflow_emulator: Emulator, tmp_path: Path) -> None:
    import pendulum

    from tests.airflow_helpers import load_dag, task_states, xcom

    dag = load_dag(f"test_parts_{provider.replace('.', '_')}")
    run = dag.test(logical_date=pendulum.datetime(2026, 11, 20, tz="UTC"))
    assert run.state == "success", task_states(run)
    manifest = xcom(run, "collect")
    assert manifest["rows"] == (4 if MODELS[provider][1] else 3), manifest
    rows = {r["custom_id"]: r for r in pq.read_table(tmp_path / provider.replace(".", "_")).to_pylist()}
    check_rows(provider, rows)


def _heavy_requests(tmp_path: Path, count: int, size: int) -> list[dict[str, Any]]:
    requests = []
    for index in range(count):
        path = tmp_path / f"img-{index}.png"
        path.write_bytes(PNG + bytes([index]) * size)  # a PNG header, then filler: `size` more bytes
        requests.append({"custom_id": f"img-{index}", "messages": [{"role": "user", "content": [
            {"type": "text", "text": f"photo {index}"}, {"type": "image", "image": f"file://{path}"}]}]})
    return requests


async def test_image_heavy_job_shards_by_bytes_under_lowered_limits(emulator: Emulator, tmp_path: Path) -> None:
    # Each request carries ~40 KB of base64 once its 30 KB file is inlined: two fit in 100 KB.
    limits = {"max_bytes": 100_000, "max_request_bytes": 60_000, "max_requests": 1000}
    requests = _heavy_requests(tmp_path, 9, 30_000)
    from airflow_batchwork.engine.submission import prepare_job

    with prepare_job("anthropic/claude-haiku-4-5", requests, limits=limits) as job:
        sizes = [shard.nbytes for shard in job.shards]
        counts = [shard.count for shard in job.shards]
    assert counts == [2, 2, 2, 2, 1], counts
    assert all(40_000 < size / count < 60_000 for size, count in zip(sizes, counts, strict=True)), sizes
    assert all(size <= limits["max_bytes"] for size in sizes)

    async with BatchClient({"anthropic": Credentials("k", emulator.base_url("anthropic"))}) as client:
        handle = await client.submit("anthropic/claude-haiku-4-5", requests, limits=limits)
        assert len(handle.batch_ids) == 5
        await client.wait(handle, poll_interval=0.1, timeout=60)
        await client.write_parquet(handle, f"{tmp_path}/heavy.parquet")
    rows = pq.read_table(tmp_path / "heavy.parquet").to_pylist()
    assert sorted(r["custom_id"] for r in rows) == sorted(r["custom_id"] for r in requests)
    assert all(r["text"] == f"echo: photo {r['custom_id'][4:]} (saw 1 image, 0 files)" for r in rows), rows[0]
    assert len({r["batch_id"] for r in rows}) == 5


def test_a_file_over_the_per_request_limit_is_refused_while_read(tmp_path: Path) -> None:
    from airflow_batchwork.engine.submission import prepare_job

    requests = _heavy_requests(tmp_path, 2, 30_000)
    with pytest.raises(RequestValidationError) as caught, \
            prepare_job("anthropic/claude-haiku-4-5", requests, limits={"max_request_bytes": 20_000}):
        pass
    text = str(caught.value)
    assert "requests[0].messages[0].content[1].image" in text and "20,000" in text, text


def test_a_missing_file_is_refused_naming_the_part(tmp_path: Path) -> None:
    from airflow_batchwork.engine.submission import prepare_job

    requests = [{"custom_id": "gone", "messages": [{"role": "user", "content": [
        {"type": "image", "image": f"file://{tmp_path}/nope.png"}]}]}]
    with pytest.raises(RequestValidationError, match=r"requests\[0\]\.messages\[0\]\.content\[0\]\.image.*cannot"), \
            prepare_job("google/gemini-2.5-flash", requests):
        pass


BMP = b"BM" + b"\0" * 30
REFUSALS: list[tuple[str, dict[str, Any], str, str]] = [
    # model, request, field named, words in the problem
    ("groq/meta-llama/llama-4-scout-17b-16e-instruct",
     {"messages": [{"role": "user", "content": [{"type": "file", "data": PDF, "media_type": "application/pdf"}]}]},
     "messages[0].content[0]", "groq.chat batches take no file parts"),
    ("together/meta-llama/Llama-4-Scout-17B-16E-Instruct",
     {"messages": [{"role": "user", "content": [{"type": "file", "data": PDF, "media_type": "application/pdf"}]}]},
     "messages[0].content[0]", "together.chat batches take no file parts"),
    ("together/meta-llama/Llama-4-Scout-17B-16E-Instruct",
     {"prompt": "x", "tools": [WEATHER], "tool_choice": {"type": "tool", "tool_name": "get_weather"}},
     "tool_choice", "take no tool_choice 'tool'"),
    ("anthropic/claude-haiku-4-5",
     {"messages": [{"role": "user", "content": [{"type": "image", "image": BMP, "media_type": "image/bmp"}]}]},
     "messages[0].content[0].media_type", "no image of type 'image/bmp'"),
    ("anthropic/claude-haiku-4-5",
     {"messages": [{"role": "user", "content": [{"type": "file", "data": b"PK\3\4zip", "media_type":
                                                 "application/zip"}]}]},
     "messages[0].content[0].media_type", "no file of type 'application/zip'"),
    ("anthropic/claude-haiku-4-5",
     {"messages": [{"role": "user", "content": [{"type": "image", "image": b"\0\1\2\3"}]}]},
     "messages[0].content[0].media_type", "media type cannot be told"),
    ("google/gemini-2.5-flash",
     {"prompt": "x", "tools": [{"name": "f", "parameters": {"type": "object", "properties": {}}}]},
     "tools[0].description", "google.chat requires a description"),
    ("google.embedding/gemini-embedding-001",
     {"value": "x", "tools": [WEATHER]}, "tools", "google.embedding batches take no tools"),
    ("mistral/mistral-small-latest",
     {"messages": [{"role": "user", "content": [{"type": "file", "data": b"hello", "media_type": "text/plain"}]}]},
     "messages[0].content[0].media_type", "no file of type 'text/plain'"),
    ("openai/gpt-4o-mini",
     {"messages": [{"role": "user", "content": [{"type": "file", "data": "https://example.com/a.pdf",
                                                 "media_type": "application/pdf"}]}]},
     "messages[0].content[0]", "openai.chat batches take no file given as a URL"),
    ("openai.completion/gpt-3.5-turbo-instruct", {"prompt": "x", "tools": [WEATHER]}, "tools",
     "openai.completion batches take no tools"),
    ("openai.embedding/text-embedding-3-small",
     {"value": "x", "tools": [WEATHER]}, "tools", "openai.embedding batches take no tools"),
    ("xai/grok-4",
     {"messages": [{"role": "user", "content": [{"type": "file", "data": PDF, "media_type": "application/pdf"}]}]},
     "messages[0].content[0]", "xai.chat batches take no file parts"),
    ("xai.responses/grok-4",
     {"messages": [{"role": "user", "content": [{"type": "image", "image": BMP, "media_type": "image/gif"}]}]},
     "messages[0].content[0].media_type", "no image of type 'image/gif'"),
]


@pytest.mark.parametrize(("model", "request_", "field", "words"), REFUSALS,
                         ids=[f"{m.split('/')[0]}-{f}" for m, _, f, _ in REFUSALS])
async def test_parts_a_provider_cannot_take_are_refused_before_any_call(
        model: str, request_: dict[str, Any], field: str, words: str, emulator: Emulator) -> None:
    provider = model.split("/")[0].split(".")[0]
    before = len(emulator.requests)
    async with BatchClient({provider: Credentials("k", emulator.base_url(provider))}) as client:
        with pytest.raises(RequestValidationError) as caught:
            await client.submit(model, [{"custom_id": "ok", "prompt": "fine"} if "value" not in request_
                                        else {"custom_id": "ok", "value": "fine"},
                                        {"custom_id": "the-one", **request_}])
    text = str(caught.value)
    assert f"requests[1].{field}" in text and "'the-one'" in text and words in text, text
    assert len(emulator.requests) == before


def _doc_examples() -> list[str]:
    text = (Path(__file__).parent.parent / "docs" / "providers.md").read_text()
    section = text.split("## Images, files and tools", 1)[1].split("\n## ", 1)[0]
    return [block.split("```", 1)[0] for block in section.split("```python\n")[1:]]


@pytest.mark.parametrize("block", _doc_examples(), ids=lambda b: b.split(":", 1)[0].lstrip("# "))
async def test_docs_examples_run_against_the_emulator(block: str, emulator: Emulator, tmp_path: Path) -> None:
    import fsspec

    fs = fsspec.filesystem("memory")
    fs.pipe("/examples/photo.png", PNG)
    fs.pipe("/examples/report.pdf", PDF)
    scope: dict[str, Any] = {"PHOTO_BYTES": PNG, "PHOTO_BASE64": base64.b64encode(PNG).decode(),
                             "PDF_BASE64": base64.b64encode(PDF).decode()}
    exec(block, scope)
    model, requests = scope["model"], scope["requests"]
    provider = model.split("/")[0].split(".")[0]
    async with BatchClient({provider: Credentials("k", emulator.base_url(provider))}) as client:
        job = await client.submit(model, requests)
        await client.wait(job, poll_interval=0.1, timeout=60)
        await client.write_parquet(job, f"{tmp_path}/out.parquet")
    rows = pq.read_table(tmp_path / "out.parquet").to_pylist()
    assert [r["status"] for r in rows] == ["succeeded"] * len(requests), rows
    for row, request in zip(sorted(rows, key=lambda r: r["custom_id"]),
                            sorted(requests, key=lambda r: r["custom_id"]), strict=True):
        if request.get("tool_choice") not in (None, "auto", "none"):
            assert row["finish_reason"] == "tool_calls" and json.loads(row["tool_calls"])[0]["name"]
        elif "messages" in request and any(isinstance(m["content"], list) and any(
                p["type"] in ("image", "file") for p in m["content"]) for m in request["messages"]):
            assert "(saw " in row["text"], row
