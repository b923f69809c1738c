"""fig4: the pure judgement functions on synthetic evidence (every outcome each can return; the point statuses are
the kit fig4 shares with fig5), config validation (any d ≥ 2, a full M), and tiny end-to-end runs for the
preconditions and the d = 3 path."""

import math
from pathlib import Path

import numpy as np
import pytest
from scipy import stats as sps

from experiment_checks import BAD_GAUSSIAN_CONFIGS, FULL_M, claims_of
from flowvar.errors import ConfigError
from flowvar.experiments._gaussian_variance import (
    compare_point,
    every_point_evidence,
    mwu_floor,
    one_sided_status,
    ordering_p,
    precision_precondition,
    refute_level,
    resolution,
    rule_ot_lower_with_noise,
    status_at,
    target_covariance,
    unresolved,
    welch_terms,
)
from flowvar.experiments.base import build_config, get_experiment, run_experiment
from flowvar.experiments.fig4 import (
    crossover,
    rule_crossover,
    rule_zero_at_sigma0,
    series_outcome,
    sigma_statuses,
    zero_evidence,
)
from flowvar.experiments.fig5 import (
    rule_random_lower_at_paper_angle,
)
from flowvar.results import Precondition, judge

DF = 18.0  # R = 10 repeats per arm with equal sds


def point(a: float, b: float, *, half: float = 0.0, p_lower: float = 1.0, p_higher: float = 1.0) -> dict:
    """Synthetic evidence of one compared point (a vs b), both tests giving the same p-values; the Welch standard
    error is the one whose one-sided 99 % half-width is ``half`` at ν = 18."""
    return {"a_mean": a, "b_mean": b, "half_width": half, "p_welch_a_lower": p_lower, "p_mwu_a_lower": p_lower,
            "p_welch_a_higher": p_higher, "p_mwu_a_higher": p_higher,
            "welch_se": half / float(sps.t.ppf(0.99, DF)), "welch_df": DF}


OPTS = {"alpha": 0.01, "min_rel": 0.1}


# --------------------------------------------------------------------------------------------- point statuses


def test_one_sided_status_reaches_every_outcome_in_both_directions() -> None:
    # a = 50 below b = 100: significant and 50 ≥ 0.1 × 100
    assert one_sided_status(point(50, 100, half=5, p_lower=1e-4), lower="a", **OPTS) == "holds"
    # the same gap but a p-value at α: not significant, and the upper bound 50 + 5 is not below 10 → undecided
    assert one_sided_status(point(50, 100, half=5, p_lower=0.01), lower="a", **OPTS) == "undecided"
    # significant but below the minimum effect (gap 5 < 10) with a tight bound: 5 + 2 < 10 → excluded
    assert one_sided_status(point(95, 100, half=2, p_lower=1e-6), lower="a", **OPTS) == "excluded"
    # the same gap with a wide bound: undecided (it could still be ≥ 10)
    assert one_sided_status(point(95, 100, half=6, p_lower=1e-6), lower="a", **OPTS) == "undecided"
    # the reverse order is excluded for "a lower" and holds for "b lower"
    rev = point(100, 50, half=5, p_higher=1e-4)
    assert one_sided_status(rev, lower="a", **OPTS) == "excluded"
    assert one_sided_status(rev, lower="b", **OPTS) == "holds"
    # both means zero: nothing to decide
    assert one_sided_status(point(0, 0), lower="a", **OPTS) == "undecided"


def test_resolution_mwu_floor_and_unresolved() -> None:
    assert resolution(point(50, 100, half=5), 0.1) == pytest.approx(0.5)
    assert resolution(point(0, 0, half=1), 0.1) == math.inf
    assert mwu_floor(3) == pytest.approx(1 / 20) and mwu_floor(3) > 0.01 > mwu_floor(5)
    pts = {"coarse": ({**point(95, 100, half=20), "s": "undecided"}, "s"),   # 20 / 10 ≥ 1: lack of precision
           "near": ({**point(95, 100, half=6), "s": "undecided"}, "s"),      # 6 / 10 < 1: near the threshold
           "done": ({**point(50, 100, half=30), "s": "holds"}, "s"),
           "order": ({**point(95, 100, half=20), "s": "unresolved"}, "s")}
    assert unresolved(pts, 0.1) == ["coarse", "order"]


