"""Reading the audit log back: records in order, by time span or after a cursor, and filters.

This knows the log's file format only, not the writer: files ``audit-YYYYMMDD-NNNNNN.jsonl``
(the UTC day the file was begun and the seq of its first record), one JSON record per line. A
file's last line without its newline is a record being written (or torn by a crash) and is not
read. Nothing here checks chains or MACs: that is :mod:`hushscribe.audit.verify`'s work.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

FILE_RE = re.compile(r"^audit-(\d{8})-(\d+)\.jsonl$")
_RFC3339 = r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?([Zz]|[+-]\d{2}:\d{2})"


@dataclass(frozen=True, order=True)
class LogFile:
    first_seq: int
    width: int  # a writer finding the name taken (by a file of one torn line) pads it once more
    day: date
    path: Path


def dumps(record: dict[str, Any]) -> str:
    """A record in the log's canonical JSON (sorted keys, no spaces, all but ASCII escaped): the
    very line the log holds for it, without its newline."""
    return json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def log_files(audit_dir: Path) -> list[LogFile]:
    """The log's files, oldest first (by first seq, then the name's width, then day); other files
    in the folder (the public key, ``head.json``) are not."""
    found = []
    try:
        names = [p for p in audit_dir.iterdir() if p.is_file()]
    except FileNotFoundError:
        return []
    for path in names:
        m = FILE_RE.match(path.name)
        if m is None:
            continue
        try:
            day = datetime.strptime(m.group(1), "%Y%m%d").date()
        except ValueError:
            continue
        found.append(LogFile(int(m.group(2)), len(m.group(2)), day, path))
    return sorted(found)


def parse_time(text: str) -> datetime:
    """An RFC 3339 time (``…Z`` or an offset; a date alone is its midnight UTC), aware, in UTC.
    ValueError for anything else."""
    text = text.strip()
    bad = ValueError(f"not an RFC 3339 time: {text[:64]!r} (e.g. 2025-01-31T12:00:00Z)")
    try:
        if re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
            return datetime.fromisoformat(text).replace(tzinfo=UTC)
        if re.fullmatch(_RFC3339, text):
            return datetime.fromisoformat(text.upper().replace("Z", "+00:00")).astimezone(UTC)
    except ValueError:  # the right shape, but no such day or hour
        pass
    raise bad


def record_time(record: dict[str, Any]) -> datetime | None:
    value = record.get("time")
    if not isinstance(value, str):
        return None
    try:
        return parse_time(value)
    except ValueError:
        return None


def file_records(path: Path) -> Iterator[dict[str, Any]]:
    """The complete records of one file, in order; a torn last line is left out, and a line that
    is not a JSON object is logged and skipped (``audit verify`` names it as damage)."""
    try:
        with path.open("rb") as f:
            for number, line in enumerate(f, 1):
                if not line.endswith(b"\n"):
                    return  # being written, or torn by a crash
                try:
                    record = json.loads(line)
                except ValueError:
                    record = None
                if isinstance(record, dict):
                    yield record
                elif line.strip():
                    log.warning("audit file %s line %d is not a record; skipped", path, number)
    except FileNotFoundError:  # removed by retention while we read
        return


def records(
    audit_dir: Path,
    since: datetime | None = None,
    until: datetime | None = None,
    after_seq: int | None = None,
) -> Iterator[dict[str, Any]]:
    """Records in log order with ``since <= time < until`` and ``seq > after_seq``.

    Whole files are skipped without being opened when the next file's name shows they hold
    nothing wanted (its first seq is past the cursor; its day is before ``since``'s), and the
    reading stops at the first file begun after ``until``'s day — so a cursor near the end of a
    long log costs one or two files. Naive times are taken as UTC.
    """
    since, until = _utc(since), _utc(until)
    files = log_files(audit_dir)
    for i, lf in enumerate(files):
        following = files[i + 1] if i + 1 < len(files) else None
        if following is not None:
            if after_seq is not None and following.first_seq <= after_seq + 1:
                continue  # every record here has seq < following.first_seq <= after_seq + 1
            if since is not None and following.day < since.date():
                continue  # the next file began on an earlier day: all of this one is earlier
        if until is not None and lf.day > until.date():
            return
        for record in file_records(lf.path):
            if after_seq is not None:
                seq = record.get("seq")
                if not isinstance(seq, int) or seq <= after_seq:
                    continue
            if since is not None or until is not None:
                when = record_time(record)
                if when is None or (since is not None and when < since):
                    continue
                if until is not None and when >= until:
                    continue
            yield record


def last(audit_dir: Path, n: int) -> list[dict[str, Any]]:
    """The last ``n`` records, oldest first, reading only the newest files it needs."""
    if n <= 0:
        return []
    found: list[dict[str, Any]] = []
    for lf in reversed(log_files(audit_dir)):
        found = list(file_records(lf.path)) + found
        if len(found) >= n:
            break
    return found[-n:]


def head_seq(audit_dir: Path) -> int | None:
    """The seq of the newest complete record, or None for an empty log."""
    newest = last(audit_dir, 1)
    seq = newest[0].get("seq") if newest else None
    return seq if isinstance(seq, int) else None


def matches(
    record: dict[str, Any],
    actor: str | None = None,
    action: str | None = None,
    type: str | None = None,
    outcome: str | None = None,
) -> bool:
    """Whether the record is by ``actor`` (a user name; ``service`` or ``cli`` for the service
    itself and an operator at a shell, who have no user name) and has the other fields given."""
    if actor is not None:
        who = record.get("actor")
        who = who if isinstance(who, dict) else {}
        user = who.get("user")
        if user != actor and not (user is None and who.get("method") == actor):
            return False
    return (
        (action is None or record.get("action") == action)
        and (type is None or record.get("type") == type)
        and (outcome is None or record.get("outcome") == outcome)
    )


def _utc(when: datetime | None) -> datetime | None:
    if when is None:
        return None
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)
