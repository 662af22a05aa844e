"""Vectorized parsing of OpenAI-format chat result lines with pyarrow's JSON reader (C++).

A chunk of JSONL is parsed into Arrow in one call and turned into result columns with Arrow compute,
so collecting a million results never builds a million Python dicts. Anything the fast path cannot
read exactly (a malformed line, an unexpected type) returns None and the caller falls back to the
per-line parser for that chunk.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextvars import ContextVar
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pj

from airflow_batchwork.values.result_schema import ITEM_SCHEMA, without_cache_counts

CHUNK_BYTES = 2 * 1024 * 1024
READ_AHEAD_CHUNKS = 2  # chunks whose JSON read runs ahead of the parse (`parse_chunks`)
_ERROR = pa.struct([("code", pa.string()), ("message", pa.string())])
_CACHE_DETAILS = pa.struct([("cached_tokens", pa.int64()), ("cache_write_tokens", pa.int64())])
CHAT_LINE_SCHEMA = pa.schema([
    ("custom_id", pa.string()),
    ("response", pa.struct([
        ("status_code", pa.int64()),
        ("body", pa.struct([
            ("choices", pa.list_(pa.struct([
                # `tool_calls` as a list of nulls: an empty list or null reads, a list of calls (objects)
                # fails the read, so the chunk goes to the line parser (which reads the calls) with no
                # scan of its bytes; a non-empty list of anything else is refused in `parse_chat_chunk`.
                ("message", pa.struct([("content", pa.string()), ("tool_calls", pa.list_(pa.null()))])),
                ("finish_reason", pa.string()),
            ]))),
            ("usage", pa.struct([
                ("prompt_tokens", pa.int64()), ("completion_tokens", pa.int64()), ("total_tokens", pa.int64()),
                # The prompt-cache counts, where `line_cache_counts` reads them (SDK `CompletionUsage`).
                ("prompt_tokens_details", _CACHE_DETAILS), ("input_tokens_details", _CACHE_DETAILS),
            ])),
            ("error", _ERROR),
        ])),
    ])),
    ("error", _ERROR),
])



def const(value: str | None, n: int) -> pa.Array:
    return pa.repeat(pa.scalar(value, pa.string()), n)


def field(array: pa.Array, *path: str) -> pa.Array:
    for name in path:
        array = pc.struct_field(array, name)
    return array


def only_where(ok: pa.Array, values: pa.Array) -> pa.Array:
    """`values` where `ok` is true, null elsewhere: `values` itself (no copy) when it is already null
    wherever `ok` is not true, as it mostly is (an error line has no text)."""
    if not pc.any(pc.and_kleene(pc.invert(pc.fill_null(ok, False)), pc.is_valid(values))).as_py():
        return values
    return pc.if_else(ok, values, pa.nulls(len(values), values.type))


def first_element(lists: pa.ListArray) -> pa.Array:
    """The first element of each list, null for a null or empty list: one `take` of the list values (for a
    list of structs, `pc.list_element` appended row by row: 3x the time for OpenAI's choices)."""
    starts = lists.offsets.slice(0, len(lists))
    present = pc.fill_null(pc.greater(pc.list_value_length(lists), 0), False)
    return pc.take(lists.values, pc.if_else(present, starts, pa.nulls(len(lists), starts.type)))


def empty_batch() -> pa.RecordBatch:
    return pa.RecordBatch.from_arrays([pa.array([], f.type) for f in ITEM_SCHEMA], schema=ITEM_SCHEMA)


Read = tuple[pa.Array, pa.Table] | None
# The read of the chunk being parsed, when `parse_chunks` read it ahead: (chunk, schema, id_column, read).
_READ_AHEAD: ContextVar[tuple[bytes, pa.Schema, str, Read] | None] = ContextVar("read_ahead", default=None)


def read_lines(chunk: bytes, schema: pa.Schema, id_column: str = "custom_id") -> Read:
    """The non-empty raw lines of `chunk` and their parse under `schema` (unknown fields ignored),
    or None when any line cannot be read that way (already read when `parse_chunks` read it ahead)."""
    ahead = _READ_AHEAD.get()
    if ahead is not None and ahead[0] is chunk and ahead[1] is schema and ahead[2] == id_column:
        return ahead[3]
    return _read_lines(chunk, schema, id_column)


def _read_lines(chunk: bytes, schema: pa.Schema, id_column: str) -> Read:
    # The chunk's bytes are wrapped once, without a copy, for both the line split and the reader (a
    # BytesIO went through Python file reads and a copy: 100k OpenAI lines read in ~0.35 s instead of ~0.42).
    buffer = pa.py_buffer(chunk)
    whole = pa.Array.from_buffers(pa.large_binary(), 1, [None, pa.array([0, len(chunk)], pa.int64()).buffers()[1],
                                                         buffer])
    try:
        lines = pc.split_pattern(whole, "\n").flatten().cast(pa.string())
    except (pa.ArrowInvalid, UnicodeDecodeError):
        return None
    if chunk.endswith(b"\n"):
        lines = lines.slice(0, len(lines) - 1)  # the empty piece after the last newline (no copy)
    if len(lines) and pc.min(pc.binary_length(lines)).as_py() == 0:
        lines = lines.filter(pc.greater(pc.binary_length(lines), 0))  # blank lines inside (a copy)
    if len(lines) == 0:
        return lines, pa.table({})
    try:
        table = pj.read_json(
            pa.BufferReader(buffer),
            # One block: one chunk per column, so combine_chunks below copies nothing.
            read_options=pj.ReadOptions(block_size=max(len(chunk) + 1, 1 << 20), use_threads=False),
            parse_options=pj.ParseOptions(explicit_schema=schema, unexpected_field_behavior="ignore"),
        )
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return None
    ids = table.column(id_column)
    if table.num_rows != len(lines) or ids.null_count or \
            not pc.all(pc.match_substring_regex(ids, r"^[A-Za-z0-9_-]{1,64}$")).as_py():
        return None
    return lines, table.combine_chunks()


def map_values(raw: pa.Array, mapping: dict[str, str], other: str = "other") -> pa.Array:
    """Lower-cased `raw` through `mapping`; unknown non-null values become `other`."""
    lowered = pc.utf8_lower(raw)
    mapped = pc.take(pa.array(list(mapping.values()), pa.string()), pc.index_in(lowered, pa.array(list(mapping))))
    return pc.if_else(pc.and_kleene(pc.is_null(mapped), pc.is_valid(lowered)), other, mapped)


def parse_chat_chunk(
    chunk: bytes,
    batch_id: str,
    finish_reasons: dict[str, str],
    expired_codes: frozenset[str],
    canceled_codes: frozenset[str],
) -> pa.RecordBatch | None:
    """Result columns for every line of `chunk` (complete lines only), or None to fall back."""
    parsed = read_lines(chunk, CHAT_LINE_SCHEMA)
    if parsed is None:
        return None
    lines, table = parsed
    n = len(lines)
    if n == 0:
        return empty_batch()
    custom_id = table.column("custom_id").combine_chunks()
    response = table.column("response").combine_chunks()
    error = table.column("error").combine_chunks()
    status_code = field(response, "status_code")
    body = field(response, "body")
    code = pc.coalesce(field(error, "code"), field(body, "error", "code"))
    message = pc.coalesce(field(error, "message"), field(body, "error", "message"))
    ok = pc.and_kleene(
        pc.and_kleene(pc.is_valid(status_code), pc.less(pc.fill_null(status_code, 0), 400)),
        pc.and_kleene(pc.is_null(code), pc.is_null(message)),
    )
    ok = pc.fill_null(ok, False)
    status = pc.if_else(
        ok, "succeeded",
        pc.if_else(pc.fill_null(pc.is_in(code, pa.array(sorted(expired_codes))), False), "expired",
                   pc.if_else(pc.fill_null(pc.is_in(code, pa.array(sorted(canceled_codes))), False),
                              "canceled", "errored")))
    choices = field(body, "choices")
    calls = pc.list_value_length(field(pc.list_flatten(choices), "message", "tool_calls"))
    if len(calls) and pc.max(calls).as_py():
        return None  # tool calls are read line by line
    first = first_element(choices)
    content = field(first, "message", "content")
    mapped = map_values(field(first, "finish_reason"), finish_reasons)
    errored = pc.equal(status, "errored")
    usage = field(body, "usage")
    prompt = field(usage, "prompt_tokens")
    completion = field(usage, "completion_tokens")
    total = pc.coalesce(field(usage, "total_tokens"), pc.add(prompt, pc.fill_null(completion, 0)))
    not_ok = pc.invert(ok)
    columns = {
        "custom_id": custom_id,
        "batch_id": const(batch_id, n),
        "status": status,
        "text": only_where(ok, content),
        "finish_reason": pc.if_else(errored, const("error", n),
                                    pc.if_else(ok, mapped, pa.nulls(n, pa.string()))),
        "input_tokens": pc.if_else(ok, prompt, pa.nulls(n, pa.int64())),
        "output_tokens": pc.if_else(ok, completion, pa.nulls(n, pa.int64())),
        "total_tokens": pc.if_else(ok, total, pa.nulls(n, pa.int64())),
        "error_code": pc.if_else(not_ok, pc.coalesce(code, pc.cast(status_code, pa.string()), const("error", n)),
                                 pa.nulls(n, pa.string())),
        "error_message": pc.if_else(not_ok, pc.coalesce(message, const("the provider returned no error message", n)),
                                    pa.nulls(n, pa.string())),
        "response": lines.cast(pa.string()),
        "embedding": pa.nulls(n, ITEM_SCHEMA.field("embedding").type),
        "tool_calls": pa.nulls(n, pa.string()),
    }
    batch = pa.RecordBatch.from_arrays([columns[f.name] for f in ITEM_SCHEMA], schema=ITEM_SCHEMA)
    counts = [field(usage, details, name) for details in ("prompt_tokens_details", "input_tokens_details")
              for name in ("cached_tokens", "cache_write_tokens")]
    return without_cache_counts(batch) if all_zero(counts) else batch


def all_zero(columns: list[pa.Array]) -> bool:
    """True when every value of `columns` is null or 0."""
    return not any(pc.max(pc.abs(column)).as_py() for column in columns)


class _Thread:
    """`fn(*args)` on a thread of its own, started at once; `result()` joins it and returns (or raises) what it
    did. The thread lives only for that one call: it ends by itself whether or not anyone joins it."""

    def __init__(self, fn: Callable[..., Any], *args: Any) -> None:
        self._value: Any = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(fn, *args), name="batchwork-read-ahead")
        self._thread.start()

    def _run(self, fn: Callable[..., Any], *args: Any) -> None:
        try:
            self._value = fn(*args)
        except BaseException as exc:  # raised on the caller's thread by `result`
            self._error = exc

    def join(self) -> None:
        self._thread.join()

    def result(self) -> Any:
        self.join()
        if self._error is not None:
            raise self._error
        return self._value


