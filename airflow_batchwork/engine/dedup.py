"""Pay once: requests asked twice inside a job are sent once, and answers in the response cache are not sent.

The key of a request is the SHA-256 of the canonical JSON (sorted keys, no spaces) of
`{"model", "endpoint", "item"}`, where `item` is the provider-facing item exactly as the adapter encodes
it but with a fixed custom_id: two requests that would make the provider do the same work have the same
key, whatever their custom_ids. No provider knowledge lives here: the adapter's own encoder decides
what is provider-facing.

At submit (`ReusePlanner`, called by `prepare_job` for every request) a request is either sent, or
skipped because an earlier request of the job has its key (`dedup_of` names that custom_id), or
skipped because the cache has its answer. Every request keeps its row in the submitted-ids file
(`shard` = -1 for the skipped ones) with three columns: `_batchwork_key`, `dedup_of` and
`_batchwork_cached` (the cached answer, as JSON, snapshotted at submit so a TTL running out before the
collect cannot lose it).

At collect (`ReuseCollector`, called by `JobResultWriter`) the cached rows are written with
`cached = true`, each duplicate gets a copy of its first request's row with `dedup_of` set, and the
successful answers that came from the provider are added to the cache (`engine/cache.py`). The
`ReuseEnricher` adds the `cached` and `dedup_of` columns, sets `cost_usd` to 0 for rows that were not
paid for and adds up what they would have cost (`saved_usd` in the manifest).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import fsspec
import pyarrow as pa
import pyarrow.compute as pc

from airflow_batchwork.engine.cache import ResponseCache, SegmentWriter, row_to_json
from airflow_batchwork.engine.parquet import ITEM_SCHEMA, RowEnricher, serial_file
from airflow_batchwork.values.errors import BatchworkError
from airflow_batchwork.values.refs import ModelRef

log = logging.getLogger(__name__)

KEY_COLUMN = "_batchwork_key"
DEDUP_COLUMN = "dedup_of"
CACHED_COLUMN = "_batchwork_cached"
CHANGE_COLUMN = "_batchwork_change"
CACHED_FIELD = pa.field("cached", pa.bool_())
DEDUP_FIELD = pa.field(DEDUP_COLUMN, pa.string())
KEY_PLACEHOLDER = "batchwork-key"


def request_key(ref: ModelRef, item: bytes) -> str:
    """The key of an encoded item whose custom_id is `KEY_PLACEHOLDER` (see the module text)."""
    canonical = json.dumps({"model": str(ref), "endpoint": ref.kind, "item": json.loads(item)},
                           sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


class ReusePlanner:
    """Decides, request by request, what is sent (see the module text)."""

    def __init__(self, *, dedup: bool, cache: ResponseCache | None,
                 previous: Mapping[str, tuple[str | None, str | None]] | None = None) -> None:
        self.dedup = dedup
        self.cache = cache if cache is not None and cache.reads else None
        self.previous = previous
        self._first: dict[str, str] = {}
        self._keys: list[str] = []
        self._dedup_of: list[str | None] = []
        self._hits: list[str | None] = []
        self._changes: list[str | None] = []
        self.sent = 0
        self.deduplicated = 0
        self.cached = 0
        self.changes = {"new": 0, "changed": 0, "unchanged": 0}

    def decide(self, custom_id: str, key: str) -> str | None:
        """None: send it. Otherwise a short reason it is not sent (`unchanged`, `dedup` or `cached`)."""
        self._keys.append(key)
        if self.previous is not None:
            # Incremental (engine/incremental.py): a succeeded row with the same fingerprint stays as it is.
            before = self.previous.get(custom_id)
            change = "new" if before is None else "unchanged" if before == (key, "succeeded") else "changed"
            self._changes.append(change)
            self.changes[change] += 1
            if change == "unchanged":
                self._dedup_of.append(None)
                self._hits.append(None)
                return "unchanged"
        else:
            self._changes.append(None)
        if self.dedup:
            first = self._first.get(key)
            if first is not None:
                self._dedup_of.append(first)
                self._hits.append(None)
                self.deduplicated += 1
                return "dedup"
            self._first[key] = custom_id
        self._dedup_of.append(None)
        if self.cache is not None and key in self.cache:
            self._hits.append(key)
            self.cached += 1
            return "cached"
        self._hits.append(None)
        self.sent += 1
        return None

    def flush(self) -> dict[str, pa.Array]:
        """The extra ids-file columns of the rows decided since the last flush (then forgotten)."""
        wanted = [k for k in self._hits if k is not None]
        answers = self.cache.fetch(wanted) if self.cache is not None and wanted else {}
        cached: list[str | None] = []
        for key in self._hits:
            if key is None:
                cached.append(None)
            elif key not in answers:
                raise BatchworkError(f"the response cache {self.cache.url if self.cache else ''} changed while the "
                                     "job was prepared (an answer disappeared); submit again")
            else:
                cached.append(row_to_json(answers[key]))
        columns = {KEY_COLUMN: pa.array(self._keys, pa.string()), DEDUP_COLUMN: pa.array(self._dedup_of, pa.string()),
                   CACHED_COLUMN: pa.array(cached, pa.string()), CHANGE_COLUMN: pa.array(self._changes, pa.string())}
        self._keys, self._dedup_of, self._hits, self._changes = [], [], [], []
        return columns

    def summary(self, total: int) -> str:
        parts = [f"{self.sent:,} of {total:,} requests to send"]
        if self.previous is not None:
            parts.append(f"{self.changes['new']:,} new, {self.changes['changed']:,} changed, "
                         f"{self.changes['unchanged']:,} unchanged since the last run")
        if self.deduplicated:
            parts.append(f"{self.deduplicated:,} duplicates share the answer of an earlier request")
        if self.cached:
            parts.append(f"{self.cached:,} answers from the response cache")
        return "; ".join(parts)


def _json_batch(rows: Sequence[Mapping[str, Any]]) -> pa.RecordBatch:
    return pa.RecordBatch.from_arrays([pa.array([r.get(f.name) for r in rows], f.type) for f in ITEM_SCHEMA],
                                      schema=ITEM_SCHEMA)


def _with_reuse_columns(items: pa.RecordBatch, cached: pa.Array, dedup_of: pa.Array) -> pa.RecordBatch:
    base = items.select(ITEM_SCHEMA.names)
    return pa.RecordBatch.from_arrays([*base.columns, cached, dedup_of],
                                      schema=pa.schema([*ITEM_SCHEMA, CACHED_FIELD, DEDUP_FIELD]))


class ReuseCollector:
    """The collect side of one job that was planned with keys (see the module text)."""

    def __init__(self, table: pa.Table, cache: ResponseCache | None) -> None:
        self.table = table.combine_chunks()
        sent = self.table.filter(pc.greater_equal(self.table.column("shard"), 0))
        self._sent_ids = sent.column("custom_id")
        self._sent_keys = sent.column(KEY_COLUMN)
        self.segment: SegmentWriter | None = cache.segment_writer() if cache is not None and cache.writes else None
        dups = self.table.filter(pc.is_valid(self.table.column(DEDUP_COLUMN)))
        self._dup_ids = dups.column("custom_id").to_pylist()
        self._dup_of = dups.column(DEDUP_COLUMN).to_pylist()
        self._canonical = pa.array(sorted(set(self._dup_of)), pa.string())
        self._captured: list[pa.RecordBatch] = []
        self.stored = 0
        skipped = self.table.filter(pc.less(self.table.column("shard"), 0))
        #: Requests not sent and not written: unchanged rows of an incremental job (they stay in the dataset).
        self.unchanged = skipped.filter(pc.and_(pc.is_null(skipped.column(DEDUP_COLUMN)),
                                                pc.is_null(skipped.column(CACHED_COLUMN)))).num_rows

    @classmethod
    def load(cls, ids_url: str | None, cache: ResponseCache | None,
             storage_options: Mapping[str, Any] | None = None) -> ReuseCollector | None:
        """The collector of a job whose ids file has keys; None for a job planned without them."""
        if not ids_url:
            return None
        fs, path = fsspec.core.url_to_fs(ids_url, **dict(storage_options or {}))
        with fs.open(path, "rb") as handle:
            parquet = serial_file(handle)
            if KEY_COLUMN not in parquet.schema_arrow.names:
                if cache is not None:
                    log.warning("This job was submitted without cache= or dedup=: its answers cannot be keyed, so "
                                "none are stored in the response cache")
                return None
            table = parquet.read(columns=["custom_id", "shard", KEY_COLUMN, DEDUP_COLUMN, CACHED_COLUMN],
                                 use_threads=False)
        return cls(table, cache)

    def observe(self, written: pa.Table) -> None:
        """Rows as the collector wrote them (enriched: final status, `cached` and `dedup_of` set): stored in
        the cache when they succeeded (after the structured output check) and came from the provider; kept
        when a duplicate will copy them."""
        reused = pc.or_(pc.fill_null(written.column("cached"), False), pc.is_valid(written.column(DEDUP_COLUMN)))
        if self.segment is not None:
            ok = written.filter(pc.and_(pc.equal(written.column("status"), "succeeded"), pc.invert(reused)))
            if ok.num_rows:
                [batch] = ok.select(ITEM_SCHEMA.names).cast(ITEM_SCHEMA).combine_chunks().to_batches()
                positions = pc.index_in(batch.column("custom_id"), value_set=self._sent_ids)
                self.segment.write(self._sent_keys.take(positions), batch)
        if len(self._canonical):
            wanted = written.filter(pc.is_in(written.column("custom_id"), value_set=self._canonical))
            if wanted.num_rows:
                names = [*ITEM_SCHEMA.names, CACHED_FIELD.name, DEDUP_FIELD.name]
                schema = pa.schema([*ITEM_SCHEMA, CACHED_FIELD, DEDUP_FIELD])
                self._captured.extend(wanted.select(names).cast(schema).to_batches())

    def reused_batches(self) -> Iterator[pa.RecordBatch]:
        """The rows of the requests that were not sent: cached answers first, then the duplicates."""
        hits = self.table.filter(pc.is_valid(self.table.column(CACHED_COLUMN)))
        if hits.num_rows:
            rows = []
            for custom_id, text in zip(hits.column("custom_id").to_pylist(), hits.column(CACHED_COLUMN).to_pylist(),
                                       strict=True):
                row = json.loads(text)
                row["custom_id"] = custom_id
                rows.append(row)
            n = len(rows)
            yield _with_reuse_columns(_json_batch(rows), pa.repeat(pa.scalar(True), n), pa.nulls(n, pa.string()))
        if self._dup_ids:
            captured = pa.Table.from_batches(self._captured, pa.schema([*ITEM_SCHEMA, CACHED_FIELD, DEDUP_FIELD])) \
                if self._captured else None
            first: dict[str, int] = {}
            if captured is not None:
                for position, custom_id in enumerate(captured.column("custom_id").to_pylist()):
                    first.setdefault(custom_id, position)
            lost = [c for c in set(self._dup_of) if c not in first]
            if lost:
                raise BatchworkError(f"no row for {lost[0]!r}, whose answer {self._dup_of.count(lost[0])} duplicate "
                                     "requests share; collect again")
            assert captured is not None
            copied = captured.take(pa.array([first[c] for c in self._dup_of], pa.int64())).combine_chunks()
            names = copied.column_names
            columns = [copied.column(name) for name in names]
            columns[names.index("custom_id")] = pa.chunked_array([pa.array(self._dup_ids, pa.string())])
            columns[names.index(DEDUP_COLUMN)] = pa.chunked_array([pa.array(self._dup_of, pa.string())])
            yield from pa.Table.from_arrays(columns, schema=copied.schema).to_batches()

    def commit(self) -> None:
        if self.segment is not None:
            self.stored = self.segment.commit()

    def abort(self) -> None:
        if self.segment is not None:
            self.segment.abort()


class ReuseEnricher:
    """Adds `cached` and `dedup_of`, and prices rows that were not paid for at 0 (wrapping the cost enricher)."""

    fields: Sequence[pa.Field] = (CACHED_FIELD, DEDUP_FIELD)

    def __init__(self, cost: RowEnricher) -> None:
        self.cost = cost
        self.saved_usd = 0.0
        self.priced = True
        self.cached = 0
        self.deduplicated = 0

    def __call__(self, items: pa.RecordBatch) -> Mapping[str, pa.Array]:
        n = items.num_rows
        out = dict(self.cost(items))
        if "cached" in items.schema.names:
            cached, dedup_of = items.column("cached"), items.column(DEDUP_COLUMN)
        else:
            cached, dedup_of = pa.repeat(pa.scalar(False), n), pa.nulls(n, pa.string())
            out.update(cached=cached, dedup_of=dedup_of)
        reused = pc.or_(pc.fill_null(cached, False), pc.is_valid(dedup_of))
        self.cached += pc.sum(pc.cast(pc.fill_null(cached, False), pa.int64())).as_py() or 0
        self.deduplicated += pc.sum(pc.cast(pc.is_valid(dedup_of), pa.int64())).as_py() or 0
        cost = out.get("cost_usd")
        if cost is not None:
            saved = pc.sum(pc.filter(cost, reused)).as_py()
            if saved is not None:
                self.saved_usd += saved
            elif pc.any(reused).as_py():
                self.priced = False
            out["cost_usd"] = pc.if_else(reused, pa.scalar(0.0), cost)
        return out


def reuse_summary(manifest: Mapping[str, Any], enricher: ReuseEnricher, collector: ReuseCollector) -> dict[str, Any]:
    """The `reuse` entry of a collect manifest, logged as one line."""
    rows = int(manifest["rows"])
    summary = {"cached": enricher.cached, "deduplicated": enricher.deduplicated,
               "sent": int(collector._sent_ids.__len__()),
               "saved_usd": round(enricher.saved_usd, 6) if enricher.priced else None,
               "stored_in_cache": collector.stored}
    saved = f"{format_usd(enricher.saved_usd)} saved" if enricher.priced else "saving unknown (no price)"
    line = f"{enricher.cached:,} of {rows:,} answers from cache"
    if enricher.deduplicated:
        line += f", {enricher.deduplicated:,} shared with a duplicate request"
    if enricher.cached or enricher.deduplicated:
        log.info("%s, %s", line, saved)
    return summary


def format_usd(value: float) -> str:
    """Dollars as people read them: cents from one cent up, else six decimals."""
    return f"${value:,.2f}" if value >= 0.01 or value == 0 else f"${value:.6f}"
