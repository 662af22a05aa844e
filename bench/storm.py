"""Storm soak: a large job (default 200,000 requests) submitted and collected through an emulator that
answers 1 in 5 calls with a 5xx and drops 1 in 20 connections (random, seeded), in its own process.

    python -m bench.storm                 # 200k requests, openai
    python -m bench.storm --n 20000 --provider anthropic

Prints one JSON line: rows, distinct ids, non-succeeded rows, batches made (extra = made - shards),
cancelled batches, wall seconds and the client's peak RSS (the emulator runs in another process).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import socket
import subprocess
import sys
import tempfile
import time
from typing import Any

import httpx
import pyarrow.compute as pc
import pyarrow.parquet as pq

from bench.common import ROOT

MODELS = {"openai": "openai/gpt-4o-mini", "anthropic": "anthropic/claude-haiku-4-5", "xai": "xai/grok-4",
          "together": "together/meta-llama/Llama-3.3-70B-Instruct-Turbo", "groq": "groq/llama-3.3-70b-versatile",
          "mistral": "mistral/mistral-small-latest", "google": "google/gemini-2.5-flash"}


def start_emulator(seed: int, server_every: int, drop_every: int) -> tuple[subprocess.Popen[bytes], int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    proc = subprocess.Popen(
        [sys.executable, "-m", "airflow_batchwork.testing.emulator", "--port", str(port), "--processing-seconds",
         "1", "--server-error-every", str(server_every), "--drop-connection-every", str(drop_every),
         "--random-seed", str(seed)], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            httpx.get(f"http://127.0.0.1:{port}/", timeout=2)
            return proc, port
        except httpx.TransportError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError("emulator did not start")


async def run(args: argparse.Namespace, base_url: str, out: str) -> dict[str, Any]:
    from airflow_batchwork.adapters.http import RetryPolicy
    from airflow_batchwork.core import BatchClient, Credentials
    from airflow_batchwork.engine.ledger import FsspecLedger

    requests = ({"custom_id": f"s{i:07d}", "prompt": f"storm item {i}"} for i in range(args.n))
    retry = RetryPolicy(base_delay=0.05, max_delay=2.0, max_elapsed=900)
    started = time.monotonic()
    async with BatchClient({args.provider: Credentials("k", base_url)}, retry=retry) as client:
        ledger = FsspecLedger(f"{out}/state", "storm")
        job = await client.submit(MODELS[args.provider], requests, ledger=ledger, identity="storm")
        await client.wait(job, poll_interval=1, timeout=3600)
        manifest = await client.write_parquet(job, f"{out}/results/")
        made = [b async for b in client.adapter(args.provider).list_batches(limit=1000)]
    table = pq.read_table(f"{out}/results/", columns=["custom_id", "status"])
    return {
        "provider": args.provider, "requests": args.n, "rows": table.num_rows,
        "distinct_ids": pc.count_distinct(table.column("custom_id")).as_py(),
        "not_succeeded": int(pc.sum(pc.not_equal(table.column("status"), "succeeded")).as_py() or 0),
        "shards": len(job.batches), "batches_made": len(made),
        "cancelled": sum(1 for b in made if b.state in ("cancelled", "cancelling")),
        "duplicates_dropped": manifest["duplicates_dropped"], "wall_seconds": round(time.monotonic() - started, 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "storm": f"5xx 1 in {args.server_every}, drops 1 in {args.drop_every} (random, seed {args.seed})",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=200_000)
    parser.add_argument("--provider", default="openai", choices=sorted(MODELS))
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--server-every", type=int, default=5)
    parser.add_argument("--drop-every", type=int, default=20)
    args = parser.parse_args()
    proc, port = start_emulator(args.seed, args.server_every, args.drop_every)
    try:
        base_url = httpx.get(f"http://127.0.0.1:{port}/").json()["providers"][args.provider]
        with tempfile.TemporaryDirectory(prefix="batchwork-storm-") as out:
            print(json.dumps(asyncio.run(run(args, base_url, out))))
    finally:
        proc.terminate()
        proc.wait(30)


if __name__ == "__main__":
    main()
