"""A sweep's figures: a line plot or heatmap per ``--metric`` (mean ± sd over seeds) and a verdict map per claim."""

from __future__ import annotations

import itertools
import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flowvar.sweep.grid import Axis, canonical, short_label
from flowvar.sweep.tables import VERDICT_SCORE, PointOutcome, cell_table, resolve_metric, resolve_verdict, slug

log = logging.getLogger("flowvar.sweep")

if TYPE_CHECKING:
    from flowvar.sweep.run import Plan

def numeric_positions(axis: Axis) -> tuple[list[float] | None, str]:
    """x positions for a line plot: the values of a numeric axis, or, for a list-valued axis whose lists differ
    in one numeric position only (``sigmas=[0,0.05],[0,0.1]``), that position's values (label ``sigmas[1]``).
    None when the axis is categorical."""

    def is_number(v: Any) -> bool:
        return isinstance(v, int | float) and not isinstance(v, bool)

    if all(is_number(v) for v in axis.values):
        return [float(v) for v in axis.values], axis.key
    lists = [v for v in axis.values if isinstance(v, list | tuple)]
    if len(lists) == len(axis.values) and len({len(v) for v in lists}) == 1:
        varying = [j for j in range(len(lists[0])) if len({canonical(v[j]) for v in lists}) > 1]
        if len(varying) == 1 and all(is_number(v[varying[0]]) for v in lists):
            return [float(v[varying[0]]) for v in lists], f"{axis.key}[{varying[0]}]"
    return None, axis.key


