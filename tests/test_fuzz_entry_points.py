"""Property-based fuzzing (hypothesis) of the public validation surface: request dicts, model strings,
defaults, limits, job handles (XCom is user-writable), output paths and operator arguments.

For every generated input: either it is accepted, or it is refused with a documented error type
(`ConfigurationError` and its subclasses) whose message names the field — and a refused input never
makes an HTTP request (the emulator's request log, over a real socket, stays unchanged). Accepted
output paths are storage URLs, never `http(s)://`. Example counts: `FUZZ_EXAMPLES` (default 60 per
property; `BATCHWORK_FUZZ_EXAMPLES` raises it for a soak run).
"""

from __future__ import annotations

import asyncio
import os
import string
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from airflow_batchwork.core import BatchClient, Credentials
from airflow_batchwork.engine.parquet import WEB_SCHEMES, check_output_url
from airflow_batchwork.engine.submission import prepare_job
from airflow_batchwork.testing import Emulator
from airflow_batchwork.values.errors import ConfigurationError
from airflow_batchwork.values.handle import JobHandle
from airflow_batchwork.values.refs import parse_model

FUZZ_EXAMPLES = int(os.environ.get("BATCHWORK_FUZZ_EXAMPLES", "60"))
FUZZ = settings(max_examples=FUZZ_EXAMPLES, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
MODELS = ["openai/gpt-4o-mini", "anthropic/claude-haiku-4-5", "google/gemini-2.5-flash", "groq/llama-3.3-70b",
          "mistral/mistral-small-latest", "together/meta-llama/Llama-3.3-70B-Instruct-Turbo", "xai/grok-4",
          "openai.embedding/text-embedding-3-small"]
FIELDS = ["custom_id", "prompt", "messages", "system", "max_output_tokens", "temperature", "top_p", "top_k",
          "stop_sequences", "seed", "presence_penalty", "frequency_penalty", "provider_options", "value",
          "output_schema"]

scalars = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(allow_nan=True),
                    st.text(max_size=30), st.binary(max_size=8))
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                       st.dictionaries(st.text(max_size=8), inner, max_size=3)),
                      max_leaves=6)
messages = st.lists(st.fixed_dictionaries({"role": st.sampled_from(["user", "system", "assistant", "tool", ""]),
                                           "content": st.one_of(st.text(max_size=20), values)}), max_size=3)
field_values = {"messages": st.one_of(messages, values), "custom_id": st.one_of(st.text(max_size=70), values),
                "prompt": st.one_of(st.text(max_size=30), values)}
request = st.dictionaries(st.one_of(st.sampled_from(FIELDS), st.text(max_size=10)),
                          st.one_of(values, *field_values.values()), max_size=5)


@pytest.fixture(scope="module")
def emu() -> Iterator[Emulator]:
    with Emulator(processing_seconds=0.2) as emulator:
        yield emulator


def names_its_field(exc: ConfigurationError, *allowed: str) -> None:
    assert exc.field and str(exc).startswith(f"{exc.field}:"), str(exc)
    if allowed:
        assert any(exc.field.startswith(a) for a in allowed), (exc.field, allowed)


def refused_without_http(emu: Emulator, call: Any) -> ConfigurationError | None:
    """Run `call()` (a coroutine factory taking a client); a refusal must be a ConfigurationError and make
    no request. Returns the error, or None when the input was accepted."""
    before = len(emu.requests)

    async def run() -> None:
        creds = {p: Credentials("k", emu.base_url(p)) for p in emu.providers}
        async with BatchClient(creds) as client:
            await call(client)

    try:
        asyncio.run(run())
    except ConfigurationError as exc:
        assert len(emu.requests) == before, "a refused input made an HTTP request"
        return exc
    return None


@FUZZ
@given(model=st.sampled_from(MODELS), requests=st.lists(request, min_size=1, max_size=4))
def test_requests_are_accepted_or_refused_with_the_field(emu: Emulator, model: str,
                                                        requests: list[dict[str, Any]]) -> None:
    try:
        prepare_job(model, requests).close()
    except ConfigurationError as exc:
        names_its_field(exc, "requests", "defaults")
        again = refused_without_http(emu, lambda c: c.submit(model, requests))
        assert again is not None and type(again) is type(exc) and again.field == exc.field
    # (accepted input is not submitted here: that is what the provider tests do)


@FUZZ
@given(text=st.one_of(st.text(max_size=40), st.from_regex(r"[a-z.]{1,12}/[ -~]{0,20}", fullmatch=True)))
def test_model_strings(text: str) -> None:
    try:
        ref = parse_model(text)
    except ConfigurationError as exc:
        names_its_field(exc)
    else:
        assert str(parse_model(str(ref))) == str(ref)


@FUZZ
@given(defaults=st.dictionaries(st.one_of(st.sampled_from(FIELDS), st.text(max_size=8)), values, max_size=4),
       limits=st.one_of(st.none(), st.dictionaries(
           st.one_of(st.sampled_from(["max_requests", "max_bytes", "max_request_bytes"]), st.text(max_size=8)),
           values, max_size=3)))
