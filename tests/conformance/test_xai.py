"""xAI conformance: what our adapter sends and what the emulator answers, judged by xAI's own material.

Batch objects, pages, results, file lines, file objects and error bodies are judged against
``schemas/xai.json`` (generated from the ``xai-sdk`` batch protobufs, rendered as xAI's REST reference
says). The OpenAI-shaped bodies under ``chat_get_completion`` / ``responses`` are judged against OpenAI's
own types in ``schemas/openai.json`` (``CreateChatCompletionRequest``, ``CreateResponse``).

Allow-list (reasoned, nothing else is let through):

- ``ResponsesResult`` checks only the envelope of a ``/v1/responses`` answer (id, object, model, status,
  output): xAI publishes no REST type for it in the batch reference and adds usage counters
  (``cost_in_usd_ticks``, ``num_sources_used``) that OpenAI's ``Response`` type does not define.
- ``debug_output`` of a chat completion is an open object: the reference lists its fields but the emulator
  never sends it.
- A ``responses`` request's result is accepted under the ``responses`` key: the REST reference lists only
  ``chat_get_completion`` (and the proto only a completion response), the guide sends ``responses`` requests
  but does not show their results. The adapter reads a result body by its shape, whatever the key.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from airflow_batchwork.adapters.xai import XAIAdapter
from airflow_batchwork.core import BatchClient, Credentials, parse_model
from airflow_batchwork.testing import Emulator, conformance
from airflow_batchwork.testing.faults import FaultConfig
from airflow_batchwork.testing.providers import xai as xai_emulator
from airflow_batchwork.values.errors import RequestValidationError
from airflow_batchwork.values.requests import BatchRequest
from tests.conformance import drift

AUTH = {"Authorization": "Bearer test-key"}
SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}, "stars": {"type": "integer"}},
          "required": ["city", "stars"], "additionalProperties": False}
# Every documented request field the chat endpoint takes, with a multi-turn conversation that has an
# assistant turn and text parts.
CONVERSATION: list[dict[str, Any]] = [
    {"role": "system", "content": "answer in one word"},
    {"role": "user", "content": [{"type": "text", "text": "Capital of France?"}]},
    {"role": "assistant", "content": [{"type": "text", "text": "Paris"}]},
    {"role": "assistant", "content": "(plain string turn)"},
    {"role": "user", "content": "And of Japan?"},
]
COMMON: dict[str, Any] = {
    "system": "be terse", "max_output_tokens": 64, "temperature": 0.3, "top_p": 0.9,
    "output_schema": SCHEMA, "provider_options": {"user": "user-7"},
}
CHAT_ONLY: dict[str, Any] = {"stop_sequences": ["\n\n"], "seed": 7, "presence_penalty": 0.5,
                             "frequency_penalty": -0.5}
OPENAI_TYPE = {"chat": "CreateChatCompletionRequest", "responses": "CreateResponse"}
OP = {"chat": "chat_get_completion", "responses": "responses"}
MODEL = {"chat": "xai/grok-4", "responses": "xai.responses/grok-4"}


def xai(name: str, instance: Any) -> list[str]:
    return conformance.violations("xai", name, instance)


def openai(name: str, instance: Any) -> list[str]:
    return conformance.violations("openai", name, instance)


def requests_for(endpoint: str) -> list[BatchRequest]:
    fields = {**COMMON, **(CHAT_ONLY if endpoint == "chat" else {})}
    return [
        BatchRequest(custom_id="prompt-only", prompt="Capital of Italy?"),
        BatchRequest(custom_id="prompt-all", prompt="Capital of Italy?", **fields),
        BatchRequest(custom_id="turns-all", messages=CONVERSATION, **fields),
        BatchRequest(custom_id="turns-plain", messages=CONVERSATION),
    ]


def client_for(emu: Emulator) -> BatchClient:
    return BatchClient({"xai": Credentials(api_key="test-key", base_url=emu.base_url("xai"))})


@pytest.fixture
def http(emulator: Emulator) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=emulator.base_url("xai"), headers=AUTH, timeout=10) as client:
        yield client


def wait_done(http: httpx.Client, batch_id: str, timeout: float = 20.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        batch: dict[str, Any] = http.get(f"/batches/{batch_id}").json()
        if (batch["state"]["num_requests"] and not batch["state"]["num_pending"]) or batch["cancel_by_xai_message"]:
            return batch
        assert time.monotonic() < deadline, f"batch stuck: {batch['state']}"
        time.sleep(0.05)


# -- (a) what the adapter builds ------------------------------------------------------------------


@pytest.mark.parametrize("endpoint", ["chat", "responses"])
def test_every_inline_entry_conforms(endpoint: str) -> None:
    adapter, ref = XAIAdapter.offline(), parse_model(MODEL[endpoint])
    entries = []
    for request in requests_for(endpoint):
        assert adapter.check_request(ref, request) is None
        entry = json.loads(adapter.encode(ref, request))
        assert xai("BatchRequestEntry", entry) == []
        [(op, body)] = entry["batch_request"].items()
        assert op == OP[endpoint]
        assert openai(OPENAI_TYPE[endpoint], body) == [], body
        entries.append(adapter.encode(ref, request))
    # The add-requests page bodies, as sent.
    pages = [json.loads(page) for page in adapter._add_pages(entries)]
    assert pages and all(xai("AddBatchRequestsRequest", page) == [] for page in pages)


def test_responses_parts_are_input_and_output_text() -> None:
    adapter, ref = XAIAdapter.offline(), parse_model(MODEL["responses"])
    body = json.loads(adapter.encode(ref, BatchRequest(custom_id="t", messages=CONVERSATION)))
    messages = body["batch_request"]["responses"]["input"]
    assert messages[1]["content"] == [{"type": "input_text", "text": "Capital of France?"}]
    assert messages[2]["content"] == [{"type": "output_text", "text": "Paris", "annotations": []}]
    structured = json.loads(adapter.encode(ref, BatchRequest(custom_id="s", prompt="x", output_schema=SCHEMA)))
    assert structured["batch_request"]["responses"]["text"]["format"]["type"] == "json_schema"


@pytest.mark.parametrize("endpoint", ["chat", "responses"])
async def test_file_mode_lines_and_create_bodies_conform(endpoint: str) -> None:
    with Emulator(processing_seconds=0.2) as emu:
        async with client_for(emu) as client:
            adapter = client.adapter("xai")
            assert isinstance(adapter, XAIAdapter)
            adapter.input_mode = "file"
            rows = [r.model_dump(exclude_none=True, exclude={"output_schema"}) for r in requests_for(endpoint)]
            job = await client.submit(MODEL[endpoint], rows, defaults={"output_schema": SCHEMA})
            final = await client.wait(job, poll_interval=0.05, timeout=30)
        view = emu.store.get_batch("xai", job.batch_ids[0])
        assert view is not None
        stored = emu.store.get_file("xai", view.extra["input_file_id"])
        assert stored is not None
    assert final.state == "completed" and final.counts.succeeded == 4
    lines = [json.loads(line) for line in stored.data.decode().splitlines()]
    assert len(lines) == 4
    for line in lines:
        assert xai("BatchFileLine", line) == []
        assert openai(OPENAI_TYPE[endpoint], line["body"]) == []
    # Create bodies, inline and file form.
    assert xai("CreateBatchRequest", {"name": "batchwork:a=b", "input_file_id": stored.id}) == []
    assert xai("CreateBatchRequest", {"name": "batchwork:a=b"}) == []


@pytest.mark.parametrize(("endpoint", "field", "value"), [
    ("chat", "top_k", 5), ("responses", "top_k", 5),
    ("chat", "dimensions", 64), ("responses", "dimensions", 64),
    ("responses", "stop_sequences", ["."]), ("responses", "seed", 1),
    ("responses", "presence_penalty", 0.1), ("responses", "frequency_penalty", 0.1),
    ("responses", "max_output_tokens", 15),
])
async def test_fields_xai_cannot_take_are_refused_before_any_call(
    emulator: Emulator, endpoint: str, field: str, value: Any
) -> None:
    before = len(emulator.requests)
    async with client_for(emulator) as client:
        with pytest.raises(RequestValidationError, match=field):
            await client.submit(MODEL[endpoint], [{"custom_id": "a", "prompt": "x", field: value}])
    assert len(emulator.requests) == before


# -- (b) what the emulator answers ----------------------------------------------------------------


def test_inline_batch_answers_conform_in_every_state(http: httpx.Client) -> None:
    created = http.post("/batches", json={"name": "states"})
    assert created.status_code == 200 and xai("Batch", created.json()) == []  # no requests yet
    batch_id = created.json()["batch_id"]
    entries = [
        {"batch_request_id": "chat-ok", "batch_request": {"chat_get_completion": {
            "model": "grok-4", "messages": [{"role": "user", "content": "hi"}]}}},
        {"batch_request_id": "chat-bad", "batch_request": {"chat_get_completion": {
            "model": "grok-4", "messages": [{"role": "user", "content": "x [[error]]"}]}}},
        {"batch_request_id": "resp-ok", "batch_request": {"responses": {
            "model": "grok-4", "input": [{"role": "user", "content": [{"type": "input_text", "text": "hi"}]}]}}},
        {"batch_request": {"responses": {"model": "grok-4", "input": "generated id"}}},
    ]
    added = http.post(f"/batches/{batch_id}/requests", json={"batch_requests": entries})
    assert added.status_code == 200 and xai("AddBatchRequestsResponse", added.json()) == []
    running = http.get(f"/batches/{batch_id}").json()
    assert xai("Batch", running) == []
    pending = http.get(f"/batches/{batch_id}/requests").json()
    assert xai("ListBatchRequestMetadataResponse", pending) == []

    done = wait_done(http, batch_id)
    assert xai("Batch", done) == [] and done["state"]["num_error"] == 1
    results = http.get(f"/batches/{batch_id}/results", params={"limit": 2}).json()
    assert xai("ListBatchResultsResponse", results) == [] and results["pagination_token"]
    rest = http.get(f"/batches/{batch_id}/results",
                    params={"limit": 2, "pagination_token": results["pagination_token"]}).json()
    assert xai("ListBatchResultsResponse", rest) == [] and not rest["pagination_token"]
    forms = {next(iter(e["batch_result"])) for e in results["results"] + rest["results"]}
    assert forms == {"response", "error"}
    metadata = http.get(f"/batches/{batch_id}/requests").json()
    assert xai("ListBatchRequestMetadataResponse", metadata) == []
    assert {m["state"] for m in metadata["batch_request_metadata"]} == {"succeeded", "failed"}

    cancelled = http.post(f"/batches/{batch_id}:cancel")
    assert cancelled.status_code == 200 and xai("Batch", cancelled.json()) == []
    http.post("/batches", json={"name": "second, so the list has two pages"})
    listing = http.get("/batches", params={"limit": 1}).json()
    assert xai("ListBatchesResponse", listing) == [] and listing["pagination_token"]


def test_cancelled_and_expired_answers_conform() -> None:
    with Emulator(processing_seconds=30) as slow, httpx.Client(base_url=slow.base_url("xai"), headers=AUTH) as http:
        batch_id = http.post("/batches", json={"name": "to cancel"}).json()["batch_id"]
        body = {"model": "grok-4", "messages": [{"role": "user", "content": "x"}]}
        http.post(f"/batches/{batch_id}/requests",
                  json={"batch_requests": [{"batch_request_id": "a", "batch_request": {"chat_get_completion": body}}]})
        cancelling = http.post(f"/batches/{batch_id}:cancel").json()
        cancelled = wait_done(http, batch_id)
        metadata = http.get(f"/batches/{batch_id}/requests").json()
        results = http.get(f"/batches/{batch_id}/results").json()
    assert xai("Batch", cancelling) == [] and xai("Batch", cancelled) == [] and cancelled["cancel_time"]
    assert xai("ListBatchRequestMetadataResponse", metadata) == []
    assert [m["state"] for m in metadata["batch_request_metadata"]] == ["cancelled"]
    assert xai("ListBatchResultsResponse", results) == [] and results["results"] == []

    with Emulator(processing_seconds=0.2) as emu, httpx.Client(base_url=emu.base_url("xai"), headers=AUTH) as http:
        batch_id = http.post("/batches", json={"name": "expiring"}).json()["batch_id"]
        body = {"model": "grok-4", "messages": [{"role": "user", "content": "x [[expire]]"}]}
        http.post(f"/batches/{batch_id}/requests",
                  json={"batch_requests": [{"batch_request_id": "e", "batch_request": {"chat_get_completion": body}}]})
        deadline = time.monotonic() + 20
        while (batch := http.get(f"/batches/{batch_id}").json())["expire_time"] > _now_rfc3339():
            assert time.monotonic() < deadline
            time.sleep(0.05)
        metadata = http.get(f"/batches/{batch_id}/requests").json()
    assert xai("Batch", batch) == []
    assert xai("ListBatchRequestMetadataResponse", metadata) == []


def _now_rfc3339() -> str:
    from datetime import UTC, datetime
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def test_file_answers_conform(http: httpx.Client) -> None:
    line = {"custom_id": "f", "method": "POST", "url": "/v1/responses",
            "body": {"model": "grok-4", "input": "hello"}}
    uploaded = http.post("/files", files={"file": ("in.jsonl", json.dumps(line).encode() + b"\n")})
    assert uploaded.status_code == 200 and xai("File", uploaded.json()) == []
    batch = http.post("/batches", json={"name": "file", "input_file_id": uploaded.json()["id"]}).json()
    assert xai("Batch", batch) == []
    done = wait_done(http, batch["batch_id"])
    assert xai("Batch", done) == [] and done["state"]["num_success"] == 1
    assert xai("ListBatchResultsResponse", http.get(f"/batches/{batch['batch_id']}/results").json()) == []


def test_error_bodies_conform(emulator: Emulator, http: httpx.Client) -> None:
    base = emulator.base_url("xai")
    answers = {
        401: httpx.get(f"{base}/batches"),
        400: httpx.get(f"{base}/batches", headers={"Authorization": "Bearer invalid"}),
        404: http.get("/batches/batch_nope"),
        415: http.post("/batches", data={"name": "x"}),
        422: http.post("/batches", json={"name": 5}),
    }
    with Emulator(faults=FaultConfig(rate_limit_every=1)) as limited:
        answers[429] = httpx.get(f"{limited.base_url('xai')}/batches", headers=AUTH)
    for status, answer in answers.items():
        assert answer.status_code == status
        assert xai("ErrorBody", answer.json()) == [], (status, answer.text)


# -- (c) the schemas have teeth -------------------------------------------------------------------


GOOD_BATCH: dict[str, Any] = {
    "batch_id": "batch_1", "name": "n", "create_time": "2025-11-11", "expire_time": "2025-11-12T10:00:00Z",
    "create_api_key_id": "k", "cancel_time": None, "cancel_by_xai_message": None,
    "state": {"num_requests": 1, "num_pending": 0, "num_success": 1, "num_error": 0, "num_cancelled": 0},
}
GOOD_META = {"batch_request_id": "a", "endpoint": "xai_api.Chat/GetCompletion", "model": "grok-4",
             "state": "cancelled", "create_time": "2025-11-11", "finish_time": None}


def _with(base: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    copy = json.loads(json.dumps(base))
    *parents, last = path.split(".")
    target = copy
    for key in parents:
        target = target[key]
    if value is _DROP:
        del target[last]
    else:
        target[last] = value
    return copy


_DROP = object()


@pytest.mark.parametrize(("name", "bad"), [
    ("Batch", _with(GOOD_BATCH, "state.num_pending", "0")),  # canonical proto3 JSON int64; REST sends integers
    ("Batch", _with(GOOD_BATCH, "state.num_error", _DROP)),
    ("Batch", _with(GOOD_BATCH, "status", "completed")),  # xAI has no status field
    ("Batch", _with(GOOD_BATCH, "create_time", "yesterday")),
    ("Batch", _with(GOOD_BATCH, "batch_id", _DROP)),
    ("BatchRequestMetadata", _with(GOOD_META, "state", "STATE_CANCELLED")),  # proto name, not its REST name
    ("BatchRequestMetadata", _with(GOOD_META, "state", "canceled")),
    ("BatchResult", {"batch_request_id": "a", "batch_result": {"error": {"code": 3, "message": "m"}}}),  # gRPC Status
    ("BatchResult", {"batch_request_id": "a", "batch_result": {"error": "m", "response": {}}}),
    ("BatchResult", {"batch_request_id": "a", "response": {"completion_response": {}}}),  # proto names
    ("BatchRequestEntry", {"batch_request_id": "a", "batch_request": {"completion_request": {"model": "g"}}}),
    ("BatchRequestEntry", {"batch_request_id": "a", "batch_request": {
        "chat_get_completion": {"model": "g"}, "responses": {"model": "g"}}}),
    ("AddBatchRequestsRequest", {"batch_id": "b", "batch_requests": []}),
    ("CreateBatchRequest", {"name": "n", "metadata": {"a": "b"}}),  # no metadata map on xAI
    ("BatchFileLine", {"custom_id": "a", "method": "POST", "url": "/v1/embeddings", "body": {"model": "g"}}),
    ("BatchFileLine", {"custom_id": "a", "method": "POST", "url": "/v1/chat/completions",
                       "body": {"model": "g"}, "batch_request_id": "a"}),
    ("File", {"id": "f", "object": "file", "bytes": 1, "created_at": 1, "filename": "x", "purpose": "batch",
              "status": "processed"}),
    ("ErrorBody", {"error": {"message": "m", "type": "invalid_request_error", "code": None}}),
])
def test_known_bad_xai_objects_are_rejected(name: str, bad: Any) -> None:
    assert xai(name, bad)


def test_good_examples_pass_so_rejections_mean_something() -> None:
    assert xai("Batch", GOOD_BATCH) == []
    assert xai("BatchRequestMetadata", GOOD_META) == []
    assert xai("BatchResult", {"batch_request_id": "a", "batch_result": {"error": "m"}}) == []


@pytest.mark.parametrize("bad", [
    {"model": "g", "input": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]},  # chat part
    {"model": "g", "input": [{"role": "assistant", "content": [{"type": "input_text", "text": "hi"}]}]},
    {"model": "g", "input": "hi", "max_output_tokens": 9},
    {"model": "g", "input": "hi", "seed": 1},
])
def test_known_bad_responses_bodies_are_rejected(bad: dict[str, Any]) -> None:
    assert openai("CreateResponse", bad)


def test_rest_state_names_are_the_proto_enum() -> None:
    """The REST names in the schema are the proto's `BatchRequestMetadata.State` values, renamed."""
    batch_pb2 = pytest.importorskip("xai_sdk.proto.v6.batch_pb2")
    proto = [v.name for v in batch_pb2.BatchRequestMetadata.DESCRIPTOR.enum_types_by_name["State"].values]
    assert proto == ["STATE_UNKNOWN", "STATE_PENDING", "STATE_SUCCEEDED", "STATE_CANCELLED", "STATE_FAILED"]
    rest = conformance.document("xai")["$defs"]["BatchRequestMetadata"]["properties"]["state"]["enum"]
    assert rest == [name.removeprefix("STATE_").lower() for name in proto]


