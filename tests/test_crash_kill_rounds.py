"""Real SIGKILLs of a collect with resubmission rounds (engine/resubmit.py, `max_item_retries`): killed right
after the round's create call, after the round's results download (while the round is staged and the
dataset merged) and at a seeded random request, then retried to completion. A reader that follows the
commit protocol never sees a partial dataset, the round is paid once, and no temporary file stays.

Kill moments are events of the emulator's request log (tests/test_crash_kill.py explains the harness)."""

from __future__ import annotations

import json
import os
import random
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from airflow_batchwork.core import BatchClient, Credentials
from airflow_batchwork.engine.ledger import FsspecLedger
from airflow_batchwork.engine.parquet import SUCCESS_NAME, TMP_PREFIX, committed_files
from airflow_batchwork.engine.resubmit import STAGING_DIR
from airflow_batchwork.testing import Emulator
from airflow_batchwork.testing.faults import FaultConfig
from airflow_batchwork.testing.store import RequestRecord
from tests.crash_child import requests as child_requests
from tests.test_crash_kill import WAIT, committed_once, run_child_until

PROVIDER = "openai"
MODEL = "openai/gpt-4o-mini"
N = 60
SHARDS = 3
SEED = int(os.environ.get("BATCHWORK_CRASH_SEED", "13"))


@pytest.fixture(scope="module")
def emu() -> Iterator[Emulator]:
    with Emulator(processing_seconds=0.3) as emulator:
        yield emulator


Since = Callable[[list[RequestRecord]], bool]


def run_child(spec: dict[str, Any], emu: Emulator, kill_when: Since | None) -> int | None:
    """Run the collect child; SIGKILL it as soon as `kill_when(requests since its start)` holds. Returns the
    exit code, or None if it was killed (a child that finished first is checked like a normal run)."""
    start = len(emu.requests)
    if kill_when is None:
        return run_child_until(spec, None, wait=WAIT * 2)
    return run_child_until(spec, lambda: kill_when([r for r in emu.requests[start:] if r.provider == PROVIDER]),
                           wait=WAIT * 2)


def creates(log: list[RequestRecord]) -> int:
    return sum(r.method == "POST" and r.path.endswith("/batches") for r in log)


def downloads(log: list[RequestRecord]) -> int:
    return sum(r.method == "GET" and r.path.endswith("/content") for r in log)


def assert_whole_or_nothing(out: Path) -> None:
    """What a reader following the protocol sees: nothing yet, or every row once, each from its last attempt."""
    files = committed_files(f"{out}/")
    if files is not None:
        table = pq.read_table(files)
        assert table.num_rows == N and len(set(table.column("custom_id").to_pylist())) == N
        assert set(table.column("status").to_pylist()) == {"succeeded"}  # round 2 merged in, not partial


async def test_killed_resubmission_rounds_then_retry(emu: Emulator, tmp_path: Path) -> None:
    rng = random.Random(f"{SEED}-rounds")
    before = {b.id for b in emu.batches(PROVIDER)}
    # The job's batches end with their second halves expired (retryable): the collect resubmits 30 items.
    emu.faults = FaultConfig(expire_partial=True, providers=PROVIDER)
    try:
        async with BatchClient({PROVIDER: Credentials("k", emu.base_url(PROVIDER))}) as client:
            job = await client.submit(MODEL, child_requests(N), ledger=FsspecLedger(f"{tmp_path}/state", "rounds"),
                                      identity="rounds", limits={"max_requests": N // SHARDS})
    finally:
        emu.faults = FaultConfig()
    async with BatchClient({PROVIDER: Credentials("k", emu.base_url(PROVIDER))}) as client:
        await client.wait(job, poll_interval=0.2, timeout=WAIT)
    (tmp_path / "handle.json").write_text(json.dumps(job.to_dict()))
    out = tmp_path / "out"
    spec = {"provider": PROVIDER, "base_url": emu.base_url(PROVIDER), "mode": "collect_retries",
            "handle": str(tmp_path / "handle.json"), "out": f"{out}/"}

    random_k = rng.randint(1, 2 * SHARDS + 4)
    kills: list[Since] = [
        lambda log: creates(log) >= 1,  # the round's create answered, its ledger not yet written
        lambda log: downloads(log) >= SHARDS + 1,  # the round's results: staging and merging follow
        lambda log: len(log) >= random_k,  # a seeded random request
    ]
    killed = 0
    for kill_when in kills:
        if run_child(spec, emu, kill_when) is None:
            killed += 1
        assert_whole_or_nothing(out)
    assert killed >= 2  # the event kills land (the random one may come after the child's last request)
    run_child(spec, emu, None)

    made = [b for b in emu.batches(PROVIDER) if b.id not in before]
    assert len(made) == SHARDS + 1, [b.id for b in made]  # the job's 3 batches and one round: paid once
    assert all(b.cancel_requested_at is None for b in made)
    everything = sorted(str(p.relative_to(out)) for p in out.rglob("*"))
    assert not [n for n in everything if Path(n).name.startswith(TMP_PREFIX)], everything  # no temp file
    assert not [n for n in everything if "attempt-" in n], everything  # staged round results removed
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted([SUCCESS_NAME, STAGING_DIR, *(f"part-{i:05d}.parquet" for i in range(SHARDS))])
    table = committed_once(out, N)
    assert set(table.column("status").to_pylist()) == {"succeeded"}
    attempts = table.column("attempt").to_pylist()
    assert attempts.count(2) == N // 2 and attempts.count(1) == N // 2
