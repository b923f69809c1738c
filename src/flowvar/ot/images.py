"""Optimal-transport pairings between N noise samples and N images, in bounded memory (PAPER.md §3.5, §4 "Images").

Problem. Given sources x0 (N, *shape) (Gaussian noise) and targets x1 (N, *shape) (images), find the permutation
σ minimising the total squared L2 cost

    C(σ) = Σ_i ‖x0_i − x1_σ(i)‖²      (each point flattened to D = prod(shape) coordinates),

so that ``x1[σ]`` holds the OT partner of every source row. Two solvers:

* :func:`exact_assignment` — the exact optimum: the N × N cost matrix is built in row × column blocks of
  ``block`` points (float64 arithmetic; memory 8·N² bytes for the matrix plus 16·block·D for two blocks, never
  N × N × D), then scipy's Jonker–Volgenant ``linear_sum_assignment``. Refused above ``max_exact`` points
  (default :data:`MAX_EXACT` = 5000: a 200 MB matrix and tens of seconds of solver time on a CPU).
* :func:`blockwise_assignment` — the approximation for larger N (documented in docs/experiments/table2.md):

  1. *Partition*: a balanced principal-direction tree. At each node holding n sources and n targets, take
     the top principal direction u of the node's targets (power iteration on the centred images; the
     noise is isotropic, so the images' spread is what the cross term −2⟨x0, x1⟩ of the cost rewards),
     sort the sources and the targets by their projections on u, and send the lower ⌊n/2⌋ of *each* set
     left and the rest right (the 1-D optimal matching along u is the sorted one). Recurse until a node
     holds at most ``block_size`` points of each set.
  2. *Exact OT inside each leaf* (the same blocked cost matrix and ``linear_sum_assignment``).
  3. *Refinement* (``refine_rounds`` times): regroup the current pairs into new leaves with a tree over the
     pairs' targets whose split directions are random combinations of the node's top principal directions
     (a different tree each round), and re-solve the exact assignment inside each new leaf. A leaf's
     current assignment is feasible for its sub-problem, so no round can increase the cost.

  Its optimality gap — ``cost_approx / cost_exact − 1`` and the fraction of sources that get the same
  partner as the exact solution — is what :func:`approximation_gap` reports at sizes where both solvers run.
  A leaf of b points costs 8·b² bytes and one assignment of size b; the run is O(N·b·D) for the costs.

:func:`ot_assignment` picks between them (``method="auto"``: exact up to ``max_exact`` points, else blockwise).
The adversarial coupling of Table 2 is the OT pairing re-paired by a derangement: ``FixedPairs(x0, x1[σ],
shuffle=True)`` (:func:`adversarial_pairs`).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np
import torch
from torch import Tensor

from flowvar.errors import ConfigError, DataError, ShapeError, check_finite, check_positive_int
from flowvar.ot.dense import assignment_permutation
from flowvar.seeding import check_seed

if TYPE_CHECKING:
    from flowvar.couplings import FixedPairs

MAX_EXACT = 5000
"""Default largest N for :func:`exact_assignment` (an N × N float64 cost matrix: 200 MB at 5000)."""

DEFAULT_BLOCK = 1024
"""Default rows per block when building cost matrices (two blocks of ``DEFAULT_BLOCK`` × D float64 in memory)."""

Method = Literal["auto", "exact", "blockwise"]

GAP_RTOL = 1e-9
"""Relative rounding that :func:`approximation_gap` allows: between an assignment's stored cost and its cost
recomputed on the given points (both the same float64 sum when the sets are the same), and below zero for the gap."""


@dataclass(frozen=True)
class Assignment:
    """An OT pairing of N sources with N targets.

    * ``permutation``: (N,) long; ``x1[permutation]`` is the partner of each source row (a bijection);
    * ``cost``: the mean squared distance (1/N) Σ_i ‖x0_i − x1_σ(i)‖² (float64);
    * ``method``: ``"exact"`` or ``"blockwise"``;
    * ``blocks``: how many exact sub-problems were solved in the last pass (1 for exact);
    * ``largest_block``: the size of the largest sub-problem;
    * ``refine_rounds``: refinement rounds run (0 for exact); ``round_costs``: the mean cost after the partition
      pass and after every refinement round (non-increasing);
    * ``runtime_s``: wall-clock seconds.
    """

    permutation: Tensor
    cost: float
    method: str
    blocks: int
    largest_block: int
    refine_rounds: int
    round_costs: tuple[float, ...]
    runtime_s: float

    def __len__(self) -> int:
        return self.permutation.shape[0]


@dataclass(frozen=True)
class GapStats:
    """How far an approximate assignment is from the exact one (same sources and targets).

    * ``relative_gap`` = cost_approx / cost_exact − 1 (>= 0 up to rounding);
    * ``improvement_lost`` = (cost_approx − cost_exact) / (cost_random − cost_exact): the share of what exact OT
      gains over a random pairing that the approximation gives up (0: optimal; 1: no better than random).
      cost_random = mean_i ‖x0_i‖² + mean_j ‖x1_j‖² − 2⟨mean x0, mean x1⟩, the expected cost of a uniformly random
      permutation. The mean cost is dominated by ‖x0‖² + ‖x1‖², which no pairing changes, so ``relative_gap``
      alone looks small; this normalisation shows the gap on the part OT optimises;
    * ``same_partner_fraction``: fraction of sources whose partner is the same in both assignments;
    * ``cost_exact``, ``cost_approx``: mean squared distances; ``n``: N; ``block_size``: the approximation's leaf
      size; ``refine_rounds``; ``runtime_exact_s``, ``runtime_approx_s``.
    """

    relative_gap: float
    improvement_lost: float
    same_partner_fraction: float
    cost_exact: float
    cost_approx: float
    cost_random: float
    n: int
    block_size: int
    refine_rounds: int
    runtime_exact_s: float
    runtime_approx_s: float

    def as_dict(self) -> dict[str, float | int]:
        """Plain numbers, e.g. for ``ctx.metric``."""
        return {"relative_gap": self.relative_gap, "improvement_lost": self.improvement_lost,
                "same_partner_fraction": self.same_partner_fraction, "cost_exact": self.cost_exact,
                "cost_approx": self.cost_approx, "cost_random": self.cost_random, "n": self.n,
                "block_size": self.block_size, "refine_rounds": self.refine_rounds,
                "runtime_exact_s": self.runtime_exact_s, "runtime_approx_s": self.runtime_approx_s}


# --------------------------------------------------------------------------------------------- validation


def _flat_pair(x0: Tensor, x1: Tensor, same_count: bool = True) -> tuple[Tensor, Tensor]:
    """Validate two point sets and return them flattened to (N, D) and (M, D) (dtype kept; moved to the CPU).

    ``same_count``: require N = M (a pairing); :func:`cost_matrix` compares sets of any sizes.
    """
    if not isinstance(x0, Tensor) or not isinstance(x1, Tensor):
        raise ShapeError(f"x0 and x1 must be tensors, got {type(x0).__name__} and {type(x1).__name__}; convert "
                         f"with torch.as_tensor(x)")
    if x0.ndim < 2 or x1.ndim < 2:
        raise ShapeError(f"x0 and x1 must have shape (N, *point_shape), got {tuple(x0.shape)} and {tuple(x1.shape)}; "
                         f"reshape one point to (1, ...)")
    if same_count and x0.shape[0] != x1.shape[0]:
        raise ShapeError(f"an OT pairing needs as many sources as targets, got {x0.shape[0]} sources and "
                         f"{x1.shape[0]} targets; draw one noise sample per image")
    if x0.shape[0] == 0 or x1.shape[0] == 0:
        raise DataError(f"no points to compare: got {x0.shape[0]} sources and {x1.shape[0]} targets; pass at least "
                        f"one of each")
    for name, x in (("x0", x0), ("x1", x1)):
        if x.device.type == "meta":  # else torch's "Cannot copy out of meta tensor" in .cpu()
            raise DataError(f"{name} is on the meta device (a shape without data); pass it on the CPU or a GPU")
    a = x0.detach().reshape(x0.shape[0], -1).cpu()
    b = x1.detach().reshape(x1.shape[0], -1).cpu()
    if a.shape[1] != b.shape[1]:
        raise ShapeError(f"sources have {a.shape[1]} coordinates per point but targets have {b.shape[1]} "
                         f"(shapes {tuple(x0.shape)} and {tuple(x1.shape)}); draw noise with the images' shape")
    if not (torch.is_floating_point(a) and torch.is_floating_point(b)):
        raise DataError(f"x0 and x1 must be floating point, got {a.dtype} and {b.dtype}")
    check_finite("x0", a)
    check_finite("x1", b)
    return a, b


def _check_block(name: str, value: object) -> int:
    v = check_positive_int(name, value)
    if v < 2:
        raise ConfigError(f"{name} must be at least 2 points, got {v}")
    return v


# --------------------------------------------------------------------------------------------- costs


def cost_matrix(x0: Tensor, x1: Tensor, block: int = DEFAULT_BLOCK) -> np.ndarray:
    """C[i, j] = ‖x0_i − x1_j‖² as an (N, M) float64 numpy array, built in ``block`` × ``block`` tiles.

    ``x0``: (N, *shape), ``x1``: (M, *shape) (N may differ from M here). Each tile converts its rows to float64,
    shifts them by the common mean of both sets (distances are unchanged; without it the expansion below cancels
    catastrophically far from the origin and the assignment on it is wrong) and uses ‖a‖² + ‖b‖² − 2 a·b (clamped
    at 0), so memory is 8·N·M bytes for the result plus two float64 tiles of ``block`` × D; nothing of size
    N × M × D is formed. The inputs are checked as :func:`pair_costs` checks them (tensors, non-empty, floating
    point, finite: a NaN would give a silently non-finite cost).
    """
    a, b = _flat_pair(x0, x1, same_count=False)
    block = check_positive_int("block", block)
    out = np.empty((a.shape[0], b.shape[0]), dtype=np.float64)
    centre = _common_mean(a, b, block)
    for r in range(0, a.shape[0], block):
        at = a[r:r + block].double() - centre
        an = (at * at).sum(1)
        for s in range(0, b.shape[0], block):
            bt = b[s:s + block].double() - centre
            out[r:r + at.shape[0], s:s + bt.shape[0]] = _tile(at, an, bt, (bt * bt).sum(1))
    return out


def _common_mean(a: Tensor, b: Tensor, block: int) -> Tensor:
    """The float64 mean (D,) of the rows of ``a`` and ``b`` together, summed ``block`` rows at a time (no float64
    copy of a whole set)."""
    total = torch.zeros(a.shape[1], dtype=torch.float64)
    for x in (a, b):
        for r in range(0, x.shape[0], block):
            total += x[r:r + block].double().sum(0)
    return total / max(a.shape[0] + b.shape[0], 1)


def _tile(at: Tensor, an: Tensor, bt: Tensor, bn: Tensor) -> np.ndarray:
    """One tile ‖a_i − b_j‖² = ‖a_i‖² + ‖b_j‖² − 2 a_i·b_j, clamped at 0: (ra, D), (rb, D) → (ra, rb) float64."""
    return torch.addmm(bn[None, :], at, bt.T, alpha=-2.0).add_(an[:, None]).clamp_min_(0.0).numpy()


def pair_costs(x0: Tensor, x1: Tensor, permutation: Tensor | None = None, block: int = DEFAULT_BLOCK) -> Tensor:
    """Per-pair squared distances c_i = ‖x0_i − x1_σ(i)‖² in float64 from exact differences: (N,).

    ``permutation`` σ: (N,) integer, a bijection of range(N) (None: the identity, i.e. row i with row i); anything
    else is a :class:`ShapeError` or :class:`DataError` (a repeated target gave a cost silently, an index out of
    range torch's IndexError). ``block``: rows per float64 difference block, a positive integer.
    """
    a, b = _flat_pair(x0, x1)
    block = check_positive_int("block", block)
    if permutation is not None:
        perm = torch.as_tensor(permutation)
        if perm.is_floating_point() or perm.is_complex() or perm.dtype == torch.bool:
            raise DataError(f"permutation must hold integer indices, got dtype {perm.dtype}; pass it as a long "
                            f"tensor (e.g. Assignment.permutation)")
        perm = perm.long().reshape(-1).cpu()
        if perm.shape != (a.shape[0],):
            raise ShapeError(f"permutation must have shape ({a.shape[0]},), got {tuple(perm.shape)}")
        n = a.shape[0]
        outside = int(((perm < 0) | (perm >= n)).sum())
        repeated = n - int(torch.unique(perm).numel())
        if outside or repeated:
            raise DataError(f"permutation must be a bijection of range({n}) (every target exactly once), got "
                            f"{outside} entries outside 0..{n - 1} and {repeated} repeated; pass the permutation of "
                            f"an assignment of these points")
        b = b[perm]
    out = torch.empty(a.shape[0], dtype=torch.float64)
    for s in range(0, a.shape[0], block):
        out[s:s + block] = (a[s:s + block].double() - b[s:s + block].double()).pow(2).sum(1)
    return out


def random_pairing_cost(x0: Tensor, x1: Tensor) -> float:
    """The expected mean cost of a uniformly random permutation: (1/N²) Σ_ij ‖x0_i − x1_j‖²
    = mean ‖x0_i‖² + mean ‖x1_j‖² − 2⟨mean x0, mean x1⟩ (float64)."""
    a, b = _flat_pair(x0, x1)
    a, b = a.double(), b.double()
    # = mean ‖a_i − m_a‖² + mean ‖b_j − m_b‖² + ‖m_a − m_b‖², the same number in a form without the cancellation of
    # ‖a‖² + ‖b‖² − 2⟨a, b⟩ far from the origin
    ma, mb = a.mean(0), b.mean(0)
    return float((a - ma).pow(2).sum(1).mean() + (b - mb).pow(2).sum(1).mean() + (ma - mb).pow(2).sum())


# --------------------------------------------------------------------------------------------- exact


def exact_assignment(x0: Tensor, x1: Tensor, max_exact: int | None = MAX_EXACT,
                     block: int = DEFAULT_BLOCK) -> Assignment:
    """The exact OT permutation between N sources and N targets (squared L2; uniform weights).

    ``x0``, ``x1``: (N, *shape). ``max_exact``: refuse larger N with a :class:`ConfigError` (the cost matrix needs
    8·N² bytes and the solver's time grows roughly as N³; None lifts the limit). Returns an :class:`Assignment`.
    """
    start = time.perf_counter()
    a, b = _flat_pair(x0, x1)
    n = a.shape[0]
    if max_exact is not None and n > max_exact:
        raise ConfigError(f"exact OT on N={n} points needs an {n}x{n} float64 cost matrix "
                          f"({8 * n * n / 1e9:.1f} GB) and a slow O(N^3) solve; use method='blockwise' (its gap to "
                          f"the exact optimum is measured in docs/experiments/table2.md) or raise max_exact "
                          f"(now {max_exact})")
    perm = torch.as_tensor(assignment_permutation(cost_matrix(a, b, block)), dtype=torch.long)
    cost = float(pair_costs(a, b, perm, block).mean())
    return Assignment(perm, cost, "exact", 1, n, 0, (cost,), time.perf_counter() - start)


# --------------------------------------------------------------------------------------------- blockwise


def _top_directions(points: Tensor, k: int, generator: torch.Generator, iters: int = 6,
                    max_rows: int = 4096) -> Tensor:
    """The top-``k`` principal directions of ``points`` (n, D) as a (k, D) float64 orthonormal matrix.

    Randomised subspace iteration on the centred rows (at most ``max_rows`` rows, drawn with ``generator``).
    """
    x = points
    if x.shape[0] > max_rows:
        x = x[torch.randperm(x.shape[0], generator=generator)[:max_rows]]
    x = x.double()
    x = x - x.mean(0, keepdim=True)
    k = max(1, min(k, x.shape[0], x.shape[1]))
    q = torch.randn(x.shape[1], k, generator=generator, dtype=torch.float64)
    for _ in range(iters):
        q, _ = torch.linalg.qr(x.T @ (x @ q))
    return q.T.contiguous()


def _split_sorted(values: Tensor) -> tuple[Tensor, Tensor]:
    """Indices of the lower ⌊n/2⌋ and the upper ⌈n/2⌉ entries of ``values`` (ties broken by position)."""
    order = torch.argsort(values, stable=True)
    half = values.shape[0] // 2
    return order[:half], order[half:]


def _partition(a: Tensor, b: Tensor, block_size: int, generator: torch.Generator) -> list[tuple[Tensor, Tensor]]:
    """Balanced principal-direction tree over sources ``a`` and targets ``b`` (both (n, D)): leaves (ia, ib)."""
    leaves: list[tuple[Tensor, Tensor]] = []
    stack = [(torch.arange(a.shape[0]), torch.arange(b.shape[0]))]
    while stack:
        ia, ib = stack.pop()
        if ia.shape[0] <= block_size:
            leaves.append((ia, ib))
            continue
        u = _top_directions(b[ib], 1, generator)[0]
        la, ra = _split_sorted(a[ia].double() @ u)
        lb, rb = _split_sorted(b[ib].double() @ u)
        stack += [(ia[ra], ib[rb]), (ia[la], ib[lb])]
    return leaves


def _pair_partition(b: Tensor, block_size: int, generator: torch.Generator, k: int = 8) -> list[Tensor]:
    """Balanced tree over the points ``b`` (n, D) whose split directions are random combinations of the node's
    top-``k`` principal directions: leaves as index tensors."""
    leaves: list[Tensor] = []
    stack = [torch.arange(b.shape[0])]
    while stack:
        idx = stack.pop()
        if idx.shape[0] <= block_size:
            leaves.append(idx)
            continue
        dirs = _top_directions(b[idx], k, generator, iters=3)
        w = torch.randn(dirs.shape[0], generator=generator, dtype=torch.float64)
        left, right = _split_sorted(b[idx].double() @ (w @ dirs))
        stack += [idx[right], idx[left]]
    return leaves


def blockwise_assignment(x0: Tensor, x1: Tensor, block_size: int = 1024, refine_rounds: int = 2, seed: int = 0,
                         block: int = DEFAULT_BLOCK) -> Assignment:
    """Approximate OT pairing for large N: principal-direction partition, exact OT per leaf, refinement rounds.

    See the module docstring for the algorithm. ``x0``, ``x1``: (N, *shape); ``block_size``: the largest leaf
    (exact sub-problem); ``refine_rounds``: regroup-and-resolve passes (each cannot increase the cost);
    ``seed``: the random directions and subsamples, an integer in [0, 2**63) (:func:`flowvar.seeding.check_seed`).
    With N <= ``block_size`` this is the exact assignment. Returns an :class:`Assignment` whose ``round_costs`` are
    non-increasing.
    """
    start = time.perf_counter()
    a, b = _flat_pair(x0, x1)
    block_size = _check_block("block_size", block_size)
    if isinstance(refine_rounds, bool) or not isinstance(refine_rounds, int) or refine_rounds < 0:
        raise ConfigError(f"refine_rounds must be an integer >= 0, got {refine_rounds!r}")
    seed = check_seed(seed, "blockwise_assignment's seed")  # int("a") or int(2.7) raised or truncated silently
    block = check_positive_int("block", block)
    n = a.shape[0]
    generator = torch.Generator().manual_seed(seed)
    perm = torch.empty(n, dtype=torch.long)
    leaves = _partition(a, b, block_size, generator)
    for ia, ib in leaves:
        local = torch.as_tensor(assignment_permutation(cost_matrix(a[ia], b[ib], block)), dtype=torch.long)
        perm[ia] = ib[local]
    costs = [float(pair_costs(a, b, perm, block).mean())]
    blocks, largest = len(leaves), max(int(ia.shape[0]) for ia, _ in leaves)
    for _ in range(refine_rounds):
        groups = _pair_partition(b[perm], block_size, generator)
        for rows in groups:
            cols = perm[rows]
            local = torch.as_tensor(assignment_permutation(cost_matrix(a[rows], b[cols], block)), dtype=torch.long)
            perm[rows] = cols[local]
        costs.append(float(pair_costs(a, b, perm, block).mean()))
        blocks, largest = len(groups), max(int(r.shape[0]) for r in groups)
    if sorted(perm.tolist()) != list(range(n)):  # pragma: no cover - a bug guard: leaves must partition both sets
        raise DataError("internal error: the blockwise pairing is not a permutation")
    return Assignment(perm, costs[-1], "blockwise", blocks, largest, refine_rounds, tuple(costs),
                      time.perf_counter() - start)


# --------------------------------------------------------------------------------------------- front end


def ot_assignment(x0: Tensor, x1: Tensor, method: Method = "auto", max_exact: int = MAX_EXACT,
                  block_size: int = 1024, refine_rounds: int = 2, seed: int = 0) -> Assignment:
    """OT pairing between sources ``x0`` and targets ``x1`` (both (N, *shape)).

    ``method``: ``"exact"`` (refused above ``max_exact``), ``"blockwise"`` (the approximation), or ``"auto"``
    (exact when N <= ``max_exact``, else blockwise with ``block_size`` and ``refine_rounds``).
    """
    if method not in ("auto", "exact", "blockwise"):
        raise ConfigError(f"unknown OT method {method!r}; use 'auto', 'exact' or 'blockwise'")
    max_exact = check_positive_int("max_exact", max_exact)
    n = x0.shape[0] if isinstance(x0, Tensor) and x0.ndim else 0
    if method == "exact" or (method == "auto" and n <= max_exact):
        return exact_assignment(x0, x1, max_exact=max_exact)
    return blockwise_assignment(x0, x1, block_size=block_size, refine_rounds=refine_rounds, seed=seed)


def approximation_gap(x0: Tensor, x1: Tensor, approx: Assignment | None = None, exact: Assignment | None = None,
                      block_size: int = 1024, refine_rounds: int = 2, seed: int = 0) -> GapStats:
    """Optimality gap of the blockwise pairing against the exact one on the same (x0, x1).

    Solves whichever of ``approx`` / ``exact`` is not given (the exact solve is limited to :data:`MAX_EXACT`
    points only by memory and time: this function lifts ``max_exact``). Returns :class:`GapStats` with
    ``relative_gap = cost_approx / cost_exact − 1`` and the fraction of sources paired identically.

    A given assignment must have been computed on these very ``x0``, ``x1``: it must pair N = ``x0.shape[0]``
    points, and its stored ``cost`` must equal the mean cost of its permutation recomputed here on (x0, x1) (within
    :data:`GAP_RTOL`), else a :class:`DataError` (an assignment of other point sets gives a false gap: it was
    negative, or far too small, on sets of the same size). A negative ``relative_gap`` beyond :data:`GAP_RTOL` is a
    :class:`DataError` too: the ``exact`` assignment is then not the optimum of (x0, x1).
    """
    given = [(name, a) for name, a in (("approx", approx), ("exact", exact)) if a is not None]
    if given:  # (the solves below validate x0, x1 themselves)
        n = _flat_pair(x0, x1)[0].shape[0]
        for name, assignment in given:
            _check_assignment_of(name, assignment, x0, x1, n)
    if exact is None:
        exact = exact_assignment(x0, x1, max_exact=None)
    if approx is None:
        approx = blockwise_assignment(x0, x1, block_size=block_size, refine_rounds=refine_rounds, seed=seed)
    gap = approx.cost / exact.cost - 1.0 if exact.cost > 0 else (0.0 if approx.cost == 0 else math.inf)
    if gap < -GAP_RTOL:
        raise DataError(f"the approximate assignment costs less than the exact one (relative gap {gap:.3g}): the "
                        f"exact assignment is not the optimum of x0, x1; pass exact=None to solve it here")
    same = float((approx.permutation == exact.permutation).double().mean())
    random = random_pairing_cost(x0, x1)
    headroom = random - exact.cost
    lost = (approx.cost - exact.cost) / headroom if headroom > 0 else 0.0
    return GapStats(relative_gap=gap, improvement_lost=lost, same_partner_fraction=same, cost_exact=exact.cost,
                    cost_approx=approx.cost, cost_random=random,
                    n=len(exact), block_size=approx.largest_block if approx.method == "blockwise" else len(exact),
                    refine_rounds=approx.refine_rounds, runtime_exact_s=exact.runtime_s,
                    runtime_approx_s=approx.runtime_s)


def _check_assignment_of(name: str, assignment: Assignment, x0: Tensor, x1: Tensor, n: int) -> None:
    """Raise unless ``assignment`` pairs the N = ``n`` points of (x0, x1) at its stored cost (see
    :func:`approximation_gap`): its cost recomputed from its permutation must match within :data:`GAP_RTOL`."""
    if len(assignment) != n:
        raise DataError(f"the {name} assignment pairs {len(assignment)} points but x0 and x1 hold {n}: it was not "
                        f"computed on x0, x1; pass the sets it was solved on (or {name}=None to solve it here)")
    recomputed = float(pair_costs(x0, x1, assignment.permutation).mean())
    if abs(recomputed - assignment.cost) > GAP_RTOL * max(abs(recomputed), abs(assignment.cost)):
        raise DataError(f"the {name} assignment was not computed on x0, x1: its stored cost is {assignment.cost:.6g} "
                        f"but its permutation costs {recomputed:.6g} on them; pass the sets it was solved on (or "
                        f"{name}=None to solve it here)")


def adversarial_pairs(x0: Tensor, x1: Tensor, assignment: Assignment,
                      generator: torch.Generator | None = None) -> FixedPairs:
    """The adversarial coupling of Table 2: OT pairs (x0_i, x1_σ(i)) re-paired by a derangement π.

    Returns ``FixedPairs(x0, x1[σ], shuffle=True)``: training pair i is (x0_i, x1_σ(π(i))) with π(i) ≠ i, so no
    source keeps its OT partner; ``original_x1`` holds the OT partners x1[σ] and ``permutation`` holds π.
    """
    if len(assignment) != x0.shape[0] or x0.shape[0] != x1.shape[0]:
        raise ShapeError(f"the assignment pairs {len(assignment)} points but x0 has {x0.shape[0]} and x1 "
                         f"{x1.shape[0]}; compute the assignment on these very sets")
    from flowvar.couplings import FixedPairs  # here, not at the top: flowvar.couplings imports flowvar.ot

    return FixedPairs(x0, x1[assignment.permutation], shuffle=True, generator=generator)


__all__ = ["DEFAULT_BLOCK", "GAP_RTOL", "MAX_EXACT", "Assignment", "GapStats", "adversarial_pairs", "approximation_gap",
           "blockwise_assignment", "cost_matrix", "exact_assignment", "ot_assignment", "pair_costs",
           "random_pairing_cost"]
