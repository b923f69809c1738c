"""ReFlow stagnation at a rotation coupling (Lemma 2, PAPER.md §2, §5.7): the exact ReFlow angle in closed form and
the judgement of "at σ = 0 ReFlow stays at the coupling" — its band, per-seed rule, negative control and
precondition. Pure functions of angles (degrees) and numbers; :mod:`flowvar.experiments.lemma2` trains the chains
and calls them.

Closed form (our derivation [D], constant noise f = σ, target x1 − x0): for the coupling x1 = R_θ x0 on N(0, I_2)
the CFM(σ) minimiser is linear, v(x, t) = (R − I) A_tᵀ x / (|A_t|² + σ²) with A_t = (1 − t)I + tR, and its flow map
is a pure rotation by θ' = ∫₀¹ w(t) d arg A_t, w = |A_t|² / (|A_t|² + σ²), an integral in elementary functions
(:func:`ideal_reflow_angle`): θ' = θ at σ = 0, θ' < θ for σ > 0; :func:`ideal_angles` iterates it over
rectifications.

Stagnation (claim ``lemma2.sigma0_stagnation``): :func:`stagnation_band` is min(tolerance, ½ × the drift of the exact
CFM(:data:`CONTRAST_SIGMA`) minimiser over the same rounds), so that staying within it tells σ = 0 from the paper's
σ = 0.05; :func:`later_deviation` is each chain's statistic, :func:`stagnation_rule` the verdict over seeds,
:func:`negative_control` the same rule on a σ > 0's network chains, and :func:`stagnation_precondition` says when the
claim is testable (round 0 learned the coupling, the band is > 0, and no σ = :data:`CONTRAST_SIGMA` chain stays).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence
from typing import Any

from flowvar.errors import ConfigError
from flowvar.results import Precondition

STAGNATION_REFUTE = 3.0
"""stagnation_rule: a round more than this many tolerances (``angle_tol_deg``, the network's accuracy) from the
coupling's angle, on every seed, refutes."""

CONTRAST_SIGMA = 0.05
"""The paper's remedy noise, CFM(σ = 0.05): the σ = 0 stagnation band must be narrower than the movement the exact
CFM(0.05) minimiser makes over the same rounds (:func:`stagnation_band`), or "stagnates" would also be said of a
coupling that moves as the paper says σ = 0.05 makes it move. A constant, not a config field: it is the paper's
number, the same for every run (and for every stored result judged again)."""

BAND_FLOOR_DEG = 1e-6
"""A stagnation band at or below this many degrees counts as zero (untestable): the closed form
(:func:`ideal_reflow_angle`) is exact up to float64 rounding, ≤ 5e-16 relative (≤ 5e-14° below 180°; σ = 0 gives a
drift of exactly 0), far below it, and no trained angle is resolved to it."""

ROUND0_SINGULAR_VALUE_TOL = 0.2
"""Round 0 learned the coupling only if every singular value of its fitted map A is within this of 1 (the exact
map, a rotation, has 1 and 1): a collapsed or inflated map (A ≈ 0.1 R) has the right polar angle but is not the
coupling. The stored runs' σ = 0 round-0 maps are within 0.02 of 1 (every σ and round: 0.88 – 1.12)."""

ROUND0_RESIDUAL_TOL = 0.2
"""Round 0 learned the coupling only if the RMS of ‖x̂1 − (A x0 + b)‖ is at most this (the exact map is affine:
0), i.e. ≤ 14 % of the target's RMS norm √2: else the angle of a poor affine fit says little. The stored runs'
σ = 0 round-0 residuals are ≤ 0.038 (every σ and round: ≤ 0.073)."""


def ideal_reflow_angle(theta_deg: float, sigma: float) -> float:
    """Rotation angle (degrees) of the flow map of the CFM minimiser for the rotation-by-θ coupling on N(0, I_2).

    θ' = ∫₀¹ w(t) (d/dt) arg A_t dt with A_t = (1 − t) + t e^{iθ} and w = |A_t|² / (|A_t|² + σ²) (this module's
    docstring). d arg A_t / dt = Im(A_t' conj(A_t)) / |A_t|² with A_t' = e^{iθ} − 1, so the integrand is
    Im((e^{iθ} − 1) conj(A_t)) / (|A_t|² + σ²) = sin θ / (|A_t|² + σ²). With c = cos θ, |A_t|² + σ² =
    2(1 − c)(t − ½)² + (1 + c + 2σ²)/2, a quadratic in t, so the integral is elementary:

        θ' = 2 sin θ / √((1 − c)(1 + c + 2σ²)) · arctan √((1 − c) / (1 + c + 2σ²)).

    Evaluated in half angles h = θ/2 (1 − c = 2 sin²h, 1 + c = 2 cos²h) as θ' = 2 (cos h / q) · arctan(sin h / q),
    q = √(cos²h + σ²): no cancellation near θ = 0 (1 − c) nor near ±180° (1 + c), where cos h is taken as
    sin((180° − |θ|)/2), the subtraction exact for |θ| ≥ 90°. σ = 0 gives 2 arctan(tan h) = θ, returned exactly
    (Lemma 2: the σ = 0 minimiser keeps the coupling); σ > 0 gives |θ'| < |θ|, same sign. Defined for |θ| < 180°
    (A_t never vanishes); a non-finite θ or a negative or non-finite σ is a :class:`ConfigError`.
    """
    if isinstance(theta_deg, bool) or not isinstance(theta_deg, numbers.Real) or not abs(theta_deg) < 180:
        raise ConfigError(f"the ideal ReFlow angle needs a finite |θ| < 180° (A_t = 0 at t = ½ for 180°), got "
                          f"{theta_deg!r}")
    if isinstance(sigma, bool) or not isinstance(sigma, numbers.Real) or not (math.isfinite(sigma) and sigma >= 0):
        raise ConfigError(f"the ideal ReFlow angle needs a finite noise level sigma >= 0, got {sigma!r}")
    if sigma == 0:
        return float(theta_deg)  # the closed form's exact value; float rounding of the formula would drift it
    h = math.radians(theta_deg) / 2
    cos_h = math.sin(math.radians(180.0 - abs(theta_deg)) / 2)  # = cos h, to full relative precision near ±180°
    q = math.hypot(cos_h, sigma)
    return math.degrees(2 * (cos_h / q) * math.atan2(math.sin(h), q))


def ideal_angles(theta_deg: float, sigma: float, rectifications: int) -> list[float]:
    """The angle (degrees) after each of ``rectifications`` successive exact CFM(σ) rectifications of the rotation
    coupling by ``theta_deg``: θ_k = :func:`ideal_reflow_angle` (θ_{k−1}, σ), θ_0 = ``theta_deg``; returns θ_1 …
    θ_n. The run's round 0 is the first rectification (CFM on the coupling), so ``rounds`` ReFlow rounds are
    ``rounds + 1`` rectifications."""
    out: list[float] = []
    theta = theta_deg
    for _ in range(rectifications):
        theta = ideal_reflow_angle(theta, sigma)
        out.append(theta)
    return out


def all_finite(values: Sequence[float]) -> bool:
    """Every value a finite int or float (a NaN angle, a reflection, is not)."""
    return all(isinstance(v, int | float) and math.isfinite(v) for v in values)


def stagnation_band(coupling_deg: float, tol: float, rounds: int,
                    contrast_sigma: float = CONTRAST_SIGMA) -> tuple[float, float]:
    """The σ = 0 stagnation band (degrees) and the drift it must tell apart, as (band, drift).

    drift = ``coupling_deg`` − θ_{K+1}: how far the exact CFM(``contrast_sigma``) minimiser moves the coupling over
    round 0 and ``rounds`` = K ReFlow rounds (:func:`ideal_angles`, K + 1 rectifications; the angles fall
    monotonically, so this is also its largest deviation over rounds 1 … K). band = min(``tol``, drift / 2): a
    chain that stays within it stays closer to the coupling than half of what σ = ``contrast_sigma`` would do. NaN
    band when the drift is not finite; a band ≤ :data:`BAND_FLOOR_DEG` or NaN leaves the claim untestable
    (:func:`stagnation_precondition`).
    """
    drift = coupling_deg - ideal_angles(coupling_deg, contrast_sigma, rounds + 1)[-1]
    return (min(tol, drift / 2) if math.isfinite(drift) else math.nan), drift


def later_deviation(angles: Sequence[float], coupling_deg: float) -> float:
    """The largest |θ_k − ``coupling_deg``| over the ReFlow rounds k = 1 … K of one chain (``angles``: rounds 0 … K,
    degrees); a non-finite angle (a reflection) counts as infinitely far, NaN without a ReFlow round. The one
    per-seed statistic that :func:`stagnation_rule` and :func:`negative_control` read."""
    later = [abs(a - coupling_deg) if math.isfinite(a) else math.inf for a in angles[1:]]
    return max(later) if later else math.nan


def stagnation_rule(angles_per_seed: Sequence[Sequence[float]], coupling_deg: float, band: float,
                    refute_deg: float) -> str:
    """lemma2.sigma0_stagnation from the σ = 0 angles, one list per seed (rounds 0 … K; rounds 1 … K are judged).

    A seed stays when every later round is within ``band`` of ``coupling_deg`` (:func:`stagnation_band`;
    :func:`later_deviation` ≤ ``band``) and leaves when some later round is more than ``refute_deg`` away
    (:data:`STAGNATION_REFUTE` × the tolerance; a NaN angle, a reflection, counts as away). Confirmed if every seed
    stays, refuted if every seed leaves, inconclusive otherwise (or without a later round; a NaN band confirms
    nothing).
    """
    devs = [later_deviation(angles, coupling_deg) for angles in angles_per_seed]
    if not devs or any(math.isnan(d) for d in devs):
        return "inconclusive"
    if all(d <= band for d in devs):
        return "confirmed"
    if all(d > refute_deg for d in devs):
        return "refuted"
    return "inconclusive"


def negative_control(angles_per_seed: Sequence[Sequence[float]], coupling_deg: float, band: float, refute_deg: float,
                     exact_angles: Sequence[float] | None = None) -> dict[str, Any]:
    """The σ = 0 rule applied to the network chains of a σ > 0 (one list of angles per seed, rounds 0 … K): does
    "stays within the band" tell σ = 0 from σ on trained networks, not only on exact minimisers?

    Per seed: :func:`later_deviation` and its status — "stays" (≤ ``band``), "leaves" (> ``refute_deg``) or
    "between" ("no ReFlow round" when NaN); ``seeds_staying`` counts "stays"; ``stagnation_rule`` is what
    :func:`stagnation_rule` would say of these chains. With ``exact_angles`` (the exact CFM(σ) minimiser's rounds
    0 … K, :func:`ideal_angles`) also each seed's largest |network − exact| over rounds 0 … K: the network's own
    error at that σ. At the contrast σ (:data:`CONTRAST_SIGMA`) a staying seed means the band does not separate the
    two on these networks (:func:`stagnation_precondition`).
    """
    devs = [later_deviation(angles, coupling_deg) for angles in angles_per_seed]
    status = ["no ReFlow round" if math.isnan(d) else "stays" if d <= band else "leaves" if d > refute_deg
              else "between" for d in devs]
    out: dict[str, Any] = {"max_dev_later_rounds_per_seed": devs, "per_seed": status,
                           "seeds_staying": status.count("stays"), "n_seeds": len(devs),
                           "stagnation_rule": stagnation_rule(angles_per_seed, coupling_deg, band, refute_deg)}
    if exact_angles is not None:
        out["max_abs_minus_exact_deg_per_seed"] = [
            max((abs(a - e) if math.isfinite(a) else math.inf for a, e in zip(angles, exact_angles, strict=True)),
                default=math.nan) for angles in angles_per_seed]
    return out


def stagnation_precondition(round0_rows: Sequence[Mapping[str, Any]], coupling_deg: float, tol: float,
                            band: float, drift: float, *, control: Mapping[str, Any] | None,
                            contrast_sigma: float = CONTRAST_SIGMA) -> Precondition:
    """``sigma0_stagnation`` is testable where (a) round 0 learned the coupling on every seed — its fitted map's
    angle within ``tol`` of ``coupling_deg``, every singular value within :data:`ROUND0_SINGULAR_VALUE_TOL` of 1 and
    the fit's RMS residual ≤ :data:`ROUND0_RESIDUAL_TOL` (``round0_rows``: the σ = 0 round-0 row of each seed, as
    :func:`flowvar.experiments.lemma2.evaluate_round` gives it) — else a drift says nothing about ReFlow; (b) the band
    (:func:`stagnation_band`) is > :data:`BAND_FLOOR_DEG` with a finite drift of the exact CFM(``contrast_sigma``)
    minimiser — else no band tells σ = 0 from it; and (c) the band tells them apart on the networks too:
    ``control`` (:func:`negative_control` of the σ = ``contrast_sigma`` network chains; None when the run has no
    such chains) has no seed that stays within the band — else "stays" is also said of chains trained with the
    noise that moves them, and a σ = 0 chain staying says nothing. The remedy names only what fails (empty when it
    holds)."""
    angle0 = [float(r["angle_deg"]) for r in round0_rows]
    sv0 = [[float(v) for v in r["singular_values"]] for r in round0_rows]
    resid0 = [float(r["fit_residual_rms"]) for r in round0_rows]
    learned = (all(math.isfinite(a) and abs(a - coupling_deg) <= tol for a in angle0)
               and all(all_finite(v) and all(abs(x - 1) <= ROUND0_SINGULAR_VALUE_TOL for x in v) for v in sv0)
               and all(math.isfinite(r) and r <= ROUND0_RESIDUAL_TOL for r in resid0))
    separable = math.isfinite(drift) and math.isfinite(band) and band > BAND_FLOOR_DEG
    staying = None if control is None else int(control["seeds_staying"])
    # every contrast chain strictly outside the band (a NaN deviation, no ReFlow round, resolves nothing)
    resolved = control is not None and bool(control["max_dev_later_rounds_per_seed"]) and all(
        d > band for d in control["max_dev_later_rounds_per_seed"])
    remedies = (["train longer (steps) or a wider network"] * (not learned)
                + [f"more rounds (the exact CFM({contrast_sigma:g}) drift grows with them)"] * (not separable))
    if control is None:
        remedies.append(f"add σ = {contrast_sigma:g} to sigmas (the negative control: the band must be shown to "
                        f"separate σ = 0 from σ = {contrast_sigma:g} on the trained networks)")
    elif separable and not resolved:
        remedies.append(f"the band ({band:.3g}°) does not separate σ = 0 from σ = {contrast_sigma:g} on these "
                        f"networks ({staying} of {control['n_seeds']} σ = {contrast_sigma:g} chain(s) stay within "
                        f"it): more training (steps, width) or more ReFlow rounds, until every σ = "
                        f"{contrast_sigma:g} chain leaves it")
    return Precondition(
        f"round 0 learned the initial coupling on every seed: its angle within {tol}° of {coupling_deg:g}°, every "
        f"singular value of the fitted map within {ROUND0_SINGULAR_VALUE_TOL} of 1 and the fit's RMS residual ≤ "
        f"{ROUND0_RESIDUAL_TOL} (else a drift says nothing about ReFlow); the band min({tol}°, ½ × the exact "
        f"CFM(σ = {contrast_sigma:g}) minimiser's drift over the same rounds) is > {BAND_FLOOR_DEG:g}°, so that "
        f"staying within it tells σ = 0 from the paper's σ = {contrast_sigma:g} on exact minimisers; and it does on "
        f"the networks: no seed's σ = {contrast_sigma:g} network chain stays within the band (the negative control, "
        f"the same rule on those chains)",
        holds=learned and separable and resolved,
        measured={"round0_angle_deg": angle0, "round0_singular_values": sv0, "round0_fit_residual_rms": resid0,
                  "contrast_sigma": contrast_sigma, "contrast_ideal_drift_deg": drift, "band_deg": band,
                  "contrast_network_max_dev_deg": None if control is None else control["max_dev_later_rounds_per_seed"],
                  "contrast_network_seeds_staying": staying},
        remedy="; ".join(remedies))

__all__ = [
    "BAND_FLOOR_DEG",
    "CONTRAST_SIGMA",
    "ROUND0_RESIDUAL_TOL",
    "ROUND0_SINGULAR_VALUE_TOL",
    "STAGNATION_REFUTE",
    "all_finite",
    "ideal_angles",
    "ideal_reflow_angle",
    "later_deviation",
    "negative_control",
    "stagnation_band",
    "stagnation_precondition",
    "stagnation_rule",
]
