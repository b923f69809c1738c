"""Exact per-sample gradient statistics from one forward and one backward pass (fast engine, issue 4).

Setting. A batch of B samples with per-sample losses ℓ_i (for flow matching ℓ_i = ‖u_i − v_θ(x_t,i, t_i)‖²,
:func:`flowvar.loss.per_sample_loss`) and the reduced loss L = Σ_i ℓ_i (``reduction="sum"``) or
L = (1/B) Σ_i ℓ_i (``"mean"``). The per-sample gradient is g_i = ∇_θ ℓ_i, **whatever the reduction**: a
backward pass of the mean-reduced loss hands every layer δ_i/B instead of δ_i, and the engine multiplies
by B again (scale s = B for ``"mean"``, s = 1 for ``"sum"``).

What the engine returns (:class:`BatchGradStats`), per parameter tensor θ_p:

* per-sample squared norms ‖g_{i,p}‖², shape (B,), float64;
* the mean gradient ḡ_p = (1/B) Σ_i g_{i,p} (from the backward pass itself, or from the layer rule);
* optionally the element-wise sum of squares Σ_i g_{i,p} ⊙ g_{i,p} (element-wise variance);
* optionally per-segment squared norms ‖Σ_{i ∈ S_k} g_{i,p}‖² (segments = t-bins: the conditional variance
  profile tr Cov(g | t-bin)).

From these, tr Cov(g) = (1/B) Σ_i ‖g_i‖² − ‖ḡ‖² (plug-in) and Var(g)_j = (1/B) Σ_i g_ij² − ḡ_j² follow
without ever materialising all B per-sample gradients at once.

How. Forward hooks capture each parametrised module's inputs; tensor hooks on its outputs capture
δ = ∂L/∂output; tensor hooks on the parameters capture this backward's gradient. After the backward
pass each module's parameters go through a *rule*:

* ``nn.Linear``, input (B, in): g_i = δ_i a_iᵀ, so ‖g_i‖² = ‖δ_i‖² ‖a_i‖² and Σ_i g_i² = (δ²)ᵀ(a²).
  Input (B, S, in) (sequence or extra dims), or a module called several times per forward pass (the calls
  are concatenated along S): g_i = Σ_s δ_is a_isᵀ, and ‖g_i‖² = Σ_{s,s'} (a_is·a_is')(δ_is·δ_is') (the
  "ghost norm", cost S²(in + out) per sample) or, when cheaper or when element-wise sums are wanted,
  g_i is materialised chunk by chunk (cost S·in·out per sample). Bias: g_i = Σ_s δ_is.
* ``nn.Conv2d`` (any stride, padding, dilation, groups, padding mode): the same with a_is the input patch
  at output position s, per group: ghost norms on ``F.unfold`` patches when the feature map is small, else
  per-sample weight gradients materialised chunk by chunk by one convolution backward with the batch
  folded into the groups, or one batched matmul per kernel offset (whichever is faster for the shape,
  timed once).
* ``nn.GroupNorm``, ``nn.LayerNorm``, ``nn.RMSNorm``: g_i(weight) = Σ_positions δ_i ⊙ x̂_i with x̂ the
  normalised input (recomputed), g_i(bias) = Σ_positions δ_i.
* ``nn.Embedding``: g_i(weight) has row r equal to Σ_{s: idx_is = r} δ_is (rows summed per sample with a
  scatter over unique (sample, index) keys; ``padding_idx`` rows get nothing).
* :class:`FourierTimeEmbedding` (the learnable time embedding [cos 2πtω, sin 2πtω]):
  g_i(ω) = 2π t_i (δ_i^sin ⊙ cos 2πt_iω − δ_i^cos ⊙ sin 2πt_iω).
* Anything else with parameters (a custom module, a parameter shared by several modules, a rule that
  declines a configuration) goes to the **fallback**: exact per-sample vector-Jacobian products of that
  module alone, g_i = Σ_calls J_θ(module at x_i)ᵀ δ_i, computed with ``torch.func.vmap(vjp)`` in chunks
  (a loop over single samples when the module has data-dependent control flow). The fallback recomputes
  the module's output and checks it against the captured one, so a module that is random (dropout) or
  couples samples is reported rather than mis-measured. :attr:`BatchGradStats.fallback` names every
  parameter that went through it and why. No parameter is ever skipped.

Assumptions (checked where possible): each ℓ_i depends on sample i only — no batch statistics
(``BatchNorm`` in training mode and ``Embedding(scale_grad_by_freq=True)`` raise :class:`ConfigError`);
the backward pass is of L alone (no extra loss terms); parameters are used inside their own module's
forward. ``validate=True`` compares the rules' Σ_i g_i with the backward pass's gradient, which catches
extra loss terms and parameters used outside their module. The reduction cannot be read off the backward
pass (δ/B from a mean looks like δ from a sum of smaller losses): it must be declared.

Numerics: per-sample quantities are computed in the parameter dtype and accumulated in float64. The
trace is a difference of raw moments, so its relative rounding error is about eps·‖ḡ‖²/trace.
"""

from __future__ import annotations

import math
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, vjp, vmap
from torch.utils._pytree import tree_flatten, tree_unflatten

from flowvar.errors import ConfigError, DataError, ShapeError, check_positive_int
from flowvar.interpolants import PathSample
from flowvar.loss import per_sample_loss
from flowvar.variance import (
    GroupBy,
    VarianceReport,
    _is_vmap_control_flow_error,
    _path_chunks,
    group_name,
    normalised_variance,
    variance_parameters,
)

Reduction = Literal["mean", "sum"]
REDUCTIONS: tuple[str, ...] = ("mean", "sum")
F64 = torch.float64

#: Default memory budget (bytes) of one materialised chunk inside a rule (per-sample gradients of a layer,
#: unfolded patches, Gram matrices) and of one fallback chunk. Peak extra memory is O(this), not O(B·P).
DEFAULT_CHUNK_BYTES = 1 << 26


# --------------------------------------------------------------------------------------------- modules


class FourierTimeEmbedding(nn.Module):
    """Learnable Fourier features of time: t (B,) or (B, 1) → [cos 2πtω, sin 2πtω] of shape (B, 2n).

    ``frequencies`` ω (n,) start as N(0, scale²) draws (Gaussian Fourier features). The engine has an exact
    per-sample rule for ω (module docstring); ``learnable=False`` makes ω a buffer.
    """

    def __init__(self, n_frequencies: int, scale: float = 1.0, learnable: bool = True,
                 generator: torch.Generator | None = None, dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        n = check_positive_int("n_frequencies", n_frequencies)
        if not math.isfinite(scale) or scale <= 0:
            raise ConfigError(f"scale must be a finite number > 0, got {scale!r}")
        omega = scale * torch.randn(n, generator=generator, dtype=dtype)
        if learnable:
            self.frequencies = nn.Parameter(omega)
        else:
            self.register_buffer("frequencies", omega)

    def forward(self, t: Tensor) -> Tensor:
        t = _time_vector(t)
        angle = 2 * math.pi * t[:, None].to(self.frequencies.dtype) * self.frequencies
        return torch.cat([angle.cos(), angle.sin()], dim=1)


def _time_vector(t: Tensor) -> Tensor:
    if t.ndim == 2 and t.shape[1] == 1:
        return t[:, 0]
    if t.ndim != 1:
        raise ShapeError(f"FourierTimeEmbedding expects t of shape (B,) or (B, 1), got {tuple(t.shape)}")
    return t


# --------------------------------------------------------------------------------------------- results


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
        return {"edges": None if self.edges is None else self.edges.tolist(), "counts": self.counts.tolist(),
                "mean_loss": self.mean_loss.tolist(), "mean_sq_norm": self.mean_sq_norm.tolist(),
                "trace": self.trace.tolist()}


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
        parts unbiased; None when the trace is 0, inf when the mean gradient is not resolved from the noise),
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
        """Per-segment statistics (needs ``segments``: call :meth:`GradNormEngine.compute` with ``t_bins``).

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


@dataclass
class FastVarianceReport(VarianceReport):
    """A :class:`~flowvar.variance.VarianceReport` from the fast engine, plus:

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
        out = super().to_dict()
        out.update(per_layer=dict(self.per_layer), fallback=dict(self.fallback), rules=dict(self.rules))
        return out


