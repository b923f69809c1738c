"""Review modelsR: the closed-form, empirical and parametric fields name a device mismatch, an integer x and a
non-numeric t as the learned fields do; EmpiricalField.weights agrees with forward where the posterior is a point
mass; the conditional bridge field is the minimiser of the clamped-f' loss flowvar trains."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import Tensor, nn

from flowvar.errors import ConfigError, ShapeError
from flowvar.interpolants import BrownianBridgeNoise
from flowvar.models import (
    CounterexampleField,
    EmpiricalField,
    GaussianParametricField,
    MemorisingField,
    MLPField,
    NoisyCounterexampleField,
    ZeroPerturbedField,
)
from flowvar.models.base import first_call, time_column
from flowvar.sampling import integrate


def _pairs(n: int = 5, d: int = 3, seed: int = 0) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g, dtype=torch.float64), torch.randn(n, d, generator=g, dtype=torch.float64)


FIELDS: dict[str, tuple[Callable[[], nn.Module], str]] = {
    "EmpiricalField": (lambda: EmpiricalField(*_pairs(), 0.1), "buffers"),
    "MemorisingField": (lambda: MemorisingField(*_pairs()), "buffers"),
    "CounterexampleField": (lambda: CounterexampleField(5.0, 3), "buffers"),
    "NoisyCounterexampleField": (lambda: NoisyCounterexampleField(5.0, 0.1, 3), "buffers"),
    "GaussianParametricField": (lambda: GaussianParametricField(3, torch.ones(3), 0.1 * torch.eye(3)), "parameters"),
    "ZeroPerturbedField": (lambda: ZeroPerturbedField(EmpiricalField(*_pairs(), 0.1), 3), "parameters"),
}


def _one_line(err: pytest.ExceptionInfo[BaseException]) -> str:
    text = str(err.value)
    assert len(text.splitlines()) == 1, text
    return text


@pytest.mark.parametrize("name", list(FIELDS))
def test_field_on_another_device_than_x_is_one_config_error_naming_both_moves(name: str) -> None:
    build, kind = FIELDS[name]
    x = torch.randn(4, 3)
    with pytest.raises(ConfigError) as err:  # was torch's "Tensor on device meta is not on the expected device cpu!"
        build().to("meta")(x, 0.3)
    assert _one_line(err) == (f"{name} got x on cpu but its {kind} are on meta; move one to the other "
                              f"(model.to('cpu') or x.to('meta'))")
    with pytest.raises(ConfigError) as err:  # was "Tensor.item() cannot be called on meta tensors" (check_finite)
        build()(x.to("meta"), 0.3)
    assert _one_line(err) == (f"{name} got x on meta but its {kind} are on cpu; move one to the other "
                              f"(model.to('meta') or x.to('cpu'))")


@pytest.mark.parametrize("name", list(FIELDS))
def test_integrate_names_the_device_of_a_field_on_another_device(name: str) -> None:
    build, kind = FIELDS[name]
    with pytest.raises(ConfigError) as err:  # was a generic "convert the weights the callable uses" text
        integrate(build().to("meta"), torch.randn(3, 3), steps=4)
    assert _one_line(err) == (f"{name} got x on cpu but its {kind} are on meta; move one to the other "
                              f"(model.to('cpu') or x.to('meta'))")


class _BufferNet(nn.Module):
    """A user's field holding only buffers, which does not cast its input (a float32 x meets a float64 W)."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("W", torch.eye(3, dtype=torch.float64))
        self.register_buffer("b", torch.zeros(3, dtype=torch.float64))

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        return x @ self.W + self.b  # the matmul refuses another dtype, the sum another device


def test_first_call_names_a_buffer_only_modules_dtype_and_device() -> None:
    x = torch.randn(4, 3)
    with pytest.raises(ConfigError) as err:
        integrate(_BufferNet(), x, steps=2)
    assert _one_line(err) == ("_BufferNet got x of dtype torch.float32 but its buffers are torch.float64; convert the "
                              "model (model.to(torch.float32), i.e. model.float()) or the input (x.to(torch.float64))")
    with pytest.raises(ConfigError) as err:
        integrate(_BufferNet().to("meta"), x.double(), steps=2)
    assert _one_line(err) == ("_BufferNet got x on cpu but its buffers are on meta; move one to the other "
                              "(model.to('cpu') or x.to('meta'))")
    # matching x: v = x, two Euler steps of h = ½ give x (1 + ½)²
    torch.testing.assert_close(integrate(_BufferNet(), x.double(), steps=2).x1, 2.25 * x.double(), rtol=1e-15, atol=0)


def test_first_call_keeps_a_failure_around_a_casting_buffer_field() -> None:
    # CounterexampleField casts a float32 x itself: its float64 buffer is no fault when its own call succeeds
    field, x, t = CounterexampleField(5.0, 3), torch.randn(4, 3), torch.full((4,), 0.3)

    def run() -> Tensor:
        field(x, t)
        raise RuntimeError("the loss around the model failed")

    with pytest.raises(RuntimeError, match=r"^the loss around the model failed$"):
        first_call(run, field, x, t)


