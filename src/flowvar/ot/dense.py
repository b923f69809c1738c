"""Dense exact assignment: the cost matrix, the Gaussian alignment, scipy's Jonker–Volgenant solver and POT's dense
network simplex (PAPER.md §3.2, "exact minibatch OT"; docs/exact_ot.md).

All solvers here return a permutation perm (n,) with perm[i] the column paired with row i, minimising
Σ_i C[i, perm[i]] exactly; :func:`flowvar.ot.exact_ot_permutation` chooses among them and the sparse certified solve
(:mod:`flowvar.ot.sparse`).
"""

from __future__ import annotations

import logging
import warnings

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from torch import Tensor

from flowvar.errors import ShapeError
from flowvar.gaussian import gaussian_ot_matrix, psd_powers

log = logging.getLogger(__name__)

def squared_distances(a: Tensor, b: Tensor, chunk_rows: int = 2048) -> Tensor:
    """C[i, j] = ‖a_i − b_j‖², computed in float64 by row chunks. ``a``: (n, ...), ``b``: (m, ...).

    Both sets are first shifted by their common mean (which leaves every distance unchanged): the expansion
    ‖a‖² + ‖b‖² − 2 a·b below cancels catastrophically far from the origin (points with spread 1e-3 at an offset
    of 1e6 lose every digit of their distances, and an assignment on such a cost pairs them almost at random).
    """
    a2 = a.reshape(a.shape[0], -1).double()
    b2 = b.reshape(b.shape[0], -1).double()
    if a2.shape[1] != b2.shape[1]:
        raise ShapeError(f"cannot compare points of {a2.shape[1]} and {b2.shape[1]} coordinates")
    if a2.shape[0] and b2.shape[0]:
        centre = (a2.sum(0) + b2.sum(0)) / (a2.shape[0] + b2.shape[0])
        a2, b2 = a2 - centre, b2 - centre
    bn = (b2 * b2).sum(1)
    out = torch.empty(a2.shape[0], b2.shape[0], dtype=torch.float64, device=a2.device)
    for s in range(0, a2.shape[0], chunk_rows):
        blk, rows = a2[s:s + chunk_rows], out[s:s + chunk_rows]
        # ‖b_j‖² − 2 a_i·b_j straight into the output, then + ‖a_i‖² and the clamp in place: no (chunk, m) temporaries
        torch.addmm(bn.expand(blk.shape[0], -1), blk, b2.T, alpha=-2.0, out=rows)
        rows.add_((blk * blk).sum(1)[:, None]).clamp_min_(0)
    return out


#: Iteration cap of the network simplex (POT's default of 1e5 stops early from ~2048 points).
EMD_MAX_ITER = 10_000_000

#: Both solvers work on Gaussian-aligned points (:func:`gaussian_aligned`) from ``ALIGN_MIN_POINTS`` points of at
#: most ``ALIGN_MAX_DIM`` and at most n / ``ALIGN_POINTS_PER_DIM`` coordinates. Measured (1 thread, same solver with
#: and without it, ``benchmarks/exact_ot.py``, BENCHMARKS.md's exact_ot table): on Gaussian-mixture targets emd
#: 1.27–1.38× and LSA 3.6–8.5× faster (1024–4096 points, d = 2 and 50); on shifted and rescaled Gaussians emd up to 2×
#: (design runs, not in the table); on N(0, I) → N(0, I), where the
#: fitted map is nearly the identity, within ±15% either way from instance to instance. Below these sizes the
#: O(n d² + d³) alignment (up to ~5 ms at d = 128) costs more than it saves.
ALIGN_MIN_POINTS = 512
ALIGN_MAX_DIM = 128
ALIGN_POINTS_PER_DIM = 8


