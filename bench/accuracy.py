"""Accuracy through the API next to plain faster-whisper, on every clip of ../shared/speech:
WER (English normaliser) or CER (zh, ja, ko) per language, language-ID accuracy, and the words
each emits on 60 s of silence and 60 s of noise (target 0).

    python -m bench.accuracy [--model base]
"""

from __future__ import annotations

import argparse
import tempfile
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
from tests.service import Service, service_data_dir
from tests.speech import CHAR_LANGUAGES, clips, error_rate

from bench.common import ROOT, machine, plain_model, save
from bench.service import OPTIONS, write_wav
from hushscribe.engine.store import ModelStore
from hushscribe.languages import normalise_language


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="base")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--data-dir", type=Path, default=ROOT / ".data")
    args = parser.parse_args()
    models = (args.data_dir / "models").resolve()
    fw = plain_model(models / args.model, args.device)
    rng = np.random.default_rng(1)
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        silence, noise = tmp / "silence.wav", tmp / "noise.wav"
        write_wav(silence, np.zeros(60 * 16000, np.float32))
        write_wav(noise, (rng.standard_normal(60 * 16000) * 0.05).astype(np.float32))
        svc = Service(
            service_data_dir(tmp / "svc", models),
            env={
                "HUSHSCRIBE_ENGINE__DEFAULT_MODEL": args.model,
                "HUSHSCRIBE_JOBS__WORKERS": "0",
                "HUSHSCRIBE_ENGINE__DEVICE": args.device,
            },
        )
        svc.start(timeout=300)
        try:
            with svc.client(timeout=900) as c:

                def api(path: Path) -> tuple[str, str]:
                    with path.open("rb") as fh:
                        r = c.post(
                            "/v1/audio/transcriptions",
                            files={"file": (path.name, fh)},
                            data={"model": args.model, "response_format": "verbose_json"},
                        )
                    r.raise_for_status()
                    body = r.json()
                    return body["text"], normalise_language(body["language"]) or body["language"]

                def plain(path: Path) -> tuple[str, str]:
                    segments, info = fw.transcribe(str(path), **OPTIONS)
                    return "".join(s.text for s in segments), info.language

                multilingual = ModelStore(models).info(args.model).multilingual
                chosen = [cl for cl in clips() if multilingual or cl.language == "en"]
                out: dict[str, Any] = {}
                for name, run in (("hushscribe", api), ("plain", plain)):
                    refs: dict[str, list[str]] = defaultdict(list)
                    hyps: dict[str, list[str]] = defaultdict(list)
                    lid = 0
                    for cl in chosen:
                        text, lang = run(cl.path)
                        refs[cl.language].append(cl.reference)
                        hyps[cl.language].append(text)
                        lid += lang == cl.language
                    out[name] = {
                        "error_rate": {k: round(error_rate(refs[k], hyps[k], k), 4) for k in refs},
                        "language_id_accuracy": round(lid / len(chosen), 4),
                        "words_on_silence": len(run(silence)[0].split()),
                        "words_on_noise": len(run(noise)[0].split()),
                    }
        finally:
            svc.stop()
    payload = {
        "machine": machine(),
        "command": f"python -m bench.accuracy --model {args.model}",
        "model": args.model,
        "clips": len(chosen),
        **out,
    }
    lines = [
        "## Accuracy through the API",
        "",
        f"Command: `{payload['command']}` — {len(chosen)} clips; WER with Whisper's English "
        "normaliser, CER for zh/ja/ko, a basic normaliser elsewhere.",
        "",
        "| language | metric | hushscribe API | plain faster-whisper |",
        "|---|---|---|---|",
    ]
    for lang, value in out["hushscribe"]["error_rate"].items():
        metric = "CER" if lang in CHAR_LANGUAGES else "WER"
        lines.append(
            f"| {lang} | {metric} | {value:.1%} | {out['plain']['error_rate'][lang]:.1%} |"
        )
    h, p = out["hushscribe"], out["plain"]
    lines += [
        f"| all | language ID | {h['language_id_accuracy']:.0%} | {p['language_id_accuracy']:.0%} |",
        f"| — | words on 60 s silence | {h['words_on_silence']} | {p['words_on_silence']} |",
        f"| — | words on 60 s noise | {h['words_on_noise']} | {p['words_on_noise']} |",
    ]
    save("accuracy", payload, "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
