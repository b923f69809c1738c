"""Experiment prop1: every claim rule on synthetic evidence, for each outcome it can return and for NaN inputs."""

from __future__ import annotations

import math

from flowvar.experiments.prop1 import (
    mismatch_scale,
    relative_traces,
    rule_noise_breaks_zero_variance,
    rule_pair_optimal_zero,
    rule_variance_from_mismatch,
)

NAN = math.nan


def test_mismatch_scale_and_relative_traces() -> None:
    assert mismatch_scale({"30": 2.0, "180": 50.0}) == 50.0
    assert mismatch_scale({}) == 1.0  # no non-zero angle: an absolute scale
    assert math.isnan(mismatch_scale({"30": 2.0, "180": NAN}))  # a NaN anywhere reaches the scale
    assert relative_traces({"0": 1e-15, "180": 5e-14}, 50.0) == {"0": 2e-17, "180": 1e-15}
    assert all(math.isnan(v) for v in relative_traces({"0": 1e-15}, NAN).values())
    assert all(math.isnan(v) for v in relative_traces({"0": 1e-15}, 0.0).values())


def test_rule_pair_optimal_zero_reaches_every_outcome() -> None:
    assert rule_pair_optimal_zero({"0": 0.0, "180": 1e-30}, {"0": 0.0, "180": 1e-16}) == "confirmed"
    assert rule_pair_optimal_zero({"0": 0.0, "180": 1e-15}, {"0": 0.0, "180": 1e-16}) == "inconclusive"
    assert rule_pair_optimal_zero({"0": 0.0, "180": 1e-30}, {"0": 0.0, "180": 1e-3}) == "refuted"
    assert rule_pair_optimal_zero({"0": 0.0, "180": 1e-3}, {"0": 0.0, "180": 0.0}) == "refuted"
    assert rule_pair_optimal_zero({}, {}) == "inconclusive"  # e.g. no angle whose lines cross


def test_rule_pair_optimal_zero_nan_at_any_angle_refutes() -> None:
    # the builtin max() kept 0.0 and dropped the NaN in second position: "confirmed"
    assert rule_pair_optimal_zero({"0": 0.0, "180": NAN}, {"0": 0.0, "180": 0.0}) == "refuted"
    assert rule_pair_optimal_zero({"0": 0.0, "180": 0.0}, {"0": 0.0, "180": NAN}) == "refuted"


def test_rule_noise_breaks_zero_variance_reaches_every_outcome() -> None:
    assert rule_noise_breaks_zero_variance({"0": {"constant": 1e-3, "bridge": 2e-3},
                                            "180": {"constant": 1e-2, "bridge": 1e-2}}) == "confirmed"
    assert rule_noise_breaks_zero_variance({"0": {"constant": 1e-3, "bridge": 1e-25}}) == "refuted"
    assert rule_noise_breaks_zero_variance({"0": {"constant": 1e-3, "bridge": 1e-12}}) == "inconclusive"
    assert rule_noise_breaks_zero_variance({}) == "inconclusive"
    # NaN in a non-first position (the builtin min() returned 1e-3 and confirmed)
    assert rule_noise_breaks_zero_variance({"0": {"constant": 1e-3, "bridge": 1e-3},
                                            "180": {"constant": NAN, "bridge": NAN}}) == "refuted"
    assert rule_noise_breaks_zero_variance({"0": {"constant": 1e-3, "bridge": NAN}}) == "refuted"


def test_rule_variance_from_mismatch_reaches_every_outcome() -> None:
    rel_ok = {"0": 0.0, "180": 1e-16}
    assert rule_variance_from_mismatch({"30": 2.0, "180": 50.0}, rel_ok) == "confirmed"
    assert rule_variance_from_mismatch({"30": 2.0, "180": 1e-25}, rel_ok) == "refuted"  # a mismatch without variance
    assert rule_variance_from_mismatch({"30": 2.0}, {"0": 0.0, "30": 1e-3}) == "refuted"  # pair-optimal not zero
    assert rule_variance_from_mismatch({"30": 2.0, "180": 1e-9}, rel_ok) == "inconclusive"
    assert rule_variance_from_mismatch({}, rel_ok) == "inconclusive"  # no non-zero angle: nothing is mismatched
    assert rule_variance_from_mismatch({"30": 2.0, "180": NAN}, rel_ok) == "refuted"
    assert rule_variance_from_mismatch({"30": 2.0}, {"0": 0.0, "30": NAN}) == "refuted"
