"""flowvar.models.empirical: the exact empirical-loss minimiser (Remark 2) and its σ → 0 memorising limit (Prop 2)."""

from __future__ import annotations

import math

import pytest
import torch

from flowvar.couplings import Pairs
from flowvar.errors import ConfigError, DataError, ShapeError
from flowvar.interpolants import BrownianBridgeNoise, Interpolant
from flowvar.loss import per_sample_loss
from flowvar.models.empirical import EmpiricalField, MemorisingField

F64 = torch.float64


def randn(g: torch.Generator, *shape: int) -> torch.Tensor:
    return torch.randn(*shape, generator=g, dtype=F64)


def shuffled_pairs(g: torch.Generator, n: int, d: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    """Random sources paired with randomly permuted random targets: many training lines cross in space."""
    return randn(g, n, d), 2.0 + randn(g, n, d)


def naive_field(x0: torch.Tensor, x1: torch.Tensor, x: torch.Tensor, t: torch.Tensor, f: torch.Tensor,
                df: torch.Tensor | None = None) -> torch.Tensor:
    """Textbook posterior mean with a plain exp / sum (no log-space shift): underflows for small f."""
    mu = (1 - t)[:, None, None] * x0[None] + t[:, None, None] * x1[None]  # (B, N, d)
    w = torch.exp(-(x[:, None, :] - mu).pow(2).sum(-1) / (2 * f[:, None] ** 2))
    w = w / w.sum(1, keepdim=True)
    v = w @ (x1 - x0)
    if df is not None:
        v = v + (df / f)[:, None] * (x - (w[:, :, None] * mu).sum(1))
    return v


def euler(field: torch.nn.Module, x: torch.Tensor, steps: int) -> torch.Tensor:
    dt = 1.0 / steps
    for k in range(steps):
        x = x + dt * field(x, torch.full((x.shape[0],), k * dt, dtype=x.dtype))
    return x


def line_margin(x0: torch.Tensor, x1: torch.Tensor, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Gap between the nearest and second-nearest line distance at (x, t), shape (B,)."""
    mu = (1 - t)[:, None, None] * x0[None] + t[:, None, None] * x1[None]
    d = (x[:, None, :] - mu).norm(dim=-1).sort(1).values
    return d[:, 1] - d[:, 0]


# ---------------------------------------------------------------------------------------------- EmpiricalField


@pytest.mark.parametrize("noise", ["constant", "bridge"])
@pytest.mark.parametrize("chunk", [1, 7, 1000])
def test_log_space_matches_naive_softmax(gen: torch.Generator, noise: str, chunk: int) -> None:
    x0, x1 = shuffled_pairs(gen, 40, 3)
    sigma = 0.5
    field = EmpiricalField(x0, x1, sigma, noise=noise, chunk=chunk)
    x = 1.0 + randn(gen, 25, 3)
    t = 0.05 + 0.9 * torch.rand(25, generator=gen, dtype=F64)
    f = torch.full_like(t, sigma) if noise == "constant" else sigma * (t * (1 - t)).sqrt()
    expected = naive_field(x0, x1, x, t, f)
    assert torch.allclose(field(x, t), expected, rtol=1e-10, atol=1e-12)
    w = field.weights(x, t)
    assert torch.allclose(w.sum(1), torch.ones(25, dtype=F64)) and torch.allclose(w @ (x1 - x0), expected)


def test_conditional_target_for_the_bridge(gen: torch.Generator) -> None:
    x0, x1 = shuffled_pairs(gen, 30)
    sigma = 0.4
    x = randn(gen, 20, 2)
    t = 0.05 + 0.9 * torch.rand(20, generator=gen, dtype=F64)
    br = BrownianBridgeNoise()
    f, df = br.scale(t, sigma), br.dscale(t, sigma)
    field = EmpiricalField(x0, x1, sigma, noise="bridge", target="conditional", chunk=6)
    assert torch.allclose(field(x, t), naive_field(x0, x1, x, t, f, df), rtol=1e-10, atol=1e-12)
    # constant noise: f' = 0, so the conditional target changes nothing
    plain = EmpiricalField(x0, x1, sigma)(x, t)
    assert torch.allclose(EmpiricalField(x0, x1, sigma, target="conditional")(x, t), plain, atol=1e-14)


def test_stays_finite_where_naive_underflows(gen: torch.Generator) -> None:
    x0, x1 = shuffled_pairs(gen, 30)
    x = randn(gen, 40, 2)  # generic points, far from every line relative to σ
    t = torch.rand(40, generator=gen, dtype=F64)
    sigma = 1e-4
    naive = naive_field(x0, x1, x, t, torch.full_like(t, sigma))
    assert bool(torch.isnan(naive).any())  # exp(−d²/2σ²) = 0 for every line: 0/0
    v = EmpiricalField(x0, x1, sigma, chunk=8)(x, t)
    assert bool(torch.isfinite(v).all())
    keep = line_margin(x0, x1, x, t) > 1e-2  # not near an equidistant point: the posterior is one-hot
    assert int(keep.sum()) > 30
    assert torch.allclose(v[keep], MemorisingField(x0, x1)(x[keep], t[keep]), atol=1e-12)


def test_small_sigma_approaches_memorising_field(gen: torch.Generator) -> None:
    x0, x1 = shuffled_pairs(gen, 50)
    B = 400
    idx = torch.randint(0, 50, (B,), generator=gen)
    t = torch.rand(B, generator=gen, dtype=F64)
    x = (1 - t)[:, None] * x0[idx] + t[:, None] * x1[idx] + 1e-3 * randn(gen, B, 2)
    keep = line_margin(x0, x1, x, t) > 0.05  # away from crossings
    assert int(keep.sum()) > 300
    mem = MemorisingField(x0, x1)(x, t)
    errors = []
    for sigma in (0.3, 0.03, 3e-3):
        v = EmpiricalField(x0, x1, sigma)(x, t)
        errors.append(float((v - mem)[keep].norm(dim=1).max()))
    assert errors[0] > errors[1] > errors[2]
    assert errors[2] < 1e-10
    assert bool((mem[keep] == (x1 - x0)[idx][keep]).all())  # the nearest line is the one the point came from


def test_zero_noise_and_bridge_endpoints_use_the_nearest_line(gen: torch.Generator) -> None:
    x0, x1 = shuffled_pairs(gen, 20)
    u = x1 - x0
    bridge = EmpiricalField(x0, x1, 0.5, noise="bridge")
    assert torch.allclose(bridge(x0, torch.zeros(20, dtype=F64)), u)  # f(0) = 0: point mass on the own source
    assert torch.allclose(bridge(x1, torch.ones(20, dtype=F64)), u)
    t = torch.rand(20, generator=gen, dtype=F64)
    xt = (1 - t)[:, None] * x0 + t[:, None] * x1
    assert torch.equal(EmpiricalField(x0, x1, 0.0)(xt, t), MemorisingField(x0, x1)(xt, t))


def test_minimiser_property_monte_carlo(gen: torch.Generator) -> None:
    """At fixed t the residual u_I − v*(x_t) is orthogonal to every function of x_t, and perturbing v* raises the
    Monte-Carlo loss estimate (E[u | x_t] minimises E‖u − v(x_t)‖²)."""
    N, K, sigma, t0 = 8, 20_000, 0.3, 0.4
    x0, x1 = shuffled_pairs(gen, N)
    field = EmpiricalField(x0, x1, sigma)
    idx = torch.randint(0, N, (K,), generator=gen)
    t = torch.full((K,), t0, dtype=F64)
    path = Interpolant(sigma).path(x0[idx], x1[idx], t, randn(gen, K, 2))
    v = field(path.xt, t)
    r = path.target - v
    for g_fn in (lambda x: torch.ones_like(x), lambda x: x, lambda x: torch.sin(3 * x), lambda x: (x > 1).double()):
        prod = (r * g_fn(path.xt)).sum(1)
        assert abs(float(prod.mean())) < 4 * float(prod.std()) / math.sqrt(K)
    base = float(per_sample_loss(field, path).mean())
    for shift in ([0.2, 0.0], [-0.2, 0.0], [0.0, 0.2], [0.1, -0.1]):
        delta = torch.tensor(shift, dtype=F64)
        assert float((path.target - v - delta).pow(2).sum(1).mean()) > base
    # the σ → 0 field is worse under noise, and a field with the right mean but no x-dependence is much worse
    assert float(per_sample_loss(MemorisingField(x0, x1), path).mean()) > base
    assert float((path.target - path.target.mean(0)).pow(2).sum(1).mean()) > base


# ---------------------------------------------------------------------------------------------- MemorisingField


def segments_cross(x0: torch.Tensor, x1: torch.Tensor) -> int:
    """Number of pairs of 2-D training segments that intersect in space."""
    def orient(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor) -> float:
        return float((b[0] - a[0]) * (c[1] - a[1]) - (b[1] - a[1]) * (c[0] - a[0]))

    count = 0
    for i in range(x0.shape[0]):
        for j in range(i + 1, x0.shape[0]):
            p, q, r, s = x0[i], x1[i], x0[j], x1[j]
            if orient(p, q, r) * orient(p, q, s) < 0 and orient(r, s, p) * orient(r, s, q) < 0:
                count += 1
    return count


def test_memorising_field_has_zero_loss_on_crossing_lines(gen: torch.Generator) -> None:
    x0, x1 = shuffled_pairs(gen, 60)
    assert segments_cross(x0, x1) > 100  # the training lines do cross
    field = MemorisingField(x0, x1, chunk=16)
    idx = torch.randint(0, 60, (5000,), generator=gen)
    pairs = Pairs(x0[idx], x1[idx])
    t = torch.rand(5000, generator=gen, dtype=F64)
    det = Interpolant(0.0).sample(pairs, t)
    assert float(per_sample_loss(field, det).max()) < 1e-20
    # 180° rotation: every line passes through 0 at t = ½, yet the loss is 0 at (almost) every t
    rot = MemorisingField(x0, -x0)
    det_rot = Interpolant(0.0).path(x0, -x0, t[:60], torch.zeros_like(x0))
    assert float(per_sample_loss(rot, det_rot).max()) < 1e-20
    # noise moves points off their own line: some land nearer another line and the loss is positive
    noisy = Interpolant(0.05).sample(pairs, t, generator=gen)
    loss = per_sample_loss(field, noisy)
    assert float(loss.mean()) > 1e-3 and float((loss > 0).double().mean()) > 0.01
    # … and the noise-aware minimiser does better on the same noisy draws
    assert float(per_sample_loss(EmpiricalField(x0, x1, 0.05), noisy).mean()) < float(loss.mean())


@pytest.mark.parametrize("kind", ["shuffled", "rotation180"])
def test_euler_from_training_sources_reproduces_partners(gen: torch.Generator, kind: str) -> None:
    x0, x1 = shuffled_pairs(gen, 50)
    if kind == "rotation180":
        x1 = -x0  # all lines meet at 0 at t = ½
    field = MemorisingField(x0, x1, chunk=9)
    out = euler(field, x0.clone(), 101)  # odd grid: t = k/101 never equals ½
    assert float((out - x1).norm(dim=1).max()) < 1e-6
    if kind == "rotation180":
        # an even grid evaluates the field exactly at the crossing time, where it is ill-defined
        out_even = euler(field, x0.clone(), 100)
        assert float(((out_even - x1).norm(dim=1) < 1e-6).double().mean()) < 0.1
        # exactly at the meeting point every line is nearest: the documented tie-break picks the lowest index
        assert field.nearest_line(torch.zeros(3, 2, dtype=F64), 0.5).tolist() == [0, 0, 0]


def test_float32_inputs_and_scalar_time(gen: torch.Generator) -> None:
    x0, x1 = shuffled_pairs(gen, 10)
    field = EmpiricalField(x0, x1, 0.2)
    x = randn(gen, 4, 2)
    v32 = field(x.float(), 0.3)
    assert v32.dtype == torch.float32
    assert torch.allclose(v32.double(), field(x, torch.full((4,), 0.3, dtype=F64)), atol=1e-6)
    assert MemorisingField(x0, x1)(x.float(), 0.3).dtype == torch.float32


def test_bad_inputs(gen: torch.Generator) -> None:
    x0, x1 = shuffled_pairs(gen, 10)
    with pytest.raises(ShapeError, match="same shape"):
        EmpiricalField(x0, x1[:5], 0.1)
    with pytest.raises(ShapeError, match="flatten"):
        MemorisingField(x0.reshape(10, 1, 2, 1), x1.reshape(10, 1, 2, 1))
    with pytest.raises(ShapeError, match="at least one pair"):
        MemorisingField(x0[:0], x1[:0])
    bad = x0.clone()
    bad[0, 0] = float("inf")
    with pytest.raises(DataError, match="non-finite"):
        EmpiricalField(bad, x1, 0.1)
    with pytest.raises(ConfigError, match="sigma"):
        EmpiricalField(x0, x1, -0.1)
    with pytest.raises(ConfigError, match="noise"):
        EmpiricalField(x0, x1, 0.1, noise="pink")
    with pytest.raises(ConfigError, match="target"):
        EmpiricalField(x0, x1, 0.1, target="score")  # type: ignore[arg-type]
    field = EmpiricalField(x0, x1, 0.1)
    with pytest.raises(ShapeError, match=r"\(B, 2\)"):
        field(randn(gen, 4, 1, 2), 0.5)
    with pytest.raises(ShapeError, match="t must be"):
        field(randn(gen, 4, 2), torch.rand(3))
