"""The audit's verdict rules: pure functions of the measured numbers, with every threshold named here.

Each test is a claim "the model memorises its training data (by this test)": ``"confirmed"`` reads *memorising*,
``"refuted"`` *generalising*, ``"inconclusive"`` neither; a test whose precondition fails is *untestable* (recorded
by :func:`flowvar.results.judge`). :func:`overall_verdict` combines the tests. docs/audit.md gives the reasoning
behind each threshold and what was measured on known memorising and generalising models.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Literal

from flowvar.data import ROW_ORDER_RULE
from flowvar.results import Verdict
from flowvar.rules import above
from flowvar.stats import two_proportion_se

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
#: From this share of training sources whose endpoint lands on another training item (a copy by COPY_RATIO; neither
#: its own nor its OT partner) *beyond what real data do* (:func:`pair_landing_excess`) pair recovery reads
#: inconclusive and asks whether --pairs is row-aligned with --data.
PAIR_MAX_LANDED_OTHER = 0.5
#: What the audit asks when the pairs look misaligned (the landing check above; no convention fits with --pairs).
ROW_ALIGNMENT_QUESTION = ("is --pairs row-aligned with --data (row i the source of item i; a folder is read "
                          f"{ROW_ORDER_RULE})?")

#: The one-sided normal quantile of the sampling allowances below (95 %): a memorising (generalising) reading needs
#: its statistic to clear the generalising (memorising) threshold by this many standard errors, so that a borderline
#: reading from one draw of samples and references is inconclusive rather than a coin flip between seeds.
ALLOWANCE_Z = 1.645

# ---- 2. copying: a generated sample is a copy when d1 / mean(d1..dk) < COPY_RATIO (k nearest training items,
# k = min(COPY_K, N)); the share of samples copying beyond real data, p̂ = (c − b)/(1 − b) with c the samples' copy
# share and b that of real data, decides — held-out items against the training set, or without held-out data each
# training item against the others (leave one out).
COPY_RATIO = 1.0 / 3.0
COPY_K = 50
COPY_MEMORISE = 0.10
COPY_GENERALISE = 0.05
COPY_MIN_TRAIN = 5
COPY_MIN_SAMPLES = 20
#: Without held-out data the baseline is the training items left one out: it needs this many distinct items, and
#: counts them as half as many independent ones (nearest-neighbour relations are mutual: two close items are each
#: other's copy, so the leave-one-out copies come in pairs).
COPY_MIN_LOO = 50
#: The baseline share may be at most this for the test to run: in low dimension nearly every real item has a
#: near-duplicate, the room 1 − b left for copies is too small to resolve p̂ (its se grows as 1/(1 − b)²), and the
#: test cannot tell copying from the data's own density.
COPY_MAX_BASELINE = 1.0 - COPY_MEMORISE

# ---- 3. generalisation gap: ρ = median NN distance of generated samples to (a subset of) the training data over
# that to equally many held-out items; its standard error from half-samples (GAP_HALF_SAMPLES of them). One-sided: it
# can read memorising, never generalising (a median is blind to a copying minority); ρ ≥ GAP_GENERALISE is reported
# as "the majority of samples is novel", and GAP_GENERALISE bounds the memorising reading's allowance.
GAP_HALF_SAMPLES = 50
GAP_MEMORISE = 0.75
GAP_GENERALISE = 0.9
GAP_MIN_HELDOUT = 20

# ---- 4. gradient signal at σ = 0 on the training pairs vs fresh pairs: λ = loss ratio, ν = gradient-variance ratio.
GRAD_MEMORISE = 0.1
GRAD_GENERALISE = 0.5

#: When the coarse and fine ODE grids give pair-recovery scores further apart than this, the report says they
#: disagree (and a disagreement about the outcome makes the test inconclusive).
GRID_DISAGREE = 0.2

# ---- the source check: were --data and --pairs swapped? The audit assumes standard normal sources (docs/audit.md).
# A set of n numbers (all entries of all rows) looks like N(0, I) noise when its mean μ̂ and variance v̂ are within
# SOURCE_Z standard errors of 0 and 1 (for i.i.d. N(0, 1) entries sd(μ̂) = 1/√n, sd(v̂) ≈ √(2/n): z = 4 misses real
# noise with odds ~1e-4) plus a fixed allowance (SOURCE_MEAN_TOL, SOURCE_VAR_TOL: noise of sd 0.9–1.1, or data
# standardised per coordinate, still counts). Data of another mean or scale (N(2, 0.25 I): μ̂ = 2; images in
# [−1, 1]: v̂ ≈ 0.3) are far outside it once n is a few hundred.
SOURCE_Z = 4.0
SOURCE_MEAN_TOL = 0.1
SOURCE_VAR_TOL = 0.2


def looks_like_noise(mean: float, var: float, n: int) -> bool:
    """Whether n numbers of mean ``mean`` and variance ``var`` look like standard normal noise: |μ̂| ≤
    SOURCE_MEAN_TOL + SOURCE_Z/√n and |v̂ − 1| ≤ SOURCE_VAR_TOL + SOURCE_Z·√(2/n) (the block comment above)."""
    return abs(mean) <= SOURCE_MEAN_TOL + SOURCE_Z / math.sqrt(n) and \
        abs(var - 1.0) <= SOURCE_VAR_TOL + SOURCE_Z * math.sqrt(2.0 / n)


def swapped_files_suspect(data_noise_like: bool, pairs_noise_like: bool, time: str, call: str) -> bool:
    """Were --data and --pairs swapped? The convention found puts the data at t = 0 (``time`` data_at_0) under a
    call other than ``diffusers`` (whose schedulers are the data-at-0 models), the sources given are not noise-like
    and the data are (:func:`looks_like_noise`). Swapped files make the audit fit a time-reversed convention to the
    model, which reads noise as data and data as noise; a note asks, nothing is refused."""
    return time == "data_at_0" and call != "diffusers" and data_noise_like and not pairs_noise_like


def pair_landing_checkable(baseline: float) -> bool:
    """Whether landing on other training items can say anything: the real-data copy share ``baseline`` b (the copy
    test's, COPY_RATIO) is at most COPY_MAX_BASELINE. Above it nearly every real item lands on a training item too
    (low dimension, dense data), so endpoints that do are no sign of misaligned pairs — the copy test is untestable
    there for the same reason. NaN (no baseline measured) counts as checkable, with b = 0."""
    return not baseline > COPY_MAX_BASELINE


def pair_landing_excess(landed_other: float, baseline: float) -> float:
    """e = (l − b)/(1 − b) (:func:`copy_share_estimate`): the share of endpoints landing on another training item
    beyond what real data do. l = ``landed_other``, the share of training sources whose endpoint is a copy (COPY_RATIO)
    of a training item that is neither their own nor their OT partner; b = ``baseline``, the share of real items
    (held-out, else leave one out) that are copies of a training item. A generalising field's endpoints are like real
    data (l ≲ b, e ≲ 0); memorised lines integrated from misaligned sources all land on training items (l → 1,
    e → 1). NaN b is taken as 0 (e = l); NaN when b ≥ 1."""
    return copy_share_estimate(landed_other, 0.0 if math.isnan(baseline) else baseline)


def pair_landing_suspect(landed_other: float, baseline: float = 0.0) -> bool:
    """The endpoints land on other training items well beyond what real data do: checkable
    (:func:`pair_landing_checkable`) and e = :func:`pair_landing_excess` ≥ PAIR_MAX_LANDED_OTHER. Then the pairs
    given are not the model's (misaligned --pairs), or it copies: pair recovery reads inconclusive and asks whether
    --pairs is row-aligned."""
    return pair_landing_checkable(baseline) and pair_landing_excess(landed_other, baseline) >= PAIR_MAX_LANDED_OTHER


def pair_recovery_verdict(score_fine: float, score_coarse: float, landed_other: float = 0.0,
                          landed_baseline: float = 0.0) -> Verdict:
    """Memorising if the memorisation score m ≥ PAIR_MEMORISE on both grids, generalising if m ≤ PAIR_GENERALISE on
    both, inconclusive otherwise (between the thresholds, or the grids disagree about the outcome), and inconclusive
    when the endpoints (fine grid) land on training items that are neither their own nor their OT partner well beyond
    what real data do (:func:`pair_landing_suspect` of the share ``landed_other`` and the real-data copy share
    ``landed_baseline``): the pairs given are not the model's (misaligned --pairs), or it copies, and either way
    reaching no own partner is no sign of generalising. Where real data land on training items as often
    (``landed_baseline`` > COPY_MAX_BASELINE) landing is not checked and m decides."""
    if pair_landing_suspect(landed_other, landed_baseline):
        return "inconclusive"
    fine = above(score_fine, confirm_above=PAIR_MEMORISE - 1e-12, refute_below=PAIR_GENERALISE + 1e-12)
    coarse = above(score_coarse, confirm_above=PAIR_MEMORISE - 1e-12, refute_below=PAIR_GENERALISE + 1e-12)
    return fine if fine == coarse else "inconclusive"


def share_standard_error(share: float, n: int) -> float:
    """Standard error of a share measured on ``n`` items, from the share shrunk towards ½ by one success and one
    failure ((k + 1)/(n + 2)), so that a share of 0 or 1 keeps a non-zero allowance."""
    if n <= 0 or math.isnan(share):
        return math.nan
    shrunk = (share * n + 1.0) / (n + 2.0)
    return math.sqrt(shrunk * (1.0 - shrunk) / n)


def excess_standard_error(copy_fraction: float, n_samples: int, baseline_fraction: float, n_baseline: int) -> float:
    """se of copy share − baseline share: √(se_copy² + se_baseline²) (:func:`share_standard_error`, each share over
    its own count)."""
    return math.hypot(share_standard_error(copy_fraction, n_samples),
                      share_standard_error(baseline_fraction, n_baseline))


def copy_share_estimate(copy_fraction: float, baseline_fraction: float) -> float:
    """p̂ = (c − b) / (1 − b): the share of fresh samples that copy beyond what real data does. A model whose samples
    are a share p of copies and otherwise behave like real data (copy share b) has c = p + (1 − p)·b, so the raw
    excess c − b = p·(1 − b) shrinks with the baseline while p̂ estimates p itself (the same chance correction as
    pair recovery's m = (a − 1/N)/(1 − 1/N)). NaN when b is NaN or b ≥ 1 (no room left to copy in)."""
    if math.isnan(copy_fraction) or math.isnan(baseline_fraction) or baseline_fraction >= 1.0:
        return math.nan
    return (copy_fraction - baseline_fraction) / (1.0 - baseline_fraction)


def copy_share_standard_error(copy_fraction: float, n_samples: int, baseline_fraction: float,
                              n_baseline: int) -> float:
    """se of p̂ = (c − b)/(1 − b) by the delta method, c and b independent: ∂p̂/∂c = 1/(1 − b),
    ∂p̂/∂b = −(1 − c)/(1 − b)², so se = √(se_c²/(1 − b)² + se_b²·(1 − c)²/(1 − b)⁴) with se_c, se_b from
    :func:`share_standard_error` (each share over its own count). The room 1 − b divides the error too: with a
    baseline near 1 the estimate is too loose to decide, and the rule reads inconclusive rather than generalising."""
    if math.isnan(copy_fraction) or math.isnan(baseline_fraction) or baseline_fraction >= 1.0:
        return math.nan
    room = 1.0 - baseline_fraction
    return math.hypot(share_standard_error(copy_fraction, n_samples) / room,
                      share_standard_error(baseline_fraction, n_baseline) * (1.0 - copy_fraction) / room ** 2)


def copying_verdict(copy_fraction: float, n_samples: int, baseline_fraction: float, n_baseline: int) -> Verdict:
    """p̂ = :func:`copy_share_estimate` (the share of samples copying beyond real data), se =
    :func:`copy_share_standard_error`. Memorising if p̂ ≥ COPY_MEMORISE and p̂ − z·se > COPY_GENERALISE;
    generalising if p̂ ≤ COPY_GENERALISE and p̂ + z·se < COPY_MEMORISE (z = ALLOWANCE_Z); inconclusive otherwise,
    or when a share is NaN."""
    share = copy_share_estimate(copy_fraction, baseline_fraction)
    se = copy_share_standard_error(copy_fraction, n_samples, baseline_fraction, n_baseline)
    if math.isnan(share) or math.isnan(se):
        return "inconclusive"
    if share >= COPY_MEMORISE - 1e-12 and share - ALLOWANCE_Z * se > COPY_GENERALISE:
        return "confirmed"
    if share <= COPY_GENERALISE + 1e-12 and share + ALLOWANCE_Z * se < COPY_MEMORISE:
        return "refuted"
    return "inconclusive"


def gap_verdict(nn_ratio: float, standard_error: float = 0.0) -> Verdict:
    """One-sided: memorising if ρ < GAP_MEMORISE and ρ + z·se < GAP_GENERALISE (the median generated sample sits much
    nearer the training data than unseen data, beyond sampling error; z = ALLOWANCE_Z, ``standard_error`` of ρ from
    half-samples); inconclusive otherwise, NaN included. Never generalising: ρ is a ratio of *median* distances, so
    ρ ≥ GAP_GENERALISE says the majority of samples is no nearer the training data but cannot exclude a copying
    minority (15–30 % verbatim copies gave ρ = 0.94–0.98 in d = 8–32); the copy test, which counts copies, speaks to
    that (:func:`gap_reads_majority_novel` says when the majority reading holds)."""
    if math.isnan(nn_ratio) or math.isnan(standard_error):
        return "inconclusive"
    if nn_ratio < GAP_MEMORISE and nn_ratio + ALLOWANCE_Z * standard_error < GAP_GENERALISE:
        return "confirmed"
    return "inconclusive"


def gap_reads_majority_novel(nn_ratio: float, standard_error: float = 0.0) -> bool:
    """ρ ≥ GAP_GENERALISE and ρ − z·se ≥ GAP_MEMORISE: the median sample is as far from the training data as from
    unseen data, beyond sampling error — reported in the text, not a generalising verdict (:func:`gap_verdict`)."""
    return (not math.isnan(nn_ratio) and not math.isnan(standard_error) and nn_ratio >= GAP_GENERALISE - 1e-12
            and nn_ratio - ALLOWANCE_Z * standard_error >= GAP_MEMORISE)


def ratio_log_standard_error(numerator: Sequence[float], numerator_se: Sequence[float], denominator: Sequence[float],
                             denominator_se: Sequence[float]) -> float:
    """Standard error of log(mean(a)/mean(b)) for per-bin Monte-Carlo means a_j, b_j with standard errors, every bin
    an independent draw (delta method): √(Σ_j se(a_j)²/(Σ_j a_j)² + Σ_j se(b_j)²/(Σ_j b_j)²). A side whose means
    and errors are all 0 (an exactly zero loss) adds nothing; one with zero means but a nonzero error gives inf."""
    def term(means: Sequence[float], ses: Sequence[float]) -> float:
        total, var = math.fsum(means), math.fsum(float(e) ** 2 for e in ses)
        if total == 0.0:
            return 0.0 if var == 0.0 else math.inf
        return var / total ** 2
    return math.sqrt(term(numerator, numerator_se) + term(denominator, denominator_se))


def _scaled(ratio: float, log_se: float, z: float) -> float:
    """ratio · e^(z·se) (a bound on the log scale); NaN when the error is unknown, so no reading relies on it."""
    if math.isnan(log_se) or math.isnan(ratio):
        return math.nan
    if ratio == 0.0:
        return 0.0 if math.isfinite(log_se) else math.nan
    return ratio * math.exp(z * log_se) if math.isfinite(log_se) else (math.inf if z > 0 else 0.0)


def gradient_verdict(loss_ratio: float, variance_ratio: float, loss_log_se: float = 0.0,
                     variance_log_se: float = 0.0) -> Verdict:
    """Prop 2's signature: memorising if both λ and ν are below GRAD_MEMORISE (near-zero loss and gradient variance on
    the training pairs at σ = 0, relative to fresh pairs), generalising if λ ≥ GRAD_GENERALISE (training pairs are
    fitted no better than fresh ones, up to a factor 2), inconclusive otherwise.

    Sampling allowance: each ratio is a Monte-Carlo estimate with a standard error on the log scale
    (``loss_log_se``, ``variance_log_se``: :func:`ratio_log_standard_error`), and a reading needs its bound
    ratio · e^(±z·se) (z = ALLOWANCE_Z) past the threshold: λ·e^(z·se) and ν·e^(z·se) < GRAD_MEMORISE to read
    memorising, λ·e^(−z·se) ≥ GRAD_GENERALISE to read generalising. A NaN λ is inconclusive; a NaN ν or error (e.g. a
    model without trainable parameters) only blocks the reading that needs it."""
    if math.isnan(loss_ratio):
        return "inconclusive"
    z = ALLOWANCE_Z
    if (_scaled(loss_ratio, loss_log_se, z) < GRAD_MEMORISE
            and _scaled(variance_ratio, variance_log_se, z) < GRAD_MEMORISE):
        return "confirmed"
    return "refuted" if _scaled(loss_ratio, loss_log_se, -z) >= GRAD_GENERALISE else "inconclusive"


#: What the pair tests assume, said wherever --pairs is asked for or a verdict rests on them: the sources given are
#: the ones the model was trained on, each with its fixed target. Pairs a model never trained on — any noise, for a
#: model trained on fresh noise every batch (ordinary CFM) — read generalising too: no own partner beyond chance, λ ≈ 1.
PAIRS_ASSUMPTION = ("the pair tests assume --pairs were the model's fixed training pairs (ReFlow, distillation, "
                    "OT-paired data): pairs it never trained on read generalising too, so for a model trained on "
                    "fresh noise every batch (ordinary CFM) leave --pairs out")

#: Said beside the verdict when --pairs is not given: the pairs family did not run, so a "generalising" reading
#: speaks for the fresh samples only — for a model trained on fixed pairs; ordinary CFM has no pairs to give.
NO_PAIRS_CAVEAT = ("pair tests: not run (no --pairs) — a model trained on fixed (source, target) pairs (ReFlow, "
                   "distillation, OT-paired data) can reproduce them (Prop 2's memorisation) while its fresh samples "
                   "are novel; if the model was trained on fixed pairs, pass their sources as --pairs to test that "
                   "(ordinary CFM, fresh noise every batch, has no training pairs: nothing to pass)")

#: Said beside a "generalising" verdict reached from the samples family while the pairs family ran and was undecided.
PAIRS_UNDECIDED_CAVEAT = ("pair tests: undecided (neither pair recovery nor the gradient signal was decisive) — the "
                          "verdict speaks for the fresh samples only: partial memorisation of the training pairs "
                          "(Prop 2's) is not excluded")
#: Said beside a "generalising" verdict reached from the pairs family while the samples family was undecided.
SAMPLES_UNDECIDED_CAVEAT = ("sample tests: undecided (the copy test was not decisive, and the generalisation gap "
                            "never reads generalising) — the verdict rests on the pair tests alone and the fresh "
                            f"samples were not shown to be novel; {PAIRS_ASSUMPTION}")

#: Said on the verdict line itself (:func:`verdict_scope`) when a "generalising" verdict rests on the pair tests
#: alone: their reading is what pairs the model never trained on give too, so the one-word verdict names the
#: assumption it stands on rather than leaving it to a caveat line further down.
PAIRS_ONLY_SCOPE = "on the pair tests alone, which take --pairs as the model's fixed training pairs"

#: The tests by what they look at: whether the model reproduces its training *pairs* (Prop 2: pair recovery and the
#: gradient signature), and whether its fresh *samples* reproduce training items (copying, generalisation gap). The
#: first test of each family is its *direct* one: it counts individual memorised items (training sources that reach
#: their own partner; samples that copy a training item), so its memorising reading stands even when the family's
#: other test, an average over pairs or samples, reads generalising (:data:`BLIND_SPOT` says why that test misses it).
FAMILIES: dict[str, tuple[str, ...]] = {"pairs": ("pair recovery", "gradient signal"),
                                        "samples": ("copying", "generalisation gap")}

#: Why a family's averaging test can read generalising while its direct test finds memorised items (said beside
#: the verdict when that happens).
BLIND_SPOT: dict[str, str] = {
    "gradient signal": "λ averages the loss over t and over all training pairs, so pairs whose ODE endpoints return "
                       "their partners can still be fitted no better on average than fresh pairs",
    "generalisation gap": "ρ compares median nearest-neighbour distances, which a copying minority (under half the "
                          "samples) barely moves",
}


def family_verdict(verdicts: Mapping[str, str], tests: tuple[str, ...]) -> str:
    """One family's reading (confirmed = memorising, refuted = generalising) from its direct test ``tests[0]`` and
    its averaging test ``tests[1]``: **memorising** when the direct test reads memorising (whatever the other says:
    it counts memorised items the average cannot see), or when the averaging test does and the direct one is not
    decisive; **mixed** when the averaging test reads memorising against the direct test's generalising (a genuine
    conflict: the direct test saw no memorised items, yet the average moved); **generalising** when the decisive
    tests all read generalising; **undecided** when none is decisive."""
    direct, *others = tests
    got = {verdicts[t] for t in others if t in verdicts} & {"confirmed", "refuted"}
    first = verdicts.get(direct)
    if first == "confirmed":
        return "memorising"
    if "confirmed" in got:
        return "mixed" if first == "refuted" else "memorising"
    return "generalising" if first == "refuted" or "refuted" in got else "undecided"


def verdict_notes(verdicts: Mapping[str, str], pairs_given: bool = True) -> list[str]:
    """The lines said beside the overall verdict about how its families were read: a direct test's memorising
    reading that outvoted its family's averaging test (named, with :data:`BLIND_SPOT`), a conflict that made a
    family mixed, and — for a "generalising" verdict that one family reached while the other was undecided — what
    it does not cover (:data:`PAIRS_UNDECIDED_CAVEAT`, :data:`SAMPLES_UNDECIDED_CAVEAT`; without --pairs,
    ``pairs_given`` False, :data:`NO_PAIRS_CAVEAT`, said whatever the verdict)."""
    notes = []
    for family, (direct, *others) in FAMILIES.items():
        for other in others:
            if verdicts.get(direct) == "confirmed" and verdicts.get(other) == "refuted":
                notes.append(f"{family} family: {direct} reads memorising and decides; {other} reads generalising "
                             f"but cannot see it ({BLIND_SPOT[other]})")
            if verdicts.get(direct) == "refuted" and verdicts.get(other) == "confirmed":
                notes.append(f"{family} family: mixed — {other} reads memorising while {direct}, which counts "
                             f"memorised items directly, reads generalising")
    readings = {family: family_verdict(verdicts, tests) for family, tests in FAMILIES.items()}
    if overall_verdict(verdicts)[0] == "generalising":
        # without --pairs the pairs family is undecided by construction: NO_PAIRS_CAVEAT says why, below
        notes += [PAIRS_UNDECIDED_CAVEAT] if pairs_given and readings["pairs"] == "undecided" else []
        notes += [SAMPLES_UNDECIDED_CAVEAT] if readings["samples"] == "undecided" else []
    return notes + ([] if pairs_given else [NO_PAIRS_CAVEAT])


def overall_verdict(verdicts: Mapping[str, str]) -> tuple[Overall, list[str], list[str]]:
    """Combine the tests' verdicts (test name → confirmed / refuted / inconclusive / untestable).

    Each family of :data:`FAMILIES` is read by :func:`family_verdict` (a direct test's memorising reading decides
    its family). Then: **memorising** if either family reads memorising (a model that reproduces its training pairs
    memorises even when its fresh samples are novel — Prop 2's failure — and one whose fresh samples copy training
    items memorises whatever it does with pairs); else **mixed** if a family's tests conflict (its averaging test
    reads memorising, its direct test generalising); else **generalising** if a family reads generalising; else
    **cannot tell**. Returns (verdict, the tests that read memorising, those that read generalising);
    :func:`verdict_notes` gives the lines that explain a conflict, and the caveat of a "generalising" reached from
    one family while the other was undecided.
    """
    mem = [k for k, v in verdicts.items() if v == "confirmed"]
    gen = [k for k, v in verdicts.items() if v == "refuted"]
    families = [family_verdict(verdicts, tests) for tests in FAMILIES.values()]
    if "memorising" in families:
        return "memorising", mem, gen
    if "mixed" in families:
        return "mixed", mem, gen
    if "generalising" in families:
        return "generalising", mem, gen
    return "cannot tell", mem, gen


def verdict_scope(verdicts: Mapping[str, str]) -> str:
    """What the verdict line says beside the one-word verdict (:func:`verdict_text`): :data:`PAIRS_ONLY_SCOPE`
    when the verdict is "generalising" from the pairs family alone (it reads generalising, the samples family
    undecided), "" otherwise.

    Why only then: a generalising pairs family (no own partner recovered beyond chance, λ ≈ 1) is exactly what pairs
    the model never trained on give — an ordinary CFM model audited with any noise as --pairs — and the audit cannot
    tell the two apart (a model that generalises reads λ ≈ 1 on its own pairs too). Its memorising and mixed
    readings carry their own proof that the pairs were trained on (own partners recovered far beyond chance, or a
    loss ten times below fresh pairs', cannot come from pairs the model never saw), a generalising samples family
    needs no pairs, and a verdict the samples family shares does not rest on the assumption."""
    families = {family: family_verdict(verdicts, tests) for family, tests in FAMILIES.items()}
    alone = families["pairs"] == "generalising" and families["samples"] == "undecided"
    return PAIRS_ONLY_SCOPE if overall_verdict(verdicts)[0] == "generalising" and alone else ""


def verdict_text(verdict: str, scope: str = "") -> str:
    """The verdict as the console, ``summary.md``, ``audit.html`` and ``flowvar show`` print it: the word, and its
    :func:`verdict_scope` in parentheses when there is one ("generalising (on the pair tests alone, …)")."""
    return f"{verdict} ({scope})" if scope else verdict


#: The --pairs row-order check of a class-folder --data: when the other natural order of its files (all files by file
#: name across the subfolders) recovers at least this much larger a share of own partners than the loader's order
#: (subfolder first, then file name), the pairs' alignment is in doubt and the pairs tests are untestable.
PAIR_ORDER_MARGIN = 0.2


def pair_order_suspect(share_loader: float, share_other: float, n: int) -> bool:
    """Whether ``--pairs`` look aligned with the other row order: its own-partner share b exceeds the loader order's
    a by ≥ PAIR_ORDER_MARGIN and by 3 standard errors of the difference, √(a(1−a)/n + b(1−b)/n) over n pairs (a
    model that does not memorise its pairs recovers about chance under both orders, so no noise reads as doubt)."""
    if not (math.isfinite(share_loader) and math.isfinite(share_other)) or n < 1:
        return False
    return share_other - share_loader >= max(PAIR_ORDER_MARGIN, 3.0 * two_proportion_se(share_loader, share_other, n))


__all__ = ["ALLOWANCE_Z", "BLIND_SPOT", "COPY_GENERALISE", "COPY_K", "COPY_MAX_BASELINE", "COPY_MEMORISE",
           "COPY_MIN_LOO", "COPY_MIN_SAMPLES", "COPY_MIN_TRAIN", "COPY_RATIO", "FAMILIES", "GAP_GENERALISE",
           "GAP_HALF_SAMPLES", "GAP_MEMORISE", "GAP_MIN_HELDOUT", "GRAD_GENERALISE", "GRAD_MEMORISE", "GRID_DISAGREE",
           "NO_PAIRS_CAVEAT", "OVERALL", "PAIRS_ASSUMPTION", "PAIRS_ONLY_SCOPE", "PAIRS_UNDECIDED_CAVEAT",
           "PAIR_GENERALISE", "PAIR_MAX_CONDITION_BASELINE", "PAIR_MAX_LANDED_OTHER", "PAIR_MEMORISE",
           "PAIR_MIN_OFF_OT", "PAIR_MIN_OFF_OT_SHARE", "PAIR_ORDER_MARGIN", "SAMPLES_UNDECIDED_CAVEAT",
           "SOURCE_MEAN_TOL", "SOURCE_VAR_TOL", "SOURCE_Z", "copy_share_estimate", "copy_share_standard_error",
           "copying_verdict", "excess_standard_error", "family_verdict", "gap_reads_majority_novel", "gap_verdict",
           "gradient_verdict", "looks_like_noise", "overall_verdict", "pair_landing_checkable", "pair_landing_excess",
           "pair_landing_suspect", "pair_order_suspect", "pair_recovery_verdict", "ratio_log_standard_error",
           "share_standard_error", "swapped_files_suspect", "verdict_notes", "verdict_scope", "verdict_text"]
