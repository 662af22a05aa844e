"""Collect benchmark: N result lines → Parquet, ours side by side with other engines, in one run.

Contenders (each in its own process, so peak RSS is that path's alone; imports before the clock):
ours (`BatchClient.write_parquet`, the collector's real code over a file-serving transport), naive
(`json.loads` + one table), orjson + pyarrow by hand (streamed), pyarrow's JSON reader, polars
(`json_decode`, `sink_parquet`) and duckdb (`json_transform`, `COPY TO`). Every contender writes the
same normalized columns and its rows are checked identical to ours. Figures are ratios to the fastest.
At 1M lines every contender but the naive path runs three times, in rounds of rotating order, and the
medians are compared (each run's time is printed beside it).

    python -m bench.collect                      # N = 10k, 100k, 1M; openai, anthropic, gemini
    python -m bench.collect --n 100000 --format openai
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from bench.common import WORK, FileServer, child, peak_rss_mb, table
from bench.contenders import RUNNERS, digest
from bench.data import result_file

SIZES = (10_000, 100_000, 1_000_000)
FORMATS = ("openai", "anthropic", "gemini")
KINDS = ("ours", *RUNNERS)
# At 1M lines ours and the fastest engines are within the box's run-to-run spread (±30 %), so each contender
# runs three times there, in rounds whose order rotates, and the median is compared; the naive path (never
# near the fastest) runs once.
REPEATS = {1_000_000: 3}
ONCE = ("naive",)


def run_ours(fmt: str, path: Path, dst: Path) -> int:
    from airflow_batchwork.core import BatchClient, Credentials

    if fmt == "openai":
        base = "https://api.openai.test/v1"
        routes = {"/v1/batches/batch_bench": {"id": "batch_bench", "status": "completed",
                                                "output_file_id": "file-out", "error_file_id": None}}
        files = {"/v1/files/file-out/content": path}
        model, batch_id = "openai/gpt-4o-mini", "batch_bench"
    elif fmt == "gemini":
        base = "https://generativelanguage.test"
        routes = {"/v1beta/batches/bench": {
            "name": "batches/bench", "done": True, "response": {"responsesFile": "files/bench-out"},
            "metadata": {"name": "batches/bench", "state": "BATCH_STATE_SUCCEEDED"}}}
        files = {"/download/v1beta/files/bench-out:download": path}
        model, batch_id = "google/gemini-2.5-flash", "batches/bench"
    else:
        base = "https://api.anthropic.test"
        routes = {"/v1/messages/batches/msgbatch_bench": {
            "id": "msgbatch_bench", "processing_status": "ended",
            "results_url": f"{base}/v1/messages/batches/msgbatch_bench/results"}}
        files = {"/v1/messages/batches/msgbatch_bench/results": path}
        model, batch_id = "anthropic/claude-haiku-4-5", "msgbatch_bench"
    provider = model.split("/")[0]
    job = {"provider": provider, "model": model, "batches": [{"id": batch_id, "request_count": 0}],
           "request_count": 0}

    async def go() -> int:
        client = BatchClient({provider: Credentials("bench", base)}, transport=FileServer(routes, files))
        async with client:
            manifest = await client.write_parquet(job, str(dst))
        return int(manifest["rows"])

    return asyncio.run(go())


def measure(kind: str, fmt: str, n: int) -> None:
    import importlib

    modules = {"ours": ["airflow_batchwork.core"], "orjson": ["orjson"], "polars": ["polars"],
               "duckdb": ["duckdb"]}.get(kind, [])
    for module in ("pyarrow.json", "pyarrow.parquet", "pyarrow.compute", *modules):
        importlib.import_module(module)
    src = result_file(fmt, n)
    dst = WORK / f"collect-{kind}-{fmt}.parquet"
    dst.unlink(missing_ok=True)
    start = time.perf_counter()
    rows = run_ours(fmt, src, dst) if kind == "ours" else RUNNERS[kind](fmt, src, dst)
    seconds = time.perf_counter() - start
    rss = peak_rss_mb()  # before the check below, which is not part of the work
    print(json.dumps({"seconds": seconds, "rows": rows, "rss_mb": rss, "digest": digest(dst)}))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, action="append")
    parser.add_argument("--format", action="append", choices=FORMATS)
    parser.add_argument("--kind", action="append", choices=KINDS)
    parser.add_argument("--repeat", type=int, help="runs of each contender per size (default: 3 at 1M, else 1)")
    parser.add_argument("--child", nargs=3, metavar=("KIND", "FORMAT", "N"))
    args = parser.parse_args(argv)
    if args.child:
        measure(args.child[0], args.child[1], int(args.child[2]))
        return 0
    from bench.run import load, machine

    print(f"collect bench on {machine()}", flush=True)
    print(f"collect bench at start: {load()}", flush=True)
    kinds = list(args.kind or KINDS)
    rows, mismatches = [], []
    for fmt in args.format or FORMATS:
        for n in args.n or SIZES:
            path = result_file(fmt, n)
            runs: dict[str, list[dict[str, Any]]] = {kind: [] for kind in kinds}
            for round_ in range(args.repeat or REPEATS.get(n, 1)):
                order = kinds[round_ % len(kinds):] + kinds[:round_ % len(kinds)]
                for kind in order:
                    if not (round_ and kind in ONCE):
                        runs[kind].append(child("collect", "--child", kind, fmt, str(n)))
            seconds = {kind: statistics.median(r["seconds"] for r in rs) for kind, rs in runs.items()}
            fastest = min(seconds.values())
            reference = runs[kinds[0]][0]["digest"]
            for kind, rs in runs.items():
                wrong = [r for r in rs if r["digest"] != reference or r["rows"] != n]
                mismatches += [f"{fmt} N={n:,} {kind}: rows {r['rows']}, digest {r['digest']}" for r in wrong]
                each = " ".join(f"{r['seconds']:.2f}" for r in rs) if len(rs) > 1 else "-"
                rows.append([fmt, f"{n:,}", f"{path.stat().st_size / n:,.0f}", kind, f"{seconds[kind]:.2f}", each,
                             f"{seconds[kind] / fastest:.2f}x", f"{max(r['rss_mb'] for r in rs):.0f}",
                             "NO" if wrong else "yes"])
            print(f"  measured {fmt} N={n:,}", file=sys.stderr, flush=True)
    print("collect: result lines -> Parquet, same columns (custom_id, status, text, tokens, raw line)")
    print("targets: ours <= 1.0x the fastest other engine; ours peak RSS <= 256 MB at every N")
    print("seconds: the median of the runs listed (rounds in rotating order); peak MB: the highest of them")
    print(table(["format", "N", "B/line", "engine", "seconds", "runs s", "vs fastest", "peak MB",
                 f"rows = {kinds[0]}"], rows))
    for line in mismatches:
        print("MISMATCH", line)
    print(f"collect bench at end: {load()}")
    return 1 if mismatches else 0


if __name__ == "__main__":
    raise SystemExit(main())
