"""BatchworkHook: Airflow connections -> provider credentials -> the core's `BatchClient`.

Credential order for a provider: the explicit `conn_id`; else the connection `batchwork_<provider>` if
it exists; else the provider's usual env vars (`OPENAI_API_KEY`, …, and `<PROVIDER>_BASE_URL`).
Keys are registered with Airflow's secret masker as soon as they are read.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, TypeVar

from airflow.sdk import BaseHook
from airflow.sdk.exceptions import AirflowNotFoundException
from airflow.sdk.log import amask_secret, mask_secret

from airflow_batchwork.adapters import adapter_class
from airflow_batchwork.engine.client import BatchClient
from airflow_batchwork.values.credentials import Credentials, credentials_from_env
from airflow_batchwork.values.errors import CredentialsError
from airflow_batchwork.values.handle import JobHandle
from airflow_batchwork.values.status import JobStatus

T = TypeVar("T")
CREDENTIALS_TTL = 60.0
_CREDENTIALS_CACHE: dict[tuple[str | None, ...], tuple[float, Credentials]] = {}


def default_conn_id(provider: str) -> str:
    return f"batchwork_{provider}"


def _secrets(creds: Credentials) -> list[str]:
    """What to register with Airflow's secret masker: the key and every extra header value."""
    return [value for value in (creds.api_key, *map(str, creds.headers.values())) if value]


