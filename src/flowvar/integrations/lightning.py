"""A Lightning callback that logs the exact gradient variance of a LightningModule's training batches.

:class:`GradientVarianceCallback` runs :class:`~flowvar.variance.monitor.GradientVarianceMonitor` on the
module's velocity field every ``every`` training batches, from the step's own forward and backward pass, and
writes to the Trainer's loggers: ``{prefix}/trace`` — the plug-in tr Cov(g) =
(1/B) Σ_i ‖g_i‖² − ‖ḡ‖² of the per-sample gradients g_i = ∇_θ ℓ_i —, ``trace_unbiased``, ``normalised``,
``loss``, ``mean_grad_sq_norm``, ``mean_sq_norm``, ``memorisation`` (0/1), and per t-bin k the conditional trace
``{prefix}/t_bin{k}_trace`` (on the monitor's profile steps, where it is finite).

The contract (checked at ``fit`` start; a missing piece is a one-line :class:`~flowvar.errors.ConfigError`)::

    class Flow(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.model = MLP(...)                       # 1. the velocity field, as attribute ``model_attr``

        def per_sample_losses(self, batch):             # 2. (B,) per-sample losses ℓ_i [and (B,) times t_i]
            x0, x1 = batch
            t = torch.rand(x0.shape[0], device=x0.device)
            xt = (1 - t[:, None]) * x0 + t[:, None] * x1
            return (self.model(xt, t) - (x1 - x0)).pow(2).sum(1), t

        def training_step(self, batch, batch_idx):      # 3. back-propagate their mean (or sum: reduction="sum")
            losses, t = self.per_sample_losses(batch)
            return losses.mean()

    trainer = L.Trainer(callbacks=[GradientVarianceCallback(every=50)], log_every_n_steps=50)

The callback sees what ``per_sample_losses`` returns (it wraps the method for the duration of ``fit``), so the
measured pass is the training step's own: nothing is recomputed. ``per_sample_losses`` must be called once per
training step, its losses must depend on their own sample only (no BatchNorm in training mode), and the loss
that is back-propagated must be exactly their mean (or sum) — the monitor checks the last on its first log.
``accumulate_grad_batches`` = k (fixed, or changed between epochs by a ``GradientAccumulationScheduler``): each
micro-batch of a measured step is measured on its own, exactly — Lightning back-propagates its loss / k, which the
monitor divides out (``loss_scale=1/k``, k read at every micro-batch) — so a measured step has k records, each logged
under that step: every logger gets k ``log_metrics`` calls with the same step. Lightning 2.6's CSV, TensorBoard, W&B
(its ``WandbLogger`` passes no W&B step: each call is a row of its own) and MLflow loggers keep all k; a logger that
keeps one value per step keeps one of them (``log_path`` and ``monitor.history`` hold all k). They are not merged:
their mean is the trace of no batch (docs/gradient_variance.md, "Lightning"). Refused with the fix: a GradScaler
(``precision="16-mixed"``; use ``"bf16-mixed"`` or 32-bit), and in manual optimisation a second backward pass of a
measured training batch (micro-batches by hand, whose factor the callback cannot know). Under DDP
(``strategy="ddp"``) every rank measures its shard and the monitor reduces them (:mod:`flowvar.variance.ranks`): the
logged numbers are those of the global batch on every rank.

Steps: the monitor's step counts training batches, including this one (steps count from 1, as in
:func:`flowvar.train.train`), measured when it is a multiple of ``every``. It is Lightning's own logging step + 1
(``fit_loop.epoch_loop._batches_that_stepped``, the step of the loggers' rows and of ``log_every_n_steps``), which
advances once per batch in automatic and in manual optimisation alike (once per k micro-batches under gradient
accumulation): ``trainer.global_step`` counts optimizer steps, two per batch with two optimisers stepped by hand.
With one optimizer step per batch (automatic optimisation) the step is ``global_step + 1``.

Logging: each measurement is written to every logger of the Trainer (``logger.log_metrics``, rank 0 only) once, at
its own step — the logger's row step is the monitor's step − 1, Lightning's number for the same batch —, whatever
``log_every_n_steps`` is. (Through ``self.log``, Lightning would write only on its ``log_every_n_steps``-th steps
and write the last logged value again at every later such step until the next measurement, so a measurement
would appear under steps where nothing was measured.) The values are also ``self.log``-ed with ``logger=False``,
so that ``trainer.callback_metrics`` holds the latest measurement (``ModelCheckpoint``/``EarlyStopping`` can
monitor ``{prefix}/trace``).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from typing import Any

import lightning.pytorch as pl
import torch
from torch import Tensor, nn

from flowvar.errors import ConfigError, DataError, ShapeError, check_positive_int
from flowvar.variance.engine import REDUCTIONS, Reduction
from flowvar.variance.monitor import SCALARS, GradientVarianceMonitor

__all__ = ["GradientVarianceCallback"]

#: Lightning's count of training batches (its logging step): once per batch, however many optimizers stepped
BATCHES = "_batches_that_stepped"


class GradientVarianceCallback(pl.Callback):
    """Logs the gradient variance of a LightningModule's training batches (module docstring: the contract).

    ``every``: measure every this many training batches. ``model_attr``: the module's attribute holding the
    velocity field (None: the whole LightningModule). ``losses_method``: the module's method returning the
    per-sample losses (B,) or (losses, t) of a batch. ``reduction``: "mean" or "sum", how ``training_step``
    reduces them. ``prefix``: the logged names' prefix. ``t_bins``, ``profile_every``, ``sigma``, ``log_path``
    and ``monitor_options`` (e.g. ``warn``, ``elementwise``) go to the
    :class:`~flowvar.variance.monitor.GradientVarianceMonitor`; ``profile_every=1`` (default here) computes the
    per-bin conditional traces on every measurement. ``own_grads`` (default True) goes to the monitor too: on measured
    batches the engine then writes the gradients of the layers it owns (convolutions on large feature maps, Linear
    layers on sequences) into ``.grad`` as a float64 sum, which changes training by rounding against an unmonitored
    run, for a cheaper measurement; ``own_grads=False`` keeps training bit-identical to an unmonitored run
    (:class:`~flowvar.variance.monitor.GradientVarianceMonitor`). ``monitor``: the monitor of the current ``fit``
    (its ``history`` holds every measurement), None before.
    """

    def __init__(self, every: int = 50, *, t_bins: int | None = 10, profile_every: int = 1,
                 sigma: float | None = None, log_path: str | os.PathLike[str] | None = None,
                 model_attr: str | None = "model", losses_method: str = "per_sample_losses",
                 reduction: Reduction = "mean", prefix: str = "gradvar", own_grads: bool = True,
                 **monitor_options: Any) -> None:
        super().__init__()
        self.every = check_positive_int("every", every)
        if reduction not in REDUCTIONS:
            raise ConfigError(f"reduction must be 'mean' or 'sum' (how training_step reduces the per-sample "
                              f"losses), got {reduction!r}")
        self.reduction: Reduction = reduction
        self.model_attr, self.losses_method, self.prefix = model_attr, losses_method, prefix
        self._monitor_args: dict[str, Any] = {"t_bins": t_bins, "profile_every": profile_every, "sigma": sigma,
                                              "log_path": log_path, "own_grads": bool(own_grads), **monitor_options}
        self.monitor: GradientVarianceMonitor | None = None
        self._captured: list[Any] = []
        self._wrapped: pl.LightningModule | None = None
        self._restored: dict[str, Any] | None = None  # the monitor state of a checkpoint, until the monitor exists
        self._measured_batch = False  # whether a backward pass of the current training batch was measured

    # ----------------------------------------------------------------------------------------- set-up

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        """Check the contract, wrap ``losses_method`` and build the monitor (``fit`` only)."""
        if stage != "fit":
            return
        model = self._model(pl_module)
        method = getattr(pl_module, self.losses_method, None)
        if not callable(method):
            raise ConfigError(f"GradientVarianceCallback: {type(pl_module).__name__} has no method "
                              f"{self.losses_method}(batch) returning the (B,) per-sample losses (or (losses, t)); "
                              f"define it and compute training_step's loss as its {self.reduction}")
        if getattr(trainer.precision_plugin, "scaler", None) is not None:
            raise ConfigError(f"GradientVarianceCallback: precision={trainer.precision!r} scales the loss by a "
                              f"GradScaler, which the per-sample gradients would carry; use precision='bf16-mixed' "
                              f"or 32-bit")
        if not hasattr(trainer.fit_loop.epoch_loop, BATCHES):
            raise ConfigError(f"GradientVarianceCallback counts training batches by Lightning's "
                              f"fit_loop.epoch_loop.{BATCHES}, which this Lightning version "
                              f"({pl.__version__}) lacks (tested with Lightning 2.6)")
        self.monitor = GradientVarianceMonitor(model, every=self.every, **self._monitor_args)
        if self._restored is not None:
            self.monitor.load_state_dict(self._restored)
            self._restored = None
        self._wrap(pl_module, method)

    def state_dict(self) -> dict[str, Any]:
        """Saved in Lightning's checkpoints: the monitor's state (memorisation detector, records logged), so that
        ``fit(ckpt_path=...)`` flags and profiles on the same steps as an uninterrupted run."""
        return {"monitor": self.monitor.state_dict()} if self.monitor is not None else {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        state = state_dict.get("monitor")
        if state is None:
            return
        if self.monitor is not None:
            self.monitor.load_state_dict(state)
        else:  # Lightning may restore callbacks before setup builds the monitor
            self._restored = dict(state)

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        """Remove the monitor's hooks and the method wrapper (the history stays in ``monitor``)."""
        if stage != "fit":
            return
        if self.monitor is not None:
            self.monitor.close()
        if self._wrapped is not None:
            self._wrapped.__dict__.pop(self.losses_method, None)  # the class's own method shows through again
            self._wrapped = None

    def _model(self, pl_module: pl.LightningModule) -> nn.Module:
        if self.model_attr is None:
            return pl_module
        model = getattr(pl_module, self.model_attr, None)
        if not isinstance(model, nn.Module):
            raise ConfigError(f"GradientVarianceCallback: {type(pl_module).__name__}.{self.model_attr} is not an "
                              f"nn.Module; set self.{self.model_attr} = <your velocity field> in __init__, or pass "
                              f"model_attr=<its attribute name> (None: the whole LightningModule)")
        return model

    def _wrap(self, pl_module: pl.LightningModule, method: Callable[..., Any]) -> None:
        captured = self._captured

        def recording(*args: Any, **kwargs: Any) -> Any:
            out = method(*args, **kwargs)
            if pl_module.training and torch.is_grad_enabled():  # the training step's call, not validation's
                captured.append(out)
            return out

        # an instance attribute shadows the class's method until teardown (object.__setattr__: nn.Module's own
        # __setattr__ would do the same for a function, but says so less plainly)
        object.__setattr__(pl_module, self.losses_method, recording)
        self._wrapped = pl_module

    # ----------------------------------------------------------------------------------------- per step

    @staticmethod
    def _step(trainer: pl.Trainer) -> int:
        """Training batches so far, including this one (module docstring, "Steps")."""
        return int(getattr(trainer.fit_loop.epoch_loop, BATCHES)) + 1

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        """Arm the hooks for this step's forward pass only when it is measured (else they cost a flag check)."""
        if self.monitor is None:
            return
        self._captured.clear()
        self._measured_batch = False
        self.monitor.engine.clear()  # anything recorded between steps (another callback's forward) is not ours
        self.monitor.engine.armed = self.monitor.due(self._step(trainer))

    def on_after_backward(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Measure the step's batch (before clipping and the optimizer step) and log the numbers.

        Automatic optimisation back-propagates the training step's loss / ``trainer.accumulate_grad_batches`` (read
        here, at every micro-batch: a ``GradientAccumulationScheduler`` changes it between epochs), which the monitor
        divides out (``loss_scale``). A second backward pass of one measured batch is refused in manual optimisation,
        whose factor the callback cannot know; in automatic optimisation it is a closure evaluated again (LBFGS), of
        the whole batch and the same loss, and is measured again."""
        monitor = self.monitor
        if monitor is None:
            return
        step = self._step(trainer)
        if not monitor.due(step):
            self._captured.clear()
            return
        if len(self._captured) != 1:
            raise ConfigError(f"GradientVarianceCallback: training step {step} called {self.losses_method}() "
                              f"{len(self._captured)} times with gradients enabled; call it exactly once per "
                              f"training step and back-propagate the {self.reduction} of its losses")
        if self._measured_batch and not pl_module.automatic_optimization:
            raise ConfigError(f"GradientVarianceCallback: training batch {step} ran a second backward pass of "
                              f"{self.losses_method}() losses after the measured one (manual optimisation: "
                              f"micro-batches by hand?); the callback cannot know what each pass was scaled by — "
                              f"manual_backward(losses.mean() / k) would make every statistic k² too small. Call "
                              f"{self.losses_method}() once per training batch and back-propagate the "
                              f"{self.reduction} of its losses once, or call GradientVarianceMonitor.step(step, "
                              f"losses, t, loss_scale=1/k) after each micro-batch's backward in your own code")
        losses, t = _losses_and_t(self._captured.pop(), self.losses_method)
        accumulated = trainer.accumulate_grad_batches if pl_module.automatic_optimization else 1
        try:
            record = monitor.step(step, losses, t, reduction=self.reduction, loss_scale=1.0 / accumulated)
        except DataError as error:
            raise _in_lightning_terms(error, self.losses_method, self.reduction) from error
        self._measured_batch = True
        if record is not None:
            self._log(trainer, pl_module, step, record)

    def _log(self, trainer: pl.Trainer, pl_module: pl.LightningModule, step: int, record: dict[str, Any]) -> None:
        """Every scalar and every finite per-bin trace to the loggers at this step's row, and to ``self.log`` for
        ``callback_metrics`` only (module docstring, "Logging"; the same values on every DDP rank: no sync)."""
        values = {f"{self.prefix}/{k}": float(record[k]) for k in SCALARS}
        values[f"{self.prefix}/memorisation"] = float(bool(record["memorisation"]))
        profile = record.get("t_profile")
        if profile is not None:
            for k, trace in enumerate(profile["trace"]):
                if math.isfinite(trace):
                    values[f"{self.prefix}/t_bin{k}_trace"] = float(trace)
        for name, value in values.items():
            pl_module.log(name, value, on_step=True, on_epoch=False, logger=False,
                          batch_size=int(record["batch_size"]))
        if trainer.is_global_zero:
            for logger in trainer.loggers:
                logger.log_metrics(values, step=step - 1)


#: The engine's sum check (flowvar.variance.engine): the backward pass was of more than the per-sample losses.
_NOT_ADDING_UP = "do not add up to the gradient of the backward pass"


def _in_lightning_terms(error: DataError, method: str, reduction: Reduction) -> DataError:
    """The monitor's sum-check error said in Lightning's terms. The engine names its causes and remedies for a
    hand-written loop ("add regularisers after measuring", engine.clear(), the autograd method); in Lightning there is
    no "after measuring" within training_step's one backward pass. Kept: which step and which parameters (the text
    up to the engine's first ": " after :data:`_NOT_ADDING_UP`); said instead: ``training_step`` returns exactly the
    ``reduction`` of ``method``'s losses, an L2 penalty goes into the optimizer's ``weight_decay`` and any other
    regulariser's gradient into the LightningModule's ``on_after_backward`` (which Lightning calls after the
    callbacks', so after the measurement), and other forward passes run under ``torch.no_grad()``. Any other error
    (including the sum check's parametrization cause, whose fix is the same in Lightning) comes back as it was."""
    text = str(error)
    at = text.find(_NOT_ADDING_UP)
    end = text.find(": ", at + len(_NOT_ADDING_UP)) if at >= 0 else -1
    if end < 0 or "parametrization" in text:
        return error
    return DataError(
        f"GradientVarianceCallback: {text[:end]}: the loss training_step returned was of more than the {reduction} of "
        f"{method}()'s losses (an extra term such as an L2 penalty), or the model ran again with gradients enabled "
        f"in the step. In Lightning, training_step must return exactly the {reduction} of {method}()'s losses: put "
        f"an L2 penalty c·Σ‖p‖² into the optimizer instead (torch.optim.Adam(..., weight_decay=2c) in "
        f"configure_optimizers adds its gradient 2c·p; AdamW's weight_decay is the decoupled kind), add the gradient "
        f"of any other regulariser in the LightningModule's on_after_backward (e.g. (c * penalty(self)).backward()), "
        f"which Lightning calls after this callback has measured, and run any other forward pass of the model under "
        f"torch.no_grad()")


def _losses_and_t(out: Any, method: str) -> tuple[Tensor, Tensor | None]:
    """(losses, t) from what the module's method returned: a (B,) tensor, or a (losses, t) pair."""
    if isinstance(out, Tensor):
        losses, t = out, None
    elif isinstance(out, tuple | list) and len(out) == 2 and all(isinstance(x, Tensor) for x in out):
        losses, t = out
    else:
        raise ConfigError(f"GradientVarianceCallback: {method}() must return the (B,) per-sample losses or a pair "
                          f"(losses, t) of (B,) tensors, got {type(out).__name__}")
    if losses.ndim != 1 or (t is not None and t.reshape(-1).shape != losses.shape):
        raise ShapeError(f"{method}() must return (B,) per-sample losses and (B,) times t; got losses "
                         f"{tuple(losses.shape)}" + ("" if t is None else f" and t {tuple(t.shape)}"))
    return losses, None if t is None else t.reshape(-1)
