"""Which forward/backward pass the engine and the monitor measure when training does not call them once per pass.

The engine measures the latest forward/backward pass: passes that were never measured (step() left out, a step the
monitor does not log) are dropped as the next one begins, so their records neither pile up nor mix with it; a
backward pass through several recorded calls of the model, two backward passes through one (retain_graph), and a
step() whose losses come after the last backward pass, are refused. The monitor logs steps whose numbers restart,
jump or repeat; it skips (with one SkippedLogWarning) a batch of one sample and a due step whose pass ran with its
hooks off; a forward the hooks do not reach (torch.compile, a TorchScript trace) or on a copy of the model is refused
naming the cause. Every logged number
is compared with per-sample gradients computed independently (torch.func, or one backward pass per sample).
"""

from __future__ import annotations

import copy
import gc
import math
import warnings
import weakref

import pytest
import torch
import torch.utils.checkpoint as checkpoint
from per_sample_reference import F64, assert_exact, reference_loop
from torch import Tensor, nn

from flowvar.couplings import IndependentCoupling
from flowvar.distributions import StandardNormal
from flowvar.errors import DataError
from flowvar.interpolants import PathSample
from flowvar.loss import CFMLoss, per_sample_loss
from flowvar.models import MLPField
from flowvar.variance import GradNormEngine, per_sample_gradients
from flowvar.variance.engine import _PENDING_CALLS
from flowvar.variance.monitor import GradientVarianceMonitor, SkippedLogWarning

COUPLING = IndependentCoupling(StandardNormal(2, F64), StandardNormal(2, F64))


def field() -> MLPField:
    torch.manual_seed(0)
    return MLPField(2, width=8, depth=1).to(F64)


def draw(gen: torch.Generator, n: int = 16) -> PathSample:
    return CFMLoss().draw(COUPLING, n, gen)


def brute(model: nn.Module, path: PathSample) -> dict[str, float]:
    """trace, ‖ḡ‖² and the mean loss of the batch from torch.func per-sample gradients (float64)."""
    grads = per_sample_gradients(model, path, method="autograd")
    g = torch.cat([v.reshape(v.shape[0], -1) for v in grads.values()], 1).to(F64)
    mean = g.mean(0)
    with torch.no_grad():
        loss = float(per_sample_loss(model, path).mean())
    return {"trace": float((g - mean).pow(2).sum(1).mean()), "mean_grad_sq_norm": float(mean.pow(2).sum()),
            "loss": loss}


def assert_logged(record: dict | None, ref: dict[str, float]) -> None:
    assert record is not None
    for key, want in ref.items():
        assert math.isclose(record[key], want, rel_tol=1e-10), (key, record[key], want)


def train_step(model: nn.Module, path: PathSample) -> Tensor:
    losses = per_sample_loss(model, path)
    model.zero_grad()
    losses.mean().backward()
    return losses


# --------------------------------------------------------------------------------------------- the latest pass


def test_a_step_after_unmeasured_passes_measures_the_latest_pass_exactly(gen):
    """every=1 but step() only on every 4th step (parameters updated in between): the record is the statistics of
    the step's own pass — it was the sum over 4 passes' records (6194 vs 596 in the report that found it)."""
    model = field()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    monitor = GradientVarianceMonitor(model, t_bins=None)
    for step in range(9):
        path = draw(gen)
        ref = brute(model, path)  # before the update
        losses = train_step(model, path)
        if step % 4 == 0:
            assert_logged(monitor.step(step, losses, path.t), ref)
        opt.step()
    assert [r["step"] for r in monitor.history] == [0, 4, 8]
    monitor.close()


def test_records_stay_bounded_when_step_is_never_called(gen):
    """A monitor built and never stepped: each pass's records (and the graph they hold) go when the next pass's
    backward begins — the report measured +3.4 GiB over 3000 steps. A grad-enabled loop of forwards without a
    backward keeps at most _PENDING_CALLS calls."""
    model = field()
    monitor = GradientVarianceMonitor(model, t_bins=None)
    engine = monitor.engine
    first: weakref.ref[Tensor] | None = None
    for step in range(20):
        path = draw(gen)
        out = model(path.xt, path.t)
        if step == 0:
            first = weakref.ref(out)
        (out - path.target).pow(2).sum(1).mean().backward()
        del out
        assert len(engine._root_calls) == 1 and engine._previous is None
        assert sum(map(len, engine._records.values())) == len(engine._records)  # one call per layer
    assert first is not None and first() is None  # nothing holds the first pass's graph (no cycle either)
    for _ in range(3 * _PENDING_CALLS):  # a validation loop that forgot torch.no_grad()
        model(path.xt, path.t)
        assert len(engine._root_calls) <= _PENDING_CALLS
    gc.collect()
    monitor.close()


