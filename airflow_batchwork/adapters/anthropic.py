"""Anthropic Message Batches: inline requests, `processing_status`, JSONL results at `results_url`."""

from __future__ import annotations

import base64
import json
import logging
import re
from collections.abc import AsyncIterator, Callable, Collection, Iterable, Mapping, Sequence, Sized
from datetime import UTC, datetime
from typing import Any, ClassVar

import pyarrow as pa
import pyarrow.compute as pc

from airflow_batchwork.adapters.arrow_lines import (
    complete_chunks,
    const,
    empty_batch,
    field,
    map_values,
    parse_chunks,
    read_lines,
)
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
from airflow_batchwork.adapters.content import BOTH, ContentSupport, media, tool_calls_json
from airflow_batchwork.adapters.openai_compat import (
    FINISH_REASONS,
    error_fields,
    plain_items,
)
from airflow_batchwork.values.calls import CallProgress
from airflow_batchwork.values.refs import ModelRef
from airflow_batchwork.values.requests import (
    BatchRequest,
    ContentPart,
    FilePart,
    ImagePart,
    NamedToolChoice,
    PlainSpec,
    PlainText,
    TextPart,
    ToolCallPart,
)
from airflow_batchwork.values.result_schema import ITEM_SCHEMA, items_to_batch
from airflow_batchwork.values.status import BatchState, BatchStatus, Counts, FinishReason, ItemResult

API_VERSION = "2023-06-01"
# The Messages API requires max_tokens; the AI SDK's Anthropic provider defaults it the same way.
DEFAULT_MAX_TOKENS = 4096

# Sampling parameters, per model (docs/providers.md, Anthropic, has the sources). The anthropic SDK dropped
# `temperature`, `top_p` and `top_k` from `MessageCreateParams` in 1.0.0; the API still honours them on
# models released before Claude Opus 4.7 and answers 400 to a non-default value on Opus 4.7 and every later
# model. Claude 4 models up to 4.6 take `temperature` or `top_p`, not both; Claude 3 models take all three.
# An id matching neither pattern is treated as a current model: the restriction applies going forward.
_SAMPLES_ALL = re.compile(r"^claude-3[-.]")
_SAMPLES_ONE = re.compile(r"^claude-(?:opus|sonnet|haiku)-4(?:-[0-6])?(?:-\d{8})?\Z")
# Assistant prefill (a conversation ending with an assistant turn) is refused with a 400 from Claude
# Opus 4.6 / Sonnet 4.6 on; it works up to the 4.5 models (SDK `MessageCreateParams.messages` docstring,
# Claude migration guide).
_PREFILL = re.compile(r"^claude-(?:3[-.]|(?:opus|sonnet|haiku)-4(?:-[0-5])?(?:-\d{8})?$)")
SAMPLING_FIELDS = ("temperature", "top_p", "top_k")
# `stop_reason` (anthropic SDK `StopReason`): the shared table plus the two Anthropic-only values.
STOP_REASONS: dict[str, FinishReason] = {
    **FINISH_REASONS, "model_context_window_exceeded": "length", "pause_turn": "other",
}
# The documented default of `temperature` (anthropic 0.125.0 docstring: "Defaults to 1.0"): sending it is
# the same as leaving it out, so it is dropped instead of refused on models that take no sampling parameters.
DEFAULT_TEMPERATURE = 1.0


def sampling_support(model: str) -> str:
    """"all" (temperature, top_p and top_k), "one" (temperature or top_p, and top_k) or "none"."""
    if _SAMPLES_ALL.match(model):
        return "all"
    if _SAMPLES_ONE.match(model):
        return "one"
    return "none"


def supports_prefill(model: str) -> bool:
    """Whether the model continues a conversation that ends with an assistant turn."""
    return bool(_PREFILL.match(model))


def _sampling_given(model: str, request: BatchRequest) -> list[str]:
    """The sampling fields that go on the wire for this model (the default temperature is left out where
    the model takes no sampling parameters)."""
    given = [name for name in SAMPLING_FIELDS if getattr(request, name) is not None]
    if sampling_support(model) == "none" and request.temperature == DEFAULT_TEMPERATURE:
        given.remove("temperature")
    return given


