"""Google Gemini batch mode: the official google-genai SDK against the emulator; our adapter end to end."""

from __future__ import annotations

import json
import math
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pyarrow.parquet as pq
import pytest
from google import genai
from google.genai import errors as genai_errors
from google.genai import types

from airflow_batchwork.adapters import google as google_adapter
from airflow_batchwork.adapters.google import GoogleAdapter, metadata_from_display_name, operation_status
from airflow_batchwork.core import (
    BatchClient,
    Credentials,
    ProviderAPIError,
    RequestValidationError,
    UnsafeResponseError,
    parse_model,
)
from airflow_batchwork.testing import Emulator
from airflow_batchwork.testing.faults import FaultConfig
from airflow_batchwork.values.errors import CredentialsError
from airflow_batchwork.values.requests import BatchRequest

MODEL = "gemini-2.5-flash"
KEY = {"x-goog-api-key": "test-key"}


@pytest.fixture
def slow() -> Iterator[Emulator]:
    """Batches that stay pending for 1 s and running for ~28 s (for wire and cancel checks)."""
    with Emulator(processing_seconds=30) as emu:
        yield emu


def sdk(emu: Emulator, api_key: str = "test-key") -> genai.Client:
    return genai.Client(api_key=api_key, http_options={"base_url": emu.base_url("google")})


def client_for(emu: Emulator, api_key: str = "test-key") -> BatchClient:
    return BatchClient({"google": Credentials(api_key=api_key, base_url=emu.base_url("google"))})


def wait_sdk(client: genai.Client, name: str, timeout: float = 10.0) -> tuple[types.BatchJob, list[str]]:
    """Poll `batches.get` until the job is done; return it and the states seen."""
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while True:
        job = client.batches.get(name=name)
        assert job.state is not None
        if not seen or seen[-1] != job.state.name:
            seen.append(job.state.name)
        if job.done:
            return job, seen
        assert time.monotonic() < deadline, f"job stuck in {job.state}"
        time.sleep(0.02)


def raw_operation(emu: Emulator, name: str, version: str = "v1beta") -> dict[str, Any]:
    response = httpx.get(f"{emu.base_url('google')}/{version}/{name}", headers=KEY)
    assert response.status_code == 200, response.text
    return dict(response.json())


def text_request(key: str, text: str, **config: Any) -> Any:
    entry: dict[str, Any] = {
        "contents": [{"parts": [{"text": text}], "role": "user"}], "metadata": {"key": key},
    }
    if config:
        entry["config"] = config
    return entry


# --- the official SDK ------------------------------------------------------------------------------


def test_sdk_inline_batch_round_trip(emulator: Emulator) -> None:
    client = sdk(emulator)
    job = client.batches.create(
        model=MODEL,
        src=[
            text_request("ok", "hello world"),
            text_request("bad", "boom [[error]]"),
            text_request("short", "one two three", system_instruction="be brief", max_output_tokens=2),
        ],
        config={"display_name": "sdk-inline"},
    )
    assert job.name is not None and job.name.startswith("batches/")
    assert job.display_name == "sdk-inline" and job.model == f"models/{MODEL}"
    assert job.state in (types.JobState.JOB_STATE_PENDING, types.JobState.JOB_STATE_RUNNING)

    job, seen = wait_sdk(client, job.name)
    assert seen[-1] == "JOB_STATE_SUCCEEDED"
    assert job.dest is not None and job.dest.inlined_responses is not None
    by_key = {r.metadata["key"]: r for r in job.dest.inlined_responses if r.metadata}
    assert set(by_key) == {"ok", "bad", "short"}

    ok = by_key["ok"].response
    assert isinstance(ok, types.GenerateContentResponse)
    assert ok.text == "echo: hello world"
    assert ok.candidates and ok.candidates[0].finish_reason == types.FinishReason.STOP
    assert ok.usage_metadata is not None
    assert (ok.usage_metadata.prompt_token_count, ok.usage_metadata.candidates_token_count) == (2, 3)
    assert ok.usage_metadata.total_token_count == 5

    bad = by_key["bad"]
    assert bad.response is None and bad.error is not None
    assert bad.error.code == 3 and "[[error]]" in (bad.error.message or "")

    short = by_key["short"].response
    assert short is not None and short.text == "echo: one"
    assert short.candidates and short.candidates[0].finish_reason == types.FinishReason.MAX_TOKENS
    assert short.usage_metadata is not None and short.usage_metadata.prompt_token_count == 2 + 3


