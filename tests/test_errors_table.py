"""Every bad input is refused before any API call, with the field and the fix in the message.

The table in docs/errors.md is generated from the cases below and checked by `test_docs_table_is_current`;
regenerate it with `python -m tests.test_errors_table`.
"""

from __future__ import annotations

import asyncio
import json
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from airflow_batchwork.core import BatchClient, ConfigurationError, Credentials, JobHandle, parse_model
from airflow_batchwork.engine.parquet import check_output_url
from airflow_batchwork.engine.preflight import probe_writable
from airflow_batchwork.engine.sources import read_requests

DOC = Path(__file__).parent.parent / "docs" / "errors.md"
TMP = Path(tempfile.mkdtemp(prefix="batchwork-errors-"))


class NoNetwork(httpx.AsyncBaseTransport):
    calls = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        NoNetwork.calls += 1
        raise AssertionError(f"unexpected HTTP call {request.method} {request.url}")


def submit(model: str, requests: Any, **kwargs: Any) -> Callable[[], Any]:
    def run() -> Any:
        async def go() -> Any:
            creds = {p: Credentials("k", "https://api.example.test") for p in
                     ("openai", "anthropic", "google", "groq", "mistral", "together", "xai")}
            async with BatchClient(creds, transport=NoNetwork()) as client:
                return await client.submit(model, requests, **kwargs)
        return asyncio.run(go())
    return run


def operator(cls_name: str, **kwargs: Any) -> Callable[[], Any]:
    def run() -> Any:
        from airflow_batchwork.operators import batch

        return getattr(batch, cls_name)(task_id="t", **kwargs)
    return run


def credentials(provider: str, conn_id: str | None = None, conn: dict[str, Any] | None = None) -> Callable[[], Any]:
    def run() -> Any:
        from airflow_batchwork.hooks.batchwork import BatchworkHook

        saved = dict(os.environ)
        for var in [v for v in os.environ if v.endswith("_API_KEY") or v.startswith("AIRFLOW_CONN_BATCHWORK")]:
            del os.environ[var]
        if conn is not None:
            os.environ[f"AIRFLOW_CONN_{(conn_id or 'batchwork_' + provider).upper()}"] = json.dumps(conn)
        try:
            return BatchworkHook(conn_id=conn_id).credentials(provider)
        finally:
            os.environ.clear()
            os.environ.update(saved)
    return run


def source(name: str, content: str | pa.Table, **kwargs: Any) -> Callable[[], Any]:
    def run() -> Any:
        path = TMP / name
        if isinstance(content, pa.Table):
            pq.write_table(content, path)
        else:
            path.write_text(content)
        return list(read_requests(str(path), **kwargs))
    return run


@dataclass(frozen=True)
class Case:
    category: str
    what: str
    call: Callable[[], Any]
    field: str


