"""The one model signature: ``model(x, t) -> velocity``."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from flowvar.errors import ShapeError


def time_column(t: Tensor | float, x: Tensor) -> Tensor:
    """Return t as a (B,) tensor on x's dtype, broadcasting a scalar; reject any other shape."""
    t = torch.as_tensor(t, dtype=x.dtype, device=x.device)
    if t.ndim == 0:
        return t.expand(x.shape[0])
    t = t.reshape(-1) if t.ndim == 2 and t.shape[1] == 1 else t
    if t.shape != (x.shape[0],):
        raise ShapeError(f"t must be a scalar or have shape ({x.shape[0]},) to match x of shape "
                         f"{tuple(x.shape)}, got {tuple(t.shape)}")
    return t


class VectorField(nn.Module):
    """Base class for vector fields on vectors of dimension ``dim``: checks the input shape once."""

    dim: int

    def check_input(self, x: Tensor) -> None:
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ShapeError(f"{type(self).__name__} expects x of shape (B, {self.dim}), got {tuple(x.shape)}")


__all__ = ["VectorField", "time_column"]
