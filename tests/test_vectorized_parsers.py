"""The vectorized (Arrow) result parsers give exactly the rows of the line-by-line parsers."""

from __future__ import annotations

import json

import pytest

from airflow_batchwork.adapters.anthropic import AnthropicAdapter, parse_results_chunk
from airflow_batchwork.adapters.arrow_lines import parse_chat_chunk
from airflow_batchwork.adapters.google import GoogleAdapter, parse_generate_chunk
from airflow_batchwork.adapters.openai import OpenAIAdapter
from airflow_batchwork.adapters.openai_compat import CANCELED_CODES, EXPIRED_CODES, FINISH_REASONS
from airflow_batchwork.core import parse_model
from airflow_batchwork.engine.parquet import items_to_batch


def openai_lines() -> list[dict[str, object]]:
    def ok(i: int, text: str, reason: str, usage: dict[str, int] | None) -> dict[str, object]:
        body: dict[str, object] = {"choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                                                "finish_reason": reason}]}
        if usage is not None:
            body["usage"] = usage
        return {"id": f"r{i}", "custom_id": f"c{i}", "response": {"status_code": 200, "body": body}, "error": None}

    return [
        ok(0, "echo: héllo wörld ✓", "stop", {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}),
        ok(1, "cut", "length", {"prompt_tokens": 3, "completion_tokens": 1}),
        ok(2, "", "content_filter", None),
        ok(3, "odd", "weird_reason", {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}),
        {"custom_id": "c4", "response": {"status_code": 400, "body": {"error": {"message": "bad", "code": "x1"}}},
         "error": None},
        {"custom_id": "c5", "response": None, "error": {"code": "batch_expired", "message": "late"}},
        {"custom_id": "c6", "response": None, "error": {"code": "batch_cancelled", "message": "stop"}},
        {"custom_id": "c7", "response": {"status_code": 500, "body": {}}, "error": None},
        {"custom_id": "c8", "response": None, "error": {"code": None, "message": None}},
    ]


def anthropic_lines() -> list[dict[str, object]]:
    def ok(i: int, blocks: list[str], reason: str) -> dict[str, object]:
        return {"custom_id": f"c{i}", "result": {"type": "succeeded", "message": {
            "content": [{"type": "text", "text": t} for t in blocks], "stop_reason": reason,
            "usage": {"input_tokens": 5, "output_tokens": 2}}}}

    return [
        ok(0, ["echo: ", "two blocks"], "end_turn"), ok(1, [], "max_tokens"), ok(2, ["ünïcode"], "refusal"),
        {"custom_id": "c3", "result": {"type": "errored", "error": {
            "type": "error", "error": {"type": "invalid_request_error", "message": "bad"}}}},
        {"custom_id": "c4", "result": {"type": "expired"}},
        {"custom_id": "c5", "result": {"type": "canceled"}},
        {"custom_id": "c6", "result": {"type": "errored"}},
    ]


def gemini_lines() -> list[dict[str, object]]:
    def ok(i: int, texts: list[str], reason: str, usage: dict[str, int]) -> dict[str, object]:
        return {"key": f"c{i}", "response": {"candidates": [{"content": {"role": "model", "parts": [
            {"text": t} for t in texts]}, "finishReason": reason}], "usageMetadata": usage}}

    return [
        ok(0, ["echo: ", "hi"], "STOP", {"promptTokenCount": 2, "candidatesTokenCount": 3, "totalTokenCount": 5}),
        ok(1, ["x"], "MAX_TOKENS", {"promptTokenCount": 2, "candidatesTokenCount": 1, "thoughtsTokenCount": 4}),
        ok(2, ["y"], "SAFETY", {}),
        ok(3, ["z"], "NEW_REASON", {"promptTokenCount": 1}),
        {"key": "c4", "error": {"code": 500, "message": "boom", "status": "INTERNAL"}},
        {"key": "c5", "error": {"code": 400, "message": "bad"}},
    ]


def chunk(lines: list[dict[str, object]]) -> bytes:
    return "".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines).encode()


