"""Model directories for tests: the demo models linked in, and broken ones made from them."""

from __future__ import annotations

import shutil
from pathlib import Path

from hushscribe.engine import ModelStore


def link_demo(
    models: Path, demo_models: Path, names: tuple[str, ...] = ("base", "tiny.en")
) -> None:
    models.mkdir(parents=True, exist_ok=True)
    for name in names:
        (models / name).symlink_to(demo_models / name, target_is_directory=True)


def add_damaged(models: Path, source: Path, name: str = "damaged") -> None:
    """A copy of ``source`` installed with its manifest, then one byte of its weights flipped."""
    ModelStore(models).import_model(source, name)
    with (models / name / "model.bin").open("r+b") as fh:
        fh.seek(10_000_000)
        byte = fh.read(1)
        fh.seek(10_000_000)
        fh.write(bytes([byte[0] ^ 0xFF]))


def add_unloadable(models: Path, source: Path, name: str = "unloadable") -> None:
    """A copy of ``source`` with half its weights cut off, installed with a manifest that matches
    (checksums pass; the engine cannot load it)."""
    staging = models / f".prep-{name}"
    shutil.copytree(source, staging)
    for extra in ("manifest.json", ".verified.json"):
        (staging / extra).unlink(missing_ok=True)
    with (staging / "model.bin").open("r+b") as fh:
        fh.truncate(fh.seek(0, 2) // 2)  # the header is intact, half of the weights are gone
    ModelStore(models).install_prepared(staging, name, "test: truncated weights")
