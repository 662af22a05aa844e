"""A submit or collect run as its own process, for the real-kill tests (tests/test_crash_kill.py).

`python -m tests.crash_child '<json spec>'`: the parent SIGKILLs it at a moment chosen by the emulator's
request log, then runs it again to completion. Everything it needs comes from the spec; it keeps no
state but the ledger (`state`) and the output folder (`out`).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from typing import Any

from airflow_batchwork.adapters.http import RetryPolicy
from airflow_batchwork.adapters.xai import XAIAdapter
from airflow_batchwork.core import BatchClient, Credentials
from airflow_batchwork.engine.ledger import FsspecLedger
from airflow_batchwork.engine.resubmit import collect_with_retries


def requests(n: int, system: str | None = None) -> list[dict[str, Any]]:
    extra = {"system": system} if system else {}
    return [{"custom_id": f"r{i:04d}", "prompt": f"item {i}", **extra} for i in range(n)]


async def main(spec: dict[str, Any]) -> None:
    provider = spec["provider"]
    XAIAdapter.add_page_size = spec.get("xai_page", 1000)  # several add-requests pages per shard
    retry = RetryPolicy(base_delay=0.05, max_delay=0.5, max_elapsed=120)
    async with BatchClient({provider: Credentials("k", spec["base_url"])}, retry=retry) as client:
        if spec.get("file_upload"):  # Mistral, Gemini: upload the shard as a file instead of inline requests
            client.adapter(provider).inline_max_bytes = 0  # type: ignore[attr-defined]
        if spec["mode"] == "submit":
            ledger = FsspecLedger(spec["state"], spec["identity"])
            job = await client.submit(spec["model"], requests(spec["n"], spec.get("system")), ledger=ledger,
                                      identity=spec["identity"], limits={"max_requests": spec["max_requests"]},
                                      cache_prefix=spec.get("cache_prefix"))
            tmp = spec["handle"] + ".tmp"
            with open(tmp, "w") as handle:
                json.dump(job.to_dict(), handle)
            os.replace(tmp, spec["handle"])
        elif spec["mode"] == "collect_retries":  # collect with resubmission rounds (engine/resubmit.py)
            with open(spec["handle"]) as handle:
                job_dict = json.load(handle)
            manifest = await collect_with_retries(client, job_dict, spec["out"], max_item_retries=1,
                                                  poll_interval=0.1, timeout=120)
            print(json.dumps({"rows": manifest["rows"], "attempts": manifest["attempts"]}))
        else:
            with open(spec["handle"]) as handle:
                job_dict = json.load(handle)
            manifest = await client.write_parquet(job_dict, spec["out"])
            print(json.dumps({"rows": manifest["rows"], "duplicates_dropped": manifest["duplicates_dropped"]}))


if __name__ == "__main__":
    asyncio.run(main(json.loads(sys.argv[1])))
