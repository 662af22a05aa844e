"""BatchCompleteTrigger and the garbage collector: the heap is frozen again every `FREEZE_EVERY` triggers'
first polls, so a full collection never walks thousands of running triggers, and a frozen trigger is still
freed when it ends (completed, failed or cancelled), since it leaves no reference cycle behind.

Each case runs in a child process (a freeze is for the whole process) against the emulator."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

CHILD = r"""
import asyncio, gc, json, os, sys, time, weakref
from airflow_batchwork.core import BatchClient, Credentials
from airflow_batchwork.testing import Emulator
from airflow_batchwork.testing.airflow_env import EMULATOR_API_KEY, connection_env
from airflow_batchwork.triggers import batch
from airflow_batchwork.triggers.batch import BatchCompleteTrigger

batch.FREEZE_EVERY = 5
batch.START_JITTER_MAX = 0.0
N = 15
freezes = []  # (triggers started, first polls seen by the emulator, why) at each freeze
real_freeze_heap = batch.freeze_heap


def spy_freeze_heap(*, settled=False):
    froze = real_freeze_heap(settled=settled)
    if froze:
        freezes.append((len(tasks), gets(), "first polls" if settled else "starts"))
    return froze


async def first_event(trigger):
    async for event in trigger.run():
        return event.payload["status"]


async def main():
    now = [time.time()]  # the emulator's clock: every batch is in progress until the test moves it on
    with Emulator(processing_seconds=30, clock=lambda: now[0]) as emulator:
        os.environ.update(connection_env(emulator))
        creds = {"openai": Credentials(EMULATOR_API_KEY, emulator.base_url("openai"))}
        async with BatchClient(creds) as client:
            jobs = [await client.submit("openai/gpt-4o-mini", [{"prompt": f"p{i}"}]) for i in range(N)]
        global tasks, gets
        refs, tasks, frozen = [], [], []
        gets = lambda: sum(1 for r in emulator.requests if r.method == "GET")
        batch.freeze_heap = spy_freeze_heap
        for i, job in enumerate(jobs):
            handle = job.to_dict()
            if i % 5 == 3:  # an unknown batch: the trigger ends with an error event
                handle["batches"] = [{"id": f"batch_unknown{i}", "request_count": 1}]
            trigger = BatchCompleteTrigger(job=handle, poll_interval=0.05, end_time=time.time() + 60)
            task = asyncio.create_task(first_event(trigger))
            refs += [weakref.ref(trigger), weakref.ref(task)]
            tasks.append(task)
            del trigger, task
            # One trigger at a time, yielding between, as Airflow's TriggerRunner starts them.
            await asyncio.sleep(0)
            await asyncio.sleep(0)
            frozen.append(gc.get_freeze_count())
        await asyncio.sleep(0.3)  # every trigger is polling now
        for i in (2, 7, 12):  # cancelled while waiting (a cleared task, a triggerer shutting down)
            tasks[i].cancel()
        now[0] += 60  # the other batches complete
        ends = await asyncio.gather(*tasks, return_exceptions=True)
        ends = [type(e).__name__ if isinstance(e, BaseException) else e for e in ends]
        del tasks
        await asyncio.sleep(0.2)  # the loop closes the triggers' suspended run() generators (asyncgen hooks)
        gc.collect()  # collects everything not frozen: what is still alive now is kept by frozen objects
        print(json.dumps({"ends": ends, "frozen": frozen, "freezes": freezes,
                          "alive": sum(r() is not None for r in refs)}))


