"""Shared by fig4 and fig5 (the Gaussian-variance experiments): the schema both configs share
(:class:`GaussianVarianceConfig`: its fields and checks), the problem N(0, I_d) → N(μ, M) from a config, and the
per-point judgement of "one field's gradient variance is below another's" from R repeated estimates each (one-sided
Welch and Mann–Whitney at α plus a minimum effect, or excluded by the one-sided Welch bound), and the family-wise
level of claims about every point (:func:`refute_level`: a refutation reads each of the k points at α/k). Plain
functions of plain arguments; no experiment imports another.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from scipy import stats as sps

from flowvar.couplings import Coupling
from flowvar.errors import ConfigError
from flowvar.gaussian import GaussianProblem, parametric_residual_rounding_bound
from flowvar.interpolants import NOISE_SCHEDULES, Interpolant, PathSample
from flowvar.loss import CFMLoss
from flowvar.models.parametric import GaussianParametricField
from flowvar.results import Precondition, Verdict
from flowvar.rules import below
from flowvar.stats import compare

Status = Literal["holds", "excluded", "undecided"]


def target_covariance(mean: Sequence[float], cov: Sequence[Sequence[float]] | None,
                      cov_diag: Sequence[float]) -> torch.Tensor:
    """M as a (d, d) float64 tensor: ``cov`` when given (full matrix), else diag(``cov_diag``); d = len(mean) ≥ 2.

    Raises a one-line :class:`ConfigError` for a wrong shape, a non-finite, non-symmetric or not positive definite M.
    """
    d = len(mean)
    if d < 2:
        raise ConfigError(f"mean must have d >= 2 entries (the rotation needs a plane), got {list(mean)}")
    if not all(math.isfinite(m) for m in mean):
        raise ConfigError(f"mean must be finite, got {list(mean)}")
    if cov is None:
        if len(cov_diag) != d or not all(math.isfinite(c) and c > 0 for c in cov_diag):
            raise ConfigError(f"cov_diag must hold d = {d} positive numbers (the diagonal of M), got {list(cov_diag)}; "
                              f"or give the full matrix with --set 'cov=[[..], ..]'")
        return torch.diag(torch.tensor([float(c) for c in cov_diag], dtype=torch.float64))
    rows = [len(r) for r in cov]
    if len(cov) != d or any(n != d for n in rows):
        raise ConfigError(f"cov must be a {d}×{d} matrix to match mean (d = {d}), got {len(cov)} rows of lengths "
                          f"{rows}")
    M = torch.tensor([[float(v) for v in r] for r in cov], dtype=torch.float64)
    if not bool(torch.isfinite(M).all()):
        raise ConfigError("cov must be finite")
    asym = float((M - M.T).abs().max())
    if asym > 1e-12 * max(1.0, float(M.abs().max())):
        raise ConfigError(f"cov must be symmetric, but max|M − Mᵀ| = {asym:.3g}; give a symmetric matrix, e.g. "
                          f"(M + Mᵀ) / 2")
    min_eig = float(torch.linalg.eigvalsh(M).min())
    if min_eig <= 0:
        raise ConfigError(f"cov must be positive definite, but its smallest eigenvalue is {min_eig:.3g}; add a small "
                          f"multiple of the identity or fix the matrix (or give cov_diag for a diagonal one)")
    return M


def unread_covariance_fields(config: Any) -> dict[str, str]:
    """prop1's, fig4's and fig5's ``ignores`` hook (:func:`flowvar.experiments.ignoring`; each module registers it):
    with ``cov`` set, M is that matrix and :func:`target_covariance` never reads ``cov_diag``, so a sweep over it
    would compute the same result at each value; with ``cov`` null every field is read."""
    if config.cov is None:
        return {}
    return {"cov_diag": "when cov is set: M is the full matrix cov, and cov_diag is its diagonal only when cov is "
                        "null (sweep cov, or --set cov=null to sweep cov_diag)"}


@dataclass
class GaussianVarianceConfig:
    """The schema fig4 and fig5 share (each adds its own fields and checks): the run's ``seed``; the problem
    N(0, I_d) → N(``mean``, M) with M = ``cov`` (a full d × d matrix) or diag(``cov_diag``) when ``cov`` is None;
    the rotation's coordinate ``plane`` and the ``angles`` swept; the noise levels ``sigmas`` and ``noise_forms``;
    R = ``repeats`` estimates of K = ``n_samples`` draws per point; the tests' ``alpha`` and ``min_rel_effect``."""

    seed: int
    mean: tuple[float, ...]
    cov_diag: tuple[float, ...]
    cov: tuple[tuple[float, ...], ...] | None
    plane: tuple[int, ...]
    angles: tuple[float, ...]
    sigmas: tuple[float, ...]
    noise_forms: tuple[str, ...]
    n_samples: int
    repeats: int
    alpha: float
    min_rel_effect: float

    def validate(self) -> None:
        """The shared checks: the problem, the plane, σ, noise forms, sizes, α and the minimum effect (a subclass's
        ``validate`` calls this first)."""
        target_covariance(self.mean, self.cov, self.cov_diag)
        d = len(self.mean)
        plane = tuple(self.plane)
        if len(plane) != 2 or plane[0] == plane[1] or not all(0 <= i < d for i in plane):
            raise ConfigError(f"plane must be two distinct axes in 0..{d - 1} (the rotation's coordinate plane), got "
                              f"{list(plane)}")
        if not self.sigmas or any(not (math.isfinite(s) and s >= 0) for s in self.sigmas):
            raise ConfigError(f"sigmas must be finite numbers >= 0, got {list(self.sigmas)}")
        bad = [f for f in self.noise_forms if f not in NOISE_SCHEDULES]
        if not self.noise_forms or bad or len(set(self.noise_forms)) != len(self.noise_forms):
            raise ConfigError(f"noise_forms must be distinct members of {sorted(NOISE_SCHEDULES)}, got "
                              f"{list(self.noise_forms)}")
        if not self.angles:
            raise ConfigError("angles must not be empty")
        if self.n_samples < 2 or self.repeats < 2:
            raise ConfigError(f"n_samples and repeats must be >= 2 (a variance and a two-sample test), got "
                              f"{self.n_samples} and {self.repeats}")
        if not 0 < self.alpha < 0.5:
            raise ConfigError(f"alpha must lie in (0, 0.5), got {self.alpha}")
        if not 0 < self.min_rel_effect < 1:
            raise ConfigError(f"min_rel_effect must lie in (0, 1) (a fraction of the larger mean), got "
                              f"{self.min_rel_effect}")


