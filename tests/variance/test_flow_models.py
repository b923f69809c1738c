"""The engine on the layers and models people train flow fields with (issue 19), against per-sample gradients
computed independently (torch.func vmap(grad), or one ordinary backward pass per sample where torch.func cannot run
the model): nn.MultiheadAttention and nn.TransformerEncoderLayer, the DiT field (flowvar.models.DiTField),
diffusers' UNet2DModel, torchcfm's UNetModelWrapper (with and without its CheckpointFunction), a guided-diffusion
UNet as in Meta flow_matching's image example (float32 GroupNorm subclass, Conv1d attention, torch checkpointing,
a repeated parameter, a padded label embedding), GRU/LSTM, and parameters inside custom autograd.Functions — and
the cheap check of Σ_i g_i that keeps a changed loss or a changed use of a parameter from giving a wrong number.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from per_sample_reference import F64, assert_exact, first_tensor, measure, reference_loop, rel
from torch import Tensor, nn
from torch.func import functional_call, grad, vmap
from torch.utils.checkpoint import checkpoint

from flowvar.errors import DataError
from flowvar.models import DiTField, MLPField
from flowvar.models.unet import sinusoidal_embedding
from flowvar.variance import GradientVarianceMonitor, GradNormEngine, per_sample_gradients

B = 4


def reference_vmap(model: nn.Module, inputs: tuple[Tensor, ...], y: Tensor) -> dict[str, Tensor]:
    """torch.func per-sample gradients of ℓ_i = ‖model(*inputs_i) − y_i‖² (the model's dtype)."""
    params = {k: v.detach() for k, v in model.named_parameters()}

    def loss(p: dict[str, Tensor], *row: Tensor) -> Tensor:
        *xs, yi = row
        return (first_tensor(functional_call(model, p, tuple(x[None] for x in xs))) - yi[None]).pow(2).sum()

    return vmap(grad(loss), in_dims=(None,) + (0,) * (len(inputs) + 1))(params, *inputs, y)


def target(model: nn.Module, inputs: tuple[Tensor, ...], gen: torch.Generator) -> Tensor:
    with torch.no_grad():
        out = first_tensor(model(*inputs))
    return torch.randn(out.shape, generator=gen, dtype=out.dtype)


# --------------------------------------------------------------------------------------------- attention


class Attend(nn.Module):
    """x (B, L, E), context (B, S, E) → MultiheadAttention in the configuration under test, batch-first out."""

    def __init__(self, cross: bool = False, weights: bool = False, masks: bool = False, **options: object) -> None:
        super().__init__()
        self.cross, self.weights, self.masks = cross, weights, masks
        self.batch_first = bool(options.get("batch_first", False))
        self.key = nn.Linear(8, int(options.get("kdim") or 8))  # type: ignore[call-overload]
        self.value = nn.Linear(8, int(options.get("vdim") or 8))  # type: ignore[call-overload]
        self.attn = nn.MultiheadAttention(8, 2, **options)  # type: ignore[arg-type]

    def forward(self, x: Tensor, context: Tensor) -> Tensor:
        src = context if self.cross else x
        q, k, v = x, self.key(src), self.value(src)
        if not self.batch_first:
            q, k, v = (z.transpose(0, 1) for z in (q, k, v))
        extra: dict[str, Tensor] = {}
        if self.masks:  # the last key of every sample padded away, and a causal mask
            kpm = torch.zeros(x.shape[0], src.shape[1], dtype=torch.bool)
            kpm[:, -1] = True
            extra = {"key_padding_mask": kpm,
                     "attn_mask": torch.triu(torch.ones(x.shape[1], src.shape[1], dtype=torch.bool), 1)}
        out, w = self.attn(q, k, v, need_weights=self.weights, **extra)
        out = out if self.batch_first else out.transpose(0, 1)
        return out + w.sum(-1, keepdim=True) if self.weights else out


MHA_CASES = {
    "sequence-first": {},
    "batch-first-cross": {"batch_first": True, "cross": True},
    "kdim-vdim": {"cross": True, "kdim": 6, "vdim": 5},
    "no-bias": {"bias": False},
    "bias-kv-zero-attn": {"add_bias_kv": True, "add_zero_attn": True, "batch_first": True},
    "weights-used": {"weights": True, "batch_first": True},
    "masks": {"masks": True, "add_bias_kv": True},
}


@pytest.mark.parametrize("case", sorted(MHA_CASES))
def test_multihead_attention_is_exact_by_its_rule(case, gen, monkeypatch):
    """Every MultiheadAttention parameter, out_proj included, by the attention rule (no fallback). Without
    bias_k/bias_v the rule reads x, c and δ of the pass's own projections (captured while recording): the attention
    is never recomputed (a recomputation here fails the test), and F.linear is the original again afterwards."""
    from flowvar.variance.rules import attention

    def no_recompute(*args: object) -> None:
        raise AssertionError("the attention was recomputed")

    if "add_bias_kv" not in MHA_CASES[case]:
        monkeypatch.setattr(attention.MultiheadAttentionRule, "_recompute", staticmethod(no_recompute))
    torch.manual_seed(0)
    model = Attend(**MHA_CASES[case]).to(F64)
    inputs = (torch.randn(B, 5, 8, generator=gen, dtype=F64), torch.randn(B, 3, 8, generator=gen, dtype=F64))
    y = target(model, inputs, gen)
    stats = measure(model, inputs, y, validate=True)
    assert_exact(stats, reference_vmap(model, inputs, y), 1e-10)
    assert stats.fallback == {}
    assert all(stats.rules[n].startswith("mha-") for n in stats.rules if n.startswith("attn.")), stats.rules
    assert F.linear is attention._ORIGINAL_LINEAR and torch.nn.functional.linear is attention._ORIGINAL_LINEAR


@pytest.mark.parametrize("norm_first", [False, True])
def test_transformer_encoder_layer_is_exact(norm_first, gen):
    """nn.TransformerEncoderLayer (sequence-first, causal mask, padding mask) and a DiT field: no fallback."""
    torch.manual_seed(0)

    class Encoder(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.layer = nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0, norm_first=norm_first)

        def forward(self, x: Tensor) -> Tensor:
            mask = torch.triu(torch.ones(x.shape[1], x.shape[1], dtype=torch.bool), 1)
            pad = torch.zeros(x.shape[0], x.shape[1], dtype=torch.bool)
            pad[:, -1] = True  # (the first position stays visible: every query keeps a key under the causal mask)
            return self.layer(x.transpose(0, 1), src_mask=mask, src_key_padding_mask=pad).transpose(0, 1)

    model = Encoder().to(F64)
    x = torch.randn(B, 6, 8, generator=gen, dtype=F64)
    y = target(model, (x,), gen)
    stats = measure(model, (x,), y)
    assert_exact(stats, reference_vmap(model, (x,), y), 1e-10)
    assert stats.fallback == {}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_dit_field_is_exact_by_the_layer_rules(dtype, gen):
    """DiTField: patchify conv, qkv Linear + scaled_dot_product_attention, adaLN modulation, unpatchify."""
    torch.manual_seed(0)
    model = DiTField(8, channels=1, patch=2, width=16, depth=2, heads=2, zero_init=False).to(dtype)
    for block in model.blocks:  # adaLN-Zero starts at the identity: give the gates something to do
        nn.init.normal_(block.modulation.weight, std=0.2)
    x = torch.randn(B, 1, 8, 8, generator=gen, dtype=dtype)
    t = torch.rand(B, generator=gen, dtype=dtype)
    assert model(x, t).shape == x.shape and model(x, 0.5).shape == x.shape
    y = target(model, (x, t), gen)
    stats = measure(model, (x, t), y)
    ref = reference_vmap(copy.deepcopy(model).to(F64), (x.to(F64), t.to(F64)), y.to(F64))
    assert_exact(stats, ref, 1e-10 if dtype == F64 else 1e-5)
    assert stats.fallback == {}
    assert stats.rules["blocks.0.qkv.weight"].startswith("linear-")  # a Linear along the token sequence
    assert DiTField(8, width=16, depth=1, heads=2)(x.float(), t.float()).abs().max() == 0  # zero-initialised head


# --------------------------------------------------------------------------------------------- library UNets


def test_diffusers_unet2d_with_attention_is_exact(gen):
    diffusers = pytest.importorskip("diffusers", reason="diffusers not installed (make setup installs it)")
    torch.manual_seed(0)

    class Field(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.unet = diffusers.UNet2DModel(
                sample_size=8, in_channels=1, out_channels=1, block_out_channels=(8, 16), layers_per_block=1,
                norm_num_groups=4, down_block_types=("DownBlock2D", "AttnDownBlock2D"),
                up_block_types=("AttnUpBlock2D", "UpBlock2D"), attention_head_dim=8)

        def forward(self, x: Tensor, t: Tensor) -> Tensor:
            return self.unet(x, t).sample

    model = Field().to(F64)
    inputs = (torch.randn(B, 1, 8, 8, generator=gen, dtype=F64), torch.rand(B, generator=gen, dtype=F64))
    y = target(model, inputs, gen)
    stats = measure(model, inputs, y)
    assert_exact(stats, reference_vmap(model, inputs, y), 1e-10)
    assert stats.fallback == {}


@pytest.mark.parametrize("use_checkpoint", [False, True])
def test_torchcfm_unet_is_exact(use_checkpoint, gen):
    """torchcfm's UNetModelWrapper (float32 only: its time embedding casts to float32), with attention; with
    use_checkpoint its CheckpointFunction recomputes every block inside the backward pass and hands the parameter
    gradients it got from autograd.grad back to the outer pass (the parameter hooks fire twice)."""
    pytest.importorskip("torchcfm.models.unet", reason="torchcfm not installed (make setup installs it)")
    from torchcfm.models.unet.unet import UNetModelWrapper

    torch.manual_seed(0)

    class Field(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.unet = UNetModelWrapper(dim=(1, 8, 8), num_channels=32, num_res_blocks=1, channel_mult=(1, 2),
                                         attention_resolutions="4", num_heads=2, dropout=0.0,
                                         use_checkpoint=use_checkpoint)

        def forward(self, x: Tensor, t: Tensor) -> Tensor:
            return self.unet(t, x)

    model = Field()
    inputs = (torch.randn(B, 1, 8, 8, generator=gen), torch.rand(B, generator=gen))
    y = target(model, inputs, gen)
    stats = measure(model, inputs, y)
    assert_exact(stats, reference_loop(model, inputs, y), 2e-4)
    assert set(stats.fallback.values()) == {"GroupNorm32 overrides GroupNorm.forward (no fast rule for it)"}
    assert any(r.startswith("conv1d") for r in stats.rules.values())  # the attention's qkv / proj_out


class _GroupNorm32(nn.GroupNorm):
    """guided-diffusion's normalisation: the GroupNorm computed in float32."""

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(x.float()).type(x.dtype)


class _ResBlock(nn.Module):
    """Scale-shift-norm residual block, optionally under torch.utils.checkpoint."""

    def __init__(self, ch: int, emb: int, mode: str) -> None:
        super().__init__()
        self.mode = mode
        self.inp = nn.Sequential(_GroupNorm32(4, ch), nn.SiLU(), nn.Conv2d(ch, ch, 3, padding=1))
        self.emb = nn.Sequential(nn.SiLU(), nn.Linear(emb, 2 * ch))
        self.norm = _GroupNorm32(4, ch)
        self.out = nn.Sequential(nn.SiLU(), nn.Conv2d(ch, ch, 3, padding=1))

    def _forward(self, x: Tensor, e: Tensor) -> Tensor:
        scale, shift = self.emb(e)[..., None, None].chunk(2, 1)
        return x + self.out(self.norm(self.inp(x)) * (1 + scale) + shift)

    def forward(self, x: Tensor, e: Tensor) -> Tensor:
        if self.mode == "none":
            return self._forward(x, e)
        return checkpoint(self._forward, x, e, use_reentrant=self.mode == "reentrant")


class _GuidedUNet(nn.Module):
    """The pieces of the guided-diffusion UNet in Meta flow_matching's examples/image (not shipped in the
    flow_matching package): GroupNorm32, Conv1d qkv attention with einsum, checkpointed residual blocks, a learned
    constant embedding repeated over the batch, a label embedding with a padding index."""

    def __init__(self, mode: str) -> None:
        super().__init__()
        ch, emb = 8, 16
        self.time = nn.Sequential(nn.Linear(ch, emb), nn.SiLU(), nn.Linear(emb, emb))
        self.label = nn.Embedding(3, emb, padding_idx=2)
        self.constant = nn.Parameter(torch.randn(1, emb))
        self.inp = nn.Conv2d(1, ch, 3, padding=1)
        self.block = _ResBlock(ch, emb, mode)
        self.attn_norm = _GroupNorm32(4, ch)
        self.qkv = nn.Conv1d(ch, 3 * ch, 1)
        self.proj = nn.Conv1d(ch, ch, 1)
        self.down = nn.Conv2d(ch, ch, 3, stride=2, padding=1)
        self.mid = _ResBlock(ch, emb, mode)
        self.out = nn.Sequential(_GroupNorm32(4, ch), nn.SiLU(), nn.Conv2d(ch, 1, 3, padding=1))

    def forward(self, x: Tensor, t: Tensor, label: Tensor) -> Tensor:
        e = self.time(sinusoidal_embedding(t, 8)) + self.label(label) + self.constant.repeat(x.shape[0], 1)
        h = self.block(self.inp(x), e)
        b, c, hh, ww = h.shape
        q, k, v = self.qkv(self.attn_norm(h.reshape(b, c, -1))).reshape(b * 2, 3 * c // 2, -1).chunk(3, 1)
        w = torch.einsum("bct,bcs->bts", q, k).div(math.sqrt(c // 2)).softmax(-1)
        h = h + self.proj(torch.einsum("bts,bcs->bct", w, v).reshape(b, c, -1)).reshape(b, c, hh, ww)
        h = h + F.interpolate(self.mid(self.down(h), e), scale_factor=2.0)
        return self.out(h)


@pytest.mark.parametrize("mode", ["none", "reentrant", "non-reentrant"])
def test_guided_diffusion_unet_as_in_meta_flow_matching_is_exact(mode, gen):
    pytest.importorskip("flow_matching", reason="flow_matching not installed (make setup installs it)")
    from flow_matching.utils import ModelWrapper

    class Wrapped(ModelWrapper):  # flow_matching's calling convention: model(x=x, t=t, **extras)
        def forward(self, x: Tensor, t: Tensor, **extras: Tensor) -> Tensor:
            return self.model(x, t, extras["label"])

    torch.manual_seed(0)
    model = Wrapped(_GuidedUNet(mode))
    x = torch.randn(B, 1, 8, 8, generator=gen)
    t = torch.rand(B, generator=gen)
    label = torch.tensor([0, 2, 1, 2])

    class Call(nn.Module):  # positional inputs for the per-sample reference
        def __init__(self) -> None:
            super().__init__()
            self.wrapped = model

        def forward(self, x: Tensor, t: Tensor, label: Tensor) -> Tensor:
            return self.wrapped(x=x, t=t, label=label)

    field = Call()
    inputs = (x, t, label)
    y = target(field, inputs, gen)
    stats = measure(field, inputs, y)
    assert_exact(stats, reference_loop(field, inputs, y), 1e-4)
    assert stats.rules["wrapped.model.qkv.weight"].startswith("conv1d")
    assert "wrapped.model.constant" in stats.fallback  # a direct parameter of the model: the module fallback


# --------------------------------------------------------------------------------------------- RNNs, autograd.Function


class Recurrent(nn.Module):
    """A recurrent layer (sequence-first unless batch_first) with an initial state derived from the input."""

    def __init__(self, kind: str, batch_first: bool, **options: object) -> None:
        super().__init__()
        self.kind, self.batch_first = kind, batch_first
        self.rnn = getattr(nn, kind)(6, 5, batch_first=batch_first, **options)
        self.head = nn.Linear(5 * (2 if self.rnn.bidirectional else 1), 3)

    def forward(self, x: Tensor) -> Tensor:
        layers = self.rnn.num_layers * (2 if self.rnn.bidirectional else 1)
        h0 = torch.tanh(x[:, :layers, :5]).transpose(0, 1).contiguous()
        state = (h0, 0.5 * h0) if self.kind == "LSTM" else h0
        out, hn = self.rnn(x if self.batch_first else x.transpose(0, 1), state)
        out = out if self.batch_first else out.transpose(0, 1)
        last = (hn[0] if self.kind == "LSTM" else hn)[-1]
        return self.head(out) + last.sum(-1)[:, None, None]


@pytest.mark.parametrize(("kind", "batch_first", "options"), [
    ("GRU", True, {}), ("GRU", False, {"num_layers": 2, "bidirectional": True}), ("LSTM", False, {}),
])
def test_recurrent_layers_are_exact_by_the_fallback(kind, batch_first, options, gen):
    """The fused recurrent kernels hide the flat weights from the hooks: the module's exact fallback, reported,
    with the batch found in the second dimension of sequence-first inputs and of the hidden states."""
    torch.manual_seed(0)
    model = Recurrent(kind, batch_first, **options).to(F64)
    x = torch.randn(B, 7, 6, generator=gen, dtype=F64)
    y = target(model, (x,), gen)
    stats = measure(model, (x,), y)
    assert_exact(stats, reference_loop(model, (x,), y), 1e-10)
    assert set(stats.fallback) == {n for n in stats.param_sq_norms if n.startswith("rnn.")}


class _Matmul(torch.autograd.Function):
    """x Wᵀ with a hand-written backward and no torch.func support (no setup_context)."""

    @staticmethod
    def forward(ctx, x: Tensor, w: Tensor) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(x, w)
        return x @ w.T

    @staticmethod
    def backward(ctx, g: Tensor) -> tuple[Tensor, Tensor]:  # type: ignore[override]
        x, w = ctx.saved_tensors
        return g @ w, g.T @ x


class CustomFunctionField(nn.Module):
    """A parameter inside a custom autograd.Function in its own module, and a Linear's weight passed to one
    outside its module."""

    def __init__(self) -> None:
        super().__init__()
        self.inner = nn.Linear(4, 6)
        self.w = nn.Parameter(torch.randn(5, 6))
        self.outer = nn.Linear(5, 3)

    def forward(self, x: Tensor) -> Tensor:
        h = torch.tanh(_Matmul.apply(self.inner(x), self.w))
        return _Matmul.apply(h, self.outer.weight) + self.outer.bias


def test_custom_autograd_function_parameters_reach_the_exact_fallback(gen):
    torch.manual_seed(0)
    model = CustomFunctionField().to(F64)
    x = torch.randn(B, 4, generator=gen, dtype=F64)
    y = target(model, (x,), gen)
    stats = measure(model, (x,), y, validate=True)
    assert_exact(stats, reference_loop(model, (x,), y), 1e-10)
    assert stats.rules["w"] == "fallback-loop" and stats.rules["inner.weight"] == "linear"
    assert stats.rules["outer.weight"] == "model-fallback-loop" and "outside" in stats.fallback["outer.weight"]


# --------------------------------------------------------------------------------------------- never silently wrong


def test_the_cheap_check_catches_a_small_extra_loss_term(gen):
    """A regulariser that moves the trace by less than 0.1% is caught by the default check (no full validation,
    float32); the same pass without it passes the check."""
    torch.manual_seed(0)
    model = MLPField(2, width=32, depth=2)
    x, t = torch.randn(64, 2, generator=gen), torch.rand(64, generator=gen)
    u = torch.randn(64, 2, generator=gen)
    traces = {}
    for weight, check in ((0.0, True), (1e-3, False), (1e-3, True)):
        model.zero_grad()
        with GradNormEngine(model) as engine:
            losses = (model(x, t) - u).pow(2).sum(1)
            (losses.mean() + weight * sum(p.pow(2).sum() for p in model.parameters())).backward()
            if weight and check:
                with pytest.raises(DataError, match="do not add up"):
                    engine.compute(reduction="mean", losses=losses)
            else:
                stats = engine.compute(reduction="mean", losses=losses, check=check)
                traces[weight] = stats.trace
                assert stats.fallback == {}
    assert 0 < abs(traces[1e-3] - traces[0.0]) / traces[0.0] < 1e-3  # what the unchecked number would have been


class Switch(nn.Module):
    """An MLP whose first layer's weight is also used outside its module once ``outside`` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.mlp = MLPField(2, width=16, depth=2)
        self.outside = False

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        v = self.mlp(x, t)
        if self.outside:
            w = self.mlp.net[0].weight
            v = v + 0.5 * torch.tanh(x @ w[:, :2].T) @ w[:, :2]
        return v


def test_monitor_never_returns_a_silently_wrong_number(gen):
    """After the first (validated) log: an L2 term added at a later step raises; a parameter that starts being used
    outside its module is measured through the model and the logged trace stays exact."""
    from flowvar.interpolants import PathSample

    torch.manual_seed(0)
    model = Switch().to(F64)
    monitor = GradientVarianceMonitor(model, t_bins=None)
    logged = []
    for step, change in enumerate(("none", "outside", "l2")):
        model.outside = change in ("outside", "l2")
        x0 = torch.randn(16, 2, generator=gen, dtype=F64)
        x1 = torch.randn(16, 2, generator=gen, dtype=F64)
        t = torch.rand(16, generator=gen, dtype=F64)
        path = PathSample(x0=x0, x1=x1, t=t, z=torch.zeros_like(x0), xt=(1 - t[:, None]) * x0 + t[:, None] * x1,
                          target=x1 - x0)
        losses = (model(path.xt, t) - path.target).pow(2).sum(1)
        loss = losses.mean()
        if change == "l2":
            loss = loss + 1e-3 * sum(p.pow(2).sum() for p in model.parameters())
        model.zero_grad()
        loss.backward()
        if change == "l2":
            with pytest.raises(DataError, match="do not add up"):
                monitor.step(step, losses, t)
            break
        record = monitor.step(step, losses, t)
        grads = per_sample_gradients(model, path)
        g = torch.cat([v.reshape(16, -1) for v in grads.values()], 1)
        logged.append((record, float((g - g.mean(0)).pow(2).sum(1).mean())))
    monitor.close()
    (first, trace0), (second, trace1) = logged
    assert first["fallback"] == [] and math.isclose(first["trace"], trace0, rel_tol=1e-10)
    assert "mlp.net.0.weight" in second["fallback"] and math.isclose(second["trace"], trace1, rel_tol=1e-10)
    assert abs(trace1 - first["trace"]) > 0 and rel(torch.tensor(second["trace"]), torch.tensor(trace1)) < 1e-10


def test_a_multihead_attention_forward_that_raises_leaves_f_linear_alone(gen):
    """A forward that fails inside the attention (wrong key width) closes its capture: F.linear is restored, and
    the next forward and backward are measured exactly."""
    from flowvar.variance.rules import attention

    torch.manual_seed(0)
    model = nn.MultiheadAttention(8, 2, batch_first=True).to(F64)
    engine = GradNormEngine(model)
    x = torch.randn(B, 5, 8, generator=gen, dtype=F64)
    with pytest.raises((RuntimeError, AssertionError)):  # torch asserts the key's shape
        model(x, torch.randn(B, 5, 3, dtype=F64), x)
    assert torch.nn.functional.linear is attention._ORIGINAL_LINEAR
    engine.clear()

    class Self(nn.Module):
        def __init__(self, attn: nn.Module) -> None:
            super().__init__()
            self.attn = attn

        def forward(self, z: Tensor) -> Tensor:
            return self.attn(z, z, z, need_weights=False)[0]

    engine.detach()
    wrapped = Self(model)
    y = target(wrapped, (x,), gen)
    assert_exact(measure(wrapped, (x,), y), reference_vmap(wrapped, (x,), y), 1e-10)
    assert torch.nn.functional.linear is attention._ORIGINAL_LINEAR


@pytest.mark.parametrize("batch_first", [True, False])
def test_transformer_layer_with_attention_dropout_in_training_mode_is_exact(batch_first, gen):
    """PyTorch's default layers train with dropout (0.1): the captured path reads the δ of the pass that drew the masks,
    so the per-sample gradients are exact for those masks. Reference: the same forward (same generator state) and one
    autograd.grad per sample on its graph."""
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(8, 2, 16, dropout=0.3, batch_first=batch_first).to(F64).train()
    x = torch.randn(B, 6, 8, generator=gen, dtype=F64)
    y = torch.randn(B, 6, 8, generator=gen, dtype=F64)

    def losses_of(model: nn.Module) -> Tensor:
        out = model(x if batch_first else x.transpose(0, 1))
        out = out if batch_first else out.transpose(0, 1)
        return (out - y).pow(2).flatten(1).sum(1)

    params = dict(layer.named_parameters())
    with torch.random.fork_rng():
        torch.manual_seed(7)
        ref_losses = losses_of(layer)
        per_sample = [torch.autograd.grad(ref_losses[i], list(params.values()), retain_graph=True) for i in range(B)]
    ref = {name: torch.stack([g[k] for g in per_sample]) for k, name in enumerate(params)}
    with torch.random.fork_rng(), GradNormEngine(layer) as engine:
        torch.manual_seed(7)  # the same dropout masks
        losses = losses_of(layer)
        assert torch.equal(losses.detach(), ref_losses.detach())
        losses.mean().backward()
        stats = engine.compute(reduction="mean", losses=losses, validate=True)
    assert_exact(stats, ref, 1e-10)
    assert stats.fallback == {}
