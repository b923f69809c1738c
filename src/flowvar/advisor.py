"""The σ advisor's rule: which interpolant noise σ stops CFM from memorising its training pairs without hurting
generalisation (PAPER.md §2 Prop 2 / Remark 2, §3.4–3.5, §4 "GMM" and "Images").

Prop 2: on N fixed pairs with the deterministic interpolant (σ = 0) a zero-loss field exists and ODE integration
from a training source returns its own partner, whatever the pairing. Remark 2: noise x_t = (1−t)x0 + t x1 + σz
removes that solution; how much σ it takes depends on σ against the spacing of the training lines (the exact
minimiser starts losing pairs between σ / spacing 0.37 and 0.49:
:data:`~flowvar.experiments._exact_minimiser.SIGMA_OVER_SPACING_ONSET`), and too much σ blurs the learnt
distribution. The advisor weighs both sides as functions of σ by a stated rule:

* :func:`advise_over_seeds` — **the advisor's rule**, seed-level: each σ judged against σ = 0 over training seeds
  (paired non-inferiority of G, an upper confidence bound on M), with the outcomes recommended / undecided (add
  seeds) / none (with a flagged fallback or the trade-off) / untestable (σ = 0 did not memorise: Prop 2's premise
  fails in this setting, :func:`untestable_fix` says what to change) / no data; :func:`seed_rule_text` — that rule
  in words; :func:`judge_sigma` — one σ's judgement; :func:`seeds_needed` — a planning estimate for "add seeds".
* :func:`recommend_sigma` / :func:`fallback_sigma` — the former point rule on a per-σ table of means (kept for
  tables without per-seed scores; it ranks σ by seed noise when the means differ by less than their spread, referee
  A1); :func:`rule_text` — that rule in words; :func:`gen_tolerance` — the generalisation slack τ.

The scores come from :func:`flowvar.metrics.evaluate_outputs` (per σ, means over seeds):

* memorisation M(σ) = (a − 1/N) / (1 − 1/N), a = pairing accuracy of Euler outputs from the N training sources (the
  fraction whose nearest training target is their own partner). M = 0 at chance, 1 for perfect pairing.
* generalisation G(σ) = unbiased MMD² (RBF, one median-heuristic bandwidth of the held-out data shared by every σ)
  between outputs from fresh sources and held-out real data; lower is better, 0 in expectation for a perfect model.

The experiment ``flowvar run sigma_tradeoff`` (:mod:`flowvar.experiments.sigma_tradeoff`) measures them and applies
the rule; ``flowvar advise-sigma --data PATH`` (:func:`flowvar.advise.advise_sigma`) runs it on a user's data.

Why this module is long: the seed-level rule and the former point rule (kept for per-σ tables without seeds) share
their margins, tolerance and wording helpers, and every outcome's headline and reason are composed here so that the
CLI, result.json and the report read one text; splitting them would scatter one rule over several modules.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from scipy import stats as sps

from flowvar.errors import ConfigError
from flowvar.metrics import GEN_KEY, MEM_KEY, memorisation_score
from flowvar.results import Precondition
from flowvar.stats import SeedComparison, binomial_sd_floor, noninferior_over_seeds, paired_over_seeds

SIGMA_OVER_SPACING_ONSET: tuple[float, float] = (0.37, 0.49)
"""(low, high): where the exact CFM(σ) minimiser starts losing its training pairs, in σ / the median line spacing
(:func:`flowvar.metrics.line_spacing`). Measured on the exact minimiser's pairing accuracy at the 300 (d, N, σ > 0,
seed) points of ``results/full/memorisation_phase`` (GMM targets in d ∈ {2, 3, 10, 50}, N = 16 … 4096,
σ = 0.01 … 0.5, 512 training sources each): no point with σ / spacing below 0.37 loses ≥ 0.1 of its pairs (the
first that does is at 0.376, d = 2), and every point above 0.49 does (the last that keeps them is at 0.485, d = 10).
σ√d / spacing separates nothing across d: drops start at 0.53 in d = 2, while d = 10 keeps its pairs up to 1.53 and
d = 50 up to 1.09 — the posterior weight of another line at simultaneous distance s is about exp(−s² / 2σ²), a
function of σ alone (:func:`flowvar.experiments.prop2.noise_reach_precondition`). The published sigma_tradeoff runs
(d = 8) agree: no loss at 0.45–0.49 (N = 64), 0.28–0.45 of the pairs lost at 0.60–0.61 (N = 256).
``tests/test_exact_minimiser_onset.py`` recomputes both edges from the stored points. An explanation of the exact
minimiser's check, never a rule: the check itself measures the claim's effect on the exact minimiser."""


def noise_scale_text(sigma: float, spacing: float) -> str:
    """σ against the median line ``spacing`` and the measured onset, in words: "σ = 0.5 is 0.164 of the median line
    spacing 3.04, and the exact CFM(σ) minimiser starts losing pairs between σ / spacing 0.37 and 0.49, measured over
    d = 2 … 50 in results/full/memorisation_phase" (:data:`SIGMA_OVER_SPACING_ONSET`)."""
    low, high = SIGMA_OVER_SPACING_ONSET
    where = (f"σ = {sigma:g} is {sigma / spacing:.3g} of the median line spacing {spacing:.3g}"
             if math.isfinite(spacing) and spacing > 0 else f"the median line spacing is {spacing:g} at σ = {sigma:g}")
    return (f"{where}, and the exact CFM(σ) minimiser starts losing pairs between σ / spacing {low:g} and {high:g}, "
            f"measured over d = 2 … 50 in results/full/memorisation_phase")


def closer_lines_remedy(sigma: float, spacing: float | None, sigma_sqrt_d: float | None = None) -> str:
    """A failed noise check's remedy: training lines close enough for σ to act — a median line spacing of at most
    about σ / (the onset's upper edge), which more pairs N or a lower d reach — with the budget for σ = 0 to memorise
    there; with the numbers when ``spacing`` is known (:func:`noise_scale_text`), and ``sigma_sqrt_d``, when given,
    named as what does not decide it (PAPER.md §4 [D]'s tube radius: a reader comparing it with the spacing would
    otherwise conclude the opposite, e.g. σ√d = 6.93 against a spacing of 3.04 where σ / spacing is 0.16)."""
    budget = "with the training budget for σ = 0 to memorise there"
    if spacing is None or not math.isfinite(spacing):
        return f"closer training lines (more pairs N or a lower d shrink their spacing), {budget}"
    high = SIGMA_OVER_SPACING_ONSET[1]
    tube = (f"; σ√d = {sigma_sqrt_d:.3g}, the noise tube radius of PAPER.md §4 [D], does not predict it across d"
            if sigma_sqrt_d is not None and math.isfinite(sigma_sqrt_d) else "")
    return (f"closer training lines: a median line spacing of at most about σ / {high:g} = {sigma / high:.3g} (more "
            f"pairs N or a lower d shrink it), {budget} ({noise_scale_text(sigma, spacing)}{tube})")


DEFAULT_SIGMAS: tuple[float, ...] = (0.0, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5)
"""The σ grid of the study (0 is the deterministic baseline; 0.05 is the paper's noisy setting)."""

# --------------------------------------------------------------------------------------------- the rule


