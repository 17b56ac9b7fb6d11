"""Tables and plots of a comparison run: ``summarise`` results.json rows, ``format_table``, ``pareto_plot``.

Every number of the report is computed here from the rows of ``results.json``, so a reader (or a
test) can trace each one back.
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Mapping, Sequence

__all__ = ["HV_IDEAL", "HV_OBJECTIVES", "HV_SIZE_SCALE", "format_table", "hypervolume_reference",
           "pareto_plot", "summarise"]

if TYPE_CHECKING:
    from robustnas.plugins.compare import CompareRow

#: The objectives of the report's hypervolume: clean accuracy up, AutoAttack accuracy up, parameters down.
HV_OBJECTIVES: tuple[str, ...] = ("clean_acc", "robust_acc", "params")


#: The best corner of the report's hypervolume box: accuracies 1, no parameters.
HV_IDEAL: tuple[float, ...] = (1.0, 1.0, 0.0)
#: The report's reference puts the sizes at 1.1 x the largest seen, so the largest model still adds volume.
HV_SIZE_SCALE = 1.1


def hypervolume_reference(rows: Iterable[dict[str, Any]]) -> list[float]:
    """Reference point shared by all strategies of a run: accuracies 0, parameters 1.1 x the largest
    seen (``default_reference`` with ``scale=1.1``; a run without metrics counts one parameter)."""
    from robustnas.strategies.pareto import default_reference

    params = [[r["metrics"]["params"]] for r in rows if r.get("metrics")]
    reference = default_reference(HV_OBJECTIVES[2:], params or [[1.0]], scale=HV_SIZE_SCALE)
    return default_reference(HV_OBJECTIVES[:2]) + reference


def _hypervolume(points: Sequence[Sequence[float]], reference: Sequence[float]) -> float:
    """The share of the reference box (from :data:`HV_IDEAL`) that ``points`` dominate, in [0, 1]."""
    from robustnas.strategies.pareto import directions_for, hypervolume

    if not points:
        return 0.0
    return hypervolume(points, reference, directions_for(HV_OBJECTIVES), ideal=HV_IDEAL)


def _mean_spread(values: Sequence[float]) -> tuple[float, float]:
    if not values:
        return math.nan, math.nan
    mean = statistics.fmean(values)
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return mean, spread


def _rows(rows: Iterable[CompareRow | Mapping[str, Any]]) -> list[CompareRow]:
    """``rows`` as :class:`~robustnas.plugins.compare.CompareRow`; dicts (``results.json``'s) are
    checked, a malformed one raises :class:`~robustnas.plugins.errors.DataError` naming its key."""
    from robustnas.plugins.compare import CompareRow

    return [row if isinstance(row, CompareRow) else CompareRow.from_dict(row) for row in rows]


def summarise(rows: Sequence[CompareRow | Mapping[str, Any]],
              strategies: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """One summary row per strategy from the final-evaluation rows of a run.

    Per seed: search wall seconds, candidates evaluated, the best clean accuracy, the best AutoAttack
    accuracy with the parameter count of that model, and the hypervolume of that seed's retrained
    architectures (clean up, robust up, params down; reference from :func:`hypervolume_reference`),
    normalised to [0, 1] by the reference box (1 = a model with clean and AutoAttack accuracy
    1 and no parameters).
    Each figure is then given as mean and standard deviation over seeds.
    """
    typed = _rows(rows)
    reference = hypervolume_reference([row.to_dict() for row in typed])
    by_strategy: dict[str, dict[int, list[CompareRow]]] = defaultdict(lambda: defaultdict(list))
    for row in typed:
        by_strategy[row.strategy][row.seed].append(row)
    order = list(strategies) if strategies else sorted(by_strategy)
    summary = []
    for name in order:
        seeds = by_strategy.get(name, {})
        per_seed: dict[str, list[float]] = defaultdict(list)
        for seed_rows in seeds.values():
            cost = seed_rows[0].search_cost
            best_robust = max(seed_rows, key=lambda r: (r.metrics["robust_acc"], r.metrics["clean_acc"]))
            per_seed["search_seconds"].append(cost["wall_seconds"])
            per_seed["candidates"].append(cost["candidates"])
            per_seed["best_clean_acc"].append(max(r.metrics["clean_acc"] for r in seed_rows))
            per_seed["best_robust_acc"].append(best_robust.metrics["robust_acc"])
            per_seed["params_of_best"].append(best_robust.metrics["params"])
            points = [[r.metrics[k] for k in HV_OBJECTIVES] for r in seed_rows]
            per_seed["hypervolume"].append(_hypervolume(points, reference))
        entry: dict[str, Any] = {"strategy": name, "seeds": len(seeds)}
        for key in ("search_seconds", "candidates", "best_clean_acc", "best_robust_acc", "params_of_best", "hypervolume"):
            entry[key], entry[f"{key}_std"] = _mean_spread(per_seed[key])
        summary.append(entry)
    return summary


_COLUMNS = (
    ("strategy", "strategy", "{}"),
    ("search_seconds", "search s", "{:.0f}"),
    ("candidates", "candidates", "{:.0f}"),
    ("best_clean_acc", "best clean", "{:.3f}"),
    ("best_robust_acc", "best AutoAttack", "{:.3f}"),
    ("params_of_best", "params (best AA)", "{:,.0f}"),
    ("hypervolume", "hypervolume", "{:.3f}"),
)


def _cell(entry: dict[str, Any], key: str, fmt: str) -> str:
    value = entry[key]
    if isinstance(value, str):
        return value
    if isinstance(value, float) and math.isnan(value):
        return "-"
    text = fmt.format(value)
    spread = entry.get(f"{key}_std")
    if entry.get("seeds", 1) > 1 and spread is not None:
        text += " ± " + fmt.format(spread)
    return text


def format_table(summary: Sequence[dict[str, Any]]) -> str:
    """A Markdown table of :func:`summarise`'s rows (mean ± std over seeds when there are several)."""
    header = "| " + " | ".join(title for _, title, _ in _COLUMNS) + " |"
    rule = "|" + "|".join("---" for _ in _COLUMNS) + "|"
    lines = [header, rule]
    for entry in summary:
        lines.append("| " + " | ".join(_cell(entry, key, fmt) for key, _, fmt in _COLUMNS) + " |")
    return "\n".join(lines)


def pareto_plot(rows: Sequence[CompareRow | Mapping[str, Any]], path: str | Path, title: str = "") -> Path:
    """Clean against AutoAttack accuracy of every retrained architecture; marker area by parameters."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    fig, ax = plt.subplots(figsize=(6.4, 4.8), dpi=120)
    typed = _rows(rows)
    largest = max((r.metrics["params"] for r in typed), default=1)
    by_strategy: dict[str, list[CompareRow]] = defaultdict(list)
    for row in typed:
        by_strategy[row.strategy].append(row)
    for name, items in by_strategy.items():
        ax.scatter(
            [r.metrics["clean_acc"] for r in items],
            [r.metrics["robust_acc"] for r in items],
            s=[20 + 280 * r.metrics["params"] / largest for r in items],
            alpha=0.7,
            label=name,
        )
    ax.set_xlabel("clean accuracy")
    ax.set_ylabel("AutoAttack accuracy")
    ax.set_title(title or "retrained architectures (marker area ~ parameters)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
