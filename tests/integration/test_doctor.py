"""``hushscribe doctor`` as an operator runs it: a real process on a data directory with the real
demo models, keys and database; then the same directory damaged one way at a time."""

from __future__ import annotations

import datetime
import ipaddress
import json
import os
import shutil
from pathlib import Path

import ctranslate2
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from hushscribe.doctor import network, tls
from hushscribe.doctor.base import Check, isolated
from hushscribe.doctor.engine import gpu
from hushscribe.settings import Settings, load_settings
from tests.integration.test_cli import hushscribe

EXPECTED = (
    "configuration", "model base", "model tiny.en", "default model", "GPU / CUDA",
    "media decoders", "test transcription", "data directory", "key files", "database", "TLS",
    "bind address", "egress guard", "default route", "proxy variables",
)  # fmt: skip


def doctor(
    root: Path, *args: str, config: Path | None = None, env: dict[str, str] | None = None
) -> tuple[int, dict[str, Check]]:
    """Run ``hushscribe doctor --json``; (exit code, rows by check name)."""
    where = ["--config", str(config)] if config else ["--data-dir", str(root)]
    proc = hushscribe(*where, "doctor", "--json", *args, env=env)
    assert proc.returncode in (0, 1), proc.stderr
    rows = [Check(**row) for row in json.loads(proc.stdout)]
    by_name = {row.check: row for row in rows}
    assert len(by_name) == len(rows), "each check names its row once"
    return proc.returncode, by_name


def make_data_dir(root: Path, models: Path) -> Path:
    """A data directory as a first install leaves it: the models, a user (so the database and
    the audit keys exist, made by the real CLI), mode 0700."""
    root.mkdir(mode=0o700, parents=True)
    root.chmod(0o700)
    (root / "models").symlink_to(models, target_is_directory=True)
    proc = hushscribe("--data-dir", str(root), "users", "add", "alice", "--generate")
    assert proc.returncode == 0, proc.stderr
    assert (root / "hushscribe.db").is_file() and (root / "keys" / "audit-hmac.key").is_file()
    return root


def write_config(path: Path, root: Path, extra: str) -> Path:
    path.write_text(f"data_dir = {json.dumps(str(root))}\n{extra}")
    return path


