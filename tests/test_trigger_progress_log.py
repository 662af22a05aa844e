"""What BatchCompleteTrigger logs while it waits: a progress line whenever the counts or the state move,
a heartbeat when nothing moved for a while, and the end; and its once-per-process `gc.freeze()`.

A raw asyncio server stands in for OpenAI's batch endpoint and answers each poll with the next status of
a script, so the lines expected are exact; the trigger's own logger is swapped for a recorder."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from typing import Any

import pytest

from airflow_batchwork.triggers import batch as batch_module
from airflow_batchwork.triggers.batch import BatchCompleteTrigger
from tests.test_trigger_lean_http import RawServer, ok, started
from tests.webhook_helpers import forget_cached_credentials

# (state, completed) of each poll, 4 requests in all.
SCRIPT = [("in_progress", 1), ("in_progress", 1), ("in_progress", 1), ("in_progress", 2), ("in_progress", 2),
          ("finalizing", 3), ("finalizing", 3), ("completed", 4)]


class Recorder:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def info(self, message: str, *args: Any) -> None:
        self.lines.append(message % args)

    warning = error = info


def answer(seen: Any, index: int) -> tuple[bytes, bool]:
    state, completed = SCRIPT[min(index, len(SCRIPT) - 1)]
    return ok(json.dumps({"id": "batch_p1", "object": "batch", "status": state,
                          "request_counts": {"total": 4, "completed": completed, "failed": 0}}).encode()), False


async def run_script(monkeypatch: pytest.MonkeyPatch, *, every: float, heartbeat: float) -> tuple[list[str], int]:
    raw = RawServer(answer)
    server = await started(raw)
    monkeypatch.setenv("AIRFLOW_CONN_BATCHWORK_OPENAI", json.dumps({
        "conn_type": "batchwork", "password": "sk-test", "host": f"http://127.0.0.1:{raw.port}/v1",
        "extra": {"provider": "openai"}}))
    monkeypatch.setattr(batch_module, "PROGRESS_EVERY", every)
    monkeypatch.setattr(batch_module, "PROGRESS_HEARTBEAT", heartbeat)
    monkeypatch.setattr(batch_module, "START_JITTER_MAX", 0.0)
    forget_cached_credentials()
    job = {"provider": "openai", "model": "openai.chat/m", "batches": [{"id": "batch_p1", "request_count": 4}],
           "request_count": 4}
    trigger = BatchCompleteTrigger(job=job, poll_interval=0.01, end_time=time.time() + 120)
    recorder = Recorder()
    trigger._log = recorder  # type: ignore[assignment]  # LoggingMixin keeps its logger here
    try:
        events = [event async for event in trigger.run()]
    finally:
        server.close()
        forget_cached_credentials()
    assert [e.payload["status"] for e in events] == ["completed"]
    progress = [line.split(" — ", 1)[1].rsplit(", elapsed", 1)[0] for line in recorder.lines if " — " in line]
    return progress, len(raw.seen)


async def test_a_line_whenever_the_counts_or_the_state_move(monkeypatch: pytest.MonkeyPatch) -> None:
    """No rate limit, a heartbeat far away: one line per change, none for a poll that saw nothing new."""
    progress, polls = await run_script(monkeypatch, every=0.0, heartbeat=1e9)
    assert polls == len(SCRIPT)
    assert [line.split(", ETA")[0] for line in progress] == [
        "in_progress: 1/4 done, 25%", "in_progress: 2/4 done, 50%", "finalizing: 3/4 done, 75%",
        "completed: 4/4 done, 100%"]


async def test_a_heartbeat_when_nothing_moves(monkeypatch: pytest.MonkeyPatch) -> None:
    """With the heartbeat due at every poll, the polls that saw no change log a line too."""
    progress, polls = await run_script(monkeypatch, every=0.0, heartbeat=0.0)
    assert polls == len(SCRIPT)
    assert len(progress) == len(SCRIPT)
    assert [line.split(":")[0] for line in progress] == [state for state, _ in SCRIPT]


def _frozen_after_a_trigger_starts(env: dict[str, str]) -> int:
    code = (
        "import asyncio, gc, time\n"
        "from airflow_batchwork.triggers.batch import BatchCompleteTrigger, freeze_heap\n"
        "job = {'provider': 'anthropic', 'model': 'anthropic/m', 'batches': [{'id': 'msgbatch_1', "
        "'request_count': 1}], 'request_count': 1}\n"
        "async def main():\n"
        "    assert gc.get_freeze_count() == 0\n"
        "    t = BatchCompleteTrigger(job=job, poll_interval=0.01, end_time=time.time() + 30)\n"
        "    events = [e async for e in t.run()]\n"  # no credentials: one error event, after the freeze
        "    assert [e.payload['status'] for e in events] == ['error'], events\n"
        "    first = gc.get_freeze_count()\n"
        "    assert freeze_heap() is False\n"  # not again at the next start (only every FREEZE_EVERY)
        "    print(first)\n"
        "asyncio.run(main())\n"
    )
    base = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW_CONN_BATCHWORK", "ANTHROPIC"))}
    out = subprocess.run([sys.executable, "-c", code], env={**base, **env}, capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, out.stderr
    return int(out.stdout.strip().splitlines()[-1])


def test_the_first_trigger_freezes_the_heap_once_unless_turned_off() -> None:
    assert _frozen_after_a_trigger_starts({}) > 10_000  # the imports of Airflow and this package
    assert _frozen_after_a_trigger_starts({"AIRFLOW__BATCHWORK__GC_FREEZE": "False"}) == 0
