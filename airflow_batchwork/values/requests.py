"""Batch requests, shaped like the AI SDK's `generateText` input (snake_case), and their validation.

Everything here runs before any API call: a bad request is refused with the field and the fix.
"""

from __future__ import annotations

import bisect
import json
import math
import re
import tempfile
from array import array
from collections.abc import Iterable, Iterator, Mapping
from operator import attrgetter
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal

import msgspec
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from airflow_batchwork.values.errors import ConfigurationError, RequestValidationError
from airflow_batchwork.values.structured import to_json_schema

if TYPE_CHECKING:
    from airflow_batchwork.values.refs import ModelRef

CUSTOM_ID_PATTERN = re.compile(r"^[A-Za-z0-9_-]{1,64}\Z")
TOOL_NAME_PATTERN = re.compile(r"^[A-Za-z0-9_-]{1,64}\Z")
MAX_REPORTED_PROBLEMS = 5
_BASE64 = re.compile(r"^[A-Za-z0-9+/]*={0,2}\Z")
_URLISH = re.compile(r"^(?:[A-Za-z][A-Za-z0-9+.-]*://|data:)")


def _check_payload(value: str | bytes) -> str | bytes:
    """An image/file payload must be a URL (any fsspec scheme), a data: URL, base64 text or bytes."""
    if not value:
        raise ValueError("is empty")
    if isinstance(value, str) and not _URLISH.match(value) and (len(value) % 4 or not _BASE64.match(value)):
        raise ValueError("is neither a URL nor base64 text; give an http(s) URL, a data: URL, a file URL such "
                         "as s3://bucket/a.png or file:///tmp/a.png, base64 text or bytes")
    return value


class TextPart(BaseModel):
    """A text content part of a message."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    type: Literal["text"] = "text"
    text: str


class ImagePart(BaseModel):
    """An image (AI SDK `ImagePart`): `image` is an http(s) URL, a `data:` URL, base64 text, raw bytes,
    or a file on any fsspec URL (`s3://…`, `file://…`), which is read and inlined as base64 at build time."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    type: Literal["image"]
    image: str | bytes
    media_type: str | None = None

    @field_validator("image")
    @classmethod
    def _payload_ok(cls, value: str | bytes) -> str | bytes:
        return _check_payload(value)

    @property
    def payload(self) -> str | bytes:
        return self.image


class FilePart(BaseModel):
    """A file such as a PDF (AI SDK `FilePart`): `data` is given like `ImagePart.image`."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    type: Literal["file"]
    data: str | bytes
    media_type: str | None = None
    filename: str | None = None

    @field_validator("data")
    @classmethod
    def _payload_ok(cls, value: str | bytes) -> str | bytes:
        return _check_payload(value)

    @property
    def payload(self) -> str | bytes:
        return self.data


class ToolCallPart(BaseModel):
    """A tool call the assistant made earlier in the conversation (AI SDK `ToolCallPart`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    type: Literal["tool-call"]
    tool_call_id: str = Field(min_length=1)
    tool_name: str = Field(min_length=1)
    input: dict[str, Any] = Field(default_factory=dict)


class ToolResultPart(BaseModel):
    """The result of a tool call, in a `tool` message (AI SDK `ToolResultPart`); `output` is any JSON value."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    type: Literal["tool-result"]
    tool_call_id: str = Field(min_length=1)
    tool_name: str = Field(min_length=1)
    output: Any = None
    is_error: bool | None = None

    def output_text(self) -> str:
        """The output as text: a string as is, anything else as compact JSON."""
        if isinstance(self.output, str):
            return self.output
        return json.dumps(self.output, separators=(",", ":"), ensure_ascii=False)


ContentPart = Annotated[
    TextPart | ImagePart | FilePart | ToolCallPart | ToolResultPart, Field(discriminator="type")
]
MediaPart = ImagePart | FilePart
# Which part types each role may carry.
_ROLE_PARTS: dict[str, tuple[str, ...]] = {
    "system": ("text",), "user": ("text", "image", "file"), "assistant": ("text", "tool-call"),
    "tool": ("tool-result",),
}


class ChatMessage(BaseModel):
    """One conversation turn."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    role: Literal["system", "user", "assistant", "tool"]
    content: str | list[ContentPart]

    @model_validator(mode="after")
    def _parts_fit_role(self) -> ChatMessage:
        allowed = _ROLE_PARTS[self.role]
        if isinstance(self.content, str):
            if self.role == "tool":
                raise ValueError('a tool message carries a list of {"type": "tool-result", …} parts, not text')
            return self
        for part in self.content:
            if part.type not in allowed:
                raise ValueError(f"a {self.role!r} message cannot carry a {part.type!r} part "
                                 f"(it may carry: {', '.join(allowed)})")
        return self

    @property
    def text(self) -> str:
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content if isinstance(part, TextPart))

    @property
    def parts(self) -> list[TextPart | ImagePart | FilePart | ToolCallPart | ToolResultPart]:
        """The content as a part list (a string is one text part)."""
        if isinstance(self.content, str):
            return [TextPart(text=self.content)]
        return list(self.content)


