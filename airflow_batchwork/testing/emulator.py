"""The offline provider emulator: a real HTTP server on loopback speaking each provider's batch API.

Use it as a context manager in tests (``with Emulator() as emu: ...``) and give
``emu.base_url("openai")`` to our adapters or to the provider's official SDK; or run it from a shell::

    python -m airflow_batchwork.testing.emulator --port 8090 [--host 127.0.0.1] [--processing-seconds 1.0]

Any API key is accepted except a missing or empty one and the literal ``invalid``.
"""

from __future__ import annotations

import argparse
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Sequence
from types import FrameType, TracebackType

import uvicorn
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Mount, Route

from airflow_batchwork.testing.faults import FaultConfig, FaultMiddleware
from airflow_batchwork.testing.providers import PROVIDERS, provider_for_path
from airflow_batchwork.testing.providers.base import ProviderApp
from airflow_batchwork.testing.store import BatchView, RequestRecord, Store, StoredFile

__all__ = ["Emulator", "build_app", "main"]

_START_TIMEOUT_SECONDS = 10.0
_STOP_TIMEOUT_SECONDS = 5.0


def build_app(store: Store, faults: FaultConfig | None = None) -> Starlette:
    """The emulator's ASGI app over ``store``: every registered provider under its prefix.

    ``faults`` may be a :class:`FaultConfig` or, via :class:`Emulator`, follow ``emu.faults``.
    """
    config = faults or FaultConfig()
    return _build_app(store, lambda: config)


def _build_app(store: Store, faults: Callable[[], FaultConfig]) -> Starlette:
    async def index(request: Request) -> Response:
        origin = f"{request.url.scheme}://{request.url.netloc}"
        return JSONResponse(
            {
                "emulator": "airflow-batchwork",
                "providers": {name: origin + spec.prefix for name, spec in PROVIDERS.items()},
            }
        )

    routes: list[BaseRoute] = [Route("/", index, methods=["GET"])]
    routes += [Mount(spec.prefix, app=ProviderApp(spec, store)) for spec in PROVIDERS.values()]
    middleware = [Middleware(FaultMiddleware, store=store, faults=faults, resolve=provider_for_path)]
    return Starlette(routes=routes, middleware=middleware)


