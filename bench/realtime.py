"""Live captions: 1, 4 and 8 concurrent streams fed at real time over ``/v1/realtime``.

Each stream is a ~60 s "meeting" laid end to end from real English clips of ../shared/speech
(a different order per stream, 0.8 s of silence between clips), sent as PCM16 at 24 kHz in 100 ms
``input_audio_buffer.append`` events paced by the clock, through the service as shipped (two
workers on CPU, every core, server VAD on). For every confirmed word (the ``…transcription.delta``
events) the delay is its arrival time minus the time its speech ended in the stream: the word is
matched (in order, normalised) to the same audio transcribed offline by plain faster-whisper with
word timestamps. Also: the delay of the first partial behind the first word's start, the WER of
all confirmed text against the offline transcript and against the clips' references, and the
server's CPU time per second of audio per stream.

    python -m bench.realtime [--models base tiny.en] [--streams 1 4 8] [--seconds 60] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import difflib
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import websockets
from tests.service import KEYS
from tests.speech import clips, error_rate, normalise

from bench.clients import default_service
from bench.common import ROOT, machine, machine_line, plain_model, save
from hushscribe import audio
from hushscribe.settings import AudioLimits

FRAME_S = 0.1
GAP_S = 0.8
RATE_OUT = 24000
EXPECTED_ERROR = "input_audio_buffer_commit_empty"
"""The closing commit finds nothing to commit when server VAD already ended the last turn."""
ANCHORS = (
    "Anchors: whisper_streaming (Macháček et al. 2023) reports about 3.3 s average latency of "
    "confirmed text with large-v2 on a GPU; WhisperLive and speaches' realtime endpoint publish "
    "no comparable CPU figure."
)


def recording(index: int, seconds: float) -> tuple[np.ndarray, str]:
    """Real English clips from ``index`` on, with pauses, to about ``seconds``; and their text."""
    english = [c for c in clips() if c.language == "en" and c.set != "longform"]
    gap = np.zeros(int(GAP_S * audio.SAMPLE_RATE), np.float32)
    parts: list[np.ndarray] = []
    refs: list[str] = []
    total, i = 0.0, index
    while total < seconds:
        c = english[i % len(english)]
        samples = audio.decode(c.path, AudioLimits()).samples
        parts += [samples, gap]
        refs.append(c.reference)
        total += len(samples) / audio.SAMPLE_RATE + GAP_S
        i += 1
    return np.concatenate(parts), " ".join(refs)


def offline_words(model: Any, samples: np.ndarray) -> list[tuple[str, float, float]]:
    segments, _ = model.transcribe(samples, language="en", word_timestamps=True, beam_size=5)
    out = []
    for seg in segments:
        for w in seg.words or []:
            for token in normalise(w.word, "en").split():
                out.append((token, w.start, w.end))
    return out


def to_24k(samples: np.ndarray) -> bytes:
    n = int(len(samples) * RATE_OUT / audio.SAMPLE_RATE)
    up = np.interp(np.arange(n) * audio.SAMPLE_RATE / RATE_OUT, np.arange(len(samples)), samples)
    return (np.clip(up, -1, 1) * 32767).astype("<i2").tobytes()


async def one_stream(url: str, model: str, samples: np.ndarray) -> dict[str, Any]:
    """Feed ``samples`` at real time; every event with its arrival (s after the first frame)."""
    pcm = to_24k(samples)
    step = int(FRAME_S * RATE_OUT) * 2
    headers = {"Authorization": f"Bearer {KEYS['alice']}"}
    events: list[tuple[float, dict[str, Any]]] = []
    ws_url = url.replace("http", "ws", 1) + "/v1/realtime?intent=transcription"
    async with websockets.connect(ws_url, additional_headers=headers, max_size=None) as ws:
        await ws.send(json.dumps({"type": "session.update", "session": {
            "type": "transcription", "audio": {"input": {
                "format": {"type": "audio/pcm", "rate": RATE_OUT},
                "transcription": {"model": model, "language": "en"},
                "turn_detection": {"type": "server_vad"}}}}}))  # fmt: skip
        t0 = time.monotonic()

        async def receive() -> None:
            async for message in ws:
                events.append((time.monotonic() - t0, json.loads(message)))

        reader = asyncio.create_task(receive())
        for k, at in enumerate(range(0, len(pcm), step)):
            await asyncio.sleep(max(0.0, t0 + k * FRAME_S - time.monotonic()))
            chunk = base64.b64encode(pcm[at : at + step]).decode()
            await ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": chunk}))
        await ws.send(json.dumps({"type": "input_audio_buffer.commit"}))
        ended = time.monotonic()
        while time.monotonic() - ended < 30:  # the last turn's completed event
            await asyncio.sleep(0.2)
            committed = {e.get("item_id") for _, e in events if e["type"].endswith("committed")}
            completed = {e.get("item_id") for _, e in events if e["type"].endswith("completed")}
            if committed and committed <= completed:
                break
        reader.cancel()
    return {"events": events}


def delays(
    events: list[tuple[float, dict[str, Any]]], offline: list[tuple[str, float, float]]
) -> tuple[list[float], float | None, str]:
    """Delay of each confirmed word behind the end of its speech; of the first partial behind
    the first word's start; and all confirmed text."""
    confirmed: list[tuple[str, float]] = []
    first: float | None = None
    for at, e in events:
        kind = e["type"]
        if kind.endswith("transcription.delta"):
            confirmed += [(w, at) for w in normalise(e["delta"], "en").split()]
        shown = kind.endswith("transcription.delta") or (kind.endswith("partial") and e.get("text"))
        if first is None and shown:
            first = at
    matcher = difflib.SequenceMatcher(
        a=[w for w, _ in confirmed], b=[w for w, _, _ in offline], autojunk=False
    )
    out = []
    for block in matcher.get_matching_blocks():
        for j in range(block.size):
            out.append(confirmed[block.a + j][1] - offline[block.b + j][2])
    onset = offline[0][1] if offline else 0.0
    return out, (None if first is None else first - onset), " ".join(w for w, _ in confirmed)