def test_a_grad_enabled_forward_after_the_backward_pass(gen):
    """A forward between the backward pass and step() (a validation loss without torch.no_grad()): the step's own
    losses are measured exactly. Losses that cannot be traced to the backward pass's forward (detached), or that
    come from the later forward (step() before its backward), are refused — they were measured with the wrong
    pass's gradients before, or the pass before dropped."""
    model = field()
    monitor = GradientVarianceMonitor(model, t_bins=None)
    for step in range(2):
        path, val = draw(gen), draw(gen, 12)
        ref = brute(model, path)
        losses = train_step(model, path)
        per_sample_loss(model, val).mean().item()  # grad enabled
        assert_logged(monitor.step(step, losses, path.t), ref)

    path, val = draw(gen), draw(gen)
    losses = train_step(model, path)
    per_sample_loss(model, val)
    with pytest.raises(DataError, match=r"step 2: the latest grad-enabled forward pass of the model has had no "
                                        r"backward pass.*not detached"):
        monitor.step(2, losses.detach(), path.t)

    monitor = GradientVarianceMonitor(model, t_bins=None)  # step() left out, then called before the backward
    train_step(model, draw(gen))
    path = draw(gen)
    losses = per_sample_loss(model, path)
    with pytest.raises(DataError, match=r"called before this pass's loss\.backward\(\)"):
        monitor.step(0, losses, path.t)
    assert monitor.history == []

    engine = GradNormEngine(model)  # a lightly armed pass is kept for a later forward as a fully armed one is
    engine.light = True
    ref = brute(model, path)
    losses = train_step(model, path)
    per_sample_loss(model, val)
    assert_logged(engine.compute(losses=losses).report().to_dict(), {"trace": ref["trace"]})
    engine.detach()


def test_a_step_before_backward_after_a_diagnostic_pass_leaves_the_retry_measurable(gen):
    """A grad-enabled diagnostic pass between steps (autograd.grad on another batch), then step() called before the
    step's backward: refused, rightly, but the refusal dropped the step's recorded forward, so the retry after
    backward() was refused as a backward pass that reached no recorded forward, blaming torch.compile and TorchScript,
    neither used. The refusal keeps the pass (as it does without the diagnostic pass), and the retry is exact."""
    model = field()
    monitor = GradientVarianceMonitor(model, t_bins=None)
    for step in range(2):
        path = draw(gen)
        ref = brute(model, path)
        assert_logged(monitor.step(step, train_step(model, path), path.t), ref)
    diagnostic = draw(gen, 4)
    torch.autograd.grad(per_sample_loss(model, diagnostic).sum(), list(model.parameters()))
    path = draw(gen)
    ref = brute(model, path)
    losses = per_sample_loss(model, path)
    with pytest.raises(DataError, match=r"step 2: .*called before this pass's loss\.backward\(\)"):
        monitor.step(2, losses, path.t)
    model.zero_grad()
    losses.mean().backward()
    assert_logged(monitor.step(2, losses, path.t), ref)
    path = draw(gen)
    ref = brute(model, path)
    assert_logged(monitor.step(3, train_step(model, path), path.t), ref)
    monitor.close()


