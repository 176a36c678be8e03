"""A worker process: claim a job, decode its audio, transcribe it, store the result, repeat.

Workers are separate OS processes so that a decoder crash or an out-of-memory kill takes down one
worker, never the API. A job is held by a lease that a background thread renews while the job
runs; if the worker dies, the lease runs out and another worker takes the job (a new attempt).
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

from hushscribe import audio
from hushscribe.audio import DecodedAudio
from hushscribe.engine import LoadedModel, ModelManager, TranscribeOptions, transcribe
from hushscribe.engine.batch import Item, transcribe_many
from hushscribe.errors import HushscribeError
from hushscribe.jobs.queue import JobQueue, JobRecord, make_engine
from hushscribe.jobs.registry import WorkerRegistry
from hushscribe.jobs.signals import Signals
from hushscribe.jobs.stats import Stats
from hushscribe.settings import Settings

log = logging.getLogger("hushscribe.worker")

MODEL_RETRY_S = 2.0
"""How often a worker whose default model cannot be loaded tries again."""


class Cancelled(Exception):
    """The job was cancelled, or its lease was lost, while it ran."""


class _Lease(threading.Thread):
    """Renews one job's lease and reports progress until stopped."""

    def __init__(self, queue: JobQueue, job: JobRecord, worker_id: str, lease_s: float) -> None:
        super().__init__(name=f"lease-{job.id[:8]}", daemon=True)
        self.queue, self.job, self.worker_id, self.lease_s = queue, job, worker_id, lease_s
        self.progress = 0.0
        self.audio_seconds: float | None = None
        self.lost = threading.Event()
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.wait(self.lease_s / 3):
            self.beat()

    def beat(self) -> None:
        try:
            held = self.queue.heartbeat(
                self.job.id, self.worker_id, self.lease_s, self.progress, self.audio_seconds
            )
        except Exception:  # a database hiccup: try again at the next beat
            log.exception("heartbeat failed for job %s", self.job.id)
            return
        if not held:
            self.lost.set()

    def stop(self) -> None:
        self._stop_event.set()


