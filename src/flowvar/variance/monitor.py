"""A gradient-variance monitor for any PyTorch training loop, and for :func:`flowvar.train.train`.

Every ``every`` steps it logs, from the step's own forward and backward pass (no extra pass; the exact
engine of :mod:`flowvar.variance.engine`):

* ``loss``: the batch mean of the per-sample losses ℓ_i;
* ``trace``: the plug-in tr Cov(g) = (1/B) Σ_i ‖g_i‖² − ‖ḡ‖² over the batch's per-sample gradients
  g_i = ∇_θ ℓ_i, and ``trace_unbiased`` = B/(B − 1) · trace (the minibatch gradient's own covariance trace
  is trace/B);
* ``normalised``: tr Cov(g) / ‖E g‖² with both parts unbiased (:func:`flowvar.variance.normalised_variance`;
  0.0 when the trace is 0 < ‖ḡ‖², NaN for 0/0 (trace = 0 = ‖ḡ‖²), inf when the mean gradient is not resolved from
  the noise);
* ``mean_grad_sq_norm`` ‖ḡ‖² and ``mean_sq_norm`` (1/B) Σ_i ‖g_i‖²;
* a per-t-bin profile when t is known: t ∈ [0, 1] cut into ``t_bins`` equal bins, and per bin the sample
  count, the mean loss, the mean ‖g_i‖² and, on every ``profile_every``-th logged step, the conditional
  trace n_k/(n_k − 1) [(1/n_k) Σ_{i∈k} ‖g_i‖² − ‖ḡ_k‖²], unbiased for every bin count n_k (it costs about
  one extra weight-gradient product per
  layer, the rest is free);
* ``per_layer`` traces (JSON logs), and which parameters needed the exact fallback.

Logs go to ``monitor.history`` and, with ``log_path``, to a CSV (``.csv``, a row per logged step), JSON
lines (``.jsonl``) or one JSON document (``.json``, rewritten atomically at every log); :meth:`plot` writes a
PNG of the whole run. A new run replaces an existing log at ``log_path`` (with a warning on this module's logger). A
resumed run — one given an earlier monitor's state by :meth:`load_state_dict`, as :func:`flowvar.train.train` and the
Lightning callback do from their checkpoints — continues it instead: the rows before this monitor's first logged step
are kept (the history up to the checkpoint), later ones are dropped (the interrupted run logged them after its
checkpoint); the file is rewritten atomically. Its own state (the memorisation detector's peaks and streak, the
records logged, the arming of its hooks: :meth:`state_dict`) is saved in those checkpoints, so a resumed run flags
and profiles on the same steps as an uninterrupted one, and trains bit-identically to it.

Attaching the monitor changes ``.grad`` of the layers the engine owns by rounding on measured steps (``own_grads``,
class docstring); ``own_grads=False`` keeps training bit-identical to an unmonitored run.

Memorisation signature (arXiv 2510.18118, Prop. 1–2): under a deterministic interpolant (σ = 0) a field
that fits every training pair's straight line has per-sample losses and gradients all ≈ 0, so loss and
gradient variance collapse together and SGD never leaves that solution. The monitor flags it when both the
loss and the trace fall to ≤ ``collapse_ratio`` × their peaks so far (or ≤ ``collapse_atol``) for
``patience`` consecutive logs, and issues a :class:`MemorisationWarning` once. It is not flagged when the
interpolant is known to be noisy (σ > 0), whose loss cannot reach 0.

In your own loop (any model and per-sample loss; the backward pass must be of the losses' mean or sum
only)::

    monitor = GradientVarianceMonitor(model, every=10, log_path="gradvar.csv", sigma=0.0)
    for step in range(steps):
        losses = ((model(xt, t) - ut) ** 2).flatten(1).sum(1)     # (B,)
        optimizer.zero_grad()
        losses.mean().backward()                                   # exactly these losses' mean
        monitor.step(step, losses, t, coordinate_reduction="sum")  # before optimizer.step()
        optimizer.step()
    monitor.close()
    monitor.plot("gradvar.png")

With flowvar's trainer: ``train(model, loss, coupling, config, callbacks=[GradientVarianceMonitor(model)])``.

Why this module is long: it is the one user-facing wrapper of the engine, and each of its parts guards a silently
wrong log — the step bookkeeping, the loss-scale check with the mistakes it names, the error texts that name the fix,
the resumable logs in three formats and the plot —; each is a short method, and splitting them would leave the class's
checks and its messages in different files.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import numbers
import os
import time
import warnings
from pathlib import Path
from typing import Any, Literal, TextIO

import numpy as np
import torch
from torch import Tensor, nn

from flowvar import distributed
from flowvar.errors import ConfigError, DataError, ShapeError, check_positive_int
from flowvar.files import atomic_write_text
from flowvar.interpolants import PathSample
from flowvar.results import to_jsonable
from flowvar.variance.arming import Arming, SkippedLogWarning
from flowvar.variance.engine import UNRECORDED, BatchMismatchError, GradNormEngine, Reduction, UnplannedParametersError
from flowvar.variance.moments import BatchGradStats
from flowvar.variance.ranks import meet_ranks, reduce_across_ranks
from flowvar.variance.records import DEFAULT_CHUNK_BYTES
from flowvar.variance.report import FastVarianceReport

__all__ = ["SCALARS", "CoordinateReduction", "GradientVarianceMonitor", "LossScaleWarning", "MemorisationWarning",
           "NonFiniteLossWarning", "SkippedLogWarning"]

SCALARS: tuple[str, ...] = ("loss", "trace", "trace_unbiased", "normalised", "mean_grad_sq_norm", "mean_sq_norm")

log = logging.getLogger(__name__)


class MemorisationWarning(UserWarning):
    """Loss and gradient variance collapsed together under a deterministic interpolant (see module docstring)."""


class NonFiniteLossWarning(UserWarning):
    """A logged step's per-sample losses (or its gradient statistics) hold NaN or Inf. A warning, not an error: the
    monitor observes a training loop and must not stop one that handles such steps itself (torch.amp.GradScaler
    skips a step whose gradients overflowed; :func:`flowvar.train.train` raises :class:`TrainingError` before its
    callbacks run). The record is logged with its non-finite values, and the memorisation detector ignores it."""


def _step_number(step: object) -> int:
    """``step`` as an int: an integer (Python, numpy, or a one-element integer tensor) or a float with an integral
    value; anything else is a :class:`ConfigError` (``int(1.5)`` logged 1.5 as step 1 silently)."""
    value = step.item() if isinstance(step, Tensor) and step.numel() == 1 else step
    if isinstance(value, bool | np.bool_) or not isinstance(value, numbers.Real) or \
            not (math.isfinite(value) and value == int(value)):
        raise ConfigError(f"step must be an integer (the training step's number), got {step!r}")
    return int(value)


class LossScaleWarning(UserWarning):
    """The backward pass was not of the per-sample losses given to :meth:`GradientVarianceMonitor.step` times the
    declared reduction and ``loss_scale`` (their mean over coordinates back-propagated while they sum over them, an
    undeclared gradient-accumulation factor or GradScaler scale), or the losses carry an unusual constant weight:
    in all but the last case every logged gradient statistic is off by a constant factor."""


#: The squared-error check of :meth:`GradientVarianceMonitor.step`: for ℓ_i = a‖v_i − u_i‖² the output gradient
#: satisfies ‖∂ℓ_i/∂v_i‖² = 4a ℓ_i. When the backward pass was of c_b‖v_i − u_i‖² per sample (after the declared
#: reduction and loss_scale) but the losses given are c‖v_i − u_i‖², the measured a is c_b²/c and every statistic is
#: (c_b/c)² × the true one. So a is one of the usual constants c (1: a sum over the D coordinates of a sample, 1/2,
#: 1/D: a mean, 1/(2D)) exactly when the two agree — or when a mistake maps one usual constant onto another, which
#: cannot be seen: at D = 2 the mean over coordinates back-propagated for losses summed over them gives 1/D² = 1/(2D),
#: and accumulation over k micro-batches without loss_scale gives 1/k², usual when k² = D or 2D. Declaring how the
#: losses reduce over coordinates (step(coordinate_reduction=...)) keeps only that convention's two constants, which
#: none of these mistakes maps onto each other.
SCALE_TOL = 2e-2
#: a_i counts as constant over the batch when its relative spread is below this (float32 rounding is ~1e-6).
SCALE_SPREAD = 1e-2
#: How many logged steps the check runs on. A mis-declared scale is a property of the training loop's code, so it
#: shows from the first logs; checking every log would add a few small reductions (and device syncs) forever.
SCALE_CHECKS = 5


def _near(x: float, y: float) -> bool:
    return abs(x - y) <= SCALE_TOL * abs(y)


#: How the per-sample losses given to :meth:`GradientVarianceMonitor.step` reduce a sample's squared error over its D
#: output coordinates: "sum" (‖v − u‖², or ½ of it), "mean" (its mean over coordinates, or ½ of it).
CoordinateReduction = Literal["sum", "mean"]


def _usual_scales(d: int, coordinates: CoordinateReduction | None = None) -> tuple[float, ...]:
    """The squared-error constants a of the usual loss conventions for D = ``d`` coordinates per sample: 1 (a sum
    over coordinates), 1/2, 1/D (a mean), 1/(2D) (:data:`SCALE_TOL`'s comment); only the first two for
    ``coordinates="sum"``, the last two for ``"mean"``."""
    if coordinates == "sum":
        return 1.0, 0.5
    if coordinates == "mean":
        return 1 / d, 0.5 / d
    return 1.0, 0.5, 1 / d, 0.5 / d


def _scale_causes(a: float, d: int, batch: int, coordinates: CoordinateReduction | None = None) -> list[str]:
    """The mistakes that give the constant ``a`` of :data:`SCALE_TOL`'s comment for D = ``d`` coordinates per sample
    and ``batch`` samples, each with its factor on the statistics (several may fit the same a); ``coordinates``: the
    declared coordinate reduction of the losses, which may itself be the mistake."""
    usual = _usual_scales(d)
    causes = []
    other: CoordinateReduction | None = None if coordinates is None else "mean" if coordinates == "sum" else "sum"
    if other is not None and any(_near(a, u) for u in _usual_scales(d, other)):
        causes.append(f"the losses given to step() are a {other} over the D = {d} coordinates, not a {coordinates} as "
                      f"declared, and the backward pass was of the same losses: the statistics are right; pass "
                      f"coordinate_reduction={other!r}")
    if d > 1 and (_near(a, 1 / d ** 2) or _near(a, 0.5 / d ** 2)):
        causes.append(f"the losses given to step() sum over the D = {d} coordinates while the backward pass was of "
                      f"their mean over coordinates (torch.mean((v - u) ** 2), F.mse_loss(v, u)): every statistic "
                      f"{d * d} × too small; give step() ((v - u) ** 2).flatten(1).mean(1)")
    if d > 1 and (_near(a, d) or _near(a, d / 2)):
        causes.append(f"the losses given to step() are a mean over the D = {d} coordinates while the backward pass "
                      f"summed over them: every statistic {d * d} × too large; give step() ((v - u) ** "
                      f"2).flatten(1).sum(1)")
    if batch > 1 and any(_near(a, u * batch ** 2) for u in usual):
        causes.append(f"losses.sum() back-propagated but reduction='mean' declared: every statistic {batch ** 2} × too "
                      f"large; pass reduction='sum'")
    if batch > 1 and any(_near(a, u / batch ** 2) for u in usual):
        causes.append(f"losses.mean() back-propagated but reduction='sum' declared: every statistic {batch ** 2} × "
                      f"too small; pass reduction='mean'")
    ks = sorted({k for u in usual if 2 <= (k := round(math.sqrt(u / a))) <= 4096 and _near(a, u / k ** 2)})
    causes += [f"gradient accumulation over k = {k} micro-batches ((loss / {k}).backward()) without "
               f"loss_scale=1/{k}: every statistic {k * k} × too small" for k in ks]
    scales = sorted({2.0 ** j for u in usual if 1 <= (j := round(math.log2(a / u) / 2)) <= 40 and
                     _near(a, u * 4.0 ** j)})
    causes += [f"a GradScaler's scale {c:g} not passed as loss_scale=scaler.get_scale(): every statistic {c * c:.4g} "
               f"× too large" for c in scales]
    return causes


def _none_as_nan(x: float | None) -> float:
    """``normalised`` for the log: None (0/0) is NaN; ±inf (mean gradient not resolved) stays (the plot marks it)."""
    return math.nan if x is None else float(x)


class GradientVarianceMonitor:
    """Logs the exact gradient variance of a model's training batches (module docstring).

    ``every``: log every this many steps (steps with ``step % every == 0``). ``t_bins``: bins of the t-profile
    (None: no profile). ``profile_every``: compute the per-bin conditional traces on every this many logged
    steps, starting with the first (1: always; the default 10 keeps the monitor within 1.3× of a training
    step at B = 256 when logging every step; other logged steps have NaN bin traces).
    ``log_path``: ``.csv``, ``.jsonl`` or ``.json`` file (None: memory only). ``sigma``: the interpolant's
    noise level when known (0: deterministic; None: unknown — the trainer callback then reads it off the
    path, where a deterministic interpolant has z = 0). ``elementwise``: also keep per-coordinate variances
    (``last_report.elementwise``; ``last_stats`` holds the raw :class:`~flowvar.variance.moments.BatchGradStats`).
    Every logged step checks cheaply that the per-sample gradients add up to the backward pass's gradient (the
    engine's sum check): a parameter used outside its module is then measured exactly through the model and
    named in the record's ``fallback``, and an extra loss term raises :class:`~flowvar.errors.DataError` at the
    step where it appears, so no logged number is silently wrong. ``validate_first``: on the first logged step,
    make that check with the full Σ_i g_i of every parameter, and recompute the first and the last sample's gradients
    exactly through the model to check the per-sample norms against them (the engine's per-sample probe,
    :mod:`flowvar.variance.probe`: a layer whose input has the batch's size in its first dimension without it being
    the batch — a table of B rows shared by every sample, a sequence-first input at L = B — permutes rows between
    samples, which the sum check cannot see; its parameters are then measured through the whole model and named in
    ``fallback``; about one more forward and two backward passes of the batch, on that step only; what it found is
    ``last_stats.probe``). The ``reduction`` passed to :meth:`step` cannot be checked and must match the backward
    pass. ``collapse_ratio``, ``collapse_atol``, ``patience``: the memorisation
    criterion; ``warn=False`` records it in the logs without warning. ``reduce_ranks``: under
    ``torch.distributed`` with W > 1 ranks, log the statistics of the global batch (every rank's per-sample
    statistics reduced, :mod:`flowvar.variance.ranks`; every rank must build the monitor and call it on the same
    steps, and only rank 0 writes ``log_path`` and warns); None (default): whenever a process group of W > 1 ranks
    is initialised; False: each rank logs its own shard, with no collective — the monitor of a single rank (one built
    or called under ``if rank == 0:``) must be built so. ``rank_timeout_s``: with the reduction, each logged step first
    meets the other ranks through the process group's key-value store (:func:`flowvar.variance.ranks.meet_ranks`,
    ~0.5 ms) and raises :class:`~flowvar.errors.ConfigError` naming the rule and that fix when a rank has not come
    within this many seconds (None: 300 s, at most half the group's own timeout), where the collective would hang
    until the group's timeout (30 min by default) or abort inside gloo/NCCL. Frozen parameters (no gradient) are not
    measured.

    ``own_grads`` (default True): on fully armed passes (the due steps, and a new monitor's first pass), the engine
    computes the gradients of the layers whose per-sample gradients it materialises anyway (convolutions on large
    feature maps, Linear layers on sequences of ≥ 16 positions: :mod:`flowvar.variance.owned`) itself, as
    G = Σ_i g_i summed in float64, and takes that product out of the backward pass. That is for speed: it makes a
    UNet's measured step cheaper (docs/gradient_variance.md, "Cost": the table's last column is ``own_grads=False``).
    **Attaching the monitor therefore changes ``.grad`` of those layers by rounding** on those passes (a float64 sum
    rounded to float32 against autograd's float32 sum; to the last bits in float64), so a monitored run's parameters
    drift from an unmonitored run's by rounding — and Adam can turn a changed rounding of a gradient that is
    mathematically 0 into a step of about the learning rate on that parameter. The logged statistics are the same
    either way. ``own_grads=False`` leaves every gradient to autograd: a monitored run then trains bit-identically to
    an unmonitored one (an A/B comparison, a regression or reproducibility test), at the cost in that column.
    """

    def __init__(self, model: nn.Module, *, every: int = 1, t_bins: int | None = 10, profile_every: int = 10,
                 log_path: str | os.PathLike[str] | None = None, sigma: float | None = None, elementwise: bool = False,
                 validate_first: bool = True, collapse_ratio: float = 1e-3, collapse_atol: float = 1e-12,
                 patience: int = 3, warn: bool = True, chunk_bytes: int = DEFAULT_CHUNK_BYTES,
                 reduce_ranks: bool | None = None, own_grads: bool = True,
                 rank_timeout_s: float | None = None) -> None:
        self.every = check_positive_int("every", every)
        self._arming = Arming(self.every)
        self.reduce_ranks = reduce_ranks
        if rank_timeout_s is not None and (isinstance(rank_timeout_s, bool) or
                                           not isinstance(rank_timeout_s, numbers.Real) or
                                           not (math.isfinite(rank_timeout_s) and rank_timeout_s > 0)):
            raise ConfigError(f"rank_timeout_s must be a number of seconds > 0 (how long a logged step waits for the "
                              f"other ranks) or None (300 s, at most half the process group's timeout), got "
                              f"{rank_timeout_s!r}")
        self.rank_timeout_s = None if rank_timeout_s is None else float(rank_timeout_s)
        self.t_bins = None if t_bins is None else check_positive_int("t_bins", t_bins)
        self.profile_every = check_positive_int("profile_every", profile_every)
        self.sigma = None if sigma is None else float(sigma)
        if self.sigma is not None and not (math.isfinite(self.sigma) and self.sigma >= 0):
            raise ConfigError(f"sigma must be a finite number >= 0 or None (unknown), got {sigma!r}")
        if not (0 < collapse_ratio < 1):
            raise ConfigError(f"collapse_ratio must lie in (0, 1), got {collapse_ratio!r}")
        if not (collapse_atol >= 0):
            raise ConfigError(f"collapse_atol must be >= 0, got {collapse_atol!r}")
        self.collapse_ratio, self.collapse_atol = float(collapse_ratio), float(collapse_atol)
        self.patience = check_positive_int("patience", patience)
        self.warn = bool(warn)
        self.validate_first = bool(validate_first)
        self.log_path = None if log_path is None else Path(log_path)
        if self.log_path is not None and self.log_path.suffix not in (".csv", ".json", ".jsonl"):
            raise ConfigError(f"log_path must end in .csv, .json or .jsonl, got {self.log_path.name!r}")
        if self.log_path is not None:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
        # (its compute() refuses a model that gained parametrised modules since: UnplannedParametersError)
        self.own_grads = bool(own_grads)
        self.engine = GradNormEngine(model, elementwise=elementwise, chunk_bytes=chunk_bytes, own_grads=self.own_grads)
        # the loss-scale check of step() reads the gradient reaching the model's output from the engine's record of
        # the pass (engine.root_grad): no hook of its own, so nothing runs for it on unlogged steps
        self._scale_checks_left = SCALE_CHECKS
        self.history: list[dict[str, Any]] = []
        self.last_stats: BatchGradStats | None = None
        self.memorisation_step: int | None = None
        self._peak_loss = 0.0
        self._peak_trace = 0.0
        self._streak = 0
        self._log_file: TextIO | None = None
        self._csv: Any = None  # csv.writer of the open CSV log
        self._csv_fields: list[str] = []
        self._suffix = None if self.log_path is None else self.log_path.suffix
        self._edges_list: list[float] | None = None
        self._validated = False
        # the first logged step's pass replays the random-number state for the per-sample probe (validate_first);
        # no other pass notes it
        self.engine.keep_rng = self.validate_first
        # the rows of an existing log file kept on resume (as read: CSV rows of strings, JSON records), set when the
        # first record is written; save_json writes them before the history, figure() draws them
        self._carried: list[dict[str, Any]] | None = None
        # the last measured step: a due step() finding nothing recorded for it was called twice
        self._measured: int | None = None
        self._warned: set[str] = set()  # the causes of SkippedLogWarning issued
        self._warned_non_finite = False  # NonFiniteLossWarning is issued once
        self._logged_before = 0  # records logged before a resume (load_state_dict): the profile cadence counts them
        # whether load_state_dict resumed an earlier run: only then are an existing log's earlier rows kept (a new run
        # whose steps start at 1 and first log at every > 1 is no resume, though its first step follows the old rows)
        self._resumed = False

    # ----------------------------------------------------------------------------------------- entry points

    @property
    def last_report(self) -> FastVarianceReport | None:
        """The full report of the last logged batch (mean gradient, element-wise variances, fallback), or None."""
        return None if self.last_stats is None else self.last_stats.report()

    def due(self, step: int) -> bool:
        """Whether ``step`` is a logged step."""
        return int(step) % self.every == 0

    def step(self, step: int, losses: Tensor, t: Tensor | None = None, *, reduction: Reduction = "mean",
             deterministic: bool | None = None, loss_scale: float = 1.0,
             coordinate_reduction: CoordinateReduction | None = None) -> dict[str, Any] | None:
        """Call after ``backward`` of ``loss_scale * losses.mean()`` (or ``.sum()``: pass ``reduction="sum"``),
        every step.

        Step numbers may restart, jump or repeat (:mod:`flowvar.variance.arming`); a record is the exact statistics
        of the latest forward/backward pass. A due step whose pass ran with the hooks off, and a batch of one sample,
        are not logged (one :class:`SkippedLogWarning` each).

        ``losses``: (B,) per-sample losses ℓ_i of this step's batch; ``t``: (B,) their times in [0, 1]
        ((B, 1) and (B, 1, 1, 1) too; enables the t-profile). ``deterministic``: whether the interpolant is
        noise-free (default: from ``sigma``). ``loss_scale``: c when the backward pass was of c × the reduced
        losses — a GradScaler's ``scaler.get_scale()`` (``scaler.scale(loss).backward()``), 1/k under gradient
        accumulation over k micro-batches (``(loss / k).backward()``, then call ``step`` after each micro-batch's
        backward with its own losses, numbered by optimizer step or by micro-batch); the per-sample gradients are
        divided by it (g_i = ∇ℓ_i whatever c). The scale cannot be read off the backward pass in general; when the
        losses are squared errors of the model's output (ℓ_i = a‖v_i − u_i‖²) the first
        :data:`SCALE_CHECKS` logged steps check it and issue one :class:`LossScaleWarning` when a is not one of the
        usual constants (:data:`SCALE_TOL`). Some mistakes map one usual constant onto another (at D = 2, the mean
        over coordinates back-propagated for losses summed over them, or accumulation over k = 2 micro-batches
        without loss_scale: a = 1/4 = 1/(2D)); ``coordinate_reduction`` ("sum": ℓ_i = ‖v_i − u_i‖² or ½ of it;
        "mean": their mean over the D coordinates, or ½ of it) declares how the losses given reduce a sample's
        squared error, and the check then accepts only that convention's constants, which tells those mistakes
        apart. None (default): any usual convention passes. Returns the logged record on logged steps, else None.
        """
        if not isinstance(losses, Tensor) or losses.ndim != 1:
            raise ShapeError(f"losses must be the (B,) per-sample losses, got "
                             f"{tuple(losses.shape) if isinstance(losses, Tensor) else type(losses).__name__}")
        step = _step_number(step)
        self._check_open(step)
        self._arming.track(step)
        if not self.due(step):  # nothing else runs on an unlogged step
            self._skip(step)
            return None
        if isinstance(loss_scale, bool) or not isinstance(loss_scale, numbers.Real) or \
                not (math.isfinite(loss_scale) and loss_scale > 0):
            raise ConfigError(f"loss_scale must be a finite number > 0 (the factor the reduced loss was multiplied "
                              f"by before backward, e.g. scaler.get_scale()), got {loss_scale!r}")
        if coordinate_reduction not in (None, "sum", "mean"):
            raise ConfigError(f"coordinate_reduction must be 'sum' (losses ‖v − u‖² summed over a sample's "
                              f"coordinates), 'mean' (their mean over coordinates) or None, got "
                              f"{coordinate_reduction!r}")
        if deterministic is None and self.sigma is not None:
            deterministic = self.sigma == 0
        if not self._recorded(step) or self._too_small(step, losses.shape[0]):
            return None
        out_grad = self.engine.root_grad if self._scale_checks_left > 0 else None  # before compute() clears it
        if self._reducing():  # before the reduction's collectives: a rank that never comes is an error, not a hang
            meet_ranks(step, self.rank_timeout_s)
        # not detached: when the model ran again after the backward pass, their graph tells compute() which pass
        record = self._measure(step, losses, t, reduction, deterministic, 1.0 / float(loss_scale))
        self._check_scale(step, losses.detach(), out_grad, reduction, float(loss_scale), coordinate_reduction)
        return record

    def on_step(self, step: int, model: nn.Module, path: PathSample, loss_value: float) -> dict[str, Any] | None:
        """The :class:`flowvar.train.Callback` hook: per-sample losses from the recorded model output and
        ``path.target`` (the trainer's loss is their mean). Returns a few scalars for the trainer's history."""
        if model is not self.engine.model:
            raise ConfigError("this monitor was built for another model; build it with the model you train")
        step = _step_number(step)
        self._check_open(step)
        self._arming.track(step)
        if not self.due(step):
            self._skip(step)
            return None
        if not self._recorded(step):
            return None
        output = self.engine.root_output
        if not isinstance(output, Tensor) or output.shape != path.target.shape:
            raise ShapeError("the model's recorded output does not match path.target; the trainer callback needs "
                             "model(xt, t) to return the velocity")
        losses = (output.detach() - path.target).pow(2).flatten(1).sum(1)
        reduction: Reduction = "mean"
        scale = 1.0
        if distributed.is_distributed():
            # the trainer's data-parallel step: this rank back-propagated (1/B) Σ_{i in its shard} ℓ_i and
            # loss_value is the global mean, so the per-sample gradients are B × those of a "sum" reduction
            meet_ranks(step, self.rank_timeout_s)  # before the first collective (as in step())
            totals = torch.stack([losses.detach().to(torch.float64).sum(),
                                  torch.tensor(float(losses.shape[0]), dtype=torch.float64, device=losses.device)])
            totals = totals.to(distributed.collective_device())
            distributed.all_reduce_sum_([totals])
            mean, reduction, scale = float(totals[0] / totals[1]), "sum", float(totals[1])
        else:
            mean = float(losses.to(torch.float64).mean())
        if not math.isclose(mean, loss_value, rel_tol=1e-4, abs_tol=1e-12):
            raise DataError(f"the trainer's loss ({loss_value:.6g}) is not the mean of ‖v − u‖² over the batch "
                            f"({mean:.6g}); the monitor's trainer hook only supports flowvar's CFMLoss. Call "
                            f"monitor.step(step, per_sample_losses) from your own loop instead")
        deterministic = (self.sigma == 0) if self.sigma is not None else bool((path.z == 0).all())
        if self._too_small(step, losses.shape[0]):
            return None
        record = self._measure(step, losses, path.t, reduction, deterministic, scale)
        return {f"gv_{k}": record[k] for k in (*SCALARS, "memorisation")}

    def state_dict(self) -> dict[str, Any]:
        """What a resumed run needs to log and train as the uninterrupted one would: the memorisation detector's peaks
        and streak, the step it flagged, how many records were logged (the cadence of the per-bin traces), and the
        arming state (the last step number and how the numbers went: :meth:`flowvar.variance.arming.Arming.state_dict`).
        Take it after the ``step()`` of the checkpoint's step, as :func:`flowvar.train.train` does (it saves it in its
        checkpoints, the monitor as a callback). ``history`` holds this process's records only — the log file holds
        them all, and :meth:`figure` draws them all."""
        return {"peak_loss": self._peak_loss, "peak_trace": self._peak_trace, "streak": self._streak,
                "memorisation_step": self.memorisation_step, "logged": self._logged_before + len(self.history),
                "arming": self._arming.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume from an earlier monitor's :meth:`state_dict`: the detector, the profile cadence, the log file
        (continued, not replaced: "Log files" in the module docstring) and the arming of the next pass.

        The next pass is armed as the uninterrupted run armed it (:meth:`flowvar.variance.arming.Arming.resume`).
        With ``own_grads`` the engine writes the gradients of the layers it owns into ``.grad`` on fully armed passes
        only (a float64 sum, which differs from autograd's float32 one by rounding), so this is what makes a resumed
        run end bit-identical to the uninterrupted one. A state saved by an earlier flowvar (no ``"arming"``) arms as
        a new monitor does (the first pass fully, later ones lightly until the step numbers have gone up one at a
        time): every log is still exact, but ``.grad`` of owned layers may differ by rounding on the first pass, so
        such a resume is not bit-identical. Call it before the first forward pass of the resumed run."""
        self._peak_loss, self._peak_trace = float(state["peak_loss"]), float(state["peak_trace"])
        self._streak, self.memorisation_step = int(state["streak"]), state["memorisation_step"]
        self._logged_before = int(state["logged"]) - len(self.history)
        self._resumed = True
        if state.get("arming") is not None:
            self._arming.load_state_dict(state["arming"])
            self.engine.armed, self.engine.light = self._arming.resume()  # armed first: it resets light

    def close(self) -> None:
        """Remove the hooks and close the log file (records are flushed as they are logged). The monitor measures
        nothing after it: :meth:`step` then raises :class:`ConfigError`."""
        self.engine.detach()
        if self._log_file is not None:
            self._log_file.close()
            self._log_file, self._csv = None, None

    def __enter__(self) -> GradientVarianceMonitor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ----------------------------------------------------------------------------------------- measuring

    def _skip(self, step: int, logged: bool = False) -> None:
        """Drop what the hooks recorded for ``step`` and arm them for the next pass (``logged``: ``step`` was due)."""
        self.engine.clear()
        self._arm(step, logged)

    def _arm(self, step: int, logged: bool) -> None:
        self.engine.armed, self.engine.light = self._arming.after(step, logged)  # armed first: it resets light
        self.engine.keep_rng = self.validate_first and not self._validated

    def _check_open(self, step: int) -> None:
        """Refuse a step after :meth:`close` (its hooks are gone, so nothing was recorded: the error of a pass that no
        backward pass reached would name the wrong cause)."""
        if not self.engine.attached:
            raise ConfigError(f"step {step}: this monitor was closed (close(), or the end of its with-block, removed "
                              f"its hooks), so it records nothing: build a new GradientVarianceMonitor on the model to "
                              f"measure again")

    def _recorded(self, step: int) -> bool:
        """Whether the hooks recorded a pass for the due ``step``; False (the step skipped) when its pass ran while
        they were off; raises when nothing can be measured."""
        if self.engine.has_records:
            return True
        if self.engine.unrecorded_gradients or not self.engine.unarmed_backward:
            raise DataError(self._nothing_recorded(step))
        self._warn_skip("unarmed", self._arming.missed(step))
        self._skip(step, logged=True)
        return False

    def _too_small(self, step: int, batch: int) -> bool:
        """Whether the due ``step``'s batch is too small to log (one sample: no variance), then skipped. Not under a
        reduction over ranks: the global batch counts, and every rank must take part."""
        if batch >= 2 or self._reducing():
            return False
        self._warn_skip("small", (
            f"step {step} is not logged: a batch of {batch} sample(s) has no gradient variance (it needs at least 2 "
            f"per-sample gradients). Training goes on; such steps are skipped (e.g. the last batch of a DataLoader "
            f"with drop_last=False: pass drop_last=True to avoid it)"))
        self._measured = step
        self._skip(step, logged=True)
        return True

    def _warn_skip(self, cause: str, message: str) -> None:
        """One :class:`SkippedLogWarning` per cause (on rank 0)."""
        if cause in self._warned:
            return
        self._warned.add(cause)
        if distributed.is_main_process():
            warnings.warn(SkippedLogWarning(message + " (warned once)"), stacklevel=4)

    def _check_scale(self, step: int, losses: Tensor, out_grad: Tensor | None, reduction: Reduction,
                     loss_scale: float, coordinates: CoordinateReduction | None = None) -> None:
        """Warn once when the backward pass does not look like ``loss_scale`` × the declared reduction of these
        squared-error losses (judged on the first :data:`SCALE_CHECKS` logged steps).

        With L = c_s · (1/s) Σ_i b_i (s = B for "mean", 1 for "sum", c_s = ``loss_scale``) the output gradient is
        δ_i = (c_s/s) ∂b_i/∂v_i, so a_i = ‖δ_i · s / c_s‖² / (4 ℓ_i). For squared errors every a_i equals one constant
        a (:data:`SCALE_TOL`'s comment): one of the usual ones (of the declared ``coordinates`` convention, when
        given) is silent, any other is warned about with the mistakes that give it. Varying a_i (another loss,
        per-sample weights) say nothing, and are not judged."""
        if self._scale_checks_left <= 0 or out_grad is None or out_grad.ndim < 1 or \
                out_grad.shape[0] != losses.shape[0]:
            return
        self._scale_checks_left -= 1
        s = float(losses.shape[0]) if reduction == "mean" else 1.0
        ell = losses.to(torch.float64).reshape(-1)
        sq = out_grad.to(torch.float64).reshape(out_grad.shape[0], -1).pow(2).sum(1) * (s / loss_scale) ** 2
        keep = ell > 1e-12 * float(ell.abs().max())
        if int(keep.sum()) < 2 or not bool(torch.isfinite(sq).all()):
            return
        a_i = sq[keep] / (4 * ell[keep])
        lo, hi = float(a_i.min()), float(a_i.max())
        if not (lo > 0 and hi - lo <= SCALE_SPREAD * hi):
            return
        a, d = float(a_i.mean()), out_grad[0].numel()
        if any(_near(a, u) for u in _usual_scales(d, coordinates)):
            return
        self._scale_checks_left = 0  # one warning
        if not distributed.is_main_process():
            return
        causes = _scale_causes(a, d, losses.shape[0], coordinates) or [
            "a factor on the backward pass not passed as loss_scale=, or per-sample losses of another convention than "
            "the back-propagated ones"]
        expected = {None: f"one of the usual constants 1 (a sum over the D = {d} coordinates), 1/2, 1/D = {1 / d:.4g} "
                          f"(a mean over coordinates) or 1/(2D)",
                    "sum": "1 or 1/2, the constants of the declared coordinate_reduction='sum'",
                    "mean": f"1/D = {1 / d:.4g} or 1/(2D) = {0.5 / d:.4g} (D = {d}), the constants of the declared "
                            f"coordinate_reduction='mean'"}[coordinates]
        warnings.warn(LossScaleWarning(
            f"step {step}: the output gradient says the backward pass was of a‖v − u‖² per sample with a = {a:.4g} "
            f"(relative to the losses given to step(), after loss_scale={loss_scale:g} and reduction={reduction!r}), "
            f"not {expected}. Likely: " + "; or ".join(causes) + ". If a is a deliberate loss weight λ "
            "(ℓ_i = λ‖v − u‖², or the model's output scaled by a constant before the loss), the statistics are "
            "right: silence this with warnings.filterwarnings('ignore', category=LossScaleWarning) (warned once)"),
            stacklevel=3)

    def _reducing(self) -> bool:
        """Whether this step's statistics are reduced over the ranks of a data-parallel run."""
        return distributed.is_distributed() if self.reduce_ranks is None else \
            bool(self.reduce_ranks) and distributed.is_distributed()

    def _measure(self, step: int, losses: Tensor, t: Tensor | None, reduction: Reduction,
                 deterministic: bool | None, scale: float = 1.0) -> dict[str, Any]:
        """``scale``: the true per-sample gradients are ``scale`` × those of the declared ``reduction``."""
        start = time.perf_counter()
        bins = self.t_bins if t is not None else None
        validate = self.validate_first and not self._validated
        full_profile = (self._logged_before + len(self.history)) % self.profile_every == 0
        try:
            stats = self.engine.compute(losses.shape[0], reduction=reduction, losses=losses, t=t, t_bins=bins,
                                        bin_traces=full_profile, validate=validate)
        except BatchMismatchError as error:
            raise ShapeError(self._mismatch(step, error)) from None
        except UnplannedParametersError as error:  # a layer replaced, a head added after the monitor was built
            raise ConfigError(f"step {step}: {error.found('the monitor')}. Build the GradientVarianceMonitor after "
                              f"the model is final (after replacing layers), or close this one and build a new one") \
                from None
        except DataError as error:  # the sum check: say which step changed (the loss, or how a parameter is used)
            raise DataError(f"step {step}: {error}") from None
        finally:  # compute() turned it off: a validating step that raised is validated again at the next log
            self.engine.keep_rng = self.validate_first and not self._validated
        if scale != 1.0 or self._reducing():  # a data-parallel step: the global batch (or the rescaled shard)
            stats = reduce_across_ranks(stats, scale=scale, across_ranks=self._reducing(), step=step)
        self._validated = True
        self.last_stats = stats
        summary = stats.summary(with_bins=bins is not None)
        loss_f64 = stats.losses if stats.losses is not None else losses.to(torch.float64)  # compute() made it
        record: dict[str, Any] = {
            "step": step, "loss": float(loss_f64.mean()), "trace": summary["trace"],
            "trace_unbiased": summary["trace_unbiased"], "normalised": _none_as_nan(summary["normalised"]),
            "mean_grad_sq_norm": summary["mean_grad_sq_norm"], "mean_sq_norm": summary["mean_sq_norm"],
            "batch_size": stats.n, "deterministic": deterministic,
        }
        if bins is not None:
            b = summary["bins"]
            record["t_profile"] = {"edges": self._edges(b.edges),
                                   "counts": b.counts.tolist(), "loss": b.mean_loss.tolist(),
                                   "mean_sq_norm": b.mean_sq_norm.tolist(), "trace": b.trace.tolist()}
        record["per_layer"] = summary["per_layer"]
        record["fallback"] = sorted(stats.fallback)
        record["memorisation"] = self._check_memorisation(step, record["loss"], summary["trace"], deterministic)
        record["seconds"] = time.perf_counter() - start
        self._warn_non_finite(step, record)
        self.history.append(record)
        self._write(record)
        self._arm(step, logged=True)
        self._measured = step
        return record

    def _warn_non_finite(self, step: int, record: dict[str, Any]) -> None:
        """One :class:`NonFiniteLossWarning` per monitor, at the first logged step whose loss or trace is NaN/Inf."""
        if self._warned_non_finite or (math.isfinite(record["loss"]) and math.isfinite(record["trace"])):
            return
        self._warned_non_finite = True
        if distributed.is_main_process():
            warnings.warn(NonFiniteLossWarning(
                f"step {step}: the per-sample losses or their gradients hold NaN or Inf (mean loss {record['loss']}, "
                f"trace {record['trace']}); this record and later ones like it are logged as they are (warned once). "
                f"Training diverged or the batch holds non-finite data: lower the learning rate, clip gradients, or "
                f"check the data"), stacklevel=4)

    def _nothing_recorded(self, step: int) -> str:
        """The error of a due step() with nothing to measure, naming the cause."""
        if self.engine.unrecorded_gradients:
            return f"step {step}: {UNRECORDED}"
        if self._measured == step:
            return (f"step {step}: step() was already called for this step, and the model has not run since with "
                    f"gradients enabled: the first call measured the step's forward/backward pass. Call "
                    f"monitor.step() once per forward/backward pass, after its backward pass")
        return (f"step {step}: no forward/backward pass of the model was recorded since the last step(), and no "
                f"backward pass reached its parameters. Call monitor.step() after loss.backward(), with the model "
                f"the monitor was built on run with gradients enabled: not under torch.no_grad(), and not a copy of "
                f"it (copy.deepcopy, an EMA model: build the monitor on the model you train)")

    def _mismatch(self, step: int, error: BatchMismatchError) -> str:
        """The error of per-sample losses that do not match the step's recorded forward passes (their count and
        batch sizes in ``error``)."""
        n, batches = error.n, error.batches
        if len(batches) == 1:
            return (f"step {step}: {n} per-sample losses for a batch of {batches[0]}: pass step() the unreduced (B,) "
                    f"losses of the batch the model ran on this step, one per sample (e.g. "
                    f"((v - u) ** 2).flatten(1).sum(1)), not a part of it or another batch's")
        k = len(batches)
        if n == sum(batches):
            fix = (f"call step() after each micro-batch's backward with that micro-batch's losses and loss_scale=1/k "
                   f"(here 1/{k})")
            return (f"step {step}: {n} per-sample losses of {k} forward passes of the model "
                    f"({' + '.join(map(str, batches))} samples) given to one step(): the monitor measures one "
                    f"forward/backward pass at a time. Under gradient accumulation {fix}; see "
                    f"docs/gradient_variance.md")
        return (f"step {step}: {n} per-sample losses, but the model ran {k} times since the last step() "
                f"({' + '.join(map(str, batches))} samples): call step() after each forward/backward pass, with "
                f"that pass's (B,) per-sample losses")

    def _edges(self, edges: np.ndarray | None) -> list[float] | None:
        """``edges.tolist()``, kept between logs (the bin edges depend on ``t_bins`` only)."""
        if edges is None:
            return None
        if self._edges_list is None or len(self._edges_list) != len(edges):
            self._edges_list = edges.tolist()
        return list(self._edges_list)

    def _check_memorisation(self, step: int, loss: float, trace: float, deterministic: bool | None) -> bool:
        self._peak_loss = max(self._peak_loss, loss)
        self._peak_trace = max(self._peak_trace, trace)
        collapsed = (loss <= self.collapse_ratio * self._peak_loss or loss <= self.collapse_atol) and \
                    (trace <= self.collapse_ratio * self._peak_trace or trace <= self.collapse_atol)
        if deterministic is False:
            collapsed = False
        self._streak = self._streak + 1 if collapsed else 0
        flagged = self._streak >= self.patience
        if flagged and self.memorisation_step is None:
            self.memorisation_step = step
            if self.warn and distributed.is_main_process():
                warnings.warn(MemorisationWarning(self._message(step, loss, trace, deterministic)), stacklevel=4)
        return flagged

    def _message(self, step: int, loss: float, trace: float, deterministic: bool | None) -> str:
        which = ("under a deterministic interpolant (σ = 0)" if deterministic else
                 "(the interpolant's σ is unknown to the monitor; this signature means something only for σ = 0)")
        return (
            f"possible memorisation at step {step}: the loss ({loss:.3g}) and the gradient variance tr Cov(g) "
            f"({trace:.3g}) have both collapsed to ≤ {self.collapse_ratio:g} × their peaks ({self._peak_loss:.3g}, "
            f"{self._peak_trace:.3g}) for {self.patience} logged steps {which}. This is the memorisation "
            f"signature of arXiv 2510.18118 (Prop. 1–2): the field reproduces the straight line of every training "
            f"pair, so each per-sample loss and gradient is ≈ 0 and SGD has no reason to leave; integrating the "
            f"ODE from a training source then returns its paired target instead of a new sample. To generalise, "
            f"train with interpolant noise σ > 0 (e.g. flowvar.interpolants.Interpolant(sigma=0.05), torchcfm's "
            f"ConditionalFlowMatcher(sigma=0.05)), or use more data or fewer parameters; pass "
            f"GradientVarianceMonitor(warn=False) to silence this.")

    # ----------------------------------------------------------------------------------------- output

    def _flat(self, record: dict[str, Any]) -> dict[str, Any]:
        row = {k: record[k] for k in ("step", *SCALARS, "batch_size", "memorisation", "seconds")}
        prof = record.get("t_profile")
        if prof is not None:
            for k, (n, loss, sq, tr) in enumerate(zip(prof["counts"], prof["loss"], prof["mean_sq_norm"],
                                                      prof["trace"])):
                row[f"t_bin{k}_n"], row[f"t_bin{k}_loss"], row[f"t_bin{k}_sq_norm"] = n, loss, sq
                row[f"t_bin{k}_trace"] = tr
        return row

    def _write(self, record: dict[str, Any]) -> None:
        if self.log_path is None or not distributed.is_main_process():  # under DDP only rank 0 writes
            return
        path, suffix = self.log_path, self._suffix
        if suffix == ".json":
            if self._carried is None:
                self._carried = self._earlier_rows(path, int(record["step"]))
            self.save_json(path)
            return
        if self._log_file is None:  # opened on the first record, flushed after every record
            earlier = self._carried = self._earlier_rows(path, int(record["step"]))
            # the file is replaced atomically by its kept rows (a temporary file beside it, os.replace), then appended
            # to: a crash at any point leaves either the old file or the kept rows, never a truncated file
            head = io.StringIO(newline="")
            if suffix == ".csv":
                # the header comes from the first record (plus columns only earlier rows have); later rows fill
                # missing fields with ""
                fields = list(self._flat(record))
                fields += [k for row in earlier for k in row if k not in fields]
                self._csv_fields = list(dict.fromkeys(fields))
                writer = csv.writer(head)
                writer.writerow(self._csv_fields)
                for row in earlier:
                    writer.writerow([row.get(k, "") for k in self._csv_fields])
            else:
                for row in earlier:
                    head.write(json.dumps(row) + "\n")
            atomic_write_text(path, head.getvalue())
            self._log_file = path.open("a", newline="" if suffix == ".csv" else None)
            if suffix == ".csv":
                self._csv = csv.writer(self._log_file)
        if suffix == ".csv":
            row = self._flat(record)
            self._csv.writerow([row.get(k, "") for k in self._csv_fields])
        else:
            self._log_file.write(json.dumps(to_jsonable(record)) + "\n")
        self._log_file.flush()

    def _earlier_rows(self, path: Path, first_step: int) -> list[dict[str, Any]]:
        """The rows of an existing log before ``first_step``: what a run resuming at ``first_step`` keeps.

        A new run (no :meth:`load_state_dict`) keeps none: the file is replaced. A resumed one keeps the rows up to
        the checkpoint and drops those the interrupted run logged after it. An unreadable file is replaced (with a
        warning) rather than trusted.
        """
        if not path.is_file():
            return []
        if not self._resumed:
            log.warning("gradient-variance log %s exists and this monitor starts a new run: the file is replaced and "
                        "its earlier rows are lost. To continue it (a run resumed from a checkpoint), give the monitor "
                        "the interrupted run's state with monitor.load_state_dict(state) before its first step "
                        "(flowvar's trainer and the Lightning callback do so from their checkpoints); to keep it, log "
                        "to another log_path", path)
            return []
        try:
            if path.suffix == ".csv":
                with path.open(newline="") as fh:
                    rows: list[dict[str, Any]] = list(csv.DictReader(fh))
            elif path.suffix == ".jsonl":
                rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
            else:
                rows = list(json.loads(path.read_text()).get("records", []))
            kept = [r for r in rows if int(float(r["step"])) < first_step]
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
            log.warning("gradient-variance log %s is unreadable (%s); starting it afresh", path, err)
            return []
        if kept:
            log.info("gradient-variance log %s: kept %d earlier row(s) before step %d (resumed run)", path,
                     len(kept), first_step)
        return kept

    def save_json(self, path: str | os.PathLike[str]) -> Path:
        """Write ``{"config": ..., "records": history}`` to ``path`` atomically (fsynced; non-finite numbers as the
        strings "nan", "inf", "-inf", as in every flowvar JSON file). When this monitor logs to ``path`` and resumed
        an earlier log there, the earlier records come first."""
        path = Path(path)
        earlier = self._carried if (self._carried and self.log_path is not None and path == self.log_path) else []
        doc = {"config": {"every": self.every, "t_bins": self.t_bins, "profile_every": self.profile_every,
                          "sigma": self.sigma,
                          "collapse_ratio": self.collapse_ratio, "collapse_atol": self.collapse_atol,
                          "patience": self.patience, "fallback": self.engine.fallback_parameters},
               "memorisation_step": self.memorisation_step, "records": earlier + to_jsonable(self.history)}
        atomic_write_text(path, json.dumps(to_jsonable(doc), indent=1))
        return path

    def _plotted(self) -> list[dict[str, Any]]:
        """The records :meth:`figure` draws: the log file's kept rows (:attr:`_carried`, read back as records with the
        fields it draws), then ``history``."""
        return [_as_record(row) for row in self._carried or []] + self.history

    def plot(self, path: str | os.PathLike[str]) -> Path:
        """PNG of :meth:`figure` (loss and trace, normalised variance, the t-profile over steps) at ``path``: every
        record of the run, those a resumed run kept from its log file included."""
        out = Path(path)
        out.parent.mkdir(parents=True, exist_ok=True)
        self.figure().savefig(out, dpi=110)
        return out

    def figure(self) -> Any:
        """The matplotlib ``Figure`` :meth:`plot` writes: loss and tr Cov(g) over steps (log scale); the normalised
        variance (log scale; a logged inf — mean gradient not resolved from the noise — as a marker at the top of
        the panel, since a log axis cannot draw it); the per-bin traces tr Cov(g | t-bin) of the profiled logs as
        a heatmap (log10). A profile measured at step s describes the model at s and is the latest one known until
        the next, so its column spans [s, next profiled step]; the last one reaches the last logged step (one
        profile interval when it is the last log itself, so that it is not a zero-width column), and the panel's x
        range is the run's [first logged step, last logged step] (:func:`_column_edges`).

        It draws the whole run: after a resume (:meth:`load_state_dict`) the rows kept from the log file (those before
        this process's first log: the run up to its checkpoint) come before this process's records (``history``).
        Without a log file, or on a DDP rank other than 0 (which does not read it), it draws ``history`` only."""
        records = self._plotted()
        if not records:
            raise DataError("nothing logged yet; plot() needs at least one logged step")
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
        from matplotlib.transforms import blended_transform_factory

        steps = np.array([r["step"] for r in records], dtype=float)
        has_profile = "t_profile" in records[-1]
        fig = Figure(figsize=(12 if has_profile else 8, 3.6))
        FigureCanvasAgg(fig)
        axes = fig.subplots(1, 3 if has_profile else 2)
        ax = axes[0]
        for key, label in (("loss", "loss"), ("trace", "tr Cov(g)")):
            values = np.array([r[key] for r in records], dtype=float)
            ax.plot(steps, np.where(values > 0, values, np.nan), label=label)
        ax.set_yscale("log")
        ax.set_xlabel("step")
        ax.legend()
        mem = self.memorisation_step
        if mem is not None:
            ax.axvline(mem, color="red", ls="--", lw=1)
            ax.set_title(f"memorisation flagged at step {mem}", fontsize=9, color="red")
        ax = axes[1]
        norm = np.array([r["normalised"] for r in records], dtype=float)
        ax.plot(steps, np.where((norm > 0) & np.isfinite(norm), norm, np.nan))
        unresolved = np.isposinf(norm)
        if unresolved.any():  # x in data, y in axes coordinates: the top of the panel whatever its log range
            ax.plot(steps[unresolved], np.full(int(unresolved.sum()), 0.97), ls="none", marker="^", color="red",
                    transform=blended_transform_factory(ax.transData, ax.transAxes), clip_on=False,
                    label="∞: mean gradient not resolved")
            ax.legend(fontsize=8)
        ax.set_yscale("log")
        ax.set_xlabel("step")
        ax.set_ylabel("tr Cov(g) / ‖ḡ‖²")
        if has_profile:
            ax = axes[2]
            # the rows with the last record's bins (a resumed run may have changed t_bins), profiled ones if any
            bins = len(records[-1]["t_profile"]["trace"])
            rows = [r for r in records if "t_profile" in r and len(r["t_profile"]["trace"]) == bins]
            rows = [r for r in rows if np.isfinite(r["t_profile"]["trace"]).any()] or rows
            grid = np.array([r["t_profile"]["trace"] for r in rows], dtype=float)
            edges = rows[-1]["t_profile"]["edges"] or [0.0, 1.0]
            with np.errstate(divide="ignore", invalid="ignore"):
                shown = np.log10(np.where(grid > 0, grid, np.nan))
            x_edges = _column_edges([float(r["step"]) for r in rows], steps)
            mesh = ax.pcolormesh(x_edges,
                                 np.asarray(edges, dtype=float) if len(edges) == grid.shape[1] + 1 else
                                 np.linspace(0.0, 1.0, grid.shape[1] + 1),
                                 np.ma.masked_invalid(shown.T), shading="flat")
            # the whole run, from its first logged step: the rows drawn may start later (a resume that changed
            # t_bins keeps only the last bins' rows), and pcolormesh alone would fit the axis to them
            ax.set_xlim(min(float(steps.min()), float(x_edges[0])), float(x_edges[-1]))
            fig.colorbar(mesh, ax=ax, label="log10 tr Cov(g | t-bin)")
            ax.set_xlabel("step")
            ax.set_ylabel("t")
        fig.tight_layout()
        return fig


def _number(value: Any) -> float:
    """A logged number as read back from a log file: a float, a CSV string, "nan"/"inf" (flowvar's JSON form of a
    non-finite number), or "" (a CSV field that row lacks: NaN)."""
    return math.nan if value is None or value == "" else float(value)


def _as_record(row: dict[str, Any]) -> dict[str, Any]:
    """A row kept from a log file as a record with the fields :meth:`GradientVarianceMonitor.figure` draws: ``step``,
    ``loss``, ``trace``, ``normalised`` and, when the row has per-bin traces (a JSON record's ``t_profile``, a CSV
    row's ``t_bin{k}_trace`` columns), ``t_profile`` with its ``trace`` (and a JSON record's ``edges``)."""
    record: dict[str, Any] = {"step": int(_number(row["step"])),
                              **{k: _number(row.get(k)) for k in ("loss", "trace", "normalised")}}
    profile = row.get("t_profile")
    if isinstance(profile, dict) and "trace" in profile:
        record["t_profile"] = {"edges": profile.get("edges"), "trace": [_number(x) for x in profile["trace"]]}
    elif "t_bin0_trace" in row:
        k = 0
        while f"t_bin{k}_trace" in row:
            k += 1
        # no edges in a CSV row: figure() draws k equal bins, the monitor's (docs/gradient_variance.md, "Log files")
        record["t_profile"] = {"edges": None, "trace": [_number(row[f"t_bin{j}_trace"]) for j in range(k)]}
    return record


def _column_edges(steps: list[float], logged: np.ndarray) -> np.ndarray:
    """The x edges (n + 1,) of the heatmap columns of the profiles measured at ``steps`` (n,) in a run that logged at
    ``logged`` (m,), m >= n.

    A profile measured at step s describes the model at s and stays the latest one known until the next profile, so
    column k spans [steps[k], steps[k + 1]]: nothing before the step it was measured at. The last column reaches the
    last logged step; when the last profile is the last log itself, one profile interval (the gap between the last
    two profiled steps, else between the last two logged steps, else one step — a run of one logged step: a
    one-step column), since a zero-width column would hide it. Steps that do not increase strictly (k records per
    step under gradient accumulation, a restarted numbering) get n equal columns in logged order over the same
    range, from the first profiled step.
    """
    x = np.asarray(steps, dtype=float)
    last = float(np.max(logged))
    if x.max() < last:
        end = last
    else:
        end = float(x.max()) + (_last_gap(x) or _last_gap(np.asarray(logged, dtype=float)) or 1.0)
    if x.size > 1 and not bool((np.diff(x) > 0).all()):
        return np.linspace(float(x.min()), end, x.size + 1)
    return np.append(x, end)


def _last_gap(steps: np.ndarray) -> float:
    """The gap between the two largest distinct values of ``steps``; 0 when there are fewer than two."""
    distinct = np.unique(steps)
    return float(distinct[-1] - distinct[-2]) if distinct.size > 1 else 0.0
