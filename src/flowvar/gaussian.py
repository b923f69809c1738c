"""Closed-form Gaussian-to-Gaussian theory (PAPER.md §2, Lemma 1, Prop 1, Counter Example 1).

Setting: X0 ~ N(0, I_d), X1 ~ N(μ, M) with M symmetric positive definite.

* OT map (Brenier): T_OT(x0) = μ + M^{1/2} x0.
* Rotated OT coupling: T_R(x0) = T_OT(R x0) = μ + M^{1/2} R x0, a valid coupling because R x0 ~ N(0, I); R turns
  one coordinate plane (:func:`rotation_matrix`) or every one of ⌊d/2⌋ disjoint planes (:func:`block_rotation_matrix`).
* Lemma 1 field: v(x, t) = θ + Θ [I + tΘ]^{-1} (x − tθ) with θ = μ and Θ = M^{1/2} R − I (R = I for OT).
  Built by :meth:`GaussianProblem.pair_optimal_field` (:meth:`GaussianProblem.ot_field` for R = I); both read
  :meth:`GaussianProblem.field_parameters`, the one source of truth for (θ̂, Θ̂).
* Where the lines cross: :func:`singular_times` (det(I + tΘ) = 0) and :func:`meeting_point` (all lines through
  one point, Counter Example 1, built by :func:`counterexample_problem`).
* Closed-form per-sample gradients of the parametric class (PAPER.md §1.2):
  :func:`parametric_per_sample_grads`, :func:`parametric_residuals`, :func:`parametric_per_sample_loss`, and
  the float64 rounding bound of a residual that is zero in exact arithmetic,
  :func:`parametric_residual_rounding_bound`.
* The Gaussian 2-Wasserstein distance (the cost of the Brenier map): :func:`gaussian_w2_squared`.
"""

from __future__ import annotations

import math
import numbers
import operator

import torch
from torch import Tensor

from flowvar.distributions import Distribution
from flowvar.errors import (
    ConfigError,
    ShapeError,
    SolverError,
    check_finite,
    check_generator,
    check_positive_int,
    check_unit_times,
    describe,
)
from flowvar.models.parametric import GaussianParametricField

#: Relative tolerances of the matrix checks (:func:`check_symmetric_psd`), by dtype: asymmetry up to
#: ``SYMMETRY_RTOL``·max|M| and eigenvalues down to −``EIGENVALUE_RTOL``·max|λ| count as rounding. A covariance
#: computed in float32 is symmetric and semidefinite only to ~1e-7 relative, so float32 gets looser tolerances;
#: either way a genuinely indefinite matrix (an eigenvalue −0.25·λ_max, say) is far outside them.
SYMMETRY_RTOL: dict[torch.dtype, float] = {torch.float64: 1e-10, torch.float32: 1e-5}
EIGENVALUE_RTOL: dict[torch.dtype, float] = {torch.float64: 1e-12, torch.float32: 1e-6}


def _tolerance(table: dict[torch.dtype, float], dtype: torch.dtype, d: int) -> float:
    # eigh's own backward error grows with d (about d·ε·‖M‖), so large matrices get d·ε on top of the floor
    eps = torch.finfo(dtype).eps
    return max(table.get(dtype, table[torch.float32]), 16 * d * eps)


def _square_matrix(name: str, M: Tensor) -> Tensor:
    """``M`` as a floating-point square (d, d) tensor with d >= 1 and finite entries, else a one-line error."""
    if not isinstance(M, Tensor):  # a list or array: complex entries refused, not cast to their real part
        M = _real_float64(name, M, "a (d, d) matrix")
    if M.ndim != 2 or M.shape[0] != M.shape[1] or M.shape[0] == 0:
        raise ShapeError(f"{name} must be a square (d, d) matrix with d >= 1, got shape {tuple(M.shape)}")
    if M.is_complex() or M.dtype == torch.bool:
        raise ConfigError(f"{name} must hold real numbers, got dtype {M.dtype}")
    if not M.is_floating_point():
        M = M.double()  # an integer matrix: eigh needs floats
    elif M.dtype not in (torch.float32, torch.float64):
        M = M.float()  # float16/bfloat16: LAPACK has no half-precision eigh
    check_finite(name, M)
    return M


def _real_float64(name: str, x: object, kind: str) -> Tensor:
    """``x`` (a tensor, array or nested list) as a float64 tensor, else a one-line :class:`ConfigError` naming
    ``name``: ``kind`` says what it should be ("a vector (d,)"). Complex entries are refused, not cast:
    ``torch.as_tensor(x, dtype=float64)`` would drop the imaginary part of e.g. an ``eig`` or ``sqrtm`` output with
    only a UserWarning; so are booleans and non-numbers (a string entry), which torch refuses with an error that
    does not name the argument."""
    try:
        probe = x if isinstance(x, Tensor) else torch.as_tensor(x)  # its own dtype: complex stays complex
    except (TypeError, ValueError, RuntimeError):
        raise ConfigError(f"{name} must be {kind} of real numbers, got {describe(x)}") from None
    if probe.is_complex() or probe.dtype == torch.bool:
        raise ConfigError(f"{name} must hold real numbers, got dtype {probe.dtype}; pass its real part (.real) if "
                          f"the imaginary part is only rounding, or fix how it is computed")
    return torch.as_tensor(x, dtype=torch.float64)  # from x, not probe: a list parsed as float32 would lose digits


