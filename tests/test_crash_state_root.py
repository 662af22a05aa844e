"""A handle's state files must lie under the configured state store (`state_root`): the client and the
operators refuse a handle (XCom is user-writable) whose `ids_url` points elsewhere, before any HTTP request
or file read, and the operators fail the task without retries."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from airflow.sdk.exceptions import AirflowFailException

from airflow_batchwork.core import BatchClient, Credentials
from airflow_batchwork.engine.ledger import FsspecLedger
from airflow_batchwork.operators.batch import CollectResultsOperator
from airflow_batchwork.testing import Emulator
from airflow_batchwork.values.errors import ConfigurationError

MODEL = "openai/gpt-4o-mini"


@pytest.fixture(scope="module")
def emu() -> Iterator[Emulator]:
    with Emulator(processing_seconds=0.1) as emulator:
        yield emulator


async def submitted(emu: Emulator, tmp_path: Path) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """A finished job submitted with a state store; its handle, and a copy whose ids_url points at an
    identical ids file outside the store (so only the location check can refuse it)."""
    root = f"file://{tmp_path}/state"
    async with BatchClient({"openai": Credentials("k", emu.base_url("openai"))}) as client:
        job = await client.submit(MODEL, [{"custom_id": f"r{i}", "prompt": f"p {i}"} for i in range(6)],
                                  ledger=FsspecLedger(root, "ident"), identity="ident")
        await client.wait(job, poll_interval=0.1, timeout=60)
    good = job.to_dict()
    assert good["ids_url"].startswith(root + "/")
    (tmp_path / "elsewhere").mkdir()
    shutil.copy(good["ids_url"].removeprefix("file://"), tmp_path / "elsewhere" / "ident.ids.parquet")
    return root, good, {**good, "ids_url": f"file://{tmp_path}/elsewhere/ident.ids.parquet"}


async def test_client_refuses_a_handle_outside_its_state_store(emu: Emulator, tmp_path: Path) -> None:
    root, good, bad = await submitted(emu, tmp_path)
    async with BatchClient({"openai": Credentials("k", emu.base_url("openai"))}, state_root=root) as client:
        before = len(emu.requests)
        for call in (lambda: client.write_parquet(bad, f"{tmp_path}/out/"), lambda: client.status(bad)):
            with pytest.raises(ConfigurationError) as info:
                await call()
            assert str(info.value).startswith("job.ids_url") and "state store" in str(info.value)
        assert len(emu.requests) == before  # refused before any HTTP request
        assert not (tmp_path / "out").exists()
        manifest = await client.write_parquet(good, f"{tmp_path}/out/")  # the genuine handle is accepted
    assert manifest["rows"] == 6 and pq.read_table(tmp_path / "out").num_rows == 6


async def test_collect_operator_fails_fast_on_a_handle_outside_its_state_store(emu: Emulator,
                                                                               tmp_path: Path) -> None:
    root, good, bad = await submitted(emu, tmp_path)
    op = CollectResultsOperator(task_id="collect", job=bad, output_path=f"file://{tmp_path}/out/", state_path=root)
    before = len(emu.requests)
    with pytest.raises(AirflowFailException, match=r"^job\.ids_url"):  # no retries
        op.execute({})  # type: ignore[arg-type]
    assert len(emu.requests) == before and not (tmp_path / "out").exists()
    accepted = CollectResultsOperator(task_id="c2", job=good, output_path=f"file://{tmp_path}/o2/", state_path=root)
    assert accepted._handle(good).ids_url == good["ids_url"]
    # Without a configured state store only the generic checks apply (no web URL, no '..').
    assert CollectResultsOperator(task_id="c3", job=bad, output_path=f"file://{tmp_path}/o3/")._handle(bad)
