"""Groq Batch API: OpenAI's Files + Batches flow under `/openai/v1`, with its own completion window
(`24h` to `7d`) and cursor-paged batch lists (`paging.next_cursor`, `?cursor=`)."""

from __future__ import annotations

import os
import re
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any, ClassVar

import httpx

from airflow_batchwork.adapters.base import EndpointSpec, ProviderLimits, Refusal, first_unsupported
from airflow_batchwork.adapters.content import BOTH, CHAT_IMAGE_TYPES, ContentSupport
from airflow_batchwork.adapters.http import RetryPolicy
from airflow_batchwork.adapters.openai_compat import USAGE_CACHE_HIT, OpenAIFilesBatchAdapter, chat_body
from airflow_batchwork.values.credentials import Credentials
from airflow_batchwork.values.errors import ConfigurationError
from airflow_batchwork.values.refs import ModelRef
from airflow_batchwork.values.requests import BatchRequest, PlainSpec

COMPLETION_WINDOW_ENV = "GROQ_COMPLETION_WINDOW"
_WINDOW = re.compile(r"^([1-9][0-9]*)([hd])\Z")
MIN_WINDOW_HOURS = 24
MAX_WINDOW_HOURS = 7 * 24


def window_hours(value: str) -> int | None:
    """Hours of a Groq completion window such as `24h` or `7d`; None if it is not one."""
    match = _WINDOW.match(value.strip()) if isinstance(value, str) else None
    if not match:
        return None
    return int(match.group(1)) * (24 if match.group(2) == "d" else 1)


def check_window(value: str, *, field: str = "completion_window") -> str:
    """`value` if Groq accepts it as a completion window, else a ConfigurationError."""
    hours = window_hours(value)
    if hours is None or not MIN_WINDOW_HOURS <= hours <= MAX_WINDOW_HOURS:
        raise ConfigurationError(
            field,
            f"{value!r} is not a Groq completion window",
            'use a duration from "24h" to "7d", written in hours or days (e.g. "48h", "3d")',
        )
    return value.strip()


class GroqAdapter(OpenAIFilesBatchAdapter):
    """Groq batches. The completion window is, in order: the `completion_window` constructor argument,
    the `GROQ_COMPLETION_WINDOW` environment variable, then `24h`."""

    provider: ClassVar[str] = "groq"
    endpoints: ClassVar[tuple[EndpointSpec, ...]] = (EndpointSpec("chat", "text", "/v1/chat/completions"),)
    string_default: ClassVar[str] = "chat"
    factory_default: ClassVar[str] = "chat"
    key_env_vars: ClassVar[tuple[str, ...]] = ("GROQ_API_KEY",)
    default_base_url: ClassVar[str] = "https://api.groq.com"
    files_path: ClassVar[str] = "/openai/v1/files"
    batches_path: ClassVar[str] = "/openai/v1/batches"
    batch_id_pattern: ClassVar[re.Pattern[str] | None] = re.compile(r"^batch_[A-Za-z0-9_-]{1,200}\Z")
    # Groq's usage has OpenAI's `prompt_tokens_details.cached_tokens` (groq SDK `CompletionUsage`), counted in
    # `prompt_tokens`; caching is automatic on the models that have it.
    prompt_cache_automatic: ClassVar[bool] = True
    cache_tokens_in_input: ClassVar[bool] = True
    cache_hit_pattern: ClassVar[str | None] = USAGE_CACHE_HIT
    # 50,000 lines per input file (batch guide). Size: the guide says 200 MB, the SDK docstring 100 MB;
    # the smaller one is used so a shard is never refused.
    limits: ClassVar[ProviderLimits] = ProviderLimits(50_000, 100 * 1024 * 1024, 100 * 1024 * 1024)
    # OpenAI's codes, plus 498 (flex capacity unavailable, Groq errors page).
    retryable_error_codes: ClassVar[frozenset[str]] = frozenset({
        "rate_limit_exceeded", "server_error", "timeout", "service_unavailable", "capacity_exceeded",
        "429", "498", "500", "502", "503", "504",
    })

    def __init__(
        self,
        credentials: Credentials,
        *,
        retry: RetryPolicy | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        completion_window: str | None = None,
    ) -> None:
        super().__init__(credentials, retry=retry, transport=transport)
        if completion_window is not None:
            self.window = check_window(completion_window)
        elif os.environ.get(COMPLETION_WINDOW_ENV):
            self.window = check_window(os.environ[COMPLETION_WINDOW_ENV], field=COMPLETION_WINDOW_ENV)
        else:
            self.window = self.completion_window

    def batch_window(self) -> str:
        return self.window

    def content_support(self, ref: ModelRef) -> ContentSupport:
        # groq SDK: `ChatCompletionContentPartImageParam` (an image URL or a base64 data URL) and function
        # tools; its `document` part carries text/JSON, not files, so file parts are refused.
        return ContentSupport(image_sources=BOTH, image_types=CHAT_IMAGE_TYPES, tools=True)

    def check_request(self, ref: ModelRef, request: BatchRequest) -> Refusal | None:
        # Groq documents the penalties as "not yet supported by any of our models".
        return first_unsupported(
            request, ("top_k", "presence_penalty", "frequency_penalty", "dimensions"), "groq", ref.endpoint
        )

    def encode(self, ref: ModelRef, request: BatchRequest) -> bytes:
        return self.line(ref, request, chat_body(ref, request, max_tokens_field="max_tokens"))

    def plain_encoder(self, ref: ModelRef) -> Callable[[Sequence[PlainSpec]], list[bytes]]:
        return self.plain_chat_lines(ref, max_tokens_field="max_tokens")

    async def _list_raw(self, *, limit: int) -> AsyncIterator[dict[str, Any]]:
        cursor: str | None = None
        seen = 0
        while seen < limit:
            params = {"cursor": cursor} if cursor else None
            page = (await self.http.request("GET", self.batches_path, retry_safe=True, params=params)).json()
            data = page.get("data") or []
            for batch in data:
                if seen >= limit:
                    return
                seen += 1
                yield batch
            paging = page.get("paging") or {}
            cursor = paging.get("next_cursor") if isinstance(paging, dict) else None
            if not data or not isinstance(cursor, str) or not cursor:
                return
