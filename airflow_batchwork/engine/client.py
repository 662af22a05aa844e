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

import fsspec
import httpx

from airflow_batchwork.adapters import adapter_class
from airflow_batchwork.adapters.base import ProviderAdapter
from airflow_batchwork.adapters.http import RetryPolicy, is_ambiguous
from airflow_batchwork.engine.cache import ResponseCache
from airflow_batchwork.engine.dedup import (
    KEY_COLUMN,
    ReuseCollector,
    ReuseEnricher,
    ReusePlanner,
    format_usd,
    reuse_summary,
)
from airflow_batchwork.engine.enrichment import add_cost, standard_enrichers
from airflow_batchwork.engine.incremental import (
    FingerprintEnricher,
    KeyedDataset,
    change_counts,
    read_ids,
    unchanged_ids,
)
from airflow_batchwork.engine.ledger import CallProgress, SubmitLedger
from airflow_batchwork.engine.parquet import RowEnricher, check_output_url
from airflow_batchwork.engine.polling import next_step, sleep_for
from airflow_batchwork.engine.prompt_cache import PromptCacheEnricher
from airflow_batchwork.engine.results import JobResultWriter, PassthroughEnricher
from airflow_batchwork.engine.submission import PreparedJob, Shard, prepare_job
from airflow_batchwork.values.credentials import Credentials, credentials_from_env
from airflow_batchwork.values.errors import BatchTimeoutError, BatchworkError, ConfigurationError, ProviderAPIError
from airflow_batchwork.values.handle import JobHandle, ShardHandle
from airflow_batchwork.values.pricing import (
    CostEnricher,
    PricesLike,
    check_max_cost,
    load_prices,
    warn_if_unknown_model,
)
from airflow_batchwork.values.refs import ModelRef, parse_model
from airflow_batchwork.values.status import ItemResult, JobStatus
from airflow_batchwork.values.structured import with_output_schema

log = logging.getLogger(__name__)

ProgressCallback = Callable[[JobStatus], Awaitable[None] | None]
JobLike = JobHandle | Mapping[str, Any] | str


