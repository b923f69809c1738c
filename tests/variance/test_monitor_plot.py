"""GradientVarianceMonitor.figure() / plot(): what the panels draw, read off the figure's artists.

Two things the plot got wrong (user review of the monitor in real loops):

* a logged ``normalised = inf`` (the mean gradient not resolved from the noise) vanished from the middle panel: the
  value was kept as inf, which a log axis does not draw. It is now a marker at the top of the panel, labelled;
* the t-profile heatmap spanned ``extent=(first, last)``, so its n columns were each up to half a column off their
  steps. Columns centred on their steps then drew cells before the first logged step and cut off the end of the
  run (new-user review, session 33: −50 … 250 for a run logged at 0 … 290 and profiled at 0, 100, 200). A profile
  measured at step s describes the model at s, so each column now spans [its step, the next profiled step], the
  last one reaches the last logged step, and the panel's x range is [first logged step, last logged step]
  (tests/variance/test_monitor_plot_axis.py reads it off real loops).
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np
import pytest
import torch

from flowvar.variance.monitor import GradientVarianceMonitor

EDGES = [0.0, 0.25, 0.5, 0.75, 1.0]
INF_LABEL = "∞: mean gradient not resolved"


def _record(step: int, normalised: float, profiled: bool = True) -> dict[str, Any]:
    """A logged record with the fields the plot reads (non-profiled logs have NaN bin traces)."""
    traces = [1.0 + step, 2.0 + step, 3.0 + step, 4.0 + step] if profiled else [math.nan] * 4
    return {"step": step, "loss": 1.0 / (1 + step), "trace": 2.0 / (1 + step), "normalised": normalised,
            "t_profile": {"edges": EDGES, "counts": [4, 4, 4, 4], "trace": traces}}


def _monitor(records: list[dict[str, Any]]) -> GradientVarianceMonitor:
    monitor = GradientVarianceMonitor(torch.nn.Linear(2, 2), t_bins=4, warn=False)
    monitor.history = records
    return monitor


def _heatmap_x_edges(monitor: GradientVarianceMonitor) -> list[float]:
    fig = monitor.figure()
    (mesh,) = fig.axes[2].collections
    return mesh.get_coordinates()[0, :, 0].tolist()


def _heatmap_x_limits(monitor: GradientVarianceMonitor) -> tuple[float, float]:
    lo, hi = monitor.figure().axes[2].get_xlim()
    return float(lo), float(hi)


def test_an_infinite_normalised_variance_is_marked_at_the_top_of_its_panel() -> None:
    monitor = _monitor([_record(0, 3.0), _record(10, math.inf), _record(20, 5.0), _record(30, math.inf)])
    ax = monitor.figure().axes[1]
    (marks,) = [line for line in ax.lines if line.get_label() == INF_LABEL]
    assert list(marks.get_xdata()) == [10.0, 30.0]
    assert list(marks.get_ydata()) == [0.97, 0.97]  # axes coordinates: the top of the panel, whatever the y range
    (curve,) = [line for line in ax.lines if line is not marks]
    drawn = np.asarray(curve.get_ydata(), dtype=float)
    assert drawn[[0, 2]].tolist() == [3.0, 5.0] and np.isnan(drawn[[1, 3]]).all()  # no inf handed to a log axis
    assert INF_LABEL in [text.get_text() for text in ax.get_legend().get_texts()]


def test_finite_normalised_variances_draw_no_marker() -> None:
    ax = _monitor([_record(0, 3.0), _record(10, 4.0)]).figure().axes[1]
    assert [line.get_label() for line in ax.lines if line.get_label() == INF_LABEL] == []
    assert ax.get_legend() is None


def test_heatmap_columns_start_at_their_steps_and_the_last_reaches_the_last_logged_step() -> None:
    """Logs at 0, 5, …, 25, every 2nd profiled (0, 10, 20): columns [0, 10], [10, 20], [20, 25] over the x range
    [0, 25]; centred columns gave [−5, 5], [5, 15], [15, 25] (a cell before the run, the end left out), the old
    extent (0, 20) [0, 6.7], [6.7, 13.3], [13.3, 20]."""
    records = [_record(step, 1.0, profiled=step % 10 == 0) for step in range(0, 30, 5)]
    monitor = _monitor(records)
    assert _heatmap_x_edges(monitor) == [0.0, 10.0, 20.0, 25.0]
    assert _heatmap_x_limits(monitor) == (0.0, 25.0)
    (mesh,) = monitor.figure().axes[2].collections
    assert mesh.get_coordinates()[:, 0, 1].tolist() == EDGES  # the t-bin edges
    shown = np.asarray(mesh.get_array()).reshape(len(EDGES) - 1, 3)  # (bins, profiled logs)
    assert shown[:, 1] == pytest.approx(np.log10([11.0, 12.0, 13.0, 14.0]))  # step 10's column


def test_a_last_profile_at_the_last_log_gets_one_profile_interval() -> None:
    """Logs at 0, 5, …, 20, profiled at 0, 10, 20: the last profile is the last log, so its column is one profile
    interval wide ([20, 30]) rather than zero-wide (invisible)."""
    monitor = _monitor([_record(step, 1.0, profiled=step % 10 == 0) for step in range(0, 25, 5)])
    assert _heatmap_x_edges(monitor) == [0.0, 10.0, 20.0, 30.0]
    assert _heatmap_x_limits(monitor) == (0.0, 30.0)


def test_heatmap_columns_of_uneven_steps_reach_the_next_profiled_step() -> None:
    assert _heatmap_x_edges(_monitor([_record(0, 1.0), _record(10, 1.0), _record(30, 1.0)])) == \
        [0.0, 10.0, 30.0, 50.0]


def test_the_x_range_starts_at_the_first_logged_step_when_the_drawn_profiles_start_later() -> None:
    """A resume that changed t_bins: only the last bins' rows (steps 10, 20) are drawn, the run began at 0."""
    first = _record(0, 1.0)
    first["t_profile"] = {"edges": [0.0, 0.5, 1.0], "counts": [8, 8], "trace": [1.0, 2.0]}
    monitor = _monitor([first, _record(10, 1.0), _record(20, 1.0)])
    assert _heatmap_x_edges(monitor) == [10.0, 20.0, 30.0]
    assert _heatmap_x_limits(monitor) == (0.0, 30.0)


def test_one_profiled_log_is_one_step_wide_and_repeated_steps_share_the_range_evenly() -> None:
    assert _heatmap_x_edges(_monitor([_record(7, 1.0)])) == [7.0, 8.0]
    # gradient accumulation: k = 2 records per logged step, each step's records sharing [step, next step]
    assert _heatmap_x_edges(_monitor([_record(s, 1.0) for s in (0, 0, 10, 10)])) == \
        pytest.approx([0.0, 5.0, 10.0, 15.0, 20.0])


def test_plot_writes_the_png_of_a_history_with_infinities_without_warnings(tmp_path) -> None:
    monitor = _monitor([_record(0, math.inf), _record(10, math.inf)])  # every normalised value infinite
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        png = monitor.plot(tmp_path / "inf.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
