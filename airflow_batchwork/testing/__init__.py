"""Offline test tooling: the provider :class:`Emulator`.

``Emulator`` is imported lazily so that ``import airflow_batchwork.testing`` stays cheap and
``python -m airflow_batchwork.testing.emulator`` does not import the module twice.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from airflow_batchwork.testing.emulator import Emulator

__all__ = ["Emulator"]


def __getattr__(name: str) -> Any:
    if name == "Emulator":
        from airflow_batchwork.testing.emulator import Emulator

        return Emulator
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
