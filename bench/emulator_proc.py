"""Run the emulator in its own process for benchmarks, so its work is not counted as ours."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from types import TracebackType

import httpx

from bench.common import ROOT


class EmulatorProcess:
    def __init__(self, processing_seconds: float = 1.0) -> None:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = int(sock.getsockname()[1])
        self.processing_seconds = processing_seconds
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> EmulatorProcess:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "airflow_batchwork.testing.emulator", "--port", str(self.port),
             "--processing-seconds", str(self.processing_seconds)],
            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        deadline = time.time() + 30
        while time.time() < deadline:
            try:
                httpx.get(f"http://127.0.0.1:{self.port}/", timeout=1)
                return self
            except httpx.TransportError:
                time.sleep(0.1)
        raise RuntimeError("emulator did not start")

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)

    def base_url(self, provider: str) -> str:
        return httpx.get(f"http://127.0.0.1:{self.port}/").json()["providers"][provider]
