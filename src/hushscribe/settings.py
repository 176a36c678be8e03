"""The one place configuration is read: a TOML file, then ``HUSHSCRIBE_*`` environment.

Order of precedence (highest first): values passed to :func:`load_settings`, environment
(``HUSHSCRIBE_DATA_DIR``, nested with ``__``: ``HUSHSCRIBE_AUDIO__MAX_DURATION_S``), the TOML file
(``--config`` or ``HUSHSCRIBE_CONFIG``), the defaults below. Unknown keys are refused, so a typo in
a config file is an error instead of a silently ignored setting.
"""

from __future__ import annotations

from contextvars import ContextVar
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from hushscribe.errors import ConfigError

_toml_file: ContextVar[Path | None] = ContextVar("hushscribe_toml_file", default=None)

ZhScript = Literal["simplified", "traditional", "as-is"]


class AudioLimits(BaseModel):
    """Limits on untrusted media, checked from the container before a full decode."""

    model_config = ConfigDict(extra="forbid")

    max_bytes: int = Field(
        2 * 1024**3,
        gt=0,
        description="Largest media file accepted, in bytes. 2 GiB holds a 4 h meeting video at "
        "typical bitrates; larger inputs are refused before decoding.",
    )
    max_duration_s: float = Field(
        4 * 3600.0,
        gt=0,
        description="Longest audio accepted, in seconds (default 4 h). Checked from the container "
        "header and again while decoding, so a lying header cannot exceed it.",
    )
    max_channels: int = Field(
        8,
        gt=0,
        description="Most audio channels accepted. 7.1 surround is 8; more is no recording of "
        "speech and costs memory to downmix.",
    )
    max_sample_rate: int = Field(
        96_000,
        gt=0,
        description="Highest sample rate accepted, in Hz. Speech needs 16 kHz; 96 kHz covers "
        "studio recordings.",
    )
    decode_timeout_s: float = Field(
        600.0,
        gt=0,
        description="Wall-clock limit for decoding one file, in seconds. A decoder stuck on "
        "crafted input is stopped with `decode_timeout`.",
    )


class EngineSettings(BaseModel):
    """How models are run."""

    model_config = ConfigDict(extra="forbid")

    default_model: str = Field("base", description="Model used when a request names none.")
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="Where models run: `auto` takes CUDA when a GPU is visible."
    )
    compute_type: str = Field(
        "auto",
        description="CTranslate2 compute type; `auto` is int8 on CPU and float16 on CUDA.",
    )
    cpu_threads: int = Field(
        0, ge=0, description="Threads per model on CPU; 0 lets CTranslate2 use every core."
    )
    beam_size: int = Field(5, ge=1, le=20, description="Default beam size.")
    zh_script: ZhScript = Field(
        "simplified",
        description="Script of Chinese output: `simplified`, `traditional` or `as-is` "
        "(as the model wrote it).",
    )
    batched_min_duration_s: float = Field(
        600.0,
        ge=0,
        description="Files at least this long use the batched pipeline when a request leaves "
        "`batched` unset.",
    )
    batch_size: int = Field(8, ge=1, le=64, description="Batch size of the batched pipeline.")
    language_windows: int = Field(
        5,
        ge=1,
        le=20,
        description="Most 30 s windows, spread over the file, used to detect the language.",
    )
    model_idle_unload_s: float = Field(
        900.0, ge=0, description="Unload a model not used for this long (0 keeps models loaded)."
    )


class Settings(BaseSettings):
    """All of hushscribe's configuration."""

    model_config = SettingsConfigDict(
        env_prefix="HUSHSCRIBE_",
        env_nested_delimiter="__",
        extra="forbid",
    )

    data_dir: Path = Field(
        Path("/var/lib/hushscribe"),
        description="Where models, jobs and audit data live. Models are in `<data_dir>/models`.",
    )
    audio: AudioLimits = Field(default_factory=AudioLimits, description="Media limits.")
    engine: EngineSettings = Field(default_factory=EngineSettings, description="Model running.")

    @property
    def models_dir(self) -> Path:
        """Directory holding one sub-directory per installed model."""
        return self.data_dir / "models"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        toml_path = _toml_file.get()
        if toml_path is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=toml_path))
        return tuple(sources)


class _ConfigLocation(BaseSettings):
    """Reads only ``HUSHSCRIBE_CONFIG``, the path of the TOML file."""

    model_config = SettingsConfigDict(env_prefix="HUSHSCRIBE_", extra="ignore")

    config: Path | None = None


def load_settings(config_file: Path | None = None, **overrides: Any) -> Settings:
    """Build :class:`Settings` from ``config_file`` (or ``HUSHSCRIBE_CONFIG``), env and overrides.

    Raises :class:`ConfigError` with every invalid field named.
    """
    path = config_file if config_file is not None else _ConfigLocation().config
    if path is not None and not path.is_file():
        raise ConfigError(f"config file {path} does not exist or is not a file")
    token = _toml_file.set(path)
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '(root)'}: {err['msg']}"
            for err in exc.errors()
        )
        source = f" (config file {path})" if path else ""
        raise ConfigError(f"invalid configuration{source}: {problems}") from None
    except ValueError as exc:  # TOML syntax errors surface as ValueError subclasses
        raise ConfigError(f"cannot read config file {path}: {exc}") from None
    finally:
        _toml_file.reset(token)