def _check_symmetric(name: str, M: Tensor) -> None:
    scale = float(M.abs().max())
    asym = float((M - M.T).abs().max())
    if asym > _tolerance(SYMMETRY_RTOL, M.dtype, M.shape[0]) * scale:
        raise ConfigError(f"{name} must be symmetric, but max|M − Mᵀ| = {asym:.3g} (max|M| = {scale:.3g}); "
                          f"pass (M + M.T) / 2 if it is symmetric up to rounding, or fix the matrix")


def _check_eigenvalues(name: str, evals: Tensor, dtype: torch.dtype) -> None:
    """Raise :class:`ConfigError` if the smallest eigenvalue is below −tol·max|λ| (more than rounding)."""
    lo, top = float(evals.min()), float(evals.abs().max())
    if lo < -_tolerance(EIGENVALUE_RTOL, dtype, evals.shape[0]) * top:
        raise ConfigError(f"{name} must be positive semidefinite, but its smallest eigenvalue is {lo:.3g} (largest "
                          f"|eigenvalue| {top:.3g}); fix the matrix (e.g. a covariance estimate, or clamp its "
                          f"eigenvalues at 0)")


def check_symmetric_psd(name: str, M: Tensor) -> Tensor:
    """``M`` if it is a finite, symmetric, positive semidefinite (d, d) matrix (up to rounding), else a one-line
    :class:`ConfigError` naming which (:class:`ShapeError` for a non-square shape, :class:`DataError` for NaN/Inf).

    Symmetric: max|M − Mᵀ| <= tol_s·max|M|; semidefinite: λ_min >= −tol_λ·max|λ|, with tol_s = 1e-10 and
    tol_λ = 1e-12 in float64 (1e-5 and 1e-6 in float32), raised to 16·d·ε for large d (:data:`SYMMETRY_RTOL`,
    :data:`EIGENVALUE_RTOL`). Integer matrices are returned as float64, float16/bfloat16 ones as float32.
    Costs one ``eigvalsh``: call it where a matrix enters, not in a loop.
    """
    M = _square_matrix(name, M)
    _check_symmetric(name, M)
    _check_eigenvalues(name, torch.linalg.eigvalsh(M), M.dtype)
    return M


def sqrtm_psd(M: Tensor) -> Tensor:
    """Symmetric square root of a symmetric positive (semi)definite matrix via eigh.

    Eigenvalues that are negative only by rounding are clamped at 0; a non-symmetric or indefinite ``M`` (see
    :func:`check_symmetric_psd` for the tolerances) raises a :class:`ConfigError`, since eigh would read one
    triangle only and the clamp would hide a negative eigenvalue: both give a wrong root without a warning.
    """
    M = _square_matrix("M", M)
    _check_symmetric("M", M)
    evals, evecs = torch.linalg.eigh(M)
    _check_eigenvalues("M", evals, M.dtype)  # on the eigh done anyway: the check costs O(d)
    return (evecs * evals.clamp_min(0).sqrt()) @ evecs.T


def psd_powers(M: Tensor, powers: tuple[float, ...], floor: float = 0.0, *,
               check: bool = True) -> tuple[Tensor, ...]:
    """(M^p for p in ``powers``) of a symmetric positive semidefinite (d, d) matrix from one eigh: V diag(λ^p) Vᵀ.

    Eigenvalues are clamped at ``floor``·λ_max first (and at 0), the same for every power, so M^{1/2} M^{-1/2} = I
    up to rounding; a positive ``floor`` makes negative powers of a singular M finite. M with λ_max ≤ 0 raises a
    :class:`ConfigError`, and so (with ``check``, the default) do a non-symmetric or indefinite M (see
    :func:`check_symmetric_psd`; eigenvalues negative only by rounding are clamped as before) and a negative power
    of a singular M with ``floor=0`` (it would be Inf). ``check=False`` skips these checks, for callers whose M
    is semidefinite by construction (e.g. a Gram matrix).
    """
    if check:
        M = _square_matrix("M", M)
        _check_symmetric("M", M)
    return _psd_powers("M", M, powers, floor, check)


