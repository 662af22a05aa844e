"""The offline provider emulator: a real HTTP server on loopback speaking each provider's batch API.

Use it as a context manager in tests (``with Emulator() as emu: ...``) and give
``emu.base_url("openai")`` to our adapters or to the provider's official SDK; or run it from a shell::

    python -m airflow_batchwork.testing.emulator --port 8090 [--host 127.0.0.1] [--processing-seconds 1.0] \
        [--rate-limit-every N] [--server-error-every N] [--drop-connection-every N] ... [--providers openai,groq]

Any API key is accepted except a missing or empty one and the literal ``invalid``. Faults
(:class:`~airflow_batchwork.testing.faults.FaultConfig`) are constructor arguments, ``emu.faults`` at runtime,
or CLI flags; docs/emulator.md describes every knob.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import socket
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Collection, Sequence
from dataclasses import fields
from types import FrameType, TracebackType

import uvicorn
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.types import Scope

from airflow_batchwork.testing.faults import FaultConfig, Faults
from airflow_batchwork.testing.middleware import DropConnection, FaultMiddleware
from airflow_batchwork.testing.providers.base import ProviderApp
from airflow_batchwork.testing.registry import PROVIDERS, provider_for_path
from airflow_batchwork.testing.store import BatchView, RequestRecord, Store, StoredFile
from airflow_batchwork.testing.webhooks import WebhookSender
from airflow_batchwork.values.catalog import provider_entry

__all__ = ["Emulator", "build_app", "build_parser", "fault_config", "main"]

_START_TIMEOUT_SECONDS = 10.0
_STOP_TIMEOUT_SECONDS = 5.0
_ALIASES = {spec.name: spec.aliases for spec in PROVIDERS.values()}


def build_app(store: Store, faults: FaultConfig | None = None) -> Starlette:
    """The emulator's ASGI app over ``store``: every registered provider under its prefix.

    ``faults``, if given, becomes the config of ``store.faults``. Served by another ASGI server, dropped
    connections degrade (see :mod:`~airflow_batchwork.testing.middleware`).
    """
    if faults is not None:
        config = faults
        store.faults.source = lambda: config
    return _build_app(store)


def _build_app(store: Store, drop: DropConnection | None = None) -> Starlette:
    store.faults.aliases.update(_ALIASES)

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
    middleware = [Middleware(FaultMiddleware, store=store, resolve=provider_for_path, drop=drop)]
    return Starlette(routes=routes, middleware=middleware)


class Emulator:
    """OpenAI, Anthropic, ... batch APIs over real HTTP on a background thread.

    The server binds ``host`` (loopback by default) on ``port`` (0 = a free port). Batches created
    while it runs end ``processing_seconds`` after creation. ``faults`` may be replaced or mutated
    at any time; :attr:`requests` and :meth:`fault_counts` show what was injected. State lives in
    :attr:`store` and survives :meth:`stop` / :meth:`start`.
    """

    def __init__(
        self,
        processing_seconds: float = 1.0,
        host: str = "127.0.0.1",
        port: int = 0,
        faults: FaultConfig | None = None,
        webhooks: dict[str, tuple[str, str]] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.host = host
        self.requested_port = port
        self.faults = faults or FaultConfig()
        _check_providers(self.faults)
        # `clock`: the store's wall clock (batches progress by it), e.g. one a test moves forward.
        self.store = Store(processing_seconds=processing_seconds, clock=clock, faults=Faults(lambda: self.faults))
        self.app = _build_app(self.store, drop=self._drop_connection)
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._socket: socket.socket | None = None
        self._port: int | None = None
        # Signed batch webhooks ({provider: (url, secret)}), sent from a background thread: testing/webhooks.py.
        self.webhooks = WebhookSender(self.store)
        for provider, (url, secret) in (webhooks or {}).items():
            self.webhooks.configure(provider, url, secret)

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
        self.webhooks.start()
        return self

    def stop(self) -> None:
        """Stop serving and release the port (idempotent)."""
        server, thread, sock = self._server, self._thread, self._socket
        self._server = self._thread = self._socket = None
        self._port = None
        self.webhooks.stop()
        if server is None or thread is None:
            return
        server.should_exit = True
        thread.join(_STOP_TIMEOUT_SECONDS)
        if thread.is_alive():
            server.force_exit = True
            thread.join(_STOP_TIMEOUT_SECONDS)
        if sock is not None:
            sock.close()

    def configure_webhook(self, provider: str, url: str, secret: str) -> None:
        """POST signed webhooks for `provider`'s batches created from now on (openai, gemini) to `url`."""
        self.webhooks.configure(provider, url, secret)

    def __enter__(self) -> Emulator:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _drop_connection(self, scope: Scope) -> Awaitable[None] | None:
        """Close the client connection serving ``scope``; the result ends once uvicorn noticed. None if not found."""
        server, client = self._server, scope.get("client")
        if server is None or client is None:
            return None
        connections = server.server_state.connections
        for connection in list(connections):
            if getattr(connection, "client", None) == tuple(client):
                connection.transport.close()
                return _connection_lost(connections, connection)
        return None

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

    @property
    def clock(self) -> Callable[[], float]:
        """The wall clock batches progress by (the store's); set it to move time for every batch at once."""
        return self.store.clock

    @clock.setter
    def clock(self, value: Callable[[], float]) -> None:
        self.store.clock = value

    def batches(self, provider: str | None = None) -> list[BatchView]:
        """Snapshots of the batches created so far (of one provider), oldest first."""
        return self.store.batches(provider)

    def batch_ids(self, provider: str | None = None) -> list[str]:
        """Ids of the batches created so far (of one provider), oldest first, without asking the clock."""
        return self.store.batch_ids(provider)

    def files(self, provider: str | None = None) -> list[StoredFile]:
        """Files uploaded or generated so far (of one provider), oldest first."""
        return self.store.files(provider)

    @property
    def requests(self) -> list[RequestRecord]:
        """Every provider request answered so far, in order (``RequestRecord.fault`` names injected faults)."""
        return self.store.requests

    def fault_counts(self, provider: str | None = None) -> dict[str, dict[str, int]]:
        """Injected faults so far: provider -> fault kind -> count; result faults count lines or entries."""
        return self.store.faults.counts(provider)