@pytest.mark.parametrize("numbers", ["logged-only", "per-epoch"])
def test_a_grad_enabled_forward_after_a_lightly_armed_due_pass(numbers, gen):
    """every=5, step() called on logged steps only (or step numbers restarting every epoch), a validation loss with
    gradients between backward() and step(): the monitor arms those passes lightly (it cannot foresee their
    numbers), and the finished pass must outlive the validation forward as a fully armed one does — step 5 raised
    "the losses given are not the earlier pass's own" although they were. Every due step is logged exactly
    (torch.func), and no pass is held past the next pass's backward."""
    model = field()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    monitor = GradientVarianceMonitor(model, every=5, t_bins=None)
    engine = monitor.engine
    logged, val_outputs = [], []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SkippedLogWarning)  # per-epoch: the first restart's pass ran unarmed
        for k in range(20):
            step = k if numbers == "logged-only" else k % 7
            path, val = draw(gen), draw(gen, 12)
            ref = brute(model, path)
            losses = train_step(model, path)
            out = model(val.xt, val.t)  # a validation loss with gradients enabled
            (out - val.target).pow(2).sum(1).mean().item()
            val_outputs.append(weakref.ref(out))
            del out
            if numbers == "per-epoch" or step % 5 == 0:
                record = monitor.step(step, losses, path.t)
                if record is not None:
                    assert_logged(record, ref)
                    logged.append(k)
            assert engine._previous is None or len(engine._previous.root_calls) <= 2
            opt.step()
    assert logged == ([0, 5, 10, 15] if numbers == "logged-only" else [0, 5, 12, 14, 19])
    assert all(r() is None for r in val_outputs[:-2])  # records stay bounded: older passes' graphs are gone
    monitor.close()


def test_losses_of_a_pass_before_the_latest_are_refused(gen):
    """A second forward/backward pass of the same batch size between the step's backward and step() (a second
    update, a Jacobian taken row by row): the latest pass is the one measured, so the step's own losses — traced
    through their graph — are refused instead of being logged with the other pass's gradients."""
    model = field()
    monitor = GradientVarianceMonitor(model, t_bins=None)
    path = draw(gen)
    losses = train_step(model, path)
    train_step(model, draw(gen))  # another pass of 16 samples
    with pytest.raises(DataError, match=r"step 0: the losses given are not of the latest forward/backward pass"):
        monitor.step(0, losses, path.t)
    assert monitor.history == []
    monitor.close()


def test_a_whole_model_checkpointed_reentrantly_after_an_unmeasured_pass_is_refused(gen):
    """Reentrant checkpointing around the whole model: its forward runs without gradients (no new pass begins), and
    the recomputation in the backward pass would join the unmeasured pass before it. Measured exactly when step()
    follows every backward pass; refused, naming the cause, when one was left out."""
    model = field()
    monitor = GradientVarianceMonitor(model, t_bins=None)
    for step in range(3):
        path = draw(gen)
        ref = brute(model, path)
        xt = path.xt.clone().requires_grad_()
        out = checkpoint.checkpoint(model, xt, path.t, use_reentrant=True)
        losses = (out - path.target).pow(2).sum(1)
        model.zero_grad()
        losses.mean().backward()
        if step == 0:
            assert_logged(monitor.step(step, losses, path.t), ref)
        elif step == 2:
            with pytest.raises(DataError, match=r"step 2: the backward pass recomputed the model \(reentrant"):
                monitor.step(step, losses, path.t)
    monitor.close()


# --------------------------------------------------------------------------------------------- several calls


@pytest.mark.parametrize("sizes", [(16, 16), (16, 12)])
def test_two_forward_passes_in_one_backward_are_refused(sizes, gen):
    """Two batches back-propagated together, step() given the first one's losses: refused (it logged 916 for a
    true 557, pairing the batches' samples by index); nothing is logged."""
    model = field()
    monitor = GradientVarianceMonitor(model, t_bins=None)
    a, b = draw(gen, sizes[0]), draw(gen, sizes[1])
    losses = per_sample_loss(model, a)
    (losses.mean() + per_sample_loss(model, b).mean()).backward()
    with pytest.raises(DataError, match=r"step 0: the backward pass reached 2 recorded calls of the model"):
        monitor.step(0, losses, a.t)
    assert monitor.history == []
    monitor.close()


class SelfConditioned(nn.Module):
    """A loss that calls the field twice per sample (self-conditioning, gradients through both calls), wrapped in
    one module: the field's layers are then called twice within one call of the monitored model."""

    def __init__(self) -> None:
        super().__init__()
        self.field = field()

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        first = self.field(x, t)
        return self.field(x + 0.5 * first, t)


