"""Generate ``schemas/xai.json``: strict JSON Schemas of xAI's REST batch surface.

Run ``python -m tests.conformance.generators.xai`` (needs the ``xai-sdk`` package, a test
extra; nothing at runtime imports it).

Sources, in order of authority:

1. The batch protobufs of the official SDK (``xai_sdk/proto/v6/batch_pb2``, package ``xai_api``): every
   batch object is walked from its message descriptor, so field names, field types, nesting and the
   per-request state enum come from the proto.
2. xAI's REST reference (docs.x.ai, "Inference API / Batches" and "Files API / Upload") decides how the REST
   gateway renders those messages, which differs from the canonical proto3 JSON mapping:

   - field names are the proto's original snake_case names (``batch_id``, ``num_pending``), not lowerCamelCase;
   - int32/int64 are JSON integers (the reference types the counters ``integer``; canonical proto3 JSON would
     write int64 as strings);
   - enums are the proto value names without their common prefix, lowercased (``STATE_CANCELLED`` is
     ``"cancelled"``: the reference lists ``"unknown" | "pending" | "succeeded" | "cancelled" | "failed"``);
   - Timestamps are strings (the reference's examples show bare dates, proto3 JSON RFC 3339: both allowed);
   - optional proto fields and message fields that may be unset are ``null``-able;
   - the add-requests entry and the result are REST-only shapes: ``batch_request: {<op>: <REST body>}``
     instead of the proto's ``completion_request``, and ``batch_result: {response: {<op>: …}} | {error: <str>}``
     instead of ``response`` / ``error: google.rpc.Status``. Their keys come from the REST reference and the
     batch guide (which adds the ``responses``, image and video operations).
3. The OpenAI-shaped bodies under an operation key (``chat_get_completion``, ``responses``) are not defined
   here: the tests judge them against OpenAI's own types in ``schemas/openai.json``. The chat completion
   *answer* is xAI's (its usage has xAI-only counters), so it is generated from the REST reference's fields.
4. The HTTP error body has no published schema; its form ``{"code": <gRPC status description>, "error":
   <message>}`` is the one xAI's live API answers with (captured in public bug reports and SDK tests).
"""

from __future__ import annotations

import json
import sys
from importlib import metadata
from typing import Any

from google.protobuf.descriptor import Descriptor, EnumDescriptor, FieldDescriptor

from tests.conformance.generators import SCHEMAS_DIR

GENERATED = "2026-12-01"
SOURCE = (
    "xai-sdk (PyPI) xai_sdk/proto/v6/batch_pb2 (proto package xai_api); REST rendering per the xAI REST "
    "reference docs.x.ai/developers/rest-api-reference/inference/batches and .../files/upload, and the batch "
    "guide docs.x.ai/developers/advanced-api-usage/batch-api"
)
OUT = SCHEMAS_DIR / "xai.json"

NULL: dict[str, Any] = {"type": "null"}
# A REST time: RFC 3339 (proto3 JSON of a Timestamp) or a bare date (the REST reference's examples).
TIMESTAMP = r"^\d{4}-\d{2}-\d{2}([Tt ]\d{2}:\d{2}:\d{2}(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2}))?$"

# Response messages: which fields the REST reference marks required (proto3 itself has no "required").
# A field not named here is optional; message-typed and `optional` proto fields are also nullable.
REQUIRED: dict[str, tuple[str, ...]] = {
    "Batch": ("batch_id", "name", "create_time", "create_api_key_id", "state"),
    "BatchState": ("num_requests", "num_pending", "num_success", "num_error", "num_cancelled"),
    "BatchCostBreakdown": ("total_cost_usd_ticks",),
    "EndpointCost": ("endpoint", "cost_usd_ticks", "request_count"),
    "BatchRequestMetadata": ("batch_request_id", "endpoint", "model", "state", "create_time"),
    "ListBatchesResponse": ("batches",),
    "ListBatchRequestMetadataResponse": ("batch_request_metadata",),
    "CreateBatchRequest": ("name",),
}
# Proto fields that are path parameters in REST, so never in a body.
PATH_FIELDS: dict[str, tuple[str, ...]] = {}
# Fields the REST reference renders as `string | null` although the proto field has no presence.
NULLABLE: dict[str, tuple[str, ...]] = {"Batch": ("expire_time", "cancel_time", "cancel_by_xai_message")}
# The REST reference lists count fields as non-negative counters.
COUNTERS = ("num_requests", "num_pending", "num_success", "num_error", "num_cancelled", "request_count")

