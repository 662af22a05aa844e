"""The script-facing API: submit → status → wait → results → cancel, and re-attach from a handle.

    async with BatchClient() as client:
        job = await client.submit("openai/gpt-4o-mini", [{"custom_id": "a", "prompt": "Hi"}])
        await client.wait(job, poll_interval=30)
        manifest = await client.write_parquet(job, "s3://bucket/results/")

A handle (`job.to_dict()`) is all that is needed to come back later: `JobHandle.coerce(saved)`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from typing import Any

import httpx

from airflow_batchwork.adapters import adapter_class
from airflow_batchwork.adapters.base import ProviderAdapter, ProviderLimits
from airflow_batchwork.core.credentials import Credentials, credentials_from_env
from airflow_batchwork.core.errors import BatchTimeoutError, RequestValidationError
from airflow_batchwork.core.handle import JobHandle, ShardHandle
from airflow_batchwork.core.http import RetryPolicy
from airflow_batchwork.core.parquet import ParquetResultWriter, is_directory_url, part_name
from airflow_batchwork.core.polling import next_step, sleep_for
from airflow_batchwork.core.refs import ModelRef, parse_model
from airflow_batchwork.core.requests import BatchRequest, prepare_requests
from airflow_batchwork.core.status import ItemResult, JobStatus

log = logging.getLogger(__name__)

ProgressCallback = Callable[[JobStatus], Awaitable[None] | None]
JobLike = JobHandle | Mapping[str, Any] | str


def plan_shards(sizes: Iterable[int], limits: ProviderLimits) -> list[int]:
    """Shard lengths for items of the given encoded sizes (one separator byte each)."""
    shards: list[int] = []
    count = size = 0
    for item in sizes:
        if count and (count + 1 > limits.max_requests or size + item + 1 > limits.max_bytes):
            shards.append(count)
            count = size = 0
        count += 1
        size += item + 1
    if count:
        shards.append(count)
    return shards


class BatchClient:
    """Submit and follow batch jobs on any supported provider; credentials per provider."""

    def __init__(
        self,
        credentials: Mapping[str, Credentials] | None = None,
        *,
        retry: RetryPolicy | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._credentials = dict(credentials or {})
        self._retry = retry
        self._transport = transport
        self._adapters: dict[str, ProviderAdapter] = {}

    async def __aenter__(self) -> BatchClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        for adapter in self._adapters.values():
            await adapter.aclose()
        self._adapters.clear()

    def adapter(self, provider: str) -> ProviderAdapter:
        """The adapter of `provider`, built once with its credentials (given, else from env vars)."""
        if provider not in self._adapters:
            cls = adapter_class(provider)
            creds = self._credentials.get(provider) or credentials_from_env(provider, cls.key_env_vars)
            self._adapters[provider] = cls(creds, retry=self._retry, transport=self._transport)
        return self._adapters[provider]

    # --- submit ----------------------------------------------------------------------------------
    def prepare(
        self,
        model: str | ModelRef,
        requests: Iterable[Mapping[str, Any]],
        *,
        defaults: Mapping[str, Any] | None = None,
        limits: Mapping[str, int] | None = None,
    ) -> tuple[ModelRef, list[BatchRequest], list[list[bytes]]]:
        """Validate and encode a job, and split it into provider-sized shards. Makes no API call."""
        ref = parse_model(model)
        prepared = prepare_requests(requests, ref=ref, defaults=defaults)
        cls = adapter_class(ref.provider)
        effective = cls.limits.with_overrides(limits)
        checker = cls.offline()
        encoded: list[bytes] = []
        for index, request in enumerate(prepared):
            refusal = checker.check_request(ref, request)
            if refusal:
                field, problem, fix = refusal
                raise RequestValidationError(f"requests[{index}].{field}", problem, fix)
            item = checker.encode(ref, request)
            if len(item) > effective.max_request_bytes:
                raise RequestValidationError(
                    f"requests[{index}]",
                    f"request {request.custom_id!r} is {len(item):,} bytes; {ref.provider} accepts at most "
                    f"{effective.max_request_bytes:,} bytes per request",
                    "shorten the prompt or split it into several requests",
                )
            encoded.append(item)
        shards: list[list[bytes]] = []
        start = 0
        for length in plan_shards((len(item) for item in encoded), effective):
            shards.append(encoded[start:start + length])
            start += length
        return ref, prepared, shards

    async def submit(
        self,
        model: str | ModelRef,
        requests: Iterable[Mapping[str, Any]],
        *,
        defaults: Mapping[str, Any] | None = None,
        metadata: Mapping[str, str] | None = None,
        conn_id: str | None = None,
        limits: Mapping[str, int] | None = None,
    ) -> JobHandle:
        """Validate, shard and submit a job. If a later shard fails, earlier shards are cancelled."""
        ref, _, shards = self.prepare(model, requests, defaults=defaults, limits=limits)
        adapter = self.adapter(ref.provider)
        submitted: list[ShardHandle] = []
        try:
            for index, items in enumerate(shards):
                tags = dict(metadata or {})
                if len(shards) > 1:
                    tags["batchwork_shard"] = f"{index + 1}/{len(shards)}"
                batch_id = await adapter.create(ref, items, metadata=tags)
                submitted.append(ShardHandle(id=batch_id, request_count=len(items)))
                log.info("Submitted %s batch %s (%d requests, shard %d/%d)",
                         ref.provider, batch_id, len(items), index + 1, len(shards))
        except BaseException:
            for shard in submitted:
                try:
                    await adapter.cancel(shard.id)
                    log.warning("Cancelled shard %s after a later shard failed to submit", shard.id)
                except Exception:
                    log.exception("Could not cancel shard %s; cancel it by hand", shard.id)
            raise
        return JobHandle(
            provider=ref.provider, model=str(ref), batches=submitted,
            request_count=sum(s.request_count for s in submitted), conn_id=conn_id,
        )

    # --- follow ----------------------------------------------------------------------------------
    async def status(self, job: JobLike) -> JobStatus:
        handle = JobHandle.coerce(job)
        adapter = self.adapter(handle.provider)
        statuses = await asyncio.gather(*(adapter.status(b.id) for b in handle.batches))
        return JobStatus.combine(list(statuses))

    async def wait(
        self,
        job: JobLike,
        *,
        poll_interval: float = 30.0,
        timeout: float | None = None,
        on_progress: ProgressCallback | None = None,
        cancel_on_timeout: bool = False,
    ) -> JobStatus:
        """Poll until every batch is terminal; `BatchTimeoutError` after `timeout` seconds."""
        deadline = None if timeout is None else time.time() + timeout
        while True:
            status = await self.status(job)
            if on_progress is not None:
                maybe = on_progress(status)
                if asyncio.iscoroutine(maybe):
                    await maybe
            step = next_step(status, now=time.time(), deadline=deadline)
            if step == "done":
                return status
            if step == "timeout":
                if cancel_on_timeout:
                    await self.cancel(job)
                raise BatchTimeoutError(f"job not finished after {timeout}s: {status.progress_line()}")
            await asyncio.sleep(sleep_for(poll_interval, now=time.time(), deadline=deadline))

    async def cancel(self, job: JobLike) -> JobStatus:
        handle = JobHandle.coerce(job)
        adapter = self.adapter(handle.provider)
        statuses = []
        for batch in handle.batches:
            current = await adapter.status(batch.id)
            statuses.append(current if current.terminal else await adapter.cancel(batch.id))
        return JobStatus.combine(statuses)

    async def results(self, job: JobLike) -> AsyncIterator[ItemResult]:
        """Every result of every batch, once per custom_id, in provider order."""
        handle = JobHandle.coerce(job)
        async for _, item in self._results_by_shard(handle):
            yield item

    async def _results_by_shard(self, handle: JobHandle) -> AsyncIterator[tuple[int, ItemResult]]:
        adapter = self.adapter(handle.provider)
        ref = parse_model(handle.model)
        seen: set[str] = set()
        for index, batch in enumerate(handle.batches):
            async for item in adapter.results(ref, batch.id):
                if item.custom_id in seen:
                    log.warning("Dropping a second result for custom_id %r", item.custom_id)
                    continue
                seen.add(item.custom_id)
                yield index, item

    async def write_parquet(
        self, job: JobLike, url: str, *, storage_options: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        """Stream all results into Parquet at `url` (a file, or a folder ending in `/` that gets one
        part file per provider batch); return a manifest `{path, rows, counts, provider, batch_ids}`."""
        handle = JobHandle.coerce(job)
        meta = handle.to_dict()
        writers: list[ParquetResultWriter] = []
        paths: list[str] = []

        def writer_for(index: int) -> ParquetResultWriter:
            while len(writers) <= index:
                target = f"{url}{part_name(len(writers))}" if is_directory_url(url) else url
                writers.append(ParquetResultWriter(
                    target, provider=handle.provider, model=handle.model, metadata=meta,
                    storage_options=storage_options,
                ))
                paths.append(target)
            return writers[index]

        try:
            for index in range(len(handle.batches) if is_directory_url(url) else 1):
                writer_for(index)
            async for index, item in self._results_by_shard(handle):
                writer_for(index if is_directory_url(url) else 0).write(item)
        except BaseException:
            for writer in writers:
                writer.abort()
            raise
        for writer in writers:
            writer.commit()
        counts: dict[str, int] = {}
        for writer in writers:
            for status, n in writer.counts.items():
                counts[status] = counts.get(status, 0) + n
        return {
            "path": url if is_directory_url(url) else paths[0],
            "files": paths,
            "rows": sum(w.rows for w in writers),
            "counts": counts,
            "provider": handle.provider,
            "model": handle.model,
            "batch_ids": handle.batch_ids,
        }
