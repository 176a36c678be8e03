"""The audit log's writer: records, files, checkpoints, keys, processes and threads, failures."""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import stat
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from hushscribe.audit import log as audit_log
from hushscribe.audit.events import SERVICE, Actor, AuditEvent, event
from hushscribe.audit.keys import load_public_key, public_key_sha256
from hushscribe.audit.log import AuditLog, AuditUnavailable
from hushscribe.audit.verify import canonical, line_hash, log_files, verify
from hushscribe.settings_audit import AuditSettings
from tests.tmpfs import fill, small_tmpfs

NASTY = [
    'call\r\n{"seq":1,"type":"login_ok"}\r\n.wav',
    "red\x1b[31mALERT\x1b[0m.mp3",
    "會議記錄-二〇二五年.m4a",
    "tab\tnul\x00bell\x07\u2028sep.ogg",
    "plain.flac",
]
ALICE = Actor("alice", "u-1", "k-1", "key")


def sample_event(i: int) -> AuditEvent:
    """One of several event types, with a file name (or other text) that tries to break a line."""
    name = f"{NASTY[i % len(NASTY)]}#{i}"
    kind = i % 6
    if kind == 0:
        return event(
            "upload",
            ALICE,
            address="10.0.0.7",
            target=f"job-{i}",
            details={"audio_sha256": f"{i:064x}", "filename": name, "bytes": i},
        )
    if kind == 1:
        return event(
            "login_failed",
            Actor(name),
            address="::1",
            outcome="denied",
            details={"reason": "bad_password", "code": "invalid_credentials"},
        )
    if kind == 2:
        return event("result_read", ALICE, target=f"job-{i}", details={"format": "srt"})
    if kind == 3:
        return event(
            "access_denied",
            ALICE,
            outcome="denied",
            details={"by": "permission", "path": f"/v1/{name}", "method": "GET"},
        )
    if kind == 4:
        return event(
            "transcription_done",
            Actor(None, "u-1", None, "worker"),
            target=f"job-{i}",
            details={"filename": name, "segments": 3, "language": "zh"},
        )
    return event("settings_changed", SERVICE, details={"changed": {"audit.dir": name}})


def build_log(root: Path, n: int, **settings: Any) -> tuple[Path, Path]:
    """A log of ``n`` sample events (closed: it ends with a checkpoint); (audit dir, keys dir)."""
    options = {"rotate_bytes": 256 * 1024, "checkpoint_every": 250, "fsync": "batch"} | settings
    audit_dir, keys_dir = root / "audit", root / "keys"
    writer = AuditLog(AuditSettings(**options), audit_dir, keys_dir)
    for i in range(n):
        assert writer.append(sample_event(i)) is not None
    writer.close()
    return audit_dir, keys_dir


def all_lines(audit_dir: Path) -> list[bytes]:
    return [ln for p in log_files(audit_dir) for ln in p.read_bytes().split(b"\n")[:-1]]


def test_ten_thousand_events(tmp_path: Path) -> None:
    audit_dir, keys_dir = build_log(tmp_path, 10_000)
    public = tmp_path / "auditor-copy.pem"  # the auditor's own copy, taken at installation
    public.write_bytes((audit_dir / "public-key.pem").read_bytes())
    report = verify(audit_dir, public_key=public, hmac_key=keys_dir / "audit-hmac.key")
    assert report.ok, report.damage
    assert report.damage is None
    files = log_files(audit_dir)
    assert len(files) >= 5 and report.files == len(files)
    assert report.checkpoints >= len(files) and report.checkpoints >= 10_000 // 250
    assert report.records == 10_000 + report.checkpoints == report.head_seq
    assert report.warnings == []  # both keys given, head.json present, nothing torn
    lines = all_lines(audit_dir)
    assert len(lines) == report.records  # no record took more than its line
    records = [json.loads(ln) for ln in lines]
    assert [r["seq"] for r in records] == list(range(1, report.records + 1))
    assert records[0]["prev"] == "0" * 64
    for before, after, line in zip(records, records[1:], lines, strict=False):
        assert after["prev"] == line_hash(line)
        assert before["time"] <= after["time"]
    assert all(canonical(r) == ln for r, ln in zip(records, lines, strict=True))
    raw = b"".join(p.read_bytes() for p in files)
    assert raw.isascii() and b"\r" not in raw and b"\x1b" not in raw and b"\x00" not in raw
    uploads = [r for r in records if r["type"] == "upload"]
    assert uploads[0]["details"]["filename"] == NASTY[0] + "#0"
    assert {r["details"]["filename"].split("#")[0] for r in uploads} == set(NASTY)
    assert records[1]["actor"]["user"].startswith("red\x1b[31m")
    for path in files[:-1]:  # every file but the newest is closed by a checkpoint naming it
        last = json.loads(path.read_bytes().split(b"\n")[-2])
        assert last["type"] == "checkpoint" and last["details"]["file"] == path.name
    checkpoint = next(r for r in records if r["type"] == "checkpoint")
    assert checkpoint["actor"] == {
        "key_id": None,
        "method": "service",
        "user": None,
        "user_id": None,
    }
    assert checkpoint["details"]["head_seq"] == checkpoint["seq"] - 1
    assert checkpoint["details"]["public_key_sha256"] == public_key_sha256(load_public_key(public))
    head = json.loads((audit_dir / "head.json").read_bytes())
    assert head == records[-1] and head["type"] == "checkpoint"