@pytest.mark.parametrize("repeat", [1, 7])
def test_openai_chat(repeat: int) -> None:
    data = chunk(openai_lines() * repeat)
    fast = parse_chat_chunk(data, "b", dict(FINISH_REASONS), EXPIRED_CODES, CANCELED_CODES)
    slow = items_to_batch(OpenAIAdapter.offline().parse_result_text(parse_model("openai/m"), "b", data.decode()))
    assert fast is not None and fast.equals(slow), (fast.to_pylist(), slow.to_pylist())


def test_anthropic() -> None:
    data = chunk(anthropic_lines())
    fast = parse_results_chunk(data, "b")
    slow = items_to_batch(AnthropicAdapter.offline().parse_result_text(parse_model("anthropic/m"), "b", data.decode()))
    assert fast is not None and fast.equals(slow), (fast.to_pylist(), slow.to_pylist())


def test_gemini_file_lines() -> None:
    data = chunk(gemini_lines())
    fast = parse_generate_chunk(data, "batches/b")
    adapter, ref = GoogleAdapter.offline(), parse_model("google/gemini-2.5-flash")
    slow = items_to_batch(adapter.parse_result_text(ref, "batches/b", data.decode()))
    assert fast is not None and fast.equals(slow), (fast.to_pylist(), slow.to_pylist())


@pytest.mark.parametrize("line", [
    {"key": "t", "response": {"candidates": [{"content": {"parts": [{"text": "hm", "thought": True},
                                                                    {"text": "answer"}]}, "finishReason": "STOP"}]}},
    {"key": "f", "response": {"candidates": [{"content": {"parts": [{"functionCall": {"name": "f"}}]},
                                              "finishReason": "STOP"}]}},
    {"key": "p", "response": {"promptFeedback": {"blockReason": "SAFETY"}}},
])
def test_gemini_lines_the_fast_path_leaves_to_the_line_parser(line: dict[str, object]) -> None:
    assert parse_generate_chunk(chunk([line]), "batches/b") is None


def test_unreadable_chunks_fall_back() -> None:
    bad = chunk(openai_lines()) + b'{"custom_id": "c9", "respo\n'
    assert parse_chat_chunk(bad, "b", dict(FINISH_REASONS), EXPIRED_CODES, CANCELED_CODES) is None
    assert parse_results_chunk(b'{"custom_id": "has space", "result": {"type": "expired"}}\n', "b") is None


def _openai_slow(data: bytes):  # type: ignore[no-untyped-def]
    return items_to_batch(OpenAIAdapter.offline().parse_result_text(parse_model("openai/m"), "b", data.decode()))


# The fast paths skip copies when they change nothing (no blank line to drop, text already null on every
# failed line, no empty `choices`); these chunks take the other branch of each, and both agree with the
# line parser.
@pytest.mark.parametrize("variant", ["blank lines", "no final newline", "failed line with text", "empty choices",
                                     "only successes"])
def test_openai_chat_every_branch(variant: str) -> None:
    lines = openai_lines()
    if variant == "failed line with text":
        lines.append({"custom_id": "c9", "response": {"status_code": 400, "body": {
            "choices": [{"message": {"content": "partial"}, "finish_reason": "stop"}],
            "error": {"code": "x", "message": "refused"}}}})
    elif variant == "empty choices":
        lines.append({"custom_id": "c9", "response": {"status_code": 200, "body": {"choices": []}}})
    elif variant == "only successes":
        lines = lines[:4]
    data = chunk(lines)
    if variant == "blank lines":
        data = data.replace(b"}\n", b"}\n\n", 2)
    elif variant == "no final newline":
        data = data.rstrip(b"\n")
    fast = parse_chat_chunk(data, "b", dict(FINISH_REASONS), EXPIRED_CODES, CANCELED_CODES)
    slow = _openai_slow(data)
    assert fast is not None and fast.equals(slow), (fast.to_pylist(), slow.to_pylist())


@pytest.mark.parametrize("variant", ["blank lines", "no final newline", "only successes", "only errors"])
def test_gemini_every_branch(variant: str) -> None:
    lines = gemini_lines()
    if variant == "only successes":
        lines = lines[:4]
    elif variant == "only errors":
        lines = lines[4:]
    data = chunk(lines)
    if variant == "blank lines":
        data = data.replace(b"}\n", b"}\n\n", 2)
    elif variant == "no final newline":
        data = data.rstrip(b"\n")
    fast = parse_generate_chunk(data, "batches/b")
    adapter, ref = GoogleAdapter.offline(), parse_model("google/gemini-2.5-flash")
    slow = items_to_batch(adapter.parse_result_text(ref, "batches/b", data.decode()))
    assert fast is not None and fast.equals(slow), (fast.to_pylist(), slow.to_pylist())


