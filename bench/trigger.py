"""Trigger benchmark: 1,000 concurrent BatchCompleteTriggers in one event loop against the emulator.

Reports CPU time per poll (process CPU / successful polls) and the longest event-loop stall, measured
by a watchdog coroutine that wakes every 5 ms and records how late it woke.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import sys
import time

from bench.common import child, table

TRIGGERS = 1_000
POLL_INTERVAL = 2.0


async def watchdog(stop: asyncio.Event, worst: list[float], warmup: float) -> None:
    """worst[0]: longest stall overall; worst[1]: after the warm-up (all triggers started)."""
    step = 0.005
    begin = time.perf_counter()
    while not stop.is_set():
        before = time.perf_counter()
        await asyncio.sleep(step)
        late = time.perf_counter() - before - step
        worst[0] = max(worst[0], late)
        if before - begin > warmup:
            worst[1] = max(worst[1], late)


def measure(n: int, freeze: bool) -> None:
    from airflow_batchwork.core import BatchClient, Credentials
    from airflow_batchwork.testing.airflow_env import connection_env
    from airflow_batchwork.triggers.batch import BatchCompleteTrigger
    from bench.emulator_proc import EmulatorProcess

    polls = [0]
    status = BatchClient.status

    async def counted(self: BatchClient, job: object) -> object:  # counts polls; the work is unchanged
        result = await status(self, job)  # type: ignore[arg-type]
        polls[0] += 1
        return result

    BatchClient.status = counted  # type: ignore[method-assign,assignment]
    with EmulatorProcess(processing_seconds=10) as emu:

        class Urls:
            providers = ("openai",)

            @staticmethod
            def base_url(provider: str) -> str:
                return emu.base_url(provider)

        os.environ.update(connection_env(Urls()))

        async def go() -> dict[str, float]:
            async with BatchClient({"openai": Credentials("bench", emu.base_url("openai"))}) as client:
                jobs = await asyncio.gather(*(client.submit("openai/gpt-4o-mini", [{"prompt": f"p{i}"}])
                                              for i in range(n)))
            polls[0] = 0
            triggers = [BatchCompleteTrigger(job=j.to_dict(), poll_interval=POLL_INTERVAL,
                                             end_time=time.time() + 300) for j in jobs]
            if freeze:
                # What long-running Python servers do after start-up: move what exists now out of the
                # GC's reach, so full collections scan only new objects.
                gc.collect()
                gc.freeze()
            stop = asyncio.Event()
            worst = [0.0, 0.0]
            dog = asyncio.create_task(watchdog(stop, worst, POLL_INTERVAL + 1))
            cpu, wall = time.process_time(), time.perf_counter()

            async def drain(trigger: BatchCompleteTrigger) -> str:
                async for event in trigger.run():
                    return str(event.payload["status"])
                raise RuntimeError("the trigger ended without an event")

            statuses = await asyncio.gather(*(drain(t) for t in triggers))
            cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
            stop.set()
            await dog
            assert set(statuses) == {"completed"}, set(statuses)
            return {"cpu": cpu, "wall": wall, "polls": polls[0], "stall": worst[0], "steady_stall": worst[1]}

        result = asyncio.run(go())
    print(json.dumps(result))


def main(argv: list[str] | None = None) -> int:
    args = argv if argv is not None else sys.argv[1:]
    if args and args[0] == "--child":
        measure(int(args[1]), args[2] == "freeze")
        return 0
    rows = []
    for mode in ("default", "freeze"):
        got = child("trigger", "--child", str(TRIGGERS), mode)
        rows.append([f"{TRIGGERS:,}", "gc default" if mode == "default" else "gc.freeze() after start-up",
                     f"{got['polls']:,}", f"{got['wall']:.1f}", f"{got['cpu']:.2f}",
                     f"{1000 * got['cpu'] / max(got['polls'], 1):.2f}", f"{1000 * got['stall']:.1f}",
                     f"{1000 * got['steady_stall']:.1f}"])
    print(f"trigger: {TRIGGERS:,} concurrent BatchCompleteTriggers in one event loop, poll every {POLL_INTERVAL}s")
    print("targets: <= 1 ms CPU per poll, no event-loop stall > 50 ms")
    print(table(["triggers", "process", "polls", "wall s", "CPU s", "CPU ms/poll", "longest stall ms",
                 "longest stall after start-up ms"], rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
