"""Docs that can drift are checked: the settings table and the README's promises."""

from __future__ import annotations

from pathlib import Path

from scripts.gen_config_docs import render
from typer.testing import CliRunner

from hushscribe.cli import app

ROOT = Path(__file__).resolve().parents[2]


def test_configuration_doc_is_current() -> None:
    text = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    assert text == render(), "run: python scripts/gen_config_docs.py"
    assert "`audio.max_duration_s`" in text and "`engine.zh_script`" in text


def test_readme_opens_with_the_two_commands() -> None:
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    first_screen = "\n".join(lines[:15])
    assert "make serve" in first_screen and "make test" in first_screen
    assert "hushscribe transcribe" in first_screen


def test_readme_commands_exist() -> None:
    runner = CliRunner()
    models_help = runner.invoke(app, ["models", "--help"]).output
    for command in ("list", "verify", "import", "remove", "install-demo"):
        assert command in models_help
    transcribe_help = runner.invoke(app, ["transcribe", "--help"], env={"COLUMNS": "200"}).output
    options = "--model --language --task --format --output-dir --word-timestamps --vad "
    options += "--beam-size --initial-prompt --hotwords --zh-script --batched"
    for option in options.split():
        assert option in transcribe_help
    for group, commands in (
        ("users", "add list disable enable passwd role"),
        ("keys", "create list revoke"),
        ("tls", "self-signed"),
    ):
        group_help = runner.invoke(app, [group, "--help"], env={"COLUMNS": "200"}).output
        for command in commands.split():
            assert command in group_help, (group, command)


def test_security_doc_lists_every_public_route() -> None:
    from hushscribe.api.access import PUBLIC_PATHS

    text = (ROOT / "docs" / "security.md").read_text(encoding="utf-8")
    for path in PUBLIC_PATHS:
        assert f"`{path}`" in text or path == "/v1/auth/login", path
    assert "`POST /v1/auth/login`" in text


def test_benchmarks_doc_is_what_the_results_make() -> None:
    from bench.common import DOC, report

    assert DOC.read_text(encoding="utf-8") == report(), "run: python -m bench.common"