def gaussian_aligned(x0: Tensor, x1: Tensor) -> tuple[Tensor, Tensor] | None:
    """Points P, Q (float64, (n, d)) whose squared distances pose the same assignment problem as x0, x1, arranged
    so that the batch's Gaussian OT map becomes the identity; None where alignment does not apply.

    With m0, m1, Σ0, Σ1 the batch means and covariances and A = :func:`~flowvar.gaussian.gaussian_ot_matrix`
    (the Gaussian fit's Brenier map T(x) = m1 + A(x − m0)):

        P_i = A^{1/2} (x0_i − m0),    Q_j = A^{-1/2} (x1_j − m1),
        ‖P_i − Q_j‖² = (x1_j − T(x0_i))ᵀ A⁻¹ (x1_j − T(x0_i)) = ‖x0_i − x1_j‖² − f_i − g_j,

    because P_i·Q_j = (x0_i − m0)·(x1_j − m1) (A^{1/2} and A^{-1/2} are symmetric) = x0_i·x1_j minus terms in i
    alone and j alone: every permutation's total changes by the same Σf + Σg, for any symmetric positive definite A,
    so the optimal permutations are exactly those of the original cost. A only decides how close the aligned problem
    is to the identity pairing; its eigenvalues are clamped to [10⁻⁶ λ_max, λ_max] and both sets are centred, which
    keeps P and Q well scaled (large offsets would cost float64 digits).

    None (solve the plain cost) below ``ALIGN_MIN_POINTS`` points, above ``ALIGN_MAX_DIM`` or
    n / ``ALIGN_POINTS_PER_DIM`` coordinates, when either point set has no spread (all points equal), or when a
    covariance overflows float64.
    """
    a = x0.reshape(x0.shape[0], -1).double()
    b = x1.reshape(x1.shape[0], -1).double()
    n, d = a.shape
    if n < ALIGN_MIN_POINTS or d > min(ALIGN_MAX_DIM, n // ALIGN_POINTS_PER_DIM) or b.shape != a.shape:
        return None
    m0, m1 = a.mean(0), b.mean(0)
    cov0, cov1 = (a - m0).T @ (a - m0) / (n - 1), (b - m1).T @ (b - m1) / (n - 1)
    if not (float(cov0.diagonal().max()) > 0 and float(cov1.diagonal().max()) > 0):
        return None
    if not bool(torch.isfinite(cov0).all() and torch.isfinite(cov1).all()):
        # finite points whose spread squared overflows float64: gaussian_ot_matrix would refuse a "cov0" the caller
        # never passed; the plain cost is used instead (and exact_ot_permutation names the overflow)
        return None
    # Gram matrices and the A built from them are semidefinite by construction: skip the checks (an extra eigvalsh
    # per call) that guard these functions' public inputs; rounding-level negative eigenvalues are clamped anyway
    A = gaussian_ot_matrix(cov0, cov1, check=False)
    root, inv_root = psd_powers(A, (0.5, -0.5), floor=1e-6, check=False)
    return (a - m0) @ root, (b - m1) @ inv_root


def assignment_permutation(cost: np.ndarray) -> np.ndarray:
    """The optimal assignment of a square (n, n) cost matrix by scipy's ``linear_sum_assignment``: perm (n,) with
    perm[i] = the column of row i. A cost that is not square is a :class:`ShapeError`: scipy would pair min(n, m)
    rows only (a 3 × 5 cost gave 3 columns out of 5, not a permutation; a 5 × 3 one an IndexError here)."""
    shape = np.shape(cost)
    if len(shape) != 2 or shape[0] != shape[1]:
        raise ShapeError(f"an assignment needs a square (n, n) cost matrix, got shape {tuple(shape)}; pair equally "
                         f"many sources and targets")
    rows, cols = linear_sum_assignment(cost)
    perm = np.empty_like(cols)
    perm[rows] = cols
    return perm


def emd_permutation(cost: np.ndarray) -> np.ndarray | None:
    """σ from POT's network simplex on unit masses, or None (logged) when its plan is not a certified optimal
    permutation: the status is not optimal (e.g. ``EMD_MAX_ITER`` reached) or the plan is not a 0/1 matrix
    with one unit entry per row and per column."""
    import ot

    n = cost.shape[0]
    ones = np.ones(n)  # unit masses: the flows are integers, so an optimal vertex is exactly a 0/1 matrix
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # POT warns on numItermax; the status below is what decides
        plan, info = ot.emd(ones, ones, cost, numItermax=EMD_MAX_ITER, log=True)
    plan = np.asarray(plan)
    problem = None
    if info.get("result_code") != 1:
        problem = f"the solver stopped without optimality ({info.get('warning') or info.get('result_code')})"
    elif plan.shape != (n, n):
        problem = f"it returned a plan of shape {plan.shape}"
    else:
        perm = plan.argmax(axis=1)
        if not (np.all(np.abs(plan[np.arange(n), perm] - 1.0) <= 1e-9)
                and abs(float(plan.sum()) - n) <= 1e-9 * n
                and np.bincount(perm, minlength=n).max() == 1):
            problem = "its plan is not a permutation matrix"
        else:
            return perm
    log.warning("exact OT: POT ot.emd on %d points was not used (%s); solved with scipy linear_sum_assignment "
                "instead", n, problem)
    return None


__all__ = ["ALIGN_MAX_DIM", "ALIGN_MIN_POINTS", "ALIGN_POINTS_PER_DIM", "EMD_MAX_ITER", "assignment_permutation",
           "emd_permutation", "gaussian_aligned", "squared_distances"]