def test_transcript_text_only_when_settings_allow(tmp_path: Path) -> None:
    done = event(
        "transcription_done",
        ALICE,
        target="job-1",
        details={"text": "the patient said", "text_included": True, "segments": 1},
    )
    for include, root in ((False, tmp_path / "off"), (True, tmp_path / "on")):
        writer = AuditLog(AuditSettings(include_text=include), root / "audit", root / "keys")
        writer.append(done)
        writer.close()
        record = json.loads(all_lines(root / "audit")[0])
        if include:
            assert record["text_included"] is True
            assert record["details"]["text"] == "the patient said"
        else:
            assert "text_included" not in record and "text" not in record["details"]
            assert record["details"] == {"segments": 1}


def test_keys_made_once_private_and_exported(tmp_path: Path) -> None:
    audit_dir, keys_dir = tmp_path / "audit", tmp_path / "keys"
    first = AuditLog(AuditSettings(), audit_dir, keys_dir)
    assert first.append(sample_event(0)) == 1
    hmac_path, signing = keys_dir / "audit-hmac.key", keys_dir / "audit-signing.pem"
    for path in (hmac_path, signing):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(keys_dir.stat().st_mode) == 0o700
    assert len(hmac_path.read_bytes()) == 32
    assert b"BEGIN PRIVATE KEY" in signing.read_bytes()
    exported = load_public_key(audit_dir / "public-key.pem")
    before = (hmac_path.read_bytes(), signing.read_bytes(), public_key_sha256(exported))
    first.close()
    second = AuditLog(AuditSettings(), audit_dir, keys_dir)  # a restart: the same keys
    assert second.append(sample_event(1)) == 3  # 2 was the first one's closing checkpoint
    second.close()
    exported = load_public_key(audit_dir / "public-key.pem")
    assert (hmac_path.read_bytes(), signing.read_bytes(), public_key_sha256(exported)) == before
    assert not list(keys_dir.glob(".*.tmp"))
    report = verify(audit_dir, hmac_key=hmac_path)
    assert report.ok and report.records == 4 and report.checkpoints == 2
    assert any("independent copy" in w for w in report.warnings)


def test_disabled_writes_nothing(tmp_path: Path) -> None:
    writer = AuditLog(AuditSettings(enabled=False), tmp_path / "audit", tmp_path / "keys")
    assert writer.append(sample_event(0)) is None
    writer.close()
    assert not (tmp_path / "audit").exists() and not (tmp_path / "keys").exists()


