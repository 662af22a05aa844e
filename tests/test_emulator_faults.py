"""Emulator fault knobs over real sockets: what a client sees for each fault, scoping, counting and the CLI."""

from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import pytest
from starlette.testclient import TestClient

from airflow_batchwork.core import BatchClient, Credentials
from airflow_batchwork.testing import Emulator
from airflow_batchwork.testing.emulator import build_app, build_parser, fault_config, main
from airflow_batchwork.testing.faults import VALIDATION_FAILURE_MESSAGE, FaultConfig, malformed_line
from airflow_batchwork.testing.store import Store

REPO_ROOT = Path(__file__).resolve().parent.parent
PROVIDERS = ["openai", "anthropic", "google", "groq", "mistral", "together", "xai"]
MODELS = {
    "openai": "openai/gpt-4o-mini",
    "anthropic": "anthropic/claude-haiku-4-5",
    "google": "google/gemini-2.5-flash",
    "groq": "groq/llama-3.3-70b-versatile",
    "mistral": "mistral/mistral-small-latest",
    "together": "together/meta-llama/Llama-3.3-70B-Instruct-Turbo",
    "xai": "xai/grok-4",
}
HEADERS = {
    "openai": {"Authorization": "Bearer k"},
    "anthropic": {"x-api-key": "k", "anthropic-version": "2023-06-01"},
    "google": {"x-goog-api-key": "k"},
    "groq": {"Authorization": "Bearer k"},
    "mistral": {"Authorization": "Bearer k"},
    "together": {"Authorization": "Bearer k"},
    "xai": {"Authorization": "Bearer k"},
}
# A GET that lists batches, per provider (relative to the base URL).
LIST_PATHS = {
    "openai": "/batches",
    "anthropic": "/v1/messages/batches",
    "google": "/v1beta/batches",
    "groq": "/openai/v1/batches",
    "mistral": "/v1/batch/jobs",
    "together": "/batches",
    "xai": "/batches",
}
CHAT: dict[str, Any] = {"model": "m", "messages": [{"role": "user", "content": "hello world"}]}


def claude_requests(count: int) -> list[Any]:
    return [{"custom_id": f"r{i}", "params": {"model": "m", "max_tokens": 10,
                                              "messages": [{"role": "user", "content": f"request {i}"}]}}
            for i in range(1, count + 1)]


def url(emu: Emulator, provider: str, path: str) -> str:
    return emu.base_url(provider) + path


def get_list(emu: Emulator, provider: str) -> httpx.Response:
    return httpx.get(url(emu, provider, LIST_PATHS[provider]), headers=HEADERS[provider])


def chat_lines(count: int) -> bytes:
    lines = [
        {"custom_id": f"r{i}", "method": "POST", "url": "/v1/chat/completions",
         "body": {**CHAT, "messages": [{"role": "user", "content": f"request {i}"}]}}
        for i in range(1, count + 1)
    ]
    return "".join(json.dumps(line) + "\n" for line in lines).encode()


def wait_until(predicate: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.05)


# -- 1. rate limits, scoping and counting ---------------------------------------------------------


def test_rate_limit_targets_one_provider_and_is_counted() -> None:
    with Emulator(faults=FaultConfig(rate_limit_every=1, retry_after_seconds=7, providers="groq")) as emu:
        assert get_list(emu, "openai").status_code == 200
        limited = get_list(emu, "groq")
        assert limited.status_code == 429
        assert limited.headers["retry-after"] == "7"
        assert limited.json()["error"]["code"] == "rate_limit_exceeded"
        assert [r.fault for r in emu.requests] == [None, "rate_limit"]
        assert emu.fault_counts() == {"groq": {"rate_limit": 1}}


def test_per_provider_configs_and_aliases() -> None:
    faults = FaultConfig(rate_limit_every=1, per_provider={"gemini": FaultConfig(server_error_every=1)})
    with Emulator(faults=faults) as emu:
        assert get_list(emu, "anthropic").status_code == 429
        answer = get_list(emu, "google")  # `gemini` names the provider registered as `google`
        assert answer.status_code == 500 and answer.json()["error"]["status"] == "INTERNAL"
        assert emu.fault_counts("gemini") == {"google": {"server_error": 1}}
    with pytest.raises(ValueError, match="unknown provider"):
        Emulator(faults=FaultConfig(providers={"openia"}))


