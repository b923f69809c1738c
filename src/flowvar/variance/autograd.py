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

Per-sample gradients exist only when each ℓ_k depends on sample k alone. Autograd evaluates the model on one
sample at a time, so a forward that couples the samples of a batch would silently differentiate another function
than the batched one (and disagree with the engine, which follows the batch). :class:`GradientStream` therefore
refuses batch-statistics modules (the engine's own check) and compares the per-sample outputs of its first chunk's
gradient pass with one batched no-grad forward of that chunk (cost: :meth:`GradientStream.__call__`).

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
from flowvar.seeding import forked_global_rng
from flowvar.variance.engine import _coupling_problem
from flowvar.variance.report import GroupBy, RunningMoments, VarianceReport, group_name, normalised_variance
from flowvar.variance.rules.fallback import _eager

__all__ = [
    "METHODS", "STRATEGIES", "GradientStream", "Method", "Strategy", "VarianceAccumulator",
    "is_vmap_control_flow_error", "model_device", "path_chunks", "path_to_device", "per_sample_gradients",
    "slice_path", "variance_parameters",
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
    :meth:`flowvar.gaussian.GaussianProblem.pair_optimal_field`, the fields of the fig4/fig5/prop1 experiments)
    are frozen by default. :class:`~flowvar.variance.GradientVarianceMonitor` measures what the training step's
    backward pass reaches, i.e. the trainable parameters: compare it with ``trainable_only=True``.
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


def model_device(model: nn.Module) -> torch.device | None:
    """The device of the model's parameters, or None when they span several devices (model parallel: the caller
    places the data) or there are none."""
    devices = {p.device for p in model.parameters()}
    return devices.pop() if len(devices) == 1 else None


def path_to_device(path: PathSample, device: torch.device | None) -> PathSample:
    """``path`` on ``device`` (:meth:`PathSample.to`), unchanged when ``device`` is None (parameters on several
    devices: the caller places the data)."""
    return path if device is None else path.to(device)


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
                    ) -> tuple[dict[str, Tensor], Tensor, Tensor]:
    """Per-sample gradients {name: (B, *param.shape)}, losses (B,) and the model's outputs v (B, *shape), each
    sample evaluated alone (a batch of one), of one chunk via ``torch.func``."""
    params = variance_parameters(model, trainable_only)
    frozen = {name: p.detach() for name, p in model.named_parameters() if name not in params}
    buffers = dict(model.named_buffers())

    def sample_loss(p: dict[str, Tensor], x0: Tensor, x1: Tensor, t: Tensor, z: Tensor, xt: Tensor,
                    target: Tensor) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        outputs: list[Tensor] = []  # this call's v, kept to compare with the batched forward

        def field_fn(x: Tensor, tt: Tensor) -> Tensor:
            outputs.append(functional_call(model, (p, frozen, buffers), (x, tt)))
            return outputs[-1]

        one = PathSample(x0=x0[None], x1=x1[None], t=t[None], z=z[None], xt=xt[None], target=target[None])
        loss = per_sample_loss(field_fn, one)[0]  # type: ignore[arg-type]  # any callable (x, t) -> v works
        return loss, (loss.detach(), outputs[-1][0].detach())

    grad_fn = grad(sample_loss, has_aux=True)
    args = (path.x0, path.x1, path.t, path.z, path.xt, path.target)
    if strategy == "vmap":
        grads, (losses, outputs) = vmap(grad_fn, in_dims=(None, 0, 0, 0, 0, 0, 0), randomness="different")(
            params, *args)
        return {k: v.detach() for k, v in grads.items()}, losses.detach(), outputs.detach()
    rows = [grad_fn(params, *(a[i] for a in args)) for i in range(path.xt.shape[0])]
    grads = {k: torch.stack([r[0][k] for r in rows]).detach() for k in params}
    return grads, torch.stack([r[1][0] for r in rows]).detach(), torch.stack([r[1][1] for r in rows]).detach()


