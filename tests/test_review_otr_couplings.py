"""Review otR, findings 2 and 5: RotatedOTCoupling refuses angle_deg together with rotation (reflections stay
allowed: counterexample_problem relies on them), and ReflowCoupling.materialise draws the same sources whatever its
chunk, while giving the pairs its callers (table3, lemma2) got before, bit for bit."""

from __future__ import annotations

import pytest
import torch

from flowvar.couplings import FixedPairs, ReflowCoupling, RotatedOTCoupling
from flowvar.distributions import StandardNormal
from flowvar.errors import ConfigError
from flowvar.gaussian import GaussianProblem, counterexample_problem, rotation_matrix
from flowvar.sampling import integrate

PROBLEM = GaussianProblem(torch.tensor([1.0, 2.0]), torch.tensor([[2.0, 0.3], [0.3, 1.0]]))


# ----------------------------------------------------------------------------------- finding 2: angle and rotation


def test_angle_together_with_rotation_is_refused() -> None:
    """RotatedOTCoupling(problem, 30, rotation=R) used R and ignored the angle silently."""
    for angle in (30.0, 0.0, 0):
        with pytest.raises(ConfigError, match=r"^RotatedOTCoupling: angle_deg=.* would be ignored, because rotation= "
                                              r"gives R itself; pass one of them"):
            RotatedOTCoupling(PROBLEM, angle, rotation=rotation_matrix(60.0))
    with pytest.raises(ConfigError, match="would be ignored"):
        RotatedOTCoupling(PROBLEM, angle_deg=30.0, rotation=torch.eye(2))


def test_angle_or_rotation_alone_still_works() -> None:
    """Either argument alone builds R as before; neither is R = I (the OT coupling)."""
    assert torch.equal(RotatedOTCoupling(PROBLEM).rotation, torch.eye(2, dtype=torch.float64))
    by_angle = RotatedOTCoupling(PROBLEM, 30.0)
    by_matrix = RotatedOTCoupling(PROBLEM, rotation=rotation_matrix(30.0))
    assert torch.equal(by_angle.rotation, by_matrix.rotation)
    assert torch.equal(by_angle.rotation, rotation_matrix(30.0))
    g0, g1 = torch.Generator().manual_seed(0), torch.Generator().manual_seed(0)
    a, b = by_angle.sample(64, g0), by_matrix.sample(64, g1)
    assert torch.equal(a.x0, b.x0) and torch.equal(a.x1, b.x1)
    one_d = GaussianProblem(torch.tensor([0.5]), torch.tensor([[4.0]]))
    assert float(RotatedOTCoupling(one_d, 180.0).rotation) == -1.0


def test_reflections_are_allowed_as_documented() -> None:
    """counterexample_problem's R = −I is a point reflection in odd d (det −1) and is documented for use with
    RotatedOTCoupling(problem, rotation=R): it must stay accepted (and pair x1 = μ − x0)."""
    problem, reflection = counterexample_problem(mu=2.0, dim=3)
    assert float(torch.linalg.det(reflection)) == -1.0
    pairs = RotatedOTCoupling(problem, rotation=reflection).sample(16, torch.Generator().manual_seed(1))
    torch.testing.assert_close(pairs.x1, problem.mean - pairs.x0, rtol=0, atol=1e-12)
    assert float(torch.linalg.det(RotatedOTCoupling(PROBLEM, 200.0).rotation)) == pytest.approx(1.0, abs=1e-12)


# ----------------------------------------------------------------------------------- finding 5: materialise chunks


class _Field(torch.nn.Module):
    """A small nonlinear field v(x, t) (float32 by default, as the experiments' models)."""

    def __init__(self, dim: int = 2) -> None:
        super().__init__()
        with torch.random.fork_rng():  # fixed weights without touching the global RNG of other tests
            torch.manual_seed(0)
            self.lin = torch.nn.Linear(dim + 1, 16)
            self.out = torch.nn.Linear(16, dim)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(x.shape[0], -1)
        return self.out(torch.tanh(self.lin(torch.cat([flat, t[:, None].to(flat.dtype)], 1)))).reshape(x.shape)


def _old_materialise(coupling: ReflowCoupling, n: int, generator: torch.Generator, chunk: int) -> FixedPairs:
    """materialise before the fix: every chunk drew its own sources with ``sample``."""
    parts = [coupling.sample(min(chunk, n - s), generator) for s in range(0, n, chunk)]
    return FixedPairs(torch.cat([p.x0 for p in parts]), torch.cat([p.x1 for p in parts]))


def test_materialise_sources_do_not_depend_on_chunk() -> None:
    """With the same generator, chunk=3 and the default 4096 drew other sources (another training set)."""
    coupling = ReflowCoupling(_Field(), StandardNormal(2), steps=5)
    whole = coupling.materialise(10, torch.Generator().manual_seed(1))
    for chunk in (3, 4, 7):
        pieces = coupling.materialise(10, torch.Generator().manual_seed(1), chunk=chunk)
        assert torch.equal(pieces.x0, whole.x0)
        torch.testing.assert_close(pieces.x1, whole.x1, rtol=1e-6, atol=1e-6)  # the solve's batch: rounding only
    # the sources are one draw of n, the endpoints the field's Euler flow of them
    assert torch.equal(whole.x0, StandardNormal(2).sample(10, torch.Generator().manual_seed(1)))
    torch.testing.assert_close(whole.x1, integrate(coupling.model, whole.x0, "euler", 5).x1, rtol=0, atol=0)
    with pytest.raises(ConfigError, match=r"^chunk must be a positive integer, got 0"):
        coupling.materialise(10, torch.Generator().manual_seed(1), chunk=0)


@pytest.mark.parametrize(("n", "chunk", "shape", "method"), [
    (10, 10, (1, 4, 4), "euler"),       # table3: chunk=max(n, 1), image-shaped noise
    (5000, 4096, (2,), "euler"),        # lemma2 quick: n_pairs 5000, default chunk, float32 StandardNormal(2)
    (20000, 4096, (2,), "dopri5"),      # lemma2 full: n_pairs 20000, an adaptive solve
])
def test_materialise_gives_the_callers_their_previous_pairs(n: int, chunk: int, shape: tuple[int, ...],
                                                           method: str) -> None:
    """table3 (chunk = n) and lemma2 (n_pairs 5000 and 20000, chunk 4096) get the very pairs that the chunk-by-chunk
    draws gave them, and leave their generator in the same state: one randn of n rows equals randn drawn in chunks
    of 4096 two-coordinate rows (a multiple of torch's 16-value normal blocks), and the solve sees the same chunks."""
    dim = 1
    for size in shape:
        dim *= size
    field = _Field(dim)
    coupling = ReflowCoupling(field, StandardNormal(shape),
                              solve=lambda x: integrate(field, x, method=method, steps=3, rtol=1e-5, atol=1e-6).x1)
    g_new, g_old = torch.Generator().manual_seed(11), torch.Generator().manual_seed(11)
    new = coupling.materialise(n, g_new, chunk=chunk)
    old = _old_materialise(coupling, n, g_old, chunk)
    assert torch.equal(new.x0, old.x0) and torch.equal(new.x1, old.x1)
    assert torch.equal(g_new.get_state(), g_old.get_state())