# -- 2. 5xx ---------------------------------------------------------------------------------------


def test_server_errors_cycle_500_502_503_with_provider_bodies() -> None:
    with Emulator(faults=FaultConfig(server_error_every=1)) as emu:
        answers = [get_list(emu, "openai") for _ in range(4)]
        assert [a.status_code for a in answers] == [500, 502, 503, 500]
        assert {a.json()["error"]["type"] for a in answers} == {"server_error"}
        assert all(a.headers["x-request-id"] for a in answers)

        claude = [get_list(emu, "anthropic") for _ in range(3)]
        assert [a.status_code for a in claude] == [500, 502, 503]  # counters are per provider
        assert all(a.json()["type"] == "error" and a.json()["error"]["type"] == "api_error" for a in claude)

        gemini = [get_list(emu, "google").json()["error"] for _ in range(3)]
        assert [(e["code"], e["status"]) for e in gemini] == [(500, "INTERNAL"), (502, "INTERNAL"),
                                                              (503, "UNAVAILABLE")]

        client = openai.OpenAI(base_url=emu.base_url("openai"), api_key="k", max_retries=0)
        with pytest.raises(openai.InternalServerError) as info:
            client.batches.list()  # the 5th openai request: 502
        assert info.value.status_code == 502
        assert [r.status_code for r in emu.requests if r.provider == "openai"] == [500, 502, 503, 500, 502]
        assert emu.fault_counts()["openai"] == {"server_error": 5}


# -- 3. dropped connections ------------------------------------------------------------------------


def test_dropped_connection_is_a_transport_error() -> None:
    with Emulator(faults=FaultConfig(drop_connection_every=2)) as emu:
        assert get_list(emu, "openai").status_code == 200
        with pytest.raises(httpx.RemoteProtocolError, match="without sending complete message body"):
            get_list(emu, "openai")
        assert get_list(emu, "openai").status_code == 200
        client = openai.OpenAI(base_url=emu.base_url("openai"), api_key="k", max_retries=0)
        with pytest.raises(openai.APIConnectionError):
            client.batches.list()
        # The record exists as soon as the client sees the error; the status line had been sent.
        assert [(r.status_code, r.fault) for r in emu.requests] == [
            (200, None), (200, "drop_connection"), (200, None), (200, "drop_connection")
        ]


def test_dropped_connection_sends_headers_and_half_the_body_then_closes() -> None:
    with (
        Emulator(faults=FaultConfig(drop_connection_every=1)) as emu,
        socket.create_connection(("127.0.0.1", emu.port), timeout=10) as sock,
    ):
        sock.sendall(b"GET /openai/v1/batches HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer k\r\n\r\n")
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    headers = dict(line.split(b": ", 1) for line in head.split(b"\r\n")[1:])
    assert 0 < len(body) < int(headers[b"content-length"])


def test_dropped_connection_mid_results_stream() -> None:
    with Emulator(processing_seconds=0.2) as emu:
        claude = anthropic.Anthropic(base_url=emu.base_url("anthropic"), api_key="k", max_retries=0)
        batch = claude.messages.batches.create(requests=claude_requests(3))
        wait_until(lambda: claude.messages.batches.retrieve(batch.id).processing_status == "ended")
        emu.faults = FaultConfig(drop_connection_every=1, providers=["anthropic"])
        with pytest.raises(httpx.RemoteProtocolError):
            httpx.get(url(emu, "anthropic", f"/v1/messages/batches/{batch.id}/results"), headers=HEADERS["anthropic"])
        assert emu.requests[-1].fault == "drop_connection"


# -- 4. the ambiguous submit: created, answer lost -------------------------------------------------


