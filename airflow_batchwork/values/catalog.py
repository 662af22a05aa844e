"""Which providers exist, as far as the values need to know: their names, endpoints and batch id shapes.

The values layer cannot import the adapters (they sit above it), so the adapters package registers each
adapter class here when it is imported (`airflow_batchwork.adapters`), and the package root imports the
adapters package, so the catalog is complete before any `airflow_batchwork.*` module is used.
`ModelRef`, `parse_model` and `JobHandle` look providers up here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, Protocol

from airflow_batchwork.values.errors import ModelRefError

if TYPE_CHECKING:
    from collections.abc import Iterable

EndpointKind = Literal["text", "embedding"]


@dataclass(frozen=True)
class EndpointSpec:
    """One batch endpoint of a provider, as named in model strings (`openai.responses/…`)."""

    name: str
    kind: EndpointKind
    path: str = ""


class ProviderEntry(Protocol):
    """What the values read of a registered provider (an adapter class satisfies it)."""

    provider: str
    endpoints: tuple[EndpointSpec, ...]
    string_default: str
    factory_default: str

    def endpoint(self, name: str) -> EndpointSpec: ...

    def is_batch_id(self, value: object) -> bool: ...


_PROVIDERS: dict[str, ProviderEntry] = {}
_ALIASES: dict[str, str] = {}


def register(entry: ProviderEntry, *, aliases: Iterable[str] = ()) -> None:
    """Make a provider known to model references and handles (called by `airflow_batchwork.adapters`)."""
    _PROVIDERS[entry.provider] = entry
    for alias in aliases:
        _ALIASES[alias] = entry.provider


def canonical_name(name: str) -> str:
    return _ALIASES.get(name, name)


def provider_names() -> list[str]:
    return list(_PROVIDERS)


def provider_entry(provider: str) -> ProviderEntry:
    try:
        return _PROVIDERS[canonical_name(provider)]
    except KeyError:
        raise ModelRefError(
            "provider", f"unknown provider {provider!r}", f"use one of: {', '.join(_PROVIDERS)}"
        ) from None
