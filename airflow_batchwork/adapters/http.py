"""HTTP plumbing shared by the adapters: auth headers, retries, error mapping, id and origin checks.

Retry rule: a call that is safe to repeat (reads, downloads, cancel) is retried on 408/429/5xx and on
transport errors, with jittered exponential backoff that honours `Retry-After`, for as long as the
policy's time budget lasts (a storm slows a job, it does not end it). A create call is retried here only
when the provider certainly did not act on it: a 429, or a connection that was never established.
Anything else surfaces as an *ambiguous* error (`is_ambiguous`), which the submit path resolves by a
provider-side lookup before it creates again, because blindly repeating a create can pay twice.

Redirects are never followed blindly: a 3xx is followed only to the configured API origin or to one of
the adapter's documented download hosts, with the credentials left out when the host changes; any other
redirect is an `UnsafeResponseError`. A download whose connection drops part-way is resumed with an
HTTP Range request where the server offers ranges, else restarted and the bytes already delivered
skipped, so the consumer sees each byte once and memory stays bounded.
"""

from __future__ import annotations

import asyncio
import codecs
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
from urllib.parse import urljoin, urlsplit

import httpx

from airflow_batchwork.values.errors import ProviderAPIError, UnsafeResponseError

log = logging.getLogger(__name__)

SAFE_ID = re.compile(r"^[A-Za-z0-9_-]{1,200}\Z")
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


MAX_REDIRECTS = 5


