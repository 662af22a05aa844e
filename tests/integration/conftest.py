"""The real-deployment tests run only with BATCHWORK_INTEGRATION=1 (`make integration`); `make test` skips them.

Session fixtures: the OS services (PostgreSQL, Redis), the emulator, and the package path the components
import the checkout from. Every process is stopped at the end, also after a failure.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from airflow_batchwork.testing import Emulator
from tests.integration.stack import Processes, ensure_os_packages, package_path, start_postgres, start_redis, temp_base

ENABLED = os.environ.get("BATCHWORK_INTEGRATION") == "1"
HERE = Path(__file__).parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if ENABLED:
        return
    skip = pytest.mark.skip(reason="real deployment (PostgreSQL, Redis, Airflow processes): run `make integration`")
    for item in items:
        if HERE in Path(str(item.fspath)).parents:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def base() -> Iterator[Path]:
    path = temp_base()
    yield path
    if os.environ.get("BATCHWORK_KEEP_DEPLOYMENT") != "1":
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def procs(base: Path) -> Iterator[Processes]:
    registry = Processes(base / "process-logs")
    try:
        yield registry
    finally:
        registry.stop_all()


@pytest.fixture(scope="session")
def services(procs: Processes, base: Path) -> dict[str, str]:
    ensure_os_packages()
    return {"sql": start_postgres(procs, base), "redis": start_redis(procs, base)}


class GateClock:
    """The emulator's clock: wall time plus a shift, so that batches end when a test says so, not by timing.

    Batches get ``HOLD`` seconds of processing, i.e. they stay in progress (collect always finds them
    running and defers) until :meth:`release` moves the clock past the end of every batch created so far.
    """

    HOLD = 3600.0

    def __init__(self) -> None:
        self.shift = 0.0

    def __call__(self) -> float:
        return time.time() + self.shift

    def release(self) -> None:
        self.shift += self.HOLD + 60


@pytest.fixture(scope="session")
def gate() -> GateClock:
    return GateClock()


@pytest.fixture(scope="session")
def emu(gate: GateClock) -> Iterator[Emulator]:
    with Emulator(processing_seconds=GateClock.HOLD, clock=gate) as emulator:
        yield emulator


@pytest.fixture(scope="session")
def pythonpath(base: Path) -> str:
    return package_path(base)


@pytest.fixture(scope="session")
def tickets(base: Path) -> Path:
    path = base / "tickets.parquet"
    ids = [f"t{i:04d}" for i in range(30)]
    pq.write_table(pa.table({"ticket_id": ids, "body": [f"ticket body {i}" for i in range(30)]}), path)
    path.chmod(0o644)
    return path
