"""A time-conditioned MLP: v(x, t) = MLP([x, t]) (TorchCFM's 2-D MLP, configurable), on vectors or on flattened
items."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from flowvar.errors import ConfigError, ShapeError, check_positive_int
from flowvar.models.base import VectorField, input_mismatch, time_column

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "selu": nn.SELU, "silu": nn.SiLU, "relu": nn.ReLU, "gelu": nn.GELU, "tanh": nn.Tanh, "elu": nn.ELU,
}


class MLPField(VectorField):
    """``depth`` hidden layers of ``width`` units; input (x, t) concatenated, output a velocity in R^dim."""

    def __init__(self, dim: int, width: int = 256, depth: int = 3, activation: str = "selu") -> None:
        super().__init__()
        self.dim = check_positive_int("dim", dim)
        check_positive_int("width", width)
        check_positive_int("depth", depth)
        if activation not in ACTIVATIONS:
            raise ConfigError(f"unknown activation {activation!r}; choose one of {sorted(ACTIVATIONS)}")
        layers: list[nn.Module] = []
        fan_in = dim + 1
        for _ in range(depth):
            layers += [nn.Linear(fan_in, width), ACTIVATIONS[activation]()]
            fan_in = width
        layers.append(nn.Linear(fan_in, dim))
        self.net = nn.Sequential(*layers)
        self.config = {"dim": dim, "width": width, "depth": depth, "activation": activation}

    def forward(self, x: Tensor, t: Tensor | float) -> Tensor:
        """x (B, dim) in the parameters' dtype (``model.double()`` for float64 input), t (B,) or a scalar → (B, dim).

        Like the other learned fields (UNet, DiT), the MLP does not cast its input: a dtype or device mismatch is a
        :class:`ConfigError` naming the fix (:func:`~flowvar.models.base.input_mismatch`), rather than torch's
        "mat1 and mat2 must have the same dtype".
        """
        self.check_input(x)
        try:
            return self.net(torch.cat([x, time_column(t, x)[:, None]], dim=1))
        except RuntimeError:
            problem = input_mismatch(self, x)
            if problem is not None:
                raise problem from None
            raise


class FlatMLPField(nn.Module):
    """:class:`MLPField` on flattened items: v(x, t) = MLP([flatten(x), t]) reshaped back, (B, *shape) → (B, *shape).

    ``shape``: one item's shape (an image's (C, H, W), or (d,) for vectors, where the reshape is a no-op); the MLP
    sees D = prod(shape) coordinates. Used for images when a UNet is too slow (flowvar advise-sigma on a CPU).
    """

    def __init__(self, shape: Sequence[int], width: int = 256, depth: int = 3, activation: str = "selu") -> None:
        super().__init__()
        self.shape = tuple(check_positive_int("shape entry", n) for n in shape)
        self.mlp = MLPField(math.prod(self.shape), width, depth, activation)

    def forward(self, x: Tensor, t: Tensor | float) -> Tensor:
        """x (B, *shape), t (B,) or a scalar → (B, *shape); x of any other shape is a :class:`ShapeError`, even one
        with the right number of entries per item (a channels-last (B, H, W, C) batch for shape (C, H, W), or
        pre-flattened (B, C·H·W) rows, would otherwise be taken with its coordinates in the wrong order)."""
        if tuple(x.shape[1:]) != self.shape:
            item = ", ".join(map(str, self.shape))
            fix = (f"reshape it with x.reshape(-1, {item}) (channels-last images: x.permute(0, 3, 1, 2)), or "
                   if math.prod(x.shape[1:]) == math.prod(self.shape) else "")
            raise ShapeError(f"FlatMLPField(shape={self.shape}) expects x of shape (B, {item}), got "
                             f"{tuple(x.shape)}; {fix}build the field with shape={tuple(x.shape[1:])}")
        return self.mlp(x.reshape(x.shape[0], -1), t).reshape(x.shape)


__all__ = ["ACTIVATIONS", "FlatMLPField", "MLPField"]