def tree_cpu(pid: int) -> float:
    proc = psutil.Process(pid)
    total = 0.0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.NoSuchProcess:
            pass
    return total


def run_level(
    url: str, pid: int, model: str, streams: int, audios: list[tuple[np.ndarray, str]],
    offline: list[list[tuple[str, float, float]]],
) -> dict[str, Any]:  # fmt: skip
    async def all_streams() -> list[Any]:
        tasks = [one_stream(url, model, audios[i][0]) for i in range(streams)]
        return await asyncio.gather(*tasks, return_exceptions=True)

    cpu0 = tree_cpu(pid)
    results = asyncio.run(all_streams())
    cpu = tree_cpu(pid) - cpu0
    word_delays: list[float] = []
    firsts: list[float] = []
    vs_offline: list[float] = []
    vs_reference: list[float] = []
    errors = [repr(r)[:200] for r in results if isinstance(r, BaseException)]
    for i, r in enumerate(results):
        if isinstance(r, BaseException):
            continue
        errors += [json.dumps(e)[:200] for _, e in r["events"] if e["type"] == "error"
                   and e["error"].get("code") != EXPECTED_ERROR]  # fmt: skip
        d, first, text = delays(r["events"], offline[i])
        word_delays += d
        if first is not None:
            firsts.append(first)
        offline_text = " ".join(w for w, _, _ in offline[i])
        vs_offline.append(error_rate([offline_text], [text], "en"))
        vs_reference.append(error_rate([audios[i][1]], [text], "en"))
    audio_s = sum(len(audios[i][0]) for i in range(streams)) / audio.SAMPLE_RATE
    q = statistics.quantiles(word_delays, n=20) if len(word_delays) >= 2 else [float("nan")] * 19
    return {
        "model": model, "streams": streams, "words": len(word_delays),
        "delay_median_s": round(statistics.median(word_delays), 2) if word_delays else None,
        "delay_p95_s": round(q[18], 2) if word_delays else None,
        "first_partial_s": round(statistics.median(firsts), 2) if firsts else None,
        "wer_vs_offline": round(statistics.mean(vs_offline), 4) if vs_offline else None,
        "wer_vs_reference": round(statistics.mean(vs_reference), 4) if vs_reference else None,
        "cpu_per_stream": round(cpu / audio_s, 3),
        "errors": errors[:5],
    }  # fmt: skip


