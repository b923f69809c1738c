"""flowvar.couplings: the coupling classes (exact OT pairing itself: tests/test_ot.py)."""

import numpy as np
import pytest
import torch

from flowvar.couplings import (
    ExactOTCoupling,
    FixedPairs,
    IndependentCoupling,
    Pairs,
    RotatedOTCoupling,
    derangement,
)
from flowvar.distributions import GaussianMixture, StandardNormal
from flowvar.errors import ConfigError, DataError, ShapeError
from flowvar.gaussian import GaussianProblem, rotation_matrix
from flowvar.loss import CFMLoss


def test_exact_ot_coupling_is_a_bijection_of_the_drawn_targets() -> None:
    coupling = ExactOTCoupling(StandardNormal(2), GaussianMixture.random(2, seed=1))
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    pairs = coupling.sample(64, g1)
    x0, x1 = IndependentCoupling(coupling.source, coupling.target).draw(64, g2)
    assert torch.equal(pairs.x0, x0)
    # every drawn target appears exactly once: sorting rows gives the same multiset
    assert torch.equal(torch.sort(pairs.x1[:, 0]).values, torch.sort(x1[:, 0]).values)
    # and the OT pairing is no more expensive than the independent one
    assert float(((pairs.x0 - pairs.x1) ** 2).sum()) <= float(((x0 - x1) ** 2).sum())


@pytest.mark.parametrize("angle", [0.0, 30.0, 120.0, 180.0])
def test_rotated_coupling_targets(angle: float) -> None:
    problem = GaussianProblem(torch.tensor([5.0, 5.0]), torch.diag(torch.tensor([4.0, 0.25])))
    coupling = RotatedOTCoupling(problem, angle)
    pairs = coupling.sample(5000, torch.Generator().manual_seed(0))
    R = rotation_matrix(angle)
    expected = torch.tensor([5.0, 5.0], dtype=torch.float64) + pairs.x0 @ (problem.cov_sqrt @ R).T
    assert torch.allclose(pairs.x1, expected, atol=1e-12)
    # R x0 ~ N(0, I): the targets are N(μ, M) for every angle (Monte-Carlo check of the moments)
    assert torch.allclose(pairs.x1.mean(0), problem.mean, atol=0.1)
    assert torch.allclose(torch.cov(pairs.x1.T), problem.cov, atol=0.15)


def test_rotation_in_a_plane_of_higher_dim() -> None:
    R = rotation_matrix(90, dim=4, plane=(1, 3))
    assert torch.allclose(R @ R.T, torch.eye(4, dtype=torch.float64))
    e1 = torch.zeros(4, dtype=torch.float64)
    e1[1] = 1
    assert torch.equal(R @ e1, torch.tensor([0.0, 0.0, 0.0, 1.0], dtype=torch.float64))
    with pytest.raises(ConfigError, match="plane"):
        rotation_matrix(30, dim=3, plane=(0, 3))


@pytest.mark.parametrize("n", [2, 3, 10, 257])
def test_derangement_has_no_fixed_points(n: int) -> None:
    for seed in range(20):
        perm = derangement(n, torch.Generator().manual_seed(seed))
        assert sorted(perm.tolist()) == list(range(n))
        assert not bool((perm == torch.arange(n)).any())
    with pytest.raises(ConfigError):
        derangement(1)


def test_fixed_pairs_shuffle_and_sampling() -> None:
    x0 = torch.arange(20.0).reshape(10, 2)
    x1 = -x0
    pairs = FixedPairs(x0, x1, shuffle=True, generator=torch.Generator().manual_seed(0))
    assert torch.equal(pairs.x1, x1[pairs.permutation])
    assert not bool((pairs.permutation == torch.arange(10)).any())
    batch = pairs.sample(50, torch.Generator().manual_seed(1))
    assert torch.equal(batch.x0, x0[batch.index]) and torch.equal(batch.x1, pairs.x1[batch.index])
    full = pairs.all()
    assert torch.equal(full.index, torch.arange(10))