OK = [{"custom_id": "a", "prompt": "hello"}]
CASES = [
    Case("request", "empty request list", submit("openai/gpt-4o-mini", []), "requests"),
    Case("request", "neither prompt nor messages", submit("openai/gpt-4o-mini", [{"custom_id": "a"}]),
         "requests[0].prompt"),
    Case("request", "both prompt and messages",
         submit("openai/gpt-4o-mini", [{"prompt": "x", "messages": [{"role": "user", "content": "y"}]}]),
         "requests[0]"),
    Case("request", "duplicate custom_id", submit("openai/gpt-4o-mini", [*OK, *OK]), "requests[1].custom_id"),
    Case("request", "custom_id with a space", submit("openai/gpt-4o-mini", [{"custom_id": "a b", "prompt": "x"}]),
         "requests[0].custom_id"),
    Case("request", "custom_id over 64 characters",
         submit("openai/gpt-4o-mini", [{"custom_id": "x" * 65, "prompt": "x"}]), "requests[0].custom_id"),
    Case("request", "custom_id ending in a newline",
         submit("openai/gpt-4o-mini", [{"custom_id": "a\n", "prompt": "x"}]), "requests[0].custom_id"),
    Case("request", "a lone surrogate in the prompt (a badly decoded text)",
         submit("openai/gpt-4o-mini", [{"custom_id": "a", "prompt": "x\ud800"}]), "requests[0].prompt"),
    Case("request", "misspelt field", submit("openai/gpt-4o-mini", [{"prompt": "x", "temprature": 0.2}]),
         "requests[0].temprature"),
    Case("request", "temperature out of range", submit("openai/gpt-4o-mini", [{"prompt": "x", "temperature": 7}]),
         "requests[0].temperature"),
    Case("request", "max_output_tokens of 0", submit("openai/gpt-4o-mini", [{"prompt": "x", "max_output_tokens": 0}]),
         "requests[0].max_output_tokens"),
    Case("request", "unknown message role",
         submit("openai/gpt-4o-mini", [{"messages": [{"role": "robot", "content": "x"}]}]),
         "requests[0].messages[0].role"),
    Case("request", "a bare string instead of a request", submit("openai/gpt-4o-mini", ["hello"]), "requests[0]"),
    Case("request", "empty messages list", submit("openai/gpt-4o-mini", [{"messages": []}]), "requests[0]"),
    Case("request", "embedding request without value", submit("openai.embedding/text-embedding-3-small", OK),
         "requests[0].value"),
    Case("model", "unknown provider", lambda: parse_model("openia/gpt-4o"), "model"),
    Case("model", "unknown endpoint", lambda: parse_model("openai.images/dall-e-3"), "model"),
    Case("model", "no provider prefix", lambda: parse_model("gpt-4o-mini"), "model"),
    Case("model", "empty model id", lambda: parse_model("anthropic/"), "model"),
    Case("option", "custom_id in defaults", submit("openai/gpt-4o-mini", OK, defaults={"custom_id": "x"}),
         "defaults.custom_id"),
    Case("option", "unknown field in defaults", submit("openai/gpt-4o-mini", OK, defaults={"max_tokens": 5}),
         "defaults.max_tokens"),
    Case("option", "both requests and requests_path",
         operator("SubmitBatchOperator", model="openai/gpt-4o-mini", requests=OK, requests_path="s3://b/in.jsonl"),
         "requests"),
    Case("option", "neither requests nor requests_path", operator("SubmitBatchOperator", model="openai/gpt-4o-mini"),
         "requests"),
    Case("option", "poll_interval of 0",
         operator("SubmitBatchOperator", model="openai/gpt-4o-mini", requests=OK, poll_interval=0), "poll_interval"),
    Case("option", "negative timeout",
         operator("SubmitBatchOperator", model="openai/gpt-4o-mini", requests=OK, timeout=-1), "timeout"),
    Case("option", "unknown on_changed_input",
         operator("SubmitBatchOperator", model="openai/gpt-4o-mini", requests=OK, on_changed_input="ignore"),
         "on_changed_input"),
    Case("option", "passthrough_columns with inline requests",
         operator("SubmitBatchOperator", model="openai/gpt-4o-mini", requests=OK, passthrough_columns=["a"]),
         "passthrough_columns"),
    Case("option", "model typo at DAG parse time",
         operator("SubmitBatchOperator", model="anthropic.chat/claude", requests=OK), "model"),
    Case("credentials", "no connection and no env var", credentials("openai"), "conn_id"),
    Case("credentials", "explicit conn_id that does not exist", credentials("openai", conn_id="my_openai"),
         "conn_id"),
    Case("credentials", "connection of another provider",
         credentials("openai", conn={"conn_type": "batchwork", "password": "sk-x", "extra": {"provider": "groq"}}),
         "conn_id"),
    Case("credentials", "connection without an API key",
         credentials("anthropic", conn={"conn_type": "batchwork", "extra": {"provider": "anthropic"}}), "conn_id"),
    Case("output", "output URL with an unknown scheme", lambda: check_output_url("nosuch://bucket/out/"),
         "output_path"),
    Case("output", "empty output_path", operator("CollectResultsOperator", job={}, output_path=""), "output_path"),
    Case("output", "job that is not a handle", lambda: JobHandle.coerce({"batch_id": "batch_1"}), "job.provider"),
    Case("input file", "requests_path of unknown format", source("in.csv", "a,b\n"), "requests_path"),
    Case("input file", "requests_path that does not exist", lambda: list(read_requests(str(TMP / "missing.jsonl"))),
         "requests_path"),
    Case("input file", "JSONL line that is not JSON", source("bad.jsonl", '{"prompt": "a"}\n{oops\n'),
         "requests_path line 2"),
    Case("input file", "column mapping to a missing Parquet column",
         source("in.parquet", pa.table({"text": ["a"]}), columns={"prompt": "body"}), "columns"),
    Case("input file", "passthrough column that clashes with a result column",
         lambda: submit("openai/gpt-4o-mini", read_requests(str(_write(TMP / "clash.jsonl", {"prompt": "x",
                        "status": "new"})), passthrough=["status"]))(), "passthrough_columns"),
    Case("size", "request over the provider's per-request size",
         submit("openai/gpt-4o-mini", [{"custom_id": "big", "prompt": "x" * 3000}], limits={"max_request_bytes": 2000}),
         "requests[0]"),
    Case("unsupported", "top_k on OpenAI chat", submit("openai/gpt-4o-mini", [{"prompt": "x", "top_k": 5}]),
         "requests[0].top_k"),
    Case("unsupported", "seed on Anthropic", submit("anthropic/claude-haiku-4-5", [{"prompt": "x", "seed": 1}]),
         "requests[0].seed"),
    Case("unsupported", "messages on the legacy completions endpoint",
         submit("openai.completion/gpt-3.5-turbo-instruct", [{"messages": [{"role": "user", "content": "x"}]}]),
         "requests[0].messages"),
    Case("templating", "a template that rendered to an empty model", lambda: parse_model(""), "model"),
    Case("templating", "a rendered handle that is not a handle", lambda: JobHandle.coerce("None"), "job"),
    Case("request", "requests given as a dict", submit("openai/gpt-4o-mini", {"prompt": "x"}), "requests"),
    Case("request", "requests given as a string", submit("openai/gpt-4o-mini", "hello"), "requests"),
    Case("request", "a non-JSON value (Decimal) in provider_options",
         submit("openai/gpt-4o-mini", [*[{"prompt": "x"}] * 3, {"custom_id": "d", "prompt": "y",
                                        "provider_options": {"user": Decimal("1.5")}}]),
         "requests[3].provider_options.user"),
    Case("option", "a bad value in defaults", submit("openai/gpt-4o-mini", OK, defaults={"temperature": 7}),
         "defaults.temperature"),
    Case("option", "requests given as a dict to the operator",
         operator("SubmitBatchOperator", model="openai/gpt-4o-mini", requests={"prompt": "x"}), "requests"),
    Case("size", "a prompt over the model's context window",
         submit("openai/gpt-4o-mini", [{"custom_id": "big", "prompt": "word " * 200_000}]), "requests[0]"),
    Case("credentials", "an empty API key", lambda: Credentials("", "https://api.openai.com/v1"), "api_key"),
    Case("credentials", "no key in a plain script (no Airflow)", lambda: _script_client().adapter("openai"),
         "credentials"),
    Case("input file", "Parquet input without a prompt column",
         source("noprompt.parquet", pa.table({"id": ["a"], "body": ["hello"]})), "columns"),
    Case("output", "unknown fsspec scheme in a literal output_path",
         operator("CollectResultsOperator", job={}, output_path="gcss://bucket/out/"), "output_path"),
    Case("output", "Jinja syntax error in output_path",
         operator("CollectResultsOperator", job={}, output_path="s3://bucket/out/{{ ds }/"), "output_path"),
    Case("output", "unwritable output folder (probed before submit)",
         lambda: probe_writable(f"file://{_blocker()}/out/"), "output_path"),
    Case("output", "unknown scheme in write_parquet",
         lambda: asyncio.run(BatchClient(transport=NoNetwork()).write_parquet(HANDLE, "nosuch://bucket/out/")),
         "output_path"),
    Case("option", "max_item_retries with merge=True",
         operator("CollectResultsOperator", job={}, output_path="s3://bucket/enriched/", merge=True,
                  max_item_retries=2), "merge"),
    Case("option", "max_item_retries with cache=",
         operator("CollectResultsOperator", job={}, output_path="s3://bucket/out/", cache="s3://bucket/llm-cache/",
                  max_item_retries=2), "cache"),
]


