"""The fast gradient-variance engine (flowvar.gradnorms) against torch.func per-sample gradients.

Every layer rule, the fallback, reductions, element-wise variances, t-bin sums and the errors for models
whose per-sample gradients are not defined. The reference is always vmap(grad) in float64 on a float64
copy of the module, so float32 results are held to 1e-5 and float64 results to 1e-10 relative error.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, grad, vmap

from flowvar.couplings import IndependentCoupling, RotatedOTCoupling
from flowvar.distributions import StandardNormal
from flowvar.errors import ConfigError, DataError
from flowvar.gaussian import GaussianProblem
from flowvar.gradnorms import (
    FastVarianceReport,
    FourierTimeEmbedding,
    GradNormEngine,
    batch_grad_stats,
    fast_gradient_variance,
)
from flowvar.interpolants import Interpolant
from flowvar.loss import CFMLoss
from flowvar.models import GaussianParametricField, MLPField
from flowvar.variance import estimate_variance, gradient_variance, per_sample_gradients, variance_t_profile

F64 = torch.float64
TOL = {torch.float32: 1e-5, torch.float64: 1e-10}
N_BINS = 3



def rel(a: Tensor, b: Tensor) -> float:
    """max |a − b| / max |b| (both float64)."""
    a, b = a.to(F64), b.to(F64)
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-300))


def reference(module: nn.Module, x: Tensor, y: Tensor, loop: bool = False) -> dict[str, Tensor]:
    """float64 per-sample gradients of ℓ_i = ‖module(x_i) − y_i‖² (a float64 copy of the module; ``loop``:
    one grad call per sample, for modules vmap rejects)."""
    m64 = copy.deepcopy(module).to(F64)
    params = {k: v.detach() for k, v in m64.named_parameters() if v.requires_grad}
    xx = x.to(F64) if torch.is_floating_point(x) else x

    def loss(p: dict[str, Tensor], xi: Tensor, yi: Tensor) -> Tensor:
        return (functional_call(m64, p, (xi[None],)) - yi[None]).pow(2).sum()

    if loop:
        rows = [grad(loss)(params, xx[i], y[i].to(F64)) for i in range(x.shape[0])]
        return {k: torch.stack([r[k] for r in rows]) for k in params}
    return vmap(grad(loss), in_dims=(None, 0, 0))(params, xx, y.to(F64))


def engine_stats(module: nn.Module, x: Tensor, y: Tensor, reduction: str = "mean", **kw):
    """One forward/backward pass with the engine attached; all statistics requested."""
    segments = torch.arange(x.shape[0]) % N_BINS
    with GradNormEngine(module, elementwise=True, **kw) as engine:
        losses = (module(x) - y).pow(2).flatten(1).sum(1)
        (losses.mean() if reduction == "mean" else losses.sum()).backward()
        return engine.compute(reduction=reduction, losses=losses, segments=segments, n_segments=N_BINS,
                              validate=True)


def assert_matches(stats, ref: dict[str, Tensor], tol: float) -> None:
    """Per-sample norms, sums, element-wise sums of squares and per-segment norms all equal the reference."""
    assert set(stats.param_sq_norms) == set(ref)
    segments = stats.segments
    for name, g in ref.items():
        flat = g.reshape(g.shape[0], -1)
        assert rel(stats.param_sq_norms[name], flat.pow(2).sum(1)) < tol, name
        assert rel(stats.grad_sum[name].reshape(-1), flat.sum(0)) < tol, name
        assert rel(stats.sq_sum[name].reshape(-1), flat.pow(2).sum(0)) < tol, name
        seg = torch.zeros(N_BINS, flat.shape[1], dtype=F64).index_add_(0, segments, flat)
        assert rel(stats.seg_sq_norms[name], seg.pow(2).sum(1)) < tol, name
    total = sum(g.reshape(g.shape[0], -1).pow(2).sum(1) for g in ref.values())
    assert rel(stats.sq_norms, total) < tol


class Emb(nn.Module):
    """Embedding lookup with repeated indices and a padding index, on (B, S) tokens."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(6, 4, padding_idx=2)

    def forward(self, idx: Tensor) -> Tensor:
        return self.emb(idx)


