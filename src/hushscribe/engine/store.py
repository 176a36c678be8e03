"""The model store: ``<data_dir>/models/<name>/`` holds a CTranslate2 Whisper model and its
``manifest.json`` (name, multilingual, size, SHA-256 of every file, where it came from); or, of
kind ``speaker``, the speaker-embedding model diarization uses (``model.onnx``, built by
``engine/speaker_model.py``), under the same manifest and checks.

Loading verifies every checksum. The verdict is cached in ``.verified.json`` keyed by each file's
size, mtime, ctime and inode, so a restart does not re-hash gigabytes; ctime cannot be set back by
``touch``, so a file rewritten in place is hashed again. Nothing here touches the network: models
arrive only by ``import`` from a local directory or archive, or from the demo packages.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import shutil
import tarfile
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from hushscribe.engine.model_files import (
    MAIN_FILE,
    WHISPER,
    inspect,
    kind_of,
)
from hushscribe.errors import (
    InvalidModel,
    ModelChecksumMismatch,
    ModelExists,
    ModelNotFound,
)
from hushscribe.fsutil import atomic_write_bytes

MANIFEST = "manifest.json"
VERIFIED = ".verified.json"
MANIFEST_VERSION = 1
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
QUANTIZATIONS = ("float16", "int8", "float32")
"""How a converted model's weights are stored (``engine/convert.py``; here, where the CLI reads it
without loading CTranslate2). CTranslate2 converts them to the compute type at load time, so
float16 (half the size of float32, no loss against OpenAI's float16 weights) serves CPU and GPU."""

Progress = Callable[[int], None]


@dataclass(frozen=True)
class ModelInfo:
    """An installed model as the store knows it."""

    name: str
    path: Path
    multilingual: bool
    size: str
    files: dict[str, str]  # file name → SHA-256
    source: str
    installed_at: str
    kind: str = WHISPER

    @property
    def sha256(self) -> str:
        """SHA-256 of the weights: ``model.bin``, a speaker model's ``model.onnx``."""
        return self.files[MAIN_FILE.get(self.kind, "model.bin")]

    @property
    def bytes(self) -> int:
        return sum((self.path / f).stat().st_size for f in self.files)


def sha256_file(path: Path, progress: Progress | None = None) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(4 * 1024 * 1024):
            digest.update(chunk)
            if progress:
                progress(len(chunk))
    return digest.hexdigest()


def check_name(name: str) -> str:
    if not NAME_RE.match(name):
        raise InvalidModel(
            f"invalid model name {name!r}: use 1-64 lower-case letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return name


def stat_key(path: Path) -> list[int]:
    st = path.stat()
    return [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]


class ModelStore:
    """Installed models under one directory."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def _dir(self, name: str) -> Path:
        return self.root / check_name(name)

    def path(self, name: str) -> Path:
        """Where model ``name`` lives (or would), after checking the name is a plain name."""
        return self._dir(name)

    def names(self, kind: str | None = WHISPER) -> list[str]:
        """Installed models of ``kind`` (all kinds: None). Whisper by default: that is what
        every caller transcribing, listing or bundling Whisper models means."""
        if not self.root.is_dir():
            return []
        found = sorted(p.name for p in self.root.iterdir() if (p / MANIFEST).is_file())
        return found if kind is None else [n for n in found if self._kind(n) == kind]

    def _kind(self, name: str) -> str:
        try:
            m = json.loads((self.root / name / MANIFEST).read_text(encoding="utf-8"))
            return str(m.get("kind", WHISPER)) if isinstance(m, dict) else WHISPER
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            return WHISPER  # a damaged manifest: listed (and refused by info) as before

    def list(self, kind: str | None = WHISPER) -> list[ModelInfo]:
        return [self.info(n) for n in self.names(kind)]

    def info(self, name: str) -> ModelInfo:
        path = self._dir(name)
        manifest_path = path / MANIFEST
        if not manifest_path.is_file():
            raise ModelNotFound(
                f"model '{name}' not found in {self.root}; import it with "
                f"`hushscribe models import PATH --name {name}`"
                + ("" if self.names() else " (or `hushscribe models install-demo`)")
            )
        try:
            m = json.loads(manifest_path.read_text(encoding="utf-8"))
            return ModelInfo(
                name=m["name"],
                path=path,
                multilingual=bool(m["multilingual"]),
                size=str(m["size"]),
                files={k: str(v["sha256"]) for k, v in m["files"].items()},
                source=str(m["source"]),
                installed_at=str(m["installed_at"]),
                kind=str(m.get("kind", WHISPER)),
            )
        except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as exc:
            raise InvalidModel(f"manifest of model '{name}' is damaged: {exc!r}") from None

    def verify(
        self, name: str, *, use_cache: bool = True, progress: Progress | None = None
    ) -> ModelInfo:
        """Check every file against the manifest; raise :class:`ModelChecksumMismatch` otherwise."""
        info = self.info(name)
        cache_path = info.path / VERIFIED
        cache: dict[str, Any] = {}
        if use_cache and cache_path.is_file():
            try:
                cache = json.loads(cache_path.read_text(encoding="utf-8"))
            except (json.JSONDecodeError, OSError):
                cache = {}
        fresh: dict[str, Any] = {}
        for fname, expected in info.files.items():
            fpath = info.path / fname
            if not fpath.is_file():
                raise ModelChecksumMismatch(f"model '{name}': file {fname} is missing")
            key = stat_key(fpath)
            entry = cache.get(fname)
            if entry and entry.get("key") == key and entry.get("sha256") == expected:
                fresh[fname] = entry
                continue
            actual = sha256_file(fpath, progress)
            if actual != expected:
                cache_path.unlink(missing_ok=True)
                raise ModelChecksumMismatch(
                    f"model '{name}': {fname} has SHA-256 {actual}, the manifest says {expected}; "
                    "the file was changed or damaged — re-import the model"
                )
            fresh[fname] = {"key": key, "sha256": actual}
        if fresh != cache:
            # A read-only models volume (shared by several nodes) keeps no cache: hashed each load.
            with contextlib.suppress(OSError):
                _write_json_atomic(cache_path, fresh)
        return info

    @contextmanager
    def staging(self) -> Iterator[Path]:
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".import-", dir=self.root))
        try:
            yield tmp
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def import_model(
        self,
        source: Path,
        name: str,
        *,
        source_label: str | None = None,
        expected: dict[str, str] | None = None,
        replace: bool = False,
        progress: Progress | None = None,
    ) -> ModelInfo:
        """Copy a model directory or .tar/.tar.gz archive into the store and write its manifest.

        ``expected`` pins SHA-256 values (file → hash) that the copied files must have. A model
        that carries a ``manifest.json`` (one copied from a store, as in an offline bundle) must
        also match it: a file changed or dropped since is refused.
        Nothing is left in the store when any step fails.
        """
        target = self._dir(name)
        if target.exists() and not replace:
            raise ModelExists(
                f"model '{name}' already exists; remove it first or choose another name"
            )
        if not source.exists():
            raise InvalidModel(f"{source} does not exist")
        with self.staging() as staging:
            model_dir = staging / "model"
            if source.is_dir():
                files = inspect(source, kind_of(source))[0]
                model_dir.mkdir()
                for f in files:
                    shutil.copyfile(source / f, model_dir / f)
                carried = _carried_manifest(source, source)
            else:
                model_dir = _extract_archive(source, staging / "archive")
                carried = _carried_manifest(model_dir, source)
            label = source_label or str(source)
            if carried:
                missing = sorted(f for f in carried if not (model_dir / f).is_file())
                if missing:
                    raise ModelChecksumMismatch(
                        f"{label}: {', '.join(missing)} listed in its manifest.json but missing; "
                        "the model was altered or damaged — refusing to install it"
                    )
            return self.install_prepared(
                model_dir, name, label, expected={**carried, **(expected or {})},
                progress=progress, kind=kind_of(model_dir),
            )  # fmt: skip

    def install_prepared(
        self,
        model_dir: Path,
        name: str,
        source_label: str,
        *,
        expected: dict[str, str] | None = None,
        progress: Progress | None = None,
        kind: str = WHISPER,
    ) -> ModelInfo:
        """Hash, check and move ``model_dir`` (a directory inside the store's root) into place."""
        target = self._dir(name)
        files, multilingual, size = inspect(model_dir, kind)
        hashes: dict[str, dict[str, Any]] = {}
        for f in files:
            digest = sha256_file(model_dir / f, progress)
            if expected and f in expected and expected[f] != digest:
                raise ModelChecksumMismatch(
                    f"{source_label}: {f} has SHA-256 {digest}, expected {expected[f]}; "
                    "the package was altered or damaged — refusing to install it"
                )
            hashes[f] = {"sha256": digest, "bytes": (model_dir / f).stat().st_size}
        for extra in model_dir.iterdir():
            if extra.name not in hashes:
                _remove(extra)
        manifest = {
            "format_version": MANIFEST_VERSION,
            "name": name,
            "kind": kind,
            "multilingual": multilingual,
            "size": size,
            "files": hashes,
            "source": source_label,
            "installed_at": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        _write_json_atomic(model_dir / MANIFEST, manifest)
        if target.exists():
            old = target.with_name(f".old-{target.name}")
            _remove(old)
            target.rename(old)
            model_dir.rename(target)
            _remove(old)
        else:
            model_dir.rename(target)
        return self.verify(name)

    def remove(self, name: str) -> ModelInfo:
        info = self.info(name)
        _remove(info.path)
        return info


def _carried_manifest(model_dir: Path, source: Path) -> dict[str, str]:
    """File → SHA-256 from the ``manifest.json`` a model brings along (none: empty). One that is
    not JSON is refused; JSON of another shape (another tool's file) is not ours to check."""
    path = model_dir / MANIFEST
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InvalidModel(f"{source}: its {MANIFEST} is unreadable ({exc})") from None
    files = data.get("files") if isinstance(data, dict) else None
    if not isinstance(files, dict):
        return {}
    return {
        str(f): str(v["sha256"])
        for f, v in files.items()
        if isinstance(v, dict) and isinstance(v.get("sha256"), str)
    }


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def _extract_archive(archive: Path, dest: Path) -> Path:
    """Extract a tar archive safely (no links outside, no devices); return the model's directory."""
    try:
        with tarfile.open(archive, "r:*") as tar:
            tar.extractall(dest, filter="data")
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise InvalidModel(f"{archive} is not a readable .tar/.tar.gz archive: {exc}") from None
    candidates = [p.parent for p in dest.rglob("model.bin")]
    if len(candidates) != 1:
        raise InvalidModel(
            f"{archive} must hold exactly one CTranslate2 Whisper model; found {len(candidates)}"
        )
    return candidates[0]  # other files in that directory are dropped by install_prepared


def _write_json_atomic(path: Path, data: Any) -> None:
    text = json.dumps(data, indent=2, sort_keys=True) + "\n"
    atomic_write_bytes(path, text.encode("utf-8"), mode=0o644)  # as readable as the model files
