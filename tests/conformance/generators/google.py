"""Generate ``testing/schemas/google.json`` from Gemini's official GAPIC protos.

Run: ``.venv/bin/python -m tests.conformance.generators.google`` (needs the test extra:
``google-ai-generativelanguage`` and ``googleapis-common-protos``; never imported at runtime).

How the schemas are made:

- Every message reachable from the roots below is read from its protobuf descriptor (package
  ``google.ai.generativelanguage.v1beta``, plus ``google.rpc.Status`` and ``google.longrunning.Operation``)
  and turned into JSON Schema by the proto3 JSON mapping: lowerCamelCase ``json_name`` keys, 64-bit
  integers as decimal strings, enums by name, ``bytes`` as base64, ``Struct``/``Value`` as any JSON, ``Any``
  as an object with ``@type``, ``Timestamp``/``Duration``/``FieldMask`` as strings. Every message is closed
  (``additionalProperties: false``), members of one ``oneof`` exclude each other, and a field the proto
  comments mark ``Required.`` is required (proto-plus drops the ``field_behavior`` option, but keeps the
  proto comments as attribute docs, which is where the marks are read).
- The batch envelope (``GenerateContentBatch``, ``InputConfig``, ``InlinedRequest``/``InlinedResponse``,
  ``BatchStats``, ``BatchState``, the embedding twins, the JSONL line envelopes) is not in the GAPIC
  package (0.12.1 has no batch service), so it is written below as a field table taken from the published
  v1beta REST reference (https://ai.google.dev/api/batch-api, ``.../api/embeddings``) and the batch guide;
  the conformance tests cross-check it against the ``google-genai`` SDK's own request builders and parsers.
- Deliberate departures, each with its reason, are listed in ``OVERRIDES`` and recorded in the document.
"""

from __future__ import annotations

import inspect
import json
import re
import sys
from importlib import metadata as dist
from typing import Any

from google.ai import generativelanguage_v1beta as glm
from google.longrunning import operations_proto_pb2
from google.protobuf import descriptor as pd
from google.rpc import code_pb2, status_pb2

from tests.conformance.generators import SCHEMAS_DIR

GENERATED = "2026-12-01"
API_VERSION = "v1beta"
OUT = SCHEMAS_DIR / "google.json"
INT64 = {"type": "string", "pattern": "^-?[0-9]+$"}
# RFC 3339, Z-normalized or with an offset, 0-9 fractional digits (the JSON mapping of Timestamp).
TIMESTAMP = {"type": "string", "pattern": (r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}"
                                           r"(\.[0-9]{1,9})?(Z|[+-][0-9]{2}:[0-9]{2})$")}
WELL_KNOWN: dict[str, dict[str, Any]] = {
    "google.protobuf.Struct": {"type": "object"},
    "google.protobuf.Value": {},
    "google.protobuf.ListValue": {"type": "array"},
    "google.protobuf.Timestamp": TIMESTAMP,
    "google.protobuf.Duration": {"type": "string", "pattern": r"^-?[0-9]+(\.[0-9]{1,9})?s$"},
    "google.protobuf.FieldMask": {"type": "string"},
    "google.protobuf.Empty": {"type": "object", "additionalProperties": False},
    "google.protobuf.Any": {"type": "object", "required": ["@type"],
                            "properties": {"@type": {"type": "string", "pattern": "^type\\.googleapis\\.com/.+"}}},
    "google.protobuf.DoubleValue": {"type": "number"}, "google.protobuf.FloatValue": {"type": "number"},
    "google.protobuf.Int64Value": INT64, "google.protobuf.UInt64Value": INT64,
    "google.protobuf.Int32Value": {"type": "integer"}, "google.protobuf.UInt32Value": {"type": "integer"},
    "google.protobuf.BoolValue": {"type": "boolean"}, "google.protobuf.StringValue": {"type": "string"},
    "google.protobuf.BytesValue": {"type": "string"},
}
_SCALARS: dict[int, dict[str, Any]] = {
    pd.FieldDescriptor.TYPE_DOUBLE: {"type": "number"}, pd.FieldDescriptor.TYPE_FLOAT: {"type": "number"},
    pd.FieldDescriptor.TYPE_INT64: INT64, pd.FieldDescriptor.TYPE_UINT64: INT64,
    pd.FieldDescriptor.TYPE_FIXED64: INT64, pd.FieldDescriptor.TYPE_SFIXED64: INT64,
    pd.FieldDescriptor.TYPE_SINT64: INT64,
    pd.FieldDescriptor.TYPE_INT32: {"type": "integer"}, pd.FieldDescriptor.TYPE_UINT32: {"type": "integer"},
    pd.FieldDescriptor.TYPE_FIXED32: {"type": "integer"}, pd.FieldDescriptor.TYPE_SFIXED32: {"type": "integer"},
    pd.FieldDescriptor.TYPE_SINT32: {"type": "integer"},
    pd.FieldDescriptor.TYPE_BOOL: {"type": "boolean"}, pd.FieldDescriptor.TYPE_STRING: {"type": "string"},
    pd.FieldDescriptor.TYPE_BYTES: {"type": "string", "pattern": "^[A-Za-z0-9+/_-]*={0,2}$"},
}