def _linear3d_ghost() -> nn.Module:
    return nn.Linear(32, 32)  # S = 3 positions: S²(K + O) < S·K·O, the ghost norm


# name → (module factory, input factory (B, dtype, gen) -> x, expected rule label prefix)
B = 12
LAYERS: dict[str, tuple[Callable[[], nn.Module], Callable[[torch.dtype, torch.Generator], Tensor], str]] = {
    "linear-2d": (lambda: nn.Linear(5, 7), lambda dt, g: torch.randn(B, 5, generator=g, dtype=dt), "linear"),
    "linear-3d": (lambda: nn.Linear(6, 4), lambda dt, g: torch.randn(B, 5, 6, generator=g, dtype=dt),
                  "linear-materialised"),
    "linear-4d-no-bias": (lambda: nn.Linear(3, 4, bias=False),
                          lambda dt, g: torch.randn(B, 2, 3, 3, generator=g, dtype=dt), "linear-materialised"),
    "conv-stride-pad": (lambda: nn.Conv2d(3, 4, 3, stride=2, padding=1),
                        lambda dt, g: torch.randn(B, 3, 7, 6, generator=g, dtype=dt), "conv2d"),
    "conv-groups-dilation": (lambda: nn.Conv2d(4, 6, (3, 2), dilation=(2, 1), groups=2, padding=(2, 0)),
                             lambda dt, g: torch.randn(B, 4, 8, 5, generator=g, dtype=dt), "conv2d"),
    "conv-reflect-same": (lambda: nn.Conv2d(2, 3, 4, padding="same", padding_mode="reflect"),
                          lambda dt, g: torch.randn(B, 2, 6, 6, generator=g, dtype=dt), "conv2d"),
    "conv-depthwise-ghost": (lambda: nn.Conv2d(8, 8, 3, padding=1, groups=8, bias=False),
                             lambda dt, g: torch.randn(B, 8, 2, 2, generator=g, dtype=dt), "conv2d"),
    "groupnorm": (lambda: nn.GroupNorm(2, 4), lambda dt, g: torch.randn(B, 4, 3, 5, generator=g, dtype=dt),
                  "groupnorm"),
    "layernorm": (lambda: nn.LayerNorm(6), lambda dt, g: torch.randn(B, 3, 6, generator=g, dtype=dt), "layernorm"),
    "layernorm-2d-shape": (lambda: nn.LayerNorm([3, 4]), lambda dt, g: torch.randn(B, 3, 4, generator=g, dtype=dt),
                           "layernorm"),
    "embedding": (Emb, lambda dt, g: torch.randint(0, 6, (B, 7), generator=g), "embedding"),
    "time-embedding": (lambda: FourierTimeEmbedding(5, generator=torch.Generator().manual_seed(1)),
                       lambda dt, g: torch.rand(B, generator=g, dtype=dt), "fourier-time"),
    "nested-sequential": (lambda: nn.Sequential(nn.Sequential(nn.Linear(4, 8), nn.SiLU()),
                                                nn.Sequential(nn.Linear(8, 8), nn.LayerNorm(8), nn.Tanh()),
                                                nn.Linear(8, 3)),
                          lambda dt, g: torch.randn(B, 4, generator=g, dtype=dt), ""),
}
if hasattr(nn, "RMSNorm"):
    LAYERS["rmsnorm"] = (lambda: nn.RMSNorm(5), lambda dt, g: torch.randn(B, 2, 5, generator=g, dtype=dt), "rmsnorm")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("layer", sorted(LAYERS))
def test_layer_rules_match_torch_func(layer, dtype, gen):
    make, inputs, label = LAYERS[layer]
    torch.manual_seed(0)
    module = make().to(dtype)
    x = inputs(dtype, gen)
    with torch.no_grad():
        y = torch.randn(module(x).shape, generator=gen, dtype=dtype)
    stats = engine_stats(module, x, y)
    assert_matches(stats, reference(module, x, y), TOL[dtype])
    assert stats.fallback == {}
    assert all(rule.startswith(label) for rule in stats.rules.values()), stats.rules


