"""The exact fallback recomputes a module from its buffers as its recorded forward began and never writes the model's.

A forward that updates its buffers (InstanceNorm's running statistics with ``track_running_stats=True``, a counter,
an EMA of its input) used to be recomputed on the live buffers: every measured step updated them once more per
sample (InstanceNorm's running mean 0.1066 against 0.0347 unmonitored after 3 steps, eval outputs 0.22 apart), and an
EMA that normalises by its updated mean was blamed on ``optimizer.step()``. Here the model is trained with and
without the monitor and must end bitwise identical, buffers, parameters and eval outputs, while the per-sample
numbers stay exact against a loop of one fresh forward per sample (each from the buffers as the step began).
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from flowvar.errors import ConfigError, DataError
from flowvar.variance import GradientVarianceMonitor, GradNormEngine

F64 = torch.float64


class EMANormaliser(nn.Module):
    """Normalises by an EMA of the batch mean of its input, then updates the EMA (``before=False``: the mean of the
    earlier batches, a per-sample map) or first updates it and normalises by the result (``before=True``: the output
    of each sample depends on the whole batch)."""

    def __init__(self, dim: int, before: bool = False, scaled: bool = True) -> None:
        super().__init__()
        self.before = before
        self.register_buffer("mu", torch.zeros(dim))
        self.register_buffer("seen", torch.zeros(()))
        self.scale = nn.Parameter(torch.linspace(0.5, 1.5, dim)) if scaled else None

    def forward(self, x: Tensor) -> Tensor:
        if self.training and self.before:
            with torch.no_grad():
                self.mu.mul_(0.9).add_(0.1 * x.mean(0))
        out = x - self.mu
        if self.training and not self.before:
            with torch.no_grad():
                self.mu.mul_(0.9).add_(0.1 * x.mean(0))
        if self.training:
            self.seen += 1
        return out if self.scale is None else out * self.scale


class Counted(nn.Module):
    """``x @ W`` times the number of forward calls so far: its output depends on a buffer its forward increments."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.W = nn.Parameter(torch.randn(dim, dim, dtype=F64) / dim ** 0.5)
        self.register_buffer("calls", torch.zeros((), dtype=F64))

    def forward(self, x: Tensor) -> Tensor:
        self.calls += 1
        return x @ self.W * self.calls


class RunningInstanceNorm2d(nn.InstanceNorm2d):
    """InstanceNorm2d with running statistics under a forward of its own (it calls InstanceNorm's), which sends it
    to the exact fallback: a layer whose forward updates its buffers, measured by recomputation (InstanceNorm itself
    has a rule, which recomputes nothing)."""

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(x)


class RunningInstanceNorm1d(nn.InstanceNorm1d):
    """InstanceNorm1d under a forward of its own: the fallback measures it (as :class:`RunningInstanceNorm2d`)."""

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(x)


def instance_norm_model() -> nn.Module:
    # the layers around the InstanceNorm are 2-D Linear layers, whose .grad the engine leaves to autograd, so the two
    # runs can be compared bitwise
    return nn.Sequential(RunningInstanceNorm2d(3, affine=True, track_running_stats=True), nn.Tanh(), nn.Flatten(),
                         nn.Linear(3 * 6 * 6, 2))


def ema_model() -> nn.Module:
    return nn.Sequential(EMANormaliser(4), nn.Linear(4, 8), nn.Tanh(), Counted(8), nn.Linear(8, 2))


def inputs(name: str, gen: torch.Generator) -> Tensor:
    shape = (10, 3, 6, 6) if name == "instance_norm" else (10, 4)
    return torch.randn(*shape, generator=gen, dtype=F64) + 2.0


MODELS = {"instance_norm": instance_norm_model, "ema": ema_model}


def losses_of(model: nn.Module, x: Tensor) -> Tensor:
    return model(x).flatten(1).pow(2).sum(1)


def per_sample_reference(start: nn.Module, x: Tensor) -> dict[str, Tensor]:
    """{name: (B,) ‖g_i‖²}: one fresh forward and backward of each sample alone, each on a copy of the model as the
    step began (its buffers included)."""
    rows: dict[str, list[Tensor]] = {n: [] for n, _ in start.named_parameters()}
    for i in range(x.shape[0]):
        model = copy.deepcopy(start)
        names, params = zip(*model.named_parameters())
        grads = torch.autograd.grad(losses_of(model, x[i:i + 1]).sum(), params)
        for n, g in zip(names, grads):
            rows[n].append(g.pow(2).sum())
    return {n: torch.stack(r) for n, r in rows.items()}


