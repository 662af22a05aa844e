"""A response cache across runs, on any fsspec URL: answers already paid for are never asked again.

Layout: `{cache}/segments/{written_at}-{uuid}.parquet`, one segment per collect that had new answers.
A segment holds the successful rows of that collect (the item columns of `engine/parquet.py`) with
`key` (the request key of `engine/dedup.py`: a hash of model + endpoint + the provider-facing body,
custom_id left out) and `written_at` (epoch seconds). A segment is written under a `_tmp-` name in
the same folder and moved into place when complete, so a reader sees all of a collect's answers or
none of them; a killed collect leaves only a `_tmp-` file, which readers skip. When two segments
hold the same key the newer one wins.

Modes: `read_write` (look up at submit, store at collect), `read_only` (look up, never store),
`refresh` (never look up, store: re-asks everything and replaces what the cache holds). `ttl`
(seconds) ignores answers older than that at lookup.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Iterable, Mapping
from typing import Any

import fsspec
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from airflow_batchwork.engine.parquet import ITEM_SCHEMA, check_output_url, discard_temp, read_serial
from airflow_batchwork.values.errors import ConfigurationError

log = logging.getLogger(__name__)

CACHE_MODES = ("read_write", "read_only", "refresh")
SEGMENTS = "segments"
SEGMENT_SCHEMA = pa.schema([pa.field("key", pa.string(), nullable=False), pa.field("written_at", pa.float64()),
                            *ITEM_SCHEMA])
_TMP = "_tmp-"


class ResponseCache:
    """Answers by request key on any fsspec folder URL (see the module text)."""

    def __init__(self, url: str, *, mode: str = "read_write", ttl: float | None = None,
                 storage_options: Mapping[str, Any] | None = None) -> None:
        check_output_url(url, "cache")
        if mode not in CACHE_MODES:
            raise ConfigurationError("cache_mode", f"{mode!r:.60} is not a cache mode",
                                     f"use one of {', '.join(CACHE_MODES)}")
        if ttl is not None and (isinstance(ttl, bool) or not isinstance(ttl, int | float) or not ttl > 0):
            raise ConfigurationError("cache_ttl", f"{ttl!r:.60} is not a positive number of seconds",
                                     "use e.g. cache_ttl=30 * 86400 (thirty days), or None for no expiry")
        self.url = url.rstrip("/") + "/"
        self.mode = mode
        self.ttl = ttl
        self.storage_options = dict(storage_options or {})
        self._fs: Any = None
        self._root = ""
        self._index: dict[str, str] | None = None

    def _open_fs(self) -> None:
        if self._fs is None:  # on first use: checking options at DAG parse makes no connection
            self._fs, root = fsspec.core.url_to_fs(self.url, **self.storage_options)
            self._root = root.rstrip("/")

    @property
    def fs(self) -> Any:
        self._open_fs()
        return self._fs

    @property
    def root(self) -> str:
        self._open_fs()
        return self._root

    @classmethod
    def coerce(cls, cache: str | ResponseCache | None, *, mode: str = "read_write", ttl: float | None = None,
               storage_options: Mapping[str, Any] | None = None) -> ResponseCache | None:
        """`cache=` as given to submit/collect: None (off), a URL, or a ResponseCache."""
        if cache is None or isinstance(cache, ResponseCache):
            return cache
        if not isinstance(cache, str):
            raise ConfigurationError("cache", f"a {type(cache).__name__} is not a cache location",
                                     "pass a folder URL such as s3://bucket/llm-cache/")
        return cls(cache, mode=mode, ttl=ttl, storage_options=storage_options)

    @property
    def reads(self) -> bool:
        return self.mode != "refresh"

    @property
    def writes(self) -> bool:
        return self.mode != "read_only"

    def _segments(self) -> list[str]:
        folder = f"{self.root}/{SEGMENTS}"
        try:
            entries = self.fs.ls(folder, detail=False)
        except FileNotFoundError:
            return []
        names = [e.rstrip("/").rpartition("/")[2] for e in entries]
        return [f"{folder}/{n}" for n in sorted(names) if n.endswith(".parquet") and not n.startswith(_TMP)]

    def index(self) -> dict[str, str]:
        """Key → the segment holding its newest answer (answers past the TTL left out). Read once."""
        if self._index is None:
            index: dict[str, str] = {}
            oldest = time.time() - self.ttl if self.ttl is not None else None
            if self.reads:
                for path in self._segments():
                    with self.fs.open(path, "rb") as handle:
                        table = read_serial(handle, columns=["key", "written_at"])
                    if oldest is not None:
                        table = table.filter(pc.greater_equal(table.column("written_at"), oldest))
                    for key in table.column("key").to_pylist():
                        index[key] = path
            self._index = index
        return self._index

    def __contains__(self, key: str) -> bool:
        return key in self.index()

    def fetch(self, keys: Iterable[str]) -> dict[str, dict[str, Any]]:
        """The item columns of the newest answer of each key (keys not in the cache are left out)."""
        index = self.index()
        by_segment: dict[str, set[str]] = {}
        for key in keys:
            if key in index:
                by_segment.setdefault(index[key], set()).add(key)
        found: dict[str, dict[str, Any]] = {}
        for path, wanted in by_segment.items():
            with self.fs.open(path, "rb") as handle:
                table = read_serial(handle)
            table = table.filter(pc.is_in(table.column("key"), value_set=pa.array(sorted(wanted), pa.string())))
            for row in table.to_pylist():
                key = row.pop("key")
                row.pop("written_at", None)
                found[key] = row
        return found

    def segment_writer(self) -> SegmentWriter:
        return SegmentWriter(self)


class SegmentWriter:
    """The answers one collect adds to the cache: streamed to a temporary file, moved into place at commit."""

    def __init__(self, cache: ResponseCache) -> None:
        self.cache = cache
        self.stamp = time.time()
        name = f"{int(self.stamp * 1000):015d}-{uuid.uuid4().hex[:12]}.parquet"
        folder = f"{cache.root}/{SEGMENTS}"
        self.path = f"{folder}/{name}"
        self.tmp_path = f"{folder}/{_TMP}{name}"
        self._file: Any = None
        self._writer: pq.ParquetWriter | None = None
        self.rows = 0

    def write(self, keys: pa.Array, items: pa.RecordBatch) -> None:
        """Add the rows of `items` (ITEM_SCHEMA columns) under `keys` (nulls are skipped)."""
        keep = pc.is_valid(keys)
        if not pc.all(keep).as_py():
            keys, items = keys.filter(keep), items.filter(keep)
        n = len(keys)
        if n == 0:
            return
        columns = [keys.cast(pa.string()), pa.repeat(pa.scalar(self.stamp, pa.float64()), n),
                   *(items.column(f.name).cast(f.type) for f in ITEM_SCHEMA)]
        table = pa.Table.from_arrays(columns, schema=SEGMENT_SCHEMA)
        if self._writer is None:
            self.cache.fs.makedirs(self.path.rpartition("/")[0], exist_ok=True)
            self._file = self.cache.fs.open(self.tmp_path, "wb")
            self._writer = pq.ParquetWriter(self._file, SEGMENT_SCHEMA)
        self._writer.write_table(table)
        self.rows += n

    def commit(self) -> int:
        """Move the segment into place (nothing when no answers were added); how many answers it holds."""
        if self._writer is None:
            return 0
        self._writer.close()
        self._file.close()
        self._writer = None
        self.cache.fs.mv(self.tmp_path, self.path)
        log.info("Stored %d answers in the response cache %s", self.rows, self.cache.url)
        return self.rows

    def abort(self) -> None:
        writer, self._writer = self._writer, None
        discard_temp(writer, self._file, self.cache.fs, self.tmp_path)


def row_to_json(row: Mapping[str, Any]) -> str:
    return json.dumps(dict(row), sort_keys=True, separators=(",", ":"))
