"""A worker process: claim jobs, transcribe them, store the results, repeat.

Workers are separate OS processes so that a decoder crash or an out-of-memory kill takes down one
worker, never the API. Every claimed job is held (``holding.py``) with a live lease until the
worker has stored its result or its error; a worker that dies loses its leases and another
worker takes the jobs (a new attempt). Audio is read block by block and long files are
transcribed in windows (``engine/longform.py``), so memory is bounded by settings, not by files.
Before each stage the worker arms its watchdog (``watchdog.py``): a stage stuck in native code is
stopped by the supervisor from outside.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

from hushscribe.audio import SAMPLE_RATE, AudioReader, Samples, probe
from hushscribe.audit.log import AuditLog
from hushscribe.engine import LoadedModel, ModelManager, TranscribeOptions
from hushscribe.engine.batch import Item, transcribe_many
from hushscribe.engine.longform import BLOCK_S, read_head, transcribe_file, watched
from hushscribe.errors import (
    HushscribeError,
    InsufficientStorage,
    is_storage_full,
)
from hushscribe.jobs.holding import Held, Holdings
from hushscribe.jobs.outcomes import Outcomes
from hushscribe.jobs.queue import JobQueue, JobRecord, make_engine
from hushscribe.jobs.registry import WorkerRegistry
from hushscribe.jobs.signals import WorkerLink
from hushscribe.jobs.speakers import SpeakerStep, read_samples
from hushscribe.jobs.stats import Stats
from hushscribe.jobs.streams import StreamServer
from hushscribe.jobs.watchdog import DECODE, PROCESS, Watchdog
from hushscribe.security import egress
from hushscribe.settings import Settings
from hushscribe.transcript import Transcript

log = logging.getLogger("hushscribe.worker")

BACKOFF_START_S = 1.0
BACKOFF_MAX_S = 60.0
"""After a storage or database failure a worker waits before it claims again, doubling up to
a minute, instead of crash-looping on a full disk."""


class Cancelled(Exception):
    """The job was cancelled, or its lease was lost, or the worker is stopping."""


def _release_memory() -> None:
    """Hand freed heap back to the system after a job (glibc keeps it otherwise: an idle worker
    stayed at 1.2 GB after long files)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


class _Watch:
    """The engine's view of one job: stop when told, report progress, keep the watchdog armed."""

    def __init__(self, worker: Worker, held: list[Held]) -> None:
        self.worker, self.held = worker, held
        self.ids = [h.job_id for h in held]

    def check(self) -> None:
        if self.worker.stopping.is_set() or any(h.lost.is_set() for h in self.held):
            raise Cancelled

    def decoding(self) -> None:
        self.check()
        self.worker.arm(DECODE, self.ids)

    def transcribing(self) -> None:
        self.check()
        self.worker.arm(PROCESS, self.ids)

    def progress(self, done: float, total: float) -> None:
        self.check()
        for h in self.held:
            h.progress = min(1.0, done / total) if total else 1.0
            h.audio_seconds = total
        self.worker.arm(PROCESS, self.ids)  # progress: the stall clock starts again


