"""Per-sample gradient statistics of a batch (:class:`BatchGradStats`, what the engine returns) and their
float64 raw moments over many batches (:class:`MomentAccumulator`, which yields a
:class:`~flowvar.variance.report.FastVarianceReport`).

With g_i the per-sample gradients of a batch of B samples:
tr Cov(g) = (1/B) Σ_i ‖g_i‖² − ‖ḡ‖² (plug-in) and Var(g)_j = (1/B) Σ_i g_ij² − ḡ_j², from sums the engine
accumulates without materialising all B per-sample gradients at once. The trace is a difference of raw
moments, so its relative rounding error is about eps·‖ḡ‖²/trace.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from flowvar.errors import ConfigError, DataError
from flowvar.variance.records import F64
from flowvar.variance.report import (
    BinStats,
    FastVarianceReport,
    GroupBy,
    RunningMoments,
    group_name,
    normalised_variance,
)

__all__ = ["BatchGradStats", "MomentAccumulator"]


@dataclass
class BatchGradStats:
    """Per-sample gradient statistics of one batch (float64, per-sample gradients g_i = ∇ℓ_i).

    * ``n``: B. ``sq_norms``: (B,) ‖g_i‖² over all parameters; ``param_sq_norms``: {name: (B,)}.
    * ``mean_grad``: {name: ḡ = (1/B) Σ_i g_i} (parameter shape; the parameter's dtype when it comes from the
      backward pass, float64 when a rule computed it); ``grad_sum`` (property): {name: Σ_i g_i} in float64.
    * ``sq_sum``: {name: Σ_i g_i ⊙ g_i} or None.
    * ``seg_sq_norms``: {name: (n_seg,)} ‖Σ_{i∈k} g_i‖² per segment k, or None; ``segments``: (B,) segment
      of each sample.
    * ``losses``: (B,) ℓ_i when given. ``rules``: {name: how it was computed}; ``fallback``: {name: why the
      fallback was used} (a subset of ``rules``).
    * ``probe``: what the per-sample probe of a validating pass found (``compute(validate=True)``, the monitor's
      first log: :mod:`flowvar.variance.probe`): "samples 0, 7: 12 parameter tensors agree with an exact
      recomputation", those that did not (then measured through the whole model, and in ``fallback``), or
      "not run: <why>"; None on a pass that was not validated.
    """

    n: int
    sq_norms: Tensor
    param_sq_norms: dict[str, Tensor]
    mean_grad: dict[str, Tensor]
    sq_sum: dict[str, Tensor] | None
    seg_sq_norms: dict[str, Tensor] | None
    segments: Tensor | None
    n_segments: int
    losses: Tensor | None
    rules: dict[str, str]
    fallback: dict[str, str]
    edges: np.ndarray | None = None
    probe: str | None = None

    @property
    def grad_sum(self) -> dict[str, Tensor]:
        """{name: Σ_i g_i} in float64."""
        return {name: m.to(F64) * self.n for name, m in self.mean_grad.items()}

    @property
    def mean_grad_sq_norm(self) -> float:
        """‖ḡ‖² with ḡ = (1/B) Σ_i g_i."""
        return sum(_sq_norm(m) for m in self.mean_grad.values())

    @property
    def trace(self) -> float:
        """Plug-in tr Cov(g) = (1/B) Σ_i ‖g_i‖² − ‖ḡ‖² (clamped at 0 against rounding)."""
        return max(float(self.sq_norms.sum()) / self.n - self.mean_grad_sq_norm, 0.0)

    def report(self, group_by: GroupBy = "parameter", method: str = "fast") -> FastVarianceReport:
        """This batch as a :class:`FastVarianceReport` (K = B)."""
        acc = MomentAccumulator()
        acc.update(self)
        return acc.report(group_by, method)

    def summary(self, with_bins: bool = False) -> dict[str, Any]:
        """The scalars of :meth:`report` for this batch, cheaply (no per-parameter tensors are built).

        ``trace`` (plug-in, per-parameter parts clamped at 0 as in the report), ``trace_unbiased`` = B/(B − 1)
        trace, ``mean_grad_sq_norm`` ‖ḡ‖², ``normalised`` (:func:`~flowvar.variance.normalised_variance`: both
        parts unbiased; 0.0 when trace = 0 < ‖ḡ‖², None for 0/0, inf when the mean gradient is not resolved
        from the noise),
        ``mean_sq_norm`` (1/B) Σ_i ‖g_i‖², ``per_layer`` {module: trace}; ``with_bins``: also ``bins``, the
        :meth:`bins` statistics (every number comes over in one transfer).
        """
        B = self.n
        if B < 2:
            raise DataError(f"a variance needs at least 2 per-sample gradients, got {B}; use a larger batch")
        names = list(self.mean_grad)
        norms = torch._foreach_norm([self.mean_grad[n] for n in names])  # one kernel; ‖ḡ_p‖ in ḡ_p's dtype
        same = all(x.dtype == norms[0].dtype for x in norms)
        parts = [(torch.stack(norms).to(F64) if same else torch.stack([x.to(F64) for x in norms])).square(),
                 torch.stack([self.param_sq_norms[n] for n in names]).sum(1)]
        if with_bins:
            parts += self._bin_parts()
        values = torch.cat(parts).tolist()
        n = len(names)
        msqs, sums = values[:n], values[n:2 * n]
        trace = msq_total = 0.0
        per_layer: dict[str, float] = {}
        for name, msq, sq_sum in zip(names, msqs, sums):
            tr = max(sq_sum / B - msq, 0.0)
            layer = _module_of(name)
            per_layer[layer] = per_layer.get(layer, 0.0) + tr
            trace += tr
            msq_total += msq
        normalised = normalised_variance(trace, msq_total, B)
        out = {"trace": trace, "trace_unbiased": trace * B / (B - 1), "mean_grad_sq_norm": msq_total,
               "normalised": normalised, "mean_sq_norm": sum(sums) / B, "per_layer": per_layer}
        if with_bins:
            out["bins"] = self._bin_stats(values[2 * n:])
        return out

    def bins(self) -> BinStats:
        """Per-segment statistics (needs ``segments``: call
        :meth:`~flowvar.variance.engine.GradNormEngine.compute` with ``t_bins``).

        The conditional traces are NaN when ``compute(..., bin_traces=False)`` skipped the per-segment sums.
        """
        return self._bin_stats(torch.cat(self._bin_parts()).tolist())

    def _bin_parts(self) -> list[Tensor]:
        """Flat float64 tensors: per segment the count, Σ ‖g_i‖², Σ ℓ_i (NaN without losses) and, with the per-segment
        sums, Σ_p ‖Σ_{i∈k} g_i,p‖²."""
        if self.segments is None:
            raise ConfigError("no segments were requested; pass t and t_bins (or segments) to compute()")
        losses = self.losses if self.losses is not None else torch.full_like(self.sq_norms, math.nan)
        rows = torch.stack([torch.ones_like(self.sq_norms), self.sq_norms, losses.to(self.sq_norms.device, F64)])
        parts = [rows.new_zeros(3, self.n_segments).index_add_(1, self.segments, rows).view(-1)]  # one scatter
        if self.seg_sq_norms is not None:
            parts.append(torch.stack(list(self.seg_sq_norms.values())).sum(0))
        return parts

    def _bin_stats(self, values: list[float]) -> BinStats:
        """:class:`BinStats` from the numbers of :meth:`_bin_parts` (plain arithmetic on n_seg values)."""
        k = self.n_segments
        counts, sq, loss = values[:k], values[k:2 * k], values[2 * k:3 * k]
        nan = math.nan
        mean_sq = [s / c if c else nan for s, c in zip(sq, counts)]
        mean_loss = [x / c if c else nan for x, c in zip(loss, counts)]
        if len(values) > 3 * k:  # n_k/(n_k − 1) [(1/n_k) Σ‖g_i‖² − ‖ḡ_k‖²], ḡ_k = (1/n_k) Σ_{i∈k} g_i
            trace = [max(m - g / (c * c), 0.0) * c / (c - 1) if c >= 2 else nan
                     for m, g, c in zip(mean_sq, values[3 * k:], counts)]
        else:
            trace = [nan] * k
        return BinStats(edges=self.edges, counts=np.array(counts, dtype=np.int64), mean_loss=np.array(mean_loss),
                        mean_sq_norm=np.array(mean_sq), trace=np.array(trace))



class MomentAccumulator:
    """Float64 raw moments over batches: n, Σ_i ‖g_{i,p}‖², Σ_i g_{i,p}, Σ_i g_{i,p}² and Σ_i ℓ_i.

    ``report`` turns them into a :class:`FastVarianceReport`: per parameter p, trace_p = Σ‖g_{i,p}‖²/K − ‖ḡ_p‖²
    (clamped at 0), ``trace`` = Σ_p trace_p, element-wise Var = Σ g²/K − ḡ² (clamped at 0).
    """

    def __init__(self) -> None:
        self.n = 0
        self.loss_sum = 0.0
        self.losses = RunningMoments()  # the per-sample losses' spread, for loss_sd
        self.has_losses = True
        self.sq_norm_sum: dict[str, float] = {}
        self.grad_sum: dict[str, Tensor] = {}
        self.sq_sum: dict[str, Tensor] | None = {}
        self.rules: dict[str, str] = {}
        self.fallback: dict[str, str] = {}

    def update(self, stats: BatchGradStats) -> None:
        """Merge one batch."""
        if self.n and set(stats.mean_grad) != set(self.grad_sum):
            raise ConfigError(f"batches disagree on the parameters: {sorted(stats.mean_grad)} vs "
                              f"{sorted(self.grad_sum)}")
        for name, s in stats.grad_sum.items():
            self.grad_sum[name] = self.grad_sum[name] + s if name in self.grad_sum else s
            self.sq_norm_sum[name] = self.sq_norm_sum.get(name, 0.0) + float(stats.param_sq_norms[name].sum())
        if stats.sq_sum is None:
            self.sq_sum = None
        elif self.sq_sum is not None:
            for name, s in stats.sq_sum.items():
                self.sq_sum[name] = self.sq_sum[name] + s if name in self.sq_sum else s.clone()
        if stats.losses is None:
            self.has_losses = False
        else:
            self.loss_sum += float(stats.losses.to(F64).sum())
            self.losses.update(stats.losses)
        self.rules.update(stats.rules)
        self.fallback.update(stats.fallback)
        self.n += stats.n

    def report(self, group_by: GroupBy = "parameter", method: str = "fast") -> FastVarianceReport:
        """The :class:`FastVarianceReport` of every batch merged so far (needs K >= 2 samples in all)."""
        K = self.n
        if K < 2:
            raise DataError(f"a variance needs at least 2 per-sample gradients, got {K}; draw more samples")
        mean = {name: s / K for name, s in self.grad_sum.items()}
        msq = {name: float(m.pow(2).sum()) for name, m in mean.items()}
        per_param = {name: max(self.sq_norm_sum[name] / K - msq[name], 0.0) for name in mean}
        per_group: dict[str, float] = {}
        per_group_sq: dict[str, float] = {}
        per_layer: dict[str, float] = {}
        for name, tr in per_param.items():
            g = group_name(name, group_by)
            per_group[g] = per_group.get(g, 0.0) + tr
            per_group_sq[g] = per_group_sq.get(g, 0.0) + msq[name]
            layer = group_name(name, "module")
            per_layer[layer] = per_layer.get(layer, 0.0) + tr
        trace = sum(per_param.values())
        sq = sum(msq.values())
        trace_unbiased = trace * K / (K - 1)
        normalised = normalised_variance(trace, sq, K)
        elementwise = None
        if self.sq_sum is not None and self.sq_sum:
            elementwise = {name: (s / K - mean[name].pow(2)).clamp_min(0) for name, s in self.sq_sum.items()}
        return FastVarianceReport(
            trace=trace, trace_unbiased=trace_unbiased, per_group=per_group, per_group_mean_grad_sq_norm=per_group_sq,
            mean_grad_sq_norm=sq, mean_grad_sq_norm_unbiased=sq - trace_unbiased / K, normalised=normalised,
            mean_loss=self.loss_sum / K if self.has_losses else math.nan, n=K, method=method, mean_grad=mean,
            per_layer=per_layer, elementwise=elementwise, fallback=dict(self.fallback), rules=dict(self.rules),
            loss_sd=self.losses.sd if self.has_losses else math.nan)


_MODULE_OF: dict[str, str] = {}


def _module_of(name: str) -> str:
    """``group_name(name, "module")``, memoised (called for every parameter at every logged step)."""
    out = _MODULE_OF.get(name)
    if out is None:
        out = _MODULE_OF[name] = group_name(name, "module")
    return out


def _sq_norm(x: Tensor) -> float:
    """‖x‖² accumulated in float64 (no float64 copy of x)."""
    return float(torch.linalg.vector_norm(x, dtype=F64)) ** 2
