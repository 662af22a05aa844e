"""Automatic resubmission of failed items: rounds of submit, wait and collect that merge into one dataset.

Attempt 1 is the job as submitted. When it has ended, its results are collected into a staging folder next
to the output (`_batchwork-rounds/<key>/`, skipped by Parquet dataset readers). Items that expired, or errored
with a code (or message) that the provider's adapter lists as retryable, are submitted again as a new provider
batch: attempt 2. They are re-created byte for byte from the encoded requests kept at submit time (column
`_batchwork_item` of the job's submitted-ids file), so a resubmission never depends on the original input still
being readable. Up to `max_item_retries` further attempts follow while retryable items remain.

The final dataset has exactly one row per custom_id: the row of its last attempt (`attempt` column). Rows that a
later attempt replaced go to a history file when `keep_history` is set. Each round is submitted through a ledger
in the staging folder (`round-<k>.json`), keyed by the output URL and the job's batch ids, so a retried task
re-attaches to a round already submitted instead of paying for it again. After the final files are committed
the staged results are deleted; the round ledgers (small) stay, so a re-run does not resubmit.
"""

from __future__ import annotations

import hashlib
import logging
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import fsspec
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from airflow_batchwork.adapters import adapter_class
from airflow_batchwork.adapters.base import ProviderAdapter
from airflow_batchwork.engine.client import BatchClient
from airflow_batchwork.engine.dedup import ReuseCollector
from airflow_batchwork.engine.enrichment import add_cost, standard_enrichers
from airflow_batchwork.engine.ledger import FsspecLedger
from airflow_batchwork.engine.parquet import (
    TMP_PREFIX,
    RowEnricher,
    committed_files,
    is_directory_url,
    part_name,
    publish_folder,
    read_serial,
    remove_stale_temp_files,
    serial_file,
)
from airflow_batchwork.engine.results import JobResultWriter, PassthroughEnricher
from airflow_batchwork.engine.submission import IDS_SCHEMA, PreparedJob, ShardFiles
from airflow_batchwork.values.errors import ConfigurationError
from airflow_batchwork.values.handle import JobHandle
from airflow_batchwork.values.pricing import PricesLike
from airflow_batchwork.values.recorder import ITEM_COLUMN
from airflow_batchwork.values.refs import parse_model
from airflow_batchwork.values.structured import SCHEMA_COLUMN

log = logging.getLogger(__name__)

STAGING_DIR = "_batchwork-rounds"
RETRY_COLUMNS = ["custom_id", "status", "error_code", "error_message"]


def retryable(items: pa.Table | pa.RecordBatch, adapter: type[ProviderAdapter]) -> pa.BooleanArray:
    """Rows worth resubmitting: `expired`, or `errored` with a retryable code or message of that provider."""
    status = items.column("status")
    codes = pa.array(sorted(adapter.retryable_error_codes), pa.string())
    worth = pc.is_in(items.column("error_code"), value_set=codes)
    message = pc.utf8_lower(items.column("error_message"))
    for fragment in adapter.retryable_error_messages:
        worth = pc.or_kleene(worth, pc.match_substring(message, fragment))
    errored = pc.and_kleene(pc.equal(status, "errored"), pc.fill_null(worth, False))
    return pc.fill_null(pc.or_kleene(pc.equal(status, "expired"), errored), False)


def staging_root(url: str, handle: JobHandle) -> str:
    """The job's staging folder for `url` (a sibling of the output, or inside an output folder)."""
    base = url if is_directory_url(url) else url.rpartition("/")[0]
    base = f"{base.rstrip('/')}/" if base else ""
    key = hashlib.sha256(f"{url}\n{','.join(handle.batch_ids)}".encode()).hexdigest()[:16]
    return f"{base}{STAGING_DIR}/{key}/"


def default_history_url(url: str) -> str:
    """`<folder>/_history.parquet` (hidden from dataset readers) or `<file stem>.history.parquet`."""
    if is_directory_url(url):
        return f"{url}_history.parquet"
    return f"{url.removesuffix('.parquet')}.history.parquet"


@dataclass(frozen=True)
class RoundStep:
    """What to do after collecting one attempt: wait for `next_job` (attempt `attempt`), or done (`manifest`)."""

    attempt: int
    next_job: JobHandle | None = None
    manifest: dict[str, Any] | None = None


