"""Per-call progress of a multi-call submit, handed to the adapters and kept in the submit ledger."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


class CallProgress:
    """Per-call progress of one shard's submit, kept in that shard's ledger entry (`calls`).

    A submit that takes several calls (upload then create; create then add-requests pages) records what
    each call produced as soon as it returns (`record`, which saves the ledger), so a retry after a kill
    resumes from there instead of starting over, and knows what to look up at the provider."""

    def __init__(self, data: dict[str, Any] | None = None, save: Callable[[], None] | None = None) -> None:
        self.data: dict[str, Any] = data if data is not None else {}
        self._save = save

    def get(self, key: str, default: Any = None) -> Any:
        return self.data.get(key, default)

    def record(self, **values: Any) -> None:
        self.data.update(values)
        if self._save is not None:
            self._save()
