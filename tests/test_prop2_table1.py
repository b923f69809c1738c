"""Experiments prop2 and table1: tiny end-to-end runs (the plumbing) and unit tests of their helpers."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import pytest
import torch

from flowvar.distributions import GaussianMixture
from flowvar.errors import ConfigError, ShapeError
from flowvar.experiments.base import build_config, get_experiment, run_experiment
from flowvar.experiments.prop2 import (
    TrainingMonitor,
    floor_precondition,
    grid_hits,
    line_encounters,
    lower_accuracy_rule,
    make_pairs,
    mechanism_precondition,
    no_collision_precondition,
    no_zero_loss_rule,
    noise_breaks_pairing_rule,
    ode_returns_partner_rule,
    plateau_rule,
    sigma0_memorises_rule,
    two_proportion_se,
    zero_loss_rule,
)
from flowvar.experiments.table1 import (
    direct_memorisation_rule,
    generalisation_mmd_rule,
    memorisation_mmd_rule,
    memorised_precondition,
    unbiased_floor,
)
from flowvar.experiments.table1 import mechanism_precondition as table1_mechanism
from flowvar.interpolants import Interpolant
from flowvar.loss import CFMLoss
from flowvar.metrics import mmd2
from flowvar.models import MemorisingField, MLPField, ZeroPerturbedField
from flowvar.ot import exact_ot_permutation
from flowvar.results import Precondition, Result, judge, to_jsonable
from flowvar.sampling import time_grid
from flowvar.variance import gradient_variance

TINY = {
    "prop2": {"cf_pairs": "16", "cf_families": "random,rot180", "cf_sigmas": "0.05,0.2", "cf_loss_samples": "200",
              "cf_variance_samples": "16", "dims": "2", "n_seeds": "2", "n_pairs": "8", "steps": "6", "log_every": "3",
              "variance_samples": "16", "floor_samples": "200", "width": "16", "depth": "2"},
    "table1": {"n_seeds": "2", "dims": "2,5", "n_train": "32", "width": "16", "depth": "2", "steps": "5",
               "n_eval": "64"},
}


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Result, Path]]:
    """Each experiment run once at its tiny size: name → (Result, output folder)."""
    out = tmp_path_factory.mktemp("experiments")
    return {name: (run_experiment(name, out, quick=True, overrides=TINY[name]), out / name) for name in TINY}


@pytest.mark.parametrize("name", sorted(TINY))
def test_experiment_writes_complete_result(name: str, runs: dict[str, tuple[Result, Path]]) -> None:
    folder = runs[name][1]
    result = json.loads((folder / "result.json").read_text())
    assert result["experiment"] == name and result["quick"] is True
    assert result["claims"]
    for claim in result["claims"]:
        assert claim["verdict"] in {"confirmed", "refuted", "inconclusive", "untestable"}
        assert claim["evidence"] and claim["rule"] and claim["statement"] and claim["id"].startswith(name)
        assert claim["kind"] in {"identity", "reproduction"} and claim["min_effect"] and claim["replicates"]
        if claim["verdict"] == "untestable":  # the precondition was measured and says why, and how to fix it
            pre = claim["precondition"]
            assert not pre["holds"] and pre["measured"] and pre["remedy"] and claim["verdict_if_testable"]
    # every trained-model reproduction states a measured precondition
    trained = [c for c in result["claims"] if ".neural." in c["id"] or name == "table1"]
    assert trained and all(c["precondition"] is not None for c in trained)
    assert result["metrics"] and result["paper"] and result["choices"]
    expected = build_config(get_experiment(name), quick=True, overrides=TINY[name])
    assert result["config"] == to_jsonable(dataclasses.asdict(expected))
    assert result["figures"]
    for fig in result["figures"]:
        assert (folder / fig).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (folder / "summary.md").exists()


def test_prop2_claims_cover_both_parts(runs: dict[str, tuple[Result, Path]]) -> None:
    result = runs["prop2"][0]
    ids = {c.id for c in result.claims}
    assert {"prop2.closed_form.zero_loss_zero_variance", "prop2.closed_form.ode_returns_partner",
            "prop2.remark2.no_zero_loss_with_noise", "prop2.remark2.noise_breaks_pairing",
            "prop2.neural.d=2.sigma0_memorises"} <= ids
    # the closed-form facts hold at any size: exact zeros and exact reproduction of the pairs
    verdicts = {c.id: c.verdict for c in result.claims}
    assert verdicts["prop2.closed_form.zero_loss_zero_variance"] == "confirmed"
    assert verdicts["prop2.closed_form.ode_returns_partner"] == "confirmed"
    hist = result.metrics["neural_histories"]["d=2"]["seed=0"]["sigma=0.0"]
    assert [h["updates"] for h in hist] == [0, 2, 5, 6]
    assert set(result.metrics["neural_histories"]["d=2"]) == {"seed=0", "seed=1"}  # the replicates
    # no number from an earlier exploratory run is written into the result
    assert not any("scouting" in text or "0.0096" in text for text in result.choices.values())
    acc = next(c for c in result.claims if c.id == "prop2.neural.d=2.sigma0.05_lower_accuracy")
    assert acc.evidence["comparison"]["n_seeds"] == 2 and len(acc.evidence["accuracy_sigma0"]) == 2


def test_table1_reports_every_estimator(runs: dict[str, tuple[Result, Path]]) -> None:
    result = runs["table1"][0]
    seed_row = result.metrics["runs"]["d=2"]["sigma=0.05"]["seeds"][0]
    for key in ("memorisation.biased", "memorisation.paired", "memorisation.unbiased", "memorisation.unbiased.floor",
                "generalisation.unbiased", "generalisation.biased", "generalisation.unbiased.multi",
                "l2_partner.mean", "pairing_accuracy", "fresh_copy_fraction"):
        assert key in seed_row and math.isfinite(seed_row[key])
    assert seed_row["memorisation.biased"] >= 0
    assert len(result.claims) == 3 * 2
    assert "d=3, CFM(σ=0.0)" not in result.metrics["comparison_with_paper"]  # only the dims that ran


def test_table1_rejects_bad_sigmas() -> None:
    with pytest.raises(ConfigError):
        build_config(get_experiment("table1"), overrides={"sigmas": "0.05,0.1"})


# ------------------------------------------------------------------------------------------------ helpers


def test_line_encounters_rot180_all_collide_at_half(gen: torch.Generator) -> None:
    x0 = torch.randn(10, 2, generator=gen, dtype=torch.float64)
    enc = line_encounters(x0, 3.0 - x0)
    assert enc.n_line_pairs == 45 and enc.collisions == 45 and enc.spatial_crossings == 45
    assert enc.collision_times == (0.5,) and enc.min_simultaneous_distance < 1e-12


def test_line_encounters_crossing_without_collision() -> None:
    # two segments crossing at (1, 1), reached at t = 0.5 by the first and t = 0.25 by the second
    x0 = torch.tensor([[0.0, 0.0], [-1.0, 3.0]], dtype=torch.float64)
    x1 = torch.tensor([[2.0, 2.0], [7.0, -5.0]], dtype=torch.float64)
    enc = line_encounters(x0, x1)
    assert enc.spatial_crossings == 1 and enc.collisions == 0 and enc.collision_times == ()
    assert enc.min_simultaneous_distance > 0.1
    parallel = line_encounters(x0, x0 + torch.tensor([1.0, 0.0], dtype=torch.float64))
    assert parallel.spatial_crossings == 0 and parallel.collisions == 0
    assert parallel.min_simultaneous_distance == pytest.approx(math.sqrt(10.0))


def test_line_encounters_other_dims_and_shapes(gen: torch.Generator) -> None:
    x0 = torch.randn(6, 3, generator=gen)
    assert line_encounters(x0, x0 + 1).spatial_crossings is None
    with pytest.raises(ShapeError):
        line_encounters(x0, x0[:, :2])


def test_grid_hits_odd_and_even_grids() -> None:
    assert grid_hits(time_grid(101), (0.5,)) == 0
    assert grid_hits(time_grid(100), (0.5,)) == 1
    assert grid_hits(time_grid(100), ()) == 0
    assert grid_hits(time_grid(4), (0.25, 0.75, 0.3)) == 2


def test_zero_perturbed_field_equals_base_and_has_zero_gradients(gen: torch.Generator) -> None:
    x0 = torch.randn(12, 2, generator=gen, dtype=torch.float64)
    x1 = torch.randn(12, 2, generator=gen, dtype=torch.float64) * 3
    base = MemorisingField(x0, x1)
    probe = ZeroPerturbedField(base, 2)
    x, t = torch.randn(5, 2, generator=gen, dtype=torch.float64), torch.rand(5, generator=gen, dtype=torch.float64)
    assert torch.equal(probe(x, t), base(x, t))
    from flowvar.couplings import FixedPairs

    path = CFMLoss(Interpolant(0.0)).draw(FixedPairs(x0, x1), 40, gen)
    rep = gradient_variance(probe, path)
    assert rep.trace == 0.0 and rep.mean_grad_sq_norm == 0.0 and rep.mean_loss == 0.0
    noisy = CFMLoss(Interpolant(0.3)).draw(FixedPairs(x0, x1), 40, gen)
    assert gradient_variance(probe, noisy).trace > 0  # off the lines the residuals, hence gradients, are not 0


def test_make_pairs_families(gen: torch.Generator) -> None:
    gmm = GaussianMixture.random(2, 4, 3.0, 0.5, seed=0, dtype=torch.float64)
    x0, x1 = make_pairs("ot", 20, gmm, torch.Generator().manual_seed(1))
    assert torch.equal(exact_ot_permutation(x0, x1), torch.arange(20))  # already OT-paired
    s0, s1 = make_pairs("shuffled_ot", 20, gmm, torch.Generator().manual_seed(1))
    assert torch.equal(s0, x0) and not bool((s1 == x1).all(1).any())  # a derangement of the OT partners
    assert sorted(s1[:, 0].tolist()) == sorted(x1[:, 0].tolist())
    r0, r1 = make_pairs("rot180", 5, gmm, gen, mu=2.0)
    assert torch.allclose(r0 + r1, torch.full_like(r0, 2.0))
    with pytest.raises(ConfigError):
        make_pairs("bogus", 5, gmm, gen)


def test_two_proportion_se() -> None:
    assert two_proportion_se(1.0, 1.0, 10) == 0.0
    assert two_proportion_se(0.5, 0.5, 100) == pytest.approx(math.sqrt(0.5 / 100))


def test_training_monitor_leaves_gradients_alone(gen: torch.Generator) -> None:
    from flowvar.couplings import FixedPairs

    x0, x1 = torch.randn(8, 2, generator=gen), torch.randn(8, 2, generator=gen)
    pairs = FixedPairs(x0, x1)
    loss = CFMLoss(Interpolant(0.0))
    model = MLPField(2, 8, 1)
    loss(model, loss.draw(pairs, 16, gen)).backward()
    before = {n: p.grad.clone() for n, p in model.named_parameters()}
    monitor = TrainingMonitor(loss, pairs, every=5, n_samples=8, euler_steps=11, generator=gen)
    assert monitor.on_step(2, model, None, 0.0) is None
    out = monitor.on_step(5, model, None, 0.0)
    assert out is not None and out["updates"] == 4 and 0 <= out["accuracy"] <= 1 and out["trace"] > 0
    assert all(torch.equal(p.grad, before[n]) for n, p in model.named_parameters())


def test_unbiased_floor_matches_self_comparison(gen: torch.Generator) -> None:
    x = torch.randn(50, 3, generator=gen, dtype=torch.float64)
    res = mmd2(x, x, bandwidth=1.3, estimator="unbiased")
    assert res.mmd2 == pytest.approx(unbiased_floor(res.mean_kxy, 50), rel=1e-10)
    assert mmd2(x, x, bandwidth=1.3, estimator="biased").mmd2 == pytest.approx(0.0, abs=1e-12)


def test_memorisation_mmd_is_blind_to_the_pairing(gen: torch.Generator) -> None:
    """What table1's note relies on: a permuted copy of the targets scores 0 (biased) and below 0 (paired)."""
    y = torch.randn(40, 3, generator=gen, dtype=torch.float64)
    shuffled = y[torch.randperm(40, generator=gen)]
    assert mmd2(shuffled, y, bandwidth=1.0, estimator="biased").mmd2 == pytest.approx(0.0, abs=1e-12)
    assert mmd2(shuffled, y, bandwidth=1.0, estimator="paired").mmd2 < mmd2(y, y, bandwidth=1.0,
                                                                           estimator="paired").mmd2 == 0.0


