"""Checks of the destination that run before anything is paid for.

- `check_template(value, field)`: the Jinja syntax of a templated value, at DAG parse time;
- `check_output_url(url)` (from engine/parquet.py): a known scheme with an installed fsspec implementation;
- `probe_writable(url)`: write and delete a small marker where the results will go, so an unwritable
  folder or bucket fails the submit, not the collect after the batch was paid for.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

import fsspec

from airflow_batchwork.engine.parquet import check_output_url, is_directory_url
from airflow_batchwork.values.errors import ConfigurationError

PROBE_PREFIX = "_batchwork-probe-"

__all__ = ["check_output_url", "check_template", "probe_writable"]


def is_templated(value: object) -> bool:
    return isinstance(value, str) and ("{{" in value or "{%" in value)


def check_template(value: str, field: str) -> None:
    """Refuse a template that Jinja cannot parse (e.g. ``{{ ds }``), naming the field."""
    import jinja2  # installed with Airflow; the core itself does not need it

    try:
        jinja2.Environment().parse(value)
    except jinja2.TemplateSyntaxError as exc:
        raise ConfigurationError(field, f"the template {value!r} does not parse ({exc.message})",
                                 "close every {{ with }} and every {% with %}, e.g. 's3://bucket/out/{{ ds }}/'"
                                 ) from None


def probe_writable(url: str, *, storage_options: Mapping[str, Any] | None = None,
                   field: str = "output_path") -> None:
    """Write and remove a small marker file where `url`'s results will land; refuse if that fails."""
    check_output_url(url, field)
    try:
        fs, path = fsspec.core.url_to_fs(url, **dict(storage_options or {}))
        folder = path.rstrip("/") if is_directory_url(url) else path.rpartition("/")[0]
        if folder:
            fs.makedirs(folder, exist_ok=True)
        probe = f"{folder}/{PROBE_PREFIX}{uuid.uuid4().hex}" if folder else f"{PROBE_PREFIX}{uuid.uuid4().hex}"
        with fs.open(probe, "wb") as handle:
            handle.write(b"batchwork write probe\n")
        fs.rm(probe)
    except ConfigurationError:
        raise
    except Exception as exc:  # any filesystem's way of saying no: PermissionError, OSError, ClientError, …
        raise ConfigurationError(
            field, f"cannot write to {url!r} ({type(exc).__name__}: {exc})",
            "give a location the workers can write to (check the folder's permissions, the bucket name and the "
            "storage credentials in storage_options)",
        ) from None
