"""The plain-request path of `prepare_job` (values/requests.py `plain_request`, no pydantic model per
request) against the model path (`BatchRequest.model_validate`, what `prepare_requests` still builds):
for every provider and endpoint, byte-identical items and identical adapter checks on a varied corpus,
and identical errors on a corpus of bad inputs."""

from __future__ import annotations

import math
from typing import Any

import pyarrow.parquet as pq
import pytest

from airflow_batchwork.adapters import adapter_class
from airflow_batchwork.engine import submission as submission_module
from airflow_batchwork.engine.submission import prepare_job
from airflow_batchwork.values import requests as requests_module
from airflow_batchwork.values.errors import BatchworkError
from airflow_batchwork.values.recorder import ITEM_COLUMN, RequestRecorder
from airflow_batchwork.values.refs import parse_model
from airflow_batchwork.values.requests import (
    BatchRequest,
    HashedIds,
    PlainRequest,
    SeenIds,
    iter_request_chunks,
    iter_requests,
)

MODELS = {
    "openai": "gpt-4o-mini", "anthropic": "claude-haiku-4-5", "google": "gemini-2.5-flash",
    "groq": "llama-3.3-70b-versatile", "mistral": "mistral-small-latest",
    "together": "meta-llama/Llama-3.3-70B-Instruct-Turbo", "xai": "grok-4",
}
REFS = [f"{provider}.{spec.name}/{model}" for provider, model in MODELS.items()
        for spec in adapter_class(provider).endpoints]

TEXT_CORPUS: list[dict[str, Any]] = [
    {"custom_id": "p0", "prompt": "hello"},
    {"prompt": "no id given, é ✓ \u2028 \"quoted\""},
    {"custom_id": "p2", "prompt": "x", "system": "be brief", "max_output_tokens": 300, "temperature": 1,
     "top_p": 0.5},
    {"custom_id": "p3", "prompt": "x", "system": "", "temperature": 0, "top_p": 1, "stop_sequences": ["\n", "END"]},
    {"custom_id": "p4", "prompt": "x", "seed": 7, "presence_penalty": -2, "frequency_penalty": 1.5},
    {"custom_id": "p5", "prompt": "x", "top_k": 40, "temperature": 0.7},
    {"custom_id": "p6", "prompt": "x", "provider_options": {"user": "u1", "metadata": {"a": [1, 2.5, None, True]}}},
    {"custom_id": "p7", "prompt": "x", "system": "long " * 300, "cache_prefix": True},
    {"custom_id": "p8", "prompt": "x", "system": "s", "cache_prefix": "5m", "seed": 2**70},
    {"custom_id": "p9", "prompt": "", "max_output_tokens": None, "temperature": None, "cache_prefix": False},
    # Not plain: these go to the model path on both sides.
    {"custom_id": "m0", "messages": [{"role": "system", "content": "sys"}, {"role": "user", "content": "hi"},
                                     {"role": "assistant", "content": "yo"}, {"role": "user", "content": "more"}]},
    {"custom_id": "m1", "prompt": "x", "output_schema": {"type": "object", "properties": {"a": {"type": "string"}},
                                                         "required": ["a"], "additionalProperties": False}},
    {"custom_id": "m2", "prompt": "x", "tools": [{"name": "get_weather", "description": "weather",
                                                  "parameters": {"type": "object",
                                                                 "properties": {"city": {"type": "string"}}}}],
     "tool_choice": {"type": "tool", "tool_name": "get_weather"}},
    {"custom_id": "m3", "messages": [
        {"role": "user", "content": [{"type": "text", "text": "look"},
                                     {"type": "image", "image": "https://example.com/a.png"}]},
        {"role": "assistant", "content": [{"type": "tool-call", "tool_call_id": "c1", "tool_name": "f",
                                           "input": {"q": 1}}]},
        {"role": "tool", "content": [{"type": "tool-result", "tool_call_id": "c1", "tool_name": "f",
                                      "output": {"r": 2}}]}],
     "tools": [{"name": "f", "description": "d"}], "tool_choice": "auto"},
    {"custom_id": "m4", "prompt": "x", "temperature": True},  # a bool: pydantic's lax rules decide
    {"custom_id": "m5", "prompt": "x", "stop_sequences": ("a",)},
]
EMBEDDING_CORPUS: list[dict[str, Any]] = [
    {"custom_id": "e0", "value": "embed me"},
    {"value": "embed me too", "dimensions": 256},
    {"custom_id": "e2", "value": "x", "provider_options": {"encoding_format": "float"}},
]


