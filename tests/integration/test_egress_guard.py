"""The egress guard refuses every outgoing connection and lookup but loopback and the configured
hosts, logs and audits each refusal, and leaves the environment without proxy variables.

Every attempt runs in a process inside a network namespace with nothing but loopback: should the
guard let something through, it meets "network unreachable" there, never another machine — and
that very difference (EgressBlocked vs. an OSError from the kernel) is what the test tells apart.
"""

import json
import sys
import textwrap
from pathlib import Path

import pytest

from hushscribe.audit.verify import verify
from tests.netns import isolated

ATTEMPTS = r"""
import json, os, socket, sys, urllib.error, urllib.request
from pathlib import Path

from hushscribe.audit.log import AuditLog
from hushscribe.security import egress
from hushscribe.settings import load_settings

settings = load_settings(Path(sys.argv[1]))
on = egress.apply(settings)
log = AuditLog(settings.audit, settings.audit_dir, settings.keys_dir)
egress.report_to(egress.reporter_for(log))
results = {}


def attempt(name, fn):
    try:
        fn()
        results[name] = "ok"
    except egress.EgressBlocked:
        results[name] = "blocked"
    except urllib.error.URLError as exc:
        blocked = isinstance(exc.reason, egress.EgressBlocked)
        results[name] = "blocked" if blocked else f"urlerror:{exc.reason!r}"
    except OSError as exc:
        results[name] = f"oserror:{type(exc).__name__}"


server = socket.create_server(("127.0.0.1", 0))
port = server.getsockname()[1]


def connect(host, port_):
    socket.create_connection((host, port_), timeout=3).close()


attempt("loopback", lambda: connect("127.0.0.1", port))
attempt("localhost", lambda: connect("localhost", port))
attempt("public_address", lambda: connect("192.0.2.10", 443))
attempt("public_name", lambda: socket.getaddrinfo("example.com", 443))
attempt("connect_by_name", lambda: connect("updates.example.net", 80))
attempt("udp_dns", lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(
    b"x", ("8.8.8.8", 53)))
attempt("reverse", lambda: socket.gethostbyaddr("192.0.2.55"))
attempt("urllib", lambda: urllib.request.urlopen("http://example.org/", timeout=3))
attempt("allowed_cidr", lambda: connect("10.99.1.2", 5432))
attempt("ldap_name", lambda: socket.getaddrinfo("ldap.corp.test", 389))
a, b = socket.socketpair()
attempt("unix", lambda: a.sendall(b"x"))
print(json.dumps({
    "on": on,
    "results": results,
    "blocked": egress.blocked_count(),
    "env": {k: os.environ.get(k) for k in ("HTTPS_PROXY", "http_proxy", "HF_HUB_OFFLINE")},
}))
"""

BLOCKED = ["public_address", "public_name", "connect_by_name", "udp_dns", "reverse", "urllib"]


def _config(tmp_path: Path, extra: str = "") -> Path:
    config = tmp_path / "hushscribe.toml"
    config.write_text(
        textwrap.dedent(
            f"""
            data_dir = "{tmp_path / "data"}"
            [network]
            egress_allow = ["10.99.0.0/16"]
            {extra}
            [auth.ldap]
            url = "ldap://ldap.corp.test:389"
            allow_plaintext = true
            user_base = "ou=people,dc=corp,dc=test"
            """
        )
    )
    return config


