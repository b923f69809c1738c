"""Gradient variance of the CFM loss at fixed parameters (PAPER.md §1.2, §4 "Gradient-variance estimator").

Definition. At fixed parameters θ let g = ∇_θ ℓ(θ; x0, x1, t, z) be the gradient of the per-sample loss
ℓ = ‖u_t − v_θ(x_t, t)‖² (:func:`flowvar.loss.per_sample_loss`). The randomness is everything a training
batch draws: x0, t ~ U(0, 1), the interpolant noise z, and x1 when the coupling is random (a map coupling
x1 = T(x0) adds none). The statistic is the **trace of the covariance**

    tr Cov(g) = E‖g − E g‖² = E‖g‖² − ‖E g‖²,

estimated from K i.i.d. draws g_1 … g_K with mean ḡ by the plug-in value

    trace = (1/K) Σ_k ‖g_k − ḡ‖² = (1/K) Σ_k ‖g_k‖² − ‖ḡ‖²          (the headline number, ``trace``)

and its unbiased version ``trace_unbiased = K/(K − 1) · trace``. The two differ by a factor 1 + 1/(K − 1),
identical for any two estimates with the same K, so comparisons do not depend on the choice. The gradient
of a minibatch loss L_MC = (1/B) Σ_b ℓ_b has covariance trace tr Cov(g) / B
(:meth:`VarianceReport.minibatch_trace`).

The trace is also split by parameter group (each group the sum of its parameters' coordinates, so the
groups add up to the total) and normalised by ‖E g‖² with both parts unbiased (:func:`normalised_variance`).

Modules (each imports only those above it; :mod:`.report` imports nothing else of the package):

* :mod:`.report`: the report types and parameter grouping (:class:`VarianceReport`, :class:`TProfile`,
  :class:`FastVarianceReport`, :class:`BinStats`, :func:`group_name`, :func:`normalised_variance`);
* :mod:`.records`, :mod:`.rules`, :mod:`.moments`, :mod:`.engine`: the one-pass engine
  (:class:`GradNormEngine`): hook records and per-parameter accumulators, the per-layer rules with the exact
  fallback, the per-batch statistics and their moments over batches;
* :mod:`.autograd`: exact per-sample gradients by ``torch.func`` or in closed form, and their streaming
  float64 moments (:func:`per_sample_gradients`, :class:`VarianceAccumulator`); it refuses the batch-coupling
  modules the engine refuses, with the engine's check;
* :mod:`.estimate`: the public estimators (:func:`gradient_variance`, :func:`estimate_variance`,
  :func:`variance_t_profile`, :func:`repeated_estimates`, :func:`batch_grad_stats`,
  :func:`fast_gradient_variance`);
* :mod:`.monitor`: :class:`GradientVarianceMonitor`, the gradient variance of a training loop's own batches.
"""

from flowvar.variance.autograd import (
    METHODS,
    STRATEGIES,
    Method,
    Strategy,
    VarianceAccumulator,
    per_sample_gradients,
    slice_path,
    variance_parameters,
)
from flowvar.variance.engine import REDUCTIONS, GradNormEngine, Reduction
from flowvar.variance.estimate import (
    batch_grad_stats,
    estimate_variance,
    fast_gradient_variance,
    gradient_variance,
    repeated_estimates,
    variance_t_profile,
)
from flowvar.variance.moments import BatchGradStats, MomentAccumulator
from flowvar.variance.monitor import (
    GradientVarianceMonitor,
    MemorisationWarning,
    NonFiniteLossWarning,
    SkippedLogWarning,
)
from flowvar.variance.records import DEFAULT_CHUNK_BYTES
from flowvar.variance.report import (
    STATISTICS,
    BinStats,
    FastVarianceReport,
    GroupBy,
    Statistic,
    TProfile,
    VarianceReport,
    group_name,
    normalised_variance,
)
from flowvar.variance.rules import (
    RULES,
    Conv1dRule,
    Conv2dRule,
    EmbeddingRule,
    FourierTimeRule,
    GroupNormRule,
    LayerNormRule,
    LinearRule,
    MultiheadAttentionRule,
    RMSNormRule,
    Rule,
    register_rule,
)

__all__ = [
    "DEFAULT_CHUNK_BYTES", "METHODS", "REDUCTIONS", "RULES", "STATISTICS", "STRATEGIES", "BatchGradStats", "BinStats",
    "Conv1dRule", "Conv2dRule", "EmbeddingRule", "FastVarianceReport", "FourierTimeRule", "GradNormEngine",
    "GradientVarianceMonitor", "GroupBy", "GroupNormRule", "LayerNormRule", "LinearRule", "MemorisationWarning",
    "Method", "MomentAccumulator", "MultiheadAttentionRule", "NonFiniteLossWarning", "RMSNormRule", "Reduction", "Rule",
    "SkippedLogWarning",
    "Statistic", "Strategy", "TProfile",
    "VarianceAccumulator", "VarianceReport", "batch_grad_stats", "estimate_variance", "fast_gradient_variance",
    "gradient_variance", "group_name", "normalised_variance", "per_sample_gradients", "register_rule",
    "repeated_estimates", "slice_path", "variance_parameters", "variance_t_profile",
]
