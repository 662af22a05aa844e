"""The provider adapter seam: everything provider-specific lives behind `ProviderAdapter`.

This package must never import a provider SDK or Airflow: adapters speak each provider's wire format
directly over httpx, so the core runs from a plain script and the SDKs stay test-only dependencies.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable, Collection, Iterable, Iterator, Mapping, Sequence, Sized
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

import httpx
import orjson
import pyarrow as pa

from airflow_batchwork.adapters.content import TEXT_ONLY, ContentSupport, check_content
from airflow_batchwork.adapters.http import SAFE_ID, ProviderHTTP, RetryPolicy, check_id, default_error_parser
from airflow_batchwork.values.calls import CallProgress
from airflow_batchwork.values.catalog import EndpointSpec
from airflow_batchwork.values.credentials import Credentials
from airflow_batchwork.values.refs import ModelRef
from airflow_batchwork.values.requests import CUSTOM_ID_PATTERN, BatchRequest, PlainSpec
from airflow_batchwork.values.result_schema import items_to_batch
from airflow_batchwork.values.status import BatchStatus, ItemResult

# (field, problem, fix): a request the provider cannot serve, refused before any API call.
Refusal = tuple[str, str, str]
log = logging.getLogger(__name__)
# What a result line cannot be parsed into raises one of these; the line is then salvaged.
PARSE_ERRORS = (ValueError, TypeError, AttributeError, KeyError, IndexError)


def salvage_line(line: str, batch_id: str, reason: str, *, id_key: str = "custom_id") -> ItemResult | None:
    """A result line that cannot be read: `errored` (parse_error) if its id can still be found, else None."""
    match = re.search(rf'"{re.escape(id_key)}"\s*:\s*"([A-Za-z0-9_-]{{1,64}})"', line)
    if not match:
        log.warning("Skipping an unreadable result line of batch %s with no %s (%s)", batch_id, id_key, reason)
        return None
    return ItemResult(
        custom_id=match.group(1), status="errored", batch_id=batch_id, response=line, finish_reason="error",
        error_code="parse_error", error_message=f"the provider's result line could not be read: {reason}",
    )


@dataclass(frozen=True)
class ProviderLimits:
    """Per-batch limits; a job over them is split into several provider batches."""

    max_requests: int
    max_bytes: int
    max_request_bytes: int

    def with_overrides(self, overrides: Mapping[str, int] | None) -> ProviderLimits:
        return replace(self, **dict(overrides)) if overrides else self


class ProviderAdapter(ABC):
    """Build payloads for, submit to, poll, read results of, cancel and list one provider's batches."""

    provider: ClassVar[str]
    endpoints: ClassVar[tuple[EndpointSpec, ...]]
    string_default: ClassVar[str]
    factory_default: ClassVar[str]
    key_env_vars: ClassVar[tuple[str, ...]]
    default_base_url: ClassVar[str]
    limits: ClassVar[ProviderLimits]
    id_pattern: ClassVar[re.Pattern[str]] = SAFE_ID
    #: What a batch id of this provider looks like (data for validating handles from XCom and links);
    #: None: `id_pattern`.
    batch_id_pattern: ClassVar[re.Pattern[str] | None] = None
    #: The field that carries our custom_id in a result line (to salvage unreadable lines).
    result_id_key: ClassVar[str] = "custom_id"
    console_url: ClassVar[str | None] = None
    #: Hosts (besides the configured API origin) the provider documents for result downloads; a redirect
    #: is followed there without credentials, anywhere else it is an error (adapters/http.py).
    download_hosts: ClassVar[frozenset[str]] = frozenset()
    #: Item `error_code`s worth resubmitting (rate limits, server errors, timeouts, overload).
    retryable_error_codes: ClassVar[frozenset[str]] = frozenset({"429", "500", "502", "503", "504"})
    #: Lower-case fragments of item error messages that mark a retryable failure (for codeless errors).
    retryable_error_messages: ClassVar[tuple[str, ...]] = ()

    def __init__(
        self,
        credentials: Credentials,
        *,
        retry: RetryPolicy | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.credentials = credentials
        self.http = ProviderHTTP(
            self.provider,
            credentials.base_url or self.default_base_url,
            {**self.auth_headers(credentials.api_key), **credentials.headers},
            error_parser=self.parse_error,
            retry=retry,
            transport=transport,
            download_hosts=self.download_hosts,
        )

    @classmethod
    def offline(cls) -> ProviderAdapter:
        """An instance for the pure methods (`check_request`, `encode`): no credentials, no HTTP client."""
        return cls.__new__(cls)

    # --- declaration -----------------------------------------------------------------------------
    @classmethod
    def endpoint(cls, name: str) -> EndpointSpec:
        for spec in cls.endpoints:
            if spec.name == name:
                return spec
        raise KeyError(name)

    @classmethod
    def batch_link(cls, batch_id: str) -> str | None:
        """The provider console page of a batch, where one exists (never for an id that does not look
        like one of this provider's batch ids)."""
        if not cls.console_url or not cls.is_batch_id(batch_id):
            return None
        return cls.console_url.format(batch_id=batch_id)

    @classmethod
    def is_batch_id(cls, value: object) -> bool:
        pattern = cls.batch_id_pattern or cls.id_pattern
        return isinstance(value, str) and pattern.fullmatch(value) is not None

    @abstractmethod
    def auth_headers(self, api_key: str) -> dict[str, str]:
        """The headers that carry the API key."""

    @staticmethod
    def parse_error(response: httpx.Response) -> tuple[str | None, str]:
        """(code, message) of an error answer."""
        return default_error_parser(response)

    def check_id(self, value: object, what: str = "batch id") -> str:
        return check_id(value, what=f"{self.provider} {what}", pattern=self.id_pattern)

    # --- payloads (pure: they must not touch self.http or self.credentials) ---------------------
    def content_support(self, ref: ModelRef) -> ContentSupport:
        """The image/file parts and tools `ref`'s endpoint takes (text only unless an adapter says more)."""
        return TEXT_ONLY

    def check_content(self, ref: ModelRef, request: BatchRequest) -> Refusal | None:
        """A reason `ref`'s endpoint cannot take the parts or tools of `request`, or None."""
        if request.messages is None and not request.tools:
            return None  # no parts, no tools (a tool_choice without tools is refused by the validation)
        return check_content(request, self.content_support(ref), f"{self.provider}.{ref.endpoint}")

    def check_request(self, ref: ModelRef, request: BatchRequest) -> Refusal | None:
        """A reason this provider/endpoint cannot serve `request`, or None."""
        return None

    # --- prompt-cache control (docs/pay-once.md); providers without explicit control keep these ---------
    #: The provider takes an explicit cache marker on a shared prefix (`cache_prefix` of a request).
    prompt_cache_control: ClassVar[bool] = False
    #: The provider caches long prompt prefixes on its own, with no marker, and reports the cached tokens in
    #: its usage: `cache_prefix` then adds nothing to the request and only turns on the cache token columns.
    prompt_cache_automatic: ClassVar[bool] = False
    #: The provider's input token count includes the cached tokens (OpenAI, Gemini; Anthropic's does not).
    cache_tokens_in_input: ClassVar[bool] = False
    #: A regex matching a raw result line that reports a nonzero cache count (None: parse every line). It lets
    #: the cost correction of automatic caching skip, vectorized, the lines with nothing cached.
    cache_hit_pattern: ClassVar[str | None] = None

    def primes(self, ref: ModelRef, request: BatchRequest) -> bool:
        """Whether a one-item batch of `request`, run before the rest of the job, would write a prompt-cache
        entry the rest can read (its marked prefix is long enough to be cached)."""
        return False

    @classmethod
    def cache_tokens(cls, responses: pa.Array) -> tuple[pa.Array, pa.Array, pa.Array] | None:
        """(cache read, cache write 5m, cache write 1h) input tokens of each raw result line, or None when
        the provider reports no such counts. A provider whose writes have one lifetime reports them as 5m."""
        return None

    @abstractmethod
    def encode(self, ref: ModelRef, request: BatchRequest) -> bytes:
        """One request as the provider's JSON item (a JSONL line or an inline entry), without newline."""

    def plain_refusal(self, ref: ModelRef, requests: Sequence[PlainSpec]) -> tuple[int, Refusal] | None:
        """(position, refusal) of the first of a chunk of plain requests that `check_request` refuses, or None.
        Adapters may first rule out, for the whole chunk, the fields they can refuse."""
        check = self.check_request
        for position, request in enumerate(requests):
            refusal = check(ref, request)  # type: ignore[arg-type]
            if refusal is not None:
                return position, refusal
        return None

    def plain_encoder(self, ref: ModelRef) -> Callable[[Sequence[PlainSpec]], list[bytes]]:
        """A function encoding a chunk of plain requests (`values/requests.py` `PlainSpec`: no messages, tools
        or output schema) of `ref` to their items, byte for byte what `encode` gives them; built once per job.
        Adapters override it with one body literal per request where that is faster."""
        encode = self.encode
        return lambda requests: [encode(ref, request) for request in requests]  # type: ignore[arg-type]

    # --- calls -----------------------------------------------------------------------------------
    @abstractmethod
    async def create(self, ref: ModelRef, items: Iterable[bytes], *, metadata: Mapping[str, str]) -> str:
        """Submit one provider batch of encoded items; return its id."""

    @abstractmethod
    async def status(self, batch_id: str) -> BatchStatus:
        """Poll one batch."""

    @abstractmethod
    def results(self, ref: ModelRef, batch_id: str) -> AsyncIterator[ItemResult]:
        """Stream the normalized results of an ended batch."""

    @abstractmethod
    def read_result_line(self, ref: ModelRef, batch_id: str, line: str, state: str) -> ItemResult | None:
        """One result line or entry (JSON text) as delivered; may raise on unreadable input. `state` is
        the batch's normalized end state. None: the line names no request."""

    def parse_result_line(self, ref: ModelRef, batch_id: str, line: str, state: str = "completed"
                          ) -> ItemResult | None:
        """`read_result_line` that never raises: an unreadable line becomes `errored` (parse_error)
        when its id can be found, else None (the collector then reports the request as missing)."""
        try:
            item = self.read_result_line(ref, batch_id, line, state)
        except PARSE_ERRORS as exc:
            item = salvage_line(line, batch_id, f"{type(exc).__name__}: {exc}", id_key=self.result_id_key)
            if item is None:
                self.count_unreadable(batch_id)
            return item
        if item is not None and not CUSTOM_ID_PATTERN.match(item.custom_id):
            # We only ever submit ids of this form: anything else cannot be one of ours.
            log.warning("Skipping a result line of batch %s with a foreign id %r", batch_id, item.custom_id[:80])
            self.count_unreadable(batch_id)
            return None
        return item

    def count_unreadable(self, batch_id: str) -> None:
        """Count a delivered result line that names no request of ours (the collector's length check
        tells such lines from a stream that ended short)."""
        counts = self.__dict__.setdefault("unreadable_lines", {})
        counts[batch_id] = counts.get(batch_id, 0) + 1

    def parse_result_text(self, ref: ModelRef, batch_id: str, text: str) -> Iterator[ItemResult]:
        """`parse_result_line` over every non-blank line of `text`, keeping the lines that name a request."""
        for line in text.split("\n"):
            if line.strip():
                item = self.parse_result_line(ref, batch_id, line)
                if item is not None:
                    yield item

    async def result_batches(self, ref: ModelRef, batch_id: str, *, rows: int = 10_000
                             ) -> AsyncIterator[pa.RecordBatch]:
        """The results as Arrow record batches of `ITEM_SCHEMA`; adapters may override with a vectorized parser."""
        chunk: list[ItemResult] = []
        async for item in self.results(ref, batch_id):
            chunk.append(item)
            if len(chunk) >= rows:
                yield items_to_batch(chunk)
                chunk = []
        if chunk:
            yield items_to_batch(chunk)

    @abstractmethod
    async def cancel(self, batch_id: str) -> BatchStatus:
        """Ask the provider to stop a batch."""

    @abstractmethod
    def list_batches(self, *, limit: int = 100) -> AsyncIterator[BatchStatus]:
        """Recent batches, newest first, following the provider's pagination."""

    async def find_batch(self, metadata: Mapping[str, str], *, limit: int = 500) -> str | None:
        """Id of a recent batch carrying `metadata`, where the provider stores metadata; else None."""
        return None

    # --- resumable submit (engine/client.py drives these; `progress` lives in the ledger) -------------
    async def create_tracked(self, ref: ModelRef, items: Iterable[bytes], *, metadata: Mapping[str, str],
                             progress: CallProgress) -> str:
        """`create`, recording what each call of a multi-call submit produced in `progress` as it returns,
        and resuming from what an earlier (killed or failed) try recorded there. Single-call adapters
        need not override it."""
        return await self.create(ref, items, metadata=metadata)

    async def find_created(self, ref: ModelRef, items: Sized, *, metadata: Mapping[str, str],
                           progress: CallProgress, since: float, claimed: Collection[str] = ()) -> str | None:
        """The batch an earlier create of this shard may have made (its answer lost, or the process killed
        before the ledger write), found at the provider; None if there is none. `since` is when that
        create was about to be sent (Unix seconds); `claimed` are ids this job already uses. Default: the
        identity tags in provider-side metadata (only when the job has an identity)."""
        if "batchwork_id" not in metadata:
            return None
        found = await self.find_batch(metadata)
        return found if found not in claimed else None

    def can_resolve(self, metadata: Mapping[str, str]) -> bool:
        """Whether `find_created` can tell an ambiguous create of this shard apart (then a failed create
        is looked up and created again in the same try); otherwise the error surfaces to the ledger."""
        return "batchwork_id" in metadata

    async def complete(self, ref: ModelRef, batch_id: str, items: Iterable[bytes], *, progress: CallProgress) -> None:
        """Make an adopted batch hold every request of its shard exactly once (for providers whose
        submit fills a batch in several calls); a no-op where one call carries the whole shard."""
        return None

    async def release(self, resources: Sequence[str]) -> None:
        """Free the provider-side resources a shard's submit recorded under `resources` in its call progress
        (e.g. Gemini's cachedContents), once the job is collected; a no-op where a submit makes none."""
        return None

    async def aclose(self) -> None:
        await self.http.aclose()


_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)


