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


# --- API keys ------------------------------------------------------------------------------------

STRONG = "hs-" + "Jq7xV2mKp9LwR4tZs8NcB3hYf6DgA1uE5oXiT0vWk_"  # the Makefile's shape, 46 characters


@pytest.mark.parametrize(
    ("key", "why"),
    [
        ("", "is empty"),
        ("   ", "is empty"),
        ("changethis", r"too short \(\d+ of at least 32"),
        ("hs-Jq7xV2mKp9LwR4tZs8NcB3hYf6D", r"too short \(\d+ of at least 32"),  # 31
        ("x" * 40, "one character"),
        ("sk-alice-" + "a" * 32, "one character"),
        ("ab" * 20, "different characters"),
        ("changethis-changethis-changethis-", "placeholder"),
        ("CHANGEME_CHANGEME_CHANGEME_CHANGEME", "placeholder"),
        ("my-secret-password-for-testing-1234", "placeholder"),
        ("example-api-key-example-api-key-0", "placeholder"),
    ],
)
def test_weak_api_keys_are_refused(tmp_path: Path, key: str, why: str) -> None:
    config = tmp_path / "c.toml"
    config.write_text(f'[auth.api_keys]\nadmin = "{STRONG}"\ncarol = "{key}"\n')
    with pytest.raises(ConfigError, match=why) as err:
        load_settings(config)
    message = err.value.message
    assert "'carol'" in message and "'admin'" not in message  # names the owner whose key is weak
    assert "auth.api_keys" in message and "secrets.token_urlsafe" in message  # says how to fix it
    if key.strip():
        assert key not in message and key.lower() not in message.lower()  # never echoes the key


def test_weak_api_key_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HUSHSCRIBE_AUTH__API_KEYS", '{"ci": "password"}')
    with pytest.raises(ConfigError, match="'ci'") as err:
        load_settings(None)
    assert "password" not in err.value.message.replace("placeholder", "")


def test_every_weak_owner_is_named_at_once() -> None:
    with pytest.raises(ConfigError) as err:
        load_settings(None, auth={"api_keys": {"a": "changeme", "b": STRONG, "c": "secret"}})
    assert "'a'" in err.value.message and "'c'" in err.value.message
    assert "'b'" not in err.value.message


def test_weak_key_error_does_not_leak_through_pydantic() -> None:
    """Built directly (not through load_settings), the validation error hides the input too."""
    from pydantic import ValidationError

    from hushscribe.settings import AuthSettings

    with pytest.raises(ValidationError) as err:
        AuthSettings(api_keys={"carol": "changethis-changethis-changethis"})  # type: ignore[dict-item]
    assert "changethis-changethis" not in str(err.value)


@pytest.mark.parametrize(
    "key",
    [
        STRONG,
        "sk-alice-"
        + "Ux4bQ9rT2mW7yZ1cV6nH3kJ8pL5dF0gS",  # the test suite's keys (tests/service.py)
        "0f3a9c1e7b2d4f6a8c0e1b3d5f7a9c2e",  # secrets.token_hex(16)
        "hs-" + "testAbCdEfGhIjKlMnOpQrStUvWxYz0123456789",  # a random key may contain "test"
    ],
)
def test_strong_api_keys_are_accepted(key: str) -> None:
    s = load_settings(None, auth={"api_keys": {"admin": key}})
    assert s.auth.api_keys["admin"].get_secret_value() == key


def test_the_suite_and_the_makefile_keys_are_strong() -> None:
    import secrets

    from tests.service import KEYS

    assert load_settings(None, auth={"api_keys": KEYS}).auth.api_keys.keys() == KEYS.keys()
    for _ in range(200):  # what `make serve` wrote before keys moved to the database
        load_settings(None, auth={"api_keys": {"admin": "hs-" + secrets.token_urlsafe(32)}})
