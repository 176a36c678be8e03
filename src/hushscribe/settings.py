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

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from hushscribe.errors import ConfigError, describe_validation_errors
from hushscribe.settings_access import (
    API_KEY_MIN_CHARS,
    AuthSettings,
    LdapSettings,
    NetworkSettings,
    Role,
    Scope,
    api_key_weakness,
)
from hushscribe.settings_audit import AuditSettings
from hushscribe.settings_models import ModelSettings
from hushscribe.settings_streams import StreamSettings

__all__ = [
    "API_KEY_MIN_CHARS",
    "AuthSettings",
    "LdapSettings",
    "NetworkSettings",
    "Role",
    "Scope",
    "Settings",
    "api_key_weakness",
    "load_settings",
]

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
    batched_min_duration_s: float | None = Field(
        None,
        ge=0,
        description="Files at least this long use the batched pipeline when a request leaves "
        "`batched` unset; unset (the default): never. Batched decoding reads each 30 s clip "
        "once, without the sequential decoder's context and retries: on 12.5 minutes of "
        "recorded clips it lost 6 of 63 where sequential decoding lost 3, for twice the speed "
        "on CPU (docs/BENCHMARKS.md). Short jobs of several clients are still batched together "
        "(`jobs.batch_jobs`).",
    )
    batch_size: int = Field(8, ge=1, le=64, description="Batch size of the batched pipeline.")
    window_s: float = Field(
        600.0,
        ge=120,
        le=4 * 3600,
        description="Longer audio is decoded and transcribed in windows of at most this many "
        "seconds, each cut at a pause, so a worker's memory is bounded by this setting, not by "
        "the file (10 minutes: about 40 MB of samples).",
    )
    language_windows: int = Field(
        5,
        ge=1,
        le=20,
        description="Most 30 s windows, spread over the speech, used to detect the language "
        "(one per 5 minutes of speech, at least one).",
    )
    model_idle_unload_s: float = Field(
        900.0, ge=0, description="Unload a model not used for this long (0 keeps models loaded)."
    )


class JobSettings(BaseModel):
    """The job queue and its workers."""

    model_config = ConfigDict(extra="forbid")

    workers: int = Field(
        0,
        ge=0,
        le=64,
        description="Worker processes `serve` starts; 0 picks one per GPU, or two on CPU "
        "(measured best for throughput without slowing a single request).",
    )
    worker_threads: int = Field(
        0,
        ge=0,
        description="CPU threads per worker's model; 0 lets each worker use every core "
        "(engine.cpu_threads, when set, applies too).",
    )
    lease_s: float = Field(
        30.0,
        gt=0,
        description="A claimed job's lease; a worker that stops heart-beating loses the job to "
        "another worker after this long.",
    )
    stall_timeout_s: float = Field(
        900.0,
        gt=0,
        description="A job whose transcription makes no progress for this long (a native call "
        "that hangs) is stopped from outside: its worker is killed and restarted and the job "
        "fails with `processing_timeout`, without retry. Decoding has `audio.decode_timeout_s`.",
    )
    max_attempts: int = Field(
        3, ge=1, le=20, description="Tries per job before it fails (a crash counts as a try)."
    )
    batch_jobs: int = Field(
        8,
        ge=1,
        le=64,
        description="Most queued jobs for the same model a worker takes and transcribes together.",
    )
    queue_max: int = Field(
        256,
        ge=1,
        description="Most queued jobs; past it new requests get 429 with Retry-After.",
    )
    sync_timeout_s: float = Field(
        600.0,
        gt=0,
        description="How long the OpenAI-compatible endpoints wait for their job before 504 "
        "(the job goes on; poll it at /v1/jobs/{id}).",
    )
    result_ttl_s: float = Field(
        7 * 24 * 3600.0,
        gt=0,
        description="How long transcripts are kept after a job ends (default 7 days).",
    )
    keep_audio: bool = Field(
        False,
        description="Keep uploaded audio until the result expires (default: delete it "
        "as soon as the job ends).",
    )
    purge_interval_s: float = Field(
        300.0, gt=0, description="How often expired jobs, results and audio are purged."
    )
    poll_interval_s: float = Field(
        0.5,
        gt=0,
        le=10,
        description="How often an idle worker looks for work when nothing wakes it (workers "
        "started by `serve` are woken as soon as a job is queued; this is the fallback, and what "
        "workers on other nodes use).",
    )


