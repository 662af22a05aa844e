"""Anthropic Message Batches judged by the anthropic SDK's own types (``schemas/anthropic.json``).

(a) every create body and request entry the adapter builds, with every documented request field;
(b) every answer the emulator gives on every route, fetched over real HTTP;
(c) known-bad bodies are rejected by the schema (the suite has teeth);
and the strict emulator refusing, in Anthropic's shapes, what the real API refuses.

Allow-list (reasoned, the only departures from the generated schema):

- ``temperature``, ``top_p``, ``top_k``: not in anthropic 2.x ``MessageCreateParams`` (removed in 1.0.0),
  yet the API still honours them on models released before Claude Opus 4.7, and the SDK's migration guide
  says to send them as extra body keys for such models. They are judged against ``SamplingParams`` (their
  0.125.0 types), and only on those models; on the others the adapter must refuse them.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from pydantic import BaseModel

from airflow_batchwork.adapters.anthropic import AnthropicAdapter
from airflow_batchwork.core import BatchClient, ConfigurationError, Credentials
from airflow_batchwork.testing import Emulator, conformance
from airflow_batchwork.testing.faults import FaultConfig
from airflow_batchwork.values.refs import parse_model
from airflow_batchwork.values.requests import prepare_requests
from tests.conformance import drift

P = "anthropic"
HEADERS = {"x-api-key": "k", "anthropic-version": "2023-06-01"}
SAMPLING = ("temperature", "top_p", "top_k")
# Models by what they take (Claude docs: sampling parameters rejected from Opus 4.7 on; temperature and
# top_p exclusive on Claude 4; prefill rejected from the 4.6 models on).
SAMPLES_ALL = "claude-3-5-haiku-20241022"
SAMPLES_ONE = "claude-haiku-4-5"
NO_PREFILL_SAMPLES_ONE = "claude-sonnet-4-6"
CURRENT = "claude-opus-4-8"
SAMPLING_ALLOWED = {SAMPLES_ALL: set(SAMPLING), SAMPLES_ONE: set(SAMPLING), NO_PREFILL_SAMPLES_ONE: set(SAMPLING),
                    CURRENT: set()}


class Answer(BaseModel):
    label: str
    score: int


CONVERSATION = [
    {"role": "system", "content": "answer tersely"},
    {"role": "user", "content": "first question"},
    {"role": "assistant", "content": [{"type": "text", "text": "first "}, {"type": "text", "text": "answer"}]},
    {"role": "user", "content": [{"type": "text", "text": "second"}, {"type": "text", "text": " question"}]},
]
PREFILL = [{"role": "user", "content": "name a colour"}, {"role": "assistant", "content": "The colour is"}]

# (model, request): every request field we document that Anthropic takes, alone and together.
ACCEPTED: list[tuple[str, dict[str, Any]]] = [
    (SAMPLES_ONE, {"prompt": "hello"}),
    (SAMPLES_ONE, {"messages": CONVERSATION, "system": "be kind"}),
    (SAMPLES_ONE, {"messages": PREFILL}),
    (SAMPLES_ONE, {"prompt": "x", "max_output_tokens": 33, "stop_sequences": ["END", "\n\n"]}),
    (SAMPLES_ONE, {"prompt": "x", "temperature": 0.2, "top_k": 40}),
    (SAMPLES_ONE, {"prompt": "x", "top_p": 0.9}),
    (SAMPLES_ALL, {"prompt": "x", "temperature": 0.7, "top_p": 0.9, "top_k": 5}),
    (SAMPLES_ALL, {"messages": PREFILL, "temperature": 0}),
    (NO_PREFILL_SAMPLES_ONE, {"messages": CONVERSATION, "temperature": 1}),
    (SAMPLES_ONE, {"prompt": "x", "output_schema": {"type": "object", "properties": {"a": {"type": "string"}},
                                                     "required": ["a"], "additionalProperties": False}}),
    (CURRENT, {"prompt": "x", "output_schema": Answer}),
    (CURRENT, {"messages": CONVERSATION, "system": "s", "max_output_tokens": 5, "stop_sequences": ["."]}),
    (CURRENT, {"prompt": "x", "temperature": 1.0}),  # the API default: left out, not refused
    (CURRENT, {"prompt": "x", "provider_options": {"metadata": {"user_id": "u-1"}, "service_tier": "standard_only",
                                                    "output_config": {"effort": "low"}}}),
    (CURRENT, {"prompt": "x", "provider_options": {"thinking": {"type": "adaptive"}}}),
]

# (model, request, field named in the error): refused before any API call.
REFUSED: list[tuple[str, dict[str, Any], str]] = [
    (SAMPLES_ONE, {"prompt": "x", "seed": 1}, "seed"),
    (SAMPLES_ONE, {"prompt": "x", "presence_penalty": 0.5}, "presence_penalty"),
    (SAMPLES_ONE, {"prompt": "x", "frequency_penalty": 0.5}, "frequency_penalty"),
    (SAMPLES_ONE, {"prompt": "x", "dimensions": 8}, "dimensions"),
    (CURRENT, {"prompt": "x", "temperature": 0.2}, "temperature"),
    (CURRENT, {"prompt": "x", "top_p": 0.5}, "top_p"),
    (CURRENT, {"prompt": "x", "top_k": 5}, "top_k"),
    ("claude-sonnet-5", {"prompt": "x", "temperature": 0}, "temperature"),
    ("claude-opus-4-7", {"prompt": "x", "top_k": 3}, "top_k"),
    (SAMPLES_ONE, {"prompt": "x", "temperature": 0.5, "top_p": 0.5}, "top_p"),
    (SAMPLES_ONE, {"prompt": "x", "temperature": 1.5}, "temperature"),
    (CURRENT, {"messages": PREFILL}, "messages[1]"),
    (NO_PREFILL_SAMPLES_ONE, {"messages": [*PREFILL, {"role": "system", "content": "s"}]}, "messages[1]"),
]


def _encode(model: str, raw: dict[str, Any]) -> dict[str, Any]:
    ref = parse_model(f"anthropic/{model}")
    [request] = prepare_requests([{"custom_id": "r1", **raw}], ref=ref)
    adapter = AnthropicAdapter.offline()
    assert adapter.check_request(ref, request) is None
    return dict(json.loads(adapter.encode(ref, request)))


def entry_violations(entry: dict[str, Any]) -> list[str]:
    """An entry judged by the schema, with the sampling allow-list applied (see the module docstring)."""
    params = dict(entry.get("params") or {})
    sampling = {k: params.pop(k) for k in SAMPLING if k in params}
    problems = conformance.violations(P, "MessageBatchRequest", {**entry, "params": params})
    problems += conformance.violations(P, "SamplingParams", sampling)
    if sampling and not set(sampling) <= SAMPLING_ALLOWED.get(str(params.get("model")), set()):
        problems.append(f"params: {sorted(sampling)} sent to {params.get('model')}, which takes no sampling fields")
    return problems


@pytest.mark.parametrize(("model", "raw"), ACCEPTED, ids=[f"{m}-{'+'.join(r)}" for m, r in ACCEPTED])
def test_request_entries_conform(model: str, raw: dict[str, Any]) -> None:
    entry = _encode(model, raw)
    assert entry_violations(entry) == []
    params = entry["params"]
    for name in SAMPLING:
        if name in raw and not (model == CURRENT and name == "temperature" and raw[name] == 1.0):
            assert params[name] == raw[name]
    if model == CURRENT:
        assert not set(SAMPLING) & set(params)
    if "output_schema" in raw:
        assert params["output_config"]["format"]["type"] == "json_schema"
        assert conformance.violations(P, "OutputConfigParam", params["output_config"]) == []


def test_conversation_mapping() -> None:
    params = _encode(SAMPLES_ONE, {"messages": CONVERSATION, "system": "be kind"})["params"]
    assert params["system"] == "be kind\n\nanswer tersely"
    assert [m["role"] for m in params["messages"]] == ["user", "assistant", "user"]
    assert params["messages"][1]["content"] == [{"type": "text", "text": "first "}, {"type": "text", "text": "answer"}]


@pytest.mark.parametrize(("model", "raw", "field"), REFUSED, ids=[f"{m}-{f}" for m, _, f in REFUSED])
async def test_unsupported_fields_refused_before_any_call(model: str, raw: dict[str, Any], field: str) -> None:
    calls: list[httpx.Request] = []

    async def handler(request: httpx.Request) -> httpx.Response:  # pragma: no cover - must not run
        calls.append(request)
        return httpx.Response(500)

    async with BatchClient({P: Credentials("k")}, transport=httpx.MockTransport(handler)) as client:
        with pytest.raises(ConfigurationError) as info:
            await client.submit(f"anthropic/{model}", [raw])
    message = str(info.value)
    assert f"requests[0].{field}" in message and "Fix:" in message
    assert calls == []


# --- over real HTTP ---------------------------------------------------------------------------------


class Recording(httpx.AsyncHTTPTransport):
    """A real socket transport that keeps every request the adapter sends."""

    def __init__(self) -> None:
        super().__init__()
        self.sent: list[httpx.Request] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        await request.aread()
        self.sent.append(request)
        return await super().handle_async_request(request)


@pytest.fixture
def emu() -> Iterator[Emulator]:
    with Emulator(processing_seconds=0.3) as emulator:
        yield emulator


async def test_job_with_every_field_over_http(emu: Emulator) -> None:
    """Every accepted request in one job: the create body conforms, every header is there, and the strict
    emulator (which errors any request the schema refuses) lets every one succeed."""
    recording = Recording()

    async def one(client: BatchClient, i: int, model: str, raw: dict[str, Any]) -> None:
        # One job per request: requests with different output schemas cannot share a ledger-less job.
        job = await client.submit(f"anthropic/{model}", [{"custom_id": f"r{i}", **raw}])
        await client.wait(job, poll_interval=0.05, timeout=60)
        items = [item async for item in client.results(job)]
        assert [(x.custom_id, x.status) for x in items] == [(f"r{i}", "succeeded")], [
            (x.custom_id, x.error_message) for x in items]

    async with BatchClient({P: Credentials("k", emu.base_url(P))}, transport=recording) as client:
        await asyncio.gather(*(one(client, i, model, raw) for i, (model, raw) in enumerate(ACCEPTED)))
    creates = [r for r in recording.sent if r.method == "POST" and r.url.path.endswith("/v1/messages/batches")]
    assert len(creates) == len(ACCEPTED)
    for create in creates:
        body = json.loads(create.content)
        entries = body["requests"]
        assert conformance.violations(P, "BatchCreateParams", {**body, "requests": []}) == []
        for entry in entries:
            assert entry_violations(entry) == []
    for request in recording.sent:
        assert request.headers["x-api-key"] == "k"
        assert request.headers["anthropic-version"] == "2023-06-01"


def _sync(emu: Emulator) -> httpx.Client:
    return httpx.Client(base_url=emu.base_url(P), headers=HEADERS, timeout=30)


def _entry(custom_id: str, text: str, model: str = SAMPLES_ONE, **params: Any) -> dict[str, Any]:
    return {"custom_id": custom_id, "params": {"model": model, "max_tokens": 64,
                                               "messages": [{"role": "user", "content": text}], **params}}


def _wait_ended(http: httpx.Client, batch_id: str, timeout: float = 30) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        batch = http.get(f"/v1/messages/batches/{batch_id}").json()
        if batch["processing_status"] == "ended":
            return dict(batch)
        assert time.monotonic() < deadline, batch
        time.sleep(0.05)


def _lines(http: httpx.Client, batch: dict[str, Any]) -> dict[str, dict[str, Any]]:
    text = http.get(batch["results_url"], headers={"accept": "application/binary"}).text
    lines = [json.loads(line) for line in text.splitlines() if line.strip()]
    for line in lines:
        assert conformance.violations(P, "MessageBatchIndividualResponse", line) == [], line
    return {line["custom_id"]: line for line in lines}


def test_every_route_answer_conforms(emu: Emulator) -> None:
    with _sync(emu) as http:
        created = http.post("/v1/messages/batches", json={"requests": [
            _entry("ok", "hello"), _entry("bad", "boom [[error]]"), _entry("late", "slow [[expire]]"),
            _entry("flaky", "retry [[transient]]"), _entry("invalid", "x", foo=1),
            _entry("json", "x", output_config={"format": {"type": "json_schema", "schema": {
                "type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"]}}}),
        ]})
        assert created.status_code == 200
        batch = created.json()
        assert conformance.violations(P, "MessageBatch", batch) == []
        assert batch["processing_status"] == "in_progress"
        ended = _wait_ended(http, batch["id"])
        assert conformance.violations(P, "MessageBatch", ended) == []
        lines = _lines(http, ended)
        kinds = {cid: line["result"]["type"] for cid, line in lines.items()}
        assert kinds == {"ok": "succeeded", "bad": "errored", "late": "expired", "flaky": "errored",
                         "invalid": "errored", "json": "succeeded"}
        assert "a" in json.loads(lines["json"]["result"]["message"]["content"][0]["text"])
        for cid, kind in kinds.items():
            name = f"MessageBatch{kind.capitalize()}Result"
            assert conformance.violations(P, name, lines[cid]["result"]) == []
        assert lines["flaky"]["result"]["error"]["error"]["type"] == "overloaded_error"
        assert conformance.violations(P, "Message", lines["ok"]["result"]["message"]) == []

        second = http.post("/v1/messages/batches", json={"requests": [_entry("a", "x")]}).json()
        page = http.get("/v1/messages/batches", params={"limit": 1})
        assert page.status_code == 200 and conformance.violations(P, "MessageBatchPage", page.json()) == []
        assert page.json()["has_more"] is True and page.json()["data"][0]["id"] == second["id"]
        rest = http.get("/v1/messages/batches", params={"limit": 10, "after_id": second["id"]}).json()
        assert conformance.violations(P, "MessageBatchPage", rest) == []
        assert batch["id"] in [b["id"] for b in rest["data"]]
        back = http.get("/v1/messages/batches", params={"limit": 10, "before_id": batch["id"]}).json()
        assert conformance.violations(P, "MessageBatchPage", back) == []
        assert second["id"] in [b["id"] for b in back["data"]]

        deleted = http.delete(f"/v1/messages/batches/{batch['id']}")
        assert deleted.status_code == 200 and conformance.violations(P, "DeletedMessageBatch", deleted.json()) == []


def test_cancel_states_conform() -> None:
    with Emulator(processing_seconds=30) as slow, _sync(slow) as http:
        batch = http.post("/v1/messages/batches", json={"requests": [_entry("a", "x"), _entry("b", "y")]}).json()
        early = http.get(f"/v1/messages/batches/{batch['id']}/results")
        assert early.status_code == 400 and conformance.violations(P, "ErrorResponse", early.json()) == []
        both = http.get("/v1/messages/batches", params={"after_id": batch["id"], "before_id": batch["id"]})
        assert both.status_code == 400 and conformance.violations(P, "ErrorResponse", both.json()) == []
        cancel = http.post(f"/v1/messages/batches/{batch['id']}/cancel")
        assert cancel.status_code == 200
        states = {cancel.json()["processing_status"]}
        assert conformance.violations(P, "MessageBatch", cancel.json()) == []
        busy = http.delete(f"/v1/messages/batches/{batch['id']}")
        if cancel.json()["processing_status"] == "canceling":
            assert busy.status_code == 400 and conformance.violations(P, "ErrorResponse", busy.json()) == []
        ended = _wait_ended(http, batch["id"])
        states.add(ended["processing_status"])
        assert conformance.violations(P, "MessageBatch", ended) == []
        assert ended["cancel_initiated_at"] is not None and states <= {"canceling", "ended"}
        lines = _lines(http, ended)
        assert {line["result"]["type"] for line in lines.values()} <= {"canceled", "succeeded"}


@pytest.mark.parametrize(("method", "path", "headers", "body", "status", "kind"), [
    ("GET", "/v1/messages/batches", {}, None, 401, "authentication_error"),
    ("GET", "/v1/messages/batches", {"x-api-key": "invalid", "anthropic-version": "2023-06-01"}, None, 401,
     "authentication_error"),
    ("GET", "/v1/messages/batches", {"x-api-key": "k"}, None, 400, "invalid_request_error"),
    ("GET", "/v1/messages/batches/msgbatch_nope", HEADERS, None, 404, "not_found_error"),
    ("GET", "/v1/nothing/here", HEADERS, None, 404, "not_found_error"),
    ("POST", "/v1/messages/batches", HEADERS, {}, 400, "invalid_request_error"),
    ("GET", "/v1/messages/batches?limit=5000", HEADERS, None, 400, "invalid_request_error"),
])
def test_http_errors_conform(emu: Emulator, method: str, path: str, headers: dict[str, str],
                             body: Any, status: int, kind: str) -> None:
    response = httpx.request(method, emu.base_url(P) + path, headers=headers, json=body, timeout=30)
    assert response.status_code == status
    assert conformance.violations(P, "ErrorResponse", response.json()) == []
    assert response.json()["error"]["type"] == kind
    assert response.headers["request-id"].startswith("req_")


@pytest.mark.parametrize(("knob", "status", "kind"), [
    ({"rate_limit_every": 1}, 429, "rate_limit_error"),
    ({"server_error_every": 1}, 500, "api_error"),
])
def test_injected_errors_conform(knob: dict[str, int], status: int, kind: str) -> None:
    with Emulator(faults=FaultConfig(**knob)) as faulty:  # type: ignore[arg-type]
        response = httpx.get(faulty.base_url(P) + "/v1/messages/batches", headers=HEADERS, timeout=30)
    assert response.status_code == status
    assert conformance.violations(P, "ErrorResponse", response.json()) == []
    assert response.json()["error"]["type"] == kind


# --- the suite has teeth ---------------------------------------------------------------------------

GOOD_PARAMS = {"model": SAMPLES_ONE, "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]}
BAD_ENTRIES: list[tuple[str, dict[str, Any]]] = [
    ("unknown key in params", {"custom_id": "a", "params": {**GOOD_PARAMS, "seed": 1}}),
    ("unknown content part type", {"custom_id": "a", "params": {**GOOD_PARAMS, "messages": [
        {"role": "user", "content": [{"type": "input_text", "text": "hi"}]}]}}),
    ("wrong role", {"custom_id": "a", "params": {**GOOD_PARAMS, "messages": [{"role": "bot", "content": "x"}]}}),
    ("max_tokens as string", {"custom_id": "a", "params": {**GOOD_PARAMS, "max_tokens": "8"}}),
    ("missing messages", {"custom_id": "a", "params": {"model": SAMPLES_ONE, "max_tokens": 8}}),
    ("streaming in a batch", {"custom_id": "a", "params": {**GOOD_PARAMS, "stream": True}}),
    ("bad output format", {"custom_id": "a", "params": {**GOOD_PARAMS, "output_config": {
        "format": {"type": "json_object"}}}}),
    ("unknown key in entry", {"custom_id": "a", "params": GOOD_PARAMS, "method": "POST"}),
    ("sampling on a current model", {"custom_id": "a", "params": {**GOOD_PARAMS, "model": CURRENT,
                                                                   "temperature": 0.1}}),
    ("sampling of the wrong type", {"custom_id": "a", "params": {**GOOD_PARAMS, "top_k": 0.5}}),
]


@pytest.mark.parametrize(("label", "entry"), BAD_ENTRIES, ids=[b[0] for b in BAD_ENTRIES])
def test_known_bad_requests_rejected(label: str, entry: dict[str, Any]) -> None:
    assert entry_violations(entry), label


BAD_ANSWERS: list[tuple[str, str, dict[str, Any]]] = [
    ("MessageBatch", "status outside the enum", {"id": "b", "type": "message_batch", "processing_status": "done",
     "request_counts": {"processing": 0, "succeeded": 1, "errored": 0, "canceled": 0, "expired": 0},
     "created_at": "2026-12-01T00:00:00Z", "expires_at": "2026-12-02T00:00:00Z"}),
    ("MessageBatch", "count missing", {"id": "b", "type": "message_batch", "processing_status": "ended",
     "request_counts": {"processing": 0, "succeeded": 1}, "created_at": "2026-12-01T00:00:00Z",
     "expires_at": "2026-12-02T00:00:00Z"}),
    ("MessageBatch", "unix timestamp", {"id": "b", "type": "message_batch", "processing_status": "ended",
     "request_counts": {"processing": 0, "succeeded": 1, "errored": 0, "canceled": 0, "expired": 0},
     "created_at": 1764547200, "expires_at": "2026-12-02T00:00:00Z"}),
    ("MessageBatchIndividualResponse", "result type outside the enum",
     {"custom_id": "a", "result": {"type": "failed"}}),
    ("MessageBatchIndividualResponse", "cancelled spelt the British way",
     {"custom_id": "a", "result": {"type": "cancelled"}}),
    ("MessageBatchIndividualResponse", "OpenAI-style error",
     {"custom_id": "a", "result": {"type": "errored", "error": {"code": 400, "message": "x"}}}),
    ("ErrorResponse", "unknown error type", {"type": "error", "error": {"type": "weird_error", "message": "x"}}),
    ("ErrorResponse", "extra key", {"type": "error", "error": {"type": "api_error", "message": "x"}, "code": 5}),
    ("MessageBatchPage", "items not batches", {"data": [{"id": "x"}], "has_more": False}),
]


@pytest.mark.parametrize(("name", "label", "body"), BAD_ANSWERS, ids=[b[1] for b in BAD_ANSWERS])
def test_known_bad_answers_rejected(name: str, label: str, body: dict[str, Any]) -> None:
    assert conformance.violations(P, name, body), label


# --- the strict emulator refuses what the API refuses ----------------------------------------------


@pytest.mark.parametrize(("body", "needle"), [
    ({"requests": [_entry("a", "x")], "metadata": {"k": "v"}}, "metadata: Extra inputs are not permitted"),
    ({"requests": [{**_entry("a", "x"), "method": "POST"}]}, "requests.0.method: Extra inputs are not permitted"),
    ({"requests": [{"custom_id": "a b", "params": GOOD_PARAMS}]}, "requests.0.custom_id"),
    ({"requests": [{"custom_id": "a"}]}, "requests.0.params: Field required"),
])
def test_emulator_refuses_bad_envelope_at_create(emu: Emulator, body: dict[str, Any], needle: str) -> None:
    response = httpx.post(emu.base_url(P) + "/v1/messages/batches", headers=HEADERS, json=body, timeout=30)
    assert response.status_code == 400
    assert conformance.violations(P, "ErrorResponse", response.json()) == []
    assert response.json()["error"]["type"] == "invalid_request_error"
    assert needle in response.json()["error"]["message"]


@pytest.mark.parametrize(("label", "entry", "needle"), [
    ("unknown params key", _entry("e", "x", seed=1), "seed: Extra inputs are not permitted"),
    ("text part named like OpenAI's", {"custom_id": "e", "params": {**GOOD_PARAMS, "messages": [
        {"role": "user", "content": [{"type": "input_text", "text": "hi"}]}]}}, "messages.0"),
    ("stream in a batch", _entry("e", "x", stream=True), "stream"),
    ("bad enum", _entry("e", "x", service_tier="priority"), "service_tier"),
    ("temperature on Opus 4.8", _entry("e", "x", model=CURRENT, temperature=0.3),
     "`temperature` is deprecated for this model."),
    ("top_k on Sonnet 5", _entry("e", "x", model="claude-sonnet-5", top_k=3), "`top_k` is deprecated"),
    ("temperature with top_p on Haiku 4.5", _entry("e", "x", temperature=0.3, top_p=0.5),
     "cannot both be specified"),
    ("prefill on Opus 4.6", {"custom_id": "e", "params": {**GOOD_PARAMS, "model": "claude-opus-4-6",
                                                           "messages": PREFILL}}, "prefill"),
    ("max_tokens zero", _entry("e", "x", max_tokens=0), "max_tokens"),
])
def test_emulator_errors_bad_params_per_item(emu: Emulator, label: str, entry: dict[str, Any], needle: str) -> None:
    with _sync(emu) as http:
        created = http.post("/v1/messages/batches", json={"requests": [entry, _entry("fine", "x", temperature=0.2)]})
        assert created.status_code == 200, created.text  # params are validated asynchronously
        lines = _lines(http, _wait_ended(http, created.json()["id"]))
    assert lines["fine"]["result"]["type"] == "succeeded"
    result = lines["e"]["result"]
    assert result["type"] == "errored", label
    assert result["error"]["error"]["type"] == "invalid_request_error"
    assert needle in result["error"]["error"]["message"], result


async def test_errored_params_surface_as_row_errors(emu: Emulator) -> None:
    """What a user sees when a provider_options key the API does not know goes out: an errored row."""
    async with BatchClient({P: Credentials("k", emu.base_url(P))}) as client:
        job = await client.submit(f"anthropic/{SAMPLES_ONE}", [
            {"custom_id": "good", "prompt": "x"}, {"custom_id": "typo", "prompt": "x",
                                                   "provider_options": {"temprature": 0.1}}])
        await client.wait(job, poll_interval=0.05, timeout=60)
        items = {i.custom_id: i async for i in _aiter(client.results(job))}
    assert items["good"].status == "succeeded"
    assert items["typo"].status == "errored" and items["typo"].error_code == "invalid_request_error"
    assert "temprature: Extra inputs are not permitted" in (items["typo"].error_message or "")


async def _aiter(source: AsyncIterator[Any]) -> AsyncIterator[Any]:
    async for item in source:
        yield item
    await asyncio.sleep(0)


def test_schema_document_matches_the_installed_sdk() -> None:
    """Re-run the generator: a different SDK (after an upgrade) shows up here as drift to regenerate."""
    from tests.conformance.generators import anthropic as generator

    shipped = conformance.document(P)
    assert shipped["version"].startswith("anthropic ") and shipped["generated"] == "2026-12-01"
    drift.assert_current(P, generator.build(), shipped)


@pytest.mark.parametrize(("stop", "expected"), [
    ("end_turn", "stop"), ("max_tokens", "length"), ("stop_sequence", "stop"), ("tool_use", "tool_calls"),
    ("pause_turn", "other"), ("refusal", "content_filter"), ("model_context_window_exceeded", "length"),
])
def test_every_stop_reason_read(stop: str, expected: str) -> None:
    """Each SDK `StopReason`, in a line the schema accepts, read the same by both result parsers."""
    from airflow_batchwork.adapters.anthropic import parse_line, parse_results_chunk

    message = {"id": "msg_1", "type": "message", "role": "assistant", "model": SAMPLES_ONE, "stop_sequence": None,
               "content": [{"type": "text", "text": "hi", "citations": None}], "stop_reason": stop,
               "usage": {"input_tokens": 3, "output_tokens": 1}}
    line = {"custom_id": "a", "result": {"type": "succeeded", "message": message}}
    assert conformance.violations(P, "MessageBatchIndividualResponse", line) == []
    text = json.dumps(line)
    item = parse_line(text, "b1")
    assert item is not None and item.finish_reason == expected
    table = parse_results_chunk((text + "\n").encode(), "b1")
    assert table is not None and table.column("finish_reason").to_pylist() == [expected]