def test_read_only_dir_fails_closed_or_open(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import subprocess

    with small_tmpfs(tmp_path / "ro", "1m") as mount:
        subprocess.run(["mount", "-o", "remount,ro", str(mount)], check=True)
        closed = AuditLog(AuditSettings(), mount / "audit", tmp_path / "keys")
        with pytest.raises(AuditUnavailable) as err:
            closed.append(sample_event(0))
        assert err.value.status == 503 and err.value.code == "audit_unavailable"
        assert "the audit log cannot be written" in err.value.message
        assert err.value.message.endswith("nothing was done")
        assert "Read-only file system" in err.value.message
        opened = AuditLog(AuditSettings(fail_open=True), mount / "audit", tmp_path / "keys")
        with caplog.at_level(logging.WARNING, logger="hushscribe.audit.log"):
            assert opened.append(sample_event(0)) is None
        assert "NOT written (fail_open)" in caplog.text and "Read-only" in caplog.text


def test_disk_full_fails_closed_and_leaves_no_torn_line(tmp_path: Path) -> None:
    with small_tmpfs(tmp_path / "full", "1m") as mount:
        writer = AuditLog(AuditSettings(checkpoint_every=5), mount / "audit", tmp_path / "keys")
        for i in range(20):
            writer.append(sample_event(i))
        filler = fill(mount)
        big = event("upload", ALICE, details={"audio_sha256": "0" * 64, "filename": "x" * 8000})
        with pytest.raises(AuditUnavailable, match="No space left"):
            writer.append(big)
        filler.unlink()
        assert writer.append(sample_event(99)) is not None  # space again: the log goes on
        writer.close()
        report = verify(mount / "audit", hmac_key=tmp_path / "keys" / "audit-hmac.key")
        assert report.ok, report.damage
        assert not any("torn" in w for w in report.warnings)


def test_rotates_at_utc_midnight(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [datetime(2025, 3, 30, 23, 59, 59, 500000, tzinfo=UTC)]
    monkeypatch.setattr(audit_log, "_now", lambda: clock[0])
    writer = AuditLog(AuditSettings(), tmp_path / "audit", tmp_path / "keys")
    writer.append(sample_event(0))
    writer.append(sample_event(1))
    clock[0] += timedelta(seconds=1)
    writer.append(sample_event(2))
    writer.close()
    files = [p.name for p in log_files(tmp_path / "audit")]
    assert files == ["audit-20250330-000001.jsonl", "audit-20250331-000004.jsonl"]
    old = [json.loads(ln) for ln in (tmp_path / "audit" / files[0]).read_bytes().splitlines()]
    assert [r["type"] for r in old][-1] == "checkpoint" and old[-1]["seq"] == 3
    assert old[-1]["time"] == "2025-03-31T00:00:00.500000Z"
    assert verify(tmp_path / "audit").ok


def _threaded(writer: AuditLog, n: int, seqs: list[int]) -> None:
    for i in range(n):
        seq = writer.append(sample_event(i))
        assert seq is not None
        seqs.append(seq)


def test_threads_and_two_logs_in_one_process(tmp_path: Path) -> None:
    audit_dir, keys_dir = tmp_path / "audit", tmp_path / "keys"
    options = AuditSettings(checkpoint_every=50, rotate_bytes=32 * 1024)
    writers = [AuditLog(options, audit_dir, keys_dir) for _ in range(2)]
    seqs: list[int] = []
    threads = [
        threading.Thread(target=_threaded, args=(writers[i % 2], 100, seqs)) for i in range(6)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for writer in writers:
        writer.close()
    assert len(set(seqs)) == 600
    report = verify(audit_dir, hmac_key=keys_dir / "audit-hmac.key")
    assert report.ok, report.damage
    assert report.records == 600 + report.checkpoints


def test_forked_child_uses_its_own_descriptors(tmp_path: Path) -> None:
    writer = AuditLog(AuditSettings(), tmp_path / "audit", tmp_path / "keys")
    assert writer.append(sample_event(0)) == 1
    pid = os.fork()
    if pid == 0:  # the child: append through the inherited object, then leave at once
        code = 0
        try:
            code = 0 if writer.append(sample_event(1)) == 2 else 3
        except BaseException:
            code = 4
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert writer.append(sample_event(2)) == 3  # the parent sees the child's record
    writer.close()
    report = verify(tmp_path / "audit")
    assert report.ok and report.records == 4


def _worker(audit_dir: str, keys_dir: str, n: int, start: Any, out: Any) -> None:
    writer = AuditLog(
        AuditSettings(checkpoint_every=100, rotate_bytes=64 * 1024), Path(audit_dir), Path(keys_dir)
    )
    start.wait()
    began, seqs = time.perf_counter(), []
    for i in range(n):
        seqs.append(writer.append(sample_event(i)))
    out.put((seqs, time.perf_counter() - began))
    writer.close()


def test_four_processes_one_sequence(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("spawn")
    start, out = ctx.Event(), ctx.Queue()
    audit_dir, keys_dir = tmp_path / "audit", tmp_path / "keys"  # made by whichever is first
    procs = [
        ctx.Process(target=_worker, args=(str(audit_dir), str(keys_dir), 500, start, out))
        for _ in range(4)
    ]
    for p in procs:
        p.start()
    time.sleep(0.5)  # let them import; they also race to make the keys
    start.set()
    results = [out.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    seqs = sorted(s for r in results for s in r[0])
    assert len(seqs) == len(set(seqs)) == 2000
    report = verify(audit_dir, hmac_key=keys_dir / "audit-hmac.key")
    assert report.ok, report.damage
    assert report.records == 2000 + report.checkpoints
    records = [json.loads(ln) for ln in all_lines(audit_dir)]
    assert [r["seq"] for r in records] == list(range(1, report.records + 1))
    keys = {r["details"]["public_key_sha256"] for r in records if r["type"] == "checkpoint"}
    assert len(keys) == 1  # the four raced to make the keys: one won
    rate = 2000 / max(r[1] for r in results)
    print(f"\naudit append, 4 processes at once, fsync each: {rate:.0f} records/s in all")


@pytest.mark.parametrize("fsync", ["each", "batch"])
def test_append_rate(tmp_path: Path, fsync: str) -> None:
    options = AuditSettings.model_validate({"fsync": fsync})
    writer = AuditLog(options, tmp_path / "audit", tmp_path / "keys")
    writer.append(sample_event(0))
    n, began = 1000, time.perf_counter()
    for i in range(n):
        writer.append(sample_event(i))
    rate = n / (time.perf_counter() - began)
    writer.close()
    print(f"\naudit append, one process, fsync {fsync}: {rate:.0f} records/s")
    assert rate > 50
    assert verify(tmp_path / "audit").ok


def test_verify_from_a_time_on(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [datetime(2025, 1, 1, tzinfo=UTC)]

    def tick() -> datetime:
        clock[0] += timedelta(minutes=1)
        return clock[0]

    monkeypatch.setattr(audit_log, "_now", tick)
    audit_dir, keys_dir = build_log(tmp_path, 1500, rotate_bytes=64 * 1024, checkpoint_every=100)
    files = log_files(audit_dir)
    since = datetime.fromisoformat(json.loads(all_lines(audit_dir)[900])["time"])
    start = next(p for p in files if json.loads(p.read_bytes().split(b"\n")[-2])["time"]
                 >= since.isoformat().replace("+00:00", ".000000Z"))  # fmt: skip
    first_checked = json.loads(start.read_bytes().split(b"\n")[0])["seq"]
    report = verify(audit_dir, hmac_key=keys_dir / "audit-hmac.key", since=since)
    assert report.ok, report.damage
    assert report.records == report.head_seq - first_checked + 1 < 1500
    assert any(f"from {start.name}" in w for w in report.warnings)
    assert not any("not checked (the checkpoint before" in w for w in report.warnings)
    # damage before the start is out of scope; damage after it is found
    early = files[0]
    lines = early.read_bytes().split(b"\n")
    assert b'"outcome":"ok"' in lines[0]
    lines[0] = lines[0].replace(b'"outcome":"ok"', b'"outcome":"denied"', 1)
    early.write_bytes(b"\n".join(lines))
    assert verify(audit_dir, since=since).ok
    damage = verify(audit_dir).damage
    assert damage is not None and (damage.kind, damage.seq) == ("modified", 1)


def test_batch_fsync_syncs_later_not_per_record(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: list[int] = []
    real_fsync = os.fsync
    monkeypatch.setattr(audit_log.os, "fsync", lambda fd: (synced.append(fd), real_fsync(fd)))
    options = AuditSettings(fsync="batch", fsync_interval_s=0.2, checkpoint_every=10_000)
    writer = AuditLog(options, tmp_path / "audit", tmp_path / "keys")
    writer.append(sample_event(0))  # the first file's creation syncs; start counting after it
    synced.clear()
    for i in range(200):
        writer.append(sample_event(i))
    assert len(synced) <= 2  # at most the interval's sync, not 200
    time.sleep(0.5)
    assert synced  # the timer synced what was written
    writer.close()
    assert verify(tmp_path / "audit").ok


def test_verify_an_empty_or_missing_folder(tmp_path: Path) -> None:
    report = verify(tmp_path)
    assert report.ok and report.records == 0 and report.head_seq is None
    assert any("no audit files" in w for w in report.warnings)
