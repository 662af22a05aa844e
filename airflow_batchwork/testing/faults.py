"""Transport-level faults for the emulator: what to break, and the middleware that breaks it.

:class:`FaultConfig` is read on every request, so a test may change ``emu.faults`` at runtime.
Counters are per provider: with ``rate_limit_every=3`` the 3rd, 6th, ... request to each provider
gets the 429, whatever the other providers receive. Item-level faults (``[[error]]``, ``[[expire]]``)
are not here; they are markers in prompts (see :mod:`airflow_batchwork.testing.echo`).
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from airflow_batchwork.testing.providers.base import ApiError, ProviderSpec
from airflow_batchwork.testing.store import RequestRecord, Store

__all__ = ["FaultConfig", "FaultMiddleware"]


@dataclass
class FaultConfig:
    """Which transport faults to inject; 0 disables a fault."""

    rate_limit_every: int = 0
    """Every Nth request per provider answers the provider's 429 with ``Retry-After``."""
    server_error_every: int = 0
    """Every Nth request per provider answers the provider's 500."""
    retry_after_seconds: int = 1
    """Value of the ``Retry-After`` header on injected 429s."""

    def fault_for(self, request_number: int) -> str | None:
        """The fault to inject into the ``request_number``-th (1-based) request, if any."""
        if self.rate_limit_every > 0 and request_number % self.rate_limit_every == 0:
            return "rate_limit"
        if self.server_error_every > 0 and request_number % self.server_error_every == 0:
            return "server_error"
        return None

    def error_for(self, fault: str) -> ApiError:
        """The provider-neutral error for ``fault``; the provider spec renders its body."""
        if fault == "rate_limit":
            return ApiError(
                429,
                "Rate limit reached for requests (injected by the batchwork emulator). "
                "Please try again later.",
                code="rate_limit_exceeded",
                headers={"retry-after": str(self.retry_after_seconds)},
            )
        if fault == "server_error":
            return ApiError(
                500, "The server had an error while processing your request (injected by the emulator)."
            )
        raise ValueError(f"unknown fault {fault!r}")


class FaultMiddleware:
    """ASGI middleware: injects configured faults and logs every provider request in the store."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        store: Store,
        faults: Callable[[], FaultConfig],
        resolve: Callable[[str], ProviderSpec | None],
    ) -> None:
        self.app = app
        self.store = store
        self.faults = faults
        self.resolve = resolve
        self._counts: Counter[str] = Counter()
        self._lock = threading.Lock()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        spec = self.resolve(scope["path"]) if scope["type"] == "http" else None
        if spec is None:
            await self.app(scope, receive, send)
            return
        with self._lock:
            self._counts[spec.name] += 1
            number = self._counts[spec.name]
        config = self.faults()
        fault = config.fault_for(number)
        status = 500

        async def recording_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            if fault is None:
                await self.app(scope, receive, recording_send)
            else:
                await spec.error_response(config.error_for(fault))(scope, receive, recording_send)
        finally:
            self.store.record_request(RequestRecord(spec.name, scope["method"], scope["path"], status, fault))