def state(model: nn.Module) -> dict[str, Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("name", list(MODELS))
def test_training_with_the_monitor_leaves_buffers_and_eval_outputs_bitwise_as_without(name, gen):
    torch.manual_seed(0)
    plain = MODELS[name]().to(F64)
    watched = copy.deepcopy(plain)
    monitor = GradientVarianceMonitor(watched, every=1, t_bins=None, sigma=0.0)
    opts = [torch.optim.SGD(m.parameters(), lr=0.05) for m in (plain, watched)]
    x = inputs(name, gen)
    for step in range(3):
        start = copy.deepcopy(plain)  # the model as the step begins, buffers included
        for model, opt in zip((plain, watched), opts):
            opt.zero_grad()
            losses = losses_of(model, x + 0.1 * step)
            losses.mean().backward()
            if model is watched:
                record = monitor.step(step, losses)
                assert record["fallback"], "the layer with buffers is measured by the fallback"
            opt.step()
        ref = per_sample_reference(start, x + 0.1 * step)
        stats = monitor.last_stats
        assert stats is not None
        for n, sq in ref.items():
            torch.testing.assert_close(stats.param_sq_norms[n], sq, rtol=1e-10, atol=0)
        after_plain, after_watched = state(plain), state(watched)
        for k, v in after_plain.items():
            assert torch.equal(after_watched[k], v), f"step {step}: {k} differs"
    monitor.close()
    plain.eval()
    watched.eval()
    assert torch.equal(plain(x), watched(x))


def test_a_buffer_the_forward_writes_and_reads_is_recomputed_from_its_value_as_the_call_began(gen):
    """Counted multiplies by its call count after incrementing it: each sample, and each chunk of samples, must be
    recomputed from count k (the engine's copy, fresh each time), giving k + 1 as the recorded call did; the model's
    own count is not touched. Chunks of 3 samples and the loop the in-place update sends vmap to."""
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(4, 5), nn.Tanh(), Counted(5), nn.Linear(5, 2)).to(F64)
    model[2].calls.fill_(2.0)
    x = torch.randn(8, 4, generator=gen, dtype=F64)
    start = copy.deepcopy(model)
    with GradNormEngine(model, fallback_chunk=3) as engine:
        losses = losses_of(model, x)
        losses.mean().backward()
        stats = engine.compute(losses=losses)
    assert float(model[2].calls) == 3.0  # the training forward's increment only
    assert stats.rules["2.W"].startswith("fallback")
    ref = per_sample_reference(start, x)
    for n, sq in ref.items():
        torch.testing.assert_close(stats.param_sq_norms[n], sq, rtol=1e-10, atol=0)


def test_an_ema_that_normalises_by_the_updated_mean_is_named_as_coupling_and_left_as_training_left_it(gen):
    """Normalising by an EMA updated with this batch's mean first couples the samples: refused, naming that (it blamed
    optimizer.step() and had rewritten the EMA once per sample), and the EMA stays as the training forward left it."""
    torch.manual_seed(2)
    plain = nn.Sequential(EMANormaliser(4, before=True), nn.Linear(4, 2)).to(F64)
    watched = copy.deepcopy(plain)
    monitor = GradientVarianceMonitor(watched, every=1, t_bins=None, sigma=0.0)
    x = inputs("ema", gen)
    for model in (plain, watched):
        losses = losses_of(model, x)
        losses.mean().backward()
    with pytest.raises(ConfigError, match=r"couples the samples") as caught:
        monitor.step(0, losses)
    assert "optimizer.step" not in str(caught.value)
    monitor.close()
    for k, v in state(plain).items():
        assert torch.equal(state(watched)[k], v), k


class UsedOutside(nn.Module):
    """A Linear weight also used through F.linear by the parent (measured through the whole model), after a layer
    that updates its buffers in its forward: ``norm`` an InstanceNorm with running statistics (measured by the
    fallback itself), or a parameter-free EMA normaliser (``ema=True``: no module hook keeps its buffers)."""

    def __init__(self, ema: bool) -> None:
        super().__init__()
        self.norm = EMANormaliser(24, scaled=False) if ema else RunningInstanceNorm1d(3, affine=True,
                                                                                 track_running_stats=True)
        self.ema = ema
        self.lin = nn.Linear(24, 24)
        self.out = nn.Linear(24, 2)

    def forward(self, x: Tensor) -> Tensor:
        h = self.norm(x.flatten(1)) if self.ema else self.norm(x).flatten(1)
        return self.out(torch.tanh(F.linear(h, self.lin.weight) + self.lin(h)))