def finite_number(value: Any) -> bool:
    """Whether ``value`` is a finite int or float (not a bool): a score the rule can use."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def gen_tolerance(best: float, gen_margin: float, gen_floor: float = 0.0) -> float:
    """The generalisation slack τ = max(gen_margin · max(G*, 0), gen_floor) above the best score G*.

    The relative part is the stated margin; the absolute floor is a margin too: 2 × the RMS of the null MMD² between
    independent real samples, "what two real samples differ by" (a relative margin of a value near 0 would otherwise
    shrink to nothing). It is not the noise of G (the null sd is that at MMD = 0 and misses training noise); the
    seed-level rule (:func:`advise_over_seeds`) takes G's noise from the spread over seeds.
    """
    return max(gen_margin * max(best, 0.0), gen_floor)


def rule_text(gen_margin: float, mem_margin: float, gen_floor: float = 0.0, *, gen_name: str = "G",
              mem_name: str = "M") -> str:
    """The rule of :func:`recommend_sigma` (and its fallback) in one paragraph, with the margins filled in."""
    return (f"Let G* = min over σ of the generalisation score {gen_name}(σ) (lower is better) and "
            f"τ = max({gen_margin:g} · max(G*, 0), {gen_floor:.3g}) (relative margin {gen_margin:g}, absolute noise "
            f"floor {gen_floor:.3g}). Among the σ with {gen_name}(σ) ≤ G* + τ, recommend the smallest σ whose "
            f"memorisation score {mem_name}(σ) = (pairing accuracy − 1/N)/(1 − 1/N) is ≤ {mem_margin:g} (within "
            f"{mem_margin:g} of chance on the 0 = chance … 1 = perfect-pairing scale). Rows with a non-finite score "
            f"are left out. If no σ qualifies there is no recommendation by the rule; the flagged fallback (not a "
            f"recommendation) is the σ with the smallest {mem_name} among those with {gen_name}(σ) ≤ G* + τ (ties: "
            f"the smaller σ), given only if its {mem_name} is at least reduce_margin below {mem_name}(0); otherwise "
            f"there is no fallback, and the smallest σ that does cut {mem_name} is named with its {gen_name} cost.")


def _clean(table: Sequence[Mapping[str, Any]], gen_key: str, mem_key: str) -> tuple[list[Mapping[str, Any]], list[Any]]:
    """Rows sorted by σ with finite scores, and the σ of the rows left out. Raises ConfigError on a bad table."""
    if not isinstance(table, Sequence) or isinstance(table, str | bytes):
        raise ConfigError(f"the per-σ table must be a list of rows (mappings), got {type(table).__name__}")
    rows, dropped, seen = [], [], set()
    for k, row in enumerate(table):
        if not isinstance(row, Mapping) or "sigma" not in row or gen_key not in row or mem_key not in row:
            raise ConfigError(f"row {k} of the per-σ table must be a mapping with keys 'sigma', {gen_key!r} and "
                              f"{mem_key!r}, got {row!r}")
        sigma = row["sigma"]
        if not finite_number(sigma) or sigma < 0:
            raise ConfigError(f"row {k} of the per-σ table has sigma={sigma!r}; σ must be a finite number >= 0")
        if sigma in seen:
            raise ConfigError(f"the per-σ table lists σ = {sigma} twice; average the rows of one σ first")
        seen.add(sigma)
        if finite_number(row[gen_key]) and finite_number(row[mem_key]):
            rows.append(row)
        else:
            dropped.append(sigma)
    rows.sort(key=lambda r: float(r["sigma"]))
    return rows, sorted(dropped)


def _check_margins(gen_margin: float, mem_margin: float, gen_floor: float) -> None:
    if not finite_number(gen_margin) or gen_margin < 0:
        raise ConfigError(f"gen_margin must be a finite number >= 0 (a relative margin, e.g. 0.25), got {gen_margin!r}")
    if not finite_number(mem_margin) or not 0 <= mem_margin < 1:
        raise ConfigError(f"mem_margin must be in [0, 1) (distance from chance on the 0 … 1 memorisation scale, e.g. "
                          f"0.05), got {mem_margin!r}")
    if not finite_number(gen_floor) or gen_floor < 0:
        raise ConfigError(f"gen_floor must be a finite number >= 0, got {gen_floor!r}")


def _qualified(rows: list[Mapping[str, Any]], gen_key: str, gen_margin: float,
               gen_floor: float) -> tuple[list[Mapping[str, Any]], float, float]:
    best = min(float(r[gen_key]) for r in rows)
    tol = gen_tolerance(best, gen_margin, gen_floor)
    return [r for r in rows if float(r[gen_key]) <= best + tol], best, tol


def recommend_sigma(table: Sequence[Mapping[str, Any]], gen_margin: float, mem_margin: float, *,
                    gen_floor: float = 0.0, gen_key: str = GEN_KEY, mem_key: str = MEM_KEY
                    ) -> tuple[float | None, str]:
    """The advisor's rule on a per-σ table; returns (σ or None, the reason in words).

    ``table``: rows (any order) with ``"sigma"``, a generalisation score ``table[i][gen_key]`` (lower is better) and a
    memorisation score ``table[i][mem_key]`` (0 = chance, 1 = perfect pairing). With G* = min_σ G(σ) and
    τ = max(gen_margin · max(G*, 0), gen_floor), the σ that *generalise* are those with G(σ) ≤ G* + τ; the answer
    is the smallest of them with M(σ) ≤ ``mem_margin``. None when no σ qualifies (see :func:`fallback_sigma`) or no
    row has finite scores. Rows with a non-finite score are left out (and named in the reason).
    """
    _check_margins(gen_margin, mem_margin, gen_floor)
    rows, dropped = _clean(table, gen_key, mem_key)
    note = f" (left out for non-finite scores: σ = {', '.join(f'{s:g}' for s in dropped)})" if dropped else ""
    if not rows:
        return None, f"no σ has finite scores{note}; nothing to recommend"
    good, best, tol = _qualified(rows, gen_key, gen_margin, gen_floor)
    gen_list = ", ".join(f"{float(r['sigma']):g}" for r in good)
    for r in good:
        if float(r[mem_key]) <= mem_margin:
            sigma = float(r["sigma"])
            return sigma, (f"σ = {sigma:g} is the smallest σ with memorisation {float(r[mem_key]):.3g} ≤ "
                           f"{mem_margin:g} among the σ whose generalisation is within τ = {tol:.3g} of the best "
                           f"{best:.3g} (σ ∈ {{{gen_list}}}){note}")
    low = min(good, key=lambda r: float(r[mem_key]))
    last = rows[-1]
    hint = (f"; even the largest σ of the grid (σ = {float(last['sigma']):g}) has memorisation "
            f"{float(last[mem_key]):.3g} > {mem_margin:g}: memorisation may stop at a larger σ (extend sigmas) if "
            f"generalisation allows" if float(last[mem_key]) > mem_margin else "")
    return None, (f"no σ satisfies both margins: the σ whose generalisation is within τ = {tol:.3g} of the best "
                  f"{best:.3g} (σ ∈ {{{gen_list}}}) all have memorisation > {mem_margin:g} (lowest "
                  f"{float(low[mem_key]):.3g} at σ = {float(low['sigma']):g}){hint}{note}")


def fallback_sigma(table: Sequence[Mapping[str, Any]], gen_margin: float, *, gen_floor: float = 0.0,
                   reduce_margin: float = 0.1, gen_key: str = GEN_KEY, mem_key: str = MEM_KEY
                   ) -> tuple[float | None, str]:
    """The flagged fallback when :func:`recommend_sigma` finds nothing: among the σ whose generalisation is within
    τ of the best (as in the rule), the one with the smallest memorisation score (ties: the smaller σ) — but only if
    it lowers memorisation by at least ``reduce_margin`` below the table's smallest σ (σ = 0, the baseline):
    M(σ_0) − M(σ) ≥ ``reduce_margin``. A σ that does not cut memorisation is no answer to "which σ stops
    memorising" (an argmin of M among values that all sit near 1 only ranks noise, or picks the smaller σ on a tie).

    Returns (σ or None, the reason). None when no row has finite scores, or when no σ within τ cuts memorisation;
    the reason then names the smallest σ of the grid that does cut it (by ``reduce_margin``) with its generalisation
    cost G(σ) − G*, as a trade-off for the user to weigh, not a recommendation."""
    _check_margins(gen_margin, 0.0, gen_floor)
    if not finite_number(reduce_margin) or not 0 < reduce_margin <= 1:
        raise ConfigError(f"reduce_margin must be in (0, 1] (a drop on the 0 … 1 memorisation scale, e.g. 0.1), got "
                          f"{reduce_margin!r}")
    rows, _ = _clean(table, gen_key, mem_key)
    if not rows:
        return None, "no σ has finite scores; no fallback either"
    good, best, tol = _qualified(rows, gen_key, gen_margin, gen_floor)
    base = rows[0]
    m_base, s_base = float(base[mem_key]), float(base["sigma"])
    low = min(good, key=lambda r: (float(r[mem_key]), float(r["sigma"])))
    sigma = float(low["sigma"])
    if m_base - float(low[mem_key]) >= reduce_margin:
        return sigma, (f"FALLBACK, not a σ meeting both margins: σ = {sigma:g} lowers memorisation from "
                       f"{m_base:.3g} (σ = {s_base:g}) to {float(low[mem_key]):.3g} (by ≥ reduce_margin = "
                       f"{reduce_margin:g}), the lowest among the σ whose generalisation is within τ = {tol:.3g} of "
                       f"the best {best:.3g}")
    cutters = [r for r in rows if m_base - float(r[mem_key]) >= reduce_margin]
    text = (f"no fallback either: no σ whose generalisation is within τ = {tol:.3g} of the best {best:.3g} lowers "
            f"memorisation by ≥ reduce_margin = {reduce_margin:g} below M = {m_base:.3g} at σ = {s_base:g} (the "
            f"lowest there is {float(low[mem_key]):.3g} at σ = {sigma:g})")
    if cutters:
        cut = cutters[0]
        g_cut = float(cut[gen_key])
        text += (f"; the smallest σ that does cut memorisation is σ = {float(cut['sigma']):g} (memorisation "
                 f"{float(cut[mem_key]):.3g}) at a generalisation cost: G = {g_cut:.3g}, {g_cut - best:+.3g} "
                 f"against the best (τ = {tol:.3g}) — a trade-off to weigh, not a recommendation")
    else:
        text += "; no σ of the grid cuts memorisation by that much (extend sigmas)"
    return None, text


# --------------------------------------------------------------------------------------------- the seed-level rule

Outcome = str
"""advise_over_seeds' outcome: "recommended" | "undecided" | "none" | "untestable" | "no_data"."""
STILL_FALLING_RATIO = 0.9
"""σ = 0's training loss is *still falling* when the mean of its last quarter of steps is below this fraction of the
quarter before's (``loss_late_over_previous`` < 0.9: more than 10 % lost in the last quarter of the run)."""
FIT_LOSS_RATIO = 0.1
"""σ = 0's training loss is *well below the zero field's* (the fit got somewhere) when its last 5 % is at most this
fraction of E‖x1 − x0‖², the loss of the field v = 0 (``loss_last_relative_to_zero_field``); a memorising σ = 0 fit
goes towards 0 (≈ 0.002 in the published runs)."""
MAX_SEEDS_ESTIMATE = 200
"""seeds_needed answers None (more than this many) beyond it: the margin is then out of reach by seeds alone."""


