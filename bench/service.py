"""The HTTP service next to plain faster-whisper and a "seed" server, same model and options.

1. Single stream: for each model and three lengths (a 5 s clip, 60 s and ~4 min built from real
   clips in ../shared/speech), POST /v1/audio/transcriptions vs plain faster-whisper in-process,
   alternating order, ``--reps`` times, medians.
2. Throughput: 1/4/8/16 clients sending short real clips for ``--seconds`` each → audio seconds per
   wall second, p50/p95, errors; next to plain faster-whisper sequential, plain
   BatchedInferencePipeline sequential and the seed server (bench/seed_server.py) with 8 clients.

    python -m bench.service [--models base tiny.en] [--reps 3] [--clients 1 4 8 16] [--seconds 60]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
import wave
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from faster_whisper import BatchedInferencePipeline, WhisperModel
from tests.service import Service, free_port, service_data_dir
from tests.speech import clip, clips

from bench.clients import load, post_transcription
from bench.common import ROOT, THREADS, machine, plain_model, save
from hushscribe import audio
from hushscribe.settings import AudioLimits

OPTIONS = {"beam_size": 5, "vad_filter": True}


def write_wav(path: Path, samples: np.ndarray) -> None:
    pcm = (np.clip(samples, -1, 1) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(audio.SAMPLE_RATE)
        w.writeframes(pcm.tobytes())


def english_recording(tmp: Path, seconds: float) -> tuple[Path, float]:
    """Real English clips laid end to end (repeated if needed) to about ``seconds``."""
    english = [c for c in clips() if c.language == "en" and c.set != "longform"]
    parts, total, i = [], 0.0, 0
    while total < seconds:
        samples = audio.decode(english[i % len(english)].path, AudioLimits()).samples
        parts.append(samples)
        total += len(samples) / audio.SAMPLE_RATE
        i += 1
    joined = np.concatenate(parts)[: int(seconds * audio.SAMPLE_RATE)]
    total = len(joined) / audio.SAMPLE_RATE
    path = tmp / f"english-{int(seconds)}s.wav"
    write_wav(path, joined)
    return path, total


def plain_once(fw: WhisperModel, path: Path) -> float:
    started = time.perf_counter()
    segments, _ = fw.transcribe(str(path), **OPTIONS)
    "".join(s.text for s in segments)
    return time.perf_counter() - started


def single_stream(
    svc: Service, fw: WhisperModel, model: str, path: Path, reps: int
) -> dict[str, Any]:
    data = {"model": model}
    with svc.client(timeout=900) as c:
        post_transcription(c, path, data)  # warm: the model is loaded in the worker that takes it
        plain_once(fw, path)
        api_t: list[float] = []
        plain_t: list[float] = []
        for rep in range(reps):
            order = ("api", "plain") if rep % 2 == 0 else ("plain", "api")
            for name in order:
                if name == "api":
                    api_t.append(post_transcription(c, path, data))
                else:
                    plain_t.append(plain_once(fw, path))
    api_m, plain_m = statistics.median(api_t), statistics.median(plain_t)
    return {
        "api_seconds": [round(t, 2) for t in api_t],
        "plain_seconds": [round(t, 2) for t in plain_t],
        "api_median": round(api_m, 2),
        "plain_median": round(plain_m, 2),
        "speed_ratio": round(plain_m / api_m, 3),
    }


def sequential(run: Any, files: list[tuple[Path, float]], seconds: float) -> dict[str, Any]:
    stop = time.monotonic() + seconds
    started = time.perf_counter()
    done, i = 0.0, 0
    while time.monotonic() < stop:
        path, dur = files[i % len(files)]
        segments, _ = run(str(path))
        "".join(s.text for s in segments)
        done += dur
        i += 1
    wall = time.perf_counter() - started
    return {
        "requests": i,
        "audio_seconds": round(done, 1),
        "wall_seconds": round(wall, 1),
        "audio_per_second": round(done / wall, 2),
    }


def seed_load(
    model_dir: Path, files: list[tuple[Path, float]], clients: int, seconds: float, device: str
) -> dict[str, Any]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.seed_server", str(model_dir), str(port), device], cwd=ROOT
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError("seed server did not start")
            time.sleep(0.2)
        url = f"http://127.0.0.1:{port}"
        return load(lambda: httpx.Client(base_url=url, timeout=900), files, clients, seconds)
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["base", "tiny.en"])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 4, 8, 16])
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--workers", type=int, default=0, help="0: the service's default")
    parser.add_argument("--threads", type=int, default=0, help="per worker; 0: the default")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument(
        "--given-language", default="en",
        help="also measure 8 clients that name this language (no detection), vs plain likewise",
    )  # fmt: skip
    parser.add_argument("--data-dir", type=Path, default=ROOT / ".data")
    args = parser.parse_args()
    models_dir = (args.data_dir / "models").resolve()
    default = args.models[0]
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        lengths = {
            "5 s": (clip("LJ001-0004.flac").path, clip("LJ001-0004.flac").duration),
            "60 s": english_recording(tmp, 60),
            "4 min": english_recording(tmp, 240),
        }
        files = [(c.path, c.duration) for c in clips() if c.language == "en" and c.duration < 15]
        svc = Service(
            service_data_dir(tmp / "svc", models_dir),
            env={
                "HUSHSCRIBE_ENGINE__DEFAULT_MODEL": default,
                "HUSHSCRIBE_JOBS__WORKER_THREADS": str(args.threads),
                "HUSHSCRIBE_JOBS__WORKERS": str(args.workers),
                "HUSHSCRIBE_JOBS__LEASE_S": "30",
                "HUSHSCRIBE_ENGINE__DEVICE": args.device,
            },
        )
        started = time.perf_counter()
        svc.start(timeout=300)
        cold_start = time.perf_counter() - started
        try:
            single: list[dict[str, Any]] = []
            for model in args.models:
                fw = plain_model(models_dir / model, args.device)
                for label, (path, dur) in lengths.items():
                    row = single_stream(svc, fw, model, path, args.reps)
                    single.append(
                        {"model": model, "length": label, "audio_seconds": round(dur, 1), **row}
                    )
                    print(single[-1], flush=True)
            fw = plain_model(models_dir / default, args.device)
            plain = sequential(lambda p: fw.transcribe(p, **OPTIONS), files, args.seconds)
            batched = BatchedInferencePipeline(fw)
            plain_batched = sequential(
                lambda p: batched.transcribe(p, batch_size=8, **OPTIONS), files, args.seconds
            )
            loads = [
                load(lambda: svc.client(timeout=900), files, n, args.seconds) for n in args.clients
            ]
            lang = args.given_language
            plain_given = sequential(
                lambda p: fw.transcribe(p, language=lang, **OPTIONS), files, args.seconds
            )
            load_given = load(
                lambda: svc.client(timeout=900), files, 8, args.seconds, data={"language": lang}
            )
            load_given["vs_plain_sequential"] = round(
                load_given["audio_per_second"] / plain_given["audio_per_second"], 3
            )
        finally:
            svc.stop()
        seed = seed_load(models_dir / default, files, 8, args.seconds, args.device)
    for row in [*loads, seed]:
        row["vs_plain_sequential"] = round(row["audio_per_second"] / plain["audio_per_second"], 3)
    host = machine()
    command = (
        f"python -m bench.service --device {args.device} --models "
        + " ".join(args.models)
        + f" --reps {args.reps} "
        "--clients " + " ".join(map(str, args.clients)) + f" --seconds {args.seconds:g}"
    )
    payload = {
        "machine": host,
        "command": command,
        "cold_start_to_ready_s": round(cold_start, 2),
        "single_stream": single,
        "plain_sequential": plain,
        "plain_batched": plain_batched,
        "throughput": loads,
        "seed_server": seed,
        "language_given": {
            "language": args.given_language,
            "plain_sequential": plain_given,
            "throughput": load_given,
        },
        "workers": args.workers or "default",
        "threads": args.threads or "default",
    }
    save("service", payload, markdown(payload, default, args.seconds))


def markdown(p: dict[str, Any], model: str, seconds: float) -> str:
    host = p["machine"]
    lines = [
        "## Service: HTTP API vs plain faster-whisper and a seed server",
        "",
        f"Command: `{p['command']}`  ",
        f"Machine: {host['cpu']}, {host['cores']} cores, {host['memory_gib']} GiB, GPU: "
        f"{host['gpu'] or 'none'}. int8, beam 5, VAD on; service workers {p['workers']}, "
        f"threads per worker {p['threads']}; plain faster-whisper with {THREADS} threads.",
        "",
        "![throughput](bench/throughput.png) ![single stream](bench/single_stream.png)",
        "",
        "### Single stream (end to end: upload, queue, decode, transcribe, JSON)",
        "",
        "| model | length | audio s | API s (median) | plain s (median) | ratio (plain / API) |",
        "|---|---|---|---|---|---|",
    ]
    for r in p["single_stream"]:
        lines.append(
            f"| {r['model']} | {r['length']} | {r['audio_seconds']} | {r['api_median']} | "
            f"{r['plain_median']} | **{r['speed_ratio']}** |"
        )
    lines += [
        "",
        f"### Throughput ({model}, short English clips 1.8–11.7 s, {seconds:g} s per row)",
        "",
        f"Plain faster-whisper sequential: {p['plain_sequential']['audio_per_second']} audio s/s; "
        f"plain BatchedInferencePipeline sequential: {p['plain_batched']['audio_per_second']} "
        f"audio s/s. Cold start of the service to /readyz = 200: {p['cold_start_to_ready_s']} s.",
        "",
        "| server | clients | requests | errors | audio s/s | vs plain seq. | p50 s | p95 s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, r in [
        *(("hushscribe", r) for r in p["throughput"]),
        ("seed server", p["seed_server"]),
    ]:
        lines.append(
            f"| {name} | {r['clients']} | {r['requests']} | {r['errors']} | "
            f"{r['audio_per_second']} | **{r['vs_plain_sequential']}** | {r['p50_s']} | "
            f"{r['p95_s']} |"
        )
    given = p["language_given"]
    r = given["throughput"]
    lines += [
        "",
        f"With the language named by the client (`language={given['language']}`, no detection, "
        f"plain faster-whisper told the same): plain sequential "
        f"{given['plain_sequential']['audio_per_second']} audio s/s; hushscribe, {r['clients']} "
        f"clients: {r['audio_per_second']} audio s/s (**{r['vs_plain_sequential']}x**), "
        f"{r['requests']} requests, {r['errors']} errors, p50 {r['p50_s']} s, p95 {r['p95_s']} s.",
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