def test_prop2_validates_config() -> None:
    spec = get_experiment("prop2")
    for bad in ({"euler_steps": "100"}, {"cf_sigmas": "0.2,0.05"}, {"cf_families": "random,bogus"}, {"sigma": "0"}):
        with pytest.raises(ConfigError):
            build_config(spec, overrides=bad)


def test_table1_records_the_choices_to_compare_magnitudes(runs: dict[str, tuple[Result, Path]]) -> None:
    choices = runs["table1"][0].choices
    assert "h² = median" in choices["kernel"] and "/ 2" in choices["kernel"]
    assert "α = 0.05" in choices["verdict rules"] and "2 training seeds" in choices["replicates"]
    null = runs["table1"][0].metrics["null_reference"]["d=2"][0]
    for key in ("memorisation.independent_sample.biased", "l2_random_pair", "line_spacing_median",
                "exact.l2_partner.mean", "exact.pairing_accuracy", "exact.memorisation.biased"):
        assert math.isfinite(null[key])


# ------------------------------------------------------------------------------------------------ table1 rules


KW = {"alpha": 0.05}


def test_table1_memorisation_and_direct_rules_reach_every_outcome() -> None:
    # σ = 0.05 clearly further from the targets than σ = 0, in every seed: confirmed
    assert memorisation_mmd_rule([1e-6, 2e-6, 1e-6], [3e-3, 3.2e-3, 2.9e-3], min_effect=1e-3, scale=0.1,
                                 **KW).verdict == "confirmed"
    # both at the same tiny level: the data exclude an effect of the minimum size
    assert memorisation_mmd_rule([1e-6, 2e-6, 1e-6], [2e-6, 1e-6, 2e-6], min_effect=1e-3, scale=0.1,
                                 **KW).verdict == "refuted"
    # seeds disagree wildly
    assert memorisation_mmd_rule([0.0, 0.0, 0.0], [5e-3, -4e-3, 1e-2], min_effect=1e-3, scale=0.1,
                                 **KW).verdict == "inconclusive"
    one = direct_memorisation_rule([0.1], [3.0], min_effect=0.3, scale=6.0, **KW)
    assert one.verdict == "inconclusive" and one.n_seeds == 1  # one seed never decides a trained-model comparison
    assert direct_memorisation_rule([0.1, 0.2, 0.1], [3.0, 2.5, 2.8], min_effect=0.3, scale=6.0,
                                    **KW).verdict == "confirmed"
    refuted = direct_memorisation_rule([6.0, 6.1, 5.9], [6.0, 6.05, 5.95], min_effect=0.3, scale=6.0, **KW)
    assert refuted.verdict == "refuted" and "0.05 × random-pair distance" in refuted.effect_text()
    assert direct_memorisation_rule([0.1, 0.2, 0.1], [0.5, 0.1, 1.5], min_effect=0.3, scale=6.0,
                                    **KW).verdict == "inconclusive"


