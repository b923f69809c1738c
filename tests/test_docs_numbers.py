"""Statements of the docstrings and docs that are numbers or cases the code decides: each is checked against the code.

* The normalised variance tr Cov(g) / ‖E g‖² at a zero trace (report.normalised_variance, VarianceReport,
  BatchGradStats.summary, the monitor): 0.0 when trace = 0 < ‖ḡ‖², None (NaN in the monitor) for 0/0.
"""

from __future__ import annotations

import math

import torch

from flowvar.variance import VarianceAccumulator, normalised_variance
from flowvar.variance.moments import BatchGradStats
from flowvar.variance.monitor import _finite_or_nan

F64 = torch.float64


def _identical_gradients(g: list[float], B: int = 3) -> BatchGradStats:
    """A batch of B per-sample gradients all equal to ``g`` (one parameter "w"): trace exactly 0, ‖ḡ‖² = ‖g‖²."""
    w = torch.tensor(g, dtype=F64)
    sq = torch.full((B,), float(w.pow(2).sum()), dtype=F64)
    return BatchGradStats(n=B, sq_norms=sq, param_sq_norms={"w": sq}, mean_grad={"w": w}, sq_sum=None,
                          seg_sq_norms=None, segments=None, n_segments=0, losses=None, rules={}, fallback={})


def test_normalised_is_zero_at_zero_trace_with_a_mean_gradient_and_none_for_zero_over_zero() -> None:
    """report.py, moments.py and monitor.py say: 0.0 when trace = 0 < ‖ḡ‖², None (NaN in the monitor) for 0/0."""
    assert normalised_variance(0.0, 2.0, 10) == 0.0
    assert normalised_variance(0.0, 0.0, 10) is None

    moving = VarianceAccumulator()  # every per-sample gradient (1, 2): no variance around a non-zero mean
    moving.update({"w": torch.tensor([[1.0, 2.0]] * 4, dtype=F64)}, torch.ones(4))
    report = moving.report()
    assert report.trace == 0.0 and report.mean_grad_sq_norm == 5.0 and report.normalised == 0.0
    still = VarianceAccumulator()
    still.update({"w": torch.zeros(4, 2, dtype=F64)}, torch.zeros(4))
    assert still.report().normalised is None

    summary = _identical_gradients([3.0, 4.0]).summary()  # ‖ḡ‖ = 5 exactly
    assert summary["trace"] == 0.0 and summary["mean_grad_sq_norm"] == 25.0 and summary["normalised"] == 0.0
    zero = _identical_gradients([0.0, 0.0]).summary()
    assert zero["trace"] == 0.0 and zero["normalised"] is None
    # the monitor logs the summary's value, None as NaN
    assert _finite_or_nan(summary["normalised"]) == 0.0 and math.isnan(_finite_or_nan(zero["normalised"]))
