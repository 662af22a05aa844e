"""Gemini explicit context caching (`cache_prefix=True`) against the emulator over real sockets: one
cachedContents resource per batch holding the shared system prompt, every item naming it, cache reads priced at
the cached rate, the resource deleted at collect, reused by a second submit attempt, and the fallbacks."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import httpx
import pyarrow.parquet as pq
import pytest

from airflow_batchwork.adapters.google import GoogleAdapter
from airflow_batchwork.core import BatchClient, Credentials
from airflow_batchwork.engine.ledger import FsspecLedger
from airflow_batchwork.engine.submission import prepare_job
from airflow_batchwork.testing import Emulator
from airflow_batchwork.values.calls import CallProgress
from airflow_batchwork.values.pricing import load_prices
from airflow_batchwork.values.refs import parse_model

SYSTEM = " ".join(f"rule{i}" for i in range(5000))  # 5,000 emulator tokens; ~10,000 by our 4-chars estimate
MODEL = "google/gemini-2.5-flash"


def client_for(emulator: Emulator) -> BatchClient:
    return BatchClient({"google": Credentials(api_key="k", base_url=emulator.base_url("google"))})


def cache_creates(emulator: Emulator, since: int) -> list[Any]:
    """The cache create calls the emulator answered since its `since`-th request (the emulator is shared)."""
    return [r for r in emulator.requests[since:] if r.method == "POST" and r.path.endswith("/cachedContents")]


def live_caches(emulator: Emulator) -> list[dict[str, Any]]:
    answer = httpx.get(f"{emulator.base_url('google')}/v1beta/cachedContents", headers={"x-goog-api-key": "k"})
    answer.raise_for_status()
    return list(answer.json().get("cachedContents") or [])


def sent_requests(emulator: Emulator, batch_id: str) -> list[dict[str, Any]]:
    view = next(b for b in emulator.batches("google") if b.id == batch_id)
    body = view.extra["create_body"]
    return [entry["request"] for entry in body["batch"]["inputConfig"]["requests"]["requests"]]


async def test_one_cache_every_item_names_it_rows_priced_and_deleted_after_collect(
        emulator: Emulator, tmp_path: Path) -> None:
    start = len(emulator.requests)
    requests = [{"custom_id": f"r{i}", "prompt": f"question {i}", "system": SYSTEM} for i in range(12)]
    async with client_for(emulator) as client:
        job = await client.submit(MODEL, requests, cache_prefix=True)
        assert len(cache_creates(emulator, start)) == 1
        [cache] = live_caches(emulator)
        name = cache["name"]
        assert cache["usageMetadata"] == {"totalTokenCount": 5000}
        assert job.batches[0].model_extra == {"resources": [name]}
        sent = sent_requests(emulator, job.batch_ids[0])
        assert len(sent) == 12
        assert all(r["cachedContent"] == name and "systemInstruction" not in r for r in sent)
        await client.wait(job, poll_interval=0.1, timeout=60)
        manifest = await client.write_parquet(job, f"{tmp_path}/out.parquet")
    assert manifest["rows"] == 12
    assert live_caches(emulator) == []  # deleted at collect
    assert [r.status_code for r in emulator.requests[start:] if r.method == "DELETE" and name in r.path] == [200]
    rows = pq.read_table(tmp_path / "out.parquet").to_pylist()
    price = load_prices().lookup(MODEL)
    assert price is not None and price.prompt_cache is not None and price.prompt_cache["read"] == 0.1
    for row in rows:
        assert row["status"] == "succeeded"
        assert row["cache_read_tokens"] == 5000 and row["cache_write_tokens"] == 0
        assert row["input_tokens"] == 5002  # promptTokenCount includes the cached content
        expected = ((row["input_tokens"] - 5000) + 5000 * 0.1) * price.batch_input / 1e6 \
            + row["output_tokens"] * price.batch_output / 1e6
        assert row["cost_usd"] == pytest.approx(expected)


async def test_a_second_submit_attempt_reuses_the_recorded_cache(emulator: Emulator, tmp_path: Path) -> None:
    """A try killed after creating the cache but before the batch: the ledger names the cache, the next try
    sends the batch against it and creates no second resource."""
    start = len(emulator.requests)
    requests = [{"custom_id": f"k{i}", "prompt": f"ask {i}", "system": SYSTEM} for i in range(6)]
    ref = parse_model(MODEL)
    with prepare_job(ref, requests, defaults={"cache_prefix": True}) as prepared:
        fingerprint = prepared.fingerprint
        shard = list(prepared.shards[0])
    ledger = FsspecLedger(f"{tmp_path}/state", "dag.task.run")
    async with client_for(emulator) as client:
        adapter = client.adapter("google")
        assert isinstance(adapter, GoogleAdapter)
        # What the killed try did before it died: the cache create, recorded in the shard's call progress.
        calls: dict[str, Any] = {}
        system = adapter.cache_plan(ref, [json.loads(line) for line in shard])[0]
        name, _ = await adapter._cached_content(ref, system, {}, CallProgress(calls))
        assert name is not None and calls["resources"] == [name]
        adapter.__dict__.pop("_prefix_caches")  # a new process: only the ledger knows the cache
        ledger.write({"identity": "dag.task.run", "fingerprint": fingerprint, "model": str(ref), "shards": [
            {"index": 0, "status": "intent", "request_count": len(shard), "intent_at": time.time(), "calls": calls}]})
        job = await client.submit(MODEL, requests, cache_prefix=True, ledger=ledger, identity="dag.task.run")
        assert len(cache_creates(emulator, start)) == 1  # the killed try's create only
        assert all(r["cachedContent"] == name for r in sent_requests(emulator, job.batch_ids[0]))
        assert job.batches[0].model_extra == {"resources": [name]}
        await client.wait(job, poll_interval=0.1, timeout=60)
        await client.write_parquet(job, f"{tmp_path}/out.parquet")
    assert [r["cache_read_tokens"] for r in pq.read_table(tmp_path / "out.parquet").to_pylist()] == [5000] * 6
    assert live_caches(emulator) == []


async def test_a_lost_create_answer_is_found_by_its_display_name(emulator: Emulator, tmp_path: Path) -> None:
    """Killed between the cache create and the ledger write: the name is not recorded; the next try finds the
    cache by its display name (job identity, input fingerprint, prefix digest) instead of creating another."""
    start = len(emulator.requests)
    requests = [{"custom_id": f"d{i}", "prompt": f"ask {i}", "system": SYSTEM} for i in range(4)]
    ref = parse_model(MODEL)
    with prepare_job(ref, requests, defaults={"cache_prefix": True}) as prepared:
        fingerprint = prepared.fingerprint
        shard = list(prepared.shards[0])
    ledger = FsspecLedger(f"{tmp_path}/state", "dag.lost")
    tags = {"batchwork_id": "dag.lost", "batchwork_fp": fingerprint[:16], "batchwork_shard": "1/1"}
    async with client_for(emulator) as client:
        adapter = client.adapter("google")
        assert isinstance(adapter, GoogleAdapter)
        system = adapter.cache_plan(ref, [json.loads(line) for line in shard])[0]
        name, _ = await adapter._cached_content(ref, system, tags, CallProgress({}))
        adapter.__dict__.pop("_prefix_caches")  # a new process: only the provider knows the cache
        ledger.write({"identity": "dag.lost", "fingerprint": fingerprint, "model": str(ref), "shards": [
            {"index": 0, "status": "intent", "request_count": len(shard), "intent_at": time.time(), "calls": {}}]})
        job = await client.submit(MODEL, requests, cache_prefix=True, ledger=ledger, identity="dag.lost")
        assert len(cache_creates(emulator, start)) == 1
        assert all(r["cachedContent"] == name for r in sent_requests(emulator, job.batch_ids[0]))
        await client.wait(job, poll_interval=0.1, timeout=60)
        await client.write_parquet(job, f"{tmp_path}/out.parquet")
    assert live_caches(emulator) == []


@pytest.mark.parametrize(("case", "why"), [
    ("short", "below gemini-2.5-flash's minimum"),
    ("different", "do not all share the same system prompt"),
    ("refused", "the API refused the cache"),
    ("single", "would cost storage"),
])
async def test_fallback_sends_the_system_prompt_with_a_log_line(
        emulator: Emulator, tmp_path: Path, caplog: pytest.LogCaptureFixture, case: str, why: str) -> None:
    start = len(emulator.requests)
    if case == "short":
        requests = [{"custom_id": f"s{i}", "prompt": f"q {i}", "system": "be brief"} for i in range(4)]
    elif case == "different":
        requests = [{"custom_id": f"s{i}", "prompt": f"q {i}", "system": f"{SYSTEM} {i}"} for i in range(4)]
    elif case == "refused":  # long in characters (our estimate), one token for the service: "too small"
        requests = [{"custom_id": f"s{i}", "prompt": f"q {i}", "system": "x" * 40_000} for i in range(4)]
    else:
        requests = [{"custom_id": "s0", "prompt": "q", "system": SYSTEM}]
    caplog.set_level(logging.INFO, logger="airflow_batchwork.adapters.google")
    async with client_for(emulator) as client:
        job = await client.submit(MODEL, requests, cache_prefix=True)
        await client.wait(job, poll_interval=0.1, timeout=60)
        await client.write_parquet(job, f"{tmp_path}/out.parquet")
    assert any("explicit caching is not used" in r.getMessage() and why in r.getMessage() for r in caplog.records)
    assert len(cache_creates(emulator, start)) == (1 if case == "refused" else 0)
    assert [c.status_code for c in cache_creates(emulator, start)] == ([400] if case == "refused" else [])
    sent = sent_requests(emulator, job.batch_ids[0])
    assert all("systemInstruction" in r and "cachedContent" not in r for r in sent)
    assert "resources" not in (job.batches[0].model_extra or {})
    rows = pq.read_table(tmp_path / "out.parquet").to_pylist()
    assert len(rows) == len(requests) and all(r["status"] == "succeeded" for r in rows)
    assert all(r["cache_read_tokens"] == 0 for r in rows)


def _inline_batch(emulator: Emulator, requests: list[dict[str, Any]]) -> str:
    body = {"batch": {"displayName": "t", "inputConfig": {"requests": {"requests": [
        {"request": r, "metadata": {"key": f"m{i}"}} for i, r in enumerate(requests)]}}}}
    answer = httpx.post(f"{emulator.base_url('google')}/v1beta/models/gemini-2.5-flash:batchGenerateContent",
                        json=body, headers={"x-goog-api-key": "k"})
    answer.raise_for_status()
    return str(answer.json()["name"])


def _wait_done(emulator: Emulator, name: str) -> dict[str, Any]:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        operation = httpx.get(f"{emulator.base_url('google')}/v1beta/{name}", headers={"x-goog-api-key": "k"}).json()
        if operation.get("done"):
            return dict(operation)
        time.sleep(0.1)
    raise AssertionError(f"{name} did not finish")


def test_emulator_refuses_unknown_caches_and_a_system_instruction_beside_a_cache(emulator: Emulator) -> None:
    base, headers = emulator.base_url("google"), {"x-goog-api-key": "k"}
    created = httpx.post(f"{base}/v1beta/cachedContents", headers=headers, json={
        "model": "models/gemini-2.5-flash", "systemInstruction": {"parts": [{"text": SYSTEM}]}, "ttl": "600s"})
    assert created.status_code == 200, created.text
    name = created.json()["name"]
    other = httpx.post(f"{base}/v1beta/cachedContents", headers=headers, json={
        "model": "models/gemini-2.5-pro", "systemInstruction": {"parts": [{"text": SYSTEM}]}})
    user = [{"role": "user", "parts": [{"text": "hi"}]}]
    batch = _inline_batch(emulator, [
        {"contents": user, "cachedContent": name},
        {"contents": user, "cachedContent": "cachedContents/nosuchcache"},
        {"contents": user, "cachedContent": name, "systemInstruction": {"parts": [{"text": "again"}]}},
        {"contents": user, "cachedContent": other.json()["name"]},
    ])
    entries = _wait_done(emulator, batch)["response"]["inlinedResponses"]["inlinedResponses"]
    ok, unknown, both, model = entries
    assert ok["response"]["usageMetadata"]["cachedContentTokenCount"] == 5000
    assert ok["response"]["usageMetadata"]["promptTokenCount"] == 5001
    assert unknown["error"]["code"] == 7 and "CachedContent not found" in unknown["error"]["message"]
    assert both["error"]["code"] == 3 and "system instruction should not be set" in both["error"]["message"]
    assert model["error"]["code"] == 3 and "has to be the same" in model["error"]["message"]
    # Too small, get/delete of an unknown name, and the delete itself.
    small = httpx.post(f"{base}/v1beta/cachedContents", headers=headers,
                       json={"model": "models/gemini-2.5-flash", "systemInstruction": {"parts": [{"text": "hi"}]}})
    assert small.status_code == 400 and "Cached content is too small" in small.text
    assert httpx.get(f"{base}/v1beta/cachedContents/nosuchcache", headers=headers).status_code == 403
    assert httpx.delete(f"{base}/v1beta/{name}", headers=headers).json() == {}
    assert httpx.delete(f"{base}/v1beta/{other.json()['name']}", headers=headers).json() == {}
    assert httpx.get(f"{base}/v1beta/{name}", headers=headers).status_code == 403
    unknown_field = httpx.post(f"{base}/v1beta/cachedContents", headers=headers,
                               json={"model": "models/gemini-2.5-flash", "ttlSeconds": 60})
    assert unknown_field.status_code == 400 and "ttlSeconds" in unknown_field.text


async def test_the_shards_of_one_job_share_one_cache(emulator: Emulator, tmp_path: Path) -> None:
    start = len(emulator.requests)
    requests = [{"custom_id": f"m{i}", "prompt": f"ask {i}", "system": SYSTEM} for i in range(7)]
    ledger = FsspecLedger(f"{tmp_path}/state", "dag.shards")
    async with client_for(emulator) as client:
        job = await client.submit(MODEL, requests, cache_prefix=True, limits={"max_requests": 3}, ledger=ledger,
                                  identity="dag.shards")
        assert [b.request_count for b in job.batches] == [3, 3, 1]
        [create] = cache_creates(emulator, start)
        [name] = [c["name"] for c in live_caches(emulator)]
        # The last batch has one request: it still reads the job's cache (made for the batches before it).
        for batch_id in job.batch_ids:
            assert all(r["cachedContent"] == name for r in sent_requests(emulator, batch_id))
        await client.wait(job, poll_interval=0.1, timeout=60)
        await client.write_parquet(job, f"{tmp_path}/out/")
    assert create.status_code == 200
    assert [r.status_code for r in emulator.requests[start:] if r.method == "DELETE" and name in r.path] == [200]
    assert live_caches(emulator) == []


@pytest.mark.parametrize("kill_at", [1, 2, 3])
async def test_sigkill_during_submit_then_retry_makes_one_cache(emulator: Emulator, tmp_path: Path,
                                                                 kill_at: int) -> None:
    """A real child process submitting 3 shards with cache_prefix is SIGKILLed once the emulator has answered
    its `kill_at`-th Gemini request (early kills may land while the cache create is in flight, or before the
    ledger write), then run again to completion: one cache for the job, every batch names it, no extra batch.
    A create the kill cut before its answer is recorded by the emulator with status 500 (no status line was
    sent); whether it made a cache or not, exactly one cache of the job may exist afterwards."""
    from tests.test_crash_kill import run_child

    identity = f"dag.kill{kill_at}"
    spec = {"provider": "google", "model": MODEL, "base_url": emulator.base_url("google"), "n": 9,
            "max_requests": 3, "identity": identity, "state": f"{tmp_path}/state", "handle": f"{tmp_path}/job.json",
            "system": SYSTEM, "cache_prefix": True, "mode": "submit"}
    start = len(emulator.requests)
    assert run_child(spec, emulator, kill_at=kill_at) is None
    run_child(spec, emulator, kill_at=None)
    job = json.loads(Path(spec["handle"]).read_text())
    statuses = [r.status_code for r in cache_creates(emulator, start)]
    assert statuses.count(200) == 1 and set(statuses) <= {200, 500}, statuses
    names = {n for b in job["batches"] for n in b.get("resources", [])}
    assert len(names) == 1 and len(job["batches"]) == 3
    [name] = names
    assert [c["name"] for c in live_caches(emulator) if identity in str(c.get("displayName"))] == [name]
    for batch in job["batches"]:
        assert all(r["cachedContent"] == name for r in sent_requests(emulator, batch["id"]))
    ours = [b for b in emulator.batches("google") if identity in str(b.extra.get("display_name"))]
    assert len(ours) == 3  # no extra batch
    async with client_for(emulator) as client:
        await client.wait(job, poll_interval=0.1, timeout=60)
        await client.write_parquet(job, f"{tmp_path}/out/")
    assert name not in [c["name"] for c in live_caches(emulator)]


async def test_resubmission_rounds_delete_their_caches(emulator: Emulator, tmp_path: Path) -> None:
    """max_item_retries: each attempt's cache is deleted when that attempt is collected; the round makes its own
    (its items are sent from the stored encoding, so they name the round's cache). The emulator fails a
    `[[transient]]` item once per distinct body, and a round's body names a new cache, so the two marked items
    fail again in the round: what is checked here is the caches' lifecycle and the rows, not the retry."""
    from airflow_batchwork.engine.resubmit import collect_with_retries

    start = len(emulator.requests)
    requests = [{"custom_id": f"t{i}", "prompt": f"ask {i}" + (" [[transient]]" if i < 2 else ""),
                 "system": SYSTEM} for i in range(5)]
    async with client_for(emulator) as client:
        job = await client.submit(MODEL, requests, cache_prefix=True,
                                  ledger=FsspecLedger(f"{tmp_path}/state", "rounds"), identity="rounds")
        [first] = job.batches[0].model_extra["resources"]
        manifest = await collect_with_retries(client, job, f"{tmp_path}/rounds/", max_item_retries=1,
                                              poll_interval=0.1, timeout=60)
    rows = {r["custom_id"]: r for r in pq.read_table(f"{tmp_path}/rounds/").to_pylist()}
    assert manifest["rows"] == 5
    # The rounds carry the job's cache_prefix flag: the final dataset has the cache token columns for every row,
    # those of the first attempt and those of the round alike.
    for i in range(5):
        assert "cache_read_tokens" in rows[f"t{i}"]
    for i in range(2, 5):
        usage = json.loads(rows[f"t{i}"]["response"])["response"]["usageMetadata"]
        assert rows[f"t{i}"]["status"] == "succeeded" and usage["cachedContentTokenCount"] == 5000
        assert rows[f"t{i}"]["cache_read_tokens"] == 5000
    creates = cache_creates(emulator, start)
    assert [c.status_code for c in creates] == [200, 200]  # the job's cache, then the round's (2 items)
    deletes = [r for r in emulator.requests[start:] if r.method == "DELETE" and "/cachedContents/" in r.path]
    assert [d.status_code for d in deletes] == [200, 200] and first in deletes[0].path
    assert live_caches(emulator) == []
