"""Model references: `"<provider>[.<endpoint>]/<model id>"` strings and the AI-SDK-style factories.

The grammar splits on the first `/` only, because Together model ids contain slashes
(`together/meta-llama/Llama-3.3-70B-Instruct-Turbo`). Which providers and endpoints exist is
declared by the adapters (`airflow_batchwork.adapters`), which register them in `values.catalog`.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from airflow_batchwork.values.catalog import EndpointKind, EndpointSpec, ProviderEntry, canonical_name, provider_entry
from airflow_batchwork.values.catalog import provider_names as _provider_names
from airflow_batchwork.values.errors import ModelRefError


@dataclass(frozen=True)
class ModelRef:
    """A provider, one of its batch endpoints, and a model id."""

    provider: str
    endpoint: str
    model: str

    def __str__(self) -> str:
        adapter = _entry(self.provider)
        if len(adapter.endpoints) == 1:
            return f"{self.provider}/{self.model}"
        return f"{self.provider}.{self.endpoint}/{self.model}"

    @cached_property
    def spec(self) -> EndpointSpec:
        return _entry(self.provider).endpoint(self.endpoint)

    @property
    def kind(self) -> EndpointKind:
        return self.spec.kind


def _entry(provider: str) -> ProviderEntry:
    return provider_entry(provider)


def parse_model(value: str | ModelRef, *, field: str = "model") -> ModelRef:
    """Parse a model string (or pass a `ModelRef` through), checking provider and endpoint."""
    if isinstance(value, ModelRef):
        return value
    if not isinstance(value, str) or "/" not in value:
        raise ModelRefError(
            field,
            f"{value!r} is not a model reference",
            'write "<provider>[.<endpoint>]/<model id>", e.g. "openai/gpt-4o-mini" or '
            '"anthropic/claude-sonnet-4-5"',
        )
    head, model = value.split("/", 1)
    provider, _, endpoint = head.partition(".")
    provider = canonical_name(provider.strip().lower())
    if provider not in _provider_names():
        raise ModelRefError(
            field,
            f"unknown provider {head.partition('.')[0]!r} in {value!r}",
            f"use one of: {', '.join(_provider_names())}",
        )
    adapter = _entry(provider)
    endpoint = endpoint.strip().lower() or adapter.string_default
    names = [spec.name for spec in adapter.endpoints]
    if endpoint not in names:
        raise ModelRefError(
            field,
            f"unknown endpoint {endpoint!r} for provider {provider!r}",
            f"use one of: {', '.join(f'{provider}.{name}/<model>' for name in names)}",
        )
    model = model.strip()
    if not model or any(ch.isspace() for ch in model):
        raise ModelRefError(field, f"missing or malformed model id in {value!r}", "put the model id after '/'")
    return ModelRef(provider, endpoint, model)


class ProviderFactory:
    """`openai("m")`, `openai.chat("m")`, …: builds `ModelRef`s the way the AI SDK does."""

    def __init__(self, provider: str) -> None:
        self._provider = provider

    def __call__(self, model: str) -> ModelRef:
        adapter = _entry(self._provider)
        return parse_model(f"{self._provider}.{adapter.factory_default}/{model}")

    def __getattr__(self, endpoint: str) -> _EndpointFactory:
        if endpoint.startswith("_"):
            raise AttributeError(endpoint)
        adapter = _entry(self._provider)
        if endpoint not in [spec.name for spec in adapter.endpoints]:
            raise AttributeError(
                f"{self._provider} has no endpoint {endpoint!r}; "
                f"use one of: {', '.join(spec.name for spec in adapter.endpoints)}"
            )
        return _EndpointFactory(self._provider, endpoint)

    def __repr__(self) -> str:
        return f"<model factory {self._provider}>"


@dataclass(frozen=True)
class _EndpointFactory:
    provider: str
    endpoint: str

    def __call__(self, model: str) -> ModelRef:
        return parse_model(f"{self.provider}.{self.endpoint}/{model}")
