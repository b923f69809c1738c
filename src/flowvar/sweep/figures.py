"""A sweep's figures: a line plot or heatmap per ``--metric`` (mean ± sd over seeds) and a verdict map per claim;
every point of the grid appears in each, a point with no value or verdict as a mark saying why."""

from __future__ import annotations

import io
import itertools
import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flowvar.errors import FlowvarError
from flowvar.results import atomic_write_bytes
from flowvar.sweep.grid import Axis, axis_labels, canonical
from flowvar.sweep.tables import (
    VERDICT_SCORE,
    PointOutcome,
    cell_gaps,
    cell_table,
    metric_gap,
    resolve_metric,
    resolve_verdict,
    slug,
    verdict_gap,
)

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


GAP_COLOUR = "0.82"
"""The face of a heatmap cell with no value: a light grey that no colour map here draws (viridis, RdYlGn)."""

NO_VERDICT_Y = -2.0
"""Where a line-plot verdict map draws its points with no verdict: a row of its own below "refuted"."""

GAP_MARKERS = ("X", "s", "D", "^", "v", "P", "*")
"""One marker per reason a point has no value (untestable, failed, claim absent, ...), in order of appearance."""


def text_colour(rgba: Sequence[float]) -> str:
    """Black or white, whichever reads on a cell of colour ``rgba`` (its relative luminance, ITU-R BT.601)."""
    return "black" if 0.299 * rgba[0] + 0.587 * rgba[1] + 0.114 * rgba[2] > 0.5 else "white"


