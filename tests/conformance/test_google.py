"""Gemini (provider `google`) judged by its own published material: GAPIC protos, REST batch reference, SDK.

The schema document `airflow_batchwork/testing/schemas/google.json` is generated from the
`google-ai-generativelanguage` protos (v1beta) and the REST batch reference by
`tests/conformance/generators/google.py`; the batch envelope is cross-checked here against the
`google-genai` SDK. Everything is fetched over real HTTP from the emulator.

Allow-list (reasoned departures from a literal reading of the sources; all recorded in the document's
`overrides` / `answer_optional`):
- `GenerateContentRequest.model` / `EmbedContentRequest.model` are not required: inside a batch the model is
  the batch's (URL path), and the batch guide's JSONL lines and google-genai's builders omit it.
- `GenerateContentBatch.displayName` is not required: google-genai sets none and its own README creates
  Developer-API batches without one.
- An Operation's packed batch metadata need not carry `inputConfig` (inline requests are not echoed back).
- HTTP 401 is not judged: Gemini answers API-key problems with 400 `INVALID_ARGUMENT` / 403
  `PERMISSION_DENIED`, never 401 (see docs/providers.md), so those two are judged instead.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import httpx
import pyarrow.parquet as pq
import pytest
from google import genai
from google.genai import types
from pydantic import BaseModel

from airflow_batchwork.adapters.google import EMBED_FIELDS, EMBEDDING_UNSUPPORTED, GENERATE_FIELDS, GoogleAdapter
from airflow_batchwork.core import BatchClient, Credentials, RequestValidationError
from airflow_batchwork.engine.ledger import FsspecLedger
from airflow_batchwork.engine.resubmit import collect_with_retries
from airflow_batchwork.testing import Emulator, conformance
from airflow_batchwork.testing.faults import FaultConfig
from airflow_batchwork.values.refs import parse_model
from airflow_batchwork.values.requests import BatchRequest
from tests.conformance import drift

P = "google"
MODEL = "gemini-2.5-flash"
EMBED_MODEL = "gemini-embedding-001"
KEY = {"x-goog-api-key": "test-key"}
JUDGED: set[tuple[str, str, str]] = set()  # (provider, endpoint, check) combinations, counted for the report


class Review(BaseModel):
    title: str
    stars: int
    sentiment: Literal["positive", "negative"]


def judge(endpoint: str, check: str, name: str, obj: Any) -> None:
    """`obj` must be a valid `name` of Gemini's schema."""
    problems = conformance.violations(P, name, obj)
    assert problems == [], f"{name} ({check}): {problems}\n{json.dumps(obj)[:2000]}"
    JUDGED.add((P, endpoint, check))


def refused(name: str, obj: Any, needle: str) -> None:
    problems = conformance.violations(P, name, obj)
    assert problems, f"{name} accepted a known-bad body: {obj}"
    assert any(needle in p for p in problems), problems


def client_for(emu: Emulator) -> BatchClient:
    return BatchClient({P: Credentials(api_key="test-key", base_url=emu.base_url(P))})


def base(emu: Emulator) -> str:
    return emu.base_url(P)


def get(emu: Emulator, path: str, **params: Any) -> httpx.Response:
    return httpx.get(f"{base(emu)}/v1beta/{path}", headers=KEY, params=params)