def test_defaults_and_limits(emu: Emulator, defaults: dict[str, Any], limits: dict[str, Any] | None) -> None:
    requests = [{"prompt": "hello"}]
    try:
        prepare_job("openai/gpt-4o-mini", requests, defaults=defaults, limits=limits).close()
    except ConfigurationError as exc:
        names_its_field(exc, "defaults", "limits", "requests")
        assert refused_without_http(
            emu, lambda c: c.submit("openai/gpt-4o-mini", requests, defaults=defaults, limits=limits)) is not None


VALID_HANDLE = {"version": 1, "provider": "openai", "model": "openai.chat/gpt-4o-mini",
                "batches": [{"id": "batch_abc123", "request_count": 2}], "request_count": 2,
                "identity": "abc", "ids_url": "file:///state/abc.ids.parquet"}
hostile = st.one_of(values, st.sampled_from([
    "../../files", "https://evil.test/x", "batch_a/../../b", "batch_a?x=1", "batch_%2e%2e", "msgbatch_1",
    "http://127.0.0.1:1/abc.ids.parquet", "file:///state/../etc/abc.ids.parquet", "", "a" * 400,
    "anthropic", "nope", "openai/gpt-4o-mini", "batches/x", "\n", "batch_x\n",
]))


@FUZZ
@given(field=st.sampled_from(["provider", "model", "batches", "request_count", "ids_url", "identity", "conn_id",
                              "batch_id", "batch_count", "version", "structured", "passthrough"]),
       value=hostile)
def test_corrupted_handles_fail_fast_without_http(emu: Emulator, field: str, value: Any) -> None:
    handle: dict[str, Any] = {**VALID_HANDLE, "batches": [dict(b) for b in VALID_HANDLE["batches"]]}
    if field == "batch_id":
        handle["batches"][0]["id"] = value
    elif field == "batch_count":
        handle["batches"][0]["request_count"] = value
    else:
        handle[field] = value
    try:
        parsed = JobHandle.coerce(handle)
    except ConfigurationError as exc:
        names_its_field(exc, "job")
        assert refused_without_http(emu, lambda c: c.status(handle)) is not None
        return
    # Accepted: every id is a well-formed id of its provider, and links come only from such ids.
    from airflow_batchwork.adapters import adapter_class

    cls = adapter_class(parsed.provider)
    assert all(cls.is_batch_id(i) for i in parsed.batch_ids)
    link = cls.batch_link(parsed.batch_ids[0]) if parsed.batch_ids else None
    assert link is None or link.endswith("/" + parsed.batch_ids[0])
    assert parsed.ids_url is None or not parsed.ids_url.lower().startswith(("http://", "https://"))


@FUZZ
@given(url=st.one_of(
    st.text(max_size=30),
    st.builds(lambda s, rest: f"{s}://{rest}", st.sampled_from(["http", "https", "HTTP", "s3", "file", "memory",
                                                                 "gs", "ftp", "ws", "zz", "simplecache"]),
              st.text(string.ascii_letters + string.digits + "/.:-_@?#", max_size=20)),
    st.builds(lambda a, b: f"{a}::{b}", st.sampled_from(["simplecache", "blockcache"]),
              st.sampled_from(["http://127.0.0.1:9/x/", "s3://b/x/", "memory://x/"]))))
def test_output_paths_only_storage_schemes(url: str) -> None:
    try:
        check_output_url(url)
    except ConfigurationError as exc:
        names_its_field(exc, "output_path")
    else:
        schemes = [part.split("://", 1)[0].lower() for part in url.split("::") if "://" in part]
        assert not set(schemes) & WEB_SCHEMES, url


@FUZZ
@given(kwargs=st.fixed_dictionaries({}, optional={
    "poll_interval": values, "timeout": values, "on_changed_input": values, "on_orphaned_intent": values,
    "max_item_retries": values, "output_path": st.one_of(st.text(max_size=20), values),
}))
def test_operator_arguments(kwargs: dict[str, Any]) -> None:
    from airflow_batchwork.operators.batch import CollectResultsOperator, SubmitBatchOperator

    submit_kwargs = {k: v for k, v in kwargs.items() if k in ("poll_interval", "timeout", "on_changed_input",
                                                              "on_orphaned_intent")}
    collect_kwargs = {k: v for k, v in kwargs.items() if k in ("poll_interval", "timeout", "max_item_retries")}
    for build in (
        lambda: SubmitBatchOperator(task_id="s", model="openai/gpt-4o-mini", requests=[{"prompt": "x"}],
                                    **submit_kwargs),
        lambda: CollectResultsOperator(task_id="c", job=VALID_HANDLE,
                                       output_path=kwargs.get("output_path", "file:///tmp/o/"), **collect_kwargs),
    ):
        try:
            build()
        except ConfigurationError as exc:
            names_its_field(exc)
