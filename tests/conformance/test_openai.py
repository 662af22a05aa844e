"""OpenAI, judged by OpenAI's own published material (``schemas/openai.json``, generated from the
``openai/openai-openapi`` spec; cross-checked against the ``openai`` SDK's types).

(a) every request body and JSONL line the adapter builds, per endpoint, with every documented field;
(b) every answer the emulator gives, fetched over real HTTP; (c) known-bad bodies are refused by the
schema; (d) the strict emulator refuses them over HTTP in OpenAI's shapes; (e) the spec types agree with
the SDK's.
"""

from __future__ import annotations

import base64
import copy
import json
import struct
import time
from collections.abc import Iterator, Mapping
from functools import cache
from typing import Any

import httpx
import pytest
from jsonschema import Draft202012Validator

from airflow_batchwork.adapters.openai import OpenAIAdapter
from airflow_batchwork.core import BatchClient, Credentials, parse_model
from airflow_batchwork.testing import Emulator
from airflow_batchwork.testing.conformance import document, violations
from airflow_batchwork.testing.faults import FaultConfig
from airflow_batchwork.testing.providers.openai import REQUEST_TYPES
from airflow_batchwork.values.errors import RequestValidationError
from airflow_batchwork.values.requests import BatchRequest

P = "openai"
RESPONSE_TYPES = {
    "/v1/chat/completions": "CreateChatCompletionResponse",
    "/v1/responses": "Response",
    "/v1/completions": "CreateCompletionResponse",
    "/v1/embeddings": "CreateEmbeddingResponse",
}
TERMINAL = {"completed", "failed", "expired", "cancelled"}

# -- allow-list -----------------------------------------------------------------------------------
# Fields the spec types as non-nullable but the API returns as `null` when unset. The spec's own
# example of each object shows them `null` (Batch: errors, output/error_file_id, every *_at), and the
# SDK types them `Optional[...] = None` (Batch; FileObject.expires_at/status_details). Only a `null`
# is let through: a value of the wrong type still fails.
# (The allow-listed fields become `<their type> | null`; nothing else is relaxed.)
NULL_WHEN_UNSET: dict[str, frozenset[str]] = {
    "Batch": frozenset({
        "errors", "output_file_id", "error_file_id", "in_progress_at", "finalizing_at", "completed_at",
        "failed_at", "expired_at", "cancelling_at", "cancelled_at",
    }),
    "OpenAIFile": frozenset({"expires_at", "status_details"}),
    # An empty page has no first or last id; the spec requires the keys (strings) without saying what
    # an empty page carries; the API answers null.
    "ListFilesResponse": frozenset({"first_id", "last_id"}),
}


@cache
def _allowing_validator(name: str) -> Draft202012Validator:
    defs = copy.deepcopy(document(P)["$defs"])
    for type_name, fields in NULL_WHEN_UNSET.items():
        props = defs[type_name]["properties"]
        for field in fields:
            props[field] = {"anyOf": [props[field], {"type": "null"}]}
    return Draft202012Validator({"$defs": defs, "$ref": f"#/$defs/{name}"})


def allowed_violations(name: str, obj: Any) -> list[str]:
    """Like ``conformance.violations``, with the allow-listed fields nullable."""
    return [f"{'.'.join(map(str, e.absolute_path)) or '(root)'}: {e.message}"
            for e in _allowing_validator(name).iter_errors(obj)]


def decoded_embeddings(body: Any) -> Any:
    """A base64 embedding as the list of floats it encodes. With `encoding_format: "base64"` (a value
    `CreateEmbeddingRequest` documents) the API returns the vector as a base64 string; the spec's
    `Embedding.embedding` types only the float list (the SDK decodes the string back to it)."""
    if not isinstance(body, Mapping) or not isinstance(body.get("data"), list):
        return body
    data = []
    for item in body["data"]:
        if isinstance(item, Mapping) and isinstance(item.get("embedding"), str):
            raw = base64.b64decode(item["embedding"])
            item = {**item, "embedding": list(struct.unpack(f"<{len(raw) // 4}f", raw))}
        data.append(item)
    return {**body, "data": data}