class MomentAccumulator:
    """Float64 raw moments over batches: n, Σ_i ‖g_{i,p}‖², Σ_i g_{i,p}, Σ_i g_{i,p}² and Σ_i ℓ_i.

    ``report`` turns them into a :class:`FastVarianceReport`: per parameter p, trace_p = Σ‖g_{i,p}‖²/K − ‖ḡ_p‖²
    (clamped at 0), ``trace`` = Σ_p trace_p, element-wise Var = Σ g²/K − ḡ² (clamped at 0).
    """

    def __init__(self) -> None:
        self.n = 0
        self.loss_sum = 0.0
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
        self.rules.update(stats.rules)
        self.fallback.update(stats.fallback)
        self.n += stats.n

    def report(self, group_by: GroupBy = "parameter", method: str = "fast") -> FastVarianceReport:
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
            per_layer=per_layer, elementwise=elementwise, fallback=dict(self.fallback), rules=dict(self.rules))


# --------------------------------------------------------------------------------------------- internals


@dataclass
class _Call:
    """One recorded forward call of a module: its inputs, its output leaves and ∂L/∂(output leaves)."""

    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    outputs: list[Any]
    grads: list[Tensor | None]
    #: for 2-D ``nn.Linear`` calls: ‖a_i‖ of the input rows (computed in the forward hook, while the input is in
    #: cache) and ‖δ_i‖ of each output gradient (in the gradient hook; None when several gradients were summed)
    in_norm: Tensor | None = None
    grad_norms: list[Tensor | None] | None = None

    def grad(self, k: int = 0) -> Tensor:
        g = self.grads[k]
        return torch.zeros_like(self.outputs[k]) if g is None else g


