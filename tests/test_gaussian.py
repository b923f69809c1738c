"""Closed-form Gaussian theory: Lemma 1 fields, singular times, Counter Example 1, per-sample gradients."""

from __future__ import annotations

import math

import numpy as np
import ot
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from flowvar.couplings import RotatedOTCoupling
from flowvar.errors import ConfigError, DataError, ShapeError, SolverError
from flowvar.gaussian import (
    GaussianProblem,
    block_rotation_matrix,
    counterexample_problem,
    gaussian_ot_matrix,
    gaussian_w2_squared,
    meeting_point,
    paired_planes,
    parametric_per_sample_grads,
    parametric_per_sample_loss,
    parametric_residual_rounding_bound,
    parametric_residuals,
    psd_powers,
    rotation_matrix,
    singular_times,
    sqrtm_psd,
)
from flowvar.interpolants import Interpolant
from flowvar.loss import per_sample_loss
from flowvar.models import CounterexampleField, GaussianParametricField

F64 = torch.float64
ANGLES = [30.0, 60.0, 90.0, 120.0]


def random_spd(d: int, seed: int, lo: float = 0.3, hi: float = 3.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    Q, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=F64))
    evals = lo + (hi - lo) * torch.rand(d, generator=g, dtype=F64)
    M = (Q * evals) @ Q.T
    return (M + M.T) / 2


def random_problem(d: int, seed: int) -> GaussianProblem:
    g = torch.Generator().manual_seed(seed + 1000)
    return GaussianProblem(3 * torch.randn(d, generator=g, dtype=F64), random_spd(d, seed))


def path_batch(problem: GaussianProblem, rotation: torch.Tensor | None, sigma: float, n: int,
               gen: torch.Generator):
    """A path sample of n pairs of T_R with t ~ U(0, 1) plus the endpoints t = 0 and t = 1."""
    coupling = RotatedOTCoupling(problem, rotation=rotation if rotation is not None else torch.eye(problem.dim))
    pairs = coupling.sample(n, gen)
    t = torch.rand(n, generator=gen, dtype=F64)
    t[0], t[1] = 0.0, 1.0
    return Interpolant(sigma).sample(pairs, t, gen)


# ---------------------------------------------------------------------------------------------- OT map


@pytest.mark.parametrize("d", [2, 5])
def test_ot_map_matches_pot_bures_wasserstein(d: int, gen: torch.Generator) -> None:
    problem = random_problem(d, seed=d)
    A, b = ot.gaussian.bures_wasserstein_mapping(np.zeros(d), problem.mean.numpy(), np.eye(d), problem.cov.numpy())
    A, b = torch.as_tensor(A), torch.as_tensor(b).reshape(d)
    torch.testing.assert_close(problem.cov_sqrt, A, rtol=1e-9, atol=1e-10)
    torch.testing.assert_close(b, problem.mean, rtol=0, atol=1e-12)
    x0 = torch.randn(64, d, generator=gen, dtype=F64)
    torch.testing.assert_close(problem.ot_map(x0), x0 @ A.T + b, rtol=1e-9, atol=1e-9)
    theta, Theta = problem.field_parameters()
    torch.testing.assert_close(Theta, A - torch.eye(d, dtype=F64), rtol=1e-9, atol=1e-10)
    torch.testing.assert_close(theta, b, rtol=0, atol=1e-12)


@pytest.mark.parametrize("d", [1, 2, 5])
def test_gaussian_ot_matrix_matches_pot_bures_wasserstein(d: int) -> None:
    cov0, cov1 = random_spd(d, seed=d), random_spd(d, seed=d + 50)
    A = gaussian_ot_matrix(cov0, cov1)
    pot_A, _ = ot.gaussian.bures_wasserstein_mapping(np.zeros(d), np.zeros(d), cov0.numpy(), cov1.numpy())
    torch.testing.assert_close(A, torch.as_tensor(pot_A), rtol=1e-9, atol=1e-10)
    torch.testing.assert_close(A @ cov0 @ A, cov1, rtol=1e-9, atol=1e-10)  # pushes N(·, Σ0) to N(·, Σ1)
    torch.testing.assert_close(A, A.T, rtol=0, atol=0)
    assert float(torch.linalg.eigvalsh(A).min()) > 0
    problem = GaussianProblem(torch.zeros(d, dtype=F64), cov1)  # from N(0, I): A = Σ1^{1/2}
    torch.testing.assert_close(gaussian_ot_matrix(torch.eye(d, dtype=F64), cov1), problem.cov_sqrt,
                               rtol=1e-9, atol=1e-10)