JUDGED: list[tuple[str, str]] = []


def judge(name: str, obj: Any, where: str = "") -> None:
    """Assert ``obj`` is a valid ``name`` of OpenAI's spec (with the allow-list above)."""
    JUDGED.append((name, where))
    if name == "CreateEmbeddingResponse":
        obj = decoded_embeddings(obj)
    problems = allowed_violations(name, obj)
    assert not problems, f"{where or name}: {problems}\n{json.dumps(obj)[:2000]}"


# -- (a) what the adapter sends --------------------------------------------------------------------

SCHEMA = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
    "required": ["name", "age"],
    "additionalProperties": False,
}
LOOSE_SCHEMA = {"type": "object", "properties": {"name": {"type": "string"}}}  # not strict-compatible
CONVERSATION = [
    {"role": "system", "content": "be terse"},
    {"role": "user", "content": "hi"},
    {"role": "assistant", "content": [{"type": "text", "text": "hello"}, {"type": "text", "text": " there"}]},
    {"role": "user", "content": [{"type": "text", "text": "what is 2+2?"}]},
    {"role": "assistant", "content": "4"},
    {"role": "user", "content": "and 3+3?"},
]
SAMPLING = {"max_output_tokens": 64, "temperature": 0.5, "top_p": 0.9}

# Per endpoint: requests that together use every field the endpoint takes.
REQUESTS: dict[str, list[dict[str, Any]]] = {
    "chat": [
        {"prompt": "hi"},
        {"prompt": "hi", "system": "be terse", **SAMPLING, "stop_sequences": ["\n", "END"], "seed": 7,
         "presence_penalty": 0.5, "frequency_penalty": -0.5},
        {"messages": CONVERSATION, "system": "and kind"},
        {"prompt": "a person", "output_schema": SCHEMA},
        {"prompt": "a person", "output_schema": LOOSE_SCHEMA},
        {"prompt": "hi", "provider_options": {"service_tier": "flex", "reasoning_effort": "low", "n": 1,
                                              "logprobs": True, "top_logprobs": 2, "user": "u1"}},
    ],
    "responses": [
        {"prompt": "hi"},
        {"prompt": "hi", "system": "be terse", **SAMPLING},
        {"messages": CONVERSATION},
        {"messages": CONVERSATION, "system": "and kind", **SAMPLING},
        {"prompt": "a person", "output_schema": SCHEMA},
        {"prompt": "a person", "output_schema": LOOSE_SCHEMA},
        {"prompt": "hi", "provider_options": {"reasoning": {"effort": "low"}, "store": False,
                                              "service_tier": "flex", "metadata": {"k": "v"}}},
    ],
    "completion": [
        {"prompt": "hi"},
        {"prompt": "hi", **SAMPLING, "stop_sequences": ["."], "seed": 3, "presence_penalty": 1.0,
         "frequency_penalty": 1.0},
        {"prompt": "hi", "provider_options": {"echo": True, "logprobs": 2, "suffix": "!", "best_of": 1}},
    ],
    "embedding": [
        {"value": "hello"},
        {"value": "hello", "dimensions": 256},
        {"value": "hello", "provider_options": {"encoding_format": "base64", "user": "u1"}},
    ],
}
ENDPOINT_PATHS = {"chat": "/v1/chat/completions", "responses": "/v1/responses", "completion": "/v1/completions",
                  "embedding": "/v1/embeddings"}