def test_bad_pairs_are_rejected_with_clear_messages() -> None:
    with pytest.raises(DataError, match="empty"):
        FixedPairs(torch.zeros(0, 2), torch.zeros(0, 2))
    with pytest.raises(ShapeError, match="same shape"):
        FixedPairs(torch.zeros(3, 2), torch.zeros(4, 2))
    with pytest.raises(DataError, match="non-finite"):
        FixedPairs(torch.tensor([[0.0, float("nan")]]), torch.zeros(1, 2))
    with pytest.raises(ShapeError, match="same shape"):
        Pairs(torch.zeros(3, 2), torch.zeros(3, 3))
    with pytest.raises(ShapeError, match="event shape"):
        IndependentCoupling(StandardNormal(2), StandardNormal(3))
    with pytest.raises(ConfigError, match="solver"):
        ExactOTCoupling(StandardNormal(2), StandardNormal(2), solver="sinkhorn")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="positive integer"):
        StandardNormal(2).sample(0)


def test_pairs_refuse_integer_and_mixed_dtypes_naming_the_fix() -> None:
    # the docstring asked for one dtype; mixed pairs failed inside torch.lerp, integer ones inside torch.rand
    x0 = torch.randn(5, 2)
    with pytest.raises(DataError, match=r"x0 and x1 must have the same dtype, got x0 torch.float32 and x1 "
                                        r"torch.float64; convert one, e.g. x1.to\(x0.dtype\)"):
        Pairs(x0, x0.double())
    with pytest.raises(DataError, match=r"x1 must be a floating-point tensor, got dtype torch.int64; pass x1.float"):
        Pairs(x0, torch.zeros(5, 2, dtype=torch.long))
    ints = torch.randint(0, 5, (10, 2))
    with pytest.raises(DataError, match=r"x0 must be a floating-point tensor, got dtype torch.int64; pass x0.float"):
        FixedPairs(ints, ints)
    with pytest.raises(DataError, match=r"x0 and x1 must have the same dtype.*x1.to\(x0.dtype\)"):
        FixedPairs(ints.float(), ints.double())
    with pytest.raises(ShapeError, match=r"\(N, \*shape\), got x0 of shape \(10,\)"):
        FixedPairs(ints[:, 0].float(), ints[:, 0].float())


def test_numpy_pairs_are_converted() -> None:
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((6, 2)), rng.standard_normal((6, 2))
    fp = FixedPairs(a, b)  # type: ignore[arg-type]
    assert fp.x0.dtype == torch.float64 and torch.equal(fp.x0, torch.from_numpy(a))
    assert torch.equal(fp.x1, torch.from_numpy(b))
    pairs = Pairs(a, b)  # type: ignore[arg-type]
    assert torch.equal(pairs.x1, torch.from_numpy(b))
    with pytest.raises(ConfigError, match=r"x0 must be a torch\.Tensor"):
        FixedPairs("x0", "x1")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="x0 must be a tensor of numbers"):
        FixedPairs(np.array([object(), object()]), b)  # type: ignore[arg-type]


@pytest.mark.parametrize("make", [
    lambda: IndependentCoupling(StandardNormal(2), StandardNormal(2)),
    lambda: ExactOTCoupling(StandardNormal(2), GaussianMixture.random(2, 3)),
    lambda: RotatedOTCoupling(GaussianProblem.isotropic(2, 1.0), 90.0),
    lambda: FixedPairs(torch.randn(10, 2), torch.randn(10, 2)),
])
def test_an_int_seed_in_place_of_a_generator_is_one_clear_error(make) -> None:  # type: ignore[no-untyped-def]
    # used to be torch's 20-line "randn() received an invalid combination of arguments - got (..., generator=int)"
    coupling = make()
    with pytest.raises(ConfigError, match=r"generator must be a torch.Generator or None, got int 0; pass "
                                          r"torch.Generator\(\).manual_seed\(0\)"):
        coupling.sample(8, 0)
    with pytest.raises(ConfigError, match="got int 3"):
        CFMLoss().draw(coupling, 8, np.int64(3))  # type: ignore[arg-type]
    assert len(coupling.sample(8, torch.Generator().manual_seed(0))) == 8


def test_derangement_and_shuffle_refuse_an_int_seed() -> None:
    with pytest.raises(ConfigError, match="got int 1"):
        derangement(5, 1)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="got int 1"):
        FixedPairs(torch.randn(5, 2), torch.randn(5, 2), shuffle=True, generator=1)  # type: ignore[arg-type]


