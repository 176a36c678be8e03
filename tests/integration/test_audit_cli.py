"""``hushscribe audit verify|export|tail`` as an operator and an auditor run them: real processes,
on a log the service's own writer made (verify) or on files in the log's format (export, tail:
the reader knows the format, not the writer). ``write_log`` is also the API tests' fixture."""

from __future__ import annotations

import csv
import io
import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from hushscribe.audit import read
from hushscribe.audit.events import SERVICE, Actor, event
from hushscribe.audit.log import AuditLog
from hushscribe.settings import load_settings

CLEAN_ENV = {k: v for k, v in os.environ.items() if not k.startswith("HUSHSCRIBE_")}
T0 = datetime(2025, 3, 1, 20, 0, tzinfo=UTC)
STEP = timedelta(minutes=37)
USERS = ("audrey", "ursula", "admin", None)  # None: the service itself
KINDS = (  # (type, action, outcome)
    ("login_ok", "login", "ok"),
    ("upload", "upload", "ok"),
    ("access_denied", "access", "denied"),
    ("transcription_done", "transcribe", "ok"),
    ("login_failed", "login", "denied"),
    ("transcription_failed", "transcribe", "failed"),
)


def hushscribe(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "hushscribe", *args],
        capture_output=True, text=True, timeout=120, cwd=cwd,
        env={**CLEAN_ENV, "COLUMNS": "200"},
    )  # fmt: skip


