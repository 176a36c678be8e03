"""The air-gap path end to end, as docs/airgap.md tells an operator to walk it.

On this (connected) machine ``hushscribe bundle create`` builds a real bundle from this checkout
with the demo model tiny.en. Then, inside a network namespace with nothing but loopback (no
interface to any other host, no route at all), the bundle is unpacked; its ``install.sh`` refuses
it while it holds a file it does not list, then runs with the system Python into a fresh prefix;
the installed CLI transcribes jfk.flac; the installer runs again (the upgrade path); and the
installed server starts, answers one authenticated transcription from inside the namespace, and
stops with exit status 0 on SIGTERM.

Nothing of this checkout's environment is at hand in there: the environment is a new venv made
by /usr/bin/python3, pip runs with --no-index and no configuration or cache, HOME is empty.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from tests.netns import Namespace, isolated
from tests.service import ADMIN_PASSWORD, free_port
from tests.speech import SPEECH

pytestmark = pytest.mark.slow

MODEL = "tiny.en"  # the smallest model that transcribes jfk.flac and serves
JFK = SPEECH / "en_misc" / "jfk.flac"
WORDS = "ask not what your country can do for you"
KEY_RE = re.compile(r"hs_[A-Za-z0-9_-]{43,}")
SYSTEM_PYTHON = "/usr/bin/python3"

CLIENT = r"""
import json, sys, time, urllib.error, urllib.request, uuid
base, key, path = sys.argv[1:4]
deadline = time.monotonic() + 180
while True:
    try:
        with urllib.request.urlopen(base + "/readyz", timeout=5) as r:
            if r.status == 200:
                break
    except (urllib.error.URLError, OSError) as exc:
        if time.monotonic() > deadline:
            raise SystemExit(f"server not ready: {exc}")
        time.sleep(0.5)
b = uuid.uuid4().hex
with open(path, "rb") as fh:
    audio = fh.read()
body = (
    f'--{b}\r\nContent-Disposition: form-data; name="model"\r\n\r\nwhisper-1\r\n'
    f'--{b}\r\nContent-Disposition: form-data; name="file"; filename="jfk.flac"\r\n'
    "Content-Type: audio/flac\r\n\r\n"
).encode() + audio + f"\r\n--{b}--\r\n".encode()
request = urllib.request.Request(
    base + "/v1/audio/transcriptions", data=body, method="POST",
    headers={"Authorization": "Bearer " + key,
             "Content-Type": "multipart/form-data; boundary=" + b},
)
try:
    with urllib.request.urlopen(request, timeout=300) as r:
        print(json.dumps({"status": r.status, "body": r.read().decode()}))
except urllib.error.HTTPError as exc:
    print(json.dumps({"status": exc.code, "body": exc.read().decode()}))
