"""Submit → deferral through BatchCompleteTrigger → collect, with dag.test() against the emulator."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pendulum
import pyarrow.parquet as pq
import pytest

from airflow_batchwork.core import ModelRefError
from airflow_batchwork.operators.batch import SubmitBatchOperator
from airflow_batchwork.testing import Emulator
from airflow_batchwork.testing.airflow_env import connection_env
from tests.airflow_helpers import load_dag, task_states, xcom


class PollGatedClock:
    """The emulator's clock stands still until a batch has been polled `polls` times, then jumps past the end
    of every batch: collect has to defer however slowly the machine starts tasks (no wall-clock margin)."""

    def __init__(self, emu: Emulator, polls: int = 3) -> None:
        self.emu, self.polls, self.frozen = emu, polls, time.time()

    def __call__(self) -> float:
        batch_ids = tuple(self.emu.batch_ids())
        seen = sum(1 for r in self.emu.requests if r.method == "GET" and r.path.endswith(batch_ids))
        return self.frozen if seen < self.polls else time.time() + 3600


@pytest.fixture
def slow_emulator(airflow_db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Emulator]:
    """Batches end only after the trigger has polled them three times, so collect really has to defer."""
    monkeypatch.setenv("AIRFLOW_VAR_BATCHWORK_TEST_OUTPUT", f"file://{tmp_path}")
    with Emulator(processing_seconds=4) as emu:
        emu.clock = PollGatedClock(emu)
        for key, value in connection_env(emu).items():
            monkeypatch.setenv(key, value)
        yield emu


@pytest.mark.parametrize("provider", ["openai", "anthropic", "google", "xai"])
def test_submit_defer_collect(slow_emulator: Emulator, tmp_path: Path, provider: str) -> None:
    run = load_dag(f"test_collect_{provider}").test(logical_date=pendulum.datetime(2026, 11, 20, tz="UTC"))

    assert run.state == "success"
    assert task_states(run) == {"submit": "success", "collect": "success"}
    handle = xcom(run, "submit")
    assert handle["provider"] == provider and handle["request_count"] == 3
    assert xcom(run, "submit", key="batch_ids") == [b["id"] for b in handle["batches"]]
    assert "emulator-key" not in json.dumps(handle)
    manifest = xcom(run, "collect")
    assert manifest["rows"] == 3 and manifest["path"] == f"file://{tmp_path}/2026-11-20/"
    late = "succeeded" if provider == "google" else "expired"
    assert manifest["counts"] == ({"succeeded": 2, "errored": 1} if provider == "google"
                                  else {"succeeded": 1, "errored": 1, "expired": 1})
    assert manifest["files"] == [f"file://{tmp_path}/2026-11-20/part-00000.parquet"]

    # The collect task deferred: the trigger polled the batch several times before it ended.
    batch_id = handle["batches"][0]["id"]
    polls = [r for r in slow_emulator.requests
             if r.method == "GET" and r.path.endswith(batch_id)]
    assert len(polls) >= 3

    rows = {r["custom_id"]: r for r in pq.read_table(tmp_path / "2026-11-20").to_pylist()}
    assert rows["ok"]["text"] == "echo: hello world"
    assert (rows["bad"]["status"], rows["late"]["status"]) == ("errored", late)


def test_submit_waits_then_fail_on_error(slow_emulator: Emulator, tmp_path: Path) -> None:
    run = load_dag("test_wait_fail_on_error").test()
    assert task_states(run) == {"submit": "success", "collect": "failed"}
    # The file was written before the task failed.
    assert pq.read_table(tmp_path / "out.parquet").num_rows == 3


def test_bad_model_fails_at_parse_time() -> None:
    with pytest.raises(ModelRefError, match="unknown provider 'openia'"):
        SubmitBatchOperator(task_id="s", model="openia/gpt-4o", requests=[{"prompt": "x"}])


def test_bad_request_fails_task_without_retry(slow_emulator: Emulator) -> None:
    before = len(slow_emulator.requests)
    run = load_dag("test_bad_request").test()
    assert task_states(run) == {"submit": "failed"}
    assert len(slow_emulator.requests) == before
