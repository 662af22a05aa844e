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


class ProviderAPIError(BatchworkError):
    """The provider answered with an HTTP error."""

    def __init__(
        self,
        provider: str,
        status_code: int,
        message: str,
        *,
        code: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        self.provider = provider
        self.status_code = status_code
        self.code = code
        self.retry_after = retry_after
        self.message = message
        detail = f" ({code})" if code else ""
        super().__init__(f"{provider} API error {status_code}{detail}: {message}")

    @property
    def retryable(self) -> bool:
        return self.status_code in (408, 409, 429) or self.status_code >= 500


class UnsafeResponseError(BatchworkError):
    """The provider returned an id or URL that is not safe to use (bad characters, foreign origin)."""


class BatchFailedError(BatchworkError):
    """A provider batch ended in `failed` (typically input validation on the provider side)."""


class BatchTimeoutError(BatchworkError):
    """A job did not reach a terminal state before its deadline."""