def markdown(p: dict[str, Any]) -> str:
    rows = [
        "| model | streams | confirmed word delay median | p95 | first partial | WER vs offline "
        "| WER vs reference | CPU s per audio s, per stream | errors |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in p["levels"]:
        rows.append(
            f"| {r['model']} | {r['streams']} | {r['delay_median_s']} s | {r['delay_p95_s']} s "
            f"| {r['first_partial_s']} s | {r['wer_vs_offline']:.1%} | {r['wer_vs_reference']:.1%} "
            f"| {r['cpu_per_stream']} | {len(r['errors'])} |"
        )
    best = ", ".join(f"{m}: {n}" for m, n in p["most_streams_p95_under_3s"].items())
    return (
        "## Live captions (`python -m bench.realtime`)\n\n"
        f"{machine_line(p['machine'])} Streams of {p['seconds']:.0f} s of real English speech "
        "fed at real time (100 ms PCM16 frames at 24 kHz) to the service as shipped (two "
        "workers, server VAD); delays are measured at the client, against word timings of the "
        "same audio transcribed offline.\n\n" + "\n".join(rows) + "\n\n"
        f"Largest number of streams tried with p95 confirmed-word delay under 3 s: {best}.\n\n"
        f"{ANCHORS}\n" + (f"\n{p['note']}\n" if p.get("note") else "")
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["base", "tiny.en"])
    parser.add_argument("--streams", nargs="+", type=int, default=[1, 4, 8])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--data-dir", type=Path, default=ROOT / ".data")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--quick", action="store_true", help="one stream of 20 s, tiny.en")
    args = parser.parse_args()
    if args.quick:
        args.models, args.streams, args.seconds = ["tiny.en"], [1], 20.0
    most = max(args.streams)
    audios = [recording(3 * i, args.seconds) for i in range(most)]
    levels: list[dict[str, Any]] = []
    for model in args.models:
        plain = plain_model(args.data_dir / "models" / model, args.device)
        offline = [offline_words(plain, a) for a, _ in audios]
        del plain
        with tempfile.TemporaryDirectory() as tmp:
            svc = default_service(Path(tmp), args.data_dir / "models", model, args.device)
            svc.env.update({"HUSHSCRIBE_STREAMS__MAX_PER_USER": str(most),
                            "HUSHSCRIBE_STREAMS__MAX_TOTAL": str(most)})  # fmt: skip
            svc.start()
            try:
                assert svc.proc is not None
                run_level(svc.url, svc.proc.pid, model, 1, audios, offline)  # warm-up
                for n in args.streams:
                    level = run_level(svc.url, svc.proc.pid, model, n, audios, offline)
                    print(json.dumps(level), flush=True)
                    levels.append(level)
            finally:
                svc.stop()
    under = {
        m: max([r["streams"] for r in levels if r["model"] == m
                and r["delay_p95_s"] is not None and r["delay_p95_s"] < 3.0], default=0)
        for m in args.models
    }  # fmt: skip
    payload = {"machine": machine(), "seconds": args.seconds, "levels": levels,
               "most_streams_p95_under_3s": under}  # fmt: skip
    save("realtime", payload, markdown(payload), quick=args.quick)


if __name__ == "__main__":
    main()
