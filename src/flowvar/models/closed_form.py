"""Closed-form fields that are not in the parametric class."""

from __future__ import annotations

import torch
from torch import Tensor

from flowvar.errors import ConfigError, check_positive_int
from flowvar.models.base import VectorField, time_column


class CounterexampleField(VectorField):
    """The exact conditional-expectation field of Counter Example 1 (PAPER.md §2).

    Coupling x1 = R_180 x0 + μ = −x0 + μ, x0 ~ N(0, I). Then x_t = tμ + (1 − 2t) x0 and, for t ≠ ½,
    v(x, t) = E[x1 − x0 | x_t = x] = μ − 2 (x − tμ) / (1 − 2t).
    At t = ½ every line meets at μ/2 and the field is undefined: this module returns ±inf/NaN there on
    purpose, so that a solver evaluating it exactly at t = ½ (an even Euler grid) fails loudly.
    """

    def __init__(self, mu: Tensor | float = 5.0, dim: int = 2, dtype: torch.dtype = torch.float64) -> None:
        super().__init__()
        self.dim = check_positive_int("dim", dim)
        self.register_buffer("mu", torch.as_tensor(mu, dtype=dtype).expand(dim).clone())

    def forward(self, x: Tensor, t: Tensor | float) -> Tensor:
        self.check_input(x)
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
    :class:`CounterexampleField`. ``x``: (B, dim); ``t``: (B,) or a scalar; returns (B, dim).
    """

    def __init__(self, mu: Tensor | float, sigma: float, dim: int = 2, dtype: torch.dtype = torch.float64) -> None:
        super().__init__()
        if not sigma > 0:
            raise ConfigError(f"NoisyCounterexampleField needs σ > 0 (use CounterexampleField for σ = 0), got {sigma}")
        self.dim, self.sigma = check_positive_int("dim", dim), float(sigma)
        self.register_buffer("mu", torch.as_tensor(mu, dtype=dtype).expand(dim).clone())

    def forward(self, x: Tensor, t: Tensor | float) -> Tensor:
        self.check_input(x)
        t = time_column(t, x)[:, None]
        s = 1 - 2 * t
        return self.mu - 2 * s * (x - t * self.mu) / (s * s + self.sigma**2)


__all__ = ["CounterexampleField", "NoisyCounterexampleField"]