@dataclass
class _Ctx:
    """What one compute() call wants, shared by every rule."""

    B: int
    want_grad_sum: set[str]
    want_sq_sum: bool
    segments: Tensor | None
    n_segments: int
    chunk_bytes: int
    fallback_chunk: int
    device: torch.device | str = "cpu"  # of the measured parameters: every accumulator lives there
    _pad: tuple[Tensor, int] | None = None

    def padded(self, x: Tensor) -> Tensor:
        """(B, F) → (n_seg, n_max, F): the rows of each segment, zero-padded to the largest segment."""
        if self._pad is None:
            assert self.segments is not None
            order = torch.argsort(self.segments, stable=True)
            counts = torch.bincount(self.segments, minlength=self.n_segments)
            n_max = int(counts.max())
            starts = torch.cumsum(counts, 0) - counts
            seg_sorted = self.segments[order]
            slot = seg_sorted * n_max + torch.arange(self.B, device=self.device) - starts[seg_sorted]  # sorted slots
            source = torch.full((self.n_segments * n_max,), self.B, dtype=torch.long, device=self.device)  # B: zero row
            source[slot] = order
            self._pad = (source, n_max)
        source, n_max = self._pad
        rows = torch.cat([x, x.new_zeros(1, x.shape[1])]).index_select(0, source)
        return rows.view(self.n_segments, n_max, x.shape[1])

    def chunks(self, bytes_per_sample: int) -> Iterator[tuple[int, int]]:
        """[start, stop) sample ranges whose materialised size stays within ``chunk_bytes``."""
        size = max(1, min(self.B, self.chunk_bytes // max(1, bytes_per_sample)))
        for start in range(0, self.B, size):
            yield start, min(start + size, self.B)


class _Collector:
    """Float64 accumulators of one parameter for one batch (raw δ; :meth:`finish` applies the scale s)."""

    def __init__(self, name: str, shape: torch.Size, ctx: _Ctx, sq_norms: Tensor | None = None) -> None:
        self.name, self.shape, self.ctx = name, shape, ctx
        # ``sq_norms`` given: a row of the caller's (n_params, B) buffer, which the caller scales (finish() does not)
        self._scale_sq_norms = sq_norms is None
        dev = ctx.device
        self.sq_norms = torch.zeros(ctx.B, dtype=F64, device=dev) if sq_norms is None else sq_norms
        self.grad_sum = torch.zeros(shape, dtype=F64, device=dev) if name in ctx.want_grad_sum else None
        self.sq_sum = torch.zeros(shape, dtype=F64, device=dev) if ctx.want_sq_sum else None
        self.wants_segments = ctx.segments is not None
        self.seg_sq = torch.zeros(ctx.n_segments, dtype=F64, device=dev) if self.wants_segments else None
        self._seg_sum: Tensor | None = None

    def seg_sum(self) -> Tensor:
        """(n_seg, *shape) float64 running per-segment sums (squared into ``seg_sq`` by :meth:`finish`)."""
        if self._seg_sum is None:
            self._seg_sum = torch.zeros((self.ctx.n_segments, *self.shape), dtype=F64, device=self.ctx.device)
        return self._seg_sum

    def add_per_sample(self, start: int, g: Tensor) -> None:
        """Materialised per-sample gradients of samples [start, start + b): (b, *shape), each sample once."""
        b = g.shape[0]
        flat = g.reshape(b, -1)
        self.sq_norms[start:start + b] = _row_sq_norms(flat)
        if self.grad_sum is not None:
            self.grad_sum += flat.sum(0).to(F64).view(self.shape)
        if self.sq_sum is not None:
            self.sq_sum += flat.pow(2).sum(0).to(F64).view(self.shape)
        if self.wants_segments:
            assert self.ctx.segments is not None
            part = flat.new_zeros(self.ctx.n_segments, flat.shape[1])
            part.index_add_(0, self.ctx.segments[start:start + b], flat)
            seg_sum = self.seg_sum()
            seg_sum += part.to(F64).view_as(seg_sum)

    def finish(self, scale: float) -> None:
        if self._scale_sq_norms:
            self.sq_norms *= scale ** 2
        if self.grad_sum is not None:
            self.grad_sum *= scale
        if self.sq_sum is not None:
            self.sq_sum *= scale ** 2
        if self.seg_sq is not None:
            if self._seg_sum is not None:
                self.seg_sq += self._seg_sum.reshape(self.ctx.n_segments, -1).pow(2).sum(1)
                self._seg_sum = None
            self.seg_sq *= scale ** 2


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


def _row_sq_norms(x: Tensor) -> Tensor:
    """‖x_i‖² of each row of a (b, n) tensor, float64 (a fused norm kernel: no squared copy of x)."""
    return torch.linalg.vector_norm(x, dim=1).to(F64).square()


def _unique_params(module: nn.Module) -> dict[str, nn.Parameter]:
    """The module's direct parameters (not its children's), by local name."""
    return {k: p for k, p in module._parameters.items() if p is not None}


# --------------------------------------------------------------------------------------------- rules


class Rule(ABC):
    """Exact per-sample statistics of a module type's direct parameters from its captured calls.

    ``accumulate(module, calls, collectors, ctx)``: ``collectors`` holds one :class:`_Collector` per wanted
    local parameter name; the rule must set every sample's squared norm exactly once (summing over calls
    first) and fill the sums the collectors ask for. δ is raw ∂L/∂output (the scale is applied later).
    """

    name: str = "rule"

    def unsupported(self, module: nn.Module) -> str | None:
        """Why this rule cannot handle ``module`` (it then goes to the fallback), or None."""
        return None

    @abstractmethod
    def accumulate(self, module: nn.Module, calls: list[_Call], collectors: dict[str, _Collector], ctx: _Ctx) -> str:
        """Fill ``collectors``; return a label for the report (e.g. ``"linear"``, ``"conv2d-ghost"``)."""


def _batched(x: Tensor, B: int, what: str) -> Tensor:
    if x.ndim == 0 or x.shape[0] != B:
        raise ShapeError(f"{what} has shape {tuple(x.shape)} but the batch has {B} samples; per-sample gradients "
                         f"need every module input to carry the batch in its first dimension")
    return x


def _seq_linear(provider: Callable[[int, int], tuple[Tensor, Tensor]], G: int, S: int, K: int, O: int,
                collectors: dict[str, _Collector], ctx: _Ctx, weight_view: Callable[[Tensor], Tensor],
                bias: bool, itemsize: int) -> str:
    """Per-sample statistics of g_i[g] = Σ_s D_igs A_igsᵀ (weight) and Σ_s D_igs (bias).

    ``provider(start, stop)`` → A (b, G, S, K), D (b, G, S, O). ``weight_view`` maps (b, G, O, K) to the
    parameter's (b, *shape). Ghost norms when cheaper and no element-wise sums are wanted; else materialise.
    """
    w = collectors.get("weight")
    ghost = w is not None and not ctx.want_sq_sum and S * S * (K + O) < S * K * O
    per_sample_bytes = itemsize * G * (S * S * 2 if ghost else O * K) + itemsize * G * S * (K + O)
    for start, stop in ctx.chunks(per_sample_bytes):
        A, D = provider(start, stop)
        b = stop - start
        if w is not None:
            if ghost:
                gram = (A @ A.transpose(-1, -2)) * (D @ D.transpose(-1, -2))  # (b, G, S, S)
                w.sq_norms[start:stop] = gram.sum((1, 2, 3)).to(F64)
                if w.grad_sum is not None:
                    w.grad_sum += weight_view(torch.einsum("bgso,bgsk->gok", D, A)[None])[0].to(F64)
                if w.wants_segments:
                    assert ctx.segments is not None
                    seg = ctx.segments[start:stop]
                    for k in range(ctx.n_segments):
                        m = seg == k
                        if bool(m.any()):
                            part = torch.einsum("bgso,bgsk->gok", D[m], A[m])[None]
                            w.seg_sum()[k] += weight_view(part)[0].to(F64)
            else:
                w.add_per_sample(start, weight_view(D.transpose(-1, -2) @ A))
        if bias and "bias" in collectors:
            collectors["bias"].add_per_sample(start, D.sum(2).reshape(b, G * O))
    return "ghost" if ghost else "materialised"


def _segment_outer_sq_norms(a: Tensor, d: Tensor, ctx: _Ctx) -> Tensor:
    """‖Σ_{i∈k} d_i a_iᵀ‖² for every segment k, float64 (n_seg,); a (B, K), d (B, O).

    Thin layers (min(K, O) ≤ 8): the per-segment sums Σ_{i∈k} d_i a_iᵀ by one scatter-add of the outer products
    (cost B·K·O; chunked to ``ctx.chunk_bytes``). Otherwise all
    segments at once on zero-padded blocks (n_seg, n_max, ·): the Gram form Σ_{i,j∈k} (a_i·a_j)(d_i·d_j)
    (cost n_seg·n_max²·(K + O)) or the per-segment products (cost n_seg·n_max·K·O), whichever is cheaper.
    """
    assert ctx.segments is not None
    K, O = a.shape[1], d.shape[1]
    if min(K, O) <= 8:
        dtype = torch.promote_types(a.dtype, d.dtype)
        sums = torch.zeros(ctx.n_segments, O * K, dtype=dtype, device=d.device)
        for start, stop in ctx.chunks(O * K * dtype.itemsize):
            outer = (d[start:stop, :, None] * a[start:stop, None, :]).reshape(stop - start, O * K)
            sums.index_add_(0, ctx.segments[start:stop], outer)
        return torch.linalg.vector_norm(sums, dim=1, dtype=F64).square()
    ap, dp = ctx.padded(a), ctx.padded(d)
    if ap.shape[1] * (K + O) < K * O:
        return ((ap @ ap.transpose(1, 2)) * (dp @ dp.transpose(1, 2))).sum((1, 2)).to(F64)
    return torch.linalg.vector_norm(dp.transpose(1, 2) @ ap, dim=(1, 2), dtype=F64).square()


class LinearRule(Rule):
    """``nn.Linear``: 2-D inputs by outer-product norms; inputs with extra dims or several calls by
    :func:`_seq_linear` (ghost norm or chunked materialisation, whichever costs fewer flops)."""

    name = "linear"

    def accumulate(self, module: nn.Module, calls: list[_Call], collectors: dict[str, _Collector], ctx: _Ctx) -> str:
        assert isinstance(module, nn.Linear)
        B, K, O = ctx.B, module.in_features, module.out_features
        if len(calls) == 1 and calls[0].args[0].ndim == 2:  # the common case: no reshapes or concatenation
            c = calls[0]
            self._two_d(_batched(c.args[0], B, "the Linear input"), c.grad(), collectors, ctx, c.in_norm,
                        None if c.grad_norms is None else c.grad_norms[0])
            return "linear"
        A_parts = [_batched(c.args[0], B, "the Linear input").reshape(B, -1, K) for c in calls]
        D_parts = [c.grad().reshape(B, -1, O) for c in calls]
        A = A_parts[0] if len(A_parts) == 1 else torch.cat(A_parts, 1)
        D = D_parts[0] if len(D_parts) == 1 else torch.cat(D_parts, 1)
        if A.shape[1] == 1:
            self._two_d(A[:, 0], D[:, 0], collectors, ctx)
            return "linear"
        S = A.shape[1]
        label = _seq_linear(lambda s, e: (A[s:e, None], D[s:e, None]), 1, S, K, O, collectors, ctx,
                            lambda g: g[:, 0], module.bias is not None, A.element_size())
        return f"linear-{label}"

    @staticmethod
    def _two_d(a: Tensor, d: Tensor, collectors: dict[str, _Collector], ctx: _Ctx, a_norm: Tensor | None = None,
               d_norm: Tensor | None = None) -> None:
        """``a_norm``, ``d_norm``: the row norms ‖a_i‖, ‖δ_i‖ when the hooks computed them already."""
        w = collectors.get("weight")
        if d_norm is None:
            d_norm = torch.linalg.vector_norm(d, dim=1)
        if w is not None:
            if a_norm is None:
                a_norm = torch.linalg.vector_norm(a, dim=1)
            w.sq_norms.copy_((d_norm * a_norm).square())  # ‖δ_i‖²‖a_i‖², to float64
            if w.grad_sum is not None:
                w.grad_sum += (d.T @ a).to(F64)
            if w.sq_sum is not None:
                w.sq_sum += (d.pow(2).T @ a.pow(2)).to(F64)
            if w.seg_sq is not None:
                w.seg_sq += _segment_outer_sq_norms(a, d, ctx)
        b = collectors.get("bias")
        if b is not None:
            if b.grad_sum is None and b.sq_sum is None and b.seg_sq is None:
                b.sq_norms.copy_(d_norm.square())
            elif b.grad_sum is None and b.sq_sum is None:  # + per-segment sums (what add_per_sample does, directly)
                assert ctx.segments is not None and b.seg_sq is not None
                b.sq_norms.copy_(d_norm.to(F64).square())
                part = d.new_zeros(ctx.n_segments, d.shape[1]).index_add_(0, ctx.segments, d)
                b.seg_sq += part.to(F64).pow(2).sum(1)
            else:
                b.add_per_sample(0, d)


class Conv2dRule(Rule):
    """``nn.Conv2d``: per group, g_i = Σ_l δ_il a_ilᵀ over output positions l, a_il the input patch at l.

    Few output positions (S²(K + O) < S·K·O, K = C/G·kh·kw, O = out/G) and no element-wise sums: the ghost
    norm on unfolded patches. Otherwise the per-sample weight gradients are materialised chunk by chunk,
    either as the weight gradient of one convolution with the batch folded into the groups (input
    (1, b·C, H, W), groups b·G) or by one batched matmul per kernel offset; both are exact, and the faster
    for a layer shape is picked by timing both on its first call (``F.unfold`` is much slower than either).
    """

    name = "conv2d"

    def __init__(self) -> None:
        self._fastest: dict[tuple[Any, ...], int] = {}

    def accumulate(self, module: nn.Module, calls: list[_Call], collectors: dict[str, _Collector], ctx: _Ctx) -> str:
        assert isinstance(module, nn.Conv2d)
        G = module.groups
        O = module.out_channels // G
        K = (module.in_channels // G) * module.kernel_size[0] * module.kernel_size[1]
        xs = []
        for c in calls:
            x = c.args[0]
            if x.ndim != 4:
                raise ShapeError(f"Conv2d input of shape {tuple(x.shape)} has no batch dimension; pass (B, C, H, W)")
            xs.append(self._padded(module, _batched(x, ctx.B, "the Conv2d input")))
        ds = [c.grad() for c in calls]
        S = sum(d.shape[2] * d.shape[3] for d in ds)
        w = collectors.get("weight")
        shape = module.weight.shape
        itemsize = xs[0].element_size()
        if w is not None and not ctx.want_sq_sum and S * S * (K + O) < S * K * O:
            def provider(start: int, stop: int) -> tuple[Tensor, Tensor]:
                A_parts, D_parts = [], []
                for x, d in zip(xs, ds):
                    A_parts.append(self._patches(module, x[start:stop]))
                    D_parts.append(d[start:stop].reshape(stop - start, G, O, -1).transpose(-1, -2))
                return (torch.cat(A_parts, 2) if len(A_parts) > 1 else A_parts[0],
                        torch.cat(D_parts, 2) if len(D_parts) > 1 else D_parts[0])

            _seq_linear(provider, G, S, K, O, collectors, ctx, lambda g: g.reshape(g.shape[0], *shape),
                        module.bias is not None, itemsize)
            return "conv2d-ghost"
        per_sample = itemsize * (3 * shape.numel() + sum(x[0].numel() for x in xs) + sum(d[0].numel() for d in ds))
        for start, stop in ctx.chunks(per_sample):
            if w is not None:
                gw = None
                for x, d in zip(xs, ds):
                    part = self._weight_grads(module, x[start:stop], d[start:stop])
                    gw = part if gw is None else gw + part
                assert gw is not None
                w.add_per_sample(start, gw)
            if "bias" in collectors:
                gb = sum(d[start:stop].sum((2, 3)) for d in ds)
                collectors["bias"].add_per_sample(start, gb)  # type: ignore[arg-type]
        return "conv2d-materialised"

    @staticmethod
    def _padded(module: nn.Conv2d, x: Tensor) -> Tensor:
        """Apply string or non-zero-mode padding explicitly, so that the rule works with numeric padding."""
        if module.padding_mode != "zeros" or isinstance(module.padding, str):
            mode = "constant" if module.padding_mode == "zeros" else module.padding_mode
            return F.pad(x, module._reversed_padding_repeated_twice, mode=mode)
        return x

    @staticmethod
    def _numeric_padding(module: nn.Conv2d) -> tuple[int, int]:
        if module.padding_mode != "zeros" or isinstance(module.padding, str):
            return (0, 0)
        return module.padding  # type: ignore[return-value]

    def _weight_grads(self, module: nn.Conv2d, x: Tensor, d: Tensor) -> Tensor:
        """Per-sample weight gradients (b, out, C/G, kh, kw) of padded input x and output gradient d.

        Two exact kernels whose speed ranks differ by layer shape: batch-as-groups convolution backward and
        one batched matmul per kernel offset. The first call for a shape times both; later calls use the faster.
        """
        kernels = (self._grouped, self._per_offset)
        key = (tuple(x.shape), tuple(d.shape), tuple(module.weight.shape), module.stride, module.dilation,
               module.groups, x.dtype)
        choice = self._fastest.get(key)
        if choice is not None:
            return kernels[choice](module, x, d)
        times, result = [], None
        for kernel in kernels:
            begin = time.perf_counter()
            out = kernel(module, x, d)
            times.append(time.perf_counter() - begin)
            result = out if result is None else result
        self._fastest[key] = int(np.argmin(times))
        assert result is not None
        return result

    @classmethod
    def _per_offset(cls, module: nn.Conv2d, x: Tensor, d: Tensor) -> Tensor:
        """g_i[:, :, p, q] = δ_i · (input shifted by kernel offset (p, q))ᵀ, one batched matmul per offset."""
        b, G = x.shape[0], module.groups
        out_ch, cg, kh, kw = module.weight.shape
        ph, pw = cls._numeric_padding(module)
        if ph or pw:
            x = F.pad(x, (pw, pw, ph, ph))
        Ho, Wo = d.shape[2], d.shape[3]
        (sh, sw), (dh, dw) = module.stride, module.dilation
        dm = d.reshape(b * G, out_ch // G, Ho * Wo)
        grads = torch.empty(b, out_ch, cg, kh, kw, dtype=d.dtype, device=d.device)
        for p in range(kh):
            for q in range(kw):
                window = x[:, :, p * dh: p * dh + sh * (Ho - 1) + 1: sh, q * dw: q * dw + sw * (Wo - 1) + 1: sw]
                cols = window.reshape(b * G, cg, Ho * Wo)
                grads[:, :, :, p, q] = torch.bmm(dm, cols.transpose(1, 2)).reshape(b, out_ch, cg)
        return grads

    @classmethod
    def _grouped(cls, module: nn.Conv2d, x: Tensor, d: Tensor) -> Tensor:
        """The weight gradient of one convolution whose groups are the b·G (sample, group) pairs."""
        b, C, H, W = x.shape
        G = module.groups
        shape = module.weight.shape
        folded_weight = torch.empty((b * shape[0], *shape[1:]), dtype=x.dtype, device=x.device)  # shape only
        _, gw, _ = torch.ops.aten.convolution_backward(
            d.reshape(1, b * d.shape[1], d.shape[2], d.shape[3]), x.reshape(1, b * C, H, W), folded_weight, None,
            module.stride, cls._numeric_padding(module), module.dilation, False, (0, 0), b * G, (False, True, False))
        return gw.reshape(b, *shape)

    @classmethod
    def _patches(cls, module: nn.Conv2d, x: Tensor) -> Tensor:
        """Padded (b, C, H, W) → (b, G, L, C/G · kh · kw): the input patch under each output position."""
        cols = F.unfold(x, module.kernel_size, dilation=module.dilation, padding=cls._numeric_padding(module),
                        stride=module.stride)
        b, G = x.shape[0], module.groups
        return cols.reshape(b, G, cols.shape[1] // G, cols.shape[2]).transpose(-1, -2)


class _NormRule(Rule):
    """Affine normalisation: g_i(weight) = Σ_positions δ_i ⊙ x̂_i, g_i(bias) = Σ_positions δ_i."""

    def normalise(self, module: nn.Module, x: Tensor) -> Tensor:
        raise NotImplementedError

    def reduce(self, module: nn.Module, y: Tensor) -> Tensor:
        """Sum (B, ...) over the positions that share one parameter entry → (B, *param.shape)."""
        raise NotImplementedError

    def accumulate(self, module: nn.Module, calls: list[_Call], collectors: dict[str, _Collector], ctx: _Ctx) -> str:
        gw: Tensor | None = None
        gb: Tensor | None = None
        for c in calls:
            x = _batched(c.args[0], ctx.B, f"the {type(module).__name__} input")
            d = c.grad()
            if "weight" in collectors:
                part = self.reduce(module, d * self.normalise(module, x))
                gw = part if gw is None else gw + part
            if "bias" in collectors:
                part = self.reduce(module, d)
                gb = part if gb is None else gb + part
        if gw is not None:
            collectors["weight"].add_per_sample(0, gw)
        if gb is not None:
            collectors["bias"].add_per_sample(0, gb)
        return self.name


class GroupNormRule(_NormRule):
    name = "groupnorm"

    def normalise(self, module: nn.Module, x: Tensor) -> Tensor:
        assert isinstance(module, nn.GroupNorm)
        return F.group_norm(x, module.num_groups, None, None, module.eps)

    def reduce(self, module: nn.Module, y: Tensor) -> Tensor:
        return y.reshape(y.shape[0], y.shape[1], -1).sum(2)


class LayerNormRule(_NormRule):
    name = "layernorm"

    def normalise(self, module: nn.Module, x: Tensor) -> Tensor:
        assert isinstance(module, nn.LayerNorm)
        return F.layer_norm(x, module.normalized_shape, None, None, module.eps)

    def reduce(self, module: nn.Module, y: Tensor) -> Tensor:
        shape = tuple(module.normalized_shape)  # type: ignore[arg-type]
        if y.ndim <= len(shape):
            raise ShapeError(f"{type(module).__name__} input of shape {tuple(y.shape)} has no batch dimension")
        return y.reshape(y.shape[0], -1, *shape).sum(1)


class RMSNormRule(LayerNormRule):
    name = "rmsnorm"

    def normalise(self, module: nn.Module, x: Tensor) -> Tensor:
        return F.rms_norm(x, module.normalized_shape, None, module.eps)  # type: ignore[arg-type]


class EmbeddingRule(Rule):
    """``nn.Embedding``: per sample, rows of g_i are δ summed over equal indices (scatter over unique keys)."""

    name = "embedding"

    def unsupported(self, module: nn.Module) -> str | None:
        assert isinstance(module, nn.Embedding)
        return "sparse gradients" if module.sparse else None

    def accumulate(self, module: nn.Module, calls: list[_Call], collectors: dict[str, _Collector], ctx: _Ctx) -> str:
        assert isinstance(module, nn.Embedding)
        w = collectors.get("weight")
        if w is None:
            return self.name
        B, V, Dm = ctx.B, module.num_embeddings, module.embedding_dim
        keys, rows = [], []
        for c in calls:
            idx = _batched(c.args[0], B, "the Embedding input").reshape(B, -1)
            d = c.grad().reshape(B, -1, Dm)
            if module.padding_idx is not None:
                d = d * (idx != module.padding_idx)[..., None].to(d.dtype)
            keys.append((torch.arange(B, device=idx.device)[:, None] * V + idx).reshape(-1))
            rows.append(d.reshape(-1, Dm))
        key = torch.cat(keys)
        uniq, inverse = torch.unique(key, return_inverse=True)
        U = rows[0].new_zeros(uniq.shape[0], Dm).index_add_(0, inverse, torch.cat(rows))
        sample, row = uniq // V, uniq % V
        U2 = U.pow(2)
        w.sq_norms.index_add_(0, sample, U2.sum(1).to(F64))
        if w.grad_sum is not None:
            w.grad_sum.index_add_(0, row, U.to(F64))
        if w.sq_sum is not None:
            w.sq_sum.index_add_(0, row, U2.to(F64))
        if w.wants_segments:
            assert ctx.segments is not None
            flat = w.seg_sum().view(ctx.n_segments * V, Dm)
            flat.index_add_(0, ctx.segments[sample] * V + row, U.to(F64))
        return self.name


class FourierTimeRule(Rule):
    """:class:`FourierTimeEmbedding`: g_i(ω) = 2π t_i (δ_i^sin ⊙ cos 2πt_iω − δ_i^cos ⊙ sin 2πt_iω)."""

    name = "fourier-time"

    def accumulate(self, module: nn.Module, calls: list[_Call], collectors: dict[str, _Collector], ctx: _Ctx) -> str:
        assert isinstance(module, FourierTimeEmbedding)
        if "frequencies" not in collectors:
            return self.name
        omega = module.frequencies.detach()
        n = omega.shape[0]
        total: Tensor | None = None
        for c in calls:
            t = _batched(_time_vector(c.args[0]), ctx.B, "the time input").to(omega.dtype)
            d = c.grad()
            angle = 2 * math.pi * t[:, None] * omega
            g = 2 * math.pi * t[:, None] * (d[:, n:] * angle.cos() - d[:, :n] * angle.sin())
            total = g if total is None else total + g
        assert total is not None
        collectors["frequencies"].add_per_sample(0, total)
        return self.name


RULES: dict[type[nn.Module], Rule] = {
    nn.Linear: LinearRule(), nn.Conv2d: Conv2dRule(), nn.GroupNorm: GroupNormRule(), nn.LayerNorm: LayerNormRule(),
    nn.Embedding: EmbeddingRule(), FourierTimeEmbedding: FourierTimeRule(),
}
if hasattr(nn, "RMSNorm"):
    RULES[nn.RMSNorm] = RMSNormRule()


def register_rule(module_type: type[nn.Module], rule: Rule) -> None:
    """Use ``rule`` for modules of exactly this type (subclasses are not matched: they may override forward)."""
    if not (isinstance(module_type, type) and issubclass(module_type, nn.Module)):
        raise ConfigError(f"module_type must be an nn.Module subclass, got {module_type!r}")
    if not isinstance(rule, Rule):
        raise ConfigError(f"rule must be a flowvar.gradnorms.Rule, got {type(rule).__name__}")
    RULES[module_type] = rule


# --------------------------------------------------------------------------------------------- fallback


def _relative_gap(a: Tensor, b: Tensor) -> float:
    return float((a - b).norm() / (b.norm() + a.norm() + 1e-300)) * 2


def _fallback_call(module: nn.Module, module_name: str, wanted: dict[str, str], call: _Call, start: int, stop: int,
                   B: int) -> tuple[dict[str, Tensor], str]:
    """Per-sample gradients {local name: (b, *shape)} of ``module``'s parameters ``wanted`` for one call and
    samples [start, stop): vmap over samples of vjp(module at x_i, δ_i); a loop when vmap cannot."""
    params = {k: p.detach() for k, p in module.named_parameters() if k in wanted}
    fixed = {k: p.detach() for k, p in module.named_parameters() if k not in wanted}
    buffers = dict(module.named_buffers())
    leaves, spec = tree_flatten((call.args, call.kwargs))
    batched = [k for k, x in enumerate(leaves) if isinstance(x, Tensor) and x.ndim > 0 and x.shape[0] == B]
    out_idx = [k for k, g in enumerate(call.grads) if g is not None]
    for k in out_idx:
        _batched(call.outputs[k], B, f"output {k} of {module_name!r}")
    xs = [leaves[k][start:stop] for k in batched]
    cots = [call.grads[k][start:stop] for k in out_idx]  # type: ignore[index]

    def forward(p: dict[str, Tensor], sample: list[Tensor]) -> list[Tensor]:
        full = list(leaves)
        for k, x in zip(batched, sample):
            full[k] = x.unsqueeze(0)
        args, kwargs = tree_unflatten(full, spec)
        outs, _ = tree_flatten(functional_call(module, (p, fixed, buffers), tuple(args), dict(kwargs)))
        return [outs[k][0] for k in out_idx]

    def one(p: dict[str, Tensor], sample: list[Tensor], cot: list[Tensor]) -> tuple[dict[str, Tensor], list[Tensor]]:
        out, pullback = vjp(lambda q: forward(q, sample), p)
        return pullback(cot)[0], out

    how = "fallback-vmap"
    try:
        grads, outs = vmap(one, in_dims=(None, 0, 0), randomness="error")(params, xs, cots)
    except RuntimeError as error:
        msg = str(error)
        if "random" in msg:
            raise ConfigError(f"module {module_name!r} ({type(module).__name__}) draws random numbers in its forward "
                              f"pass (e.g. dropout), so its per-sample gradients cannot be recomputed; put it in eval "
                              f"mode while measuring or register a rule for it (flowvar.gradnorms.register_rule)"
                              ) from None
        if not _is_vmap_control_flow_error(error):
            raise
        how = "fallback-loop"
        rows = [one(params, [x[i] for x in xs], [c[i] for c in cots]) for i in range(stop - start)]
        grads = {k: torch.stack([r[0][k] for r in rows]) for k in params}
        outs = [torch.stack([r[1][j] for r in rows]) for j in range(len(out_idx))]
    tol = 1e-3 if any(o.dtype != F64 for o in outs) else 1e-9
    for j, k in enumerate(out_idx):
        gap = _relative_gap(outs[j], call.outputs[k][start:stop])
        if gap > tol:
            raise ConfigError(
                f"module {module_name!r} ({type(module).__name__}) gives a different output when recomputed one "
                f"sample at a time (relative gap {gap:.2g}): its forward couples the samples of a batch (batch "
                f"statistics) or is random, so per-sample gradients are not defined for it. Put it in eval mode or "
                f"change it to act on each sample separately")
    return {k: g.detach() for k, g in grads.items()}, how


# --------------------------------------------------------------------------------------------- engine


@dataclass
class _Unit:
    """Parameters measured together: one module with a rule, or the (possibly tied) parameters of a fallback."""

    modules: list[tuple[str, nn.Module]]
    params: dict[str, nn.Parameter]  # global name → parameter
    local: list[dict[str, str]]  # per module: local name → global name
    rule: Rule | None
    reason: str | None


def _coupling_problem(modules: list[tuple[str, nn.Module]]) -> str | None:
    """Why the samples of a batch are coupled (batch statistics), or None; ``modules``: (name, module) pairs."""
    for name, m in modules:
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and (m.training or not m.track_running_stats):
            return (f"{name or 'the model'} ({type(m).__name__}) normalises with batch statistics, which couples "
                    f"the samples: per-sample gradients are not defined. Call model.eval() on it (running "
                    f"statistics) or use GroupNorm/LayerNorm")
        if isinstance(m, nn.Embedding) and m.scale_grad_by_freq:
            return (f"{name} (Embedding) has scale_grad_by_freq=True, which scales gradients by batch counts: "
                    f"per-sample gradients are not defined. Set scale_grad_by_freq=False")
    return None


class GradNormEngine:
    """Hooks that make per-sample gradient statistics a by-product of an ordinary forward/backward pass.

    Usage (any model, any per-sample loss whose batch loss is its sum or mean)::

        engine = GradNormEngine(model)            # attaches hooks; armed
        losses = per_sample_loss(model, path)     # (B,)
        losses.mean().backward()
        stats = engine.compute(reduction="mean", losses=losses, t=path.t, t_bins=10)
        stats.report().trace                      # tr Cov(g), exact
        engine.detach()

    ``armed``: whether hooks record the next forward pass (set it False on steps that are not measured; the
    hooks then cost a flag check). ``compute`` clears the records. ``elementwise``: also Σ_i g_i² (element-wise
    variance). ``chunk_bytes`` bounds the memory of materialised chunks; ``fallback_chunk`` the samples per
    vmap call of the fallback. Parameters with ``requires_grad=False`` are not measured.
    """

    def __init__(self, model: nn.Module, *, elementwise: bool = False, chunk_bytes: int = DEFAULT_CHUNK_BYTES,
                 fallback_chunk: int = 64) -> None:
        if not isinstance(model, nn.Module):
            raise ConfigError(f"model must be an nn.Module, got {type(model).__name__}")
        self.model = model
        self.elementwise = bool(elementwise)
        self.chunk_bytes = check_positive_int("chunk_bytes", chunk_bytes)
        self.fallback_chunk = check_positive_int("fallback_chunk", fallback_chunk)
        self.armed = True
        self._busy = False
        self._records: dict[int, list[_Call]] = {}
        self._param_grads: dict[int, Tensor] = {}
        self._root_outputs: list[Any] = []
        self._handles: list[Any] = []
        self.units = self._plan()
        self._coupling_candidates = [(n, m) for n, m in model.named_modules()
                                     if isinstance(m, nn.modules.batchnorm._BatchNorm | nn.Embedding)]
        self.attach()

    # ----------------------------------------------------------------------------------------- plan

    def _plan(self) -> list[_Unit]:
        names: dict[int, str] = {}
        for name, p in self.model.named_parameters():
            names.setdefault(id(p), name)
        owners: dict[int, list[tuple[str, nn.Module]]] = {}
        for mname, m in self.model.named_modules():
            for p in _unique_params(m).values():
                owners.setdefault(id(p), []).append((mname, m))
        # group modules that share a parameter (union over tied parameters)
        units: list[_Unit] = []
        seen: set[int] = set()
        for mname, m in self.model.named_modules():
            direct = _unique_params(m)
            if not direct or id(m) in seen:
                continue
            group: list[tuple[str, nn.Module]] = [(mname, m)]
            frontier = [m]
            while frontier:
                cur = frontier.pop()
                for p in _unique_params(cur).values():
                    for oname, o in owners[id(p)]:
                        if all(o is not g for _, g in group):
                            group.append((oname, o))
                            frontier.append(o)
            seen.update(id(g) for _, g in group)
            params: dict[str, nn.Parameter] = {}
            local: list[dict[str, str]] = []
            for _, g in group:
                loc = {}
                for k, p in _unique_params(g).items():
                    params[names[id(p)]] = p
                    loc[k] = names[id(p)]
                local.append(loc)
            rule = RULES.get(type(m)) if len(group) == 1 else None
            reason = None
            if len(group) > 1:
                reason = "parameters shared by modules " + ", ".join(repr(n) for n, _ in group)
            elif rule is None:
                reason = f"no fast rule for {type(m).__name__}"
            else:
                why = rule.unsupported(m)
                if why is not None:
                    rule, reason = None, f"{type(m).__name__} with {why}"
            units.append(_Unit(group, params, local, rule, reason))
        return units

    # ----------------------------------------------------------------------------------------- hooks

    def attach(self) -> GradNormEngine:
        """Register the hooks (done by the constructor; a no-op when attached)."""
        if self._handles:
            return self
        fallback_modules = {id(m) for u in self.units if u.rule is None for _, m in u.modules}
        linear_modules = {id(m) for u in self.units if isinstance(u.rule, LinearRule) for _, m in u.modules}
        for unit in self.units:
            for _, m in unit.modules:
                hook = partial(self._forward_hook, clone=id(m) in fallback_modules,
                               row_norms=id(m) in linear_modules)
                self._handles.append(m.register_forward_hook(hook, with_kwargs=True))
            for p in unit.params.values():
                if p.requires_grad:
                    self._handles.append(p.register_hook(partial(self._param_hook, id(p))))
        self._handles.append(self.model.register_forward_hook(self._root_hook))
        return self

    def detach(self) -> None:
        """Remove every hook and drop the records."""
        for h in self._handles:
            h.remove()
        self._handles.clear()
        self.clear()

    def __enter__(self) -> GradNormEngine:
        return self.attach()

    def __exit__(self, *exc: object) -> None:
        self.detach()

    def clear(self) -> None:
        """Forget the recorded forward/backward pass."""
        self._records.clear()
        self._param_grads.clear()
        self._root_outputs.clear()

    def _recording(self) -> bool:
        return self.armed and not self._busy and torch.is_grad_enabled()

    def _forward_hook(self, module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], output: Any,
                      clone: bool = False, row_norms: bool = False) -> None:
        if not self._recording():
            return
        if row_norms and isinstance(output, Tensor) and output.requires_grad and len(args) == 1 and \
                isinstance(args[0], Tensor) and args[0].ndim == 2:
            # a Linear on (B, in): the row norms its rule needs, computed now while input and δ are in cache
            norms: list[Tensor | None] = [None]
            grads_: list[Tensor | None] = [None]
            self._records.setdefault(id(module), []).append(
                _Call(args, dict(kwargs), [output], grads_, torch.linalg.vector_norm(args[0].detach(), dim=1), norms))
            output.register_hook(partial(_store_grad_and_norm, grads_, norms))
            return
        leaves = [output] if isinstance(output, Tensor) else tree_flatten(output)[0]
        grads: list[Tensor | None] = [None] * len(leaves)
        stored = leaves
        if clone:  # the fallback recomputes the module later: keep this call's inputs and outputs as they are now
            inputs, spec = tree_flatten((args, kwargs))
            args, kwargs = tree_unflatten([_snapshot(x) for x in inputs], spec)
            stored = [_snapshot(x) for x in leaves]
        call = _Call(tuple(args), dict(kwargs), stored, grads)
        for k, leaf in enumerate(leaves):
            if isinstance(leaf, Tensor) and leaf.requires_grad:
                # the hook must reference only the grads list: a reference to ``call`` (which holds the output)
                # would make a cycle output → hook → call → output that keeps every step's graph alive until
                # the garbage collector runs (measured: +60% forward/backward time)
                leaf.register_hook(partial(_store_grad, grads, k))
        self._records.setdefault(id(module), []).append(call)

    def _param_hook(self, key: int, grad: Tensor) -> None:
        if self.armed and not self._busy:
            g = grad.detach()
            self._param_grads[key] = self._param_grads[key] + g if key in self._param_grads else g

    def _root_hook(self, module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
        if self._recording():
            self._root_outputs.append(output)

    @property
    def root_output(self) -> Any:
        """The model's output in the recorded forward pass (raises unless the model was called exactly once)."""
        if len(self._root_outputs) != 1:
            raise DataError(f"the model was called {len(self._root_outputs)} times while the engine was armed; "
                            f"measure one forward pass per step")
        return self._root_outputs[0]

    @property
    def fallback_parameters(self) -> dict[str, str]:
        """{parameter name: reason} for parameters the engine measures with the torch.func fallback."""
        return {n: u.reason or "" for u in self.units if u.rule is None for n in u.params}

    # ----------------------------------------------------------------------------------------- compute

    def compute(self, batch_size: int | None = None, *, reduction: Reduction = "mean", losses: Tensor | None = None,
                t: Tensor | None = None, t_bins: int | None = None, segments: Tensor | None = None,
                n_segments: int | None = None, bin_traces: bool = True, validate: bool = False) -> BatchGradStats:
        """Per-sample gradient statistics of the recorded forward/backward pass, then :meth:`clear`.

        ``reduction``: how the backward pass's loss was formed from the per-sample losses ("mean": L = (1/B)Σℓ_i,
        "sum": L = Σℓ_i); g_i = ∇ℓ_i either way. ``batch_size``: B (default: the leading dimension of ``losses``
        or of the model output). ``losses``: (B,) ℓ_i, kept in the result for loss statistics. ``t`` (B,) in
        [0, 1] with ``t_bins``: per-bin sums for :meth:`BatchGradStats.bins`; or explicit ``segments`` (B,) long
        in [0, n_segments). ``bin_traces=False``: keep the segments (per-bin counts, losses, ‖g_i‖²) but skip the
        per-segment gradient sums (about one weight-gradient product per layer). ``validate``: check Σ_i g_i
        against the backward pass's gradient (costs about one extra weight-gradient computation); raises
        :class:`DataError` on a mismatch.
        """
        if reduction not in REDUCTIONS:
            raise ConfigError(f"unknown reduction {reduction!r}; use 'mean' (L = mean of the per-sample losses) or "
                              f"'sum'")
        try:
            return self._compute(batch_size, reduction, losses, t, t_bins, segments, n_segments, bin_traces, validate)
        finally:
            self.clear()

    def _infer_batch(self, batch_size: int | None, losses: Tensor | None) -> int:
        if batch_size is not None:
            return check_positive_int("batch_size", batch_size)
        if losses is not None:
            return int(losses.shape[0])
        for out in self._root_outputs:
            leaves = [x for x in tree_flatten(out)[0] if isinstance(x, Tensor) and x.ndim > 0]
            if leaves:
                return int(leaves[0].shape[0])
        raise ConfigError("cannot tell the batch size; pass batch_size or losses to compute()")

    def _segments(self, B: int, t: Tensor | None, t_bins: int | None, segments: Tensor | None,
                  n_segments: int | None) -> tuple[Tensor | None, int, np.ndarray | None]:
        if t_bins is not None and t is not None:
            nb = check_positive_int("t_bins", t_bins)
            tt = t.detach().reshape(-1)
            if tt.shape != (B,):
                raise ShapeError(f"t must have shape ({B},), got {tuple(t.shape)}")
            lo, hi = torch.stack(torch.aminmax(tt)).tolist()
            if not (lo >= 0 and hi <= 1):  # NaN fails too
                raise DataError(f"t must lie in [0, 1] to be binned, got values in [{lo:.3g}, {hi:.3g}]")
            # bin k = ⌊t·n⌋ (t ≥ 0, so truncation is the floor; float64: t·n exact for float32 t), t = 1 in the last bin
            return (tt.to(F64) * nb).long().clamp_(max=nb - 1), nb, _bin_edges(nb)
        if segments is not None:
            if n_segments is None:
                raise ConfigError("pass n_segments with segments")
            n = check_positive_int("n_segments", n_segments)
            seg = segments.detach().reshape(-1).long()
            if seg.shape != (B,) or bool(((seg < 0) | (seg >= n)).any()):
                raise ShapeError(f"segments must be ({B},) integers in [0, {n})")
            return seg, n, None
        return None, 0, None

    def _compute(self, batch_size: int | None, reduction: str, losses: Tensor | None, t: Tensor | None,
                 t_bins: int | None, segments: Tensor | None, n_segments: int | None, bin_traces: bool,
                 validate: bool) -> BatchGradStats:
        problem = _coupling_problem(self._coupling_candidates)
        if problem is not None:
            raise ConfigError(problem)
        if not self._records and not self._param_grads:
            raise DataError("nothing was recorded: run the forward and backward pass with the engine attached and "
                            "armed (engine.armed = True) before compute(), with gradients enabled")
        B = self._infer_batch(batch_size, losses)
        if losses is not None and losses.shape != (B,):
            raise ShapeError(f"losses must have shape ({B},), got {tuple(losses.shape)}")
        seg, n_seg, edges = self._segments(B, t, t_bins, segments, n_segments)
        scale = float(B) if reduction == "mean" else 1.0
        measured = {n: p for u in self.units for n, p in u.params.items() if p.requires_grad}
        devices = {p.device for p in measured.values()}
        if len(devices) > 1:
            raise ConfigError(f"the measured parameters live on several devices ({sorted(map(str, devices))}); the "
                              f"engine accumulates per-sample statistics on one device: move the model to one")
        device = devices.pop() if devices else torch.device("cpu")
        if seg is not None:
            seg = seg.to(device)  # t (or segments) may come from the CPU data pipeline
        want_sum = {n for n, p in measured.items() if validate or id(p) not in self._param_grads}
        ctx = _Ctx(B=B, want_grad_sum=want_sum, want_sq_sum=self.elementwise, segments=seg if bin_traces else None,
                   n_segments=n_seg, chunk_bytes=self.chunk_bytes, fallback_chunk=self.fallback_chunk, device=device)
        sq_buf = torch.zeros(len(measured), B, dtype=F64, device=device)  # per-parameter ‖g_i‖², one row each
        collectors = {n: _Collector(n, p.shape, ctx, sq_buf[k]) for k, (n, p) in enumerate(measured.items())}
        rules: dict[str, str] = {}
        fallback: dict[str, str] = {}
        self._busy = True
        try:
            with torch.no_grad():  # the rules build no graph; torch.func inside the fallback ignores the outer no_grad
                for unit in self.units:
                    names = [n for n in unit.params if n in measured]
                    if names:
                        self._run_unit(unit, names, collectors, ctx, rules, fallback)
        finally:
            self._busy = False
        mean_grad: dict[str, Tensor] = {}
        for name, c in collectors.items():
            p = measured[name]
            hooked = self._param_grads.get(id(p))
            if validate and hooked is not None:
                self._check_sum(name, c, hooked, B)
            c.finish(scale)
            if c.grad_sum is not None:
                mean_grad[name] = c.grad_sum / B
            else:  # the backward pass's gradient is Σ_i g_i / s: ḡ = that · s / B (a copy: .grad may change later)
                assert hooked is not None
                g = hooked.to_dense() if hooked.is_sparse else hooked
                mean_grad[name] = g.clone() if scale == B else g * (scale / B)
        if scale != 1.0:
            sq_buf *= scale ** 2
        param_sq = {n: c.sq_norms for n, c in collectors.items()}
        return BatchGradStats(
            n=B, sq_norms=sq_buf.sum(0), param_sq_norms=param_sq, mean_grad=mean_grad,
            sq_sum={n: c.sq_sum for n, c in collectors.items() if c.sq_sum is not None} if self.elementwise else None,
            seg_sq_norms={n: c.seg_sq for n, c in collectors.items() if c.seg_sq is not None}
            if seg is not None and bin_traces else None,
            segments=seg, n_segments=n_seg, losses=None if losses is None else losses.detach().to(F64),
            rules=rules, fallback=fallback, edges=edges)

    def _run_unit(self, unit: _Unit, names: list[str], collectors: dict[str, _Collector], ctx: _Ctx,
                  rules: dict[str, str], fallback: dict[str, str]) -> None:
        calls = [[c for c in self._records.get(id(m), []) if any(g is not None for g in c.grads)]
                 for _, m in unit.modules]
        if not any(calls):
            got = [n for n in names if id(unit.params[n]) in self._param_grads
                   and bool(self._param_grads[id(unit.params[n])].abs().sum() > 0)]
            if got:
                raise DataError(f"parameters {got} received a gradient but their module "
                                f"{unit.modules[0][0]!r} took no part in the recorded backward pass: they are used "
                                f"outside their module's forward, so per-sample gradients cannot be attributed. Use "
                                f"flowvar.variance.gradient_variance(method='autograd') for this model")
            for n in names:
                rules[n] = "unused"
            return
        if unit.rule is not None:
            (mname, m), = unit.modules
            local = {k: collectors[g] for k, g in unit.local[0].items() if g in names}
            label = unit.rule.accumulate(m, calls[0], local, ctx)
            for n in names:
                rules[n] = label
            return
        wanted_by_module = [{k: g for k, g in loc.items() if g in names} for loc in unit.local]
        how = "fallback-vmap"
        for start in range(0, ctx.B, ctx.fallback_chunk):
            stop = min(start + ctx.fallback_chunk, ctx.B)
            total: dict[str, Tensor] = {}
            for (mname, m), wanted, mcalls in zip(unit.modules, wanted_by_module, calls):
                for call in mcalls:
                    grads, h = _fallback_call(m, mname, wanted, call, start, stop, ctx.B)
                    how = h if h == "fallback-loop" else how
                    for k, g in grads.items():
                        total[wanted[k]] = total[wanted[k]] + g if wanted[k] in total else g
            for n in names:
                p = unit.params[n]
                g = total.get(n)
                collectors[n].add_per_sample(start, p.new_zeros(stop - start, *p.shape)
                                             if g is None else g)
        for n in names:
            rules[n] = how
            fallback[n] = unit.reason or ""

    @staticmethod
    def _check_sum(name: str, c: _Collector, hooked: Tensor, B: int) -> None:
        assert c.grad_sum is not None
        ref = (hooked.to_dense() if hooked.is_sparse else hooked).to(F64)
        bound = float(ref.norm()) + math.sqrt(B * float(c.sq_norms.sum()))
        tol = 1e-3 if hooked.dtype != F64 else 1e-8
        gap = float((c.grad_sum - ref).norm())
        if gap > tol * bound + 1e-300:
            raise DataError(
                f"the per-sample gradients of {name!r} do not add up to the gradient of the backward pass (gap "
                f"{gap:.3g}, scale {bound:.3g}). Either the backward pass was of more than the per-sample losses (an "
                f"extra loss term, a regulariser), or the parameter is also used outside its module's forward, or the "
                f"forward pass differs from the one recorded. Backpropagate only the reduced per-sample losses, or use "
                f"flowvar.variance.gradient_variance(method='autograd')")


_EDGES: dict[int, np.ndarray] = {}


def _bin_edges(n_bins: int) -> np.ndarray:
    """(n_bins + 1,) equal-width edges of [0, 1], memoised (read-only: the same array is handed out every time)."""
    edges = _EDGES.get(n_bins)
    if edges is None:
        edges = _EDGES[n_bins] = np.arange(n_bins + 1) / n_bins
        edges.flags.writeable = False
    return edges


def _snapshot(x: Any) -> Any:
    return x.detach().clone() if isinstance(x, Tensor) else x


def _store_grad(grads: list[Tensor | None], k: int, grad: Tensor) -> None:
    g = grad.detach()
    old = grads[k]
    grads[k] = g if old is None else old + g


def _store_grad_and_norm(grads: list[Tensor | None], norms: list[Tensor | None], grad: Tensor) -> None:
    """:func:`_store_grad` for a (B, out) Linear output, plus its row norms ‖δ_i‖ (None once several gradients
    were summed: the rule then computes them from the sum)."""
    g = grad.detach()
    old = grads[0]
    if old is None:
        grads[0] = g
        norms[0] = torch.linalg.vector_norm(g, dim=1) if g.ndim == 2 else None
    else:
        grads[0] = old + g
        norms[0] = None


# --------------------------------------------------------------------------------------------- one-shot API


class _Requires:
    """Temporarily set requires_grad on the parameters to measure (all, or the trainable ones)."""

    def __init__(self, model: nn.Module, trainable_only: bool) -> None:
        self.params = variance_parameters(model, trainable_only)
        self.live = {n: p for n, p in model.named_parameters() if n in self.params}
        self.saved = {n: p.requires_grad for n, p in model.named_parameters()}
        self.model = model
        self.trainable_only = trainable_only

    def __enter__(self) -> list[Tensor]:
        for n, p in self.model.named_parameters():
            p.requires_grad_(n in self.live)
        return list(self.live.values())

    def __exit__(self, *exc: object) -> None:
        for n, p in self.model.named_parameters():
            p.requires_grad_(self.saved[n])


def batch_grad_stats(model: nn.Module, path: PathSample, *, elementwise: bool = False, t_bins: int | None = None,
                     trainable_only: bool = False, validate: bool = False,
                     chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> BatchGradStats:
    """:class:`BatchGradStats` of the CFM per-sample losses ℓ_i = ‖u_i − v(x_t,i, t_i)‖² over one path batch.

    One forward and one backward pass of Σ_i ℓ_i (``torch.autograd.grad``: ``.grad`` fields are left
    untouched). ``trainable_only=False`` measures frozen parameters too (requires_grad is switched on for the
    pass and restored). ``t_bins``: per-t-bin sums for :meth:`BatchGradStats.bins`.
    """
    with _Requires(model, trainable_only) as params:
        engine = GradNormEngine(model, elementwise=elementwise, chunk_bytes=chunk_bytes)
        try:
            losses = per_sample_loss(model, path)
            torch.autograd.grad(losses.sum(), params, allow_unused=True)
            return engine.compute(losses.shape[0], reduction="sum", losses=losses.detach(), t=path.t,
                                  t_bins=t_bins, validate=validate)
        finally:
            engine.detach()


def fast_gradient_variance(model: nn.Module, path: PathSample, chunk_size: int = 1024, *,
                           group_by: GroupBy = "parameter", trainable_only: bool = False, elementwise: bool = False,
                           validate: bool = False, chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> FastVarianceReport:
    """tr Cov(g) over the K samples of ``path`` with the fast engine, ``chunk_size`` samples per forward pass.

    Same estimate as :func:`flowvar.variance.gradient_variance` (plug-in trace, per-group split, ‖ḡ‖²,
    normalised), plus ``per_layer``, ``elementwise`` (when asked) and the ``fallback`` report.
    """
    acc = MomentAccumulator()
    for chunk in _path_chunks(path, chunk_size):
        acc.update(batch_grad_stats(model, chunk, elementwise=elementwise, trainable_only=trainable_only,
                                    validate=validate, chunk_bytes=chunk_bytes))
    return acc.report(group_by, "fast")