def test_table1_generalisation_rule_is_non_inferiority() -> None:
    # σ = 0.05 lower in every seed: "≤" holds
    assert generalisation_mmd_rule([0.0034, 0.0036, 0.0031], [0.0018, 0.0020, 0.0017], margin=5e-4, scale=1e-3,
                                   **KW).verdict == "confirmed"
    # σ = 0.05 clearly worse, beyond the margin: refuted
    assert generalisation_mmd_rule([0.002, 0.002, 0.002], [0.01, 0.011, 0.012], margin=5e-4, scale=1e-3,
                                   **KW).verdict == "refuted"
    assert generalisation_mmd_rule([0.002, 0.002, 0.002], [0.0, 0.01, 0.002], margin=5e-4, scale=1e-3,
                                   **KW).verdict == "inconclusive"
    assert generalisation_mmd_rule([0.003], [0.001], margin=5e-4, scale=1e-3, **KW).verdict == "inconclusive"


def test_table1_preconditions_and_untestable_verdict() -> None:
    # the quick run of the issue: L2 to the partner ≈ the random-pair distance, accuracy ≈ 1 %
    unmemorised = memorised_precondition([0.01, 0.02, 0.0], [6.1, 5.9, 6.0], [6.0, 6.0, 6.0], threshold=0.9)
    assert not unmemorised.holds and unmemorised.remedy
    assert unmemorised.measured["l2_partner_over_random_pair_sigma0"] == pytest.approx([6.1 / 6, 5.9 / 6, 1.0])
    assert memorised_precondition([1.0, 0.875, 1.0], [0.01, 0.5, 0.02], [6.0, 6.0, 6.0], threshold=0.9).holds
    assert not memorised_precondition([1.0, 0.75, 0.875], [0.0] * 3, [6.0] * 3, threshold=0.9).holds
    # the exact CFM(0.05) minimiser reproduces every pair (d = 50): the noise cannot act
    cannot = table1_mechanism([3e-14, 2e-14, 3e-14], 1.3, measure="L2", sigma=0.05, spacing=4.4, sigma_sqrt_d=0.35)
    assert not cannot.holds and cannot.measured["median_line_spacing"] == 4.4 and cannot.remedy
    assert table1_mechanism([2.4, 2.2, 2.5], 0.34, measure="L2", sigma=0.05).holds
    claim = judge("table1.d=50.direct_memorisation", "s", {"x": 1},
                  verdict=direct_memorisation_rule([0.02, 0.07, 0.03], [0.09, 0.06, 0.06], min_effect=1.3,
                                                   scale=26.0, **KW).verdict,
                  rule="r", kind="reproduction", precondition=cannot)
    assert claim.verdict == "untestable" and claim.verdict_if_testable == "refuted"


