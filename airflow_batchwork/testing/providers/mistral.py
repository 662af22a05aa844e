"""Mistral Files + Batch jobs API, served under ``/mistral`` (reference §6).

Wire behaviour worth knowing:

- A job takes its requests either from uploaded JSONL files (``input_files``, purpose ``batch``) or
  inline (``requests``, fewer than 10,000). Lines are ``{custom_id, body}``; the job names the model
  (a ``model`` inside a body is ignored) and the endpoint. A job with unreadable lines is created and
  then turns ``FAILED`` with ``errors = [{message, count}]``.
- Status: ``QUEUED`` → ``RUNNING`` → ``SUCCESS`` | ``TIMEOUT_EXCEEDED`` (a request carries
  ``[[expire]]``) | ``FAILED``; a cancel goes through ``CANCELLATION_REQUESTED`` to ``CANCELLED``.
  ``completed_requests`` = ``succeeded_requests`` + ``failed_requests``; requests a timeout or a
  cancel stopped are in neither.
- Results of file jobs go to ``output_file`` (successes) and ``error_file`` (the rest). Inline jobs
  get no files (emulator choice; the real behaviour is not documented): their results are returned in
  ``outputs`` by ``GET /v1/batch/jobs/{id}?inline=true``, which works for file jobs too.
- A result line is ``{id, custom_id, response: {status_code, body}, error}``. ``[[error]]`` gives
  status 400 with a Mistral error body; requests stopped by a timeout or a cancel have
  ``response: null`` and ``error`` as a bare string (observed on the real API by third parties).
- Strict, against ``schemas/mistral.json`` (the SDK's types): a create body, an inline request or an
  upload form the types refuse is a 422 ``{"detail": [{loc, msg, type}]}`` (the SDK's
  ``HTTPValidationError``); a file line whose envelope is wrong fails the job, one whose ``body`` is
  not a valid request of the job's endpoint (unknown field, wrong type, bad content chunk, value
  outside an enum) gets a result line with ``response.status_code`` 422 and a Mistral error body.
- Errors are ``{"object": "error", message, type, param, code}``; a 422 is ``{"detail": [...]}``; a
  missing, empty or ``invalid`` key is a 401 ``{"detail": "Unauthorized"}``.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Mapping
from typing import Any

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
    positive_int,
    query_int,
    read_json,
    response_format_schema,
    unix,
)
from airflow_batchwork.testing.providers.files import (
    FileRoutes,
    FileWire,
    jsonl_lines,
    numbered_list,
    short_file_object,
)
from airflow_batchwork.testing.store import (
    BatchError,
    BatchView,
    Item,
    ItemResult,
    Outcome,
    Store,
    StoredFile,
)

__all__ = ["SPEC", "MistralBatchRoutes", "check_request", "error_body"]

NAME = "mistral"
PREFIX = "/mistral"
SUPPORTED_ENDPOINTS = ("/v1/chat/completions", "/v1/embeddings")
# Valid on the real API (SDK `APIEndpoint`) but not emulated: a clear 400 beats a wrong result.
_UNEMULATED_ENDPOINTS = (
    "/v1/fim/completions",
    "/v1/moderations",
    "/v1/chat/moderations",
    "/v1/ocr",
    "/v1/classifications",
    "/v1/chat/classifications",
    "/v1/conversations",
    "/v1/audio/transcriptions",
)
MAX_INLINE_REQUESTS = 10_000
MAX_REQUESTS_PER_BATCH = 1_000_000
DEFAULT_TIMEOUT_HOURS = 24

_STATUS = {
    "validating": "QUEUED",
    "in_progress": "RUNNING",
    "finalizing": "RUNNING",
    "ended": "SUCCESS",
    "expired": "TIMEOUT_EXCEEDED",
    "failed": "FAILED",
    "cancelling": "CANCELLATION_REQUESTED",
    "cancelled": "CANCELLED",
}
_ERROR_TYPES = {429: "rate_limited"}
# The SDK's per-endpoint type of one request (inline entry or file line) and of its body.
_LINE_TYPES = {"/v1/chat/completions": "ChatBatchRequest", "/v1/embeddings": "EmbeddingBatchRequest"}
_BODY_TYPES = {"/v1/chat/completions": "ChatLineBody", "/v1/embeddings": "EmbeddingLineBody"}
_PATH_PART = re.compile(r"\[(\d+)\]|\.?([^.\[]+)")


class ValidationFailed(ApiError):
    """A 422 rendered as ``{"detail": [{loc, msg, type}]}`` (the SDK's ``HTTPValidationError``)."""

    def __init__(self, detail: list[dict[str, Any]]) -> None:
        super().__init__(422, "; ".join(f"{'.'.join(map(str, d['loc']))}: {d['msg']}" for d in detail))
        self.detail = detail


def _loc(path: str) -> list[str | int]:
    """``requests[0].body.messages`` → ``["requests", 0, "body", "messages"]``."""
    if path == "(root)":
        return []
    return [int(index) if index else name for index, name in _PATH_PART.findall(path)]


def schema_problems(name: str, instance: object, *, prefix: tuple[str | int, ...] = ("body",)
                    ) -> list[dict[str, Any]]:
    """FastAPI-style ``detail`` entries for every way ``instance`` breaks Mistral's type ``name``."""
    detail = []
    for problem in conformance.violations(NAME, name, instance):
        path, _, message = problem.partition(": ")
        detail.append({"loc": [*prefix, *_loc(path)], "msg": message, "type": "value_error"})
    return detail


def _check(name: str, instance: object, *, prefix: tuple[str | int, ...] = ("body",)) -> None:
    detail = schema_problems(name, instance, prefix=prefix)
    if detail:
        raise ValidationFailed(detail[:5])


def check_request(request: Request) -> None:
    """Bearer auth: a missing, empty or ``invalid`` key is a 401."""
    if bearer_key(request) in ("", "invalid"):
        raise ApiError(401, "Unauthorized")


def error_body(error: ApiError, request_id: str) -> dict[str, Any]:
    """``{"detail": "Unauthorized"}`` for a 401, else ``{"object": "error", message, type, param, code}``."""
    if error.status == 401:
        return {"detail": error.message}
    if isinstance(error, ValidationFailed):
        return {"detail": error.detail}
    if error.status == 422:
        loc = ["body", error.param] if error.param else ["body"]
        return {"detail": [{"loc": loc, "msg": error.message, "type": "value_error"}]}
    return {"object": "error", **error_fields(error, _ERROR_TYPES, "internal_server_error")}


# -- endpoint bodies (the echo model dressed as Mistral's responses) -----------------------------


def _max_tokens(body: Mapping[str, Any]) -> int | None:
    return positive_int(body, "max_tokens",
                        refuse=lambda name, _: f"Input should be greater than or equal to 1 (body.{name}).")


def _chat(
    body: Mapping[str, Any], model: str, new_id: Callable[[str], str], now: int
) -> tuple[dict[str, Any], int, int]:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages or not all(isinstance(m, dict) for m in messages):
        raise Rejected("Field required: body.messages must be a non-empty list of messages.")
    try:
        reply = chat_tools.reply(body, messages, _max_tokens(body), response_format_schema(body),
                                 required=("required", "any"))
    except chat_tools.ToolChoiceError as exc:
        raise Rejected(str(exc)) from None
    message: dict[str, Any] = {"role": "assistant", "content": reply.text, "tool_calls": None, "prefix": False}
    if reply.tool_call is not None:
        message = {"role": "assistant", "content": "", "prefix": False,
                   "tool_calls": chat_tools.tool_calls(reply.tool_call, new_id)}
    response = {
        "id": new_id("cmpl-"),
        "object": "chat.completion",
        "model": model,
        "created": now,
        "choices": [
            {
                "index": 0,
                "message": message,
                "finish_reason": chat_tools.finish_reason(reply),
            }
        ],
        "usage": chat_tools.usage(reply),
    }
    return response, reply.input_tokens, reply.output_tokens


def _embeddings(
    body: Mapping[str, Any], model: str, new_id: Callable[[str], str], now: int
) -> tuple[dict[str, Any], int, int]:
    value = body.get("input")
    texts = [value] if isinstance(value, str) else value
    if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
        raise Rejected("Field required: body.input must be a string or a list of strings.")
    dimensions = body.get("output_dimension")
    if dimensions is None:
        dimensions = echo.DEFAULT_EMBEDDING_DIMENSIONS
    if isinstance(dimensions, bool) or not isinstance(dimensions, int) or dimensions < 1:
        raise Rejected("Input should be greater than or equal to 1 (body.output_dimension).")
    tokens = echo.count_words(*texts)
    response = {
        "id": new_id("embd-"),
        "object": "list",
        "data": [
            {"object": "embedding", "embedding": echo.embed(text, dimensions), "index": index}
            for index, text in enumerate(texts)
        ],
        "model": model,
        "usage": {"prompt_tokens": tokens, "completion_tokens": 0, "total_tokens": tokens},
    }
    return response, tokens, 0


_ENDPOINTS = {"/v1/chat/completions": _chat, "/v1/embeddings": _embeddings}


# -- objects --------------------------------------------------------------------------------------

_SAMPLE_TYPES = {"batch": "batch_request", "batch_result": "batch_result", "batch_error": "batch_error"}


def _file_object(stored: StoredFile) -> dict[str, Any]:
    # Generated result files are stored with their sample type as purpose; on the wire they are "batch".
    generated = stored.purpose in ("batch_result", "batch_error")
    return {
        **short_file_object(stored),
        "purpose": "batch" if generated else stored.purpose,
        "sample_type": _SAMPLE_TYPES.get(stored.purpose, "instruct"),
        "source": "mistral" if generated else "upload",
        "num_lines": stored.data.count(b"\n") + (0 if stored.data.endswith(b"\n") or not stored.data else 1),
        "mimetype": "application/jsonl",
        "signature": None,
        "expires_at": None,
        "visibility": "workspace",
    }


def _upload_purpose(form: FormData) -> str:
    fields: dict[str, Any] = {k: v for k, v in form.items() if k != "file"}
    if isinstance(fields.get("expiry"), str) and fields["expiry"].lstrip("-").isdigit():
        fields["expiry"] = int(fields["expiry"])  # a multipart field is text; the type is int
    _check("FileUploadForm", fields)
    return str(fields.get("purpose") or "fine-tune")


_FILES = FileWire(
    provider=NAME,
    file_object=_file_object,
    not_found=lambda file_id: ApiError(404, f"File {file_id} not found", code="file_not_found"),
    missing_file=lambda: ApiError(422, "Field required: file", param="file"),
    purpose=_upload_purpose,
    new_file_id=lambda: str(uuid.uuid4()),
    list_style=numbered_list,
    retrieve_extra={"deleted": False},
)


class MistralBatchRoutes:
    """Files + batch jobs handlers over the shared store."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.files = FileRoutes(store, _FILES)

    def routes(self) -> list[BaseRoute]:
        return [
            *self.files.routes("/v1/files"),
            Route("/v1/batch/jobs", self.create_job, methods=["POST"]),
            Route("/v1/batch/jobs", self.list_jobs, methods=["GET"]),
            Route("/v1/batch/jobs/{job_id}", self.get_job, methods=["GET"]),
            Route("/v1/batch/jobs/{job_id}", self.delete_job, methods=["DELETE"]),
            Route("/v1/batch/jobs/{job_id}/cancel", self.cancel_job, methods=["POST"]),
        ]

    # jobs

    def _job(self, job_id: str) -> BatchView:
        return find_batch(self.store, NAME, job_id,
                          ApiError(404, f"Batch job {job_id} not found", code="batch_job_not_found"))

    async def create_job(self, request: Request) -> Response:
        body = await read_json(request)
        _check("CreateBatchJobRequest", body)
        endpoint = body.get("endpoint")
        if endpoint not in SUPPORTED_ENDPOINTS:
            known = endpoint in _UNEMULATED_ENDPOINTS
            raise ApiError(
                422,
                f"Invalid endpoint {endpoint!r}"
                + (" (valid on the real API but not emulated)" if known else "")
                + f"; supported: {', '.join(SUPPORTED_ENDPOINTS)}",
                param="endpoint",
            )
        if body.get("agent_id") is not None:
            raise ApiError(422, "Agent batch jobs are not emulated; give `model`.", param="agent_id")
        model = body.get("model")
        if not isinstance(model, str) or not model:
            raise ApiError(422, "Field required: model", param="model")
        metadata = body.get("metadata")
        if metadata is not None and (
            not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values())
        ):
            raise ApiError(422, "Input should be a valid dictionary of strings: metadata", param="metadata")
        timeout_hours = body.get("timeout_hours", DEFAULT_TIMEOUT_HOURS)
        if isinstance(timeout_hours, bool) or not isinstance(timeout_hours, int) or timeout_hours < 1:
            raise ApiError(422, "Input should be a positive integer: timeout_hours", param="timeout_hours")
        input_files, requests = body.get("input_files"), body.get("requests")
        if (input_files is None) == (requests is None):
            raise ApiError(422, "Give exactly one of `input_files` or `requests`.", param="input_files")
        if requests is not None:
            items, errors = self._inline_items(requests, str(endpoint))
            input_files = []
        else:
            items, errors = self._file_items(input_files, str(endpoint))
        view = self.store.create_batch(
            NAME,
            endpoint=endpoint,
            items=items,
            model=model,
            metadata=metadata,
            errors=errors,
            render=lambda item, outcome: self._render(endpoint, model, timeout_hours, item, outcome),
            on_end=None if requests is not None else self._write_result_files,
            extra={"input_files": list(input_files or ()), "timeout_hours": timeout_hours},
            id_prefix="batch-",
        )
        return JSONResponse(_job_object(view))

    @staticmethod
    def _inline_items(requests: object, endpoint: str
                      ) -> tuple[list[tuple[str, Mapping[str, Any]]], list[BatchError]]:
        if not isinstance(requests, list) or not requests:
            raise ApiError(422, "Input should be a non-empty list: requests", param="requests")
        if len(requests) >= MAX_INLINE_REQUESTS:
            raise ApiError(
                422,
                f"Inline batching supports fewer than {MAX_INLINE_REQUESTS} requests; got {len(requests)}. "
                "Upload a file and use `input_files` instead.",
                param="requests",
            )
        items = []
        detail = []
        for index, entry in enumerate(requests):
            detail += schema_problems(_LINE_TYPES[endpoint], entry, prefix=("body", "requests", index))
            if len(detail) >= 5:
                break
        if detail:
            raise ValidationFailed(detail[:5])
        for index, entry in enumerate(requests):
            items.append((str(entry.get("custom_id") or index), entry["body"]))
        return items, []

    def _file_items(
        self, input_files: object, endpoint: str
    ) -> tuple[list[tuple[str, Mapping[str, Any]]], list[BatchError]]:
        if not isinstance(input_files, list) or not input_files:
            raise ApiError(422, "Input should be a non-empty list: input_files", param="input_files")
        items: list[tuple[str, Mapping[str, Any]]] = []
        errors: list[BatchError] = []
        for file_id in input_files:
            stored = self.files.file(str(file_id))
            if stored.purpose != "batch":
                raise ApiError(
                    422, f"File {file_id} has purpose {stored.purpose!r}; batch input files need 'batch'"
                )
            for lineno, _, line in jsonl_lines(stored.data.decode("utf-8", errors="replace")):
                if not isinstance(line, dict) or not isinstance(line.get("body"), dict):
                    errors.append(
                        BatchError("invalid_line", f"{file_id} line {lineno}: expected {{custom_id, body}}")
                    )
                    continue
                # The envelope is judged here (a bad one fails the job); the body per request, at render.
                envelope = [p for p in conformance.violations(NAME, _LINE_TYPES[endpoint], line)
                            if not p.startswith("body")]
                if envelope:
                    errors.append(BatchError("invalid_line", f"{file_id} line {lineno}: " + "; ".join(envelope[:3])))
                    continue
                items.append((str(line.get("custom_id") or len(items)), line["body"]))
        if not items and not errors:
            errors.append(BatchError("empty_file", "The input files contain no requests."))
        if len(items) > MAX_REQUESTS_PER_BATCH:
            errors.append(
                BatchError("too_many_requests", f"At most {MAX_REQUESTS_PER_BATCH} requests per job.")
            )
        return items, errors

    async def list_jobs(self, request: Request) -> Response:
        page = query_int(request, "page", default=0, low=0, high=1_000_000)
        page_size = query_int(request, "page_size", default=100, low=1, high=1000)
        model = request.query_params.get("model")
        statuses = set(request.query_params.getlist("status"))
        jobs = self.store.batches(NAME)
        if request.query_params.get("order_by", "-created") == "-created":
            jobs.reverse()
        jobs = [
            j
            for j in jobs
            if (model is None or j.model == model) and (not statuses or _STATUS[j.phase] in statuses)
        ]
        chunk = jobs[page * page_size : (page + 1) * page_size]
        return JSONResponse({"data": [_job_object(j) for j in chunk], "object": "list", "total": len(jobs)})

    async def get_job(self, request: Request) -> Response:
        view = self._job(request.path_params["job_id"])
        inline = request.query_params.get("inline", "").lower() == "true"
        job = _job_object(view, inline=inline)
        if job.get("outputs"):
            job["outputs"] = self.store.faults.result_entries(NAME, job["outputs"], id_keys=("id", "custom_id"))
        return JSONResponse(job)

    async def cancel_job(self, request: Request) -> Response:
        view = self._job(request.path_params["job_id"])
        if view.terminal and view.phase != "cancelled":
            raise ApiError(400, f"Cannot cancel a batch job with status {_STATUS[view.phase]}")
        view = self.store.cancel_batch(NAME, view.id) or view
        return JSONResponse(_job_object(view))

    async def delete_job(self, request: Request) -> Response:
        view = self._job(request.path_params["job_id"])
        self.store.delete_batch(NAME, view.id)
        return JSONResponse({"id": view.id, "object": "batch", "deleted": True})

    # results

    def _render(
        self, endpoint: str, model: str, timeout_hours: int, item: Item, outcome: Outcome
    ) -> ItemResult:
        line_id = self.store.new_id("batchreq-")
        if outcome in ("succeeded", "errored"):
            detail = schema_problems(_BODY_TYPES[endpoint], dict(item.body))
            if detail:
                message = "; ".join(f"{'.'.join(map(str, d['loc']))}: {d['msg']}" for d in detail[:5])
                return _rejected(item, line_id, message, 422)
        if outcome == "succeeded":
            try:
                body, input_tokens, output_tokens = _ENDPOINTS[endpoint](
                    item.body, model, self.store.new_id, int(self.store.now())
                )
            except Rejected as exc:
                return _rejected(item, line_id, str(exc))
            line = {
                "id": line_id,
                "custom_id": item.custom_id,
                "response": {"status_code": 200, "body": body},
                "error": None,
            }
            return ItemResult(item.custom_id, "succeeded", line, input_tokens, output_tokens)
        if outcome == "errored" and item.marker == "transient":
            return _rejected(item, line_id, echo.TRANSIENT_MESSAGE, 429, "rate_limited")
        if outcome == "errored":
            return _rejected(
                item, line_id, f"Emulated error: the request contains {echo.marker_token('error')}."
            )
        message = (
            f"Request not processed: the batch job exceeded its timeout of {timeout_hours} hours."
            if outcome == "expired"
            else "Request not processed: the batch job was cancelled."
        )
        return ItemResult(
            item.custom_id,
            outcome,
            {"id": line_id, "custom_id": item.custom_id, "response": None, "error": message},
        )

    def _write_result_files(self, view: BatchView) -> dict[str, Any]:
        # Result files are stored with their sample type as purpose (see _file_object).
        return self.files.write_results(
            view, ("output_file", "batch_result", "batch_result"), ("error_file", "batch_error", "batch_error")
        )


def _rejected(
    item: Item, line_id: str, message: str, status: int = 400, kind: str = "invalid_request_error"
) -> ItemResult:
    error = {
        "object": "error",
        "message": message,
        "type": kind,
        "param": None,
        "code": None,
    }
    line = {
        "id": line_id,
        "custom_id": item.custom_id,
        "response": {"status_code": status, "body": error},
        "error": None,
    }
    return ItemResult(item.custom_id, "errored", line)


def _job_object(view: BatchView, *, inline: bool = False) -> dict[str, Any]:
    counts = view.counts
    job: dict[str, Any] = {
        "id": view.id,
        "object": "batch",
        "input_files": view.extra["input_files"],
        "metadata": dict(view.metadata) if view.metadata else None,
        "endpoint": view.endpoint,
        "model": view.model,
        "agent_id": None,
        "output_file": view.extra.get("output_file"),
        "error_file": view.extra.get("error_file"),
        "errors": [{"message": e.message, "count": 1} for e in view.errors],
        "status": _STATUS[view.phase],
        "created_at": unix(view.created_at),
        "total_requests": counts.total,
        "completed_requests": counts.succeeded + counts.errored,
        "succeeded_requests": counts.succeeded,
        "failed_requests": counts.errored,
        "started_at": unix(view.in_progress_at),
        "completed_at": unix(view.ended_at),
    }
    if inline:
        job["outputs"] = [dict(r.line) for r in view.results] if view.results is not None else None
    return job


SPEC = ProviderSpec(
    name=NAME,
    prefix=PREFIX,
    routes=lambda store: MistralBatchRoutes(store).routes(),
    check_request=check_request,
    error_body=error_body,
    request_id_header="x-request-id",
    request_id_prefix="",
)
