"""BatchCompleteTrigger: wait on the triggerer until every provider batch of a job is terminal.

Pure async: connection lookup and HTTP both run on the event loop without blocking it. The trigger
never submits, downloads or writes anything, so running it twice (triggerer HA) is harmless.
"""

from __future__ import annotations

import asyncio
import gc
import random
import time
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from types import SimpleNamespace
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent
from airflow.utils.log.logging_mixin import LoggingMixin

from airflow_batchwork.adapters.http import shared_ssl_context
from airflow_batchwork.engine.client import BatchClient
from airflow_batchwork.engine.polling import next_step, sleep_for
from airflow_batchwork.engine.progress import ProgressReporter
from airflow_batchwork.hooks.batchwork import BatchworkHook
from airflow_batchwork.triggers.clients import SHARED_CLIENTS
from airflow_batchwork.triggers.wakeups import wake_up_after
from airflow_batchwork.values.credentials import Credentials
from airflow_batchwork.values.errors import BatchworkError, ProviderAPIError
from airflow_batchwork.values.handle import JobHandle
from airflow_batchwork.values.status import JobStatus

# The async connection lookup's imports, now rather than in the first trigger's poll (see the hook).
BatchworkHook.import_async_lookup()

EVENT_STATUSES = frozenset({"completed", "failed", "expired", "cancelled", "timeout", "error"})
MAX_CONSECUTIVE_POLL_FAILURES = 5
START_JITTER_MAX = 5.0
# Progress lines at most this often (and on every state change), however short the poll interval.
PROGRESS_EVERY = 60.0
# When the counts have not moved since the last line, the next one only after this long (a heartbeat).
PROGRESS_HEARTBEAT = 600.0
# On a triggerer, no event is yielded sooner than this after the deferral ([batchwork] min_resume_delay).
MIN_RESUME_DELAY = 10.0


def min_resume_delay() -> float:
    """``[batchwork] min_resume_delay`` (seconds, default 10; 0 turns the hold off)."""
    try:
        from airflow.configuration import conf

        return max(0.0, conf.getfloat("batchwork", "min_resume_delay", fallback=MIN_RESUME_DELAY))
    except Exception:  # unreadable config: keep the safe default
        return MIN_RESUME_DELAY


# Trigger starts, or triggers' first polls, between two `gc.freeze()` calls (see freeze_heap): a full
# collection walks at most the objects of this many triggers since the last one, not of every trigger.
FREEZE_EVERY = 500
_freeze_on: bool | None = None  # [batchwork] gc_freeze, read at the first trigger's start
_starts_since_freeze: int | None = None  # None: no trigger started yet in this process
_settled_since_freeze = 0  # triggers' first polls since the last freeze
_CLASS_LOGS: dict[type, Any] = {}


_tls_warm: asyncio.Future[Any] | None = None  # the process's TLS context, built once in a thread


async def _tls_context_built() -> None:
    """The process's TLS context (`shared_ssl_context`: loading the CA bundle, ~0.1 s of CPU) is built in a
    thread before the first poll, once, so it does not stop the event loop at the first trigger's poll (the
    load releases the GIL). Triggers starting meanwhile wait on the same build."""
    global _tls_warm
    loop = asyncio.get_running_loop()
    if _tls_warm is None or (not _tls_warm.done() and _tls_warm.get_loop() is not loop):
        _tls_warm = loop.run_in_executor(None, shared_ssl_context)
    if not _tls_warm.done():
        await asyncio.shield(_tls_warm)


def gc_freeze_enabled() -> bool:
    """``[batchwork] gc_freeze`` (default True; ``AIRFLOW__BATCHWORK__GC_FREEZE=False`` turns it off)."""
    try:
        from airflow.configuration import conf

        return conf.getboolean("batchwork", "gc_freeze", fallback=True)
    except Exception:  # unreadable config: keep the default
        return True


