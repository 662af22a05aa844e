"""The pre-checks of the automatic prompt-cache correction never miss a line the per-line match finds: the
whole-buffer scan, and the fast parsers' mark of a chunk whose cache counts are all zero."""

from __future__ import annotations

import json
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from airflow_batchwork.adapters import adapter_class
from airflow_batchwork.adapters.arrow_lines import parse_chat_chunk
from airflow_batchwork.adapters.google import parse_generate_chunk
from airflow_batchwork.adapters.openai_compat import CANCELED_CODES, EXPIRED_CODES, FINISH_REASONS
from airflow_batchwork.engine.prompt_cache import PromptCacheEnricher, may_match
from airflow_batchwork.values.pricing import CostEnricher, load_prices
from airflow_batchwork.values.result_schema import has_no_cache_counts

LINES = [
    '{"usage":{"prompt_tokens_details":{"cached_tokens":0}}}',
    None,
    '{"usage":{"prompt_tokens_details":{"cached_tokens": 1024}}}',
    '{"usage":{"cache_write_tokens":\t7}}',
    '{"usageMetadata":{"cachedContentTokenCount":2048}}',
    '{"usageMetadata":{"cachedContentTokenCount":0}}',
    "",
]


@pytest.mark.parametrize("provider", ["openai", "google", "xai", "groq"])
@pytest.mark.parametrize("string_type", [pa.string(), pa.large_string()])
def test_precheck_agrees_with_the_per_line_match(provider: str, string_type: pa.DataType) -> None:
    pattern = adapter_class(provider).cache_hit_pattern
    assert pattern is not None
    lines = pa.array(LINES, string_type)
    checked = 0
    for start in range(len(lines) + 1):
        for length in range(len(lines) - start + 1):
            part = lines.slice(start, length)
            hit = bool(pc.any(pc.fill_null(pc.match_substring_regex(part, pattern), False)).as_py() or False)
            # No two of these lines join into a false positive, so the pre-check is exact here.
            assert may_match(part, pattern) == hit, (provider, start, length)
            checked += 1
    assert checked == 36


def test_precheck_is_false_without_any_cache_count() -> None:
    pattern = adapter_class("openai").cache_hit_pattern
    assert pattern is not None
    assert not may_match(pa.array([LINES[0], LINES[5], None]), pattern)
    assert may_match(pa.array([LINES[0], LINES[2]]), pattern)


# The fast parsers read each line's prompt-cache counts with the rest of the line; a chunk where every count is
# zero or absent is marked (`without_cache_counts`), and the cost correction then skips its scan of the lines.
def _chat(i: int, usage: dict[str, object], status: int = 200) -> dict[str, object]:
    body = {"choices": [{"index": 0, "message": {"role": "assistant", "content": f"t{i}"}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 1200, "completion_tokens": 5, "total_tokens": 1205, **usage}}
    return {"id": f"r{i}", "custom_id": f"c{i}", "response": {"status_code": status, "body": body}, "error": None}


def _generate(i: int, usage: dict[str, object]) -> dict[str, object]:
    return {"key": f"c{i}", "response": {"candidates": [{"content": {"role": "model", "parts": [{"text": f"t{i}"}]},
                                                         "finishReason": "STOP"}],
                                         "usageMetadata": {"promptTokenCount": 1200, "candidatesTokenCount": 5,
                                                           **usage}}}


def _chunk(lines: list[dict[str, object]]) -> bytes:
    return "".join(json.dumps(line) + "\n" for line in lines).encode()


ZERO_CHAT = [_chat(0, {}), _chat(1, {"prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0}}),
             _chat(2, {"prompt_tokens_details": None}), _chat(3, {"input_tokens_details": {"cached_tokens": 0}})]
ZERO_GENERATE = [_generate(0, {}), _generate(1, {"cachedContentTokenCount": 0})]


@pytest.mark.parametrize(("hit", "marked"), [
    (None, True),
    (_chat(9, {"prompt_tokens_details": {"cached_tokens": 1024}}), False),
    (_chat(9, {"prompt_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 3}}), False),
    (_chat(9, {"input_tokens_details": {"cached_tokens": 64}}), False),
    (_chat(9, {"prompt_tokens_details": {"cached_tokens": 64}}, status=400), False),  # counted anywhere: not marked
])
def test_chat_chunks_are_marked_only_when_every_cache_count_is_zero(hit: dict[str, object] | None,
                                                                    marked: bool) -> None:
    lines = [*ZERO_CHAT, *([hit] if hit else [])]
    batch = parse_chat_chunk(_chunk(lines), "b", dict(FINISH_REASONS), EXPIRED_CODES, CANCELED_CODES)
    assert batch is not None and batch.num_rows == len(lines)
    assert has_no_cache_counts(batch) is marked


@pytest.mark.parametrize(("hit", "marked"), [(None, True), (_generate(9, {"cachedContentTokenCount": 2048}), False)])
def test_gemini_chunks_are_marked_only_when_every_cache_count_is_zero(hit: dict[str, object] | None,
                                                                      marked: bool) -> None:
    lines = [*ZERO_GENERATE, *([hit] if hit else [])]
    batch = parse_generate_chunk(_chunk(lines), "batches/b")
    assert batch is not None and batch.num_rows == len(lines)
    assert has_no_cache_counts(batch) is marked


@pytest.mark.parametrize(("provider", "model", "lines", "parse"), [
    ("openai", "openai/gpt-4o-mini", ZERO_CHAT,
     lambda data: parse_chat_chunk(data, "b", dict(FINISH_REASONS), EXPIRED_CODES, CANCELED_CODES)),
    ("google", "google/gemini-2.5-flash", ZERO_GENERATE, lambda data: parse_generate_chunk(data, "batches/b")),
])
def test_a_marked_chunk_costs_what_the_scan_of_its_lines_gives(provider: str, model: str, lines: list[Any],
                                                              parse: Any) -> None:
    price = load_prices(None).lookup(model)
    assert price is not None
    enricher = PromptCacheEnricher(provider, CostEnricher(price), price, columns=False)
    marked = parse(_chunk(lines))
    assert has_no_cache_counts(marked)
    unmarked = marked.replace_schema_metadata(None)
    assert not has_no_cache_counts(unmarked)
    assert enricher(marked)["cost_usd"].equals(enricher(unmarked)["cost_usd"])
    assert enricher(marked)["cost_usd"].null_count == 0