def test_generated_document_is_current() -> None:
    pytest.importorskip("xai_sdk")
    from tests.conformance.generators import xai as generator

    drift.assert_current("xai", generator.build(), conformance.document("xai"))


# -- strict emulator: refusals over HTTP ----------------------------------------------------------


def _add(http: httpx.Client, op: str, body: dict[str, Any]) -> httpx.Response:
    batch_id = http.post("/batches", json={"name": "strict"}).json()["batch_id"]
    return http.post(f"/batches/{batch_id}/requests",
                     json={"batch_requests": [{"batch_request_id": "a", "batch_request": {op: body}}]})


@pytest.mark.parametrize(("op", "body", "where"), [
    ("responses", {"model": "grok-4", "input": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]},
     "input"),
    ("responses", {"model": "grok-4", "input": "hi", "stop": ["x"]}, "stop"),
    ("chat_get_completion", {"model": "grok-4", "messages": [{"role": "robot", "content": "hi"}]}, "messages"),
    ("chat_get_completion", {"model": "grok-4", "messages": [{"role": "user", "content": "hi"}],
                             "temperature": "hot"}, "temperature"),
    ("chat_get_completion", {"model": "grok-4", "messages": [{"role": "user", "content": "hi"}],
                             "top_k": 3}, "top_k"),
])
def test_emulator_refuses_bad_inline_bodies(http: httpx.Client, op: str, body: dict[str, Any], where: str) -> None:
    answer = _add(http, op, body)
    assert answer.status_code == 422, answer.text
    assert xai("ErrorBody", answer.json()) == []
    assert answer.json()["code"] == "Client specified an invalid argument"
    assert f"batch_requests[0].batch_request.{op}" in answer.json()["error"] and where in answer.json()["error"]


