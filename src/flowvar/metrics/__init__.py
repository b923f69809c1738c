"""Sample-quality and memorisation metrics (PAPER.md §3.4–3.5, §4 "GMM" and "Images", §5 items 6, 7, 9).

The point-set metrics (:func:`mmd2`, :func:`median_heuristic`, the distance and nearest-neighbour functions,
:func:`fitted_linear_map`, :func:`rotation_pairing`, :func:`line_spacing`, the memorisation scores) take point sets of
shape (n, *shape) and flatten each point to a vector of D = prod(shape) coordinates (images (n, C, H, W) become
(n, C·H·W)); two sets compared must have the same point shape, or one of them be flat (n, D)
(:func:`~flowvar.metrics.core.same_dim`). Their arithmetic is float64. The others take what their docstrings say:
:func:`polar_decomposition` and :func:`rotation_angle` a (d, d) matrix, :func:`path_straightness` a trajectory
(K+1, B, *shape) with its times (K+1,) (also float64), :func:`distance_stats` a tensor of distances, and the status
helpers (:func:`rotation_pairing_status`, :func:`status_verdict`, …) numbers and strings.

* :func:`mmd2`: kernel two-sample statistic MMD² with an RBF kernel, three estimators, computed in
  chunk × chunk blocks so memory stays bounded for large n.
* :func:`partner_distances`, :func:`pairing_accuracy`, :func:`nn_distance_ratio`: per-pair L2 distances
  and nearest-neighbour memorisation measures (Table 2, §5 item 6); :func:`median_nn_distance`: the spacing of a
  point set (median distance to the nearest other point).
* :func:`path_straightness`: Liu et al.'s straightness of ODE trajectories.
* :func:`fitted_linear_map`, :func:`polar_decomposition`, :func:`rotation_angle`: the rotation angle of a
  fitted affine coupling x̂1 ≈ A x0 + b (Lemma 2 stagnation check, §5 item 7).
* :func:`evaluate_outputs` (with :class:`Reference`, :func:`memorisation_score`, :func:`nn_train_over_heldout`,
  :func:`null_generalisation`): the per-σ memorisation and generalisation scores the σ advisor's rule
  (:mod:`flowvar.advisor`) reads.

The package: :mod:`~flowvar.metrics.core`, :mod:`~flowvar.metrics.mmd`, :mod:`~flowvar.metrics.distances`,
:mod:`~flowvar.metrics.paths`, :mod:`~flowvar.metrics.geometry`, :mod:`~flowvar.metrics.rotation`,
:mod:`~flowvar.metrics.memorisation`; this module re-exports their public names.
"""


from flowvar.metrics.core import (
    as_matrix,
    as_points,
    block_sq_distances,
    row_sq_norms,
    same_dim,
    same_point_shape,
)
from flowvar.metrics.distances import (
    DistanceStats,
    NNRatio,
    PairingAccuracy,
    distance_stats,
    median_nn_distance,
    nearest_neighbours,
    nn_distance_ratio,
    pairing_accuracy,
    partner_distances,
)
from flowvar.metrics.geometry import (
    LinearMap,
    PolarDecomposition,
    fitted_linear_map,
    polar_decomposition,
    rotation_angle,
)
from flowvar.metrics.memorisation import (
    GEN_KEY,
    MEM_KEY,
    Reference,
    evaluate_outputs,
    memorisation_score,
    nn_train_over_heldout,
    null_generalisation,
)
from flowvar.metrics.mmd import (
    ESTIMATORS,
    GIB,
    KERNEL_SATURATES_WITHIN,
    KERNEL_VANISHES_BELOW,
    MULTI_BANDWIDTH_FACTORS,
    BandwidthWarning,
    Estimator,
    MMDResult,
    median_heuristic,
    mmd2,
    mmd_memory_bytes,
)
from flowvar.metrics.paths import (
    Straightness,
    path_straightness,
)
from flowvar.metrics.rotation import (
    FAILS_FRACTION,
    STATUS_VERDICT_RULE,
    PairingStatus,
    counterexample_min_loss,
    line_spacing,
    rotation_pairing,
    rotation_pairing_on_solvers,
    rotation_pairing_status,
    status_min_effect,
    status_threshold_text,
    status_verdict,
    why_not_discriminating,
)

__all__ = [
    "ESTIMATORS",
    "FAILS_FRACTION",
    "GEN_KEY",
    "GIB",
    "KERNEL_SATURATES_WITHIN",
    "KERNEL_VANISHES_BELOW",
    "MEM_KEY",
    "MULTI_BANDWIDTH_FACTORS",
    "STATUS_VERDICT_RULE",
    "BandwidthWarning",
    "DistanceStats",
    "Estimator",
    "LinearMap",
    "MMDResult",
    "NNRatio",
    "PairingAccuracy",
    "PairingStatus",
    "PolarDecomposition",
    "Reference",
    "Straightness",
    "as_matrix",
    "as_points",
    "block_sq_distances",
    "counterexample_min_loss",
    "distance_stats",
    "evaluate_outputs",
    "fitted_linear_map",
    "line_spacing",
    "median_heuristic",
    "median_nn_distance",
    "memorisation_score",
    "mmd2",
    "mmd_memory_bytes",
    "nearest_neighbours",
    "nn_distance_ratio",
    "nn_train_over_heldout",
    "null_generalisation",
    "pairing_accuracy",
    "partner_distances",
    "path_straightness",
    "polar_decomposition",
    "rotation_angle",
    "rotation_pairing",
    "rotation_pairing_on_solvers",
    "rotation_pairing_status",
    "row_sq_norms",
    "same_dim",
    "same_point_shape",
    "status_min_effect",
    "status_threshold_text",
    "status_verdict",
    "why_not_discriminating",
]
