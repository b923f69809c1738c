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
groups add up to the total) and normalised by ‖E g‖²: ``normalised = trace / ‖ḡ‖²``.

Numerics. Gradients are accumulated in float64 chunk by chunk with the pairwise (Chan et al.) update of
the mean and of the sum of squared deviations, so memory is bounded by one chunk whatever K is, and the
result does not suffer the cancellation of E‖g‖² − ‖ḡ‖² when ‖ḡ‖² ≫ trace.

``method="fast"`` computes the same estimate with :mod:`flowvar.gradnorms` instead: per-sample gradient
norms and sums from one forward and one backward pass per chunk, without materialising per-sample
gradients (a :class:`~flowvar.gradnorms.FastVarianceReport`, which adds per-layer traces, optional
element-wise variances and the list of parameters that needed the exact ``torch.func`` fallback). It
sums raw moments (E‖g‖², ḡ) in float64 rather than Chan's update, so its relative rounding error is about
eps · ‖ḡ‖² / trace.

Per-sample gradients come from autograd (``torch.func``: ``vmap(grad(ℓ))`` over samples, falling back to a
loop over single samples for models with data-dependent control flow, which ``vmap`` rejects) or, for
:class:`~flowvar.models.GaussianParametricField`, from the closed form
:func:`flowvar.gaussian.parametric_per_sample_grads` (∇_θ ℓ = 2 A^{-T} r, ∇_Θ ℓ = 2 (A^{-T} r) wᵀ).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch
from torch import Tensor, nn
from torch.func import functional_call, grad, vmap

from flowvar.couplings import Coupling
from flowvar.errors import ConfigError, DataError, ShapeError, check_positive_int
from flowvar.gaussian import parametric_per_sample_grads
from flowvar.interpolants import PathSample, UniformTime
from flowvar.loss import CFMLoss, per_sample_loss
from flowvar.models.parametric import GaussianParametricField

Method = Literal["auto", "autograd", "closed_form", "fast"]
Strategy = Literal["auto", "vmap", "loop"]
GroupBy = Literal["parameter", "module"] | Callable[[str], str]
Statistic = Literal["trace", "trace_unbiased", "normalised", "mean_grad_sq_norm", "mean_loss"]

METHODS: tuple[str, ...] = ("auto", "autograd", "closed_form", "fast")
STRATEGIES: tuple[str, ...] = ("auto", "vmap", "loop")
STATISTICS: tuple[str, ...] = ("trace", "trace_unbiased", "normalised", "mean_grad_sq_norm", "mean_loss")


# --------------------------------------------------------------------------------------------- results


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
      ≤ 0 < trace (the mean gradient is not resolved from the noise), ``None`` when the trace is 0 (0/0 when
      every per-sample gradient is zero, e.g. a zero-loss field; the ratio is undefined).
    * ``mean_loss``: (1/K) Σ ℓ_k, the Monte-Carlo CFM loss at these parameters.
    * ``n``: K, the number of per-sample gradients.
    * ``method``: how the gradients were computed: ``"closed_form"``, ``"autograd-vmap"``, ``"autograd-loop"``.
    * ``mean_grad``: ḡ per parameter name (float64 tensors of the parameter's shape).
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
            "mean_loss": self.mean_loss, "n": self.n, "method": self.method,
        }


