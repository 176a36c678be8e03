"""Load generation shared by the service benchmarks: N clients posting real clips for a while."""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

Post = Callable[[httpx.Client, Path], float]


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
) -> dict[str, Any]:
    """``clients`` threads post clips round-robin for ``seconds``; audio seconds per wall second."""
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
                    took = post_transcription(c, path, data)
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
