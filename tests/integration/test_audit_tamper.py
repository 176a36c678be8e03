"""The tamper matrix: each way of changing a copy of a 10,000-event log, and what `verify` names
(kind, seq and file: always the first bad place). The matrix is printed and written to
``test-artifacts/audit-tamper-matrix.md``."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from hushscribe.audit.keys import public_key_sha256
from hushscribe.audit.verify import (
    Report,
    canonical,
    line_hash,
    log_files,
    record_mac,
    signed_message,
    verify,
)
from tests.integration.test_audit_log import build_log

ARTIFACT = Path(__file__).resolve().parents[2] / "test-artifacts" / "audit-tamper-matrix.md"
MATRIX: list[tuple[str, str, str, str]] = []


@dataclass
class Log:
    """A copy of the log, as lines per file, with what a test needs to aim at."""

    dir: Path
    public: Path  # the auditor's independent copy of the public key
    hmac: Path

    def files(self) -> list[Path]:
        return log_files(self.dir)

    def lines(self, path: Path) -> list[bytes]:
        return path.read_bytes().split(b"\n")[:-1]

    def write(self, path: Path, lines: list[bytes]) -> None:
        path.write_bytes(b"".join(ln + b"\n" for ln in lines))

    def records(self) -> Iterator[tuple[Path, int, dict[str, Any]]]:
        for path in self.files():
            for i, line in enumerate(self.lines(path)):
                yield path, i, json.loads(line)

    def middle(self) -> tuple[Path, int, int]:
        """The middle file, the index of an ordinary record in its middle, and that record's seq."""
        path = self.files()[len(self.files()) // 2]
        lines = self.lines(path)
        i = len(lines) // 2
        while json.loads(lines[i])["type"] == "checkpoint":
            i += 1
        return path, i, json.loads(lines[i])["seq"]

    def checkpoint_after(self, seq: int) -> tuple[str, int]:
        return next(
            (p.name, r["seq"])
            for p, _, r in self.records()
            if r["type"] == "checkpoint" and r["seq"] > seq
        )

    def rechain(
        self,
        from_seq: int,
        key: bytes,
        fix_head: bool = False,
        signer: Ed25519PrivateKey | None = None,
    ) -> None:
        """Recompute every prev from ``from_seq`` on, MAC'd with ``key`` (a wrong one: the
        attacker has no other), optionally fixing checkpoints' heads and re-signing them."""
        prev, cp = "0" * 64, "0" * 64
        for path in self.files():
            out = []
            for line in self.lines(path):
                rec = json.loads(line)
                if rec["seq"] >= from_seq:
                    rec["prev"] = prev
                    if rec["type"] == "checkpoint" and (fix_head or signer):
                        d = rec["details"]
                        d["head_hash"] = prev
                        if signer is not None:
                            d["public_key_sha256"] = public_key_sha256(signer.public_key())
                            msg = signed_message(d["head_seq"], prev, d["file"], cp)
                            d["signature"] = signer.sign(msg).hex()
                    rec["mac"] = record_mac(key, rec)
                    line = canonical(rec)
                prev = line_hash(line)
                cp = prev if rec["type"] == "checkpoint" else cp
                out.append(line)
            self.write(path, out)


@pytest.fixture(scope="module")
def original(tmp_path_factory: pytest.TempPathFactory) -> Log:
    root = tmp_path_factory.mktemp("audit-original")
    audit_dir, keys_dir = build_log(root, 10_000)
    public = root / "auditor-public.pem"
    public.write_bytes((audit_dir / "public-key.pem").read_bytes())
    report = verify(audit_dir, public_key=public, hmac_key=keys_dir / "audit-hmac.key")
    assert report.ok and len(log_files(audit_dir)) >= 5
    return Log(audit_dir, public, keys_dir / "audit-hmac.key")


@pytest.fixture
def log(original: Log, tmp_path: Path) -> Log:
    shutil.copytree(original.dir, tmp_path / "audit")
    return Log(tmp_path / "audit", original.public, original.hmac)


def check(
    log: Log,
    case: str,
    expected: tuple[str, int | None, str],
    with_mac: bool | None,
    extra: Callable[[Report], None] | None = None,
) -> Report:
    """Verify with the auditor's public key (and the HMAC key when ``with_mac``; ``None``: with
    neither key, as someone who only has the folder); record the row; assert kind, seq, file."""
    if with_mac is None:
        report, keys = verify(log.dir), "the folder's own public key"
    else:
        report = verify(log.dir, public_key=log.public, hmac_key=log.hmac if with_mac else None)
        keys = "public key + HMAC key" if with_mac else "public key only"
    found = report.damage
    got = f"{found.kind} at seq {found.seq} ({found.file})" if found else "ok (not detected)"
    MATRIX.append((case, keys, f"{expected[0]} at seq {expected[1]}", got))
    print(f"{case} [{keys}] -> {got}" + (f": {found.detail}" if found else ""))
    assert found is not None, f"{case}: not detected"
    assert (found.kind, found.seq, found.file) == expected, found
    assert not report.ok
    if extra is not None:
        extra(report)
    return report


@pytest.mark.parametrize("with_mac", [False, True])
def test_modified_detail(log: Log, with_mac: bool) -> None:
    path, i, seq = log.middle()
    lines = log.lines(path)
    rec = json.loads(lines[i])
    rec["details"] = {**rec["details"], "filename": "innocent.wav"}
    lines[i] = canonical(rec)
    log.write(path, lines)
    check(log, f"modify a detail of record {seq}", ("modified", seq, path.name), with_mac)


@pytest.mark.parametrize("with_mac", [False, True])
def test_deleted_record(log: Log, with_mac: bool) -> None:
    path, i, seq = log.middle()
    lines = log.lines(path)
    del lines[i]
    log.write(path, lines)
    check(log, f"delete record {seq}", ("deleted", seq, path.name), with_mac)


@pytest.mark.parametrize("with_mac", [False, True])
def test_inserted_copy(log: Log, with_mac: bool) -> None:
    path, i, seq = log.middle()
    lines = log.lines(path)
    lines.insert(i + 5, lines[i])  # a genuine record (valid MAC), once more, further on
    log.write(path, lines)
    check(
        log,
        f"insert a copy of record {seq} after {seq + 4}",
        ("inserted", seq, path.name),
        with_mac,
    )


def test_inserted_forgery(log: Log) -> None:
    path, i, seq = log.middle()
    lines = log.lines(path)
    forged = {**json.loads(lines[i]), "seq": seq + 1}  # claims the next seq, chains to nothing
    lines.insert(i + 1, canonical(forged))
    log.write(path, lines)
    check(
        log,
        f"insert a forged record claiming seq {seq + 1}",
        ("inserted", seq + 1, path.name),
        False,
    )


@pytest.mark.parametrize("with_mac", [False, True])
def test_swapped_records(log: Log, with_mac: bool) -> None:
    path, i, seq = log.middle()
    lines = log.lines(path)
    lines[i], lines[i + 1] = lines[i + 1], lines[i]
    log.write(path, lines)
    check(log, f"swap records {seq} and {seq + 1}", ("reordered", seq, path.name), with_mac)


@pytest.mark.parametrize("with_mac", [False, True])
def test_truncated_newest_file(log: Log, with_mac: bool) -> None:
    newest = log.files()[-1]
    lines = log.lines(newest)
    first_gone = json.loads(lines[-5])["seq"]
    log.write(newest, lines[:-5])
    check(
        log,
        "drop the newest file's last 5 records",
        ("truncated", first_gone, newest.name),
        with_mac,
    )


def test_truncated_middle_file(log: Log) -> None:
    files = log.files()
    path = files[len(files) // 2]
    lines = log.lines(path)
    first_gone = json.loads(lines[-3])["seq"]
    log.write(path, lines[:-3])
    check(log, "drop a middle file's last 3 records", ("truncated", first_gone, path.name), False)


@pytest.mark.parametrize("with_mac", [False, True])
def test_missing_segment(log: Log, with_mac: bool) -> None:
    files = log.files()
    gone, after = files[len(files) // 2], files[len(files) // 2 + 1]
    first = json.loads(log.lines(gone)[0])["seq"]
    gone.unlink()
    check(
        log,
        f"delete a whole middle file ({gone.name})",
        ("missing_segment", first, after.name),
        with_mac,
    )


@pytest.mark.parametrize("with_mac", [False, True])
def test_changed_mac(log: Log, with_mac: bool) -> None:
    path, i, seq = log.middle()
    lines = log.lines(path)
    rec = json.loads(lines[i])
    rec["mac"] = ("0" if rec["mac"][0] != "0" else "1") + rec["mac"][1:]
    lines[i] = canonical(rec)
    log.write(path, lines)
    expected = "bad_mac" if with_mac else "modified"
    check(log, f"change the MAC of record {seq}", (expected, seq, path.name), with_mac)


@pytest.mark.parametrize("keys", ["hmac", "public"])
def test_rewritten_and_rechained(log: Log, keys: str) -> None:
    """The strongest attack without keys: change a record, then recompute every later prev so the
    chain is whole again, with MACs made by a key of the attacker's own."""
    path, i, seq = log.middle()
    lines = log.lines(path)
    rec = json.loads(lines[i])
    rec["details"] = {**rec["details"], "filename": "innocent.wav"}
    lines[i] = canonical(rec)
    log.write(path, lines)
    log.rechain(seq, b"k" * 32)
    if keys == "hmac":
        check(log, f"rewrite record {seq}, re-chain all after", ("bad_mac", seq, path.name), True)
    else:
        cp_file, cp = log.checkpoint_after(seq)
        check(log, f"rewrite record {seq}, re-chain all after", ("modified", cp, cp_file), False)


def test_rewritten_rechained_and_checkpoint_heads_fixed(log: Log) -> None:
    path, i, seq = log.middle()
    lines = log.lines(path)
    rec = json.loads(lines[i])
    rec["outcome"] = "ok" if rec["outcome"] != "ok" else "denied"
    lines[i] = canonical(rec)
    log.write(path, lines)
    log.rechain(seq, b"k" * 32, fix_head=True)
    cp_file, cp = log.checkpoint_after(seq)
    check(
        log,
        f"rewrite record {seq}, re-chain, fix checkpoint heads",
        ("bad_signature", cp, cp_file),
        False,
    )


@pytest.mark.parametrize("with_mac", [False, True])
def test_forged_checkpoint_signature(log: Log, with_mac: bool) -> None:
    path = log.files()[len(log.files()) // 2]
    lines = log.lines(path)
    i = next(i for i, ln in enumerate(lines) if json.loads(ln)["type"] == "checkpoint")
    rec = json.loads(lines[i])
    sig = rec["details"]["signature"]
    rec["details"]["signature"] = ("0" if sig[0] != "0" else "1") + sig[1:]
    lines[i] = canonical(rec)
    log.write(path, lines)
    check(
        log,
        f"forge the signature of checkpoint {rec['seq']}",
        ("bad_signature", rec["seq"], path.name),
        with_mac,
    )


@pytest.mark.parametrize("keys", ["public", "hmac", "folder"])
def test_resigned_with_another_key(log: Log, keys: str) -> None:
    """Re-sign every checkpoint with the attacker's key and put its public key in the folder."""
    attacker = Ed25519PrivateKey.generate()
    log.rechain(1, b"k" * 32, signer=attacker)
    (log.dir / "public-key.pem").write_bytes(
        attacker.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    head = log.dir / "head.json"
    head.write_bytes(log.lines(log.files()[-1])[-1] + b"\n")
    first_file, first_cp = log.checkpoint_after(0)
    case = "re-sign every checkpoint with another key"
    if keys == "public":
        check(log, case, ("bad_signature", first_cp, first_file), False)
    elif keys == "hmac":  # MACs first: every re-chained record's MAC is the attacker's
        check(log, case, ("bad_mac", 1, log.files()[0].name), True)
    else:  # only the folder: its key is the attacker's, and nothing else is checked
        report = verify(log.dir)
        MATRIX.append(
            (
                case,
                "the folder's own public key",
                "(undetectable: no independent key)",
                "ok (not detected)" if report.ok else str(report.damage),
            )
        )
        assert report.ok
        assert any("independent copy" in w for w in report.warnings)


def test_torn_tail_is_a_warning(log: Log) -> None:
    newest = log.files()[-1]
    with newest.open("ab") as f:
        f.write(b'{"action":"upload","actor":{"key_id"')
    report = verify(log.dir, public_key=log.public, hmac_key=log.hmac)
    MATRIX.append(
        (
            "a torn last line (a crash while writing)",
            "public key + HMAC key",
            "ok, with a warning",
            "ok" if report.ok else str(report.damage),
        )
    )
    assert report.ok
    assert [w for w in report.warnings if "torn" in w] == [
        f"1 torn record at the end of {newest.name} (line {len(log.lines(newest)) + 1}): a crash "
        "while writing; not part of the chain"
    ]


def test_zz_matrix_written() -> None:
    """Runs last: the matrix of every case above, for the closing note."""
    assert len(MATRIX) >= 25
    rows = ["| tampering | verified with | expected | detected |", "|---|---|---|---|"]
    rows += [f"| {' | '.join(row)} |" for row in MATRIX]
    text = "# Audit log tamper matrix\n\n" + "\n".join(rows) + "\n"
    ARTIFACT.parent.mkdir(exist_ok=True)
    ARTIFACT.write_text(text)
    print("\n" + text)
