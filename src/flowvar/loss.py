"""The conditional flow-matching loss (PAPER.md §1.1).

Per-sample loss ℓ_i = ‖u_t,i − v_θ(x_t,i, t_i)‖² (a sum over coordinates), batch loss
L_MC = (1/B) Σ_i ℓ_i. TorchCFM's ``mse_loss`` averages over coordinates too, i.e. L_MC / d; the
minimiser is the same, gradients differ by the constant factor d.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from flowvar.couplings import Coupling, Pairs
from flowvar.errors import ShapeError
from flowvar.interpolants import Interpolant, PathSample, TimeSampler, UniformTime


def _velocity(model: nn.Module, path: PathSample) -> Tensor:
    """v(x_t, t) with the shape check every loss needs."""
    v = model(path.xt, path.t)
    if v.shape != path.target.shape:
        raise ShapeError(f"the model returned shape {tuple(v.shape)} for inputs of shape "
                         f"{tuple(path.xt.shape)}; a vector field must return one velocity per input point")
    return v


def per_sample_loss(model: nn.Module, path: PathSample) -> Tensor:
    """ℓ_i = ‖u_t,i − v(x_t,i, t_i)‖², shape (B,)."""
    v = _velocity(model, path)
    sq = (v - path.target).pow(2)
    return (sq if sq.ndim == 2 else sq.flatten(1)).sum(1)


class CFMLoss:
    """Samples (t, z) for a batch of pairs and evaluates the CFM loss of a model.

    ``sample_path(pairs, generator)`` → :class:`PathSample`; ``__call__(model, path)`` → scalar mean loss.
    """

    def __init__(self, interpolant: Interpolant | None = None, time_sampler: TimeSampler | None = None) -> None:
        self.interpolant = interpolant or Interpolant()
        self.time_sampler = time_sampler or UniformTime()

    def sample_path(self, pairs: Pairs, generator: torch.Generator | None = None) -> PathSample:
        t = self.time_sampler.sample(len(pairs), generator, dtype=pairs.x0.dtype)
        return self.interpolant.sample(pairs, t, generator)

    def draw(self, coupling: Coupling, batch_size: int, generator: torch.Generator | None = None) -> PathSample:
        """Pairs from ``coupling`` then a path sample: all the randomness of one training batch."""
        return self.sample_path(coupling.sample(batch_size, generator), generator)

    def per_sample(self, model: nn.Module, path: PathSample) -> Tensor:
        return per_sample_loss(model, path)

    def __call__(self, model: nn.Module, path: PathSample) -> Tensor:
        """L_MC = (1/B) Σ_i ℓ_i, as one fused squared-error sum (equal to ``per_sample(...).mean()`` up to
        rounding; one kernel instead of three in the hot training step)."""
        v = _velocity(model, path)
        return F.mse_loss(v, path.target, reduction="sum") / v.shape[0]


__all__ = ["CFMLoss", "per_sample_loss"]
