"""Checking an offline bundle: the standalone ``verify_bundle.py`` (system Python, isolated, no
hushscribe) and ``hushscribe bundle verify`` name every bad, missing and unlisted file, for a
directory and for a .tar.gz; and the model store refuses a model that differs from the manifest
it carries."""

from __future__ import annotations

import ast
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest

from hushscribe.bundle import verify as verify_module
from hushscribe.bundle.wheels import expand_platforms
from hushscribe.engine import ModelStore
from hushscribe.errors import ModelChecksumMismatch
from hushscribe.settings import Settings

SYSTEM_PYTHON = "/usr/bin/python3"
SCRIPT = Path(verify_module.__file__)

Damage = Callable[[Path], None]


def _sums(root: Path) -> None:
    """SHA256SUMS written by coreutils' sha256sum itself, so the format is the real one."""
    files = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
    done = subprocess.run(
        ["sha256sum", "--", *files], cwd=root, capture_output=True, text=True, check=True
    )
    (root / "SHA256SUMS").write_text(done.stdout)


@pytest.fixture
def bundle(tmp_path: Path) -> Path:
    root = tmp_path / "hushscribe-bundle"
    for rel, data in {
        "wheels/hushscribe-0.1.0-py3-none-any.whl": os.urandom(40_000),
        "wheels/numpy-2.4.6-cp311-cp311-manylinux_2_28_x86_64.whl": os.urandom(300_000),
        "models/tiny.en/model.bin": os.urandom(2_000_000),
        "models/tiny.en/manifest.json": b'{"files": {}}\n',
        "bundle.json": b'{"hushscribe_version": "0.1.0"}\n',
        "README.md": b"# bundle\n",
        "install.sh": b"#!/usr/bin/env bash\n",
    }.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    shutil.copyfile(SCRIPT, root / "verify_bundle.py")
    _sums(root)
    return root


def _script(*args: str | Path) -> subprocess.CompletedProcess[str]:
    """The bundle's script as the installer runs it: the system Python, isolated (no
    PYTHONPATH, no user site, no current directory on the path), from outside the repo."""
    return subprocess.run(
        [SYSTEM_PYTHON, "-I", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd="/",
    )


def _cli(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "hushscribe", "bundle", "verify", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "COLUMNS": "200"},
    )


def _targz(root: Path) -> Path:
    archive = root.with_name(root.name + ".tar.gz")
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(root, arcname=root.name)
    return archive


def test_the_script_needs_nothing_but_the_standard_library() -> None:
    tree = ast.parse(SCRIPT.read_text(encoding="utf-8"))
    imported: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            imported.add(node.module.split(".")[0])
    assert imported - {"__future__"} <= set(sys.stdlib_module_names), imported
    assert not any(isinstance(n, ast.ImportFrom) and n.level for n in ast.walk(tree))
    # and the system Python it runs with has no hushscribe to lean on
    probe = _script("-c", "import hushscribe")
    assert probe.returncode == 1 and "No module named 'hushscribe'" in probe.stderr


def test_an_intact_bundle_passes(bundle: Path) -> None:
    for done in (
        _script(bundle / "verify_bundle.py"),
        _script(bundle / "verify_bundle.py", bundle),
    ):
        assert done.returncode == 0, done.stdout + done.stderr
        assert re.fullmatch(r"bundle OK: 8 files, 2\.\d MB checked", done.stdout.strip())
    cli = _cli(bundle)
    assert cli.returncode == 0, cli.stdout + cli.stderr
    assert "bundle OK: 8 files" in cli.stdout
    # what the script accepts, coreutils accepts too (and the other way round)
    assert subprocess.run(["sha256sum", "-c", "--quiet", "SHA256SUMS"], cwd=bundle).returncode == 0


def _flip_byte(root: Path) -> None:
    path = root / "models/tiny.en/model.bin"
    data = bytearray(path.read_bytes())
    data[1_234_567] ^= 0x01
    path.write_bytes(bytes(data))


def _delete(root: Path) -> None:
    (root / "wheels/numpy-2.4.6-cp311-cp311-manylinux_2_28_x86_64.whl").unlink()


def _add(root: Path) -> None:
    (root / "wheels/evil-1.0-py3-none-any.whl").write_bytes(b"PK\x03\x04 not in the list")


DAMAGES: list[tuple[Damage, str, str]] = [
    (_flip_byte, "BAD", "models/tiny.en/model.bin"),
    (_delete, "MISSING", "wheels/numpy-2.4.6-cp311-cp311-manylinux_2_28_x86_64.whl"),
    (_add, "UNLISTED", "wheels/evil-1.0-py3-none-any.whl"),
]


@pytest.mark.parametrize(("damage", "label", "path"), DAMAGES, ids=["flipped", "deleted", "added"])
def test_damage_is_named(bundle: Path, damage: Damage, label: str, path: str) -> None:
    damage(bundle)
    for done in (_script(bundle / "verify_bundle.py"), _cli(bundle)):
        assert done.returncode == 1, done.stdout + done.stderr
        problems = [line for line in done.stdout.splitlines() if not line.startswith("bundle")]
        assert len(problems) == 1, done.stdout
        assert problems[0].split()[:2] == [label, path + (":" if label != "MISSING" else "")]
        assert "bundle FAILED" in done.stdout
    if label == "BAD":
        actual = hashlib.sha256((bundle / path).read_bytes()).hexdigest()
        assert actual in done.stdout  # the hash it has, beside the one the list expects