class ServerSettings(BaseModel):
    """The HTTP server."""

    model_config = ConfigDict(extra="forbid")

    host: str = Field("127.0.0.1", description="Address to bind; loopback unless told otherwise.")
    port: int = Field(8000, ge=1, le=65535, description="TCP port.")
    request_timeout_s: float = Field(
        60.0,
        gt=0,
        description="Longest a client may take to send a request body before it is dropped.",
    )
    header_timeout_s: float = Field(
        10.0,
        gt=0,
        le=300,
        description="Longest a client may take to send a request's line and headers; a slower "
        "connection is closed (with 408 if it sent part of them). Stops clients that hold "
        "connections by sending a header line now and then.",
    )
    max_connections: int = Field(
        512,
        ge=1,
        description="Most client connections open at once; one more is closed as soon as it is "
        "accepted. Lowered, with a warning, to what the open-file limit allows (2 descriptors "
        "per connection and 256 for the rest).",
    )
    keep_alive_s: int = Field(
        5,
        ge=1,
        le=300,
        description="How long an idle keep-alive connection is kept open for its next request.",
    )
    tls_cert: Path | None = Field(
        None,
        description="PEM certificate (chain) to serve HTTPS with; `hushscribe tls self-signed` "
        "writes one for a first install. Browsers allow the microphone only over HTTPS (or on "
        "localhost). Set together with `tls_key`.",
    )
    tls_key: Path | None = Field(None, description="PEM private key of `tls_cert`.")

    @model_validator(mode="after")
    def _tls_pair(self) -> ServerSettings:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("server.tls_cert and server.tls_key are set together or not at all")
        return self

    @property
    def tls(self) -> bool:
        return self.tls_cert is not None


class Settings(BaseSettings):
    """All of hushscribe's configuration."""

    model_config = SettingsConfigDict(
        env_prefix="HUSHSCRIBE_",
        env_nested_delimiter="__",
        extra="forbid",
        hide_input_in_errors=True,  # an error must not print an API key it was given
    )

    data_dir: Path = Field(
        Path("/var/lib/hushscribe"),
        description="Where models, jobs and audit data live. Models are in `<data_dir>/models`.",
    )
    audio: AudioLimits = Field(default_factory=AudioLimits, description="Media limits.")
    engine: EngineSettings = Field(default_factory=EngineSettings, description="Model running.")
    models: ModelSettings = Field(
        default_factory=ModelSettings, description="Resident models, budget, fallback aliases."
    )
    jobs: JobSettings = Field(default_factory=JobSettings, description="Queue and workers.")
    streams: StreamSettings = Field(
        default_factory=StreamSettings, description="Live captions (/v1/realtime)."
    )
    server: ServerSettings = Field(default_factory=ServerSettings, description="HTTP server.")
    auth: AuthSettings = Field(default_factory=AuthSettings, description="API access.")
    audit: AuditSettings = Field(default_factory=AuditSettings, description="Audit log.")
    network: NetworkSettings = Field(
        default_factory=NetworkSettings, description="Source-address allowlist."
    )
    database_url: str | None = Field(
        None,
        description="SQLAlchemy URL of the job database; default SQLite at "
        "`<data_dir>/hushscribe.db`. PostgreSQL (`postgresql+psycopg://…`) for several nodes.",
    )
    database_auto_upgrade: bool | None = Field(
        None,
        description="Whether each hushscribe process upgrades the database schema when it "
        "starts. Unset: yes on SQLite (one host owns the file), no on PostgreSQL, where a start "
        "only checks it and refuses a database that is behind: run `hushscribe db upgrade` once "
        "before rolling out a new release (a Helm pre-upgrade job, say). True or false applies "
        "to both databases.",
    )

    @property
    def models_dir(self) -> Path:
        """Directory holding one sub-directory per installed model."""
        return self.data_dir / "models"

    @property
    def audit_dir(self) -> Path:
        return self.audit.dir or self.data_dir / "audit"

    @property
    def keys_dir(self) -> Path:
        """Secrets of the service itself (the audit log's HMAC and signing keys)."""
        return self.audit.keys_dir or self.data_dir / "keys"

    @property
    def blobs_dir(self) -> Path:
        """Uploaded audio waiting for (or kept after) its job."""
        return self.data_dir / "blobs"

    @property
    def db_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'hushscribe.db'}"

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


def config_file_from_env() -> Path | None:
    """The config file ``HUSHSCRIBE_CONFIG`` names, if it names one."""
    return _ConfigLocation().config


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
        problems = describe_validation_errors(exc.errors())
        source = f" (config file {path})" if path else ""
        raise ConfigError(f"invalid configuration{source}: {problems}") from None
    except ValueError as exc:  # TOML syntax errors surface as ValueError subclasses
        raise ConfigError(f"cannot read config file {path}: {exc}") from None
    finally:
        _toml_file.reset(token)
