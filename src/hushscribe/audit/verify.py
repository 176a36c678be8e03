"""The offline check of an audit log (a copy of its folder, on any machine): the hash chain, every
record's MAC (with the HMAC key), the Ed25519-signed checkpoints (with the public key), and the
signed head (``head.json``) against the log's end. It names the FIRST bad place (file and seq).

It needs no settings and no database. What each kind of damage means, precisely, is in
``docs/audit.md``.
"""

from __future__ import annotations

import hmac
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from hushscribe.audit.keys import (
    HEAD_FILE,
    PUBLIC_KEY_FILE,
    ZERO_HASH,
    canonical,
    file_order,
    line_hash,
    load_hmac_key,
    load_public_key,
    log_files,
    parse_record,
    public_key_sha256,
    record_mac,
    signed_message,
)

LOOKAHEAD: Final = 10_000  # records read ahead to tell a reordering or an insertion from a gap


@dataclass(frozen=True)
class Damage:
    kind: str  # modified deleted inserted reordered truncated bad_mac bad_signature missing_segment
    file: str
    seq: int | None
    detail: str


@dataclass
class Report:
    ok: bool
    records: int = 0
    files: int = 0
    first_time: str | None = None
    last_time: str | None = None
    checkpoints: int = 0
    warnings: list[str] = field(default_factory=list)
    damage: Damage | None = None
    head_seq: int | None = None


@dataclass
class _Rec:
    file: str
    line: int
    raw: bytes
    first_in_file: bool
    named_seq: int
    hash: str = ""
    seq: int | None = None
    prev: str = ""
    type: str = ""
    time: str = ""


@dataclass
class _End:
    file: str
    note: str | None  # a torn last line, or an empty file
    torn: bool = False


def _items(files: list[Path]) -> Iterator[_Rec | _End]:
    for path in files:
        named, number = (file_order(path) or (0,))[0], 0
        with path.open("rb") as f:
            for number, raw in enumerate(f, 1):
                if not raw.endswith(b"\n"):
                    yield _End(
                        path.name,
                        f"1 torn record at the end of {path.name} (line "
                        f"{number}): a crash while writing; not part of the chain",
                        True,
                    )
                    break
                r = _Rec(path.name, number, raw[:-1], number == 1, named, line_hash(raw[:-1]))
                if (rec := parse_record(r.raw)) is not None:
                    r.seq, r.prev, r.type, r.time = (
                        rec[k] for k in ("seq", "prev", "type", "time")
                    )
                yield r
            else:
                yield _End(
                    path.name,
                    None if number else f"{path.name} is empty (a crash right after it was begun)",
                )


class _Stream:
    def __init__(self, files: list[Path]) -> None:
        self._it, self._buf = _items(files), deque[_Rec | _End]()

    def next(self) -> _Rec | _End | None:
        return self._buf.popleft() if self._buf or self._fill() else None

    def _fill(self) -> bool:
        item = next(self._it, None)
        if item is not None:
            self._buf.append(item)
        return item is not None

    def find(self, pred: Callable[[_Rec], bool], limit: int = LOOKAHEAD) -> _Rec | None:
        """The first record ahead that ``pred`` holds for, among the next ``limit``."""
        i = seen = 0
        while seen < limit and (i < len(self._buf) or self._fill()):
            item, i = self._buf[i], i + 1
            if isinstance(item, _Rec):
                seen += 1
                if pred(item):
                    return item
        return None

    def peek(self) -> _Rec | None:
        return self.find(lambda r: True, 1)


def _tail_records(path: Path) -> list[bytes]:
    return [ln for ln in path.read_bytes().split(b"\n")[:-1] if ln]


def _start(files: list[Path], since: datetime, report: Report) -> tuple[int, str | None]:
    """Where a check from ``since`` on begins (index of the first file whose records reach that
    time) and the hash of the last checkpoint before it (None when the copy has none)."""
    since = since.replace(tzinfo=UTC) if since.tzinfo is None else since.astimezone(UTC)
    start = len(files)
    for i, path in enumerate(files):
        last = next((r for r in map(parse_record, reversed(_tail_records(path))) if r), None)
        if last is not None and datetime.fromisoformat(last["time"]) >= since:
            start = i
            break
    report.warnings.append(f"checked from {since.isoformat()} on, as asked: from "
        f"{files[start].name if start < len(files) else '(no file)'}; earlier records, and the "
        "first checked record's link to them, were not checked")  # fmt: skip
    for path in reversed(files[:start]):
        for raw in reversed(_tail_records(path)):
            rec = parse_record(raw)
            if rec is not None and rec["type"] == "checkpoint":
                return start, line_hash(raw)
    return start, ZERO_HASH if start == 0 else None