def test_psd_powers() -> None:
    M = random_spd(4, seed=3)
    half, inv_half, inv = psd_powers(M, (0.5, -0.5, -1.0))
    torch.testing.assert_close(half @ half, M, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(half @ inv_half, torch.eye(4, dtype=F64), rtol=0, atol=1e-12)
    torch.testing.assert_close(inv, torch.linalg.inv(M), rtol=1e-10, atol=1e-12)
    singular = torch.diag(torch.tensor([4.0, 1.0, 0.0], dtype=F64))
    (inv_half,) = psd_powers(singular, (-0.5,), floor=1e-4)  # the zero eigenvalue is floored at 4e-4
    torch.testing.assert_close(inv_half.diagonal(), torch.tensor([0.5, 1.0, 50.0], dtype=F64))
    with pytest.raises(ConfigError, match="nonzero positive semidefinite"):
        psd_powers(torch.zeros(2, 2, dtype=F64), (0.5,))


# ---------------------------------------------------------------------------------------------- Lemma 1


@pytest.mark.parametrize("problem", [
    GaussianProblem(torch.tensor([1.0, -2.0]), torch.diag(torch.tensor([4.0, 0.25]))),
    random_problem(2, seed=7),
    random_problem(5, seed=8),
], ids=["diag(4,.25)", "spd-2d", "spd-5d"])
def test_ot_field_is_exact_along_ot_lines(problem: GaussianProblem, gen: torch.Generator) -> None:
    field = problem.ot_field()
    assert singular_times(field.Theta) == []  # M ≻ 0: (1 − t)I + tM^{1/2} is never singular
    path = path_batch(problem, None, 0.0, 256, gen)
    v = field(path.xt, path.t)
    torch.testing.assert_close(v, path.x1 - path.x0, rtol=0, atol=1e-10)
    assert float(per_sample_loss(field, path).max()) < 1e-20


@pytest.mark.parametrize("angle", ANGLES)
@pytest.mark.parametrize("cov", [torch.eye(2), torch.diag(torch.tensor([4.0, 0.25]))], ids=["I", "diag(4,.25)"])
def test_pair_optimal_field_is_exact_along_rotated_lines(angle: float, cov: torch.Tensor,
                                                         gen: torch.Generator) -> None:
    problem = GaussianProblem(torch.tensor([5.0, 5.0]), cov)
    R = rotation_matrix(angle)
    field = problem.pair_optimal_field(R)
    assert singular_times(field.Theta) == []  # complex eigenvalues of M^{1/2}R: the lines never cross
    path = path_batch(problem, R, 0.0, 256, gen)
    torch.testing.assert_close(field(path.xt, path.t), path.x1 - path.x0, rtol=0, atol=1e-10)
    # the OT field is *not* consistent with a rotated coupling: it has a clearly nonzero loss there
    assert float(per_sample_loss(problem.ot_field(), path).mean()) > 1e-2


def test_pair_optimal_field_with_plane_rotation_in_3d(gen: torch.Generator) -> None:
    problem = GaussianProblem.isotropic(3, mean=2.0)
    R = rotation_matrix(120.0, dim=3, plane=(0, 2))
    path = path_batch(problem, R, 0.0, 128, gen)
    torch.testing.assert_close(problem.pair_optimal_field(R)(path.xt, path.t), path.x1 - path.x0,
                               rtol=0, atol=1e-10)


def test_field_options_trainable_and_dtype() -> None:
    problem = GaussianProblem(torch.tensor([1.0, 2.0]), torch.diag(torch.tensor([4.0, 0.25])))
    frozen, trainable = problem.ot_field(), problem.ot_field(trainable=True)
    assert isinstance(frozen, GaussianParametricField)
    assert not frozen.theta.requires_grad and not frozen.Theta.requires_grad
    assert trainable.theta.requires_grad and trainable.Theta.requires_grad
    torch.testing.assert_close(frozen.Theta.detach(), torch.diag(torch.tensor([1.0, -0.5], dtype=F64)))
    torch.testing.assert_close(frozen.theta.detach(), torch.tensor([1.0, 2.0], dtype=F64))
    assert problem.ot_field(dtype=torch.float32).Theta.dtype == torch.float32


def test_180_rotation_field_is_singular_exactly_at_half(gen: torch.Generator) -> None:
    problem, R = counterexample_problem(mu=5.0, dim=2)
    torch.testing.assert_close(R, rotation_matrix(180.0), rtol=0, atol=0)
    field = problem.pair_optimal_field(R)
    assert torch.equal(field.Theta.detach(), -2 * torch.eye(2, dtype=F64))
    x = torch.randn(4, 2, generator=gen, dtype=F64)
    with pytest.raises(SolverError, match=r"singular at t = \[0\.5"):
        field(x, 0.5)
    # off t = ½ it is the exact conditional-expectation field of Counter Example 1
    t = torch.tensor([0.1, 0.3, 0.7, 0.9], dtype=F64)
    torch.testing.assert_close(field(x, t), CounterexampleField(5.0, 2)(x, t), rtol=1e-12, atol=1e-12)
    path = path_batch(problem, R, 0.0, 64, gen)
    torch.testing.assert_close(field(path.xt, path.t), path.x1 - path.x0, rtol=0, atol=1e-10)


# ---------------------------------------------------------------------------------------------- Counter Example 1


def test_counterexample_meeting_point(gen: torch.Generator) -> None:
    problem, R = counterexample_problem(mu=5.0)
    assert torch.equal(problem.mean, torch.tensor([5.0, 5.0], dtype=F64))
    met = meeting_point(problem, R)
    assert met is not None
    t_star, point = met
    assert t_star == 0.5
    assert torch.equal(point, torch.tensor([2.5, 2.5], dtype=F64))
    x0 = torch.randn(100, 2, generator=gen, dtype=F64)
    x1 = problem.ot_map(x0, R)
    torch.testing.assert_close(x1, -x0 + 5.0, rtol=0, atol=0)
    xt = Interpolant(0.0).mean(x0, x1, torch.full((100,), t_star, dtype=F64))
    torch.testing.assert_close(xt, point.expand(100, 2), rtol=0, atol=1e-14)


def test_meeting_point_none_when_lines_do_not_all_meet() -> None:
    problem = GaussianProblem.isotropic(2, mean=5.0)
    assert meeting_point(problem) is None
    assert meeting_point(problem, rotation_matrix(120.0)) is None
    assert meeting_point(problem, rotation_matrix(179.0)) is None
    # 180° with a non-isotropic M: M^{1/2}R − I is not a multiple of I, lines cross but not in one point
    aniso = GaussianProblem(torch.zeros(2), torch.diag(torch.tensor([4.0, 0.25])))
    assert meeting_point(aniso, rotation_matrix(180.0)) is None
    assert singular_times(aniso.field_parameters(rotation_matrix(180.0))[1]) == pytest.approx([1 / 3, 2 / 3])


def test_counterexample_problem_vector_mu_and_higher_dim() -> None:
    problem, R = counterexample_problem(mu=torch.tensor([1.0, 2.0, 3.0]), dim=3)
    assert torch.equal(R, -torch.eye(3, dtype=F64))
    met = meeting_point(problem, R)
    assert met is not None and met[0] == 0.5
    assert torch.equal(met[1], torch.tensor([0.5, 1.0, 1.5], dtype=F64))
    with pytest.raises(ShapeError, match=r"mu must be a scalar or a \(2,\) vector"):
        counterexample_problem(mu=torch.tensor([1.0, 2.0, 3.0]), dim=2)


# ---------------------------------------------------------------------------------------------- singular_times


def test_singular_times_known_cases() -> None:
    eye = torch.eye(2)
    assert singular_times(rotation_matrix(180.0) - eye) == [0.5]  # exactly ½, not 0.5 ± ulp
    assert singular_times(rotation_matrix(120.0) - eye) == []
    assert singular_times(torch.diag(torch.tensor([-4.0, 3.0]))) == [0.25]
    assert singular_times(torch.diag(torch.tensor([-4.0, -4.0, 2.0]))) == [0.25]  # deduplicated
    assert singular_times(torch.diag(torch.tensor([-0.5, -4.0])), hi=3.0) == [0.25, 2.0]  # sorted
    assert singular_times(torch.diag(torch.tensor([-0.5, 2.0])), lo=-1.0) == [-0.5]
    assert singular_times(torch.diag(torch.tensor([-0.5, -4.0]))) == [0.25]  # t = 2 is outside [0, 1]
    assert singular_times(torch.zeros(3, 3)) == []
    assert singular_times(torch.diag(torch.tensor([-1.0]))) == [1.0]  # the closed end of [0, 1]


def test_singular_times_defective_eigenvalue_counts_as_real() -> None:
    # a Jordan block with eigenvalue −2 in a rotated basis: rounding makes it a complex pair with a
    # ~1e-8 imaginary part, which the documented tolerance still treats as the real double root t = ½
    Q = rotation_matrix(37.0)
    Theta = Q @ torch.tensor([[-2.0, 5.0], [0.0, -2.0]], dtype=F64) @ Q.T
    times = singular_times(Theta)
    assert len(times) == 1 and times[0] == pytest.approx(0.5, abs=1e-7)
    assert float(torch.linalg.svdvals(torch.eye(2, dtype=F64) + times[0] * Theta).min()) < 1e-6
    # two real eigenvalues closer than tol (relative) are one time, reported as their mean
    close = torch.diag(torch.tensor([-2.0, -2.0 * (1 + 1e-9)], dtype=F64))
    assert singular_times(close) == [pytest.approx((0.5 + 0.5 / (1 + 1e-9)) / 2, rel=1e-15)]
    assert len(singular_times(close, tol=0.0)) == 2


def test_singular_times_is_scale_safe() -> None:
    tiny = torch.full((3, 3), 3.9e-285, dtype=F64)  # found by hypothesis: LAPACK failed on the raw matrix
    assert singular_times(tiny) == []
    assert singular_times(tiny, hi=1e290) == []  # eigenvalues 0, 0 and +1.2e-284: no positive time
    assert singular_times(-tiny, hi=1e290) == [pytest.approx(1 / (3 * 3.9e-285), rel=1e-12)]
    assert singular_times(torch.diag(torch.tensor([-4.0, -5.0, 7e300], dtype=F64))) == [0.2, 0.25]
    lopsided = torch.tensor([[-4.0, 1e-290], [0.0, 3e-3]], dtype=F64)  # non-symmetric: the eigvals branch
    assert singular_times(lopsided) == [0.25]


@settings(max_examples=150, deadline=None)
@given(arrays(np.float64, st.tuples(st.shared(st.integers(1, 4), key="d"), st.shared(st.integers(1, 4), key="d")),
              elements=st.floats(-4.0, 4.0, allow_nan=False, allow_infinity=False)))
def test_singular_times_property(theta_np: np.ndarray) -> None:
    Theta = torch.as_tensor(theta_np)
    d = Theta.shape[0]
    norm = float(torch.linalg.matrix_norm(Theta, ord=2))
    eye = torch.eye(d, dtype=F64)
    times = singular_times(Theta)
    assert times == sorted(times) and len(set(times)) == len(times)
    assert all(0.0 <= t <= 1.0 for t in times)
    for t in times:  # I + tΘ is (numerically) singular at each returned time, relative to its scale
        assert float(torch.linalg.svdvals(eye + t * Theta).min()) <= 1e-6 * (1 + t * norm)
    grid = torch.linspace(0, 1, 2001, dtype=F64)
    det = torch.linalg.det(eye + grid[:, None, None] * Theta)
    floor = 1e-9 * (1 + grid * norm) ** d  # below this the sign of det is rounding noise
    solid = det.abs() > floor
    for k in torch.nonzero(solid[:-1] & solid[1:] & (det[:-1].sign() != det[1:].sign())).flatten().tolist():
        lo, hi = float(grid[k]), float(grid[k + 1])
        assert any(lo - 1e-9 <= t <= hi + 1e-9 for t in times), f"det changes sign in [{lo}, {hi}], times={times}"


def test_singular_times_bad_input() -> None:
    with pytest.raises(ShapeError, match=r"square \(d, d\) matrix"):
        singular_times(torch.zeros(2, 3))
    with pytest.raises(ConfigError, match="lo <= hi"):
        singular_times(torch.zeros(2, 2), lo=1.0, hi=0.0)


# ---------------------------------------------------------------------------------------------- per-sample gradients


def perturbed_field(problem: GaussianProblem, R: torch.Tensor, seed: int) -> GaussianParametricField:
    g = torch.Generator().manual_seed(seed)
    field = problem.pair_optimal_field(R, trainable=True)
    with torch.no_grad():
        field.theta.add_(0.2 * torch.randn(problem.dim, generator=g, dtype=F64))
        field.Theta.add_(0.1 * torch.randn(problem.dim, problem.dim, generator=g, dtype=F64))
    return field


@pytest.fixture
def noisy_setup(gen: torch.Generator):
    problem = random_problem(3, seed=3)
    R = rotation_matrix(60.0, dim=3)
    field = perturbed_field(problem, R, seed=11)
    assert singular_times(field.Theta) == []
    path = path_batch(problem, R, 0.3, 6, gen)
    return field, path


def test_closed_form_grads_match_autograd(noisy_setup) -> None:
    field, path = noisy_setup
    g_theta, g_Theta = parametric_per_sample_grads(field.theta, field.Theta, path.xt, path.t, path.target)
    assert g_theta.shape == (6, 3) and g_Theta.shape == (6, 3, 3) and g_theta.dtype == F64
    losses = per_sample_loss(field, path)
    torch.testing.assert_close(parametric_per_sample_loss(field.theta, field.Theta, path.xt, path.t, path.target),
                               losses.detach(), rtol=1e-12, atol=0)
    assert float(losses.detach().min()) > 1e-3  # noise σ = 0.3 and perturbed parameters: residuals are nonzero
    for b in range(len(losses)):
        a_theta, a_Theta = torch.autograd.grad(losses[b], [field.theta, field.Theta], retain_graph=True)
        assert float((g_theta[b] - a_theta).norm()) <= 1e-10 * float(a_theta.norm())
        assert float((g_Theta[b] - a_Theta).norm()) <= 1e-10 * float(a_Theta.norm())


def test_closed_form_grads_match_finite_differences(noisy_setup) -> None:
    field, path = noisy_setup
    theta, Theta = field.theta.detach(), field.Theta.detach()
    g_theta, g_Theta = parametric_per_sample_grads(theta, Theta, path.xt, path.t, path.target)
    h = 1e-6

    def loss(th: torch.Tensor, Th: torch.Tensor) -> torch.Tensor:
        return parametric_per_sample_loss(th, Th, path.xt, path.t, path.target)

    for i in range(3):
        e = torch.zeros(3, dtype=F64)
        e[i] = h
        fd = (loss(theta + e, Theta) - loss(theta - e, Theta)) / (2 * h)
        torch.testing.assert_close(g_theta[:, i], fd, rtol=1e-6, atol=1e-7)
        for j in range(3):
            E = torch.zeros(3, 3, dtype=F64)
            E[i, j] = h
            fd = (loss(theta, Theta + E) - loss(theta, Theta - E)) / (2 * h)
            torch.testing.assert_close(g_Theta[:, i, j], fd, rtol=1e-6, atol=1e-7)


def test_grads_accept_scalar_time_and_residuals_match_field(noisy_setup) -> None:
    field, path = noisy_setup
    t = torch.full((len(path.t),), 0.4, dtype=F64)
    by_vector = parametric_per_sample_grads(field.theta, field.Theta, path.xt, t, path.target)
    by_scalar = parametric_per_sample_grads(field.theta, field.Theta, path.xt, 0.4, path.target)
    for a, b in zip(by_vector, by_scalar):  # bitwise: a Python float t must not pass through float32
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    r = parametric_residuals(field.theta, field.Theta, path.xt, path.t, path.target)
    torch.testing.assert_close(r, (field(path.xt, path.t) - path.target).detach(), rtol=1e-12, atol=1e-12)


# ---------------------------------------------------------------------------------------------- Prop 1(A)


@pytest.mark.parametrize("angle", [0.0, *ANGLES], ids=lambda a: "OT" if a == 0 else f"{a:g}deg")
@pytest.mark.parametrize("cov", [torch.eye(2), torch.diag(torch.tensor([4.0, 0.25]))], ids=["I", "diag(4,.25)"])
def test_prop1a_pair_optimal_field_has_zero_loss_and_zero_gradients(angle: float, cov: torch.Tensor,
                                                                   gen: torch.Generator) -> None:
    problem = GaussianProblem(torch.tensor([5.0, 5.0]), cov)
    R = None if angle == 0 else rotation_matrix(angle)
    theta, Theta = problem.field_parameters(R)
    path = path_batch(problem, R, 0.0, 512, gen)
    g_theta, g_Theta = parametric_per_sample_grads(theta, Theta, path.xt, path.t, path.target)
    assert float(g_theta.norm(dim=1).max()) < 1e-12
    assert float(g_Theta.flatten(1).norm(dim=1).max()) < 1e-12
    assert float(parametric_per_sample_loss(theta, Theta, path.xt, path.t, path.target).max()) < 1e-20
    # with interpolant noise the same field has nonzero per-sample gradients (Prop 1(B))
    noisy = Interpolant(0.3).path(path.x0, path.x1, path.t, torch.randn(path.x0.shape, generator=gen, dtype=F64))
    g_noisy, _ = parametric_per_sample_grads(theta, Theta, noisy.xt, noisy.t, noisy.target)
    if angle == 0 and torch.equal(cov, torch.eye(2)):
        # a pure translation: Θ̂ = 0, the field is the constant μ = x1 − x0 and noise cannot move it
        assert float(g_noisy.abs().max()) == 0.0
    else:
        assert float(g_noisy.norm(dim=1).mean()) > 1e-2


def test_grads_raise_at_singular_time() -> None:
    problem, R = counterexample_problem()
    theta, Theta = problem.field_parameters(R)
    x = torch.ones(3, 2, dtype=F64)
    with pytest.raises(SolverError, match=r"singular at t = \[0\.5\].*singular_times"):
        parametric_per_sample_grads(theta, Theta, x, torch.tensor([0.2, 0.5, 0.8], dtype=F64), x)


# ---------------------------------------------------------------------------------------------- bad input


def test_bad_covariances_and_shapes() -> None:
    with pytest.raises(ConfigError, match=r"positive definite.*smallest eigenvalue is -1"):
        GaussianProblem(torch.zeros(2), torch.diag(torch.tensor([1.0, -1.0])))
    with pytest.raises(ConfigError, match=r"positive definite.*add a small multiple of the identity"):
        GaussianProblem(torch.zeros(2), torch.zeros(2, 2))
    with pytest.raises(ConfigError, match=r"symmetric.*\(C \+ C.T\) / 2"):
        GaussianProblem(torch.zeros(2), torch.tensor([[1.0, 0.5], [0.0, 1.0]]))
    with pytest.raises(ShapeError, match=r"cov must have shape \(2, 2\) to match mean"):
        GaussianProblem(torch.zeros(2), torch.eye(3))
    with pytest.raises(ShapeError, match=r"mean must be a vector"):
        GaussianProblem(torch.zeros(2, 1), torch.eye(2))


def test_bad_rotations() -> None:
    problem = GaussianProblem.isotropic(2)
    with pytest.raises(ConfigError, match=r"orthogonal.*max\|R Rᵀ − I\| = 3.*rotation_matrix\(\)"):
        problem.pair_optimal_field(2 * torch.eye(2))
    with pytest.raises(ShapeError, match=r"rotation must be \(2, 2\)"):
        problem.pair_optimal_field(torch.eye(3))
    skew = torch.tensor([[1.0, 0.1], [0.0, 1.0]])
    with pytest.raises(ConfigError, match="orthogonal"):
        problem.field_parameters(skew)
    # an exactly orthogonal reflection is accepted (R x0 ~ N(0, I) still)
    problem.pair_optimal_field(torch.diag(torch.tensor([1.0, -1.0])))


def test_bad_gradient_inputs() -> None:
    theta, Theta, x = torch.zeros(2), torch.zeros(2, 2), torch.zeros(5, 2)
    with pytest.raises(ShapeError, match=r"Theta must have shape \(2, 2\) to match theta"):
        parametric_per_sample_grads(theta, torch.zeros(3, 3), x, 0.5, x)
    with pytest.raises(ShapeError, match=r"xt must have shape \(B, 2\)"):
        parametric_per_sample_grads(theta, Theta, torch.zeros(5, 3), 0.5, torch.zeros(5, 3))
    with pytest.raises(ShapeError, match=r"target must have the shape of xt"):
        parametric_per_sample_grads(theta, Theta, x, 0.5, torch.zeros(4, 2))
    with pytest.raises(ShapeError, match=r"t must be a scalar or have shape \(5,\)"):
        parametric_per_sample_grads(theta, Theta, x, torch.zeros(4), x)
    with pytest.raises(ShapeError, match=r"theta must be a vector"):
        parametric_per_sample_grads(torch.zeros(2, 2), Theta, x, 0.5, x)
    # a valid call works; Θ = 0 gives v = θ, A = I, w = x − tθ: g_θ = 2(θ − u), g_Θ = g_θ wᵀ
    u = torch.arange(10, dtype=F64).reshape(5, 2)
    g_theta, g_Theta = parametric_per_sample_grads(theta, Theta, x + 1.0, 0.5, u)
    torch.testing.assert_close(g_theta, -2 * u)
    torch.testing.assert_close(g_Theta, (-2 * u)[:, :, None] * torch.ones(5, 1, 2, dtype=F64))


def test_rotation_matrix_bad_plane() -> None:
    with pytest.raises(ConfigError, match="not a pair of distinct axes"):
        rotation_matrix(30.0, dim=2, plane=(0, 0))
    assert math.isclose(float(torch.linalg.det(rotation_matrix(73.0, dim=4, plane=(1, 3)))), 1.0)


# ---------------------------------------------------------------------------------------------- invalid matrices

DIAG_INDEFINITE = torch.diag(torch.tensor([4.0, -1.0], dtype=F64))
NOT_SYMMETRIC = torch.tensor([[4.0, 1.0], [0.0, 9.0]], dtype=F64)


@pytest.mark.parametrize("call, match", [
    (lambda: sqrtm_psd(DIAG_INDEFINITE), r"M must be positive semidefinite.*smallest eigenvalue is -1"),
    (lambda: sqrtm_psd(NOT_SYMMETRIC), r"M must be symmetric.*max\|M − Mᵀ\| = 1"),
    (lambda: sqrtm_psd(NOT_SYMMETRIC.float()), r"M must be symmetric"),
    (lambda: psd_powers(DIAG_INDEFINITE, (0.5, -0.5)), r"M must be positive semidefinite"),
    (lambda: psd_powers(NOT_SYMMETRIC, (0.5,)), r"M must be symmetric"),
    (lambda: psd_powers(torch.diag(torch.tensor([4.0, 0.0], dtype=F64)), (0.5, -0.5)),
     r"power -0.5 of M is infinite.*floor > 0"),
    (lambda: psd_powers(torch.eye(2, dtype=F64), (0.5,), floor=math.nan), r"floor must be a number in \[0, 1\]"),
    (lambda: gaussian_ot_matrix(torch.eye(2), DIAG_INDEFINITE), r"cov1 must be positive semidefinite"),
    (lambda: gaussian_ot_matrix(torch.diag(torch.tensor([1.0, -1.0])), torch.eye(2)),
     r"cov0 must be positive semidefinite"),
    (lambda: gaussian_ot_matrix(NOT_SYMMETRIC, torch.eye(2)), r"cov0 must be symmetric"),
    (lambda: gaussian_ot_matrix(torch.eye(2), NOT_SYMMETRIC), r"cov1 must be symmetric"),
])
def test_matrix_helpers_refuse_invalid_matrices(call, match: str) -> None:
    # each used to return a silently wrong number: diag(2, 0), diag(2, 3), NaN/Inf, diag(2, 0), a 1e6 entry
    with pytest.raises(ConfigError, match=match):
        call()


def test_matrix_helpers_refuse_bad_shapes() -> None:
    with pytest.raises(ShapeError, match=r"M must be a square \(d, d\) matrix"):
        sqrtm_psd(torch.zeros(2, 3, dtype=F64))
    with pytest.raises(ShapeError, match=r"cov0 and cov1 must have the same shape"):
        gaussian_ot_matrix(torch.eye(2), torch.eye(3))
    with pytest.raises(ShapeError, match=r"d >= 1"):
        psd_powers(torch.zeros(0, 0), (0.5,))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_matrix_helpers_clamp_rounding_level_negative_eigenvalues(dtype: torch.dtype) -> None:
    """A covariance of rank-deficient data is semidefinite only up to rounding: still accepted, and clamped."""
    g = torch.Generator().manual_seed(11)
    x = torch.randn(200, 2, generator=g, dtype=F64) @ torch.randn(2, 5, generator=g, dtype=F64)  # rank 2 of 5
    cov = torch.cov(x.T)
    cov = ((cov + cov.T) / 2).to(dtype)
    evals = torch.linalg.eigvalsh(cov)
    assert float(evals.min()) < 0  # negative by rounding only (~1e-17 or ~1e-8 relative)
    root = sqrtm_psd(cov)
    torch.testing.assert_close(root @ root, cov, rtol=0, atol=1e-5 * float(cov.abs().max()))
    (half,) = psd_powers(cov, (0.5,))
    torch.testing.assert_close(half, root, rtol=0, atol=1e-3 * float(root.abs().max()))
    a = gaussian_ot_matrix(torch.eye(5, dtype=dtype), cov)
    assert bool(torch.isfinite(a).all())
    # an exactly negative eigenvalue far beyond rounding is not "rounding"
    bad = cov - 1e-3 * float(cov.abs().max()) * torch.eye(5, dtype=dtype)
    with pytest.raises(ConfigError, match="positive semidefinite"):
        sqrtm_psd(bad)


def test_matrix_check_tolerates_float32_rounding_of_a_float64_call() -> None:
    """A float32 covariance is symmetric only to float32 precision: gaussian_ot_matrix (which works in float64)
    judges it by float32's tolerance."""
    cov = random_spd(4, seed=12)
    cov32 = cov.float()
    cov32[0, 1] = cov32[0, 1] * (1 + 2e-7)  # an asymmetry of float32's rounding level
    assert float((cov32 - cov32.T).abs().max()) > 0
    A = gaussian_ot_matrix(torch.eye(4), cov32)
    torch.testing.assert_close(A, sqrtm_psd(cov), rtol=1e-5, atol=1e-6)


def test_gaussian_problem_refuses_zero_dimensions() -> None:
    with pytest.raises(ShapeError, match=r"at least one coordinate \(d >= 1\)"):
        GaussianProblem(torch.zeros(0), torch.zeros(0, 0))


@pytest.mark.parametrize("angle", [math.nan, math.inf, -math.inf, "30", None, True])
def test_rotation_matrix_refuses_non_finite_or_non_numeric_angles(angle: object) -> None:
    with pytest.raises(ConfigError, match="angle_deg must be a finite number of degrees"):
        rotation_matrix(angle, 2)  # type: ignore[arg-type]


@pytest.mark.parametrize("plane", [(0, 1, 2), (0,), 1, "01", (0.0, 1.0), (True, False), None])
def test_rotation_matrix_refuses_a_malformed_plane(plane: object) -> None:
    # (0, 1, 2) used to fail with "too many values to unpack", 1 with "cannot unpack non-iterable int"
    with pytest.raises(ConfigError, match=r"plane must be a pair of integer axis indices"):
        rotation_matrix(30, 3, plane)  # type: ignore[arg-type]


def test_rotation_matrix_accepts_numpy_and_tensor_arguments() -> None:
    expected = rotation_matrix(30.0, 3, (0, 2))
    torch.testing.assert_close(rotation_matrix(np.float64(30.0), 3, (np.int64(0), np.int64(2))), expected)
    torch.testing.assert_close(rotation_matrix(torch.tensor(30.0), 3, [0, 2]), expected)
    torch.testing.assert_close(rotation_matrix(30.0, 3, np.array([0, 2])), expected)


def fixed_dimension(R: torch.Tensor) -> int:
    """dim ker(R − I), counted independently of flowvar: eigenvalues of R equal to 1."""
    return int(np.sum(np.abs(np.linalg.eigvals(R.numpy()) - 1) < 1e-9))


@pytest.mark.parametrize("angle", [0.0, 30.0, 90.0, 120.0, 180.0, 270.0])
@pytest.mark.parametrize("plane", [(0, 1), (1, 0)])
def test_block_rotation_is_rotation_matrix_entry_for_entry_at_d2(angle: float, plane: tuple[int, int]) -> None:
    # fig5's published runs are d = 2: turning "every plane" must be the same matrix, bit for bit
    assert torch.equal(block_rotation_matrix(angle, 2, plane), rotation_matrix(angle, 2, plane))


def test_block_rotation_turns_every_plane_and_fixes_one_axis_only_at_odd_d() -> None:
    assert paired_planes(2) == [(0, 1)]
    assert paired_planes(4) == [(0, 1), (2, 3)]
    assert paired_planes(5, (1, 3)) == [(1, 3), (0, 2)]                     # `first`, then the rest in order
    assert paired_planes(3, np.array([2, 0])) == [(2, 0)]
    c, s = math.cos(math.radians(120)), math.sin(math.radians(120))
    R4 = block_rotation_matrix(120.0, 4)
    block = torch.tensor([[c, -s], [s, c]], dtype=F64)
    torch.testing.assert_close(R4, torch.block_diag(block, block), rtol=0, atol=0)
    for d in range(2, 10):
        R = block_rotation_matrix(120.0, d)
        torch.testing.assert_close(R @ R.T, torch.eye(d, dtype=F64), rtol=0, atol=1e-15)
        assert math.isclose(float(torch.linalg.det(R)), 1.0)
        # every axis moves at even d; one is left at odd d (any rotation of an odd-dimensional space fixes one)
        assert fixed_dimension(R) == d % 2
        assert fixed_dimension(rotation_matrix(120.0, d)) == d - 2  # the one-plane rotation fixes d − 2 axes
    R5 = block_rotation_matrix(120.0, 5, (1, 3))
    assert R5[4, 4] == 1 and R5[4].abs().sum() == 1 and R5[1, 3] == -s and R5[0, 2] == -s
    assert torch.equal(block_rotation_matrix(180.0, 4), -torch.eye(4, dtype=F64))  # exact at multiples of 90°


def test_block_rotation_refuses_what_rotation_matrix_refuses() -> None:
    with pytest.raises(ConfigError, match="not a pair of distinct axes of a 3-D space"):
        block_rotation_matrix(30.0, 3, (0, 3))
    with pytest.raises(ConfigError, match="not a pair of distinct axes of a 1-D space"):
        block_rotation_matrix(30.0, 1)
    with pytest.raises(ConfigError, match="plane must be a pair of integer axis indices"):
        paired_planes(4, (0, 1, 2))  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="angle_deg must be a finite number"):
        block_rotation_matrix(math.nan, 4)


