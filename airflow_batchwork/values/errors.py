"""Exceptions raised by the batchwork core. Messages never contain credentials."""

from __future__ import annotations


class BatchworkError(Exception):
    """Base class for every batchwork error."""


class ConfigurationError(BatchworkError, ValueError):
    """Bad input found before any API call: names the field and the fix."""

    def __init__(self, field: str, problem: str, fix: str) -> None:
        self.field = field
        self.problem = problem
        self.fix = fix
        super().__init__(f"{field}: {problem}. Fix: {fix}")


class RequestValidationError(ConfigurationError):
    """One or more batch requests are invalid (raised before any API call)."""


class ModelRefError(ConfigurationError):
    """A model reference string cannot be parsed or names an unknown provider/endpoint."""


class CredentialsError(ConfigurationError):
    """No usable API key was found for a provider."""


# What to do about an HTTP error that retrying will not fix, by status code.
_FIXES = {
    400: "the provider refused the request as sent; check the model id and the request fields it names",
    401: "the API key was refused; check the key in the connection's password or the provider's env var",
    403: "the API key may not do this; check the key's project, permissions and the model's availability",
    404: "nothing at that URL; check the base URL (connection host or <PROVIDER>_BASE_URL) and the batch id",
    422: "the provider refused the request as sent; check the model id and the request fields it names",
}


class ProviderAPIError(BatchworkError):
    """The provider answered with an HTTP error. The message names the call (method and URL, never a key)."""

    def __init__(
        self,
        provider: str,
        status_code: int,
        message: str,
        *,
        code: str | None = None,
        retry_after: float | None = None,
        method: str | None = None,
        url: str | None = None,
    ) -> None:
        self.provider = provider
        self.status_code = status_code
        self.code = code
        self.retry_after = retry_after
        self.message = message
        self.method = method
        self.url = url
        detail = f" ({code})" if code else ""
        call = f" on {method} {url}" if method and url else ""
        fix = _FIXES.get(status_code)
        text = f"{provider} API error {status_code}{detail}{call}: {message}"
        super().__init__(f"{text.rstrip('.')}. Fix: {fix}" if fix else text)

    @property
    def retryable(self) -> bool:
        return self.status_code in (408, 409, 429) or self.status_code >= 500

    @property
    def permanent(self) -> bool:
        """An answer that retrying the same call will not change (bad request, auth, not found)."""
        return self.status_code in _FIXES


class UnsafeResponseError(BatchworkError):
    """The provider returned an id or URL that is not safe to use (bad characters, foreign origin)."""


class BatchFailedError(BatchworkError):
    """A provider batch ended in `failed` (typically input validation on the provider side)."""


class BatchTimeoutError(BatchworkError):
    """A job did not reach a terminal state before its deadline."""
