"""The syslog copy of the audit log: real TCP (and TLS) collectors on loopback receive exactly the
records sent, as RFC 5424 messages with RFC 6587 octet counting; the collector going away and
coming back loses nothing queued and never blocks the caller; unconfigured, nothing connects."""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hushscribe.audit import read, syslog
from hushscribe.audit.events import Actor, event
from hushscribe.audit.log import AuditLog
from hushscribe.audit.syslog import SyslogForwarder, forwarder
from hushscribe.settings_audit import AuditSettings, SyslogSettings
from tests.ldap_server import make_ca, make_server_cert

RFC5424 = re.compile(
    rb"<(?P<pri>\d{1,3})>(?P<version>\d) (?P<time>\S+) (?P<host>\S+) (?P<app>\S+) "
    rb"(?P<procid>\S+) (?P<msgid>\S+) (?P<sd>-|\[.*?\]) (?P<msg>.*)",
    re.DOTALL,
)


class Collector:
    """A syslog collector: accepts TCP (or TLS) connections and splits octet-counted frames."""

    def __init__(self, host: str = "127.0.0.1", tls: ssl.SSLContext | None = None) -> None:
        self.host, self.tls, self.port = host, tls, 0
        self.messages: list[bytes] = []
        self.connections = 0
        self.handshake_errors = 0
        self.bad_frames = 0
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None
        self._open: list[socket.socket] = []
        self._threads: list[threading.Thread] = []

    def start(self) -> Collector:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((self.host, self.port))
        listener.listen(8)
        listener.settimeout(0.1)
        self.port = listener.getsockname()[1]
        self._listener = listener
        self._spawn(self._accept, listener)
        return self

    def stop(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.close()
        with self._lock:
            conns, self._open = self._open, []
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
            conn.close()
        for t in self._threads:
            t.join(5)
        self._threads = []

    def _spawn(self, target: Any, *args: Any) -> None:
        t = threading.Thread(target=target, args=args, daemon=True)
        t.start()
        self._threads.append(t)

    def _accept(self, listener: socket.socket) -> None:
        while self._listener is listener:
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            conn.settimeout(5)
            if self.tls is not None:
                try:
                    conn = self.tls.wrap_socket(conn, server_side=True)
                except (ssl.SSLError, OSError):
                    self.handshake_errors += 1
                    conn.close()
                    continue
            conn.settimeout(None)
            with self._lock:
                self.connections += 1
                self._open.append(conn)
            self._spawn(self._read, conn)

    def _read(self, conn: socket.socket) -> None:
        buf = b""
        while True:
            try:
                data = conn.recv(65536)
            except OSError:
                return
            if not data:
                return
            buf += data
            while b" " in buf:
                count, rest = buf.split(b" ", 1)
                if not count.isdigit():
                    self.bad_frames += 1
                    return
                if len(rest) < int(count):
                    break
                with self._lock:
                    self.messages.append(rest[: int(count)])
                buf = rest[int(count) :]

    def wait_for(self, n: int, timeout: float = 10) -> list[bytes]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if len(self.messages) >= n:
                    return list(self.messages)
            time.sleep(0.02)
        with self._lock:
            return list(self.messages)


@pytest.fixture
def collector() -> Iterator[Collector]:
    c = Collector().start()
    yield c
    c.stop()


def _record(seq: int, outcome: str = "ok", type_: str = "upload") -> dict[str, Any]:
    return {
        "seq": seq,
        "time": f"2025-03-0{1 + seq % 9}T12:00:{seq % 60:02d}.{seq:06d}Z",
        "type": type_,
        "actor": {"user": "ölga", "user_id": "u1", "key_id": None, "method": "session"},
        "address": "192.0.2.7",
        "action": "upload",
        "target": f"job_{seq}",
        "outcome": outcome,
        "details": {"filename": "Bürgerversammlung – 会议.wav", "bytes": seq * 1000},
        "prev": "ab" * 32,
        "mac": "cd" * 32,
    }


def _parse(message: bytes) -> tuple[dict[str, bytes], dict[str, Any]]:
    m = RFC5424.fullmatch(message)
    assert m is not None, message[:200]
    fields = m.groupdict()
    assert fields["msg"].isascii()  # the canonical JSON escapes the rest: no BOM needed
    return fields, json.loads(fields["msg"])


def _check(messages: list[bytes], sent: list[dict[str, Any]], app: str = "hushscribe") -> None:
    assert len(messages) == len(sent)
    for message, record in zip(messages, sent, strict=True):
        fields, body = _parse(message)
        assert body == record
        assert fields["msg"] == read.dumps(record).encode()  # the log's own line for it
        severity = 5 if record["outcome"] == "ok" else 4
        assert int(fields["pri"]) == 13 * 8 + severity
        assert fields["version"] == b"1"
        assert fields["time"].decode() == record["time"]
        assert fields["host"].decode() == socket.gethostname()
        assert fields["app"].decode() == app
        assert fields["procid"].decode() == str(os.getpid())
        assert fields["msgid"].decode() == record["type"]
        assert fields["sd"] == b"-"


def _settings(port: int, **over: Any) -> SyslogSettings:
    return SyslogSettings(**{"host": "127.0.0.1", "port": port, "tls": False, **over})


def test_tcp_collector_receives_exactly_the_records_sent(collector: Collector) -> None:
    fwd = SyslogForwarder(_settings(collector.port, app_name="hs-test"))
    sent = [
        _record(1), _record(2, "denied", "access_denied"), _record(3, "failed", "login_failed"),
        *[_record(i) for i in range(4, 40)],
    ]  # fmt: skip
    for r in sent:
        fwd.send(r)
    _check(collector.wait_for(len(sent)), sent, app="hs-test")
    fwd.close()
    assert collector.connections == 1 and collector.bad_frames == 0
    assert fwd.dropped == 0 and fwd.sent == len(sent)
    time.sleep(0.1)
    assert len(collector.messages) == len(sent)  # nothing twice


def test_close_flushes_what_is_queued(collector: Collector) -> None:
    fwd = SyslogForwarder(_settings(collector.port))
    sent = [_record(i) for i in range(1, 201)]
    for r in sent:
        fwd.send(r)
    started = time.monotonic()
    fwd.close()
    assert time.monotonic() - started < 3
    _check(collector.wait_for(len(sent), timeout=3), sent)


def test_tls_collector_with_a_private_ca(tmp_path: Path) -> None:
    ca, ca_key, ca_name = make_ca(tmp_path, "syslog-ca")
    cert, key = make_server_cert(tmp_path, ca_key, ca_name)
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(cert, key)
    c = Collector(tls=server).start()
    try:
        fwd = SyslogForwarder(_settings(c.port, tls=True, ca_file=ca))
        sent = [_record(i, "ok" if i % 2 else "denied") for i in range(1, 11)]
        for r in sent:
            fwd.send(r)
        _check(c.wait_for(len(sent)), sent)
        fwd.close()
        assert c.connections == 1 and c.handshake_errors == 0
    finally:
        c.stop()


def test_tls_refuses_a_collector_with_the_wrong_name_or_ca(tmp_path: Path) -> None:
    """The certificate names 127.0.0.1 and localhost: at 127.0.0.2 the name check fails; with
    the system CAs (no ca_file) the chain check fails. Nothing is sent either way."""
    ca, ca_key, ca_name = make_ca(tmp_path, "syslog-ca")
    cert, key = make_server_cert(tmp_path, ca_key, ca_name)
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(cert, key)
    for host, ca_file in (("127.0.0.2", ca), ("127.0.0.1", None)):
        c = Collector(host=host, tls=server).start()
        try:
            fwd = SyslogForwarder(_settings(c.port, host=host, tls=True, ca_file=ca_file))
            started = time.monotonic()
            fwd.send(_record(1))
            assert time.monotonic() - started < 0.1
            deadline = time.monotonic() + 10
            while c.handshake_errors == 0 and time.monotonic() < deadline:
                time.sleep(0.02)
            assert c.handshake_errors >= 1
            fwd.close(timeout_s=0.2)
            assert c.messages == [] and c.connections == 0
            assert fwd.sent == 0
        finally:
            c.stop()


def test_collector_stopped_and_restarted_gets_the_later_records(collector: Collector) -> None:
    fwd = SyslogForwarder(_settings(collector.port), backoff_s=(0.05, 0.5))
    first = [_record(i) for i in range(1, 4)]
    for r in first:
        fwd.send(r)
    assert len(collector.wait_for(3)) == 3
    collector.stop()
    during = [_record(i) for i in range(4, 7)]
    for r in during:
        started = time.monotonic()
        fwd.send(r)
        assert time.monotonic() - started < 0.05  # never blocks
    time.sleep(0.5)  # the forwarder finds the collector gone and retries
    collector.start()  # the same port
    later = [_record(i) for i in range(7, 10)]
    for r in later:
        fwd.send(r)
    got = collector.wait_for(9)
    fwd.close()
    # What was queued while the collector was away arrives after it, in order, once each.
    _check(got, first + during + later)
    assert collector.connections == 2


def test_queue_is_bounded_and_drops_the_oldest(tmp_path: Path) -> None:
    with socket.socket() as s:  # a port with nobody listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    fwd = SyslogForwarder(_settings(port), max_queue=5, backoff_s=(0.05, 0.2))
    started = time.monotonic()
    for i in range(1, 21):
        fwd.send(_record(i))
    assert time.monotonic() - started < 0.5
    assert fwd.pending() <= 5
    assert fwd.dropped >= 15
    # The newest are the ones kept: a collector that comes now gets them.
    c = Collector()
    c.port = port
    c.start()
    try:
        got = c.wait_for(5)
        fwd.close()
        seqs = [_parse(m)[1]["seq"] for m in got]
        assert seqs == list(range(16, 21))
    finally:
        c.stop()
    closing = time.monotonic()
    fwd2 = SyslogForwarder(_settings(port), backoff_s=(0.05, 0.2))
    fwd2.send(_record(1))
    fwd2.close()  # nobody there: gives up after its 2 s
    assert time.monotonic() - closing < 4


def test_message_format() -> None:
    failed = _record(5, "failed", "transcription_failed")
    msg = syslog.message(failed, "node-1", "hushscribe", "42")
    assert msg == (
        b"<108>1 2025-03-06T12:00:05.000005Z node-1 hushscribe 42 transcription_failed - "
        + read.dumps(failed).encode()
    )
    assert b"\\u00fc" in msg  # ü, escaped as in the log's line
    with_bom = syslog.message(_record(5), "a host\n", "", "42", bom=True)
    assert with_bom.startswith(
        b"<109>1 2025-03-06T12:00:05.000005Z ahost - 42 upload - \xef\xbb\xbf{"
    )
    untimed = syslog.message({**_record(5), "time": "yesterday"}, "h", "a", "1")
    assert re.match(rb"<109>1 \d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z h a 1 upload - \{", untimed)
    assert syslog.frame(b"abc") == b"3 abc"
    assert syslog.frame("ü".encode()) == b"2 \xc3\xbc"  # octets, not characters


def _service_log(audit_dir: Path, keys_dir: Path) -> AuditLog:
    """The service's writer, with syslog unset (the default)."""
    settings = AuditSettings(syslog=None, checkpoint_every=4)
    audit_log = AuditLog(settings, audit_dir, keys_dir)
    who = Actor("ölga", "u-olga", "k1", "key")
    for i in range(10):
        audit_log.append(
            event(
                "upload",
                who,
                address="192.0.2.9",
                target=f"job_{i}",
                details={"audio_sha256": "ab" * 32, "filename": "Sitzung.wav"},
            )
        )
    audit_log.append(event("login_failed", who, outcome="denied", details={"reason": "wrong"}))
    return audit_log


def test_messages_carry_the_log_s_own_lines(collector: Collector, tmp_path: Path) -> None:
    """Records as the service's writer wrote them: each message's MSG is its line, byte for byte."""
    _service_log(tmp_path / "audit", tmp_path / "keys").close()
    records = list(read.records(tmp_path / "audit"))
    lines = [
        line
        for f in read.log_files(tmp_path / "audit")
        for line in f.path.read_bytes().splitlines()
    ]
    assert len(records) == len(lines) > 11  # with its checkpoints
    fwd = SyslogForwarder(_settings(collector.port))
    for r in records:
        fwd.send(r)
    got = collector.wait_for(len(records))
    fwd.close()
    _check(got, records)
    assert [_parse(m)[0]["msg"] for m in got] == lines
    assert {_parse(m)[0]["msgid"] for m in got} == {b"upload", b"login_failed", b"checkpoint"}


def test_unconfigured_opens_no_socket(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    opened: list[Any] = []

    def refuse(*args: Any, **kwargs: Any) -> None:
        opened.append(args)
        raise AssertionError("a socket was opened")

    monkeypatch.setattr(socket, "socket", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    assert forwarder(None) is None
    _service_log(tmp_path / "audit", tmp_path / "keys").close()  # the writer, syslog unset
    assert len(list(read.records(tmp_path / "audit"))) > 11
    assert opened == []


def test_the_service_log_copies_every_record_it_writes(
    collector: Collector, tmp_path: Path
) -> None:
    """With ``audit.syslog`` set, the writer itself sends each line it writes (checkpoints too)."""
    settings = AuditSettings(syslog=_settings(collector.port), checkpoint_every=4)
    audit_log = AuditLog(settings, tmp_path / "audit", tmp_path / "keys")
    for i in range(9):
        audit_log.append(event("result_read", Actor("ursula"), target=f"job_{i}"))
    audit_log.close()
    lines = [
        line
        for f in read.log_files(tmp_path / "audit")
        for line in f.path.read_bytes().splitlines()
    ]
    got = collector.wait_for(len(lines))
    assert [_parse(m)[0]["msg"] for m in got] == lines
    assert sum(b'"type":"checkpoint"' in line for line in lines) >= 2
