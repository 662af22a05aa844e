"""Structured output: the `output_schema` of a request, how it travels with the job, and its check at collect.

A schema is a JSON Schema dict (or a pydantic model class, turned into its JSON Schema). Adapters map it to
each provider's native mechanism; the collector parses every succeeded item's text as JSON and validates it
against the schema of its request (`jsonschema`, the draft the schema declares, else 2020-12). A match is
written to the `structured` column (compact JSON); a mismatch turns the row's status into `invalid_output`.

The job handle carries the distinct schemas (`JobHandle.structured = {"schemas": {digest: schema}, "all":
digest | None}`). When every request uses one schema, `all` names it; otherwise each request's digest is
recorded in the submitted-ids file (column `_batchwork_schema`), which the collector joins on custom_id.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

import fsspec
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from jsonschema import SchemaError
from jsonschema.validators import validator_for
from pydantic import BaseModel

from airflow_batchwork.values.errors import ConfigurationError

SCHEMA_COLUMN = "_batchwork_schema"
INVALID_OUTPUT = "invalid_output"
# The handle travels through XCom and trigger kwargs: keep the schemas it carries small.
MAX_DISTINCT_SCHEMAS = 16
MAX_SCHEMAS_BYTES = 64 * 1024
_NAME = re.compile(r"[^A-Za-z0-9_-]+")
_FENCE = re.compile(r"^```(?:json)?\s*\n?(.*?)\n?```$", re.DOTALL)
_CHECKED: set[str] = set()


def to_json_schema(value: object, *, field: str = "output_schema") -> dict[str, Any]:
    """A JSON Schema dict from a dict or a pydantic model class; refused if it is not a valid schema."""
    if isinstance(value, type) and issubclass(value, BaseModel):
        value = value.model_json_schema()
    if not isinstance(value, Mapping):
        raise ConfigurationError(field, f"expected a JSON Schema dict or a pydantic model class, got "
                                 f"{type(value).__name__}", 'pass e.g. {"type": "object", "properties": {...}}')
    try:
        canonical = json.dumps(value, separators=(",", ":"))  # key order kept: providers follow it
    except (TypeError, ValueError) as exc:
        raise ConfigurationError(field, f"not JSON-serializable ({exc})", "use plain dicts, lists, strings and "
                                 "numbers") from None
    # Every request of a job usually carries the same schema: check it once.
    if canonical not in _CHECKED:
        schema = json.loads(canonical)
        try:
            validator_for(schema).check_schema(schema)
        except SchemaError as exc:
            raise ConfigurationError(field, f"not a valid JSON Schema ({exc.message})",
                                     "fix the schema (see https://json-schema.org)") from None
        if len(_CHECKED) > 256:
            _CHECKED.clear()
        _CHECKED.add(canonical)
    return dict(json.loads(canonical))


def with_output_schema(defaults: Mapping[str, Any] | None, output_schema: object) -> Mapping[str, Any] | None:
    """`defaults` with a job-level `output_schema` added (a request's own `output_schema` still wins)."""
    if output_schema is None:
        return defaults
    return {**(defaults or {}), "output_schema": to_json_schema(output_schema)}


def schema_digest(schema: Mapping[str, Any]) -> str:
    """A short stable id of a schema (canonical JSON, sha256)."""
    return hashlib.sha256(json.dumps(schema, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:16]


def schema_name(schema: Mapping[str, Any]) -> str:
    """The `name` providers ask for alongside a schema: its title, else `output` (`^[A-Za-z0-9_-]{1,64}$`)."""
    title = _NAME.sub("_", str(schema.get("title") or "")).strip("_")[:64]
    return title or "output"


def is_strict_compatible(schema: Mapping[str, Any]) -> bool:
    """True when every object lists all its properties as required and forbids others, the subset that
    OpenAI-style `strict: true` accepts; adapters send `strict` only then."""

    def check(node: object) -> bool:
        if isinstance(node, list):
            return all(check(item) for item in node)
        if not isinstance(node, Mapping):
            return True
        props = node.get("properties")
        if isinstance(props, Mapping) or node.get("type") == "object":
            props = props if isinstance(props, Mapping) else {}
            if node.get("additionalProperties") is not False or set(node.get("required") or []) != set(props):
                return False
        return all(check(value) for key, value in node.items() if key not in ("enum", "const", "default"))

    return check(schema)


def parse_output(text: str | None) -> tuple[Any, str | None]:
    """(value, None) for JSON text (a surrounding Markdown code fence is tolerated), else (None, problem)."""
    if text is None:
        return None, "the reply has no text to validate (a refusal or a tool call?)"
    body = text.strip()
    fenced = _FENCE.match(body)
    if fenced:
        body = fenced.group(1).strip()
    try:
        return json.loads(body), None
    except ValueError as exc:
        return None, f"the reply is not valid JSON ({exc})"


class SchemaSet:
    """The distinct output schemas of one job, collected while it is prepared (`structured` in the handle)."""

    def __init__(self) -> None:
        self.schemas: dict[str, dict[str, Any]] = {}
        self.counts: dict[str | None, int] = {}

    def add(self, schema: Mapping[str, Any] | None) -> str | None:
        """Record one request's schema (or its absence); its digest."""
        digest = None
        if schema is not None:
            digest = schema_digest(schema)
            if digest not in self.schemas:
                self.schemas[digest] = dict(schema)
                size = len(json.dumps(self.schemas))
                if len(self.schemas) > MAX_DISTINCT_SCHEMAS or size > MAX_SCHEMAS_BYTES:
                    raise ConfigurationError(
                        "output_schema",
                        f"the job uses {len(self.schemas)} distinct output schemas ({size:,} bytes of JSON); the job "
                        f"handle carries at most {MAX_DISTINCT_SCHEMAS} and {MAX_SCHEMAS_BYTES:,} bytes",
                        "use one job-level output_schema, or split the job by schema",
                    )
        self.counts[digest] = self.counts.get(digest, 0) + 1
        return digest

    def add_absent(self, count: int) -> None:
        """Record `count` requests without a schema (`add(None)` `count` times)."""
        self.counts[None] = self.counts.get(None, 0) + count

    @property
    def uniform(self) -> str | None:
        """The digest every request uses, if they all use the same schema."""
        return next(iter(self.counts)) if len(self.counts) == 1 else None

    @property
    def needs_ids(self) -> bool:
        """True when requests differ in their schema, so the ids file must say which request used which."""
        return bool(self.schemas) and self.uniform is None

    def handle_value(self) -> dict[str, Any] | None:
        """The `structured` value of the job handle, or None without structured output."""
        if not self.schemas:
            return None
        return {"schemas": dict(self.schemas), "all": self.uniform}


class StructuredEnricher:
    """Validates succeeded rows against their request's schema: fills `structured`, or sets `invalid_output`.

    A `RowEnricher`: it returns `structured`, `status`, `error_code` and `error_message` for every row
    (unchanged where no schema applies or the row did not succeed)."""

    fields: Sequence[pa.Field] = ()

    def __init__(self, structured: Mapping[str, Any], ids_url: str | None = None,
                 storage_options: Mapping[str, Any] | None = None) -> None:
        self.schemas: dict[str, Mapping[str, Any]] = dict(structured.get("schemas") or {})
        self.all: str | None = structured.get("all")
        self.ids_url = ids_url
        self.storage_options = dict(storage_options or {})
        self._validators: dict[str, Any] = {}
        self._map: pa.Table | None = None

    def _validator(self, digest: str) -> Any:
        if digest not in self._validators:
            schema = self.schemas[digest]
            self._validators[digest] = validator_for(schema)(schema)
        return self._validators[digest]

    def _digests(self, ids: pa.Array) -> list[str | None]:
        if self.all is not None:
            return [self.all] * len(ids)
        if self.ids_url is None:
            return [None] * len(ids)
        if self._map is None:
            fs, path = fsspec.core.url_to_fs(self.ids_url, **self.storage_options)
            with fs.open(path, "rb") as handle:
                # On the calling thread: no Arrow pool thread (apache/arrow#34314, engine/parquet.py).
                table = pq.ParquetFile(handle, pre_buffer=False).read(columns=["custom_id", SCHEMA_COLUMN],
                                                                      use_threads=False)
            self._map = table.filter(pc.is_valid(table.column(SCHEMA_COLUMN)))
        positions = pc.index_in(ids, value_set=self._map.column("custom_id").combine_chunks())
        return list(pc.take(self._map.column(SCHEMA_COLUMN), positions).to_pylist())

    def __call__(self, items: pa.RecordBatch) -> Mapping[str, pa.Array]:
        digests = self._digests(items.column("custom_id"))
        status = items.column("status").to_pylist()
        code = items.column("error_code").to_pylist()
        message = items.column("error_message").to_pylist()
        structured: list[str | None] = [None] * items.num_rows
        texts = items.column("text").to_pylist()
        for row, digest in enumerate(digests):
            if digest is None or status[row] != "succeeded":
                continue
            problem = self._check(digest, texts[row], structured, row)
            if problem:
                status[row], code[row], message[row] = INVALID_OUTPUT, INVALID_OUTPUT, problem
        return {
            "structured": pa.array(structured, pa.string()),
            "status": pa.array(status, pa.string()),
            "error_code": pa.array(code, pa.string()),
            "error_message": pa.array(message, pa.string()),
        }

    def _check(self, digest: str, text: str | None, structured: list[str | None], row: int) -> str | None:
        value, problem = parse_output(text)
        if problem:
            return problem
        error = next(iter(sorted(self._validator(digest).iter_errors(value), key=lambda e: list(e.path))), None)
        if error is not None:
            where = "$" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error.path)
            return f"the reply does not match output_schema at {where}: {error.message}"[:1000]
        structured[row] = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
        return None
