"""Which partner a flow returns on the 180° + μ coupling (Fig. 6, Counter Example 1), per solver, and the spacing
of the training lines."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import torch
from torch import Tensor

from flowvar.errors import ConfigError, DataError, ShapeError, check_positive_int, check_sigma, describe
from flowvar.metrics.core import as_matrix, as_points, same_point_shape
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
    measurement (``counterexample1``, ``fig6``, ``solver_resolution``). Tensors, arrays or lists; computed in float64.
    Raises :class:`ShapeError` for ``mu`` not of shape (d,) or ``x1_hat`` not of ``x0``'s shape, :class:`DataError`
    for non-finite input or x0 = 0 everywhere (both partners are μ: the gap, the scale of the relative error, is 0).
    """
    x0m, shape_0 = as_points("x0", x0)
    xh, shape_h = as_points("x1_hat", x1_hat)
    same_point_shape("x1_hat", shape_h, "x0", shape_0)
    if xh.shape != x0m.shape:
        raise ShapeError(f"x1_hat has shape {tuple(xh.shape)} but x0 has {tuple(x0m.shape)}; pass one endpoint per "
                         f"source point")
    d = x0m.shape[1]
    try:
        mu_t = torch.as_tensor(mu) if mu is not None else None
    except (TypeError, ValueError, RuntimeError):
        mu_t = None
    if mu_t is None or mu_t.shape != (d,):  # a scalar would broadcast silently to (μ, …, μ)
        raise ShapeError(f"mu must have shape ({d},) (one coordinate per dimension of x0), got "
                         f"{describe(mu)}; pass e.g. torch.tensor([5.0] + [0.0] * {d - 1})")
    mu_m = as_matrix("mu", mu_t[None])[0]
    rotation, translation = mu_m - x0m, x0m + mu_m
    dist = partner_distances(xh, {"rotation": rotation, "translation": translation})
    gap = 2 * x0m.norm(dim=1)
    if not float(gap.mean()) > 0:
        raise DataError("every x0 is 0, so the rotation partner -x0 + mu and the translation target x0 + mu coincide "
                        "(their gap 2||x0|| is 0) and the relative error is undefined; draw the sources away from 0")
    nearer = (dist["rotation"].per_sample < dist["translation"].per_sample).double()
    return {"fraction_nearer_rotation": float(nearer.mean()),
            "mean_dist_rotation": dist["rotation"].mean,
            "median_dist_rotation": dist["rotation"].median,
            "max_dist_rotation": float(dist["rotation"].per_sample.max()),
            "mean_dist_translation": dist["translation"].mean,
            "mean_gap": float(gap.mean()),
            "rel_error_rotation": dist["rotation"].mean / float(gap.mean())}