def welch_terms(a_std: float, n_a: int, b_std: float, n_b: int) -> tuple[float, float]:
    """The standard error of ā − b̄ and its Welch–Satterthwaite degrees of freedom from the two samples' sds (ddof = 1)
    and sizes: se = √(v_a + v_b) with v = s²/n, ν = se⁴ / (v_a²/(n_a − 1) + v_b²/(n_b − 1)) (NaN when se = 0: both
    samples constant). The one source of both for :func:`compare_point` and for points stored without them."""
    va, vb = float(a_std) ** 2 / n_a, float(b_std) ** 2 / n_b
    se = math.sqrt(va + vb)
    den = va**2 / (n_a - 1) + vb**2 / (n_b - 1)
    return se, (se**4 / den if den > 0 else math.nan)


def compare_point(a: np.ndarray, b: np.ndarray, alpha: float) -> dict[str, float]:
    """The numbers that judge "a below b" and "a above b" at one point: means, standard deviations, the one-sided
    Welch and Mann–Whitney p-values both ways, Cohen's d, ``welch_se`` and ``welch_df`` (:func:`welch_terms`), and
    ``half_width`` = t_{1−α, ν} · ``welch_se``, the one-sided (1 − α) Welch half-width of the difference of the means
    (0 when both samples are constant)."""
    less = compare(a, b, alternative="less", alpha=alpha)
    greater = compare(a, b, alternative="greater", alpha=alpha)
    se, df = welch_terms(less.std_a, less.n_a, less.std_b, less.n_b)
    half = float(sps.t.ppf(1 - alpha, df)) * se if se > 0 else 0.0
    return {"a_mean": less.mean_a, "a_std": less.std_a, "b_mean": less.mean_b, "b_std": less.std_b,
            "p_welch_a_lower": less.welch_p, "p_mwu_a_lower": less.mwu_p,
            "p_welch_a_higher": greater.welch_p, "p_mwu_a_higher": greater.mwu_p,
            "half_width": half, "welch_se": se, "welch_df": df, "cohens_d": less.cohens_d}


