"""Where a job's submission state survives a retry: written before and after every paid call.

The state names the input fingerprint and, per shard, either an intent (the create call was about
to be made) or the provider batch id. A retried submit reads it to re-attach instead of paying twice.
Reading never turns "could not read" into "absent": a broken state file stops the task.
"""

from __future__ import annotations

import json
import uuid
from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any

import fsspec

from airflow_batchwork.values.calls import CallProgress  # noqa: F401 (re-exported: its home before the layers)
from airflow_batchwork.values.errors import BatchworkError


class LedgerReadError(BatchworkError):
    """The submission state exists but cannot be read; retrying blindly could pay twice."""


class SubmitLedger(ABC):
    """State store for one submission identity."""

    #: Where the submitted custom_ids are stored for the collector, if this ledger keeps files.
    ids_url: str | None = None

    @abstractmethod
    def read(self) -> dict[str, Any] | None:
        """The saved state, or None if there is none."""

    @abstractmethod
    def write(self, state: Mapping[str, Any]) -> None:
        """Save the whole state (replacing the previous one)."""


class MemoryLedger(SubmitLedger):
    """A ledger in process memory (scripts and tests)."""

    def __init__(self) -> None:
        self.state: dict[str, Any] | None = None
        self.writes = 0

    def read(self) -> dict[str, Any] | None:
        return json.loads(json.dumps(self.state)) if self.state is not None else None

    def write(self, state: Mapping[str, Any]) -> None:
        self.state = json.loads(json.dumps(dict(state)))
        self.writes += 1


class FsspecLedger(SubmitLedger):
    """`{root}/{identity}.json` (state) and `{root}/{identity}.ids.parquet` on any fsspec URL."""

    def __init__(self, root: str, identity: str, *, storage_options: Mapping[str, Any] | None = None) -> None:
        self.root = root.rstrip("/")
        self.state_url = f"{self.root}/{identity}.json"
        self.ids_url = f"{self.root}/{identity}.ids.parquet"
        self.storage_options = dict(storage_options or {})
        self.fs, self.path = fsspec.core.url_to_fs(self.state_url, **self.storage_options)

    def read(self) -> dict[str, Any] | None:
        try:
            with self.fs.open(self.path, "rb") as handle:
                raw = handle.read()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise LedgerReadError(f"could not read submission state {self.state_url}: {exc}") from None
        try:
            state = json.loads(raw)
        except ValueError as exc:
            raise LedgerReadError(f"submission state {self.state_url} is corrupt ({exc}); inspect or delete it "
                                  "after checking the provider for running batches") from None
        if not isinstance(state, dict):
            raise LedgerReadError(f"submission state {self.state_url} is not a JSON object")
        return state

    def write(self, state: Mapping[str, Any]) -> None:
        parent = self.path.rpartition("/")[0]
        if parent:
            self.fs.makedirs(parent, exist_ok=True)
        tmp = f"{parent}/_tmp-{uuid.uuid4().hex[:12]}.json" if parent else f"_tmp-{uuid.uuid4().hex[:12]}.json"
        with self.fs.open(tmp, "wb") as handle:
            handle.write(json.dumps(dict(state), sort_keys=True).encode())
        self.fs.mv(tmp, self.path)
