"""How the API talks to the live streams of its workers: frames on a Unix socket, and the
API's asyncio client for one stream (:class:`StreamLink`).

Each worker process serves its streams on ``<data_dir>/run/streams/<worker_id>.sock``
(``jobs/streams.py``), in a directory only the service's user may enter. A frame is a 4-byte
big-endian length of the payload, one byte of kind (``J``: a JSON object, ``A``: audio, PCM16LE
16 kHz mono) and the payload. The first frame of a connection asks something of the worker:

- ``{"op": "count"}`` → ``{"op": "count", "streams": n, "max": m}``, and the worker closes;
- ``{"op": "open", "options": {...}}`` → ``{"op": "opened", "stream": id}`` or
  ``{"op": "refused", "reason": "full" | "bad_options"}``; then audio frames and ``commit``,
  ``clear``, ``finish`` from the API, ``{"op": "event", "event": {...}}`` from the worker, and
  ``{"op": "closed"}`` before the worker closes a stream itself.

The API process imports this module and never the engine: nothing here may pull in ``engine/``
or ``stream/`` (the options travel as a plain dict).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import socket
import struct
import threading
from collections.abc import AsyncIterator, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from hushscribe.jobs.registry import WorkerRegistry
    from hushscribe.settings import Settings
    from hushscribe.stream.session import StreamOptions

HEADER: Final = struct.Struct(">IB")
JSON: Final = ord("J")
AUDIO: Final = ord("A")
KINDS: Final = (JSON, AUDIO)
CONNECT_TIMEOUT_S: Final = 2.0
"""A worker answers ``count`` and ``open`` at once (its I/O thread); else it counts as absent."""
FINISH_TIMEOUT_S: Final = 120.0
"""How long :meth:`StreamLink.finish` waits for the final decode of the open turn (30 s of audio
with beam 5 on a busy CPU, plus loading a model) before it drops the stream."""
BACKLOG: Final = 64
READ_CHUNK: Final = 1 << 16
SUN_PATH_MAX: Final = 100
"""AF_UNIX paths are limited to 108 bytes on Linux; a longer one is reached through the
directory's descriptor (``/proc/self/fd/N/name``)."""


class StreamsFull(Exception):
    """Every stream worker is full: the route answers 429 (before the upgrade) or closes 1013."""


class NoStreamWorker(Exception):
    """No live worker serves streams on this host."""


class FrameError(ValueError):
    """A frame that breaks the protocol: the connection is dropped."""


def socket_dir(settings: Settings) -> Path:
    return settings.data_dir / "run" / "streams"


def socket_path(settings: Settings, worker_id: str) -> Path:
    if not worker_id or "/" in worker_id or worker_id.startswith("."):
        raise ValueError(f"worker id {worker_id!r} cannot name a socket")
    return socket_dir(settings) / f"{worker_id}.sock"


@contextlib.contextmanager
def reachable(path: Path) -> Iterator[str]:
    """A name for ``path`` that fits in ``sun_path`` while the block runs."""
    if len(os.fsencode(path)) <= SUN_PATH_MAX:
        yield str(path)
        return
    fd = os.open(path.parent, os.O_PATH | os.O_DIRECTORY)
    try:
        yield f"/proc/self/fd/{fd}/{path.name}"
    finally:
        os.close(fd)


