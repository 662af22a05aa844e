"""The Files API every file-based provider serves, once: upload, list, get, delete, content, result files.

A provider describes its wire with one :class:`FileWire` (its File object, its not-found error, how it
checks an upload and names the new file, how a list is paged, what a delete answers, the media type of a
download) and mounts :class:`FileRoutes` under its own paths. Files live in the shared store under the
provider's name; downloads of a batch's result files go through the fault model
(:meth:`Faults.result_file <airflow_batchwork.testing.faults.Faults.result_file>`).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from starlette.datastructures import FormData, UploadFile
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from airflow_batchwork.testing.providers.base import ApiError, paginate, query_int, unix
from airflow_batchwork.testing.store import BatchView, Store, StoredFile

__all__ = [
    "FileRoutes",
    "FileWire",
    "ListStyle",
    "cursor_list",
    "jsonl",
    "jsonl_lines",
    "numbered_list",
    "plain_list",
    "short_file_object",
]

FileObject = Callable[[StoredFile], dict[str, Any]]
# Renders one list answer from the request and the provider's files (newest first).
ListStyle = Callable[[Request, Sequence[StoredFile], FileObject], dict[str, Any]]


def cursor_list(request: Request, files: Sequence[StoredFile], render: FileObject) -> dict[str, Any]:
    """OpenAI's list: ``?limit&after&purpose`` → ``{object, data, first_id, last_id, has_more}``."""
    limit = query_int(request, "limit", default=10_000, low=1, high=10_000)
    purpose = request.query_params.get("purpose")
    chosen = [f for f in files if purpose is None or render(f)["purpose"] == purpose]
    page, has_more = paginate(chosen, lambda f: f.id, limit=limit, after=request.query_params.get("after"))
    return {
        "object": "list",
        "data": [render(f) for f in page],
        "first_id": page[0].id if page else None,
        "last_id": page[-1].id if page else None,
        "has_more": has_more,
    }


def numbered_list(request: Request, files: Sequence[StoredFile], render: FileObject) -> dict[str, Any]:
    """Mistral's list: ``?page&page_size&purpose`` (purpose as on the wire) → ``{data, object, total}``."""
    page = query_int(request, "page", default=0, low=0, high=1_000_000)
    page_size = query_int(request, "page_size", default=100, low=1, high=1000)
    purpose = request.query_params.get("purpose")
    chosen = [f for f in files if purpose is None or render(f)["purpose"] == purpose]
    chunk = chosen[page * page_size : (page + 1) * page_size]
    return {"data": [render(f) for f in chunk], "object": "list", "total": len(chosen)}


def plain_list(**envelope: Any) -> ListStyle:
    """A list without paging: ``{**envelope, data}``."""

    def style(request: Request, files: Sequence[StoredFile], render: FileObject) -> dict[str, Any]:
        return {**envelope, "data": [render(f) for f in files]}

    return style


def short_file_object(stored: StoredFile) -> dict[str, Any]:
    """The File object with only ``{id, object, bytes, created_at, filename, purpose}`` (Groq's, xAI's)."""
    return {
        "id": stored.id,
        "object": "file",
        "bytes": stored.size,
        "created_at": unix(stored.created_at),
        "filename": stored.filename,
        "purpose": stored.purpose,
    }


def _deleted(stored: StoredFile) -> dict[str, Any]:
    return {"id": stored.id, "object": "file", "deleted": True}


@dataclass(frozen=True)
class FileWire:
    """One provider's Files API on the wire."""

    provider: str
    """The store namespace (the provider's name)."""
    file_object: FileObject
    """The File object every route answers with."""
    not_found: Callable[[str], ApiError]
    """The error for an unknown file id."""
    missing_file: Callable[[], ApiError] = lambda: ApiError(400, "Missing required parameter: 'file'.")
    """The error for an upload without a ``file`` part."""
    purpose: Callable[[FormData], str] = lambda form: str(form.get("purpose") or "batch")
    """Checks the upload form (raising the provider's error) and returns the purpose to store."""
    new_file_id: Callable[[], str] | None = None
    """The id of an uploaded or result file (default: the store's ``file-...`` ids)."""
    list_style: ListStyle = cursor_list
    retrieve_extra: Mapping[str, Any] = field(default_factory=dict)
    """Keys a GET of one file adds to the File object (Mistral: ``deleted: false``)."""
    deleted: Callable[[StoredFile], dict[str, Any]] = _deleted
    media_type: str = "application/octet-stream"
    """Content type of a download."""


