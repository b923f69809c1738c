"""A resumed run with the gradient-variance monitor attached ends bit-identical to the uninterrupted one.

Why it did not: layers whose gradients the engine computes itself (:mod:`flowvar.variance.owned`: convolutions on
large feature maps, Linear layers on sequences) write a float64-summed G into ``.grad`` on fully armed passes only,
autograd's float32 G otherwise. A new monitor arms its first pass fully, while the uninterrupted run had armed the
pass after the checkpoint's step according to the step numbers (lightly, or not at all, when it is not due). So the
first step after a resume took the owned path, and the resumed run differed by rounding (5.9e-7 on a DiTField under
the trainer, 7.5e-9 on a conv net in a plain loop). The monitor's state now carries its arming state, and a loaded
monitor arms the next pass as the uninterrupted run did (:meth:`flowvar.variance.arming.Arming.resume`).

The test of the trainer's resume in test_monitor.py uses a 2-D MLP, where nothing is owned; these use a DiTField, a
UNetField and a conv net, where layers are.
"""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
from monitor_models import OwnedConvNet as _Conv
from monitor_models import StopAt as _StopAt

from flowvar.couplings import IndependentCoupling
from flowvar.distributions import StandardNormal
from flowvar.errors import ConfigError
from flowvar.interpolants import Interpolant
from flowvar.loss import CFMLoss
from flowvar.models import DiTField, UNetField
from flowvar.train import TrainConfig, train
from flowvar.variance.arming import Arming
from flowvar.variance.monitor import GradientVarianceMonitor

MODELS = {
    "dit": lambda: DiTField(8, channels=1, patch=2, width=32, depth=1, heads=2),
    "unet": lambda: UNetField(8, in_channels=1, base_channels=8, groups=4, head_channels=8),
}


def _trained(kind: str, ckpt, stop_at: int | None = None) -> tuple[torch.Tensor, GradientVarianceMonitor]:
    """8 float32 steps of CFM(σ = 0) on 1×8×8 images, a monitor logging every 2 steps, checkpoints every 4 (the
    trainer's own resume: a run stopped at ``stop_at`` leaves the step-4 checkpoint, a second call resumes from it).
    Returns the final parameters (flat) and the monitor."""
    coupling = IndependentCoupling(StandardNormal((1, 8, 8)), StandardNormal((1, 8, 8)))
    config = TrainConfig(steps=8, batch_size=8, lr=1e-3, checkpoint_every=4, log_every=0)
    torch.manual_seed(0)
    model = MODELS[kind]()
    monitor = GradientVarianceMonitor(model, every=2, t_bins=None, warn=False)
    extra = [] if stop_at is None else [_StopAt(stop_at)]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the ResumeWarning
            train(model, CFMLoss(Interpolant(sigma=0.0)), coupling, config, ckpt, callbacks=[monitor, *extra])
    finally:
        monitor.close()
    return torch.cat([p.detach().flatten() for p in model.parameters()]), monitor


@pytest.mark.parametrize("kind", sorted(MODELS))
def test_a_trainer_resume_with_the_monitor_ends_bit_identical(tmp_path, kind):
    """Killed at step 7 (after the step-4 checkpoint and the step-6 log), resumed to step 8: the parameters equal the
    uninterrupted run's bit for bit (5.9e-7 apart on the DiT before the fix), and the logs of steps 6 and 8 are the
    same (:func:`_same_logs`)."""
    straight, straight_monitor = _trained(kind, tmp_path / "a")
    with pytest.raises(KeyboardInterrupt):
        _trained(kind, tmp_path / "b", stop_at=7)
    resumed, resumed_monitor = _trained(kind, tmp_path / "b")
    assert torch.equal(resumed, straight), f"max |diff| {(resumed - straight).abs().max().item():.3g}"
    _same_logs(resumed_monitor, straight_monitor)


def _same_logs(resumed: GradientVarianceMonitor, straight: GradientVarianceMonitor) -> None:
    """The resumed run's records are the uninterrupted run's last ones: the same steps, and the same traces — to
    float32 rounding on the resumed run's first log, which validates the backward pass with the full Σ_i g_i
    (``validate_first``: once per monitor, so the uninterrupted run did it on its own first log) and forms the float32
    statistics along another path; bit for bit after it. The states (detector, cadence, arming) are equal, the peaks
    to that rounding."""
    n = len(resumed.history)
    assert [r["step"] for r in resumed.history] == [r["step"] for r in straight.history[-n:]]
    mine, theirs = [r["trace"] for r in resumed.history], [r["trace"] for r in straight.history[-n:]]
    assert mine[0] == pytest.approx(theirs[0], rel=1e-5)
    assert mine[1:] == theirs[1:]
    state, expected = resumed.state_dict(), straight.state_dict()
    for peak in ("peak_loss", "peak_trace"):
        assert state.pop(peak) == pytest.approx(expected.pop(peak), rel=1e-5)
    assert state == expected