# ------------------------------------------------------------------------------------------------ prop2 rules


def test_prop2_closed_form_rules_reach_every_outcome() -> None:
    assert zero_loss_rule(0.0, 0.0, True) == "confirmed"
    assert zero_loss_rule(0.0, 0.0, False) == "inconclusive"  # true, but not shown where lines cross
    assert zero_loss_rule(1e-15, 0.0, True) == "inconclusive"
    assert zero_loss_rule(1e-6, 0.0, True) == "refuted" and zero_loss_rule(0.0, 1e-9, True) == "refuted"
    ok = {"random": 1.0, "rot180": 1.0}
    assert ode_returns_partner_rule(ok, {"random": 1e-14, "rot180": 1e-13}, {"random": 0, "rot180": 0}) == "confirmed"
    assert ode_returns_partner_rule({"random": 0.9, "rot180": 1.0}, {"random": 1.0, "rot180": 0.0},
                                    {"random": 0, "rot180": 0}) == "refuted"
    # the grid hits rot180's collision time: its loss of accuracy is not evidence against Prop 2
    assert ode_returns_partner_rule({"random": 1.0, "rot180": 0.0}, {"random": 0.0, "rot180": 5.0},
                                    {"random": 0, "rot180": 1}) == "inconclusive"
    assert no_zero_loss_rule({"random": 0.01, "shuffled_ot": 0.2}) == "confirmed"
    assert no_zero_loss_rule({"random": 0.01, "shuffled_ot": 1e-27}) == "refuted"
    assert no_zero_loss_rule({"random": 0.01, "shuffled_ot": 1e-9}) == "inconclusive"


