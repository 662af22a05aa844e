"""Mistral: the official ``mistralai`` SDK against the emulator, and our adapter end to end (→ Parquet)."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from mistralai.client import Mistral
from mistralai.client.errors import SDKError
from mistralai.client.models import BatchJob, ChatCompletionResponse, EmbeddingResponse

from airflow_batchwork.adapters.mistral import MistralAdapter, mistral_error
from airflow_batchwork.core import RESULT_SCHEMA, BatchClient, Credentials, parse_model
from airflow_batchwork.testing import Emulator
from airflow_batchwork.values.errors import ProviderAPIError, RequestValidationError
from airflow_batchwork.values.requests import BatchRequest

MODEL = "mistral-small-latest"
TERMINAL = {"SUCCESS", "FAILED", "TIMEOUT_EXCEEDED", "CANCELLED"}
STATES = TERMINAL | {"QUEUED", "RUNNING", "CANCELLATION_REQUESTED"}
THREE = [
    {"custom_id": "ok", "prompt": "hello world"},
    {"custom_id": "bad", "prompt": "boom [[error]]"},
    {"custom_id": "late", "prompt": "slow [[expire]]"},
]


@pytest.fixture
def emu() -> Iterator[Emulator]:
    with Emulator(processing_seconds=0.2) as emulator:
        yield emulator


@pytest.fixture
def sdk(emu: Emulator) -> Mistral:
    return Mistral(api_key="test", server_url=emu.base_url("mistral"))


def _line(custom_id: str, text: str) -> dict[str, Any]:
    return {
        "custom_id": custom_id,
        "body": {"max_tokens": 32, "messages": [{"role": "user", "content": text}]},
    }


def _wait(sdk: Mistral, job_id: str, *, inline: bool = False) -> tuple[BatchJob, list[str]]:
    seen: list[str] = []
    deadline = time.monotonic() + 10
    while True:
        job = sdk.batch.jobs.get(job_id=job_id, inline=inline)
        if not seen or seen[-1] != job.status:
            seen.append(str(job.status))
        if job.status in TERMINAL:
            return job, seen
        assert time.monotonic() < deadline, f"stuck in {job.status}"
        time.sleep(0.02)


def client_for(emu: Emulator, key: str = "test-key") -> BatchClient:
    return BatchClient({"mistral": Credentials(api_key=key, base_url=emu.base_url("mistral"))})


def _rows(path: Path) -> dict[str, dict[str, Any]]:
    table = pq.read_table(path)
    assert table.schema.remove_metadata() == RESULT_SCHEMA
    return {row["custom_id"]: row for row in table.to_pylist()}


# --- the official SDK ----------------------------------------------------------------------------


def test_sdk_file_job_round_trip(sdk: Mistral) -> None:
    data = "\n".join(json.dumps(_line(c, t)) for c, t in [("a", "hi there"), ("b", "x [[error]]")]).encode()
    uploaded = sdk.files.upload(file={"file_name": "input.jsonl", "content": data}, purpose="batch")
    assert (uploaded.purpose, uploaded.sample_type, uploaded.num_lines) == ("batch", "batch_request", 2)
    created = sdk.batch.jobs.create(
        input_files=[uploaded.id], model=MODEL, endpoint="/v1/chat/completions", metadata={"team": "x"}
    )
    assert created.status == "QUEUED" and created.metadata == {"team": "x"}
    job, seen = _wait(sdk, created.id)
    assert seen[-1] == "SUCCESS" and set(seen) <= STATES
    counts = (job.total_requests, job.completed_requests, job.succeeded_requests, job.failed_requests)
    assert counts == (2, 2, 1, 1)
    assert job.output_file and job.error_file and job.errors == []

    output = [json.loads(line) for line in sdk.files.download(file_id=job.output_file).read().splitlines()]
    assert output[0]["custom_id"] == "a" and output[0]["response"]["status_code"] == 200
    completion = ChatCompletionResponse.model_validate(output[0]["response"]["body"])
    assert completion.choices[0].message is not None
    assert completion.choices[0].message.content == "echo: hi there"
    assert completion.model == MODEL and completion.usage.total_tokens == 5
    errors = [json.loads(line) for line in sdk.files.download(file_id=job.error_file).read().splitlines()]
    assert errors[0]["response"]["status_code"] == 400
    assert errors[0]["response"]["body"]["object"] == "error"


def test_sdk_inline_job_and_embeddings(emu: Emulator, sdk: Mistral) -> None:
    created = sdk.batch.jobs.create(
        requests=[{"custom_id": "e1", "body": {"input": "hello", "output_dimension": 4}}],
        model="mistral-embed",
        endpoint="/v1/embeddings",
    )
    assert created.input_files == []
    job, _ = _wait(sdk, created.id, inline=True)
    assert job.status == "SUCCESS" and job.output_file is None and job.outputs is not None
    embedding = EmbeddingResponse.model_validate(job.outputs[0]["response"]["body"])
    assert embedding.data[0].embedding is not None and len(embedding.data[0].embedding) == 4
    url = f"{emu.base_url('mistral')}/v1/batch/jobs/{job.id}"
    assert "outputs" not in httpx.get(url, headers={"Authorization": "Bearer k"}).json()


def test_sdk_list_cancel_and_errors(emu: Emulator, sdk: Mistral) -> None:
    emu.processing_seconds = 30
    ids = [
        sdk.batch.jobs.create(requests=[_line("a", f"p{i}")], model=MODEL, endpoint="/v1/chat/completions").id
        for i in range(3)
    ]
    first = sdk.batch.jobs.list(page=0, page_size=2)
    second = sdk.batch.jobs.list(page=1, page_size=2)
    assert first.total == 3 and [j.id for j in first.data or []] == ids[::-1][:2]
    assert [j.id for j in second.data or []] == [ids[0]]
    assert sdk.batch.jobs.list(status=["RUNNING", "QUEUED"]).total == 3

    cancelled = sdk.batch.jobs.cancel(job_id=ids[0])
    assert cancelled.status == "CANCELLATION_REQUESTED"
    job, _ = _wait(sdk, ids[0])
    assert job.status == "CANCELLED" and job.succeeded_requests == 0

    with pytest.raises(SDKError) as missing:
        sdk.batch.jobs.get(job_id="nope")
    assert missing.value.status_code == 404 and json.loads(missing.value.body)["object"] == "error"
    with pytest.raises(SDKError) as denied:
        Mistral(api_key="invalid", server_url=emu.base_url("mistral")).batch.jobs.list()
    assert denied.value.status_code == 401 and json.loads(denied.value.body) == {"detail": "Unauthorized"}


# --- our adapter ---------------------------------------------------------------------------------


async def test_three_request_job_to_parquet(emulator: Emulator, tmp_path: Path) -> None:
    async with client_for(emulator) as client:
        job = await client.submit(
            f"mistral/{MODEL}", THREE, defaults={"max_output_tokens": 50, "seed": 7}, metadata={"run": "1"}
        )
        final = await client.wait(job, poll_interval=0.1, timeout=30)
        manifest = await client.write_parquet(job, f"file://{tmp_path}/out.parquet")
    assert final.state == "expired" and final.counts.expired == 1 and final.counts.errored == 1
    assert manifest["rows"] == 3 and manifest["counts"] == {"succeeded": 1, "errored": 1, "expired": 1}
    rows = _rows(tmp_path / "out.parquet")
    ok, bad, late = rows["ok"], rows["bad"], rows["late"]
    assert (ok["status"], ok["text"], ok["finish_reason"]) == ("succeeded", "echo: hello world", "stop")
    assert (ok["input_tokens"], ok["output_tokens"], ok["total_tokens"]) == (2, 3, 5)
    assert (ok["provider"], ok["model"], ok["batch_id"]) == (
        "mistral",
        f"mistral.chat/{MODEL}",
        job.batch_ids[0],
    )
    assert json.loads(ok["response"])["response"]["body"]["object"] == "chat.completion"
    assert bad["status"] == "errored" and bad["text"] is None and bad["error_code"] and bad["error_message"]
    assert json.loads(bad["response"])["custom_id"] == "bad"
    assert late["status"] == "expired" and "timeout" in late["error_message"]
    assert isinstance(json.loads(late["response"])["error"], str)  # the bare-string error form

    sent = emulator.batches("mistral")[-1]
    assert sent.extra["input_files"] == [] and sent.metadata == {"run": "1"}  # small job: inline
    assert "model" not in sent.items[0].body and sent.items[0].body["random_seed"] == 7


async def test_large_jobs_upload_a_file(
    emu: Emulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(MistralAdapter, "inline_max_requests", 2)
    async with client_for(emu) as client:
        job = await client.submit(f"mistral/{MODEL}", [{"prompt": f"item {i}"} for i in range(3)])
        await client.wait(job, poll_interval=0.1, timeout=30)
        await client.write_parquet(job, f"{tmp_path}/out.parquet")
    (sent,) = emu.batches("mistral")
    assert len(sent.extra["input_files"]) == 1 and sent.extra["output_file"]
    rows = _rows(tmp_path / "out.parquet")
    assert sorted(r["text"] for r in rows.values()) == ["echo: item 0", "echo: item 1", "echo: item 2"]


async def test_embedding_job_to_parquet(emulator: Emulator, tmp_path: Path) -> None:
    async with client_for(emulator) as client:
        job = await client.submit(
            "mistral.embedding/mistral-embed",
            [{"custom_id": "a", "value": "hello"}, {"custom_id": "b", "value": "world", "dimensions": 4}],
            defaults={"dimensions": 16},
        )
        await client.wait(job, poll_interval=0.1, timeout=30)
        await client.write_parquet(job, f"{tmp_path}/emb.parquet")
    table = pq.read_table(tmp_path / "emb.parquet")
    assert table.schema.field("embedding").type == pa.list_(pa.float32())
    rows = {r["custom_id"]: r for r in table.to_pylist()}
    assert len(rows["a"]["embedding"]) == 16 and len(rows["b"]["embedding"]) == 4
    assert math.isclose(sum(x * x for x in rows["a"]["embedding"]), 1.0, rel_tol=1e-5)
    assert rows["a"]["status"] == "succeeded" and rows["a"]["text"] is None and rows["a"]["input_tokens"] == 1
    assert emulator.batches("mistral")[-1].items[1].body == {"input": "world", "output_dimension": 4}


async def test_provider_shaped_401_and_404(emulator: Emulator) -> None:
    async with client_for(emulator, key="invalid") as client:
        with pytest.raises(ProviderAPIError) as denied:
            await client.submit(f"mistral/{MODEL}", [{"prompt": "hi"}])
    assert (denied.value.status_code, denied.value.message) == (401, "Unauthorized")
    async with client_for(emulator) as client:
        with pytest.raises(ProviderAPIError) as missing:
            await client.adapter("mistral").status("batch-nope")
    assert missing.value.status_code == 404 and "batch-nope" in missing.value.message


async def test_list_pages_and_cancel(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(MistralAdapter, "list_page_size", 2)
    with Emulator(processing_seconds=30) as slow:
        async with client_for(slow) as client:
            jobs = [
                await client.submit(f"mistral/{MODEL}", [{"prompt": f"p{i}"}], metadata={"n": str(i)})
                for i in range(5)
            ]
            adapter = client.adapter("mistral")
            listed = [b.id async for b in adapter.list_batches(limit=500)]
            assert listed == [job.batch_ids[0] for job in reversed(jobs)]  # 3 pages of 2
            assert [b.id async for b in adapter.list_batches(limit=3)] == listed[:3]
            assert await adapter.find_batch({"n": "3"}) == jobs[3].batch_ids[0]

            assert (await client.cancel(jobs[0])).state == "cancelling"
            final = await client.wait(jobs[0], poll_interval=0.1, timeout=30)
            rows = [item async for item in client.results(jobs[0])]
    assert final.state == "cancelled" and final.counts.canceled == 1
    assert [(r.status, r.error_code) for r in rows] == [("canceled", "canceled")]


def test_request_mapping_refusals_and_error_bodies() -> None:
    with pytest.raises(RequestValidationError, match="top_k"):
        BatchClient({"mistral": Credentials("k")}).prepare(
            "mistral.embedding/mistral-embed", [{"value": "x", "top_k": 3}]
        )
    with pytest.raises(RequestValidationError, match="temperature"):
        BatchClient({"mistral": Credentials("k")}).prepare(
            "mistral.embedding/mistral-embed", [{"value": "x", "temperature": 0.5}]
        )
    request = BatchRequest(custom_id="a", prompt="hi", system="be brief", stop_sequences=["."], seed=3, top_k=5)
    line = json.loads(MistralAdapter.offline().encode(parse_model(f"mistral/{MODEL}"), request))
    assert line == {
        "custom_id": "a",
        "body": {
            "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}],
            "stop": ["."],
            "random_seed": 3,
            "top_k": 5,
        },
    }

    def parsed(status: int, body: object) -> tuple[str | None, str]:
        return mistral_error(httpx.Response(status, json=body))

    assert parsed(401, {"detail": "Unauthorized"}) == (None, "Unauthorized")
    assert parsed(401, {"message": "Unauthorized", "request_id": "r"}) == (None, "Unauthorized")
    assert parsed(
        429, {"object": "error", "message": "slow down", "type": "rate_limited", "code": "1300"}
    ) == (
        "1300",
        "slow down",
    )
    details = {"detail": [{"loc": ["body", "model"], "msg": "Field required", "type": "missing"}]}
    assert parsed(422, details) == (None, "body.model: Field required")
    assert parsed(422, {"object": "error", "message": details, "type": "invalid_request_error"}) == (
        "invalid_request_error",
        "body.model: Field required",
    )
