"""flowvar.ot: the exact minibatch OT pairing (every solver against brute force and against each other), the solver
choice by size, the fallbacks between solvers, the certified sparse solve and the Gaussian alignment."""

import itertools
import logging

import numpy as np
import ot
import pytest
import torch

import flowvar.ot.dense as ot_dense
import flowvar.ot.exact as ot_exact
import flowvar.ot.sparse as ot_sparse
from flowvar.distributions import GaussianMixture
from flowvar.errors import ConfigError, DataError, ShapeError
from flowvar.gaussian import gaussian_ot_matrix
from flowvar.ot import (
    ALIGN_MIN_POINTS,
    AUTO_EMD_MIN_POINTS,
    AUTO_SPARSE_MIN_POINTS,
    cost_matrix,
    exact_assignment,
    exact_ot_permutation,
    gaussian_aligned,
    random_pairing_cost,
    sparse_certified_permutation,
    squared_distances,
)


def brute_force_ot_cost(x0: torch.Tensor, x1: torch.Tensor) -> float:
    n = x0.shape[0]
    return min(float(((x0 - x1[list(p)]) ** 2).sum()) for p in itertools.permutations(range(n)))


@pytest.mark.parametrize("solver", ["auto", "lsa", "emd", "sparse"])
@pytest.mark.parametrize("seed", range(5))
def test_exact_ot_matches_brute_force(solver: str, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    x0, x1 = torch.randn(7, 3, generator=g, dtype=torch.float64), torch.randn(7, 3, generator=g, dtype=torch.float64)
    perm = exact_ot_permutation(x0, x1, solver)
    assert sorted(perm.tolist()) == list(range(7)), "OT pairing must be a bijection"
    assert float(((x0 - x1[perm]) ** 2).sum()) == pytest.approx(brute_force_ot_cost(x0, x1), rel=1e-12)


def _ot_problem(kind: str, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    if kind == "normal":
        return torch.randn(n, 3, generator=g, dtype=torch.float64), torch.randn(n, 3, generator=g, dtype=torch.float64)
    if kind == "mixture":
        x0 = torch.randn(n, 2, generator=g)
        return x0, GaussianMixture.random(2, seed=seed).sample(n, g)
    if kind == "shifted":  # a far, anisotropic, rotated Gaussian: the plain cost's search is long
        x0 = torch.randn(n, 3, generator=g, dtype=torch.float64)
        mix = torch.tensor([[2.0, 0.5, 0.0], [0.0, 0.3, 0.2], [0.1, 0.0, 1.0]], dtype=torch.float64)
        return x0, torch.randn(n, 3, generator=g, dtype=torch.float64) @ mix + torch.tensor([6.0, -4.0, 1.0])
    if kind == "degenerate":  # targets on a line in 3-D: a singular covariance
        x0 = torch.randn(n, 3, generator=g, dtype=torch.float64)
        return x0, torch.randn(n, 1, generator=g, dtype=torch.float64) * torch.tensor([[1.0, 2.0, -1.0]]) + 3.0
    if kind == "grid":  # integer points on a 3×3 grid: many exactly tied costs
        return (torch.randint(0, 3, (n, 2), generator=g).double(), torch.randint(0, 3, (n, 2), generator=g).double())
    if kind == "duplicated":  # every point repeated, and the targets a permuted copy of the sources
        base = torch.randn(n // 4, 2, generator=g, dtype=torch.float64).repeat(4, 1)
        return base, base[torch.randperm(base.shape[0], generator=g)] + 0.0
    assert kind == "identical"
    return torch.ones(n, 2, dtype=torch.float64), torch.ones(n, 2, dtype=torch.float64)


def _is_permutation(perm: torch.Tensor, n: int) -> bool:
    return perm.dtype == torch.long and perm.shape == (n,) and sorted(perm.tolist()) == list(range(n))


@pytest.mark.parametrize("kind", ["normal", "mixture", "shifted", "degenerate", "grid", "duplicated", "identical"])
@pytest.mark.parametrize("n", [40, AUTO_EMD_MIN_POINTS + 4, ALIGN_MIN_POINTS + 8])
def test_exact_ot_solvers_agree_on_the_optimal_cost(kind: str, n: int) -> None:
    """Every solver, with and without the Gaussian alignment, against scipy's assignment on the plain cost."""
    x0, x1 = _ot_problem(kind, n, seed=n)
    cost = squared_distances(x0, x1)
    totals = {}
    for solver, align in itertools.product(("auto", "lsa", "emd", "sparse"), (True, False)):
        perm = exact_ot_permutation(x0, x1, solver, align)  # type: ignore[arg-type]
        assert _is_permutation(perm, n), f"{solver} did not return a bijection"
        totals[solver, align] = float(cost[torch.arange(n), perm].sum())
    ref = totals["lsa", False]
    for solver, total in totals.items():
        assert total == pytest.approx(ref, rel=1e-9, abs=1e-12), (solver, totals)
    if kind == "duplicated":
        assert ref == pytest.approx(0.0, abs=1e-9)  # a zero-cost pairing exists and every solver finds it


def test_auto_solver_picks_by_size(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[str, int]] = []
    real_emd, real_sparse = ot.emd, ot_sparse.sparse_certified_permutation

    def spy_emd(a, b, M, **kw):  # type: ignore[no-untyped-def]
        calls.append(("emd", M.shape[0]))
        return real_emd(a, b, M, **kw)

    def spy_sparse(cost: torch.Tensor) -> np.ndarray | None:
        calls.append(("sparse", cost.shape[0]))
        return real_sparse(cost)

    monkeypatch.setattr(ot, "emd", spy_emd)
    monkeypatch.setattr(ot_exact, "sparse_certified_permutation", spy_sparse)
    for n in (AUTO_EMD_MIN_POINTS - 1, AUTO_EMD_MIN_POINTS, AUTO_SPARSE_MIN_POINTS - 1, AUTO_SPARSE_MIN_POINTS):
        x0, x1 = _ot_problem("normal", n, 0)
        assert _is_permutation(exact_ot_permutation(x0, x1), n)
    big = AUTO_SPARSE_MIN_POINTS
    # lsa below 256, the dense emd below 1024, the sparse solve from there on (its subsample's dense emd inside)
    assert calls[:2] == [("emd", AUTO_EMD_MIN_POINTS), ("emd", AUTO_SPARSE_MIN_POINTS - 1)]
    assert calls[2:4] == [("sparse", big), ("emd", big // ot_sparse.SPARSE_SUBSAMPLE_FRACTION)]
    assert ("emd", big) not in calls  # certified: no dense fallback


@pytest.mark.parametrize("bad", ["fractional", "duplicate-column", "not-optimal", "wrong-mass"])
@pytest.mark.parametrize("solver", ["auto", "emd"])
def test_emd_fallback_to_lsa_on_a_bad_plan(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
                                          bad: str, solver: str) -> None:
    n = AUTO_EMD_MIN_POINTS
    x0, x1 = _ot_problem("mixture", n, 1)

    def fake(a, b, M, **kw):  # type: ignore[no-untyped-def]
        plan = np.eye(n)
        code = 1
        if bad == "fractional":  # feasible, but not a vertex
            plan = np.full((n, n), 1.0 / n)
        elif bad == "duplicate-column":
            plan[1] = plan[0]
        elif bad == "not-optimal":
            code = 3
        else:
            plan = plan * 0.5
        return plan, {"result_code": code, "warning": None if code == 1 else "numItermax reached"}

    monkeypatch.setattr(ot, "emd", fake)
    with caplog.at_level(logging.WARNING, logger="flowvar.ot"):
        perm = exact_ot_permutation(x0, x1, solver)  # type: ignore[arg-type]
    assert _is_permutation(perm, n)
    assert torch.equal(perm, exact_ot_permutation(x0, x1, "lsa"))
    assert any("linear_sum_assignment" in r.getMessage() for r in caplog.records)


def test_emd_fallback_when_the_iteration_cap_is_hit(monkeypatch: pytest.MonkeyPatch,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(ot_dense, "EMD_MAX_ITER", 5)  # the real solver, stopped early
    x0, x1 = _ot_problem("mixture", 300, 2)
    with caplog.at_level(logging.WARNING, logger="flowvar.ot"):
        perm = exact_ot_permutation(x0, x1, "emd")
    assert "without optimality" in caplog.text
    cost = squared_distances(x0, x1)
    lsa = exact_ot_permutation(x0, x1, "lsa")
    assert float(cost[torch.arange(300), perm].sum()) == pytest.approx(float(cost[torch.arange(300), lsa].sum()),
                                                                      rel=1e-12)


@pytest.mark.parametrize("n", [10, AUTO_EMD_MIN_POINTS])
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_exact_ot_refuses_non_finite_points(caplog: pytest.LogCaptureFixture, n: int, bad: float) -> None:
    x0, x1 = _ot_problem("normal", n, 4)
    x1[3, 1] = bad
    log_level = caplog.at_level(logging.WARNING, logger="flowvar.ot")
    with log_level, pytest.raises(DataError, match="x1 holds 1 non-finite"):
        exact_ot_permutation(x0, x1)
    assert not caplog.records  # refused before any solver ran


def _count_simplex_calls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Wrap POT's sparse network simplex; the list gets each call's number of candidate arcs."""
    real = ot_sparse._sparse_network_simplex()
    assert real is not None, "POT's sparse network simplex is missing (POT 0.9.7 has it: did its private API change?)"
    arcs: list[int] = []

    def counting(*args, **kwargs):  # type: ignore[no-untyped-def]
        arcs.append(len(args[2]))
        return real(*args, **kwargs)

    monkeypatch.setattr(ot_sparse, "_sparse_network_simplex", lambda: counting)
    return arcs


def _total(x0: torch.Tensor, x1: torch.Tensor, perm: torch.Tensor | np.ndarray) -> float:
    n = x0.shape[0]
    return float(squared_distances(x0, x1)[torch.arange(n), torch.as_tensor(perm)].sum())


@pytest.mark.parametrize("kind", ["normal", "mixture", "shifted", "degenerate", "grid", "duplicated", "identical"])
def test_sparse_solver_is_exact_at_the_size_auto_uses_it(kind: str, caplog: pytest.LogCaptureFixture) -> None:
    """At AUTO_SPARSE_MIN_POINTS, on every kind of problem (ties included): the dense solver's optimal total, certified
    without falling back."""
    n = AUTO_SPARSE_MIN_POINTS
    x0, x1 = _ot_problem(kind, n, seed=11)
    with caplog.at_level(logging.WARNING, logger="flowvar.ot"):
        sparse = exact_ot_permutation(x0, x1, "sparse")
    assert not caplog.records, caplog.text
    assert _is_permutation(sparse, n)
    dense = exact_ot_permutation(x0, x1, "emd", align=False)
    assert _total(x0, x1, sparse) == pytest.approx(_total(x0, x1, dense), rel=1e-10, abs=1e-12)


@pytest.mark.parametrize("kind", ["normal", "mixture", "degenerate"])
def test_sparse_solver_repairs_poor_first_candidates_over_rounds(monkeypatch: pytest.MonkeyPatch, kind: str) -> None:
    """Duals from 8 of 300 points and 3 candidates a row: the first round cannot be optimal; the certificate must
    send it round again until the result equals scipy's optimum, with the candidate set growing each round."""
    monkeypatch.setattr(ot_sparse, "SPARSE_SUBSAMPLE_MIN", 8)
    monkeypatch.setattr(ot_sparse, "SPARSE_SUBSAMPLE_FRACTION", 64)
    monkeypatch.setattr(ot_sparse, "SPARSE_FIRST_CANDIDATES", 3)
    monkeypatch.setattr(ot_sparse, "SPARSE_ADDED_CANDIDATES", 3)
    arcs = _count_simplex_calls(monkeypatch)
    x0, x1 = _ot_problem(kind, 300, seed=12)
    perm = sparse_certified_permutation(squared_distances(x0, x1))
    assert perm is not None and _is_permutation(torch.as_tensor(perm), 300)
    assert len(arcs) >= 2 and arcs == sorted(set(arcs)), arcs
    lsa = exact_ot_permutation(x0, x1, "lsa", align=False)
    assert _total(x0, x1, perm) == pytest.approx(_total(x0, x1, lsa), rel=1e-12)


def test_sparse_solver_is_a_pure_function_of_the_cost() -> None:
    """The subsample comes from a fixed-seed generator: same answer twice, the caller's RNG untouched."""
    x0, x1 = _ot_problem("mixture", AUTO_SPARSE_MIN_POINTS, seed=13)
    cost = squared_distances(x0, x1)
    state = torch.get_rng_state()
    first = sparse_certified_permutation(cost)
    assert torch.equal(torch.get_rng_state(), state)
    torch.manual_seed(123)
    assert first is not None and np.array_equal(first, sparse_certified_permutation(cost))


def _lying_simplex(n: int, code: int = 1, duals: str = "zero"):  # type: ignore[no-untyped-def]
    """A stand-in for POT's sparse solver that returns the identity pairing with made-up duals."""
    def solve(a, b, src, dst, costs, max_iter, alpha_init, beta_init):  # type: ignore[no-untyped-def]
        ident = np.arange(n, dtype=np.uint64)
        v = np.zeros(n) if duals == "zero" else np.full(n, 1e3)  # "violating": every reduced cost C_ij − 10³ < 0
        return ident, ident, np.ones(n), 0.0, np.zeros(n), v, code
    return solve


@pytest.mark.parametrize("case", ["unavailable", "signature", "not-optimal", "no-slackness", "stalls", "rounds"])
def test_sparse_solver_falls_back_to_the_dense_solve(monkeypatch: pytest.MonkeyPatch,
                                                     caplog: pytest.LogCaptureFixture, case: str) -> None:
    """Whatever goes wrong in the sparse solve, the answer is still the exact optimum (by the dense ot.emd), and a
    warning says why. "no-slackness": zero duals make every reduced cost C_ij ≥ 0, so only the check that the
    pairs' own reduced costs vanish stops the (non-optimal) identity pairing from being certified."""
    n = 300
    x0, x1 = _ot_problem("mixture", n, seed=14)
    expected = {"unavailable": "unavailable", "signature": "refused the call", "not-optimal": "without optimality",
                "no-slackness": "on its own pairs", "stalls": "added no candidate arc",
                "rounds": "not certified after 1 rounds"}[case]
    if case == "unavailable":
        monkeypatch.setattr(ot_sparse, "_sparse_network_simplex", lambda: None)
    elif case == "signature":
        def old_signature(a, b, src, dst, costs, max_iter):  # type: ignore[no-untyped-def]
            raise AssertionError("not reached: the warm-start keywords raise TypeError first")
        monkeypatch.setattr(ot_sparse, "_sparse_network_simplex", lambda: old_signature)
    elif case == "not-optimal":
        monkeypatch.setattr(ot_sparse, "_sparse_network_simplex", lambda: _lying_simplex(n, code=3))
    elif case == "no-slackness":
        monkeypatch.setattr(ot_sparse, "_sparse_network_simplex", lambda: _lying_simplex(n))
    elif case == "stalls":  # the same violating duals every round: each row's same most negative arcs, no new ones
        monkeypatch.setattr(ot_sparse, "SPARSE_FIRST_CANDIDATES", 8)
        monkeypatch.setattr(ot_sparse, "SPARSE_ADDED_CANDIDATES", 8)
        monkeypatch.setattr(ot_sparse, "_sparse_network_simplex", lambda: _lying_simplex(n, duals="violating"))
    else:
        monkeypatch.setattr(ot_sparse, "SPARSE_MAX_ROUNDS", 1)
        monkeypatch.setattr(ot_sparse, "SPARSE_SUBSAMPLE_MIN", 8)
        monkeypatch.setattr(ot_sparse, "SPARSE_SUBSAMPLE_FRACTION", 64)
        monkeypatch.setattr(ot_sparse, "SPARSE_FIRST_CANDIDATES", 2)
    with caplog.at_level(logging.WARNING, logger="flowvar.ot"):
        perm = exact_ot_permutation(x0, x1, "sparse")
    assert expected in caplog.text and "dense ot.emd" in caplog.text, caplog.text
    lsa = exact_ot_permutation(x0, x1, "lsa", align=False)
    assert _total(x0, x1, perm) == pytest.approx(_total(x0, x1, lsa), rel=1e-12)


def test_sparse_solver_refuses_a_cost_it_cannot_certify() -> None:
    with pytest.raises(ShapeError, match="square float64"):
        sparse_certified_permutation(torch.zeros(4, 5, dtype=torch.float64))
    with pytest.raises(ShapeError, match="square float64"):
        sparse_certified_permutation(torch.zeros(4, 4))


def test_gaussian_alignment_shifts_costs_by_row_and_column_terms() -> None:
    """‖P_i − Q_j‖² = ‖x0_i − x1_j‖² − f_i − g_j (the same assignment problem) and = the A⁻¹-distance from T(x0_i)."""
    n = ALIGN_MIN_POINTS
    x0, x1 = _ot_problem("shifted", n, 5)
    aligned = gaussian_aligned(x0, x1)
    assert aligned is not None
    cost, reduced = squared_distances(x0, x1), squared_distances(*aligned)
    shift = cost - reduced
    # a sum f_i + g_j has every 2×2 "interaction" zero: shift_ij − shift_i0 − shift_0j + shift_00 = 0
    interaction = shift - shift[:, :1] - shift[:1, :] + shift[0, 0]
    assert float(interaction.abs().max()) < 1e-9 * float(cost.max())
    m0, m1 = x0.mean(0), x1.mean(0)
    A = gaussian_ot_matrix(torch.cov(x0.T), torch.cov(x1.T))
    residual = x1[None, :, :] - (m1 + (x0 - m0) @ A)[:, None, :]  # x1_j − T(x0_i), (n, n, d)
    mahalanobis = torch.einsum("ijk,kl,ijl->ij", residual, torch.linalg.inv(A), residual)
    torch.testing.assert_close(reduced, mahalanobis, rtol=1e-8, atol=1e-8)


def test_gaussian_alignment_of_an_affine_pairing_is_the_identity() -> None:
    """Targets an exact affine (Gaussian OT) image of the sources: the aligned pairs coincide, the plain ones do not."""
    g = torch.Generator().manual_seed(6)
    x0 = torch.randn(ALIGN_MIN_POINTS, 2, generator=g, dtype=torch.float64)
    x1 = x0 @ torch.tensor([[3.0, 1.0], [1.0, 0.5]], dtype=torch.float64) + torch.tensor([10.0, -7.0])
    p, q = gaussian_aligned(x0, x1)  # type: ignore[misc]
    assert float((p - q).norm(dim=1).max()) < 1e-9
    assert float((x0 - x1).norm(dim=1).min()) > 1.0
    assert torch.equal(exact_ot_permutation(x0, x1), torch.arange(ALIGN_MIN_POINTS))


def test_gaussian_alignment_keeps_the_optimum_far_from_the_origin() -> None:
    """Both sets offset by 10⁴ (a float64 cost of ~10⁸ per pair): the aligned solve still finds the plain optimum."""
    x0, x1 = _ot_problem("mixture", ALIGN_MIN_POINTS, 8)
    x0, x1 = x0.double() + 1e4, x1.double() + 1e4
    cost = squared_distances(x0, x1)
    n = ALIGN_MIN_POINTS
    plain = float(cost[torch.arange(n), exact_ot_permutation(x0, x1, "lsa", align=False)].sum())
    for solver in ("lsa", "emd", "sparse"):
        aligned = float(cost[torch.arange(n), exact_ot_permutation(x0, x1, solver)].sum())  # type: ignore[arg-type]
        assert aligned == pytest.approx(plain, rel=1e-12), solver


@pytest.mark.parametrize("case", ["few points", "too many coordinates", "over 128 coordinates", "no spread"])
def test_gaussian_alignment_does_not_apply(case: str) -> None:
    g = torch.Generator().manual_seed(7)
    n, d = {"few points": (ALIGN_MIN_POINTS - 1, 2), "too many coordinates": (ALIGN_MIN_POINTS, 65),
            "over 128 coordinates": (8 * 129, 129), "no spread": (ALIGN_MIN_POINTS, 2)}[case]
    x0 = torch.randn(n, d, generator=g)
    x1 = torch.ones(n, d) if case == "no spread" else torch.randn(n, d, generator=g)
    assert gaussian_aligned(x0, x1) is None


def test_emd_success_logs_nothing(caplog: pytest.LogCaptureFixture) -> None:
    x0, x1 = _ot_problem("grid", 300, 3)
    with caplog.at_level(logging.WARNING, logger="flowvar.ot"):
        exact_ot_permutation(x0, x1, "emd")
    assert not caplog.records


def test_squared_distances_chunking() -> None:
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(37, 5, generator=g), torch.randn(11, 5, generator=g)
    direct = torch.cdist(a.double(), b.double()) ** 2
    assert torch.allclose(squared_distances(a, b, chunk_rows=4), direct, atol=1e-10)


def test_unknown_solver_is_refused() -> None:
    with pytest.raises(ConfigError, match="solver"):
        exact_ot_permutation(torch.zeros(2, 2), torch.zeros(2, 2), "hungarian")  # type: ignore[arg-type]


def test_exact_pairing_of_empty_or_mismatched_point_sets_is_a_shape_error() -> None:
    from flowvar.errors import ShapeError
    from flowvar.ot import exact_ot_permutation

    x = torch.randn(5, 3)
    for a, b in [(x[:0], x[:0]), (x, torch.randn(5, 4)), (torch.tensor(1.0), torch.tensor(2.0))]:
        with pytest.raises(ShapeError, match="exact OT pairing needs"):
            exact_ot_permutation(a, b)


# ---------------------------------------------------------------------------------------------- far from the origin


def _centred_optimum(x0: torch.Tensor, x1: torch.Tensor) -> tuple[float, np.ndarray]:
    """(optimal total cost, cost matrix) from scipy's LSA on exact differences of the centred points."""
    from scipy.optimize import linear_sum_assignment

    centre = torch.cat([x0, x1]).mean(0)
    a, b = (x0 - centre).numpy(), (x1 - centre).numpy()
    cost = ((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)
    rows, cols = linear_sum_assignment(cost)
    return float(cost[rows, cols].sum()), cost


def _tight_cloud(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return (1e-3 * torch.randn(n, 3, generator=g, dtype=torch.float64),
            1e-3 * torch.randn(n, 3, generator=g, dtype=torch.float64))


@pytest.mark.parametrize("n", [100, 300, 600])
@pytest.mark.parametrize("offset", [1e5, 1e6])
def test_exact_ot_is_translation_invariant(n: int, offset: float) -> None:
    """Spread 1e-3 at an offset of 1e5–1e6: the expanded cost ‖a‖² + ‖b‖² − 2a·b lost every digit, and below the
    aligned size (512 points) every solver paired at 2.5–16× the optimal cost. Each solver, aligned or not, and the
    image pairing must now find the optimum of the centred problem."""
    x0, x1 = _tight_cloud(n, n)
    best, cost = _centred_optimum(x0, x1)
    rows = np.arange(n)
    for solver in ("lsa", "emd", "sparse"):
        for align in (True, False):
            perm = exact_ot_permutation(x0 + offset, x1 + offset, solver, align=align).numpy()  # type: ignore[arg-type]
            assert sorted(perm.tolist()) == list(range(n))
            assert float(cost[rows, perm].sum()) == pytest.approx(best, rel=1e-9), (solver, align)
    perm = exact_assignment(x0 + offset, x1 + offset).permutation.numpy()
    assert float(cost[rows, perm].sum()) == pytest.approx(best, rel=1e-9), "images.exact_assignment"


def test_exact_ot_of_sets_far_apart_is_exact() -> None:
    """Sources near 0 and targets at 1e6: each set centred on its own mean keeps the pairing exact."""
    x0, x1 = _tight_cloud(200, 3)
    best, cost = _centred_optimum(x0, x1)  # a common translation of x1 alone shifts each total by a constant
    shifted = x1 + torch.tensor([1e6, -2e6, 5e5], dtype=torch.float64)
    for solver in ("lsa", "emd"):
        perm = exact_ot_permutation(x0, shifted, solver, align=False).numpy()  # type: ignore[arg-type]
        assert float(cost[np.arange(200), perm].sum()) == pytest.approx(best, rel=1e-9), solver


def test_cost_matrices_keep_their_digits_far_from_the_origin() -> None:
    x0, x1 = _tight_cloud(40, 5)
    for offset in (1e5, 1e6):
        a, b = x0 + offset, x1 + offset
        exact = ((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)  # differences of nearby floats are exact
        torch.testing.assert_close(squared_distances(a, b, chunk_rows=7), exact, rtol=1e-6, atol=0)
        torch.testing.assert_close(torch.as_tensor(cost_matrix(a, b, block=7)), exact, rtol=1e-6, atol=0)
        direct = float(exact.mean())
        assert random_pairing_cost(a, b) == pytest.approx(direct, rel=1e-6)


def test_numpy_point_sets_are_converted() -> None:
    # used to be "is_floating_point(): argument 'input' must be Tensor, not numpy.ndarray" from the validator itself
    rng = np.random.default_rng(3)
    a, b = rng.standard_normal((40, 3)), rng.standard_normal((40, 3))
    perm = exact_ot_permutation(a, b)  # type: ignore[arg-type]
    assert perm.dtype == torch.long
    assert torch.equal(perm, exact_ot_permutation(torch.from_numpy(a), torch.from_numpy(b)))
    with pytest.raises(ConfigError, match=r"x1 must be a torch\.Tensor .*got 'points'"):
        exact_ot_permutation(torch.from_numpy(a), "points")  # type: ignore[arg-type]
