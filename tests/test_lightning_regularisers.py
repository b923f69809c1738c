"""A regulariser in a LightningModule's training_step (userA, s28, finding 4): the monitor's sum check stops ``fit`` at
the first measured step, and the callback's message names the fixes a Lightning user can apply — the optimizer's
``weight_decay`` for an L2 term, the module's ``on_after_backward`` for any other regulariser — not the engine's "add
regularisers after measuring" (there is no "after measuring" within training_step's one backward pass). Each named fix
is run here: it trains exactly as the L2 term in the loss did, with the callback measuring."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from torch import Tensor

from flowvar.errors import DataError

L = pytest.importorskip("lightning", reason="the Lightning callback needs `pip install lightning` (make setup)")
from flowvar.integrations.lightning import GradientVarianceCallback  # noqa: E402
from lightning_checks import Flow, loader  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:`isinstance\\(treespec, LeafSpec\\)`")
C = 1e-2  # the L2 weight: loss + C·Σ‖p‖², as in the user's lit.py
STEPS, EVERY = 6, 3


def penalty(module: L.LightningModule) -> Tensor:
    return sum(p.pow(2).sum() for p in module.model.parameters())


class L2InLoss(Flow):
    """The user's module: an L2 term added to training_step's loss."""

    def training_step(self, batch: list[Tensor], batch_idx: int) -> Tensor:
        losses, _ = self.per_sample_losses(batch)
        return losses.mean() + C * penalty(self)


class L2AsWeightDecay(Flow):
    """The first fix named: Adam's weight_decay = 2C adds the gradient 2C·p of C·Σ‖p‖²."""

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=1e-2, weight_decay=2 * C)


class L2AfterBackward(Flow):
    """The second fix named: the regulariser's gradient added in on_after_backward, after the callback measured."""

    def on_after_backward(self) -> None:
        (C * penalty(self)).backward()


def _fit(tmp_path: Path, module: L.LightningModule, callbacks: list[Any]) -> L.LightningModule:
    trainer = L.Trainer(max_steps=STEPS, callbacks=callbacks, accelerator="cpu", devices=1, precision="64-true",
                        logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, default_root_dir=tmp_path)
    trainer.fit(module, loader())
    return module


def test_an_l2_term_in_training_step_names_the_lightning_fixes(tmp_path: Path) -> None:
    with pytest.raises(DataError) as caught:
        _fit(tmp_path, L2InLoss(), [GradientVarianceCallback(every=EVERY)])
    text = str(caught.value)
    assert text.startswith("GradientVarianceCallback: step 3: the per-sample gradients"), text
    assert "do not add up to the gradient of the backward pass" in text  # the cause, as the monitor found it
    assert "training_step must return exactly the mean of per_sample_losses()'s losses" in text
    assert "weight_decay=2c" in text and "on_after_backward" in text
    # the engine's remedies for a hand-written loop are not offered: Lightning users cannot apply them
    assert "after measuring)" not in text and "method='autograd'" not in text and "engine.clear" not in text
    assert "\n" not in text


@pytest.mark.parametrize("fixed", [L2AsWeightDecay, L2AfterBackward])
def test_each_named_fix_trains_as_the_l2_term_did_and_is_measured(tmp_path: Path, fixed: type[Flow]) -> None:
    want = _fit(tmp_path / "ref", L2InLoss(), [])  # the user's module without the callback: what training did
    callback = GradientVarianceCallback(every=EVERY)
    got = _fit(tmp_path / "fix", fixed(), [callback])
    assert [r["step"] for r in callback.monitor.history] == [3, 6]
    for (name, p), q in zip(got.model.named_parameters(), want.model.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-9, atol=1e-12, msg=name)
