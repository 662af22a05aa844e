"""Streaming, bounded-memory Parquet writing of normalized results to any fsspec URL.

Results arrive as Arrow record batches of the item columns (`ITEM_SCHEMA`) and are written as row
groups as they come, so memory stays flat however many results a job has. Files are written under a
temporary name in the same folder and moved into place when complete, so a reader never sees a
half-written file; names starting with `_` are skipped by Parquet dataset readers.

Folder outputs (a URL ending in `/`) follow a commit protocol, as Spark/Hadoop writers do: the old
`_SUCCESS` marker is removed first, every part is moved into place, parts of an earlier, larger run and
temporary files of earlier (killed) tries are removed, and only then is `_SUCCESS` written — a JSON
manifest naming exactly the committed files. A reader waits for `_SUCCESS` and reads the files it lists
(`committed_files`); while it is absent the folder is being replaced and must not be read.
"""

from __future__ import annotations

import atexit
import contextlib
import gc
import json
import re
import threading
import uuid
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from types import TracebackType
from typing import Any, Protocol

import fsspec
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from airflow_batchwork.values.errors import ConfigurationError
from airflow_batchwork.values.result_schema import (  # noqa: F401 (re-exported: the schema's home before the layers)
    ITEM_SCHEMA,
    JOB_COLUMNS,
    RESULT_SCHEMA,
    items_to_batch,
)


class RowEnricher(Protocol):
    """Computes columns from a batch of item rows (e.g. cost, validated structured output, input
    columns carried through). It may also replace item columns such as `status`."""

    @property
    def fields(self) -> Sequence[pa.Field]:
        """Columns it adds beyond `RESULT_SCHEMA` (empty when it only fills or replaces existing ones)."""

    def __call__(self, items: pa.RecordBatch) -> Mapping[str, pa.Array]: ...
# Every Parquet read of the package runs on the calling thread: no Arrow CPU or IO pool thread is started,
# so none is alive when the interpreter exits (a joinable native thread destroyed during shutdown is a
# `std::terminate`, SIGABRT: apache/arrow#34314). `pq.read_table` goes through the dataset layer, which
# starts an IO pool thread even with `use_threads=False`; a `ParquetFile` with `pre_buffer=False` read with
# `use_threads=False` starts none (tests/test_crash_threads.py counts the process's native threads).
SERIAL_READ: dict[str, Any] = {"use_threads": False, "pre_buffer": False}


def serial_file(source: Any) -> pq.ParquetFile:
    """A `ParquetFile` that reads without Arrow's IO pool (no pre-buffering); read it with `use_threads=False`."""
    return pq.ParquetFile(source, pre_buffer=False)


def read_serial(source: Any, columns: Sequence[str] | None = None) -> pa.Table:
    """`pq.read_table` of one file (path or file object) on the calling thread (see `SERIAL_READ`)."""
    return serial_file(source).read(columns=list(columns) if columns is not None else None, use_threads=False)


def _release_arrow_objects() -> None:
    """At exit, before pyarrow's own teardown (atexit runs in reverse order of registration): collect
    unreachable Arrow objects (readers, writers, iterators) while Arrow can still destroy them cleanly."""
    gc.collect()


atexit.register(_release_arrow_objects)
JOB_METADATA_KEY = b"batchwork.job"
TMP_PREFIX = "_batchwork-tmp-"


SUCCESS_NAME = "_SUCCESS"
PART_PATTERN = re.compile(r"^part-\d{5,}\.parquet\Z")
# Schemes that are web endpoints, not storage: fsspec can "write" to some of them (a PUT/POST to any
# listener), which is never what an output path means.
WEB_SCHEMES = frozenset({"http", "https", "ws", "wss", "ftp"})
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")


