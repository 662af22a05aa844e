"""xAI (Grok) Batch API: a named batch filled by add-requests calls (or sealed from a JSONL file),
status derived from `state` counters, results as paginated JSON.

xAI has no batch status enum and no metadata map. A batch is complete when `num_pending` reaches 0,
cancelled once `cancel_time` is set, expired past `expire_time`. Tags given to `create` travel in the
batch `name` (`batchwork:<urlencoded tags>`), which is what `find_batch` matches on.
"""

from __future__ import annotations

import asyncio
import json
import re
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Collection, Iterable, Iterator, Mapping, Sequence, Sized
from typing import Any, ClassVar, Literal, cast
from urllib.parse import parse_qsl, urlencode

import httpx
import pyarrow as pa

from airflow_batchwork.adapters.base import (
    EndpointSpec,
    ProviderAdapter,
    ProviderLimits,
    Refusal,
    cache_token_columns,
    dumps,
    first_unsupported,
    int_or_none,
    merge_options,
    parse_time,
)
from airflow_batchwork.adapters.content import BOTH, ContentSupport
from airflow_batchwork.adapters.http import default_error_parser, is_ambiguous
from airflow_batchwork.adapters.openai_compat import (
    SPOOL_BYTES,
    USAGE_CACHE_HIT,
    body_cache_counts,
    chat_body,
    error_fields,
    fill_from_chat_completion,
    fill_from_response,
    json_schema_format,
    plain_chat_body,
    plain_items,
    responses_items,
    responses_tools,
)
from airflow_batchwork.values.calls import CallProgress
from airflow_batchwork.values.errors import ProviderAPIError
from airflow_batchwork.values.refs import ModelRef
from airflow_batchwork.values.requests import BatchRequest, PlainSpec
from airflow_batchwork.values.status import TERMINAL_STATES, BatchState, BatchStatus, Counts, ItemResult

InputMode = Literal["auto", "inline", "file"]

# Endpoint name (model string) -> the operation key of an inline entry and of a result.
OPS: dict[str, str] = {"chat": "chat_get_completion", "responses": "responses"}
NAME_PREFIX = "batchwork:"
MB = 1024 * 1024
# File-backed batches: at most 50,000 requests and 200 MB (xAI batch guide).
FILE_MAX_REQUESTS = 50_000
FILE_MAX_BYTES = 200 * MB

# `max_output_tokens` of a `/v1/responses` body is at least 16 (OpenAI's CreateResponse, which xAI follows).
RESPONSES_MIN_OUTPUT_TOKENS = 16



def batch_name(metadata: Mapping[str, str]) -> str:
    """The batch `name` carrying `metadata` (xAI stores no metadata map)."""
    return NAME_PREFIX + urlencode(sorted(metadata.items()))


def name_tags(name: object) -> dict[str, str] | None:
    """The tags of a name made by `batch_name`; None for any other name."""
    if not isinstance(name, str) or not name.startswith(NAME_PREFIX):
        return None
    return dict(parse_qsl(name[len(NAME_PREFIX):], keep_blank_values=True))


def responses_input(request: BatchRequest) -> list[dict[str, Any]]:
    """The Responses `input` messages, system first. Text parts are `input_text` in user and system
    messages and `output_text` (with its required `annotations`) in assistant turns: the Responses API
    refuses chat's `{"type": "text"}` parts, and input parts in an assistant message."""
    return responses_items(request, system=True)