def dumps(value: Any) -> bytes:
    """Compact JSON bytes (orjson: several times faster than the standard encoder on request bodies)."""
    try:
        return orjson.dumps(value)
    except TypeError:
        # What orjson refuses (integers beyond 64 bits, lone surrogates, …): the standard encoder decides.
        return _ENCODER.encode(value).encode()


def merge_options(body: dict[str, Any], request: BatchRequest) -> dict[str, Any]:
    """Apply `provider_options`, the escape hatch merged over the built body."""
    if request.provider_options:
        body.update(request.provider_options)
    return body


def unsupported(field: str, provider: str, endpoint: str, fix: str = "remove it") -> Refusal:
    return (field, f"not supported by {provider}.{endpoint} batches", fix)


def first_unsupported(
    request: BatchRequest, fields: Iterable[str], provider: str, endpoint: str
) -> Refusal | None:
    for name in fields:
        if getattr(request, name) is not None:
            return unsupported(name, provider, endpoint)
    return None


def cache_token_columns(responses: pa.Array, counts: Callable[[Any], tuple[int, int] | None]
                        ) -> tuple[pa.Array, pa.Array, pa.Array]:
    """`cache_tokens` for a provider that reports (read, written) per line: `counts` takes the parsed line
    and returns them (None: the line has no usage, e.g. an error), the writes go to the 5m column."""
    read: list[int | None] = []
    written: list[int | None] = []
    for line in responses.to_pylist():
        try:
            found = counts(json.loads(line)) if line else None
        except ValueError:
            found = None
        read.append(None if found is None else found[0])
        written.append(None if found is None else found[1])
    return pa.array(read, pa.int64()), pa.array(written, pa.int64()), pa.array(
        [None if w is None else 0 for w in written], pa.int64())