def _outcome(adapter: Any, ref: Any, request: Any) -> tuple[Any, ...]:
    refusal = adapter.check_content(ref, request) or adapter.check_request(ref, request)
    if refusal is not None:
        return ("refused", refusal)
    try:
        item = adapter.encode(ref, request)
    except BatchworkError as exc:
        return ("error", type(exc).__name__, str(exc))
    recorder = RequestRecorder(ref)
    recorder.add(request, item)
    return ("item", item, adapter.primes(ref, request), recorder.estimated_input_tokens,
            recorder.estimated_output_tokens, bool(request.cache_prefix))


@pytest.mark.parametrize("model", REFS)
def test_plain_path_encodes_byte_identical_to_the_model_path(model: str) -> None:
    ref = parse_model(model)
    corpus = EMBEDDING_CORPUS if ref.kind == "embedding" else TEXT_CORPUS
    adapter = adapter_class(ref.provider).offline()
    plain = list(iter_requests(corpus, ref=ref, plain=True))
    models = list(iter_requests(corpus, ref=ref))
    assert [i for i, _ in plain] == [i for i, _ in models] == list(range(len(corpus)))
    kinds = [type(r) for _, r in plain]
    assert all(t is BatchRequest for _, t in zip(range(len(corpus)), (type(r) for _, r in models), strict=True))
    expected_plain = sum(1 for item in corpus if not str(item.get("custom_id", "")).startswith("m"))
    assert kinds.count(PlainRequest) == expected_plain  # the plain ones did take the fast path
    for (_, fast), (_, slow) in zip(plain, models, strict=True):
        assert _outcome(adapter, ref, fast) == _outcome(adapter, ref, slow), fast.custom_id
        if isinstance(fast, PlainRequest):
            assert fast.to_model() == slow


@pytest.mark.parametrize("model", ["openai/gpt-4o-mini", "anthropic/claude-haiku-4-5", "google/gemini-2.5-flash"])
def test_prepared_shards_match_the_model_encoding(model: str) -> None:
    ref = parse_model(model)
    adapter = adapter_class(ref.provider).offline()
    # The corpus less what this provider refuses (checked on the model path).
    ok = [TEXT_CORPUS[i] for i, r in iter_requests(TEXT_CORPUS, ref=ref) if _outcome(adapter, ref, r)[0] == "item"]
    assert len(ok) >= 8
    expected = [adapter.encode(ref, r) for _, r in iter_requests(ok, ref=ref)]
    defaults = {"max_output_tokens": 128}
    with prepare_job(model, ok, prime=False) as job:
        assert [line for shard in job.shards for line in shard] == expected
    with_defaults = [adapter.encode(ref, r) for _, r in iter_requests(ok, ref=ref, defaults=defaults)]
    with prepare_job(model, ok, defaults=defaults, prime=False) as job:
        assert [line for shard in job.shards for line in shard] == with_defaults


