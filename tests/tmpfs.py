"""A small real file system (tmpfs) for tests that need a full disk. Mounting needs root, which
the test machines and CI have; without it the test fails and says why."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest


@contextmanager
def small_tmpfs(path: Path, size: str) -> Iterator[Path]:
    """Mount a tmpfs of ``size`` (e.g. ``"1m"``) on ``path`` (made if missing), mode 0700."""
    path.mkdir(parents=True, exist_ok=True)
    options = f"size={size},mode=0700"
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True, text=True
    )
    if mounted.returncode != 0:
        pytest.fail(
            f"cannot mount a {size} tmpfs on {path} (the test needs root): {mounted.stderr}"
        )
    try:
        yield path
    finally:
        subprocess.run(["umount", str(path)], check=True)


def fill(directory: Path) -> Path:
    """Write a file in ``directory`` until its file system is full; return the file."""
    filler = directory / "filler"
    with filler.open("wb", buffering=0) as fh:
        for block in (b"\0" * 4096, b"\0"):  # pages, then the last bytes of the last page
            try:
                while True:
                    fh.write(block)
            except OSError:
                pass
    return filler


@contextmanager
def read_only_view(source: Path, path: Path) -> Iterator[Path]:
    """``source`` bind-mounted read-only on ``path``: what a node sees of a volume mounted
    read-only (even root cannot write there)."""
    path.mkdir(parents=True, exist_ok=True)
    for args in (["--bind", str(source), str(path)], ["-o", "remount,ro,bind", str(path)]):
        done = subprocess.run(["mount", *args], capture_output=True, text=True)
        if done.returncode != 0:
            subprocess.run(["umount", str(path)], capture_output=True)
            pytest.fail(
                f"cannot bind-mount {source} read-only (the test needs root): {done.stderr}"
            )
    try:
        yield path
    finally:
        subprocess.run(["umount", str(path)], check=True)
