"""What a sweep's figures say (review sweepR, 6 and 7): a metric's spread over seed points says that each point
already averages ``n_seeds`` trainings (fig6 ``--seeds 0,2,4`` is 3 points of 2 trainings, 6 networks, and read
"mean ± sd over 3 seeds"); a line-plot verdict map's split counts sit clear of their own hollow marker."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from flowvar.sweep import Axis, Options, PointOutcome, metric_figure, plan
from flowvar.sweep.figures import SPLIT_Y, point_replicates
from flowvar.sweep.grid import canonical
from sweep_checks import drawn, toy


def fig6_outcomes(tmp_path: Path, grid: list[str], seeds: list[int], **sets: str) -> tuple[Any, list[PointOutcome]]:
    """A planned fig6 grid (quick: n_seeds = 2 per point) whose points report a made-up metric ``m``."""
    the_plan = plan(Options("fig6", grid=grid, seeds=seeds, quick=True, out=tmp_path / "o", metrics=["m"],
                            overrides=dict(sets)))
    outcomes = [PointOutcome(p, status="computed") for p in the_plan.points]
    for i, o in enumerate(outcomes):
        o.metrics = {"m": float(i)}
    return the_plan, outcomes


def test_a_metric_plot_says_each_seed_point_averages_n_seeds_trainings(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    the_plan, outcomes = fig6_outcomes(tmp_path, ["steps=1000,4000"], [0, 2, 4])
    assert point_replicates(the_plan.points) == "n_seeds = 2 trainings"
    ax = drawn(monkeypatch, tmp_path, the_plan, outcomes)["m.png"].axes[0]
    assert ax.get_ylabel() == "mean ± sd over 3 seed points\n(each point: n_seeds = 2 trainings)"
    # one seed point per cell: the value is still a point of 2 trainings
    one, outs = fig6_outcomes(tmp_path, ["steps=1000,4000"], [0])
    assert drawn(monkeypatch, tmp_path, one, outs)["m.png"].axes[0].get_ylabel() == \
        "value (one point per cell; each point: n_seeds = 2 trainings)"


def test_a_heatmap_colour_bar_says_each_seed_point_averages_n_seeds_trainings(tmp_path: Path,
                                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    the_plan, outcomes = fig6_outcomes(tmp_path, ["steps=1000,4000", "mu=2,5"], [0, 2])
    fig = drawn(monkeypatch, tmp_path, the_plan, outcomes)["m.png"]
    bars = [ax for ax in fig.axes if ax.get_label() == "<colorbar>"]
    assert [b.get_ylabel() for b in bars] == [
        "mean over seed points (± in a cell: sd over 2 seed points;\neach point: n_seeds = 2 trainings)"]


def test_points_of_one_training_keep_the_plain_labels(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """n_seeds = 1, or an experiment without n_seeds (the toy): the seeds are the trainings, said as before."""
    the_plan, outcomes = fig6_outcomes(tmp_path, ["steps=1000,4000"], [0, 1], n_seeds="1")
    assert point_replicates(the_plan.points) is None
    assert drawn(monkeypatch, tmp_path, the_plan, outcomes)["m.png"].axes[0].get_ylabel() == \
        "mean ± sd over 2 seeds"
    assert point_replicates(plan(toy(tmp_path / "t", ["x=1,2"])).points) is None
    swept = plan(Options("fig6", grid=["n_seeds=1,3"], quick=True, out=tmp_path / "s"))
    assert point_replicates(swept.points) == "n_seeds = 1–3 trainings"


def test_a_split_cells_counts_sit_clear_of_its_marker() -> None:
    """The "1 c / 1 i" label (and its "(1 untestable)" line) of a line plot's split cell was drawn over its own
    hollow marker; its text now sits above the marker, inside the axes (the split row is the topmost)."""
    axes = [Axis("a", (-1.0, 0.0, 2.0)), Axis("seed", (0, 1, 2))]
    table = {(canonical(-1.0),): (-1.0, 0.0, 3), (canonical(2.0),): (1.0, 0.0, 3)}
    split = (canonical(0.0),)
    fig = metric_figure("verdict: y_pos", axes, table, verdict=True, splits={split: "1 c / 1 i"},
                        shortfalls={split: "1 untestable"})
    ax = fig.axes[0]
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    marker = next(line for line in ax.lines if line.get_label().startswith("seeds disagree"))
    x, y = ax.transData.transform((0.0, SPLIT_Y))
    radius = marker.get_markersize() / 2 * fig.dpi / 72  # points → pixels
    label = next(t for t in ax.texts if t.get_text().startswith("1 c / 1 i"))
    box = label.get_window_extent(renderer)
    assert box.y0 > y + radius  # the whole text above the marker's highest pixel
    assert box.x0 < x < box.x1  # centred over it
    assert box.y1 < ax.get_window_extent(renderer).y1  # and inside the axes, under the title
