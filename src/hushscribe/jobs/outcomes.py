"""What becomes of a job's work: its result recorded (audit first, fail closed) and stored, or
its failure; the audio purged; the API told; fallbacks counted."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from hushscribe.audit.log import AuditLog
from hushscribe.engine.fallback import Choice
from hushscribe.errors import AuditUnavailable
from hushscribe.jobs import audited
from hushscribe.jobs.queue import JobQueue, JobRecord
from hushscribe.jobs.signals import WorkerLink
from hushscribe.jobs.stats import Stats
from hushscribe.settings import Settings
from hushscribe.transcript import FallbackRef, Transcript

log = logging.getLogger("hushscribe.worker")


class Outcomes:
    def __init__(
        self,
        settings: Settings,
        worker_id: str,
        queue: JobQueue,
        stats: Stats,
        audit: AuditLog,
        link: WorkerLink | None,
    ) -> None:
        self.settings, self.worker_id, self.queue = settings, worker_id, queue
        self.stats, self.audit, self.link = stats, audit, link

    def chosen(self, result: Transcript, choice: Choice) -> Transcript:
        """The transcript, saying which model was asked for and which were passed over."""
        for step in choice.fallbacks:
            self.stats.fallback(step.reason)
        if choice.requested == choice.model and not choice.fallbacks:
            return result
        steps = [FallbackRef(**s.as_json()) for s in choice.fallbacks]
        model = result.model.model_copy(update={"requested": choice.requested, "fallbacks": steps})
        return result.model_copy(update={"model": model})

    def done(
        self, job: JobRecord, transcript_json: str, audio_seconds: float | None, elapsed: float
    ) -> None:
        """Record it, store the result (refused if the lease was lost meanwhile), purge the
        audio, count it. Unrecorded, it is not stored: the job goes back to the queue."""
        try:
            self.audit.append(audited.done(
                job, transcript_json, audio_seconds, elapsed, self.settings.audit.include_text
            ))  # fmt: skip
        except AuditUnavailable as exc:
            log.error("job %s: %s; it goes back to the queue", job.id, exc.message)
            self.queue.fail(job.id, self.worker_id, exc.code, exc.message, retry=True)
            self.ended(job)
            return
        used = json.loads(transcript_json).get("model", {}).get("name")
        if self.queue.complete(
            job.id, self.worker_id, transcript_json, self.settings.jobs.result_ttl_s,
            audio_seconds=audio_seconds, model_used=used,
        ):  # fmt: skip
            self.purge_audio(job)
            self.stats.job_done(audio_seconds or 0.0, elapsed)
            log.info("job %s done by %s with %s in %.1f s", job.id, self.worker_id, used, elapsed)
        self.ended(job)

    def ended(self, job: JobRecord) -> None:
        if self.link is not None:
            self.link.job_ended(job.id)

    def failed(self, job: JobRecord, code: str, message: str, retry: bool) -> None:
        final = self.queue.fail(
            job.id,
            self.worker_id,
            code,
            message,
            retry=retry,
            ttl_s=self.settings.jobs.result_ttl_s,
        )
        if final:
            self.purge_audio(job)
            try:
                self.audit.append(audited.failed(job, code))
            except AuditUnavailable as exc:  # the failure stands; say so where it can be seen
                log.error("job %s failed (%s) and %s", job.id, code, exc.message)
        self.ended(job)  # ended for good, or back in the queue: either way a waiter looks again

    def purge_audio(self, job: JobRecord) -> None:
        if not self.settings.jobs.keep_audio:
            Path(job.blob_path).unlink(missing_ok=True)