# Operation keys of an add-requests entry (REST reference: chat_get_completion; the guide adds the rest)
# and the REST endpoint of each one's body (the `url` of a JSONL line).
REQUEST_OPS: dict[str, tuple[str, ...]] = {
    "chat_get_completion": ("/v1/chat/completions",),
    "responses": ("/v1/responses",),
    "image_generation": ("/v1/images/generations",),
    "image_edit": ("/v1/images/edits",),
    "video_generation": ("/v1/videos/generations", "/v1/videos", "/v1/videos/edits"),
    "video_extension": ("/v1/videos/extensions",),
}
# Operation keys of a result's `response` (the guide's examples; images and video edits answer as generations).
RESULT_OPS = ("chat_get_completion", "responses", "image_generation", "video_generation")


def _enum_names(enum: EnumDescriptor) -> list[str]:
    """The REST names of a proto enum: the value names without their shared prefix, lowercased."""
    names = [value.name for value in enum.values]
    prefix = names[0]
    for name in names[1:]:
        while not name.startswith(prefix):
            prefix = prefix[:-1]
    prefix = prefix[: prefix.rfind("_") + 1] if "_" in prefix else ""
    return [name[len(prefix):].lower() for name in names]


def _scalar(field: FieldDescriptor, message: str) -> dict[str, Any]:
    kind = field.type
    if kind == FieldDescriptor.TYPE_STRING:
        return {"type": "string"}
    if kind == FieldDescriptor.TYPE_BOOL:
        return {"type": "boolean"}
    if kind in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
        return {"type": "number"}
    if kind == FieldDescriptor.TYPE_BYTES:
        return {"type": "string", "contentEncoding": "base64"}
    if kind == FieldDescriptor.TYPE_ENUM:
        return {"type": "string", "enum": _enum_names(field.enum_type)}
    if kind in (
        FieldDescriptor.TYPE_INT32, FieldDescriptor.TYPE_INT64, FieldDescriptor.TYPE_UINT32,
        FieldDescriptor.TYPE_UINT64, FieldDescriptor.TYPE_SINT32, FieldDescriptor.TYPE_SINT64,
        FieldDescriptor.TYPE_FIXED32, FieldDescriptor.TYPE_FIXED64, FieldDescriptor.TYPE_SFIXED32,
        FieldDescriptor.TYPE_SFIXED64,
    ):
        schema: dict[str, Any] = {"type": "integer"}
        if field.name in COUNTERS or field.name.startswith("num_"):
            schema["minimum"] = 0
        return schema
    raise ValueError(f"{message}.{field.name}: unhandled proto field type {kind}")


def _field_schema(field: FieldDescriptor, message: str, defs: dict[str, Any]) -> dict[str, Any]:
    if field.message_type is not None:
        full = field.message_type.full_name
        if full == "google.protobuf.Timestamp":
            # RFC 3339 (proto3 JSON) or a bare date (the REST reference's examples).
            schema: dict[str, Any] = {"type": "string", "pattern": TIMESTAMP}
        else:
            _walk(field.message_type, defs)
            schema = {"$ref": f"#/$defs/{field.message_type.name}"}
    else:
        schema = _scalar(field, message)
    if field.is_repeated:
        return {"type": "array", "items": schema}
    return schema


def _walk(descriptor: Descriptor, defs: dict[str, Any]) -> None:
    """Add `descriptor` (and every message it uses) to `defs` as a closed object."""
    name = descriptor.name
    if name in defs:
        return
    defs[name] = {}  # placeholder against cycles
    properties: dict[str, Any] = {}
    for field in descriptor.fields:
        if field.name in PATH_FIELDS.get(name, ()):
            continue
        schema = _field_schema(field, name, defs)
        nullable = (not field.is_repeated and field.has_presence) or field.name in NULLABLE.get(name, ())
        if nullable and field.name not in REQUIRED.get(name, ()):
            schema = {"anyOf": [schema, NULL]}
        properties[field.name] = schema
    required = [f for f in REQUIRED.get(name, ()) if f in properties]
    defs[name] = {
        "type": "object",
        "description": f"xai_api.{name} as the REST API renders it",
        "properties": properties,
        "required": required,
        "additionalProperties": False,
    }


