"""The Airflow-free core: usable from a plain script (no Airflow import anywhere below here)."""

from airflow_batchwork.core.client import BatchClient
from airflow_batchwork.core.credentials import Credentials
from airflow_batchwork.core.errors import (
    BatchworkError,
    ConfigurationError,
    CredentialsError,
    ModelRefError,
    ProviderAPIError,
    RequestValidationError,
    UnsafeResponseError,
)
from airflow_batchwork.core.handle import JobHandle
from airflow_batchwork.core.parquet import RESULT_SCHEMA
from airflow_batchwork.core.refs import ModelRef, parse_model
from airflow_batchwork.core.requests import BatchRequest
from airflow_batchwork.core.status import BatchStatus, Counts, ItemResult, JobStatus

__all__ = [
    "RESULT_SCHEMA", "BatchClient", "BatchRequest", "BatchStatus", "BatchworkError", "ConfigurationError",
    "Counts", "Credentials", "CredentialsError", "ItemResult", "JobHandle", "JobStatus", "ModelRef",
    "ModelRefError", "ProviderAPIError", "RequestValidationError", "UnsafeResponseError", "parse_model",
]