def test_compare_point_half_width_is_the_one_sided_welch_bound() -> None:
    rng = np.random.default_rng(0)
    a, b = rng.normal(1.0, 0.1, 12), rng.normal(2.0, 0.3, 9)
    p = compare_point(a, b, 0.01)
    se = math.sqrt(a.var(ddof=1) / 12 + b.var(ddof=1) / 9)
    df = se**4 / ((a.var(ddof=1) / 12) ** 2 / 11 + (b.var(ddof=1) / 9) ** 2 / 8)
    assert p["half_width"] == pytest.approx(sps.t.ppf(0.99, df) * se)
    assert p["a_mean"] == pytest.approx(a.mean()) and p["p_welch_a_lower"] < 1e-4 and p["p_welch_a_higher"] > 0.99
    assert one_sided_status(p, lower="a", **OPTS) == "holds"
    const = compare_point(np.zeros(4), np.zeros(4), 0.01)
    assert const["half_width"] == 0.0 and one_sided_status(const, lower="a", **OPTS) == "undecided"


def test_crossover() -> None:
    assert crossover([0.05, 0.2, 0.5, 1.0], [False, True, True, True]) == 0.2
    assert crossover([0.05, 0.2, 0.5, 1.0], [True, False, True, True]) == 0.5
    assert crossover([0.05, 0.2], [True, False]) is None
    assert crossover([0.05, 0.2], [True, True]) == 0.05


# --------------------------------------------------------------------------------------------- fig4 rules


def arms(*ratios: float, trace: float = 1e-19) -> dict:
    """σ = 0 records of own-coupling arms: each arm's max residual / rounding bound, with a trace that the old
    absolute 1e-20 threshold refuted (the rule must not read it)."""
    return {f"arm{i}": {"residual_to_bound": r, "trace": trace, "mean_loss": 1e-27} for i, r in enumerate(ratios)}


def test_rule_zero_at_sigma0_judges_residuals_against_their_rounding_bound_not_the_trace() -> None:
    # every residual within its bound: confirmed, whatever the (rounding-amplified) Monte-Carlo trace
    assert rule_zero_at_sigma0(zero_evidence(arms(0.012, 0.3))) == "confirmed"
    assert rule_zero_at_sigma0(zero_evidence(arms(0.012, 0.3, trace=5.2e-20))) == "confirmed"
    # one residual above its bound but within 100 × it: inconclusive; above 100 ×: refuted (a field off by 1e-6 ~ 1e7)
    assert rule_zero_at_sigma0(zero_evidence(arms(0.012, 8.0))) == "inconclusive"
    assert rule_zero_at_sigma0(zero_evidence(arms(0.012, 2.6e7))) == "refuted"
    assert rule_zero_at_sigma0({"per_arm": {}}) == "inconclusive"  # no evidence either way (as prop1 reads none)
    ev = zero_evidence(arms(0.01, 0.5))
    assert ev["max_residual_to_bound"] == 0.5 and ev["max_trace"] == 1e-19 and ev["refute_above"] == 100.0


@pytest.mark.parametrize("ratios", [(0.0, math.nan), (math.nan, 0.0), (0.0, 0.0, math.inf)])
def test_zero_at_sigma0_a_nan_after_the_first_arm_refutes_and_shows_in_the_maximum(ratios) -> None:
    # Python's max() drops a NaN that is not its first argument: the rule must see every arm, and the reported
    # maximum must not look finite.
    ev = zero_evidence(arms(*ratios))
    assert rule_zero_at_sigma0(ev) == "refuted"
    assert not math.isfinite(ev["max_residual_to_bound"])
    # the rule reads the arms, not a maximum someone aggregated before
    assert rule_zero_at_sigma0({**ev, "max_residual_to_bound": 0.0}) == "refuted"


def every(**status: str) -> dict:
    """Synthetic evidence of an "at every point" claim: the statuses at α = 0.01, an excluded point decisively so
    (exclusion p-value 0), every other never excluded (1)."""
    return {"alpha": 0.01, "status": status, "p_excluded": {k: 0.0 if s == "excluded" else 1.0
                                                            for k, s in status.items()}}


@pytest.mark.parametrize("rule", [rule_ot_lower_with_noise, rule_random_lower_at_paper_angle])
def test_every_point_rules(rule) -> None:
    assert rule(every(x="holds", y="holds")) == "confirmed"
    assert rule(every(x="holds", y="excluded")) == "refuted"
    assert rule(every(x="undecided", y="excluded")) == "refuted"
    assert rule(every(x="holds", y="undecided")) == "inconclusive"
    assert rule(every()) == "inconclusive"


