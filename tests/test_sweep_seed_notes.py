"""A cell with some seeds judged and the others untestable or failed says why (review E, 4): "confirmed, 1 of 2
seeds (1 untestable)" reads apart from "(1 failed)"; the notes of neighbouring points do not overlap; a line plot
never joins categorical values, and a verdict changes by a step along a numeric axis."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from flowvar.experiments.base import load_plugin
from flowvar.sweep import Axis, PointOutcome, metric_figure, plan
from flowvar.sweep.grid import canonical
from flowvar.sweep.tables import cell_shortfalls, verdict_gap
from sweep_checks import PLUGIN, toy


@pytest.fixture(scope="module", autouse=True)
def _toy() -> None:
    load_plugin(PLUGIN)


def _outcomes(tmp_path: Path, grid: list[str], patterns: dict[str, str]) -> tuple[Any, list[PointOutcome]]:
    """Points of a toy grid over x (and ``pattern`` cells) with seeds 0, 1; ``patterns[label]`` gives each seed's
    verdict (c, i, r confirmed/inconclusive/refuted, u untestable, f failed)."""
    the_plan = plan(toy(tmp_path / "p", grid, seeds=[0, 1]))
    word = {"c": "confirmed", "i": "inconclusive", "r": "refuted", "u": "untestable"}
    outcomes = []
    for p in the_plan.points:
        ch = patterns[canonical(p.values["x"])][p.values["seed"]]
        o = PointOutcome(p, status="failed" if ch == "f" else "computed")
        if ch != "f":
            o.verdicts, o.metrics = {"mix": word[ch]}, {"y": 1.0}
        outcomes.append(o)
    return the_plan, outcomes


PATTERNS = {canonical(1.0): "cu", canonical(2.0): "cf", canonical(3.0): "cr", canonical(4.0): "cc",
            canonical(5.0): "ci", canonical(6.0): "uf"}


def test_cell_shortfalls_say_why_the_missing_seeds_are_missing(tmp_path: Path) -> None:
    the_plan, outcomes = _outcomes(tmp_path, ["x=1,2,3,4,5,6"], PATTERNS)
    short = cell_shortfalls(the_plan.axes, outcomes, lambda o: verdict_gap("mix", o))
    # cells with every seed judged, or none (a gap: cell_gaps' business), have no shortfall
    assert short == {(canonical(1.0),): "1 untestable", (canonical(2.0),): "1 failed"}


def _line_plot(tmp_path: Path, grid: list[str], monkeypatch: pytest.MonkeyPatch) -> Any:
    from flowvar.sweep import figures

    the_plan, outcomes = _outcomes(tmp_path, grid, PATTERNS)
    drawn: dict[str, Any] = {}

    def keep(path: Path, title: str, axes: Any, table: Any, **kw: Any) -> Path:
        drawn[path.name] = figures.metric_figure(title, axes, table, kw.get("gaps"), verdict=kw["verdict"],
                                                 splits=kw.get("splits"), shortfalls=kw.get("shortfalls"))
        return path

    monkeypatch.setattr(figures, "plot_metric", keep)
    figures.draw_figures(tmp_path / "figs", the_plan, outcomes)
    return drawn["verdict-mix.png"]


def test_a_line_plot_says_why_a_seed_is_missing_and_its_notes_do_not_collide(tmp_path: Path,
                                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """The review's s3 figure: "1 of 2 seeds 1 of 2 seeds" overlapped at neighbouring x, the cu and cf cells read
    alike, the legend said "every seed agrees", and a line joined the categorical values cu–cf."""
    import matplotlib.pyplot as plt

    fig = _line_plot(tmp_path, ["x=1,2,3,4,5,6"], monkeypatch)
    ax = fig.axes[0]
    notes = {t.xy[0]: t for t in ax.texts if "of 2 seeds" in t.get_text()}
    assert {x: t.get_text() for x, t in notes.items()} == {1.0: "1 of 2 seeds\n(1 untestable)",
                                                           2.0: "1 of 2 seeds\n(1 failed)"}
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    assert not notes[1.0].get_window_extent(renderer).overlaps(notes[2.0].get_window_extent(renderer))
    assert ax.get_legend().get_texts()[0].get_text() == "verdict (the judged seeds agree)"
    # a numeric axis: the verdicts change by a step between the swept values, never by a slope through another
    judged = ax.containers[0].lines[0]
    assert judged.get_drawstyle() == "steps-mid"
    plt.close(fig)


def test_categorical_values_are_not_joined_and_neighbouring_notes_do_not_overlap(tmp_path: Path) -> None:
    """Ten categories (the review's figure had eight, its notes "1 of 2 seeds 1 of 2 seeds" ran together), three
    neighbours each holding one seed of two, with their reasons: markers only, and no two notes overlap."""
    values = tuple(f"p{j}" for j in range(10))
    axes = [Axis("pattern", values), Axis("seed", (0, 1))]
    table = {(canonical(v),): (1.0, 0.0, 2) for v in values}
    short = {}
    for v, why in zip(values[3:6], ("1 untestable", "1 failed", "1 untestable")):
        table[(canonical(v),)] = (1.0, 0.0, 1)
        short[(canonical(v),)] = why
    for verdict in (True, False):
        fig = metric_figure("t", axes, table, verdict=verdict, shortfalls=short)
        ax = fig.axes[0]
        assert ax.containers[0].lines[0].get_linestyle() == "None"
        notes = [t for t in ax.texts if "of 2 seeds" in t.get_text()]
        assert [t.get_text() for t in notes] == ["1 of 2 seeds\n(1 untestable)", "1 of 2 seeds\n(1 failed)",
                                                 "1 of 2 seeds\n(1 untestable)"]
        fig.canvas.draw()
        renderer = fig.canvas.get_renderer()
        boxes = [t.get_window_extent(renderer) for t in notes]
        assert not any(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1:])
        frame = ax.get_window_extent(renderer)  # and every note stays inside the plot, clear of the title
        assert all(frame.y0 <= b.y0 and b.y1 <= frame.y1 for b in boxes)
    # a metric along a numeric axis keeps its straight line
    numeric = metric_figure("t", [Axis("x", (1.0, 2.0)), Axis("seed", (0, 1))],
                            {(canonical(1.0),): (1.0, 0.1, 2), (canonical(2.0),): (2.0, 0.1, 2)})
    line = numeric.axes[0].containers[0].lines[0]
    assert line.get_linestyle() == "-" and line.get_drawstyle() == "default"


def test_a_heatmap_cell_says_why_a_seed_is_missing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The review's s2 figure: the cu and cf cells were both "confirmed / 1 of 2 seeds"."""
    from flowvar.sweep import figures

    the_plan = plan(toy(tmp_path / "p", ["x=1,2", "scale=1,2"], seeds=[0, 1]))
    word = {"c": "confirmed", "r": "refuted", "u": "untestable"}
    cells = {(1.0, 1.0): "cu", (1.0, 2.0): "cf", (2.0, 1.0): "cr", (2.0, 2.0): "cc"}
    outcomes = []
    for p in the_plan.points:
        ch = cells[(p.values["x"], p.values["scale"])][p.values["seed"]]
        o = PointOutcome(p, status="failed" if ch == "f" else "computed")
        o.verdicts = {} if ch == "f" else {"mix": word[ch]}
        outcomes.append(o)
    drawn: dict[str, Any] = {}

    def keep(path: Path, title: str, axes: Any, table: Any, **kw: Any) -> Path:
        drawn[path.name] = figures.metric_figure(title, axes, table, kw.get("gaps"), verdict=kw["verdict"],
                                                 splits=kw.get("splits"), shortfalls=kw.get("shortfalls"))
        return path

    monkeypatch.setattr(figures, "plot_metric", keep)
    figures.draw_figures(tmp_path / "figs", the_plan, outcomes)
    ax = drawn["verdict-mix.png"].axes[0]
    texts = {(round(t.get_position()[1]), round(t.get_position()[0])): t.get_text() for t in ax.texts}
    assert texts[(0, 0)] == "confirmed\n1 of 2 seeds\n(1 untestable)"
    assert texts[(0, 1)] == "confirmed\n1 of 2 seeds\n(1 failed)"
    assert texts[(1, 0)] == "seeds disagree\n1 c / 1 r"


def test_a_split_cell_says_why_its_other_seeds_are_missing() -> None:
    axes = [Axis("x", (1.0, 2.0)), Axis("y", (1.0, 2.0)), Axis("seed", (0, 1, 2))]
    cell = (canonical(1.0), canonical(1.0))
    table = {(canonical(a), canonical(b)): (1.0, 0.0, 3) for a in (1.0, 2.0) for b in (1.0, 2.0)}
    fig = metric_figure("t", axes, {**table, cell: (0.0, 1.4, 2)}, verdict=True, splits={cell: "1 c / 1 r"},
                        shortfalls={cell: "1 untestable"})
    texts = {(round(t.get_position()[1]), round(t.get_position()[0])): t.get_text() for t in fig.axes[0].texts}
    assert texts[(0, 0)] == "seeds disagree\n1 c / 1 r\n(1 untestable)"