def test_pairs_repr_shows_shapes_not_entries() -> None:
    pairs = FixedPairs(torch.randn(1000, 3, 4, 4), torch.randn(1000, 3, 4, 4)).all()
    text = repr(pairs)
    assert text == "Pairs(B=1000, shape=(3, 4, 4), dtype=torch.float32, device=cpu, index=(1000,))"
    assert repr(Pairs(torch.zeros(2, 5, dtype=torch.float64), torch.zeros(2, 5, dtype=torch.float64))) == \
        "Pairs(B=2, shape=(5,), dtype=torch.float64, device=cpu, index=None)"


# ----------------------------------------------------------------------------------------------------- ReflowCoupling


class _Constant(torch.nn.Module):
    """v(x, t) = 1 (x1 = x0 + 1 under any solver), through a dropout layer and a batch norm that training mode
    would use: the mask from the global RNG, the batch statistics (and an update of the running ones)."""

    def __init__(self) -> None:
        super().__init__()
        self.drop = torch.nn.Dropout(0.5)
        self.norm = torch.nn.BatchNorm1d(2, affine=False)
        self.head = torch.nn.Identity()

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.drop(self.norm(torch.zeros_like(x)) + 1)


def test_reflow_coupling_refuses_a_bad_method_or_step_count_when_built() -> None:
    """coreA finding 4: ReflowCoupling(model, source, method='RK45') and steps=0 were accepted; the error came at the
    first sample (deep inside materialise)."""
    from flowvar.couplings import ReflowCoupling

    with pytest.raises(ConfigError, match=r"^ReflowCoupling: unknown ODE method 'RK45'; choose one of \['euler', "
                                          r"'midpoint', 'heun', 'rk4', .*'dopri5'"):
        ReflowCoupling(_Constant(), StandardNormal(2), method="RK45")
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ConfigError, match=rf"^ReflowCoupling: steps must be a positive integer, got {bad!r}$"):
            ReflowCoupling(_Constant(), StandardNormal(2), steps=bad)
    assert ReflowCoupling(_Constant(), StandardNormal(2), method="rk4", steps=3).sample(4).x1.shape == (4, 2)


def test_reflow_pairs_are_those_of_the_model_in_eval_mode_and_its_modes_are_restored() -> None:
    """coreA finding 4: with a model in training mode (train() leaves it so) dropout drew from the global RNG, so two
    couplings given the same generator gave different pairs, and a batch norm would have used (and updated) batch
    statistics. The pairs are the ODE endpoints of the deterministic field — the model in eval mode — whatever mode it
    is in; every submodule's mode is restored, the global RNG and the running statistics are untouched."""
    from flowvar.couplings import ReflowCoupling

    model = _Constant()
    model.train()
    model.head.eval()  # a mixed state: restored as it was, not to model.train()
    modes = [m.training for m in model.modules()]
    running = model.norm.running_var.clone()  # training mode would move it towards the batch variance, 0
    rng = torch.get_rng_state()
    a = ReflowCoupling(model, StandardNormal(2), steps=4).sample(8, torch.Generator().manual_seed(0))
    b = ReflowCoupling(model, StandardNormal(2), steps=4).sample(8, torch.Generator().manual_seed(0))
    assert torch.equal(a.x0, b.x0) and torch.equal(a.x1, b.x1)
    assert torch.allclose(a.x1, a.x0 + 1, atol=1e-6)  # dropout off (training mode: 0 or 2, not 1)
    assert [m.training for m in model.modules()] == modes and not model.head.training
    assert torch.equal(torch.get_rng_state(), rng) and torch.equal(model.norm.running_var, running)
    fixed = ReflowCoupling(model, StandardNormal(2), steps=4).materialise(8, torch.Generator().manual_seed(0))
    assert torch.equal(fixed.x1, a.x1) and model.training

    def failing(x0: torch.Tensor) -> torch.Tensor:
        assert not model.training  # a solve of one's own sees the model in eval mode too
        raise ZeroDivisionError

    with pytest.raises(ZeroDivisionError):  # an error inside the solve restores the modes too
        ReflowCoupling(model, StandardNormal(2), solve=failing).sample(2)
    assert [m.training for m in model.modules()] == modes