def memorisation_bounds(accuracy: Sequence[float], n_train: int, alpha: float) -> tuple[float, float, float]:
    """(mean, lower, upper) of the memorisation score M = (a − 1/N)/(1 − 1/N) over seeds, one-sided level 1 − α each.

    Two sources of error are allowed for, and the wider bound of the two is kept on each side:

    * seeds: the t-bound of the mean of the per-seed M_s (n ≥ 2 seeds), M̄ ± t_{1−α, n−1} s/√n;
    * counting (binomial in N per seed; dominant at small N, where one pair moves M by ≈ 1/N): the one-sided
      Clopper–Pearson bounds of the pooled pairing accuracy K/(n·N), K = Σ_s round(a_s N) hits, mapped to M.

    ``accuracy``: finite per-seed pairing accuracies (diverged seeds removed first). With one seed the bounds are NaN
    (one training run cannot be replicated: the caller treats it as undecided)."""
    n = len(accuracy)
    scores = [memorisation_score(a, n_train) for a in accuracy]
    mean = sum(scores) / n if n else math.nan
    if n < 2:
        return mean, math.nan, math.nan
    sd = math.sqrt(sum((m - mean) ** 2 for m in scores) / (n - 1))
    half = float(sps.t.ppf(1 - alpha, n - 1)) * sd / math.sqrt(n)
    trials = n * n_train
    hits = sum(round(a * n_train) for a in accuracy)
    a_low = float(sps.beta.ppf(alpha, hits, trials - hits + 1)) if hits > 0 else 0.0
    a_up = float(sps.beta.ppf(1 - alpha, hits + 1, trials - hits)) if hits < trials else 1.0
    # M lies in [−1/(N − 1), 1]: a t-bound can overshoot it when every seed is at the edge
    return (mean, max(min(mean - half, memorisation_score(a_low, n_train)), memorisation_score(0.0, n_train)),
            min(max(mean + half, memorisation_score(a_up, n_train)), 1.0))


def seeds_needed(mean: float, sd: float, margin: float, alpha: float, have: int) -> int | None:
    """Seeds at which the one-sided (1 − α) t-bound of a mean ``mean`` with per-seed spread ``sd`` would clear
    ``margin`` (mean + t_{1−α, n−1} sd/√n < margin), if mean and spread stay as measured: the smallest such
    n > ``have``. A planning figure, not a promise (3 seeds estimate sd poorly). None when the mean is not below
    the margin, the spread is unknown, or more than :data:`MAX_SEEDS_ESTIMATE` seeds would be needed."""
    if not (math.isfinite(mean) and math.isfinite(sd)) or mean >= margin or sd <= 0:
        return None
    for n in range(max(have + 1, 2), MAX_SEEDS_ESTIMATE + 1):
        if mean + float(sps.t.ppf(1 - alpha, n - 1)) * sd / math.sqrt(n) < margin:
            return n
    return None


@dataclass
class SigmaJudgement:
    """One σ judged against σ = 0 over training seeds by :func:`judge_sigma`.

    * memorisation: ``mem_mean`` and one-sided (1 − α) bounds ``mem_lower``/``mem_upper`` of M
      (:func:`memorisation_bounds`); ``mem_side`` "within" (upper ≤ mem_margin), "above" (lower > mem_margin) or
      "undecided";
    * generalisation: ``gen_comparison`` (:func:`flowvar.stats.noninferior_over_seeds` of d_s = G_s(σ) − G_s(0)
      against τ; empty for σ = 0, the reference); ``gen_side`` "within" (upper < τ), "worse" (lower > τ) or
      "undecided" (σ = 0 is "within" by definition);
    * ``passes_on_means``: mean M ≤ mem_margin and mean d < τ (what the point rule would accept);
    * ``verdict``: "passes" (both within), "fails" (above or worse), "undecided" otherwise;
    * ``seeds_needed``: for an undecided σ that passes on the means, about how many seeds would decide it
      (:func:`seeds_needed`, the larger over the undecided sides), else None.
    """

    sigma: float
    n_seeds: int
    mem_mean: float
    mem_lower: float
    mem_upper: float
    mem_side: str
    gen_difference: float
    gen_upper: float
    gen_lower: float
    gen_side: str
    passes_on_means: bool
    verdict: str
    seeds_needed: int | None = None
    gen_comparison: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def text(self) -> str:
        """One line: M with its bounds, d = G(σ) − G(0) with its bounds, the verdict."""
        gen = ("reference" if self.sigma == 0 else
               f"G − G(0) = {self.gen_difference:+.3g} [{self.gen_lower:+.3g}, {self.gen_upper:+.3g}] {self.gen_side}")
        return (f"σ = {self.sigma:g}: M = {self.mem_mean:.3g} [{self.mem_lower:.3g}, {self.mem_upper:.3g}] "
                f"{self.mem_side}; {gen} → {self.verdict}")


def _seed_values(rows: Sequence[Mapping[str, Any]], key: str) -> list[float]:
    return [float(r[key]) if finite_number(r.get(key)) else math.nan for r in rows]


def judge_sigma(sigma: float, rows: Sequence[Mapping[str, Any]], zero_rows: Sequence[Mapping[str, Any]],
                n_train: int, tolerance: float, mem_margin: float, alpha: float, *, gen_key: str = GEN_KEY
                ) -> SigmaJudgement:
    """Judge one σ from its per-seed rows and σ = 0's (same seeds, same order; each row holds ``pairing_accuracy``
    and ``gen_key``; non-finite seeds are left out). Memorisation: :func:`memorisation_bounds` against
    ``mem_margin``; generalisation: non-inferiority of G(σ) − G(0) against ``tolerance`` = τ over the seeds where
    both are finite. See :class:`SigmaJudgement`."""
    if len(rows) != len(zero_rows):
        raise ConfigError(f"σ = {sigma:g} has {len(rows)} seed row(s) but σ = 0 has {len(zero_rows)}; the per-seed "
                          f"tables must list the same seeds")
    acc = [a for a in _seed_values(rows, "pairing_accuracy") if math.isfinite(a)]
    mem_mean, mem_low, mem_up = memorisation_bounds(acc, n_train, alpha) if acc else (math.nan,) * 3
    mem_side = ("within" if mem_up <= mem_margin else "above" if mem_low > mem_margin else "undecided") \
        if math.isfinite(mem_up) else "undecided"
    g, g0 = _seed_values(rows, gen_key), _seed_values(zero_rows, gen_key)
    keep = [(x, y) for x, y in zip(g, g0, strict=True) if math.isfinite(x) and math.isfinite(y)]
    comparison: dict[str, Any] = {}
    if sigma == 0:
        diff, low, up, gen_side, gen_sd = 0.0, 0.0, 0.0, "within", 0.0
    elif not keep:
        diff, low, up, gen_side, gen_sd = math.nan, math.nan, math.nan, "undecided", math.nan
    else:
        ni = noninferior_over_seeds([x for x, _ in keep], [y for _, y in keep], margin=tolerance,
                                    scale=tolerance if tolerance > 0 else 1.0, scale_name="τ", alpha=alpha,
                                    labels=(f"G(σ={sigma:g})", "G(σ=0)"))
        comparison = ni.to_dict()
        diff, low, up, gen_sd = ni.mean, ni.lower, ni.upper, ni.sd
        gen_side = {"confirmed": "within", "refuted": "worse"}.get(ni.verdict, "undecided")
    on_means = math.isfinite(mem_mean) and mem_mean <= mem_margin and (sigma == 0 or (math.isfinite(diff)
                                                                                      and diff < tolerance))
    verdict = ("passes" if mem_side == gen_side == "within" else
               "fails" if mem_side == "above" or gen_side == "worse" else "undecided")
    need = None
    if verdict == "undecided" and on_means:
        needs = []
        if mem_side == "undecided":
            # per-seed spread of M, at least the binomial counting spread of one seed's M
            scores = [(a - 1 / n_train) / (1 - 1 / n_train) for a in acc]
            sd = math.sqrt(sum((m - mem_mean) ** 2 for m in scores) / (len(scores) - 1)) if len(scores) > 1 else 0.0
            a_bar = mem_mean * (1 - 1 / n_train) + 1 / n_train
            binom = math.sqrt(max(a_bar * (1 - a_bar), 1 / n_train) / n_train) / (1 - 1 / n_train)
            needs.append(seeds_needed(mem_mean, max(sd, binom), mem_margin, alpha, len(acc)))
        if gen_side == "undecided":
            needs.append(seeds_needed(diff, gen_sd, tolerance, alpha, len(keep)))
        need = None if any(n is None for n in needs) else max(needs)
    return SigmaJudgement(float(sigma), len(acc), mem_mean, mem_low, mem_up, mem_side, diff, up, low, gen_side,
                          bool(on_means), verdict, need, comparison)


