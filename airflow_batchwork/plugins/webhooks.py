"""Webhook intake: an API-server plugin receiving OpenAI and Gemini batch webhooks at ``/batchwork/webhooks/*``.

``POST /batchwork/webhooks/openai`` and ``POST /batchwork/webhooks/gemini`` verify the Standard Webhooks
signature, then turn a batch-completion event into an Airflow asset event on
``batchwork://<provider>/batches`` (see :func:`airflow_batchwork.assets.batch_completions`), so DAGs
scheduled on it start at once; the notice is also recorded in that asset's state store under the batch
id, where :class:`~airflow_batchwork.triggers.webhook.WebhookBatchCompleteTrigger` finds it and polls
immediately instead of at its next interval.

Answers (the body is never logged):

==== ==========================================================================================
200  accepted; or ``ignored`` (not a batch event); or ``duplicate`` (a re-signed redelivery of a
     webhook id already processed: acknowledged so the sender stops retrying, not processed again)
400  missing/malformed Standard Webhooks headers, or a signed body that is not a provider event
401  signature mismatch (wrong secret, tampered body), or a timestamp more than 300 s off either way
404  unknown provider route
409  replay: the exact same signed delivery (id and timestamp) was already accepted
413  body over 1 MiB
503  no secret configured, or the event could not be recorded (the sender retries later)
==== ==========================================================================================

Secrets: the password of connection ``batchwork_webhook_openai`` / ``batchwork_webhook_google``
(several space-separated secrets are all accepted, for rotation), else env ``OPENAI_WEBHOOK_SECRET`` /
``GEMINI_WEBHOOK_SECRET``. These routes are deliberately outside Airflow's auth: providers cannot log
in, and the signature is the authentication.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Mapping
from typing import Any

from airflow.plugins_manager import AirflowPlugin
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from airflow_batchwork.webhooks.events import WEBHOOKS, BatchNotice, WebhookPayloadError, WebhookSpec, completions_uri
from airflow_batchwork.webhooks.signing import (
    DEFAULT_TOLERANCE,
    HEADER_ID,
    InMemorySeenIds,
    InvalidSecretError,
    MalformedHeaderError,
    MissingHeaderError,
    ReplayedWebhookError,
    SeenIdStore,
    SignatureMismatchError,
    SQLiteSeenIds,
    TimestampOutOfToleranceError,
    VerifiedDelivery,
    WebhookVerificationError,
    verify_once,
)

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 1024 * 1024
# OpenAI retries a delivery for up to 72 h; remember processed webhook ids a little longer.
DEDUPE_TTL = 4 * 24 * 3600

SecretLookup = Callable[[WebhookSpec], list[str]]
NoticeSink = Callable[[BatchNotice, VerifiedDelivery], Mapping[str, Any]]


def airflow_secrets(spec: WebhookSpec) -> list[str]:
    """Secrets from connection ``batchwork_webhook_<provider>`` (password), else the provider's env var."""
    try:
        from airflow.models.connection import Connection

        conn = Connection.get_connection_from_secrets(spec.secret_conn_id)
    except Exception:  # not found (AirflowNotFoundException) or secrets backend trouble: try env
        conn = None
    if conn is not None and conn.password:
        return conn.password.split()
    for name in spec.secret_env:
        if os.environ.get(name):
            return os.environ[name].split()
    return []


def notice_extra(notice: BatchNotice, delivery: VerifiedDelivery) -> dict[str, Any]:
    """The asset event's ``extra`` for a notice (also the state-store value the trigger reads)."""
    extra: dict[str, Any] = {
        "provider": notice.provider,
        "batch_id": notice.batch_id,
        "status": notice.status,
        "event_type": notice.event_type,
        "webhook_id": delivery.webhook_id,
        "webhook_timestamp": delivery.timestamp,
    }
    for key, value in (("event_id", notice.event_id), ("output_uri", notice.output_uri), ("error", notice.error)):
        if value is not None:
            extra[key] = value
    return extra


class AirflowAssetSink:
    """Record a notice in the metadata DB: an asset event, and a state-store entry keyed by batch id.

    Runs inside the API server, which owns the metadata DB; this is what ``POST /api/v2/assets/events``
    does, without needing an API user for the providers. The asset must be active, i.e. referenced by a
    DAG (as schedule, inlet or outlet); otherwise nothing listens and the notice is only logged.
    """

    def __call__(self, notice: BatchNotice, delivery: VerifiedDelivery) -> Mapping[str, Any]:
        from airflow.assets.manager import resolve_asset_manager
        from airflow.models.asset import AssetModel
        from airflow.utils.session import create_session
        from sqlalchemy import select

        uri = completions_uri(notice.provider)
        extra = notice_extra(notice, delivery)
        with create_session() as session:
            asset = session.scalar(select(AssetModel).where(AssetModel.uri == uri, AssetModel.active.has()))
            if asset is None:
                log.warning("No DAG references %s: %s webhook for %s not recorded", uri, notice.provider,
                            notice.batch_id)
                return {"asset_event_id": None, "reason": f"no DAG references {uri}"}
            event = resolve_asset_manager().register_asset_change(
                asset=asset, extra=extra, source_is_api=True, session=session
            )
            self._remember(asset.id, notice.batch_id, extra, session)
            return {"asset_event_id": event.id if event is not None else None}

    @staticmethod
    def _remember(asset_id: int, batch_id: str, extra: Mapping[str, Any], session: Any) -> None:
        try:  # the asset state store exists from Airflow 3.3 on
            from airflow._shared.state import AssetStateStoreWriterKind
            from airflow.state import AssetScope, get_state_backend
        except ImportError:
            return
        backend = get_state_backend()
        scope, value = AssetScope(asset_id=asset_id), json.dumps(dict(extra))
        setter = getattr(backend, "set_asset_state_store", None)
        if setter is not None:
            setter(scope, batch_id, value, kind=AssetStateStoreWriterKind.API, session=session)
        else:
            backend.set(scope, batch_id, value, session=session)


