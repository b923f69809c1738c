"""The models review (session 33, modelsR): input checks of the closed-form, empirical and learned fields, the time
features of half-precision models, and the documented output dtypes. Each test names the finding it covers."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor

from flowvar.errors import ConfigError, DataError, ShapeError
from flowvar.interpolants import BrownianBridgeNoise
from flowvar.models import (
    CounterexampleField,
    DiTField,
    EmpiricalField,
    FlatMLPField,
    GaussianParametricField,
    MemorisingField,
    MLPField,
    NoisyCounterexampleField,
    SinusoidalTimeEmbedding,
    UNetField,
    ZeroPerturbedField,
    sinusoidal_embedding,
)
from flowvar.sampling import integrate


def _pairs(n: int = 6, d: int = 2, seed: int = 0) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(n, d, generator=g, dtype=torch.float64),
            2 * torch.randn(n, d, generator=g, dtype=torch.float64) + 1)


# ------------------------------------------------------------------ finding 1: EmpiricalField / MemorisingField input


def test_empirical_fields_refuse_uint8_x_instead_of_a_wrapped_velocity() -> None:
    # the review's case: x0 = 0, x1 = (0.7, −1.6), (3, 3); MemorisingField returned [[0, 255]] for a uint8 x at t = 0
    x0 = torch.zeros(2, 2, dtype=torch.float64)
    x1 = torch.tensor([[0.7, -1.6], [3.0, 3.0]], dtype=torch.float64)
    x = torch.zeros(1, 2, dtype=torch.uint8)
    for field in (EmpiricalField(x0, x1, 0.1), MemorisingField(x0, x1)):
        with pytest.raises(ConfigError, match=r"x must be a floating-point tensor, got dtype torch.uint8; pass "
                                              r"x.float\(\)"):
            field(x, 0.0)
        with pytest.raises(ConfigError, match="floating-point"):
            field.nearest_line(x, 0.0)
    with pytest.raises(ConfigError, match="floating-point"):
        EmpiricalField(x0, x1, 0.1).weights(x, 0.0)
    # the float input still gives the value the review computed by hand: w ∝ exp(−‖μ_i(0)‖²/2σ²) = (1, 0) at x = 0
    torch.testing.assert_close(EmpiricalField(x0, x1, 0.1)(x.double(), 0.0),
                               torch.tensor([[1.85, 0.7]], dtype=torch.float64), rtol=0, atol=1e-12)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_empirical_fields_refuse_a_non_finite_t(bad: float) -> None:
    # a NaN t compared as no distance at all: both fields returned the lowest-index line's velocity, finite
    x0, x1 = _pairs()
    x = torch.zeros(3, 2, dtype=torch.float64)
    fields = (EmpiricalField(x0, x1, 0.1), EmpiricalField(x0, x1, 0.1, noise="bridge"), MemorisingField(x0, x1))
    for field in fields:
        for t in (bad, torch.tensor([0.2, bad, 0.4], dtype=torch.float64)):
            with pytest.raises(DataError, match=r"t holds [13] non-finite value"):  # a scalar: every row's t
                field(x, t)
    with pytest.raises(DataError, match="t holds"):
        EmpiricalField(x0, x1, 0.1).weights(x, bad)


class _NaNOutsideUnit(BrownianBridgeNoise):
    """The bridge, but with f = NaN outside [0, 1] (no clamp), as a custom schedule may well be written."""

    name = "nan-bridge"

    def scale(self, t: Tensor, sigma: float) -> Tensor:
        return sigma * (t * (1 - t)).sqrt()


def test_empirical_field_refuses_a_schedule_whose_f_is_nan() -> None:
    # f > 0 is False for NaN: such a row took the hard nearest-line path, silently
    x0, x1 = _pairs()
    field = EmpiricalField(x0, x1, 0.3, noise=_NaNOutsideUnit())
    x = torch.zeros(2, 2, dtype=torch.float64)
    assert bool(torch.isfinite(field(x, 0.4)).all())
    with pytest.raises(DataError, match=r"'nan-bridge' returned f\(t, σ\) = NaN at t = \[1.5\]"):
        field(x, torch.tensor([0.4, 1.5], dtype=torch.float64))
    with pytest.raises(DataError, match="returned f"):
        field.weights(x, 1.5)


def test_bridge_field_outside_the_unit_interval_is_the_nearest_line_limit_adaptive_solvers_need() -> None:
    # documented domain: the bridge's f is clamped to 0 outside [0, 1], so the field is its t = 0 / t = 1 limit (the
    # nearest line's velocity); not refused, because a user's adaptive solver may step past t = 1 and interpolate
    # back (flowvar's integrate steps onto t = 1: torchdiffeq's step_t)
    x0, x1 = _pairs(n=20)
    field = EmpiricalField(x0, x1, 0.3, noise="bridge")
    memo = MemorisingField(x0, x1)
    x = torch.randn(5, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    for t in (1.0, 1.2, -0.1):
        assert torch.equal(field(x, t), memo(x, t))
    seen: list[float] = []

    def recording(x: Tensor, t: Tensor) -> Tensor:
        seen.append(float(t.max()))
        return field(x, t)

    end = integrate(recording, x0[:5].clone(), method="dopri5").x1
    assert max(seen) <= 1.0  # flowvar's own integration stays in [0, 1]
    assert bool(torch.isfinite(end).all())
    seen.clear()
    end = integrate(recording, x0[:5].clone(), method="dopri5", options={"step_t": torch.tensor([0.5])}).x1
    assert max(seen) > 1.0 and bool(torch.isfinite(end).all())  # a user's own step_t: past t = 1, still defined


# ------------------------------------------------------------------ finding 2: DiTField arguments


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"patch": 0}, r"patch must be a positive integer, got 0"),
    ({"heads": 0}, r"heads must be a positive integer, got 0"),
    ({"channels": 0}, r"channels must be a positive integer, got 0"),
    ({"width": 0, "heads": 1}, r"width must be a positive integer, got 0"),
    ({"size": 0}, r"size must be a positive integer, got 0"),
    ({"size": True}, r"size must be a positive integer, got True"),
    ({"heads": 2.5}, r"heads must be a positive integer"),
    ({"depth": -1}, r"depth must be an integer >= 0 \(the number of transformer blocks\), got -1"),
    ({"depth": 1.5}, r"depth must be an integer >= 0"),
    ({"depth": True}, r"depth must be an integer >= 0"),
    ({"depth": float("nan")}, r"depth must be an integer >= 0"),
    ({"mlp_ratio": 0}, r"mlp_ratio must be a finite number > 0"),
    ({"mlp_ratio": float("nan")}, r"mlp_ratio must be a finite number > 0"),
    ({"mlp_ratio": 0.01}, r"int\(width · mlp_ratio\) >= 1"),  # 64 · 0.01 = 0.64: a 0-wide MLP
    ({"time_scale": float("nan")}, r"time_scale must be a finite number > 0, got nan"),
    ({"time_scale": -1.0}, r"time_scale must be a finite number > 0, got -1.0"),
    ({"time_scale": True}, r"time_scale must be a finite number > 0, got True"),
    ({"patch": 3}, r"image size 8 must be divisible by the patch size 3; choose patch among \[1, 2, 4, 8\]"),
    ({"width": 64, "heads": 3}, r"width 64 must be divisible by heads 3 .*choose heads among 1, 2, 4, 8, 16, 32, "
                                r"64, or a width that is a multiple of 3"),
    ({"width": 30, "heads": 3}, r"divisible by 4 .*got 30; use a width that is a multiple of 4"),
])
def test_dit_refuses_bad_arguments_with_a_config_error(kwargs: dict[str, object], match: str) -> None:
    # were: NaN output (time_scale nan), ZeroDivisionError (patch 0, heads 0), a silent 0-block model (depth −1), a
    # 0-wide MLP (mlp_ratio 0), a model built on size 0 / channels 0
    args = {"size": 8, **kwargs}
    size = args.pop("size")
    with pytest.raises(ConfigError, match=match):
        DiTField(size, **args)  # type: ignore[arg-type]


def test_dit_takes_an_integral_float_size_and_depth_zero() -> None:
    # DiTField(8.0) built, then its forward failed with TypeError in view(); depth 0 (the final layer alone) is kept
    x = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    model = DiTField(8.0, width=16, depth=1, heads=2)  # type: ignore[arg-type]
    assert model.size == 8 and isinstance(model.size, int)
    assert model(x, 0.5).shape == x.shape
    shallow = DiTField(8, width=16, depth=0, heads=2, zero_init=False)
    assert len(shallow.blocks) == 0 and "heads=2" in repr(shallow)
    assert shallow(x, 0.5).shape == x.shape


def test_unet_time_scale_shares_dits_check() -> None:
    # one check for both: a bool time_scale used to pass SinusoidalTimeEmbedding as the number 1
    for bad in (True, float("inf"), 0):
        with pytest.raises(ConfigError, match="time_scale must be a finite number > 0"):
            UNetField(8, 1, channel_mult=(1,), time_scale=bad)  # type: ignore[arg-type]
        with pytest.raises(ConfigError, match="time_scale must be a finite number > 0"):
            SinusoidalTimeEmbedding(8, scale=bad)  # type: ignore[arg-type]


# ------------------------------------------------------------------ finding 3: ZeroPerturbedField


def test_zero_perturbed_field_checks_dim_and_x() -> None:
    for bad in (0, -2, True, 2.5):
        with pytest.raises(ConfigError, match="dim must be a positive integer"):
            ZeroPerturbedField(CounterexampleField(), bad)  # type: ignore[arg-type]
    probe = ZeroPerturbedField(MLPField(3).double(), 2)
    # was torch's "mat1 and mat2 shapes cannot be multiplied (2x4 and 3x2)"
    with pytest.raises(ShapeError, match=r"ZeroPerturbedField\(dim=2\) expects x of shape \(B, 2\), got \(2, 3\); "
                                         r".*x.flatten\(1\).*dim=x.shape\[1\]"):
        probe(torch.zeros(2, 3, dtype=torch.float64), 0.5)
    images = ZeroPerturbedField(FlatMLPField((1, 4, 4)).double(), 16)
    # was "Tensors must have same number of dimensions: got 4 and 2"
    with pytest.raises(ShapeError, match=r"expects x of shape \(B, 16\), got \(2, 1, 4, 4\).*x.flatten\(1\)"):
        images(torch.zeros(2, 1, 4, 4, dtype=torch.float64), 0.5)


# ------------------------------------------------------------------ finding 4: closed-form fields' mu and σ


@pytest.mark.parametrize("cls", [CounterexampleField, NoisyCounterexampleField])
def test_counterexample_fields_check_mu(cls: type) -> None:
    extra = (0.3,) if cls is NoisyCounterexampleField else ()
    # was torch's "The expanded size of the tensor (2) must match the existing size (3)"
    with pytest.raises(ShapeError, match=r"mu as a number or a tensor of shape \(2,\) to match dim=2, got shape "
                                         r"\(3,\); pass dim=3"):
        cls([1.0, 2.0, 3.0], *extra, dim=2)
    with pytest.raises(ShapeError, match="mu as a number"):
        cls(torch.zeros(2, 2), *extra, dim=2)
    for bad in (float("nan"), [1.0, float("inf")]):  # a NaN μ made the field NaN everywhere
        with pytest.raises(ConfigError, match=r"needs a finite mu, got 1 NaN/Inf value"):
            cls(bad, *extra, dim=2)
    field = cls([1.0, 2.0], *extra, dim=2)
    assert field.mu.tolist() == [1.0, 2.0]
    assert cls(3.0, *extra, dim=2).mu.tolist() == [3.0, 3.0]


def test_noisy_counterexample_sigma_goes_through_check_sigma() -> None:
    # True was taken as σ = 1.0, and σ = inf gave v ≡ μ
    with pytest.raises(ConfigError, match="got the bool True"):
        NoisyCounterexampleField(5.0, True)  # type: ignore[arg-type]
    for bad in (float("inf"), float("nan"), -0.1):
        with pytest.raises(ConfigError, match="sigma must be a finite number >= 0"):
            NoisyCounterexampleField(5.0, bad)
    with pytest.raises(ConfigError, match="needs σ > 0, got 0; use CounterexampleField"):
        NoisyCounterexampleField(5.0, 0.0)
    assert NoisyCounterexampleField(5.0, 0.25).sigma == 0.25


# ------------------------------------------------------------------ finding 5: output dtypes, as documented


def test_output_dtypes_are_the_documented_ones() -> None:
    # models/__init__.py: no change of behaviour (the float64 closed forms keep float64 for a float32 x, which
    # sampling.integrate documents), pinned here so that the documentation stays true
    x32 = torch.randn(3, 2, generator=torch.Generator().manual_seed(0))
    x0, x1 = _pairs(4)
    assert CounterexampleField()(x32, 0.3).dtype == torch.float64
    assert CounterexampleField(dtype=torch.float32)(x32.double(), 0.3).dtype == torch.float64  # promotion
    assert NoisyCounterexampleField(5.0, 0.3)(x32, 0.3).dtype == torch.float64
    assert GaussianParametricField(2)(x32, 0.3).dtype == torch.float64
    assert GaussianParametricField(2, dtype=torch.float32)(x32.double(), 0.3).dtype == torch.float32  # cast to θ's
    assert EmpiricalField(x0, x1, 0.3)(x32, 0.3).dtype == torch.float32
    assert MemorisingField(x0, x1)(x32.bfloat16(), 0.3).dtype == torch.bfloat16
    assert ZeroPerturbedField(CounterexampleField(), 2)(x32, 0.3).dtype == torch.float64
    assert ZeroPerturbedField(MemorisingField(x0, x1), 2)(x32, 0.3).dtype == torch.float32
    assert MLPField(2, 8, 1)(x32, 0.3).dtype == torch.float32


# ------------------------------------------------------------------ finding 6: half-precision time features


def _embedding_as_before(t: Tensor, dim: int, scale: float = 1000.0, max_period: float = 10000.0) -> Tensor:
    """sinusoidal_embedding as it was before the fix (everything in t's dtype): the reference for float32/64."""
    half = dim // 2
    k = torch.arange(half, dtype=t.dtype)
    freqs = torch.exp(-math.log(max_period) * k / max(half, 1))
    args = scale * t[:, None] * freqs[None, :]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=1)
    return torch.nn.functional.pad(emb, (0, 1)) if dim % 2 else emb


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_time_embedding_is_the_float32_one_rounded(dtype: torch.dtype) -> None:
    # computed in bfloat16, s·t·ω up to 1000 has a spacing of 4: the features were off by up to 2 (a sign flip)
    t = torch.rand(1000, generator=torch.Generator().manual_seed(0)).to(dtype)
    half = sinusoidal_embedding(t, 64)
    assert half.dtype == dtype
    exact = sinusoidal_embedding(t.float(), 64)  # the same (representable) times, in float32
    # |features| <= 1: the output rounding is at most half an ulp at 1, 2^-9 (bfloat16) or 2^-12 (float16)
    ulp = 2.0 ** -8 if dtype == torch.bfloat16 else 2.0 ** -11
    assert float((half.float() - exact).abs().max()) <= ulp / 2
    assert torch.equal(half, exact.to(dtype))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_float32_and_float64_time_embeddings_are_unchanged(dtype: torch.dtype) -> None:
    t = torch.rand(257, generator=torch.Generator().manual_seed(1), dtype=dtype)
    for dim in (6, 7, 64):
        out = sinusoidal_embedding(t, dim)
        assert out.dtype == dtype and torch.equal(out, _embedding_as_before(t, dim))


