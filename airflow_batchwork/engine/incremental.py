"""Incremental keyed backfills: send only new or changed rows, merge their results into the dataset by custom_id.

The dataset is a folder of plain Parquet files on any fsspec URL, bucketed by a stable hash of custom_id
(`part-b{bucket}-v{version}.parquet`, one file per bucket), whose `_SUCCESS` file (the commit protocol of
folder outputs, see engine/parquet.py) names the live files, the version and the bucket count. Every row
carries `input_fingerprint`: the request key of engine/dedup.py (a hash of the provider-facing body), so a
changed prompt, system prompt, model or option is a changed row.

Submit (`previous_rows`): the dataset's `custom_id → (input_fingerprint, status)` decides per request: a
succeeded row with the same fingerprint is *unchanged* (not sent, its row stays as it is), anything else
is *new* or *changed* (sent; a row that had not succeeded is sent again as changed).

Collect (`merge_into`), copy-on-write per bucket, in an order where `_SUCCESS` always names files that
exist: (1) the job's rows are written to a hidden staging file; (2) every bucket holding a key of the job
is rewritten, old rows of those keys replaced, to a hidden temporary file, then moved to its new
versioned name; (3) `_SUCCESS` is replaced in one move — the commit point; (4) the replaced files, the
staging file and the leftovers of killed tries are deleted. A kill before (3) leaves the previous version
committed (new files are unlisted, and hidden until moved); after (3) the new one. Either way the next
merge removes what is not listed, and retrying a merge replaces the same keys with the same rows.
Compaction is built in: a bucket is always one file, rewritten whole.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import time
import uuid
from collections.abc import Mapping
from typing import Any

import fsspec
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from airflow_batchwork.engine.dedup import CHANGE_COLUMN, KEY_COLUMN
from airflow_batchwork.engine.parquet import read_serial, serial_file
from airflow_batchwork.values.errors import BatchworkError, ConfigurationError

log = logging.getLogger(__name__)

SUCCESS = "_SUCCESS"
RUNS = "_runs"
FINGERPRINT_FIELD = pa.field("input_fingerprint", pa.string())
DEFAULT_BUCKETS = 16
TMP_PREFIX = "_batchwork-tmp-"
BUCKET_FILE = re.compile(r"^part-b(\d{3,})-v(\d{6,})\.parquet\Z")


def bucket_of(custom_id: str, buckets: int) -> int:
    """A stable bucket (the same on every machine and Python run, unlike `hash`)."""
    return int.from_bytes(hashlib.blake2b(custom_id.encode(), digest_size=4).digest(), "big") % buckets


class KeyedDataset:
    """A bucketed, keyed Parquet dataset folder (see the module text)."""

    def __init__(self, url: str, storage_options: Mapping[str, Any] | None = None) -> None:
        if not isinstance(url, str) or not url.endswith("/"):
            raise ConfigurationError("output_path", f"{url!r:.120} is not a folder URL",
                                     "an incremental dataset is a folder: end the URL with '/'")
        self.url = url
        self.fs, folder = fsspec.core.url_to_fs(url, **dict(storage_options or {}))
        self.folder = folder.rstrip("/")

    def _path(self, name: str) -> str:
        return f"{self.folder}/{name}"

    def state(self) -> dict[str, Any] | None:
        """The committed `_SUCCESS` manifest, or None for a folder that holds no committed dataset yet."""
        try:
            with self.fs.open(self._path(SUCCESS), "rb") as handle:
                state = json.loads(handle.read())
        except FileNotFoundError:
            return None
        if not isinstance(state, dict) or not isinstance(state.get("files"), list):
            raise BatchworkError(f"{self.url}{SUCCESS} is not a dataset manifest; move the folder aside")
        return state

    def files(self, state: Mapping[str, Any] | None = None) -> list[str]:
        state = self.state() if state is None else state
        return [self._path(name) for name in (state or {}).get("files", [])]

    def read(self, columns: list[str] | None = None) -> pa.Table | None:
        """The committed rows (only the files `_SUCCESS` names), or None when there is no dataset yet."""
        state = self.state()
        if state is None:
            return None
        tables = []
        for path in self.files(state):
            with self.fs.open(path, "rb") as handle:
                tables.append(read_serial(handle, columns=columns))
        return pa.concat_tables(tables, promote_options="default") if tables else None

    def previous_rows(self) -> dict[str, tuple[str | None, str | None]]:
        """custom_id → (input_fingerprint, status) of every committed row."""
        state = self.state()
        if state is None:
            return {}
        found: dict[str, tuple[str | None, str | None]] = {}
        for path in self.files(state):
            with self.fs.open(path, "rb") as handle:
                parquet = serial_file(handle)
                if FINGERPRINT_FIELD.name not in parquet.schema_arrow.names:
                    raise ConfigurationError("incremental", f"{self.url} was not written by an incremental collect "
                                             "(its rows have no input_fingerprint)",
                                             "point incremental= at the output_path of a collect with merge=True")
                table = parquet.read(columns=["custom_id", FINGERPRINT_FIELD.name, "status"], use_threads=False)
            for cid, fp, status in zip(*(table.column(c).to_pylist() for c in table.column_names), strict=True):
                found[cid] = (fp, status)
        return found

    def cost_of(self, custom_ids: pa.Array) -> float | None:
        """What the committed rows of `custom_ids` cost when they were paid for (None: no price known)."""
        table = self.read(columns=["custom_id", "cost_usd"])
        if table is None or not len(custom_ids):
            return 0.0
        rows = table.filter(pc.is_in(table.column("custom_id"), value_set=custom_ids))
        value = pc.sum(rows.column("cost_usd")).as_py()
        return None if value is None and rows.num_rows else float(value or 0.0)

    def clean(self, state: Mapping[str, Any] | None, keep: str = "") -> int:
        """Remove bucket files `_SUCCESS` does not name and temporary files (leftovers of killed tries)."""
        live = {*(state or {}).get("files", []), keep.rstrip("/").rpartition("/")[2]}
        removed = 0
        try:
            entries = self.fs.ls(self.folder, detail=False)
        except FileNotFoundError:
            return 0
        for entry in entries:
            name = entry.rstrip("/").rpartition("/")[2]
            if (BUCKET_FILE.match(name) or name.startswith(TMP_PREFIX)) and name not in live:
                self.fs.rm(self._path(name))
                removed += 1
        return removed

    def staging_url(self) -> str:
        return f"{self.url}{TMP_PREFIX}merge-{uuid.uuid4().hex[:12]}.parquet"

    def merge(self, staged_url: str, run: Mapping[str, Any], storage_options: Mapping[str, Any] | None = None,
              buckets: int = DEFAULT_BUCKETS) -> dict[str, Any]:
        """Merge the rows of the staging file into the dataset (see the module text); the run manifest."""
        fs, staged_path = fsspec.core.url_to_fs(staged_url, **dict(storage_options or {}))
        with fs.open(staged_path, "rb") as handle:
            incoming = read_serial(handle)
        state = self.state()
        removed = self.clean(state, keep=staged_path)
        if removed:
            log.info("Removed %d files of an earlier, unfinished merge from %s", removed, self.url)
        buckets = int((state or {}).get("buckets") or buckets)
        version = int((state or {}).get("version") or 0) + 1
        by_bucket: dict[int, str] = {}
        for name in (state or {}).get("files", []):
            match = BUCKET_FILE.match(name)
            if match:
                by_bucket[int(match.group(1))] = name
        ids = incoming.column("custom_id").to_pylist()
        targets = pa.array([bucket_of(cid, buckets) for cid in ids], pa.int32())
        touched = sorted(set(targets.to_pylist()))
        written: dict[int, str] = {}
        for bucket in touched:
            rows = incoming.filter(pc.equal(targets, bucket))
            old_name = by_bucket.get(bucket)
            if old_name is not None:
                with self.fs.open(self._path(old_name), "rb") as handle:
                    old = read_serial(handle)
                kept = old.filter(pc.invert(pc.is_in(old.column("custom_id"), value_set=rows.column("custom_id"))))
                rows = pa.concat_tables([kept, rows], promote_options="default")
            rows = rows.sort_by("custom_id")
            name = f"part-b{bucket:03d}-v{version:06d}.parquet"
            tmp = self._path(f"{TMP_PREFIX}{uuid.uuid4().hex[:12]}-{name}")
            with self.fs.open(tmp, "wb") as handle:
                pq.write_table(rows, handle)
            self.fs.mv(tmp, self._path(name))
            written[bucket] = name
        files = sorted({**by_bucket, **written}.values())
        total = 0
        for name in files:
            with self.fs.open(self._path(name), "rb") as handle:
                total += serial_file(handle).metadata.num_rows
        manifest = {**dict(run), "version": version, "rows": total, "files_rewritten": len(written),
                    "written_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        self._commit({"files": files, "version": version, "buckets": buckets, "rows": total, "last_run": manifest})
        for bucket, name in written.items():  # the replaced versions
            old_name = by_bucket.get(bucket)
            if old_name is not None and old_name != name:
                self.fs.rm(self._path(old_name))
        fs.rm(staged_path)
        self._write_run(manifest)
        return manifest

    def _commit(self, state: Mapping[str, Any]) -> None:
        tmp = self._path(f"{TMP_PREFIX}{uuid.uuid4().hex[:12]}-{SUCCESS}")
        with self.fs.open(tmp, "wb") as handle:
            handle.write(json.dumps(dict(state), sort_keys=True).encode())
        self.fs.mv(tmp, self._path(SUCCESS))

    def _write_run(self, manifest: Mapping[str, Any]) -> None:
        folder = self._path(RUNS)
        self.fs.makedirs(folder, exist_ok=True)
        with self.fs.open(f"{folder}/v{int(manifest['version']):06d}.json", "wb") as handle:
            handle.write(json.dumps(dict(manifest), sort_keys=True).encode())


class FingerprintEnricher:
    """The `input_fingerprint` column of a merged dataset: each row's request key, from the submitted-ids file."""

    fields = (FINGERPRINT_FIELD,)

    def __init__(self, ids: pa.Table) -> None:
        self.ids = ids.select(["custom_id", KEY_COLUMN]).combine_chunks()

    def __call__(self, items: pa.RecordBatch) -> Mapping[str, pa.Array]:
        positions = pc.index_in(items.column("custom_id"), value_set=self.ids.column("custom_id"))
        return {FINGERPRINT_FIELD.name: self.ids.column(KEY_COLUMN).take(positions)}


def unchanged_ids(ids: pa.Table) -> pa.Array:
    if CHANGE_COLUMN not in ids.column_names:
        return pa.array([], pa.string())
    return ids.filter(pc.equal(ids.column(CHANGE_COLUMN), "unchanged")).column("custom_id").combine_chunks()


def change_counts(ids: pa.Table) -> dict[str, int]:
    """How many requests of a job were new, changed and unchanged (from the submitted-ids file)."""
    counts = {"new": 0, "changed": 0, "unchanged": 0}
    if CHANGE_COLUMN in ids.column_names:
        for entry in pc.value_counts(ids.column(CHANGE_COLUMN)).to_pylist():
            if entry["values"] in counts:
                counts[entry["values"]] = entry["counts"]
    return counts


def read_ids(ids_url: str, storage_options: Mapping[str, Any] | None = None) -> pa.Table:
    fs, path = fsspec.core.url_to_fs(ids_url, **dict(storage_options or {}))
    with fs.open(path, "rb") as handle:
        parquet = serial_file(handle)
        wanted = [c for c in ("custom_id", "shard", KEY_COLUMN, CHANGE_COLUMN) if c in parquet.schema_arrow.names]
        return parquet.read(columns=wanted, use_threads=False)