class ToolSpec(BaseModel):
    """A function tool the model may call: `parameters` is a JSON Schema (a pydantic model class is turned
    into one)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str
    description: str | None = None
    parameters: dict[str, Any] = Field(default_factory=lambda: {"type": "object", "properties": {}})

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not TOOL_NAME_PATTERN.match(value):
            raise ValueError(f"{value!r} is not a valid tool name; use 1-64 characters from A-Z, a-z, 0-9, '_' and '-'")
        return value

    @field_validator("parameters", mode="before")
    @classmethod
    def _schema(cls, value: object) -> object:
        try:
            schema = to_json_schema(value)
        except ConfigurationError as exc:
            raise ValueError(exc.problem) from None
        if schema.get("type", "object") != "object":
            raise ValueError("tool parameters must be a JSON Schema of type object")
        return schema


class NamedToolChoice(BaseModel):
    """Force one tool (AI SDK `{type: "tool", toolName}`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    type: Literal["tool"]
    tool_name: str


ToolChoice = Literal["auto", "required", "none"] | NamedToolChoice


def tool_call_id(request_id: str, index: int) -> str:
    """A deterministic id for a tool call the provider gave no id for."""
    return f"call_{request_id}_{index}"


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
    tools: list[ToolSpec] | None = None
    """Function tools the model may call."""
    tool_choice: ToolChoice | None = None
    """auto / required / none, or {"type": "tool", "tool_name": …} to force one tool."""
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
        if self.tools is not None:
            names = [t.name for t in self.tools]
            if not names:
                raise ValueError("tools is empty; give at least one tool or leave tools out")
            dupes = sorted({n for n in names if names.count(n) > 1})
            if dupes:
                raise ValueError(f"tool name {dupes[0]!r} is given twice; make every tool name unique")
        if self.tool_choice is not None and self.tool_choice != "none" and not self.tools:
            raise ValueError(f"tool_choice {self._choice_label()} needs tools; add tools or remove tool_choice")
        if isinstance(self.tool_choice, NamedToolChoice) and self.tools \
                and self.tool_choice.tool_name not in {t.name for t in self.tools}:
            raise ValueError(f"tool_choice names {self.tool_choice.tool_name!r}, which is not one of the tools "
                             f"({', '.join(t.name for t in self.tools)})")
        return self

    def _choice_label(self) -> str:
        choice = self.tool_choice
        return repr(choice) if isinstance(choice, str) else f"tool {choice.tool_name!r}" if choice else "None"

    def media_parts(self) -> list[tuple[str, ImagePart | FilePart]]:
        """(location, part) of every image and file part, location like `messages[0].content[1]`."""
        found: list[tuple[str, ImagePart | FilePart]] = []
        for m_index, message in enumerate(self.messages or []):
            if isinstance(message.content, list):
                for p_index, part in enumerate(message.content):
                    if isinstance(part, ImagePart | FilePart):
                        found.append((f"messages[{m_index}].content[{p_index}]", part))
        return found

    def has_tool_parts(self) -> bool:
        """True when the conversation carries tool calls or tool results."""
        return any(isinstance(p, ToolCallPart | ToolResultPart)
                   for m in self.messages or [] if isinstance(m.content, list) for p in m.content)

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


_PART_TAGS = frozenset({"text", "image", "file", "tool-call", "tool-result", "tool"})


def _best_error(errors: list[Any]) -> Mapping[str, Any]:
    """The most telling error: the deepest one (a union reports one error per branch; the branch that got
    furthest is the one the user meant)."""
    return max(errors, key=lambda e: (len(_clean_loc(tuple(e["loc"]))), e.get("type") != "string_type"))


def _clean_loc(loc: tuple[Any, ...]) -> tuple[Any, ...]:
    """A pydantic location without union branch names (`str`, `list[...]`) and discriminator tags."""
    out: list[Any] = []
    tag_dropped = False
    for part in loc:
        if isinstance(part, str) and (part in ("str", "bytes") or "[" in part or part.startswith("function-")):
            continue
        if isinstance(part, str) and part in _PART_TAGS and not tag_dropped and len(out) >= 2 \
                and isinstance(out[-1], int) and out[-2] == "content":
            tag_dropped = True
            continue
        out.append(part)
    return tuple(out)


def _location(prefix: str, loc: tuple[Any, ...]) -> str:
    out = prefix
    for part in _clean_loc(loc):
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
        first = _best_error(exc.errors())
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


_BIT_PAIRS = tuple((1 << a) | (1 << b) for a in range(8) for b in range(a + 1, 8))  # the 28 two-bit bytes


class SeenIds:
    """The custom_ids seen so far, in a fixed-size filter plus 12 bytes per id (a dict of the ids took ~150).

    A 64-bit hash of each id marks two bits of one byte (from two parts of the hash) of a fixed table
    (4 MB, 2**25 bits) and goes, in runs of 32,768 sorted by hash, beside its ordinal; the ids themselves and
    their request indexes go to temporary files run by run. An id with a clear bit is new (most ids: of the
    first million new ids 0.5 % find both bits set; with one bit per id in a 1 MB table 6 %, up to 12 % by
    the millionth, and each such id looks in every sorted run); an id whose hash matches an earlier one is compared with
    that id as read back, so a hash collision is never reported as a duplicate."""

    SLOTS = 1 << 25
    SECOND = 25  # which two bits: the hash shifted by this much, modulo 28
    RUN = 32_768
    hash = staticmethod(hash)  # Python's keyed string hash (random per process: no input can be made to collide)

    def __init__(self) -> None:
        self._marks = bytearray(self.SLOTS >> 3)  # one bit per slot, two slots of one byte per id
        self._pending: set[int] = set()  # the hashes of the current run
        self._hashes: list[int] = []  # and the same, in order, beside
        self._lines: list[str] = []  # the custom_ids of the current run (the strings the caller holds anyway)
        self._indexes = array("q")  # and their request indexes
        self._runs: list[tuple[array[int], array[int]]] = []  # hashes (8 B), ordinals (4 B)
        # The sealed ids, each followed by a space (no id has one), and their request indexes (8 B each).
        self._file = tempfile.TemporaryFile(prefix="batchwork-ids-")  # noqa: SIM115 (closed by close())
        self._index_file = tempfile.TemporaryFile(prefix="batchwork-indexes-")  # noqa: SIM115 (likewise)
        self._sealed = 0

    @property
    def count(self) -> int:
        return self._sealed + len(self._lines)

    def add(self, custom_id: str, index: int) -> int | None:
        """Record `custom_id` (of request `index`); the index of an earlier request with the same id, if any."""
        h = self.hash(custom_id)
        slot, bits = (h & (self.SLOTS - 1)) >> 3, _BIT_PAIRS[(h >> self.SECOND) % 28]
        if self._marks[slot] & bits == bits and (earlier := self._earlier(custom_id, h)) is not None:
            return earlier
        self._marks[slot] |= bits
        self._pending.add(h)
        self._hashes.append(h)
        self._lines.append(custom_id)
        self._indexes.append(index)
        if len(self._lines) >= self.RUN:
            self._seal()
        return None

    def add_new(self, custom_ids: list[str], first_index: int) -> bool:
        """Record `custom_ids` (of requests `first_index`, `first_index + 1`, …) when none of them was seen
        before and no two are equal: True. Otherwise False, and the caller adds them one by one with `add`,
        which names each duplicate (bits marked here on the way stay marked: the table is only a filter)."""
        hashes = list(map(self.hash, custom_ids))
        pending = self._pending
        if len(set(hashes)) != len(hashes) or not pending.isdisjoint(hashes):
            return False  # a duplicate within the ids, or a hash that a pending id has: `add` sorts it out
        marks, mask, shift, pairs = self._marks, self.SLOTS - 1, self.SECOND, _BIT_PAIRS
        for h, custom_id in zip(hashes, custom_ids, strict=True):
            slot, bits = (h & mask) >> 3, pairs[(h >> shift) % 28]
            marked = marks[slot]
            if marked & bits == bits:
                if self._earlier(custom_id, h) is not None:
                    return False
            else:
                marks[slot] = marked | bits
        pending.update(hashes)
        self._hashes += hashes
        self._lines += custom_ids
        self._indexes.extend(range(first_index, first_index + len(custom_ids)))
        if len(self._lines) >= self.RUN:
            self._seal()
        return True

    def _seal(self) -> None:
        hashes = pa.array(self._hashes, pa.int64())
        order = pc.sort_indices(hashes)  # stable: equal hashes stay in ordinal order
        sorted_hashes, ordinals = array("q"), array("i")
        count = len(self._hashes)
        sorted_hashes.frombytes(memoryview(hashes.take(order).buffers()[1])[:count * 8])
        ordinals.frombytes(memoryview(pc.add(order, self._sealed).cast(pa.int32()).buffers()[1])[:count * 4])
        self._runs.append((sorted_hashes, ordinals))
        self._file.write(" ".join([*self._lines, ""]).encode())
        self._index_file.write(self._indexes.tobytes())
        self._sealed += len(self._lines)
        self._pending, self._hashes, self._lines, self._indexes = set(), [], [], array("q")

    def _earlier(self, custom_id: str, h: int) -> int | None:
        ordinals = [self._sealed + at for at, k in enumerate(self._hashes) if k == h] if h in self._pending else []
        for hashes, run in self._runs:
            at = bisect.bisect_left(hashes, h)
            while at < len(hashes) and hashes[at] == h:
                ordinals.append(run[at])
                at += 1
        found = [index for ordinal in sorted(ordinals) if (index := self._index_if(ordinal, custom_id)) is not None]
        return found[0] if found else None

    def _index_if(self, ordinal: int, custom_id: str) -> int | None:
        """The request index of id number `ordinal` if that id is `custom_id`."""
        if ordinal >= self._sealed:
            pending_index, pending_id = self._indexes[ordinal - self._sealed], self._lines[ordinal - self._sealed]
            return pending_index if pending_id == custom_id else None
        self._file.seek(0)
        self._index_file.seek(ordinal * 8)
        try:
            if self._file.read().decode().split(" ")[ordinal] != custom_id:
                return None
            found = array("q")
            found.frombytes(self._index_file.read(8))
            return found[0]
        finally:
            self._file.seek(0, 2)
            self._index_file.seek(0, 2)

    def duplicates(self, limit: int) -> list[tuple[int, str, int]]:
        """Nothing left to report: `add` names each duplicate as it comes (unlike `HashedIds.duplicates`)."""
        return []

    def close(self) -> None:
        self._file.close()
        self._index_file.close()


class HashedIds:
    """The custom_ids of `iter_request_chunks`, checked for duplicates all at once when asked (`duplicates`)
    instead of one by one as `SeenIds` does: 8 bytes of memory per id (a 64-bit hash), the ids and their
    request indexes in temporary files, and no per-id Python work but the hash. Distinct hashes prove distinct
    ids, so the usual check is one sort of the hashes (a part of the hash range at a time, so the sort's copies
    stay small); equal hashes (a duplicate, or a collision) are settled with the ids read back, so a collision
    is never reported as a duplicate. The duplicates are those `SeenIds.add` reports: every recorded request
    whose id an earlier recorded one has, naming the first."""

    PARTS = 8  # the hash range is sorted in this many parts
    hash = staticmethod(hash)  # Python's keyed string hash (random per process: no input can be made to collide)

    def __init__(self) -> None:
        self._hashes = array("q")
        # The ids, each followed by a space (no id has one), and their request indexes (8 B each).
        self._file = tempfile.TemporaryFile(prefix="batchwork-ids-")  # noqa: SIM115 (closed by close())
        self._index_file = tempfile.TemporaryFile(prefix="batchwork-indexes-")  # noqa: SIM115 (likewise)
        self._checked: tuple[int, int, list[tuple[int, str, int]]] | None = None  # count, limit, found

    @property
    def count(self) -> int:
        return len(self._hashes)

    def add(self, custom_id: str, index: int) -> None:
        """Record `custom_id` (of request `index`); a duplicate is found later, by `duplicates`."""
        self.add_new([custom_id], index)

    def add_new(self, custom_ids: list[str], first_index: int) -> bool:
        """Record `custom_ids` (of requests `first_index`, `first_index + 1`, …); always True (`SeenIds.add_new`
        tells at once)."""
        self._hashes.extend(map(self.hash, custom_ids))
        self._file.write(" ".join([*custom_ids, ""]).encode())
        self._index_file.write(array("q", range(first_index, first_index + len(custom_ids))).tobytes())
        return True

    def duplicates(self, limit: int) -> list[tuple[int, str, int]]:
        """The first `limit` duplicates recorded so far, by request index: (index, custom_id, index of the first
        request with that id)."""
        count = len(self._hashes)
        if self._checked is not None and self._checked[:2] == (count, limit):
            return self._checked[2]
        repeated = self._repeated()
        found = self._settle(repeated, limit) if repeated else []
        self._checked = (count, limit, found)
        return found

    def _repeated(self) -> list[int]:
        """The hashes recorded more than once."""
        count = len(self._hashes)
        hashes = pa.Array.from_buffers(pa.int64(), count, [None, pa.py_buffer(self._hashes)])
        repeated: list[int] = []
        step = (1 << 64) // self.PARTS
        for part in range(self.PARTS):
            low, high = -(1 << 63) + part * step, -(1 << 63) + (part + 1) * step
            inside = hashes if self.PARTS == 1 else hashes.filter(
                pc.less(hashes, high) if part == 0 else pc.greater_equal(hashes, low) if part == self.PARTS - 1
                else pc.and_(pc.greater_equal(hashes, low), pc.less(hashes, high)))
            if len(inside) < 2:
                continue
            ordered = inside.sort()
            same = pc.equal(ordered.slice(1), ordered.slice(0, len(ordered) - 1))
            if pc.any(same).as_py():
                repeated += pc.unique(ordered.slice(1).filter(same)).to_pylist()
        del hashes  # releases the array's buffer, which may grow again
        return repeated

    def _settle(self, repeated: list[int], limit: int) -> list[tuple[int, str, int]]:
        """The duplicates among the ids whose hash is in `repeated`, read back in order."""
        hashes = pa.Array.from_buffers(pa.int64(), len(self._hashes), [None, pa.py_buffer(self._hashes)])
        ordinals = pc.indices_nonzero(pc.is_in(hashes, value_set=pa.array(repeated, pa.int64()))).to_pylist()
        del hashes
        first: dict[str, int] = {}  # custom_id -> ordinal of its first occurrence
        found: list[tuple[int, int, str]] = []  # ordinal, ordinal of the first, custom_id
        for ordinal, custom_id in zip(ordinals, self._ids_at(ordinals), strict=False):
            earlier = first.setdefault(custom_id, ordinal)
            if earlier != ordinal:
                found.append((ordinal, earlier, custom_id))
                if len(found) >= limit:
                    break
        return [(self._index_at(ordinal), custom_id, self._index_at(earlier)) for ordinal, earlier, custom_id in found]

    def _ids_at(self, ordinals: list[int]) -> Iterator[str]:
        """The ids of `ordinals` (ascending), read from the file a block at a time."""
        self._file.flush()
        self._file.seek(0)
        try:
            wanted, base, rest = iter(ordinals), 0, b""
            ordinal = next(wanted, None)
            while ordinal is not None:
                block = self._file.read(1 << 20)
                words = (rest + block).split(b" ")
                rest = words.pop()  # an id cut by the block's end (b"" at the end of the file)
                while ordinal is not None and ordinal < base + len(words):
                    yield words[ordinal - base].decode()
                    ordinal = next(wanted, None)
                base += len(words)
                if not block:
                    return
        finally:
            self._file.seek(0, 2)

    def _index_at(self, ordinal: int) -> int:
        self._index_file.flush()
        self._index_file.seek(ordinal * 8)
        found = array("q")
        found.frombytes(self._index_file.read(8))
        self._index_file.seek(0, 2)
        return found[0]

    def close(self) -> None:
        self._file.close()
        self._index_file.close()


class PlainTurn:
    """The one user turn of a `PlainRequest`'s prompt, with the reading side of `ChatMessage`."""

    __slots__ = ("content",)
    role = "user"

    def __init__(self, content: str) -> None:
        self.content = content

    @property
    def text(self) -> str:
        return self.content

    @property
    def parts(self) -> list[TextPart | ImagePart | FilePart | ToolCallPart | ToolResultPart]:
        return [TextPart(text=self.content)]


class PlainRequest:
    """A request validated by `plain_request` (no pydantic model): the fields of `BatchRequest` as plain
    attributes, an unset one None, and the methods the adapters read. It carries no messages, tools,
    tool_choice or output_schema (requests with those are validated as `BatchRequest` models)."""

    custom_id: str
    prompt: str | None = None
    messages: list[ChatMessage] | None = None
    system: str | None = None
    value: str | None = None
    max_output_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    stop_sequences: list[str] | None = None
    seed: int | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    dimensions: int | None = None
    output_schema: dict[str, Any] | None = None
    tools: list[ToolSpec] | None = None
    tool_choice: ToolChoice | None = None
    provider_options: dict[str, Any] | None = None
    cache_prefix: bool | Literal["5m", "1h"] | None = None

    @classmethod
    def of(cls, fields: dict[str, Any]) -> PlainRequest:
        """A request over `fields` (a dict `plain_request` accepted; it becomes the object's own)."""
        request = object.__new__(cls)
        request.__dict__ = fields
        return request

    def model_copy(self, *, update: Mapping[str, Any]) -> PlainRequest:
        return PlainRequest.of({**self.__dict__, **update})

    def to_model(self) -> BatchRequest:
        """The same request as a `BatchRequest` model."""
        return BatchRequest.model_validate({k: v for k, v in self.__dict__.items() if v is not None})

    def media_parts(self) -> list[tuple[str, ImagePart | FilePart]]:
        return []

    def has_tool_parts(self) -> bool:
        return False

    def conversation(self) -> list[PlainTurn]:
        return [PlainTurn(self.prompt or "")]

    def system_text(self) -> str | None:
        return self.system or None

    def _choice_label(self) -> str:
        return "None"


# How `plain_request` checks each field it takes (any other field: the request goes to the model path).
_STR, _POSITIVE_INT, _INT, _UNIT, _STRINGS, _CACHE, _OPTIONS = range(7)
_PLAIN_FIELDS: dict[str, int] = {
    "custom_id": _STR, "prompt": _STR, "system": _STR, "value": _STR,
    "max_output_tokens": _POSITIVE_INT, "top_k": _POSITIVE_INT, "dimensions": _POSITIVE_INT, "seed": _INT,
    "temperature": _UNIT, "top_p": _UNIT, "presence_penalty": _UNIT, "frequency_penalty": _UNIT,
    "stop_sequences": _STRINGS, "cache_prefix": _CACHE, "provider_options": _OPTIONS,
}
_RANGES: dict[str, tuple[float, float]] = {"temperature": (0, 2), "top_p": (0, 1), "presence_penalty": (-2, 2),
                                           "frequency_penalty": (-2, 2)}


def plain_request(item: Mapping[str, Any], base: Mapping[str, Any], index: int, kind: str) -> PlainRequest | None:
    """Request `index` (`item` over the job's `base` defaults, None values left out) as a `PlainRequest` when
    every field is one `BatchRequest.model_validate` takes as is (exact str/int/float/list/dict values in
    range, one input, a valid custom_id, the input the model kind needs); None otherwise, and the caller
    validates it as a model, which reports any problem (so every error is the model path's). The values are
    those the model would hold: an int given for a float field becomes a float, lists and dicts are copied."""
    merged = {**base, **{k: v for k, v in item.items() if v is not None}} if base else item
    data: dict[str, Any] = {}
    for name, value in merged.items():
        if value is None:
            continue
        check = _PLAIN_FIELDS.get(name)
        kind_of = type(value)
        if check is None:
            return None
        if check == _STR:
            if kind_of is not str:
                return None
        elif check == _POSITIVE_INT:
            if kind_of is not int or value <= 0:
                return None
        elif check == _UNIT:
            if kind_of is int:
                value = float(value)
            elif kind_of is not float:
                return None
            low, high = _RANGES[name]
            if not low <= value <= high:
                return None
        elif check == _INT:
            if kind_of is not int:
                return None
        elif check == _STRINGS:
            if kind_of is not list or any(type(s) is not str for s in value):
                return None
            value = list(value)
        elif check == _CACHE:
            if not (value is True or value is False or (kind_of is str and value in ("5m", "1h"))):
                return None
        elif kind_of is not dict or any(type(k) is not str for k in value) \
                or _non_json(value, name) is not None:
            return None
        else:
            value = dict(value)
        data[name] = value
    if "prompt" in data and "value" in data:
        return None
    custom_id = data.get("custom_id")
    if custom_id is None:
        custom_id = data["custom_id"] = f"request-{index}"
    if not CUSTOM_ID_PATTERN.match(custom_id):
        return None
    if ("value" if kind == "embedding" else "prompt") not in data:
        return None
    return PlainRequest.of(data)


_Positive = Annotated[int, msgspec.Meta(gt=0)]
_Penalty = Annotated[float, msgspec.Meta(ge=-2, le=2)]


class PlainSpec(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, gc=False):
    """The plain request fields as a compiled (msgspec) spec: `plain_chunk` validates a whole chunk of request
    dicts against it in one native call, and its instances are the requests the adapters read (the reading
    side of `BatchRequest`, as `PlainRequest`). Exact types as `plain_request` takes them: a bool is not a
    number, a numeric string is refused, an int given for a float field becomes a float; ranges as the
    model's (the custom_id pattern is checked by `plain_chunk`). `PlainText` carries a prompt,
    `PlainEmbedding` a value; messages, tools, tool_choice and output_schema (and any other key) are unknown
    fields, so such a chunk takes the per-request path."""

    custom_id: str | None = None  # checked by `plain_chunk`, all ids of a chunk at once
    system: str | None = None
    max_output_tokens: _Positive | None = None
    temperature: Annotated[float, msgspec.Meta(ge=0, le=2)] | None = None
    top_p: Annotated[float, msgspec.Meta(ge=0, le=1)] | None = None
    top_k: _Positive | None = None
    stop_sequences: list[str] | None = None
    seed: int | None = None
    presence_penalty: _Penalty | None = None
    frequency_penalty: _Penalty | None = None
    dimensions: _Positive | None = None
    provider_options: dict[str, Any] | None = None
    cache_prefix: bool | Literal["5m", "1h"] | None = None
    messages: ClassVar[None] = None
    output_schema: ClassVar[None] = None
    tools: ClassVar[None] = None
    tool_choice: ClassVar[None] = None

    def model_copy(self, *, update: Mapping[str, Any]) -> PlainSpec:
        return msgspec.structs.replace(self, **update)

    def to_model(self) -> BatchRequest:
        """The same request as a `BatchRequest` model."""
        return BatchRequest.model_validate({k: v for k in REQUEST_FIELDS if (v := getattr(self, k)) is not None})

    def media_parts(self) -> list[tuple[str, ImagePart | FilePart]]:
        return []

    def has_tool_parts(self) -> bool:
        return False

    def conversation(self) -> list[PlainTurn]:
        return [PlainTurn(getattr(self, "prompt", None) or "")]

    def system_text(self) -> str | None:
        return self.system or None

    def _choice_label(self) -> str:
        return "None"


class PlainText(PlainSpec, kw_only=True, forbid_unknown_fields=True, gc=False):
    prompt: str
    value: ClassVar[None] = None


class PlainEmbedding(PlainSpec, kw_only=True, forbid_unknown_fields=True, gc=False):
    value: str
    prompt: ClassVar[None] = None


_CHUNK_TYPES = {"embedding": list[PlainEmbedding]}
_CUSTOM_IDS = re.compile(r"(?:[A-Za-z0-9_-]{1,64}\n)*")
_CUSTOM_ID, _PROVIDER_OPTIONS = attrgetter("custom_id"), attrgetter("provider_options")
_TEXT_CHUNK = list[PlainText]


def plain_chunk(items: list[Any], base: Mapping[str, Any], first_index: int, kind: str
                ) -> tuple[list[PlainSpec], list[str]] | None:
    """Requests `first_index`, `first_index + 1`, … (`items` over the job's `base` defaults, None values left
    out) validated in one call, as `PlainText`/`PlainEmbedding` requests, when every one of them is plain and
    valid (a custom_id left out becomes `request-{index}`), with their custom_ids; None when any is not, and
    the caller then takes every item of the chunk through `_validated` (so every error is today's, written by
    the model path).
    msgspec also takes a tuple for a list and str/int subclasses, which the model path turns into the same
    values."""
    if base:
        items = [{**base, **{k: v for k, v in item.items() if v is not None}} if type(item) is dict else None
                 for item in items]
    try:
        requests: list[PlainSpec] = msgspec.convert(items, _CHUNK_TYPES.get(kind, _TEXT_CHUNK), strict=True)
    except msgspec.ValidationError:
        return None
    ids: list[str] = list(map(_CUSTOM_ID, requests))
    if None in ids:
        for position, request in enumerate(requests):
            if request.custom_id is None:
                ids[position] = request.custom_id = f"request-{first_index + position}"
    if any(map(_PROVIDER_OPTIONS, requests)) \
            and any(_non_json(r.provider_options, "") for r in requests if r.provider_options):
        return None
    # Every id matches CUSTOM_ID_PATTERN: one match over the ids joined by newlines, and as many newlines as
    # ids (an id with a newline of its own takes the per-request path, which refuses it).
    joined = "\n".join(ids) + "\n"
    if _CUSTOM_IDS.fullmatch(joined) is None or joined.count("\n") != len(requests):
        return None
    return requests, ids


def _duplicate(field: str, index: int, custom_id: str, earlier: int) -> tuple[str, str, str]:
    return (f"{field}[{index}].custom_id", f"duplicate custom_id {custom_id!r} (also at {field}[{earlier}])",
            "make every custom_id unique")


def iter_requests(
    raw: Iterable[Mapping[str, Any]],
    *,
    ref: ModelRef,
    defaults: Mapping[str, Any] | None = None,
    field: str = "requests",
    plain: bool = False,
) -> Iterator[tuple[int, BatchRequest]]:
    """Validate raw request dicts one by one, apply `defaults`, assign `custom_id`s (`request-{index}`).

    Streaming: valid requests are yielded as they come; problems are gathered (up to five) and raised
    together when the input ends, so a caller must not act on what it got before then.

    With `plain`, a request `plain_request` takes is yielded as a `PlainRequest` (no model is built; the
    adapters read both alike), any other as a `BatchRequest`."""
    check_request_list(raw, field)
    base = {k: v for k, v in validate_defaults(defaults).items() if v is not None}
    kind = ref.kind
    problems: list[tuple[str, str, str]] = []
    seen = SeenIds()
    try:
        yield from _validated(raw, field, base, kind, problems, seen, plain)
    finally:
        seen.close()
    count = seen.count
    if problems:
        raise _combined(problems)
    if not count:
        raise RequestValidationError(field, "the request list is empty", "give at least one request")


CHUNK = 256


def iter_request_chunks(
    chunks: Iterable[list[Any]],
    *,
    ref: ModelRef,
    defaults: Mapping[str, Any] | None = None,
    field: str = "requests",
    seen: HashedIds | SeenIds | None = None,
) -> Iterator[tuple[int, list[Any], bool]]:
    """`iter_requests(plain=True)` over the raw requests cut in chunks (lists, e.g. of `CHUNK`; the caller
    checks the request list itself with `check_request_list`), yielding (index of the first, the requests,
    plain). A chunk of plain request dicts is validated in one call (`plain_chunk`): it comes whole, as
    `PlainSpec` requests of consecutive indexes (plain True). Any other chunk, or one where any item is not
    plain or invalid, goes through today's per-request path (`plain_request`, else the model), which writes
    every error: its requests come one at a time as `iter_requests` yields them, each in a list of one (plain
    False). Problems are raised as by `iter_requests`, when the input ends.

    Duplicate custom_ids are found at the end (`seen`, a `HashedIds` unless given; the caller may ask it
    `duplicates` on the way): requests after a duplicate are still yielded (not after any other problem),
    and the error names the same problems, the first five by index, as `iter_requests` does. A caller that
    acts on a request must ask `seen` whether a duplicate came before it first (`prepare_job` does)."""
    base = {k: v for k, v in validate_defaults(defaults).items() if v is not None}
    kind = ref.kind
    problems: list[tuple[str, str, str]] = []
    at: list[int] = []  # the request index of each problem
    seen = HashedIds() if seen is None else seen
    start = 0
    try:
        for items in chunks:
            if len(problems) >= MAX_REPORTED_PROBLEMS:
                break
            plain = plain_chunk(items, base, start, kind)
            if plain is not None and seen.add_new(plain[1], start):
                if not problems:
                    yield start, plain[0], True
            else:
                for index, request in _validated(items, field, base, kind, problems, seen, True, start, at):
                    yield index, [request], False
            start += len(items)
        duplicates = seen.duplicates(MAX_REPORTED_PROBLEMS)
        count = seen.count
    finally:
        seen.close()
    if duplicates:
        found = sorted([*zip(at, problems, strict=True),
                        *[(index, _duplicate(field, index, custom_id, earlier))
                          for index, custom_id, earlier in duplicates]], key=lambda pair: pair[0])
        problems = [problem for _, problem in found[:MAX_REPORTED_PROBLEMS]]
    if problems:
        raise _combined(problems)
    if not count:
        raise RequestValidationError(field, "the request list is empty", "give at least one request")


def _validated(raw: Iterable[Mapping[str, Any]], field: str, base: Mapping[str, Any], kind: str,
               problems: list[tuple[str, str, str]], seen: SeenIds | HashedIds, plain: bool = False,
               start: int = 0, at: list[int] | None = None) -> Iterator[tuple[int, BatchRequest]]:
    """The valid requests of `raw` (indexes from `start`), problems gathered in `problems` (and their request
    indexes in `at`, when given); nothing is yielded after the first problem."""
    index = start
    for index, item in enumerate(raw, start):
        if at is not None and len(at) < len(problems):
            at.append(index - 1)  # each item adds one problem at most
        if len(problems) >= MAX_REPORTED_PROBLEMS:
            break
        if plain and type(item) is dict and (fast := plain_request(item, base, index, kind)) is not None:
            earlier = seen.add(fast.custom_id, index)
            if earlier is not None:
                problems.append(_duplicate(field, index, fast.custom_id, earlier))
            elif not problems:
                yield index, fast  # type: ignore[misc]
            continue
        if isinstance(item, Mapping):
            data = {**base, **{k: v for k, v in item.items() if v is not None}}
        elif isinstance(item, BatchRequest):  # a model given by the caller: validated again, defaults applied
            data = {**base, **item.model_dump(exclude_none=True)}
        else:
            problems.append((f"{field}[{index}]", f"expected a dict, got {type(item).__name__}",
                             'write each request as a dict, e.g. {"custom_id": "a", "prompt": "…"}'))
            continue
        data.setdefault("custom_id", f"request-{index}")
        where = f"{field}[{index}]"
        non_json = next((p for k in JSON_FIELDS if isinstance(data.get(k), Mapping)
                         and (p := _non_json(data[k], f"{where}.{k}"))), None)
        if non_json:
            problems.append(non_json)
            continue
        try:
            request = BatchRequest.model_validate(data)
        except ValidationError as exc:
            first = _best_error(exc.errors())
            problems.append((_location(where, tuple(first["loc"])), _describe(first),
                             "correct or remove this field (see the request fields in the README)"))
            continue
        problem = _check_request(request, kind)
        if problem:
            problems.append((f"{where}.{problem[0]}", problem[1], problem[2]))
            continue
        earlier = seen.add(request.custom_id, index)
        if earlier is not None:
            problems.append(_duplicate(field, index, request.custom_id, earlier))
            continue
        if not problems:
            yield index, request
    if at is not None and len(at) < len(problems):
        at.append(index)


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
