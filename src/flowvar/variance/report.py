"""Report and grouping types of the gradient-variance tool: the leaf module of :mod:`flowvar.variance`.

Every estimator of the package returns one of these types, and every one groups parameters with
:func:`group_name`; this module imports nothing else of the package, so any module may import it.

* :class:`VarianceReport`: tr Cov(g) and its parts from K per-sample gradients (autograd or closed form);
* :class:`FastVarianceReport`: the same from the one-pass engine, plus per-layer traces, element-wise
  variances and the parameters that needed the exact fallback;
* :class:`TProfile`: tr Cov(g | t ∈ bin) over equal-width t-bins (one estimate per bin);
* :class:`BinStats`: per-t-bin statistics of one batch (the engine's segments);
* :func:`normalised_variance`: tr Cov(g) / ‖E g‖² with both parts unbiased.
* :class:`RunningMoments`: a streamed scalar's mean and spread (the per-sample losses behind a report's errors).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch
from torch import Tensor

from flowvar.errors import ConfigError, DataError, check_positive_int

__all__ = [
    "STATISTICS", "BinStats", "FastVarianceReport", "GroupBy", "RunningMoments", "Statistic", "TProfile",
    "VarianceReport", "group_name", "normalised_variance",
]

GroupBy = Literal["parameter", "module"] | Callable[[str], str]
Statistic = Literal["trace", "trace_unbiased", "normalised", "mean_grad_sq_norm", "mean_loss"]

STATISTICS: tuple[str, ...] = ("trace", "trace_unbiased", "normalised", "mean_grad_sq_norm", "mean_loss")


# --------------------------------------------------------------------------------------------- grouping


def group_name(name: str, group_by: GroupBy) -> str:
    """The group of parameter ``name``: itself (``"parameter"``), its module path without the last
    component (``"module"``: ``net.0.weight`` → ``net.0``; a top-level ``theta`` stays ``theta``), or
    ``group_by(name)`` for a callable."""
    if callable(group_by):
        return str(group_by(name))
    if group_by == "parameter":
        return name
    if group_by == "module":
        return name.rsplit(".", 1)[0] if "." in name else name
    raise ConfigError(f"unknown group_by {group_by!r}; use 'parameter', 'module' or a function name -> group")


def normalised_variance(trace: float, mean_grad_sq_norm: float, n: int) -> float | None:
    """The normalised gradient variance tr Cov(g) / ‖E g‖², each part estimated without bias from K = ``n``
    per-sample gradients: trace_u = K/(K − 1) · trace (``trace`` the plug-in (1/K) Σ‖g_k − ḡ‖²) over
    ‖ḡ‖²_u = ‖ḡ‖² − trace_u/K (E‖ḡ‖² = ‖E g‖² + tr Cov(g)/K).

    The plug-in ratio trace/‖ḡ‖² cannot exceed ≈ K, so near a stationary point it saturates at a value set by
    the batch size, not by the model. Returns ``math.inf`` when ‖ḡ‖²_u ≤ 0 < trace (the mean gradient is not
    resolved from the noise), 0.0 when trace = 0 < ‖ḡ‖² (no variance around a non-zero mean gradient) and None
    when trace = 0 = ‖ḡ‖² (0/0: every per-sample gradient is zero; the ratio is undefined).
    """
    if n < 2:
        raise DataError(f"a normalised variance needs at least 2 per-sample gradients, got {n}")
    if trace <= 0:
        return None if mean_grad_sq_norm <= 0 else 0.0
    trace_u = trace * n / (n - 1)
    signal = mean_grad_sq_norm - trace_u / n
    return trace_u / signal if signal > 0 else math.inf


# --------------------------------------------------------------------------------------------- streaming moments


@dataclass
class RunningMoments:
    """Float64 mean and sum of squared deviations of a stream of scalars, merged batch by batch with the pairwise
    update (Chan, Golub & LeVeque 1979): M2 ← M2_a + M2_b + (m_b − m_a)² n_a n_b / (n_a + n_b),
    m ← m_a + (m_b − m_a) n_b / (n_a + n_b). The estimators' per-sample losses and squared deviations, for the
    standard errors of :class:`VarianceReport` (``sd`` is the sample standard deviation, NaN below 2 values)."""

    n: int = 0
    mean: float = 0.0
    m2: float = 0.0

    def update(self, values: Tensor) -> None:
        """Merge one batch of values (any shape; flattened, in float64)."""
        x = values.detach().to(dtype=torch.float64).reshape(-1)
        b = int(x.numel())
        if b == 0:
            return
        total, m_b = self.n + b, float(x.mean())
        delta = m_b - self.mean
        self.m2 += float((x - m_b).pow(2).sum()) + delta * delta * (self.n * b / total)
        self.mean += delta * (b / total)
        self.n = total

    @property
    def sd(self) -> float:
        return math.sqrt(self.m2 / (self.n - 1)) if self.n > 1 else math.nan


# --------------------------------------------------------------------------------------------- reports


@dataclass
class VarianceReport:
    """Gradient-variance estimate from ``n`` per-sample gradients at fixed parameters.

    * ``trace``: (1/K) Σ‖g_k − ḡ‖², the headline estimate of tr Cov(g) (plug-in, divides by K).
    * ``trace_unbiased``: K/(K − 1) · ``trace``.
    * ``per_group``: plug-in trace of each parameter group; the values sum to ``trace``.
    * ``per_group_mean_grad_sq_norm``: ‖ḡ‖² restricted to each group; the values sum to ``mean_grad_sq_norm``.
    * ``mean_grad_sq_norm``: ‖ḡ‖², the squared norm of the full-loss gradient estimate. It is biased
      upward: E‖ḡ‖² = ‖E g‖² + tr Cov(g)/K.
    * ``mean_grad_sq_norm_unbiased``: ‖ḡ‖² − ``trace_unbiased``/K, unbiased for ‖E g‖² (may be negative).
      Near a stationary point (E g ≈ 0) ‖ḡ‖² is dominated by the tr Cov(g)/K term; compare the two.
    * ``normalised``: :func:`normalised_variance`, ``trace_unbiased`` / ``mean_grad_sq_norm_unbiased``: both
      parts unbiased, so near a stationary point it grows without bound instead of saturating at ≈ K as the
      plug-in ratio trace/‖ḡ‖² does (E‖ḡ‖² ≥ tr Cov(g)/K); ``math.inf`` when the unbiased ‖E g‖² estimate is
      ≤ 0 < trace (the mean gradient is not resolved from the noise), 0.0 when trace = 0 < ‖ḡ‖², ``None`` for
      0/0 (trace = 0 = ‖ḡ‖²: every per-sample gradient is zero, e.g. a zero-loss field; the ratio is undefined).
    * ``mean_loss``: (1/K) Σ ℓ_k, the Monte-Carlo CFM loss at these parameters.
    * ``n``: K, the number of per-sample gradients.
    * ``method``: how the gradients were computed: ``"closed_form"``, ``"autograd-vmap"``, ``"autograd-loop"``.
    * ``mean_grad``: ḡ per parameter name (float64 tensors of the parameter's shape).
    * ``loss_sd``: the sample standard deviation of the K per-sample losses, so ``mean_loss_se`` = loss_sd/√K is
      the Monte-Carlo standard error of ``mean_loss`` (NaN where the losses were not recorded).
    * ``trace_sd``: the sample standard deviation of d_k = ‖g_k − c‖², so ``trace_se`` = trace_sd/√K is the
      delta-method standard error of ``trace`` (the plug-in trace's influence function is ‖g − E g‖² − tr Cov(g)).
      c is the mean gradient of the first chunk of draws: ḡ itself when every draw fits one chunk, otherwise a
      centre within O(√(tr Cov/chunk)) of it, which can only add a term 4 (c − ḡ)ᵀ Cov (c − ḡ) of that order to
      the variance. NaN for the one-pass engine (:class:`FastVarianceReport`), whose ghost norms give ‖g_k‖²
      uncentred.
    """

    trace: float
    trace_unbiased: float
    per_group: dict[str, float]
    per_group_mean_grad_sq_norm: dict[str, float]
    mean_grad_sq_norm: float
    mean_grad_sq_norm_unbiased: float
    normalised: float | None
    mean_loss: float
    n: int
    method: str
    mean_grad: dict[str, Tensor] = field(repr=False)
    loss_sd: float = field(default=math.nan, kw_only=True)
    trace_sd: float = field(default=math.nan, kw_only=True)

    @property
    def mean_loss_se(self) -> float:
        """Monte-Carlo standard error of ``mean_loss``: ``loss_sd`` / √K."""
        return self.loss_sd / math.sqrt(self.n)

    @property
    def trace_se(self) -> float:
        """Delta-method standard error of the plug-in ``trace``: ``trace_sd`` / √K."""
        return self.trace_sd / math.sqrt(self.n)

    def minibatch_trace(self, batch_size: int) -> float:
        """tr Cov(∇ L_MC) = tr Cov(g) / B for a minibatch of B i.i.d. samples (plug-in ``trace``)."""
        return self.trace / check_positive_int("batch_size", batch_size)

    def statistic(self, name: Statistic) -> float:
        """One scalar field by name; ``normalised`` = None (0/0) is returned as NaN."""
        if name not in STATISTICS:
            raise ConfigError(f"unknown statistic {name!r}; choose one of {list(STATISTICS)}")
        value = getattr(self, name)
        return math.nan if value is None else float(value)

    def to_dict(self) -> dict[str, object]:
        """Every scalar field (``mean_grad`` left out), ready for :func:`flowvar.results.to_jsonable`."""
        return {
            "trace": self.trace, "trace_unbiased": self.trace_unbiased, "per_group": dict(self.per_group),
            "per_group_mean_grad_sq_norm": dict(self.per_group_mean_grad_sq_norm),
            "mean_grad_sq_norm": self.mean_grad_sq_norm,
            "mean_grad_sq_norm_unbiased": self.mean_grad_sq_norm_unbiased, "normalised": self.normalised,
            "mean_loss": self.mean_loss, "n": self.n, "method": self.method, "loss_sd": self.loss_sd,
            "trace_sd": self.trace_sd,
        }


@dataclass
class FastVarianceReport(VarianceReport):
    """A :class:`VarianceReport` from the fast engine, plus:

    * ``per_layer``: plug-in trace per module (parameter names without their last component);
    * ``elementwise``: {name: plug-in Var(g) per coordinate, (1/K) Σ_k g_k² − ḡ²} (parameter shape), or None;
    * ``fallback``: {name: reason} for parameters computed by the exact torch.func fallback;
    * ``rules``: {name: rule} for every parameter.
    """

    per_layer: dict[str, float] = field(default_factory=dict)
    elementwise: dict[str, Tensor] | None = field(default=None, repr=False)
    fallback: dict[str, str] = field(default_factory=dict)
    rules: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, object]:
        """The scalar fields of :meth:`VarianceReport.to_dict` plus ``per_layer``, ``fallback`` and ``rules``."""
        out = super().to_dict()
        out.update(per_layer=dict(self.per_layer), fallback=dict(self.fallback), rules=dict(self.rules))
        return out


@dataclass
class TProfile:
    """Gradient variance conditional on t, one equal-width bin of [lo, hi] at a time.

    ``edges``: (n_bins + 1,); ``centres``, ``traces``, ``mean_grad_sq_norms``, ``mean_losses``: (n_bins,).
    ``traces[b]`` estimates tr Cov(g | t ∈ bin b) from ``n_per_bin`` draws with t ~ U(bin b): the plug-in
    (1/n) Σ_i ‖g_i − ḡ‖², biased low by the factor (n − 1)/n; the unbiased value of bin b is
    ``reports[b].trace_unbiased`` (the engine's and the monitor's per-bin traces are the unbiased ones).

    Law of total variance over the equally likely bins: tr Cov(g) = E_b[tr Cov(g | b)] + tr Cov_b(E[g | b]).
    ``within`` = mean of ``traces``; ``between`` = (1/n_bins) Σ_b ‖ḡ_b − ḡ‖² with ḡ the mean of the bin means;
    ``total`` = within + between equals (to rounding) the plug-in trace of all bins' draws pooled, a
    stratified estimate of the unconditional tr Cov(g) for t ~ U(lo, hi).
    """

    edges: np.ndarray
    centres: np.ndarray
    traces: np.ndarray
    mean_grad_sq_norms: np.ndarray
    mean_losses: np.ndarray
    n_per_bin: int
    within: float
    between: float
    total: float
    reports: list[VarianceReport] = field(repr=False)

    def to_dict(self) -> dict[str, object]:
        """Scalar and array fields (``reports`` left out)."""
        return {"edges": self.edges, "centres": self.centres, "traces": self.traces,
                "mean_grad_sq_norms": self.mean_grad_sq_norms, "mean_losses": self.mean_losses,
                "n_per_bin": self.n_per_bin, "within": self.within, "between": self.between, "total": self.total}


@dataclass
class BinStats:
    """Per-segment (t-bin) statistics of one batch. Arrays have shape (n_bins,).

    ``edges`` (n_bins + 1,) when the segments are t-bins; ``counts`` n_k; ``mean_loss`` (1/n_k) Σ_{i∈k} ℓ_i
    (NaN without losses or for an empty bin); ``mean_sq_norm`` (1/n_k) Σ_{i∈k} ‖g_i‖²; ``trace`` the
    unbiased tr Cov(g | bin k) = n_k/(n_k − 1) · [(1/n_k) Σ_{i∈k} ‖g_i‖² − ‖ḡ_k‖²] (NaN when n_k < 2). The bin
    counts n_k of a batch are small and random, so the plug-in's bias factor (n_k − 1)/n_k would differ from
    bin to bin (a bin of 3 samples reads 1/3 low) and bend the profile; the correction removes it.
    """

    edges: np.ndarray | None
    counts: np.ndarray
    mean_loss: np.ndarray
    mean_sq_norm: np.ndarray
    trace: np.ndarray

    def to_dict(self) -> dict[str, object]:
        """Every field as plain lists (``edges`` None when the segments were not t-bins)."""
        return {"edges": None if self.edges is None else self.edges.tolist(), "counts": self.counts.tolist(),
                "mean_loss": self.mean_loss.tolist(), "mean_sq_norm": self.mean_sq_norm.tolist(),
                "trace": self.trace.tolist()}