# Fields each endpoint cannot take: refused up front, naming the field.
REFUSED: dict[str, list[dict[str, Any]]] = {
    "chat": [{"prompt": "x", "top_k": 3}, {"prompt": "x", "stop_sequences": ["a", "b", "c", "d", "e"]},
             {"prompt": "x", "stop_sequences": []}],
    "responses": [{"prompt": "x", "top_k": 3}, {"prompt": "x", "stop_sequences": ["."]}, {"prompt": "x", "seed": 1},
                  {"prompt": "x", "presence_penalty": 0.1}, {"prompt": "x", "frequency_penalty": 0.1},
                  {"prompt": "x", "max_output_tokens": 15}],
    "completion": [{"messages": [{"role": "user", "content": "x"}]}, {"prompt": "x", "system": "s"},
                   {"prompt": "x", "top_k": 3}, {"prompt": "x", "output_schema": SCHEMA}],
    "embedding": [{"value": "x", "system": "s"}, {"value": "x", "max_output_tokens": 5},
                  {"value": "x", "temperature": 0.1}, {"value": "x", "top_p": 0.1}, {"value": "x", "top_k": 1},
                  {"value": "x", "stop_sequences": ["."]}, {"value": "x", "seed": 1},
                  {"value": "x", "output_schema": SCHEMA}],
}
MODELS = {"chat": "openai/gpt-4o-mini", "responses": "openai.responses/gpt-5", "completion":
          "openai.completion/gpt-3.5-turbo-instruct", "embedding": "openai.embedding/text-embedding-3-small"}


def encoded(endpoint: str, fields: Mapping[str, Any], index: int = 0) -> dict[str, Any]:
    ref = parse_model(MODELS[endpoint])
    request = BatchRequest(custom_id=f"r-{index}", **fields)
    adapter = OpenAIAdapter.offline()
    assert adapter.check_request(ref, request) is None
    return dict(json.loads(adapter.encode(ref, request)))


@pytest.mark.parametrize(("endpoint", "index"), [(e, i) for e, rs in REQUESTS.items() for i in range(len(rs))])
def test_every_request_line_matches_the_spec(endpoint: str, index: int) -> None:
    line = encoded(endpoint, REQUESTS[endpoint][index], index)
    judge("BatchRequestInput", line, f"{endpoint} line")
    assert line["url"] == ENDPOINT_PATHS[endpoint]
    judge(REQUEST_TYPES[line["url"]], line["body"], f"{endpoint} body {index}")


def test_responses_parts_are_typed_by_role() -> None:
    body = encoded("responses", {"messages": CONVERSATION})["body"]
    assert body["instructions"] == "be terse"
    kinds = [(item["role"], [p["type"] for p in item["content"]] if isinstance(item["content"], list) else "str")
             for item in body["input"]]
    assert kinds == [("user", "str"), ("assistant", ["output_text", "output_text"]), ("user", ["input_text"]),
                     ("assistant", "str"), ("user", "str")]


def test_structured_output_shapes() -> None:
    chat = encoded("chat", {"prompt": "p", "output_schema": SCHEMA})["body"]["response_format"]
    assert chat["type"] == "json_schema" and chat["json_schema"]["strict"] is True
    judge("ResponseFormatJsonSchema", chat)
    text = encoded("responses", {"prompt": "p", "output_schema": SCHEMA})["body"]["text"]["format"]
    assert text["type"] == "json_schema" and text["schema"] == SCHEMA
    judge("TextResponseFormatJsonSchema", text)


@pytest.mark.parametrize(("endpoint", "index"), [(e, i) for e, rs in REFUSED.items() for i in range(len(rs))])
def test_fields_an_endpoint_cannot_take_are_refused_up_front(endpoint: str, index: int) -> None:
    fields = REFUSED[endpoint][index]
    with pytest.raises(RequestValidationError) as caught:
        BatchClient().prepare(MODELS[endpoint], [fields])
    named = next(k for k in fields if k not in ("prompt", "value")) if len(fields) > 1 else "messages"
    assert named in str(caught.value)


# -- (c) the schema is not toothless ---------------------------------------------------------------

