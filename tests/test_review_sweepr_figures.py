"""Review sweepR 1, 4, 5 and 6: a sweep's figures draw a numeric axis in value order (a grid typed or extended out of
order, ``x=10,1,100,0.1``, drew lines zig-zagging between values no point has, steps in the wrong places, heatmap
rows as typed) while its tables keep the grid's order; a ``--metric`` placeholder naming no config key is refused
before anything runs; a text metric is said to be no number (not "matches several names"); metric values over more
than two decades get a log y axis or colour scale."""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

import pytest
from matplotlib.colors import LogNorm

from flowvar.cli import main
from flowvar.errors import ConfigError
from flowvar.sweep import Axis, PointOutcome, metric_figure, plan, sweep
from flowvar.sweep.figures import log_scaled, no_value_warning, value_order
from flowvar.sweep.grid import canonical
from flowvar.sweep.tables import unknown_placeholders
from sweep_checks import PLUGIN, drawn, toy

TYPED = (10.0, 1.0, 100.0, 0.1)
"""The reviewer's grid: neither ascending nor descending."""


def outcomes_of(the_plan: Any, metric: Any, verdict: Any = None) -> list[PointOutcome]:
    """Finished outcomes of every point, reporting ``stats.y = metric(values)`` and claim ``y_positive``."""
    outcomes = [PointOutcome(p, status="computed") for p in the_plan.points]
    for o in outcomes:
        o.metrics = {"stats.y": metric(o.point.values), "stats.label": "a"}
        if verdict is not None:
            o.verdicts = {"y_positive": verdict(o.point.values)}
    return outcomes


def test_value_order_sorts_numeric_axes_and_keeps_categorical_ones() -> None:
    assert value_order(Axis("x", TYPED)).values == (0.1, 1.0, 10.0, 100.0)
    # a list axis whose lists differ in one number: by that number
    assert value_order(Axis("sigmas", ((0.0, 0.2), (0.0, 0.05), (0.0, 0.1)))).values == \
        ((0.0, 0.05), (0.0, 0.1), (0.0, 0.2))
    assert value_order(Axis("label", ("b", "a", "c"))).values == ("b", "a", "c")
    assert value_order(Axis("n", (3, -1, 2))).values == (-1, 2, 3)


def test_a_line_plot_joins_the_points_in_x_order_whatever_order_the_grid_was_typed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    the_plan = plan(toy(tmp_path / "o", ["x=10,1,100,0.1"], metrics=["stats.y"]))
    # y = x: a line through the points in x order rises monotonically; in typed order it went 10 → 1 → 100 → 0.1
    figs = drawn(monkeypatch, tmp_path, the_plan,
                 outcomes_of(the_plan, lambda v: v["x"], lambda v: "confirmed" if v["x"] > 5 else "refuted"))
    line = figs["stats.y.png"].axes[0].lines[0]
    assert list(line.get_xdata()) == [0.1, 1.0, 10.0, 100.0]
    assert list(line.get_ydata()) == [0.1, 1.0, 10.0, 100.0]  # each point at its own x
    assert [t.get_text() for t in figs["stats.y.png"].axes[0].get_xticklabels()] == ["0.1", "1", "10", "100"]
    # the verdict steps from refuted (x ≤ 1) to confirmed (x ≥ 10) once, between 1 and 10
    step = figs["verdict-y_positive.png"].axes[0].lines[0]
    assert step.get_drawstyle() == "steps-mid"
    assert list(step.get_xdata()) == [0.1, 1.0, 10.0, 100.0]
    assert list(step.get_ydata()) == [-1.0, -1.0, 1.0, 1.0]


