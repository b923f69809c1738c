"""Couplings: which target x1 goes with which source x0.

Every coupling returns :class:`Pairs`. Variants override only how ``x1`` is attached to ``x0``:

* :class:`IndependentCoupling` — x0 ~ π0, x1 ~ π1 independently (standard CFM).
* :class:`ExactOTCoupling` — independent draws re-paired by an exact minibatch assignment on squared
  L2 cost (a bijection; never resampled with replacement from the plan; solver picked by size, see
  :func:`exact_ot_permutation` and docs/exact_ot.md).
* :class:`MapCoupling` — a deterministic map x1 = T(x0); :class:`RotatedOTCoupling` is
  T(x0) = T_OT(R x0) for the Gaussian problem (PAPER.md §1.1).
* :class:`FixedPairs` — a finite dataset of N pairs (optionally re-paired by a derangement: the
  adversarial / shuffled coupling); minibatches draw pair indices.
* :class:`ReflowCoupling` — x1 = ODE-integrate a trained model from x0 (1-ReFlow pairs).
"""

from __future__ import annotations

import logging
import math
import warnings
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from torch import Tensor

from flowvar.distributions import Distribution, StandardNormal
from flowvar.errors import ConfigError, DataError, ShapeError, check_finite, check_positive_int
from flowvar.gaussian import GaussianProblem, gaussian_ot_matrix, psd_powers, rotation_matrix

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Pairs:
    """A batch of coupled points.

    ``x0``, ``x1``: (B, *shape) on the same dtype; ``index``: (B,) long, the training-pair index of
    each row when the pairs come from a finite set, else None.
    """

    x0: Tensor
    x1: Tensor
    index: Tensor | None = None

    def __post_init__(self) -> None:
        if self.x0.shape != self.x1.shape:
            raise ShapeError(f"paired x0 and x1 must have the same shape, got {tuple(self.x0.shape)} and "
                             f"{tuple(self.x1.shape)}")
        if self.x0.ndim < 2 or self.x0.shape[0] == 0:
            raise ShapeError(f"pairs need a batch dimension and at least one row, got x0 of shape "
                             f"{tuple(self.x0.shape)}; reshape a single point to (1, d)")
        if self.index is not None and self.index.shape != (self.x0.shape[0],):
            raise ShapeError(f"index must have shape ({self.x0.shape[0]},), got {tuple(self.index.shape)}")

    def __len__(self) -> int:
        return self.x0.shape[0]


class Coupling(ABC):
    """Draws paired batches. Subclasses implement :meth:`sample`."""

    @abstractmethod
    def sample(self, batch_size: int, generator: torch.Generator | None = None) -> Pairs:
        """Return ``batch_size`` pairs."""


class IndependentCoupling(Coupling):
    """π0 ⊗ π1: x0 and x1 drawn independently."""

    def __init__(self, source: Distribution, target: Distribution) -> None:
        if source.event_shape != target.event_shape:
            raise ShapeError(f"source and target must have the same event shape, got {source.event_shape} "
                             f"and {target.event_shape}")
        self.source, self.target = source, target

    def draw(self, batch_size: int, generator: torch.Generator | None) -> tuple[Tensor, Tensor]:
        batch_size = check_positive_int("batch_size", batch_size)
        x0 = self.source.sample(batch_size, generator)
        x1 = self.target.sample(batch_size, generator)
        if x1.dtype != x0.dtype:
            x1 = x1.to(x0.dtype)
        return x0, x1

    def sample(self, batch_size: int, generator: torch.Generator | None = None) -> Pairs:
        return Pairs(*self.draw(batch_size, generator))


def squared_distances(a: Tensor, b: Tensor, chunk_rows: int = 2048) -> Tensor:
    """C[i, j] = ‖a_i − b_j‖², computed in float64 by row chunks. ``a``: (n, ...), ``b``: (m, ...)."""
    a2 = a.reshape(a.shape[0], -1).double()
    b2 = b.reshape(b.shape[0], -1).double()
    if a2.shape[1] != b2.shape[1]:
        raise ShapeError(f"cannot compare points of {a2.shape[1]} and {b2.shape[1]} coordinates")
    bn = (b2 * b2).sum(1)
    out = torch.empty(a2.shape[0], b2.shape[0], dtype=torch.float64, device=a2.device)
    for s in range(0, a2.shape[0], chunk_rows):
        blk, rows = a2[s:s + chunk_rows], out[s:s + chunk_rows]
        # ‖b_j‖² − 2 a_i·b_j straight into the output, then + ‖a_i‖² and the clamp in place: no (chunk, m) temporaries
        torch.addmm(bn.expand(blk.shape[0], -1), blk, b2.T, alpha=-2.0, out=rows)
        rows.add_((blk * blk).sum(1)[:, None]).clamp_min_(0)
    return out


