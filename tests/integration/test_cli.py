"""The ``hushscribe`` command as a user runs it: a real process, real models, real speech."""

from __future__ import annotations

import json
import os
import re
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


# --- a new user's first minutes: the data directory, options after the command, the summary ---


def summary_column(stdout: str, column: int) -> str:
    """One column of the summary table, its wrapped or folded lines joined, spaces dropped."""
    rows = [line.split("│")[1:-1] for line in stdout.splitlines() if line.count("│") >= 7]
    return "".join(cells[column].strip() for cells in rows).replace(" ", "")


def test_summary_names_every_output_in_full_at_80_columns(
    settings: Settings, tmp_path: Path
) -> None:
    name = "board-meeting-2024-quarterly-review-kennedy-excerpt"
    (tmp_path / f"{name}.flac").symlink_to(clip("jfk.flac").path)
    proc = hushscribe(
        "--data-dir", str(settings.data_dir), "transcribe", f"{name}.flac", "-m", "tiny.en",
        "-f", "srt,txt,verbose_json", "-o", "out",
        env={"COLUMNS": "80"}, cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert max(len(line) for line in proc.stdout.splitlines()) <= 80, proc.stdout
    assert "…" not in proc.stdout, proc.stdout  # nothing cut short
    assert f"{name}.flac" in summary_column(proc.stdout, 0), proc.stdout
    outputs = summary_column(proc.stdout, 5)
    for written in (f"{name}.srt", f"{name}.txt", f"{name}.verbose.json"):
        assert (tmp_path / "out" / written).is_file()
        assert f"out/{written}" in outputs, proc.stdout


def test_config_and_data_dir_also_after_the_command(settings: Settings, tmp_path: Path) -> None:
    out = tmp_path / "out"
    jfk = str(clip("jfk.flac").path)
    proc = hushscribe(
        "transcribe", jfk, "-m", "tiny.en", "-o", str(out), "--data-dir", str(settings.data_dir)
    )
    assert proc.returncode == 0, proc.stderr
    assert "ask not what your country" in normalise((out / "jfk.txt").read_text(), "en")
    rows = json.loads(
        hushscribe("models", "list", f"--data-dir={settings.data_dir}", "--json").stdout
    )
    assert {r["name"] for r in rows} == {"base", "tiny.en"}
    # After the command it wins over the same option before it, as the later one does.
    empty = tmp_path / "empty"
    listed = hushscribe("--data-dir", str(settings.data_dir), "models", "list", "--json",
                        "--data-dir", str(empty))  # fmt: skip
    assert json.loads(listed.stdout) == [], listed.stderr
    config = tmp_path / "hushscribe.toml"
    config.write_text(f'data_dir = "{settings.data_dir}"\n[engine]\ndefault_model = "tiny.en"\n')
    proc = hushscribe("transcribe", jfk, "-o", str(out), "--config", str(config))
    assert proc.returncode == 0 and "model tiny.en" in proc.stderr, proc.stderr
    # A value that only looks like the option, after `--`, stays a file name.
    proc = hushscribe("transcribe", "-o", str(out), "--data-dir", str(settings.data_dir),
                      "--", "--config")  # fmt: skip
    assert proc.returncode == 1 and "--config" in proc.stderr, proc.stderr


def dev_checkout(root: Path, models: Path, config: str | None) -> Path:
    """What `make serve` leaves in a checkout: ./.data with the models and (maybe) its config."""
    (root / ".data").mkdir(parents=True)
    (root / ".data" / "models").symlink_to(models, target_is_directory=True)
    if config is not None:
        (root / ".data" / "hushscribe.toml").write_text(config)
    return root


MAKEFILE_CONFIG = (
    '[engine]\ndefault_model = "tiny.en"\n\n'
    '[auth.api_keys]\nadmin = "hs-Jq7xV2mKp9LwR4tZs8NcB3hYf6DgA1uE5oXiT0vWk_"\n'
)


def test_the_readme_example_finds_what_make_serve_prepared(
    settings: Settings, tmp_path: Path
) -> None:
    """Right after `make serve`, from the checkout, with nothing set: the models are found."""
    repo = dev_checkout(tmp_path / "repo", settings.models_dir, MAKEFILE_CONFIG)
    (repo / "jfk.flac").symlink_to(clip("jfk.flac").path)
    proc = hushscribe(
        "transcribe", "jfk.flac", "--format", "srt,txt", "--output-dir", "out/", cwd=repo
    )
    assert proc.returncode == 0, proc.stderr
    assert "ask not what your country" in normalise((repo / "out" / "jfk.txt").read_text(), "en")
    assert "model tiny.en" in proc.stderr  # the config that `make serve` wrote is used
    dev = repo / ".data"
    assert f"data directory {dev}" in proc.stderr and "hushscribe.toml" in proc.stderr


def test_dev_data_dir_with_models_only(settings: Settings, tmp_path: Path) -> None:
    repo = dev_checkout(tmp_path / "repo", settings.models_dir, None)
    rows = json.loads(hushscribe("models", "list", "--json", cwd=repo).stdout)
    assert {r["name"] for r in rows} == {"base", "tiny.en"}


def test_dev_data_dir_only_when_nothing_else_names_one(settings: Settings, tmp_path: Path) -> None:
    repo = dev_checkout(tmp_path / "repo", settings.models_dir, MAKEFILE_CONFIG)
    other = tmp_path / "other"
    chosen: list[tuple[tuple[str, ...], dict[str, str]]] = [
        (("--data-dir", str(other)), {}),
        ((), {"HUSHSCRIBE_DATA_DIR": str(other)}),
    ]
    for args, env in chosen:
        proc = hushscribe(*args, "models", "list", env=env, cwd=repo)
        assert proc.returncode == 0, proc.stderr
        assert f"No models in {other / 'models'}" in proc.stderr, proc.stderr
        assert "data directory" not in proc.stderr
    config = tmp_path / "elsewhere.toml"
    config.write_text("[engine]\nbeam_size = 3\n")  # names no data_dir: the default stands
    proc = hushscribe("--config", str(config), "models", "list", cwd=repo)
    assert "No models in /var/lib/hushscribe/models" in proc.stderr, proc.stderr
    # Outside a checkout nothing changes either.
    proc = hushscribe("models", "list", cwd=tmp_path)
    assert "No models in /var/lib/hushscribe/models" in proc.stderr, proc.stderr


def test_serve_banner_is_one_line_in_a_narrow_terminal(tmp_path: Path) -> None:
    """`make serve` shows where the API listens and where its data is; wrapped mid-line by the
    console it could not be copied (nor found with grep)."""
    from tests.service import Service, service_data_dir

    root = service_data_dir(tmp_path / "a-data-directory-with-a-rather-long-name", None)
    narrow = {"COLUMNS": "60", "HUSHSCRIBE_ADMIN_PASSWORD": ""}
    svc = Service(root, env=narrow, serve_args=["--first-run-key"]).start(wait_ready=False)
    try:
        lines = svc.log().splitlines()
        banner = f"hushscribe on http://127.0.0.1:{svc.port} — data in {root}, default model base"
        assert banner in lines, svc.log()
        # The first start's password and key are copied from the terminal: whole on their line.
        password = next(line for line in lines if line.startswith("  password: "))
        assert re.fullmatch(r"  password: \S{24}   \(shown once; .*`\)", password), password
        key = next(line for line in lines if line.startswith("  API key:  "))
        assert re.fullmatch(r"  API key:  hs_[\w-]{43}   \(shown once; .*`\)", key), key
    finally:
        assert svc.stop() == 0