def check_output_url(url: str, field: str = "output_path", *, allow_web: bool = False) -> None:
    """Refuse an output URL no installed filesystem can write, or one that is a web endpoint rather
    than storage (`http(s)://`, unless `allow_web`), before anything else happens."""
    if not isinstance(url, str) or not url.strip():
        raise ConfigurationError(field, "is empty", "give a URL such as s3://bucket/results/ or file:///tmp/out/")
    if url != url.strip() or any(ord(c) < 32 for c in url):
        raise ConfigurationError(field, f"{url!r} has surrounding whitespace or control characters",
                                 "give the URL without spaces, tabs or newlines around it")
    links = url.split("::")
    for link in links:
        scheme = _SCHEME.match(link)
        if scheme is None and "://" in link:
            raise ConfigurationError(field, f"{url!r} has no valid scheme", "give a URL such as s3://bucket/results/")
        name = scheme.group(1).lower() if scheme else "file"
        if name in WEB_SCHEMES and not allow_web:
            raise ConfigurationError(field, f"{name}:// is a web endpoint, not a storage location",
                                     "write to a storage scheme such as s3://, gs://, abfs:// or file://")
    first = _SCHEME.match(links[0])
    protocol = first.group(1).lower() if first else "file"
    try:
        fsspec.get_filesystem_class(protocol)
    except (ValueError, ImportError) as exc:
        raise ConfigurationError(field, f"no filesystem for {protocol!r} URLs ({exc})",
                                 f"install the fsspec implementation for {protocol}:// (e.g. s3fs for s3://)") from None


def is_directory_url(url: str) -> bool:
    return url.endswith("/")


def part_name(index: int) -> str:
    return f"part-{index:05d}.parquet"


# Batches are buffered up to this many bytes of Arrow data and written as one row group: few, large row
# groups read fast and keep the footer small (a row group per parsed chunk made ~400 per million rows).
# 8 MB since the row group is written on a thread while the next one fills: two are held, not one
# (1M OpenAI lines: ~180 row groups, 231 MB peak RSS; with 16 MB 273 MB).
ROW_GROUP_BYTES = 8 * 1024 * 1024
# The Parquet writer writes to the destination file through a native buffer of this size, so a row group
# being written off the calling thread takes the GIL once per MB (a Python file object takes it on every
# page written, ~70 times per row group, and waits up to the interpreter's switch interval each time).
SINK_BUFFER_BYTES = 1024 * 1024
# Columns with few distinct values are dictionary-encoded; for the others (ids, texts, raw lines) the
# writer's dictionary attempt is wasted work, since it falls back to plain encoding anyway.
DICTIONARY_COLUMNS = ("provider", "model", "batch_id", "status", "finish_reason", "error_code", "attempt")
# Min/max statistics are written for every column but these: raw lines, texts and JSON documents (~1 KB a
# row), where they cost a comparison of every value and no reader of ours filters on them (1M OpenAI rows:
# ~0.2 s of the writer's CPU; a reader's row-group pruning by id, status, tokens or cost keeps working).
UNINDEXED_COLUMNS = frozenset({"text", "tool_calls", "error_message", "response", "embedding", "structured"})


def _join(parent: str, name: str) -> str:
    return f"{parent.rstrip('/')}/{name}" if parent else name


def _basename(path: str) -> str:
    return path.rstrip("/").rpartition("/")[2]


def discard_temp(writer: pq.ParquetWriter | None, file: Any, fs: Any, tmp_path: str) -> None:
    """Close a Parquet writer and its open file (either may be None), then remove its temporary file."""
    try:
        if writer is not None:
            writer.close()
        if file is not None:
            file.close()
    finally:
        if fs.exists(tmp_path):
            fs.rm(tmp_path)


def remove_stale_temp_files(fs: Any, parent: str, *, keep: Iterable[str] = (), suffix: str = "") -> int:
    """Remove `_batchwork-tmp-*` files (ending in `suffix`) left in `parent` by earlier, killed tries."""
    keep_names = {_basename(k) for k in keep}
    removed = 0
    try:
        entries = fs.ls(parent, detail=False)
    except FileNotFoundError:
        return 0
    for entry in entries:
        name = _basename(entry)
        if name.startswith(TMP_PREFIX) and name.endswith(suffix) and name not in keep_names:
            try:
                fs.rm(_join(parent, name))
                removed += 1
            except FileNotFoundError:
                pass
    return removed


class CommittablePart(Protocol):
    """A part written under a temporary name; `commit` moves it to `path`."""

    path: str

    def commit(self) -> None: ...


