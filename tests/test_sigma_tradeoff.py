"""The σ advisor's rules on synthetic evidence with known answers: the point rule on tables of means, the
seed-level rule (``advise_over_seeds``) on per-seed scores (the full-scale reference run's among them), and the rules
and preconditions of ``sigma_tradeoff``'s claims. ``advise_sigma``'s inputs and errors, the noise floor and tiny
end-to-end runs are in tests/test_sigma_tradeoff_runs.py; the scores the rules read are tested in
tests/test_metrics.py."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from flowvar.advisor import (
    advise_over_seeds,
    fallback_sigma,
    gen_tolerance,
    memorisation_bounds,
    recommend_sigma,
    rule_text,
    seed_rule_text,
    seeds_needed,
    sigma0_memorised,
)
from flowvar.errors import ConfigError
from flowvar.experiments import sigma_tradeoff as st
from flowvar.experiments.base import build_config, get_experiment
from flowvar.results import all_preconditions, judge

SIGMAS = (0.0, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5)


def table(mem: list[float], gen: list[float], sigmas: tuple[float, ...] = SIGMAS) -> list[dict[str, float]]:
    return [{"sigma": s, "memorisation": m, "generalisation": g} for s, m, g in zip(sigmas, mem, gen, strict=True)]


# --------------------------------------------------------------------------------------------- the point rule


def test_rule_known_answer_smallest_sigma_within_both_margins() -> None:
    # memorisation falls with σ, generalisation flat then degrading at 0.5: the answer is 0.1
    t = table([1.0, 1.0, 0.9, 0.6, 0.03, 0.0, 0.0], [0.010, 0.010, 0.011, 0.011, 0.012, 0.012, 0.05])
    sigma, reason = recommend_sigma(t, gen_margin=0.25, mem_margin=0.05)
    assert sigma == 0.1
    assert "σ = 0.1" in reason and "0.05" in reason


def test_rule_generalisation_margin_excludes_large_sigma() -> None:
    # only σ = 0.5 stops memorising, but its generalisation is far outside the margin → no σ; fallback = least
    # memorising σ among those that generalise
    t = table([1.0, 1.0, 1.0, 0.9, 0.5, 0.2, 0.0], [0.010, 0.010, 0.010, 0.010, 0.011, 0.012, 0.10])
    sigma, reason = recommend_sigma(t, 0.25, 0.05)
    assert sigma is None and "no σ satisfies both margins" in reason
    fb, fb_reason = fallback_sigma(t, 0.25)
    assert fb == 0.2 and fb_reason.startswith("FALLBACK") and "extend" not in reason
    # when even the largest σ memorises, the reason says so
    t = table([1.0, 1.0, 1.0, 1.0, 0.9, 0.8, 0.7], [0.05, 0.04, 0.03, 0.02, 0.02, 0.01, 0.01])
    sigma, reason = recommend_sigma(t, 0.25, 0.05)
    assert sigma is None and "extend sigmas" in reason and fallback_sigma(t, 0.25)[0] == 0.5


def test_rule_all_memorising_has_no_fallback() -> None:
    # every σ memorises: the least memorising σ is a tie at M = 1, which used to hand back σ = 0 as the "fallback"
    t = table([1.0] * 7, [0.01] * 7)
    assert recommend_sigma(t, 0.25, 0.05)[0] is None
    sigma, reason = fallback_sigma(t, 0.25)
    assert sigma is None and "no fallback either" in reason and "extend sigmas" in reason


def test_fallback_must_cut_memorisation_and_names_the_trade_off() -> None:
    # the full-scale reference run's means (results/full/sigma_tradeoff): only σ = 0.2 is within τ of the best G,
    # and its M = 0.967 is not materially below M(0) = 0.986 — it was printed as "recommended σ = 0.2 (FALLBACK)"
    mem = [0.9856, 0.9869, 0.9948, 0.9974, 1.0, 0.9673, 0.3556]
    gen = [0.006715, 0.005383, 0.005043, 0.004202, 0.003712, 0.002596, 0.003965]
    t = table(mem, gen)
    assert recommend_sigma(t, 0.25, 0.05, gen_floor=0.000499)[0] is None
    sigma, reason = fallback_sigma(t, 0.25, gen_floor=0.000499, reduce_margin=0.1)
    assert sigma is None and "no fallback either" in reason
    # the σ that does cut memorisation is offered with its generalisation cost G(0.5) − G* = +0.00137
    assert "smallest σ that does cut memorisation is σ = 0.5" in reason and "+0.00137" in reason
    assert "not a recommendation" in reason
    # a fallback that does cut memorisation by ≥ reduce_margin is still returned, flagged
    sigma, reason = fallback_sigma(t, 0.25, gen_floor=0.000499, reduce_margin=0.01)
    assert sigma == 0.2 and reason.startswith("FALLBACK, not a σ meeting both margins")
    with pytest.raises(ConfigError, match="reduce_margin"):
        fallback_sigma(t, 0.25, reduce_margin=0.0)


def test_rule_ties_choose_the_smallest_sigma() -> None:
    # identical rows at 0.05 and 0.1 (and an unsorted table): the smaller σ wins; a tie for the best generalisation
    # does not change that
    rows = table([1.0, 0.5, 0.0, 0.0], [0.02, 0.01, 0.01, 0.01], (0.0, 0.02, 0.1, 0.05))
    assert recommend_sigma(rows, 0.0, 0.05)[0] == 0.05
    rows = table([0.0, 0.0], [0.01, 0.01], (0.2, 0.0))
    assert recommend_sigma(rows, 0.0, 0.0)[0] == 0.0


def test_rule_sigma_zero_already_fine() -> None:
    t = table([0.01, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0], [0.01, 0.01, 0.02, 0.02, 0.03, 0.04, 0.05])
    assert recommend_sigma(t, 0.25, 0.05)[0] == 0.0


def test_rule_all_failing_generalisation() -> None:
    # no row has a finite generalisation score (every model diverged): no recommendation and no fallback
    t = table([1.0, 0.0], [math.nan, math.inf], (0.0, 0.1))
    sigma, reason = recommend_sigma(t, 0.25, 0.05)
    assert sigma is None and "no σ has finite scores" in reason and "0.1" in reason
    assert fallback_sigma(t, 0.25)[0] is None
    # a diverged σ is left out and named, the others are still ranked
    t = table([1.0, 0.0, 0.0], [0.01, math.nan, 0.011], (0.0, 0.05, 0.1))
    sigma, reason = recommend_sigma(t, 0.25, 0.05)
    assert sigma == 0.1 and "left out" in reason and "0.05" in reason


def test_rule_noisy_generalisation_noise_floor() -> None:
    # unbiased MMD² near 0 fluctuates around 0 (even negative); relative to the best value the margin is tiny, so
    # without a floor only σ = 0.02 would count as generalising; with the measured noise floor every σ up to 0.2
    # does, and the answer is the first non-memorising σ
    gen = [2e-4, -1e-4, -3e-4, 1e-4, 0.0, 2e-4, 5e-3]
    mem = [1.0, 0.8, 0.4, 0.0, 0.0, 0.0, 0.0]
    t = table(mem, gen)
    assert recommend_sigma(t, 0.25, 0.05)[0] is None
    assert recommend_sigma(t, 0.25, 0.05, gen_floor=1e-3)[0] == 0.05
    # the floor does not rescue a σ whose generalisation is really worse
    t = table(mem, [2e-4, -1e-4, -3e-4, 4e-3, 5e-3, 5e-3, 5e-3])
    assert recommend_sigma(t, 0.25, 0.05, gen_floor=1e-3)[0] is None


def test_rule_custom_keys_and_validation() -> None:
    rows = [{"sigma": 0.0, "acc": 1.0, "mmd": 0.1}, {"sigma": 0.2, "acc": 0.0, "mmd": 0.11}]
    assert recommend_sigma(rows, 0.25, 0.05, gen_key="mmd", mem_key="acc")[0] == 0.2
    with pytest.raises(ConfigError, match="mem_margin"):
        recommend_sigma(rows, 0.25, 1.5, gen_key="mmd", mem_key="acc")
    with pytest.raises(ConfigError, match="gen_margin"):
        recommend_sigma(rows, -1, 0.05, gen_key="mmd", mem_key="acc")
    with pytest.raises(ConfigError, match="keys 'sigma'"):
        recommend_sigma(rows, 0.25, 0.05)
    with pytest.raises(ConfigError, match="twice"):
        recommend_sigma(table([0, 0], [0, 0], (0.1, 0.1)), 0.25, 0.05)


def test_tolerance_and_rule_text() -> None:
    assert gen_tolerance(0.02, 0.25) == pytest.approx(0.005)
    assert gen_tolerance(-0.01, 0.25, 0.003) == 0.003
    text = rule_text(0.25, 0.05, 1e-3)
    assert "0.25" in text and "0.05" in text and "0.001" in text and "fallback" in text


# --------------------------------------------------------------------------------------------- the seed-level rule


# the full-scale reference run's per-seed (pairing accuracy, G) (results/full/sigma_tradeoff, N = 256, 3 seeds, floor
# 0.000499): the point rule on the means answered "fallback 0.2", and 0.5 in 4 of the 27 seed resamples (referee A1)
FULL_SCALE = {0.0: [(0.98438, 0.005953), (0.98047, 0.006442), (0.99219, 0.007749)],
              0.01: [(0.97656, 0.005619), (0.98828, 0.0053), (0.99609, 0.00523)],
              0.02: [(0.99609, 0.004864), (0.99219, 0.004771), (0.99609, 0.005495)],
              0.05: [(0.99609, 0.005015), (1.0, 0.004081), (0.99609, 0.003509)],
              0.1: [(1.0, 0.003839), (1.0, 0.004316), (1.0, 0.00298)],
              0.2: [(0.96484, 0.003041), (0.96094, 0.002624), (0.97656, 0.002123)],
              0.5: [(0.37109, 0.003372), (0.32422, 0.003837), (0.37891, 0.004685)]}


def seeds(cells: dict[float, list[tuple[float, float]]]) -> dict[float, list[dict[str, float]]]:
    """σ → per-seed rows from (pairing accuracy, G) pairs."""
    return {s: [{"pairing_accuracy": a, "generalisation": g} for a, g in rows] for s, rows in cells.items()}


def test_seed_rule_recommends_the_smallest_sigma_passing_with_confidence() -> None:
    # N = 256: σ = 0 memorises; σ = 0.1 and 0.2 sit at chance in every seed with G equal to σ = 0's up to small noise
    chance = 1 / 256
    cells = {0.0: [(1.0, 0.010), (1.0, 0.012), (1.0, 0.011)],
             0.05: [(0.6, 0.0101), (0.55, 0.0121), (0.62, 0.0109)],
             0.1: [(chance, 0.0102), (chance, 0.0119), (2 * chance, 0.0111)],
             0.2: [(chance, 0.0100), (chance, 0.0120), (chance, 0.0110)]}
    adv = advise_over_seeds(seeds(cells), 256, 0.25, 0.05, gen_floor=0.001)
    assert adv.outcome == "recommended" and adv.sigma == 0.1 and adv.fallback_sigma is None
    verdicts = {j.sigma: j.verdict for j in adv.judgements}
    assert verdicts == {0.0: "fails", 0.05: "fails", 0.1: "passes", 0.2: "passes"}
    assert adv.tolerance == pytest.approx(0.25 * 0.011) and adv.gen_reference == pytest.approx(0.011)
    assert "σ = 0.1 is the smallest σ within both margins with confidence" in adv.reason
    # σ = 0 that does not memorise is itself the answer (no noise needed)
    adv = advise_over_seeds(seeds({0.0: [(chance, 0.01)] * 3, 0.1: [(chance, 0.01)] * 3}), 256, 0.25, 0.05)
    assert adv.outcome == "recommended" and adv.sigma == 0.0


def test_seed_rule_undecided_names_the_sigma_and_the_seeds_needed() -> None:
    # σ = 0.2 passes both margins on the means (M ≈ 0, mean G(0.2) − G(0) = 0.001 < τ = 0.0025) but the seeds
    # scatter across τ: no recommendation, "add seeds", with an estimate
    chance = 1 / 256
    cells = {0.0: [(1.0, 0.010), (1.0, 0.010), (1.0, 0.010)],
             0.2: [(chance, 0.0085), (chance, 0.0120), (chance, 0.0125)]}
    adv = advise_over_seeds(seeds(cells), 256, 0.25, 0.05)
    assert adv.outcome == "undecided" and adv.sigma is None and adv.fallback_sigma is None
    assert adv.candidates == [0.2] and adv.seeds_needed is not None and adv.seeds_needed > 3
    judged = adv.judgements[1]
    assert judged.passes_on_means and judged.mem_side == "within" and judged.gen_side == "undecided"
    assert judged.gen_lower < adv.tolerance < judged.gen_upper
    assert "σ = 0.2 passes both margins on the means but not with confidence: add seeds" in adv.reason
    assert f"about {adv.seeds_needed} seeds" in adv.reason and "counting on N" not in adv.reason
    # the estimate: the t-bound clears τ at seeds_needed seeds, not one seed fewer
    d = [0.0085 - 0.010, 0.0120 - 0.010, 0.0125 - 0.010]
    mean, sd = float(np.mean(d)), float(np.std(d, ddof=1))
    n = seeds_needed(mean, sd, 0.0025, 0.05, 3)
    assert n == adv.seeds_needed
    from scipy import stats as sps
    assert mean + sps.t.ppf(0.95, n - 1) * sd / math.sqrt(n) < 0.0025
    assert mean + sps.t.ppf(0.95, n - 2) * sd / math.sqrt(n - 1) >= 0.0025
    assert seeds_needed(0.003, sd, 0.0025, 0.05, 3) is None  # the mean itself is beyond the margin
    # one seed decides nothing
    one = advise_over_seeds(seeds({s: rows[:1] for s, rows in cells.items()}), 256, 0.25, 0.05)
    assert one.outcome == "undecided" and one.candidates == [0.2, 0.0]  # those passing on the means first


def test_seed_rule_small_n_memorisation_counts_the_binomial_error() -> None:
    # N = 8 (referee A4): M = 0 in every seed has no seed spread, but one pair in eight moves M by 1/7; the pooled
    # Clopper–Pearson bound keeps the margin 0.05 out of reach: undecided, not recommended
    cells = {0.0: [(1.0, 0.01)] * 3, 0.5: [(1 / 8, 0.01)] * 3}
    mean, low, up = memorisation_bounds([1 / 8] * 3, 8, 0.05)
    assert mean == pytest.approx(0.0) and up == pytest.approx(0.191, abs=1e-3) and low < 0
    adv = advise_over_seeds(seeds(cells), 8, 0.25, 0.05)
    assert adv.outcome == "undecided" and adv.judgements[1].mem_side == "undecided"
    assert "counting on N = 8 pairs (one pair moves M by 0.14): more training pairs" in adv.reason
    # the same chance-level pairing on N = 1024 pairs is resolved
    cells = {0.0: [(1.0, 0.01)] * 3, 0.5: [(1 / 1024, 0.01)] * 3}
    assert advise_over_seeds(seeds(cells), 1024, 0.25, 0.05).outcome == "recommended"
    # the seed t-bound is used when it is the wider: seeds scattering around the margin
    from scipy import stats as sps
    mean, low, up = memorisation_bounds([0.0, 0.05, 0.10], 1024, 0.05)
    scores = [(a - 1 / 1024) / (1 - 1 / 1024) for a in (0.0, 0.05, 0.10)]
    half = sps.t.ppf(0.95, 2) * np.std(scores, ddof=1) / math.sqrt(3)
    assert up == pytest.approx(mean + half) and low == pytest.approx(max(mean - half, -1 / 1023))


def test_seed_rule_none_with_a_flagged_fallback_full_scale_numbers() -> None:
    # the full-scale reference run: every σ memorises above the margin (lower bounds > 0.05), so none passes; the
    # point rule's fallback σ = 0.2 (M 0.967 vs 0.986) does not cut memorisation; σ = 0.5 does (confirmed drop
    # ≥ 0.1) and generalises within τ of σ = 0 with confidence: it is the flagged fallback, in every seed resample
    adv = advise_over_seeds(seeds(FULL_SCALE), 256, 0.25, 0.05, gen_floor=0.000499, reduce_margin=0.1)
    assert adv.outcome == "none" and adv.sigma is None and adv.fallback_sigma == 0.5
    assert all(j.verdict == "fails" and j.mem_side == "above" for j in adv.judgements)
    assert adv.reason.startswith("no σ satisfies both margins")
    assert "FALLBACK, not a recommendation: σ = 0.5" in adv.reason
    assert adv.trade_off is not None and adv.trade_off["sigma"] == 0.5
    assert adv.trade_off["gen_cost_upper"] < adv.tolerance
    assert st.both_margins_rule([j.verdict for j in adv.judgements]) == "refuted"
    import itertools
    answers = set()
    for idx in itertools.product(range(3), repeat=3):
        if len(set(idx)) == 1:
            continue  # one seed repeated has no spread: not a resample of replicates
        sub = {s: [rows[i] for i in idx] for s, rows in FULL_SCALE.items()}
        a = advise_over_seeds(seeds(sub), 256, 0.25, 0.05, gen_floor=0.000499)
        answers.add((a.outcome, a.fallback_sigma))
    assert answers == {("none", 0.5)}


def test_seed_rule_none_without_fallback_names_the_trade_off() -> None:
    # σ = 0.5 cuts memorisation, but its generalisation is worse than σ = 0's by more than τ with confidence: no
    # fallback, and the trade-off (σ = 0.5, its G cost) is named; σ = 0.1 neither cuts M nor harms G
    cells = {0.0: [(1.0, 0.010), (1.0, 0.011), (1.0, 0.012)],
             0.1: [(1.0, 0.010), (1.0, 0.011), (1.0, 0.012)],
             0.5: [(0.3, 0.030), (0.35, 0.032), (0.32, 0.031)]}
    adv = advise_over_seeds(seeds(cells), 256, 0.25, 0.05)
    assert adv.outcome == "none" and adv.fallback_sigma is None
    assert adv.trade_off is not None and adv.trade_off["sigma"] == 0.5
    assert adv.trade_off["gen_cost"] == pytest.approx(0.02) and adv.trade_off["gen_cost_lower"] > adv.tolerance
    assert "the smallest σ that cuts memorisation" in adv.reason and "not a recommendation" in adv.reason
    # every σ memorises: no fallback, no trade-off, "extend sigmas" (the point rule handed back σ = 0 on a tie)
    cells = {s: [(1.0, 0.010), (1.0, 0.011), (1.0, 0.012)] for s in (0.0, 0.1, 0.5)}
    adv = advise_over_seeds(seeds(cells), 256, 0.25, 0.05)
    assert adv.outcome == "none" and adv.fallback_sigma is None and adv.trade_off is None
    assert "extend sigmas" in adv.reason


def test_seed_rule_no_data_and_validation() -> None:
    nan = math.nan
    adv = advise_over_seeds(seeds({0.0: [(nan, nan)] * 2, 0.1: [(nan, nan)] * 2}), 64, 0.25, 0.05)
    assert adv.outcome == "no_data" and adv.sigma is None and adv.judgements == []
    # a σ whose every seed diverged is left out; one diverged seed is left out of its σ's comparison
    cells = {0.0: [(1.0, 0.01), (1.0, 0.011), (1.0, 0.012)], 0.05: [(nan, nan)] * 3,
             0.1: [(1 / 1024, 0.01), (nan, nan), (1 / 1024, 0.012)]}
    adv = advise_over_seeds(seeds(cells), 1024, 0.25, 0.05)
    assert [j.sigma for j in adv.judgements] == [0.0, 0.1] and adv.judgements[1].n_seeds == 2
    with pytest.raises(ConfigError, match="must hold σ = 0"):
        advise_over_seeds(seeds({0.1: [(1.0, 0.01)]}), 64, 0.25, 0.05)
    with pytest.raises(ConfigError, match="same seeds"):
        advise_over_seeds(seeds({0.0: [(1.0, 0.01)] * 2, 0.1: [(1.0, 0.01)]}), 64, 0.25, 0.05)
    with pytest.raises(ConfigError, match="n_train"):
        advise_over_seeds(seeds({0.0: [(1.0, 0.01)]}), 1, 0.25, 0.05)
    with pytest.raises(ConfigError, match="alpha"):
        advise_over_seeds(seeds({0.0: [(1.0, 0.01)]}), 64, 0.25, 0.05, alpha=0.5)
    text = seed_rule_text(0.25, 0.05, 1e-3, 0.05, 0.1)
    assert "σ = 0" in text and "Clopper–Pearson" in text and "add seeds" in text and "0.001" in text


def test_seed_rule_on_the_referees_flat_truth_never_answers_sigma_zero() -> None:
    # referee A1's synthetic truth (advisor_noise.py): M = [1, 1, 1, .9, .3, .02, 0], G flat, 3 seeds, N = 256,
    # σ-specific G noise 2·τ0: the point rule answered σ = 0 (fallback) in 3–9 % of draws and the right σ = 0.2 in
    # 30 %; the seed rule never answers σ = 0 and says "undecided" rather than guess
    rng = np.random.default_rng(0)
    m_true = np.array([1, 1, 1, .9, .3, .02, 0.0])
    tau0, n, answers = 0.25 * 0.005, 256, []
    for _ in range(60):
        g = 0.005 + rng.normal(0, 0.002, (3, 1)) + rng.normal(0, 2 * tau0, (3, 7))
        acc = rng.binomial(n, 1 / n + m_true * (1 - 1 / n), (3, 7)) / n
        cells = {s: [(float(acc[i, j]), float(g[i, j])) for i in range(3)] for j, s in enumerate(SIGMAS)}
        adv = advise_over_seeds(seeds(cells), n, 0.25, 0.05, gen_floor=0.0005)
        answers.append((adv.outcome, adv.sigma if adv.outcome == "recommended" else adv.fallback_sigma))
    assert all(a[1] != 0.0 for a in answers)
    assert sum(a[0] == "undecided" for a in answers) > 30
    assert all(a[1] in (0.2, 0.5) for a in answers if a[0] == "recommended")  # both truly pass


# --------------------------------------------------------------------------------------------- the claims' rules


def test_sigma0_memorises_rule_reaches_every_outcome() -> None:
    kw = {"memorise_accuracy": 0.5, "mem_margin": 0.05}
    assert st.sigma0_memorises_rule([1.0, 0.95], 64, **kw) == "confirmed"
    assert st.sigma0_memorises_rule([1.0, 0.3], 64, **kw) == "inconclusive"  # one seed short of the threshold
    assert st.sigma0_memorises_rule([1 / 64, 0.03], 64, **kw) == "refuted"  # chance level in every seed
    assert st.sigma0_memorises_rule([math.nan, math.nan], 64, **kw) == "inconclusive"
    assert st.sigma0_memorises_rule([math.nan, 1.0], 64, **kw) == "confirmed"  # a diverged seed is left out


def test_reduces_memorisation_rule_and_precondition() -> None:
    kw = {"sigma": 0.05, "reduce_margin": 0.1, "alpha": 0.05, "n_train": 64}
    assert st.reduces_memorisation_rule([1.0, 1.0, 0.98], [0.5, 0.4, 0.45], **kw).verdict == "confirmed"
    refuted = st.reduces_memorisation_rule([1.0, 1.0, 0.98], [1.0, 1.0, 0.98], **kw)  # the quick GMM run's case
    assert refuted.verdict == "refuted" and refuted.upper < 0.1
    assert st.reduces_memorisation_rule([1.0, 1.0], [0.2, 1.0], **kw).verdict == "inconclusive"
    assert st.reduces_memorisation_rule([1.0], [0.0], **kw).verdict == "inconclusive"  # one seed
    none = st.reduces_memorisation_rule([math.nan], [0.0], **kw)
    assert none.verdict == "inconclusive" and "diverged" in none.reason
    assert "0.1 × 1, the memorisation scale" in refuted.effect_text()
    pre = st.memorised_precondition([1.0, 0.9], 0.5)
    assert pre.holds and pre.measured["pairing_accuracy_sigma0_per_seed"] == [1.0, 0.9] and not pre.remedy
    for acc in ([1.0, 0.2], [math.nan, math.nan], [math.nan, 0.3], []):
        bad = st.memorised_precondition(acc, 0.5)
        assert not bad.holds and "steps" in bad.remedy
        claim = judge("c", "s", {}, rule="r", kind="reproduction", verdict="refuted", precondition=bad)
        assert claim.verdict == "untestable" and claim.verdict_if_testable == "refuted"
    # a diverged seed is left out, as the paired comparisons leave it out, and said: claims 2 and 4 (and the
    # advisor's gate) read the same seeds (they disagreed when one seed diverged)
    diverged = st.memorised_precondition([math.nan, 1.0, 0.95], 0.5)
    assert diverged.holds and diverged.measured["diverged_seeds"] == 1 and "1 of 3 diverged" in diverged.statement
    assert diverged.holds == sigma0_memorised([math.nan, 1.0, 0.95], 0.5)


def test_reduces_memorisation_floors_the_spread_of_a_k_over_n_score() -> None:
    """statsR 2: M = (a − 1/N)/(1 − 1/N) of an accuracy k/N. Two seeds at M(σ) = 14/15 (15 of N = 16 pairs) after
    σ = 0's perfect pairing tie (sd 0): the unfloored bounds refuted a drop of 0.1 with certainty. The floor is the
    binomial sd of the pooled accuracies over N, in M units, each with one success and one failure added over the
    2 seeds' 32 trials (p̃ = 33/34 and 31/34): √((33·1 + 31·3)/34² / 16) / (15/16)."""
    kw = {"sigma": 0.05, "reduce_margin": 0.1, "alpha": 0.05}
    tied = st.reduces_memorisation_rule([1.0, 1.0], [14 / 15, 14 / 15], **kw, n_train=16)
    assert tied.sd == 0.0 and tied.sd_floor == pytest.approx(math.sqrt((33 + 31 * 3) / 34**2 / 16) / (15 / 16),
                                                             rel=1e-9)
    assert tied.verdict == "inconclusive" and "raised to the metric's floor" in tied.reason
    # many pairs: the grid is fine, the floor small, and the same M values are refuted
    assert st.reduces_memorisation_rule([1.0, 1.0], [14 / 15, 14 / 15], **kw, n_train=4096).verdict == "refuted"