class Emulator:
    """OpenAI, Anthropic, ... batch APIs over real HTTP on a background thread.

    The server binds ``host`` (loopback by default) on ``port`` (0 = a free port). Batches created
    while it runs end ``processing_seconds`` after creation. ``faults`` may be replaced or mutated
    at any time. State lives in :attr:`store` and survives :meth:`stop` / :meth:`start`.
    """

    def __init__(
        self,
        processing_seconds: float = 1.0,
        host: str = "127.0.0.1",
        port: int = 0,
        faults: FaultConfig | None = None,
    ) -> None:
        self.host = host
        self.requested_port = port
        self.store = Store(processing_seconds=processing_seconds)
        self.faults = faults or FaultConfig()
        self.app = _build_app(self.store, lambda: self.faults)
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._socket: socket.socket | None = None
        self._port: int | None = None

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> Emulator:
        """Bind the socket, start serving in a daemon thread and wait until it accepts connections."""
        if self._thread is not None:
            raise RuntimeError("emulator is already running")
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self.host, self.requested_port))
            sock.listen(128)
        except OSError:
            sock.close()
            raise
        config = uvicorn.Config(
            self.app,
            loop="asyncio",
            lifespan="off",
            log_config=None,  # never touch the host process's logging configuration
            log_level="warning",
            access_log=False,
            timeout_graceful_shutdown=1,
        )
        server = uvicorn.Server(config)
        thread = threading.Thread(
            target=server.run, kwargs={"sockets": [sock]}, name="batchwork-emulator", daemon=True
        )
        thread.start()
        deadline = time.monotonic() + _START_TIMEOUT_SECONDS
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                server.should_exit = True
                thread.join(_STOP_TIMEOUT_SECONDS)
                sock.close()
                raise RuntimeError("the emulator's HTTP server did not start")
            time.sleep(0.01)
        self._server, self._thread, self._socket = server, thread, sock
        self._port = sock.getsockname()[1]
        return self

    def stop(self) -> None:
        """Stop serving and release the port (idempotent)."""
        server, thread, sock = self._server, self._thread, self._socket
        self._server = self._thread = self._socket = None
        self._port = None
        if server is None or thread is None:
            return
        server.should_exit = True
        thread.join(_STOP_TIMEOUT_SECONDS)
        if thread.is_alive():
            server.force_exit = True
            thread.join(_STOP_TIMEOUT_SECONDS)
        if sock is not None:
            sock.close()

    def __enter__(self) -> Emulator:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        """True while the server thread is serving."""
        return self._thread is not None and self._thread.is_alive()

    # -- addresses -------------------------------------------------------------------------------

    @property
    def port(self) -> int:
        """The bound port (only while running)."""
        if self._port is None:
            raise RuntimeError("the emulator is not running; use `with Emulator() as emu:` or emu.start()")
        return self._port

    @property
    def url(self) -> str:
        """Origin of the server, e.g. ``http://127.0.0.1:50123``."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def providers(self) -> tuple[str, ...]:
        """Names of the emulated providers."""
        return tuple(PROVIDERS)

    def base_url(self, provider: str) -> str:
        """Base URL for ``provider``'s SDK and our adapters, e.g. ``http://127.0.0.1:PORT/openai/v1``."""
        spec = PROVIDERS.get(provider) or next((s for s in PROVIDERS.values() if provider in s.aliases), None)
        if spec is None:
            raise ValueError(f"unknown provider {provider!r}; the emulator serves: {', '.join(PROVIDERS)}")
        return self.url + spec.prefix

    # -- runtime settings and inspection ---------------------------------------------------------

    @property
    def processing_seconds(self) -> float:
        """Processing time of batches created from now on (existing batches keep theirs)."""
        return self.store.processing_seconds

    @processing_seconds.setter
    def processing_seconds(self, value: float) -> None:
        self.store.processing_seconds = value

    def batches(self, provider: str | None = None) -> list[BatchView]:
        """Snapshots of the batches created so far (of one provider), oldest first."""
        return self.store.batches(provider)

    def files(self, provider: str | None = None) -> list[StoredFile]:
        """Files uploaded or generated so far (of one provider), oldest first."""
        return self.store.files(provider)

    @property
    def requests(self) -> list[RequestRecord]:
        """Every provider request answered so far, in order."""
        return self.store.requests


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point: serve until interrupted, printing each provider's base URL."""
    parser = argparse.ArgumentParser(
        prog="python -m airflow_batchwork.testing.emulator",
        description="Serve the airflow-batchwork provider emulator until interrupted.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1)")
    parser.add_argument(
        "--port", type=int, default=8090, help="port to bind, 0 = any free port (default: 8090)"
    )
    parser.add_argument(
        "--processing-seconds", type=float, default=1.0, help="time until a batch ends (default: 1.0)"
    )
    args = parser.parse_args(argv)

    stop = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    emulator = Emulator(processing_seconds=args.processing_seconds, host=args.host, port=args.port)
    try:
        emulator.start()
    except OSError as exc:
        print(f"cannot serve on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1
    try:
        print(
            f"airflow-batchwork emulator on {emulator.url} "
            f"(processing_seconds={emulator.processing_seconds}); "
            "any API key except 'invalid' works. Ctrl-C to stop.",
            flush=True,
        )
        width = max(len(name) for name in emulator.providers)
        for name in emulator.providers:
            print(f"  {name:<{width}}  {emulator.base_url(name)}", flush=True)
        while not stop.wait(0.5):
            pass
    finally:
        emulator.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
