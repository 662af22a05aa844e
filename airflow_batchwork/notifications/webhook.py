"""BatchWebhookNotifier: POST a Standard-Webhooks-signed job-completion event to your own endpoint.

Use it as ``on_success_callback`` (or ``on_failure_callback``) of a :class:`CollectResultsOperator`:
it reads that task's manifest from XCom and posts::

    {"type": "batchwork.job.completed", "timestamp": "2026-11-21T12:00:00Z",
     "data": {"job": {...handle...}, "state", "counts", "rows", "path", "files", "provider", "model",
              "batch_ids", "cost_usd"?, "airflow": {"dag_id", "run_id", "task_id", "map_index", "try_number"}}}

signed like OpenAI's webhooks (headers ``webhook-id``, ``webhook-timestamp``, ``webhook-signature``), so
a receiver verifies it with any Standard Webhooks library, the OpenAI SDK's ``webhooks.verify_signature``
or :func:`airflow_batchwork.webhooks.signing.verify`. The ``webhook-id`` is derived from the task
instance and try, so receivers can dedupe retries of one delivery.
"""

from __future__ import annotations

import hashlib
import json
import random
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import httpx
from airflow.sdk import BaseHook
from airflow.sdk.bases.notifier import BaseNotifier

from airflow_batchwork.values.errors import ConfigurationError
from airflow_batchwork.values.handle import JobHandle
from airflow_batchwork.webhooks.signing import signed_headers

RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
USER_AGENT = "airflow-batchwork-webhooks/1"


class WebhookDeliveryError(Exception):
    """The endpoint refused the event, or every attempt failed."""


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


