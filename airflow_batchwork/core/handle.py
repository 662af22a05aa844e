"""The job handle: the small JSON dict that identifies a submitted job (contract §4)."""

from __future__ import annotations

import ast
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from airflow_batchwork.core.errors import ConfigurationError


class ShardHandle(BaseModel):
    """One provider batch of a job."""

    model_config = ConfigDict(extra="allow")
    id: str
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
    """Output schemas: `{"schemas": {digest: JSON Schema}, "all": digest | None}` (see core/structured.py)."""
    submitted_at: str = Field(default_factory=lambda: datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"))

    @property
    def batch_ids(self) -> list[str]:
        return [b.id for b in self.batches]

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    @classmethod
    def coerce(cls, value: JobHandle | Mapping[str, Any] | str, *, field: str = "job") -> JobHandle:
        """Accept a handle, its dict form (XCom) or its JSON text."""
        if isinstance(value, JobHandle):
            return value
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
            raise ConfigurationError(
                f"{field}.{where}" if where else field,
                f"not a batchwork job handle ({first['msg']})",
                "pass the return value of SubmitBatchOperator (e.g. submit.output) or BatchClient.submit",
            ) from None
