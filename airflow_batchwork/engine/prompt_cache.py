"""Prompt-cache token columns and their price, for jobs that mark a cacheable prefix (`cache_prefix`).

The adapter reads the provider's own usage counts from each raw result line (`ProviderAdapter.cache_tokens`:
cache reads, and cache writes by TTL); this enricher adds them as `cache_read_tokens` and
`cache_write_tokens` and prices them with the provider's prompt-cache terms from the dated price table
(`prompt_cache` of its block in `data/prices.json`: multipliers of the input price, batch discount on top).
The provider's `input_tokens` already leave cached tokens out, so the row's cost is the plain cost plus
the cache reads and writes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pyarrow as pa
import pyarrow.compute as pc

from airflow_batchwork.adapters import adapter_class
from airflow_batchwork.engine.parquet import RowEnricher
from airflow_batchwork.values.pricing import ModelPrice

CACHE_READ_FIELD = pa.field("cache_read_tokens", pa.int64())
CACHE_WRITE_FIELD = pa.field("cache_write_tokens", pa.int64())


class PromptCacheEnricher:
    """Adds the cache token columns and their cost to the wrapped cost enricher's `cost_usd`."""

    fields: Sequence[pa.Field] = (CACHE_READ_FIELD, CACHE_WRITE_FIELD)

    def __init__(self, provider: str, cost: RowEnricher, price: ModelPrice | None) -> None:
        self.adapter = adapter_class(provider)
        self.cost = cost
        self.price = price
        self.read_tokens = 0
        self.write_tokens = 0

    def __call__(self, items: pa.RecordBatch) -> Mapping[str, pa.Array]:
        n = items.num_rows
        out = dict(self.cost(items))
        tokens = self.adapter.cache_tokens(items.column("response"))
        if tokens is None:
            out.update(cache_read_tokens=pa.nulls(n, pa.int64()), cache_write_tokens=pa.nulls(n, pa.int64()))
            return out
        read, five, hour = tokens
        written = pc.add(five, hour)
        out.update(cache_read_tokens=read, cache_write_tokens=written)
        self.read_tokens += pc.sum(read).as_py() or 0
        self.write_tokens += pc.sum(written).as_py() or 0
        price = self.price
        cost = out.get("cost_usd")
        if price is not None and price.prompt_cache and cost is not None:
            terms = price.prompt_cache
            weighted = pc.add(pc.add(pc.multiply(pc.cast(read, pa.float64()), float(terms.get("read", 1.0))),
                                     pc.multiply(pc.cast(five, pa.float64()), float(terms.get("write_5m", 1.0)))),
                              pc.multiply(pc.cast(hour, pa.float64()),
                                          float(terms.get("write_1h", terms.get("write_5m", 1.0)))))
            extra = pc.divide(pc.multiply(pc.fill_null(weighted, 0.0), price.batch_input), 1e6)
            out["cost_usd"] = pc.add(cost, extra)
        return out
