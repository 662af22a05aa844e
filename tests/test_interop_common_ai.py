"""The optional common-ai bridge against the emulator (skipped when apache-airflow-providers-common-ai is absent)."""

from __future__ import annotations

import time

import pytest

pytest.importorskip("airflow.providers.common.ai.batch.base")

from airflow.providers.common.ai.batch import dispatch
from airflow.providers.common.ai.exceptions import LLMBatchLimitExceededError

from airflow_batchwork.interop.common_ai import ENTRY_POINTS
from airflow_batchwork.testing import Emulator


class _Plain:
    is_structured = False
    json_schema: dict = {}


@pytest.mark.parametrize(("provider", "model"), [("openai", "gpt-4o-mini"), ("anthropic", "claude-haiku-4-5"),
                                                 ("google", "gemini-2.5-flash")])
def test_bridge_round_trip(emulator: Emulator, provider: str, model: str) -> None:
    assert len(ENTRY_POINTS) == 7
    module, _, name = ENTRY_POINTS[f"batchwork-{provider}"].partition(":")
    dispatch.register_adapter(getattr(__import__(module, fromlist=[name]), name))
    adapter = dispatch.get_adapter_class("batchwork", f"batchwork-{provider}:{model}")(
        api_key="k", base_url=emulator.base_url(provider))
    requests = [{"prompt": "hello world"}, {"prompt": "boom [[error]]"}]
    submitted = adapter.submit(requests, model=model, idempotency_key="abcdef0123456789", input_fingerprint="f" * 64,
                               output_spec=_Plain, max_tokens=32)
    while (state := adapter.get_batch(submitted.batch_id)).status == "in_progress":
        time.sleep(0.05)
    assert state.status == "completed"
    items = sorted(adapter.iter_results(submitted.batch_id), key=lambda i: i.index)
    assert [(i.index, i.provider_status) for i in items] == [(0, "success"), (1, "errored")]
    assert adapter.extract_output(items[0], _Plain).text == "echo: hello world"
    with pytest.raises(LLMBatchLimitExceededError):
        adapter.validate_requests([{"prompt": "x"}] * (adapter.max_requests + 1), model=model, output_spec=_Plain,
                                  idempotency_key="abcdef0123456789")
