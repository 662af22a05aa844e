"""Normalized batch status, counts and per-item results (contract §5)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

BatchState = Literal[
    "validating", "in_progress", "finalizing", "completed", "failed", "expired", "cancelling", "cancelled"
]
ItemStatus = Literal["succeeded", "errored", "expired", "canceled", "missing", "invalid_output"]
FinishReason = Literal["stop", "length", "content_filter", "tool_calls", "error", "other"]

TERMINAL_STATES: frozenset[str] = frozenset({"completed", "failed", "expired", "cancelled"})
# When shards end differently, the job reports the most severe terminal state.
_SEVERITY = ("completed", "cancelled", "expired", "failed")
# When shards are still running, the job reports the least advanced running state.
_PROGRESS = ("validating", "in_progress", "cancelling", "finalizing")


@dataclass(frozen=True)
class Counts:
    """Item counts of a batch or job; `processing` is what is not yet final."""

    total: int = 0
    succeeded: int = 0
    errored: int = 0
    expired: int = 0
    canceled: int = 0
    processing: int = 0

    def __add__(self, other: Counts) -> Counts:
        return Counts(*(a + b for a, b in zip(self.as_tuple(), other.as_tuple(), strict=True)))

    def as_tuple(self) -> tuple[int, int, int, int, int, int]:
        return (self.total, self.succeeded, self.errored, self.expired, self.canceled, self.processing)

    def as_dict(self) -> dict[str, int]:
        return {
            "total": self.total, "succeeded": self.succeeded, "errored": self.errored,
            "expired": self.expired, "canceled": self.canceled, "processing": self.processing,
        }

    @property
    def done(self) -> int:
        return self.total - self.processing


@dataclass(frozen=True)
class BatchStatus:
    """One provider batch as seen at one poll."""

    id: str
    state: BatchState
    counts: Counts
    raw_state: str
    error_message: str | None = None

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL_STATES


@dataclass(frozen=True)
class JobStatus:
    """All provider batches of one job, combined."""

    state: BatchState
    counts: Counts
    batches: tuple[BatchStatus, ...] = field(default_factory=tuple)

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL_STATES

    @classmethod
    def combine(cls, batches: list[BatchStatus]) -> JobStatus:
        if len(batches) == 1:  # the usual job, polled by every trigger: no sums, same result
            (only,) = batches
            return cls(state=only.state, counts=only.counts, batches=(only,))
        counts = Counts()
        for batch in batches:
            counts = counts + batch.counts
        running = [b.state for b in batches if not b.terminal]
        state: BatchState
        if not batches:
            # A job whose every answer was reused (engine/dedup.py) has no batch: it is done.
            state = "completed"
        elif running:
            state = min(running, key=_PROGRESS.index)
        else:
            state = max((b.state for b in batches), key=_SEVERITY.index)
        return cls(state=state, counts=counts, batches=tuple(batches))

    def progress_line(self) -> str:
        c = self.counts
        pct = (100 * c.done // c.total) if c.total else 0
        line = f"{c.done}/{c.total} done ({pct}%), {c.succeeded} succeeded, {c.errored} errored"
        if c.expired:
            line += f", {c.expired} expired"
        if c.canceled:
            line += f", {c.canceled} canceled"
        return f"{self.state}: {line}"


@dataclass(slots=True)
class ItemResult:
    """One normalized result row (contract §6)."""

    custom_id: str
    status: ItemStatus
    batch_id: str
    response: str | None
    text: str | None = None
    finish_reason: FinishReason | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    total_tokens: int | None = None
    error_code: str | None = None
    error_message: str | None = None
    embedding: list[float] | None = None
    tool_calls: str | None = None
    """JSON text: a list of `{id, name, arguments}` (arguments as a JSON object) when the model called tools."""