class BatchWebhookNotifier(BaseNotifier):
    """Post a signed completion event built from a collect task's manifest, retrying transient failures.

    :param url: endpoint to POST to (templated); default the connection's ``extra.url`` or its host when
        that is a full URL.
    :param conn_id: connection holding the signing secret in its password (several, space-separated,
        sign with each: key rotation) and optionally the URL (templated).
    :param secret: the secret itself; prefer ``conn_id`` so it never sits in DAG code.
    :param manifest_task_id: task whose ``return_value`` is the manifest; default the task the callback
        belongs to (templated).
    :param max_attempts: attempts in all; 429, 408, 5xx and transport errors are retried with exponential
        backoff (``backoff`` seconds doubling, capped at ``max_backoff``, honouring ``Retry-After``).
        Other 4xx answers fail at once. Each attempt is signed anew with the same ``webhook-id``.

    A delivery that still fails raises :class:`WebhookDeliveryError`; Airflow logs a failing callback
    without changing the task's state.
    """

    template_fields: Sequence[str] = ("url", "conn_id", "manifest_task_id")

    def __init__(
        self,
        *,
        url: str | None = None,
        conn_id: str | None = None,
        secret: str | None = None,
        manifest_task_id: str | None = None,
        max_attempts: int = 5,
        backoff: float = 1.0,
        max_backoff: float = 30.0,
        timeout: float = 10.0,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__()
        if secret is None and conn_id is None:
            raise ConfigurationError("secret", "no signing secret", "pass conn_id= (password = secret) or secret=")
        if max_attempts < 1:
            raise ConfigurationError("max_attempts", f"{max_attempts} is below 1", "use e.g. 5")
        self.url = url
        self.conn_id = conn_id
        self.secret = secret
        self.manifest_task_id = manifest_task_id
        self.max_attempts = max_attempts
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.timeout = timeout
        self.headers = dict(headers or {})

    # --- configuration -------------------------------------------------------------------------
    def _endpoint_and_secrets(self) -> tuple[str, list[str]]:
        url, secrets = self.url, [self.secret] if self.secret else []
        if self.conn_id:
            conn = BaseHook.get_connection(self.conn_id)
            if not secrets and conn.password:
                secrets = conn.password.split()
            if not url:
                extra = conn.extra_dejson if conn.extra else {}
                url = extra.get("url") or (conn.host if conn.host and "://" in conn.host else None)
        if not url:
            raise ConfigurationError("url", "no endpoint", "pass url= or set the connection's extra {'url': …}")
        if not secrets:
            raise ConfigurationError("secret", f"connection {self.conn_id!r} has no password",
                                     "put the signing secret (e.g. whsec_…) in the connection's password")
        return url, secrets

    # --- payload -------------------------------------------------------------------------------
    def build_event(self, context: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
        """(webhook id, event) for the manifest of the task in `context`."""
        ti = context["ti"]
        task_id = self.manifest_task_id or ti.task_id
        manifest = ti.xcom_pull(task_ids=task_id)
        if not isinstance(manifest, Mapping) or "path" not in manifest:
            raise WebhookDeliveryError(f"task {task_id!r} returned no collect manifest (got {type(manifest).__name__})")
        state = str(manifest.get("state") or "completed")
        event_type = f"batchwork.job.{state}"
        data: dict[str, Any] = {
            key: manifest[key]
            for key in ("state", "counts", "rows", "path", "files", "provider", "model", "batch_ids")
            if key in manifest
        }
        data["job"] = self._job(context, manifest)
        for key in ("cost_usd", "cost"):
            if manifest.get(key) is not None:
                data[key] = manifest[key]
        airflow = {"dag_id": ti.dag_id, "run_id": ti.run_id, "task_id": task_id,
                   "map_index": getattr(ti, "map_index", -1), "try_number": getattr(ti, "try_number", None)}
        data["airflow"] = airflow
        identity = "|".join(str(airflow[k]) for k in ("dag_id", "run_id", "task_id", "map_index", "try_number"))
        webhook_id = "msg_" + hashlib.sha256(f"{identity}|{event_type}".encode()).hexdigest()[:32]
        event = {
            "type": event_type,
            "timestamp": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "data": data,
        }
        return webhook_id, event

    @staticmethod
    def _job(context: Mapping[str, Any], manifest: Mapping[str, Any]) -> dict[str, Any]:
        # The collect task's rendered `job` is the full handle; fall back to what the manifest names.
        task = context.get("task")
        try:
            return JobHandle.coerce(getattr(task, "job", None) or {}).to_dict()
        except ConfigurationError:
            return {k: manifest[k] for k in ("provider", "model", "batch_ids") if k in manifest}

    # --- delivery ------------------------------------------------------------------------------
    def deliver(self, url: str, secrets: list[str], webhook_id: str, event: Mapping[str, Any]) -> httpx.Response:
        """POST the event, retrying transient failures; the final 2xx response."""
        body = json.dumps(event, separators=(",", ":"), sort_keys=True).encode()
        last: str = ""
        with httpx.Client(timeout=self.timeout, follow_redirects=False) as client:
            for attempt in range(1, self.max_attempts + 1):
                headers = {"content-type": "application/json", "user-agent": USER_AGENT, **self.headers,
                           **signed_headers(secrets, body, webhook_id=webhook_id)}
                retry_after = None
                try:
                    response = client.post(url, content=body, headers=headers)
                except httpx.TransportError as exc:
                    last = f"{type(exc).__name__}: {exc}"
                else:
                    if response.is_success:
                        self.log.info("Delivered %s (%s) to %s on attempt %d", event["type"], webhook_id, url, attempt)
                        return response
                    last = f"HTTP {response.status_code}"
                    if response.status_code not in RETRY_STATUSES:
                        raise WebhookDeliveryError(f"{url} refused webhook {webhook_id}: {last}")
                    retry_after = _retry_after(response)
                if attempt == self.max_attempts:
                    break
                delay = retry_after if retry_after is not None else self.backoff * 2 ** (attempt - 1)
                delay = min(self.max_backoff, delay) * (1 if retry_after is not None else random.uniform(0.8, 1.2))
                self.log.warning("Webhook %s to %s failed (%s), attempt %d/%d; retrying in %.1fs",
                                 webhook_id, url, last, attempt, self.max_attempts, delay)
                time.sleep(delay)
        raise WebhookDeliveryError(f"webhook {webhook_id} to {url} failed after {self.max_attempts} attempts: {last}")

    def notify(self, context: Any) -> None:
        url, secrets = self._endpoint_and_secrets()
        webhook_id, event = self.build_event(context)
        self.deliver(url, secrets, webhook_id, event)