def test_bfloat16_models_tell_t_half_from_0_501() -> None:
    # t = 0.5 and 0.501 are one bfloat16 number: a bfloat16 model gave them one output; the times are now kept in
    # float32 up to the time features
    assert torch.tensor([0.5, 0.501]).bfloat16().unique().numel() == 1
    torch.manual_seed(0)
    unet = UNetField(8, 1, base_channels=8, channel_mult=(1,), groups=4).bfloat16()
    dit = DiTField(8, width=16, depth=1, heads=2, zero_init=False).bfloat16()
    x = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(2)).bfloat16()
    for model in (unet, dit):
        with torch.no_grad():
            a, b = model(x, torch.tensor(0.5)), model(x, torch.tensor(0.501))
        assert a.dtype == torch.bfloat16
        assert float((a.float() - b.float()).abs().max()) > 1e-3


def test_float32_models_compute_their_time_features_as_before() -> None:
    # no float32 number changes: the model's first time Linear gets exactly the old features
    torch.manual_seed(0)
    unet = UNetField(8, 1, base_channels=8, channel_mult=(1,), groups=4)
    dit = DiTField(8, width=16, depth=1, heads=2, zero_init=False)
    x = torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(2))
    t = torch.rand(3, generator=torch.Generator().manual_seed(3))
    old_unet = unet.out_conv(torch.nn.functional.silu(unet.out_norm(_unet_trunk(unet, x, t))))
    assert torch.equal(unet(x, t), old_unet)
    c = dit.time_mlp(_embedding_as_before(t, dit.width, scale=dit.time_scale))
    assert torch.equal(_dit_time_conditioning(dit, x, t), c)