class BatchClient:
    """Submit and follow batch jobs on any supported provider; credentials per provider."""

    def __init__(
        self,
        credentials: Mapping[str, Credentials] | None = None,
        *,
        retry: RetryPolicy | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        state_root: str | None = None,
    ) -> None:
        """`state_root`: the state store (`state_path`) this client's jobs were submitted with; a handle given
        as a dict or JSON text (e.g. from XCom) must then keep its state files (`ids_url`) under it, else it
        is refused (`ConfigurationError`) before any API call or file read."""
        self._credentials = dict(credentials or {})
        self._state_root = state_root
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

    def _job(self, job: JobLike) -> JobHandle:
        """A handle validated as untrusted input; one from outside (not a `JobHandle`) also against
        `state_root`."""
        return JobHandle.coerce(job, state_root=None if isinstance(job, JobHandle) else self._state_root)

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
    ) -> PreparedJob:
        """Validate, encode and shard a job without any API call (close the result when done)."""
        return prepare_job(model, requests, defaults=defaults, limits=limits)

    async def submit(
        self,
        model: str | ModelRef,
        requests: Iterable[Mapping[str, Any]],
        *,
        defaults: Mapping[str, Any] | None = None,
        metadata: Mapping[str, str] | None = None,
        conn_id: str | None = None,
        limits: Mapping[str, int] | None = None,
        ledger: SubmitLedger | None = None,
        identity: str | None = None,
        on_changed_input: str = "resubmit",
        on_orphaned_intent: str = "resubmit",
        output_schema: Any = None,
        max_cost_usd: float | None = None,
        prices: PricesLike | None = None,
        dedup: bool = False,
        cache: str | ResponseCache | None = None,
        cache_mode: str = "read_write",
        cache_ttl: float | None = None,
        cache_storage_options: Mapping[str, Any] | None = None,
        cache_prefix: bool | str | None = None,
        prime_cache: bool = True,
        prime_timeout: float = 3600.0,
        incremental: str | None = None,
        incremental_storage_options: Mapping[str, Any] | None = None,
    ) -> JobHandle:
        """Validate, shard and submit a job.

        `cache_prefix=True` (Anthropic) marks every request's system prompt with the provider's prompt-cache
        control; when the first request's prefix is long enough to be cached, it is sent alone first (the
        priming batch) and the other batches are created once it ended (at most `prime_timeout` seconds
        later), so that they read the cache instead of each writing it.

        `incremental` (the folder of a keyed dataset that `write_parquet(..., merge=True)` maintains) sends only
        the requests whose custom_id is new, whose input fingerprint changed, or whose row had not succeeded;
        see engine/incremental.py.

        `dedup=True` sends requests with the same provider-facing body once (every custom_id still gets its
        row, `dedup_of` naming the one whose answer it shares); `cache` (a folder URL on any fsspec store, or a
        `ResponseCache`) skips requests whose answer the cache holds (`cache_mode`: `read_write`, `read_only`,
        `refresh`; `cache_ttl` in seconds). Both need a ledger that keeps files (see docs/pay-once.md). A job
        whose every answer is reused creates no batch at all.

        `output_schema` (a JSON Schema dict or pydantic model class) asks every request for structured output
        (a request's own `output_schema` wins). `max_cost_usd` refuses, before any API call, a job whose
        estimated cost (see values/pricing.py; `prices` overrides the packaged price table) is higher.

        With a `ledger` (and an `identity` that is stable across retries) the submission is idempotent:
        an intent is saved before each create call and the batch id right after, the identity is written
        into provider-side metadata where the API has it, and a repeated call re-attaches to what was
        already submitted. A changed input cancels the stale batches and resubmits (`on_changed_input=
        "fail"` refuses instead). Without a ledger, a failure part-way cancels the shards already sent."""
        if on_changed_input not in ("resubmit", "fail") or on_orphaned_intent not in ("resubmit", "fail"):
            raise ConfigurationError("on_changed_input/on_orphaned_intent", "must be 'resubmit' or 'fail'",
                                     "pass one of the two values")
        defaults = with_output_schema(defaults, output_schema)
        if cache_prefix is not None:
            defaults = {**dict(defaults or {}), "cache_prefix": cache_prefix}
        response_cache = ResponseCache.coerce(cache, mode=cache_mode, ttl=cache_ttl,
                                              storage_options=cache_storage_options)
        if not isinstance(dedup, bool):
            raise ConfigurationError("dedup", f"{dedup!r:.60} is not True or False", "pass dedup=True or dedup=False")
        previous = None
        if incremental is not None:
            previous = KeyedDataset(incremental, incremental_storage_options).previous_rows()
        planner = ReusePlanner(dedup=dedup, cache=response_cache, previous=previous) \
            if dedup or response_cache or incremental is not None else None
        if planner is not None and not (ledger and ledger.ids_url):
            raise ConfigurationError(
                "incremental" if incremental is not None else "cache" if response_cache else "dedup",
                "reusing answers needs a place to keep, until collect, which request shares which answer",
                "set state_path (or [batchwork] state_path)")
        ref = parse_model(model)
        table = load_prices(prices)
        warn_if_unknown_model(ref, table)
        with prepare_job(ref, requests, defaults=defaults, limits=limits, context_window=table.context_window(ref),
                         reuse=planner, prime=prime_cache) as job:
            if planner is not None:
                log.info("%s", planner.summary(job.request_count))
            if job.recorder and job.recorder.schemas.needs_ids and not (ledger and ledger.ids_url):
                raise ConfigurationError(
                    "output_schema", "requests use different output schemas, so the collector must be told which "
                    "request used which; that needs a place to keep it until collect",
                    "use one job-level output_schema, or set state_path (or [batchwork] state_path)",
                )
            check_max_cost(job.ref, job.recorder, max_cost_usd, prices)
            if job.passthrough and not (ledger and ledger.ids_url):
                raise ConfigurationError(
                    "passthrough_columns", "carrying input columns through needs a place to keep them until collect",
                    "set state_path (a folder on any fsspec store) or the Airflow config [batchwork] state_path",
                )
            adapter = self.adapter(job.ref.provider)
            state = ledger.read() if ledger else None
            if state and state.get("fingerprint") != job.fingerprint:
                stale = [s["id"] for s in state.get("shards", []) if s.get("id")]
                if on_changed_input == "fail":
                    raise ConfigurationError(
                        "requests", f"the input changed since batches {stale} were submitted for this task",
                        "restore the original input, or use on_changed_input='resubmit' to cancel and resubmit",
                    )
                log.warning("Input changed since batches %s were submitted: cancelling them and resubmitting",
                            stale)
                for batch_id in stale:
                    await self._cancel_quietly(adapter, batch_id)
                state = None
            if state and state.get("handle"):
                handle = JobHandle.coerce(state["handle"])
                log.info("Re-attaching to %s batches %s submitted by an earlier try", handle.provider,
                         handle.batch_ids)
                return handle
            return await self._submit_shards(job, adapter, state, ledger, identity, metadata, conn_id,
                                             on_orphaned_intent, prime_timeout=prime_timeout)

    async def submit_prepared(
        self, job: PreparedJob, *, ledger: SubmitLedger, identity: str, metadata: Mapping[str, str] | None = None,
        conn_id: str | None = None,
    ) -> JobHandle:
        """Submit an already prepared job (e.g. a resubmission round built from stored items), idempotently:
        the `ledger` re-attaches a repeated call with the same input to what was already submitted."""
        adapter = self.adapter(job.ref.provider)
        state = ledger.read()
        if state and state.get("fingerprint") != job.fingerprint:
            state = None
        if state and state.get("handle"):
            return JobHandle.coerce(state["handle"])
        return await self._submit_shards(job, adapter, state, ledger, identity, metadata, conn_id, "resubmit")

    async def _submit_shards(
        self, job: PreparedJob, adapter: ProviderAdapter, state: dict[str, Any] | None,
        ledger: SubmitLedger | None, identity: str | None, metadata: Mapping[str, str] | None,
        conn_id: str | None, on_orphaned_intent: str, *, prime_timeout: float = 3600.0,
    ) -> JobHandle:
        state = state or {"identity": identity, "fingerprint": job.fingerprint, "model": str(job.ref), "shards": []}
        shards: list[dict[str, Any]] = state["shards"]
        ids_url = None
        if ledger is not None and ledger.ids_url:
            ids_url = ledger.ids_url
            fs, path = fsspec.core.url_to_fs(ids_url, **getattr(ledger, "storage_options", {}))
            if "/" in path:
                fs.makedirs(path.rpartition("/")[0], exist_ok=True)
            fs.put_file(str(job.ids_path), path)
        sent: list[str] = []
        try:
            for index, shard in enumerate(job.shards):
                tags = dict(metadata or {})
                shard_tag = f"{index + 1}/{len(job.shards)}"
                if identity:
                    tags.update(batchwork_id=identity, batchwork_fp=job.fingerprint[:16], batchwork_shard=shard_tag)
                entry = shards[index] if index < len(shards) else None
                if entry and entry.get("id"):
                    continue
                if index == 1 and job.priming:
                    await self._await_priming(adapter, shards[0]["id"], prime_timeout)
                claimed = [s["id"] for s in shards if s.get("id")]
                if entry:
                    # An earlier try was killed (or failed) after its intent: what does the provider hold?
                    progress = CallProgress(entry.setdefault("calls", {}), lambda: self._save(ledger, state))
                    found = await adapter.find_created(job.ref, shard, metadata=tags, progress=progress,
                                                       since=float(entry.get("intent_at") or 0), claimed=claimed)
                    if found:
                        log.info("Found batch %s created by an earlier try whose response was lost", found)
                        await adapter.complete(job.ref, found, shard, progress=progress)
                        entry.update(status="submitted", id=found)
                        self._save(ledger, state)
                        continue
                    if on_orphaned_intent == "fail":
                        raise BatchworkError(
                            f"an earlier try may have created shard {shard_tag} on {job.ref.provider}, but it "
                            "cannot be found; check the provider console, then clear the task state to resubmit"
                        )
                    log.warning("Shard %s: an earlier try's create call may have succeeded but no batch matches "
                                "it at the provider; submitting again", shard_tag)
                calls = dict(entry.get("calls") or {}) if entry else {}
                entry = {"index": index, "status": "intent", "request_count": len(shard), "intent_at": time.time(),
                         "calls": calls}
                if index < len(shards):
                    shards[index] = entry
                else:
                    shards.append(entry)
                self._save(ledger, state)
                batch_id = await self._create_resolving(adapter, job, shard, tags, entry, claimed,
                                                        lambda: self._save(ledger, state))
                entry.update(status="submitted", id=batch_id)
                self._save(ledger, state)
                sent.append(batch_id)
                log.info("Submitted %s batch %s (%d requests, shard %s)", job.ref.provider, batch_id, len(shard),
                         shard_tag)
        except BaseException:
            if ledger is None:
                for batch_id in sent:
                    await self._cancel_quietly(adapter, batch_id)
            raise
        handle = JobHandle(
            provider=job.ref.provider, model=str(job.ref),
            batches=[ShardHandle(id=s["id"], request_count=s["request_count"], **_resources(s)) for s in shards],
            request_count=job.request_count, conn_id=conn_id, ids_url=ids_url, identity=identity,
            passthrough=job.passthrough or None,
            structured=job.recorder.schemas.handle_value() if job.recorder else None,
        )
        if job.prompt_cache:  # the collector adds the prompt-cache token columns (engine/prompt_cache.py)
            handle = JobHandle.model_validate({**handle.to_dict(), "prompt_cache": True})
        state["handle"] = handle.to_dict()
        self._save(ledger, state)
        return handle

    async def _create_resolving(
        self, adapter: ProviderAdapter, job: PreparedJob, shard: Shard, tags: Mapping[str, str],
        entry: dict[str, Any], claimed: list[str], save: Callable[[], None],
    ) -> str:
        """Create one shard's batch. An ambiguous failure (the provider may have acted: a dropped
        connection after sending, a timeout, a 5xx) is resolved by a provider-side lookup before any
        new create, so a storm never pays twice; retried on the adapter's time-sized retry budget."""
        progress = CallProgress(entry["calls"], save)
        policy = adapter.http.retry
        started = time.monotonic()
        attempt = 0
        while True:
            attempt += 1
            try:
                return await adapter.create_tracked(job.ref, shard, metadata=tags, progress=progress)
            except ProviderAPIError as exc:
                if not (is_ambiguous(exc) or exc.status_code == 429):
                    raise
                found = await adapter.find_created(job.ref, shard, metadata=tags, progress=progress,
                                                   since=float(entry["intent_at"]), claimed=claimed)
                if found:
                    log.info("The create call of %s failed ambiguously (%s) but batch %s exists: adopting it",
                             adapter.provider, exc, found)
                    await adapter.complete(job.ref, found, shard, progress=progress)
                    return found
                if not (is_ambiguous(exc) and adapter.can_resolve(tags)) or not policy.allows(attempt, started):
                    raise
                delay = policy.delay(attempt, exc.retry_after)
                log.warning("%s create failed (%s) and no batch was made; creating again in %.1fs",
                            adapter.provider, exc, delay)
                await asyncio.sleep(delay)

    @staticmethod
    async def _await_priming(adapter: ProviderAdapter, batch_id: str, timeout: float) -> None:
        """Wait for the priming batch to end, so that the prompt-cache entry it wrote is there for the rest."""
        log.info("Priming the %s prompt cache with batch %s (1 request); the other batches follow when it ends",
                 adapter.provider, batch_id)
        deadline = time.monotonic() + timeout
        delay = 0.25
        while True:
            status = await adapter.status(batch_id)
            if status.terminal:
                log.info("Priming batch %s ended (%s)", batch_id, status.state)
                return
            if time.monotonic() >= deadline:
                log.warning("Priming batch %s has not ended after %.0fs: submitting the rest without waiting",
                            batch_id, timeout)
                return
            await asyncio.sleep(min(delay, max(deadline - time.monotonic(), 0)))
            delay = min(delay * 2, 10.0)

    @staticmethod
    def _save(ledger: SubmitLedger | None, state: Mapping[str, Any]) -> None:
        if ledger is not None:
            ledger.write(state)

    @staticmethod
    async def _cancel_quietly(adapter: ProviderAdapter, batch_id: str) -> None:
        try:
            await adapter.cancel(batch_id)
            log.warning("Cancelled %s batch %s", adapter.provider, batch_id)
        except Exception as exc:
            log.error("Could not cancel %s batch %s (%s); cancel it by hand", adapter.provider, batch_id, exc)

    # --- follow ----------------------------------------------------------------------------------
    async def status(self, job: JobLike) -> JobStatus:
        handle = self._job(job)
        adapter = self.adapter(handle.provider)
        if len(handle.batches) == 1:  # the usual case: no task and gather future per poll
            return JobStatus.combine([await adapter.status(handle.batches[0].id)])
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
        handle = self._job(job)
        adapter = self.adapter(handle.provider)
        statuses = []
        for batch in handle.batches:
            current = await adapter.status(batch.id)
            statuses.append(current if current.terminal else await adapter.cancel(batch.id))
        return JobStatus.combine(statuses)

    async def results(self, job: JobLike) -> AsyncIterator[ItemResult]:
        """Every result of every batch, once per custom_id, in provider order."""
        handle = self._job(job)
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
        self, job: JobLike, url: str, *, storage_options: Mapping[str, Any] | None = None,
        prices: PricesLike | None = None,
        cache: str | ResponseCache | None = None,
        cache_mode: str = "read_write",
        cache_storage_options: Mapping[str, Any] | None = None,
        merge: bool = False,
    ) -> dict[str, Any]:
        """Stream all results into Parquet at `url` (a file, or a folder ending in `/` that gets one
        part file per provider batch); return a manifest `{path, files, rows, counts, provider, model,
        batch_ids, duplicates_dropped, unaccounted}` (plus `reuse` for a job submitted with dedup/cache).
        With `cache`, the successful answers that came from the provider are stored in it, atomically.
        With `merge=True`, `url` is the folder of a keyed dataset: this job's rows replace those of the same
        custom_id and the other rows stay (engine/incremental.py); the manifest's `incremental` entry is the run
        manifest (new, changed, unchanged, rows)."""
        handle = self._job(job)
        check_output_url(url)
        dataset = KeyedDataset(url, storage_options) if merge else None
        response_cache = ResponseCache.coerce(cache, mode=cache_mode, storage_options=cache_storage_options)
        enrichers: list[RowEnricher] = []
        if handle.passthrough and handle.ids_url:
            enrichers.append(PassthroughEnricher(handle.ids_url, handle.passthrough, storage_options))
        enrichers += standard_enrichers(handle, prices=prices, storage_options=storage_options)
        position = next(i for i, e in enumerate(enrichers) if isinstance(e, CostEnricher | PromptCacheEnricher))
        reuse = ReuseCollector.load(handle.ids_url, response_cache, storage_options)
        reuse_enricher = None
        if reuse is not None:
            reuse_enricher = ReuseEnricher(enrichers[position])
            enrichers[position] = reuse_enricher
        target = url
        ids = None
        if dataset is not None:
            ids = read_ids(handle.ids_url, storage_options) if handle.ids_url else None
            if ids is None or KEY_COLUMN not in ids.column_names:
                raise ConfigurationError("merge", "the job was not submitted with incremental= (its rows have no "
                                         "input fingerprint to keep)", "submit with incremental=<this output_path>")
            enrichers.append(FingerprintEnricher(ids))
            target = dataset.staging_url()
        writer = JobResultWriter(handle, target, storage_options=storage_options, enrichers=enrichers, reuse=reuse)
        manifest = add_cost(await writer.collect(self.adapter(handle.provider)), storage_options)
        if reuse is not None and reuse_enricher is not None:
            manifest["reuse"] = reuse_summary(manifest, reuse_enricher, reuse)
        if dataset is not None and ids is not None:
            manifest = self._merge(dataset, url, target, manifest, handle, ids, storage_options)
        await self.release_resources(handle)
        return manifest

    async def release_resources(self, handle: JobHandle) -> None:
        """Free what the submit made besides the batches (`resources` of a shard, e.g. a Gemini cache)."""
        resources = list(dict.fromkeys(str(r) for b in handle.batches
                                       for r in (b.model_extra or {}).get("resources") or []))
        if resources:
            await self.adapter(handle.provider).release(resources)

    @staticmethod
    def _merge(dataset: KeyedDataset, url: str, staged: str, manifest: dict[str, Any], handle: JobHandle,
               ids: Any, storage_options: Mapping[str, Any] | None) -> dict[str, Any]:
        reuse = manifest.get("reuse") or {}
        changes = change_counts(ids)
        unchanged_cost = dataset.cost_of(unchanged_ids(ids))
        saved = None if unchanged_cost is None or reuse.get("saved_usd", 0.0) is None \
            else unchanged_cost + float(reuse.get("saved_usd") or 0.0)
        run = {**changes, "submitted": sum(b.request_count for b in handle.batches), "written": manifest["rows"],
               "cached": reuse.get("cached", 0), "deduplicated": reuse.get("deduplicated", 0),
               "counts": manifest["counts"], "cost_usd": manifest.get("cost_usd"),
               "unchanged_cost_usd": unchanged_cost, "saved_usd": saved,
               "batch_ids": handle.batch_ids, "identity": handle.identity}
        merged = dataset.merge(staged, run, storage_options)
        log.info("Merged %d rows into %s (%d new, %d changed, %d unchanged, not sent again: %s saved); the dataset "
                 "has %d rows", manifest["rows"], url, changes["new"], changes["changed"], changes["unchanged"],
                 "?" if unchanged_cost is None else format_usd(unchanged_cost), merged["rows"])
        files = [f"{url}{name}" for name in (dataset.state() or {}).get("files", [])]
        return {**manifest, "path": url, "files": files, "rows": merged["rows"], "incremental": merged}


def _resources(entry: Mapping[str, Any]) -> dict[str, Any]:
    """A shard handle's `resources`: what its submit made at the provider besides the batch (recorded by the
    adapter in the shard's call progress), for the collect to free."""
    resources = (entry.get("calls") or {}).get("resources")
    return {"resources": list(resources)} if resources else {}