GOOD_RESPONSES = {"model": "gpt-5", "input": [{"role": "user", "content": [{"type": "input_text", "text": "hi"}]}]}
KNOWN_BAD: list[tuple[str, Any]] = [
    ("CreateResponse", {"model": "gpt-5", "input": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]}),
    ("CreateResponse", {"model": "gpt-5", "input": [
        {"role": "assistant", "content": [{"type": "input_text", "text": "hi"}]}]}),
    ("CreateResponse", {"model": "gpt-5", "input": [
        {"role": "user", "content": [{"type": "output_text", "text": "hi", "annotations": []}]}]}),
    ("CreateResponse", {**GOOD_RESPONSES, "max_output_tokens": 8}),
    ("CreateResponse", {**GOOD_RESPONSES, "stop": ["x"]}),
    ("CreateChatCompletionRequest", {"model": "m", "messages": [{"role": "user", "content": "x"}], "top_k": 3}),
    ("CreateChatCompletionRequest", {"model": "m", "messages": [{"role": "robot", "content": "x"}]}),
    ("CreateChatCompletionRequest", {"model": "m", "messages": [{"role": "user", "content": "x"}],
                                     "temperature": "hot"}),
    ("CreateChatCompletionRequest", {"messages": [{"role": "user", "content": "x"}]}),
    ("CreateChatCompletionRequest", {"model": "m", "messages": [{"role": "user", "content": [
        {"type": "input_text", "text": "x"}]}]}),
    ("CreateChatCompletionRequest", {"model": "m", "messages": [{"role": "user", "content": "x"}],
                                     "response_format": {"type": "json_schema", "schema": {}}}),
    ("CreateCompletionRequest", {"model": "m", "prompt": "x", "messages": []}),
    ("CreateEmbeddingRequest", {"model": "m", "input": "x", "dimensions": 0}),
    ("BatchRequestInput", {"custom_id": "a", "method": "GET", "url": "/v1/chat/completions", "body": {}}),
    ("BatchRequestInput", {"custom_id": "a", "method": "POST", "url": "/v1/chat/completions"}),
    ("BatchRequestOutput", {"id": "x", "response": None, "error": None}),
    ("Batch", {"id": "b", "object": "batch", "endpoint": "/v1/responses", "input_file_id": "f",
               "completion_window": "24h", "status": "canceling", "created_at": 1}),
    ("Batch", {"id": "b", "object": "batch", "endpoint": "/v1/responses", "input_file_id": "f",
               "completion_window": "24h", "status": "completed", "created_at": 1, "processed": True}),
    ("OpenAIFile", {"id": "f", "object": "file", "bytes": 1, "created_at": 1, "filename": "x",
                    "purpose": "batch-generated", "status": "processed"}),
    ("ErrorResponse", {"error": {"message": "m", "code": None, "param": None}}),
]


@pytest.mark.parametrize(("name", "body"), KNOWN_BAD, ids=[f"{n}-{i}" for i, (n, _) in enumerate(KNOWN_BAD)])
def test_known_bad_bodies_are_refused(name: str, body: Any) -> None:
    assert violations(P, name, body), f"{name} accepted a known-bad body"


def test_allow_list_lets_only_null_through() -> None:
    batch = {"id": "b", "object": "batch", "endpoint": "/v1/responses", "input_file_id": "f",
             "completion_window": "24h", "status": "completed", "created_at": 1}
    judge("Batch", {**batch, "completed_at": None})
    assert violations(P, "Batch", {**batch, "completed_at": None})  # the spec alone refuses the null
    assert allowed_violations("Batch", {**batch, "completed_at": "yesterday"})
    assert allowed_violations("Batch", {**batch, "model": None})


# -- (b) and (d): the emulator over HTTP --------------------------------------------------------------


@pytest.fixture(scope="module")
def emu() -> Iterator[Emulator]:
    with Emulator(processing_seconds=0.3) as emulator:
        yield emulator


@pytest.fixture
def http(emu: Emulator) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=emu.base_url(P), headers={"Authorization": "Bearer test"}, timeout=30) as client:
        yield client


def upload(http: httpx.Client, lines: list[Mapping[str, Any]] | bytes) -> dict[str, Any]:
    data = lines if isinstance(lines, bytes) else "\n".join(json.dumps(line) for line in lines).encode()
    response = http.post("/files", files={"file": ("in.jsonl", data, "application/jsonl")}, data={"purpose": "batch"})
    assert response.status_code == 200, response.text
    judge("OpenAIFile", response.json(), "POST /files")
    return dict(response.json())


