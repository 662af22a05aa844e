"""Together AI Files + Batch API, served under ``/together/v1`` (reference §7).

Wire behaviour worth knowing:

- Two upload flows. ``POST /files/upload`` takes the file in one multipart request (``file``,
  ``file_name``, ``purpose``, ``file_type``). The flow the official ``together`` SDK uses starts with
  ``POST /files`` (form fields ``purpose``, ``file_name``, ``file_type``, ``checksum``), which answers
  302 with ``Location`` (an upload URL on the emulator's origin, authorized by its signature, not by
  the API key) and ``X-Together-File-Id``; the client PUTs the bytes there and then calls
  ``POST /files/{id}/preprocess``. A file already uploaded with the same sha256 ``checksum`` and
  purpose gives 409 ``{"file_id": ...}``, which the SDK turns into a lookup of that file.
- The together 3.x SDK adds ``/v1`` to every path of its base URL, so the routes are also served
  under ``/together/v1/v1/...``: ``emu.base_url("together")`` works unchanged for it and for clients
  that expect the base URL to end in ``/v1``.
- Lines are ``{custom_id, body: {model, messages, ...}}`` (OpenAI-style ``method``/``url`` keys are
  accepted). Problems in the file make the batch ``FAILED`` with an ``error`` string.
- ``POST /batches`` answers 201 ``{"job": BatchJob}``; the other batch routes answer the bare
  BatchJob; ``GET /batches`` is a JSON array. Status: ``VALIDATING`` → ``IN_PROGRESS`` →
  ``COMPLETED`` | ``EXPIRED`` (a request carries ``[[expire]]``) | ``FAILED``; a cancelled batch stays
  ``IN_PROGRESS`` until it stops, then ``CANCELLED`` (the SDK's enum has no ``CANCELING``). Only
  ``progress`` (0-100) is reported.
- File objects are the SDK's ``FileResponse`` (``FileType``, ``processing_status``,
  ``validation_report.nlines``; no ``Processed``/``LineCount``); result files have purpose
  ``batch-api`` (the SDK's ``FilePurpose`` has no ``batch-generated``). ``GET /files`` answers
  ``{data}``, ``DELETE /files/{id}`` ``{id, deleted}``.
- Results: successes in the output file ``{custom_id, response: {status_code, body}}``, the rest in
  the error file ``{custom_id, error: {message, code}}`` with code ``expired`` / ``cancelled`` for
  requests a timeout or a cancel stopped. Chat usage is ``{prompt_tokens, completion_tokens,
  total_tokens}``.
- Strict, against ``schemas/together.json`` (the SDK's types): create bodies and upload forms the
  types refuse get a 400; a line whose envelope is wrong fails the batch, a line whose ``body`` is not
  a valid chat request (unknown field, wrong type, list content on an assistant turn, value outside
  an enum) gets an error-file line ``{custom_id, error: {message, code: "invalid_request_error"}}``.
- Errors: batch routes answer ``{"error": "<message>"}``, file routes and auth
  ``{"error": {message, type, param, code}}``.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from starlette.datastructures import UploadFile
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
    positive_int,
    read_json,
    response_format_schema,
    rfc3339,
    unix,
)
from airflow_batchwork.testing.providers.files import FileRoutes, FileWire, jsonl_lines, plain_list
from airflow_batchwork.testing.store import (
    BatchError,
    BatchView,
    Item,
    ItemResult,
    Outcome,
    Store,
    StoredFile,
)

__all__ = ["SPEC", "BatchApiError", "TogetherRoutes", "check_request", "error_body"]

NAME = "together"
PREFIX = "/together/v1"
UPLOAD_PATH = "/uploads"
SUPPORTED_ENDPOINTS = ("/v1/chat/completions",)
_UNEMULATED_ENDPOINTS = ("/v1/audio/transcriptions", "/v1/audio/translations", "/v1/completions")
RESULT_FILE_PURPOSE = "batch-api"
MAX_REQUESTS_PER_BATCH = 50_000
MAX_FILE_BYTES = 100 * 1024 * 1024
MAX_LINE_BYTES = 10 * 1024 * 1024
MAX_CUSTOM_ID_LENGTH = 64
_DAY = 24 * 3600

_STATUS = {
    "validating": "VALIDATING",
    "in_progress": "IN_PROGRESS",
    "finalizing": "IN_PROGRESS",
    "ended": "COMPLETED",
    "expired": "EXPIRED",
    "failed": "FAILED",
    "cancelling": "IN_PROGRESS",
    "cancelled": "CANCELLED",
}


class BatchApiError(ApiError):
    """An error of the batch routes, rendered as ``{"error": "<message>"}``."""


def check_request(request: Request) -> None:
    """Bearer auth, except for PUTs to upload URLs (authorized by their signature)."""
    if request.method == "PUT" and f"{UPLOAD_PATH}/" in request.url.path:
        return
    if bearer_key(request) in ("", "invalid"):
        error = BatchApiError if "/batches" in request.url.path else ApiError
        raise error(
            401,
            "Invalid API key provided. You can find your API key at https://api.together.xyz/settings/api-keys.",
            type="invalid_request_error",
            code="invalid_api_key",
        )


def error_body(error: ApiError, request_id: str) -> dict[str, Any]:
    """``{"error": "<message>"}`` for batch routes, else ``{"error": {message, type, param, code}}``."""
    if isinstance(error, BatchApiError):
        return {"error": error.message}
    return {"error": error_fields(error)}


def _chat(body: Mapping[str, Any], new_id: Callable[[str], str], now: int) -> tuple[dict[str, Any], int, int]:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages or not all(isinstance(m, dict) for m in messages):
        raise Rejected("messages: expected a non-empty list of message objects")
    max_tokens = positive_int(body, "max_tokens", refuse=lambda name, _: f"{name}: must be a positive integer")
    try:
        reply = chat_tools.reply(body, messages, max_tokens, response_format_schema(body))
    except chat_tools.ToolChoiceError as exc:
        raise Rejected(str(exc)) from None
    message: dict[str, Any] = {"role": "assistant", "content": reply.text, "tool_calls": []}
    if reply.tool_call is not None:
        message = {"role": "assistant", "content": None,
                   "tool_calls": chat_tools.tool_calls(reply.tool_call, new_id, index=True)}
    response = {
        "id": new_id("chatcmpl-"),
        "object": "chat.completion",
        "created": now,
        "model": body["model"],
        "prompt": [],
        "choices": [
            {
                "index": 0,
                "message": message,
                "finish_reason": chat_tools.finish_reason(reply),
                "logprobs": None,
            }
        ],
        "usage": chat_tools.usage(reply),
    }
    return response, reply.input_tokens, reply.output_tokens


def _lines(data: bytes) -> int:
    return sum(1 for line in data.splitlines() if line.strip())


def _file_object(stored: StoredFile, file_type: str = "jsonl") -> dict[str, Any]:
    lines = _lines(stored.data)
    return {
        "id": stored.id,
        "object": "file",
        "created_at": unix(stored.created_at),
        "filename": stored.filename,
        "bytes": stored.size,
        "purpose": stored.purpose,
        "FileType": file_type,
        "processing_status": "COMPLETED",
        "validation_report": {"valid": True, "nlines": lines, "file_id": stored.id},
    }


@dataclass(frozen=True)
class _PendingUpload:
    signature: str
    filename: str
    purpose: str
    file_type: str


class TogetherRoutes:
    """Files + Batch API handlers over the shared store."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._pending: dict[str, _PendingUpload] = {}
        self._file_types: dict[str, str] = {}
        self.files = FileRoutes(store, FileWire(
            provider=NAME,
            file_object=self._file_response,
            not_found=lambda file_id: ApiError(404, f"File {file_id} not found", code="file_not_found", param="id"),
            list_style=plain_list(),
            deleted=lambda stored: {"id": stored.id, "deleted": True},
            media_type="text/plain",
        ))

    def routes(self) -> list[BaseRoute]:
        api: list[tuple[str, Callable[[Request], Any], str]] = [
            ("/files/upload", self.upload_file, "POST"),
            ("/files", self.start_upload, "POST"),
            ("/files/{file_id}/preprocess", self.preprocess_file, "POST"),
            ("/batches", self.create_batch, "POST"),
            ("/batches", self.list_batches, "GET"),
            ("/batches/{batch_id}", self.retrieve_batch, "GET"),
            ("/batches/{batch_id}/cancel", self.cancel_batch, "POST"),
        ]
        routes: list[BaseRoute] = [Route(UPLOAD_PATH + "/{file_id}", self.put_upload, methods=["PUT"])]
        for base in ("", "/v1"):
            routes += [Route(base + path, handler, methods=[method]) for path, handler, method in api]
            routes += self.files.routes(base + "/files", create=False)
        return routes

    # files

    def _file_response(self, stored: StoredFile) -> dict[str, Any]:
        return _file_object(stored, self._file_types.get(stored.id, "jsonl"))

    @staticmethod
    def _check_file_fields(purpose: object, file_name: object, file_type: object,
                           checksum: object = None) -> tuple[str, str, str]:
        form = {k: v for k, v in (("purpose", purpose), ("file_name", file_name), ("file_type", file_type),
                                  ("checksum", checksum)) if v is not None}
        problems = conformance.violations(NAME, "FileUploadForm", form)
        if problems:
            param = problems[0].split(":", 1)[0]
            raise ApiError(400, "Invalid upload: " + "; ".join(problems[:5]),
                           param=None if param == "(root)" else param, code="invalid_value")
        name = str(file_name)
        if file_type is None:
            file_type = name.rsplit(".", 1)[-1] if "." in name else "jsonl"
        return str(purpose), name, str(file_type)

    async def upload_file(self, request: Request) -> Response:
        async with request.form() as form:
            upload = form.get("file")
            if not isinstance(upload, UploadFile):
                raise ApiError(400, "file is required", param="file", code="missing_required_parameter")
            purpose, file_name, file_type = self._check_file_fields(
                form.get("purpose"), form.get("file_name"), form.get("file_type")
            )
            data = await upload.read()
        if len(data) > MAX_FILE_BYTES:
            raise ApiError(413, f"File is larger than {MAX_FILE_BYTES} bytes", code="file_too_large")
        stored = self.files.add(data, file_name, purpose)
        self._file_types[stored.id] = file_type
        return JSONResponse(self._file_response(stored))

    async def start_upload(self, request: Request) -> Response:
        async with request.form() as form:
            checksum = form.get("checksum")
            purpose, file_name, file_type = self._check_file_fields(
                form.get("purpose"), form.get("file_name"), form.get("file_type"), checksum
            )
        if isinstance(checksum, str) and checksum:
            for existing in self.store.files(NAME):
                if existing.purpose == purpose and hashlib.sha256(existing.data).hexdigest() == checksum:
                    return JSONResponse(
                        {
                            "file_id": existing.id,
                            "error": {
                                "message": "File already exists",
                                "type": "conflict",
                                "param": "checksum",
                                "code": "file_exists",
                            },
                        },
                        status_code=409,
                        headers={"x-should-retry": "false"},
                    )
        file_id = self.store.new_id("file-")
        pending = _PendingUpload(secrets.token_urlsafe(16), file_name, purpose, file_type)
        self._pending[file_id] = pending
        origin = f"{request.url.scheme}://{request.url.netloc}"
        location = f"{origin}{PREFIX}{UPLOAD_PATH}/{file_id}?signature={pending.signature}"
        return Response(status_code=302, headers={"Location": location, "X-Together-File-Id": file_id})

    async def put_upload(self, request: Request) -> Response:
        file_id = request.path_params["file_id"]
        pending = self._pending.get(file_id)
        if pending is None or not secrets.compare_digest(
            request.query_params.get("signature", ""), pending.signature
        ):
            return Response(
                "<Error><Code>AccessDenied</Code></Error>", status_code=403, media_type="application/xml"
            )
        data = await request.body()
        if len(data) > MAX_FILE_BYTES:
            return Response(
                "<Error><Code>EntityTooLarge</Code></Error>", status_code=400, media_type="application/xml"
            )
        del self._pending[file_id]
        self.files.add(data, pending.filename, pending.purpose, file_id=file_id)
        self._file_types[file_id] = pending.file_type
        return Response(status_code=200, headers={"ETag": f'"{hashlib.md5(data).hexdigest()}"'})

    async def preprocess_file(self, request: Request) -> Response:
        file_id = request.path_params["file_id"]
        if file_id in self._pending:
            raise ApiError(400, f"File {file_id} has not been uploaded yet", code="file_not_uploaded")
        return JSONResponse(self._file_response(self.files.file(file_id)))

    # batches

    def _batch(self, batch_id: str) -> BatchView:
        return find_batch(self.store, NAME, batch_id, BatchApiError(404, f"batch job {batch_id} not found"))

    async def create_batch(self, request: Request) -> Response:
        try:
            body = await read_json(request)
        except ApiError as exc:
            raise BatchApiError(400, exc.message) from None
        problems = conformance.violations(NAME, "CreateBatchRequest", body)
        if problems:
            raise BatchApiError(400, "invalid batch create body: " + "; ".join(problems[:5]))
        for name in ("input_file_id", "endpoint"):
            if not isinstance(body.get(name), str) or not body[name]:
                raise BatchApiError(400, f"{name} is required")
        endpoint = body["endpoint"]
        if endpoint not in SUPPORTED_ENDPOINTS:
            known = endpoint in _UNEMULATED_ENDPOINTS
            raise BatchApiError(
                400,
                f"invalid endpoint {endpoint!r}"
                + (" (valid on the real API but not emulated)" if known else "")
                + f"; supported: {', '.join(SUPPORTED_ENDPOINTS)}",
            )
        input_file = self.store.get_file(NAME, body["input_file_id"])
        if input_file is None:
            raise BatchApiError(400, f"input file {body['input_file_id']} not found")
        if input_file.purpose != "batch-api":
            raise BatchApiError(
                400, f"input file has purpose {input_file.purpose!r}; batch input needs 'batch-api'"
            )
        items, model, line_errors = _parse_input_file(input_file.data, endpoint)
        model_id = body.get("model_id")
        model = model_id if isinstance(model_id, str) and model_id else model
        view = self.store.create_batch(
            NAME,
            endpoint=endpoint,
            items=items,
            model=model,
            errors=line_errors,
            render=self._render,
            on_end=self._write_result_files,
            extra={"input_file_id": input_file.id, "file_size_bytes": input_file.size},
            id_prefix="batch-",
        )
        answer: dict[str, Any] = {"job": _batch_object(view)}
        window = body.get("completion_window")
        if window not in (None, "24h"):
            answer["warning"] = f"completion_window is fixed at 24h; {window!r} was ignored"
        return JSONResponse(answer, status_code=201)

    async def list_batches(self, request: Request) -> Response:
        return JSONResponse([_batch_object(b) for b in reversed(self.store.batches(NAME))])

    async def retrieve_batch(self, request: Request) -> Response:
        return JSONResponse(_batch_object(self._batch(request.path_params["batch_id"])))

    async def cancel_batch(self, request: Request) -> Response:
        view = self._batch(request.path_params["batch_id"])
        if view.terminal and view.phase != "cancelled":
            raise BatchApiError(400, f"batch job cannot be cancelled in status {_STATUS[view.phase]}")
        view = self.store.cancel_batch(NAME, view.id) or view
        return JSONResponse(_batch_object(view))

    # results

    def _render(self, item: Item, outcome: Outcome) -> ItemResult:
        if outcome in ("succeeded", "errored"):
            problems = conformance.violations(NAME, "ChatCompletionRequest", dict(item.body))
            if problems:
                message = "invalid request body: " + "; ".join(problems[:5])
                return _error_line(item, "errored", message, "invalid_request_error")
        if outcome == "succeeded":
            try:
                body, input_tokens, output_tokens = _chat(item.body, self.store.new_id, int(self.store.now()))
            except Rejected as exc:
                return _error_line(item, "errored", str(exc), "invalid_request_error")
            line = {"custom_id": item.custom_id, "response": {"status_code": 200, "body": body}}
            return ItemResult(item.custom_id, "succeeded", line, input_tokens, output_tokens)
        if outcome == "errored" and item.marker == "transient":
            return _error_line(item, outcome, echo.TRANSIENT_MESSAGE, "timeout")
        if outcome == "errored":
            return _error_line(item, outcome, echo.ERROR_MESSAGE, "emulated_error")
        if outcome == "expired":
            return _error_line(
                item, outcome, "The batch expired before this request was processed.", "expired"
            )
        return _error_line(
            item, outcome, "The batch was cancelled before this request was processed.", "cancelled"
        )

    def _write_result_files(self, view: BatchView) -> dict[str, Any]:
        return self.files.write_results(
            view, ("output_file_id", "output", RESULT_FILE_PURPOSE), ("error_file_id", "error", RESULT_FILE_PURPOSE)
        )


