"""Results downloads dropped mid-stream, over real sockets: resumed with `Range: bytes=N-` where the real
provider serves byte ranges (Gemini's `files/...:download?alt=media`, a Google media download; the emulator
serves ranges only there, `ProviderSpec.byte_ranges`), else restarted with the delivered bytes skipped
(OpenAI's output-file content, whose ranged serving is not documented). Either way the rows are complete
and none is duplicated."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pyarrow.parquet as pq
import pytest

from airflow_batchwork.adapters.http import RetryPolicy
from airflow_batchwork.core import BatchClient, Credentials
from airflow_batchwork.engine.parquet import committed_files
from airflow_batchwork.testing import Emulator
from airflow_batchwork.testing.faults import FaultConfig

MODELS = {"google": "google/gemini-2.5-flash", "openai": "openai/gpt-4o-mini"}
DOWNLOAD = {"google": ":download", "openai": "/content"}
N = 60
FAST = RetryPolicy(base_delay=0.02, max_delay=0.2, max_elapsed=120)


@pytest.fixture
def emu() -> Iterator[Emulator]:
    with Emulator(processing_seconds=0.2) as emulator:
        yield emulator


def rows_of(folder: str) -> list[tuple[Any, ...]]:
    files = committed_files(folder)
    assert files is not None
    table = pq.read_table(files)
    return sorted(zip(table.column("custom_id").to_pylist(), table.column("status").to_pylist(),
                      table.column("text").to_pylist(), strict=True))


async def _dropped_download(emu: Emulator, provider: str, tmp_path: Path) -> tuple[list[Any], list[Any], list[Any]]:
    """Collect a finished one-batch job twice: undisturbed, then with its results download dropped part-way.
    Returns both row lists and the request records of the second collect."""
    requests = [{"custom_id": f"g{i:04d}", "prompt": f"range item {i} " * 8} for i in range(N)]
    async with BatchClient({provider: Credentials("k", emu.base_url(provider))}, retry=FAST) as client:
        if provider == "google":
            client.adapter("google").inline_max_bytes = 0  # type: ignore[attr-defined]  # a responses file
        job = await client.submit(MODELS[provider], requests)
        await client.wait(job, poll_interval=0.1, timeout=60)
        mine = [r for r in emu.requests if r.provider == provider]
        await client.write_parquet(job, f"{tmp_path}/clean/")
        collect = [r for r in emu.requests if r.provider == provider][len(mine):]
        position = next(i for i, r in enumerate(collect, 1) if r.path.endswith(DOWNLOAD[provider]))
        # The emulator counts a provider's requests from its start: the position-th request of the next
        # collect is the download, dropped after half its body; the next drop would come far later.
        done = len([r for r in emu.requests if r.provider == provider])
        emu.faults = FaultConfig(drop_connection_every=done + position, providers=provider)
        try:
            await client.write_parquet(job, f"{tmp_path}/dropped/")
        finally:
            emu.faults = FaultConfig()
        second = [r for r in emu.requests if r.provider == provider][done:]
    return rows_of(f"{tmp_path}/clean/"), rows_of(f"{tmp_path}/dropped/"), second


async def test_dropped_gemini_download_resumes_with_a_range_request(emu: Emulator, tmp_path: Path) -> None:
    clean, dropped, log = await _dropped_download(emu, "google", tmp_path)
    downloads = [r for r in log if r.path.endswith(":download")]
    assert downloads[0].fault == "drop_connection"  # the first download was cut mid-body
    assert [r.status_code for r in downloads[1:]] == [206]  # resumed once, from the byte it stopped at
    assert len(dropped) == N and len({r[0] for r in dropped}) == N  # complete, none duplicated
    assert {r[1] for r in dropped} == {"succeeded"} and dropped == clean


async def test_dropped_openai_download_restarts_and_skips(emu: Emulator, tmp_path: Path) -> None:
    clean, dropped, log = await _dropped_download(emu, "openai", tmp_path)
    downloads = [r for r in log if r.path.endswith("/content")]
    assert downloads[0].fault == "drop_connection"
    assert [r.status_code for r in downloads[1:]] == [200]  # no ranges there: the whole file again
    assert len(dropped) == N and len({r[0] for r in dropped}) == N
    assert {r[1] for r in dropped} == {"succeeded"} and dropped == clean


async def test_emulator_serves_ranges_only_where_opted_in(emu: Emulator, tmp_path: Path) -> None:
    async with BatchClient({"google": Credentials("k", emu.base_url("google")),
                            "openai": Credentials("k", emu.base_url("openai"))}) as client:
        client.adapter("google").inline_max_bytes = 0  # type: ignore[attr-defined]
        for provider, model in MODELS.items():
            job = await client.submit(model, [{"custom_id": "a1", "prompt": "hello there"}])
            await client.wait(job, poll_interval=0.1, timeout=60)
            await client.write_parquet(job, f"{tmp_path}/{provider}.parquet")
    origin = emu.base_url("openai").split("/", 3)
    paths = {p: next(r.path for r in emu.requests if r.provider == p and r.path.endswith(DOWNLOAD[p]))
             for p in MODELS}
    url = f"{origin[0]}//{origin[2]}{paths['google']}"
    async with httpx.AsyncClient(headers={"x-goog-api-key": "k", "authorization": "Bearer k"}) as http:
        whole = await http.get(url, params={"alt": "media"})
        assert whole.status_code == 200 and whole.headers["accept-ranges"] == "bytes" and whole.content
        etag = whole.headers["etag"]
        part = await http.get(url, params={"alt": "media"}, headers={"range": "bytes=10-", "if-range": etag})
        assert part.status_code == 206 and part.content == whole.content[10:]
        assert part.headers["content-range"] == f"bytes 10-{len(whole.content) - 1}/{len(whole.content)}"
        stale = await http.get(url, params={"alt": "media"}, headers={"range": "bytes=10-", "if-range": '"x"'})
        assert stale.status_code == 200 and stale.content == whole.content
        past = await http.get(url, params={"alt": "media"}, headers={"range": f"bytes={len(whole.content)}-"})
        assert past.status_code == 416
        meta = await http.get(url)  # the file's metadata, not media: no ranges
        assert meta.status_code == 200 and "accept-ranges" not in meta.headers
        plain = await http.get(f"{origin[0]}//{origin[2]}{paths['openai']}", headers={"range": "bytes=5-"})
        assert plain.status_code == 200 and "accept-ranges" not in plain.headers and len(plain.content) > 5
