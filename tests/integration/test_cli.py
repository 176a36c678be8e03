"""The ``hushscribe`` command as a user runs it: a real process, real models, real speech."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import srt

from hushscribe import __version__
from hushscribe.settings import Settings
from tests.speech import clip, normalise

# The tests say which settings they mean; none leak in from the caller (the Makefile sets some).
CLEAN_ENV = {k: v for k, v in os.environ.items() if not k.startswith("HUSHSCRIBE_")}


def hushscribe(
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "hushscribe", *args],
        capture_output=True,
        text=True,
        timeout=600,
        env={**CLEAN_ENV, "COLUMNS": "200", **(env or {})},
        cwd=cwd,
    )


def test_version_and_help() -> None:
    assert hushscribe("--version").stdout.strip() == f"hushscribe {__version__}"
    out = hushscribe("--help").stdout
    for command in ("transcribe", "models"):
        assert command in out
    assert "--output-dir" in hushscribe("transcribe", "--help").stdout


def test_two_files_to_srt_and_txt(settings: Settings, tmp_path: Path) -> None:
    out = tmp_path / "out"
    jfk, fr = clip("jfk.flac").path, clip("cheetah_test_fr.wav").path
    proc = hushscribe(
        "--data-dir", str(settings.data_dir), "transcribe", str(jfk), str(fr),
        "--format", "srt,txt", "--output-dir", str(out),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in out.iterdir()) == [
        "cheetah_test_fr.srt", "cheetah_test_fr.txt", "jfk.srt", "jfk.txt",
    ]  # fmt: skip
    assert "ask not what your country" in normalise((out / "jfk.txt").read_text(), "en")
    subs = list(srt.parse((out / "jfk.srt").read_text()))
    assert subs and subs[-1].end.total_seconds() <= 11.1
    assert "mer" in (out / "cheetah_test_fr.txt").read_text().lower()
    assert "jfk.flac" in proc.stdout and "fr (" in proc.stdout  # summary table
    assert "11 / 11 s" in proc.stderr  # the progress bar reached the end of the audio


def test_bad_file_fails_the_run_but_not_the_others(settings: Settings, tmp_path: Path) -> None:
    bad = tmp_path / "notes.wav"
    bad.write_bytes(os.urandom(4096))
    out = tmp_path / "out"
    proc = hushscribe(
        "--data-dir", str(settings.data_dir), "transcribe", "-m", "tiny.en",
        str(bad), str(clip("LDC93S1.wav").path), "-o", str(out), "-f", "json",
    )  # fmt: skip
    assert proc.returncode == 1
    assert "unsupported_media" in proc.stderr and "notes.wav" in proc.stderr
    assert json.loads((out / "LDC93S1.json").read_text())["text"]
    assert sorted(p.name for p in out.iterdir()) == ["LDC93S1.json"]


def test_usage_errors_exit_2(settings: Settings, tmp_path: Path) -> None:
    proc = hushscribe("--data-dir", str(settings.data_dir), "transcribe", "x.wav", "-f", "docx")
    assert proc.returncode == 2 and "unknown output format docx" in proc.stderr
    proc = hushscribe("--data-dir", str(settings.data_dir), "transcribe", "x.wav", "-l", "klingon")
    assert proc.returncode == 2 and "unknown language 'klingon'" in proc.stderr


def test_config_file_and_env(settings: Settings, tmp_path: Path) -> None:
    config = tmp_path / "hushscribe.toml"
    config.write_text(f'data_dir = "{settings.data_dir}"\n[engine]\ndefault_model = "tiny.en"\n')
    out = tmp_path / "out"
    proc = hushscribe(
        "transcribe", str(clip("jfk.flac").path), "-o", str(out),
        env={"HUSHSCRIBE_CONFIG": str(config), "HUSHSCRIBE_DATA_DIR": ""},
    )  # fmt: skip
    assert proc.returncode == 2  # an empty HUSHSCRIBE_DATA_DIR overrides the file: no models there
    proc = hushscribe(
        "--config", str(config), "transcribe", str(clip("jfk.flac").path), "-o", str(out)
    )
    assert proc.returncode == 0, proc.stderr
    assert "model tiny.en" in proc.stderr
    config.write_text("[engine]\nbeam_sise = 3\n")
    proc = hushscribe("--config", str(config), "models", "list")
    assert proc.returncode == 2 and "engine.beam_sise" in proc.stderr


def test_models_commands(settings: Settings, tmp_path: Path) -> None:
    data = tmp_path / "data"
    assert hushscribe("--data-dir", str(data), "models", "list", "--json").stdout.strip() == "[]"
    proc = hushscribe(
        "--data-dir",
        str(data),
        "models",
        "import",
        str(settings.models_dir / "tiny.en"),
        "--name",
        "t",
    )
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(hushscribe("--data-dir", str(data), "models", "list", "--json").stdout)
    assert [(r["name"], r["multilingual"], r["size"]) for r in rows] == [("t", False, "tiny")]
    proc = hushscribe("--data-dir", str(data), "models", "verify")
    assert proc.returncode == 0 and "ok" in proc.stdout
    cfg = data / "models" / "t" / "config.json"
    cfg.write_text(cfg.read_text() + " ")
    proc = hushscribe("--data-dir", str(data), "models", "verify", "t")
    assert proc.returncode == 1 and "FAIL" in proc.stdout and "config.json" in proc.stdout
    assert hushscribe("--data-dir", str(data), "models", "remove", "t", "--yes").returncode == 0
    assert json.loads(hushscribe("--data-dir", str(data), "models", "list", "--json").stdout) == []
