"""Interpolants: x_t = (1 − t) x0 + t x1 + f(t, σ) z and the regression target u_t (PAPER.md §1.1, §4).

* f constant (:class:`ConstantNoise`, f = σ) is TorchCFM's ``ConditionalFlowMatcher(sigma)``: the
  "CFM(σ)" of the paper. f Brownian-bridge (:class:`BrownianBridgeNoise`, f = σ√(t(1−t))) is the
  ablation. σ = 0 gives the deterministic interpolant of Rectified Flow.
* Target ``"plain"``: u_t = x1 − x0 (the paper's loss, also for the noisy interpolant).
  Target ``"conditional"``: the exact velocity of the noisy conditional path,
  u_t = x1 − x0 + f'(t, σ) z, which equals TorchCFM SB-CFM's (1−2t)/(2t(1−t))·(x_t − μ_t) + x1 − x0 for
  the bridge and x1 − x0 for constant noise.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, fields, replace
from typing import Literal

import numpy as np
import torch
from torch import Tensor

from flowvar.couplings import Pairs
from flowvar.errors import (
    ConfigError,
    ShapeError,
    check_floating,
    check_generator,
    check_positive_int,
    check_same_dtype,
    check_sigma,
    check_unit_times,
    describe,
)


@dataclass(frozen=True)
class PathSample:
    """One draw from the interpolant for a batch of pairs (after Meta flow_matching's ``PathSample``).

    ``x0, x1, z, xt, target``: (B, *shape); ``t``: (B,).
    """

    x0: Tensor
    x1: Tensor
    t: Tensor
    z: Tensor
    xt: Tensor
    target: Tensor

    def to(self, device: torch.device | str) -> PathSample:
        """This sample with every field on ``device``: the same object when all are there already. Draws stay on
        the generator's device (the CPU) and are moved to the model's, so the random stream and the numbers do not
        depend on where the model is (:func:`flowvar.train.train`, the variance estimators)."""
        device = torch.device(device)
        if all(getattr(self, f.name).device == device for f in fields(self)):
            return self
        return replace(self, **{f.name: getattr(self, f.name).to(device) for f in fields(self)})


def expand_time(t: Tensor, like: Tensor) -> Tensor:
    """Reshape ``t`` of shape (B,) or (B, 1) (as the models take it), or a scalar, to broadcast against ``like`` of
    shape (B, *shape)."""
    if (isinstance(t, Tensor) and t.ndim == 1 and t.dtype == like.dtype and t.shape[0] == like.shape[0]
            and t.device == like.device):
        return t.reshape(-1, *([1] * (like.ndim - 1)))  # the common case, without the conversions below
    try:
        t = torch.as_tensor(t, dtype=like.dtype, device=like.device)
    except (TypeError, ValueError, RuntimeError):
        raise ConfigError(f"t must be a number or a tensor of times, got {describe(t)}") from None
    if t.ndim == 0:
        t = t.expand(like.shape[0])
    elif t.ndim == 2 and t.shape[1] == 1:  # a column of times, as flowvar.models.time_column accepts it
        t = t.reshape(-1)
    if t.shape != (like.shape[0],):
        raise ShapeError(f"t must be a scalar or have shape ({like.shape[0]},) or ({like.shape[0]}, 1), got "
                         f"{tuple(t.shape)}")
    return t.reshape(-1, *([1] * (like.ndim - 1)))


class NoiseSchedule(ABC):
    """f(t, σ): the standard deviation of the interpolant's Gaussian noise, and its t-derivative."""

    name: str

    @abstractmethod
    def scale(self, t: Tensor, sigma: float) -> Tensor:
        """f(t, σ), same shape as ``t``."""

    @abstractmethod
    def dscale(self, t: Tensor, sigma: float) -> Tensor:
        """∂f/∂t (t, σ), same shape as ``t``."""


class ConstantNoise(NoiseSchedule):
    """f(t, σ) = σ (TorchCFM's constant-σ CFM)."""

    name = "constant"

    def scale(self, t: Tensor, sigma: float) -> Tensor:
        return torch.full_like(t, sigma)

    def dscale(self, t: Tensor, sigma: float) -> Tensor:
        return torch.zeros_like(t)


class BrownianBridgeNoise(NoiseSchedule):
    """f(t, σ) = σ √(t(1 − t)); f' = σ(1 − 2t) / (2√(t(1 − t))), with t clamped to [ε, 1 − ε] in f'.

    ``eps``: 0 < ε < ½ (a ConfigError otherwise). f' is infinite at t = 0 and 1, which a time sampler can draw, so
    ε > 0; [ε, 1 − ε] is an interval only for ε < ½ (ε = 0.7 clamped every t to 0.3: a constant, wrong f'). At the
    default 1e-5, |f'| <= σ / (2√ε) ≈ 158 σ.
    """

    name = "bridge"

    def __init__(self, eps: float = 1e-5) -> None:
        ok = isinstance(eps, int | float | np.floating | np.integer) and not isinstance(eps, bool | np.bool_)
        if not ok or not 0 < float(eps) < 0.5:  # False for NaN
            raise ConfigError(f"BrownianBridgeNoise needs a number eps with 0 < eps < 0.5 (f' clamps t to [eps, "
                              f"1 - eps]: finite for eps > 0, an interval for eps < 0.5), got {describe(eps)}; the "
                              f"default 1e-5 suits most uses")
        self.eps = float(eps)

    def scale(self, t: Tensor, sigma: float) -> Tensor:
        return sigma * (t * (1 - t)).clamp_min(0).sqrt()

    def dscale(self, t: Tensor, sigma: float) -> Tensor:
        tc = t.clamp(self.eps, 1 - self.eps)
        return sigma * (1 - 2 * tc) / (2 * (tc * (1 - tc)).sqrt())


NOISE_SCHEDULES: dict[str, type[NoiseSchedule]] = {"constant": ConstantNoise, "bridge": BrownianBridgeNoise}


def make_noise(noise: str | NoiseSchedule) -> NoiseSchedule:
    """Resolve a noise form by name (``"constant"`` or ``"bridge"``) or pass an instance through."""
    if isinstance(noise, NoiseSchedule):
        return noise
    if noise not in NOISE_SCHEDULES:
        raise ConfigError(f"unknown noise form {noise!r}; choose one of {sorted(NOISE_SCHEDULES)}")
    return NOISE_SCHEDULES[noise]()


class Interpolant:
    """x_t = (1 − t) x0 + t x1 + f(t, σ) z, z ~ N(0, I), with target u_t (see module docstring)."""

    def __init__(self, sigma: float = 0.0, noise: str | NoiseSchedule = "constant",
                 target: Literal["plain", "conditional"] = "plain") -> None:
        self.sigma = check_sigma(sigma)
        self.noise = make_noise(noise)
        if target not in ("plain", "conditional"):
            raise ConfigError(f"unknown target {target!r}; use 'plain' (x1 − x0) or 'conditional'")
        self.target_kind = target

    @property
    def deterministic(self) -> bool:
        return self.sigma == 0.0

    def __repr__(self) -> str:
        return f"Interpolant(sigma={self.sigma}, noise={self.noise.name!r}, target={self.target_kind!r})"

    def mean(self, x0: Tensor, x1: Tensor, t: Tensor | float) -> Tensor:
        """μ_t = (1 − t) x0 + t x1, as ``torch.lerp``: one kernel, and exact at both ends (μ_0 = x0, μ_1 = x1).

        ``t`` as in :meth:`path`: every value in [0, 1], else a :class:`DataError` (t = 2 would extrapolate past x1)."""
        tt = expand_time(t, x0)
        check_unit_times(t, tt)
        return torch.lerp(x0, x1, tt)

    def path(self, x0: Tensor, x1: Tensor, t: Tensor | float, z: Tensor) -> PathSample:
        """The interpolant at given (x0, x1, t, z); all randomness explicit.

        ``x0``, ``x1``, ``z``: (B, *shape), all of one shape and one floating dtype; ``t``: (B,) or (B, 1), or a scalar
        (a Python number or a 0-d tensor) shared by every row, with every value in [0, 1]. Raises
        :class:`ShapeError` for any other shapes, :class:`DataError` for integer or mixed dtypes and for a t outside
        [0, 1] or NaN (which would extrapolate past x1, clamp the bridge noise to 0 or give NaN, all silently).
        """
        # Broadcasting would hide a mistake here: a z of shape (d,) or (1, d) gives every row the same noise, and an
        # x1 of (1, d) pairs every source with one target; both train without an error. Three shape compares.
        if not (isinstance(x0, Tensor) and isinstance(x1, Tensor) and isinstance(z, Tensor)):
            raise ShapeError(f"x0, x1 and z must be tensors of shape (B, *shape), got {describe(x0)}, "
                             f"{describe(x1)} and {describe(z)}")
        if x1.shape != x0.shape or z.shape != x0.shape:
            raise ShapeError(f"x0, x1 and z must all have the same shape (B, *shape), got x0 {tuple(x0.shape)}, "
                             f"x1 {tuple(x1.shape)}, z {tuple(z.shape)}; pass one target and one noise draw per "
                             f"source row (e.g. z = torch.randn_like(x0)) instead of relying on broadcasting")
        if x0.ndim == 0:
            raise ShapeError("x0, x1 and z must have a batch dimension (B, *shape), got 0-d tensors")
        check_floating("x0", x0)  # three dtype compares; torch's errors come from inside lerp or the time sampler
        check_same_dtype("x0", x0, "x1", x1)
        check_same_dtype("x0", x0, "z", z)
        tt = expand_time(t, x0)  # (B, 1, ..., 1); also takes a scalar t or (B, 1) and refuses any other shape
        check_unit_times(t, tt)
        xt = torch.lerp(x0, x1, tt)  # = self.mean(x0, x1, t), without converting t twice
        target = x1 - x0
        if self.sigma > 0:
            if type(self.noise) is ConstantNoise:  # x_t + σ z in one kernel, without a (B, 1) tensor of σ
                xt = torch.add(xt, z, alpha=self.sigma)
            else:
                xt = xt + self.noise.scale(tt, self.sigma) * z
            if self.target_kind == "conditional":
                target = target + self.noise.dscale(tt, self.sigma) * z
        if not (isinstance(t, Tensor) and t.ndim == 1 and t.dtype == x0.dtype and t.device == x0.device):
            t = tt.reshape(-1)  # (B,) in x0's dtype: a scalar t is broadcast to every row
        return PathSample(x0=x0, x1=x1, t=t, z=z, xt=xt, target=target)

    def sample(self, pairs: Pairs, t: Tensor, generator: torch.Generator | None = None) -> PathSample:
        """Draw z ~ N(0, I) (all zeros when σ = 0, drawing nothing) and return the path sample.

        z has ``pairs.x0``'s shape, dtype and device (see :func:`standard_normal_like` for where it is drawn).
        """
        check_generator(generator)
        z = standard_normal_like(pairs.x0, generator) if self.sigma > 0 else torch.zeros_like(pairs.x0)
        return self.path(pairs.x0, pairs.x1, t, z)


def standard_normal_like(x: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """z ~ N(0, I) with ``x``'s shape and dtype, on ``x``'s device.

    Drawn on the generator's device and moved to ``x``'s if they differ: a CPU generator gives the same numbers for
    CPU and GPU pairs (as ``train`` does, drawing on the CPU and moving the path), a generator on ``x``'s device draws
    there, and None draws from torch's global generator of ``x``'s device. For CPU pairs this is the draw
    ``torch.randn(x.shape, generator=generator, dtype=x.dtype)``, number for number.
    """
    device = x.device if generator is None else generator.device
    z = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=device)
    return z if z.device == x.device else z.to(x.device)


class TimeSampler(ABC):
    """Draws training times t ∈ [0, 1]."""

    @abstractmethod
    def sample(self, n: int, generator: torch.Generator | None = None,
               dtype: torch.dtype = torch.float32) -> Tensor:
        """(n,) times."""


class UniformTime(TimeSampler):
    """t ~ U(lo, hi) (default U(0, 1))."""

    def __init__(self, lo: float = 0.0, hi: float = 1.0) -> None:
        if not 0.0 <= lo < hi <= 1.0:
            raise ConfigError(f"UniformTime needs 0 <= lo < hi <= 1, got lo={lo}, hi={hi}")
        self.lo, self.hi = lo, hi

    def sample(self, n: int, generator: torch.Generator | None = None,
               dtype: torch.dtype = torch.float32) -> Tensor:
        u = torch.rand(check_positive_int("n", n), generator=check_generator(generator), dtype=dtype)
        if self.lo == 0.0 and self.hi == 1.0:
            return u  # = lo + (hi − lo)·u exactly, without two tensor operations
        return self.lo + (self.hi - self.lo) * u


__all__ = [
    "NOISE_SCHEDULES",
    "BrownianBridgeNoise",
    "ConstantNoise",
    "Interpolant",
    "NoiseSchedule",
    "PathSample",
    "TimeSampler",
    "UniformTime",
    "check_unit_times",
    "expand_time",
    "make_noise",
    "standard_normal_like",
]