def test_ghost_norms_used_and_exact(gen):
    """Few positions and wide layers: the ghost norm (no per-sample gradient materialised) is chosen."""
    torch.manual_seed(0)
    for module, x in ((nn.Linear(32, 32).to(F64), torch.randn(B, 3, 32, generator=gen, dtype=F64)),
                      (nn.Conv2d(16, 16, 3, padding=1).to(F64), torch.randn(B, 16, 2, 2, generator=gen, dtype=F64))):
        y = torch.randn(module(x).shape, generator=gen, dtype=F64)
        with GradNormEngine(module) as engine:  # no element-wise sums: the ghost path is allowed
            losses = (module(x) - y).pow(2).flatten(1).sum(1)
            losses.sum().backward()
            stats = engine.compute(reduction="sum", segments=torch.arange(B) % N_BINS, n_segments=N_BINS)
        assert stats.rules["weight"].endswith("ghost")
        ref = reference(module, x, y)
        for name, g in ref.items():
            flat = g.reshape(B, -1)
            assert rel(stats.param_sq_norms[name], flat.pow(2).sum(1)) < 1e-10
            seg = torch.zeros(N_BINS, flat.shape[1], dtype=F64).index_add_(0, stats.segments, flat)
            assert rel(stats.seg_sq_norms[name], seg.pow(2).sum(1)) < 1e-10


def test_linear_bins_gram_gemm_and_thin_paths(gen):
    """2-D Linear per-bin norms ‖Σ_{i∈k} g_i‖²: small bins use the Gram form n²(K+O), large ones per-bin
    products, thin layers scatter-adds; all exact."""
    torch.manual_seed(0)
    for shape in ((64, 64), (64, 3)):
        module = nn.Linear(*shape).to(F64)
        x = torch.randn(40, shape[0], generator=gen, dtype=F64)
        y = torch.randn(40, shape[1], generator=gen, dtype=F64)
        g = reference(module, x, y)["weight"].reshape(40, -1)
        for segments, n_seg in ((torch.arange(40) % 10, 10),  # n_max = 4: Gram
                                (torch.cat([torch.zeros(36, dtype=torch.long), torch.ones(4, dtype=torch.long)]), 2)):
            with GradNormEngine(module) as engine:
                module.zero_grad()
                (module(x) - y).pow(2).sum(1).sum().backward()
                stats = engine.compute(reduction="sum", segments=segments, n_segments=n_seg)
            seg = torch.zeros(n_seg, g.shape[1], dtype=F64).index_add_(0, segments, g)
            assert rel(stats.seg_sq_norms["weight"], seg.pow(2).sum(1)) < 1e-10


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_mlp_field_trace_and_elementwise_match_autograd(dtype, gen):
    """The time-conditioned MLP: trace, per-group, normalised and element-wise variance vs torch.func."""
    torch.manual_seed(0)
    model = MLPField(3, width=32, depth=2).to(dtype)
    coupling = IndependentCoupling(StandardNormal(3, dtype), StandardNormal(3, dtype))
    path = CFMLoss(Interpolant(sigma=0.1)).draw(coupling, 200, gen)
    fast = fast_gradient_variance(model, path, chunk_size=64, elementwise=True, validate=True)
    m64 = copy.deepcopy(model).to(F64)
    ref_grads = per_sample_gradients(m64, type(path)(**{k: getattr(path, k).to(F64) for k in
                                                        ("x0", "x1", "t", "z", "xt", "target")}))
    flat = torch.cat([g.reshape(200, -1) for g in ref_grads.values()], 1)
    mean = flat.mean(0)
    trace = float((flat - mean).pow(2).sum(1).mean())
    tol = TOL[dtype]
    assert isinstance(fast, FastVarianceReport) and fast.method == "fast" and fast.n == 200
    assert math.isclose(fast.trace, trace, rel_tol=tol)
    assert math.isclose(fast.mean_grad_sq_norm, float(mean.pow(2).sum()), rel_tol=tol)
    trace_u = trace * 200 / 199
    assert math.isclose(fast.normalised, trace_u / (float(mean.pow(2).sum()) - trace_u / 200), rel_tol=10 * tol)
    for name, g in ref_grads.items():
        var = g.reshape(200, -1).var(0, unbiased=False).reshape(g.shape[1:])
        assert rel(fast.elementwise[name], var) < 10 * tol, name
        assert math.isclose(fast.per_group[name], float(var.sum()), rel_tol=10 * tol, abs_tol=1e-12 * trace)
    assert fast.per_layer.keys() == {"net.0", "net.2", "net.4"}
    assert math.isclose(sum(fast.per_layer.values()), fast.trace, rel_tol=1e-12)
    assert fast.fallback == {}


