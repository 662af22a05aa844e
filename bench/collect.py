"""Collect benchmark: N result lines → Parquet, ours vs the naive path vs pyarrow's own reader (floor).

Each measurement runs in its own process so peak RSS is that path's alone.
    python -m bench.collect            # N = 10k, 100k, 1M for openai and anthropic formats
    python -m bench.collect --n 10000  # one size
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path

from bench.common import WORK, FileServer, child, peak_rss_mb, table, timed

SIZES = (10_000, 100_000, 1_000_000)
FORMATS = ("openai", "anthropic", "gemini")


def openai_line(i: int) -> dict[str, object]:
    if i % 50 == 7:
        return {"id": f"batch_req_{i}", "custom_id": f"req-{i}", "response": {"status_code": 400, "request_id": f"r{i}",
                "body": {"error": {"message": "bad request", "type": "invalid_request_error", "param": None,
                                   "code": "invalid_value"}}}, "error": None}
    text = f"echo: summary number {i} of the product"
    return {"id": f"batch_req_{i}", "custom_id": f"req-{i}", "response": {"status_code": 200, "request_id": f"r{i}",
            "body": {"id": f"chatcmpl-{i}", "object": "chat.completion", "created": 1763700000, "model": "gpt-4o-mini",
                     "choices": [{"index": 0, "message": {"role": "assistant", "content": text, "refusal": None},
                                  "logprobs": None, "finish_reason": "stop"}],
                     "usage": {"prompt_tokens": 12, "completion_tokens": 7, "total_tokens": 19}}}, "error": None}


def anthropic_line(i: int) -> dict[str, object]:
    if i % 50 == 7:
        return {"custom_id": f"req-{i}", "result": {"type": "errored", "error": {
            "type": "error", "error": {"type": "invalid_request_error", "message": "bad request"}, "request_id": None}}}
    return {"custom_id": f"req-{i}", "result": {"type": "succeeded", "message": {
        "id": f"msg_{i}", "type": "message", "role": "assistant", "model": "claude-haiku-4-5",
        "content": [{"type": "text", "text": f"echo: summary number {i} of the product"}],
        "stop_reason": "end_turn", "stop_sequence": None,
        "usage": {"input_tokens": 12, "output_tokens": 7, "service_tier": "batch"}}}}


def gemini_line(i: int) -> dict[str, object]:
    if i % 50 == 7:
        return {"key": f"req-{i}", "error": {"code": 400, "message": "bad request", "status": "INVALID_ARGUMENT"}}
    return {"key": f"req-{i}", "response": {
        "candidates": [{"content": {"role": "model", "parts": [{"text": f"echo: summary number {i} of the product"}]},
                        "finishReason": "STOP", "index": 0}],
        "usageMetadata": {"promptTokenCount": 12, "candidatesTokenCount": 7, "totalTokenCount": 19},
        "modelVersion": "gemini-2.5-flash", "responseId": f"resp-{i}"}}


def data_file(fmt: str, n: int) -> Path:
    path = WORK / f"{fmt}-{n}.jsonl"
    if not path.exists():
        WORK.mkdir(parents=True, exist_ok=True)
        make = {"openai": openai_line, "anthropic": anthropic_line, "gemini": gemini_line}[fmt]
        with path.open("w") as out:
            for i in range(n):
                out.write(json.dumps(make(i), separators=(",", ":")) + "\n")
    return path


def run_ours(fmt: str, path: Path) -> int:
    from airflow_batchwork.core import BatchClient, Credentials

    if fmt == "openai":
        base = "https://api.openai.test/v1"
        routes = {"/v1/batches/batch_bench": {"id": "batch_bench", "status": "completed",
                                                "output_file_id": "file-out", "error_file_id": None}}
        files = {"/v1/files/file-out/content": path}
        model = "openai/gpt-4o-mini"
    elif fmt == "gemini":
        base = "https://generativelanguage.test"
        routes = {"/v1beta/batches/bench": {
            "name": "batches/bench", "done": True, "response": {"responsesFile": "files/bench-out"},
            "metadata": {"name": "batches/bench", "state": "BATCH_STATE_SUCCEEDED"}}}
        files = {"/download/v1beta/files/bench-out:download": path}
        model = "google/gemini-2.5-flash"
    else:
        base = "https://api.anthropic.test"
        routes = {"/v1/messages/batches/msgbatch_bench": {
            "id": "msgbatch_bench", "processing_status": "ended",
            "results_url": f"{base}/v1/messages/batches/msgbatch_bench/results"}}
        files = {"/v1/messages/batches/msgbatch_bench/results": path}
        model = "anthropic/claude-haiku-4-5"
    provider = model.split("/")[0]
    batch_id = "batches/bench" if fmt == "gemini" else next(iter(routes)).rsplit("/", 1)[1]
    job = {"provider": provider, "model": model, "batches": [{"id": batch_id, "request_count": 0}],
           "request_count": 0}

    async def go() -> int:
        client = BatchClient({provider: Credentials("bench", base)}, transport=FileServer(routes, files))
        async with client:
            manifest = await client.write_parquet(job, str(WORK / f"ours-{fmt}.parquet"))
        return int(manifest["rows"])

    return asyncio.run(go())


def run_naive(path: Path) -> int:
    import pyarrow as pa
    import pyarrow.parquet as pq

    with path.open() as handle:
        rows = [json.loads(line) for line in handle]
    pq.write_table(pa.Table.from_pylist(rows), WORK / "naive.parquet")
    return len(rows)


def run_floor(path: Path) -> int:
    import pyarrow.json as pj
    import pyarrow.parquet as pq

    data = pj.read_json(path)
    pq.write_table(data, WORK / "floor.parquet")
    return data.num_rows


def measure(kind: str, fmt: str, n: int) -> None:
    # Imports happen before the clock starts, for every path alike.
    import importlib

    for module in ("pyarrow.json", "pyarrow.parquet", *(["airflow_batchwork.core"] if kind == "ours" else [])):
        importlib.import_module(module)
    path = data_file(fmt, n)
    runner = {"ours": lambda: run_ours(fmt, path), "naive": lambda: run_naive(path),
              "floor": lambda: run_floor(path)}[kind]
    seconds, rows = timed(runner)
    print(json.dumps({"seconds": seconds, "rows": rows, "rss_mb": peak_rss_mb()}))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, action="append")
    parser.add_argument("--format", action="append", choices=FORMATS)
    parser.add_argument("--child", nargs=3, metavar=("KIND", "FORMAT", "N"))
    args = parser.parse_args(argv)
    if args.child:
        measure(args.child[0], args.child[1], int(args.child[2]))
        return 0
    rows = []
    for fmt in args.format or FORMATS:
        for n in args.n or SIZES:
            data_file(fmt, n)
            got = {kind: child("collect", "--child", kind, fmt, str(n)) for kind in ("ours", "naive", "floor")}
            ours, naive, floor = got["ours"], got["naive"], got["floor"]
            assert ours["rows"] == n, (fmt, n, ours)
            rows.append([
                fmt, f"{n:,}",
                f"{n / ours['seconds']:,.0f}", f"{n / naive['seconds']:,.0f}", f"{n / floor['seconds']:,.0f}",
                f"{naive['seconds'] / ours['seconds']:.1f}x", f"{ours['seconds'] / floor['seconds']:.2f}x",
                f"{ours['rss_mb']:.0f}", f"{naive['rss_mb']:.0f}", f"{floor['rss_mb']:.0f}",
            ])
            print(f"  measured {fmt} N={n:,}", file=sys.stderr)
    print("collect: result lines -> Parquet (lines/s; peak RSS MB; separate processes)")
    print("targets: >= 4x naive throughput, time <= 1.5x floor, ours peak RSS <= 256 MB")
    print(table(["format", "N", "ours l/s", "naive l/s", "floor l/s", "vs naive", "time/floor",
                 "ours MB", "naive MB", "floor MB"], rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
