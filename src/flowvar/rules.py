"""Generic verdict rules: pure functions from evidence numbers to a verdict.

Every claim's verdict is computed by a rule that is a pure function of the evidence recorded beside it, so a
referee can re-apply it to ``result.json`` and a unit test can feed it synthetic evidence for each outcome.
Experiment-specific rules live in their experiment module and are built from these where they fit.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from flowvar.results import Verdict

EXACT_ZERO_TOL = 1e-12
"""A computed zero of an identity (a float64 loss, a loss floor) counts as broken above this; the zero-loss field's
float64 rounding stays far below it (prop2's identities; its exact minimisers' floors of 1e-35)."""


def exact_zero(value: float) -> bool:
    """Whether a computed non-negative quantity is 0 to float64 rounding (|value| ≤ :data:`EXACT_ZERO_TOL`). An exact
    minimiser's loss floor L*(σ) of 1e-35 is such a zero: no scale to divide by and no level to draw. A value below
    −:data:`EXACT_ZERO_TOL` is a defect, not a zero (a loss cannot be negative), and NaN is no zero either."""
    return abs(value) <= EXACT_ZERO_TOL


def below(value: float, *, confirm_below: float, refute_above: float) -> Verdict:
    """An error that should vanish: "confirmed" if ``value`` < ``confirm_below``, "refuted" if ``value`` >
    ``refute_above`` or not finite (NaN or ±inf: a computation that failed is evidence against — an error of −inf is
    no more a vanishing error than +inf), "inconclusive" in between.

    ``confirm_below`` ≤ ``refute_above`` is required (the band between them is the inconclusive zone).
    """
    if not confirm_below <= refute_above:
        raise ValueError(f"confirm_below ({confirm_below}) must not exceed refute_above ({refute_above})")
    if not math.isfinite(value):
        return "refuted"
    if value < confirm_below:
        return "confirmed"
    return "refuted" if value > refute_above else "inconclusive"


def above(value: float, *, confirm_above: float, refute_below: float) -> Verdict:
    """A quantity that should be positive: "confirmed" if ``value`` > ``confirm_above``, "refuted" if ``value``
    < ``refute_below`` or not finite (NaN or ±inf: an overflowed or failed computation, never a confirmation),
    "inconclusive" in between; ``refute_below`` ≤ ``confirm_above`` is required."""
    if not refute_below <= confirm_above:
        raise ValueError(f"refute_below ({refute_below}) must not exceed confirm_above ({confirm_above})")
    if not math.isfinite(value):
        return "refuted"
    if value > confirm_above:
        return "confirmed"
    return "refuted" if value < refute_below else "inconclusive"


def at_every_setting(holds: Mapping[str, bool], *, identity: bool = False) -> Verdict:
    """A statement checked at several settings: "confirmed" if it holds at every one, "refuted" if at none,
    "inconclusive" if at some (the map is the evidence) or when there is no setting at all.

    ``identity=True`` for a universal, deterministic statement (an identity: each setting is computed exactly, not
    sampled): one setting where it fails is a counterexample, so "refuted" if it fails at any setting; still
    "confirmed" only at every one and "inconclusive" with none."""
    if not holds:
        return "inconclusive"
    n = sum(bool(v) for v in holds.values())
    if n == len(holds):
        return "confirmed"
    return "refuted" if n == 0 or identity else "inconclusive"


def all_of(*verdicts: Verdict) -> Verdict:
    """Conjunction of sub-verdicts: "confirmed" if all are, "refuted" if any is, else "inconclusive"."""
    if any(v == "refuted" for v in verdicts):
        return "refuted"
    return "confirmed" if verdicts and all(v == "confirmed" for v in verdicts) else "inconclusive"


__all__ = ["EXACT_ZERO_TOL", "above", "all_of", "at_every_setting", "below", "exact_zero"]
