#!/usr/bin/env python3
"""Check an offline bundle against its ``SHA256SUMS``: every listed file is there and has its
hash, and nothing is there that the list does not name.

Standalone on purpose: this one file is copied into every bundle as ``verify_bundle.py`` and runs
on the air-gapped host with the system's ``python3`` before anything is installed, so it imports
the standard library only (never hushscribe). ``hushscribe bundle verify`` runs the same code.

    python3 verify_bundle.py [BUNDLE]      # a bundle directory (default: this script's) or .tar.gz

Exit status: 0 when every file checks out, 1 when any is bad, missing or unlisted, 2 when the
bundle cannot be read at all.
"""

from __future__ import annotations

import hashlib
import os
import re
import sys
import tarfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Protocol

SUMS = "SHA256SUMS"
CHUNK = 1024 * 1024
_LINE = re.compile(r"^([0-9a-fA-F]{64}) [ *](.+)$")

Progress = Callable[[int], None]


class Reader(Protocol):
    """What is hashed: an open binary file, or anything that reads like one."""

    def read(self, n: int = -1, /) -> bytes: ...


class BundleUnreadable(Exception):
    """The bundle has no readable ``SHA256SUMS``, or is not a directory or tar archive."""


@dataclass
class Report:
    """What a check found. ``ok`` only when nothing is bad, missing or unlisted."""

    checked: int = 0
    bytes: int = 0
    bad: list[tuple[str, str, str]] = field(default_factory=list)  # (path, actual, expected)
    missing: list[str] = field(default_factory=list)
    unlisted: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.bad or self.missing or self.unlisted)

    def lines(self) -> list[str]:
        """One line per problem, then a summary."""
        out = [f"BAD       {p}: SHA-256 {a}, SHA256SUMS says {e}" for p, a, e in self.bad]
        out += [f"MISSING   {p}" for p in self.missing]
        out += [f"UNLISTED  {p}: not in SHA256SUMS" for p in self.unlisted]
        if self.ok:
            out.append(f"bundle OK: {self.checked} files, {self.bytes / 1e6:,.1f} MB checked")
        else:
            out.append(
                f"bundle FAILED: {len(self.bad)} bad, {len(self.missing)} missing, "
                f"{len(self.unlisted)} unlisted (of {self.checked + len(self.missing)} listed)"
            )
        return out


def parse_sums(text: str) -> dict[str, str]:
    """``SHA256SUMS`` (``sha256sum`` format) as {relative path: lower-case hash}."""
    sums: dict[str, str] = {}
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        match = _LINE.match(line)
        if match is None:
            raise BundleUnreadable(f"{SUMS} line {n} is not '<sha256>  <path>': {line[:80]!r}")
        path = match.group(2)
        pure = PurePosixPath(path)
        if pure.is_absolute() or ".." in pure.parts or path.startswith("\\"):
            raise BundleUnreadable(f"{SUMS} line {n} names a path outside the bundle: {path!r}")
        sums[str(pure)] = match.group(1).lower()
    return sums


def hash_stream(fh: Reader, progress: Progress | None = None) -> tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    while True:
        chunk = fh.read(CHUNK)
        if not chunk:
            break
        digest.update(chunk)
        size += len(chunk)
        if progress is not None:
            progress(len(chunk))
    return digest.hexdigest(), size


def _files_in_dir(root: Path) -> Iterator[str]:
    """Every entry under ``root`` that is not a directory, as a relative POSIX path (a link or
    other special file is listed too, so that it shows up as unlisted or bad)."""
    for dirpath, dirnames, filenames in os.walk(root):
        base = Path(dirpath)
        for name in sorted(filenames) + [d for d in dirnames if (base / d).is_symlink()]:
            yield (base / name).relative_to(root).as_posix()