async def _read_capped(request: Request, limit: int) -> bytes | None:
    """The raw body, or None as soon as it exceeds `limit` bytes (never buffers more than that)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        return None
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def _answer(http_status: int, **body: Any) -> JSONResponse:
    return JSONResponse(body, status_code=http_status)


_REJECTIONS: tuple[tuple[type[Exception], int, str], ...] = (
    (ReplayedWebhookError, 409, "replayed"),
    (TimestampOutOfToleranceError, 401, "timestamp_out_of_tolerance"),
    (SignatureMismatchError, 401, "invalid_signature"),
    (MissingHeaderError, 400, "missing_header"),
    (MalformedHeaderError, 400, "malformed_header"),
)


def create_app(
    *,
    secrets: SecretLookup = airflow_secrets,
    sink: NoticeSink | None = None,
    seen: SeenIdStore | None = None,
    tolerance: float = DEFAULT_TOLERANCE,
    specs: Mapping[str, WebhookSpec] = WEBHOOKS,
) -> FastAPI:
    """The intake app (routes ``/webhooks/<route>``); the plugin mounts it under ``/batchwork``."""
    app = FastAPI(title="batchwork webhook intake", docs_url=None, redoc_url=None, openapi_url=None)
    store: SeenIdStore = seen if seen is not None else InMemorySeenIds()
    record: NoticeSink = sink if sink is not None else AirflowAssetSink()

    @app.post("/webhooks/{route}")
    async def receive(route: str, request: Request) -> JSONResponse:
        spec = specs.get(route)
        if spec is None:
            return _answer(404, error="unknown_route", routes=sorted(specs))
        client = request.client.host if request.client else "?"
        webhook_id = request.headers.get(HEADER_ID, "-")[:100]
        body = await _read_capped(request, MAX_BODY_BYTES)
        if body is None:
            log.warning("Rejected %s webhook %s from %s: body over %d bytes", route, webhook_id, client,
                        MAX_BODY_BYTES)
            return _answer(413, error="body_too_large")
        keys = await run_in_threadpool(secrets, spec)
        if not keys:
            log.error("No secret for %s webhooks: set connection %s (password) or env %s", route,
                      spec.secret_conn_id, " / ".join(spec.secret_env))
            return _answer(503, error="not_configured")
        try:
            delivery = verify_once(keys, request.headers, body, store, tolerance=tolerance)
        except (WebhookVerificationError, InvalidSecretError) as exc:
            status, code = next(((s, c) for t, s, c in _REJECTIONS if isinstance(exc, t)), (503, "bad_secret"))
            log.warning("Rejected %s webhook %s from %s: %s (%s)", route, webhook_id, client, code, exc)
            return _answer(status, error=code, detail=str(exc))
        try:
            notice = spec.parse(json.loads(body))
        except (ValueError, WebhookPayloadError) as exc:
            log.warning("Rejected %s webhook %s from %s: signed but not a provider event (%s)", route,
                        delivery.webhook_id, client, exc)
            return _answer(400, error="malformed_event", detail=str(exc))
        if notice is None:
            log.info("Ignored %s webhook %s: not a batch completion", route, delivery.webhook_id)
            return _answer(200, status="ignored")
        dedupe_key = f"processed:{route}:{delivery.webhook_id}"
        if not store.add(dedupe_key, ttl=DEDUPE_TTL):
            log.info("Duplicate %s webhook %s for %s: already processed", route, delivery.webhook_id, notice.batch_id)
            return _answer(200, status="duplicate", batch_id=notice.batch_id)
        try:
            result = await run_in_threadpool(record, notice, delivery)
        except Exception:
            store.discard(dedupe_key)  # let the sender's retry through
            log.exception("Could not record %s webhook %s for %s", route, delivery.webhook_id, notice.batch_id)
            return _answer(503, error="not_recorded")
        log.info("Accepted %s webhook %s: batch %s %s", route, delivery.webhook_id, notice.batch_id, notice.status)
        return _answer(200, status="accepted", provider=notice.provider, batch_id=notice.batch_id,
                       batch_status=notice.status, **dict(result))

    return app


def _default_seen_store() -> SeenIdStore:
    # One API-server worker keeps ids in memory; several workers on one host can share a SQLite file.
    path = os.environ.get("BATCHWORK_WEBHOOK_SEEN_IDS_PATH")
    if not path:
        try:
            from airflow.configuration import conf

            path = conf.get("batchwork", "webhook_seen_ids_path", fallback=None)
        except Exception:
            path = None
    return SQLiteSeenIds(path) if path else InMemorySeenIds()


class BatchworkWebhooksPlugin(AirflowPlugin):
    """Mounts the intake on the API server at ``/batchwork`` (Airflow >= 3.1 serves plugin FastAPI apps)."""

    name = "batchwork_webhooks"
    fastapi_apps = [{"name": "batchwork_webhooks", "app": create_app(seen=_default_seen_store()),
                     "url_prefix": "/batchwork"}]
