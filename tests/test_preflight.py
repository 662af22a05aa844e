"""Mistakes caught before money is spent: each test proves the emulator saw no create call.

Also: errors that retrying cannot fix fail the task at once (`AirflowFailException`), even with retries set.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from airflow_batchwork.core import BatchClient, ConfigurationError, Credentials, ProviderAPIError
from airflow_batchwork.engine.preflight import PROBE_PREFIX, probe_writable
from airflow_batchwork.operators.batch import CollectResultsOperator, SubmitBatchOperator
from airflow_batchwork.testing import Emulator
from airflow_batchwork.testing.airflow_env import connection_env
from airflow_batchwork.values.errors import RequestValidationError
from tests.airflow_helpers import load_dag, task_states, xcom

TWO = [{"custom_id": "a", "prompt": "hello there"}, {"custom_id": "b", "prompt": "second"}]


def creates(emu: Emulator) -> list[str]:
    """Every call that could start something paid: uploads and batch creates are all POSTs."""
    return [f"{r.method} {r.path}" for r in emu.requests if r.method == "POST"]


def tries(run: Any) -> dict[str, int]:
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session

    with create_session() as session:
        return {ti.task_id: ti.try_number for ti in
                session.query(TaskInstance).filter_by(dag_id=run.dag_id, run_id=run.run_id).all()}


@pytest.fixture
def emu(airflow_db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Emulator]:
    monkeypatch.setenv("AIRFLOW_VAR_BATCHWORK_PREFLIGHT_OUTPUT", f"file://{tmp_path}/out/")
    with Emulator(processing_seconds=0.5) as emulator:
        for key, value in connection_env(emulator).items():
            monkeypatch.setenv(key, value)
        yield emulator


# -- at DAG parse time ----------------------------------------------------------------------------

@pytest.mark.parametrize("operator", [CollectResultsOperator, SubmitBatchOperator])
def test_unknown_scheme_in_literal_output_path_fails_at_parse(operator: Any) -> None:
    kwargs = {"job": {}} if operator is CollectResultsOperator else {"model": "openai/gpt-4o-mini", "requests": TWO}
    with pytest.raises(ConfigurationError) as info:
        operator(task_id="t", output_path="gcss://bucket/out/", **kwargs)
    assert info.value.field == "output_path" and "gcss" in str(info.value)


@pytest.mark.parametrize("operator", [CollectResultsOperator, SubmitBatchOperator])
def test_jinja_syntax_error_in_output_path_fails_at_parse(operator: Any) -> None:
    kwargs = {"job": {}} if operator is CollectResultsOperator else {"model": "openai/gpt-4o-mini", "requests": TWO}
    with pytest.raises(ConfigurationError) as info:
        operator(task_id="t", output_path="s3://bucket/out/{{ ds }/", **kwargs)
    assert info.value.field == "output_path" and "does not parse" in str(info.value)


@pytest.mark.parametrize("requests", [{"prompt": "x"}, "hello"])
def test_requests_as_dict_or_string_refused_at_parse(requests: Any) -> None:
    with pytest.raises(ConfigurationError, match="expected a list of request dicts"):
        SubmitBatchOperator(task_id="t", model="openai/gpt-4o-mini", requests=requests)


# -- at submit, before the paid call --------------------------------------------------------------

def test_unwritable_output_folder_fails_submit_before_any_create(emu: Emulator, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the output folder should be")
    monkeypatch.setenv("AIRFLOW_VAR_BATCHWORK_PREFLIGHT_OUTPUT", f"file://{blocker}/out/")
    run = load_dag("preflight_unwritable_output").test()
    assert task_states(run)["submit"] == "failed"
    assert tries(run)["submit"] == 1  # AirflowFailException: retries=3 not used
    assert creates(emu) == []


def test_undefined_template_variable_fails_submit_before_any_create(emu: Emulator) -> None:
    run = load_dag("preflight_undefined_variable").test()
    assert task_states(run)["submit"] == "failed" and tries(run)["submit"] == 1
    assert creates(emu) == []


def test_output_path_probe_leaves_nothing_behind(emu: Emulator, tmp_path: Path) -> None:
    run = load_dag("preflight_ok_with_output_path").test()
    assert run.state == "success", task_states(run)
    assert xcom(run, "collect")["rows"] == 2
    assert not [p for p in (tmp_path / "out").iterdir() if p.name.startswith(PROBE_PREFIX)]


def test_probe_names_the_url_and_the_cause(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ConfigurationError) as info:
        probe_writable(f"file://{blocker}/results.parquet")
    assert info.value.field == "output_path" and str(blocker) in str(info.value)


def test_model_typo_warns_with_the_closest_id_before_any_create(emulator: Emulator,
                                                                caplog: pytest.LogCaptureFixture) -> None:
    seen_at_warning: list[int] = []

    class Mark(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if "did you mean" in record.getMessage():
                seen_at_warning.append(len(creates(emulator)))

    before = len(creates(emulator))
    logger = logging.getLogger("airflow_batchwork.values.pricing")
    mark = Mark()
    logger.addHandler(mark)
    try:
        with caplog.at_level(logging.WARNING, logger="airflow_batchwork.values.pricing"):
            asyncio.run(_submit(emulator, "openai/gpt-4o-mnii", TWO))
    finally:
        logger.removeHandler(mark)
    assert "did you mean openai/gpt-4o-mini" in caplog.text
    assert seen_at_warning == [before]  # warned before the upload and the create


def test_known_model_and_dated_snapshot_do_not_warn(caplog: pytest.LogCaptureFixture) -> None:
    from airflow_batchwork.values.pricing import PriceTable, warn_if_unknown_model

    table = PriceTable.packaged()
    with caplog.at_level(logging.WARNING):
        assert warn_if_unknown_model("openai/gpt-4o-mini", table) == []
        assert warn_if_unknown_model("anthropic/claude-haiku-4-5-20251001", table) == []
    assert "did you mean" not in caplog.text


def test_prompt_over_the_context_window_is_refused_before_any_call(emulator: Emulator) -> None:
    before = len(emulator.requests)
    huge = "word " * 2_000_000  # 10 MB
    with pytest.raises(RequestValidationError) as info:
        asyncio.run(_submit(emulator, "openai/gpt-4o-mini", [{"custom_id": "big", "prompt": huge}]))
    assert info.value.field == "requests[0]"
    assert "128,000" in str(info.value) and "2,500,000" in str(info.value)
    assert len(emulator.requests) == before


def test_context_window_counts_max_output_tokens_and_can_be_overridden(emulator: Emulator) -> None:
    request = [{"custom_id": "a", "prompt": "x" * 400, "max_output_tokens": 4000}]  # ~100 + 4000 tokens
    with pytest.raises(RequestValidationError, match="4,000 max_output_tokens"):
        asyncio.run(_submit(emulator, "openai/gpt-3.5-turbo-instruct", request))
    bigger = {"openai/gpt-3.5-turbo-instruct": {"input": 1.5, "output": 2.0, "context_window": 16000}}
    job = asyncio.run(_submit(emulator, "openai/gpt-3.5-turbo-instruct", request, prices=bigger))
    assert job.request_count == 1


@pytest.mark.parametrize("model", ["openai/gpt-4o-mini", "anthropic/claude-sonnet-4-5", "google/gemini-2.5-flash",
                                   "mistral/mistral-small-latest"])
@pytest.mark.parametrize(("request_", "field"), [
    ({"custom_id": "b", "prompt": "half a pair \ud83d here"}, "requests[1].prompt"),
    ({"custom_id": "b", "system": "\udfff", "prompt": "ok"}, "requests[1].system"),
    ({"custom_id": "b", "messages": [{"role": "user", "content": "x\ud800"}]}, "requests[1]"),
])
def test_a_lone_surrogate_is_refused_naming_the_request_before_any_call(emulator: Emulator, model: str,
                                                                          request_: dict[str, Any], field: str) -> None:
    before = len(emulator.requests)
    with pytest.raises(RequestValidationError) as info:
        asyncio.run(_submit(emulator, model, [{"custom_id": "a", "prompt": "fine"}, request_]))
    assert info.value.field == field
    assert "lone surrogate" in str(info.value) and "'b'" in str(info.value)
    assert len(emulator.requests) == before


@pytest.mark.parametrize("custom_id", ["a\n", "a\r\n", "\na"])
def test_a_custom_id_with_a_line_break_is_refused(emulator: Emulator, custom_id: str) -> None:
    """A newline at the end passed a `$`-anchored pattern, and broke the line-based ids file."""
    before = len(emulator.requests)
    requests = [{"custom_id": "ok", "prompt": "x"}, {"custom_id": custom_id, "prompt": "x"}]
    with pytest.raises(RequestValidationError) as info:
        asyncio.run(_submit(emulator, "openai/gpt-4o-mini", requests))
    assert info.value.field == "requests[1].custom_id"
    assert len(emulator.requests) == before


def test_context_windows_are_data_next_to_every_price() -> None:
    data = json.loads((Path(__file__).parent.parent / "airflow_batchwork/data/prices.json").read_text())
    for provider, block in data["providers"].items():
        assert block.get("context_window_source"), provider
        for model, entry in block["models"].items():
            assert isinstance(entry.get("context_window"), int) and entry["context_window"] > 0, (provider, model)


async def _submit(emu: Emulator, model: str, requests: list[dict[str, Any]], **kwargs: Any) -> Any:
    provider = model.split("/", 1)[0].split(".")[0]
    async with BatchClient({provider: Credentials("k", emu.base_url(provider))}) as client:
        return await client.submit(model, requests, **kwargs)


# -- errors that retrying cannot fix --------------------------------------------------------------

def test_refused_key_fails_without_retries_naming_the_url(emu: Emulator, monkeypatch: pytest.MonkeyPatch,
                                                          capfd: pytest.CaptureFixture[str]) -> None:
    conn = json.loads(connection_env(emu)["AIRFLOW_CONN_BATCHWORK_OPENAI"])
    monkeypatch.setenv("AIRFLOW_CONN_BATCHWORK_OPENAI", json.dumps({**conn, "password": "invalid"}))
    run = load_dag("preflight_refused_key").test()
    logged = "".join(capfd.readouterr())
    assert task_states(run) == {"submit": "failed"} and tries(run)["submit"] == 1
    assert len(creates(emu)) == 1  # the refused upload, not repeated
    assert f"401 (invalid_api_key) on POST {emu.base_url('openai')}/files" in logged
    assert "invalid.." not in logged and "Fix: the API key was refused" in logged
    assert "XCom not found" not in logged  # the failed task's console link is empty, not looked up


def test_http_error_names_method_and_url_never_the_key(emulator: Emulator) -> None:
    async def go() -> None:
        async with BatchClient({"openai": Credentials("sk-secret-123", emulator.base_url("openai"))}) as client:
            await client.adapter("openai").status("batch_does_not_exist")

    with pytest.raises(ProviderAPIError) as info:
        asyncio.run(go())
    message = str(info.value)
    assert info.value.status_code == 404 and info.value.permanent
    assert f"GET {emulator.base_url('openai')}/batches/batch_does_not_exist" in message
    assert "Fix: " in message and "sk-secret-123" not in message


def test_collect_with_another_providers_connection_fails_without_retries(emu: Emulator,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    run = load_dag("preflight_wrong_provider_conn").test()
    assert task_states(run) == {"submit": "success", "collect": "failed"}
    assert tries(run)["collect"] == 1


def test_empty_key_is_refused_before_any_http_call(emulator: Emulator) -> None:
    before = len(emulator.requests)
    with pytest.raises(ConfigurationError) as info:
        Credentials("", emulator.base_url("openai"))
    assert info.value.field == "api_key" and "empty" in str(info.value)
    with pytest.raises(ConfigurationError, match="whitespace"):
        Credentials("sk-abc\n", emulator.base_url("openai"))
    assert len(emulator.requests) == before


def test_unknown_scheme_in_write_parquet_is_a_configuration_error(emulator: Emulator) -> None:
    async def go() -> None:
        async with BatchClient({"openai": Credentials("k", emulator.base_url("openai"))}) as client:
            job = await client.submit("openai/gpt-4o-mini", TWO)
            await client.write_parquet(job, "nosuch://bucket/out/")

    with pytest.raises(ConfigurationError) as info:
        asyncio.run(go())
    assert info.value.field == "output_path" and "nosuch" in str(info.value)