def _rounding_tolerance(dtype: torch.dtype, device: torch.device) -> float:
    """Relative tolerance between a batched and a one-sample evaluation of the same function: the engine's sum-check
    tolerances (float64 1e-8, float32 1e-3 — 1e-2 on a GPU allowed to use TF32 —, half types 3e-2)."""
    if dtype in (torch.float16, torch.bfloat16):
        return 3e-2
    if dtype == torch.float64:
        return 1e-8
    tf32 = torch.backends.cudnn.allow_tf32 or torch.get_float32_matmul_precision() != "highest"
    return 1e-2 if device.type == "cuda" and tf32 else 1e-3


_COUPLED_FORWARD = ("per-sample gradients are not defined for a forward that couples the samples of a batch "
                    "(batch statistics such as F.batch_norm(..., training=True), centring over the batch as in "
                    "h - h.mean(0), attention or pooling across the batch): method='autograd' evaluates one sample "
                    "at a time and method='fast' the whole batch, so they would give two different numbers, neither "
                    "of them a per-sample gradient variance. Put batch-statistics layers in eval mode "
                    "(model.eval()), or make the forward act on each sample alone (GroupNorm/LayerNorm instead of "
                    "BatchNorm)")


def _batched_outputs(model: nn.Module, path: PathSample) -> Tensor:
    """v for the whole chunk in one no-grad forward, with the global RNG forked
    (:func:`~flowvar.seeding.forked_global_rng`)."""
    with torch.no_grad(), forked_global_rng(path.xt.device):
        return model(path.xt, path.t)