def _ordering(point: Mapping[str, float], lower: Literal["a", "b"], min_rel: float) -> tuple[float, float, tuple]:
    """(how far ``lower`` lies below the other, the minimum effect m = ``min_rel`` × max(ā, b̄), its two one-sided
    p-values (Welch, Mann–Whitney)) at ``point``."""
    a, b = float(point["a_mean"]), float(point["b_mean"])
    if lower == "a":
        return b - a, min_rel * max(a, b), (point["p_welch_a_lower"], point["p_mwu_a_lower"])
    return a - b, min_rel * max(a, b), (point["p_welch_a_higher"], point["p_mwu_a_higher"])


def one_sided_status(point: Mapping[str, float], *, lower: Literal["a", "b"], alpha: float,
                     min_rel: float) -> Status:
    """Is ``lower`` ("a" or "b") below the other by at least the minimum effect m = ``min_rel`` × max(ā, b̄)?

    ``holds``: both one-sided p-values < α and the difference of the means ≥ m. ``excluded``: the one-sided (1 − α)
    upper bound of the difference (mean difference + ``half_width``) is below m, so the data exclude an effect of
    the minimum size (an ordering the other way included). ``undecided`` otherwise.
    """
    diff, m, ps = _ordering(point, lower, min_rel)
    if all(p < alpha for p in ps) and diff >= m:  # every p below α: a NaN p-value (Python's max drops it) holds nothing
        return "holds"
    if diff + float(point["half_width"]) < m:
        return "excluded"
    return "undecided"


def ordering_p(point: Mapping[str, float], *, lower: Literal["a", "b"], min_rel: float) -> dict[str, float]:
    """The smallest one-sided levels at which "``lower`` below the other by the minimum effect m = ``min_rel`` ×
    max(ā, b̄)" ``holds`` and is ``excluded`` at ``point`` — :func:`one_sided_status` at any level β, as p-values:

    * ``holds``: the larger of the two one-sided p-values (Welch and Mann–Whitney) when the difference of the means
      is ≥ m, else 1; it holds at level β iff this is < β (a NaN p-value: 1, it holds nothing);
    * ``excluded``: the one-sided Welch p-value of "the difference is ≥ m" against "it is < m", F_ν((diff − m)/se)
      with F_ν the t distribution function and se, ν = ``welch_se``, ``welch_df`` (:func:`welch_terms`); excluded at
      level β iff this is < β, i.e. diff + t_{1−β, ν} se < m (at β = α: the ``half_width`` rule). With se = 0 it is
      0 when diff < m and 1 otherwise; with a NaN mean, 1.
    """
    diff, m, ps = _ordering(point, lower, min_rel)
    ps = [float(p) for p in ps]
    holds = max(ps) if diff >= m and not any(math.isnan(p) for p in ps) else 1.0
    se, df = float(point["welch_se"]), float(point["welch_df"])
    if not math.isfinite(diff - m):
        excluded = 1.0
    elif se > 0:
        excluded = float(sps.t.cdf((diff - m) / se, df))
    else:
        excluded = 0.0 if diff < m else 1.0
    return {"holds": holds, "excluded": excluded}


def status_at(p: Mapping[str, float], level: float) -> Status:
    """:func:`one_sided_status` at ``level`` from the point's :func:`ordering_p` numbers ``p``."""
    if p["holds"] < level:
        return "holds"
    return "excluded" if p["excluded"] < level else "undecided"