def listen_unix(path: Path) -> socket.socket:
    """A non-blocking listening socket at ``path``, in a directory only this user may enter (a
    socket left there by a dead worker with the same id is replaced)."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    path.parent.chmod(0o700)
    path.unlink(missing_ok=True)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        with reachable(path) as name:
            listener.bind(name)
        listener.listen(BACKLOG)
    except OSError:
        listener.close()
        raise
    listener.setblocking(False)
    return listener


# --- frames ------------------------------------------------------------------------------------


def encode(kind: int, payload: bytes) -> bytes:
    return HEADER.pack(len(payload), kind) + payload


def encode_json(message: Mapping[str, Any]) -> bytes:
    return encode(JSON, json.dumps(message, ensure_ascii=False, separators=(",", ":")).encode())


def decode_json(payload: bytes) -> dict[str, Any]:
    try:
        message = json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise FrameError(f"not JSON: {exc}") from None
    if not isinstance(message, dict):
        raise FrameError("a JSON frame must hold an object")
    return message


def _check_header(length: int, kind: int, limit: int) -> None:
    if kind not in KINDS:
        raise FrameError(f"unknown frame kind {kind!r}")
    if length > limit:
        raise FrameError(f"frame of {length} bytes is over the limit ({limit})")


class FrameSocket:
    """The worker's end of a connection, on a non-blocking socket: frames in as they complete,
    messages out buffered until the socket takes them (any thread may queue)."""

    def __init__(self, sock: socket.socket, limit: int) -> None:
        self.sock, self.limit = sock, limit
        self.into, self.out = bytearray(), bytearray()
        self.lock = threading.Lock()
        self.closing = False
        """Close once ``out`` is written; read nothing more."""

    def receive(self) -> list[tuple[int, bytes]] | None:
        """The frames completed by what arrived (perhaps none); None when the peer is gone;
        :class:`FrameError` for a bad frame."""
        try:
            data = self.sock.recv(READ_CHUNK)
        except (BlockingIOError, InterruptedError):
            return []
        except OSError:
            return None
        if not data:
            return None
        self.into += data
        frames: list[tuple[int, bytes]] = []
        while len(self.into) >= HEADER.size:
            length, kind = HEADER.unpack_from(self.into)
            _check_header(length, kind, self.limit)
            if len(self.into) < HEADER.size + length:
                break
            frames.append((kind, bytes(self.into[HEADER.size : HEADER.size + length])))
            del self.into[: HEADER.size + length]
        return frames

    def queue(self, message: Mapping[str, Any]) -> int:
        """Queue ``message``; the bytes now waiting."""
        with self.lock:
            self.out += encode_json(message)
            return len(self.out)

    def flush(self) -> int:
        """Write what the socket takes now; the bytes still waiting."""
        with self.lock:
            try:
                del self.out[: self.sock.send(self.out) if self.out else 0]
            except (BlockingIOError, InterruptedError):
                pass
            except OSError:  # the peer is gone
                self.out.clear()
                self.closing = True
            return len(self.out)


async def read_frame(reader: asyncio.StreamReader, limit: int) -> tuple[int, bytes] | None:
    """The next frame, or None at the end of the stream."""
    try:
        header = await reader.readexactly(HEADER.size)
    except asyncio.IncompleteReadError:
        return None
    length, kind = HEADER.unpack(header)
    _check_header(length, kind, limit)
    try:
        return kind, await reader.readexactly(length)
    except asyncio.IncompleteReadError:
        return None


# --- the API's client --------------------------------------------------------------------------


def options_dict(options: StreamOptions | Mapping[str, Any]) -> dict[str, Any]:
    if dataclasses.is_dataclass(options) and not isinstance(options, type):
        return dataclasses.asdict(options)
    return dict(options)  # type: ignore[arg-type]


def worker_error(code: str, message: str, kind: str = "server_error") -> dict[str, Any]:
    return {"type": "error", "error": {"type": kind, "code": code, "message": message}}


_END: Final[dict[str, Any]] = {}


class StreamLink:
    """One live stream on a worker, seen from the API's event loop."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        worker_id: str,
        stream_id: str,
        limit: int,
    ) -> None:
        self.worker_id, self.stream_id = worker_id, stream_id
        self._reader, self._writer, self._limit = reader, writer, limit
        self._events: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._ended = asyncio.Event()
        self._closing = False
        self._task = asyncio.create_task(self._read(), name=f"stream-{stream_id}")

    # --- opening -------------------------------------------------------------------------------

    @classmethod
    async def open(
        cls,
        settings: Settings,
        options: StreamOptions | Mapping[str, Any],
        registry: WorkerRegistry | None = None,
    ) -> StreamLink:
        """A new stream on the least-loaded live worker of this host. The workers are those
        ``registry`` says are alive (when given) whose socket exists, else every socket in the
        directory (a dead worker's refuses the connection). :class:`NoStreamWorker` when none
        answers, :class:`StreamsFull` when all are full."""
        answering = sorted((n, w) for w, n in (await active_streams(settings, registry)).items())
        if not answering:
            raise NoStreamWorker("no worker serves live streams on this host")
        request = {"op": "open", "options": options_dict(options)}
        for _, worker_id in answering:
            link = await _try_open(settings, worker_id, request)
            if link is not None:
                return link
        raise StreamsFull("every worker holds as many streams as it may")

    # --- sending -------------------------------------------------------------------------------

    async def _send(self, frame: bytes) -> None:
        if self._ended.is_set() or self._closing:
            return  # the worker ended the stream: its error event says why
        try:
            self._writer.write(frame)
            await self._writer.drain()
        except (ConnectionError, OSError):
            pass  # the reader sees the end and reports it

    async def append(self, pcm16_16k: bytes) -> None:
        step = self._limit - self._limit % 2
        for start in range(0, len(pcm16_16k), step):
            await self._send(encode(AUDIO, pcm16_16k[start : start + step]))

    async def commit(self) -> None:
        await self._send(encode_json({"op": "commit"}))

    async def clear(self) -> None:
        await self._send(encode_json({"op": "clear"}))

    # --- receiving -----------------------------------------------------------------------------

    async def _read(self) -> None:
        closed_by_worker = False
        try:
            while (frame := await read_frame(self._reader, self._limit)) is not None:
                kind, payload = frame
                message = decode_json(payload) if kind == JSON else {}
                if message.get("op") == "event" and isinstance(message.get("event"), dict):
                    self._events.put_nowait(message["event"])
                elif message.get("op") == "closed":
                    closed_by_worker = True
                    break
        except (ConnectionError, OSError, FrameError):
            pass
        finally:
            if not closed_by_worker and not self._closing:
                lost = "the worker serving this stream stopped; open a new stream"
                self._events.put_nowait(worker_error("worker_lost", lost))
            self._events.put_nowait(_END)
            self._ended.set()
            self._writer.close()  # the stream is over either way

    async def events(self) -> AsyncIterator[dict[str, Any]]:
        """The session's events as they come; ends when the stream ends (after an ``error``
        event when the worker went away)."""
        while (event := await self._events.get()) is not _END:
            yield event
        self._events.put_nowait(_END)  # a second reader ends too

    @property
    def ended(self) -> bool:
        return self._ended.is_set()

    # --- ending --------------------------------------------------------------------------------

    async def finish(self, timeout_s: float = FINISH_TIMEOUT_S) -> None:
        """Decode the open turn's final, deliver its events (to :meth:`events`), then close."""
        await self._send(encode_json({"op": "finish"}))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._ended.wait(), timeout_s)
        await self.close()

    async def close(self) -> None:
        """Drop the stream at once: the worker frees the slot as soon as it sees the close."""
        self._closing = not self._ended.is_set()
        self._writer.close()
        with contextlib.suppress(ConnectionError, OSError):
            await self._writer.wait_closed()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