def _unet_trunk(unet: UNetField, x: Tensor, t: Tensor) -> Tensor:
    """UNetField.forward before the output layers, with the time embedding computed as before the fix."""
    from flowvar.models.unet import _Stage

    emb = unet.time_embed(t)  # the whole Sequential on float32 times, as forward did
    h = unet.input_conv(x)
    skips = [h]
    for block in unet.down:
        h = block(h, emb) if isinstance(block, _Stage) else block(h)
        skips.append(h)
    h = unet.mid2(unet.mid_attn(unet.mid1(h, emb)), emb)
    for block in unet.up:
        h = block(torch.cat([h, skips.pop()], dim=1), emb) if isinstance(block, _Stage) else block(h)
    return h


def _dit_time_conditioning(dit: DiTField, x: Tensor, t: Tensor) -> Tensor:
    """The conditioning c that DiTField.forward computes, captured from its time MLP."""
    captured: list[Tensor] = []
    handle = dit.time_mlp.register_forward_hook(lambda _m, _i, out: captured.append(out))
    try:
        dit(x, t)
    finally:
        handle.remove()
    return captured[0]


# ------------------------------------------------------------------ finding 7: FlatMLPField item shape


def test_flat_mlp_field_refuses_items_of_another_shape() -> None:
    field = FlatMLPField((1, 8, 8), width=8, depth=1)
    # (2, 64) and a channels-last batch have the right number of entries: both were taken without complaint
    with pytest.raises(ShapeError, match=r"FlatMLPField\(shape=\(1, 8, 8\)\) expects x of shape \(B, 1, 8, 8\), got "
                                         r"\(2, 64\); reshape it with x.reshape\(-1, 1, 8, 8\)"):
        field(torch.zeros(2, 64), 0.5)
    with pytest.raises(ShapeError, match=r"got \(2, 8, 8, 1\).*x.permute\(0, 3, 1, 2\)"):
        field(torch.zeros(2, 8, 8, 1), 0.5)
    with pytest.raises(ShapeError, match=r"got \(2, 1, 7, 7\); build the field with shape=\(1, 7, 7\)"):
        field(torch.zeros(2, 1, 7, 7), 0.5)
    assert field(torch.zeros(2, 1, 8, 8), 0.5).shape == (2, 1, 8, 8)
    with pytest.raises(ConfigError, match="shape entry must be a positive integer, got -1"):
        FlatMLPField((-1, 4))


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_a_non_finite_size_is_a_config_error_not_a_conversion_error(bad: float) -> None:
    """modelsR follow-up: check_positive_int ran int(value) first, so DiTField(float('nan')) raised "cannot convert
    float NaN to integer" (a ValueError) instead of naming the argument."""
    from flowvar.errors import check_positive_int

    with pytest.raises(ConfigError, match="size must be a positive integer"):
        check_positive_int("size", bad)
