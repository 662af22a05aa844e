"""Status answers that arrive together are handled a few per loop iteration (triggers/answer_turns.py)."""

from __future__ import annotations

import asyncio
import collections
import json

from airflow_batchwork.adapters.http import ProviderHTTP, RetryPolicy
from airflow_batchwork.triggers import answer_turns
from airflow_batchwork.triggers.answer_turns import TURNS_PER_ITERATION, AnswerTurns
from airflow_batchwork.triggers.lean_http import MAX_CONNECTIONS, LeanTransport
from tests.test_trigger_lean_http import BODY, ok


class Ticker:
    """Counts the loop's iterations: a callback that runs once in each and schedules itself again."""

    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.now = 0
        self.running = True
        self.loop.call_soon(self._tick)

    def _tick(self) -> None:
        self.now += 1
        if self.running:
            self.loop.call_soon(self._tick)


class HoldingServer:
    """Reads one request on each of `expected` connections, then answers them all in the same instant."""

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.held: list[asyncio.StreamWriter] = []
        self.done = asyncio.Event()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.readuntil(b"\r\n\r\n")
            self.held.append(writer)
            if len(self.held) == self.expected:
                for held in self.held:
                    held.write(ok())
                self.done.set()
            await self.done.wait()
            await reader.read()  # until the client closes
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


async def test_answers_that_arrive_together_are_handled_a_few_per_iteration() -> None:
    polls = min(MAX_CONNECTIONS, 3 * TURNS_PER_ITERATION + 5)
    raw = HoldingServer(polls)
    server = await asyncio.start_server(raw.handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    http = ProviderHTTP("openai", f"http://127.0.0.1:{port}/v1", {"authorization": "Bearer sk-test"},
                        transport=LeanTransport(), retry=RetryPolicy(max_attempts=1, base_delay=0.01))
    ticker = Ticker()
    handled_at: list[int] = []

    async def poll() -> dict[str, str]:
        response = await http.request("GET", "/batches/batch_1", retry_safe=True)
        handled_at.append(ticker.now)
        return response.json()

    try:
        answers = await asyncio.gather(*(poll() for _ in range(polls)))
    finally:
        ticker.running = False
        await http.aclose()
        server.close()
    assert answers == [json.loads(BODY)] * polls
    per_iteration = collections.Counter(handled_at)
    assert max(per_iteration.values()) <= 2 * TURNS_PER_ITERATION
    assert len(per_iteration) >= polls // (2 * TURNS_PER_ITERATION) + 1  # spread over iterations


async def test_turns_go_in_arrival_order_and_skip_cancelled_waits() -> None:
    turns = AnswerTurns(asyncio.get_running_loop())
    now = [turns.take() for _ in range(TURNS_PER_ITERATION)]
    assert now == [None] * TURNS_PER_ITERATION  # the iteration's turns, at once
    waiting = [turns.take() for _ in range(2 * TURNS_PER_ITERATION + 2)]
    assert all(w is not None for w in waiting)
    futures = [w for w in waiting if w is not None]
    futures[0].cancel()  # an answer whose poll was cancelled while it waited
    order: list[int] = []
    for index, future in enumerate(futures):
        future.add_done_callback(lambda f, i=index: order.append(i) if not f.cancelled() else None)
    done_after: list[int] = []
    while not all(f.done() for f in futures):
        await asyncio.sleep(0)
        done_after.append(sum(f.done() and not f.cancelled() for f in futures))
    steps = [b - a for a, b in zip([0, *done_after], done_after, strict=False) if b - a]
    assert steps == [TURNS_PER_ITERATION, TURNS_PER_ITERATION, 1]  # the cancelled one took no turn
    await asyncio.sleep(0)  # the done callbacks run in the iteration after
    assert order == list(range(1, len(futures)))


async def test_the_loops_turns_are_dropped_when_no_answer_waits() -> None:
    loop = asyncio.get_running_loop()
    await answer_turns.answer_turn()
    assert id(loop) in answer_turns._BY_LOOP
    for _ in range(3):
        await asyncio.sleep(0)
    assert id(loop) not in answer_turns._BY_LOOP