def _run(tmp_path: Path, config: Path, env: dict[str, str] | None = None) -> dict:
    script = tmp_path / "attempts.py"
    script.write_text(ATTEMPTS)
    with isolated() as ns:
        done = ns.run(["env", *[f"{k}={v}" for k, v in (env or {}).items()],
                       sys.executable, str(script), str(config)], timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    out["stderr"] = done.stderr
    return out


def test_guard_refuses_all_but_loopback_and_configured_hosts(tmp_path: Path) -> None:
    out = _run(tmp_path, _config(tmp_path))
    results = out["results"]
    assert out["on"] is True
    assert results["loopback"] == "ok"
    assert results["localhost"] == "ok"
    assert results["unix"] == "ok"
    for name in BLOCKED:
        assert results[name] == "blocked", (name, results)
    # Allowed ones pass the guard and meet the namespace's real network: nothing is there.
    assert results["allowed_cidr"].startswith("oserror:"), results
    assert results["ldap_name"].startswith("oserror:"), results  # gaierror: resolver unreachable
    assert out["blocked"] == len(BLOCKED)
    # Each refusal is in the process's log with what was refused and where the attempt came from.
    assert out["stderr"].count("egress blocked:") == len(BLOCKED)
    assert "192.0.2.10:443" in out["stderr"]
    assert "network.egress_allow" in out["stderr"]


def test_each_refusal_is_audited_and_the_log_verifies(tmp_path: Path) -> None:
    _run(tmp_path, _config(tmp_path))
    audit_dir = tmp_path / "data" / "audit"
    records = [
        json.loads(line)
        for f in sorted(audit_dir.glob("*.jsonl"))
        for line in f.read_text().splitlines()
    ]
    blocked = [r for r in records if r["type"] == "egress_blocked"]
    assert len(blocked) == len(BLOCKED)
    by_host = {r["details"]["host"]: r for r in blocked}
    assert set(by_host) == {
        "192.0.2.10", "example.com", "updates.example.net", "8.8.8.8", "192.0.2.55", "example.org"
    }  # fmt: skip
    first = by_host["192.0.2.10"]
    assert first["target"] == "192.0.2.10:443"
    assert first["outcome"] == "denied"
    assert first["actor"]["method"] == "service"
    assert first["details"]["port"] == 443
    assert first["details"]["caller"].startswith("__main__:"), first  # who tried, not the socket
    assert by_host["8.8.8.8"]["details"]["port"] == 53
    report = verify(audit_dir)
    assert report.ok, report.damage
    assert report.records >= len(BLOCKED)


def test_proxy_variables_are_set_aside_unless_configured(tmp_path: Path) -> None:
    proxies = {"HTTPS_PROXY": "http://10.99.0.1:3128", "http_proxy": "http://10.99.0.1:3128",
               "HF_HUB_OFFLINE": "0"}  # fmt: skip
    out = _run(tmp_path, _config(tmp_path), env=proxies)
    assert out["env"] == {"HTTPS_PROXY": None, "http_proxy": None, "HF_HUB_OFFLINE": "1"}
    kept = _run(tmp_path, _config(tmp_path, "use_proxy_env = true"), env=proxies)
    assert kept["env"]["HTTPS_PROXY"] == "http://10.99.0.1:3128"
    assert kept["env"]["http_proxy"] == "http://10.99.0.1:3128"
    assert kept["env"]["HF_HUB_OFFLINE"] == "1"  # never switched back on


def test_guard_off_lets_connections_through_and_says_so(tmp_path: Path) -> None:
    out = _run(tmp_path, _config(tmp_path, "egress_guard = false"))
    assert out["on"] is False
    assert out["blocked"] == 0
    # Not refused by the guard: the namespace's missing route answers instead.
    assert out["results"]["public_address"].startswith("oserror:"), out["results"]
    assert "egress guard off" in out["stderr"]


@pytest.mark.parametrize("command", [["models", "list"], ["--version"]])
def test_the_command_line_turns_the_guard_on_first(tmp_path: Path, command: list[str]) -> None:
    """`hushscribe …` guards itself before any command: a lookup from inside it is refused."""
    code = (
        "import sys, socket\n"
        "from hushscribe.cli import main\n"
        "from hushscribe.security import egress\n"
        f"sys.argv = ['hushscribe', '--data-dir', {str(tmp_path)!r}, *{command!r}]\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "try:\n    socket.getaddrinfo('example.com', 443)\n    print('RESOLVED?')\n"
        "except egress.EgressBlocked:\n    print('BLOCKED', egress.active().describe())\n"
    )
    with isolated() as ns:
        done = ns.run([sys.executable, "-c", code], timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "BLOCKED" in done.stdout, done.stdout + done.stderr
    assert "127.0.0.0/8" in done.stdout


def test_the_server_runs_guarded(service) -> None:
    """`hushscribe serve` (the session's real server process) says on /metrics that its guard is
    on and has refused nothing: the product itself tries no outgoing connection."""
    with service.admin() as admin:
        text = admin.get("/metrics").text
    assert "hushscribe_egress_guard_active 1.0" in text
    assert "hushscribe_egress_blocked_total 0.0" in text
