"""Closed-form fields that are not in the parametric class."""

from __future__ import annotations

import torch
from torch import Tensor

from flowvar.errors import check_positive_int
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
