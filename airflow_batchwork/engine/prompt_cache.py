"""Prompt-cache token columns and their price, for jobs that mark a cacheable prefix (`cache_prefix`).

The adapter reads the provider's own usage counts from each raw result line (`ProviderAdapter.cache_tokens`:
cache reads, and cache writes by TTL); this enricher adds them as `cache_read_tokens` and
`cache_write_tokens` and prices them with the provider's prompt-cache terms from the dated price table
(`prompt_cache` of its block in `data/prices.json`: multipliers of the input price, batch discount on top).
Where the provider's `input_tokens` leave cached tokens out (Anthropic), the row's cost is the plain cost
plus the cache reads and writes; where they include them (`cache_tokens_in_input`: OpenAI, Groq, xAI,
Gemini), the cached tokens were priced at the full input rate by the cost enricher, so only the difference
(multiplier - 1) is added. With `columns=False` only `cost_usd` is corrected: for providers that cache on
their own, in every job, without adding columns to the result schema.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from functools import lru_cache

import pyarrow as pa
import pyarrow.compute as pc

from airflow_batchwork.adapters import adapter_class
from airflow_batchwork.engine.parquet import RowEnricher
from airflow_batchwork.values.pricing import ModelPrice
from airflow_batchwork.values.result_schema import has_no_cache_counts

CACHE_READ_FIELD = pa.field("cache_read_tokens", pa.int64())
CACHE_WRITE_FIELD = pa.field("cache_write_tokens", pa.int64())


@lru_cache(maxsize=16)
def _bytes_pattern(pattern: str) -> re.Pattern[bytes] | None:
    try:
        return re.compile(pattern.encode())
    except re.error:  # RE2-only syntax: no pre-check, the per-line match decides
        return None


def may_match(responses: pa.Array, pattern: str) -> bool:
    """False only when no line of `responses` can match `pattern`: one scan of the lines' contiguous bytes
    with Python's `re` (100k OpenAI lines: ~0.07 s against ~0.15 s for Arrow's per-line RE2 match). A match
    spanning two lines is a false positive, which only sends the batch to the exact per-line match."""
    if not len(responses):
        return False
    compiled = _bytes_pattern(pattern)
    if compiled is None or not isinstance(responses, pa.StringArray | pa.LargeStringArray):
        return True
    _, offset_buffer, data = responses.buffers()
    if data is None:
        return False
    width = pa.int64() if isinstance(responses, pa.LargeStringArray) else pa.int32()
    offsets = pa.Array.from_buffers(width, len(responses) + 1, [None, offset_buffer], offset=responses.offset)
    start, end = offsets[0].as_py(), offsets[len(responses)].as_py()
    return compiled.search(memoryview(data)[start:end]) is not None


class PromptCacheEnricher:
    """Adds the cache token columns and their cost to the wrapped cost enricher's `cost_usd`."""

    fields: Sequence[pa.Field] = (CACHE_READ_FIELD, CACHE_WRITE_FIELD)

    def __init__(self, provider: str, cost: RowEnricher, price: ModelPrice | None, *, columns: bool = True) -> None:
        self.adapter = adapter_class(provider)
        self.columns = columns
        if not columns:
            self.fields = ()
        self.cost = cost
        self.price = price
        self.read_tokens = 0
        self.write_tokens = 0

    def __call__(self, items: pa.RecordBatch) -> Mapping[str, pa.Array]:
        n = items.num_rows
        out = dict(self.cost(items))
        responses = items.column("response")
        pattern = self.adapter.cache_hit_pattern
        if not self.columns and pattern is not None:  # only the cost: parse just the lines with a cache count
            # A batch the adapter's parse marked had every count read, all zero: nothing to scan for.
            if has_no_cache_counts(items) or not may_match(responses, pattern):
                return out
            hits = pc.fill_null(pc.match_substring_regex(responses, pattern), False)
            if not pc.any(hits).as_py():
                return out
            responses = pc.if_else(hits, responses, pa.scalar(None, responses.type))
        tokens = self.adapter.cache_tokens(responses)
        if tokens is None:
            if self.columns:
                out.update(cache_read_tokens=pa.nulls(n, pa.int64()), cache_write_tokens=pa.nulls(n, pa.int64()))
            return out
        read, five, hour = tokens
        written = pc.add(five, hour)
        if self.columns:
            out.update(cache_read_tokens=read, cache_write_tokens=written)
        self.read_tokens += pc.sum(read).as_py() or 0
        self.write_tokens += pc.sum(written).as_py() or 0
        price = self.price
        cost = out.get("cost_usd")
        if price is not None and price.prompt_cache and cost is not None:
            terms = price.prompt_cache
            paid = 1.0 if self.adapter.cache_tokens_in_input else 0.0  # already priced at the input rate
            weighted = pc.add(
                pc.add(pc.multiply(pc.cast(read, pa.float64()), float(terms.get("read", 1.0)) - paid),
                       pc.multiply(pc.cast(five, pa.float64()), float(terms.get("write_5m", 1.0)) - paid)),
                pc.multiply(pc.cast(hour, pa.float64()),
                            float(terms.get("write_1h", terms.get("write_5m", 1.0))) - paid))
            extra = pc.divide(pc.multiply(pc.fill_null(weighted, 0.0), price.batch_input), 1e6)
            out["cost_usd"] = pc.add(cost, extra)
        return out