def refute_level(alpha: float, points: int) -> float:
    """The per-point level a refutation of a claim about every point of a family is judged at: α/k (Bonferroni) for
    k = ``points`` points the rule reads (at least 1).

    Why. "Confirmed" needs every point to hold at α: an intersection–union test, whose error is ≤ α with no
    correction. "Refuted" is reached when *any* point (or any pattern of points) goes against the claim: a union
    over k chances, whose error is about 1 − (1 − α)^k at α per point (a statistics review: 0.48 at k = 88 with the
    true difference at the minimum effect everywhere). Each refuting pattern needs at least one point decided
    against the truth, so judging every point at α/k keeps P(false refutation) ≤ k · α/k = α."""
    return float(alpha) / max(int(points), 1)


def resolution(point: Mapping[str, float], min_rel: float) -> float:
    """``half_width`` / (``min_rel`` × max(ā, b̄)): below 1, a zero difference would be excluded and a difference of
    twice the minimum effect would be significant by Welch, so the point can be decided either way (inf when both
    means are 0)."""
    m = min_rel * max(float(point["a_mean"]), float(point["b_mean"]))
    return float(point["half_width"]) / m if m > 0 else math.inf


def mwu_floor(repeats: int) -> float:
    """The smallest one-sided Mann–Whitney p-value two samples of ``repeats`` values can reach: 1/C(2R, R)."""
    return 1.0 / math.comb(2 * repeats, repeats)


def unresolved(points: Mapping[str, tuple[Mapping[str, Any], str]], min_rel: float) -> list[str]:
    """The labels of ``points`` ({label: (point, status_key)}) left undecided for lack of precision: their status
    is "undecided" (or "unresolved") and their :func:`resolution` is ≥ 1. (An undecided point with a finer
    resolution sits near the minimum effect: that is an inconclusive outcome, not a lack of data.)"""
    return [k for k, (p, key) in points.items()
            if p[key] in ("undecided", "unresolved") and resolution(p, min_rel) >= 1]


def rule_ot_lower_with_noise(evidence: Mapping[str, Any]) -> Verdict:
    """Reading (ii): ``evidence["status"]`` maps each of the k noisy points to the :func:`one_sided_status` of "OT
    below the pair-optimal field" at α = ``evidence["alpha"]``, and ``evidence["p_excluded"]`` each point to its
    exclusion p-value (:func:`ordering_p`). Refuted if any point is excluded at the family level α/k
    (:func:`refute_level`: one excluded point refutes, so each is judged at α/k and a false refutation has
    probability ≤ α); confirmed if every point ``holds`` at α (all must: no correction); else (or with no points)
    inconclusive."""
    statuses = evidence["status"]
    level = refute_level(evidence["alpha"], len(statuses))
    if any(float(evidence["p_excluded"][k]) < level for k in statuses):
        return "refuted"
    if statuses and all(s == "holds" for s in statuses.values()):
        return "confirmed"
    return "inconclusive"


def every_point_evidence(points: Mapping[str, Mapping[str, Any]], status_key: str, *, lower: Literal["a", "b"],
                         alpha: float, min_rel: float) -> dict[str, Any]:
    """The judged part of an "at every point" claim's evidence (:func:`rule_ot_lower_with_noise`) from its compared
    ``points`` ({label: point with its status under ``status_key``}): the statuses at α and their counts, the
    family's refute level α/k, each point's exclusion p-value, and the points excluded at α (reported) and at α/k
    (what refutes)."""
    status = {k: p[status_key] for k, p in points.items()}
    p_excluded = {k: ordering_p(p, lower=lower, min_rel=min_rel)["excluded"] for k, p in points.items()}
    level = refute_level(alpha, len(status))
    return {"points": len(status), "holds": sum(s == "holds" for s in status.values()),
            "excluded": [k for k, s in status.items() if s == "excluded"],
            "undecided": [k for k, s in status.items() if s == "undecided"],
            "alpha": alpha, "refute_level": level,
            "excluded_at_refute_level": [k for k, p in p_excluded.items() if p < level],
            "status": status, "p_excluded": p_excluded}