"""


def _words(text: str) -> str:
    return " ".join(re.sub(r"[^a-z' ]", " ", text.lower()).split())


def _host_env(home: Path) -> dict[str, str]:
    """What a shell on the air-gapped host has: a PATH, an empty HOME, and, to show they are
    not followed, pip settings a host may carry pointing at an index and a wheel folder."""
    home.mkdir(parents=True, exist_ok=True)
    return {
        "PATH": "/usr/local/bin:/usr/bin:/bin:/usr/local/sbin:/usr/sbin:/sbin",
        "HOME": str(home),
        "LANG": "C.UTF-8",
        "PIP_INDEX_URL": "http://192.0.2.1/simple",  # TEST-NET-1: nothing there, and no route
        "PIP_FIND_LINKS": "/opt/wheels",
    }


def _run(
    ns: Namespace, args: list[str], env: dict[str, str], timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    proc = ns.popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd="/")
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
        pytest.fail(f"{args[:2]} ran over {timeout} s:\n{out[-5000:]}")
    return subprocess.CompletedProcess(args, proc.returncode, out, "")


@pytest.mark.timeout(1800)  # a cold pip cache downloads ~230 MB of wheels first
def test_bundle_installs_and_serves_without_a_network(data_dir: Path, tmp_path: Path) -> None:
    archive = tmp_path / "hushscribe-bundle.tar.gz"
    host_python = subprocess.run(
        [SYSTEM_PYTHON, "-I", "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    started = time.monotonic()
    built = subprocess.run(
        [sys.executable, "-m", "hushscribe", "--data-dir", str(data_dir), "bundle", "create",
         "--out", str(archive), "--models", MODEL, "--extras", "ldap", "--python", host_python],
        capture_output=True, text=True, timeout=1500, env={**os.environ, "COLUMNS": "200"},
    )  # fmt: skip
    build_s = time.monotonic() - started
    assert built.returncode == 0, built.stdout + built.stderr[-5000:]
    wheels = re.search(r"(\d+) wheels, models (\S+);", built.stdout)
    assert wheels and int(wheels.group(1)) > 40 and wheels.group(2) == MODEL, built.stdout
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no partial left
    verified = subprocess.run(
        [sys.executable, "-m", "hushscribe", "bundle", "verify", str(archive)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert verified.returncode == 0 and "bundle OK" in verified.stdout, verified.stdout

    host = tmp_path / "host"  # what is carried over: the archive, nothing else
    host.mkdir()
    prefix, data, out = host / "opt" / "hushscribe", host / "var" / "hushscribe", host / "out"
    env = _host_env(host / "home")
    with isolated() as ns:
        unpacked = _run(ns, ["tar", "xzf", str(archive), "-C", str(host)], env)
        assert unpacked.returncode == 0, unpacked.stdout
        bundle = host / "hushscribe-bundle"
        bundle_mb = archive.stat().st_size / 1e6
        unpacked_mb = sum(p.stat().st_size for p in bundle.rglob("*") if p.is_file()) / 1e6
        assert ns.run(["ip", "route", "show"]).stdout.strip() == ""  # no route to anywhere
        assert "unreachable" in ns.run(["ip", "route", "get", "192.0.2.1"]).stderr
        install = [str(bundle / "install.sh"), "--prefix", str(prefix)]
        install += ["--data-dir", str(data), "--python", SYSTEM_PYTHON]
        injected = bundle / "wheels" / "injected-1.0-py3-none-any.whl"
        injected.write_bytes(b"PK\x03\x04 slipped in after the bundle was made")
        refused = _run(ns, install, env)
        assert refused.returncode == 1, refused.stdout[-5000:]
        assert "UNLISTED  wheels/injected-1.0-py3-none-any.whl" in refused.stdout
        assert "nothing was installed" in refused.stdout and not prefix.exists()
        injected.unlink()

        started = time.monotonic()
        first = _run(ns, install, env)
        install_s = time.monotonic() - started
        assert first.returncode == 0, first.stdout[-5000:]
        assert "bundle OK" in first.stdout and f"importing model {MODEL}" in first.stdout
        assert f"Imported {MODEL}" in first.stdout and "192.0.2.1" not in first.stdout
        print(
            f"\nbundle ({MODEL}, extras ldap): {bundle_mb:,.0f} MB as .tar.gz, "
            f"{unpacked_mb:,.0f} MB unpacked; built in {build_s:.0f} s; "
            f"installed without a network in {install_s:.0f} s"
        )

        venv = prefix / "venv"
        cfg = (venv / "pyvenv.cfg").read_text()
        assert re.search(r"^home = /usr/bin$", cfg, re.M), cfg  # made by the system Python
        code = "import hushscribe, ctranslate2, av; print(hushscribe.__file__, av.__file__)"
        where = _run(ns, [str(venv / "bin/python"), "-c", code], env)
        assert where.returncode == 0, where.stdout
        assert all(p.startswith(f"{venv}/lib/") for p in where.stdout.split()), where.stdout
        config = prefix / "hushscribe.toml"
        text = config.read_text()
        assert f'default_model = "{MODEL}"' in text and 'host = "127.0.0.1"' in text
        assert f'data_dir = "{data}"' in text

        hushscribe = [str(venv / "bin/hushscribe"), "--config", str(config)]
        transcribed = _run(
            ns,
            [*hushscribe, "transcribe", str(JFK), "--output-dir", str(out), "--format", "txt"],
            env,
        )
        assert transcribed.returncode == 0, transcribed.stdout[-5000:]
        assert WORDS in _words((out / "jfk.txt").read_text())

        again = _run(ns, install, env)  # the upgrade path: same bundle, nothing to replace
        assert again.returncode == 0, again.stdout[-5000:]
        assert f"model {MODEL}: already installed with the same files, kept" in again.stdout
        assert f"keeping the config {config}" in again.stdout

        _serve_one_request(ns, hushscribe, env, host)


def _serve_one_request(
    ns: Namespace, hushscribe: list[str], env: dict[str, str], host: Path
) -> None:
    port = free_port()
    log_path = host / "serve.log"
    server_env = {
        **env,
        "HUSHSCRIBE_ADMIN_PASSWORD": ADMIN_PASSWORD,
        "HUSHSCRIBE_ENGINE__CPU_THREADS": "2",
        "HUSHSCRIBE_JOBS__WORKERS": "1",
    }
    with log_path.open("w") as log:
        server = ns.popen(
            [*hushscribe, "serve", "--host", "127.0.0.1", "--port", str(port), "--first-run-key",
             "--log-level", "warning"],
            env=server_env, stdout=log, stderr=subprocess.STDOUT, cwd="/",
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while not (key := KEY_RE.search(log_path.read_text(errors="replace"))):
            assert server.poll() is None, log_path.read_text()
            assert time.monotonic() < deadline, log_path.read_text()
            time.sleep(0.2)
        venv_python = str(Path(hushscribe[0]).with_name("python"))
        call = _run(
            ns,
            [venv_python, "-c", CLIENT, f"http://127.0.0.1:{port}", key.group(0), str(JFK)],
            env,
            timeout=400,
        )
        assert call.returncode == 0, call.stdout + log_path.read_text()[-3000:]
        answer = call.stdout.strip().splitlines()[-1]
        assert '"status": 200' in answer, answer
        assert WORDS in _words(answer), answer
        server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=90) == 0, log_path.read_text()[-3000:]
    finally:
        if server.poll() is None:
            for child in psutil.Process(server.pid).children(recursive=True):
                child.kill()
            server.kill()
            server.wait(timeout=30)


def test_a_failed_build_leaves_nothing(data_dir: Path, tmp_path: Path) -> None:
    """pip cannot find wheels for a Python that does not exist: its own words end the build, and
    neither the bundle nor its hidden work directory is left."""
    out = tmp_path / "bundle"
    done = subprocess.run(
        [sys.executable, "-m", "hushscribe", "--data-dir", str(data_dir), "bundle", "create",
         "--out", str(out), "--models", MODEL, "--python", "3.99"],
        capture_output=True, text=True, timeout=600, env={**os.environ, "COLUMNS": "300"},
    )  # fmt: skip
    assert done.returncode == 2, done.stdout + done.stderr
    assert "pip failed downloading wheels for Python 3.99" in done.stderr, done.stderr
    assert "No matching distribution" in done.stderr, done.stderr
    assert list(tmp_path.iterdir()) == []
