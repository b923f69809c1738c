"""flowvar.experiments._seed_replicates: training seeds as the replicates of fig6's and solver_resolution's
trained-model claims. Each rule on synthetic evidence for every outcome it can give."""

from __future__ import annotations

import math

import pytest

from flowvar.errors import ConfigError
from flowvar.experiments._seed_replicates import (
    MIN_SEEDS,
    combine_seeds,
    in_every_seed,
    over_seeds,
    per_seed_evidence,
    seeds_rule_text,
    status_over_seeds,
)
from flowvar.metrics import rotation_pairing_status
from flowvar.results import Precondition


def test_combine_seeds_every_outcome() -> None:
    assert MIN_SEEDS == 2
    assert combine_seeds({"seed=0": "confirmed", "seed=1": "confirmed"}) == "confirmed"
    assert combine_seeds({"seed=0": "refuted", "seed=1": "refuted", "seed=2": "refuted"}) == "refuted"
    assert combine_seeds({"seed=0": "confirmed", "seed=1": "refuted"}) == "inconclusive"  # seeds disagree
    assert combine_seeds({"seed=0": "confirmed", "seed=1": "inconclusive"}) == "inconclusive"
    assert combine_seeds({"seed=0": "refuted", "seed=1": "refuted", "seed=2": "inconclusive"}) == "inconclusive"
    assert combine_seeds({"seed=0": "confirmed"}) == "inconclusive"  # one seed is one network
    assert combine_seeds({"seed=0": "refuted"}) == "inconclusive"
    assert combine_seeds({}) == "inconclusive"
    with pytest.raises(ConfigError, match="untestable"):
        combine_seeds({"seed=0": "untestable", "seed=1": "confirmed"})


def test_over_seeds_applies_the_rule_per_seed() -> None:
    def rule(share: float) -> str:  # a per-seed rule that propagates no NaN: NaN compares false both ways
        return "confirmed" if share >= 0.9 else "refuted" if share < 0.7 else "inconclusive"

    assert over_seeds({"seed=0": 0.95, "seed=1": 0.92}, rule).verdict == "confirmed"
    assert over_seeds({"seed=0": 0.5, "seed=1": 0.6}, rule).verdict == "refuted"
    mixed = over_seeds({"seed=0": 0.95, "seed=1": 0.6}, rule)
    assert mixed.verdict == "inconclusive" and mixed.per_seed == {"seed=0": "confirmed", "seed=1": "refuted"}
    assert over_seeds({"seed=0": 0.95}, rule).verdict == "inconclusive"
    assert over_seeds({"seed=0": 0.95, "seed=1": math.nan}, rule).per_seed["seed=1"] == "inconclusive"


def test_status_over_seeds_every_outcome() -> None:
    reproduces, fails = ["reproduces"] * 4, ["fails"] * 4
    both = status_over_seeds({"seed=0": reproduces, "seed=1": reproduces}, "reproduces")
    assert both.verdict == "confirmed" and both.per_seed == {"seed=0": "confirmed", "seed=1": "confirmed"}
    assert status_over_seeds({"seed=0": fails, "seed=1": fails}, "reproduces").verdict == "refuted"
    mixed = status_over_seeds({"seed=0": reproduces, "seed=1": fails}, "reproduces")
    assert mixed.verdict == "inconclusive" and mixed.per_seed == {"seed=0": "confirmed", "seed=1": "refuted"}
    one = status_over_seeds({"seed=0": reproduces}, "reproduces")
    assert one.verdict == "inconclusive" and one.per_seed == {"seed=0": "confirmed"}
    assert status_over_seeds({"seed=0": fails, "seed=1": fails}, "fails").verdict == "confirmed"
    assert status_over_seeds({"seed=0": reproduces, "seed=1": reproduces}, "fails").verdict == "refuted"
    # NaN numbers give 'partial' (evidence neither way): under the majority rule (status_verdict) one partial
    # setting of four does not veto the three that reproduce, half of them does — that seed and the claim are then
    # inconclusive
    nan_status = rotation_pairing_status(math.nan, math.nan, math.nan, math.nan)
    assert nan_status == "partial"
    assert status_over_seeds({"seed=0": reproduces, "seed=1": [*reproduces[:3], nan_status]},
                             "reproduces").verdict == "confirmed"
    assert status_over_seeds({"seed=0": reproduces, "seed=1": [*reproduces[:2], nan_status, nan_status]},
                             "reproduces").verdict == "inconclusive"
    assert status_over_seeds({"seed=0": [], "seed=1": reproduces}, "reproduces").verdict == "inconclusive"


def test_in_every_seed() -> None:
    fitted = Precondition("fitted", True, {"loss": 0.39}, "train longer")
    unfitted = Precondition("fitted", False, {"loss": 1.6}, "train longer")
    both = in_every_seed({"seed=0": fitted, "seed=1": fitted})
    assert both.holds and both.statement == "in every training seed: fitted" and not both.remedy
    assert both.measured == {"seed=0": {"holds": True, "loss": 0.39}, "seed=1": {"holds": True, "loss": 0.39}}
    one_unfitted = in_every_seed({"seed=0": fitted, "seed=1": unfitted})
    assert not one_unfitted.holds and one_unfitted.remedy == "train longer"
    assert one_unfitted.measured["seed=1"] == {"holds": False, "loss": 1.6}
    assert not in_every_seed({"seed=0": unfitted, "seed=1": unfitted}).holds
    assert not in_every_seed({}).holds


def test_per_seed_evidence_and_rule_text() -> None:
    verdicts = status_over_seeds({"seed=3": ["fails"], "seed=4": ["reproduces"]}, "fails")
    evidence = per_seed_evidence({"seed=3": {"x": 1}, "seed=4": {"x": 2}}, verdicts)
    assert evidence["x"] == 1 and evidence["shown_seed"] == "seed=3"
    assert evidence["per_seed"] == {"seed=3": {"x": 1}, "seed=4": {"x": 2}}
    assert evidence["verdict_per_seed"] == {"seed=3": "confirmed", "seed=4": "refuted"}
    text = seeds_rule_text(3)
    assert "3 here" in text and "every one of at least 2 seeds confirms" in text and "single seed" in text