class _Check:
    def __init__(self, report: Report, key: Ed25519PublicKey | None, hmac_key: bytes | None):
        self.report, self.key, self.hmac_key = report, key, hmac_key
        self.fingerprint = public_key_sha256(key) if key is not None else None

    def gap(self, s: _Stream, r: _Rec, e: int, h: str, prev: _Rec | None, torn: set[str]) -> Damage:
        """Name what broke the chain at ``r`` (seq ``e`` with prev ``h`` was expected)."""
        assert r.seq is not None
        at, nxt = f"{r.file} line {r.line}", s.peek()
        extra = nxt is not None and nxt.seq == e and nxt.prev == h  # the chain goes on after r
        if r.seq < e or (extra and r.seq == e):
            return Damage("inserted", r.file, r.seq, f"a record with seq {r.seq} at {at}, after "
                          f"seq {e - 1}: it does not belong to the chain")  # fmt: skip
        if r.seq == e:
            if prev is None:
                return Damage("modified", r.file, r.seq, f"{at} does not begin the chain")
            return Damage("modified", prev.file, prev.seq, f"record {prev.seq} ({prev.file} "
                          f"line {prev.line}) was changed: its hash is not {e}'s prev")  # fmt: skip
        if extra and (s.find(lambda x: x.seq == r.seq) or not s.find(lambda x: x.prev == r.hash)):
            return Damage("inserted", r.file, r.seq, f"a record with seq {r.seq} at {at}, before "
                          f"seq {e}: it does not belong to the chain")  # fmt: skip
        if extra or s.find(lambda x: x.seq == e):
            return Damage("reordered", r.file, e, f"record {r.seq} ({at}) comes before record {e}")
        gone = f"records {e}..{r.seq - 1} are" if r.seq - 1 > e else f"record {e} is"
        if not (r.first_in_file and r.named_seq == r.seq):
            return Damage("deleted", r.file, e, f"{gone} missing before {at}")
        if prev is None or prev.type == "checkpoint" or prev.file in torn:
            return Damage("missing_segment", r.file, e, f"{gone} missing: a whole file before "
                          f"{r.file}" + (f" (after {prev.file})" if prev else ""))  # fmt: skip
        return Damage("truncated", prev.file, e, f"{prev.file} ends at seq {e - 1} without a "
                      f"closing checkpoint; {r.file} begins at {r.seq}: {gone} gone")  # fmt: skip

    def mac(self, s: _Stream, r: _Rec, rec: dict[str, Any]) -> Damage | None:
        if self.hmac_key is None:
            return None
        right, at = record_mac(self.hmac_key, rec), f"record {r.seq} ({r.file} line {r.line})"
        if hmac.compare_digest(right, rec["mac"]):
            return None
        nxt, fixed = s.peek(), line_hash(canonical({**rec, "mac": right}))
        if nxt is None or nxt.prev in (r.hash, fixed):  # the chain holds: only the MAC is wrong
            return Damage("bad_mac", r.file, r.seq, f"{at} has a MAC not made with the log's key")
        return Damage("modified", r.file, r.seq, f"{at} was changed: its MAC and hash fail")

    def checkpoint(self, r: _Rec, rec: dict[str, Any], cp_hash: str | None) -> Damage | None:
        d, seq = rec.get("details"), r.seq
        d, at = d if isinstance(d, dict) else {}, f"checkpoint {seq} ({r.file} line {r.line})"
        assert seq is not None
        if (d.get("head_seq"), d.get("head_hash")) != (seq - 1, r.prev):
            return Damage("modified", r.file, seq, f"{at} signed a head the records before it no "
                          "longer have: they were changed")  # fmt: skip
        if d.get("file") != r.file:
            return Damage("modified", r.file, seq, f"{at} was written in {d.get('file')!r}")
        if self.key is None:
            return None
        if d.get("public_key_sha256") != self.fingerprint:
            return Damage("bad_signature", r.file, seq, f"{at} names another signing key "
                          f"({str(d.get('public_key_sha256'))[:16]}…)")  # fmt: skip
        if cp_hash is None:
            self.report.warnings.append(f"{at}: signature not checked (the checkpoint before it "
                                        "is not in the copy)")  # fmt: skip
            return None
        try:
            sig = bytes.fromhex(str(d.get("signature")))
            self.key.verify(sig, signed_message(seq - 1, r.prev, r.file, cp_hash))
        except (ValueError, InvalidSignature):
            return Damage("bad_signature", r.file, seq, f"{at}: the signature does not verify")
        return None