OTSolver = Literal["auto", "lsa", "emd", "sparse"]
OT_SOLVERS: tuple[str, ...] = ("auto", "lsa", "emd", "sparse")

#: ``solver="auto"`` uses POT's dense network simplex from this many points on, scipy's assignment below it. Measured
#: (1 thread; ``benchmarks/exact_ot.py``): below ~256 points both take under ~5 ms; from 256 on LSA's time explodes
#: on clustered targets in low dimension (Gaussian mixtures in d = 2: 2.7× emd's time at 256 points, 2–3× at
#: 1024–2048, 7× at 4096 — 20× without the Gaussian alignment) while emd is steadier: at worst ~1.6× LSA's time
#: (N(0, I) → N(0, I) in d = 50 at 1024 points) and at par or faster in d = 2.
AUTO_EMD_MIN_POINTS = 256
#: ``solver="auto"`` uses the certified sparse solve (:func:`sparse_certified_permutation`) from this many points on.
#: Measured (1 thread, 2-core machine, docs/exact_ot.md; solver time on the same aligned cost): 1.2–3× faster than
#: the dense network simplex at 1024 points, 1.4–5× at 2048, 2.3–9× at 4096 (d = 2 and 50, N(0, I) and
#: Gaussian-mixture targets); at 512 points at par, at 256 twice as slow (its fixed costs: a subsample solve and a
#: few passes over the cost matrix).
AUTO_SPARSE_MIN_POINTS = 1024
#: Iteration cap of the network simplex (POT's default of 1e5 stops early from ~2048 points).
EMD_MAX_ITER = 10_000_000

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
#: −10⁻¹¹·max|C| on warm-started sparse ones).
SPARSE_CERTIFICATE_RTOL = 1e-9
#: Rows of the cost matrix per block when scanning reduced costs (a block of 128 × 4096 float64 is 4 MB; one
#: unblocked pass allocates an n² temporary, 4–10× slower from the page faults alone).
_SCAN_ROWS = 128


#: Both solvers work on Gaussian-aligned points (:func:`gaussian_aligned`) from ``ALIGN_MIN_POINTS`` points of at
#: most ``ALIGN_MAX_DIM`` and at most n / ``ALIGN_POINTS_PER_DIM`` coordinates. Measured (1 thread, same solver with
#: and without it, ``benchmarks/exact_ot.py``): on Gaussian-mixture targets emd 1.2–1.35× and LSA 1.3–9× faster
#: (1024–4096 points, d = 2 and 50), on shifted and rescaled Gaussians emd up to 2×; on N(0, I) → N(0, I), where the
#: fitted map is nearly the identity, within ±15% either way from instance to instance. Below these sizes the
#: O(n d² + d³) alignment (up to ~5 ms at d = 128) costs more than it saves.
ALIGN_MIN_POINTS = 512
ALIGN_MAX_DIM = 128
ALIGN_POINTS_PER_DIM = 8


