"""From an upload to a queued job: parse the form, check the options, enqueue. Shared by the
OpenAI-compatible endpoints (which then wait) and POST /v1/jobs (which returns at once)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from fastapi import Request

from hushscribe.api.network_gate import client_ip
from hushscribe.api.upload import Upload, read_upload
from hushscribe.engine import make_options
from hushscribe.engine.store import ModelStore
from hushscribe.errors import (
    InvalidOption,
    QueueFull,
    RequestTimeout,
    UnknownModel,
)
from hushscribe.jobs.blobs import BlobStore
from hushscribe.jobs.queue import JobQueue, JobRecord
from hushscribe.security.auditing import Auditor
from hushscribe.security.principal import Principal
from hushscribe.settings import Settings
from hushscribe.transcript import FORMATS

OPENAI_ALIASES = ("whisper-1", "gpt-4o-transcribe", "gpt-4o-mini-transcribe")
"""Model names OpenAI clients send by default; they mean "the server's default model"."""
RESPONSE_FORMATS = (*FORMATS, "text")
RETRY_AFTER_S = 5
"""Suggested wait when the queue is full: about one short job's time on one CPU worker."""


def _bool(value: str | None, name: str) -> bool | None:
    if value is None or value == "":
        return None
    lowered = value.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise InvalidOption(f"invalid option: {name}: expected true or false, got {value[:20]!r}")


def _number(value: str | None, name: str, kind: type[int] | type[float]) -> Any:
    if value is None or value == "":
        return None
    try:
        return kind(value)
    except ValueError:
        raise InvalidOption(f"invalid option: {name}: not a number: {value[:20]!r}") from None


def resolve_model(name: str | None, settings: Settings) -> str:
    """The model or alias a request names (OpenAI's names mean the default); an unknown one is
    a 400 that lists what there is."""
    if not name or name in OPENAI_ALIASES:
        return settings.engine.default_model
    if name in settings.models.aliases:
        return name
    installed = ModelStore(settings.models_dir).names()
    if name not in installed:
        available = [*installed, *settings.models.aliases]
        raise UnknownModel(
            f"model '{name[:64]}' is not installed here; available: "
            f"{', '.join(available) or 'none'} (GET /v1/models). An administrator adds one with "
            "`hushscribe models import PATH --name NAME`"
        )
    return name


def options_from_form(form: Upload, task: str) -> dict[str, Any]:
    """OpenAI's form fields (and our extras) → TranscribeOptions values, validated."""
    granularities = form.fields.get("timestamp_granularities[]", []) + form.fields.get(
        "timestamp_granularities", []
    )
    temperature = _number(form.first("temperature"), "temperature", float)
    values: dict[str, Any] = {
        "task": task,
        "language": form.first("language") if task == "transcribe" else None,
        "initial_prompt": form.first("prompt") or None,
        "word_timestamps": "word" in granularities,
        "vad": _bool(form.first("vad"), "vad"),
        "beam_size": _number(form.first("beam_size"), "beam_size", int),
        "hotwords": form.first("hotwords") or None,
        "zh_script": form.first("zh_script") or None,
        "batched": _bool(form.first("batched"), "batched"),
        # OpenAI: 0 (or nothing) means "start at 0 and raise it when decoding fails".
        "temperature": (temperature,) if temperature else None,
        "diarize": _bool(form.first("diarize"), "diarize"),
        **{
            name: _number(form.first(name), name, int)
            for name in ("num_speakers", "min_speakers", "max_speakers")
        },
    }
    options = make_options(**values).model_dump(mode="json", exclude_none=True)
    if not options["diarize"]:
        del options["diarize"]  # as before diarization existed: older workers read the job
    return options


def response_format(form: Upload, default: str = "json") -> str:
    fmt = form.first("response_format") or default
    if fmt not in RESPONSE_FORMATS:
        raise InvalidOption(
            f"invalid option: response_format: {fmt[:20]!r}; "
            f"choose from {', '.join(RESPONSE_FORMATS)}"
        )
    return fmt


def _queue_full(queue_max: int) -> QueueFull:
    return QueueFull(
        f"the queue holds {queue_max} jobs; retry in a little while",
        headers={"Retry-After": str(RETRY_AFTER_S)},
    )


async def accept_upload(
    request: Request, settings: Settings, queue: JobQueue, blobs: BlobStore
) -> Upload:
    """Refuse early when the queue is full, then stream the upload within time and size limits.

    (:func:`enqueue` checks the cap again: uploads that passed here together are queued only
    while there is room.)
    """
    if await asyncio.to_thread(queue.queue_depth) >= settings.jobs.queue_max:
        raise _queue_full(settings.jobs.queue_max)
    try:
        async with asyncio.timeout(settings.server.request_timeout_s):
            return await read_upload(request, blobs, settings.audio.max_bytes)
    except TimeoutError:
        raise RequestTimeout(
            f"the upload took longer than {settings.server.request_timeout_s:.0f} s"
        ) from None


async def enqueue(
    form: Upload,
    who: Principal,
    task: str,
    request: Request,
    check: Callable[[Upload], object] | None = None,
) -> JobRecord:
    """Validate the form (with ``check`` too, for fields only the caller reads), record the
    upload in the audit log, and queue its job; on any error (the audit log unwritable
    included) the uploaded audio is deleted at once and no job exists. Runs in a thread: the
    database may wait seconds for a lock, the audit log syncs to disk, and the event loop must
    not wait for either."""
    state = request.app.state
    address = client_ip(request)
    return await asyncio.to_thread(
        _enqueue, form, who, address, task, state.settings, state.queue, state.blobs,
        state.auditor, check,
    )  # fmt: skip


def _enqueue(
    form: Upload,
    who: Principal,
    address: str,
    task: str,
    settings: Settings,
    queue: JobQueue,
    blobs: BlobStore,
    auditor: Auditor,
    check: Callable[[Upload], object] | None,
) -> JobRecord:
    assert form.blob is not None
    try:
        if check is not None:
            check(form)
        options = options_from_form(form, task)
        model = resolve_model(form.first("model"), settings)
        job = queue.enqueue(
            owner=who.user_id,
            task=task,
            model=model,
            options=options,
            blob_path=str(form.blob.path),
            blob_sha256=form.blob.sha256,
            blob_bytes=form.blob.size,
            filename=form.filename,
            max_attempts=settings.jobs.max_attempts,
            queue_max=settings.jobs.queue_max,
        )
        try:
            auditor.event(
                "upload", who, address, job.id, audio_sha256=form.blob.sha256,
                bytes=form.blob.size, filename=form.filename, model=model, task=task,
                language=options.get("language"),
            )  # fmt: skip
        except BaseException:
            queue.delete(job.id, None)  # not recorded, so not done: no worker will find it
            raise
        return job
    except QueueFull:
        blobs.delete(form.blob.path)
        raise _queue_full(settings.jobs.queue_max) from None
    except BaseException:
        blobs.delete(form.blob.path)
        raise
