"""Shared by the generators that read pydantic-typed SDKs (Groq, Together, Mistral): turn SDK types
into one strict schema document.

Not imported at runtime (the generators import the SDKs). ``build`` takes ``{name: type}`` where a
type is anything :class:`pydantic.TypeAdapter` accepts (SDK models, TypedDict params, unions, our own
TypedDicts for shapes the SDK leaves untyped), runs pydantic's JSON Schema generation once over all of
them, and makes the result strict:

- every object type with declared properties gets ``additionalProperties: false`` (Stainless models
  are ``extra="allow"`` at runtime for forward compatibility, but the field set they declare is the
  type; an undeclared key is what the conformance suite exists to catch);
- required fields stay required, ``Literal`` values stay enums;
- with ``close_enums``, a ``Union[Literal[...], str]`` (Speakeasy's ``UnrecognizedStr``, Mistral)
  loses its catch-all ``str`` branch, so a value outside the enum fails;
- titles, descriptions and defaults are dropped (they judge nothing).

Nested definitions are stored as ``t.<Name>``; the names we ask for are the top-level keys.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter
from typing_extensions import TypedDict

from tests.conformance.generators import SCHEMAS_DIR

SDK_PREFIX = "t."
_DROP = ("title", "description", "default", "examples", "discriminator", "deprecated")


def _close_enum_union(branches: list[Any]) -> list[Any]:
    """``anyOf`` without a bare ``{"type": "string"}`` when a sibling is a string enum/const."""
    has_enum = any(
        isinstance(b, dict) and (("enum" in b and all(isinstance(v, str) for v in b["enum"]))
                                 or isinstance(b.get("const"), str))
        for b in branches
    )
    if not has_enum:
        return branches
    return [b for b in branches if b != {"type": "string"}]


def strictify(node: Any, *, close_enums: bool, open_objects: Callable[[str], bool], path: str = "") -> Any:
    """A strict copy of a pydantic-generated schema node."""
    if isinstance(node, list):
        return [strictify(n, close_enums=close_enums, open_objects=open_objects, path=path) for n in node]
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _DROP:
            continue
        if key == "properties" and isinstance(value, dict):
            out[key] = {
                name: strictify(sub, close_enums=close_enums, open_objects=open_objects, path=f"{path}.{name}")
                for name, sub in value.items()
            }
        else:
            out[key] = strictify(value, close_enums=close_enums, open_objects=open_objects, path=path)
    if close_enums and isinstance(out.get("anyOf"), list):
        branches = _close_enum_union(out["anyOf"])
        if len(branches) == 1:
            del out["anyOf"]
            out.update(branches[0])
        else:
            out["anyOf"] = branches
    if out.get("type") == "object" and "properties" in out and not open_objects(path):
        out["additionalProperties"] = False
    return out


def build(
    types: Mapping[str, Any],
    *,
    close_enums: bool = False,
    open_objects: Callable[[str], bool] = lambda path: False,
) -> dict[str, Any]:
    """``$defs`` for ``types``: each name maps to its strict schema; nested definitions are ``t.*``."""
    bundle = TypedDict("_Bundle", dict(types))  # type: ignore[misc, operator]  # noqa: UP013 (keys are data)
    raw = TypeAdapter(bundle).json_schema(ref_template="#/$defs/" + SDK_PREFIX + "{model}")
    defs: dict[str, Any] = {}
    for name, sub in (raw.get("$defs") or {}).items():
        defs[SDK_PREFIX + name] = strictify(sub, close_enums=close_enums, open_objects=open_objects, path=name)
    for name, sub in raw["properties"].items():
        defs[name] = strictify(sub, close_enums=close_enums, open_objects=open_objects, path=name)
    _check_refs(defs)
    return defs


def _check_refs(defs: Mapping[str, Any]) -> None:
    def walk(node: Any) -> None:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.removeprefix("#/$defs/") not in defs:
                raise RuntimeError(f"dangling $ref {ref}")
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(defs)


def ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/$defs/{name}"}


def write(provider: str, *, source: str, version: str, generated: str, defs: Mapping[str, Any],
          notes: list[str] | None = None) -> Path:
    """Write ``schemas/<provider>.json`` (sorted, one stable layout so a regeneration diffs cleanly)."""
    doc: dict[str, Any] = {
        "provider": provider,
        "source": source,
        "version": version,
        "generated": generated,
        "generator": f"tests/conformance/generators/{provider}.py",
    }
    if notes:
        doc["notes"] = notes
    doc["$defs"] = dict(sorted(defs.items()))
    path = SCHEMAS_DIR / f"{provider}.json"
    path.write_text(json.dumps(doc, indent=1, sort_keys=False, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"wrote {path} ({len(defs)} definitions)", file=sys.stderr)
    return path