def exact_ot_permutation(x0: Tensor, x1: Tensor, solver: OTSolver = "auto", align: bool = True) -> Tensor:
    """The permutation σ minimising Σ_i ‖x0_i − x1_σ(i)‖² (exact assignment; uniform weights).

    ``x0``, ``x1``: (n, *shape), on any device → (n,) long on x0's device, so that ``x1[perm]`` is the OT partner of
    each x0 row (the solve itself runs on the CPU). Always an exact optimum and a bijection, whichever solver:

    * ``"lsa"``: scipy's Jonker–Volgenant ``linear_sum_assignment`` (fast for small or unclustered problems,
      but its time grows steeply on clustered points: ~11 s for 4096 points against a Gaussian mixture in d = 2,
      ~50 s without the alignment below);
    * ``"emd"``: POT's network simplex ``ot.emd`` on unit masses with ``numItermax=EMD_MAX_ITER`` (its plan
      is then a 0/1 permutation matrix). The plan is checked — solver status optimal, every row and column
      with exactly one unit entry — and if the check fails (iteration cap hit, a non-permutation plan) the
      problem is solved again with ``"lsa"`` and a warning is logged on the ``flowvar.couplings`` logger;
    * ``"sparse"``: the network simplex on a sparse set of candidate pairs, repeated until LP duality certifies
      the result optimal among all n² pairs (:func:`sparse_certified_permutation`); if it is not certified within
      ``SPARSE_MAX_ROUNDS`` rounds (or POT lacks its sparse solver), ``"emd"`` solves the problem (logged);
    * ``"auto"`` (default): ``"lsa"`` below ``AUTO_EMD_MIN_POINTS`` = 256 points, ``"emd"`` below
      ``AUTO_SPARSE_MIN_POINTS`` = 1024, ``"sparse"`` from there on (each with its fallbacks).

    From 512 points of at most 128 coordinates (see :func:`gaussian_aligned`) the points are first Gaussian-aligned:
    the solvers then see a cost that differs from ‖x0_i − x1_j‖² by f_i + g_j, which shifts every permutation's
    total by the same constant (so the optimum is unchanged) and is ≈ 0 along the batch's Gaussian OT map, which
    shortens their search on shifted, rescaled or clustered targets. ``align=False`` solves the plain cost (same
    optimum; for comparisons).

    Ties (duplicated points, equal costs) can make several permutations optimal; solvers may return different
    ones, all with the same minimal total cost.
    """
    if solver not in OT_SOLVERS:
        raise ConfigError(f"unknown OT solver {solver!r}; use one of {', '.join(map(repr, OT_SOLVERS))}")
    if x0.shape[0] != x1.shape[0]:
        raise ShapeError(f"exact OT pairing needs equally many sources and targets, got {x0.shape[0]} "
                         f"and {x1.shape[0]}")
    check_finite("exact OT pairing's x0", x0)  # else scipy's "invalid numeric entries", after a misleading emd try
    check_finite("exact OT pairing's x1", x1)
    device = x0.device
    x0, x1 = x0.detach().cpu(), x1.detach().cpu()  # the solvers are CPU code; the permutation goes back to x0's device
    n = x0.shape[0]
    aligned = gaussian_aligned(x0, x1) if align else None
    cost = squared_distances(x0, x1) if aligned is None else squared_distances(*aligned)
    if solver == "auto":
        solver = "lsa" if n < AUTO_EMD_MIN_POINTS else "emd" if n < AUTO_SPARSE_MIN_POINTS else "sparse"
    perm = sparse_certified_permutation(cost) if solver == "sparse" else None
    if perm is None and solver in ("emd", "sparse"):
        perm = _emd_permutation(cost.numpy())
    if perm is None:
        perm = assignment_permutation(cost.numpy())
    return torch.as_tensor(perm, dtype=torch.long, device=device)


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
    n / ``ALIGN_POINTS_PER_DIM`` coordinates, or when either point set has no spread (all points equal).
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
    A = gaussian_ot_matrix(cov0, cov1)
    root, inv_root = psd_powers(A, (0.5, -0.5), floor=1e-6)
    return (a - m0) @ root, (b - m1) @ inv_root


def assignment_permutation(cost: np.ndarray) -> np.ndarray:
    """The optimal assignment of a square (n, n) cost matrix by scipy's ``linear_sum_assignment``: perm (n,) with
    perm[i] = the column of row i."""
    rows, cols = linear_sum_assignment(cost)
    perm = np.empty_like(cols)
    perm[rows] = cols
    return perm


def _emd_permutation(cost: np.ndarray) -> np.ndarray | None:
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
    neighbours); see docs/exact_ot.md for the measurements. None — with a warning on the ``flowvar.couplings``
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


class ExactOTCoupling(IndependentCoupling):
    """Minibatch exact OT: draw B sources and B targets, pair them by the optimal assignment (a bijection).

    ``solver``: see :func:`exact_ot_permutation` (default ``"auto"``: scipy's assignment below 256 points, POT's
    network simplex below 1024, the certified sparse solve from there on; always an exact optimum).
    """

    def __init__(self, source: Distribution, target: Distribution, solver: OTSolver = "auto"):
        super().__init__(source, target)
        if solver not in OT_SOLVERS:
            raise ConfigError(f"unknown OT solver {solver!r}; use one of {', '.join(map(repr, OT_SOLVERS))}")
        self.solver = solver

    def sample(self, batch_size: int, generator: torch.Generator | None = None) -> Pairs:
        x0, x1 = self.draw(batch_size, generator)
        return Pairs(x0, x1[exact_ot_permutation(x0, x1, self.solver)])


class MapCoupling(Coupling):
    """Deterministic coupling x1 = T(x0), x0 ~ source. ``map_fn``: (B, *shape) → (B, *shape)."""

    def __init__(self, source: Distribution, map_fn: Callable[[Tensor], Tensor]) -> None:
        self.source, self.map_fn = source, map_fn

    def sample(self, batch_size: int, generator: torch.Generator | None = None) -> Pairs:
        x0 = self.source.sample(check_positive_int("batch_size", batch_size), generator)
        return Pairs(x0, self.map_fn(x0))


