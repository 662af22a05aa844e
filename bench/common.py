"""Shared bench helpers: deterministic data, child processes with peak RSS, table printing."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
WORK = Path(os.environ.get("BATCHWORK_BENCH_DIR", ROOT / "bench" / "out"))


def peak_rss_mb() -> float:
    """Peak resident set size of this process, in MB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(module: str, *args: str) -> dict[str, Any]:
    """Run `python -m bench.<module> args…` in a fresh process; it prints one JSON line last."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-m", f"bench.{module}", *args], cwd=ROOT, env=env,
                         capture_output=True, text=True)
    if out.returncode != 0 or not out.stdout.strip():
        # A child's failure is shown whole, never swallowed.
        sys.stderr.write(f"bench child `{module} {' '.join(args)}` failed with exit code {out.returncode}\n"
                         f"--- stdout\n{out.stdout}--- stderr\n{out.stderr}")
        raise SystemExit(f"bench child {module} failed")
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    value = fn()
    return time.perf_counter() - start, value


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    cells = [[str(h) for h in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = [" | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in cells]
    lines.insert(1, "-|-".join("-" * w for w in widths))
    return "\n".join(lines)


class FileServer(httpx.AsyncBaseTransport):
    """A provider stand-in that serves one result file from disk, streamed (no emulator, no socket):
    the collector's own code runs unchanged, only the bytes come from a local file."""

    def __init__(self, routes: dict[str, Any], files: dict[str, Path]) -> None:
        self.routes = routes
        self.files = files

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path in self.files:
            return httpx.Response(200, stream=_FileStream(self.files[path]))
        return httpx.Response(200, json=self.routes[path])


class _FileStream(httpx.AsyncByteStream):
    def __init__(self, path: Path) -> None:
        self.path = path

    async def __aiter__(self):  # type: ignore[override]
        with self.path.open("rb") as handle:
            while block := handle.read(1 << 20):
                yield block
