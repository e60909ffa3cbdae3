"""Regenerate the benchmark figures from the saved results (docs/bench-results/*.json):
docs/img/latency-vs-load.png and docs/img/cost-per-order.png, and print the tables in
markdown.

    uv run python -m bench.report
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import itertools

import matplotlib.pyplot as plt

from bench._system import RESULTS, ROOT
from bench.http import Run, ratios, table
from bench.pipeline import print_tables

IMG = ROOT / "docs" / "img"


def load(name: str) -> dict[str, Any] | None:
    path = RESULTS / name
    return json.loads(path.read_text()) if path.exists() else None


def plot_latency(pipeline: dict[str, Any], path: Path) -> None:
    rates = pipeline["rates"]
    x = [r["achieved_per_s"] for r in rates]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    for ax, key, title in (
        (axes[0], "paid", "order placed → PaymentCompleted"),
        (axes[1], "receipt", "order placed → receipt mail"),
    ):
        for q, style in (("p50", "o-"), ("p95", "s--"), ("p99", "^:")):
            ys = [r["latency_ms"][key][q] for r in rates]
            ax.plot(x, ys, style, label=q)
        ax.set_title(title)
        ax.set_xlabel("orders/s (open loop)")
        ax.grid(True, alpha=0.3)
        for r in rates:
            ax.annotate(
                f"{r['fraction']:.0%}",
                (r["achieved_per_s"], r["latency_ms"][key]["p50"] or 0),
                textcoords="offset points",
                xytext=(0, -14),
                ha="center",
                fontsize=8,
            )
    axes[0].set_ylabel("latency, ms (from the intended send time)")
    axes[0].legend()
    m = pipeline["machine"]
    fig.suptitle(
        f"eventshop end to end, {m['nproc']} cores; max sustained "
        f"{pipeline['max']['sustained_per_s']} orders/s",
        fontsize=11,
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_cost(pipeline: dict[str, Any], path: Path) -> bool:
    """CPU per order in consecutive windows of the longest cost run: flat means the cost
    of an order does not grow with the data already stored."""
    runs = [c for c in pipeline.get("cost", []) if len(c.get("samples", [])) >= 3]
    if not runs:
        return False
    run = max(runs, key=lambda c: c["orders"])
    samples = run["samples"]
    xs, ys = [], []
    for a, b in itertools.pairwise(samples):
        done = b["receipts"] - a["receipts"]
        if done > 0:
            xs.append(b["receipts"] - samples[0]["receipts"] + done / 2)
            ys.append((b["cpu_s"] - a["cpu_s"]) * 1000 / done)
    fig, ax = plt.subplots(figsize=(7, 3.5))
    ax.plot(xs, ys, ".-")
    ax.axhline(run["cpu_ms_per_order"], color="grey", linestyle="--", label="run average")
    ax.set_xlabel(f"orders completed in the {run['orders']:,}-order run")
    ax.set_ylabel("CPU ms per order (six services)")
    ax.set_ylim(bottom=0)
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.report", description=__doc__)
    parser.add_argument("--pipeline", default="pipeline.json")
    parser.add_argument("--http", default="http.json")
    args = parser.parse_args(argv)

    http = load(args.http)
    if http:
        runs = [Run(**r) for r in http["results"]]
        print(f"## HTTP ({http['machine']['at']}, load {http['machine']['loadavg']})\n")
        print(table(runs))
        for target, ratio in ratios(runs).items():
            print(f"\nratio ours/bare, {target}: {ratio:.2f}")
    pipeline = load(args.pipeline)
    if pipeline:
        print(f"\n## Pipeline ({pipeline['machine']['at']}, load {pipeline['machine']['loadavg']})")
        print_tables(pipeline)
        plot_latency(pipeline, IMG / "latency-vs-load.png")
        print(f"\nwrote {(IMG / 'latency-vs-load.png').relative_to(ROOT)}")
        if plot_cost(pipeline, IMG / "cost-per-order.png"):
            print(f"wrote {(IMG / 'cost-per-order.png').relative_to(ROOT)}")
    if not http and not pipeline:
        print(f"no results in {RESULTS}; run bench.http and bench.pipeline first", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
