"""No native thread outlives the work (the root of the SIGABRT at interpreter exit, apache/arrow#34314: an
Arrow pool thread still joinable while the interpreter tears pyarrow down). A child process submits and
collects real jobs (folder output with several parts, structured output, the ids file, the cost
total, a resubmission round) against the emulator, then compares its native threads (`/proc/self/task`)
with those it had before the first Arrow call: none may be added but jemalloc's own purging thread, and it must
exit 0."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from airflow_batchwork.testing import Emulator

ROOT = Path(__file__).resolve().parent.parent

CHILD = r"""
import asyncio, json, os, sys
def native_threads():
    return sorted(os.listdir("/proc/self/task"))
from airflow_batchwork.core import BatchClient, Credentials
from airflow_batchwork.engine.ledger import FsspecLedger
from airflow_batchwork.engine.resubmit import collect_with_retries
spec = json.loads(sys.argv[1])
before = native_threads()
async def main():
    async with BatchClient({"openai": Credentials("k", spec["base_url"])}) as client:
        requests = [{"custom_id": f"r{i:04d}", "prompt": f"item {i}"} for i in range(600)]
        job = await client.submit("openai/gpt-4o-mini", requests, limits={"max_requests": 200},
                                  ledger=FsspecLedger(spec["state"], "threads"), identity="threads",
                                  output_schema={"type": "object", "properties": {"a": {"type": "string"}}})
        await client.wait(job, poll_interval=0.1, timeout=120)
        first = await client.write_parquet(job, spec["out"] + "plain/")
        second = await collect_with_retries(client, job, spec["out"] + "rounds/", max_item_retries=1,
                                            poll_interval=0.1, timeout=120)
        return first["rows"], second["rows"]
rows = asyncio.run(main())
after = native_threads()
added = {t: open(f"/proc/self/task/{t}/comm").read().strip() for t in set(after) - set(before)}
print(json.dumps({"rows": rows, "before": len(before), "added": sorted(added.values())}))
"""


@pytest.fixture(scope="module")
def emu() -> Iterator[Emulator]:
    with Emulator(processing_seconds=0.2) as emulator:
        yield emulator


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="counts native threads through /proc")
def test_no_native_thread_outlives_a_collect(emu: Emulator, tmp_path: Path) -> None:
    spec = {"base_url": emu.base_url("openai"), "state": f"{tmp_path}/state", "out": f"{tmp_path}/out/"}
    proc = subprocess.run([sys.executable, "-c", CHILD, json.dumps(spec)], cwd=ROOT, capture_output=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr.decode()[-3000:]
    report = json.loads(proc.stdout.decode().strip().splitlines()[-1])
    assert report["rows"] == [600, 600]
    # No Arrow CPU/IO pool thread, no parser worker left running. jemalloc's purging thread may be (a collect
    # allocates from jemalloc, engine/arrow_memory.py): a plain pthread of the allocator, not a C++ thread
    # object that a static destructor could find joinable, so not the SIGABRT's kind; the exit code shows it.
    assert [name for name in report["added"] if name != "jemalloc_bg_thd"] == [], report