def plot_metric(path: Path, title: str, axes: Sequence[Axis], table: dict[tuple[str, ...], tuple[float, float, int]],
                *, verdict: bool = False) -> Path | None:
    """Line plot (one varying axis), heatmap (two) or heatmap panels (more) of a :func:`cell_table`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    swept = [a for a in axes if a.key != "seed"]
    varying = [i for i, a in enumerate(swept) if len(a.values) > 1]
    labels = [[short_label(v) for v in a.values] for a in swept]
    if not table:
        return None

    def cell(assignment: dict[int, str]) -> tuple[float, float, int]:
        return table.get(tuple(assignment.get(i, labels[i][0]) for i in range(len(swept))), (math.nan, math.nan, 0))

    if len(varying) <= 1:
        i = varying[0] if varying else 0
        xs = labels[i] if swept else ["all"]
        numbers, xlabel = numeric_positions(swept[i]) if swept else (None, "")
        stats = [cell({i: x}) for x in xs] if swept else [next(iter(table.values()))]
        fig, ax = plt.subplots(figsize=(5.5, 3.6))
        positions = numbers if numbers is not None else list(range(len(xs)))
        ax.errorbar(positions, [s[0] for s in stats], yerr=[s[1] for s in stats], marker="o", capsize=3)
        if numbers is None:
            ax.set_xticks(positions, xs, rotation=30 if max(len(x) for x in xs) > 6 else 0)
        elif (positive := [v for v in numbers if v > 0]) and min(numbers) >= 0 and max(numbers) > 20 * min(positive):
            ax.set_xscale("symlog", linthresh=min(positive))  # values spanning decades, zero included
        ax.set_xlabel(xlabel)
        if verdict:
            ax.set_ylim(-1.2, 1.2)
            ax.set_yticks([-1, 0, 1], ["refuted", "inconclusive", "confirmed"])
        ax.set_ylabel("verdict (mean over seeds)" if verdict else "mean ± sd over seeds")
        ax.set_title(title, fontsize=9)
        ax.grid(alpha=0.3)
    else:
        row, col = varying[0], varying[1]
        rest = varying[2:]
        combos = list(itertools.product(*(labels[i] for i in rest))) or [()]
        if len(combos) > 12:
            log.warning("%s: %d panels; plotting the first 12", title, len(combos))
            combos = combos[:12]
        n = len(combos)
        fig, axs = plt.subplots(1, n, figsize=(1.2 + 0.9 * len(labels[col]) * n, 1.2 + 0.6 * len(labels[row])),
                                squeeze=False)
        for ax, combo in zip(axs[0], combos):
            fixed = {i: v for i, v in zip(rest, combo)}
            grid = [[cell({**fixed, row: r, col: c}) for c in labels[col]] for r in labels[row]]
            means = [[g[0] for g in line] for line in grid]
            kwargs = {"cmap": "RdYlGn", "vmin": -1, "vmax": 1} if verdict else {"cmap": "viridis"}
            image = ax.imshow(means, aspect="auto", **kwargs)
            for r, line in enumerate(grid):
                for c, (m, s, k) in enumerate(line):
                    text = "—" if k == 0 else (f"{m:.3g}" + (f"\n±{s:.2g}" if k > 1 else ""))
                    shade = image.norm(m) if math.isfinite(m) else 0.0
                    dark = not verdict and shade < 0.6  # white on the dark end of viridis, black elsewhere
                    ax.text(c, r, text, ha="center", va="center", fontsize=7, color="white" if dark else "black")
            ax.set_xticks(range(len(labels[col])), labels[col], rotation=30 if max(map(len, labels[col])) > 6 else 0)
            ax.set_yticks(range(len(labels[row])), labels[row])
            ax.set_xlabel(swept[col].key)
            ax.set_ylabel(swept[row].key)
            if combo:
                ax.set_title(", ".join(f"{swept[i].key}={v}" for i, v in fixed.items()), fontsize=8)
            fig.colorbar(image, ax=ax, fraction=0.046)
        fig.suptitle(title, fontsize=9)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def draw_figures(out: Path, plan_: Plan, outcomes: Sequence[PointOutcome]) -> tuple[list[str], list[str]]:
    """One figure per chosen metric and one verdict map per claim into ``out/figures``; returns the figure
    paths (relative to ``out``) and warnings for metrics no point reported."""
    figures, warnings = [], []
    folder = out / "figures"
    for stale in folder.glob("*.png"):  # the figures of an earlier run of this sweep (other metrics, other grid)
        stale.unlink()
    done = [o for o in outcomes if o.status in ("computed", "cached")]
    for pattern in plan_.metrics:
        resolved = [resolve_metric(pattern, o) for o in done]
        if not any(v is not None for _, v in resolved):
            ambiguous = any(n is not None for n, _ in resolved)
            import difflib

            names = sorted({m for o in done for m in o.metrics})
            close = difflib.get_close_matches(pattern, names, n=3, cutoff=0.5)
            warnings.append(f"metric {pattern!r} " + ("matches several names per point; make the pattern more "
                                                       "specific" if ambiguous else "was reported by no point")
                            + (f" (close: {', '.join(close)})" if close else ""))
            continue
        lookup = {id(o): v for o, (_, v) in zip(done, resolved)}
        table = cell_table(plan_.axes, outcomes, lambda o, lookup=lookup: lookup.get(id(o)))
        path = plot_metric(folder / f"{slug(pattern)}.png", pattern, plan_.axes, table)
        if path is not None:
            figures.append(path.relative_to(out).as_posix())
    for pattern in plan_.verdicts:
        scores = {id(o): resolve_verdict(pattern, o)[1] for o in done}
        if all(v is None for v in scores.values()):
            warnings.append(f"verdict pattern {pattern!r} names no claim of any point")
            continue
        table = cell_table(plan_.axes, outcomes, lambda o, scores=scores: scores.get(id(o)))
        path = plot_metric(folder / f"verdict-{slug(pattern)}.png", f"verdict: {pattern}", plan_.axes, table,
                           verdict=True)
        if path is not None:
            figures.append(path.relative_to(out).as_posix())
    # a map per claim id that several points judge (an id only one point has would be a single cell: see the
    # tables, or name it with a --verdict pattern)
    counts: dict[str, int] = {}
    for o in done:
        for c in o.verdicts:
            counts[c] = counts.get(c, 0) + 1
    for claim in sorted(c for c, n in counts.items() if n > 1 or len(done) == 1):
        table = cell_table(plan_.axes, outcomes,
                           lambda o, claim=claim: VERDICT_SCORE.get(o.verdicts.get(claim, "")))
        path = plot_metric(folder / f"verdict-{slug(claim)}.png", f"verdict: {claim}", plan_.axes, table,
                           verdict=True)
        if path is not None:
            figures.append(path.relative_to(out).as_posix())
    return figures, warnings


__all__ = ["draw_figures", "numeric_positions", "plot_metric"]
