"""A full disk, on a real (tiny) file system, is the typed error ``insufficient_storage`` (507)
and leaves no partial file: for an upload's blob and for the job database."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from hushscribe.errors import InsufficientStorage, status_for_code
from hushscribe.jobs.blobs import BlobStore
from hushscribe.jobs.queue import JobQueue, make_engine
from tests.tmpfs import fill, small_tmpfs


def test_blob_that_does_not_fit_is_insufficient_storage_and_removed(tmp_path: Path) -> None:
    with small_tmpfs(tmp_path / "blobs", "256k") as root:
        store = BlobStore(root)
        writer = store.writer(max_bytes=10_000_000)
        with pytest.raises(InsufficientStorage) as raised:
            for _ in range(100):
                writer.write(b"\1" * 65536)
            writer.commit()
        assert raised.value.status == 507
        assert "disk is full" in raised.value.message
        assert os.listdir(root) == []
        # What fits is still stored: the failed upload's space was given back.
        assert store.write_stream([b"\1" * 100_000], 10_000_000).size == 100_000


def test_blob_failing_at_commit_is_insufficient_storage_and_removed(tmp_path: Path) -> None:
    with small_tmpfs(tmp_path / "blobs", "256k") as root:
        store = BlobStore(root)
        writer = store.writer(max_bytes=10_000_000)
        writer.write(b"\1" * 4000)  # still in the file's buffer
        fill(root)
        with pytest.raises(InsufficientStorage):
            writer.commit()
        assert sorted(os.listdir(root)) == ["filler"]


def test_enqueue_on_a_full_disk_is_insufficient_storage(tmp_path: Path) -> None:
    with small_tmpfs(tmp_path / "db", "512k") as root:
        engine = make_engine(f"sqlite:///{root / 'jobs.db'}")
        try:
            queue = JobQueue(engine)
            fill(root)
            with pytest.raises(InsufficientStorage) as raised:
                for i in range(10_000):
                    queue.enqueue(
                        "alice", "transcribe", "base", {"prompt": "p" * 1000}, f"/b/{i}",
                        "0" * 64, 1, "a.wav",
                    )  # fmt: skip
            assert raised.value.status == 507
            assert status_for_code(raised.value.code) == 507
            assert "disk is full" in raised.value.message
        finally:
            engine.dispose()