FAMILY_TEXT = ("a refutation reads every point at α/k (Bonferroni over the k points the rule reads: any one point "
               "can refute, so each is judged at α/k and a false refutation has probability ≤ α); a confirmation "
               "needs every point at α (an intersection, valid at α without correction)")
"""The family-wise logic of the "at every point" rules, for their ``rule`` texts and the ``test`` choice."""


def problem_of(config: Any) -> GaussianProblem:
    return GaussianProblem(torch.tensor(config.mean, dtype=torch.float64),
                           target_covariance(config.mean, config.cov, config.cov_diag))


def problem_text(config: Any, problem: GaussianProblem) -> str:
    """μ, M (as given: full or diagonal), d and where M came from."""
    src = "the full matrix `cov`" if config.cov is not None else "diag(`cov_diag`)"
    M = [[round(float(v), 6) for v in row] for row in problem.cov]
    return f"μ = {list(config.mean)}, M = {M} (from {src}), d = {problem.dim}"


def rotation_text(config: Any, d: int) -> str:
    i, j = config.plane
    rest = "" if d == 2 else f", the identity on the other {d - 2} ax{'is' if d == 3 else 'es'}"
    return (f"R = rotation by the angle in the coordinate plane (x{i}, x{j}): [[cos a, −sin a], [sin a, cos a]]"
            f"{rest} (flowvar.gaussian.rotation_matrix); T_R(x0) = μ + M^{{1/2}} R x0")


def parameters_text(d: int) -> str:
    return (f"tr Cov(g) of the per-sample gradient g = ∇ℓ over all d + d² = {d + d * d} parameters of the Lemma-1 "
            f"class (θ ∈ R^{d}, Θ ∈ R^{d}×{d}; closed-form gradients), at fixed parameters; the randomness is x0, "
            f"t ~ U(0, 1), the noise z, and x1 for the independent coupling; plug-in estimate (divides by K)")


def tests_text(config: Any) -> str:
    return (f"R = {config.repeats} independent estimates per point, each from K = {config.n_samples} draws, "
            f"independent seeds per arm; a point's ordering holds when one-sided Welch and Mann–Whitney tests both "
            f"give p < α = {config.alpha} and the means differ by ≥ {config.min_rel_effect:g} × the larger mean; it "
            f"is excluded when the one-sided (1 − α) Welch upper bound of the difference is below that. Claims "
            f"about every point: {FAMILY_TEXT}")


PRECISION_REMEDY = "raise repeats (R) or n_samples (K): the half-width shrinks like 1/√(R·K)"


def precision_precondition(verdict: Verdict, points: Mapping[str, tuple[Mapping[str, Any], str]],
                           structural: Precondition, *, repeats: int, alpha: float, min_rel: float) -> Precondition:
    """The precondition of a claim whose rule gave ``verdict`` on ``points`` ({label: (point, status key)}).

    ``structural`` (what the sweep must contain) must always hold. Precision — R large enough for a one-sided
    Mann–Whitney p < α (:func:`mwu_floor`) and no point undecided for lack of precision (:func:`unresolved`) — is
    asked only of an outcome other than "refuted": a refutation rests on decided points alone (a point excluded by its
    one-sided Welch bound at the family level α/k, :func:`refute_level`, which needs no Mann–Whitney test), so
    under-resolved points elsewhere cannot undo it, whereas a confirmation or an inconclusive outcome could change once
    they are decided.
    """
    floor = mwu_floor(repeats)
    left = unresolved(points, min_rel)
    precise = floor < alpha and not left
    return Precondition(
        f"{structural.statement}; and, unless the rule refutes (a refutation rests on decided points only), R is "
        f"large enough for a one-sided Mann–Whitney p < α (1/C(2R, R) < {alpha}) and no point the rule reads is "
        f"undecided for lack of precision (undecided with a one-sided (1 − α) half-width of the difference ≥ "
        f"{min_rel:g} × the larger mean)",
        structural.holds and (precise or verdict == "refuted"),
        {**structural.measured, "repeats": repeats, "mwu_min_p": floor, "points_read": len(points),
         "undecided_for_precision": left, "precision_holds": precise,
         "max_half_width_over_min_effect": max((resolution(p, min_rel) for p, _ in points.values()),
                                               default=math.nan)},
        remedy=PRECISION_REMEDY if structural.holds else f"{structural.remedy}; {PRECISION_REMEDY}")


