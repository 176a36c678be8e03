"""The audit records of a job's outcome, written by the worker that produced it.

A result is recorded before it is stored: a worker that cannot write the record puts the job
back in the queue instead of releasing an unrecorded transcript (fail closed)."""

from __future__ import annotations

import json
from typing import Any

from hushscribe.audit.events import Actor, AuditEvent, TranscriptionDone, TranscriptionFailed
from hushscribe.jobs.tables import JobRecord


def _actor(job: JobRecord) -> Actor:
    """The job's owner, on whose behalf the worker acted."""
    return Actor(user=None, user_id=job.owner, key_id=None, method="worker")


def _job_details(job: JobRecord) -> dict[str, Any]:
    return {
        "audio_sha256": job.blob_sha256,
        "bytes": job.blob_bytes,
        "filename": job.filename,
        "model": job.model,
        "task": job.task,
        "attempts": job.attempts,
    }


def done(
    job: JobRecord,
    transcript_json: str,
    audio_seconds: float | None,
    processing_s: float,
    include_text: bool,
) -> AuditEvent:
    transcript = json.loads(transcript_json)
    model = transcript.get("model") or {}
    fallbacks = model.get("fallbacks") or []
    details = {
        **_job_details(job),
        "duration_s": round(audio_seconds, 3) if audio_seconds is not None else None,
        "processing_s": round(processing_s, 3),
        "language": transcript.get("language"),
        "model": model.get("name") or job.model,  # the model that did it, after any fallback
        "model_sha256": model.get("sha256"),
        "requested_model": job.model if model.get("name") not in (None, job.model) else None,
        "fallbacks": [f"{f['model']}:{f['reason']}" for f in fallbacks] or None,
        "segments": len(transcript.get("segments") or []),
    }
    if include_text:
        details |= {"text": transcript.get("text", ""), "text_included": True}
    kept = {k: v for k, v in details.items() if v is not None}
    return TranscriptionDone(actor=_actor(job), target=job.id, details=kept)


def failed(job: JobRecord, code: str, processing_s: float | None = None) -> AuditEvent:
    details = {**_job_details(job), "code": code, "processing_s": processing_s}
    kept = {k: v for k, v in details.items() if v is not None}
    return TranscriptionFailed(actor=_actor(job), target=job.id, outcome="failed", details=kept)
