"""A generalisation change needs a minimum effect before the advisor calls it an improvement (or a cost) — the noise
floor, 2 × RMS of the null MMD² between two independent real samples: how far G moves between samples of the true
distribution itself (newR finding 2). The newcomer's PNG run had "σ = 0.2 improves generalisation with confidence"
in its headline for G − G(0) = −0.00301 (bounds −0.00326 … −0.00275), 0.8 % of G(0) = 0.379 and a sixth of its floor
0.0179: three seeds with paired initialisation pin the sign of a shift far below what the metric resolves. Synthetic
numbers for each outcome; the digits run's −0.081 (floor 0.000595) stays an improvement."""

from __future__ import annotations

import pytest

from flowvar.advisor import advise_over_seeds, gen_change_kind, gen_change_text


@pytest.mark.parametrize(("difference", "lower", "upper", "floor", "kind"), [
    (-0.08, -0.09, -0.07, 0.0006, "improvement"),  # digits: far beyond the floor
    (-0.003, -0.0033, -0.0027, 0.0179, "better_below_floor"),  # the PNG run: sign sure, size below the floor
    (-0.0179, -0.02, -0.016, 0.0179, "improvement"),  # exactly the floor counts (as paired_over_seeds' ≥)
    (0.05, 0.04, 0.06, 0.0179, "cost"),
    (0.002, 0.001, 0.003, 0.0179, "worse_below_floor"),
    (-0.003, -0.01, 0.004, 0.0179, "better"),  # bounds straddle 0: the mean's side only, as before
    (0.003, -0.004, 0.01, 0.0179, "worse"),
    (0.0, -0.01, 0.01, 0.0179, "unchanged"),
    (-0.003, -0.0033, -0.0027, 0.0, "improvement"),  # no floor measured: the sign alone, as before
])
def test_gen_change_kind_needs_the_floor_as_its_minimum_effect(difference: float, lower: float, upper: float,
                                                               floor: float, kind: str) -> None:
    assert gen_change_kind(difference, lower, upper, floor) == kind


def test_gen_change_text_says_below_the_noise_floor_and_beyond_it() -> None:
    below = gen_change_text(-0.00301, -0.00326, -0.00275, 0.0947, "within", 0.0179)
    assert below == ("generalisation better, below the noise floor: G(σ) − G(0) = -0.00301 (one-sided bounds -0.00326 "
                     "… -0.00275, both below 0, but within the noise floor 0.0179 of 0 — what two independent real "
                     "samples differ by — so too small to count as an improvement), within the advisor's margin "
                     "τ = 0.0947")
    assert "improved" not in below
    beyond = gen_change_text(-0.0807, -0.0826, -0.0787, 0.074, "within", 0.000595)
    assert beyond.startswith("generalisation improved: G(σ) − G(0) = -0.0807 (one-sided bounds -0.0826 … -0.0787, "
                             "both below 0; beyond the noise floor 0.000595)")
    assert "as a cost" in gen_change_text(0.002, 0.001, 0.003, 0.0947, "within", 0.0179)


def _rows(g: dict[float, list[float]]) -> dict[float, list[dict[str, float]]]:
    """σ → per-seed rows: every σ pairs every source (M = 1, as in both newcomer runs), G as given."""
    return {s: [{"pairing_accuracy": 1.0, "generalisation": v} for v in values] for s, values in g.items()}


# the PNG run's shape (N = 32): G(0) ≈ 0.379; σ = 0.2 lower by ≈ 0.003 in every seed, floor 0.0179
PNG = {0.0: [0.3790, 0.3800, 0.3780], 0.2: [0.3760, 0.3770, 0.3750], 0.5: [0.3800, 0.3810, 0.3790]}
# the digits run's shape (N = 64): G(0) ≈ 0.296; σ = 0.2 lower by ≈ 0.08, floor 0.000595
DIGITS = {0.0: [0.290, 0.300, 0.297], 0.2: [0.210, 0.218, 0.217], 0.5: [0.228, 0.233, 0.231]}


def test_a_gain_below_the_floor_is_not_headlined_and_the_reason_says_so() -> None:
    adv = advise_over_seeds(_rows(PNG), 32, 0.25, 0.05, gen_floor=0.0179, memorise_accuracy=0.9)
    j = next(j for j in adv.judgements if j.sigma == 0.2)
    assert j.gen_upper < 0 and -j.gen_difference < 0.0179  # sign confirmed, size below the floor
    assert adv.outcome == "none" and "improves generalisation" not in adv.headline
    assert (f"no σ improves generalisation measurably: the largest confirmed gain, σ = 0.2's G − G(0) = "
            f"{j.gen_difference:+.3g} (bounds [{j.gen_lower:+.3g}, {j.gen_upper:+.3g}]), is within the noise floor "
            f"0.0179 of 0 (what two independent real samples differ by)") in adv.reason


def test_a_gain_beyond_the_floor_is_headlined_with_the_floor() -> None:
    adv = advise_over_seeds(_rows(DIGITS), 64, 0.25, 0.05, gen_floor=0.000595, memorise_accuracy=0.9)
    j = next(j for j in adv.judgements if j.sigma == 0.2)
    assert adv.outcome == "none"
    assert (f"; σ = 0.2 improves generalisation with confidence, beyond the noise floor 0.000595 (G − G(0) = "
            f"{j.gen_difference:+.3g}, bounds [{j.gen_lower:+.3g}, {j.gen_upper:+.3g}]) but its memorisation stays "
            f"above the memorisation margin 0.05 with confidence") in adv.headline
    assert "no σ improves generalisation measurably" not in adv.reason


def test_without_a_measured_floor_no_gain_is_headlined() -> None:
    """gen_floor = 0 (a caller with no null reference): no minimum effect to size a gain by, so none is headlined
    (the per-σ lines still give every G − G(0) with its bounds)."""
    adv = advise_over_seeds(_rows(DIGITS), 64, 0.25, 0.05, gen_floor=0.0, memorise_accuracy=0.9)
    assert "improves generalisation" not in adv.headline and "G − G(0) = -0.0807" in adv.reason


def test_the_report_words_a_sign_certain_change_within_the_floor_as_such() -> None:
    """The report's per-σ sentence (narrators._sigma_state) reads the recorded floor: the PNG run's −0.0030 with a
    floor of 0.0179 is 'better, but within the noise floor', not 'an improvement'; a result without a recorded
    floor reads the sign alone."""
    from flowvar.report.narrators import _sigma_state

    judgement = {"sigma": 0.2, "mem_mean": 1.0, "mem_side": "above", "gen_difference": -0.003, "gen_lower": -0.0033,
                 "gen_upper": -0.0027, "gen_side": "within"}
    margins = {"mem_margin": 0.05, "gen_tolerance": 0.0947, "gen_floor": 0.0179}
    text = _sigma_state({"judgements": [judgement], "margins": margins}, 0.2)
    assert "better, but within the noise floor 0.0179" in text and "an improvement" not in text
    older = _sigma_state({"judgements": [judgement], "margins": {**margins, "gen_floor": None}}, 0.2)
    assert "an improvement" in older
