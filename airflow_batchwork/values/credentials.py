"""Provider credentials. The API key never appears in a repr, a log line or an exception."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from airflow_batchwork.values.errors import CredentialsError


@dataclass(frozen=True)
class Credentials:
    """An API key, an optional base URL and extra headers for one provider."""

    api_key: str = field(repr=False)
    base_url: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict, repr=False)
    source: str = ""

    def __post_init__(self) -> None:
        # Refused here, before any HTTP call: an empty key would only fail as an illegal header after retries.
        where = f"api_key ({self.source})" if self.source else "api_key"
        if not isinstance(self.api_key, str):
            raise CredentialsError(where, f"expected a string, got {type(self.api_key).__name__}",
                                   "pass the API key as a string")
        if not self.api_key.strip():
            raise CredentialsError(where, "is empty", "give the provider's API key (the key itself is never logged)")
        if self.api_key != self.api_key.strip() or not self.api_key.isascii() or not self.api_key.isprintable():
            raise CredentialsError(where, "contains spaces, line breaks or non-ASCII characters",
                                   "copy the key again without surrounding whitespace or quotes")


def credentials_from_env(
    provider: str, key_vars: tuple[str, ...], *, environ: Mapping[str, str] | None = None
) -> Credentials:
    """Read `<KEY_VAR>` and `<PROVIDER>_BASE_URL` from the environment."""
    env = os.environ if environ is None else environ
    base_url = env.get(f"{provider.upper()}_BASE_URL") or None
    for var in key_vars:
        if env.get(var):
            return Credentials(api_key=env[var], base_url=base_url, source=f"env {var}")
    # Raised from a plain script (BatchClient); the Airflow hook words its own message around connections.
    raise CredentialsError(
        "credentials",
        f"no API key for provider {provider!r}: {' / '.join(key_vars)} "
        f"{'is' if len(key_vars) == 1 else 'are'} not set",
        f"export {key_vars[0]}=<your key>, or pass BatchClient(credentials={{{provider!r}: "
        f"Credentials(api_key=...)}})",
    )
