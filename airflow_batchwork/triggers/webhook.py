"""Wake a waiting job as soon as the webhook intake heard that one of its batches ended.

The intake (:mod:`airflow_batchwork.plugins.webhooks`) records each verified completion notice in the
asset state store of ``batchwork://<provider>/batches`` under the batch id. :class:`WebhookWake` checks
that store cheaply between polls (one small read per batch every ``check_every`` seconds, through the
triggerer's own API channel) and cuts the sleep short when a new notice is there. The notice is only a
wake-up call: the status still comes from the provider's API, so a forged or early notice costs one
extra poll and nothing else.

Needs Airflow >= 3.3 (asset state store); on older versions, or when no DAG references the completions
asset, it quietly degrades to plain polling.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

from airflow.triggers.base import TriggerEvent

from airflow_batchwork.triggers.batch import BatchCompleteTrigger
from airflow_batchwork.webhooks.events import completions_uri

log = logging.getLogger(__name__)

DEFAULT_CHECK_EVERY = 5.0
# Never interrupt the poll loop this close to its deadline: it may be cancelling the batches.
DEADLINE_GUARD = 5.0


class WebhookWake:
    """Sleep between polls, returning early when a new completion notice exists for one of `batch_ids`."""

    def __init__(self, provider: str, batch_ids: Sequence[str], check_every: float = DEFAULT_CHECK_EVERY) -> None:
        self.provider = provider
        self.batch_ids = list(batch_ids)
        self.check_every = max(0.05, float(check_every))
        self.enabled = True
        self._seen: set[str] = set()
        self._accessor: Any = None

    def _store(self) -> Any:
        if self._accessor is None:
            from airflow.sdk.execution_time.context import AssetStateStoreAccessor

            self._accessor = AssetStateStoreAccessor(uri=completions_uri(self.provider))
        return self._accessor

    async def _read(self, key: str) -> Any:
        from airflow.sdk.execution_time import task_runner

        store = self._store()
        if hasattr(getattr(task_runner, "SUPERVISOR_COMMS", None), "asend"):
            return await store.aget(key)
        # dag.test() runs triggers with in-process comms that only have the blocking `send`.
        return await asyncio.to_thread(store.get, key)

    async def check(self) -> bool:
        """True when a notice not seen before exists for any of the batches."""
        if not self.enabled:
            return False
        for batch_id in self.batch_ids:
            try:
                notice = await self._read(batch_id)
            except Exception as exc:  # no asset state store (Airflow < 3.3), no active asset, API trouble
                log.info("Webhook wake-ups off for %s (%s); polling only", completions_uri(self.provider), exc)
                self.enabled = False
                return False
            if isinstance(notice, dict):
                marker = f"{batch_id}|{notice.get('webhook_id')}"
                if marker not in self._seen:
                    self._seen.add(marker)
                    log.info("Webhook says %s batch %s is %s", self.provider, batch_id, notice.get("status"))
                    return True
        return False

    async def sleep(self, seconds: float) -> bool:
        """Sleep up to `seconds`; True if cut short by a new notice."""
        deadline = time.monotonic() + seconds
        while (remaining := deadline - time.monotonic()) > 0:
            await asyncio.sleep(min(self.check_every, remaining))
            if await self.check():
                return True
        return False

    async def wait(self) -> None:
        """Return once a new notice exists (forever if none comes)."""
        while not await self.sleep(3600.0):
            pass


class WebhookBatchCompleteTrigger(BatchCompleteTrigger):
    """:class:`BatchCompleteTrigger` that also polls at once when the webhook intake reports a batch ended.

    Same arguments and the same single event; plus ``wake_check_interval``, how often (seconds) the
    asset state store is checked for a notice. Keep ``poll_interval`` long (e.g. 600 s) as the fallback
    for lost webhooks. The waiting task must reference ``batch_completions(provider)`` (e.g. as an inlet)
    so that Airflow registers the asset the intake writes to.
    """

    def __init__(self, job: dict[str, Any], *, wake_check_interval: float = DEFAULT_CHECK_EVERY,
                 **kwargs: Any) -> None:
        super().__init__(job, **kwargs)
        self.wake_check_interval = float(wake_check_interval)
        self._wake: WebhookWake | None = None

    @classmethod
    def from_trigger(cls, trigger: BatchCompleteTrigger, **kwargs: Any) -> WebhookBatchCompleteTrigger:
        """The webhook-aware twin of an existing trigger (same job, connection and deadline)."""
        _, arguments = trigger.serialize()
        return cls(**{**arguments, **kwargs})

    def serialize(self) -> tuple[str, dict[str, Any]]:
        _, kwargs = super().serialize()
        return (f"{__name__}.{type(self).__name__}", {**kwargs, "wake_check_interval": self.wake_check_interval})

    def _waker(self) -> WebhookWake:
        if self._wake is None:
            self._wake = WebhookWake(self.job.provider, self.job.batch_ids, check_every=self.wake_check_interval)
        return self._wake

    async def wait_before_next_poll(self, seconds: float) -> None:
        """Sleep between polls, cut short by a new notice (used once BatchCompleteTrigger calls this hook)."""
        if self.end_time is not None and time.time() >= self.end_time - DEADLINE_GUARD:
            await asyncio.sleep(seconds)
            return
        await self._waker().sleep(seconds)

    async def run(self) -> AsyncIterator[TriggerEvent]:
        if "wait_before_next_poll" in vars(BatchCompleteTrigger):
            # The parent's loop sleeps through our hook: nothing else to do.
            async for event in super().run():
                yield event
            return
        # Until then: drive the parent's poll loop; on a notice, stop it mid-sleep and start it again, which
        # polls again after its start jitter (at most 5 s). Retries, deadline and cancel stay in one place.
        wake = self._waker()
        while True:
            polls = super().run()
            pending = asyncio.ensure_future(anext(polls))
            woken = asyncio.ensure_future(wake.wait())
            try:
                await asyncio.wait({pending, woken}, return_when=asyncio.FIRST_COMPLETED)
                near_deadline = self.end_time is not None and time.time() >= self.end_time - DEADLINE_GUARD
                if woken.done() and near_deadline:
                    await pending
                if pending.done():
                    yield pending.result()
                    return
                self.log.info("Batch completion webhook received: polling %s now", ",".join(self.job.batch_ids))
            finally:
                for task in (pending, woken):
                    task.cancel()
                await asyncio.gather(pending, woken, return_exceptions=True)
                aclose = getattr(polls, "aclose", None)  # run() is an async generator
                if aclose is not None:
                    await aclose()