def test_raw_wire_operation_shape(slow: Emulator, emulator: Emulator) -> None:
    client = sdk(slow)
    created = client.batches.create(model=MODEL, src=[text_request(f"r{i}", "hi") for i in range(3)])
    assert created.name is not None
    pending = raw_operation(slow, created.name)
    meta = pending["metadata"]
    assert "done" not in pending and "response" not in pending
    assert meta["state"] == "BATCH_STATE_PENDING"
    assert meta["@type"].endswith(".GenerateContentBatch") and meta["name"] == created.name
    # int64 counters are strings on the wire; zero counters are omitted.
    assert meta["batchStats"] == {"requestCount": "3", "pendingRequestCount": "3"}
    assert "endTime" not in meta and "output" not in meta

    fast = sdk(emulator)
    quick = fast.batches.create(model=MODEL, src=[text_request("a", "x"), text_request("b", "y [[error]]")])
    assert quick.name is not None
    wait_sdk(fast, quick.name)
    final = raw_operation(emulator, quick.name)
    assert final["done"] is True
    assert final["metadata"]["state"] == "BATCH_STATE_SUCCEEDED"
    assert final["metadata"]["batchStats"] == {
        "requestCount": "2", "successfulRequestCount": "1", "failedRequestCount": "1",
    }
    assert final["response"]["@type"].endswith(".GenerateContentBatchOutput")
    assert final["response"]["inlinedResponses"] == final["metadata"]["output"]["inlinedResponses"]
    assert {"createTime", "updateTime", "endTime"} <= set(final["metadata"])
    # The same Operation under the API version google-genai 3.x uses by default.
    assert raw_operation(emulator, quick.name, version="v1")["metadata"]["state"] == "BATCH_STATE_SUCCEEDED"


def test_sdk_file_batch_round_trip(emulator: Emulator, tmp_path: Path) -> None:
    client = sdk(emulator)
    lines = [
        {"key": "f1", "request": {"contents": [{"parts": [{"text": "from a file"}], "role": "user"}]}},
        {"key": "f2", "request": {"contents": [{"parts": [{"text": "bad [[error]]"}]}]}},
    ]
    path = tmp_path / "requests.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    uploaded = client.files.upload(file=path, config={"mime_type": "jsonl", "display_name": "my-requests"})
    assert uploaded.name is not None and uploaded.name.startswith("files/")
    assert uploaded.size_bytes == path.stat().st_size and uploaded.display_name == "my-requests"

    created = client.batches.create(model=MODEL, src=uploaded.name, config={"display_name": "sdk-file"})
    assert created.name is not None
    job, _ = wait_sdk(client, created.name)
    assert job.state == types.JobState.JOB_STATE_SUCCEEDED
    assert job.dest is not None and job.dest.file_name is not None
    assert raw_operation(emulator, created.name)["metadata"]["inputConfig"] == {"fileName": uploaded.name}

    content = client.files.download(file=job.dest.file_name)
    results = {r["key"]: r for r in map(json.loads, content.decode().splitlines())}
    assert set(results) == {"f1", "f2"}
    response = types.GenerateContentResponse.model_validate(results["f1"]["response"])
    assert response.text == "echo: from a file"
    assert response.usage_metadata is not None and response.usage_metadata.candidates_token_count == 4
    assert results["f2"]["error"]["code"] == 3 and "status" not in results["f2"]["error"]
    # Uploaded inputs cannot be downloaded, as on the real API.
    with pytest.raises(genai_errors.ClientError):
        client.files.download(file=uploaded.name)


def test_bad_input_file_fails_the_batch(emulator: Emulator, tmp_path: Path) -> None:
    client = sdk(emulator)
    path = tmp_path / "bad.jsonl"
    path.write_text('{"key": "a", "request": {"contents": []}}\nnot json\n')
    uploaded = client.files.upload(file=path, config={"mime_type": "jsonl"})
    assert uploaded.name is not None
    created = client.batches.create(model=MODEL, src=uploaded.name)
    assert created.name is not None
    job, _ = wait_sdk(client, created.name)
    assert job.state == types.JobState.JOB_STATE_FAILED
    operation = raw_operation(emulator, created.name)
    assert operation["error"]["code"] == 3 and "Line 2" in operation["error"]["message"]
    assert "response" not in operation


