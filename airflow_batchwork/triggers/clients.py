"""One HTTP client per provider and credentials for all triggers of a triggerer process.

A triggerer runs thousands of triggers on one event loop. Each building its own client would open
its own connection pool (one socket per trigger) and pay the client's set-up cost at start; sharing
one keeps a few keep-alive connections and makes a trigger's start cheap. Clients are tied to the
event loop that made them (httpx pools are loop-bound), so the registry is keyed by the running loop
too, and a client is closed when its last trigger is done with it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from airflow_batchwork.engine.client import BatchClient
from airflow_batchwork.triggers.lean_http import LeanTransport
from airflow_batchwork.values.credentials import Credentials

# Polls in flight per shared client. httpcore scans every queued request each time a connection frees
# up, so thousands of polls queued on one pool cost quadratic CPU (5,000 triggers starting together
# stalled a triggerer for minutes in bench/trigger.py); waiting on a semaphore instead costs nothing.
MAX_POLLS_IN_FLIGHT = 64


@dataclass
class SharedClient:
    loop: asyncio.AbstractEventLoop
    client: BatchClient
    key: tuple[int, str, str, str | None, tuple[tuple[str, str], ...]]
    users: int = 0
    slots: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(MAX_POLLS_IN_FLIGHT))


class SharedClients:
    """Reference-counted `BatchClient`s keyed by (event loop, provider, credentials)."""

    def __init__(self) -> None:
        self._clients: dict[tuple[int, str, str, str | None, tuple[tuple[str, str], ...]], SharedClient] = {}

    def __len__(self) -> int:
        return len(self._clients)

    def acquire(self, provider: str, credentials: Credentials) -> SharedClient:
        """The shared client for (running loop, provider, credentials), counted as one more user; pair
        with `release`. (A plain method pair rather than a context manager: a trigger holds it for its
        whole life, and an async generator per trigger is objects every full garbage collection walks.)"""
        loop = asyncio.get_running_loop()
        key = (id(loop), provider, credentials.api_key, credentials.base_url,
               tuple(sorted(credentials.headers.items())))
        shared = self._clients.get(key)
        if shared is None or shared.loop is not loop:
            # GET polls over the lean keep-alive transport (see triggers/lean_http.py), the rest over httpx.
            client = BatchClient({provider: credentials}, transport=LeanTransport(max_connections=MAX_POLLS_IN_FLIGHT))
            shared = self._clients[key] = SharedClient(loop, client, key)
        shared.users += 1
        return shared

    async def release(self, shared: SharedClient) -> None:
        """One user fewer; the client is closed after its last user."""
        shared.users -= 1
        if shared.users == 0 and self._clients.get(shared.key) is shared:
            del self._clients[shared.key]
            await shared.client.aclose()

    @asynccontextmanager
    async def client(self, provider: str, credentials: Credentials) -> AsyncIterator[BatchClient]:
        shared = self.acquire(provider, credentials)
        try:
            yield shared.client
        finally:
            await self.release(shared)

SHARED_CLIENTS = SharedClients()
