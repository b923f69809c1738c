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
from flowvar.errors import ConfigError, ShapeError, describe
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
        # refused here, not at the first draw: CFMLoss(0.05) failed there with an AttributeError on a float, and
        # CFMLoss(None, Interpolant(0.05)) with a TypeError inside the interpolant's sample()
        if interpolant is not None and (isinstance(interpolant, TimeSampler) or
                                        not callable(getattr(interpolant, "sample", None))):
            if isinstance(interpolant, TimeSampler):
                raise ConfigError(f"CFMLoss's first argument is the interpolant, got the time sampler "
                                  f"{type(interpolant).__name__}; pass it second: CFMLoss(Interpolant(sigma), "
                                  f"time_sampler) or CFMLoss(time_sampler=...)")
            raise ConfigError(f"CFMLoss's first argument is the interpolant, got {describe(interpolant)}; for a noise "
                              f"level sigma pass CFMLoss(Interpolant(sigma)), e.g. CFMLoss(Interpolant(0.05))")
        if time_sampler is not None and (isinstance(time_sampler, Interpolant) or
                                         not callable(getattr(time_sampler, "sample", None))):
            hint = ("; the interpolant comes first: CFMLoss(Interpolant(sigma)) or CFMLoss(Interpolant(sigma), "
                    "time_sampler)" if isinstance(time_sampler, Interpolant) else
                    ", e.g. UniformTime(lo, hi)")
            raise ConfigError(f"CFMLoss's second argument is the time sampler (a TimeSampler), got "
                              f"{describe(time_sampler)}{hint}")
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


def check_loss_and_coupling(loss: object, coupling: object, call: str) -> None:
    """Raise a one-line :class:`ConfigError` naming ``call`` (the right argument order) unless ``loss`` draws
    paths (a :class:`CFMLoss`) and ``coupling`` draws pairs (a :class:`~flowvar.couplings.Coupling`): swapped or
    wrong arguments failed with a TypeError deep inside the first draw."""
    if isinstance(loss, Coupling) and isinstance(coupling, CFMLoss):
        raise ConfigError(f"the loss and the coupling are swapped (got the {type(loss).__name__} as the loss and the "
                          f"CFMLoss as the coupling); call {call}")
    if isinstance(loss, Coupling) or not callable(getattr(loss, "draw", None)):
        raise ConfigError(f"loss must be a CFMLoss, e.g. CFMLoss(Interpolant(sigma)), got {describe(loss)}; "
                          f"call {call}")
    if isinstance(coupling, CFMLoss) or not callable(getattr(coupling, "sample", None)):
        raise ConfigError(f"coupling must be a Coupling, e.g. ExactOTCoupling(source, target), got "
                          f"{describe(coupling)}; call {call}")


__all__ = ["CFMLoss", "check_loss_and_coupling", "per_sample_loss"]
