"""The per-layer rules of the one-pass engine (flowvar.variance.rules) and its exact torch.func fallback, against
torch.func per-sample gradients, BackPACK and Opacus.

Every layer rule, both conv weight kernels, the UNet (every parameter by a rule), the fallback (custom modules,
tied parameters, control flow) and the models whose per-sample gradients are not defined. The reference is
always vmap(grad) in float64 on a float64 copy of the module, so float32 results are held to 1e-5 and float64
results to 1e-10 relative error.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import pytest
import torch
from per_sample_reference import F64, N_BINS, TOL, B, assert_matches, engine_stats, reference, rel
from torch import Tensor, nn

from flowvar.errors import ConfigError
from flowvar.interpolants import Interpolant
from flowvar.models import FourierTimeEmbedding
from flowvar.variance import GradNormEngine, batch_grad_stats, per_sample_gradients
from flowvar.variance.records import Blocked, sample_sq_norms, sample_sum, segment_sums


class Emb(nn.Module):
    """Embedding lookup with repeated indices and a padding index, on (B, S) tokens."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(6, 4, padding_idx=2)

    def forward(self, idx: Tensor) -> Tensor:
        return self.emb(idx)


def instance_norm(dim: int, channels: int, running: bool = False) -> nn.Module:
    """An affine InstanceNorm{dim}d with weights away from 1 and 0; ``running``: in eval mode with running statistics
    away from 0 and 1 (its x̂ then uses them, not the sample's own)."""
    module = {1: nn.InstanceNorm1d, 2: nn.InstanceNorm2d, 3: nn.InstanceNorm3d}[dim](
        channels, affine=True, track_running_stats=running)
    with torch.no_grad():
        module.weight.copy_(torch.linspace(0.5, 1.5, channels))
        module.bias.copy_(torch.linspace(-0.3, 0.3, channels))
        if running:
            module.running_mean.copy_(torch.linspace(-1.0, 2.0, channels))
            module.running_var.copy_(torch.linspace(0.5, 2.5, channels))
    return module.eval() if running else module


# name → (module factory, input factory (B, dtype, gen) -> x, expected rule label prefix)
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
    "instancenorm1d": (lambda: instance_norm(1, 3), lambda dt, g: torch.randn(B, 3, 7, generator=g, dtype=dt),
                       "instancenorm"),
    "instancenorm2d": (lambda: instance_norm(2, 4), lambda dt, g: torch.randn(B, 4, 3, 5, generator=g, dtype=dt),
                       "instancenorm"),
    "instancenorm3d": (lambda: instance_norm(3, 2), lambda dt, g: torch.randn(B, 2, 3, 2, 3, generator=g, dtype=dt),
                       "instancenorm"),
    "instancenorm-running-eval": (lambda: instance_norm(2, 3, running=True),
                                  lambda dt, g: torch.randn(B, 3, 4, 4, generator=g, dtype=dt), "instancenorm"),
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


class TiedEmbedding(nn.Module):
    """An Embedding whose weight is also the output head's: the two modules' shared weight goes to the fallback."""

    def __init__(self, sparse: bool) -> None:
        super().__init__()
        self.emb = nn.Embedding(7, 4, sparse=sparse)
        self.mid = nn.Linear(4, 4)
        self.head = nn.Linear(4, 7, bias=False)
        self.head.weight = self.emb.weight

    def forward(self, idx: Tensor) -> Tensor:
        return self.head(torch.tanh(self.mid(self.emb(idx))))


@pytest.mark.parametrize("tied", [False, True])
def test_a_sparse_embedding_is_measured_as_the_dense_one(tied, gen):
    """Embedding(sparse=True) ended in torch's NotImplementedError ('aten::linalg_vector_norm' on SparseCPU): the rule
    declined it and the fallback handed the collectors sparse per-sample gradients. The rule reads only the indices
    and δ, so it measures it as the dense one; the fallback (a weight tied to the head) makes them dense. The
    backward pass's .grad stays sparse where torch makes it so."""
    torch.manual_seed(0)
    make = (lambda sparse: TiedEmbedding(sparse)) if tied else \
        (lambda sparse: nn.Sequential(nn.Embedding(7, 4, sparse=sparse), nn.Linear(4, 3)))
    sparse, dense = make(True).to(F64), make(False).to(F64)
    dense.load_state_dict(sparse.state_dict())
    x = torch.randint(0, 7, (B, 5), generator=gen)
    y = torch.randn(B, 5, 7 if tied else 3, generator=gen, dtype=F64)
    stats = engine_stats(sparse, x, y)
    assert_matches(stats, reference(dense, x, y), 1e-10)
    weight = "emb.weight" if tied else "0.weight"
    assert stats.rules[weight] == ("fallback-loop" if tied else "embedding")
    assert sparse.get_parameter(weight).grad.is_sparse is not tied


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
    from flowvar.variance.rules import Conv2dRule

    conv = conv.to(F64)
    x = torch.randn(B, conv.in_channels, 7, 6, generator=gen, dtype=F64)
    y = torch.randn(conv(x).shape, generator=gen, dtype=F64)
    d = 2 * (conv(x) - y).detach()  # ∂ℓ_i/∂output
    expected = reference(conv, x, y)["weight"]
    padded = Conv2dRule._padded(conv, x)
    for kernel in (Conv2dRule._grouped, Conv2dRule._per_offset):
        got = kernel(conv, padded, d)
        got = got.dense() if isinstance(got, Blocked) else got
        assert rel(got, expected) < 1e-10, kernel.__name__
        # the reductions read the kernel's own layout: the same numbers as on the dense per-sample gradients
        assert rel(sample_sq_norms(kernel(conv, padded, d)), expected.flatten(1).pow(2).sum(1)) < 1e-10
        assert rel(sample_sum(kernel(conv, padded, d), torch.square), expected.pow(2).sum(0)) < 1e-10
        seg = torch.tensor([0, 2, 0, 1, 2, 2][:B] + [1] * max(0, B - 6))
        want = torch.zeros(3, *expected.shape[1:], dtype=F64).index_add_(0, seg, expected)
        assert rel(segment_sums(kernel(conv, padded, d), seg, 3), want) < 1e-10


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


def test_instance_norm_with_running_statistics_in_training_mode_is_a_rule_that_leaves_them(gen):
    """Training mode with track_running_stats=True: x̂ from each sample's own statistics (the rule, exact against a
    per-sample loop), and the running statistics the forward updates end as a run without the engine leaves them."""
    torch.manual_seed(0)
    # no bias before the norm: a per-channel constant is normalised away (its per-sample gradient is rounding)
    net = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1, bias=False),
                        nn.InstanceNorm2d(3, affine=True, track_running_stats=True),
                        nn.SiLU(), nn.Conv2d(3, 2, 1)).to(F64)
    plain = copy.deepcopy(net)
    x = torch.randn(B, 2, 5, 5, generator=gen, dtype=F64) + 0.5
    y = torch.randn(B, 2, 5, 5, generator=gen, dtype=F64)
    ref = reference(copy.deepcopy(net), x, y, loop=True)
    stats = engine_stats(net, x, y)
    assert stats.rules["1.weight"] == "instancenorm" and stats.fallback == {}
    assert_matches(stats, ref, TOL[F64])
    (plain(x) - y).pow(2).flatten(1).sum(1).mean().backward()
    for name in ("running_mean", "running_var", "num_batches_tracked"):
        assert torch.equal(getattr(net[1], name), getattr(plain[1], name)), name
    assert not torch.equal(net[1].running_mean, torch.zeros(3, dtype=F64))  # the forward did update them
