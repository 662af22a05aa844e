"""OpenAI Batch API: JSONL upload to /v1/files, /v1/batches, output + error files.

Four endpoints: chat completions (the default for `openai/…` strings), responses (the default of
the `openai("…")` factory, as in the AI SDK), legacy completions, and embeddings.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, ClassVar

from airflow_batchwork.adapters.base import (
    EndpointSpec,
    ProviderLimits,
    Refusal,
    first_unsupported,
    merge_options,
    unsupported,
)
from airflow_batchwork.adapters.openai_compat import (
    OpenAIFilesBatchAdapter,
    chat_body,
    chat_messages,
    fill_from_chat_completion,
    fill_usage,
    finish_reason,
    json_schema_format,
)
from airflow_batchwork.core.refs import ModelRef
from airflow_batchwork.core.requests import BatchRequest
from airflow_batchwork.core.status import ItemResult


def fill_from_response(item: ItemResult, body: Mapping[str, Any]) -> None:
    """Text, finish reason and usage from a `/v1/responses` body."""
    texts: list[str] = []
    tool_call = False
    for output in body.get("output") or []:
        if not isinstance(output, Mapping):
            continue
        if output.get("type") == "message":
            texts += [c.get("text", "") for c in output.get("content") or []
                      if isinstance(c, Mapping) and c.get("type") == "output_text"]
        elif output.get("type") == "function_call":
            tool_call = True
    item.text = "".join(texts) if texts else None
    if body.get("status") == "incomplete":
        reason = (body.get("incomplete_details") or {}).get("reason")
        item.finish_reason = finish_reason(reason) or "other"
    else:
        item.finish_reason = "tool_calls" if tool_call else "stop"
    fill_usage(item, body.get("usage"), "input_tokens", "output_tokens")


def fill_from_completion(item: ItemResult, body: Mapping[str, Any]) -> None:
    choices = body.get("choices") or [{}]
    choice = choices[0] if isinstance(choices[0], Mapping) else {}
    item.text = choice.get("text")
    item.finish_reason = finish_reason(choice.get("finish_reason"))
    fill_usage(item, body.get("usage"), "prompt_tokens", "completion_tokens")


def fill_from_embedding(item: ItemResult, body: Mapping[str, Any]) -> None:
    data = body.get("data") or []
    if data and isinstance(data[0], Mapping):
        item.embedding = [float(x) for x in data[0].get("embedding") or []]
    item.finish_reason = "stop"
    fill_usage(item, body.get("usage"), "prompt_tokens", "completion_tokens")
    item.output_tokens = None


class OpenAIAdapter(OpenAIFilesBatchAdapter):
    provider: ClassVar[str] = "openai"
    endpoints: ClassVar[tuple[EndpointSpec, ...]] = (
        EndpointSpec("chat", "text", "/v1/chat/completions"),
        EndpointSpec("responses", "text", "/v1/responses"),
        EndpointSpec("completion", "text", "/v1/completions"),
        EndpointSpec("embedding", "embedding", "/v1/embeddings"),
    )
    string_default: ClassVar[str] = "chat"
    factory_default: ClassVar[str] = "responses"
    key_env_vars: ClassVar[tuple[str, ...]] = ("OPENAI_API_KEY",)
    default_base_url: ClassVar[str] = "https://api.openai.com/v1"
    # 50,000 requests and 200 MB per batch input file (OpenAI batch guide).
    limits: ClassVar[ProviderLimits] = ProviderLimits(50_000, 200 * 1024 * 1024, 200 * 1024 * 1024)
    console_url: ClassVar[str | None] = "https://platform.openai.com/batches/{batch_id}"
    batch_id_pattern: ClassVar[re.Pattern[str] | None] = re.compile(r"^batch_[A-Za-z0-9_-]{1,200}$")
    # Item error lines carry the HTTP error body's `error.code`/`type`, else the status code.
    retryable_error_codes: ClassVar[frozenset[str]] = frozenset({
        "rate_limit_exceeded", "server_error", "timeout", "service_unavailable", "429", "500", "502", "503", "504",
    })

    def check_request(self, ref: ModelRef, request: BatchRequest) -> Refusal | None:
        name = ref.endpoint
        if name == "chat":
            return first_unsupported(request, ("top_k", "dimensions"), "openai", name)
        if name == "responses":
            return first_unsupported(
                request,
                ("top_k", "stop_sequences", "seed", "presence_penalty", "frequency_penalty", "dimensions"),
                "openai", name,
            )
        if name == "completion":
            if request.messages is not None:
                return unsupported("messages", "openai", name, "give a single `prompt` string instead")
            return first_unsupported(request, ("system", "top_k", "dimensions", "output_schema"), "openai", name)
        return first_unsupported(
            request,
            ("system", "max_output_tokens", "temperature", "top_p", "top_k", "stop_sequences", "seed",
             "output_schema"),
            "openai", name,
        )

    def encode(self, ref: ModelRef, request: BatchRequest) -> bytes:
        return self.line(ref, request, self.body(ref, request))

    def body(self, ref: ModelRef, request: BatchRequest) -> dict[str, Any]:
        name = ref.endpoint
        if name == "chat":
            return chat_body(ref, request, max_tokens_field="max_completion_tokens")
        if name == "responses":
            messages = chat_messages(request)
            body: dict[str, Any] = {"model": ref.model}
            if messages and messages[0]["role"] == "system":
                body["instructions"] = messages.pop(0)["content"]
            body["input"] = request.prompt if request.prompt is not None else messages
            if request.max_output_tokens is not None:
                body["max_output_tokens"] = request.max_output_tokens
            for field in ("temperature", "top_p"):
                if getattr(request, field) is not None:
                    body[field] = getattr(request, field)
            if request.output_schema is not None:
                body["text"] = {"format": {"type": "json_schema", **json_schema_format(request.output_schema)}}
            return merge_options(body, request)
        if name == "completion":
            return self._completion_body(ref, request)
        body = {"model": ref.model, "input": request.value}
        if request.dimensions is not None:
            body["dimensions"] = request.dimensions
        return merge_options(body, request)

    def _completion_body(self, ref: ModelRef, request: BatchRequest) -> dict[str, Any]:
        body = chat_body(ref, request)
        del body["messages"]
        body["prompt"] = request.prompt
        return body

    def fill(self, ref: ModelRef) -> Any:
        return {
            "chat": fill_from_chat_completion,
            "responses": fill_from_response,
            "completion": fill_from_completion,
            "embedding": fill_from_embedding,
        }[ref.endpoint]
