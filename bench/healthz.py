"""/healthz latency under load: what a liveness probe sees while 8 clients upload and wait for jobs
and the two workers write results, next to the same probe on the idle service, in one run.

A probe thread GETs /healthz every 50 ms on a new connection (as a kubelet does) with a short
timeout; a probe that times out counts as its timeout. First ``--idle-seconds`` on the idle
service, then ``--seconds`` while ``--clients`` threads each loop: POST /v1/jobs (a real English
clip, 1.8–53 s), poll GET /v1/jobs/{id} every 0.5 s, GET the result.

    python -m bench.healthz [--model base] [--clients 8] [--seconds 60] [--quick]
"""

from __future__ import annotations

import argparse
import math
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

from bench.clients import default_service, job_round_trip
from bench.common import bench_args, chosen_model, machine, machine_line, ratio, save
from bench.longaudio import english

PERIOD_S = 0.05


def probe(url: str, until: threading.Event, timeout: float) -> list[tuple[float, str]]:
    """(seconds, outcome) per probe, one every 50 ms until ``until`` is set; outcome is "ok",
    "timeout" (no answer within ``timeout`` in all: counted as ``timeout``), an HTTP status or an
    error name. One client without keep-alive: a new connection per probe, as a kubelet makes,
    but no client (and TLS context) built per probe in this process."""
    out: list[tuple[float, str]] = []
    no_keepalive = httpx.Limits(max_keepalive_connections=0)
    with httpx.Client(base_url=url, timeout=timeout, limits=no_keepalive) as c:
        tick = time.monotonic()
        while not until.is_set():
            started = time.perf_counter()
            try:
                r = c.get("/healthz")
                outcome = "ok" if r.status_code == 200 else str(r.status_code)
            except httpx.TimeoutException:
                outcome = "timeout"
            except httpx.HTTPError as exc:
                outcome = type(exc).__name__
            took = time.perf_counter() - started
            if took >= timeout:  # httpx times each phase; a probe has one deadline in all
                outcome, took = "timeout", timeout
            out.append((took, outcome))
            tick += PERIOD_S
            now = time.monotonic()
            if tick < now:  # a slow probe: the next starts now, missed ticks are not made up
                tick = now
            time.sleep(tick - now)
    return out


