"""Registry of provider adapters: provider name -> adapter class."""

from __future__ import annotations

from airflow_batchwork.adapters.anthropic import AnthropicAdapter
from airflow_batchwork.adapters.base import ProviderAdapter
from airflow_batchwork.adapters.google import GoogleAdapter
from airflow_batchwork.adapters.groq import GroqAdapter
from airflow_batchwork.adapters.mistral import MistralAdapter
from airflow_batchwork.adapters.openai import OpenAIAdapter
from airflow_batchwork.adapters.together import TogetherAdapter
from airflow_batchwork.adapters.xai import XAIAdapter
from airflow_batchwork.values import catalog
from airflow_batchwork.values.errors import ModelRefError

ADAPTERS: dict[str, type[ProviderAdapter]] = {
    adapter.provider: adapter
    for adapter in (OpenAIAdapter, AnthropicAdapter, GoogleAdapter, XAIAdapter, GroqAdapter, MistralAdapter,
                    TogetherAdapter)
}
PROVIDER_ALIASES: dict[str, str] = {"gemini": "google"}
for _adapter in ADAPTERS.values():
    catalog.register(_adapter, aliases=[alias for alias, name in PROVIDER_ALIASES.items() if name == _adapter.provider])


def provider_names() -> list[str]:
    return list(ADAPTERS)


def adapter_class(provider: str) -> type[ProviderAdapter]:
    try:
        return ADAPTERS[PROVIDER_ALIASES.get(provider, provider)]
    except KeyError:
        raise ModelRefError(
            "provider", f"unknown provider {provider!r}", f"use one of: {', '.join(ADAPTERS)}"
        ) from None


__all__ = ["ADAPTERS", "PROVIDER_ALIASES", "ProviderAdapter", "adapter_class", "provider_names"]
