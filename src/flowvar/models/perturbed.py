"""A trainable wrapper that equals a given field at its initial parameters, to measure gradient statistics "at" a
field without parameters of its own (a closed-form or memorising minimiser; PAPER.md §2 Prop 1–2)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from flowvar.errors import ShapeError, check_positive_int
from flowvar.models.base import check_same_device, time_column


class ZeroPerturbedField(nn.Module):
    """``base(x, t) + W [x, t] + c`` with W, c initialised to 0: a parametrised model equal to ``base``.

    ``base``: any field ``base(x, t)`` on (B, dim) inputs; ``dim``: the point dimension (W is (dim, dim + 1), c is
    (dim,), both float64). At W = 0, c = 0 its per-sample gradient is ∇_{W,c} ℓ = −2 r ⊗ [x, t, 1] with r = u − v
    the residual, so it vanishes exactly wherever ``base`` fits the sample; used to measure the gradient variance
    "at" a closed-form field with :func:`flowvar.variance.gradient_variance`.

    forward: x (B, dim), t (B,) or a scalar → (B, dim); any other x is a :class:`ShapeError` (flatten images with
    ``x.flatten(1)`` around a base that takes flat vectors). The result has torch's promoted dtype of the base's
    output and x's (float64 around a float64 closed-form base, whatever x's floating dtype).
    """

    def __init__(self, base: nn.Module, dim: int) -> None:
        super().__init__()
        self.base = base
        self.dim = check_positive_int("dim", dim)
        self.linear = nn.Linear(self.dim + 1, self.dim, dtype=torch.float64)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)

    def forward(self, x: Tensor, t: Tensor | float) -> Tensor:
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ShapeError(f"ZeroPerturbedField(dim={self.dim}) expects x of shape (B, {self.dim}), got "
                             f"{tuple(x.shape)}; its linear term W [x, t] acts on flat vectors: pass x.flatten(1) "
                             f"(with a base on flat vectors, e.g. FlatMLPField for images), or build it with "
                             f"dim=x.shape[1]")
        check_same_device(self, x, self.linear.weight)  # the base checks its own tensors (if it has any)
        tt = time_column(t, x)
        return self.base(x, tt) + self.linear(torch.cat([x, tt[:, None]], 1).to(self.linear.weight.dtype)).to(x.dtype)


__all__ = ["ZeroPerturbedField"]