def nearest_rank(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def summary(samples: list[tuple[float, str]]) -> dict[str, Any]:
    ms = [t * 1000 for t, _ in samples]
    return {
        "probes": len(ms),
        "p50_ms": round(nearest_rank(ms, 0.50), 1),
        "p99_ms": round(nearest_rank(ms, 0.99), 1),
        "max_ms": round(max(ms), 1),
        "mean_ms": round(sum(ms) / len(ms), 1),
        "timeouts": sum(o == "timeout" for _, o in samples),
        "not_ok": sum(o not in ("ok", "timeout") for _, o in samples),
        "over_100_ms": sum(m > 100 for m in ms),
        "over_1_s": sum(m > 1000 for m in ms),
    }


def phase(url: str, seconds: float, timeout: float, work: Any = None) -> list[tuple[float, str]]:
    until = threading.Event()
    result: list[list[tuple[float, str]]] = []
    t = threading.Thread(target=lambda: result.append(probe(url, until, timeout)), daemon=True)
    t.start()
    if work is None:
        time.sleep(seconds)
    else:
        work()
    until.set()
    t.join()
    return result[0]


def measure(args: argparse.Namespace, model: str, python: str | None) -> dict[str, Any]:
    """Idle, then loaded, probes against one service (``python``: another install's
    interpreter, to measure an earlier build in the same run)."""
    seconds = args.seconds or (15.0 if args.quick else 60.0)
    idle_s = args.idle_seconds or (5.0 if args.quick else 30.0)
    models_dir = (args.data_dir / "models").resolve()
    data = {"model": model}
    files = [c.path for c in english()]
    jobs = {"done": 0, "other": 0, "errors": 0, "audio_s": 0.0}
    durations = {c.path: c.duration for c in english()}
    lock = threading.Lock()
    with tempfile.TemporaryDirectory() as tmp:
        svc = default_service(Path(tmp) / "svc", models_dir, model, args.device)
        if python:
            svc.python = python
        svc.start(timeout=300)
        try:
            with svc.client(timeout=900) as c:
                job_round_trip(c, files[0], data)  # a worker loads the model
            time.sleep(2)
            idle = phase(svc.url, idle_s, args.probe_timeout)
            stop = time.monotonic() + seconds

            def client(k: int) -> None:
                with svc.client(timeout=900) as c:
                    i = k
                    while time.monotonic() < stop:
                        path = files[i % len(files)]
                        i += args.clients
                        try:
                            out = job_round_trip(c, path, data)
                        except httpx.HTTPError:
                            with lock:
                                jobs["errors"] += 1
                            continue
                        with lock:
                            if out["text"] is not None:
                                jobs["done"] += 1
                                jobs["audio_s"] += durations[path]
                            else:
                                jobs["other"] += 1

            def work() -> None:
                with ThreadPoolExecutor(args.clients) as pool:
                    list(pool.map(client, range(args.clients)))

            started = time.perf_counter()
            loaded = phase(svc.url, seconds, args.probe_timeout, work)
            wall = time.perf_counter() - started
        finally:
            svc.stop()
    idle_s_, load_s_ = summary(idle), summary(loaded)
    return {
        "idle": idle_s_,
        "under_load": load_s_,
        "ratios": {k: ratio(load_s_[k], idle_s_[k]) for k in ("p50_ms", "p99_ms", "max_ms")},
        "load": {
            "clients": args.clients,
            "wall_s": round(wall, 1),
            "jobs_done": jobs["done"],
            "jobs_not_done": jobs["other"],
            "http_errors": jobs["errors"],
            "audio_seconds": round(jobs["audio_s"], 1),
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=None, help="default 60 (15 if --quick)")
    parser.add_argument(
        "--idle-seconds", type=float, default=None, help="default 30 (5 if --quick)"
    )
    parser.add_argument("--probe-timeout", type=float, default=1.0)
    parser.add_argument(
        "--before",
        metavar="PYTHON",
        default=None,
        help="also measure the service of another install (e.g. the previous release's venv "
        "python) in the same run, first, as 'before'",
    )
    parser.add_argument("--before-label", default="before", help="what --before is")
    bench_args(parser)
    args = parser.parse_args()
    model = chosen_model(args)
    before = measure(args, model, args.before) if args.before else None
    after = measure(args, model, None)
    payload = {
        "machine": machine(),
        "command": f"python -m bench.healthz --device {args.device} --model {model} "
        f"--clients {args.clients} --seconds {args.seconds or (15.0 if args.quick else 60.0):g} "
        f"--probe-timeout {args.probe_timeout:g}"
        + (f" --before PYTHON --before-label '{args.before_label}'" if args.before else "")
        + (" --quick" if args.quick else ""),
        "model": model,
        "probe_timeout_s": args.probe_timeout,
        **after,
        "before": before,
        "before_label": args.before_label if before else None,
    }
    section = markdown(payload)
    save("healthz", payload, section, quick=args.quick)
    print(section)


def markdown(p: dict[str, Any]) -> str:
    i, u, r, w = p["idle"], p["under_load"], p["ratios"], p["load"]
    lines = [
        "## /healthz latency under load",
        "",
        f"Command: `{p['command']}`  ",
        f"{machine_line(p['machine'])} Model {p['model']}; service with its default settings "
        "(two workers on CPU, 30 s lease).",
        "",
        f"A probe GETs /healthz every {PERIOD_S * 1000:.0f} ms (or as soon as the last one ends), "
        f"each on a new connection, with a "
        f"{p['probe_timeout_s']:g} s timeout (a timed-out probe counts as {p['probe_timeout_s']:g}"
        f" s). Under load: {w['clients']} clients each upload a real English clip to "
        f"POST /v1/jobs, poll it every 0.5 s and fetch the result, for {w['wall_s']} s: "
        f"{w['jobs_done']} jobs done ({w['audio_seconds']} audio s), {w['jobs_not_done']} not "
        f"done, {w['http_errors']} HTTP errors.",
        "",
        "| service | probes | p50 ms | p99 ms | max ms | timeouts | not 200 | > 100 ms | > 1 s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    rows = [("idle", i), ("under load", u)]
    if p.get("before"):
        b = p["before"]
        label = p["before_label"]
        rows = [(f"{label}: idle", b["idle"]), (f"{label}: under load", b["under_load"]),
                ("now: idle", i), ("now: under load", u)]  # fmt: skip
    for name, s in rows:
        lines.append(
            f"| {name} | {s['probes']} | {s['p50_ms']} | {s['p99_ms']} | {s['max_ms']} | "
            f"{s['timeouts']} | {s['not_ok']} | {s['over_100_ms']} | {s['over_1_s']} |"
        )
    lines.append(
        f"| ratio (load ÷ idle) | — | **{r['p50_ms']}** | **{r['p99_ms']}** | **{r['max_ms']}** "
        "| | | | |"
    )
    if p.get("before"):
        b = p["before"]["under_load"]
        lines += [
            "",
            f"Under load, now ÷ {p['before_label']}: p50 **{ratio(u['p50_ms'], b['p50_ms'])}**, "
            f"p99 **{ratio(u['p99_ms'], b['p99_ms'])}**, max **{ratio(u['max_ms'], b['max_ms'])}**"
            f" ({p['before']['load']['jobs_done']} jobs done then, {w['jobs_done']} now).",
        ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
