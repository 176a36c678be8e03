"""The baseline a user would replace: a minimal Whisper server as a first prototype is written.

One global faster-whisper model, one request at a time (a lock), no queue, no batching, no limits:
the upload is saved to a temporary file and transcribed. Same model, same options as hushscribe.

    python -m bench.seed_server MODEL_DIR PORT
"""

from __future__ import annotations

import sys
import tempfile
import threading
from pathlib import Path

import uvicorn
from fastapi import FastAPI, UploadFile
from faster_whisper import WhisperModel


def make_app(model_dir: str, threads: int = 0) -> FastAPI:
    model = WhisperModel(model_dir, device="cpu", compute_type="int8", cpu_threads=threads)
    lock = threading.Lock()
    app = FastAPI()

    @app.post("/v1/audio/transcriptions")
    def transcriptions(file: UploadFile) -> dict[str, str]:
        with tempfile.NamedTemporaryFile(suffix=Path(file.filename or "a").suffix) as tmp:
            tmp.write(file.file.read())
            tmp.flush()
            with lock:
                segments, _ = model.transcribe(tmp.name, beam_size=5, vad_filter=True)
                return {"text": "".join(s.text for s in segments)}

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app


if __name__ == "__main__":
    uvicorn.run(make_app(sys.argv[1]), host="127.0.0.1", port=int(sys.argv[2]), log_level="warning")