BAD: list[tuple[str, list[Any]]] = [
    ("openai/gpt-4o-mini", [{"custom_id": "a", "prompt": "x"}, {"custom_id": "a", "prompt": "y"}]),
    ("openai/gpt-4o-mini", [{"custom_id": "bad id!", "prompt": "x"}]),
    ("openai/gpt-4o-mini", [{"custom_id": 5, "prompt": "x"}]),
    ("openai/gpt-4o-mini", [{"custom_id": "a"}]),
    ("openai/gpt-4o-mini", [{"custom_id": "a", "prompt": "x", "value": "y"}]),
    ("openai/gpt-4o-mini", [{"custom_id": "a", "prompt": 3}]),
    ("openai/gpt-4o-mini", [{"custom_id": "a", "prompt": "x", "max_output_tokens": 0}]),
    ("openai/gpt-4o-mini", [{"custom_id": "a", "prompt": "x", "max_output_tokens": "many"}]),
    ("openai/gpt-4o-mini", [{"custom_id": "a", "prompt": "x", "temperature": 2.5}]),
    ("openai/gpt-4o-mini", [{"custom_id": "a", "prompt": "x", "temperature": math.nan}]),
    ("openai/gpt-4o-mini", [{"custom_id": "a", "prompt": "x", "top_p": -0.1}]),
    ("openai/gpt-4o-mini", [{"custom_id": "a", "prompt": "x", "stop_sequences": "END"}]),
    ("openai/gpt-4o-mini", [{"custom_id": "a", "prompt": "x", "stop_sequences": [1]}]),
    ("openai/gpt-4o-mini", [{"custom_id": "a", "prompt": "x", "cache_prefix": "2h"}]),
    ("openai/gpt-4o-mini", [{"custom_id": "a", "prompt": "x", "provider_options": {"user": {1, 2}}}]),
    ("openai/gpt-4o-mini", [{"custom_id": "a", "prompt": "x", "provider_options": {"n": math.inf}}]),
    ("openai/gpt-4o-mini", [{"custom_id": "a", "prompt": "x", "provider_options": "user=x"}]),
    ("openai/gpt-4o-mini", [{"custom_id": "a", "prompt": "x", "colour": "red"}]),
    ("openai/gpt-4o-mini", [{"custom_id": "a", "prompt": "x", "tool_choice": "auto"}]),
    ("openai/gpt-4o-mini", [{"custom_id": "a", "prompt": "x"}, "not a dict", {"custom_id": "c", "prompt": 1},
                            {"custom_id": "a", "prompt": "z"}, {"custom_id": "d", "top_k": -1, "prompt": "x"},
                            {"custom_id": "e"}, {"custom_id": "f"}]),
    ("openai/gpt-4o-mini", []),
    ("openai.embedding/text-embedding-3-small", [{"custom_id": "a", "prompt": "x"}]),
    ("openai.embedding/text-embedding-3-small", [{"custom_id": "a", "value": "x", "dimensions": -3}]),
]


def _error(model: str, corpus: list[Any], plain: bool) -> tuple[str, str]:
    with pytest.raises(BatchworkError) as info:
        list(iter_requests(corpus, ref=parse_model(model), plain=plain))
    return type(info.value).__name__, str(info.value)


@pytest.mark.parametrize(("model", "corpus"), BAD)
def test_plain_path_raises_the_model_path_errors(model: str, corpus: list[Any]) -> None:
    assert _error(model, corpus, plain=True) == _error(model, corpus, plain=False)


def test_prepare_job_errors_name_the_field_before_any_call() -> None:
    with pytest.raises(BatchworkError, match=r"requests\[1\]\.top_k: not supported by openai\.chat"):
        prepare_job("openai/gpt-4o-mini", [{"prompt": "x"}, {"prompt": "y", "top_k": 3}])
    with pytest.raises(BatchworkError, match=r"requests\[0\]\.temperature"):
        prepare_job("openai/gpt-4o-mini", [{"prompt": "x", "temperature": 9}])


def test_batch_request_objects_and_mappings_still_work() -> None:
    from types import MappingProxyType

    items: list[Any] = [MappingProxyType({"custom_id": "a", "prompt": "x", "temperature": 1})]
    with prepare_job("openai/gpt-4o-mini", items) as job:
        assert b'"temperature":1.0' in next(iter(job.shards[0]))
    models = [BatchRequest(custom_id="b", prompt="y", temperature=0.5),
              BatchRequest(custom_id="c", messages=[{"role": "user", "content": [{"type": "text", "text": "z"}]}])]
    with prepare_job("openai/gpt-4o-mini", models, defaults={"max_output_tokens": 9}) as job:
        lines = list(job.shards[0])
    adapter, ref = adapter_class("openai").offline(), parse_model("openai/gpt-4o-mini")
    assert lines == [adapter.encode(ref, m.model_copy(update={"max_output_tokens": 9})) for m in models]