def _psd_powers(name: str, M: Tensor, powers: tuple[float, ...], floor: float, check: bool,
                input_dtype: torch.dtype | None = None) -> tuple[Tensor, ...]:
    """:func:`psd_powers` of an M already checked for shape and symmetry (with ``check``: its eigenvalues and the
    powers' finiteness are checked here, on the one eigh), called ``name`` in errors; ``input_dtype``: the dtype M
    came in, whose rounding the check tolerates (a float32 covariance cast to float64 is still only float32-exact)."""
    rounding = input_dtype or M.dtype
    if check and (isinstance(floor, bool) or not isinstance(floor, int | float) or not 0 <= floor <= 1):
        raise ConfigError(f"floor must be a number in [0, 1] (a fraction of the largest eigenvalue), got "
                          f"{describe(floor)}")
    evals, evecs = torch.linalg.eigh(M)
    top = float(evals.max())
    if not top > 0:
        raise ConfigError(f"{name} must be a nonzero positive semidefinite matrix, got largest eigenvalue "
                          f"{top:.3g}")
    if check:
        _check_eigenvalues(name, evals, rounding)  # on the eigh done anyway: O(d)
    evals = evals.clamp_min(max(floor, 0.0) * top)
    scaled = [evals.pow(p) for p in powers]
    if check:
        infinite = [p for p, s in zip(powers, scaled, strict=True) if not bool(torch.isfinite(s).all())]
        if infinite:
            raise ConfigError(f"the power {infinite[0]} of {name} is infinite because {name} is singular (smallest "
                              f"eigenvalue {float(evals.min()):.3g} after the floor); negative powers need a positive "
                              f"definite matrix: pass floor > 0 (eigenvalues are then clamped at floor·λ_max) or "
                              f"regularise {name}")
    return tuple((evecs * s) @ evecs.T for s in scaled)


def gaussian_ot_matrix(cov0: Tensor, cov1: Tensor, floor: float = 1e-12, *, check: bool = True) -> Tensor:
    """The linear part A of the Brenier map between N(m0, Σ0) and N(m1, Σ1), T(x) = m1 + A(x − m0):

    A = Σ0^{-1/2} (Σ0^{1/2} Σ1 Σ0^{1/2})^{1/2} Σ0^{-1/2}, the symmetric positive definite solution of A Σ0 A = Σ1
    (Σ0 positive definite). ``cov0``, ``cov1``: (d, d) → (d, d) float64. Σ0's eigenvalues are clamped at
    ``floor``·λ_max, so a singular Σ0 gives a finite (large) A along its null space rather than an error.

    With ``check`` (the default) both matrices must be finite, symmetric and positive semidefinite up to rounding
    (:func:`check_symmetric_psd`), else a :class:`ConfigError` (:class:`ShapeError` for shapes) names which:
    an indefinite covariance has no Gaussian, and the clamps below would turn it into a wrong A without a
    warning. ``check=False`` skips the checks (one ``eigvalsh`` of Σ1), for covariances computed as Gram matrices.
    """
    if check:
        cov0, cov1 = _square_matrix("cov0", cov0), _square_matrix("cov1", cov1)
        if cov0.shape != cov1.shape:
            raise ShapeError(f"cov0 and cov1 must have the same shape (d, d), got {tuple(cov0.shape)} and "
                             f"{tuple(cov1.shape)}")
        _check_symmetric("cov0", cov0)  # in its own dtype; its eigenvalues are checked on _psd_powers' eigh below
        check_symmetric_psd("cov1", cov1)
    dtype0 = cov0.dtype
    cov0, cov1 = cov0.double(), cov1.double()
    root, inv_root = _psd_powers("cov0", cov0, (0.5, -0.5), floor, check, dtype0)
    middle = root @ cov1 @ root
    (middle_root,) = _psd_powers("Σ0^½ Σ1 Σ0^½", (middle + middle.T) / 2, (0.5,), 0.0, False)  # PSD by construction
    A = inv_root @ middle_root @ inv_root
    return (A + A.T) / 2


def gaussian_w2_squared(mean0: Tensor, cov0: Tensor, mean1: Tensor, cov1: Tensor) -> float:
    """W2²(N(m0, Σ0), N(m1, Σ1)) = ‖m0 − m1‖² + tr Σ0 + tr Σ1 − 2 tr (Σ0^{1/2} Σ1 Σ0^{1/2})^{1/2}, float64.

    ``mean0``, ``mean1``: (d,); ``cov0``, ``cov1``: (d, d) symmetric positive semidefinite (checked as in
    :func:`check_symmetric_psd`). The minimal transport cost E‖X1 − X0‖² over all couplings, attained by the
    Brenier map only; for Σ0 = I it is ‖m0 − m1‖² + tr(I + Σ1 − 2 Σ1^{1/2}). The trace of the root is
    Σ_i √λ_i of the middle matrix (its eigenvalues only): no map matrix enters, so a map can be checked against it.
    """
    m0, m1 = _real_float64("mean0", mean0, "a vector (d,)"), _real_float64("mean1", mean1, "a vector (d,)")
    check_finite("mean0", m0)  # a NaN mean would make W2² NaN, with no error
    check_finite("mean1", m1)
    c0, c1 = check_symmetric_psd("cov0", cov0).double(), check_symmetric_psd("cov1", cov1).double()
    if m0.ndim != 1 or m0.shape != m1.shape or c0.shape != c1.shape or c0.shape[0] != m0.shape[0]:
        raise ShapeError(f"means must be (d,) and covariances (d, d) of one d, got {tuple(m0.shape)}, "
                         f"{tuple(m1.shape)}, {tuple(c0.shape)} and {tuple(c1.shape)}")
    (root0,) = psd_powers(c0, (0.5,))
    middle = root0 @ c1 @ root0
    root_trace = torch.linalg.eigvalsh((middle + middle.T) / 2).clamp_min(0).sqrt().sum()
    return float((m0 - m1).pow(2).sum() + torch.trace(c0) + torch.trace(c1) - 2 * root_trace)