asyncio.run(main())
"""


def run_child(env: dict[str, str]) -> dict[str, Any]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW_CONN_BATCHWORK", "OPENAI"))}
    out = subprocess.run([sys.executable, "-c", CHILD], env={**base, **env}, capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, out.stderr
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def test_running_triggers_are_frozen_every_few_first_polls_and_freed_when_they_end() -> None:
    """The first start freezes the imports; every `FREEZE_EVERY` (here 5) more starts or triggers' first
    polls freeze the heap again, so what triggers make once their first answer is in is frozen too; the
    opt-out freezes nothing."""
    result = run_child({})
    assert result["ends"] == ["completed", "completed", "CancelledError", "error", "completed"] * 3
    frozen = result["frozen"]
    assert frozen[0] > 10_000  # the first start froze the imports
    # At the 1st, 6th and 11th start, and after the 5th and the 10th first poll (12 of them: the 3 unknown
    # batches end at theirs); first polls and starts interleave as the machine runs them, so only each kind's
    # own order is fixed.
    freezes = result["freezes"]
    assert freezes[0] == [1, 0, "starts"] and len(freezes) == 5
    assert [started for started, _, why in freezes if why == "starts"] == [1, 6, 11]
    assert [why for *_, why in freezes].count("first polls") == 2
    # Every trigger and its task was freed once it ended, frozen or not: no reference cycle kept any.
    assert result["alive"] == 0

    result = run_child({"AIRFLOW__BATCHWORK__GC_FREEZE": "False"})
    assert result["ends"] == ["completed", "completed", "CancelledError", "error", "completed"] * 3
    assert result["frozen"] == [0] * 15
    assert result["alive"] == 0


YOUNG_CHILD = r"""
import asyncio, gc, json, os, time
from airflow_batchwork.core import BatchClient, Credentials
from airflow_batchwork.testing import Emulator
from airflow_batchwork.testing.airflow_env import EMULATOR_API_KEY, connection_env
from airflow_batchwork.triggers import batch
from airflow_batchwork.triggers.batch import BatchCompleteTrigger

batch.COLLECT_EVERY = 3
batch.START_JITTER_MAX = 0.0
young = []
gc.callbacks.append(lambda phase, info: phase == "start" and info["generation"] == 1 and young.append(1))


async def main():
    now = [time.time()]
    with Emulator(processing_seconds=30, clock=lambda: now[0]) as emulator:
        os.environ.update(connection_env(emulator))
        creds = {"openai": Credentials(EMULATOR_API_KEY, emulator.base_url("openai"))}
        async with BatchClient(creds) as client:
            jobs = [await client.submit("openai/gpt-4o-mini", [{"prompt": f"p{i}"}]) for i in range(4)]
        gc.disable()  # no automatic collection: only what the triggers ask for is counted
        young.clear()
        first = len(emulator.requests)
        tasks = [asyncio.create_task(BatchCompleteTrigger(job=job.to_dict(), poll_interval=0.05,
                                                          end_time=time.time() + 60).run().__anext__())
                 for job in jobs]
        await asyncio.sleep(0.6)
        polls_disabled, young_disabled = len(emulator.requests) - first, len(young)
        gc.enable()
        gc.set_threshold(10**9)  # still none started by allocations: thresholds are only set for this count
        young.clear()
        before = len(emulator.requests)
        await asyncio.sleep(0.6)
        polls = len(emulator.requests) - before
        collected = len(young)
        now[0] += 60
        ends = [(await task).payload["status"] for task in tasks]
        print(json.dumps({"ends": ends, "polls": polls, "young": collected, "young_disabled": young_disabled,
                          "polls_disabled": polls_disabled}))


asyncio.run(main())
"""


def test_polls_collect_the_young_generations_in_small_doses() -> None:
    """Every `COLLECT_EVERY` (here 3) polls of the process run one young collection, so the objects sleeping
    triggers leave behind never pile up for one long walk; with the GC disabled, none."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW_CONN_BATCHWORK", "OPENAI"))}
    # The freezes off (each starts with a young collection of its own): only the doses are counted.
    out = subprocess.run([sys.executable, "-c", YOUNG_CHILD], env={**base, "AIRFLOW__BATCHWORK__GC_FREEZE": "False"},
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["ends"] == ["completed"] * 4
    assert result["polls"] >= 12
    # One per 3 polls (the polls under way when the count starts and ends may fall on either side).
    assert abs(result["young"] - result["polls"] / 3) <= 2
    assert result["polls_disabled"] > 0 and result["young_disabled"] == 0
