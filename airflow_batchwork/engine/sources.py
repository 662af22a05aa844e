"""Reading requests from files on any fsspec URL (`.jsonl` or `.parquet`), streaming."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import fsspec

from airflow_batchwork.engine.parquet import serial_file
from airflow_batchwork.values.errors import ConfigurationError
from airflow_batchwork.values.requests import REQUEST_FIELDS

PARQUET_BATCH_ROWS = 10_000
# A request needs one of these (see values/requests.py).
INPUT_FIELDS = frozenset({"prompt", "messages", "value"})
# Column names that usually hold the text to send, for the `columns=` suggestion.
TEXT_COLUMNS = frozenset({"text", "body", "content", "question", "input", "message", "query"})
# Key under which a source row's carried-through columns travel with its request dict.
PASSTHROUGH_KEY = "__passthrough__"


def read_requests(
    url: str,
    *,
    columns: Mapping[str, str] | None = None,
    passthrough: Sequence[str] = (),
    storage_options: Mapping[str, Any] | None = None,
) -> Iterator[dict[str, Any]]:
    """Yield request dicts from `url`. `columns` maps request fields to source columns
    (e.g. `{"prompt": "question", "custom_id": "row_id"}`); unmapped fields use their own names.
    `passthrough` source columns ride along under `PASSTHROUGH_KEY` to reappear in the results."""
    lowered = url.lower().split("?", 1)[0]
    if lowered.endswith((".jsonl", ".jsonl.gz", ".ndjson")):
        rows = _jsonl(url, storage_options)
    elif lowered.endswith(".parquet"):
        wanted = [*(columns or {}).values(), *passthrough] if columns else None
        rows = _parquet(url, wanted, storage_options)
    else:
        raise ConfigurationError("requests_path", f"cannot tell the format of {url!r}",
                                 "use a file ending in .jsonl or .parquet")
    for row in rows:
        request = _rename(row, columns, passthrough)
        if passthrough:
            request[PASSTHROUGH_KEY] = {name: row.get(name) for name in passthrough}
        yield request


def _rename(row: dict[str, Any], columns: Mapping[str, str] | None, passthrough: Sequence[str]) -> dict[str, Any]:
    if not columns:
        return {k: v for k, v in row.items() if k not in passthrough}
    out = {field: row.get(source) for field, source in columns.items()}
    return {k: v for k, v in out.items() if v is not None}


def _open(url: str, storage_options: Mapping[str, Any] | None) -> Any:
    try:
        return fsspec.open(url, "rb", compression="infer", **dict(storage_options or {})).open()
    except FileNotFoundError:
        raise ConfigurationError("requests_path", f"{url!r} does not exist", "check the path") from None


def _jsonl(url: str, storage_options: Mapping[str, Any] | None) -> Iterator[dict[str, Any]]:
    with _open(url, storage_options) as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError as exc:
                raise ConfigurationError(f"requests_path line {number}", f"not valid JSON ({exc})",
                                         "write one JSON object per line") from None
            if not isinstance(row, dict):
                raise ConfigurationError(f"requests_path line {number}", "not a JSON object",
                                         'write one object per line, e.g. {"custom_id": "a", "prompt": "…"}')
            yield row


def _parquet(url: str, wanted: Sequence[str] | None, storage_options: Mapping[str, Any] | None
             ) -> Iterator[dict[str, Any]]:
    with _open(url, storage_options) as handle:
        parquet = serial_file(handle)
        names = parquet.schema_arrow.names
        selected = list(dict.fromkeys(wanted)) if wanted else None
        missing = [c for c in selected or [] if c not in names]
        if missing:
            raise ConfigurationError("columns", f"column {missing[0]!r} is not in {url!r}",
                                     f"use one of: {', '.join(names)}")
        if selected is None and not INPUT_FIELDS & set(names):
            # Without this every row would be refused alone, as an unknown field.
            text_like = [n for n in names if n.lower() in TEXT_COLUMNS]
            other = [n for n in names if n not in REQUEST_FIELDS and not n.lower().endswith("id")]
            guess = (text_like or other or names or ["text"])[0]
            raise ConfigurationError(
                "columns", f"{url!r} has no prompt, messages or value column (columns found: {', '.join(names)})",
                f'map your columns to request fields, e.g. columns={{"prompt": "{guess}"}}',
            )
        for batch in parquet.iter_batches(batch_size=PARQUET_BATCH_ROWS, columns=selected, use_threads=False):
            for row in batch.to_pylist():
                yield {k: v for k, v in row.items() if v is not None}
