"""flowvar.sampling: solver accuracy, grids, trajectories and the Counter Example 1 singularity."""

from __future__ import annotations

import math
import re

import pytest
import torch
from torch import Tensor, nn

from flowvar.errors import ConfigError, DataError, ShapeError, SolverError
from flowvar.models import CounterexampleField
from flowvar.sampling import FIXED_METHODS, ODESolution, integrate, integrate_chunked, time_grid, valid_methods

A = torch.tensor([[-0.5, 1.0], [-1.0, -0.5]], dtype=torch.float64)


def linear_field(x: Tensor, t: Tensor) -> Tensor:
    """dx/dt = A x; x(1) = exp(A) x0."""
    return x @ A.T


def linear_exact(x0: Tensor) -> Tensor:
    return x0 @ torch.linalg.matrix_exp(A).T


def time_field(x: Tensor, t: Tensor) -> Tensor:
    """dx/dt = (a + b t) x with a = −0.3, b = 1.2; x(1) = x0 exp(a + b/2). Exercises the stage times."""
    return (-0.3 + 1.2 * t)[:, None] * x


def time_exact(x0: Tensor) -> Tensor:
    return x0 * math.exp(-0.3 + 0.6)


@pytest.fixture
def x0(gen: torch.Generator) -> Tensor:
    return torch.randn(6, 2, generator=gen, dtype=torch.float64)


def test_time_grid_half_node_depends_on_parity() -> None:
    even, odd = time_grid(100), time_grid(101)
    assert even.shape == (101,) and odd.shape == (102,)
    assert even[0] == 0.0 and even[-1] == 1.0 and odd[-1] == 1.0
    assert bool((even == 0.5).any())
    assert not bool((odd == 0.5).any())
    assert float((odd - 0.5).abs().min()) == pytest.approx(0.5 / 101)
    g = time_grid(4, 1.0, 3.0, dtype=torch.float32)
    assert g.dtype == torch.float32 and torch.equal(g, torch.tensor([1.0, 1.5, 2.0, 2.5, 3.0]))


@pytest.mark.parametrize(("field", "exact"), [(linear_field, linear_exact), (time_field, time_exact)])
@pytest.mark.parametrize(("method", "order"), [("euler", 1), ("midpoint", 2), ("heun", 2), ("rk4", 4)])
def test_order_of_accuracy(method: str, order: int, field, exact, x0: Tensor) -> None:
    truth = exact(x0)
    errs = [float((integrate(field, x0, method=method, steps=n).x1 - truth).abs().max()) for n in (16, 32)]
    slope = math.log2(errs[0] / errs[1])
    assert abs(slope - order) < 0.25, f"{method}: observed order {slope:.3f}, expected {order}"


def test_dopri5_matches_exact(x0: Tensor) -> None:
    sol = integrate(linear_field, x0, method="dopri5", rtol=1e-9, atol=1e-11)
    assert isinstance(sol, ODESolution)
    assert torch.allclose(sol.x1, linear_exact(x0), atol=1e-8, rtol=0)
    assert sol.steps is None and sol.method == "dopri5"
    assert sol.nfe > 6 and sol.times is None and sol.trajectory is None
    loose = integrate(linear_field, x0, method="dopri5", rtol=1e-3, atol=1e-5)
    assert loose.nfe < sol.nfe  # the tolerances reach the solver
    assert float((loose.x1 - linear_exact(x0)).abs().max()) > float((sol.x1 - linear_exact(x0)).abs().max())


def test_other_torchdiffeq_methods(x0: Tensor) -> None:
    assert "bosh3" in valid_methods() and "heun3" in valid_methods() and "scipy_solver" not in valid_methods()
    sol = integrate(time_field, x0, method="bosh3", rtol=1e-8, atol=1e-10)
    assert torch.allclose(sol.x1, time_exact(x0), atol=1e-6)
    errs = [float((integrate(time_field, x0, method="heun3", steps=n).x1 - time_exact(x0)).abs().max())
            for n in (16, 32)]
    assert 2.6 < math.log2(errs[0] / errs[1]) < 3.4  # third order, stepping on our grid
    assert integrate(time_field, x0, method="heun3", steps=16).nfe == 3 * 16


