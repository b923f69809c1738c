"""Review gaussR, findings 3–4: bad input to the Gaussian API is a one-line error naming the argument, never a
silent NaN, a dropped imaginary part or a raw torch error."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pytest
import torch

from flowvar.errors import ConfigError, DataError
from flowvar.gaussian import (
    GaussianProblem,
    gaussian_w2_squared,
    meeting_point,
    parametric_per_sample_grads,
    parametric_per_sample_loss,
    parametric_residual_rounding_bound,
    parametric_residuals,
    rotation_matrix,
)

NAN_THETA = torch.tensor([math.nan, 0.0], dtype=torch.float64)
NAN_BIG_THETA = torch.tensor([[0.0, math.inf], [0.0, 0.0]], dtype=torch.float64)


@pytest.mark.parametrize("fn", [parametric_per_sample_grads, parametric_residuals, parametric_per_sample_loss])
@pytest.mark.parametrize(("theta", "Theta", "name"), [(NAN_THETA, torch.zeros(2, 2), "theta"),
                                                      (torch.zeros(2), NAN_BIG_THETA, "Theta")])
def test_parametric_helpers_refuse_non_finite_parameters(fn: Callable[..., object], theta: torch.Tensor,
                                                         Theta: torch.Tensor, name: str) -> None:
    with pytest.raises(DataError, match=rf"^{name} holds 1 non-finite value"):
        fn(theta, Theta, torch.zeros(3, 2), 0.3, torch.zeros(3, 2))


def test_parametric_helpers_still_give_finite_values_on_finite_parameters() -> None:
    """The checks do not change a finite call: v = θ + Θ(I + tΘ)⁻¹(x − tθ) at Θ = 0 is θ, so r = θ − u."""
    theta, target = torch.tensor([1.0, -2.0], dtype=torch.float64), torch.ones(3, 2, dtype=torch.float64)
    r = parametric_residuals(theta, torch.zeros(2, 2), torch.zeros(3, 2), 0.3, target)
    assert torch.equal(r, (theta - target))
    g_theta, _ = parametric_per_sample_grads(theta, torch.zeros(2, 2), torch.zeros(3, 2), 0.3, target)
    assert torch.equal(g_theta, 2 * (theta - target))  # A = I: ∇θ = 2r


@pytest.mark.parametrize(("mean", "cov", "name"), [
    (np.array([1 + 2j, 0.0]), np.eye(2), "mean"),
    ([0.0, 0.0], np.eye(2) + 0j, "cov"),
    ([1 + 0j, 0.0], torch.eye(2), "mean"),  # a zero imaginary part: still complex, refused rather than guessed
    (torch.zeros(2), torch.eye(2, dtype=torch.complex128), "cov"),
    ([True, False], torch.eye(2), "mean"),
])
def test_problem_refuses_complex_and_boolean_input(mean: object, cov: object, name: str) -> None:
    with pytest.raises(ConfigError, match=rf"^{name} must hold real numbers, got dtype torch\.(complex|bool)"):
        GaussianProblem(mean, cov)  # type: ignore[arg-type]


@pytest.mark.parametrize(("mean", "cov", "name"), [
    ([0.0, 0.0], [["a", 0], [0, 1]], "cov"),
    (["x", 0.0], np.eye(2), "mean"),
    ([0.0, 0.0], None, "cov"),
    (np.array([0.0, "1"], dtype=object), np.eye(2), "mean"),
])
def test_problem_refuses_non_numeric_input_naming_it(mean: object, cov: object, name: str) -> None:
    with pytest.raises(ConfigError, match=rf"^{name} must be a .* of real numbers, got "):
        GaussianProblem(mean, cov)  # type: ignore[arg-type]


def test_problem_keeps_float64_digits_of_list_input() -> None:
    """A list of Python floats is read in float64 (not torch's default float32)."""
    p = GaussianProblem([0.1, 1 / 3], [[2.0, 0.1], [0.1, 1 / 3]])
    assert p.mean.dtype == torch.float64 and p.mean.tolist() == [0.1, 1 / 3]
    assert p.cov[1, 1].item() == 1 / 3


@pytest.mark.parametrize("rtol", [math.nan, math.inf, -1e-12, "1e-12", True])
def test_meeting_point_refuses_bad_rtol(rtol: object) -> None:
    problem = GaussianProblem(torch.zeros(2), torch.diag(torch.tensor([4.0, 0.25], dtype=torch.float64)))
    with pytest.raises(ConfigError, match="rtol must be a finite number >= 0"):
        meeting_point(problem, rotation_matrix(180.0), rtol=rtol)  # type: ignore[arg-type]


def test_meeting_point_default_and_zero_rtol() -> None:
    """M = diag(4, 0.25) at 180°: Θ̂ = diag(−3, −1.5), not cI, so the lines do not all meet (NaN used to say they
    met at t = 0.444); Counter Example 1 (M = I, Θ̂ = −2I exactly) meets at (½, μ/2) even with rtol = 0."""
    problem = GaussianProblem(torch.zeros(2), torch.diag(torch.tensor([4.0, 0.25], dtype=torch.float64)))
    assert meeting_point(problem, rotation_matrix(180.0)) is None
    mu = torch.tensor([5.0, 5.0], dtype=torch.float64)
    hit = meeting_point(GaussianProblem(mu, torch.eye(2)), rotation_matrix(180.0), rtol=0.0)
    assert hit is not None and hit[0] == 0.5 and torch.equal(hit[1], mu / 2)


def test_ot_map_refuses_nan_points() -> None:
    problem = GaussianProblem(torch.zeros(2), torch.eye(2))
    x0 = torch.zeros(4, 2, dtype=torch.float64)
    x0[2, 1] = math.nan
    with pytest.raises(DataError, match=r"^x0 holds 1 non-finite value"):
        problem.ot_map(x0)


@pytest.mark.parametrize("name", ["mean0", "mean1"])
def test_w2_refuses_nan_means(name: str) -> None:
    means = {"mean0": torch.zeros(2), "mean1": torch.ones(2)}
    means[name] = torch.tensor([math.nan, 0.0])
    with pytest.raises(DataError, match=rf"^{name} holds 1 non-finite value"):
        gaussian_w2_squared(means["mean0"], torch.eye(2), means["mean1"], torch.eye(2))


def test_w2_refuses_complex_mean_and_still_computes() -> None:
    with pytest.raises(ConfigError, match=r"^mean1 must hold real numbers"):
        gaussian_w2_squared(torch.zeros(2), torch.eye(2), np.array([1 + 1j, 0.0]), torch.eye(2))
    # ‖μ‖² + tr(I + M − 2M^½) for M = diag(4, 0.25): 2 + (1 + 4 − 4) + (1 + 0.25 − 1) = 3.25
    w2 = gaussian_w2_squared([0.0, 0.0], torch.eye(2), [1.0, 1.0], torch.diag(torch.tensor([4.0, 0.25])))
    assert w2 == pytest.approx(3.25, abs=1e-12)


def test_matrix_arguments_refuse_a_complex_array_as_the_problem_does() -> None:
    """_square_matrix, behind gaussian_ot_matrix / W2 / the singular times, cast a complex numpy array (a sqrtm or
    eig output) to its real part with only a torch warning, while GaussianProblem refused it: one conversion now."""
    from flowvar.gaussian import gaussian_ot_matrix

    complex_cov = np.eye(2) + np.array([[0, 1j], [0, 0]]) * 1e-9
    with pytest.raises(ConfigError, match=r"^cov0 must hold real numbers, got dtype torch.complex128"):
        gaussian_ot_matrix(complex_cov, np.eye(2))
    assert torch.equal(gaussian_ot_matrix(np.eye(2), [[1.0, 0.0], [0.0, 1.0]]), torch.eye(2, dtype=torch.float64))


def test_rounding_bound_refuses_non_finite_input_naming_it() -> None:
    """A NaN θ made the bound NaN with no error (so a residual's ratio to it meant nothing)."""
    zeros, t = torch.zeros(3, 2, dtype=torch.float64), torch.full((3,), 0.5, dtype=torch.float64)
    assert parametric_residual_rounding_bound(torch.zeros(2), torch.zeros(2, 2), zeros, zeros, t).isfinite().all()
    with pytest.raises(DataError, match=r"^theta holds 1 non-finite value"):
        parametric_residual_rounding_bound(NAN_THETA, torch.zeros(2, 2), zeros, zeros, t)
    with pytest.raises(DataError, match=r"^Theta holds 1 non-finite value"):
        parametric_residual_rounding_bound(torch.zeros(2), NAN_BIG_THETA, zeros, zeros, t)
    bad_x1 = zeros.clone()
    bad_x1[1, 0] = math.nan
    with pytest.raises(DataError, match=r"^x1 holds 1 non-finite value"):
        parametric_residual_rounding_bound(torch.zeros(2), torch.zeros(2, 2), zeros, bad_x1, t)
    with pytest.raises(DataError, match=r"times"):
        parametric_residual_rounding_bound(torch.zeros(2), torch.zeros(2, 2), zeros, zeros, t * 3)


def test_residual_checks_report_a_diverged_field_as_nan_evidence() -> None:
    """The experiments' checks do not call the bound on a NaN field: they return NaN evidence, which their rules
    read as "refuted" (a diverged field is not the zero-residual one)."""
    from flowvar.couplings import RotatedOTCoupling
    from flowvar.experiments._gaussian_variance import DRAW_CHUNK, departure_check, residual_check
    from flowvar.interpolants import Interpolant
    from flowvar.loss import CFMLoss
    from flowvar.models.parametric import GaussianParametricField

    problem = GaussianProblem(torch.tensor([1.0, -1.0]), torch.diag(torch.tensor([4.0, 0.25])))
    coupling = RotatedOTCoupling(problem, 30.0)
    theta, Theta = problem.field_parameters(coupling.rotation)
    field = GaussianParametricField(2, NAN_THETA, Theta, trainable=False)
    checked = residual_check(field, coupling, 100, torch.Generator().manual_seed(0), DRAW_CHUNK)
    assert set(checked) == {"max_ratio", "t_at_max_ratio", "max_abs_residual", "median_bound"}
    assert all(math.isnan(v) for v in checked.values())
    departed = departure_check(field, coupling, CFMLoss(Interpolant(0.05)), 100, torch.Generator().manual_seed(0),
                               DRAW_CHUNK)
    assert len(departed) == 6 and all(math.isnan(v) for v in departed.values())
    finite = residual_check(GaussianParametricField(2, theta, Theta, trainable=False), coupling, 100,
                            torch.Generator().manual_seed(0), DRAW_CHUNK)
    assert finite["max_ratio"] < 1
