"""HTTP plumbing shared by the adapters: auth headers, retries, error mapping, id and origin checks.

Retry rule: a call that is safe to repeat (reads, downloads, cancel) is retried on 408/429/5xx and on
transport errors. A create call is retried only when the provider certainly did not act on it: a 429,
or a connection that was never established. Anything else surfaces, because blindly repeating a create
can start a second paid batch.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import random
import re
import ssl
import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx

from airflow_batchwork.core.errors import ProviderAPIError, UnsafeResponseError

log = logging.getLogger(__name__)

SAFE_ID = re.compile(r"^[A-Za-z0-9_-]{1,200}$")
MAX_RETRY_AFTER = 60.0

ErrorParser = Callable[[httpx.Response], tuple[str | None, str]]
_SSL_CONTEXT: ssl.SSLContext | None = None


def shared_ssl_context() -> ssl.SSLContext:
    """One TLS context per process: building one loads the CA bundle (milliseconds of CPU), which a
    triggerer running a thousand triggers must not pay per trigger on its event loop."""
    global _SSL_CONTEXT
    if _SSL_CONTEXT is None:
        _SSL_CONTEXT = httpx.create_ssl_context()
    return _SSL_CONTEXT


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how long to retry a failed call."""

    max_attempts: int = 5
    base_delay: float = 0.5
    max_delay: float = 30.0

    def delay(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(max(retry_after, 0.0), MAX_RETRY_AFTER)
        backoff = min(self.max_delay, self.base_delay * 2 ** (attempt - 1))
        return backoff * random.uniform(0.5, 1.5)


def check_id(value: object, *, what: str, pattern: re.Pattern[str] = SAFE_ID) -> str:
    """Refuse a provider id that is not safe to put into a URL path."""
    if not isinstance(value, str) or not pattern.match(value):
        raise UnsafeResponseError(f"refusing to use {what} {value!r}: it does not match {pattern.pattern}")
    return value


def retry_after_seconds(response: httpx.Response) -> float | None:
    """Seconds from `retry-after-ms` or `Retry-After` (seconds or HTTP date)."""
    ms = response.headers.get("retry-after-ms")
    if ms:
        try:
            return float(ms) / 1000
        except ValueError:
            pass
    value = response.headers.get("retry-after")
    if not value:
        return None
    try:
        return float(value)
    except ValueError:
        parsed = email.utils.parsedate_to_datetime(value) if value else None
        return max(0.0, parsed.timestamp() - time.time()) if parsed else None


def default_error_parser(response: httpx.Response) -> tuple[str | None, str]:
    """(code, message) from the usual `{"error": {"code", "message"}}` or `{"message"}` bodies."""
    try:
        body: Any = response.json()
    except ValueError:
        return None, (response.text[:300] or response.reason_phrase)
    if isinstance(body, dict):
        error = body.get("error", body)
        if isinstance(error, dict):
            code = error.get("code") or error.get("type") or error.get("status")
            message = error.get("message") or response.reason_phrase
            return (str(code) if code is not None else None), str(message)
        if isinstance(error, str):
            return None, error
    return None, response.reason_phrase


def _safe_url(url: str) -> str:
    """A URL for an error message: no query string (Gemini can carry `key=` there), no user info."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname or ''}{f':{parts.port}' if parts.port else ''}{parts.path}"


class ProviderHTTP:
    """One provider's async HTTP client: base URL, auth headers, retries, error mapping."""

    def __init__(
        self,
        provider: str,
        base_url: str,
        headers: Mapping[str, str],
        *,
        error_parser: ErrorParser = default_error_parser,
        retry: RetryPolicy | None = None,
        timeout: float = 120.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.provider = provider
        self.base_url = base_url.rstrip("/")
        self._error_parser = error_parser
        self.retry = retry or RetryPolicy()
        self._headers = dict(headers)
        self._timeout = timeout
        self._transport = transport
        self._http: httpx.AsyncClient | None = None
        origin = urlsplit(self.base_url)
        self.origin = (origin.scheme, origin.netloc)

    def url(self, path: str) -> str:
        return path if path.startswith(("http://", "https://")) else f"{self.base_url}{path}"

    def check_origin(self, url: str, *, what: str) -> str:
        """Refuse to send credentials to a URL outside the configured API origin."""
        parts = urlsplit(url)
        if (parts.scheme, parts.netloc) != self.origin:
            raise UnsafeResponseError(
                f"refusing to fetch {what} from {parts.scheme}://{parts.netloc}: it is not the configured "
                f"API origin {self.origin[0]}://{self.origin[1]}"
            )
        return url

    def _make_client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            headers=self._headers,
            timeout=httpx.Timeout(self._timeout, connect=15.0),
            transport=self._transport,
            follow_redirects=False,
            verify=shared_ssl_context(),
        )

    @property
    def _client(self) -> httpx.AsyncClient:
        """The client, created on first use inside the running event loop."""
        if self._http is None:
            self._http = self._make_client()
        return self._http

    def __repr__(self) -> str:
        return f"<ProviderHTTP {self.provider} {self.base_url}>"

    async def aclose(self) -> None:
        client, self._http = self._http, None
        if client is not None:
            await client.aclose()

    async def request(self, method: str, path: str, *, retry_safe: bool, **kwargs: Any) -> httpx.Response:
        """Send one call with the retry rule above; raise `ProviderAPIError` on an error answer."""
        attempt = 0
        while True:
            attempt += 1
            try:
                response = await self._client.request(method, self.url(path), **kwargs)
            except httpx.TransportError as exc:
                never_sent = isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout)
                if attempt < self.retry.max_attempts and (retry_safe or never_sent):
                    await self._sleep(attempt, None, f"{type(exc).__name__}", method, path)
                    continue
                raise ProviderAPIError(self.provider, 0, f"{type(exc).__name__}: {exc}", code="transport",
                                       method=method, url=_safe_url(self.url(path))) from None
            if response.status_code < 400:
                log.debug("%s %s %s -> %s", self.provider, method, path, response.status_code)
                return response
            error = self.error_for(response)
            if attempt < self.retry.max_attempts and error.retryable and (retry_safe or response.status_code == 429):
                await self._sleep(attempt, error.retry_after, str(response.status_code), method, path)
                continue
            raise error

    @asynccontextmanager
    async def stream(self, method: str, path: str, **kwargs: Any) -> AsyncIterator[httpx.Response]:
        """Open a streaming download (a safe call: retried until the body starts)."""
        attempt = 0
        while True:
            attempt += 1
            try:
                request = self._client.build_request(method, self.url(path), **kwargs)
                response = await self._client.send(request, stream=True)
            except httpx.TransportError as exc:
                if attempt < self.retry.max_attempts:
                    await self._sleep(attempt, None, type(exc).__name__, method, path)
                    continue
                raise ProviderAPIError(self.provider, 0, f"{type(exc).__name__}: {exc}", code="transport",
                                       method=method, url=_safe_url(self.url(path))) from None
            if response.status_code >= 400:
                await response.aread()
                await response.aclose()
                error = self.error_for(response)
                if attempt < self.retry.max_attempts and error.retryable:
                    await self._sleep(attempt, error.retry_after, str(response.status_code), method, path)
                    continue
                raise error
            try:
                yield response
            finally:
                await response.aclose()
            return

    def error_for(self, response: httpx.Response) -> ProviderAPIError:
        code, message = self._error_parser(response)
        method: str | None
        url: str | None
        try:
            method, url = response.request.method, _safe_url(str(response.request.url))
        except RuntimeError:  # a response built without its request
            method = url = None
        return ProviderAPIError(
            self.provider, response.status_code, message, code=code, retry_after=retry_after_seconds(response),
            method=method, url=url,
        )

    async def _sleep(self, attempt: int, retry_after: float | None, reason: str, method: str, path: str) -> None:
        delay = self.retry.delay(attempt, retry_after)
        log.warning(
            "%s %s %s failed (%s); retry %d/%d in %.1fs",
            self.provider, method, path, reason, attempt, self.retry.max_attempts - 1, delay,
        )
        await asyncio.sleep(delay)
