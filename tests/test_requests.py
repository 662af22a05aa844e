"""Bad input is refused before any HTTP call, with the field and the fix in the message."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from airflow_batchwork.core import BatchClient, ConfigurationError, Credentials, RequestValidationError


class NoNetwork(httpx.AsyncBaseTransport):
    """Fails the test if anything reaches the network."""

    def __init__(self) -> None:
        self.calls = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.calls += 1
        raise AssertionError(f"unexpected HTTP call {request.method} {request.url}")


@pytest.fixture
def offline() -> tuple[BatchClient, NoNetwork]:
    transport = NoNetwork()
    creds = {p: Credentials(api_key="k") for p in ("openai", "anthropic")}
    return BatchClient(creds, transport=transport), transport


BAD_REQUESTS: list[tuple[str, list[Any], dict[str, Any] | None, str]] = [
    ("openai/gpt-4o-mini", [], None, "requests: the request list is empty"),
    ("openai/gpt-4o-mini", [{"custom_id": "a"}], None, "requests[0].prompt: neither prompt nor messages"),
    ("openai/gpt-4o-mini", [{"prompt": "x", "messages": [{"role": "user", "content": "y"}]}], None,
     "give exactly one of prompt, messages or value"),
    ("openai/gpt-4o-mini", [{"custom_id": "a", "prompt": "x"}, {"custom_id": "a", "prompt": "y"}], None,
     "requests[1].custom_id: duplicate custom_id 'a'"),
    ("openai/gpt-4o-mini", [{"custom_id": "has space", "prompt": "x"}], None, "requests[0].custom_id"),
    ("openai/gpt-4o-mini", [{"custom_id": "x" * 65, "prompt": "x"}], None, "requests[0].custom_id"),
    ("openai/gpt-4o-mini", [{"prompt": "x", "temprature": 0.2}], None, "requests[0].temprature: unknown field"),
    ("openai/gpt-4o-mini", [{"prompt": "x", "temperature": 7}], None, "requests[0].temperature"),
    ("openai/gpt-4o-mini", [{"prompt": "x", "max_output_tokens": 0}], None, "requests[0].max_output_tokens"),
    ("openai/gpt-4o-mini", [{"messages": [{"role": "robot", "content": "x"}]}], None,
     "requests[0].messages[0].role"),
    ("openai/gpt-4o-mini", ["just a string"], None, "requests[0]: expected a dict"),
    ("openai/gpt-4o-mini", [{"prompt": "x"}], {"custom_id": "z"}, "defaults.custom_id: cannot be a job-level"),
    ("openai/gpt-4o-mini", [{"prompt": "x", "top_k": 3}], None, "requests[0].top_k: not supported by openai.chat"),
    ("openai.responses/gpt-5.5", [{"prompt": "x", "seed": 1}], None, "requests[0].seed: not supported"),
    ("openai.completion/m", [{"messages": [{"role": "user", "content": "x"}]}], None, "requests[0].messages"),
    ("openai.embedding/e", [{"prompt": "x"}], None, "requests[0].value: an embedding request needs `value`"),
    ("anthropic/claude", [{"prompt": "x", "seed": 3}], None, "requests[0].seed: not supported by anthropic"),
    ("nope/m", [{"prompt": "x"}], None, "model: unknown provider 'nope'"),
    ("openai.batch/m", [{"prompt": "x"}], None, "model: unknown endpoint 'batch'"),
]


@pytest.mark.parametrize(("model", "requests", "defaults", "needle"), BAD_REQUESTS)
async def test_bad_input_refused_before_http(
    offline: tuple[BatchClient, NoNetwork], model: str, requests: list[Any], defaults: Any, needle: str
) -> None:
    client, transport = offline
    with pytest.raises(ConfigurationError) as info:
        await client.submit(model, requests, defaults=defaults)
    assert needle in str(info.value)
    assert "Fix:" in str(info.value)
    assert transport.calls == 0


async def test_request_over_per_request_size(offline: tuple[BatchClient, NoNetwork]) -> None:
    client, transport = offline
    with pytest.raises(RequestValidationError, match=r"requests\[1\]: request 'big' is [\d,]+ bytes"):
        await client.submit("openai/gpt-4o-mini", [{"prompt": "ok"}, {"custom_id": "big", "prompt": "x" * 5000}],
                            limits={"max_request_bytes": 1000})
    assert transport.calls == 0


def test_several_problems_reported_together() -> None:
    client = BatchClient({"openai": Credentials(api_key="k")})
    with pytest.raises(RequestValidationError) as info:
        client.prepare("openai/m", [{"custom_id": "a b", "prompt": "x"}, {"prompt": None}]).close()
    assert "also:" in str(info.value)
    assert "requests[1]" in str(info.value)


def test_defaults_fill_unset_fields_only() -> None:
    client = BatchClient()
    with client.prepare(
        "openai/m", [{"prompt": "a"}, {"prompt": "b", "max_output_tokens": 5}], defaults={"max_output_tokens": 64}
    ) as job:
        lines = [json.loads(item) for item in job.shards[0]]
    assert [line["body"]["max_completion_tokens"] for line in lines] == [64, 5]
    assert [line["custom_id"] for line in lines] == ["request-0", "request-1"]


def test_prepare_shards_by_count_and_bytes_and_fingerprints() -> None:
    requests = [{"custom_id": f"r{i}", "prompt": "x" * 100} for i in range(10)]
    client = BatchClient()
    with client.prepare("openai/m", requests, limits={"max_requests": 4}) as by_count:
        assert [len(s) for s in by_count.shards] == [4, 4, 2]
        first = by_count.fingerprint
    with client.prepare("openai/m", requests, limits={"max_bytes": 600}) as by_bytes:
        assert all(s.nbytes <= 600 for s in by_bytes.shards) and sum(len(s) for s in by_bytes.shards) == 10
    with client.prepare("openai/m", requests, limits={"max_requests": 4}) as again:
        assert again.fingerprint == first
    with client.prepare("openai/m", [*requests[:-1], {"custom_id": "r9", "prompt": "y"}],
                        limits={"max_requests": 4}) as changed:
        assert changed.fingerprint != first


def test_missing_credentials_in_a_script_name_env_var_and_credentials_argument(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # A plain script has no Airflow connections: the fix names the env var and BatchClient(credentials=...).
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    client = BatchClient()
    with pytest.raises(ConfigurationError) as info:
        client.adapter("anthropic")
    assert info.value.field == "credentials"
    assert "ANTHROPIC_API_KEY" in str(info.value) and "BatchClient(credentials=" in str(info.value)
    assert "connection" not in str(info.value)
