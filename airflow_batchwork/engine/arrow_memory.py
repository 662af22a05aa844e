"""The Arrow memory pool a collect allocates from.

pyarrow's default pool on Linux is mimalloc, which keeps pages freed by the parse resident and spread over
many partly used pages: 1M Anthropic result lines peaked at 235-252 MB RSS with at most ~37 MB of Arrow data
alive. jemalloc (built into pyarrow's Linux wheels) returns them to the system as it goes: 215-225 MB
on the same run, ~30 MB less at 100k lines, and no slower (docs/performance.md, session 11).

A collect makes jemalloc the default pool while it runs and puts the previous pool back when the last
concurrent collect ends; buffers keep the pool they came from, so nothing allocated before or after is
affected. A process started with `ARROW_DEFAULT_MEMORY_POOL` keeps the pool it chose, and a pyarrow without
jemalloc keeps its default.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator

import pyarrow as pa

_lock = threading.Lock()
_users = 0
_previous: pa.MemoryPool | None = None


def _collect_pool() -> pa.MemoryPool | None:
    if os.environ.get("ARROW_DEFAULT_MEMORY_POOL"):
        return None
    try:
        return pa.jemalloc_memory_pool()
    except NotImplementedError:
        return None


@contextlib.contextmanager
def collect_memory_pool() -> Iterator[None]:
    """Arrow allocates from the collect's pool (module text) inside this block."""
    global _users, _previous
    with _lock:
        if _users == 0:
            pool = _collect_pool()
            if pool is not None:
                _previous = pa.default_memory_pool()
                pa.set_memory_pool(pool)
        _users += 1
    try:
        yield
    finally:
        with _lock:
            _users -= 1
            if _users == 0 and _previous is not None:
                pa.set_memory_pool(_previous)
                _previous = None