class BatchworkHook(BaseHook):
    """Credentials and clients for the seven batch providers; sync methods for operators, async for triggers."""

    conn_name_attr = "conn_id"
    default_conn_name = "batchwork_default"
    conn_type = "batchwork"
    hook_name = "Batchwork (LLM batch APIs)"

    def __init__(self, conn_id: str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.conn_id = conn_id

    # --- credentials -----------------------------------------------------------------------------
    def credentials(self, provider: str) -> Credentials:
        """Resolve credentials with blocking connection lookup (worker side)."""
        conn_id = self.conn_id or default_conn_id(provider)
        try:
            conn = self.get_connection(conn_id)
        except AirflowNotFoundException:
            creds = self._fallback(provider, conn_id)
        else:
            creds = self._from_connection(provider, conn_id, conn.password, conn.host, conn.extra_dejson)
        for secret in _secrets(creds):
            mask_secret(secret)
        return creds

    async def acredentials(self, provider: str) -> Credentials:
        """Resolve credentials without blocking the event loop (triggerer side).

        Cached per process for `CREDENTIALS_TTL` seconds: a triggerer with a thousand triggers on one
        connection looks it up once, not a thousand times per restart."""
        key = self._cache_key(provider)
        cached = _CREDENTIALS_CACHE.get(key)
        if cached and cached[0] > time.monotonic():
            return cached[1]
        creds = await self._acredentials(provider)
        _CREDENTIALS_CACHE[key] = (time.monotonic() + CREDENTIALS_TTL, creds)
        return creds

    @staticmethod
    def import_async_lookup() -> None:
        """Import what `acredentials` imports on its first call: Airflow's async connection lookup
        (``airflow.providers.common.compat.connection``) and what the Task SDK imports inside it on first
        use (``asgiref.sync``, its secret cache, its `Connection`). The trigger module calls this when it
        is loaded, so a triggerer pays these imports when it loads the trigger class, not in the first
        trigger's lookup: there they ran inside one event-loop iteration, ~13-24 ms of CPU and up to 72 ms
        of wall time with the source compiled (``PYTHONDONTWRITEBYTECODE``) on a busy machine, while no
        other trigger could run (bench/trigger.py's loop trace). Kept out of this module's own imports so
        workers and the scheduler, which never look a connection up asynchronously, do not pay them."""
        import airflow.providers.common.compat.connection
        import airflow.sdk.definitions.connection
        import airflow.sdk.execution_time.cache  # noqa: F401
        import asgiref.sync  # noqa: F401

    def _cache_key(self, provider: str) -> tuple[str | None, ...]:
        """The connection id plus every env var that can define it: a changed env var is a new entry."""
        conn_id = self.conn_id or default_conn_id(provider)
        cls = adapter_class(provider)
        env = [os.environ.get(name) for name in (f"AIRFLOW_CONN_{conn_id.upper()}", *cls.key_env_vars,
                                                  f"{provider.upper()}_BASE_URL")]
        return (conn_id, provider, *env)

    async def _acredentials(self, provider: str) -> Credentials:
        from airflow.providers.common.compat.connection import get_async_connection, get_async_extra_dejson

        conn_id = self.conn_id or default_conn_id(provider)
        try:
            conn = await get_async_connection(conn_id, hook=self)
        except AirflowNotFoundException:
            creds = self._fallback(provider, conn_id)
        else:
            extra = await get_async_extra_dejson(conn)
            creds = self._from_connection(provider, conn_id, conn.password, conn.host, extra)
        # The async variant: the sync one may block on the supervisor while another call is in flight.
        for secret in _secrets(creds):
            await amask_secret(secret)
        return creds

    def _fallback(self, provider: str, conn_id: str) -> Credentials:
        if self.conn_id:
            raise CredentialsError(
                "conn_id", f"connection {conn_id!r} does not exist",
                f"create it (type batchwork, password = API key) or leave conn_id unset to use "
                f"'{default_conn_id(provider)}' or the provider's env var",
            )
        cls = adapter_class(provider)
        try:
            creds = credentials_from_env(provider, cls.key_env_vars)
        except CredentialsError as exc:
            if exc.field != "credentials":  # a key is set but unusable: say so, not "not set"
                raise
            raise CredentialsError(
                "conn_id",
                f"no credentials for {provider!r}: connection {conn_id!r} does not exist and "
                f"{' / '.join(cls.key_env_vars)} is not set",
                f"create the connection '{conn_id}' (type batchwork, password = API key) or set "
                f"{cls.key_env_vars[0]}",
            ) from None
        return creds

    @staticmethod
    def _from_connection(
        provider: str, conn_id: str, password: str | None, host: str | None, extra: Mapping[str, Any]
    ) -> Credentials:
        declared = extra.get("provider") or extra.get("extra__batchwork__provider")
        if declared and adapter_class(str(declared)).provider != adapter_class(provider).provider:
            raise CredentialsError(
                "conn_id", f"connection {conn_id!r} is for provider {declared!r}, but the job uses {provider!r}",
                f"use the connection of {provider!r} (default 'batchwork_{provider}')",
            )
        if not password:
            raise CredentialsError(
                "conn_id", f"connection {conn_id!r} has no API key", "put the API key in the connection's password"
            )
        headers = extra.get("headers") or extra.get("extra__batchwork__headers") or {}
        if isinstance(headers, str):
            headers = json.loads(headers) if headers.strip() else {}
        base_url = host or extra.get("base_url") or None
        return Credentials(api_key=password, base_url=base_url, headers=dict(headers), source=f"connection {conn_id}")

    # --- clients ---------------------------------------------------------------------------------
    def client(self, provider: str) -> BatchClient:
        """A client for `provider` (create it inside the event loop that will use it)."""
        return BatchClient({provider: self.credentials(provider)})

    async def aclient(self, provider: str) -> BatchClient:
        return BatchClient({provider: await self.acredentials(provider)})

    def _run(self, provider: str, call: Callable[[BatchClient], Awaitable[T]]) -> T:
        creds = self.credentials(provider)

        async def run() -> T:
            async with BatchClient({provider: creds}) as client:
                return await call(client)

        return asyncio.run(run())

    # --- sync calls for operators ----------------------------------------------------------------
    def submit(
        self, model: str, requests: Iterable[Mapping[str, Any]], *, provider: str, **kwargs: Any
    ) -> JobHandle:
        return self._run(provider, lambda c: c.submit(model, requests, conn_id=self.conn_id, **kwargs))

    def status(self, job: JobHandle) -> JobStatus:
        return self._run(job.provider, lambda c: c.status(job))

    def cancel(self, job: JobHandle) -> JobStatus:
        return self._run(job.provider, lambda c: c.cancel(job))

    def wait(self, job: JobHandle, **kwargs: Any) -> JobStatus:
        return self._run(job.provider, lambda c: c.wait(job, **kwargs))

    def write_parquet(self, job: JobHandle, url: str, **kwargs: Any) -> dict[str, Any]:
        return self._run(job.provider, lambda c: c.write_parquet(job, url, **kwargs))

    def test_connection(self) -> tuple[bool, str]:
        """List one batch with the connection's key."""
        if not self.conn_id:
            return False, "no conn_id"
        conn = self.get_connection(self.conn_id)
        provider = conn.extra_dejson.get("provider")
        if not provider:
            return False, "set the connection's provider field to test it"

        async def probe(client: BatchClient) -> None:
            async for _ in client.adapter(provider).list_batches(limit=1):
                break

        try:
            self._run(provider, probe)
        except Exception as exc:
            return False, str(exc)
        return True, f"{provider} accepted the key"
