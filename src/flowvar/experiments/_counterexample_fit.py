"""When has a network trained on the 180° + μ coupling fitted it? The fit allowance shared by ``fig6`` and
``solver_resolution`` (no experiment may import another; one source for the formula and its margin).

A network's training loss minus the exact minimum L_min(σ) (:func:`flowvar.metrics.counterexample_min_loss`) must
not exceed :func:`fit_allowance`. For σ = 0 the allowance is set against the contrast field, the exact CFM(σ_c)
minimiser, whose flow is the translation: its σ = 0 loss (:func:`sigma0_loss_of_exact_minimiser`) times
:data:`SIGMA0_FIT_FRACTION`.

What that allowance admits decides where a σ = 0 claim can be judged. It admits every field as blurred as the exact
CFM(σ_eq) minimiser, σ_eq the σ whose σ = 0 loss equals the allowance (:func:`fit_equivalent_sigma`, ≈ σ_c/2). On an
odd Euler grid that minimiser reproduces the rotation pairs only when its window is narrow against the step
(σ < σ*_n ≈ 0.30 h, :func:`largest_reproducing_sigma`, from the closed form :func:`exact_euler_ratio`), and a smaller
σ reproduces wherever a larger one does (:func:`exact_euler_ratio`'s monotonicity). So a σ = 0 claim "reproduces" is
judged only where the exact CFM(σ_eq) minimiser reproduces too (:class:`FitEquivalent`): there every field the
precondition admits would reproduce if the claim held; elsewhere a fitted network that fails does what an admitted
field is expected to do.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from flowvar.errors import ConfigError
from flowvar.metrics import counterexample_min_loss
from flowvar.results import Precondition

SIGMA0_FIT_FRACTION = 0.5
"""A σ = 0 network counts as fitted when its σ = 0 loss is at most this fraction of the contrast field's σ = 0 loss
(:func:`sigma0_loss_of_exact_minimiser` at the contrast σ). Why half: that loss is ≈ πdσ for small σ (linear:
2d·σ·arctan(1/σ) → 2d·σ·π/2; 0.3141 at σ = 0.05, d = 2), so half of it is ≈ the σ = 0 loss of the exact minimiser at
σ_c/2 (within 1 % for σ_c ≤ 0.2): a fitted σ = 0 network separates the crossing lines at least as sharply as noise
σ_c/2 would, i.e. clearly nearer the σ = 0 field than the contrast field it is to be told apart from."""


def sigma0_loss_of_exact_minimiser(sigma: float, dim: int = 2) -> float:
    """The σ = 0 CFM loss (x_t = tμ + s x0, s = 1 − 2t, target u = μ − 2x0) of the exact CFM(σ) minimiser.

    That minimiser is v_σ(x, t) = μ − 2s/(s² + σ²)·(x − tμ); on the σ = 0 line x − tμ = s x0 its error is
    v_σ − u = 2σ²/(s² + σ²)·x0, so E‖v_σ − u‖² = 4d σ⁴/(s² + σ²)², and averaged over s ~ U(−1, 1):

        L_0(v_σ) = 2d (σ²/(1 + σ²) + σ·arctan(1/σ))      (our derivation; 0 at σ = 0; 0.314 at σ = 0.05, d = 2)

    using ∫_0^1 ds/(s² + σ²)² = 1/(2σ²(1 + σ²)) + arctan(1/σ)/(2σ³). It is the σ = 0 loss of a field that is
    smooth across t = ½ on the scale σ; the exact σ minimiser's flow is the translation x0 ↦ x0 + μ. Scale: 4d,
    the loss of the best constant field. Raises ConfigError for σ < 0 or non-finite σ.
    """
    if not math.isfinite(sigma) or sigma < 0:
        raise ConfigError(f"sigma must be a finite number >= 0, got {sigma}")
    if sigma == 0:
        return 0.0
    return 2.0 * dim * (sigma * sigma / (1.0 + sigma * sigma) + sigma * math.atan(1.0 / sigma))


def fit_allowance(sigma: float, contrast_sigma: float, dim: int = 2) -> float:
    """The excess training loss (over L_min(σ)) up to which a network at noise σ counts as having fitted the coupling.

    σ = 0: :data:`SIGMA0_FIT_FRACTION` × :func:`sigma0_loss_of_exact_minimiser` (``contrast_sigma``), so the exact
    CFM(σ_c) minimiser, whose flow is the translation, does not pass as a σ = 0 network that fitted the rotation
    (0.157 at σ_c = 0.05, d = 2). σ > 0: L_min(``contrast_sigma``) (:func:`flowvar.metrics.counterexample_min_loss`),
    the loss noise σ_c cannot avoid; the σ = 0 field, the alternative there, has an unbounded σ > 0 loss (its
    1/(1 − 2t) blows up at t = ½ where the noisy samples spread), so no tighter contrast exists.
    """
    if sigma == 0:
        return SIGMA0_FIT_FRACTION * sigma0_loss_of_exact_minimiser(contrast_sigma, dim)
    return counterexample_min_loss(contrast_sigma, dim)


def fit_allowance_text(sigma: float, contrast_sigma: float, dim: int = 2) -> str:
    """How :func:`fit_allowance` is set, in words with its value (the preconditions' and choices' text)."""
    allowed, scale = fit_allowance(sigma, contrast_sigma, dim), 4.0 * dim
    if sigma == 0:
        full = sigma0_loss_of_exact_minimiser(contrast_sigma, dim)
        return (f"{SIGMA0_FIT_FRACTION:g} × {full:.4g} (the σ = 0 loss of the exact CFM({contrast_sigma:g}) "
                f"minimiser, 2d(σ²/(1 + σ²) + σ·arctan(1/σ))) = {allowed:.4g} = {allowed / scale:.3g} × {scale:g} "
                f"(the loss of the best constant field); at the full contrast loss the translation field itself would "
                f"pass")
    return (f"L_min({contrast_sigma:g}) = {allowed:.4g} = {allowed / scale:.3g} × {scale:g} (the loss of the best "
            f"constant field)")


def sigma_of_sigma0_loss(loss: float, dim: int = 2) -> float:
    """The inverse of :func:`sigma0_loss_of_exact_minimiser`: the σ ≥ 0 whose exact CFM(σ) minimiser has σ = 0 loss
    ``loss``.

    L_0(σ) = 2d(σ²/(1 + σ²) + σ·arctan(1/σ)) rises strictly from 0 (σ = 0) towards 4d (σ → ∞): both terms do
    (d/dσ σ·arctan(1/σ) = arctan(1/σ) − σ/(1 + σ²) > 0, as arctan x > x/(1 + x²) for x > 0), so the σ is unique;
    found by bisection to machine precision. Raises ConfigError for a loss outside [0, 4d) (4d, the loss of the
    best constant field, is no σ's).
    """
    if not math.isfinite(loss) or not 0 <= loss < 4.0 * dim:
        raise ConfigError(f"a σ = 0 loss must be in [0, 4d = {4.0 * dim:g}) to be some exact minimiser's, got {loss}")
    if loss == 0:
        return 0.0
    hi = 1.0
    while sigma0_loss_of_exact_minimiser(hi, dim) < loss:
        hi *= 2.0
    return _boundary(lambda sigma: sigma0_loss_of_exact_minimiser(sigma, dim) < loss, 0.0, hi)[1]


def _boundary(below: Callable[[float], bool], lo: float, hi: float) -> tuple[float, float]:
    """(lo, hi) bisected to adjacent floats (or 200 halvings) around where ``below`` turns False: ``below`` is True at
    ``lo``, False at ``hi`` and changes once between them."""
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if mid in (lo, hi):
            break
        lo, hi = (mid, hi) if below(mid) else (lo, mid)
    return lo, hi


def fit_equivalent_sigma(contrast_sigma: float, dim: int = 2) -> float:
    """σ_eq: the σ whose exact CFM(σ) minimiser's σ = 0 loss equals the σ = 0 fit allowance
    (:func:`fit_allowance` (0, ``contrast_sigma``)), so the most blurred exact minimiser that passes as a fitted σ = 0
    network (0.02500 at σ_c = 0.05, d = 2: the loss is ≈ πdσ, so σ_eq ≈ :data:`SIGMA0_FIT_FRACTION` × σ_c)."""
    return sigma_of_sigma0_loss(fit_allowance(0.0, contrast_sigma, dim), dim)


def exact_euler_ratio(sigma: float, n: int) -> float:
    """r_n(σ): Euler with ``n`` uniform steps on the exact CFM(σ) minimiser maps y = x − tμ from x0 to r_n(σ)·x0.

    The field gives y' = −2s/(s² + σ²)·y (s = 1 − 2t), and one Euler step from s_k (s_{k+1} = s_k − 2h, h = 1/n)
    multiplies y by 1 − 2h s_k/(s_k² + σ²) = (s_k s_{k+1} + σ²)/(s_k² + σ²), so

        r_n(σ) = Π_{k=0}^{n−1} (s_k s_{k+1} + σ²)/(s_k² + σ²),   s_k = 1 − 2k/n        (our derivation)

    (σ = 0 and odd n: exactly −1, the rotation R x0 + μ; σ = 0 and even n: undefined, a node at s = 0, so NaN). The
    endpoint is x0 + μ + (r − 1)·x0: nearer R x0 + μ iff r < 0, at mean distance |1 + r|/2 × the gap 2‖x0‖, for every
    source alike; :func:`exact_euler_status` reads the status off it.

    **Monotone in σ on odd grids** (what judging a σ = 0 claim at σ_eq relies on: a smaller σ reproduces wherever a
    larger one does). The grid is symmetric, s_{n−k} = −s_k, so the steps pair up: step k with step n−1−k gives
    (ab + σ²)²/((a² + σ²)(b² + σ²)) = 1 − 4h²σ²/((a² + σ²)(b² + σ²)) ∈ (0, 1] (a = s_k, b = s_{k+1}, |a|, |b| ≥ h),
    and the middle step (a = h, b = −h) gives M = (σ² − h²)/(σ² + h²). For σ < h, M < 0 rises towards 0 and each pair
    factor falls (u/((A + u)(B + u)) rises in u = σ² while u < |ab|, and |ab| ≥ h² > σ²), so |r| = |M|·Π falls and r
    rises strictly from −1; for σ ≥ h, M ≥ 0 and r ≥ 0 (the translation side). Hence on odd n the σ at which the
    exact minimiser reproduces (r ≤ −1 + 2e) form an interval [0, σ*_n) (:func:`largest_reproducing_sigma`). Even n
    (σ > 0): the step onto s = 0 multiplies y by σ²/(4h² + σ²) > 0 and the next by 1, so r > 0 and they never
    reproduce. Raises ConfigError for σ < 0 or n < 1.
    """
    if not math.isfinite(sigma) or sigma < 0 or n < 1:
        raise ConfigError(f"exact_euler_ratio needs σ >= 0 and n >= 1 steps, got σ = {sigma}, n = {n}")
    ratio = 1.0
    for k in range(n):
        a, b = 1.0 - 2.0 * k / n, 1.0 - 2.0 * (k + 1) / n
        denominator = a * a + sigma * sigma
        if denominator == 0.0:  # σ = 0 on an even grid: the field is undefined at the node s = 0
            return math.nan
        ratio *= (a * b + sigma * sigma) / denominator
    return ratio


def exact_euler_status(sigma: float, n: int, reproduce_rel_error: float) -> str:
    """The status (:func:`flowvar.metrics.rotation_pairing_status`) of the exact CFM(σ) minimiser on Euler with ``n``
    steps, from :func:`exact_euler_ratio` r: every endpoint is on the rotation side iff r < 0 (fraction 1, so any
    ``reproduce_fraction`` ≤ 1 is met), at mean distance |1 + r|/2 × the gap: "reproduces" if r < 0 and
    |1 + r|/2 ≤ ``reproduce_rel_error``, "fails" if r ≥ 0, "partial" otherwise; "failed" where the field is undefined
    (σ = 0, even n)."""
    r = exact_euler_ratio(sigma, n)
    if math.isnan(r):
        return "failed"
    if r < 0 and abs(1.0 + r) / 2.0 <= reproduce_rel_error:
        return "reproduces"
    return "fails" if r >= 0 else "partial"


def largest_reproducing_sigma(n: int, reproduce_rel_error: float) -> float:
    """σ*_n: on an odd Euler grid of ``n`` steps the exact CFM(σ) minimiser reproduces the rotation pairs for
    0 ≤ σ < σ*_n and not above (an interval, by :func:`exact_euler_ratio`'s monotonicity); bisection on [0, h].
    ≈ 0.3025/n at ``reproduce_rel_error`` = 0.1 (0.0275 at n = 11, 0.0144 at 21, 0.0059 at 51). Raises ConfigError
    for an even ``n`` (no σ > 0 reproduces there) or a rel error outside (0, 1)."""
    if n < 1 or n % 2 == 0 or not 0 < reproduce_rel_error < 1:
        raise ConfigError(f"largest_reproducing_sigma needs an odd step count and a rel error in (0, 1), got n = {n}, "
                          f"{reproduce_rel_error}")
    # r_n(h) = 0: at σ = h the middle step lands on μ/2
    return _boundary(lambda sigma: exact_euler_status(sigma, n, reproduce_rel_error) == "reproduces", 0.0, 1.0 / n)[0]


def _euler_steps(setting: str) -> int | None:
    """``euler_<n>`` → n; None for any other solver."""
    method, _, steps = setting.partition("_")
    return int(steps) if method == "euler" and steps.isdigit() else None


@dataclass(frozen=True)
class FitEquivalent:
    """The exact CFM(σ_eq) minimiser (σ_eq = :func:`fit_equivalent_sigma` (``contrast_sigma``)) on a claim's solvers:
    the field the σ = 0 fit precondition admits at its edge, and the settings on which a σ = 0 "reproduces" claim can
    therefore be judged.

    ``status``: solver → that minimiser's status there (:func:`flowvar.metrics.rotation_pairing_status` on the
    run's own sources; "failed" for a stopped solver), measured by the experiment as its other exact rows are;
    ``reproduce_rel_error``: the status rule's threshold (for :func:`largest_reproducing_sigma` in the remedy).

    Rule (:meth:`split`): a setting is judged only if the exact CFM(σ_eq) minimiser reproduces there. By the
    monotonicity of :func:`exact_euler_ratio`, on an odd Euler grid every exact CFM(σ) minimiser with σ ≤ σ_eq then
    reproduces too, as does the σ = 0 field: every field the precondition admits would show the claimed status if
    the claim held, so a network's "fails" there is evidence against it. Elsewhere (finer odd grids, h < σ_eq/0.30;
    dopri5, which follows the minimiser's translation; grids that stop the σ = 0 field) a fitted network that fails
    does what an admitted field is expected to do, and the setting is not judged.
    """

    sigma: float
    contrast_sigma: float
    status: Mapping[str, str]
    reproduce_rel_error: float
    dim: int = 2

    @property
    def allowance(self) -> float:
        """The σ = 0 fit allowance σ_eq stands for: :func:`fit_allowance` (0, contrast σ)."""
        return fit_allowance(0.0, self.contrast_sigma, self.dim)

    def why_not(self, setting: str) -> str:
        """Why ``setting`` is not judged (for the evidence's not-judged lists)."""
        status = str(self.status.get(setting, "not evaluated"))
        what = "stops there" if status.startswith("failed") else f"is '{status}' there"
        return (f"not judged: the exact CFM({self.sigma:.4g}) minimiser, as blurred a field as the σ = 0 fit "
                f"allowance admits (its σ = 0 loss is the allowance {self.allowance:.4g}), {what}: a σ = 0 network "
                f"that fitted the coupling need not reproduce the pairs there even if the claim held")

    def split(self, settings: Sequence[str]) -> tuple[list[str], dict[str, str]]:
        """(the settings judged, in order: those where the exact CFM(σ_eq) minimiser reproduces; {setting: why not}
        for the rest)."""
        judged = [s for s in settings if self.status.get(s) == "reproduces"]
        return judged, {s: self.why_not(s) for s in settings if s not in judged}

    def precondition(self, candidates: Sequence[str]) -> Precondition:
        """"Some setting on which every field the σ = 0 fit allowance admits would reproduce": holds when the exact
        CFM(σ_eq) minimiser reproduces on one of ``candidates`` (the settings the claim's other rules would judge).
        Measured: σ_eq, the allowance, that minimiser's status on each candidate, the settings left, and per odd
        Euler candidate σ*_n (:func:`largest_reproducing_sigma`), the σ below which it would be judged. Remedy:
        the allowance (and training to meet it) that would leave the coarsest odd Euler candidate judged."""
        judged, _ = self.split(candidates)
        odd = sorted(n for s in candidates if (n := _euler_steps(s)) is not None and n % 2 == 1)
        largest = {f"euler_{n}": largest_reproducing_sigma(n, self.reproduce_rel_error) for n in odd}
        contrast_loss = sigma0_loss_of_exact_minimiser(self.contrast_sigma, self.dim)
        if odd:
            star = largest[f"euler_{odd[0]}"]
            needed = sigma0_loss_of_exact_minimiser(star, self.dim)
            remedy = (f"tighten the σ = 0 fit allowance (now {SIGMA0_FIT_FRACTION:g} × {contrast_loss:.4g} = "
                      f"{self.allowance:.4g}, σ_eq = {self.sigma:.4g}) below {needed:.4g} "
                      f"({needed / contrast_loss:.2g} × the contrast field's σ = 0 loss: σ_eq < σ*_{odd[0]} = "
                      f"{star:.4g}, so that σ_eq's window is narrow against Euler {odd[0]}'s step 1/{odd[0]}) and "
                      f"train the σ = 0 networks longer until their loss is within it")
        else:
            coarse = 1  # the finest odd grid on which the exact CFM(σ_eq) minimiser still reproduces (σ*_n falls in n)
            while largest_reproducing_sigma(coarse + 2, self.reproduce_rel_error) > self.sigma:
                coarse += 2
            remedy = (f"add an odd Euler grid of at most {coarse} steps (there the exact CFM({self.sigma:.4g}) "
                      f"minimiser reproduces) that the claim's other rules judge too, or tighten the σ = 0 fit "
                      f"allowance (now {self.allowance:.4g}) and train the σ = 0 networks until they meet it")
        return Precondition(
            f"some setting on which every field the σ = 0 fit allowance admits would reproduce the pairs if the claim "
            f"held: the exact CFM(σ_eq = {self.sigma:.4g}) minimiser, whose σ = 0 loss is the allowance "
            f"{self.allowance:.4g}, reproduces there (and so, on odd Euler grids, every smaller σ; "
            f"_counterexample_fit.FitEquivalent)",
            holds=bool(judged),
            measured={"fit_equivalent_sigma": self.sigma, "allowed_excess": self.allowance,
                      "fit_equivalent_status": {s: self.status.get(s) for s in candidates},
                      "judged_settings": judged, "largest_reproducing_sigma": largest},
            remedy=remedy)


__all__ = ["SIGMA0_FIT_FRACTION", "FitEquivalent", "exact_euler_ratio", "exact_euler_status", "fit_allowance",
           "fit_allowance_text", "fit_equivalent_sigma", "largest_reproducing_sigma", "sigma0_loss_of_exact_minimiser",
           "sigma_of_sigma0_loss"]