def check_sampling(model: str, request: BatchRequest) -> Refusal | None:
    """Why `request`'s sampling fields cannot go to `model`, or None."""
    given = _sampling_given(model, request)
    support = sampling_support(model)
    if given and support == "none":
        return (given[0], f"not accepted by the Anthropic model {model!r}: Claude Opus 4.7 and later models "
                f"answer 400 to any non-default temperature, top_p or top_k, and the anthropic SDK no longer "
                f"defines them", "remove it and steer the output with the prompt, or use a model that still "
                "samples (claude-sonnet-4-6, claude-haiku-4-5 or an older one)")
    if request.temperature is not None and request.temperature > 1:
        return ("temperature", f"{request.temperature} is out of Anthropic's range 0 to 1", "use a value from 0 to 1")
    if support == "one" and request.temperature is not None and request.top_p is not None:
        return ("top_p", f"cannot be combined with temperature on {model!r}: Claude 4 models take one of "
                "the two and answer 400 to both", "set temperature or top_p, not both")
    return None


log = logging.getLogger(__name__)

# When the price table does not name the model: the smallest minimum cacheable prefix of current models.
PROMPT_CACHE_MIN_TOKENS = 1024


def _cache_ttl(value: object) -> str:
    # True means the one-hour cache: a batch can take longer than five minutes to reach its items.
    return "5m" if value == "5m" else "1h"


def _usage(line: str | None) -> Mapping[str, Any] | None:
    if not line:
        return None
    try:
        data = json.loads(line)
    except ValueError:
        return None
    result = data.get("result") if isinstance(data, Mapping) else None
    message = result.get("message") if isinstance(result, Mapping) else None
    usage = message.get("usage") if isinstance(message, Mapping) else None
    return usage if isinstance(usage, Mapping) else None


