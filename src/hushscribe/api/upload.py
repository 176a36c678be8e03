"""Stream a multipart upload to the blob store, with named limits, before anything else reads it.

Starlette's own form parser spools the whole file before a handler can look at its size. Here the
request body is fed chunk by chunk to python-multipart: the file part goes straight into a blob
(SHA-256 on the fly) and the request is refused with 413 as soon as the cap is crossed, without
reading the rest. On any failure the partial blob is deleted.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import ClientDisconnect, Request

from hushscribe.errors import InvalidRequest, TooLarge, UnsupportedBody
from hushscribe.jobs.blobs import Blob, BlobStore, BlobWriter

MAX_FIELDS = 64
"""Form fields besides the file: OpenAI's endpoints take about a dozen."""
MAX_FIELD_BYTES = 16 * 1024
"""One form field: a prompt of 224 tokens is far below this."""
MAX_FILENAME_CHARS = 255
"""File names longer than a file system allows are cut (the name is only shown, never a path)."""
MULTIPART_OVERHEAD = 64 * 1024
"""Room for boundaries and fields in Content-Length on top of the file cap."""
FILE_FIELD = "file"


@dataclass
class Upload:
    fields: dict[str, list[str]] = field(default_factory=dict)
    blob: Blob | None = None
    filename: str = ""

    def first(self, name: str) -> str | None:
        values = self.fields.get(name)
        return values[0] if values else None


def _disposition(headers: dict[bytes, bytes]) -> tuple[str, str | None]:
    raw = headers.get(b"content-disposition", b"")
    _, params = parse_options_header(raw)
    name = params.get(b"name", b"").decode("utf-8", "replace")
    filename = params.get(b"filename")
    return name, (filename.decode("utf-8", "replace") if filename is not None else None)


def _clean_filename(name: str) -> str:
    base = name.replace("\\", "/").rsplit("/", 1)[-1]
    base = "".join(ch for ch in base if ch.isprintable())
    return base[:MAX_FILENAME_CHARS] or "upload"


async def read_upload(request: Request, blobs: BlobStore, max_bytes: int) -> Upload:
    """Parse ``multipart/form-data`` from ``request``; the file part lands in ``blobs``."""
    ctype, params = parse_options_header(request.headers.get("content-type", ""))
    if ctype != b"multipart/form-data" or b"boundary" not in params:
        raise UnsupportedBody("send the audio as multipart/form-data with a 'file' field")
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > max_bytes + MULTIPART_OVERHEAD:
        raise TooLarge(f"the upload is {int(length):,} bytes; the limit is {max_bytes:,} bytes")

    upload = Upload()
    state: dict[str, Any] = {"headers": {}, "field": b"", "name": "", "writer": None, "h": b""}
    writer_holder: list[BlobWriter] = []
    n_fields = 0

    def on_header_field(data: bytes, start: int, end: int) -> None:
        state["h"] += data[start:end]

    def on_header_value(data: bytes, start: int, end: int) -> None:
        key = state["h"].lower()
        state["headers"][key] = state["headers"].get(key, b"") + data[start:end]

    def on_header_end() -> None:
        state["h"] = b""

    def on_headers_finished() -> None:
        nonlocal n_fields
        name, filename = _disposition(state["headers"])
        state["name"] = name
        if filename is not None and name == FILE_FIELD:
            if writer_holder:
                raise InvalidRequest("send exactly one file per request")
            upload.filename = _clean_filename(filename)
            writer_holder.append(blobs.writer(max_bytes))
            state["writer"] = writer_holder[0]
        else:
            n_fields += 1
            if n_fields > MAX_FIELDS:
                raise InvalidRequest(f"too many form fields (limit {MAX_FIELDS})")
            state["writer"] = None
            state["field"] = b""

    def on_part_data(data: bytes, start: int, end: int) -> None:
        writer = state["writer"]
        if writer is not None:
            writer.write(data[start:end])
            return
        state["field"] += data[start:end]
        if len(state["field"]) > MAX_FIELD_BYTES:
            raise InvalidRequest(
                f"form field '{state['name'][:40]}' exceeds {MAX_FIELD_BYTES} bytes"
            )

    def on_part_end() -> None:
        if state["writer"] is None:
            value = state["field"].decode("utf-8", "replace")
            upload.fields.setdefault(state["name"], []).append(value)
        state["headers"] = {}
        state["writer"] = None

    parser = MultipartParser(
        params[b"boundary"],
        callbacks={
            "on_header_field": on_header_field,
            "on_header_value": on_header_value,
            "on_header_end": on_header_end,
            "on_headers_finished": on_headers_finished,
            "on_part_data": on_part_data,
            "on_part_end": on_part_end,
        },
    )
    try:
        try:
            async for chunk in request.stream():
                parser.write(chunk)
            parser.finalize()
        except FormParserError:
            raise InvalidRequest("the multipart/form-data body is malformed") from None
        except ClientDisconnect:
            raise InvalidRequest("the client closed the connection during the upload") from None
        if writer_holder:
            upload.blob = writer_holder[0].commit()
    except BaseException:  # cancellation too: a partial upload never stays on disk
        for w in writer_holder:
            w.abort()
        raise
    if upload.blob is None:
        raise InvalidRequest("the request has no 'file' part with audio")
    return upload