@dataclass
class TProfile:
    """Gradient variance conditional on t, one equal-width bin of [lo, hi] at a time.

    ``edges``: (n_bins + 1,); ``centres``, ``traces``, ``mean_grad_sq_norms``, ``mean_losses``: (n_bins,).
    ``traces[b]`` estimates tr Cov(g | t ∈ bin b) from ``n_per_bin`` draws with t ~ U(bin b).

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


# --------------------------------------------------------------------------------------------- helpers


def normalised_variance(trace: float, mean_grad_sq_norm: float, n: int) -> float | None:
    """The normalised gradient variance tr Cov(g) / ‖E g‖², each part estimated without bias from K = ``n``
    per-sample gradients: trace_u = K/(K − 1) · trace (``trace`` the plug-in (1/K) Σ‖g_k − ḡ‖²) over
    ‖ḡ‖²_u = ‖ḡ‖² − trace_u/K (E‖ḡ‖² = ‖E g‖² + tr Cov(g)/K).

    The plug-in ratio trace/‖ḡ‖² cannot exceed ≈ K, so near a stationary point it saturates at a value set by
    the batch size, not by the model. Returns ``math.inf`` when ‖ḡ‖²_u ≤ 0 < trace (the mean gradient is not
    resolved from the noise) and None when trace = 0 (no variance: the ratio is 0 or undefined, 0/0).
    """
    if n < 2:
        raise DataError(f"a normalised variance needs at least 2 per-sample gradients, got {n}")
    if trace <= 0:
        return None if mean_grad_sq_norm <= 0 else 0.0
    trace_u = trace * n / (n - 1)
    signal = mean_grad_sq_norm - trace_u / n
    return trace_u / signal if signal > 0 else math.inf


def variance_parameters(model: nn.Module, trainable_only: bool = False) -> dict[str, Tensor]:
    """The parameters g differentiates, by name (detached): all of them, or only those with ``requires_grad``.

    The default takes every parameter, frozen or not: the gradient variance is a property of the field's
    parameterisation at a point, and fields built for evaluation (e.g.
    :meth:`flowvar.gaussian.GaussianProblem.pair_optimal_field`) are frozen by default.
    """
    params = {name: p.detach() for name, p in model.named_parameters() if p.requires_grad or not trainable_only}
    if not params:
        which = "trainable parameters (requires_grad=False everywhere)" if trainable_only else "parameters"
        raise ConfigError(f"{type(model).__name__} has no {which}, so it has no parameter gradient; "
                          f"pass a model with parameters" + (" or trainable_only=False" if trainable_only else ""))
    return params


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


def slice_path(path: PathSample, start: int, stop: int) -> PathSample:
    """Rows [start, stop) of every field of a path sample."""
    return PathSample(x0=path.x0[start:stop], x1=path.x1[start:stop], t=path.t[start:stop],
                      z=path.z[start:stop], xt=path.xt[start:stop], target=path.target[start:stop])


def _path_chunks(path: PathSample, chunk_size: int) -> Iterator[PathSample]:
    n = path.xt.shape[0]
    if n == 0:
        raise DataError("the path sample is empty; draw at least two samples to estimate a variance")
    if path.t.shape != (n,) or path.target.shape != path.xt.shape:
        raise ShapeError(f"inconsistent path sample: xt {tuple(path.xt.shape)}, t {tuple(path.t.shape)}, target "
                         f"{tuple(path.target.shape)}; t must be (B,) and target the shape of xt")
    chunk_size = check_positive_int("chunk_size", chunk_size)
    for start in range(0, n, chunk_size):
        yield slice_path(path, start, min(start + chunk_size, n))


def _is_vmap_control_flow_error(error: RuntimeError) -> bool:
    msg = str(error)
    return "vmap" in msg and ("data-dependent control flow" in msg or ".item()" in msg)


# --------------------------------------------------------------------------------------------- gradients


def _autograd_chunk(model: nn.Module, path: PathSample, strategy: Literal["vmap", "loop"], trainable_only: bool
                    ) -> tuple[dict[str, Tensor], Tensor]:
    """Per-sample gradients {name: (B, *param.shape)} and losses (B,) of one chunk via ``torch.func``."""
    params = variance_parameters(model, trainable_only)
    frozen = {name: p.detach() for name, p in model.named_parameters() if name not in params}
    buffers = dict(model.named_buffers())

    def sample_loss(p: dict[str, Tensor], x0: Tensor, x1: Tensor, t: Tensor, z: Tensor, xt: Tensor,
                    target: Tensor) -> tuple[Tensor, Tensor]:
        def field_fn(x: Tensor, tt: Tensor) -> Tensor:
            return functional_call(model, (p, frozen, buffers), (x, tt))

        one = PathSample(x0=x0[None], x1=x1[None], t=t[None], z=z[None], xt=xt[None], target=target[None])
        loss = per_sample_loss(field_fn, one)[0]  # type: ignore[arg-type]  # any callable (x, t) -> v works
        return loss, loss.detach()

    grad_fn = grad(sample_loss, has_aux=True)
    args = (path.x0, path.x1, path.t, path.z, path.xt, path.target)
    if strategy == "vmap":
        grads, losses = vmap(grad_fn, in_dims=(None, 0, 0, 0, 0, 0, 0), randomness="different")(params, *args)
        return {k: v.detach() for k, v in grads.items()}, losses.detach()
    rows = [grad_fn(params, *(a[i] for a in args)) for i in range(path.xt.shape[0])]
    grads = {k: torch.stack([r[0][k] for r in rows]).detach() for k in params}
    return grads, torch.stack([r[1] for r in rows]).detach()


def _closed_form_chunk(model: GaussianParametricField, path: PathSample, trainable_only: bool
                       ) -> tuple[dict[str, Tensor], Tensor]:
    """Closed-form per-sample gradients of the parametric class (float64) and the per-sample losses."""
    names = variance_parameters(model, trainable_only)
    f64 = torch.float64
    g_theta, g_Theta = parametric_per_sample_grads(model.theta.detach().to(f64), model.Theta.detach().to(f64),
                                                   path.xt.to(f64), path.t.to(f64), path.target.to(f64))
    with torch.no_grad():
        losses = per_sample_loss(model, path)
    grads = {"theta": g_theta, "Theta": g_Theta}
    return {k: v for k, v in grads.items() if k in names}, losses


def _resolve_method(model: nn.Module, method: Method) -> Literal["autograd", "closed_form"]:
    if method not in METHODS:
        raise ConfigError(f"unknown method {method!r}; choose one of {list(METHODS)}")
    if method == "fast":
        raise ConfigError("method='fast' (flowvar.gradnorms) never materialises per-sample gradients; use "
                          "method='autograd' or 'closed_form' to get them")
    if method == "closed_form" and not isinstance(model, GaussianParametricField):
        raise ConfigError(f"method='closed_form' needs a GaussianParametricField, got {type(model).__name__}; "
                          f"use method='autograd' (or 'auto') for other models")
    if method == "auto":
        return "closed_form" if isinstance(model, GaussianParametricField) else "autograd"
    return method


class _GradientStream:
    """Per-sample gradients and losses of one path chunk at a time; resolves ``strategy="auto"`` once
    (vmap, else the loop when the model branches on tensor values)."""

    def __init__(self, model: nn.Module, method: Method = "auto", strategy: Strategy = "auto",
                 trainable_only: bool = False) -> None:
        if strategy not in STRATEGIES:
            raise ConfigError(f"unknown strategy {strategy!r}; choose one of {list(STRATEGIES)}")
        self.model = model
        self.method = _resolve_method(model, method)
        self.strategy: Strategy = strategy
        self.trainable_only = trainable_only
        variance_parameters(model, trainable_only)  # fail early with the clear message

    @property
    def label(self) -> str:
        if self.method == "closed_form":
            return "closed_form"
        return "autograd-loop" if self.strategy == "loop" else "autograd-vmap"

    def __call__(self, path: PathSample) -> tuple[dict[str, Tensor], Tensor]:
        if self.method == "closed_form":
            assert isinstance(self.model, GaussianParametricField)
            return _closed_form_chunk(self.model, path, self.trainable_only)
        if self.strategy == "loop":
            return _autograd_chunk(self.model, path, "loop", self.trainable_only)
        try:
            out = _autograd_chunk(self.model, path, "vmap", self.trainable_only)
        except RuntimeError as error:
            if self.strategy == "vmap" or not _is_vmap_control_flow_error(error):
                raise
            self.strategy = "loop"  # e.g. GaussianParametricField's singularity check
            return _autograd_chunk(self.model, path, "loop", self.trainable_only)
        self.strategy = "vmap"
        return out


def per_sample_gradients(model: nn.Module, path: PathSample, chunk_size: int = 1024, *, method: Method = "autograd",
                         strategy: Strategy = "auto", trainable_only: bool = False) -> dict[str, Tensor]:
    """Exact per-sample gradients g_k = ∇_θ ℓ_k(θ; x0_k, x1_k, t_k, z_k), ℓ_k = ‖u_k − v_θ(x_t,k, t_k)‖².

    ``path``: K samples (``xt``, ``target``: (K, *shape), ``t``: (K,)). Returns {name: (K, *param.shape)}
    for every parameter (``trainable_only=True``: only those with ``requires_grad``), in the parameter dtype
    (float64 for ``method="closed_form"``). Chunks of ``chunk_size`` samples bound the memory of the
    vectorised backward pass. ``strategy``: ``"vmap"`` (``torch.func.vmap(grad(ℓ))`` with
    ``randomness="different"``: each sample its own dropout mask), ``"loop"`` (one ``torch.func.grad`` call
    per sample) or ``"auto"`` (vmap, falling back to the loop when the model uses data-dependent control
    flow, as GaussianParametricField's singularity check does). Put batch-norm models in eval mode first:
    per-sample gradients through batch statistics are not defined.
    """
    stream = _GradientStream(model, method, strategy, trainable_only)
    parts: dict[str, list[Tensor]] = {}
    for chunk in _path_chunks(path, chunk_size):
        grads, _ = stream(chunk)
        for name, g in grads.items():
            parts.setdefault(name, []).append(g)
    return {name: torch.cat(gs) for name, gs in parts.items()}


# --------------------------------------------------------------------------------------------- accumulation


class VarianceAccumulator:
    """Streaming float64 mean and sum of squared deviations of per-sample gradients, per parameter.

    ``update(grads, losses)`` merges a chunk with the pairwise update (Chan, Golub & LeVeque 1979):
    M2 ← M2_a + M2_b + ‖m_b − m_a‖² n_a n_b / (n_a + n_b), m ← m_a + (m_b − m_a) n_b / (n_a + n_b).
    ``report(group_by, method)`` turns the moments into a :class:`VarianceReport`.
    """

    def __init__(self) -> None:
        self.n = 0
        self.mean: dict[str, Tensor] = {}
        self.m2: dict[str, float] = {}
        self.shapes: dict[str, torch.Size] = {}
        self.loss_sum = 0.0

    def update(self, grads: dict[str, Tensor], losses: Tensor) -> None:
        """Merge one chunk: ``grads`` {name: (b, *shape)}, ``losses`` (b,)."""
        b = int(losses.shape[0])
        if b == 0:
            return
        if self.n and set(grads) != set(self.mean):
            raise ConfigError(f"gradient chunks disagree on the parameters: {sorted(grads)} vs {sorted(self.mean)}")
        n_new = self.n + b
        for name, g in grads.items():
            if g.shape[0] != b:
                raise ShapeError(f"gradient of {name!r} has {g.shape[0]} rows for {b} losses")
            flat = g.detach().to(torch.float64).reshape(b, -1)
            m_b = flat.mean(0)
            m2_b = float((flat - m_b).pow(2).sum())
            if self.n == 0:
                self.mean[name], self.m2[name], self.shapes[name] = m_b, m2_b, g.shape[1:]
            else:
                delta = m_b - self.mean[name]
                self.mean[name] = self.mean[name] + delta * (b / n_new)
                self.m2[name] += m2_b + float(delta.dot(delta)) * (self.n * b / n_new)
        self.loss_sum += float(losses.detach().to(torch.float64).sum())
        self.n = n_new

    def report(self, group_by: GroupBy = "parameter", method: str = "") -> VarianceReport:
        """The :class:`VarianceReport` of everything merged so far (needs K >= 2)."""
        K = self.n
        if K < 2:
            raise DataError(f"a variance needs at least 2 per-sample gradients, got {K}; draw more samples")
        per_group: dict[str, float] = {}
        per_group_sq: dict[str, float] = {}
        for name in self.mean:
            g = group_name(name, group_by)
            per_group[g] = per_group.get(g, 0.0) + self.m2[name] / K
            per_group_sq[g] = per_group_sq.get(g, 0.0) + float(self.mean[name].dot(self.mean[name]))
        trace = sum(self.m2.values()) / K
        trace_unbiased = trace * K / (K - 1)
        sq = float(sum(float(m.dot(m)) for m in self.mean.values()))
        return VarianceReport(
            trace=trace, trace_unbiased=trace_unbiased, per_group=per_group,
            per_group_mean_grad_sq_norm=per_group_sq, mean_grad_sq_norm=sq,
            mean_grad_sq_norm_unbiased=sq - trace_unbiased / K, normalised=normalised_variance(trace, sq, K),
            mean_loss=self.loss_sum / K, n=K, method=method,
            mean_grad={name: m.reshape(self.shapes[name]).clone() for name, m in self.mean.items()},
        )


# --------------------------------------------------------------------------------------------- estimators


def gradient_variance(model: nn.Module, path: PathSample, method: Method = "auto", chunk_size: int = 1024, *,
                      group_by: GroupBy = "parameter", strategy: Strategy = "auto",
                      trainable_only: bool = False) -> VarianceReport:
    """tr Cov(g) of the per-sample CFM gradients over the K samples of ``path``, at the model's parameters.

    ``path``: K >= 2 draws (``xt``, ``target``: (K, *shape), ``t``: (K,)), e.g. ``loss.draw(coupling, K, gen)``.
    ``method``: ``"closed_form"`` (GaussianParametricField only, float64), ``"autograd"`` (any model; see
    :func:`per_sample_gradients` for ``strategy`` and ``trainable_only``) or ``"auto"`` (closed form where
    available). ``chunk_size`` bounds memory; the result does not depend on it beyond rounding.
    ``group_by`` sets the keys of ``per_group`` (see :func:`group_name`). ``method="fast"``: the engine of
    :mod:`flowvar.gradnorms` (one forward and one backward pass per chunk; ``strategy`` does not apply).
    """
    if method == "fast":
        from flowvar.gradnorms import fast_gradient_variance

        return fast_gradient_variance(model, path, chunk_size, group_by=group_by, trainable_only=trainable_only)
    stream = _GradientStream(model, method, strategy, trainable_only)
    acc = VarianceAccumulator()
    for chunk in _path_chunks(path, chunk_size):
        acc.update(*stream(chunk))
    return acc.report(group_by, stream.label)


def estimate_variance(model: nn.Module, loss: CFMLoss, coupling: Coupling, n_samples: int,
                      generator: torch.Generator | None = None, *, method: Method = "auto", chunk_size: int = 1024,
                      draw_chunk: int = 16384, group_by: GroupBy = "parameter", strategy: Strategy = "auto",
                      trainable_only: bool = False) -> VarianceReport:
    """Draw ``n_samples`` paths with ``loss.draw(coupling, ·, generator)`` and report their gradient variance.

    Paths are drawn ``draw_chunk`` at a time and folded into the float64 moments as they come, so memory is
    bounded for any ``n_samples``. The random stream depends on ``draw_chunk``; for couplings that pair
    within a batch (:class:`~flowvar.couplings.ExactOTCoupling`) ``draw_chunk`` is also the OT batch size.
    Other options as in :func:`gradient_variance`.
    """
    n_samples = check_positive_int("n_samples", n_samples)
    draw_chunk = check_positive_int("draw_chunk", draw_chunk)
    if method == "fast":
        from flowvar.gradnorms import MomentAccumulator, batch_grad_stats

        fast = MomentAccumulator()
        for start in range(0, n_samples, draw_chunk):
            path = loss.draw(coupling, min(draw_chunk, n_samples - start), generator)
            for chunk in _path_chunks(path, chunk_size):
                fast.update(batch_grad_stats(model, chunk, trainable_only=trainable_only))
        return fast.report(group_by, "fast")
    stream = _GradientStream(model, method, strategy, trainable_only)
    acc = VarianceAccumulator()
    for start in range(0, n_samples, draw_chunk):
        path = loss.draw(coupling, min(draw_chunk, n_samples - start), generator)
        for chunk in _path_chunks(path, chunk_size):
            acc.update(*stream(chunk))
    return acc.report(group_by, stream.label)


def variance_t_profile(model: nn.Module, loss: CFMLoss, coupling: Coupling, n_samples: int, n_bins: int = 20,
                       generator: torch.Generator | None = None, *, t_range: tuple[float, float] = (0.0, 1.0),
                       **options: object) -> TProfile:
    """tr Cov(g | t ∈ bin) for ``n_bins`` equal bins of ``t_range``, ``n_samples`` draws **per bin**.

    Bin b replaces the loss's time sampler by U(edges[b], edges[b+1]) and keeps its interpolant; the bins
    are drawn in order from ``generator``. ``options`` go to :func:`estimate_variance` (``method``,
    ``chunk_size``, ``draw_chunk``, ``group_by``, ``strategy``, ``trainable_only``). See :class:`TProfile` for
    how the bins add up to the total.
    """
    n_bins = check_positive_int("n_bins", n_bins)
    lo, hi = float(t_range[0]), float(t_range[1])
    if not 0.0 <= lo < hi <= 1.0:
        raise ConfigError(f"t_range must satisfy 0 <= lo < hi <= 1, got {t_range}")
    edges = np.linspace(lo, hi, n_bins + 1)
    reports = []
    for b in range(n_bins):
        binned = CFMLoss(loss.interpolant, UniformTime(float(edges[b]), float(edges[b + 1])))
        reports.append(estimate_variance(model, binned, coupling, n_samples, generator, **options))  # type: ignore[arg-type]
    traces = np.array([r.trace for r in reports])
    names = list(reports[0].mean_grad)
    pooled = {k: torch.stack([r.mean_grad[k] for r in reports]).mean(0) for k in names}
    between = float(np.mean([sum(float((r.mean_grad[k] - pooled[k]).pow(2).sum()) for k in names)
                             for r in reports]))
    within = float(traces.mean())
    return TProfile(edges=edges, centres=(edges[:-1] + edges[1:]) / 2, traces=traces,
                    mean_grad_sq_norms=np.array([r.mean_grad_sq_norm for r in reports]),
                    mean_losses=np.array([r.mean_loss for r in reports]), n_per_bin=reports[0].n,
                    within=within, between=between, total=within + between, reports=reports)


def repeated_estimates(model: nn.Module, loss: CFMLoss, coupling: Coupling, n_samples: int, repeats: int = 30,
                       seed: int = 0, *, statistic: Statistic = "trace", **options: object) -> np.ndarray:
    """R = ``repeats`` independent estimates of ``statistic`` (default the plug-in trace), shape (R,).

    Repeat r draws its ``n_samples`` paths from ``torch.Generator().manual_seed(seed + r)``, so the
    estimates are independent and reproducible; feed two such arrays to :func:`flowvar.stats.compare`.
    ``normalised`` = None (0/0) becomes NaN. ``options`` go to :func:`estimate_variance`.
    """
    repeats = check_positive_int("repeats", repeats)
    if statistic not in STATISTICS:
        raise ConfigError(f"unknown statistic {statistic!r}; choose one of {list(STATISTICS)}")
    out = np.empty(repeats)
    for r in range(repeats):
        gen = torch.Generator().manual_seed(int(seed) + r)
        out[r] = estimate_variance(model, loss, coupling, n_samples, gen, **options).statistic(statistic)  # type: ignore[arg-type]
    return out
