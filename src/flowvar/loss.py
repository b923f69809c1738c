"""The conditional flow-matching loss (PAPER.md §1.1).

Per-sample loss ℓ_i = ‖u_t,i − v_θ(x_t,i, t_i)‖² (a sum over coordinates), batch loss
L_MC = (1/B) Σ_i ℓ_i. TorchCFM's ``mse_loss`` averages over coordinates too, i.e. L_MC / d; the
minimiser is the same, gradients differ by the constant factor d.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from flowvar.couplings import Coupling, Pairs
from flowvar.errors import ShapeError
from flowvar.interpolants import Interpolant, PathSample, TimeSampler, UniformTime


def per_sample_loss(model: nn.Module, path: PathSample) -> Tensor:
    """ℓ_i = ‖u_t,i − v(x_t,i, t_i)‖², shape (B,)."""
    v = model(path.xt, path.t)
    if v.shape != path.target.shape:
        raise ShapeError(f"the model returned shape {tuple(v.shape)} for inputs of shape "
                         f"{tuple(path.xt.shape)}; a vector field must return one velocity per input point")
    return (v - path.target).pow(2).flatten(1).sum(1)


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
        return per_sample_loss(model, path).mean()