@pytest.mark.parametrize("method", list(FIXED_METHODS))
def test_nfe_and_time_argument(method: str) -> None:
    seen: list[Tensor] = []

    def field(x: Tensor, t: Tensor) -> Tensor:
        seen.append(t)
        return -x

    x = torch.ones(3, 2, dtype=torch.float32)
    sol = integrate(field, x, method=method, steps=7)
    assert sol.nfe == 7 * FIXED_METHODS[method] == len(seen)
    assert sol.steps == 7 and sol.x1.dtype == torch.float32
    for t in seen:
        assert t.shape == (3,) and t.dtype == torch.float32 and bool((t == t[0]).all())
    assert float(seen[0][0]) == 0.0


def test_trajectory_shapes_and_save_every(gen: torch.Generator) -> None:
    x = torch.randn(4, 3, 5, generator=gen, dtype=torch.float64)  # image-like (B, *shape)
    sol = integrate(lambda y, t: -y, x, steps=10, return_trajectory=True, save_every=3)
    assert torch.allclose(sol.times, torch.tensor([0.0, 0.3, 0.6, 0.9, 1.0], dtype=torch.float64))
    assert sol.trajectory.shape == (5, 4, 3, 5)
    assert torch.equal(sol.trajectory[0], x) and torch.equal(sol.trajectory[-1], sol.x1)
    full = integrate(lambda y, t: -y, x, steps=10, return_trajectory=True)
    assert full.trajectory.shape == (11, 4, 3, 5)
    assert torch.equal(full.trajectory[3], sol.trajectory[1])
    ada = integrate(lambda y, t: -y, x, method="dopri5", steps=4, return_trajectory=True)
    assert ada.trajectory.shape == (5, 4, 3, 5) and ada.times.shape == (5,)
    assert torch.allclose(ada.trajectory[2], x * math.exp(-0.5), atol=1e-7)


def test_no_grad_by_default_and_grad_option() -> None:
    torch.manual_seed(0)
    lin = nn.Linear(2, 2)

    def field(x: Tensor, t: Tensor) -> Tensor:
        return lin(x)

    x = torch.randn(5, 2)
    assert not integrate(field, x, steps=4).x1.requires_grad
    sol = integrate(field, x, steps=4, grad=True)
    sol.x1.sum().backward()
    assert lin.weight.grad is not None and bool(lin.weight.grad.abs().sum() > 0)


@pytest.mark.parametrize("method", ["euler", "heun"])
def test_counterexample_odd_grid_reaches_rotation_partner(method: str, x0: Tensor) -> None:
    field = CounterexampleField(mu=5.0, dim=2)
    sol = integrate(field, x0, method=method, steps=101)
    assert torch.allclose(sol.x1, -x0 + 5.0, atol=1e-10, rtol=0)
    # far from the OT / translation target x0 + μ: the gap is 2‖x0‖
    assert bool(((sol.x1 - (x0 + 5.0)).norm(dim=1) > 1.9 * x0.norm(dim=1)).all())


@pytest.mark.parametrize("method", ["euler", "heun"])
def test_counterexample_even_grid_fails_at_half(method: str, x0: Tensor) -> None:
    with pytest.raises(SolverError, match=r"t = 0\.5") as info:
        integrate(CounterexampleField(mu=5.0, dim=2), x0, method=method, steps=100)
    assert "steps=101" in str(info.value)


@pytest.mark.parametrize("steps", [100, 101])
@pytest.mark.parametrize("method", ["midpoint", "rk4"])
def test_counterexample_half_steps_always_hit_half(method: str, steps: int, x0: Tensor) -> None:
    with pytest.raises(SolverError, match=r"t = 0\.5.*half-steps"):
        integrate(CounterexampleField(mu=5.0, dim=2), x0, method=method, steps=steps)


