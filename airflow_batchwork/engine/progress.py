"""Progress lines with an ETA, rate-limited: `in_progress: 812/1000 done, 3 errored, 81%, ETA 4m`.

Pure (no Airflow, no I/O): the trigger and the script-level wait loop feed it each poll's status and
log whatever it returns.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from airflow_batchwork.values.status import JobStatus


def format_duration(seconds: float) -> str:
    """Short human duration: `45s`, `4m`, `2h 5m`, `3d 4h`."""
    seconds = max(0, round(seconds))
    if seconds < 90:
        return f"{seconds}s"
    minutes = round(seconds / 60)
    if minutes < 90:
        return f"{minutes}m"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours}h {minutes}m" if minutes else f"{hours}h"
    days, hours = divmod(hours, 24)
    return f"{days}d {hours}h" if hours else f"{days}d"


@dataclass
class ProgressReporter:
    """Turn successive job statuses into progress lines, at most one per `min_interval` seconds.

    A line is also emitted at once on the first status, whenever the job's state changes and when it
    ends. With `heartbeat` (seconds), a line after `min_interval` is only emitted when the counts moved
    since the last line, and otherwise once `heartbeat` seconds have passed (a job that shows no
    progress still logs that it is being watched). The ETA extrapolates the completion rate seen since
    the first status that showed progress.
    """

    min_interval: float = 60.0
    heartbeat: float | None = None
    clock: Callable[[], float] = time.monotonic
    _start: tuple[float, int] | None = field(default=None, init=False)
    _last_emit: float | None = field(default=None, init=False)
    _last_state: str | None = field(default=None, init=False)
    _last_counts: tuple[int, ...] | None = field(default=None, init=False)

    def eta(self, status: JobStatus, now: float | None = None) -> float | None:
        """Seconds until every item is done at the rate seen so far; None when unknown or finished."""
        now = self.clock() if now is None else now
        counts = status.counts
        if status.terminal or not counts.total or self._start is None:
            return None
        started_at, done_at_start = self._start
        progressed = counts.done - done_at_start
        elapsed = now - started_at
        if progressed <= 0 or elapsed <= 0:
            return None
        return (counts.total - counts.done) * elapsed / progressed

    def line(self, status: JobStatus, now: float | None = None) -> str:
        """The progress line for `status` (records it as a rate sample, emits nothing)."""
        now = self.clock() if now is None else now
        if self._start is None:
            self._start = (now, status.counts.done)
        c = status.counts
        parts = [f"{c.done}/{c.total} done"]
        for name, value in (("errored", c.errored), ("expired", c.expired), ("canceled", c.canceled)):
            if value:
                parts.append(f"{value} {name}")
        parts.append(f"{100 * c.done // c.total if c.total else 0}%")
        if not status.terminal:
            eta = self.eta(status, now)
            parts.append("ETA " + (format_duration(eta) if eta is not None else "unknown"))
        return f"{status.state}: " + ", ".join(parts)

    def update(self, status: JobStatus, now: float | None = None) -> str | None:
        """The line to log for this poll, or None when the previous one is too recent (or, with a
        heartbeat, when nothing moved and the heartbeat is not due)."""
        now = self.clock() if now is None else now
        if self._start is None:
            self._start = (now, status.counts.done)
        last = self._last_emit
        counts = status.counts.as_tuple()
        due = (
            last is None
            or status.state != self._last_state
            or status.terminal
            or (now - last >= self.min_interval
                and (self.heartbeat is None or counts != self._last_counts or now - last >= self.heartbeat))
        )
        self._last_state = status.state
        if not due:
            return None
        self._last_emit = now
        self._last_counts = counts
        return self.line(status, now)
