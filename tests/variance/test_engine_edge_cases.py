"""The engine (both modes: owned layer gradients on and off) under two things people do with a hooked model that it
once got wrong, each against torch.func per-sample gradients in float64:

* a batched-gradient pass (``torch.autograd.grad(..., is_grads_batched=True)``, ``autograd.functional.jacobian``
  with ``vectorize=True``): the engine's hooks called ``detach`` on the vmapped cotangents, which has no batching
  rule, so the user's Jacobian raised from inside a hook. Now the Jacobian is autograd's, ``.grad`` is untouched, the
  statistics are those of the ordinary backward pass, and a forward pass that only ever got a batched pass raises a
  ``DataError`` saying so;
* reparametrised weights (``torch.nn.utils.parametrizations.weight_norm``, ``spectral_norm``, ``orthogonal``; old-style
  ``torch.nn.utils.weight_norm`` / ``spectral_norm``): the new-style ones raised ``ShapeError`` (the parametrisation
  module, called without the batch, was measured as a layer), the old-style ones failed the sum check and went
  through the whole model every batch. Now the layer goes to its own exact fallback, whose vjp runs through the
  parametrisation, and the leaf tensors (``original0``/``original1``, ``weight_g``/``weight_v``, ``weight_orig``)
  get exact per-sample gradients.

* a module without a rule (``nn.ConvTranspose2d``, a hand-written ``h @ self.W``) under ``torch.autocast``: its
  fallback recomputed it outside autocast, with the recorded bfloat16 input and the float32 weight, and raised a
  ConfigError blaming the module. Now it is recomputed under the autocast state of its recorded call and matches a
  naive per-sample loop under the same autocast.

torch.func transforms on the hooked model (``jacrev``, ``vmap(grad)``) already worked (their calls are not recorded):
a guard.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from per_sample_reference import F64, N_BINS, TOL, assert_exact, assert_matches, rel
from torch import Tensor, nn
from torch.func import functional_call, grad, jacrev, vmap
from torch.nn.utils import parametrizations

from flowvar.errors import ConfigError, DataError
from flowvar.variance import GradNormEngine

B = 6
OUT = 2
MODES = [True, False]  # own_grads


class Scale(nn.Module):
    """A module without a rule: the engine's fallback."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.w = nn.Parameter(1 + 0.1 * torch.randn(n))

    def forward(self, x: Tensor) -> Tensor:
        return x * self.w


