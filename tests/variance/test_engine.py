"""The one-pass engine (flowvar.variance.engine): reductions, misuse detection, the mean gradient of the recorded
pass whatever .grad held, disarmed hooks, no reference cycles, and the monitor's configuration (row norms taken
in the hooks, t-bins), against torch.func per-sample gradients in float64."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from per_sample_reference import F64, N_BINS, TOL, B, assert_matches, engine_stats, reference, rel
from torch import Tensor, nn

from flowvar.couplings import IndependentCoupling
from flowvar.distributions import StandardNormal
from flowvar.errors import ConfigError, DataError
from flowvar.loss import CFMLoss
from flowvar.models import MLPField
from flowvar.variance import GradNormEngine, batch_grad_stats


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_reduction_mean_and_sum_give_per_sample_gradients_of_each_loss(dtype, gen):
    """g_i = ∇ℓ_i whatever the reduction: a mean-reduced backward is rescaled by B."""
    torch.manual_seed(0)
    module = nn.Sequential(nn.Linear(3, 6), nn.Tanh(), nn.Linear(6, 2)).to(dtype)
    x = torch.randn(B, 3, generator=gen, dtype=dtype)
    y = torch.randn(B, 2, generator=gen, dtype=dtype)
    ref = reference(module, x, y)
    for reduction in ("mean", "sum"):
        module.zero_grad()
        assert_matches(engine_stats(module, x, y, reduction=reduction), ref, TOL[dtype])
    with GradNormEngine(module) as engine, pytest.raises(ConfigError, match="reduction"):
        module(x).sum().backward()
        engine.compute(reduction="avg")  # type: ignore[arg-type]


def test_misuse_is_detected_or_measured_through_the_model(gen):
    x = torch.randn(B, 4, generator=gen)
    model = nn.Sequential(nn.Linear(4, 4), nn.Tanh(), nn.Linear(4, 1))
    with GradNormEngine(model) as engine, pytest.raises(DataError, match="do not add up"):
        losses = model(x).pow(2).sum(1)
        (losses.mean() + 0.1 * model[0].weight.pow(2).sum()).backward()  # an extra loss term
        engine.compute(validate=True)

    class Outside(nn.Module):  # the Linear's weight is used without calling the Linear
        def __init__(self) -> None:
            super().__init__()
            self.lin = nn.Linear(4, 4)

        def forward(self, z: Tensor) -> Tensor:
            return F.linear(z, self.lin.weight)

    out = Outside().to(F64)  # measured exactly through the whole model (the fallback at the root), and reported
    x64 = x.to(F64)
    with GradNormEngine(out) as engine:
        losses = out(x64).pow(2).sum(1)
        losses.sum().backward()
        stats = engine.compute(reduction="sum", losses=losses)
    g = reference(out, x64, torch.zeros(B, 4, dtype=F64))["lin.weight"].reshape(B, -1)
    assert rel(stats.param_sq_norms["lin.weight"], g.pow(2).sum(1)) < 1e-10
    assert stats.rules["lin.weight"] == "model-fallback-vmap" and "outside" in stats.fallback["lin.weight"]
    with GradNormEngine(model) as engine, pytest.raises(DataError, match="nothing was recorded"):
        engine.compute()
    engine = GradNormEngine(model)
    engine.detach()
    model(x).sum().backward()  # detached: no hooks left behind
    assert not engine._records and not engine._param_grads


@pytest.mark.parametrize("before", ["none", "cleared after forward", "accumulated", "zeroed", "autograd.grad"])
def test_mean_gradient_is_this_pass_whatever_grad_held(before, gen):
    """ḡ is the recorded pass's gradient (taken by the parameter hooks) whether .grad was None, was set to None
    between the forward and the backward pass, held an earlier batch's gradient or zeros, or the pass used
    autograd.grad (which leaves .grad alone); and it is a copy, not a view of .grad."""
    torch.manual_seed(0)
    module = nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 2)).to(F64)
    x, y = torch.randn(20, 3, generator=gen, dtype=F64), torch.randn(20, 2, generator=gen, dtype=F64)
    if before != "none":
        (3 * module(x).sum()).backward()  # an earlier batch's gradient
        if before == "zeroed":
            module.zero_grad(set_to_none=False)
    with GradNormEngine(module) as engine:
        losses = (module(x) - y).pow(2).sum(1)
        if before in ("cleared after forward", "autograd.grad"):
            module.zero_grad(set_to_none=True)
        if before == "autograd.grad":
            torch.autograd.grad(losses.mean(), list(module.parameters()))
        else:
            losses.mean().backward()
        assert len(engine._param_grads) == 4  # every parameter's hook fired in this pass
        stats = engine.compute(reduction="mean", losses=losses)
    if before != "autograd.grad":
        for param in module.parameters():
            param.grad.mul_(-7.0)  # what clipping or the next accumulation does to .grad in place
    for name, g in reference(module, x, y).items():
        flat = g.reshape(20, -1)
        assert rel(stats.mean_grad[name].reshape(-1), flat.mean(0)) < 1e-10, (before, name)
        assert rel(stats.param_sq_norms[name], flat.pow(2).sum(1)) < 1e-10, (before, name)


def test_disarmed_engine_records_nothing_and_leaves_grads(gen):
    torch.manual_seed(0)
    model = MLPField(2, width=8, depth=1)
    path = CFMLoss().draw(IndependentCoupling(StandardNormal(2), StandardNormal(2)), 16, gen)
    with GradNormEngine(model) as engine:
        engine.armed = False
        CFMLoss()(model, path).backward()
        assert not engine._records
    grads = {k: p.grad.clone() for k, p in model.named_parameters()}
    batch_grad_stats(model, path)  # uses autograd.grad: .grad fields untouched
    assert all(torch.equal(grads[k], p.grad) for k, p in model.named_parameters())


def test_recorded_tensors_are_freed_without_the_garbage_collector(gen):
    """No reference cycle through the hooks: a step's activations die by reference counting after compute()
    (a cycle output → hook → record → output kept every graph alive until a GC pass: +60% step time)."""
    import gc
    import weakref

    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 2))
    x = torch.randn(B, 4, generator=gen)
    engine = GradNormEngine(model)
    gc.disable()
    try:
        losses = model(x).pow(2).sum(1)
        losses.mean().backward()
        refs = [weakref.ref(leaf) for calls in engine._records.values() for call in calls for leaf in call.outputs]
        assert refs and all(r() is not None for r in refs)
        engine.compute(reduction="mean", losses=losses)
        del losses
        assert all(r() is None for r in refs)
    finally:
        gc.enable()
        engine.detach()


class Reused(nn.Module):
    """A Linear whose output feeds two branches (its δ is a sum of two gradients) and a thin output layer."""

    def __init__(self) -> None:
        super().__init__()
        self.inp = nn.Linear(3, 16)
        self.mid = nn.Linear(16, 16)
        self.out = nn.Linear(16, 2)

    def forward(self, x: Tensor) -> Tensor:
        h = self.mid(torch.tanh(self.inp(x)))
        return self.out(torch.tanh(h) + 0.5 * h)


@pytest.mark.parametrize("chunk_bytes", [1 << 26, 256])
@pytest.mark.parametrize("halves", [False, True])
def test_monitor_path_norms_and_bins_match_torch_func(chunk_bytes, halves, gen):
    """The configuration the monitor uses (gradients from the hooks, no element-wise sums, no validation): the
    row norms taken in the hooks, a reused output, thin layers (chunked scatter-adds) and the bias bin sums.
    ``halves``: two backward passes of half the loss through one forward (retain_graph): refused, since two backward
    passes through one call cannot be told from another loss back-propagated first (REPEATED_BACKWARD)."""
    torch.manual_seed(0)
    module = Reused().to(F64)
    x = torch.randn(40, 3, generator=gen, dtype=F64)
    y = torch.randn(40, 2, generator=gen, dtype=F64)
    t = torch.rand(40, generator=gen, dtype=F64)
    with GradNormEngine(module, chunk_bytes=chunk_bytes) as engine:
        losses = (module(x) - y).pow(2).sum(1)
        if halves:
            (0.5 * losses.mean()).backward(retain_graph=True)
            assert all(c.grad_norms[0] is not None for calls in engine._records.values() for c in calls)
            (0.5 * losses.mean()).backward()
            with pytest.raises(DataError, match="two backward passes went through the same recorded forward"):
                engine.compute(reduction="mean", losses=losses, t=t, t_bins=N_BINS)
            return
        else:
            losses.mean().backward()
        stats = engine.compute(reduction="mean", losses=losses, t=t, t_bins=N_BINS)
    ref = reference(module, x, y)
    assert stats.rules == {n: "linear" for n in ref}
    for name, g in ref.items():
        flat = g.reshape(40, -1)
        assert rel(stats.param_sq_norms[name], flat.pow(2).sum(1)) < 1e-10, name
        assert rel(stats.mean_grad[name].reshape(-1), flat.mean(0)) < 1e-10, name
        seg = torch.zeros(N_BINS, flat.shape[1], dtype=F64).index_add_(0, stats.segments, flat)
        assert rel(stats.seg_sq_norms[name], seg.pow(2).sum(1)) < 1e-10, name