def _batch(gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    x0 = torch.randn(8, 3, 16, 16, generator=gen)
    x1 = torch.randn(8, 3, 16, 16, generator=gen) + 2
    t = torch.rand(8, generator=gen)
    tb = t.view(-1, 1, 1, 1)
    return (1 - tb) * x0 + tb * x1, t, x1 - x0


def _loop(model, optimizer, monitor, gen, steps, snapshot_at=None):
    """A plain Adam loop over ``steps``; returns (model, optimizer, generator, monitor) states after ``snapshot_at``."""
    snapshot = None
    for step in steps:
        xt, t, ut = _batch(gen)
        losses = (model(xt, t) - ut).pow(2).flatten(1).sum(1)
        optimizer.zero_grad()
        losses.mean().backward()
        monitor.step(step, losses, t)
        optimizer.step()
        if step == snapshot_at:
            snapshot = (copy.deepcopy(model.state_dict()), copy.deepcopy(optimizer.state_dict()), gen.get_state(),
                        copy.deepcopy(monitor.state_dict()))
    return snapshot


def _conv_run(snapshot=None, state_filter=lambda state: state):
    """Steps 0–9 logging every 2 (a snapshot after step 4), or, from ``snapshot``, steps 5–9 with a new model,
    optimizer and monitor loaded from it (the monitor's state through ``state_filter``). Returns the final
    parameters, the snapshot and the monitor."""
    torch.manual_seed(0)
    model = _Conv()
    optimizer = torch.optim.Adam(model.parameters(), 1e-3)
    gen = torch.Generator().manual_seed(1)
    monitor = GradientVarianceMonitor(model, every=2, sigma=0.0, t_bins=None, warn=False)
    if snapshot is None:
        steps, taken = range(10), None
    else:
        model.load_state_dict(snapshot[0])
        optimizer.load_state_dict(snapshot[1])
        gen.set_state(snapshot[2])
        monitor.load_state_dict(state_filter(snapshot[3]))
        steps = range(5, 10)
    taken = _loop(model, optimizer, monitor, gen, steps, snapshot_at=4)
    monitor.close()
    return torch.cat([p.detach().flatten() for p in model.parameters()]), taken, monitor


def test_a_plain_loop_resume_with_the_monitor_ends_bit_identical():
    """A conv net in a plain loop, the monitor's state_dict saved with the model's and the optimizer's after step 4 and
    loaded into a new monitor: steps 5–9 end bit-identical to the uninterrupted run (7.5e-9 apart before the fix),
    with the same logs."""
    straight, snapshot, straight_monitor = _conv_run()
    assert snapshot[3]["arming"] == {"last": 4, "consecutive": True, "jumped": False}
    resumed, _, resumed_monitor = _conv_run(snapshot)
    assert torch.equal(resumed, straight), f"max |diff| {(resumed - straight).abs().max().item():.3g}"
    _same_logs(resumed_monitor, straight_monitor)


def test_a_state_saved_without_the_arming_state_still_loads_as_before():
    """A state dict of an earlier flowvar (no "arming") loads: the logs are the same and exact, the detector and the
    cadence resume, but the first pass is armed as a new monitor's (fully), so the owned layers' .grad differs by
    rounding there and the resume is not bit-identical — which is what the arming state fixes (this also shows
    that the conv net's layers are owned, so the test above can fail)."""
    straight, snapshot, straight_monitor = _conv_run()
    legacy, _, legacy_monitor = _conv_run(snapshot, lambda s: {k: v for k, v in s.items() if k != "arming"})
    assert not torch.equal(legacy, straight)
    assert (legacy - straight).abs().max().item() < 1e-6  # rounding, not another model
    assert [r["step"] for r in legacy_monitor.history] == [6, 8]
    for mine, theirs in zip(legacy_monitor.history, straight_monitor.history[-2:]):
        assert mine["trace"] == pytest.approx(theirs["trace"], rel=1e-4)


def test_the_first_pass_after_a_resume_is_armed_as_the_uninterrupted_run_armed_it():
    """Arming.resume(): after a due step whose successor is not due, lightly (autograd's gradients, calls recorded);
    before a due step, fully; a pass the uninterrupted run left off is armed lightly (autograd's gradients either
    way), so a resumed loop that numbers its first step otherwise still records it; before any step, fully."""
    def resumed(every, last, consecutive=True):
        arming = Arming(every)
        arming.load_state_dict({"last": last, "consecutive": consecutive, "jumped": False})
        return arming.resume()

    assert resumed(2, 4) == (True, True)      # step 4 logged, 5 not due
    assert resumed(2, 5) == (True, False)     # step 6 due
    assert resumed(3, 4) == (True, True)      # 5 not due, 4 not logged: the uninterrupted run left it off
    assert resumed(3, 4, consecutive=False) == (True, True)
    assert resumed(1, 4) == (True, False)
    assert Arming(2).resume() == (True, False)
    with pytest.raises(ConfigError, match="'last', 'consecutive' and 'jumped'"):
        Arming(2).load_state_dict({"last": 3})


def test_a_resume_numbered_otherwise_still_logs_its_due_step():
    """A plain loop resumed from the state after step 4 (every=3: the uninterrupted run left step 5's pass off) that
    runs step 6 next (step 5 left out) still logs step 6: the first pass after the load was recorded lightly."""
    torch.manual_seed(0)
    model = _Conv()
    gen = torch.Generator().manual_seed(1)
    monitor = GradientVarianceMonitor(model, every=3, t_bins=None, warn=False)
    monitor.load_state_dict({"peak_loss": 0.0, "peak_trace": 0.0, "streak": 0, "memorisation_step": None,
                             "logged": 2, "arming": {"last": 4, "consecutive": True, "jumped": False}})
    xt, t, ut = _batch(gen)
    losses = (model(xt, t) - ut).pow(2).flatten(1).sum(1)
    losses.mean().backward()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no SkippedLogWarning
        record = monitor.step(6, losses, t)
    monitor.close()
    assert record is not None and record["step"] == 6 and record["trace"] > 0
