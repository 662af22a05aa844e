"""Emulated provider webhooks: signed batch-completion events POSTed to a URL you configure.

``Emulator(webhooks={"openai": (url, secret)})`` or ``emu.configure_webhook("gemini", url, secret)``:
when a batch of that provider, created after the configuration, reaches a terminal state, a background
thread POSTs one Standard-Webhooks-signed event in the provider's shape (reference §2.8, §4.8):

- OpenAI: ``{"id": "evt_…", "object": "event", "type": "batch.completed|failed|expired|cancelled",
  "created_at": <unix s>, "data": {"id": "batch_…"}}``.
- Gemini: ``{"type": "batch.succeeded|failed|expired|cancelled", "version": "v1", "timestamp": "<RFC 3339>",
  "data": {"id": "batches/…", "output_file_uri"?, "error_code"?, "error_message"?}}``.

Each event is delivered once; a non-2xx answer or a transport error is retried twice (re-signed with a
fresh timestamp, same ``webhook-id``, as real senders do). Every outcome is in :attr:`WebhookSender.deliveries`.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import httpx

from airflow_batchwork.testing.providers.base import rfc3339
from airflow_batchwork.testing.store import BatchView, Store
from airflow_batchwork.webhooks.signing import signed_headers

__all__ = ["EVENT_BUILDERS", "Delivery", "WebhookSender", "WebhookTarget"]

# Event builder: a terminal batch -> (extra headers, JSON payload), or None when the phase sends nothing.
EventBuilder = Callable[[BatchView], tuple[dict[str, str], dict[str, Any]] | None]

_OPENAI_TYPES = {"ended": "batch.completed", "failed": "batch.failed", "expired": "batch.expired",
                 "cancelled": "batch.cancelled"}
_GEMINI_TYPES = {"ended": "batch.succeeded", "failed": "batch.failed", "expired": "batch.expired",
                 "cancelled": "batch.cancelled"}


def _openai_event(view: BatchView) -> tuple[dict[str, str], dict[str, Any]] | None:
    event_type = _OPENAI_TYPES.get(view.phase)
    if event_type is None:
        return None
    headers = {"user-agent": "OpenAI/1.0 (+https://platform.openai.com/docs/webhooks)"}
    return headers, {
        "id": f"evt_{secrets.token_hex(16)}",
        "object": "event",
        "type": event_type,
        "created_at": int(view.ended_at or time.time()),
        "data": {"id": view.id},
    }


def _gemini_event(view: BatchView) -> tuple[dict[str, str], dict[str, Any]] | None:
    event_type = _GEMINI_TYPES.get(view.phase)
    if event_type is None:
        return None
    data: dict[str, Any] = {"id": view.id}
    if view.phase == "ended" and view.extra.get("responses_file"):
        data["output_file_uri"] = view.extra["responses_file"]
    if view.phase == "failed":
        data["error_code"] = "INVALID_ARGUMENT"
        data["error_message"] = "; ".join(e.message for e in view.errors) or "The batch failed."
    return {}, {"type": event_type, "version": "v1", "timestamp": rfc3339(view.ended_at), "data": data}


#: Store namespace -> event builder; only providers with real batch webhooks are here.
EVENT_BUILDERS: dict[str, EventBuilder] = {"openai": _openai_event, "google": _gemini_event}
_ALIASES = {"gemini": "google"}


@dataclass(frozen=True)
class WebhookTarget:
    """Where one provider's events go, and since when (earlier batches send nothing)."""

    url: str
    secret: str
    since: float


@dataclass(frozen=True)
class Delivery:
    """The outcome of one event: the last HTTP status (None after transport errors) and attempts made."""

    provider: str
    batch_id: str
    event_type: str
    webhook_id: str
    status_code: int | None
    attempts: int
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


