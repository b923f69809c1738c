"""Which partner a flow returns on the 180° + μ coupling (Fig. 6, Counter Example 1), per solver, and the spacing
of the training lines."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import torch
from torch import Tensor

from flowvar.errors import ConfigError, ShapeError, check_positive_int
from flowvar.metrics.distances import (
    partner_distances,
)

# ----------------------------------------------------------------------------------------------------------
# The 180° + μ coupling (Counter Example 1, Fig. 6): where ODE endpoints land, and one status rule
# ----------------------------------------------------------------------------------------------------------

PairingStatus = Literal["reproduces", "partial", "fails"]
PAIRING_STATUSES: tuple[str, ...] = ("reproduces", "partial", "fails", "failed")
"""The per-setting statuses: the three of :func:`rotation_pairing_status`, and "failed" for a solver that stopped."""


def rotation_pairing(x1_hat: Tensor, x0: Tensor, mu: Tensor) -> dict[str, float]:
    """Where ODE endpoints land relative to the two candidate partners of the 180° + μ coupling (PAPER.md §5.5).

    ``x1_hat``, ``x0``: (n, d); ``mu``: (d,). Rotation partner R x0 + μ = −x0 + μ (the training pair), translation
    target x0 + μ (the OT partner); their gap is ‖R x0 − x0‖ = 2‖x0‖. Returns ``fraction_nearer_rotation`` (the
    share of endpoints strictly nearer the rotation partner), the mean, median and max distance to the rotation
    partner, the mean distance to the translation target (:func:`partner_distances`), ``mean_gap`` = mean 2‖x0‖
    and ``rel_error_rotation`` = mean distance to the rotation partner / mean gap. The one implementation of this
    measurement (``counterexample1``, ``fig6``, ``solver_resolution``).
    """
    rotation, translation = -x0 + mu, x0 + mu
    d = partner_distances(x1_hat, {"rotation": rotation, "translation": translation})
    gap = 2 * x0.double().norm(dim=1)
    nearer = (d["rotation"].per_sample < d["translation"].per_sample).double()
    return {"fraction_nearer_rotation": float(nearer.mean()),
            "mean_dist_rotation": d["rotation"].mean,
            "median_dist_rotation": d["rotation"].median,
            "max_dist_rotation": float(d["rotation"].per_sample.max()),
            "mean_dist_translation": d["translation"].mean,
            "mean_gap": float(gap.mean()),
            "rel_error_rotation": d["rotation"].mean / float(gap.mean())}


def rotation_pairing_status(fraction_nearer_rotation: float, rel_error_rotation: float, mean_dist_rotation: float,
                            mean_dist_translation: float, *, reproduce_fraction: float = 0.9,
                            reproduce_rel_error: float = 0.1) -> PairingStatus:
    """The one status rule of ``fig6`` and ``solver_resolution`` for one (model, solver) setting.

    * ``"reproduces"``: ≥ ``reproduce_fraction`` of the endpoints are nearer R x0 + μ than x0 + μ **and** the mean
      distance to R x0 + μ is ≤ ``reproduce_rel_error`` × the mean gap 2‖x0‖ (PAPER.md §5.5: "much smaller than
      2‖x0‖"; the gap is the scale);
    * ``"fails"``: fewer than half are nearer R x0 + μ, or the mean distance to R x0 + μ is no smaller than to
      x0 + μ;
    * ``"partial"`` otherwise (e.g. 97 % on the rotation side but 0.25 gaps away on average): evidence neither for
      nor against, counted as neither by :func:`status_verdict`.
    """
    if not 0.5 < reproduce_fraction <= 1 or not 0 < reproduce_rel_error < 1:
        raise ConfigError(f"reproduce_fraction must be in (0.5, 1] and reproduce_rel_error in (0, 1), got "
                          f"{reproduce_fraction} and {reproduce_rel_error}")
    if fraction_nearer_rotation >= reproduce_fraction and rel_error_rotation <= reproduce_rel_error:
        return "reproduces"
    if fraction_nearer_rotation < 0.5 or mean_dist_rotation >= mean_dist_translation:
        return "fails"
    return "partial"


STATUS_VERDICT_RULE = ("confirmed if no setting has the opposite status and more than half of the settings have "
                       "the claimed one, refuted if no setting has the claimed status and more than half have the "
                       "opposite one, inconclusive otherwise ('partial' and stopped solvers count neither way; "
                       "settings on both sides are a solver-dependent answer)")
"""The words of :func:`status_verdict`, for the rule texts of the claims that use it."""


def status_verdict(statuses: Sequence[str], holds: Literal["reproduces", "fails"]) -> str:
    """How ``fig6`` and ``solver_resolution`` turn per-setting statuses into one verdict.

    For the statement "the rotation pairs are reproduced" (``holds="reproduces"``) or "they are not"
    (``holds="fails"``), with n settings, n_hold of status ``holds`` and n_opp of the opposite status ("fails"
    resp. "reproduces"):

    * "confirmed" if n_opp = 0 and n_hold > n / 2;
    * "refuted" if n_hold = 0 and n_opp > n / 2;
    * "inconclusive" otherwise (also for n = 0).

    Why: a "partial" setting or a stopped solver ("failed") is evidence neither way, so requiring every setting to
    agree would let one borderline setting veto a verdict that all the decided settings give; one setting on each
    side is a solver-dependent answer, which no majority outvotes; and the side must hold a strict majority of all
    settings so a verdict never rests on a few decided settings among mostly undecided ones (a tie is not a
    majority). Every setting of status ``holds`` is the confirmed case of the previous every-setting rule.
    """
    opposite = {"reproduces": "fails", "fails": "reproduces"}
    if holds not in opposite:
        raise ConfigError(f"holds must be 'reproduces' or 'fails', got {holds!r}")
    unknown = sorted(set(statuses) - set(PAIRING_STATUSES))
    if unknown:
        raise ConfigError(f"unknown pairing status(es) {unknown}; expected {list(PAIRING_STATUSES)}")
    n_hold = sum(s == holds for s in statuses)
    n_opposite = sum(s == opposite[holds] for s in statuses)
    if n_opposite == 0 and 2 * n_hold > len(statuses):
        return "confirmed"
    if n_hold == 0 and 2 * n_opposite > len(statuses):
        return "refuted"
    return "inconclusive"


def why_not_discriminating(exact_sigma0: str | None, exact_contrast: str | None) -> str | None:
    """Why a solver setting cannot tell a network that behaves like σ = 0 from one that behaves like σ = c, from
    the exact references' statuses there (the exact σ = 0 field's and the exact CFM(σ = c) minimiser's; a
    "failed: …" string counts as "failed"). None where it can: the first "reproduces" the rotation pairs and the
    second "fails" to. Otherwise the first that applies of:

    * ``"unknown"``: a reference was not evaluated there;
    * ``"sigma0_stops"``: the exact σ = 0 field stops (undefined at t = ½ on a grid that evaluates it);
    * ``"sigma0_misses"``: it runs but does not reproduce the pairs ("partial" or "fails");
    * ``"contrast_stops"``: the exact σ = c minimiser stops;
    * ``"contrast_reproduces"``: it lands on the rotation side too (h > σ on odd Euler grids);
    * ``"contrast_partial"``: it is between the two.

    fig6's evidence words these at length and the report in short; this is the one classification."""
    def base(status: str | None) -> str | None:
        return "failed" if isinstance(status, str) and status.startswith("failed") else status

    zero, contrast = base(exact_sigma0), base(exact_contrast)
    if zero is None or contrast is None:
        return "unknown"
    if zero == "failed":
        return "sigma0_stops"
    if zero != "reproduces":
        return "sigma0_misses"
    if contrast == "fails":
        return None
    return {"failed": "contrast_stops", "reproduces": "contrast_reproduces"}.get(contrast, "contrast_partial")