def test_check_symmetric_psd_names_the_matrix_and_returns_it() -> None:
    from flowvar.gaussian import check_symmetric_psd

    M = random_spd(3, seed=13)
    assert check_symmetric_psd("cov", M) is M
    assert check_symmetric_psd("cov", torch.eye(2, dtype=torch.int64)).dtype == F64  # integers: computed in float64
    with pytest.raises(ConfigError, match=r"^cov must be positive semidefinite"):
        check_symmetric_psd("cov", DIAG_INDEFINITE)
    with pytest.raises(DataError, match="cov holds 1 non-finite"):
        check_symmetric_psd("cov", torch.tensor([[1.0, 0.0], [0.0, math.inf]]))


def test_gaussian_problem_sample_refuses_an_int_seed_as_generator() -> None:
    # like every other entry point that draws: a seed re-made into a generator per call would repeat its draws
    problem = GaussianProblem(torch.zeros(2, dtype=F64), torch.eye(2, dtype=F64))
    with pytest.raises(ConfigError, match=r"generator must be a torch.Generator or None, got int 0"):
        problem.sample(4, 0)  # type: ignore[arg-type]
    x = problem.sample(4, torch.Generator().manual_seed(0))
    assert x.shape == (4, 2)


# ---------------------------------------------------------------------------------------------- W2 and rounding