def test_emulator_refuses_bad_envelopes(http: httpx.Client) -> None:
    unknown = http.post("/batches", json={"name": "x", "metadata": {"a": "b"}})
    assert unknown.status_code == 422 and "metadata" in unknown.json()["error"]
    batch_id = http.post("/batches", json={"name": "x"}).json()["batch_id"]
    body = {"model": "grok-4", "messages": [{"role": "user", "content": "hi"}]}
    extra = http.post(f"/batches/{batch_id}/requests", json={"batch_requests": [
        {"batch_request_id": "a", "batch_request": {"chat_get_completion": body}, "priority": 1}]})
    assert extra.status_code == 422 and "priority" in extra.json()["error"]
    assert xai("ErrorBody", extra.json()) == []
    # Nothing was added by the refused call.
    assert http.get(f"/batches/{batch_id}").json()["state"]["num_requests"] == 0


def test_emulator_cancels_a_file_batch_with_a_bad_line(http: httpx.Client) -> None:
    good = {"custom_id": "a", "method": "POST", "url": "/v1/chat/completions",
            "body": {"model": "grok-4", "messages": [{"role": "user", "content": "hi"}]}}
    bad = {"custom_id": "b", "method": "POST", "url": "/v1/responses",
           "body": {"model": "grok-4", "input": [{"role": "user", "content": [{"type": "text", "text": "x"}]}]}}
    data = (json.dumps(good) + "\n" + json.dumps(bad) + "\n").encode()
    file_id = http.post("/files", files={"file": ("in.jsonl", data)}).json()["id"]
    batch = wait_done(http, http.post("/batches", json={"name": "bad", "input_file_id": file_id}).json()["batch_id"])
    assert xai("Batch", batch) == []
    message = batch["cancel_by_xai_message"]
    assert message and "line 2" in message and "input" in message and batch["cancel_time"]


