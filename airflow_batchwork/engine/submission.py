"""Preparing a job for submission: validate, encode and shard in one streaming pass.

Encoded items go to temporary files on local disk, one per shard, so a million-request job never
sits in memory; the same pass computes the input fingerprint (for idempotent retries) and records
the custom_ids (so the collector can tell which submitted requests got no result). Nothing here
makes an API call.
"""

from __future__ import annotations

import hashlib
import itertools
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, fields
from operator import attrgetter
from pathlib import Path
from types import TracebackType
from typing import Any, BinaryIO

import pyarrow as pa
import pyarrow.parquet as pq

from airflow_batchwork.adapters import adapter_class
from airflow_batchwork.adapters.base import ProviderLimits
from airflow_batchwork.engine.dedup import KEY_PLACEHOLDER, ReusePlanner, request_key
from airflow_batchwork.engine.parquet import RESULT_SCHEMA
from airflow_batchwork.engine.sources import PASSTHROUGH_KEY
from airflow_batchwork.values.errors import ConfigurationError, RequestValidationError
from airflow_batchwork.values.parts import inline_parts
from airflow_batchwork.values.recorder import CHARS_PER_TOKEN, ITEM_COLUMN, RequestRecorder, estimated_input_tokens
from airflow_batchwork.values.refs import ModelRef, parse_model
from airflow_batchwork.values.requests import (
    CHUNK,
    MAX_REPORTED_PROBLEMS,
    BatchRequest,
    HashedIds,
    PlainSpec,
    check_request_list,
    iter_request_chunks,
)

_CUSTOM_ID = attrgetter("custom_id")
IDS_SCHEMA = pa.schema([("custom_id", pa.string()), ("shard", pa.int32())])
_IDS_FLUSH = 50_000
WRITE_BYTES = 64 * 1024


@dataclass
class Shard:
    """The encoded items of one provider batch, on disk; iterating yields each item's JSON bytes."""

    path: Path
    count: int = 0
    nbytes: int = 0

    def __iter__(self) -> Iterator[bytes]:
        with self.path.open("rb") as handle:
            for line in handle:
                yield line.rstrip(b"\n")

    def __len__(self) -> int:
        return self.count


class ShardFiles:
    """Encoded items written to shard files under `root`: a new shard starts when the next item would take
    the current one over `max_requests` or `max_bytes` (an item counts its newline), or when asked to."""

    def __init__(self, root: Path, *, max_requests: int, max_bytes: int) -> None:
        self.root, self.max_requests, self.max_bytes = root, max_requests, max_bytes
        self.shards: list[Shard] = []
        self._out: BinaryIO | None = None

    def add(self, item: bytes, *, new_shard: bool = False) -> int:
        """Write `item` (without its newline); the index of the shard that holds it."""
        size = len(item) + 1
        current = self.shards[-1] if self.shards else None
        if current is None or new_shard or current.count + 1 > self.max_requests \
                or current.nbytes + size > self.max_bytes:
            self.close()
            current = Shard(self.root / f"shard-{len(self.shards):05d}.jsonl")
            self.shards.append(current)
            self._out = current.path.open("wb")
        assert self._out is not None
        self._out.write(item)
        self._out.write(b"\n")
        current.count += 1
        current.nbytes += size
        return len(self.shards) - 1

    def add_many(self, items: list[bytes], *, new_shard: bool = False, data: bytes | None = None) -> list[int]:
        """`add` of each of `items`; the index of the shard of each. Items that fit in the current shard are
        written with one call (of `data` when given: the items each followed by a newline)."""
        current = self.shards[-1] if self.shards else None
        size = sum(map(len, items)) + len(items)
        if current is None or new_shard or current.count + len(items) > self.max_requests \
                or current.nbytes + size > self.max_bytes:
            return [self.add(item, new_shard=new_shard and i == 0) for i, item in enumerate(items)]
        assert self._out is not None
        view = memoryview(b"\n".join([*items, b""]) if data is None else data)
        # In pieces: one write of a whole chunk (~600 KB) measured 3-7x slower than the same bytes in 64 KB.
        for at in range(0, len(view), WRITE_BYTES):
            self._out.write(view[at:at + WRITE_BYTES])
        current.count += len(items)
        current.nbytes += size
        return [len(self.shards) - 1] * len(items)

    def close(self) -> None:
        if self._out is not None:
            self._out.close()
            self._out = None


