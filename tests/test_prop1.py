"""Experiment prop1: every claim rule on synthetic evidence, for each outcome it can return and for NaN inputs; the
per-sample residual check on exact and perturbed fields, and the departure check on noisy and mismatched paths (judged
against rounding, not an absolute threshold, and refused below the float64 floor); the run's verdicts do not depend
on K."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from flowvar.couplings import RotatedOTCoupling
from flowvar.errors import ConfigError
from flowvar.experiments._gaussian_variance import DRAW_CHUNK, ZERO_REFUTE_RATIO, departure_check, residual_check
from flowvar.experiments.base import run_experiment
from flowvar.experiments.prop1 import (
    check_resolvable,
    mismatch_scale,
    relative_traces,
    resolvable,
    resolved_nonzero_verdict,
    rule_noise_breaks_zero_variance,
    rule_pair_optimal_zero,
    rule_variance_from_mismatch,
)
from flowvar.gaussian import GaussianProblem
from flowvar.interpolants import Interpolant
from flowvar.loss import CFMLoss
from flowvar.models.parametric import GaussianParametricField

NAN = math.nan
PROBLEM = GaussianProblem(torch.tensor([5.0, 5.0]), torch.diag(torch.tensor([4.0, 0.25])))


def test_mismatch_scale_and_relative_traces() -> None:
    assert mismatch_scale({"30": 2.0, "180": 50.0}) == 50.0
    assert mismatch_scale({}) == 1.0  # no non-zero angle: an absolute scale
    assert math.isnan(mismatch_scale({"30": 2.0, "180": NAN}))  # a NaN anywhere reaches the scale
    assert relative_traces({"0": 1e-15, "180": 5e-14}, 50.0) == {"0": 2e-17, "180": 1e-15}
    assert all(math.isnan(v) for v in relative_traces({"0": 1e-15}, NAN).values())
    assert all(math.isnan(v) for v in relative_traces({"0": 1e-15}, 0.0).values())


def test_rule_pair_optimal_zero_reaches_every_outcome() -> None:
    # angle → max ‖r_b‖ / rounding bound
    assert rule_pair_optimal_zero({"0": 0.01, "180": 0.02}) == "confirmed"
    assert rule_pair_optimal_zero({"0": 0.01, "180": 8.0}) == "inconclusive"
    assert rule_pair_optimal_zero({"0": 0.01, "180": 1e7}) == "refuted"
    assert rule_pair_optimal_zero({}) == "inconclusive"  # e.g. no angle whose lines cross


def test_rule_pair_optimal_zero_nan_at_any_angle_refutes() -> None:
    # the builtin max() would keep 0.01 and drop the NaN in second position: "confirmed"
    assert rule_pair_optimal_zero({"0": 0.01, "180": NAN}) == "refuted"
    assert rule_pair_optimal_zero({"0": NAN, "180": 0.01}) == "refuted"


def _field(theta: torch.Tensor, Theta: torch.Tensor) -> GaussianParametricField:
    return GaussianParametricField(2, theta, Theta, trainable=False)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_residual_check_confirms_the_exact_field_and_catches_one_off_by_1e_6() -> None:
    for angle in (0.0, 180.0):  # 180°: singular at t = 1/3 and 2/3
        coupling = RotatedOTCoupling(PROBLEM, angle)
        theta, Theta = PROBLEM.field_parameters(coupling.rotation)
        exact = residual_check(_field(theta, Theta), coupling, 3000, _gen(1), DRAW_CHUNK)
        assert exact["max_ratio"] < 0.05 and exact["median_bound"] < 1e-11
        assert rule_pair_optimal_zero({f"{angle:g}": exact["max_ratio"]}) == "confirmed"
        off = residual_check(_field(theta + 1e-6, Theta), coupling, 3000, _gen(1), DRAW_CHUNK)
        assert off["max_ratio"] > 1e6 and rule_pair_optimal_zero({f"{angle:g}": off["max_ratio"]}) == "refuted"
        off_theta = residual_check(_field(theta, Theta + 1e-6), coupling, 3000, _gen(1), DRAW_CHUNK)
        assert off_theta["max_ratio"] > ZERO_REFUTE_RATIO
        # off by 1e-12: above the rounding bound, but not by the refutation margin
        tiny = residual_check(_field(theta + 1e-12, Theta), coupling, 3000, _gen(1), DRAW_CHUNK)
        assert rule_pair_optimal_zero({f"{angle:g}": tiny["max_ratio"]}) == "inconclusive"


def test_residual_check_sees_the_variance_estimates_paths() -> None:
    # the same generator seed gives the same t's as estimate_variance's draws: the worst t is one of them
    coupling = RotatedOTCoupling(PROBLEM, 180.0)
    theta, Theta = PROBLEM.field_parameters(coupling.rotation)
    a = residual_check(_field(theta, Theta), coupling, 20000, _gen(3), DRAW_CHUNK)
    b = residual_check(_field(theta, Theta), coupling, 20000, _gen(3), DRAW_CHUNK)
    assert a == b and 0.0 <= a["t_at_max_ratio"] <= 1.0


def _arm(median: float, largest: float, trace: float = 1e-3, departure: float = 1e9) -> dict[str, float]:
    """One arm of the departure rules: the median and max ‖r_b‖ / bound_b, the trace and the median departure U."""
    return {"median_ratio": median, "max_ratio": largest, "trace": trace, "median_departure": departure}


def test_resolvable_is_the_departure_floor() -> None:
    # every field has ‖r_b‖ / bound_b ≤ U_b + 1: a median U with U + 1 ≤ 100 cannot reach the confirming median 100
    assert not resolvable(7.4) and not resolvable(99.0) and resolvable(99.5) and resolvable(1e12)
    assert resolvable(NAN)  # a NaN is judged (and refutes), not excused as unresolvable


def test_resolved_nonzero_verdict_reaches_every_outcome() -> None:
    assert resolved_nonzero_verdict([_arm(1e8, 1e9), _arm(250.0, 900.0)]) == "confirmed"
    assert resolved_nonzero_verdict([_arm(1e8, 1e9), _arm(1e-3, 0.01)]) == "refuted"  # every residual is rounding
    assert resolved_nonzero_verdict([_arm(1e8, 1e9, trace=0.0)]) == "refuted"  # a zero variance estimate
    assert resolved_nonzero_verdict([_arm(1e8, 1e9), _arm(30.0, 150.0)]) == "inconclusive"  # resolved, not by 100
    assert resolved_nonzero_verdict([]) == "inconclusive"
    # below the float64 floor an arm is never refuted (σ = 1e-12 read refuted by the old absolute threshold)
    assert resolved_nonzero_verdict([_arm(1e8, 1e9), _arm(1e-3, 0.5, trace=0.0, departure=7.4)]) == "inconclusive"
    # a NaN in a non-first arm or field refutes (np.max-style: a NaN is never dropped)
    assert resolved_nonzero_verdict([_arm(1e8, 1e9), _arm(NAN, NAN)]) == "refuted"
    assert resolved_nonzero_verdict([_arm(1e8, 1e9), _arm(1e8, 1e9, trace=NAN)]) == "refuted"
    assert resolved_nonzero_verdict([_arm(1e8, 1e9), _arm(1e8, 1e9, departure=NAN)]) == "refuted"


def test_rule_noise_breaks_zero_variance_reaches_every_outcome() -> None:
    res = {"0": {"constant": _arm(1e8, 1e9), "bridge": _arm(5e7, 3e8)}, "120": {"constant": _arm(1e8, 1e9),
                                                                              "bridge": _arm(4e7, 5e8)}}
    traces = {"0": {"constant": 1e-3, "bridge": 2e-3}, "120": {"constant": 1e-2, "bridge": 1e-2}}
    assert rule_noise_breaks_zero_variance(res, traces) == "confirmed"
    # the traces are σ²-small, the residuals resolved: σ = 1e-6 read inconclusive by the old trace threshold 1e-8
    assert rule_noise_breaks_zero_variance(res, {a: {f: 2.6e-12 for f in v} for a, v in traces.items()}) == "confirmed"
    zero = {**res, "0": {"constant": _arm(0.0, 5e-3), "bridge": _arm(0.0, 5e-3)}}  # Θ = 0 (M = I at 0°)
    assert rule_noise_breaks_zero_variance(zero, traces) == "refuted"
    near = {**res, "0": {"constant": _arm(79.0, 440.0), "bridge": _arm(30.0, 145.0)}}  # σ = 3e-11 on the default
    assert rule_noise_breaks_zero_variance(near, traces) == "inconclusive"
    assert rule_noise_breaks_zero_variance({}, {}) == "inconclusive"  # e.g. every angle's lines cross
    assert rule_noise_breaks_zero_variance(res, {**traces, "120": {"constant": 1e-2, "bridge": NAN}}) == "refuted"
    # the rule reads the arms the traces name: the noisy estimate's own
    assert rule_noise_breaks_zero_variance(res, {"0": traces["0"]}) == "confirmed"


def test_rule_variance_from_mismatch_reaches_every_outcome() -> None:
    ok = {"0": 0.01, "180": 0.02}
    res = {"30": _arm(2e12, 1e13), "180": _arm(8e12, 3e13)}
    traces = {"30": 10.3, "180": 97.8}
    assert rule_variance_from_mismatch(res, traces, ok) == "confirmed"
    # an angle of 1e-6°: trace 1e-14, residuals still resolved by 7e4 (the old rule: below 1e-6, inconclusive)
    assert rule_variance_from_mismatch({**res, "1e-06": _arm(6.7e4, 3.4e5)}, {**traces, "1e-06": 1.2e-14},
                                       ok) == "confirmed"
    assert rule_variance_from_mismatch({**res, "180": _arm(0.0, 0.01)}, traces, ok) == "refuted"  # no mismatch
    assert rule_variance_from_mismatch(res, traces, {"0": 0.01, "180": 1e7}) == "refuted"  # pair-optimal not zero
    # 1e-9°: resolvable (U = 632) but the median ratio 67 is short of 100
    assert rule_variance_from_mismatch({**res, "1e-09": _arm(67.0, 341.0, departure=632.0)},
                                       {**traces, "1e-09": 1.17e-20}, ok) == "inconclusive"
    assert rule_variance_from_mismatch(res, traces, {"0": 0.01, "180": 8.0}) == "inconclusive"
    assert rule_variance_from_mismatch({}, {}, ok) == "inconclusive"  # no non-zero angle: nothing is mismatched
    assert rule_variance_from_mismatch(res, {**traces, "180": NAN}, ok) == "refuted"
    assert rule_variance_from_mismatch(res, traces, {"0": 0.01, "180": NAN}) == "refuted"


def test_check_resolvable_names_the_floor_and_the_fix() -> None:
    check_resolvable({"0.constant": 2e6, "0.bridge": 7e5}, {"30": 1e13}, 1e-6)  # resolvable: nothing raised
    with pytest.raises(ConfigError, match=r"sigma=1e-12 is below this problem's float64 floor of about 1\.3e-11.*"
                                          r"at 0\.bridge and 1 other arm\).*raise sigma to at least 1\.3e-11"):
        check_resolvable({"0.constant": 19.7, "0.bridge": 7.4}, {"30": 1e13}, 1e-12)
    with pytest.raises(ConfigError, match=r"angles 1e-12° \(U = 0\.632; about 1\.6e-10° would do\).*drop or raise"):
        check_resolvable({"0.constant": 1e12}, {"1e-12": 0.632, "30": 1e13}, 0.05)


def _departure(field: GaussianParametricField, coupling: RotatedOTCoupling, sigma: float,
               noise: str = "constant") -> dict[str, float]:
    return departure_check(field, coupling, CFMLoss(Interpolant(sigma, noise)), 3000, _gen(2), DRAW_CHUNK)


def test_departure_check_resolves_noise_at_any_sigma_above_rounding() -> None:
    coupling = RotatedOTCoupling(PROBLEM, 30.0)
    field = PROBLEM.pair_optimal_field(coupling.rotation)
    for sigma, verdict in ((1e-6, "confirmed"), (0.05, "confirmed"), (3e-11, "inconclusive")):
        c, b = _departure(field, coupling, sigma), _departure(field, coupling, sigma, "bridge")
        assert resolvable(c["median_departure"]) and resolvable(b["median_departure"])
        assert rule_noise_breaks_zero_variance({"30": {"constant": c, "bridge": b}},
                                               {"30": {"constant": 1.0, "bridge": 1.0}}) == verdict, sigma
        # no field can exceed the departure: ‖r_b‖ / bound_b ≤ U_b + 1, so the medians too
        assert c["median_ratio"] <= c["median_departure"] + 1 and b["median_ratio"] <= b["median_departure"] + 1
    tiny = _departure(field, coupling, 1e-12, "bridge")  # the referee's σ: U ≈ 7, below the floor of 99
    assert not resolvable(tiny["median_departure"]) and tiny["median_ratio"] < ZERO_REFUTE_RATIO
    # U ∝ σ: the floor σ · 99 / U is the same from either σ
    assert _departure(field, coupling, 1e-6)["median_departure"] == pytest.approx(
        1e6 * _departure(field, coupling, 1e-12)["median_departure"], rel=1e-3)


def test_departure_check_refutes_a_field_that_noise_does_not_reach() -> None:
    # M = I at 0°: Θ = 0, v = θ is constant and r = f(t)ΘA_t⁻¹z = 0: noise truly leaves zero variance
    flat = GaussianProblem(torch.tensor([5.0, 5.0]), torch.eye(2))
    coupling = RotatedOTCoupling(flat, 0.0)
    check = _departure(flat.pair_optimal_field(coupling.rotation), coupling, 0.05)
    assert resolvable(check["median_departure"]) and check["max_ratio"] < 0.05
    assert rule_noise_breaks_zero_variance({"0": {"constant": check}}, {"0": {"constant": 0.0}}) == "refuted"


def test_departure_check_sees_the_mismatch_of_tiny_angles() -> None:
    ot = PROBLEM.ot_field()
    for angle, resolved in ((1e-6, True), (1e-12, False)):
        check = _departure(ot, RotatedOTCoupling(PROBLEM, angle), 0.0)
        assert resolvable(check["median_departure"]) is resolved
        assert (check["median_ratio"] > ZERO_REFUTE_RATIO) is resolved
    with pytest.raises(ConfigError, match="plain target"):
        departure_check(ot, RotatedOTCoupling(PROBLEM, 30.0), CFMLoss(Interpolant(0.1, "bridge", "conditional")),
                        100, _gen(0), DRAW_CHUNK)


def test_small_sigma_is_confirmed_or_refused_never_refuted(tmp_path: Path) -> None:
    """The referee's runs: σ = 1e-6 read inconclusive (trace 2.6e-12 under the absolute 1e-8) and σ = 1e-12 refuted
    (2.6e-24 under 1e-20) though the noisy variance is positive for every σ > 0."""
    run_experiment("prop1", tmp_path / "small", quick=True, overrides={"sigma": "1e-6", "angles": "0,120,180"})
    result = json.loads((tmp_path / "small" / "prop1" / "result.json").read_text())
    claims = {c["id"]: c for c in result["claims"]}
    noisy = claims["prop1.B.noise_breaks_zero_variance"]
    assert noisy["verdict"] == "confirmed" and noisy["evidence"]["min_trace_with_noise"] < 1e-8
    assert noisy["evidence"]["min_median_residual_to_bound"] > 1e5
    assert set(noisy["evidence"]["residuals_with_noise_by_angle"]) == {"0", "120"}  # 180° crosses: not judged
    with pytest.raises(ConfigError, match=r"sigma=1e-12 is below this problem's float64 floor of about 1\.\de-11"):
        run_experiment("prop1", tmp_path / "tiny", quick=True, overrides={"sigma": "1e-12", "angles": "0,120,180"})
    assert not (tmp_path / "tiny" / "prop1" / "result.json").exists()


def test_tiny_angles_are_judged_by_resolution_not_by_an_absolute_trace(tmp_path: Path) -> None:
    # the referee's angles=0,1e-9,180: inconclusive at a trace of 1.17e-20, just above the old refute level 1e-20
    run_experiment("prop1", tmp_path / "a", quick=True, overrides={"angles": "0,1e-6,180", "n_samples": "2000"})
    result = json.loads((tmp_path / "a" / "prop1" / "result.json").read_text())
    mismatch = next(c for c in result["claims"] if c["id"] == "prop1.variance_from_mismatch")
    assert mismatch["verdict"] == "confirmed" and mismatch["evidence"]["min_ot_field_trace_under_rotation"] < 1e-6
    with pytest.raises(ConfigError, match=r"angles 1e-12° .*drop or raise them"):
        run_experiment("prop1", tmp_path / "b", quick=True, overrides={"angles": "0,1e-12,180", "n_samples": "2000"})


def test_crossing_identity_does_not_depend_on_k(tmp_path: Path) -> None:
    # at 180° (singular at t = 1/3, 2/3) the σ = 0 trace estimate grows with K (1e-19 at 5e3, 8e-10 at 5e5: the
    # old rule, trace < 1e-12 × the mismatch scale, turned inconclusive at 5e5); the per-sample judgement does not
    verdicts = {}
    for k in (5000, 500_000):
        run_experiment("prop1", tmp_path / str(k), quick=True, overrides={"n_samples": str(k), "angles": "180"})
        result = json.loads((tmp_path / str(k) / "prop1" / "result.json").read_text())
        verdicts[k] = {c["id"]: c["verdict"] for c in result["claims"]}
        row = result["metrics"]["by_angle"]["180"]
        # with noise the loss and variance are infinite there: recorded as such, not estimated
        assert row["pair_optimal.constant.trace"] == row["pair_optimal.bridge.loss"] == "inf"
        assert result["metrics"]["pair_optimal_residuals"]["180"]["max_ratio"] < 0.05
    assert verdicts[500_000]["prop1.A.even_when_lines_cross"] == "confirmed"
    assert verdicts[500_000]["prop1.variance_from_mismatch"] == "confirmed"
    assert verdicts[500_000]["prop1.B.noise_breaks_zero_variance"] == "inconclusive"  # no estimable angle left
    assert verdicts[5000] == verdicts[500_000]


def test_full_covariance_runs(tmp_path: Path) -> None:
    run_experiment("prop1", tmp_path, quick=True, overrides={"n_samples": "400", "angles": "0,120,180",
                                                             "cov": "[[4,1.5],[1.5,1]]"})
    result = json.loads((tmp_path / "prop1" / "result.json").read_text())
    assert result["config"]["cov"] == [[4.0, 1.5], [1.5, 1.0]]
    assert "[[4.0, 1.5], [1.5, 1.0]]" in result["choices"]["problem"]
    assert all(c["verdict"] == "confirmed" for c in result["claims"])


def test_sigma_must_be_positive(tmp_path: Path) -> None:
    """Claim (B) is about noise: σ = 0 would make its "noise" the deterministic interpolant and refute it as if the
    implementation were broken, so σ ≤ 0 (or not finite) is refused before anything is computed."""
    for sigma, message in (("0", "sigma must be > 0 and finite: claim B is about interpolant noise"),
                           ("-0.1", "sigma must be >= 0"), ("inf", "sigma must be finite")):  # the generic checks
        with pytest.raises(ConfigError, match=message):
            run_experiment("prop1", tmp_path / sigma, quick=True, overrides={"sigma": sigma, "n_samples": "400"})
        assert not (tmp_path / sigma / "prop1" / "result.json").exists()
