"""OpenAI Files + Batch API, served under ``/openai/v1`` (reference §2).

Wire behaviour worth knowing:

- Request-level problems (unknown file, wrong purpose, bad endpoint / completion_window / metadata)
  are a 400 at ``POST /batches``. Problems *inside* the input file (bad JSON, missing fields, url or
  model mismatch, duplicate custom_id, empty file, too many requests) are reported the way OpenAI
  does: the batch is created, stays ``validating`` briefly, then turns ``failed`` with
  ``errors.data[] = {code, line, message, param}``.
- Results: succeeded lines go to the output file, every other line to the error file; a file is
  only created when it has lines. ``[[error]]`` lines carry ``response.status_code`` 400 with an
  OpenAI error body; ``[[expire]]`` lines carry ``error.code = "batch_expired"`` (and the batch
  ends ``expired``); requests a cancel stopped carry ``error.code = "batch_cancelled"``.
- ``/v1/completions`` honours the real default ``max_tokens`` of 16.
- Strict, by OpenAI's own spec (``schemas/openai.json``): a line whose body its endpoint's request type
  refuses (unknown key, wrong type, bad enum, a Responses content part that does not fit the message's
  role) gets that line's 400 ``invalid_value`` / ``unknown_parameter``; an unknown key in a line's
  envelope fails the batch; an unknown key in ``POST /batches`` is a 400. Subclasses for
  OpenAI-compatible providers skip this unless they override :meth:`OpenAIBatchRoutes.request_problem`,
  :meth:`~OpenAIBatchRoutes.line_problem` and :meth:`~OpenAIBatchRoutes.create_batch_problem`.

OpenAI-compatible providers reuse :class:`OpenAIBatchRoutes`, :func:`check_request` and
:func:`error_body` with their own provider name, prefix and limits.
"""

from __future__ import annotations

import base64
import json
import struct
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from functools import cache
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

import airflow_batchwork.testing.conformance as conformance
import airflow_batchwork.testing.echo as echo
import airflow_batchwork.testing.providers.chat_tools as chat_tools
from airflow_batchwork.testing.providers.base import (
    ApiError,
    ProviderSpec,
    Rejected,
    bearer_key,
    error_fields,
    find_batch,
    paginate,
    query_int,
    read_json,
    response_format_schema,
    text_format_schema,
    unix,
)
from airflow_batchwork.testing.providers.files import FileRoutes, FileWire, jsonl_lines, short_file_object
from airflow_batchwork.testing.store import (
    BatchError,
    BatchView,
    Item,
    ItemResult,
    Outcome,
    Store,
    StoredFile,
)

__all__ = [
    "REQUEST_TYPES", "SPEC", "SUPPORTED_ENDPOINTS", "OpenAIBatchRoutes", "Rejected", "check_request", "error_body",
    "request_problem",
]

NAME = "openai"

SUPPORTED_ENDPOINTS: tuple[str, ...] = (
    "/v1/chat/completions",
    "/v1/responses",
    "/v1/completions",
    "/v1/embeddings",
)
# Accepted by the real API but not emulated: a clear 400 beats a silently wrong result.
_UNEMULATED_ENDPOINTS = ("/v1/moderations", "/v1/images/generations", "/v1/images/edits", "/v1/videos")
_FILE_PURPOSES = (
    "assistants",
    "assistants_output",
    "batch",
    "batch_output",
    "fine-tune",
    "fine-tune-results",
    "vision",
    "user_data",
)
MAX_REQUESTS_PER_BATCH = 50_000
MAX_EMBEDDING_INPUTS_PER_BATCH = 50_000
_DAY = 24 * 3600
_BATCH_FILE_TTL = 30 * _DAY
_COMPLETIONS_DEFAULT_MAX_TOKENS = 16

_STATUS = {
    "validating": "validating",
    "in_progress": "in_progress",
    "finalizing": "finalizing",
    "ended": "completed",
    "expired": "expired",
    "failed": "failed",
    "cancelling": "cancelling",
    "cancelled": "cancelled",
}

_ERROR_TYPES = {429: "requests"}


# -- auth and errors ------------------------------------------------------------------------------


def check_request(request: Request) -> None:
    """Bearer auth: a missing, empty or ``invalid`` key is a 401 ``invalid_api_key``."""
    key = bearer_key(request)
    if not key:
        raise ApiError(
            401,
            "You didn't provide an API key. You need to provide your API key in an Authorization header "
            "using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
            code="invalid_api_key",
        )
    if key == "invalid":
        raise ApiError(401, f"Incorrect API key provided: {key}.", code="invalid_api_key")


def error_body(error: ApiError, request_id: str) -> dict[str, Any]:
    """``{"error": {message, type, param, code}}``."""
    return {"error": error_fields(error, _ERROR_TYPES)}


