"""Generate ``testing/schemas/anthropic.json`` from the ``anthropic`` SDK's own types.

Run: ``.venv/bin/python -m tests.conformance.generators.anthropic``

The SDK's request types are TypedDicts and its response types pydantic models; pydantic's
``TypeAdapter(...).json_schema()`` turns both into JSON Schema. The output is then made strict:

- every object with declared properties is closed (``additionalProperties: false``), also for the
  response models, which the SDK itself opens (``extra="allow"``) only for forward compatibility;
- ``Required`` / ``NotRequired`` and pydantic defaults decide ``required``; ``Literal`` gives closed enums;
- RFC 3339 ``date-time`` strings get a pattern (the checker does not assert ``format``);
- enum values are sorted (pydantic's order of a ``Literal``'s values is not stable from run to run);
- titles are dropped (noise).

Two corrections, both recorded in the document under ``notes``:

- ``BatchCreateParams.user_profile_id`` and ``.workspace_id`` are removed: the SDK's
  ``messages.batches.create()`` sends them as the ``anthropic-user-profile-id`` and
  ``anthropic-workspace-id`` headers; the body is only ``{"requests": [...]}``.
- ``SamplingParams`` (``temperature``, ``top_p``, ``top_k``) is added. The SDK dropped the three fields
  from ``MessageCreateParams`` in 1.0.0 (its MIGRATION.md: "Removed: deprecated request parameters"), yet
  the API still honours them on models released before Claude Opus 4.7 and the migration guide tells
  users of those models to send them as extra body keys. Their types are those of the last SDK release
  that defined them (0.125.0, ``types/message_create_params.py``). Which models take them is decided by
  the adapter and the emulator, not by this schema.
"""

from __future__ import annotations

import json
import sys
from datetime import date
from typing import Any

from pydantic import TypeAdapter, create_model
from typing_extensions import TypedDict

from tests.conformance.generators import SCHEMAS_DIR

GENERATED = "2026-12-01"
RFC3339 = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$"
OUT = SCHEMAS_DIR / "anthropic.json"
HEADER_FIELDS = ("user_profile_id", "workspace_id")


class SamplingParams(TypedDict, total=False):
    """anthropic 0.125.0 ``MessageCreateParamsBase``: ``temperature: float``, ``top_k: int``, ``top_p: float``."""

    temperature: float
    top_k: int
    top_p: float


def _types() -> dict[str, Any]:
    from anthropic.pagination import SyncPage
    from anthropic.types import Message, OutputConfigParam
    from anthropic.types.json_output_format_param import JSONOutputFormatParam
    from anthropic.types.message_create_params import MessageCreateParamsNonStreaming
    from anthropic.types.messages import (
        DeletedMessageBatch,
        MessageBatch,
        MessageBatchCanceledResult,
        MessageBatchErroredResult,
        MessageBatchExpiredResult,
        MessageBatchIndividualResponse,
        MessageBatchSucceededResult,
    )
    from anthropic.types.messages.batch_create_params import BatchCreateParams, Request
    from anthropic.types.shared.error_response import ErrorResponse

    return {
        # requests we send
        "BatchCreateParams": BatchCreateParams,
        "MessageBatchRequest": Request,
        "MessageCreateParamsNonStreaming": MessageCreateParamsNonStreaming,
        "OutputConfigParam": OutputConfigParam,
        "JSONOutputFormatParam": JSONOutputFormatParam,
        "SamplingParams": SamplingParams,
        # answers
        "MessageBatch": MessageBatch,
        "DeletedMessageBatch": DeletedMessageBatch,
        "MessageBatchPage": SyncPage[MessageBatch],
        "MessageBatchIndividualResponse": MessageBatchIndividualResponse,
        "MessageBatchSucceededResult": MessageBatchSucceededResult,
        "MessageBatchErroredResult": MessageBatchErroredResult,
        "MessageBatchCanceledResult": MessageBatchCanceledResult,
        "MessageBatchExpiredResult": MessageBatchExpiredResult,
        "Message": Message,
        "ErrorResponse": ErrorResponse,
    }


def _strict(node: Any) -> Any:
    if isinstance(node, list):
        return [_strict(n) for n in node]
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in ("title", "description"):
            continue
        if key in ("properties", "$defs") and isinstance(value, dict):
            out[key] = {name: _strict(sub) for name, sub in value.items()}  # a map of schemas, not a schema
        else:
            out[key] = _strict(value)
    if isinstance(out.get("enum"), list) and all(isinstance(v, str) for v in out["enum"]):
        out["enum"] = sorted(out["enum"])  # pydantic's order of a Literal's values is not stable across runs
    if isinstance(out.get("properties"), dict):
        out["additionalProperties"] = False
    if out.get("format") == "date-time" and out.get("type") == "string":
        out.setdefault("pattern", RFC3339)
    return out


def build() -> dict[str, Any]:
    import anthropic

    named = _types()
    wrapper = create_model("AnthropicSchemas", **{name: (tp, ...) for name, tp in named.items()})  # type: ignore[call-overload]
    raw = TypeAdapter(wrapper).json_schema(ref_template="#/$defs/{model}")
    defs: dict[str, Any] = dict(raw.get("$defs", {}))
    for name, prop in raw["properties"].items():
        if prop == {"$ref": f"#/$defs/{name}"}:
            continue
        if name in defs:
            raise SystemExit(f"name clash: {name} is both one of ours and a pydantic definition")
        defs[name] = {k: v for k, v in prop.items() if k != "title"}
    target = defs["BatchCreateParams"]
    for header in HEADER_FIELDS:
        target["properties"].pop(header, None)
    defs = {name: _strict(schema) for name, schema in sorted(defs.items())}
    return {
        "provider": "anthropic",
        "source": "anthropic SDK (PyPI `anthropic`) TypedDict params and pydantic response models, "
                  "via pydantic TypeAdapter.json_schema(); SamplingParams field types from anthropic 0.125.0",
        "version": f"anthropic {anthropic.__version__}",
        "generated": GENERATED,
        "generator": "tests/conformance/generators/anthropic.py",
        "notes": [
            "All objects with declared properties are closed (additionalProperties: false).",
            "BatchCreateParams: user_profile_id and workspace_id removed; the SDK sends them as the "
            "anthropic-user-profile-id / anthropic-workspace-id headers.",
            "SamplingParams: temperature/top_p/top_k, removed from MessageCreateParams in anthropic 1.0.0 "
            "but still accepted by the API on models released before Claude Opus 4.7.",
            "date-time strings carry an RFC 3339 pattern.",
        ],
        "$defs": defs,
    }


def main(argv: list[str] | None = None) -> int:
    doc = build()
    text = json.dumps(doc, indent=1, sort_keys=False, ensure_ascii=False) + "\n"
    OUT.write_text(text, encoding="utf-8")
    print(f"wrote {OUT} ({len(doc['$defs'])} types, {doc['version']}, generated {doc['generated']}; "
          f"run on {date.today().isoformat()})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
