"""The baseline a user would replace: a minimal Whisper server as a first prototype is written.

One global faster-whisper model, one request at a time (a lock), no queue, no batching, no limits:
the upload is saved to a temporary file and transcribed. Same model, same options as hushscribe.

    python -m bench.seed_server MODEL_DIR PORT [cpu|cuda]
"""

from __future__ import annotations

import sys
import tempfile
import threading
from pathlib import Path

import uvicorn
from fastapi import FastAPI, UploadFile

from bench.common import plain_model


def make_app(model_dir: str, device: str = "cpu") -> FastAPI:
    model = plain_model(Path(model_dir), device)
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
    app = make_app(sys.argv[1], sys.argv[3] if len(sys.argv) > 3 else "cpu")
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[2]), log_level="warning")