@dataclass
class SeedAdvice:
    """What :func:`advise_over_seeds` returns.

    * ``outcome``: "recommended" (``sigma`` is the smallest σ passing both margins with confidence whose noise check,
      if given, holds), "undecided"
      (no σ passes with confidence but some σ is not excluded either: ``candidates``, those passing on the means
      first, and ``seeds_needed`` for the first of them when it can be estimated: add seeds), "none" (every σ fails
      one margin with confidence; ``fallback_sigma`` may name a σ that cuts memorisation within τ, flagged, and
      ``trade_off`` the smallest σ that cuts memorisation with its generalisation cost), "untestable" (σ = 0 did not
      memorise its pairs in every seed — Prop 2's premise fails in this setting, so no σ is judged an answer; the
      reason names the fix, :func:`untestable_fix`), "no_data" (no σ finite);
    * ``unattributed_cut``: the smallest σ whose memorisation drop is confirmed over seeds in the trained networks
      although its exact CFM(σ) minimiser keeps the pairs (the noise cannot act there: its drop is not a cut by the
      noise, and the claim that it reduces memorisation is untestable), with the numbers; None when there is none;
    * ``tolerance`` τ = max(gen_margin · max(mean G(0), 0), gen_floor), ``gen_reference`` = mean G(0);
    * ``judgements``: one :class:`SigmaJudgement` per σ (ascending); ``reason``: the answer in words;
      ``headline``: the answer in one line, saying what happened (a terminal's first line).
    """

    outcome: Outcome
    sigma: float | None
    fallback_sigma: float | None
    candidates: list[float]
    seeds_needed: int | None
    trade_off: dict[str, Any] | None
    tolerance: float
    gen_reference: float
    judgements: list[SigmaJudgement]
    reason: str
    headline: str = ""
    unattributed_cut: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["judgements"] = [j.to_dict() for j in self.judgements]
        return out


def seed_rule_text(gen_margin: float, mem_margin: float, gen_floor: float, alpha: float, reduce_margin: float, *,
                   noise_check: bool = False) -> str:
    """The rule of :func:`advise_over_seeds` in one paragraph, with the margins filled in; ``noise_check``: the
    caller passes ``noise_can_act`` (the exact-minimiser check), which the paragraph then states."""
    check = (" The noise check, for every σ > 0: the exact CFM(σ) minimiser on the same pairs itself loses "
             f"≥ reduce_margin = {reduce_margin:g} of M (the noise can act there). A σ whose check fails is no "
             "answer: it cannot be recommended (even when it passes both margins), is no undecided σ to add seeds "
             "for, and its confirmed drop is no cut — the networks' drop or low memorisation measures under-fitting, "
             "is named as such, and is neither the recommendation, the fallback nor the trade-off; the rule goes on "
             "to the next σ and the other outcomes."
             if noise_check else "")
    return (f"Each σ is judged against σ = 0 over the training seeds (the replicates), at one-sided α = {alpha:g}. "
            f"Generalisation: paired non-inferiority of d_s = G_s(σ) − G_s(0) with the advisor's margin τ = "
            f"max({gen_margin:g} · max(mean G(0), 0), {gen_floor:.3g}) (relative margin, absolute noise-floor margin): "
            f"within if the "
            f"upper t-bound of mean d is < τ, worse if its lower bound is > τ. Memorisation: M = (pairing accuracy − "
            f"1/N)/(1 − 1/N); within if its upper bound (the wider of the seed t-bound and the pooled-binomial "
            f"Clopper–Pearson bound) is ≤ {mem_margin:g}, above if its lower bound is > {mem_margin:g}. "
            f"A σ passes if within on both, fails if above or worse on either, else is undecided (always with one "
            f"seed). Recommended: the smallest σ that passes. Otherwise, if some σ is undecided: no recommendation, "
            f"add seeds (the undecided σ are named, those passing on the means first, with an estimate of the seeds "
            f"needed). If every σ fails: none; the flagged fallback (not a recommendation) is the σ with "
            f"generalisation within τ whose memorisation drop M(0) − M(σ) is confirmed ≥ reduce_margin = "
            f"{reduce_margin:g} over seeds (the lowest mean M among them), and the smallest σ with a confirmed drop "
            f"is named with its generalisation change G(σ) − G(0). σ with non-finite scores in every seed are left "
            f"out. Untestable (no answer) when σ = 0 did not memorise in every seed (pairing accuracy below "
            f"memorise_accuracy): Prop 2's premise fails there, σ = 0 passes against itself by construction, and a low "
            f"memorisation then measures under-fitting, not the noise.{check}")


def sigma0_memorised(accuracy: Sequence[float], memorise_accuracy: float) -> bool:
    """Prop 2's premise, measured: CFM(σ = 0) memorised its pairs — every finite per-seed pairing accuracy is
    ≥ ``memorise_accuracy`` (at least one seed finite; diverged seeds, NaN, are left out). The advisor's gate and the
    ``sigma0_memorises`` claim's "confirmed"."""
    finite = [a for a in accuracy if math.isfinite(a)]
    return bool(finite) and all(a >= memorise_accuracy for a in finite)


def loss_converged(row: Mapping[str, Any]) -> bool:
    """One seed's training has converged by the advisor's test: its loss is no longer falling (last quarter of steps
    over the quarter before, ``loss_late_over_previous`` ≥ :data:`STILL_FALLING_RATIO`) and sits at the fit level
    (``loss_last_relative_to_zero_field`` ≤ :data:`FIT_LOSS_RATIO`, where a memorising fit goes). A missing or NaN
    summary is no evidence of convergence (False). :func:`untestable_fix` names what fails, with the numbers."""
    late = row.get("loss_late_over_previous", math.nan)
    ratio = row.get("loss_last_relative_to_zero_field", math.nan)
    return bool(finite_number(late) and finite_number(ratio) and float(late) >= STILL_FALLING_RATIO
                and float(ratio) <= FIT_LOSS_RATIO)


def untestable_fix(zero_rows: Sequence[Mapping[str, Any]], n_train: int) -> str:
    """What to change when σ = 0 did not memorise, from its per-seed training-loss summary (keys of
    :func:`flowvar.experiments._imaging.loss_fit` plus ``loss_late_over_previous``; missing keys are unknown):

    * *train longer* when some seed's loss is still falling (last quarter / quarter before <
      :data:`STILL_FALLING_RATIO`) or not well below the zero field's (``loss_last_relative_to_zero_field`` >
      :data:`FIT_LOSS_RATIO`; a network that fits its pairs drives it towards 0) — if a longer run levels off high,
      fewer pairs;
    * otherwise (levelled off near 0 without pairing) *fewer pairs or a larger model*."""
    ratio = [r for r in _seed_values(zero_rows, "loss_last_relative_to_zero_field") if math.isfinite(r)]
    late = [r for r in _seed_values(zero_rows, "loss_late_over_previous") if math.isfinite(r)]
    falling = [r for r in late if r < STILL_FALLING_RATIO]
    high = [r for r in ratio if r > FIT_LOSS_RATIO]
    fewer = f"fewer pairs (--set n_train=… below {n_train})"
    if falling or high:
        why = []
        if high:
            why.append(f"its loss is still {max(high):.3g} × the zero field's E‖x1 − x0‖² (> {FIT_LOSS_RATIO:g}; a "
                       f"memorising fit goes towards 0)")
        if falling:
            why.append(f"it was still falling (last quarter of steps / the quarter before = {min(falling):.3g} < "
                       f"{STILL_FALLING_RATIO:g})")
        return (f"train longer (--set steps=…): σ = 0 has not converged, {' and '.join(why)}; if a longer run levels "
                f"off without pairing, use {fewer} or a larger model (--set width=…)")
    level = f" at {max(ratio):.3g} × the zero field's loss" if ratio else ""
    return (f"use {fewer} or a larger model (--set width=… / depth=…): σ = 0's loss levelled off{level}, yet Euler "
            f"from the training sources does not return their partners")


