"""Plots of a table: the distribution of robust accuracy and the clean-vs-robust scatter."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ._table import Benchmark

__all__ = ["plot_table"]


def plot_table(bench: Benchmark, folder: str | os.PathLike) -> list[Path]:
    """Write ``<name>-hist.png`` (PGD and AutoAttack accuracy over the cells) and
    ``<name>-scatter.png`` (clean against PGD accuracy, size as colour, the clean/PGD/params
    Pareto front circled) into ``folder``; returns the paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    entries = bench.entries()
    clean = np.array([e["clean_acc"] for e in entries])
    pgd = np.array([e["pgd_acc"] for e in entries])
    params = np.array([e["params"] for e in entries])
    robust = np.array([e["robust_acc"] for e in entries if e["robust_acc"] is not None])
    coverage = f"{len(bench)} of {bench.summary()['space_cells']} cells"
    paths = []

    fig, ax = plt.subplots(figsize=(6, 3.6))
    bins = np.linspace(0, 1, 41)
    ax.hist(pgd, bins=bins, alpha=0.7, label=f"PGD-{bench.protocol.pgd_steps if bench.protocol else ''} (all cells)")
    if len(robust):
        ax.hist(robust, bins=bins, alpha=0.7, label=f"AutoAttack ({len(robust)} cells)")
    ax.set_xlabel("robust accuracy")
    ax.set_ylabel("cells")
    ax.set_title(f"{bench.name}: robust accuracy ({coverage})")
    ax.legend()
    fig.tight_layout()
    paths.append(folder / f"{bench.name}-hist.png")
    fig.savefig(paths[-1], dpi=120)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6, 4.2))
    points = ax.scatter(clean, pgd, c=params / 1000, s=6, cmap="viridis", alpha=0.7)
    fig.colorbar(points, ax=ax, label="parameters (k)")
    front = bench.pareto_front(("clean_acc", "pgd_acc", "params"))
    ax.scatter([e["clean_acc"] for e in front], [e["pgd_acc"] for e in front], s=40, facecolors="none",
               edgecolors="red", label=f"Pareto front, clean/PGD/params ({len(front)})")
    ax.set_xlabel("clean accuracy")
    ax.set_ylabel("PGD accuracy")
    ax.set_title(f"{bench.name}: clean vs robust ({coverage})")
    ax.legend(loc="upper left")
    fig.tight_layout()
    paths.append(folder / f"{bench.name}-scatter.png")
    fig.savefig(paths[-1], dpi=120)
    plt.close(fig)
    return paths
