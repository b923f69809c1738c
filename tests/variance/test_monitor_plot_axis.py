"""The step axis of GradientVarianceMonitor's t-profile heatmap, read back from the figure of real training loops.

New-user review (session 33, finding 6): the README loop (300 steps, ``every=10``, profiled every 10th log: at steps
0, 100 and 200) drew its heatmap from step −50 to 250 while the run ended at step 290: columns centred on their
steps put cells before the first step and cut off the end of the run. A profile measured at step s describes the
model at s, so its column now starts at s and reaches the next profiled step (the last one reaches the last logged
step), and the panel's x range is the run's [first logged step, last logged step].
"""

from __future__ import annotations

import warnings

import numpy as np
import torch

from flowvar.couplings import IndependentCoupling
from flowvar.distributions import StandardNormal
from flowvar.loss import CFMLoss, per_sample_loss
from flowvar.models import MLPField
from flowvar.variance.monitor import GradientVarianceMonitor


def _run(steps: int, every: int, gen: torch.Generator, **kwargs: object) -> GradientVarianceMonitor:
    """A plain training loop over ``steps`` steps, monitored as the README shows (step() after backward)."""
    model = MLPField(2, width=8, depth=1)
    opt = torch.optim.SGD(model.parameters(), lr=1e-2)
    coupling, loss = IndependentCoupling(StandardNormal(2), StandardNormal(2)), CFMLoss()
    monitor = GradientVarianceMonitor(model, every=every, warn=False, **kwargs)
    for step in range(steps):
        path = loss.draw(coupling, 32, gen)
        losses = per_sample_loss(model, path)
        opt.zero_grad()
        losses.mean().backward()
        monitor.step(step, losses, path.t)
        opt.step()
    monitor.close()
    return monitor


def _heatmap(monitor: GradientVarianceMonitor) -> tuple[list[float], tuple[float, float]]:
    """(the heatmap's column x edges, the panel's x limits) of the figure plot() writes (Agg canvas)."""
    fig = monitor.figure()
    assert type(fig.canvas).__name__ == "FigureCanvasAgg"
    ax = fig.axes[2]
    (mesh,) = ax.collections
    lo, hi = ax.get_xlim()
    return mesh.get_coordinates()[0, :, 0].tolist(), (float(lo), float(hi))


def test_readme_loop_heatmap_spans_the_run_from_its_first_to_its_last_logged_step(gen) -> None:
    monitor = _run(300, 10, gen, profile_every=10)
    assert [r["step"] for r in monitor.history] == list(range(0, 300, 10))
    profiled = [r["step"] for r in monitor.history if np.isfinite(r["t_profile"]["trace"]).any()]
    assert profiled == [0, 100, 200]
    edges, xlim = _heatmap(monitor)
    # each profile from its step to the next profiled step, the last one to the last logged step (was −50 … 250)
    assert edges == [0.0, 100.0, 200.0, 290.0]
    assert xlim == (0.0, 290.0)


def test_one_profiled_log_is_a_one_step_column_at_its_step(gen, tmp_path) -> None:
    """One logged step (acc8079: a one-step column, not a zero-width image that made matplotlib warn), now starting
    at the step instead of half a step before it."""
    monitor = _run(1, 1, gen)
    edges, xlim = _heatmap(monitor)
    assert edges == [0.0, 1.0] and xlim == (0.0, 1.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        monitor.plot(tmp_path / "one.png")


def test_one_profile_followed_by_unprofiled_logs_reaches_the_last_logged_step(gen) -> None:
    """The README's 30-step example (every=10): logs at 0, 10, 20, profiled at 0 only."""
    monitor = _run(30, 10, gen)
    assert [np.isfinite(r["t_profile"]["trace"]).any() for r in monitor.history] == [True, False, False]
    edges, xlim = _heatmap(monitor)
    assert edges == [0.0, 20.0] and xlim == (0.0, 20.0)