def require_every_noise_check(per_seed: Mapping[float, Any], noise_can_act: Mapping[Any, Precondition]) -> None:
    """Refuse exact-minimiser checks given for some σ only: ``noise_can_act`` must hold a check for every σ > 0 of
    ``per_seed`` (keys equal to the table's σ; a σ whose every seed diverged included, so the demand does not hang
    on the training). A σ without a check would be judged on the margins alone beside σ judged on their check, so the
    advice could call a drop a confirmed cut (or a pass a recommendation) at one σ and not at its neighbour on
    inconsistent grounds. Raises ConfigError naming the σ without a check, the σ checked and any key that is no σ
    of the table (a string "0.1", or 0.1000001, leaves σ = 0.1 unchecked); a check for σ = 0 is allowed and unread."""
    if not isinstance(noise_can_act, Mapping):
        raise ConfigError(f"noise_can_act must map σ to its exact-minimiser check (a Precondition), got "
                          f"{type(noise_can_act).__name__}")
    missing = sorted(s for s in per_seed if s > 0 and s not in noise_can_act)
    if not missing:
        return
    checked = sorted(s for s in per_seed if s > 0 and s in noise_can_act)
    stray = sorted((k for k in noise_can_act if k not in per_seed), key=repr)
    checked_text = f"checked σ = {', '.join(f'{s:g}' for s in checked)}" if checked else "checked σ: none"
    stray_text = (f"; noise_can_act also has keys that are not σ of the per-seed table: "
                  f"{', '.join(repr(k) for k in stray)}" if stray else "")
    raise ConfigError(f"noise_can_act gives no exact-minimiser check for σ = {', '.join(f'{s:g}' for s in missing)} "
                      f"({checked_text}){stray_text}. The check is read for every σ > 0 or for none: a σ without one "
                      f"would be judged on the margins alone beside σ judged on their check, so a drop could count "
                      f"as a confirmed cut at one σ and not at its neighbour. Pass a check for every σ > 0 "
                      f"(flowvar.experiments.sigma_tradeoff.noise_checks makes one per σ), or noise_can_act=None to "
                      f"check none (the advice then rests on the margins alone and says nothing of the exact "
                      f"minimiser)")


