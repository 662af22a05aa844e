"""The commit protocol of folder outputs, reruns that own their output, and downloads that never end
silently short (redirects, short streams) — over real sockets: the emulator, and for redirects a small
forwarding proxy in front of it that answers the result download with a redirect."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import httpx
import pyarrow.parquet as pq
import pytest

from airflow_batchwork.adapters.openai import OpenAIAdapter
from airflow_batchwork.core import BatchClient, Credentials
from airflow_batchwork.engine.parquet import SUCCESS_NAME, TMP_PREFIX, ParquetResultWriter, committed_files
from airflow_batchwork.engine.results import IncompleteResultsError
from airflow_batchwork.testing import Emulator
from airflow_batchwork.values.errors import UnsafeResponseError

MODEL = "openai/gpt-4o-mini"


def reqs(n: int, tag: str = "x") -> list[dict[str, Any]]:
    return [{"custom_id": f"{tag}{i:04d}", "prompt": f"{tag} {i}"} for i in range(n)]


@pytest.fixture(scope="module")
def emu() -> Iterator[Emulator]:
    with Emulator(processing_seconds=0.2) as emulator:
        yield emulator


async def submitted(client: BatchClient, n: int, shards: int, tag: str) -> dict[str, Any]:
    job = await client.submit(MODEL, reqs(n, tag), limits={"max_requests": n // shards})
    await client.wait(job, poll_interval=0.1, timeout=60)
    return job.to_dict()


async def test_rerun_with_fewer_shards_leaves_exactly_the_new_rows(emu: Emulator, tmp_path: Path) -> None:
    out = f"{tmp_path}/out/"
    async with BatchClient({"openai": Credentials("k", emu.base_url("openai"))}) as client:
        first = await submitted(client, 30, 3, "a")
        await client.write_parquet(first, out)
        assert pq.read_table(tmp_path / "out").num_rows == 30
        second = await submitted(client, 20, 2, "b")
        manifest = await client.write_parquet(second, out)
    names = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert names == [SUCCESS_NAME, "part-00000.parquet", "part-00001.parquet"]
    # A plain folder read (no protocol) and the protocol read both see exactly the new job's rows.
    for table in (pq.read_table(tmp_path / "out"), pq.read_table(committed_files(out))):
        assert sorted(table.column("custom_id").to_pylist()) == [f"b{i:04d}" for i in range(20)]
    assert manifest["rows"] == 20 and manifest["success_marker"].endswith(SUCCESS_NAME)


async def test_earlier_tries_temp_files_are_removed(emu: Emulator, tmp_path: Path) -> None:
    folder = tmp_path / "out"
    folder.mkdir()
    # What killed tries leave behind: temp parts, a temp marker, and a temp single-file output next door.
    for name in (f"{TMP_PREFIX}0123456789ab-part-00000.parquet", f"{TMP_PREFIX}ba9876543210-part-00007.parquet",
                 f"{TMP_PREFIX}aaaaaaaaaaaa-{SUCCESS_NAME}"):
        (folder / name).write_bytes(b"partial")
    (tmp_path / f"{TMP_PREFIX}cccccccccccc-single.parquet").write_bytes(b"partial")
    (tmp_path / f"{TMP_PREFIX}dddddddddddd-other.parquet").write_bytes(b"someone else's")
    async with BatchClient({"openai": Credentials("k", emu.base_url("openai"))}) as client:
        job = await submitted(client, 10, 2, "t")
        await client.write_parquet(job, f"{folder}/")
        await client.write_parquet(job, f"{tmp_path}/single.parquet")
    assert sorted(p.name for p in folder.iterdir()) == [SUCCESS_NAME, "part-00000.parquet", "part-00001.parquet"]
    leftovers = sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(TMP_PREFIX))
    assert leftovers == [f"{TMP_PREFIX}dddddddddddd-other.parquet"]  # only this destination's temp files


async def test_marker_is_absent_while_parts_are_moved(emu: Emulator, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """Readers that wait for `_SUCCESS` never see a mix: it is removed before the first part moves and
    written after the last, and the earlier complete dataset stays readable until then."""
    out = f"{tmp_path}/out/"
    seen: list[list[str] | None] = []
    original = ParquetResultWriter.commit

    def spying_commit(self: ParquetResultWriter) -> None:
        seen.append(committed_files(out))
        original(self)

    async with BatchClient({"openai": Credentials("k", emu.base_url("openai"))}) as client:
        first = await submitted(client, 30, 3, "m")
        await client.write_parquet(first, out)
        second = await submitted(client, 20, 2, "n")
        monkeypatch.setattr(ParquetResultWriter, "commit", spying_commit)
        await client.write_parquet(second, out)
    assert seen == [None, None]
    assert len(pq.read_table(committed_files(out))) == 20


class Proxy(ThreadingHTTPServer):
    """Forwards every request to the emulator, except OpenAI result downloads (`/files/<id>/content`),
    which it answers as `mode` says: a redirect to `location` (same-origin `/real…` paths are then
    forwarded), or the real content cut to its first half."""

    mode: str = "redirect"
    location: str = ""
    signing_key: str | None = None
    """As a download host: the key it uses itself upstream (a pre-signed URL needs none from the client)."""
    received: ClassVar[list[dict[str, str]]] = []

    def __init__(self, upstream: str) -> None:
        super().__init__(("127.0.0.1", 0), ProxyHandler)
        self.upstream = upstream.rstrip("/")
        self.daemon_threads = True

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class ProxyHandler(BaseHTTPRequestHandler):
    server: Proxy

    def log_message(self, *args: Any) -> None:
        pass

    def _forward(self, path: str) -> None:
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length) if length else None
        headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "content-length")}
        if self.server.signing_key and not self.headers.get("authorization"):
            headers["authorization"] = f"Bearer {self.server.signing_key}"
        with httpx.Client() as http:
            answer = http.request(self.command, self.server.upstream + path, content=body, headers=headers)
        content = answer.content
        if self.server.mode == "truncate" and path.endswith("/content"):
            lines = content.split(b"\n")
            content = b"\n".join(lines[: len(lines) // 2]) + b"\n"
        self.send_response(answer.status_code)
        self.send_header("content-type", answer.headers.get("content-type", "application/json"))
        self.send_header("content-length", str(len(content)))
        self.end_headers()
        self.wfile.write(content)

    def _handle(self) -> None:
        path = self.path
        if path.startswith("/real"):
            self.server.received.append({"path": path, "authorization": self.headers.get("authorization", "")})
            return self._forward(path.removeprefix("/real"))
        if self.server.mode == "redirect" and path.endswith("/content"):
            self.send_response(302)
            self.send_header("location", self.server.location.format(path=path))
            self.send_header("content-length", "0")
            self.end_headers()
            return None
        return self._forward(path)

    do_GET = do_POST = _handle


@pytest.fixture
def proxy(emu: Emulator) -> Iterator[Proxy]:
    # The emulator's OpenAI base URL is http://127.0.0.1:<port>/openai/v1; the proxy forwards to its origin.
    upstream = emu.base_url("openai").split("/openai/")[0]
    server = Proxy(upstream)
    Proxy.received.clear()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def via(proxy: Proxy, emu: Emulator) -> BatchClient:
    return BatchClient({"openai": Credentials("sk-proxy-secret", proxy.url + "/openai/v1")})


async def test_redirect_to_a_foreign_host_fails_loudly(emu: Emulator, proxy: Proxy, tmp_path: Path) -> None:
    other = Proxy(proxy.upstream)  # another origin (port) that would serve the content
    thread = threading.Thread(target=other.serve_forever, daemon=True)
    thread.start()
    try:
        proxy.location = other.url + "/real{path}"
        async with via(proxy, emu) as client:
            job = await submitted(client, 10, 1, "r")
            with pytest.raises(UnsafeResponseError, match="refusing to follow the redirect"):
                await client.write_parquet(job, f"{tmp_path}/out/")
    finally:
        other.shutdown()
        other.server_close()
    assert Proxy.received == []  # nothing (and no key) went to the other host
    assert not (tmp_path / "out").exists() or committed_files(f"{tmp_path}/out/") is None


async def test_redirect_to_a_documented_download_host_drops_credentials(
        emu: Emulator, proxy: Proxy, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    other = Proxy(proxy.upstream)
    thread = threading.Thread(target=other.serve_forever, daemon=True)
    thread.start()
    other.signing_key = "k"
    monkeypatch.setattr(OpenAIAdapter, "download_hosts", frozenset({"127.0.0.1"}))
    try:
        proxy.location = other.url + "/real{path}"
        async with via(proxy, emu) as client:
            job = await submitted(client, 10, 1, "d")
            manifest = await client.write_parquet(job, f"{tmp_path}/out/")
    finally:
        other.shutdown()
        other.server_close()
    assert manifest["rows"] == 10 and manifest["counts"] == {"succeeded": 10}
    assert Proxy.received and all(r["authorization"] == "" for r in Proxy.received)


async def test_same_origin_redirect_is_followed_with_credentials(emu: Emulator, proxy: Proxy,
                                                                 tmp_path: Path) -> None:
    proxy.location = "/real{path}"
    async with via(proxy, emu) as client:
        job = await submitted(client, 10, 1, "s")
        manifest = await client.write_parquet(job, f"{tmp_path}/out/")
    assert manifest["rows"] == 10
    assert Proxy.received and all(r["authorization"] == "Bearer sk-proxy-secret" for r in Proxy.received)


async def test_short_results_stream_is_an_error(emu: Emulator, proxy: Proxy, tmp_path: Path) -> None:
    proxy.mode = "truncate"
    async with via(proxy, emu) as client:
        job = await submitted(client, 10, 1, "h")
        with pytest.raises(IncompleteResultsError, match="reports 10 finished requests"):
            await client.write_parquet(job, f"{tmp_path}/out/")
    assert not (tmp_path / "out").exists() or committed_files(f"{tmp_path}/out/") is None
