"""Durable jobs for long files: submit, watch, fetch the result, cancel or delete."""

from __future__ import annotations

import mimetypes
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import FileResponse, JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from hushscribe.api.access import Caller
from hushscribe.api.deps import BlobsDep, QueueDep, SettingsDep, audit
from hushscribe.api.network_gate import client_ip
from hushscribe.api.routes_audio import failed_job_response, rendered
from hushscribe.api.submit import accept_upload, enqueue
from hushscribe.api.views import job_view
from hushscribe.engine.options import MAX_SPEAKERS
from hushscribe.errors import AudioNotRetained, InvalidOption, JobNotDone, JobNotFound
from hushscribe.transcript import FORMATS, Transcript, rename_speakers

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])

MAX_PAGE = 100


def _not_found(job_id: str) -> JobNotFound:
    # The same answer for "no such job" and "someone else's job": ids are not an oracle.
    return JobNotFound(f"no job {job_id[:64]!r}")


@router.post("", status_code=202)
async def submit(
    request: Request, who: Caller, settings: SettingsDep, queue: QueueDep, blobs: BlobsDep
) -> JSONResponse:
    """Queue a transcription (form field ``task=translate`` for English translation)."""
    form = await accept_upload(request, settings, queue, blobs)
    task = form.first("task") or "transcribe"  # checked with the other options by enqueue
    job = await enqueue(form, who, task, request)
    request.app.state.notify_work()
    return JSONResponse(job_view(job), status_code=202, headers={"Location": f"/v1/jobs/{job.id}"})


@router.get("")
def list_jobs(
    who: Caller,
    queue: QueueDep,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 20,
    after: Annotated[str | None, Query(max_length=64)] = None,
) -> dict[str, Any]:
    """The caller's jobs (an admin's: everyone's), newest first; ``after=<last id>`` pages on."""
    page = queue.list(who, limit=limit + 1, after=after)
    data = [job_view(j) for j in page[:limit]]
    return {
        "object": "list",
        "data": data,
        "has_more": len(page) > limit,
        "last_id": data[-1]["id"] if data else None,
    }


@router.get("/{job_id}")
def get_job(job_id: str, who: Caller, queue: QueueDep) -> dict[str, Any]:
    job = queue.get(job_id, who)
    if job is None:
        raise _not_found(job_id)
    view = job_view(job)
    result = queue.result(job_id, who) if job.status == "done" else None  # its owner's view
    if result is not None:  # why it fell back is in the result, its owner's to read
        transcript = Transcript.model_validate_json(result)
        view["fallbacks"] = [f.model_dump() for f in transcript.model.fallbacks]
        if transcript.speakers is not None:
            view["speakers"] = [sp.model_dump() for sp in transcript.speakers]
        if transcript.diarization_error:  # asked for, not done: the transcript stands
            view["diarization_error"] = transcript.diarization_error
    return view


# A speaker id is "Speaker N"; a name is cleaned and held to 80 characters when it is stored
# (transcript.clean_speaker_name): these bounds only keep a hostile body from being processed.
SpeakerId = Annotated[str, StringConstraints(max_length=32)]
SpeakerName = Annotated[str, StringConstraints(max_length=400)]


class SpeakerNames(BaseModel):
    """``{"names": {"Speaker 1": "Alice"}}``: a speaker's id → the name every format shows."""

    model_config = ConfigDict(extra="forbid")

    names: dict[SpeakerId, SpeakerName] = Field(min_length=1, max_length=MAX_SPEAKERS)


