"""Writers killed (SIGKILL) at random moments, hundreds of times, alone and several at once: the
log stays whole. A torn record is at most one per file, only its last line, and reported as a
warning; the complete records form one gap-free sequence that verifies."""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from hushscribe.audit.log import AuditLog
from hushscribe.audit.verify import log_files, verify
from hushscribe.settings_audit import AuditSettings
from tests.integration.test_audit_log import sample_event

KILLS = 240
OPTIONS = {"rotate_bytes": 16 * 1024, "checkpoint_every": 20, "include_text": True}

# A zygote: one process that has imported everything once and forks writers on demand (a fresh
# interpreter per writer would take longer to start than the 5-50 ms it is given to live).
# "N big" on stdin: fork N writers (``big``: records of ~1 MB, slow enough to be cut mid-write);
# it answers with their pids on one line once each has written a record.
ZYGOTE = textwrap.dedent("""
    import os, signal, sys
    from pathlib import Path
    from hushscribe.audit.events import Actor, event
    from hushscribe.audit.log import AuditLog
    from hushscribe.settings_audit import AuditSettings
    from tests.integration.test_audit_log import sample_event

    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # killed writers are reaped by the kernel
    audit_dir, keys_dir, options = Path(sys.argv[1]), Path(sys.argv[2]), eval(sys.argv[3])
    big_text = "x" * (1 << 20)

    def write(big, started):
        log = AuditLog(AuditSettings(**options), audit_dir, keys_dir)
        i = 0
        while True:
            if i == 1:
                os.write(started, b".")
            i += 1
            if big and i % 2:
                log.append(event("transcription_done", Actor("bob"), target=f"job-{i}",
                                 details={"text": big_text, "segments": 1}))
            else:
                log.append(sample_event(i))

    for line in sys.stdin:
        n, big = line.split()
        pids, (ready, started) = [], os.pipe()
        for _ in range(int(n)):
            pid = os.fork()
            if pid == 0:
                try:
                    write(big == "1", started)
                finally:
                    os._exit(1)
            pids.append(pid)
        os.close(started)
        for _ in pids:  # each has written its first record: now they are in full flow
            assert os.read(ready, 1) == b"."
        os.close(ready)
        print(" ".join(map(str, pids)), flush=True)
""")


