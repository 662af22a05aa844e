"""OpenAI Batch API: JSONL upload to /v1/files, /v1/batches, output + error files.

Four endpoints: chat completions (the default for `openai/…` strings), responses (the default of
the `openai("…")` factory, as in the AI SDK), legacy completions, and embeddings.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar

from airflow_batchwork.adapters.base import (
    EndpointSpec,
    ProviderLimits,
    Refusal,
    first_unsupported,
    merge_options,
    unsupported,
)
from airflow_batchwork.adapters.content import BASE64, BOTH, CHAT_IMAGE_TYPES, PDF, ContentSupport
from airflow_batchwork.adapters.openai_compat import (
    USAGE_CACHE_HIT,
    OpenAIFilesBatchAdapter,
    chat_body,
    fill_from_chat_completion,
    fill_from_embedding,
    fill_from_response,
    fill_usage,
    finish_reason,
    json_schema_format,
    responses_items,
    responses_tools,
)
from airflow_batchwork.values.refs import ModelRef
from airflow_batchwork.values.requests import BatchRequest, PlainSpec
from airflow_batchwork.values.status import ItemResult

# `CreateResponse.max_output_tokens` has `minimum: 16` in OpenAI's spec; the API refuses less.
MIN_RESPONSES_OUTPUT_TOKENS = 16
# `stop` (chat and legacy completions) takes 1 to 4 sequences (`StopConfiguration`).
MAX_STOP_SEQUENCES = 4


def responses_input(request: BatchRequest) -> list[dict[str, Any]]:
    """The Responses `input` items of a conversation (system text goes to `instructions`).

    Content parts are typed by role, as the Responses API requires: `input_text` / `input_image` /
    `input_file` in user messages, `output_text` (with its required `annotations`) in assistant turns;
    string content stays a string; tool calls and results are `function_call` / `function_call_output`
    items (`openai_compat.responses_items`).
    """
    return responses_items(request)


def fill_from_completion(item: ItemResult, body: Mapping[str, Any]) -> None:
    choices = body.get("choices") or [{}]
    choice = choices[0] if isinstance(choices[0], Mapping) else {}
    item.text = choice.get("text")
    item.finish_reason = finish_reason(choice.get("finish_reason"))
    fill_usage(item, body.get("usage"), "prompt_tokens", "completion_tokens")


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
    batch_id_pattern: ClassVar[re.Pattern[str] | None] = re.compile(r"^batch_[A-Za-z0-9_-]{1,200}\Z")
    # Item error lines carry the HTTP error body's `error.code`/`type`, else the status code.
    retryable_error_codes: ClassVar[frozenset[str]] = frozenset({
        "rate_limit_exceeded", "server_error", "timeout", "service_unavailable", "429", "500", "502", "503", "504",
    })
    # Prompt caching is automatic for prompts of 1,024 tokens or more; every usage reports the cached part
    # (`prompt_tokens_details.cached_tokens`, Responses `input_tokens_details.cached_tokens`), which
    # `prompt_tokens`/`input_tokens` include (SDK `CompletionUsage`, `ResponseUsage`).
    prompt_cache_automatic: ClassVar[bool] = True
    cache_tokens_in_input: ClassVar[bool] = True
    cache_hit_pattern: ClassVar[str | None] = USAGE_CACHE_HIT

    def content_support(self, ref: ModelRef) -> ContentSupport:
        # OpenAI spec: chat `image_url` parts (URL or data URL) and `file` parts (`file_data`, inline only:
        # a URL needs an uploaded `file_id`); Responses `input_image` (`image_url`) and `input_file`
        # (`file_data` or `file_url`). Files: PDF, as the file-inputs guide documents. Function tools on both.
        if ref.endpoint == "chat":
            return ContentSupport(image_sources=BOTH, image_types=CHAT_IMAGE_TYPES, file_sources=BASE64,
                                  file_types=PDF, tools=True)
        if ref.endpoint == "responses":
            return ContentSupport(image_sources=BOTH, image_types=CHAT_IMAGE_TYPES, file_sources=BOTH,
                                  file_types=PDF, tools=True)
        return super().content_support(ref)

    def check_request(self, ref: ModelRef, request: BatchRequest) -> Refusal | None:
        name = ref.endpoint
        if name in ("chat", "completion") and request.stop_sequences is not None \
                and not 1 <= len(request.stop_sequences) <= MAX_STOP_SEQUENCES:
            return ("stop_sequences", f"{len(request.stop_sequences)} stop sequences; openai.{name} takes 1 to "
                    f"{MAX_STOP_SEQUENCES}", f"give 1 to {MAX_STOP_SEQUENCES} stop sequences, or none")
        if name == "chat":
            return first_unsupported(request, ("top_k", "dimensions"), "openai", name)
        if name == "responses":
            refusal = first_unsupported(
                request,
                ("top_k", "stop_sequences", "seed", "presence_penalty", "frequency_penalty", "dimensions"),
                "openai", name,
            )
            if refusal is None and request.max_output_tokens is not None \
                    and request.max_output_tokens < MIN_RESPONSES_OUTPUT_TOKENS:
                return ("max_output_tokens",
                        f"{request.max_output_tokens} is below the minimum of openai.responses "
                        f"({MIN_RESPONSES_OUTPUT_TOKENS})",
                        f"set max_output_tokens to {MIN_RESPONSES_OUTPUT_TOKENS} or more")
            return refusal
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

    def plain_refusal(self, ref: ModelRef, requests: Sequence[PlainSpec]) -> tuple[int, Refusal] | None:
        # Of a plain request, chat refuses only top_k, dimensions and a stop list of the wrong length.
        if ref.endpoint == "chat" and not any([r.top_k is not None or r.dimensions is not None
                                              or r.stop_sequences is not None for r in requests]):
            return None
        return super().plain_refusal(ref, requests)

    def plain_encoder(self, ref: ModelRef) -> Callable[[Sequence[PlainSpec]], list[bytes]]:
        if ref.endpoint == "chat":
            return self.plain_chat_lines(ref, max_tokens_field="max_completion_tokens")
        return super().plain_encoder(ref)

    def body(self, ref: ModelRef, request: BatchRequest) -> dict[str, Any]:
        name = ref.endpoint
        if name == "chat":
            return chat_body(ref, request, max_tokens_field="max_completion_tokens")
        if name == "responses":
            body: dict[str, Any] = {"model": ref.model}
            system = request.system_text()
            if system:
                body["instructions"] = system
            body["input"] = request.prompt if request.messages is None else responses_input(request)
            body.update(responses_tools(request))
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
