"""Source and target distributions: anything that draws ``(n, *shape)`` samples from a generator.

The Gaussian target of the theory lives in :mod:`flowvar.gaussian` (it owns the OT formulas);
image datasets live in :mod:`flowvar.data`. Both implement :class:`Distribution`.
"""

from __future__ import annotations

import numbers
from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence

import numpy as np
import torch
from torch import Tensor

from flowvar.errors import (
    ConfigError,
    DataError,
    ShapeError,
    check_finite,
    check_floating,
    check_generator,
    check_positive_int,
    describe,
    tensor_input,
)


class Distribution(ABC):
    """A sampler: ``sample(n, generator) -> Tensor`` of shape ``(n, *event_shape)``."""

    event_shape: tuple[int, ...]
    dtype: torch.dtype = torch.float32

    @abstractmethod
    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """Draw ``n`` i.i.d. samples, shape ``(n, *event_shape)``."""

    @property
    def dim(self) -> int:
        """Number of scalar coordinates of one sample."""
        d = 1
        for s in self.event_shape:
            d *= s
        return d


class StandardNormal(Distribution):
    """N(0, I) over ``event_shape`` (an int means a vector of that length): positive integers, Python's or numpy's
    (``np.int64(3)``, an integer array, ``torch.Size``); a ConfigError names anything else."""

    def __init__(self, event_shape: int | Iterable[int], dtype: torch.dtype = torch.float32) -> None:
        if isinstance(event_shape, bool | str | bytes):
            raise ConfigError(f"event_shape must be a positive integer or a sequence of them, got {event_shape!r}")
        if isinstance(event_shape, numbers.Number):  # one length; 2.5 is refused below, 2.0 taken as 2
            entries: tuple[object, ...] = (event_shape,)
        else:
            try:
                entries = tuple(event_shape)
            except TypeError:
                raise ConfigError(f"event_shape must be a positive integer or a sequence of them, got "
                                  f"{describe(event_shape)}") from None
        # the checked values are kept (ints): a raw 2.0 reached torch.randn's size and np.int64 failed its check
        self.event_shape = tuple(check_positive_int(
            "event_shape entry", int(s) if isinstance(s, numbers.Integral) and not isinstance(s, bool) else s)
            for s in entries)
        self.dtype = dtype

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        n = check_positive_int("n", n)
        return torch.randn((n, *self.event_shape), generator=check_generator(generator), dtype=self.dtype)

    def __repr__(self) -> str:
        return f"StandardNormal(event_shape={self.event_shape})"


