"""The columns of a result table (`RESULT_SCHEMA`) and of the rows adapters produce (`ITEM_SCHEMA`).

Writing them to Parquet is the engine's (`engine/parquet.py`); the adapters only build item rows.
"""

from __future__ import annotations

from collections.abc import Iterable

import pyarrow as pa

from airflow_batchwork.values.status import ItemResult

RESULT_SCHEMA = pa.schema(
    [
        pa.field("custom_id", pa.string(), nullable=False),
        pa.field("provider", pa.string()),
        pa.field("model", pa.string()),
        pa.field("batch_id", pa.string()),
        pa.field("status", pa.string()),
        pa.field("text", pa.string()),
        pa.field("finish_reason", pa.string()),
        pa.field("tool_calls", pa.string()),
        pa.field("input_tokens", pa.int64()),
        pa.field("output_tokens", pa.int64()),
        pa.field("total_tokens", pa.int64()),
        pa.field("error_code", pa.string()),
        pa.field("error_message", pa.string()),
        pa.field("response", pa.string()),
        pa.field("embedding", pa.list_(pa.float32())),
        pa.field("structured", pa.string()),
        pa.field("cost_usd", pa.float64()),
        pa.field("attempt", pa.int32()),
    ]
)
# Filled by the collector, not by adapters: job constants and the columns enrichers compute.
JOB_COLUMNS = ("provider", "model", "structured", "cost_usd", "attempt")
# What adapters produce.
ITEM_SCHEMA = pa.schema([f for f in RESULT_SCHEMA if f.name not in JOB_COLUMNS])
# Schema metadata of an adapter's record batch whose parse read every line's prompt-cache counts and found each
# zero or absent: the prompt-cache enricher then skips its scan of the raw lines (engine/prompt_cache.py).
CACHE_COUNTS_KEY, NO_CACHE_COUNTS = b"batchwork.cache_counts", b"none"


def without_cache_counts(batch: pa.RecordBatch) -> pa.RecordBatch:
    """`batch` (no copy), marked as having no nonzero prompt-cache count in any line."""
    return batch.replace_schema_metadata({CACHE_COUNTS_KEY: NO_CACHE_COUNTS})


def has_no_cache_counts(batch: pa.RecordBatch) -> bool:
    """True when the adapter that parsed `batch` marked it with `without_cache_counts`."""
    metadata = batch.schema.metadata
    return metadata is not None and metadata.get(CACHE_COUNTS_KEY) == NO_CACHE_COUNTS


def items_to_batch(items: Iterable[ItemResult]) -> pa.RecordBatch:
    """Normalized items as one record batch of `ITEM_SCHEMA`."""
    rows = list(items)
    return pa.RecordBatch.from_arrays(
        [pa.array([getattr(item, f.name) for item in rows], f.type) for f in ITEM_SCHEMA], schema=ITEM_SCHEMA
    )
