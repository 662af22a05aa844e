"""Incremental keyed backfills against the emulator over real sockets: only new and changed rows are sent,
their results merged by custom_id into the dataset, atomically; a merge that dies at any step leaves the
dataset valid, and retrying it gives the right dataset."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from fsspec.implementations.local import LocalFileSystem

from airflow_batchwork.core import BatchClient, ConfigurationError, Credentials, JobHandle
from airflow_batchwork.engine.incremental import KeyedDataset
from airflow_batchwork.engine.ledger import FsspecLedger
from airflow_batchwork.engine.sources import read_requests
from airflow_batchwork.testing import Emulator

MODEL = "openai/gpt-4o-mini"
COLUMNS = {"custom_id": "id", "prompt": "text"}


def write_source(path: Path, n: int, changed: range = range(0), added: int = 0) -> list[dict[str, Any]]:
    rows = [{"id": f"k{i:05d}", "text": f"describe item {i}" + (" again" if i in changed else "")} for i in range(n)]
    rows += [{"id": f"new{i}", "text": f"new item {i}"} for i in range(added)]
    pq.write_table(pa.Table.from_pylist(rows), path)
    return rows


def client_for(emulator: Emulator) -> BatchClient:
    return BatchClient({"openai": Credentials(api_key="k", base_url=emulator.base_url("openai"))})


async def submit(client: BatchClient, tmp_path: Path, source: Path, dataset: str, name: str) -> JobHandle:
    return await client.submit(MODEL, read_requests(str(source), columns=COLUMNS), incremental=dataset,
                               ledger=FsspecLedger(f"{tmp_path}/state", name), identity=name)


async def backfill(emulator: Emulator, tmp_path: Path, source: Path, dataset: str, name: str,
                   **collect: Any) -> tuple[JobHandle, dict[str, Any]]:
    async with client_for(emulator) as client:
        job = await submit(client, tmp_path, source, dataset, name)
        await client.wait(job, poll_interval=0.1, timeout=120)
        manifest = await client.write_parquet(job, dataset, merge=True, **collect)
    return job, manifest


def rows_of(dataset: str) -> dict[str, dict[str, Any]]:
    table = KeyedDataset(dataset).read()
    assert table is not None
    rows = {r["custom_id"]: r for r in table.to_pylist()}
    assert len(rows) == table.num_rows  # one row per custom_id
    return rows


async def test_10000_rows_then_10_changed_and_5_added_submits_exactly_15(
        emulator: Emulator, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    dataset = f"{tmp_path}/enriched/"
    write_source(tmp_path / "v1.parquet", 10_000)
    job1, manifest1 = await backfill(emulator, tmp_path, tmp_path / "v1.parquet", dataset, "v1")
    assert sum(b.request_count for b in job1.batches) == 10_000 and manifest1["rows"] == 10_000
    before = rows_of(dataset)

    changed = range(0, 1000, 100)  # 10 rows
    write_source(tmp_path / "v2.parquet", 10_000, changed=changed, added=5)
    caplog.set_level(logging.INFO, logger="airflow_batchwork")
    job2, manifest2 = await backfill(emulator, tmp_path, tmp_path / "v2.parquet", dataset, "v2")
    # The lines docs/pay-once.md shows.
    assert "15 of 10,005 requests to send; 5 new, 10 changed, 9,990 unchanged since the last run" in caplog.text
    assert f"Merged 15 rows into {dataset} (5 new, 10 changed, 9990 unchanged, not sent again: $0.01 saved); " \
           "the dataset has 10005 rows" in caplog.text
    [batch] = [b for b in emulator.batches("openai") if b.id in job2.batch_ids]
    assert len(batch.items) == 15 and sum(b.request_count for b in job2.batches) == 15
    run = manifest2["incremental"]
    assert (run["new"], run["changed"], run["unchanged"], run["submitted"]) == (5, 10, 9_990, 15)
    assert manifest2["rows"] == run["rows"] == 10_005 and manifest2["unaccounted"] == 0

    after = rows_of(dataset)
    assert len(after) == 10_005
    for i in changed:
        row = after[f"k{i:05d}"]
        assert row["text"] == f"echo: describe item {i} again" and row["batch_id"] == job2.batch_ids[0]
        assert row["input_fingerprint"] != before[f"k{i:05d}"]["input_fingerprint"]
    for i in range(5):
        assert after[f"new{i}"]["text"] == f"echo: new item {i}"
    untouched = [f"k{i:05d}" for i in range(10_000) if i not in changed]
    assert all(after[k] == before[k] for k in untouched)
    # What the rows not sent again had cost is the saving the run manifest reports.
    assert run["unchanged_cost_usd"] == pytest.approx(sum(before[k]["cost_usd"] for k in untouched))
    assert run["saved_usd"] == pytest.approx(run["unchanged_cost_usd"]) and run["unchanged_cost_usd"] > 0
    # The run manifest is kept with the dataset, and _SUCCESS names exactly the live files.
    saved = json.loads((tmp_path / "enriched" / "_runs" / "v000002.json").read_text())
    assert (saved["new"], saved["changed"], saved["unchanged"], saved["rows"]) == (5, 10, 9_990, 10_005)
    listed = json.loads((tmp_path / "enriched" / "_SUCCESS").read_text())["files"]
    assert sorted(p.name for p in (tmp_path / "enriched").glob("part-*.parquet")) == sorted(listed)
    # The folder commit protocol's reader (engine/parquet.py) reads exactly those files.
    from airflow_batchwork.engine.parquet import committed_files
    assert sorted(committed_files(dataset) or []) == sorted(f"{dataset}{name}" for name in listed)
    # A plain Parquet reader sees the same dataset (no leftovers).
    assert pq.read_table(tmp_path / "enriched").num_rows == 10_005

    # A third run with the same input sends nothing.
    async with client_for(emulator) as client:
        job3 = await submit(client, tmp_path, tmp_path / "v2.parquet", dataset, "v3")
        assert job3.batches == []
        manifest3 = await client.write_parquet(job3, dataset, merge=True)
    assert manifest3["incremental"]["unchanged"] == 10_005 and manifest3["rows"] == 10_005
    assert rows_of(dataset) == after


async def test_rows_that_did_not_succeed_are_sent_again(emulator: Emulator, tmp_path: Path) -> None:
    dataset = f"{tmp_path}/d/"
    pq.write_table(pa.Table.from_pylist([{"id": "ok", "text": "fine"}, {"id": "bad", "text": "x [[error]]"}]),
                   tmp_path / "in.parquet")
    await backfill(emulator, tmp_path, tmp_path / "in.parquet", dataset, "one")
    job, manifest = await backfill(emulator, tmp_path, tmp_path / "in.parquet", dataset, "two")
    assert sum(b.request_count for b in job.batches) == 1
    assert (manifest["incremental"]["changed"], manifest["incremental"]["unchanged"]) == (1, 1)


async def test_merge_needs_an_incremental_submit(emulator: Emulator, tmp_path: Path) -> None:
    async with client_for(emulator) as client:
        job = await client.submit(MODEL, [{"custom_id": "a", "prompt": "x"}])
        await client.wait(job, poll_interval=0.1, timeout=60)
        with pytest.raises(ConfigurationError, match="merge"):
            await client.write_parquet(job, f"{tmp_path}/d/", merge=True)
        with pytest.raises(ConfigurationError, match="folder"):
            await client.write_parquet(job, f"{tmp_path}/d.parquet", merge=True)
        with pytest.raises(ConfigurationError, match="state_path"):
            await client.submit(MODEL, [{"custom_id": "a", "prompt": "x"}], incremental=f"{tmp_path}/d/")


# --- a merge that dies part-way -------------------------------------------------------------------------
class Killed(BaseException):
    """Stands for the process dying: nothing after it runs (merge has no cleanup handlers to run)."""


class DyingFS(LocalFileSystem):
    """The local filesystem, dying at its Nth change (a move or a delete) under the dataset folder."""

    protocol = ("dying",)
    root_marker = "/"
    die_at = 0
    changes = 0

    @classmethod
    def _strip_protocol(cls, path: str) -> str:  # type: ignore[override]
        return super()._strip_protocol(path.removeprefix("dying://"))

    def _change(self, path: object) -> None:
        if "/dataset/" in str(path):
            DyingFS.changes += 1
            if DyingFS.changes == DyingFS.die_at:
                raise Killed(f"killed at change {DyingFS.changes}: {path}")

    def mv(self, path1: Any, path2: Any, *args: Any, **kwargs: Any) -> None:
        self._change(path2)
        super().mv(path1, path2, *args, **kwargs)

    def rm(self, path: Any, *args: Any, **kwargs: Any) -> None:
        self._change(path)
        super().rm(path, *args, **kwargs)


fsspec.register_implementation("dying", DyingFS, clobber=True)


async def test_a_merge_killed_at_any_step_leaves_the_dataset_valid(emulator: Emulator, tmp_path: Path) -> None:
    dataset = f"dying://{tmp_path}/dataset/"
    write_source(tmp_path / "v1.parquet", 300)
    DyingFS.die_at = 0
    await backfill(emulator, tmp_path, tmp_path / "v1.parquet", dataset, "base")
    old = rows_of(dataset)
    write_source(tmp_path / "v2.parquet", 300, changed=range(0, 300, 30), added=5)

    async with client_for(emulator) as client:
        job = await submit(client, tmp_path, tmp_path / "v2.parquet", dataset, "change")
        await client.wait(job, poll_interval=0.1, timeout=60)
        expected: dict[str, dict[str, Any]] | None = None
        step = 1
        outcomes = set()
        while True:
            # Restore the base version, then kill the merge at change number `step`.
            base = tmp_path / "dataset"
            if step == 1:
                pristine = tmp_path / "pristine"
                fsspec.filesystem("file").cp(str(base), str(pristine), recursive=True)
            fsspec.filesystem("file").rm(str(base), recursive=True)
            fsspec.filesystem("file").cp(str(tmp_path / "pristine"), str(base), recursive=True)
            DyingFS.changes, DyingFS.die_at = 0, step
            try:
                await client.write_parquet(job, dataset, merge=True)
            except Killed:
                current = rows_of(dataset)  # valid at every step: one committed version, readable
                assert len(current) in (300, 305)
                outcomes.add(len(current))
                if len(current) == 300:
                    assert current == old
                # The retried collect finishes the job: exactly the merged dataset, no leftovers.
                DyingFS.changes, DyingFS.die_at = 0, 0
                await client.write_parquet(job, dataset, merge=True)
                merged = rows_of(dataset)
                if expected is None:
                    expected = merged
                assert merged == expected and len(merged) == 305
                listed = json.loads((base / "_SUCCESS").read_text())["files"]
                assert sorted(p.name for p in base.iterdir() if p.name.startswith(("part-", "_batchwork-tmp"))) \
                    == sorted(listed)
                step += 1
                continue
            break  # the merge ran to the end without reaching change number `step`
    assert step > 5 and outcomes == {300, 305}  # it was killed before and after its commit point
    assert expected is not None
    for i in range(0, 300, 30):
        assert expected[f"k{i:05d}"]["text"] == f"echo: describe item {i} again"
