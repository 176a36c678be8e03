"""Long-file accuracy: one ≥ 12 min recording through the API vs its clips one by one vs plain
faster-whisper, in one run.

The file is every English clip of ../shared/speech (LibriSpeech, LJSpeech, en_misc, the 53 s
longform reading) with 1 s silences, rounds in a repeatable shuffled order, whole clips until at
least ``--minutes`` (bench/longaudio.py). Measured, each against the references joined the same
way (WER, Whisper's English normaliser):

- the whole file as one job through the API (POST /v1/jobs, poll, GET result);
- the same clips sent one job at a time (their texts joined in the file's order);
- plain faster-whisper ``WhisperModel.transcribe`` and ``BatchedInferencePipeline`` on the file,
  and ``WhisperModel.transcribe`` on the clips one by one.

Coverage: a clip is found when its reference's first 4 normalised words are in the transcript
(as often as the clip is heard); every system should find M / M.

    python -m bench.longform [--model base] [--minutes 12] [--quick]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

from faster_whisper import BatchedInferencePipeline

from bench.clients import default_service, job_round_trip
from bench.common import (
    bench_args,
    chosen_model,
    machine,
    machine_line,
    plain_model,
    ratio,
    save,
)
from bench.longaudio import LongFile, coverage, dense, wer
from bench.service import OPTIONS
from hushscribe.settings import EngineSettings

JOB_POLL_S = 0.5
BATCHED_FROM_S = EngineSettings().batched_min_duration_s
"""Files this long take the service's batched pipeline (None: only when a request asks)."""
WINDOW_S = EngineSettings().window_s
"""Longer files are transcribed in windows: even a smoke run must be past one."""
QUICK_MINUTES = round(WINDOW_S / 60 + 0.5, 1)


def row(
    name: str, source: str, text: str | None, seconds: float, audio_s: float, lf: LongFile
) -> dict[str, Any]:
    found, missed = coverage(lf.placed, text or "")
    exact, _ = coverage(lf.placed, text or "", exact=True)
    return {
        "system": name,
        "input": source,
        "wer": wer(lf.reference, text or "") if text is not None else None,
        "clips_found": found,
        "clips": len(lf.placed),
        "missed": missed,
        "clips_found_all_4_words_exact": exact,
        "seconds": round(seconds, 1),
        "x_real_time": round(audio_s / seconds, 2) if seconds else None,
        "words": len((text or "").split()),
        "failed": text is None,
        "text": text,
    }


def show(r: dict[str, Any]) -> None:
    print({k: v for k, v in r.items() if k != "text"}, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--minutes", type=float, default=None,
        help=f"default 12 ({QUICK_MINUTES:g}, just past one engine.window_s, if --quick)",
    )  # fmt: skip
    parser.add_argument("--batch-size", type=int, default=8, help="plain BatchedInferencePipeline")
    bench_args(parser)
    args = parser.parse_args()
    model = chosen_model(args)
    minutes = args.minutes or (QUICK_MINUTES if args.quick else 12.0)
    models_dir = (args.data_dir / "models").resolve()
    data = {"model": model}
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        lf = dense(tmp / f"english-{minutes:g}min.flac", minutes * 60)
        speech_s = lf.speech_seconds
        distinct = list({c.path: c for c in lf.placed}.values())
        print(f"long file: {lf.seconds:.0f} s, {len(lf.placed)} clips ({len(distinct)} distinct)",
              flush=True)  # fmt: skip
        svc = default_service(tmp / "svc", models_dir, model, args.device)
        svc.start(timeout=300)
        try:
            with svc.client(timeout=900) as c:
                job_round_trip(c, distinct[0].path, data, JOB_POLL_S)  # a worker loads the model
                long_job = job_round_trip(c, lf.path, data, JOB_POLL_S)
                view = long_job["view"]
                api_long_s = view["timings"]["processing_seconds"] or long_job["wall_s"]
                rows.append(row("hushscribe API", "long file, one job", long_job["text"],
                                api_long_s, lf.seconds, lf))  # fmt: skip
                rows[-1].update(wall_s=round(long_job["wall_s"], 1), status=view["status"],
                                error=view["error"])  # fmt: skip
                show(rows[-1])
                forced = job_round_trip(c, lf.path, {**data, "batched": "true"}, JOB_POLL_S)
                rows.append(row("hushscribe API, batched=true", "long file, one job",
                                forced["text"], forced["view"]["timings"]["processing_seconds"]
                                or forced["wall_s"], lf.seconds, lf))  # fmt: skip
                show(rows[-1])
                by_clip: dict[Path, str] = {}
                api_clips_s = 0.0
                for cl in distinct:
                    out = job_round_trip(c, cl.path, data, JOB_POLL_S)
                    by_clip[cl.path] = out["text"] or ""
                    api_clips_s += out["view"]["timings"]["processing_seconds"] or out["wall_s"]
                clips_s = sum(cl.duration for cl in distinct)
                rows.append(row("hushscribe API", "same clips, one job each",
                                " ".join(by_clip[cl.path] for cl in lf.placed),
                                api_clips_s, clips_s, lf))  # fmt: skip
                show(rows[-1])
        finally:
            svc.stop()
        fw = plain_model(models_dir / model, args.device)
        started = time.perf_counter()
        segments, _ = fw.transcribe(str(lf.path), **OPTIONS)
        text = "".join(s.text for s in segments)
        rows.append(row("plain WhisperModel.transcribe", "long file", text,
                        time.perf_counter() - started, lf.seconds, lf))  # fmt: skip
        show(rows[-1])
        batched = BatchedInferencePipeline(fw)
        started = time.perf_counter()
        segments, _ = batched.transcribe(str(lf.path), batch_size=args.batch_size, **OPTIONS)
        text = "".join(s.text for s in segments)
        rows.append(row(f"plain BatchedInferencePipeline (batch {args.batch_size})", "long file",
                        text, time.perf_counter() - started, lf.seconds, lf))  # fmt: skip
        show(rows[-1])
        plain_clips: dict[Path, str] = {}
        started = time.perf_counter()
        for cl in distinct:
            segments, _ = fw.transcribe(str(cl.path), **OPTIONS)
            plain_clips[cl.path] = "".join(s.text for s in segments)
        rows.append(row("plain WhisperModel.transcribe", "same clips, one by one",
                        " ".join(plain_clips[cl.path] for cl in lf.placed),
                        time.perf_counter() - started, clips_s, lf))  # fmt: skip
        show(rows[-1])
    api_long, forced_row, api_clips, plain_long, plain_batched, plain_clips_row = rows
    payload = {
        "machine": machine(),
        "command": f"python -m bench.longform --device {args.device} --model {model} "
        f"--minutes {minutes:g}" + (" --quick" if args.quick else ""),
        "model": model,
        "service_batched_from_s": BATCHED_FROM_S,
        "service_window_s": WINDOW_S,
        "file": {
            "seconds": round(lf.seconds, 1),
            "speech_seconds": round(speech_s, 1),
            "clips": len(lf.placed),
            "distinct_clips": len(distinct),
            "order": [cl.path.name for cl in lf.placed],
        },
        "rows": rows,
        "wer_ratios": {
            "api_long_vs_api_clips": ratio(api_long["wer"], api_clips["wer"]),
            "api_long_vs_plain_long": ratio(api_long["wer"], plain_long["wer"]),
            "api_long_vs_plain_batched": ratio(api_long["wer"], plain_batched["wer"]),
            "api_batched_vs_plain_batched": ratio(forced_row["wer"], plain_batched["wer"]),
            "api_long_vs_plain_clips": ratio(api_long["wer"], plain_clips_row["wer"]),
        },
        "speed_ratio_plain_long_over_api_long": ratio(plain_long["seconds"], api_long["seconds"]),
    }
    section = markdown(payload)
    save("longform", payload, section, quick=args.quick)
    print(section)


