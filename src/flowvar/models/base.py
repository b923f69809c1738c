"""The one model signature: ``model(x, t) -> velocity``."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from flowvar.errors import ConfigError, ShapeError


def time_column(t: Tensor | float, x: Tensor) -> Tensor:
    """Return t as a (B,) tensor on x's dtype, broadcasting a scalar and flattening (B, 1); reject any other shape.

    ``x`` must be floating point: t is cast to x's dtype, and an integer x would turn t = 0.5 into 0 silently.
    """
    if not torch.is_floating_point(x):
        raise ConfigError(f"x must be a floating-point tensor, got dtype {x.dtype}; pass x.float() (or x.double() "
                          f"for a float64 model)")
    t = torch.as_tensor(t, dtype=x.dtype, device=x.device)
    if t.ndim == 0:
        return t.expand(x.shape[0])
    t = t.reshape(-1) if t.ndim == 2 and t.shape[1] == 1 else t
    if t.shape != (x.shape[0],):
        raise ShapeError(f"t must be a scalar or have shape ({x.shape[0]},) to match x of shape "
                         f"{tuple(x.shape)}, got {tuple(t.shape)}")
    return t


def input_mismatch(model: nn.Module, x: Tensor) -> ConfigError | None:
    """The :class:`ConfigError` naming how ``x`` differs from ``model``'s parameters in dtype or device, or None.

    Called only after a forward pass failed with a RuntimeError, so that a correct call pays nothing and
    torch.autocast (which mixes dtypes legally) still works: the learned fields do not cast their input.
    """
    weight = next((p for p in model.parameters() if p.is_floating_point()), None)
    if weight is None:
        return None
    name = type(model).__name__
    if not torch.is_floating_point(x):  # converting the model to an integer dtype is no fix: torch refuses it
        return ConfigError(f"{name} got x of dtype {x.dtype}, but x must be floating point; pass "
                           f"x.to({weight.dtype}) (x.float() for float32)")
    if x.device != weight.device:
        return ConfigError(f"{name} got x on {x.device} but its parameters are on {weight.device}; move one to the "
                           f"other (model.to({str(x.device)!r}) or x.to({str(weight.device)!r}))")
    if x.dtype != weight.dtype:
        return ConfigError(f"{name} got x of dtype {x.dtype} but its parameters are {weight.dtype}; convert the model "
                           f"(model.to({x.dtype}), e.g. model.double() for float64) or the input "
                           f"(x.to({weight.dtype}))")
    return None


class VectorField(nn.Module):
    """Base class for vector fields on vectors of dimension ``dim``: checks the input shape once."""

    dim: int

    def check_input(self, x: Tensor) -> None:
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ShapeError(f"{type(self).__name__} expects x of shape (B, {self.dim}), got {tuple(x.shape)}")


__all__ = ["VectorField", "input_mismatch", "time_column"]
