"""The collector's custom_id checks (engine/results.py) keep 64-bit hashes, not the ids: duplicates are still
dropped exactly (first result kept, across parts) and submitted ids without a result still become rows,
also when hashes collide (forced here with a hash of two values)."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from airflow_batchwork.core import BatchClient, Credentials, results
from airflow_batchwork.engine.ledger import FsspecLedger
from airflow_batchwork.testing import Emulator

REQUESTS = [{"custom_id": f"r{i:02d}", "prompt": f"item {i}"} for i in range(12)]


@pytest.fixture
def emu() -> Iterator[Emulator]:
    with Emulator(processing_seconds=0.2) as emulator:
        yield emulator


def _coarse_hashes(ids: pa.Array | pa.ChunkedArray) -> pa.Int64Array:
    """Every id hashes to 0 or 1: nearly all pairs collide."""
    return pa.array([int(v[-1]) % 2 for v in ids.to_pylist()], pa.int64())


async def _collect_with_duplicates(emu: Emulator, tmp_path: Path, name: str) -> tuple[dict, list[dict]]:
    """Three batches of four; the provider resends r01 (batch 0) and r05 in batch 1's file in place of
    r06, whose result is therefore missing."""
    async with BatchClient({"openai": Credentials("k", emu.base_url("openai"))}) as c:
        ledger = FsspecLedger(f"file://{tmp_path}/state-{name}", name)  # records the submitted ids
        job = await c.submit("openai/gpt-4o-mini", REQUESTS, limits={"max_requests": 4}, ledger=ledger)
        await c.wait(job, poll_interval=0.1, timeout=60)
        outputs = {f.result_of: f for f in emu.files("openai") if f.result_of and f.purpose == "batch_output"}
        first, second = outputs[job.batch_ids[0]], outputs[job.batch_ids[1]]
        r01 = next(line for line in first.data.splitlines() if b'"r01"' in line)
        lines = second.data.splitlines()
        lines = [r01 if b'"r06"' in line else line for line in lines]
        lines.insert(1, next(line for line in lines if b'"r05"' in line))
        edited = dataclasses.replace(second, data=b"\n".join(lines) + b"\n")
        emu.store._files[second.id] = edited
        manifest = await c.write_parquet(job, f"{tmp_path}/{name}/")
    rows = pq.read_table(tmp_path / name).to_pylist()
    return manifest, rows


async def test_duplicates_dropped_and_missing_written(emu: Emulator, tmp_path: Path) -> None:
    manifest, rows = await _collect_with_duplicates(emu, tmp_path, "out")
    ids = [r["custom_id"] for r in rows]
    assert sorted(ids) == [r["custom_id"] for r in REQUESTS]  # one row per submitted request
    assert manifest["duplicates_dropped"] == 2  # r01 again (from another part) and r05 twice
    by_id = {r["custom_id"]: r for r in rows}
    assert by_id["r06"]["status"] == "missing" and by_id["r01"]["batch_id"] == manifest["batch_ids"][0]
    assert by_id["r05"]["status"] == "succeeded"


async def test_colliding_hashes_give_the_same_rows(emu: Emulator, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    manifest, rows = await _collect_with_duplicates(emu, tmp_path, "exact")
    monkeypatch.setattr(results, "id_hashes", _coarse_hashes)
    collided, collided_rows = await _collect_with_duplicates(emu, tmp_path, "collided")
    assert collided["duplicates_dropped"] == manifest["duplicates_dropped"] == 2
    assert collided["counts"] == manifest["counts"]
    def same(row: dict) -> dict:  # a second job: other batch and request ids in the raw lines
        return {k: v for k, v in row.items() if k not in ("batch_id", "response")}

    assert [same(r) for r in collided_rows] == [same(r) for r in rows]


async def test_no_duplicates_no_rewrite(emu: Emulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Distinct hashes decide alone: the written files are never read back."""
    read_back: list[str] = []
    original = results.JobResultWriter._read_back
    monkeypatch.setattr(results.JobResultWriter, "_read_back",
                        staticmethod(lambda w: read_back.append(w.url) or original(w)))
    async with BatchClient({"openai": Credentials("k", emu.base_url("openai"))}) as c:
        job = await c.submit("openai/gpt-4o-mini", REQUESTS, limits={"max_requests": 5})
        await c.wait(job, poll_interval=0.1, timeout=60)
        manifest = await c.write_parquet(job, f"{tmp_path}/out/")
    assert manifest["rows"] == 12 and manifest["duplicates_dropped"] == 0 and not read_back
    assert sorted(pq.read_table(tmp_path / "out").column("custom_id").to_pylist()) == [r["custom_id"] for r in REQUESTS]