async def parse_chunks(chunks: AsyncIterator[bytes], parse: Callable[[bytes], pa.RecordBatch],
                       schema: pa.Schema | None = None, id_column: str = "custom_id"
                       ) -> AsyncIterator[pa.RecordBatch]:
    """`parse` each chunk, in order; with `schema`, the JSON reads of the next `READ_AHEAD_CHUNKS` chunks
    (`read_lines`: pyarrow's reader, one call that releases the GIL for its whole run, ~40 % of the collect's
    CPU) run on threads of their own while chunk k is parsed and written, and `parse` finds its read done when
    it calls `read_lines`.

    Only the read goes ahead, never the rest of the parse: that is many short Arrow calls, each taking the GIL
    back, so beside the caller it queued for the GIL at every call (a worker doing the whole parse made 100k
    OpenAI lines slower on a busy 2-core machine, 1.70-2.06 s against 1.22-1.48 s). Each reading thread lives
    only for its one read: the oldest is joined before the next starts, and all of them on every way out (an
    error, cancellation, the generator closed). Two 2 MB chunks ahead, not one 3 MB chunk: beside a `yes`,
    1M lines took ~13-14 % less time (the medians of two runs), at 216-226 MB peak RSS (two 3 MB chunks ahead
    peaked at 255 MB once for Gemini; docs/performance.md, session 12)."""
    if schema is None:
        async for chunk in chunks:
            yield parse(chunk)
        return
    ahead: deque[tuple[bytes, _Thread]] = deque()  # the reads under way, oldest first
    try:
        async for chunk in chunks:
            done = None
            if len(ahead) == READ_AHEAD_CHUNKS:
                oldest, reading = ahead.popleft()
                done = (oldest, reading.result())  # joined before the next starts
            ahead.append((chunk, _Thread(_read_lines, chunk, schema, id_column)))
            if done is not None:
                yield _parse_read(parse, *done, schema, id_column)
        while ahead:
            oldest, reading = ahead.popleft()
            done = (oldest, reading.result())
            yield _parse_read(parse, *done, schema, id_column)
    finally:
        for _, reading in ahead:
            reading.join()  # reads still going when the caller stops or fails


def _parse_read(parse: Callable[[bytes], pa.RecordBatch], chunk: bytes, read: Read, schema: pa.Schema,
                id_column: str) -> pa.RecordBatch:
    token = _READ_AHEAD.set((chunk, schema, id_column, read))
    try:
        return parse(chunk)
    finally:
        _READ_AHEAD.reset(token)


async def complete_chunks(pieces: AsyncIterator[bytes], size: int = CHUNK_BYTES) -> AsyncIterator[bytes]:
    """Re-cut a byte stream into chunks of about `size` bytes that end on a line boundary.

    Pieces are kept as they come and joined once per chunk (one copy of each byte; growing a bytearray
    and slicing it out copied every byte three times)."""
    held: list[bytes] = []
    held_bytes = 0
    async for piece in pieces:
        held.append(piece)
        held_bytes += len(piece)
        if held_bytes >= size:
            cut = piece.rfind(b"\n") + 1
            if cut:
                tail = piece[cut:]
                held[-1] = piece[:cut] if tail else piece
                yield b"".join(held)
                held, held_bytes = ([tail], len(tail)) if tail else ([], 0)
    if held_bytes:
        yield b"".join(held)
