"""flowvar.metrics: MMD², pairwise memorisation metrics, straightness, fitted rotations."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from flowvar import metrics
from flowvar.errors import ConfigError, DataError, ShapeError
from flowvar.gaussian import rotation_matrix
from flowvar.metrics import (
    Reference,
    evaluate_outputs,
    fitted_linear_map,
    median_heuristic,
    memorisation_score,
    mmd2,
    mmd_memory_bytes,
    nearest_neighbours,
    nn_distance_ratio,
    pairing_accuracy,
    partner_distances,
    path_straightness,
    polar_decomposition,
    rotation_angle,
)
from flowvar.metrics import mmd as metrics_mmd

F64 = torch.float64


def randn(g: torch.Generator, *shape: int) -> torch.Tensor:
    return torch.randn(*shape, generator=g, dtype=F64)


# ---------------------------------------------------------------------------------------------- MMD: reference


def direct_kernel(a: torch.Tensor, b: torch.Tensor, hs: tuple[float, ...]) -> torch.Tensor:
    d2 = (a[:, None, :] - b[None, :, :]).pow(2).sum(-1)
    return sum(torch.exp(-d2 / (2 * h * h)) for h in hs) / len(hs)


def direct_mmd2(x: torch.Tensor, y: torch.Tensor, hs: tuple[float, ...], estimator: str) -> float:
    """Dense n×m reference, straight from the textbook formulas (loops over the paired statistic)."""
    x, y = x.reshape(x.shape[0], -1).double(), y.reshape(y.shape[0], -1).double()
    n, m = x.shape[0], y.shape[0]
    kxx, kyy, kxy = direct_kernel(x, x, hs), direct_kernel(y, y, hs), direct_kernel(x, y, hs)
    if estimator == "biased":
        return float(kxx.mean() + kyy.mean() - 2 * kxy.mean())
    if estimator == "unbiased":
        return float((kxx.sum() - kxx.trace()) / (n * (n - 1)) + (kyy.sum() - kyy.trace()) / (m * (m - 1))
                     - 2 * kxy.mean())
    total = 0.0
    for i in range(n):
        for j in range(n):
            if i != j:
                total += float(kxx[i, j] + kyy[i, j] - kxy[i, j] - kxy[j, i])
    return total / (n * (n - 1))


def direct_median_bandwidth(x: torch.Tensor, y: torch.Tensor) -> float:
    z = torch.cat([x, y]).reshape(x.shape[0] + y.shape[0], -1).double()
    d2 = (z[:, None] - z[None]).pow(2).sum(-1)
    iu = np.triu_indices(z.shape[0], 1)
    return math.sqrt(float(np.median(d2.numpy()[iu])) / 2)


# ---------------------------------------------------------------------------------------------- MMD: tests


@pytest.mark.parametrize("estimator", ["unbiased", "biased", "paired"])
@pytest.mark.parametrize("bandwidth", [0.7, [0.5, 2.0, 3.0], "median", "multi"])
@pytest.mark.parametrize("chunk", [1, 7, 10, 64])
def test_chunked_mmd_matches_direct(gen: torch.Generator, estimator: str, bandwidth: object, chunk: int) -> None:
    n, m = 23, (23 if estimator == "paired" else 31)
    x = randn(gen, n, 3)
    y = 0.8 * randn(gen, m, 3) + 0.4
    res = mmd2(x, y, bandwidth=bandwidth, estimator=estimator, chunk=chunk)
    h_med = direct_median_bandwidth(x, y)
    expected_hs = {"median": (h_med,), "multi": tuple(f * h_med for f in (0.25, 0.5, 1, 2, 4))}.get(
        bandwidth if isinstance(bandwidth, str) else "", tuple(np.atleast_1d(bandwidth).tolist()))
    assert res.bandwidths == pytest.approx(expected_hs, rel=1e-12)
    assert res.mmd2 == pytest.approx(direct_mmd2(x, y, expected_hs, estimator), rel=1e-10, abs=1e-13)
    assert res.mmd == pytest.approx(math.sqrt(max(res.mmd2, 0.0)))
    assert (res.n, res.m, res.estimator) == (n, m, estimator)
    kxy = direct_kernel(x, y, expected_hs)
    assert res.mean_kxy == pytest.approx(float(kxy.mean()), rel=1e-10)


def test_images_are_flattened(gen: torch.Generator) -> None:
    x, y = randn(gen, 12, 1, 3, 4), randn(gen, 15, 1, 3, 4) + 0.5
    for est in ("unbiased", "biased"):
        assert mmd2(x, y, estimator=est).mmd2 == pytest.approx(mmd2(x.flatten(1), y.flatten(1), estimator=est).mmd2,
                                                               rel=1e-12)


def test_same_distribution_is_zero_on_average(gen: torch.Generator) -> None:
    unb = torch.tensor([mmd2(randn(gen, 150, 2), randn(gen, 150, 2), bandwidth=1.0).mmd2 for _ in range(30)])
    se = float(unb.std()) / math.sqrt(len(unb))
    assert abs(float(unb.mean())) < 4 * se
    assert bool((unb < 0).any()) and bool((unb > 0).any())  # a zero-mean statistic takes both signs
    # biased − unbiased = (1 − k̄_xx)/n + (1 − k̄_yy)/m exactly (k̄ over i ≠ j)
    x, y = randn(gen, 150, 2), randn(gen, 150, 2)
    biased, unbiased = mmd2(x, y, bandwidth=1.0, estimator="biased"), mmd2(x, y, bandwidth=1.0, estimator="unbiased")
    assert biased.mmd2 > unbiased.mmd2
    assert biased.mmd2 - unbiased.mmd2 == pytest.approx((2 - biased.mean_kxx - biased.mean_kyy) / 150, rel=1e-9)


def test_shifted_gaussians_match_closed_form(gen: torch.Generator) -> None:
    # x ~ N(0, s²I), y ~ N(δ, s²I), RBF bandwidth h:
    # MMD² = 2 (h²/(h²+2s²))^{d/2} (1 − exp(−‖δ‖²/(2(h²+2s²)))).  Monte-Carlo sd at n = 2000 is ≈ 0.0032.
    d, s, h, n = 5, 1.0, 2.0, 2000
    delta = torch.zeros(d, dtype=F64)
    delta[0] = 1.0
    c = h * h + 2 * s * s
    expected = 2 * (h * h / c) ** (d / 2) * (1 - math.exp(-float(delta @ delta) / (2 * c)))
    x, y = s * randn(gen, n, d), s * randn(gen, n, d) + delta
    for est in ("unbiased", "paired"):
        assert mmd2(x, y, bandwidth=h, estimator=est, chunk=300).mmd2 == pytest.approx(expected, abs=0.016)
    # E k(x, x') itself
    assert mmd2(x, y, bandwidth=h).mean_kxx == pytest.approx((h * h / c) ** (d / 2), abs=0.01)


def test_memorisation_pitfall_identical_paired_samples(gen: torch.Generator) -> None:
    """y = x: biased and paired are 0; unbiased sits at its floor −2(1 − k̄)/(n − 1) (PAPER.md §4)."""
    n = 200
    x = randn(gen, n, 3)
    biased = mmd2(x, x.clone(), bandwidth="median", estimator="biased", chunk=64)
    paired = mmd2(x, x.clone(), bandwidth="median", estimator="paired", chunk=64)
    unbiased = mmd2(x, x.clone(), bandwidth="median", estimator="unbiased", chunk=64)
    assert abs(biased.mmd2) < 1e-12
    assert abs(paired.mmd2) < 1e-12
    k_bar = float(direct_kernel(x, x, unbiased.bandwidths).mean())  # over all n² pairs, diagonal included
    assert unbiased.mmd2 == pytest.approx(-2 * (1 - k_bar) / (n - 1), rel=1e-9)
    assert unbiased.mmd2 < -1e-3
    # near-perfect reproductions: biased and paired grow with the error, the unbiased floor does not rank them
    small = [mmd2(x, x + eps * randn(gen, n, 3), bandwidth=1.0, estimator="paired").mmd2 for eps in (1e-4, 1e-2)]
    assert 0 < small[0] < small[1]
    assert small[0] < 1e-6


def test_block_size_bounded_by_chunk(gen: torch.Generator, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[tuple[int, int]] = []
    original = metrics_mmd._kernel_block

    def recording(a, b, a_sq, b_sq, gammas):  # type: ignore[no-untyped-def]
        seen.append((a.shape[0], b.shape[0]))
        return original(a, b, a_sq, b_sq, gammas)

    monkeypatch.setattr(metrics_mmd, "_kernel_block", recording)
    x, y = randn(gen, 300, 4), randn(gen, 250, 4)
    res = mmd2(x, y, bandwidth=[1.0, 2.0], chunk=64)
    assert seen and max(r for r, _ in seen) <= 64 and max(c for _, c in seen) <= 64
    # upper blocks for xx (5·6/2) and yy (4·5/2), all blocks for xy (5·4)
    assert len(seen) == 15 + 10 + 20
    monkeypatch.setattr(metrics_mmd, "_kernel_block", original)
    assert res.mmd2 == pytest.approx(mmd2(x, y, bandwidth=[1.0, 2.0], chunk=10_000).mmd2, rel=1e-10)


def test_memory_estimate_and_guards(gen: torch.Generator) -> None:
    # the 20k × 20k, d = 50 case fits in well under a GiB at the default chunk
    assert mmd_memory_bytes(20_000, 20_000, 50, 2048) < 0.2 * metrics.GIB
    x, y = randn(gen, 50, 3), randn(gen, 50, 3)
    with pytest.raises(DataError, match="GiB"):
        mmd2(x, y, bandwidth=1.0, max_memory_bytes=1000)
    with pytest.raises(DataError, match="subsample"):
        mmd2(x, y, bandwidth=1.0, max_pairs=100)


def test_smoke_n3000_d50(gen: torch.Generator) -> None:
    x, y = randn(gen, 3000, 50), randn(gen, 3000, 50)
    same = mmd2(x, y, chunk=700)
    shifted = mmd2(x, y + 0.5, chunk=700)
    assert abs(same.mmd2) < 1e-3
    assert shifted.mmd2 > 20 * abs(same.mmd2) and shifted.mmd2 > 1e-3


def test_median_heuristic_subsample_is_seeded(gen: torch.Generator) -> None:
    x = randn(gen, 1500, 2)
    y = randn(gen, 1500, 2)
    h1 = median_heuristic(x, y, max_points=500, seed=3)
    assert h1 == median_heuristic(x, y, max_points=500, seed=3)
    # close to the full-sample value: E‖z − z'‖² = 2d for standard normals in d = 2, median ≈ 2·2·ln 2
    assert h1 == pytest.approx(math.sqrt(4 * math.log(2) / 2), rel=0.1)
    with pytest.raises(DataError, match="explicit bandwidth"):
        median_heuristic(torch.ones(10, 2), torch.ones(10, 2))


def test_mmd_bad_inputs(gen: torch.Generator) -> None:
    x = randn(gen, 10, 3)
    with pytest.raises(DataError, match="at least 2"):
        mmd2(torch.empty(0, 3), x)
    with pytest.raises(DataError, match="at least 2"):
        mmd2(x[:1], x, bandwidth=1.0)
    bad = x.clone()
    bad[2, 1] = float("nan")
    with pytest.raises(DataError, match="non-finite"):
        mmd2(bad, x)
    with pytest.raises(ShapeError, match="coordinates"):
        mmd2(x, randn(gen, 10, 4))
    with pytest.raises(ShapeError, match="n == m"):
        mmd2(x, randn(gen, 9, 3), estimator="paired")
    with pytest.raises(ShapeError, match=r"\(n, \*point_shape\)"):
        mmd2(torch.randn(10), x)
    with pytest.raises(ConfigError, match="estimator"):
        mmd2(x, x, estimator="vstat")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="kernel"):
        mmd2(x, x, kernel="laplace")
    for bw in (0.0, -1.0, float("inf"), [], [1.0, -2.0], "silverman"):
        with pytest.raises(ConfigError, match="bandwidth"):
            mmd2(x, x, bandwidth=bw)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="chunk"):
        mmd2(x, x, chunk=0)
    # biased works with a single point per set
    assert mmd2(x[:1], x[1:2], bandwidth=1.0, estimator="biased").mmd2 == pytest.approx(
        2 - 2 * math.exp(-float((x[0] - x[1]).pow(2).sum()) / 2))


# ---------------------------------------------------------------------------------------------- pairwise metrics


def test_partner_distances_match_loops(gen: torch.Generator) -> None:
    xh, a, b = randn(gen, 17, 2, 3), randn(gen, 17, 2, 3), randn(gen, 17, 2, 3)
    out = partner_distances(xh, {"ot": a, "shuffled": b})
    for name, p in (("ot", a), ("shuffled", b)):
        d = [math.sqrt(sum((float(xh[i].flatten()[k]) - float(p[i].flatten()[k])) ** 2 for k in range(6)))
             for i in range(17)]
        st_ = out[name]
        assert st_.per_sample.tolist() == pytest.approx(d, rel=1e-12)
        assert st_.mean == pytest.approx(float(np.mean(d)))
        assert st_.std == pytest.approx(float(np.std(d, ddof=1)))
        assert st_.median == pytest.approx(float(np.median(d)))
        assert st_.n == 17
    assert partner_distances(xh[:1], {"x": a[:1]})["x"].std == 0.0
    with pytest.raises(ShapeError, match="one partner per output"):
        partner_distances(xh, {"x": a[:5]})
    with pytest.raises(ConfigError, match="empty"):
        partner_distances(xh, {})


def test_pairing_accuracy_matches_loop(gen: torch.Generator) -> None:
    n, M = 40, 55
    targets = randn(gen, M, 3)
    partner = torch.randint(0, M, (n,), generator=gen)
    # half the outputs land near their partner, the rest anywhere
    xh = torch.where(torch.arange(n)[:, None] < 20, targets[partner] + 0.01 * randn(gen, n, 3), randn(gen, n, 3))
    res = pairing_accuracy(xh, targets, partner, chunk=8)
    nearest = [min(range(M), key=lambda j: float((xh[i] - targets[j]).pow(2).sum())) for i in range(n)]
    assert res.nearest.tolist() == nearest
    expected = sum(nearest[i] == int(partner[i]) for i in range(n)) / n
    assert res.accuracy == pytest.approx(expected) and float(res) == res.accuracy
    assert expected >= 0.5  # the 20 close ones are found
    # default partner = row i
    perfect = pairing_accuracy(targets[:n] + 1e-9, targets, chunk=7)
    assert perfect.accuracy == 1.0 and bool(perfect.correct.all())
    with pytest.raises(ShapeError, match="partner_index"):
        pairing_accuracy(randn(gen, 60, 3), targets)
    # repeated targets are one target: an output on its partner's value is correct whichever copy is met first
    twice = torch.cat([targets[:10], targets[:10]])
    on_second_copy = pairing_accuracy(twice[10:] + 1e-9, twice, torch.arange(10, 20))
    assert on_second_copy.accuracy == 1.0
    # and a different value is still a miss
    assert pairing_accuracy(twice[:10], twice, (torch.arange(10) + 1) % 10).accuracy == 0.0
    with pytest.raises(DataError, match="outside"):
        pairing_accuracy(xh, targets, torch.full((n,), M))
    with pytest.raises(ShapeError, match="coordinates"):
        pairing_accuracy(xh, randn(gen, M, 2))


def test_nn_distance_ratio_matches_loop(gen: torch.Generator) -> None:
    train = randn(gen, 30, 4)
    xh = torch.cat([train[:5] + 1e-3 * randn(gen, 5, 4), randn(gen, 15, 4)])
    res = nn_distance_ratio(xh, train, chunk=4)
    for i in range(xh.shape[0]):
        d = sorted(float((xh[i] - train[j]).norm()) for j in range(30))
        assert float(res.nn1_distance[i]) == pytest.approx(d[0], rel=1e-10)
        assert float(res.nn2_distance[i]) == pytest.approx(d[1], rel=1e-10)
        assert float(res.ratio[i]) == pytest.approx(d[0] / d[1], rel=1e-10)
    assert res.nn1_index[:5].tolist() == list(range(5))
    assert res.fraction_below == pytest.approx(float((res.ratio < 1 / 3).double().mean()))
    assert bool((res.ratio[:5] < 1 / 3).all())
    # an exact copy of a duplicated training point: both distances 0, ratio defined as 0
    dup = torch.cat([train, train[:1]])
    assert float(nn_distance_ratio(train[:1], dup).ratio[0]) == 0.0
    with pytest.raises(DataError, match="at least 2"):
        nn_distance_ratio(xh, train[:1])
    with pytest.raises(ConfigError, match="threshold"):
        nn_distance_ratio(xh, train, threshold=0)


# ---------------------------------------------------------------------------------------------- straightness


def test_straightness_zero_for_straight_paths(gen: torch.Generator) -> None:
    x0, x1 = randn(gen, 8, 3), randn(gen, 8, 3)
    times = torch.linspace(0, 1, 21, dtype=F64) ** 2  # non-uniform grid, constant-speed straight lines
    traj = (1 - times)[:, None, None] * x0 + times[:, None, None] * x1
    res = path_straightness(traj, times)
    assert res.straightness == pytest.approx(0.0, abs=1e-20) and res.normalized == pytest.approx(0.0, abs=1e-20)
    assert res.kinetic_energy == pytest.approx(float((x1 - x0).pow(2).sum(1).mean()), rel=1e-12)
    # the same straight paths traversed over t ∈ [1, 3]: still straight, energy ‖Δ‖²/L with L = 2
    res2 = path_straightness(traj, 1 + 2 * times)
    assert res2.straightness == pytest.approx(0.0, abs=1e-20)
    assert res2.kinetic_energy == pytest.approx(float((x1 - x0).pow(2).sum(1).mean()) / 2, rel=1e-12)


def test_straightness_quarter_circle() -> None:
    # x(t) = (cos πt/2, sin πt/2): ∫‖v‖² = π²/4, ‖x1 − x0‖² = 2, S = π²/4 − 2
    times = torch.linspace(0, 1, 2001, dtype=F64)
    traj = torch.stack([torch.cos(math.pi * times / 2), torch.sin(math.pi * times / 2)], -1)[:, None, :]
    res = path_straightness(traj, times)
    assert res.straightness == pytest.approx(math.pi**2 / 4 - 2, rel=1e-5)
    assert res.normalized == pytest.approx((math.pi**2 / 4 - 2) / 2, rel=1e-5)


def test_straightness_identity_and_loop(gen: torch.Generator) -> None:
    times = torch.sort(torch.rand(9, generator=gen, dtype=F64)).values
    times[0], times[-1] = 0.0, 1.0
    traj = randn(gen, 9, 4, 2)
    res = path_straightness(traj, times)
    chord = traj[-1] - traj[0]
    for b in range(4):
        s = sum(float((times[k + 1] - times[k])
                      * (chord[b] - (traj[k + 1, b] - traj[k, b]) / (times[k + 1] - times[k])).pow(2).sum())
                for k in range(8))
        assert float(res.per_sample[b]) == pytest.approx(s, rel=1e-12)
    assert res.straightness == pytest.approx(res.kinetic_energy - float(chord.pow(2).sum(1).mean()), rel=1e-10)
    with pytest.raises(DataError, match="increasing"):
        path_straightness(traj, times.flip(0))
    with pytest.raises(ShapeError, match="one entry per saved state"):
        path_straightness(traj, times[:-1])


# ---------------------------------------------------------------------------------------------- rotations


def spd(g: torch.Generator, d: int) -> torch.Tensor:
    B = randn(g, d, d)
    return B @ B.T + 0.5 * torch.eye(d, dtype=F64)


@pytest.mark.parametrize("angle", [0.0, 30.0, 90.0, 120.0, 170.0, -45.0, -170.0, 179.9])
def test_rotation_angle_2d_with_stretch(gen: torch.Generator, angle: float) -> None:
    R = rotation_matrix(angle)
    assert rotation_angle(R) == pytest.approx(angle, abs=1e-8)
    P = spd(gen, 2)
    assert rotation_angle(R @ P) == pytest.approx(angle, abs=1e-8)
    pd = polar_decomposition(R @ P)
    assert torch.allclose(pd.U, R, atol=1e-12) and torch.allclose(pd.P, P, atol=1e-10)
    assert pd.principal_angles_deg[0] == pytest.approx(abs(angle), abs=1e-8)


def test_rotation_angle_3d_with_stretch(gen: torch.Generator) -> None:
    axis = torch.nn.functional.normalize(randn(gen, 3), dim=0)
    theta = math.radians(117.0)
    K = torch.tensor([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]], dtype=F64)
    R = torch.eye(3, dtype=F64) + math.sin(theta) * K + (1 - math.cos(theta)) * K @ K  # Rodrigues
    P = spd(gen, 3)
    assert rotation_angle(R @ P) == pytest.approx(117.0, abs=1e-8)
    # 4-D: two planes rotated by 40° and 150°
    R4 = rotation_matrix(40.0, 4, (0, 1)) @ rotation_matrix(150.0, 4, (2, 3))
    pd = polar_decomposition(R4 @ spd(gen, 4))
    assert pd.principal_angles_deg == pytest.approx((150.0, 40.0), abs=1e-8)
    assert rotation_angle(R4) == pytest.approx(150.0, abs=1e-8)


@settings(max_examples=40, deadline=None)
@given(st.floats(-179.0, 179.0), st.floats(0.2, 5.0), st.floats(0.2, 5.0), st.floats(0, math.pi))
def test_rotation_angle_property(angle: float, s1: float, s2: float, phi: float) -> None:
    Q = rotation_matrix(math.degrees(phi))
    P = Q @ torch.diag(torch.tensor([s1, s2], dtype=F64)) @ Q.T
    assert rotation_angle(rotation_matrix(angle) @ P) == pytest.approx(angle, abs=1e-8)


def test_reflection_and_singular() -> None:
    Fl = torch.diag(torch.tensor([1.0, -1.0], dtype=F64)) @ rotation_matrix(30.0)
    with pytest.raises(DataError, match="reflection"):
        rotation_angle(Fl)
    assert math.isnan(rotation_angle(Fl, on_reflection="nan"))
    assert polar_decomposition(Fl).reflection
    # 3-D reflection ∘ rotation by 60° in the other plane: the unpaired −1 is dropped from the angles
    F3 = torch.diag(torch.tensor([1.0, 1.0, -1.0], dtype=F64)) @ rotation_matrix(60.0, 3, (0, 1))
    assert polar_decomposition(F3).principal_angles_deg == pytest.approx((60.0,), abs=1e-8)
    with pytest.raises(DataError, match="singular"):
        rotation_angle(torch.tensor([[1.0, 2.0], [2.0, 4.0]], dtype=F64))
    with pytest.raises(ShapeError, match="square"):
        rotation_angle(torch.ones(2, 3))
    with pytest.raises(ConfigError, match="on_reflection"):
        rotation_angle(torch.eye(2), on_reflection="ignore")  # type: ignore[arg-type]


def test_fitted_linear_map_recovers_affine_coupling(gen: torch.Generator) -> None:
    A = rotation_matrix(120.0) @ torch.tensor([[2.0, 0.3], [0.3, 0.5]], dtype=F64)
    b = torch.tensor([5.0, -1.0], dtype=F64)
    x0 = randn(gen, 100, 2)
    A_hat, b_hat = fitted_linear_map(x0, x0 @ A.T + b)
    assert torch.allclose(A_hat, A, atol=1e-12) and torch.allclose(b_hat, b, atol=1e-12)
    assert rotation_angle(A_hat) == pytest.approx(120.0, abs=1e-8)
    # with noise, still close
    A_n, _ = fitted_linear_map(x0, x0 @ A.T + b + 0.01 * randn(gen, 100, 2))
    assert rotation_angle(A_n) == pytest.approx(120.0, abs=1.0)
    with pytest.raises(DataError, match="at least 3 pairs"):
        fitted_linear_map(x0[:2], x0[:2])
    with pytest.raises(DataError, match="general position"):
        line = torch.linspace(0, 1, 10, dtype=F64)[:, None] * torch.tensor([[1.0, 1.0]], dtype=F64)
        fitted_linear_map(line, line)
    with pytest.raises(ShapeError, match="same shape"):
        fitted_linear_map(x0, x0[:, :1])


# ---------------------------------------------------------------------------------------------- 180° + μ pairing


def test_rotation_pairing_against_direct_distances(gen: torch.Generator) -> None:
    x0 = randn(gen, 300, 2)
    mu = torch.tensor([5.0, 5.0], dtype=F64)
    x1 = -x0 + mu + 0.3 * randn(gen, 300, 2)
    out = metrics.rotation_pairing(x1, x0, mu)
    to_rot, to_tr = (x1 - (-x0 + mu)).norm(dim=1), (x1 - (x0 + mu)).norm(dim=1)
    assert out["fraction_nearer_rotation"] == float((to_rot < to_tr).double().mean())
    assert out["mean_dist_rotation"] == pytest.approx(float(to_rot.mean()), rel=1e-12)
    assert out["rel_error_rotation"] == pytest.approx(float(to_rot.mean() / (2 * x0.norm(dim=1)).mean()), rel=1e-12)
    exact = metrics.rotation_pairing(-x0 + mu, x0, mu)
    assert exact["fraction_nearer_rotation"] == 1.0 and exact["rel_error_rotation"] == 0.0


def test_rotation_pairing_status_every_outcome() -> None:
    status = metrics.rotation_pairing_status
    assert status(0.95, 0.08, 0.2, 2.0) == "reproduces"
    assert status(0.9, 0.1, 0.2, 2.0) == "reproduces"  # both thresholds inclusive
    assert status(0.966, 0.25, 0.6, 2.0) == "partial"  # the rotation side, but not "much" nearer
    assert status(0.7, 0.05, 0.2, 2.0) == "partial"
    assert status(0.4, 0.05, 0.2, 2.0) == "fails"  # most endpoints on the translation side
    assert status(0.6, 0.8, 2.0, 1.0) == "fails"  # nearer the translation target on average
    assert status(0.95, 0.2, 0.5, 2.0, reproduce_fraction=0.95, reproduce_rel_error=0.25) == "reproduces"
    with pytest.raises(ConfigError, match="reproduce_fraction"):
        status(0.9, 0.1, 0.2, 2.0, reproduce_fraction=0.4)


def test_status_verdict_every_outcome() -> None:
    verdict = metrics.status_verdict
    assert verdict(["reproduces", "reproduces"], "reproduces") == "confirmed"
    assert verdict(["fails", "fails"], "reproduces") == "refuted"
    assert verdict(["reproduces", "fails"], "reproduces") == "inconclusive"  # depends on the solver
    # one setting on the other side is a solver-dependent answer, however many agree with the claim
    assert verdict(["fails"] * 9 + ["reproduces"], "reproduces") == "inconclusive"
    assert verdict(["fails"] * 9 + ["reproduces"], "fails") == "inconclusive"
    # a 'partial' setting (e.g. 96.6 % on the rotation side) or a stopped solver is evidence neither way: it cannot
    # veto a strict majority of settings that all say the same, in fig6 and solver_resolution
    assert verdict(["partial", "fails", "fails"], "reproduces") == "refuted"
    assert verdict(["partial", "fails", "fails"], "fails") == "confirmed"
    assert verdict(["fails", "failed", "fails"], "reproduces") == "refuted"
    assert verdict(["reproduces", "partial", "reproduces"], "reproduces") == "confirmed"
    # ... but the decided side needs more than half of all settings: a tie or a minority is inconclusive
    assert verdict(["fails", "failed"], "reproduces") == "inconclusive"
    assert verdict(["fails"] * 4 + ["partial"] * 4, "reproduces") == "inconclusive"
    assert verdict(["fails"] * 5 + ["partial"] * 4, "reproduces") == "refuted"
    assert verdict(["partial", "partial", "fails"], "reproduces") == "inconclusive"
    assert verdict(["partial", "partial", "reproduces"], "reproduces") == "inconclusive"
    assert verdict(["partial"] * 3, "reproduces") == "inconclusive"
    assert verdict(["fails", "fails"], "fails") == "confirmed"
    assert verdict(["reproduces"], "fails") == "refuted"
    assert verdict([], "fails") == "inconclusive"
    assert "more than half" in metrics.STATUS_VERDICT_RULE  # the rule texts say the majority
    with pytest.raises(ConfigError, match="holds"):
        verdict(["fails"], "partial")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="unknown"):
        verdict(["fail"], "fails")


def test_rotation_pairing_on_solvers_exact_fields(gen: torch.Generator) -> None:
    from flowvar.models import CounterexampleField, NoisyCounterexampleField

    x0 = randn(gen, 100, 2)
    mu = torch.tensor([5.0, 5.0], dtype=F64)
    out = metrics.rotation_pairing_on_solvers(CounterexampleField(5.0, 2), x0, mu, ["euler_11", "euler_10",
                                                                                    "midpoint_11"])
    assert isinstance(out["euler_11"], dict) and out["euler_11"]["status"] == "reproduces"
    assert out["euler_11"]["nfe"] == 11
    assert isinstance(out["euler_10"], str) and out["euler_10"].startswith("failed")  # evaluates t = ½
    assert isinstance(out["midpoint_11"], str)
    noisy = metrics.rotation_pairing_on_solvers(NoisyCounterexampleField(5.0, 0.2), x0, mu, ["rk4_20", "dopri5"])
    assert all(isinstance(v, dict) and v["status"] == "fails" for v in noisy.values())
    with pytest.raises(ConfigError, match="euler_101"):
        metrics.rotation_pairing_on_solvers(CounterexampleField(5.0, 2), x0, mu, ["euler"])


def test_counterexample_min_loss_matches_monte_carlo(gen: torch.Generator) -> None:
    """L_min(σ) = 4dσ·arctan(1/σ): the CFM loss of the exact σ minimiser on the 180° + μ coupling."""
    from flowvar.couplings import RotatedOTCoupling
    from flowvar.gaussian import counterexample_problem
    from flowvar.interpolants import Interpolant
    from flowvar.loss import CFMLoss
    from flowvar.models import NoisyCounterexampleField

    problem, rotation = counterexample_problem(5.0, 2)
    for sigma in (0.05, 0.3):
        loss = CFMLoss(Interpolant(sigma))
        path = loss.draw(RotatedOTCoupling(problem, rotation=rotation), 200_000, gen)
        with torch.no_grad():
            per = (NoisyCounterexampleField(5.0, sigma)(path.xt, path.t) - path.target).pow(2).sum(1)
        se = float(per.std()) / math.sqrt(per.numel())
        assert float(per.mean()) == pytest.approx(metrics.counterexample_min_loss(sigma), abs=4 * se)
    assert metrics.counterexample_min_loss(0.0) == 0.0
    assert metrics.counterexample_min_loss(0.05, dim=3) == pytest.approx(12 * 0.05 * math.atan(20))
    with pytest.raises(ConfigError):
        metrics.counterexample_min_loss(-0.1)


# ---------------------------------------------------------------------------------------------- σ advisor scores


def test_memorisation_score_and_evaluation(gen: torch.Generator) -> None:
    assert memorisation_score(1.0, 10) == 1.0 and memorisation_score(0.1, 10) == 0.0
    x1 = torch.randn(32, 3, generator=gen)
    held = torch.randn(200, 3, generator=gen)
    ref = Reference.build(x1, held, 1 / 3, gen)
    copy = evaluate_outputs(x1.clone(), x1[torch.randint(0, 32, (100,), generator=gen)], ref)
    assert copy["pairing_accuracy"] == 1.0 and copy["memorisation"] == 1.0 and copy["fresh_copy_fraction"] == 1.0
    assert copy["nn_train_over_heldout"] == 0.0 and copy["l2_partner.mean"] == 0.0
    fresh = evaluate_outputs(x1[torch.randperm(32, generator=gen)], torch.randn(200, 3, generator=gen), ref)
    assert fresh["memorisation"] < 0.2 and fresh["fresh_copy_fraction"] < 0.2
    assert abs(fresh["generalisation"]) < copy["generalisation"]
    assert fresh["generalisation"] == fresh["gen_mmd2.unbiased"]


def test_median_nn_distance_against_brute_force(gen: torch.Generator) -> None:
    """median_i min_{j ≠ i} ‖x_i − x_j‖, images flattened, queries limited to the first rows, duplicates at 0."""
    x = torch.randn(41, 2, 3, generator=gen)
    d = torch.cdist(x.flatten(1).double(), x.flatten(1).double())
    d.fill_diagonal_(math.inf)
    nearest = d.min(1).values
    assert metrics.median_nn_distance(x) == pytest.approx(float(nearest.median()), rel=1e-12)
    assert metrics.median_nn_distance(x, max_queries=10) == pytest.approx(float(nearest[:10].median()), rel=1e-12)
    assert metrics.median_nn_distance(torch.cat([x, x])) == 0.0  # every point has a copy
    with pytest.raises(DataError, match="at least 2"):
        metrics.median_nn_distance(x[:1])


# ---------------------------------------------------------------------------------------------- hostile arguments


@pytest.mark.parametrize("bandwidth", [np.float32(1.0), np.float64(1.0), torch.tensor(1.0), np.array(1.0),
                                       torch.tensor([1.0]), [np.float32(1.0)], [torch.tensor(1.0)], 1])
def test_mmd_accepts_numpy_and_torch_scalar_bandwidths(gen: torch.Generator, bandwidth: object) -> None:
    # a numpy/torch scalar used to raise "TypeError: ... object is not iterable" (it was taken for a list)
    x, y = randn(gen, 30, 2), randn(gen, 25, 2) + 0.5
    expected = mmd2(x, y, bandwidth=1.0)
    result = mmd2(x, y, bandwidth=bandwidth)  # type: ignore[arg-type]
    assert result.bandwidths == (1.0,)
    assert result.mmd2 == expected.mmd2


@pytest.mark.parametrize("bandwidth", [np.float32("nan"), torch.tensor(-1.0), np.True_, torch.zeros(2, 2), object()])
def test_mmd_refuses_bad_array_bandwidths_in_one_line(gen: torch.Generator, bandwidth: object) -> None:
    with pytest.raises(ConfigError, match="bandwidth") as info:
        mmd2(randn(gen, 10, 2), randn(gen, 10, 2), bandwidth=bandwidth)  # type: ignore[arg-type]
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("partner", [[0.0, 1.5, 2.0], [0.0, math.nan, 2.0], np.array([0.0, 1.0, 2.5])])
def test_pairing_accuracy_refuses_non_integer_partner_indices(gen: torch.Generator, partner: object) -> None:
    # 1.5 used to be truncated to 1 by .long(), scoring against another row without an error
    targets = randn(gen, 3, 2)
    with pytest.raises(DataError, match=r"partner_index must hold whole numbers.*partner_index\[[12]\]"):
        pairing_accuracy(targets, targets, partner)  # type: ignore[arg-type]


def test_pairing_accuracy_accepts_whole_float_partner_indices(gen: torch.Generator) -> None:
    targets = randn(gen, 3, 2)
    assert pairing_accuracy(targets, targets, [0.0, 1.0, 2.0]).accuracy == 1.0  # type: ignore[arg-type]
    with pytest.raises(DataError, match="integer row indices"):
        pairing_accuracy(targets, targets, torch.tensor([True, False, True]))


def test_rotation_angle_with_a_tensor_as_second_argument_does_not_print_it(gen: torch.Generator) -> None:
    x0, x1 = randn(gen, 500, 2), randn(gen, 500, 2)
    with pytest.raises(ConfigError, match=r"got a Tensor of shape \(500, 2\).*fitted_linear_map") as info:
        rotation_angle(x0, x1)  # type: ignore[arg-type]
    assert "tensor(" not in str(info.value) and len(str(info.value)) < 300


def test_partner_distances_refuses_a_tensor_in_place_of_the_dict() -> None:
    # used to be torch's "Boolean value of Tensor with more than one value is ambiguous"
    x = torch.randn(20, 3, dtype=torch.float64)
    with pytest.raises(ConfigError, match=r"partners must be a dict of named partner sets.*\{'target': x1\}"):
        partner_distances(x, x)  # type: ignore[arg-type]


def test_nearest_neighbours_validates_like_the_other_metrics() -> None:
    g = torch.Generator().manual_seed(4)
    query, ref = torch.randn(30, 1, 2, 2, generator=g), torch.randn(50, 1, 2, 2, generator=g)
    flat_q, flat_r = query.reshape(30, -1).double(), ref.reshape(50, -1).double()
    d, idx = nearest_neighbours(query, ref, 3)  # image-shaped float32: flattened and made float64, as as_matrix does
    d_ref, idx_ref = nearest_neighbours(flat_q, flat_r, 3)
    assert d.dtype == torch.float64 and torch.equal(d, d_ref) and torch.equal(idx, idx_ref)
    brute = torch.cdist(flat_q, flat_r).topk(3, largest=False)
    torch.testing.assert_close(d, brute.values, rtol=0, atol=1e-12)
    x = torch.randn(20, 3, dtype=torch.float64, generator=g)
    with pytest.raises(ShapeError, match=r"query has points of 3 coordinates but ref has 2"):
        nearest_neighbours(x, x[:, :2])
    with pytest.raises(ShapeError, match=r"query must have shape \(n, \*point_shape\)"):
        nearest_neighbours(x[0], x)
    with pytest.raises(DataError, match="ref holds 3 non-finite"):
        nearest_neighbours(x, torch.cat([x[:-1], torch.full((1, 3), math.nan, dtype=torch.float64)]))


def test_why_not_discriminating_every_outcome() -> None:
    """fig6 judges a solver setting only where the exact σ = 0 field reproduces the rotation pairs and the exact
    σ = c minimiser fails to; every other combination has its own reason (one classification for the evidence's
    long words and the report's short ones)."""
    from flowvar.metrics import why_not_discriminating as why

    assert why("reproduces", "fails") is None
    assert why(None, "fails") == why("reproduces", None) == "unknown"
    assert why("failed", "fails") == why("failed: undefined at t = 1/2", "reproduces") == "sigma0_stops"
    assert why("partial", "fails") == why("fails", "fails") == "sigma0_misses"
    assert why("reproduces", "failed") == why("reproduces", "failed: step budget") == "contrast_stops"
    assert why("reproduces", "reproduces") == "contrast_reproduces"
    assert why("reproduces", "partial") == "contrast_partial"