def _bad_request(message: str, param: str | None = None, code: str | None = "invalid_value") -> ApiError:
    return ApiError(400, message, param=param, code=code)


# -- strictness: what OpenAI's spec refuses -------------------------------------------------------

# The request type (in schemas/openai.json) that a batch line's body must be, per endpoint.
REQUEST_TYPES: dict[str, str] = {
    "/v1/chat/completions": "CreateChatCompletionRequest",
    "/v1/responses": "CreateResponse",
    "/v1/completions": "CreateCompletionRequest",
    "/v1/embeddings": "CreateEmbeddingRequest",
}
# Responses content part types by message role (the API refuses any other with `invalid_value`).
_INPUT_PARTS = ("input_text", "input_image", "input_file")
_ASSISTANT_PARTS = ("output_text", "refusal")


def _supported(values: Sequence[str]) -> str:
    quoted = [repr(v) for v in values]
    return quoted[0] if len(quoted) == 1 else ", ".join(quoted[:-1]) + f" and {quoted[-1]}"


def _content_part_problem(body: Mapping[str, Any]) -> Rejected | None:
    """A Responses input message whose content part type does not fit its role."""
    items = body.get("input")
    if not isinstance(items, list):
        return None
    for i, item in enumerate(items):
        if not isinstance(item, dict) or item.get("type", "message") != "message":
            continue
        content = item.get("content")
        if not isinstance(content, list):
            continue
        allowed = _ASSISTANT_PARTS if item.get("role") == "assistant" else _INPUT_PARTS
        for j, part in enumerate(content):
            kind = part.get("type") if isinstance(part, dict) else None
            if kind not in allowed:
                return Rejected(
                    f"Invalid value: {kind!r}. Supported values are: {_supported(allowed)}.",
                    f"input[{i}].content[{j}]",
                )
    return None


@cache
def _validator(name: str) -> Draft202012Validator:
    return Draft202012Validator({"$defs": conformance.document(NAME)["$defs"], "$ref": f"#/$defs/{name}"})


def _param(path: Sequence[object]) -> str | None:
    text = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path).lstrip(".")
    return text or None


_DISCRIMINATORS = ("type", "role")


def _explain(error: ValidationError) -> Rejected:
    """One schema error as OpenAI words it. A union (``anyOf``) is explained by the variant the value
    was meant to be: variants refused on their ``type``/``role`` are passed over; if every variant is,
    the value of that key is what is invalid."""
    def misses(sub: ValidationError, depth: int) -> bool:
        return sub.validator in ("enum", "const") and len(sub.absolute_path) == depth + 1 \
            and sub.absolute_path[-1] in _DISCRIMINATORS

    while error.validator == "anyOf" and error.context:
        depth = len(error.absolute_path)
        variants: dict[object, list[ValidationError]] = {}
        for sub in error.context:
            variants.setdefault(sub.relative_schema_path[0], []).append(sub)

        fitting = [subs for subs in variants.values() if not any(misses(sub, depth) for sub in subs)]
        if not fitting:
            missed = [sub for subs in variants.values() for sub in subs if misses(sub, depth)]
            key = missed[0].absolute_path[-1]
            values: list[object] = []
            for sub in missed:
                if sub.absolute_path[-1] == key:
                    allowed = sub.validator_value if sub.validator == "enum" else [sub.validator_value]
                    values += [v for v in allowed if v not in values]
            return Rejected(f"Invalid value: {missed[0].instance!r}. Supported values are: "
                            f"{_supported([str(v) for v in values])}.", _param(missed[0].absolute_path))
        subs = min(fitting, key=lambda group: (-max(len(sub.absolute_path) for sub in group), len(group)))
        error = max(subs, key=lambda sub: len(sub.absolute_path))
    param = _param(error.absolute_path)
    if error.validator == "additionalProperties":
        known = error.schema.get("properties") or {}
        extra = sorted(key for key in error.instance if key not in known) if isinstance(error.instance, dict) else []
        name = ".".join(filter(None, [param, extra[0] if extra else "?"]))
        return Rejected(f"Unknown parameter: '{name}'.", name, "unknown_parameter")
    if error.validator == "required":
        missing = error.message.split("'")[1] if "'" in error.message else "?"
        name = ".".join(filter(None, [param, missing]))
        return Rejected(f"Missing required parameter: '{name}'.", name, "missing_required_parameter")
    return Rejected(f"Invalid value for '{param or 'body'}': {error.message}.", param)


def _schema_problem(name: str, instance: object) -> Rejected | None:
    """The first way ``instance`` breaks OpenAI's type ``name``, as the API words it."""
    errors = sorted(_validator(name).iter_errors(instance), key=lambda e: [str(p) for p in e.absolute_path])
    if not errors:
        return None
    problem = _explain(errors[0])
    if len(errors) > 1:
        problem.message += f" ({len(errors) - 1} more problems)"
    return problem


