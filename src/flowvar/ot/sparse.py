"""The sparse LP-certified exact assignment: POT's network simplex on a few candidate pairs per row, repeated until
LP duality certifies the permutation optimal among all n² pairs (docs/exact_ot.md, "the sparse solve").
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Callable, Iterator

import numpy as np
import torch
from torch import Tensor

from flowvar.errors import ShapeError
from flowvar.ot.dense import EMD_MAX_ITER

log = logging.getLogger(__name__)

#: The sparse solve's settings (see :func:`sparse_certified_permutation`; measured choices, docs/exact_ot.md).
#: Its first duals come from an exact solve of a random 1/``SPARSE_SUBSAMPLE_FRACTION`` of the points (at least
#: ``SPARSE_SUBSAMPLE_MIN``); each row starts with its ``SPARSE_FIRST_CANDIDATES`` smallest reduced costs, and each
#: row that violates a round's certificate adds its ``SPARSE_ADDED_CANDIDATES`` most negative ones.
SPARSE_SUBSAMPLE_FRACTION = 4
SPARSE_SUBSAMPLE_MIN = 256
SPARSE_FIRST_CANDIDATES = 48
SPARSE_ADDED_CANDIDATES = 24
#: Rounds before the sparse solve gives up and the dense network simplex solves the problem (the measured instances
#: took 2–5).
SPARSE_MAX_ROUNDS = 30
#: The certificate accepts reduced costs down to −``SPARSE_CERTIFICATE_RTOL``·max|C| (the network simplex's own
#: floating-point slack: its duals leave reduced costs down to −6·10⁻¹³·max|C| on optimal dense plans and down to
#: −10⁻¹¹·max|C| on warm-started sparse ones). :func:`~flowvar.ot.exact_ot_permutation` passes a cost reduced by
#: its row and column minima (an exact shift), so that max|C| measures the part of the cost that depends on the
#: pairing: on the raw squared distances of sets of very different scales, max|C| is dominated by ‖x1_j‖² and the
#: certificate's bound 2nε exceeded the whole gain of OT over a random pairing.
SPARSE_CERTIFICATE_RTOL = 1e-9
#: Rows of the cost matrix per block when scanning reduced costs (a block of 128 × 4096 float64 is 4 MB; one
#: unblocked pass allocates an n² temporary, 4–10× slower from the page faults alone).
_SCAN_ROWS = 128


def sparse_candidates_fit(n: int) -> bool:
    """Whether the sparse solve can run on n points: its first candidates, up to
    n · (min(``SPARSE_FIRST_CANDIDATES``, n) + 1) arcs with the diagonal, must stay within the quarter of all n² pairs
    beyond which :func:`sparse_certified_permutation` gives up. False below ~200 points (with 48 candidates a row),
    where it would give up at its first round after a wasted subsample solve (one warning per call)."""
    return n * (min(SPARSE_FIRST_CANDIDATES, n) + 1) <= n * n // 4


def sparse_certified_permutation(cost: Tensor) -> np.ndarray | None:
    """The optimal assignment of a square cost matrix, solved on few candidate pairs and certified on all of them.

    ``cost``: (n, n) float64 CPU tensor C → perm (n,) int64 with perm[i] the column of row i, or None (logged) where
    no certificate was reached (the caller then solves the dense problem).

    The assignment LP min Σ C_ij P_ij over doubly stochastic P has the dual max Σ u_i + Σ v_j subject to
    r_ij = C_ij − u_i − v_j ≥ 0. A permutation whose pairs have r = 0 under duals with every r_ij ≥ 0 is optimal
    (complementary slackness), whichever pairs the solver saw: with |r| ≤ ε on its pairs and r ≥ −ε everywhere its
    total is within 2nε of the optimum, ε = ``SPARSE_CERTIFICATE_RTOL``·max|C|. So:

    1. *First duals*: an exact dense solve of a random subsample (1/``SPARSE_SUBSAMPLE_FRACTION`` of the rows and
       columns, at least ``SPARSE_SUBSAMPLE_MIN``) gives duals on it, extended to every point by two c-transforms,
       v_j = min_{i∈S} C_ij − u_i and u_i = min_j C_ij − v_j (so r ≥ 0 everywhere);
    2. *Candidates*: each row's ``SPARSE_FIRST_CANDIDATES`` smallest reduced costs, plus the diagonal (a perfect
       matching always exists on the candidate graph);
    3. *Rounds*: POT's network simplex on the candidate arcs, warm-started from the current duals, returns a
       permutation and new duals; a pass over all n² reduced costs certifies the optimum when min r ≥ −ε (and
       |r| ≤ ε on the permutation's pairs), else each violating row adds its ``SPARSE_ADDED_CANDIDATES`` most
       negative arcs (and the round's pairs stay in) for the next round.

    Unlike candidates chosen by distance (nearest neighbours), reduced-cost candidates hold the optimal partner of
    points that the OT map moves far (Gaussian mixtures in 2-D, where only about half of the partners are nearest
    neighbours); see docs/exact_ot.md for the measurements. None — with a warning on the ``flowvar.ot.sparse``
    logger — when POT's sparse network simplex is missing (an older POT: 0.9.7 has it), not optimal or inconsistent
    (a plan that is not a permutation, duals without slackness on it), when a round adds no arc, when the candidates
    pass a quarter of all pairs, or after ``SPARSE_MAX_ROUNDS`` rounds.
    """
    n = cost.shape[0]
    if cost.shape != (n, n) or cost.dtype != torch.float64:
        raise ShapeError(f"sparse OT needs a square float64 cost matrix, got {tuple(cost.shape)} {cost.dtype}")
    simplex = _sparse_network_simplex()
    if simplex is None:
        log.warning("exact OT: POT's sparse network simplex is unavailable (POT %s; POT 0.9.7 has it); "
                    "solved with the dense ot.emd instead", _pot_version())
        return None
    cost = cost.contiguous()
    tol = SPARSE_CERTIFICATE_RTOL * float(cost.abs().max())
    u, v = _subsample_duals(cost)
    _, keys = _scan_reduced_costs(cost, u, v, min(SPARSE_FIRST_CANDIDATES, n), tol, only_violating=False)
    keys.append(torch.arange(n) * (n + 1))  # the diagonal: a perfect matching on the candidates
    arcs = torch.empty(0, dtype=torch.long)
    problem = f"it was not certified after {SPARSE_MAX_ROUNDS} rounds"
    for _ in range(SPARSE_MAX_ROUNDS):
        grown = torch.unique(torch.cat([arcs, *keys]))
        if grown.numel() == arcs.numel():
            problem = "a round added no candidate arc (the solver's and the certificate's tolerances disagree)"
            break
        if grown.numel() > n * n // 4:
            problem = f"the candidates grew to {grown.numel()} of {n * n} pairs"
            break
        arcs = grown
        src, dst = arcs // n, arcs % n
        try:
            flow_src, flow_dst, flow, _, u_np, v_np, code = simplex(
                np.ones(n), np.ones(n), src.numpy().astype(np.uint64), dst.numpy().astype(np.uint64),
                cost[src, dst].numpy(), EMD_MAX_ITER, alpha_init=u.numpy(), beta_init=v.numpy())
        except TypeError as err:  # a POT whose private sparse solver changed its signature
            problem = f"POT's sparse network simplex refused the call ({err})"
            break
        if code != 1:
            problem = f"the sparse network simplex stopped without optimality (result code {code})"
            break
        u = torch.from_numpy(np.asarray(u_np, dtype=np.float64))
        v = torch.from_numpy(np.asarray(v_np, dtype=np.float64))
        worst, keys = _scan_reduced_costs(cost, u, v, min(SPARSE_ADDED_CANDIDATES, n), tol, only_violating=True)
        rows, cols = np.asarray(flow_src, dtype=np.int64), np.asarray(flow_dst, dtype=np.int64)
        if worst >= -tol:
            if not (rows.shape == (n,) and np.all(np.abs(np.asarray(flow) - 1.0) <= 1e-9)
                    and np.bincount(rows, minlength=n).max() == 1 and np.bincount(cols, minlength=n).max() == 1):
                problem = "its plan is not a permutation"
                break
            rows_t, cols_t = torch.from_numpy(rows), torch.from_numpy(cols)
            slack = float((cost[rows_t, cols_t] - u[rows_t] - v[cols_t]).abs().max())
            if slack > tol:  # complementary slackness: the chosen pairs must have r = 0, else the duals prove nothing
                problem = f"its duals leave reduced costs up to {slack:.3g} on its own pairs"
                break
            perm = np.empty(n, dtype=np.int64)
            perm[rows] = cols
            return perm
        keys.append(torch.from_numpy(rows * n + cols))  # keep the round's pairs: the next round starts from them
    log.warning("exact OT: the sparse solve on %d points was not used (%s); solved with the dense ot.emd instead",
                n, problem)
    return None


def _sparse_network_simplex() -> Callable[..., tuple] | None:
    """POT's warm-startable network simplex on COO arcs (``ot.lp.emd_wrap.emd_c_sparse``, in POT 0.9.7), or None.
    Private to POT — ``ot.emd`` takes sparse costs but no warm start for them, and the warm start is what makes the
    later rounds cheap (0.1–0.2 s instead of 0.4–0.7 s at 4096 points) — so a missing one or a changed signature
    falls back to the dense solve."""
    try:
        from ot.lp.emd_wrap import emd_c_sparse
    except ImportError:
        return None
    return emd_c_sparse  # type: ignore[no-any-return]


def _pot_version() -> str:
    import ot

    return str(getattr(ot, "__version__", "unknown"))


def _subsample_duals(cost: Tensor) -> tuple[Tensor, Tensor]:
    """Duals (u, v), each (n,), feasible for all of ``cost`` (every C_ij − u_i − v_j ≥ 0, zero on each row's
    minimum): exact duals of a random subsample's assignment, extended by c-transforms. The subsample is drawn from
    a fixed-seed generator (the result is a pure function of the cost; the caller's RNG is untouched)."""
    import ot

    n = cost.shape[0]
    m = min(n, max(SPARSE_SUBSAMPLE_MIN, n // SPARSE_SUBSAMPLE_FRACTION))
    gen = torch.Generator().manual_seed(0)
    rows = torch.randperm(n, generator=gen)[:m].sort().values
    cols = torch.randperm(n, generator=gen)[:m].sort().values
    sub_rows = cost.index_select(0, rows)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # an early stop only makes the first duals rougher; the rounds repair them
        _, info = ot.emd(np.ones(m), np.ones(m), sub_rows.index_select(1, cols).numpy(), numItermax=EMD_MAX_ITER,
                         log=True)
    v = (sub_rows - torch.from_numpy(np.asarray(info["u"], dtype=np.float64))[:, None]).amin(0)
    u = torch.empty(n, dtype=torch.float64)
    for rows, block in _reduced_cost_blocks(cost, None, v):
        u[rows] = block.amin(1)
    return u, v


def _reduced_cost_blocks(cost: Tensor, u: Tensor | None, v: Tensor) -> Iterator[tuple[slice, Tensor]]:
    """r = C − u 1ᵀ − 1 vᵀ (``u`` None: C − 1 vᵀ) by blocks of ``_SCAN_ROWS`` rows: yields (the block's rows, its
    (rows, n) reduced costs), all in one reused buffer (valid until the next block)."""
    n = cost.shape[0]
    buffer = torch.empty(min(_SCAN_ROWS, n), n, dtype=torch.float64)
    for start in range(0, n, _SCAN_ROWS):
        rows = slice(start, min(start + _SCAN_ROWS, n))
        block = buffer[: rows.stop - start]
        torch.sub(cost[rows], v[None, :], out=block)
        yield rows, block if u is None else block.sub_(u[rows, None])


def _scan_reduced_costs(cost: Tensor, u: Tensor, v: Tensor, k: int, tol: float,
                        only_violating: bool) -> tuple[float, list[Tensor]]:
    """One blocked pass over r = C − u 1ᵀ − 1 vᵀ: returns min r and, as flat keys i·n + j, the k smallest r_ij of
    every row (``only_violating``: of each row whose minimum is below −tol)."""
    n = cost.shape[0]
    worst, keys = math.inf, []
    for rows, block in _reduced_cost_blocks(cost, u, v):
        row_min = block.amin(1)
        worst = min(worst, float(row_min.min()))
        index = torch.arange(rows.start, rows.stop)
        if only_violating:
            bad = row_min < -tol
            if not bool(bad.any()):
                continue
            block, index = block[bad], index[bad]
        smallest = torch.topk(block, k, dim=1, largest=False, sorted=False).indices
        keys.append((index[:, None] * n + smallest).reshape(-1))
    return worst, keys


__all__ = ["SPARSE_ADDED_CANDIDATES", "SPARSE_CERTIFICATE_RTOL", "SPARSE_FIRST_CANDIDATES", "SPARSE_MAX_ROUNDS",
           "SPARSE_SUBSAMPLE_FRACTION", "SPARSE_SUBSAMPLE_MIN", "sparse_candidates_fit", "sparse_certified_permutation"]
