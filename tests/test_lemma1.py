"""Experiment lemma1: every claim rule on synthetic evidence, for each outcome it can return and for NaN inputs; the
optimality identity catches a non-OT square root (Cholesky) that the other three pass; a full covariance runs."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from flowvar.experiments.base import run_experiment
from flowvar.experiments.lemma1 import (
    flow_map_optimality,
    moment_errors,
    rule_endpoint_distribution,
    rule_endpoints_are_ot_partners,
    rule_flow_is_optimal,
    rule_velocity_on_ot_lines,
)
from flowvar.gaussian import GaussianProblem
from flowvar.sampling import integrate

NAN = math.nan


def test_rule_endpoints_are_ot_partners_reaches_every_outcome() -> None:
    assert rule_endpoints_are_ot_partners({"rk4": 1e-12, "dopri5": 1e-9}) == "confirmed"
    assert rule_endpoints_are_ot_partners({"rk4": 1e-12, "dopri5": 1e-5}) == "inconclusive"
    assert rule_endpoints_are_ot_partners({"rk4": 1e-12, "dopri5": 0.1}) == "refuted"
    assert rule_endpoints_are_ot_partners({}) == "inconclusive"
    # NaN in the second solver: the builtin max() returned 1e-9 and confirmed
    assert rule_endpoints_are_ot_partners({"rk4": 1e-9, "dopri5": NAN}) == "refuted"


def test_rule_endpoint_distribution_reaches_every_outcome() -> None:
    ok = {"mean_z_max": 1.2, "cov_z_max": 2.0}
    assert rule_endpoint_distribution({"rk4": ok, "dopri5": ok}) == "confirmed"
    assert rule_endpoint_distribution({"rk4": ok, "dopri5": {"mean_z_max": 1.0, "cov_z_max": 7.0}}) == "inconclusive"
    assert rule_endpoint_distribution({"rk4": {"mean_z_max": 12.0, "cov_z_max": 1.0}, "dopri5": ok}) == "refuted"
    assert rule_endpoint_distribution({}) == "inconclusive"
    assert rule_endpoint_distribution({"rk4": ok, "dopri5": {"mean_z_max": 1.0, "cov_z_max": NAN}}) == "refuted"
    assert rule_endpoint_distribution({"rk4": ok, "dopri5": {"mean_z_max": NAN, "cov_z_max": 1.0}}) == "refuted"


def test_rule_velocity_on_ot_lines_reaches_every_outcome() -> None:
    assert rule_velocity_on_ot_lines(1e-14) == "confirmed"
    assert rule_velocity_on_ot_lines(1e-8) == "inconclusive"
    assert rule_velocity_on_ot_lines(1e-3) == "refuted"
    assert rule_velocity_on_ot_lines(NAN) == "refuted"


# ------------------------------------------------------------------------------------------- optimality (c)

M_FULL = torch.tensor([[4.0, 1.5], [1.5, 1.0]], dtype=torch.float64)
MU = torch.tensor([5.0, 5.0], dtype=torch.float64)


def _judge_with_root(root: torch.Tensor | None) -> tuple[dict[str, str], dict[str, float]]:
    """lemma1's four rules on a problem whose map matrix is replaced by ``root`` (None: the symmetric root)."""
    problem = GaussianProblem(MU, M_FULL)
    if root is not None:
        problem.cov_sqrt = root
    field = problem.ot_field()
    x0 = torch.randn(4000, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    partner = problem.ot_map(x0)
    x1 = integrate(field, x0, method="rk4", steps=100).x1
    t = torch.rand(4000, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    xt = (1 - t[:, None]) * x0 + t[:, None] * partner
    z = moment_errors(x1, problem)
    optimality = flow_map_optimality(x0, x1, problem)
    return {"endpoints": rule_endpoints_are_ot_partners({"rk4": float((x1 - partner).norm(dim=1).max())}),
            "distribution": rule_endpoint_distribution({"rk4": {k: z[k] for k in ("mean_z_max", "cov_z_max")}}),
            "lines": rule_velocity_on_ot_lines(float((field(xt, t) - (partner - x0)).abs().max())),
            "optimal": rule_flow_is_optimal({"rk4": optimality})}, optimality


def test_flow_is_optimal_catches_a_cholesky_map_the_other_identities_pass() -> None:
    verdicts, ok = _judge_with_root(None)
    assert set(verdicts.values()) == {"confirmed"}
    assert ok["w2_squared"] == pytest.approx(float(MU @ MU + 2 + 5 - 2 * torch.linalg.eigvalsh(M_FULL).sqrt().sum()))
    assert ok["cost_gap"] < 1e-10 and ok["asymmetry"] < 1e-12 and ok["min_eigenvalue"] > 0
    L = torch.linalg.cholesky(M_FULL)  # L Lᵀ = M: the same pushforward, not symmetric, not the Brenier map
    verdicts, chol = _judge_with_root(L)
    assert verdicts == {"endpoints": "confirmed", "distribution": "confirmed", "lines": "confirmed",
                        "optimal": "refuted"}
    expected_gap = 2 * float(torch.linalg.eigvalsh(M_FULL).sqrt().sum() - torch.trace(L))
    assert chol["cost_gap"] == pytest.approx(expected_gap, rel=1e-8) and chol["cost_gap"] > 0.2
    assert chol["pushforward_error"] < 1e-10 and chol["asymmetry"] > 0.5


def test_flow_map_optimality_catches_a_wrong_pushforward_and_a_non_affine_flow() -> None:
    problem = GaussianProblem(MU, M_FULL)
    x0 = torch.randn(3000, 2, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    exact = problem.ot_map(x0)
    assert rule_flow_is_optimal({"rk4": flow_map_optimality(x0, exact, problem)}) == "confirmed"
    # the map of N(μ, 1.01 M): cost and pushforward off by ~1e-2
    assert rule_flow_is_optimal({"rk4": flow_map_optimality(x0, MU + 1.005 * (exact - MU), problem)}) == "refuted"
    bent = exact + 1e-2 * x0.pow(2)  # not affine
    assert flow_map_optimality(x0, bent, problem)["fit_residual"] > 1e-3
    assert rule_flow_is_optimal({"rk4": flow_map_optimality(x0, bent, problem)}) == "refuted"
    # a shift of 1e-5 lies between solver tolerance and the refutation bound
    assert rule_flow_is_optimal({"rk4": flow_map_optimality(x0, exact + 1e-5, problem)}) == "inconclusive"


def test_rule_flow_is_optimal_reaches_every_outcome() -> None:
    ok = {"fit_residual": 1e-12, "pushforward_error": 1e-12, "cost_gap": 1e-12}
    assert rule_flow_is_optimal({"rk4": ok, "dopri5": ok}) == "confirmed"
    for key in ok:
        assert rule_flow_is_optimal({"rk4": ok, "dopri5": {**ok, key: 1e-5}}) == "inconclusive"
        assert rule_flow_is_optimal({"rk4": ok, "dopri5": {**ok, key: 0.3}}) == "refuted"
        assert rule_flow_is_optimal({"rk4": ok, "dopri5": {**ok, key: NAN}}) == "refuted"
    assert rule_flow_is_optimal({}) == "inconclusive"


def test_full_covariance_run(tmp_path: Path) -> None:
    run_experiment("lemma1", tmp_path, quick=True, overrides={"n_samples": "2000", "cov": "[[4,1.5],[1.5,1]]"})
    result = json.loads((tmp_path / "lemma1" / "result.json").read_text())
    assert result["config"]["cov"] == [[4.0, 1.5], [1.5, 1.0]]
    assert {c["id"]: c["verdict"] for c in result["claims"]} == {
        "lemma1.endpoints_are_ot_partners": "confirmed", "lemma1.endpoint_distribution": "confirmed",
        "lemma1.velocity_on_ot_lines": "confirmed", "lemma1.flow_is_optimal": "confirmed"}
    assert result["metrics"]["flow_map_optimality"]["dopri5"]["cost_gap"] < 1e-6


def test_the_line_check_reads_the_library_interpolant(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The OT lines x_t are the ones training uses (flowvar.interpolants.Interpolant at σ = 0), not a copy of the
    formula: an interpolant whose x_t is off the line by 1e-3 makes the line check refute."""
    from flowvar.interpolants import Interpolant, PathSample

    library_path = Interpolant.path

    def off_the_line(self: Interpolant, x0: torch.Tensor, x1: torch.Tensor, t: torch.Tensor | float,
                     z: torch.Tensor) -> PathSample:
        sample = library_path(self, x0, x1, t, z)
        return PathSample(x0=sample.x0, x1=sample.x1, t=sample.t, z=sample.z, xt=sample.xt + 1e-3,
                          target=sample.target)

    monkeypatch.setattr(Interpolant, "path", off_the_line)
    run_experiment("lemma1", tmp_path, quick=True, overrides={"n_samples": "2000"})
    result = json.loads((tmp_path / "lemma1" / "result.json").read_text())
    assert {c["id"]: c["verdict"] for c in result["claims"]}["lemma1.velocity_on_ot_lines"] == "refuted"
    assert result["metrics"]["line_velocity_error_max"] > 1e-4