def int_or_none(value: object) -> int | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        return int(value)  # type: ignore[call-overload]
    except (TypeError, ValueError):
        return None


_DATE_ONLY = re.compile(r"^\d{4}-\d{2}-\d{2}\Z")
_LONG_FRACTION = re.compile(r"(\.\d{6})\d+")  # datetime reads at most microseconds


def parse_time(value: object, *, end_of_day: bool = False) -> float | None:
    """Unix seconds from RFC 3339, a date (`2025-11-12`), Unix seconds or a protobuf JSON Timestamp.

    `end_of_day` reads a date-only value as the end of that UTC day, so an expiry given as a bare date
    is never taken as passed too early."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, Mapping):
        seconds = int_or_none(value.get("seconds"))
        return None if seconds is None else seconds + (int_or_none(value.get("nanos")) or 0) / 1e9
    if not isinstance(value, str) or not value.strip():
        return None
    text = value.strip()
    with contextlib.suppress(ValueError):
        return float(text)
    if _DATE_ONLY.match(text):
        day = datetime.fromisoformat(text).replace(tzinfo=UTC)
        return (day + timedelta(days=1) if end_of_day else day).timestamp()
    try:
        parsed = datetime.fromisoformat(_LONG_FRACTION.sub(r"\1", text.replace("z", "Z")))
    except ValueError:
        return None
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).timestamp()
