"""Point Airflow at the emulator: connection env vars for every provider it serves."""

from __future__ import annotations

import json
from typing import Protocol

EMULATOR_API_KEY = "emulator-key"


class _ServesProviders(Protocol):
    @property
    def providers(self) -> tuple[str, ...]: ...

    def base_url(self, provider: str) -> str: ...


def connection_env(emulator: _ServesProviders, api_key: str = EMULATOR_API_KEY) -> dict[str, str]:
    """`AIRFLOW_CONN_BATCHWORK_<PROVIDER>` values for the default connections `batchwork_<provider>`."""
    return {
        f"AIRFLOW_CONN_BATCHWORK_{provider.upper()}": json.dumps({
            "conn_type": "batchwork",
            "password": api_key,
            "host": emulator.base_url(provider),
            "extra": {"provider": provider},
        })
        for provider in emulator.providers
    }