HANDLE = {"provider": "openai", "model": "openai.chat/gpt-4o-mini", "batches": [{"id": "batch_1", "request_count": 1}],
          "request_count": 1}


def _blocker() -> Path:
    """A file where a folder should be: no one, not even root, can create the folder under it."""
    path = TMP / "a-file"
    path.write_text("x")
    return path


def _script_client() -> BatchClient:
    for var in [v for v in os.environ if v.startswith("OPENAI_")]:
        del os.environ[var]
    return BatchClient()


def _write(path: Path, row: dict[str, Any]) -> Path:
    path.write_text(json.dumps(row) + "\n")
    return path


def outcome(case: Case) -> ConfigurationError:
    try:
        case.call()
    except ConfigurationError as exc:
        return exc
    raise AssertionError(f"{case.what}: accepted")


@pytest.mark.parametrize("case", CASES, ids=[c.what for c in CASES])
def test_refused_before_any_call_naming_field_and_fix(case: Case) -> None:
    before = NoNetwork.calls
    error = outcome(case)
    assert error.field == case.field, str(error)
    assert str(error).startswith(f"{case.field}: ") and "Fix: " in str(error)
    assert error.fix and error.problem
    assert NoNetwork.calls == before


def test_at_least_thirty_distinct_inputs() -> None:
    assert len({c.what for c in CASES}) == len(CASES) >= 30


