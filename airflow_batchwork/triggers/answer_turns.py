"""How many status answers an event loop's triggers handle per loop iteration.

An answer is handled by the step of its trigger's coroutine that the answer wakes: the answer's parse, the
progress line and the next sleep, 0.1 to 0.3 ms. Answers come in bunches: a server (or a network) that
stalls for a moment sends the answers of every poll in flight at once, up to the pool's 64 connections, and
they all woke in the same loop iteration, with the wake-ups of `triggers/wakeups.py` beside them (bench/
trigger.py --trace: iterations of 24 ms with 32 of each; 43-56 ms stalls beside a CPU-bound process). Here
an answer takes a turn first: `TURNS_PER_ITERATION` go on at once, the others in the iterations right after,
in the order they came, so an iteration handles at most twice that many (the turns it gives and those given
in the one before). No sleep is added: a poll is late by a few iterations at most.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections import deque

TURNS_PER_ITERATION = 16
_NO_CONTEXT = contextvars.Context()


class AnswerTurns:
    """The answers of one event loop waiting for their turn."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.taken = 0  # turns given since the last `_next`
        self._waiting: deque[asyncio.Future[None]] = deque()
        self._scheduled = False

    def take(self) -> asyncio.Future[None] | None:
        """None: go on now; else a future to await, done at this answer's turn."""
        if self.taken < TURNS_PER_ITERATION and not self._waiting:
            self.taken += 1
            self._schedule()
            return None
        future = self.loop.create_future()
        self._waiting.append(future)
        self._schedule()
        return future

    def _schedule(self) -> None:
        if not self._scheduled:
            self._scheduled = True
            self.loop.call_soon(self._next, context=_NO_CONTEXT)

    def _next(self) -> None:
        """A new iteration: give the next turns (an answer whose wait was cancelled is skipped)."""
        self._scheduled = False
        self.taken = 0
        waiting = self._waiting
        while waiting and self.taken < TURNS_PER_ITERATION:
            future = waiting.popleft()
            if not future.done():
                future.set_result(None)
                self.taken += 1
        if waiting or self.taken:
            self._schedule()
        elif _BY_LOOP.get(id(self.loop)) is self:
            del _BY_LOOP[id(self.loop)]


_BY_LOOP: dict[int, AnswerTurns] = {}


async def answer_turn() -> None:
    """Wait for this answer's turn on the running loop (at once when the iteration has turns left)."""
    loop = asyncio.get_running_loop()
    turns = _BY_LOOP.get(id(loop))
    if turns is None or turns.loop is not loop:
        turns = _BY_LOOP[id(loop)] = AnswerTurns(loop)
    future = turns.take()
    if future is not None:
        await future
