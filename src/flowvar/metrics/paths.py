"""Straightness of ODE trajectories (Liu et al.)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from flowvar.errors import DataError, ShapeError, check_finite
from flowvar.metrics.core import real_tensor

# ----------------------------------------------------------------------------------------------------------
# Straightness
# ----------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Straightness:
    """Straightness of saved trajectories (Liu et al. 2023, "Flow straight and fast").

    ``per_sample``: (B,) S_i; ``straightness`` = mean S_i; ``normalized`` = mean S_i / mean ‖x_T − x_0‖²/L
    (0 for straight paths); ``kinetic_energy`` = mean ∫‖v‖² dt.
    """

    straightness: float
    normalized: float
    kinetic_energy: float
    per_sample: Tensor


def path_straightness(trajectory: Tensor, times: Tensor) -> Straightness:
    """S = E ∫_{t_0}^{t_K} ‖(X_T − X_0)/L − v_t‖² dt from a saved trajectory, L = t_K − t_0.

    ``trajectory``: (K+1, B, *shape) states at ``times`` (K+1,), strictly increasing. The velocity is the
    forward finite difference v_k = (x_{k+1} − x_k)/Δt_k, constant on [t_k, t_{k+1}], so
    S_i = Σ_k Δt_k ‖(x_K − x_0)/L − v_k‖². For t ∈ [0, 1] (L = 1) this is Liu et al.'s S(Z) =
    E ∫‖(X1 − X0) − v‖² dt, and since Σ_k Δt_k v_k = x_K − x_0 it equals
    E[∫‖v‖² dt − ‖X1 − X0‖²] exactly (kinetic energy minus that of the straight path). 0 iff every path is
    a straight line at constant speed. The finite difference sees only the saved states: curvature
    between them is missed.

    Inputs go through :func:`~flowvar.metrics.core.real_tensor` (tensors, arrays or nested lists of real numbers;
    None, strings, complex and bool refused with a :class:`DataError`); a point with zero coordinates is a
    :class:`ShapeError`, as in :func:`~flowvar.metrics.core.as_points`.
    """
    traj = real_tensor("trajectory", trajectory, "shape (K+1, B, *point_shape)")
    if traj.ndim < 3:
        raise ShapeError(f"trajectory must have shape (K+1, B, *point_shape), got {tuple(traj.shape)}")
    if math.prod(traj.shape[2:]) == 0:
        raise ShapeError(f"trajectory has points with zero coordinates (shape {tuple(traj.shape)})")
    times = real_tensor("times", times, "shape (K+1,)").detach().to("cpu", torch.float64).reshape(-1)
    if times.shape[0] != traj.shape[0] or traj.shape[0] < 2:
        raise ShapeError(f"times must have one entry per saved state (>= 2), got {times.shape[0]} times for "
                         f"{traj.shape[0]} states")
    check_finite("times", times)
    dt = times.diff()
    if bool((dt <= 0).any()):
        raise DataError("times must be strictly increasing; sort the trajectory by time")
    flat = traj.detach().to("cpu", torch.float64).reshape(traj.shape[0], traj.shape[1], -1)
    if flat.shape[1] == 0:
        raise DataError("trajectory holds no samples (B = 0)")
    check_finite("trajectory", flat)
    L = float(times[-1] - times[0])
    chord = (flat[-1] - flat[0]) / L  # (B, D)
    v = flat.diff(dim=0) / dt[:, None, None]  # (K, B, D)
    per = ((chord[None] - v).pow(2).sum(-1) * dt[:, None]).sum(0)
    energy = (v.pow(2).sum(-1) * dt[:, None]).sum(0)
    straight_energy = float((chord.pow(2).sum(-1) * L).mean())
    s = float(per.mean())
    normalized = s / straight_energy if straight_energy > 0 else (0.0 if s == 0 else math.inf)
    return Straightness(straightness=s, normalized=normalized, kinetic_energy=float(energy.mean()), per_sample=per)


__all__ = ["Straightness", "path_straightness"]
