"""couplR review fixes in the couplings: RotatedOTCoupling's angle in 1-D, estimate_variance mixing OT batch sizes,
ReflowCoupling's ignored method/steps, FixedPairs' and Pairs' devices, and the derangement's uniformity (a chi-square
test that a cyclic-only sampler fails). The OT core's fixes: tests/test_ot_review.py."""

from __future__ import annotations

import itertools

import pytest
import torch
from scipy import stats
from torch import Tensor, nn

import flowvar.couplings as couplings_module
from flowvar.couplings import (
    ExactOTCoupling,
    FixedPairs,
    IndependentCoupling,
    Pairs,
    ReflowCoupling,
    RotatedOTCoupling,
    derangement,
)
from flowvar.distributions import GaussianMixture, StandardNormal
from flowvar.errors import ConfigError, DataError
from flowvar.gaussian import GaussianProblem
from flowvar.interpolants import Interpolant
from flowvar.loss import CFMLoss
from flowvar.variance import estimate_variance

# ----------------------------------------------------------------------------------- finding 2: 1-D rotations


@pytest.mark.parametrize(("angle", "sign"), [(0.0, 1.0), (180.0, -1.0), (-180.0, -1.0), (360.0, 1.0), (540, -1.0)])
def test_rotated_coupling_in_1d_is_plus_or_minus_one(angle: float, sign: float) -> None:
    """d = 1, angle 180 gave R = [[1]] (the OT coupling) instead of the anti-monotone x1 = μ − M^{1/2} x0."""
    problem = GaussianProblem(torch.tensor([2.0]), torch.tensor([[4.0]]))
    coupling = RotatedOTCoupling(problem, angle)
    assert torch.equal(coupling.rotation, torch.tensor([[sign]], dtype=torch.float64))
    pairs = coupling.sample(100, torch.Generator().manual_seed(0))
    torch.testing.assert_close(pairs.x1, 2.0 + sign * 2.0 * pairs.x0, rtol=0, atol=1e-12)
    if sign < 0:  # the same coupling as the explicit R = −1
        explicit = RotatedOTCoupling(problem, rotation=torch.tensor([[-1.0]]))
        assert torch.equal(explicit.sample(100, torch.Generator().manual_seed(0)).x1, pairs.x1)


@pytest.mark.parametrize("angle", [45.0, 90.0, 179.0])
def test_rotated_coupling_in_1d_refuses_other_angles(angle: float) -> None:
    problem = GaussianProblem(torch.tensor([0.0]), torch.tensor([[1.0]]))
    with pytest.raises(ConfigError, match=r"a rotation in 1-D is ±1, so angle_deg must be 0 or 180 \(modulo 360\), "
                                          r"got .*; pass angle_deg=0 or 180, or rotation=torch.tensor\(\[\[-1.0\]\]\)"):
        RotatedOTCoupling(problem, angle)
    with pytest.raises(ConfigError, match="finite number of degrees"):
        RotatedOTCoupling(problem, float("nan"))


# ----------------------------------------------------------------------------------- finding 5: OT batch sizes


class _Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(3, 8), nn.SiLU(), nn.Linear(8, 2))

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        return self.net(torch.cat([x, t.reshape(-1, 1).to(x.dtype)], 1))


def test_estimate_variance_keeps_every_ot_batch_the_same_size(monkeypatch: pytest.MonkeyPatch) -> None:
    """n_samples = 100 with draw_chunk = 64 solved OT batches of 64 and 36 points: a mixture of two couplings."""
    sizes: list[int] = []
    real = couplings_module.exact_ot_permutation

    def spy(x0: Tensor, x1: Tensor, solver: str = "auto") -> Tensor:
        sizes.append(x0.shape[0])
        return real(x0, x1, solver)  # type: ignore[arg-type]

    monkeypatch.setattr(couplings_module, "exact_ot_permutation", spy)
    model, loss = _Net(), CFMLoss(Interpolant(0.0))
    ot = ExactOTCoupling(StandardNormal(2), GaussianMixture.random(2, seed=2))
    with pytest.raises(ConfigError, match=r"ExactOTCoupling pairs within each draw of draw_chunk=64 points .* would "
                                          r"mix 1 batch\(es\) of 64 with one of 36; pass n_samples a multiple of "
                                          r"draw_chunk \(e.g. 64 or 128\)"):
        estimate_variance(model, loss, ot, 100, torch.Generator().manual_seed(0), draw_chunk=64)
    assert sizes == []  # refused before drawing
    rep = estimate_variance(model, loss, ot, 128, torch.Generator().manual_seed(0), draw_chunk=64)
    assert sizes == [64, 64] and rep.n == 128
    sizes.clear()
    one = estimate_variance(model, loss, ot, 50, torch.Generator().manual_seed(0), draw_chunk=64)
    assert sizes == [50] and one.n == 50  # one batch of n_samples: a single coupling
    # a coupling that pairs each sample on its own still takes any n_samples
    independent = IndependentCoupling(StandardNormal(2), GaussianMixture.random(2, seed=2))
    assert estimate_variance(model, loss, independent, 100, torch.Generator().manual_seed(0), draw_chunk=64).n == 100
    assert ExactOTCoupling.pairs_within_batch and not IndependentCoupling.pairs_within_batch


