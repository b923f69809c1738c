"""Review otR, findings 1, 3 and 4 (exact and dense parts): flowvar.ot.exact_ot_permutation on point sets of very
different scales, on points whose squared distances overflow, and the argument checks of its helpers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.optimize import linear_sum_assignment

from flowvar.errors import ConfigError, DataError, ShapeError
from flowvar.ot import assignment_permutation, exact_ot_permutation, gaussian_aligned, squared_distances
from flowvar.ot.exact import _reduced_cost


def _share_lost(x0: torch.Tensor, x1: torch.Tensor, perm: torch.Tensor) -> float:
    """(best − got) / (best − random) on the pairing-dependent term Σ_i x0_i·x1_σ(i), computed without the
    cancellation of the squared distances (Σ‖x0_i − x1_σ(i)‖² = const − 2 Σ x0_i·x1_σ(i)); the reference is scipy's
    assignment on −x0·x1ᵀ, whose entries are O(1) here."""
    m = (x0 @ x1.T).numpy()
    rows, cols = linear_sum_assignment(-m)
    best, random = m[rows, cols].sum(), m.mean() * len(m)
    got = m[np.arange(len(m)), perm.numpy()].sum()
    return float((best - got) / (best - random))


# ----------------------------------------------------------------------------------- finding 1: scale ratio 1e12


@pytest.mark.parametrize(("n", "solver", "align"), [(400, "emd", False), (400, "sparse", False),
                                                    (400, "auto", True), (600, "emd", False), (600, "sparse", False)])
def test_sets_of_very_different_scales_are_paired_optimally(n: int, solver: str, align: bool) -> None:
    """x0 of spread 1e-6 against x1 of spread and offset 1e6 (d = 2): ‖x1_j‖² ≈ 1e12 dominated max|C|, so the
    solvers' relative tolerances (POT's; the sparse certificate's 1e-9·max|C|) exceeded the whole gain of OT over a
    random pairing. Before the row/column reduction emd lost 5.7e-3 (n = 400) and 6.6e-3 (n = 600) of that gain and
    the "certified" sparse solve 4.1e-2 and 5.2e-2; now each loses at most the rounding of the cost matrix itself
    (≤ 3e-7 measured; scipy's assignment on the same cost lost 2e-6 before, 8e-8 now)."""
    g = torch.Generator().manual_seed(1)
    x0 = torch.randn(n, 2, generator=g, dtype=torch.float64) * 1e-6
    x1 = torch.randn(n, 2, generator=g, dtype=torch.float64) * 1e6 + 1e6
    perm = exact_ot_permutation(x0, x1, solver, align=align)  # type: ignore[arg-type]
    assert torch.equal(perm.sort().values, torch.arange(n))
    assert _share_lost(x0, x1, perm) <= 1e-5


def test_reduced_cost_is_an_exact_row_and_column_shift() -> None:
    """What the solvers see: the squared distances minus row then column minima; every row and column holds a 0,
    every entry is ≥ 0, and the difference to the squared distances is r_i + c_j (to rounding), so every
    permutation's total moves by the same constant."""
    g = torch.Generator().manual_seed(2)
    p = torch.randn(37, 3, generator=g, dtype=torch.float64)
    q = torch.randn(37, 3, generator=g, dtype=torch.float64) * 4 + 3
    dist, reduced = squared_distances(p, q), _reduced_cost(p, q)
    assert reduced is not None
    assert float(reduced.min()) == 0.0
    assert torch.equal(reduced.amin(1), torch.zeros(37, dtype=torch.float64))
    assert torch.equal(reduced.amin(0), torch.zeros(37, dtype=torch.float64))
    shift = dist - reduced
    r, c = shift[:, :1], shift[:1, :] - shift[0, 0]
    torch.testing.assert_close(shift, r + c, rtol=0, atol=1e-12 * float(dist.max()))
    # the blocked CPU row pass (128 rows a block) equals the whole-matrix passes at a size with several blocks
    p, q = torch.randn(300, 2, generator=g, dtype=torch.float64), torch.randn(300, 2, generator=g, dtype=torch.float64)
    whole = squared_distances(p, q)
    whole.sub_(whole.amin(1, keepdim=True))
    blocked = _reduced_cost(p, q)
    assert blocked is not None and torch.equal(blocked, whole.sub_(whole.amin(0, keepdim=True)))
    # an entry that overflows (Inf) or an overflowing row (Inf − Inf = NaN after the row pass): None, not a cost
    far = torch.tensor([[1e200, 0.0], [0.0, 1.0]], dtype=torch.float64)
    assert _reduced_cost(far, torch.ones(2, 2, dtype=torch.float64)) is None
    assert _reduced_cost(far * torch.tensor([1.0, 1e200]), -far) is None


def test_ordinary_problems_keep_their_optimum() -> None:
    """The reduction changes no optimum: on a Gaussian-mixture-like problem with and without the alignment, every
    solver's total (on exact differences) equals scipy's assignment on the exact squared differences."""
    g = torch.Generator().manual_seed(3)
    for n in (100, 1100):  # scipy's assignment below 256 points, the sparse solve from 1024 (emd: explicit)
        x0 = torch.randn(n, 2, generator=g, dtype=torch.float64)
        centres = torch.tensor([[4.0, 0.0], [-4.0, 0.0], [0.0, 4.0]], dtype=torch.float64)
        x1 = centres[torch.randint(0, 3, (n,), generator=g)] + 0.3 * torch.randn(n, 2, generator=g, dtype=torch.float64)
        exact = ((x0[:, None] - x1[None]) ** 2).sum(-1).numpy()
        rows, cols = linear_sum_assignment(exact)
        best = exact[rows, cols].sum()
        for solver in ("auto", "lsa", "emd", "sparse"):
            for align in (True, False):
                perm = exact_ot_permutation(x0, x1, solver, align=align).numpy()  # type: ignore[arg-type]
                assert exact[np.arange(n), perm].sum() == pytest.approx(best, rel=1e-13, abs=0)


# ----------------------------------------------------------------------------------- finding 3: overflow


@pytest.mark.parametrize(("n", "solver"), [(3, "auto"), (300, "emd"), (1100, "auto"), (1100, "sparse")])
def test_overflowing_squared_distances_are_one_data_error(n: int, solver: str) -> None:
    """Finite points of magnitude 1e155: n = 3 gave scipy's "cost matrix is infeasible", n = 300 with emd POT's
    warning and then that error, n = 1100 a ConfigError about a cov0 that the caller never passed."""
    g = torch.Generator().manual_seed(4)
    x0 = torch.randn(n, 2, generator=g, dtype=torch.float64) * 1e155
    x1 = torch.randn(n, 2, generator=g, dtype=torch.float64)
    with pytest.raises(DataError, match=r"^exact OT pairing: the points' squared distances overflow float64 "
                                        r"\(largest coordinate magnitude .*\); rescale the points") as caught:
        exact_ot_permutation(x0, x1, solver)  # type: ignore[arg-type]
    assert "\n" not in str(caught.value)


def test_alignment_of_overflowing_points_is_skipped_not_refused() -> None:
    """gaussian_aligned: covariances that overflow float64 mean "no alignment" (the plain cost is used), not
    gaussian_ot_matrix's "cov0 must be a nonzero positive semidefinite matrix"."""
    g = torch.Generator().manual_seed(5)
    x0 = torch.randn(1100, 2, generator=g, dtype=torch.float64) * 1e155
    x1 = torch.randn(1100, 2, generator=g, dtype=torch.float64)
    assert gaussian_aligned(x0, x1) is None
    # large but representable points are still aligned, and paired exactly
    x0 = x0 * 1e-150
    assert gaussian_aligned(x0, x1) is not None
    exact = ((x0[:, None] - x1[None]) ** 2).sum(-1).numpy()
    rows, cols = linear_sum_assignment(exact)
    perm = exact_ot_permutation(x0, x1).numpy()
    assert exact[np.arange(1100), perm].sum() == pytest.approx(exact[rows, cols].sum(), rel=1e-13, abs=0)


# ----------------------------------------------------------------------------------- finding 4: argument checks


def test_align_must_be_a_bool() -> None:
    """align="no" was read as True (a non-empty string)."""
    x0, x1 = torch.randn(5, 2, dtype=torch.float64), torch.randn(5, 2, dtype=torch.float64)
    for bad in ("no", 0, 1.0, None):
        with pytest.raises(ConfigError, match=r"^align must be True or False, got "):
            exact_ot_permutation(x0, x1, align=bad)  # type: ignore[arg-type]
    expected = exact_ot_permutation(x0, x1, "lsa", align=False)
    assert torch.equal(exact_ot_permutation(x0, x1, "lsa", align=np.bool_(False)), expected)  # type: ignore[arg-type]


def test_assignment_permutation_needs_a_square_cost() -> None:
    """A 3 × 5 cost returned [3 2 1]-like columns (not a permutation), a 5 × 3 one a raw IndexError."""
    rng = np.random.default_rng(0)
    for shape in ((3, 5), (5, 3), (4,), (2, 2, 2)):
        with pytest.raises(ShapeError, match=r"^an assignment needs a square \(n, n\) cost matrix, got shape "):
            assignment_permutation(rng.random(shape))
    cost = rng.random((6, 6))
    perm = assignment_permutation(cost)
    rows, cols = linear_sum_assignment(cost)
    assert sorted(perm.tolist()) == list(range(6))
    assert cost[np.arange(6), perm].sum() == pytest.approx(cost[rows, cols].sum(), rel=1e-15)
