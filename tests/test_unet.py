"""The image UNet: shapes, time handling, gradients to every parameter, validation, and a tiny overfit."""

from __future__ import annotations

import math

import pytest
import torch

from flowvar.couplings import FixedPairs, Pairs
from flowvar.errors import ConfigError, ShapeError
from flowvar.interpolants import Interpolant
from flowvar.loss import CFMLoss, per_sample_loss
from flowvar.models import SinusoidalTimeEmbedding, UNetField, sinusoidal_embedding
from flowvar.models.unet import allowed_resolutions
from flowvar.variance import per_sample_gradients

SMALL = {"base_channels": 8, "groups": 4, "head_channels": 8}



@pytest.mark.parametrize("size", [8, 16, 32])
@pytest.mark.parametrize("channels", [1, 3])
def test_output_shape_matches_input(size: int, channels: int, gen: torch.Generator) -> None:
    model = UNetField(size, in_channels=channels, **SMALL)
    x = torch.randn(3, channels, size, size, generator=gen)
    out = model(x, torch.rand(3, generator=gen))
    assert out.shape == x.shape
    assert torch.isfinite(out).all()


def test_default_configuration_runs_and_has_attention_where_asked(gen: torch.Generator) -> None:
    model = UNetField(16, in_channels=3, attention_resolutions=(8,))
    assert model.config["base_channels"] == 32 and model.config["channel_mult"] == [1, 2, 2]
    assert model.level_sizes == (16, 8, 4)
    n_attn = sum(type(m).__name__ == "AttentionBlock" for m in model.modules())
    # one per res block at 8 px on both sides (1 down + 2 up) plus the middle one
    assert n_attn == 1 + 2 + 1
    x = torch.randn(2, 3, 16, 16, generator=gen)
    assert model(x, 0.5).shape == x.shape


def test_out_channels_can_differ(gen: torch.Generator) -> None:
    model = UNetField(8, in_channels=3, out_channels=1, **SMALL)
    assert model(torch.randn(2, 3, 8, 8, generator=gen), 0.2).shape == (2, 1, 8, 8)


def test_scalar_and_vector_t_agree(gen: torch.Generator) -> None:
    model = UNetField(8, in_channels=3, **SMALL).eval()
    x = torch.randn(4, 3, 8, 8, generator=gen)
    a = model(x, 0.3)
    b = model(x, torch.full((4,), 0.3))
    c = model(x, torch.full((4, 1), 0.3))
    d = model(x, torch.tensor(0.3))
    torch.testing.assert_close(a, b)
    torch.testing.assert_close(a, c)
    torch.testing.assert_close(a, d)
    assert (model(x, 0.9) - a).abs().max() > 1e-3, "the output must depend on t"


def test_rows_are_processed_independently(gen: torch.Generator) -> None:
    """GroupNorm normalises per sample: a row's output must not depend on the rest of the batch."""
    model = UNetField(8, in_channels=1, attention_resolutions=(8,), **SMALL).eval()
    x = torch.randn(5, 1, 8, 8, generator=gen)
    t = torch.rand(5, generator=gen)
    full = model(x, t)
    torch.testing.assert_close(model(x[2:3], t[2:3]), full[2:3], rtol=1e-5, atol=1e-6)


def test_gradient_reaches_every_parameter(gen: torch.Generator) -> None:
    model = UNetField(8, in_channels=3, channel_mult=(1, 2), num_res_blocks=2, attention_resolutions=(8, 4),
                      **SMALL)
    pairs = Pairs(torch.randn(4, 3, 8, 8, generator=gen), torch.randn(4, 3, 8, 8, generator=gen))
    loss = CFMLoss()
    loss(model, loss.sample_path(pairs, gen)).backward()
    params = dict(model.named_parameters())
    missing = [n for n, p in params.items() if p.grad is None]
    zero = [n for n, p in params.items() if p.grad is not None and not bool(p.grad.abs().gt(0).any())]
    assert not missing and not zero, (missing, zero)
    assert {type(m).__name__ for m in model.modules() if any(True for _ in m.parameters(recurse=False))} == {
        "Conv2d", "Linear", "GroupNorm"}


def test_per_sample_gradients_via_vmap_match_single_backward(gen: torch.Generator) -> None:
    """The variance engine's torch.func path works on the UNet (no data-dependent control flow)."""
    model = UNetField(8, in_channels=1, channel_mult=(1, 2), attention_resolutions=(4,), **SMALL).double()
    pairs = Pairs(torch.randn(3, 1, 8, 8, generator=gen, dtype=torch.float64),
                  torch.randn(3, 1, 8, 8, generator=gen, dtype=torch.float64))
    path = CFMLoss().sample_path(pairs, gen)
    grads = per_sample_gradients(model, path, strategy="vmap")
    model.zero_grad()
    one = type(path)(**{k: getattr(path, k)[1:2] for k in ("x0", "x1", "t", "z", "xt", "target")})
    per_sample_loss(model, one).sum().backward()
    for name, p in model.named_parameters():
        torch.testing.assert_close(grads[name][1], p.grad, rtol=1e-9, atol=1e-12)


