"""One decision, shared by the script-level wait loop and the Airflow trigger: what to do after a poll."""

from __future__ import annotations

from typing import Literal

from airflow_batchwork.values.status import JobStatus

NextStep = Literal["done", "timeout", "wait"]


def next_step(status: JobStatus, *, now: float, deadline: float | None) -> NextStep:
    """`done` once every batch is terminal, `timeout` past the wall-clock deadline, else `wait`."""
    if status.terminal:
        return "done"
    if deadline is not None and now >= deadline:
        return "timeout"
    return "wait"


def sleep_for(poll_interval: float, *, now: float, deadline: float | None) -> float:
    """Sleep until the next poll, but never past the deadline."""
    if deadline is None:
        return poll_interval
    return max(0.0, min(poll_interval, deadline - now))
