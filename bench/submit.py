"""Submit benchmark: build (validate + encode + shard) and upload 100k requests to the emulator.

The emulator runs in another process; this process's peak RSS is ours alone. Requests are generated
lazily, as a file reader would yield them, so the input list is not counted.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Iterator

from bench.common import child, peak_rss_mb, table

N = 100_000


def requests(n: int) -> Iterator[dict[str, object]]:
    for i in range(n):
        yield {"custom_id": f"row-{i:06d}", "prompt": f"Summarise product number {i} in one short line."}


def measure(model: str, n: int) -> None:
    from airflow_batchwork.core import BatchClient, Credentials
    from bench.emulator_proc import EmulatorProcess

    provider = model.split("/")[0]
    start = time.perf_counter()
    with BatchClient().prepare(model, requests(n), defaults={"max_output_tokens": 64}) as job:
        build = time.perf_counter() - start
        shards = len(job.shards)
    with EmulatorProcess(processing_seconds=30) as emu:
        async def go() -> float:
            async with BatchClient({provider: Credentials("bench", emu.base_url(provider))}) as client:
                begin = time.perf_counter()
                await client.submit(model, requests(n), defaults={"max_output_tokens": 64})
                return time.perf_counter() - begin

        total = asyncio.run(go())
    print(json.dumps({"build": build, "total": total, "shards": shards, "rss_mb": peak_rss_mb()}))


def main(argv: list[str] | None = None) -> int:
    args = argv if argv is not None else sys.argv[1:]
    if args and args[0] == "--child":
        measure(args[1], int(args[2]))
        return 0
    rows = []
    for model in ("openai/gpt-4o-mini", "anthropic/claude-haiku-4-5"):
        got = child("submit", "--child", model, str(N))
        rows.append([model, f"{N:,}", got["shards"], f"{N / got['build']:,.0f}", f"{N / got['total']:,.0f}",
                     f"{got['rss_mb']:.0f}"])
        print(f"  measured {model}", file=sys.stderr)
    print(f"submit: build + upload {N:,} requests to the emulator (another process)")
    print("targets: >= 100,000 requests/s building, peak RSS <= 256 MB")
    print(table(["model", "N", "batches", "build req/s", "build+upload+create req/s", "peak MB"], rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
