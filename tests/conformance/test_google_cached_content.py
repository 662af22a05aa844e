"""Gemini explicit context caching judged by its own material: the `CachedContent` and
`ListCachedContentsResponse` schemas generated from the GAPIC protos (google-ai-generativelanguage v1beta), the
`google-genai` SDK's request builder for `caches.create`, and the SDK talking to the emulator's routes.

Checked: the create body our adapter sends equals what google-genai builds for the same config and passes the
proto schema; the batch create body whose items name the cache passes `BatchGenerateContentRequest`; the
emulator's create/get/list/delete answers pass the schemas and are read by the SDK; the inline responses that
read the cache (`usageMetadata.cachedContentTokenCount`) pass `InlinedResponse`; known-bad cache bodies are
refused by the schema (it is not toothless).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from google import genai
from google.genai import caches as sdk_caches
from google.genai import types

from airflow_batchwork.adapters.google import GoogleAdapter
from airflow_batchwork.core import BatchClient, Credentials
from airflow_batchwork.testing import Emulator, conformance
from airflow_batchwork.values.refs import parse_model

P = "google"
MODEL = "google/gemini-2.5-flash"
SYSTEM = " ".join(f"fact{i}" for i in range(3000))


def judge(name: str, obj: Any) -> None:
    problems = conformance.violations(P, name, obj)
    assert problems == [], f"{name}: {problems}\n{json.dumps(obj)[:1500]}"


def sdk_for(emulator: Emulator) -> genai.Client:
    return genai.Client(api_key="test-key", http_options={"base_url": emulator.base_url(P)})


def test_our_create_body_is_the_sdks_and_passes_the_proto_schema() -> None:
    adapter = GoogleAdapter.offline()
    adapter.cached_content_ttl = 172800
    ref = parse_model(MODEL)
    system = {"parts": [{"text": SYSTEM}]}
    ours = adapter.cache_body(ref, system, "batchwork {\"batchwork_shard\":\"1/1\"}")
    judge("CachedContent", ours)
    theirs = sdk_caches._CreateCachedContentParameters_to_mldev(
        genai.Client(api_key="k")._api_client,
        {"model": "gemini-2.5-flash", "config": types.CreateCachedContentConfig(
            ttl="172800s", display_name="batchwork {\"batchwork_shard\":\"1/1\"}",
            system_instruction=types.Content(parts=[types.Part(text=SYSTEM)]))})
    # The SDK adds the role "user" to a system instruction given as Content without one; the proto's
    # Content.role is optional and the caching guide's REST example sends none.
    theirs["systemInstruction"].pop("role", None)
    assert ours == theirs


async def test_batch_body_answers_and_results_of_a_cached_job(emulator: Emulator, tmp_path: Path) -> None:
    requests = [{"custom_id": f"c{i}", "prompt": f"q {i}", "system": SYSTEM} for i in range(3)]
    async with BatchClient({P: Credentials(api_key="test-key", base_url=emulator.base_url(P))}) as client:
        job = await client.submit(MODEL, requests, cache_prefix=True)
        [name] = job.batches[0].model_extra["resources"]
        [found] = [b for b in emulator.batches(P) if b.id == job.batch_ids[0]]
        body = found.extra["create_body"]
        judge("BatchGenerateContentRequest", body)
        assert {e["request"]["cachedContent"] for e in body["batch"]["inputConfig"]["requests"]["requests"]} \
            == {name}
        headers = {"x-goog-api-key": "test-key"}
        got = httpx.get(f"{emulator.base_url(P)}/v1beta/{name}", headers=headers).json()
        judge("CachedContent", got)
        listed = httpx.get(f"{emulator.base_url(P)}/v1beta/cachedContents", headers=headers).json()
        judge("ListCachedContentsResponse", listed)
        await client.wait(job, poll_interval=0.1, timeout=60)
        operation = httpx.get(f"{emulator.base_url(P)}/v1beta/{job.batch_ids[0]}", headers=headers).json()
        judge("GenerateContentBatchOperation", operation)
        for entry in operation["response"]["inlinedResponses"]["inlinedResponses"]:
            judge("InlinedResponse", entry)
            assert entry["response"]["usageMetadata"]["cachedContentTokenCount"] == 3000
        await client.write_parquet(job, f"{tmp_path}/out.parquet")
    empty = httpx.get(f"{emulator.base_url(P)}/v1beta/cachedContents", headers=headers)
    judge("ListCachedContentsResponse", empty.json())


def test_the_sdk_creates_reads_lists_and_deletes_emulated_caches(emulator: Emulator) -> None:
    sdk = sdk_for(emulator)
    created = sdk.caches.create(model="gemini-2.5-flash", config=types.CreateCachedContentConfig(
        system_instruction=SYSTEM, ttl="600s", display_name="sdk-cache"))
    assert created.name and created.name.startswith("cachedContents/")
    assert created.model == "models/gemini-2.5-flash" and created.display_name == "sdk-cache"
    assert created.usage_metadata is not None and created.usage_metadata.total_token_count == 3000
    assert created.expire_time is not None and created.create_time is not None
    assert 590 <= created.expire_time.timestamp() - created.create_time.timestamp() <= 600
    assert sdk.caches.get(name=created.name).name == created.name
    assert created.name in [c.name for c in sdk.caches.list()]
    sdk.caches.delete(name=created.name)
    with pytest.raises(genai.errors.ClientError) as refused:
        sdk.caches.get(name=created.name)
    assert refused.value.code == 403
    judge("HttpErrorBody", refused.value.details)
    # A batch item built by the SDK with config.cached_content names the cache in the request (mldev).
    again = sdk.caches.create(model="gemini-2.5-flash", config={"system_instruction": SYSTEM, "ttl": "600s"})
    job = sdk.batches.create(model="gemini-2.5-flash", src=[{
        "contents": [{"parts": [{"text": "Hello!"}], "role": "user"}],
        "config": {"cached_content": again.name}, "metadata": {"key": "k1"}}])
    assert job.name
    deadline = time.monotonic() + 30
    done = sdk.batches.get(name=job.name)
    while not done.done:
        assert time.monotonic() < deadline
        time.sleep(0.05)
        done = sdk.batches.get(name=job.name)
    [answer] = done.dest.inlined_responses  # type: ignore[union-attr]
    assert answer.response is not None and answer.response.usage_metadata is not None
    assert answer.response.usage_metadata.cached_content_token_count == 3000
    sdk.caches.delete(name=str(again.name))


@pytest.mark.parametrize(("bad", "needle"), [
    ({"systemInstruction": {"parts": [{"text": "x"}]}}, "'model' is a required property"),
    ({"model": "models/m", "ttl": "600s", "expireTime": "2026-12-01T00:00:00Z"}, "False schema"),
    ({"model": "models/m", "ttl": 600}, "is not of type 'string'"),
    ({"model": "models/m", "ttlSeconds": 600}, "'ttlSeconds'"),
])
def test_known_bad_cache_bodies_are_refused(bad: dict[str, Any], needle: str) -> None:
    problems = conformance.violations(P, "CachedContent", bad)
    assert problems and any(needle in p for p in problems), problems