def test_prop2_noise_breaks_pairing_rule() -> None:
    acc0 = {"random": 1.0, "shuffled_ot": 1.0}
    assert noise_breaks_pairing_rule(acc0, {"random": [0.5, 0.03, 0.01], "shuffled_ot": [0.6, 0.1, 0.0]}, 1, 128,
                                     0.1) == "confirmed"
    # the memorising field survives the noise in every family
    assert noise_breaks_pairing_rule(acc0, {"random": [1.0, 1.0, 0.99], "shuffled_ot": [1.0, 1.0, 1.0]}, 1, 128,
                                     0.1) == "refuted"
    # one family breaks, the other does not
    assert noise_breaks_pairing_rule(acc0, {"random": [0.5, 0.03, 0.01], "shuffled_ot": [1.0, 1.0, 1.0]}, 1, 128,
                                     0.1) == "inconclusive"
    # a large drop that is not monotone in σ is not the claim's "more so as σ grows"
    assert noise_breaks_pairing_rule(acc0, {"random": [0.2, 0.5, 0.9], "shuffled_ot": [0.2, 0.5, 0.9]}, 1, 128,
                                     0.1) == "inconclusive"


def test_prop2_neural_rules_reach_every_outcome() -> None:
    kw = {"zero_ratio": 0.01, "nonzero_ratio": 0.1, "memorise_accuracy": 0.95}
    assert sigma0_memorises_rule([1e-4, 2e-4], [1e-3, 5e-3], [1.0, 0.98], **kw) == "confirmed"
    assert sigma0_memorises_rule([0.5, 0.3], [0.9, 0.4], [0.2, 0.3], **kw) == "refuted"
    assert sigma0_memorises_rule([1e-4, 0.5], [1e-3, 0.9], [1.0, 0.3], **kw) == "inconclusive"  # seeds disagree
    assert sigma0_memorises_rule([0.05], [0.05], [0.9], **kw) == "inconclusive"  # between the two levels
    pk = {"zero_ratio": 0.01, "plateau_ratio": 0.8}
    assert plateau_rule([0.2, 0.3], [0.5, 0.4], [0.98, 1.01], **pk) == "confirmed"
    assert plateau_rule([1e-4, 1e-5], [1e-3, 1e-4], [0.5, 0.3], **pk) == "refuted"
    assert plateau_rule([0.2, 0.3], [0.5, 0.4], [0.5, 1.0], **pk) == "inconclusive"  # still falling in one seed
    assert plateau_rule([0.2, 1e-4], [0.5, 1e-4], [1.0, 1.0], **pk) == "inconclusive"
    assert lower_accuracy_rule([1.0, 1.0, 0.98], [0.3, 0.4, 0.35], min_drop=0.1, alpha=0.05).verdict == "confirmed"
    refuted = lower_accuracy_rule([1.0, 1.0, 0.98], [1.0, 1.0, 1.0], min_drop=0.1, alpha=0.05)
    assert refuted.verdict == "refuted" and refuted.upper < 0.1
    assert lower_accuracy_rule([1.0, 1.0, 1.0], [0.3, 1.0, 0.9], min_drop=0.1, alpha=0.05).verdict == "inconclusive"
    assert lower_accuracy_rule([1.0], [0.0], min_drop=0.1, alpha=0.05).verdict == "inconclusive"


