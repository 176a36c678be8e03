"""Memory and start-up of the service: RSS idle, under load and after 1,000 requests; model load.

RSS is the sum over the server process and its workers (psutil). Growth is measured from request
100 (models loaded, caches warm) to request ``--requests``.

    python -m bench.memory [--model tiny.en] [--requests 1000] [--clients 8]
"""

from __future__ import annotations

import argparse
import contextlib
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import psutil
from prometheus_client.parser import text_string_to_metric_families
from tests.service import Service, service_data_dir
from tests.speech import clip

from bench.clients import post_transcription
from bench.common import ROOT, machine, save

CLIP = "LJ001-0008.flac"  # 1.8 s, the shortest real clip: the most requests per minute


def rss_mib(pid: int) -> float:
    proc = psutil.Process(pid)
    total = proc.memory_info().rss
    for child in proc.children(recursive=True):
        with contextlib.suppress(psutil.NoSuchProcess):
            total += child.memory_info().rss
    return total / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny.en")
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--data-dir", type=Path, default=ROOT / ".data")
    args = parser.parse_args()
    path = clip(CLIP).path
    with tempfile.TemporaryDirectory() as tmp:
        svc = Service(
            service_data_dir(Path(tmp) / "svc", (args.data_dir / "models").resolve()),
            env={
                "HUSHSCRIBE_ENGINE__DEFAULT_MODEL": args.model,
                "HUSHSCRIBE_JOBS__WORKERS": "0",
                "HUSHSCRIBE_JOBS__LEASE_S": "30",
                "HUSHSCRIBE_ENGINE__DEVICE": args.device,
                "HUSHSCRIBE_NETWORK__METRICS_ALLOW": '["127.0.0.0/8"]',  # the scrape below
            },
        )
        started = time.perf_counter()
        svc.start(timeout=300)
        cold = time.perf_counter() - started
        assert svc.proc is not None
        pid = svc.proc.pid
        try:
            time.sleep(2)
            idle = rss_mib(pid)
            counter = {"n": 0, "errors": 0}
            marks: dict[int, float] = {}
            peak = [idle]
            lock = threading.Lock()
            stop = threading.Event()

            def sample() -> None:
                while not stop.wait(0.5):
                    peak[0] = max(peak[0], rss_mib(pid))

            def client(_k: int) -> None:
                with svc.client(timeout=300) as c:
                    while True:
                        with lock:
                            if counter["n"] >= args.requests:
                                return
                            counter["n"] += 1
                            n = counter["n"]
                        try:
                            post_transcription(c, path)
                        except httpx.HTTPError:
                            with lock:
                                counter["errors"] += 1
                        if n in (100, args.requests // 2):
                            marks[n] = rss_mib(pid)

            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()
            t0 = time.perf_counter()
            with ThreadPoolExecutor(args.clients) as pool:
                list(pool.map(client, range(args.clients)))
            wall = time.perf_counter() - t0
            stop.set()
            time.sleep(2)
            end = rss_mib(pid)
            metrics = httpx.get(svc.url + "/metrics").text
            load_s = {
                s.labels["model"]: round(s.value, 3)
                for f in text_string_to_metric_families(metrics)
                if f.name == "hushscribe_model_load_seconds"
                for s in f.samples
            }
        finally:
            svc.stop()
    at100 = marks.get(100, idle)
    payload: dict[str, Any] = {
        "machine": machine(),
        "command": f"python -m bench.memory --model {args.model} --requests {args.requests} "
        f"--clients {args.clients}",
        "model": args.model,
        "cold_start_to_ready_s": round(cold, 2),
        "model_load_seconds": load_s,
        "rss_idle_mib": round(idle, 1),
        "rss_peak_under_load_mib": round(peak[0], 1),
        "rss_at_request_100_mib": round(at100, 1),
        "rss_at_half_mib": round(marks.get(args.requests // 2, 0.0), 1),
        "rss_after_all_mib": round(end, 1),
        "growth_percent": round(100 * (end - at100) / at100, 2),
        "requests": args.requests,
        "errors": counter["errors"],
        "wall_seconds": round(wall, 1),
    }
    lines = [
        "## Memory and start-up",
        "",
        f"Command: `{payload['command']}` (the service's default two CPU workers; RSS summed over "
        f"the API process and its workers; clip {CLIP}).",
        "",
        "| measure | value |",
        "|---|---|",
        f"| cold start to /readyz = 200 | {payload['cold_start_to_ready_s']} s |",
        f"| model load (worker) | {load_s} s |",
        f"| RSS idle | {payload['rss_idle_mib']} MiB |",
        f"| RSS peak under {args.clients} clients | {payload['rss_peak_under_load_mib']} MiB |",
        f"| RSS at request 100 → {args.requests} | {payload['rss_at_request_100_mib']} → "
        f"{payload['rss_after_all_mib']} MiB (**{payload['growth_percent']} %**) |",
        f"| requests, errors, wall | {args.requests}, {counter['errors']}, "
        f"{payload['wall_seconds']} s |",
    ]
    save("memory", payload, "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