def test_a_loss_calling_the_model_twice_is_refused_unless_one_module_makes_the_calls(gen):
    path = draw(gen)
    model = SelfConditioned()
    with GradientVarianceMonitor(model.field, t_bins=None) as monitor:  # on the field: two calls, refused
        losses = (model(path.xt, path.t) - path.target).pow(2).sum(1)
        losses.mean().backward()
        with pytest.raises(DataError, match="more than once per sample"):
            monitor.step(0, losses, path.t)
    model.zero_grad()
    with GradientVarianceMonitor(model, t_bins=None) as monitor:  # on the wrapper: exact
        losses = (model(path.xt, path.t) - path.target).pow(2).sum(1)
        losses.mean().backward()
        record = monitor.step(0, losses, path.t)
    g = reference_loop(model, (path.xt, path.t), path.target)
    flat = torch.cat([v.reshape(v.shape[0], -1) for v in g.values()], 1)
    assert math.isclose(record["trace"], float((flat - flat.mean(0)).pow(2).sum(1).mean()), rel_tol=1e-10)


# --------------------------------------------------------------------------------------------- step numbers


def test_step_numbers_restarting_every_epoch(gen):
    """Per-epoch step numbers (enumerate(loader)), every=5: it crashed at the first restart ("recorded no forward
    pass"). The first restart's pass ran with the hooks off (they were armed for step 12): that one log is skipped
    with one SkippedLogWarning; from then on every pass is recorded (lightly) and every due step is logged, each
    exactly."""
    model = field()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    monitor = GradientVarianceMonitor(model, every=5, t_bins=None)
    logged = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for epoch in range(3):
            for step in range(12):
                path = draw(gen)
                ref = brute(model, path)
                losses = train_step(model, path)
                record = monitor.step(step, losses, path.t)
                if record is not None:
                    assert_logged(record, ref)
                    logged.append((epoch, step))
                opt.step()
    assert logged == [(0, 0), (0, 5), (0, 10), (1, 5), (1, 10), (2, 0), (2, 5), (2, 10)]
    skipped = [w for w in caught if issubclass(w.category, SkippedLogWarning)]
    assert len(skipped) == 1 and "step 0 is not logged" in str(skipped[0].message)
    assert "global step counter" in str(skipped[0].message)
    monitor.close()


@pytest.mark.parametrize("left_out", [3, 5])
def test_a_step_call_left_out(left_out, gen):
    """step() not called for one step (a NaN loss skipped before backward), every=4: when the step after it is
    due its pass ran with the hooks off and that log is skipped with a warning; later due steps are logged
    exactly."""
    model = field()
    monitor = GradientVarianceMonitor(model, every=4, t_bins=None)
    logged = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for step in range(13):
            path = draw(gen)
            if step == left_out:
                per_sample_loss(model, path)  # a forward, no backward, no step()
                continue
            ref = brute(model, path)
            record = monitor.step(step, train_step(model, path), path.t)
            if record is not None:
                assert_logged(record, ref)
                logged.append(step)
    skipped = [w for w in caught if issubclass(w.category, SkippedLogWarning)]
    assert logged == ([0, 8, 12] if left_out == 3 else [0, 4, 8, 12])
    assert len(skipped) == (left_out == 3)
    monitor.close()


# --------------------------------------------------------------------------------------------- out of reach