def test_plain_request_mirrors_every_batch_request_field() -> None:
    """`PlainRequest` repeats `BatchRequest`'s fields for the adapters to read: a field added to the model
    must be added there too (unset: None), or an adapter reading it would fail on the plain path."""
    fields = BatchRequest.model_fields
    assert set(PlainRequest.__annotations__) == set(fields)
    for name, info in fields.items():
        if name != "custom_id":
            assert info.default is None and getattr(PlainRequest, name) is None, name


# --- the chunk path (`iter_request_chunks`: `plain_chunk` in one msgspec call, `HashedIds.add_new`, the adapters'
# `plain_encoder` and `plain_refusal`, `RequestRecorder.add_plain`, `ShardFiles.add_many`) against the
# per-request path, which `plain_chunk` returning None gives (the fix disabled).

PLAIN_TEXT = [item for item in TEXT_CORPUS if not str(item.get("custom_id", "")).startswith("m")
              and not item.get("cache_prefix")] + [
    {"custom_id": "t0", "prompt": "x", "stop_sequences": ("a", "b")},  # msgspec takes a tuple, as the model does
    {"custom_id": "t1", "prompt": "x", "max_output_tokens": 16, "temperature": 2, "top_p": 0},
    {"custom_id": "t2", "prompt": "x", "system": "s", "seed": 2**70},  # orjson refuses: the standard encoder
    {"custom_id": "t3", "prompt": "x", "stop_sequences": ["a", "b", "c", "d", "e"]},  # refused by openai chat
    {"custom_id": "t4", "prompt": "x", "top_k": 5},
    {"custom_id": "t5", "prompt": "x", "dimensions": 3},
]


