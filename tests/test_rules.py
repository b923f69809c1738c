"""The generic verdict rules reach every outcome they can return."""

import math

import pytest

from flowvar.rules import above, all_of, at_every_setting, below


def test_below_reaches_each_outcome() -> None:
    kw = {"confirm_below": 1e-8, "refute_above": 1e-3}
    assert below(1e-12, **kw) == "confirmed"
    assert below(1e-5, **kw) == "inconclusive"
    assert below(0.1, **kw) == "refuted"
    assert below(math.nan, **kw) == "refuted" and below(math.inf, **kw) == "refuted"
    # −inf is a failed computation, not an error that vanished (statsR 6: it confirmed)
    assert below(-math.inf, **kw) == "refuted"
    assert below(1e-3, **kw) == "inconclusive" and below(1e-8, **kw) == "inconclusive"  # the edges are not confirmed
    with pytest.raises(ValueError):
        below(0.0, confirm_below=1.0, refute_above=0.5)


def test_above_reaches_each_outcome() -> None:
    kw = {"confirm_above": 1e-6, "refute_below": 1e-20}
    assert above(1.0, **kw) == "confirmed"
    assert above(1e-10, **kw) == "inconclusive"
    assert above(0.0, **kw) == "refuted" and above(math.nan, **kw) == "refuted"
    # an overflowed (+inf) value is no evidence that the quantity is positive (statsR 6: it confirmed)
    assert above(math.inf, **kw) == "refuted" and above(-math.inf, **kw) == "refuted"
    with pytest.raises(ValueError):
        above(0.0, confirm_above=0.0, refute_below=1.0)


def test_at_every_setting_and_all_of() -> None:
    assert at_every_setting({"a": True, "b": True}) == "confirmed"
    assert at_every_setting({"a": False, "b": False}) == "refuted"
    assert at_every_setting({"a": True, "b": False}) == "inconclusive"
    assert at_every_setting({}) == "inconclusive"
    # an identity: one failing deterministic setting is a counterexample (statsR 8)
    assert at_every_setting({"a": True, "b": False}, identity=True) == "refuted"
    assert at_every_setting({"a": True, "b": True}, identity=True) == "confirmed"
    assert at_every_setting({}, identity=True) == "inconclusive"
    assert all_of("confirmed", "confirmed") == "confirmed"
    assert all_of("confirmed", "inconclusive") == "inconclusive"
    assert all_of("confirmed", "refuted", "inconclusive") == "refuted"
    assert all_of() == "inconclusive"


def test_counterexample1_single_crossing_rule() -> None:
    from flowvar.experiments.counterexample1 import rule_single_crossing

    ok = {"singular_times": [0.5], "meeting_time": 0.5, "max_distance_to_mu_half": 1e-15}
    assert rule_single_crossing(ok) == "confirmed"
    assert rule_single_crossing({**ok, "singular_times": [0.25, 0.5]}) == "refuted"
    assert rule_single_crossing({**ok, "max_distance_to_mu_half": 1e-3}) == "refuted"
    assert rule_single_crossing({**ok, "max_distance_to_mu_half": math.nan}) == "refuted"
    assert rule_single_crossing({**ok, "max_distance_to_mu_half": 1e-9}) == "inconclusive"
    assert rule_single_crossing({**ok, "meeting_time": None}) == "inconclusive"


def test_exact_zero_is_a_zero_up_to_rounding_on_either_side_and_never_a_negative_loss() -> None:
    """Review verdictR 4: any negative value counted as an exact zero (a negative loss floor is a defect)."""
    from flowvar.rules import EXACT_ZERO_TOL, exact_zero

    assert exact_zero(0.0) and exact_zero(-1e-20) and exact_zero(EXACT_ZERO_TOL) and exact_zero(-EXACT_ZERO_TOL)
    assert not exact_zero(-1.0) and not exact_zero(-2 * EXACT_ZERO_TOL) and not exact_zero(float("nan"))
