"""Housekeeping leaves no audio that nothing needs: expired, orphaned, partial, unneeded."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from hushscribe.api import housekeeping
from hushscribe.jobs.blobs import BlobStore
from hushscribe.jobs.queue import JobQueue, make_engine
from hushscribe.settings import Settings, load_settings

HOUR = 3600.0


def settings_for(tmp_path: Path, keep_audio: bool) -> Settings:
    return load_settings(None, data_dir=tmp_path, jobs={"keep_audio": keep_audio})


def blob(blobs: BlobStore, name: str, age_s: float, now: float) -> Path:
    path = blobs.write_stream([f"RIFF {name}".encode()], 1024).path
    os.utime(path, (now - age_s, now - age_s))
    return path


def partial(blobs: BlobStore, name: str, age_s: float, now: float) -> Path:
    path = blobs.root / f".{name}.part"
    path.write_bytes(b"RIFF half")
    os.utime(path, (now - age_s, now - age_s))
    return path


def job(queue: JobQueue, path: Path) -> str:
    return queue.enqueue("alice", "transcribe", "base", {}, str(path), "0" * 64, 9, "a.wav").id


@pytest.mark.parametrize("keep_audio", [False, True])
def test_sweep_removes_exactly_the_audio_nothing_needs(tmp_path: Path, keep_audio: bool) -> None:
    settings = settings_for(tmp_path, keep_audio)
    queue = JobQueue(make_engine(settings.db_url), ended_ttl_s=HOUR)
    blobs = BlobStore(settings.blobs_dir)
    now = time.time()
    running = blob(blobs, "running", 2 * HOUR, now)
    running_id = job(queue, running)
    ended = blob(blobs, "ended", 2 * HOUR, now)
    ended_id = job(queue, ended)
    assert {j.id for j in queue.claim("w1", 60, limit=2)} == {running_id, ended_id}
    assert queue.fail(ended_id, "w1", "internal_error", "killed", retry=False)
    queued = blob(blobs, "queued", 2 * HOUR, now)  # waited in the queue for two hours
    queued_id = job(queue, queued)
    assert sorted(j.status for j in queue.list("alice")) == ["failed", "queued", "running"]
    assert queue.get(queued_id, None) is not None
    orphan = blob(blobs, "orphan", 2 * HOUR, now)  # the server died before queueing its job
    arriving = blob(blobs, "arriving", 5.0, now)  # stored, its job not queued yet
    crashed = partial(blobs, "crashed", 2 * HOUR, now)
    live = partial(blobs, "live", 5.0, now)

    removed = housekeeping.sweep(queue, blobs, settings, now)

    assert queued.exists() and running.exists(), "a queued or running job needs its audio"
    assert arriving.exists() and live.exists(), "recent files may still be on their way"
    assert not orphan.exists() and not crashed.exists()
    assert ended.exists() is keep_audio, "an ended job's audio stays only with keep_audio"
    assert removed == {"expired": 0, "partial": 1, "orphaned": 1 if keep_audio else 2}


def test_sweep_purges_expired_jobs_with_their_audio(tmp_path: Path) -> None:
    settings = settings_for(tmp_path, keep_audio=True)
    queue = JobQueue(make_engine(settings.db_url), ended_ttl_s=HOUR)
    blobs = BlobStore(settings.blobs_dir)
    now = time.time()
    path = blob(blobs, "done", 60.0, now)
    job_id = job(queue, path)
    assert [j.id for j in queue.claim("w1", 60)] == [job_id]
    assert queue.complete(job_id, "w1", "{}", result_ttl_s=HOUR)
    assert housekeeping.sweep(queue, blobs, settings, now)["expired"] == 0
    assert path.exists() and queue.get(job_id, None) is not None
    assert housekeeping.sweep(queue, blobs, settings, now + 2 * HOUR)["expired"] == 1
    assert not path.exists() and queue.get(job_id, None) is None
