import asyncio, json, tempfile, uuid
import pyarrow.parquet as pq
from airflow_batchwork.core import BatchClient, Credentials
from airflow_batchwork.core.ledger import FsspecLedger
from airflow_batchwork.core.resubmit import collect_with_retries
from airflow_batchwork.testing import Emulator

MODELS = {"openai": "openai/gpt-4o-mini", "anthropic": "anthropic/claude-haiku-4-5",
          "google": "google/gemini-2.5-flash", "groq": "groq/llama-3.3-70b-versatile", "mistral": "mistral/mistral-small-latest",
          "together": "together/meta-llama/Llama-3.3-70B-Instruct-Turbo", "xai": "xai/grok-4"}
async def main():
    with Emulator(processing_seconds=0.2) as emu, tempfile.TemporaryDirectory() as d:
        for provider, model in MODELS.items():
            tag = uuid.uuid4().hex[:6]
            reqs = [{"custom_id": f"r{i}", "prompt": f"item {i} {tag}" + (" [[transient]]" if i in (2, 5, 7) else "")} for i in range(10)]
            async with BatchClient({provider: Credentials("k", emu.base_url(provider))}) as c:
                ledger = FsspecLedger(f"file://{d}/state", f"job-{provider}")
                job = await c.submit(model, reqs, defaults={"max_output_tokens": 64}, ledger=ledger, identity=f"job-{provider}")
                before = len(emu.store.batches(provider)) if hasattr(emu, "store") else None
                m = await collect_with_retries(c, job, f"file://{d}/{provider}/", max_item_retries=2, keep_history=True, poll_interval=0.1, timeout=60)
                t = pq.read_table(f"{d}/{provider}/")
                h = pq.read_table(m["history_path"].removeprefix("file://"))
                print(provider, m["counts"], m["attempts"], [r["request_count"] for r in m["rounds"]], m["retried"], t.num_rows, h.num_rows, m["cost_usd"])
asyncio.run(main())