def test_every_problem_at_once_is_named(bundle: Path) -> None:
    for damage, _, _ in DAMAGES:
        damage(bundle)
    done = _script(bundle / "verify_bundle.py")
    assert done.returncode == 1
    assert [line.split()[0] for line in done.stdout.splitlines()] == [
        "BAD", "MISSING", "UNLISTED", "bundle",
    ]  # fmt: skip
    assert "bundle FAILED: 1 bad, 1 missing, 1 unlisted (of 8 listed)" in done.stdout


def test_tar_gz_bundles(bundle: Path) -> None:
    good = _targz(bundle)
    for done in (_script(SCRIPT, good), _cli(good)):
        assert done.returncode == 0, done.stdout + done.stderr
        assert "bundle OK: 8 files" in done.stdout
    _flip_byte(bundle)
    _add(bundle)
    good.unlink()
    bad = _targz(bundle)
    for done in (_script(SCRIPT, bad), _cli(bad)):
        assert done.returncode == 1, done.stdout + done.stderr
        assert "BAD       models/tiny.en/model.bin" in done.stdout
        assert "UNLISTED  wheels/evil-1.0-py3-none-any.whl" in done.stdout


def test_what_is_no_bundle_is_a_usage_error(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    junk = tmp_path / "junk.tar.gz"
    junk.write_bytes(os.urandom(4096))
    for target, says in ((empty, "SHA256SUMS"), (junk, "not a readable bundle archive")):
        script = _script(SCRIPT, target)
        assert script.returncode == 2 and says in script.stderr, script.stderr
        cli = _cli(target)
        assert cli.returncode == 2 and "bundle_error" in cli.stderr and says in cli.stderr


def test_import_checks_the_manifest_a_model_carries(settings: Settings, tmp_path: Path) -> None:
    """A model directory copied from a store (as bundles carry them) is imported only if its
    files still have the SHA-256 values of its manifest.json."""
    original = settings.models_dir / "tiny.en"
    copy = tmp_path / "tiny.en"
    copy.mkdir()
    for f in original.iterdir():
        if f.name == "model.bin":
            (copy / f.name).symlink_to(f)  # 75 MB, never changed here; the copy is read only
        elif not f.name.startswith("."):
            shutil.copyfile(f, copy / f.name)
    store = ModelStore(tmp_path / "models")
    assert store.import_model(copy, "intact").name == "intact"

    tokenizer = copy / "tokenizer.json"
    tokenizer.write_bytes(tokenizer.read_bytes() + b" ")  # still a valid model, another file
    with pytest.raises(ModelChecksumMismatch, match=r"tokenizer\.json has SHA-256 .*expected"):
        store.import_model(copy, "changed")
    archive = tmp_path / "changed.tar.gz"
    with tarfile.open(archive, "w:gz", dereference=True) as tar:
        tar.add(copy, arcname="tiny.en")
    with pytest.raises(ModelChecksumMismatch, match=r"tokenizer\.json"):
        store.import_model(archive, "changed")
    assert store.names() == ["intact"]
    assert [p.name for p in store.root.iterdir()] == ["intact"]  # nothing half-imported

    # the same files without the manifest: nothing to hold them to, imported as they are
    (copy / "manifest.json").unlink()
    assert (
        store.import_model(copy, "unpinned").files["tokenizer.json"]
        != (store.info("intact").files["tokenizer.json"])
    )


def _create(data_dir: Path, *args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "hushscribe", "--data-dir", str(data_dir), "bundle", "create",
         *map(str, args)],
        capture_output=True, text=True, timeout=300, env={**os.environ, "COLUMNS": "300"},
    )  # fmt: skip


def test_create_refuses_what_it_cannot_build(data_dir: Path, tmp_path: Path) -> None:
    """Each argument is checked before anything slow runs, with a message that says what there
    is to choose from; nothing is left behind."""
    out = tmp_path / "bundle.tar.gz"
    cases: list[tuple[list[str | Path], list[str]]] = [
        (["--models", "base,large-v3"], ["model 'large-v3' is not installed", "installed: base"]),
        (["--extras", "gpu,nonesuch"], ["extra 'nonesuch' is not defined", "defined extras:"]),
        (["--python", "311"], ["--python '311'", "MAJOR.MINOR"]),
        (["--source", tmp_path], ["no pyproject.toml of the hushscribe project"]),
    ]
    for args, says in cases:
        done = _create(data_dir, "--out", out, *args)
        assert done.returncode == 2, done.stdout + done.stderr
        assert "(bundle_error)" in done.stderr
        for text in says:
            assert text in done.stderr, done.stderr
    extras = _create(data_dir, "--out", out, "--extras", "nonesuch").stderr
    assert all(name in extras for name in ("gpu", "ldap", "demo-models")), extras
    out.mkdir()
    taken = _create(data_dir, "--out", out, "--models", "tiny.en")
    assert taken.returncode == 2 and "already exists" in taken.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle.tar.gz"]


def test_a_glibc_platform_takes_wheels_for_older_glibc_too() -> None:
    tags = expand_platforms(["manylinux_2_28_x86_64"])
    assert tags[0] == "manylinux_2_28_x86_64" and "manylinux_2_27_x86_64" in tags  # ctranslate2
    assert {"manylinux_2_17_x86_64", "manylinux2014_x86_64", "manylinux1_x86_64"} <= set(tags)
    assert not [t for t in tags if "2_29" in t or "aarch64" in t]
    legacy = expand_platforms(["manylinux2014_x86_64"])
    assert legacy[0] == "manylinux_2_17_x86_64" and "manylinux2014_x86_64" in legacy
    assert not [t for t in legacy if "2_18" in t]
    assert expand_platforms(["win_amd64", "win_amd64"]) == ("win_amd64",)
