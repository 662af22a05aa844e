"""Operator extra link to a job's batch in the provider's web console.

Airflow 3 renders extra links on the API server from XCom (key ``_link_BatchConsoleLink``). Two writers:
the operators push the URL as soon as the batch ids are known (:func:`persist_batch_link`), so the
button works while the task is deferred; and the task runner stores :meth:`BatchConsoleLink.get_link`
when the task ends. Console URLs come from each adapter's ``console_url``; providers without a
per-batch console page, and jobs sent to another base URL (the emulator, a proxy), get an empty link.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from airflow.sdk import BaseOperatorLink

from airflow_batchwork.adapters import adapter_class
from airflow_batchwork.values.errors import ConfigurationError
from airflow_batchwork.values.handle import JobHandle
from airflow_batchwork.values.refs import parse_model

if TYPE_CHECKING:
    from airflow.sdk import BaseOperator
    from airflow.sdk.types import TaskInstanceKey


class BatchConsoleLink(BaseOperatorLink):
    """Links to the provider console page of the job's first batch."""

    name = "Batch console"

    def get_link(self, operator: BaseOperator, *, ti_key: TaskInstanceKey) -> str:
        # Airflow 3 calls this on the worker when the task ends and stores the result under xcom_key.
        known = getattr(operator, "_console_url", None)
        if known is not None:  # the operator decided in this process (possibly: no link)
            return str(known)
        model = getattr(operator, "model", None)
        if isinstance(model, str) and "{{" not in model:
            try:
                if adapter_class(parse_model(model).provider).console_url is None:
                    return ""
            except ConfigurationError:
                return ""
        from airflow.sdk.execution_time.xcom import XCom

        return XCom.get_value(key=self.xcom_key, ti_key=ti_key) or ""


def is_provider_url(provider: str, base_url: str | None) -> bool:
    """Whether `base_url` is the provider's own API (unset, or the same host as its default base URL).

    The emulator, a proxy or a gateway are not: their batches have no page in the provider's console."""
    if not base_url:
        return True
    default = urlsplit(adapter_class(provider).default_base_url).hostname
    return urlsplit(base_url).hostname == default


def batch_console_url(job: JobHandle | Mapping[str, Any] | str | None, base_url: str | None = None) -> str | None:
    """Console URL of the job's first batch, or None where the provider has no such page or the job was
    not sent to the provider's own API (`base_url`, see `is_provider_url`)."""
    if job is None:
        raise ConfigurationError("job", "no job handle", "pass the handle returned by SubmitBatchOperator")
    handle = JobHandle.coerce(job)
    if not handle.batches or not is_provider_url(handle.provider, base_url):
        return None
    return adapter_class(handle.provider).batch_link(handle.batch_ids[0])


def persist_batch_link(context: Mapping[str, Any], job: JobHandle | Mapping[str, Any],
                       base_url: str | None = None) -> str | None:
    """Push the console URL for :class:`BatchConsoleLink`; returns it (None: nothing pushed)."""
    url = batch_console_url(job, base_url)
    if url:
        context["ti"].xcom_push(key=BatchConsoleLink().xcom_key, value=url)
    return url