FAILS_FRACTION = 0.5
"""The 'fails' threshold of :func:`rotation_pairing_status`: fewer than this share of endpoints nearer R x0 + μ is
'fails' (not a config field: below it the majority pairing is the translation). The status and minimum-effect texts
of fig6 and solver_resolution quote it from here."""


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

    A setting with any NaN measurement (not measured, or measured from diverged endpoints) is ``"partial"``: no
    evidence either way, which :func:`status_verdict` and the seed-level
    :func:`flowvar.experiments._seed_replicates.status_over_seeds` count as neither.
    """
    if not 0.5 < reproduce_fraction <= 1 or not 0 < reproduce_rel_error < 1:
        raise ConfigError(f"reproduce_fraction must be in (0.5, 1] and reproduce_rel_error in (0, 1), got "
                          f"{reproduce_fraction} and {reproduce_rel_error}")
    # explicit: a NaN fell through comparisons that are all False, to 'fails' when the fraction alone was below 1/2
    measured = (fraction_nearer_rotation, rel_error_rotation, mean_dist_rotation, mean_dist_translation)
    if any(math.isnan(v) for v in measured):
        return "partial"
    if fraction_nearer_rotation >= reproduce_fraction and rel_error_rotation <= reproduce_rel_error:
        return "reproduces"
    if fraction_nearer_rotation < FAILS_FRACTION or mean_dist_rotation >= mean_dist_translation:
        return "fails"
    return "partial"


def status_threshold_text(status: str, reproduce_fraction: float, reproduce_rel_error: float) -> str:
    """What one setting's endpoints must show for :func:`rotation_pairing_status` to give
    ``status`` ("reproduces" or "fails"), with the config's ``reproduce_fraction`` and ``reproduce_rel_error``:
    'reproduces' needs fraction nearer R x0 + μ ≥ f **and** mean ‖x̂1 − (R x0 + μ)‖ ≤ e × mean 2‖x0‖; 'fails' needs
    fraction < :data:`FAILS_FRACTION` **or** mean ‖x̂1 − (R x0 + μ)‖ ≥ mean ‖x̂1 − (x0 + μ)‖. Raises
    :class:`ConfigError` for another status ('partial' has no threshold of its own: it is neither)."""
    if status == "reproduces":
        return (f"≥ {reproduce_fraction} of endpoints nearer R x0 + μ and a mean distance to it ≤ "
                f"{reproduce_rel_error} × the mean gap 2‖x0‖ (the scale: the distance between the two candidate "
                f"partners)")
    if status == "fails":
        return (f"< {FAILS_FRACTION} of endpoints nearer R x0 + μ, or a mean distance to R x0 + μ ≥ the mean distance "
                f"to x0 + μ")
    raise ConfigError(f"a claimed pairing status must be 'reproduces' or 'fails', got {status!r}")


def status_min_effect(holds: str, reproduce_fraction: float, reproduce_rel_error: float, *,
                      per_setting: str | None = None) -> str:
    """The minimum effect of a claim judged by :func:`status_verdict` with the claimed status
    ``holds`` ("reproduces" or "fails"): the claimed status's own threshold (:func:`status_threshold_text`; a claim
    confirmed on 'fails' must not print the 'reproduces' one) at more than half of the judged settings and the
    opposite status at none, in every training seed (:func:`flowvar.experiments._seed_replicates.status_over_seeds`).
    ``per_setting`` replaces what one setting must show, for a claim whose status is not one network's
    (solver_resolution.fig6_conclusion's joint status)."""
    opposite = {"reproduces": "fails", "fails": "reproduces"}.get(holds)
    if opposite is None:
        raise ConfigError(f"a claimed pairing status must be 'reproduces' or 'fails', got {holds!r}")
    if per_setting is None:
        per_setting = f"{status_threshold_text(holds, reproduce_fraction, reproduce_rel_error)}, i.e. status '{holds}'"
    return (f"{per_setting}, at more than half of the judged settings and '{opposite}' at none, in every training "
            f"seed")


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
    # a 0-d tensor gave a tensor back, a string a bare TypeError, True σ = 1; check_sigma's float() would take "0.05"
    if isinstance(sigma, str | bytes):
        raise ConfigError(f"sigma must be a number >= 0, got the string {sigma!r}; pass a number, e.g. sigma=0.05")
    sigma = check_sigma(sigma)
    check_positive_int("dim", dim)
    return 0.0 if sigma == 0 else 4.0 * dim * sigma * math.atan(1.0 / sigma)


def _centred_if_offset(x: Tensor) -> Tensor:
    """``x`` − its mean when the mean is farther from the origin than the rows' spread (‖x̄‖² > mean ‖x_i − x̄‖²),
    else ``x`` itself: :func:`line_spacing`'s guard against cancellation in Gram expansions. Returns a new tensor when
    it centres (the input may be the caller's)."""
    mean = x.mean(0)
    offset = float(mean @ mean)
    spread = float((x - mean).pow_(2).sum()) / x.shape[0]
    return x - mean if offset > spread else x


def line_spacing(x0: Tensor, x1: Tensor, chunk: int = 512, max_queries: int | None = None) -> Tensor:
    """Per pair, the nearest simultaneous approach of another training line: (N,) float64, or (min(N, max_queries),)
    for the first ``max_queries`` lines, each against all N (as :func:`~flowvar.metrics.median_nn_distance` queries).

    s_i = min_{j ≠ i} min_{t ∈ [0, 1]} ‖μ_i(t) − μ_j(t)‖ with μ_i(t) = (1 − t) x0_i + t x1_i. For a pair (i, j),
    Δ(t) = a + t b with a = x0_i − x0_j and b = u_i − u_j (u = x1 − x0), minimised at t* = clip(−a·b / ‖b‖², 0, 1).
    ‖a‖², a·b and ‖b‖² come from the Gram matrices of x0 and u. a and b are differences, so subtracting a constant
    from every x0 or every u leaves the spacing unchanged: x0 (and u) is centred on its mean when that mean is
    farther from the origin than the points' spread (root mean square distance to the mean), where the Gram
    expansion would cancel digits (uncentred, a common offset of 1e6 cost 4e-3 absolute; centred, 1e-9). Nearer
    the origin centring gains under one bit, and the uncentred arithmetic keeps the stored results' spacings bit
    for bit. float64, squared distances clamped at 0 against rounding. ``x0``, ``x1``: (N, *shape) point sets
    (tensors, arrays or lists, flattened like every metric's input; NaN/Inf refused) of one shape, N >= 2.

    Working memory: float64 copies of x0 and u, 2·N·D·8 bytes (3·N·D·8 briefly while they are made), plus at most
    five live c × N float64 blocks (c = min(chunk, queries): ‖a‖², ‖b‖², a·b, t* and one temporary) and a c × N
    bool mask, about 41·c·N bytes: 1.05 GB at chunk = 512 and N = 50 000. Lower ``chunk`` for large N.
    """
    p, shape_0 = as_points("x0", x0)
    x1m, shape_1 = as_points("x1", x1)
    same_point_shape("x0", shape_0, "x1", shape_1)
    if p.shape != x1m.shape or p.shape[0] < 2:
        raise ShapeError(f"line_spacing needs x0 and x1 of the same shape (N, d) with N >= 2, got "
                         f"{tuple(p.shape)} and {tuple(x1m.shape)} (flattened)")
    chunk = check_positive_int("chunk", chunk)
    queries = p.shape[0] if max_queries is None else min(p.shape[0], check_positive_int("max_queries", max_queries))
    u = x1m - p
    del x1m
    p, u = _centred_if_offset(p), _centred_if_offset(u)
    pp, uu, pu = (p * p).sum(1), (u * u).sum(1), (p * u).sum(1)  # ‖x0_j‖², ‖u_j‖², x0_j·u_j
    tiny = torch.finfo(torch.float64).tiny
    out = torch.empty(queries, dtype=torch.float64)
    for lo in range(0, queries, chunk):
        hi = min(queries, lo + chunk)
        # in place on each block, so that at most five c × N blocks live at once; the operations and their order
        # are those of the plain formulas (−2g is exact), so the numbers are too
        # ‖a‖² = ‖p_i‖² + ‖p_j‖² − 2 p_i·p_j, ‖b‖² likewise, a·b = p_i·u_i − p_i·u_j − u_i·p_j + p_j·u_j
        aa = torch.add(pp[lo:hi, None], pp[None, :]).add_((p[lo:hi] @ p.T).mul_(-2.0))
        bb = torch.add(uu[lo:hi, None], uu[None, :]).add_((u[lo:hi] @ u.T).mul_(-2.0))
        ab = torch.sub(pu[lo:hi, None], p[lo:hi] @ u.T).sub_(u[lo:hi] @ p.T).add_(pu[None, :])
        t_star = torch.div(ab, bb.clamp_min(tiny)).neg_().clamp_(0.0, 1.0)  # −a·b/‖b‖², clipped to [0, 1]
        t_star.masked_fill_(bb <= 0, 0.0)  # parallel lines (b = 0): any t, take 0
        d2 = ab.mul_(t_star).mul_(2.0).add_(aa).add_(t_star.mul_(t_star).mul_(bb)).clamp_min_(0.0)  # ‖a + t*b‖²
        d2[torch.arange(hi - lo), torch.arange(lo, hi)] = math.inf  # j ≠ i
        out[lo:hi] = d2.min(1).values.sqrt()
    return out


__all__ = ["FAILS_FRACTION", "STATUS_VERDICT_RULE", "PairingStatus", "counterexample_min_loss", "line_spacing",
           "rotation_pairing", "rotation_pairing_on_solvers", "rotation_pairing_status", "status_min_effect",
           "status_threshold_text", "status_verdict", "why_not_discriminating"]
