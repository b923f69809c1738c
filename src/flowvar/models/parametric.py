"""The exact parametric class of the Gaussian theory (PAPER.md §1.1, Lemma 1).

v_{θ,Θ}(x, t) = θ + Θ [I + tΘ]^{-1} (x − tθ),  θ ∈ R^d, Θ ∈ R^{d×d} learnable.

With θ = μ and Θ = M^{1/2} R − I this is the pair-optimal field of the coupling x1 = μ + M^{1/2} R x0:
along the line x_t = (1−t)x0 + t x1 = tμ + (I + tΘ) x0 it returns μ + Θ x0 = x1 − x0.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from flowvar.errors import ShapeError, SolverError, check_finite, check_positive_int
from flowvar.models.base import VectorField, check_floating_input, check_same_device, time_column


class GaussianParametricField(VectorField):
    """v(x, t) = θ + Θ A_t^{-1} (x − tθ), A_t = I + tΘ. Raises :class:`SolverError` where A_t is singular.

    forward: x (B, dim) floating point (an integer x is a :class:`~flowvar.errors.ConfigError`), on the parameters'
    device, t (B,) or a scalar → (B, dim) in the parameters' dtype (x is cast to it: float64 by default, so a float32
    x gives float64, and a float32 field rounds a float64 x).
    """

    def __init__(self, dim: int, theta: Tensor | None = None, Theta: Tensor | None = None,
                 dtype: torch.dtype = torch.float64, trainable: bool = True) -> None:
        super().__init__()
        self.dim = check_positive_int("dim", dim)
        theta = torch.zeros(dim, dtype=dtype) if theta is None else torch.as_tensor(theta, dtype=dtype).clone()
        Theta = torch.zeros(dim, dim, dtype=dtype) if Theta is None else torch.as_tensor(Theta, dtype=dtype).clone()
        if theta.shape != (dim,) or Theta.shape != (dim, dim):
            raise ShapeError(f"theta must be ({dim},) and Theta ({dim}, {dim}), got {tuple(theta.shape)} and "
                             f"{tuple(Theta.shape)}")
        self.theta = nn.Parameter(theta, requires_grad=trainable)
        self.Theta = nn.Parameter(Theta, requires_grad=trainable)

    def system(self, t: Tensor) -> Tensor:
        """A_t = I + tΘ for each t, shape (B, d, d)."""
        eye = torch.eye(self.dim, dtype=self.Theta.dtype, device=self.Theta.device)
        return eye + t[:, None, None] * self.Theta

    def forward(self, x: Tensor, t: Tensor | float) -> Tensor:
        check_floating_input(x)  # before the cast below, which would pass an integer x on silently
        self.check_input(x)
        check_same_device(self, x, self.theta)
        x = x.to(self.theta.dtype)
        t = time_column(t, x)
        # NaN only: an adaptive solver may evaluate a little past t = 1, where the formula still holds
        check_finite("x", x)
        check_finite("t", t)
        A = self.system(t)
        rhs = x - t[:, None] * self.theta
        w, info = torch.linalg.solve_ex(A, rhs.unsqueeze(-1))
        if bool((info != 0).any()):
            bad = t[info != 0]
            raise SolverError(f"I + tΘ is singular at t = {bad[:3].tolist()}: the field is undefined at this "
                              f"time (see flowvar.gaussian.singular_times); choose a time grid that avoids it")
        return self.theta + (w.squeeze(-1) @ self.Theta.T)


__all__ = ["GaussianParametricField"]
