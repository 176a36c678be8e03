"""Settings of which models stay in memory and what a worker uses when a model cannot serve:
preloading, how many stay resident, a memory budget, and aliases with fallback chains. Part of
:class:`hushscribe.settings.Settings` (``models``)."""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict, Field, field_validator

_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")  # the model store's names


def _check_name(name: str) -> str:
    if not _NAME.match(name):
        raise ValueError(f"{name[:80]!r} is not a model name (a-z, 0-9, '.', '_', '-')")
    return name


class ModelAlias(BaseModel):
    """A name clients ask for, served by the first of its models that can serve now."""

    model_config = ConfigDict(extra="forbid")

    models: list[str] = Field(
        min_length=1,
        description='Installed models in order of preference, e.g. `["large-v3", "medium", '
        '"small"]`: a worker takes the next one when a model cannot be loaded (missing, '
        "damaged, out of memory, over `memory_budget_mb`) or the device runs out of memory "
        "during a job (retried once with the next model).",
    )
    queue_wait_s: float | None = Field(
        None,
        gt=0,
        description="A job that waited longer than this in the queue skips the first model "
        "(the large, slow one) for the next. Unset: waiting never changes the model.",
    )

    @field_validator("models")
    @classmethod
    def _names(cls, value: list[str]) -> list[str]:
        for name in value:
            _check_name(name)
        if len(set(value)) != len(value):
            raise ValueError("a model is listed twice")
        return value


class ModelSettings(BaseModel):
    """Which models are resident in each worker, and the fallback chains."""

    model_config = ConfigDict(extra="forbid")

    preload: list[str] = Field(
        default_factory=list,
        description="Models (or aliases) each worker loads at start besides the default and "
        "keeps loaded: the first request for them does not wait for a load.",
    )
    max_resident: int = Field(
        3,
        ge=1,
        le=32,
        description="Most models one worker keeps loaded: loading another first unloads the "
        "least recently used idle one. A model in use is never unloaded.",
    )
    memory_budget_mb: int | None = Field(
        None,
        ge=1,
        description="Memory one worker may give to models (sum of their files' sizes, the "
        "estimate used): idle models are unloaded to make room, and a model that still does "
        "not fit is not loaded (its alias falls back). Unset: no budget.",
    )
    aliases: dict[str, ModelAlias] = Field(
        default_factory=dict,
        description="Names with a fallback chain, e.g. `[models.aliases.accurate]` with "
        '`models = ["large-v3", "medium", "small"]`. Requests and `engine.default_model` may '
        "name an alias; results record the model actually used and why it fell back.",
    )

    @field_validator("preload")
    @classmethod
    def _preload(cls, value: list[str]) -> list[str]:
        return [_check_name(n) for n in value]

    @field_validator("aliases")
    @classmethod
    def _alias_names(cls, value: dict[str, ModelAlias]) -> dict[str, ModelAlias]:
        for name in value:
            _check_name(name)
        return value

    def chain(self, name: str) -> list[str]:
        """The models that serve ``name``: an alias's chain, else the model itself."""
        alias = self.aliases.get(name)
        return list(alias.models) if alias is not None else [name]