def test_seed_rules_name_the_seeds_left_out_as_diverged() -> None:
    """statsR 7: a diverged σ run (NaN scores) was dropped silently, so non-inferiority could be confirmed on the
    surviving seeds with nothing in the claim saying so. The reason names the seeds, of how many, and why."""
    ni = st.keeps_generalisation_rule([0.010, math.nan, 0.011, 0.012], [0.020, 0.021, 0.021, 0.019], 0.004,
                                      sigma=0.05, alpha=0.05, seeds=[7, 8, 9, 10])
    assert ni.verdict == "confirmed" and ni.n_seeds == 3
    assert "left out as diverged" in ni.reason and "seed 8 (1 of 4)" in ni.reason and "other 3" in ni.reason
    mem = st.reduces_memorisation_rule([1.0, 1.0, math.nan], [0.2, 0.3, 0.1], sigma=0.05, reduce_margin=0.1,
                                       alpha=0.05, n_train=64, seeds=[0, 1, 2])
    assert "seed 2 (1 of 3)" in mem.reason
    none = st.keeps_generalisation_rule([math.nan, math.nan], [0.02, 0.02], 0.004, sigma=0.05, alpha=0.05)
    assert none.verdict == "inconclusive" and "seeds 0, 1 (2 of 2)" in none.reason
    assert "left out" not in st.keeps_generalisation_rule([0.01, 0.011], [0.02, 0.02], 0.004, sigma=0.05,
                                                          alpha=0.05).reason
    assert st.left_out_text([], 3) == ""