# ----------------------------------------------------------------------------------- finding 6: small API points


class _Shift(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(()))

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        return self.scale * torch.ones_like(x)


def test_reflow_refuses_method_or_steps_with_its_own_solve() -> None:
    """method/steps were silently ignored when solve= was given: the pairs came from solve's own integration."""
    def solve(x0: Tensor) -> Tensor:
        return x0 + 1

    for kwargs, shown in (({"method": "rk4"}, "method='rk4'"), ({"steps": 10}, "steps=10"),
                          ({"method": "euler", "steps": 100}, "method='euler', steps=100")):
        with pytest.raises(ConfigError, match=rf"^ReflowCoupling: {shown} would be ignored, because solve= integrates "
                                              r"the pairs itself; pass the method and steps to your solve function"):
            ReflowCoupling(_Shift(), StandardNormal(2), solve=solve, **kwargs)  # type: ignore[arg-type]
    pairs = ReflowCoupling(_Shift(), StandardNormal(2), solve=solve).sample(4, torch.Generator().manual_seed(0))
    assert torch.equal(pairs.x1, pairs.x0 + 1)
    # without solve=, the defaults are Euler with 100 steps: x0 + 1 for a constant unit field
    default = ReflowCoupling(_Shift(), StandardNormal(2)).sample(4, torch.Generator().manual_seed(0))
    torch.testing.assert_close(default.x1, default.x0 + 1)


def test_fixed_pairs_with_one_pair_and_shuffle_names_the_fix() -> None:
    with pytest.raises(ConfigError, match=r"needs at least 2 pairs, got 1; pass at least 2 pairs, or shuffle=False"):
        FixedPairs(torch.zeros(1, 2), torch.ones(1, 2), shuffle=True)
    assert len(FixedPairs(torch.zeros(1, 2), torch.ones(1, 2))) == 1
    with pytest.raises(ConfigError, match=r"got n=1; pass n >= 2"):
        derangement(1)


def test_pairs_and_fixed_pairs_refuse_points_on_two_devices() -> None:
    """x0 and x1 on different devices failed later, inside the interpolant (the meta device stands in for a GPU)."""
    cpu, meta = torch.zeros(3, 2), torch.empty(3, 2, device="meta")
    with pytest.raises(DataError, match=r"x0 and x1 must be on the same device, got x0 on cpu and x1 on meta; move "
                                        r"one, e.g. x1.to\(x0.device\)"):
        Pairs(cpu, meta)
    with pytest.raises(DataError, match="x0 and x1 must be on the same device, got x0 on meta and x1 on cpu"):
        FixedPairs(meta, cpu)
    with pytest.raises(DataError, match="FixedPairs needs pairs with values, got tensors on the meta device"):
        FixedPairs(meta, meta)
    assert len(Pairs(meta, meta)) == 3  # one device: fine (Pairs does not read values)


# ----------------------------------------------------------------------------------- finding 7: uniform derangements


def _derangement_chi_square(sampler, n: int = 4, draws: int = 4500, seed: int = 0) -> float:  # type: ignore[no-untyped-def]
    """The chi-square p-value of ``draws`` samples of ``sampler(n, generator)`` against the uniform law on the
    derangements of n (9 of them at n = 4); a derangement never drawn counts as observed 0."""
    classes = [p for p in itertools.permutations(range(n)) if all(p[i] != i for i in range(n))]
    counts = dict.fromkeys(classes, 0)
    g = torch.Generator().manual_seed(seed)
    for _ in range(draws):
        perm = tuple(sampler(n, g).tolist())
        assert perm in counts, f"{perm} is not a derangement"
        counts[perm] += 1
    return float(stats.chisquare(list(counts.values())).pvalue)


def _sattolo(n: int, generator: torch.Generator) -> Tensor:
    """Sattolo's algorithm: a uniform *cyclic* permutation (one n-cycle), a derangement but never, e.g., (1 0 3 2)."""
    perm = list(range(n))
    for i in range(n - 1, 0, -1):
        j = int(torch.randint(0, i, (1,), generator=generator))
        perm[i], perm[j] = perm[j], perm[i]
    return torch.tensor(perm)


def test_derangement_is_uniform_and_the_test_catches_a_cyclic_only_sampler() -> None:
    """Seeded chi-square at n = 4 (9 derangements, 4500 draws, 8 degrees of freedom): flowvar's derangement is
    consistent with uniform (p > 0.001), while Sattolo's cyclic-only sampler — it never draws the 3 double
    transpositions — is rejected by the same statistic."""
    assert _derangement_chi_square(derangement) > 1e-3
    assert _derangement_chi_square(_sattolo) < 1e-30