@pytest.mark.parametrize("ema", [False, True], ids=["instance_norm", "parameter_free_ema"])
def test_the_whole_model_fallback_recomputes_from_the_buffers_as_the_pass_began(ema, gen):
    """The first pass measured through the whole model finds the buffers written by the forward: the InstanceNorm's
    copy (kept by its own fallback hook) stands in for them; the parameter-free EMA's were kept by nothing, so that
    pass is refused (DataError naming the buffer) and from the next one on the model's calls keep copies. Every pass
    measured is exact, and the buffers are those of the same training without the engine."""
    torch.manual_seed(3)
    plain = UsedOutside(ema).to(F64)
    watched = copy.deepcopy(plain)
    engine = GradNormEngine(watched)
    x = torch.randn(6, 3, 8, generator=gen, dtype=F64) + 1.0
    for step in range(3):
        start = copy.deepcopy(plain)
        for model in (plain, watched):
            model.zero_grad()
            losses = losses_of(model, x + 0.1 * step)
            losses.mean().backward()
        if ema and step == 0:
            with pytest.raises(DataError, match=r"'norm\.mu'.*written since.*measure the next step"):
                engine.compute(losses=losses)
        else:
            stats = engine.compute(losses=losses)
            assert stats.rules["lin.weight"].startswith("model-fallback")
            ref = per_sample_reference(start, x + 0.1 * step)
            for n, sq in ref.items():
                torch.testing.assert_close(stats.param_sq_norms[n], sq, rtol=1e-10, atol=0)
        for k, v in state(plain).items():
            assert torch.equal(state(watched)[k], v), f"step {step}: {k} differs"
    engine.detach()


def test_a_deep_copy_of_a_hooked_model_measures_its_fallback_layers_exactly(gen):
    """copy.deepcopy(model) copies the engine its hooks carry (an EMA copy, a checkpoint): the copy's engine must know
    the copy's modules — the spectral norm's power-iteration vectors it keeps as the forward left them, its planned
    parameters — not the original's (looked up by id, they were the original's ids)."""
    from torch.nn.utils.parametrizations import spectral_norm

    torch.manual_seed(4)
    model = nn.Sequential(spectral_norm(nn.Linear(4, 6)), nn.Tanh(), nn.Unflatten(1, (2, 3)),
                          RunningInstanceNorm1d(2, affine=True, track_running_stats=True), nn.Flatten(),
                          nn.Linear(6, 2)).to(F64)
    plain = copy.deepcopy(model)  # without hooks
    engine = GradNormEngine(model)
    clone = copy.deepcopy(model)
    clone_engine = next(h.__self__ for h in clone._forward_hooks.values()
                        if isinstance(getattr(h, "__self__", None), GradNormEngine))
    assert clone_engine is not engine
    engine.detach()
    x = torch.randn(7, 4, generator=gen, dtype=F64)
    for step in range(2):
        start = copy.deepcopy(plain)
        for m in (plain, clone):
            m.zero_grad()
            losses = losses_of(m, x + 0.1 * step)
            losses.mean().backward()
        stats = clone_engine.compute(losses=losses)
        assert {"0.parametrizations.weight.original", "3.weight"} <= set(stats.fallback)
        for n, sq in per_sample_reference(start, x + 0.1 * step).items():
            torch.testing.assert_close(stats.param_sq_norms[n], sq, rtol=1e-10, atol=0)
        for k, v in state(plain).items():
            assert torch.equal(state(clone)[k], v), f"step {step}: {k} differs"
    clone_engine.detach()


def test_a_buffer_registered_after_the_engine_looked_is_named_as_added_not_as_written(gen):
    """A buffer registered on a module that had none when the engine last surveyed the model has no version noted as
    the pass began: the first pass measured through the whole model is refused naming it as registered after the
    engine looked (not as written by the forward, which it never was), and the next pass, whose buffers are copied,
    is exact."""
    torch.manual_seed(3)
    model = UsedOutside(ema=False).to(F64)
    engine = GradNormEngine(model)
    model.lin.register_buffer("extra", torch.ones(24, dtype=F64))  # lin had no buffers at the engine's survey
    x = torch.randn(6, 3, 8, generator=gen, dtype=F64) + 1.0
    model.zero_grad()
    losses = losses_of(model, x)
    losses.mean().backward()
    with pytest.raises(DataError, match=r"'lin\.extra' were registered after the engine last looked at the model"
                                        r".*measure the next step") as caught:
        engine.compute(losses=losses)
    assert "written since" not in str(caught.value)
    start = copy.deepcopy(model)
    model.zero_grad()
    losses = losses_of(model, x)
    losses.mean().backward()
    stats = engine.compute(losses=losses)
    assert stats.rules["lin.weight"].startswith("model-fallback")
    for n, sq in per_sample_reference(start, x).items():
        torch.testing.assert_close(stats.param_sq_norms[n], sq, rtol=1e-10, atol=0)
    engine.detach()