def rotation_pairing_on_solvers(field: object, x0: Tensor, mu: Tensor, solvers: Sequence[str], *,
                                reproduce_fraction: float = 0.9, reproduce_rel_error: float = 0.1,
                                rtol: float = 1e-6, atol: float = 1e-6, max_dopri_steps: int = 20_000
                                ) -> dict[str, dict[str, object] | str]:
    """Integrate ``field`` from ``x0`` with every named solver and measure where the endpoints land.

    ``solvers``: ``"<method>_<n>"`` for a fixed grid of n uniform steps (``euler``, ``midpoint``, ``heun``, ``rk4``)
    or ``"dopri5"`` (adaptive, ``rtol``/``atol``, at most ``max_dopri_steps`` steps). Per solver:
    :func:`rotation_pairing` plus ``status`` (:func:`rotation_pairing_status`) and ``nfe``; a solver that stops
    (:class:`flowvar.errors.SolverError`, e.g. the exact σ = 0 field evaluated at t = ½) gives the string
    ``"failed: <reason>"``. The grid evaluation of ``fig6`` and ``solver_resolution``.
    """
    from flowvar.errors import SolverError
    from flowvar.sampling import integrate

    out: dict[str, dict[str, object] | str] = {}
    for name in solvers:
        try:
            if name == "dopri5":
                sol = integrate(field, x0, method="dopri5", steps=100, rtol=rtol, atol=atol,  # type: ignore[arg-type]
                                options={"max_num_steps": max_dopri_steps})
            else:
                method, _, steps = name.partition("_")
                if not steps.isdigit():
                    raise ConfigError(f"solver {name!r}: expected '<method>_<steps>' (e.g. 'euler_101') or 'dopri5'")
                sol = integrate(field, x0, method=method, steps=int(steps))  # type: ignore[arg-type]
        except SolverError as e:
            out[name] = f"failed: {str(e).split(';')[0]}"
            continue
        res: dict[str, object] = dict(rotation_pairing(sol.x1, x0, mu))
        res["status"] = rotation_pairing_status(
            res["fraction_nearer_rotation"], res["rel_error_rotation"],  # type: ignore[arg-type]
            res["mean_dist_rotation"], res["mean_dist_translation"],  # type: ignore[arg-type]
            reproduce_fraction=reproduce_fraction, reproduce_rel_error=reproduce_rel_error)
        res["nfe"] = sol.nfe
        out[name] = res
    return out