def verify_dir(root: Path, progress: Progress | None = None) -> Report:
    sums_path = root / SUMS
    if not root.is_dir():
        raise BundleUnreadable(f"{root} is not a directory")
    try:
        sums = parse_sums(sums_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise BundleUnreadable(f"cannot read {sums_path}: {exc}") from None
    report = Report()
    present: set[str] = set()
    for rel in _files_in_dir(root):
        if rel == SUMS:
            continue
        present.add(rel)
        path = root / rel
        if rel not in sums:
            report.unlisted.append(rel)
        elif path.is_symlink() or not path.is_file():
            report.bad.append((rel, "(not a regular file)", sums[rel]))
        else:
            with path.open("rb") as fh:
                actual, size = hash_stream(fh, progress)
            _record(report, rel, actual, size, sums[rel])
    return _finish(report, set(sums) - present)


def verify_tar(archive: Path, progress: Progress | None = None) -> Report:
    """Check a ``.tar``/``.tar.gz`` bundle in one pass over the archive, without extracting it.
    A single top directory (``hushscribe-bundle/…``) is taken as the bundle's root."""
    hashes: dict[str, tuple[str, int]] = {}
    specials: list[str] = []
    sums_texts: dict[str, str] = {}  # SHA256SUMS at the top or one directory down
    try:
        with tarfile.open(archive, "r:*") as tar:
            for member in tar:
                name = _norm(member.name)
                if member.isdir():
                    continue
                fh = tar.extractfile(member) if member.isfile() else None
                if fh is None:
                    specials.append(name)
                    continue
                with fh:
                    if PurePosixPath(name).name == SUMS and len(PurePosixPath(name).parts) <= 2:
                        data = fh.read()
                        hashes[name] = (hashlib.sha256(data).hexdigest(), len(data))
                        sums_texts[name] = data.decode("utf-8")
                    else:
                        hashes[name] = hash_stream(fh, progress)
    except (tarfile.TarError, OSError, EOFError, UnicodeDecodeError) as exc:
        raise BundleUnreadable(f"{archive} is not a readable bundle archive: {exc}") from None
    top = _common_top([*hashes, *specials])
    sums_text = sums_texts.get(top + SUMS)
    if sums_text is None:
        raise BundleUnreadable(f"{archive} holds no {SUMS} at its top")
    sums = parse_sums(sums_text)
    report = Report()
    seen: set[str] = set()
    for name, (actual, size) in sorted(hashes.items()):
        rel = name[len(top) :]
        if rel == SUMS:
            continue
        seen.add(rel)
        if rel not in sums:
            report.unlisted.append(rel)
        else:
            _record(report, rel, actual, size, sums[rel])
    for name in specials:
        rel = name[len(top) :]
        seen.add(rel)
        if rel in sums:
            report.bad.append((rel, "(not a regular file)", sums[rel]))
        else:
            report.unlisted.append(rel)
    return _finish(report, set(sums) - seen)


def _record(report: Report, rel: str, actual: str, size: int, expected: str) -> None:
    report.checked += 1
    report.bytes += size
    if actual != expected:
        report.bad.append((rel, actual, expected))


def _finish(report: Report, missing: set[str]) -> Report:
    report.missing = sorted(missing)
    report.bad.sort()
    report.unlisted.sort()
    return report


def _norm(name: str) -> str:
    return str(PurePosixPath(name.lstrip("/")))


def _common_top(names: list[str]) -> str:
    """``"top/"`` when every member lies in one top directory, else ``""``."""
    parts = [PurePosixPath(n).parts for n in names]
    tops = {p[0] for p in parts if p}
    if len(tops) == 1 and all(len(p) > 1 for p in parts):
        return tops.pop() + "/"
    return ""


def verify(path: Path, progress: Progress | None = None) -> Report:
    """Check a bundle directory or archive."""
    if path.is_dir():
        return verify_dir(path, progress)
    if path.is_file():
        return verify_tar(path, progress)
    raise BundleUnreadable(f"{path} does not exist")


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args and args[0] in ("-h", "--help"):
        print(__doc__.strip() if __doc__ else "verify_bundle.py [BUNDLE]")
        return 0
    if len(args) > 1:
        print("usage: verify_bundle.py [BUNDLE]", file=sys.stderr)
        return 2
    target = Path(args[0]) if args else Path(__file__).resolve().parent
    try:
        report = verify(target)
    except BundleUnreadable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for line in report.lines():
        print(line)
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
