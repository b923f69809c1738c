"""Owned layers (flowvar.variance.owned) under the ways people actually compute and use gradients: every gradient
must be autograd's wherever it goes (``.grad``, ``torch.autograd.grad``, a second differentiation, hooks on the
parameters), ``.grad`` must be left alone by passes that do not accumulate, and the statistics must equal those
of ``own_grads=False``. Each test but two (forward-mode AD and the monitored training loop, guards of what
already worked) is one way this failed while the engine wrote ``.grad`` itself at the end of the backward pass,
before the owned gradients went through autograd (an identity node on the layer's input)."""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable

import pytest
import torch
import torch.autograd.forward_ad as fwAD
import torch.nn.functional as F
from per_sample_reference import F64, rel
from torch import Tensor, nn
from torch.func import functional_call

from flowvar.interpolants import Interpolant
from flowvar.variance import GradNormEngine, fast_gradient_variance
from flowvar.variance.monitor import GradientVarianceMonitor
from flowvar.variance.rules import conv as conv_rules
from flowvar.variance.rules import rule_for

B = 8


class Convs(nn.Module):
    """A stem (input without grad: left to autograd) and two convolutions the engine owns: a plain one on the
    12×12 map and a strided, dilated, grouped, circular-padded one."""

    def __init__(self, ch: int = 4) -> None:
        super().__init__()
        self.stem = nn.Conv2d(2, ch, 3, padding=1)
        self.a = nn.Conv2d(ch, ch, 3, padding=1)
        self.b = nn.Conv2d(ch, ch, 3, stride=2, padding=2, dilation=2, groups=2, padding_mode="circular")
        self.head = nn.Linear(ch, 2)

    def forward(self, x: Tensor) -> Tensor:
        h = F.silu(self.stem(x))
        h = F.silu(self.a(h))
        return self.head(self.b(h).mean((2, 3)))


class Tokens(nn.Module):
    """Sequence Linear layers (16 positions) the engine owns, after an embedding it does not."""

    def __init__(self, width: int = 6) -> None:
        super().__init__()
        self.embed = nn.Linear(2, width)
        self.a = nn.Linear(width, width)
        self.b = nn.Linear(width, width)
        self.head = nn.Linear(width, 2)

    def forward(self, x: Tensor) -> Tensor:  # x (B, 2, 4, 4) read as 16 tokens of 2 features
        h = self.embed(x.flatten(2).transpose(1, 2))
        h = F.silu(self.a(h))
        return self.head(self.b(h).mean(1))


MODELS = {"conv": Convs, "tokens": Tokens}


def data(n: int = B, seed: int = 0, side: int = 12, dtype: torch.dtype = F64) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 2, side, side, generator=g, dtype=dtype), torch.randn(n, 2, generator=g, dtype=dtype)


def inputs(kind: str, seed: int = 0) -> tuple[Tensor, Tensor]:
    return data(seed=seed, side=12 if kind == "conv" else 4)


