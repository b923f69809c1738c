"""The public estimators of tr Cov(g): at fixed parameters, over given paths or fresh draws, per t-bin, repeated.

Every estimator takes ``method``: ``"closed_form"`` (:class:`~flowvar.models.GaussianParametricField`
only), ``"autograd"`` (any model; per-sample gradients by ``torch.func``, :mod:`flowvar.variance.autograd`),
``"auto"`` (the closed form where available) or ``"fast"`` (the one-pass engine,
:mod:`flowvar.variance.engine`: per-sample gradient norms and sums from one forward and one backward pass per
chunk, without materialising per-sample gradients; a :class:`~flowvar.variance.report.FastVarianceReport`
that adds per-layer traces, optional element-wise variances and the parameters that needed the exact
``torch.func`` fallback). The fast engine sums raw moments (E‖g‖², ḡ) in float64 rather than Chan's update,
so its relative rounding error is about eps · ‖ḡ‖² / trace.

Conventions shared by every estimator here:

* **Parameters.** ``trainable_only=False`` (the default) measures every parameter, frozen ones included: the
  experiments measure fields built for evaluation, which are frozen (:func:`variance_parameters`).
  :class:`~flowvar.variance.GradientVarianceMonitor` measures what the training step's backward pass reaches,
  the trainable parameters only; pass ``trainable_only=True`` to compare an estimate with its log.
* **Device.** Paths are drawn on the generator's device (the CPU) and each chunk is moved to the device of the
  model's parameters (as :func:`flowvar.train.train` does), so a model on a GPU needs nothing more, and the random
  stream, hence the estimate up to the device's rounding, does not depend on where the model is.
* **Batch coupling.** Per-sample gradients exist only for a forward that treats the samples of a batch
  independently; ``"autograd"`` refuses one that does not (:class:`~flowvar.variance.autograd.GradientStream`),
  ``"fast"`` refuses batch-statistics modules but cannot see coupling written with functions in a forward.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator

import numpy as np
import torch
from torch import Tensor, nn

from flowvar.couplings import Coupling
from flowvar.errors import ConfigError, check_finite, check_positive_int, check_unit_times
from flowvar.interpolants import PathSample, UniformTime
from flowvar.loss import CFMLoss, check_loss_and_coupling, per_sample_loss
from flowvar.models.base import first_call
from flowvar.variance.autograd import (
    GradientStream,
    Method,
    Strategy,
    VarianceAccumulator,
    model_device,
    path_chunks,
    path_to_device,
    variance_parameters,
)
from flowvar.variance.engine import GradNormEngine
from flowvar.variance.moments import BatchGradStats, MomentAccumulator
from flowvar.variance.records import DEFAULT_CHUNK_BYTES
from flowvar.variance.report import STATISTICS, FastVarianceReport, GroupBy, Statistic, TProfile, VarianceReport

__all__ = [
    "batch_grad_stats", "estimate_variance", "fast_gradient_variance", "gradient_variance", "repeated_estimates",
    "variance_t_profile",
]

# --------------------------------------------------------------------------------------------- estimators


def check_path_values(path: PathSample) -> None:
    """Raise :class:`DataError` unless the fields the loss reads are usable: ``t`` in [0, 1] and ``xt``, ``target``
    finite. A hand-built :class:`PathSample` skips the interpolant's checks, and a time outside [0, 1] or a NaN gives
    a finite-looking or NaN trace silently (one reduction per field; skipped on the data-less meta device)."""
    check_unit_times(path.t, path.t)
    for name in ("xt", "target"):
        value = getattr(path, name)
        if value.device.type != "meta":
            check_finite(f"the path's {name}", value)


def _stream_chunk(stream: GradientStream, model: nn.Module, chunk: PathSample) -> tuple[dict[str, Tensor], Tensor]:
    """``stream(chunk)`` on the model's device, a failure of the user's model on it named by
    :func:`~flowvar.models.base.first_call` (a forward(t, x), a dtype mismatch), as :func:`flowvar.train.train`
    names it. Moving the chunk here first costs nothing: the stream would move it itself."""
    chunk = path_to_device(chunk, stream.device)
    return first_call(lambda: stream(chunk), model, chunk.xt, chunk.t)


def gradient_variance(model: nn.Module, path: PathSample, method: Method = "auto", chunk_size: int = 1024, *,
                      group_by: GroupBy = "parameter", strategy: Strategy = "auto",
                      trainable_only: bool = False) -> VarianceReport:
    """tr Cov(g) of the per-sample CFM gradients over the K samples of ``path``, at the model's parameters.

    ``path``: K >= 2 draws (``xt``, ``target``: (K, *shape), ``t``: (K,)), e.g. ``loss.draw(coupling, K, gen)``,
    on any device: each chunk is moved to the model's. ``method``: ``"closed_form"`` (GaussianParametricField
    only, float64), ``"autograd"`` (any model whose forward treats the samples of a batch independently, else
    :class:`ConfigError`; see :func:`per_sample_gradients` for ``strategy``) or ``"auto"`` (closed form where
    available). ``chunk_size`` bounds memory; the result does not depend on it beyond rounding.
    ``group_by`` sets the keys of ``per_group`` (see :func:`group_name`). ``method="fast"``: the engine of
    :mod:`flowvar.variance.engine` (one forward and one backward pass per chunk; ``strategy`` does not apply).

    ``trainable_only=False`` (default): every parameter, frozen ones included, so a model with a frozen layer gives a
    larger trace than :class:`~flowvar.variance.GradientVarianceMonitor`, which measures the trainable parameters
    that the training step's backward pass reaches; ``trainable_only=True`` gives the monitor's number.
    """
    if method == "fast":
        return fast_gradient_variance(model, path, chunk_size, group_by=group_by, trainable_only=trainable_only)
    check_path_values(path)
    stream = GradientStream(model, method, strategy, trainable_only)
    acc = VarianceAccumulator()
    for chunk in path_chunks(path, chunk_size):
        acc.update(*_stream_chunk(stream, model, chunk))
    return acc.report(group_by, stream.label)


def estimate_variance(model: nn.Module, loss: CFMLoss, coupling: Coupling, n_samples: int,
                      generator: torch.Generator | None = None, *, method: Method = "auto", chunk_size: int = 1024,
                      draw_chunk: int = 16384, group_by: GroupBy = "parameter", strategy: Strategy = "auto",
                      trainable_only: bool = False) -> VarianceReport:
    """Draw ``n_samples`` paths with ``loss.draw(coupling, ·, generator)`` and report their gradient variance.

    Paths are drawn ``draw_chunk`` at a time and folded into the float64 moments as they come, so memory is
    bounded for any ``n_samples``. The random stream depends on ``draw_chunk``; for couplings that pair
    within a batch (``coupling.pairs_within_batch``: :class:`~flowvar.couplings.ExactOTCoupling`) ``draw_chunk`` is
    also the OT batch size, which is part of the coupling: every draw must then have the same size, so
    ``n_samples`` must be at most ``draw_chunk`` (one batch of ``n_samples``) or a multiple of it, else a
    :class:`ConfigError` (a last, smaller batch would mix in a different coupling). Pass the batch size you train
    with as ``draw_chunk``: the default 16384 solves OT problems of 16384 points (a 2 GB float64 cost matrix).
    ``generator``: a ``torch.Generator`` (a CPU one for CPU couplings) or None (torch's global one), not an int:
    for a seed s pass ``torch.Generator().manual_seed(s)`` (what :func:`repeated_estimates` does). Paths are
    drawn where the coupling draws (the CPU for flowvar's distributions) and moved, chunk by chunk, to the device
    of the model's parameters, so a model on a GPU works as it is and the draws do not depend on its device.

    ``trainable_only=False`` (default) counts frozen parameters too, unlike
    :class:`~flowvar.variance.GradientVarianceMonitor` (trainable parameters only); other options as in
    :func:`gradient_variance`.
    """
    check_loss_and_coupling(loss, coupling, "estimate_variance(model, loss, coupling, n_samples, generator)")
    n_samples = check_positive_int("n_samples", n_samples)
    draw_chunk = check_positive_int("draw_chunk", draw_chunk)
    if getattr(coupling, "pairs_within_batch", False) and n_samples > draw_chunk and n_samples % draw_chunk:
        whole = n_samples // draw_chunk
        raise ConfigError(f"{type(coupling).__name__} pairs within each draw of draw_chunk={draw_chunk} points (its "
                          f"batch size is part of the coupling), so n_samples={n_samples} would mix {whole} batch(es) "
                          f"of {draw_chunk} with one of {n_samples - whole * draw_chunk}; pass n_samples a multiple "
                          f"of draw_chunk (e.g. {whole * draw_chunk} or {(whole + 1) * draw_chunk}), or a draw_chunk "
                          f"that divides it")
    if method == "fast":
        fast = MomentAccumulator()
        for chunk in _drawn_chunks(loss, coupling, n_samples, generator, draw_chunk, chunk_size):
            fast.update(batch_grad_stats(model, chunk, trainable_only=trainable_only))
        return fast.report(group_by, "fast")
    stream = GradientStream(model, method, strategy, trainable_only)
    acc = VarianceAccumulator()
    for chunk in _drawn_chunks(loss, coupling, n_samples, generator, draw_chunk, chunk_size):
        acc.update(*_stream_chunk(stream, model, chunk))
    return acc.report(group_by, stream.label)


def _drawn_chunks(loss: CFMLoss, coupling: Coupling, n_samples: int, generator: torch.Generator | None,
                  draw_chunk: int, chunk_size: int) -> Iterator[PathSample]:
    """:func:`estimate_variance`'s paths: ``n_samples`` drawn ``draw_chunk`` at a time, each draw checked
    (:func:`check_path_values`: a coupling's own data may hold NaN, Pairs does not check) and cut into chunks of
    ``chunk_size`` for the gradient pass."""
    for start in range(0, n_samples, draw_chunk):
        path = loss.draw(coupling, min(draw_chunk, n_samples - start), generator)
        check_path_values(path)
        yield from path_chunks(path, chunk_size)


def variance_t_profile(model: nn.Module, loss: CFMLoss, coupling: Coupling, n_samples: int, t_bins: int = 20,
                       generator: torch.Generator | None = None, *, t_range: tuple[float, float] = (0.0, 1.0),
                       n_bins: int | None = None, **options: object) -> TProfile:
    """tr Cov(g | t ∈ bin) for ``t_bins`` equal bins of ``t_range``, ``n_samples`` draws **per bin**.

    Bin b replaces the loss's time sampler by U(edges[b], edges[b+1]) and keeps its interpolant; the bins
    are drawn in order from ``generator``. ``options`` go to :func:`estimate_variance` (``method``,
    ``chunk_size``, ``draw_chunk``, ``group_by``, ``strategy``, ``trainable_only``). See :class:`TProfile` for
    how the bins add up to the total.

    ``t_bins`` is named as in :func:`batch_grad_stats` and :class:`~flowvar.variance.GradientVarianceMonitor`;
    ``n_bins=``, its earlier name, still works with a ``FutureWarning``. The generator comes after
    ``t_bins`` (unlike :func:`estimate_variance`, where it follows ``n_samples``): pass it as ``generator=``.

    ``traces[b]`` is bin b's **plug-in** trace, (1/n) Σ_k ‖g_k − ḡ_b‖² over its n = ``n_samples`` draws, like
    :attr:`VarianceReport.trace`; ``within``, ``between`` and ``total`` are built from plug-in values too. Its
    unbiased version is ``reports[b].trace_unbiased`` = n/(n − 1) · ``traces[b]`` (every bin has the same n, so
    the factor does not change a comparison of bins). The engine's and the monitor's per-bin traces
    (:meth:`BatchGradStats.bins`, the monitor's ``t_profile``) are the unbiased ones, n_k/(n_k − 1) · plug-in,
    because their bins hold unequal random counts n_k.
    """
    if n_bins is not None:
        warnings.warn("variance_t_profile(n_bins=...) is now t_bins=...; n_bins will be removed", FutureWarning,
                      stacklevel=2)
        t_bins = n_bins
    if isinstance(t_bins, torch.Generator):
        raise ConfigError("variance_t_profile's fifth argument is the number of t-bins, got a torch.Generator; pass "
                          "it by name: variance_t_profile(model, loss, coupling, n_samples, t_bins, generator=gen)")
    n_bins = check_positive_int("t_bins", t_bins)
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
    estimates are independent and reproducible (repeat r equals :func:`estimate_variance` with that generator);
    feed two such arrays to :func:`flowvar.stats.compare`. ``seed``: an integer (a ``torch.Generator`` is refused:
    R independent streams need R seeds). ``normalised`` = None (0/0) becomes NaN. ``options`` go to
    :func:`estimate_variance`.
    """
    repeats = check_positive_int("repeats", repeats)
    if isinstance(seed, bool | np.bool_) or not isinstance(seed, int | np.integer):
        hint = (" (the generator's own seed is generator.initial_seed())" if isinstance(seed, torch.Generator)
                else "")
        raise ConfigError(f"repeated_estimates takes an integer seed (repeat r draws from "
                          f"torch.Generator().manual_seed(seed + r)), got {type(seed).__name__}{hint}; pass an "
                          f"int, e.g. seed=0")
    if statistic not in STATISTICS:
        raise ConfigError(f"unknown statistic {statistic!r}; choose one of {list(STATISTICS)}")
    out = np.empty(repeats)
    for r in range(repeats):
        gen = torch.Generator().manual_seed(int(seed) + r)
        out[r] = estimate_variance(model, loss, coupling, n_samples, gen, **options).statistic(statistic)  # type: ignore[arg-type]
    return out


# --------------------------------------------------------------------------------------------- fast engine, one shot


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
    untouched), on the device of the model's parameters (``path`` is moved there). ``trainable_only=False``
    measures frozen parameters too (requires_grad is switched on for the pass and restored).
    ``t_bins``: per-t-bin sums for :meth:`BatchGradStats.bins`.
    """
    path = path_to_device(path, model_device(model))
    with _Requires(model, trainable_only) as params:
        engine = GradNormEngine(model, elementwise=elementwise, chunk_bytes=chunk_bytes)
        try:
            # a forward(t, x) or a dtype mismatch named, as train() names it (free when the call succeeds)
            losses = first_call(lambda: per_sample_loss(model, path), model, path.xt, path.t)
            torch.autograd.grad(losses.sum(), params, allow_unused=True)
            return engine.compute(losses.shape[0], reduction="sum", losses=losses.detach(), t=path.t,
                                  t_bins=t_bins, validate=validate)
        finally:
            engine.detach()


def fast_gradient_variance(model: nn.Module, path: PathSample, chunk_size: int = 1024, *,
                           group_by: GroupBy = "parameter", trainable_only: bool = False, elementwise: bool = False,
                           validate: bool = False, chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> FastVarianceReport:
    """tr Cov(g) over the K samples of ``path`` with the fast engine, ``chunk_size`` samples per forward pass.

    Same estimate as :func:`gradient_variance` (plug-in trace, per-group split, ‖ḡ‖²,
    normalised), plus ``per_layer``, ``elementwise`` (when asked) and the ``fallback`` report.
    """
    check_path_values(path)
    acc = MomentAccumulator()
    for chunk in path_chunks(path, chunk_size):
        acc.update(batch_grad_stats(model, chunk, elementwise=elementwise, trainable_only=trainable_only,
                                    validate=validate, chunk_bytes=chunk_bytes))
    return acc.report(group_by, "fast")