class GaussianMixture(Distribution):
    """Isotropic Gaussian mixture: ``sum_k w_k N(means[k], std_k^2 I)``.

    ``means``: (K, d), a floating-point tensor (its dtype is the samples'), a floating-point numpy array (its dtype
    kept) or a nested list of numbers (as :class:`~flowvar.gaussian.GaussianProblem` takes them; it becomes torch's
    default dtype, float32). An integer tensor or array is refused, as integer data are throughout flowvar (a
    ConfigError naming the conversion); a list of integers is numbers written without a decimal point, and converted.
    ``stds``: scalar or (K,); ``weights``: (K,) summing to one (uniform if None).
    """

    def __init__(self, means: Tensor | Sequence[Sequence[float]] | np.ndarray, stds: float | Tensor = 0.5,
                 weights: Tensor | None = None) -> None:
        if isinstance(means, list | tuple):
            try:  # a list of integer means ([[0, 0], [3, 3]]) is meant as numbers, not as integer data
                means = torch.as_tensor(means, dtype=torch.get_default_dtype())
            except (TypeError, ValueError, RuntimeError):
                raise ConfigError(f"GaussianMixture means must be K rows of d numbers, got {describe(means)}"
                                  ) from None
        elif isinstance(means, np.ndarray) and means.dtype.kind == "f":
            means = torch.from_numpy(means)
        if not isinstance(means, Tensor) or not means.is_floating_point():
            convert = ("; convert it, e.g. torch.as_tensor(means, dtype=torch.float32), or pass a list of numbers"
                       if getattr(means, "dtype", None) is not None else "")
            raise ConfigError(f"GaussianMixture means must be a floating-point tensor (K, d), got {describe(means)}"
                              f"{convert}")
        if means.ndim != 2 or means.shape[0] < 1:
            raise ShapeError(f"GaussianMixture means must have shape (K, d) with K >= 1, got {tuple(means.shape)}")
        check_finite("GaussianMixture means", means)
        k, d = means.shape
        self.means, self.stds, self.weights = means, self._check_stds(stds, k, means.dtype), \
            self._check_weights(weights, k, means.dtype)
        self.event_shape = (d,)
        self.dtype = means.dtype

    @staticmethod
    def _check_stds(stds: float | Tensor, k: int, dtype: torch.dtype) -> Tensor:
        """(K,) stds: a scalar or K values, all finite and > 0 (NaN or Inf would make every sample NaN or ±Inf)."""
        if isinstance(stds, bool):
            raise ConfigError(f"GaussianMixture stds must be numbers > 0, got the bool {stds!r}")
        try:
            stds_t = torch.as_tensor(stds, dtype=dtype)
        except (TypeError, ValueError, RuntimeError):
            raise ConfigError(f"GaussianMixture stds must be a number or {k} numbers > 0, got {describe(stds)}"
                              ) from None
        if stds_t.shape not in ((), (1,), (k,)):
            raise ShapeError(f"GaussianMixture stds must be a scalar or have shape ({k},) (one per component), got "
                             f"shape {tuple(stds_t.shape)}")
        stds_t = stds_t.expand(k).clone()
        if not bool(torch.isfinite(stds_t).all()) or bool((stds_t <= 0).any()):
            raise ConfigError(f"GaussianMixture stds must be finite and > 0, got {stds_t.tolist()[:8]}"
                              f"{' …' if k > 8 else ''}")
        return stds_t

    @staticmethod
    def _check_weights(weights: Tensor | None, k: int, dtype: torch.dtype) -> Tensor:
        """(K,) weights: finite, >= 0, summing to 1 (within 1e-6); uniform if None."""
        if weights is None:
            return torch.full((k,), 1.0 / k, dtype=dtype)
        try:
            w = torch.as_tensor(weights, dtype=dtype)
        except (TypeError, ValueError, RuntimeError):
            raise ConfigError(f"GaussianMixture weights must be {k} numbers, got {describe(weights)}") from None
        if w.shape != (k,):
            raise ShapeError(f"GaussianMixture weights must have shape ({k},) (one per component), got "
                             f"{tuple(w.shape)}")
        # NaN compares False with everything, so a NaN weight passed the old sign and sum checks and only failed in
        # torch.multinomial at sampling time
        shown = f"{w.tolist()[:8]}{' …' if k > 8 else ''}"
        if not bool(torch.isfinite(w).all()) or bool((w < 0).any()):
            raise ConfigError(f"GaussianMixture weights must be finite and >= 0, got {shown}")
        if not abs(float(w.sum()) - 1) <= 1e-6:
            raise ConfigError(f"GaussianMixture weights must sum to 1, got {shown} (sum {float(w.sum()):.6g}); "
                              f"divide them by their sum")
        return w

    @classmethod
    def random(cls, dim: int, n_components: int = 8, mean_scale: float = 3.0, std: float = 0.5,
               seed: int = 0, dtype: torch.dtype = torch.float32) -> GaussianMixture:
        """Means drawn from N(0, mean_scale^2 I) with a fixed seed (PAPER.md §4, GMM defaults)."""
        gen = torch.Generator().manual_seed(seed)
        means = mean_scale * torch.randn(check_positive_int("n_components", n_components),
                                         check_positive_int("dim", dim), generator=gen, dtype=dtype)
        return cls(means, std)

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        n = check_positive_int("n", n)
        comp = torch.multinomial(self.weights, n, replacement=True, generator=check_generator(generator))
        noise = torch.randn((n, self.means.shape[1]), generator=generator, dtype=self.dtype)
        return self.means[comp] + self.stds[comp, None] * noise


class Empirical(Distribution):
    """Uniform draws (with replacement) from a finite set of points ``data`` of shape (N, *shape), real floating
    point (DataError otherwise: a coupling would drop complex data's imaginary part and train on integer pixels'
    raw 0..255, each without a word)."""

    def __init__(self, data: Tensor) -> None:
        data = tensor_input("Empirical data", data)
        check_floating("Empirical data", data)
        if data.ndim < 2 or data.shape[0] == 0:
            raise DataError(f"Empirical data must have shape (N, *shape) with N >= 1, got {tuple(data.shape)}")
        check_finite("Empirical data", data)
        self.data = data
        self.event_shape = tuple(data.shape[1:])
        self.dtype = data.dtype

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        idx = torch.randint(0, self.data.shape[0], (check_positive_int("n", n),), generator=check_generator(generator))
        return self.data[idx]


__all__ = ["Distribution", "Empirical", "GaussianMixture", "StandardNormal"]