def losses_of(model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
    return (model(x) - y).pow(2).sum(1)


def owned(engine: GradNormEngine, losses: Tensor) -> set[str]:
    stats = engine.compute(reduction="mean", losses=losses)
    return {n for n, r in stats.rules.items() if r.endswith("-owned")}


def assert_same_grads(model: nn.Module, ref: nn.Module, tol: float = 1e-12) -> None:
    for (n, p), q in zip(model.named_parameters(), ref.parameters(), strict=True):
        assert p.requires_grad == q.requires_grad, n
        assert (p.grad is None) == (q.grad is None), n
        if q.grad is not None:
            assert rel(p.grad, q.grad) < tol, n


@pytest.mark.parametrize("kind", sorted(MODELS))
def test_autograd_grad_of_the_parameters_returns_autograds_gradients_and_leaves_grad_alone(kind):
    """torch.autograd.grad(loss, params) (flowvar's own batch_grad_stats does this): the owned parameters are in the
    graph and get their gradient; nothing reaches .grad; the statistics are measured."""
    torch.manual_seed(0)
    model = MODELS[kind]().to(F64)
    ref = copy.deepcopy(model)
    x, y = inputs(kind)
    engine = GradNormEngine(model)
    losses = losses_of(model, x, y)
    got = torch.autograd.grad(losses.mean(), list(model.parameters()))
    want = torch.autograd.grad(losses_of(ref, x, y).mean(), list(ref.parameters()))
    for (n, _), g, w in zip(model.named_parameters(), got, want, strict=True):
        assert rel(g, w) < 1e-12, n
    assert all(p.grad is None for p in model.parameters())
    assert {"a.weight", "b.weight"} <= owned(engine, losses)


@pytest.mark.parametrize("kind", sorted(MODELS))
def test_a_gradient_of_the_input_between_steps_leaves_grad_alone(kind):
    """The field's input gradient (a divergence or likelihood estimate, a score) with the engine armed, between a
    backward pass and the optimiser step: .grad keeps the training gradient."""
    torch.manual_seed(0)
    model = MODELS[kind]().to(F64)
    ref = copy.deepcopy(model)
    x, y = inputs(kind)
    engine = GradNormEngine(model)
    losses_of(ref, x, y).mean().backward()
    losses_of(model, x, y).mean().backward()
    engine.clear()
    eps = torch.randn_like(model(x))
    for m in (model, ref):
        xx = x.clone().requires_grad_()
        (divergence,) = torch.autograd.grad((m(xx) * eps).sum(), xx)
        assert divergence.abs().sum() > 0
    assert_same_grads(model, ref)
    engine.clear()


def test_fast_gradient_variance_leaves_the_models_grad_alone():
    torch.manual_seed(0)
    model = Convs().to(F64)

    class Field(nn.Module):  # the (x, t) signature the library calls
        def __init__(self) -> None:
            super().__init__()
            self.net = model

        def forward(self, x: Tensor, t: Tensor) -> Tensor:
            return self.net(x + t[:, None, None, None]).repeat_interleave(144, 1).reshape(x.shape)

    field = Field()
    g = torch.Generator().manual_seed(1)
    x0, x1 = torch.randn(6, 2, 12, 12, generator=g, dtype=F64), torch.randn(6, 2, 12, 12, generator=g, dtype=F64)
    t = torch.rand(6, generator=g, dtype=F64)
    path = Interpolant(0.0).path(x0, x1, t, torch.zeros_like(x0))
    report = fast_gradient_variance(field, path, chunk_size=3)
    assert any(r.endswith("-owned") for r in report.rules.values())
    assert all(p.grad is None for p in field.parameters())


def test_backward_with_inputs_gives_owned_parameters_their_gradient():
    torch.manual_seed(0)
    model = Convs().to(F64)
    ref = copy.deepcopy(model)
    x, y = data()
    engine = GradNormEngine(model)
    for m in (ref, model):
        losses_of(m, x, y).mean().backward(inputs=[m.a.weight, m.head.bias])
    assert_same_grads(model, ref)
    engine.clear()


def test_post_accumulate_grad_hooks_fire_for_owned_parameters():
    """The optimiser-in-backward pattern (a per-parameter step in a post-accumulate-grad hook, .grad freed right
    after): owned parameters must be stepped too."""
    torch.manual_seed(0)
    model = Convs().to(F64)
    ref = copy.deepcopy(model)
    engine = GradNormEngine(model)
    for m in (ref, model):
        optimisers = {p: torch.optim.SGD([p], lr=0.1) for p in m.parameters()}

        def step(p: Tensor, optimisers: dict[Tensor, torch.optim.Optimizer] = optimisers) -> None:
            optimisers[p].step()
            optimisers[p].zero_grad()

        for p in m.parameters():
            p.register_post_accumulate_grad_hook(step)
    for seed in range(3):
        x, y = data(seed=seed)
        losses_of(ref, x, y).mean().backward()
        losses_of(model, x, y).mean().backward()
        engine.clear()
    for (n, p), q in zip(model.named_parameters(), ref.parameters(), strict=True):
        assert rel(p, q) < 1e-12, n


@pytest.fixture(params=["grouped", "offsets"])
def conv_kernel(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Each of the convolution rule's two per-sample kernels (it times them and keeps the faster per shape)."""
    rule, _ = rule_for(nn.Conv2d(1, 1, 1))
    monkeypatch.setattr(rule, "_fastest", {})
    monkeypatch.setattr(conv_rules, "_fastest_of", lambda candidates, before=None: request.param)
    return request.param


@pytest.mark.parametrize("kind", sorted(MODELS))
def test_a_penalty_on_the_parameter_gradient_differentiates_it_again(kind, conv_kernel):
    """backward(create_graph=True), then a penalty on ‖.grad‖²: the owned gradients must be differentiable (a
    per-sample kernel that writes into a buffer is not)."""
    torch.manual_seed(0)
    model = MODELS[kind]().to(F64)
    ref = copy.deepcopy(model)
    x, y = inputs(kind)
    engine = GradNormEngine(model)
    for m in (ref, model):
        losses_of(m, x, y).mean().backward(create_graph=True)
        penalty = sum((p.grad ** 2).sum() for p in m.parameters())
        m.zero_grad()
        penalty.backward()
    assert_same_grads(model, ref, 1e-10)
    engine.clear()


@pytest.mark.parametrize("kind", sorted(MODELS))
def test_an_input_gradient_penalty_is_autograds(kind):
    """loss + ‖∂v/∂x‖² (autograd.grad with create_graph, then backward of the whole)."""
    torch.manual_seed(0)
    model = MODELS[kind]().to(F64)
    ref = copy.deepcopy(model)
    x, y = inputs(kind)
    engine = GradNormEngine(model)
    for m in (ref, model):
        xx = x.clone().requires_grad_()
        out = m(xx)
        (gx,) = torch.autograd.grad(out.sum(), xx, create_graph=True)
        ((out - y).pow(2).sum(1).mean() + gx.pow(2).sum()).backward()
    assert_same_grads(model, ref, 1e-10)
    engine.clear()


@pytest.mark.parametrize("wrap", [torch.nn.utils.weight_norm, torch.nn.utils.spectral_norm])
def test_weight_and_spectral_norm_layers_are_left_to_autograd(wrap: Callable[[nn.Module], nn.Module]):
    """The old-style reparametrisations replace ``weight`` by ``weight_g``/``weight_v`` or ``weight_orig`` (a
    pre-hook computes ``weight``): the rule has no per-sample gradient of those; the call is not owned."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # weight_norm is deprecated
        torch.manual_seed(0)
        model = Convs().to(F64)
        model.a = wrap(model.a)
        torch.manual_seed(0)
        ref = Convs().to(F64)
        ref.a = wrap(ref.a)
    model.eval()  # spectral_norm's power iteration updates its buffers in training mode only
    ref.eval()
    x, y = data()
    engine = GradNormEngine(model)
    losses_of(ref, x, y).mean().backward()
    losses = losses_of(model, x, y)
    losses.mean().backward()
    assert_same_grads(model, ref)
    assert "b.weight" in owned(engine, losses)


def test_functional_call_with_computed_weights():
    """functional_call with non-leaf weights (scaled, averaged, a meta-learning inner step): those cannot be
    frozen; the call is left to autograd, which differentiates through them."""
    torch.manual_seed(0)
    model = Convs().to(F64)
    ref = copy.deepcopy(model)
    x, y = data()
    engine = GradNormEngine(model)
    scales = []
    for m in (ref, model):
        scale = torch.ones((), dtype=F64, requires_grad=True)
        out = functional_call(m, {k: v * scale for k, v in m.named_parameters()}, (x,))
        (out - y).pow(2).sum(1).mean().backward()
        scales.append(scale.grad)
    assert rel(scales[1], scales[0]) < 1e-12
    assert_same_grads(model, ref)
    engine.clear()


def test_forward_mode_ad_through_owned_layers():
    torch.manual_seed(0)
    model = Convs().to(F64)
    ref = copy.deepcopy(model)
    x, _ = data()
    tangent = torch.randn_like(x)
    engine = GradNormEngine(model)
    out = []
    for m in (ref, model):
        with fwAD.dual_level():
            out.append(fwAD.unpack_dual(m(fwAD.make_dual(x.clone().requires_grad_(), tangent))).tangent)
    assert rel(out[1], out[0]) < 1e-12
    engine.clear()


class HookedActivation(Convs):
    """A hook on ``a``'s output that scales its gradient (gradient scaling or reversal on an activation)."""

    def forward(self, x: Tensor) -> Tensor:
        h = self.a(F.silu(self.stem(x)))
        if h.requires_grad:
            h.register_hook(lambda g: 3.0 * g)
        return self.head(self.b(F.silu(h)).mean((2, 3)))


def test_a_hook_that_changes_a_layers_output_gradient_changes_its_parameter_gradient():
    torch.manual_seed(0)
    model = HookedActivation().to(F64)
    ref = copy.deepcopy(model)
    off = copy.deepcopy(model)
    x, y = data()
    engine = GradNormEngine(model)
    losses_of(ref, x, y).mean().backward()
    losses = losses_of(model, x, y)
    losses.mean().backward()
    assert_same_grads(model, ref)
    stats = engine.compute(reduction="mean", losses=losses)
    engine_off = GradNormEngine(off, own_grads=False)
    losses_off = losses_of(off, x, y)
    losses_off.mean().backward()
    want = engine_off.compute(reduction="mean", losses=losses_off)
    for n in want.param_sq_norms:  # the statistics are those of the δ the engine records, as without owning
        assert rel(stats.param_sq_norms[n], want.param_sq_norms[n]) < 1e-12, n


def stats_equal_without_owning(make: Callable[[], nn.Module], prepare: Callable[[nn.Module], None]) -> None:
    """``.grad`` equals autograd's and the statistics equal ``own_grads=False``'s for a model built by ``make``,
    with ``prepare`` run on it before the engine is built (``after``: its hooks go on after the engine's)."""
    torch.manual_seed(0)
    model = make()
    ref, off = copy.deepcopy(model), copy.deepcopy(model)
    prepare(ref)
    x, y = data()
    losses_of(ref, x, y).mean().backward()
    out = []
    for m, own in ((model, True), (off, False)):
        engine = GradNormEngine(m, own_grads=own)
        prepare(m)
        losses = losses_of(m, x, y)
        losses.mean().backward()
        if own:
            assert_same_grads(m, ref)
        out.append(engine.compute(reduction="mean", losses=losses))
    for n in out[1].param_sq_norms:
        assert rel(out[0].param_sq_norms[n], out[1].param_sq_norms[n]) < 1e-12, n


def test_a_forward_hook_registered_before_the_engine_that_rescales_the_layers_output():
    """Someone else's forward hook runs before the engine's and returns a new output: the layer's own δ is not
    the δ of the output the engine records."""

    def make() -> nn.Module:
        model = Convs().to(F64)
        gate = torch.linspace(0.5, 2.0, 4, dtype=F64)[:, None, None]
        model.a.register_forward_hook(lambda module, args, output: output * gate)
        return model

    stats_equal_without_owning(make, lambda m: None)


def test_a_forward_hook_that_uses_the_layers_weight_gets_its_gradient():
    """A penalty on the weight formed in someone else's forward hook (registered before the engine's)."""
    penalties: dict[int, Tensor] = {}
    torch.manual_seed(0)
    model = Convs().to(F64)
    ref = copy.deepcopy(model)
    for m in (model, ref):
        m.a.register_forward_hook(lambda module, args, output, m=m: penalties.__setitem__(
            id(m), module.weight.pow(2).sum()))
    engine = GradNormEngine(model)
    x, y = data()
    for m in (ref, model):
        (losses_of(m, x, y).mean() + penalties[id(m)]).backward()
    assert_same_grads(model, ref)
    engine.clear()


def test_a_pre_hook_registered_after_the_engine_that_replaces_the_layers_input():
    """The layer's gradients come from the input it received (here rescaled and padded), not from the one the
    engine's pre-hook saw; a second differentiation of such a layer fails loudly rather than wrongly."""

    def replace(model: nn.Module) -> None:
        model.a.register_forward_pre_hook(lambda module, args: (F.pad(2.0 * args[0] + 1.0, (1, 1, 1, 1)),))

    stats_equal_without_owning(lambda: Convs().to(F64), replace)
    model = Convs().to(F64)
    engine = GradNormEngine(model)
    replace(model)
    x, y = data()
    with pytest.raises(RuntimeError, match="replaced the layer's input"):
        losses_of(model, x, y).mean().backward(create_graph=True)
    engine.clear()


def test_an_interrupted_forward_leaves_no_parameter_frozen_once_the_model_runs_again():
    """KeyboardInterrupt inside an owned layer's forward (PyTorch's always-call hooks see only Exception)."""
    torch.manual_seed(0)
    model = Convs().to(F64)
    ref = copy.deepcopy(model)
    x, y = data()
    engine = GradNormEngine(model)

    def interrupt(module: nn.Module, args: tuple[Tensor, ...]) -> None:
        raise KeyboardInterrupt

    handle = model.a.register_forward_pre_hook(interrupt)  # runs after the engine's pre-hook froze a's parameters
    with pytest.raises(KeyboardInterrupt):
        model(x)
    handle.remove()
    engine.clear()
    assert all(p.requires_grad for p in model.parameters())
    with pytest.raises(KeyboardInterrupt):
        handle = model.a.register_forward_pre_hook(interrupt)
        model(x)
    handle.remove()
    losses_of(ref, x, y).mean().backward()
    losses = losses_of(model, x, y)  # the next call of the model gives requires_grad back first
    losses.mean().backward()
    assert_same_grads(model, ref)
    assert {"a.weight", "b.weight"} <= owned(engine, losses)


def test_a_monitored_training_loop_trains_as_autograd_does():
    """Many steps with the monitor logging every third (armed/disarmed), clipping, zero_grad(set_to_none=False)
    on odd steps, an EMA copy taken mid-run, no_grad and inference_mode evaluations in eval mode between steps."""
    torch.manual_seed(0)
    model = Convs().to(F64)
    ref = copy.deepcopy(model)
    monitor = GradientVarianceMonitor(model, every=3, t_bins=2, profile_every=2)
    opt, opt_ref = torch.optim.Adam(model.parameters(), 1e-2), torch.optim.Adam(ref.parameters(), 1e-2)
    ema = None
    for step in range(9):
        x, y = data(seed=step)
        for m, o in ((ref, opt_ref), (model, opt)):
            o.zero_grad(set_to_none=step % 2 == 0)
            losses = losses_of(m, x, y)
            losses.mean().backward()
        assert_same_grads(model, ref, 1e-9)
        monitor.step(step, losses, torch.rand(B, dtype=F64))
        for m, o in ((ref, opt_ref), (model, opt)):
            torch.nn.utils.clip_grad_norm_(m.parameters(), 0.5)
            o.step()
        if step == 4:
            ema = copy.deepcopy(model)
        model.eval()
        with torch.no_grad():
            model(x)
            if ema is not None:
                ema(x)
        with torch.inference_mode():
            model(x)
        model.train()
    for (n, p), q in zip(model.named_parameters(), ref.parameters(), strict=True):
        assert rel(p, q) < 1e-9, n
    assert [h["step"] for h in monitor.history] == [0, 3, 6]
    monitor.close()