def test_counterexample_explicit_grid(x0: Tensor) -> None:
    field = CounterexampleField(mu=5.0, dim=2)
    grid = torch.linspace(0, 1, 41, dtype=torch.float64) ** 1.3  # non-uniform, 0.5 not a node
    assert not bool((grid == 0.5).any())
    sol = integrate(field, x0, grid=grid, return_trajectory=True)
    assert sol.steps == 40 and torch.equal(sol.times, grid)
    assert torch.allclose(sol.x1, -x0 + 5.0, atol=1e-10, rtol=0)
    with pytest.raises(SolverError, match=r"t = 0\.5.*explicit `grid`"):
        integrate(field, x0, grid=torch.tensor([0.0, 0.25, 0.5, 1.0], dtype=torch.float64))


def test_state_overflow_is_reported() -> None:
    with pytest.raises(SolverError, match=r"overflowed.*every field value was finite"):
        integrate(lambda x, t: torch.full_like(x, 1e308), torch.zeros(2, 1, dtype=torch.float64),
                  steps=1, t1=4.0)


def test_adaptive_non_finite_field_names_time(x0: Tensor) -> None:
    def field(x: Tensor, t: Tensor) -> Tensor:
        return torch.where(t[:, None] > 0.3, x * math.nan, x)  # NaN from t = 0.3 on

    with pytest.raises(SolverError, match=r"t = 0\.[3-9].*method='dopri5'"):
        integrate(field, x0, method="dopri5")


def test_bad_inputs(x0: Tensor) -> None:
    with pytest.raises(ConfigError, match=r"unknown ODE method 'rk45'.*'euler'.*'dopri5'"):
        integrate(linear_field, x0, method="rk45")
    for bad in (0, -3, 2.5, True):
        with pytest.raises(ConfigError, match="steps must be a positive integer"):
            integrate(linear_field, x0, steps=bad)
    with pytest.raises(ConfigError, match=r"strictly increasing.*grid\[1\]"):
        integrate(linear_field, x0, grid=torch.tensor([0.0, 0.5, 0.5, 1.0]))
    with pytest.raises(ConfigError, match="1-D"):
        integrate(linear_field, x0, grid=torch.zeros(2, 2))
    with pytest.raises(ConfigError, match="at least 2"):
        integrate(linear_field, x0, grid=torch.tensor([0.0]))
    with pytest.raises(ConfigError, match="t0 < t1"):
        integrate(linear_field, x0, t0=1.0, t1=0.0)
    with pytest.raises(ConfigError, match="save_every"):
        integrate(linear_field, x0, return_trajectory=True, save_every=0)
    with pytest.raises(ConfigError, match="rtol"):
        integrate(linear_field, x0, method="dopri5", rtol=-1.0)
    with pytest.raises(DataError, match="x0 holds 1 non-finite"):
        integrate(linear_field, torch.tensor([[0.0, math.inf]], dtype=torch.float64))
    with pytest.raises(ShapeError, match="floating-point"):
        integrate(linear_field, torch.zeros(3, 2, dtype=torch.long))
    with pytest.raises(ShapeError, match="same shape as x"):
        integrate(lambda x, t: x[:, :1], x0)
    with pytest.raises(ConfigError, match="torchdiffeq rejected options"):
        integrate(linear_field, x0, method="dopri5", options={"no_such_option": 1})


