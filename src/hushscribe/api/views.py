"""What the API shows of a job: one JSON shape for GET /v1/jobs/{id}, lists and 202 answers."""

from __future__ import annotations

from typing import Any

from hushscribe.jobs.queue import JobRecord


def job_view(job: JobRecord) -> dict[str, Any]:
    queued_s = (job.started_at or job.finished_at or job.updated_at) - job.created_at
    processing_s = (
        (job.finished_at or job.updated_at) - job.started_at if job.started_at is not None else None
    )
    view: dict[str, Any] = {
        "id": job.id,
        "object": "transcription.job",
        "status": job.status,
        "owner": job.owner,
        "task": job.task,
        "model": job.model,
        "model_used": job.model_used,  # after a fallback along an alias's chain
        "filename": job.filename,
        "progress": round(job.progress, 4),
        "audio_seconds": job.audio_seconds,
        "attempts": job.attempts,
        "created_at": job.created_at,
        "started_at": job.started_at,
        "finished_at": job.finished_at,
        "timings": {
            "queued_seconds": round(max(0.0, queued_s), 3),
            "processing_seconds": round(processing_s, 3) if processing_s is not None else None,
        },
        "error": (
            {"code": job.error_code, "message": job.error_message} if job.error_code else None
        ),
        "result_url": f"/v1/jobs/{job.id}/result" if job.status == "done" else None,
    }
    return view