def submit(http: httpx.Client, endpoint: str, lines: list[Mapping[str, Any]] | bytes, **extra: Any) -> dict[str, Any]:
    file = upload(http, lines)
    response = http.post("/batches", json={"input_file_id": file["id"], "endpoint": endpoint,
                                           "completion_window": "24h", **extra})
    assert response.status_code == 200, response.text
    judge("Batch", response.json(), "POST /batches")
    return dict(response.json())


def wait(http: httpx.Client, batch_id: str, timeout: float = 60.0) -> tuple[dict[str, Any], list[str]]:
    """Poll until terminal, judging every Batch object seen; returns the last and the states seen."""
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while True:
        batch = http.get(f"/batches/{batch_id}").json()
        judge("Batch", batch, f"GET /batches ({batch.get('status')})")
        if not seen or seen[-1] != batch["status"]:
            seen.append(batch["status"])
        if batch["status"] in TERMINAL:
            return batch, seen
        assert time.monotonic() < deadline, f"batch stuck in {batch['status']}"
        time.sleep(0.05)


def result_lines(http: httpx.Client, batch: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    lines: dict[str, dict[str, Any]] = {}
    for key in ("output_file_id", "error_file_id"):
        if batch.get(key):
            judge("OpenAIFile", http.get(f"/files/{batch[key]}").json(), "GET /files/{id} (result)")
            for raw in http.get(f"/files/{batch[key]}/content").text.splitlines():
                line = json.loads(raw)
                judge("BatchRequestOutput", line, f"{key} line")
                lines[line["custom_id"]] = line
    return lines


def judge_result(endpoint: str, line: Mapping[str, Any]) -> None:
    response = line["response"]
    if response is None:
        assert line["error"]["code"] in ("batch_expired", "batch_cancelled")
    elif response["status_code"] == 200:
        judge(RESPONSE_TYPES[endpoint], response["body"], f"{endpoint} result body")
    else:
        judge("ErrorResponse", response["body"], f"{endpoint} result error")


@pytest.mark.parametrize("endpoint", list(REQUESTS))
def test_every_answer_of_a_batch_matches_the_spec(http: httpx.Client, endpoint: str) -> None:
    lines = [encoded(endpoint, fields, i) for i, fields in enumerate(REQUESTS[endpoint])]
    marked = {"chat": {"prompt": "boom [[error]]"}, "responses": {"prompt": "boom [[error]]"},
              "completion": {"prompt": "boom [[transient]]"}, "embedding": {"value": "boom [[error]]"}}[endpoint]
    lines.append(encoded(endpoint, marked, 99))
    created = submit(http, ENDPOINT_PATHS[endpoint], lines, metadata={"job": "conformance"})
    assert created["status"] == "validating"
    batch, seen = wait(http, created["id"])
    assert seen[-1] == "completed"
    results = result_lines(http, batch)
    assert len(results) == len(lines)
    for line in results.values():
        judge_result(ENDPOINT_PATHS[endpoint], line)
    assert results["r-99"]["response"]["status_code"] in (400, 500)
    assert all(results[f"r-{i}"]["response"]["status_code"] == 200 for i in range(len(REQUESTS[endpoint])))


@pytest.mark.parametrize("endpoint", list(REQUESTS))
async def test_what_a_submission_sends_and_what_users_get(emu: Emulator, endpoint: str) -> None:
    """Through the public client: the uploaded file's lines and the create body are judged, and every
    request (each documented field in use) comes back as a succeeded result."""
    sent: list[Mapping[str, Any]] = []
    async with BatchClient({P: Credentials(api_key="test", base_url=emu.base_url(P))}) as client:
        http = client.adapter(P).http
        forward = http.request

        async def recording(method: str, path: str, **kwargs: Any) -> Any:
            if "json" in kwargs:
                sent.append(kwargs["json"])
            return await forward(method, path, **kwargs)

        http.request = recording  # type: ignore[method-assign]
        # Per-request schemas need a state_path; here structured output is a second, job-level job.
        plain = [{"custom_id": f"r-{i}", **fields} for i, fields in enumerate(REQUESTS[endpoint])
                 if "output_schema" not in fields]
        jobs: list[tuple[list[dict[str, Any]], Any]] = [(plain, None)]
        if endpoint in ("chat", "responses"):
            jobs.append(([{"custom_id": "s-1", "prompt": "a person"}], SCHEMA))
        for requests, schema in jobs:
            job = await client.submit(MODELS[endpoint], requests, metadata={"job": "conformance"},
                                      output_schema=schema)
            status = await client.wait(job, poll_interval=0.1, timeout=120)
            results = {item.custom_id: item async for item in client.results(job)}
            assert status.counts.succeeded == len(requests), status
            assert len(results) == len(requests) and all(i.status == "succeeded" for i in results.values())
            if endpoint == "embedding":
                vectors = [item.embedding for item in results.values()]
                assert all(v and all(isinstance(x, float) for x in v) for v in vectors)
                assert len(results["r-1"].embedding or ()) == 256
                # r-2 asked for base64: decoded, it is r-0's vector (same text) to float32 precision.
                assert results["r-2"].embedding == pytest.approx(results["r-0"].embedding, rel=1e-6, abs=1e-7)
            else:
                assert all(item.text for item in results.values())
            if schema is not None:
                assert set(json.loads(results["s-1"].text or "")) == {"name", "age"}
    assert len(sent) == len(jobs)
    for create in sent:
        judge("CreateBatchRequest", create, "POST /batches (adapter)")
        (uploaded,) = [f for f in emu.files(P) if f.id == create["input_file_id"]]
        for raw in uploaded.data.decode().splitlines():
            line = json.loads(raw)
            judge("BatchRequestInput", line, "uploaded line")
            judge(REQUEST_TYPES[line["url"]], line["body"], "uploaded body")


def test_expired_failed_and_cancelled_batches(emu: Emulator, http: httpx.Client) -> None:
    expired, _ = wait(http, submit(http, "/v1/chat/completions", [
        encoded("chat", {"prompt": "ok"}, 0), encoded("chat", {"prompt": "late [[expire]]"}, 1)])["id"])
    assert expired["status"] == "expired"
    for line in result_lines(http, expired).values():
        judge_result("/v1/chat/completions", line)
    failed, _ = wait(http, submit(http, "/v1/chat/completions", b'{"custom_id": "a"}\nnot json\n')["id"])
    assert failed["status"] == "failed" and failed["errors"]["data"]
    emu.processing_seconds = 30.0
    try:
        batch = submit(http, "/v1/embeddings", [encoded("embedding", {"value": "x"}, 0)])
        cancelling = http.post(f"/batches/{batch['id']}/cancel").json()
        judge("Batch", cancelling, "POST /batches/{id}/cancel")
        assert cancelling["status"] in ("cancelling", "cancelled")
    finally:
        emu.processing_seconds = 0.3
    cancelled, _ = wait(http, batch["id"])
    assert cancelled["status"] == "cancelled"
    for line in result_lines(http, cancelled).values():
        judge_result("/v1/embeddings", line)


def test_list_pages_files_and_deletes(http: httpx.Client) -> None:
    for _ in range(3):
        submit(http, "/v1/embeddings", [encoded("embedding", {"value": "x"}, 0)])
    page = http.get("/batches", params={"limit": 2}).json()
    judge("ListBatchesResponse", page, "GET /batches")
    assert page["has_more"] is True and len(page["data"]) == 2
    judge("ListBatchesResponse", http.get("/batches", params={"limit": 2, "after": page["last_id"]}).json())
    files = http.get("/files").json()
    judge("ListFilesResponse", files, "GET /files")
    judge("ListFilesResponse", http.get("/files", params={"purpose": "vision"}).json(), "GET /files (empty)")
    deleted = http.delete(f"/files/{files['data'][0]['id']}").json()
    judge("DeleteFileResponse", deleted, "DELETE /files/{id}")


def test_http_errors_are_openai_error_bodies(emu: Emulator, http: httpx.Client) -> None:
    answers = {
        400: http.post("/batches", json={"input_file_id": "file-x", "endpoint": "/v1/chat/completions"}),
        401: httpx.get(emu.base_url(P) + "/batches"),
        404: http.get("/batches/batch_nope"),
    }
    emu.faults = FaultConfig(rate_limit_every=1, providers=P)
    try:
        answers[429] = http.get("/batches")
        emu.faults = FaultConfig(server_error_every=1, providers=P)
        answers[500] = http.get("/batches")
    finally:
        emu.faults = FaultConfig()
    for status, response in answers.items():
        assert response.status_code == status
        judge("ErrorResponse", response.json(), f"HTTP {status}")


# -- (d) the strict emulator refuses what OpenAI refuses -------------------------------------------


def test_emulator_refuses_bad_request_lines_per_item(http: httpx.Client) -> None:
    text_part = {"model": "gpt-5", "input": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]}
    assistant_input = {"model": "gpt-5", "input": [
        {"role": "user", "content": "hi"}, {"role": "assistant", "content": [{"type": "input_text", "text": "yo"}]}]}
    lines = [
        {"custom_id": "text", "method": "POST", "url": "/v1/responses", "body": text_part},
        {"custom_id": "assistant", "method": "POST", "url": "/v1/responses", "body": assistant_input},
        {"custom_id": "unknown", "method": "POST", "url": "/v1/responses", "body": {**GOOD_RESPONSES, "top_k": 3}},
        {"custom_id": "short", "method": "POST", "url": "/v1/responses",
         "body": {**GOOD_RESPONSES, "max_output_tokens": 3}},
        {"custom_id": "good", "method": "POST", "url": "/v1/responses", "body": GOOD_RESPONSES},
    ]
    batch, _ = wait(http, submit(http, "/v1/responses", lines)["id"])
    results = result_lines(http, batch)
    assert results["good"]["response"]["status_code"] == 200
    errors = {}
    for custom_id in ("text", "assistant", "unknown", "short"):
        response = results[custom_id]["response"]
        assert response["status_code"] == 400
        judge("ErrorResponse", response["body"])
        errors[custom_id] = response["body"]["error"]
    assert errors["text"]["code"] == "invalid_value" and errors["text"]["param"] == "input[0].content[0]"
    assert "'text'" in errors["text"]["message"] and "'input_text'" in errors["text"]["message"]
    assert errors["assistant"]["param"] == "input[1].content[0]"
    assert "'output_text' and 'refusal'" in errors["assistant"]["message"]
    assert (errors["unknown"]["code"], errors["unknown"]["param"]) == ("unknown_parameter", "top_k")
    assert errors["short"]["param"] == "max_output_tokens"
    assert batch["request_counts"] == {"total": 5, "completed": 1, "failed": 4}