# (message, json field): reason. Applied as "not required" on top of the proto's Required marks.
OVERRIDES: dict[tuple[str, str], str] = {
    ("GenerateContentRequest", "model"):
        "inside a batch the model is the batch's (URL path `models/{model}:batchGenerateContent`); the batch "
        "guide's JSONL lines and google-genai's InlinedRequest builder omit it",
    ("EmbedContentRequest", "model"):
        "inside a batch the model is the batch's (URL path `models/{model}:asyncBatchEmbedContent`); "
        "google-genai's EmbedContentBatch builder omits it",
}

# The envelope's own departures from the REST reference's Required marks.
ENVELOPE_OVERRIDES: dict[tuple[str, str], str] = {
    ("GenerateContentBatch", "model"): "bound from the URL path (`{batch.model=models/*}:batchGenerateContent`)",
    ("GenerateContentBatch", "displayName"):
        "marked Required, but google-genai sets none by default and its README creates Gemini Developer API "
        "batches without one, so the service cannot be refusing it",
    ("EmbedContentBatch", "model"): "bound from the URL path (`{batch.model=models/*}:asyncBatchEmbedContent`)",
    ("EmbedContentBatch", "displayName"): "as for GenerateContentBatch",
}

# Fields the create body must have that an answer (the Operation's packed metadata) may leave out.
ANSWER_OPTIONAL: dict[tuple[str, str], str] = {
    ("GenerateContentBatch", "inputConfig"):
        "an Operation's metadata names an uploaded input (`inputConfig.fileName`) but does not echo inline "
        "requests back; google-genai's _BatchJob_from_mldev reads no inputConfig from it",
    ("EmbedContentBatch", "inputConfig"): "as for GenerateContentBatch",
}

# Roots read from the protos: our name -> descriptor.
PROTO_ROOTS = {
    "GenerateContentRequest": glm.GenerateContentRequest.pb().DESCRIPTOR,
    "GenerateContentResponse": glm.GenerateContentResponse.pb().DESCRIPTOR,
    "EmbedContentRequest": glm.EmbedContentRequest.pb().DESCRIPTOR,
    "EmbedContentResponse": glm.EmbedContentResponse.pb().DESCRIPTOR,
    "File": glm.File.pb().DESCRIPTOR,
    "CreateFileRequest": glm.CreateFileRequest.pb().DESCRIPTOR,
    "CreateFileResponse": glm.CreateFileResponse.pb().DESCRIPTOR,
    "Status": status_pb2.Status.DESCRIPTOR,
    "Operation": operations_proto_pb2.Operation.DESCRIPTOR,
    "ListOperationsResponse": operations_proto_pb2.ListOperationsResponse.DESCRIPTOR,
    # Explicit context caching (CacheService): `POST /v1beta/cachedContents` takes a CachedContent as its body
    # (http rule body "cached_content") and answers one; `GET`/`DELETE /v1beta/{name=cachedContents/*}`.
    "CachedContent": glm.CachedContent.pb().DESCRIPTOR,
    "ListCachedContentsResponse": glm.ListCachedContentsResponse.pb().DESCRIPTOR,
}