def pct(x: float | None) -> str:
    return "failed" if x is None else f"{x:.1%}"


def markdown(p: dict[str, Any]) -> str:
    f, r = p["file"], p["wer_ratios"]
    lines = [
        "## Long-file accuracy: one long recording vs its clips, API vs plain faster-whisper",
        "",
        f"Command: `{p['command']}`  ",
        f"{machine_line(p['machine'])} Model {p['model']}, beam 5, VAD on, language detected; "
        "service with its default settings (two workers on CPU, 30 s lease).",
        "",
        f"The file: {f['seconds'] / 60:.1f} min, {f['clips']} English clips ({f['distinct_clips']} "
        f"distinct, {f['speech_seconds']:.0f} s of speech) joined with 1 s silences in a repeatable "
        "order; the reference is their references joined the same way. The service decodes it "
        f"in windows of {p.get('service_window_s', 600):g} s (`engine.window_s`), sequentially by "
        "default; the *batched=true* row asks for the batched pipeline. A clip is *found* when its "
        "reference's first 4 normalised words are in the transcript, one of them allowed to differ or "
        "be missing (a model error or a dropped first word is no lost clip; the JSON also keeps "
        "the all-4-exact count); target: all.",
        "",
        "| system | input | WER | clips found | seconds | x real time |",
        "|---|---|---|---|---|---|",
    ]
    for x in p["rows"]:
        lines.append(
            f"| {x['system']} | {x['input']} | {pct(x['wer'])} | "
            f"**{x['clips_found']} / {x['clips']}** | {x['seconds']} | {x['x_real_time']} |"
        )
    lines += [
        "",
        f"WER of the long file through the API ÷ the same clips one job each: "
        f"**{r['api_long_vs_api_clips']}**; ÷ plain `transcribe` on the long file: "
        f"**{r['api_long_vs_plain_long']}**; ÷ plain `BatchedInferencePipeline`: "
        f"**{r['api_long_vs_plain_batched']}**; the API's batched=true ÷ plain "
        f"`BatchedInferencePipeline`: **{r.get('api_batched_vs_plain_batched')}** "
        "(1.0 = as accurate; None where the divisor is 0). "
        "Seconds: for the API, the jobs' processing time as GET /v1/jobs reports it; for plain "
        "faster-whisper, wall time in-process.",
    ]
    missed = [(x["system"], x["input"], x["missed"]) for x in p["rows"] if x["missed"]]
    if missed:
        lines += ["", "Clips missed:", ""]
        for system, source, names in missed:
            lines.append(f"- {system}, {source}: {', '.join(names)}")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
