"""Peak memory by audio length: the service's workers while they transcribe a 5 min, a 1 h and a
"4 h" file (3 h 59 min: the default ``audio.max_duration_s`` is 4 h exactly), and when idle after;
next to plain faster-whisper transcribing the same file in a process of its own.

Files up to ``--dense-up-to`` are real English clips end to end (1 s gaps); longer ones are
silence with one clip every ``--every`` (10 min), written as FLAC so they stay small
(bench/longaudio.py). The service runs with its default settings (two workers on CPU); each file
is one job (POST /v1/jobs, poll, GET result). RSS is sampled every 0.2 s with psutil and summed
over the worker processes; the API process is reported on its own; VmHWM (the kernel's own peak
RSS, over each worker's life so far) cross-checks the sampling.

    python -m bench.memory_by_length [--model base] [--lengths 5m 1h 3h59m] [--quick]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import psutil

from bench.clients import default_service, job_round_trip
from bench.common import ROOT, bench_args, chosen_model, machine, machine_line, ratio, save
from bench.longaudio import LongFile, coverage, dense, sparse, wer

SAMPLE_S = 0.2
MIB = 2**20


def seconds_of(text: str) -> float:
    """ "3h59m", "90s", "5m", "600" → seconds."""
    if re.fullmatch(r"\d+(\.\d+)?", text):
        return float(text)
    parts = re.findall(r"(\d+(?:\.\d+)?)([hms])", text)
    if not parts or "".join(a + b for a, b in parts) != text:
        raise argparse.ArgumentTypeError(f"not a length: {text!r} (e.g. 5m, 1h, 3h59m, 90s)")
    return sum(float(n) * {"h": 3600, "m": 60, "s": 1}[u] for n, u in parts)


def label(seconds: float) -> str:
    h, rest = divmod(round(seconds), 3600)
    m, s = divmod(rest, 60)
    return " ".join(f"{v} {u}" for v, u in ((h, "h"), (m, "min"), (s, "s")) if v)


def rss(pid: int) -> float:
    with contextlib.suppress(psutil.Error):
        return float(psutil.Process(pid).memory_info().rss)
    return 0.0


def hwm(pid: int) -> float:
    """VmHWM: the process's peak RSS so far, as the kernel counts it."""
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return float(line.split()[1]) * 1024
    return 0.0


class Sampler:
    """Every 0.2 s: RSS of each process ``pids()`` names (and of ``api``); peaks since reset."""

    def __init__(self, pids: Any, api: int) -> None:
        self.pids, self.api = pids, api
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.seen: set[int] = set()
        self.last: dict[int, float] = {}
        self.reset()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def reset(self) -> None:
        with self.lock:
            self.peak_sum = self.peak_one = self.peak_api = 0.0
            self.samples = 0

    def run(self) -> None:
        while not self.stop.wait(SAMPLE_S):
            with contextlib.suppress(psutil.Error):
                pids = self.pids()
                each = {pid: rss(pid) for pid in pids}
                api = rss(self.api)
                with self.lock:
                    self.seen.update(pids)
                    self.last = each
                    self.peak_sum = max(self.peak_sum, sum(each.values()))
                    self.peak_one = max(self.peak_one, max(each.values(), default=0.0))
                    self.peak_api = max(self.peak_api, api)
                    self.samples += 1

    def now(self) -> dict[str, float]:
        pids = self.pids()
        return {
            "workers_mib": round(sum(rss(p) for p in pids) / MIB, 1),
            "api_mib": round(rss(self.api) / MIB, 1),
        }


def plain_child(model_dir: str, path: str, device: str) -> None:
    """In a fresh process: plain faster-whisper on ``path``; prints its text as JSON."""
    from bench.common import plain_model
    from bench.service import OPTIONS

    fw = plain_model(Path(model_dir), device)
    segments, _ = fw.transcribe(path, **OPTIONS)
    print(json.dumps({"text": "".join(s.text for s in segments)}))


