"""Stream a multipart upload to the blob store, with named limits, before anything else reads it.

Starlette's own form parser spools the whole file before a handler can look at its size. Here the
request body is fed chunk by chunk to python-multipart: the file part goes straight into a blob
(SHA-256 on the fly) and the request is refused with 413 as soon as the cap is crossed, without
reading the rest. On any failure the partial blob is deleted.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
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
MAX_BOUNDARY_CHARS = 200
"""RFC 2046 caps a multipart boundary at 70 characters; clients send 16 to 70. Past 200 the body
is refused (python-multipart itself fails past 256)."""
BATCH_BYTES = 256 * 1024
"""Body bytes parsed (and written to the blob) per trip to a worker thread: large enough that
the hand-off costs nothing next to the disk, small enough that the size cap still bites early."""
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
    if ctype != b"multipart/form-data" or not params.get(b"boundary"):
        raise UnsupportedBody("send the audio as multipart/form-data with a 'file' field")
    if len(params[b"boundary"]) > MAX_BOUNDARY_CHARS:
        raise InvalidRequest(
            f"the multipart boundary is {len(params[b'boundary'])} characters long; "
            f"the limit is {MAX_BOUNDARY_CHARS} (RFC 2046 allows 70)"
        )
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > max_bytes + MULTIPART_OVERHEAD:
        raise TooLarge(f"the upload is {int(length):,} bytes; the limit is {max_bytes:,} bytes")

    upload = Upload()
    state: dict[str, Any] = {
        "headers": {}, "field": b"", "name": "", "writer": None, "h": b"", "ended": False
    }  # fmt: skip
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

    def on_end() -> None:
        state["ended"] = True  # the closing boundary came

    parser = MultipartParser(
        params[b"boundary"],
        callbacks={
            "on_header_field": on_header_field,
            "on_header_value": on_header_value,
            "on_header_end": on_header_end,
            "on_headers_finished": on_headers_finished,
            "on_part_data": on_part_data,
            "on_part_end": on_part_end,
            "on_end": on_end,
        },
    )

    def finish(rest: bytes) -> None:
        parser.write(rest)
        parser.finalize()
        if not state["ended"]:
            raise InvalidRequest(
                "the multipart/form-data body ends without its closing boundary "
                "(the upload was cut short?)"
            )
        if writer_holder:
            upload.blob = writer_holder[0].commit()  # fsync: seconds for a large file

    # Parsing writes the file part to disk: it runs in a thread, a batch of chunks at a time.
    try:
        try:
            batch: list[bytes] = []
            batched = 0
            async for chunk in request.stream():
                batch.append(chunk)
                batched += len(chunk)
                if batched >= BATCH_BYTES:
                    await _off_loop(parser.write, b"".join(batch))
                    batch, batched = [], 0
            await _off_loop(finish, b"".join(batch))
        except FormParserError:
            raise InvalidRequest("the multipart/form-data body is malformed") from None
        except ClientDisconnect:
            raise InvalidRequest("the client closed the connection during the upload") from None
    except BaseException:  # cancellation too: a partial upload never stays on disk
        for w in writer_holder:
            w.abort()
        raise
    if upload.blob is None:
        raise InvalidRequest("the request has no 'file' part with audio")
    return upload


async def _off_loop(fn: Callable[[bytes], object], data: bytes) -> None:
    """``fn(data)`` in a worker thread. If the caller is cancelled meanwhile, the thread (which
    cannot be stopped) is waited for before the cancellation goes on, so that the clean-up that
    follows never races a write still in progress."""
    work = asyncio.ensure_future(asyncio.to_thread(fn, data))
    try:
        await asyncio.shield(work)
    except asyncio.CancelledError:
        await asyncio.wait([work])
        if not work.cancelled():
            work.exception()  # retrieved: the cancellation is what the caller reports
        raise