def metric_figure(title: str, axes: Sequence[Axis], table: dict[tuple[str, ...], tuple[float, float, int]],
                  gaps: dict[tuple[str, ...], str] | None = None, *, verdict: bool = False) -> Any:
    """The figure of a :func:`cell_table`: a line plot (one varying axis), heatmap (two) or heatmap panels (more).

    Every cell of the grid is drawn. A cell with no value (``gaps``, from :func:`cell_gaps`: no point of it
    finished, reported the metric, or gave a scored verdict) is a marked gap saying why, never left out: in a
    line plot a grey marker per reason (on a "no verdict" row of its own below "refuted" in a verdict map; on the
    x axis in a metric plot), in a heatmap a grey cell reading "—" and the reason; a legend names the marks.
    None when ``table`` is empty."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    from matplotlib.patches import Patch

    swept = [a for a in axes if a.key != "seed"]
    # the seeds a cell should have: a cell with fewer values (a seed failed, was not run or did not report) says so
    n_seeds = next((len(a.values) for a in axes if a.key == "seed"), 1)
    varying = [i for i, a in enumerate(swept) if len(a.values) > 1]
    labels = [axis_labels(a) for a in swept]  # tick labels: distinct where six digits would write two values alike
    if not table:
        return None
    gaps = gaps or {}
    nothing = "no verdict" if verdict else "no value"

    def key(assignment: dict[int, int]) -> tuple[str, ...]:
        """The cell (:func:`~flowvar.sweep.tables.cell_of`) of the values at these indices (axis → value)."""
        return tuple(canonical(a.values[assignment.get(i, 0)]) for i, a in enumerate(swept))

    def cell(assignment: dict[int, int]) -> tuple[float, float, int]:
        return table.get(key(assignment), (math.nan, math.nan, 0))

    if len(varying) <= 1:
        i = varying[0] if varying else 0
        xs = labels[i] if swept else ["all"]
        numbers, xlabel = numeric_positions(swept[i]) if swept else (None, "")
        keys = [key({i: j}) for j in range(len(xs))] if swept else [next(iter(table))]
        stats = [table.get(k, (math.nan, math.nan, 0)) for k in keys]
        fig, ax = plt.subplots(figsize=(5.5, 3.6))
        positions = numbers if numbers is not None else list(range(len(xs)))
        # a cell with no value is NaN here: the line breaks there rather than joining its neighbours across it
        bar = ax.errorbar(positions, [s[0] if s[2] else math.nan for s in stats],
                    yerr=[s[1] if s[2] else math.nan for s in stats], marker="o", capsize=3,
                    label="verdict, mean over seeds" if verdict else "mean ± sd over seeds")
        handles = [bar]
        by_reason: dict[str, list[float]] = {}
        for position, k, s in zip(positions, keys, stats):
            if 0 < s[2] < n_seeds:
                ax.annotate(f"{s[2]} of {n_seeds} seeds", (position, s[0]), textcoords="offset points",
                            xytext=(4, 4), fontsize=6, color="0.3")
            if s[2] == 0:
                by_reason.setdefault(gaps.get(k, "no point"), []).append(position)
        for marker, (reason, where) in zip(itertools.cycle(GAP_MARKERS), by_reason.items()):
            # a verdict map's gaps on their own row; a metric's on the x axis, whatever its scale (y in axes units)
            where_y = ({"ys": [NO_VERDICT_Y] * len(where)} if verdict else
                       {"ys": [0.0] * len(where), "transform": ax.get_xaxis_transform(), "clip_on": False})
            handles += ax.plot(where, where_y.pop("ys"), linestyle="none", marker=marker, markersize=8, color="0.45",
                               label=f"{nothing}: {reason}", **where_y)
        if numbers is None:
            ax.set_xticks(positions, xs, rotation=30 if max(len(x) for x in xs) > 6 else 0)
        elif (positive := [v for v in numbers if v > 0]) and min(numbers) >= 0 and max(numbers) > 20 * min(positive):
            ax.set_xscale("symlog", linthresh=min(positive))  # values spanning decades, zero included
        if numbers is not None and 1 < len(set(positions)) <= 12:  # a tick at every swept value, when they fit
            ax.set_xticks(positions, xs, rotation=30 if max(len(x) for x in xs) > 6 else 0)
        ax.set_xlabel(xlabel)
        if verdict:
            ax.set_ylim(NO_VERDICT_Y - 0.5, 1.3)
            ax.axhline((NO_VERDICT_Y - 1) / 2, color="0.6", linewidth=0.8, linestyle="--")
            ax.set_yticks([NO_VERDICT_Y, -1, 0, 1], [nothing, "refuted", "inconclusive", "confirmed"])
        ax.set_ylabel("verdict (mean over seeds)" if verdict else "mean ± sd over seeds")
        ax.set_title(title, fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(handles=handles, fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)
    else:
        row, col = varying[0], varying[1]
        rest = varying[2:]
        combos = list(itertools.product(*(range(len(labels[i])) for i in rest))) or [()]
        if len(combos) > 12:
            log.warning("%s: %d panels; plotting the first 12", title, len(combos))
            combos = combos[:12]
        n = len(combos)
        fig, axs = plt.subplots(1, n, figsize=(1.2 + 0.9 * len(labels[col]) * n, 1.2 + 0.6 * len(labels[row])),
                                squeeze=False)
        cmap = matplotlib.colormaps["RdYlGn" if verdict else "viridis"].with_extremes(bad=GAP_COLOUR)
        any_gap = False
        for ax, combo in zip(axs[0], combos):
            fixed = {i: v for i, v in zip(rest, combo)}
            cells = [[{**fixed, row: r, col: c} for c in range(len(labels[col]))] for r in range(len(labels[row]))]
            grid = [[cell(a) for a in line] for line in cells]
            means = np.array([[g[0] if g[2] else math.nan for g in line] for line in grid])
            kwargs = {"vmin": -1, "vmax": 1} if verdict else {}
            image = ax.imshow(np.ma.masked_invalid(means), aspect="auto", cmap=cmap, **kwargs)
            for r, line in enumerate(grid):
                for c, (m, s, k) in enumerate(line):
                    if k == 0:
                        any_gap = True
                        text, face = "—\n" + gaps.get(key(cells[r][c]), "no point"), cmap.get_bad()
                    else:
                        text, face = f"{m:.3g}" + (f"\n±{s:.2g}" if k > 1 else ""), cmap(image.norm(m))
                        if k < n_seeds:
                            text += f"\n{k} of {n_seeds} seeds"
                    ax.text(c, r, text, ha="center", va="center", fontsize=7, color=text_colour(face))
            ax.set_xticks(range(len(labels[col])), labels[col], rotation=30 if max(map(len, labels[col])) > 6 else 0)
            ax.set_yticks(range(len(labels[row])), labels[row])
            ax.set_xlabel(swept[col].key)
            ax.set_ylabel(swept[row].key)
            if combo:
                ax.set_title(", ".join(f"{swept[i].key}={labels[i][j]}" for i, j in fixed.items()), fontsize=8)
            bar = fig.colorbar(image, ax=ax, fraction=0.046)
            if verdict:
                bar.set_ticks([-1, 0, 1], labels=["refuted", "inconclusive", "confirmed"])
        fig.suptitle(title, fontsize=9)
        if verdict or any_gap:
            what = "untestable, failed, claim absent, ..." if verdict else "failed, not run, not reported, ..."
            fig.legend(handles=[Patch(facecolor=GAP_COLOUR, edgecolor="0.5",
                                      label=f"— {nothing} here (the cell says why: {what})")],
                       loc="upper center", bbox_to_anchor=(0.5, 0.0), fontsize=7, frameon=False)
    return fig


def plot_metric(path: Path, title: str, axes: Sequence[Axis], table: dict[tuple[str, ...], tuple[float, float, int]],
                *, verdict: bool = False, gaps: dict[tuple[str, ...], str] | None = None) -> Path | None:
    """:func:`metric_figure` saved as ``path``; None (nothing written) when ``table`` is empty.

    Rendered in memory, then written atomically (:func:`flowvar.results.atomic_write_bytes`, as
    :meth:`RunContext.figure <flowvar.experiments.base.RunContext.figure>` does): a full disk leaves the previous file
    or none, never a partial PNG, and raises :class:`~flowvar.errors.DataError` in one line."""
    import matplotlib.pyplot as plt

    fig = metric_figure(title, axes, table, gaps, verdict=verdict)
    if fig is None:
        return None
    try:
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    finally:
        plt.close(fig)
    atomic_write_bytes(path, buffer.getvalue(), what="figure")
    return path


def draw_figures(out: Path, plan_: Plan, outcomes: Sequence[PointOutcome]) -> tuple[list[str], list[str]]:
    """One figure per chosen metric and one verdict map per claim into ``out/figures``; returns the figure
    paths (relative to ``out``) and warnings: metrics no point reported, and figures that could not be written
    (a full disk: the sweep's tables and log still get their final lines)."""
    figures: list[str] = []
    warnings: list[str] = []
    folder = out / "figures"
    for stale in folder.glob("*.png"):  # the figures of an earlier run of this sweep (other metrics, other grid)
        try:
            stale.unlink()
        except OSError as e:
            warnings.append(f"cannot remove the old figure {stale}: {e.strerror or e}")

    def draw(name: str, title: str, table: dict[tuple[str, ...], tuple[float, float, int]],
             gaps: dict[tuple[str, ...], str], verdict: bool = False) -> None:
        # one file per figure: a name drawn already (two patterns whose slugs agree) gets a numbered suffix
        path, n = folder / f"{name}.png", 2
        while path.relative_to(out).as_posix() in figures:
            path, n = folder / f"{name}-{n}.png", n + 1
        try:
            drawn = plot_metric(path, title, plan_.axes, table, verdict=verdict, gaps=gaps)
        except (FlowvarError, OSError) as e:  # a full disk: this figure is lost, the sweep's record is not
            warnings.append(f"figure {title!r} not written: {e}")
            return
        if drawn is not None:
            figures.append(drawn.relative_to(out).as_posix())

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
        draw(slug(pattern), pattern, cell_table(plan_.axes, outcomes, lambda o, lookup=lookup: lookup.get(id(o))),
             cell_gaps(plan_.axes, outcomes, lambda o, pattern=pattern: metric_gap(pattern, o)))
    for pattern in plan_.verdicts:
        judged = {id(o): resolve_verdict(pattern, o) for o in done}
        # no claim named at any point is a warning; claims named but all untestable (or ambiguous) are a map of
        # marked gaps saying so, as the per-claim maps draw them
        if all(claim is None for claim, _ in judged.values()):
            warnings.append(f"verdict pattern {pattern!r} names no claim of any point")
            continue
        scores = {key: score for key, (_, score) in judged.items()}
        draw(f"verdict-{slug(pattern)}", f"verdict: {pattern}",
             cell_table(plan_.axes, outcomes, lambda o, scores=scores: scores.get(id(o))),
             cell_gaps(plan_.axes, outcomes, lambda o, pattern=pattern: verdict_gap(pattern, o)), verdict=True)
    # a map per claim id that several points judge (an id only one point has would be a single cell: see the
    # tables, or name it with a --verdict pattern); a claim a --verdict pattern names exactly is mapped already
    counts: dict[str, int] = {}
    for o in done:
        for c in o.verdicts:
            counts[c] = counts.get(c, 0) + 1
    for claim in sorted(c for c, n in counts.items() if (n > 1 or len(done) == 1) and c not in plan_.verdicts):
        draw(f"verdict-{slug(claim)}", f"verdict: {claim}",
             cell_table(plan_.axes, outcomes, lambda o, claim=claim: VERDICT_SCORE.get(o.verdicts.get(claim, ""))),
             cell_gaps(plan_.axes, outcomes, lambda o, claim=claim: verdict_gap(claim, o)), verdict=True)
    return figures, warnings


__all__ = ["draw_figures", "metric_figure", "numeric_positions", "plot_metric", "text_colour"]