@pytest.mark.parametrize("rule", [rule_ot_lower_with_noise, rule_random_lower_at_paper_angle])
def test_every_point_rules_refute_at_the_family_level(rule) -> None:
    """statsR 1: a point excluded at α (p = 0.004 < 0.01) refuted "at every point" whatever the number k of points,
    a union over k chances. A refutation reads each point at α/k: with 2 points at 0.005, with 4 at 0.0025."""
    ev = every(x="holds", y="excluded")
    assert rule({**ev, "p_excluded": {"x": 1.0, "y": 0.004}}) == "refuted"        # 0.004 < 0.01/2
    four = every(w="holds", x="holds", y="excluded", z="holds")
    assert rule({**four, "p_excluded": {"w": 1.0, "x": 1.0, "y": 0.004, "z": 1.0}}) == "inconclusive"  # ≥ 0.0025
    assert rule({**four, "p_excluded": {"w": 1.0, "x": 1.0, "y": 0.002, "z": 1.0}}) == "refuted"
    assert refute_level(0.01, 4) == 0.0025 and refute_level(0.01, 0) == 0.01
    # the confirmation needs every point at α, uncorrected (an intersection)
    assert rule({**every(x="holds", y="holds"), "p_excluded": {"x": 0.5, "y": 0.5}}) == "confirmed"


@pytest.mark.parametrize(("k", "repeats", "studies"), [(10, 10, 600), (88, 30, 200)])
def test_every_point_rule_refutes_at_most_alpha_with_k_boundary_points(k: int, repeats: int, studies: int) -> None:
    """statsR 1: every point at the boundary — the true difference is exactly the minimum effect m = 0.1 × the
    larger mean — with Welch bounds from R repeats per arm. Each point tested at α: P(refuted) ≈ 1 − (1 − α)^k
    (the review: 0.072 at k = 10, 0.48 at k = 88). At α/k it must stay ≤ α = 0.01 (+ 3 MC errors); measured with
    these seeds: 3/600 and 1/200 refuted, against 44/600 and 100/200 for the former rule."""
    rng = np.random.default_rng(7 + k)
    alpha, min_rel = 0.01, 0.1
    refuted = uncorrected = 0
    for _ in range(studies):
        # b = 1, a = 0.9: b − a = 0.1 = min_rel × max(1, 0.9); sd 0.05 per estimate
        a = rng.normal(0.9, 0.05, (k, repeats))
        b = rng.normal(1.0, 0.05, (k, repeats))
        points = {}
        for i in range(k):
            se, df = welch_terms(a[i].std(ddof=1), repeats, b[i].std(ddof=1), repeats)
            p = {"a_mean": a[i].mean(), "b_mean": b[i].mean(), "a_std": a[i].std(ddof=1), "b_std": b[i].std(ddof=1),
                 "welch_se": se, "welch_df": df, "half_width": float(sps.t.ppf(1 - alpha, df)) * se,
                 # the ordering's own tests do not enter a refutation ("holds" is never read there)
                 "p_welch_a_lower": 1.0, "p_mwu_a_lower": 1.0, "p_welch_a_higher": 1.0, "p_mwu_a_higher": 1.0}
            p["s"] = one_sided_status(p, lower="a", alpha=alpha, min_rel=min_rel)
            points[f"p{i}"] = p
        ev = every_point_evidence(points, "s", lower="a", alpha=alpha, min_rel=min_rel)
        refuted += rule_ot_lower_with_noise(ev) == "refuted"
        uncorrected += bool(ev["excluded"])  # the former rule: any point excluded at α
    assert refuted / studies <= alpha + 3 * math.sqrt(alpha * (1 - alpha) / studies)
    assert uncorrected / studies > 0.04  # the union the correction removes (expected 0.07 at k = 10, 0.46 at 88)


def test_ordering_p_is_one_sided_status_at_any_level() -> None:
    """The p-values a refutation reads at α/k give one_sided_status's outcome at α (one rule, two forms)."""
    rng = np.random.default_rng(3)
    for _ in range(200):
        a, b = rng.normal(1.0, 0.2, 10), rng.normal(rng.uniform(0.8, 1.4), 0.2, 10)
        p = compare_point(a, b, 0.01)
        for lower in ("a", "b"):
            assert status_at(ordering_p(p, lower=lower, min_rel=0.1), 0.01) == one_sided_status(p, lower=lower,
                                                                                              **OPTS)
    # the former point() statuses hold as well (a constant sample: se = 0 decides by the means alone)
    assert ordering_p(point(95, 100, half=0.0), lower="a", min_rel=0.1)["excluded"] == 0.0
    assert ordering_p(point(50, 100, half=0.0), lower="a", min_rel=0.1)["excluded"] == 1.0
    assert ordering_p(point(math.nan, 100, half=1.0), lower="a", min_rel=0.1) == {"holds": 1.0, "excluded": 1.0}


