"""Collecting a job's results into Parquet: one row per submitted custom_id, written atomically.

Each provider batch's results stream in as record batches and go straight to disk. Two checks run
at the end over the custom_ids, kept as 64-bit hashes (8 bytes per row, `IdHashes`): a result the provider
sent twice is dropped (equal hashes send it down the rare path, which reads the ids back from the written
files and compares them exactly), and a submitted id with no result becomes a `missing` row when the job
recorded its ids at submit time.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import fsspec
import pyarrow as pa
import pyarrow.compute as pc

from airflow_batchwork.adapters.base import ProviderAdapter
from airflow_batchwork.engine.arrow_memory import collect_memory_pool
from airflow_batchwork.engine.dedup import ReuseCollector
from airflow_batchwork.engine.parquet import (
    ITEM_SCHEMA,
    ParquetResultWriter,
    RowEnricher,
    is_directory_url,
    part_name,
    publish_folder,
    read_serial,
)
from airflow_batchwork.values.errors import BatchworkError
from airflow_batchwork.values.handle import JobHandle
from airflow_batchwork.values.refs import parse_model

log = logging.getLogger(__name__)

MISSING_MESSAGE = "the provider returned no result for this request"


class IncompleteResultsError(BatchworkError):
    """A batch's results ended with fewer items than the provider reports finished: the download was cut
    short (or redirected away). Nothing was written; retrying the collect downloads it again."""


def read_submitted_ids(url: str, storage_options: Mapping[str, Any] | None = None) -> pa.Table:
    """The `custom_id`/`shard` table recorded at submit time."""
    fs, path = fsspec.core.url_to_fs(url, **dict(storage_options or {}))
    with fs.open(path, "rb") as handle:
        return read_serial(handle, columns=["custom_id", "shard"])


# A submitted request with no result line: what its batch's end state says happened to it.
UNRETURNED_STATUS = {"expired": ("expired", "the batch expired before this request ran"),
                     "cancelled": ("canceled", "the batch was cancelled before this request ran"),
                     "failed": ("errored", "the provider rejected the batch")}


def missing_batch(ids: pa.Array, batch_id: str, batch_state: str | None = None) -> pa.RecordBatch:
    n = len(ids)
    status, message = UNRETURNED_STATUS.get(batch_state or "", ("missing", MISSING_MESSAGE))
    columns: list[pa.Array] = []
    for field in ITEM_SCHEMA:
        if field.name == "custom_id":
            columns.append(ids.cast(pa.string()))
        elif field.name == "batch_id":
            columns.append(pa.repeat(pa.scalar(batch_id, pa.string()), n))
        elif field.name in ("status", "error_code"):
            columns.append(pa.repeat(pa.scalar(status, pa.string()), n))
        elif field.name == "error_message":
            columns.append(pa.repeat(pa.scalar(message, pa.string()), n))
        else:
            columns.append(pa.nulls(n, field.type))
    return pa.RecordBatch.from_arrays(columns, schema=ITEM_SCHEMA)


class PassthroughEnricher:
    """Joins the input columns recorded at submit time back onto the results, by custom_id."""

    def __init__(self, ids_url: str, columns: Sequence[str], storage_options: Mapping[str, Any] | None = None):
        fs, path = fsspec.core.url_to_fs(ids_url, **dict(storage_options or {}))
        with fs.open(path, "rb") as handle:
            self.table = read_serial(handle, columns=["custom_id", *columns]).combine_chunks()
        self.columns = list(columns)
        self.fields = [self.table.schema.field(name) for name in self.columns]

    def __call__(self, items: pa.RecordBatch) -> Mapping[str, pa.Array]:
        positions = pc.index_in(items.column("custom_id"), value_set=self.table.column("custom_id"))
        return {name: self.table.column(name).take(positions) for name in self.columns}


def id_hashes(ids: pa.Array | pa.ChunkedArray) -> pa.Int64Array:
    """64-bit hashes of custom_ids (Python's keyed string hash, random per process: equal ids hash equal,
    and no input can be crafted to collide)."""
    return pa.array(list(map(hash, ids.to_pylist())), pa.int64())


class IdHashes:
    """The custom_ids written to one file, as 64-bit hashes in row order: 8 bytes per row where the
    ids themselves (and a hash table over them at the end) took ~70."""

    def __init__(self) -> None:
        self._chunks: list[pa.Array] = []
        self._rows = 0

    def add(self, ids: pa.Array) -> None:
        self._chunks.append(id_hashes(ids))
        self._rows += len(ids)
        if len(self._chunks) >= 64:  # few, large chunks
            self._chunks = [pa.concat_arrays(self._chunks)]

    def values(self) -> pa.ChunkedArray:
        return pa.chunked_array(self._chunks, pa.int64())

    def replace(self, ids: pa.Array | pa.ChunkedArray) -> None:
        self._chunks, self._rows = [id_hashes(ids)], len(ids)

    def __len__(self) -> int:
        return self._rows


def has_equal_values(values: pa.ChunkedArray) -> bool:
    """Whether two of `values` (int64) are equal, by sorting (no hash table)."""
    n = len(values)
    if n < 2:
        return False
    ordered = pc.take(values, pc.sort_indices(values))
    return bool(pc.any(pc.equal(ordered.slice(1), ordered.slice(0, n - 1))).as_py())


class JobResultWriter:
    """Write every result of a job to `url`: one file, or one part per provider batch for a folder URL."""

    def __init__(
        self,
        handle: JobHandle,
        url: str,
        *,
        storage_options: Mapping[str, Any] | None = None,
        enrichers: Sequence[RowEnricher] = (),
        reuse: ReuseCollector | None = None,
    ) -> None:
        self.handle = handle
        self.url = url
        self.storage_options = dict(storage_options or {})
        self.reuse = reuse
        directory = is_directory_url(url)
        # A job whose answers were all reused has no batch, and its rows still need a part.
        parts = max(len(handle.batches), 1 if reuse is not None else 0)
        targets = [f"{url}{part_name(i)}" for i in range(parts)] if directory else [url]
        meta = handle.to_dict()
        self.writers = [
            ParquetResultWriter(t, provider=handle.provider, model=handle.model, metadata=meta,
                                storage_options=self.storage_options, enrichers=enrichers)
            for t in targets
        ]
        self._ids = [IdHashes() for _ in self.writers]

    def _writer_index(self, shard: int) -> int:
        return shard if len(self.writers) > 1 else 0

    async def collect(self, adapter: ProviderAdapter) -> dict[str, Any]:
        """Stream, check and commit; the destination changes only if everything succeeds (a folder
        through the commit protocol of engine/parquet.py, `_SUCCESS` last). Arrow allocates from the
        collect's pool meanwhile (engine/arrow_memory.py)."""
        with collect_memory_pool():
            return await self._collect(adapter)

    async def _collect(self, adapter: ProviderAdapter) -> dict[str, Any]:
        ref = parse_model(self.handle.model)
        try:
            for shard, batch in enumerate(self.handle.batches):
                index = self._writer_index(shard)
                reported = await adapter.status(batch.id)
                received = 0
                async for records in adapter.result_batches(ref, batch.id):
                    self._write(index, records)
                    received += records.num_rows
                self._check_length(adapter, batch.id, reported, received)
                log.info("Collected %s batch %s (%d/%d)", self.handle.provider, batch.id, shard + 1,
                         len(self.handle.batches))
            dropped = self._drop_duplicates()
            missing = await self._add_missing(adapter)
            if self.reuse is not None:
                for records in self.reuse.reused_batches():
                    self._write(0, records)
            for writer in self.writers:
                writer.drain()  # a failed row group write fails the collect here, before any part is committed
        except BaseException:
            for writer in self.writers:
                writer.abort()
            if self.reuse is not None:
                self.reuse.abort()
            raise
        manifest = self._manifest(dropped, missing)
        if is_directory_url(self.url):
            manifest["success_marker"] = publish_folder(self.url, self.writers, manifest, self.storage_options)
        else:
            self.writers[0].commit()
        if self.reuse is not None:
            self.reuse.commit()  # after the dataset: a failure here leaves a retry that redoes both
        return manifest

    @staticmethod
    def _check_length(adapter: ProviderAdapter, batch_id: str, reported: Any, received: int) -> None:
        """Fewer delivered lines than the provider reports as having a result: an error, never a short success."""
        if reported.state != "completed":
            return
        expected = reported.counts.succeeded + reported.counts.errored
        unreadable = getattr(adapter, "unreadable_lines", {}).get(batch_id, 0)
        if received + unreadable < expected:
            raise IncompleteResultsError(
                f"{adapter.provider} batch {batch_id} reports {expected:,} finished requests but its results "
                f"delivered {received + unreadable:,}; the download ended short (retry the collect)"
            )

    def _write(self, index: int, records: pa.RecordBatch) -> None:
        written = self.writers[index].write_batch(records)
        self._ids[index].add(records.column("custom_id"))
        if self.reuse is not None and written is not None:
            self.reuse.observe(written)  # the rows as written: final status, `cached`/`dedup_of` set

    def _all_hashes(self) -> pa.ChunkedArray:
        return pa.chunked_array([c for ids in self._ids for c in ids.values().chunks], pa.int64())

    def _drop_duplicates(self) -> int:
        hashes = self._all_hashes()
        if not has_equal_values(hashes):
            return 0  # distinct hashes: distinct ids
        # Rare path (equal hashes: a duplicate, or two ids whose hashes collide): the ids are read back from
        # the written files and compared exactly; the first result per custom_id is kept.
        seen: set[str] = set()
        dropped = 0
        for index, writer in enumerate(self.writers):
            if not len(self._ids[index]):
                continue
            table = self._read_back(writer)
            keep: list[bool] = []
            for value in table.column("custom_id").to_pylist():
                keep.append(value not in seen)
                seen.add(value)
            dropped += keep.count(False)
            self._rewrite(index, writer, table.filter(pa.array(keep)) if not all(keep) else table)
        if dropped:
            log.warning("Dropped %d duplicate results (the provider sent some custom_ids twice)", dropped)
        return dropped

    @staticmethod
    def _read_back(writer: ParquetResultWriter) -> pa.Table:
        """Close `writer`'s temporary file and read it whole (the rare path only)."""
        writer.close_temp()
        with writer.fs.open(writer.tmp_path, "rb") as handle:
            table = read_serial(handle)
        writer.fs.rm(writer.tmp_path)
        return table

    def _rewrite(self, index: int, writer: ParquetResultWriter, table: pa.Table) -> None:
        """Write `table` (rows read back from `writer`'s file) anew through `writer`."""
        writer.rows = 0
        writer.counts.clear()
        kept = pa.Table.from_batches(table.select(ITEM_SCHEMA.names).cast(ITEM_SCHEMA).to_batches(), ITEM_SCHEMA)
        for records in kept.to_batches():
            writer.write_batch(records)
        self._ids[index].replace(table.column("custom_id"))

    async def _add_missing(self, adapter: ProviderAdapter) -> int:
        if not self.handle.ids_url:
            return 0
        submitted = read_submitted_ids(self.handle.ids_url, self.storage_options)
        returned = self._all_hashes()
        # An id whose hash no returned id has is certainly absent. Rows of shard -1 were never sent (answers
        # reused, engine/dedup.py): they are not missing.
        unreturned = pc.invert(pc.is_in(id_hashes(submitted.column("custom_id")), value_set=returned))
        if len(submitted) - pc.sum(unreturned).as_py() != len(returned):
            # Some returned id was never submitted, or hashes collide: decide exactly, on the ids read back.
            back = []
            for index, writer in enumerate(self.writers):
                if len(self._ids[index]):
                    table = self._read_back(writer)
                    self._rewrite(index, writer, table)
                    back.extend(table.column("custom_id").chunks)
            exact = pc.is_in(submitted.column("custom_id"), value_set=pa.chunked_array(back, pa.string()))
            unreturned = pc.invert(exact)
        absent = submitted.filter(pc.and_(unreturned, pc.greater_equal(submitted.column("shard"), 0)))
        for shard, batch in enumerate(self.handle.batches):
            ids = absent.filter(pc.equal(absent.column("shard"), shard)).column("custom_id")
            if len(ids):
                state = (await adapter.status(batch.id)).state
                index = self._writer_index(shard)
                records = missing_batch(ids.combine_chunks(), batch.id, state)
                self._write(index, records)
                log.warning("%d submitted requests of batch %s (%s) have no result line: written as %s",
                            len(ids), batch.id, state, records.column("status")[0])
        return absent.num_rows

    def _manifest(self, dropped: int, missing: int) -> dict[str, Any]:
        counts: dict[str, int] = {}
        for writer in self.writers:
            for status, n in writer.counts.items():
                counts[status] = counts.get(status, 0) + n
        rows = sum(w.rows for w in self.writers)
        return {
            "path": self.url if is_directory_url(self.url) else self.writers[0].url,
            "files": [w.url for w in self.writers],
            "rows": rows,
            "counts": dict(sorted(counts.items())),
            "provider": self.handle.provider,
            "model": self.handle.model,
            "batch_ids": self.handle.batch_ids,
            "duplicates_dropped": dropped,
            "unaccounted": max(self.handle.request_count - rows - (self.reuse.unchanged if self.reuse else 0), 0),
        }
