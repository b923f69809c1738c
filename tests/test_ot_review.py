"""couplR review fixes in the OT core: approximation_gap with assignments of other point sets, cost_matrix's input
checks, and the sparse solver at sizes where it cannot pay off."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from torch import Tensor

import flowvar.ot.sparse as ot_sparse
from flowvar.couplings import ExactOTCoupling
from flowvar.distributions import GaussianMixture, StandardNormal
from flowvar.errors import DataError, ShapeError
from flowvar.ot import exact_ot_permutation
from flowvar.ot.dense import squared_distances
from flowvar.ot.images import (
    Assignment,
    approximation_gap,
    blockwise_assignment,
    cost_matrix,
    exact_assignment,
    pair_costs,
)

# ----------------------------------------------------------------------------------- finding 1: approximation_gap


def _points(n: int, seed: int, d: int = 6) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g, dtype=torch.float64), torch.randn(n, d, generator=g, dtype=torch.float64) + 1


def test_approximation_gap_refuses_an_assignment_of_other_sources_of_the_same_size() -> None:
    """An exact assignment of other sources y0 (same N) passed as ``approx`` was reported as a negative gap (−1.3%)
    where its permutation's true gap on (x0, x1) was +76%."""
    x0, x1 = _points(300, 0)
    y0, _ = _points(300, 1)
    exact = exact_assignment(x0, x1)
    foreign = exact_assignment(y0, x1)
    true_cost = float(pair_costs(x0, x1, foreign.permutation).mean())
    assert true_cost > exact.cost * 1.05 > foreign.cost  # the premise: its stored cost is not its cost here
    with pytest.raises(DataError, match=r"the approx assignment was not computed on x0, x1: its stored cost is "
                                        r".*; pass the sets it was solved on \(or approx=None"):
        approximation_gap(x0, x1, approx=foreign, exact=exact)
    with pytest.raises(DataError, match="the exact assignment was not computed on x0, x1"):
        approximation_gap(x0, x1, exact=foreign)
    # the same permutation with its cost on (x0, x1) is accepted, and its gap is the true one
    honest = Assignment(foreign.permutation, true_cost, "blockwise", 1, 300, 0, (), 0.0)
    gap = approximation_gap(x0, x1, approx=honest, exact=exact)
    assert gap.relative_gap == pytest.approx(true_cost / exact.cost - 1, rel=1e-12)
    assert gap.relative_gap > 0.05


def test_approximation_gap_refuses_assignments_of_another_size() -> None:
    """x0, x1 of 50 points with assignments of 400 were accepted (the costs from 400 points, cost_random from 50)."""
    x0, x1 = _points(400, 2)
    exact, approx = exact_assignment(x0, x1), blockwise_assignment(x0, x1, block_size=64, refine_rounds=1)
    with pytest.raises(DataError, match=r"the approx assignment pairs 400 points but x0 and x1 hold 50: it was not "
                                        r"computed on x0, x1; pass the sets it was solved on"):
        approximation_gap(x0[:50], x1[:50], approx, exact)
    with pytest.raises(DataError, match="the exact assignment pairs 400 points but x0 and x1 hold 50"):
        approximation_gap(x0[:50], x1[:50], exact=exact)
    ok = approximation_gap(x0, x1, approx, exact)  # computed on these sets: accepted, gap >= 0
    assert ok.n == 400 and ok.relative_gap >= 0


def test_approximation_gap_refuses_a_negative_gap() -> None:
    """An "exact" assignment that is not the optimum (both computed on x0, x1, so the costs match) gives a negative
    gap: refused, naming the fix."""
    x0, x1 = _points(300, 3)
    exact = exact_assignment(x0, x1)
    rough = blockwise_assignment(x0, x1, block_size=32, refine_rounds=0)
    assert rough.cost > exact.cost * (1 + 1e-6)
    with pytest.raises(DataError, match=r"costs less than the exact one .*not the optimum of x0, x1; pass exact=None"):
        approximation_gap(x0, x1, approx=exact, exact=rough)