H, X, U = "holds", "excluded", "undecided"
P = {H: {"holds": 0.0, "excluded": 1.0}, X: {"holds": 1.0, "excluded": 0.0}, U: {"holds": 1.0, "excluded": 1.0}}
"""Decisive ordering_p numbers of each status (at any level)."""


@pytest.mark.parametrize(("statuses", "outcome"), [
    # (pair-optimal lower, OT lower) at increasing σ > 0
    ([(H, X), (X, X), (X, H)], "flips"),
    ([(H, X), (U, U), (X, H)], "flips"),              # an undecided point between the ends changes nothing
    ([(H, X), (H, X), (H, X)], "above_sweep"),        # the pair-optimal field lower throughout: no flip within σ ≤ max
    ([(H, X), (X, X)], "above_sweep"),                # OT not lower at the largest σ: the flip may lie beyond
    ([(X, H), (X, H)], "below_sweep"),                # OT lower already at the smallest σ
    ([(X, X), (X, X)], "neither_end"),
    ([(U, X), (X, H)], "undecided"),
    ([(H, X), (X, U)], "undecided"),
    ([], "undecided"),
    ([(H, X), (X, H), (H, X), (X, H)], "reversed"),   # OT lower at σ2, the pair-optimal field again at σ3
    ([(X, H), (H, X)], "reversed"),                   # the whole order the other way round
])
def test_series_outcome_reaches_every_outcome(statuses, outcome) -> None:
    assert series_outcome(statuses) == outcome


def crossover_evidence(*series: list[tuple[str, str]], sigmas: tuple[str, ...] = ("0.05", "0.2", "1", "2")) -> dict:
    """Synthetic evidence of fig4.rotated_data.crossover: one series per argument, its (pair lower, OT lower)
    statuses at the first len(statuses) of ``sigmas``."""
    return {"alpha": 0.01,
            "series": {f"s{i}": {"by_sigma": {sg: {"pair_lower": p, "ot_lower": o, "p_pair_lower": P[p],
                                                   "p_ot_lower": P[o]}
                                              for sg, (p, o) in zip(sigmas, statuses, strict=False)}}
                       for i, statuses in enumerate(series)}}


def test_sigma_statuses_orders_by_the_value_of_sigma_not_its_text() -> None:
    by_sigma = {"10": {"pair_lower": X, "ot_lower": H, "p_pair_lower": P[X], "p_ot_lower": P[H]},
                "2": {"pair_lower": U, "ot_lower": U, "p_pair_lower": P[U], "p_ot_lower": P[U]},
                "0.5": {"pair_lower": H, "ot_lower": X, "p_pair_lower": P[H], "p_ot_lower": P[X]}}
    assert sigma_statuses(by_sigma) == [(H, X), (U, U), (X, H)]
    assert sigma_statuses(by_sigma, 1e-4) == [(H, X), (U, U), (X, H)]
    assert rule_crossover({"alpha": 0.01, "series": {"s": {"by_sigma": by_sigma}}}) == "confirmed"


def test_rule_crossover() -> None:
    flips = [(H, X), (X, H)]
    assert rule_crossover(crossover_evidence(flips, [(H, X), (X, X), (X, H)])) == "confirmed"
    # the published quick result's 60° bridge series: the pair-optimal field lower up to σ = 1, OT not lower at
    # σ = 1 (the sweep's end). The flip lies beyond the sweep (σ ≈ 1.5–2): inconclusive, not refuted
    assert rule_crossover(crossover_evidence(flips, [(H, X), (H, X), (H, X), (H, X)])) == "inconclusive"
    assert rule_crossover(crossover_evidence(flips, [(X, H), (X, H)])) == "inconclusive"     # below the sweep
    assert rule_crossover(crossover_evidence(flips, [(X, X), (X, X)])) == "inconclusive"     # neither end
    assert rule_crossover(crossover_evidence(flips, [(H, X), (U, U)])) == "inconclusive"     # an end undecided
    assert rule_crossover({"alpha": 0.01, "series": {}}) == "inconclusive"
    # the order the other way round inside the sweep refutes, whatever the other series and the sweep's ends
    assert rule_crossover(crossover_evidence(flips, [(H, X), (X, H), (H, X), (X, H)])) == "refuted"
    assert rule_crossover(crossover_evidence([(H, X), (H, X)], [(X, H), (H, X)])) == "refuted"