def test_keeps_generalisation_rule_has_an_inconclusive_band() -> None:
    kw = {"sigma": 0.05, "alpha": 0.05}
    tau = 0.004
    assert st.keeps_generalisation_rule([0.010, 0.011, 0.012], [0.020, 0.021, 0.019], tau, **kw).verdict == "confirmed"
    refuted = st.keeps_generalisation_rule([0.030, 0.031, 0.032], [0.020, 0.021, 0.019], tau, **kw)
    assert refuted.verdict == "refuted" and refuted.lower > tau
    # the quick run's situation: better on average, but the seeds scatter across τ
    band = st.keeps_generalisation_rule([0.015, 0.0074, 0.0225], [0.0282, 0.0175, 0.0213], tau, **kw)
    assert band.verdict == "inconclusive" and band.lower < tau < band.upper
    assert st.keeps_generalisation_rule([0.01], [0.02], tau, **kw).verdict == "inconclusive"  # one seed
    assert st.keeps_generalisation_rule([math.nan, math.nan], [0.02, 0.02], tau, **kw).verdict == "inconclusive"
    assert "margin" in refuted.effect_text() and "noise floor" in refuted.effect_text()
    assert refuted.min_effect == refuted.scale == tau


def test_keeps_generalisation_margin_does_not_widen_with_worse_scores() -> None:
    # the same per-seed differences G(σ) − G(0) = 0.009 … 0.011 on scores near 0.02 and near 0.2: τ is the noise
    # floor in both, so both are refuted (a margin of 0.25 × min(mean G) would be 0.005 and 0.05: the worse scores
    # would have been confirmed)
    zero_small, zero_large = [0.020, 0.021, 0.019], [0.200, 0.210, 0.190]
    diffs = [0.009, 0.010, 0.011]
    small = st.keeps_generalisation_rule([z + d for z, d in zip(zero_small, diffs, strict=True)], zero_small, 0.004,
                                         sigma=0.05, alpha=0.05)
    large = st.keeps_generalisation_rule([z + d for z, d in zip(zero_large, diffs, strict=True)], zero_large, 0.004,
                                         sigma=0.05, alpha=0.05)
    assert small.verdict == large.verdict == "refuted" and small.min_effect == large.min_effect == 0.004