@dataclass
class PreparedJob:
    """A validated, encoded and sharded job, ready to submit."""

    ref: ModelRef
    limits: ProviderLimits
    shards: list[Shard]
    fingerprint: str
    ids_path: Path
    request_count: int
    passthrough: list[str]
    _workdir: tempfile.TemporaryDirectory[str] = field(repr=False)
    recorder: RequestRecorder | None = field(default=None, repr=False)
    reuse: ReusePlanner | None = field(default=None, repr=False)
    priming: bool = False
    """Shard 0 is a one-request priming batch: it must end before the other shards are created."""
    prompt_cache: bool = False
    """Some request marks a prompt-cache prefix (`cache_prefix`): the collector adds the cache token columns."""

    def __enter__(self) -> PreparedJob:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        self._workdir.cleanup()


def prepare_job(
    model: str | ModelRef,
    requests: Iterable[Mapping[str, Any]],
    *,
    defaults: Mapping[str, Any] | None = None,
    limits: Mapping[str, int] | None = None,
    reuse: ReusePlanner | None = None,
    prime: bool = True,
    context_window: int | None = None,
) -> PreparedJob:
    """One pass over `requests`: validation (all problems up to five, before any API call), encoding,
    per-request size check, greedy sharding by the provider's count and byte limits. With
    `context_window`, a request whose estimated tokens (input + max_output_tokens) exceed it is refused. With
    `reuse` (engine/dedup.py), a request it decides not to send gets its ids row (shard -1) but no item. With
    `prime`, a first request whose marked cache prefix the provider would cache (`ProviderAdapter.primes`)
    goes alone in shard 0, the priming batch (`PreparedJob.priming`)."""
    ref = parse_model(model)
    check_request_list(requests)
    cls = adapter_class(ref.provider)
    effective = cls.limits.with_overrides(check_limits(limits))
    payload = cls.offline()
    workdir = tempfile.TemporaryDirectory(prefix="batchwork-submit-")
    root = Path(workdir.name)
    digest = hashlib.sha256(f"{ref}\n{effective}\n".encode())
    spool = ShardFiles(root, max_requests=effective.max_requests, max_bytes=effective.max_bytes)
    shards = spool.shards
    ids: list[str] = []
    id_shards: list[int] = []
    carried: dict[int, Mapping[str, Any]] = {}
    carried_rows: list[Mapping[str, Any]] = []
    passthrough: list[str] = []
    ids_path = root / "ids.parquet"
    ids_writer: pq.ParquetWriter | None = None
    recorder = RequestRecorder(ref)

    def raw_chunks(raw: Iterable[Mapping[str, Any]]) -> Iterator[list[Any]]:
        """The requests in chunks of `CHUNK`, passthrough columns taken out (into `carried`)."""
        source, position = iter(raw), 0
        while items := list(itertools.islice(source, CHUNK)):
            if not all([type(item) is dict and PASSTHROUGH_KEY not in item for item in items]):
                for offset, item in enumerate(items):
                    if isinstance(item, Mapping) and PASSTHROUGH_KEY in item:
                        carried[position + offset] = item[PASSTHROUGH_KEY]
                        items[offset] = {k: v for k, v in item.items() if k != PASSTHROUGH_KEY}
            position += len(items)
            yield items

    def flush() -> None:
        nonlocal ids_writer
        columns: dict[str, list[Any]] = {"custom_id": ids, "shard": id_shards}
        for name in passthrough:
            columns[name] = [row.get(name) for row in carried_rows]
        columns.update(recorder.flush())
        if reuse is not None:
            columns.update(reuse.flush())
        table = pa.table(columns)
        table = table.cast(pa.schema([*IDS_SCHEMA, *list(table.schema)[2:]]))
        if ids_writer is None:
            # Dictionary encoding only where values repeat (the encoded items never do).
            repeating = [name for name in table.schema.names if name not in (ITEM_COLUMN, "custom_id")]
            ids_writer = pq.ParquetWriter(ids_path, table.schema, use_dictionary=repeating)
        ids_writer.write_table(table.cast(ids_writer.schema))
        ids.clear()
        id_shards.clear()
        carried_rows.clear()

    count = 0
    current = 0  # the index of the request being handled
    marked = False
    primed: int | None = None  # 1: shard 0 is a priming batch of one request (a new shard starts at len == 1)
    # Bound once: these run once per request (or per chunk).
    check_content, check_request, encode = payload.check_content, payload.check_request, payload.encode
    encode_plain, plain_refusal = payload.plain_encoder(ref), payload.plain_refusal
    max_request_bytes = effective.max_request_bytes

    def one(index: int, request: BatchRequest) -> None:
        nonlocal count, marked, primed, passthrough
        if request.messages is not None:
            # Files on fsspec URLs are read and inlined here, so their bytes count in the limits below.
            request = inline_parts(request, max_bytes=max_request_bytes, where=f"requests[{index}]")
        refusal = check_content(ref, request) or check_request(ref, request)
        if refusal:
            field_name, problem, fix = refusal
            raise RequestValidationError(f"requests[{index}].{field_name}", problem, fix)
        if context_window:
            _check_context_window(ref, index, request, estimated_input_tokens(request), context_window)
        if request.cache_prefix:
            marked = True
        if request.cache_prefix and not (cls.prompt_cache_control or cls.prompt_cache_automatic):
            raise RequestValidationError(
                f"requests[{index}].cache_prefix", f"{ref.provider} has no prompt-cache control and reports no "
                "cached tokens", "leave cache_prefix unset for this provider (see docs/pay-once.md for who "
                "caches what)")
        try:
            item = encode(ref, request)
        except UnicodeEncodeError as exc:
            raise _not_unicode(index, request, exc) from None
        if len(item) > max_request_bytes:
            raise _too_large(ref, index, request, item, max_request_bytes)
        skipped = None
        if reuse is not None:
            key = request_key(ref, payload.encode(ref, request.model_copy(update={"custom_id": KEY_PLACEHOLDER})))
            skipped = reuse.decide(request.custom_id, key)
        if skipped is None:
            shard = spool.add(item, new_shard=primed == len(shards))
            digest.update(item)
            digest.update(b"\n")
            id_shards.append(shard)
            recorder.add(request, item)
            if prime and primed is None:
                # Only the first request sent can prime; the next one starts shard 1 if this one does.
                primed = 1 if payload.primes(ref, request) else -1
        else:
            # Not sent: its row still counts in the fingerprint (a change must resubmit), not in the estimate.
            digest.update(f"{skipped}:{request.custom_id}:{key}\n".encode())
            id_shards.append(-1)
            estimate = (recorder.estimated_input_tokens, recorder.estimated_output_tokens)
            recorder.add(request, item)
            recorder.estimated_input_tokens, recorder.estimated_output_tokens = estimate
        ids.append(request.custom_id)
        row = carried.pop(index, None)
        if row is not None:
            if not passthrough:
                passthrough = _check_passthrough(row)
            carried_rows.append(row)
            digest.update(repr(sorted(row.items())).encode())
        count += 1

    def plain_chunk(start: int, batch: list[PlainSpec]) -> None:
        """`one` of each request of a plain chunk (no messages, no cache_prefix, no reuse, no passthrough row,
        no context window), with one encoder call, one write and one call of each kind of bookkeeping."""
        nonlocal count, primed, current
        refused = plain_refusal(ref, batch)  # check_content has nothing to check without messages or tools
        if refused:
            offset, (field_name, problem, fix) = refused
            current = start + offset
            raise RequestValidationError(f"requests[{start + offset}].{field_name}", problem, fix)
        try:
            items = encode_plain(batch)
        except UnicodeEncodeError:
            for offset, request in enumerate(batch):  # which request it is, to name it
                try:
                    encode(ref, request)  # type: ignore[arg-type]  # a PlainSpec reads as a request
                except UnicodeEncodeError as exc:
                    current = start + offset
                    raise _not_unicode(start + offset, request, exc) from None
            raise
        if max(map(len, items)) > max_request_bytes:
            at = next(i for i, item in enumerate(items) if len(item) > max_request_bytes)
            current = start + at
            raise _too_large(ref, start + at, batch[at], items[at], max_request_bytes)
        lines = b"\n".join([*items, b""])  # written, and digested, as one
        id_shards.extend(spool.add_many(items, new_shard=primed == len(shards), data=lines))
        if primed is None:
            primed = -1  # without a cache_prefix, no provider primes (`ProviderAdapter.primes`)
        digest.update(lines)
        recorder.add_plain(batch, items)
        ids.extend(map(_CUSTOM_ID, batch))
        count += len(batch)

    seen = HashedIds()  # the custom_ids, checked for duplicates when the input ends (or on an error)
    try:
        chunks = iter_request_chunks(raw_chunks(requests), ref=ref, defaults=defaults, seen=seen)
        for start, batch, plain in chunks:
            current = start + len(batch) - 1  # the request being handled, for an error (`one` and `plain_chunk`)
            try:
                if plain and reuse is None and not context_window and not carried \
                        and not any([request.cache_prefix for request in batch]):
                    plain_chunk(start, batch)
                else:
                    for offset, request in enumerate(batch):
                        current = start + offset
                        one(current, request)
                if len(ids) >= _IDS_FLUSH or recorder.nbytes >= recorder.flush_bytes:
                    flush()
            except Exception:
                # Duplicates are found at the end: one at or before this request is the error to raise (no
                # request after it would have been handled), with every other problem, as the input ends.
                duplicates = seen.duplicates(MAX_REPORTED_PROBLEMS)  # by index
                if duplicates and duplicates[0][0] <= current:
                    break
                raise
        for _ in chunks:
            pass  # (after a duplicate: the rest is validated, and the error raised, when the input ends)
        if ids or ids_writer is None:
            flush()
    except BaseException:
        seen.close()
        spool.close()
        if ids_writer is not None:
            ids_writer.close()
        workdir.cleanup()
        raise
    spool.close()
    assert ids_writer is not None
    ids_writer.close()
    return PreparedJob(ref=ref, limits=effective, shards=shards, fingerprint=digest.hexdigest(), ids_path=ids_path,
                       request_count=count, passthrough=passthrough, _workdir=workdir, recorder=recorder, reuse=reuse,
                       priming=primed == 1 and len(shards) > 1, prompt_cache=marked)


