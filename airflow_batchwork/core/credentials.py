"""Provider credentials. The API key never appears in a repr, a log line or an exception."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from airflow_batchwork.core.errors import CredentialsError


@dataclass(frozen=True)
class Credentials:
    """An API key, an optional base URL and extra headers for one provider."""

    api_key: str = field(repr=False)
    base_url: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict, repr=False)
    source: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.api_key, str):
            raise TypeError("api_key must be a string")


def credentials_from_env(
    provider: str, key_vars: tuple[str, ...], *, environ: Mapping[str, str] | None = None
) -> Credentials:
    """Read `<KEY_VAR>` and `<PROVIDER>_BASE_URL` from the environment."""
    env = os.environ if environ is None else environ
    base_url = env.get(f"{provider.upper()}_BASE_URL") or None
    for var in key_vars:
        if env.get(var):
            return Credentials(api_key=env[var], base_url=base_url, source=f"env {var}")
    raise CredentialsError(
        "conn_id",
        f"no credentials for provider {provider!r}: no connection given and "
        f"{' / '.join(key_vars)} {'is' if len(key_vars) == 1 else 'are'} not set",
        f"create the Airflow connection 'batchwork_{provider}' (type batchwork, password = API key) "
        f"or set {key_vars[0]}",
    )