def test_approximation_gap_accepts_float32_sets_it_solved_itself() -> None:
    """Assignments solved on float32 sets recompute to the same float64 cost (no false refusal)."""
    x0, x1 = (x.float() for x in _points(200, 4))
    gap = approximation_gap(x0, x1, approx=blockwise_assignment(x0, x1, block_size=64), exact=exact_assignment(x0, x1))
    assert gap.relative_gap >= 0 and gap.n == 200


# ----------------------------------------------------------------------------------- finding 3: cost_matrix inputs


def test_cost_matrix_checks_its_inputs_like_pair_costs() -> None:
    """NaN gave a silently non-finite cost, an empty set torch's reshape error, numpy an AttributeError."""
    a, b = torch.randn(6, 3, dtype=torch.float64), torch.randn(4, 3, dtype=torch.float64)
    np.testing.assert_allclose(cost_matrix(a, b), squared_distances(a, b).numpy(), rtol=1e-12, atol=1e-12)
    bad = a.clone()
    bad[2, 1] = float("nan")
    with pytest.raises(DataError, match="x0 holds 1 non-finite"):
        cost_matrix(bad, b)
    inf = b.clone()
    inf[0, 0] = float("inf")
    with pytest.raises(DataError, match="x1 holds 1 non-finite"):
        cost_matrix(a, inf)
    with pytest.raises(DataError, match="no points to compare: got 0 sources and 4 targets"):
        cost_matrix(a[:0], b)
    for value in (a.numpy(), a.tolist()):
        with pytest.raises(ShapeError, match=r"must be tensors, got .*; convert with torch.as_tensor\(x\)"):
            cost_matrix(value, b)  # type: ignore[arg-type]
    with pytest.raises(DataError, match="x1 is on the meta device"):
        cost_matrix(a, torch.empty(4, 3, device="meta"))
    with pytest.raises(ShapeError, match="3 coordinates per point but targets have 2"):
        cost_matrix(a, b[:, :2])
    # the pairing functions name the fix for numpy input too
    with pytest.raises(ShapeError, match=r"torch.as_tensor\(x\)"):
        pair_costs(a.numpy(), a)  # type: ignore[arg-type]


# ----------------------------------------------------------------------------------- finding 4: small sparse solves


def test_explicit_sparse_solver_below_a_few_hundred_points_solves_dense_without_a_warning(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """At 160 points the 48 first candidates a row reach a quarter of all pairs: the sparse solve gave up on every
    call, with a warning each, after a subsample solve as large as the problem. Now the dense emd solves it at once."""
    def not_called(cost: Tensor) -> None:
        raise AssertionError("the sparse solve ran where its candidates cannot fit")

    monkeypatch.setattr(ot_sparse, "_subsample_duals", not_called)
    assert not ot_sparse.sparse_candidates_fit(160) and ot_sparse.sparse_candidates_fit(256)
    g = torch.Generator().manual_seed(5)
    x0 = torch.randn(160, 2, generator=g, dtype=torch.float64)
    x1 = GaussianMixture.random(2, seed=1, dtype=torch.float64).sample(160, g)
    with caplog.at_level(logging.DEBUG, logger="flowvar.ot"):
        perm = exact_ot_permutation(x0, x1, "sparse")
        pairs = ExactOTCoupling(StandardNormal(2), GaussianMixture.random(2, seed=1), solver="sparse").sample(
            160, torch.Generator().manual_seed(0))
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text
    cost = squared_distances(x0, x1)
    lsa = exact_ot_permutation(x0, x1, "lsa", align=False)
    total = float(cost[torch.arange(160), perm].sum())
    assert total == pytest.approx(float(cost[torch.arange(160), lsa].sum()), rel=1e-12)
    assert len(pairs) == 160
