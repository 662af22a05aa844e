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
from airflow_batchwork.values.credentials import Credentials

# Polls in flight per shared client. httpcore scans every queued request each time a connection frees
# up, so thousands of polls queued on one pool cost quadratic CPU (5,000 triggers starting together
# stalled a triggerer for minutes in bench/trigger.py); waiting on a semaphore instead costs nothing.
MAX_POLLS_IN_FLIGHT = 64


@dataclass
class _Shared:
    loop: asyncio.AbstractEventLoop
    client: BatchClient
    users: int = 0
    slots: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(MAX_POLLS_IN_FLIGHT))


class SharedClients:
    """Reference-counted `BatchClient`s keyed by (event loop, provider, credentials)."""

    def __init__(self) -> None:
        self._clients: dict[tuple[int, str, str, str | None, tuple[tuple[str, str], ...]], _Shared] = {}

    def __len__(self) -> int:
        return len(self._clients)

    def slot(self, client: BatchClient) -> asyncio.Semaphore:
        """Hold this around each call through a shared client: at most MAX_POLLS_IN_FLIGHT at once."""
        for shared in self._clients.values():
            if shared.client is client:
                return shared.slots
        raise KeyError("not a shared client")

    @asynccontextmanager
    async def client(self, provider: str, credentials: Credentials) -> AsyncIterator[BatchClient]:
        loop = asyncio.get_running_loop()
        key = (id(loop), provider, credentials.api_key, credentials.base_url,
               tuple(sorted(credentials.headers.items())))
        shared = self._clients.get(key)
        if shared is None or shared.loop is not loop:
            shared = self._clients[key] = _Shared(loop, BatchClient({provider: credentials}))
        shared.users += 1
        try:
            yield shared.client
        finally:
            shared.users -= 1
            if shared.users == 0 and self._clients.get(key) is shared:
                del self._clients[key]
                await shared.client.aclose()


SHARED_CLIENTS = SharedClients()
