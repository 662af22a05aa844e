"""The emulator's Anthropic routes, driven over real sockets by the official ``anthropic`` SDK."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import anthropic
import httpx
import pytest
from anthropic.types import Message
from anthropic.types.messages import MessageBatch, MessageBatchIndividualResponse

from airflow_batchwork.testing import Emulator

HEADERS = {"x-api-key": "test", "anthropic-version": "2023-06-01"}


@pytest.fixture
def emu() -> Iterator[Emulator]:
    with Emulator(processing_seconds=0.2) as emulator:
        yield emulator


@pytest.fixture
def client(emu: Emulator) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=emu.base_url("anthropic"), api_key="test", max_retries=0)


def _request(custom_id: str, text: str, **params: Any) -> dict[str, Any]:
    body = {"model": "claude-haiku-4-5", "max_tokens": 64, "messages": [{"role": "user", "content": text}]}
    return {"custom_id": custom_id, "params": {**body, **params}}


def _wait(
    client: anthropic.Anthropic, batch_id: str, timeout: float = 10.0
) -> tuple[MessageBatch, list[str]]:
    """Poll until ended; returns the final batch (validated strictly) and every status seen."""
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while True:
        raw = client.messages.batches.with_raw_response.retrieve(batch_id)
        batch = MessageBatch.model_validate(raw.json())
        if not seen or seen[-1] != batch.processing_status:
            seen.append(batch.processing_status)
        if batch.processing_status == "ended":
            return batch, seen
        assert time.monotonic() < deadline, f"batch stuck in {batch.processing_status}"
        time.sleep(0.02)


def _results(client: anthropic.Anthropic, batch_id: str) -> dict[str, MessageBatchIndividualResponse]:
    results = {r.custom_id: r for r in client.messages.batches.results(batch_id)}
    for result in results.values():
        assert isinstance(result, MessageBatchIndividualResponse)
    return results


def test_round_trip_with_every_result_type(emu: Emulator, client: anthropic.Anthropic) -> None:
    requests = [
        _request("plain", "hello there"),
        _request(
            "blocks",
            "unused",
            system=[{"type": "text", "text": "be very brief"}],
            messages=[
                {"role": "user", "content": [{"type": "text", "text": "first"}]},
                {"role": "assistant", "content": "ok"},
                {
                    "role": "user",
                    "content": [{"type": "text", "text": "second"}, {"type": "text", "text": "part"}],
                },
            ],
        ),
        _request("short", "one two three", max_tokens=2),
        _request("bad", "boom [[error]]"),
        _request("late", "slow [[expire]]"),
    ]
    created = client.messages.batches.create(requests=requests)  # type: ignore[arg-type]
    assert created.id.startswith("msgbatch_")
    assert created.processing_status == "in_progress"
    assert created.results_url is None
    assert created.request_counts.processing == 5

    batch, seen = _wait(client, created.id)
    assert seen[-1] == "ended" and set(seen) <= {"in_progress", "ended"}
    counts = batch.request_counts
    assert counts.model_dump() == {"processing": 0, "succeeded": 3, "errored": 1, "expired": 1, "canceled": 0}
    assert batch.ended_at is not None and batch.ended_at >= batch.created_at
    assert (batch.expires_at - batch.created_at).total_seconds() == 24 * 3600
    assert batch.results_url == f"{emu.base_url('anthropic')}/v1/messages/batches/{batch.id}/results"

    results = _results(client, batch.id)
    assert set(results) == {"plain", "blocks", "short", "bad", "late"}
    plain = results["plain"].result
    assert plain.type == "succeeded"
    message = Message.model_validate(plain.message.model_dump())
    assert message.content[0].type == "text" and message.content[0].text == "echo: hello there"
    assert message.stop_reason == "end_turn"
    assert (message.usage.input_tokens, message.usage.output_tokens) == (2, 3)
    assert message.model == "claude-haiku-4-5"

    blocks = results["blocks"].result
    assert blocks.type == "succeeded"
    assert blocks.message.content[0].text == "echo: second\npart"  # type: ignore[union-attr]
    assert blocks.message.usage.input_tokens == 3 + 1 + 1 + 2

    short = results["short"].result
    assert short.type == "succeeded"
    assert short.message.stop_reason == "max_tokens"
    assert short.message.content[0].text == "echo: one"  # type: ignore[union-attr]
    assert short.message.usage.output_tokens == 2

    bad = results["bad"].result
    assert bad.type == "errored"
    assert bad.error.type == "error"
    assert bad.error.error.type == "invalid_request_error"
    assert bad.error.request_id
    assert results["late"].result.type == "expired"

    [stored] = emu.batches("anthropic")
    assert (stored.id, stored.request_count, stored.model) == (batch.id, 5, "claude-haiku-4-5")


def test_results_stream_is_jsonl(emu: Emulator, client: anthropic.Anthropic) -> None:
    batch = client.messages.batches.create(requests=[_request("a", "x"), _request("b", "y")])  # type: ignore[list-item]
    batch, _ = _wait(client, batch.id)
    assert batch.results_url is not None
    response = httpx.get(batch.results_url, headers=HEADERS)
    assert response.status_code == 200
    assert response.headers["request-id"].startswith("req_")
    lines = [json.loads(line) for line in response.text.splitlines()]
    assert {line["custom_id"] for line in lines} == {"a", "b"}
    assert all(line["result"]["type"] == "succeeded" for line in lines)


def test_list_paginates_newest_first(emu: Emulator, client: anthropic.Anthropic) -> None:
    ids = [client.messages.batches.create(requests=[_request("a", "x")]).id for _ in range(5)]  # type: ignore[list-item]
    first = client.messages.batches.list(limit=2)
    assert [b.id for b in first.data] == ids[::-1][:2]
    assert first.has_more is True
    assert (first.first_id, first.last_id) == (ids[4], ids[3])
    assert [b.id for b in client.messages.batches.list(limit=2)] == ids[::-1]

    url = emu.base_url("anthropic") + "/v1/messages/batches"
    after = httpx.get(url, params={"limit": 2, "after_id": ids[1]}, headers=HEADERS).json()
    assert [b["id"] for b in after["data"]] == [ids[0]] and after["has_more"] is False
    before = httpx.get(url, params={"limit": 2, "before_id": ids[1]}, headers=HEADERS).json()
    assert [b["id"] for b in before["data"]] == [ids[3], ids[2]] and before["has_more"] is True


def test_cancel_marks_unfinished_requests_canceled(emu: Emulator, client: anthropic.Anthropic) -> None:
    emu.processing_seconds = 5.0
    created = client.messages.batches.create(requests=[_request(f"r{i}", "hi") for i in range(3)])  # type: ignore[misc]
    canceling = client.messages.batches.cancel(created.id)
    assert canceling.processing_status == "canceling"
    assert canceling.cancel_initiated_at is not None

    batch, seen = _wait(client, created.id)
    assert seen[-1] == "ended"
    assert batch.request_counts.canceled == 3
    assert {r.result.type for r in _results(client, batch.id).values()} == {"canceled"}


def test_delete(client: anthropic.Anthropic) -> None:
    created = client.messages.batches.create(requests=[_request("a", "x")])  # type: ignore[list-item]
    with pytest.raises(anthropic.BadRequestError):
        client.messages.batches.delete(created.id)
    _wait(client, created.id)
    deleted = client.messages.batches.delete(created.id)
    assert (deleted.id, deleted.type) == (created.id, "message_batch_deleted")
    with pytest.raises(anthropic.NotFoundError):
        client.messages.batches.retrieve(created.id)


def test_results_before_end_are_refused(emu: Emulator, client: anthropic.Anthropic) -> None:
    emu.processing_seconds = 5.0
    created = client.messages.batches.create(requests=[_request("a", "x")])  # type: ignore[list-item]
    response = httpx.get(
        f"{emu.base_url('anthropic')}/v1/messages/batches/{created.id}/results", headers=HEADERS
    )
    assert response.status_code == 400
    body = response.json()
    assert body["type"] == "error" and body["error"]["type"] == "invalid_request_error"
    with pytest.raises(anthropic.AnthropicError):
        client.messages.batches.results(created.id)


def test_auth_and_version_headers(emu: Emulator) -> None:
    bad = anthropic.Anthropic(base_url=emu.base_url("anthropic"), api_key="invalid", max_retries=0)
    with pytest.raises(anthropic.AuthenticationError):
        bad.messages.batches.list()

    url = emu.base_url("anthropic") + "/v1/messages/batches"
    for headers in (
        {"anthropic-version": "2023-06-01"},
        {"x-api-key": "", "anthropic-version": "2023-06-01"},
    ):
        response = httpx.get(url, headers=headers)
        assert response.status_code == 401
        body = response.json()
        assert body["type"] == "error" and body["error"]["type"] == "authentication_error"
        assert body["request_id"] == response.headers["request-id"]
    missing_version = httpx.get(url, headers={"x-api-key": "test"})
    assert missing_version.status_code == 400
    assert missing_version.json()["error"]["type"] == "invalid_request_error"


def test_unknown_batch_is_404(client: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.NotFoundError) as info:
        client.messages.batches.retrieve("msgbatch_nope")
    assert info.value.body["error"]["type"] == "not_found_error"  # type: ignore[index]
    with pytest.raises(anthropic.NotFoundError):
        client.messages.batches.cancel("msgbatch_nope")


@pytest.mark.parametrize(
    "requests",
    [
        [_request("has space", "x")],
        [_request("x" * 65, "x")],
        [_request("dup", "x"), _request("dup", "y")],
        [{"custom_id": "a", "params": {"model": "m", "messages": []}}],
        [],
    ],
    ids=["bad-char", "too-long", "duplicate", "missing-max-tokens", "empty"],
)
def test_invalid_requests_are_400(client: anthropic.Anthropic, requests: list[dict[str, Any]]) -> None:
    with pytest.raises(anthropic.BadRequestError) as info:
        client.messages.batches.create(requests=requests)  # type: ignore[arg-type]
    assert info.value.body["error"]["type"] == "invalid_request_error"  # type: ignore[index]