@dataclass(frozen=True)
class RetryPolicy:
    """How long to retry a failed call: until `max_elapsed` seconds have passed since its first try
    (a budget by time, so a storm of transient errors slows a call instead of ending it), and at most
    `max_attempts` tries when that is set."""

    max_attempts: int | None = None
    base_delay: float = 0.5
    max_delay: float = 30.0
    max_elapsed: float = 900.0

    def delay(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(max(retry_after, 0.0), MAX_RETRY_AFTER)
        backoff = min(self.max_delay, self.base_delay * 2 ** (min(attempt, 30) - 1))
        return backoff * random.uniform(0.5, 1.5)

    def allows(self, attempt: int, started: float, retry_after: float | None = None) -> bool:
        """Whether a try after `attempt` failed ones (the first at `started`, monotonic) may still run."""
        if self.max_attempts is not None and attempt >= self.max_attempts:
            return False
        wait = self.delay(attempt, retry_after) if retry_after is not None else 0.0
        return time.monotonic() - started + wait < self.max_elapsed


def is_ambiguous(error: BaseException) -> bool:
    """A failed non-idempotent call that the provider may still have carried out: a transport error after
    the request was sent, a timeout, or a 5xx answer."""
    if not isinstance(error, ProviderAPIError):
        return False
    return error.status_code == 0 or error.status_code == 408 or error.status_code >= 500


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
        download_hosts: frozenset[str] = frozenset(),
    ) -> None:
        self.provider = provider
        self.download_hosts = frozenset(h.lower() for h in download_hosts)
        self._bare: httpx.AsyncClient | None = None
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

    def _make_client(self, *, credentials: bool = True) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            headers=self._headers if credentials else {},
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
        for client in (self._http, self._bare):
            if client is not None:
                await client.aclose()
        self._http = self._bare = None

    def redirect_target(self, response: httpx.Response, *, what: str) -> tuple[str, bool]:
        """(next URL, send credentials?) of a redirect answer, or `UnsafeResponseError` when it leads
        anywhere but the configured origin or a documented download host of this provider."""
        location = response.headers.get("location")
        if not location:
            raise UnsafeResponseError(f"{self.provider} answered {what} with a {response.status_code} redirect "
                                      "that names no location")
        target = urljoin(str(response.request.url), location)
        parts = urlsplit(target)
        if (parts.scheme, parts.netloc) == self.origin:
            return target, True
        # A documented download host, never over a weaker scheme than the configured origin's.
        if parts.scheme in ("https", self.origin[0]) and (parts.hostname or "").lower() in self.download_hosts:
            return target, False
        raise UnsafeResponseError(
            f"refusing to follow the redirect of {what} to {parts.scheme}://{parts.netloc}: it is neither the "
            f"configured API origin {self.origin[0]}://{self.origin[1]} nor a documented {self.provider} "
            "download host"
        )

    def _client_for(self, credentials: bool) -> httpx.AsyncClient:
        if credentials:
            return self._client
        if self._bare is None:
            self._bare = self._make_client(credentials=False)
        return self._bare

    async def _send(self, method: str, url: str, *, stream: bool, what: str, **kwargs: Any) -> httpx.Response:
        """One try, following allowed redirects (credentials dropped once the host changes)."""
        credentials = True
        fast_get = getattr(self._transport, "fast_get", None)
        if fast_get is not None and method == "GET" and not stream and not kwargs:
            # A transport with a lean path for plain GETs (triggers/lean_http.py); a redirect or an answer it
            # does not take goes the ordinary way below.
            response = await fast_get(self._client, url)
            if response is not None and not 300 <= response.status_code < 400:
                return response
        for _ in range(MAX_REDIRECTS + 1):
            client = self._client_for(credentials)
            request = client.build_request(method, url, **kwargs)
            response = await client.send(request, stream=stream)
            if not 300 <= response.status_code < 400:
                return response
            await response.aclose()
            url, same_origin = self.redirect_target(response, what=what)
            credentials = credentials and same_origin
            if response.status_code in (301, 302, 303) and method != "HEAD":
                method = "GET"
                kwargs = {k: v for k, v in kwargs.items() if k not in ("content", "data", "files", "json")}
            kwargs.pop("params", None)  # the Location carries its own query
        raise UnsafeResponseError(f"{self.provider}: more than {MAX_REDIRECTS} redirects for {what}")

    async def request(self, method: str, path: str, *, retry_safe: bool, **kwargs: Any) -> httpx.Response:
        """Send one call with the retry rule above; raise `ProviderAPIError` on an error answer."""
        attempt = 0
        started = time.monotonic()
        while True:
            attempt += 1
            try:
                response = await self._send(method, self.url(path), stream=False, what=f"{method} {path}", **kwargs)
            except httpx.TransportError as exc:
                never_sent = isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout)
                if (retry_safe or never_sent) and self.retry.allows(attempt, started):
                    await self._sleep(attempt, None, f"{type(exc).__name__}", method, path)
                    continue
                raise ProviderAPIError(self.provider, 0, f"{type(exc).__name__}: {exc}", code="transport",
                                       method=method, url=_safe_url(self.url(path))) from None
            if response.status_code < 400:
                log.debug("%s %s %s -> %s", self.provider, method, path, response.status_code)
                return response
            error = self.error_for(response)
            if error.retryable and (retry_safe or response.status_code == 429) \
                    and self.retry.allows(attempt, started, error.retry_after):
                await self._sleep(attempt, error.retry_after, str(response.status_code), method, path)
                continue
            raise error

    async def _open(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """A streaming response whose body has not been read yet, retried until the body starts."""
        attempt = 0
        started = time.monotonic()
        while True:
            attempt += 1
            try:
                response = await self._send(method, self.url(path), stream=True, what=f"the download {path}",
                                            **kwargs)
            except httpx.TransportError as exc:
                if self.retry.allows(attempt, started):
                    await self._sleep(attempt, None, type(exc).__name__, method, path)
                    continue
                raise ProviderAPIError(self.provider, 0, f"{type(exc).__name__}: {exc}", code="transport",
                                       method=method, url=_safe_url(self.url(path))) from None
            if response.status_code >= 400:
                await response.aread()
                await response.aclose()
                error = self.error_for(response)
                if error.retryable and self.retry.allows(attempt, started, error.retry_after):
                    await self._sleep(attempt, error.retry_after, str(response.status_code), method, path)
                    continue
                raise error
            return response

    @asynccontextmanager
    async def stream(self, method: str, path: str, **kwargs: Any) -> AsyncIterator[ResumableDownload]:
        """Open a streaming download (a safe call: retried until the body starts, then resumed after a
        dropped connection; see `ResumableDownload`)."""
        download = ResumableDownload(self, method, path, kwargs, await self._open(method, path, **kwargs))
        try:
            yield download
        finally:
            await download.aclose()

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
        log.warning("%s %s %s failed (%s); retry %d in %.1fs", self.provider, method, path, reason, attempt, delay)
        await asyncio.sleep(delay)


class ResumableDownload:
    """The body of a download that survives dropped connections.

    `aiter_bytes`/`aiter_lines` yield every byte once: after a transport error mid-body the download is
    re-opened with `Range: bytes=<received>-` when the first answer offered byte ranges (and carried no
    content coding), else from the start with the bytes already delivered skipped. A resumed answer whose
    length or validator differs from the first is an error (the file changed), as is running out of the
    retry budget. Only one piece is held at a time, so memory stays bounded."""

    def __init__(self, http: ProviderHTTP, method: str, path: str, kwargs: Mapping[str, Any],
                 response: httpx.Response) -> None:
        self._http = http
        self._method = method
        self._path = path
        self._kwargs = dict(kwargs)
        self.response = response
        self.status_code = response.status_code
        self.headers = response.headers
        self.resumes = 0
        self._length = response.headers.get("content-length")
        self._validator = response.headers.get("etag") or response.headers.get("last-modified")
        self._ranges = response.headers.get("accept-ranges", "").lower() == "bytes" \
            and not response.headers.get("content-encoding")

    async def aclose(self) -> None:
        await self.response.aclose()

    async def _reopen(self, received: int) -> tuple[httpx.Response, int]:
        """A new response and how many of its leading bytes were already delivered."""
        kwargs = dict(self._kwargs)
        if self._ranges and received:
            headers = dict(kwargs.get("headers") or {})
            headers["range"] = f"bytes={received}-"
            if self._validator:
                headers["if-range"] = self._validator
            kwargs["headers"] = headers
        response = await self._http._open(self._method, self._path, **kwargs)
        validator = response.headers.get("etag") or response.headers.get("last-modified")
        if self._validator and validator and validator != self._validator:
            await response.aclose()
            raise ProviderAPIError(self._http.provider, 0, f"the download {self._path} changed while it was resumed",
                                   code="transport")
        if response.status_code == 206:
            return response, 0
        if self._length and response.headers.get("content-length") not in (None, self._length):
            await response.aclose()
            raise ProviderAPIError(self._http.provider, 0, f"the download {self._path} changed size while it was "
                                   "restarted", code="transport")
        return response, received

    async def aiter_bytes(self) -> AsyncIterator[bytes]:
        received = 0
        skip = 0
        attempt = 0
        started = time.monotonic()
        while True:
            try:
                async for piece in self.response.aiter_bytes():
                    if skip:
                        if len(piece) <= skip:
                            skip -= len(piece)
                            continue
                        piece, skip = piece[skip:], 0
                    received += len(piece)
                    yield piece
                return
            except httpx.TransportError as exc:
                attempt += 1
                await self.response.aclose()
                if not self._http.retry.allows(attempt, started):
                    message = f"{type(exc).__name__}: {exc} (download {self._path} dropped after {received:,} bytes)"
                    raise ProviderAPIError(self._http.provider, 0, message, code="transport") from None
                await self._http._sleep(attempt, None, f"{type(exc).__name__} after {received:,} bytes",
                                        self._method, self._path)
                self.resumes += 1
                self.response, skip = await self._reopen(received)

    async def aiter_lines(self) -> AsyncIterator[str]:
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        pending = ""
        async for piece in self.aiter_bytes():
            pending += decoder.decode(piece)
            *lines, pending = pending.split("\n")
            for line in lines:
                yield line.removesuffix("\r")
        pending += decoder.decode(b"", final=True)
        if pending:
            yield pending.removesuffix("\r")