def batch_status(batch: Mapping[str, Any], check_id: Any, *, now: float) -> BatchStatus:
    """Normalize an xAI Batch object; its state is derived from counters and time fields."""
    raw = batch.get("state")
    counters = raw if isinstance(raw, Mapping) else {}
    total, pending, success, error, cancelled = (
        int_or_none(counters.get(key)) or 0
        for key in ("num_requests", "num_pending", "num_success", "num_error", "num_cancelled")
    )
    xai_message = batch.get("cancel_by_xai_message") or None
    cancel_time = batch.get("cancel_time")
    # CONFLICT: the REST reference and proto say `expire_time`, the guide text `expires_at`.
    expire = parse_time(batch.get("expire_time") or batch.get("expires_at"), end_of_day=True)
    flags = []
    state: BatchState
    if xai_message:
        state = "cancelling" if pending else "failed"
        flags.append("cancel_by_xai")
    elif cancel_time:
        state = "cancelling" if pending else "cancelled"
        flags.append("cancel_time")
    elif total and not pending:
        state = "completed"
    elif expire is not None and now >= expire:
        state = "expired"
        flags.append("expired")
    elif not total:
        state = "validating"
    else:
        state = "in_progress"
    terminal = state in TERMINAL_STATES
    counts = Counts(
        total=total, succeeded=success, errored=error,
        expired=pending if state == "expired" else 0,
        canceled=cancelled,
        processing=0 if terminal else pending,
    )
    raw_state = ",".join([f"num_pending={pending}/num_requests={total}", *flags])
    return BatchStatus(
        id=check_id(batch.get("batch_id")), state=state, counts=counts, raw_state=raw_state,
        error_message=str(xai_message) if xai_message else None,
    )


def _op_body(response: object) -> Mapping[str, Any] | None:
    """The body under the single operation key of `batch_result.response`."""
    if isinstance(response, Mapping):
        for value in response.values():
            if isinstance(value, Mapping):
                return value
    return None


def parse_result(entry: Mapping[str, Any], batch_id: str) -> ItemResult | None:
    """One entry of `GET /v1/batches/{id}/results`; None without a `batch_request_id`."""
    custom_id = entry.get("batch_request_id")
    if not isinstance(custom_id, str):
        return None
    raw = dumps(entry).decode()
    item = ItemResult(custom_id=custom_id, status="succeeded", batch_id=batch_id, response=raw)
    result = entry.get("batch_result")
    result = result if isinstance(result, Mapping) else {}
    body = _op_body(result.get("response"))
    # CONFLICT: a failure is `batch_result.error` (REST reference, a string), a top-level
    # `error_message` (guide) or an `error` object with code/message (proto google.rpc.Status).
    failure = result.get("error") or entry.get("error_message") or entry.get("error")
    if body is not None and not failure:
        if "choices" in body:
            fill_from_chat_completion(item, body)
        elif "output" in body:
            fill_from_response(item, body)
        return item
    code, message = error_fields(failure)
    item.status, item.finish_reason = "errored", "error"
    item.error_code = code or "error"
    item.error_message = message or "the provider returned no result and no error message"
    return item


def unfinished_item(meta: Mapping[str, Any], batch: BatchStatus) -> ItemResult | None:
    """A row for a request without a result line, from its `batch_request_metadata` entry."""
    custom_id = meta.get("batch_request_id")
    if not isinstance(custom_id, str):
        return None
    state = str(meta.get("state") or "").lower().removeprefix("state_")
    raw = dumps(meta).decode()
    item = ItemResult(custom_id=custom_id, status="canceled", batch_id=batch.id, response=raw)
    never_ran = state in ("pending", "unknown", "")
    if state == "cancelled" or (never_ran and batch.state in ("cancelled", "failed")):
        item.error_code = "cancelled"
        item.error_message = batch.error_message or "the batch was cancelled before this request ran"
    elif never_ran and batch.state == "expired":
        item.status, item.error_code = "expired", "expired"
        item.error_message = "the batch expired before this request ran"
    elif state in ("succeeded", "failed"):
        item.status, item.error_code = "missing", "missing"
        item.error_message = f"xAI lists this request as {state} but returned no result for it"
    else:
        return None
    return item


_ENTRY_ID = re.compile(rb'"batch_request_id"\s*:\s*"([^"]*)"')


def _entry_id(entry: bytes) -> str | None:
    """The `batch_request_id` of an encoded add-requests entry (our encoder writes it first)."""
    match = _ENTRY_ID.search(entry, 0, 200)
    return match.group(1).decode() if match else None


def error_parser(response: httpx.Response) -> tuple[str | None, str]:
    """(code, message) of `{"code": <gRPC status text>, "error": <message>}`, or the OpenAI form."""
    try:
        body: Any = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("error"), str):
        code = body.get("code")
        return (str(code) if code is not None else None), body["error"]
    return default_error_parser(response)


