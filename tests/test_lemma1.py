"""Experiment lemma1: every claim rule on synthetic evidence, for each outcome it can return and for NaN inputs."""

from __future__ import annotations

import math

from flowvar.experiments.lemma1 import (
    rule_endpoint_distribution,
    rule_endpoints_are_ot_partners,
    rule_velocity_on_ot_lines,
)

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
