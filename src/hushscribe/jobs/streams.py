"""The live streams of one worker process: a Unix socket the API connects to (frames:
``stream_link.py``), and one decode loop for all of them.

Two threads. The I/O thread owns the sockets (one ``selectors`` loop): it accepts, reads frames,
feeds audio to each stream's :class:`StreamSession` (cheap: buffering, VAD) and writes what is
queued for each client, so a slow client never holds up the others (one that stops reading is
dropped). The decode thread gathers what every session has to decode, decodes the streams of one
model together (``decode_many``: one batch a step) and hands each session its result; with
nothing to decode it sleeps on a condition that new audio wakes. A client that goes away frees
its slot at once; ``finish`` delivers the open turn's final, then closes. No audio for
``streams.idle_timeout_s``, or ``streams.max_duration_s`` of it: an ``error``, the final, the end.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import secrets
import selectors
import socket
import threading
import time
from typing import Any, Final

import numpy as np

from hushscribe.engine.manager import ModelManager
from hushscribe.engine.streaming import StepRequest, decode_many
from hushscribe.errors import HushscribeError
from hushscribe.jobs.stream_link import (
    AUDIO,
    JSON,
    FrameError,
    FrameSocket,
    decode_json,
    listen_unix,
    socket_path,
    worker_error,
)
from hushscribe.settings import Settings
from hushscribe.stream.session import StreamOptions, StreamSession

log = logging.getLogger("hushscribe.streams")

OUT_LIMIT: Final = 8 << 20
"""Bytes queued for a client that does not read them (hours of captions): then it is dropped."""


class _Conn(FrameSocket):
    stream: _Stream | None = None


@dataclasses.dataclass(eq=False)
class _Stream:
    id: str
    conn: _Conn
    session: StreamSession
    model: str | None
    last_audio: float
    lock: threading.Lock = dataclasses.field(default_factory=threading.Lock)
    """Held while the session is used and its events queued: they go out in order."""
    finishing: bool = False
    """No more input: the final is decoded, then the stream ends."""
    ended: bool = False


class StreamServer:
    """Up to ``streams.max_per_worker`` streams, on ``<data_dir>/run/streams/<worker_id>.sock``."""

    def __init__(self, settings: Settings, worker_id: str, manager: ModelManager) -> None:
        self.settings, self.limits = settings, settings.streams
        self.worker_id, self.manager = worker_id, manager
        self.path = socket_path(settings, worker_id)
        self._streams: dict[str, _Stream] = {}
        self._lock = threading.Lock()  # _streams, _outgoing
        self._outgoing: set[_Conn] = set()
        self._cond = threading.Condition()
        self._dirty = False
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self._io_thread: int | None = None
        self._selector: selectors.BaseSelector | None = None
        self._wake_w: socket.socket | None = None

    @property
    def active(self) -> int:
        """Streams held now (the worker claims no file job while this is above 0)."""
        with self._lock:
            return len(self._streams)

    # --- start and stop ------------------------------------------------------------------------

    def start(self) -> bool:
        """Listen, start both threads; False (logged) when streams are off or cannot be served."""
        if not self.limits.enabled:
            return False
        try:
            listener = listen_unix(self.path)
        except OSError as exc:
            log.error("worker %s cannot serve live streams: %s", self.worker_id, exc)
            return False
        wake_r, self._wake_w = socket.socketpair()
        self._wake_w.setblocking(False)
        self._selector = selectors.DefaultSelector()
        self._selector.register(listener, selectors.EVENT_READ, "listen")
        self._selector.register(wake_r, selectors.EVENT_READ, "wake")
        for target, name in ((self._serve, "streams-io"), (self._decode_loop, "streams-decode")):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)
        return True

    def stop(self) -> None:
        """Stop the threads and drop every stream (its client sees the worker go)."""
        self._stopping.set()
        self._wake()
        with self._cond:
            self._cond.notify_all()
        for thread in self._threads:
            thread.join(10)
        if self._selector is not None:
            for key in list(self._selector.get_map().values()):
                key.fileobj.close()  # type: ignore[union-attr]
            self._selector.close()
            self._selector = None
            self.path.unlink(missing_ok=True)  # no client tries a dead worker
        if self._wake_w is not None:
            self._wake_w.close()

    # --- the I/O thread ------------------------------------------------------------------------

    def _wake(self) -> None:
        if self._wake_w is not None:
            with contextlib.suppress(OSError):  # full: a wake-up is pending anyway
                self._wake_w.send(b"\0")

    def _serve(self) -> None:
        assert self._selector is not None
        self._io_thread = threading.get_ident()
        while not self._stopping.is_set():
            for key, mask in self._selector.select():
                try:
                    if key.data == "listen":
                        self._accept(key.fileobj)  # type: ignore[arg-type]
                    elif key.data == "wake":
                        key.fileobj.recv(4096)  # type: ignore[union-attr]
                    elif mask & selectors.EVENT_READ and not key.data.closing:
                        self._readable(key.data)
                    if isinstance(key.data, _Conn) and mask & selectors.EVENT_WRITE:
                        self._send(key.data)
                except Exception:  # one client's bug never stops the others
                    log.exception("live stream connection failed")
                    if isinstance(key.data, _Conn):
                        self._drop(key.data)
            self._update_outgoing()

    def _accept(self, listener: socket.socket) -> None:
        assert self._selector is not None
        with contextlib.suppress(BlockingIOError, InterruptedError):
            while True:
                sock, _ = listener.accept()
                sock.setblocking(False)
                conn = _Conn(sock, self.limits.max_frame_bytes)
                self._selector.register(sock, selectors.EVENT_READ, conn)

    def _readable(self, conn: _Conn) -> None:
        try:
            frames = conn.receive()
            if frames is None:  # the client went away: its slot is free now
                self._drop(conn)
            for kind, payload in frames or []:
                if not conn.closing:
                    self._handle(conn, kind, payload)
            if frames:
                self._notify()  # new audio, a commit, a finish: the decode loop looks
        except FrameError as exc:
            log.warning("bad frame on a live stream connection: %s", exc)
            if conn.stream is not None:
                self._close(conn.stream, worker_error("bad_frame", "the worker protocol broke"))
            conn.closing = True
            self._send(conn)

    def _update_outgoing(self) -> None:
        """Write interest for the connections that have something queued; close the ones done."""
        assert self._selector is not None
        with self._lock:
            outgoing, self._outgoing = self._outgoing, set()
        for conn in outgoing:
            if conn.sock.fileno() < 0:
                continue
            waiting = conn.flush()
            if waiting > OUT_LIMIT or (conn.closing and not waiting):
                self._drop(conn)
                continue
            read = 0 if conn.closing else selectors.EVENT_READ  # a closing one is not read
            self._selector.modify(conn.sock, read | (selectors.EVENT_WRITE if waiting else 0), conn)

    def _drop(self, conn: _Conn) -> None:
        assert self._selector is not None
        if conn.stream is not None:
            self._forget(conn.stream)
        if conn.sock.fileno() >= 0:
            with contextlib.suppress(KeyError, ValueError):
                self._selector.unregister(conn.sock)
            conn.sock.close()

    def _handle(self, conn: _Conn, kind: int, payload: bytes) -> None:
        stream = conn.stream
        if stream is None:
            message = decode_json(payload) if kind == JSON else {}
            if message.get("op") == "count":
                self._send(conn, {"op": "count", "streams": self.active,
                                  "max": self.limits.max_per_worker})  # fmt: skip
                conn.closing = True
            elif message.get("op") == "open":
                self._open(conn, message.get("options"))
            else:
                raise FrameError("a connection starts with count or open")
        elif kind == AUDIO:
            self._append(stream, payload)
        else:
            op = decode_json(payload).get("op")
            if op not in ("commit", "clear", "finish"):
                raise FrameError(f"unknown op {op!r}")
            with stream.lock:
                if stream.finishing:
                    return
                if op == "finish":
                    self._finishing(stream)
                else:
                    session = stream.session
                    self._emit(stream, session.commit() if op == "commit" else session.clear())

    def _open(self, conn: _Conn, options: Any) -> None:
        if self.active >= self.limits.max_per_worker:
            self._send(conn, {"op": "refused", "reason": "full"})
            conn.closing = True
            return
        try:
            opts = StreamOptions(**(options if isinstance(options, dict) else {}))
            session = StreamSession(opts, step_s=self.limits.step_s)
        except (TypeError, ValueError) as exc:
            self._send(conn, {"op": "refused", "reason": "bad_options", "message": str(exc)[:200]})
            conn.closing = True
            return
        model = opts.model or self.limits.default_model
        stream = _Stream(secrets.token_hex(8), conn, session, model, time.monotonic())
        with self._lock:
            self._streams[stream.id] = stream
        conn.stream = stream
        self._send(conn, {"op": "opened", "stream": stream.id, "worker": self.worker_id})

    def _append(self, stream: _Stream, payload: bytes) -> None:
        if len(payload) % 2:
            raise FrameError("PCM16 audio has an even number of bytes")
        samples = np.frombuffer(payload, dtype="<i2").astype(np.float32) / 32768.0
        with stream.lock:
            if stream.finishing:
                return
            self._emit(stream, stream.session.append(samples))
            over = stream.session.audio_s >= self.limits.max_duration_s
        stream.last_audio = time.monotonic()
        if over:
            limit = self.limits.max_duration_s
            self._limit(stream, "max_duration", f"the stream reached its limit of {limit:g} s")

    def _finishing(self, stream: _Stream) -> None:
        """End the open turn, if any (the caller holds the lock): its final, then the end."""
        stream.finishing = True
        self._emit(stream, [e for e in stream.session.commit() if e.get("type") != "error"])

    def _limit(self, stream: _Stream, code: str, message: str) -> None:
        """A limit ends the stream: its error, then the open turn's final, then the end."""
        with stream.lock:
            if stream.finishing:
                return
            self._emit(stream, [worker_error(code, message, "invalid_request_error")])
            self._finishing(stream)

    def _send(self, conn: _Conn, message: dict[str, Any] | None = None) -> None:
        """Queue ``message`` for ``conn``: the I/O thread writes it (and closes a closing one)."""
        if message is not None:
            conn.queue(message)
        with self._lock:
            self._outgoing.add(conn)
        if threading.get_ident() != self._io_thread:
            self._wake()

    def _emit(self, stream: _Stream, events: list[dict[str, Any]]) -> None:
        for event in events:
            if not stream.ended:
                self._send(stream.conn, {"op": "event", "event": event})

    def _forget(self, stream: _Stream) -> None:
        stream.ended = True
        with self._lock:
            self._streams.pop(stream.id, None)

    def _close(self, stream: _Stream, error: dict[str, Any] | None = None) -> None:
        """End a stream from the worker's side: its error if any, ``closed``, then the socket."""
        with stream.lock:
            if stream.ended:
                return
            self._emit(stream, [error] if error is not None else [])
            self._send(stream.conn, {"op": "closed"})
            self._forget(stream)
        stream.conn.closing = True
        self._send(stream.conn)  # written, then closed

    # --- the decode thread ---------------------------------------------------------------------

    def _notify(self) -> None:
        with self._cond:
            self._dirty = True
            self._cond.notify()

    def _decode_loop(self) -> None:
        while not self._stopping.is_set():
            with self._cond:
                self._dirty = False
            try:
                self._check_idle()
                worked = self._step()
            except Exception:
                log.exception("live stream decode step failed")
                worked = False
            if worked:
                continue
            with self._cond:
                if not self._dirty and not self._stopping.is_set():
                    self._cond.wait(self._next_deadline())

    def _next_deadline(self) -> float | None:
        """Seconds until the first idle stream times out; None (wait for audio) without one."""
        with self._lock:
            waiting = [s.last_audio for s in self._streams.values() if not s.finishing]
        if not waiting:
            return None
        return max(0.01, min(waiting) + self.limits.idle_timeout_s - time.monotonic())

    def _check_idle(self) -> None:
        now, limit = time.monotonic(), self.limits.idle_timeout_s
        with self._lock:
            streams = list(self._streams.values())
        idle = [s for s in streams if not s.finishing and now - s.last_audio >= limit]
        for stream in idle:
            self._limit(stream, "idle_timeout", f"no audio for {limit:g} s; the stream is closed")

    def _step(self) -> bool:
        """One decode of every stream that has something to decode; False when none had."""
        with self._lock:
            streams = list(self._streams.values())
        groups: dict[str | None, list[tuple[_Stream, StepRequest]]] = {}
        for stream in streams:
            try:
                with stream.lock:  # finishing read with pending(): a finish never slips between
                    request = None if stream.ended else stream.session.pending()
                    finishing = stream.finishing
            except Exception:
                self._broken(stream)
                continue
            if request is not None:
                groups.setdefault(stream.model, []).append((stream, request))
            elif finishing:
                self._close(stream)  # its final was delivered
        for model_name, items in groups.items():
            self._decode(model_name, items)
        return bool(groups)

    def _decode(self, model_name: str | None, items: list[tuple[_Stream, StepRequest]]) -> None:
        try:
            with self.manager.use_best(model_name) as (model, _):
                results = decode_many(model, [request for _, request in items])
        except Exception as exc:  # the model cannot be loaded, a bad request, or a bug
            if len(items) > 1:  # one stream's bad request ends that stream only: each alone
                for item in items:
                    self._decode(model_name, [item])
                return
            if isinstance(exc, HushscribeError):
                error = worker_error(exc.code, exc.message, exc.type)
            else:
                log.exception("decoding a live stream failed")
                error = worker_error("internal_error", f"decoding failed ({type(exc).__name__})")
            self._close(items[0][0], error)
            return
        for (stream, request), result in zip(items, results, strict=True):
            try:
                with stream.lock:
                    if not stream.ended:
                        self._emit(stream, stream.session.apply(request, result))
            except Exception:
                self._broken(stream)

    def _broken(self, stream: _Stream) -> None:
        """A session that fails (a bug) ends alone; the other streams go on."""
        log.exception("live stream %s failed", stream.id)
        self._close(stream, worker_error("internal_error", "the stream failed on the worker"))
