"""The whole-buffer pre-check of the automatic prompt-cache correction never misses a line the per-line match finds."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from airflow_batchwork.adapters import adapter_class
from airflow_batchwork.engine.prompt_cache import may_match

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
