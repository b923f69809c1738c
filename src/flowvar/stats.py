"""Comparing two sets of repeated estimates (PAPER.md §1.2: R = 30 repeats, one-sided tests at α = 0.01).

:func:`compare` runs a one-sided (or two-sided) Welch t-test and a Mann–Whitney U test on samples ``a`` and
``b`` (e.g. two arrays from :func:`flowvar.variance.repeated_estimates`) and reports effect sizes. The paper
reports "p < 0.01" without naming its test; we call a difference significant only when **both** tests
give p < α. :func:`mean_ci` is the t-interval of a mean.

Conventions: ``alternative="less"`` tests H1: a is smaller than b (Welch: mean_a < mean_b; Mann–Whitney:
a stochastically smaller). Standard deviations use ddof = 1.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Literal, TypeVar

import numpy as np
from scipy import special
from scipy import stats as sps

from flowvar.errors import ConfigError, DataError, ShapeError

Alternative = Literal["less", "greater", "two-sided"]
ALTERNATIVES: tuple[str, ...] = ("less", "greater", "two-sided")
T = TypeVar("T")


@dataclass
class Comparison:
    """Two-sample comparison of ``a`` (``label_a``) against ``b`` (``label_b``).

    * ``welch_t``, ``welch_df``, ``welch_p``: Welch's unequal-variance t-test
      (``scipy.stats.ttest_ind(a, b, equal_var=False, alternative=...)``), t = (ā − b̄)/√(s_a²/n_a + s_b²/n_b).
    * ``mwu_u``, ``mwu_p``: Mann–Whitney U of ``a`` (U_a = #{a_i > b_j} + ½ #{a_i = b_j}) and its p-value
      (``scipy.stats.mannwhitneyu``, exact for small samples without ties, else normal approximation).
    * ``cohens_d`` = (ā − b̄)/s_p with pooled s_p² = ((n_a − 1)s_a² + (n_b − 1)s_b²)/(n_a + n_b − 2);
      ``hedges_g`` = J·d with the exact small-sample factor J = Γ(ν/2)/(√(ν/2) Γ((ν − 1)/2)), ν = n_a + n_b − 2
      (≈ 1 − 3/(4ν − 1)).
    * ``prob_superiority`` = U_a/(n_a n_b) = P(A > B) + ½P(A = B), the common-language effect size; under
      ``alternative="less"`` evidence for H1 is a value below ½.
    * ``significant``: both p-values < ``alpha``. ``direction``: how the means compare, e.g. ``"a < b"``.
    * ``notes``: degenerate cases and warnings met on the way (each stated once, never raised as warnings).
    """

    label_a: str
    label_b: str
    alternative: str
    alpha: float
    n_a: int
    n_b: int
    mean_a: float
    mean_b: float
    std_a: float
    std_b: float
    sem_a: float
    sem_b: float
    welch_t: float
    welch_df: float
    welch_p: float
    mwu_u: float
    mwu_p: float
    cohens_d: float
    hedges_g: float
    prob_superiority: float
    significant: bool
    direction: str
    notes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """One line: means ± standard errors, both p-values and the verdict."""
        h1 = {"less": "<", "greater": ">", "two-sided": "≠"}[self.alternative]
        verdict = "significant" if self.significant else "not significant"
        return (f"{self.label_a} = {self.mean_a:.4g} ± {self.sem_a:.2g} vs {self.label_b} = {self.mean_b:.4g} ± "
                f"{self.sem_b:.2g} (mean ± SE, n = {self.n_a}, {self.n_b}); H1: {self.label_a} {h1} {self.label_b}: "
                f"Welch p = {self.welch_p:.3g}, Mann–Whitney p = {self.mwu_p:.3g}, d = {self.cohens_d:.3g} → "
                f"{verdict} at α = {self.alpha}")

    def to_dict(self) -> dict[str, object]:
        """All fields plus ``summary``, ready for :func:`flowvar.results.to_jsonable`."""
        return {**asdict(self), "summary": self.summary()}


@dataclass
class ConfidenceInterval:
    """t-interval of a mean: ``mean`` ± t_{(1+level)/2, n−1} · ``sem``; ``sem`` = s/√n (ddof = 1)."""

    mean: float
    low: float
    high: float
    level: float
    n: int
    sem: float


def _sample(name: str, x: object) -> np.ndarray:
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim != 1:
        raise DataError(f"{name} must be a 1-D sequence of numbers, got shape {arr.shape}; flatten it first")
    if arr.size < 2:
        raise DataError(f"{name} needs at least 2 values for a variance, got {arr.size}; use more repeats")
    bad = int((~np.isfinite(arr)).sum())
    if bad:
        raise DataError(f"{name} holds {bad} non-finite value(s) (NaN/inf, e.g. an undefined normalised variance); "
                        f"drop them or compare a finite statistic")
    return arr


def _level(level: float) -> float:
    if not 0.0 < float(level) < 1.0:
        raise ConfigError(f"confidence level must lie strictly between 0 and 1, got {level}")
    return float(level)


def hedges_correction(df: float) -> float:
    """Exact small-sample factor J(ν) = Γ(ν/2) / (√(ν/2) Γ((ν − 1)/2)) for Hedges' g (ν > 1)."""
    if not df > 1:
        raise ConfigError(f"Hedges' correction needs ν > 1 degrees of freedom, got {df}")
    return math.exp(special.gammaln(df / 2) - 0.5 * math.log(df / 2) - special.gammaln((df - 1) / 2))


def _ratio(num: float, den: float) -> float:
    """num/den with 0/0 = NaN and x/0 = ±inf, without numpy warnings."""
    if den > 0:
        return num / den
    return math.nan if num == 0 else math.copysign(math.inf, num)


def _run_quietly(fn: Callable[[], T], notes: list[str], what: str) -> T:
    """Call ``fn()`` and move any warning it emits into ``notes`` (prefixed by ``what``)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = fn()
    for w in caught:
        msg = f"{what}: {w.message}"
        if msg not in notes:
            notes.append(msg)
    return out


def compare(a: object, b: object, alternative: Alternative = "less", alpha: float = 0.01,
            labels: tuple[str, str] = ("a", "b")) -> Comparison:
    """Compare repeated estimates ``a`` and ``b`` (1-D, n >= 2 each, finite). See :class:`Comparison`.

    ``alternative="less"`` (default) asks whether ``a`` is smaller than ``b``. Degenerate inputs do not
    crash or warn: when both samples are constant the Welch statistic is 0/0 (equal constants: t = NaN,
    p = 1) or ±inf (different constants: p is its limit, 0 or 1), and the case is recorded in ``notes``.
    """
    if alternative not in ALTERNATIVES:
        raise ConfigError(f"unknown alternative {alternative!r}; choose one of {list(ALTERNATIVES)}")
    if not 0.0 < float(alpha) < 1.0:
        raise ConfigError(f"alpha must lie strictly between 0 and 1, got {alpha}")
    la, lb = str(labels[0]), str(labels[1])
    xa, xb = _sample(la, a), _sample(lb, b)
    na, nb = xa.size, xb.size
    ma, mb = float(xa.mean()), float(xb.mean())
    sa, sb = float(xa.std(ddof=1)), float(xb.std(ddof=1))
    notes: list[str] = []
    diff = ma - mb

    if np.ptp(xa) == 0 and np.ptp(xb) == 0:
        welch_df = math.nan
        if diff == 0:
            welch_t, welch_p = math.nan, 1.0
            notes.append("both samples are constant and equal: no evidence of a difference (Welch t is 0/0; p set "
                         "to 1)")
        else:
            welch_t = math.copysign(math.inf, diff)
            welch_p = {"less": float(diff > 0), "greater": float(diff < 0), "two-sided": 0.0}[alternative]
            notes.append("both samples are constant with different values: Welch t is infinite and p is its limit")
    else:
        res = _run_quietly(lambda: sps.ttest_ind(xa, xb, equal_var=False, alternative=alternative), notes,
                           "Welch t-test")
        welch_t, welch_p, welch_df = float(res.statistic), float(res.pvalue), float(res.df)
    mwu = _run_quietly(lambda: sps.mannwhitneyu(xa, xb, alternative=alternative), notes, "Mann–Whitney U")
    u, mwu_p = float(mwu.statistic), float(mwu.pvalue)

    df = na + nb - 2
    pooled = math.sqrt(((na - 1) * sa**2 + (nb - 1) * sb**2) / df)
    d = _ratio(diff, pooled)
    if math.isnan(d):
        notes.append("pooled standard deviation is 0 and the means are equal: Cohen's d and Hedges' g are 0/0 "
                     "(NaN)")
    significant = bool(welch_p < alpha and mwu_p < alpha)
    direction = f"{la} < {lb}" if diff < 0 else f"{la} > {lb}" if diff > 0 else f"{la} = {lb}"
    return Comparison(
        label_a=la, label_b=lb, alternative=alternative, alpha=float(alpha), n_a=na, n_b=nb, mean_a=ma, mean_b=mb,
        std_a=sa, std_b=sb, sem_a=sa / math.sqrt(na), sem_b=sb / math.sqrt(nb), welch_t=welch_t, welch_df=welch_df,
        welch_p=welch_p, mwu_u=u, mwu_p=mwu_p, cohens_d=d, hedges_g=d * hedges_correction(df),
        prob_superiority=u / (na * nb), significant=significant, direction=direction, notes=notes,
    )


def mean_ci(x: object, level: float = 0.95) -> ConfidenceInterval:
    """Student-t confidence interval of the mean of ``x`` (1-D, n >= 2, finite): x̄ ± t_{(1+level)/2, n−1} s/√n."""
    level = _level(level)
    arr = _sample("x", x)
    n = arr.size
    mean = float(arr.mean())
    sem = float(arr.std(ddof=1)) / math.sqrt(n)
    half = float(sps.t.ppf((1 + level) / 2, n - 1)) * sem
    return ConfidenceInterval(mean=mean, low=mean - half, high=mean + half, level=level, n=n, sem=sem)


@dataclass
class SeedComparison:
    """A paired comparison over training seeds, the unit of replication for trained models.

    ``differences`` holds Δ_s = a_s − b_s, one per seed (each a_s, b_s a per-seed summary, e.g. the mean over that
    seed's images). With n = #seeds ≥ 2, ``mean`` = Δ̄, ``sd`` = s (ddof = 1), and the one-sided (1 − α) bounds
    ``lower`` = Δ̄ − t_{1−α, n−1} s/√n and ``upper`` = Δ̄ + t_{1−α, n−1} s/√n. The claim "a exceeds b by at least
    ``min_effect``" (an absolute size, stated relative to ``scale`` in ``scale_name``) gets

    * "confirmed" when ``lower`` > 0 (a > b at level α) and Δ̄ ≥ ``min_effect``;
    * "refuted" when ``upper`` < ``min_effect`` (the data exclude an effect of the size the claim needs,
      including any effect in the other direction);
    * "inconclusive" otherwise, and always with one seed (no between-seed variance to judge by).

    Both comparisons with ``min_effect`` are made up to :func:`boundary_tolerance` (floating-point rounding only):
    seeds that all show 1.0 against 0.9 have Δ̄ = 0.09999999999999998 and meet a minimum effect of 0.1.

    **The rule is asymmetric at the minimum effect, on purpose.** The direction (a > b) is tested at level α; the
    size is judged on the estimate Δ̄ (the "significant and relevant" convention: the minimum effect is the smallest
    effect of interest, not a margin the claim is tested against), while a refutation needs the whole upper bound
    below it. So "confirmed" means "a > b at level α, by an estimated ≥ ``min_effect``", not "a − b ≥ ``min_effect``
    at level α". Operating characteristics with 3 seeds, α = 0.05, minimum effect 0.1, normal seed-to-seed spread
    of sd s (measured by tests/test_stats.py::test_paired_over_seeds_operating_characteristics): a true difference
    of exactly 0.1 is confirmed about half the time (s = 0.02: 50 %, s = 0.05: 43 %) and refuted 5 %; a true 0.08 is
    confirmed 4 % (s = 0.02) / 21 % (s = 0.05) and refuted 32 % / 13 %; 0.15 is confirmed 100 % / 91 %. The
    lower-bound rule of superiority-by-a-margin trials (confirm only when ``lower`` ≥ ``min_effect``), symmetric at
    5 % / 5 %, would with 3 seeds (t₀.₉₅,₂ = 2.92: ``lower`` = Δ̄ − 1.69 s) confirm a true 0.15 only 85 % (s = 0.02) /
    32 % (s = 0.05) and a true 0.2 71 % (s = 0.05): it would leave most real effects of a few times the minimum
    "inconclusive" at the seed counts a trained-model study affords. A reader who needs the size at level α reads
    ``lower`` beside the verdict.

    **A discrete per-seed metric** (a proportion k/N, e.g. pairing accuracy over N pairs) has a coarse grid: two or
    three seeds often give identical differences, s = 0, and the bounds collapse on Δ̄, which then refutes or confirms
    with certainty (at N = 16, 2 seeds and a true drop of exactly 0.1, unfloored bounds refuted 14 % of studies, not
    5 %). ``sd_floor`` (:func:`binomial_sd_floor` for proportions) is the smallest seed-to-seed sd the metric can
    honestly show; the bounds use s_eff = max(s, ``sd_floor``) and ``sd`` keeps the observed s. A floor only widens the
    bounds, so it can remove verdicts but never add one (see :func:`binomial_sd_floor` for the measured rates).

    **The bounds assume roughly symmetric per-seed differences.** They are t-bounds over 2–5 seeds; under skewed
    differences (a seed occasionally far off, e.g. one that fails to memorise) they are far from nominal. A statistics
    review (centred lognormal(0, 1) seed noise, skewness ≈ 6, α = 0.05, minimum effect 0.1, 200 000 simulated
    studies per cell) measured at a true difference equal to the minimum effect: "refuted" 18 % (2 seeds) / 23 %
    (3 and 5 seeds) with right-skewed noise, non-inferiority "confirmed" 18–23 %, and with left-skewed noise at a
    true difference of 0, the lower bound above 0 in 18 % / 23 % / 23 % (2 / 3 / 5 seeds) instead of 5 %. Symmetric
    heavy tails are fine or conservative (t₃: 4.0–4.4 %, Cauchy: 2.5–3.3 %); normal noise is exact (4.9–5.1 %). So
    "at one-sided α" is a property of the verdict only where the per-seed differences are not strongly skewed.
    """

    label: str
    differences: list[float]
    n_seeds: int
    mean: float
    sd: float
    lower: float
    upper: float
    alpha: float
    min_effect: float
    scale: float
    scale_name: str
    verdict: str
    reason: str
    #: the smallest mean that counts as reaching ``min_effect``: min_effect − :func:`boundary_tolerance` of the
    #: per-seed operands (equal up to rounding counts as reaching it; 1.0 − 0.9 vs 0.1)
    reach: float
    #: the smallest seed-to-seed sd the bounds use (0: none; :func:`binomial_sd_floor` for a proportion); the bounds
    #: are Δ̄ ± t_{1−α, n−1} · max(``sd``, ``sd_floor``)/√n
    sd_floor: float = 0.0

    def to_dict(self) -> dict[str, object]:
        return asdict(self)

    def mean_reaches_min_effect(self) -> bool:
        """Whether the mean Δ̄ reaches ``min_effect`` up to rounding (Δ̄ ≥ :attr:`reach`) — the size half of
        "confirmed", decided by the same number the verdict used. False for a non-finite mean."""
        return math.isfinite(self.mean) and self.mean >= self.reach

    def effect_text(self) -> str:
        """The minimum effect in words, for :attr:`flowvar.results.Claim.min_effect`."""
        rel = self.min_effect / self.scale if self.scale else math.nan
        return (f"mean {self.label} ≥ {self.min_effect:.3g} ({rel:.3g} × {self.scale:.3g}, {self.scale_name}), "
                f"with {self.label} > 0 at one-sided α = {self.alpha} over {self.n_seeds} seed(s) (refuted when the "
                f"upper bound is below {self.min_effect:.3g})")


def balanced_accuracy(observed: Sequence[bool], predicted: Sequence[bool]) -> float:
    """Balanced accuracy of ``predicted`` against ``observed`` (one bool per case):
    ½ (share of the True cases predicted True + share of the False cases predicted False). A predictor that ignores
    its input scores ½ whatever the classes' sizes, where its plain agreement is the majority class's share. NaN when
    either class is absent (empty lists included). Raises ShapeError for lists of different lengths."""
    if len(observed) != len(predicted):
        raise ShapeError(f"balanced_accuracy: {len(observed)} observed vs {len(predicted)} predicted cases")
    hits_true = [bool(p) for o, p in zip(observed, predicted, strict=True) if o]
    hits_false = [not p for o, p in zip(observed, predicted, strict=True) if not o]
    if not hits_true or not hits_false:
        return math.nan
    return 0.5 * (sum(hits_true) / len(hits_true) + sum(hits_false) / len(hits_false))


def boundary_tolerance(a: np.ndarray, b: np.ndarray, threshold: float) -> float:
    """The rounding tolerance of comparing Δ̄ = mean(a_s − b_s) (n seeds) with ``threshold``:
    (n + 2) · ε · max(|a_s|, |b_s|, |threshold|), ε the float64 machine epsilon (2.2e-16).

    First-order rounding bound, not a tuned margin: each operand (often a decimal such as 0.9) carries a relative
    error ≤ ε/2, each difference a_s − b_s one more rounding, the sum of n differences ≤ (n − 1) roundings and the
    mean one; every error is relative to at most the largest operand. 1.0 − 0.9 = 0.09999999999999998 lies
    2.78e-17 below 0.1, within (3 + 2) · ε · 1.0 = 1.1e-15."""
    largest = max(float(np.max(np.abs(a))) if a.size else 0.0, float(np.max(np.abs(b))) if b.size else 0.0,
                  abs(float(threshold)))
    return (a.size + 2) * float(np.finfo(np.float64).eps) * largest


def binomial_sd_floor(a: object, b: object, trials: int, *, unit: float = 1.0) -> float:
    """The seed-to-seed sd floor of Δ_s = a_s − b_s for per-seed proportions over ``trials`` = N items each (e.g.
    pairing accuracy k/N): √((p̃_a(1 − p̃_a) + p̃_b(1 − p̃_b)) / N) / ``unit`` (:func:`two_proportion_se`), for
    :func:`paired_over_seeds`'s ``sd_floor``, with p̃ = (S·N·p̄ + 1) / (S·N + 2) the pooled proportion p̄ (the mean
    over the arm's S seeds) with one success and one failure added (Agresti & Caffo 2000), so that an arm scoring
    1 (or 0) on every seed does not make its term, and with both arms at 1 the whole floor, vanish. ``unit``: the
    metric's step per unit of proportion when the compared scores are a linear map of the proportions (the
    memorisation score M = (a − 1/N)/(1 − 1/N) has ``unit`` = 1 − 1/N); 1 for the proportions themselves.

    Why this floor. With each item an independent Bernoulli trial given the seed's success rates (p_a,s, p_b,s), the
    law of total variance gives Var(a_s) = E[p_a,s(1 − p_a,s)]/N + Var(p_a,s) = p̄_a(1 − p̄_a)/N + Var(p_a,s)(1 − 1/N)
    ≥ p̄_a(1 − p̄_a)/N, whatever the spread of the rates over seeds; for the difference,
    Var(Δ_s) = floor² + Var(p_a,s − p_b,s) − (Var(p_a,s) + Var(p_b,s))/N, so the floor is the binomial part alone,
    exact where the seed-level rates do not vary and above the true sd only by that last term, 1/N of the seed-level
    variance. An observed s below it (s = 0 on tied seeds) is the grid of k/N, not evidence of less variance. Where
    the floor does exceed the truth (rates that move together over seeds, or the two arms' item outcomes positively
    correlated: the same hard items at both σ) it is conservative — it widens the bounds, which removes verdicts and
    never adds one.

    Measured (acc(0) = 1 in every seed, acc(σ) ~ Bin(N, 1 − m)/N, so the true drop is exactly the minimum effect m,
    α = 0.05; 20 000 simulated studies per cell): "refuted" at N = 16, m = 0.1 is 0 % / 0.6 % / 3.2 % (2 / 3 / 5
    seeds), at N = 64 0 % / 0.4 % / 1.9 %, at N = 256 (3 seeds) 0.3 %; at N = 8, m = 0.1 and at N = 16, m = 0.05
    (2–3 seeds), where acc(σ) = 1 on every seed is frequent, 0 % — a floor from the raw p̄, which vanishes there,
    refuted 8–20 % of these studies, and no floor at all 14 % at N = 16, m = 0.1, 2 seeds. Non-inferiority
    "confirmed" at a true difference equal to the margin 0.1 stays ≤ 0.5 % (N = 16 and 64, 2–3 seeds, success rates
    0–0.95). At or below α everywhere, conservative where the floor binds (it and s estimate the same binomial
    spread, and the larger is used; p̃ leans towards ½ by one trial in S·N + 2, which widens the bounds most at
    small S·N). tests/test_stats.py::test_binomial_floor_holds_the_nominal_rate_on_a_discrete_metric repeats the
    check on 2000 seeded studies per cell. A NaN proportion gives NaN (no floor to state); proportions outside
    [0, 1] or ``trials`` < 1 raise
    ConfigError."""
    if isinstance(trials, bool) or not isinstance(trials, int | np.integer) or trials < 1:
        raise ConfigError(f"trials must be a whole number >= 1 (the items each proportion is over), got {trials!r}")
    if not (math.isfinite(unit) and unit > 0):
        raise ConfigError(f"unit must be a finite number > 0 (the score's step per unit of proportion), got {unit}")
    xa, xb = np.asarray(a, dtype=np.float64).reshape(-1), np.asarray(b, dtype=np.float64).reshape(-1)
    pa, pb = float(np.mean(xa)), float(np.mean(xb))
    if any(not -1e-12 <= p <= 1 + 1e-12 for p in (pa, pb) if math.isfinite(p)):
        raise ConfigError(f"binomial_sd_floor needs proportions in [0, 1] (k/N per seed), got means {pa:.4g} and "
                          f"{pb:.4g}; pass the proportions themselves and the score's step as unit")
    if not (math.isfinite(pa) and math.isfinite(pb)):
        return math.nan

    def adjusted(p: float, seeds: int) -> float:
        # one success and one failure added to the arm's seeds·N pooled trials (Agresti & Caffo 2000): p̄ = 1 on
        # every seed would make p̄(1 − p̄) = 0 and the floor vanish exactly where ties are likeliest
        pooled = seeds * int(trials)
        return (min(max(p, 0.0), 1.0) * pooled + 1.0) / (pooled + 2.0)

    return two_proportion_se(adjusted(pa, xa.size), adjusted(pb, xb.size), int(trials)) / unit


def _spread_note(sd: float, sd_floor: float, rounding: float) -> str:
    """The clause a seed comparison's reason carries about the spread its bounds use: raised to a discrete metric's
    floor, or — when neither the seeds' sd nor a floor exceeds float64 ``rounding`` — bounds that collapsed onto the
    mean. Seeds that agree exactly are right for a deterministic quantity (an exact minimiser's output), but for a
    trained network's metric they say the seeds were not independent replicates, which the reader must be told."""
    if max(sd, sd_floor) <= rounding:
        return (f" (the seeds agree exactly, sd {sd:.2g}, so the bounds are the mean itself: sound for a "
                f"deterministic quantity, no evidence of precision for a sampled one)")
    if sd < sd_floor:
        return f" (the seed-to-seed sd {sd:.3g} raised to the metric's floor {sd_floor:.3g})"
    return ""


def paired_over_seeds(a: object, b: object, *, min_effect: float, scale: float, scale_name: str,
                      alpha: float = 0.05, labels: tuple[str, str] = ("a", "b"),
                      sd_floor: float = 0.0) -> SeedComparison:
    """Judge "a exceeds b by at least ``min_effect``" from one (a_s, b_s) pair per training seed.

    ``a``, ``b``: 1-D, equally long, finite (per-seed summaries, never pooled points). ``min_effect`` ≥ 0 is
    absolute; ``scale`` > 0 (finite) is what it is relative to (reported, e.g. the distance between random pairs).
    ``sd_floor`` ≥ 0: the smallest seed-to-seed sd of the differences the bounds use — pass
    :func:`binomial_sd_floor` when a and b are proportions over N items (a discrete metric, whose ties give s = 0);
    0 (the default) for a continuous metric, whose bounds are then unchanged. See :class:`SeedComparison` for the rule.
    """
    xa = np.asarray(a, dtype=np.float64).reshape(-1)
    xb = np.asarray(b, dtype=np.float64).reshape(-1)
    la, lb = str(labels[0]), str(labels[1])
    if xa.shape != xb.shape or xa.size == 0:
        raise DataError(f"paired_over_seeds needs one value per seed on each side, got {xa.size} and {xb.size}")
    if not (np.isfinite(xa).all() and np.isfinite(xb).all()):
        raise DataError(f"paired_over_seeds: non-finite per-seed values ({la}: {xa.tolist()}, {lb}: {xb.tolist()})")
    if not 0.0 < float(alpha) < 0.5:
        raise ConfigError(f"alpha must lie in (0, 0.5), got {alpha}")
    if not (math.isfinite(min_effect) and min_effect >= 0):
        raise ConfigError(f"min_effect must be a finite number >= 0, got {min_effect}")
    if not (math.isfinite(scale) and scale > 0):
        raise ConfigError(f"scale must be a finite number > 0 (what min_effect is stated relative to, e.g. 1.0 for "
                          f"an absolute effect), got {scale}")
    if not (math.isfinite(sd_floor) and sd_floor >= 0):
        raise ConfigError(f"sd_floor must be a finite number >= 0 (0: no floor), got {sd_floor}")
    diff = xa - xb
    n = int(diff.size)
    mean = float(diff.mean())
    label = f"{la} − {lb}"
    # equal to the minimum effect up to rounding counts as reaching it (1.0 − 0.9 vs 0.1)
    reach = min_effect - boundary_tolerance(xa, xb, min_effect)
    if n < 2:
        return SeedComparison(label, diff.tolist(), n, mean, math.nan, math.nan, math.nan, float(alpha),
                              float(min_effect), float(scale), scale_name, "inconclusive",
                              "one seed: a trained-model comparison needs at least 2 seeds as replicates", reach,
                              float(sd_floor))
    sd = float(diff.std(ddof=1))
    # a discrete metric's ties (s = 0 on two seeds of k/N) are its grid, not a lack of variance: floor it
    half = float(sps.t.ppf(1 - alpha, n - 1)) * max(sd, float(sd_floor)) / math.sqrt(n)
    lower, upper = mean - half, mean + half
    floored = _spread_note(sd, float(sd_floor), boundary_tolerance(xa, xb, 0.0))
    if lower > 0 and mean >= reach:
        verdict, reason = "confirmed", (f"{label} > 0 at one-sided α = {alpha} (lower bound {lower:.3g}) and its "
                                        f"mean {mean:.3g} ≥ the minimum effect {min_effect:.3g}"
                                        + (" (equal up to rounding)" if mean < min_effect else ""))
    elif upper < reach:
        verdict, reason = "refuted", (f"the upper bound {upper:.3g} of {label} is below the minimum effect "
                                      f"{min_effect:.3g}")
    else:
        verdict, reason = "inconclusive", (f"{label} = {mean:.3g} with one-sided bounds [{lower:.3g}, {upper:.3g}]: "
                                           f"neither > 0 with mean ≥ {min_effect:.3g}, nor entirely < {min_effect:.3g}")
    return SeedComparison(label, diff.tolist(), n, mean, sd, lower, upper, float(alpha), float(min_effect),
                          float(scale), scale_name, verdict, reason + floored, reach, float(sd_floor))


@dataclass
class NonInferiority(SeedComparison):
    """A paired non-inferiority comparison over training seeds (see :func:`noninferior_over_seeds`).

    The fields are those of :class:`SeedComparison` with Δ_s = a_s − b_s; ``min_effect`` holds the margin m: the
    claim is "a exceeds b by less than m" (a ≤ b up to a tolerance m, stated relative to ``scale``).
    """

    def effect_text(self) -> str:
        rel = self.min_effect / self.scale if self.scale else math.nan
        return (f"{self.label} < margin {self.min_effect:.3g} ({rel:.3g} × {self.scale:.3g}, {self.scale_name}), at "
                f"one-sided α = {self.alpha} over {self.n_seeds} seed(s)")


def noninferior_over_seeds(a: object, b: object, *, margin: float, scale: float, scale_name: str,
                           alpha: float = 0.05, labels: tuple[str, str] = ("a", "b"),
                           sd_floor: float = 0.0) -> NonInferiority:
    """Judge "a is at most b" (non-inferiority: a − b < ``margin``) from one (a_s, b_s) pair per training seed.

    The mirror of :func:`paired_over_seeds` for claims of the form "≤": with the one-sided (1 − α) bounds of
    Δ̄ = mean(a_s − b_s) (t-interval over the n seeds), "confirmed" when ``upper`` < ``margin`` (the data exclude a
    worsening of the margin's size), "refuted" when ``lower`` > ``margin`` (a exceeds b by more than the margin at
    level α), "inconclusive" otherwise and always with one seed; a bound within :func:`boundary_tolerance` of the
    margin counts as on it (neither). ``margin`` ≥ 0 is absolute; ``scale`` > 0 is what it is relative to (reported);
    ``sd_floor`` as for :func:`paired_over_seeds` (a discrete metric's floor, e.g. :func:`binomial_sd_floor`).
    """
    base = paired_over_seeds(a, b, min_effect=margin, scale=scale, scale_name=scale_name, alpha=alpha, labels=labels,
                             sd_floor=sd_floor)
    if base.n_seeds < 2:
        return NonInferiority(**{**base.to_dict(), "verdict": "inconclusive"})
    # a bound equal to the margin up to rounding is on it: neither below nor above
    tol = boundary_tolerance(np.asarray(a, dtype=np.float64).reshape(-1), np.asarray(b, dtype=np.float64).reshape(-1),
                             margin)
    floored = _spread_note(base.sd, base.sd_floor, boundary_tolerance(np.asarray(a, dtype=np.float64).reshape(-1),
                                                                      np.asarray(b, dtype=np.float64).reshape(-1), 0.0))
    if base.upper < margin - tol:
        verdict, reason = "confirmed", (f"the upper bound {base.upper:.3g} of {base.label} is below the margin "
                                        f"{margin:.3g}{floored}")
    elif base.lower > margin + tol:
        verdict, reason = "refuted", (f"the lower bound {base.lower:.3g} of {base.label} exceeds the margin "
                                      f"{margin:.3g}{floored}")
    else:
        verdict, reason = "inconclusive", (f"{base.label} = {base.mean:.3g} with one-sided bounds [{base.lower:.3g}, "
                                           f"{base.upper:.3g}] straddles the margin {margin:.3g}{floored}")
    return NonInferiority(**{**base.to_dict(), "verdict": verdict, "reason": reason})


def two_proportion_se(p1: float, p2: float, n: int) -> float:
    """Standard error of p1 − p2 for two proportions, each from n Bernoulli trials: √((p1(1 − p1) + p2(1 − p2)) / n)."""
    return math.sqrt(max(p1 * (1 - p1) + p2 * (1 - p2), 0.0) / n)


__all__ = ["ALTERNATIVES", "Comparison", "ConfidenceInterval", "NonInferiority", "SeedComparison", "T",
           "balanced_accuracy", "binomial_sd_floor", "boundary_tolerance", "compare", "hedges_correction", "mean_ci",
           "noninferior_over_seeds", "paired_over_seeds", "two_proportion_se"]
