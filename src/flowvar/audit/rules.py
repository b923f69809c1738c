"""The audit's verdict rules: pure functions of the measured numbers, with every threshold named here.

Each test is a claim "the model memorises its training data (by this test)": ``"confirmed"`` reads *memorising*,
``"refuted"`` *generalising*, ``"inconclusive"`` neither; a test whose precondition fails is *untestable* (recorded
by :func:`flowvar.results.judge`). :func:`overall_verdict` combines the tests. docs/audit.md gives the reasoning
behind each threshold and what was measured on known memorising and generalising models.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Literal

from flowvar.results import Verdict
from flowvar.rules import above, below

Overall = Literal["memorising", "generalising", "mixed", "cannot tell"]
OVERALL: tuple[str, ...] = ("memorising", "generalising", "mixed", "cannot tell")

# ---- 1. pair recovery: memorisation score m = (a − 1/N) / (1 − 1/N), a = share of the training sources (among
# those whose own partner is not their OT partner) whose ODE endpoint's nearest training target is their own partner.
PAIR_MEMORISE = 0.5
PAIR_GENERALISE = 0.1
#: The test needs at least this many training pairs whose partner differs from the exact-OT partner, and this share
#: of all pairs (recovering OT pairs is what a generalising OT-like field does too).
PAIR_MIN_OFF_OT = 10
PAIR_MIN_OFF_OT_SHARE = 0.2
#: With continuous conditions the chance level is measured: the share of fresh noise, integrated under a training
#: item's own condition, that ends nearest that item (what the condition alone does). Above this share the condition
#: determines its item (super-resolution, a unique caption per image) and pair recovery cannot tell: untestable.
PAIR_MAX_CONDITION_BASELINE = 0.5

# ---- 2. copying: a generated sample is a copy when d1 / mean(d1..dk) < COPY_RATIO (k nearest training items,
# k = min(COPY_K, N)); the excess share of copies over that of held-out real data (0 without held-out data) decides.
COPY_RATIO = 1.0 / 3.0
COPY_K = 50
COPY_MEMORISE = 0.10
COPY_GENERALISE = 0.05
COPY_MIN_TRAIN = 5
COPY_MIN_SAMPLES = 20

# ---- 3. generalisation gap: ρ = median NN distance of generated samples to (a subset of) the training data over
# that to equally many held-out items.
GAP_MEMORISE = 0.75
GAP_GENERALISE = 0.9
GAP_MIN_HELDOUT = 20

# ---- 4. gradient signal at σ = 0 on the training pairs vs fresh pairs: λ = loss ratio, ν = gradient-variance ratio.
GRAD_MEMORISE = 0.1
GRAD_GENERALISE = 0.5

#: When the coarse and fine ODE grids give pair-recovery scores further apart than this, the report says they
#: disagree (and a disagreement about the outcome makes the test inconclusive).
GRID_DISAGREE = 0.2


def pair_recovery_verdict(score_fine: float, score_coarse: float) -> Verdict:
    """Memorising if the memorisation score m ≥ PAIR_MEMORISE on both grids, generalising if m ≤ PAIR_GENERALISE on
    both, inconclusive otherwise (between the thresholds, or the grids disagree about the outcome)."""
    fine = above(score_fine, confirm_above=PAIR_MEMORISE - 1e-12, refute_below=PAIR_GENERALISE + 1e-12)
    coarse = above(score_coarse, confirm_above=PAIR_MEMORISE - 1e-12, refute_below=PAIR_GENERALISE + 1e-12)
    return fine if fine == coarse else "inconclusive"


def copying_verdict(copy_fraction: float, baseline_fraction: float) -> Verdict:
    """Memorising if the share of generated copies exceeds the held-out baseline by ≥ COPY_MEMORISE, generalising if
    by ≤ COPY_GENERALISE, inconclusive in between (NaN: inconclusive, nothing measured)."""
    excess = copy_fraction - baseline_fraction
    if math.isnan(excess):
        return "inconclusive"
    return above(excess, confirm_above=COPY_MEMORISE - 1e-12, refute_below=COPY_GENERALISE + 1e-12)


def gap_verdict(nn_ratio: float) -> Verdict:
    """Memorising if ρ < GAP_MEMORISE (generated samples sit much nearer the training data than unseen data),
    generalising if ρ ≥ GAP_GENERALISE, inconclusive in between or NaN."""
    if math.isnan(nn_ratio):
        return "inconclusive"
    return below(nn_ratio, confirm_below=GAP_MEMORISE, refute_above=GAP_GENERALISE - 1e-12)


def gradient_verdict(loss_ratio: float, variance_ratio: float) -> Verdict:
    """Prop 2's signature: memorising if both λ and ν are below GRAD_MEMORISE (near-zero loss and gradient variance on
    the training pairs at σ = 0, relative to fresh pairs), generalising if λ ≥ GRAD_GENERALISE (training pairs are
    fitted no better than fresh ones, up to a factor 2), inconclusive otherwise or NaN."""
    if math.isnan(loss_ratio) or math.isnan(variance_ratio):
        return "inconclusive"
    if loss_ratio < GRAD_MEMORISE and variance_ratio < GRAD_MEMORISE:
        return "confirmed"
    return "refuted" if loss_ratio >= GRAD_GENERALISE else "inconclusive"


#: The tests by what they look at: whether the model reproduces its training *pairs* (Prop 2: pair recovery and the
#: gradient signature), and whether its fresh *samples* reproduce training items (copying, generalisation gap).
FAMILIES: dict[str, tuple[str, ...]] = {"pairs": ("pair recovery", "gradient signal"),
                                        "samples": ("copying", "generalisation gap")}


def family_verdict(verdicts: Mapping[str, str], tests: tuple[str, ...]) -> str:
    """One family's reading: memorising / generalising when its decisive tests agree, mixed when they conflict,
    undecided when none is decisive (confirmed = memorising, refuted = generalising)."""
    got = {verdicts[t] for t in tests if t in verdicts} & {"confirmed", "refuted"}
    if got == {"confirmed", "refuted"}:
        return "mixed"
    return "memorising" if got == {"confirmed"} else "generalising" if got == {"refuted"} else "undecided"


def overall_verdict(verdicts: Mapping[str, str]) -> tuple[Overall, list[str], list[str]]:
    """Combine the tests' verdicts (test name → confirmed / refuted / inconclusive / untestable).

    Each family of :data:`FAMILIES` is read by :func:`family_verdict`. Then: **mixed** if a family's own tests
    conflict; else **memorising** if either family reads memorising (a model that reproduces its training pairs
    memorises even when its fresh samples are novel — Prop 2's failure — and one whose fresh samples copy training
    items memorises whatever it does with pairs); else **generalising** if a family reads generalising; else
    **cannot tell**. Returns (verdict, the tests that read memorising, those that read generalising).
    """
    mem = [k for k, v in verdicts.items() if v == "confirmed"]
    gen = [k for k, v in verdicts.items() if v == "refuted"]
    families = [family_verdict(verdicts, tests) for tests in FAMILIES.values()]
    if "mixed" in families:
        return "mixed", mem, gen
    if "memorising" in families:
        return "memorising", mem, gen
    if "generalising" in families:
        return "generalising", mem, gen
    return "cannot tell", mem, gen


__all__ = ["COPY_GENERALISE", "COPY_K", "COPY_MEMORISE", "COPY_MIN_SAMPLES", "COPY_MIN_TRAIN", "COPY_RATIO",
           "FAMILIES", "GAP_GENERALISE", "GAP_MEMORISE", "GAP_MIN_HELDOUT", "GRAD_GENERALISE", "GRAD_MEMORISE",
           "GRID_DISAGREE", "OVERALL", "PAIR_GENERALISE", "PAIR_MEMORISE", "PAIR_MIN_OFF_OT",
           "PAIR_MIN_OFF_OT_SHARE", "copying_verdict", "family_verdict", "gap_verdict", "gradient_verdict",
           "overall_verdict", "pair_recovery_verdict"]
