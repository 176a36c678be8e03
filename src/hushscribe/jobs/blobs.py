"""Uploaded media on disk: streamed in with a size cap, hashed on the fly, named at random.

An upload is written to a hidden temporary file in the blob directory and renamed to its final
name only when complete, so a reader never sees half a file and a crash leaves only ``.part``
files (swept by :meth:`BlobStore.sweep_partials`, from the API's housekeeping). The cap is
checked before each chunk is written: one byte over and the partial file is deleted and
:class:`TooLarge` raised, without reading the rest. Names come from ``secrets``, never from the
caller's filename, so a name cannot traverse directories, collide, or tell anything about the
upload.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Final

from hushscribe.errors import InsufficientStorage, TooLarge, is_storage_full
from hushscribe.fsutil import fsync_dir, private_dir

PARTIAL_SUFFIX: Final = ".part"


@dataclass(frozen=True, slots=True)
class Blob:
    """A stored upload: where it is, its SHA-256 (hex) and its size in bytes."""

    path: Path
    sha256: str
    size: int


class BlobWriter:
    """Receives one upload chunk by chunk; :meth:`commit` makes it a :class:`Blob`.

    Any failure (cap crossed, client gone, error in the caller) must end in :meth:`abort`, which
    deletes the partial file; used as a context manager, that happens on its own.
    """

    def __init__(self, root: Path, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.size = 0
        name = secrets.token_hex(16)
        self.path = root / name
        self._partial = root / f".{name}{PARTIAL_SUFFIX}"
        self._hash = hashlib.sha256()
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
        self._file = os.fdopen(os.open(self._partial, flags, 0o600), "wb")
        self._done = False

    def write(self, chunk: bytes) -> None:
        """Append ``chunk``; past the cap :class:`TooLarge`, on a full disk
        :class:`InsufficientStorage` (either after deleting the file)."""
        if self._done:
            raise ValueError("this blob is already committed or aborted")
        if self.size + len(chunk) > self.max_bytes:
            self.abort()
            raise TooLarge(
                f"the upload is larger than the limit of {self.max_bytes:,} bytes; send a "
                "smaller file, or ask the operator to raise audio.max_bytes"
            )
        try:
            self._file.write(chunk)
        except OSError as exc:
            self.abort()
            _raise_if_full(exc)
            raise
        self._hash.update(chunk)
        self.size += len(chunk)

    def commit(self) -> Blob:
        """Flush to disk and give the file its final name."""
        if self._done:
            raise ValueError("this blob is already committed or aborted")
        try:
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
            self._partial.replace(self.path)
            fsync_dir(self.path.parent)
        except OSError as exc:
            self.abort()
            _raise_if_full(exc)
            raise
        except BaseException:
            self.abort()
            raise
        self._done = True
        return Blob(self.path, self._hash.hexdigest(), self.size)

    def abort(self) -> None:
        """Delete the partial file; safe to call more than once, a no-op after commit."""
        if self._done:
            return
        self._done = True
        try:
            self._file.close()  # flushes what is buffered: fails again on a full disk
        except OSError:
            pass
        finally:
            self._partial.unlink(missing_ok=True)

    def __enter__(self) -> BlobWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is not None:
            self.abort()


class BlobStore:
    """A flat directory of uploads, readable only by the service's user (mode 0700)."""

    def __init__(self, root: Path) -> None:
        self.root = private_dir(root).resolve()

    def writer(self, max_bytes: int) -> BlobWriter:
        """A writer for one upload of at most ``max_bytes`` bytes (for push-style parsers)."""
        return BlobWriter(self.root, max_bytes)

    def write_stream(self, chunks: Iterable[bytes], max_bytes: int) -> Blob:
        """Store the upload read from ``chunks``; :class:`TooLarge` past ``max_bytes``."""
        with self.writer(max_bytes) as writer:
            for chunk in chunks:
                writer.write(chunk)
            return writer.commit()

    def existing(self, path: Path | str) -> Path | None:
        """The blob at ``path`` if it is one of this store's and still there (audio kept)."""
        target = Path(path).resolve()
        if target.parent != self.root or not target.is_file():
            return None
        return target

    def delete(self, path: Path | str) -> bool:
        """Delete a blob of this store; False if it was already gone.

        A path outside the store is refused (ValueError): paths come from the database, and a
        corrupted row must not delete an arbitrary file.
        """
        target = Path(path).resolve()
        if target.parent != self.root:
            raise ValueError(f"{path} is not a blob of {self.root}")
        try:
            target.unlink()
        except FileNotFoundError:
            return False
        return True

    def finished_before(self, older_than_s: float, now: float | None = None) -> list[Path]:
        """Complete blobs last written more than ``older_than_s`` ago (for the orphan sweep)."""
        cutoff = (time.time() if now is None else now) - older_than_s
        found: list[Path] = []
        for blob in self.root.iterdir():
            try:
                if not blob.name.startswith(".") and blob.stat().st_mtime < cutoff:
                    found.append(blob)
            except FileNotFoundError:  # deleted meanwhile
                continue
        return found

    def sweep_partials(self, older_than_s: float = 3600.0, now: float | None = None) -> int:
        """Delete partial uploads left by a crash, if older than ``older_than_s``; return how many.

        The age keeps uploads still in progress (in this or another process) safe.
        """
        cutoff = (time.time() if now is None else now) - older_than_s
        removed = 0
        for partial in self.root.glob(f".*{PARTIAL_SUFFIX}"):
            try:
                if partial.stat().st_mtime < cutoff:
                    partial.unlink()
                    removed += 1
            except FileNotFoundError:  # finished or swept by someone else meanwhile
                continue
        return removed


def _raise_if_full(exc: OSError) -> None:
    """A full disk becomes the error the client is shown (507, retry later)."""
    if is_storage_full(exc):
        raise InsufficientStorage(
            "the server's disk is full: the upload could not be stored; retry later, and tell "
            "the operator if this persists"
        ) from exc