class ResubmitRounds:
    """Collect a job with automatic resubmission of its retryable failures (see the module docstring)."""

    def __init__(
        self,
        handle: JobHandle,
        url: str,
        *,
        max_item_retries: int,
        keep_history: bool | str = False,
        storage_options: Mapping[str, Any] | None = None,
        prices: PricesLike | None = None,
    ) -> None:
        if isinstance(max_item_retries, bool) or not isinstance(max_item_retries, int) or max_item_retries < 0:
            raise ConfigurationError("max_item_retries", f"{max_item_retries!r} is not a whole number >= 0",
                                     "use e.g. max_item_retries=2")
        if max_item_retries and not handle.ids_url:
            raise ConfigurationError(
                "max_item_retries", "the job kept no copy of its requests to resubmit from",
                "submit it with a state store that keeps files: state_path (or [batchwork] state_path), "
                "or BatchClient.submit(..., ledger=FsspecLedger(...))",
            )
        if max_item_retries and handle.ids_url and ReuseCollector.load(handle.ids_url, None, storage_options):
            # Rows not sent (dedup, cache, incremental) are written by the plain collect only (docs/pay-once.md).
            raise ConfigurationError(
                "max_item_retries", "is not supported yet for a job submitted with dedup=True, cache= or "
                "incremental= (the resubmission rounds do not write the rows that were not sent)",
                "collect it with max_item_retries=0 (failed answers are not cached or kept as unchanged, so the "
                "next run sends them again), or submit without dedup, cache and incremental")
        self.handle = handle
        self.url = url
        self.max_item_retries = max_item_retries
        self.history_url = (keep_history if isinstance(keep_history, str) else default_history_url(url)) \
            if keep_history else None
        self.storage_options = dict(storage_options or {})
        self.prices = prices
        self.stage = staging_root(url, handle)
        self.adapter_class = adapter_class(handle.provider)

    # --- one round -------------------------------------------------------------------------------
    def attempt_url(self, attempt: int) -> str:
        """Where attempt `attempt` is staged (attempt 1 mirrors the output's layout)."""
        if attempt == 1 and is_directory_url(self.url):
            return f"{self.stage}attempt-1/"
        return f"{self.stage}attempt-{attempt}.parquet"

    def ledger(self, attempt: int) -> FsspecLedger:
        return FsspecLedger(self.stage, f"round-{attempt}", storage_options=self.storage_options)

    def attempt_of(self, job: JobHandle) -> int:
        """Which attempt a round's handle belongs to (from the round ledgers; 1 for the job itself)."""
        for attempt in range(2, self.max_item_retries + 2):
            state = self.ledger(attempt).read() or {}
            if [b.get("id") for b in (state.get("handle") or {}).get("batches", [])] == job.batch_ids:
                return attempt
        if job.batch_ids == self.handle.batch_ids:
            return 1
        raise ConfigurationError("job", f"batches {job.batch_ids} are not a resubmission round of this job",
                                 "collect the job the round belongs to")

    async def step(self, client: BatchClient, attempt: int, job: JobHandle) -> RoundStep:
        """Collect attempt `attempt` (its batches have ended); then submit the next round if items are worth
        it and attempts remain, or merge everything into the final dataset."""
        enrichers: list[RowEnricher] = []
        if job.passthrough and job.ids_url:
            enrichers.append(PassthroughEnricher(job.ids_url, job.passthrough, self.storage_options))
        enrichers += standard_enrichers(job, prices=self.prices, storage_options=self.storage_options,
                                        attempt=attempt)
        writer = JobResultWriter(job, self.attempt_url(attempt), storage_options=self.storage_options,
                                 enrichers=enrichers)
        staged = await writer.collect(client.adapter(job.provider))
        await client.release_resources(job)  # e.g. this attempt's Gemini caches; a next round makes its own
        log.info("Attempt %d of %s: %d rows, %s", attempt, self.handle.model, staged["rows"], staged["counts"])
        if attempt <= self.max_item_retries:
            ids = self._retry_ids(staged["files"])
            if len(ids):
                next_job = await self._submit_round(client, attempt + 1, ids)
                return RoundStep(attempt + 1, next_job=next_job)
        return RoundStep(attempt, manifest=self.finalize(attempt))

    def _read(self, url: str, columns: Sequence[str] | None = None) -> pa.Table:
        fs, path = fsspec.core.url_to_fs(url, **self.storage_options)
        with fs.open(path, "rb") as handle:
            return read_serial(handle, columns=list(columns) if columns else None)

    def _retry_ids(self, files: Sequence[str]) -> pa.Array:
        chunks = []
        for url in files:
            table = self._read(url, RETRY_COLUMNS)
            chunks.append(table.filter(retryable(table, self.adapter_class)).column("custom_id"))
        ids = pa.chunked_array([c for chunk in chunks for c in chunk.chunks], pa.string()).combine_chunks()
        if len(ids):
            log.warning("%d items failed in a retryable way (expired, rate limit, server error, ...)", len(ids))
        return ids

    async def _submit_round(self, client: BatchClient, attempt: int, ids: pa.Array) -> JobHandle:
        ref = parse_model(self.handle.model)
        with self._prepare(attempt, ids) as job:
            identity = f"{self.handle.identity or self.stage.rstrip('/').rpartition('/')[2]}-a{attempt}"
            submitted = await client.submit_prepared(
                job, ledger=self.ledger(attempt), identity=identity, conn_id=self.handle.conn_id,
                metadata={"batchwork_attempt": str(attempt)},
            )
        round_job = submitted.model_copy(update={"structured": self.handle.structured,
                                                 "passthrough": self.handle.passthrough})
        log.info("Resubmitted %d items of %s as attempt %d: %s batches %s", len(ids), ref, attempt,
                 ref.provider, ", ".join(round_job.batch_ids))
        return round_job

    def _prepare(self, attempt: int, ids: pa.Array) -> PreparedJob:
        """The round's items, read back from the job's ids file, as a prepared job (shards + ids file)."""
        assert self.handle.ids_url is not None
        ref = parse_model(self.handle.model)
        limits = self.adapter_class.limits
        fs, path = fsspec.core.url_to_fs(self.handle.ids_url, **self.storage_options)
        workdir = tempfile.TemporaryDirectory(prefix="batchwork-round-")
        root = Path(workdir.name)
        digest = hashlib.sha256(f"{ref}\nattempt {attempt}\n".encode())
        spool = ShardFiles(root, max_requests=limits.max_requests, max_bytes=limits.max_bytes)
        writer: pq.ParquetWriter | None = None
        count = 0
        try:
            with fs.open(path, "rb") as handle:
                source = serial_file(handle)
                if ITEM_COLUMN not in source.schema_arrow.names:
                    raise ConfigurationError(
                        "max_item_retries", f"{self.handle.ids_url} holds no copy of the submitted requests "
                        "(the job was submitted by an older version)", "resubmit the failed items by hand",
                    )
                extra = [n for n in (SCHEMA_COLUMN, *(self.handle.passthrough or [])) if n in source.schema_arrow.names]
                for batch in source.iter_batches(columns=["custom_id", ITEM_COLUMN, *extra], use_threads=False):
                    batch = batch.filter(pc.is_in(batch.column("custom_id"), value_set=ids))
                    shard_of: list[int] = []
                    for item in batch.column(ITEM_COLUMN).to_pylist():
                        shard_of.append(spool.add(item))
                        digest.update(item + b"\n")
                    table = pa.Table.from_batches([batch]).append_column(
                        IDS_SCHEMA.field("shard"), pa.array(shard_of, pa.int32()))
                    if writer is None:
                        writer = pq.ParquetWriter(root / "ids.parquet", table.schema)
                    writer.write_table(table)
                    count += batch.num_rows
        except BaseException:
            workdir.cleanup()
            raise
        finally:
            spool.close()
            if writer is not None:
                writer.close()
        return PreparedJob(ref=ref, limits=limits, shards=spool.shards, fingerprint=digest.hexdigest(),
                           ids_path=root / "ids.parquet", request_count=count,
                           passthrough=list(self.handle.passthrough or []), _workdir=workdir,
                           prompt_cache=bool((self.handle.model_extra or {}).get("prompt_cache")))

    # --- the final dataset -----------------------------------------------------------------------
    def _attempt_files(self, attempt: int) -> list[str]:
        """The committed files of a staged attempt (a folder is read only through its `_SUCCESS`)."""
        url = self.attempt_url(attempt)
        if not is_directory_url(url):
            return [url]
        files = committed_files(url, self.storage_options)
        if files is None:
            raise FileNotFoundError(f"staged attempt {url} has no {'_SUCCESS'} marker (it was not committed)")
        return files

    def finalize(self, last: int) -> dict[str, Any]:
        """Merge the staged attempts into the output (one row per custom_id, its last attempt), write the
        history file if asked, delete the staged results; the manifest.

        The output uses the commit protocol of engine/parquet.py: every part is written under a temporary name;
        a folder's `_SUCCESS` is removed first and written last (naming the parts), so a kill at any moment
        leaves either the previous committed dataset's marker absent or the complete new one; the retry
        redoes every step and removes the temporary files of the killed try."""
        later: list[pa.Table] = []
        taken = pa.array([], pa.string())
        history: list[pa.Table] = []
        for attempt in range(last, 1, -1):
            table = self._read(self.attempt_url(attempt))
            seen = pc.is_in(table.column("custom_id"), value_set=taken)
            later.append(table.filter(pc.invert(seen)))
            history.append(table.filter(seen))
            taken = pa.concat_arrays([taken, table.column("custom_id").combine_chunks()])
        targets = [f"{self.url}{part_name(i)}" for i in range(len(self.handle.batches))] \
            if is_directory_url(self.url) else [self.url]
        counts: Counter[str] = Counter()
        rows = 0
        parts: list[_AtomicParquet] = []
        try:
            for source, target in zip(self._attempt_files(1), targets, strict=True):
                written, part_counts, replaced, part = self._merge_part(source, target, later, taken)
                parts.append(part)
                rows += written
                counts.update(part_counts)
                history.extend(replaced)
        except BaseException:
            for part in parts:
                part.abort()
            raise
        manifest: dict[str, Any] = {
            "path": self.url, "files": targets, "rows": rows, "counts": dict(sorted(counts.items())),
            "provider": self.handle.provider, "model": self.handle.model, "batch_ids": self.handle.batch_ids,
            "unaccounted": max(self.handle.request_count - rows, 0),
            "attempts": self._attempt_counts(parts),
            "rounds": self._rounds(last),
            "retried": len(pc.unique(taken)) if len(taken) else 0,
            "history_path": None,
        }
        try:
            if self.history_url is not None:
                manifest["history_path"] = self._write_history(history, self._schema(self._attempt_files(1)[0]))
        except BaseException:
            for part in parts:
                part.abort()
            raise
        if is_directory_url(self.url):
            manifest["success_marker"] = publish_folder(self.url, parts, manifest, self.storage_options)
        else:
            parts[0].commit()
        for attempt in range(1, last + 1):
            staged = self.attempt_url(attempt)
            fs, path = fsspec.core.url_to_fs(staged, **self.storage_options)
            if fs.exists(path):
                fs.rm(path, recursive=True)
        return add_cost(manifest, self.storage_options)

    def _merge_part(self, source: str, target: str, later: Sequence[pa.Table], taken: pa.Array
                    ) -> tuple[int, Counter[str], list[pa.Table], _AtomicParquet]:
        """Write one merged part under a temporary name; the caller commits (moves) it."""
        fs, path = fsspec.core.url_to_fs(source, **self.storage_options)
        counts: Counter[str] = Counter()
        replaced: list[pa.Table] = []
        rows = 0
        with fs.open(path, "rb") as handle:
            parquet = serial_file(handle)
            schema = parquet.schema_arrow
            with _AtomicParquet(target, schema, self.storage_options, deferred=True) as out:
                part_ids: list[pa.Array] = []
                for batch in parquet.iter_batches(use_threads=False):
                    old = pc.is_in(batch.column("custom_id"), value_set=taken)
                    kept = batch.filter(pc.invert(old))
                    replaced.append(pa.Table.from_batches([batch.filter(old)], schema))
                    part_ids.append(batch.column("custom_id"))
                    rows += out.write(pa.Table.from_batches([kept], schema), counts)
                ids = pa.chunked_array(part_ids, pa.string()).combine_chunks()
                for table in later:
                    mine = table.filter(pc.is_in(table.column("custom_id"), value_set=ids))
                    rows += out.write(mine.select(schema.names).cast(schema), counts)
        return rows, counts, replaced, out

    @staticmethod
    def _attempt_counts(parts: Sequence[_AtomicParquet]) -> dict[str, int]:
        """Rows per attempt of the merged parts (read from their temporary files, before the commit)."""
        counts: Counter[str] = Counter()
        for part in parts:
            with part.fs.open(part.tmp, "rb") as handle:
                column = read_serial(handle, columns=["attempt"]).column("attempt")
            for entry in pc.value_counts(column).to_pylist():
                counts[str(entry["values"])] += entry["counts"]
        return dict(sorted(counts.items()))

    def _rounds(self, last: int) -> list[dict[str, Any]]:
        rounds = [{"attempt": 1, "batch_ids": self.handle.batch_ids, "request_count": self.handle.request_count}]
        for attempt in range(2, last + 1):
            state = self.ledger(attempt).read() or {}
            job = state.get("handle") or {}
            rounds.append({"attempt": attempt, "batch_ids": [b["id"] for b in job.get("batches", [])],
                           "request_count": job.get("request_count")})
        return rounds

    def _schema(self, url: str) -> pa.Schema:
        fs, path = fsspec.core.url_to_fs(url, **self.storage_options)
        with fs.open(path, "rb") as handle:
            return pq.read_schema(handle)

    def _write_history(self, pieces: Sequence[pa.Table], schema: pa.Schema) -> str:
        assert self.history_url is not None
        tables = [p.select(schema.names).cast(schema) for p in pieces if p.num_rows]
        with _AtomicParquet(self.history_url, schema, self.storage_options) as out:
            for table in tables:
                out.write(table, Counter())
        return self.history_url


