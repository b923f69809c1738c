"""fig4's σ = 0 identity near a singular angle, and a wrong field, end to end (the kit's residual check,
:func:`~flowvar.experiments._gaussian_variance.residual_check`); fig5's flip finding on sweeps that do not reach the
flip."""

from pathlib import Path

import pytest
import torch

from experiment_checks import claims_of
from flowvar.couplings import RotatedOTCoupling
from flowvar.experiments._gaussian_variance import ZERO_CONFIRM_RATIO, ZERO_REFUTE_RATIO, residual_check
from flowvar.experiments.base import run_experiment
from flowvar.experiments.fig4 import DRAW_CHUNK
from flowvar.gaussian import GaussianProblem, rotation_matrix, singular_times
from flowvar.models.parametric import GaussianParametricField

M = torch.diag(torch.tensor([4.0, 0.25], dtype=torch.float64))  # fig4's default: singular from |cos a| ≥ 0.8
PROBLEM = GaussianProblem(torch.tensor([1.0, 2.0], dtype=torch.float64), M)


@pytest.mark.parametrize("angle", [30.0, 120.0, 143.0, 143.12])
def test_residual_check_is_rounding_for_the_exact_field_and_far_above_for_a_wrong_one(angle: float) -> None:
    # 143.12° is 0.01° from the singular range (143.13°): the bound grows with ‖A_t⁻¹‖ as the rounding does
    rotation = rotation_matrix(angle, 2, (0, 1))
    theta, Theta = PROBLEM.field_parameters(rotation)
    assert singular_times(Theta) == []
    coupling = RotatedOTCoupling(PROBLEM, rotation=rotation)

    def ratio(field: GaussianParametricField) -> float:
        return residual_check(field, coupling, 4000, torch.Generator().manual_seed(3), DRAW_CHUNK)["max_ratio"]

    assert ratio(PROBLEM.pair_optimal_field(rotation)) < 0.1 * ZERO_CONFIRM_RATIO  # measured ~0.01
    assert ratio(GaussianParametricField(2, theta, Theta + 1e-6, trainable=False)) > 1e4 * ZERO_REFUTE_RATIO
    assert ratio(GaussianParametricField(2, theta + 1e-9, Theta, trainable=False)) > 10 * ZERO_REFUTE_RATIO
    nan_field = GaussianParametricField(2, theta, Theta, trainable=False)
    with torch.no_grad():
        nan_field.theta[0] = float("nan")
    assert ratio(nan_field) != ratio(nan_field)  # NaN


FIG4_NEAR_SINGULAR = {"angles": "140,142,143", "sigmas": "0,0.5", "noise_forms": "constant", "repeats": "5"}


def test_fig4_zero_identity_holds_just_below_the_singular_range(tmp_path: Path) -> None:
    # 143° refuted under the old absolute rule (Monte-Carlo trace 5.2e-20 > 1e-20: A_t⁻¹ amplifies rounding);
    # every residual is still within its rounding bound
    run_experiment("fig4", tmp_path, quick=True, overrides=FIG4_NEAR_SINGULAR)
    result, claims = claims_of(tmp_path / "fig4")
    zero = claims["fig4.own_coupling.zero_at_sigma0"]
    assert zero["verdict"] == "confirmed"
    assert zero["evidence"]["max_trace"] > 1e-20  # what the old rule refuted on, still reported
    assert zero["evidence"]["max_residual_to_bound"] < ZERO_CONFIRM_RATIO
    assert set(zero["evidence"]["per_arm"]) == {"ot_field/ot_pairs", "pair_optimal/140deg_pairs",
                                                "pair_optimal/142deg_pairs", "pair_optimal/143deg_pairs"}
    assert result["metrics"]["sigma0_own_coupling"]["pair_optimal/143deg_pairs"]["residual_to_bound"] < 1


def test_fig4_zero_identity_refutes_a_wrong_pair_optimal_field(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    exact = GaussianProblem.pair_optimal_field

    def off_by_1e6(self: GaussianProblem, rotation: torch.Tensor | None = None, **kwargs) -> GaussianParametricField:
        field = exact(self, rotation, **kwargs)
        with torch.no_grad():
            field.Theta += 1e-6
        return field

    monkeypatch.setattr(GaussianProblem, "pair_optimal_field", off_by_1e6)
    run_experiment("fig4", tmp_path, quick=True, overrides={**FIG4_NEAR_SINGULAR, "angles": "120"})
    _, claims = claims_of(tmp_path / "fig4")
    zero = claims["fig4.own_coupling.zero_at_sigma0"]
    assert zero["verdict"] == "refuted" and zero["evidence"]["max_residual_to_bound"] > 1e4 * ZERO_REFUTE_RATIO
