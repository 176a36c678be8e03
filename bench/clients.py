"""What the service benchmarks share: a service started with its default settings, N clients
posting real clips for a while, and the durable-job round trip (POST /v1/jobs, poll, result)."""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
from tests.service import Service, service_data_dir

from hushscribe.settings import JobSettings

Post = Callable[[httpx.Client, Path], float]
TERMINAL = ("done", "failed", "cancelled")


def default_service(root: Path, models_dir: Path, model: str, device: str) -> Service:
    """``hushscribe serve`` as shipped: default workers (two on CPU), 30 s lease, default worker
    poll and every core per model; only the model and the device are chosen. (The test fixture's
    own choices — one worker, 3 s lease, 2 threads, 50 ms poll — are put back to the defaults.)"""
    return Service(
        service_data_dir(root, models_dir),
        env={
            "HUSHSCRIBE_ENGINE__DEFAULT_MODEL": model,
            "HUSHSCRIBE_ENGINE__DEVICE": device,
            "HUSHSCRIBE_ENGINE__CPU_THREADS": "0",
            "HUSHSCRIBE_JOBS__WORKERS": "0",
            "HUSHSCRIBE_JOBS__LEASE_S": "30",
            "HUSHSCRIBE_JOBS__POLL_INTERVAL_S": str(JobSettings().poll_interval_s),
        },
    )


def transcribe_text(
    c: httpx.Client, path: Path, data: dict[str, str] | None = None
) -> tuple[float, str]:
    """POST /v1/audio/transcriptions (json): (seconds taken, text)."""
    started = time.perf_counter()
    with path.open("rb") as fh:
        r = c.post("/v1/audio/transcriptions", files={"file": (path.name, fh)}, data=data or {})
    r.raise_for_status()
    return time.perf_counter() - started, str(r.json()["text"])


def submit_job(c: httpx.Client, path: Path, data: dict[str, str] | None = None) -> str:
    with path.open("rb") as fh:
        r = c.post("/v1/jobs", files={"file": (path.name, fh)}, data=data or {})
    r.raise_for_status()
    return str(r.json()["id"])


def wait_job(c: httpx.Client, job_id: str, poll_s: float = 0.5, timeout: float = 6 * 3600) -> Any:
    """Poll GET /v1/jobs/{id} until the job ends; its last view."""
    deadline = time.monotonic() + timeout
    while True:
        r = c.get(f"/v1/jobs/{job_id}")
        r.raise_for_status()
        view = r.json()
        if view["status"] in TERMINAL:
            return view
        if time.monotonic() > deadline:
            raise TimeoutError(f"job {job_id} still {view['status']} after {timeout} s")
        time.sleep(poll_s)


def job_round_trip(
    c: httpx.Client, path: Path, data: dict[str, str] | None = None, poll_s: float = 0.5
) -> dict[str, Any]:
    """Submit, wait, fetch the text: {"text", "wall_s", "view"}; text is None if the job failed."""
    started = time.perf_counter()
    job_id = submit_job(c, path, data)
    view = wait_job(c, job_id, poll_s)
    text = None
    if view["status"] == "done":
        r = c.get(f"/v1/jobs/{job_id}/result", params={"format": "json"})
        r.raise_for_status()
        text = str(r.json()["text"])
    return {"text": text, "wall_s": time.perf_counter() - started, "view": view}


def post_transcription(c: httpx.Client, path: Path, data: dict[str, str] | None = None) -> float:
    started = time.perf_counter()
    with path.open("rb") as fh:
        r = c.post("/v1/audio/transcriptions", files={"file": (path.name, fh)}, data=data or {})
    r.raise_for_status()
    return time.perf_counter() - started


def load(
    make_client: Callable[[], httpx.Client],
    files: list[tuple[Path, float]],
    clients: int,
    seconds: float,
    data: dict[str, str] | None = None,
    on_tick: Callable[[], None] | None = None,
    texts: list[tuple[Path, str]] | None = None,
) -> dict[str, Any]:
    """``clients`` threads post clips round-robin for ``seconds``; audio seconds per wall second.

    With ``texts``, every response's (clip, text) is appended to it."""
    stop = time.monotonic() + seconds
    lock = threading.Lock()
    done_audio, latencies, errors = 0.0, [], 0
    started = time.perf_counter()

    def client(k: int) -> None:
        nonlocal done_audio, errors
        with make_client() as c:
            i = k
            while time.monotonic() < stop:
                path, dur = files[i % len(files)]
                i += clients
                try:
                    if texts is None:
                        took = post_transcription(c, path, data)
                    else:
                        took, text = transcribe_text(c, path, data)
                        with lock:
                            texts.append((path, text))
                except httpx.HTTPError:
                    with lock:
                        errors += 1
                    continue
                with lock:
                    done_audio += dur
                    latencies.append(took)
                if on_tick and k == 0:
                    on_tick()

    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(client, range(clients)))
    wall = time.perf_counter() - started
    latencies.sort()
    return {
        "clients": clients,
        "requests": len(latencies),
        "errors": errors,
        "audio_seconds": round(done_audio, 1),
        "wall_seconds": round(wall, 1),
        "audio_per_second": round(done_audio / wall, 2),
        "p50_s": round(statistics.median(latencies), 2) if latencies else None,
        "p95_s": round(latencies[int(0.95 * (len(latencies) - 1))], 2) if latencies else None,
    }
