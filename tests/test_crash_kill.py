"""Real process kills (SIGKILL of a child process, not simulated exceptions) during submit and collect,
for every provider, then a retry run to completion: 0 rows lost, 0 duplicated, 0 extra batches, no batch
cancelled by our own retry, no partial dataset visible to a reader that follows the commit protocol, no
temporary file left after the retry.

The kill moment is an event, not a time: the parent waits until the emulator's request log holds the
K-th request of the child's provider (K drawn from a seeded RNG; `BATCHWORK_CRASH_SEED` changes it), then
kills. The emulator records a request before its last byte goes out, so a kill lands while the child is
still handling that answer — e.g. between a create call and the ledger write. Every assertion holds for
any K, including one past the child's last request (the child then finishes before the kill).
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from airflow_batchwork.core import BatchClient, Credentials
from airflow_batchwork.engine.parquet import SUCCESS_NAME, TMP_PREFIX, committed_files
from airflow_batchwork.testing import Emulator

MODELS = {
    "openai": "openai/gpt-4o-mini",
    "anthropic": "anthropic/claude-haiku-4-5",
    "google": "google/gemini-2.5-flash",
    "groq": "groq/llama-3.3-70b-versatile",
    "mistral": "mistral/mistral-small-latest",
    "together": "together/meta-llama/Llama-3.3-70B-Instruct-Turbo",
    "xai": "xai/grok-4",
}
N = 60
MAX_REQUESTS = 20  # three shards (three provider batches, three part files)
SHARDS = 3
SEED = int(os.environ.get("BATCHWORK_CRASH_SEED", "13"))
# Provider requests a 3-shard submit of N requests makes (measured): one create per shard, plus an upload
# (OpenAI, Groq, Together), a list snapshot (Anthropic) or add-requests pages (xAI, 7 per page). A kill moment
# is drawn below the total, so the child always has requests left when the kill comes (a kill at its last
# request could lose the race with a fast exit on a busy box).
SUBMIT_CALLS = {"openai": 6, "groq": 6, "together": 6, "anthropic": 6, "google": 3, "mistral": 3, "xai": 12}
# ... and a collect (status reads and downloads): 9 for every provider, more for Together.
COLLECT_CALLS = 9
ROOT = Path(__file__).resolve().parent.parent
WAIT = 120.0  # generous: a busy 2-core box


@pytest.fixture(scope="module")
def emu() -> Iterator[Emulator]:
    with Emulator(processing_seconds=0.3) as emulator:
        yield emulator


def provider_requests(emu: Emulator, provider: str) -> int:
    return sum(1 for r in emu.requests if r.provider == provider)


def run_child(spec: dict[str, Any], emu: Emulator, *, kill_at: int | None) -> int | None:
    """Run the child; with `kill_at`, SIGKILL it once the provider's request count reached that many more
    requests than when it started. Returns the exit code (None if it was killed)."""
    start = provider_requests(emu, spec["provider"])
    if kill_at is None:
        return run_child_until(spec, None, wait=WAIT * 2)
    return run_child_until(spec, lambda: provider_requests(emu, spec["provider"]) - start >= kill_at, wait=WAIT)


def committed_once(out: Path | str, n: int) -> pa.Table:
    """The committed dataset under `out`, checked to hold requests r0000… r{n-1} once each (0 lost, 0 duplicated)."""
    files = committed_files(f"{str(out).rstrip('/')}/")
    assert files is not None
    table = pq.read_table(files)
    ids = table.column("custom_id").to_pylist()
    assert len(ids) == n and sorted(set(ids)) == [f"r{i:04d}" for i in range(n)]
    return table


def run_child_until(spec: dict[str, Any], kill_when: Callable[[], bool] | None, *, wait: float) -> int | None:
    """Run `tests.crash_child` with `spec`; SIGKILL it as soon as `kill_when()` holds (checked every few ms).
    Returns the exit code, or None if it was killed; a child that finished first is checked like a normal
    run, and one that neither finished nor reached its kill moment within `wait` seconds fails the test."""
    proc = subprocess.Popen([sys.executable, "-m", "tests.crash_child", json.dumps(spec)], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        if kill_when is None:
            _, err = proc.communicate(timeout=wait)
            check_exit(spec, proc.returncode, err)
            return proc.returncode
        deadline = time.monotonic() + wait
        while proc.poll() is None and time.monotonic() < deadline:
            if kill_when():
                proc.send_signal(signal.SIGKILL)
                proc.wait(timeout=30)
                return None
            time.sleep(0.002)
        if proc.poll() is None:  # pragma: no cover - a hung child is itself a failure
            proc.kill()
            pytest.fail("the child neither finished nor reached its kill moment")
        _, err = proc.communicate()
        check_exit(spec, proc.returncode, err)
        return proc.returncode
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def check_exit(spec: dict[str, Any], code: int | None, err: bytes) -> None:
    """A finished child exits 0 — strictly: the native abort at interpreter exit of apache/arrow#34314
    ("terminate called without an active exception", SIGABRT) fails the test too. Its cause, Arrow pool
    threads still alive at exit, is gone (every Parquet read runs on the calling thread; see
    tests/test_crash_threads.py)."""
    assert code == 0, f"{spec['mode']} exited {code}: {err.decode()[-3000:]}"


def assert_reader_sees_whole_or_nothing(out: Path) -> None:
    files = committed_files(f"{out}/")
    if files is not None:
        table = pq.read_table([f for f in files])
        assert table.num_rows == N and len(set(table.column("custom_id").to_pylist())) == N


@pytest.mark.parametrize("provider", sorted(MODELS))
async def test_kill_submit_and_collect_then_retry(emu: Emulator, provider: str, tmp_path: Path) -> None:
    rng = random.Random(f"{SEED}-{provider}")
    spec = {"provider": provider, "base_url": emu.base_url(provider), "model": MODELS[provider], "n": N,
            "max_requests": MAX_REQUESTS, "state": str(tmp_path / "state"), "identity": f"kill-{provider}",
            "handle": str(tmp_path / "handle.json"), "out": f"{tmp_path / 'out'}/", "xai_page": 7}
    before = {b.id for b in emu.batches(provider)}

    # Submit: killed at the K-th request (create calls, uploads, add-requests pages), then retried.
    assert run_child({**spec, "mode": "submit"}, emu, kill_at=rng.randint(1, SUBMIT_CALLS[provider] - 1)) is None
    run_child({**spec, "mode": "submit"}, emu, kill_at=None)
    made = [b for b in emu.batches(provider) if b.id not in before]
    assert len(made) == SHARDS, [b.id for b in made]  # 0 extra batches
    assert all(b.cancel_requested_at is None for b in made)  # never cancelled by our own retry
    handle = json.loads(Path(spec["handle"]).read_text())
    assert sorted(handle["batches"][i]["id"] for i in range(SHARDS)) == sorted(b.id for b in made)

    async with BatchClient({provider: Credentials("k", emu.base_url(provider))}) as client:
        await client.wait(handle, poll_interval=0.2, timeout=WAIT)

    # Collect: killed at the K-th request (status, downloads, result pages), then retried.
    assert run_child({**spec, "mode": "collect"}, emu, kill_at=rng.randint(1, COLLECT_CALLS - 1)) is None
    assert_reader_sees_whole_or_nothing(tmp_path / "out")
    run_child({**spec, "mode": "collect"}, emu, kill_at=None)

    out = tmp_path / "out"
    names = sorted(p.name for p in out.iterdir())
    assert not [n for n in names if n.startswith(TMP_PREFIX)], names  # no temp file left
    assert SUCCESS_NAME in names and [n for n in names if n.endswith(".parquet")] == [
        f"part-{i:05d}.parquet" for i in range(SHARDS)]
    table = committed_once(out, N)
    assert set(table.column("status").to_pylist()) == {"succeeded"}