@router.patch("/{job_id}/speakers")
def name_speakers(
    request: Request, job_id: str, body: SpeakerNames, who: Caller, queue: QueueDep
) -> dict[str, Any]:
    """Name the speakers of a done job (its owner, or an admin); recorded in the audit log
    before it is stored. An admin is shown only the speakers they named."""
    job = queue.get(job_id, who)  # its owner, or (its metadata) an admin
    if job is None:
        raise _not_found(job_id)
    if job.status != "done":
        raise JobNotDone(f"job {job_id} is {job.status}; speakers are named once it is done")
    auditor, address = audit(request), client_ip(request)

    def change(current: str) -> str:
        renamed = rename_speakers(Transcript.model_validate_json(current), body.names)
        # Ids only: names are what was said about people, and stay with the transcript.
        auditor.event("speakers_renamed", who, address, job_id, speakers=sorted(body.names))
        return renamed.model_dump_json()

    try:
        stored = queue.change_result(job_id, job.owner, change)
    except ValueError as exc:
        raise InvalidOption(f"invalid option: names: {exc}") from None
    if stored is None:
        raise _not_found(job_id)
    speakers = Transcript.model_validate_json(stored).speakers or []
    own = job.owner == who.user_id
    shown = [sp.model_dump() for sp in speakers if own or sp.id in body.names]
    return {"id": job_id, "object": "transcription.speakers", "speakers": shown}


@router.get("/{job_id}/result")
def get_result(
    request: Request,
    job_id: str,
    who: Caller,
    queue: QueueDep,
    format: Annotated[str, Query()] = "json",
) -> Response:
    if format not in (*FORMATS, "text"):
        raise InvalidOption(f"invalid option: format: choose from {', '.join(FORMATS)}")
    job = queue.get(job_id, who, content=True)
    if job is None:
        raise _not_found(job_id)
    if job.status in ("failed", "cancelled"):
        return failed_job_response(job)
    result = queue.result(job_id, who) if job.status == "done" else None
    if result is None:
        raise JobNotDone(f"job {job_id} is {job.status} ({job.progress:.0%}); try again later")
    audit(request).event("result_read", who, client_ip(request), job_id, format=format)
    return rendered(result, format)


@router.get("/{job_id}/audio")
def get_audio(
    request: Request, job_id: str, who: Caller, queue: QueueDep, blobs: BlobsDep
) -> FileResponse:
    """The job's audio while it is kept (``jobs.keep_audio``), for playing a segment back;
    ranges are served, so a player can seek without fetching the whole file."""
    job = queue.get(job_id, who, content=True)
    if job is None:
        raise _not_found(job_id)
    path = blobs.existing(job.blob_path)
    if path is None:
        raise AudioNotRetained(f"the audio of job {job_id} is not kept (jobs.keep_audio is off)")
    if "range" not in request.headers or request.headers["range"].startswith("bytes=0-"):
        # one record per playback, not one per range a player asks for while seeking
        audit(request).event("result_read", who, client_ip(request), job_id, format="audio")
    media_type = mimetypes.guess_type(job.filename or "")[0] or "application/octet-stream"
    return FileResponse(path, media_type=media_type, content_disposition_type="inline")


@router.delete("/{job_id}")
def delete_job(
    request: Request,
    job_id: str,
    who: Caller,
    settings: SettingsDep,
    queue: QueueDep,
    blobs: BlobsDep,
) -> dict[str, Any]:
    """Cancel a queued or running job; delete (and purge) one that has ended."""
    owner = who.user_id
    job = queue.get(job_id, owner, content=True)
    if job is None:
        raise _not_found(job_id)
    # Recorded first: a deletion or cancellation the audit log cannot take is not done.
    kind = "job_deleted" if job.terminal else "job_cancelled"
    audit(request).event(kind, who, client_ip(request), job_id)
    if not job.terminal:
        cancelled = queue.cancel(job_id, owner, ttl_s=settings.jobs.result_ttl_s)
        if cancelled is not None:
            blobs.delete(cancelled.blob_path) if not settings.jobs.keep_audio else None
            return job_view(cancelled)
    blob = queue.delete(job_id, owner)
    if blob is None:
        raise _not_found(job_id)
    blobs.delete(blob)
    return {"id": job_id, "object": "transcription.job", "deleted": True}