def test_variance_module_routes_fast_method(gen):
    """gradient_variance / estimate_variance(method="fast") give the autograd numbers; per_sample_gradients refuses."""
    torch.manual_seed(0)
    model = MLPField(2, width=16, depth=2).to(F64)
    coupling = IndependentCoupling(StandardNormal(2, F64), StandardNormal(2, F64))
    loss = CFMLoss(Interpolant(sigma=0.2))
    path = loss.draw(coupling, 150, gen)
    slow = gradient_variance(model, path, method="autograd", group_by="module")
    fast = gradient_variance(model, path, method="fast", chunk_size=40, group_by="module")
    for key in ("trace", "trace_unbiased", "mean_grad_sq_norm", "normalised", "mean_loss"):
        assert math.isclose(getattr(fast, key), getattr(slow, key), rel_tol=1e-10), key
    assert fast.per_group.keys() == slow.per_group.keys()
    for k in slow.per_group:
        assert math.isclose(fast.per_group[k], slow.per_group[k], rel_tol=1e-9)
    a = estimate_variance(model, loss, coupling, 300, torch.Generator().manual_seed(3), method="fast", draw_chunk=128)
    b = estimate_variance(model, loss, coupling, 300, torch.Generator().manual_seed(3), method="autograd",
                          draw_chunk=128)
    assert math.isclose(a.trace, b.trace, rel_tol=1e-10) and a.n == b.n == 300
    pa = variance_t_profile(model, loss, coupling, 60, 3, torch.Generator().manual_seed(4), method="fast")
    pb = variance_t_profile(model, loss, coupling, 60, 3, torch.Generator().manual_seed(4), method="autograd")
    np.testing.assert_allclose(pa.traces, pb.traces, rtol=1e-10)
    with pytest.raises(ConfigError, match="never materialises"):
        per_sample_gradients(model, path, method="fast")


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


# --------------------------------------------------------------------------------------------- fallback


class Scaled(nn.Module):
    """A custom module using its parameters in a non-standard way (no fast rule): x ⊙ e^s + b²."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.log_scale = nn.Parameter(torch.linspace(-0.5, 0.5, n))
        self.shift = nn.Parameter(torch.linspace(1.0, 2.0, n))

    def forward(self, x: Tensor) -> Tensor:
        return x * self.log_scale.exp() + self.shift.pow(2)


class Twice(nn.Module):
    """One Linear called twice per forward (the calls share parameters) and a direct parameter."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 4)
        self.gain = nn.Parameter(torch.linspace(0.5, 1.5, 4))
        self.post = Scaled(4)

    def forward(self, x: Tensor) -> Tensor:
        return self.post(self.lin(torch.tanh(self.lin(x))) * self.gain)


