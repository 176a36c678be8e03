"""Accuracy under load: the WER of what 8 concurrent clients get back vs the same clips sent one at
a time through the API and vs plain faster-whisper, in one run.

The clients post the short English clips of the throughput run (bench/service.py: those under
15 s) plus en_misc/OSR_us_000_0034_8k.wav (35.5 s, ten Harvard sentences) to
POST /v1/audio/transcriptions for ``--seconds`` and every response is kept. Each response is scored
against its clip's reference; the one-at-a-time and plain texts of the same clips are scored with
the same weights (once per response), so the ratios compare like with like. For the 35.5 s clip:
is "A severe storm tore down the barn" (its ninth sentence) in every response?

    python -m bench.load_accuracy [--model base] [--clients 8] [--seconds 120] [--quick]
"""

from __future__ import annotations

import argparse
import tempfile
from collections import defaultdict
from pathlib import Path
from typing import Any

from tests.speech import clip, clips, error_rate, normalise

from bench.clients import default_service, load, transcribe_text
from bench.common import bench_args, chosen_model, machine, machine_line, plain_model, ratio, save
from bench.longaudio import contains
from bench.service import OPTIONS

LONG_CLIP = "OSR_us_000_0034_8k.wav"
PHRASE = "A severe storm tore down the barn"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=None, help="default 120 (20 if --quick)")
    bench_args(parser)
    args = parser.parse_args()
    model = chosen_model(args)
    seconds = args.seconds or (20.0 if args.quick else 120.0)
    models_dir = (args.data_dir / "models").resolve()
    chosen = [c for c in clips() if c.language == "en" and c.duration < 15] + [clip(LONG_CLIP)]
    files = [(c.path, c.duration) for c in chosen]
    reference = {c.path: c.reference for c in chosen}
    data = {"model": model}
    texts: list[tuple[Path, str]] = []
    with tempfile.TemporaryDirectory() as tmp:
        svc = default_service(Path(tmp) / "svc", models_dir, model, args.device)
        svc.start(timeout=300)
        try:
            with svc.client(timeout=900) as c:
                transcribe_text(c, chosen[0].path, data)  # a worker loads the model
                alone = {c_.path: transcribe_text(c, c_.path, data)[1] for c_ in chosen}
            loaded = load(lambda: svc.client(timeout=900), files, args.clients, seconds, data, texts=texts)  # fmt: skip
        finally:
            svc.stop()
    print({k: v for k, v in loaded.items()}, flush=True)
    fw = plain_model(models_dir / model, args.device)
    plain = {}
    for c_ in chosen:
        segments, _ = fw.transcribe(str(c_.path), **OPTIONS)
        plain[c_.path] = "".join(s.text for s in segments)

    refs = [reference[p] for p, _ in texts]
    wer_load = error_rate(refs, [t for _, t in texts], "en") if texts else None
    wer_alone = error_rate(refs, [alone[p] for p, _ in texts], "en") if texts else None
    wer_plain = error_rate(refs, [plain[p] for p, _ in texts], "en") if texts else None
    by_clip: dict[Path, list[str]] = defaultdict(list)
    for p, t in texts:
        by_clip[p].append(t)
    per_clip = []
    for c_ in chosen:
        got = by_clip.get(c_.path, [])
        differ = sum(normalise(t, "en") != normalise(alone[c_.path], "en") for t in got)
        per_clip.append(
            {
                "clip": c_.path.name,
                "seconds": c_.duration,
                "responses": len(got),
                "differ_from_alone": differ,
                "wer_under_load": round(error_rate([c_.reference] * len(got), got, "en"), 4)
                if got
                else None,
                "wer_alone": round(error_rate([c_.reference], [alone[c_.path]], "en"), 4),
                "wer_plain": round(error_rate([c_.reference], [plain[c_.path]], "en"), 4),
                "texts_under_load": sorted(set(got)),
                "text_alone": alone[c_.path],
                "text_plain": plain[c_.path],
            }
        )
    long_texts = by_clip.get(clip(LONG_CLIP).path, [])
    payload = {
        "machine": machine(),
        "command": f"python -m bench.load_accuracy --device {args.device} --model {model} "
        f"--clients {args.clients} --seconds {seconds:g}" + (" --quick" if args.quick else ""),
        "model": model,
        "throughput": loaded,
        "responses": len(texts),
        "wer_under_load": round(wer_load, 4) if wer_load is not None else None,
        "wer_alone_same_weights": round(wer_alone, 4) if wer_alone is not None else None,
        "wer_plain_same_weights": round(wer_plain, 4) if wer_plain is not None else None,
        "ratio_load_vs_alone": ratio(wer_load, wer_alone),
        "ratio_load_vs_plain": ratio(wer_load, wer_plain),
        "responses_differing_from_alone": sum(r["differ_from_alone"] for r in per_clip),
        "phrase": PHRASE,
        "phrase_under_load": [sum(contains(t, PHRASE) for t in long_texts), len(long_texts)],
        "phrase_alone": contains(alone[clip(LONG_CLIP).path], PHRASE),
        "phrase_plain": contains(plain[clip(LONG_CLIP).path], PHRASE),
        "per_clip": per_clip,
    }
    section = markdown(payload, args.clients, seconds)
    save("load_accuracy", payload, section, quick=args.quick)
    print(section)


def pct(x: float | None) -> str:
    return "—" if x is None else f"{x:.1%}"


def markdown(p: dict[str, Any], clients: int, seconds: float) -> str:
    t = p["throughput"]
    have, of = p["phrase_under_load"]
    lines = [
        "## Accuracy under load: what concurrent clients get back",
        "",
        f"Command: `{p['command']}`  ",
        f"{machine_line(p['machine'])} Model {p['model']}, beam 5, VAD on, language detected; "
        "service with its default settings (two workers on CPU, 30 s lease).",
        "",
        f"{clients} clients post the throughput run's short English clips plus {LONG_CLIP} "
        f"(35.5 s) to POST /v1/audio/transcriptions for {seconds:g} s: {t['requests']} responses, "
        f"{t['errors']} errors, {t['audio_per_second']} audio s/s, p50 {t['p50_s']} s, p95 "
        f"{t['p95_s']} s. Every response is scored; the other columns score the same clips' "
        "one-at-a-time API text and plain faster-whisper's text with the same weights.",
        "",
        "| measure | under load | API, one at a time | plain faster-whisper |",
        "|---|---|---|---|",
        f"| WER | {pct(p['wer_under_load'])} | {pct(p['wer_alone_same_weights'])} | "
        f"{pct(p['wer_plain_same_weights'])} |",
        f"| WER ratio (under load ÷ column) | — | **{p['ratio_load_vs_alone']}** | "
        f"**{p['ratio_load_vs_plain']}** |",
        f'| "{PHRASE}" in the {LONG_CLIP} text | **{have} / {of}** responses | '
        f"{'yes' if p['phrase_alone'] else 'no'} | {'yes' if p['phrase_plain'] else 'no'} |",
        "",
        f"Responses whose normalised text differs from the same clip sent alone: "
        f"{p['responses_differing_from_alone']} / {p['responses']}.",
    ]
    worse = [r for r in p["per_clip"] if r["differ_from_alone"]]
    if worse:
        lines += [
            "",
            "| clip | s | responses | differ | WER under load | alone | plain |",
            "|---|---|---|---|---|---|---|",
        ]
        for r in worse:
            lines.append(
                f"| {r['clip']} | {r['seconds']} | {r['responses']} | {r['differ_from_alone']} "
                f"| {pct(r['wer_under_load'])} | {pct(r['wer_alone'])} | {pct(r['wer_plain'])} |"
            )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