def test_gaussian_w2_squared_closed_form_and_pot() -> None:
    mu = torch.tensor([5.0, 5.0], dtype=F64)
    # N(0, I) → N(μ, diag(4, 1/4)): ‖μ‖² + tr(I + M − 2 M^{1/2}) = 50 + 2 + 4.25 − 2·2.5
    assert gaussian_w2_squared(torch.zeros(2), torch.eye(2), mu, torch.diag(torch.tensor([4.0, 0.25]))) == \
        pytest.approx(51.25, abs=1e-12)
    for d, seed in ((2, 0), (3, 1), (6, 2)):
        g = torch.Generator().manual_seed(seed)
        m0, m1 = torch.randn(d, generator=g, dtype=F64), torch.randn(d, generator=g, dtype=F64)
        c0, c1 = random_spd(d, seed), random_spd(d, seed + 50)
        pot = float(ot.gaussian.bures_wasserstein_distance(m0.numpy(), m1.numpy(), c0.numpy(), c1.numpy())) ** 2
        assert gaussian_w2_squared(m0, c0, m1, c1) == pytest.approx(pot, rel=1e-10)
        # from N(0, I) it is the cost of the Brenier map μ + M^{1/2} x0: ‖μ‖² + ‖M^{1/2} − I‖_F²
        cost = float(m1.pow(2).sum() + (sqrtm_psd(c1) - torch.eye(d, dtype=F64)).pow(2).sum())
        assert gaussian_w2_squared(torch.zeros(d), torch.eye(d), m1, c1) == pytest.approx(cost, rel=1e-12)
    with pytest.raises(ConfigError):
        gaussian_w2_squared(torch.zeros(2), torch.eye(2), mu, torch.tensor([[1.0, 2.0], [2.0, 1.0]]))  # indefinite
    with pytest.raises(ShapeError):
        gaussian_w2_squared(torch.zeros(3), torch.eye(2), mu, torch.eye(2))