def test_emulator_refuses_bad_chat_lines_per_item(http: httpx.Client) -> None:
    lines = [
        {"custom_id": "role", "method": "POST", "url": "/v1/chat/completions",
         "body": {"model": "m", "messages": [{"role": "robot", "content": "x"}]}},
        {"custom_id": "type", "method": "POST", "url": "/v1/chat/completions",
         "body": {"model": "m", "messages": [{"role": "user", "content": "x"}], "temperature": "hot"}},
    ]
    results = result_lines(http, wait(http, submit(http, "/v1/chat/completions", lines)["id"])[0])
    for custom_id in ("role", "type"):
        assert results[custom_id]["response"]["status_code"] == 400
        assert results[custom_id]["response"]["body"]["error"]["type"] == "invalid_request_error"
    role, kind = (results[c]["response"]["body"]["error"] for c in ("role", "type"))
    assert (role["param"], role["code"]) == ("messages[0].role", "invalid_value")
    assert "'robot'" in role["message"] and "'user'" in role["message"]
    assert kind["param"] == "temperature" and "'hot' is not of type 'number'" in kind["message"]


def test_emulator_refuses_unknown_envelope_and_create_keys(http: httpx.Client) -> None:
    line = {**encoded("chat", {"prompt": "x"}), "headers": {"x": "y"}}
    failed, _ = wait(http, submit(http, "/v1/chat/completions", [line])["id"])
    assert failed["status"] == "failed"
    assert failed["errors"]["data"][0]["code"] == "unknown_parameter"
    assert failed["errors"]["data"][0]["line"] == 1
    file = upload(http, [encoded("chat", {"prompt": "x"})])
    response = http.post("/batches", json={"input_file_id": file["id"], "endpoint": "/v1/chat/completions",
                                           "completion_window": "24h", "priority": "high"})
    assert response.status_code == 400
    judge("ErrorResponse", response.json())
    assert (response.json()["error"]["code"], response.json()["error"]["param"]) == ("unknown_parameter", "priority")