class AnthropicAdapter(ProviderAdapter):
    provider: ClassVar[str] = "anthropic"
    endpoints: ClassVar[tuple[EndpointSpec, ...]] = (EndpointSpec("messages", "text", "/v1/messages"),)
    string_default: ClassVar[str] = "messages"
    factory_default: ClassVar[str] = "messages"
    key_env_vars: ClassVar[tuple[str, ...]] = ("ANTHROPIC_API_KEY",)
    default_base_url: ClassVar[str] = "https://api.anthropic.com"
    # 100,000 requests or 256 MB per batch (Anthropic batch guide), whichever comes first.
    limits: ClassVar[ProviderLimits] = ProviderLimits(100_000, 256 * 1024 * 1024, 256 * 1024 * 1024)
    console_url: ClassVar[str | None] = "https://console.anthropic.com/workspaces/default/batches/{batch_id}"
    batch_id_pattern: ClassVar[re.Pattern[str] | None] = re.compile(r"^msgbatch_[A-Za-z0-9_-]{1,200}\Z")
    # `error.type` of an errored result (Anthropic errors page: 429, 500, 529 overloaded, 504 timeout).
    retryable_error_codes: ClassVar[frozenset[str]] = frozenset({
        "rate_limit_error", "api_error", "overloaded_error", "timeout_error",
    })

    def auth_headers(self, api_key: str) -> dict[str, str]:
        return {"x-api-key": api_key, "anthropic-version": API_VERSION}

    def content_support(self, ref: ModelRef) -> ContentSupport:
        # Image blocks (base64 / URL sources: jpeg, png, gif, webp) and document blocks (base64 or URL PDF,
        # plain text): anthropic SDK `ImageBlockParam`, `DocumentBlockParam`.
        return ContentSupport(image_sources=BOTH, image_types=IMAGE_TYPES, file_sources=BOTH,
                              file_types=frozenset({"application/pdf", "text/plain"}), tools=True)

    def check_content(self, ref: ModelRef, request: BatchRequest) -> Refusal | None:
        refusal = super().check_content(ref, request)
        if refusal is None:
            for location, part in request.media_parts():
                found = media(part)
                if found.media_type == "text/plain" and found.kind == "url":
                    return (location, f"request {request.custom_id!r}: anthropic.messages takes plain-text "
                            "documents only inline", "give the text's bytes or a file URL so it is inlined")
        return refusal

    def check_request(self, ref: ModelRef, request: BatchRequest) -> Refusal | None:
        refusal = first_unsupported(
            request, ("seed", "presence_penalty", "frequency_penalty", "dimensions"), "anthropic", ref.endpoint
        )
        if refusal is None:
            refusal = check_sampling(ref.model, request)
        if refusal is None and request.messages is not None and not supports_prefill(ref.model):
            turns = request.conversation()
            if turns and turns[-1].role == "assistant":
                last = max(i for i, m in enumerate(request.messages) if m.role == "assistant")
                refusal = (f"messages[{last}]", f"the conversation ends with an assistant turn (prefill), which "
                           f"the Anthropic model {ref.model!r} answers with a 400", "end the conversation with a "
                           "user turn, or use a model that takes prefill (claude-sonnet-4-5, claude-haiku-4-5 "
                           "or an older one)")
        return refusal

    prompt_cache_control: ClassVar[bool] = True

    def primes(self, ref: ModelRef, request: BatchRequest) -> bool:
        system = request.system_text()
        if not (request.cache_prefix and system):
            return False
        from airflow_batchwork.values.pricing import load_prices
        from airflow_batchwork.values.recorder import CHARS_PER_TOKEN

        price = load_prices().lookup(ref)
        minimum = price.min_cache_tokens if price is not None else None
        # A prefix below the model's minimum is never cached: priming it would only add a batch.
        return len(system) / CHARS_PER_TOKEN >= (minimum or PROMPT_CACHE_MIN_TOKENS)

    @classmethod
    def cache_tokens(cls, responses: pa.Array) -> tuple[pa.Array, pa.Array, pa.Array] | None:
        # `result.message.usage` (SDK `Usage`): cache_read_input_tokens, and cache_creation_input_tokens split
        # by TTL in cache_creation{ephemeral_5m_input_tokens, ephemeral_1h_input_tokens}.
        read: list[int | None] = []
        five: list[int | None] = []
        hour: list[int | None] = []
        for line in responses.to_pylist():
            usage = _usage(line)
            if usage is None:
                read.append(None)
                five.append(None)
                hour.append(None)
                continue
            created = int_or_none(usage.get("cache_creation_input_tokens")) or 0
            split = usage.get("cache_creation")
            split = split if isinstance(split, Mapping) else {}
            one_hour = int_or_none(split.get("ephemeral_1h_input_tokens")) or 0
            read.append(int_or_none(usage.get("cache_read_input_tokens")) or 0)
            hour.append(one_hour)
            five.append(max(created - one_hour, 0))
        return pa.array(read, pa.int64()), pa.array(five, pa.int64()), pa.array(hour, pa.int64())

    def encode(self, ref: ModelRef, request: BatchRequest) -> bytes:
        params: dict[str, Any] = {
            "model": ref.model,
            "max_tokens": request.max_output_tokens or DEFAULT_MAX_TOKENS,
            "messages": [{"role": "user", "content": request.prompt or ""}] if request.messages is None else [
                {"role": "user" if m.role == "tool" else m.role, "content": m.content if isinstance(m.content, str)
                 else [_block(p) for p in m.content]}
                for m in request.conversation()
            ],
        }
        if request.tools:
            params["tools"] = [{"name": t.name, **({"description": t.description} if t.description else {}),
                                "input_schema": dict(t.parameters)} for t in request.tools]
        if request.tool_choice is not None and request.tools:
            choice = request.tool_choice
            params["tool_choice"] = {"type": "tool", "name": choice.tool_name} if isinstance(choice, NamedToolChoice) \
                else {"type": {"auto": "auto", "required": "any", "none": "none"}[choice]}
        system = request.system_text()
        if system and request.cache_prefix:
            # Prompt caching: the system prompt as one text block carrying `cache_control`
            # (SDK `TextBlockParam` + `CacheControlEphemeralParam{type, ttl}`).
            params["system"] = [{"type": "text", "text": system,
                                 "cache_control": {"type": "ephemeral", "ttl": _cache_ttl(request.cache_prefix)}}]
        elif system:
            params["system"] = system
        # Sampling fields only where the model takes them (check_request refused the rest); the SDK no
        # longer types them, so they are extra body keys, as its migration guide says to send them.
        for name in (*_sampling_given(ref.model, request), "stop_sequences"):
            if getattr(request, name) is not None:
                params[name] = getattr(request, name)
        if request.output_schema is not None:
            # Native structured outputs (`output_config.format`, anthropic SDK `OutputConfigParam`).
            params["output_config"] = {"format": {"type": "json_schema", "schema": dict(request.output_schema)}}
        return dumps({"custom_id": request.custom_id, "params": merge_options(params, request)})

    def plain_encoder(self, ref: ModelRef) -> Callable[[Sequence[PlainSpec]], list[bytes]]:
        """`encode` of plain requests (no messages, tools or output schema): the same dict, in the same key
        order, built in one call per request."""
        model = ref.model
        drop_default = sampling_support(model) == "none"  # as `_sampling_given`

        def item(request: PlainText) -> dict[str, Any]:
            params: dict[str, Any] = {"model": model, "max_tokens": request.max_output_tokens or DEFAULT_MAX_TOKENS,
                                      "messages": [{"role": "user", "content": request.prompt or ""}]}
            system = request.system
            if system and request.cache_prefix:
                params["system"] = [{"type": "text", "text": system,
                                     "cache_control": {"type": "ephemeral", "ttl": _cache_ttl(request.cache_prefix)}}]
            elif system:
                params["system"] = system
            for name in SAMPLING_FIELDS:
                value = getattr(request, name)
                if value is not None and not (drop_default and name == "temperature" and value == DEFAULT_TEMPERATURE):
                    params[name] = value
            if request.stop_sequences is not None:
                params["stop_sequences"] = request.stop_sequences
            if request.provider_options:
                params.update(request.provider_options)
            return {"custom_id": request.custom_id, "params": params}

        return plain_items(item)  # type: ignore[arg-type]

    async def create(self, ref: ModelRef, items: Iterable[bytes], *, metadata: Mapping[str, str]) -> str:
        # Message Batches have no metadata field; the request list is the whole body.
        body = b'{"requests":[' + b",".join(items) + b"]}"
        response = await self.http.request(
            "POST", "/v1/messages/batches", retry_safe=False, content=body,
            headers={"content-type": "application/json"},
        )
        return self.check_id(response.json().get("id"))

    # Message Batches carry no metadata, so an ambiguous create (answer lost, or the process killed before
    # the ledger write) is resolved by what the batch list does carry. Before each create the newest
    # batches are noted in the ledger (`calls.seen`, `calls.seen_from`); afterwards a batch not among them,
    # created no earlier than the newest noted one (or than the intent, less `adoption_window_skew`, when the
    # workspace had none), with exactly the shard's request count, not cancelled and not used by this job,
    # is ours. Another job's batch of the same size created during that one create call could match
    # instead (docs/reliability.md).
    adoption_window_skew: ClassVar[float] = 60.0
    snapshot_size: ClassVar[int] = 20

    def can_resolve(self, metadata: Mapping[str, str]) -> bool:
        return True

    async def create_tracked(self, ref: ModelRef, items: Iterable[bytes], *, metadata: Mapping[str, str],
                             progress: CallProgress) -> str:
        seen: list[str] = []
        seen_from: float | None = None
        async for batch in self._list_raw(limit=self.snapshot_size):
            created = _timestamp(batch.get("created_at"))
            if created is not None:
                seen_from = created if seen_from is None else max(seen_from, created)
            seen.append(str(batch.get("id")))
        previous = list(progress.get("seen") or [])
        progress.record(seen=sorted(set(previous) | set(seen)), seen_from=seen_from if seen_from is not None
                        else progress.get("seen_from"))
        return await self.create(ref, items, metadata=metadata)

    async def find_created(self, ref: ModelRef, items: Sized, *, metadata: Mapping[str, str],
                           progress: CallProgress, since: float, claimed: Collection[str] = ()) -> str | None:
        expected = len(items)
        seen = set(progress.get("seen") or [])
        seen_from = progress.get("seen_from")
        floor = float(seen_from) if isinstance(seen_from, int | float) else since - self.adoption_window_skew
        candidates: list[tuple[float, str]] = []
        async for batch in self._list_raw(limit=1000):
            created = _timestamp(batch.get("created_at"))
            if created is None:
                continue
            if created < floor:
                break  # newest first: everything further is older
            status = self._status(batch)
            if status.id in seen or status.id in claimed or batch.get("cancel_initiated_at") \
                    or status.counts.total != expected:
                continue
            candidates.append((created, status.id))
        if not candidates:
            return None
        candidates.sort()
        if len(candidates) > 1:
            log.warning("anthropic: %d batches of %d requests were created since this shard's intent (%s); "
                        "adopting the earliest, %s", len(candidates), expected,
                        ", ".join(i for _, i in candidates), candidates[0][1])
        return candidates[0][1]

    async def _list_raw(self, *, limit: int) -> AsyncIterator[dict[str, Any]]:
        after: str | None = None
        seen = 0
        while seen < limit:
            params: dict[str, Any] = {"limit": min(1000, limit - seen)}
            if after:
                params["after_id"] = after
            page = (await self.http.request("GET", "/v1/messages/batches", retry_safe=True, params=params)).json()
            for batch in page.get("data") or []:
                seen += 1
                yield batch
            if not page.get("has_more") or not page.get("last_id"):
                return
            after = self.check_id(page["last_id"])

    async def _batch(self, batch_id: str) -> dict[str, Any]:
        response = await self.http.request("GET", f"/v1/messages/batches/{self.check_id(batch_id)}", retry_safe=True)
        return dict(response.json())

    async def status(self, batch_id: str) -> BatchStatus:
        return self._status(await self._batch(batch_id))

    def _status(self, batch: Mapping[str, Any]) -> BatchStatus:
        raw = str(batch.get("processing_status"))
        c = batch.get("request_counts") or {}
        counts = Counts(
            succeeded=int_or_none(c.get("succeeded")) or 0, errored=int_or_none(c.get("errored")) or 0,
            expired=int_or_none(c.get("expired")) or 0, canceled=int_or_none(c.get("canceled")) or 0,
            processing=int_or_none(c.get("processing")) or 0,
        )
        counts = Counts(counts.succeeded + counts.errored + counts.expired + counts.canceled + counts.processing,
                        *counts.as_tuple()[1:])
        state: BatchState
        if raw == "in_progress":
            state = "in_progress"
        elif raw == "canceling":
            state = "cancelling"
        elif raw == "ended" and batch.get("cancel_initiated_at"):
            state = "cancelled"
        elif raw == "ended" and counts.expired and not counts.succeeded and not counts.errored:
            state = "expired"
        elif raw == "ended":
            state = "completed"
        else:
            state = "in_progress"
        return BatchStatus(id=self.check_id(batch.get("id")), state=state, counts=counts, raw_state=raw)

    async def _result_chunks(self, batch_id: str) -> AsyncIterator[bytes]:
        batch = await self._batch(batch_id)
        url = batch.get("results_url")
        if not url:
            return
        url = self.http.check_origin(str(url), what="results_url")
        async with self.http.stream("GET", url, headers={"accept": "application/binary"}) as response:
            async for chunk in complete_chunks(response.aiter_bytes()):
                yield chunk

    def read_result_line(self, ref: ModelRef, batch_id: str, line: str, state: str) -> ItemResult | None:
        return parse_line(line, batch_id)

    async def results(self, ref: ModelRef, batch_id: str) -> AsyncIterator[ItemResult]:
        async for chunk in self._result_chunks(batch_id):
            for item in self.parse_result_text(ref, batch_id, chunk.decode("utf-8", errors="replace")):
                yield item

    async def result_batches(self, ref: ModelRef, batch_id: str, *, rows: int = 10_000
                             ) -> AsyncIterator[pa.RecordBatch]:
        """Vectorized where every line reads cleanly, line by line (with salvage) where not."""
        def parse(chunk: bytes) -> pa.RecordBatch:
            records = parse_results_chunk(chunk, batch_id)
            if records is None:
                records = items_to_batch(self.parse_result_text(ref, batch_id, chunk.decode("utf-8", errors="replace")))
            return records

        async for records in parse_chunks(self._result_chunks(batch_id), parse, RESULT_LINE_SCHEMA):
            yield records

    async def cancel(self, batch_id: str) -> BatchStatus:
        response = await self.http.request(
            "POST", f"/v1/messages/batches/{self.check_id(batch_id)}/cancel", retry_safe=True
        )
        return self._status(response.json())

    async def list_batches(self, *, limit: int = 100) -> AsyncIterator[BatchStatus]:
        async for batch in self._list_raw(limit=limit):
            yield self._status(batch)