def test_sdk_embeddings_batch(emulator: Emulator) -> None:
    client = sdk(emulator)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # create_embeddings is marked experimental
        job = client.batches.create_embeddings(
            model="gemini-embedding-001",
            src={"inlined_requests": {"contents": ["first text", "second text"],
                                      "config": {"output_dimensionality": 4}}},
            config={"display_name": "sdk-embed"},
        )
    name = job.name
    assert name is not None
    job, _ = wait_sdk(client, name)
    assert job.state == types.JobState.JOB_STATE_SUCCEEDED
    assert job.dest is not None and job.dest.inlined_embed_content_responses is not None
    vectors = [r.response.embedding.values for r in job.dest.inlined_embed_content_responses
               if r.response and r.response.embedding]
    assert len(vectors) == 2 and all(v is not None and len(v) == 4 for v in vectors)
    assert math.isclose(sum(x * x for x in vectors[0] or []), 1.0, rel_tol=1e-6)
    assert raw_operation(emulator, name)["metadata"]["@type"].endswith(".EmbedContentBatch")


def test_sdk_list_pages_cancel_and_delete(slow: Emulator) -> None:
    client = sdk(slow)
    names = [client.batches.create(model=MODEL, src=[text_request("a", "x")]).name for _ in range(3)]
    pager = client.batches.list(config={"page_size": 2})
    assert [job.name for job in pager.page] == names[::-1][:2]
    assert [job.name for job in client.batches.list(config={"page_size": 2})] == names[::-1]

    url = f"{slow.base_url('google')}/v1beta/batches"
    first = httpx.get(url, params={"pageSize": 2}, headers=KEY).json()
    assert len(first["operations"]) == 2 and first["nextPageToken"]
    second = httpx.get(url, params={"pageSize": 2, "pageToken": first["nextPageToken"]}, headers=KEY).json()
    assert [op["name"] for op in second["operations"]] == [names[0]] and "nextPageToken" not in second
    bad_token = httpx.get(url, params={"pageToken": "nope"}, headers=KEY)
    assert bad_token.status_code == 400 and bad_token.json()["error"]["status"] == "INVALID_ARGUMENT"

    assert names[0] is not None
    client.batches.cancel(name=names[0])
    job, seen = wait_sdk(client, names[0], timeout=5)
    assert seen[-1] == "JOB_STATE_CANCELLED" and job.done
    assert raw_operation(slow, names[0])["metadata"]["state"] == "BATCH_STATE_CANCELLED"

    client.batches.delete(name=names[0])
    with pytest.raises(genai_errors.ClientError) as info:
        client.batches.get(name=names[0])
    assert (info.value.code, info.value.status) == (404, "NOT_FOUND")


def test_sdk_sees_google_shaped_errors(emulator: Emulator) -> None:
    bad_key = sdk(emulator, api_key="invalid")  # keep a reference: a collected Client closes its HTTP client
    with pytest.raises(genai_errors.ClientError) as info:
        bad_key.batches.list()
    assert (info.value.code, info.value.status) == (400, "INVALID_ARGUMENT")
    assert info.value.message == "API key not valid. Please pass a valid API key."
    assert info.value.details["error"]["details"][0]["reason"] == "API_KEY_INVALID"

    client = sdk(emulator)
    with pytest.raises(genai_errors.ClientError) as info:
        client.batches.get(name="batches/doesnotexist")
    assert (info.value.code, info.value.status) == (404, "NOT_FOUND")

    url = f"{emulator.base_url('gemini')}/v1beta/batches"
    for headers in ({}, {"x-goog-api-key": ""}):
        response = httpx.get(url, headers=headers)
        assert response.status_code == 403
        assert response.json()["error"]["status"] == "PERMISSION_DENIED"
    assert httpx.get(url, params={"key": "test-key"}).status_code == 200


# --- our adapter, via BatchClient ----------------------------------------------------------------------