def _pair_optimal_ratios(problem: GaussianProblem, angle: float, n: int, seed: int,
                         theta_shift: float = 0.0) -> torch.Tensor:
    """‖r_b‖ / bound_b of the pair-optimal field of T_R on its own deterministic paths, with times next to every
    singular time added (t* ± 1e-9, where A_t is nearly singular)."""
    coupling = RotatedOTCoupling(problem, angle)
    theta, Theta = problem.field_parameters(coupling.rotation)
    gen = torch.Generator().manual_seed(seed)
    pairs = coupling.sample(n, gen)
    t = torch.rand(n, generator=gen, dtype=F64)
    for k, ts in enumerate(singular_times(Theta)):
        t[4 * k: 4 * k + 4] = torch.tensor([ts - 1e-9, ts + 1e-9, ts - 1e-6, ts + 1e-6], dtype=F64)
    path = Interpolant(0.0).sample(pairs, t, gen)
    r = parametric_residuals(theta + theta_shift, Theta, path.xt, path.t, path.target).norm(dim=1)
    return r / parametric_residual_rounding_bound(theta, Theta, path.x0, path.x1, path.t)


@pytest.mark.parametrize("angle", [0.0, 30.0, 120.0, 179.9, 180.0])
@pytest.mark.parametrize("cov", [[[4.0, 0.0], [0.0, 0.25]], [[4.0, 1.5], [1.5, 1.0]], [[1.0, 0.0], [0.0, 1.0]],
                                 [[100.0, 0.0], [0.0, 0.01]]])