def _proto_plus_classes() -> dict[str, type]:
    """full proto name -> proto-plus class (for the attribute docs that carry the Required marks)."""
    found: dict[str, type] = {}

    def visit(cls: type) -> None:
        pb = getattr(cls, "pb", None)
        if callable(pb) and hasattr(cls, "meta"):
            try:
                found[pb().DESCRIPTOR.full_name] = cls
            except (TypeError, AttributeError):
                return
            for _, inner in inspect.getmembers(cls, inspect.isclass):
                if inner is not cls and inner.__qualname__.startswith(cls.__qualname__ + "."):
                    visit(inner)

    for _, cls in inspect.getmembers(glm, inspect.isclass):
        visit(cls)
    return found


_ATTR = re.compile(r"^ {8}(\w+) \(.*\):\n {12}(.*)$", re.MULTILINE)


def required_fields(cls: type | None) -> set[str]:
    """Snake-case field names whose proto comment starts with ``Required.``."""
    if cls is None or not cls.__doc__:
        return set()
    return {m.group(1) for m in _ATTR.finditer(cls.__doc__) if m.group(2).startswith("Required.")}


class Walker:
    def __init__(self) -> None:
        self.defs: dict[str, dict[str, Any]] = {}
        self.names: dict[str, str] = {}  # full proto name -> def name
        self.classes = _proto_plus_classes()

    def def_name(self, full_name: str, wanted: str | None = None) -> str:
        if full_name in self.names:
            return self.names[full_name]
        name = wanted or full_name.rsplit(".", 1)[-1]
        if name in self.defs or name in self.names.values():
            name = full_name.replace(".", "_")
        self.names[full_name] = name
        return name

    def message(self, desc: pd.Descriptor, wanted: str | None = None) -> dict[str, Any]:
        """A reference to ``desc``'s schema, generating it on first use."""
        if desc.full_name in WELL_KNOWN:
            return dict(WELL_KNOWN[desc.full_name])
        known = desc.full_name in self.names
        name = self.def_name(desc.full_name, wanted)
        if not known:
            self.defs[name] = {}  # placeholder against recursion
            self.defs[name] = self._build(desc, name)
        return {"$ref": f"#/$defs/{name}"}

    def _build(self, desc: pd.Descriptor, name: str) -> dict[str, Any]:
        required = required_fields(self.classes.get(desc.full_name))
        props: dict[str, Any] = {}
        req: list[str] = []
        for f in desc.fields:
            props[f.json_name] = self.field(f)
            if f.name in required and (name, f.json_name) not in OVERRIDES:
                req.append(f.json_name)
        schema: dict[str, Any] = {"type": "object", "properties": props, "additionalProperties": False}
        doc = (desc.full_name, self.classes.get(desc.full_name))
        schema["description"] = f"proto {doc[0]}"
        if req:
            schema["required"] = req
        exclusive = [[f.json_name for f in o.fields] for o in desc.oneofs
                     if not (o.name.startswith("_") and len(o.fields) == 1)]
        exclusive_members(schema, exclusive)
        return schema

    def field(self, f: pd.FieldDescriptor) -> dict[str, Any]:
        if f.type == pd.FieldDescriptor.TYPE_MESSAGE and f.message_type.GetOptions().map_entry:
            value = f.message_type.fields_by_name["value"]
            return {"type": "object", "additionalProperties": self.single(value)}
        single = self.single(f)
        if f.is_repeated:
            return {"type": "array", "items": single}
        return single

    def single(self, f: pd.FieldDescriptor) -> dict[str, Any]:
        if f.type == pd.FieldDescriptor.TYPE_MESSAGE:
            return self.message(f.message_type)
        if f.type == pd.FieldDescriptor.TYPE_ENUM:
            return {"type": "string", "enum": [v.name for v in f.enum_type.values]}
        return dict(_SCALARS[f.type])


def exclusive_members(schema: dict[str, Any], groups: list[list[str]]) -> None:
    """Members of one oneof exclude each other: with one present, the others are `false` (checked only for the
    keys present, which keeps validation cheap)."""
    dependent = {a: {"properties": {b: False for b in group if b != a}} for group in groups if len(group) > 1
                 for a in group}
    if dependent:
        schema["dependentSchemas"] = dependent


def ref(name: str) -> dict[str, Any]:
    return {"$ref": f"#/$defs/{name}"}


def closed(props: dict[str, Any], required: tuple[str, ...] = (), one_of: tuple[str, ...] = (),
           exactly_one: bool = False, description: str = "") -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "object", "properties": props, "additionalProperties": False}
    if description:
        schema["description"] = description
    if required:
        schema["required"] = list(required)
    exclusive_members(schema, [list(one_of)])
    if exactly_one:
        schema["anyOf"] = [{"required": [m]} for m in one_of]
    return schema


