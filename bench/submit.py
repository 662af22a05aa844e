"""Submit benchmark: building the batch input for N realistic requests, ours beside hand-written paths.

"Building" is what happens before the first byte is uploaded: validate, fill defaults, encode each
request in the provider's line format, shard, write to local disk. Contenders write the same OpenAI
JSONL lines byte for byte (checked): orjson by hand (no validation), and the SDK-style path
(`json.dumps` of each line dict, as the providers' own batch examples do). Each runs in its own process;
peak RSS is reported whole and above the process's RSS after imports. Beside the wall time, each
child's CPU time (user + system, `time.process_time`) while building: on a busy machine a child's wall time
depends on when it ran, its CPU time much less. A last column times ours building, uploading and creating
against the emulator (another process). Ours and orjson run three times each, in rounds of rotating order,
and their medians are compared (one run on a busy machine can be off by half); json.dumps runs once.

    python -m bench.submit               # N = 50k and 1M
    python -m bench.submit --n 50000 --repeat 1
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench.common import child, peak_rss_mb, table
from bench.data import requests

SIZES = (50_000, 1_000_000)
MODEL = "openai/gpt-4o-mini"
KINDS = ("ours", "orjson", "json.dumps")
REPEATS = 3
ONCE = {"json.dumps"}  # the slow reference: one run is enough to place it


def _line(request: dict[str, Any]) -> dict[str, Any]:
    return {"custom_id": request["custom_id"], "method": "POST", "url": "/v1/chat/completions",
            "body": {"model": "gpt-4o-mini",
                     "messages": [{"role": "system", "content": request["system"]},
                                  {"role": "user", "content": request["prompt"]}],
                     "max_completion_tokens": request["max_output_tokens"],
                     "temperature": request["temperature"]}}


def build_by_hand(kind: str, source: Iterator[dict[str, Any]], out: Path) -> int:
    import orjson

    count = 0
    with out.open("wb") as handle:
        for request in source:
            if kind == "orjson":
                handle.write(orjson.dumps(_line(request)) + b"\n")
            else:
                handle.write(json.dumps(_line(request), separators=(",", ":"), ensure_ascii=False).encode() + b"\n")
            count += 1
    return count


def _digest(lines: Iterator[bytes]) -> str:
    h = hashlib.sha256()
    for line in lines:
        h.update(line.rstrip(b"\n") + b"\n")
    return h.hexdigest()[:16]


def measure(kind: str, n: int, upload: bool) -> None:
    import orjson  # noqa: F401  (imported before the clock for every path)

    from airflow_batchwork.core import BatchClient

    base = peak_rss_mb()
    with tempfile.TemporaryDirectory() as tmp:
        start, cpu_start = time.perf_counter(), time.process_time()
        if kind == "ours":
            with BatchClient().prepare(MODEL, requests(n)) as job:
                seconds, cpu = time.perf_counter() - start, time.process_time() - cpu_start
                rss = peak_rss_mb()
                digest = _digest(line for shard in job.shards for line in shard)
                count = sum(len(s) for s in job.shards)
        else:
            out = Path(tmp) / "input.jsonl"
            count = build_by_hand(kind, requests(n), out)
            seconds, cpu = time.perf_counter() - start, time.process_time() - cpu_start
            rss = peak_rss_mb()
            with out.open("rb") as handle:
                digest = _digest(iter(handle))
    total = None
    if upload:
        from airflow_batchwork.core import Credentials
        from bench.emulator_proc import EmulatorProcess

        with EmulatorProcess(processing_seconds=600) as emu:
            async def go() -> float:
                async with BatchClient({"openai": Credentials("bench", emu.base_url("openai"))}) as client:
                    begin = time.perf_counter()
                    await client.submit(MODEL, requests(n))
                    return time.perf_counter() - begin

            total = asyncio.run(go())
    print(json.dumps({"seconds": seconds, "cpu": cpu, "count": count, "rss_mb": rss, "base_mb": base,
                      "digest": digest, "total": total}))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, action="append")
    parser.add_argument("--repeat", type=int, default=REPEATS, help="runs of ours and orjson (median)")
    parser.add_argument("--child", nargs=3, metavar=("KIND", "N", "UPLOAD"))
    args = parser.parse_args(argv)
    if args.child:
        measure(args.child[0], int(args.child[1]), args.child[2] == "upload")
        return 0
    from bench.run import load

    print(f"submit bench at start: {load()}", flush=True)
    rows, bad = [], []
    for n in args.n or SIZES:
        runs: dict[str, list[dict[str, Any]]] = {kind: [] for kind in KINDS}
        for round_ in range(max(1, args.repeat)):
            for kind in KINDS[round_ % len(KINDS):] + KINDS[:round_ % len(KINDS)]:
                if round_ and kind in ONCE:
                    continue
                upload = "upload" if kind == "ours" and not round_ and n <= 100_000 else "-"
                runs[kind].append(child("submit", "--child", kind, str(n), upload))
        seconds = {kind: statistics.median(r["seconds"] for r in rs) for kind, rs in runs.items()}
        cpu = {kind: statistics.median(r["cpu"] for r in rs) for kind, rs in runs.items()}
        fastest, leanest = min(seconds.values()), min(cpu.values())
        reference = runs["ours"][0]["digest"]
        for kind, rs in runs.items():
            wrong = [r for r in rs if r["digest"] != reference or r["count"] != n]
            bad += [f"N={n:,} {kind}: {r['count']} lines, digest {r['digest']}" for r in wrong]
            totals = [r["total"] for r in rs if r.get("total")]
            each = " ".join(f"{n / r['seconds']:,.0f}" for r in rs) if len(rs) > 1 else "-"
            rows.append([f"{n:,}", kind, f"{n / seconds[kind]:,.0f}", each, f"{fastest / seconds[kind]:.2f}x",
                         f"{cpu[kind] / n * 1e6:.2f}", f"{leanest / cpu[kind]:.2f}x",
                         f"{max(r['rss_mb'] for r in rs):.0f}", f"{max(r['rss_mb'] - r['base_mb'] for r in rs):.0f}",
                         "NO" if wrong else "yes", f"{n / totals[0]:,.0f}" if totals else "-"])
        print(f"  measured N={n:,}", file=sys.stderr, flush=True)
    print(f"submit: building the batch input for realistic {MODEL} requests (system + 300-450 B prompt)")
    print("targets: ours building >= 0.5x the hand-written orjson path; peak RSS <= 64 MB for 1M requests")
    print("build req/s and CPU: the medians of the runs listed (rounds in rotating order); peak MB: the highest")
    print(table(["N", "path", "build req/s", "runs req/s", "speed vs fastest", "CPU us/req", "CPU vs leanest",
                 "peak MB", "peak above imports MB", "same lines", "build+upload+create req/s"], rows))
    for line in bad:
        print("MISMATCH", line)
    print(f"submit bench at end: {load()}")
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