def advise_over_seeds(per_seed: Mapping[float, Sequence[Mapping[str, Any]]], n_train: int, gen_margin: float,
                      mem_margin: float, *, gen_floor: float = 0.0, alpha: float = 0.05, reduce_margin: float = 0.1,
                      memorise_accuracy: float | None = None, gen_key: str = GEN_KEY,
                      noise_can_act: Mapping[float, Precondition] | None = None) -> SeedAdvice:
    """The advisor's seed-level rule (:func:`seed_rule_text`).

    ``per_seed``: σ → one row per training seed (same seeds in the same order for every σ; must hold σ = 0), each
    with ``pairing_accuracy`` (a ∈ [0, 1] on ``n_train`` pairs) and ``gen_key`` (G, lower is better); non-finite
    values mark diverged seeds. ``memorise_accuracy``: the gate (None: none) — unless σ = 0 memorised
    (:func:`sigma0_memorised`) the outcome is "untestable", whatever the σ judgements say: σ = 0 is the reference, so
    it passes the generalisation test against itself, and its low memorisation is then under-fitting, not an answer.
    ``noise_can_act``: σ → the ``reduces_memorisation`` claim's mechanism precondition for that σ (the exact CFM(σ)
    minimiser loses ≥ ``reduce_margin`` of M, :func:`flowvar.experiments.sigma_tradeoff.noise_can_act_precondition`;
    one for every σ > 0 of ``per_seed``, or None: no σ checked, the margins alone). A σ whose check fails is no
    answer: not recommended even when it passes both margins, no undecided σ to add seeds for, and its confirmed drop
    is no cut (neither fallback nor trade-off: the claim is untestable there); the rule goes on to the next σ and the
    other outcomes, and :attr:`SeedAdvice.unattributed_cut` and the answer name it. A mapping that misses a σ > 0
    (an empty one included) is refused (:func:`require_every_noise_check`): that σ would be judged on the margins
    alone beside σ judged on their check, so the same drop could be a cut at one σ and not at its neighbour.
    When no σ cuts memorisation, what to change follows from the numbers (:func:`no_cut_remedy`): "add seeds" only
    for a σ whose mean drop already reaches ``reduce_margin`` (seeds narrow its bound, never move its mean:
    :func:`seeds_could_confirm`), "extend sigmas" only when the check is unmade or holds at some σ, and, when the
    exact minimiser keeps the pairs at every σ tried, that the noise cannot act at these σ against the spacing of the
    training lines, and what would let it: a σ near the measured onset × that spacing, or closer lines (N, d).
    A σ > 0 whose generalisation change is confirmed below 0 is called an improvement (and named in the "none"
    headline) only when its mean reaches the noise floor ``gen_floor`` (:func:`gen_change_kind`); a smaller one is
    said to be below the floor in the reason.
    Returns a :class:`SeedAdvice`. Raises ConfigError on a bad table, margin or partial ``noise_can_act``."""
    _check_margins(gen_margin, mem_margin, gen_floor)
    if not isinstance(n_train, int) or isinstance(n_train, bool) or n_train < 2:
        raise ConfigError(f"n_train must be an int >= 2 (the number of training pairs), got {n_train!r}")
    if not finite_number(alpha) or not 0 < alpha < 0.5:
        raise ConfigError(f"alpha must lie in (0, 0.5) (one-sided level), got {alpha!r}")
    if 0.0 not in per_seed:
        raise ConfigError(f"the per-seed table must hold σ = 0 (the reference every σ is judged against), got σ = "
                          f"{sorted(per_seed)}")
    if noise_can_act is not None:
        require_every_noise_check(per_seed, noise_can_act)
    zero = per_seed[0.0]
    g0 = [g for g in _seed_values(zero, gen_key) if math.isfinite(g)]
    reference = sum(g0) / len(g0) if g0 else math.nan
    tol = gen_tolerance(reference, gen_margin, gen_floor) if g0 else math.nan
    judged = []
    for sigma in sorted(per_seed):
        rows = per_seed[sigma]
        if not any(math.isfinite(a) for a in _seed_values(rows, "pairing_accuracy")) or \
                not any(math.isfinite(g) for g in _seed_values(rows, gen_key)):
            continue  # every seed of this σ diverged: left out, as in the point rule
        judged.append(judge_sigma(sigma, rows, zero, n_train, tol if g0 else 0.0, mem_margin, alpha, gen_key=gen_key))
    lines = "; ".join(j.text() for j in judged)

    def advice(outcome: Outcome, reason: str, headline: str, sigma: float | None = None,
               fallback: float | None = None, candidates: Sequence[float] = (), need: int | None = None,
               trade: dict[str, Any] | None = None, unattributed: dict[str, Any] | None = None) -> SeedAdvice:
        return SeedAdvice(outcome, sigma, fallback, list(candidates), need, trade, tol, reference, judged, reason,
                          headline, unattributed)

    if not g0 or not judged:
        return advice("no_data", "no σ has finite scores (σ = 0, the reference, included); nothing to recommend",
                      "no σ can be recommended: no σ has finite scores")
    if memorise_accuracy is not None:
        acc0 = [a for a in _seed_values(zero, "pairing_accuracy") if math.isfinite(a)]
        if not sigma0_memorised(acc0, memorise_accuracy):
            fix = untestable_fix(zero, n_train)
            low, high = (min(acc0), max(acc0)) if acc0 else (math.nan, math.nan)
            head = (f"untestable here: CFM(σ = 0) did not memorise its N = {n_train} pairs (pairing accuracy "
                    f"{low:.3g}–{high:.3g} over seeds, ≥ {memorise_accuracy:g} needed, chance {1 / n_train:.3g}), so "
                    f"no σ is an answer; {fix}")
            return advice("untestable", f"{head}. Prop 2's premise (σ = 0 memorises its fixed pairs) fails in this "
                                        f"setting: σ = 0, the reference, passes the generalisation test against "
                                        f"itself by construction, and its low memorisation measures under-fitting, "
                                        f"not what noise would fix [{lines}]", head)
    # the drop M(0) − M(σ) of every σ, paired over seeds, and whether the noise can act there (the exact-minimiser
    # check): a σ whose check fails is no answer — neither a cut, nor recommended, nor worth more seeds
    m0 = _seed_values(zero, "memorisation") if all("memorisation" in r for r in zero) else \
        [(a - 1 / n_train) / (1 - 1 / n_train) for a in _seed_values(zero, "pairing_accuracy")]
    checks = noise_can_act or {}

    def noise_fails(j: SigmaJudgement) -> bool:
        check = checks.get(j.sigma)
        return check is not None and not check.holds

    cutting, unattributed = [], []
    drops: dict[float, SeedComparison] = {}  # every σ > 0 with a finite seed: what more seeds could do (no_cut_remedy)
    for j in judged:
        if j.sigma == 0:
            continue
        m = [(a - 1 / n_train) / (1 - 1 / n_train) for a in _seed_values(per_seed[j.sigma], "pairing_accuracy")]
        keep = [(x, y) for x, y in zip(m0, m, strict=True) if math.isfinite(x) and math.isfinite(y)]
        if not keep:
            continue
        # one seed: "inconclusive" (never a cut), kept for the remedy (its drop says whether seeds could decide it);
        # tied seeds of M (a k/N grid) get the binomial floor, as sigma_tradeoff's claim 2 does (statsR 2)
        unit = 1.0 - 1.0 / n_train
        floor = binomial_sd_floor([1.0 / n_train + x * unit for x, _ in keep],
                                  [1.0 / n_train + y * unit for _, y in keep], n_train, unit=unit)
        drop = paired_over_seeds([x for x, _ in keep], [y for _, y in keep], min_effect=reduce_margin, scale=1.0,
                                 scale_name="the memorisation scale", alpha=alpha, labels=("M(0)", f"M({j.sigma:g})"),
                                 sd_floor=floor)
        drops[j.sigma] = drop
        if drop.verdict == "confirmed" and noise_fails(j):
            unattributed.append((j, drop, checks[j.sigma]))  # the networks' drop, not the noise's: untestable
        elif drop.verdict == "confirmed":
            cutting.append((j, drop))
    blocked = [j for j in judged if j.sigma > 0 and j.verdict != "fails" and noise_fails(j)]
    blocked_clauses = {j.sigma: (
        f"; σ = {j.sigma:g} {'passes both margins' if j.verdict == 'passes' else 'is undecided'} but is no answer: "
        f"its exact CFM(σ) minimiser loses only {float(checks[j.sigma].measured.get('seed_mean', math.nan)):.3g} < "
        f"{reduce_margin:g} of M (the noise cannot act there), so the network's low memorisation measures "
        f"under-fitting") for j in blocked}
    blocked_text = "".join(blocked_clauses.values())
    acc0 = [a for a in _seed_values(zero, "pairing_accuracy") if math.isfinite(a)]

    def unattributed_below(limit: float) -> tuple[dict[str, Any] | None, str, str]:
        """The record, sentence and headline clause of the smallest unattributed drop below σ = ``limit``."""
        first = next((u for u in unattributed if u[0].sigma < limit), None)
        if first is None:
            return None, "", ""
        return unattributed_cut_text(*first, zero_mem=_mean(m0), acc0=acc0, reduce_margin=reduce_margin)

    # gated, σ = 0 is the reference the gate found memorising: never a candidate, passing or undecided — with one seed
    # its M has no bound (memorisation_bounds) and it would be named "not excluded" right after the gate measured it
    # memorise (review adviseR 2), and with a loose mem_margin "recommended σ = 0", no noise at all (adviseR 5)
    candidate = [j for j in judged if j.sigma > 0 or memorise_accuracy is None]
    passing = [j for j in candidate if j.verdict == "passes" and not noise_fails(j)]
    undecided = [j for j in candidate if j.verdict == "undecided" and not noise_fails(j)]
    if passing:
        best = passing[0]
        smaller = [j.sigma for j in undecided if j.sigma < best.sigma]
        note = (f"; smaller σ still undecided (more seeds might admit them): {', '.join(f'{s:g}' for s in smaller)}"
                if smaller else "")
        note += "".join(clause for sigma, clause in blocked_clauses.items() if sigma < best.sigma)
        record, loose_text, _ = unattributed_below(best.sigma)
        note += f"; {loose_text}" if loose_text else ""
        return advice("recommended", f"σ = {best.sigma:g} is the smallest σ within both margins with confidence: "
                                     f"memorisation upper bound {best.mem_upper:.3g} ≤ {mem_margin:g} and "
                                     f"generalisation non-inferior to σ = 0 within τ = {tol:.3g}{note} [{lines}]",
                      recommended_headline(best.sigma), sigma=best.sigma, unattributed=record)
    if undecided:
        ordered = sorted(undecided, key=lambda j: (not j.passes_on_means, j.sigma))
        first = ordered[0]
        if first.passes_on_means:
            est = (f"about {first.seeds_needed} seeds in all might decide it, if the means and spreads stay as "
                   f"measured" if first.seeds_needed else "the seeds needed cannot be estimated from these seeds")
            head = (f"σ = {first.sigma:g} passes both margins on the means but not with confidence: add seeds ({est})")
            if first.mem_side == "undecided":  # the counting error in N bounds M too (referee A4)
                head += (f"; its memorisation bound also reflects counting on N = {n_train} pairs (one pair moves M "
                         f"by {1 / (n_train - 1):.2g}): more training pairs narrow it as well")
        else:
            head = "no σ passes on the means, but these σ are not excluded with confidence either: add seeds"
        named = ", ".join(f"{j.sigma:g}" for j in ordered)
        need = first.seeds_needed if first.passes_on_means else None
        record, loose_text, _ = unattributed_below(math.inf)
        return advice("undecided", f"undecided, no recommendation: {head}; undecided σ: {named}{blocked_text}"
                                   f"{'; ' + loose_text if loose_text else ''} [{lines}]",
                      undecided_headline([j.sigma for j in ordered], need),
                      candidates=[j.sigma for j in ordered], need=need, unattributed=record)
    # every σ fails a margin with confidence (or passes only where the noise cannot act): a flagged fallback only if
    # it cuts memorisation (confirmed over seeds, through the noise)
    fallback = [j for j, _ in cutting if j.gen_side == "within"]
    pick = min(fallback, key=lambda j: (j.mem_mean, j.sigma)) if fallback else None
    trade = None
    remedy_head = ""  # the headline's remedy when no σ cuts memorisation (set below)
    if cutting:
        j, drop = cutting[0]
        trade = {"sigma": j.sigma, "memorisation": j.mem_mean, "memorisation_drop": drop.mean,
                 "memorisation_drop_lower": drop.lower, "gen_cost": j.gen_difference, "gen_cost_lower": j.gen_lower,
                 "gen_cost_upper": j.gen_upper, "tolerance": tol}
        trade_text = (f"the smallest σ that cuts memorisation (M(0) − M(σ) ≥ {reduce_margin:g}, confirmed over seeds) "
                      f"is σ = {j.sigma:g}: M = {j.mem_mean:.3g}, "
                      f"{gen_change_text(j.gen_difference, j.gen_lower, j.gen_upper, tol, j.gen_side, gen_floor)} — "
                      f"a trade-off "
                      f"to weigh, not a recommendation: {why_it_fails(j, mem_margin)}")
    elif unattributed:  # the drops seen are the networks', not the noise's: said below
        trade_text = "no σ of the grid is shown to cut memorisation through the noise"
    else:
        # what to change follows from the numbers (no_cut_remedy): seeds only where a mean drop already reaches
        # reduce_margin (more seeds narrow the bound, not the mean), larger σ only where the exact minimiser can act
        # or was not checked, other pairs when it keeps them at every σ tried
        remedy_reason, remedy_head = no_cut_remedy(
            drops, None if noise_can_act is None else {s: c for s, c in checks.items() if s in per_seed and s > 0},
            reduce_margin)
        trade_text = f"no σ of the grid cuts memorisation by ≥ {reduce_margin:g} with confidence; {remedy_reason}"
    # a smaller σ whose drop the noise cannot explain: said, with what the run cannot tell and what to change
    loose_record, loose_text, loose_short = unattributed_below(cutting[0][0].sigma if cutting else math.inf)
    if loose_text:
        trade_text += f"; {loose_text}"
    if pick is not None:
        head = (f"FALLBACK, not a recommendation: σ = {pick.sigma:g} cuts memorisation (M = {pick.mem_mean:.3g}, "
                f"above {mem_margin:g}) while its generalisation is within the advisor's margin τ of σ = 0")
        headline = fallback_headline(pick.sigma)
    else:
        head = "No σ cuts memorisation while its generalisation is shown within the advisor's margin τ of σ = 0"
        headline = ("no σ satisfies both margins: " + (
            f"the smallest σ that cuts memorisation, σ = {cutting[0][0].sigma:g}, is not shown to keep "
            f"generalisation within τ (a trade-off, see the reason)" if cutting else
            f"no σ of the grid cuts memorisation by ≥ {reduce_margin:g} with confidence {remedy_head}"
            if loose_record is None else
            f"no σ is shown to cut memorisation through the noise: {loose_short}"))
    unnamed = [j.sigma for j in blocked if loose_record is None or j.sigma != loose_record["sigma"]]
    if unnamed:  # a σ within both margins only where the noise cannot act: no answer, said in the headline too
        headline += (f"; σ = {', '.join(f'{s:g}' for s in unnamed)} is within the margins only where the noise "
                     f"cannot act (under-fitting, no answer)")
    # a confirmed gain is news even without a memorisation cut — if it reaches the noise floor (gen_change_kind: a
    # smaller one is below what two real samples differ by) and a floor was measured at all
    kinds = {j.sigma: gen_change_kind(j.gen_difference, j.gen_lower, j.gen_upper, gen_floor) for j in judged
             if j.sigma > 0 and j.verdict == "fails"}
    improved = [j for j in judged if kinds.get(j.sigma) == "improvement"] if gen_floor > 0 else []
    slight = [j for j in judged if kinds.get(j.sigma) == "better_below_floor"]
    gen_text = ""
    if improved and pick is None:
        j = min(improved, key=lambda j: j.gen_difference)
        headline += (f"; σ = {j.sigma:g} improves generalisation with confidence, beyond the noise floor "
                     f"{gen_floor:.3g} (G − G(0) = {j.gen_difference:+.3g}, bounds [{j.gen_lower:+.3g}, "
                     f"{j.gen_upper:+.3g}]) but {why_it_fails(j, mem_margin)}")
    elif slight and pick is None:
        j = min(slight, key=lambda j: j.gen_difference)
        gen_text = (f"; no σ improves generalisation measurably: the largest confirmed gain, σ = {j.sigma:g}'s "
                    f"G − G(0) = {j.gen_difference:+.3g} (bounds [{j.gen_lower:+.3g}, {j.gen_upper:+.3g}]), is "
                    f"within the noise floor {gen_floor:.3g} of 0 (what two independent real samples differ by)")
    every = ("every σ fails one with confidence, or is within both only where the noise cannot act" if blocked else
             "every σ fails one with confidence")
    return advice("none", f"no σ satisfies both margins ({every}). {head}; {trade_text}{blocked_text}{gen_text} "
                          f"[{lines}]",
                  headline, fallback=pick.sigma if pick else None, trade=trade, unattributed=loose_record)