def test_parametric_field_refuses_an_integer_x_like_every_model() -> None:
    field = GaussianParametricField(3, torch.ones(3), 0.1 * torch.eye(3, dtype=torch.float64))
    x = torch.tensor([[1, 2, 3], [0, -1, 4]])
    with pytest.raises(ConfigError) as err:  # was accepted and computed silently
        field(x, 0.3)
    assert _one_line(err).startswith("x must be a floating-point tensor, got dtype torch.int64; pass x.float()")
    # the float x of the same values is unchanged: θ + Θ(I + tΘ)^{-1}(x − tθ) with Θ = 0.1 I
    t, xf = 0.3, x.double()
    expected = 1.0 + 0.1 / (1 + 0.1 * t) * (xf - t)
    torch.testing.assert_close(field(xf, t), expected, rtol=1e-15, atol=1e-15)


@pytest.mark.parametrize("sigma", [1e-160, 1e-200])
def test_empirical_weights_are_the_point_mass_where_the_softmax_underflows(sigma: float) -> None:
    x0, x1 = _pairs(4, 2)
    field, mem = EmpiricalField(x0, x1, sigma), MemorisingField(x0, x1)
    x = torch.randn(3, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    w = field.weights(x, 0.3)  # was NaN: 1/(2σ²) overflows, every logit is −inf
    assert torch.equal(w, torch.nn.functional.one_hot(mem.nearest_line(x, 0.3), 4).double())
    assert torch.equal(w @ field.u, field(x, 0.3))
    assert torch.equal(field(x, 0.3), mem(x, 0.3))


@pytest.mark.parametrize("t", [5e-324, 1e-320])
def test_empirical_bridge_weights_are_the_point_mass_at_subnormal_times(t: float) -> None:
    x0, x1 = _pairs(4, 2)
    field = EmpiricalField(x0, x1, 0.5, noise="bridge")
    x = torch.randn(3, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    w = field.weights(x, t)
    assert torch.equal(w, torch.nn.functional.one_hot(field.nearest_line(x, t), 4).double())
    assert torch.equal(w @ field.u, field(x, t))
    # an ordinary time keeps the softmax weights: rows sum to 1 and spread over more than one line
    w_mid = field.weights(x, 0.5)
    torch.testing.assert_close(w_mid.sum(1), torch.ones(3, dtype=torch.float64), rtol=0, atol=1e-15)
    assert bool((w_mid.max(1).values < 1).all())


@pytest.mark.parametrize("t", [None, "a", [[0.1], [0.2, 0.3]]])
def test_time_column_names_a_non_numeric_t(t: object) -> None:
    x = torch.randn(4, 3)
    with pytest.raises(ConfigError) as err:  # was torch's bare TypeError / ValueError
        time_column(t, x)  # type: ignore[arg-type]
    assert _one_line(err).startswith("t must be a number or a tensor of times, got ")
    with pytest.raises(ConfigError, match=r"^t must be a number or a tensor of times, got None$"):
        EmpiricalField(*_pairs(), 0.1)(x, None)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"^t must be a number or a tensor of times, got 'a'$"):
        MLPField(3)(x, "a")  # type: ignore[arg-type]


def test_time_column_shape_error_lists_the_column_form() -> None:
    x = torch.randn(4, 3)
    with pytest.raises(ShapeError) as err:
        time_column(torch.zeros(1, 4), x)
    assert _one_line(err) == "t must be a scalar or have shape (4,) or (4, 1) to match x of shape (4, 3), got (1, 4)"
    assert torch.equal(time_column(torch.full((4, 1), 0.3), x), torch.full((4,), 0.3))  # the (B, 1) form it names


def test_conditional_bridge_field_uses_the_clamped_derivative_as_documented() -> None:
    assert "clamps to t ∈ [ε, 1 − ε]" in (EmpiricalField.__doc__ or "")
    x0, x1 = _pairs(6, 2)
    field = EmpiricalField(x0, x1, 0.5, noise="bridge", target="conditional")
    x = torch.randn(3, 2, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    bridge = BrownianBridgeNoise()
    for t in (1e-7, 1 - 1e-9, 0.3):
        tt = torch.full((3,), t, dtype=torch.float64)
        w = field.weights(x, t)
        mean_mu = w @ ((1 - t) * x0 + t * x1)
        ratio = bridge.dscale(tt, 0.5) / bridge.scale(tt, 0.5)  # dscale clamps t to [1e-5, 1 − 1e-5]
        expected = w @ (x1 - x0) + ratio[:, None] * (x - mean_mu)
        torch.testing.assert_close(field(x, t), expected, rtol=1e-9, atol=1e-9)
        if t != 0.3:  # the unclamped f'/f = (1 − 2t)/(2t(1 − t)) differs there by orders of magnitude
            textbook = (1 - 2 * t) / (2 * t * (1 - t))
            assert abs(textbook / float(ratio[0])) > 10