class RotatedOTCoupling(MapCoupling):
    """T_R(x0) = T_OT(R x0) = μ + M^{1/2} R x0 for x0 ~ N(0, I_d) (R = I: the OT coupling).

    Pass ``angle_deg`` (and ``plane`` for d > 2) or an explicit orthogonal ``rotation`` matrix.
    """

    def __init__(self, problem: GaussianProblem, angle_deg: float = 0.0, plane: tuple[int, int] = (0, 1),
                 rotation: Tensor | None = None, dtype: torch.dtype = torch.float64) -> None:
        if rotation is None:
            rotation = rotation_matrix(angle_deg, problem.dim, plane) if problem.dim >= 2 else torch.eye(1)
        self.problem = problem
        self.rotation = torch.as_tensor(rotation, dtype=torch.float64)
        problem.rotated_map_matrix(self.rotation)  # validates shape and orthogonality
        super().__init__(StandardNormal(problem.dim, dtype), lambda x0: problem.ot_map(x0, self.rotation))


def derangement(n: int, generator: torch.Generator | None = None) -> Tensor:
    """A uniformly random permutation of range(n) with no fixed point (rejection sampling; n >= 2).

    Acceptance probability → 1/e, so the expected number of draws is about 2.7.
    """
    n = check_positive_int("n", n)
    if n < 2:
        raise ConfigError("a derangement needs n >= 2 (one element cannot be moved)")
    ar = torch.arange(n)
    while True:
        perm = torch.randperm(n, generator=generator)
        if not bool((perm == ar).any()):
            return perm


class FixedPairs(Coupling):
    """A finite training set of N pairs (x0_i, x1_i); minibatches draw indices uniformly with replacement.

    ``shuffle=True`` re-pairs the targets with a derangement (the adversarial coupling of Table 2): each
    x0_i gets x1_{π(i)} with π(i) ≠ i. ``original_x1`` keeps the partners before shuffling.
    """

    def __init__(self, x0: Tensor, x1: Tensor, shuffle: bool = False,
                 generator: torch.Generator | None = None) -> None:
        if x0.shape[0] == 0:
            raise DataError("FixedPairs got an empty pair set; pass at least one pair")
        if x0.shape != x1.shape:
            raise ShapeError(f"FixedPairs needs x0 and x1 of the same shape, got {tuple(x0.shape)} and "
                             f"{tuple(x1.shape)} (one target per source)")
        check_finite("x0", x0)
        check_finite("x1", x1)
        self.original_x1 = x1
        self.permutation = derangement(x0.shape[0], generator) if shuffle else torch.arange(x0.shape[0])
        self.x0, self.x1 = x0, x1[self.permutation]

    def __len__(self) -> int:
        return self.x0.shape[0]

    def all(self) -> Pairs:
        """Every training pair, in order, with ``index = arange(N)``."""
        return Pairs(self.x0, self.x1, torch.arange(len(self)))

    def sample(self, batch_size: int, generator: torch.Generator | None = None) -> Pairs:
        idx = torch.randint(0, len(self), (check_positive_int("batch_size", batch_size),), generator=generator)
        return Pairs(self.x0[idx], self.x1[idx], idx)


class ReflowCoupling(Coupling):
    """1-ReFlow pairs: x0 ~ source, x1 = Φ_model(x0), the endpoint of the learned ODE.

    ``solve`` maps a batch of sources to endpoints (defaults to :func:`flowvar.sampling.integrate` with
    the given ``method``/``steps``). Use :meth:`materialise` to freeze N pairs into :class:`FixedPairs`.
    """

    def __init__(self, model: torch.nn.Module, source: Distribution, method: str = "euler", steps: int = 100,
                 solve: Callable[[Tensor], Tensor] | None = None) -> None:
        self.model, self.source = model, source
        if solve is None:
            from flowvar.sampling import integrate

            def solve(x0: Tensor) -> Tensor:
                return integrate(model, x0, method=method, steps=steps).x1

        self.solve = solve

    @torch.no_grad()
    def sample(self, batch_size: int, generator: torch.Generator | None = None) -> Pairs:
        x0 = self.source.sample(check_positive_int("batch_size", batch_size), generator)
        x1 = self.solve(x0).detach()
        check_finite("ReFlow endpoints", x1)
        return Pairs(x0, x1)

    def materialise(self, n: int, generator: torch.Generator | None = None, chunk: int = 4096) -> FixedPairs:
        """Draw ``n`` ReFlow pairs once and return them as a fixed training set."""
        parts = [self.sample(min(chunk, n - s), generator) for s in range(0, check_positive_int("n", n), chunk)]
        return FixedPairs(torch.cat([p.x0 for p in parts]), torch.cat([p.x1 for p in parts]))
