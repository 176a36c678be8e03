"""``hushscribe bundle create``: assemble an offline install bundle on a connected machine.

Layout (a directory, or the same under one top directory in a ``.tar.gz``)::

    wheels/            hushscribe's wheel and every dependency's, for the target Python/platform
    models/NAME/       each model's files and its manifest.json, copied from the model store
    debs/              Debian packages (only with --deb)
    bundle.json        what the bundle holds (versions, extras, models and their hashes)
    README.md          install, verify, upgrade
    install.sh         the installer (never touches the network)
    verify_bundle.py   checks SHA256SUMS with nothing but Python
    SHA256SUMS         sha256sum -c format, every file but itself

Everything is built in a hidden directory beside ``out`` and renamed into place at the end, so a
failure leaves nothing at ``out``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from string import Template
from typing import IO, Protocol

from hushscribe.bundle import verify as verify_module
from hushscribe.bundle.errors import BundleError
from hushscribe.bundle.verify import SUMS, hash_stream
from hushscribe.bundle.wheels import (
    DEFAULT_PLATFORM,
    Target,
    build_wheel,
    check_extras,
    check_python,
    download,
    expand_platforms,
    find_source,
    wheel_version,
)
from hushscribe.engine.store import MANIFEST, ModelInfo, ModelStore
from hushscribe.errors import HushscribeError
from hushscribe.security import egress

FORMAT_VERSION = 1
ARCHIVE_SUFFIXES = (".tar.gz", ".tgz")
GZIP_LEVEL = 6
"""Wheels and model weights barely compress; level 6 gets nearly all of level 9's gain, faster."""

Advance = Callable[[int], None]
Status = Callable[[str], None]


class Ui(Protocol):
    """How progress is shown: a spinner for a step, a bar for bytes, a line for what is done."""

    def step(self, text: str) -> AbstractContextManager[Status]: ...

    def bytes(self, text: str, total: int) -> AbstractContextManager[Advance]: ...

    def note(self, text: str) -> None: ...


class QuietUi:
    """Shows nothing (tests, library use)."""

    def step(self, text: str) -> AbstractContextManager[Status]:
        return nullcontext(lambda _line: None)

    def bytes(self, text: str, total: int) -> AbstractContextManager[Advance]:
        return nullcontext(lambda _n: None)

    def note(self, text: str) -> None:
        return None


@dataclass
class Request:
    out: Path
    models: list[str] | None  # None: every installed model
    extras: list[str] = field(default_factory=list)
    python: str = f"{sys.version_info.major}.{sys.version_info.minor}"  # the target host's
    platforms: list[str] = field(default_factory=lambda: [DEFAULT_PLATFORM])
    source: Path | None = None
    debs: list[str] = field(default_factory=list)

    @property
    def archive(self) -> bool:
        return self.out.name.endswith(ARCHIVE_SUFFIXES)

    @property
    def top(self) -> str:
        """The bundle's directory name (inside the archive, for a ``.tar.gz``)."""
        name = self.out.name
        for suffix in ARCHIVE_SUFFIXES:
            name = name.removesuffix(suffix)
        return name or "hushscribe-bundle"


@dataclass(frozen=True)
class Result:
    path: Path
    bytes: int
    version: str
    wheels: int
    models: list[str]


def create_bundle(request: Request, store: ModelStore, ui: Ui | None = None) -> Result:
    ui = ui or QuietUi()
    source, models, target = _check(request, store)
    with _reraise_as_bundle_error(f"building {request.out}"):
        request.out.parent.mkdir(parents=True, exist_ok=True)
        work = Path(
            tempfile.mkdtemp(prefix=f".{request.out.name}.partial-", dir=request.out.parent)
        )
        try:
            stage = work / request.top
            stage.mkdir()
            version, n_wheels = _wheels(request, source, target, stage / "wheels", work, ui)
            hashes = _copy_models(models, stage / "models", ui)
            if request.debs:
                _debs(request.debs, stage / "debs", ui)
            _write_meta(stage, request, target, version, models)
            _write_sums(stage, hashes, ui)
            built = stage
            if request.archive:
                built = work / "bundle.tar.gz"
                _tar(stage, built, ui)
            if request.out.exists():
                raise BundleError(
                    f"{request.out} appeared while the bundle was built; not replaced"
                )
            built.rename(request.out)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return Result(request.out, _size(request.out), version, n_wheels, [m.name for m in models])


