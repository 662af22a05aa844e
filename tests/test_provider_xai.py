"""xAI: the emulator's REST shapes against xAI's documented examples, and our adapter end to end.

xAI's official SDK speaks gRPC only, so it cannot drive the REST emulator. Instead the request and
response examples of xAI's REST reference (docs.x.ai .../rest-api-reference/inference/batches) are
fixtures below: the emulator must answer with exactly their keys and JSON types, and our adapter must
read them (plus the three documented failure forms).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pyarrow.parquet as pq
import pytest

from airflow_batchwork.adapters.xai import (
    XAIAdapter,
    batch_name,
    batch_status,
    error_parser,
    name_tags,
    parse_result,
    parse_time,
)
from airflow_batchwork.core import BatchClient, Credentials, ProviderAPIError, parse_model
from airflow_batchwork.testing import Emulator
from airflow_batchwork.values.errors import RequestValidationError
from airflow_batchwork.values.requests import BatchRequest

# -- documented examples (xAI REST reference, Batches) ---------------------------------------------

CREATE_REQUEST: dict[str, Any] = {"name": "My New Batch"}
BATCH: dict[str, Any] = {
    "batch_id": "batch_1934e8b5-f3dc-45f1-8329-9841b0aee9d8",
    "name": "My New Batch",
    "create_time": "2025-11-11",
    "expire_time": "2025-11-12",
    "create_api_key_id": "********-****-****-****-************",
    "cancel_time": None,
    "cancel_by_xai_message": None,
    "state": {"num_requests": 0, "num_pending": 0, "num_success": 0, "num_error": 0, "num_cancelled": 0},
}
LIST: dict[str, Any] = {
    "batches": [
        BATCH,
        {
            "batch_id": "batch_bac0e657-6bbf-46ba-a671-1d73a67c132a",
            "name": "MyNewBatch",
            "create_time": "2025-11-09",
            "expire_time": "2025-11-10",
            "create_api_key_id": "********-****-****-****-************",
            "cancel_time": "2025-11-09",
            "cancel_by_xai_message": None,
            "state": {
                "num_requests": 1, "num_pending": 0, "num_success": 1, "num_error": 0, "num_cancelled": 0,
            },
        },
    ],
    # Listed in the response schema ("empty if this is the last page"), absent from the example.
    "pagination_token": None,
}
ADD_REQUEST: dict[str, Any] = {
    "batch_requests": [
        {
            "batch_request_id": "test_request_0",
            "batch_request": {
                "chat_get_completion": {
                    "messages": [
                        {
                            "role": "system",
                            "content": "You are a helpful assistant that can answer questions and help "
                            "with tasks.",
                        },
                        {"role": "user", "content": "What is 101*3?"},
                    ],
                    "model": "grok-4",
                }
            },
        }
    ]
}
REQUEST_METADATA: dict[str, Any] = {
    "batch_request_metadata": [
        {
            "batch_request_id": "test_request_0",
            "endpoint": "xai_api.Chat/GetCompletion",
            "model": "grok-4",
            "state": "succeeded",
            "create_time": "2025-11-11",
            "finish_time": "2025-11-12",
        }
    ],
    "pagination_token": None,
}
RESULTS: dict[str, Any] = {
    "results": [
        {
            "batch_request_id": "test_request_0",
            "batch_result": {
                "response": {
                    "chat_get_completion": {
                        "id": "e7c2162b-ca73-c181-2364-1feabef778fe_us-east-1",
                        "object": "chat.completion",
                        "created": 1762801725,
                        "model": "grok-4",
                        "choices": [
                            {
                                "index": 0,
                                "message": {
                                    "role": "assistant",
                                    "content": "101 multiplied by 3 is 303. If you have more calculations or "
                                    "questions, feel free to ask!",
                                    "refusal": None,
                                },
                                "finish_reason": "stop",
                            }
                        ],
                        "usage": {
                            "prompt_tokens": 706,
                            "completion_tokens": 22,
                            "total_tokens": 827,
                            "prompt_tokens_details": {
                                "text_tokens": 706, "audio_tokens": 0, "image_tokens": 0,
                                "cached_tokens": 679,
                            },
                            "completion_tokens_details": {
                                "reasoning_tokens": 99, "audio_tokens": 0,
                                "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0,
                            },
                            "num_sources_used": 0,
                        },
                        "system_fingerprint": "fp_1944a19e1f",
                    }
                }
            },
        }
    ],
    "pagination_token": None,
}
# The batch guide adds per-item cost to usage: `...chat_get_completion.usage.cost_in_usd_ticks`.
USAGE_PATH = "$.results[].batch_result.response.chat_get_completion.usage"
RESULT_EXTRAS = {USAGE_PATH: {"cost_in_usd_ticks"}}
# The three failure forms (reference §8.5 CONFLICT).
FAILURES = [
    ({"batch_request_id": "a", "batch_result": {"error": "model overloaded"}}, "error", "model overloaded"),
    ({"batch_request_id": "a", "error_message": "invalid request"}, "error", "invalid request"),
    ({"batch_request_id": "a", "error": {"code": "invalid_argument", "message": "bad max_tokens"}},
     "invalid_argument", "bad max_tokens"),
    ({"batch_request_id": "a", "batch_result": {"error": {"code": 3, "message": "bad input"}}},
     "3", "bad input"),
]

AUTH = {"Authorization": "Bearer test-key"}
THREE = [
    {"custom_id": "ok", "prompt": "hello world"},
    {"custom_id": "bad", "prompt": "boom [[error]]"},
    {"custom_id": "late", "prompt": "slow [[expire]]"},
]


def assert_shape(
    actual: Any, documented: Any, where: str = "$", extras: dict[str, set[str]] | None = None
) -> None:
    """`actual` has exactly the documented keys (plus `extras` at a path) and the same JSON types.

    A documented null is a nullable string (times, messages, tokens)."""
    extras = extras or {}
    if isinstance(documented, dict):
        assert isinstance(actual, dict), f"{where}: expected an object, got {actual!r}"
        assert set(actual) == set(documented) | extras.get(where, set()), f"{where}: keys {sorted(actual)}"
        for key, value in documented.items():
            assert_shape(actual[key], value, f"{where}.{key}", extras)
    elif isinstance(documented, list):
        assert isinstance(actual, list), f"{where}: expected an array, got {actual!r}"
        for element in actual:
            assert_shape(element, documented[0], f"{where}[]", extras)
    elif documented is None:
        assert actual is None or isinstance(actual, str), f"{where}: expected null or a string: {actual!r}"
    elif isinstance(documented, bool):
        assert isinstance(actual, bool), f"{where}: expected a boolean, got {actual!r}"
    elif isinstance(documented, int):
        assert isinstance(actual, int) and not isinstance(actual, bool), f"{where}: expected an integer"
    else:
        assert isinstance(actual, type(documented)), f"{where}: expected {type(documented).__name__}"


def rfc3339(value: str) -> float:
    return datetime.fromisoformat(value).timestamp()


@pytest.fixture
def http(emulator: Emulator) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=emulator.base_url("xai"), headers=AUTH, timeout=10) as client:
        yield client


def wait_done(http: httpx.Client, batch_id: str, timeout: float = 10.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        batch: dict[str, Any] = http.get(f"/batches/{batch_id}").json()
        if batch["state"]["num_requests"] and not batch["state"]["num_pending"]:
            return batch
        assert time.monotonic() < deadline, f"batch stuck: {batch['state']}"
        time.sleep(0.05)


def client_for(emulator: Emulator) -> BatchClient:
    return BatchClient({"xai": Credentials(api_key="test-key", base_url=emulator.base_url("xai"))})


def xai_adapter(client: BatchClient | None = None) -> XAIAdapter:
    adapter = client.adapter("xai") if client is not None else XAIAdapter.offline()
    assert isinstance(adapter, XAIAdapter)
    return adapter


def calls(emulator: Emulator, method: str, path: str) -> int:
    return sum(1 for r in emulator.requests if r.method == method and r.path == "/xai/v1" + path)


# -- the emulator speaks the documented REST shapes ------------------------------------------------


def test_documented_flow_has_documented_shapes(http: httpx.Client) -> None:
    created = http.post("/batches", json=CREATE_REQUEST)
    assert created.status_code == 200, created.text
    batch = created.json()
    assert_shape(batch, BATCH)
    assert batch["name"] == "My New Batch" and batch["cancel_time"] is None
    assert batch["state"] == BATCH["state"]
    # Time encoding is UNCONFIRMED for REST; the emulator answers RFC 3339.
    assert rfc3339(batch["expire_time"]) >= rfc3339(batch["create_time"])

    added = http.post(f"/batches/{batch['batch_id']}/requests", json=ADD_REQUEST)
    assert (added.status_code, added.json()) == (200, {})
    done = wait_done(http, batch["batch_id"])
    assert_shape(done, BATCH)
    assert done["state"] == {"num_requests": 1, "num_pending": 0, "num_success": 1, "num_error": 0,
                             "num_cancelled": 0}

    results = http.get(f"/batches/{batch['batch_id']}/results", params={"limit": 100}).json()
    assert_shape(results, RESULTS, extras=RESULT_EXTRAS)
    entry = results["results"][0]
    completion = entry["batch_result"]["response"]["chat_get_completion"]
    assert entry["batch_request_id"] == "test_request_0"
    assert completion["choices"][0]["message"]["content"] == "echo: What is 101*3?"
    assert completion["usage"]["prompt_tokens"] == 16 and completion["usage"]["cost_in_usd_ticks"] > 0
    assert results["pagination_token"] is None

    metadata = http.get(f"/batches/{batch['batch_id']}/requests", params={"limit": 50}).json()
    assert_shape(metadata, REQUEST_METADATA)
    assert [(m["batch_request_id"], m["state"]) for m in metadata["batch_request_metadata"]] == [
        ("test_request_0", "succeeded")
    ]

    listing = http.get("/batches", params={"limit": 2}).json()
    assert_shape(listing, LIST)
    assert 1 <= len(listing["batches"]) <= 2

    cancelled = http.post(f"/batches/{batch['batch_id']}:cancel")  # no body, as in the guide's curl
    assert cancelled.status_code == 200
    assert_shape(cancelled.json(), BATCH)


def test_responses_operation_and_generated_request_id(http: httpx.Client) -> None:
    batch_id = http.post("/batches", json={"name": "responses"}).json()["batch_id"]
    body = {"model": "grok-4.3", "input": [{"role": "system", "content": "be brief"},
                                           {"role": "user", "content": "hi there"}]}
    assert http.post(f"/batches/{batch_id}/requests",
                     json={"batch_requests": [{"batch_request": {"responses": body}}]}).status_code == 200
    wait_done(http, batch_id)
    [entry] = http.get(f"/batches/{batch_id}/results").json()["results"]
    uuid.UUID(entry["batch_request_id"])  # xAI generates a UUID when none is given
    response = entry["batch_result"]["response"]["responses"]
    assert response["output"][0]["content"][0]["text"] == "echo: hi there"
    assert response["usage"]["input_tokens"] == 4 and "cost_in_usd_ticks" in response["usage"]


def test_add_requests_validation(http: httpx.Client) -> None:
    batch_id = http.post("/batches", json={"name": "v"}).json()["batch_id"]
    entry = ADD_REQUEST["batch_requests"][0]
    assert http.post(f"/batches/{batch_id}/requests", json=ADD_REQUEST).status_code == 200
    duplicate = http.post(f"/batches/{batch_id}/requests", json={"batch_requests": [entry]})
    assert duplicate.status_code == 400 and "already used" in duplicate.json()["error"]
    image_op = {"image_generation": {"model": "grok-imagine", "prompt": "x"}}
    image = {"batch_requests": [{"batch_request": image_op}]}
    assert "not emulated" in http.post(f"/batches/{batch_id}/requests", json=image).json()["error"]
    no_model_op: dict[str, Any] = {"chat_get_completion": {"messages": []}}
    no_model = {"batch_requests": [{"batch_request": no_model_op}]}
    assert http.post(f"/batches/{batch_id}/requests", json=no_model).status_code == 400
    assert http.post(f"/batches/{batch_id}/requests", json={"batch_requests": "x"}).status_code == 422


def test_errors_are_xai_shaped(emulator: Emulator, http: httpx.Client) -> None:
    base = emulator.base_url("xai")
    missing = httpx.get(f"{base}/batches")
    assert missing.status_code == 401
    assert missing.json() == {"code": "The request does not have valid authentication credentials",
                              "error": missing.json()["error"]}
    assert httpx.get(f"{base}/batches", headers={"Authorization": "Bearer"}).status_code == 401
    # xAI answers an incorrect key with 400 (debugging page), not 401.
    wrong = httpx.get(f"{base}/batches", headers={"Authorization": "Bearer invalid"})
    assert wrong.status_code == 400
    assert wrong.json()["code"] == "Client specified an invalid argument"
    assert wrong.json()["error"].startswith("Incorrect API key provided")

    unknown = http.get("/batches/batch_nope")
    assert unknown.status_code == 404
    assert unknown.json() == {"code": "Some requested entity was not found",
                              "error": "Batch batch_nope not found."}
    assert http.get("/nowhere").status_code == 404
    assert http.post("/batches/batch_nope:cancel").status_code == 404

    form = http.post("/batches", data={"name": "x"})
    assert form.status_code == 415 and form.json()["code"] == "Client specified an invalid argument"
    assert http.post("/batches", headers={"content-type": "application/json"}).status_code == 415
    assert http.post("/batches", json={}).status_code == 400
    assert http.post("/batches", json={"name": 5}).status_code == 422


async def test_adapter_maps_errors(emulator: Emulator) -> None:
    async with client_for(emulator) as client:
        with pytest.raises(ProviderAPIError) as caught:
            await client.adapter("xai").status("batch_nope")
    assert caught.value.status_code == 404
    assert caught.value.code == "Some requested entity was not found"
    assert caught.value.message == "Batch batch_nope not found."
    async with BatchClient({"xai": Credentials("invalid", emulator.base_url("xai"))}) as client:
        with pytest.raises(ProviderAPIError) as caught:
            await client.submit("xai/grok-4", [{"prompt": "x"}])
    assert caught.value.status_code == 400 and "Incorrect API key" in caught.value.message
    assert "invalid" not in str(caught.value).replace("Client specified an invalid argument", "")


# -- our adapter reads the documented shapes -------------------------------------------------------


def test_status_from_documented_batches() -> None:
    def status(batch: dict[str, Any], now: str) -> Any:
        return batch_status(batch, str, now=rfc3339(now))

    assert status(BATCH, "2025-11-11T12:00:00+00:00").state == "validating"
    # A date-only expire_time counts until the end of that day.
    assert status(BATCH, "2025-11-12T23:00:00+00:00").state == "validating"
    assert status(BATCH, "2025-11-13T00:00:01+00:00").state == "expired"
    cancelled = status(LIST["batches"][1], "2025-11-09T12:00:00+00:00")
    assert (cancelled.state, cancelled.counts.succeeded, cancelled.counts.total) == ("cancelled", 1, 1)
    running = dict(BATCH, state={"num_requests": 100, "num_pending": 25, "num_success": 70, "num_error": 5})
    progress = status(running, "2025-11-11T12:00:00+00:00")
    assert (progress.state, progress.counts.processing, progress.counts.errored) == ("in_progress", 25, 5)
    done = dict(BATCH, state={"num_requests": 3, "num_pending": 0, "num_success": 2, "num_error": 1})
    assert status(done, "2030-01-01T00:00:00+00:00").state == "completed"
    # CONFLICT: the guide text says `expires_at`; tolerated.
    legacy = {"batch_id": "batch_x", "expires_at": 1000, "state": {"num_requests": 2, "num_pending": 1}}
    expired = batch_status(legacy, str, now=2000)
    assert (expired.state, expired.counts.expired) == ("expired", 1)
    by_xai = dict(BATCH, cancel_time="2025-11-11", cancel_by_xai_message="line 3: invalid JSON")
    failed = status(by_xai, "2025-11-11T12:00:00+00:00")
    assert (failed.state, failed.error_message) == ("failed", "line 3: invalid JSON")
    cancelling = dict(BATCH, cancel_time="2025-11-11", state={"num_requests": 4, "num_pending": 2})
    assert status(cancelling, "2025-11-11T12:00:00+00:00").state == "cancelling"


def test_parse_documented_result() -> None:
    item = parse_result(RESULTS["results"][0], "batch_1")
    assert item is not None
    assert (item.custom_id, item.status, item.finish_reason) == ("test_request_0", "succeeded", "stop")
    assert item.text is not None and item.text.startswith("101 multiplied by 3 is 303.")
    assert (item.input_tokens, item.output_tokens, item.total_tokens) == (706, 22, 827)
    assert json.loads(item.response or "") == RESULTS["results"][0]


@pytest.mark.parametrize(("entry", "code", "message"), FAILURES)
def test_parse_failure_forms(entry: dict[str, Any], code: str, message: str) -> None:
    item = parse_result(entry, "batch_1")
    assert item is not None
    assert (item.status, item.error_code, item.error_message, item.text) == ("errored", code, message, None)
    assert item.finish_reason == "error"


def test_parse_time_is_tolerant() -> None:
    assert parse_time("2025-11-11T10:00:00Z") == rfc3339("2025-11-11T10:00:00+00:00")
    nanos = rfc3339("2025-11-11T10:00:00.123456+00:00")
    assert parse_time("2025-11-11T10:00:00.123456789Z") == pytest.approx(nanos)
    assert parse_time("2025-11-11T12:00:00+02:00") == rfc3339("2025-11-11T10:00:00+00:00")
    assert parse_time("2025-11-11") == rfc3339("2025-11-11T00:00:00+00:00")
    assert parse_time("2025-11-11", end_of_day=True) == rfc3339("2025-11-12T00:00:00+00:00")
    assert parse_time(1762801725) == parse_time("1762801725") == 1762801725.0
    assert parse_time({"seconds": "10", "nanos": 500_000_000}) == 10.5
    assert parse_time(None) is parse_time("") is parse_time("soon") is None


def test_name_carries_metadata_and_errors_parse() -> None:
    tags = {"batchwork_shard": "1/2", "job": "a b&c=d"}
    assert name_tags(batch_name(tags)) == tags
    assert name_tags("My New Batch") is None
    body = {"code": "Some requested entity was not found", "error": "Batch x not found."}
    assert error_parser(httpx.Response(404, json=body)) == (body["code"], body["error"])
    openai_form = {"error": {"message": "bad", "type": "invalid_request_error", "code": "invalid_value"}}
    assert error_parser(httpx.Response(400, json=openai_form)) == ("invalid_value", "bad")


def test_request_mapping_and_refusals() -> None:
    adapter = xai_adapter()
    chat, responses = parse_model("xai/grok-4"), parse_model("xai.responses/grok-4")
    request = BatchRequest(custom_id="a", prompt="hi", system="terse", max_output_tokens=9, seed=1)
    entry = json.loads(adapter.encode(chat, request))
    body = entry["batch_request"]["chat_get_completion"]
    assert entry["batch_request_id"] == "a"
    assert (body["max_completion_tokens"], body["seed"], body["messages"][0]["role"]) == (9, 1, "system")
    body = json.loads(adapter.encode(responses, request))["batch_request"]["responses"]
    assert body["input"] == [{"role": "system", "content": "terse"}, {"role": "user", "content": "hi"}]
    assert body["max_output_tokens"] == 9
    assert adapter.check_request(chat, request) is None
    assert adapter.check_request(chat, BatchRequest(custom_id="b", prompt="x", top_k=3))[0] == "top_k"  # type: ignore[index]
    assert adapter.check_request(responses, request)[0] == "seed"  # type: ignore[index]
    with pytest.raises(RequestValidationError, match="stop_sequences"):
        BatchClient().prepare("xai.responses/grok-4", [{"prompt": "x", "stop_sequences": ["."]}])
    assert str(chat) == "xai.chat/grok-4" and XAIAdapter.limits.max_request_bytes == 25 * 1024 * 1024


# -- our adapter against the emulator -------------------------------------------------------------


@pytest.mark.parametrize("model", ["xai/grok-4", "xai.responses/grok-4.3"])
async def test_three_request_job_to_parquet(emulator: Emulator, tmp_path: Path, model: str) -> None:
    async with client_for(emulator) as client:
        job = await client.submit(model, THREE, defaults={"max_output_tokens": 50})
        final = await client.wait(job, poll_interval=0.1, timeout=30)
        manifest = await client.write_parquet(job, f"file://{tmp_path}/out.parquet")
    assert final.state == "expired"  # the [[expire]] item never ran before expire_time
    assert manifest["counts"] == {"succeeded": 1, "errored": 1, "expired": 1}
    rows = {row["custom_id"]: row for row in pq.read_table(tmp_path / "out.parquet").to_pylist()}
    assert set(rows) == {"ok", "bad", "late"}

    ok = rows["ok"]
    assert (ok["status"], ok["text"], ok["finish_reason"]) == ("succeeded", "echo: hello world", "stop")
    assert (ok["input_tokens"], ok["output_tokens"], ok["total_tokens"]) == (2, 3, 5)
    assert (ok["provider"], ok["model"], ok["batch_id"]) == ("xai", str(parse_model(model)), job.batch_ids[0])
    raw = json.loads(ok["response"])
    assert raw["batch_request_id"] == "ok"
    [body] = raw["batch_result"]["response"].values()
    assert body["usage"]["cost_in_usd_ticks"] > 0  # kept raw; cost_usd is a later column

    bad = rows["bad"]
    assert (bad["status"], bad["text"], bad["error_code"]) == ("errored", None, "error")
    assert "[[error]]" in bad["error_message"]
    assert json.loads(bad["response"]) == {"batch_request_id": "bad",
                                           "batch_result": {"error": bad["error_message"]}}
    late = rows["late"]
    assert (late["status"], late["text"], late["error_code"]) == ("expired", None, "expired")
    assert json.loads(late["response"])["state"] == "pending"


async def test_add_requests_are_paged(emulator: Emulator) -> None:
    requests = [{"custom_id": f"r{i}", "prompt": f"item {i}"} for i in range(5)]
    async with client_for(emulator) as client:
        xai_adapter(client).add_page_size = 2
        job = await client.submit("xai/grok-4", requests)
        await client.wait(job, poll_interval=0.1, timeout=30)
        texts = {item.custom_id: item.text async for item in client.results(job)}
    assert calls(emulator, "POST", f"/batches/{job.batch_ids[0]}/requests") == 3
    assert texts == {f"r{i}": f"echo: item {i}" for i in range(5)}


async def test_add_pages_are_bounded_by_bytes() -> None:
    adapter = xai_adapter()
    adapter.add_page_bytes = 60
    pages = list(adapter._add_pages([b'{"a":"' + b"x" * 20 + b'"}'] * 3))
    assert len(pages) == 3 and all(json.loads(p)["batch_requests"] for p in pages)


@pytest.mark.parametrize("knob", [{"input_mode": "file"}, {"file_min_requests": 3}])
async def test_file_backed_batch(emulator: Emulator, tmp_path: Path, knob: dict[str, Any]) -> None:
    uploads = calls(emulator, "POST", "/files")
    async with client_for(emulator) as client:
        adapter = xai_adapter(client)
        for name, value in knob.items():
            setattr(adapter, name, value)
        job = await client.submit("xai.responses/grok-4", THREE, defaults={"max_output_tokens": 50})
        await client.wait(job, poll_interval=0.1, timeout=30)
        manifest = await client.write_parquet(job, f"{tmp_path}/file.parquet")
    batch_id = job.batch_ids[0]
    assert calls(emulator, "POST", "/files") == uploads + 1
    assert calls(emulator, "POST", f"/batches/{batch_id}/requests") == 0
    assert manifest["counts"] == {"succeeded": 1, "errored": 1, "expired": 1}
    view = emulator.store.get_batch("xai", batch_id)
    assert view is not None
    [stored] = [f for f in emulator.files("xai") if f.id == view.extra["input_file_id"]]
    first = json.loads(stored.data.splitlines()[0])
    assert (first["custom_id"], first["method"], first["url"]) == ("ok", "POST", "/v1/responses")
    with httpx.Client(base_url=emulator.base_url("xai"), headers=AUTH) as http:
        sealed = http.post(f"/batches/{batch_id}/requests", json=ADD_REQUEST)
    assert sealed.status_code == 400 and "sealed" in sealed.json()["error"]


async def test_invalid_file_cancels_the_batch_by_xai(emulator: Emulator, http: httpx.Client) -> None:
    good = {"custom_id": "a", "method": "POST", "url": "/v1/chat/completions", "body": {"model": "grok-4"}}
    lines = json.dumps(good).encode() + b"\nnot json\n"
    file_id = http.post("/files", files={"file": ("in.jsonl", lines)}).json()["id"]
    batch_id = http.post("/batches", json={"name": "bad file", "input_file_id": file_id}).json()["batch_id"]
    async with client_for(emulator) as client:
        final = await client.wait({"provider": "xai", "model": "xai/grok-4",
                                   "batches": [{"id": batch_id, "request_count": 2}], "request_count": 2},
                                  poll_interval=0.05, timeout=10)
    assert final.state == "failed"
    assert final.batches[0].error_message is not None and "line 2" in final.batches[0].error_message
    assert http.post("/batches", json={"name": "x", "input_file_id": "file-nope"}).status_code == 404


async def test_cancel_reports_cancelled_and_canceled_rows() -> None:
    with Emulator(processing_seconds=30) as slow:
        async with client_for(slow) as client:
            job = await client.submit("xai/grok-4", [{"custom_id": "a", "prompt": "a"},
                                                     {"custom_id": "b", "prompt": "b"}])
            cancelling = await client.cancel(job)
            final = await client.wait(job, poll_interval=0.1, timeout=30)
            rows = [item async for item in client.results(job)]
        with httpx.Client(base_url=slow.base_url("xai"), headers=AUTH) as http:
            batch = http.get(f"/batches/{job.batch_ids[0]}").json()
            add = http.post(f"/batches/{job.batch_ids[0]}/requests", json=ADD_REQUEST)
    assert cancelling.state in ("cancelling", "cancelled")
    assert final.state == "cancelled" and final.counts.total == 2 and final.counts.canceled == 2
    assert sorted((r.custom_id, r.status, r.error_code) for r in rows) == [
        ("a", "canceled", "cancelled"), ("b", "canceled", "cancelled")]
    assert batch["cancel_time"] is not None and batch["state"]["num_cancelled"] == 2
    assert add.status_code == 400


async def test_list_pagination() -> None:
    with Emulator(processing_seconds=0.2) as emu:
        async with client_for(emu) as client:
            ids = [(await client.submit("xai/grok-4", [{"prompt": "x"}])).batch_ids[0] for _ in range(3)]
            with httpx.Client(base_url=emu.base_url("xai"), headers=AUTH) as http:
                first = http.get("/batches", params={"limit": 2}).json()
                token = first["pagination_token"]
                second = http.get("/batches", params={"limit": 2, "pagination_token": token}).json()
            assert [b["batch_id"] for b in first["batches"] + second["batches"]] == ids[::-1]
            assert isinstance(first["pagination_token"], str) and second["pagination_token"] is None
            adapter = xai_adapter(client)
            adapter.list_page_size = 2
            before = calls(emu, "GET", "/batches")
            listed = [b.id async for b in adapter.list_batches(limit=10)]
            assert listed == ids[::-1]
            assert calls(emu, "GET", "/batches") - before == 2
            assert [b.id async for b in adapter.list_batches(limit=1)] == ids[-1:]


async def test_find_batch_by_name(emulator: Emulator, http: httpx.Client) -> None:
    job_id = uuid.uuid4().hex
    async with client_for(emulator) as client:
        tags = {"batchwork_job": job_id, "dag": "d"}
        job = await client.submit("xai/grok-4", [{"prompt": "x"}], metadata=tags)
        adapter = client.adapter("xai")
        assert await adapter.find_batch({"batchwork_job": job_id}) == job.batch_ids[0]
        assert await adapter.find_batch({"batchwork_job": job_id, "dag": "other"}) is None
        assert await adapter.find_batch({"batchwork_job": "nope"}) is None
    name = http.get(f"/batches/{job.batch_ids[0]}").json()["name"]
    assert name == batch_name({"batchwork_job": job_id, "dag": "d"})