def create_batch(emu: Emulator, provider: str, tag: str) -> httpx.Response:
    """Create a one-request batch with ``tag`` as its metadata (or the nearest thing the provider has)."""
    headers = HEADERS[provider]
    if provider in ("openai", "groq", "together"):
        files, batches = {"openai": ("/files", "/batches"), "groq": ("/openai/v1/files", "/openai/v1/batches"),
                          "together": ("/files/upload", "/batches")}[provider]
        form = {"purpose": "batch-api", "file_name": "in.jsonl"} if provider == "together" else {"purpose": "batch"}
        upload = httpx.post(url(emu, provider, files), headers=headers, data=form,
                            files={"file": ("in.jsonl", chat_lines(1))})
        body: dict[str, Any] = {"input_file_id": upload.json()["id"], "endpoint": "/v1/chat/completions",
                                "completion_window": "24h"}
        if provider != "together":
            body["metadata"] = {"tag": tag}
        return httpx.post(url(emu, provider, batches), headers=headers, json=body)
    if provider == "anthropic":
        body = {"requests": [{"custom_id": "r1", "params": {**CHAT, "max_tokens": 10}}]}
        return httpx.post(url(emu, provider, "/v1/messages/batches"), headers=headers, json=body)
    if provider == "google":
        entry = {"request": {"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}, "metadata": {"key": "r1"}}
        body = {"batch": {"displayName": tag, "inputConfig": {"requests": {"requests": [entry]}}}}
        return httpx.post(url(emu, provider, "/v1beta/models/m:batchGenerateContent"), headers=headers, json=body)
    if provider == "mistral":
        body = {"model": "m", "endpoint": "/v1/chat/completions", "metadata": {"tag": tag},
                "requests": [{"custom_id": "r1", "body": CHAT}]}
        return httpx.post(url(emu, provider, "/v1/batch/jobs"), headers=headers, json=body)
    assert provider == "xai"
    return httpx.post(url(emu, provider, "/batches"), headers=headers, json={"name": tag})


def listed(emu: Emulator, provider: str) -> list[tuple[str, Any]]:
    """(id, tag) of every batch the provider's list endpoint returns."""
    body = get_list(emu, provider).json()
    if provider in ("openai", "groq", "mistral"):
        return [(b["id"], (b["metadata"] or {}).get("tag")) for b in body["data"]]
    if provider == "anthropic":
        return [(b["id"], None) for b in body["data"]]
    if provider == "google":
        return [(op["name"], op["metadata"]["displayName"]) for op in body["operations"]]
    if provider == "together":
        return [(b["id"], None) for b in body]
    return [(b["batch_id"], b["name"]) for b in body["batches"]]


@pytest.mark.parametrize("provider", PROVIDERS)
def test_lost_create_response_still_creates_the_batch(provider: str) -> None:
    with Emulator(faults=FaultConfig(lose_create_response_every=2, providers=[provider])) as emu:
        assert create_batch(emu, provider, "first").status_code in (200, 201)
        with pytest.raises(httpx.RemoteProtocolError, match="without sending a response"):
            create_batch(emu, provider, "second")
        created = emu.batches(provider)
        assert len(created) == 2
        with_tag = {"anthropic": None, "together": None}.get(provider, "second")
        assert (created[-1].id, with_tag) in listed(emu, provider)
        if with_tag is not None and provider != "google":
            assert created[-1].metadata.get("tag", created[-1].metadata.get("name")) == "second"
        [lost] = [r for r in emu.requests if r.fault]
        assert (lost.method, lost.status_code, lost.fault) == ("POST", 0, "lose_create_response")
        assert emu.fault_counts(provider) == {emu.batches(provider)[0].provider: {"lose_create_response": 1}}


def test_lost_create_response_with_the_openai_sdk_sends_no_byte() -> None:
    with Emulator(faults=FaultConfig(lose_create_response_every=1)) as emu:
        client = openai.OpenAI(base_url=emu.base_url("openai"), api_key="k", max_retries=0)
        upload = client.files.create(file=("in.jsonl", io.BytesIO(chat_lines(2))), purpose="batch")
        with pytest.raises(openai.APIConnectionError):
            client.batches.create(input_file_id=upload.id, endpoint="/v1/chat/completions",
                                  completion_window="24h", metadata={"idempotency": "job-1"})
        [batch] = emu.batches("openai")
        assert batch.metadata == {"idempotency": "job-1"}
        assert [b.metadata for b in client.batches.list()] == [{"idempotency": "job-1"}]

        body = json.dumps({"input_file_id": upload.id, "endpoint": "/v1/chat/completions",
                           "completion_window": "24h"}).encode()
        with socket.create_connection(("127.0.0.1", emu.port), timeout=10) as sock:
            sock.sendall(b"POST /openai/v1/batches HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer k\r\n"
                         b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
            assert sock.recv(65536) == b""  # closed before any response byte
        assert len(emu.batches("openai")) == 2


def test_under_another_asgi_server_a_lost_create_answer_is_a_502() -> None:
    store = Store(processing_seconds=0.1)
    app = build_app(store, FaultConfig(lose_create_response_every=1))
    body = {"model": "m", "endpoint": "/v1/chat/completions", "requests": [{"custom_id": "r1", "body": CHAT}]}
    with TestClient(app) as client:  # no socket to close: the fallback answer
        answer = client.post("/mistral/v1/batch/jobs", headers=HEADERS["mistral"], json=body)
    assert answer.status_code == 502 and answer.json()["object"] == "error"
    assert len(store.batches("mistral")) == 1
    assert [(r.status_code, r.fault) for r in store.requests] == [(502, "lose_create_response")]


# -- 5. truncated and malformed result lines ------------------------------------------------------


def check_damaged_lines(lines: list[str], ids: list[str]) -> None:
    """Six result lines with truncate_results_every=2 and malformed_results_every=3."""
    assert len(lines) == len(ids) == 6
    for position, (line, custom_id) in enumerate(zip(lines, ids, strict=True), start=1):
        if position in (3, 6):
            with pytest.raises(ValueError):
                json.loads(line)
            assert line == malformed_line(position, 3, custom_id)
            assert (custom_id in line) == (position == 3)  # the 1st malformed line keeps its id, the 2nd not
        elif position in (2, 4):
            with pytest.raises(ValueError):
                json.loads(line)
            assert f'"custom_id":"{custom_id}"' in line or custom_id in line
        else:
            assert json.loads(line)["custom_id"] == custom_id


DAMAGE = FaultConfig(truncate_results_every=2, malformed_results_every=3)


def test_openai_result_file_is_damaged_on_download_only() -> None:
    with Emulator(processing_seconds=0.2) as emu:
        client = openai.OpenAI(base_url=emu.base_url("openai"), api_key="k", max_retries=0)
        upload = client.files.create(file=("in.jsonl", io.BytesIO(chat_lines(6))), purpose="batch")
        batch = client.batches.create(input_file_id=upload.id, endpoint="/v1/chat/completions",
                                      completion_window="24h")
        wait_until(lambda: client.batches.retrieve(batch.id).status == "completed")
        output_file_id = client.batches.retrieve(batch.id).output_file_id
        assert output_file_id
        emu.faults = DAMAGE
        damaged = client.files.content(output_file_id).text
        check_damaged_lines(damaged.splitlines(), [f"r{i}" for i in range(1, 7)])
        assert client.files.content(upload.id).content == chat_lines(6)  # input files are never damaged
        assert emu.requests[-2].faults == ("truncate_results", "malformed_results")
        assert emu.fault_counts("openai") == {"openai": {"truncate_results": 2, "malformed_results": 2}}
        emu.faults = FaultConfig()
        clean = client.files.content(output_file_id).text.splitlines()
        assert [json.loads(line)["custom_id"] for line in clean] == [f"r{i}" for i in range(1, 7)]


def test_anthropic_results_stream_is_damaged() -> None:
    with Emulator(processing_seconds=0.2, faults=DAMAGE) as emu:
        claude = anthropic.Anthropic(base_url=emu.base_url("anthropic"), api_key="k", max_retries=0)
        batch = claude.messages.batches.create(requests=claude_requests(6))
        wait_until(lambda: claude.messages.batches.retrieve(batch.id).processing_status == "ended")
        answer = httpx.get(url(emu, "anthropic", f"/v1/messages/batches/{batch.id}/results"),
                           headers=HEADERS["anthropic"])
        check_damaged_lines(answer.text.splitlines(), [f"r{i}" for i in range(1, 7)])
        assert emu.requests[-1].faults == ("truncate_results", "malformed_results")


def test_together_result_file_is_damaged() -> None:
    faults = FaultConfig(truncate_results_every=2, malformed_results_every=3, providers={"together"})
    with Emulator(processing_seconds=0.2, faults=faults) as emu:
        assert create_batch(emu, "together", "t").status_code == 201
        [batch] = emu.batches("together")
        headers = HEADERS["together"]
        wait_until(lambda: httpx.get(url(emu, "together", f"/batches/{batch.id}"), headers=headers)
                   .json()["status"] == "COMPLETED")
        output = httpx.get(url(emu, "together", f"/batches/{batch.id}"), headers=headers).json()["output_file_id"]
        # A one-request file has one line: nothing to damage at positions 2 and 3.
        content = httpx.get(url(emu, "together", f"/files/{output}/content"), headers=headers).text
        assert json.loads(content)["custom_id"] == "r1"
        upload = httpx.post(url(emu, "together", "/files/upload"), headers=headers,
                            data={"purpose": "batch-api", "file_name": "six.jsonl"},
                            files={"file": ("six.jsonl", chat_lines(6))}).json()
        created = httpx.post(url(emu, "together", "/batches"), headers=headers,
                             json={"input_file_id": upload["id"], "endpoint": "/v1/chat/completions"}).json()
        job = created["job"]["id"]
        wait_until(lambda: httpx.get(url(emu, "together", f"/batches/{job}"), headers=headers)
                   .json()["status"] == "COMPLETED")
        output = httpx.get(url(emu, "together", f"/batches/{job}"), headers=headers).json()["output_file_id"]
        content = httpx.get(url(emu, "together", f"/files/{output}/content"), headers=headers).text
        check_damaged_lines(content.splitlines(), [f"r{i}" for i in range(1, 7)])


def test_xai_results_page_entries_lose_their_result() -> None:
    with Emulator(processing_seconds=0.2, faults=DAMAGE) as emu:
        headers = HEADERS["xai"]
        batch_id = create_batch(emu, "xai", "pages").json()["batch_id"]
        requests = [{"batch_request_id": f"r{i}", "batch_request": {"chat_get_completion": CHAT}} for i in range(1, 7)]
        added = httpx.post(url(emu, "xai", f"/batches/{batch_id}/requests"), headers=headers,
                           json={"batch_requests": requests})
        assert added.status_code == 200
        results = url(emu, "xai", f"/batches/{batch_id}/results")
        wait_until(lambda: len(httpx.get(results, headers=headers).json()["results"]) == 6)
        first = httpx.get(results, headers=headers, params={"limit": 4}).json()
        second = httpx.get(results, headers=headers,
                           params={"limit": 4, "pagination_token": first["pagination_token"]}).json()
        entries = first["results"] + second["results"]
    # Positions count over the whole result list, across pages.
    assert entries[1] == {"batch_request_id": "r2"} and entries[3] == {"batch_request_id": "r4"}
    assert entries[2] == malformed_line(3, 3, "r3") and "r3" in entries[2]
    assert entries[5] == malformed_line(6, 3, "r6") and "r6" not in entries[5]
    assert [e["batch_request_id"] for e in (entries[0], entries[4])] == ["r1", "r5"]
    assert "batch_result" in entries[0] and "batch_result" in entries[4]


def test_gemini_inline_responses_and_mistral_outputs_are_damaged() -> None:
    with Emulator(processing_seconds=0.2, faults=FaultConfig(truncate_results_every=2)) as emu:
        entries = [{"request": {"contents": [{"parts": [{"text": f"q{i}"}]}]}, "metadata": {"key": f"r{i}"}}
                   for i in range(1, 4)]
        body = {"batch": {"displayName": "d", "inputConfig": {"requests": {"requests": entries}}}}
        name = httpx.post(url(emu, "google", "/v1beta/models/m:batchGenerateContent"), headers=HEADERS["google"],
                          json=body).json()["name"]
        operation = url(emu, "google", f"/v1beta/{name}")
        wait_until(lambda: httpx.get(operation, headers=HEADERS["google"]).json().get("done") is True)
        inlined = httpx.get(operation, headers=HEADERS["google"]).json()["response"]["inlinedResponses"]
        assert inlined["inlinedResponses"][1] == {"metadata": {"key": "r2"}}  # no response, no error
        assert "response" in inlined["inlinedResponses"][0] and "response" in inlined["inlinedResponses"][2]

        jobs = url(emu, "mistral", "/v1/batch/jobs")
        job = httpx.post(jobs, headers=HEADERS["mistral"], json={
            "model": "m", "endpoint": "/v1/chat/completions",
            "requests": [{"custom_id": f"r{i}", "body": CHAT} for i in range(1, 4)]}).json()["id"]
        wait_until(lambda: httpx.get(f"{jobs}/{job}", headers=HEADERS["mistral"]).json()["status"] == "SUCCESS")
        outputs = httpx.get(f"{jobs}/{job}", headers=HEADERS["mistral"], params={"inline": "true"}).json()["outputs"]
        assert set(outputs[1]) == {"id", "custom_id"} and outputs[1]["custom_id"] == "r2"
        assert outputs[0]["response"]["status_code"] == 200


# -- 6. validation failure ------------------------------------------------------------------------

THREE = [{"custom_id": f"r{i}", "prompt": f"question {i}"} for i in range(1, 4)]
FOUR = [{"custom_id": f"r{i}", "prompt": f"question {i}"} for i in range(1, 5)]


def client_for(emu: Emulator, provider: str) -> BatchClient:
    return BatchClient({provider: Credentials("k", emu.base_url(provider))})


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_fail_validation_per_provider(provider: str) -> None:
    others = [p for p in PROVIDERS if p != provider]
    with Emulator(processing_seconds=0.3, faults=FaultConfig(fail_validation=True, providers=[provider])) as emu:
        async with client_for(emu, provider) as client:
            job = await client.submit(MODELS[provider], THREE)
            final = await client.wait(job, poll_interval=0.05, timeout=30)
        namespace = "xai.requests" if provider == "xai" else provider
        [batch] = emu.batches(namespace)
        counts = emu.fault_counts()
    assert counts == {provider: {"fail_validation": 1}} and not set(others) & set(counts)
    if provider == "anthropic":
        # Message Batches have no failed state: the batch ends with every request errored.
        assert final.state == "completed" and final.counts.errored == 3 and final.counts.succeeded == 0
        assert batch.phase == "ended" and {r.outcome for r in batch.results or ()} == {"errored"}
        assert all(r.line["result"]["error"]["error"]["message"] == VALIDATION_FAILURE_MESSAGE
                   for r in batch.results or ())
    else:
        assert final.state == "failed", final
        assert batch.phase == "failed" and batch.results == () and batch.request_count == 0
        assert [e.code for e in batch.errors] == ["validation_failed"]
        message = final.batches[0].error_message or ""
        assert "fail_validation" in message, final


def test_fail_validation_on_the_openai_wire() -> None:
    with Emulator(processing_seconds=0.2, faults=FaultConfig(fail_validation=True)) as emu:
        client = openai.OpenAI(base_url=emu.base_url("openai"), api_key="k", max_retries=0)
        upload = client.files.create(file=("in.jsonl", io.BytesIO(chat_lines(2))), purpose="batch")
        batch = client.batches.create(input_file_id=upload.id, endpoint="/v1/chat/completions",
                                      completion_window="24h")
        wait_until(lambda: client.batches.retrieve(batch.id).status == "failed")
        failed = client.batches.retrieve(batch.id)
        assert failed.errors and failed.errors.data and failed.errors.data[0].code == "validation_failed"
        assert failed.output_file_id is None and failed.error_file_id is None
        assert failed.request_counts and failed.request_counts.total == 0
        assert [r.fault for r in emu.requests if r.method == "POST"] == [None, "fail_validation"]


# -- 7. expiry with partial results ---------------------------------------------------------------


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_expire_partial_per_provider(provider: str) -> None:
    with Emulator(processing_seconds=0.3, faults=FaultConfig(expire_partial=True)) as emu:
        async with client_for(emu, provider) as client:
            job = await client.submit(MODELS[provider], FOUR)
            final = await client.wait(job, poll_interval=0.05, timeout=30)
            rows = {row.custom_id: row.status async for row in client.results(job)}
        namespace = "xai.requests" if provider == "xai" else provider
        [batch] = emu.batches(namespace)
    assert (batch.counts.succeeded, batch.counts.expired) == (2, 2)
    assert [r.outcome for r in batch.results or ()] == ["succeeded", "succeeded", "expired", "expired"]
    assert batch.phase == "expired"
    # Message Batches have no expired state: the batch is `ended`, with expired results.
    assert final.state == ("completed" if provider == "anthropic" else "expired"), final
    if provider == "google":
        assert rows == {}  # an expired Gemini batch has no results at all, as on the real API
    else:
        assert {k: v for k, v in rows.items() if v == "succeeded"} == {"r1": "succeeded", "r2": "succeeded"}
        assert rows.get("r3", "expired") == rows.get("r4", "expired") == "expired"


def test_expire_partial_on_the_openai_wire() -> None:
    with Emulator(processing_seconds=0.3, faults=FaultConfig(expire_partial=True)) as emu:
        client = openai.OpenAI(base_url=emu.base_url("openai"), api_key="k", max_retries=0)
        upload = client.files.create(file=("in.jsonl", io.BytesIO(chat_lines(5))), purpose="batch")
        batch = client.batches.create(input_file_id=upload.id, endpoint="/v1/chat/completions",
                                      completion_window="24h")
        wait_until(lambda: client.batches.retrieve(batch.id).status == "expired")
        done = client.batches.retrieve(batch.id)
        assert done.request_counts and (done.request_counts.completed, done.request_counts.failed) == (2, 3)
        assert done.output_file_id and done.error_file_id
        output = [json.loads(line) for line in client.files.content(done.output_file_id).text.splitlines()]
        errors = [json.loads(line) for line in client.files.content(done.error_file_id).text.splitlines()]
    assert [line["custom_id"] for line in output] == ["r1", "r2"]
    assert [(line["custom_id"], line["error"]["code"]) for line in errors] == [
        ("r3", "batch_expired"), ("r4", "batch_expired"), ("r5", "batch_expired")
    ]


# -- 8. slow responses ----------------------------------------------------------------------------


def test_slow_responses_are_delayed_without_blocking_the_server() -> None:
    with Emulator(faults=FaultConfig(slow_seconds=2.0, providers="openai")) as emu:
        finished: list[float] = []

        def slow_call() -> None:
            assert get_list(emu, "openai").status_code == 200
            finished.append(time.monotonic())

        started = time.monotonic()
        thread = threading.Thread(target=slow_call)
        thread.start()
        assert get_list(emu, "anthropic").status_code == 200  # served while the slow answer waits
        assert not finished
        thread.join(30)
        assert finished and finished[0] - started >= 1.9
        openai_record = next(r for r in emu.requests if r.provider == "openai")
        assert openai_record.fault == "slow"

        emu.faults = FaultConfig(slow_seconds=0.3, rate_limit_every=1)
        started = time.monotonic()
        assert get_list(emu, "openai").status_code == 429
        assert time.monotonic() - started >= 0.25
        assert emu.requests[-1].faults == ("slow", "rate_limit")


# -- defaults, the CLI ----------------------------------------------------------------------------


def test_defaults_inject_nothing_and_bind_loopback() -> None:
    assert not FaultConfig().active and FaultConfig().describe() == "none"
    emu = Emulator()
    assert emu.host == "127.0.0.1" and emu.faults == FaultConfig()
    assert build_parser().parse_args([]).host == "127.0.0.1"
    with pytest.raises(ValueError, match=">= 0"):
        FaultConfig(rate_limit_every=-1)


def test_cli_flags_parse_into_a_fault_config() -> None:
    args = build_parser().parse_args([
        "--rate-limit-every", "5", "--retry-after-seconds", "2", "--server-error-every", "7",
        "--drop-connection-every", "11", "--lose-create-response-every", "3", "--truncate-results-every", "4",
        "--malformed-results-every", "6", "--fail-validation", "--expire-partial", "--slow-seconds", "0.5",
        "--providers", "openai,gemini",
    ])
    assert fault_config(args) == FaultConfig(
        rate_limit_every=5, retry_after_seconds=2, server_error_every=7, drop_connection_every=11,
        lose_create_response_every=3, truncate_results_every=4, malformed_results_every=6,
        fail_validation=True, expire_partial=True, slow_seconds=0.5, providers={"openai", "gemini"},
    )
    assert fault_config(build_parser().parse_args([])) == FaultConfig()
    with pytest.raises(SystemExit):
        main(["--providers", "openai,nope"])
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--drop-connection-every", "-1"])


def test_cli_serves_with_faults() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")])}
    process = subprocess.Popen(
        [sys.executable, "-m", "airflow_batchwork.testing.emulator", "--port", str(port),
         "--rate-limit-every", "1", "--providers", "groq"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )
    try:
        assert process.stdout is not None
        banner = [process.stdout.readline() for _ in range(9)]
        assert banner[-1].strip() == "faults: rate_limit_every=1, retry_after_seconds=1, providers=groq"
        base = f"http://127.0.0.1:{port}"
        assert httpx.get(base + "/groq/openai/v1/batches", headers=HEADERS["groq"]).status_code == 429
        assert httpx.get(base + "/openai/v1/batches", headers=HEADERS["openai"]).status_code == 200
    finally:
        process.terminate()
        process.wait(10)
