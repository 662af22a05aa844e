"""The Airflow-free script API: a facade over the `values`, `adapters` and `engine` layers (no Airflow import
anywhere below here). Nothing inside the package imports this facade; see docs/architecture.md.

The modules that lived here before the layers were split keep their old import paths:
`airflow_batchwork.core.<module>` is the moved module itself (the same module object, not a copy), so
`from airflow_batchwork.core.pricing import estimate_cost` and monkeypatching through the old path still work.
"""

import sys
from types import ModuleType

from airflow_batchwork.adapters import http
from airflow_batchwork.engine import (
    cache,
    client,
    dedup,
    enrichment,
    incremental,
    ledger,
    parquet,
    polling,
    preflight,
    progress,
    prompt_cache,
    resubmit,
    results,
    sources,
    submission,
)
from airflow_batchwork.engine.client import BatchClient
from airflow_batchwork.engine.parquet import RESULT_SCHEMA
from airflow_batchwork.values import (
    credentials,
    errors,
    handle,
    parts,
    pricing,
    recorder,
    refs,
    requests,
    status,
    structured,
)
from airflow_batchwork.values.credentials import Credentials
from airflow_batchwork.values.errors import (
    BatchworkError,
    ConfigurationError,
    CredentialsError,
    ModelRefError,
    ProviderAPIError,
    RequestValidationError,
    UnsafeResponseError,
)
from airflow_batchwork.values.handle import JobHandle
from airflow_batchwork.values.refs import ModelRef, parse_model
from airflow_batchwork.values.requests import BatchRequest
from airflow_batchwork.values.status import BatchStatus, Counts, ItemResult, JobStatus

_MOVED: tuple[ModuleType, ...] = (
    http, cache, client, dedup, enrichment, incremental, ledger, parquet, polling, preflight, progress,
    prompt_cache, resubmit, results, sources, submission, credentials, errors, handle, parts, pricing, recorder,
    refs, requests, status, structured,
)
for _module in _MOVED:
    _old_name = f"{__name__}.{_module.__name__.rsplit('.', 1)[1]}"
    sys.modules.setdefault(_old_name, _module)
del _module, _old_name

__all__ = [
    "RESULT_SCHEMA", "BatchClient", "BatchRequest", "BatchStatus", "BatchworkError", "ConfigurationError",
    "Counts", "Credentials", "CredentialsError", "ItemResult", "JobHandle", "JobStatus", "ModelRef",
    "ModelRefError", "ProviderAPIError", "RequestValidationError", "UnsafeResponseError", "parse_model",
]
