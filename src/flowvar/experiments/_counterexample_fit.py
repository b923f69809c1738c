"""When has a network trained on the 180° + μ coupling fitted it? The fit allowance shared by ``fig6`` and
``solver_resolution`` (no experiment may import another; one source for the formula and its margin).

A network's training loss minus the exact minimum L_min(σ) (:func:`flowvar.metrics.counterexample_min_loss`) must
not exceed :func:`fit_allowance`. For σ = 0 the allowance is set against the contrast field, the exact CFM(σ_c)
minimiser, whose flow is the translation: its σ = 0 loss (:func:`sigma0_loss_of_exact_minimiser`) times
:data:`SIGMA0_FIT_FRACTION`.
"""

from __future__ import annotations

import math

from flowvar.errors import ConfigError
from flowvar.metrics import counterexample_min_loss

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


__all__ = ["SIGMA0_FIT_FRACTION", "fit_allowance", "fit_allowance_text", "sigma0_loss_of_exact_minimiser"]