def _slow(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(requests_module, "plain_chunk", lambda *args: None)


def _prepared(model: str, corpus: list[Any], **kwargs: Any) -> tuple[Any, ...]:
    with prepare_job(model, corpus, prime=False, **kwargs) as job:
        recorder = job.recorder
        assert recorder is not None
        ids = pq.read_table(job.ids_path).to_pylist()
        return (job.fingerprint, job.request_count, [list(shard) for shard in job.shards], ids,
                recorder.estimated_input_tokens, recorder.estimated_output_tokens, dict(recorder.schemas.counts))


def _chunk_kinds(model: str, corpus: list[Any], **kwargs: Any) -> list[bool]:
    return [plain for _, _, plain in iter_request_chunks([corpus], ref=parse_model(model), **kwargs)]


def _accepted(model: str, corpus: list[Any]) -> list[Any]:
    ref = parse_model(model)
    adapter = adapter_class(ref.provider).offline()
    return [corpus[i] for i, r in iter_requests(corpus, ref=ref) if _outcome(adapter, ref, r)[0] == "item"]


@pytest.mark.parametrize("model", REFS)
def test_chunk_path_prepares_the_same_job_as_the_per_request_path(model: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Shards, fingerprint, ids file (ids, shards, items, schema digests) and estimates are identical, with and
    without defaults, over several chunks and shards split inside a chunk."""
    ref = parse_model(model)
    base = EMBEDDING_CORPUS if ref.kind == "embedding" else PLAIN_TEXT
    ok = _accepted(model, base)
    assert len(ok) >= 2
    corpus = [{**item, "custom_id": f"r{i}"} for i, item in enumerate(ok * (2600 // len(ok)))]
    corpus[7].pop("custom_id")  # a default id inside a plain chunk
    defaults = {"dimensions": 8} if ref.kind == "embedding" else {"max_output_tokens": 64}
    runs: list[dict[str, Any]] = [{}, {"limits": {"max_requests": 700}}]
    if _accepted(model, [{**ok[0], **defaults}]):
        runs.append({"defaults": defaults})
    assert all(_chunk_kinds(model, corpus[:1024]))  # the chunk path is taken
    fast = [_prepared(model, corpus, **kwargs) for kwargs in runs]
    _slow(monkeypatch)
    assert not any(_chunk_kinds(model, corpus[:1024]))
    assert fast == [_prepared(model, corpus, **kwargs) for kwargs in runs]


@pytest.mark.parametrize("model", REFS)
def test_chunk_path_encodes_and_refuses_as_the_model_path(model: str) -> None:
    ref = parse_model(model)
    corpus = EMBEDDING_CORPUS if ref.kind == "embedding" else PLAIN_TEXT
    adapter = adapter_class(ref.provider).offline()
    [(start, chunk, plain)] = list(iter_request_chunks([corpus], ref=ref))
    assert plain and start == 0 and len(chunk) == len(corpus)
    models = [r for _, r in iter_requests(corpus, ref=ref)]
    outcomes = [_outcome(adapter, ref, r) for r in models]
    refused = adapter.plain_refusal(ref, chunk)
    first = next((i for i, o in enumerate(outcomes) if o[0] == "refused"), None)
    assert refused == (None if first is None else (first, outcomes[first][1]))
    sent = [i for i, o in enumerate(outcomes) if o[0] == "item"]
    assert adapter.plain_encoder(ref)([chunk[i] for i in sent]) == [outcomes[i][1] for i in sent]
    recorder, expected = RequestRecorder(ref), RequestRecorder(ref)
    recorder.add_plain([chunk[i] for i in sent], [outcomes[i][1] for i in sent])
    for i in sent:
        expected.add(models[i], outcomes[i][1])
    assert (recorder.estimated_input_tokens, recorder.estimated_output_tokens, recorder.flush()[ITEM_COLUMN]) == \
        (expected.estimated_input_tokens, expected.estimated_output_tokens, expected.flush()[ITEM_COLUMN])
    assert [r.to_model() for r in chunk] == models


NOT_PLAIN_CHUNKS: list[list[Any]] = [
    [{"custom_id": "a", "prompt": "x", "temperature": True}],
    [{"custom_id": "a", "prompt": "x", "max_output_tokens": "5"}],
    [{"custom_id": "a", "prompt": "x", "max_output_tokens": 1.0}],
    [{"custom_id": "a", "prompt": "x", "provider_options": {"n": math.nan}}],
    [{"custom_id": "a\n", "prompt": "x"}],  # valid (the pattern's `$`), but not for the joined check
    [{"custom_id": "a\nb", "prompt": "x"}],
    [{"custom_id": "", "prompt": "x"}],
    [{"custom_id": "a" * 65, "prompt": "x"}],
    [{"custom_id": "a", "prompt": "x", "messages": None}],
    [{"custom_id": "a", "prompt": None}],
    [{"custom_id": "a", "prompt": "x", "value": "y"}],
    [{"custom_id": "a", "value": "y"}],
]


def _result(model: str, corpus: list[Any], chunked: bool) -> tuple[Any, ...]:
    ref = parse_model(model)
    try:
        if chunked:
            got = [(i, r) for _, batch, _ in iter_request_chunks([corpus], ref=ref) for i, r in enumerate(batch)]
        else:
            got = list(iter_requests(corpus, ref=ref))
    except BatchworkError as exc:
        return ("error", type(exc).__name__, str(exc))
    return ("ok", [(i, r.model_dump() if isinstance(r, BatchRequest) else r.to_model().model_dump()) for i, r in got])


@pytest.mark.parametrize("corpus", NOT_PLAIN_CHUNKS)
def test_a_chunk_with_anything_not_plain_takes_the_per_request_path(corpus: list[Any]) -> None:
    assert requests_module.plain_chunk([{"prompt": "ok"}, *corpus], {}, 0, "text") is None
    assert _result("openai/gpt-4o-mini", corpus, chunked=True) == _result("openai/gpt-4o-mini", corpus, chunked=False)


def _error_chunked(model: str, corpus: list[Any], size: int) -> tuple[str, str]:
    chunks = [corpus[i:i + size] for i in range(0, len(corpus), size)]
    with pytest.raises(BatchworkError) as info:
        list(iter_request_chunks(chunks, ref=parse_model(model)))
    return type(info.value).__name__, str(info.value)


@pytest.mark.parametrize("size", [1, 2, 1024])
@pytest.mark.parametrize(("model", "corpus"), BAD)
def test_chunk_path_raises_the_model_path_errors(model: str, corpus: list[Any], size: int) -> None:
    assert _error_chunked(model, corpus, size) == _error(model, corpus, plain=False)


def test_duplicates_across_chunks_and_runs_are_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(SeenIds, "RUN", 5)
    corpus = [{"custom_id": f"id-{i}", "prompt": "p"} for i in range(40)]
    corpus[23]["custom_id"] = "id-2"  # sealed in an earlier run
    corpus[31]["custom_id"] = "id-29"  # in the same chunk
    expected = _error("openai/gpt-4o-mini", corpus, plain=False)
    assert "requests[23].custom_id: duplicate custom_id 'id-2' (also at requests[2])" in expected[1]
    for size in (3, 8, 40):
        assert _error_chunked("openai/gpt-4o-mini", corpus, size) == expected
    with pytest.raises(BatchworkError) as info:
        prepare_job("openai/gpt-4o-mini", corpus)
    assert str(info.value) == expected[1]


def test_prepare_job_refusals_and_sizes_name_the_request_on_the_chunk_path() -> None:
    corpus = [{"prompt": "x"} for _ in range(1500)]
    corpus[1200] = {"prompt": "x", "top_k": 3}
    assert _chunk_kinds("openai/gpt-4o-mini", corpus) == [True]
    with pytest.raises(BatchworkError, match=r"^requests\[1200\]\.top_k: not supported by openai\.chat"):
        prepare_job("openai/gpt-4o-mini", corpus)
    corpus[1200] = {"prompt": "x" * 2000}
    with pytest.raises(BatchworkError, match=r"^requests\[1200\]: request 'request-1200' is [\d,]+ bytes"):
        prepare_job("openai/gpt-4o-mini", corpus, limits={"max_request_bytes": 1500})


# --- duplicates found at the end (`HashedIds`: one sort of the ids' hashes) against the one-by-one check
# (`SeenIds`, the fix disabled): the same job, the same errors, the same request named, in `prepare_job`.

def _one_by_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(submission_module, "HashedIds", SeenIds)
    monkeypatch.setattr(requests_module, "HashedIds", SeenIds)


def _prepare_outcome(corpus: list[Any], **kwargs: Any) -> tuple[Any, ...]:
    try:
        with prepare_job("openai/gpt-4o-mini", corpus, prime=False, **kwargs) as job:
            return ("ok", job.fingerprint, pq.read_table(job.ids_path).to_pylist())
    except BatchworkError as exc:
        return ("error", type(exc).__name__, str(exc))


def _ids(n: int) -> list[dict[str, Any]]:
    return [{"custom_id": f"id-{i}", "prompt": f"p{i}"} for i in range(n)]


def _with(corpus: list[dict[str, Any]], **changes: dict[str, Any]) -> list[dict[str, Any]]:
    for at, change in changes.items():
        corpus[int(at[1:])] = {**corpus[int(at[1:])], **change}
    return corpus


TOO_LARGE = {"prompt": "x" * 3000}
DUPLICATE_CASES: dict[str, tuple[list[Any], dict[str, Any]]] = {
    "none": (_ids(700), {}),
    "duplicate, then a refusal": (_with(_ids(700), r10={"custom_id": "id-3"}, r600={"top_k": 3}), {}),
    "refusal, then a duplicate": (_with(_ids(700), r5={"top_k": 3}, r300={"custom_id": "id-1"}), {}),
    "refusal, then a duplicate in its chunk": (_with(_ids(700), r20={"top_k": 3}, r30={"custom_id": "id-1"}), {}),
    "duplicate, then a refusal in its chunk": (_with(_ids(700), r20={"custom_id": "id-1"}, r30={"top_k": 3}), {}),
    "a refused duplicate": (_with(_ids(700), r20={"custom_id": "id-1", "top_k": 3}), {}),
    "duplicate, then too large": (_with(_ids(700), r100={"custom_id": "id-7"}, r500=TOO_LARGE),
                                  {"limits": {"max_request_bytes": 2000}}),
    "too large, then a duplicate": (_with(_ids(700), r100=TOO_LARGE, r500={"custom_id": "id-7"}),
                                    {"limits": {"max_request_bytes": 2000}}),
    "duplicate, then six bad requests": (
        _with(_ids(900), r100={"custom_id": "id-2"}, **{f"r{i}": {"temperature": 9} for i in range(300, 900, 100)}),
        {}),
    "six bad requests, then a duplicate": (
        _with(_ids(900), **{f"r{i}": {"temperature": 9} for i in range(50, 650, 100)}, r800={"custom_id": "id-2"}),
        {}),
    "duplicates and bad requests interleaved": (
        _with(_ids(900), r30={"custom_id": "id-1"}, r50={"temperature": 9}, r200={"custom_id": "id-40"},
              r400={"prompt": None}, r600={"custom_id": "id-30"}, r650={"custom_id": "id-2"},
              r700={"top_p": 5}), {}),
    "a third copy names the first": (_with(_ids(700), r250={"custom_id": "id-0"}, r500={"custom_id": "id-0"}), {}),
    "an invalid first occurrence is not one": (
        _with(_ids(700), r5={"custom_id": "x", "temperature": 9}, r300={"custom_id": "x"}, r600={"custom_id": "x"}),
        {}),
    "a duplicate before a refused chat request": (
        _with(_ids(700), r40={"custom_id": "id-4"},
              r90={"prompt": None, "messages": [{"role": "user", "content": "hi"}], "top_k": 2}), {}),
    "a duplicate in the per-request path": (
        _with(_ids(700), r40={"custom_id": "id-4", "messages": [{"role": "user", "content": "hi"}], "prompt": None},
              r90={"top_k": 2}), {}),
    "a duplicate with a context window": (
        _with(_ids(700), r40={"custom_id": "id-4"}, r90={"prompt": "x" * 400}), {"context_window": 60}),
    "every id the same": ([{"custom_id": "same", "prompt": "p"} for _ in range(600)], {}),
}


@pytest.fixture(params=["real hashes", "colliding hashes", "extreme hashes"])
def hashes(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """`HashedIds` with its hashes as they are, all colliding, or at the two ends of the range (where its parts
    start and stop); the one-by-one check (the reference) keeps real hashes and several sorted runs."""
    monkeypatch.setattr(SeenIds, "RUN", 50)
    if request.param == "colliding hashes":
        monkeypatch.setattr(HashedIds, "hash", staticmethod(lambda value: len(value) % 2))
    elif request.param == "extreme hashes":
        monkeypatch.setattr(HashedIds, "hash", staticmethod(lambda value: (1 << 63) - 1 if len(value) % 2
                                                            else -(1 << 63)))
    return str(request.param)


@pytest.mark.parametrize("case", DUPLICATE_CASES)
def test_duplicates_found_at_the_end_give_the_one_by_one_outcome(case: str, hashes: str,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    corpus, kwargs = DUPLICATE_CASES[case]
    got = _prepare_outcome(corpus, **kwargs)
    _one_by_one(monkeypatch)
    assert got == _prepare_outcome(corpus, **kwargs)
    assert got[0] == ("ok" if case == "none" else "error")


def test_a_duplicate_does_not_take_its_chunk_off_the_chunk_path() -> None:
    """A chunk with a duplicate custom_id stays one chunk (no id is checked on its own); the error comes when
    the input ends, naming both positions."""
    corpus = _with(_ids(700), r400={"custom_id": "id-3"}, r401={"custom_id": "id-400"})
    chunks, kinds = [corpus[i:i + 256] for i in range(0, 700, 256)], []
    with pytest.raises(BatchworkError) as info:
        for _, _, plain in iter_request_chunks(chunks, ref=parse_model("openai/gpt-4o-mini")):
            kinds.append(plain)
    assert kinds == [True, True, True]
    assert str(info.value).startswith("requests[400].custom_id: duplicate custom_id 'id-3' (also at requests[3])")


def test_hashed_ids_tell_a_collision_from_a_duplicate(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(HashedIds, "hash", staticmethod(lambda value: 7))
    seen = HashedIds()
    try:
        seen.add_new([f"c{i}" for i in range(3000)], 10)
        seen.add("c2999", 5000)
        seen.add_new(["c5", "z", "c5"], 6000)
        assert seen.count == 3004
        assert seen.duplicates(5) == [(5000, "c2999", 3009), (6000, "c5", 15), (6002, "c5", 15)]
        assert seen.duplicates(1) == [(5000, "c2999", 3009)]
    finally:
        seen.close()


ANTHROPIC_PLAIN = [*PLAIN_TEXT, *[item for item in TEXT_CORPUS if item.get("cache_prefix")],
                   {"custom_id": "a0", "prompt": "x", "temperature": 1.0, "top_p": 0.3, "top_k": 2},
                   {"custom_id": "a1", "prompt": "x", "temperature": 1, "system": "s", "cache_prefix": "1h"},
                   {"custom_id": "a2", "prompt": "x", "temperature": 0.5, "provider_options": {"max_tokens": 9}}]


@pytest.mark.parametrize("model", ["claude-3-5-haiku-latest", "claude-haiku-4-5", "claude-opus-4-7"])
def test_anthropic_plain_encoder_is_encode_for_every_sampling_kind(model: str) -> None:
    """Anthropic's fused `plain_encoder` against `encode` of the models, where each model kind takes its
    sampling fields ("all", "one", "none": the default temperature left out), with cache_prefix blocks."""
    ref = parse_model(f"anthropic/{model}")
    adapter = adapter_class("anthropic").offline()
    chunk, _ = requests_module.plain_chunk(ANTHROPIC_PLAIN, {}, 0, "text") or ([], [])
    assert len(chunk) == len(ANTHROPIC_PLAIN)
    expected = [adapter.encode(ref, r) for _, r in iter_requests(ANTHROPIC_PLAIN, ref=ref)]
    assert adapter.plain_encoder(ref)(chunk) == expected
    assert "plain_encoder" in vars(type(adapter))  # its own, fused (not `encode` of each)


GEMINI_PLAIN = [*ANTHROPIC_PLAIN,
                {"custom_id": "g0", "prompt": "x", "temperature": 0.1,
                 "provider_options": {"generationConfig": {"responseMimeType": "text/plain"}}},
                {"custom_id": "g1", "prompt": "x", "system": "s", "cache_prefix": True,
                 "provider_options": {"cachedContent": "cachedContents/abc"}}]


def test_gemini_plain_encoder_is_encode() -> None:
    """Gemini's fused `plain_encoder` against `encode`: generation fields, provider_options merged one level
    deep, the cache_prefix mark (not with cachedContent)."""
    ref = parse_model("google/gemini-2.5-flash")
    adapter = adapter_class("google").offline()
    chunk, _ = requests_module.plain_chunk(GEMINI_PLAIN, {}, 0, "text") or ([], [])
    assert len(chunk) == len(GEMINI_PLAIN)
    expected = [adapter.encode(ref, r) for _, r in iter_requests(GEMINI_PLAIN, ref=ref)]
    assert b'"batchworkCachePrefix":true' in expected[-4] and b"batchworkCachePrefix" not in expected[-1]
    assert adapter.plain_encoder(ref)(chunk) == expected
    assert "plain_encoder" in vars(type(adapter))  # its own, fused (not `encode` of each)