def check_angle(angle_deg: object) -> float:
    """An angle in degrees as a float; NaN/Inf or a non-number is a :class:`ConfigError` (a NaN angle would give a
    NaN rotation matrix, and every coupling, field and sample built on it would be NaN)."""
    if isinstance(angle_deg, Tensor) and angle_deg.numel() == 1 and angle_deg.is_floating_point():
        angle_deg = angle_deg.item()  # a one-element tensor holds a number too
    if isinstance(angle_deg, bool) or not isinstance(angle_deg, numbers.Real) or not math.isfinite(angle_deg):
        raise ConfigError(f"angle_deg must be a finite number of degrees, got {describe(angle_deg)}")
    return float(angle_deg)


def rotation_matrix(angle_deg: float, dim: int = 2, plane: tuple[int, int] = (0, 1),
                    dtype: torch.dtype = torch.float64) -> Tensor:
    """d×d rotation by ``angle_deg`` degrees in the coordinate plane ``plane``, identity elsewhere.

    In the plane (i, j): [[cos a, −sin a], [sin a, cos a]].
    """
    dim = check_positive_int("dim", dim)
    # a plane is two axis indices; anything else would fail in tuple unpacking or indexing with a raw error
    try:
        axes = [operator.index(k) for k in plane if not isinstance(k, bool)] if not isinstance(plane, str) else []
    except TypeError:
        axes = []
    if len(axes) != 2 or len(axes) != len(plane):
        raise ConfigError(f"plane must be a pair of integer axis indices (i, j), e.g. (0, 1), got {describe(plane)}")
    i, j = axes
    if dim < 2 or not (0 <= i < dim and 0 <= j < dim) or i == j:
        raise ConfigError(f"rotation plane {(i, j)} is not a pair of distinct axes of a {dim}-D space "
                          f"(needs dim >= 2 and 0 <= i != j < dim)")
    angle_deg = check_angle(angle_deg)
    a = math.radians(angle_deg)
    R = torch.eye(dim, dtype=dtype)
    c, s = math.cos(a), math.sin(a)
    # Exact values at multiples of 90° keep the 180° counterexample's singular time exactly at 1/2.
    if float(angle_deg) % 90 == 0:
        c, s = round(c), round(s)
    R[i, i], R[i, j], R[j, i], R[j, j] = c, -s, s, c
    return R


def paired_planes(dim: int, first: tuple[int, int] = (0, 1)) -> list[tuple[int, int]]:
    """The ⌊d/2⌋ disjoint coordinate planes that :func:`block_rotation_matrix` rotates: ``first``, then the other
    axes paired in ascending order, e.g. d = 5, first (1, 3): [(1, 3), (0, 2)], axis 4 left over. For odd d one axis
    is always left over: every rotation of an odd-dimensional space fixes an axis (its eigenvalues other than 1 come
    in conjugate pairs)."""
    rotation_matrix(0.0, dim, first)  # the same checks of dim and of the plane, the same one-line errors
    i, j = (operator.index(k) for k in first)
    rest = [k for k in range(dim) if k not in (i, j)]
    return [(i, j), *zip(rest[0::2], rest[1::2], strict=False)]


def block_rotation_matrix(angle_deg: float, dim: int, first: tuple[int, int] = (0, 1),
                          dtype: torch.dtype = torch.float64) -> Tensor:
    """d×d rotation by ``angle_deg`` degrees in each of the ⌊d/2⌋ planes of :func:`paired_planes` (``first``, then
    the other axes paired in order): block diagonal up to the order of the axes, each block
    [[cos a, −sin a], [sin a, cos a]], the identity only on the axis left over when d is odd.

    Unlike :func:`rotation_matrix`, which is the identity on d − 2 axes, it moves every axis that a rotation of R^d
    can move: R − I is invertible for even d (0 < a < 360°) and has a one-dimensional kernel for odd d. At d = 2 it is
    ``rotation_matrix(angle_deg, 2, first)`` entry for entry (each block is copied from it, exact values at multiples
    of 90° included).
    """
    R = torch.eye(check_positive_int("dim", dim), dtype=dtype)
    for i, j in paired_planes(dim, first):
        block = rotation_matrix(angle_deg, dim, (i, j), dtype)
        R[i, i], R[i, j], R[j, i], R[j, j] = block[i, i], block[i, j], block[j, i], block[j, j]
    return R


