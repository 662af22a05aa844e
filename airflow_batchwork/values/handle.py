"""The job handle: the small JSON dict that identifies a submitted job (contract §4).

A handle comes back from XCom, which users can write, so it is untrusted input: every field is checked
before any use (API calls, file reads, console links). The provider must be known and match the model;
every batch id must look like one of that provider's batch ids (each adapter's `batch_id_pattern`); the
`ids_url` must be a storage URL (no web scheme, no `..`, no control characters) and, when the caller
names its state store (`state_root`), lie under it. A bad
handle is a `ConfigurationError` (the operators fail the task at once, without retries).
"""

from __future__ import annotations

import ast
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from airflow_batchwork.values.catalog import provider_entry
from airflow_batchwork.values.errors import ConfigurationError
from airflow_batchwork.values.refs import parse_model

IDENTITY_PATTERN = re.compile(r"^(?!\.\.?\Z)[^\x00-\x1f/\\]{1,250}\Z")
CONN_ID_PATTERN = re.compile(r"^[A-Za-z0-9_.-]{1,250}\Z")
_WEB = ("http://", "https://", "ws://", "wss://", "ftp://")


class ShardHandle(BaseModel):
    """One provider batch of a job."""

    model_config = ConfigDict(extra="allow")
    id: str = Field(max_length=300)
    request_count: int = Field(ge=0)


class JobHandle(BaseModel):
    """What `submit` returns and `SubmitBatchOperator` pushes to XCom. Never holds requests or results."""

    model_config = ConfigDict(extra="allow")

    version: int = 1
    provider: str
    model: str
    batches: list[ShardHandle]
    request_count: int = Field(ge=0)
    conn_id: str | None = None
    ids_url: str | None = None
    identity: str | None = None
    passthrough: list[str] | None = None
    structured: dict[str, Any] | None = None
    """Output schemas: `{"schemas": {digest: JSON Schema}, "all": digest | None}` (see values/structured.py)."""
    submitted_at: str = Field(default_factory=lambda: datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"))

    @field_validator("conn_id")
    @classmethod
    def _conn_id(cls, value: str | None) -> str | None:
        if value is not None and not CONN_ID_PATTERN.fullmatch(value):
            raise ValueError(f"{value[:80]!r} is not an Airflow connection id")
        return value

    @field_validator("identity")
    @classmethod
    def _identity(cls, value: str | None) -> str | None:
        if value is not None and not IDENTITY_PATTERN.fullmatch(value):
            raise ValueError(f"{value[:80]!r} is not a submission identity")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> JobHandle:
        try:
            cls = provider_entry(self.provider)
        except ConfigurationError:
            raise _FieldProblem("provider", f"unknown provider {self.provider[:40]!r}") from None
        try:
            ref = parse_model(self.model)
        except ConfigurationError:
            raise _FieldProblem("model", f"{self.model[:80]!r} is not a model string") from None
        if provider_entry(ref.provider) is not cls:
            raise _FieldProblem("model", f"{self.model[:80]!r} is not a model of provider {cls.provider!r}")
        for index, batch in enumerate(self.batches):
            if not cls.is_batch_id(batch.id):
                raise _FieldProblem(f"batches.{index}.id",
                                    f"{batch.id[:80]!r} does not look like a batch id of {cls.provider}")
        if sum(b.request_count for b in self.batches) > self.request_count:
            raise _FieldProblem("request_count", "is smaller than the request counts of its batches")
        if self.ids_url is not None:
            check_state_url(self.ids_url, self.identity, field="ids_url")
        return self

    @property
    def batch_ids(self) -> list[str]:
        return [b.id for b in self.batches]

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    @classmethod
    def coerce(cls, value: JobHandle | Mapping[str, Any] | str, *, field: str = "job",
               state_root: str | None = None) -> JobHandle:
        """Accept a handle, its dict form (XCom) or its JSON text, validated as untrusted input (see the
        module text); with `state_root`, its `ids_url` must lie under that state store."""
        handle = cls._coerce(value, field=field)
        if state_root is not None and handle.ids_url is not None:
            root = state_root.rstrip("/") + "/"
            if not handle.ids_url.startswith(root):
                raise ConfigurationError(f"{field}.ids_url", f"{handle.ids_url[:120]!r} is not under the configured "
                                         f"state store {root!r}", "pass the handle SubmitBatchOperator returned")
        return handle

    @classmethod
    def _coerce(cls, value: JobHandle | Mapping[str, Any] | str, *, field: str) -> JobHandle:
        if isinstance(value, JobHandle):
            return value
        if not isinstance(value, Mapping | str):
            raise ConfigurationError(field, f"a {type(value).__name__} is not a batchwork job handle",
                                     "pass the return value of SubmitBatchOperator (e.g. submit.output) or "
                                     "BatchClient.submit")
        try:
            if isinstance(value, str):
                # Jinja renders a dict as its Python repr unless the DAG renders native objects.
                text = value.strip()
                if text.startswith("{") and "'" in text and '"' not in text.split(":", 1)[0]:
                    try:
                        return cls.model_validate(ast.literal_eval(text))
                    except (ValueError, SyntaxError):
                        pass
                return cls.model_validate_json(text)
            return cls.model_validate(value)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            message = str(first["msg"])
            problem = first.get("ctx", {}).get("error")
            if isinstance(problem, _FieldProblem):
                where, message = problem.field, problem.problem
            elif message.startswith("Value error, "):
                message = message.removeprefix("Value error, ")
            raise ConfigurationError(
                f"{field}.{where}" if where else field,
                f"not a batchwork job handle ({message})",
                "pass the return value of SubmitBatchOperator (e.g. submit.output) or BatchClient.submit",
            ) from None
        except (ValueError, SyntaxError, RecursionError, MemoryError) as exc:
            raise ConfigurationError(field, f"not a batchwork job handle ({type(exc).__name__})",
                                     "pass the return value of SubmitBatchOperator (e.g. submit.output) or "
                                     "BatchClient.submit") from None


class _FieldProblem(ValueError):
    """A handle problem that names its own field (pydantic would name the whole model)."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(problem)
        self.field = field
        self.problem = problem


def check_state_url(url: str, identity: str | None, *, field: str) -> str:
    """A state-store file URL: a storage scheme (never a web URL), no `..`, no control characters."""
    lowered = url.lower()
    if lowered.startswith(_WEB) or "::" in url or any(ord(c) < 32 for c in url):
        raise _FieldProblem(field, f"{url[:120]!r} is not a state-store location (web URLs are never read)")
    if any(part == ".." for part in re.split(r"[/\\]", url)):
        raise _FieldProblem(field, f"{url[:120]!r} climbs out of its folder ('..')")
    return url