def test_a_forward_outside_the_hooks_reach_is_named(gen):
    """A TorchScript trace of the model shares its parameters but runs no module hook: the backward pass reaches
    the parameters, not the recorded calls (the trace's own forward, under no_grad, recorded nothing). Named (with
    torch.compile), not "recorded no forward pass"."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 2)).to(F64)
    x = torch.randn(8, 3, generator=gen, dtype=F64)
    y = torch.randn(8, 2, generator=gen, dtype=F64)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit.trace's own
        traced = torch.jit.trace(model, (x,))
    monitor = GradientVarianceMonitor(model, t_bins=None)
    losses = (traced(x) - y).pow(2).sum(1)
    losses.mean().backward()
    with pytest.raises(DataError, match=r"step 0: the parameters received gradients in a backward pass that reached "
                                        r"no recorded forward call.*torch\.compile"):
        monitor.step(0, losses)
    monitor.close()


def compiled_or_skip(model: nn.Module, *inputs: Tensor) -> Tensor:
    """The output of ``torch.compile(model)`` (default backend) on ``inputs``; skips where it cannot run."""
    try:
        return torch.compile(model)(*inputs)
    except Exception as error:  # no C compiler, no inductor on this platform
        pytest.skip(f"torch.compile cannot run here: {type(error).__name__}: {error}")


def test_a_compiled_model_is_named(gen):
    """torch.compile (default backend) of a model whose own call is compiled too: no hook runs, nothing of the
    pass is recorded. Named, with the fix (the uncompiled model on measured steps)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 2)).to(F64)
    x = torch.randn(8, 3, generator=gen, dtype=F64)
    y = torch.randn(8, 2, generator=gen, dtype=F64)
    monitor = GradientVarianceMonitor(model, t_bins=None)
    losses = (compiled_or_skip(model, x) - y).pow(2).sum(1)
    losses.mean().backward()
    with pytest.raises(DataError, match=r"step 0: .*torch\.compile'd model.*model if monitor\.due\(step\) else "
                                        r"compiled"):
        monitor.step(0, losses)
    monitor.close()


def test_a_compiled_model_whose_call_is_recorded_is_measured_through_it(gen):
    """torch.compile of a model whose forward breaks the graph at its start (MLPField checks its inputs): the
    model's own hook runs, its layers' do not. Every parameter is measured exactly through the whole model (the
    slower exact fallback), and the record says so."""
    model = field()
    path = draw(gen)
    ref = brute(model, path)
    monitor = GradientVarianceMonitor(model, t_bins=None)
    losses = (compiled_or_skip(model, path.xt, path.t) - path.target).pow(2).sum(1)
    losses.mean().backward()
    record = monitor.step(0, losses, path.t)
    assert_logged(record, ref)
    assert record["fallback"] == sorted(n for n, _ in model.named_parameters())
    assert "torch.compile" in monitor.engine.fallback_parameters["net.0.weight"]
    monitor.close()


def test_a_copy_of_the_model_is_named(gen):
    """Training a deep copy (an EMA model, a copy made after the monitor): nothing reached the monitored model."""
    model = field()
    monitor = GradientVarianceMonitor(model, t_bins=None)
    clone = copy.deepcopy(model)
    path = draw(gen)
    losses = train_step(clone, path)
    with pytest.raises(DataError, match=r"step 0: no forward/backward pass of the model was recorded.*not a copy"):
        monitor.step(0, losses, path.t)
    monitor.close()


# --------------------------------------------------------------------------------------------- small batches


def test_a_batch_of_one_sample_is_skipped_once_with_a_warning(gen, tmp_path):
    """The last batch of a DataLoader with drop_last=False: one warning, nothing logged for it, training goes on and
    the next steps are logged exactly (it raised DataError from inside the monitor)."""
    model = field()
    monitor = GradientVarianceMonitor(model, t_bins=4, log_path=tmp_path / "gv.csv")
    for step, n in enumerate([16, 1, 8, 1, 5]):
        path = draw(gen, n)
        ref = brute(model, path) if n > 1 else None
        losses = train_step(model, path)
        if n == 1 and step == 1:
            with pytest.warns(SkippedLogWarning, match=r"step 1 is not logged: a batch of 1 sample"):
                assert monitor.step(step, losses, path.t) is None
        elif n == 1:
            with warnings.catch_warnings():
                warnings.simplefilter("error")  # warned once
                assert monitor.step(step, losses, path.t) is None
        else:
            assert ref is not None
            assert_logged(monitor.step(step, losses, path.t), ref)
    assert [r["step"] for r in monitor.history] == [0, 2, 4]
    monitor.close()
    assert len((tmp_path / "gv.csv").read_text().splitlines()) == 4  # header + 3 rows


# --------------------------------------------------------------------------------------------- light arming


