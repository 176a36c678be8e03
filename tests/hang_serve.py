"""``hushscribe serve`` whose workers hang inside a native call on chosen files (tests only).

Worker processes are spawned: each imports this file again as ``__mp_main__``, so the patches
below apply in the workers too. A file uploaded as ``hang-decode…`` blocks in the C library's
``sleep`` while it is decoded, one uploaded as ``hang-model…`` once its transcription has
begun: the GIL is released and the lease thread keeps renewing, exactly as when FFmpeg or
CTranslate2 hang. Only the supervisor's deadline can stop them.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable, Iterator
from typing import Any

from hushscribe.audio import AudioReader
from hushscribe.jobs import worker

_libc = ctypes.CDLL(None)
_blocks = AudioReader.blocks
_transcribe_file = worker.transcribe_file


def _hang() -> None:
    while True:
        _libc.sleep(3600)


def blocks(self: AudioReader, block_samples: int) -> Iterator[Any]:
    if self.name.startswith("hang-decode"):
        _hang()
    return _blocks(self, block_samples)


def transcribe_file(
    model: Any, open_reader: Callable[[], AudioReader], *args: Any, **kwargs: Any
) -> Any:
    with open_reader() as reader:
        name = reader.name
    if name.startswith("hang-model"):
        watch = args[2] if len(args) > 2 else kwargs["watch"]
        watch.transcribing()
        _hang()
    return _transcribe_file(model, open_reader, *args, **kwargs)


AudioReader.blocks = blocks  # type: ignore[method-assign]
worker.transcribe_file = transcribe_file

if __name__ == "__main__":
    from hushscribe.cli import main

    main()
