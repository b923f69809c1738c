"""The Lightning callback under gradient accumulation and hand-written micro-batches.

Lightning back-propagates ``training_step``'s loss / ``accumulate_grad_batches`` (its ``ClosureResult`` divides by
``trainer.accumulate_grad_batches``), one micro-batch at a time, and calls ``on_after_backward`` after each. The
callback checked the setting only at ``fit`` start, so a ``GradientAccumulationScheduler`` that starts accumulating
later made every logged statistic k² too small (¼ for k = 2), with two records per step and no warning. It now reads
the setting at every measured micro-batch and measures it exactly with ``loss_scale = 1/k``: each micro-batch's
record equals torch.func per-sample gradients of that micro-batch (1e-9, float64).

Manual optimisation that back-propagates several hand-written micro-batches per training batch (each through its own
``per_sample_losses`` call and ``manual_backward(losses.mean() / k)``) logged ¼ of the truth for k = 2: the callback
cannot know the factor, and now refuses the second backward pass of a measured batch with one line.
"""

from __future__ import annotations

import copy
import math
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import Tensor

from flowvar.errors import ConfigError

L = pytest.importorskip("lightning", reason="the Lightning callback needs `pip install lightning` (make setup)")
from lightning.pytorch.callbacks import GradientAccumulationScheduler  # noqa: E402

from flowvar.integrations.lightning import GradientVarianceCallback  # noqa: E402
from lightning_checks import Flow as CheckFlow  # noqa: E402
from lightning_checks import loader, per_sample_gradients  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:`isinstance\\(treespec, LeafSpec\\)`")


class Flow(CheckFlow):
    """The shared flow, trained by SGD."""

    optimizer = torch.optim.SGD


class HandMadeMicroBatches(Flow):
    """Manual optimisation: two halves per training batch, each back-propagated as its mean / 2."""

    def __init__(self) -> None:
        super().__init__()
        self.automatic_optimization = False

    def training_step(self, batch: list[Tensor], batch_idx: int) -> None:
        opt = self.optimizers()
        opt.zero_grad()
        (x1,) = batch
        for half in (x1[: len(x1) // 2], x1[len(x1) // 2:]):
            losses, _ = self.per_sample_losses([half])
            self.manual_backward(losses.mean() / 2)
        opt.step()


class Snapshots(L.Callback):
    """(Lightning's batch counter + 1, a copy of the model, the micro-batch) after every backward pass."""

    def __init__(self) -> None:
        self.taken: list[tuple[int, Any, tuple[Tensor, Tensor, Tensor]]] = []

    def on_after_backward(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        step = trainer.fit_loop.epoch_loop._batches_that_stepped + 1
        self.taken.append((step, copy.deepcopy(pl_module.model), pl_module.last))


def _trainer(tmp_path: Path, callbacks: list[L.Callback], **kw: Any) -> L.Trainer:
    return L.Trainer(callbacks=callbacks, accelerator="cpu", devices=1, precision="64-true",
                     logger=L.pytorch.loggers.CSVLogger(tmp_path), enable_checkpointing=False,
                     enable_progress_bar=False, enable_model_summary=False, **kw)


def _reference_trace(model: torch.nn.Module, xt: Tensor, t: Tensor, ut: Tensor) -> float:
    """tr Cov(g) of ‖v(x_t, t) − u_t‖² from torch.func per-sample gradients."""
    g = per_sample_gradients(model, xt, t, ut)
    return float((g - g.mean(0)).pow(2).sum(1).mean())


def _check_against_reference(callback: GradientVarianceCallback, snapshots: Snapshots, every: int) -> list[int]:
    """Every record equals the reference of its micro-batch (the measured ones, in order); returns the steps."""
    measured = [(step, model, batch) for step, model, batch in snapshots.taken if step % every == 0]
    history = callback.monitor.history
    assert [r["step"] for r in history] == [step for step, _, _ in measured]
    for record, (_, model, batch) in zip(history, measured):
        assert math.isclose(record["trace"], _reference_trace(model, *batch), rel_tol=1e-9), record["step"]
    return [r["step"] for r in history]


def test_accumulate_grad_batches_is_measured_per_micro_batch_exactly(tmp_path: Path) -> None:
    """accumulate_grad_batches=2, 10 batches: 5 optimizer steps; every=5 measures both micro-batches of step 5, each
    exact, and the logger gets both under that step's row."""
    callback, snapshots = GradientVarianceCallback(every=5, t_bins=None, warn=False), Snapshots()
    trainer = _trainer(tmp_path, [callback, snapshots], max_steps=5, accumulate_grad_batches=2, log_every_n_steps=1)
    trainer.fit(Flow(), loader())
    assert _check_against_reference(callback, snapshots, every=5) == [5, 5]


def test_accumulation_that_a_scheduler_starts_later_is_measured_exactly(tmp_path: Path) -> None:
    """GradientAccumulationScheduler({1: 2}): epoch 0 steps 1–10 one batch each, epoch 1 steps 11–15 two micro-batches
    each. The records of step 15 were ¼ of the truth; each equals its micro-batch's reference now, with no warning."""
    callback, snapshots = GradientVarianceCallback(every=5, t_bins=None), Snapshots()
    trainer = _trainer(tmp_path, [callback, snapshots, GradientAccumulationScheduler({1: 2})], max_epochs=2,
                       log_every_n_steps=1)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.fit(Flow(), loader())
    assert not [w for w in caught if w.category.__module__.startswith("flowvar")]
    assert _check_against_reference(callback, snapshots, every=5) == [5, 10, 15, 15]


def test_hand_made_micro_batches_in_manual_optimisation_are_refused(tmp_path: Path) -> None:
    """Two per_sample_losses calls each back-propagated by manual_backward(mean / 2) in one training batch: the
    second backward pass of a measured batch is refused with one line naming the fix."""
    callback = GradientVarianceCallback(every=2, t_bins=None, warn=False)
    trainer = _trainer(tmp_path, [callback], max_steps=4, log_every_n_steps=1)
    with pytest.raises(ConfigError, match=r"training batch 2 .*second backward pass.*loss_scale=1/k") as err:
        trainer.fit(HandMadeMicroBatches(), loader())
    assert "\n" not in str(err.value)


class ClosureTwice(Flow):
    """LBFGS evaluates the closure (training_step and its backward pass) several times per batch."""

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.LBFGS(self.parameters(), lr=0.1, max_iter=3)


def test_a_closure_evaluated_again_in_automatic_optimisation_is_measured_each_time(tmp_path: Path) -> None:
    """Automatic optimisation's second backward pass of a batch is the optimizer's closure again (whole batch, same
    loss): not refused, each evaluation measured exactly (3 per measured batch here)."""
    callback, snapshots = GradientVarianceCallback(every=2, t_bins=None, warn=False), Snapshots()
    trainer = _trainer(tmp_path, [callback, snapshots], max_steps=4, log_every_n_steps=1)
    trainer.fit(ClosureTwice(), loader())
    assert _check_against_reference(callback, snapshots, every=2) == [2, 2, 2, 4, 4, 4]
