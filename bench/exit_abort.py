"""Count native aborts at interpreter exit: N child processes each collect a finished 3-batch job into
Parquet (the vectorized parser's thread and pyarrow's threads) and exit; any non-zero exit (SIGABRT is
-6) is counted.

    python -m bench.exit_abort --runs 100             # this checkout
    python -m bench.exit_abort --runs 100 --root /work/main   # another checkout, for comparison
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
from collections import Counter

from bench.emulator_proc import EmulatorProcess

CHILD = """
import asyncio, json, sys
from airflow_batchwork.core import BatchClient, Credentials
spec = json.loads(sys.argv[1])
async def main():
    async with BatchClient({"openai": Credentials("k", spec["base_url"])}) as c:
        await c.write_parquet(spec["job"], spec["out"])
asyncio.run(main())
"""


async def submit(base_url: str) -> dict[str, object]:
    from airflow_batchwork.core import BatchClient, Credentials

    async with BatchClient({"openai": Credentials("k", base_url)}) as client:
        requests = [{"custom_id": f"r{i:05d}", "prompt": f"item {i} " * 20} for i in range(30_000)]
        job = await client.submit("openai/gpt-4o-mini", requests, limits={"max_requests": 10_000})
        await client.wait(job, poll_interval=0.5, timeout=300)
        return job.to_dict()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--root", default=".")
    args = parser.parse_args()
    with EmulatorProcess(processing_seconds=0.5) as emu, tempfile.TemporaryDirectory() as tmp:
        base_url = emu.base_url("openai")
        job = asyncio.run(submit(base_url))
        codes: Counter[int] = Counter()
        for run in range(args.runs):
            spec = {"base_url": base_url, "job": job, "out": f"{tmp}/out-{run}/"}
            proc = subprocess.run([sys.executable, "-c", CHILD, json.dumps(spec)], cwd=args.root,
                                  capture_output=True, timeout=300)
            codes[proc.returncode] += 1
        print(json.dumps({"root": args.root, "runs": args.runs, "exit_codes": dict(codes)}))


if __name__ == "__main__":
    main()
