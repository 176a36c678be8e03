"""The audit log's writer: append-only JSON Lines files, hash-chained, every record MAC'd, with
Ed25519-signed checkpoints; one gap-free sequence for every process that shares the folder.

The files are the record: each append takes an exclusive POSIX lock on ``<dir>/.lock``, reads the
head (the newest file's last complete record; cached, re-read when another process changed the
file), writes one line, syncs it (``fsync = each``) and lets go. A crash mid-write leaves a torn
last line; the next writer leaves that file alone and begins a new one, chained to the last
complete record. A record that cannot be written raises :class:`AuditUnavailable` (fail closed)
unless ``fail_open``. See ``docs/audit.md``.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from hushscribe.audit.events import SERVICE, AuditEvent, Checkpoint
from hushscribe.audit.keys import (
    HEAD_FILE,
    ZERO_HASH,
    AuditKeys,
    canonical,
    file_order,
    line_hash,
    load_or_create,
    log_files,
    parse_record,
    record_mac,
    signed_message,
)
from hushscribe.audit.syslog import SyslogForwarder, forwarder
from hushscribe.errors import AuditUnavailable
from hushscribe.fsutil import atomic_write_bytes, fsync_dir
from hushscribe.settings_audit import AuditSettings

log = logging.getLogger(__name__)

LOCK_FILE: Final = ".lock"
__all__ = ["AuditLog", "AuditUnavailable"]


@dataclass
class _Head:
    """What the newest file ends with, as this process last read it."""

    path: Path | None = None  # the newest file; None: no file yet
    ino: int = 0
    size: int = 0  # bytes of ``path`` read (complete lines, plus a torn tail)
    seq: int = 0  # the last complete record's seq and line hash
    hash: str = ZERO_HASH
    since_cp: int = 0  # records after the last checkpoint
    cp_hash: str = ZERO_HASH  # line hash of the last checkpoint
    last_is_cp: bool = False
    torn: bool = False  # ``path`` ends with a torn line: it takes no more records


_DIR_LOCKS: dict[str, threading.Lock] = {}  # POSIX locks are per process: one thread at a time
_REGISTRY = threading.Lock()


def _after_fork() -> None:
    global _REGISTRY
    _REGISTRY = threading.Lock()
    _DIR_LOCKS.clear()


os.register_at_fork(after_in_child=_after_fork)


def _dir_lock(real_dir: str) -> threading.Lock:
    with _REGISTRY:
        return _DIR_LOCKS.setdefault(real_dir, threading.Lock())


def _record(line: bytes) -> dict[str, Any]:
    if (rec := parse_record(line)) is None:
        raise ValueError(f"a line of the log's end is not a record ({line[:40]!r}…): run "
                         "`hushscribe audit verify`")  # fmt: skip
    return rec


def _now() -> datetime:
    return datetime.now(UTC)


class AuditLog:
    def __init__(self, settings: AuditSettings, audit_dir: Path, keys_dir: Path) -> None:
        self.settings, self.dir, self.keys_dir = settings, audit_dir, keys_dir
        self._real_dir = os.path.realpath(audit_dir)  # the key of this process's lock on it
        self._pid, self._fd_ino, self._dirty, self._synced = -1, 0, False, time.monotonic()
        self._keys: AuditKeys | None = None
        self._head: _Head | None = None
        self._lock_fd: int | None = None
        self._fd: int | None = None  # open on the file of inode ``_fd_ino``; dirty: not synced
        self._timer: threading.Timer | None = None  # the next sync (``fsync = batch``)
        self._syslog: SyslogForwarder | None = None  # a copy to a collector, when configured

    # --- public --------------------------------------------------------------------------------
    def append(self, event: AuditEvent) -> int | None:
        """Write ``event`` as the next record; its seq. None when the log is off, or when it
        could not be written and the log fails open (logged); else :class:`AuditUnavailable`."""
        if not self.settings.enabled:
            return None
        try:
            with self._locked():
                try:
                    return self._append(event)
                except BaseException:
                    self._forget()  # read the head afresh next time
                    raise
        except (OSError, ValueError) as exc:
            if self.settings.fail_open:
                log.warning("audit record %s NOT written (fail_open): %s", event.type, exc)
                return None
            log.error("audit record %s NOT written: %s", event.type, exc)  # the path is here
            why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            message = f"the audit log cannot be written: {why}; nothing was done"
            raise AuditUnavailable(message) from exc

    def close(self) -> None:
        """End with a signed checkpoint (when records follow the last one) and sync."""
        if not self.settings.enabled or self._pid != os.getpid():
            return
        try:
            with self._locked():
                head = self._refresh()
                if head.since_cp and head.path is not None and not head.torn:
                    self._write_checkpoint(head, _now())
                self._sync()
        except (OSError, ValueError) as exc:
            log.warning("audit log: closing checkpoint not written: %s", exc)
        if self._syslog is not None:
            self._syslog.close()
            self._syslog = None
        with _dir_lock(self._real_dir):
            if self._timer is not None:
                self._timer.cancel()
            self._forget()
            if self._lock_fd is not None:
                os.close(self._lock_fd)
            self._lock_fd, self._pid = None, -1

    # --- locking and process state -------------------------------------------------------------
    @contextmanager
    def _locked(self) -> Iterator[None]:
        with _dir_lock(self._real_dir):
            if self._pid != os.getpid():  # first use, or a forked child: its own descriptors
                self._start_process()
            assert self._lock_fd is not None
            fcntl.lockf(self._lock_fd, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.lockf(self._lock_fd, fcntl.LOCK_UN)

    def _start_process(self) -> None:
        for fd in (self._fd, self._lock_fd):
            if fd is not None and self._pid != -1:
                os.close(fd)  # the parent's, inherited: closing our copy leaves the parent's
        self._fd = self._lock_fd = self._head = self._timer = None
        self._dirty = False
        self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        if self._keys is None:
            self._keys = load_or_create(self.keys_dir, self.dir)
        flags = os.O_RDWR | os.O_CREAT | os.O_CLOEXEC
        self._lock_fd = os.open(self.dir / LOCK_FILE, flags, 0o600)
        self._pid = os.getpid()

    def _forget(self) -> None:
        """Drop the cached head and the file descriptor (after an error, and at close)."""
        self._head = None
        if self._fd is not None and self._pid == os.getpid():
            with contextlib.suppress(OSError):
                self._sync()
            os.close(self._fd)
        self._fd, self._dirty = None, False

    # --- the head ------------------------------------------------------------------------------
    def _refresh(self) -> _Head:
        """The head as the files have it now (the lock is held)."""
        head = self._head
        if head is not None and head.path is not None:
            st = head.path.stat() if head.path.exists() else None  # (removed: read afresh)
            if st is not None and st.st_ino == head.ino and st.st_size >= head.size:
                if st.st_size > head.size:  # another process appended: read just that
                    with head.path.open("rb") as f:
                        f.seek(head.size)
                        self._read_forward(head, f.read())
                ended = head.last_is_cp or head.torn or head.size == 0
                if not ended or log_files(self.dir)[-1:] == [head.path]:
                    return head
        self._head = head = self._load()
        return head

    def _read_forward(self, head: _Head, data: bytes) -> None:
        *lines, tail = data.split(b"\n")
        for line in lines:
            rec = _record(line)
            head.seq, head.hash = rec["seq"], line_hash(line)
            self._count(head, rec["type"] == "checkpoint")
        head.size += len(data)
        head.torn = head.torn or bool(tail)

    @staticmethod
    def _count(head: _Head, checkpoint: bool) -> None:
        head.last_is_cp, head.since_cp = checkpoint, 0 if checkpoint else head.since_cp + 1
        head.cp_hash = head.hash if checkpoint else head.cp_hash

    def _load(self) -> _Head:
        """Read the head from the files: the newest one's end, and back to the last checkpoint."""
        files, head = log_files(self.dir), _Head()
        if not files:
            return head
        with files[-1].open("rb") as f:
            head.path, head.ino = files[-1], os.fstat(f.fileno()).st_ino
            data = f.read()
        head.size, head.torn = len(data), not data.endswith(b"\n") and bool(data)
        found_head = False
        for path in reversed(files):
            text = data if path == files[-1] else path.read_bytes()
            for line in reversed(text.split(b"\n")[:-1]):
                rec = _record(line)
                if not found_head:
                    head.seq, head.hash, found_head = rec["seq"], line_hash(line), True
                    head.last_is_cp = rec["type"] == "checkpoint"
                if rec["type"] == "checkpoint":
                    head.cp_hash = line_hash(line)
                    return head
                head.since_cp += 1
        return head

    # --- writing -------------------------------------------------------------------------------
    def _append(self, event: AuditEvent) -> int:
        head, now = self._refresh(), _now()
        day = now.strftime("%Y%m%d")
        order = file_order(head.path) if head.path is not None else None
        reusable = order is not None and order[0] == head.seq + 1  # when empty (a crash)
        if (order is None or head.torn or head.size >= self.settings.rotate_bytes
                or (head.size == 0 and not reusable)
                or (self.settings.rotate_daily and order[2] != day)):  # fmt: skip
            if head.path is not None and head.size and not head.torn and not head.last_is_cp:
                self._write_checkpoint(head, now)  # closes the old file
            self._new_file(head, day)
        seq, _ = self._write(head, self._body(event), now)
        if head.since_cp >= self.settings.checkpoint_every:
            self._write_checkpoint(head, now)
        elif self.settings.fsync == "each":
            self._sync()
        else:
            self._sync_later()
        return seq

    def _body(self, event: AuditEvent) -> dict[str, Any]:
        body, text = event.body(), ("text", "text_included")
        if self.settings.include_text and "text" in body["details"]:
            body["text_included"] = True  # the record is marked: it holds what was said
        else:  # the settings say no transcript in the log, whatever the caller sent
            body["details"] = {k: v for k, v in body["details"].items() if k not in text}
        return body

    def _new_file(self, head: _Head, day: str) -> None:
        self._sync()
        for width in range(6, 40):  # a name taken (by a file holding only a torn record): pad
            path = self.dir / f"audit-{day}-{head.seq + 1:0{width}d}.jsonl"
            with contextlib.suppress(FileExistsError):
                os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600))
                break
        fsync_dir(self.dir)
        head.path, head.ino, head.size = path, path.stat().st_ino, 0
        head.torn = head.last_is_cp = False

    def _fd_for(self, head: _Head) -> int:
        assert head.path is not None
        if self._fd is not None and self._fd_ino != head.ino:
            self._sync()
            os.close(self._fd)
            self._fd = None
        if self._fd is None:
            fd = os.open(head.path, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
            self._fd, self._fd_ino = fd, os.fstat(fd).st_ino
        return self._fd

    def _write(self, head: _Head, body: dict[str, Any], now: datetime) -> tuple[int, bytes]:
        assert self._keys is not None
        seq = head.seq + 1
        record = {"seq": seq, "time": now.strftime("%Y-%m-%dT%H:%M:%S.%fZ"), **body,
                  "prev": head.hash}  # fmt: skip
        record["mac"] = record_mac(self._keys.hmac_key, record)
        line = canonical(record)
        fd = self._fd_for(head)
        view = memoryview(line + b"\n")
        try:
            while view:
                view = view[os.write(fd, view) :]
        except OSError:
            with contextlib.suppress(OSError):  # leave no torn line behind when we can
                os.ftruncate(fd, head.size)
            raise
        self._dirty = True
        head.size += len(line) + 1
        head.seq, head.hash = seq, line_hash(line)
        self._count(head, body["type"] == "checkpoint")
        if self.settings.syslog is not None:
            if self._syslog is None:  # made in the process that writes (workers are spawned)
                self._syslog = forwarder(self.settings.syslog)
            if self._syslog is not None:
                self._syslog.send(json.loads(line))  # queued; never blocks the request
        return seq, line

    def _write_checkpoint(self, head: _Head, now: datetime) -> None:
        """A signed checkpoint over the head; then ``head.json`` (after the line is on disk)."""
        assert self._keys is not None and head.path is not None
        message = signed_message(head.seq, head.hash, head.path.name, head.cp_hash)
        details = {"head_seq": head.seq, "head_hash": head.hash, "file": head.path.name,
                   "public_key_sha256": self._keys.public_sha256,
                   "signature": self._keys.signing_key.sign(message).hex()}  # fmt: skip
        _, line = self._write(head, Checkpoint(actor=SERVICE, details=details).body(), now)
        self._sync()  # on disk before head.json says it is
        atomic_write_bytes(self.dir / HEAD_FILE, line + b"\n", mode=0o600)

    # --- syncing -------------------------------------------------------------------------------
    def _sync(self) -> None:
        if self._dirty and self._fd is not None:
            os.fsync(self._fd)
        self._dirty, self._synced = False, time.monotonic()

    def _sync_later(self) -> None:
        """``fsync = batch``: sync now when the interval has passed, else in a moment."""
        wait = self._synced + self.settings.fsync_interval_s - time.monotonic()
        if wait <= 0:
            self._sync()
        elif self._timer is None or not self._timer.is_alive():
            self._timer = threading.Timer(wait, self._sync_from_timer)
            self._timer.daemon = True
            self._timer.start()

    def _sync_from_timer(self) -> None:
        with _dir_lock(self._real_dir):
            try:
                if self._pid == os.getpid():
                    self._sync()
            except OSError as exc:  # fsync reports a failure once, and only here
                log.error("audit log: fsync failed, recent records may be lost: %s", exc)