THREE: list[dict[str, Any]] = [
    {"custom_id": "ok", "prompt": "hello world"},
    {"custom_id": "bad", "prompt": "boom [[error]]"},
    {"custom_id": "chat", "system": "be brief", "max_output_tokens": 2, "messages": [
        {"role": "user", "content": "first"}, {"role": "assistant", "content": "ok"},
        {"role": "user", "content": [{"type": "text", "text": "second part"}]},
    ]},
]


async def test_three_request_job_to_parquet(emulator: Emulator, tmp_path: Path) -> None:
    async with client_for(emulator) as client:
        job = await client.submit(f"gemini/{MODEL}", THREE, defaults={"temperature": 0.2})
        assert job.provider == "google" and job.model == f"google.chat/{MODEL}"
        assert job.batch_ids[0].startswith("batches/")
        final = await client.wait(job, poll_interval=0.05, timeout=30)
        manifest = await client.write_parquet(job, f"file://{tmp_path}/out.parquet")

    assert final.state == "completed"
    assert final.counts.as_dict() == {
        "total": 3, "succeeded": 2, "errored": 1, "expired": 0, "canceled": 0, "processing": 0,
    }
    assert manifest["rows"] == 3 and manifest["counts"] == {"succeeded": 2, "errored": 1}
    rows = {row["custom_id"]: row for row in pq.read_table(tmp_path / "out.parquet").to_pylist()}
    ok, bad, chat = rows["ok"], rows["bad"], rows["chat"]
    assert (ok["status"], ok["text"], ok["finish_reason"]) == ("succeeded", "echo: hello world", "stop")
    assert (ok["input_tokens"], ok["output_tokens"], ok["total_tokens"]) == (2, 3, 5)
    assert (ok["provider"], ok["model"]) == ("google", f"google.chat/{MODEL}")
    assert ok["batch_id"] == job.batch_ids[0]
    assert json.loads(ok["response"])["metadata"] == {"key": "ok"}
    assert json.loads(ok["response"])["response"]["candidates"][0]["finishReason"] == "STOP"

    assert (bad["status"], bad["text"], bad["finish_reason"]) == ("errored", None, "error")
    assert bad["error_code"] == "INVALID_ARGUMENT" and "[[error]]" in bad["error_message"]
    assert json.loads(bad["response"])["error"]["code"] == 3

    assert (chat["status"], chat["text"], chat["finish_reason"]) == ("succeeded", "echo: second", "length")
    assert (chat["input_tokens"], chat["output_tokens"]) == (2 + 1 + 1 + 2, 2)

    [view] = [b for b in emulator.batches("google") if b.id == job.batch_ids[0]]
    sent = view.items[2].body["request"]
    assert sent["systemInstruction"] == {"parts": [{"text": "be brief"}]}
    assert [c["role"] for c in sent["contents"]] == ["user", "model", "user"]
    assert sent["generationConfig"] == {"maxOutputTokens": 2, "temperature": 0.2}


