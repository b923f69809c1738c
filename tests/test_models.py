import pytest
import torch

from flowvar.errors import ConfigError, ShapeError, SolverError
from flowvar.models import (
    CounterexampleField,
    EmpiricalField,
    FlatMLPField,
    GaussianParametricField,
    MemorisingField,
    MLPField,
    ZeroPerturbedField,
)
from flowvar.models.base import input_mismatch, time_column


def test_mlp_shapes_and_time_broadcast() -> None:
    torch.manual_seed(0)
    m = MLPField(3, width=16, depth=2, activation="silu")
    x = torch.randn(5, 3)
    assert m(x, torch.rand(5)).shape == (5, 3)
    assert torch.allclose(m(x, 0.3), m(x, torch.full((5,), 0.3)))
    with pytest.raises(ShapeError, match=r"\(B, 3\)"):
        m(torch.randn(5, 2), 0.3)
    with pytest.raises(ShapeError, match="t must be"):
        m(x, torch.rand(4))
    with pytest.raises(ConfigError, match="activation"):
        MLPField(2, activation="swishy")
    with pytest.raises(ConfigError, match="positive integer"):
        MLPField(2, width=0)


def test_parametric_field_formula() -> None:
    g = torch.Generator().manual_seed(0)
    theta = torch.randn(3, generator=g, dtype=torch.float64)
    Theta = 0.3 * torch.randn(3, 3, generator=g, dtype=torch.float64)
    f = GaussianParametricField(3, theta, Theta)
    x = torch.randn(4, 3, generator=g, dtype=torch.float64)
    t = torch.rand(4, generator=g, dtype=torch.float64)
    out = f(x, t)
    for i in range(4):
        A = torch.eye(3, dtype=torch.float64) + t[i] * Theta
        expected = theta + Theta @ torch.linalg.solve(A, x[i] - t[i] * theta)
        assert torch.allclose(out[i], expected, atol=1e-12)


def test_parametric_field_singular_time_raises() -> None:
    f = GaussianParametricField(2, torch.zeros(2), -2 * torch.eye(2))
    with pytest.raises(SolverError, match="singular"):
        f(torch.randn(3, 2, dtype=torch.float64), torch.tensor([0.1, 0.5, 0.7], dtype=torch.float64))