def _rest_types() -> dict[str, Any]:
    """The REST-only envelopes (add-requests entries, results, JSONL lines, files, errors)."""
    op_body = {"type": "object", "required": ["model"], "properties": {"model": {"type": "string", "minLength": 1}}}
    one_op = {
        "type": "object",
        "description": "Exactly one operation key; its body is that REST endpoint's request body "
                       "(judged against OpenAI's types for chat_get_completion / responses).",
        "properties": {op: op_body for op in REQUEST_OPS},
        "minProperties": 1,
        "maxProperties": 1,
        "additionalProperties": False,
    }
    usage = {
        "type": "object",
        "properties": {
            "prompt_tokens": {"type": "integer", "minimum": 0},
            "completion_tokens": {"type": "integer", "minimum": 0},
            "total_tokens": {"type": "integer", "minimum": 0},
            "prompt_tokens_details": {
                "type": "object",
                "properties": {k: {"type": "integer", "minimum": 0}
                               for k in ("text_tokens", "audio_tokens", "image_tokens", "cached_tokens")},
                "required": ["text_tokens", "audio_tokens", "image_tokens", "cached_tokens"],
                "additionalProperties": False,
            },
            "completion_tokens_details": {
                "type": "object",
                "properties": {k: {"type": "integer", "minimum": 0} for k in (
                    "reasoning_tokens", "audio_tokens", "accepted_prediction_tokens", "rejected_prediction_tokens")},
                "required": ["reasoning_tokens", "audio_tokens", "accepted_prediction_tokens",
                             "rejected_prediction_tokens"],
                "additionalProperties": False,
            },
            "num_sources_used": {"type": "integer", "minimum": 0},
            # Not in the REST reference's field list; the batch guide reads it from every result's usage.
            "cost_in_usd_ticks": {"type": "integer", "minimum": 0},
        },
        "required": ["prompt_tokens", "completion_tokens", "total_tokens", "prompt_tokens_details",
                     "completion_tokens_details", "num_sources_used"],
        "additionalProperties": False,
    }
    nullable_string = {"type": ["string", "null"]}
    chat_completion = {
        "type": "object",
        "description": "REST reference: the chat response body for /v1/chat/completions",
        "properties": {
            "id": {"type": "string"},
            "object": {"const": "chat.completion"},
            "created": {"type": "integer"},
            "model": {"type": "string"},
            "choices": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "index": {"type": "integer", "minimum": 0},
                        "finish_reason": nullable_string,
                        "logprobs": {"type": ["object", "null"]},
                        "message": {
                            "type": "object",
                            "properties": {
                                "role": {"type": "string"},
                                "content": nullable_string,
                                "reasoning_content": nullable_string,
                                "refusal": nullable_string,
                                "tool_calls": {"type": ["array", "null"]},
                            },
                            "required": ["role"],
                            "additionalProperties": False,
                        },
                    },
                    "required": ["index", "message"],
                    "additionalProperties": False,
                },
            },
            "citations": {"type": ["array", "null"]},
            "debug_output": {"type": "object"},
            "system_fingerprint": nullable_string,
            "usage": usage,
        },
        "required": ["id", "object", "created", "model", "choices"],
        "additionalProperties": False,
    }
    return {
        "BatchRequestOperation": one_op,
        "BatchRequestEntry": {
            "type": "object",
            "description": "REST reference: one entry of POST /v1/batches/{batch_id}/requests",
            "properties": {"batch_request_id": nullable_string,
                           "batch_request": {"$ref": "#/$defs/BatchRequestOperation"}},
            "required": ["batch_request"],
            "additionalProperties": False,
        },
        "AddBatchRequestsRequest": {
            "type": "object",
            "description": "xai_api.AddBatchRequestsRequest in REST (batch_id is the path parameter)",
            "properties": {"batch_requests": {"type": "array", "items": {"$ref": "#/$defs/BatchRequestEntry"}}},
            "required": ["batch_requests"],
            "additionalProperties": False,
        },
        "AddBatchRequestsResponse": {
            "description": "AddBatchRequests returns google.protobuf.Empty: {}",
            "type": "object", "maxProperties": 0,
        },
        "ChatCompletion": chat_completion,
        "ResponsesResult": {
            "type": "object",
            "description": "A /v1/responses answer under batch_result.response.responses: the fields of xAI's "
                           "Responses reference (response body); output items and usage are checked loosely",
            "properties": {
                "id": {"type": "string"}, "object": {"const": "response"}, "created_at": {"type": "integer"},
                "model": {"type": "string"}, "status": {"type": "string"},
                "output": {"type": "array", "items": {"type": "object", "required": ["type"]}},
                "usage": {"type": ["object", "null"],
                          "required": ["input_tokens", "output_tokens", "total_tokens"]},
                **{key: {} for key in (
                    "background", "debug_output", "incomplete_details", "max_output_tokens", "metadata",
                    "parallel_tool_calls", "previous_response_id", "reasoning", "store", "temperature", "text",
                    "tool_choice", "tools", "top_p", "user")},
            },
            "required": ["id", "object", "created_at", "model", "status", "output"],
            "additionalProperties": False,
        },
        "BatchResultResponse": {
            "type": "object",
            "properties": {
                "chat_get_completion": {"$ref": "#/$defs/ChatCompletion"},
                "responses": {"$ref": "#/$defs/ResponsesResult"},
                "image_generation": {"type": "object"},
                "video_generation": {"type": "object"},
            },
            "minProperties": 1, "maxProperties": 1, "additionalProperties": False,
        },
        "BatchResult": {
            "type": "object",
            "description": "REST reference: one entry of GET /v1/batches/{batch_id}/results",
            "properties": {
                "batch_request_id": {"type": "string"},
                "batch_result": {"oneOf": [
                    {"type": "object", "properties": {"error": {"type": "string"}},
                     "required": ["error"], "additionalProperties": False},
                    {"type": "object",
                     "properties": {"response": {"anyOf": [{"const": "unknown"},
                                                           {"$ref": "#/$defs/BatchResultResponse"}]}},
                     "required": ["response"], "additionalProperties": False},
                ]},
            },
            "required": ["batch_request_id", "batch_result"],
            "additionalProperties": False,
        },
        "ListBatchResultsResponse": {
            "type": "object",
            "properties": {"results": {"type": "array", "items": {"$ref": "#/$defs/BatchResult"}},
                           "pagination_token": nullable_string},
            "required": ["results"],
            "additionalProperties": False,
        },
        "BatchFileLine": {
            "type": "object",
            "description": "Batch guide, JSONL file upload: one line; custom_id maps to batch_request_id",
            "properties": {
                "custom_id": {"type": "string", "minLength": 1},
                "method": {"const": "POST"},
                "url": {"enum": [url for urls in REQUEST_OPS.values() for url in urls]},
                "body": op_body,
            },
            "required": ["custom_id", "method", "url", "body"],
            "additionalProperties": False,
        },
        "File": {
            "type": "object",
            "description": "REST reference, Files API / Upload: the response body (OpenAI-compatible)",
            "properties": {
                "id": {"type": "string"}, "object": {"const": "file"}, "bytes": {"type": "integer", "minimum": 0},
                "created_at": {"type": "integer"}, "filename": {"type": "string"}, "purpose": {"type": "string"},
            },
            "required": ["id", "object", "bytes", "created_at", "filename", "purpose"],
            "additionalProperties": False,
        },
        "ErrorBody": {
            "type": "object",
            "description": "No published schema: the form xAI's live API answers errors with",
            "properties": {"code": {"type": "string"}, "error": {"type": "string"}},
            "required": ["code", "error"],
            "additionalProperties": False,
        },
    }


def build() -> dict[str, Any]:
    from xai_sdk.proto.v6 import batch_pb2  # the only place the SDK is imported

    defs: dict[str, Any] = {}
    for name in ("Batch", "BatchRequestMetadata", "CreateBatchRequest", "ListBatchesResponse",
                 "ListBatchRequestMetadataResponse"):
        _walk(batch_pb2.DESCRIPTOR.message_types_by_name[name], defs)
    defs.update(_rest_types())
    return {
        "provider": "xai",
        "source": SOURCE,
        "version": f"xai-sdk {metadata.version('xai-sdk')}",
        "generated": GENERATED,
        "generator": "tests/conformance/generators/xai.py",
        "$defs": dict(sorted(defs.items())),
    }


def main() -> int:
    OUT.write_text(json.dumps(build(), indent=1, sort_keys=False) + "\n", encoding="utf-8")
    print(f"wrote {OUT}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
