"""Exact optimal-transport solvers (squared L2 cost, uniform weights): the permutation σ minimising
Σ_i ‖x0_i − x1_σ(i)‖² between two equally large point sets.

* :mod:`flowvar.ot.exact` — :func:`exact_ot_permutation`, the minibatch entry point used by
  :class:`flowvar.couplings.ExactOTCoupling`: picks an exact solver by size and falls back between them;
* :mod:`flowvar.ot.dense` — the cost matrix (:func:`squared_distances`), the Gaussian alignment
  (:func:`gaussian_aligned`), scipy's assignment (:func:`assignment_permutation`) and POT's dense network simplex
  (:func:`emd_permutation`);
* :mod:`flowvar.ot.sparse` — the network simplex on candidate pairs, certified optimal over all n² pairs by LP
  duality (:func:`sparse_certified_permutation`; docs/exact_ot.md);
* :mod:`flowvar.ot.images` — OT pairings of N noise samples with N images in bounded memory: the exact assignment
  on a blocked cost matrix, the blockwise approximation for large N and its measured gap, and the adversarial
  (deranged OT) pairs of Table 2 (docs/experiments/table2.md).

Solver warnings (a fallback from one exact solver to another) go to the ``flowvar.ot`` loggers.
"""

from flowvar.ot.dense import (
    ALIGN_MAX_DIM,
    ALIGN_MIN_POINTS,
    ALIGN_POINTS_PER_DIM,
    EMD_MAX_ITER,
    assignment_permutation,
    emd_permutation,
    gaussian_aligned,
    squared_distances,
)
from flowvar.ot.exact import (
    AUTO_EMD_MIN_POINTS,
    AUTO_SPARSE_MIN_POINTS,
    OT_SOLVERS,
    OTSolver,
    check_solver,
    exact_ot_permutation,
)
from flowvar.ot.images import (
    DEFAULT_BLOCK,
    MAX_EXACT,
    Assignment,
    GapStats,
    adversarial_pairs,
    approximation_gap,
    blockwise_assignment,
    cost_matrix,
    exact_assignment,
    ot_assignment,
    pair_costs,
    random_pairing_cost,
)
from flowvar.ot.sparse import sparse_certified_permutation

__all__ = [
    "ALIGN_MAX_DIM",
    "ALIGN_MIN_POINTS",
    "ALIGN_POINTS_PER_DIM",
    "AUTO_EMD_MIN_POINTS",
    "AUTO_SPARSE_MIN_POINTS",
    "DEFAULT_BLOCK",
    "EMD_MAX_ITER",
    "MAX_EXACT",
    "OT_SOLVERS",
    "Assignment",
    "GapStats",
    "OTSolver",
    "adversarial_pairs",
    "approximation_gap",
    "assignment_permutation",
    "blockwise_assignment",
    "check_solver",
    "cost_matrix",
    "emd_permutation",
    "exact_assignment",
    "exact_ot_permutation",
    "gaussian_aligned",
    "ot_assignment",
    "pair_costs",
    "random_pairing_cost",
    "sparse_certified_permutation",
    "squared_distances",
]