def verify(
    audit_dir: Path,
    public_key: Path | None = None,
    hmac_key: Path | None = None,
    since: datetime | None = None,
) -> Report:
    """Check the log in ``audit_dir``; the report's ``damage`` is the first bad place, if any."""
    report = Report(ok=True)
    key = _public_key(audit_dir, public_key, report)
    if hmac_key is None:
        report.warnings.append("no HMAC key: MACs not checked (the chain and the signatures are)")
    check = _Check(report, key, load_hmac_key(hmac_key) if hmac_key else None)
    head = _head(audit_dir, report)  # before the listing: a live log's head is in a listed file
    files = log_files(audit_dir)
    start, cp_hash = (0, ZERO_HASH) if since is None else _start(files, since, report)
    damage = _walk(_Stream(files[start:]), check, cp_hash, since is not None, head)
    end = report.head_seq or 0
    if damage is None and head is not None and end < head[0]:
        damage = Damage("truncated", files[-1].name if files else "", end + 1, f"the log ends "
                        f"at seq {end}; its signed head ({HEAD_FILE}) is {head[0]}")  # fmt: skip
    if not files:
        report.warnings.append(f"no audit files in {audit_dir}")
    report.damage, report.ok = damage, damage is None
    return report


def _public_key(audit_dir: Path, given: Path | None, report: Report) -> Ed25519PublicKey | None:
    if given is not None:
        return load_public_key(given)
    try:
        key = load_public_key(audit_dir / PUBLIC_KEY_FILE)
    except (OSError, ValueError):
        report.warnings.append("no public key: checkpoint signatures not checked")
        return None
    report.warnings.append(
        f"checkpoints checked with the log's own {PUBLIC_KEY_FILE}: give an independent copy "
        "(--public-key) to rule out a replaced key"
    )
    return key


def _head(audit_dir: Path, report: Report) -> tuple[int, str] | None:
    """The signed head the writer keeps beside the log: (seq, line hash) of its last checkpoint."""
    try:
        raw = (audit_dir / HEAD_FILE).read_bytes().rstrip(b"\n")
    except FileNotFoundError:
        report.warnings.append(f"no {HEAD_FILE}: records after the last checkpoint in the files "
                               "could have been cut off unseen")  # fmt: skip
        return None
    rec = parse_record(raw)
    if rec is None or rec["type"] != "checkpoint":
        report.warnings.append(f"{HEAD_FILE} is not a checkpoint record: ignored")
        return None
    return rec["seq"], line_hash(raw)


def _walk(s: _Stream, check: _Check, cp_hash: str | None, anchored: bool,
          head: tuple[int, str] | None) -> Damage | None:  # fmt: skip
    report, e, h, prev, torn, seen = check.report, 1, ZERO_HASH, None, set[str](), set[str]()
    while (r := s.next()) is not None:
        seen.add(r.file)
        report.files = len(seen)
        if isinstance(r, _End):
            torn |= {r.file} if r.torn else set()
            report.warnings += [r.note] if r.note else []
            continue
        if r.seq is None:
            return Damage("modified", r.file, e, f"{r.file} line {r.line} is not an audit record")
        if anchored:  # checking from ``since``: the first record is taken as it is
            e, h, anchored = r.seq, r.prev, False
        if r.seq != e or r.prev != h:
            return check.gap(s, r, e, h, prev, torn)
        if check.hmac_key is not None or r.type == "checkpoint":
            rec = parse_record(r.raw)
            assert rec is not None
            is_cp = r.type == "checkpoint"  # a bad signature is named before its MAC
            damage = (check.checkpoint(r, rec, cp_hash) if is_cp else None) or check.mac(s, r, rec)
            if damage is not None:
                return damage
            if is_cp:
                cp_hash, report.checkpoints = r.hash, report.checkpoints + 1
        if head is not None and r.seq == head[0] and r.hash != head[1]:
            return Damage("modified", r.file, r.seq, f"record {r.seq} is not the signed head "
                          f"({HEAD_FILE}) of that seq")  # fmt: skip
        e, h, prev = r.seq + 1, r.hash, r
        report.records, report.head_seq = report.records + 1, r.seq
        report.first_time, report.last_time = report.first_time or r.time, r.time
    return None
