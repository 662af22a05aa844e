"""Operator extra link to a job's batch in the provider's web console.

Airflow 3 renders extra links on the API server from XCom (key ``_link_BatchConsoleLink``). Two writers:
the operators push the URL as soon as the batch ids are known (:func:`persist_batch_link`), so the
button works while the task is deferred; and the task runner stores :meth:`BatchConsoleLink.get_link`
when the task ends. Console URLs come from each adapter's ``console_url``; providers without a
per-batch console page get an empty link.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperatorLink

from airflow_batchwork.adapters import adapter_class
from airflow_batchwork.core.errors import ConfigurationError
from airflow_batchwork.core.handle import JobHandle
from airflow_batchwork.core.refs import parse_model

if TYPE_CHECKING:
    from airflow.sdk import BaseOperator
    from airflow.sdk.types import TaskInstanceKey


class BatchConsoleLink(BaseOperatorLink):
    """Links to the provider console page of the job's first batch."""

    name = "Batch console"

    def get_link(self, operator: BaseOperator, *, ti_key: TaskInstanceKey) -> str:
        # Airflow 3 calls this on the worker when the task ends and stores the result under xcom_key.
        job = getattr(operator, "_job", None) or getattr(operator, "job", None)
        try:
            return batch_console_url(job) or ""
        except ConfigurationError:
            pass  # no handle in hand (e.g. a submit resumed after deferral): use what execute pushed
        model = getattr(operator, "model", None)
        if isinstance(model, str) and "{{" not in model:
            try:
                if adapter_class(parse_model(model).provider).console_url is None:
                    return ""
            except ConfigurationError:
                return ""
        from airflow.sdk.execution_time.xcom import XCom

        return XCom.get_value(key=self.xcom_key, ti_key=ti_key) or ""


def batch_console_url(job: JobHandle | Mapping[str, Any] | str | None) -> str | None:
    """Console URL of the job's first batch, or None where the provider has no such page."""
    if job is None:
        raise ConfigurationError("job", "no job handle", "pass the handle returned by SubmitBatchOperator")
    handle = JobHandle.coerce(job)
    if not handle.batches:
        return None
    return adapter_class(handle.provider).batch_link(handle.batch_ids[0])


def persist_batch_link(context: Mapping[str, Any], job: JobHandle | Mapping[str, Any]) -> str | None:
    """Push the console URL for :class:`BatchConsoleLink`; returns it (None: nothing pushed)."""
    url = batch_console_url(job)
    if url:
        context["ti"].xcom_push(key=BatchConsoleLink().xcom_key, value=url)
    return url
