"""The shared wake-up timer of sleeping triggers (triggers/wakeups.py), on a real event loop."""

from __future__ import annotations

import asyncio
from typing import Any

from airflow_batchwork.triggers import wakeups
from airflow_batchwork.triggers.wakeups import WAKE_BATCH, Wakeups, wake_up_after


class FrozenClock:
    """The running loop with its clock read once: every wake-up asked for lands in the same slot."""

    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.now = self.loop.time()

    def time(self) -> float:
        return self.now

    def __getattr__(self, name: str) -> Any:
        return getattr(self.loop, name)


async def _done_per_iteration(futures: list[asyncio.Future[None]]) -> list[int]:
    """How many of `futures` are done after each loop iteration, until all are."""
    seen = []
    while not all(f.done() for f in futures):
        await asyncio.sleep(0)  # one iteration of the loop
        seen.append(sum(f.done() for f in futures))
    return seen


async def test_a_due_herd_is_woken_a_batch_per_iteration() -> None:
    clock = Wakeups(FrozenClock())  # type: ignore[arg-type]
    herd = [clock.after(0) for _ in range(5 * WAKE_BATCH + 3)]
    seen = await _done_per_iteration(herd)
    steps = [now - before for before, now in zip([0, *seen], seen, strict=False)]
    assert [step for step in steps if step] == [WAKE_BATCH] * 5 + [3]  # five full batches, then the rest
    assert all(f.result() is None for f in herd)


async def test_cancelled_sleepers_are_skipped_and_not_counted_in_a_batch() -> None:
    clock = Wakeups(FrozenClock())  # type: ignore[arg-type]
    herd = [clock.after(0) for _ in range(2 * WAKE_BATCH)]
    for future in herd[::2]:
        future.cancel()
    awake = herd[1::2]
    seen = await _done_per_iteration(awake)
    assert [count for count in seen if count] == [WAKE_BATCH]  # the live half, woken in one iteration
    assert all(f.cancelled() for f in herd[::2])


async def test_later_sleepers_wait_for_their_slot() -> None:
    clock = Wakeups(asyncio.get_running_loop())
    soon, late = clock.after(0), clock.after(3600)
    await soon
    assert not late.done() and len(clock) == 1  # only the hour-later slot is left
    late.cancel()


async def test_the_loops_clock_is_dropped_when_nothing_sleeps() -> None:
    loop = asyncio.get_running_loop()
    herd = [wake_up_after(0) for _ in range(WAKE_BATCH + 1)]
    clock = wakeups._BY_LOOP[id(loop)]
    await asyncio.gather(*herd)
    await asyncio.sleep(0)
    assert wakeups._BY_LOOP.get(id(loop)) is not clock
