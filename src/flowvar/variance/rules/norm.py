"""Affine normalisations ``nn.GroupNorm``, ``nn.LayerNorm``, ``nn.RMSNorm``, ``nn.InstanceNorm1d/2d/3d``:
g_i(weight) = Σ_positions δ_i ⊙ x̂_i with x̂ the normalised input (recomputed), g_i(bias) = Σ_positions δ_i."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.modules.instancenorm import _InstanceNorm

from flowvar.errors import ShapeError
from flowvar.variance.records import CallRecord, Collector, RuleContext
from flowvar.variance.rules.base import Rule, batched

__all__ = ["GroupNormRule", "InstanceNormRule", "LayerNormRule", "RMSNormRule"]


class _NormRule(Rule):
    """Affine normalisation: g_i(weight) = Σ_positions δ_i ⊙ x̂_i, g_i(bias) = Σ_positions δ_i."""

    fills_check = True

    def normalise(self, module: nn.Module, x: Tensor) -> Tensor:
        raise NotImplementedError

    def reduce(self, module: nn.Module, y: Tensor) -> Tensor:
        """Sum (B, ...) over the positions that share one parameter entry → (B, *param.shape)."""
        raise NotImplementedError

    def accumulate(self, module: nn.Module, calls: list[CallRecord], collectors: dict[str, Collector],
                   ctx: RuleContext) -> str:
        gw: Tensor | None = None
        gb: Tensor | None = None
        for c in calls:
            x = batched(c.args[0], ctx.B, f"the {type(module).__name__} input")
            d = c.grad()
            if "weight" in collectors:
                part = self.reduce(module, d * self.normalise(module, x))
                gw = part if gw is None else gw + part
            if "bias" in collectors:
                part = self.reduce(module, d)
                gb = part if gb is None else gb + part
        if gw is not None:
            collectors["weight"].add_per_sample(0, gw)
        if gb is not None:
            collectors["bias"].add_per_sample(0, gb)
        return self.name


class GroupNormRule(_NormRule):
    name = "groupnorm"

    def normalise(self, module: nn.Module, x: Tensor) -> Tensor:
        assert isinstance(module, nn.GroupNorm)
        return F.group_norm(x, module.num_groups, None, None, module.eps)

    def reduce(self, module: nn.Module, y: Tensor) -> Tensor:
        return y.reshape(y.shape[0], y.shape[1], -1).sum(2)


class LayerNormRule(_NormRule):
    name = "layernorm"

    def normalise(self, module: nn.Module, x: Tensor) -> Tensor:
        assert isinstance(module, nn.LayerNorm)
        return F.layer_norm(x, module.normalized_shape, None, None, module.eps)

    def reduce(self, module: nn.Module, y: Tensor) -> Tensor:
        shape = tuple(module.normalized_shape)  # type: ignore[arg-type]
        if y.ndim <= len(shape):
            raise ShapeError(f"{type(module).__name__} input of shape {tuple(y.shape)} has no batch dimension")
        return y.reshape(y.shape[0], -1, *shape).sum(1)


class RMSNormRule(LayerNormRule):
    name = "rmsnorm"

    def normalise(self, module: nn.Module, x: Tensor) -> Tensor:
        return F.rms_norm(x, module.normalized_shape, None, module.eps)  # type: ignore[arg-type]


class InstanceNormRule(_NormRule):
    """``nn.InstanceNorm1d/2d/3d`` with ``affine=True``: x̂ = (x − μ)/√(v + ε) per sample and channel, with μ, v
    the sample's own statistics over its positions (training mode, or ``track_running_stats=False``) or the running
    statistics (eval mode with ``track_running_stats=True``) — either way each sample's output depends on that sample
    alone, so its gradient is defined, unlike BatchNorm's in training mode. The running statistics a training-mode
    forward updates are read, never written: x̂ needs them only in eval mode, where the forward leaves them as
    they are. The mode is the module's at the backward pass (a forward in another mode fails the sum check and is
    measured again by the exact fallback)."""

    name = "instancenorm"

    def normalise(self, module: nn.Module, x: Tensor) -> Tensor:
        assert isinstance(module, _InstanceNorm)
        if module.training or not module.track_running_stats or module.running_mean is None:
            return F.instance_norm(x, None, None, None, None, True, 0.0, module.eps)
        shape = (1, -1) + (1,) * (x.ndim - 2)
        mean = module.running_mean.to(x.dtype).view(shape)
        var = module.running_var.to(x.dtype).view(shape)  # type: ignore[union-attr]
        return (x - mean) / torch.sqrt(var + module.eps)

    def reduce(self, module: nn.Module, y: Tensor) -> Tensor:
        return y.reshape(y.shape[0], y.shape[1], -1).sum(2)