def plain_run(model_dir: Path, lf: LongFile, device: str) -> dict[str, Any]:
    started = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.memory_by_length", "--plain-child", str(model_dir),
         str(lf.path), device],
        cwd=ROOT, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    peak, peak_hwm = 0.0, 0.0
    chunks: list[str] = []

    def read() -> None:
        assert proc.stdout is not None
        chunks.append(proc.stdout.read())

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    while proc.poll() is None:
        peak = max(peak, rss(proc.pid))
        peak_hwm = max(peak_hwm, hwm(proc.pid))
        time.sleep(SAMPLE_S)
    reader.join()
    wall = time.perf_counter() - started
    lines = "".join(chunks).strip().splitlines()
    text = json.loads(lines[-1])["text"] if proc.returncode == 0 and lines else None
    found, missed = coverage(lf.placed, text or "")
    return {
        "peak_rss_mib": round(peak / MIB, 1),
        "vmhwm_mib": round(peak_hwm / MIB, 1),
        "seconds": round(wall, 1),
        "returncode": proc.returncode,
        "wer": wer(lf.reference, text) if text is not None else None,
        "clips_found": found,
        "missed": missed,
    }


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--plain-child":
        plain_child(*sys.argv[2:5])
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", type=seconds_of, nargs="+", default=None,
                        help="default 5m 1h 3h59m (1m 20m 40m if --quick)")  # fmt: skip
    parser.add_argument("--dense-up-to", type=seconds_of, default=600.0)
    parser.add_argument("--every", type=seconds_of, default=600.0, help="sparse: a clip every")
    parser.add_argument("--idle-wait", type=float, default=10.0, help="seconds after each job")
    parser.add_argument("--no-plain", action="store_true", help="skip plain faster-whisper")
    bench_args(parser)
    args = parser.parse_args()
    model = chosen_model(args)
    lengths = args.lengths or ([60.0, 1200.0, 2400.0] if args.quick else [300.0, 3600.0, 14340.0])
    models_dir = (args.data_dir / "models").resolve()
    data = {"model": model}
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        files: list[LongFile] = []
        for sec in lengths:
            name = tmp / f"{int(sec)}s.flac"
            lf = dense(name, sec) if sec <= args.dense_up_to else sparse(name, sec, args.every)
            files.append(lf)
            print(f"{label(sec)}: {lf.kind}, {lf.seconds:.0f} s, {len(lf.placed)} clips, "
                  f"{lf.path.stat().st_size / MIB:.1f} MiB", flush=True)  # fmt: skip
        svc = default_service(tmp / "svc", models_dir, model, args.device)
        svc.start(timeout=300)
        assert svc.proc is not None
        sampler = Sampler(svc.worker_pids, svc.proc.pid)
        try:
            time.sleep(3)
            idle_start = sampler.now()
            workers_at_start = sorted(svc.worker_pids())
            with svc.client(timeout=900) as c:
                for lf in files:
                    sampler.reset()
                    out = job_round_trip(c, lf.path, data, poll_s=1.0)
                    with sampler.lock:
                        peak_sum, peak_one = sampler.peak_sum, sampler.peak_one
                        peak_api, samples = sampler.peak_api, sampler.samples
                    hwms = {pid: hwm(pid) for pid in svc.worker_pids()}
                    time.sleep(args.idle_wait)
                    view = out["view"]
                    found, missed = coverage(lf.placed, out["text"] or "")
                    rows.append(
                        {
                            "length": label(lf.seconds),
                            "audio_seconds": round(lf.seconds, 1),
                            "kind": lf.kind,
                            "clips": len(lf.placed),
                            "file_mib": round(lf.path.stat().st_size / MIB, 2),
                            "peak_workers_mib": round(peak_sum / MIB, 1),
                            "peak_one_worker_mib": round(peak_one / MIB, 1),
                            "peak_api_mib": round(peak_api / MIB, 1),
                            "workers_vmhwm_mib": round(max(hwms.values(), default=0) / MIB, 1),
                            "samples": samples,
                            "idle_after": sampler.now(),
                            "wall_s": round(out["wall_s"], 1),
                            "processing_s": view["timings"]["processing_seconds"],
                            "status": view["status"],
                            "attempts": view["attempts"],
                            "error": view["error"],
                            "wer": wer(lf.reference, out["text"]) if out["text"] else None,
                            "clips_found": found,
                            "missed": missed,
                        }
                    )
                    print({k: v for k, v in rows[-1].items()}, flush=True)
            workers_seen = sorted(sampler.seen)
        finally:
            sampler.stop.set()
            svc.stop()
        if not args.no_plain:
            for lf, r in zip(files, rows, strict=True):
                r["plain"] = plain_run(models_dir / model, lf, args.device)
                r["peak_one_worker_vs_plain"] = ratio(
                    r["peak_one_worker_mib"], r["plain"]["peak_rss_mib"]
                )
                print(label(lf.seconds), "plain:", r["plain"], flush=True)
    payload = {
        "machine": machine(),
        "command": f"python -m bench.memory_by_length --device {args.device} --model {model} "
        "--lengths "
        + " ".join(f"{s:g}" for s in lengths)
        + (" --no-plain" if args.no_plain else "")
        + (" --quick" if args.quick else ""),
        "model": model,
        "idle_at_start": idle_start,
        "worker_pids_at_start": workers_at_start,
        "worker_pids_seen": workers_seen,
        "rows": rows,
    }
    section = markdown(payload)
    save("memory_by_length", payload, section, quick=args.quick)
    print(section)