class WebhookSender:
    """Watch the store and POST each newly terminal batch's event once, from background threads."""

    def __init__(self, store: Store, *, interval: float = 0.05, attempts: int = 3, backoff: float = 0.2,
                 timeout: float = 5.0) -> None:
        self.store = store
        self.interval = interval
        self.attempts = attempts
        self.backoff = backoff
        self.timeout = timeout
        self._targets: dict[str, WebhookTarget] = {}
        self._sent: set[tuple[str, str]] = set()
        self._deliveries: list[Delivery] = []
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._running = False

    # -- configuration ---------------------------------------------------------------------------
    def configure(self, provider: str, url: str, secret: str) -> None:
        """Send `provider`'s events for batches created from now on to `url`, signed with `secret`."""
        name = _ALIASES.get(provider, provider)
        if name not in EVENT_BUILDERS:
            raise ValueError(f"{provider!r} sends no batch webhooks; the emulator sends them for: "
                             f"{', '.join(sorted(EVENT_BUILDERS))} (alias gemini)")
        with self._lock:
            self._targets[name] = WebhookTarget(url=url, secret=secret, since=self.store.now())
        if self._running:
            self._ensure_thread()

    def remove(self, provider: str) -> None:
        """Stop sending `provider`'s events."""
        with self._lock:
            self._targets.pop(_ALIASES.get(provider, provider), None)

    @property
    def deliveries(self) -> list[Delivery]:
        """Every finished delivery, in completion order (copy)."""
        with self._lock:
            return list(self._deliveries)

    def wait_for(self, batch_id: str, timeout: float = 10.0) -> Delivery:
        """Block until the event of `batch_id` has been delivered (or given up on)."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                found = next((d for d in self._deliveries if d.batch_id == batch_id), None)
                if found is not None:
                    return found
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"no webhook delivered for batch {batch_id} within {timeout}s")
                self._changed.wait(remaining)

    # -- lifecycle -------------------------------------------------------------------------------
    def start(self) -> None:
        """Start watching (the thread only runs while some provider is configured)."""
        self._running = True
        self._stop.clear()
        if self._targets:
            self._ensure_thread()

    def stop(self) -> None:
        """Stop watching and wait briefly for deliveries in flight."""
        self._running = False
        self._stop.set()
        thread, pool = self._thread, self._pool
        self._thread = self._pool = None
        if thread is not None:
            thread.join(5)
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)

    def _ensure_thread(self) -> None:
        with self._lock:
            if self._thread is not None and self._thread.is_alive():
                return
            self._pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="batchwork-webhook")
            self._thread = threading.Thread(target=self._watch, name="batchwork-webhook-watch", daemon=True)
            self._thread.start()

    def _watch(self) -> None:
        while not self._stop.wait(self.interval):
            self.poll_once()

    def poll_once(self) -> int:
        """Queue the events of batches that turned terminal since the last call; returns how many."""
        with self._lock:
            targets = dict(self._targets)
        queued = 0
        for provider, target in targets.items():
            for view in self.store.batches(provider):  # a snapshot also ends a batch whose time is up
                key = (provider, view.id)
                if not view.terminal or view.created_at < target.since or key in self._sent:
                    continue
                built = EVENT_BUILDERS[provider](view)
                self._sent.add(key)
                if built is None or self._pool is None:
                    continue
                self._pool.submit(self._deliver, provider, view.id, target, *built)
                queued += 1
        return queued

    def _deliver(self, provider: str, batch_id: str, target: WebhookTarget, headers: Mapping[str, str],
                 payload: Mapping[str, Any]) -> None:
        body = json.dumps(payload, separators=(",", ":")).encode()
        webhook_id = f"msg_{secrets.token_hex(12)}"
        status: int | None = None
        error: str | None = None
        attempt = 0
        with httpx.Client(timeout=self.timeout) as client:
            for attempt in range(1, self.attempts + 1):
                signed = signed_headers(target.secret, body, webhook_id=webhook_id)
                try:
                    response = client.post(target.url, content=body, headers={
                        "content-type": "application/json", **headers, **signed})
                    status, error = response.status_code, None
                    if response.is_success:
                        break
                except httpx.HTTPError as exc:
                    status, error = None, f"{type(exc).__name__}: {exc}"
                if attempt < self.attempts and not self._stop.wait(self.backoff * attempt):
                    continue
                break
        with self._changed:
            self._deliveries.append(Delivery(provider, batch_id, str(payload["type"]), webhook_id, status, attempt,
                                             error))
            self._changed.notify_all()
