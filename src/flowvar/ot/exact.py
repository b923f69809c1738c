"""The exact minibatch OT pairing: one entry point, :func:`exact_ot_permutation`, that picks an exact solver by size
(scipy's assignment, POT's dense network simplex, or the certified sparse solve) and falls back between them.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from torch import Tensor

from flowvar.errors import ConfigError, DataError, ShapeError, check_finite, tensor_input
from flowvar.ot.dense import assignment_permutation, emd_permutation, gaussian_aligned, squared_distances
from flowvar.ot.sparse import sparse_candidates_fit, sparse_certified_permutation

OTSolver = Literal["auto", "lsa", "emd", "sparse"]
OT_SOLVERS: tuple[str, ...] = ("auto", "lsa", "emd", "sparse")

#: ``solver="auto"`` uses POT's dense network simplex from this many points on, scipy's assignment below it. Measured
#: by ``benchmarks/exact_ot.py`` (its section of BENCHMARKS.md, which holds the figures; 1 thread): below ~256 points
#: both take a few ms; from 256 on LSA's time grows steeply on clustered targets in low dimension (Gaussian
#: mixtures in d = 2: ~2× emd's time at 256–1024 points, ~3× at 2048 and ~4× at 4096 in the stored run, ~14×
#: without the Gaussian alignment), while emd is steadier: at worst ~1.8× LSA's time (N(0, I) in d = 50, 1024–4096
#: points) and at par or faster in d = 2.
AUTO_EMD_MIN_POINTS = 256
#: ``solver="auto"`` uses the certified sparse solve (:func:`~flowvar.ot.sparse.sparse_certified_permutation`) from this
#: many points on.
#: Measured (BENCHMARKS.md's ``exact_ot`` table, 1 thread: ``flowvar sparse`` against ``flowvar emd``, the dense
#: network simplex on the same aligned cost): 1.2–2.6× faster at 1024 points, 1.8–4.5× at 2048, 2.5–7.4× at 4096
#: (d = 2 and 50, N(0, I) and Gaussian-mixture targets); 1.5–1.8× slower at 256 (its fixed costs: a subsample solve
#: and a few passes over the cost matrix), at par at 512 (docs/exact_ot.md's design runs; the table has no 512).
AUTO_SPARSE_MIN_POINTS = 1024


def check_solver(solver: object) -> OTSolver:
    """``solver`` if it names an exact OT solver (one of :data:`OT_SOLVERS`), else a one-line ConfigError."""
    if solver not in OT_SOLVERS:
        raise ConfigError(f"unknown OT solver {solver!r}; use one of {', '.join(map(repr, OT_SOLVERS))}")
    return solver  # type: ignore[return-value]


def exact_ot_permutation(x0: Tensor, x1: Tensor, solver: OTSolver = "auto", align: bool = True) -> Tensor:
    """The permutation σ minimising Σ_i ‖x0_i − x1_σ(i)‖² (exact assignment; uniform weights).

    ``x0``, ``x1``: (n, *shape) real points, on any device but the data-less meta one (numpy arrays are converted
    with ``torch.as_tensor``; a 1-D tensor is refused: n scalars and one point look alike; so are complex points,
    whose imaginary parts the cost would drop) → (n,) long on x0's device, so that ``x1[perm]`` is the OT partner
    of each x0 row. The float64 cost matrix (and the alignment below) is computed on x0's device (on the CPU for MPS,
    which has no float64); the solve itself runs on the CPU.
    Always an exact optimum and a bijection, whichever solver:

    * ``"lsa"``: scipy's Jonker–Volgenant ``linear_sum_assignment`` (fast for small or unclustered problems,
      but its time grows steeply on clustered points: for 4096 points against a Gaussian mixture in d = 2, ~18 s
      with the alignment below and ~80 s without it in BENCHMARKS.md's exact_ot run, 1 thread, against ~4–6 s for
      ``"emd"``);
    * ``"emd"``: POT's network simplex ``ot.emd`` on unit masses with ``numItermax=EMD_MAX_ITER`` (its plan
      is then a 0/1 permutation matrix). The plan is checked — solver status optimal, every row and column
      with exactly one unit entry — and if the check fails (iteration cap hit, a non-permutation plan) the
      problem is solved again with ``"lsa"`` and a warning is logged on the ``flowvar.ot`` loggers;
    * ``"sparse"``: the network simplex on a sparse set of candidate pairs, repeated until LP duality certifies
      the result optimal among all n² pairs (:func:`~flowvar.ot.sparse.sparse_certified_permutation`); if it is
      not certified within ``SPARSE_MAX_ROUNDS`` rounds (or POT lacks its sparse solver), ``"emd"`` solves the
      problem (logged). It pays off only above a few hundred points (1.5–1.8× slower than ``"emd"`` at 256, at par
      at 512, faster from 1024: ``AUTO_SPARSE_MIN_POINTS``); below ~200 points its first candidates would already
      be a quarter of all pairs (:func:`~flowvar.ot.sparse.sparse_candidates_fit`), so ``"emd"`` solves the problem
      directly, without a warning;
    * ``"auto"`` (default): ``"lsa"`` below ``AUTO_EMD_MIN_POINTS`` = 256 points, ``"emd"`` below
      ``AUTO_SPARSE_MIN_POINTS`` = 1024, ``"sparse"`` from there on (each with its fallbacks).

    From 512 points of at most 128 coordinates (see :func:`~flowvar.ot.dense.gaussian_aligned`) the points are first
    Gaussian-aligned: the solvers then see a cost that differs from ‖x0_i − x1_j‖² by f_i + g_j, which shifts every
    permutation's total by the same constant (so the optimum is unchanged) and is ≈ 0 along the batch's Gaussian OT
    map, which shortens their search on shifted, rescaled or clustered targets. ``align=False`` solves the plain cost
    (same optimum; for comparisons). Without the alignment each set is centred on its own mean, which shifts the cost
    by row and column terms in the same way: the optimum is translation-invariant, and the cost keeps its digits
    for point sets far from the origin. Last, each row's and then each column's minimum is subtracted (the same kind
    of shift), so that the solvers' tolerances, relative to the cost's magnitude, are relative to the part of it
    that depends on the pairing (:func:`_reduced_cost`: sets of very different scales were paired suboptimally
    without it). Finite points whose squared distances overflow float64 are a :class:`DataError` (rescale them).

    Ties (duplicated points, equal costs) can make several permutations optimal; solvers may return different
    ones, all with the same minimal total cost.
    """
    check_solver(solver)
    if not isinstance(align, bool | np.bool_):  # "no" or 0.0 would be read by truthiness, silently
        raise ConfigError(f"align must be True or False, got {align!r}")
    x0, x1 = tensor_input("x0", x0), tensor_input("x1", x1)
    for name, x in (("x0", x0), ("x1", x1)):
        if x.is_complex():  # the float64 cost below would keep the real parts only
            raise DataError(f"exact OT pairing needs real points, got {name} of dtype {x.dtype}, whose imaginary "
                            f"parts the cost would drop; pair torch.view_as_real({name}).flatten(1) (real and "
                            f"imaginary parts as coordinates), or {name}.real if only that counts")
        if x.device.type == "meta":  # else torch's "Tensor.item() cannot be called on meta tensors" in check_finite
            raise DataError(f"exact OT pairing needs points with values, got {name} on the meta device (a shape "
                            f"without data); pass it on the CPU or a GPU")
    if x0.ndim < 2 or x1.ndim < 2:  # a 1-D tensor: n scalars or one point? refused, as the metrics refuse it
        raise ShapeError(f"exact OT pairing needs two point sets (n, *shape), got shapes {tuple(x0.shape)} and "
                         f"{tuple(x1.shape)}; reshape n scalars to (n, 1) or one point to (1, d)")
    if x0.shape[0] != x1.shape[0]:
        raise ShapeError(f"exact OT pairing needs equally many sources and targets, got {x0.shape[0]} "
                         f"and {x1.shape[0]}")
    if x0.shape[0] == 0 or x0.shape[1:] != x1.shape[1:]:
        raise ShapeError(f"exact OT pairing needs two non-empty point sets (n, *shape) of the same shape, got "
                         f"{tuple(x0.shape)} and {tuple(x1.shape)}")
    check_finite("exact OT pairing's x0", x0)  # else scipy's "invalid numeric entries", after a misleading emd try
    check_finite("exact OT pairing's x1", x1)
    device = x0.device
    x0, x1 = x0.detach(), x1.to(device).detach()
    if device.type == "mps":  # no float64 there; the cost must be float64 (docs/exact_ot.md)
        x0, x1 = x0.cpu(), x1.cpu()
    n = x0.shape[0]
    aligned = gaussian_aligned(x0, x1) if align else None
    # The (n, n) float64 cost is formed (and reduced) where the points are and only it goes to the CPU solvers: on a
    # GPU the cost of a batch of 256 images of 3×32×32 takes well under a millisecond instead of ~26 ms of CPU matmul.
    cost = None if aligned is None else _reduced_cost(*aligned)
    if cost is None:  # no alignment, or aligned points that overflow (where the plain ones might not)
        # Each set is centred on its own mean (in float64): ‖(a_i − m0) − (b_j − m1)‖² = ‖a_i − b_j‖² + f_i + g_j,
        # which shifts every permutation's total by the same constant, so the optimum is exactly the same. Without
        # it the expanded cost ‖a‖² + ‖b‖² − 2a·b cancels catastrophically far from the origin (100 points of
        # spread 1e-3 at an offset of 1e6 were paired at 8–16× the optimal cost); gaussian_aligned centres too.
        a = x0.reshape(n, -1).double()
        b = x1.reshape(n, -1).double()
        cost = _reduced_cost(a - a.mean(0), b - b.mean(0))
        if cost is None:  # else scipy's "cost matrix is infeasible", POT's warnings, or a "cov0" error
            largest = max(float(x0.abs().max()), float(x1.abs().max()))
            raise DataError(f"exact OT pairing: the points' squared distances overflow float64 (largest coordinate "
                            f"magnitude {largest:.3g}); rescale the points, e.g. divide x0 and x1 by one common "
                            f"factor (the optimal pairing is unchanged)")
    cost = cost.cpu()
    if solver == "auto":
        solver = "lsa" if n < AUTO_EMD_MIN_POINTS else "emd" if n < AUTO_SPARSE_MIN_POINTS else "sparse"
    # below ~200 points the sparse solve would give up at once (its candidates fill a quarter of the pairs) after
    # a subsample solve as large as the problem: the dense emd directly, and no warning for what is expected
    perm = sparse_certified_permutation(cost) if solver == "sparse" and sparse_candidates_fit(n) else None
    if perm is None and solver in ("emd", "sparse"):
        perm = emd_permutation(cost.numpy())
    if perm is None:
        perm = assignment_permutation(cost.numpy())
    return torch.as_tensor(perm, dtype=torch.long, device=device)


def _reduced_cost(p: Tensor, q: Tensor) -> Tensor | None:
    """The cost the solvers see: C_ij = ‖p_i − q_j‖² − r_i − c_j, with r_i the minimum of row i of the squared
    distances and then c_j that of column j of what is left (float64 (n, n), on p's device; every row and column
    then holds a 0 and every entry is ≥ 0); None where an entry is not finite (the squared distances overflow).

    An exact shift: every permutation's total drops by the same Σr + Σc, so the optimal permutations are those of
    the squared distances. It matters for the solvers' tolerances, which are relative to the cost's magnitude
    (POT's network simplex; the sparse certificate's ε = ``SPARSE_CERTIFICATE_RTOL``·max|C|): when the sets differ
    enormously in scale (x0 of spread 1e-6, x1 of spread and offset 1e6) ‖q_j‖² dominates max|C| but is the same for
    every pairing, and without the shift ε exceeded the whole gain OT can make over a random pairing: the dense and
    sparse solves returned pairings that lost 2.5–19% of it (1100 points, a scale ratio of 10¹²), the sparse one
    "certified". The subtractions round relative to the reduced entries, so they cost no digits of the
    pairing-dependent part.

    On the CPU the row pass runs on blocks of ``_REDUCE_ROWS`` rows, gathering the column minima and the largest
    entry while each block is in cache (+0.1 s on 0.2 s for the squared distances at 4096 points, 1 thread; two
    whole-matrix passes took +0.2 s, and ``torch.isfinite(cost).all()`` alone 0.3 s); on a GPU the blocks are the
    whole matrix. Both give the same numbers. The largest entry after the row pass decides finiteness: every
    reduced entry is ≥ 0, an Inf stays Inf and Inf − Inf is NaN, both of which ``amax`` and ``maximum`` propagate.
    """
    cost = squared_distances(p, q)
    n = cost.shape[0]
    rows = _REDUCE_ROWS if cost.device.type == "cpu" else max(n, 1)
    column_min = torch.full((cost.shape[1],), torch.inf, dtype=cost.dtype, device=cost.device)
    largest = torch.zeros((), dtype=cost.dtype, device=cost.device)
    for start in range(0, n, rows):
        block = cost[start:start + rows]
        block.sub_(block.amin(1, keepdim=True))
        torch.minimum(column_min, block.amin(0), out=column_min)
        torch.maximum(largest, block.amax(), out=largest)
    if not bool(torch.isfinite(largest)):
        return None
    return cost.sub_(column_min)


#: Rows per block of :func:`_reduced_cost`'s row pass on the CPU (128 × 4096 float64 is 4 MB).
_REDUCE_ROWS = 128


__all__ = ["AUTO_EMD_MIN_POINTS", "AUTO_SPARSE_MIN_POINTS", "OT_SOLVERS", "check_solver", "exact_ot_permutation"]
