"""Who spoke: the diarization step that runs after transcription, for a job that asked for it
(``diarize=true``), in a worker or in ``hushscribe transcribe``.

The speaker model is loaded once per process and kept (28 MB, milliseconds per window). A
missing speaker model does not cost the caller the transcript: the job is done, its transcript
unlabelled, with ``diarization_error`` saying which command installs the model. The API refuses a
waiting (synchronous) request that asks for speakers when the model is not installed, before the
upload is queued: :func:`require_speaker_model`.
"""

from __future__ import annotations

import logging
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from hushscribe.errors import HushscribeError
from hushscribe.transcript import Transcript

if TYPE_CHECKING:
    from hushscribe.audio import AudioReader, Samples
    from hushscribe.engine.options import TranscribeOptions
    from hushscribe.engine.speaker_model import SpeakerEncoder
    from hushscribe.settings import Settings

log = logging.getLogger("hushscribe.speakers")

READ_BLOCK_S = 30
"""Audio is read for diarization in blocks of this many seconds."""


def require_speaker_model(models_dir: Path) -> None:
    """Raise :class:`SpeakerModelMissing` (400) unless the speaker model is installed (its
    files are verified when a worker loads it)."""
    from hushscribe.engine.model_files import SPEAKER
    from hushscribe.engine.speaker_model import INSTALL_COMMAND, SPEAKER_MODEL, SpeakerModelMissing
    from hushscribe.engine.store import ModelStore

    try:
        kind = ModelStore(models_dir).info(SPEAKER_MODEL).kind
    except HushscribeError:
        kind = None
    if kind != SPEAKER:
        raise SpeakerModelMissing(
            f"speaker diarization needs the speaker model, which is not installed in "
            f"{models_dir}; install it with `{INSTALL_COMMAND}`"
        )


def read_samples(open_reader: Callable[[], AudioReader], spill_dir: Path | None = None) -> Samples:
    """All of a file's audio, 16 kHz mono float32. With ``spill_dir``, written there block by
    block and mapped back from disk: diarization looks at the whole file (230 MB an hour of
    float32), and a mapped file is memory the kernel can page out, so a 4-hour meeting does not
    hold a gigabyte of a worker's RAM. The file is deleted at once (it lives while mapped)."""
    from hushscribe.audio import SAMPLE_RATE

    with open_reader() as reader:
        blocks = reader.blocks(READ_BLOCK_S * SAMPLE_RATE)
        if spill_dir is None:
            whole = list(blocks)
            return np.concatenate(whole) if whole else np.zeros(0, dtype=np.float32)
        with tempfile.TemporaryFile(dir=spill_dir, prefix="diarize-") as spill:
            for block in blocks:
                spill.write(np.asarray(block, dtype=np.float32).tobytes())
            spill.flush()
            if not spill.tell():
                return np.zeros(0, dtype=np.float32)
            mapped: Samples = np.memmap(spill, dtype=np.float32, mode="r")
            return mapped


class SpeakerStep:
    """Diarize a finished transcript when its options ask for it; the encoder is cached."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._encoder: SpeakerEncoder | None = None
        self._lock = threading.Lock()

    def encoder(self) -> SpeakerEncoder:
        """The loaded speaker model (verified on first load); :class:`SpeakerModelMissing`."""
        from hushscribe.engine.speaker_model import SpeakerEncoder
        from hushscribe.engine.store import ModelStore

        with self._lock:
            if self._encoder is None:
                threads = self.settings.engine.cpu_threads or self.settings.jobs.worker_threads
                store = ModelStore(self.settings.models_dir)
                self._encoder = SpeakerEncoder.load(store, threads=threads)
            return self._encoder

    def apply(
        self,
        transcript: Transcript,
        options: TranscribeOptions,
        samples: Samples | Callable[[], Samples],
    ) -> Transcript:
        """``transcript`` labelled with its speakers; unchanged when diarization was not asked
        for; with ``diarization_error`` when it could not be done (the transcript is kept).
        ``samples``: the audio, or how to read it (only read when it is needed)."""
        if not options.diarize:
            return transcript
        from hushscribe.engine.diarize import DiarizeOptions, diarize, label_transcript

        started = time.perf_counter()
        try:
            encoder = self.encoder()
            wanted = DiarizeOptions(
                num_speakers=options.num_speakers,
                min_speakers=options.min_speakers,
                max_speakers=options.max_speakers,
            )
            audio = samples() if callable(samples) else samples
            # None: diarization's own VAD pass, not the transcription's regions (they join turns
            # across short pauses: 12.2 % DER against 7.7 %, docs/diarization.md)
            turns = diarize(encoder, audio, None, wanted)
            labelled = label_transcript(transcript, turns)
        except HushscribeError as exc:
            log.warning("diarization skipped: %s", exc.message)
            return transcript.model_copy(update={"diarization_error": exc.message})
        except Exception as exc:  # a bug, or out of memory: the transcript is kept all the same
            log.exception("diarization failed; the transcript is kept without speakers")
            why = f"diarization failed ({type(exc).__name__}); the transcript has no speakers"
            return transcript.model_copy(update={"diarization_error": why})
        log.info(
            "diarized %.0f s of audio into %d speakers in %.1f s",
            transcript.duration, len(labelled.speakers or []), time.perf_counter() - started,
        )  # fmt: skip
        return labelled
