"""An emulator whose batch lifecycle runs on a clock the test moves (states are computed on demand)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from airflow_batchwork.testing import Emulator


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@contextmanager
def clocked_emulator() -> Iterator[tuple[Emulator, Clock]]:
    clock = Clock()
    with Emulator(processing_seconds=100) as emulator:
        emulator.clock = clock  # the lifecycle is computed from this clock: states on demand
        yield emulator, clock
