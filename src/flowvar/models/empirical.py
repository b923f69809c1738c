"""Exact minimisers of the empirical CFM loss on a finite training set (PAPER.md §2, Prop 2 and Remark 2).

Training set: N pairs (x0_i, x1_i), u_i = x1_i − x0_i, line μ_i(t) = (1 − t) x0_i + t x1_i. With the
interpolant x_t = μ_I(t) + f(t) z (I uniform on {1..N}, z ~ N(0, I_d)) and target u_I, the empirical loss
E_{I,t,z} ‖u_I − v(x_t, t)‖² is minimised, at every (x, t) with f(t) > 0, by the posterior mean

    v*(x, t) = E[u_I | x_t = x] = Σ_i w_i(x, t) u_i,   w_i ∝ exp(−‖x − μ_i(t)‖² / (2 f(t)²))

(:class:`EmpiricalField`; Remark 2: the noise makes pairs overlap and v* averages over them). As f → 0 the
weights concentrate on the nearest line and v* tends to the memorising field of Prop 2
(:class:`MemorisingField`), whose loss on the deterministic interpolant is exactly 0.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import torch
from torch import Tensor

from flowvar.errors import ConfigError, DataError, ShapeError, check_finite, check_positive_int, check_sigma
from flowvar.models.base import VectorField, check_floating_input, check_same_device, time_column

if TYPE_CHECKING:  # flowvar.interpolants imports couplings → gaussian → models: import it lazily (no cycle)
    from flowvar.interpolants import NoiseSchedule


class _TrainingLines(VectorField):
    """Holds N training pairs and evaluates squared distances from query points to the lines μ_i(t)."""

    def __init__(self, x0: Tensor, x1: Tensor, chunk: int, dtype: torch.dtype) -> None:
        super().__init__()
        x0, x1 = torch.as_tensor(x0), torch.as_tensor(x1)
        if x0.ndim != 2 or x0.shape != x1.shape:
            raise ShapeError(f"{type(self).__name__} needs x0 and x1 of the same shape (N, d), got "
                             f"{tuple(x0.shape)} and {tuple(x1.shape)}; flatten images with x.flatten(1)")
        if x0.shape[0] == 0 or x0.shape[1] == 0:
            raise ShapeError(f"{type(self).__name__} needs at least one pair of at least one coordinate, got "
                             f"shape {tuple(x0.shape)}")
        check_finite("x0", x0)
        check_finite("x1", x1)
        self.dim = x0.shape[1]
        self.chunk = check_positive_int("chunk", chunk)
        x0, x1 = x0.detach().to(dtype), x1.detach().to(dtype)
        self.register_buffer("x0", x0.clone())
        self.register_buffer("x1", x1.clone())
        self.register_buffer("u", x1 - x0)
        self.register_buffer("x0_sq", (x0 * x0).sum(1))
        self.register_buffer("x1_sq", (x1 * x1).sum(1))
        self.register_buffer("x0_x1", (x0 * x1).sum(1))

    def __len__(self) -> int:
        return self.x0.shape[0]

    def _prepare(self, x: Tensor, t: Tensor | float) -> tuple[Tensor, Tensor]:
        """x (B, d) and t as (x, t (B,)), both in the lines' dtype, after refusing a bad input.

        x must be floating point before the cast: an integer x cast to float64 passes time_column's check, and the
        velocity cast back to x's dtype would be truncated (uint8: wrapped), silently. A NaN t would compare as no
        distance at all and return the lowest-index line's velocity, so it is refused too. An x on another device
        than the training pairs (CUDA samples, CPU training data) is a :class:`ConfigError` naming both moves.
        """
        check_floating_input(x)
        check_same_device(self, x, self.x0)
        self.check_input(x)
        check_finite("x", x)
        x = x.to(self.x0.dtype)
        tt = time_column(t, x)
        check_finite("t", tt)
        return x, tt

    def sq_distances(self, x: Tensor, t: Tensor, lo: int, hi: int) -> Tensor:
        """‖x_b − μ_i(t_b)‖² for training pairs i in [lo, hi): (B, hi − lo), float, clamped at 0.

        Expanded as ‖x‖² − 2(1−t) x·x0_i − 2t x·x1_i + (1−t)²‖x0_i‖² + 2t(1−t) x0_i·x1_i + t²‖x1_i‖².
        """
        s, c = t[:, None], 1 - t[:, None]
        mu_sq = c * c * self.x0_sq[lo:hi] + 2 * s * c * self.x0_x1[lo:hi] + s * s * self.x1_sq[lo:hi]
        cross = c * (x @ self.x0[lo:hi].T) + s * (x @ self.x1[lo:hi].T)
        return ((x * x).sum(1, keepdim=True) - 2 * cross + mu_sq).clamp_min_(0)

    def nearest_line(self, x: Tensor, t: Tensor | float) -> Tensor:
        """j(x, t) = argmin_i ‖x − μ_i(t)‖², shape (B,) long; exact ties go to the lowest index."""
        x, tt = self._prepare(x, t)
        best = torch.full((x.shape[0],), torch.inf, dtype=x.dtype, device=x.device)
        arg = torch.zeros(x.shape[0], dtype=torch.long, device=x.device)
        for lo in range(0, len(self), self.chunk):
            d2 = self.sq_distances(x, tt, lo, lo + self.chunk)
            val, idx = d2.min(1)
            better = val < best
            best = torch.where(better, val, best)
            arg = torch.where(better, idx + lo, arg)
        return arg


class MemorisingField(_TrainingLines):
    """The zero-loss field of Prop 2: v(x, t) = u_j = x1_j − x0_j, j = argmin_i ‖x − μ_i(t)‖.

    It follows the training line nearest to x at time t, so on every training line (x = μ_i(t)) it returns
    that line's velocity: the empirical loss under the deterministic interpolant is exactly 0, even where
    lines cross in space (at different times), and Euler integration from x0_i reproduces x1_i on a grid that
    avoids the crossing times (for 20 pairs of the 180° coupling x1 = −x0 + μ, whose lines all meet at t = ½: to
    1.6e-14 on 101 steps, but up to 3.7 away on 100 steps, whose node t = ½ sends every state along the
    lowest-index tied line). It is the σ → 0 limit of :class:`EmpiricalField` (the softmax weights tend to the
    indicator of the nearest line). At a crossing time, where μ_i(t) = μ_j(t) for i ≠ j (a measure-zero set of
    t, e.g. t = ½ for x1 = −x0), the nearest line is not unique and the field is ill-defined; this module then
    returns the lowest-index tied line. ``x0``, ``x1``: (N, d); forward: x (B, d) floating point (an integer x is a
    :class:`ConfigError`), t scalar or (B,), finite → (B, d) in x's dtype; computed in ``dtype``. Distances are
    evaluated in chunks of ``chunk`` training pairs.
    """

    def __init__(self, x0: Tensor, x1: Tensor, chunk: int = 4096, dtype: torch.dtype = torch.float64) -> None:
        super().__init__(x0, x1, chunk, dtype)

    def forward(self, x: Tensor, t: Tensor | float) -> Tensor:
        return self.u[self.nearest_line(x, t)].to(x.dtype)


class EmpiricalField(_TrainingLines):
    """v*(x, t) = Σ_i w_i(x, t) u_i, w_i ∝ exp(−‖x − μ_i(t)‖² / (2 f(t, σ)²)): the exact empirical-loss minimiser.

    ``noise``: "constant" (f = σ, CFM(σ)), "bridge" (f = σ√(t(1−t))) or a
    :class:`~flowvar.interpolants.NoiseSchedule`. ``target``: "plain" (u = x1 − x0, the paper's loss) or
    "conditional" (u = x1 − x0 + f'(t) z, whose minimiser adds (f'/f)(x − Σ_i w_i μ_i(t)); identical for
    constant noise). For the conditional target f' is the schedule's ``dscale``, which
    :class:`~flowvar.interpolants.BrownianBridgeNoise` clamps to t ∈ [ε, 1 − ε] (ε = 1e-5 by default): within ε of
    t = 0 and t = 1 the field is the minimiser of the loss flowvar trains (the interpolant's target uses the same
    clamped f'), not of the unclamped textbook f', which diverges there.

    The weights are a softmax of the logits −‖x − μ_i‖²/(2f²), accumulated over chunks of ``chunk``
    training pairs with a running maximum (streaming log-sum-exp), so it stays finite for any σ > 0, where
    a naive exp(·)/Σ exp(·) underflows to 0/0. Where f(t, σ) = 0 (σ = 0, or the bridge at t ∈ {0, 1}), or
    f is so small that every logit overflows, the posterior is a point mass and the field is
    :class:`MemorisingField`'s nearest-line velocity. Outside [0, 1] the bridge's f(t, σ) = σ√(t(1−t)) is clamped
    to 0 (:class:`~flowvar.interpolants.BrownianBridgeNoise`), so the field there is that nearest-line velocity, its
    limit at t = 0 and t = 1: an adaptive solver may step past the end of [0, 1] and interpolate back (torchdiffeq's
    dopri5 reached t = 1.14 over [0, 1]; flowvar's :func:`~flowvar.sampling.integrate` steps onto t1), so such
    times are not refused (nor does
    :class:`~flowvar.models.GaussianParametricField` refuse them). A NaN t, and a noise schedule whose f is NaN,
    are a :class:`~flowvar.errors.DataError`.

    ``x0``, ``x1``: (N, d); forward: x (B, d) floating point (an integer x is a :class:`ConfigError`), t scalar or
    (B,) → (B, d) in x's dtype. ``dtype``: the dtype of the computation (x is cast to it, the result back to x's).
    Keep the default float64 for small σ at large d: near the bisector between two lines the weights depend on a
    logit difference of order 1 between logits of size ‖x − μ_i‖²/(2σ²), which float32 rounds away. Measured at
    t = ½ within ±3σ²/‖Δμ‖ of two lines' midpoint, float32 weights were off from float64 by up to 0.37 (d = 3072)
    and 0.45 (d = 12288) at σ = 0.01, and 0.03 and 0.05 at σ = 0.05; away from bisectors they agree to ~1e-7.
    """

    def __init__(self, x0: Tensor, x1: Tensor, sigma: float, noise: str | NoiseSchedule = "constant",
                 target: Literal["plain", "conditional"] = "plain", chunk: int = 4096,
                 dtype: torch.dtype = torch.float64) -> None:
        from flowvar.interpolants import make_noise

        super().__init__(x0, x1, chunk, dtype)
        self.sigma = check_sigma(sigma)
        self.noise = make_noise(noise)
        if target not in ("plain", "conditional"):
            raise ConfigError(f"unknown target {target!r}; use 'plain' (x1 − x0) or 'conditional'")
        self.target = target

    def extra_repr(self) -> str:
        return f"N={len(self)}, dim={self.dim}, sigma={self.sigma}, noise={self.noise.name!r}, target={self.target!r}"

    def _scale(self, tt: Tensor) -> Tensor:
        """f(t, σ) per row (B,), refusing a NaN: ``f > 0`` is False for NaN, so a schedule returning NaN would send
        the row silently down the hard nearest-line path."""
        f = self.noise.scale(tt, self.sigma)
        if bool(torch.isnan(f).any()):
            bad = tt[torch.isnan(f)]
            raise DataError(f"the noise schedule {self.noise.name!r} returned f(t, σ) = NaN at t = {bad[:3].tolist()} "
                            f"(σ = {self.sigma}); evaluate the field at times where the schedule is defined, or fix "
                            f"the schedule's scale()")
        return f

    @staticmethod
    def _inverse_temperature(f: Tensor) -> Tensor:
        """1 / (2 f²) per row (B,), 0 where f = 0 (those rows take the hard path); +inf where f² underflows."""
        tiny = torch.finfo(f.dtype).tiny
        return torch.where(f > 0, 1.0 / (2 * f.clamp_min(tiny) ** 2), torch.zeros_like(f))

    @staticmethod
    def _point_mass(f: Tensor, max_logit: Tensor) -> Tensor:
        """Rows (B,) bool whose posterior is a point mass on the nearest line: f = 0, or f so small that every logit
        overflowed to −inf (or 0·inf = NaN on a line), so the softmax is 0/0. One rule for forward and weights."""
        return ~(f > 0) | ~torch.isfinite(max_logit)

    def weights(self, x: Tensor, t: Tensor | float) -> Tensor:
        """Posterior weights w_i(x, t), shape (B, N) (not chunked: for diagnostics on small N); one-hot on the
        nearest line where the posterior is a point mass (:meth:`_point_mass`, as in forward), so Σ_i w_i u_i is
        forward's value there too."""
        x, tt = self._prepare(x, t)
        f = self._scale(tt)
        d2 = self.sq_distances(x, tt, 0, len(self))
        logits = -d2 * self._inverse_temperature(f)[:, None]
        hard = torch.nn.functional.one_hot(d2.argmin(1), len(self)).to(x.dtype)
        soft = torch.softmax(logits, dim=1)
        return torch.where(self._point_mass(f, logits.max(1).values)[:, None], hard, soft)

    def forward(self, x: Tensor, t: Tensor | float) -> Tensor:
        out_dtype = x.dtype
        x, tt = self._prepare(x, t)
        f = self._scale(tt)
        soft = f > 0
        inv = self._inverse_temperature(f)
        B = x.shape[0]
        run_max = torch.full((B,), -torch.inf, dtype=x.dtype, device=x.device)
        norm = torch.zeros(B, dtype=x.dtype, device=x.device)
        acc_u = torch.zeros(B, self.dim, dtype=x.dtype, device=x.device)
        acc_x0 = torch.zeros_like(acc_u) if self.target == "conditional" else None
        for lo in range(0, len(self), self.chunk):
            hi = lo + self.chunk
            logits = -self.sq_distances(x, tt, lo, hi) * inv[:, None]
            new_max = torch.maximum(run_max, logits.max(1).values)
            shift = torch.where(torch.isfinite(new_max), new_max, torch.zeros_like(new_max))
            rescale = torch.exp(run_max - shift)  # exp(−inf) = 0 on the first chunk
            p = torch.exp(logits - shift[:, None])
            norm = norm * rescale + p.sum(1)
            acc_u = acc_u * rescale[:, None] + p @ self.u[lo:hi]
            if acc_x0 is not None:
                acc_x0 = acc_x0 * rescale[:, None] + p @ self.x0[lo:hi]
            run_max = new_max
        v = acc_u / norm[:, None]
        if acc_x0 is not None:
            mean_mu = acc_x0 / norm[:, None] + tt[:, None] * v  # Σ w_i μ_i(t) = Σ w_i x0_i + t Σ w_i u_i
            ratio = torch.where(soft, self.noise.dscale(tt, self.sigma) / f.clamp_min(torch.finfo(x.dtype).tiny),
                                torch.zeros_like(f))
            v = v + ratio[:, None] * (x - mean_mu)
        hard_rows = self._point_mass(f, run_max)
        if bool(hard_rows.any()):
            v[hard_rows] = self.u[self.nearest_line(x[hard_rows], tt[hard_rows])]
        return v.to(out_dtype)


__all__ = ["EmpiricalField", "MemorisingField"]
