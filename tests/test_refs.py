"""Model references: string grammar, canonical form, factories and their errors."""

from __future__ import annotations

import pytest

import airflow_batchwork as bw
from airflow_batchwork.core import ModelRef, ModelRefError, parse_model


@pytest.mark.parametrize(
    ("text", "canonical", "endpoint"),
    [
        ("openai/gpt-4o-mini", "openai.chat/gpt-4o-mini", "chat"),
        ("openai.chat/gpt-4o-mini", "openai.chat/gpt-4o-mini", "chat"),
        ("openai.responses/gpt-5.5", "openai.responses/gpt-5.5", "responses"),
        ("openai.completion/gpt-3.5-turbo-instruct", "openai.completion/gpt-3.5-turbo-instruct", "completion"),
        ("openai.embedding/text-embedding-3-small", "openai.embedding/text-embedding-3-small", "embedding"),
        ("anthropic/claude-sonnet-4-5", "anthropic/claude-sonnet-4-5", "messages"),
        ("OpenAI/gpt-4o", "openai.chat/gpt-4o", "chat"),
    ],
)
def test_parse_canonical(text: str, canonical: str, endpoint: str) -> None:
    ref = parse_model(text)
    assert str(ref) == canonical
    assert ref.endpoint == endpoint
    assert parse_model(str(ref)) == ref


def test_factories_mirror_ai_sdk() -> None:
    assert str(bw.openai("gpt-5.5")) == "openai.responses/gpt-5.5"
    assert str(bw.openai.chat("gpt-4o-mini")) == "openai.chat/gpt-4o-mini"
    assert str(bw.openai.completion("m")) == "openai.completion/m"
    assert str(bw.openai.embedding("text-embedding-3-small")) == "openai.embedding/text-embedding-3-small"
    assert str(bw.anthropic("claude-haiku-4-5")) == "anthropic/claude-haiku-4-5"
    assert isinstance(bw.openai("x"), ModelRef)


def test_split_on_first_slash_only() -> None:
    ref = parse_model("openai/ft:gpt-4o/org/x")
    assert ref.model == "ft:gpt-4o/org/x"


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("nope/gpt", "unknown provider 'nope'"),
        ("openai.images/dall-e", "unknown endpoint 'images'"),
        ("gpt-4o-mini", "is not a model reference"),
        ("openai/", "missing or malformed model id"),
        ("openai/gpt 4o", "missing or malformed model id"),
    ],
)
def test_bad_refs_name_field_and_fix(text: str, needle: str) -> None:
    with pytest.raises(ModelRefError) as info:
        parse_model(text)
    message = str(info.value)
    assert message.startswith("model:")
    assert needle in message
    assert "Fix:" in message


def test_unknown_endpoint_lists_valid_ones() -> None:
    with pytest.raises(ModelRefError, match=r"openai\.responses/<model>"):
        parse_model("openai.image/x")
    with pytest.raises(AttributeError, match="has no endpoint"):
        bw.openai.images("x")  # type: ignore[operator]