class Net(nn.Module):
    """Every path of the engine: a plain convolution on an 8×8 map, a strided, dilated, grouped, circular-padded one
    and a Linear on 16 positions (all three owned when ``own_grads``), a custom module (the fallback) and a 2-D
    Linear head (outer-product norms)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 4, 3, padding=1)
        self.conv2 = nn.Conv2d(4, 4, 3, stride=2, padding=2, dilation=2, groups=2, padding_mode="circular")
        self.tok = nn.Linear(4, 6)
        self.scale = Scale(6)
        self.head = nn.Linear(6, OUT)

    def forward(self, x: Tensor) -> Tensor:
        h = F.silu(self.conv2(F.silu(self.conv(x))))  # (B, 4, 4, 4)
        h = F.silu(self.tok(h.flatten(2).transpose(1, 2)))  # (B, 16, 6)
        return self.head(self.scale(h).mean(1))


def data(n: int = B, seed: int = 0) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 2, 8, 8, generator=g, dtype=F64), torch.randn(n, OUT, generator=g, dtype=F64)


def per_sample(model: nn.Module, x: Tensor, y: Tensor) -> dict[str, Tensor]:
    """torch.func per-sample gradients {name: (B, *shape)} of ℓ_i = ‖model(x_i) − y_i‖² over the model's leaf
    parameters, by functional_call on the model itself (old-style weight_norm modules cannot be deep-copied)."""
    params = {k: p.detach() for k, p in model.named_parameters()}

    def loss(p: dict[str, Tensor], xi: Tensor, yi: Tensor) -> Tensor:
        return (functional_call(model, p, (xi[None],)) - yi[None]).pow(2).sum()

    return vmap(grad(loss), in_dims=(None, 0, 0))(params, x, y)


def losses_of(model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
    return (model(x) - y).pow(2).sum(1)


def build(wrap: Callable[[nn.Module], nn.Module] | None = None, seed: int = 0) -> Net:
    """The float64 test model; ``wrap`` reparametrises the weight of its convolution, sequence Linear and head."""
    torch.manual_seed(seed)
    model = Net().to(F64)
    if wrap is not None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch.nn.utils.weight_norm is deprecated
            for name in ("conv", "tok", "head"):
                setattr(model, name, wrap(getattr(model, name)))
    return model


def owned(stats: object) -> set[str]:
    return {n for n, r in stats.rules.items() if r.endswith("-owned")}  # type: ignore[attr-defined]


def cotangents(n: int = B) -> Tensor:
    """(OUT, n, OUT): row k picks output k of every sample (the model's Jacobian, one output at a time)."""
    return torch.eye(OUT, dtype=F64)[:, None, :].expand(OUT, n, OUT)


# ------------------------------------------------------------------------------------------------ batched gradients


JACOBIANS = ["is_grads_batched", "func.vmap"]


def jacobian(model: nn.Module, x: Tensor, out: Tensor, create_graph: bool = False, how: str = "is_grads_batched"
             ) -> tuple[Tensor, ...]:
    """The Jacobian of ``out`` in the input and every parameter by one batched-gradient pass: autograd's
    ``is_grads_batched`` (PyTorch's legacy vmap) or ``torch.func.vmap`` around ``torch.autograd.grad``."""
    wrt = [x, *model.parameters()]
    if how == "func.vmap":
        return vmap(lambda v: torch.autograd.grad(out, wrt, v, retain_graph=True))(cotangents(out.shape[0]))
    return torch.autograd.grad(out, wrt, cotangents(out.shape[0]), is_grads_batched=True, retain_graph=True,
                               create_graph=create_graph)


@pytest.mark.parametrize("how", JACOBIANS)
@pytest.mark.parametrize("order", ["after", "before"])
@pytest.mark.parametrize("own", MODES)
def test_a_batched_jacobian_on_the_training_graph(own: bool, order: str, how: str):
    """A Jacobian of the training forward pass's output in its input and parameters (``is_grads_batched=True``),
    after the backward pass or before it: the Jacobian is autograd's, ``.grad`` holds the training gradient only, and
    the statistics are those of the backward pass (owned layers measured in it)."""
    model, ref = build(), build()
    x, y = data()
    engine = GradNormEngine(model, own_grads=own)
    results = []
    for m in (model, ref):
        xx = x.clone().requires_grad_()
        out = m(xx)
        losses = (out - y).pow(2).sum(1)
        if order == "before":
            J = jacobian(m, xx, out, how=how)
            assert all(p.grad is None for p in m.parameters())
            losses.mean().backward()
        else:
            losses.mean().backward(retain_graph=True)
            before = [p.grad.clone() for p in m.parameters()]
            J = jacobian(m, xx, out, how=how)
            assert all(torch.equal(p.grad, g) for p, g in zip(m.parameters(), before, strict=True))
        results.append((J, [p.grad for p in m.parameters()], losses))
    (J, grads, losses), (J_ref, grads_ref, _) = results
    assert J[0].shape == (OUT, B, 2, 8, 8)
    for j, r in zip(J, J_ref, strict=True):
        assert rel(j, r) < 1e-12
    for g, r in zip(grads, grads_ref, strict=True):
        assert rel(g, r) < 1e-12
    stats = engine.compute(reduction="mean", losses=losses)
    assert_exact(stats, per_sample(ref, x, y), TOL[F64])
    assert owned(stats) == ({f"{m}.{p}" for m in ("conv", "conv2", "tok") for p in ("weight", "bias")} if own
                            else set())


@pytest.mark.parametrize("strategy", ["reverse-mode", "forward-mode"])
@pytest.mark.parametrize("own", MODES)
def test_a_jacobian_of_another_forward_pass_between_backward_and_compute(own: bool, strategy: str):
    """``torch.autograd.functional.jacobian(model, x, vectorize=True)`` (its own forward pass, on 3 samples: recorded,
    then reached by a batched pass only; forward-mode: the forward pass itself vmapped over tangents, which the owned
    layers' identity node could not pass on) between the training step and compute(): the step's statistics."""
    model, ref = build(), build()
    x, y = data()
    engine = GradNormEngine(model, own_grads=own)
    losses = losses_of(model, x, y)
    losses.mean().backward()
    losses_of(ref, x, y).mean().backward()
    J = torch.autograd.functional.jacobian(model, x[:3], vectorize=True, strategy=strategy)
    assert rel(J, torch.autograd.functional.jacobian(ref, x[:3], vectorize=True, strategy=strategy)) < 1e-12
    for p, q in zip(model.parameters(), ref.parameters(), strict=True):
        assert rel(p.grad, q.grad) < 1e-12
    stats = engine.compute(reduction="mean", losses=losses)
    assert_exact(stats, per_sample(ref, x, y), TOL[F64])


@pytest.mark.parametrize("own", MODES)
def test_a_differentiable_batched_jacobian_is_autograds(own: bool):
    """``is_grads_batched=True, create_graph=True`` (a Jacobian penalty): the Jacobian and the gradient of a penalty
    on it equal autograd's (the owned layers' parameter gradients then come from autograd through the layer)."""
    model, ref = build(), build()
    x, _ = data()
    engine = GradNormEngine(model, own_grads=own)
    results = []
    for m in (model, ref):
        xx = x.clone().requires_grad_()
        J = jacobian(m, xx, m(xx), create_graph=True)
        penalty = sum(j.pow(2).sum() for j in J)
        results.append((J, torch.autograd.grad(penalty, list(m.parameters()), allow_unused=True)))
    (J, G), (J_ref, G_ref) = results
    for j, r in zip(J, J_ref, strict=True):
        assert j.requires_grad == r.requires_grad
        assert rel(j.detach(), r.detach()) < 1e-12
    for g, r in zip(G, G_ref, strict=True):
        assert (g is None) == (r is None)
        if r is not None:
            assert rel(g, r) < 1e-10
    engine.clear()


@pytest.mark.parametrize("how", JACOBIANS)
@pytest.mark.parametrize("own", MODES)
def test_a_forward_pass_that_only_got_a_batched_pass_raises(own: bool, how: str):
    model = build()
    x, y = data()
    engine = GradNormEngine(model, own_grads=own)
    xx = x.clone().requires_grad_()
    out = model(xx)
    losses = (out - y).pow(2).sum(1)
    jacobian(model, xx, out, how=how)
    assert all(p.grad is None for p in model.parameters())
    with pytest.raises(DataError, match="batched-gradient pass"):
        engine.compute(reduction="mean", losses=losses)
    # the engine is usable afterwards
    losses = losses_of(model, x, y)
    losses.mean().backward()
    assert_exact(engine.compute(reduction="mean", losses=losses), per_sample(build(), x, y), TOL[F64])


@pytest.mark.parametrize("own", MODES)
def test_torch_func_transforms_on_the_hooked_model(own: bool):
    """jacrev of the hooked model in its input and vmap(grad) of its loss in its own parameters, between the training
    step and compute(): their results are torch.func's on a model without the engine, and the step's statistics
    are exact (a transform's calls are not recorded)."""
    model, ref = build(), build()
    x, y = data()
    engine = GradNormEngine(model, own_grads=own)
    losses = losses_of(model, x, y)
    losses.mean().backward()
    results = []
    for m in (model, ref):
        def loss(p: dict[str, Tensor], xi: Tensor, yi: Tensor, m: nn.Module = m) -> Tensor:
            return (functional_call(m, p, (xi[None],)) - yi[None]).pow(2).sum()

        per_sample_grads = vmap(grad(loss), in_dims=(None, 0, 0))(dict(m.named_parameters()), x, y)
        results.append((jacrev(m)(x[:2]), per_sample_grads))
    (Jx, G), (Jx_ref, G_ref) = results
    assert rel(Jx, Jx_ref) < 1e-12
    for k, g in G_ref.items():
        assert rel(G[k], g) < 1e-12, k
    stats = engine.compute(reduction="mean", losses=losses)
    assert_exact(stats, G_ref, TOL[F64])


# ------------------------------------------------------------------------------------------- reparametrised weights


def _old_weight_norm(m: nn.Module) -> nn.Module:
    return torch.nn.utils.weight_norm(m)


def _old_spectral_norm(m: nn.Module) -> nn.Module:
    return torch.nn.utils.spectral_norm(m)


WRAPS: dict[str, Callable[[nn.Module], nn.Module]] = {
    "weight_norm": parametrizations.weight_norm, "spectral_norm": parametrizations.spectral_norm,
    "orthogonal": parametrizations.orthogonal, "old_weight_norm": _old_weight_norm,
    "old_spectral_norm": _old_spectral_norm,
}
#: the leaf tensors each wrapper leaves in place of ``weight``
LEAVES = {"weight_norm": ["parametrizations.weight.original0", "parametrizations.weight.original1"],
          "spectral_norm": ["parametrizations.weight.original"], "orthogonal": ["parametrizations.weight.original"],
          "old_weight_norm": ["weight_g", "weight_v"], "old_spectral_norm": ["weight_orig"]}


@pytest.mark.parametrize("own", MODES)
@pytest.mark.parametrize("wrap", sorted(WRAPS))
def test_reparametrised_weights_are_measured_through_the_parametrisation(wrap: str, own: bool):
    """Every statistic (per-sample norms, sums, element-wise sums of squares, per-segment norms; validated sums) of
    the leaf parameters of reparametrised Conv2d, sequence Linear and 2-D Linear layers, in training mode: the
    spectral norms' power iteration updates u, v in the forward pass, and the reference is the forward's function
    (eval mode with the u, v it left). compute() leaves the model as it was: buffers, training flags, the weight
    attributes the old-style pre-hooks set."""
    model = build(WRAPS[wrap])
    model.train()
    x, y = data()
    engine = GradNormEngine(model, elementwise=True, own_grads=own)
    losses = losses_of(model, x, y)
    losses.mean().backward()
    buffers = {k: b.clone() for k, b in model.named_buffers()}
    attributes = {name: getattr(model, name).__dict__.get("weight") for name in ("conv", "tok", "head")}
    stats = engine.compute(reduction="mean", losses=losses, segments=torch.arange(B) % N_BINS, n_segments=N_BINS,
                           validate=True)
    assert all(torch.equal(b, buffers[k]) for k, b in model.named_buffers())
    assert all(m.training for m in model.modules())
    for name, value in attributes.items():
        assert getattr(model, name).__dict__.get("weight") is value, name
    ref = build(WRAPS[wrap])
    ref.load_state_dict(model.state_dict())
    ref.eval()
    want = per_sample(ref, x, y)
    assert_matches(stats, want, TOL[F64])
    for name in ("conv", "tok", "head"):
        for leaf in LEAVES[wrap]:
            assert f"{name}.{leaf}" in want
            assert stats.rules[f"{name}.{leaf}"].startswith("fallback"), (name, leaf)
            assert "computed by" in stats.fallback[f"{name}.{leaf}"]
    assert not owned(stats)
    assert not engine.outside  # each layer by its own fallback, not through the whole model
    engine.detach()


@pytest.mark.parametrize("own", MODES)
def test_a_parametrisation_with_its_own_parameter(own: bool):
    """register_parametrization with a parametrisation module that has a trainable parameter of its own (a learned
    gain on the weight): measured with the layer, exactly, as every leaf parameter."""

    class Gain(nn.Module):
        def __init__(self, shape: torch.Size) -> None:
            super().__init__()  # one gain per output channel
            self.gain = nn.Parameter(1 + 0.1 * torch.randn(shape[0], *(1,) * (len(shape) - 1), dtype=F64))

        def forward(self, w: Tensor) -> Tensor:
            return torch.tanh(w) * self.gain

    def wrap(m: nn.Module) -> nn.Module:
        torch.manual_seed(1)
        return torch.nn.utils.parametrize.register_parametrization(m, "weight", Gain(m.weight.shape))

    model, ref = build(wrap), build(wrap)
    x, y = data()
    with GradNormEngine(model, own_grads=own) as engine:
        losses = losses_of(model, x, y)
        losses.mean().backward()
        stats = engine.compute(reduction="mean", losses=losses, validate=True)
    want = per_sample(ref, x, y)
    assert {"tok.parametrizations.weight.0.gain", "tok.parametrizations.weight.original"} <= set(want)
    assert_exact(stats, want, TOL[F64])


@pytest.mark.parametrize("own", MODES)
@pytest.mark.parametrize("wrap", ["weight_norm", "old_weight_norm"])
def test_a_reparametrised_linear_in_a_sequence_first_encoder_layer(wrap: str, own: bool):
    """``nn.TransformerEncoderLayer`` (``batch_first=False``: (L, B, E) calls) with a reparametrised ``linear1``: its
    fallback recomputes the recorded calls batch-first (it raised ShapeError on the (L, B, ·) output)."""
    L, E = 5, 8
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(E, 2, 16, dropout=0.0).to(F64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        layer.linear1 = WRAPS[wrap](layer.linear1)
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(L, B, E, generator=g, dtype=F64), torch.randn(L, B, E, generator=g, dtype=F64)
    with GradNormEngine(layer, own_grads=own) as engine:
        losses = (layer(x) - y).pow(2).sum((0, 2))
        losses.mean().backward()
        stats = engine.compute(reduction="mean", losses=losses, validate=True)
    params = {k: p.detach() for k, p in layer.named_parameters()}

    def loss(p: dict[str, Tensor], xi: Tensor, yi: Tensor) -> Tensor:
        return (functional_call(layer, p, (xi[:, None],)) - yi[:, None]).pow(2).sum()

    want = vmap(grad(loss), in_dims=(None, 1, 1))(params, x, y)
    assert {f"linear1.{leaf}" for leaf in LEAVES[wrap]} <= set(want)
    assert_exact(stats, want, TOL[F64])


def _autocast_models() -> dict[str, tuple[nn.Module, tuple[Tensor, ...]]]:
    from flowvar.models import DiTField, MLPField, UNetField

    g = torch.Generator().manual_seed(3)
    img = torch.randn(8, 1, 8, 8, generator=g)
    t = torch.rand(8, generator=g)
    torch.manual_seed(0)
    return {
        "mlp": (MLPField(4, 32, 2), (torch.randn(16, 4, generator=g), torch.rand(16, generator=g))),
        "unet": (UNetField(8, 1, base_channels=16, channel_mult=(1, 2)), (img, t)),
        "dit": (DiTField(8, channels=1, patch=2, width=16, depth=2, heads=2, zero_init=False), (img, t)),
        "encoder-layer": (nn.TransformerEncoderLayer(16, 2, 32, dropout=0.0, batch_first=True),
                          (torch.randn(8, 6, 16, generator=g),)),
    }


@pytest.mark.parametrize("name", ["mlp", "unet", "dit", "encoder-layer"])
@pytest.mark.parametrize("own_grads", [True, False])
def test_a_pass_under_autocast_is_measured_to_its_precision(name, own_grads):
    """CPU bfloat16 autocast (float32 inputs reach the layers, their δ come back in bfloat16): the rules get one
    dtype (raised a raw dtype error before), the sum check passes at the half-precision tolerance, and the trace
    equals the float32 pass's to bfloat16 precision."""
    model, inputs = _autocast_models()[name]

    def losses_of() -> Tensor:
        out = model(*inputs)
        return (out.float() - inputs[0]).pow(2).flatten(1).sum(1)

    with GradNormEngine(model, own_grads=own_grads) as engine:
        losses = losses_of()
        losses.mean().backward()
        want = engine.compute(losses=losses).report().trace
        model.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            losses = losses_of()
        losses.mean().backward()
        stats = engine.compute(losses=losses)
    assert stats.fallback == {}
    assert abs(stats.report().trace - want) <= 3e-2 * want


class MatMul(nn.Module):
    """A hand-written layer (no rule: the fallback) doing ``h @ self.W``, as DiT/SiT codebases do."""

    def __init__(self, n_in: int, n_out: int) -> None:
        super().__init__()
        self.W = nn.Parameter(torch.randn(n_in, n_out) / n_in ** 0.5)

    def forward(self, h: Tensor) -> Tensor:
        return h @ self.W


class Upsampler(nn.Module):
    """A strided convolution (its rule) and the ``nn.ConvTranspose2d`` a hand-written UNet upsamples with (no rule)."""

    def __init__(self) -> None:
        super().__init__()
        self.down = nn.Conv2d(1, 8, 3, stride=2, padding=1)
        self.up = nn.ConvTranspose2d(8, 1, 4, stride=2, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.up(F.silu(self.down(x)))


class MatMulMLP(nn.Module):
    def __init__(self, d: int) -> None:
        super().__init__()
        self.l1, self.mm, self.l2 = nn.Linear(d, 32), MatMul(32, 32), nn.Linear(32, d)

    def forward(self, x: Tensor) -> Tensor:
        return self.l2(F.silu(self.mm(self.l1(x))))


class RootMatMul(nn.Module):
    """The model's own parameter in a matmul of its forward: the fallback recomputes the whole model."""

    def __init__(self, d: int) -> None:
        super().__init__()
        self.l1 = nn.Linear(d, 32)
        self.W = nn.Parameter(torch.randn(32, d) / 32 ** 0.5)

    def forward(self, x: Tensor) -> Tensor:
        return F.silu(self.l1(x)) @ self.W


#: bfloat16 keeps 8 significant bits (unit roundoff 2^-8 ≈ 3.9e-3); the batch pass and the one-sample loop may round
#: differently (other kernels, other summation order), and a squared norm doubles a relative error: 3e-2 allows
#: about four roundings, and is far below the error of a wrong answer (a factor 2 on a squared norm is 100%)
BF16_TOL = 3e-2


def _autocast_fallback_models() -> dict[str, tuple[nn.Module, Tensor, set[str]]]:
    """name → (model, input, the parameters its fallback measures)."""
    g = torch.Generator().manual_seed(5)
    torch.manual_seed(0)
    return {
        "conv-transpose": (Upsampler(), torch.randn(B, 1, 8, 8, generator=g), {"up.weight", "up.bias"}),
        "matmul-layer": (MatMulMLP(6), torch.randn(B, 6, generator=g), {"mm.W"}),
        "model-matmul": (RootMatMul(6), torch.randn(B, 6, generator=g), {"W"}),
    }


def _naive_per_sample(model: nn.Module, x: Tensor, y: Tensor, autocast: bool) -> dict[str, Tensor]:
    """Per-sample gradients of ℓ_i = ‖model(x_i) − y_i‖² by one forward (under bfloat16 autocast, or not) and one
    autograd.grad per sample."""
    params = dict(model.named_parameters())
    rows = []
    for i in range(x.shape[0]):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            out = model(x[i:i + 1])
        rows.append(torch.autograd.grad((out.float() - y[i:i + 1]).pow(2).sum(), list(params.values())))
    return {k: torch.stack([r[j] for r in rows]).to(F64) for j, k in enumerate(params)}


def _trace(per_sample: dict[str, Tensor]) -> float:
    g = torch.cat([v.reshape(v.shape[0], -1) for v in per_sample.values()], 1)
    return float((g - g.mean(0)).pow(2).sum(1).mean())


@pytest.mark.parametrize("name", ["conv-transpose", "matmul-layer", "model-matmul"])
@pytest.mark.parametrize("own_grads", MODES)
def test_the_fallback_under_autocast_matches_a_per_sample_loop_under_the_same_autocast(name: str, own_grads: bool):
    """CPU bfloat16 autocast with modules that have no rule: the fallback recomputes them under the recorded call's
    autocast (it raised ConfigError: bfloat16 input, float32 weight). Per-sample squared norms of every parameter
    and the trace equal a naive per-sample loop under the same autocast to bfloat16 precision (:data:`BF16_TOL`)."""
    model, x, fallback = _autocast_fallback_models()[name]
    y = torch.randn_like(x)
    with GradNormEngine(model, own_grads=own_grads) as engine:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = model(x)
        losses = (out.float() - y).pow(2).flatten(1).sum(1)
        losses.mean().backward()
        stats = engine.compute(losses=losses, validate=True)
    assert set(stats.fallback) == fallback
    model.zero_grad()
    want = _naive_per_sample(model, x, y, autocast=True)

    def agree(got: Tensor, expected: Tensor) -> bool:
        return float(((got - expected).abs() / expected).max()) <= BF16_TOL

    for k, g in want.items():
        norms = g.reshape(B, -1).pow(2).sum(1)
        assert agree(stats.param_sq_norms[k], norms), k
        assert not agree(2 * stats.param_sq_norms[k], norms), k  # the tolerance catches a factor 2
    trace, expected = torch.tensor(stats.report().trace), torch.tensor(_trace(want))
    assert agree(trace, expected) and not agree(2 * trace, expected)


def test_a_pass_recorded_outside_autocast_is_recomputed_outside_it():
    """``compute()`` called inside an autocast block for a float32 pass: the fallback recomputes the pass as recorded
    (without autocast), so the result is float32-exact (it recomputed in bfloat16 and failed its output check)."""
    model, x, _ = _autocast_fallback_models()["matmul-layer"]
    y = torch.randn_like(x)
    with GradNormEngine(model) as engine:
        losses = (model(x) - y).pow(2).sum(1)
        losses.mean().backward()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            stats = engine.compute(losses=losses, validate=True)
    model.zero_grad()
    want = _naive_per_sample(model, x, y, autocast=False)
    for k, g in want.items():
        assert rel(stats.param_sq_norms[k], g.reshape(B, -1).pow(2).sum(1)) < TOL[torch.float32], k


class OneSampleFails(MatMul):
    """Runs a batch but not one sample under autocast (stands for a module the recomputation cannot run)."""

    def forward(self, h: Tensor) -> Tensor:
        if h.shape[0] == 1 and torch.is_autocast_enabled("cpu"):
            raise RuntimeError("this layer cannot run one sample")
        return h @ self.W


def test_a_fallback_that_fails_under_autocast_names_autocast():
    model = MatMulMLP(6)
    model.mm = OneSampleFails(32, 32)
    x = torch.randn(B, 6)
    with GradNormEngine(model) as engine:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            losses = model(x).float().pow(2).sum(1)
        losses.mean().backward()
        with pytest.raises(ConfigError, match=r"under torch\.autocast\(cpu, bfloat16\) and was recomputed under it"):
            engine.compute(losses=losses)
