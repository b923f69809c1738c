"""solver_resolution: the helpers on closed-form fields with known answers, every rule on synthetic evidence, config
errors, and tiny smoke runs."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import Tensor

from flowvar.errors import ConfigError
from flowvar.experiments.base import build_config, get_experiment, run_experiment
from flowvar.experiments.solver_resolution import (
    SolverResolutionConfig,
    evaluate,
    exact_minimiser,
    fit_precondition,
    joint_status,
    jump_factor,
    point_rows,
    predicted_fraction,
    radial_rate,
    resolution_over_seeds,
    resolution_rule,
    solver_names,
    turning_window,
    window_over_seeds,
    window_rule,
)
from flowvar.metrics import rotation_pairing, status_verdict
from flowvar.sampling import integrate

ideal_field = exact_minimiser
pairing_outcome = rotation_pairing

MU = torch.tensor([5.0, 5.0], dtype=torch.float64)
CLAIMS = {"solver_resolution.sigma0_reproduces_rotation", "solver_resolution.sigma0.05_no_rotation",
          "solver_resolution.fig6_conclusion", "solver_resolution.sigma0_depends_on_resolution",
          "solver_resolution.window_explains_jumps"}


@pytest.fixture
def x0(gen: torch.Generator) -> Tensor:
    return torch.randn(200, 2, generator=gen, dtype=torch.float64)


def clipped_field(a: float) -> Callable[[Tensor, Tensor], Tensor]:
    """A synthetic field with a known turning window: v = μ + k(t) y, y = x − tμ, s = 1 − 2t,
    k = −2/max(s, a) for s > 0 and +2/max(−s, a) for s < 0 — the exact σ = 0 field with its rate clipped at 2/a,
    so K_max = 2/a and the window half-width is w = a/2."""

    def field(x: Tensor, t: Tensor) -> Tensor:
        s = (1 - 2 * t)[:, None]
        k = -2 * torch.sign(s) / torch.clamp(s.abs(), min=a)
        return MU + k * (x - t[:, None] * MU)

    return field


# ---------------------------------------------------------------------------------------------- exact fields


def test_exact_sigma0_field_rotation_on_odd_grids_undefined_on_even(x0: Tensor) -> None:
    config = build_config(get_experiment("solver_resolution"),
                          overrides={"euler_steps": "11,101,10,100", "rk_steps": "11"})
    out = evaluate(ideal_field(5.0, 0.0), x0, MU, config)
    assert list(out) == solver_names(config) == ["euler_10", "euler_11", "euler_100", "euler_101", "midpoint_11",
                                                 "rk4_11", "dopri5"]
    for n in (11, 101):
        res = out[f"euler_{n}"]
        assert isinstance(res, dict)
        assert res["fraction_nearer_rotation"] == 1.0 and res["rel_error_rotation"] < 1e-12
        assert res["status"] == "reproduces"
    for name in ("euler_10", "euler_100", "midpoint_11", "rk4_11"):  # each evaluates the field at t = ½ (0/0)
        assert isinstance(out[name], str) and out[name].startswith("failed")
    rows = {r["solver"]: r for r in point_rows(0.0, None, "exact", out)}
    assert rows["euler_10"]["status"] == "failed" and rows["euler_10"]["fraction_rotation"] is None
    assert rows["euler_10"]["parity"] == "even" and rows["euler_11"]["parity"] == "odd"
    assert rows["dopri5"]["parity"] == "adaptive" and rows["dopri5"]["n_steps"] is None
    assert rows["euler_11"]["step_size"] == pytest.approx(1 / 11)


def test_exact_noisy_minimiser_gives_translation(x0: Tensor) -> None:
    """σ = 0.2: every Euler step here (h ≤ 0.1) is narrower than the window σ, so every solver follows the flow
    x0 ↦ x0 + μ."""
    config = build_config(get_experiment("solver_resolution"), overrides={"euler_steps": "10,11,101", "rk_steps": "11"})
    out = evaluate(ideal_field(5.0, 0.2), x0, MU, config)
    for name, res in out.items():
        assert isinstance(res, dict), name
        assert res["fraction_nearer_rotation"] == 0.0 and res["status"] == "fails", name
    dop = out["dopri5"]
    assert isinstance(dop, dict) and dop["mean_dist_translation"] < 1e-4 * dop["mean_gap"]


# ---------------------------------------------------------------------------------------------- turning window


@pytest.mark.parametrize("sigma", [0.01, 0.05, 0.2])
def test_turning_window_of_noisy_minimiser_is_sigma(sigma: float, x0: Tensor) -> None:
    """K(s) = 2s/(s² + σ²) peaks at 1/σ at s = σ: w = σ, and the turn from max contraction to max expansion is σ."""
    win = turning_window(ideal_field(5.0, sigma), x0, MU)
    assert win.resolved
    assert win.halfwidth == pytest.approx(sigma, rel=2e-3)
    assert win.turn_width == pytest.approx(sigma, rel=0.05)
    assert win.t_peak == pytest.approx(0.5 - sigma / 2, abs=0.03 * sigma)
    k = radial_rate(ideal_field(5.0, sigma), x0[:5], MU, torch.tensor([0.3, 0.7], dtype=torch.float64))
    s = torch.tensor([0.4, -0.4], dtype=torch.float64)[:, None]
    assert torch.allclose(k, (-2 * s / (s * s + sigma**2)).expand(2, 5))


def test_turning_window_of_clipped_field_and_exact_sigma0(x0: Tensor) -> None:
    win = turning_window(clipped_field(0.04), x0, MU)
    assert win.resolved and win.halfwidth == pytest.approx(0.02, rel=1e-9)
    exact = turning_window(ideal_field(5.0, 0.0), x0, MU, s_min=1e-4)
    assert not exact.resolved  # K = 2/s still grows at the smallest sampled s
    assert exact.halfwidth == pytest.approx(5e-5, rel=1e-9)
    with pytest.raises(ConfigError, match=r"0\.5"):
        radial_rate(ideal_field(5.0, 0.0), x0, MU, torch.tensor([0.5], dtype=torch.float64))


@pytest.mark.parametrize(("field_name", "n", "rotation"), [
    ("sigma0.05", 11, True), ("sigma0.05", 19, True), ("sigma0.05", 21, False), ("sigma0.05", 101, False),
    ("sigma0.05", 10, False), ("sigma0.05", 6, False),
    ("clip0.1", 11, True), ("clip0.1", 15, True), ("clip0.1", 21, False), ("clip0.1", 25, False),
    ("clip0.1", 30, False), ("clip0.1", 50, False),
])
def test_jump_factor_predicts_euler_side(field_name: str, n: int, rotation: bool, x0: Tensor) -> None:
    """Both fields are linear in y with a known window w (σ = 0.05: w = 0.05; clipped a = 0.1: w = 0.05): an odd
    grid lands on the rotation side iff 1/n > w, an even grid never; the jump factor predicts it exactly."""
    field = ideal_field(5.0, 0.05) if field_name == "sigma0.05" else clipped_field(0.1)
    predicted = predicted_fraction(field, x0, MU, n)
    observed = pairing_outcome(integrate(field, x0, method="euler", steps=n).x1, x0, MU)["fraction_nearer_rotation"]
    assert predicted == observed == (1.0 if rotation else 0.0)
    assert bool((jump_factor(field, x0, MU, n) < 0).all()) is rotation


def test_jump_factor_exact_sigma0(x0: Tensor) -> None:
    """Exact σ = 0 field: factor 1 − h·2/h = −1 on odd grids (the exact rotation), 1 − h·(1/h) = 0 on even grids."""
    field = ideal_field(5.0, 0.0)
    assert torch.allclose(jump_factor(field, x0, MU, 11), torch.full((200,), -1.0, dtype=torch.float64))
    assert predicted_fraction(field, x0, MU, 101) == 1.0
    assert float(jump_factor(field, x0, MU, 10).abs().max()) < 1e-9
    assert predicted_fraction(field, x0, MU, 10) is None


# ---------------------------------------------------------------------------------------------- rules


def test_joint_status_every_outcome() -> None:
    assert joint_status("reproduces", "fails") == "reproduces"
    assert joint_status("fails", "fails") == "fails"  # σ = 0 contradicted
    assert joint_status("reproduces", "reproduces") == "fails"  # σ = 0.05 contradicted
    assert joint_status("partial", "fails") == "partial"
    assert joint_status("reproduces", "partial") == "partial"
    assert joint_status("failed", "fails") == "partial"  # a stopped solver: neither
    statuses = [joint_status(a, b) for a, b in [("reproduces", "fails"), ("partial", "fails")]]
    assert status_verdict(statuses, "reproduces") == "inconclusive"


def test_per_setting_rule_is_fig6s() -> None:
    """The quick run's σ = 0 pattern (partial on coarse odd Euler, fails elsewhere): the 'partial' grids count
    neither way, so the four 'fails' of six settings (a strict majority, none reproducing) refute, as in fig6; a
    4-4 tie with the partial ones, or one 'reproduces' among them, is inconclusive."""
    pattern = ["partial", "partial", "fails", "fails", "fails", "fails"]
    assert status_verdict(pattern, "reproduces") == "refuted"
    assert status_verdict(["partial"] * 4 + ["fails"] * 4, "reproduces") == "inconclusive"
    assert status_verdict([*pattern, "reproduces"], "reproduces") == "inconclusive"
    assert status_verdict(["fails"] * 6, "reproduces") == "refuted"
    assert status_verdict(["reproduces"] * 6, "reproduces") == "confirmed"


def test_resolution_rule_every_outcome() -> None:
    assert resolution_rule([0.66, 0.79], 0.5) == "confirmed"
    assert resolution_rule([0.05, -0.02], 0.5) == "refuted"
    assert resolution_rule([0.66, 0.3], 0.5) == "inconclusive"
    assert resolution_rule([0.66, None], 0.5) == "inconclusive"  # a gap that could not be computed
    assert resolution_rule([], 0.5) == "inconclusive"


def test_window_rule_every_outcome() -> None:
    assert window_rule(0.98, 0.9) == "confirmed"
    assert window_rule(0.6, 0.9) == "refuted"
    assert window_rule(0.8, 0.9) == "inconclusive"
    assert window_rule(None, 0.9) == "inconclusive"
    assert window_rule(math.nan, 0.9) == "inconclusive"


def test_resolution_over_seeds_every_outcome() -> None:
    wide, none, half = [0.66, 0.79], [0.05, -0.02], [0.66, 0.3]
    assert resolution_over_seeds({"seed=0": wide, "seed=1": wide}, 0.5).verdict == "confirmed"
    assert resolution_over_seeds({"seed=0": none, "seed=1": none}, 0.5).verdict == "refuted"
    mixed = resolution_over_seeds({"seed=0": wide, "seed=1": none}, 0.5)
    assert mixed.verdict == "inconclusive" and mixed.per_seed == {"seed=0": "confirmed", "seed=1": "refuted"}
    assert resolution_over_seeds({"seed=0": wide, "seed=1": half}, 0.5).verdict == "inconclusive"
    assert resolution_over_seeds({"seed=0": wide}, 0.5).verdict == "inconclusive"  # one seed
    assert resolution_over_seeds({"seed=0": wide, "seed=1": [0.66, math.nan]}, 0.5).verdict == "inconclusive"
    assert resolution_over_seeds({"seed=0": none, "seed=1": [math.nan]}, 0.5).verdict == "inconclusive"


def test_window_over_seeds_every_outcome() -> None:
    assert window_over_seeds({"seed=0": 0.98, "seed=1": 0.95}, 0.9).verdict == "confirmed"
    assert window_over_seeds({"seed=0": 0.6, "seed=1": 0.5}, 0.9).verdict == "refuted"
    # judged per seed, never pooled: 40 cases agreeing fully and 10 at 0.8 pool to 0.96, but seed 1 is below 0.9
    mixed = window_over_seeds({"seed=0": 1.0, "seed=1": 0.8}, 0.9)
    assert mixed.verdict == "inconclusive" and mixed.per_seed == {"seed=0": "confirmed", "seed=1": "inconclusive"}
    assert window_over_seeds({"seed=0": 0.98, "seed=1": 0.6}, 0.9).verdict == "inconclusive"
    assert window_over_seeds({"seed=0": 0.98}, 0.9).verdict == "inconclusive"  # one seed
    assert window_over_seeds({"seed=0": 0.98, "seed=1": math.nan}, 0.9).verdict == "inconclusive"
    assert window_over_seeds({"seed=0": 0.98, "seed=1": None}, 0.9).verdict == "inconclusive"  # no case


def test_fit_precondition_per_training_length() -> None:
    pre = fit_precondition(0.0, {1000: 1.6, 4000: 0.39, 10_000: 0.2}, 0.608)
    assert pre.holds and pre.measured["fitted_train_steps"] == [4000, 10_000]
    none = fit_precondition(0.0, {20: 40.0, 40: 30.0}, 0.608)
    assert not none.holds and none.measured["fitted_train_steps"] == [] and none.remedy


# ---------------------------------------------------------------------------------------------- config


@pytest.mark.parametrize(("overrides", "key"), [
    ({"sigmas": "0.05,0.2"}, "sigmas"),
    ({"sigmas": "0,0.05,0.05"}, "sigmas"),
    ({"sigmas": "0,-0.1"}, "sigmas"),
    ({"contrast_sigma": "0"}, "contrast_sigma"),
    ({"euler_steps": "1,11"}, "euler_steps"),
    ({"euler_steps": "11,10,11"}, "euler_steps"),
    ({"train_steps": "0,100"}, "train_steps"),
    ({"rk_steps": "0"}, "rk_steps"),
    ({"dependence_margin": "0"}, "dependence_margin"),
    ({"fine_min_steps": "11"}, "fine_min_steps"),
    ({"reproduce_fraction": "0.4"}, "reproduce_fraction"),
    ({"window_s_min": "0"}, "window_s_min"),
])
def test_config_errors_name_the_key(overrides: dict[str, str], key: str) -> None:
    with pytest.raises(ConfigError, match=key):
        build_config(get_experiment("solver_resolution"), quick=True, overrides=overrides)


def test_yaml_holds_the_values_and_lists_are_sweepable() -> None:
    full = build_config(get_experiment("solver_resolution"))
    assert isinstance(full, SolverResolutionConfig)  # the values come from the YAML file alone
    quick = build_config(get_experiment("solver_resolution"), quick=True, overrides={"train_steps": "[4000]"})
    assert quick.train_steps == (4000,) and 0.0 in quick.sigmas and quick.width == 128


# ---------------------------------------------------------------------------------------------- smoke runs

TINY = {"sigmas": "0,0.05", "train_steps": "20,40", "width": "16", "n_eval": "50", "euler_steps": "3,11,4,51",
        "rk_steps": "3", "window_points": "20", "window_sources": "30", "max_dopri_steps": "2000"}


def _run(tmp_path: Path, **extra: str) -> dict[str, Any]:
    run_experiment("solver_resolution", tmp_path, quick=True, overrides={**TINY, **extra})
    return json.loads((tmp_path / "solver_resolution" / "result.json").read_text())


def test_solver_resolution_smoke(tmp_path: Path) -> None:
    data = _run(tmp_path)
    assert {c["id"] for c in data["claims"]} == CLAIMS
    for c in data["claims"]:
        assert c["verdict"] in {"confirmed", "refuted", "inconclusive", "untestable"} and c["rule"] and c["evidence"]
        assert c["kind"] in {"reproduction", "finding"} and c["min_effect"] and c["replicates"]
    claims = {c["id"]: c for c in data["claims"]}
    seeds = ["seed=0", "seed=1"]  # quick: 2 training seeds, the replicates
    # each per-setting claim states its own claimed status's minimum effect (the σ > 0 claims are confirmed on 'fails')
    assert claims["solver_resolution.sigma0.05_no_rotation"]["min_effect"].startswith(
        "< 0.5 of endpoints nearer R x0 + μ, or a mean distance to R x0 + μ ≥ the mean distance to x0 + μ, i.e. status "
        "'fails', at more than half of the judged settings and 'reproduces' at none")
    assert claims["solver_resolution.sigma0_reproduces_rotation"]["min_effect"].startswith(
        "≥ 0.9 of endpoints nearer R x0 + μ and a mean distance to it ≤ 0.1 × the mean gap")
    joint = claims["solver_resolution.fig6_conclusion"]["min_effect"]
    assert joint.startswith("the σ = 0 network with ≥ 0.9 of endpoints nearer") and "the σ = 0.05 network of the " \
        "same seed with < 0.5 of endpoints nearer" in joint and "i.e. joint status 'reproduces'" in joint
    # 20 and 40 training steps fit nothing: the per-setting claims are untestable, with each seed's measured losses
    for cid in ("solver_resolution.sigma0_reproduces_rotation", "solver_resolution.fig6_conclusion",
                "solver_resolution.sigma0_depends_on_resolution"):
        assert claims[cid]["verdict"] == "untestable", cid
        measured = claims[cid]["precondition"]["measured"]
        fit = measured.get("[1]", measured)  # the per-setting claims: the fit, then "some solver is judged"
        assert all(fit[s]["fitted_train_steps"] == [] for s in seeds), cid
    # judged only where the exact minimiser itself does what the claim says: σ = 0 stops on even grids, RK
    # … and, a σ = 0 claim, only where the exact CFM(σ_eq ≈ 0.025) minimiser, as blurred as the fit allowance admits,
    # reproduces too: Euler 3 and 11 (h ≥ 0.09 > σ*_n ≈ 0.30 h … 0.0275 at 11), not Euler 51 (h = 0.0196) or dopri5
    zero = claims["solver_resolution.sigma0_reproduces_rotation"]
    assert zero["evidence"]["judged_solvers"] == ["euler_3", "euler_11"]
    assert set(zero["evidence"]["not_judged_solvers"]) == {"euler_4", "midpoint_3", "rk4_3", "euler_51", "dopri5"}
    assert zero["evidence"]["not_judged_solvers"]["euler_51"].startswith("not judged: the exact CFM(0.025) minimiser")
    assert zero["precondition"]["measured"]["[2]"]["judged_solvers"] == ["euler_3", "euler_11", "euler_51", "dopri5"]
    blurred = zero["precondition"]["measured"]["[3]"]
    assert blurred["judged_settings"] == zero["evidence"]["judged_solvers"]
    assert blurred["fit_equivalent_sigma"] == pytest.approx(0.025, rel=1e-3)
    assert blurred["fit_equivalent_status"] == {"euler_3": "reproduces", "euler_11": "reproduces",
                                                "euler_51": "fails", "dopri5": "fails"}
    assert data["metrics"]["fit_equivalent_minimiser"]["sigma"] == blurred["fit_equivalent_sigma"]
    assert claims["solver_resolution.window_explains_jumps"]["precondition"] is None
    for claim in claims.values():  # every claim is judged per seed, with each seed's evidence
        assert list(claim["evidence"]["verdict_per_seed"]) == seeds and list(claim["evidence"]["per_seed"]) == seeds
    window = claims["solver_resolution.window_explains_jumps"]["evidence"]
    assert all(window["per_seed"][s]["n_cases"] == 2 * 2 * 4 for s in seeds)  # σ × lengths × Euler grids, per seed
    points = data["metrics"]["points"]
    solvers = ["euler_3", "euler_4", "euler_11", "euler_51", "midpoint_3", "rk4_3", "dopri5"]
    # 2 σ × (2 seeds × 2 training lengths + the exact minimiser) × 7 solvers
    assert len(points) == 2 * (2 * 2 + 1) * len(solvers)
    assert {(p["seed"], p["sigma"], p["train_steps"]) for p in points} == (
        {(sd, s, n) for sd in (0, 1) for s in (0.0, 0.05) for n in (20, 40)} | {(None, s, None) for s in (0.0, 0.05)})
    for p in points:
        assert p["solver"] in solvers and p["status"] in {"reproduces", "partial", "fails", "failed"}
        if p["status"] != "failed":
            assert 0 <= p["fraction_rotation"] <= 1 and math.isfinite(p["rel_error_rotation"])
        if p["field"] == "trained" and p["method"] == "euler":
            assert 0 <= p["predicted_fraction_rotation"] <= 1
    exact0 = {p["solver"]: p for p in points if p["sigma"] == 0.0 and p["field"] == "exact"}
    assert exact0["euler_11"]["status"] == "reproduces" and exact0["euler_4"]["status"] == "failed"
    metrics = data["metrics"]
    for key in ("sigma0_finest_reproducing_euler_steps", "sigma0_finest_rotation_majority_euler_steps",
                "fraction_rotation_dopri5_sigma0", "fraction_rotation_dopri5_sigma0.05", "window_halfwidth_sigma0",
                "fig6_conclusion_settings"):
        assert key in metrics
    assert len(metrics["windows"]) == 2 * (2 * 2 + 1) and len(metrics["training"]) == 2 * 2 * 2
    assert set(metrics["sigma0_finest_rotation_majority_euler_steps"]) == set(seeds)
    setting = next(c for c in data["claims"] if c["id"] == "solver_resolution.sigma0_reproduces_rotation")
    for evidence in setting["evidence"]["per_seed"].values():
        assert evidence["n_judged"] == 0 and evidence["unfitted_train_steps"] == [20, 40]
        assert sum(len(v) for v in evidence["status_map"].values()) == 2 * len(solvers)
    assert {r["train_steps"] for r in metrics["training"]} == {20, 40}
    assert {r["seed"] for r in metrics["training"]} == {0, 1}
    assert all(r["fitted"] is False and r["excess_loss"] > 0 for r in metrics["training"])
    assert set(data["figures"]) == {"fraction_heatmap.png", "fraction_vs_steps.png", "turning_window.png"}
    for fig in data["figures"]:
        assert (tmp_path / "solver_resolution" / fig).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_one_seed_is_inconclusive(tmp_path: Path) -> None:
    """With one training seed (a user's --set n_seeds=1) no trained-model claim can be confirmed or refuted."""
    data = _run(tmp_path, n_seeds="1", train_steps="[20]")
    for claim in data["claims"]:
        assert (claim["verdict_if_testable"] or claim["verdict"]) == "inconclusive", claim["id"]
        assert list(claim["evidence"]["verdict_per_seed"]) == ["seed=0"]


def test_split_preset_metrics_resolve_against_a_run(tmp_path: Path) -> None:
    """The split preset's metric names (with the seed level the seeds added) are names the run writes."""
    from flowvar.sweep import Options, PointOutcome, flatten, plan, resolve_metric

    the_plan = plan(Options("solver_resolution", preset="split", quick=True))
    data = _run(tmp_path, sigmas="[0.0, 0.05]", train_steps="[20]", euler_steps="[11, 101]")
    outcome = PointOutcome(the_plan.points[0], status="computed")
    outcome.metrics = flatten(data["metrics"])
    point_steps = the_plan.points[0].config.train_steps[0]
    outcome.metrics = {k.replace("train_steps=20", f"train_steps={point_steps}"): v for k, v in outcome.metrics.items()}
    resolved = [resolve_metric(m, outcome) for m in the_plan.metrics]
    assert all(name is not None and value is not None for name, value in resolved), resolved
    assert all(".seed=0." in name for name, _ in resolved)


def test_split_training_lengths_match_one_run(tmp_path: Path) -> None:
    """A sweep job with train_steps=[40] gets the same numbers as the 40-step checkpoint of a [20, 40] run."""
    both = _run(tmp_path / "both")
    alone = _run(tmp_path / "alone", train_steps="[40]")
    pick = [p for p in both["metrics"]["points"] if p["train_steps"] == 40]
    assert pick == [p for p in alone["metrics"]["points"] if p["train_steps"] == 40]


def test_sweep_subset_without_contrast_sigma_or_odd_grids(tmp_path: Path) -> None:
    """A sweep job over a subset of the axes still runs: no fig6_conclusion claim without σ = 0.05, and the
    resolution claim cannot be decided without a coarse odd grid (and is untestable: 20 steps fit nothing)."""
    data = _run(tmp_path, sigmas="[0.0,0.2]", train_steps="[20]", euler_steps="[4,10]")
    claims = {c["id"]: c for c in data["claims"]}
    assert set(claims) == {"solver_resolution.sigma0_reproduces_rotation", "solver_resolution.sigma0.2_no_rotation",
                           "solver_resolution.sigma0_depends_on_resolution", "solver_resolution.window_explains_jumps"}
    resolution = claims["solver_resolution.sigma0_depends_on_resolution"]
    assert resolution["verdict"] == "untestable" and resolution["verdict_if_testable"] == "inconclusive"
    assert any("contrast_sigma" in n for n in data["notes"])


def test_its_network_and_sources_are_fig6s(tmp_path: Path) -> None:
    """solver_resolution names fig6's random streams (each seed's "init" and "batches", the run's "eval"): with
    fig6's settings each seed's σ = 0 network at N training steps, on the same sources, gives fig6's numbers on every
    solver they share."""
    sr = _run(tmp_path / "sr", train_steps="[20]")
    fig6 = {"steps": "20", "width": "16", "n_eval": "50", "euler_steps": "3,11,4,51", "primary_steps": "11",
            "max_dopri_steps": "2000", "n_plot": "5"}
    per_seed = run_experiment("fig6", tmp_path / "f6", quick=True, overrides=fig6).metrics["outcomes_per_seed"]
    assert list(per_seed) == ["seed=0", "seed=1"]
    for seed in (0, 1):
        outcomes = per_seed[f"seed={seed}"]["sigma=0.0"]
        trained = {p["solver"]: p for p in sr["metrics"]["points"]
                   if p["seed"] == seed and p["sigma"] == 0.0 and p["train_steps"] == 20 and p["field"] == "trained"}
        shared = sorted(set(trained) & set(outcomes))
        assert shared == ["dopri5", "euler_11", "euler_3", "euler_4", "euler_51"]
        for solver in shared:
            assert trained[solver]["fraction_rotation"] == outcomes[solver]["fraction_nearer_rotation"], solver
            assert trained[solver]["mean_dist_rotation"] == outcomes[solver]["mean_dist_rotation"], solver