class GaussianProblem(Distribution):
    """The target N(μ, M) of the Gaussian theory, with its OT map from the source N(0, I_d).

    ``mean``: (d,); ``cov``: (d, d) symmetric positive definite; both real and finite (complex, boolean or
    non-numeric entries are a one-line :class:`ConfigError` naming the argument). Sampling returns ``dtype`` tensors.
    """

    def __init__(self, mean: Tensor, cov: Tensor, dtype: torch.dtype = torch.float64) -> None:
        mean = _real_float64("mean", mean, "a vector (d,)")
        cov = _real_float64("cov", cov, "a (d, d) matrix")
        if mean.ndim != 1:
            raise ShapeError(f"mean must be a vector (d,), got shape {tuple(mean.shape)}")
        d = mean.shape[0]
        if d == 0:  # a 0-D Gaussian has nothing to sample, and max() of its empty cov fails with a raw error
            raise ShapeError("mean must have at least one coordinate (d >= 1), got an empty vector of shape (0,)")
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
        x0 = torch.randn((n, self.dim), generator=check_generator(generator), dtype=torch.float64)
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
        check_finite("rotation", rotation)
        deviation = float((rotation @ rotation.T - torch.eye(self.dim, dtype=torch.float64)).abs().max())
        if deviation > 1e-8:
            raise ConfigError(f"rotation must be orthogonal (R Rᵀ = I), but max|R Rᵀ − I| = {deviation:.3g}; "
                              f"build one with rotation_matrix() or orthonormalise it (e.g. torch.linalg.qr)")
        return self.cov_sqrt @ rotation

    def ot_map(self, x0: Tensor, rotation: Tensor | None = None) -> Tensor:
        """T(x0) = μ + M^{1/2} R x0 (R = I: the OT map). ``x0``: (B, d) → (B, d), same dtype as x0."""
        self.check_points("x0", x0)
        check_finite("x0", x0)  # a NaN point would map to a NaN sample, with no error
        A = self.rotated_map_matrix(rotation).to(x0.dtype)
        return self.mean.to(x0.dtype) + x0 @ A.T

    def field_parameters(self, rotation: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """(θ̂, Θ̂) = (μ, M^{1/2} R − I) of the pair-optimal field of T_R (Lemma 1 for R = I)."""
        return self.mean.clone(), self.rotated_map_matrix(rotation) - torch.eye(self.dim, dtype=torch.float64)

    def pair_optimal_field(self, rotation: Tensor | None = None, trainable: bool = False,
                           dtype: torch.dtype = torch.float64) -> GaussianParametricField:
        """The field consistent with the coupling T_R(x0) = μ + M^{1/2} R x0 (PAPER.md §2, Lemma 1, Prop 1(A)).

        v(x, t) = θ̂ + Θ̂ [I + tΘ̂]^{-1} (x − tθ̂) with (θ̂, Θ̂) = :meth:`field_parameters` ``(rotation)``. Along
        every line x_t = (1 − t) x0 + t T_R(x0) it returns x1 − x0 exactly. ``rotation=None`` is the OT field.
        It is undefined (raises :class:`SolverError` when evaluated) at the :func:`singular_times` of Θ̂.
        ``trainable=False`` (default) freezes θ and Θ (``requires_grad=False``); pass True to start training
        from this field.
        """
        theta, Theta = self.field_parameters(rotation)
        return GaussianParametricField(self.dim, theta, Theta, dtype=dtype, trainable=trainable)

    def ot_field(self, trainable: bool = False, dtype: torch.dtype = torch.float64) -> GaussianParametricField:
        """Lemma 1's OT field: θ̂ = μ, Θ̂ = M^{1/2} − I; defined for all t ∈ [0, 1] since M ≻ 0."""
        return self.pair_optimal_field(None, trainable=trainable, dtype=dtype)


# --------------------------------------------------------------------------------------------------------
# Singular times: where the lines of a linear coupling cross (PAPER.md §2, Lemma 1)
# --------------------------------------------------------------------------------------------------------


def _check_square(name: str, Theta: Tensor) -> Tensor:
    if isinstance(Theta, GaussianProblem):  # the problem is not the matrix: torch.as_tensor failed with a TypeError
        raise ConfigError(f"{name} must be the (d, d) matrix Θ of the field, got a GaussianProblem; for its "
                          f"pair-optimal field pass problem.field_parameters(rotation)[1] (Θ̂ = M^(1/2) R − I)")
    try:
        Theta = torch.as_tensor(Theta, dtype=torch.float64).detach()
    except (TypeError, ValueError, RuntimeError):
        raise ConfigError(f"{name} must be a square (d, d) matrix (a tensor, array or nested list), got "
                          f"{describe(Theta)}") from None
    if Theta.ndim != 2 or Theta.shape[0] != Theta.shape[1] or Theta.shape[0] == 0:
        raise ShapeError(f"{name} must be a square (d, d) matrix, got shape {tuple(Theta.shape)}")
    check_finite(name, Theta)
    return Theta


def singular_times(Theta: Tensor, lo: float = 0.0, hi: float = 1.0, tol: float = 1e-6) -> list[float]:
    """The times t ∈ [lo, hi] where A_t = I + tΘ is singular, sorted ascending, without duplicates.

    ``Theta``: (d, d). det(I + tΘ) = Π_i (1 + tλ_i) over the eigenvalues λ_i of Θ, so A_t is singular exactly
    at t = −1/λ for each real λ ≠ 0; a complex pair contributes |1 + tλ|² > 0 and gives no time. For the
    Lemma 1 field these are the times at which lines of the coupling x1 = μ + (I + Θ) x0 cross
    (e.g. Θ = −2I, the 180° rotation with M = I, gives exactly [0.5]).

    Tolerance ``tol`` (relative): a symmetric Θ uses ``eigvalsh`` (real eigenvalues). Otherwise an eigenvalue
    counts as real when |Im λ| <= tol · max(1, |λ|), and then t = −1/Re λ. Times within tol · max(1, |t|) of
    their neighbour are merged into one (their mean). Reason: rounding turns a defective double real
    eigenvalue (a Jordan block) into a complex pair or two real ones about √(ε‖Θ‖) ≈ 1e-8 apart; the default
    1e-6 reports it once. A genuinely complex λ that close to the real axis makes A_t numerically singular
    anyway (σ_min(A_t) <= |t|·|Im λ|). Before the eigen-solve Θ is scaled by a power of two near its largest
    entry (exact); for a non-symmetric Θ entries below ε = 2.2e-16 of that are then set to zero, a change
    within LAPACK's own backward error that keeps its balancing step from failing on entries ~1e-285 times
    smaller than the rest.
    """
    Theta = _check_square("Theta", Theta)
    if not (math.isfinite(lo) and math.isfinite(hi)) or lo > hi:
        raise ConfigError(f"singular_times needs finite lo <= hi, got lo={lo}, hi={hi}")
    if not tol >= 0:
        raise ConfigError(f"tol must be >= 0, got {tol}")
    max_abs = float(Theta.abs().max())
    if max_abs == 0.0:
        return []
    scale = math.ldexp(1.0, math.frexp(max_abs)[1])  # a power of two: the scaling itself is exact
    unit = Theta / scale
    try:
        if torch.equal(unit, unit.T):
            real = torch.linalg.eigvalsh(unit)
        else:
            unit = torch.where(unit.abs() < torch.finfo(torch.float64).eps, torch.zeros_like(unit), unit)
            lam = torch.linalg.eigvals(unit)
            real = lam.real[lam.imag.abs() <= tol * lam.abs().clamp_min(1.0 / scale)]
    except torch.linalg.LinAlgError as err:  # pragma: no cover - LAPACK non-convergence
        raise SolverError(f"the eigenvalues of Theta could not be computed ({err}); check the matrix") from err
    real = real[real != 0]
    t_all = (-1.0 / real) / scale  # in this order: scale · λ could underflow to 0, 1/λ overflows to inf at worst
    times = sorted(float(t) for t in t_all if lo <= float(t) <= hi)
    clusters: list[list[float]] = []
    for t in times:
        if clusters and t - clusters[-1][-1] <= tol * max(1.0, abs(t)):
            clusters[-1].append(t)
        else:
            clusters.append([t])
    return [math.fsum(c) / len(c) for c in clusters]


# --------------------------------------------------------------------------------------------------------
# Counter Example 1: every line meets at μ/2 at t = ½ (PAPER.md §2)
# --------------------------------------------------------------------------------------------------------


def counterexample_problem(mu: float | Tensor = 5.0, dim: int = 2) -> tuple[GaussianProblem, Tensor]:
    """Counter Example 1: X0 ~ N(0, I_d), X1 = T(X0) = R_180 X0 + μ, returned as (problem, rotation).

    ``problem`` is N(μ, I_d) (a scalar ``mu`` is broadcast to (d,)); ``rotation`` is R = −I_d, which is
    R_180 in 2-D (in odd d it is the point reflection, still a valid coupling). Use it with
    ``RotatedOTCoupling(problem, rotation=rotation)``. Θ̂ = R − I = −2I, so every line
    x_t = tμ + (1 − 2t) x0 passes through μ/2 at t = ½ (:func:`meeting_point`); the exact field off t = ½
    is :class:`flowvar.models.CounterexampleField`.
    """
    dim = check_positive_int("dim", dim)
    mu_t = torch.as_tensor(mu, dtype=torch.float64)
    if mu_t.ndim > 1 or (mu_t.ndim == 1 and mu_t.shape != (dim,)):
        raise ShapeError(f"mu must be a scalar or a ({dim},) vector for dim={dim}, got shape {tuple(mu_t.shape)}")
    problem = GaussianProblem(mu_t.expand(dim).clone(), torch.eye(dim, dtype=torch.float64))
    return problem, -torch.eye(dim, dtype=torch.float64)


def meeting_point(problem: GaussianProblem, rotation: Tensor | None = None,
                  rtol: float = 1e-12) -> tuple[float, Tensor] | None:
    """(t*, x*) if every line of the coupling T_R passes through one point x* at a time t* ∈ (0, 1], else None.

    The lines are x_t = tμ + (I + tΘ̂) x0 with Θ̂ = M^{1/2} R − I, so they all meet iff I + t*Θ̂ = 0, i.e.
    Θ̂ = c I with c = −1/t* <= −1; then x* = t*μ. Counter Example 1 (Θ̂ = −2I) gives (0.5, μ/2).
    "Θ̂ = cI" is tested as max|Θ̂ − cI| <= ``rtol`` · max(1, |c|) with c = tr Θ̂ / d; ``rtol`` must be a finite
    number >= 0 (a NaN one would make every comparison False and call any coupling a meeting point).
    """
    if isinstance(rtol, bool) or not isinstance(rtol, numbers.Real) or not (math.isfinite(rtol) and rtol >= 0):
        raise ConfigError(f"rtol must be a finite number >= 0 (a relative tolerance, e.g. 1e-12), got "
                          f"{describe(rtol)}")
    _, Theta = problem.field_parameters(rotation)
    c = float(torch.diagonal(Theta).mean())
    eye = torch.eye(problem.dim, dtype=torch.float64)
    if c > -1.0 or float((Theta - c * eye).abs().max()) > rtol * max(1.0, abs(c)):
        return None
    t_star = -1.0 / c
    return t_star, t_star * problem.mean


# --------------------------------------------------------------------------------------------------------
# Closed-form per-sample gradients of the parametric class (PAPER.md §1.2)
# --------------------------------------------------------------------------------------------------------


def _parametric_parts(theta: Tensor, Theta: Tensor, xt: Tensor, t: Tensor | float,
                      target: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Validate and return (LU, pivots, w, r) in float64: A = I + tΘ = LU, w = A^{-1}(x_t − tθ), r = v − u."""
    theta = torch.as_tensor(theta, dtype=torch.float64).detach()
    Theta = torch.as_tensor(Theta, dtype=torch.float64).detach()
    xt = torch.as_tensor(xt, dtype=torch.float64).detach()
    target = torch.as_tensor(target, dtype=torch.float64).detach()
    if theta.ndim != 1:
        raise ShapeError(f"theta must be a vector (d,), got shape {tuple(theta.shape)}")
    d = theta.shape[0]
    if Theta.shape != (d, d):
        raise ShapeError(f"Theta must have shape ({d}, {d}) to match theta, got {tuple(Theta.shape)}")
    if xt.ndim != 2 or xt.shape[1] != d:
        raise ShapeError(f"xt must have shape (B, {d}) to match theta, got {tuple(xt.shape)}")
    if target.shape != xt.shape:
        raise ShapeError(f"target must have the shape of xt {tuple(xt.shape)}, got {tuple(target.shape)}")
    t = torch.as_tensor(t, dtype=torch.float64).detach()
    if t.ndim == 0:
        t = t.expand(xt.shape[0])
    if t.shape != (xt.shape[0],):
        raise ShapeError(f"t must be a scalar or have shape ({xt.shape[0]},), got {tuple(t.shape)}")
    check_unit_times(t, t)  # a time in percent or NaN would give a silently meaningless gradient
    check_finite("theta", theta)  # a diverged (θ, Θ) would give NaN gradients, with no error
    check_finite("Theta", Theta)
    check_finite("xt", xt)
    check_finite("target", target)
    A = torch.eye(d, dtype=torch.float64) + t[:, None, None] * Theta
    LU, pivots, info = torch.linalg.lu_factor_ex(A)
    if bool((info != 0).any()):
        raise SolverError(f"I + tΘ is singular at t = {t[info != 0][:3].tolist()}: the field and its gradient "
                          f"are undefined there (see flowvar.gaussian.singular_times); draw times that avoid it")
    w = torch.linalg.lu_solve(LU, pivots, (xt - t[:, None] * theta).unsqueeze(-1)).squeeze(-1)
    r = theta + w @ Theta.T - target
    return LU, pivots, w, r


def parametric_residuals(theta: Tensor, Theta: Tensor, xt: Tensor, t: Tensor | float, target: Tensor) -> Tensor:
    """r_b = v_{θ,Θ}(x_t,b, t_b) − u_b, shape (B, d), float64.

    ``theta``: (d,); ``Theta``: (d, d); ``xt``, ``target``: (B, d); ``t``: (B,) or a scalar.
    v(x, t) = θ + Θ A_t^{-1}(x − tθ), A_t = I + tΘ. Raises :class:`SolverError` where A_t is singular.
    """
    return _parametric_parts(theta, Theta, xt, t, target)[3]


RESIDUAL_ROUNDING_FACTOR = 8
"""c in the rounding bound γ = c·d·ε of :func:`parametric_residual_rounding_bound`: an LU solve of order d has a
normwise backward error of a few d·ε (Higham 2002, Thm 9.4: |ΔA| ≤ γ_{3d}|L̂||Û|), and forming A_t, x_t, b and r
adds a few ε each; 8 covers these counts (it is not fitted to data: the measured ratios stay below 0.03 of the bound
at every angle and covariance tried, tests/test_gaussian.py)."""


def parametric_residual_rounding_bound(theta: Tensor, Theta: Tensor, x0: Tensor, x1: Tensor,
                                       t: Tensor) -> Tensor:
    """Per-sample bound on the float64 rounding of ‖r_b‖ where r is zero in exact arithmetic, shape (B,).

    ``theta``: (d,); ``Theta``: (d, d); ``x0``, ``x1``: (B, d) with x1 = θ + (I + Θ) x0 up to rounding (the pairs
    of the coupling whose pair-optimal field (θ, Θ) is); ``t``: (B,). For the deterministic path x_t = (1 − t) x0 +
    t x1 and target x1 − x0 the exact residual of :func:`parametric_residuals` is 0 (w = A_t⁻¹(x_t − tθ) = x0).
    Rounding perturbs A_t, b = x_t − tθ, x1 and Θ + I by relative amounts ~ε, and the solve turns a perturbation δ
    of b into A_t⁻¹δ, which Θ multiplies; so, with γ = :data:`RESIDUAL_ROUNDING_FACTOR`·d·ε (ε = 2.2e-16),

        ‖r̂_b‖ ≤ γ · (1 + ‖Θ‖₂ ‖A_{t_b}⁻¹‖₂) · (‖θ‖ + ‖x1_b‖ + (2 + ‖Θ‖₂) ‖x0_b‖),   A_t = I + tΘ,

    the last factor bounding ‖x_t‖ + ‖tθ‖ + ‖A_t‖‖x0‖ + ‖x1‖ + ‖x0‖. ‖A_t⁻¹‖₂ = 1/σ_min(A_t) grows as 1/|t − t*|
    near a singular time t* (:func:`singular_times`), so the bound does too: there the float64 residual (and the
    gradient 2A_t⁻ᵀr, whose second moment diverges) says nothing, while elsewhere the bound is ~1e-14 × the scale.
    Infinite where A_t is singular. Every input must be finite and every time in [0, 1] (a NaN θ would make the
    bound NaN, and a ratio against it meaningless, with no error): a one-line :class:`DataError` names the input.
    """
    theta = torch.as_tensor(theta, dtype=torch.float64).detach()
    Theta = _check_square("Theta", Theta)
    x0 = torch.as_tensor(x0, dtype=torch.float64).detach()
    x1 = torch.as_tensor(x1, dtype=torch.float64).detach()
    t = torch.as_tensor(t, dtype=torch.float64).detach()
    d = Theta.shape[0]
    if theta.shape != (d,) or x0.ndim != 2 or x0.shape[1] != d or x1.shape != x0.shape or t.shape != x0.shape[:1]:
        raise ShapeError(f"expected theta (d,), Theta (d, d), x0 and x1 (B, d) and t (B,) with d = {d}, got "
                         f"{tuple(theta.shape)}, {tuple(Theta.shape)}, {tuple(x0.shape)}, {tuple(x1.shape)} and "
                         f"{tuple(t.shape)}")
    for name, value in (("theta", theta), ("Theta", Theta), ("x0", x0), ("x1", x1)):
        check_finite(name, value)
    check_unit_times(t, t)
    gamma = RESIDUAL_ROUNDING_FACTOR * d * torch.finfo(torch.float64).eps
    theta_norm = float(torch.linalg.matrix_norm(Theta, 2))
    sigma_min = torch.linalg.svdvals(torch.eye(d, dtype=torch.float64) + t[:, None, None] * Theta)[:, -1]
    scale = theta.norm() + x1.norm(dim=1) + (2 + theta_norm) * x0.norm(dim=1)
    return gamma * (1 + theta_norm / sigma_min) * scale


def parametric_per_sample_loss(theta: Tensor, Theta: Tensor, xt: Tensor, t: Tensor | float,
                               target: Tensor) -> Tensor:
    """ℓ_b = ‖v_{θ,Θ}(x_t,b, t_b) − u_b‖², shape (B,), float64 (same as :func:`flowvar.loss.per_sample_loss`)."""
    return parametric_residuals(theta, Theta, xt, t, target).pow(2).sum(1)


def parametric_per_sample_grads(theta: Tensor, Theta: Tensor, xt: Tensor, t: Tensor | float,
                                target: Tensor) -> tuple[Tensor, Tensor]:
    """Closed-form per-sample gradients of ℓ_b = ‖v_{θ,Θ}(x_t,b, t_b) − u_b‖² (PAPER.md §1.2).

    ``theta``: (d,); ``Theta``: (d, d); ``xt``, ``target``: (B, d); ``t``: (B,) or a scalar.
    Returns (g_θ of shape (B, d), g_Θ of shape (B, d, d)), float64, with A = I + tΘ, w = A^{-1}(x_t − tθ),
    r = v − u:

        ∇_θ ℓ = 2 A^{-T} r,        ∇_Θ ℓ = 2 (A^{-T} r) wᵀ   (g_Θ[b, i, j] = ∂ℓ_b / ∂Θ_ij).

    Derivation: ∂v/∂θ = I − tΘA^{-1} = A^{-1} and dv = A^{-1} dΘ w. One LU factorisation of A serves both
    solves; no autograd graph is built (inputs are detached). Raises :class:`SolverError` where A is
    singular (see :func:`singular_times`).
    """
    LU, pivots, w, r = _parametric_parts(theta, Theta, xt, t, target)
    g_theta = 2 * torch.linalg.lu_solve(LU, pivots, r.unsqueeze(-1), adjoint=True).squeeze(-1)
    return g_theta, g_theta.unsqueeze(-1) * w.unsqueeze(-2)


__all__ = ["EIGENVALUE_RTOL", "RESIDUAL_ROUNDING_FACTOR", "SYMMETRY_RTOL", "GaussianProblem", "block_rotation_matrix",
           "check_angle", "check_symmetric_psd", "counterexample_problem", "gaussian_ot_matrix", "gaussian_w2_squared",
           "meeting_point", "paired_planes", "parametric_per_sample_grads", "parametric_per_sample_loss",
           "parametric_residual_rounding_bound", "parametric_residuals", "psd_powers", "rotation_matrix",
           "singular_times", "sqrtm_psd"]
