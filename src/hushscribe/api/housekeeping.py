"""The API's periodic housekeeping: expired jobs, and audio that nothing needs any more.

Audio is the most sensitive thing the service holds, so none may outlive its use: expired jobs
take their results and audio with them; the partial upload of a server killed mid-request is
removed; and so is a complete upload that no job needs — one whose job was never recorded
(the server died between storing the file and queueing the job), or whose job ended without its
worker deleting it (the worker was killed). Only files untouched for ``max_age`` are considered,
so an upload still on its way to the queue is never taken.
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

from hushscribe.jobs.blobs import BlobStore
from hushscribe.jobs.queue import JobQueue
from hushscribe.settings import Settings

log = logging.getLogger("hushscribe.api")

UNTOUCHED_S = 3600.0
"""A live upload is written at least every ``request_timeout_s`` (or dropped and removed by its
request) and queued right after: a file untouched for an hour is no upload in progress."""


def max_age(settings: Settings) -> float:
    return max(UNTOUCHED_S, 2 * settings.server.request_timeout_s)


def sweep(queue: JobQueue, blobs: BlobStore, settings: Settings, now: float) -> dict[str, int]:
    """One round; returns how many of each kind were removed."""
    expired = 0
    for path in queue.purge_expired(now):
        expired += blobs.delete(Path(path))
    age = max_age(settings)
    partial = blobs.sweep_partials(age, now)
    stale = blobs.finished_before(age, now)
    needed = queue.blobs_in_use([str(p) for p in stale], ended=settings.jobs.keep_audio)
    orphaned = sum(blobs.delete(p) for p in stale if str(p) not in needed)
    if partial or orphaned:
        log.warning("removed %d partial upload(s) and %d unneeded audio file(s)", partial, orphaned)
    return {"expired": expired, "partial": partial, "orphaned": orphaned}


async def run(queue: JobQueue, blobs: BlobStore, settings: Settings) -> None:
    """:func:`sweep` every ``purge_interval_s`` until cancelled."""
    while True:
        try:
            await asyncio.to_thread(sweep, queue, blobs, settings, time.time())
        except Exception:
            log.exception("housekeeping failed; trying again next interval")
        await asyncio.sleep(settings.jobs.purge_interval_s)