def test_emulator_module_uses_both_documents() -> None:
    assert xai_emulator._OPENAI_BODY_TYPES == {"chat_get_completion": "CreateChatCompletionRequest",
                                               "responses": "CreateResponse"}


@pytest.mark.parametrize(("state", "status"), [
    ("cancelled", "canceled"), ("STATE_CANCELLED", "canceled"),
    ("pending", "canceled"), ("STATE_PENDING", "canceled"),
    ("succeeded", "missing"), ("STATE_FAILED", "missing"),
])
def test_adapter_reads_rest_and_proto_state_names(state: str, status: str) -> None:
    from airflow_batchwork.adapters.xai import batch_status, unfinished_item

    cancelled = batch_status({**GOOD_BATCH, "cancel_time": "2025-11-11",
                              "state": {**GOOD_BATCH["state"], "num_success": 0, "num_cancelled": 1}},
                             str, now=0.0)
    item = unfinished_item({**GOOD_META, "state": state}, cancelled)
    assert item is not None and item.status == status


@pytest.mark.parametrize(("result", "status"), [
    ({"error": "Model grok-x is not supported for batch processing"}, "errored"),
    ({"response": "unknown"}, "errored"),  # the REST reference's other `response` form
])
def test_adapter_reads_every_result_form_the_schema_allows(result: dict[str, Any], status: str) -> None:
    from airflow_batchwork.adapters.xai import parse_result

    entry = {"batch_request_id": "a", "batch_result": result}
    assert xai("BatchResult", entry) == []
    item = parse_result(entry, "batch_1")
    assert item is not None and item.status == status and item.error_message
