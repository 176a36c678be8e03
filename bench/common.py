"""What every benchmark shares: the machine description and the report in docs/BENCHMARKS.md."""

from __future__ import annotations

import json
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
DOC = ROOT / "docs" / "BENCHMARKS.md"
ORDER = (
    "engine",
    "service",
    "memory",
    "accuracy",
    "longform",
    "load_accuracy",
    "memory_by_length",
    "healthz",
    "audit_cost",
    "realtime",
    "diarization",
)
QUICK = RESULTS / "quick"
"""Where ``--quick`` smoke runs leave their results (ignored by git, never in the report)."""

INTRO = """# Benchmarks

Measured, never typed in: each section is written by the script named in it, from the JSON it
leaves in `bench/results/`. Re-run a section with its command; `make bench` runs them all.
"""


THREADS = os.cpu_count() or 1
"""Plain faster-whisper gets every core, as the service's workers do."""


def plain_model(path: Path, device: str = "cpu") -> Any:
    """The baseline: faster-whisper as its README shows it, same model directory as ours."""
    from faster_whisper import WhisperModel

    compute = "float16" if device == "cuda" else "int8"
    return WhisperModel(str(path), device=device, compute_type=compute, cpu_threads=THREADS)


def gpu_name() -> str | None:
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,memory.total", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip().replace("\n", "; ") or None


def machine() -> dict[str, Any]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(mem, 1),
        "python": platform.python_version(),
        "gpu": gpu_name(),
    }


def save(name: str, payload: dict[str, Any], section: str, quick: bool = False) -> None:
    """Keep ``payload`` as bench/results/NAME.json, the section beside it, rebuild the report.

    A ``quick`` (smoke) run goes to bench/results/quick/ instead and leaves the report alone."""
    where = QUICK if quick else RESULTS
    where.mkdir(parents=True, exist_ok=True)
    if quick:
        (where / ".gitignore").write_text("*\n")  # smoke results are never committed
    (where / f"{name}.json").write_text(json.dumps(payload, indent=2) + "\n")
    (where / f"{name}.md").write_text(section)
    if not quick:
        DOC.write_text(report())


def report() -> str:
    """docs/BENCHMARKS.md as the saved sections and bench/tried.md make it."""
    parts = [INTRO]
    for part in ORDER:
        path = RESULTS / f"{part}.md"
        if path.is_file():
            parts.append(path.read_text())
    parts.append((ROOT / "bench" / "tried.md").read_text())
    return "\n".join(parts)


if __name__ == "__main__":  # python -m bench.common: rebuild the report after editing tried.md
    DOC.write_text(report())


def bench_args(parser: Any, model: str = "base", quick_model: str = "tiny.en") -> None:
    """The options every service benchmark takes; ``--quick`` also picks ``quick_model``."""
    parser.add_argument("--model", default=None, help=f"default {model} ({quick_model} if --quick)")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--data-dir", type=Path, default=ROOT / ".data")
    parser.add_argument(
        "--quick", action="store_true",
        help="smoke run: small sizes; results in bench/results/quick/, the report untouched",
    )  # fmt: skip
    parser.set_defaults(_model=model, _quick_model=quick_model)


def chosen_model(args: Any) -> str:
    return str(args.model or (args._quick_model if args.quick else args._model))


def machine_line(host: dict[str, Any]) -> str:
    return (
        f"Machine: {host['cpu']}, {host['cores']} cores, {host['memory_gib']} GiB, GPU: "
        f"{host['gpu'] or 'none'}."
    )


def ratio(a: float | None, b: float | None) -> float | None:
    """a / b, or None where b is 0 (or either is missing)."""
    if a is None or b is None or b == 0:
        return None
    return round(a / b, 3)