def _not_unicode(index: int, request: BatchRequest | PlainSpec, exc: UnicodeEncodeError) -> RequestValidationError:
    """A text holding a lone UTF-16 surrogate (e.g. from a badly decoded file): not Unicode, so no JSON body
    can carry it as UTF-8; refused before anything is uploaded."""
    where = next((name for name in ("prompt", "system") if not _is_unicode(getattr(request, name, None))), None)
    bad = exc.object[exc.start:exc.end] if isinstance(exc.object, str) else "?"
    return RequestValidationError(
        f"requests[{index}]" + (f".{where}" if where else ""),
        f"holds a lone surrogate {bad!r} (custom_id {request.custom_id!r}), which is not Unicode text and cannot "
        "be sent as UTF-8 JSON",
        "clean the text before submitting, e.g. text.encode('utf-8', 'replace').decode()")


def _is_unicode(text: object) -> bool:
    """False for a str that UTF-8 cannot encode (a lone surrogate)."""
    if not isinstance(text, str):
        return True
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def _too_large(ref: ModelRef, index: int, request: BatchRequest | PlainSpec, item: bytes, limit: int
               ) -> RequestValidationError:
    return RequestValidationError(
        f"requests[{index}]",
        f"request {request.custom_id!r} is {len(item):,} bytes; {ref.provider} accepts at most {limit:,} bytes "
        "per request",
        "shorten the prompt or split it into several requests",
    )


