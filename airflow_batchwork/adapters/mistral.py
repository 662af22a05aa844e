"""Mistral batch jobs: `POST /v1/batch/jobs` with the requests inline (small jobs) or as uploaded JSONL
files (`/v1/files`, purpose `batch`); results from `output_file` / `error_file` or the job's inline
`outputs`.

Lines are `{custom_id, body}`: the model and the endpoint are set on the job, not per line.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence, Sized
from itertools import chain
from typing import Any, ClassVar

import httpx

from airflow_batchwork.adapters.base import (
    EndpointSpec,
    ProviderAdapter,
    ProviderLimits,
    Refusal,
    dumps,
    first_unsupported,
    int_or_none,
    merge_options,
)
from airflow_batchwork.adapters.content import BOTH, CHAT_IMAGE_TYPES, PDF, ContentSupport
from airflow_batchwork.adapters.http import default_error_parser
from airflow_batchwork.adapters.openai_compat import (
    SPOOL_BYTES,
    ChatDialect,
    chat_body,
    fill_from_chat_completion,
    fill_from_embedding,
    parse_result_line,
    plain_chat_body,
    plain_items,
)
from airflow_batchwork.values.calls import CallProgress
from airflow_batchwork.values.refs import ModelRef
from airflow_batchwork.values.requests import BatchRequest, PlainSpec, PlainText
from airflow_batchwork.values.status import BatchState, BatchStatus, Counts, ItemResult

STATES: dict[str, BatchState] = {
    "QUEUED": "validating",
    "RUNNING": "in_progress",
    "SUCCESS": "completed",
    "FAILED": "failed",
    "TIMEOUT_EXCEEDED": "expired",
    "CANCELLATION_REQUESTED": "cancelling",
    "CANCELLED": "cancelled",
}
TERMINAL_RAW = frozenset({"SUCCESS", "FAILED", "TIMEOUT_EXCEEDED", "CANCELLED"})


def error_details(details: list[Any]) -> str:
    """`loc: msg` of the first few entries of a validation error's `detail` list."""
    parts = []
    for detail in details[:5]:
        if isinstance(detail, Mapping):
            parts.append(f"{'.'.join(str(p) for p in detail.get('loc') or [])}: {detail.get('msg')}")
        else:
            parts.append(str(detail))
    return "; ".join(parts)


def mistral_error(response: httpx.Response) -> tuple[str | None, str]:
    """(code, message) of Mistral's error bodies: `{"object": "error", message, type, param, code}`
    (where `message` may itself hold `{"detail": [...]}`), `{"detail": "Unauthorized"}`,
    `{"detail": [{loc, msg, type}]}` (422) and `{"message": "Unauthorized", "request_id"}`."""
    try:
        body: Any = response.json()
    except ValueError:
        return None, (response.text[:300] or response.reason_phrase)
    if not isinstance(body, Mapping) or "error" in body:
        return default_error_parser(response)
    code = body.get("code") or body.get("type")
    message: Any = body.get("message", body.get("detail"))
    if isinstance(message, Mapping):
        message = message.get("detail", message)
    if isinstance(message, list):
        message = error_details(message)
    return (str(code) if code is not None else None), str(message or response.reason_phrase)


MISTRAL_CHAT = ChatDialect(file="mistral", tool_name_in_result=True, required_choice="any")