@pytest.fixture(scope="module")
def healthy(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> Path:
    return make_data_dir(tmp_path_factory.mktemp("doctor") / "data", data_dir / "models")


def has_default_route() -> bool:
    """What /proc says, read independently of the doctor's parser (first fields only)."""
    lines = Path("/proc/net/route").read_text().splitlines()[1:]
    return any(f[1] == "00000000" and f[7] == "00000000" for f in map(str.split, lines))


def test_help_describes_the_options() -> None:
    out = hushscribe("doctor", "--help").stdout
    assert "--quick" in out and "verified-cache" in out
    assert "--json" in out and "{check, status, detail, fix}" in out


def test_a_healthy_install_passes_every_check(healthy: Path) -> None:
    code, rows = doctor(healthy)
    assert code == 0, rows
    assert set(EXPECTED) <= set(rows), sorted(rows)
    assert {r.status for r in rows.values()} <= {"OK", "WARN"}
    for name in ("model base", "model tiny.en"):
        assert rows[name].status == "OK" and "every file re-hashed" in rows[name].detail
    assert "'base'" in rows["default model"].detail
    trial = rows["test transcription"]
    assert trial.status == "OK" and "'base' on " in trial.detail and "loaded in" in trial.detail
    assert "WEBM" in rows["media decoders"].detail and "Opus" in rows["media decoders"].detail
    keys = rows["key files"]
    assert keys.status == "OK" and "audit-hmac.key 0600" in keys.detail
    assert rows["database"].status == "OK" and "hushscribe.db, mode 0600" in rows["database"].detail
    assert rows["data directory"].status == "OK" and "mode 0700" in rows["data directory"].detail
    guard = rows["egress guard"]
    assert guard.status == "OK", guard
    assert "connect to 192.0.2.1:9" in guard.detail and "lookup of example.com" in guard.detail
    assert "127.0.0.0/8" in guard.detail  # the policy in force
    assert rows["TLS"].status == "OK" and "loopback" in rows["TLS"].detail
    assert rows["bind address"].status == "OK" and "127.0.0.1:8000" in rows["bind address"].detail
    if ctranslate2.get_cuda_device_count() == 0:
        assert rows["GPU / CUDA"].status == "OK" and "CPU mode" in rows["GPU / CUDA"].detail
    route = rows["default route"]
    if has_default_route():
        assert route.status == "WARN" and "default route via" in route.detail
        assert "hushscribe makes no outbound connection" in route.detail
    else:
        assert route.status == "OK"


def test_a_flipped_byte_fails_that_model_only(tmp_path: Path, data_dir: Path) -> None:
    root = tmp_path / "data"
    (root / "models").mkdir(parents=True)
    root.chmod(0o700)
    (root / "models" / "base").symlink_to(data_dir / "models" / "base")
    shutil.copytree(
        data_dir / "models" / "tiny.en",
        root / "models" / "tiny.en",
        ignore=shutil.ignore_patterns(".verified.json"),
    )
    assert doctor(root, "--quick")[0] == 0
    model_bin = root / "models" / "tiny.en" / "model.bin"
    with model_bin.open("r+b") as fh:
        fh.seek(model_bin.stat().st_size // 2)
        byte = fh.read(1)
        fh.seek(-1, os.SEEK_CUR)
        fh.write(bytes([byte[0] ^ 0xFF]))
    for args in ((), ("--quick",)):  # the cache knows the file changed
        code, rows = doctor(root, *args)
        assert code == 1
        bad = rows["model tiny.en"]
        assert bad.status == "FAIL" and "tiny.en" in bad.detail and "model.bin" in bad.detail
        assert "`hushscribe models verify tiny.en`" in bad.fix
        assert "install-demo --name tiny.en" in bad.fix
        assert rows["model base"].status == "OK"
        assert rows["test transcription"].status == "OK"  # the default model is intact


def test_loose_modes_are_named_with_their_chmod(tmp_path: Path, data_dir: Path) -> None:
    root = make_data_dir(tmp_path / "data", data_dir / "models")
    root.chmod(0o755)
    code, rows = doctor(root, "--quick")
    assert code == 0
    assert rows["data directory"].status == "WARN" and "mode 0755" in rows["data directory"].detail
    assert rows["data directory"].fix == f"`chmod 700 {root}`"
    root.chmod(0o700)
    (root / "keys" / "audit-hmac.key").chmod(0o644)
    (root / "hushscribe.db").chmod(0o640)
    code, rows = doctor(root, "--quick")
    assert code == 1
    keys = rows["key files"]
    assert keys.status == "FAIL" and "audit-hmac.key (mode 0644)" in keys.detail
    assert "audit-signing.pem" not in keys.detail  # still 0600
    assert keys.fix == f"`chmod 600 {root / 'keys' / 'audit-hmac.key'}`"
    assert (
        rows["database"].status == "FAIL" and "hushscribe.db (mode 0640)" in rows["database"].detail
    )
    assert rows["database"].fix == f"`chmod 600 {root / 'hushscribe.db'}`"
    assert rows["data directory"].status == "OK"


def self_signed(
    directory: Path, not_after: datetime.timedelta, other_key: bool = False
) -> tuple[Path, Path]:
    """A self-signed certificate ending ``not_after`` from now (in the past when negative)."""
    directory.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "hushscribe.test")])
    now = datetime.datetime.now(datetime.UTC)
    san = [x509.DNSName("hushscribe.test"), x509.IPAddress(ipaddress.ip_address("10.0.0.5"))]
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=400))
        .not_valid_after(now + not_after)
        .add_extension(x509.SubjectAlternativeName(san), critical=False)
        .sign(key, hashes.SHA256())
    )
    if other_key:
        key = ec.generate_private_key(ec.SECP256R1())
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_path.chmod(0o600)
    return cert_path, key_path