def _time(when: datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def make_records(n: int, first_seq: int = 1, start: datetime = T0) -> list[dict[str, Any]]:
    """``n`` records in the log's format (chain and MAC fields filled, not meaningful)."""
    out = []
    for i in range(n):
        seq = first_seq + i
        type_, action, outcome = KINDS[seq % len(KINDS)]
        user = USERS[seq % len(USERS)]
        out.append(
            {
                "seq": seq,
                "time": _time(start + STEP * i),
                "type": type_,
                "actor": {
                    "user": user,
                    "user_id": user and f"id-{user}",
                    "key_id": None,
                    "method": "session" if user else "service",
                },
                "address": "192.0.2.10" if user else None,
                "action": action,
                "target": f"job_{seq:04d}",
                "outcome": outcome,
                "details": {"reason": "wrong password, «ü»"} if outcome != "ok" else {},
                "prev": f"{seq - 1:064x}",
                "mac": f"{seq:064x}",
            }
        )
    return out


def write_log(audit_dir: Path, records: list[dict[str, Any]], per_file: int = 10,
              torn: str | None = None) -> list[Path]:  # fmt: skip
    """Files ``audit-YYYYMMDD-NNNNNN.jsonl`` as the log lays them out: a new file each UTC day
    and every ``per_file`` records; ``torn`` is left, without its newline, at the end."""
    audit_dir.mkdir(parents=True, exist_ok=True)
    files: list[Path] = []
    lines: list[str] = []
    day = None
    for record in records:
        rday = record["time"][:10]
        if not lines or len(lines) >= per_file or rday != day:
            if lines:
                files[-1].write_text("".join(lines), encoding="utf-8")
            name = f"audit-{rday.replace('-', '')}-{record['seq']:06d}.jsonl"
            files.append(audit_dir / name)
            lines, day = [], rday
        lines.append(read.dumps(record) + "\n")
    if files:
        files[-1].write_text("".join(lines) + (torn or ""), encoding="utf-8")
    return files


# --- the reader ----------------------------------------------------------------------------------


def test_reader_orders_skips_torn_lines_and_pages_by_cursor(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    recs = make_records(95)
    files = write_log(tmp_path, recs, torn='{"seq": 96, "time": "2025-')
    (tmp_path / "public-key.pem").write_text("not a log file")
    assert len(files) > 4
    assert list(read.records(tmp_path)) == recs
    assert list(read.records(tmp_path, after_seq=60)) == recs[60:]
    assert list(read.records(tmp_path, after_seq=95)) == []
    assert read.last(tmp_path, 3) == recs[-3:]
    assert read.head_seq(tmp_path) == 95
    since, until = T0 + STEP * 10, T0 + STEP * 50
    assert list(read.records(tmp_path, since, until)) == recs[10:50]
    assert list(read.records(tmp_path, since=until, after_seq=70)) == recs[70:]
    # A cursor (or a start time) does not open the files before it.
    opened: list[str] = []
    real = read.file_records

    def spy(path: Path) -> Iterator[dict[str, Any]]:
        opened.append(path.name)
        return real(path)

    monkeypatch.setattr(read, "file_records", spy)
    assert list(read.records(tmp_path, after_seq=90)) == recs[90:]
    assert opened == [files[-1].name]
    opened.clear()
    assert list(read.records(tmp_path, until=T0 + STEP * 3)) == recs[:3]
    assert opened == [files[0].name]  # the next begins on a later day: not opened
    opened.clear()
    late = T0 + STEP * 80
    assert list(read.records(tmp_path, since=late)) == recs[80:]
    assert len(opened) < len(files) - 2
    monkeypatch.undo()
    assert read.parse_time("2025-03-01T12:00:00.5+02:00") == datetime(
        2025, 3, 1, 10, 0, 0, 500000, UTC
    )
    assert read.parse_time("2025-03-01") == datetime(2025, 3, 1, tzinfo=UTC)
    for bad in ("2025-02-30T00:00:00Z", "2025-03-01T12:00:00", "1740830400", "2025-03-01 + 1d"):
        with pytest.raises(ValueError, match="not an RFC 3339 time"):
            read.parse_time(bad)
    by_seq = {r["seq"]: r for r in recs}
    assert read.matches(by_seq[1], actor="ursula", outcome="ok", type="upload", action="upload")
    assert not read.matches(by_seq[1], actor="audrey")
    assert not read.matches(by_seq[1], outcome="denied")
    assert read.matches(by_seq[3], actor="service")  # no user name: the service
    assert read.matches(by_seq[2], type="access_denied", action="access", outcome="denied")


# --- verify ------------------------------------------------------------------------------------


def _service_log(tmp_path: Path, n: int = 40) -> tuple[Path, Path]:
    """A log written by the service's own writer (data dir, keys): (audit_dir, keys_dir)."""
    settings = load_settings(
        None, data_dir=tmp_path / "data", audit={"checkpoint_every": 7, "rotate_bytes": 4096}
    )
    audit_log = AuditLog(settings.audit, settings.audit_dir, settings.keys_dir)
    try:
        audrey = Actor("audrey", "id-audrey", None, "session")
        for i in range(n):
            if i % 3:
                audit_log.append(event("login_ok", audrey, address="192.0.2.1",
                                       details={"auth": "local"}))  # fmt: skip
            else:
                audit_log.append(event("service_start", SERVICE, details={"pid": i}))
    finally:
        audit_log.close()
    return settings.audit_dir, settings.keys_dir


def _damage_seq(audit_dir: Path, seq: int) -> None:
    for path in sorted(audit_dir.glob("audit-*.jsonl")):
        lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
        for i, text in enumerate(lines):
            if json.loads(text)["seq"] == seq:
                record = json.loads(text)
                record["address"] = "203.0.113.66"  # someone covering their tracks
                lines[i] = read.dumps(record) + "\n"
                path.write_text("".join(lines), encoding="utf-8")
                return
    raise AssertionError(f"no record {seq}")


def test_verify_a_copy_elsewhere_then_find_the_damaged_record(tmp_path: Path) -> None:
    audit_dir, keys_dir = _service_log(tmp_path)
    copy = tmp_path / "elsewhere" / "audit-copy"
    shutil.copytree(audit_dir, copy)
    hmac_key = tmp_path / "elsewhere" / "hmac.key"
    shutil.copy(keys_dir / "audit-hmac.key", hmac_key)
    public_key = copy / "public-key.pem"
    on_copy = hushscribe("audit", "verify", str(copy), "--hmac-key", str(hmac_key),
                         "--public-key", str(public_key), cwd=tmp_path / "elsewhere")  # fmt: skip
    assert on_copy.returncode == 0, on_copy.stdout + on_copy.stderr
    report = " ".join(on_copy.stdout.split())
    records = list(read.records(copy))
    checkpoints = sum(r["type"] == "checkpoint" for r in records)
    files = len(read.log_files(copy))
    assert f"{len(records)} records in {files} files" in report, report
    assert f"{checkpoints} checkpoints" in report and checkpoints >= 5, report
    assert f"{records[0]['time']} → {records[-1]['time']}" in report, report
    assert "OK" in report
    assert not (tmp_path / "elsewhere" / ".data").exists()  # no data dir needed, none made

    plain = hushscribe("audit", "verify", str(copy), cwd=tmp_path / "elsewhere")
    assert plain.returncode == 0, plain.stdout + plain.stderr  # chain only: still intact

    damaged_seq = records[17]["seq"]
    _damage_seq(copy, damaged_seq)
    bad = hushscribe("audit", "verify", str(copy), "--hmac-key", str(hmac_key),
                     "--public-key", str(public_key), cwd=tmp_path / "elsewhere")  # fmt: skip
    assert bad.returncode == 1, bad.stdout + bad.stderr
    said = " ".join(bad.stdout.split())
    assert "DAMAGED" in said and f"seq {damaged_seq}" in said, said
    assert "audit-" in said  # the file


def test_verify_on_the_service_data_dir_and_usage_errors(tmp_path: Path) -> None:
    audit_dir, _ = _service_log(tmp_path, n=5)
    data = str(tmp_path / "data")
    done = hushscribe("--data-dir", data, "audit", "verify")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "MACs not checked" not in done.stdout  # the service's own key, found
    for args in (
        ("audit", "verify", str(tmp_path / "nowhere")),
        ("audit", "verify", str(audit_dir), "--from", "last tuesday"),
        ("audit", "verify", str(audit_dir), "--hmac-key", str(tmp_path / "missing.key")),
    ):
        refused = hushscribe(*args)
        assert refused.returncode == 2, refused.stdout + refused.stderr
        assert "Traceback" not in refused.stderr and refused.stderr.startswith("error"), refused


# --- export and tail ---------------------------------------------------------------------------


def test_export_csv_and_jsonl_for_a_time_range(tmp_path: Path) -> None:
    recs = make_records(120)
    write_log(tmp_path / "audit", recs, per_file=25)
    # 2025-03-02 (a whole day, --to inclusive of its date) from 06:00 on.
    done = hushscribe("audit", "export", str(tmp_path / "audit"), "--from",
                      "2025-03-02T06:00:00Z", "--to", "2025-03-02", "--format", "csv")  # fmt: skip
    assert done.returncode == 0, done.stderr
    rows = list(csv.DictReader(io.StringIO(done.stdout)))
    want = [r for r in recs if "2025-03-02T06:00:00" <= r["time"] < "2025-03-03"]
    assert len(want) > 20
    assert [int(row["seq"]) for row in rows] == [r["seq"] for r in want]
    assert list(rows[0]) == ["seq", "time", "type", "actor", "method", "address", "action",
                             "target", "outcome", "details"]  # fmt: skip
    for row, r in zip(rows, want, strict=True):
        assert row["time"] == r["time"] and row["type"] == r["type"]
        assert row["actor"] == (r["actor"]["user"] or "")
        assert row["method"] == r["actor"]["method"]
        assert row["outcome"] == r["outcome"] and row["target"] == r["target"]
        assert json.loads(row["details"]) == r["details"]

    out = tmp_path / "export.jsonl"
    done = hushscribe("audit", "export", str(tmp_path / "audit"), "--from", "2025-03-03",
                      "--format", "jsonl", "--output", str(out))  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout == ""
    got = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert got == [r for r in recs if r["time"] >= "2025-03-03"]
    assert out.stat().st_mode & 0o077 == 0

    bad = hushscribe("audit", "export", str(tmp_path / "audit"), "--format", "xml")
    assert bad.returncode == 2


def test_tail_shows_the_last_records_and_follows(tmp_path: Path) -> None:
    recs = make_records(30)
    write_log(tmp_path, recs, torn='{"seq":31')
    done = hushscribe("audit", "tail", str(tmp_path), "-n", "3")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == 3
    for text, r in zip(lines, recs[-3:], strict=True):
        fields = text.split()
        assert fields[0] == r["time"] and fields[1] == r["type"], text
        assert (r["actor"]["user"] or "service") in text and r["target"] in text, text
        assert fields[-1] == r["outcome"], text

    args = ["audit", "tail", str(tmp_path), "-n", "1", "-f", "--interval", "0.1"]
    with subprocess.Popen(
        [sys.executable, "-m", "hushscribe", *args], stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL, text=True, env={**CLEAN_ENV, "COLUMNS": "200"},
    ) as follow:  # fmt: skip
        out = _Lines(follow)
        try:
            assert recs[-1]["target"] in out.next()
            # The torn line is finished, and a new file begins (as the writer rotates).
            more = make_records(4, first_seq=31, start=T0 + STEP * 30)
            newest = sorted(tmp_path.glob("audit-*.jsonl"))[-1]
            text = newest.read_text(encoding="utf-8")
            newest.write_text(text[: text.rindex("\n") + 1] + read.dumps(more[0]) + "\n")
            write_log(tmp_path, more[1:])
            seen = [out.next() for _ in range(4)]
            assert [r["target"] for r in more] == [line.split()[-2] for line in seen], seen
            follow.send_signal(signal.SIGINT)  # Ctrl-C ends it, quietly
            assert follow.wait(10) == 0
        finally:
            if follow.poll() is None:
                follow.kill()


class _Lines:
    """Output lines read in a thread: a missing line fails after ``timeout``, not never."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.lines: queue.Queue[str] = queue.Queue()
        assert proc.stdout is not None
        stdout = proc.stdout
        threading.Thread(target=lambda: [self.lines.put(x) for x in stdout], daemon=True).start()

    def next(self, timeout: float = 15) -> str:
        return self.lines.get(timeout=timeout)


def test_tail_of_an_empty_or_missing_log(tmp_path: Path) -> None:
    done = hushscribe("audit", "tail", str(tmp_path))
    assert done.returncode == 0 and done.stdout == ""
    missing = hushscribe("audit", "tail", str(tmp_path / "nope"))
    assert missing.returncode == 2


@pytest.mark.parametrize("value", ["2025-13-01", "yesterday", "2025-03-01T25:00:00Z"])
def test_bad_dates_are_usage_errors(tmp_path: Path, value: str) -> None:
    done = hushscribe("audit", "export", str(tmp_path), "--from", value)
    assert done.returncode == 2, done.stderr
    assert "--from" in done.stderr