def freeze_heap(*, settled: bool = False) -> bool:
    """`gc.freeze()` at the first trigger's start in the process, and again after every `FREEZE_EVERY`
    more starts (called at every start) and after every `FREEZE_EVERY` triggers' first polls
    (``settled``: called after each trigger's first poll), counted apart, unless ``[batchwork] gc_freeze``
    is off (read once). True when it froze now.

    First polls count too, because a trigger makes some lasting objects (its progress reporter) only once
    its start-up jitter has passed: freezing at starts only left them all out (5,000 progress reporters
    among the ~54k objects a full collection walked at 5,000 triggers, bench/trigger.py's trace). Starts
    count because triggers created in a burst poll only seconds later.

    Everything alive then moves to the permanent generation, so Python's default GC no longer walks it in
    every full collection, which otherwise stops the triggerer's event loop: ~175k objects of the imports
    (0.1-0.9 s a walk), then ~23 per running trigger (91 ms at 5,000 triggers). Thresholds are untouched;
    frozen objects are still freed by reference counting when they die. Before each freeze, a young
    collection (generations 0 and 1, a few thousand objects at most) frees the young garbage, so only what
    is alive or already in the old generation is frozen. The cost: a garbage cycle that was frozen, or that
    forms later among frozen objects, is never collected. A trigger of ours leaves no cycle when it ends
    (completed, failed, timed out or cancelled: tests/test_trigger_gc.py), so freezing running triggers keeps
    nothing of theirs; other objects of the process alive at a freeze are frozen with them (measured in
    docs/performance.md). Airflow does the same in its DAG processor and LocalExecutor."""
    global _freeze_on, _starts_since_freeze, _settled_since_freeze
    if _freeze_on is None:
        _freeze_on = gc_freeze_enabled()
    if not _freeze_on:
        return False
    if _starts_since_freeze is not None:
        if settled:
            _settled_since_freeze += 1
        else:
            _starts_since_freeze += 1
        if _starts_since_freeze < FREEZE_EVERY and _settled_since_freeze < FREEZE_EVERY:
            return False
    if settled:
        _settled_since_freeze = 0
    else:
        _starts_since_freeze = 0
    gc.collect(1)
    gc.freeze()
    return True


# Polls (of all triggers in the process) between two young collections: see collect_young.
COLLECT_EVERY = 200
_polls_since_collect = 0


def collect_young() -> bool:
    """After each poll: a young collection (generations 0 and 1) once every `COLLECT_EVERY` polls of the
    process, unless the GC is disabled. True when it collected now.

    A sleeping trigger keeps a few GC-tracked objects alive for its whole interval (its wake-up future,
    the future's iterator and callback; its timer is shared, triggers/wakeups.py), and each poll frees about as many as
    it makes, so Python's allocation count, which starts a young collection, lags far behind what piles
    up in the young generations: with 5,000 triggers a generation-1 collection walked 13-19k objects,
    5-41 ms in one loop iteration in which no other trigger ran (bench/trigger.py --trace). Collected
    in small doses, one walks at most what the last `COLLECT_EVERY` polls left (a millisecond or two).
    Thresholds are untouched and nothing is frozen; survivors move to the old generation as they would."""
    global _polls_since_collect
    _polls_since_collect += 1
    if _polls_since_collect < COLLECT_EVERY or not gc.isenabled():
        return False
    _polls_since_collect = 0
    gc.collect(1)
    return True


def _transient(exc: BaseException) -> bool:
    if isinstance(exc, ProviderAPIError):
        return exc.status_code == 0 or exc.retryable
    return isinstance(exc, OSError | asyncio.TimeoutError)