def publish_folder(url: str, writers: Sequence[CommittablePart], manifest: Mapping[str, Any],
                   storage_options: Mapping[str, Any] | None = None) -> str:
    """The commit protocol of a folder output (see the module text); returns the `_SUCCESS` URL.

    A kill at any point before the last step leaves the folder without `_SUCCESS` (readers wait) and
    the next try redoes every step, so the folder ends holding exactly the parts of that try."""
    fs, folder = fsspec.core.url_to_fs(url, **dict(storage_options or {}))
    folder = folder.rstrip("/")
    fs.makedirs(folder, exist_ok=True)
    marker = _join(folder, SUCCESS_NAME)
    if fs.exists(marker):
        fs.rm(marker)
    for writer in writers:
        writer.commit()
    parts = {_basename(w.path) for w in writers}
    for entry in fs.ls(folder, detail=False):
        name = _basename(entry)
        if PART_PATTERN.match(name) and name not in parts:
            fs.rm(_join(folder, name))  # a part of an earlier, larger run or try
    remove_stale_temp_files(fs, folder)
    tmp = _join(folder, f"{TMP_PREFIX}{uuid.uuid4().hex[:12]}-{SUCCESS_NAME}")
    with fs.open(tmp, "wb") as handle:
        handle.write(json.dumps({**dict(manifest), "files": sorted(parts)}, sort_keys=True, default=str).encode())
    fs.mv(tmp, marker)
    return url.rstrip("/") + "/" + SUCCESS_NAME


def committed_files(url: str, storage_options: Mapping[str, Any] | None = None) -> list[str] | None:
    """The part URLs of a committed folder output, or None while it is being written (no `_SUCCESS`).
    A reader that follows the protocol reads exactly these files."""
    fs, folder = fsspec.core.url_to_fs(url, **dict(storage_options or {}))
    try:
        with fs.open(_join(folder.rstrip("/"), SUCCESS_NAME), "rb") as handle:
            manifest = json.loads(handle.read())
    except FileNotFoundError:
        return None
    return [url.rstrip("/") + "/" + name for name in manifest["files"]]