def markdown(p: dict[str, Any]) -> str:
    plain = all("plain" in r for r in p["rows"])
    restarted = set(p["worker_pids_seen"]) - set(p["worker_pids_at_start"])
    lines = [
        "## Peak memory by audio length",
        "",
        f"Command: `{p['command']}`  ",
        f"{machine_line(p['machine'])} Model {p['model']}; service with its default settings "
        f"(two workers on CPU), one job per file. Worker RSS is sampled every {SAMPLE_S} s and "
        "summed over the workers; *one worker* is the largest single worker; VmHWM is the kernel's "
        "peak RSS of a worker over its life so far. Idle at start (default model loaded, no job yet): workers "
        f"{p['idle_at_start']['workers_mib']} MiB, API {p['idle_at_start']['api_mib']} MiB.",
        "",
        "| audio | file | peak workers (sum) | peak one worker | worker VmHWM | peak API | "
        "workers idle after | job s (wall) | clips found | status"
        + (" | plain faster-whisper peak | one worker ÷ plain | plain s |" if plain else " |"),
        "|---|---|---|---|---|---|---|---|---|---" + ("|---|---|---|" if plain else "|"),
    ]
    for r in p["rows"]:
        status = r["status"] + (f" ({r['attempts']} attempts)" if r["attempts"] > 1 else "")
        if r["error"]:
            status += f": {r['error']['code']}"
        line = (
            f"| {r['length']} ({r['kind']}, {r['clips']} clips) | {r['file_mib']} MiB | "
            f"**{r['peak_workers_mib']} MiB** | {r['peak_one_worker_mib']} MiB | "
            f"{r['workers_vmhwm_mib']} MiB | {r['peak_api_mib']} MiB | "
            f"{r['idle_after']['workers_mib']} MiB | {r['processing_s']} ({r['wall_s']}) | "
            f"{r['clips_found']} / {r['clips']} | {status} |"
        )
        if plain:
            q = r["plain"]
            line += (
                f" {q['peak_rss_mib']} MiB | **{r['peak_one_worker_vs_plain']}** | {q['seconds']} |"
            )
        lines.append(line)
    if restarted:
        lines += ["", f"Worker processes replaced during the run: {len(restarted)}."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
