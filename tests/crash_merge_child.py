"""An incremental submit + wait + merge-collect as its own process, for the real-kill merge test
(tests/test_crash_kill_merge.py).

`python -m tests.crash_merge_child '<json spec>'`: submits the requests of `source` with `incremental=` the
dataset folder (ledger in `state`, so a rerun reattaches to the batch it made), waits for it and collects
it with `merge=True`. It reports on stdout, one line each, flushed at once, the moments the parent may kill
it at: `phase <name>` when a phase starts and `fs <op> <start|done> <file name>` around every change to a
file (a file opened for writing, a move, a delete), so a kill can land before, inside or just after any
step of the ledger, the writer and the merge. With `handshake` it waits after each line for a line on
stdin, so the parent can kill it exactly there. It keeps no state but the ledger and the dataset folder.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import threading
from typing import Any

from fsspec.implementations.local import LocalFileSystem

from airflow_batchwork.adapters.http import RetryPolicy
from airflow_batchwork.core import BatchClient, Credentials
from airflow_batchwork.engine.ledger import FsspecLedger
from airflow_batchwork.engine.sources import read_requests

HANDSHAKE = False  # spec "handshake": after each line, wait for the parent's go-ahead (a line on stdin)
_lock = threading.Lock()


def report(line: str) -> None:
    with _lock:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()
        if HANDSHAKE and not sys.stdin.readline():
            os._exit(3)  # the parent is gone


def _name(path: Any) -> str:
    return str(path).rstrip("/").rpartition("/")[2]


def reporting_filesystem() -> None:
    """Report every change the local filesystem makes (all of the child's files are local)."""
    mv, rm, open_ = LocalFileSystem.mv, LocalFileSystem.rm, LocalFileSystem._open

    def report_mv(self: LocalFileSystem, path1: Any, path2: Any, *args: Any, **kwargs: Any) -> Any:
        report(f"fs mv start {_name(path2)}")
        out = mv(self, path1, path2, *args, **kwargs)
        report(f"fs mv done {_name(path2)}")
        return out

    def report_rm(self: LocalFileSystem, path: Any, *args: Any, **kwargs: Any) -> Any:
        report(f"fs rm start {_name(path)}")
        out = rm(self, path, *args, **kwargs)
        report(f"fs rm done {_name(path)}")
        return out

    def report_open(self: LocalFileSystem, path: Any, mode: str = "rb", *args: Any, **kwargs: Any) -> Any:
        if any(c in mode for c in "wax"):
            report(f"fs write start {_name(path)}")
        return open_(self, path, mode, *args, **kwargs)

    LocalFileSystem.mv = report_mv  # type: ignore[method-assign]
    LocalFileSystem.rm = report_rm  # type: ignore[method-assign]
    LocalFileSystem._open = report_open  # type: ignore[method-assign]


async def main(spec: dict[str, Any]) -> None:
    global HANDSHAKE
    HANDSHAKE = bool(spec.get("handshake"))
    reporting_filesystem()
    retry = RetryPolicy(base_delay=0.05, max_delay=0.5, max_elapsed=120)
    async with BatchClient({"openai": Credentials("k", spec["base_url"])}, retry=retry) as client:
        report("phase submit")
        job = await client.submit(spec["model"], read_requests(spec["source"], columns=spec["columns"]),
                                  incremental=spec["dataset"], ledger=FsspecLedger(spec["state"], spec["identity"]),
                                  identity=spec["identity"])
        report("phase wait")
        await client.wait(job, poll_interval=0.1, timeout=120)
        report("phase collect")
        manifest = await client.write_parquet(job, spec["dataset"], merge=True)
        report("phase done " + json.dumps({"rows": manifest["rows"], "incremental": manifest["incremental"]}))


if __name__ == "__main__":
    asyncio.run(main(json.loads(sys.argv[1])))
