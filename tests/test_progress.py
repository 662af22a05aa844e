"""ProgressReporter: progress line with ETA, rate-limited."""

from __future__ import annotations

from airflow_batchwork.engine.progress import ProgressReporter, format_duration
from airflow_batchwork.values.status import Counts, JobStatus


def _status(done: int, errored: int = 0, total: int = 1000, state: str = "in_progress") -> JobStatus:
    return JobStatus(state=state, counts=Counts(total=total, succeeded=done - errored, errored=errored,  # type: ignore[arg-type]
                                                 processing=total - done))


def test_line_has_counts_percent_and_eta() -> None:
    reporter = ProgressReporter(min_interval=60, clock=lambda: 0.0)
    assert reporter.update(_status(200), now=0.0) == "in_progress: 200/1000 done, 20%, ETA unknown"
    # 612 more items in 300 s: 188 left at 2.04/s is about 92 s.
    assert reporter.update(_status(812, errored=3), now=300.0) == "in_progress: 812/1000 done, 3 errored, 81%, ETA 2m"


def test_rate_limited_but_state_changes_and_end_always_show() -> None:
    reporter = ProgressReporter(min_interval=60)
    assert reporter.update(_status(100), now=0.0) is not None
    assert reporter.update(_status(150), now=30.0) is None
    assert reporter.update(_status(200, state="finalizing"), now=40.0) is not None
    assert reporter.update(_status(210, state="finalizing"), now=50.0) is None
    assert reporter.update(_status(300, state="finalizing"), now=101.0) is not None
    end = reporter.update(_status(1000, errored=3, state="completed"), now=102.0)
    assert end == "completed: 1000/1000 done, 3 errored, 100%"


def test_with_a_heartbeat_only_moved_counts_log_until_the_heartbeat_is_due() -> None:
    reporter = ProgressReporter(min_interval=60, heartbeat=600)
    assert reporter.update(_status(100), now=0.0) is not None
    assert reporter.update(_status(100), now=60.0) is None  # nothing moved
    assert reporter.update(_status(150), now=90.0) is not None  # moved, a minute after the last line
    assert reporter.update(_status(160), now=120.0) is None  # moved, but the last line is 30 s old
    assert reporter.update(_status(160), now=600.0) is not None  # moved since the last line (150)
    assert reporter.update(_status(160), now=1199.0) is None
    assert reporter.update(_status(160), now=1200.0) == "in_progress: 160/1000 done, 16%, ETA 4h 40m"  # heartbeat
    assert reporter.update(_status(160, state="finalizing"), now=1201.0) is not None  # a state change at once


def test_format_duration() -> None:
    assert [format_duration(s) for s in (5, 89, 240, 5400, 7500, 3 * 86400 + 4 * 3600)] == [
        "5s", "89s", "4m", "1h 30m", "2h 5m", "3d 4h"]