def _mean(values: Sequence[float]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return sum(finite) / len(finite) if finite else math.nan


def unattributed_cut_text(judgement: SigmaJudgement, drop: Any, check: Precondition, *, zero_mem: float,
                          acc0: Sequence[float], reduce_margin: float) -> tuple[dict[str, Any], str, str]:
    """A σ whose memorisation drop M(0) − M(σ) is confirmed over seeds in the trained networks (``drop``, a
    :class:`flowvar.stats.SeedComparison`) while its exact CFM(σ) minimiser loses less than ``reduce_margin`` of M
    (``check``: the failed mechanism precondition, whose ``measured`` holds ``seed_mean`` and, when known,
    ``median_line_spacing`` and ``sigma_sqrt_d``): the noise cannot break memorisation there, so the networks' drop
    measures under-fitting and the claim "σ reduces memorisation" is untestable. The sentence sets σ against the
    median line spacing and the measured onset (:func:`~flowvar.experiments._exact_minimiser.noise_scale_text`);
    the record keeps σ√d too. Returns (the record for :attr:`SeedAdvice.unattributed_cut`, the sentence for the
    reason, the clause for the headline)."""
    sigma, measured = judgement.sigma, check.measured
    exact = float(measured.get("seed_mean", math.nan))
    spacing, reach = measured.get("median_line_spacing"), measured.get("sigma_sqrt_d")
    known = finite_number(spacing) and float(spacing) > 0
    record = {"sigma": sigma, "memorisation_sigma0": zero_mem, "memorisation": judgement.mem_mean,
              "memorisation_drop": drop.mean, "memorisation_drop_lower": drop.lower, "exact_minimiser_drop": exact,
              "reduce_margin": reduce_margin, "median_line_spacing": spacing, "sigma_sqrt_d": reach,
              "sigma_over_spacing": sigma / float(spacing) if known else None}
    numbers = (f"the trained networks' M falls {zero_mem:.3g} → {judgement.mem_mean:.3g} at σ = {sigma:g}, but its "
               f"exact CFM(σ) minimiser loses only {exact:.3g} < {reduce_margin:g} of M")
    todo = "to test it, a larger σ or more steps (σ = 0 pairing all its sources)"
    short = f"{numbers}, so whether noise cuts memorisation there is untestable in this run; {todo}"
    scale = f" ({noise_scale_text(sigma, float(spacing))})" if known else ""
    low, high = (min(acc0), max(acc0)) if acc0 else (math.nan, math.nan)
    text = (f"this run cannot say that σ = {sigma:g} cuts memorisation through the noise: {numbers}{scale} — the noise "
            f"cannot break memorisation at this σ, so the drop (M(0) − M(σ) = {drop.mean:.3g}, lower bound "
            f"{drop.lower:.3g}, confirmed over seeds) measures under-fitting of σ = {sigma:g}'s network (σ = 0 itself "
            f"reached pairing accuracy {low:.3g}–{high:.3g}), and the claim that it reduces memorisation is "
            f"untestable here; {todo}, or closer training lines (more pairs N)")
    return record, text, short


def seeds_could_confirm(drop: SeedComparison) -> bool:
    """Whether more seeds could confirm a memorisation drop Δ = M(0) − M(σ) that these seeds leave unconfirmed, if
    its mean and spread stay as measured — the criterion for the advice "add seeds" when no σ cuts memorisation.

    ``drop``: :func:`flowvar.stats.paired_over_seeds` of the per-seed M(0) and M(σ) with ``min_effect`` =
    reduce_margin. It is confirmed when its one-sided lower bound Δ̄ − t_{1−α, n−1} s/√n is > 0 and its mean
    Δ̄ ≥ reduce_margin. More seeds narrow the bound (the half-width t s/√n shrinks like 1/√n) but do not move the
    mean, so they can decide only a drop whose **mean already reaches reduce_margin** and that is not confirmed (its
    lower bound held at or below 0 by the width alone, or one seed: no bound yet). A mean below the margin stays
    below it however many seeds are added: with M = 1 in every seed at σ and at σ = 0, Δ̄ = 0. "Reaches" is up to
    float rounding, by the very threshold the verdict used
    (:meth:`flowvar.stats.SeedComparison.mean_reaches_min_effect`)."""
    return drop.verdict != "confirmed" and drop.mean_reaches_min_effect()


def no_cut_remedy(drops: Mapping[float, SeedComparison], checks: Mapping[float, Precondition] | None,
                  reduce_margin: float) -> tuple[str, str]:
    """What to change when no σ of the grid cuts memorisation by ≥ ``reduce_margin`` with confidence (and no σ's
    drop is the networks' alone, :func:`unattributed_cut_text`), read off the numbers. Returns (the reason's clause,
    the headline's clause in parentheses).

    ``drops``: σ > 0 → its paired drop M(0) − M(σ) over seeds (:func:`flowvar.stats.paired_over_seeds`; σ whose
    every seed diverged are absent); ``checks``: σ > 0 → the exact CFM(σ) minimiser check for every σ > 0 tried
    (``Precondition.holds``: the minimiser loses ≥ reduce_margin of M, the noise can act there), or None when no
    check was made. Each remedy is offered only when the numbers say it could help:

    * **add seeds** — for a σ whose noise can act (or is unchecked) and whose drop :func:`seeds_could_confirm`
      (mean ≥ reduce_margin, lower bound not yet above 0); otherwise the text says why more seeds would not help
      (the largest mean drop is below reduce_margin);
    * **extend sigmas to larger values** — when the check was not made (whether the noise acts at a larger σ is
      unknown), or when it holds at some σ of the grid (the exact minimiser can break memorisation there, the
      networks did not: a larger σ pushes harder);
    * **a larger σ or other pairs** — when the check fails at every σ tried, the exact minimiser itself keeps the
      pairs: the noise cannot act at these σ against the spacing of the training lines, so neither more seeds nor
      longer training can show a cut on this grid. Said plainly, with the largest loss of M the minimiser reached and
      σ / spacing against the measured onset (:data:`~flowvar.experiments._exact_minimiser.SIGMA_OVER_SPACING_ONSET`,
      from the largest σ's check: ``median_line_spacing``), and what to change: a σ of about the onset's upper edge ×
      the spacing (where every measured exact minimiser lost pairs; the generalisation margin then judges it), or the
      check's own remedy (closer training lines: more pairs N or a lower d).
    """
    def sigmas(values: Sequence[float]) -> str:
        return ", ".join(f"{s:g}" for s in values)

    checked = {s: c for s, c in (checks or {}).items() if s > 0}
    keeps = [s for s in sorted(checked) if not checked[s].holds]
    acting = [s for s in sorted(checked) if checked[s].holds]
    if checked and not acting:  # every σ tried: the exact minimiser keeps the pairs
        top = max(keeps)
        lost = {s: float(checked[s].measured.get("seed_mean", math.nan)) for s in keeps}
        finite = [v for v in lost.values() if math.isfinite(v)]
        most = f"at most {max(finite):.3g} < {reduce_margin:g}" if finite else f"less than {reduce_margin:g}"
        spacing = checked[top].measured.get("median_line_spacing")
        known = finite_number(spacing) and float(spacing) > 0
        remedy = checked[top].remedy or closer_lines_remedy(top, float(spacing) if known else None)
        span = f"σ = {keeps[0]:g} … {top:g}" if len(keeps) > 1 else f"σ = {top:g}"
        low, high = SIGMA_OVER_SPACING_ONSET
        larger = (f"a larger σ, about {high:g} × the median line spacing {float(spacing):.3g} = "
                  f"{high * float(spacing):.3g} or more (extend sigmas; the generalisation margin then says whether "
                  f"that much noise blurs the data), or " if known else "")
        reason = (f"at every σ tried ({span}) the exact CFM(σ) minimiser itself keeps the pairs (it loses {most} of "
                  f"M): the noise cannot act at these σ against the spacing of the training lines, so neither more "
                  f"seeds nor longer training can show a cut on this grid — to change that, {larger}{remedy}")
        scale = (f" (σ = {top:g} is {top / float(spacing):.2g} of the median line spacing {float(spacing):.3g}; the "
                 f"exact minimiser starts losing pairs between {low:g} and {high:g} of it)" if known else "")
        head = (f"(and none can on this grid: at every σ tried, up to {top:g}, the exact CFM(σ) minimiser itself keeps "
                f"the pairs{scale}, so more seeds cannot change that; a larger σ or closer training lines could, as "
                f"the reason says)")
        return reason, head
    reasons, heads = [], []
    # a σ whose exact minimiser keeps the pairs is no σ to add seeds for: a drop there is the networks' alone
    eligible = {s: d for s, d in sorted(drops.items()) if s > 0 and (s not in checked or checked[s].holds)}
    seedable = [(s, d) for s, d in eligible.items() if seeds_could_confirm(d)]
    if seedable:
        reasons.append("add seeds (--set n_seeds=…): " + "; ".join(
            f"at σ = {s:g} the mean drop M(0) − M(σ) = {d.mean:.3g} reaches {reduce_margin:g}, but "
            + (f"its lower bound {d.lower:.3g} is not above 0" if math.isfinite(d.lower) else "one seed gives no bound")
            for s, d in seedable) + " (more seeds narrow the bound; the mean stays as measured)")
        heads.append(f"add seeds: at σ = {sigmas([s for s, _ in seedable])} the drop reaches {reduce_margin:g} on "
                     f"the mean, not yet with confidence")
    elif eligible:
        s_max, d_max = max(eligible.items(), key=lambda item: (item[1].mean, -item[0]))
        where = " where the noise can act" if checked else ""
        reasons.append(f"more seeds would not help: no σ's mean drop M(0) − M(σ){where} reaches {reduce_margin:g} "
                       f"(the largest is {d_max.mean:.3g}, at σ = {s_max:g}), and seeds narrow the bound, not the "
                       f"mean")
        heads.append(f"more seeds would not help: no mean drop{where} reaches {reduce_margin:g}")
    if checks is None:
        reasons.append("extend sigmas to larger values (the exact minimiser was not checked, so whether the noise "
                       "can act at a larger σ is unknown)")
        heads.append("extend sigmas to larger values: whether the noise can act there is unchecked")
    elif acting:
        reasons.append(f"extend sigmas to larger values: the exact CFM(σ) minimiser can act at σ = {sigmas(acting)} "
                       f"(it loses ≥ {reduce_margin:g} of M there) while the networks' memorisation did not fall by "
                       f"that much, and a larger σ gives the noise more reach")
        heads.append(f"extend sigmas to larger values: the exact CFM(σ) minimiser can act at σ = {sigmas(acting)}")
    else:  # a check was asked for but the grid has no σ > 0
        reasons.append("add σ > 0 to sigmas (the grid holds σ = 0 only)")
        heads.append("add σ > 0 to sigmas")
    return "; ".join(reasons), f"({'; '.join(heads)})"


def recommended_headline(sigma: float) -> str:
    """The one-line answer when σ passes both margins with confidence (:attr:`SeedAdvice.headline`)."""
    return f"recommended σ = {sigma:g}"


def undecided_headline(candidates: Sequence[float], seeds_needed: int | None) -> str:
    """The one-line answer when no σ passes with confidence but ``candidates`` are not excluded either."""
    named = ", ".join(f"{s:g}" for s in candidates)
    need = f" (about {seeds_needed} seeds in all)" if seeds_needed else ""
    return (f"undecided: no σ passes both margins with confidence, but σ = {named} "
            f"{'is' if len(candidates) == 1 else 'are'} not excluded either; add seeds (--set n_seeds=...){need}")


def fallback_headline(sigma: float) -> str:
    """The one-line answer when every σ fails a margin and ``sigma`` is the flagged fallback (not a recommendation)."""
    return (f"no σ met both margins; fallback σ = {sigma:g} (cuts memorisation within the generalisation margin, see "
            f"the reason; not a recommendation by the rule)")


def gen_change_text(difference: float, lower: float, upper: float, tolerance: float, side: str,
                    floor: float = 0.0) -> str:
    """The generalisation change d = G(σ) − G(0) of one σ in words, for a reader of the advisor's answer, by its
    :func:`gen_change_kind` against the noise floor ``floor`` (0: none measured, the sign alone is read): an
    improvement when its upper one-sided bound is below 0 (lower G is better) and its mean is at least the floor
    below 0, a cost when its lower bound is above 0 and its mean at least the floor above 0, a change of a confirmed
    sign but below the floor, otherwise a change not shown either way (better or worse on the mean); then where it
    stands against the advisor's margin τ, as :func:`judge_sigma` found (``side``: "within", "worse" or
    "undecided"), e.g. "generalisation improved: G(σ) − G(0) = −0.00275 (one-sided bounds −0.00321 … −0.00229, both
    below 0; beyond the noise floor 0.000499), within the advisor's margin τ = 0.00168"."""
    bounds = f"one-sided bounds {lower:+.3g} … {upper:+.3g}"
    beyond = f"; beyond the noise floor {floor:.3g}" if floor > 0 else ""
    below = (f"but within the noise floor {floor:.3g} of 0 — what two independent real samples differ by — so "
             f"too small to count")
    kind = gen_change_kind(difference, lower, upper, floor)
    if kind == "improvement":
        change = f"generalisation improved: G(σ) − G(0) = {difference:+.3g} ({bounds}, both below 0{beyond})"
    elif kind == "cost":
        change = f"generalisation cost G(σ) − G(0) = {difference:+.3g} ({bounds}, both above 0{beyond})"
    elif kind == "better_below_floor":
        change = (f"generalisation better, below the noise floor: G(σ) − G(0) = {difference:+.3g} ({bounds}, both "
                  f"below 0, {below} as an improvement)")
    elif kind == "worse_below_floor":
        change = (f"generalisation worse, below the noise floor: G(σ) − G(0) = {difference:+.3g} ({bounds}, both "
                  f"above 0, {below} as a cost)")
    else:
        change = (f"generalisation change G(σ) − G(0) = {difference:+.3g}, {kind} on the mean but not shown either "
                  f"way ({bounds})")
    where = {"within": f"within the advisor's margin τ = {tolerance:.3g}",
             "worse": f"worse than σ = 0 by more than the advisor's margin τ = {tolerance:.3g}"}.get(
        side, f"not shown within the advisor's margin τ = {tolerance:.3g} (the upper bound is not below it)")
    return f"{change}, {where}"


def gen_change_kind(difference: float, lower: float, upper: float, floor: float = 0.0) -> str:
    """What a generalisation change d = G(σ) − G(0) (lower G is better) is, from its one-sided bounds and the noise
    floor ``floor`` as its minimum effect: "improvement" (upper < 0 and d ≤ −floor), "cost" (lower > 0 and
    d ≥ floor), "better_below_floor" / "worse_below_floor" (the sign confirmed, |d| < floor), else only its mean's
    side, "better", "worse" or "unchanged" — the convention of :func:`flowvar.stats.paired_over_seeds`: the bound
    decides the sign, the mean must reach the minimum effect.

    Why the floor and not the margin τ: G is the unbiased MMD² to held-out data, 0 in expectation for a perfect
    model, and the floor (2 × RMS of the null MMD² between two independent real samples, rescaled to G's sample
    sizes) is how far G moves between samples of the true distribution itself. A smaller change, however many seeds
    make its sign certain, is smaller than the metric's own resolution on real data. τ = max(gen_margin · G(0),
    floor) is the slack a σ may *cost* (a policy choice, relative to G(0)); asking an improvement to clear it would
    demand a 25 % gain, not a measurable one. ``floor`` 0 (none measured) reads the sign alone."""
    if upper < 0:
        return "improvement" if -difference >= floor else "better_below_floor"
    if lower > 0:
        return "cost" if difference >= floor else "worse_below_floor"
    return "better" if difference < 0 else "worse" if difference > 0 else "unchanged"


def why_it_fails(judgement: SigmaJudgement, mem_margin: float) -> str:
    """Why a σ that fails the advisor's rule is no recommendation, in words: its memorisation stays above
    ``mem_margin`` with confidence (``mem_side`` "above") and/or its generalisation is worse than σ = 0 by more than
    τ with confidence (``gen_side`` "worse"); for a σ that does not fail, what is still undecided."""
    reasons = []
    if judgement.mem_side == "above":
        reasons.append(f"its memorisation stays above the memorisation margin {mem_margin:g} with confidence (lower "
                       f"bound {judgement.mem_lower:.3g})")
    elif judgement.mem_side == "undecided":
        reasons.append(f"its memorisation is not shown within the memorisation margin {mem_margin:g}")
    if judgement.gen_side == "worse":
        reasons.append("its generalisation is worse than σ = 0's by more than the advisor's margin τ with confidence")
    elif judgement.gen_side == "undecided":
        reasons.append("its generalisation is not shown within the advisor's margin τ")
    return " and ".join(reasons) if reasons else "it passes both margins"


__all__ = ["DEFAULT_SIGMAS", "FIT_LOSS_RATIO", "MAX_SEEDS_ESTIMATE", "STILL_FALLING_RATIO", "SeedAdvice",
           "SigmaJudgement", "advise_over_seeds", "fallback_headline", "fallback_sigma", "finite_number",
           "gen_change_kind", "gen_change_text", "gen_tolerance", "judge_sigma", "loss_converged",
           "memorisation_bounds", "no_cut_remedy", "recommend_sigma", "recommended_headline",
           "require_every_noise_check", "rule_text", "seed_rule_text", "seeds_could_confirm", "seeds_needed",
           "sigma0_memorised", "undecided_headline", "untestable_fix", "why_it_fails"]