class BatchCompleteTrigger(BaseTrigger):
    """Poll all batches of `job` every `poll_interval` seconds until done or `end_time` (Unix seconds).

    Yields exactly one event: `{"status": completed|failed|expired|cancelled|timeout|error, "counts",
    "batch_ids", "job", "message"}`. On timeout the job is cancelled first (`cancel_on_timeout`). `end_time`
    is wall-clock on purpose: the trigger may resume in another triggerer process, where a monotonic
    clock reading would mean nothing.

    On a triggerer, the event is held until ``min_resume_delay`` seconds (default 10) after `deferred_at`
    (the operator's deferral time): Airflow 3.3's scheduler fails a task (up_for_retry, "finished with
    state success, but the task instance's state attribute is queued" or "running") when its resumed run
    is queued before the scheduler has processed the exit of the deferring run; both carry the same key. A batch
    that is already done when collect starts never defers (collect checks first), so only fast batches
    waited on by a fresh deferral are held, and only by the remainder of that delay.
    """

    def __init__(
        self,
        job: dict[str, Any],
        conn_id: str | None = None,
        poll_interval: float = 60.0,
        end_time: float | None = None,
        cancel_on_timeout: bool = True,
        cancel_on_kill: bool = True,
        max_poll_failures: int = MAX_CONSECUTIVE_POLL_FAILURES,
        deferred_at: float | None = None,
    ) -> None:
        super().__init__()
        self.deferred_at = deferred_at
        self.job = JobHandle.coerce(job)
        self.conn_id = conn_id
        self.poll_interval = float(poll_interval)
        self.end_time = end_time
        self.cancel_on_timeout = cancel_on_timeout
        self.cancel_on_kill = cancel_on_kill
        self.max_poll_failures = max_poll_failures

    @property
    def log(self) -> Any:
        """One logger per trigger class, not per trigger (Airflow's triggerer routes a trigger's lines to
        its task's log by the ids it binds in the trigger's context variables, not by the logger object;
        a logger per instance is five more objects per trigger for every full garbage collection)."""
        own = self.__dict__.get("_log")
        if own is not None:
            return own
        cls = type(self)
        logger = _CLASS_LOGS.get(cls)
        if logger is None:
            holder = SimpleNamespace(_log=None, _log_config_logger_name=cls._log_config_logger_name,
                                     _logger_name=cls._logger_name)
            logger = _CLASS_LOGS[cls] = LoggingMixin._get_log(holder, cls)
        return logger

    def serialize(self) -> tuple[str, dict[str, Any]]:
        # Only ids, names and numbers: the handle holds no key and no payload.
        return (
            "airflow_batchwork.triggers.batch.BatchCompleteTrigger",
            {
                "job": self.job.to_dict(),
                "conn_id": self.conn_id,
                "poll_interval": self.poll_interval,
                "end_time": self.end_time,
                "cancel_on_timeout": self.cancel_on_timeout,
                "cancel_on_kill": self.cancel_on_kill,
                "max_poll_failures": self.max_poll_failures,
                "deferred_at": self.deferred_at,
            },
        )

    def _client(self, credentials: Credentials) -> AbstractAsyncContextManager[BatchClient]:
        """The process-wide client for this job's provider and credentials (see triggers/clients.py)."""
        return SHARED_CLIENTS.client(self.job.provider, credentials)

    async def _credentials(self) -> Credentials:
        return await BatchworkHook(conn_id=self.conn_id).acredentials(self.job.provider)

    def _event(self, status: str, message: str, job_status: JobStatus | None = None) -> TriggerEvent:
        return TriggerEvent({
            "status": status,
            "message": message,
            "batch_ids": self.job.batch_ids,
            "job": self.job.to_dict(),
            "counts": job_status.counts.as_dict() if job_status else None,
        })

    async def run(self) -> AsyncIterator[TriggerEvent]:
        freeze_heap()
        started = time.time()
        event = await self._poll_until_done(started)  # releases the HTTP client before the hold
        await self.hold_resume(started)
        yield event

    async def hold_resume(self, started: float) -> None:
        """Wait out the rest of ``min_resume_delay`` after the deferral (only on a triggerer, see above)."""
        if self.task_instance is None:  # dag.test() runs the trigger inline, or a bare unit test: no scheduler
            return
        since = self.deferred_at if self.deferred_at is not None else started
        remaining = since + min_resume_delay() - time.time()
        if remaining > 0:
            self.log.info("Holding the event %.1fs so the task resumes %.0fs after its deferral "
                          "([batchwork] min_resume_delay)", remaining, min_resume_delay())
            await asyncio.sleep(remaining)

    async def _poll_until_done(self, started: float) -> TriggerEvent:
        # One coroutine (not an async generator) holding the shared client without a context manager: a
        # sleeping trigger is a handful of objects, and every full garbage collection walks them all.
        # Triggers restored together (a triggerer restart, a backfill) would otherwise all start and poll
        # in the same instant: spread them over up to one poll interval (at most 5 s).
        await asyncio.sleep(random.uniform(0, min(self.poll_interval, START_JITTER_MAX)))
        try:
            credentials = await self._credentials()
        except BatchworkError as exc:
            return self._event("error", str(exc))
        await _tls_context_built()
        shared = SHARED_CLIENTS.acquire(self.job.provider, credentials)
        try:
            client, slots = shared.client, shared.slots
            plain_sleep = type(self).wait_before_next_poll is BatchCompleteTrigger.wait_before_next_poll
            failures = 0
            progress = ProgressReporter(min_interval=max(PROGRESS_EVERY, self.poll_interval),
                                        heartbeat=max(PROGRESS_HEARTBEAT, self.poll_interval))
            first_poll = True
            while True:
                status: JobStatus | None
                try:
                    async with slots:
                        status = await client.status(self.job)
                except Exception as exc:
                    failures += 1
                    if not _transient(exc) or failures >= self.max_poll_failures:
                        return self._event("error", f"polling failed ({failures}x): {exc}")
                    self.log.warning("Poll %d/%d failed, will retry: %s", failures, self.max_poll_failures, exc)
                    status = None
                else:
                    failures = 0
                    line = progress.update(status)
                    if line is not None:
                        self.log.info("%s %s — %s, elapsed %ds", self.job.provider, ",".join(self.job.batch_ids),
                                      line, int(time.time() - started))
                now = time.time()
                if status is not None:
                    step = next_step(status, now=now, deadline=self.end_time)
                    if step == "done":
                        return self._event(status.state, status.progress_line(), status)
                elif self.end_time is not None and now >= self.end_time:
                    step = "timeout"
                else:
                    step = "wait"
                if step == "timeout":
                    message = f"job not finished by its deadline ({int(now - started)}s in this trigger)"
                    if self.cancel_on_timeout:
                        message += await self._cancel(client, "timeout")
                    return self._event("timeout", message, status)
                status = None  # not kept across the sleep: objects that live a whole interval reach generation 2
                if first_poll:
                    first_poll = False
                    freeze_heap(settled=True)
                collect_young()
                pause = sleep_for(self.poll_interval, now=now, deadline=self.end_time)
                if plain_sleep:
                    # No sleep coroutine, no copied context and no timer of its own per sleeping trigger: one
                    # timer per time slot for all of them (triggers/wakeups.py).
                    await wake_up_after(pause)
                else:
                    await self.wait_before_next_poll(pause)
        finally:
            await SHARED_CLIENTS.release(shared)

    async def wait_before_next_poll(self, seconds: float) -> None:
        """The pause between polls; the webhook-aware subclass cuts it short when a completion arrives."""
        await asyncio.sleep(seconds)

    async def _cancel(self, client: BatchClient, reason: str) -> str:
        try:
            await client.cancel(self.job)
        except Exception as exc:
            self.log.error("Could not cancel %s after %s: %s", self.job.batch_ids, reason, exc)
            return f"; cancelling failed: {exc}"
        self.log.info("Cancelled %s batches %s after %s", self.job.provider, self.job.batch_ids, reason)
        return "; the provider batches were cancelled"

    async def on_kill(self) -> None:
        """Airflow >= 3.3 calls this when a user marks the task failed/success or clears it."""
        if not self.cancel_on_kill:
            return
        async with self._client(await self._credentials()) as client:
            await self._cancel(client, "the task was killed")
