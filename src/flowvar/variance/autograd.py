"""Per-sample gradients by autograd or in closed form, and their streaming float64 moments.

The exact path of :mod:`flowvar.variance`: it materialises the per-sample gradients g_k = ∇_θ ℓ_k of the
CFM loss ℓ_k = ‖u_k − v_θ(x_t,k, t_k)‖² (:func:`flowvar.loss.per_sample_loss`) one chunk of samples at a
time and folds them into :class:`VarianceAccumulator`.

Per-sample gradients come from autograd (``torch.func``: ``vmap(grad(ℓ))`` over samples, falling back to a
loop over single samples for models with data-dependent control flow, which ``vmap`` rejects) or, for
:class:`~flowvar.models.GaussianParametricField`, from the closed form
:func:`flowvar.gaussian.parametric_per_sample_grads` (∇_θ ℓ = 2 A^{-T} r, ∇_Θ ℓ = 2 (A^{-T} r) wᵀ).

Numerics. Gradients are accumulated in float64 chunk by chunk with the pairwise (Chan et al.) update of
the mean and of the sum of squared deviations, so memory is bounded by one chunk whatever K is, and the
result does not suffer the cancellation of E‖g‖² − ‖ḡ‖² when ‖ḡ‖² ≫ trace.

The helpers :func:`variance_parameters` (what g differentiates), :func:`path_chunks` and
:func:`is_vmap_control_flow_error` are shared with the one-pass engine (:mod:`flowvar.variance.engine`).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Literal

import torch
from torch import Tensor, nn
from torch.func import functional_call, grad, vmap

from flowvar.errors import ConfigError, DataError, ShapeError, check_positive_int
from flowvar.gaussian import parametric_per_sample_grads
from flowvar.interpolants import PathSample
from flowvar.loss import per_sample_loss
from flowvar.models.parametric import GaussianParametricField
from flowvar.variance.report import GroupBy, VarianceReport, group_name, normalised_variance

__all__ = [
    "METHODS", "STRATEGIES", "GradientStream", "Method", "Strategy", "VarianceAccumulator",
    "is_vmap_control_flow_error", "path_chunks", "per_sample_gradients", "slice_path", "variance_parameters",
]

Method = Literal["auto", "autograd", "closed_form", "fast"]
Strategy = Literal["auto", "vmap", "loop"]

METHODS: tuple[str, ...] = ("auto", "autograd", "closed_form", "fast")
STRATEGIES: tuple[str, ...] = ("auto", "vmap", "loop")


# --------------------------------------------------------------------------------------------- helpers


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


def slice_path(path: PathSample, start: int, stop: int) -> PathSample:
    """Rows [start, stop) of every field of a path sample."""
    return PathSample(x0=path.x0[start:stop], x1=path.x1[start:stop], t=path.t[start:stop],
                      z=path.z[start:stop], xt=path.xt[start:stop], target=path.target[start:stop])


def path_chunks(path: PathSample, chunk_size: int) -> Iterator[PathSample]:
    """Consecutive chunks of ``chunk_size`` samples of a path sample (the last may be shorter), after checking
    that the sample is not empty and its fields agree: ``t`` (B,), ``target`` the shape of ``xt``."""
    n = path.xt.shape[0]
    if n == 0:
        raise DataError("the path sample is empty; draw at least two samples to estimate a variance")
    if path.t.shape != (n,) or path.target.shape != path.xt.shape:
        raise ShapeError(f"inconsistent path sample: xt {tuple(path.xt.shape)}, t {tuple(path.t.shape)}, target "
                         f"{tuple(path.target.shape)}; t must be (B,) and target the shape of xt")
    chunk_size = check_positive_int("chunk_size", chunk_size)
    for start in range(0, n, chunk_size):
        yield slice_path(path, start, min(start + chunk_size, n))


def is_vmap_control_flow_error(error: RuntimeError) -> bool:
    """Whether ``torch.func.vmap`` refused a function for branching on tensor values (data-dependent control
    flow or ``.item()``): the caller may then loop over single samples instead."""
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
        raise ConfigError("method='fast' (flowvar.variance.engine) never materialises per-sample gradients; use "
                          "method='autograd' or 'closed_form' to get them")
    if method == "closed_form" and not isinstance(model, GaussianParametricField):
        raise ConfigError(f"method='closed_form' needs a GaussianParametricField, got {type(model).__name__}; "
                          f"use method='autograd' (or 'auto') for other models")
    if method == "auto":
        return "closed_form" if isinstance(model, GaussianParametricField) else "autograd"
    return method


class GradientStream:
    """Per-sample gradients and losses of one path chunk at a time; resolves ``strategy="auto"`` once
    (vmap, else the loop when the model branches on tensor values).

    ``stream(chunk)`` → ({name: (b, *param.shape)}, losses (b,)) for a chunk of b samples; ``method`` is
    resolved on construction (``"auto"``: the closed form for :class:`GaussianParametricField`, else
    autograd; ``"fast"`` is refused: it never materialises per-sample gradients).
    """

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
        """How the gradients are computed, for :attr:`VarianceReport.method`: ``"closed_form"``,
        ``"autograd-vmap"`` or ``"autograd-loop"``."""
        if self.method == "closed_form":
            return "closed_form"
        return "autograd-loop" if self.strategy == "loop" else "autograd-vmap"

    def __call__(self, path: PathSample) -> tuple[dict[str, Tensor], Tensor]:
        """Per-sample gradients {name: (b, *param.shape)} and losses (b,) of the b samples of ``path``."""
        if self.method == "closed_form":
            assert isinstance(self.model, GaussianParametricField)
            return _closed_form_chunk(self.model, path, self.trainable_only)
        if self.strategy == "loop":
            return _autograd_chunk(self.model, path, "loop", self.trainable_only)
        try:
            out = _autograd_chunk(self.model, path, "vmap", self.trainable_only)
        except RuntimeError as error:
            if self.strategy == "vmap" or not is_vmap_control_flow_error(error):
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
    stream = GradientStream(model, method, strategy, trainable_only)
    parts: dict[str, list[Tensor]] = {}
    for chunk in path_chunks(path, chunk_size):
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
