"""The closed-form Gaussian fields refuse times and points that would give a silently meaningless number (gaussR 1):
a NaN time or point anywhere, and a time outside [0, 1] in the per-sample gradients (a time given in percent)."""

from __future__ import annotations

import math

import pytest
import torch

from flowvar import gaussian as G
from flowvar.errors import DataError
from flowvar.models.parametric import GaussianParametricField


def _problem() -> G.GaussianProblem:
    return G.GaussianProblem(torch.tensor([1.0, 2.0]), torch.diag(torch.tensor([4.0, 0.25])))


def test_the_lemma1_field_refuses_nan_times_and_points_but_not_a_solver_step_past_one() -> None:
    field = _problem().ot_field()
    assert isinstance(field, GaussianParametricField)
    x = torch.zeros(3, 2, dtype=torch.float64)
    with pytest.raises(DataError, match=r"t holds 1 non-finite"):
        field(x, torch.tensor([0.2, math.nan, 0.4], dtype=torch.float64))
    with pytest.raises(DataError, match=r"x holds 2 non-finite"):
        field(torch.tensor([[0.0, math.nan], [math.inf, 0.0], [0.0, 0.0]], dtype=torch.float64), 0.5)
    assert torch.isfinite(field(x, 1.0 + 1e-3)).all()  # an adaptive solver's last stage may look past t = 1


def test_the_closed_form_gradients_refuse_times_outside_the_unit_interval_and_nan_points() -> None:
    p = _problem()
    theta, Theta = p.field_parameters()
    xt = torch.randn(4, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    target = torch.randn(4, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    ok = G.parametric_per_sample_grads(theta, Theta, xt, 0.5, target)
    assert all(torch.isfinite(g).all() for g in (ok if isinstance(ok, tuple) else (ok,)))
    for bad_t in (50.0, -0.5, math.nan):
        with pytest.raises(DataError, match=r"t must lie in \[0, 1\]"):
            G.parametric_per_sample_grads(theta, Theta, xt, bad_t, target)
    nan_point = xt.clone()
    nan_point[1, 1] = math.nan
    with pytest.raises(DataError, match=r"xt holds 1 non-finite"):
        G.parametric_per_sample_grads(theta, Theta, nan_point, 0.5, target)


def test_fig4s_covariance_errors_name_the_fix() -> None:
    """fig4/fig5's non-positive-definite or asymmetric ``cov`` names the remedy, as the library's GaussianProblem
    does (gaussR 2: it named only the problem)."""
    from flowvar.errors import ConfigError
    from flowvar.experiments import _gaussian_variance as gv

    with pytest.raises(ConfigError, match=r"smallest eigenvalue is -1; add a small multiple of the identity"):
        gv.target_covariance([0.0, 0.0], [[1.0, 2.0], [2.0, 1.0]], None)
    with pytest.raises(ConfigError, match=r"give a symmetric matrix"):
        gv.target_covariance([0.0, 0.0], [[1.0, 0.5], [0.0, 1.0]], None)