class Mixed(nn.Module):
    """An owned convolution (large map), a Linear on (B, in) (row norms taken by the hooks) and attention (its
    projections captured): what a lightly armed pass leaves to compute()."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(2, 4, 3, padding=1)  # (its input does not require grad: never owned)
        self.conv = nn.Conv2d(4, 4, 3, padding=1)
        self.attn = nn.MultiheadAttention(4, 2, batch_first=True)
        self.head = nn.Linear(4, 3)

    def forward(self, x: Tensor) -> Tensor:
        h = torch.tanh(self.conv(torch.tanh(self.stem(x)))).flatten(2).transpose(1, 2)  # (B, 64, 4)
        h = self.attn(h, h, h, need_weights=False)[0].mean(1)
        return self.head(torch.tanh(h))


@pytest.mark.parametrize("light", [False, True])
def test_a_lightly_armed_pass_is_measured_exactly(light, gen):
    torch.manual_seed(0)
    model = Mixed().to(F64)
    x = torch.randn(6, 2, 8, 8, generator=gen, dtype=F64)
    y = torch.randn(6, 3, generator=gen, dtype=F64)
    engine = GradNormEngine(model)
    engine.light = light
    losses = (model(x) - y).pow(2).sum(1)
    assert bool(engine.owned.calls) != light  # the convolution's gradient is owned on a fully armed pass only
    losses.mean().backward()
    stats = engine.compute(losses=losses, validate=True)
    assert_exact(stats, reference_loop(model, (x,), y), 1e-10)
    engine.armed = True  # arming (the Lightning callback) arms fully
    assert not engine.light
    engine.detach()


def test_the_bilinear_fallback_lets_no_vmap_warning_escape(gen):
    """nn.Bilinear goes through the exact fallback, where vmap runs _trilinear in a loop and torch warns about it on
    every call: that warning stays inside; the numbers are exact."""
    torch.manual_seed(0)
    model = nn.Bilinear(3, 4, 2).to(F64)
    x1 = torch.randn(8, 3, generator=gen, dtype=F64)
    x2 = torch.randn(8, 4, generator=gen, dtype=F64)
    y = torch.randn(8, 2, generator=gen, dtype=F64)
    engine = GradNormEngine(model)
    losses = (model(x1, x2) - y).pow(2).sum(1)
    losses.mean().backward()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        stats = engine.compute(losses=losses)
    assert stats.rules["weight"] == "fallback-vmap"
    assert_exact(stats, reference_loop(model, (x1, x2), y), 1e-10)
    engine.detach()


# --------------------------------------------------------------------------------------------- two backward passes


class Critic(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(1)
        self.net = nn.Sequential(nn.Linear(2, 8), nn.Tanh(), nn.Linear(8, 1)).to(F64)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x).squeeze(1)


@pytest.mark.parametrize("light", [False, True])
@pytest.mark.parametrize("other", ["aux", "gan"])
def test_two_backward_passes_through_one_forward_are_refused(other, light, gen):
    """Another loss back-propagated through the same forward with retain_graph=True (an auxiliary loss; a GAN's
    discriminator loss on the generator's output without detach()), zero_grad(), then the measured losses'
    backward: the hooks added both passes' δ, and the record was logged silently wrong (trace 127.7 for a true
    108.3, ‖ḡ‖² twice .grad's). Refused, naming the cause; with the output detached for the other loss the same
    step is logged exactly, and the monitor goes on after a refusal."""
    model, critic = field(), Critic()
    monitor = GradientVarianceMonitor(model, t_bins=None)
    for step, detach in ((0, False), (1, True), (2, False)):
        monitor.engine.light = light
        path = draw(gen)
        ref = brute(model, path)
        out = model(path.xt, path.t)
        shared = out.detach() if detach else out
        if other == "aux":  # (detached, it is a constant: nothing to back-propagate)
            if not detach:
                shared.pow(2).sum(1).mean().backward(retain_graph=True)
        else:
            torch.nn.functional.softplus(critic(shared)).mean().backward(retain_graph=not detach)
        model.zero_grad()
        losses = (out - path.target).pow(2).sum(1)
        losses.mean().backward()
        if detach:
            assert_logged(monitor.step(step, losses, path.t), ref)
        else:
            with pytest.raises(DataError, match=rf"step {step}: two backward passes went through the same recorded "
                                                r"forward pass.*retain_graph=True.*detach\(\)"):
                monitor.step(step, losses, path.t)
    assert [r["step"] for r in monitor.history] == [1]
    monitor.close()