def packed(schema: dict[str, Any], message: str) -> dict[str, Any]:
    """``schema``'s message packed in a ``google.protobuf.Any``: its JSON fields plus ``@type``."""
    out = json.loads(json.dumps(schema))
    pattern = rf"^type\.googleapis\.com/google\.ai\.generativelanguage\.v1[a-z0-9]*\.{message}$"
    out["properties"] = {"@type": {"type": "string", "pattern": pattern}, **out["properties"]}
    out["required"] = ["@type", *(r for r in out.get("required", []) if (message, r) not in ANSWER_OPTIONAL)]
    out["description"] = f"{message} packed in google.protobuf.Any"
    return out


def envelope(defs: dict[str, dict[str, Any]]) -> None:
    """The batch envelope from the v1beta REST reference (not in the GAPIC package)."""
    states = ["BATCH_STATE_UNSPECIFIED", "BATCH_STATE_PENDING", "BATCH_STATE_RUNNING", "BATCH_STATE_SUCCEEDED",
              "BATCH_STATE_FAILED", "BATCH_STATE_CANCELLED", "BATCH_STATE_EXPIRED"]
    defs["BatchState"] = {"type": "string", "enum": states, "description": "REST v1beta BatchState"}
    stats = {k: INT64 for k in ("requestCount", "successfulRequestCount", "failedRequestCount",
                                "pendingRequestCount")}
    for kind, request, response, batch_method in (
        ("Generate", "GenerateContentRequest", "GenerateContentResponse", "BatchGenerateContentRequest"),
        ("Embed", "EmbedContentRequest", "EmbedContentResponse", "AsyncBatchEmbedContentRequest"),
    ):
        g = kind == "Generate"
        n = {  # REST names of the two families
            "stats": "BatchStats" if g else "EmbedContentBatchStats",
            "req": "InlinedRequest" if g else "InlinedEmbedContentRequest",
            "reqs": "InlinedRequests" if g else "InlinedEmbedContentRequests",
            "input": "InputConfig" if g else "InputEmbedContentConfig",
            "resp": "InlinedResponse" if g else "InlinedEmbedContentResponse",
            "resps": "InlinedResponses" if g else "InlinedEmbedContentResponses",
            "output": "GenerateContentBatchOutput" if g else "EmbedContentBatchOutput",
            "batch": "GenerateContentBatch" if g else "EmbedContentBatch",
            "line": "GenerateContentRequestLine" if g else "EmbedContentRequestLine",
            "result": "GenerateContentResultLine" if g else "EmbedContentResultLine",
            "op": "GenerateContentBatchOperation" if g else "EmbedContentBatchOperation",
        }
        defs[n["stats"]] = closed(dict(stats), description=f"REST v1beta {n['stats']}")
        defs[n["req"]] = closed({"request": ref(request), "metadata": {"type": "object"}}, ("request",),
                                description=f"REST v1beta {n['req']}")
        defs[n["reqs"]] = closed({"requests": {"type": "array", "items": ref(n["req"])}}, ("requests",),
                                 description=f"REST v1beta {n['reqs']}")
        defs[n["input"]] = closed({"fileName": {"type": "string"}, "requests": ref(n["reqs"])},
                                  one_of=("fileName", "requests"), exactly_one=True,
                                  description=f"REST v1beta {n['input']} (oneof source, required)")
        defs[n["resp"]] = closed({"metadata": {"type": "object"}, "error": ref("Status"), "response": ref(response)},
                                 one_of=("error", "response"), description=f"REST v1beta {n['resp']}")
        defs[n["resps"]] = closed({"inlinedResponses": {"type": "array", "items": ref(n["resp"])}},
                                  description=f"REST v1beta {n['resps']}")
        defs[n["output"]] = closed({"responsesFile": {"type": "string"}, "inlinedResponses": ref(n["resps"])},
                                   one_of=("responsesFile", "inlinedResponses"),
                                   description=f"REST v1beta {n['output']} (oneof output)")
        defs[n["batch"]] = closed({
            "model": {"type": "string"}, "name": {"type": "string"}, "displayName": {"type": "string"},
            "inputConfig": ref(n["input"]), "output": ref(n["output"]), "createTime": TIMESTAMP,
            "endTime": TIMESTAMP, "updateTime": TIMESTAMP, "batchStats": ref(n["stats"]),
            "state": ref("BatchState"), "priority": INT64,
        }, ("inputConfig",), description=f"REST v1beta {n['batch']}; see overrides for model and displayName")
        defs[batch_method] = closed({"batch": ref(n["batch"])}, ("batch",),
                                    description=f"REST v1beta {batch_method} body")
        # Batch guide: an uploaded input line is {"key", "request"}; a result line {"key", "response"|"error"}.
        defs[n["line"]] = closed({"key": {"type": "string"}, "request": ref(request)}, ("request",),
                                 description="batch guide: one line of an uploaded JSONL input file")
        defs[n["result"]] = closed({"key": {"type": "string"}, "response": ref(response), "error": ref("Status")},
                                   one_of=("response", "error"), exactly_one=True,
                                   description="batch guide: one line of a responses file")
        # The Operation a create/get/list answers: metadata is the batch packed in an Any, response its output.
        defs[n["batch"] + "Any"] = packed(defs[n["batch"]], n["batch"])
        defs[n["output"] + "Any"] = packed(defs[n["output"]], n["output"])
        defs[n["op"]] = {
            "allOf": [ref("Operation")],
            "properties": {"metadata": ref(n["batch"] + "Any"), "response": ref(n["output"] + "Any")},
            "required": ["name", "metadata"],
            "description": f"google.longrunning.Operation whose metadata is a {n['batch']}",
        }
    defs["BatchOperation"] = {"anyOf": [ref("GenerateContentBatchOperation"), ref("EmbedContentBatchOperation")]}
    defs["ListBatchesResponse"] = {
        "allOf": [ref("ListOperationsResponse")],
        "properties": {"operations": {"type": "array", "items": ref("BatchOperation")}},
        "description": "google.longrunning.ListOperationsResponse of batch Operations (GET /v1beta/batches)",
    }
    # Google's JSON error format (AIP-193): HTTP code, message, google.rpc.Code name, Any details.
    codes = [v.name for v in code_pb2.DESCRIPTOR.enum_types_by_name["Code"].values]
    defs["HttpErrorBody"] = closed({"error": closed({
        "code": {"type": "integer", "minimum": 400, "maximum": 599},
        "message": {"type": "string"},
        "status": {"type": "string", "enum": codes},
        "details": {"type": "array", "items": WELL_KNOWN["google.protobuf.Any"]},
    }, ("code", "message", "status"))}, ("error",), description="JSON error body of an HTTP error (AIP-193)")
    defs["Empty"] = dict(WELL_KNOWN["google.protobuf.Empty"])