def counterexample_min_loss(sigma: float, dim: int = 2) -> float:
    """The minimum CFM loss on the 180° + μ coupling at constant interpolant noise σ (target x1 − x0).

    x_t = tμ + s x0 + σz with s = 1 − 2t and u = x1 − x0 = μ − 2x0, so per coordinate
    Var(u | x_t) = 4σ²/(s² + σ²); averaged over t ~ U(0, 1) (s ~ U(−1, 1)): L_min(σ) = 4 d σ arctan(1/σ)
    (our derivation; 0 at σ = 0, where the exact field is defined off t = ½). The loss of the best constant field
    v = μ is 4d, the scale: L_min(0.05)/4d = 0.076 in any d.
    """
    if not math.isfinite(sigma) or sigma < 0:
        raise ConfigError(f"sigma must be a finite number >= 0, got {sigma}")
    check_positive_int("dim", dim)
    return 0.0 if sigma == 0 else 4.0 * dim * sigma * math.atan(1.0 / sigma)


def line_spacing(x0: Tensor, x1: Tensor, chunk: int = 512, max_queries: int | None = None) -> Tensor:
    """Per pair, the nearest simultaneous approach of another training line: (N,) float64, or (min(N, max_queries),)
    for the first ``max_queries`` lines, each against all N (as :func:`~flowvar.metrics.median_nn_distance` queries).

    s_i = min_{j ≠ i} min_{t ∈ [0, 1]} ‖μ_i(t) − μ_j(t)‖ with μ_i(t) = (1 − t) x0_i + t x1_i. For a pair (i, j),
    Δ(t) = a + t b with a = x0_i − x0_j and b = u_i − u_j (u = x1 − x0), minimised at t* = clip(−a·b / ‖b‖², 0, 1).
    ‖a‖², a·b and ‖b‖² come from the Gram matrices of x0 and u (so memory is chunk × N, never N² × d);
    float64, squared distances clamped at 0 against rounding. ``x0``, ``x1``: (N, d) with N >= 2.
    """
    if x0.ndim != 2 or x0.shape != x1.shape or x0.shape[0] < 2:
        raise ShapeError(f"line_spacing needs x0 and x1 of the same shape (N, d) with N >= 2, got "
                         f"{tuple(x0.shape)} and {tuple(x1.shape)}")
    chunk = check_positive_int("chunk", chunk)
    queries = x0.shape[0] if max_queries is None else min(x0.shape[0], check_positive_int("max_queries", max_queries))
    p = x0.detach().double()
    u = x1.detach().double() - p
    pp, uu, pu = (p * p).sum(1), (u * u).sum(1), (p * u).sum(1)  # ‖x0_j‖², ‖u_j‖², x0_j·u_j
    out = torch.empty(queries, dtype=torch.float64)
    for lo in range(0, queries, chunk):
        hi = min(queries, lo + chunk)
        g_pp, g_uu = p[lo:hi] @ p.T, u[lo:hi] @ u.T
        g_pu, g_up = p[lo:hi] @ u.T, u[lo:hi] @ p.T  # x0_i·u_j and u_i·x0_j
        aa = pp[lo:hi, None] + pp[None, :] - 2 * g_pp
        bb = uu[lo:hi, None] + uu[None, :] - 2 * g_uu
        ab = pu[lo:hi, None] - g_pu - g_up + pu[None, :]
        t_star = torch.where(bb > 0, -ab / bb.clamp_min(torch.finfo(torch.float64).tiny),
                             torch.zeros_like(bb)).clamp(0.0, 1.0)
        d2 = (aa + 2 * t_star * ab + t_star * t_star * bb).clamp_min(0.0)
        d2[torch.arange(hi - lo), torch.arange(lo, hi)] = math.inf  # j ≠ i
        out[lo:hi] = d2.min(1).values.sqrt()
    return out


__all__ = ["STATUS_VERDICT_RULE", "PairingStatus", "counterexample_min_loss", "line_spacing", "rotation_pairing",
           "rotation_pairing_on_solvers", "rotation_pairing_status", "status_verdict", "why_not_discriminating"]