def _check_context_window(ref: ModelRef, index: int, request: BatchRequest, input_tokens: int, window: int) -> None:
    tokens = input_tokens + (request.max_output_tokens or 0)
    if tokens > window:
        with_output = f" + {request.max_output_tokens:,} max_output_tokens" if request.max_output_tokens else ""
        raise RequestValidationError(
            f"requests[{index}]",
            f"request {request.custom_id!r} is about {input_tokens:,} tokens (estimated at {CHARS_PER_TOKEN} "
            f"characters per token){with_output}; {ref} accepts {window:,} tokens per request",
            "shorten or split the prompt, or use a model with a larger context window (if the table is wrong for "
            "your model, give its context_window with prices=)",
        )


def check_limits(limits: object) -> Mapping[str, int] | None:
    """`limits` as given (None, or a mapping of ProviderLimits fields to whole numbers >= 1)."""
    if limits is None:
        return None
    names = [f.name for f in fields(ProviderLimits)]
    if not isinstance(limits, Mapping):
        raise ConfigurationError("limits", f"a {type(limits).__name__} is not a mapping",
                                 f"pass a dict with any of {', '.join(names)}")
    for key, value in limits.items():
        if key not in names:
            raise ConfigurationError(f"limits.{str(key)[:40]}", "is not a limit",
                                     f"use any of {', '.join(names)}")
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigurationError(f"limits.{key}", f"{value!r:.60} is not a whole number >= 1",
                                     "give a positive whole number, e.g. 1000")
    return limits


def _check_passthrough(row: Mapping[str, Any]) -> list[str]:
    clashes = sorted(set(row) & {*RESULT_SCHEMA.names, "shard"})
    if clashes:
        raise ConfigurationError("passthrough_columns", f"{clashes[0]!r} is also a result column",
                                 "rename that source column or leave it out of passthrough_columns")
    return list(row)