async def _connection_lost(connections: Collection[object], connection: object) -> None:
    # uvicorn must see the connection lost before the app returns, or it answers a 500 of its own.
    for _ in range(1000):
        if connection not in connections:
            return
        await asyncio.sleep(0.001)


def _check_providers(config: FaultConfig) -> None:
    known = set(PROVIDERS) | {alias for aliases in _ALIASES.values() for alias in aliases}
    named = set(config.providers or ()) | set(config.per_provider)
    unknown = sorted(named - known)
    if unknown:
        raise ValueError(f"unknown provider(s) in FaultConfig: {', '.join(unknown)}; known: {', '.join(PROVIDERS)}")


def _every(value: str) -> int:
    number = int(value)
    if number < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {value}")
    return number


def _seconds(value: str) -> float:
    number = float(value)
    if number < 0:
        raise argparse.ArgumentTypeError(f"expected seconds >= 0, got {value}")
    return number


def build_parser() -> argparse.ArgumentParser:
    """The CLI's argument parser (server options and fault knobs)."""
    parser = argparse.ArgumentParser(
        prog="python -m airflow_batchwork.testing.emulator",
        description="Serve the airflow-batchwork provider emulator until interrupted.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1)")
    parser.add_argument(
        "--port", type=int, default=8090, help="port to bind, 0 = any free port (default: 8090)"
    )
    parser.add_argument(
        "--processing-seconds", type=_seconds, default=1.0, help="time until a batch ends (default: 1.0)"
    )
    faults = parser.add_argument_group("faults", "see docs/emulator.md; N = every Nth, 0 = off (default)")
    for flag, help_text in (
        ("--rate-limit-every", "every Nth request per provider answers 429 with Retry-After"),
        ("--server-error-every", "every Nth request per provider answers 500, 502, 503, 500, ..."),
        ("--drop-connection-every", "every Nth request per provider: connection closed mid-response"),
        ("--lose-create-response-every", "every Nth batch create: batch created, connection closed before any byte"),
        ("--truncate-results-every", "every Nth result line (or entry) cut in half"),
        ("--malformed-results-every", "every Nth result line (or entry) replaced by non-JSON garbage"),
    ):
        faults.add_argument(flag, type=_every, default=0, metavar="N", help=help_text)
    faults.add_argument(
        "--retry-after-seconds", type=_every, default=1, metavar="S", help="Retry-After of injected 429s (default: 1)"
    )
    faults.add_argument("--fail-validation", action="store_true", help="new batches fail validation")
    faults.add_argument(
        "--expire-partial", action="store_true", help="new batches expire with the first half of their requests done"
    )
    faults.add_argument("--slow-seconds", type=_seconds, default=0.0, metavar="S", help="delay every response")
    faults.add_argument("--random-seed", type=int, default=None, metavar="SEED",
                        help="request faults fire at random with probability 1/N (seeded) instead of every Nth")
    faults.add_argument(
        "--providers",
        metavar="P1,P2",
        help=f"apply the faults to these providers only (default: all; known: {', '.join(PROVIDERS)})",
    )
    return parser


def fault_config(args: argparse.Namespace) -> FaultConfig:
    """The :class:`FaultConfig` described by parsed CLI arguments (ValueError for an unknown provider)."""
    # Every knob has a flag of its own name (rate_limit_every <- --rate-limit-every); per_provider has none.
    config = FaultConfig(**{f.name: getattr(args, f.name) for f in fields(FaultConfig) if f.name != "per_provider"})
    _check_providers(config)
    return config


def paste_lines(emulator: Emulator) -> str:
    """Shell lines to point a plain script (env vars) or Airflow (connections) at this emulator."""
    from airflow_batchwork.testing.airflow_env import EMULATOR_API_KEY, connection_env

    lines = ["", "# To use it from a plain script (BatchClient), paste into the shell that runs it:"]
    for name in emulator.providers:
        key_var = provider_entry(name).key_env_vars[0]
        lines.append(f"export {key_var}={EMULATOR_API_KEY} {name.upper()}_BASE_URL={emulator.base_url(name)}")
    lines.append("# To use it from Airflow (airflow dags test, dag.test()), paste these connections:")
    for var, value in connection_env(emulator).items():
        lines.append(f"export {var}='{value}'")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point: serve until interrupted, printing each provider's base URL and the active faults."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        faults = fault_config(args)
    except ValueError as exc:
        parser.error(str(exc))

    stop = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    emulator = Emulator(processing_seconds=args.processing_seconds, host=args.host, port=args.port, faults=faults)
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
        print(f"faults: {faults.describe()}", flush=True)
        print(paste_lines(emulator), flush=True)
        while not stop.wait(0.5):
            pass
    finally:
        emulator.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