# --------------------------------------------------------------------------------------------- Prop 1(A)'s zero


DRAW_CHUNK = 16384
"""Paths per draw of the Gaussian experiments' variance estimates and of :func:`residual_check`: with the same
generator and chunk, the check sees the estimate's own K paths (estimate_variance's default too)."""

ZERO_CONFIRM_RATIO = 1.0
"""Largest ‖r_b‖ / rounding bound of a residual that is zero in exact arithmetic
(:func:`flowvar.gaussian.parametric_residual_rounding_bound`): below 1 every residual is float64 rounding (measured
ratios stay below 0.03)."""

ZERO_REFUTE_RATIO = 100.0
"""Above 100 × its bound a residual is not rounding: the bound's constant counts operations (growth factors and norm
conversions change it by a small factor, not 100); in between is inconclusive. For prop1's default problem a field
whose θ or Θ is off by 1e-12 lands in between (ratio 8 to 50), one off by 1e-6 far above (~1e7)."""


def zero_residual_verdict(ratios: Iterable[float]) -> Verdict:
    """Prop 1(A)'s verdict from each arm's (or angle's) max_b ‖r_b‖ / bound_b (:func:`residual_check`): "confirmed"
    if the largest is < :data:`ZERO_CONFIRM_RATIO` (every residual is float64 rounding, so the loss and every
    per-sample gradient 2A_t⁻ᵀ r wᵀ are zero), "refuted" if one is > :data:`ZERO_REFUTE_RATIO` or NaN (numpy's max
    keeps a NaN wherever it is), "inconclusive" in between or with no ratio (no evidence either way)."""
    values = [float(r) for r in ratios]
    if not values:
        return "inconclusive"
    return below(float(np.max(values)), confirm_below=ZERO_CONFIRM_RATIO, refute_above=ZERO_REFUTE_RATIO)


def _drawn_residuals(field: GaussianParametricField, loss: CFMLoss, coupling: Coupling, n_samples: int,
                     generator: torch.Generator, draw_chunk: int) -> Iterator[tuple[PathSample, torch.Tensor]]:
    """K = ``n_samples`` paths drawn with ``loss.draw(coupling, ·, generator)`` ``draw_chunk`` at a time — as
    :func:`~flowvar.variance.estimate_variance` draws them with that ``draw_chunk``, so the same ``generator`` seed
    gives the estimate's own paths — each chunk with ‖r_b‖, r_b = ``field``(x_t,b, t_b) − u_b of shape (B, d): the
    module's own forward, not a closed form, so a wrong field or a wrong forward shows."""
    with torch.no_grad():
        for start in range(0, n_samples, draw_chunk):
            path = loss.draw(coupling, min(draw_chunk, n_samples - start), generator)
            yield path, (field(path.xt, path.t) - path.target).norm(dim=1)


def _finite_parameters(theta: torch.Tensor, Theta: torch.Tensor) -> bool:
    """Whether a field's θ and Θ are finite: a NaN one makes every residual NaN (max_ratio NaN: "refuted" by
    :func:`zero_residual_verdict`), and the rounding bound refuses it rather than turn NaN itself."""
    return bool(torch.isfinite(theta).all()) and bool(torch.isfinite(Theta).all())