def test_prop2_preconditions_and_untestable_verdicts() -> None:
    assert no_collision_precondition([0, 0], [0.3, 0.2]).holds
    assert not no_collision_precondition([0, 45], [0.3, 0.0]).holds
    # d = 8, N = 64 (issue): the exact CFM(0.05) minimiser's loss is ≈ 1e-27 and its accuracy 1
    floor = floor_precondition([1e-27, 3e-26, 5e-28], 0.01, 0.05)
    assert not floor.holds and floor.remedy and floor_precondition([0.2, 0.3], 0.01, 0.05).holds
    kw = {"min_drop": 0.1, "memorise_accuracy": 0.95, "sigma": 0.05, "sigma_sqrt_d": 0.14, "spacing": 1.5}
    cannot = mechanism_precondition([1.0, 1.0, 1.0], [1.0, 1.0, 1.0], **kw)
    assert not cannot.holds and "1.5" in cannot.remedy and cannot.measured["exact_minimiser_drop"] == 0.0
    unmemorised = mechanism_precondition([0.3, 0.2], [0.1, 0.05], **kw)
    assert not unmemorised.holds and "memorises" in unmemorised.remedy
    assert mechanism_precondition([0.3, 0.2], [1.0, 0.97], **kw).holds
    claim = judge("prop2.neural.d=8.sigma0.05_lower_accuracy", "s", {"x": 1}, rule="r", kind="reproduction",
                  verdict=lower_accuracy_rule([1.0, 1.0, 1.0], [1.0, 1.0, 1.0], min_drop=0.1, alpha=0.05).verdict,
                  precondition=cannot)
    assert claim.verdict == "untestable" and claim.verdict_if_testable == "refuted"
    assert isinstance(cannot, Precondition)