def _timestamp(value: object) -> float | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).timestamp()


_ERROR = pa.struct([("type", pa.string()), ("message", pa.string())])
RESULT_LINE_SCHEMA = pa.schema([
    ("custom_id", pa.string()),
    ("result", pa.struct([
        ("type", pa.string()),
        ("message", pa.struct([
            ("content", pa.list_(pa.struct([("type", pa.string()), ("text", pa.string())]))),
            ("stop_reason", pa.string()),
            ("usage", pa.struct([("input_tokens", pa.int64()), ("output_tokens", pa.int64())])),
        ])),
        ("error", pa.struct([("type", pa.string()), ("error", _ERROR)])),
    ])),
])


def parse_results_chunk(chunk: bytes, batch_id: str) -> pa.RecordBatch | None:
    """Result columns for a chunk of result lines, computed in Arrow; None to fall back to `parse_line`."""
    parsed = read_lines(chunk, RESULT_LINE_SCHEMA)
    if parsed is None:
        return None
    lines, table = parsed
    n = len(lines)
    if n == 0:
        return empty_batch()
    result = table.column("result").combine_chunks()
    kind = field(result, "type")
    content = field(result, "message", "content")
    blocks = pc.list_flatten(content)
    if len(blocks) and not pc.all(pc.equal(field(blocks, "type"), "text")).as_py():
        return None  # tool_use or thinking blocks: the line parser picks the text blocks out
    texts = pa.ListArray.from_arrays(content.offsets, field(blocks, "text"), mask=content.is_null())
    ok = pc.fill_null(pc.equal(kind, "succeeded"), False)
    gone = pc.fill_null(pc.is_in(kind, pa.array(["expired", "canceled"])), False)
    status = pc.if_else(ok, "succeeded", pc.if_else(gone, kind, "errored"))
    errored = pc.equal(status, "errored")
    usage = field(result, "message", "usage")
    tokens_in, tokens_out = field(usage, "input_tokens"), field(usage, "output_tokens")
    nulls_str, nulls_int = pa.nulls(n, pa.string()), pa.nulls(n, pa.int64())
    error = field(result, "error")
    columns = {
        "custom_id": table.column("custom_id").combine_chunks(),
        "batch_id": const(batch_id, n),
        "status": status,
        "text": pc.if_else(ok, pc.coalesce(pc.binary_join(texts, ""), const("", n)), nulls_str),
        "finish_reason": pc.if_else(ok, map_values(field(result, "message", "stop_reason"), dict(STOP_REASONS)),
                                    pc.if_else(errored, const("error", n), nulls_str)),
        "input_tokens": pc.if_else(ok, tokens_in, nulls_int),
        "output_tokens": pc.if_else(ok, tokens_out, nulls_int),
        "total_tokens": pc.if_else(ok, pc.add(tokens_in, pc.fill_null(tokens_out, 0)), nulls_int),
        "error_code": pc.if_else(ok, nulls_str, pc.if_else(gone, kind, pc.coalesce(
            field(error, "error", "type"), field(error, "type"), const("error", n)))),
        "error_message": pc.if_else(ok, nulls_str, pc.if_else(
            gone, pc.binary_join_element_wise(const("the batch was ", n), kind,
                                              const(" before this request ran", n), ""),
            pc.coalesce(field(error, "error", "message"), const("the provider returned no error message", n)))),
        "response": lines,
        "embedding": pa.nulls(n, ITEM_SCHEMA.field("embedding").type),
        "tool_calls": pa.nulls(n, pa.string()),
    }
    return pa.RecordBatch.from_arrays([columns[f.name] for f in ITEM_SCHEMA], schema=ITEM_SCHEMA)