def test_a_heatmap_has_its_rows_and_columns_in_value_order(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    the_plan = plan(toy(tmp_path / "o", ["x=10,1,100", "scale=1,0.01"], metrics=["stats.y"]))
    fig = drawn(monkeypatch, tmp_path, the_plan, outcomes_of(the_plan, lambda v: v["x"] * v["scale"]))["stats.y.png"]
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["1", "10", "100"]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["0.01", "1"]
    # each cell holds its own value: row r = x, column c = scale, in value order
    image = ax.get_images()[0].get_array()
    assert [[float(v) for v in row] for row in image] == [[0.01, 1.0], [0.1, 10.0], [1.0, 100.0]]
    assert next(t.get_text() for t in ax.texts if t.get_position() == (0, 2)) == "1"  # x=100, scale=0.01


def test_the_tables_keep_the_grid_order_and_the_figure_is_drawn(tmp_path: Path) -> None:
    """Only the figures reorder: the points, their indices and sweep.csv keep the order typed (the cache keys and
    the point order are what reruns and `flowvar show` read)."""
    out = tmp_path / "s"
    summary = sweep(toy(out, ["x=10,1,100,0.1"], metrics=["stats.y"], overrides={"scale": "0.01"}))
    assert [o.point.values["x"] for o in summary.outcomes] == list(TYPED)
    with open(out / "sweep.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [(r["point"], float(r["x"])) for r in rows] == [(str(i), x) for i, x in enumerate(TYPED)]
    assert "figures/stats.y.png" in summary.figures


def test_values_over_more_than_two_decades_get_a_log_scale(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert log_scaled([0.04, 1.0, 100.0]) and log_scaled([1.0, math.nan, 101.0])
    assert not log_scaled([1.0, 100.0])  # two decades exactly: linear
    assert not log_scaled([-0.01, 1.0, 1000.0]) and not log_scaled([0.0, 1.0, 1000.0])  # not all positive
    assert not log_scaled([])
    line_plan = plan(toy(tmp_path / "o", ["x=0.2,1,10"], metrics=["stats.y"]))
    figs = drawn(monkeypatch, tmp_path, line_plan, outcomes_of(line_plan, lambda v: v["x"] ** 2,
                                                               lambda v: "confirmed"))
    assert figs["stats.y.png"].axes[0].get_yscale() == "log"  # 0.04 … 100: no value flat on zero
    assert figs["verdict-y_positive.png"].axes[0].get_yscale() == "linear"  # a verdict is never log
    figs = drawn(monkeypatch, tmp_path, line_plan, outcomes_of(line_plan, lambda v: v["x"] - 1))
    assert figs["stats.y.png"].axes[0].get_yscale() == "linear"  # -0.8 … 9
    grid_plan = plan(toy(tmp_path / "o", ["x=1,3,20", "scale=1,0.1"], metrics=["stats.y"]))
    fig = drawn(monkeypatch, tmp_path, grid_plan,
                outcomes_of(grid_plan, lambda v: v["scale"] * v["x"] ** 2))["stats.y.png"]
    image = fig.axes[0].get_images()[0]
    assert isinstance(image.norm, LogNorm) and (image.norm.vmin, image.norm.vmax) == pytest.approx((0.1, 400.0))
    assert any(t.get_text() == "400" for t in fig.axes[0].texts)  # the cells print their values as before
    fig = drawn(monkeypatch, tmp_path, grid_plan, outcomes_of(grid_plan, lambda v: v["x"]))["stats.y.png"]
    assert not isinstance(fig.axes[0].get_images()[0].norm, LogNorm)  # 1 … 20


def test_a_text_metric_is_said_to_be_no_number_not_ambiguous(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    the_plan = plan(toy(tmp_path / "o", ["x=1,2"], metrics=["stats.label"]))
    warnings = drawn(monkeypatch, tmp_path, the_plan, outcomes_of(the_plan, lambda v: v["x"]))["warnings"]
    assert warnings == ["metric 'stats.label' is not a number at any point (its values: 'a'); a figure plots a "
                        "number: choose a numeric metric"]
    done = outcomes_of(the_plan, lambda v: v["x"])
    for o in done:
        o.metrics["stats.z"] = 1.0
    assert no_value_warning("stats.*", done).startswith("metric 'stats.*' matches several names per point")
    assert no_value_warning("stats.w", done).startswith("metric 'stats.w' was reported by no point")


def test_a_real_sweep_of_a_text_metric_warns_that_it_is_no_number(tmp_path: Path) -> None:
    summary = sweep(toy(tmp_path / "s", ["x=1,2"], metrics=["stats.label"]))
    assert any("is not a number at any point (its values: 'a')" in w for w in summary.warnings)
    assert not any("several" in w for w in summary.warnings)


@pytest.mark.parametrize(("pattern", "unknown"), [
    ("by_x.x={x}", []), ("by_x.x={x:g}", []), ("a.{offsets[0]}.b", []), ("{x!r}", []), ("no.placeholder", []),
    ("by_x.x={xx}", ["{xx}"]), ("{nokey}.y", ["{nokey}"]), ("a{}", ["{}"]), ("{x}.{xs[1]}", ["{xs[1]}"]),
    ("unclosed {x", []),  # no format string: left to the name checks
])
def test_unknown_placeholders(pattern: str, unknown: list[str]) -> None:
    keys = ["seed", "x", "scale", "offsets", "label"]
    assert unknown_placeholders(pattern, keys) == unknown


def test_a_placeholder_naming_no_config_key_is_refused_before_anything_runs(tmp_path: Path,
                                                                           capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "s"
    with pytest.raises(ConfigError) as error:
        plan(toy(out, ["x=1,2"], metrics=["by_x.x={xx}"]))
    assert str(error.value) == (
        "--metric 'by_x.x={xx}': the placeholder {xx} names no config key of toy_sweep (did you mean {x}?); a "
        "placeholder is filled from a config key: seed, x, scale, offsets, label, fail_at, block_at, block_file")
    with pytest.raises(ConfigError, match=r"--verdict 'y_\{lable\}': the placeholder \{lable\} .*did you mean "
                                          r"\{label\}"):
        plan(toy(out, ["x=1,2"], verdicts=["y_{lable}"]))
    plan(toy(out, ["x=1,2"], metrics=["by_x.x={x}"], verdicts=["y_{label}"]))  # real keys pass
    capsys.readouterr()
    assert main(["sweep", "toy_sweep", "--plugin", PLUGIN, "--grid", "x=1,2", "--metric", "{nokey}.y", "--out",
                 str(out), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "the placeholder {nokey} names no config key of toy_sweep" in err
    assert not out.exists()  # refused before anything is written


def test_cells_are_found_by_value_not_by_position() -> None:
    """The reordered axis still finds each cell by its canonical value (:func:`cell_of`), so no value moves."""
    axes = [Axis("x", TYPED)]
    table = {(canonical(x),): (x * 2, 0.0, 1) for x in TYPED}
    ax = metric_figure("t", axes, table).axes[0]
    assert list(ax.lines[0].get_ydata()) == [0.2, 2.0, 20.0, 200.0]
