"""The emulator's OpenAI routes, driven over real sockets by the official ``openai`` SDK."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterator
from typing import Any, Final, Literal

import httpx
import openai
import pytest
from openai.types import Batch, Completion, CreateEmbeddingResponse, FileObject
from openai.types.chat import ChatCompletion
from openai.types.responses import Response

from airflow_batchwork.testing import Emulator

TERMINAL = {"completed", "failed", "expired", "cancelled"}
CHAT: Final = "/v1/chat/completions"
RESPONSES: Final = "/v1/responses"
COMPLETIONS: Final = "/v1/completions"
EMBEDDINGS: Final = "/v1/embeddings"
Endpoint = Literal["/v1/chat/completions", "/v1/responses", "/v1/completions", "/v1/embeddings"]


@pytest.fixture
def emu() -> Iterator[Emulator]:
    with Emulator(processing_seconds=0.2) as emulator:
        yield emulator


@pytest.fixture
def client(emu: Emulator) -> openai.OpenAI:
    return openai.OpenAI(base_url=emu.base_url("openai"), api_key="test", max_retries=0)


def _line(custom_id: str, url: str, body: dict[str, Any]) -> dict[str, Any]:
    return {"custom_id": custom_id, "method": "POST", "url": url, "body": body}


def _upload(client: openai.OpenAI, lines: list[dict[str, Any]]) -> FileObject:
    data = "\n".join(json.dumps(line) for line in lines).encode()
    return client.files.create(file=("input.jsonl", data), purpose="batch")


def _submit(client: openai.OpenAI, endpoint: Endpoint, lines: list[dict[str, Any]], **kwargs: Any) -> Batch:
    input_file = _upload(client, lines)
    return client.batches.create(
        input_file_id=input_file.id, endpoint=endpoint, completion_window="24h", **kwargs
    )


def _wait(client: openai.OpenAI, batch_id: str, timeout: float = 10.0) -> tuple[Batch, list[str]]:
    """Poll until terminal; returns the final batch (validated strictly) and every status seen."""
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while True:
        raw = client.batches.with_raw_response.retrieve(batch_id)
        batch = Batch.model_validate(json.loads(raw.text))
        if not seen or seen[-1] != batch.status:
            seen.append(batch.status)
        if batch.status in TERMINAL:
            return batch, seen
        assert time.monotonic() < deadline, f"batch stuck in {batch.status}"
        time.sleep(0.02)


def _jsonl(client: openai.OpenAI, file_id: str | None) -> dict[str, dict[str, Any]]:
    assert file_id is not None
    lines = [json.loads(line) for line in client.files.content(file_id).text.splitlines() if line]
    return {line["custom_id"]: line for line in lines}


def _body(line: dict[str, Any]) -> dict[str, Any]:
    assert line["error"] is None
    assert line["id"].startswith("batch_req_")
    assert line["response"]["status_code"] == 200
    assert line["response"]["request_id"]
    return line["response"]["body"]


def test_chat_completions_round_trip(emu: Emulator, client: openai.OpenAI) -> None:
    url: Endpoint = CHAT
    lines = [
        _line("a", url, {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hello there"}]}),
        _line(
            "b",
            url,
            {
                "model": "gpt-4o-mini",
                "messages": [
                    {"role": "system", "content": "be brief"},
                    {"role": "user", "content": [{"type": "text", "text": "first"}]},
                    {"role": "assistant", "content": "ok"},
                    {"role": "user", "content": [{"type": "text", "text": "second question"}]},
                ],
            },
        ),
        _line(
            "c",
            url,
            {
                "model": "gpt-4o-mini",
                "max_completion_tokens": 2,
                "messages": [{"role": "user", "content": "one two three four"}],
            },
        ),
    ]
    created = _submit(client, url, lines, metadata={"job": "nightly"})
    assert created.status == "validating"
    assert created.id.startswith("batch_")

    batch, seen = _wait(client, created.id)
    assert batch.status == "completed"
    assert seen[-1] == "completed" and set(seen) <= {"validating", "in_progress", "finalizing", "completed"}
    assert batch.request_counts is not None
    assert batch.request_counts.model_dump() == {"total": 3, "completed": 3, "failed": 0}
    assert batch.model == "gpt-4o-mini"
    assert batch.metadata == {"job": "nightly"}
    assert batch.error_file_id is None
    assert batch.completed_at is not None and batch.in_progress_at is not None
    assert batch.expires_at == batch.created_at + 24 * 3600

    results = _jsonl(client, batch.output_file_id)
    assert set(results) == {"a", "b", "c"}
    a = ChatCompletion.model_validate(_body(results["a"]))
    assert a.object == "chat.completion"
    assert a.choices[0].message.content == "echo: hello there"
    assert a.choices[0].finish_reason == "stop"
    assert a.usage is not None
    assert (a.usage.prompt_tokens, a.usage.completion_tokens, a.usage.total_tokens) == (2, 3, 5)
    b = ChatCompletion.model_validate(_body(results["b"]))
    assert b.choices[0].message.content == "echo: second question"
    assert b.usage is not None and b.usage.prompt_tokens == 2 + 1 + 1 + 2
    c = ChatCompletion.model_validate(_body(results["c"]))
    assert c.choices[0].message.content == "echo: one"
    assert c.choices[0].finish_reason == "length"
    assert batch.usage is not None
    assert batch.usage.input_tokens == 2 + 6 + 4
    assert batch.usage.total_tokens == batch.usage.input_tokens + batch.usage.output_tokens

    [stored] = emu.batches("openai")
    assert (stored.id, stored.endpoint, stored.model) == (created.id, url, "gpt-4o-mini")
    assert stored.request_count == 3
    assert stored.metadata == {"job": "nightly"}
    output = client.files.retrieve(batch.output_file_id or "")
    assert output.purpose == "batch_output"


def test_responses_endpoint(client: openai.OpenAI) -> None:
    url: Endpoint = RESPONSES
    lines = [
        _line("s", url, {"model": "gpt-5", "input": "what is up", "instructions": "be kind"}),
        _line(
            "m",
            url,
            {
                "model": "gpt-5",
                "input": [
                    {"role": "developer", "content": "sys"},
                    {
                        "type": "message",
                        "role": "user",
                        "content": [{"type": "input_text", "text": "hi you"}],
                    },
                ],
            },
        ),
        # The spec's minimum for max_output_tokens is 16: 20 input words are cut to 16 reply words.
        _line("t", url, {"model": "gpt-5", "input": " ".join("abcdefghijklmnopqrst"), "max_output_tokens": 16}),
    ]
    batch, _ = _wait(client, _submit(client, url, lines).id)
    results = _jsonl(client, batch.output_file_id)

    s = Response.model_validate(_body(results["s"]))
    assert s.status == "completed"
    assert s.output_text == "echo: what is up"
    assert s.usage is not None
    assert (s.usage.input_tokens, s.usage.output_tokens, s.usage.total_tokens) == (5, 4, 9)
    m = Response.model_validate(_body(results["m"]))
    assert m.output_text == "echo: hi you"
    assert m.usage is not None and m.usage.input_tokens == 3
    t = Response.model_validate(_body(results["t"]))
    assert t.status == "incomplete"
    assert t.incomplete_details is not None and t.incomplete_details.reason == "max_output_tokens"
    assert t.output_text == "echo: " + " ".join("abcdefghijklmno")


def test_completions_endpoint(client: openai.OpenAI) -> None:
    url: Endpoint = COMPLETIONS
    lines = [
        _line("p", url, {"model": "gpt-3.5-turbo-instruct", "prompt": "say this"}),
        _line("q", url, {"model": "gpt-3.5-turbo-instruct", "prompt": "x y z", "max_tokens": 1}),
    ]
    batch, _ = _wait(client, _submit(client, url, lines).id)
    results = _jsonl(client, batch.output_file_id)
    p = Completion.model_validate(_body(results["p"]))
    assert p.object == "text_completion"
    assert p.choices[0].text == "echo: say this"
    assert p.choices[0].finish_reason == "stop"
    assert p.usage is not None and (p.usage.prompt_tokens, p.usage.completion_tokens) == (2, 3)
    q = Completion.model_validate(_body(results["q"]))
    assert (q.choices[0].text, q.choices[0].finish_reason) == ("echo:", "length")


def test_embeddings_endpoint(client: openai.OpenAI) -> None:
    url: Endpoint = EMBEDDINGS
    lines = [
        _line("one", url, {"model": "text-embedding-3-small", "input": "hello world"}),
        _line(
            "many", url, {"model": "text-embedding-3-small", "input": ["hello world", "bye"], "dimensions": 4}
        ),
    ]
    batch, _ = _wait(client, _submit(client, url, lines).id)
    results = _jsonl(client, batch.output_file_id)
    one = CreateEmbeddingResponse.model_validate(_body(results["one"]))
    assert one.object == "list" and one.model == "text-embedding-3-small"
    assert len(one.data) == 1 and len(one.data[0].embedding) == 8
    assert math.isclose(sum(v * v for v in one.data[0].embedding), 1.0, rel_tol=1e-9)
    assert (one.usage.prompt_tokens, one.usage.total_tokens) == (2, 2)
    many = CreateEmbeddingResponse.model_validate(_body(results["many"]))
    assert [d.index for d in many.data] == [0, 1]
    assert all(len(d.embedding) == 4 for d in many.data)
    assert many.data[0].embedding != many.data[1].embedding
    assert batch.usage is not None and batch.usage.output_tokens == 0


def test_error_and_expire_markers_land_in_error_file(client: openai.OpenAI) -> None:
    url: Endpoint = CHAT

    def chat(custom_id: str, text: str) -> dict[str, Any]:
        return _line(custom_id, url, {"model": "m", "messages": [{"role": "user", "content": text}]})

    lines = [chat("ok", "fine"), chat("bad", "please [[error]]"), chat("late", "too slow [[expire]]")]
    batch, _ = _wait(client, _submit(client, url, lines).id)
    # A request the window never reached expires the whole batch; finished work is still returned.
    assert batch.status == "expired"
    assert batch.expired_at is not None and batch.completed_at is None
    assert batch.request_counts is not None
    assert (batch.request_counts.completed, batch.request_counts.failed) == (1, 2)

    assert set(_jsonl(client, batch.output_file_id)) == {"ok"}
    errors = _jsonl(client, batch.error_file_id)
    assert set(errors) == {"bad", "late"}
    bad = errors["bad"]
    assert bad["error"] is None
    assert bad["response"]["status_code"] == 400
    error = bad["response"]["body"]["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error" and error["param"] is None
    late = errors["late"]
    assert late["response"] is None
    assert late["error"]["code"] == "batch_expired" and late["error"]["message"]


def test_invalid_input_file_fails_the_batch_with_line_errors(client: openai.OpenAI) -> None:
    url: Endpoint = CHAT
    body = {"model": "m", "messages": [{"role": "user", "content": "x"}]}
    data = "\n".join(
        [
            json.dumps(_line("a", url, body)),
            "{not json",
            json.dumps(_line("a", url, body)),
            json.dumps(_line("b", "/v1/embeddings", body)),
            json.dumps(_line("c", url, {**body, "model": "other"})),
        ]
    ).encode()
    input_file = client.files.create(file=("bad.jsonl", data), purpose="batch")
    created = client.batches.create(input_file_id=input_file.id, endpoint=url, completion_window="24h")
    assert created.status == "validating"
    batch, _ = _wait(client, created.id)
    assert batch.status == "failed"
    assert batch.failed_at is not None
    assert batch.errors is not None and batch.errors.data is not None
    codes = {(e.code, e.line) for e in batch.errors.data}
    assert codes == {
        ("invalid_json_line", 2),
        ("duplicate_custom_id", 3),
        ("url_mismatch", 4),
        ("model_mismatch", 5),
    }
    assert batch.output_file_id is None and batch.error_file_id is None


def test_batches_list_paginates_newest_first(emu: Emulator, client: openai.OpenAI) -> None:
    url: Endpoint = EMBEDDINGS
    line = _line("e", url, {"model": "text-embedding-3-small", "input": "x"})
    input_file = _upload(client, [line])
    ids = [
        client.batches.create(input_file_id=input_file.id, endpoint=url, completion_window="24h").id
        for _ in range(5)
    ]
    assert len(emu.batches("openai")) == 5

    first = client.batches.list(limit=2)
    assert [b.id for b in first.data] == ids[::-1][:2]
    assert first.has_more is True
    assert [b.id for b in client.batches.list(limit=2)] == ids[::-1]  # auto-paging across 3 pages

    raw = httpx.get(
        emu.base_url("openai") + "/batches",
        params={"limit": 2, "after": ids[1]},
        headers={"Authorization": "Bearer test"},
    ).json()
    assert raw["object"] == "list"
    assert [b["id"] for b in raw["data"]] == [ids[0]]
    assert (raw["first_id"], raw["last_id"], raw["has_more"]) == (ids[0], ids[0], False)


def test_cancel(emu: Emulator, client: openai.OpenAI) -> None:
    emu.processing_seconds = 5.0
    url: Endpoint = CHAT
    lines = [
        _line(f"r{i}", url, {"model": "m", "messages": [{"role": "user", "content": "hi"}]}) for i in range(3)
    ]
    created = _submit(client, url, lines)
    cancelling = client.batches.cancel(created.id)
    assert cancelling.status == "cancelling"
    assert cancelling.cancelling_at is not None

    batch, _ = _wait(client, created.id)
    assert batch.status == "cancelled"
    assert batch.cancelled_at is not None
    assert batch.output_file_id is None
    errors = _jsonl(client, batch.error_file_id)
    assert set(errors) == {"r0", "r1", "r2"}
    assert {line["error"]["code"] for line in errors.values()} == {"batch_cancelled"}
    assert client.batches.cancel(created.id).status == "cancelled"  # idempotent


def test_cancel_of_completed_batch_is_rejected(client: openai.OpenAI) -> None:
    url: Endpoint = EMBEDDINGS
    batch, _ = _wait(client, _submit(client, url, [_line("e", url, {"model": "e", "input": "x"})]).id)
    with pytest.raises(openai.BadRequestError):
        client.batches.cancel(batch.id)


def test_files_api(client: openai.OpenAI) -> None:
    uploaded = client.files.create(file=("in.jsonl", b'{"a": 1}\n'), purpose="batch")
    assert (uploaded.object, uploaded.bytes) == ("file", 9)
    assert (uploaded.filename, uploaded.purpose) == ("in.jsonl", "batch")
    assert uploaded.id.startswith("file-")
    assert client.files.retrieve(uploaded.id).id == uploaded.id
    assert client.files.content(uploaded.id).content == b'{"a": 1}\n'
    deleted = client.files.delete(uploaded.id)
    assert deleted.deleted is True and deleted.id == uploaded.id
    with pytest.raises(openai.NotFoundError):
        client.files.retrieve(uploaded.id)


def test_bad_api_key_is_401(emu: Emulator) -> None:
    bad = openai.OpenAI(base_url=emu.base_url("openai"), api_key="invalid", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as info:
        bad.batches.list()
    assert info.value.code == "invalid_api_key"

    for headers in ({}, {"Authorization": "Bearer"}, {"Authorization": "Bearer invalid"}):
        response = httpx.get(emu.base_url("openai") + "/batches", headers=headers)
        assert response.status_code == 401
        error = response.json()["error"]
        assert error["type"] == "invalid_request_error"
        assert (error["code"], error["param"]) == ("invalid_api_key", None)
        assert response.headers["x-request-id"]


def test_unknown_ids_are_404(emu: Emulator, client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as info:
        client.batches.retrieve("batch_doesnotexist")
    assert info.value.request_id
    with pytest.raises(openai.NotFoundError):
        client.files.content("file-doesnotexist")
    with pytest.raises(openai.NotFoundError):
        client.batches.cancel("batch_doesnotexist")
    response = httpx.get(emu.base_url("openai") + "/no/such/route", headers={"Authorization": "Bearer t"})
    assert response.status_code == 404
    assert set(response.json()["error"]) == {"message", "type", "param", "code"}


def test_invalid_batch_requests_are_400(client: openai.OpenAI) -> None:
    url: Endpoint = CHAT
    input_file = _upload(client, [_line("a", url, {"model": "m", "messages": []})])
    with pytest.raises(openai.BadRequestError) as info:
        client.batches.create(input_file_id="file-nope", endpoint=url, completion_window="24h")
    assert info.value.param == "input_file_id"
    with pytest.raises(openai.BadRequestError) as info:
        client.batches.create(input_file_id=input_file.id, endpoint="/v1/nope", completion_window="24h")  # type: ignore[arg-type]
    assert info.value.param == "endpoint"
    with pytest.raises(openai.BadRequestError):
        client.batches.create(input_file_id=input_file.id, endpoint=url, completion_window="48h")  # type: ignore[arg-type]
    with pytest.raises(openai.BadRequestError):
        client.batches.create(
            input_file_id=input_file.id, endpoint=url, completion_window="24h", metadata={"k": "v" * 600}
        )


def test_invalid_request_body_is_a_per_item_400(client: openai.OpenAI) -> None:
    url: Endpoint = CHAT
    batch, _ = _wait(client, _submit(client, url, [_line("empty", url, {"model": "m", "messages": []})]).id)
    assert batch.status == "completed"
    assert batch.output_file_id is None
    line = _jsonl(client, batch.error_file_id)["empty"]
    assert line["response"]["status_code"] == 400
    assert line["response"]["body"]["error"]["param"] == "messages"
