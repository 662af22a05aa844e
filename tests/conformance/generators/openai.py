"""Generate ``testing/schemas/openai.json`` from OpenAI's published OpenAPI spec.

Run::

    .venv/bin/python -m tests.conformance.generators.openai [--spec-repo GIT_DIR]

The source is the ``openai/openai-openapi`` repository at a pinned commit: with ``--spec-repo`` (or
``$OPENAI_OPENAPI_REPO``) the file is read from a local clone with ``git show``, else it is downloaded
from GitHub at that commit. Only the component schemas our adapter and emulator need are kept: the
named roots below and everything they refer to.

The per-line types of batch files (``BatchRequestInput``, ``BatchRequestOutput``) left the spec on
2025-06-17; they are taken from the last commit that had them (an OpenAPI 3.0 document, so
``nullable`` is converted). That older spec lists no required fields for them; the required lists set
here follow the batch guide (every input line needs ``custom_id``, ``method``, ``url``, ``body``) and
the documented output example (every output line carries ``id``, ``custom_id``, ``response``, ``error``).

Conversion to JSON Schema 2020-12:

- ``$ref: #/components/schemas/X`` becomes ``#/$defs/X``; prose, examples and ``x-`` keys are dropped.
- ``nullable: true`` (OpenAPI 3.0) becomes a ``null`` alternative.
- ``allOf`` of object schemas is merged into one object (properties and required lists united), so the
  merged object can be closed.
- ``oneOf`` becomes ``anyOf``: the spec's unions are not mutually exclusive (an ``EasyInputMessage`` is
  also an ``InputMessage``), and the SDK, generated from the same spec, reads them as plain unions.
- One overlay, ``role_aware_messages``: the Responses ``EasyInputMessage`` takes input parts in
  user/system/developer messages and output parts in assistant messages, as the API does.
- Strictness: every object schema that lists ``properties`` and says nothing about
  ``additionalProperties`` is closed (``additionalProperties: false``), as the SDK's typed params are;
  maps (``additionalProperties`` given, or no ``properties``) stay open.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import subprocess
import urllib.request
from pathlib import Path
from typing import Any

from tests.conformance.generators import SCHEMAS_DIR

SPEC_REPO = "openai/openai-openapi"
SPEC_COMMIT = "f85dbe223d40e1a31cba812ab2d755c7e98a92a3"
SPEC_COMMIT_DATE = "2026-08-21"
SPEC_FILE = "openapi.json"
# The last commit whose spec still defined the batch file line types.
LINES_COMMIT = "498c71ddf6f1c45b983f972ccabca795da211a3e"
LINES_COMMIT_DATE = "2025-04-29"
LINES_FILE = "openapi.yaml"
GENERATED = "2026-12-01"
SDK_CHECKED = "the openai 3.57.0 Python SDK types (tests/conformance/test_openai.py)"

ROOTS = (
    # request bodies, per endpoint (structured output comes with them: ResponseFormatJsonSchema,
    # TextResponseFormatJsonSchema)
    "CreateChatCompletionRequest",
    "CreateResponse",
    "CreateCompletionRequest",
    "CreateEmbeddingRequest",
    # success bodies of those endpoints (inside BatchRequestOutput.response.body)
    "CreateChatCompletionResponse",
    "Response",
    "CreateCompletionResponse",
    "CreateEmbeddingResponse",
    # Responses input items, by name for other OpenAI-shaped providers
    "InputParam",
    "InputItem",
    "EasyInputMessage",
    "InputMessage",
    "OutputMessage",
    "InputContent",
    "InputTextContent",
    "OutputTextContent",
    # Files + Batch API
    "CreateBatchRequest",
    "Batch",
    "ListBatchesResponse",
    "OpenAIFile",
    "ListFilesResponse",
    "DeleteFileResponse",
    # errors
    "ErrorResponse",
    "Error",
)
LINE_TYPES = ("BatchRequestInput", "BatchRequestOutput")

_KEEP = frozenset({
    "type", "properties", "required", "items", "prefixItems", "enum", "const", "anyOf", "allOf", "not",
    "additionalProperties", "minItems", "maxItems", "minimum", "maximum", "exclusiveMinimum",
    "exclusiveMaximum", "minLength", "maxLength", "pattern", "minProperties", "maxProperties", "multipleOf",
    "uniqueItems", "propertyNames",
})
_PREFIX = "#/components/schemas/"


def _git_show(repo: str, commit: str, path: str) -> str:
    return subprocess.run(
        ["git", "-C", repo, "show", f"{commit}:{path}"], check=True, capture_output=True, text=True
    ).stdout


def _download(commit: str, path: str) -> str:
    url = f"https://raw.githubusercontent.com/{SPEC_REPO}/{commit}/{path}"
    with urllib.request.urlopen(url, timeout=120) as response:
        return str(response.read().decode("utf-8"))


def load(repo: str | None, commit: str, path: str) -> dict[str, Any]:
    text = _git_show(repo, commit, path) if repo else _download(commit, path)
    if path.endswith(".json"):
        return dict(json.loads(text))
    import yaml

    return dict(yaml.safe_load(text))


class Converter:
    """OpenAPI component schemas to strict JSON Schema ``$defs``."""

    def __init__(self, schemas: dict[str, Any]) -> None:
        self.schemas = schemas

    def closure(self, roots: tuple[str, ...]) -> list[str]:
        seen: list[str] = []

        def walk(node: Any) -> None:
            if isinstance(node, dict):
                ref = node.get("$ref")
                if isinstance(ref, str) and ref.startswith(_PREFIX):
                    name = ref.removeprefix(_PREFIX)
                    if name not in seen:
                        seen.append(name)
                        walk(self.schemas[name])
                for value in node.values():
                    walk(value)
            elif isinstance(node, list):
                for value in node:
                    walk(value)

        for root in roots:
            if root not in seen:
                seen.append(root)
                walk(self.schemas[root])
        return sorted(seen)

    def _resolve(self, node: dict[str, Any]) -> dict[str, Any]:
        ref = node.get("$ref")
        if isinstance(ref, str):
            return self._resolve(self.schemas[ref.removeprefix(_PREFIX)])
        return node

    def _merge_all_of(self, node: dict[str, Any]) -> dict[str, Any]:
        merged: dict[str, Any] = {"type": "object", "properties": {}, "required": []}
        parts = [self._resolve(part) for part in node["allOf"]]
        rest = {k: v for k, v in node.items() if k != "allOf"}
        for part in [*parts, rest]:
            if "allOf" in part:
                part = self._merge_all_of(part)
            if any(k in part for k in ("anyOf", "oneOf")) or part.get("type", "object") != "object":
                raise NotImplementedError(f"allOf member is not a plain object: {json.dumps(part)[:200]}")
            merged["properties"].update(part.get("properties") or {})
            merged["required"] += [r for r in part.get("required") or () if r not in merged["required"]]
            if "additionalProperties" in part:
                merged["additionalProperties"] = part["additionalProperties"]
        if not merged["required"]:
            del merged["required"]
        return merged

    def convert(self, node: Any) -> Any:
        if isinstance(node, list):
            return [self.convert(v) for v in node]
        if not isinstance(node, dict):
            return node
        if "allOf" in node and all(isinstance(p, dict) for p in node["allOf"]):
            node = self._merge_all_of(node)  # raises on an allOf that cannot be merged: fix the generator
        out: dict[str, Any] = {}
        ref = node.get("$ref")
        if isinstance(ref, str):
            out["$ref"] = "#/$defs/" + ref.removeprefix(_PREFIX)
        for key, value in node.items():
            if key == "oneOf":
                out["anyOf"] = self.convert(value)
            elif key == "properties":
                out["properties"] = {name: self.convert(v) for name, v in value.items()}
            elif key in ("required", "enum", "const", "type", "pattern"):
                out[key] = copy.deepcopy(value)
            elif key in _KEEP:
                out[key] = self.convert(value)
        if "properties" in out:
            out.setdefault("type", "object")
            out.setdefault("additionalProperties", False)
        if node.get("nullable") is True:
            out = self._nullable(out)
        return out

    @staticmethod
    def _nullable(out: dict[str, Any]) -> dict[str, Any]:
        if "$ref" in out or "anyOf" in out or "allOf" in out:
            return {"anyOf": [out, {"type": "null"}]}
        if isinstance(out.get("type"), str):
            out["type"] = [out["type"], "null"]
        elif isinstance(out.get("type"), list) and "null" not in out["type"]:
            out["type"] = [*out["type"], "null"]
        if "enum" in out and None not in out["enum"]:
            out["enum"] = [*out["enum"], None]
        return out


def role_aware_messages(defs: dict[str, Any]) -> None:
    """``EasyInputMessage`` made role-aware (the one overlay on the spec; see the module docstring).

    The spec gives every role the same content list (``input_text``/``input_image``/``input_file``)
    and types assistant history with ``output_text`` parts only as an ``OutputMessage`` that needs an
    ``id`` and a ``status``. The API itself refuses input parts in an assistant message ("Supported
    values are: 'output_text' and 'refusal'") and takes ``output_text``/``refusal`` parts there without
    an id. ``OutputTextContentParam`` is ``OutputTextContent`` as the SDK's ``ResponseOutputTextParam``
    has it: ``annotations`` required, ``logprobs`` optional.
    """
    easy = defs["EasyInputMessage"]
    text_param = copy.deepcopy(defs["OutputTextContent"])
    text_param["required"] = [r for r in text_param["required"] if r != "logprobs"]
    defs["OutputTextContentParam"] = text_param
    user = copy.deepcopy(easy)
    user["properties"]["role"] = {"type": "string", "enum": ["user", "system", "developer"]}
    assistant = copy.deepcopy(easy)
    assistant["properties"]["role"] = {"type": "string", "enum": ["assistant"]}
    assistant["properties"]["content"] = {"anyOf": [
        {"type": "string"},
        {"type": "array", "items": {"anyOf": [{"$ref": "#/$defs/OutputTextContentParam"},
                                              {"$ref": "#/$defs/RefusalContent"}]}},
    ]}
    defs["EasyInputMessage"] = {"anyOf": [user, assistant]}


def line_types(old_schemas: dict[str, Any], endpoints: list[str]) -> dict[str, Any]:
    """The batch file line types from the older spec, with the required lists described above."""
    conv = Converter(old_schemas)
    request_input = conv.convert(old_schemas["BatchRequestInput"])
    request_input["properties"]["url"] = {"type": "string", "enum": endpoints}
    request_input["properties"]["body"] = {"type": "object"}
    request_input["required"] = ["custom_id", "method", "url", "body"]
    output = conv.convert(old_schemas["BatchRequestOutput"])
    output["required"] = ["id", "custom_id", "response", "error"]
    response, error = output["properties"]["response"], output["properties"]["error"]
    response["required"] = ["status_code", "request_id", "body"]
    error["required"] = ["code", "message"]
    return {"BatchRequestInput": request_input, "BatchRequestOutput": output}


def build(repo: str | None) -> dict[str, Any]:
    spec = load(repo, SPEC_COMMIT, SPEC_FILE)
    schemas = spec["components"]["schemas"]
    conv = Converter(schemas)
    defs = {name: conv.convert(schemas[name]) for name in conv.closure(ROOTS)}
    endpoints = list(schemas["CreateBatchRequest"]["properties"]["endpoint"]["enum"])
    old = load(repo, LINES_COMMIT, LINES_FILE)
    role_aware_messages(defs)
    defs.update(line_types(old["components"]["schemas"], endpoints))
    return {
        "provider": "openai",
        "source": f"https://github.com/{SPEC_REPO} ({SPEC_FILE}, OpenAPI {spec['openapi']}, "
                  f"API version {spec['info']['version']}); batch line types from {LINES_FILE} at "
                  f"{LINES_COMMIT[:7]} ({LINES_COMMIT_DATE}); cross-checked against {SDK_CHECKED}",
        "version": f"{SPEC_REPO}@{SPEC_COMMIT} ({SPEC_COMMIT_DATE})",
        "generated": GENERATED,
        "generator": "tests/conformance/generators/openai.py",
        "roots": list(ROOTS) + list(LINE_TYPES),
        "overlays": {"EasyInputMessage": "role-aware content: input_* parts for user/system/developer, "
                                         "output_text/refusal parts for assistant (role_aware_messages)",
                     "OutputTextContentParam": "OutputTextContent with logprobs optional (SDK param type)"},
        "$defs": dict(sorted(defs.items())),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec-repo", default=os.environ.get("OPENAI_OPENAPI_REPO"),
                        help="a local clone (or bare git dir) of openai/openai-openapi; default: download")
    parser.add_argument("--out", default=str(SCHEMAS_DIR / "openai.json"))
    args = parser.parse_args(argv)
    document = build(args.spec_repo)
    Path(args.out).write_text(json.dumps(document, indent=1, sort_keys=False) + "\n", encoding="utf-8")
    print(f"wrote {args.out}: {len(document['$defs'])} types")


if __name__ == "__main__":
    main()