class _AtomicParquet:
    """A Parquet file written under a temporary name in its folder and moved into place on success (with
    `deferred`, only closed on success: the caller then calls `commit`, e.g. through `publish_folder`)."""

    def __init__(self, url: str, schema: pa.Schema, storage_options: Mapping[str, Any], *,
                 deferred: bool = False) -> None:
        self.fs, self.path = fsspec.core.url_to_fs(url, **dict(storage_options))
        parent, _, name = self.path.rpartition("/")
        self.tmp = f"{parent}/{TMP_PREFIX}{uuid.uuid4().hex[:12]}-{name}" if parent else f"{TMP_PREFIX}{name}"
        self.schema = schema
        self.deferred = deferred

    def __enter__(self) -> _AtomicParquet:
        parent = self.tmp.rpartition("/")[0]
        if parent:
            self.fs.makedirs(parent, exist_ok=True)
        self.file = self.fs.open(self.tmp, "wb")
        self.writer = pq.ParquetWriter(self.file, self.schema)
        return self

    def write(self, table: pa.Table, counts: Counter[str]) -> int:
        if table.num_rows:
            self.writer.write_table(table)
            if "status" in table.column_names:
                for entry in pc.value_counts(table.column("status")).to_pylist():
                    counts[entry["values"]] += entry["counts"]
        return int(table.num_rows)

    def commit(self) -> None:
        """Move the closed temporary file into place; drop temporary files of killed tries at this name."""
        self.fs.mv(self.tmp, self.path)
        parent, _, name = self.path.rpartition("/")
        remove_stale_temp_files(self.fs, parent, suffix=f"-{name}")

    def abort(self) -> None:
        if self.fs.exists(self.tmp):
            self.fs.rm(self.tmp)

    def __exit__(self, exc_type: type[BaseException] | None, *_: object) -> None:
        self.writer.close()
        self.file.close()
        if exc_type is not None:
            self.abort()
        elif not self.deferred:
            self.commit()


async def collect_with_retries(
    client: BatchClient,
    job: JobHandle | Mapping[str, Any],
    url: str,
    *,
    max_item_retries: int,
    keep_history: bool | str = False,
    storage_options: Mapping[str, Any] | None = None,
    prices: PricesLike | None = None,
    poll_interval: float = 30.0,
    timeout: float | None = None,
) -> dict[str, Any]:
    """Wait for `job`, collect it into `url`, resubmitting retryable failures up to `max_item_retries`
    times (each round waited for with `poll_interval`/`timeout`); the final manifest."""
    handle = client._job(job)
    rounds = ResubmitRounds(handle, url, max_item_retries=max_item_retries, keep_history=keep_history,
                            storage_options=storage_options, prices=prices)
    current, attempt = handle, 1
    started = time.time()
    while True:
        remaining = None if timeout is None else max(timeout - (time.time() - started), 1.0)
        await client.wait(current, poll_interval=poll_interval, timeout=remaining)
        step = await rounds.step(client, attempt, current)
        if step.manifest is not None:
            return step.manifest
        assert step.next_job is not None
        current, attempt = step.next_job, step.attempt
