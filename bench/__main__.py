"""``python -m bench``: every benchmark in turn, then the charts; docs/BENCHMARKS.md is rewritten."""

from __future__ import annotations

import subprocess
import sys

from bench.common import ROOT

STEPS = (
    ["bench.engine"],
    ["bench.service"],
    ["bench.memory"],
    ["bench.accuracy"],
    ["bench.charts"],
)


def main() -> None:
    extra = sys.argv[1:]  # e.g. --data-dir .data, passed to every step that takes it
    for step in STEPS:
        args = [sys.executable, "-m", *step, *(extra if step[0] != "bench.charts" else [])]
        print("→", " ".join(args[1:]), flush=True)
        subprocess.run(args, cwd=ROOT, check=True)


if __name__ == "__main__":
    main()
