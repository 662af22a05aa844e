"""Generate ``schemas/mistral.json`` from the official ``mistralai`` Python SDK (Speakeasy, generated
from Mistral's OpenAPI spec): ``.venv/bin/python -m tests.conformance.generators.mistral``.

The SDK's ``*TypedDict`` twins of its models are used (they state which keys are required), with each
key renamed to the wire name the pydantic model gives it (``inputs`` → ``input``, ``size_bytes`` →
``bytes``, ``schema_definition`` → ``schema``). Speakeasy makes every enum open
(``Union[Literal[...], UnrecognizedStr]``); the catch-all is removed, so a value outside the enum fails.
Objects are closed except where the SDK model itself is ``extra="allow"`` (``UsageInfo``).

SDK types: chat and embeddings request bodies, ``BatchRequest`` (the inline entry and the JSONL line
``{custom_id?, body}``), ``CreateBatchJobRequest``, ``BatchJob`` (+ ``BatchJobStatus``), job list and
delete answers, file objects (upload / retrieve / list / delete), the upload form's ``purpose``,
``expiry`` and ``visibility``, chat completion and embedding responses, and the 422
``HTTPValidationError`` body.

Derived here (reasoned): a line's ``body`` is the endpoint's request without a required ``model`` (the
job names the model; Mistral's batch examples leave it out), so ``ChatBatchRequest`` /
``EmbeddingBatchRequest`` are ``BatchRequest`` with that body type. Declared from Mistral's docs and
observed answers (no SDK type): the result line ``{id, custom_id, response: {status_code, body},
error}`` (``error`` may be a bare string) and the error body ``{object: "error", message, type, param,
code}`` / ``{"detail": ...}``.
"""

from __future__ import annotations

import copy
import inspect
from typing import Any, NotRequired

from mistralai.client import _version
from mistralai.client import models as m
from mistralai.client.errors.httpvalidationerror import HTTPValidationErrorData
from pydantic import BaseModel
from typing_extensions import TypedDict

from tests.conformance.generators import _sdk

GENERATED = "2026-12-01"


class FileUploadForm(TypedDict):
    """The non-file multipart fields of ``POST /v1/files`` (SDK ``MultiPartBodyParams``)."""

    purpose: NotRequired[m.FilePurpose]
    expiry: NotRequired[int | None]
    visibility: NotRequired[m.FilesAPIRoutesUploadFileFileVisibility]


class ErrorObject(TypedDict):
    """Mistral's error body as the API sends it (``"object": "error"``)."""

    object: str
    message: str | dict[str, Any]
    type: str
    param: NotRequired[str | None]
    code: NotRequired[str | None]


class DetailError(TypedDict):
    """``{"detail": "Unauthorized"}`` (401) and FastAPI-style ``{"detail": [...]}``."""

    detail: str | list[m.ValidationErrorTypedDict]


class ResultResponse(TypedDict):
    status_code: int
    body: m.ChatCompletionResponseTypedDict | m.EmbeddingResponseTypedDict | ErrorObject


class ResultLine(TypedDict):
    id: str
    custom_id: NotRequired[str | None]
    response: ResultResponse | None
    error: NotRequired[str | dict[str, Any] | None]


TYPES: dict[str, Any] = {
    "ChatCompletionRequest": m.ChatCompletionRequestTypedDict,
    "EmbeddingRequest": m.EmbeddingRequestTypedDict,
    "BatchRequest": m.BatchRequestTypedDict,
    "CreateBatchJobRequest": m.CreateBatchJobRequestTypedDict,
    "BatchJob": m.BatchJobTypedDict,
    "BatchJobList": m.ListBatchJobsResponseTypedDict,
    "BatchJobDeleted": m.DeleteBatchJobResponseTypedDict,
    "FileUploadForm": FileUploadForm,
    "FileCreated": m.CreateFileResponseTypedDict,
    "File": m.GetFileResponseTypedDict,
    "FileList": m.ListFilesResponseTypedDict,
    "FileDeleted": m.DeleteFileResponseTypedDict,
    "ChatCompletion": m.ChatCompletionResponseTypedDict,
    "Embedding": m.EmbeddingResponseTypedDict,
    "ResultLine": ResultLine,
    "ErrorBody": ErrorObject | DetailError,
    "ValidationErrorBody": HTTPValidationErrorData,
}


def _model_pairs() -> dict[str, type[BaseModel]]:
    """``XTypedDict`` name → the pydantic model ``X`` (which knows the wire names and openness)."""
    pairs = {}
    for name, model in inspect.getmembers(m, inspect.isclass):
        if issubclass(model, BaseModel) and hasattr(m, name + "TypedDict"):
            pairs[name + "TypedDict"] = model
    return pairs


def _wire_names(defs: dict[str, Any], pairs: dict[str, type[BaseModel]]) -> None:
    for typed, model in pairs.items():
        node = defs.get(_sdk.SDK_PREFIX + typed)
        aliases = {n: f.alias for n, f in model.model_fields.items() if f.alias and f.alias != n}
        if not node or "properties" not in node or not aliases:
            continue
        node["properties"] = {aliases.get(k, k): v for k, v in node["properties"].items()}
        if "required" in node:
            node["required"] = [aliases.get(k, k) for k in node["required"]]


def _line_body(defs: dict[str, Any], request: str) -> dict[str, Any]:
    body = copy.deepcopy(defs[request.removeprefix("#/$defs/")] if isinstance(request, str) else request)
    body["required"] = [k for k in body.get("required", []) if k != "model"]
    return body


def main() -> None:
    pairs = _model_pairs()
    open_defs = {typed for typed, model in pairs.items() if model.model_config.get("extra") == "allow"}
    defs = _sdk.build(TYPES, close_enums=True, open_objects=lambda path: path in open_defs)
    _wire_names(defs, pairs)
    for name, request in (("Chat", "ChatCompletionRequest"), ("Embedding", "EmbeddingRequest")):
        target = defs[request]["$ref"].removeprefix("#/$defs/")
        defs[f"{name}LineBody"] = _line_body(defs, target)
        line = copy.deepcopy(defs[defs["BatchRequest"]["$ref"].removeprefix("#/$defs/")])
        line["properties"]["body"] = _sdk.ref(f"{name}LineBody")
        defs[f"{name}BatchRequest"] = line
    _sdk.write(
        "mistral",
        source="mistralai Python SDK (models generated by Speakeasy from Mistral's OpenAPI spec): "
               "mistralai.client.models, mistralai.client.errors; result line and error body from "
               "docs.mistral.ai (batch inference) and observed answers",
        version=f"mistralai {_version.__version__} (OpenAPI doc {_version.__openapi_doc_version__}, "
                f"Speakeasy {_version.__gen_version__})",
        generated=GENERATED,
        defs=defs,
    )


if __name__ == "__main__":
    main()
