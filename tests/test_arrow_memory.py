"""A collect allocates its Arrow data from jemalloc and leaves the process's default pool as it found it."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, ClassVar

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from fsspec.implementations.local import LocalFileSystem

from airflow_batchwork.core import BatchClient, Credentials
from airflow_batchwork.testing import Emulator

try:
    pa.jemalloc_memory_pool()
except NotImplementedError:  # pyarrow builds without jemalloc (not its Linux wheels) keep their default
    pytest.skip("this pyarrow has no jemalloc", allow_module_level=True)

REQUESTS = [{"custom_id": f"r{i}", "prompt": f"hello {i}"} for i in range(20)]


class PoolWatchingFileSystem(LocalFileSystem):
    """Local files under `poolwatch://`; notes Arrow's default pool each time the collect opens one."""

    protocol = "poolwatch"
    pools: ClassVar[list[str]] = []

    def _open(self, path: str, mode: str = "rb", **kwargs: Any) -> Any:
        if "w" in mode:
            self.pools.append(pa.default_memory_pool().backend_name)
        return super()._open(path, mode, **kwargs)


@pytest.fixture
def watched() -> list[str]:
    fsspec.register_implementation("poolwatch", PoolWatchingFileSystem, clobber=True)
    PoolWatchingFileSystem.pools.clear()
    return PoolWatchingFileSystem.pools


async def _job(client: BatchClient) -> Any:
    job = await client.submit("openai/gpt-4o-mini", REQUESTS)
    await client.wait(job, poll_interval=0.1, timeout=30)
    return job


def _client(emulator: Emulator) -> BatchClient:
    return BatchClient({"openai": Credentials(api_key="k", base_url=emulator.base_url("openai"))})


async def test_a_collect_writes_from_jemalloc_and_restores_the_default(emulator: Emulator, tmp_path: Path,
                                                                      watched: list[str]) -> None:
    before = pa.default_memory_pool().backend_name
    assert before != "jemalloc"  # the wheel's default (mimalloc), so the switch is visible
    async with _client(emulator) as client:
        job = await _job(client)
        manifest = await client.write_parquet(job, f"poolwatch://{tmp_path}/out.parquet")
    assert manifest["rows"] == 20 and pq.read_table(tmp_path / "out.parquet").num_rows == 20
    assert watched and set(watched) == {"jemalloc"}
    assert pa.default_memory_pool().backend_name == before


async def test_concurrent_collects_restore_the_default_once_both_end(emulator: Emulator, tmp_path: Path,
                                                                    watched: list[str]) -> None:
    before = pa.default_memory_pool().backend_name
    async with _client(emulator) as client:
        jobs = [await _job(client), await _job(client)]
        manifests = await asyncio.gather(*(client.write_parquet(job, f"poolwatch://{tmp_path}/{i}/")
                                           for i, job in enumerate(jobs)))
    assert [m["rows"] for m in manifests] == [20, 20]
    assert len(watched) >= 2 and set(watched) == {"jemalloc"}
    assert pa.default_memory_pool().backend_name == before


async def test_a_failed_collect_restores_the_default(emulator: Emulator, tmp_path: Path) -> None:
    before = pa.default_memory_pool().backend_name
    async with _client(emulator) as client:
        job = await _job(client)
        broken = job.model_copy(update={"batches": [b.model_copy(update={"id": "batch_nope"}) for b in job.batches]})
        with pytest.raises(Exception, match="batch_nope"):
            await client.write_parquet(broken, f"{tmp_path}/out.parquet")
    assert pa.default_memory_pool().backend_name == before
    assert not (tmp_path / "out.parquet").exists()


async def test_a_pool_chosen_by_environment_is_kept(emulator: Emulator, tmp_path: Path, watched: list[str],
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ARROW_DEFAULT_MEMORY_POOL", "mimalloc")
    before = pa.default_memory_pool().backend_name
    async with _client(emulator) as client:
        job = await _job(client)
        await client.write_parquet(job, f"poolwatch://{tmp_path}/out.parquet")
    assert watched and set(watched) == {before}
