"""Batch requests, shaped like the AI SDK's `generateText` input (snake_case), and their validation.

Everything here runs before any API call: a bad request is refused with the field and the fix.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from airflow_batchwork.core.errors import ConfigurationError, RequestValidationError
from airflow_batchwork.core.structured import to_json_schema

if TYPE_CHECKING:
    from airflow_batchwork.core.refs import ModelRef

CUSTOM_ID_PATTERN = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
MAX_REPORTED_PROBLEMS = 5


class TextPart(BaseModel):
    """A text content part of a message."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    type: Literal["text"] = "text"
    text: str


class ChatMessage(BaseModel):
    """One conversation turn."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    role: Literal["system", "user", "assistant"]
    content: str | list[TextPart]

    @property
    def text(self) -> str:
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content)


class BatchRequest(BaseModel):
    """One item of a batch job."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    custom_id: str
    prompt: str | None = None
    messages: list[ChatMessage] | None = None
    system: str | None = None
    value: str | None = None
    max_output_tokens: int | None = Field(default=None, gt=0)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)
    top_k: int | None = Field(default=None, gt=0)
    stop_sequences: list[str] | None = None
    seed: int | None = None
    presence_penalty: float | None = Field(default=None, ge=-2, le=2)
    frequency_penalty: float | None = Field(default=None, ge=-2, le=2)
    dimensions: int | None = Field(default=None, gt=0)
    output_schema: dict[str, Any] | None = None
    """Structured output: a JSON Schema dict (a pydantic model class is turned into one)."""
    provider_options: dict[str, Any] | None = None
    cache_prefix: bool | Literal["5m", "1h"] | None = None
    """Mark the system prompt as a cacheable prefix with the provider's prompt-cache control (Anthropic):
    True or "1h" for the one-hour cache, "5m" for the five-minute one (docs/pay-once.md)."""

    @field_validator("output_schema", mode="before")
    @classmethod
    def _schema(cls, value: object) -> object:
        if value is None:
            return None
        try:
            return to_json_schema(value)
        except ConfigurationError as exc:
            raise ValueError(exc.problem) from None

    @model_validator(mode="after")
    def _one_input(self) -> BatchRequest:
        given = [name for name in ("prompt", "messages", "value") if getattr(self, name) is not None]
        if len(given) > 1:
            raise ValueError(f"give exactly one of prompt, messages or value, not {' and '.join(given)}")
        if self.messages is not None and not self.messages:
            raise ValueError("messages is empty; give at least one message")
        return self

    def conversation(self) -> list[ChatMessage]:
        """The request as a message list (system prompt excluded); `prompt` becomes one user turn."""
        if self.messages is not None:
            return [m for m in self.messages if m.role != "system"]
        return [ChatMessage(role="user", content=self.prompt or "")]

    def system_text(self) -> str | None:
        """`system` plus any system-role messages, joined by blank lines."""
        parts = [self.system] if self.system else []
        parts += [m.text for m in self.messages or [] if m.role == "system"]
        return "\n\n".join(parts) if parts else None


REQUEST_FIELDS = frozenset(BatchRequest.model_fields)
DEFAULTABLE_FIELDS = REQUEST_FIELDS - {"custom_id", "prompt", "messages", "value"}
# Free-form fields copied into the provider's JSON body as given: every value in them must be JSON.
JSON_FIELDS = ("provider_options", "output_schema")


def _describe(error: Mapping[str, Any]) -> str:
    msg = str(error.get("msg", "invalid"))
    if error.get("type") == "extra_forbidden":
        msg = f"unknown field; known fields are {', '.join(sorted(REQUEST_FIELDS))}"
    return msg.removeprefix("Value error, ")


def _location(prefix: str, loc: tuple[Any, ...]) -> str:
    out = prefix
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else f".{part}"
    return out


def validate_defaults(defaults: Mapping[str, Any] | None, *, field: str = "defaults") -> dict[str, Any]:
    """Check a job-level `defaults` dict: only per-request option fields are allowed."""
    if defaults is None:
        return {}
    if not isinstance(defaults, Mapping):
        raise RequestValidationError(field, f"expected a dict, got {type(defaults).__name__}",
                                     'pass e.g. {"max_output_tokens": 256}')
    unknown = sorted(set(defaults) - DEFAULTABLE_FIELDS)
    if unknown:
        raise RequestValidationError(
            f"{field}.{unknown[0]}",
            "cannot be a job-level default",
            f"defaults may set only: {', '.join(sorted(DEFAULTABLE_FIELDS))}",
        )
    # Check the values here, so that a bad default is reported as `defaults.<field>`, not as requests[0].
    given = {k: v for k, v in defaults.items() if v is not None}
    try:
        BatchRequest.model_validate({**given, "custom_id": "defaults", "prompt": "-"})
    except ValidationError as exc:
        first = exc.errors()[0]
        raise RequestValidationError(_location(field, tuple(first["loc"])), _describe(first),
                                     "correct or remove this default") from None
    problem = next((p for k in JSON_FIELDS if isinstance(given.get(k), Mapping)
                    and (p := _non_json(given[k], f"{field}.{k}"))), None)
    if problem:
        raise RequestValidationError(*problem)
    return dict(defaults)