def test_noise_can_act_precondition_reaches_every_outcome() -> None:
    kw = {"sigma": 0.05, "spacing": 1.05, "sigma_sqrt_d": 0.141}
    # the quick GMM run (d = 8, N = 64, σ√d = 0.14 against a line spacing of 1.05): the exact minimiser keeps every pair
    cannot = st.noise_can_act_precondition([1.0, 1.0, 1.0], 0.1, **kw)
    assert not cannot.holds and cannot.measured["seed_mean"] == 0.0 and "more pairs N" in cannot.remedy
    assert cannot.measured["median_line_spacing"] == 1.05 and cannot.measured["sigma_sqrt_d"] == 0.141
    acts = st.noise_can_act_precondition([0.5, 0.7, 0.6], 0.1, **kw)  # M drops by 0.4 on average
    assert acts.holds and acts.measured["seed_mean"] == pytest.approx(0.4) and not acts.remedy
    assert not st.noise_can_act_precondition([0.95, 0.92], 0.1, **kw).holds  # drop 0.065 < 0.1
    assert not st.noise_can_act_precondition([math.nan, 0.0], 0.1, **kw).holds
    assert not st.noise_can_act_precondition([], 0.1, **kw).holds
    # a refutation by the network where the noise cannot act is untestable, the rule's outcome kept
    refuted = st.reduces_memorisation_rule([1.0, 1.0, 0.98], [1.0, 1.0, 0.98], sigma=0.05, reduce_margin=0.1,
                                           alpha=0.05, n_train=64)
    pre = all_preconditions(st.memorised_precondition([1.0, 1.0, 0.98], 0.5), cannot)
    claim = judge("c", "s", {}, rule="r", kind="reproduction", verdict=refuted.verdict, precondition=pre)
    assert claim.verdict == "untestable" and claim.verdict_if_testable == "refuted"
    pre = all_preconditions(st.memorised_precondition([1.0, 1.0, 0.98], 0.5), acts)
    assert judge("c", "s", {}, rule="r", kind="reproduction", verdict=refuted.verdict,
                 precondition=pre).verdict == "refuted"


