"""Groq: the official ``groq`` SDK against the emulator, and our adapter end to end (→ Parquet)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import groq
import httpx
import pyarrow.parquet as pq
import pytest
from groq.types.chat import ChatCompletion

from airflow_batchwork.adapters.groq import GroqAdapter
from airflow_batchwork.adapters.openai_compat import openai_batch_status
from airflow_batchwork.core import RESULT_SCHEMA, BatchClient, Credentials, parse_model
from airflow_batchwork.testing import Emulator
from airflow_batchwork.values.errors import ConfigurationError, ProviderAPIError, RequestValidationError
from airflow_batchwork.values.requests import BatchRequest

MODEL = "llama-3.1-8b-instant"
TERMINAL = {"completed", "failed", "expired", "cancelled"}
THREE = [
    {"custom_id": "ok", "prompt": "hello world"},
    {"custom_id": "bad", "prompt": "boom [[error]]"},
    {"custom_id": "late", "prompt": "slow [[expire]]"},
]


@pytest.fixture
def emu() -> Iterator[Emulator]:
    with Emulator(processing_seconds=0.2) as emulator:
        yield emulator


@pytest.fixture
def sdk(emu: Emulator) -> groq.Groq:
    return groq.Groq(api_key="test", base_url=emu.base_url("groq"), max_retries=0)


def _jsonl(*pairs: tuple[str, str]) -> bytes:
    return "\n".join(
        json.dumps(
            {
                "custom_id": custom_id,
                "method": "POST",
                "url": "/v1/chat/completions",
                "body": {"model": MODEL, "messages": [{"role": "user", "content": text}]},
            }
        )
        for custom_id, text in pairs
    ).encode()


def _submit(sdk: groq.Groq, window: str = "24h") -> Any:
    uploaded = sdk.files.create(
        file=("input.jsonl", _jsonl(("a", "hi there"), ("b", "x [[error]]"))), purpose="batch"
    )
    return sdk.batches.create(
        completion_window=window, endpoint="/v1/chat/completions", input_file_id=uploaded.id
    )


def _wait(sdk: groq.Groq, batch_id: str) -> tuple[Any, list[str]]:
    seen: list[str] = []
    deadline = time.monotonic() + 10
    while True:
        batch = sdk.batches.retrieve(batch_id)
        if not seen or seen[-1] != batch.status:
            seen.append(batch.status)
        if batch.status in TERMINAL:
            return batch, seen
        assert time.monotonic() < deadline, f"stuck in {batch.status}"
        time.sleep(0.02)


def client_for(emu: Emulator, key: str = "test-key") -> BatchClient:
    return BatchClient({"groq": Credentials(api_key=key, base_url=emu.base_url("groq"))})


# --- the official SDK ----------------------------------------------------------------------------


def test_sdk_runs_its_batch_flow(sdk: groq.Groq) -> None:
    created = _submit(sdk, window="48h")
    assert created.status == "validating" and created.completion_window == "48h"
    assert created.expires_at - created.created_at == 48 * 3600
    batch, seen = _wait(sdk, created.id)
    assert seen[-1] == "completed" and set(seen) <= {"validating", "in_progress", "finalizing", "completed"}
    assert (batch.request_counts.total, batch.request_counts.completed, batch.request_counts.failed) == (
        2,
        1,
        1,
    )

    output = [json.loads(line) for line in sdk.files.content(batch.output_file_id).text().splitlines()]
    assert [line["custom_id"] for line in output] == ["a"]
    completion = ChatCompletion.model_validate(output[0]["response"]["body"])
    assert completion.choices[0].message.content == "echo: hi there"
    assert completion.usage is not None and completion.usage.total_tokens == 5
    errors = [json.loads(line) for line in sdk.files.content(batch.error_file_id).text().splitlines()]
    assert errors[0]["custom_id"] == "b" and errors[0]["response"]["status_code"] == 400


def test_sdk_windows_errors_and_auth(emu: Emulator, sdk: groq.Groq) -> None:
    for window in ("7d", "168h", "3d"):
        assert _submit(sdk, window=window).completion_window == window
    for window in ("23h", "8d", "1w", "24"):
        with pytest.raises(groq.BadRequestError) as bad:
            _submit(sdk, window=window)
        assert bad.value.body["error"]["code"] == "invalid_value"  # type: ignore[index]
    with pytest.raises(groq.NotFoundError) as missing:
        sdk.batches.retrieve("batch_missing")
    assert set(missing.value.body["error"]) == {"message", "type", "code"}  # type: ignore[arg-type]
    with pytest.raises(groq.AuthenticationError) as denied:
        groq.Groq(api_key="invalid", base_url=emu.base_url("groq"), max_retries=0).batches.list()
    assert denied.value.body["error"]["code"] == "invalid_api_key"  # type: ignore[index]


def test_sdk_lists_with_cursor_and_multi_get(emu: Emulator, sdk: groq.Groq) -> None:
    ids = [_submit(sdk).id for _ in range(3)]
    first = sdk.batches.list(extra_query={"limit": 2})
    assert [b.id for b in first.data] == ids[::-1][:2]
    cursor = first.paging["next_cursor"]  # type: ignore[attr-defined]
    assert cursor.startswith("cursor_")
    second = sdk.batches.list(extra_query={"cursor": cursor, "limit": 2})
    assert [b.id for b in second.data] == [ids[0]]
    assert second.paging["next_cursor"] is None  # type: ignore[attr-defined]
    several = httpx.get(
        emu.base_url("groq") + "/openai/v1/batches",
        params=[("id", ids[0]), ("id", ids[2])],
        headers={"Authorization": "Bearer k"},
    ).json()
    assert {b["id"] for b in several["data"]} == {ids[0], ids[2]} and "paging" not in several
    # The doc shape of `errors` is a bare array.
    bad = sdk.files.create(file=("bad.jsonl", b"not json\n"), purpose="batch")
    failed = sdk.batches.create(
        completion_window="24h", endpoint="/v1/chat/completions", input_file_id=bad.id
    )
    batch, _ = _wait(sdk, failed.id)
    raw = sdk.batches.with_raw_response.retrieve(batch.id).json()
    assert batch.status == "failed" and raw["errors"]["data"][0]["line"] == 1


# --- our adapter ---------------------------------------------------------------------------------


async def test_three_request_job_to_parquet(emulator: Emulator, tmp_path: Path) -> None:
    async with client_for(emulator) as client:
        job = await client.submit(f"groq/{MODEL}", THREE, defaults={"max_output_tokens": 50})
        final = await client.wait(job, poll_interval=0.1, timeout=30)
        manifest = await client.write_parquet(job, f"file://{tmp_path}/out.parquet")
    assert final.state == "expired"  # an item can only expire with its batch's window
    assert manifest["rows"] == 3 and manifest["counts"] == {"succeeded": 1, "errored": 1, "expired": 1}
    table = pq.read_table(tmp_path / "out.parquet")
    assert table.schema.remove_metadata() == RESULT_SCHEMA
    rows = {row["custom_id"]: row for row in table.to_pylist()}
    ok, bad, late = rows["ok"], rows["bad"], rows["late"]
    assert (ok["status"], ok["text"], ok["finish_reason"]) == ("succeeded", "echo: hello world", "stop")
    assert (ok["input_tokens"], ok["output_tokens"], ok["total_tokens"]) == (2, 3, 5)
    assert (ok["provider"], ok["model"], ok["batch_id"]) == ("groq", f"groq/{MODEL}", job.batch_ids[0])
    assert (
        json.loads(ok["response"])["response"]["body"]["choices"][0]["message"]["content"]
        == "echo: hello world"
    )
    assert bad["status"] == "errored" and bad["text"] is None and bad["error_code"] and bad["error_message"]
    assert json.loads(bad["response"])["custom_id"] == "bad"
    assert (late["status"], late["error_code"]) == ("expired", "batch_expired")

    sent = emulator.batches("groq")[-1]
    assert sent.extra["completion_window"] == "24h"
    body = sent.items[0].body
    assert body["max_tokens"] == 50 and "max_completion_tokens" not in body


async def test_completion_window_is_configurable(emu: Emulator, monkeypatch: pytest.MonkeyPatch) -> None:
    creds = Credentials(api_key="k", base_url=emu.base_url("groq"))
    ref = parse_model(f"groq/{MODEL}")
    item = GroqAdapter.offline().encode(ref, BatchRequest(custom_id="a", prompt="hi"))
    adapter = GroqAdapter(creds, completion_window="3d")
    await adapter.create(ref, [item], metadata={})
    await adapter.aclose()
    monkeypatch.setenv("GROQ_COMPLETION_WINDOW", "72h")
    async with client_for(emu) as client:
        await client.submit(f"groq/{MODEL}", [{"prompt": "hi"}])
    assert [b.extra["completion_window"] for b in emu.batches("groq")] == ["3d", "72h"]
    with pytest.raises(ConfigurationError, match="24h"):
        GroqAdapter(creds, completion_window="8d")
    monkeypatch.setenv("GROQ_COMPLETION_WINDOW", "12h")
    with pytest.raises(ConfigurationError, match="GROQ_COMPLETION_WINDOW"):
        GroqAdapter(creds)


async def test_provider_shaped_401_and_404(emulator: Emulator) -> None:
    async with client_for(emulator, key="invalid") as client:
        with pytest.raises(ProviderAPIError) as denied:
            await client.submit(f"groq/{MODEL}", [{"prompt": "hi"}])
    assert (denied.value.status_code, denied.value.code) == (401, "invalid_api_key")
    assert "invalid" not in str(denied.value).replace("invalid_api_key", "").replace("Invalid", "")
    async with client_for(emulator) as client:
        with pytest.raises(ProviderAPIError) as missing:
            await client.adapter("groq").status("batch_nope")
    assert missing.value.status_code == 404 and "batch_nope" in missing.value.message


async def test_list_pages_through_cursors_and_cancel() -> None:
    with Emulator(processing_seconds=30) as slow:
        async with client_for(slow) as client:
            jobs = [await client.submit(f"groq/{MODEL}", [{"prompt": f"p{i}"}]) for i in range(23)]
            listed = [b.id async for b in client.adapter("groq").list_batches(limit=500)]
            assert listed == [job.batch_ids[0] for job in reversed(jobs)]  # 2 pages of the default 20
            assert [b.id async for b in client.adapter("groq").list_batches(limit=5)] == listed[:5]
            assert await client.adapter("groq").find_batch({"nope": "x"}) is None

            cancelled = await client.cancel(jobs[0])
            assert cancelled.state == "cancelling"
            final = await client.wait(jobs[0], poll_interval=0.1, timeout=30)
    assert final.state == "cancelled" and final.counts.total == 1


def test_refusals_and_both_error_shapes() -> None:
    with pytest.raises(RequestValidationError, match="top_k"):
        BatchClient({"groq": Credentials("k")}).prepare(f"groq/{MODEL}", [{"prompt": "hi", "top_k": 3}])
    ref = parse_model(f"groq/{MODEL}")
    request = BatchRequest(custom_id="a", prompt="hi", seed=1, stop_sequences=["x"])
    line = json.loads(GroqAdapter.offline().encode(ref, request))
    assert (
        line["url"] == "/v1/chat/completions" and line["body"]["seed"] == 1 and line["body"]["stop"] == ["x"]
    )
    error = {"code": "invalid_method", "message": "Invalid value: 'GET'", "param": "method", "line": 4}
    for errors in ([error], {"object": "list", "data": [error]}):
        status = openai_batch_status({"id": "batch_1", "status": "failed", "errors": errors}, lambda v: v)
        assert status.error_message == "Invalid value: 'GET'"