_JSON_SCALARS = (str, int, float, bool, type(None))


def _non_json(value: Any, where: str) -> tuple[str, str, str] | None:
    """The first value under `where` that JSON cannot carry, as (field, problem, fix); None if all can."""
    if isinstance(value, float) and not math.isfinite(value):
        return where, f"{value!r} is not a JSON number", "use a finite number"
    if isinstance(value, _JSON_SCALARS):
        return None
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str):
                return where, f"key {key!r} is a {type(key).__name__}; JSON object keys are strings", \
                    "use string keys"
            found = _non_json(item, f"{where}.{key}")
            if found:
                return found
        return None
    if isinstance(value, list | tuple):
        for index, item in enumerate(value):
            found = _non_json(item, f"{where}[{index}]")
            if found:
                return found
        return None
    return (where, f"a {type(value).__name__} ({value!r:.60}) is not a JSON value",
            "convert it to a str, int, float, bool, list or dict (e.g. float(x) or str(x)) before submitting")


def check_request_list(raw: object, field: str = "requests") -> None:
    """Refuse a dict or a string given as the request list (it would be walked key by key)."""
    if isinstance(raw, Mapping | str | bytes):
        raise RequestValidationError(
            field, f"expected a list of request dicts, got a {type(raw).__name__}",
            'wrap it in a list, e.g. requests=[{"custom_id": "a", "prompt": "…"}]',
        )


def iter_requests(
    raw: Iterable[Mapping[str, Any]],
    *,
    ref: ModelRef,
    defaults: Mapping[str, Any] | None = None,
    field: str = "requests",
) -> Iterator[tuple[int, BatchRequest]]:
    """Validate raw request dicts one by one, apply `defaults`, assign `custom_id`s (`request-{index}`).

    Streaming: valid requests are yielded as they come; problems are gathered (up to five) and raised
    together when the input ends, so a caller must not act on what it got before then."""
    check_request_list(raw, field)
    base = validate_defaults(defaults)
    kind = ref.kind
    problems: list[tuple[str, str, str]] = []
    seen: dict[str, int] = {}
    count = 0
    for index, item in enumerate(raw):
        where = f"{field}[{index}]"
        if len(problems) >= MAX_REPORTED_PROBLEMS:
            break
        if not isinstance(item, Mapping):
            problems.append((where, f"expected a dict, got {type(item).__name__}",
                             'write each request as a dict, e.g. {"custom_id": "a", "prompt": "…"}'))
            continue
        data = {**base, **{k: v for k, v in item.items() if v is not None}}
        data.setdefault("custom_id", f"request-{index}")
        non_json = next((p for k in JSON_FIELDS if isinstance(item.get(k), Mapping)
                         and (p := _non_json(item[k], f"{where}.{k}"))), None)
        if non_json:
            problems.append(non_json)
            continue
        try:
            request = BatchRequest.model_validate(data)
        except ValidationError as exc:
            first = exc.errors()[0]
            problems.append((_location(where, tuple(first["loc"])), _describe(first),
                             "correct or remove this field (see the request fields in the README)"))
            continue
        problem = _check_request(request, kind)
        if problem:
            problems.append((f"{where}.{problem[0]}", problem[1], problem[2]))
            continue
        if request.custom_id in seen:
            problems.append((f"{where}.custom_id", f"duplicate custom_id {request.custom_id!r} "
                             f"(also at {field}[{seen[request.custom_id]}])", "make every custom_id unique"))
            continue
        seen[request.custom_id] = index
        count += 1
        if not problems:
            yield index, request
    if problems:
        raise _combined(problems)
    if not count:
        raise RequestValidationError(field, "the request list is empty", "give at least one request")


def prepare_requests(
    raw: Iterable[Mapping[str, Any]],
    *,
    ref: ModelRef,
    defaults: Mapping[str, Any] | None = None,
    field: str = "requests",
) -> list[BatchRequest]:
    """All requests validated (see `iter_requests`), as a list."""
    return [request for _, request in iter_requests(raw, ref=ref, defaults=defaults, field=field)]


def _check_request(request: BatchRequest, kind: str) -> tuple[str, str, str] | None:
    if not CUSTOM_ID_PATTERN.match(request.custom_id):
        return ("custom_id", f"{request.custom_id!r} is not a valid custom_id",
                "use 1-64 characters from A-Z, a-z, 0-9, '_' and '-'")
    if kind == "embedding":
        if request.value is None:
            return ("value", "an embedding request needs `value` (the text to embed)",
                    "set value instead of prompt/messages")
    elif request.prompt is None and request.messages is None:
        return ("prompt", "neither prompt nor messages is set", "give exactly one of prompt or messages")
    return None


def _combined(problems: list[tuple[str, str, str]]) -> RequestValidationError:
    field, problem, fix = problems[0]
    error = RequestValidationError(field, problem, fix)
    if len(problems) > 1:
        more = "; ".join(f"{f}: {p}" for f, p, _ in problems[1:])
        error.args = (f"{error.args[0]} (also: {more})",)
    return error
