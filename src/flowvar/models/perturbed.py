"""A trainable wrapper that equals a given field at its initial parameters, to measure gradient statistics "at" a
field without parameters of its own (a closed-form or memorising minimiser; PAPER.md §2 Prop 1–2)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from flowvar.models.base import time_column


class ZeroPerturbedField(nn.Module):
    """``base(x, t) + W [x, t] + c`` with W, c initialised to 0: a parametrised model equal to ``base``.

    ``base``: any field ``base(x, t)`` on (B, dim) inputs; ``dim``: the point dimension (W is (dim, dim + 1), c is
    (dim,), both float64). At W = 0, c = 0 its per-sample gradient is ∇_{W,c} ℓ = −2 r ⊗ [x, t, 1] with r = u − v
    the residual, so it vanishes exactly wherever ``base`` fits the sample; used to measure the gradient variance
    "at" a closed-form field with :func:`flowvar.variance.gradient_variance`.
    """

    def __init__(self, base: nn.Module, dim: int) -> None:
        super().__init__()
        self.base = base
        self.linear = nn.Linear(dim + 1, dim, dtype=torch.float64)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)

    def forward(self, x: Tensor, t: Tensor | float) -> Tensor:
        tt = time_column(t, x)
        return self.base(x, tt) + self.linear(torch.cat([x, tt[:, None]], 1).to(self.linear.weight.dtype)).to(x.dtype)


__all__ = ["ZeroPerturbedField"]
