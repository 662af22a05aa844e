"""Provider ids and URLs are checked before use; API keys never leak into reprs, errors or logs."""

from __future__ import annotations

import json
import logging

import httpx
import pytest

from airflow_batchwork.core import BatchClient, Credentials, ProviderAPIError, UnsafeResponseError
from airflow_batchwork.testing import Emulator
from airflow_batchwork.values.errors import ConfigurationError

SECRET = "sk-very-secret-key-123456"


class HostileProvider(httpx.AsyncBaseTransport):
    """A provider that answers with unsafe ids or a foreign results_url; records every host it is asked."""

    def __init__(self, batch: dict[str, object]) -> None:
        self.batch = batch
        self.hosts: list[str] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.hosts.append(request.url.host)
        if request.url.path.endswith("/files"):
            return httpx.Response(200, json={"id": "file-abc", "object": "file"})
        return httpx.Response(200, json=self.batch)


@pytest.mark.parametrize("bad_id", ["../../v1/files", "batch_1?x=y", "batch 1", "", "a/b"])
async def test_unsafe_batch_id_refused(bad_id: str) -> None:
    transport = HostileProvider({"id": bad_id, "status": "validating"})
    client = BatchClient({"openai": Credentials(SECRET, "https://api.example.test/v1")}, transport=transport)
    with pytest.raises(UnsafeResponseError, match="refusing to use openai batch id"):
        await client.submit("openai/gpt-4o-mini", [{"prompt": "x"}])


async def test_unsafe_id_from_handle_refused_before_http() -> None:
    transport = HostileProvider({})
    client = BatchClient({"openai": Credentials(SECRET, "https://api.example.test/v1")}, transport=transport)
    job = {"provider": "openai", "model": "openai.chat/m", "batches": [{"id": "../admin", "request_count": 1}],
           "request_count": 1}
    # A handle is validated as untrusted input when it is read: a configuration error (fail fast), no call.
    with pytest.raises(ConfigurationError, match=r"job\.batches\.0\.id"):
        await client.status(job)
    assert transport.hosts == []


async def test_anthropic_results_url_pinned_to_api_origin() -> None:
    transport = HostileProvider({
        "id": "msgbatch_1", "type": "message_batch", "processing_status": "ended",
        "request_counts": {"processing": 0, "succeeded": 1, "errored": 0, "canceled": 0, "expired": 0},
        "results_url": "https://collector.evil.test/steal",
    })
    client = BatchClient({"anthropic": Credentials(SECRET, "https://api.anthropic.test")}, transport=transport)
    job = {"provider": "anthropic", "model": "anthropic/claude", "batches": [{"id": "msgbatch_1", "request_count": 1}],
           "request_count": 1}
    with pytest.raises(UnsafeResponseError, match="not the configured API origin"):
        _ = [item async for item in client.results(job)]
    assert "collector.evil.test" not in transport.hosts


def test_key_not_in_repr() -> None:
    creds = Credentials(SECRET, "https://x")
    assert SECRET not in repr(creds)
    client = BatchClient({"openai": creds})
    assert SECRET not in repr(client.adapter("openai").http)
    assert SECRET not in repr(client.adapter("openai"))


async def test_key_absent_from_errors_and_logs(emulator: Emulator, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    async with BatchClient({"openai": Credentials(SECRET, emulator.base_url("openai"))}) as client:
        job = await client.submit("openai/gpt-4o-mini", [{"prompt": "x"}])
        await client.wait(job, poll_interval=0.1, timeout=30)
        _ = [item async for item in client.results(job)]
    async with BatchClient({"openai": Credentials("invalid", emulator.base_url("openai"))}) as client:
        with pytest.raises(ProviderAPIError) as info:
            await client.submit("openai/gpt-4o-mini", [{"prompt": "x"}])
    assert info.value.status_code == 401
    assert SECRET not in caplog.text
    assert SECRET not in str(info.value)


def test_keys_are_registered_with_airflows_secret_masker(monkeypatch: pytest.MonkeyPatch) -> None:
    from airflow.sdk._shared.secrets_masker.secrets_masker import redact

    from airflow_batchwork.hooks.batchwork import BatchworkHook

    env_key, conn_key, header = "sk-env-secret-98765", "sk-conn-secret-43210", "proj-header-secret-777"
    monkeypatch.delenv("AIRFLOW_CONN_BATCHWORK_MISTRAL", raising=False)
    monkeypatch.setenv("MISTRAL_API_KEY", env_key)
    BatchworkHook().credentials("mistral")
    monkeypatch.setenv("AIRFLOW_CONN_BATCHWORK_GROQ", json.dumps(
        {"conn_type": "batchwork", "password": conn_key, "extra": {"provider": "groq", "headers": {"X-P": header}}}
    ))
    BatchworkHook().credentials("groq")
    text = redact(f"calling with {env_key} and {conn_key} and {header}")
    assert env_key not in text and conn_key not in text and header not in text


def test_trigger_kwargs_and_handle_carry_no_secret(emulator: Emulator) -> None:
    from airflow_batchwork.triggers.batch import BatchCompleteTrigger

    async def submit() -> dict[str, object]:
        async with BatchClient({"openai": Credentials(SECRET, emulator.base_url("openai"))}) as client:
            return (await client.submit("openai/gpt-4o-mini", [{"prompt": "x"}])).to_dict()

    import asyncio

    handle = asyncio.run(submit())
    _, kwargs = BatchCompleteTrigger(job=handle, conn_id="batchwork_openai").serialize()
    assert SECRET not in json.dumps(handle) and SECRET not in json.dumps(kwargs)
