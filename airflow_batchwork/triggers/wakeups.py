"""The sleep between two polls: one timer per time slot for all sleeping triggers of an event loop.

`asyncio.sleep` (or `call_later` and a future) gives every sleeping trigger a timer of its own, and the
timer's argument tuple, for its whole interval: with thousands of triggers those are thousands of
GC-tracked objects that every full garbage collection walks (bench/trigger.py's census: a timer, its
arguments, a future, the future's iterator and callback per sleeping trigger). Here the wake-ups due in
the same slot (1 % of the sleep wide, at most `SLOT_MAX`) share one list, and only the earliest slot has
a timer, so a sleeping trigger is its future, the future's iterator and the task's wake-up callback. A
wake-up is rounded to the nearest slot's end: at most half a slot (50 ms) early or late, and on average
neither, so a trigger's polls do not drift later interval after interval (rounding up made 1,000
triggers every 2 s poll ~2 % less often in bench/trigger.py).

When a slot is due, its triggers are woken at most `WAKE_BATCH` per loop iteration, the rest in the
iterations right after (no later slot, no added sleep). Triggers due together (started together, or polled
by answers that a busy server sent back at once) would otherwise all poll in one iteration, 0.1 to 0.2 ms
each, and hold every other callback for tens of milliseconds.

Cancelling a sleeping trigger cancels its future, which then stays in its slot's list until the slot is
due (at most one interval) and is skipped there.
"""

from __future__ import annotations

import asyncio
import contextvars
import heapq
from collections import deque

# The widest slot, in seconds (a wake-up is at most half of it early or late); 1 % of a shorter sleep.
SLOT_MAX = 0.1
# Triggers woken per loop iteration; a due herd is woken over the iterations that follow.
WAKE_BATCH = 32
_NO_CONTEXT = contextvars.Context()  # the timer's callback reads no context variable


class Wakeups:
    """The sleeping triggers of one event loop, by slot (integer milliseconds of the loop's clock)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._slots: dict[int, list[asyncio.Future[None]]] = {}
        self._due: list[int] = []  # a heap of the slots' ends (ints: not tracked by the GC)
        self._timer: asyncio.TimerHandle | None = None
        self._armed_for: int | None = None
        self._backlog: deque[asyncio.Future[None]] = deque()  # due, not yet woken
        self._waking = False  # a `_wake` is scheduled for the next iteration

    def __len__(self) -> int:
        """Slots waiting (each has a list; only the earliest has a timer)."""
        return len(self._slots)

    def after(self, seconds: float) -> asyncio.Future[None]:
        """A future that is done once `seconds` have passed (give or take half its slot)."""
        width = max(1, min(int(SLOT_MAX * 1000), int(seconds * 10)))  # ms: 1 % of the sleep at most
        slot = round((self.loop.time() + max(seconds, 0.0)) * 1000 / width) * width
        future = self.loop.create_future()
        waiting = self._slots.get(slot)
        if waiting is None:
            waiting = self._slots[slot] = []
            heapq.heappush(self._due, slot)
            if self._armed_for is None or slot < self._armed_for:
                self._arm(slot)
        waiting.append(future)
        return future

    def _arm(self, slot: int) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._armed_for = slot
        self._timer = self.loop.call_at(slot / 1000, self._fire, context=_NO_CONTEXT)

    def _fire(self) -> None:
        self._timer = self._armed_for = None
        now = self.loop.time() * 1000 + 1  # the loop runs a timer up to its clock resolution early
        due = self._due
        while due and due[0] <= now:
            self._backlog.extend(self._slots.pop(heapq.heappop(due)))
        if due:
            self._arm(due[0])
        if not self._waking:
            self._wake()

    def _wake(self) -> None:
        """Wake up to `WAKE_BATCH` due triggers; the rest in the next iteration."""
        backlog, woken = self._backlog, 0
        while backlog and woken < WAKE_BATCH:
            future = backlog.popleft()
            if not future.done():  # a cancelled trigger's future stays until its slot is due
                future.set_result(None)
                woken += 1
        self._waking = bool(backlog)
        if backlog:
            self.loop.call_soon(self._wake, context=_NO_CONTEXT)
        elif not self._due and _BY_LOOP.get(id(self.loop)) is self:
            del _BY_LOOP[id(self.loop)]  # nothing sleeps on this loop any more


_BY_LOOP: dict[int, Wakeups] = {}


def wake_up_after(seconds: float) -> asyncio.Future[None]:
    """A future for the running loop that is done after `seconds` (up to one slot late); await it."""
    loop = asyncio.get_running_loop()
    wakeups = _BY_LOOP.get(id(loop))
    if wakeups is None or wakeups.loop is not loop:
        wakeups = _BY_LOOP[id(loop)] = Wakeups(loop)
    return wakeups.after(seconds)