class Tied(nn.Module):
    """Two Linear modules sharing one weight."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(4, 4)
        self.b = nn.Linear(4, 4)
        self.b.weight = self.a.weight

    def forward(self, x: Tensor) -> Tensor:
        return self.b(torch.sin(self.a(x)))


class Branchy(nn.Module):
    """Data-dependent control flow: vmap refuses, the fallback loops over samples."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.tensor([0.7, -1.2, 0.3]))

    def forward(self, x: Tensor) -> Tensor:
        if bool((x.abs() > 100).any()):
            raise ValueError("unreachable")
        return x * self.w


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_fallback_is_exact_and_reported(dtype, gen):
    torch.manual_seed(0)
    model = Twice().to(dtype)
    x = torch.randn(B, 4, generator=gen, dtype=dtype)
    y = torch.randn(B, 4, generator=gen, dtype=dtype)
    stats = engine_stats(model, x, y, fallback_chunk=5)
    assert_matches(stats, reference(model, x, y), TOL[dtype])
    assert stats.rules["lin.weight"] == "linear-materialised"  # two calls concatenated, not a fallback
    assert set(stats.fallback) == {"gain", "post.log_scale", "post.shift"}
    assert stats.fallback["post.shift"] == "no fast rule for Scaled"
    assert stats.rules["gain"] == "fallback-vmap"
    report = stats.report()
    assert set(report.fallback) == set(stats.fallback) and set(report.rules) == set(stats.rules)


def test_tied_parameters_and_control_flow_fallbacks(gen):
    torch.manual_seed(0)
    tied = Tied().to(F64)
    x = torch.randn(B, 4, generator=gen, dtype=F64)
    y = torch.randn(B, 4, generator=gen, dtype=F64)
    stats = engine_stats(tied, x, y)
    assert_matches(stats, reference(tied, x, y), 1e-10)
    assert set(stats.fallback) == {"a.weight", "a.bias", "b.bias"}
    assert "shared by modules 'a', 'b'" in stats.fallback["a.weight"]
    branchy = Branchy().to(F64)
    x = torch.randn(B, 3, generator=gen, dtype=F64)
    stats = engine_stats(branchy, x, y[:, :3])
    assert_matches(stats, reference(branchy, x, y[:, :3], loop=True), 1e-10)
    assert stats.rules == {"w": "fallback-loop"}


def test_parametric_field_fallback_matches_closed_form(gen):
    """The Gaussian parametric field has no rule: the fallback equals its closed-form variance."""
    problem = GaussianProblem(torch.tensor([5.0, 5.0]), torch.diag(torch.tensor([4.0, 0.25])))
    field = GaussianParametricField(2, torch.tensor([0.3, -0.2]), torch.tensor([[0.2, 0.1], [-0.1, 0.3]]))
    path = CFMLoss(Interpolant(sigma=0.3)).draw(RotatedOTCoupling(problem, 60.0), 64, gen)
    closed = gradient_variance(field, path, method="closed_form")
    fast = gradient_variance(field, path, method="fast")
    assert math.isclose(fast.trace, closed.trace, rel_tol=1e-10)
    assert set(fast.fallback) == {"theta", "Theta"}
    frozen = problem.pair_optimal_field()  # requires_grad=False: still measured, and left frozen
    zero = fast_gradient_variance(frozen, CFMLoss().draw(RotatedOTCoupling(problem, 0.0), 32, gen))
    assert zero.trace < 1e-20 and zero.mean_loss < 1e-20
    assert not any(p.requires_grad for p in frozen.parameters())


# --------------------------------------------------------------------------------------------- errors


def test_models_without_per_sample_gradients_are_refused(gen):
    x = torch.randn(B, 4, generator=gen)
    bn = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4))
    with GradNormEngine(bn) as engine, pytest.raises(ConfigError, match="batch statistics"):
        bn(x).sum().backward()
        engine.compute()
    bn.eval()  # running statistics: per-sample gradients are defined again (affine BatchNorm → fallback)
    with GradNormEngine(bn) as engine:
        bn(x).pow(2).sum(1).mean().backward()
        stats = engine.compute(validate=True)
    assert set(stats.fallback) == {"1.weight", "1.bias"}
    drop = nn.Sequential(nn.Linear(4, 4), nn.Dropout(0.5))
    inner = nn.Sequential(drop, Scaled(4))

    class Wrap(nn.Module):  # direct parameter + random child: the fallback must recompute the dropout
        def __init__(self) -> None:
            super().__init__()
            self.inner = inner
            self.p = nn.Parameter(torch.ones(4))

        def forward(self, z: Tensor) -> Tensor:
            return self.inner(z) * self.p

    wrap = Wrap()
    with GradNormEngine(wrap) as engine, pytest.raises(ConfigError, match="random"):
        wrap(x).sum().backward()
        engine.compute()


