"""Whole-file writes are all or nothing: the old file or the new one, and no temporary file left
behind by a failure (a full disk, an interrupt)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from hushscribe import fsutil
from hushscribe.fsutil import atomic_write_bytes, private_dir
from tests.tmpfs import small_tmpfs


def test_writes_replaces_and_sets_the_mode(tmp_path: Path) -> None:
    target = tmp_path / "manifest.json"
    atomic_write_bytes(target, b"one")
    assert target.read_bytes() == b"one"
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    atomic_write_bytes(target, b"two", mode=0o644)
    assert target.read_bytes() == b"two"
    assert stat.S_IMODE(target.stat().st_mode) == 0o644
    assert os.listdir(tmp_path) == ["manifest.json"]


def test_a_full_disk_leaves_the_old_file_and_no_temporary_file(tmp_path: Path) -> None:
    with small_tmpfs(tmp_path / "small", "64k") as small:
        target = small / "out.txt"
        atomic_write_bytes(target, b"old")
        with pytest.raises(OSError) as raised:
            atomic_write_bytes(target, b"x" * 1_000_000)
        assert raised.value.errno == 28  # ENOSPC: the write itself failed, half-way
        assert os.listdir(small) == ["out.txt"]
        assert target.read_bytes() == b"old"


def test_an_interrupt_after_the_data_leaves_no_temporary_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def interrupted(fd: int) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(fsutil.os, "fsync", interrupted)
    with pytest.raises(KeyboardInterrupt):
        atomic_write_bytes(tmp_path / "out.txt", b"data")
    assert os.listdir(tmp_path) == []


def test_private_dir_creates_and_tightens(tmp_path: Path) -> None:
    loose = tmp_path / "loose"
    loose.mkdir()
    loose.chmod(0o755)
    for path in (loose, tmp_path / "a" / "b"):
        assert private_dir(path) == path
        assert stat.S_IMODE(path.stat().st_mode) == 0o700
