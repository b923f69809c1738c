import math

import numpy as np
import pytest
import torch

from flowvar.couplings import Pairs
from flowvar.errors import ConfigError, DataError, ShapeError
from flowvar.interpolants import (
    BrownianBridgeNoise,
    ConstantNoise,
    Interpolant,
    TimeSampler,
    UniformTime,
    expand_time,
    standard_normal_like,
)
from flowvar.loss import CFMLoss, per_sample_loss


def _pairs(shape: tuple[int, ...] = (8, 3)) -> Pairs:
    g = torch.Generator().manual_seed(0)
    return Pairs(torch.randn(shape, generator=g, dtype=torch.float64),
                 torch.randn(shape, generator=g, dtype=torch.float64))


@pytest.mark.parametrize("sigma", [0, 0.05, 1])
@pytest.mark.parametrize("noise", ["constant", "bridge"])
@pytest.mark.parametrize("shape", [(8, 3), (4, 1, 5, 5)])
def test_path_matches_closed_form(sigma: float, noise: str, shape: tuple[int, ...]) -> None:
    pairs = _pairs(shape)
    g = torch.Generator().manual_seed(1)
    t = torch.rand(shape[0], generator=g, dtype=torch.float64)
    z = torch.randn(shape, generator=g, dtype=torch.float64)
    path = Interpolant(sigma, noise).path(pairs.x0, pairs.x1, t, z)
    tt = t.reshape(-1, *([1] * (len(shape) - 1)))
    f = sigma if noise == "constant" else sigma * torch.sqrt(tt * (1 - tt))
    assert torch.allclose(path.xt, (1 - tt) * pairs.x0 + tt * pairs.x1 + f * z, atol=1e-14)
    assert torch.allclose(path.target, pairs.x1 - pairs.x0)