def residual_check(field: GaussianParametricField, coupling: Coupling, n_samples: int, generator: torch.Generator,
                   draw_chunk: int) -> dict[str, float]:
    """Prop 1(A)'s zero, per sample: r_b = ``field``(x_t,b, t_b) − (x1_b − x0_b), shape (B, d), on K = ``n_samples``
    deterministic paths of ``coupling`` drawn ``draw_chunk`` at a time (:func:`_drawn_residuals`: the variance
    estimate's own paths for the same ``generator`` seed), each against its float64 rounding bound
    (:func:`flowvar.gaussian.parametric_residual_rounding_bound` at the field's θ and Θ; the paths lie on the
    field's own lines, x1 = θ + (I + Θ) x0, as the bound assumes).

    Per sample, unlike the Monte-Carlo trace: near a singular time A_t⁻¹ amplifies rounding and the bound grows with
    ‖A_t⁻¹‖ as the residual does, so the ratio stays O(1) at every non-singular angle and does not grow with K, while
    an absolute threshold on the trace does not (1e-20 failed fig4 at 143°, 0.13° from the singular range of
    M = diag(4, 0.25)).

    Returns ``max_ratio`` (max_b ‖r_b‖ / bound_b; NaN if any residual is NaN), ``t_at_max_ratio``,
    ``max_abs_residual`` (max_b ‖r_b‖, large near a singular time by rounding alone) and ``median_bound`` (the
    typical resolution: a field off by more than ~this is caught).
    """
    theta, Theta = field.theta.detach(), field.Theta.detach()
    if not _finite_parameters(theta, Theta):  # a diverged field: every residual is NaN, the bound undefined
        return dict.fromkeys(("max_ratio", "t_at_max_ratio", "max_abs_residual", "median_bound"), math.nan)
    ratios, times, residuals, bounds = [], [], [], []
    for path, r in _drawn_residuals(field, CFMLoss(Interpolant(0.0)), coupling, n_samples, generator, draw_chunk):
        bound = parametric_residual_rounding_bound(theta, Theta, path.x0, path.x1, path.t)
        ratios.append(r / bound)
        times.append(path.t)
        residuals.append(r)
        bounds.append(bound)
    ratio = torch.cat(ratios)
    worst = int(torch.argmax(torch.nan_to_num(ratio, nan=math.inf)))
    return {"max_ratio": float(ratio.max()) if not bool(ratio.isnan().any()) else math.nan,
            "t_at_max_ratio": float(torch.cat(times)[worst]), "max_abs_residual": float(torch.cat(residuals).max()),
            "median_bound": float(torch.cat(bounds).median())}


