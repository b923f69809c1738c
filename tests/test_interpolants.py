import math

import numpy as np
import pytest
import torch

from flowvar.couplings import Pairs
from flowvar.errors import ConfigError, ShapeError
from flowvar.interpolants import BrownianBridgeNoise, ConstantNoise, Interpolant, UniformTime, expand_time
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
    with pytest.raises(ShapeError, match=r"t must be a scalar or have shape \(8,\)"):
        Interpolant(0.0).path(pairs.x0, pairs.x1, torch.rand(8, 1, dtype=torch.float64), torch.zeros_like(pairs.x0))
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
