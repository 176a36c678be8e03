"""The blob store: SHA-256 on the fly, a hard size cap, nothing left behind, random names."""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from hushscribe.errors import TooLarge
from hushscribe.jobs.blobs import BlobStore

CHUNKS = [os.urandom(65536) for _ in range(5)] + [b"tail"]
DATA = b"".join(CHUNKS)


def test_write_stream_hashes_and_stores(tmp_path: Path) -> None:
    store = BlobStore(tmp_path / "blobs")
    blob = store.write_stream(iter(CHUNKS), max_bytes=len(DATA))  # exactly the cap is allowed
    assert blob.sha256 == hashlib.sha256(DATA).hexdigest()
    assert blob.size == len(DATA) == 5 * 65536 + 4
    assert blob.path.read_bytes() == DATA
    assert blob.path.parent == store.root
    assert len(blob.path.name) == 32 and int(blob.path.name, 16) >= 0
    assert os.listdir(store.root) == [blob.path.name]  # no temporary file left
    assert stat.S_IMODE(store.root.stat().st_mode) == 0o700
    assert stat.S_IMODE(blob.path.stat().st_mode) == 0o600


def test_names_are_random(tmp_path: Path) -> None:
    store = BlobStore(tmp_path)
    names = {store.write_stream([b"same"], 10).path.name for _ in range(20)}
    assert len(names) == 20


def test_cap_raises_as_soon_as_crossed_and_leaves_nothing(tmp_path: Path) -> None:
    store = BlobStore(tmp_path / "blobs")
    pulled: list[int] = []

    def endless() -> Iterator[bytes]:
        while True:
            pulled.append(1)
            yield b"x" * 1000

    with pytest.raises(TooLarge) as caught:
        store.write_stream(endless(), max_bytes=2500)
    assert caught.value.code == "too_large" and caught.value.status == 413
    assert "2,500 bytes" in caught.value.message
    assert len(pulled) == 3  # the third chunk crossed the cap; nothing more was read
    assert os.listdir(store.root) == []


def test_error_in_source_leaves_nothing(tmp_path: Path) -> None:
    store = BlobStore(tmp_path)

    def broken() -> Iterator[bytes]:
        yield b"abc"
        raise ConnectionResetError("client went away")

    with pytest.raises(ConnectionResetError):
        store.write_stream(broken(), max_bytes=100)
    assert os.listdir(tmp_path) == []


def test_writer_push_api(tmp_path: Path) -> None:
    store = BlobStore(tmp_path)
    writer = store.writer(max_bytes=10)
    writer.write(b"hello ")
    with pytest.raises(TooLarge):
        writer.write(b"world")
    writer.abort()  # a second abort is harmless
    assert os.listdir(tmp_path) == []
    with pytest.raises(ValueError, match="already"):
        writer.write(b"!")


def test_delete_only_inside_the_store(tmp_path: Path) -> None:
    store = BlobStore(tmp_path / "blobs")
    blob = store.write_stream([b"data"], 10)
    outside = tmp_path / "precious.txt"
    outside.write_text("keep me")
    with pytest.raises(ValueError, match="not a blob"):
        store.delete(store.root / ".." / "precious.txt")
    assert outside.read_text() == "keep me"
    assert store.delete(str(blob.path)) is True
    assert store.delete(blob.path) is False
    assert os.listdir(store.root) == []


def test_sweep_partials_only_old_ones(tmp_path: Path) -> None:
    store = BlobStore(tmp_path)
    stale = store.writer(100)
    stale.write(b"left by a crash")
    [partial] = tmp_path.glob(".*.part")
    os.utime(partial, (1000.0, 1000.0))
    fresh = store.writer(100)
    assert store.sweep_partials(older_than_s=3600) == 1
    assert fresh.commit().path.read_bytes() == b""
    assert os.listdir(tmp_path) == [fresh.path.name]
    stale.abort()