def line_problem(line: Mapping[str, Any]) -> Rejected | None:
    """A key ``BatchRequestInput`` does not define (the other envelope checks have their own codes)."""
    known = conformance.document(NAME)["$defs"]["BatchRequestInput"]["properties"]
    unknown = sorted(key for key in line if key not in known)
    if unknown:
        return Rejected(f"Unknown parameter: '{unknown[0]}'.", unknown[0], "unknown_parameter")
    return None


# Free-text keys: the spec puts no constraint on their strings that matters here (only a 10 MB cap on
# one part type), so bodies that differ only in them are judged once (``_shape``).
_FREE_TEXT = frozenset({"content", "text", "prompt", "input", "instructions"})
_SHAPES_VALID: set[str] = set()
_MAX_SHAPES = 10_000


def _shape(value: object, key: str | None = None) -> object:
    if isinstance(value, str) and key in _FREE_TEXT:
        return "x" if value else ""
    if isinstance(value, dict):
        return {k: _shape(v, k) for k, v in value.items()}
    if isinstance(value, list):
        return [_shape(v, key) for v in value]
    return value


def request_problem(endpoint: str, body: Mapping[str, Any]) -> Rejected | None:
    """Why OpenAI would refuse this request body on ``endpoint`` (spec type, then role-typed parts)."""
    name = REQUEST_TYPES.get(endpoint)
    if name is None:
        return None
    if endpoint == "/v1/responses":
        problem = _content_part_problem(body)
        if problem is not None:
            return problem
    shape = f"{name} " + json.dumps(_shape(body), sort_keys=True)
    if shape in _SHAPES_VALID:
        return None
    problem = _schema_problem(name, body)
    if problem is None and len(_SHAPES_VALID) < _MAX_SHAPES:
        _SHAPES_VALID.add(shape)
    return problem


# -- input validation -----------------------------------------------------------------------------


def _validate_metadata(metadata: object) -> dict[str, str] | None:
    if metadata is None:
        return None
    if not isinstance(metadata, dict):
        raise _bad_request("Invalid type for 'metadata': expected an object.", "metadata", "invalid_type")
    if len(metadata) > 16:
        raise _bad_request("Invalid 'metadata': at most 16 key-value pairs are allowed.", "metadata")
    for key, value in metadata.items():
        if len(key) > 64:
            raise _bad_request(f"Invalid 'metadata': key {key!r} is longer than 64 characters.", "metadata")
        if not isinstance(value, str) or len(value) > 512:
            raise _bad_request(
                f"Invalid 'metadata': value of {key!r} must be a string of at most 512 characters.",
                "metadata",
            )
    return metadata


def _embedding_input_count(body: Mapping[str, Any]) -> int:
    value = body.get("input")
    if isinstance(value, list) and value and not all(isinstance(v, int) for v in value):
        return len(value)
    return 1


def _parse_input_file(
    data: bytes, endpoint: str, check_line: Callable[[Mapping[str, Any]], Rejected | None] | None = None
) -> tuple[list[tuple[str, Mapping[str, Any]]], str | None, list[BatchError]]:
    """Parse and validate a batch input file: (items, model, errors).

    ``check_line`` (if given) judges each parsed line's envelope; a problem fails the batch like the
    built-in checks do (``errors.data[]`` naming the line)."""
    items: list[tuple[str, Mapping[str, Any]]] = []
    errors: list[BatchError] = []
    seen: set[str] = set()
    model: str | None = None
    for lineno, _, line in jsonl_lines(data.decode("utf-8", errors="replace")):
        if not isinstance(line, dict):
            errors.append(
                BatchError("invalid_json_line", "This line is not parseable as valid JSON.", lineno)
            )
            continue
        custom_id = line.get("custom_id")
        body = line.get("body")
        envelope = check_line(line) if check_line is not None else None
        if envelope is not None:
            errors.append(BatchError(envelope.code or "invalid_request", envelope.message, lineno, envelope.param))
        if not isinstance(custom_id, str) or not custom_id:
            errors.append(
                BatchError("missing_required_parameter", "Missing 'custom_id'.", lineno, "custom_id")
            )
            continue
        if line.get("method") != "POST":
            errors.append(
                BatchError("invalid_method", "Only 'POST' is supported as 'method'.", lineno, "method")
            )
        if line.get("url") != endpoint:
            errors.append(
                BatchError(
                    "url_mismatch",
                    f"The provided URL {line.get('url')!r} does not match the batch endpoint {endpoint!r}.",
                    lineno,
                    "url",
                )
            )
        if custom_id in seen:
            errors.append(
                BatchError(
                    "duplicate_custom_id",
                    f"The custom_id {custom_id!r} is a duplicate of another request; "
                    "custom_ids must be unique.",
                    lineno,
                    "custom_id",
                )
            )
        seen.add(custom_id)
        if not isinstance(body, dict):
            errors.append(BatchError("missing_required_parameter", "Missing object 'body'.", lineno, "body"))
            continue
        line_model = body.get("model")
        if not isinstance(line_model, str) or not line_model:
            errors.append(
                BatchError("missing_required_parameter", "Missing 'body.model'.", lineno, "body.model")
            )
            continue
        # OpenAI requires every request in a batch file to target the same model.
        if model is None:
            model = line_model
        elif line_model != model:
            errors.append(
                BatchError(
                    "model_mismatch",
                    f"The model {line_model!r} differs from {model!r} used by earlier lines; "
                    "a batch file may only contain requests for one model.",
                    lineno,
                    "body.model",
                )
            )
        items.append((custom_id, body))
    if not items and not errors:
        errors.append(BatchError("empty_file", "The input file is empty."))
    if len(items) > MAX_REQUESTS_PER_BATCH:
        errors.append(
            BatchError(
                "too_many_tasks",
                f"The batch has {len(items)} requests; at most {MAX_REQUESTS_PER_BATCH} are allowed.",
            )
        )
    if endpoint == "/v1/embeddings":
        inputs = sum(_embedding_input_count(body) for _, body in items)
        if inputs > MAX_EMBEDDING_INPUTS_PER_BATCH:
            errors.append(
                BatchError(
                    "too_many_tasks",
                    f"The batch has {inputs} embedding inputs; "
                    f"at most {MAX_EMBEDDING_INPUTS_PER_BATCH} are allowed.",
                )
            )
    return items, model, errors


