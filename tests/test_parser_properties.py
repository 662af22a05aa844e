"""Property test: arbitrary result lines never crash a provider's parser, and every line is accounted for
(one normalized row, or None when it names no request), with values Arrow can store."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from airflow_batchwork.adapters import ADAPTERS
from airflow_batchwork.core import ItemResult, parse_model
from airflow_batchwork.engine.parquet import items_to_batch

MODELS = {
    "openai": ["openai.chat/m", "openai.responses/m", "openai.completion/m", "openai.embedding/m"],
    "anthropic": ["anthropic/m"],
    "google": ["google/m", "google.embedding/m"],
    "groq": ["groq/m"],
    "mistral": ["mistral/m", "mistral.embedding/m"],
    "together": ["together/org/m"],
    "xai": ["xai/m", "xai.responses/m"],
}
STATUSES = {"succeeded", "errored", "expired", "canceled", "missing", "invalid_output"}
KEYS = ["custom_id", "key", "batch_request_id", "response", "result", "error", "batch_result", "body", "type",
        "message", "choices", "content", "candidates", "usage", "status_code", "metadata", "embedding", "data"]

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=8),
                                                                 inner, max_size=5),
    max_leaves=25,
)
ids = st.from_regex(r"[A-Za-z0-9_-]{1,64}", fullmatch=True)


@st.composite
def result_lines(draw: st.DrawFn) -> str:
    kind = draw(st.integers(0, 3))
    if kind == 0:
        return draw(st.text(max_size=200))
    if kind == 1:
        return json.dumps(draw(json_values))
    body = draw(st.dictionaries(st.sampled_from(KEYS), json_values, max_size=5))
    body[draw(st.sampled_from(["custom_id", "key", "batch_request_id"]))] = draw(ids)
    text = json.dumps(body)
    if kind == 3:
        return text[: draw(st.integers(0, len(text)))]
    return text


CASES = [(provider, model) for provider, models in MODELS.items() for model in models]


def test_every_provider_is_covered() -> None:
    assert set(MODELS) == set(ADAPTERS)


@pytest.mark.parametrize(("provider", "model"), CASES)
@settings(max_examples=150, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(lines=st.lists(result_lines(), max_size=12))
def test_arbitrary_lines_are_accounted_for(provider: str, model: str, lines: list[str]) -> None:
    adapter = ADAPTERS[provider].offline()
    ref = parse_model(model)
    outcomes = [adapter.parse_result_line(ref, "batch_prop", line) for line in lines]
    assert len(outcomes) == len(lines)
    items = [item for item in outcomes if item is not None]
    for line, item in zip(lines, outcomes, strict=True):
        if item is None:
            continue
        assert isinstance(item, ItemResult)
        assert item.status in STATUSES
        assert item.custom_id and item.custom_id in line
        assert item.batch_id == "batch_prop"
    items_to_batch(items)  # every value fits the Parquet schema's types