def tls_settings(cert: Path, key: Path, **more: object) -> Settings:
    return load_settings(None, server={"tls_cert": cert, "tls_key": key, **more})


def test_an_expired_certificate_fails_tls(healthy: Path, tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path / "tls", -datetime.timedelta(days=1))
    config = write_config(
        tmp_path / "hushscribe.toml",
        healthy,
        f"[server]\ntls_cert = {json.dumps(str(cert))}\ntls_key = {json.dumps(str(key))}\n",
    )
    code, rows = doctor(healthy, "--quick", config=config)
    assert code == 1
    row = rows["TLS"]
    assert row.status == "FAIL" and "expired on" in row.detail and "self-signed" in row.detail
    names = "--host hushscribe.test --ip 10.0.0.5"
    renew = f"`hushscribe tls self-signed {names} --out-dir {tmp_path / 'tls'} --force`"
    assert renew in row.fix
    assert rows["test transcription"].status == "OK"  # the other checks still ran


def test_certificates_close_to_expiry_or_with_a_foreign_key(tmp_path: Path) -> None:
    row = tls.tls(tls_settings(*self_signed(tmp_path / "a", datetime.timedelta(days=10))))
    assert row.status == "WARN" and "expires on" in row.detail and "renew it now" in row.fix
    row = tls.tls(tls_settings(*self_signed(tmp_path / "b", datetime.timedelta(days=300))))
    assert row.status == "WARN" and row.detail.startswith("self-signed (SHA-256 ")
    assert "trust store" in row.fix
    cert, key = self_signed(tmp_path / "c", datetime.timedelta(days=300), other_key=True)
    row = tls.tls(tls_settings(cert, key))
    assert row.status == "FAIL" and f"{key} is not the key of {cert}" in row.detail
    cert, key = self_signed(tmp_path / "d", datetime.timedelta(days=300))
    key.chmod(0o644)
    row = tls.tls(tls_settings(cert, key))
    assert row.status == "WARN" and f"`chmod 600 {key}`" in row.fix
    cert.write_text("not a certificate")
    row = tls.tls(tls_settings(cert, key))
    assert row.status == "FAIL" and "is not a PEM certificate" in row.detail


def test_guard_off_open_bind_and_proxies_warn_in_the_table(healthy: Path, tmp_path: Path) -> None:
    config = write_config(
        tmp_path / "hushscribe.toml",
        healthy,
        '[server]\nhost = "0.0.0.0"\n[network]\negress_guard = false\n',
    )
    env = {"HTTPS_PROXY": "http://user:s3cr3t@proxy.invalid:3128"}
    code, rows = doctor(healthy, "--quick", config=config, env=env)
    assert code == 0
    guard = rows["egress guard"]
    assert guard.status == "WARN" and "off (network.egress_guard = false)" in guard.detail
    assert "network.egress_guard = true" in guard.fix
    bind = rows["bind address"]
    assert (
        bind.status == "WARN" and "binds 0.0.0.0 but network.allow is loopback only" in bind.detail
    )
    assert rows["TLS"].status == "WARN"
    assert "serving plain HTTP on a non-loopback address" in rows["TLS"].detail
    assert "hushscribe tls self-signed" in rows["TLS"].fix
    proxy = rows["proxy variables"]
    assert proxy.status == "WARN" and "HTTPS_PROXY" in proxy.detail
    assert "s3cr3t" not in json.dumps([r.as_dict() for r in rows.values()])

    proc = hushscribe("--config", str(config), "doctor", "--quick", env={**env, "COLUMNS": "1000"})
    assert proc.returncode == 0, proc.stderr
    table = proc.stdout
    for text in (guard.fix, bind.fix, rows["TLS"].fix, proxy.fix, rows["default route"].fix):
        assert text in table  # brackets and backticks as written, not eaten as markup
    assert "WARN" in table and "egress guard" in table and "0 FAIL" in table