# -- endpoint bodies (the echo model dressed as each endpoint's response) ------------------------


def _max_tokens(body: Mapping[str, Any], *names: str, default: int | None = None) -> int | None:
    for name in names:
        value = body.get(name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise Rejected(f"Invalid '{name}': integer below minimum value. Expected a value >= 1.", name)
        return value
    return default


_EndpointRenderer = Callable[[Mapping[str, Any], Callable[[str], str], int], tuple[dict[str, Any], int, int]]


def _chat_completion(
    body: Mapping[str, Any], new_id: Callable[[str], str], now: int
) -> tuple[dict[str, Any], int, int]:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages or not all(isinstance(m, dict) for m in messages):
        raise Rejected("Invalid 'messages': expected a non-empty array of message objects.", "messages")
    try:
        reply = chat_tools.reply(body, messages, _max_tokens(body, "max_completion_tokens", "max_tokens"),
                                 response_format_schema(body))
    except chat_tools.ToolChoiceError as exc:
        raise Rejected(str(exc), "tool_choice") from None
    message: dict[str, Any] = {"role": "assistant", "content": reply.text, "refusal": None, "annotations": []}
    if reply.tool_call is not None:
        message = {"role": "assistant", "content": None, "refusal": None, "annotations": [],
                   "tool_calls": chat_tools.tool_calls(reply.tool_call, new_id)}
    response = {
        "id": new_id("chatcmpl-"),
        "object": "chat.completion",
        "created": now,
        "model": body["model"],
        "choices": [
            {
                "index": 0,
                "message": message,
                "logprobs": None,
                "finish_reason": chat_tools.finish_reason(reply),
            }
        ],
        "usage": chat_tools.usage(
            reply,
            prompt_tokens_details={"cached_tokens": 0, "cache_write_tokens": 0, "audio_tokens": 0},
            completion_tokens_details={
                "reasoning_tokens": 0,
                "audio_tokens": 0,
                "accepted_prediction_tokens": 0,
                "rejected_prediction_tokens": 0,
            },
        ),
        "service_tier": "default",
        "system_fingerprint": "fp_batchwork_emulator",
    }
    return response, reply.input_tokens, reply.output_tokens


def _responses_messages(value: object) -> list[Mapping[str, Any]]:
    if isinstance(value, str):
        return [{"role": "user", "content": value}]
    if isinstance(value, list):
        # Only message items carry text; other item types (tool outputs, reasoning) are ignored.
        return [
            item
            for item in value
            if isinstance(item, dict) and item.get("type", "message") == "message" and "role" in item
        ]
    raise Rejected("Invalid 'input': expected a string or an array of input items.", "input")


def _response(
    body: Mapping[str, Any], new_id: Callable[[str], str], now: int
) -> tuple[dict[str, Any], int, int]:
    max_output_tokens = _max_tokens(body, "max_output_tokens")
    instructions = body.get("instructions")
    messages = _responses_messages(body.get("input"))
    try:
        chat_tools.check_tool_results(body["input"] if isinstance(body.get("input"), list) else [])
        forced = chat_tools.forced_tool(body)
    except chat_tools.ToolChoiceError as exc:
        raise Rejected(str(exc), "tool_choice") from None
    reply = echo.generate(
        messages, system=instructions, max_tokens=max_output_tokens, schema=text_format_schema(body),
        media=chat_tools.media(messages), tool=forced,
    )
    output: list[dict[str, Any]] = [{
        "type": "message",
        "id": new_id("msg_"),
        "status": "incomplete" if reply.truncated else "completed",
        "role": "assistant",
        "content": [{"type": "output_text", "text": reply.text, "annotations": [], "logprobs": []}],
    }]
    if reply.tool_call is not None:
        output = [{"type": "function_call", "id": new_id("fc_"), "call_id": new_id("call_"),
                   "name": reply.tool_call.name, "arguments": reply.tool_call.arguments_json,
                   "status": "completed"}]
    status = "incomplete" if reply.truncated else "completed"
    response = {
        "id": new_id("resp_"),
        "object": "response",
        "created_at": now,
        "status": status,
        "background": False,
        "error": None,
        "incomplete_details": {"reason": "max_output_tokens"} if reply.truncated else None,
        "instructions": instructions,
        "max_output_tokens": max_output_tokens,
        "model": body["model"],
        "output": output,
        "parallel_tool_calls": True,
        "previous_response_id": None,
        "reasoning": {"effort": None, "summary": None},
        "service_tier": "default",
        "temperature": body.get("temperature", 1.0),
        "text": body.get("text") or {"format": {"type": "text"}},
        "tool_choice": body.get("tool_choice", "auto"),
        "tools": body.get("tools") or [],
        "top_p": body.get("top_p", 1.0),
        "truncation": "disabled",
        "usage": {
            "input_tokens": reply.input_tokens,
            "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
            "output_tokens": reply.output_tokens,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": reply.total_tokens,
        },
        "metadata": body.get("metadata") or {},
    }
    return response, reply.input_tokens, reply.output_tokens


def _completion(
    body: Mapping[str, Any], new_id: Callable[[str], str], now: int
) -> tuple[dict[str, Any], int, int]:
    prompt = body.get("prompt")
    prompts = [prompt] if isinstance(prompt, str) else prompt
    if not isinstance(prompts, list) or not prompts or not all(isinstance(p, str) for p in prompts):
        raise Rejected("Invalid 'prompt': expected a string or an array of strings.", "prompt")
    max_tokens = _max_tokens(body, "max_tokens", default=_COMPLETIONS_DEFAULT_MAX_TOKENS)
    replies = [echo.generate([{"role": "user", "content": p}], max_tokens=max_tokens) for p in prompts]
    input_tokens = sum(r.input_tokens for r in replies)
    output_tokens = sum(r.output_tokens for r in replies)
    response = {
        "id": new_id("cmpl-"),
        "object": "text_completion",
        "created": now,
        "model": body["model"],
        "choices": [
            {
                "text": r.text,
                "index": i,
                "logprobs": None,
                "finish_reason": "length" if r.truncated else "stop",
            }
            for i, r in enumerate(replies)
        ],
        "usage": {
            "prompt_tokens": input_tokens,
            "completion_tokens": output_tokens,
            "total_tokens": input_tokens + output_tokens,
        },
        "system_fingerprint": "fp_batchwork_emulator",
    }
    return response, input_tokens, output_tokens


def _embedding_texts(value: object) -> list[str]:
    if isinstance(value, str):
        texts = [value]
    elif isinstance(value, list) and value and all(isinstance(v, int) for v in value):
        texts = [" ".join(map(str, value))]  # one pre-tokenized input
    elif isinstance(value, list) and value and all(isinstance(v, str | list) for v in value):
        texts = [v if isinstance(v, str) else " ".join(map(str, v)) for v in value]
    else:
        raise Rejected("Invalid 'input': expected a string or an array of strings.", "input")
    if any(not text for text in texts):
        raise Rejected("Invalid 'input': inputs must not be empty strings.", "input")
    return texts


def _embeddings(
    body: Mapping[str, Any], new_id: Callable[[str], str], now: int
) -> tuple[dict[str, Any], int, int]:
    texts = _embedding_texts(body.get("input"))
    dimensions = _max_tokens(body, "dimensions", default=echo.DEFAULT_EMBEDDING_DIMENSIONS)
    assert dimensions is not None
    encoding = body.get("encoding_format", "float")
    if encoding not in ("float", "base64"):
        raise Rejected("Invalid 'encoding_format': expected 'float' or 'base64'.", "encoding_format")
    data = []
    for index, text in enumerate(texts):
        vector: list[float] | str = echo.embed(text, dimensions)
        if encoding == "base64":
            vector = base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode("ascii")
        data.append({"object": "embedding", "index": index, "embedding": vector})
    tokens = echo.count_words(*texts)
    response = {
        "object": "list",
        "data": data,
        "model": body["model"],
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }
    return response, tokens, 0


_ENDPOINTS: dict[str, _EndpointRenderer] = {
    "/v1/chat/completions": _chat_completion,
    "/v1/responses": _response,
    "/v1/completions": _completion,
    "/v1/embeddings": _embeddings,
}


# -- objects --------------------------------------------------------------------------------------


def _file_object(stored: StoredFile) -> dict[str, Any]:
    expires_at = stored.created_at + _BATCH_FILE_TTL if stored.purpose in ("batch", "batch_output") else None
    return {
        **short_file_object(stored),
        "status": "processed",
        "expires_at": unix(expires_at),
        "status_details": None,
    }


def _upload_purpose(form: FormData) -> str:
    purpose = form.get("purpose")
    if not isinstance(purpose, str) or not purpose:
        raise _bad_request("Missing required parameter: 'purpose'.", "purpose", "missing_required_parameter")
    if purpose not in _FILE_PURPOSES:
        raise _bad_request(f"Invalid value for 'purpose': {purpose!r}.", "purpose")
    return purpose


def file_wire(provider: str = NAME, **changes: Any) -> FileWire:
    """OpenAI's Files API on the wire (``changes`` for OpenAI-compatible providers)."""
    wire = FileWire(
        provider=provider,
        file_object=_file_object,
        not_found=lambda file_id: ApiError(404, f"No such File object: {file_id}", param="id"),
        missing_file=lambda: _bad_request("Missing required parameter: 'file'.", "file", "missing_required_parameter"),
        purpose=_upload_purpose,
    )
    return replace(wire, **changes)


def _batch_object(view: BatchView) -> dict[str, Any]:
    phase = view.phase
    counts = view.counts
    succeeded = [r for r in view.results or () if r.outcome == "succeeded"]
    input_tokens = sum(r.input_tokens for r in succeeded)
    output_tokens = sum(r.output_tokens for r in succeeded)
    errors = None
    if view.errors:
        errors = {
            "object": "list",
            "data": [
                {"code": e.code, "message": e.message, "param": e.param, "line": e.line} for e in view.errors
            ],
        }
    return {
        "id": view.id,
        "object": "batch",
        "endpoint": view.endpoint,
        "model": view.model,
        "errors": errors,
        "input_file_id": view.extra["input_file_id"],
        "completion_window": view.extra["completion_window"],
        "status": _STATUS[phase],
        "output_file_id": view.extra.get("output_file_id"),
        "error_file_id": view.extra.get("error_file_id"),
        "created_at": unix(view.created_at),
        "in_progress_at": unix(view.in_progress_at),
        "expires_at": unix(view.created_at + _DAY),
        "finalizing_at": unix(view.finalizing_at),
        "completed_at": unix(view.ended_at) if phase == "ended" else None,
        "failed_at": unix(view.ended_at) if phase == "failed" else None,
        "expired_at": unix(view.ended_at) if phase == "expired" else None,
        "cancelling_at": unix(view.cancel_requested_at),
        "cancelled_at": unix(view.ended_at) if phase == "cancelled" else None,
        # Requests a cancel stopped count in neither bucket, as on the real API.
        "request_counts": {
            "total": counts.total,
            "completed": counts.succeeded,
            "failed": counts.errored + counts.expired,
        },
        "metadata": dict(view.metadata) if view.metadata else None,
        "usage": {
            "input_tokens": input_tokens,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": output_tokens,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": input_tokens + output_tokens,
        },
    }


# -- routes ---------------------------------------------------------------------------------------


class OpenAIBatchRoutes:
    """Files + Batch API handlers over the shared store.

    Reusable by OpenAI-compatible providers (Groq, ...): pass their ``provider`` name (the store
    namespace), the ``completion_windows`` they accept, the ``endpoints`` they emulate and their ``files`` wire.
    """

    def __init__(
        self,
        store: Store,
        provider: str = NAME,
        completion_windows: Sequence[str] = ("24h",),
        endpoints: Sequence[str] = SUPPORTED_ENDPOINTS,
        files: FileWire | None = None,
    ) -> None:
        self.store = store
        self.provider = provider
        self.files = FileRoutes(store, files or file_wire(provider))
        self.completion_windows = tuple(completion_windows)
        self.endpoints = tuple(endpoints)
        self.prefix_cache: dict[str, float] = {}  # automatic prompt caching: prefix key -> expires at

    def routes(self) -> list[BaseRoute]:
        return [
            *self.files.routes(),
            Route("/batches", self.create_batch, methods=["POST"]),
            Route("/batches", self.list_batches, methods=["GET"]),
            Route("/batches/{batch_id}", self.retrieve_batch, methods=["GET"]),
            Route("/batches/{batch_id}/cancel", self.cancel_batch, methods=["POST"]),
        ]

    # hooks for OpenAI-compatible providers

    def check_completion_window(self, window: str) -> None:
        """Raise a 400 unless ``window`` is accepted."""
        if window not in self.completion_windows:
            raise _bad_request(
                f"Invalid value for 'completion_window': {window!r}. "
                f"Supported values are: {', '.join(map(repr, self.completion_windows))}.",
                "completion_window",
            )

    def batch_object(self, view: BatchView) -> dict[str, Any]:
        """The Batch object returned by every batch route."""
        batch = _batch_object(view)
        if self.provider == NAME and batch["model"] is None:
            # A file that failed validation names no model; `Batch.model` is a string: the key is left out.
            del batch["model"]
        return batch

    # Strictness hooks. OpenAI judges what it receives by its own spec (schemas/openai.json); an
    # OpenAI-compatible provider's routes skip these checks unless it overrides them with its own.

    def request_problem(self, endpoint: str, body: Mapping[str, Any]) -> Rejected | None:
        """Why the provider refuses one request line's ``body`` (answered as that line's 400), or None."""
        return request_problem(endpoint, body) if self.provider == NAME else None

    def line_problem(self, line: Mapping[str, Any]) -> Rejected | None:
        """Why the provider refuses one input file line's envelope (fails the batch), or None."""
        return line_problem(line) if self.provider == NAME else None

    def create_batch_problem(self, body: Mapping[str, Any]) -> ApiError | None:
        """Why the provider refuses a ``POST /batches`` body beyond the built-in checks (a 400), or None."""
        if self.provider != NAME:
            return None
        problem = _schema_problem("CreateBatchRequest", body)
        return None if problem is None else _bad_request(problem.message, problem.param, problem.code)

    # batches

    def _batch(self, batch_id: str) -> BatchView:
        return find_batch(self.store, self.provider, batch_id,
                          ApiError(404, f"No batch found with id '{batch_id}'.", param="batch_id"))

    async def create_batch(self, request: Request) -> Response:
        body = await read_json(request)
        for name in ("input_file_id", "endpoint", "completion_window"):
            if not isinstance(body.get(name), str) or not body[name]:
                raise _bad_request(
                    f"Missing required parameter: '{name}'.", name, "missing_required_parameter"
                )
        endpoint = body["endpoint"]
        if endpoint not in self.endpoints:
            known = endpoint in SUPPORTED_ENDPOINTS or endpoint in _UNEMULATED_ENDPOINTS
            raise _bad_request(
                f"Invalid value for 'endpoint': {endpoint!r}"
                + (" is valid on the real API but not emulated" if known else "")
                + f". Supported values are: {', '.join(self.endpoints)}.",
                "endpoint",
            )
        window = body["completion_window"]
        self.check_completion_window(window)
        metadata = _validate_metadata(body.get("metadata"))
        refusal = self.create_batch_problem(body)
        if refusal is not None:
            raise refusal
        input_file = self.store.get_file(self.provider, body["input_file_id"])
        if input_file is None:
            raise _bad_request(
                f"Invalid 'input_file_id': no file with id {body['input_file_id']!r} exists.", "input_file_id"
            )
        if input_file.purpose != "batch":
            raise _bad_request(
                f"Invalid 'input_file_id': the file has purpose {input_file.purpose!r}; "
                "batch input files must be uploaded with purpose 'batch'.",
                "input_file_id",
            )
        items, model, errors = _parse_input_file(input_file.data, endpoint, self.line_problem)
        view = self.store.create_batch(
            self.provider,
            endpoint=endpoint,
            items=items,
            model=model,
            metadata=metadata,
            errors=errors,
            render=lambda item, outcome: self._render(endpoint, item, outcome),
            on_end=self._write_result_files,
            extra={"input_file_id": input_file.id, "completion_window": window},
        )
        return JSONResponse(self.batch_object(view))

    async def retrieve_batch(self, request: Request) -> Response:
        return JSONResponse(self.batch_object(self._batch(request.path_params["batch_id"])))

    async def cancel_batch(self, request: Request) -> Response:
        view = self._batch(request.path_params["batch_id"])
        if view.terminal and view.phase != "cancelled":
            raise _bad_request(f"Cannot cancel a batch with status '{_STATUS[view.phase]}'.", None, None)
        view = self.store.cancel_batch(self.provider, view.id) or view
        return JSONResponse(self.batch_object(view))

    async def list_batches(self, request: Request) -> Response:
        limit = query_int(request, "limit", default=20, low=1, high=100)
        newest_first = list(reversed(self.store.batches(self.provider)))
        page, has_more = paginate(
            newest_first, lambda b: b.id, limit=limit, after=request.query_params.get("after")
        )
        return JSONResponse(
            {
                "object": "list",
                "data": [self.batch_object(b) for b in page],
                "first_id": page[0].id if page else None,
                "last_id": page[-1].id if page else None,
                "has_more": has_more,
            }
        )

    # results

    def _render(self, endpoint: str, item: Item, outcome: Outcome) -> ItemResult:
        line_id = self.store.new_id("batch_req_")
        request_id = self.store.new_id("req_")
        if outcome in ("succeeded", "errored"):
            problem = self.request_problem(endpoint, item.body)
            if problem is not None:
                return self._rejected(item, line_id, request_id, problem.message, problem.param, problem.code)
        if outcome == "succeeded":
            try:
                body, input_tokens, output_tokens = _ENDPOINTS[endpoint](
                    item.body, self.store.new_id, int(self.store.now())
                )
            except Rejected as exc:
                return self._rejected(item, line_id, request_id, exc.message, exc.param, exc.code)
            if endpoint == "/v1/chat/completions":
                self._cache_prefix(item.body, body)
            line = {
                "id": line_id,
                "custom_id": item.custom_id,
                "response": {"status_code": 200, "request_id": request_id, "body": body},
                "error": None,
            }
            return ItemResult(item.custom_id, "succeeded", line, input_tokens, output_tokens)
        if outcome == "errored" and item.marker == "transient":
            error = {"message": echo.TRANSIENT_MESSAGE, "type": "server_error", "param": None, "code": "server_error"}
            line = {"id": line_id, "custom_id": item.custom_id, "error": None,
                    "response": {"status_code": 500, "request_id": request_id, "body": {"error": error}}}
            return ItemResult(item.custom_id, "errored", line)
        if outcome == "errored":
            return self._rejected(item, line_id, request_id, echo.ERROR_MESSAGE, None, "emulated_error")
        if outcome == "expired":
            code, message = (
                "batch_expired",
                "This request could not be executed before the completion window expired.",
            )
        else:
            code, message = (
                "batch_cancelled",
                "This request was not executed because the batch was cancelled.",
            )
        line = {
            "id": line_id,
            "custom_id": item.custom_id,
            "response": None,
            "error": {"code": code, "message": message},
        }
        return ItemResult(item.custom_id, outcome, line)

    def _cache_prefix(self, request: Mapping[str, Any], body: dict[str, Any]) -> None:
        """Automatic prompt caching (OpenAI's prompt-caching guide): a prefix of at least 1,024 tokens (here
        the leading system/developer messages, a token per word) is cached by the first request that sends
        it; a later request with the same model and prefix, within 10 minutes of its last use, reads it,
        in 128-token steps. The read shows in `usage.prompt_tokens_details.cached_tokens`, inside
        `prompt_tokens` (SDK `CompletionUsage`)."""
        texts: list[str] = []
        for message in request.get("messages") or []:
            if not isinstance(message, Mapping) or message.get("role") not in ("system", "developer"):
                break
            content = message.get("content")
            parts = [content] if isinstance(content, str) else [
                p.get("text") for p in content or [] if isinstance(p, Mapping)] if isinstance(content, list) else []
            texts += [t for t in parts if isinstance(t, str)]
        tokens = sum(len(t.split()) for t in texts)
        if tokens < 1024:
            return
        key = json.dumps([request.get("model"), texts])
        now = self.store.now()
        hit = self.prefix_cache.get(key, 0.0) > now
        self.prefix_cache[key] = now + 600.0
        if hit:
            details = body["usage"].setdefault("prompt_tokens_details", {})
            details["cached_tokens"] = min(tokens // 128 * 128, int(body["usage"]["prompt_tokens"]))

    @staticmethod
    def _rejected(
        item: Item, line_id: str, request_id: str, message: str, param: str | None, code: str | None
    ) -> ItemResult:
        error = {"message": message, "type": "invalid_request_error", "param": param, "code": code}
        line = {
            "id": line_id,
            "custom_id": item.custom_id,
            "response": {"status_code": 400, "request_id": request_id, "body": {"error": error}},
            "error": None,
        }
        return ItemResult(item.custom_id, "errored", line)

    def _write_result_files(self, view: BatchView) -> dict[str, Any]:
        return self.files.write_results(
            view, ("output_file_id", "output", "batch_output"), ("error_file_id", "error", "batch_output")
        )


SPEC = ProviderSpec(
    name=NAME,
    prefix="/openai/v1",
    routes=lambda store: OpenAIBatchRoutes(store).routes(),
    check_request=check_request,
    error_body=error_body,
    request_id_header="x-request-id",
    request_id_prefix="req_",
)
