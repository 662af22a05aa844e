"""Submission ledgers for Airflow tasks: the run-stable identity and where its state is kept."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from airflow_batchwork.engine.ledger import FsspecLedger, SubmitLedger

STATE_KEY = "batchwork_submission"


def task_identity(dag_id: str, task_id: str, run_id: str, map_index: int | None) -> str:
    """Stable across retries of one task instance (never includes the try number)."""
    raw = "\0".join([dag_id, task_id, run_id, str(-1 if map_index is None else map_index)])
    return hashlib.sha256(raw.encode()).hexdigest()[:24]


class TaskStateStoreLedger(SubmitLedger):
    """Airflow 3.3's per-task-instance state store (`context["task_state_store"]`); survives retries."""

    def __init__(self, accessor: Any, key: str = STATE_KEY) -> None:
        self.accessor = accessor
        self.key = key

    def read(self) -> dict[str, Any] | None:
        value = self.accessor.get(self.key)
        if value is None:
            return None
        return dict(json.loads(value) if isinstance(value, str) else value)

    def write(self, state: Mapping[str, Any]) -> None:
        self.accessor.set(self.key, json.loads(json.dumps(dict(state))))


def ledger_for(context: Mapping[str, Any], identity: str, state_path: str | None,
               storage_options: Mapping[str, Any] | None = None) -> SubmitLedger | None:
    """`state_path` on any fsspec store if given, else the task state store where Airflow has one."""
    if state_path:
        return FsspecLedger(state_path, identity, storage_options=storage_options)
    accessor = context.get("task_state_store")
    if accessor is not None:
        return TaskStateStoreLedger(accessor)
    return None