def _check(request: Request, store: ModelStore) -> tuple[Path, list[ModelInfo], Target]:
    """Every argument, before anything slow runs."""
    if request.out.exists() or request.out.is_symlink():
        raise BundleError(f"{request.out} already exists; remove it or choose another --out")
    source = find_source(request.source)
    check_extras(source, request.extras)
    target = Target(check_python(request.python), expand_platforms(request.platforms))
    installed = store.names(kind=None)  # Whisper models and the speaker model
    names = installed if request.models is None else request.models
    if not names:
        raise BundleError(
            f"no models in {store.root} to bundle; import one first "
            "(`hushscribe models import PATH --name NAME`)"
        )
    unknown = [n for n in names if n not in installed]
    if unknown:
        raise BundleError(
            f"model {', '.join(repr(n) for n in unknown)} is not installed in {store.root}; "
            f"installed: {', '.join(installed) or '(none)'}"
        )
    if request.debs and shutil.which("apt-get") is None:
        raise BundleError("--deb needs apt-get (a Debian or Ubuntu machine)")
    return source, [store.info(n) for n in dict.fromkeys(names)], target


def _wheels(
    request: Request, source: Path, target: Target, dest: Path, work: Path, ui: Ui
) -> tuple[str, int]:
    with ui.step("building the hushscribe wheel") as status:
        wheel = build_wheel(source, work / "build", status)
    version = wheel_version(wheel)
    ui.note(f"built {wheel.name}")
    dest.mkdir(parents=True)
    with ui.step(f"downloading wheels for Python {target.python}") as status:
        count = download(wheel, request.extras, target, dest, status)
    if not any(dest.glob(f"hushscribe-{version}-*.whl")):
        shutil.copy2(wheel, dest / wheel.name)
        count += 1
    ui.note(f"{count} wheels for CPython {target.python} on {target.platforms[0]}")
    return version, count


def _copy_models(models: list[ModelInfo], dest: Path, ui: Ui) -> dict[str, str]:
    """Copy each model's files (hashing them on the way, against its manifest) and manifest;
    returns the hashes by bundle path, so SHA256SUMS need not read them again."""
    hashes: dict[str, str] = {}
    for info in models:
        target = dest / info.name
        target.mkdir(parents=True)
        with ui.bytes(f"copying model {info.name}", info.bytes) as advance:
            for fname, expected in info.files.items():
                actual = _copy_hashing(info.path / fname, target / fname, advance)
                if actual != expected:
                    raise BundleError(
                        f"model '{info.name}': {fname} has SHA-256 {actual}, its manifest says "
                        f"{expected}; check it with `hushscribe models verify {info.name}`"
                    )
                hashes[f"models/{info.name}/{fname}"] = actual
        shutil.copyfile(info.path / MANIFEST, target / MANIFEST)
        ui.note(f"model {info.name} ({info.size}, {info.bytes / 1e6:,.0f} MB)")
    return hashes


class _Tee:
    """Reads from one file and writes what it read to another: copy and hash in one pass."""

    def __init__(self, fin: IO[bytes], fout: IO[bytes]) -> None:
        self.fin, self.fout = fin, fout

    def read(self, n: int = -1, /) -> bytes:
        chunk = self.fin.read(n)
        self.fout.write(chunk)
        return chunk


def _copy_hashing(src: Path, dst: Path, advance: Advance) -> str:
    with src.open("rb") as fin, dst.open("wb") as fout:
        digest, _ = hash_stream(_Tee(fin, fout), advance)
    return digest


def _debs(names: list[str], dest: Path, ui: Ui) -> None:
    dest.mkdir()
    with ui.step(f"apt-get download {' '.join(names)}"):
        done = subprocess.run(
            ["apt-get", "download", *names], cwd=dest, capture_output=True, text=True,
            check=False, env={**os.environ, **egress.set_aside_proxy_env()},
        )  # fmt: skip
    if done.returncode != 0:
        raise BundleError(f"apt-get download failed:\n{done.stderr.strip()[-2000:]}")
    ui.note(f"{len(list(dest.glob('*.deb')))} Debian packages")


def _template(name: str) -> str:
    return resources.files("hushscribe.bundle").joinpath(name).read_text(encoding="utf-8")


