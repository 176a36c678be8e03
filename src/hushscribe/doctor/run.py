"""All of the doctor's checks, in the order the report lists them, each isolated."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from hushscribe.doctor import engine, files, network, tls
from hushscribe.doctor.base import Check, ProgressFactory, isolated, no_progress
from hushscribe.settings import Settings


def checks(
    settings: Settings, *, quick: bool = False, progress: ProgressFactory = no_progress
) -> list[tuple[str, Callable[[], Check | list[Check]]]]:
    """``(name, check)`` pairs; the name labels the FAIL row should the check itself break."""
    return [
        ("models", partial(engine.models, settings, quick, progress)),
        ("default model", partial(engine.default_model, settings)),
        ("GPU / CUDA", partial(engine.gpu, settings)),
        ("media decoders", engine.media_decoders),
        ("test transcription", partial(engine.trial_transcription, settings)),
        ("data directory", partial(files.data_directory, settings)),
        ("key files", partial(files.key_files, settings)),
        ("database", partial(files.database, settings)),
        ("TLS", partial(tls.tls, settings)),
        ("bind address", partial(network.bind_address, settings)),
        ("egress guard", partial(network.egress_guard, settings)),
        ("default route", network.default_route),
        ("proxy variables", partial(network.proxy_variables, settings)),
    ]


def run(
    settings: Settings, *, quick: bool = False, progress: ProgressFactory = no_progress
) -> list[Check]:
    """Every check's rows; a check that raises is a FAIL row of its own and the rest still run."""
    rows: list[Check] = []
    for name, check in checks(settings, quick=quick, progress=progress):
        rows += isolated(name, check)
    return rows