class XAIAdapter(ProviderAdapter):
    """xAI batches. Knobs (class attributes, overridable per instance):

    - `input_mode`: "inline" (add-requests calls), "file" (one JSONL upload, sealed batch) or "auto":
      file for a shard of at least `file_min_requests` that fits the file limits, inline otherwise.
    - `add_page_size` / `add_page_bytes`: bounds of one add-requests call.
    - `list_page_size` / `result_page_size`: `limit` of list and results pages.
    """

    provider: ClassVar[str] = "xai"
    endpoints: ClassVar[tuple[EndpointSpec, ...]] = (
        EndpointSpec("chat", "text", "/v1/chat/completions"),
        EndpointSpec("responses", "text", "/v1/responses"),
    )
    # Prompt caching is automatic; the OpenAI-shaped usage of a result reports the cached prompt tokens
    # (`prompt_tokens_details.cached_tokens`; proto `SamplingUsage.cached_prompt_text_tokens`), included in
    # `prompt_tokens`.
    prompt_cache_automatic: ClassVar[bool] = True
    cache_tokens_in_input: ClassVar[bool] = True
    cache_hit_pattern: ClassVar[str | None] = USAGE_CACHE_HIT

    @classmethod
    def cache_tokens(cls, responses: pa.Array) -> tuple[pa.Array, pa.Array, pa.Array] | None:
        def counts(entry: Any) -> tuple[int, int] | None:
            result = entry.get("batch_result") if isinstance(entry, Mapping) else None
            body = _op_body(result.get("response")) if isinstance(result, Mapping) else None
            return None if body is None or result.get("error") else body_cache_counts(body)  # type: ignore[union-attr]
        return cache_token_columns(responses, counts)
    string_default: ClassVar[str] = "chat"
    # The AI SDK's `xai("…")` is its Responses model; `xai.chat("…")` the chat one.
    factory_default: ClassVar[str] = "responses"
    key_env_vars: ClassVar[tuple[str, ...]] = ("XAI_API_KEY",)
    default_base_url: ClassVar[str] = "https://api.x.ai/v1"
    # Inline batches have no size limit, but shards are kept within the file limits so that every
    # shard can go either way; each request is at most 25 MB (xAI batch guide).
    limits: ClassVar[ProviderLimits] = ProviderLimits(FILE_MAX_REQUESTS, FILE_MAX_BYTES, 25 * MB)
    # A failed result is usually a bare string (REST reference), so its message decides; a proto-shaped
    # `error.code` may also be a gRPC status (8 RESOURCE_EXHAUSTED, 13 INTERNAL, 14 UNAVAILABLE, 4 DEADLINE).
    retryable_error_codes: ClassVar[frozenset[str]] = frozenset({
        "4", "8", "13", "14", "RESOURCE_EXHAUSTED", "INTERNAL", "UNAVAILABLE", "DEADLINE_EXCEEDED",
        "429", "500", "502", "503", "504",
    })
    retryable_error_messages: ClassVar[tuple[str, ...]] = (
        "resource has been exhausted", "rate limit", "unavailable", "overloaded", "internal error",
        "deadline exceeded", "timed out", "try again",
    )

    input_mode: InputMode = "auto"
    file_min_requests: int = 5_000
    add_page_size: int = 1_000
    add_page_bytes: int = 25 * MB
    list_page_size: int = 100
    result_page_size: int = 1_000

    def auth_headers(self, api_key: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {api_key}"}

    @staticmethod
    def parse_error(response: httpx.Response) -> tuple[str | None, str]:
        return error_parser(response)

    # --- payloads --------------------------------------------------------------------------------
    def content_support(self, ref: ModelRef) -> ContentSupport:
        # xAI image understanding: `image_url` (chat) / `input_image` (Responses), a URL or a base64 data
        # URL, jpg/jpeg or png. Files go through xAI's Files API (file ids), not inline: refused. Function
        # tools on both endpoints.
        return ContentSupport(image_sources=BOTH, image_types=frozenset({"image/jpeg", "image/png"}), tools=True)

    def check_request(self, ref: ModelRef, request: BatchRequest) -> Refusal | None:
        if ref.endpoint == "chat":
            return first_unsupported(request, ("top_k", "dimensions"), "xai", "chat")
        refusal = first_unsupported(
            request,
            ("top_k", "stop_sequences", "seed", "presence_penalty", "frequency_penalty", "dimensions"),
            "xai", ref.endpoint,
        )
        if refusal is None and request.max_output_tokens is not None \
                and request.max_output_tokens < RESPONSES_MIN_OUTPUT_TOKENS:
            return ("max_output_tokens",
                    f"{request.max_output_tokens} is below {RESPONSES_MIN_OUTPUT_TOKENS}, the least a "
                    "/v1/responses body takes", f"use at least {RESPONSES_MIN_OUTPUT_TOKENS}")
        return refusal

    def body(self, ref: ModelRef, request: BatchRequest) -> dict[str, Any]:
        """The `/v1/chat/completions` or `/v1/responses` body of one request."""
        if ref.endpoint == "chat":
            return chat_body(ref, request, max_tokens_field="max_completion_tokens")
        # System prompts go into `input` as a system message, as in xAI's batch examples.
        body: dict[str, Any] = {"model": ref.model, "input": responses_input(request)}
        body.update(responses_tools(request))
        if request.max_output_tokens is not None:
            body["max_output_tokens"] = request.max_output_tokens
        for field in ("temperature", "top_p"):
            if getattr(request, field) is not None:
                body[field] = getattr(request, field)
        if request.output_schema is not None:
            body["text"] = {"format": {"type": "json_schema", **json_schema_format(request.output_schema)}}
        return merge_options(body, request)

    def encode(self, ref: ModelRef, request: BatchRequest) -> bytes:
        """An inline add-requests entry; `create` turns it into a JSONL line in file mode."""
        return dumps({
            "batch_request_id": request.custom_id,
            "batch_request": {OPS[ref.endpoint]: self.body(ref, request)},
        })

    def plain_encoder(self, ref: ModelRef) -> Callable[[Sequence[PlainSpec]], list[bytes]]:
        if ref.endpoint != "chat":
            return super().plain_encoder(ref)
        chat, op = plain_chat_body(ref, max_tokens_field="max_completion_tokens"), OPS[ref.endpoint]
        return plain_items(lambda r: {"batch_request_id": r.custom_id,
                                      "batch_request": {op: chat(r)}})  # type: ignore[arg-type]

    # --- create ----------------------------------------------------------------------------------
    async def create(self, ref: ModelRef, items: Iterable[bytes], *, metadata: Mapping[str, str]) -> str:
        return await self.create_tracked(ref, items, metadata=metadata, progress=CallProgress())

    async def create_tracked(self, ref: ModelRef, items: Iterable[bytes], *, metadata: Mapping[str, str],
                             progress: CallProgress) -> str:
        """Create a named batch, record its id (before any request is added), then add the requests page
        by page. An add-requests call that fails ambiguously is resolved by listing what the batch holds
        and adding only the rest; the batch is never cancelled here (a retry completes it)."""
        entries = items if isinstance(items, Sized) else list(items)
        if self._use_file(entries):
            return await self._create_from_file(ref, entries, metadata, progress)
        batch_id = progress.get("batch_id")
        if not batch_id:
            response = await self.http.request(
                "POST", "/batches", retry_safe=False, json={"name": batch_name(metadata)}
            )
            batch_id = self.check_id(response.json().get("batch_id"))
            progress.record(batch_id=batch_id, mode="inline")
            await self._add(batch_id, cast(Iterable[bytes], entries), progress, held=set())
        else:
            await self.complete(ref, batch_id, cast(Iterable[bytes], entries), progress=progress)
        return self.check_id(batch_id)

    async def _add(self, batch_id: str, entries: Iterable[bytes], progress: CallProgress, *, held: set[str]) -> None:
        """Add the entries whose id is not in `held`, page by page, resolving ambiguous failures."""
        policy = self.http.retry
        started = time.monotonic()
        attempt = 0
        while True:
            try:
                pages = self._add_pages(e for e in entries if _entry_id(e) not in held)
                for page in pages:
                    await self.http.request(
                        "POST", f"/batches/{self.check_id(batch_id)}/requests", retry_safe=False, content=page,
                        headers={"content-type": "application/json"},
                    )
                    progress.record(pages_added=int(progress.get("pages_added") or 0) + 1)
                progress.record(filled=True)
                return
            except ProviderAPIError as exc:
                attempt += 1
                if not (is_ambiguous(exc) or exc.status_code == 429) or not policy.allows(attempt, started):
                    raise
                await asyncio.sleep(policy.delay(attempt, exc.retry_after))
                # Did the failed page land? Ask the batch, then add only what it lacks.
                held = await self.held_request_ids(batch_id)

    async def held_request_ids(self, batch_id: str) -> set[str]:
        """The `batch_request_id`s a batch holds (xAI lists a batch's requests)."""
        path = f"/batches/{self.check_id(batch_id)}/requests"
        return {str(meta.get("batch_request_id")) async for meta in
                self._pages(path, "batch_request_metadata", self.result_page_size)}

    async def find_created(self, ref: ModelRef, items: Sized, *, metadata: Mapping[str, str],
                           progress: CallProgress, since: float, claimed: Collection[str] = ()) -> str | None:
        """The batch this shard's earlier try created: the id it recorded, else the batch named by its
        identity tags (never a cancelled one)."""
        recorded = progress.get("batch_id")
        if recorded and recorded not in claimed:
            batch = await self._batch(recorded)
            if not batch.get("cancel_time") and not batch.get("cancel_by_xai_message"):
                return self.check_id(recorded)
            # Cancelled (by someone else): never adopted, and a new create must not try to fill it.
            for key in ("batch_id", "pages_added", "filled"):
                progress.data.pop(key, None)
            progress.record()
        if "batchwork_id" not in metadata:
            return None
        found = await self.find_batch(metadata)
        if found and found not in claimed:
            progress.record(batch_id=found)
            return found
        return None

    async def complete(self, ref: ModelRef, batch_id: str, items: Iterable[bytes], *, progress: CallProgress) -> None:
        """Add whatever requests of the shard an adopted batch does not hold yet (a file-backed batch is
        sealed and complete from its creation)."""
        entries = items if isinstance(items, Sized) else list(items)
        if self._use_file(entries):
            return
        held = await self.held_request_ids(batch_id)
        await self._add(batch_id, cast(Iterable[bytes], entries), progress, held=held)

    def _use_file(self, entries: Sized) -> bool:
        if self.input_mode != "auto":
            return self.input_mode == "file"
        if not self.file_min_requests <= len(entries) <= FILE_MAX_REQUESTS:
            return False
        # A prepared shard knows its size; anything else is measured.
        size = getattr(entries, "nbytes", None)
        if not isinstance(size, int):
            size = sum(len(e) + 1 for e in cast(Iterable[bytes], entries))
        return size <= FILE_MAX_BYTES

    def _add_pages(self, entries: Iterable[bytes]) -> Iterator[bytes]:
        """`{"batch_requests": [...]}` bodies of at most `add_page_size` entries / `add_page_bytes`."""
        head, tail = b'{"batch_requests":[', b"]}"
        page: list[bytes] = []
        size = len(head) + len(tail)
        for entry in entries:
            if page and (len(page) >= self.add_page_size or size + len(entry) + 1 > self.add_page_bytes):
                yield head + b",".join(page) + tail
                page, size = [], len(head) + len(tail)
            page.append(entry)
            size += len(entry) + 1
        if page:
            yield head + b",".join(page) + tail

    async def _create_from_file(
        self, ref: ModelRef, entries: Iterable[bytes], metadata: Mapping[str, str], progress: CallProgress
    ) -> str:
        if progress.get("file_id"):
            file_id = self.check_id(progress.get("file_id"), "file id")
        else:
            file_id = await self._upload(ref, entries)
            progress.record(file_id=file_id, mode="file")
        body = {"name": batch_name(metadata), "input_file_id": file_id}
        response = await self.http.request("POST", "/batches", retry_safe=False, json=body)
        return self.check_id(response.json().get("batch_id"))

    async def _upload(self, ref: ModelRef, entries: Iterable[bytes]) -> str:
        op = OPS[ref.endpoint]
        with tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES) as spool:
            for raw in entries:
                entry = json.loads(raw)
                spool.write(dumps({
                    "custom_id": entry["batch_request_id"], "method": "POST", "url": ref.spec.path,
                    "body": entry["batch_request"][op],
                }))
                spool.write(b"\n")
            spool.seek(0)
            # The documented upload sends only `file` (no purpose).
            upload = {"file": ("batchwork.jsonl", spool, "application/jsonl")}
            # A repeated upload only leaves an unused file.
            uploaded = await self.http.request("POST", "/files", retry_safe=True, files=upload)
        return self.check_id(uploaded.json().get("id"), "file id")

    # --- follow ----------------------------------------------------------------------------------
    async def _batch(self, batch_id: str) -> dict[str, Any]:
        response = await self.http.request("GET", f"/batches/{self.check_id(batch_id)}", retry_safe=True)
        return dict(response.json())

    async def status(self, batch_id: str) -> BatchStatus:
        return batch_status(await self._batch(batch_id), self.check_id, now=time.time())

    result_id_key: ClassVar[str] = "batch_request_id"

    def read_result_line(self, ref: ModelRef, batch_id: str, line: str, state: str) -> ItemResult | None:
        entry = json.loads(line)
        if not isinstance(entry, Mapping):
            raise TypeError("a result entry is not a JSON object")
        return parse_result(entry, batch_id)

    async def results(self, ref: ModelRef, batch_id: str) -> AsyncIterator[ItemResult]:
        status = await self.status(batch_id)
        base = f"/batches/{self.check_id(batch_id)}"
        seen: set[str] = set()
        async for entry in self._pages(f"{base}/results", "results", self.result_page_size):
            item = self.parse_result_line(ref, batch_id, json.dumps(entry, ensure_ascii=False))
            if item is not None:
                seen.add(item.custom_id)
                yield item
        # Requests that never ran (cancelled, expired) have no result entry: only the per-request
        # metadata listing names them.
        if status.state in ("cancelled", "expired", "failed") or status.counts.canceled:
            metas = self._pages(f"{base}/requests", "batch_request_metadata", self.result_page_size)
            async for meta in metas:
                if meta.get("batch_request_id") not in seen:
                    item = unfinished_item(meta, status)
                    if item is not None:
                        seen.add(item.custom_id)
                        yield item

    async def cancel(self, batch_id: str) -> BatchStatus:
        path = f"/batches/{self.check_id(batch_id)}:cancel"
        response = await self.http.request("POST", path, retry_safe=True)
        return batch_status(response.json(), self.check_id, now=time.time())

    async def list_batches(self, *, limit: int = 100) -> AsyncIterator[BatchStatus]:
        async for batch in self._pages("/batches", "batches", self.list_page_size, total=limit):
            yield batch_status(batch, self.check_id, now=time.time())

    async def find_batch(self, metadata: Mapping[str, str], *, limit: int = 500) -> str | None:
        async for batch in self._pages("/batches", "batches", self.list_page_size, total=limit):
            tags = name_tags(batch.get("name"))
            if tags is not None and not batch.get("cancel_by_xai_message") and not batch.get("cancel_time") \
                    and all(tags.get(k) == v for k, v in metadata.items()):
                return self.check_id(batch.get("batch_id"))
        return None

    async def _pages(
        self, path: str, key: str, page_size: int, *, total: int | None = None
    ) -> AsyncIterator[Mapping[str, Any]]:
        """Entries under `key` across `limit` / `pagination_token` pages; the token is empty or null
        on the last page."""
        token: str | None = None
        seen = 0
        while total is None or seen < total:
            params: dict[str, Any] = {"limit": page_size if total is None else min(page_size, total - seen)}
            if token:
                params["pagination_token"] = token
            page = (await self.http.request("GET", path, retry_safe=True, params=params)).json()
            for entry in page.get(key) or []:
                if isinstance(entry, Mapping):
                    seen += 1
                    yield entry
                    if total is not None and seen >= total:
                        return
            following = page.get("pagination_token")
            if not isinstance(following, str) or not following or following == token:
                return
            token = following
