"""A sweep's figures: a line plot or heatmap per ``--metric`` (mean ± sd over seeds) and a verdict map per claim;
every point of the grid appears in each, a point with no value or verdict as a mark saying why."""

from __future__ import annotations

import io
import itertools
import logging
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flowvar.errors import FlowvarError
from flowvar.files import atomic_write_bytes
from flowvar.sweep.grid import Axis, axis_labels, canonical
from flowvar.sweep.tables import (
    VERDICT_SCORE,
    PointOutcome,
    cell_gaps,
    cell_shortfalls,
    cell_table,
    matching_names,
    metric_gap,
    resolve_metric,
    resolve_verdict,
    slug,
    verdict_gap,
    verdict_of,
    verdict_splits,
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


def value_order(axis: Axis) -> Axis:
    """``axis`` with its values in the order a figure draws them: a numeric axis (:func:`numeric_positions`) by
    value, so that a line joins neighbouring values, a verdict steps between them and a heatmap's rows and columns
    read in order, however the grid was typed or extended (``x=10,1,100``; ``x=1,10`` extended to ``x=1,10,3``); a
    categorical axis as typed. Only the figures reorder: the points, their indices and ``sweep.csv`` keep the grid's
    order (the last key varies fastest, in the order typed)."""
    positions, _ = numeric_positions(axis)
    if positions is None:
        return axis
    order = sorted(range(len(axis.values)), key=positions.__getitem__)  # stable: equal positions keep their order
    return Axis(axis.key, tuple(axis.values[j] for j in order))


LOG_SPAN = 100.0
"""How many times its smallest value the largest must be for a figure's metric values (y of a line plot, colour of a
heatmap) to be drawn on a log scale (when every one is positive): past two decades a linear scale flattens the small
values onto zero (0.04 … 100) or into one colour. The cells still print their values."""


def log_scaled(values: Sequence[float]) -> bool:
    """Whether metric values are drawn on a log scale: every finite one positive and the largest more than
    :data:`LOG_SPAN` times the smallest (the rule the x axis follows with its symlog, at 20×)."""
    finite = [v for v in values if math.isfinite(v)]
    return bool(finite) and min(finite) > 0 and max(finite) > LOG_SPAN * min(finite)


GAP_COLOUR = "0.82"
"""The face of a heatmap cell with no value: a light grey that no colour map here draws (viridis, RdYlGn)."""

SPLIT_FACE = "white"
"""The face of a verdict-map cell whose seeds disagree (:func:`~flowvar.sweep.tables.verdict_splits`), hatched: no
verdict's colour (their mean, 0 for one confirmed and one refuted seed, would read "inconclusive")."""

NO_VERDICT_Y = -2.0
"""Where a line-plot verdict map draws its points with no verdict: a row of its own below "refuted"."""

SPLIT_Y = 2.0
"""Where a line-plot verdict map draws its points whose seeds disagree: a row of its own above "confirmed"."""

GAP_MARKERS = ("X", "s", "D", "^", "v", "P", "*")
"""One marker per reason a point has no value (untestable, failed, claim absent, ...), in order of appearance."""

MAX_PANELS = 48
"""The most heatmap panels (one per combination of the third and later swept keys) one figure draws, 4 a row;
:func:`draw_figures` warns (terminal and ``sweep.json``) when a figure leaves panels out."""

PANELS_PER_ROW = 4

VERDICT_TICKS = ([-1, 0, 1], ["refuted", "inconclusive", "confirmed"])


def text_colour(rgba: Sequence[float]) -> str:
    """Black or white, whichever reads on a cell of colour ``rgba`` (its relative luminance, ITU-R BT.601)."""
    return "black" if 0.299 * rgba[0] + 0.587 * rgba[1] + 0.114 * rgba[2] > 0.5 else "white"


def panel_count(axes: Sequence[Axis]) -> int:
    """How many heatmap panels :func:`metric_figure` needs: the product of the value counts of the swept keys
    after the first two that vary (1 with fewer than three)."""
    varying = [a for a in axes if a.key != "seed" and len(a.values) > 1]
    return math.prod(len(a.values) for a in varying[2:])


def _wrapped(reason: str, width: int = 14) -> str:
    """A gap's reason broken into lines of about ``width`` characters, so a long one stays inside its cell."""
    import textwrap

    return "\n".join(textwrap.wrap(reason, width, break_long_words=True)) or reason


def metric_figure(title: str, axes: Sequence[Axis], table: dict[tuple[str, ...], tuple[float, float, int]],
                  gaps: dict[tuple[str, ...], str] | None = None, *, verdict: bool = False,
                  splits: dict[tuple[str, ...], str] | None = None,
                  shortfalls: dict[tuple[str, ...], str] | None = None, replicates: str | None = None) -> Any:
    """The figure of a :func:`cell_table`: a line plot (one varying axis), heatmap (two) or heatmap panels (more).

    Every cell of the grid is drawn. A cell with no value (``gaps``, from :func:`cell_gaps`: no point of it
    finished, reported the metric, or gave a scored verdict) is a marked gap saying why, never left out: in a
    line plot a grey marker per reason (on a "no verdict" row of its own below "refuted" in a verdict map; on the
    x axis in a metric plot), in a heatmap a grey cell reading "—" and the reason; a legend names the marks. In a
    verdict map a cell whose seeds disagree (``splits``, from :func:`verdict_splits`: ``"1 c / 1 r"``) is drawn
    as split (a "seeds disagree" row above "confirmed"; a hatched white cell), never in a verdict's colour, and
    no error bars are drawn (a verdict is not a quantity with a spread). A metric's cell is its mean over the
    seeds the sweep ran (± their sd when there are several). Heatmap panels share one colour scale and one colour
    bar; at most :data:`MAX_PANELS` are drawn. A cell some of whose seeds give no value or verdict says how many it
    holds and why the others are missing (``shortfalls``, from :func:`cell_shortfalls`): "confirmed, 1 of 2 seeds
    (1 untestable)" reads apart from "(1 failed)"; in a line plot these labels alternate above and below the points
    so that neighbours do not overlap. Points are joined by a line only along a numeric axis — a metric's by a
    straight line, a verdict's by a step (a verdict has no value between two swept values) —, never across the
    values of a categorical one; a numeric axis is drawn in value order (:func:`value_order`), a categorical one as
    typed. A metric whose values are all positive and span more than two decades (:func:`log_scaled`) gets a log y
    axis or colour scale. ``replicates`` (:func:`point_replicates`: ``"n_seeds = 2 trainings"``) says what
    each point already averages, so that a spread over seed points is not read as one over trainings. None when
    ``table`` is empty."""
    if not table:
        return None
    swept = [value_order(a) for a in axes if a.key != "seed"]  # numeric axes in value order, not as typed
    # the seeds a cell should have: a cell with fewer values (a seed failed, was not run or did not report) says so
    n_seeds = next((len(a.values) for a in axes if a.key == "seed"), 1)
    varying = [i for i, a in enumerate(swept) if len(a.values) > 1]
    context = _FigureContext(title, swept, table, gaps or {}, (splits or {}) if verdict else {}, verdict, n_seeds,
                             shortfalls or {}, replicates)
    return context.line_plot(varying[0] if varying else 0) if len(varying) <= 1 else context.heatmaps(varying)


class _FigureContext:
    """What :func:`metric_figure` draws from: the swept axes, the cell table, its gaps and splits."""

    def __init__(self, title: str, swept: list[Axis], table: dict[tuple[str, ...], tuple[float, float, int]],
                 gaps: dict[tuple[str, ...], str], splits: dict[tuple[str, ...], str], verdict: bool,
                 n_seeds: int, shortfalls: dict[tuple[str, ...], str], replicates: str | None = None) -> None:
        self.title, self.swept, self.table, self.gaps, self.splits = title, swept, table, gaps, splits
        self.verdict, self.n_seeds, self.shortfalls = verdict, n_seeds, shortfalls
        self.labels = [axis_labels(a) for a in swept]  # tick labels: distinct where six digits write two alike
        self.nothing = "no verdict" if verdict else "no value"
        # a point that trains n_seeds replicates itself: the spread is over seed points, each of those trainings
        each = f"each point: {replicates}" if replicates else ""
        if verdict:
            # a seed with no verdict (untestable, failed) is not counted: the agreement is among the judged ones
            self.value_label = "verdict (the judged seeds agree)" if n_seeds > 1 else "verdict"
        elif n_seeds > 1 and each:
            self.value_label = f"mean ± sd over {n_seeds} seed points\n({each})"
        elif n_seeds > 1:
            self.value_label = f"mean ± sd over {n_seeds} seeds"
        else:
            self.value_label = f"value (one point per cell{'; ' + each if each else ''})"
        self.bar_label = ((f"mean over seed points (± in a cell: sd over {n_seeds} seed points;\n{each})" if each else
                           "mean over seeds (± in a cell: sd over seeds)") if n_seeds > 1 else
                          f"value{' (' + each + ')' if each else ''}")

    def key(self, assignment: dict[int, int]) -> tuple[str, ...]:
        """The cell (:func:`~flowvar.sweep.tables.cell_of`) of the values at these indices (axis → value)."""
        return tuple(canonical(a.values[assignment.get(i, 0)]) for i, a in enumerate(self.swept))

    def held(self, cell: tuple[str, ...], count: int, sep: str = "\n") -> str:
        """``"1 of 2 seeds"`` and, where the cell's other seeds are known to be missing for a reason, ``sep`` and
        ``"(1 untestable)"``; "" for a cell holding every seed."""
        if not 0 < count < self.n_seeds:
            return ""
        why = self.shortfalls.get(cell)
        return f"{count} of {self.n_seeds} seeds" + (f"{sep}({why})" if why else "")

    def stats(self, cell: tuple[str, ...]) -> tuple[float, float, int]:
        if cell in self.splits:  # drawn as split, not at the mean of disagreeing verdicts
            return math.nan, math.nan, 0
        return self.table.get(cell, (math.nan, math.nan, 0))

    def line_plot(self, i: int) -> Any:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        swept, verdict = self.swept, self.verdict
        xs = self.labels[i] if swept else ["all"]
        numbers, xlabel = numeric_positions(swept[i]) if swept else (None, "")
        keys = [self.key({i: j}) for j in range(len(xs))] if swept else [next(iter(self.table))]
        stats = [self.stats(k) for k in keys]
        # wide enough for a label per value: categories (and their seed notes) sit about 0.75 in apart at least
        fig, ax = plt.subplots(figsize=(max(5.5, 1.5 + 0.75 * len(xs)), 3.6))
        positions = numbers if numbers is not None else list(range(len(xs)))
        # a cell with no value is NaN here: the line breaks there rather than joining its neighbours across it. A
        # categorical axis has nothing between its values, so its points are not joined at all; a verdict along a
        # numeric axis changes at a step, not by a slope through "inconclusive"
        spread = None if verdict or self.n_seeds == 1 else [s[1] if s[2] else math.nan for s in stats]
        style: dict[str, Any] = ({"linestyle": "none"} if numbers is None else
                                 {"drawstyle": "steps-mid"} if verdict else {})
        bar = ax.errorbar(positions, [s[0] if s[2] else math.nan for s in stats], yerr=spread, marker="o",
                          capsize=3, label=self.value_label, **style)
        handles = [bar]
        by_reason: dict[str, list[float]] = {}
        split_at: list[tuple[float, str]] = []
        last = max(positions)
        noted = False
        for j, (position, k, s) in enumerate(zip(positions, keys, stats)):
            note = self.held(k, s[2])
            if note:
                noted = True
                # neighbouring values alternate above and below their points, so their notes never meet; the note
                # at the last x reads leftwards (rightwards it runs off the plot, under the legend), at the first
                # rightwards
                above = j % 2 == 0
                align = "right" if position == last and len(positions) > 1 else \
                    "left" if j == 0 and len(positions) > 1 else "center"
                ax.annotate(note, (position, s[0]), textcoords="offset points",
                            xytext=({"right": -4, "left": 4, "center": 0}[align], 6 if above else -6),
                            ha=align, va="bottom" if above else "top", fontsize=6, color="0.3",
                            multialignment="center")
            if k in self.splits:
                split_at.append((position, self.splits[k] + (f"\n({self.shortfalls[k]})" if k in self.shortfalls
                                                             else "")))
            elif s[2] == 0:
                by_reason.setdefault(self.gaps.get(k, "no point"), []).append(position)
        for marker, (reason, where) in zip(itertools.cycle(GAP_MARKERS), by_reason.items()):
            # a verdict map's gaps on their own row; a metric's on the x axis, whatever its scale (y in axes units)
            where_y = ({"ys": [NO_VERDICT_Y] * len(where)} if verdict else
                       {"ys": [0.0] * len(where), "transform": ax.get_xaxis_transform(), "clip_on": False})
            handles += ax.plot(where, where_y.pop("ys"), linestyle="none", marker=marker, markersize=8, color="0.45",
                               label=f"{self.nothing}: {reason}", **where_y)
        if split_at:
            handles += ax.plot([p for p, _ in split_at], [SPLIT_Y] * len(split_at), linestyle="none", marker="o",
                               markersize=8, markerfacecolor="white", markeredgecolor="0.3",
                               label="seeds disagree (c confirmed, i inconclusive, r refuted)")
            for position, counts in split_at:
                # above the marker, 2 pt clear of its 8 pt edge, where the topmost row leaves room: anchored below
                # it at its baseline, a two-line label ("1 c / 1 i" over "(1 untestable)") rose into the hollow
                # marker it counts, and under it a second line would meet the "confirmed" row's seed notes
                ax.annotate(counts, (position, SPLIT_Y), textcoords="offset points", xytext=(0, 6), fontsize=6,
                            ha="center", va="bottom", color="0.3", multialignment="center")
        if numbers is None:
            ax.set_xticks(positions, xs, rotation=30 if max(len(x) for x in xs) > 6 else 0)
        elif (positive := [v for v in numbers if v > 0]) and min(numbers) >= 0 and max(numbers) > 20 * min(positive):
            ax.set_xscale("symlog", linthresh=min(positive))  # values spanning decades, zero included
        if numbers is not None and 1 < len(set(positions)) <= 12:  # a tick at every swept value, when they fit
            ax.set_xticks(positions, xs, rotation=30 if max(len(x) for x in xs) > 6 else 0)
        ax.set_xlabel(xlabel)
        if verdict:
            # a two-line note above a "confirmed" point needs room below the title
            top = SPLIT_Y + 1.0 if split_at else (1.8 if noted else 1.3)  # a split's counts sit above its marker
            ax.set_ylim(NO_VERDICT_Y - 0.5, top)
            ax.axhline((NO_VERDICT_Y - 1) / 2, color="0.6", linewidth=0.8, linestyle="--")
            ticks, names = [NO_VERDICT_Y, *VERDICT_TICKS[0]], [self.nothing, *VERDICT_TICKS[1]]
            if split_at:
                ax.axhline((SPLIT_Y + 1) / 2, color="0.6", linewidth=0.8, linestyle="--")
                ticks, names = [*ticks, SPLIT_Y], [*names, "seeds disagree"]
            ax.set_yticks(ticks, names)
        else:
            logy = log_scaled([s[0] for s in stats if s[2]])
            if logy:  # 0.04 … 100 on a linear axis puts the small values on zero
                ax.set_yscale("log")
            if noted:  # room for the notes above the highest point and below the lowest (a factor on a log axis)
                low, high = ax.get_ylim()
                if logy:
                    factor = (high / low) ** 0.15
                    ax.set_ylim(low / factor, high * factor)
                else:
                    ax.set_ylim(low - 0.15 * (high - low), high + 0.15 * (high - low))
        ax.set_ylabel("verdict" if verdict else self.value_label)
        ax.set_title(self.title, fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(handles=handles, fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)
        return fig

    def heatmaps(self, varying: list[int]) -> Any:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        import numpy as np
        from matplotlib.colors import LogNorm, Normalize
        from matplotlib.patches import Patch, Rectangle

        swept, labels, verdict = self.swept, self.labels, self.verdict
        row, col, rest = varying[0], varying[1], varying[2:]
        combos = list(itertools.product(*(range(len(labels[i])) for i in rest)))[:MAX_PANELS] or [()]
        panels = [[[{**dict(zip(rest, combo)), row: r, col: c} for c in range(len(labels[col]))]
                   for r in range(len(labels[row]))] for combo in combos]
        grids = [[[self.stats(self.key(a)) for a in line] for line in cells] for cells in panels]
        means = [np.array([[g[0] if g[2] else math.nan for g in line] for line in grid]) for grid in grids]
        # one colour scale for every panel: the same colour is the same value in each
        finite = np.concatenate([m[np.isfinite(m)] for m in means])
        low, high = (-1.0, 1.0) if verdict else ((float(finite.min()), float(finite.max())) if finite.size else
                                                 (0.0, 1.0))
        # values over more than two decades on a log scale, where a linear one gives most cells one colour
        norm = (LogNorm(vmin=low, vmax=high) if not verdict and log_scaled(finite.tolist()) else
                Normalize(vmin=low, vmax=high if high > low else low + 1.0))
        ncols = min(len(combos), PANELS_PER_ROW)
        nrows = math.ceil(len(combos) / ncols)
        width = 1.0 + (0.35 + 0.9 * len(labels[col])) * ncols
        fig = plt.figure(figsize=(width + 1.0, 1.4 + (0.8 + 0.6 * len(labels[row])) * nrows), layout="constrained")
        axs = fig.subplots(nrows, ncols, squeeze=False).ravel()
        cmap = matplotlib.colormaps["RdYlGn" if verdict else "viridis"].with_extremes(bad=GAP_COLOUR)
        any_gap = any_split = False
        image = None
        for ax, combo, cells, grid, mean in zip(axs, combos, panels, grids, means):
            image = ax.imshow(np.ma.masked_invalid(mean), aspect="auto", cmap=cmap, norm=norm)
            for r, line in enumerate(grid):
                for c, (m, s, k) in enumerate(line):
                    cell = self.key(cells[r][c])
                    if cell in self.splits:
                        any_split, face = True, matplotlib.colors.to_rgba(SPLIT_FACE)
                        ax.add_patch(Rectangle((c - 0.5, r - 0.5), 1, 1, facecolor=SPLIT_FACE, edgecolor="0.8",
                                               hatch="///", linewidth=0))
                        text = "seeds disagree\n" + self.splits[cell]
                        if cell in self.shortfalls:  # the seeds that gave no verdict, and why
                            text += f"\n({self.shortfalls[cell]})"
                    elif k == 0:
                        any_gap, face = True, cmap.get_bad()
                        text = "—\n" + _wrapped(self.gaps.get(cell, "no point"))
                    else:
                        face = cmap(norm(m))
                        if verdict:  # the judged seeds agree (else the cell is split): the verdict itself
                            text = VERDICT_TICKS[1][VERDICT_TICKS[0].index(round(m))]
                        else:
                            text = f"{m:.3g}" + (f"\n±{s:.2g}" if k > 1 else "")
                        if k < self.n_seeds:
                            text += "\n" + self.held(cell, k)
                    ax.text(c, r, text, ha="center", va="center", fontsize=7, color=text_colour(face))
            ax.set_xticks(range(len(labels[col])), labels[col], rotation=30 if max(map(len, labels[col])) > 6 else 0)
            ax.set_yticks(range(len(labels[row])), labels[row])
            ax.set_xlabel(swept[col].key)
            ax.set_ylabel(swept[row].key)
            if combo:
                ax.set_title(", ".join(f"{swept[i].key}={labels[i][j]}" for i, j in zip(rest, combo)), fontsize=8)
        for ax in axs[len(combos):]:
            ax.set_visible(False)
        bar = fig.colorbar(image, ax=list(axs[:len(combos)]), shrink=0.9)
        if verdict:
            bar.set_ticks(VERDICT_TICKS[0], labels=VERDICT_TICKS[1])
        else:
            bar.set_label(self.bar_label)
        fig.suptitle(self.title, fontsize=9)
        handles = []
        if any_gap:
            what = "untestable, failed, claim absent, ..." if verdict else "failed, not run, not reported, ..."
            handles.append(Patch(facecolor=GAP_COLOUR, edgecolor="0.5",
                                 label=f"— {self.nothing} here (the cell says why: {what})"))
        if any_split:
            handles.append(Patch(facecolor=SPLIT_FACE, edgecolor="0.6", hatch="///",
                                 label="seeds disagree (c confirmed, i inconclusive, r refuted)"))
        if handles:
            fig.legend(handles=handles, loc="outside lower center", fontsize=7, frameon=False)
        return fig


def plot_metric(path: Path, title: str, axes: Sequence[Axis], table: dict[tuple[str, ...], tuple[float, float, int]],
                *, verdict: bool = False, gaps: dict[tuple[str, ...], str] | None = None,
                splits: dict[tuple[str, ...], str] | None = None,
                shortfalls: dict[tuple[str, ...], str] | None = None, replicates: str | None = None) -> Path | None:
    """:func:`metric_figure` saved as ``path``; None (nothing written) when ``table`` is empty.

    Rendered in memory, then written atomically (:func:`flowvar.files.atomic_write_bytes`, as
    :meth:`RunContext.figure <flowvar.experiments.base.RunContext.figure>` does): a full disk leaves the previous file
    or none, never a partial PNG, and raises :class:`~flowvar.errors.DataError` in one line."""
    import matplotlib.pyplot as plt

    fig = metric_figure(title, axes, table, gaps, verdict=verdict, splits=splits, shortfalls=shortfalls,
                        replicates=replicates)
    if fig is None:
        return None
    try:
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    finally:
        plt.close(fig)
    atomic_write_bytes(path, buffer.getvalue(), what="figure")
    return path


def remove_figures(out: Path) -> list[str]:
    """Delete the PNGs in ``out/figures`` (an earlier run's, before new ones are drawn, or when an interrupted run
    draws none: they would show another grid or other points as this sweep's); returns a warning per file that
    could not be removed."""
    warnings = []
    for stale in (out / "figures").glob("*.png"):
        try:
            stale.unlink()
        except OSError as e:
            warnings.append(f"cannot remove the old figure {stale}: {e.strerror or e}")
    return warnings


def point_replicates(points: Sequence[Any]) -> str | None:
    """What each grid point already averages, for the figures' labels: ``"n_seeds = 2 trainings"`` when the points'
    configs train ``n_seeds`` > 1 replicates each (fig6's ``--seeds 0,2,4`` is 3 seed points of 2 trainings, 6
    networks), ``"n_seeds = 1–3 trainings"`` when a swept ``n_seeds`` differs between points; None when every point
    trains one (or the experiment has no ``n_seeds``)."""
    counts = sorted({n for p in points if isinstance(n := getattr(p.config, "n_seeds", None), int)
                     and not isinstance(n, bool)})
    if not counts or counts[-1] <= 1:
        return None
    return f"n_seeds = {counts[0]} trainings" if len(counts) == 1 else f"n_seeds = {counts[0]}–{counts[-1]} trainings"


def no_value_warning(pattern: str, done: Sequence[PointOutcome]) -> str:
    """Why the ``--metric`` ``pattern`` gives none of the finished points ``done`` a number (so no figure is drawn),
    in the words of :func:`~flowvar.sweep.tables.metric_gap`: it matches several names of some point (ambiguous);
    else it names one metric that is text, never a number (``stats.label``: "is not a number at any point", with
    its values); else no point reports it. Close names are listed for the first and last."""
    import difflib

    matches = [matching_names(pattern, o, o.metrics) for o in done]
    texts = sorted({str(o.metrics[m[0]]) for o, m in zip(done, matches) if len(m) == 1})
    names = sorted({m for o in done for m in o.metrics})
    close = difflib.get_close_matches(pattern, names, n=3, cutoff=0.5)
    listing = f" (close: {', '.join(close)})" if close else ""
    if any(len(m) > 1 for m in matches):
        return f"metric {pattern!r} matches several names per point; make the pattern more specific{listing}"
    if texts:  # one name per point, none of them a number (a label, a verdict word): a figure needs numbers
        shown = ", ".join(repr(t) for t in texts[:3]) + (", ..." if len(texts) > 3 else "")
        return (f"metric {pattern!r} is not a number at any point (its values: {shown}); a figure plots a number: "
                f"choose a numeric metric")
    return f"metric {pattern!r} was reported by no point{listing}"


def draw_figures(out: Path, plan_: Plan, outcomes: Sequence[PointOutcome]) -> tuple[list[str], list[str]]:
    """One figure per chosen metric and one verdict map per claim into ``out/figures``; returns the figure
    paths (relative to ``out``) and warnings: metrics no point reported, and figures that could not be written
    (a full disk: the sweep's tables and log still get their final lines)."""
    figures: list[str] = []
    folder = out / "figures"
    warnings = remove_figures(out)  # the figures of an earlier run of this sweep (other metrics, other grid)
    replicates = point_replicates(plan_.points)

    def draw(name: str, title: str, table: dict[tuple[str, ...], tuple[float, float, int]],
             gap: Callable[[PointOutcome], str | None], verdict: bool = False,
             splits: dict[tuple[str, ...], str] | None = None) -> None:
        # why a cell has no value (every point), or fewer seeds than the sweep ran (some): one reason per point
        reasons = {id(o): gap(o) for o in outcomes}
        gaps = cell_gaps(plan_.axes, outcomes, lambda o: reasons[id(o)])
        shortfalls = cell_shortfalls(plan_.axes, outcomes, lambda o: reasons[id(o)])
        # one file per figure: a name drawn already (two patterns whose slugs agree) gets a numbered suffix
        path, n = folder / f"{name}.png", 2
        while path.relative_to(out).as_posix() in figures:
            path, n = folder / f"{name}-{n}.png", n + 1
        try:
            drawn = plot_metric(path, title, plan_.axes, table, verdict=verdict, gaps=gaps, splits=splits,
                                shortfalls=shortfalls, replicates=replicates)
        except (FlowvarError, OSError) as e:  # a full disk: this figure is lost, the sweep's record is not
            warnings.append(f"figure {title!r} not written: {e}")
            return
        if drawn is not None:
            figures.append(drawn.relative_to(out).as_posix())
            if panel_count(plan_.axes) > MAX_PANELS:
                warnings.append(f"figure {title!r} draws the first {MAX_PANELS} of its {panel_count(plan_.axes)} "
                                f"panels (one per combination of the third and later swept keys); sweep.csv holds "
                                f"every point: sweep fewer keys at once to see them all")

    def draw_verdicts(name: str, title: str, verdict: Callable[[PointOutcome], str | None],
                      gap: Callable[[PointOutcome], str | None]) -> None:
        known = {id(o): verdict(o) for o in outcomes}  # each point's verdict resolved once, for the map and its splits
        draw(name, title,
             cell_table(plan_.axes, outcomes, lambda o: VERDICT_SCORE.get(known[id(o)] or "")), gap, verdict=True,
             splits=verdict_splits(plan_.axes, outcomes, lambda o: known[id(o)]))

    done = [o for o in outcomes if o.status in ("computed", "cached")]
    for pattern in plan_.metrics:
        resolved = [resolve_metric(pattern, o) for o in done]
        if not any(v is not None for _, v in resolved):
            warnings.append(no_value_warning(pattern, done))
            continue
        lookup = {id(o): v for o, (_, v) in zip(done, resolved)}
        draw(slug(pattern), pattern, cell_table(plan_.axes, outcomes, lambda o, lookup=lookup: lookup.get(id(o))),
             lambda o, pattern=pattern: metric_gap(pattern, o))
    for pattern in plan_.verdicts:
        judged = {id(o): resolve_verdict(pattern, o) for o in done}
        # no claim named at any point is a warning; claims named but all untestable (or ambiguous) are a map of
        # marked gaps saying so, as the per-claim maps draw them
        if all(claim is None for claim, _ in judged.values()):
            warnings.append(f"verdict pattern {pattern!r} names no claim of any point")
            continue
        draw_verdicts(f"verdict-{slug(pattern)}", f"verdict: {pattern}",
                      lambda o, pattern=pattern: verdict_of(pattern, o),
                      lambda o, pattern=pattern: verdict_gap(pattern, o))
    # a map per claim id that several points judge (an id only one point has would be a single cell: see the
    # tables, or name it with a --verdict pattern); a claim a --verdict pattern names exactly is mapped already
    counts: dict[str, int] = {}
    for o in done:
        for c in o.verdicts:
            counts[c] = counts.get(c, 0) + 1
    for claim in sorted(c for c, n in counts.items() if (n > 1 or len(done) == 1) and c not in plan_.verdicts):
        draw_verdicts(f"verdict-{slug(claim)}", f"verdict: {claim}",
                      lambda o, claim=claim: o.verdicts.get(claim) if o.status in ("computed", "cached") else None,
                      lambda o, claim=claim: verdict_gap(claim, o))
    return figures, warnings


__all__ = ["LOG_SPAN", "MAX_PANELS", "draw_figures", "log_scaled", "metric_figure", "no_value_warning",
           "numeric_positions", "panel_count", "plot_metric", "point_replicates", "remove_figures", "text_colour",
           "value_order"]
