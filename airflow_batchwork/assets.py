"""Airflow Assets for batchwork: collected results, and per-provider batch-completion notices.

- Results: `CollectResultsOperator` declares its Parquet output as an outlet and attaches the
  manifest's counts (and cost, when the manifest has one) to the asset event's ``extra``, so DAGs
  scheduled on it start when new results land. Airflow resolves outlets at parse time, so a templated
  ``output_path`` (``…/{{ ds }}/``) is published through an :class:`AssetAlias` that names the
  rendered path at run time.
- Completions: the webhook intake records one event per provider batch-completion webhook on
  ``batch_completions(provider)`` (URI ``batchwork://<provider>/batches``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from airflow.sdk import Asset, AssetAlias

from airflow_batchwork.values.errors import ConfigurationError
from airflow_batchwork.webhooks.events import completions_uri

ResultsOutlet = Asset | AssetAlias
# What CollectResultsOperator(results_asset=...) accepts: an Asset or AssetAlias, a static URI, False
# (no outlet) or None (derive it from output_path).
ResultsAssetArg = Asset | AssetAlias | str | bool | None


def _is_templated(value: str) -> bool:
    return "{{" in value or "{%" in value


def batch_completions(provider: str) -> Asset:
    """The asset that receives an event whenever `provider` signals by webhook that a batch ended."""
    uri = completions_uri(provider)
    return Asset(name=uri, uri=uri, group="batchwork")


def results_asset(output_path: str) -> Asset:
    """The asset for a (rendered, static) results URL; name and URI are the path itself."""
    if _is_templated(output_path):
        raise ConfigurationError(
            "results_asset", f"{output_path!r} is templated and Airflow resolves outlets at parse time",
            "pass a static URI, an Asset, or leave it unset to publish through an AssetAlias",
        )
    return Asset(name=output_path, uri=output_path)


def results_alias(dag_id: str, task_id: str) -> AssetAlias:
    """The alias a collect task with a templated output path publishes its results through."""
    return AssetAlias(name=f"batchwork-results:{dag_id}.{task_id}")


def results_outlet(output_path: str, choice: ResultsAssetArg, *, dag_id: str, task_id: str) -> ResultsOutlet | None:
    """The outlet a collect task declares: an explicit Asset/alias/URI, else one derived from `output_path`."""
    if choice is False:
        return None
    if isinstance(choice, Asset | AssetAlias):
        return choice
    if isinstance(choice, str):
        return results_asset(choice)
    if _is_templated(output_path):
        return results_alias(dag_id, task_id)
    return results_asset(output_path)


def event_extra(manifest: Mapping[str, Any]) -> dict[str, Any]:
    """The small, JSON-safe summary of a collect manifest that goes into the asset event's ``extra``."""
    extra: dict[str, Any] = {
        key: manifest[key]
        for key in ("path", "rows", "counts", "state", "provider", "model", "batch_ids")
        if key in manifest
    }
    if "files" in manifest:
        extra["file_count"] = len(manifest["files"])
    for key in ("cost_usd", "cost"):
        if manifest.get(key) is not None:
            extra[key] = manifest[key]
    return extra


def attach_event_extra(context: Mapping[str, Any], outlet: ResultsOutlet | None, manifest: Mapping[str, Any]) -> None:
    """Put the manifest summary on this task's outlet event (through the alias: on the rendered path)."""
    if outlet is None:
        return
    extra = event_extra(manifest)
    events = context["outlet_events"]
    if isinstance(outlet, AssetAlias):
        path = str(manifest["path"])
        events[outlet].add(Asset(name=path, uri=path), extra=extra)
    else:
        events[outlet].extra.update(extra)
