"""Closed-form fields that are not in the parametric class."""

from __future__ import annotations

import torch
from torch import Tensor

from flowvar.errors import ConfigError, ShapeError, check_positive_int, check_sigma, describe
from flowvar.models.base import VectorField, check_same_device, time_column


def counterexample_mu(name: str, mu: Tensor | float, dim: int, dtype: torch.dtype) -> Tensor:
    """μ of Counter Example 1 as a (dim,) tensor in ``dtype``: a number (every coordinate) or a (dim,) tensor, all
    finite; a :class:`ShapeError` or :class:`ConfigError` naming the fix otherwise (a NaN μ made the field NaN
    everywhere, and a μ of another length failed in torch's expand)."""
    try:
        value = torch.as_tensor(mu, dtype=dtype)
    except (TypeError, ValueError, RuntimeError):
        raise ConfigError(f"{name} needs mu as a number or a ({dim},) tensor, got {describe(mu)}") from None
    if value.ndim > 1 or (value.ndim == 1 and value.shape[0] not in (1, dim)):
        raise ShapeError(f"{name} needs mu as a number or a tensor of shape ({dim},) to match dim={dim}, got shape "
                         f"{tuple(value.shape)}; pass dim={value.numel()} for a {value.numel()}-vector mu")
    if not bool(torch.isfinite(value).all()):
        bad = int((~torch.isfinite(value)).sum())
        raise ConfigError(f"{name} needs a finite mu, got {bad} NaN/Inf value(s) in mu = {describe(mu)}")
    return value.expand(dim).clone()


class CounterexampleField(VectorField):
    """The exact conditional-expectation field of Counter Example 1 (PAPER.md §2).

    Coupling x1 = R_180 x0 + μ = −x0 + μ, x0 ~ N(0, I). Then x_t = tμ + (1 − 2t) x0 and, for t ≠ ½,
    v(x, t) = E[x1 − x0 | x_t = x] = μ − 2 (x − tμ) / (1 − 2t).
    At t = ½ every line meets at μ/2 and the field is undefined: this module returns ±inf/NaN there on
    purpose, so that a solver evaluating it exactly at t = ½ (an even Euler grid) fails loudly.

    ``mu``: a number (every coordinate) or a (dim,) tensor, finite. ``x``: (B, dim); ``t``: (B,) or a scalar; returns
    (B, dim) in torch's promotion of x's dtype and ``dtype`` (float64 for the default, whatever x's float dtype).
    """

    def __init__(self, mu: Tensor | float = 5.0, dim: int = 2, dtype: torch.dtype = torch.float64) -> None:
        super().__init__()
        self.dim = check_positive_int("dim", dim)
        self.register_buffer("mu", counterexample_mu("CounterexampleField", mu, self.dim, dtype))

    def forward(self, x: Tensor, t: Tensor | float) -> Tensor:
        self.check_input(x)
        check_same_device(self, x, self.mu)
        t = time_column(t, x)[:, None]
        return self.mu - 2 * (x - t * self.mu) / (1 - 2 * t)


class NoisyCounterexampleField(VectorField):
    """The exact CFM minimiser of Counter Example 1 under constant interpolant noise σ > 0 (PAPER.md §4 [D]).

    Coupling x1 = R_180 x0 + μ, x0 ~ N(0, I), interpolant x_t = tμ + s x0 + σz with s = 1 − 2t, z ~ N(0, I).
    Then E[x0 | x_t = x] = s (x − tμ) / (s² + σ²) and

        v(x, t) = E[x1 − x0 | x_t = x] = μ − 2 s (x − tμ) / (s² + σ²),

    defined for every t (at t = ½ it is μ). Its flow map is the translation x0 ↦ x0 + μ: y = x − tμ obeys
    y' = −2s y / (s² + σ²), so y ∝ √(s² + σ²). The radial rate −2s/(s² + σ²) peaks at 1/σ where s = σ, so an Euler
    step h = 1/n flips the sign of y (lands near the rotation partner) only when h > σ. For σ = 0 use
    :class:`CounterexampleField`. ``mu`` as there; ``sigma``: a finite number > 0 (a bool is refused). ``x``:
    (B, dim); ``t``: (B,) or a scalar; returns (B, dim) in torch's promotion of x's dtype and ``dtype``.
    """

    def __init__(self, mu: Tensor | float, sigma: float, dim: int = 2, dtype: torch.dtype = torch.float64) -> None:
        super().__init__()
        sigma = check_sigma(sigma)  # a finite number, not a bool (True would mean σ = 1)
        if sigma == 0:
            raise ConfigError("NoisyCounterexampleField needs σ > 0, got 0; use CounterexampleField for σ = 0")
        self.dim, self.sigma = check_positive_int("dim", dim), sigma
        self.register_buffer("mu", counterexample_mu("NoisyCounterexampleField", mu, self.dim, dtype))

    def forward(self, x: Tensor, t: Tensor | float) -> Tensor:
        self.check_input(x)
        check_same_device(self, x, self.mu)
        t = time_column(t, x)[:, None]
        s = 1 - 2 * t
        return self.mu - 2 * s * (x - t * self.mu) / (s * s + self.sigma**2)


__all__ = ["CounterexampleField", "NoisyCounterexampleField"]
