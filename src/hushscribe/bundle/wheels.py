"""The Python half of a bundle: hushscribe's own wheel, built from its source checkout, and the
wheels of every dependency for the target host, fetched by pip (``sys.executable -m pip``) from
the index pip is configured for. Runs on the connected machine only."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from email.parser import HeaderParser
from importlib import metadata
from pathlib import Path
from urllib.parse import unquote, urlparse

from hushscribe.bundle.errors import BundleError
from hushscribe.security import egress

PROJECT = "hushscribe"
DEFAULT_PLATFORM = "manylinux_2_28_x86_64"
"""glibc 2.28 or newer on x86-64 (Debian 11+, Ubuntu 20.04+, RHEL 8+): ctranslate2 4.8 publishes
wheels for glibc 2.27 and up only, so an older target cannot run it anyway."""
_MANYLINUX = re.compile(r"^manylinux_2_(\d+)_(\w+)$")
_LEGACY = {"manylinux2014": 17, "manylinux2010": 12, "manylinux1": 5}
_SKIP_COPY = (
    *(".git", ".venv", "venv", ".data", "build", "dist", "__pycache__", "*.egg-info"),
    *(".mypy_cache", ".ruff_cache", ".pytest_cache", "node_modules", "test-artifacts"),
)
"""What building a wheel never needs from a checkout (environments, data, caches)."""
PIP_LOG_TAIL = 25

Status = Callable[[str], None]


@dataclass(frozen=True)
class Target:
    """The host the bundle is for: its CPython version (``3.11``) and platform tags."""

    python: str
    platforms: tuple[str, ...]

    @property
    def abi(self) -> str:
        return "cp" + self.python.replace(".", "")


def check_python(version: str) -> str:
    if not re.fullmatch(r"3\.\d{1,2}", version):
        raise BundleError(
            f"--python {version!r}: give the target's CPython as MAJOR.MINOR, e.g. 3.11"
        )
    return version


def expand_platforms(platforms: list[str]) -> tuple[str, ...]:
    """pip matches ``--platform`` tags exactly; a host with glibc 2.N also runs wheels built for
    any older glibc, so ``manylinux_2_28_x86_64`` becomes 2_28, 2_27 … 2_17 and the legacy
    aliases (manylinux2014/2010/1). Other tags are passed on as given."""
    out: list[str] = []
    for tag in platforms:
        match = _MANYLINUX.match(tag)
        legacy = tag.split("_", 1)
        if match is None and legacy[0] in _LEGACY and len(legacy) == 2:
            match = _MANYLINUX.match(f"manylinux_2_{_LEGACY[legacy[0]]}_{legacy[1]}")
        if match is None:
            out.append(tag)
            continue
        glibc, arch = int(match.group(1)), match.group(2)
        out += [f"manylinux_2_{n}_{arch}" for n in range(glibc, 16, -1)]
        out += [f"{name}_{arch}" for name, n in _LEGACY.items() if n <= glibc]
    return tuple(dict.fromkeys(out))


def find_source(source: Path | None) -> Path:
    """The hushscribe checkout to build from: ``source``, else the one an editable install of
    this package points at; a clear error otherwise."""
    if source is not None:
        if not _is_checkout(source):
            raise BundleError(
                f"--source {source}: no pyproject.toml of the hushscribe project there"
            )
        return source.resolve()
    found = _editable_checkout()
    if found is None:
        raise BundleError(
            "this hushscribe is not an editable install from a source checkout, so there is "
            "nothing to build its wheel from; give the checkout with --source DIR"
        )
    return found


def _editable_checkout() -> Path | None:
    try:
        dist = metadata.distribution(PROJECT)
        direct = json.loads(dist.read_text("direct_url.json") or "{}")
    except (metadata.PackageNotFoundError, json.JSONDecodeError):
        direct = {}
    if direct.get("dir_info", {}).get("editable") and direct.get("url", "").startswith("file:"):
        path = Path(unquote(urlparse(direct["url"]).path))
        if _is_checkout(path):
            return path.resolve()
    import hushscribe

    here = Path(hushscribe.__file__).resolve().parent
    if "site-packages" in here.parts or "dist-packages" in here.parts:
        return None
    for parent in here.parents:
        if _is_checkout(parent):
            return parent
    return None


def _is_checkout(path: Path) -> bool:
    try:
        project = tomllib.loads((path / "pyproject.toml").read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError):
        return False
    return bool(project.get("project", {}).get("name") == PROJECT)


def defined_extras(source: Path) -> list[str]:
    project = tomllib.loads((source / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    return sorted(project.get("optional-dependencies", {}))


def check_extras(source: Path, extras: list[str]) -> list[str]:
    defined = defined_extras(source)
    unknown = [e for e in extras if e not in defined]
    if unknown:
        raise BundleError(
            f"extra {', '.join(repr(e) for e in unknown)} is not defined by hushscribe; "
            f"defined extras: {', '.join(defined)}"
        )
    return extras


def build_wheel(source: Path, dest: Path, status: Status) -> Path:
    """Build hushscribe's wheel from a clean copy of ``source`` (the checkout stays untouched:
    setuptools writes build/ and *.egg-info where it builds)."""
    status("building the hushscribe wheel")
    with tempfile.TemporaryDirectory(prefix="hushscribe-src-") as tmp:
        copy = Path(tmp) / "src"
        shutil.copytree(source, copy, ignore=_ignore_for_copy, symlinks=True)
        out = Path(tmp) / "wheel"
        _pip(["wheel", "--no-deps", "--wheel-dir", str(out), str(copy)], "building the wheel")
        wheels = list(out.glob(f"{PROJECT}-*.whl"))
        if len(wheels) != 1:
            raise BundleError(f"building hushscribe from {source} made no wheel")
        dest.mkdir(parents=True, exist_ok=True)
        return Path(shutil.copy2(wheels[0], dest / wheels[0].name))


def _ignore_for_copy(directory: str, names: list[str]) -> set[str]:
    import fnmatch

    skip = {n for n in names for pat in _SKIP_COPY if fnmatch.fnmatch(n, pat)}
    # any virtual environment, whatever its name
    skip |= {n for n in names if (Path(directory) / n / "pyvenv.cfg").is_file()}
    return skip


def wheel_version(wheel: Path) -> str:
    with zipfile.ZipFile(wheel) as zf:
        meta = next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))
        headers = HeaderParser().parsestr(zf.read(meta).decode("utf-8"))
    return str(headers["Version"])


def download(wheel: Path, extras: list[str], target: Target, dest: Path, status: Status) -> int:
    """Fetch the wheels of every dependency of ``wheel`` (with ``extras``) for ``target`` into
    ``dest``; binary wheels only, so nothing is compiled on the air-gapped host. Returns how many
    wheels ``dest`` holds."""
    requirement = f"{wheel}[{','.join(extras)}]" if extras else str(wheel)
    args = ["download", "--only-binary=:all:", "--dest", str(dest), "--progress-bar", "off"]
    args += ["--python-version", target.python, "--implementation", "cp", "--abi", target.abi]
    for platform in target.platforms:
        args += ["--platform", platform]
    _pip([*args, requirement], f"downloading wheels for Python {target.python}", status=status)
    return len(list(dest.glob("*.whl")))


def _pip(args: list[str], what: str, status: Status | None = None) -> None:
    """``python -m pip ARGS``; each line it prints is offered to ``status`` (what it fetches);
    its last lines are in the error when it fails."""
    cmd = [sys.executable, "-m", "pip", "--disable-pip-version-check", *args]
    tail: list[str] = []
    # The one step that reaches an index: the proxy variables set aside at import (the egress
    # guard's environment hardening) go to pip, which runs as a process of its own.
    env = {**os.environ, **egress.set_aside_proxy_env()}
    with subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1, env=env
    ) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            line = line.rstrip()
            if not line or "is ignored: it is neither a file nor a directory" in line:
                continue
            tail = [*tail[-PIP_LOG_TAIL:], line]
            if status is not None and line.lstrip().startswith(("Collecting", "Saved", "File")):
                status(f"{what}: {line.strip()}")
    if proc.returncode != 0:
        raise BundleError(
            f"pip failed {what} (exit {proc.returncode}); its last lines:\n  " + "\n  ".join(tail)
        )