def _check_per_sample(model: nn.Module, path: PathSample, batched: Tensor, per_sample: Tensor) -> None:
    """Raise :class:`ConfigError` when the one-sample outputs of the gradient pass differ from the batched forward's
    beyond rounding and the forward is deterministic: it then couples the samples of the batch. A random forward
    whose draws the two evaluations lay out differently (dropout under the loop strategy) passes unchecked."""
    name = type(model).__name__
    if not isinstance(batched, Tensor) or batched.shape != per_sample.shape:
        shape = tuple(batched.shape) if isinstance(batched, Tensor) else type(batched).__name__
        raise ShapeError(f"{name} returned {shape} for a batch of {path.xt.shape[0]} but {tuple(per_sample.shape[1:])} "
                         f"for each sample alone; a vector field must return one velocity per input point")
    if not (bool(torch.isfinite(batched).all()) and bool(torch.isfinite(per_sample).all())):
        return  # inf/NaN outputs are the field's own problem (the report shows them), not evidence of coupling
    scale = float(torch.maximum(batched.abs().max(), per_sample.abs().max()))
    gap = float((batched - per_sample).abs().max())
    tol = _rounding_tolerance(per_sample.dtype, per_sample.device)
    if gap <= tol * scale:  # also 0 <= 0 for an all-zero output
        return
    # dropout: per-sample and batched draws may differ (the loop strategy draws sample by sample); a forward that
    # gives two different outputs for the same batch is random, and a mismatch then says nothing about coupling
    with torch.no_grad(), forked_global_rng(path.xt.device):
        first, second = model(path.xt, path.t), model(path.xt, path.t)
    if float((first - second).abs().max()) > tol * scale:
        return
    raise ConfigError(f"{name}'s output for a sample depends on the other samples of its batch: evaluated one sample "
                      f"at a time it differs from one forward of the {path.xt.shape[0]}-sample batch by up to "
                      f"{gap:.3g} (largest |v| {scale:.3g}, rounding tolerance {tol:g} of it); {_COUPLED_FORWARD}")


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

    ``stream(chunk)`` → ({name: (b, *param.shape)}, losses (b,)) for a chunk of b samples, computed on the device
    of the model's parameters (the chunk is moved there: :func:`path_to_device`); ``method`` is resolved on
    construction (``"auto"``: the closed form for :class:`GaussianParametricField`, else autograd; ``"fast"`` is
    refused: it never materialises per-sample gradients).

    Autograd differentiates each sample alone, which is the per-sample gradient only when the model treats the
    samples of a batch independently. Construction refuses batch-statistics modules (``BatchNorm`` in training
    mode or without running statistics, ``Embedding(scale_grad_by_freq=True)``: the engine's check), and the first
    chunk's per-sample outputs are compared with one batched forward (:class:`ConfigError` beyond rounding). A
    forward that draws random numbers in a layout the two evaluations do not share (dropout under
    ``strategy="loop"``) cannot be compared this way and is not checked.
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
        self.device = model_device(model)
        if self.method == "autograd":
            problem = _coupling_problem(list(model.named_modules()))
            if problem is not None:
                raise ConfigError(problem)
        #: compare the next chunk's per-sample outputs with a batched forward (the first chunk of >= 2 samples)
        self.check_coupling = self.method == "autograd"

    @property
    def label(self) -> str:
        """How the gradients are computed, for :attr:`VarianceReport.method`: ``"closed_form"``,
        ``"autograd-vmap"`` or ``"autograd-loop"``."""
        if self.method == "closed_form":
            return "closed_form"
        return "autograd-loop" if self.strategy == "loop" else "autograd-vmap"

    def __call__(self, path: PathSample) -> tuple[dict[str, Tensor], Tensor]:
        """Per-sample gradients {name: (b, *param.shape)} and losses (b,) of the b samples of ``path``.

        Cost of the coupling check: one no-grad forward of the stream's first chunk (of >= 2 samples), against a
        forward and a backward pass per sample for the gradients of every chunk. On one CPU thread, b = 1024: a
        width-256, depth-3 MLPField 4.7 ms against 280 ms for the vmapped gradients (1.7 %) and 1.6 s for the loop
        (0.3 %); a width-64 one 0.7 ms against 6 ms (11 % of a one-chunk call, ~0 over many chunks).
        """
        path = path_to_device(path, self.device)
        if self.method == "closed_form":
            assert isinstance(self.model, GaussianParametricField)
            return _closed_form_chunk(self.model, path, self.trainable_only)
        check = self.check_coupling and path.xt.shape[0] >= 2
        # before the gradient pass, in a fork of the global RNG: the gradient pass then draws what this forward
        # drew (vmap lays out dropout masks as a batched call does), and its numbers are those of no check at all
        batched = _batched_outputs(self.model, path) if check else None
        grads, losses, outputs = self._gradients(path)
        if batched is not None:
            _check_per_sample(self.model, path, batched, outputs)
            self.check_coupling = False  # coupling is a property of the forward: one chunk shows it
        return grads, losses

    def _gradients(self, path: PathSample) -> tuple[dict[str, Tensor], Tensor, Tensor]:
        # eagerly, whatever torch.compile did to the model: ``model.compile()`` compiles the module in place, and
        # vmap over it made dynamo trace the forward under functorch's batching — with a monitor's hooks on the
        # module (flowvar.variance.owned) that failed deep in dynamo (AssertionError "False != True", review integR
        # 2). The module's own Python forward is what the compiled code computes (the fallback's recomputation
        # does the same: rules/fallback.py).
        with _eager():
            return self._gradients_eager(path)

    def _gradients_eager(self, path: PathSample) -> tuple[dict[str, Tensor], Tensor, Tensor]:
        try:
            if self.strategy == "loop":
                return _autograd_chunk(self.model, path, "loop", self.trainable_only)
            try:
                out = _autograd_chunk(self.model, path, "vmap", self.trainable_only)
            except RuntimeError as error:
                if self.strategy == "vmap" or not is_vmap_control_flow_error(error):
                    raise
                self.strategy = "loop"  # e.g. GaussianParametricField's singularity check
                return _autograd_chunk(self.model, path, "loop", self.trainable_only)
        except ValueError as error:  # F.batch_norm(..., training=True) on a batch of one sample
            if "Expected more than 1 value per channel" in str(error):
                raise ConfigError(f"{type(self.model).__name__} normalises with batch statistics ({error}): "
                                  f"{_COUPLED_FORWARD}") from error
            raise
        self.strategy = "vmap"
        return out


def per_sample_gradients(model: nn.Module, path: PathSample, chunk_size: int = 1024, *, method: Method = "autograd",
                         strategy: Strategy = "auto", trainable_only: bool = False) -> dict[str, Tensor]:
    """Exact per-sample gradients g_k = ∇_θ ℓ_k(θ; x0_k, x1_k, t_k, z_k), ℓ_k = ‖u_k − v_θ(x_t,k, t_k)‖².

    ``path``: K samples (``xt``, ``target``: (K, *shape), ``t``: (K,)). Returns {name: (K, *param.shape)}
    for every parameter, frozen ones included (``trainable_only=True``: only those with ``requires_grad``; see
    :func:`variance_parameters`), in the parameter dtype (float64 for ``method="closed_form"``), on the device of
    the model's parameters (``path`` is moved there chunk by chunk). Chunks of ``chunk_size`` samples bound the
    memory of the vectorised backward pass. ``strategy``: ``"vmap"`` (``torch.func.vmap(grad(ℓ))`` with
    ``randomness="different"``: each sample its own dropout mask), ``"loop"`` (one ``torch.func.grad`` call
    per sample) or ``"auto"`` (vmap, falling back to the loop when the model uses data-dependent control
    flow, as GaussianParametricField's singularity check does).

    Raises :class:`ConfigError` for a model whose forward couples the samples of a batch (BatchNorm in training
    mode, centring or attention over the batch: see :class:`GradientStream`): per-sample gradients through batch
    statistics are not defined. Put batch-norm models in eval mode first.
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
    The per-sample losses ℓ_k and squared deviations d_k = ‖g_k − c‖² (c: the first chunk's mean gradient) are
    merged the same way (:class:`RunningMoments`), for the standard errors of the mean loss and of the trace
    (:attr:`VarianceReport.loss_sd`, :attr:`VarianceReport.trace_sd`).
    ``report(group_by, method)`` turns the moments into a :class:`VarianceReport`.
    """

    def __init__(self) -> None:
        self.n = 0
        self.mean: dict[str, Tensor] = {}
        self.m2: dict[str, float] = {}
        self.shapes: dict[str, torch.Size] = {}
        self.loss_sum = 0.0
        self.centre: dict[str, Tensor] = {}
        self.losses, self.deviations = RunningMoments(), RunningMoments()

    def update(self, grads: dict[str, Tensor], losses: Tensor) -> None:
        """Merge one chunk: ``grads`` {name: (b, *shape)}, ``losses`` (b,)."""
        b = int(losses.shape[0])
        if b == 0:
            return
        if self.n and set(grads) != set(self.mean):
            raise ConfigError(f"gradient chunks disagree on the parameters: {sorted(grads)} vs {sorted(self.mean)}")
        n_new = self.n + b
        deviation: Tensor | float = 0.0  # Σ over parameters of ‖g_k − c‖², on the gradients' device (one transfer)
        for name, g in grads.items():
            if g.shape[0] != b:
                raise ShapeError(f"gradient of {name!r} has {g.shape[0]} rows for {b} losses")
            flat = g.detach().to(torch.float64).reshape(b, -1)
            m_b = flat.mean(0)
            centre = self.centre.setdefault(name, m_b)
            deviation = deviation + (flat - centre).pow(2).sum(1)
            m2_b = float((flat - m_b).pow(2).sum())
            if self.n == 0:
                self.mean[name], self.m2[name], self.shapes[name] = m_b, m2_b, g.shape[1:]
            else:
                delta = m_b - self.mean[name]
                self.mean[name] = self.mean[name] + delta * (b / n_new)
                self.m2[name] += m2_b + float(delta.dot(delta)) * (self.n * b / n_new)
        self.loss_sum += float(losses.detach().to(torch.float64).sum())
        self.losses.update(losses)
        self.deviations.update(deviation if isinstance(deviation, Tensor) else torch.zeros(b))  # no parameters: 0
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
            loss_sd=self.losses.sd, trace_sd=self.deviations.sd,
        )
