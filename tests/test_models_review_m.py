"""The models review (session 33, modelsR): input checks of the closed-form, empirical and learned fields. Each test
names the finding it covers."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

from flowvar.errors import ConfigError, DataError
from flowvar.interpolants import BrownianBridgeNoise
from flowvar.models import EmpiricalField, MemorisingField
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
    # nearest line's velocity); not refused, because adaptive solvers step past t = 1 and interpolate back
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
    assert max(seen) > 1.0  # the solver did evaluate past the end
    assert bool(torch.isfinite(end).all())