async def test_job_over_the_inline_limit_is_uploaded(
    emulator: Emulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(google_adapter, "UPLOAD_CHUNK_BYTES", 64)  # several resumable chunks
    mark = len(emulator.requests)
    async with client_for(emulator) as client:
        client.adapter("google").inline_max_bytes = 200  # type: ignore[attr-defined]
        job = await client.submit(f"google/{MODEL}", THREE)
        await client.wait(job, poll_interval=0.05, timeout=30)
        manifest = await client.write_parquet(job, f"{tmp_path}/file-mode.parquet")

    calls = [(r.method, r.path) for r in emulator.requests[mark:]]
    uploads = [c for c in calls if c == ("POST", "/gemini/upload/v1beta/files")]
    assert len(uploads) >= 1 + 4  # start + chunks of 64 bytes
    operation = raw_operation(emulator, job.batch_ids[0])
    responses_file = operation["response"]["responsesFile"]
    assert ("GET", f"/gemini/download/v1beta/{responses_file}:download") in calls
    assert operation["metadata"]["inputConfig"]["fileName"].startswith("files/")
    assert manifest["counts"] == {"succeeded": 2, "errored": 1}
    rows = {row["custom_id"]: row for row in pq.read_table(tmp_path / "file-mode.parquet").to_pylist()}
    assert rows["ok"]["text"] == "echo: hello world" and rows["bad"]["status"] == "errored"
    assert json.loads(rows["ok"]["response"])["key"] == "ok"


async def test_expire_marker_expires_the_whole_batch_without_results(emulator: Emulator) -> None:
    async with client_for(emulator) as client:
        job = await client.submit(f"google/{MODEL}", [{"custom_id": "ok", "prompt": "fine"},
                                                      {"custom_id": "late", "prompt": "slow [[expire]]"}])
        final = await client.wait(job, poll_interval=0.05, timeout=30)
        rows = [item async for item in client.results(job)]
    assert final.state == "expired"
    assert (final.counts.total, final.counts.succeeded, final.counts.expired) == (2, 1, 1)
    assert rows == []  # Gemini keeps no results of an expired batch
    operation = raw_operation(emulator, job.batch_ids[0])
    assert operation["metadata"]["state"] == "BATCH_STATE_EXPIRED" and operation["done"] is True
    assert "response" not in operation and operation["error"]["code"] == 4


async def test_embeddings_to_parquet(emulator: Emulator, tmp_path: Path) -> None:
    async with client_for(emulator) as client:
        job = await client.submit(
            "google.embedding/gemini-embedding-001",
            [{"custom_id": "a", "value": "hello"}, {"custom_id": "b", "value": "world", "dimensions": 4}],
            defaults={"dimensions": 16},
        )
        await client.wait(job, poll_interval=0.05, timeout=30)
        await client.write_parquet(job, f"{tmp_path}/emb.parquet")
    rows = {r["custom_id"]: r for r in pq.read_table(tmp_path / "emb.parquet").to_pylist()}
    assert len(rows["a"]["embedding"]) == 16 and len(rows["b"]["embedding"]) == 4
    assert math.isclose(sum(x * x for x in rows["a"]["embedding"]), 1.0, rel_tol=1e-5)
    assert rows["a"]["status"] == "succeeded" and rows["a"]["text"] is None


async def test_list_pages_and_find_batch(emulator: Emulator) -> None:
    mark = len(emulator.requests)
    async with client_for(emulator) as client:
        ids = []
        for i in range(3):
            tags = {"batchwork_job": f"j{i}"}
            ids += (await client.submit(f"google/{MODEL}", [{"prompt": "x"}], metadata=tags)).batch_ids
        adapter = client.adapter("google")
        adapter.list_page_size = 2  # type: ignore[attr-defined]
        listed = [b.id async for b in adapter.list_batches(limit=5)]
        assert listed[:3] == ids[::-1]
        assert await adapter.find_batch({"batchwork_job": "j1"}) == ids[1]
        assert await adapter.find_batch({"batchwork_job": "nope"}, limit=20) is None
    calls = [(r.method, r.path) for r in emulator.requests[mark:]]
    list_calls = [c for c in calls if c == ("GET", "/gemini/v1beta/batches")]
    assert len(list_calls) >= 3
    named = raw_operation(emulator, ids[1])["metadata"]["displayName"]
    assert metadata_from_display_name(named) == {"batchwork_job": "j1"}


async def test_cancel_reports_cancelled(slow: Emulator) -> None:
    async with client_for(slow) as client:
        job = await client.submit(f"google/{MODEL}", [{"prompt": "a"}, {"prompt": "b"}])
        await client.cancel(job)
        final = await client.wait(job, poll_interval=0.05, timeout=10)
        rows = [item async for item in client.results(job)]
    assert final.state == "cancelled"
    assert (final.counts.total, final.counts.canceled) == (2, 2)
    assert rows == []


async def test_provider_shaped_errors(emulator: Emulator) -> None:
    async with client_for(emulator, api_key="invalid") as client:
        with pytest.raises(ProviderAPIError) as info:
            await client.submit(f"google/{MODEL}", [{"prompt": "x"}])
    assert (info.value.status_code, info.value.code) == (400, "INVALID_ARGUMENT")
    assert "API key not valid" in info.value.message

    # An empty key never reaches the wire (values/credentials.py refuses it); the provider's answer to a
    # request without a key is checked on the raw HTTP API.
    with pytest.raises(CredentialsError):
        client_for(emulator, api_key="")
    missing = httpx.get(emulator.base_url("google") + "/v1beta/batches")
    assert (missing.status_code, missing.json()["error"]["status"]) == (403, "PERMISSION_DENIED")

    async with client_for(emulator) as client:
        with pytest.raises(ProviderAPIError) as info:
            await client.adapter("google").status("batches/doesnotexist")
        assert (info.value.status_code, info.value.code) == (404, "NOT_FOUND")
        with pytest.raises(UnsafeResponseError):
            await client.adapter("google").status("batches/../files/x")
        with pytest.raises(UnsafeResponseError):
            await client.adapter("google").status("msgbatch_1")


async def test_retries_through_injected_429s_including_the_upload() -> None:
    faults = FaultConfig(rate_limit_every=3, retry_after_seconds=0)
    with Emulator(processing_seconds=0.2, faults=faults) as emu:
        async with client_for(emu) as client:
            client.adapter("google").inline_max_bytes = 0  # type: ignore[attr-defined]
            job = await client.submit(f"google/{MODEL}", THREE)
            await client.wait(job, poll_interval=0.05, timeout=30)
            rows = [item async for item in client.results(job)]
        limited = [r for r in emu.requests if r.fault == "rate_limit"]
        answers = [httpx.get(f"{emu.base_url('google')}/v1beta/batches", headers=KEY) for _ in range(3)]
    assert limited and {row.status for row in rows} == {"succeeded", "errored"}
    [answer] = [a for a in answers if a.status_code == 429]
    error = answer.json()["error"]
    assert (error["code"], error["status"]) == (429, "RESOURCE_EXHAUSTED")
    assert error["details"] == [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "0s"}]