def departure_check(field: GaussianParametricField, coupling: Coupling, loss: CFMLoss, n_samples: int,
                    generator: torch.Generator, draw_chunk: int) -> dict[str, float]:
    """The converse of :func:`residual_check`: on paths that leave the field's own lines — interpolant noise, or a
    coupling that is not the field's — is the residual resolved above float64 rounding, and could it be at all?

    Paths as :func:`_drawn_residuals` draws them with ``loss`` (its plain target u = x1 − x0): the estimate's own
    paths for the same ``generator`` seed (common random numbers). With T(x) = θ + (I + Θ)x the field's own map and
    A_t = I + tΘ, a path departs from the field's line through x0 by e_b = x_t − (1 − t)x0 − tT(x0) (noise: f(t)z)
    and its target by δ_b = x1 − T(x0) (another coupling), and the exact residual is r_b = ΘA_t⁻¹e_b − δ_b
    (noise: f(t)ΘA_t⁻¹z; the OT field under T_R: −A_t⁻¹δ_b).

    * The bound: x_t = (1 − t)w + tT(w) with w = A_t⁻¹(x_t − tθ), so the forward at x_t is the forward on the field's
      own line of the pair (w, T(w)); its rounding is bounded by the helper there, and the target x1 − x0 and the
      forming of x_t by the helper at the drawn pair: bound_b = H(θ, Θ, x0, x1, t) + H(θ, Θ, w, T(w), t), with H =
      :func:`flowvar.gaussian.parametric_residual_rounding_bound` (one source of the formula; on the field's own
      lines w = x0 and one term suffices, as in :func:`residual_check`).
    * The resolvability: U_b = (‖e_b‖ + ‖δ_b‖) / H(θ, 0, x0, x1, t), the departure in units of the bound's Θ-free
      part γ(‖θ‖ + ‖x1‖ + 2‖x0‖). Since ‖ΘA_t⁻¹‖ and ‖A_t⁻¹‖ = ‖I − tΘA_t⁻¹‖ are ≤ 1 + ‖Θ‖‖A_t⁻¹‖, the factor in front
      of the bound, every field of the class has ‖r̂_b‖ / bound_b ≤ U_b + 1 on these paths: where the median U_b is
      ≤ 99, no float64 evaluation of any such field could show a typical residual 100 × above its rounding.

    Returns ``max_ratio`` and ``median_ratio`` (of ‖r_b‖ / bound_b; NaN if any residual is NaN),
    ``t_at_max_ratio``, ``max_abs_residual``, ``median_bound`` and ``median_departure`` (the median U_b; it scales
    like σ for noise and like the rotation's |R − I| for a coupling).
    """
    if loss.interpolant.target_kind != "plain":
        raise ConfigError(f"departure_check bounds the rounding of the plain target x1 − x0; got "
                          f"{loss.interpolant!r}: use Interpolant(sigma, noise) (target='plain')")
    theta, Theta = field.theta.detach(), field.Theta.detach()
    if not _finite_parameters(theta, Theta):
        return dict.fromkeys(("max_ratio", "median_ratio", "t_at_max_ratio", "max_abs_residual", "median_bound",
                              "median_departure"), math.nan)
    eye = torch.eye(Theta.shape[0], dtype=torch.float64)
    ratios, times, residuals, bounds, departures = [], [], [], [], []
    for path, r in _drawn_residuals(field, loss, coupling, n_samples, generator, draw_chunk):
        t = path.t[:, None]
        w = torch.linalg.solve(eye + t[:, :, None] * Theta, (path.xt - t * theta).unsqueeze(-1)).squeeze(-1)
        bound = (parametric_residual_rounding_bound(theta, Theta, path.x0, path.x1, path.t)
                 + parametric_residual_rounding_bound(theta, Theta, w, theta + w + w @ Theta.T, path.t))
        own = theta + path.x0 + path.x0 @ Theta.T  # T(x0): where the field's line through x0 ends
        departure = (path.xt - (1 - t) * path.x0 - t * own).norm(dim=1) + (path.x1 - own).norm(dim=1)
        departures.append(departure / parametric_residual_rounding_bound(theta, torch.zeros_like(Theta), path.x0,
                                                                         path.x1, path.t))
        ratios.append(r / bound)
        times.append(path.t)
        residuals.append(r)
        bounds.append(bound)
    ratio = torch.cat(ratios)
    nan = bool(ratio.isnan().any())
    worst = int(torch.argmax(torch.nan_to_num(ratio, nan=math.inf)))
    return {"max_ratio": math.nan if nan else float(ratio.max()),
            "median_ratio": math.nan if nan else float(ratio.median()),
            "t_at_max_ratio": float(torch.cat(times)[worst]), "max_abs_residual": float(torch.cat(residuals).max()),
            "median_bound": float(torch.cat(bounds).median()),
            "median_departure": float(torch.cat(departures).median())}


__all__ = [
    "DRAW_CHUNK",
    "FAMILY_TEXT",
    "PRECISION_REMEDY",
    "ZERO_CONFIRM_RATIO",
    "ZERO_REFUTE_RATIO",
    "GaussianVarianceConfig",
    "compare_point",
    "departure_check",
    "every_point_evidence",
    "mwu_floor",
    "one_sided_status",
    "ordering_p",
    "parameters_text",
    "precision_precondition",
    "problem_of",
    "problem_text",
    "refute_level",
    "residual_check",
    "resolution",
    "rotation_text",
    "rule_ot_lower_with_noise",
    "status_at",
    "target_covariance",
    "tests_text",
    "unresolved",
    "welch_terms",
    "zero_residual_verdict",
]