def wait_done(emu: Emulator, name: str, timeout: float = 30.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        operation = get(emu, name).json()
        if operation.get("done"):
            return dict(operation)
        assert time.monotonic() < deadline, f"{name} never finished: {operation}"
        time.sleep(0.05)


def view(emu: Emulator, batch_id: str) -> Any:
    [found] = [b for b in emu.batches(P) if b.id == batch_id]
    return found


def file_lines(emu: Emulator, file_name: str) -> list[dict[str, Any]]:
    stored = emu.store.get_file(P, file_name.removeprefix("files/"))
    assert stored is not None
    return [json.loads(line) for line in stored.data.decode().splitlines() if line.strip()]


# Every request field we document, used at least once.
CHAT_REQUESTS: list[dict[str, Any]] = [
    {"custom_id": "prompt", "prompt": "hello world"},
    {"custom_id": "all-fields", "prompt": "tell me", "system": "be brief", "max_output_tokens": 64,
     "temperature": 0.2, "top_p": 0.9, "top_k": 40, "stop_sequences": ["END", "STOP"], "seed": 7,
     "presence_penalty": 0.1, "frequency_penalty": 0.2},
    {"custom_id": "multi-turn", "messages": [
        {"role": "system", "content": "you are terse"},
        {"role": "user", "content": "first"},
        {"role": "assistant", "content": [{"type": "text", "text": "an answer"}, {"type": "text", "text": "more"}]},
        {"role": "user", "content": [{"type": "text", "text": "second"}]},
    ]},
    {"custom_id": "structured", "prompt": "a review", "output_schema": Review},
    {"custom_id": "options", "prompt": "careful", "provider_options": {
        "generationConfig": {"candidateCount": 1, "thinkingConfig": {"thinkingBudget": 0}},
        "safetySettings": [{"category": "HARM_CATEGORY_HARASSMENT", "threshold": "BLOCK_ONLY_HIGH"}],
    }},
]
EMBED_REQUESTS: list[dict[str, Any]] = [
    {"custom_id": "e1", "value": "first text", "dimensions": 8},
    {"custom_id": "e2", "value": "second text", "provider_options": {"taskType": "RETRIEVAL_DOCUMENT",
                                                                     "title": "a title"}},
]


@pytest.fixture(scope="module")
def slow() -> Iterator[Emulator]:
    """Batches that stay pending ~1 s and running ~28 s: pending, running and cancel states."""
    with Emulator(processing_seconds=30) as emu:
        yield emu


# --- (a) every body and uploaded line our adapter builds -----------------------------------------------------


@pytest.mark.parametrize("mode", ["inline", "file"])
async def test_chat_bodies_and_lines_we_send(emulator: Emulator, tmp_path: Path, mode: str) -> None:
    async with client_for(emulator) as client:
        if mode == "file":
            client.adapter(P).inline_max_bytes = 0  # type: ignore[attr-defined]
        # One request has its own output schema: the ledger keeps which, for the collector.
        ledger = FsspecLedger(f"file://{tmp_path}/state", "job")
        job = await client.submit(f"google/{MODEL}", CHAT_REQUESTS, metadata={"team": "a"}, ledger=ledger,
                                  identity="job")
        await client.wait(job, poll_interval=0.05, timeout=30)
        rows = {r.custom_id: r for r in [item async for item in client.results(job)]}
    body = view(emulator, job.batch_ids[0]).extra["create_body"]
    judge("chat", f"{mode} create body", "BatchGenerateContentRequest", body)
    config = body["batch"]["inputConfig"]
    if mode == "inline":
        entries = config["requests"]["requests"]
        assert [e["metadata"]["key"] for e in entries] == [r["custom_id"] for r in CHAT_REQUESTS]
        for entry in entries:
            judge("chat", "inline request entry", "InlinedRequest", entry)
        sent = {e["metadata"]["key"]: e["request"] for e in entries}
    else:
        assert set(config) == {"fileName"}
        lines = file_lines(emulator, config["fileName"])
        for line in lines:
            judge("chat", "uploaded JSONL line", "GenerateContentRequestLine", line)
        sent = {line["key"]: line["request"] for line in lines}
    assert {r.status for r in rows.values()} == {"succeeded"}, {k: r.error_message for k, r in rows.items()}
    generation = sent["all-fields"]["generationConfig"]
    assert generation == {"maxOutputTokens": 64, "temperature": 0.2, "topP": 0.9, "topK": 40,
                          "stopSequences": ["END", "STOP"], "seed": 7, "presencePenalty": 0.1,
                          "frequencyPenalty": 0.2}
    assert sent["all-fields"]["systemInstruction"] == {"parts": [{"text": "be brief"}]}
    assert [c["role"] for c in sent["multi-turn"]["contents"]] == ["user", "model", "user"]
    structured = sent["structured"]["generationConfig"]
    assert structured["responseMimeType"] == "application/json" and "responseJsonSchema" in structured
    judge("chat", "structured output (responseJsonSchema)", "GenerationConfig", structured)
    assert json.loads(rows["structured"].text or "{}").keys() == {"title", "stars", "sentiment"}


@pytest.mark.parametrize("mode", ["inline", "file"])
async def test_embedding_bodies_and_lines_we_send(emulator: Emulator, mode: str) -> None:
    async with client_for(emulator) as client:
        if mode == "file":
            client.adapter(P).inline_max_bytes = 0  # type: ignore[attr-defined]
        job = await client.submit(f"google.embedding/{EMBED_MODEL}", EMBED_REQUESTS)
        await client.wait(job, poll_interval=0.05, timeout=30)
        rows = {r.custom_id: r for r in [item async for item in client.results(job)]}
    body = view(emulator, job.batch_ids[0]).extra["create_body"]
    judge("embedding", f"{mode} create body", "AsyncBatchEmbedContentRequest", body)
    config = body["batch"]["inputConfig"]
    if mode == "inline":
        for entry in config["requests"]["requests"]:
            judge("embedding", "inline request entry", "InlinedEmbedContentRequest", entry)
    else:
        for line in file_lines(emulator, config["fileName"]):
            judge("embedding", "uploaded JSONL line", "EmbedContentRequestLine", line)
    assert rows["e1"].embedding is not None and len(rows["e1"].embedding) == 8
    assert rows["e2"].status == "succeeded"


def test_encoded_lines_use_every_documented_field() -> None:
    """The encoder alone (no HTTP): each documented field lands in a schema-valid line."""
    adapter = GoogleAdapter.offline()
    chat, embed = parse_model(f"google/{MODEL}"), parse_model(f"google.embedding/{EMBED_MODEL}")
    for raw in CHAT_REQUESTS:
        line = json.loads(adapter.encode(chat, BatchRequest.model_validate(raw)))
        judge("chat", "encoded line", "GenerateContentRequestLine", line)
    for raw in EMBED_REQUESTS:
        line = json.loads(adapter.encode(embed, BatchRequest.model_validate(raw)))
        judge("embedding", "encoded line", "EmbedContentRequestLine", line)


@pytest.mark.parametrize("field", EMBEDDING_UNSUPPORTED)
async def test_embedding_refuses_generation_fields_up_front(emulator: Emulator, field: str) -> None:
    values: dict[str, Any] = {"system": "s", "max_output_tokens": 5, "temperature": 0.5, "top_p": 0.5, "top_k": 3,
                              "stop_sequences": ["x"], "seed": 1, "presence_penalty": 0.1,
                              "frequency_penalty": 0.1, "output_schema": {"type": "object"}}
    before = len(emulator.requests)
    async with client_for(emulator) as client:
        with pytest.raises(RequestValidationError, match=field):
            await client.submit(f"google.embedding/{EMBED_MODEL}", [{"value": "v", field: values[field]}])
    assert len(emulator.requests) == before  # refused before any API call
    JUDGED.add((P, "embedding", f"refuses {field}"))


@pytest.mark.parametrize(("model", "options", "field"), [
    (f"google/{MODEL}", {"temperature": 0.1}, "provider_options.temperature"),
    (f"google/{MODEL}", {"generation_config": {}}, "provider_options.generation_config"),
    (f"google.embedding/{EMBED_MODEL}", {"dimensions": 3}, "provider_options.dimensions"),
])
async def test_provider_options_outside_the_request_type_are_refused_up_front(
        emulator: Emulator, model: str, options: dict[str, Any], field: str) -> None:
    request: dict[str, Any] = {"value": "v"} if "embedding" in model else {"prompt": "p"}
    before = len(emulator.requests)
    async with client_for(emulator) as client:
        with pytest.raises(RequestValidationError, match=re.escape(field)):
            await client.submit(model, [{**request, "provider_options": options}])
    assert len(emulator.requests) == before
    JUDGED.add((P, "embedding" if "embedding" in model else "chat", f"refuses {field}"))


def test_provider_option_keys_are_the_request_types_fields() -> None:
    defs = conformance.document(P)["$defs"]
    assert set(defs["GenerateContentRequest"]["properties"]) - {"model"} == GENERATE_FIELDS
    assert set(defs["EmbedContentRequest"]["properties"]) - {"model"} == EMBED_FIELDS


async def test_chat_refuses_dimensions_up_front(emulator: Emulator) -> None:
    before = len(emulator.requests)
    async with client_for(emulator) as client:
        with pytest.raises(RequestValidationError, match="dimensions"):
            await client.submit(f"google/{MODEL}", [{"prompt": "p", "dimensions": 4}])
    assert len(emulator.requests) == before
    JUDGED.add((P, "chat", "refuses dimensions"))


# --- (b) every answer the emulator gives, over HTTP ---------------------------------------------------------


def inline_entries(operation: dict[str, Any]) -> list[dict[str, Any]]:
    return list(operation["response"]["inlinedResponses"].get("inlinedResponses", []))


async def test_operation_answers_in_every_state(emulator: Emulator, slow: Emulator, tmp_path: Path) -> None:
    sdk = genai.Client(api_key="test-key", http_options={"base_url": base(slow)})
    running = sdk.batches.create(model=MODEL, src=[{"contents": [{"parts": [{"text": "hi"}], "role": "user"}]}])
    assert running.name
    created = httpx.post(f"{base(slow)}/v1beta/models/{MODEL}:batchGenerateContent", headers=KEY, json={
        "batch": {"displayName": "d", "inputConfig": {"requests": {"requests": [
            {"request": {"contents": [{"parts": [{"text": "x"}]}]}, "metadata": {"key": "a"}}]}}}})
    judge("chat", "create answer (PENDING)", "GenerateContentBatchOperation", created.json())
    assert created.json()["metadata"]["state"] == "BATCH_STATE_PENDING"
    deadline = time.monotonic() + 20
    while (op := get(slow, running.name).json())["metadata"]["state"] != "BATCH_STATE_RUNNING":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    judge("chat", "operation RUNNING", "GenerateContentBatchOperation", op)
    cancel = httpx.post(f"{base(slow)}/v1beta/{running.name}:cancel", headers=KEY)
    judge("chat", "cancel answer", "Empty", cancel.json())
    cancelled = wait_done(slow, running.name)
    assert cancelled["metadata"]["state"] == "BATCH_STATE_CANCELLED"
    judge("chat", "operation CANCELLED", "GenerateContentBatchOperation", cancelled)

    async with client_for(emulator) as client:
        ok = await client.submit(f"google/{MODEL}", [
            {"custom_id": "ok", "prompt": "fine"}, {"custom_id": "bad", "prompt": "boom [[error]]"},
            {"custom_id": "busy", "prompt": "[[transient]]"},
            {"custom_id": "quota", "prompt": "[[transient]] RESOURCE_EXHAUSTED"}])
        expired = await client.submit(f"google/{MODEL}", [{"custom_id": "x", "prompt": "late [[expire]]"}])
    succeeded = wait_done(emulator, ok.batch_ids[0])
    assert succeeded["metadata"]["state"] == "BATCH_STATE_SUCCEEDED"
    judge("chat", "operation SUCCEEDED (inline)", "GenerateContentBatchOperation", succeeded)
    errors = {e["metadata"]["key"]: e.get("error") for e in inline_entries(succeeded)}
    for entry in inline_entries(succeeded):
        judge("chat", "inlined response / per-item error", "InlinedResponse", entry)
    assert (errors["ok"], errors["bad"]["code"], errors["busy"]["code"], errors["quota"]["code"]) == (None, 3, 14, 8)
    late = wait_done(emulator, expired.batch_ids[0], timeout=60)
    assert late["metadata"]["state"] == "BATCH_STATE_EXPIRED" and late["error"]["code"] == 4
    judge("chat", "operation EXPIRED", "GenerateContentBatchOperation", late)

    bad_file = tmp_path / "bad.jsonl"
    bad_file.write_text("not json\n")
    files_sdk = genai.Client(api_key="test-key", http_options={"base_url": base(emulator)})
    uploaded = files_sdk.files.upload(file=bad_file, config={"mime_type": "jsonl"})
    failed = httpx.post(f"{base(emulator)}/v1beta/models/{MODEL}:batchGenerateContent", headers=KEY,
                        json={"batch": {"inputConfig": {"fileName": uploaded.name}}}).json()
    failed = wait_done(emulator, failed["name"])
    assert failed["metadata"]["state"] == "BATCH_STATE_FAILED"
    judge("chat", "operation FAILED", "GenerateContentBatchOperation", failed)
    judge("chat", "operation FAILED error", "Status", failed["error"])


async def test_file_mode_answers_files_and_result_lines(emulator: Emulator) -> None:
    requests = [{"custom_id": "ok", "prompt": "fine"}, {"custom_id": "bad", "prompt": "boom [[error]]"},
                {"custom_id": "busy", "prompt": "[[transient]]"}]
    async with client_for(emulator) as client:
        client.adapter(P).inline_max_bytes = 0  # type: ignore[attr-defined]
        job = await client.submit(f"google/{MODEL}", requests)
    done = wait_done(emulator, job.batch_ids[0])
    judge("chat", "operation SUCCEEDED (file)", "GenerateContentBatchOperation", done)
    input_name = done["metadata"]["inputConfig"]["fileName"]
    judge("files", "file object (uploaded)", "File", get(emulator, input_name).json())
    out_name = done["response"]["responsesFile"]
    judge("files", "file object (generated)", "File", get(emulator, out_name).json())
    judge("files", "download without alt=media", "File",
          httpx.get(f"{base(emulator)}/download/v1beta/{out_name}:download", headers=KEY).json())
    media = httpx.get(f"{base(emulator)}/download/v1beta/{out_name}:download", headers=KEY,
                      params={"alt": "media"})
    lines = [json.loads(line) for line in media.text.splitlines()]
    for line in lines:
        judge("chat", "result line / per-item error", "GenerateContentResultLine", line)
    assert {line["key"]: line.get("error", {}).get("code") for line in lines} == {"ok": None, "bad": 3, "busy": 14}


async def test_embedding_answers(emulator: Emulator) -> None:
    async with client_for(emulator) as client:
        inline = await client.submit(f"google.embedding/{EMBED_MODEL}", [{"custom_id": "a", "value": "x"}])
        client.adapter(P).inline_max_bytes = 0  # type: ignore[attr-defined]
        filed = await client.submit(f"google.embedding/{EMBED_MODEL}", [{"custom_id": "b", "value": "y"}])
    op = wait_done(emulator, inline.batch_ids[0])
    judge("embedding", "operation SUCCEEDED (inline)", "EmbedContentBatchOperation", op)
    for entry in inline_entries(op):
        judge("embedding", "inlined response", "InlinedEmbedContentResponse", entry)
    op = wait_done(emulator, filed.batch_ids[0])
    judge("embedding", "operation SUCCEEDED (file)", "EmbedContentBatchOperation", op)
    media = httpx.get(f"{base(emulator)}/download/v1beta/{op['response']['responsesFile']}:download",
                      headers=KEY, params={"alt": "media"})
    for line in media.text.splitlines():
        judge("embedding", "result line", "EmbedContentResultLine", json.loads(line))


async def test_list_pages_and_upload_answers(emulator: Emulator) -> None:
    async with client_for(emulator) as client:
        for _ in range(3):
            await client.submit(f"google/{MODEL}", [{"prompt": "p"}])
    first = get(emulator, "batches", pageSize=2).json()
    judge("chat", "list page", "ListBatchesResponse", first)
    assert first["nextPageToken"]
    judge("chat", "last list page", "ListBatchesResponse",
          get(emulator, "batches", pageSize=2, pageToken=first["nextPageToken"]).json())
    start = httpx.post(f"{base(emulator)}/upload/v1beta/files", json={"file": {"displayName": "x.jsonl"}},
                       headers={**KEY, "X-Goog-Upload-Protocol": "resumable", "X-Goog-Upload-Command": "start",
                                "X-Goog-Upload-Header-Content-Length": "3"})
    assert start.status_code == 200 and start.content == b""
    final = httpx.post(start.headers["x-goog-upload-url"], content=b"{}\n",
                       headers={"X-Goog-Upload-Command": "upload, finalize", "X-Goog-Upload-Offset": "0"})
    judge("files", "upload finalize answer", "CreateFileResponse", final.json())
    batch = first["operations"][0]["name"]
    deleted = httpx.delete(f"{base(emulator)}/v1beta/{batch}", headers=KEY)
    judge("chat", "delete answer", "Empty", deleted.json())


def test_http_error_bodies(emulator: Emulator) -> None:
    answers = {
        400: get(emulator, "batches", pageToken="nope"),
        403: httpx.get(f"{base(emulator)}/v1beta/batches"),
        404: get(emulator, "batches/doesnotexist"),
    }
    invalid_key = httpx.get(f"{base(emulator)}/v1beta/batches", headers={"x-goog-api-key": "invalid"})
    with Emulator(processing_seconds=0.2, faults=FaultConfig(rate_limit_every=1, retry_after_seconds=1)) as emu:
        answers[429] = get(emu, "batches")
    with Emulator(processing_seconds=0.2, faults=FaultConfig(server_error_every=1)) as emu:
        answers[500] = get(emu, "batches")
    for status, answer in answers.items():
        assert answer.status_code == status, answer.text
        judge("http", f"HTTP {status} body", "HttpErrorBody", answer.json())
    judge("http", "HTTP 400 invalid key body", "HttpErrorBody", invalid_key.json())
    assert answers[429].json()["error"]["status"] == "RESOURCE_EXHAUSTED"


# --- the batch envelope, cross-checked against the google-genai SDK ----------------------------------------


def test_shipped_schema_is_what_the_generator_makes_from_the_installed_protos() -> None:
    """Provider drift: after upgrading google-ai-generativelanguage, this fails until google.json is regenerated
    (`python -m tests.conformance.generators.google`)."""
    from tests.conformance.generators import google as generator

    fresh, shipped = generator.build(), conformance.document(P)
    drift.assert_current(P, {**shipped, "$defs": fresh["$defs"]}, shipped)
    assert shipped["generated"] == "2026-12-01" and shipped["provider"] == P
    assert "google-ai-generativelanguage 0.12.1" in shipped["version"] and "API v1beta" in shipped["version"]



def snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


@pytest.mark.parametrize(("ours", "theirs", "renamed"), [
    ("Status", types.JobError, {}),
    ("InlinedResponse", types.InlinedResponse, {}),
    ("InlinedEmbedContentResponse", types.InlinedEmbedContentResponse, {}),
    # The SDK's InlinedRequest flattens `request` into model/contents/config; the wire keeps it nested.
    ("InlinedRequest", types.InlinedRequest, {"request": {"model", "contents", "config"}}),
])
def test_envelope_fields_match_the_sdk_types(ours: str, theirs: type[BaseModel], renamed: dict[str, set[str]]
                                             ) -> None:
    wire = {snake(k) for k in conformance.document(P)["$defs"][ours]["properties"]}
    expected = set(theirs.model_fields)
    for wire_name, sdk_names in renamed.items():
        expected = (expected - sdk_names) | {wire_name}
    assert wire == expected
    JUDGED.add((P, "envelope", f"{ours} vs google-genai {theirs.__name__}"))


def test_batch_state_enum_matches_the_sdk() -> None:
    """google-genai's t_job_state maps exactly the BATCH_STATE_* names the schema allows."""
    from google.genai import _transformers

    states = conformance.document(P)["$defs"]["BatchState"]["enum"]
    for state in states:
        assert _transformers.t_job_state(state) in types.JobState.__members__, state
    assert _transformers.t_job_state("BATCH_STATE_UNKNOWN_NEW") == "BATCH_STATE_UNKNOWN_NEW"  # not mapped
    JUDGED.add((P, "envelope", "BatchState vs google-genai t_job_state"))


def test_sdk_request_bodies_validate(emulator: Emulator) -> None:
    """What google-genai builds (generation config, structured output, system instruction) passes the schema."""
    sdk = genai.Client(api_key="test-key", http_options={"base_url": base(emulator)})
    job = sdk.batches.create(model=MODEL, src=[{
        "contents": [{"parts": [{"text": "Hello!"}], "role": "user"}],
        "config": {"temperature": 0.5, "max_output_tokens": 32, "stop_sequences": ["x"],
                   "system_instruction": "terse", "response_mime_type": "application/json",
                   "response_json_schema": Review.model_json_schema(),
                   "safety_settings": [{"category": "HARM_CATEGORY_HATE_SPEECH", "threshold": "BLOCK_NONE"}]},
        "metadata": {"key": "k1"},
    }], config={"display_name": "sdk"})
    assert job.name
    body = view(emulator, job.name).extra["create_body"]
    judge("chat", "google-genai create body", "BatchGenerateContentRequest", body)
    done = sdk.batches.get(name=job.name)
    deadline = time.monotonic() + 30
    while not done.done:
        assert time.monotonic() < deadline
        time.sleep(0.05)
        done = sdk.batches.get(name=job.name)
    assert done.state == types.JobState.JOB_STATE_SUCCEEDED and done.dest and done.dest.inlined_responses


# --- (c) not toothless: known-bad bodies are refused by the schema ------------------------------------------

GOOD_REQUEST: dict[str, Any] = {"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}


@pytest.mark.parametrize(("name", "bad", "needle"), [
    ("InlinedResponse", {"metadata": {"key": "a"}, "error": {"code": 400, "message": "m",
                                                             "status": "INVALID_ARGUMENT"}}, "'status'"),
    ("GenerateContentResultLine", {"key": "a", "error": {"code": "UNAVAILABLE", "message": "m"}}, "integer"),
    ("GenerateContentRequest", {**GOOD_REQUEST, "temperature": 0.2}, "'temperature'"),
    ("GenerateContentRequest", {"contents": [{"role": "user", "parts": [{"type": "text", "text": "x"}]}]},
     "'type'"),
    ("GenerateContentRequest", {"contents": "hi"}, "array"),
    ("GenerateContentRequest", {"generationConfig": {}}, "'contents' is a required property"),
    ("GenerateContentRequest", {**GOOD_REQUEST, "generationConfig": {"maxOutputTokens": "64"}}, "integer"),
    ("GenerateContentRequest", {**GOOD_REQUEST, "safetySettings": [{"category": "HARM_CATEGORY_NOPE",
                                                                     "threshold": "BLOCK_NONE"}]}, "is not one of"),
    ("GenerateContentRequest", {"contents": [{"parts": [{"text": "x", "inlineData": {
        "mimeType": "text/plain", "data": "eA=="}}]}]}, "False schema does not allow"),
    ("GenerateContentRequestLine", {"custom_id": "a", "request": GOOD_REQUEST}, "'custom_id'"),
    ("BatchGenerateContentRequest", {"batch": {"inputConfig": {}}}, "is not valid under any"),
    ("BatchGenerateContentRequest", {"batch": {"inputConfig": {"fileName": "files/a", "requests": {
        "requests": []}}}}, "False schema does not allow"),
    ("GenerateContentBatchOperation", {"name": "batches/a", "metadata": {
        "@type": "type.googleapis.com/google.ai.generativelanguage.v1main.GenerateContentBatch",
        "state": "JOB_STATE_RUNNING"}}, "is not one of"),
    ("GenerateContentBatchOperation", {"name": "batches/a", "metadata": {
        "@type": "type.googleapis.com/google.ai.generativelanguage.v1main.GenerateContentBatch",
        "batchStats": {"requestCount": 3}}}, "is not of type 'string'"),
    ("GenerateContentBatchOperation", {"name": "batches/a", "metadata": {"state": "BATCH_STATE_RUNNING"}},
     "'@type' is a required property"),
    ("File", {"name": "files/a", "state": "READY"}, "is not one of"),
    ("HttpErrorBody", {"error": {"code": 400, "message": "m"}}, "'status' is a required property"),
    ("HttpErrorBody", {"error": {"code": 400, "message": "m", "status": "BAD_THING"}}, "is not one of"),
    ("EmbedContentRequest", {"content": {"parts": [{"text": "x"}]}, "dimensions": 4}, "'dimensions'"),
])
def test_known_bad_bodies_are_refused(name: str, bad: Any, needle: str) -> None:
    refused(name, bad, needle)


# --- strict emulator: refusals over HTTP in Gemini's real shapes --------------------------------------------


def create(emu: Emulator, batch: dict[str, Any], method: str = "batchGenerateContent") -> httpx.Response:
    return httpx.post(f"{base(emu)}/v1beta/models/{MODEL}:{method}", headers=KEY, json={"batch": batch})


def inline_batch(request: dict[str, Any]) -> dict[str, Any]:
    return {"displayName": "d", "inputConfig": {"requests": {"requests": [
        {"request": request, "metadata": {"key": "a"}}]}}}


@pytest.mark.parametrize(("bad", "field", "needle"), [
    ({**GOOD_REQUEST, "temperature": 0.2}, "batch.inputConfig.requests.requests[0].request.temperature",
     'Unknown name "temperature"'),
    ({"contents": [{"parts": [{"type": "text", "text": "x"}]}]},
     "batch.inputConfig.requests.requests[0].request.contents[0].parts[0].type", 'Unknown name "type"'),
    ({**GOOD_REQUEST, "generationConfig": {"temperature": "hot"}},
     "batch.inputConfig.requests.requests[0].request.generationConfig.temperature", "is not of type 'number'"),
    ({**GOOD_REQUEST, "safetySettings": [{"category": "HARM_CATEGORY_NOPE", "threshold": "BLOCK_NONE"}]},
     "batch.inputConfig.requests.requests[0].request.safetySettings[0].category", "is not one of"),
])
def test_emulator_refuses_bad_inline_bodies_at_create(emulator: Emulator, bad: dict[str, Any], field: str,
                                                      needle: str) -> None:
    before = len(emulator.batches(P))
    answer = create(emulator, inline_batch(bad))
    assert answer.status_code == 400
    judge("http", "strict create refusal", "HttpErrorBody", answer.json())
    error = answer.json()["error"]
    assert error["status"] == "INVALID_ARGUMENT" and needle in error["message"]
    [violation] = [d for d in error["details"] if d["@type"].endswith("google.rpc.BadRequest")]
    assert violation["fieldViolations"][0]["field"] == field
    assert len(emulator.batches(P)) == before


async def test_response_schema_is_the_proto_schema_subset(emulator: Emulator) -> None:
    """`responseSchema` is the proto `Schema` message (an OpenAPI subset), unlike `responseJsonSchema`: through
    `provider_options` it works with its own keywords, and a JSON-Schema-only keyword is refused, as by the API
    (`Unknown name "additionalProperties" at '...response_schema'`)."""
    schema = {"type": "OBJECT", "properties": {"a": {"type": "STRING"}}, "required": ["a"]}
    options = {"generationConfig": {"responseMimeType": "application/json", "responseSchema": schema}}
    async with client_for(emulator) as client:
        job = await client.submit(f"google/{MODEL}", [{"custom_id": "s", "prompt": "p", "provider_options": options}])
        await client.wait(job, poll_interval=0.05, timeout=30)
        [row] = [item async for item in client.results(job)]
    body = view(emulator, job.batch_ids[0]).extra["create_body"]
    judge("chat", "structured output (responseSchema)", "BatchGenerateContentRequest", body)
    assert row.status == "succeeded" and json.loads(row.text or "{}").keys() == {"a"}
    loose = {**GOOD_REQUEST, "generationConfig": {"responseMimeType": "application/json", "responseSchema": {
        "type": "OBJECT", "properties": {"a": {"type": "STRING"}}, "additionalProperties": False}}}
    answer = create(emulator, inline_batch(loose))
    assert answer.status_code == 400 and 'Unknown name "additionalProperties"' in answer.json()["error"]["message"]


def test_emulator_refuses_bad_embed_body_and_upload_start(emulator: Emulator) -> None:
    answer = create(emulator, inline_batch({"content": {"parts": [{"text": "x"}]}, "dimensions": 4}),
                    "asyncBatchEmbedContent")
    assert answer.status_code == 400 and 'Unknown name "dimensions"' in answer.json()["error"]["message"]
    judge("http", "strict embed create refusal", "HttpErrorBody", answer.json())
    start = httpx.post(f"{base(emulator)}/upload/v1beta/files",
                       json={"file": {"display_name": "x", "purpose": "batch"}},
                       headers={**KEY, "X-Goog-Upload-Protocol": "resumable", "X-Goog-Upload-Command": "start"})
    assert start.status_code == 400 and 'Unknown name "purpose"' in start.json()["error"]["message"]
    judge("http", "strict upload start refusal", "HttpErrorBody", start.json())


def test_emulator_accepts_proto_field_names(emulator: Emulator) -> None:
    """Proto3 JSON parsers take the original snake_case field names too (google-genai sends `file_name` for
    embedding files), so those are not refused; free-form JSON (a response schema) is left as it is."""
    request = {"contents": [{"parts": [{"text": "x"}]}], "generation_config": {
        "max_output_tokens": 8, "response_mime_type": "application/json",
        "response_json_schema": {"type": "object", "properties": {"first_name": {"type": "string"}},
                                 "required": ["first_name"]}}}
    answer = create(emulator, {"display_name": "d", "input_config": {"requests": {"requests": [
        {"request": request, "metadata": {"key": "a"}}]}}})
    assert answer.status_code == 200, answer.text
    done = wait_done(emulator, answer.json()["name"])
    [entry] = inline_entries(done)
    assert json.loads(entry["response"]["candidates"][0]["content"]["parts"][0]["text"]).keys() == {"first_name"}


def test_emulator_refuses_bad_file_lines_per_item(emulator: Emulator, tmp_path: Path) -> None:
    path = tmp_path / "mixed.jsonl"
    good = {"key": "good", "request": GOOD_REQUEST}
    bad_part = {"key": "bad-part", "request": {"contents": [{"parts": [{"type": "text", "text": "x"}]}]}}
    bad_field = {"key": "bad-field", "request": {**GOOD_REQUEST, "max_tokens": 5}}
    no_request = {"key": "no-request"}
    path.write_text("".join(json.dumps(x) + "\n" for x in (good, bad_part, bad_field, no_request)))
    sdk = genai.Client(api_key="test-key", http_options={"base_url": base(emulator)})
    uploaded = sdk.files.upload(file=path, config={"mime_type": "jsonl"})
    answer = create(emulator, {"displayName": "mixed", "inputConfig": {"fileName": uploaded.name}})
    assert answer.status_code == 200
    done = wait_done(emulator, answer.json()["name"])
    assert done["metadata"]["state"] == "BATCH_STATE_SUCCEEDED"
    assert done["metadata"]["batchStats"] == {"requestCount": "4", "successfulRequestCount": "1",
                                              "failedRequestCount": "3"}
    media = httpx.get(f"{base(emulator)}/download/v1beta/{done['response']['responsesFile']}:download",
                      headers=KEY, params={"alt": "media"})
    lines = {line["key"]: line for line in map(json.loads, media.text.splitlines())}
    for line in lines.values():
        judge("chat", "per-line refusal result line", "GenerateContentResultLine", line)
    assert "response" in lines["good"]
    assert lines["bad-part"]["error"]["code"] == 3 and 'Unknown name "type"' in lines["bad-part"]["error"]["message"]
    assert lines["bad-field"]["error"]["code"] == 3 and '"max_tokens"' in lines["bad-field"]["error"]["message"]
    assert lines["no-request"]["error"]["code"] == 3


# --- the fixed bug: per-item google.rpc.Status codes decide resubmission, end to end ----------------------


@pytest.mark.parametrize("mode", ["inline", "file"])
async def test_item_codes_8_and_14_are_resubmitted_3_is_not(emulator: Emulator, tmp_path: Path, mode: str
                                                            ) -> None:
    tag = uuid.uuid4().hex[:8]
    requests = [
        {"custom_id": "ok", "prompt": f"fine {tag}"},
        {"custom_id": "quota", "prompt": f"[[transient]] RESOURCE_EXHAUSTED {tag}"},  # code 8
        {"custom_id": "unavailable", "prompt": f"[[transient]] {tag}"},  # code 14
        {"custom_id": "invalid", "prompt": f"boom [[error]] {tag}"},  # code 3
    ]
    async with client_for(emulator) as client:
        if mode == "file":
            client.adapter(P).inline_max_bytes = 0  # type: ignore[attr-defined]
        ledger = FsspecLedger(f"file://{tmp_path}/state", f"job-{tag}")
        job = await client.submit(f"google/{MODEL}", requests, ledger=ledger, identity=f"job-{tag}")
        before = len(emulator.batches(P))
        manifest = await collect_with_retries(client, job, f"file://{tmp_path}/out/", max_item_retries=2,
                                              keep_history=True, poll_interval=0.1, timeout=60)
    rounds = emulator.batches(P)[before:]
    assert len(rounds) == 1 and sorted(i.custom_id for i in rounds[0].items) == ["quota", "unavailable"]
    assert [r["request_count"] for r in manifest["rounds"]] == [4, 2]
    rows = {r["custom_id"]: r for r in pq.read_table(tmp_path / "out").to_pylist()}
    assert {k: (r["status"], r["attempt"]) for k, r in rows.items()} == {
        "ok": ("succeeded", 1), "quota": ("succeeded", 2), "unavailable": ("succeeded", 2),
        "invalid": ("errored", 1)}
    assert rows["invalid"]["error_code"] == "INVALID_ARGUMENT"
    assert json.loads(rows["invalid"]["response"])["error"]["code"] == 3
    history = {h["custom_id"]: h for h in pq.read_table(manifest["history_path"].removeprefix("file://")).to_pylist()}
    assert {k: h["error_code"] for k, h in history.items()} == {"quota": "RESOURCE_EXHAUSTED",
                                                                "unavailable": "UNAVAILABLE"}
    wire = {k: json.loads(h["response"])["error"] for k, h in history.items()}
    assert {k: e["code"] for k, e in wire.items()} == {"quota": 8, "unavailable": 14}
    assert not any("status" in e for e in wire.values())
    JUDGED.add((P, "chat", f"item code 8/14 resubmitted, 3 not ({mode})"))

