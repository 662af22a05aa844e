"""The emulator's single in-memory state store, shared by every provider's routes.

It knows files, batches, items and results, and a generic batch lifecycle computed lazily from the
clock; it knows nothing about any provider's wire format. Provider route modules map the generic
:data:`Phase` onto their own status enum and pass a *renderer* that turns one item into that
provider's result line.

Lifecycle of a batch created at ``t0`` with ``P = processing_seconds`` and ``short = min(P / 10, 1 s)``::

    validating [t0, t0+short) -> in_progress [.., t0+P-short) -> finalizing [.., t0+P) -> ended / expired
    with validation errors:   validating [t0, t0+short) -> failed
    cancel at tc (not ended): cancelling [tc, tc+short) -> cancelled

Items finish one after another, evenly spread over ``in_progress``; an item carrying the ``expire``
marker never finishes, so it expires at the end (and the batch's terminal phase is ``expired``). On
cancel, items that had not finished become ``canceled``. Results are rendered once, the first time
anyone looks at the batch after it reached a terminal phase.

Batch faults come from the store's :class:`~airflow_batchwork.testing.faults.Faults`, asked once per
:meth:`Store.create_batch`: ``fail_validation`` gives the batch a validation error (or marks every item
``fail_validation``, which errors), ``expire_partial`` marks the second half of the items ``expire``. Files written by
a batch's end hook are that batch's result files (:attr:`StoredFile.result_of`).
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from airflow_batchwork.testing.echo import find_marker
from airflow_batchwork.testing.faults import VALIDATION_FAILURE_MESSAGE, Faults

__all__ = [
    "TERMINAL_PHASES",
    "BatchCounts",
    "BatchError",
    "BatchView",
    "EndHook",
    "Item",
    "ItemResult",
    "Outcome",
    "Phase",
    "Renderer",
    "RequestRecord",
    "Store",
    "StoredFile",
]

Phase = Literal[
    "validating", "in_progress", "finalizing", "ended", "expired", "failed", "cancelling", "cancelled"
]
Outcome = Literal["succeeded", "errored", "expired", "canceled"]

TERMINAL_PHASES: frozenset[Phase] = frozenset({"ended", "expired", "failed", "cancelled"})

# Longest duration of the short phases (validating, finalizing, cancelling), so that a large
# processing_seconds keeps a batch in_progress (handy for cancel tests) instead of validating for ages.
_MAX_SHORT_PHASE_SECONDS = 1.0


@dataclass(frozen=True)
class StoredFile:
    """An uploaded or generated file."""

    id: str
    provider: str
    filename: str
    purpose: str
    data: bytes
    created_at: float
    result_of: str | None = None
    """Id of the batch whose results this file holds (set for files written by a batch's end hook)."""

    @property
    def size(self) -> int:
        """Size in bytes."""
        return len(self.data)


@dataclass(frozen=True)
class Item:
    """One request inside a batch."""

    index: int
    custom_id: str
    body: Mapping[str, Any]
    """The request body as the provider received it (e.g. OpenAI ``body``, Anthropic ``params``)."""
    marker: str | None = None
    """The item-fault marker found in the body (see :func:`echo.find_marker`), if any, or one a batch fault
    assigned: ``expire`` (``expire_partial``) or ``fail_validation`` (on the items; errors)."""


@dataclass(frozen=True)
class ItemResult:
    """One rendered result: its generic outcome and the provider's result line."""

    custom_id: str
    outcome: Outcome
    line: Mapping[str, Any]
    input_tokens: int = 0
    output_tokens: int = 0


@dataclass(frozen=True)
class BatchError:
    """A batch-level validation error (makes the batch ``failed``)."""

    code: str
    message: str
    line: int | None = None
    param: str | None = None


@dataclass(frozen=True)
class BatchCounts:
    """Items per generic outcome; ``processing`` = not finished yet."""

    total: int
    processing: int
    succeeded: int = 0
    errored: int = 0
    expired: int = 0
    canceled: int = 0


@dataclass(frozen=True)
class RequestRecord:
    """One HTTP request the emulator answered (see :attr:`Store.requests`)."""

    provider: str
    method: str
    path: str
    status_code: int
    """The status sent; 0 if the connection was dropped before a status line."""
    fault: str | None = None
    """The faults injected into this request, comma-separated in the order applied (e.g. ``"slow,rate_limit"``)."""

    @property
    def faults(self) -> tuple[str, ...]:
        """The injected faults as a tuple (empty without faults)."""
        return tuple(self.fault.split(",")) if self.fault else ()


# A renderer turns an item plus the outcome the store decided into the provider's result line.
# It may return a different outcome (e.g. "errored" for a request the provider finds invalid).
Renderer = Callable[[Item, Outcome], ItemResult]


@dataclass(frozen=True)
class BatchView:
    """A consistent snapshot of a batch at one instant (returned by every :class:`Store` accessor)."""

    id: str
    provider: str
    endpoint: str
    model: str | None
    metadata: Mapping[str, Any]
    items: tuple[Item, ...]
    created_at: float
    processing_seconds: float
    phase: Phase
    counts: BatchCounts
    in_progress_at: float | None
    finalizing_at: float | None
    ended_at: float | None
    """When the batch reached its terminal phase (ended, expired, failed or cancelled)."""
    cancel_requested_at: float | None
    errors: tuple[BatchError, ...]
    results: tuple[ItemResult, ...] | None
    """The rendered results once terminal, else None (failed batches have an empty tuple)."""
    extra: Mapping[str, Any]
    """Provider-specific fields (e.g. OpenAI ``input_file_id``, ``output_file_id``)."""

    @property
    def request_count(self) -> int:
        """Number of items."""
        return len(self.items)

    @property
    def terminal(self) -> bool:
        """True once the batch can no longer change."""
        return self.phase in TERMINAL_PHASES


# Called once when a batch's results are first rendered; returns updates for ``extra``
# (OpenAI writes its output/error files here).
EndHook = Callable[[BatchView], Mapping[str, Any]]


@dataclass
class _Batch:
    id: str
    provider: str
    endpoint: str
    model: str | None
    metadata: dict[str, Any]
    items: tuple[Item, ...]
    created_at: float
    processing_seconds: float
    render: Renderer
    on_end: EndHook | None
    errors: tuple[BatchError, ...]
    extra: dict[str, Any] = field(default_factory=dict)
    cancel_requested_at: float | None = None
    results: tuple[ItemResult, ...] | None = None

    @property
    def short(self) -> float:
        return min(self.processing_seconds / 10, _MAX_SHORT_PHASE_SECONDS)

    @property
    def in_progress_from(self) -> float:
        return self.created_at + self.short

    @property
    def finalizing_from(self) -> float:
        return self.created_at + self.processing_seconds - self.short

    @property
    def ends_at(self) -> float:
        """When the batch ends if nobody cancels it (or fails, for an invalid batch)."""
        if self.errors:
            return self.created_at + self.short
        return self.created_at + self.processing_seconds

    @property
    def cancelled_at(self) -> float | None:
        if self.cancel_requested_at is None:
            return None
        return self.cancel_requested_at + self.short

    @property
    def terminal_at(self) -> float:
        cancelled_at = self.cancelled_at
        return self.ends_at if cancelled_at is None else cancelled_at

    def done_at(self, item: Item) -> float | None:
        """When an item finishes processing; None for an item that never does (expire marker)."""
        if item.marker == "expire":
            return None
        span = self.finalizing_from - self.in_progress_from
        return self.in_progress_from + span * (item.index + 1) / len(self.items)

    def is_done(self, item: Item, now: float) -> bool:
        done_at = self.done_at(item)
        if done_at is None:
            return False
        if self.cancel_requested_at is not None and done_at > self.cancel_requested_at:
            return False
        return done_at <= now


def _planned_outcome(item: Item) -> Outcome:
    if item.marker in ("error", "fail_validation", "transient"):
        return "errored"
    if item.marker == "expire":
        return "expired"
    return "succeeded"


class Store:
    """Thread-safe in-memory state for all emulated providers.

    Every accessor takes the provider name, so one provider can never see another's ids.
    ``clock`` returns wall-clock seconds; tests may inject a fake one. ``faults`` is the fault model every
    provider module reaches as ``store.faults`` (default: one that never injects anything).
    """

    def __init__(
        self,
        processing_seconds: float = 1.0,
        clock: Callable[[], float] = time.time,
        faults: Faults | None = None,
    ) -> None:
        self.faults = faults if faults is not None else Faults()
        self._lock = threading.RLock()
        self._clock = clock
        self._processing_seconds = float(processing_seconds)
        self._counter = 0
        # Per-store salt, so ids from two emulators never collide yet stay monotonic within one.
        self._salt = secrets.token_hex(4)
        self._files: dict[str, StoredFile] = {}
        self._batches: dict[str, _Batch] = {}
        self._requests: list[RequestRecord] = []
        self._rendering: str | None = None  # id of the batch whose end hook runs (under the lock)
        self._transient_seen: set[tuple[str, str, str]] = set()

    # -- settings and ids ------------------------------------------------------------------------

    @property
    def processing_seconds(self) -> float:
        """Processing time given to batches created from now on (existing batches keep theirs)."""
        return self._processing_seconds

    @processing_seconds.setter
    def processing_seconds(self, value: float) -> None:
        if value < 0:
            raise ValueError(f"processing_seconds must be >= 0, got {value}")
        self._processing_seconds = float(value)

    @property
    def clock(self) -> Callable[[], float]:
        """The wall clock batches progress by; may be replaced at any time, e.g. by one a test moves forward."""
        return self._clock

    @clock.setter
    def clock(self, value: Callable[[], float]) -> None:
        if not callable(value):
            raise TypeError(f"clock must be a callable returning seconds, got {type(value).__name__}")
        self._clock = value

    def now(self) -> float:
        """The store's clock."""
        return self._clock()

    def new_id(self, prefix: str) -> str:
        """A fresh id such as ``batch_1a2b3c4d000007``; ids sort in creation order within a store."""
        with self._lock:
            self._counter += 1
            return f"{prefix}{self._salt}{self._counter:06d}"

    # -- files -----------------------------------------------------------------------------------

    def add_file(
        self, provider: str, data: bytes, filename: str, purpose: str, *, file_id: str | None = None
    ) -> StoredFile:
        """Store a file and return it; ``file_id`` is for ids announced before the bytes arrive."""
        with self._lock:
            stored = StoredFile(
                id=file_id or self.new_id("file-"),
                provider=provider,
                filename=filename,
                purpose=purpose,
                data=bytes(data),
                created_at=self.now(),
                result_of=self._rendering,
            )
            self._files[stored.id] = stored
        return stored

    def get_file(self, provider: str, file_id: str) -> StoredFile | None:
        """The file, or None if unknown to this provider."""
        with self._lock:
            stored = self._files.get(file_id)
        return stored if stored is not None and stored.provider == provider else None

    def delete_file(self, provider: str, file_id: str) -> bool:
        """Delete a file; False if it did not exist."""
        with self._lock:
            if self.get_file(provider, file_id) is None:
                return False
            del self._files[file_id]
            return True

    def files(self, provider: str | None = None) -> list[StoredFile]:
        """All files (of one provider), oldest first."""
        with self._lock:
            return [f for f in self._files.values() if provider is None or f.provider == provider]

    # -- batches ---------------------------------------------------------------------------------

    def create_batch(
        self,
        provider: str,
        *,
        endpoint: str,
        items: Sequence[tuple[str, Mapping[str, Any]]],
        render: Renderer,
        model: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        errors: Sequence[BatchError] = (),
        on_end: EndHook | None = None,
        extra: Mapping[str, Any] | None = None,
        id_prefix: str = "batch_",
        validation_failure: Literal["batch", "items"] = "batch",
    ) -> BatchView:
        """Create a batch from ``(custom_id, body)`` pairs.

        With ``errors`` the batch has no items and fails after the validating phase. ``validation_failure``
        says how an injected ``fail_validation`` shows: a failed batch, or (for providers without a
        batch-level failed state) every item ``errored``.
        """
        injected = self.faults.on_create(provider, 0 if errors else len(items))
        if injected.fail_validation and validation_failure == "batch":
            errors = [BatchError("validation_failed", VALIDATION_FAILURE_MESSAGE)]

        def marker(index: int, custom_id: str, body: Mapping[str, Any]) -> str | None:
            if injected.fail_validation:
                return "fail_validation"
            if injected.expire_from is not None and index >= injected.expire_from:
                return "expire"
            return self._transient_once(provider, custom_id, body, find_marker(body))

        parsed = (
            ()
            if errors
            else tuple(
                Item(index=i, custom_id=custom_id, body=body, marker=marker(i, custom_id, body))
                for i, (custom_id, body) in enumerate(items)
            )
        )
        with self._lock:
            batch = _Batch(
                id=self.new_id(id_prefix),
                provider=provider,
                endpoint=endpoint,
                model=model,
                metadata=dict(metadata or {}),
                items=parsed,
                created_at=self.now(),
                processing_seconds=self._processing_seconds,
                render=render,
                on_end=on_end,
                errors=tuple(errors),
                extra=dict(extra or {}),
            )
            self._batches[batch.id] = batch
            return self._view(batch)

    def get_batch(self, provider: str, batch_id: str) -> BatchView | None:
        """Snapshot of a batch, or None if unknown to this provider."""
        with self._lock:
            batch = self._find(provider, batch_id)
            return None if batch is None else self._view(batch)

    def batches(self, provider: str | None = None) -> list[BatchView]:
        """Snapshots of all batches (of one provider), oldest first."""
        with self._lock:
            return [
                self._view(b) for b in self._batches.values() if provider is None or b.provider == provider
            ]

    def batch_ids(self, provider: str | None = None) -> list[str]:
        """Ids of all batches (of one provider), oldest first; unlike `batches`, the clock is not asked (a
        clock may call this)."""
        with self._lock:
            return [b.id for b in self._batches.values() if provider is None or b.provider == provider]

    def cancel_batch(self, provider: str, batch_id: str) -> BatchView | None:
        """Request cancellation; a no-op on a batch already cancelling or terminal. None if unknown."""
        with self._lock:
            batch = self._find(provider, batch_id)
            if batch is None:
                return None
            now = self.now()
            if batch.cancel_requested_at is None and now < batch.ends_at:
                batch.cancel_requested_at = now
            return self._view(batch)

    def delete_batch(self, provider: str, batch_id: str) -> bool:
        """Forget a batch; False if it did not exist."""
        with self._lock:
            if self._find(provider, batch_id) is None:
                return False
            del self._batches[batch_id]
            return True

    def _transient_once(self, provider: str, custom_id: str, body: Mapping[str, Any], marker: str | None
                        ) -> str | None:
        """``transient`` only the first time this provider sees this custom_id with this body."""
        if marker != "transient":
            return marker
        key = (provider, custom_id, json.dumps(body, sort_keys=True, default=str))
        with self._lock:
            if key in self._transient_seen:
                return None
            self._transient_seen.add(key)
        return marker

    # -- request log (written by the fault middleware) -------------------------------------------

    def record_request(self, record: RequestRecord) -> None:
        """Append one answered HTTP request to the log."""
        with self._lock:
            self._requests.append(record)

    @property
    def requests(self) -> list[RequestRecord]:
        """Every answered request, in order (copy)."""
        with self._lock:
            return list(self._requests)

    # -- internals -------------------------------------------------------------------------------

    def _find(self, provider: str, batch_id: str) -> _Batch | None:
        batch = self._batches.get(batch_id)
        return batch if batch is not None and batch.provider == provider else None

    def _phase(self, batch: _Batch, now: float) -> Phase:
        if batch.errors:
            return "failed" if now >= batch.ends_at else "validating"
        cancelled_at = batch.cancelled_at
        if cancelled_at is not None and batch.cancel_requested_at is not None:
            if now >= cancelled_at:
                return "cancelled"
            if now >= batch.cancel_requested_at:
                return "cancelling"
        if now >= batch.ends_at:
            return "expired" if any(r.outcome == "expired" for r in batch.results or ()) else "ended"
        if now >= batch.finalizing_from:
            return "finalizing"
        if now >= batch.in_progress_from:
            return "in_progress"
        return "validating"

    def _finish(self, batch: _Batch) -> None:
        """Render results once, when the batch first turns terminal."""
        if batch.cancel_requested_at is not None:
            planned = [
                _planned_outcome(item) if batch.is_done(item, batch.cancel_requested_at) else "canceled"
                for item in batch.items
            ]
        else:
            planned = [_planned_outcome(item) for item in batch.items]
        batch.results = tuple(
            batch.render(item, outcome) for item, outcome in zip(batch.items, planned, strict=True)
        )
        if batch.on_end is not None:
            self._rendering = batch.id
            try:
                batch.extra.update(batch.on_end(self._view(batch)))
            finally:
                self._rendering = None

    def _view(self, batch: _Batch) -> BatchView:
        now = self.now()
        if batch.results is None and now >= batch.terminal_at:
            batch.results = ()  # guards against re-entry from on_end's own view
            try:
                self._finish(batch)
            except BaseException:
                batch.results = None
                raise
        phase = self._phase(batch, now)
        terminal = phase in TERMINAL_PHASES
        stop = batch.cancel_requested_at if batch.cancel_requested_at is not None else now
        reached = min(now, stop)

        counts: dict[str, int] = {"succeeded": 0, "errored": 0, "expired": 0, "canceled": 0}
        if terminal:
            for result in batch.results or ():
                counts[result.outcome] += 1
            processing = 0
        else:
            for item in batch.items:
                if batch.is_done(item, now):
                    counts[_planned_outcome(item)] += 1
            processing = len(batch.items) - sum(counts.values())

        in_progress_at = (
            batch.in_progress_from if not batch.errors and reached >= batch.in_progress_from else None
        )
        finalizing_at = (
            batch.finalizing_from if not batch.errors and reached >= batch.finalizing_from else None
        )
        return BatchView(
            id=batch.id,
            provider=batch.provider,
            endpoint=batch.endpoint,
            model=batch.model,
            metadata=dict(batch.metadata),
            items=batch.items,
            created_at=batch.created_at,
            processing_seconds=batch.processing_seconds,
            phase=phase,
            counts=BatchCounts(total=len(batch.items), processing=processing, **counts),
            in_progress_at=in_progress_at,
            finalizing_at=finalizing_at,
            ended_at=batch.terminal_at if terminal else None,
            cancel_requested_at=batch.cancel_requested_at,
            errors=batch.errors,
            results=batch.results if terminal else None,
            extra=dict(batch.extra),
        )