def test_a_guard_that_lets_everything_through_fails(tmp_path: Path) -> None:
    settings = load_settings(None, data_dir=tmp_path, network={"egress_allow": ["0.0.0.0/0"]})
    row = network.egress_guard(settings)
    assert row.status == "FAIL" and "let through: connect to 192.0.2.1:9" in row.detail
    assert "example.com" not in row.detail.split("(allowed")[0]  # names are still refused
    assert "0.0.0.0/0" in row.fix


@pytest.mark.parametrize(
    ("host", "allow", "proxies", "status", "words"),
    [
        ("127.0.0.1", ["10.20.0.0/16"], [], "WARN", "those clients cannot reach it"),
        ("127.0.0.1", ["10.20.0.0/16"], ["127.0.0.1/32"], "OK", "trusted_proxies"),
        ("10.20.0.5", ["0.0.0.0/0"], [], "WARN", "every address may connect"),
        ("::", ["::1/128"], [], "WARN", "nobody else can connect"),
        ("10.20.0.5", ["10.20.0.0/16"], [], "OK", "binds 10.20.0.5:8000 (address)"),
        ("localhost", [], [], "WARN", "every request gets 403"),
    ],
)
def test_bind_address_against_the_allowlist(
    host: str, allow: list[str], proxies: list[str], status: str, words: str
) -> None:
    settings = load_settings(
        None, server={"host": host}, network={"allow": allow, "trusted_proxies": proxies}
    )
    row = network.bind_address(settings)
    assert row.status == status and words in row.detail, row


def test_default_route_read_from_the_routing_tables(tmp_path: Path) -> None:
    v4, v6 = tmp_path / "route", tmp_path / "ipv6_route"
    header = "Iface\tDestination\tGateway\tFlags\tRefCnt\tUse\tMetric\tMask\tMTU\tWindow\tIRTT\n"
    lan = "eth0\t0014A8C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n"
    unreachable = (  # the kernel's "::/0 unreachable" entry on lo is no way out
        "00000000000000000000000000000000 00 00000000000000000000000000000000 00 "
        "00000000000000000000000000000000 ffffffff 00000001 00000000 00200200 lo\n"
    )
    v4.write_text(header + lan)
    v6.write_text(unreachable)
    row = network.default_route((v4, v6))
    assert row.status == "OK" and "no default route" in row.detail
    v4.write_text(header + lan + "eth1\t00000000\t0101A8C0\t0003\t0\t0\t0\t00000000\t0\t0\t0\n")
    row = network.default_route((v4, v6))
    assert row.status == "WARN" and "default route via eth1 (gateway 192.168.1.1)" in row.detail
    assert "ip route del default" in row.fix


def test_cuda_asked_for_without_a_gpu_fails(tmp_path: Path) -> None:
    if ctranslate2.get_cuda_device_count() > 0:
        pytest.skip("this machine has a GPU: engine.device = cuda is right here")
    row = gpu(load_settings(None, engine={"device": "cuda"}))
    assert row.status == "FAIL" and 'engine.device = "cuda"' in row.detail
    assert 'engine.device = "auto"' in row.fix


def test_a_check_that_breaks_is_its_own_fail() -> None:
    def broken() -> Check:
        raise KeyError("manifest")

    rows = isolated("models", broken)
    assert rows == [Check("models", "FAIL", "the check itself failed: KeyError: 'manifest'", "")]


def test_a_bad_config_is_one_fail_row(tmp_path: Path) -> None:
    config = tmp_path / "hushscribe.toml"
    config.write_text("[engine]\nbeam_sise = 3\n")
    code, rows = doctor(tmp_path, config=config)
    assert code == 1 and list(rows) == ["configuration"]
    assert "engine.beam_sise" in rows["configuration"].detail