def test_conditional_bridge_target_equals_torchcfm_sb_formula() -> None:
    # u_t = (1 − 2t) / (2 t (1 − t)) (x_t − μ_t) + x1 − x0 for f = σ √(t(1−t))
    pairs = _pairs()
    t = torch.linspace(0.05, 0.95, 8, dtype=torch.float64)
    z = torch.randn(8, 3, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    interp = Interpolant(0.3, "bridge", target="conditional")
    path = interp.path(pairs.x0, pairs.x1, t, z)
    tt = t[:, None]
    mu = interp.mean(pairs.x0, pairs.x1, t)
    expected = (1 - 2 * tt) / (2 * tt * (1 - tt)) * (path.xt - mu) + pairs.x1 - pairs.x0
    assert torch.allclose(path.target, expected, atol=1e-12)


def test_conditional_target_is_the_time_derivative_of_the_path() -> None:
    pairs = _pairs()
    z = torch.randn(8, 3, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    t = torch.full((8,), 0.3, dtype=torch.float64)
    h = 1e-6
    for noise in ("constant", "bridge"):
        interp = Interpolant(0.2, noise, target="conditional")
        fd = (interp.path(pairs.x0, pairs.x1, t + h, z).xt - interp.path(pairs.x0, pairs.x1, t - h, z).xt) / (2 * h)
        assert torch.allclose(interp.path(pairs.x0, pairs.x1, t, z).target, fd, atol=1e-7)


def test_deterministic_interpolant_draws_no_noise() -> None:
    pairs = _pairs()
    g = torch.Generator().manual_seed(0)
    state = g.get_state()
    path = Interpolant(0.0).sample(pairs, torch.full((8,), 0.5, dtype=torch.float64), g)
    assert torch.equal(g.get_state(), state)
    assert torch.equal(path.z, torch.zeros_like(pairs.x0))


def test_noise_schedules() -> None:
    t = torch.tensor([0.0, 0.25, 0.5, 1.0])
    assert torch.equal(ConstantNoise().scale(t, 0.1), torch.full((4,), 0.1))
    assert torch.allclose(BrownianBridgeNoise().scale(t, 2.0), 2 * torch.sqrt(t * (1 - t)))
    assert BrownianBridgeNoise().dscale(torch.tensor([0.5]), 1.0).item() == pytest.approx(0.0)
    assert math.isfinite(BrownianBridgeNoise().dscale(torch.tensor([0.0]), 1.0).item())


def test_per_sample_loss_is_squared_residual_norm() -> None:
    pairs = _pairs()
    loss = CFMLoss(Interpolant(0.1))
    path = loss.sample_path(pairs, torch.Generator().manual_seed(0))

    def zero_field(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(x)

    model = zero_field
    per = per_sample_loss(model, path)  # type: ignore[arg-type]
    assert torch.allclose(per, (path.target ** 2).sum(1))
    assert loss(model, path).item() == pytest.approx(per.mean().item())  # type: ignore[arg-type]


def test_uniform_time_range_and_errors() -> None:
    t = UniformTime(0.2, 0.4).sample(1000, torch.Generator().manual_seed(0))
    assert float(t.min()) >= 0.2 and float(t.max()) <= 0.4
    with pytest.raises(ConfigError):
        UniformTime(0.5, 0.2)
    with pytest.raises(ConfigError, match="sigma"):
        Interpolant(-0.1)
    with pytest.raises(ConfigError, match="noise form"):
        Interpolant(0.1, "brownian")
    with pytest.raises(ShapeError, match="t must be"):
        expand_time(torch.zeros(3), torch.zeros(4, 2))


def test_model_returning_wrong_shape_is_reported() -> None:
    pairs = _pairs()
    path = CFMLoss().sample_path(pairs, torch.Generator().manual_seed(0))
    with pytest.raises(ShapeError, match="one velocity per input point"):
        per_sample_loss(lambda x, t: x[:, :1], path)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------- hostile inputs


@pytest.mark.parametrize("which, shape", [("z", (3,)), ("z", (1, 3)), ("x1", (1, 3)), ("x1", (4, 1)),
                                          ("z", (4, 3, 1))])
def test_path_refuses_shapes_that_would_broadcast(which: str, shape: tuple[int, ...]) -> None:
    # broadcasting would give every row the same noise (z) or the same target (x1), without an error
    x0, x1, z = torch.zeros(4, 3), torch.ones(4, 3), torch.randn(4, 3)
    args = {"x0": x0, "x1": x1, "z": z, which: torch.zeros(shape)}
    with pytest.raises(ShapeError, match=r"same shape.*broadcasting"):
        Interpolant(0.5).path(args["x0"], args["x1"], torch.full((4,), 0.5), args["z"])


@pytest.mark.parametrize("t", [0.25, torch.tensor(0.25), torch.tensor(0.25, dtype=torch.float64)])
@pytest.mark.parametrize("noise", ["constant", "bridge"])
def test_path_accepts_a_scalar_time(t: float | torch.Tensor, noise: str) -> None:
    pairs = _pairs()
    z = torch.randn(8, 3, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    interp = Interpolant(0.3, noise, target="conditional")
    path = interp.path(pairs.x0, pairs.x1, t, z)
    ref = interp.path(pairs.x0, pairs.x1, torch.full((8,), 0.25, dtype=torch.float64), z)
    assert path.t.shape == (8,) and path.t.dtype == torch.float64
    assert torch.equal(path.t, ref.t)
    assert torch.equal(path.xt, ref.xt) and torch.equal(path.target, ref.target)


def test_path_keeps_a_matching_time_tensor_and_refuses_a_wrong_one() -> None:
    pairs = _pairs()
    t = torch.rand(8, dtype=torch.float64)
    assert Interpolant(0.0).path(pairs.x0, pairs.x1, t, torch.zeros_like(pairs.x0)).t is t
    with pytest.raises(ShapeError, match=r"t must be a scalar or have shape \(8,\) or \(8, 1\), got \(8, 2\)"):
        Interpolant(0.0).path(pairs.x0, pairs.x1, torch.rand(8, 2, dtype=torch.float64), torch.zeros_like(pairs.x0))
    with pytest.raises(ConfigError, match="t must be a number"):
        Interpolant(0.0).path(pairs.x0, pairs.x1, "0.5", torch.zeros_like(pairs.x0))  # type: ignore[arg-type]


@pytest.mark.parametrize("sigma", [True, False, np.True_, torch.tensor(True)])
def test_sigma_refuses_bools(sigma: object) -> None:
    # float(True) == 1.0: a bool would silently become σ = 1
    with pytest.raises(ConfigError, match="sigma must be a number >= 0, got the bool"):
        Interpolant(sigma)  # type: ignore[arg-type]


def test_sigma_error_does_not_print_a_tensor() -> None:
    with pytest.raises(ConfigError, match=r"got a Tensor of shape \(1000,\)") as info:
        Interpolant(torch.zeros(1000))  # type: ignore[arg-type]
    assert "0., 0." not in str(info.value)


@pytest.mark.parametrize(("noise", "t", "got"), [
    ("constant", 1.5, "got 1.5"),  # extrapolated past x1
    ("bridge", -0.2, "got -0.2"),  # σ√(t(1 − t)) clamped to no noise at all
    ("constant", float("nan"), "got NaN"),  # an all-NaN x_t
    ("constant", torch.tensor([0.1, 0.2, 1.3, 0.5, 0.0, 1.0, 0.4, 0.6], dtype=torch.float64), "from 0 to 1.3"),
    ("constant", torch.tensor([0.1, 0.2, math.nan, 0.5, 0.0, 1.0, 0.4, 0.6], dtype=torch.float64), "got NaN"),
    ("constant", torch.tensor(250.0), "got 250"),  # a diffusion-style step index
])
def test_path_refuses_times_outside_the_unit_interval(noise: str, t: object, got: str) -> None:
    pairs = _pairs()
    with pytest.raises(DataError, match=rf"t must lie in \[0, 1\].*{got}"):
        Interpolant(0.1, noise).path(pairs.x0, pairs.x1, t, torch.zeros_like(pairs.x0))  # type: ignore[arg-type]


def test_path_accepts_both_ends_of_the_unit_interval() -> None:
    pairs = _pairs()
    z = torch.zeros_like(pairs.x0)
    assert torch.equal(Interpolant(0.0).path(pairs.x0, pairs.x1, 0, z).xt, pairs.x0)
    assert torch.equal(Interpolant(0.0).path(pairs.x0, pairs.x1, 1.0, z).xt, pairs.x1)
    ends = torch.tensor([0.0, 1.0] * 4, dtype=torch.float64)
    assert torch.equal(Interpolant(0.1, "bridge").path(pairs.x0, pairs.x1, ends, z).xt[1], pairs.x1[1])


def test_custom_time_sampler_outside_the_unit_interval_is_refused_in_the_loss() -> None:
    class Percent(TimeSampler):  # a notebook bug: times in percent
        def sample(self, n: int, generator: torch.Generator | None = None,
                   dtype: torch.dtype = torch.float32) -> torch.Tensor:
            return 100 * torch.rand(n, generator=generator, dtype=dtype)

    with pytest.raises(DataError, match=r"t must lie in \[0, 1\].*custom TimeSampler"):
        CFMLoss(Interpolant(0.1), Percent()).sample_path(_pairs(), torch.Generator().manual_seed(0))


def test_path_takes_a_column_of_times_as_the_models_do() -> None:
    pairs = _pairs()
    g = torch.Generator().manual_seed(2)
    t = torch.rand(8, generator=g, dtype=torch.float64)
    z = torch.randn(8, 3, generator=g, dtype=torch.float64)
    interp = Interpolant(0.2, "bridge", target="conditional")
    column, flat = interp.path(pairs.x0, pairs.x1, t[:, None], z), interp.path(pairs.x0, pairs.x1, t, z)
    assert column.t.shape == (8,) and torch.equal(column.t, t)
    assert torch.equal(column.xt, flat.xt) and torch.equal(column.target, flat.target)


def test_path_refuses_integer_and_mixed_dtypes_naming_the_fix() -> None:
    x0, x1 = torch.randn(5, 2), torch.randn(5, 2)
    with pytest.raises(DataError, match=r"x0 and x1 must have the same dtype.*x1.to\(x0.dtype\)"):
        Interpolant(0.0).path(x0, x1.double(), 0.5, torch.zeros_like(x0))
    with pytest.raises(DataError, match=r"x0 and z must have the same dtype.*z.to\(x0.dtype\)"):
        Interpolant(0.1).path(x0, x1, 0.5, torch.zeros(5, 2, dtype=torch.float64))  # silently float64 x_t before
    with pytest.raises(DataError, match=r"x0 must be a floating-point tensor, got dtype torch.int64; pass x0\.float"):
        Interpolant(0.0).path(torch.zeros(3, 2, dtype=torch.long), torch.ones(3, 2, dtype=torch.long), 0.5,
                              torch.zeros(3, 2, dtype=torch.long))


def test_generator_must_be_a_torch_generator() -> None:
    pairs = _pairs()
    message = r"generator must be a torch.Generator or None, got int 0; pass torch.Generator\(\).manual_seed\(0\)"
    with pytest.raises(ConfigError, match=message):
        Interpolant(0.1).sample(pairs, 0.5, 0)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=message):
        Interpolant(0.0).sample(pairs, 0.5, 0)  # type: ignore[arg-type]  # refused even where nothing is drawn
    with pytest.raises(ConfigError, match=message):
        UniformTime().sample(4, 0)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="got str 'seed'"):
        UniformTime().sample(4, "seed")  # type: ignore[arg-type]


@pytest.mark.parametrize("noise", ["constant", "bridge"])
def test_noise_is_drawn_as_before_on_the_cpu(noise: str) -> None:
    # recorded experiment numbers depend on these draws: same call, same numbers, for a seeded and the global generator
    pairs = _pairs((6, 1, 3, 3))
    t = torch.rand(6, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    path = Interpolant(0.3, noise).sample(pairs, t, torch.Generator().manual_seed(7))
    assert torch.equal(path.z, torch.randn(pairs.x0.shape, generator=torch.Generator().manual_seed(7),
                                           dtype=torch.float64))
    torch.manual_seed(11)
    z_global = Interpolant(0.3, noise).sample(pairs, t).z
    torch.manual_seed(11)
    assert torch.equal(z_global, torch.randn(pairs.x0.shape, dtype=torch.float64))


@pytest.mark.parametrize("generator", [None, torch.Generator().manual_seed(0)])
def test_noise_is_drawn_onto_the_pairs_device(generator: torch.Generator | None) -> None:
    # σ > 0 drew z on the CPU whatever the pairs' device: "Tensor on device cpu is not on the expected device meta!"
    # (the same path as CUDA pairs). The meta device holds shapes only; a CPU generator draws on the CPU and moves.
    pairs = Pairs(torch.empty(4, 2, device="meta"), torch.empty(4, 2, device="meta"))
    for interp in (Interpolant(0.1), Interpolant(0.1, "bridge", target="conditional")):
        path = interp.sample(pairs, torch.empty(4, device="meta"), generator)
        assert path.z.device.type == path.xt.device.type == path.target.device.type == "meta"
        assert path.xt.shape == (4, 2) and path.z.dtype == torch.float32
    z = standard_normal_like(pairs.x0, generator)
    assert z.device.type == "meta" and z.shape == (4, 2)


def test_times_a_rounding_error_outside_the_unit_interval_are_accepted() -> None:
    """1/9 added nine times is 1 + 2.2e-16 as a Python float: rounding, not a convention error (re-test N6)."""
    pairs = _pairs()
    z = torch.zeros_like(pairs.x0)
    t = sum([1 / 9] * 9)
    assert t > 1.0
    assert torch.allclose(Interpolant(0.0).path(pairs.x0, pairs.x1, t, z).xt, pairs.x1)
    with pytest.raises(DataError, match=r"t must lie in \[0, 1\]"):
        Interpolant(0.0).path(pairs.x0, pairs.x1, 1.0 + 1e-9, z)


def test_path_sample_to_moves_every_field_and_keeps_a_sample_already_there() -> None:
    """PathSample.to, the one move train() and the variance estimators share: the same object when every field is
    on the device already, else every field moved (the meta device stands in for a GPU)."""
    pairs = _pairs()
    path = Interpolant(0.1).path(pairs.x0, pairs.x1, 0.5, torch.zeros_like(pairs.x0))
    assert path.to("cpu") is path
    moved = path.to("meta")
    assert all(getattr(moved, f).device.type == "meta" for f in ("x0", "x1", "t", "z", "xt", "target"))


@pytest.mark.parametrize("eps", [0.0, -1.0, 0.5, 0.7, math.nan, math.inf, True, "1e-5", None])
def test_brownian_bridge_eps_must_lie_strictly_between_zero_and_one_half(eps: object) -> None:
    """coreA finding 5: any eps was accepted. f' = σ(1 − 2t)/(2√(t(1 − t))) on t clamped to [ε, 1 − ε]: ε <= 0 gives
    an infinite target at t = 0 (ε = −1 clamps to nothing), ε >= ½ an empty or one-point interval (clamp(0.7, 0.3)
    returns 0.3 for every t: a constant, wrong f')."""
    with pytest.raises(ConfigError, match=r"^BrownianBridgeNoise needs a number eps with 0 < eps < 0\.5"):
        BrownianBridgeNoise(eps)  # type: ignore[arg-type]


def test_brownian_bridge_eps_in_range_is_used_by_its_derivative() -> None:
    t = torch.tensor([0.0, 0.001, 0.5, 1.0], dtype=torch.float64)
    for eps in (1e-5, 0.01, 0.49):
        noise = BrownianBridgeNoise(eps)
        tc = t.clamp(eps, 1 - eps)
        assert noise.eps == eps and torch.equal(noise.dscale(t, 2.0), 2.0 * (1 - 2 * tc) / (2 * (tc * (1 - tc)).sqrt()))
        assert bool(torch.isfinite(noise.dscale(t, 2.0)).all())
    assert BrownianBridgeNoise(np.float64(0.25)).eps == 0.25  # numpy numbers are numbers


def test_mean_refuses_times_outside_the_unit_interval_as_path_does() -> None:
    """coreA finding 5: Interpolant.mean(x0, x1, t=2) extrapolated past x1 silently while path refused the same t."""
    pairs = _pairs()
    interp = Interpolant()
    for t in (2.0, -0.5, math.nan, torch.full((8,), 1.5, dtype=torch.float64)):
        with pytest.raises(DataError, match=r"t must lie in \[0, 1\]"):
            interp.mean(pairs.x0, pairs.x1, t)
        with pytest.raises(DataError, match=r"t must lie in \[0, 1\]"):
            interp.path(pairs.x0, pairs.x1, t, torch.zeros_like(pairs.x0))
    assert torch.equal(interp.mean(pairs.x0, pairs.x1, 1.0), pairs.x1)
    assert torch.equal(interp.mean(pairs.x0, pairs.x1, torch.zeros(8, dtype=torch.float64)), pairs.x0)