@pytest.mark.parametrize("variant", ["blank lines", "no final newline"])
def test_anthropic_every_branch(variant: str) -> None:
    data = chunk(anthropic_lines())
    data = data.replace(b"}\n", b"}\n\n", 2) if variant == "blank lines" else data.rstrip(b"\n")
    fast = parse_results_chunk(data, "b")
    slow = items_to_batch(AnthropicAdapter.offline().parse_result_text(parse_model("anthropic/m"), "b", data.decode()))
    assert fast is not None and fast.equals(slow), (fast.to_pylist(), slow.to_pylist())


def _openai_collected(data: bytes):  # type: ignore[no-untyped-def]
    """What the collector writes for a chunk: the fast path's rows, or the line parser's where it falls back."""
    fast = parse_chat_chunk(data, "b", dict(FINISH_REASONS), EXPIRED_CODES, CANCELED_CODES)
    return fast if fast is not None else _openai_slow(data)


# Tool calls are found by the JSON read (`message.tool_calls` must be empty or null for the fast path), not by a
# scan of the chunk's bytes: every shape of `tool_calls` gives the line parser's rows.
@pytest.mark.parametrize("calls", [
    [{"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{\"a\": 1}"}}],
    [], None, [None], ["not a call"], "text", {},
])
@pytest.mark.parametrize("choice", [0, 1])
def test_openai_tool_call_shapes_give_the_line_parsers_rows(calls: object, choice: int) -> None:
    lines = openai_lines()
    message: dict[str, object] = {"role": "assistant", "content": None, "tool_calls": calls}
    choices: list[dict[str, object]] = [{"index": 0, "message": {"role": "assistant", "content": "first"},
                                         "finish_reason": "stop"}] if choice else []
    choices.append({"index": choice, "message": message})  # no finish_reason: the line parser infers one
    lines.append({"custom_id": "c9", "response": {"status_code": 200, "body": {
        "choices": choices, "usage": {"prompt_tokens": 2, "completion_tokens": 3, "total_tokens": 5}}}})
    data = chunk(lines)
    got, want = _openai_collected(data), _openai_slow(data)
    assert got.equals(want), (got.to_pylist()[-1], want.to_pylist()[-1])


@pytest.mark.parametrize("part", [{"functionCall": {"name": "f", "args": {}}}, {"functionCall": {"args": {}}},
                                  {"text": "t", "functionCall": None}, {"text": "t", "functionCall": "x"}])
def test_gemini_function_call_shapes_give_the_line_parsers_rows(part: dict[str, object]) -> None:
    lines = [*gemini_lines(), {"key": "c9", "response": {"candidates": [
        {"content": {"parts": [{"text": "a "}, part]}, "finishReason": "STOP"}]}}]
    data = chunk(lines)
    adapter, ref = GoogleAdapter.offline(), parse_model("google/gemini-2.5-flash")
    slow = items_to_batch(adapter.parse_result_text(ref, "batches/b", data.decode()))
    got = parse_generate_chunk(data, "batches/b") or slow
    assert got.equals(slow), (got.to_pylist()[-1], slow.to_pylist()[-1])


@pytest.mark.parametrize("block", [{"type": "tool_use", "id": "t1", "name": "f", "input": {"a": 1}},
                                   {"type": "thinking", "thinking": "hm"}])
def test_anthropic_tool_use_blocks_give_the_line_parsers_rows(block: dict[str, object]) -> None:
    lines = [*anthropic_lines(), {"custom_id": "c9", "result": {"type": "succeeded", "message": {
        "content": [{"type": "text", "text": "a"}, block], "stop_reason": "tool_use",
        "usage": {"input_tokens": 5, "output_tokens": 2}}}}]
    data = chunk(lines)
    slow = items_to_batch(AnthropicAdapter.offline().parse_result_text(parse_model("anthropic/m"), "b", data.decode()))
    got = parse_results_chunk(data, "b") or slow
    assert got.equals(slow), (got.to_pylist()[-1], slow.to_pylist()[-1])