# -- (e) the spec and the SDK agree on the types we use ----------------------------------------------


# Fields the SDK (openai 3.57.0) defines and the spec snapshot (2026-08-21) does not yet: the SDK is
# newer. We neither send nor emit them. `Response.output_text` is a spec property the SDK computes.
# The test asserts these differences exactly, so a newer spec or SDK shows up as a failure to review.
SDK_ONLY = {
    "Response": {"access_programs", "image", "input_transformations", "prompt_cache_diagnostics", "tool_usage"},
    "CreateResponse": {"access_programs", "background_options", "image"},
}
SPEC_ONLY = {"Response": {"output_text"}}


def _sdk_fields(model: Any) -> set[str]:
    return {info.alias or name for name, info in model.model_fields.items()}


def test_spec_types_agree_with_the_sdk() -> None:
    from openai.types import Batch, BatchError, BatchRequestCounts, BatchUsage, FileDeleted, FileObject
    from openai.types.chat import ChatCompletion
    from openai.types.responses import Response

    defs = document(P)["$defs"]
    usage = defs["Batch"]["properties"]["usage"]  # inline in the spec, BatchUsage in the SDK
    pairs = {"Batch": (defs["Batch"], Batch), "BatchError": (defs["BatchError"], BatchError),
             "BatchRequestCounts": (defs["BatchRequestCounts"], BatchRequestCounts), "usage": (usage, BatchUsage),
             "OpenAIFile": (defs["OpenAIFile"], FileObject),
             "DeleteFileResponse": (defs["DeleteFileResponse"], FileDeleted),
             "CreateChatCompletionResponse": (defs["CreateChatCompletionResponse"], ChatCompletion),
             "Response": (defs["Response"], Response)}
    for name, (spec, model) in pairs.items():
        props, sdk = set(spec["properties"]), _sdk_fields(model)
        assert (sdk - props, props - sdk) == (SDK_ONLY.get(name, set()), SPEC_ONLY.get(name, set())), name
        assert spec["additionalProperties"] is False