async def test_upload_url_on_another_origin_is_refused() -> None:
    hosts: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        hosts.append(request.url.host)
        if request.url.path == "/upload/v1beta/files":
            return httpx.Response(200, headers={"x-goog-upload-url": "https://collector.evil.test/upload?id=1"})
        return httpx.Response(500)

    creds = Credentials("secret-key", "https://generativelanguage.test")
    async with BatchClient({"google": creds}, transport=httpx.MockTransport(handler)) as client:
        client.adapter("google").inline_max_bytes = 0  # type: ignore[attr-defined]
        with pytest.raises(UnsafeResponseError, match="not the configured API origin"):
            await client.submit(f"google/{MODEL}", [{"prompt": "x"}])
    assert hosts == ["generativelanguage.test"]


# --- pure mapping and parsing --------------------------------------------------------------------


def test_request_mapping_and_refusals() -> None:
    adapter = GoogleAdapter.offline()
    chat, embedding = parse_model(f"google/{MODEL}"), parse_model("google.embedding/gemini-embedding-001")
    request = BatchRequest(
        custom_id="r1", prompt="hi", top_p=0.5, top_k=3, stop_sequences=["x"], seed=7, presence_penalty=0.1,
        frequency_penalty=0.2, provider_options={"generationConfig": {"responseMimeType": "application/json"},
                                                 "safetySettings": []},
    )
    line = json.loads(adapter.encode(chat, request))
    assert line["key"] == "r1"
    assert line["request"] == {
        "contents": [{"role": "user", "parts": [{"text": "hi"}]}],
        "generationConfig": {
            "topP": 0.5, "topK": 3, "stopSequences": ["x"], "seed": 7, "presencePenalty": 0.1,
            "frequencyPenalty": 0.2, "responseMimeType": "application/json",
        },
        "safetySettings": [],
    }
    embed = json.loads(adapter.encode(embedding, BatchRequest(custom_id="e", value="v", dimensions=3)))
    assert embed["request"] == {"content": {"parts": [{"text": "v"}]}, "outputDimensionality": 3}

    assert adapter.check_request(chat, BatchRequest(custom_id="a", prompt="x", dimensions=3)) is not None
    refusal = adapter.check_request(embedding, BatchRequest(custom_id="a", value="x", temperature=0.5))
    assert refusal is not None and refusal[0] == "temperature"
    with pytest.raises(RequestValidationError, match="dimensions"):
        BatchClient().prepare(f"google/{MODEL}", [{"prompt": "x", "dimensions": 4}])


