"""prop2 (science referee, fixM): an identity is never refuted by float64 underflow, noise_breaks_pairing is judged
only where the noise can act, the σ = 0 memorisation gate is per seed, and configs the closed form cannot judge are
refused."""

from __future__ import annotations

import math

import pytest

from flowvar.errors import ConfigError
from flowvar.experiments.base import build_config, get_experiment, run_experiment
from flowvar.experiments.prop2 import (
    floor_resolvable,
    mechanism_precondition,
    no_zero_loss_rule,
    noise_reach_precondition,
)
from flowvar.results import Result

FAR_LINES = {"cf_pairs": "8", "cf_families": "random,shuffled_ot", "cf_sigmas": "0.002,0.2", "sigma": "0.002",
             "cf_loss_samples": "500", "cf_variance_samples": "16", "dims": "2", "n_seeds": "2", "n_pairs": "8",
             "steps": "6", "log_every": "3", "variance_samples": "16", "floor_samples": "200", "width": "16",
             "depth": "2"}
"""d = 2 with 8 pairs at σ = 0.002: every line stays ≥ 0.018 (≥ 9σ) from every other at equal times, so the exact
minimiser's floor underflows to 0 and it keeps every partner (the referee's d = 8 case, at the closed form's d)."""


@pytest.fixture(scope="module")
def far_lines(tmp_path_factory: pytest.TempPathFactory) -> Result:
    return run_experiment("prop2", tmp_path_factory.mktemp("far_lines"), quick=True, overrides=FAR_LINES)


def test_prop2_refuses_a_sigma_the_closed_form_does_not_compute() -> None:
    spec = get_experiment("prop2")
    # it judged the closed-form Remark 2 claims at cf_sigmas[0] = 0.01 and trained at 0.1, silently
    with pytest.raises(ConfigError, match=r"sigma=0.1 must be one of cf_sigmas .*cf_sigmas=0.01,0.05,0.1,0.2"):
        build_config(spec, overrides={"sigma": "0.1"})
    assert build_config(spec, overrides={"sigma": "0.2"}).sigma == 0.2


def test_prop2_refuses_a_closed_form_dimension_without_crossings() -> None:
    # cf_dim = 8 read zero_loss_zero_variance inconclusive: segments in d > 2 generically never cross
    with pytest.raises(ConfigError, match=r"cf_dim=8 must be 2.*never cross"):
        build_config(get_experiment("prop2"), overrides={"cf_dim": "8"})


def test_the_sigma0_memorisation_gate_is_every_seed() -> None:
    kw = {"min_drop": 0.1, "memorise_accuracy": 0.95, "sigma": 0.05, "sigma_sqrt_d": 0.07, "spacing": 0.01}
    # seed mean 0.967 ≥ 0.95, but one seed at 0.9 did not memorise: it held before (seed mean)
    one_short = mechanism_precondition([0.3, 0.2, 0.3], [1.0, 1.0, 0.9], **kw)
    assert not one_short.holds and one_short.measured["[1]"]["memorised"] == [True, True, False]
    assert "[2]" in one_short.remedy and one_short.measured["[1]"]["min"] == 0.9
    assert mechanism_precondition([0.3, 0.2, 0.3], [0.95, 1.0, 0.96], **kw).holds  # 0.95 in each seed: held
    assert not mechanism_precondition([0.3, 0.2], [1.0, math.nan], **kw).holds
    assert not mechanism_precondition([0.3], [], **kw).holds


def test_a_loss_floor_of_zero_by_underflow_never_refutes_the_identity() -> None:
    # the referee's d = 8 run: L*(0.05) = 0.0 and no draw nearer another line (memorising loss 0.0): underflow
    zero = {"random": 0.0, "shuffled_ot": 0.0}
    assert floor_resolvable(zero, zero) == {"random": False, "shuffled_ot": False}
    assert no_zero_loss_rule(zero, zero) == "inconclusive"  # was "refuted"
    # a draw landed nearer another line (memorising loss > 0) and the floor is still 0: a defect
    assert no_zero_loss_rule(zero, {"random": 0.3, "shuffled_ot": 0.0}) == "refuted"
    assert floor_resolvable({"random": 2e-12, "shuffled_ot": math.nan}, zero) == {"random": True,
                                                                                "shuffled_ot": False}
    assert no_zero_loss_rule({"random": 0.05, "shuffled_ot": 0.04}, zero) == "confirmed"  # resolved by its value


def test_noise_reach_counts_the_lines_within_reach() -> None:
    kw = {"sigma": 0.05, "reach": 3.0, "min_drop": 0.1}
    # reach 0.15: 2 of 10 lines within it in each family
    near = {"random": [0.01, 0.1] + [1.0] * 8, "shuffled_ot": [0.15, 0.12] + [2.0] * 8}
    ok = noise_reach_precondition(near, {"random": 1.0, "shuffled_ot": 2.0}, **kw)
    assert ok.holds and ok.measured["fraction_within_reach"] == {"random": 0.2, "shuffled_ot": 0.2}
    # the referee's d = 8: median spacing 1.03 / 0.95 against σ = 0.05, no line within 3σ
    far = noise_reach_precondition({"random": [0.5] + [1.0] * 9, "shuffled_ot": [0.16] * 10},
                                   {"random": 1.03, "shuffled_ot": 0.95}, **kw)
    assert not far.holds and far.measured["fraction_within_reach"] == {"random": 0.0, "shuffled_ot": 0.0}
    assert "d = 2, more pairs N" in far.remedy and "1.03" in far.remedy and "recompute" not in far.remedy
    # a stored row from before the per-line spacings: its median bounds the fraction (published d = 2: 0.015 ≪ 0.15)
    old = noise_reach_precondition({"random": None}, {"random": 0.015}, **kw)
    assert old.holds and old.measured["fraction_within_reach"] == {"random": 0.5}
    unknown = noise_reach_precondition({"random": None}, {"random": 0.5}, **kw)
    assert not unknown.holds and "recompute" in unknown.remedy
    assert not noise_reach_precondition({"random": [math.nan] * 4}, {"random": math.nan}, **kw).holds


def test_far_lines_read_inconclusive_and_untestable_not_refuted(far_lines: Result) -> None:
    claims = {c.id: c for c in far_lines.claims}
    floor = claims["prop2.remark2.no_zero_loss_with_noise"]
    assert floor.verdict == "inconclusive"  # refuted before
    assert floor.evidence["floor_resolvable_in_float64"] == {"random": False, "shuffled_ot": False}
    assert all(r > 8.5 for r in floor.evidence["min_simultaneous_distance_over_sigma"].values())
    assert any("not resolved" in n for n in far_lines.notes)
    breaks = claims["prop2.remark2.noise_breaks_pairing"]
    assert breaks.verdict == "untestable" and breaks.verdict_if_testable == "refuted"  # refuted before
    assert breaks.precondition["measured"]["fraction_within_reach"] == {"random": 0.0, "shuffled_ot": 0.0}
    rows = far_lines.metrics["closed_form"]
    assert all(len(r["line_spacings"]) == 8 and r["line_spacings"] == sorted(r["line_spacings"]) for r in rows.values())