def test_rule_crossover_refutes_a_reversal_only_at_the_family_level() -> None:
    """statsR 1: a reversal needs one ordering decided against the truth somewhere among the k (series, σ) points; at
    α per point that is a union over k chances. The pair-optimal field lower at the larger σ with p = 0.004 < α =
    0.01 is a reversal at α, but with k = 4 points (α/k = 0.0025) it does not refute; nor does it confirm."""
    ev = crossover_evidence([(H, X), (H, X)], [(X, H), (H, X)])
    by_sigma = ev["series"]["s1"]["by_sigma"]
    by_sigma["0.2"]["p_pair_lower"] = {"holds": 0.004, "excluded": 1.0}
    assert rule_crossover(ev) == "inconclusive"
    by_sigma["0.2"]["p_pair_lower"] = {"holds": 0.002, "excluded": 1.0}
    assert rule_crossover(ev) == "refuted"


# --------------------------------------------------------------------------------------------- precondition


HOLDS = point(50, 100, half=5, p_lower=1e-4)        # a lower by 50 ≥ 10, significant
EXCLUDED = point(100, 50, half=5, p_higher=1e-4)    # a higher: "a lower" excluded by its bound (−50 + 5 < 10)
UNRESOLVED = point(50, 100, half=20, p_lower=0.5)   # not significant, half-width 20 ≥ the minimum effect 10
NEAR = point(95, 100, half=6, p_lower=1e-6)         # undecided near the threshold: half-width 6 < 10
NAN = point(math.nan, 100, half=5, p_lower=1e-4)    # a failed estimate


def judged(points: dict, rule, builder, *, repeats: int = 10, structural: bool = True):
    """The claim verdict (and the rule's own outcome) of "a lower at every point" on synthetic points, as fig4/fig5
    judge it: statuses by one_sided_status, the rule, then the precision precondition."""
    pts = {k: {**p, "s": one_sided_status(p, lower="a", **OPTS)} for k, p in points.items()}
    verdict = rule(every_point_evidence(pts, "s", lower="a", **OPTS))
    pre = builder(verdict, {k: (p, "s") for k, p in pts.items()},
                  Precondition("structure", structural, {"usable": structural}, "fix the sweep"),
                  repeats=repeats, alpha=OPTS["alpha"], min_rel=OPTS["min_rel"])
    claim = judge("c", "s", {}, rule="r", kind="reproduction", verdict=verdict, precondition=pre)
    return claim.verdict, claim.verdict_if_testable, pre


BUILDERS = [pytest.param(precision_precondition, id="shared")]  # fig4 and fig5 use the one in _gaussian_variance


@pytest.mark.parametrize("builder", BUILDERS)
@pytest.mark.parametrize("rule", [rule_ot_lower_with_noise, rule_random_lower_at_paper_angle])
def test_an_excluded_point_refutes_whatever_the_precision_elsewhere(rule, builder) -> None:
    # excluded at one point + under-resolved at another: refuted (was untestable, the refutation kept aside)
    verdict, aside, pre = judged({"x": EXCLUDED, "y": UNRESOLVED, "z": HOLDS}, rule, builder)
    assert (verdict, aside) == ("refuted", None)
    assert pre.holds and not pre.measured["precision_holds"] and pre.measured["undecided_for_precision"] == ["y"]
    assert "unless the rule refutes" in pre.statement
    # too few repeats for any Mann–Whitney p < α (1/C(6, 3) = 0.05): an exclusion needs no Mann–Whitney test
    assert judged({"x": EXCLUDED, "z": HOLDS}, rule, builder, repeats=3)[:2] == ("refuted", None)
    # the structure of the sweep is asked of every outcome, a refutation included
    verdict, aside, pre = judged({"x": EXCLUDED, "y": UNRESOLVED}, rule, builder, structural=False)
    assert (verdict, aside) == ("untestable", "refuted") and pre.remedy.startswith("fix the sweep; raise repeats")


