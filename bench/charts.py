"""PNG charts for docs/BENCHMARKS.md from bench/results/service.json (matplotlib, no display)."""

from __future__ import annotations

import json

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from bench.common import RESULTS, ROOT

OUT = ROOT / "docs" / "bench"


def main() -> None:
    data = json.loads((RESULTS / "service.json").read_text())
    OUT.mkdir(parents=True, exist_ok=True)

    fig, ax = plt.subplots(figsize=(6, 4))
    rows = data["throughput"]
    ax.plot(
        [r["clients"] for r in rows],
        [r["audio_per_second"] for r in rows],
        "o-",
        label="hushscribe API",
    )
    seed = data["seed_server"]
    ax.plot([seed["clients"]], [seed["audio_per_second"]], "s", label="seed server (8 clients)")
    ax.axhline(
        data["plain_sequential"]["audio_per_second"],
        ls="--",
        c="gray",
        label="plain faster-whisper, sequential",
    )
    ax.axhline(
        data["plain_batched"]["audio_per_second"],
        ls=":",
        c="gray",
        label="plain BatchedInferencePipeline, sequential",
    )
    ax.set_xlabel("concurrent clients")
    ax.set_ylabel("audio seconds per wall second")
    ax.set_title("Throughput, short English clips")
    ax.set_ylim(bottom=0)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(OUT / "throughput.png", dpi=100)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(7, 4))
    single = data["single_stream"]
    labels = [f"{r['model']}\n{r['length']}" for r in single]
    x = range(len(single))
    ax.bar(
        [i - 0.2 for i in x],
        [r["audio_seconds"] / r["api_median"] for r in single],
        0.4,
        label="hushscribe API",
    )
    ax.bar(
        [i + 0.2 for i in x],
        [r["audio_seconds"] / r["plain_median"] for r in single],
        0.4,
        label="plain faster-whisper",
    )
    ax.set_xticks(list(x), labels, fontsize=8)
    ax.set_ylabel("x real time (higher is faster)")
    ax.set_title("Single stream, end to end")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(OUT / "single_stream.png", dpi=100)
    plt.close(fig)
    print(f"wrote {OUT / 'throughput.png'} and {OUT / 'single_stream.png'}")


if __name__ == "__main__":
    main()