def test_misuse_is_detected(gen):
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

    out = Outside()
    with GradNormEngine(out) as engine, pytest.raises(DataError, match="outside their module"):
        out(x).pow(2).sum().backward()
        engine.compute()
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


# --------------------------------------------------------------------------------------------- BackPACK


@pytest.mark.filterwarnings("ignore:Full backward hook is firing")  # BackPACK's hooks on a leaf input
def test_agrees_with_backpack_where_backpack_supports_the_layers(gen):
    """BackPACK's BatchL2Grad and Variance (reduction='sum') on Linear and Conv2d models (`make test` installs
    BackPACK; skipped where it is absent)."""
    backpack = pytest.importorskip("backpack", reason="BackPACK not installed (make setup installs it)")
    from backpack.extensions import BatchL2Grad, Variance

    torch.manual_seed(0)
    cases = [(nn.Sequential(nn.Linear(3, 16), nn.SELU(), nn.Linear(16, 2)), torch.randn(B, 3, generator=gen)),
             (nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 2, 3, stride=2, padding=1)),
              torch.randn(B, 2, 6, 6, generator=gen))]
    for net, x in cases:
        net = net.to(F64)
        x = x.to(F64)
        y = torch.randn(net(x).shape, generator=gen, dtype=F64)
        ours = engine_stats(net, x, y, reduction="sum")
        bp_net = backpack.extend(copy.deepcopy(net))
        lossfn = backpack.extend(nn.MSELoss(reduction="sum"))
        with backpack.backpack(BatchL2Grad(), Variance()):
            lossfn(bp_net(x), y).backward()
        for (name, _), p in zip(net.named_parameters(), bp_net.parameters()):
            assert rel(ours.param_sq_norms[name], p.batch_l2) < 1e-10, name
            variance = ours.sq_sum[name] / B - (ours.grad_sum[name] / B).pow(2)
            assert rel(variance, p.variance) < 1e-10, name