def test_writers_killed_at_random(tmp_path: Path) -> None:
    audit_dir, keys_dir = tmp_path / "audit", tmp_path / "keys"
    first = AuditLog(AuditSettings(**OPTIONS), audit_dir, keys_dir)
    first.append(sample_event(0))  # the keys, made once
    first.close()
    zygote = subprocess.Popen(
        [sys.executable, "-c", ZYGOTE, str(audit_dir), str(keys_dir), repr(OPTIONS)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert zygote.stdin is not None and zygote.stdout is not None
    rng, kills, together, began = random.Random(20250330), 0, 0, time.monotonic()
    pids: list[int] = []
    try:
        while kills < KILLS:
            n = 1 if rng.random() < 0.6 else rng.randint(2, 4)
            big = rng.random() < 0.3
            zygote.stdin.write(f"{n} {int(big)}\n")
            zygote.stdin.flush()
            pids = [int(p) for p in zygote.stdout.readline().split()]
            forked = time.monotonic()  # each has written a record: the 5-50 ms begin now
            assert len(pids) == n
            for at, pid in sorted((rng.uniform(0.005, 0.050), pid) for pid in pids):
                time.sleep(max(0.0, forked + at - time.monotonic()))
                os.kill(pid, signal.SIGKILL)
                kills += 1
            together += n > 1
    finally:
        for pid in pids:  # after a failure: no writer is left running
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        zygote.stdin.close()
        zygote.wait(timeout=30)
        zygote.stdout.close()
    elapsed = time.monotonic() - began

    survivor = AuditLog(AuditSettings(**OPTIONS), audit_dir, keys_dir)
    last = survivor.append(sample_event(1))
    survivor.close()

    report = verify(audit_dir, hmac_key=keys_dir / "audit-hmac.key")
    assert report.ok, report.damage
    torn_warnings = [w for w in report.warnings if "torn" in w]
    files = log_files(audit_dir)
    seqs, torn_files = [], []
    for path in files:
        *lines, tail = path.read_bytes().split(b"\n")
        if tail:  # a torn record: only ever the file's last line (a newline ends every other)
            torn_files.append(path.name)
            assert path != files[-1]  # the newest file took the survivor's records after it
        seqs += [json.loads(line)["seq"] for line in lines]  # every complete line is a record
    assert seqs == list(range(1, len(seqs) + 1))  # gap-free among complete records
    assert last is not None and last < len(seqs) and report.records == len(seqs)
    assert len(torn_warnings) == len(torn_files)
    assert all(any(name in w for w in torn_warnings) for name in torn_files)
    print(
        f"\n{kills} writers killed ({together} rounds with several at once) in {elapsed:.1f} s: "
        f"{len(seqs)} records in {len(files)} files, {len(torn_files)} torn records, "
        f"{report.checkpoints} checkpoints; verify ok"
    )


def _lines(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_bytes().split(b"\n")[:-1]]


def test_torn_tail_begins_a_new_file(tmp_path: Path) -> None:
    """What a crash mid-write leaves (a last line without its newline) stays where it is; the
    next record begins a new file and chains to the last complete one."""
    audit_dir, keys_dir = tmp_path / "audit", tmp_path / "keys"
    writer = AuditLog(AuditSettings(), audit_dir, keys_dir)
    for i in range(3):
        writer.append(sample_event(i))
    first = log_files(audit_dir)[0]
    torn = b'{"action":"upload","actor":{"key_id":null,"method":"key","user":"ali'
    with first.open("ab") as f:
        f.write(torn)
    assert writer.append(sample_event(3)) == 4  # another process's crash: this one re-reads
    writer.close()
    files = log_files(audit_dir)
    assert len(files) == 2 and first.read_bytes().endswith(b"\n" + torn)
    assert files[1].name.endswith("-000004.jsonl")
    third, fourth = _lines(first)[-1], _lines(files[1])[0]
    from hushscribe.audit.verify import canonical, line_hash

    assert fourth["seq"] == 4 and fourth["prev"] == line_hash(canonical(third))
    report = verify(audit_dir, hmac_key=keys_dir / "audit-hmac.key")
    assert report.ok and report.records == 5
    assert [w for w in report.warnings if "torn" in w] == [
        f"1 torn record at the end of {first.name} (line 4): a crash while writing; not part of "
        "the chain"
    ]


def test_torn_only_file_and_empty_file(tmp_path: Path) -> None:
    """A crash while writing a file's first record leaves a file holding only a torn line: the
    next file has the same first seq, so its name is padded once more. A crash right after a
    file was begun leaves it empty: the next writer uses it."""
    audit_dir, keys_dir = tmp_path / "audit", tmp_path / "keys"
    options = AuditSettings(rotate_bytes=4096)
    writer = AuditLog(options, audit_dir, keys_dir)
    while len(log_files(audit_dir)) < 2:  # up to the first record of a second file
        writer.append(sample_event(1))
    second = log_files(audit_dir)[-1]
    seq = _lines(second)[0]["seq"]
    second.write_bytes(b'{"action":"log')  # as if that record's write had been cut short
    writer.close()
    writer = AuditLog(options, audit_dir, keys_dir)
    assert writer.append(sample_event(2)) == seq
    padded = log_files(audit_dir)[-1]
    assert padded.name == second.name.replace(f"-{seq:06d}", f"-{seq:07d}")
    while len(log_files(audit_dir)) < 4:
        writer.append(sample_event(3))
    fourth = log_files(audit_dir)[-1]
    seq = _lines(fourth)[0]["seq"]
    fourth.write_bytes(b"")  # begun, then the writer died before its first line
    assert writer.append(sample_event(4)) == seq  # the same process: re-reads and reuses it
    writer.close()
    assert log_files(audit_dir)[-1] == fourth and _lines(fourth)[0]["seq"] == seq
    report = verify(audit_dir, hmac_key=keys_dir / "audit-hmac.key")
    assert report.ok, report.damage
    assert sum("torn" in w for w in report.warnings) == 1
