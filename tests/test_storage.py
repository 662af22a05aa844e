"""The same job written to file://, memory:// and s3:// (a local moto server) reads back identical."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from airflow_batchwork.core import BatchClient, Credentials
from airflow_batchwork.testing import Emulator


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def s3_options() -> Iterator[dict[str, Any]]:
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    options = {"key": "testing", "secret": "testing",
               "client_kwargs": {"endpoint_url": f"http://127.0.0.1:{port}", "region_name": "us-east-1"}}
    import boto3

    boto3.client("s3", endpoint_url=f"http://127.0.0.1:{port}", region_name="us-east-1",
                 aws_access_key_id="testing", aws_secret_access_key="testing").create_bucket(Bucket="results-bucket")
    yield options
    server.stop()


def read(url: str, options: dict[str, Any] | None = None) -> pa.Table:
    fs, path = fsspec.core.url_to_fs(url, **(options or {}))
    with fs.open(path, "rb") as handle:
        return pq.read_table(handle)


async def test_file_memory_s3_identical(emulator: Emulator, tmp_path: Path, s3_options: dict[str, Any]) -> None:
    creds = {"openai": Credentials("k", emulator.base_url("openai"))}
    async with BatchClient(creds) as client:
        job = await client.submit("openai/gpt-4o-mini", [
            {"custom_id": "a", "prompt": "first one"}, {"custom_id": "b", "prompt": "second [[error]]"},
        ])
        await client.wait(job, poll_interval=0.1, timeout=30)
        targets = {
            "file": (f"file://{tmp_path}/r.parquet", None),
            "memory": ("memory://batchwork-test/r.parquet", None),
            "s3": ("s3://results-bucket/evals/2026-11-20/r.parquet", s3_options),
        }
        for url, options in targets.values():
            manifest = await client.write_parquet(job, url, storage_options=options)
            assert manifest["rows"] == 2

    tables = {name: read(url, options).sort_by("custom_id") for name, (url, options) in targets.items()}
    assert tables["file"].equals(tables["memory"])
    assert tables["file"].equals(tables["s3"])
    assert tables["file"].schema.metadata == tables["s3"].schema.metadata
    # No temporary file is left next to the result.
    s3 = fsspec.filesystem("s3", **s3_options)
    assert s3.ls("results-bucket/evals/2026-11-20/") == ["results-bucket/evals/2026-11-20/r.parquet"]


async def test_failed_write_leaves_no_file(emulator: Emulator, tmp_path: Path) -> None:
    creds = {"openai": Credentials("k", emulator.base_url("openai"))}
    async with BatchClient(creds) as client:
        job = await client.submit("openai/gpt-4o-mini", [{"prompt": "x"}])
        await client.wait(job, poll_interval=0.1, timeout=30)
        gone = job.batches[0].model_copy(update={"id": "batch_gone"})
        broken = job.model_copy(update={"batches": [*job.batches, gone]})
        with pytest.raises(Exception, match="404"):
            await client.write_parquet(broken, f"{tmp_path}/out.parquet")
    assert list(tmp_path.iterdir()) == []


async def test_rewrite_overwrites_not_appends(emulator: Emulator, tmp_path: Path) -> None:
    creds = {"openai": Credentials("k", emulator.base_url("openai"))}
    async with BatchClient(creds) as client:
        job = await client.submit("openai/gpt-4o-mini", [{"prompt": "x"}, {"prompt": "y"}])
        await client.wait(job, poll_interval=0.1, timeout=30)
        for _ in range(2):
            await client.write_parquet(job, f"{tmp_path}/dir/")
    assert pq.read_table(tmp_path / "dir").num_rows == 2
    assert sorted(p.name for p in (tmp_path / "dir").iterdir()) == ["_SUCCESS", "part-00000.parquet"]


def test_small_batches_become_few_large_row_groups(tmp_path: Path) -> None:
    """Hundreds of parsed chunks make one row group per ~16 MB of data, not one per chunk."""
    from airflow_batchwork.engine.parquet import ROW_GROUP_BYTES, ParquetResultWriter, items_to_batch
    from airflow_batchwork.values.status import ItemResult

    text = "x" * 2_000
    chunks = 200
    with ParquetResultWriter(str(tmp_path / "out.parquet"), provider="openai", model="openai.chat/m") as writer:
        for chunk in range(chunks):
            items = [ItemResult(custom_id=f"c{chunk}-{i}", status="succeeded", text=text, batch_id="b",
                                response="{}")
                     for i in range(100)]
            writer.write_batch(items_to_batch(items))
    meta = pq.ParquetFile(tmp_path / "out.parquet").metadata
    data_bytes = chunks * 100 * len(text)
    assert meta.num_rows == chunks * 100
    assert meta.num_row_groups <= data_bytes // ROW_GROUP_BYTES + 1 < chunks // 10
    table = pq.read_table(tmp_path / "out.parquet", columns=["custom_id", "text"])
    assert table.column("custom_id").to_pylist()[:2] == ["c0-0", "c0-1"]
    assert table.column("custom_id").to_pylist()[-1] == f"c{chunks - 1}-99"


def _big_batches(count: int) -> Iterator[pa.RecordBatch]:
    from airflow_batchwork.engine.parquet import ROW_GROUP_BYTES, items_to_batch
    from airflow_batchwork.values.status import ItemResult

    text = "x" * 2_000
    per_batch = ROW_GROUP_BYTES // len(text) // 2 + 1  # two batches fill a row group
    for b in range(count):
        yield items_to_batch([ItemResult(custom_id=f"c{b}-{i}", status="succeeded", text=text, batch_id="b",
                                         response="{}") for i in range(per_batch)])


def test_a_row_group_is_written_while_the_next_fills_and_its_error_reaches_commit(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A full row group is written off the caller's thread (the caller goes on with the next rows while the
    writer encodes and compresses it); every row lands, in order; and a failed write is raised by `commit`
    with the destination untouched and no temporary file left."""
    import threading

    from airflow_batchwork.engine.parquet import ParquetResultWriter

    real = pq.ParquetWriter.write_table
    entered, release = threading.Event(), threading.Event()
    released: list[bool] = []

    def held(self: pq.ParquetWriter, table: pa.Table, row_group_size: int | None = None) -> None:
        entered.set()
        # Held until the caller, back from `write_batch`, has gone on (a bounded wait, not a timing: written on
        # the caller's own thread, this wait could only end by running out).
        released.append(release.wait(20))
        real(self, table, row_group_size=row_group_size)

    monkeypatch.setattr(pq.ParquetWriter, "write_table", held)
    batches = list(_big_batches(6))
    try:
        with ParquetResultWriter(str(tmp_path / "out.parquet"), provider="openai", model="openai.chat/m") as writer:
            for k, batch in enumerate(batches):
                writer.write_batch(batch)
                if k == 1:  # the first row group is full: its write started and is held
                    assert entered.wait(20)
                    release.set()
    finally:
        release.set()
    assert released[0] is True
    table = pq.read_table(tmp_path / "out.parquet", columns=["custom_id"])
    assert table.column("custom_id").to_pylist() == [i for b in batches for i in b.column("custom_id").to_pylist()]
    assert pq.ParquetFile(tmp_path / "out.parquet").metadata.num_row_groups == 3

    def failing(self: pq.ParquetWriter, table: pa.Table, row_group_size: int | None = None) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(pq.ParquetWriter, "write_table", failing)
    failing_writer = ParquetResultWriter(str(tmp_path / "out.parquet"), provider="openai", model="openai.chat/m")
    with pytest.raises(OSError, match="disk full"), failing_writer:  # raised by commit, the with's exit
        for batch in batches[:2]:
            failing_writer.write_batch(batch)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.parquet"]  # the first file, as it was
    assert pq.read_table(tmp_path / "out.parquet").num_rows == table.num_rows
