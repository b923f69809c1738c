"""Experiment counterexample1: the Euler-grid claim rules on synthetic evidence for each outcome they can return (NaN
included), and the failure record read from the solver's real message (rule_single_crossing: test_rules.py)."""

from __future__ import annotations

import math

import pytest
import torch

from flowvar.errors import SolverError
from flowvar.experiments.counterexample1 import (
    failure,
    failure_time,
    rule_even_euler_hits_singularity,
    rule_odd_euler_reproduces_pairs,
)
from flowvar.models import CounterexampleField
from flowvar.sampling import integrate


def test_failure_time_reads_the_solvers_own_message() -> None:
    x0 = torch.randn(8, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    with pytest.raises(SolverError) as caught:
        integrate(CounterexampleField(5.0, 2), x0, method="euler", steps=10)
    assert failure_time(caught.value) == 0.5
    assert failure(caught.value) == "failed: non-finite field at t = 0.5"
    overflow = SolverError("the state overflowed to NaN/Inf during step 3 of 10 (t = 0.2 to 0.3) with "
                           "method='euler' although every field value was finite")
    assert failure_time(overflow) is None and failure(overflow).startswith("failed: the state overflowed")


def test_rule_odd_euler_reproduces_pairs_reaches_every_outcome() -> None:
    assert rule_odd_euler_reproduces_pairs({"euler_11": 1e-13, "euler_101": 1e-12}) == "confirmed"
    assert rule_odd_euler_reproduces_pairs({"euler_11": 1e-13, "euler_101": 1e-5}) == "inconclusive"
    assert rule_odd_euler_reproduces_pairs({"euler_11": 1e-13, "euler_101": 0.5}) == "refuted"
    assert rule_odd_euler_reproduces_pairs({"euler_11": 1e-13, "euler_101": math.inf}) == "refuted"  # it failed
    assert rule_odd_euler_reproduces_pairs({}) == "inconclusive"
    # NaN on the second grid: the builtin max() returned 1e-13 and confirmed
    assert rule_odd_euler_reproduces_pairs({"euler_11": 1e-13, "euler_101": math.nan}) == "refuted"


def test_rule_even_euler_hits_singularity_reaches_every_outcome() -> None:
    assert rule_even_euler_hits_singularity({"euler_10": 0.5, "euler_100": 0.5}) == "confirmed"
    assert rule_even_euler_hits_singularity({"euler_10": None, "euler_100": None}) == "refuted"  # both finished
    # an identity on deterministic grids: one grid that does not stop at ½ is a counterexample, so it refutes
    # (statsR 8: it read "inconclusive" when some grids stopped and others did not)
    assert rule_even_euler_hits_singularity({"euler_10": 0.5, "euler_100": None}) == "refuted"
    assert rule_even_euler_hits_singularity({}) == "inconclusive"
    # a solver error at another time is not the claim's "stops at t = ½" (the old rule counted any SolverError)
    assert rule_even_euler_hits_singularity({"euler_10": 0.3, "euler_100": 0.7}) == "refuted"
    assert rule_even_euler_hits_singularity({"euler_10": 0.5, "euler_100": 0.3}) == "refuted"
    assert rule_even_euler_hits_singularity({"euler_10": 0.5, "euler_100": math.nan}) == "refuted"

