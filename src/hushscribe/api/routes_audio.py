"""OpenAI-compatible endpoints: /v1/audio/transcriptions, /v1/audio/translations, /v1/models.

A synchronous call is a job the request waits on, so both paths share one queue, one worker pool
and one record of who asked for what. A client that goes away cancels its job; a job that takes
longer than ``jobs.sync_timeout_s`` answers 504 with the job id to poll.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from datetime import datetime
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from hushscribe.api.access import Caller, principal_of
from hushscribe.api.deps import BlobsDep, QueueDep, SettingsDep, audit
from hushscribe.api.network_gate import client_ip
from hushscribe.api.submit import (
    OPENAI_ALIASES,
    accept_upload,
    enqueue,
    options_from_form,
    response_format,
)
from hushscribe.api.upload import Upload
from hushscribe.api.waiters import Waiters
from hushscribe.engine.store import ModelInfo, ModelStore
from hushscribe.errors import (
    ClientGone,
    HushscribeError,
    JobCancelled,
    JobTimeout,
    ModelChecksumMismatch,
    error_body,
    status_for_code,
    type_for_status,
)
from hushscribe.jobs.blobs import BlobStore
from hushscribe.jobs.queue import JobQueue, JobRecord
from hushscribe.jobs.speakers import require_speaker_model
from hushscribe.security.principal import Principal
from hushscribe.settings import Settings
from hushscribe.transcript import MEDIA_TYPES, Transcript, render

router = APIRouter(prefix="/v1", tags=["openai"])

FALLBACK_POLL_S = 0.25
"""Without a wake-up (workers on another machine) a waiting request looks at its job this often."""


async def wait_for_job(
    request: Request, queue: JobQueue, job: JobRecord, timeout_s: float, purge: BlobStore | None
) -> JobRecord:
    """Poll until the job ends; cancel it (and delete its audio with ``purge``) if the client
    disconnects."""
    deadline = time.monotonic() + timeout_s
    waiters: Waiters = request.app.state.waiters
    with waiters.watch(job.id) as ended:
        return await _wait(request, queue, job, deadline, timeout_s, purge, ended)


async def _wait(
    request: Request,
    queue: JobQueue,
    job: JobRecord,
    deadline: float,
    timeout_s: float,
    purge: BlobStore | None,
    ended: asyncio.Event,
) -> JobRecord:
    current: JobRecord | None = job
    while current is not None and not current.terminal:
        if time.monotonic() > deadline:
            raise JobTimeout(
                f"the transcription is still running after {timeout_s:.0f} s; "
                f"poll GET /v1/jobs/{job.id} for its result"
            )
        if await request.is_disconnected():
            gone = functools.partial(
                audit(request).event, "job_cancelled", principal_of(request), client_ip(request),
                job.id, reason="client_gone",
            )  # fmt: skip
            with contextlib.suppress(HushscribeError):  # the client is gone either way
                await asyncio.to_thread(gone)
            await asyncio.to_thread(_cancel, queue, job, purge)
            raise ClientGone(f"the client closed the connection; job {job.id} was cancelled")
        # A worker on this machine says when the job ends; the poll covers workers elsewhere
        # and the disconnect check.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(ended.wait(), FALLBACK_POLL_S)
        ended.clear()
        current = await asyncio.to_thread(queue.get, job.id, job.owner)
    if current is None:
        raise JobTimeout(f"job {job.id} disappeared while it ran")
    return current


def _cancel(queue: JobQueue, job: JobRecord, purge: BlobStore | None) -> None:
    queue.cancel(job.id, job.owner, ttl_s=60.0)  # nobody will read it
    if purge is not None:
        purge.delete(job.blob_path)


def rendered(transcript_json: str, fmt: str) -> Response:
    transcript = Transcript.model_validate_json(transcript_json)
    return Response(render(transcript, fmt), media_type=MEDIA_TYPES[fmt])


def failed_job_response(job: JobRecord) -> JSONResponse:
    if job.status == "cancelled":
        cancelled = JobCancelled(f"job {job.id} was cancelled")
        return JSONResponse(cancelled.body(), status_code=cancelled.status)
    status = status_for_code(job.error_code)
    return JSONResponse(
        error_body(
            job.error_message or f"job {job.status}", type_for_status(status),
            job.error_code or job.status,
        ),
        status_code=status,
    )  # fmt: skip


def _sync_check(settings: Settings, task: str, form: Upload) -> None:
    """What a waiting request must have before its job is queued: a known response format and,
    when it asks who spoke, the speaker model (else 400 ``speaker_model_missing``, not a
    transcript without the speakers it asked for)."""
    response_format(form)
    if options_from_form(form, task).get("diarize"):
        require_speaker_model(settings.models_dir)


async def _sync(
    task: str, request: Request, who: Principal, settings: Settings, queue: JobQueue,
    blobs: BlobStore,
) -> Response:  # fmt: skip
    form = await accept_upload(request, settings, queue, blobs)
    check = functools.partial(_sync_check, settings, task)
    job = await enqueue(form, who, task, request, check=check)
    fmt = response_format(form)  # checked by enqueue
    request.app.state.notify_work()
    purge = None if settings.jobs.keep_audio else blobs
    job = await wait_for_job(request, queue, job, settings.jobs.sync_timeout_s, purge)
    if job.status != "done":
        return failed_job_response(job)
    result = await asyncio.to_thread(queue.result, job.id, who)
    if result is None:
        return failed_job_response(job)
    address = client_ip(request)
    await asyncio.to_thread(audit(request).event, "result_read", who, address, job.id, format=fmt)
    return await asyncio.to_thread(rendered, result, fmt)  # a long meeting's transcript: ms


@router.post("/audio/transcriptions")
async def transcriptions(
    request: Request, who: Caller, settings: SettingsDep, queue: QueueDep, blobs: BlobsDep
) -> Response:
    """Transcribe an audio file (multipart: file, model, language, prompt, response_format,
    temperature, timestamp_granularities[]; extras: vad, beam_size, hotwords, zh_script,
    diarize, num_speakers, min_speakers, max_speakers)."""
    return await _sync("transcribe", request, who, settings, queue, blobs)


@router.post("/audio/translations")
async def translations(
    request: Request, who: Caller, settings: SettingsDep, queue: QueueDep, blobs: BlobsDep
) -> Response:
    """Translate speech in any language into English text."""
    return await _sync("translate", request, who, settings, queue, blobs)


def model_view(info: ModelInfo, model_id: str | None = None) -> dict[str, Any]:
    created = int(datetime.fromisoformat(info.installed_at).timestamp())
    return {
        "id": model_id or info.name,
        "object": "model",
        "created": created,
        "owned_by": "hushscribe",
        "kind": info.kind,  # "whisper", or "speaker" (the diarization model: not for transcribing)
        "multilingual": info.multilingual,
        "size": info.size,  # the Whisper size (tiny … large-v3); on disk: ``bytes``
        "bytes": info.bytes,
        "sha256": info.sha256,
    }


def _loaded_on(request: Request, settings: Settings) -> dict[str, int]:
    """How many live workers hold each model in memory."""
    counts: dict[str, int] = {}
    for worker in request.app.state.registry.alive(within_s=settings.jobs.lease_s):
        for name in worker.models:
            counts[name] = counts.get(name, 0) + 1
    return counts


@router.get("/models")
def list_models(request: Request, settings: SettingsDep) -> dict[str, Any]:
    """Installed models, then aliases: which is the default, which are loaded (on how many
    workers) and, for an alias, its chain."""
    store = ModelStore(settings.models_dir)
    loaded = _loaded_on(request, settings)
    data = [model_view(m) for m in store.list()]
    for model in data:
        model["loaded"] = loaded.get(model["id"], 0)
    for alias, chain in settings.models.aliases.items():
        data.append({
            "id": alias, "object": "model", "created": 0, "owned_by": "hushscribe",
            "alias_of": chain.models, "queue_wait_s": chain.queue_wait_s,
            "loaded": sum(loaded.get(m, 0) for m in chain.models),
        })  # fmt: skip
    for model in data:  # the page puts it first and names it so
        model["default"] = model["id"] == settings.engine.default_model
    return {"object": "list", "data": data}


@router.post("/models/{model_id}/verify")
async def verify_model(
    request: Request, model_id: str, who: Caller, settings: SettingsDep
) -> dict[str, Any]:
    """Hash every file of a model again (admins): ``ok`` and what is wrong."""
    store = ModelStore(settings.models_dir)
    name = settings.engine.default_model if model_id in OPENAI_ALIASES else model_id
    name = settings.models.chain(name)[0]  # an alias: its first model
    store.info(name)  # 404 for a model that is not installed
    try:
        info = await asyncio.to_thread(store.verify, name, use_cache=False)
    except ModelChecksumMismatch as exc:
        failed = functools.partial(
            audit(request).event, "model_verify_failed", who, client_ip(request), name,
            outcome="failed", model=name, code=exc.code, reason=exc.message,
        )  # fmt: skip
        await asyncio.to_thread(failed)
        return {"id": model_id, "ok": False, "problems": [exc.message]}
    return {"id": model_id, "ok": True, "problems": [], "sha256": info.sha256}


@router.get("/models/{model_id}")
def get_model(model_id: str, settings: SettingsDep) -> dict[str, Any]:
    store = ModelStore(settings.models_dir)
    name = settings.engine.default_model if model_id in OPENAI_ALIASES else model_id
    return model_view(store.info(settings.models.chain(name)[0]), model_id)
