"""The row enrichers every collect uses (structured output check, cost, attempt) and the cost in the manifest."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import pyarrow as pa

from airflow_batchwork.adapters import adapter_class
from airflow_batchwork.engine.parquet import RowEnricher
from airflow_batchwork.engine.prompt_cache import PromptCacheEnricher
from airflow_batchwork.values.handle import JobHandle
from airflow_batchwork.values.pricing import CostEnricher, PricesLike, PriceTable, load_prices, total_cost
from airflow_batchwork.values.structured import StructuredEnricher

log = logging.getLogger(__name__)


class AttemptEnricher:
    """Sets the `attempt` column (1 = first submission, 2 = first resubmission, ...)."""

    fields: Sequence[pa.Field] = ()

    def __init__(self, attempt: int) -> None:
        self.attempt = attempt

    def __call__(self, items: pa.RecordBatch) -> Mapping[str, pa.Array]:
        return {"attempt": pa.repeat(pa.scalar(self.attempt, pa.int32()), items.num_rows)}


def standard_enrichers(
    handle: JobHandle,
    *,
    prices: PricesLike | PriceTable | None = None,
    storage_options: Mapping[str, Any] | None = None,
    attempt: int | None = None,
) -> list[RowEnricher]:
    """Structured output validation (when the job has schemas; it runs first, so a row's status is final),
    `cost_usd` from the price table (with the cache token columns for a job that marked a prompt-cache prefix),
    and `attempt` when given."""
    enrichers: list[RowEnricher] = []
    if handle.structured:
        enrichers.append(StructuredEnricher(handle.structured, handle.ids_url, storage_options))
    price = load_prices(prices, storage_options=storage_options).lookup(handle.model)
    if price is None:
        log.info("No price known for %s: cost_usd stays empty (pass prices= to add one)", handle.model)
    cost: RowEnricher = CostEnricher(price)
    if (handle.model_extra or {}).get("prompt_cache"):  # the job marked a prefix: the cache token columns too
        cost = PromptCacheEnricher(handle.provider, cost, price)
    elif adapter_class(handle.provider).prompt_cache_automatic:  # cached input tokens at the cached rate
        cost = PromptCacheEnricher(handle.provider, cost, price, columns=False)
    enrichers.append(cost)
    if attempt is not None:
        enrichers.append(AttemptEnricher(attempt))
    return enrichers


def add_cost(manifest: dict[str, Any], storage_options: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Put the job's total `cost_usd` (from the written files) into `manifest`, and log it."""
    manifest["cost_usd"] = total_cost(manifest["files"], storage_options)
    if manifest["cost_usd"] is not None:
        log.info("Cost of %s (%d rows): $%.6f", manifest["model"], manifest["rows"], manifest["cost_usd"])
    return manifest