def test_exact_minimiser_of_one_seed() -> None:
    config = build_config(get_experiment("sigma_tradeoff"), quick=True, overrides={"exact_max": "16",
                                                                                   "euler_steps": "20"})
    x1 = torch.randn(40, 3, generator=torch.Generator().manual_seed(0))
    x0 = torch.randn(40, 3, generator=torch.Generator().manual_seed(1))
    cpu = torch.device("cpu")
    zero = st._exact_minimiser(config, x0, x1, 0.0, torch.Generator().manual_seed(2), cpu)
    assert zero["n_sources"] == 16 and zero["dim"] == 3 and zero["memorisation"] == 1.0  # Prop 2: every partner
    wide = st._exact_minimiser(config, x0, x1, 5.0, torch.Generator().manual_seed(2), cpu)
    assert wide["memorisation"] < 0.5 and wide["line_spacing_median"] > 0  # σ far above the spacing: pairs mixed
    assert st.compared_sigma(0.05, [0.0, 0.05, 0.1]) == 0.05 and st.compared_sigma(0.05, [0.0, 0.2, 0.1]) == 0.1


def test_both_margins_rule_reads_the_seed_level_verdicts() -> None:
    assert st.both_margins_rule(["fails", "undecided", "passes"]) == "confirmed"
    assert st.both_margins_rule(["fails", "fails", "fails"]) == "refuted"
    # the band: a σ neither passing nor failing with confidence, and none passing
    assert st.both_margins_rule(["fails", "undecided"]) == "inconclusive"
    assert st.both_margins_rule([]) == "inconclusive"  # no σ had finite scores
    # a σ that passes only where its exact minimiser keeps the pairs (the advice names it, no answer): not evidence
    assert st.both_margins_rule(["fails", "passes"], [True, False]) == "inconclusive"
    assert st.both_margins_rule(["fails", "passes", "passes"], [True, False, True]) == "confirmed"
    assert st.both_margins_rule(["fails", "fails"], [False, False]) == "refuted"
    with pytest.raises(ConfigError, match="passes, fails or undecided"):
        st.both_margins_rule(["confirmed"])
    # the quick reference run's per-seed evidence (results/sigma_tradeoff, N = 64): refuted, as published (every σ
    # memorises above the margin with confidence); no fallback now: σ = 0.5's G straddles τ against σ = 0
    quick = {0.0: [(0.96875, 0.009842), (0.98438, 0.023358), (1.0, 0.032442)],
             0.05: [(0.98438, 0.011934), (0.98438, 0.02151), (1.0, 0.025608)],
             0.5: [(0.53125, 0.01216), (0.45312, 0.011577), (0.51562, 0.018232)]}
    adv = advise_over_seeds(seeds(quick), 64, 0.25, 0.05, gen_floor=0.0011051893460290146)
    assert st.both_margins_rule([j.verdict for j in adv.judgements]) == "refuted"
    assert adv.outcome == "none" and adv.fallback_sigma is None and adv.trade_off["sigma"] == 0.5


def test_quick_mode_replicates_over_seeds() -> None:
    config = build_config(get_experiment("sigma_tradeoff"), quick=True)
    assert config.n_seeds >= 2 and config.alpha == 0.05
    # the noise floor's RMS rests on 20 null replicates (5 gave it a relative sd of about 32 %; referee A5)
    assert config.null_repeats == 20 and build_config(get_experiment("sigma_tradeoff")).null_repeats == 20
    with pytest.raises(ConfigError, match="alpha"):
        build_config(get_experiment("sigma_tradeoff"), quick=True, overrides={"alpha": "0"})