def _write_meta(
    stage: Path, request: Request, target: Target, version: str, models: list[ModelInfo]
) -> None:
    created = datetime.now(UTC).isoformat(timespec="seconds")
    debs = sorted(p.name for p in (stage / "debs").glob("*.deb"))
    meta = {
        "format_version": FORMAT_VERSION,
        "hushscribe_version": version,
        "python": target.python,
        "platform": target.platforms[0],
        "platforms": list(target.platforms),
        "extras": request.extras,
        "models": [
            {
                "name": m.name,
                "size": m.size,
                "multilingual": m.multilingual,
                "sha256": m.sha256,
                "bytes": (m.path / "model.bin").stat().st_size,
                "total_bytes": m.bytes,
            }
            for m in models
        ],
        "wheels": sorted(p.name for p in (stage / "wheels").glob("*.whl")),
        "debs": debs,
        "created_at": created,
    }
    (stage / "bundle.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    readme = Template(_template("README.bundle.md")).substitute(
        version=version,
        python=target.python,
        platform=target.platforms[0],
        extras=", ".join(request.extras) or "(none)",
        models=", ".join(f"{m.name} ({m.size})" for m in models),
        first_model=models[0].name,
        created=created,
        debs=", ".join(debs) or "none",
    )
    (stage / "README.md").write_text(readme, encoding="utf-8")
    for name, text in (
        ("install.sh", _template("install.sh")),
        ("verify_bundle.py", Path(verify_module.__file__).read_text(encoding="utf-8")),
    ):
        (stage / name).write_text(text, encoding="utf-8")
        (stage / name).chmod(0o755)


def _files(root: Path) -> Iterator[Path]:
    for dirpath, _dirs, names in os.walk(root):
        for name in sorted(names):
            yield Path(dirpath) / name


def _write_sums(stage: Path, known: dict[str, str], ui: Ui) -> None:
    paths = {p.relative_to(stage).as_posix(): p for p in _files(stage)}
    todo = {rel: p for rel, p in paths.items() if rel not in known}
    hashes = dict(known)
    with ui.bytes("hashing", sum(p.stat().st_size for p in todo.values())) as advance:
        for rel, path in todo.items():
            if "\n" in rel or "\\" in rel:
                raise BundleError(f"cannot list {rel!r} in {SUMS}: odd characters in its name")
            with path.open("rb") as fh:
                hashes[rel], _ = hash_stream(fh, advance)
    lines = [f"{hashes[rel]}  {rel}\n" for rel in sorted(paths)]
    (stage / SUMS).write_text("".join(lines), encoding="utf-8")
    ui.note(f"{SUMS}: {len(lines)} files")


class _Counting:
    def __init__(self, fh: IO[bytes], advance: Advance) -> None:
        self.fh, self.advance = fh, advance

    def read(self, n: int = -1, /) -> bytes:
        chunk = self.fh.read(n)
        self.advance(len(chunk))
        return chunk


def _tar(stage: Path, archive: Path, ui: Ui) -> None:
    files = sorted(_files(stage))
    total = sum(p.stat().st_size for p in files)

    def owned_by_root(info: tarfile.TarInfo) -> tarfile.TarInfo:
        info.uid = info.gid = 0
        info.uname = info.gname = "root"
        return info

    with (
        ui.bytes(f"writing {archive.name}", total) as advance,
        tarfile.open(archive, "w:gz", compresslevel=GZIP_LEVEL) as tar,
    ):
        tar.add(stage, arcname=stage.name, recursive=False, filter=owned_by_root)
        for d in sorted(p for p in stage.rglob("*") if p.is_dir()):
            name = f"{stage.name}/{d.relative_to(stage)}"
            tar.add(d, arcname=name, recursive=False, filter=owned_by_root)
        for path in files:
            info = owned_by_root(tar.gettarinfo(path, f"{stage.name}/{path.relative_to(stage)}"))
            with path.open("rb") as fh:
                tar.addfile(info, _Counting(fh, advance))


def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in _files(path))


@contextmanager
def _reraise_as_bundle_error(what: str) -> Iterator[None]:
    try:
        yield
    except HushscribeError:
        raise
    except OSError as exc:
        raise BundleError(f"{what}: {exc}") from None
