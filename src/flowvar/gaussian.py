"""Closed-form Gaussian-to-Gaussian theory (PAPER.md §2, Lemma 1, Prop 1, Counter Example 1).

Setting: X0 ~ N(0, I_d), X1 ~ N(μ, M) with M symmetric positive definite.

* OT map (Brenier): T_OT(x0) = μ + M^{1/2} x0.
* Rotated OT coupling: T_R(x0) = T_OT(R x0) = μ + M^{1/2} R x0, a valid coupling because R x0 ~ N(0, I).
* Lemma 1 field: v(x, t) = θ + Θ [I + tΘ]^{-1} (x − tθ) with θ = μ and Θ = M^{1/2} R − I (R = I for OT).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from flowvar.distributions import Distribution
from flowvar.errors import ConfigError, ShapeError, check_finite, check_positive_int


def sqrtm_psd(M: Tensor) -> Tensor:
    """Symmetric square root of a symmetric positive (semi)definite matrix via eigh."""
    evals, evecs = torch.linalg.eigh(M)
    return (evecs * evals.clamp_min(0).sqrt()) @ evecs.T


def rotation_matrix(angle_deg: float, dim: int = 2, plane: tuple[int, int] = (0, 1),
                    dtype: torch.dtype = torch.float64) -> Tensor:
    """d×d rotation by ``angle_deg`` degrees in the coordinate plane ``plane``, identity elsewhere.

    In the plane (i, j): [[cos a, −sin a], [sin a, cos a]].
    """
    dim = check_positive_int("dim", dim)
    i, j = plane
    if dim < 2 or not (0 <= i < dim and 0 <= j < dim) or i == j:
        raise ConfigError(f"rotation plane {plane} is not a pair of distinct axes of a {dim}-D space "
                          f"(needs dim >= 2 and 0 <= i != j < dim)")
    a = math.radians(float(angle_deg))
    R = torch.eye(dim, dtype=dtype)
    c, s = math.cos(a), math.sin(a)
    # Exact values at multiples of 90° keep the 180° counterexample's singular time exactly at 1/2.
    if float(angle_deg) % 90 == 0:
        c, s = round(c), round(s)
    R[i, i], R[i, j], R[j, i], R[j, j] = c, -s, s, c
    return R


class GaussianProblem(Distribution):
    """The target N(μ, M) of the Gaussian theory, with its OT map from the source N(0, I_d).

    ``mean``: (d,); ``cov``: (d, d) symmetric positive definite. Sampling returns ``dtype`` tensors.
    """

    def __init__(self, mean: Tensor, cov: Tensor, dtype: torch.dtype = torch.float64) -> None:
        mean = torch.as_tensor(mean, dtype=torch.float64)
        cov = torch.as_tensor(cov, dtype=torch.float64)
        if mean.ndim != 1:
            raise ShapeError(f"mean must be a vector (d,), got shape {tuple(mean.shape)}")
        d = mean.shape[0]
        if cov.shape != (d, d):
            raise ShapeError(f"cov must have shape ({d}, {d}) to match mean, got {tuple(cov.shape)}")
        check_finite("mean", mean)
        check_finite("cov", cov)
        if not torch.allclose(cov, cov.T, atol=1e-10 * max(1.0, float(cov.abs().max()))):
            raise ConfigError("cov must be symmetric; pass (C + C.T) / 2 if it is symmetric up to rounding")
        min_eig = float(torch.linalg.eigvalsh(cov).min())
        if min_eig <= 0:
            raise ConfigError(f"cov must be positive definite, but its smallest eigenvalue is {min_eig:.3g}; "
                              f"add a small multiple of the identity or fix the matrix")
        self.mean, self.cov = mean, cov
        self.cov_sqrt = sqrtm_psd(cov)
        self.event_shape = (d,)
        self.dtype = dtype

    @classmethod
    def isotropic(cls, dim: int, mean: float | Tensor = 0.0, dtype: torch.dtype = torch.float64
                  ) -> GaussianProblem:
        """N(mean·1, I_d) (a scalar mean is broadcast)."""
        dim = check_positive_int("dim", dim)
        return cls(torch.as_tensor(mean, dtype=torch.float64).expand(dim).clone(), torch.eye(dim), dtype)

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        n = check_positive_int("n", n)
        x0 = torch.randn((n, self.dim), generator=generator, dtype=torch.float64)
        return self.ot_map(x0).to(self.dtype)

    def check_points(self, name: str, x: Tensor) -> None:
        """Raise a :class:`ShapeError` unless ``x`` has shape (B, d)."""
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ShapeError(f"{name} must have shape (B, {self.dim}) for this {self.dim}-D Gaussian problem, "
                             f"got {tuple(x.shape)}")

    def rotated_map_matrix(self, rotation: Tensor | None = None) -> Tensor:
        """The linear part M^{1/2} R of T_R (R = I gives the OT map)."""
        if rotation is None:
            return self.cov_sqrt
        rotation = torch.as_tensor(rotation, dtype=torch.float64)
        if rotation.shape != (self.dim, self.dim):
            raise ShapeError(f"rotation must be ({self.dim}, {self.dim}), got {tuple(rotation.shape)}")
        if not torch.allclose(rotation @ rotation.T, torch.eye(self.dim, dtype=torch.float64), atol=1e-8):
            raise ConfigError("rotation must be orthogonal (R Rᵀ = I); build one with rotation_matrix()")
        return self.cov_sqrt @ rotation

    def ot_map(self, x0: Tensor, rotation: Tensor | None = None) -> Tensor:
        """T(x0) = μ + M^{1/2} R x0 (R = I: the OT map). ``x0``: (B, d) → (B, d), same dtype as x0."""
        self.check_points("x0", x0)
        A = self.rotated_map_matrix(rotation).to(x0.dtype)
        return self.mean.to(x0.dtype) + x0 @ A.T

    def field_parameters(self, rotation: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """(θ̂, Θ̂) = (μ, M^{1/2} R − I) of the pair-optimal field of T_R (Lemma 1 for R = I)."""
        return self.mean.clone(), self.rotated_map_matrix(rotation) - torch.eye(self.dim, dtype=torch.float64)
