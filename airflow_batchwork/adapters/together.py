"""Together AI Batch API: JSONL upload to `/files/upload` (purpose `batch-api`), `POST /batches`,
uppercase states, results from `output_file_id` and `error_file_id`.

Together reports no per-outcome request counts, only `progress` (0-100); see `TogetherAdapter.status`
for how counts are derived.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import AsyncIterator, Callable, Collection, Iterable, Mapping, Sequence, Sized
from dataclasses import replace
from datetime import datetime
from typing import Any, ClassVar
from urllib.parse import urlsplit, urlunsplit

import httpx

from airflow_batchwork.adapters.base import (
    EndpointSpec,
    ProviderAdapter,
    ProviderLimits,
    Refusal,
    dumps,
    first_unsupported,
    int_or_none,
)
from airflow_batchwork.adapters.content import BOTH, CHAT_IMAGE_TYPES, ContentSupport
from airflow_batchwork.adapters.http import RetryPolicy
from airflow_batchwork.adapters.openai_compat import (
    SPOOL_BYTES,
    ChatDialect,
    chat_body,
    fill_from_chat_completion,
    parse_result_line,
    plain_chat_body,
    plain_items,
)
from airflow_batchwork.values.calls import CallProgress
from airflow_batchwork.values.credentials import Credentials
from airflow_batchwork.values.refs import ModelRef
from airflow_batchwork.values.requests import BatchRequest, PlainSpec, PlainText
from airflow_batchwork.values.status import BatchState, BatchStatus, Counts, ItemResult

log = logging.getLogger(__name__)

STATES: dict[str, BatchState] = {
    "VALIDATING": "validating",
    "IN_PROGRESS": "in_progress",
    "COMPLETED": "completed",
    "FAILED": "failed",
    "EXPIRED": "expired",
    "CANCELLED": "cancelled",
    # Only in the legacy v1 SDK's enum (the 3.x SDK's has neither); handled in case the API sends it.
    "CANCELING": "cancelling",
    "CANCELLING": "cancelling",
}
# The completion window is fixed at 24 h (batch overview); sent because the v1 SDK always sends it.
COMPLETION_WINDOW = "24h"


def api_base_url(base_url: str) -> str:
    """`base_url` ending in `/v1`: the together 3.x SDK takes `https://api.together.ai` (it adds `/v1`
    to every path), the legacy SDK and this adapter `…/v1`, so either spelling works here."""
    parts = urlsplit(base_url.rstrip("/"))
    if parts.path.endswith("/v1"):
        return urlunsplit(parts)
    return urlunsplit(parts._replace(path=parts.path + "/v1"))


def line_count(file: Mapping[str, Any]) -> int | None:
    """Lines of a file from its metadata: `LineCount` (legacy), `line_count`, `validation_report.nlines`."""
    report = file.get("validation_report")
    nlines = report.get("nlines") if isinstance(report, Mapping) else None
    for value in (file.get("LineCount"), file.get("line_count"), nlines):
        count = int_or_none(value)
        if count is not None:
            return count
    return None


def _created(batch: Mapping[str, Any]) -> float:
    try:
        return datetime.fromisoformat(str(batch.get("created_at")).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return 0.0


TOGETHER_CHAT = ChatDialect(file=None, tool_call_index=True)


class TogetherAdapter(ProviderAdapter):
    provider: ClassVar[str] = "together"
    endpoints: ClassVar[tuple[EndpointSpec, ...]] = (EndpointSpec("chat", "text", "/v1/chat/completions"),)
    string_default: ClassVar[str] = "chat"
    factory_default: ClassVar[str] = "chat"
    key_env_vars: ClassVar[tuple[str, ...]] = ("TOGETHER_API_KEY",)
    default_base_url: ClassVar[str] = "https://api.together.xyz/v1"
    # 50,000 requests and 100 MB per input file, 10 MB per line (batch overview).
    limits: ClassVar[ProviderLimits] = ProviderLimits(50_000, 100 * 1024 * 1024, 10 * 1024 * 1024)
    # Error-file `error.code`s (batch docs show `timeout`; the rest are Together's HTTP error codes).
    retryable_error_codes: ClassVar[frozenset[str]] = frozenset({
        "timeout", "rate_limit_exceeded", "server_error", "service_unavailable", "429", "500", "502", "503", "504",
    })

    def __init__(
        self,
        credentials: Credentials,
        *,
        retry: RetryPolicy | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        base_url = api_base_url(credentials.base_url or self.default_base_url)
        super().__init__(replace(credentials, base_url=base_url), retry=retry, transport=transport)
        # Request totals per batch (from create, or the input file's metadata) and success counts of
        # ended batches; both never change, so one lookup per batch is enough.
        self._totals: dict[str, int | None] = {}
        self._succeeded: dict[str, int | None] = {}

    def auth_headers(self, api_key: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {api_key}"}

    # --- payloads --------------------------------------------------------------------------------
    def content_support(self, ref: ModelRef) -> ContentSupport:
        # together SDK: user content parts `image_url` (URL or data URL), `video_url`, audio; no file parts.
        # `tool_choice` is a string or a `ToolChoiceParam` that demands a call id, index and arguments, so
        # a named choice cannot be expressed: `required` with that one tool forces it.
        return ContentSupport(image_sources=BOTH, image_types=CHAT_IMAGE_TYPES, tools=True,
                              tool_choices=frozenset({"auto", "required", "none"}),
                              choice_fix='use tool_choice "required" and give only that tool')

    def check_request(self, ref: ModelRef, request: BatchRequest) -> Refusal | None:
        return first_unsupported(request, ("dimensions",), "together", ref.endpoint)

    def encode(self, ref: ModelRef, request: BatchRequest) -> bytes:
        body = chat_body(ref, request, dialect=TOGETHER_CHAT)
        # Together's system and assistant messages take a string (only user turns take content parts).
        for message in body["messages"]:
            if message["role"] not in ("user", "tool") and isinstance(message["content"], list):
                message["content"] = "".join(part["text"] for part in message["content"])
        if request.top_k is not None:
            body.setdefault("top_k", request.top_k)  # provider_options, merged already, win
        return dumps({"custom_id": request.custom_id, "body": body})

    def plain_encoder(self, ref: ModelRef) -> Callable[[Sequence[PlainSpec]], list[bytes]]:
        chat = plain_chat_body(ref)

        def item(request: PlainText) -> dict[str, Any]:
            body = chat(request)
            if request.top_k is not None:
                body.setdefault("top_k", request.top_k)  # as in `encode`
            return {"custom_id": request.custom_id, "body": body}

        return plain_items(item)  # type: ignore[arg-type]

    # --- calls -----------------------------------------------------------------------------------
    async def create(self, ref: ModelRef, items: Iterable[bytes], *, metadata: Mapping[str, str]) -> str:
        return await self.create_tracked(ref, items, metadata=metadata, progress=CallProgress())

    async def create_tracked(self, ref: ModelRef, items: Iterable[bytes], *, metadata: Mapping[str, str],
                             progress: CallProgress) -> str:
        """Upload the shard (once: the file id is recorded before the paid create), then create the batch.
        Together batches have no metadata field; the recorded input file identifies this shard's batch."""
        count = progress.get("count")
        file_id = progress.get("file_id")
        if not file_id:
            file_id, count = await self._upload(items)
            progress.record(file_id=file_id, count=count)
        body = {
            "input_file_id": self.check_id(file_id, "file id"),
            "endpoint": ref.spec.path,
            "completion_window": COMPLETION_WINDOW,
            "model_id": ref.model,
        }
        answer = (await self.http.request("POST", "/batches", retry_safe=False, json=body)).json()
        # Create answers 201 `{job, warning}`; status calls answer the bare job.
        job = answer.get("job") if isinstance(answer.get("job"), Mapping) else answer
        if answer.get("warning"):
            log.warning("together: %s", answer["warning"])
        batch_id = self.check_id(job.get("id"))
        if isinstance(count, int):
            self._totals[batch_id] = count
        return batch_id

    async def _upload(self, items: Iterable[bytes]) -> tuple[str, int]:
        count = 0
        with tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES) as spool:
            for item in items:
                spool.write(item)
                spool.write(b"\n")
                count += 1
            spool.seek(0)
            uploaded = await self.http.request(
                "POST",
                "/files/upload",
                retry_safe=True,  # a repeated upload only leaves an unused file
                files={"file": ("batchwork.jsonl", spool, "application/jsonl")},
                data={"file_name": "batchwork.jsonl", "purpose": "batch-api", "file_type": "jsonl"},
            )
        return self.check_id(uploaded.json().get("id"), "file id"), count

    def can_resolve(self, metadata: Mapping[str, str]) -> bool:
        return True

    async def find_created(self, ref: ModelRef, items: Sized, *, metadata: Mapping[str, str],
                           progress: CallProgress, since: float, claimed: Collection[str] = ()) -> str | None:
        """The batch made from this shard's recorded input file, if any (a file is uploaded once per shard,
        so at most one batch of this job can name it)."""
        file_id = progress.get("file_id")
        if not file_id:
            return None
        answer = (await self.http.request("GET", "/batches", retry_safe=True)).json()
        batches = answer.get("data") if isinstance(answer, Mapping) else answer
        for batch in sorted(batches or [], key=_created):
            if isinstance(batch, Mapping) and batch.get("input_file_id") == file_id \
                    and str(batch.get("status")).upper() not in ("CANCELLED", "CANCELING", "FAILED"):
                found = self.check_id(batch.get("id"))
                if found not in claimed:
                    return found
        return None

    async def _batch(self, batch_id: str) -> dict[str, Any]:
        response = await self.http.request("GET", f"/batches/{self.check_id(batch_id)}", retry_safe=True)
        return dict(response.json())

    async def status(self, batch_id: str) -> BatchStatus:
        return await self._status(await self._batch(batch_id))

    async def _status(self, batch: Mapping[str, Any], *, lookup: bool = True) -> BatchStatus:
        """Counts from what Together reports: `total` from create (same process) or the input file's
        line count; while running, `processing` from `progress`; once ended, `succeeded` from the output
        file's line count and the rest attributed by the batch state (errored, expired or canceled).
        Without `lookup`, only what is already known is used (no file metadata calls)."""
        batch_id = self.check_id(batch.get("id"))
        raw = str(batch.get("status"))
        state = STATES.get(raw, "in_progress")
        total = await self._total(batch_id, batch.get("input_file_id") if lookup else None)
        if state not in ("completed", "failed", "expired", "cancelled"):
            try:
                progress = min(max(float(batch.get("progress") or 0.0), 0.0), 100.0)
            except (TypeError, ValueError):
                progress = 0.0
            done = int(total * progress // 100)
            counts = Counts(total=total, processing=total - done)
        else:
            succeeded = await self._output_lines(batch_id, batch.get("output_file_id"), lookup=lookup)
            rest = max(total - succeeded, 0) if succeeded is not None else 0
            counts = Counts(
                total=total,
                succeeded=succeeded or 0,
                errored=rest if state in ("completed", "failed") else 0,
                expired=rest if state == "expired" else 0,
                canceled=rest if state == "cancelled" else 0,
            )
        error = batch.get("error")
        return BatchStatus(
            id=batch_id,
            state=state,
            counts=counts,
            raw_state=raw,
            error_message=str(error) if error else None,
        )

    async def _file_lines(self, file_id: object) -> int | None:
        if not file_id:
            return None
        response = await self.http.request(
            "GET", f"/files/{self.check_id(file_id, 'file id')}", retry_safe=True
        )
        return line_count(response.json())

    async def _total(self, batch_id: str, input_file_id: object) -> int:
        if batch_id not in self._totals and input_file_id:
            self._totals[batch_id] = await self._file_lines(input_file_id)
        return self._totals.get(batch_id) or 0

    async def _output_lines(self, batch_id: str, output_file_id: object, *, lookup: bool) -> int | None:
        if batch_id not in self._succeeded and lookup:
            self._succeeded[batch_id] = await self._file_lines(output_file_id) if output_file_id else 0
        return self._succeeded.get(batch_id)

    def read_result_line(self, ref: ModelRef, batch_id: str, line: str, state: str) -> ItemResult | None:
        return parse_result_line(line, batch_id, fill_from_chat_completion)

    async def results(self, ref: ModelRef, batch_id: str) -> AsyncIterator[ItemResult]:
        # A COMPLETED batch can still hold failures: always read both files.
        batch = await self._batch(batch_id)
        for key in ("output_file_id", "error_file_id"):
            file_id = batch.get(key)
            if not file_id:
                continue
            path = f"/files/{self.check_id(file_id, 'file id')}/content"
            async with self.http.stream("GET", path) as response:
                async for line in response.aiter_lines():
                    if line.strip():
                        item = self.parse_result_line(ref, batch_id, line)
                        if item is not None:
                            yield item

    async def cancel(self, batch_id: str) -> BatchStatus:
        response = await self.http.request(
            "POST", f"/batches/{self.check_id(batch_id)}/cancel", retry_safe=True
        )
        status = await self._status(response.json())
        # Together's status enum has no cancelling state: a batch still running after the cancel call
        # is reported as cancelling until it turns CANCELLED (or ends otherwise).
        return status if status.terminal else replace(status, state="cancelling")

    async def list_batches(self, *, limit: int = 100) -> AsyncIterator[BatchStatus]:
        # One unpaginated JSON array; sorted here so "newest first" holds whatever order it comes in.
        answer = (await self.http.request("GET", "/batches", retry_safe=True)).json()
        batches = answer.get("data") if isinstance(answer, Mapping) else answer
        for batch in sorted(batches or [], key=_created, reverse=True)[:limit]:
            yield await self._status(batch, lookup=False)