IMAGE_TYPES = frozenset({"image/jpeg", "image/png", "image/gif", "image/webp"})


def _block(part: ContentPart) -> dict[str, Any]:
    """One content part as an Anthropic content block."""
    if isinstance(part, TextPart):
        return {"type": "text", "text": part.text}
    if isinstance(part, ImagePart | FilePart):
        found = media(part)
        source: dict[str, Any]
        if found.kind == "url":
            source = {"type": "url", "url": found.value}
        elif found.media_type == "text/plain":
            source = {"type": "text", "media_type": "text/plain",
                      "data": base64.b64decode(found.value).decode("utf-8", errors="replace")}
        else:
            source = {"type": "base64", "media_type": found.media_type, "data": found.value}
        if isinstance(part, ImagePart):
            return {"type": "image", "source": source}
        block: dict[str, Any] = {"type": "document", "source": source}
        if part.filename:
            block["title"] = part.filename
        return block
    if isinstance(part, ToolCallPart):
        return {"type": "tool_use", "id": part.tool_call_id, "name": part.tool_name, "input": dict(part.input)}
    block = {"type": "tool_result", "tool_use_id": part.tool_call_id, "content": part.output_text()}
    if part.is_error:
        block["is_error"] = True
    return block


def parse_line(line: str, batch_id: str) -> ItemResult | None:
    """One `{custom_id, result: {type, message | error}}` line."""
    data = json.loads(line)
    custom_id = data.get("custom_id")
    if not isinstance(custom_id, str):
        return None
    result = data.get("result") or {}
    kind = result.get("type")
    item = ItemResult(custom_id=custom_id, status="succeeded", batch_id=batch_id, response=line)
    if kind == "succeeded":
        message = result.get("message") or {}
        texts = [b.get("text", "") for b in message.get("content") or []
                 if isinstance(b, Mapping) and b.get("type") == "text"]
        item.text = "".join(texts)
        item.tool_calls = tool_calls_json(custom_id, (
            (b.get("id"), b.get("name"), b.get("input")) for b in message.get("content") or []
            if isinstance(b, Mapping) and b.get("type") == "tool_use"))
        stop = message.get("stop_reason")
        item.finish_reason = None if stop is None else STOP_REASONS.get(str(stop), "other")
        usage = message.get("usage") or {}
        item.input_tokens = int_or_none(usage.get("input_tokens"))
        item.output_tokens = int_or_none(usage.get("output_tokens"))
        if item.input_tokens is not None:
            item.total_tokens = item.input_tokens + (item.output_tokens or 0)
        return item
    if kind in ("expired", "canceled"):
        item.status = "expired" if kind == "expired" else "canceled"
        item.error_code = kind
        item.error_message = f"the batch was {kind} before this request ran"
    else:
        code, message_text = error_fields(result.get("error"))
        item.status, item.finish_reason = "errored", "error"
        item.error_code = code or "error"
        item.error_message = message_text or "the provider returned no error message"
    return item