def build() -> dict[str, Any]:
    walker = Walker()
    for name, desc in PROTO_ROOTS.items():
        walker.message(desc, name)
    defs = walker.defs
    envelope(defs)
    versions = {d: dist.version(d) for d in ("google-ai-generativelanguage", "googleapis-common-protos",
                                              "protobuf", "google-genai")}
    return {
        "provider": "google",
        "source": (f"GAPIC protos google.ai.generativelanguage.{API_VERSION} (google-ai-generativelanguage), "
                   "google.rpc.Status / google.longrunning.Operation (googleapis-common-protos), proto3 JSON "
                   "mapping; batch envelope from https://ai.google.dev/api/batch-api (v1beta) cross-checked "
                   "against google-genai"),
        "version": ", ".join(f"{k} {v}" for k, v in versions.items()) + f"; API {API_VERSION}",
        "generated": GENERATED,
        "generator": "tests/conformance/generators/google.py",
        "overrides": {f"{m}.{f}": reason for (m, f), reason in {**OVERRIDES, **ENVELOPE_OVERRIDES}.items()},
        "answer_optional": {f"{m}.{f}": reason for (m, f), reason in ANSWER_OPTIONAL.items()},
        "$defs": dict(sorted(defs.items())),
    }


def main() -> None:
    doc = build()
    OUT.write_text(json.dumps(doc, indent=1, sort_keys=False) + "\n", encoding="utf-8")
    print(f"wrote {OUT} ({len(doc['$defs'])} types)", file=sys.stderr)


if __name__ == "__main__":
    main()
