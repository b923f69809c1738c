"""The rotation angle of a fitted affine coupling x̂1 ≈ A x0 + b (Lemma 2's stagnation check, PAPER.md §5 item 7)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, NamedTuple

import torch
from torch import Tensor

from flowvar.errors import ConfigError, DataError, ShapeError, check_finite, describe
from flowvar.metrics.core import as_points, real_tensor, same_point_shape

# ----------------------------------------------------------------------------------------------------------
# Fitted linear maps and rotation angles
# ----------------------------------------------------------------------------------------------------------


class LinearMap(NamedTuple):
    """x1 ≈ A x0 + b. ``A``: (D, D); ``b``: (D,). Unpacks as ``A, b = fitted_linear_map(x0, x1)``."""

    A: Tensor
    b: Tensor


def fitted_linear_map(x0: Tensor, x1: Tensor) -> LinearMap:
    """Least-squares affine fit x1_i ≈ A x0_i + b over paired rows.

    ``x0``, ``x1``: (n, *shape) → A (D, D), b (D,), minimising Σ_i ‖x1_i − A x0_i − b‖² (float64, lstsq on
    [x0, 1]). Needs n >= D + 1 points in general position; raises :class:`DataError` otherwise.
    """
    a, shape_a = as_points("x0", x0)
    c, shape_c = as_points("x1", x1)
    same_point_shape("x0", shape_a, "x1", shape_c)
    if a.shape != c.shape:
        raise ShapeError(f"x0 and x1 must be paired sets of the same shape, got {tuple(a.shape)} and "
                         f"{tuple(c.shape)} after flattening")
    n, d = a.shape
    if n < d + 1:
        raise DataError(f"fitting an affine map in {d} dimensions needs at least {d + 1} pairs, got {n}; pass more")
    design = torch.cat([a, torch.ones(n, 1, dtype=torch.float64)], 1)
    sol = torch.linalg.lstsq(design, c, driver="gelsd")
    if int(sol.rank) < d + 1:
        raise DataError(f"the source points span only {int(sol.rank) - 1} of {d} dimensions, so A is not "
                        f"determined; use points in general position")
    coef = sol.solution  # (d + 1, d): x1 = [x0, 1] @ coef
    return LinearMap(A=coef[:d].T.contiguous(), b=coef[d].contiguous())


@dataclass(frozen=True)
class PolarDecomposition:
    """A = U P with U orthogonal and P symmetric positive definite.

    ``reflection``: det U < 0 (U is a rotation composed with a reflection, not a rotation);
    ``principal_angles_deg``: the angles θ_k ∈ [0°, 180°] of U's eigenvalue pairs e^{±iθ_k} (one per pair,
    sorted descending; eigenvalues +1 give 0°, a pair of −1 gives 180°); when ``reflection`` the single
    unpaired −1 eigenvalue is left out.
    """

    U: Tensor
    P: Tensor
    reflection: bool
    principal_angles_deg: tuple[float, ...]


def polar_decomposition(A: Tensor, rcond: float = 1e-12) -> PolarDecomposition:
    """Polar decomposition by SVD: A = W Σ Vᵀ, U = W Vᵀ, P = V Σ Vᵀ (float64).

    ``A``: a (d, d) tensor, array or nested list of real numbers, d >= 1. Raises :class:`DataError` for input
    :func:`~flowvar.metrics.core.real_tensor` refuses (None, not numeric, complex, bool), for NaN/Inf, and if A is
    (numerically) singular, σ_min <= ``rcond`` · σ_max: then U is not unique and no rotation angle is defined;
    :class:`ShapeError` if A is not square.
    """
    A = real_tensor("A", A, "shape (d, d)")
    if A.ndim != 2 or A.shape[0] != A.shape[1] or A.shape[0] == 0:
        raise ShapeError(f"A must be a square (d, d) matrix, got shape {tuple(A.shape)}")
    A = A.detach().to("cpu", torch.float64)
    check_finite("A", A)
    W, S, Vh = torch.linalg.svd(A)
    if float(S[-1]) <= rcond * float(S[0]):
        raise DataError(f"A is singular (singular values {float(S[0]):.3g} … {float(S[-1]):.3g}): the fitted map "
                        f"collapses a direction and has no rotation angle; check the fit's inputs")
    U = W @ Vh
    P = Vh.T @ torch.diag(S) @ Vh
    P = (P + P.T) / 2
    reflection = bool(torch.linalg.det(U) < 0)
    eig = torch.linalg.eigvals(U)
    angles = torch.atan2(eig.imag, eig.real).abs()
    angles = angles.sort(descending=True).values
    if reflection:  # drop the one unpaired eigenvalue −1 (angle π)
        angles = angles[1:]
    # eigenvalues come in conjugate pairs e^{±iθ}: keep one per pair (real ±1 pairs also duplicate)
    deg = [math.degrees(float(a)) for a in angles]
    paired = tuple(deg[k] for k in range(0, len(deg) - 1, 2))
    return PolarDecomposition(U=U, P=P, reflection=reflection, principal_angles_deg=paired)


def rotation_angle(A: Tensor, on_reflection: Literal["raise", "nan"] = "raise") -> float:
    """Rotation angle, in degrees, of the orthogonal factor U of A = U P (:func:`polar_decomposition`).

    * d = 2: the signed angle atan2(U₁₀, U₀₀) ∈ (−180°, 180°] (counter-clockwise positive).
    * d > 2: the largest principal rotation angle of U, max_k θ_k ∈ [0°, 180°] (unsigned: no sign is defined).
    * d = 1: 0° (U = +1).

    If det U < 0 (a reflection), no rotation angle exists: ``on_reflection="raise"`` raises
    :class:`DataError`, ``"nan"`` returns NaN (inspect :func:`polar_decomposition` for the details).
    """
    if not isinstance(on_reflection, str) or on_reflection not in ("raise", "nan"):
        # describe(): a tensor passed here by mistake (rotation_angle(x0, x1)) must not be printed entry by entry
        hint = ("; rotation_angle takes one matrix A: for paired point sets call "
                "rotation_angle(fitted_linear_map(x0, x1).A)") if hasattr(on_reflection, "shape") else ""
        raise ConfigError(f"on_reflection must be 'raise' or 'nan', got {describe(on_reflection)}{hint}")
    pd = polar_decomposition(A)
    if pd.reflection:
        if on_reflection == "nan":
            return math.nan
        raise DataError("the orthogonal factor of A has det < 0 (a reflection, not a rotation), so no rotation "
                        "angle exists; pass on_reflection='nan' to flag it, or inspect polar_decomposition(A)")
    d = pd.U.shape[0]
    if d == 1:
        return 0.0
    if d == 2:
        return math.degrees(math.atan2(float(pd.U[1, 0]), float(pd.U[0, 0])))
    return max(pd.principal_angles_deg)


__all__ = ["LinearMap", "PolarDecomposition", "fitted_linear_map", "polar_decomposition", "rotation_angle"]