def test_sdk_request_params_are_the_spec_properties() -> None:
    from openai.types import completion_create_params, embedding_create_params
    from openai.types.chat import completion_create_params as chat_params
    from openai.types.responses import response_create_params

    defs = document(P)["$defs"]
    pairs = {
        "CreateChatCompletionRequest": chat_params.CompletionCreateParamsBase,
        "CreateResponse": response_create_params.ResponseCreateParamsBase,
        "CreateCompletionRequest": completion_create_params.CompletionCreateParamsBase,
        "CreateEmbeddingRequest": embedding_create_params.EmbeddingCreateParams,
    }
    for name, params in pairs.items():
        sdk = set(params.__annotations__)
        # `stream` is left out of the SDK's *Base params (its streaming/non-streaming variants add it);
        # we never send it (a batch line cannot stream).
        spec = set(defs[name]["properties"]) - {"stream"}
        assert (sdk - spec, spec - sdk) == (SDK_ONLY.get(name, set()), set()), name


def test_document_records_its_provenance() -> None:
    doc = document(P)
    assert doc["provider"] == P and doc["generated"] == "2026-12-01"
    assert "openai/openai-openapi@" in doc["version"] and doc["generator"].endswith("generators/openai.py")
    for name in (*REQUEST_TYPES.values(), *RESPONSE_TYPES.values(), "BatchRequestInput", "BatchRequestOutput",
                 "Batch", "OpenAIFile", "ListBatchesResponse", "ListFilesResponse", "ErrorResponse",
                 "CreateBatchRequest", "InputItem", "EasyInputMessage"):
        assert name in doc["$defs"]