def test_integrate_chunked_equals_one_call() -> None:
    """Blocks of rows (the last one shorter) give the same end states as one call: rows are independent ODEs."""
    x0 = torch.randn(11, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    whole = integrate(linear_field, x0, method="rk4", steps=20).x1
    for rows in (1, 4, 11, 50):
        assert torch.equal(integrate_chunked(linear_field, x0, "rk4", 20, rows=rows), whole)
    images = torch.randn(5, 1, 2, 2, generator=torch.Generator().manual_seed(1))
    assert torch.equal(integrate_chunked(lambda x, t: -x, images, steps=8, rows=2, device="cpu"),
                       integrate(lambda x, t: -x, images, steps=8).x1)
    with pytest.raises(ShapeError, match="B >= 1"):
        integrate_chunked(linear_field, torch.zeros(0, 2))
    with pytest.raises(ConfigError, match="positive integer"):
        integrate_chunked(linear_field, x0, rows=0)


@pytest.mark.parametrize("method", list(FIXED_METHODS))
def test_options_for_flowvar_fixed_grid_methods_are_refused(x0: Tensor, method: str) -> None:
    # used to be ignored silently: the caller believed e.g. step_size took effect
    with pytest.raises(ConfigError, match=rf"apply to torchdiffeq solvers only; method='{method}'.*'euler'.*'rk4'"):
        integrate(linear_field, x0, method=method, options={"step_size": 0.01})
    integrate(linear_field, x0, method=method, steps=4, options={})  # nothing to ignore: accepted
    with pytest.raises(ConfigError, match="options must be a dict"):
        integrate(linear_field, x0, method="dopri5", options=[("step_size", 0.1)])  # type: ignore[arg-type]


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("method", ["dopri5", "bosh3", "adaptive_heun"])
def test_half_precision_is_refused_for_adaptive_solvers(method: str, dtype: torch.dtype) -> None:
    # used to fail as SolverError "... at t = nan ... singular", blaming the field
    with pytest.raises(ConfigError, match=rf"adaptive solvers \(method='{method}'\) need x0 in float32 or float64.*"
                                          rf"x0.float\(\)"):
        integrate(lambda x, t: -x, torch.ones(4, 2, dtype=dtype), method=method)


def test_half_precision_still_runs_on_fixed_grids() -> None:
    for method in ("euler", "heun3"):
        out = integrate(lambda x, t: -x, torch.ones(4, 2, dtype=torch.float16), method=method, steps=8).x1
        assert out.dtype == torch.float16 and bool(torch.isfinite(out).all())


def test_one_dimensional_x0_is_refused_as_x0_not_blamed_on_the_field() -> None:
    # a (2,) x0 was read as 2 scalar points and the error said "the vector field returned (2, 2) for x of shape (2,)"
    with pytest.raises(ShapeError, match=r"x0 must be \(B, d\).*shape \(2,\); reshape one point to \(1, 2\) with "
                                         r"x0\[None\] or 2 scalar points to \(2, 1\)"):
        integrate(lambda x, t: torch.zeros(2, 2), torch.zeros(2))
    with pytest.raises(ShapeError, match=r"x0 must be \(B, d\)"):
        integrate_chunked(linear_field, torch.zeros(3, dtype=torch.float64))
    assert integrate(lambda x, t: -x, torch.ones(3, 1), steps=2).x1.shape == (3, 1)  # B scalar points as (B, 1)


def test_a_user_set_step_limit_is_named_not_blamed_on_the_field(x0: Tensor) -> None:
    with pytest.raises(SolverError, match=r"reached the step limit options\['max_num_steps'\]=3 that was passed") \
            as caught:
        integrate(linear_field, x0, method="dopri5", options={"max_num_steps": 3})
    assert "singular" not in str(caught.value)
    assert integrate(linear_field, x0, method="dopri5", options={"max_num_steps": 10_000}).x1.shape == x0.shape


class _BlowsUpAt(torch.nn.Module):
    """A field that returns NaN at one time only (a network that overflows there), finite elsewhere."""

    def __init__(self, t_bad: float) -> None:
        super().__init__()
        self.t_bad = t_bad

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        t = torch.as_tensor(t, dtype=x.dtype).reshape(-1, 1)
        return torch.where((t - self.t_bad).abs() < 1e-9, torch.full_like(x, float("nan")), torch.zeros_like(x))


@pytest.mark.parametrize("method", ["euler", "rk4"])
def test_a_failure_away_from_half_gets_no_odd_step_count_hint(method: str) -> None:
    """The "odd step count skips t = 0.5" advice is for t = ½; at t = 0.98 it would point the wrong way."""
    x = torch.randn(3, 2, dtype=torch.float64)
    with pytest.raises(SolverError) as info:
        integrate(_BlowsUpAt(0.98), x, method=method, steps=100)
    text = str(info.value)
    assert "t = 0.98" in text and "skips t = 0.5" not in text and "meets t = 0.5" not in text, text
    if method == "euler":
        alt = int(text.split("e.g. steps=")[1].split(" ")[0])
        assert alt != 100 and f"(--steps {alt})" in text and "its nodes miss t = 0.98" in text
        assert integrate(_BlowsUpAt(0.98), x, method=method, steps=alt).x1.isfinite().all()  # the hint works


# ---------------------------------------------------------------- half precision: the grid is not rounded to x0's dtype


HALF = [torch.bfloat16, torch.float16]


@pytest.mark.parametrize("dtype", HALF)
def test_half_precision_keeps_every_step_of_the_grid(dtype: torch.dtype) -> None:
    """coreA finding 2: the uniform grid was cast to x0's dtype, so bfloat16 merged 1002 nodes of steps=1001 into 507
    (half the steps had h = 0) and float16 those of steps=10001 into 4323. The grid and the step sizes stay in
    float32; only the t handed to the field is in x0's dtype (what a half-precision model takes)."""
    seen: list[float] = []

    def field(x: Tensor, t: Tensor) -> Tensor:
        assert t.dtype == dtype
        seen.append(float(t[0]))
        return -x

    steps = 1001 if dtype == torch.bfloat16 else 10001
    assert time_grid(steps, dtype=dtype).unique().numel() < steps  # the cast grid collapses ...
    sol = integrate(field, torch.zeros(2, 1, dtype=dtype), steps=steps, return_trajectory=True, save_every=1)
    assert sol.nfe == steps == len(seen)
    assert sol.times is not None and sol.times.dtype == torch.float32  # ... the one integrated does not
    assert torch.equal(sol.times, time_grid(steps, dtype=torch.float32))
    assert bool((sol.times[1:] > sol.times[:-1]).all())
    assert seen == [float(v) for v in time_grid(steps, dtype=torch.float32)[:-1].to(dtype)]


@pytest.mark.parametrize("dtype", HALF)
def test_half_precision_advice_at_one_half_names_a_step_count_that_works(dtype: torch.dtype) -> None:
    """An odd step count keeps every node off ½ in float32/float64, but the t a half-precision field sees is rounded:
    from 512 steps in bfloat16 (2048 in float16) the node next to ½ rounds onto it. The SolverError said 'steps=1003
    (an odd step count skips t = 0.5)', which hit ½ again; its count now works in x0's dtype."""
    field = CounterexampleField(mu=5.0, dim=2, dtype=dtype)
    x0 = torch.tensor([[1.0, 0.5], [-0.2, 2.0]], dtype=dtype)
    steps = 1001 if dtype == torch.bfloat16 else 10001
    with pytest.raises(SolverError, match=r"at t = 0\.5 \(step \d+ of " + str(steps)) as info:
        integrate(field, x0, method="euler", steps=steps)
    text = str(info.value)
    assert "an odd step count on [0, 1] skips t = 0.5" not in text, text
    alt = int(text.split("e.g. steps=")[1].split(" ")[0])
    assert f"(--steps {alt}) instead of {steps}" in text and f"rounded to x0's {dtype}" in text, text
    assert "or integrate in float32" in text, text
    for method in ("euler", "heun"):
        # the advice works in this dtype: no node on ½ (how near the end states come to −x0 + μ is another matter:
        # x − tμ cancels near ½, and 1/(1 − 2t) amplifies what half precision leaves of it)
        assert bool(torch.isfinite(integrate(field, x0, method=method, steps=alt).x1).all())
    # the midpoint/rk4 advice, 'euler or heun with an odd step count (e.g. steps=101)', holds in this dtype too
    with pytest.raises(SolverError, match=r"e\.g\. steps=101"):
        integrate(field, x0, method="rk4", steps=101)
    assert bool(torch.isfinite(integrate(field, x0, method="euler", steps=101).x1).all())


def test_a_grid_finer_than_its_working_precision_is_refused() -> None:
    """The times are float32 for half-precision x0 (and x0's dtype otherwise): a uniform or explicit grid whose nodes
    that precision cannot tell apart would take steps of h = 0, and is refused naming the precision."""
    with pytest.raises(ConfigError, match=r"steps=8 on \[100000000, 100000001\] is finer than torch\.float32 "
                                          r"resolves: its nodes repeat"):
        integrate(lambda x, t: -x, torch.ones(2, 1), steps=8, t0=1e8, t1=1e8 + 1)
    assert integrate(lambda x, t: -x, torch.ones(2, 1, dtype=torch.float64), steps=8, t0=1e8, t1=1e8 + 1).nfe == 8
    close = torch.tensor([0.0, 0.5, 0.5 + 1e-9, 1.0], dtype=torch.float64)
    with pytest.raises(ConfigError, match=r"grid is not strictly increasing in torch\.float32"):
        integrate(lambda x, t: -x, torch.ones(2, 1), grid=close)
    # closer than float16 resolves but not float32: accepted, each step its own h
    sol = integrate(lambda x, t: torch.ones_like(x), torch.zeros(2, 1, dtype=torch.float16),
                    grid=torch.tensor([0.0, 0.25, 0.25001, 1.0]))
    assert sol.nfe == 3 and float(sol.x1[0, 0]) == 1.0


def test_integrate_chunked_refuses_adaptive_methods_and_keeps_fixed_grid_ones() -> None:
    """dopri5's step sizes come from one error norm over the whole block, so a row's end state depended on ``rows``
    (sampR 2: ~1e-6 on sin(3x)·cos t); fixed-grid methods, torchdiffeq's included, stay bit-identical per row."""
    field = lambda x, t: torch.sin(3 * x) * torch.cos(t)[:, None]  # noqa: E731 — rows independent, non-linear
    x0 = torch.randn(64, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    whole, alone = integrate(field, x0, method="dopri5").x1, integrate(field, x0[:1], method="dopri5").x1
    assert not torch.equal(whole[:1], alone)  # the reason: an adaptive row's answer depends on its batch
    for method in ("dopri5", "bosh3", "adaptive_heun"):
        with pytest.raises(ConfigError, match=rf"fixed-grid methods only, got the adaptive method='{method}'.*"
                                              rf"call integrate\(field, x0, method='{method}'\) on the whole batch"):
            integrate_chunked(field, x0, method, rows=8)
    for method in ("heun3", "rk4"):  # torchdiffeq's fixed-grid heun3, flowvar's rk4
        whole = integrate(field, x0, method=method, steps=12).x1
        assert all(torch.equal(integrate_chunked(field, x0, method, 12, rows=r), whole) for r in (1, 7, 64))


@pytest.mark.parametrize(("method", "steps", "advice"), [
    ("rk4", 11, r"rk4 also evaluates at the half-steps t_k \+ h/2, so every uniform grid on \[0, 1\] meets t = 0.5; "
                r"use method='euler' or 'heun' with an odd step count \(e.g. steps=101\)"),
    ("euler", 10, r"e.g. steps=11 \(--steps 11\) instead of 10 \(an odd step count on \[0, 1\] skips t = 0.5\)"),
])
def test_a_field_that_raises_at_its_singular_time_gets_the_grid_advice(method: str, steps: int, advice: str) -> None:
    """Counter Example 1's Gaussian field *raises* SolverError at t = ½ (it cannot return NaN from a singular solve);
    the sampler's advice on which grid avoids ½ used to be lost (sampR 3): the field's own message said only
    "choose a time grid that avoids it", and a user trying another odd count with rk4 failed again."""
    from flowvar.gaussian import counterexample_problem

    problem, coupling = counterexample_problem()
    field = problem.pair_optimal_field(coupling)
    x0 = torch.randn(8, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    with pytest.raises(SolverError) as caught:
        integrate(field, x0, method=method, steps=steps)
    text = str(caught.value)
    # the field's own text first (rotation_pairing records the part before its first ';'), then where and the advice
    assert text.startswith("I + tΘ is singular at t = [0.5")
    assert f"raised this at t = 0.5, step 6 of {steps}, while integrating with method='{method}'" in text
    assert re.search(advice, text) and "\n" not in text
    # the torchdiffeq path too (its fixed-grid heun3 with a node at ½)
    with pytest.raises(SolverError, match=r"^I \+ tΘ is singular.*raised this at t = 0.5, evaluation \d+, .*"
                                          r"method='heun3'\)\. Use a fixed-grid method with a grid that avoids "
                                          r"t = 0.5 \(e.g. method='euler', steps=101\)"):
        integrate(field, x0, method="heun3", steps=10)


class _DecayField(nn.Module):
    """x' = −x, exact flow x0·exp(−(t1 − t0)); records every time it is called at."""

    def __init__(self) -> None:
        super().__init__()
        self.times: list[float] = []

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        self.times.append(float(t.reshape(-1)[0]))
        return -x


@pytest.mark.parametrize(("method", "rtol"), [("dopri5", 1e-9), ("dopri8", 1e-9), ("bosh3", 1e-9)])
def test_adaptive_methods_call_the_field_only_inside_the_interval_and_meet_their_tolerance(method: str,
                                                                                          rtol: float) -> None:
    """torchdiffeq's adaptive steps crossed t1 and interpolated back: the field was called at t up to 1.59 (a learned
    model extrapolating in time) and dopri8 at rtol = 1e-9 missed by 1e-6 (review sampR2 1)."""
    x0 = torch.linspace(-2.0, 2.0, 8, dtype=torch.float64).reshape(4, 2)
    field = _DecayField()
    out = integrate(field, x0, method=method, rtol=rtol, atol=1e-12)
    assert max(field.times) <= 1.0 and min(field.times) >= 0.0
    assert float((out.x1 - x0 * math.exp(-1.0)).abs().max()) < 20 * rtol
    options = {"max_num_steps": 10_000}
    integrate(_DecayField(), x0, method=method, options=options)
    assert options == {"max_num_steps": 10_000}  # the caller's dict is not changed


def test_explicit_adams_converges_as_the_grid_is_refined() -> None:
    """torchdiffeq's default order-12 Adams–Bashforth diverged as the grid was refined (error 24 at 64 steps, 101
    at 128 on a linear field); order 4 converges."""
    x0 = torch.ones(3, 2, dtype=torch.float64)
    errors = [float((integrate(_DecayField(), x0, method="explicit_adams", steps=n).x1 - math.exp(-1.0)).abs().max())
              for n in (32, 64, 128)]
    assert errors[0] > errors[1] > errors[2] and errors[2] < 1e-6, errors


def test_a_backwards_interval_is_told_the_reversed_fields_interval() -> None:
    with pytest.raises(ConfigError, match=r"on \[1 - t0, 1 - t1\] = \[0\.1, 0\.7\]"):
        integrate(_DecayField(), torch.zeros(2, 2), t0=0.9, t1=0.3, method="euler", steps=4)
    with pytest.raises(ConfigError, match=r"is empty"):
        integrate(_DecayField(), torch.zeros(2, 2), t0=0.5, t1=0.5, method="euler", steps=4)
