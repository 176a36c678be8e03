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

import asyncio
import hashlib
import os
import secrets
import time
from collections.abc import AsyncIterable, Iterable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Final

from hushscribe.errors import TooLarge

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
        """Append ``chunk``; raises :class:`TooLarge` (after deleting the file) past the cap."""
        if self._done:
            raise ValueError("this blob is already committed or aborted")
        if self.size + len(chunk) > self.max_bytes:
            self.abort()
            raise TooLarge(
                f"the upload is larger than the limit of {self.max_bytes:,} bytes; send a "
                "smaller file, or ask the operator to raise audio.max_bytes"
            )
        self._hash.update(chunk)
        self._file.write(chunk)
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
            _fsync_dir(self.path.parent)
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
        self._file.close()
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
        root.mkdir(mode=0o700, parents=True, exist_ok=True)
        root.chmod(0o700)  # mkdir's mode is cut by the umask, and the directory may predate us
        self.root = root.resolve()

    def writer(self, max_bytes: int) -> BlobWriter:
        """A writer for one upload of at most ``max_bytes`` bytes (for push-style parsers)."""
        return BlobWriter(self.root, max_bytes)

    def write_stream(self, chunks: Iterable[bytes], max_bytes: int) -> Blob:
        """Store the upload read from ``chunks``; :class:`TooLarge` past ``max_bytes``."""
        with self.writer(max_bytes) as writer:
            for chunk in chunks:
                writer.write(chunk)
            return writer.commit()

    async def write_async(self, chunks: AsyncIterable[bytes], max_bytes: int) -> Blob:
        """:meth:`write_stream` for an asynchronous source such as a request body.

        Chunks are written as they come (into the page cache, quick); the final ``fsync``, which
        can take seconds for a large file, runs in a thread so the event loop keeps serving. If
        the caller is cancelled meanwhile, the finished file is deleted before cancelling.
        """
        with self.writer(max_bytes) as writer:
            async for chunk in chunks:
                writer.write(chunk)
            commit = asyncio.ensure_future(asyncio.to_thread(writer.commit))
        try:
            return await asyncio.shield(commit)
        except asyncio.CancelledError:
            blob = await commit
            self.delete(blob.path)
            raise

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


def _fsync_dir(directory: Path) -> None:
    """Make a rename durable: fsync the directory holding it (POSIX; a no-op elsewhere)."""
    if not hasattr(os, "O_DIRECTORY"):
        return
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
