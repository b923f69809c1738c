"""A time-conditioned MLP: v(x, t) = MLP([x, t]) (TorchCFM's 2-D MLP, configurable)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from flowvar.errors import ConfigError, check_positive_int
from flowvar.models.base import VectorField, time_column

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
        self.check_input(x)
        return self.net(torch.cat([x, time_column(t, x)[:, None]], dim=1))