class MistralAdapter(ProviderAdapter):
    provider: ClassVar[str] = "mistral"
    endpoints: ClassVar[tuple[EndpointSpec, ...]] = (
        EndpointSpec("chat", "text", "/v1/chat/completions"),
        EndpointSpec("embedding", "embedding", "/v1/embeddings"),
    )
    string_default: ClassVar[str] = "chat"
    factory_default: ClassVar[str] = "chat"
    key_env_vars: ClassVar[tuple[str, ...]] = ("MISTRAL_API_KEY",)
    default_base_url: ClassVar[str] = "https://api.mistral.ai"
    # "Known limitations" page: 100,000 requests and 512 MB per batch file (the batch guide says up to
    # 1M requests; the smaller number is used so a shard is never refused).
    limits: ClassVar[ProviderLimits] = ProviderLimits(100_000, 512 * 1024 * 1024, 512 * 1024 * 1024)
    # Inline `requests` are documented for batches of fewer than 10,000 requests. The byte cap is ours:
    # one JSON body of that size is still a comfortable single POST.
    inline_max_requests: ClassVar[int] = 9_999
    inline_max_bytes: ClassVar[int] = 10 * 1024 * 1024
    timeout_hours: ClassVar[int] = 24
    # The error body's `code`, else its `type` (e.g. `rate_limited`), else the HTTP status.
    retryable_error_codes: ClassVar[frozenset[str]] = frozenset({
        "rate_limited", "service_unavailable", "server_error", "internal_server_error", "timeout",
        "429", "500", "502", "503", "504",
    })
    list_page_size: ClassVar[int] = 100

    def auth_headers(self, api_key: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {api_key}"}

    @staticmethod
    def parse_error(response: httpx.Response) -> tuple[str | None, str]:
        return mistral_error(response)

    # --- payloads --------------------------------------------------------------------------------
    def content_support(self, ref: ModelRef) -> ContentSupport:
        if ref.endpoint != "chat":
            return super().content_support(ref)
        # mistralai SDK: `ImageURLChunk` (URL or data URL), `DocumentURLChunk` (PDF by URL; a base64 data
        # URL is UNCONFIRMED for chat, documented for OCR), function tools, tool_choice auto/none/any/required
        # or a named function.
        return ContentSupport(image_sources=BOTH, image_types=CHAT_IMAGE_TYPES, file_sources=BOTH,
                              file_types=PDF, tools=True)

    def check_request(self, ref: ModelRef, request: BatchRequest) -> Refusal | None:
        if ref.endpoint == "chat":
            # `top_k` is in the current SDK's ChatCompletionRequest (mistralai 3.x).
            return first_unsupported(request, ("dimensions",), "mistral", ref.endpoint)
        return first_unsupported(
            request,
            (
                "system",
                "max_output_tokens",
                "temperature",
                "top_p",
                "top_k",
                "stop_sequences",
                "seed",
                "presence_penalty",
                "frequency_penalty",
                "output_schema",
            ),
            "mistral",
            ref.endpoint,
        )

    def encode(self, ref: ModelRef, request: BatchRequest) -> bytes:
        return dumps({"custom_id": request.custom_id, "body": self.body(ref, request)})

    def plain_encoder(self, ref: ModelRef) -> Callable[[Sequence[PlainSpec]], list[bytes]]:
        if ref.endpoint != "chat":
            return super().plain_encoder(ref)
        chat, model = plain_chat_body(ref), ref.model

        def item(request: PlainText) -> dict[str, Any]:
            body = chat(request)  # as in `body`
            if "seed" in body:
                body["random_seed"] = body.pop("seed")
            if request.top_k is not None:
                body.setdefault("top_k", request.top_k)
            if body.get("model") == model:
                del body["model"]
            return {"custom_id": request.custom_id, "body": body}

        return plain_items(item)  # type: ignore[arg-type]

    def body(self, ref: ModelRef, request: BatchRequest) -> dict[str, Any]:
        if ref.endpoint == "chat":
            body = chat_body(ref, request, dialect=MISTRAL_CHAT)
            if "seed" in body:
                body["random_seed"] = body.pop("seed")
            if request.top_k is not None:
                body.setdefault("top_k", request.top_k)  # provider_options, merged already, win
        else:
            body = {"model": ref.model, "input": request.value}
            if request.dimensions is not None:
                body["output_dimension"] = request.dimensions
            body = merge_options(body, request)
        # The job names the model; lines leave it out (as in Mistral's examples).
        if body.get("model") == ref.model:
            del body["model"]
        return body

    def fill(self, ref: ModelRef) -> Any:
        return fill_from_chat_completion if ref.endpoint == "chat" else fill_from_embedding

    # --- calls -----------------------------------------------------------------------------------
    async def create(self, ref: ModelRef, items: Iterable[bytes], *, metadata: Mapping[str, str]) -> str:
        return await self.create_tracked(ref, items, metadata=metadata, progress=CallProgress())

    async def create_tracked(self, ref: ModelRef, items: Iterable[bytes], *, metadata: Mapping[str, str],
                             progress: CallProgress) -> str:
        """Create the job: the requests inline, or uploaded once as a JSONL file whose id is recorded in the
        ledger before the paid create, so a retry after a kill re-uses it instead of leaving an orphan."""
        job: dict[str, Any] = {
            "model": ref.model,
            "endpoint": ref.spec.path,
            "timeout_hours": self.timeout_hours,
        }
        if metadata:
            job["metadata"] = dict(metadata)
        # Inline when the job is small enough; read at most that much before deciding.
        lines: list[bytes] = []
        rest = iter(items)
        inline = not (isinstance(items, Sized) and len(items) > self.inline_max_requests)
        size = 0
        while inline:
            line = next(rest, None)
            if line is None:
                break
            lines.append(line)
            size += len(line) + 1
            inline = len(lines) <= self.inline_max_requests and size <= self.inline_max_bytes
        if inline:
            # Splice the already-encoded lines into the body instead of re-parsing them.
            body = b'{"requests":[' + b",".join(lines) + b"]," + dumps(job)[1:]
            response = await self.http.request(
                "POST",
                "/v1/batch/jobs",
                retry_safe=False,
                content=body,
                headers={"content-type": "application/json"},
            )
        else:
            file_id = progress.get("file_id")
            if not file_id:
                file_id = await self.upload(chain(lines, rest))
                progress.record(file_id=file_id)
            job["input_files"] = [self.check_id(file_id, "file id")]
            response = await self.http.request("POST", "/v1/batch/jobs", retry_safe=False, json=job)
        return self.check_id(response.json().get("id"))

    async def upload(self, lines: Iterable[bytes]) -> str:
        with tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES) as spool:
            for line in lines:
                spool.write(line)
                spool.write(b"\n")
            spool.seek(0)
            response = await self.http.request(
                "POST",
                "/v1/files",
                retry_safe=True,  # a repeated upload only leaves an unused file
                files={"file": ("batchwork.jsonl", spool, "application/jsonl")},
                data={"purpose": "batch"},
            )
        return self.check_id(response.json().get("id"), "file id")

    async def _job(self, batch_id: str, *, inline: bool = False) -> dict[str, Any]:
        response = await self.http.request(
            "GET",
            f"/v1/batch/jobs/{self.check_id(batch_id)}",
            retry_safe=True,
            params={"inline": "true"} if inline else None,
        )
        return dict(response.json())

    async def status(self, batch_id: str) -> BatchStatus:
        return self._status(await self._job(batch_id))

    def _status(self, job: Mapping[str, Any]) -> BatchStatus:
        raw = str(job.get("status"))
        state = STATES.get(raw, "in_progress")
        total = int_or_none(job.get("total_requests")) or 0
        succeeded = int_or_none(job.get("succeeded_requests")) or 0
        failed = int_or_none(job.get("failed_requests")) or 0
        rest = max(total - succeeded - failed, 0)
        counts = Counts(
            total=total,
            succeeded=succeeded,
            errored=failed,
            expired=rest if state == "expired" else 0,
            canceled=rest if state == "cancelled" else 0,
            processing=0 if raw in TERMINAL_RAW else rest,
        )
        errors = job.get("errors")
        message = None
        if isinstance(errors, list) and errors:
            message = "; ".join(
                str(e.get("message")) if isinstance(e, Mapping) else str(e) for e in errors[:5]
            )
        return BatchStatus(
            id=self.check_id(job.get("id")), state=state, counts=counts, raw_state=raw, error_message=message
        )

    def read_result_line(self, ref: ModelRef, batch_id: str, line: str, state: str) -> ItemResult | None:
        return parse_line(line, batch_id, self.fill(ref), state)  # type: ignore[arg-type]

    async def results(self, ref: ModelRef, batch_id: str) -> AsyncIterator[ItemResult]:
        job = await self._job(batch_id)
        state = STATES.get(str(job.get("status")), "in_progress")
        files = [job.get(key) for key in ("output_file", "error_file") if job.get(key)]
        if files:
            for file_id in files:
                path = f"/v1/files/{self.check_id(file_id, 'file id')}/content"
                async with self.http.stream("GET", path) as response:
                    async for line in response.aiter_lines():
                        if line.strip():
                            item = self.parse_result_line(ref, batch_id, line, state)
                            if item is not None:
                                yield item
            return
        # Inline jobs: results come back in the job itself.
        outputs = (await self._job(batch_id, inline=True)).get("outputs") or []
        for output in outputs:
            item = self.parse_result_line(ref, batch_id, json.dumps(output, ensure_ascii=False), state)
            if item is not None:
                yield item

    async def cancel(self, batch_id: str) -> BatchStatus:
        response = await self.http.request(
            "POST", f"/v1/batch/jobs/{self.check_id(batch_id)}/cancel", retry_safe=True
        )
        return self._status(response.json())

    async def _list_raw(self, *, limit: int) -> AsyncIterator[dict[str, Any]]:
        page_size = min(self.list_page_size, max(limit, 1))
        page = 0
        seen = 0
        while seen < limit:
            params = {"page": page, "page_size": page_size, "order_by": "-created"}
            body = (await self.http.request("GET", "/v1/batch/jobs", retry_safe=True, params=params)).json()
            data = body.get("data") or []
            for job in data:
                if seen >= limit:
                    return
                seen += 1
                yield job
            total = int_or_none(body.get("total"))
            if not data or (total is not None and (page + 1) * page_size >= total):
                return
            page += 1

    async def list_batches(self, *, limit: int = 100) -> AsyncIterator[BatchStatus]:
        async for job in self._list_raw(limit=limit):
            yield self._status(job)

    async def find_batch(self, metadata: Mapping[str, str], *, limit: int = 500) -> str | None:
        async for job in self._list_raw(limit=limit):
            tags = job.get("metadata") or {}
            if all(tags.get(k) == v for k, v in metadata.items()) and job.get("status") != "FAILED":
                return self.check_id(job.get("id"))
        return None


def parse_line(line: str, batch_id: str, fill: Any, state: BatchState) -> ItemResult | None:
    """One result line. A line without an HTTP response in a timed-out or cancelled job is that
    request being expired or canceled (Mistral sends those errors as bare strings, without a code)."""
    item = parse_result_line(line, batch_id, fill)
    if item is None or item.status != "errored" or state not in ("expired", "cancelled"):
        return item
    if json.loads(line).get("response"):
        return item
    item.status = "expired" if state == "expired" else "canceled"
    item.error_code = item.status if item.error_code in (None, "error") else item.error_code
    item.finish_reason = None
    return item
