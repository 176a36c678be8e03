"""Settings: file, environment and arguments, in that order of strength; bad input is refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from hushscribe.errors import ConfigError
from hushscribe.settings import load_settings


def test_defaults_are_safe() -> None:
    s = load_settings(None)
    assert s.audio.max_duration_s == 4 * 3600
    assert s.engine.zh_script == "simplified"
    assert s.models_dir == s.data_dir / "models"


def test_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "c.toml"
    config.write_text(
        'data_dir = "/from/file"\n[audio]\nmax_channels = 2\n[engine]\nbeam_size = 3\n'
    )
    monkeypatch.setenv("HUSHSCRIBE_AUDIO__MAX_CHANNELS", "4")
    s = load_settings(config, engine={"beam_size": 7})
    assert s.data_dir == Path("/from/file")
    assert s.audio.max_channels == 4  # env beats file
    assert s.engine.beam_size == 7  # arguments beat everything
    monkeypatch.setenv("HUSHSCRIBE_CONFIG", str(config))
    assert load_settings().data_dir == Path("/from/file")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[engine]\nbeam_size = 0\n", "engine.beam_size"),
        ("[engine]\nzh_script = 'klingon'\n", "engine.zh_script"),
        ("surprise = 1\n", "surprise"),
        ("[audio\n", "cannot read config file"),
    ],
)
def test_bad_config_is_a_clear_error(tmp_path: Path, text: str, message: str) -> None:
    config = tmp_path / "c.toml"
    config.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_settings(config)


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "nope.toml")
