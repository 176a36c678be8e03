"""The HTTP service next to plain faster-whisper, same model and options, in one run.

1. Single stream: a 60 s recording (real clips from ../shared/speech laid end to end) through
   POST /v1/audio/transcriptions vs plain faster-whisper in-process, alternating, medians.
2. Throughput: N concurrent clients sending short real clips for a fixed time vs plain
   faster-whisper transcribing the same clips one after another for the same time.

    python -m bench.service [--model base] [--reps 3] [--clients 1 4 8] [--seconds 60]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time
import wave
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from faster_whisper import WhisperModel
from tests.service import Service, service_data_dir
from tests.speech import clip, clips

from bench.common import ROOT, machine, save
from hushscribe import audio
from hushscribe.settings import AudioLimits

LONG_PARTS = ("OSR_us_000_0034_8k.wav", "LJ001-0001.flac", "2412-153948-0000.flac", "LDC93S1.wav")
THREADS = 2


def write_wav(path: Path, samples: np.ndarray) -> None:
    pcm = (np.clip(samples, -1, 1) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(audio.SAMPLE_RATE)
        w.writeframes(pcm.tobytes())


def sixty_seconds(tmp: Path) -> tuple[Path, float]:
    parts = [audio.decode(clip(n).path, AudioLimits()).samples for n in LONG_PARTS]
    joined = np.concatenate(parts)
    path = tmp / "sixty.wav"
    write_wav(path, joined)
    return path, len(joined) / audio.SAMPLE_RATE


def api_once(c: httpx.Client, path: Path, model: str) -> float:
    started = time.perf_counter()
    with path.open("rb") as fh:
        r = c.post("/v1/audio/transcriptions", files={"file": (path.name, fh)},
                   data={"model": model, "language": "en"})  # fmt: skip
    r.raise_for_status()
    return time.perf_counter() - started


def plain_once(fw: WhisperModel, path: Path) -> float:
    started = time.perf_counter()
    segments, _ = fw.transcribe(str(path), beam_size=5, vad_filter=True, language="en")
    "".join(s.text for s in segments)
    return time.perf_counter() - started


def throughput(svc: Service, files: list[tuple[Path, float]], clients: int, seconds: float,
               model: str) -> dict[str, Any]:  # fmt: skip
    stop = time.monotonic() + seconds
    lock = threading.Lock()
    done_audio, latencies, errors = 0.0, [], 0
    started = time.perf_counter()

    def client(k: int) -> None:
        nonlocal done_audio, errors
        with svc.client(timeout=600) as c:
            i = k
            while time.monotonic() < stop:
                path, dur = files[i % len(files)]
                i += clients
                try:
                    took = api_once(c, path, model)
                except httpx.HTTPError:
                    with lock:
                        errors += 1
                    continue
                with lock:
                    done_audio += dur
                    latencies.append(took)

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


def plain_sequential(
    fw: WhisperModel, files: list[tuple[Path, float]], seconds: float
) -> dict[str, Any]:
    stop = time.monotonic() + seconds
    started = time.perf_counter()
    done, i = 0.0, 0
    while time.monotonic() < stop:
        path, dur = files[i % len(files)]
        plain_once(fw, path)
        done += dur
        i += 1
    wall = time.perf_counter() - started
    return {"requests": i, "audio_seconds": round(done, 1), "wall_seconds": round(wall, 1),
            "audio_per_second": round(done / wall, 2)}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="base")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 4, 8])
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--workers", type=int, default=0, help="0: the service's default")
    parser.add_argument("--threads", type=int, default=0, help="per worker; 0: the default")
    parser.add_argument("--data-dir", type=Path, default=ROOT / ".data")
    args = parser.parse_args()
    models = (args.data_dir / "models").resolve()
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        long_path, long_s = sixty_seconds(tmp)
        short = [c for c in clips() if c.language == "en" and c.duration < 15]
        files = [(c.path, c.duration) for c in short]
        svc = Service(service_data_dir(tmp / "svc", models), env={
            "HUSHSCRIBE_ENGINE__DEFAULT_MODEL": args.model,
            "HUSHSCRIBE_JOBS__WORKER_THREADS": str(args.threads),
            "HUSHSCRIBE_JOBS__WORKERS": str(args.workers),
            "HUSHSCRIBE_JOBS__LEASE_S": "30",
        }).start()  # fmt: skip
        fw = WhisperModel(str(models / args.model), device="cpu", compute_type="int8",
                          cpu_threads=THREADS)  # fmt: skip
        try:
            with svc.client(timeout=600) as c:
                api_once(c, long_path, args.model)  # warm both before timing
                plain_once(fw, long_path)
                api_t, plain_t = [], []
                for rep in range(args.reps):
                    pair = [("api", lambda: api_once(c, long_path, args.model)),
                            ("plain", lambda: plain_once(fw, long_path))]  # fmt: skip
                    for name, run in pair if rep % 2 == 0 else pair[::-1]:
                        (api_t if name == "api" else plain_t).append(run())
            single = {
                "audio_seconds": round(long_s, 1),
                "api_seconds": [round(t, 2) for t in api_t],
                "plain_seconds": [round(t, 2) for t in plain_t],
                "api_median": round(statistics.median(api_t), 2),
                "plain_median": round(statistics.median(plain_t), 2),
            }
            single["speed_ratio"] = round(single["plain_median"] / single["api_median"], 3)
            plain = plain_sequential(fw, files, args.seconds)
            loads = [throughput(svc, files, n, args.seconds, args.model) for n in args.clients]
        finally:
            svc.stop()
    for row in loads:
        row["vs_plain_sequential"] = round(row["audio_per_second"] / plain["audio_per_second"], 3)
    host = machine()
    clients = " ".join(map(str, args.clients))
    command = (f"python -m bench.service --model {args.model} --reps {args.reps} --clients "
               f"{clients} --seconds {args.seconds:g} --workers {args.workers} "
               f"--threads {args.threads}")  # fmt: skip
    payload = {"machine": host, "command": command, "single_stream": single,
               "plain_sequential": plain, "throughput": loads}  # fmt: skip
    lines = [
        "## Service: HTTP API vs plain faster-whisper",
        "",
        f"Command: `{command}`  ",
        f"Machine: {host['cpu']}, {host['cores']} cores, {host['memory_gib']} GiB, no GPU. "
        f"Model {args.model}, int8, beam 5, VAD on; workers {args.workers or 'default'}, "
        f"threads per worker {args.threads or 'default'}.",
        "",
        f"**Single stream**, {single['audio_seconds']} s recording, end to end (upload, queue, "
        f"decode, transcribe, JSON): API {single['api_median']} s vs plain faster-whisper "
        f"{single['plain_median']} s in-process → **{single['speed_ratio']}x** "
        f"(runs: API {single['api_seconds']}, plain {single['plain_seconds']}).",
        "",
        "**Throughput**, short English clips (1.8–11.7 s), for "
        f"{args.seconds:g} s each; plain faster-whisper sequential: "
        f"{plain['audio_per_second']} audio s/s.",
        "",
        "| clients | requests | errors | audio s/s | vs plain sequential | p50 s | p95 s |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in loads:
        lines.append(f"| {r['clients']} | {r['requests']} | {r['errors']} | "
                     f"{r['audio_per_second']} | {r['vs_plain_sequential']} | {r['p50_s']} | "
                     f"{r['p95_s']} |")  # fmt: skip
    section = "\n".join(lines) + "\n"
    save("service", payload, section)
    print(section)


if __name__ == "__main__":
    main()