def test_rounding_bound_holds_for_pair_optimal_residuals(angle: float, cov: list) -> None:
    # the exact residual is 0; float64's, even next to a singular time, stays well inside the bound (the factor 8
    # is a count of operations, and the measured ratio is < 0.03 of it: 50 000 draws per case here)
    problem = GaussianProblem(torch.tensor([5.0, 5.0], dtype=F64), torch.tensor(cov, dtype=F64))
    ratios = _pair_optimal_ratios(problem, angle, 50_000, seed=int(angle * 10))
    assert bool(torch.isfinite(ratios).all()) and float(ratios.max()) < 0.05


def test_rounding_bound_exposes_a_field_off_by_1e_6_and_grows_near_singular_times() -> None:
    problem = GaussianProblem(torch.tensor([5.0, 5.0], dtype=F64), torch.diag(torch.tensor([4.0, 0.25], dtype=F64)))
    # θ off by 1e-6: a residual of ~1e-6 against a bound of ~1e-14 away from the singular times
    assert float(_pair_optimal_ratios(problem, 180.0, 2000, seed=1, theta_shift=1e-6).max()) > 1e6
    assert float(_pair_optimal_ratios(problem, 180.0, 2000, seed=1, theta_shift=1e-12).max()) > 1.0
    _, Theta = problem.field_parameters(rotation_matrix(180.0))
    x0 = torch.ones(3, 2, dtype=F64)
    x1 = problem.mean + x0 @ (Theta + torch.eye(2, dtype=F64)).T
    bound = parametric_residual_rounding_bound(problem.mean, Theta, x0, x1, torch.tensor([0.0, 1 / 3 + 1e-9, 1.0]))
    assert 1e-15 < float(bound[0]) < 1e-12 and float(bound[1]) > 1e6 * float(bound[0])  # ‖A_t⁻¹‖ ~ 1/|t − t*|
    with pytest.raises(ShapeError):
        parametric_residual_rounding_bound(problem.mean, Theta, x0, x1, torch.zeros(2))