@pytest.mark.parametrize("builder", BUILDERS)
@pytest.mark.parametrize("rule", [rule_ot_lower_with_noise, rule_random_lower_at_paper_angle])
def test_precision_stands_between_the_rule_and_every_other_outcome(rule, builder) -> None:
    # every point holds but one is under-resolved: untestable, with the rule's inconclusive kept aside
    verdict, aside, pre = judged({"x": HOLDS, "y": UNRESOLVED}, rule, builder)
    assert (verdict, aside) == ("untestable", "inconclusive") and pre.remedy.startswith("raise repeats")
    # every point holds and is resolved: confirmed; but not with too few repeats (no p < α possible)
    assert judged({"x": HOLDS, "y": HOLDS}, rule, builder)[:2] == ("confirmed", None)
    assert judged({"x": HOLDS, "y": HOLDS}, rule, builder, repeats=3)[:2] == ("untestable", "confirmed")
    # undecided near the minimum effect with a fine enough resolution: inconclusive, not untestable
    assert judged({"x": HOLDS, "y": NEAR}, rule, builder)[:2] == ("inconclusive", None)
    # no points (e.g. no usable angle): the structural part fails
    assert judged({}, rule, builder, structural=False)[:2] == ("untestable", "inconclusive")


@pytest.mark.parametrize("builder", BUILDERS)
def test_a_nan_point_never_confirms(builder) -> None:
    # a failed (NaN) estimate is undecided at infinite resolution: untestable among holds, refuted beside an exclusion
    assert judged({"x": HOLDS, "y": NAN}, rule_ot_lower_with_noise, builder)[:2] == ("untestable", "inconclusive")
    assert judged({"x": NAN, "y": EXCLUDED}, rule_ot_lower_with_noise, builder)[:2] == ("refuted", None)


def test_crossover_precision_reads_every_sigma_and_a_reversal_stands_beside_an_under_resolved_point() -> None:
    # "pair-optimal lower" and "OT lower" are the two one-sided statuses of one compared point (a = OT, b = pair)
    pair_holds = point(100, 50, half=5, p_higher=1e-4)   # OT higher by 50: pair lower holds, OT lower excluded
    ot_holds = point(50, 100, half=5, p_lower=1e-4)      # OT lower by 50
    coarse = point(95, 100, half=20, p_lower=0.5, p_higher=0.5)  # undecided both ways, half-width 20 ≥ 10

    def claim(*rows: dict) -> tuple:
        sigmas = [f"{0.1 * (i + 1):g}" for i in range(len(rows))]
        statuses = [{"pair_lower": one_sided_status(r, lower="b", **OPTS),
                     "ot_lower": one_sided_status(r, lower="a", **OPTS),
                     "p_pair_lower": ordering_p(r, lower="b", min_rel=OPTS["min_rel"]),
                     "p_ot_lower": ordering_p(r, lower="a", min_rel=OPTS["min_rel"])} for r in rows]
        ev = {"alpha": OPTS["alpha"], "series": {"s": {"by_sigma": dict(zip(sigmas, statuses, strict=True))}}}
        read = {f"{sg} {key}": ({**r, **st}, key)
                for sg, r, st in zip(sigmas, rows, statuses, strict=True) for key in ("pair_lower", "ot_lower")}
        verdict = rule_crossover(ev)
        pre = precision_precondition(verdict, read, Precondition("two σ > 0", True), repeats=10,
                                     alpha=OPTS["alpha"], min_rel=OPTS["min_rel"])
        c = judge("c", "s", {}, rule="r", kind="finding", verdict=verdict, precondition=pre)
        return c.verdict, c.verdict_if_testable

    assert claim(pair_holds, ot_holds) == ("confirmed", None)
    # an under-resolved point between the two ends could still turn out a reversal: no confirmation
    assert claim(pair_holds, coarse, ot_holds) == ("untestable", "confirmed")
    # a reversal rests on decided points: an under-resolved point elsewhere cannot undo it
    assert claim(pair_holds, ot_holds, coarse, pair_holds) == ("refuted", None)
    # the flip beyond the sweep's end, every point decided: inconclusive (was refuted), not untestable
    assert claim(pair_holds, pair_holds) == ("inconclusive", None)


# --------------------------------------------------------------------------------------------- configs