def _error_line(item: Item, outcome: Outcome, message: str, code: str) -> ItemResult:
    return ItemResult(
        item.custom_id, outcome, {"custom_id": item.custom_id, "error": {"message": message, "code": code}}
    )


def _parse_input_file(
    data: bytes, endpoint: str
) -> tuple[list[tuple[str, Mapping[str, Any]]], str | None, list[BatchError]]:
    """(items, model of the first line, problems) of a batch input file."""
    items: list[tuple[str, Mapping[str, Any]]] = []
    problems: list[BatchError] = []
    seen: set[str] = set()
    model: str | None = None
    for lineno, raw, line in jsonl_lines(data):
        if len(raw) > MAX_LINE_BYTES:
            problems.append(
                BatchError("line_too_large", f"line {lineno}: larger than {MAX_LINE_BYTES} bytes", lineno)
            )
            continue
        if not isinstance(line, dict):
            problems.append(BatchError("invalid_json", f"line {lineno}: not a JSON object", lineno))
            continue
        # The envelope is judged here (a bad one fails the batch); the body per request, at render.
        envelope = [p for p in conformance.violations(NAME, "BatchInputLine", line) if not p.startswith("body")]
        if envelope:
            problems.append(BatchError("invalid_line", f"line {lineno}: " + "; ".join(envelope[:3]), lineno))
            continue
        custom_id, body = line.get("custom_id"), line.get("body")
        if not isinstance(custom_id, str) or not 0 < len(custom_id) <= MAX_CUSTOM_ID_LENGTH:
            problems.append(
                BatchError("invalid_custom_id", f"line {lineno}: custom_id must be 1-64 characters", lineno)
            )
            continue
        if custom_id in seen:
            problems.append(
                BatchError("duplicate_custom_id", f"line {lineno}: duplicate custom_id {custom_id!r}", lineno)
            )
            continue
        seen.add(custom_id)
        if line.get("url") not in (None, endpoint):
            problems.append(
                BatchError("url_mismatch", f"line {lineno}: url does not match endpoint {endpoint}", lineno)
            )
            continue
        if not isinstance(body, dict) or not isinstance(body.get("model"), str) or not body["model"]:
            problems.append(BatchError("missing_model", f"line {lineno}: body.model is required", lineno))
            continue
        model = model or body["model"]
        items.append((custom_id, body))
    if not items and not problems:
        problems.append(BatchError("empty_file", "the input file contains no requests"))
    if len(items) > MAX_REQUESTS_PER_BATCH:
        problems.append(
            BatchError("too_many_requests", f"at most {MAX_REQUESTS_PER_BATCH} requests per batch")
        )
    return items, model, problems


def _batch_object(view: BatchView) -> dict[str, Any]:
    counts = view.counts
    total = counts.total
    progress = (
        100.0 if view.phase == "ended" else (100.0 * (total - counts.processing) / total if total else 0.0)
    )
    return {
        "id": view.id,
        "user_id": "emulator-user",
        "input_file_id": view.extra["input_file_id"],
        "file_size_bytes": view.extra["file_size_bytes"],
        "status": _STATUS[view.phase],
        "job_deadline": rfc3339(view.created_at + _DAY),
        "created_at": rfc3339(view.created_at),
        "endpoint": view.endpoint,
        "progress": round(progress, 2),
        "model_id": view.model,
        "output_file_id": view.extra.get("output_file_id"),
        "error_file_id": view.extra.get("error_file_id"),
        "error": "; ".join(e.message for e in view.errors[:5]) or None,
        "completed_at": rfc3339(view.ended_at),
    }


SPEC = ProviderSpec(
    name=NAME,
    prefix=PREFIX,
    routes=lambda store: TogetherRoutes(store).routes(),
    check_request=check_request,
    error_body=error_body,
    request_id_header="x-request-id",
    request_id_prefix="",
)
