"""Shared helpers of the metrics: point sets as float64 matrices and blockwise squared distances."""

from __future__ import annotations

import torch
from torch import Tensor

from flowvar.errors import DataError, ShapeError, check_finite

# ----------------------------------------------------------------------------------------------------------
# Input handling
# ----------------------------------------------------------------------------------------------------------


def as_matrix(name: str, x: Tensor, min_rows: int = 1) -> Tensor:
    """Validate a point set and return it as a float64 (n, D) matrix.

    ``x``: (n, *shape) with n >= ``min_rows`` and at least one coordinate per point; a 1-D tensor is
    rejected (it is ambiguous between n scalars and one point). Raises :class:`ShapeError` or
    :class:`DataError` (empty, non-finite).
    """
    x = torch.as_tensor(x)
    if x.ndim < 2:
        raise ShapeError(f"{name} must have shape (n, *point_shape), got {tuple(x.shape)}; reshape n scalars "
                         f"to (n, 1) or one point to (1, d)")
    if x.shape[0] < min_rows:
        raise DataError(f"{name} has {x.shape[0]} point(s) but at least {min_rows} are needed; pass more samples")
    flat = x.reshape(x.shape[0], -1)
    if flat.shape[1] == 0:
        raise ShapeError(f"{name} has points with zero coordinates (shape {tuple(x.shape)})")
    if flat.is_complex() or flat.dtype == torch.bool:
        raise DataError(f"{name} must hold real numbers, got dtype {flat.dtype}")
    flat = flat.detach().to("cpu", torch.float64)
    check_finite(name, flat)
    return flat


def same_dim(name_a: str, a: Tensor, name_b: str, b: Tensor) -> None:
    if a.shape[1] != b.shape[1]:
        raise ShapeError(f"{name_a} has points of {a.shape[1]} coordinates but {name_b} has {b.shape[1]}; both "
                         f"sets must live in the same space (flattened sizes must match)")


def row_sq_norms(x: Tensor) -> Tensor:
    return (x * x).sum(1)


def block_sq_distances(a: Tensor, b: Tensor, a_sq: Tensor, b_sq: Tensor) -> Tensor:
    """‖a_i − b_j‖² = ‖a_i‖² + ‖b_j‖² − 2 a_i·b_j for one block, clamped at 0. (ra, D), (rb, D) → (ra, rb)."""
    return torch.addmm(b_sq[None, :], a, b.T, alpha=-2.0).add_(a_sq[:, None]).clamp_min_(0.0)


__all__ = ["as_matrix", "block_sq_distances", "row_sq_norms", "same_dim"]
