"""Together: the official ``together`` SDK against the emulator, and our adapter end to end (→ Parquet)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pyarrow.parquet as pq
import pytest
import together
from together.lib.resources.files import FileAlreadyExistsError
from together.types import BatchJob
from together.types.chat import ChatCompletion

from airflow_batchwork.adapters.together import TogetherAdapter, api_base_url
from airflow_batchwork.core import RESULT_SCHEMA, BatchClient, Credentials, parse_model
from airflow_batchwork.testing import Emulator
from airflow_batchwork.values.errors import ProviderAPIError, RequestValidationError
from airflow_batchwork.values.requests import BatchRequest

MODEL = "meta-llama/Llama-3.3-70B-Instruct-Turbo"
TERMINAL = {"COMPLETED", "FAILED", "EXPIRED", "CANCELLED"}
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
def sdk(emu: Emulator) -> together.Together:
    return together.Together(api_key="test", base_url=emu.base_url("together"), max_retries=0)


def _input(tmp_path: Path, *pairs: tuple[str, str], name: str = "input.jsonl") -> Path:
    path = tmp_path / name
    path.write_text(
        "\n".join(
            json.dumps(
                {"custom_id": c, "body": {"model": MODEL, "messages": [{"role": "user", "content": t}]}}
            )
            for c, t in pairs
        )
    )
    return path


def _wait(sdk: together.Together, batch_id: str) -> tuple[BatchJob, list[str]]:
    seen: list[str] = []
    deadline = time.monotonic() + 10
    while True:
        batch = sdk.batches.retrieve(batch_id)
        if not seen or seen[-1] != batch.status:
            seen.append(str(batch.status))
        if batch.status in TERMINAL:
            return batch, seen
        assert time.monotonic() < deadline, f"stuck in {batch.status}"
        time.sleep(0.02)


def client_for(emu: Emulator, key: str = "test-key", base_url: str | None = None) -> BatchClient:
    return BatchClient({"together": Credentials(api_key=key, base_url=base_url or emu.base_url("together"))})


# --- the official SDK ----------------------------------------------------------------------------


def test_sdk_presigned_upload_and_batch_round_trip(
    emu: Emulator, sdk: together.Together, tmp_path: Path
) -> None:
    path = _input(tmp_path, ("a", "hi there"), ("b", "x [[error]]"))
    uploaded = sdk.files.upload(path, purpose="batch-api")
    assert (uploaded.purpose, uploaded.file_type, uploaded.bytes) == (
        "batch-api",
        "jsonl",
        path.stat().st_size,
    )
    assert emu.files("together")[0].data == path.read_bytes()
    # 302 → PUT to Location → preprocess, as the SDK does it.
    flow = [(r.method, r.path.split("/v1", 1)[-1], r.status_code) for r in emu.requests]
    assert flow[0] == ("POST", "/v1/files", 302) and flow[1][0] == "PUT" and flow[1][2] == 200
    assert flow[2] == ("POST", f"/v1/files/{uploaded.id}/preprocess", 200)

    created = sdk.batches.create(input_file_id=uploaded.id, endpoint="/v1/chat/completions", model_id=MODEL)
    assert created.job is not None and created.job.status == "VALIDATING"
    batch, seen = _wait(sdk, created.job.id or "")
    assert seen[-1] == "COMPLETED" and set(seen) <= {"VALIDATING", "IN_PROGRESS", "COMPLETED"}
    assert batch.progress == 100.0 and batch.output_file_id and batch.error_file_id

    output = [json.loads(line) for line in sdk.files.content(batch.output_file_id).text().splitlines()]
    completion = ChatCompletion.model_validate(output[0]["response"]["body"])
    assert output[0]["custom_id"] == "a" and completion.choices[0].message.content == "echo: hi there"
    errors = [json.loads(line) for line in sdk.files.content(batch.error_file_id).text().splitlines()]
    assert errors == [
        {"custom_id": "b", "error": {"message": errors[0]["error"]["message"], "code": "emulated_error"}}
    ]


def test_sdk_upload_conflict_list_cancel_and_errors(
    emu: Emulator, sdk: together.Together, tmp_path: Path
) -> None:
    path = _input(tmp_path, ("a", "hi"))
    first = sdk.files.upload(path, purpose="batch-api")
    assert sdk.files.upload(path, purpose="batch-api").id == first.id  # 409 → the existing file
    with pytest.raises(FileAlreadyExistsError):
        sdk.files.upload(path, purpose="batch-api", raise_if_already_exists=True)

    emu.processing_seconds = 30
    ids = [
        sdk.batches.create(input_file_id=first.id, endpoint="/v1/chat/completions").job.id for _ in range(2)
    ]  # type: ignore[union-attr]
    assert [b.id for b in sdk.batches.list()] == ids[::-1]
    assert sdk.batches.cancel(ids[0]).status == "IN_PROGRESS"  # no CANCELING in the SDK enum
    batch, _ = _wait(sdk, ids[0] or "")
    assert batch.status == "CANCELLED"

    with pytest.raises(together.NotFoundError) as missing_batch:
        sdk.batches.retrieve("nope")
    assert missing_batch.value.body == {"error": "batch job nope not found"}
    with pytest.raises(together.NotFoundError) as missing_file:
        sdk.files.retrieve("file-nope")
    assert set(missing_file.value.body["error"]) == {"message", "type", "param", "code"}  # type: ignore[index]
    with pytest.raises(together.AuthenticationError) as denied:
        together.Together(api_key="invalid", base_url=emu.base_url("together"), max_retries=0).batches.list()
    assert isinstance(denied.value.body["error"], str)  # type: ignore[index]
    unsigned = httpx.put(f"{emu.url}/together/v1/uploads/{first.id}?signature=x", content=b"{}")
    assert unsigned.status_code == 403


# --- our adapter ---------------------------------------------------------------------------------


async def test_three_request_job_to_parquet(emulator: Emulator, tmp_path: Path) -> None:
    async with client_for(emulator) as client:
        job = await client.submit(f"together/{MODEL}", THREE, defaults={"max_output_tokens": 50, "top_k": 5})
        final = await client.wait(job, poll_interval=0.1, timeout=30)
        manifest = await client.write_parquet(job, f"file://{tmp_path}/out.parquet")
    # Together reports no outcome counts: successes come from the output file, the rest follows the state.
    assert final.state == "expired"
    assert (final.counts.total, final.counts.succeeded, final.counts.expired, final.counts.processing) == (
        3,
        1,
        2,
        0,
    )
    assert manifest["rows"] == 3 and manifest["counts"] == {"succeeded": 1, "errored": 1, "expired": 1}
    table = pq.read_table(tmp_path / "out.parquet")
    assert table.schema.remove_metadata() == RESULT_SCHEMA
    rows = {row["custom_id"]: row for row in table.to_pylist()}
    ok, bad, late = rows["ok"], rows["bad"], rows["late"]
    assert (ok["status"], ok["text"], ok["finish_reason"]) == ("succeeded", "echo: hello world", "stop")
    assert (ok["input_tokens"], ok["output_tokens"], ok["total_tokens"]) == (2, 3, 5)
    assert (ok["provider"], ok["model"], ok["batch_id"]) == (
        "together",
        f"together/{MODEL}",
        job.batch_ids[0],
    )
    assert json.loads(ok["response"])["response"]["body"]["model"] == MODEL
    assert bad["status"] == "errored" and bad["text"] is None and bad["error_code"] and bad["error_message"]
    assert json.loads(bad["response"])["custom_id"] == "bad"
    assert (late["status"], late["error_code"]) == ("expired", "expired")

    sent = emulator.batches("together")[-1]
    assert sent.model == MODEL and sent.items[0].body["top_k"] == 5 and sent.items[0].body["max_tokens"] == 50
    assert emulator.files("together")[0].purpose == "batch-api"


async def test_counts_without_create_cache_and_either_base_url(emu: Emulator) -> None:
    async with client_for(emu, base_url=f"{emu.url}/together") as client:  # SDK-3.x style base URL
        job = await client.submit(f"together/{MODEL}", [{"prompt": "a"}, {"prompt": "b"}])
        await client.wait(job, poll_interval=0.1, timeout=30)
    async with client_for(emu) as fresh:  # another process: totals from the input file's line count
        status = await fresh.status(job)
    assert (status.state, status.counts.total, status.counts.succeeded, status.counts.done) == (
        "completed",
        2,
        2,
        2,
    )
    assert api_base_url("https://api.together.ai") == "https://api.together.ai/v1"
    assert api_base_url("https://api.together.xyz/v1/") == "https://api.together.xyz/v1"


async def test_provider_shaped_401_and_404(emulator: Emulator) -> None:
    async with client_for(emulator, key="invalid") as client:
        with pytest.raises(ProviderAPIError) as denied:
            await client.submit(f"together/{MODEL}", [{"prompt": "hi"}])
    assert (denied.value.status_code, denied.value.code) == (401, "invalid_api_key")  # file route: object
    async with client_for(emulator) as client:
        with pytest.raises(ProviderAPIError) as missing:
            await client.adapter("together").status("batch-nope")
    assert (missing.value.status_code, missing.value.message) == (404, "batch job batch-nope not found")


async def test_list_and_cancel() -> None:
    with Emulator(processing_seconds=30) as slow:
        async with client_for(slow) as client:
            jobs = [await client.submit(f"together/{MODEL}", [{"prompt": f"p{i}"}]) for i in range(3)]
            listed = [b async for b in client.adapter("together").list_batches()]
            assert [b.id for b in listed] == [job.batch_ids[0] for job in reversed(jobs)]
            assert all(b.state in ("validating", "in_progress") and b.counts.total == 1 for b in listed)
            assert len([b async for b in client.adapter("together").list_batches(limit=2)]) == 2

            assert (await client.cancel(jobs[0])).state == "cancelling"
            final = await client.wait(jobs[0], poll_interval=0.1, timeout=30)
            rows = [item async for item in client.results(jobs[0])]
    assert final.state == "cancelled" and final.counts.canceled == 1
    assert [(r.status, r.error_code) for r in rows] == [("canceled", "cancelled")]


def test_request_mapping_and_refusals() -> None:
    with pytest.raises(RequestValidationError, match="dimensions"):
        BatchClient({"together": Credentials("k")}).prepare(
            f"together/{MODEL}", [{"prompt": "hi", "dimensions": 3}]
        )
    ref = parse_model(f"together/{MODEL}")
    assert (ref.provider, ref.model, str(ref)) == ("together", MODEL, f"together/{MODEL}")
    request = BatchRequest(custom_id="a", prompt="hi", seed=1, presence_penalty=0.5)
    line: dict[str, Any] = json.loads(TogetherAdapter.offline().encode(ref, request))
    assert line == {
        "custom_id": "a",
        "body": {
            "model": MODEL,
            "messages": [{"role": "user", "content": "hi"}],
            "seed": 1,
            "presence_penalty": 0.5,
        },
    }
