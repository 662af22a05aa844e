"""Streaming, bounded-memory Parquet writing of normalized results to any fsspec URL.

Rows are buffered per column and flushed as row groups, so memory stays flat however many results
a job has. Files are written under a temporary name in the same folder and moved into place when
complete, so a reader never sees a half-written file; names starting with `_` are skipped by
Parquet dataset readers.
"""

from __future__ import annotations

import json
import uuid
from collections import Counter
from collections.abc import Mapping
from types import TracebackType
from typing import Any

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq

from airflow_batchwork.core.status import ItemResult

RESULT_SCHEMA = pa.schema(
    [
        pa.field("custom_id", pa.string(), nullable=False),
        pa.field("provider", pa.string()),
        pa.field("model", pa.string()),
        pa.field("batch_id", pa.string()),
        pa.field("status", pa.string()),
        pa.field("text", pa.string()),
        pa.field("finish_reason", pa.string()),
        pa.field("input_tokens", pa.int64()),
        pa.field("output_tokens", pa.int64()),
        pa.field("total_tokens", pa.int64()),
        pa.field("error_code", pa.string()),
        pa.field("error_message", pa.string()),
        pa.field("response", pa.string()),
        pa.field("embedding", pa.list_(pa.float32())),
    ]
)
JOB_METADATA_KEY = b"batchwork.job"
ROW_GROUP_ROWS = 20_000
_ITEM_COLUMNS = [
    name for name in RESULT_SCHEMA.names if name not in ("provider", "model")
]


def is_directory_url(url: str) -> bool:
    return url.endswith("/")


def part_name(index: int) -> str:
    return f"part-{index:05d}.parquet"


class ParquetResultWriter:
    """Write `ItemResult`s of one provider/model to one Parquet file, atomically."""

    def __init__(
        self,
        url: str,
        *,
        provider: str,
        model: str,
        metadata: Mapping[str, Any] | None = None,
        storage_options: Mapping[str, Any] | None = None,
        row_group_rows: int = ROW_GROUP_ROWS,
    ) -> None:
        self.fs, self.path = fsspec.core.url_to_fs(url, **dict(storage_options or {}))
        self.url = url
        self.provider = provider
        self.model = model
        self.row_group_rows = row_group_rows
        parent, _, name = self.path.rpartition("/")
        self._tmp_path = f"{parent}/_batchwork-tmp-{uuid.uuid4().hex[:12]}-{name}" if parent else \
            f"_batchwork-tmp-{uuid.uuid4().hex[:12]}-{name}"
        schema_meta = {JOB_METADATA_KEY: json.dumps(dict(metadata or {}), sort_keys=True).encode()}
        self.schema = RESULT_SCHEMA.with_metadata(schema_meta)
        self._columns: dict[str, list[Any]] = {name: [] for name in _ITEM_COLUMNS}
        self._file: Any = None
        self._writer: pq.ParquetWriter | None = None
        self.rows = 0
        self.counts: Counter[str] = Counter()

    def __enter__(self) -> ParquetResultWriter:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.abort()

    def write(self, item: ItemResult) -> None:
        columns = self._columns
        for name in _ITEM_COLUMNS:
            columns[name].append(getattr(item, name))
        self.rows += 1
        self.counts[item.status] += 1
        if len(columns["custom_id"]) >= self.row_group_rows:
            self._flush()

    def _flush(self) -> None:
        n = len(self._columns["custom_id"])
        if n == 0 and self._writer is not None:
            return
        arrays = []
        for field in RESULT_SCHEMA:
            if field.name == "provider":
                arrays.append(pa.array([self.provider] * n, pa.string()))
            elif field.name == "model":
                arrays.append(pa.array([self.model] * n, pa.string()))
            else:
                arrays.append(pa.array(self._columns[field.name], field.type))
        table = pa.Table.from_arrays(arrays, schema=self.schema)
        if self._writer is None:
            self.fs.makedirs(self._tmp_path.rpartition("/")[0] or ".", exist_ok=True)
            self._file = self.fs.open(self._tmp_path, "wb")
            self._writer = pq.ParquetWriter(self._file, self.schema, compression="zstd")
        self._writer.write_table(table)
        for values in self._columns.values():
            values.clear()

    def commit(self) -> None:
        """Flush, close and move the file into place."""
        self._flush()
        assert self._writer is not None
        self._writer.close()
        self._file.close()
        self._writer = None
        # Local and object stores replace an existing destination in one step.
        self.fs.mv(self._tmp_path, self.path)

    def abort(self) -> None:
        """Drop the temporary file; the destination is left as it was."""
        try:
            if self._writer is not None:
                self._writer.close()
            if self._file is not None:
                self._file.close()
        finally:
            self._writer = None
            if self.fs.exists(self._tmp_path):
                self.fs.rm(self._tmp_path)