class FileRoutes:
    """The file handlers of one provider over the shared store."""

    def __init__(self, store: Store, wire: FileWire) -> None:
        self.store = store
        self.wire = wire

    def routes(self, base: str = "/files", *, create: bool = True) -> list[Route]:
        """Routes under ``base``; ``create=False`` for providers with their own upload flow."""
        return [
            *([Route(base, self.create_file, methods=["POST"])] if create else []),
            Route(base, self.list_files, methods=["GET"]),
            Route(base + "/{file_id}", self.retrieve_file, methods=["GET"]),
            Route(base + "/{file_id}", self.delete_file, methods=["DELETE"]),
            Route(base + "/{file_id}/content", self.file_content, methods=["GET"]),
        ]

    def file(self, file_id: str) -> StoredFile:
        """The provider's file ``file_id``; the provider's not-found error otherwise."""
        stored = self.store.get_file(self.wire.provider, file_id)
        if stored is None:
            raise self.wire.not_found(file_id)
        return stored

    def add(self, data: bytes, filename: str, purpose: str, file_id: str | None = None) -> StoredFile:
        """Store a file of this provider (with the provider's kind of id unless ``file_id`` is given)."""
        new_id = self.wire.new_file_id
        file_id = file_id or (new_id() if new_id is not None else None)
        return self.store.add_file(self.wire.provider, data, filename, purpose, file_id=file_id)

    async def create_file(self, request: Request) -> Response:
        async with request.form() as form:
            upload = form.get("file")
            if not isinstance(upload, UploadFile):
                raise self.wire.missing_file()
            purpose = self.wire.purpose(form)
            stored = self.add(await upload.read(), upload.filename or "upload.jsonl", purpose)
        return JSONResponse(self.wire.file_object(stored))

    async def list_files(self, request: Request) -> Response:
        newest_first = list(reversed(self.store.files(self.wire.provider)))
        return JSONResponse(self.wire.list_style(request, newest_first, self.wire.file_object))

    async def retrieve_file(self, request: Request) -> Response:
        stored = self.file(request.path_params["file_id"])
        return JSONResponse({**self.wire.file_object(stored), **self.wire.retrieve_extra})

    async def delete_file(self, request: Request) -> Response:
        stored = self.file(request.path_params["file_id"])
        self.store.delete_file(self.wire.provider, stored.id)
        return JSONResponse(self.wire.deleted(stored))

    async def file_content(self, request: Request) -> Response:
        stored = self.file(request.path_params["file_id"])
        return Response(self.store.faults.result_file(self.wire.provider, stored), media_type=self.wire.media_type)

    def write_results(
        self, view: BatchView, succeeded: tuple[str, str, str], others: tuple[str, str, str]
    ) -> dict[str, Any]:
        """A batch's end hook for providers with an output file and an error file.

        ``succeeded`` and ``others`` are ``(extra key, file kind, purpose)``: succeeded lines go to
        ``{batch id}_{kind}.jsonl``, every other line to the second file; a file is only written when it has
        lines. Returns the updates of the batch's ``extra``: each key maps to its file's id, or None.
        """
        results = view.results or ()
        updates: dict[str, Any] = {}
        for (key, kind, purpose), ok in ((succeeded, True), (others, False)):
            lines = [r.line for r in results if (r.outcome == "succeeded") == ok]
            updates[key] = self.add(jsonl(lines), f"{view.id}_{kind}.jsonl", purpose).id if lines else None
        return updates


def jsonl(lines: Sequence[Mapping[str, Any]]) -> bytes:
    """Compact JSONL, one object a line, each ending in a newline."""
    return "".join(json.dumps(line, separators=(",", ":")) + "\n" for line in lines).encode("utf-8")


def jsonl_lines(data: bytes | str) -> Iterator[tuple[int, Any, Any]]:
    """``(line number, raw line, parsed value or None)`` of each non-blank line of an input file.

    ``data`` is the file's bytes, or its decoded text (whose lines end also at Unicode line separators). The
    parsed value is None when the line is not JSON; callers decide what a non-object means.
    """
    lines: list[Any] = data.splitlines()
    for lineno, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        try:
            parsed = json.loads(raw)
        except ValueError:
            parsed = None
        yield lineno, raw, parsed
