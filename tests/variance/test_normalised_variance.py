"""The report's normalised variance (flowvar.variance.report.normalised_variance): 0/0 and x/0, and no saturation
near a stationary point."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from flowvar.errors import DataError
from flowvar.variance import VarianceAccumulator, normalised_variance


def test_normalised_handles_zero_mean_gradient():
    zero = VarianceAccumulator()
    zero.update({"w": torch.zeros(5, 3)}, torch.zeros(5))
    rep = zero.report()
    assert rep.trace == 0.0 and rep.normalised is None and math.isnan(rep.statistic("normalised"))
    pm = VarianceAccumulator()
    pm.update({"w": torch.tensor([[1.0], [-1.0]])}, torch.ones(2))
    rep = pm.report()
    assert rep.trace == 1.0 and rep.mean_grad_sq_norm == 0.0 and rep.normalised == math.inf
    assert rep.trace_unbiased == 2.0 and rep.mean_grad_sq_norm_unbiased == -1.0  # 0 − 2/2


def test_normalised_variance_does_not_saturate_near_a_stationary_point():
    """Per-sample gradients g_k = m + ε_k, ε_k ~ N(0, I_50): tr Cov = 50 and ‖E g‖² = ‖m‖², set to tr Cov/K. The
    plug-in ratio trace/‖ḡ‖² reads about half the truth there (E‖ḡ‖² = ‖m‖² + tr/K) and can never exceed ≈ K;
    the unbiased ratio is centred on the truth, 50/‖m‖² = K."""
    gen = torch.Generator().manual_seed(0)
    K, d, reps = 2000, 50, 40
    m = torch.zeros(d, dtype=torch.float64)
    m[0] = math.sqrt(d / K)
    plug_in, unbiased, signal = [], [], []
    for _ in range(reps):
        acc = VarianceAccumulator()
        acc.update({"w": m + torch.randn(K, d, generator=gen, dtype=torch.float64)}, torch.ones(K))
        rep = acc.report()
        plug_in.append(rep.trace / rep.mean_grad_sq_norm)
        unbiased.append(rep.normalised)
        signal.append(rep.mean_grad_sq_norm_unbiased)
    assert np.mean(signal) == pytest.approx(d / K, rel=0.1)
    assert max(plug_in) < K and np.mean(plug_in) == pytest.approx(K / 2, rel=0.1)
    assert np.median(unbiased) == pytest.approx(K, rel=0.3)
    assert normalised_variance(1.0, 0.0, 10) == math.inf and normalised_variance(0.0, 0.0, 10) is None
    assert normalised_variance(0.0, 2.0, 10) == 0.0
    assert normalised_variance(9.0, 2.0, 10) == pytest.approx(10.0 / (2.0 - 1.0))  # trace_u = 10, ‖ḡ‖²_u = 1
    with pytest.raises(DataError):
        normalised_variance(1.0, 1.0, 1)