def test_counterexample_field_is_the_line_velocity_off_the_singular_time() -> None:
    mu = torch.tensor([5.0, 5.0], dtype=torch.float64)
    f = CounterexampleField(5.0, 2)
    x0 = torch.randn(6, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    x1 = -x0 + mu
    for t in (0.1, 0.49, 0.51, 0.9):
        xt = (1 - t) * x0 + t * x1
        assert torch.allclose(f(xt, t), x1 - x0, atol=1e-9)
    assert not bool(torch.isfinite(f(0.5 * mu.expand(1, 2) + 1e-3, 0.5)).all())


def test_flat_mlp_field_is_an_mlp_on_flattened_items() -> None:
    torch.manual_seed(0)
    flat = FlatMLPField((1, 2, 3), width=8, depth=2, activation="silu")
    torch.manual_seed(0)
    mlp = MLPField(6, 8, 2, "silu")  # same initialisation: the wrapper draws nothing else
    x, t = torch.randn(4, 1, 2, 3), torch.rand(4)
    out = flat(x, t)
    assert out.shape == x.shape
    assert torch.equal(out, mlp(x.reshape(4, 6), t).reshape(x.shape))
    assert list(flat.state_dict()) == [f"mlp.{k}" for k in mlp.state_dict()]
    vectors = FlatMLPField((5,), width=8, depth=1)
    assert vectors(torch.randn(3, 5), 0.5).shape == (3, 5)


def test_zero_perturbed_field_equals_its_base_and_has_zero_gradient_where_it_fits() -> None:
    base = CounterexampleField(mu=2.0, dim=2)
    probe = ZeroPerturbedField(base, 2)
    x = torch.randn(6, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    t = torch.full((6,), 0.3, dtype=torch.float64)
    assert torch.equal(probe(x, t), base(x, t))
    assert sum(p.numel() for p in probe.parameters()) == 2 * 3 + 2
    (probe(x, t) - base(x, t)).pow(2).sum().backward()  # targets the base fits exactly: no gradient
    assert probe.linear.weight.grad is not None and float(probe.linear.weight.grad.abs().max()) == 0.0
    probe.zero_grad()
    r = torch.randn(6, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    (base(x, t) + r - probe(x, t)).pow(2).sum().backward()  # ∇_W = −2 Σ_i r_i [x_i, t_i]ᵀ, ∇_c = −2 Σ_i r_i
    xt = torch.cat([x, t[:, None]], 1)
    torch.testing.assert_close(probe.linear.weight.grad, -2 * r.T @ xt)
    torch.testing.assert_close(probe.linear.bias.grad, -2 * r.sum(0))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16])
def test_mlp_dtype_mismatch_is_one_clear_error(dtype: torch.dtype) -> None:
    # used to be torch's raw "mat1 and mat2 must have the same dtype" RuntimeError
    with pytest.raises(ConfigError, match=rf"MLPField got x of dtype {dtype} but its parameters are torch.float32.*"
                                          rf"model.to\({dtype}\)"):
        MLPField(2, 8, 1)(torch.zeros(3, 2, dtype=dtype), 0.5)
    with pytest.raises(ConfigError, match="MLPField got x of dtype"):
        FlatMLPField((2, 2), 8, 1)(torch.zeros(3, 2, 2, dtype=dtype), 0.5)


@pytest.mark.parametrize("dtype", [torch.int64, torch.int32, torch.uint8, torch.bool])
def test_integer_x_is_refused_with_x_float_not_a_model_conversion(dtype: torch.dtype) -> None:
    # used to advise model.to(torch.int64), which torch refuses; and time_column cast t = 0.5 to x's integer dtype
    # (0), so a field without parameters computed silently at t = 0. EmpiricalField and MemorisingField cast x to
    # float64 before time_column's check and the velocity back to x's dtype: truncated (uint8: wrapped), silently
    pairs = (torch.zeros(2, 2, dtype=torch.float64), torch.tensor([[0.7, -1.6], [3.0, 3.0]], dtype=torch.float64))
    for model, x in ((MLPField(2, 8, 1), torch.zeros(3, 2, dtype=dtype)),
                     (FlatMLPField((2, 2), 8, 1), torch.zeros(3, 2, 2, dtype=dtype)),
                     (CounterexampleField(mu=2.0, dim=2), torch.zeros(3, 2, dtype=dtype)),
                     (EmpiricalField(*pairs, 0.1), torch.zeros(3, 2, dtype=dtype)),
                     (MemorisingField(*pairs), torch.zeros(3, 2, dtype=dtype))):
        with pytest.raises(ConfigError, match=rf"x must be a floating-point tensor, got dtype {dtype}; pass "
                                              rf"x.float\(\)") as caught:
            model(x, 0.5)
        assert "model.to" not in str(caught.value)
    with pytest.raises(ConfigError, match=r"x must be a floating-point tensor.*x.float\(\)"):
        time_column(0.5, torch.zeros(3, 2, dtype=dtype))
    # the error of input_mismatch itself, for fields that call it on a failed forward
    problem = input_mismatch(MLPField(2, 8, 1), torch.zeros(3, 2, dtype=dtype))
    assert problem is not None and "x.to(torch.float32)" in str(problem) and "model.to" not in str(problem)


@pytest.mark.parametrize("name", ["UNetField", "DiTField", "MLPField"])
def test_learned_fields_name_a_dtype_or_device_mismatch(name: str) -> None:
    # UNet and DiT gave torch's conv/matmul message ("Input type (double) and bias type (float) should be the same")
    from flowvar.models import DiTField, UNetField

    model, x = {"UNetField": (lambda: UNetField(8, in_channels=1, base_channels=8, channel_mult=(1,), groups=4),
                              torch.zeros(2, 1, 8, 8)),
                "DiTField": (lambda: DiTField(8, width=16, depth=1, heads=2), torch.zeros(2, 1, 8, 8)),
                "MLPField": (lambda: MLPField(2, 8, 1), torch.zeros(2, 2))}[name]
    field = model()
    with pytest.raises(ConfigError, match=rf"{name} got x of dtype torch.float64 but its parameters are "
                                          r"torch.float32.*model.to\(torch.float64\)"):
        field(x.double(), 0.5)
    with pytest.raises(ConfigError, match=rf"{name} got x on meta but its parameters are on cpu"):
        field(x.to("meta"), 0.5)
    assert field.double()(x.double(), 0.5).dtype == torch.float64  # converted: runs
    with torch.autocast("cpu", dtype=torch.bfloat16):  # autocast mixes dtypes legitimately: not refused
        assert field.float()(x, 0.5).dtype == torch.bfloat16


def test_mlp_runs_in_the_dtype_it_is_converted_to() -> None:
    model = MLPField(2, 8, 1).double()
    assert model(torch.zeros(3, 2, dtype=torch.float64), 0.5).dtype == torch.float64
    with torch.autocast("cpu", dtype=torch.bfloat16):  # autocast mixes dtypes legitimately: not refused
        assert MLPField(2, 8, 1)(torch.zeros(3, 2), 0.5).dtype == torch.bfloat16