def test_dropout_is_random_in_training_only(gen: torch.Generator) -> None:
    model = UNetField(8, in_channels=1, dropout=0.5, **SMALL)
    x = torch.randn(2, 1, 8, 8, generator=gen)
    assert not torch.equal(model(x, 0.5), model(x, 0.5))
    model.eval()
    assert torch.equal(model(x, 0.5), model(x, 0.5))


def test_sinusoidal_embedding_values() -> None:
    t = torch.tensor([0.0, 0.25])
    emb = sinusoidal_embedding(t, 6, scale=1000.0, max_period=10000.0)
    freqs = [10000.0 ** (-k / 3) for k in range(3)]
    expected = [[math.cos(1000 * s * f) for f in freqs] + [math.sin(1000 * s * f) for f in freqs] for s in (0.0, 0.25)]
    torch.testing.assert_close(emb, torch.tensor(expected))
    odd = SinusoidalTimeEmbedding(7)(t)
    assert odd.shape == (2, 7) and torch.equal(odd[:, -1], torch.zeros(2))
    assert not list(SinusoidalTimeEmbedding(8).parameters())
    with pytest.raises(ShapeError, match=r"shape \(B,\)"):
        sinusoidal_embedding(torch.zeros(2, 2), 4)
    with pytest.raises(ConfigError, match="time_scale"):
        SinusoidalTimeEmbedding(4, scale=0.0)


def test_resolution_must_fit_the_levels() -> None:
    with pytest.raises(ConfigError, match=r"multiple of 8: allowed sizes are 8, 16, 24, 32"):
        UNetField(12, channel_mult=(1, 2, 2, 2))
    with pytest.raises(ConfigError, match="image_size"):
        UNetField(16.0, channel_mult=(1, 2))  # type: ignore[arg-type]
    assert allowed_resolutions(3, 16) == [4, 8, 12, 16]


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"base_channels": 30, "groups": 8}, r"base_channels=30 is not divisible by groups=8"),
    ({"channel_mult": ()}, "channel_mult"),
    ({"channel_mult": (1, 0)}, "channel_mult entry"),
    ({"attention_resolutions": (5,)}, r"\[5\] are not resolutions of this UNet; its levels run at \[16, 8, 4\]"),
    ({"dropout": 1.0}, "dropout"),
    ({"num_res_blocks": 0}, "num_res_blocks"),
    ({"in_channels": 0}, "in_channels"),
    ({"base_channels": 24, "groups": 8, "head_channels": 16, "attention_resolutions": (16,)},
     "24 channels cannot be split into heads of 16"),
])
def test_invalid_configuration(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        UNetField(16, **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(("shape", "match"), [
    ((2, 1, 8, 8), r"built for 3 channel\(s\) but got x with 1"),
    ((2, 3, 8, 16), "square"),
    ((2, 3, 16, 16), "built for 8x8 images"),
    ((2, 192), r"shape \(B, 3, 8, 8\)"),
])
def test_wrong_input_shape(shape: tuple[int, ...], match: str) -> None:
    model = UNetField(8, in_channels=3, **SMALL)
    with pytest.raises(ShapeError, match=match):
        model(torch.zeros(shape), 0.5)


def test_wrong_t_shape() -> None:
    with pytest.raises(ShapeError, match="t must be a scalar"):
        UNetField(8, in_channels=1, **SMALL)(torch.zeros(2, 1, 8, 8), torch.zeros(3))


def test_tiny_overfit_on_four_pairs() -> None:
    """100 Adam steps on 4 fixed (noise, image) pairs at 8 px cut the CFM loss by more than 5x."""
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(1)
    x0 = torch.randn(4, 1, 8, 8, generator=gen)
    x1 = torch.rand(4, 1, 8, 8, generator=gen) * 2 - 1
    coupling = FixedPairs(x0, x1)
    loss = CFMLoss(Interpolant(sigma=0.0))
    model = UNetField(8, in_channels=1, base_channels=16, channel_mult=(1, 2), groups=8)
    # A fixed evaluation set: every pair at 8 times in (0, 1).
    t_eval = torch.linspace(0.05, 0.95, 8).repeat_interleave(4)
    eval_path = loss.interpolant.path(x0.repeat(8, 1, 1, 1), x1.repeat(8, 1, 1, 1), t_eval, torch.zeros(32, 1, 8, 8))

    def eval_loss() -> float:
        with torch.no_grad():
            return float(loss(model, eval_path))

    before = eval_loss()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(100):
        opt.zero_grad()
        loss(model, loss.draw(coupling, 8, gen)).backward()
        opt.step()
    after = eval_loss()
    assert after < before / 5, (before, after)
