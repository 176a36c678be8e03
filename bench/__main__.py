"""``python -m bench``: every benchmark in turn, then the charts; docs/BENCHMARKS.md is rewritten.

    python -m bench [--only NAME[,NAME...]] [--quick] [options passed on to each step]

NAME is one of engine, service, memory, accuracy, longform, load_accuracy, memory_by_length,
healthz, audit_cost, realtime, diarization, charts. ``--quick`` is a smoke run of the steps that have one (small sizes, results in
bench/results/quick/, the report untouched); the steps without one are skipped.
"""

from __future__ import annotations

import argparse
import subprocess
import sys

from bench.common import ROOT

STEPS = {
    "engine": "bench.engine",
    "service": "bench.service",
    "memory": "bench.memory",
    "accuracy": "bench.accuracy",
    "longform": "bench.longform",
    "load_accuracy": "bench.load_accuracy",
    "memory_by_length": "bench.memory_by_length",
    "healthz": "bench.healthz",
    "audit_cost": "bench.audit_cost",
    "realtime": "bench.realtime",
    "diarization": "bench.diarization",
    "charts": "bench.charts",
}
QUICK = (
    "longform",
    "load_accuracy",
    "memory_by_length",
    "healthz",
    "audit_cost",
    "realtime",
    "diarization",
)


def names(text: str) -> list[str]:
    chosen = [n.strip() for part in text.split(",") for n in part.split("|") if n.strip()]
    unknown = [n for n in chosen if n not in STEPS]
    if unknown:
        raise argparse.ArgumentTypeError(
            f"unknown: {', '.join(unknown)}; choose from {', '.join(STEPS)}"
        )
    return chosen


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        epilog="Other options (e.g. --data-dir .data, --device cuda) go to every step but charts.",
    )
    parser.add_argument("--only", type=names, action="extend", default=[], metavar="NAME[,NAME]")
    parser.add_argument("--quick", action="store_true")
    args, extra = parser.parse_known_args()
    chosen = args.only or list(STEPS)
    for name in chosen:
        if args.quick and name not in QUICK:
            print(f"→ {name}: no --quick mode, skipped", flush=True)
            continue
        step_args = [] if name == "charts" else [*extra, *(["--quick"] if args.quick else [])]
        cmd = [sys.executable, "-m", STEPS[name], *step_args]
        print("→", " ".join(cmd[1:]), flush=True)
        subprocess.run(cmd, cwd=ROOT, check=True)


if __name__ == "__main__":
    main()