class ParquetResultWriter:
    """Write record batches of one job's results to one Parquet file, atomically."""

    def __init__(
        self,
        url: str,
        *,
        provider: str,
        model: str,
        metadata: Mapping[str, Any] | None = None,
        storage_options: Mapping[str, Any] | None = None,
        enrichers: Sequence[RowEnricher] = (),
        attempt: int = 1,
    ) -> None:
        self.fs, self.path = fsspec.core.url_to_fs(url, **dict(storage_options or {}))
        self.url = url
        self.provider = provider
        self.model = model
        self.enrichers = list(enrichers)
        self.attempt = attempt
        parent, _, name = self.path.rpartition("/")
        tmp_name = f"{TMP_PREFIX}{uuid.uuid4().hex[:12]}-{name}"
        self.tmp_path = f"{parent}/{tmp_name}" if parent else tmp_name
        schema_meta = {JOB_METADATA_KEY: json.dumps(dict(metadata or {}), sort_keys=True).encode()}
        extra_fields = [f for enricher in self.enrichers for f in enricher.fields]
        self.schema = pa.schema([*RESULT_SCHEMA, *extra_fields]).with_metadata(schema_meta)
        self._file: Any = None
        self._sink: pa.NativeFile | None = None
        self._writer: pq.ParquetWriter | None = None
        self._writing: threading.Thread | None = None
        self._write_error: BaseException | None = None
        self._pending: list[pa.Table] = []
        self._pending_bytes = 0
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

    def _open(self) -> pq.ParquetWriter:
        if self._writer is None:
            parent = self.tmp_path.rpartition("/")[0]
            if parent:
                self.fs.makedirs(parent, exist_ok=True)
            self._file = self.fs.open(self.tmp_path, "wb")
            self._sink = pa.output_stream(self._file, buffer_size=SINK_BUFFER_BYTES)
            dictionary = [name for name in DICTIONARY_COLUMNS if name in self.schema.names]
            statistics = [name for name in self.schema.names if name not in UNINDEXED_COLUMNS]
            self._writer = pq.ParquetWriter(self._sink, self.schema, use_dictionary=dictionary,
                                            write_statistics=statistics)
        return self._writer

    def flush(self) -> None:
        """Start writing the buffered batches as one row group, on a thread of its own, while the caller
        goes on parsing; at most one row group is being written at a time (its rows are the only extra
        memory held), and every error of the write is raised by the next flush, `commit` or `wait`.

        Encoding and compressing a row group release the GIL, so on a machine with a second core the write
        of row group k overlaps the parse of the chunks of row group k+1 (1M OpenAI lines: ~3 s of ~12 s
        CPU). The thread lives only while its row group is written: none is left running after `commit`
        or `abort`, and one that is never joined ends by itself."""
        if self._pending:
            table = pa.concat_tables(self._pending)
            self._pending, self._pending_bytes = [], 0
            writer = self._open()
            self.wait()
            self._writing = threading.Thread(target=self._write_group, args=(writer, table),
                                             name="batchwork-parquet-row-group")
            self._writing.start()

    def _write_group(self, writer: pq.ParquetWriter, table: pa.Table) -> None:
        try:
            writer.write_table(table, row_group_size=max(table.num_rows, 1))
        except BaseException as exc:  # raised on the caller's thread by `wait`
            self._write_error = exc

    def wait(self) -> None:
        """Wait for the row group being written, if any; raise its error."""
        writing, self._writing = self._writing, None
        if writing is not None:
            writing.join()
        error, self._write_error = self._write_error, None
        if error is not None:
            raise error

    def write_batch(self, batch: pa.RecordBatch) -> pa.Table | None:
        """Append one record batch of `ITEM_SCHEMA` (enrichers fill the rest); the rows as written (None for an
        empty batch)."""
        n = batch.num_rows
        if n == 0:
            return None
        computed: dict[str, pa.Array] = {
            "provider": pa.repeat(pa.scalar(self.provider, pa.string()), n),
            "model": pa.repeat(pa.scalar(self.model, pa.string()), n),
            "attempt": pa.repeat(pa.scalar(self.attempt, pa.int32()), n),
        }
        for enricher in self.enrichers:
            computed.update(enricher(batch))
        columns = []
        for field in self.schema:
            if field.name in computed:
                columns.append(computed[field.name])
            elif field.name in batch.schema.names:
                columns.append(batch.column(field.name))
            else:
                columns.append(pa.nulls(n, field.type))
        table = pa.Table.from_arrays(columns, schema=self.schema)
        self._pending.append(table)
        self._pending_bytes += table.nbytes
        if self._pending_bytes >= ROW_GROUP_BYTES:
            self.flush()
        self.rows += n
        for entry in pc.value_counts(table.column("status")).to_pylist():
            self.counts[entry["values"]] += entry["counts"]
        return table

    def close_temp(self) -> None:
        """Write every buffered row and close the temporary file, complete (an empty file when there were no
        rows), without moving it into place; a later `write_batch` starts it anew."""
        self.flush()
        writer = self._open()
        self.wait()
        writer.close()
        if self._sink is not None:
            self._sink.close()  # flushes its buffer to the file (closing a closed stream does nothing)
        self._file.close()
        self._writer, self._sink, self._file = None, None, None

    def drain(self) -> None:
        """Write every buffered row now and raise any error of the writes (a row group being written on its
        thread included), so that a caller can fail, and abort, before it commits anything."""
        self.flush()
        self.wait()

    def commit(self) -> None:
        """Close and move the file into place (an empty file when there were no rows); on any error, abort."""
        try:
            self.close_temp()
        except BaseException:
            self.abort()
            raise
        # Local and object stores replace an existing destination in one step.
        self.fs.mv(self.tmp_path, self.path)
        parent, _, name = self.path.rpartition("/")
        # Temporary files of earlier, killed tries at this destination.
        remove_stale_temp_files(self.fs, parent, suffix=f"-{name}")

    def abort(self) -> None:
        """Drop the temporary file; the destination is left as it was."""
        self._pending, self._pending_bytes = [], 0
        with contextlib.suppress(Exception):  # the write is dropped; the error that made us abort is raised
            self.wait()
        writer, self._writer = self._writer, None
        sink, self._sink = self._sink, None
        try:
            # Closing after a failed write may fail too; the error that made us abort is the one raised.
            with contextlib.suppress(Exception):
                if writer is not None:
                    writer.close()
            with contextlib.suppress(Exception):
                if sink is not None:
                    sink.close()
        finally:
            file, self._file = self._file, None
            discard_temp(None, file, self.fs, self.tmp_path)