def test_target_covariance_full_matrix_wins_and_diagonal_still_works() -> None:
    M = target_covariance((5.0, 5.0, 5.0), ((4.0, 0.5, 0.0), (0.5, 1.0, 0.0), (0.0, 0.0, 0.25)), (9.0, 9.0))
    assert M[0, 1] == 0.5 and M.shape == (3, 3)
    assert target_covariance((1.0, 2.0), None, (4.0, 0.25)).diagonal().tolist() == [4.0, 0.25]


def test_config_takes_any_d_and_a_full_matrix() -> None:
    spec = get_experiment("fig4")
    config = build_config(spec, quick=True, overrides={"mean": "[5,5,5]", "cov": FULL_M, "plane": "1,2"})
    assert config.cov[0] == (4.0, 0.5, 0.0) and config.plane == (1, 2)
    assert build_config(spec, quick=True, overrides={"mean": "[1,2,3]", "cov_diag": "1,2,3"}).cov is None


@pytest.mark.parametrize(("overrides", "message"), BAD_GAUSSIAN_CONFIGS)
def test_bad_config_is_one_line_config_error(overrides: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as err:
        build_config(get_experiment("fig4"), quick=True, overrides=overrides)
    assert "\n" not in str(err.value)


def test_experiment_specific_validation() -> None:
    with pytest.raises(ConfigError, match="must not be 0"):
        build_config(get_experiment("fig4"), quick=True, overrides={"angles": "0,90"})
    with pytest.raises(ConfigError, match="angles must be distinct"):
        build_config(get_experiment("fig4"), quick=True, overrides={"angles": "60,60"})
    with pytest.raises(ConfigError, match="include a σ > 0"):
        build_config(get_experiment("fig4"), quick=True, overrides={"sigmas": "0"})


# --------------------------------------------------------------------------------------------- tiny runs


TINY4 = {"n_samples": "300", "repeats": "5", "angles": "120", "sigmas": "0,0.2,1", "noise_forms": "constant"}


def test_fig4_runs_in_d3_with_a_full_matrix(tmp_path: Path) -> None:
    run_experiment("fig4", tmp_path, quick=True, overrides={**TINY4, "mean": "[5,5,5]", "cov": FULL_M})
    result, claims = claims_of(tmp_path / "fig4")
    assert "d = 3" in result["choices"]["problem"] and "12 parameters" in result["choices"]["variance"]
    assert "(x0, x1)" in result["choices"]["rotation"] and "other 1 axis" in result["choices"]["rotation"]
    assert set(claims) == {"fig4.own_coupling.zero_at_sigma0", "fig4.own_coupling.ot_lower_with_noise",
                           "fig4.rotated_data.crossover"}
    assert claims["fig4.own_coupling.zero_at_sigma0"]["kind"] == "identity"
    assert claims["fig4.own_coupling.zero_at_sigma0"]["verdict"] == "confirmed"
    # an identity states its threshold and how many estimates it rests on, as the other identities do
    assert "rounding bound" in claims["fig4.own_coupling.zero_at_sigma0"]["min_effect"]
    assert "K = 300" in claims["fig4.own_coupling.zero_at_sigma0"]["replicates"]
    assert claims["fig4.own_coupling.zero_at_sigma0"]["evidence"]["max_residual_to_bound"] < 1
    repro = claims["fig4.own_coupling.ot_lower_with_noise"]
    assert repro["kind"] == "reproduction" and repro["precondition"]["statement"]
    assert "R = 5" in repro["replicates"] and "0.1 × the larger" in repro["min_effect"]
    assert claims["fig4.rotated_data.crossover"]["kind"] == "finding"
    # both readings are in the metrics, point by point
    metrics = result["metrics"]
    assert len(metrics["reading_ii_own_coupling"]) == 2 and len(metrics["reading_i_rotated_data"]) == 3
    assert result["figures"] == ["variance_vs_sigma.png"]


@pytest.mark.parametrize(("sigmas", "verdict", "outcome", "crossover_sigma"),
                         [("0,0.05,1", "inconclusive", "above_sweep", None), ("0,0.05,1,3", "confirmed", "flips", 3.0)])
def test_fig4_a_flip_beyond_the_sweep_is_inconclusive_and_a_longer_sweep_finds_it(
        tmp_path: Path, sigmas: str, verdict: str, outcome: str, crossover_sigma: float | None) -> None:
    # M = diag(4, 0.25), 60°, bridge noise: on the rotated pairs the pair-optimal field is lower up to σ = 1
    # (OT / pair ≈ 1.3) and the OT field from σ ≈ 2 (≈ 0.3 at 2, 0.15 at 3). A sweep ending at 1 refuted the
    # finding; the flip lies beyond it.
    run_experiment("fig4", tmp_path, quick=True, overrides={"n_samples": "1000", "repeats": "5", "angles": "60",
                                                            "sigmas": sigmas, "noise_forms": "bridge"})
    _, claims = claims_of(tmp_path / "fig4")
    c = claims["fig4.rotated_data.crossover"]
    assert c["verdict"] == verdict
    assert c["evidence"]["outcome"] == {"60deg/bridge": outcome}
    assert c["evidence"]["crossover_sigma"] == {"60deg/bridge": crossover_sigma}
    at_1 = c["evidence"]["series"]["60deg/bridge"]["by_sigma"]["1"]
    assert {k: at_1[k] for k in ("pair_lower", "ot_lower")} == {"pair_lower": "holds", "ot_lower": "excluded"}
    # the numbers a refutation reads at α/k: the statuses at α again, as p-values
    assert status_at(at_1["p_pair_lower"], 0.01) == "holds" and status_at(at_1["p_ot_lower"], 0.01) == "excluded"


@pytest.mark.parametrize("quick", [True, False])
def test_default_sweeps_reach_past_the_bridge_crossovers(quick: bool) -> None:
    # reading (i) with bridge noise flips between σ = 1 and 2 at 30° and 60° (OT / pair-optimal ≈ 1.3–1.9 at 1,
    # 0.3–0.7 at 2): a default sweep that stops at 1 leaves those series inconclusive. Both must hold σ ≥ 2 and a
    # point between 1 and 3 beyond it.
    config = build_config(get_experiment("fig4"), quick=quick, overrides={})
    assert max(config.sigmas) >= 3 and any(1 < s <= 2 for s in config.sigmas)


def test_fig4_too_few_repeats_is_untestable_with_the_number_and_the_remedy(tmp_path: Path) -> None:
    # no point of this tiny run is excluded (an exclusion would refute: it needs no Mann–Whitney test), so with
    # R = 3 (1/C(6, 3) = 0.05 ≥ α) neither claim can be confirmed nor decided: both are untestable
    run_experiment("fig4", tmp_path, quick=True, overrides={**TINY4, "repeats": "3"})
    _, claims = claims_of(tmp_path / "fig4")
    for cid in ("fig4.own_coupling.ot_lower_with_noise", "fig4.rotated_data.crossover"):
        c = claims[cid]
        assert c["verdict"] == "untestable" and c["verdict_if_testable"] in {"confirmed", "inconclusive"}
        assert c["precondition"]["measured"]["mwu_min_p"] == pytest.approx(0.05)
        assert "raise repeats" in c["precondition"]["remedy"]
    assert claims["fig4.own_coupling.zero_at_sigma0"]["verdict"] == "confirmed"  # an identity has no precondition


def test_fig4_singular_angle_is_skipped_and_leaves_the_claims_untestable(tmp_path: Path) -> None:
    # M = diag(4, 0.25) at 180°: I + tΘ̂_R is singular at t = 1/3 and 2/3, so the pair-optimal field is undefined.
    run_experiment("fig4", tmp_path, quick=True, overrides={**TINY4, "angles": "180"})
    result, claims = claims_of(tmp_path / "fig4")
    c = claims["fig4.own_coupling.ot_lower_with_noise"]
    assert c["verdict"] == "untestable" and c["precondition"]["measured"]["usable_angles"] == []
    assert "180deg" in c["precondition"]["measured"]["skipped_angles"] and "invertible" in c["precondition"]["remedy"]
    assert any("skipped" in n for n in result["notes"])


def test_one_sided_status_a_nan_p_value_holds_nothing() -> None:
    """Welch p = 1e-4 beside a NaN Mann–Whitney p: Python's max((1e-4, nan)) is 1e-4, which made the point "holds"
    on one test alone. Every p-value must be below α."""
    point = {"a_mean": 1.0, "b_mean": 2.0, "half_width": 0.1, "p_welch_a_lower": 1e-4, "p_mwu_a_lower": math.nan,
             "p_welch_a_higher": 1.0, "p_mwu_a_higher": 1.0}
    assert one_sided_status(point, lower="a", alpha=0.01, min_rel=0.1) == "undecided"
    assert one_sided_status({**point, "p_mwu_a_lower": 1e-4}, lower="a", alpha=0.01, min_rel=0.1) == "holds"