class Worker:
    def __init__(self, settings: Settings, worker_id: str, signals: Signals | None = None) -> None:
        self.settings = settings
        self.worker_id = worker_id
        self.signals = signals
        self.queue = JobQueue(make_engine(settings.db_url), ended_ttl_s=settings.jobs.result_ttl_s)
        self.registry = WorkerRegistry(self.queue.engine)
        self.stats = Stats(self.queue.engine)
        self.manager = ModelManager(settings)
        self.stopping = threading.Event()
        self._reported_loads: set[int] = set()

    def run(self) -> None:
        jobs = self.settings.jobs
        self.registry.register(self.worker_id, os.getpid(), [])
        beat = threading.Thread(target=self._beat_registry, name="registry", daemon=True)
        beat.start()
        self._load_default()
        self.registry.heartbeat(self.worker_id, self.manager.loaded())
        while not self.stopping.is_set():
            claimed = self.queue.claim(self.worker_id, jobs.lease_s, limit=1)
            # More queued jobs for the same model share the decode (a read first: no write lock
            # is taken when nothing else waits).
            if claimed and jobs.batch_jobs > 1 and self.queue.queue_depth() > 0:
                claimed += self.queue.claim(
                    self.worker_id, jobs.lease_s, models=[claimed[0].model],
                    limit=jobs.batch_jobs - 1,
                )  # fmt: skip
            if len(claimed) == 1:
                self.process(claimed[0])
            elif claimed:
                self.process_batch(claimed)
            if not claimed:
                self.manager.unload_idle()
                if self.signals is not None:
                    self.signals.wait_for_work(jobs.poll_interval_s)
                else:
                    self.stopping.wait(jobs.poll_interval_s)
        self.queue.requeue_worker(self.worker_id)
        self.registry.unregister(self.worker_id)

    def _load_default(self) -> None:
        """Load the default model before taking work: "ready" means "can transcribe now".

        A model that is missing or damaged is retried (an operator may be importing it);
        meanwhile /readyz says why the service is not ready."""
        name = self.settings.engine.default_model
        while not self.stopping.is_set():
            try:
                with self.manager.use(name) as model:
                    self._report_load(model)
                return
            except HushscribeError as exc:
                log.error("cannot load default model %r: %s; retrying in %.0f s", name,
                          exc.message, MODEL_RETRY_S)  # fmt: skip
                self.stopping.wait(MODEL_RETRY_S)

    def _beat_registry(self) -> None:
        """Say "alive, with these models" while jobs run; readiness reads it."""
        while not self.stopping.wait(self.settings.jobs.lease_s / 3):
            try:
                self.registry.heartbeat(self.worker_id, self.manager.loaded())
            except Exception:
                log.exception("registry heartbeat failed")

    def _report_load(self, model: LoadedModel) -> None:
        if id(model) not in self._reported_loads:
            self._reported_loads.add(id(model))
            self.stats.model_loaded(model.info.name, model.load_seconds)

    def process(self, job: JobRecord, decoded: DecodedAudio | None = None) -> None:
        started = time.perf_counter()
        lease = _Lease(self.queue, job, self.worker_id, self.settings.jobs.lease_s)
        lease.start()
        try:
            transcript_json = self._run(job, lease, decoded)
        except Cancelled:
            log.info("job %s cancelled or lease lost; dropping its work", job.id)
            current = self.queue.get(job.id, None)
            if current is not None and current.status == "cancelled":
                self._purge_audio(job)
            return
        except HushscribeError as exc:
            self._finish_failed(job, exc.code, exc.message, retry=False)
            return
        except Exception as exc:  # a bug or a resource problem: another attempt may succeed
            log.exception("job %s failed unexpectedly", job.id)
            self._finish_failed(job, "internal_error", f"worker error: {type(exc).__name__}", True)
            return
        finally:
            lease.stop()
        elapsed = time.perf_counter() - started
        self._finish_done(job, transcript_json, lease.audio_seconds, elapsed)

    def _run(self, job: JobRecord, lease: _Lease, decoded: DecodedAudio | None) -> str:
        decoded = decoded or audio.decode(Path(job.blob_path), self.settings.audio)
        lease.audio_seconds = decoded.duration_s  # reported with the next heartbeat
        options = TranscribeOptions.model_validate(job.options)

        def progress(done: float, total: float) -> None:
            if lease.lost.is_set() or self.stopping.is_set():
                raise Cancelled
            lease.progress = min(1.0, done / total) if total else 1.0

        with self.manager.use(job.model) as model:
            self._report_load(model)
            result = transcribe(model, decoded.samples, options, self.settings.engine, progress)
        if lease.lost.is_set():
            raise Cancelled
        return result.model_dump_json()

    def process_batch(self, batch: list[JobRecord]) -> None:
        """Decode every job's audio, transcribe the short ones in one batched decode, the rest
        one by one. Each job keeps its own lease, result or error."""
        engine = self.settings.engine
        leases = {
            j.id: _Lease(self.queue, j, self.worker_id, self.settings.jobs.lease_s) for j in batch
        }
        for lease in leases.values():
            lease.start()
        together: list[tuple[JobRecord, DecodedAudio, TranscribeOptions]] = []
        alone: list[tuple[JobRecord, DecodedAudio]] = []
        try:
            for job in batch:
                try:
                    decoded = audio.decode(Path(job.blob_path), self.settings.audio)
                except HushscribeError as exc:
                    self._finish_failed(job, exc.code, exc.message, retry=False)
                    continue
                leases[job.id].audio_seconds = decoded.duration_s
                options = TranscribeOptions.model_validate(job.options)
                short = decoded.duration_s < engine.batched_min_duration_s
                if short and options.batched is not False:
                    together.append((job, decoded, options))
                else:
                    alone.append((job, decoded))
            if len(together) == 1:
                alone.insert(0, together.pop()[:2])
            if together:
                self._transcribe_together(together, leases)
        except Exception as exc:  # a bug or a resource problem: give each job another attempt
            log.exception("batch of %d jobs failed unexpectedly", len(batch))
            for job, *_ in together:
                self._finish_failed(
                    job, "internal_error", f"worker error: {type(exc).__name__}", True
                )
        finally:
            for lease in leases.values():
                lease.stop()
        for job, decoded in alone:
            self.process(job, decoded)

    def _transcribe_together(
        self,
        together: list[tuple[JobRecord, DecodedAudio, TranscribeOptions]],
        leases: dict[str, _Lease],
    ) -> None:
        started = time.perf_counter()
        items = [Item(d.samples, o) for _, d, o in together]
        with self.manager.use(together[0][0].model) as model:
            self._report_load(model)
            results = transcribe_many(model, items, self.settings.engine)
        elapsed = time.perf_counter() - started
        for (job, decoded, _), result in zip(together, results, strict=True):
            if isinstance(result, HushscribeError):
                self._finish_failed(job, result.code, result.message, retry=False)
            elif leases[job.id].lost.is_set():
                self._ended(job)
            else:
                self._finish_done(job, result.model_dump_json(), decoded.duration_s, elapsed)

    def _finish_done(
        self, job: JobRecord, transcript_json: str, audio_seconds: float | None, elapsed: float
    ) -> None:
        """Store the result (refused if the lease was lost meanwhile), purge the audio, count it."""
        if self.queue.complete(
            job.id, self.worker_id, transcript_json, self.settings.jobs.result_ttl_s,
            audio_seconds=audio_seconds,
        ):  # fmt: skip
            self._purge_audio(job)
            self.stats.job_done(audio_seconds or 0.0, elapsed)
        self._ended(job)

    def _ended(self, job: JobRecord) -> None:
        if self.signals is not None:
            self.signals.job_ended(job.id)

    def _finish_failed(self, job: JobRecord, code: str, message: str, retry: bool) -> None:
        final = self.queue.fail(
            job.id,
            self.worker_id,
            code,
            message,
            retry=retry,
            ttl_s=self.settings.jobs.result_ttl_s,
        )
        if final:
            self._purge_audio(job)
        self._ended(job)  # ended for good, or back in the queue: either way a waiter looks again

    def _purge_audio(self, job: JobRecord) -> None:
        if not self.settings.jobs.keep_audio:
            Path(job.blob_path).unlink(missing_ok=True)


def worker_main(settings: Settings, worker_id: str, signals: Signals | None = None) -> None:
    """Entry point of a worker process (spawned by the supervisor)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s worker %(message)s")
    logging.getLogger("faster_whisper").setLevel(logging.WARNING)  # one line per job is enough
    worker = Worker(settings, worker_id, signals)

    def _stop(signum: int, _frame: Any) -> None:
        worker.stopping.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the supervisor, which stops us
    worker.run()