async def active_streams(
    settings: Settings, registry: WorkerRegistry | None = None
) -> dict[str, int]:
    """The streams each stream worker of this host holds (those that answer), e.g. for metrics."""
    workers = await _candidates(settings, registry)
    loads = await asyncio.gather(*(_count(settings, w) for w in workers))
    return {w: n for w, n in zip(workers, loads, strict=True) if n is not None}


async def _candidates(settings: Settings, registry: WorkerRegistry | None) -> list[str]:
    folder = socket_dir(settings)
    if registry is None:
        names = await asyncio.to_thread(lambda: sorted(folder.glob("*.sock")))
        return [p.stem for p in names]
    here = socket.gethostname()[:255]
    alive = await asyncio.to_thread(registry.alive, settings.jobs.lease_s)
    ids = [w.id for w in alive if w.host == here]
    return [i for i in ids if await asyncio.to_thread((folder / f"{i}.sock").exists)]


async def _connect(
    settings: Settings, worker_id: str, request: Mapping[str, Any]
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, dict[str, Any]] | None:
    """Connected to a worker and its answer to ``request``; None when it does not answer."""
    try:
        with reachable(socket_path(settings, worker_id)) as path:
            connecting = asyncio.open_unix_connection(path)
            reader, writer = await asyncio.wait_for(connecting, CONNECT_TIMEOUT_S)
    except (OSError, ValueError, TimeoutError):
        return None  # gone (a dead worker's socket refuses), or never there
    try:
        writer.write(encode_json(request))
        await writer.drain()
        answering = read_frame(reader, settings.streams.max_frame_bytes)
        frame = await asyncio.wait_for(answering, CONNECT_TIMEOUT_S)
        if frame is None or frame[0] != JSON:
            raise FrameError("no answer")
        return reader, writer, decode_json(frame[1])
    except (OSError, ValueError, TimeoutError):
        writer.close()
        return None


async def _count(settings: Settings, worker_id: str) -> int | None:
    """How many streams the worker holds; None when it does not answer."""
    got = await _connect(settings, worker_id, {"op": "count"})
    if got is None:
        return None
    got[1].close()
    streams = got[2].get("streams")
    return streams if isinstance(streams, int) else None


async def _try_open(
    settings: Settings, worker_id: str, request: Mapping[str, Any]
) -> StreamLink | None:
    got = await _connect(settings, worker_id, request)
    if got is None:
        return None
    reader, writer, answer = got
    if answer.get("op") == "opened":
        stream_id = str(answer.get("stream", ""))
        return StreamLink(reader, writer, worker_id, stream_id, settings.streams.max_frame_bytes)
    writer.close()
    if answer.get("reason") == "bad_options":
        raise ValueError(str(answer.get("message", "bad stream options")))
    return None
