"""hushscribe's engine next to plain faster-whisper: same model, same options, one run.

For every clip in ../shared/speech (and each model asked for), both systems go from the file to text
— decoding included — in alternating order, ``--reps`` times. Reported: speed (audio seconds per
wall second, medians), WER per language (Whisper's English normaliser; CER for zh/ja/ko) and
language-ID accuracy. Writes bench/results/engine.json and the engine section of
docs/BENCHMARKS.md.

    python -m bench.engine [--models base tiny.en] [--reps 3] [--data-dir .data]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from tests.speech import CHAR_LANGUAGES, Clip, clips, error_rate

from bench.common import THREADS, machine, plain_model, save
from hushscribe import audio
from hushscribe.engine import ModelManager, make_options, transcribe
from hushscribe.settings import load_settings


def run_hushscribe(manager: ModelManager, name: str, clip: Clip, options: dict[str, Any]) -> Any:
    settings = manager.settings
    decoded = audio.decode(clip.path, settings.audio)
    with manager.use(name) as loaded:
        t = transcribe(loaded, decoded.samples, make_options(**options), settings.engine)
    return t.text, t.language


def run_plain(model: Any, clip: Clip, options: dict[str, Any]) -> Any:
    segments, info = model.transcribe(
        str(clip.path), beam_size=5, vad_filter=options["vad"], language=options.get("language")
    )
    return "".join(s.text for s in segments), info.language


def bench_model(name: str, manager: ModelManager, reps: int, device: str) -> dict[str, Any]:
    info = manager.store.info(name)
    with manager.use(name):
        pass  # load once before timing, like a server would
    plain = plain_model(info.path, device)
    chosen = [c for c in clips() if info.multilingual or c.language == "en"]
    options = {"vad": True, "beam_size": 5}
    times: dict[str, list[float]] = {"hushscribe": [], "plain": []}
    texts: dict[str, dict[str, tuple[str, str]]] = {"hushscribe": {}, "plain": {}}
    audio_seconds = sum(c.duration for c in chosen)
    for rep in range(reps):
        order = ["hushscribe", "plain"] if rep % 2 == 0 else ["plain", "hushscribe"]
        for system in order:
            started = time.perf_counter()
            for c in chosen:
                if system == "hushscribe":
                    out = run_hushscribe(manager, name, c, options)
                else:
                    out = run_plain(plain, c, options)
                texts[system].setdefault(str(c.path), out)
            times[system].append(time.perf_counter() - started)
    result: dict[str, Any] = {"model": name, "clips": len(chosen), "audio_seconds": audio_seconds}
    for system in ("hushscribe", "plain"):
        median = statistics.median(times[system])
        by_lang: dict[str, tuple[list[str], list[str]]] = defaultdict(lambda: ([], []))
        lid_ok = 0
        for c in chosen:
            text, lang = texts[system][str(c.path)]
            by_lang[c.language][0].append(c.reference)
            by_lang[c.language][1].append(text)
            lid_ok += lang == c.language
        result[system] = {
            "wall_seconds": [round(t, 2) for t in times[system]],
            "speed_x_realtime": round(audio_seconds / median, 2),
            "error_rate": {
                lang: round(error_rate(r, h, lang), 4) for lang, (r, h) in by_lang.items()
            },
            "language_id_accuracy": round(lid_ok / len(chosen), 4),
        }
    result["speed_ratio"] = round(
        result["hushscribe"]["speed_x_realtime"] / result["plain"]["speed_x_realtime"], 3
    )
    return result


def markdown(results: list[dict[str, Any]], command: str, host: dict[str, Any]) -> str:
    lines = [
        "## Engine: hushscribe vs plain faster-whisper (in-process, file → text)",
        "",
        f"Command: `{command}`  ",
        f"Machine: {host['cpu']}, {host['cores']} cores, {host['memory_gib']} GiB, GPU: {host['gpu'] or 'none'}.  ",
        "Both systems: same model directory, int8 on CPU (float16 on CUDA), beam 5, Silero VAD on, temperature "
        "fallback, decoding included; alternating order; medians.",
        "",
        "| model | clips | audio s | hushscribe x real time | plain x real time | ratio | "
        "error rate hushscribe | error rate plain | language ID hushscribe / plain |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        h, p = r["hushscribe"], r["plain"]

        def rates(d: dict[str, float]) -> str:
            return ", ".join(
                f"{lang} {'CER' if lang in CHAR_LANGUAGES else 'WER'} {v:.1%}"
                for lang, v in d.items()
            )

        lines.append(
            f"| {r['model']} | {r['clips']} | {r['audio_seconds']:.0f} | {h['speed_x_realtime']} | "
            f"{p['speed_x_realtime']} | {r['speed_ratio']} | {rates(h['error_rate'])} | "
            f"{rates(p['error_rate'])} | {h['language_id_accuracy']:.0%} / "
            f"{p['language_id_accuracy']:.0%} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["base", "tiny.en"])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--data-dir", type=Path, default=None)
    args = parser.parse_args()
    overrides: dict[str, Any] = {"engine": {"cpu_threads": THREADS, "device": args.device}}
    if args.data_dir:
        overrides["data_dir"] = args.data_dir
    settings = load_settings(None, **overrides)
    manager = ModelManager(settings)
    results = [bench_model(m, manager, args.reps, args.device) for m in args.models]
    host = machine()
    command = (
        f"python -m bench.engine --device {args.device} --models "
        + " ".join(args.models)
        + f" --reps {args.reps}"
    )
    section = markdown(results, command, host)
    save("engine", {"machine": host, "command": command, "results": results}, section)
    print(section)


if __name__ == "__main__":
    main()
