"""Registry of emulated providers: one module per provider, one line each below.

Each module under :mod:`airflow_batchwork.testing.providers` exposes a
:class:`~airflow_batchwork.testing.providers.base.ProviderSpec` named ``SPEC``; the emulator mounts every
registered spec under its prefix. Prefixes fixed by the contract: ``/openai/v1``, ``/anthropic``, ``/gemini``,
``/groq``, ``/mistral``, ``/together/v1``, ``/xai/v1``. The registry imports the provider modules; they import
only :mod:`~airflow_batchwork.testing.providers.base` and the shared parts below it, never the registry.
"""

from __future__ import annotations

from airflow_batchwork.testing.providers import anthropic, gemini, groq, mistral, openai, together, xai
from airflow_batchwork.testing.providers.base import ProviderSpec

__all__ = ["PROVIDERS", "provider_for_path"]

PROVIDERS: dict[str, ProviderSpec] = {
    spec.name: spec
    for spec in (openai.SPEC, anthropic.SPEC, gemini.SPEC, xai.SPEC, groq.SPEC, mistral.SPEC, together.SPEC)
}


def provider_for_path(path: str) -> ProviderSpec | None:
    """The registered provider whose prefix owns ``path``, if any."""
    for spec in PROVIDERS.values():
        if spec.owns(path):
            return spec
    return None
