"""A submit SIGKILLed after its upload and before the create answered, for the providers whose upload was
not recorded before (Mistral, Gemini in file mode): the ledger holds the uploaded file's id before the paid
create, so the retry re-uses it: exactly one uploaded file per shard at the emulator, no orphan, one batch
per shard.

The kill moment is an event: the parent watches the child's ledger file until a shard records its upload
but not yet its batch id (each emulator answer is slowed, so that state lasts seconds, not milliseconds).

A Gemini upload lives 48 hours: a retry after it expired (or when it expires within the hour) uploads the shard
again instead of naming a file the create would refuse (checked on the state such a kill leaves, built directly:
whether a SIGKILL lands before or after the create reached the provider is a race, and after it the retry
attaches to the batch without needing the file)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from airflow_batchwork.core import BatchClient, Credentials
from airflow_batchwork.testing import Emulator
from airflow_batchwork.testing.faults import FaultConfig
from airflow_batchwork.values.calls import CallProgress
from airflow_batchwork.values.refs import parse_model
from tests.test_crash_kill import WAIT, committed_once, run_child_until

MODELS = {"mistral": "mistral/mistral-small-latest", "google": "google/gemini-2.5-flash"}
UPLOAD_KEY = {"mistral": "file_id", "google": "file_name"}
N = 30
SHARDS = 3


@pytest.fixture(scope="module")
def emu() -> Iterator[Emulator]:
    with Emulator(processing_seconds=0.3) as emulator:
        yield emulator


def uploaded_not_created(ledger: Path, key: str) -> bool:
    try:
        state = json.loads(ledger.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return False
    return any((s.get("calls") or {}).get(key) and not s.get("id") for s in state.get("shards", []))


def run_child(spec: dict[str, Any], kill_when: Callable[[], bool] | None = None) -> int | None:
    return run_child_until(spec, kill_when, wait=WAIT * 2)


async def collect_every_row_once(emu: Emulator, provider: str, spec: dict[str, Any]) -> None:
    """Wait for the job the child submitted, collect it, and check every request is there once."""
    handle = json.loads(Path(spec["handle"]).read_text())
    async with BatchClient({provider: Credentials("k", emu.base_url(provider))}) as client:
        await client.wait(handle, poll_interval=0.2, timeout=WAIT)
        await client.write_parquet(handle, spec["out"])
    committed_once(spec["out"], N)


@pytest.mark.parametrize("provider", sorted(MODELS))
async def test_kill_after_upload_reuses_the_recorded_file(emu: Emulator, provider: str, tmp_path: Path) -> None:
    spec = {"provider": provider, "base_url": emu.base_url(provider), "model": MODELS[provider], "n": N,
            "max_requests": N // SHARDS, "state": str(tmp_path / "state"), "identity": f"upload-{provider}",
            "handle": str(tmp_path / "handle.json"), "out": f"{tmp_path / 'out'}/", "file_upload": True}
    ledger = tmp_path / "state" / f"upload-{provider}.json"
    files_before = {f.id for f in emu.files(provider)}
    batches_before = {b.id for b in emu.batches(provider)}
    emu.faults = FaultConfig(slow_seconds=1.0, providers=provider)
    try:
        killed = run_child({**spec, "mode": "submit"}, lambda: uploaded_not_created(ledger, UPLOAD_KEY[provider]))
    finally:
        emu.faults = FaultConfig()
    assert killed is None  # killed after an upload was recorded and before that shard's batch id was
    run_child({**spec, "mode": "submit"})

    uploads = [f for f in emu.files(provider) if f.id not in files_before and f.result_of is None]
    made = [b for b in emu.batches(provider) if b.id not in batches_before]
    assert len(made) == SHARDS, [b.id for b in made]  # one batch per shard
    assert len(uploads) == SHARDS, [f.id for f in uploads]  # one file per shard: the kill left no orphan
    state = json.loads(ledger.read_text())
    recorded = sorted(s["calls"][UPLOAD_KEY[provider]].removeprefix("files/") for s in state["shards"])
    assert recorded == sorted(f.id.removeprefix("files/") for f in uploads)  # the files the ledger names

    await collect_every_row_once(emu, provider, spec)


@pytest.mark.parametrize(("age_hours", "reused"), [(0.0, True), (47.5, False), (49.0, False)],
                         ids=["fresh", "expires-within-the-hour", "expired"])
async def test_a_recorded_gemini_upload_is_named_only_while_it_lives(age_hours: float, reused: bool) -> None:
    """The state a kill between the upload and the create leaves (the shard's ledger entry names its upload, no
    batch was made), met by a retry `age_hours` later by the emulator's clock: a file still alive is named by
    the create; one that is gone (Gemini deletes uploads after 48 h) or expires within the hour is uploaded
    again and the new name recorded before the create."""
    offset = [-age_hours * 3600]
    lines = [orjson.dumps({"key": f"r{i}", "request": {"contents": [{"role": "user", "parts": [{"text": f"q{i}"}]}]}})
             for i in range(3)]
    ref = parse_model(MODELS["google"])
    with Emulator(processing_seconds=0.3, clock=lambda: time.time() + offset[0]) as emu:
        async with BatchClient({"google": Credentials("k", emu.base_url("google"))}) as client:
            adapter = client.adapter("google")
            adapter.inline_max_bytes = 0  # type: ignore[attr-defined]  # file mode, as for a large shard
            recorded = await adapter.upload(lines)  # type: ignore[attr-defined]
            offset[0] = 0.0
            progress = CallProgress({"file_name": recorded})
            batch_id = await adapter.create_tracked(ref, lines, metadata={}, progress=progress)
        [batch] = [b for b in emu.batches("google") if b.id == batch_id]
        uploads = [f for f in emu.files("google") if f.result_of is None]
        looked_up = [r for r in emu.requests if r.method == "GET" and r.path.endswith(recorded)]
    assert len(looked_up) == 1  # one free lookup before the paid create
    if reused:
        assert progress.get("file_name") == recorded and len(uploads) == 1
    else:
        assert progress.get("file_name") != recorded and len(uploads) == 2  # uploaded again, the new name kept
    assert batch.extra["file_name"] == progress.get("file_name")  # the create named the live file
    assert len(batch.items) == 3