def render() -> str:
    lines = [
        "# Bad input: refused before any API call",
        "",
        "Every row is a test in `tests/test_errors_table.py`; this file is generated from it",
        "(`python -m tests.test_errors_table`) and a test fails when the two differ. Each message names the",
        "field, the problem and the fix. In Airflow these errors fail the task without retries",
        "(`AirflowFailException`), or fail DAG parsing when the value is known at parse time. So do the",
        "provider's answers that a retry cannot change (listed after the table), and a `PermissionError`",
        "while writing the results. A model id missing from the price/model table is not refused but",
        "logged as a warning with the closest known ids (`did you mean openai/gpt-4o-mini?`), before the",
        "upload.",
        "",
        "| # | kind | bad input | field | message |",
        "|---|---|---|---|---|",
    ]
    for number, case in enumerate(CASES, 1):
        message = str(outcome(case)).replace("|", "\\\\|").replace(str(TMP), "…")
        lines.append(f"| {number} | {case.category} | {case.what} | `{case.field}` | {message} |")
    lines += [
        "",
        "## Provider answers that fail the task without retries",
        "",
        "Every HTTP error names the call (method and URL; never the key, never a query string). These",
        "statuses are `ProviderAPIError.permanent` and fail the Airflow task at once; 408, 409, 429 and 5xx",
        "are retried (see docs/reliability.md).",
        "",
        "| status | message |",
        "|---|---|",
    ]
    for status in PERMANENT:
        lines.append(f"| {status} | {_provider_error(status)} |")
    return "\n".join(lines) + "\n"


PERMANENT = (400, 401, 403, 404, 422)


def _provider_error(status: int) -> str:
    from airflow_batchwork.values.errors import ProviderAPIError

    error = ProviderAPIError("openai", status, "<the provider's message>", method="POST",
                             url="https://api.openai.com/v1/batches")
    assert error.permanent and not error.retryable
    return str(error)


def test_docs_table_is_current() -> None:
    assert DOC.read_text() == render(), "docs/errors.md is stale: run `python -m tests.test_errors_table`"


if __name__ == "__main__":
    DOC.write_text(render())
    print(f"wrote {DOC} ({len(CASES)} cases)")
