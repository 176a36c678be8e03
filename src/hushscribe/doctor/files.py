"""Checks of what hushscribe keeps on disk: the data directory, the service's keys and the job
database — each owned by the user the service runs as and closed to everyone else."""

from __future__ import annotations

import os
import pwd
import stat
from pathlib import Path

from hushscribe.doctor.base import Check, Finding, fold, mode, q
from hushscribe.settings import Settings

PRIVATE = 0o077
"""Group and other permission bits: none may be set on what holds secrets or transcripts."""


def _user(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"


def _owner(path: Path, st: os.stat_result) -> Finding | None:
    me = os.geteuid()
    if st.st_uid == me:
        return None
    return Finding(
        "WARN",
        f"{path} is owned by {_user(st.st_uid)}, not by {_user(me)} who runs this",
        f"`chown -R {_user(me)}: {q(path)}` (or run the doctor as the user the service runs as)",
    )


def data_directory(settings: Settings) -> Check:
    """``data_dir`` exists, is ours and is closed to group and others (0700)."""
    path = settings.data_dir
    name = "data directory"
    if not path.exists():
        return Check(
            name,
            "FAIL",
            f"{path} does not exist (no models, no jobs)",
            f"`mkdir -m 700 -p {q(path)}` and `hushscribe models install-demo` (or import a model)",
        )
    if not path.is_dir():
        return Check(name, "FAIL", f"{path} is not a directory", "set data_dir to a directory")
    st = path.stat()
    findings = [f for f in [_owner(path, st)] if f is not None]
    if st.st_mode & PRIVATE:
        findings.append(
            Finding(
                "WARN",
                f"{path} is mode {mode(st.st_mode)}: group and others may list it (it holds "
                "every user's audio, transcripts and the keys)",
                f"`chmod 700 {q(path)}`",
            )
        )
    return fold(name, findings, f"{path}, mode {mode(st.st_mode)}, owned by {_user(st.st_uid)}")


def key_files(settings: Settings) -> Check:
    """Every file in ``keys_dir`` (the audit log's HMAC and signing keys) is 0600, the
    directory 0700."""
    keys_dir = settings.keys_dir
    name = "key files"
    if not keys_dir.is_dir():
        return Check(name, "OK", f"no {keys_dir} yet: the first start creates it (mode 0700)")
    st = keys_dir.stat()
    findings = [f for f in [_owner(keys_dir, st)] if f is not None]
    if st.st_mode & PRIVATE:
        findings.append(
            Finding(
                "WARN",
                f"{keys_dir} is mode {mode(st.st_mode)}",
                f"`chmod 700 {q(keys_dir)}`",
            )
        )
    files = sorted(p for p in keys_dir.iterdir() if p.is_file() and not p.name.startswith("."))
    # lstat: a link is judged as itself, never followed to a file elsewhere
    exposed = [(p, p.lstat()) for p in files if p.lstat().st_mode & PRIVATE]
    if exposed:
        listing = ", ".join(f"{p.name} (mode {mode(s.st_mode)})" for p, s in exposed)
        findings.append(
            Finding(
                "FAIL",
                f"key files readable beyond their owner in {keys_dir}: {listing} — anyone who "
                "reads them can forge audit records",
                f"`chmod 600 {' '.join(q(p) for p, _ in exposed)}`",
            )
        )
    foreign = [p for p in files if p.lstat().st_uid != os.geteuid()]
    if foreign:
        findings.append(
            Finding(
                "WARN",
                f"{', '.join(p.name for p in foreign)} owned by another user",
                f"`chown {_user(os.geteuid())}: {' '.join(q(p) for p in foreign)}`",
            )
        )
    held = ", ".join(f"{p.name} {mode(p.lstat().st_mode)}" for p in files) or "no files yet"
    return fold(name, findings, f"{keys_dir} ({mode(st.st_mode)}): {held}")


def _sqlite_path(settings: Settings) -> Path | None:
    """The SQLite database file, or None for another database (or one in memory)."""
    from sqlalchemy.engine import make_url

    url = make_url(settings.db_url)
    if url.get_backend_name() != "sqlite":
        return None
    database = url.database
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    return Path(database)


def database(settings: Settings) -> Check:
    """The SQLite job database (and its -wal/-shm) is 0600: it holds every user's transcripts."""
    name = "database"
    path = _sqlite_path(settings)
    if path is None:
        from sqlalchemy.engine import make_url

        url = make_url(settings.db_url)
        where = f"{url.get_backend_name()} at {url.host or 'a local socket'}"
        return Check(name, "OK", f"{where} (not a file here; its own access rules apply)")
    if not path.exists():
        return Check(name, "OK", f"{path} not created yet (the first start creates it, 0600)")
    findings: list[Finding] = []
    parts = [path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")]
    present = [(p, p.lstat()) for p in parts if p.exists()]
    for p, st in present:
        if not stat.S_ISREG(st.st_mode):
            findings.append(Finding("FAIL", f"{p} is not a regular file", f"remove {q(p)}"))
    exposed = [(p, st) for p, st in present if st.st_mode & PRIVATE]
    if exposed:
        listing = ", ".join(f"{p.name} (mode {mode(st.st_mode)})" for p, st in exposed)
        findings.append(
            Finding(
                "FAIL",
                f"{listing}: group or others can read every user's transcripts",
                f"`chmod 600 {' '.join(q(p) for p, _ in exposed)}`",
            )
        )
    owner = _owner(path, present[0][1])
    if owner is not None:
        findings.append(owner)
    return fold(name, findings, f"{path}, mode {mode(present[0][1].st_mode)}")