class Worker:
    def __init__(
        self,
        settings: Settings,
        worker_id: str,
        link: WorkerLink | None = None,
        watchdog: Watchdog | None = None,
    ) -> None:
        self.settings = settings
        self.worker_id = worker_id
        self.link = link
        self.watchdog = watchdog
        self.queue = JobQueue(
            make_engine(settings.db_url, upgrade=settings.database_auto_upgrade),
            ended_ttl_s=settings.jobs.result_ttl_s,
        )
        self.registry = WorkerRegistry(self.queue.engine)
        self.stats = Stats(self.queue.engine)
        self.manager = ModelManager(settings)
        self.audit = AuditLog(settings.audit, settings.audit_dir, settings.keys_dir)
        self.outcomes = Outcomes(settings, worker_id, self.queue, self.stats, self.audit, link)
        self.holdings = Holdings(self.queue, worker_id, settings.jobs.lease_s)
        self.streams = StreamServer(settings, worker_id, self.manager)
        self.speakers = SpeakerStep(settings)  # who spoke, after transcription (diarize=true)
        self.stopping = threading.Event()
        self._reported_loads: set[int] = set()
        self._backoff_s = 0.0
        self._default_error: str | None = None

    # --- the loop ------------------------------------------------------------------------------

    def run(self) -> None:
        self.registry.register(self.worker_id, os.getpid(), [])
        threading.Thread(target=self._beat_registry, name="registry", daemon=True).start()
        self.holdings.start()
        self.streams.start()
        self._load_default()
        self.registry.heartbeat(self.worker_id, self.manager.loaded())
        while not self.stopping.is_set():
            try:
                worked = self._step()
            except Exception as exc:  # the database is unreachable or full: wait, do not die
                self._back_off(exc)
                continue
            self._backoff_s = 0.0
            if not worked:
                default = self.settings.engine.default_model
                self.manager.unload_idle(keep=default)  # ready means: can transcribe now
                if not set(self.manager.chain(default)[1]) & set(self.manager.loaded()):
                    self._load_default()  # after an import or a repair; unchanged files: no work
                if self.link is not None:
                    self.link.wait_for_work(self.settings.jobs.poll_interval_s)
                else:
                    self.stopping.wait(self.settings.jobs.poll_interval_s)
        self.streams.stop()
        self.holdings.stop()
        with contextlib.suppress(Exception):
            self.queue.requeue_worker(self.worker_id)
            self.registry.unregister(self.worker_id)

    def _step(self) -> bool:
        if self.streams.active:  # live streams come first: no new file job while one is held
            return False
        claimed = self._claim()
        if len(claimed) == 1:
            self.process(claimed[0])
        elif claimed:
            self.process_batch(claimed)
        if claimed:
            _release_memory()
        return bool(claimed)

    def _back_off(self, exc: Exception) -> None:
        self._backoff_s = min(BACKOFF_MAX_S, max(BACKOFF_START_S, self._backoff_s * 2))
        what = "storage is full" if is_storage_full(exc) else f"{type(exc).__name__}: {exc}"
        log.error("worker %s cannot use the job database (%s); retrying in %.0f s",
                  self.worker_id, what, self._backoff_s)  # fmt: skip
        self.stopping.wait(self._backoff_s)

    def _claim(self) -> list[JobRecord]:
        """One job; with more queued for its model, the short ones that will be batched with it
        (a job the batch would not decode stays in the queue for whoever is free)."""
        jobs = self.settings.jobs
        first = self.queue.claim(self.worker_id, jobs.lease_s, limit=1)
        for job in first:
            self.holdings.hold(job.id)
        if not first or jobs.batch_jobs < 2:
            return first
        try:
            if not self._batchable(first[0]):
                return first
            waiting = self.queue.queued(first[0].model, limit=4 * jobs.batch_jobs)
            ids = [j.id for j in waiting if self._batchable(j)][: jobs.batch_jobs - 1]
            more = self.queue.claim(self.worker_id, jobs.lease_s, ids=ids, limit=len(ids))
        except Exception:  # the job already held must still be run (or its hold never ends)
            log.exception("could not gather a batch; running job %s alone", first[0].id)
            return first
        for job in more:
            self.holdings.hold(job.id)
        return first + more

    def _batchable(self, job: JobRecord) -> bool:
        """Short by its header, and not asked to run alone."""
        if job.options.get("batched") is False:
            return False
        self.arm(DECODE, [job.id])  # a header that hangs the parser is stopped like a decode
        try:
            info = probe(Path(job.blob_path), self.settings.audio)
        except HushscribeError:
            return False  # it fails alone, with its own error
        finally:
            self.disarm()
        limit = self.settings.engine.window_s  # longer audio is transcribed in windows, alone
        return info.duration_s is not None and info.duration_s < limit

    def _load_default(self) -> None:
        """Load the default model before taking work: "ready" means "can transcribe now". A model
        that is missing or damaged does not stop the worker: jobs for other models still run, and
        jobs for this one fail with its error."""
        try:
            for name in dict.fromkeys([*self.settings.models.preload, None]):  # default last
                with self.manager.use_best(name) as (model, _):
                    self._report_load(model)
            self._default_error = None
        except HushscribeError as exc:
            if exc.message != self._default_error:  # said once, not at every poll
                log.error("cannot load the default model: %s", exc.message)
            self._default_error = exc.message

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
            self.stats.model_memory(model.info.name, self.manager.memory().get(model.info.name, 0))

    def arm(self, stage: int, job_ids: list[str]) -> None:
        if self.watchdog is not None:
            s = self.settings
            limit = s.audio.decode_timeout_s if stage == DECODE else s.jobs.stall_timeout_s
            self.watchdog.arm(stage, limit, job_ids)

    def disarm(self) -> None:
        if self.watchdog is not None:
            self.watchdog.disarm()

    # --- one job -------------------------------------------------------------------------------

    def process(self, job: JobRecord) -> None:
        started = time.perf_counter()
        held = self.holdings.hold(job.id)
        try:
            with self._outcome(job, held):
                transcript_json, seconds = self._run(job, held)
                self.outcomes.done(job, transcript_json, seconds, time.perf_counter() - started)
        finally:
            self.holdings.release(job.id)

    @contextlib.contextmanager
    def _outcome(self, job: JobRecord, held: Held) -> Any:
        """Turn whatever ends a job's work into its recorded outcome."""
        try:
            yield
        except Cancelled:
            log.info("job %s cancelled or lease lost; dropping its work", job.id)
            current = self.queue.get(job.id, None)
            if current is not None and current.status == "cancelled":
                self.outcomes.purge_audio(job)
            self.outcomes.ended(job)
        except HushscribeError as exc:
            self.outcomes.failed(job, exc.code, exc.message, retry=False)
        except Exception as exc:
            if is_storage_full(exc):
                error = InsufficientStorage("the server's disk is full; the job will be retried")
                with contextlib.suppress(Exception):  # may fail too: then its lease runs out
                    self.outcomes.failed(job, error.code, error.message, retry=True)
                raise  # the loop backs off
            log.exception("job %s failed unexpectedly", job.id)  # a bug: another try may work
            self.outcomes.failed(job, "internal_error", f"worker error: {type(exc).__name__}", True)
        finally:
            self.disarm()

    def _run(self, job: JobRecord, held: Held) -> tuple[str, float]:
        options = TranscribeOptions.model_validate(job.options)
        path, limits, name = Path(job.blob_path), self.settings.audio, job.filename

        def open_reader() -> AudioReader:
            return AudioReader(path, limits, name)

        def work(model: LoadedModel) -> Transcript:
            self._report_load(model)
            watch = _Watch(self, [held])
            return transcribe_file(model, open_reader, options, self.settings.engine, watch)

        result, choice = self.manager.run(job.model, time.time() - job.created_at, work)
        if held.lost.is_set():
            raise Cancelled
        self.disarm()  # diarization reports no progress: the stall deadline is not for it
        result = self.speakers.apply(
            result, options, lambda: read_samples(open_reader, path.parent)
        )
        return self.outcomes.chosen(result, choice).model_dump_json(), result.duration

    # --- several short jobs in one decode ------------------------------------------------------

    def process_batch(self, batch: list[JobRecord]) -> None:
        """Decode each short job (one at a time, each under its own deadline), transcribe them
        together, then run alone any that turned out too long. Every job stays held until it
        has its outcome."""
        together: list[tuple[JobRecord, Samples, TranscribeOptions]] = []
        alone: list[JobRecord] = []
        try:
            for job in batch:
                held = self.holdings.hold(job.id)
                decided = False
                with self._outcome(job, held):
                    samples = self._decode_short(job, held)
                    if samples is None:
                        alone.append(job)
                    else:
                        options = TranscribeOptions.model_validate(job.options)
                        together.append((job, samples, options))
                    decided = True
                if not decided:  # it has its outcome already (failed, cancelled)
                    self.holdings.release(job.id)
            if self.stopping.is_set():
                return  # the jobs still held go back to the queue as the worker exits
            if len(together) == 1:
                alone.insert(0, together.pop()[0])
            if together:
                self._transcribe_together(together)
            for job in alone:
                if not self.stopping.is_set():
                    self.process(job)
        except BaseException:
            for job in batch:  # storage full, or stopping: no lease outlives the worker's hold
                self.holdings.release(job.id)
            raise

    def _decode_short(self, job: JobRecord, held: Held) -> Samples | None:
        """All of a job's audio, or None once it is longer than a batch takes (run it alone)."""
        watch = _Watch(self, [held])
        limit = int(self.settings.engine.window_s * SAMPLE_RATE)
        watch.decoding()
        with AudioReader(Path(job.blob_path), self.settings.audio, job.filename) as reader:
            head, whole = read_head(watched(reader.blocks(BLOCK_S * SAMPLE_RATE), watch), limit)
        self.disarm()
        return head if whole else None

    def _transcribe_together(
        self, together: list[tuple[JobRecord, Samples, TranscribeOptions]]
    ) -> None:
        started = time.perf_counter()
        ids = [job.id for job, _, _ in together]
        try:
            items = [Item(samples, options) for _, samples, options in together]

            def work(model: LoadedModel) -> list[Transcript | HushscribeError]:
                self._report_load(model)
                self.arm(PROCESS, ids)
                return transcribe_many(model, items, self.settings.engine)

            first = together[0][0]
            results, choice = self.manager.run(first.model, time.time() - first.created_at, work)
            self.disarm()
            elapsed = time.perf_counter() - started
            for (job, samples, options), result in zip(together, results, strict=True):
                lost = self.holdings.lost(job.id)
                if isinstance(result, HushscribeError):
                    self.outcomes.failed(job, result.code, result.message, retry=False)
                elif lost:
                    self.outcomes.ended(job)
                else:
                    seconds = len(samples) / SAMPLE_RATE
                    result = self.speakers.apply(result, options, samples)
                    transcript = self.outcomes.chosen(result, choice).model_dump_json()
                    self.outcomes.done(job, transcript, seconds, elapsed)
        except HushscribeError as exc:  # e.g. the model cannot be loaded: each job fails with it
            for job, _, _ in together:
                self.outcomes.failed(job, exc.code, exc.message, retry=False)
        except Exception as exc:
            if is_storage_full(exc):
                raise
            log.exception("batch of %d jobs failed unexpectedly", len(together))
            for job, _, _ in together:
                self.outcomes.failed(
                    job, "internal_error", f"worker error: {type(exc).__name__}", True
                )
        finally:
            self.disarm()
            for job_id in ids:
                self.holdings.release(job_id)


def worker_main(
    settings: Settings,
    worker_id: str,
    link: WorkerLink | None = None,
    watchdog: Watchdog | None = None,
    gpu: int | None = None,
) -> None:
    """Entry point of a worker process (spawned by the supervisor), on GPU ``gpu`` if given."""
    if gpu is not None:  # before the first CUDA call, which reads it
        os.environ["CUDA_VISIBLE_DEVICES"] = str(gpu)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s worker %(message)s")
    logging.getLogger("faster_whisper").setLevel(logging.WARNING)  # one line per job is enough
    egress.apply(settings)  # a spawned process: the guard of `hushscribe serve`, again
    if link is not None:
        link.start()
    worker = Worker(settings, worker_id, link, watchdog)
    egress.report_to(egress.reporter_for(worker.audit))

    def _stop(signum: int, _frame: Any) -> None:
        worker.stopping.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the supervisor, which stops us
    worker.run()