class _TokenField(nn.Module):
    """Embedding → LayerNorm → Linear on (B, S) tokens: the rules Opacus also has for sequences."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(7, 5)
        self.norm = nn.LayerNorm(5)
        self.head = nn.Linear(5, 3)

    def forward(self, tokens: Tensor) -> Tensor:
        return self.head(torch.tanh(self.norm(self.emb(tokens))))


@pytest.mark.filterwarnings("ignore:Full backward hook is firing")  # Opacus's hooks on a leaf input
def test_agrees_with_opacus_per_sample_gradients(gen):
    """Opacus's per-sample gradients (its own hooks and formulas, loss_reduction='sum') on Linear, LayerNorm,
    Conv2d, GroupNorm and Embedding: per-sample norms, element-wise sums of squares and sums (`make test`
    installs Opacus; skipped where it is absent)."""
    opacus = pytest.importorskip("opacus", reason="Opacus not installed (make setup installs it)")

    torch.manual_seed(0)
    cases = [
        (nn.Sequential(nn.Linear(3, 16), nn.LayerNorm(16), nn.SELU(), nn.Linear(16, 2)),
         torch.randn(B, 3, generator=gen)),
        (nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.GroupNorm(2, 4), nn.SiLU(),
                       nn.Conv2d(4, 2, 3, stride=2, padding=1)), torch.randn(B, 2, 6, 6, generator=gen)),
        (_TokenField(), torch.randint(0, 7, (B, 4), generator=gen)),  # repeated tokens within and across samples
    ]
    for net, x in cases:
        net = net.to(F64)
        x = x.to(F64) if torch.is_floating_point(x) else x
        y = torch.randn(net(x).shape, generator=gen, dtype=F64)
        ours = engine_stats(net, x, y, reduction="sum")
        assert not ours.fallback, ours.fallback  # every layer here has a fast rule
        theirs = opacus.GradSampleModule(copy.deepcopy(net), loss_reduction="sum")
        (theirs(x) - y).pow(2).sum().backward()
        for (name, _), p in zip(net.named_parameters(), theirs._module.parameters(), strict=True):
            per_sample = p.grad_sample.reshape(B, -1)
            assert rel(ours.param_sq_norms[name], per_sample.pow(2).sum(1)) < 1e-10, name
            assert rel(ours.sq_sum[name].reshape(-1), per_sample.pow(2).sum(0)) < 1e-10, name
            assert rel(ours.grad_sum[name].reshape(-1), per_sample.sum(0)) < 1e-10, name


@pytest.mark.parametrize("conv", [nn.Conv2d(4, 6, 3, stride=2, padding=1), nn.Conv2d(4, 6, (3, 2), dilation=(2, 1),
                                                                                     groups=2, padding=(2, 1)),
                                  nn.Conv2d(3, 5, 1), nn.Conv2d(2, 4, 4, padding="same", padding_mode="circular")])
def test_both_conv_weight_kernels_are_exact(conv, gen):
    """The rule times two kernels on a shape's first call and keeps the faster: each must be exact alone."""
    from flowvar.gradnorms import Conv2dRule

    conv = conv.to(F64)
    x = torch.randn(B, conv.in_channels, 7, 6, generator=gen, dtype=F64)
    y = torch.randn(conv(x).shape, generator=gen, dtype=F64)
    d = 2 * (conv(x) - y).detach()  # ∂ℓ_i/∂output
    expected = reference(conv, x, y)["weight"]
    padded = Conv2dRule._padded(conv, x)
    for kernel in (Conv2dRule._grouped, Conv2dRule._per_offset):
        assert rel(kernel(conv, padded, d), expected) < 1e-10, kernel.__name__


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_unet_matches_torch_func(dtype, gen):
    """The image UNet (Conv2d, GroupNorm, Linear time MLP, attention 1×1 convs): every parameter by a rule."""
    from flowvar.interpolants import PathSample
    from flowvar.models.unet import UNetField

    torch.manual_seed(0)
    model = UNetField(8, in_channels=1, base_channels=8, channel_mult=(1, 2), groups=4, head_channels=8,
                      attention_resolutions=(4,)).to(dtype)
    n = 6
    x0 = torch.randn(n, 1, 8, 8, generator=gen, dtype=dtype)
    x1 = torch.randn(n, 1, 8, 8, generator=gen, dtype=dtype)
    t = torch.rand(n, generator=gen, dtype=dtype)
    path = Interpolant().path(x0, x1, t, torch.zeros_like(x0))
    stats = batch_grad_stats(model, path, elementwise=True, t_bins=2, validate=True)
    assert stats.fallback == {}
    m64 = copy.deepcopy(model).to(F64)
    path64 = PathSample(**{k: getattr(path, k).to(F64) for k in ("x0", "x1", "t", "z", "xt", "target")})
    ref = per_sample_gradients(m64, path64)
    assert set(ref) == set(stats.param_sq_norms)
    bins = (t.to(F64) * 2).floor().long().clamp(0, 1)
    for name, g in ref.items():
        flat = g.reshape(n, -1)
        assert rel(stats.param_sq_norms[name], flat.pow(2).sum(1)) < TOL[dtype], name
        assert rel(stats.sq_sum[name].reshape(-1), flat.pow(2).sum(0)) < TOL[dtype], name
        seg = torch.zeros(2, flat.shape[1], dtype=F64).index_add_(0, bins, flat)
        assert rel(stats.seg_sq_norms[name], seg.pow(2).sum(1)) < TOL[dtype], name


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
    ``halves``: two backward passes of half the loss, so every δ arrives as a sum (the hook norms are dropped)."""
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
            assert all(c.grad_norms[0] is None for calls in engine._records.values() for c in calls)
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