def test_status_reads_string_counters_and_sdk_state_names() -> None:
    def status(operation: dict[str, Any]) -> Any:
        return operation_status(operation, GoogleAdapter.offline().check_id)

    running = status({"name": "batches/a", "metadata": {
        "state": "BATCH_STATE_RUNNING", "batchStats": {"requestCount": "5", "successfulRequestCount": "2"}}})
    assert running.state == "in_progress"
    assert running.counts.as_dict() == {"total": 5, "succeeded": 2, "errored": 0, "expired": 0, "canceled": 0,
                                        "processing": 3}
    assert status({"name": "batches/a", "metadata": {"state": "JOB_STATE_PENDING"}}).state == "validating"
    cancelled = status({"name": "batches/a", "done": True, "metadata": {
        "state": "JOB_STATE_CANCELLED", "batchStats": {"requestCount": "4", "failedRequestCount": "1"}}})
    assert (cancelled.state, cancelled.counts.canceled, cancelled.counts.errored) == ("cancelled", 3, 1)
    failed = status({"name": "batches/a", "done": True, "metadata": {"state": "BATCH_STATE_FAILED"},
                     "error": {"code": 3, "message": "bad input file"}})
    assert (failed.state, failed.error_message) == ("failed", "bad input file")
    assert status({"name": "batches/a", "done": True, "metadata": {}}).state == "completed"


async def test_results_read_the_metadata_output_mirror() -> None:
    entry = {"metadata": {"key": "k1"}, "response": {
        "candidates": [{"content": {"parts": [{"text": "thinking", "thought": True}, {"text": "answer"}]},
                        "finishReason": "SAFETY"}],
        "usageMetadata": {"promptTokenCount": 4, "candidatesTokenCount": 1, "thoughtsTokenCount": 2,
                          "totalTokenCount": 7}}}
    operation = {"name": "batches/a", "done": True, "metadata": {
        "state": "JOB_STATE_SUCCEEDED", "output": {"inlinedResponses": {"inlinedResponses": [entry]}}}}

    def handler(request: httpx.Request) -> httpx.Response:
        assert request.headers["x-goog-api-key"] == "k"
        return httpx.Response(200, json=operation)

    transport = httpx.MockTransport(handler)
    async with BatchClient({"google": Credentials("k", "https://g.test")}, transport=transport) as client:
        adapter = client.adapter("google")
        [item] = [i async for i in adapter.results(parse_model(f"google/{MODEL}"), "batches/a")]
    assert (item.custom_id, item.text, item.finish_reason) == ("k1", "answer", "content_filter")
    assert (item.input_tokens, item.output_tokens, item.total_tokens) == (4, 3, 7)


def test_item_error_codes_are_google_rpc_status_numbers_in_both_parsers() -> None:
    """An item's `error` is a google.rpc.Status: the numeric code names the error, in the line parser and the
    vectorized file parser alike; a legacy `status` string is only a fallback."""
    lines = [
        {"key": "quota", "error": {"code": 8, "message": "quota"}},
        {"key": "down", "error": {"code": 14, "message": "down", "details": [{"@type": "type.googleapis.com/x"}]}},
        {"key": "bad", "error": {"code": 3, "message": "bad"}},
        {"key": "odd", "error": {"code": 99, "message": "odd"}},
        {"key": "legacy", "error": {"message": "old", "status": "INTERNAL"}},
        {"key": "ok", "response": {"candidates": [{"content": {"parts": [{"text": "hi"}]}, "finishReason": "STOP"}]}},
    ]
    chunk = "".join(json.dumps(line) + "\n" for line in lines).encode()
    expected = {"quota": "RESOURCE_EXHAUSTED", "down": "UNAVAILABLE", "bad": "INVALID_ARGUMENT", "odd": "99",
                "legacy": "INTERNAL", "ok": None}
    vectorized = google_adapter.parse_generate_chunk(chunk, "batches/x")
    assert vectorized is not None
    assert dict(zip(vectorized.column("custom_id").to_pylist(), vectorized.column("error_code").to_pylist(),
                    strict=True)) == expected
    adapter = GoogleAdapter.offline()
    ref = parse_model(f"google/{MODEL}")
    by_line = {i.custom_id: i.error_code for i in adapter.parse_result_text(ref, "batches/x", chunk.decode())}
    assert by_line == expected
    retryable = {k for k, v in expected.items() if v in GoogleAdapter.retryable_error_codes}
    assert retryable == {"quota", "down", "legacy"}
