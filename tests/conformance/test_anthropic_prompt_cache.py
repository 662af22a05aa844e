"""Anthropic prompt caching judged by the SDK's types (``schemas/anthropic.json``): the bodies `cache_prefix`
makes (``TextBlockParam`` with ``CacheControlEphemeralParam``) and the usage the emulator reports (``Usage``
with ``cache_creation``), fetched over real HTTP."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
import pytest

from airflow_batchwork.adapters.anthropic import AnthropicAdapter
from airflow_batchwork.testing import Emulator, conformance
from airflow_batchwork.values.refs import parse_model
from airflow_batchwork.values.requests import prepare_requests

P = "anthropic"
LONG = " ".join(f"w{i}" for i in range(4200))  # above claude-haiku-4-5's 4,096-token minimum


def _entry(raw: dict[str, Any], model: str = "claude-haiku-4-5") -> dict[str, Any]:
    ref = parse_model(f"anthropic/{model}")
    [request] = prepare_requests([{"custom_id": "r1", **raw}], ref=ref)
    return dict(json.loads(AnthropicAdapter.offline().encode(ref, request)))


@pytest.mark.parametrize("value", [True, "1h", "5m"])
def test_cache_prefix_bodies_conform(value: object) -> None:
    entry = _entry({"prompt": "q", "system": "shared rules", "cache_prefix": value})
    assert conformance.violations(P, "MessageBatchRequest", entry) == []
    [block] = entry["params"]["system"]
    assert conformance.violations(P, "TextBlockParam", block) == []
    assert block["cache_control"] == {"type": "ephemeral", "ttl": "5m" if value == "5m" else "1h"}


def test_known_bad_cache_control_rejected() -> None:
    entry = _entry({"prompt": "q", "system": "rules", "cache_prefix": True})
    entry["params"]["system"][0]["cache_control"] = {"type": "persistent"}
    assert conformance.violations(P, "MessageBatchRequest", entry)
    entry["params"]["system"][0]["cache_control"] = {"type": "ephemeral", "ttl": "2h"}
    assert conformance.violations(P, "MessageBatchRequest", entry)


def _ended(http: httpx.Client, batch_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        batch = http.get(f"/v1/messages/batches/{batch_id}").json()
        if batch["processing_status"] == "ended":
            return dict(batch)
        time.sleep(0.05)
    raise AssertionError("batch did not end")


def _usages(http: httpx.Client, entries: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    batch = http.post("/v1/messages/batches", json={"requests": entries}).json()
    ended = _ended(http, batch["id"])
    lines = [json.loads(line) for line in http.get(ended["results_url"]).text.splitlines() if line]
    for line in lines:
        assert conformance.violations(P, "MessageBatchSucceededResult", line["result"]) == []
        assert conformance.violations(P, "Usage", line["result"]["message"]["usage"]) == []
    return {line["custom_id"]: line["result"]["message"]["usage"] for line in lines}


def test_emulator_reports_cache_writes_then_reads_in_the_usage_shape() -> None:
    with Emulator(processing_seconds=0.1) as emu, httpx.Client(
            base_url=emu.base_url(P), headers={"x-api-key": "k", "anthropic-version": "2023-06-01"}) as http:
        marked = [{**_entry({"prompt": f"q{i}", "system": LONG, "cache_prefix": True}), "custom_id": f"c{i}"}
                  for i in range(3)]
        cold = _usages(http, marked)
        # A cold batch: every item writes the prefix, none reads another's write.
        for usage in cold.values():
            assert (usage["cache_creation_input_tokens"], usage["cache_read_input_tokens"]) == (4200, 0)
            assert usage["cache_creation"] == {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 4200}
            assert usage["input_tokens"] == 1
        warm = _usages(http, marked)
        for usage in warm.values():
            assert (usage["cache_creation_input_tokens"], usage["cache_read_input_tokens"]) == (0, 4200)
        # Below the model's minimum nothing is cached, and zeros are reported.
        short = _usages(http, [_entry({"prompt": "q", "system": "short rules", "cache_prefix": "5m"})])
        assert (short["r1"]["cache_creation_input_tokens"], short["r1"]["cache_read_input_tokens"]) == (0, 0)
