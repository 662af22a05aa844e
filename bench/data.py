"""Realistic, deterministic bench data: provider result lines and submit requests.

Sizes follow real chat batches: result lines of ~800-1,200 bytes carrying 300-450 byte texts, 2 % of
items errored in the provider's own error shape. Every generator is seeded, so every run and every
contender sees the same bytes.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from bench.common import WORK

_CORPUS = (
    "the product arrives in a recycled box with a short manual and a charger that fits every outlet "
    "customers praise the battery life but mention that the strap wears out after a few months of use "
    "delivery was quick support answered within a day and the replacement part worked as described "
    "overall a solid purchase for the price although the colour differs slightly from the photos"
)
WORDS = tuple(_CORPUS.split())
ERROR_EVERY = 50  # 2 %


def _text(rng: random.Random) -> str:
    target = rng.randint(300, 450)
    words: list[str] = []
    size = 0
    while size < target:
        word = rng.choice(WORDS)
        words.append(word)
        size += len(word) + 1
    return " ".join(words)[:target]


def openai_line(i: int, rng: random.Random) -> dict[str, Any]:
    if i % ERROR_EVERY == 7:
        return {"id": f"batch_req_{i:024x}", "custom_id": f"req-{i}", "response": {
            "status_code": 400, "request_id": f"req_{i:032x}", "body": {"error": {
                "message": "Invalid 'messages[0].content': string too long.", "type": "invalid_request_error",
                "param": "messages[0].content", "code": "string_above_max_length"}}}, "error": None}
    text = _text(rng)
    prompt, completion = rng.randint(40, 400), len(text) // 4
    return {"id": f"batch_req_{i:024x}", "custom_id": f"req-{i}", "response": {
        "status_code": 200, "request_id": f"req_{i:032x}", "body": {
            "id": f"chatcmpl-{i:029x}", "object": "chat.completion", "created": 1764590000 + i,
            "model": "gpt-4o-mini-2024-07-18",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text, "refusal": None,
                                                 "annotations": []},
                         "logprobs": None, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": prompt, "completion_tokens": completion,
                      "total_tokens": prompt + completion,
                      "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
                      "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0,
                                                    "accepted_prediction_tokens": 0,
                                                    "rejected_prediction_tokens": 0}},
            "service_tier": "default", "system_fingerprint": "fp_560af6e559"}}, "error": None}


def anthropic_line(i: int, rng: random.Random) -> dict[str, Any]:
    if i % ERROR_EVERY == 7:
        return {"custom_id": f"req-{i}", "result": {"type": "errored", "error": {
            "type": "error", "error": {"type": "invalid_request_error",
                                       "message": "messages.0.content: prompt is too long"},
            "request_id": f"req_{i:024x}"}}}
    text = _text(rng)
    return {"custom_id": f"req-{i}", "result": {"type": "succeeded", "message": {
        "id": f"msg_{i:024x}", "type": "message", "role": "assistant", "model": "claude-haiku-4-5-20251001",
        "content": [{"type": "text", "text": text}], "stop_reason": "end_turn", "stop_sequence": None,
        "usage": {"input_tokens": rng.randint(40, 400), "output_tokens": len(text) // 4,
                  "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0,
                  "cache_creation": {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 0},
                  "server_tool_use": None, "service_tier": "batch"}}}}


def gemini_line(i: int, rng: random.Random) -> dict[str, Any]:
    if i % ERROR_EVERY == 7:
        # An item error is a google.rpc.Status: numeric gRPC code, message, details.
        return {"key": f"req-{i}", "error": {"code": 3, "message": "Request contains an invalid argument.",
                                             "details": []}}
    text = _text(rng)
    prompt, completion = rng.randint(40, 400), len(text) // 4
    return {"key": f"req-{i}", "response": {
        "candidates": [{"content": {"parts": [{"text": text}], "role": "model"}, "finishReason": "STOP",
                        "avgLogprobs": -0.2873, "index": 0}],
        "usageMetadata": {"promptTokenCount": prompt, "candidatesTokenCount": completion,
                          "totalTokenCount": prompt + completion,
                          "promptTokensDetails": [{"modality": "TEXT", "tokenCount": prompt}],
                          "candidatesTokensDetails": [{"modality": "TEXT", "tokenCount": completion}]},
        "modelVersion": "gemini-2.5-flash", "responseId": f"{i:022x}"}}


LINES: dict[str, Callable[[int, random.Random], dict[str, Any]]] = {
    "openai": openai_line, "anthropic": anthropic_line, "gemini": gemini_line,
}


def result_file(fmt: str, n: int) -> Path:
    """The JSONL result file of `n` lines in `fmt`, made once and reused."""
    path = WORK / f"results-v2-{fmt}-{n}.jsonl"
    if not path.exists():
        WORK.mkdir(parents=True, exist_ok=True)
        rng = random.Random(f"{fmt}-{n}")
        tmp = path.with_suffix(".tmp")
        with tmp.open("w") as out:
            for i in range(n):
                out.write(json.dumps(LINES[fmt](i, rng), separators=(",", ":")) + "\n")
        tmp.rename(path)
    return path


def requests(n: int) -> Iterator[dict[str, Any]]:
    """`n` realistic chat requests (a system prompt, a 300-450 byte user prompt, a few options)."""
    # Prompts come from a pool made up front, so the generator costs next to nothing and the timings
    # are the building alone, as when the requests stream from a file.
    rng = random.Random("requests")
    pool = [_text(rng) for _ in range(997)]
    system = "You are a product analyst. Summarise the review in two sentences and rate its sentiment."
    for i in range(n):
        yield {"custom_id": f"req-{i}", "system": system, "prompt": pool[i % 997],
               "max_output_tokens": 256, "temperature": 0.2}
