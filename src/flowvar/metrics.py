"""Sample-quality and memorisation metrics (PAPER.md §3.4–3.5, §4 "GMM" and "Images", §5 items 6, 7, 9).

Every function takes point sets of shape (n, *shape) and flattens each point to a vector of
D = prod(shape) coordinates (images (n, C, H, W) become (n, C·H·W)). All arithmetic is float64.

* :func:`mmd2`: kernel two-sample statistic MMD² with an RBF kernel, three estimators, computed in
  chunk × chunk blocks so memory stays bounded for large n.
* :func:`partner_distances`, :func:`pairing_accuracy`, :func:`nn_distance_ratio`: per-pair L2 distances
  and nearest-neighbour memorisation measures (Table 2, §5 item 6); :func:`median_nn_distance`: the spacing of a
  point set (median distance to the nearest other point).
* :func:`path_straightness`: Liu et al.'s straightness of ODE trajectories.
* :func:`fitted_linear_map`, :func:`polar_decomposition`, :func:`rotation_angle`: the rotation angle of a
  fitted affine coupling x̂1 ≈ A x0 + b (Lemma 2 stagnation check, §5 item 7).
* :func:`evaluate_outputs` (with :class:`Reference`, :func:`memorisation_score`, :func:`nn_train_over_heldout`,
  :func:`null_generalisation`): the per-σ memorisation and generalisation scores the σ advisor's rule
  (:mod:`flowvar.advisor`) reads.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

import numpy as np
import torch
from torch import Tensor

from flowvar.errors import ConfigError, DataError, ShapeError, check_finite, check_positive_int

Estimator = Literal["unbiased", "biased", "paired"]
ESTIMATORS: tuple[str, ...] = ("unbiased", "biased", "paired")
MULTI_BANDWIDTH_FACTORS: tuple[float, ...] = (0.25, 0.5, 1.0, 2.0, 4.0)
GIB = 1024**3


# ----------------------------------------------------------------------------------------------------------
# Input handling
# ----------------------------------------------------------------------------------------------------------


def as_matrix(name: str, x: Tensor, min_rows: int = 1) -> Tensor:
    """Validate a point set and return it as a float64 (n, D) matrix.

    ``x``: (n, *shape) with n >= ``min_rows`` and at least one coordinate per point; a 1-D tensor is
    rejected (it is ambiguous between n scalars and one point). Raises :class:`ShapeError` or
    :class:`DataError` (empty, non-finite).
    """
    x = torch.as_tensor(x)
    if x.ndim < 2:
        raise ShapeError(f"{name} must have shape (n, *point_shape), got {tuple(x.shape)}; reshape n scalars "
                         f"to (n, 1) or one point to (1, d)")
    if x.shape[0] < min_rows:
        raise DataError(f"{name} has {x.shape[0]} point(s) but at least {min_rows} are needed; pass more samples")
    flat = x.reshape(x.shape[0], -1)
    if flat.shape[1] == 0:
        raise ShapeError(f"{name} has points with zero coordinates (shape {tuple(x.shape)})")
    if flat.is_complex() or flat.dtype == torch.bool:
        raise DataError(f"{name} must hold real numbers, got dtype {flat.dtype}")
    flat = flat.detach().to("cpu", torch.float64)
    check_finite(name, flat)
    return flat


def _same_dim(name_a: str, a: Tensor, name_b: str, b: Tensor) -> None:
    if a.shape[1] != b.shape[1]:
        raise ShapeError(f"{name_a} has points of {a.shape[1]} coordinates but {name_b} has {b.shape[1]}; both "
                         f"sets must live in the same space (flattened sizes must match)")


def _row_sq_norms(x: Tensor) -> Tensor:
    return (x * x).sum(1)


def _block_sq_distances(a: Tensor, b: Tensor, a_sq: Tensor, b_sq: Tensor) -> Tensor:
    """‖a_i − b_j‖² = ‖a_i‖² + ‖b_j‖² − 2 a_i·b_j for one block, clamped at 0. (ra, D), (rb, D) → (ra, rb)."""
    return torch.addmm(b_sq[None, :], a, b.T, alpha=-2.0).add_(a_sq[:, None]).clamp_min_(0.0)


# ----------------------------------------------------------------------------------------------------------
# MMD
# ----------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MMDResult:
    """An MMD² estimate.

    ``mmd2``: the estimate (the unbiased and paired ones can be negative); ``mmd`` = √max(mmd2, 0);
    ``estimator``: "unbiased" | "biased" | "paired"; ``bandwidths``: the RBF bandwidths h used (the kernel
    is their average); ``n``, ``m``: sample sizes; ``mean_kxx``, ``mean_kyy``: mean kernel over distinct
    index pairs i ≠ j within x and within y; ``mean_kxy``: mean kernel over all (i, j) across the sets.
    """

    mmd2: float
    mmd: float
    estimator: str
    bandwidths: tuple[float, ...]
    n: int
    m: int
    mean_kxx: float
    mean_kyy: float
    mean_kxy: float


def median_heuristic(x: Tensor, y: Tensor | None = None, max_points: int = 2000, seed: int = 0) -> float:
    """Median-heuristic RBF bandwidth h of the pooled sample z = [x; y].

    h² = median{‖z_i − z_j‖² : i < j} / 2, so that k(a, b) = exp(−‖a − b‖² / (2h²)) = exp(−‖a − b‖² / med).
    The median is the usual one (mean of the two middle values for an even count). When the pooled sample
    has more than ``max_points`` points, the median is taken over a uniformly random subset of
    ``max_points`` pooled points drawn with a ``torch.Generator`` seeded by ``seed`` (reproducible); this
    holds a (max_points × max_points) matrix, 32 MB at the default. Raises :class:`DataError` if all
    (sub)sampled points coincide (h = 0).
    """
    z = as_matrix("x", x)
    if y is not None:
        yy = as_matrix("y", y)
        _same_dim("x", z, "y", yy)
        z = torch.cat([z, yy])
    max_points = check_positive_int("max_points", max_points)
    if z.shape[0] < 2:
        raise DataError("the median heuristic needs at least 2 pooled points; pass more samples or an explicit "
                        "bandwidth")
    if z.shape[0] > max_points:
        gen = torch.Generator().manual_seed(int(seed))
        z = z[torch.randperm(z.shape[0], generator=gen)[:max_points]]
    z = z - z.mean(0)
    sq = _row_sq_norms(z)
    d2 = _block_sq_distances(z, z, sq, sq)
    iu = torch.triu_indices(z.shape[0], z.shape[0], offset=1)
    med = float(np.median(d2[iu[0], iu[1]].numpy()))
    if not med > 0:
        raise DataError("the median pairwise distance of the pooled sample is 0 (most points coincide), so the "
                        "median-heuristic bandwidth is 0; pass an explicit bandwidth=h > 0")
    return math.sqrt(med / 2.0)


def _resolve_bandwidths(bandwidth: str | float | Sequence[float], x: Tensor, y: Tensor,
                        median_points: int, seed: int) -> tuple[float, ...]:
    if isinstance(bandwidth, str):
        if bandwidth == "median":
            return (median_heuristic(x, y, median_points, seed),)
        if bandwidth == "multi":
            h = median_heuristic(x, y, median_points, seed)
            return tuple(f * h for f in MULTI_BANDWIDTH_FACTORS)
        raise ConfigError(f"unknown bandwidth {bandwidth!r}; use 'median', 'multi', a number > 0 or a list of "
                          f"numbers > 0")
    values = [bandwidth] if isinstance(bandwidth, int | float) else list(bandwidth)
    if not values:
        raise ConfigError("bandwidth list is empty; pass at least one bandwidth h > 0")
    out = []
    for h in values:
        if isinstance(h, bool) or not isinstance(h, int | float) or not math.isfinite(h) or h <= 0:
            raise ConfigError(f"every RBF bandwidth must be a finite number > 0, got {h!r}")
        out.append(float(h))
    return tuple(out)


def mmd_memory_bytes(n: int, m: int, dim: int, chunk: int) -> int:
    """Peak working memory of :func:`mmd2` in bytes (float64), excluding the caller's own tensors.

    Float64 copies of both sets, (n + m)·D·8, plus at most three live chunk × chunk blocks (the squared
    distances, one kernel term, the running mixture), 3·chunk²·8.
    """
    return 8 * ((n + m) * dim + 3 * chunk * chunk)


def _kernel_block(a: Tensor, b: Tensor, a_sq: Tensor, b_sq: Tensor, gammas: Sequence[float]) -> Tensor:
    """Mixture RBF kernel on one block: (1/|γ|) Σ_γ exp(−γ ‖a_i − b_j‖²), γ = 1/(2h²). Shape (ra, rb)."""
    d2 = _block_sq_distances(a, b, a_sq, b_sq)
    if len(gammas) == 1:
        return d2.mul_(-gammas[0]).exp_()
    k = torch.zeros_like(d2)
    term = torch.empty_like(d2)
    for g in gammas:
        k.add_(torch.mul(d2, -g, out=term).exp_())
    return k.div_(len(gammas))


def _within_sum(x: Tensor, gammas: Sequence[float], chunk: int) -> float:
    """Σ_{i ≠ j} k(x_i, x_j) by upper-triangular blocks (k is symmetric; the exact diagonal k = 1 is left out)."""
    n = x.shape[0]
    sq = _row_sq_norms(x)
    total = 0.0
    for i in range(0, n, chunk):
        a, a_sq = x[i:i + chunk], sq[i:i + chunk]
        for j in range(i, n, chunk):
            blk = _kernel_block(a, x[j:j + chunk], a_sq, sq[j:j + chunk], gammas)
            if i == j:
                total += float(blk.sum()) - float(blk.diagonal().sum())
            else:
                total += 2.0 * float(blk.sum())
    return total


def _cross_sums(x: Tensor, y: Tensor, gammas: Sequence[float], chunk: int) -> tuple[float, float]:
    """(Σ_{i ≠ j} k(x_i, y_j), Σ_{i < min(n,m)} k(x_i, y_i)); the index diagonal from exact differences."""
    n, m = x.shape[0], y.shape[0]
    x_sq, y_sq = _row_sq_norms(x), _row_sq_norms(y)
    off = 0.0
    for i in range(0, n, chunk):
        a, a_sq = x[i:i + chunk], x_sq[i:i + chunk]
        for j in range(0, m, chunk):
            blk = _kernel_block(a, y[j:j + chunk], a_sq, y_sq[j:j + chunk], gammas)
            off += float(blk.sum())
            if i == j:  # same offsets: entries (k, k) of this block are the index pairs (i + k, i + k)
                off -= float(blk.diagonal().sum())
    r = min(n, m)
    diag = 0.0
    for i in range(0, r, chunk):
        d2 = (x[i:min(i + chunk, r)] - y[i:min(i + chunk, r)]).pow(2).sum(1)
        diag += float(sum(torch.exp(-g * d2) for g in gammas).sum()) / len(gammas)
    return off, diag


def mmd2(x: Tensor, y: Tensor, *, kernel: str = "rbf", bandwidth: str | float | Sequence[float] = "median",
         estimator: Estimator = "unbiased", chunk: int = 2048, median_points: int = 2000, seed: int = 0,
         max_memory_bytes: int = 8 * GIB, max_pairs: float = 1e10) -> MMDResult:
    """Squared maximum mean discrepancy between samples ``x`` (n, *shape) and ``y`` (m, *shape).

    Kernel (``kernel="rbf"``, the only one): k(a, b) = (1/|H|) Σ_{h ∈ H} exp(−‖a − b‖² / (2h²)), with
    ``bandwidth``:

    * ``"median"``: H = {h_med}, h_med² = median pairwise squared distance of the pooled sample / 2
      (see :func:`median_heuristic`; subsampled to ``median_points`` points with ``seed`` for large sets);
    * ``"multi"``: H = h_med × {0.25, 0.5, 1, 2, 4} (an average of five kernels);
    * a number h > 0, or a list of them.

    Estimators, with K_xx = Σ_{i≠j} k(x_i, x_j), K_yy likewise, K_xy = Σ_{i,j} k(x_i, y_j):

    * ``"unbiased"`` (U-statistic): K_xx / (n(n−1)) + K_yy / (m(m−1)) − 2 K_xy / (nm). Zero-mean when the
      distributions agree, so it can be negative. It cannot rank near-perfect reproductions: for y = x it
      equals −2(1 − k̄)/(n − 1) with k̄ the mean of k over all n² pairs (PAPER.md §4 "MMD pitfall").
    * ``"biased"`` (V-statistic, diagonals included): (K_xx + n)/n² + (K_yy + m)/m² − 2 K_xy / (nm) ≥ 0;
      exactly 0 for y = x.
    * ``"paired"`` (needs n = m; row i of x paired with row i of y): the U-statistic of
      h(i, j) = k(x_i, x_j) + k(y_i, y_j) − k(x_i, y_j) − k(x_j, y_i) over i ≠ j, i.e.
      (K_xx + K_yy − 2 Σ_{i≠j} k(x_i, y_j)) / (n(n−1)). Also unbiased for MMD², and exactly 0 for y = x.

    Computation: float64, points centred on the pooled mean, kernel sums accumulated over
    ``chunk`` × ``chunk`` blocks (never an n × m matrix); symmetric within-set sums use upper blocks only.
    Cost ~ (n² + m² + 2nm)/2 · (D multiply-adds + |H| exponentials): 20 000 × 20 000 points in D = 50 took
    about 2 minutes with ``"multi"`` on 2 CPU cores (about 0.75 GB peak RSS, torch included).

    Raises :class:`DataError` when :func:`mmd_memory_bytes` exceeds ``max_memory_bytes`` or n·m exceeds
    ``max_pairs`` (subsample, or lower ``chunk``), :class:`ShapeError` for mismatched point shapes or an
    unpaired "paired" call, :class:`ConfigError` for unknown options.
    """
    if kernel != "rbf":
        raise ConfigError(f"unknown kernel {kernel!r}; only 'rbf' is implemented")
    if estimator not in ESTIMATORS:
        raise ConfigError(f"unknown MMD estimator {estimator!r}; choose one of {list(ESTIMATORS)}")
    chunk = check_positive_int("chunk", chunk)
    min_rows = 1 if estimator == "biased" else 2
    xm = as_matrix("x", x, min_rows)
    ym = as_matrix("y", y, min_rows)
    _same_dim("x", xm, "y", ym)
    n, m, dim = xm.shape[0], ym.shape[0], xm.shape[1]
    if estimator == "paired" and n != m:
        raise ShapeError(f"the paired MMD estimator pairs row i of x with row i of y and needs n == m, got n={n}, "
                         f"m={m}; use estimator='unbiased' for unpaired samples")
    need = mmd_memory_bytes(n, m, dim, min(chunk, max(n, m)))
    if need > max_memory_bytes:
        raise DataError(f"mmd2 on n={n}, m={m} points of {dim} coordinates with chunk={chunk} needs about "
                        f"{need / GIB:.1f} GiB (limit {max_memory_bytes / GIB:.1f} GiB); subsample the sets or "
                        f"lower chunk (the block memory is 24·chunk² bytes)")
    if float(n) * float(m) > max_pairs:
        raise DataError(f"mmd2 on n={n}, m={m} points would evaluate {float(n) * m:.2e} kernel pairs (limit "
                        f"{max_pairs:.0e}); subsample both sets (MMD error shrinks like 1/sqrt(n)) or raise max_pairs")
    hs = _resolve_bandwidths(bandwidth, xm, ym, median_points, seed)
    gammas = [1.0 / (2.0 * h * h) for h in hs]
    center = torch.cat([xm, ym]).mean(0)
    xm, ym = xm - center, ym - center

    kxx = _within_sum(xm, gammas, chunk)
    kyy = _within_sum(ym, gammas, chunk)
    kxy_off, kxy_diag = _cross_sums(xm, ym, gammas, chunk)
    kxy = kxy_off + kxy_diag
    if estimator == "unbiased":
        value = kxx / (n * (n - 1)) + kyy / (m * (m - 1)) - 2.0 * kxy / (n * m)
    elif estimator == "biased":
        value = (kxx + n) / n**2 + (kyy + m) / m**2 - 2.0 * kxy / (n * m)
    else:
        value = (kxx + kyy - 2.0 * kxy_off) / (n * (n - 1))
    return MMDResult(
        mmd2=value, mmd=math.sqrt(max(value, 0.0)), estimator=estimator, bandwidths=hs, n=n, m=m,
        mean_kxx=kxx / (n * (n - 1)) if n > 1 else float("nan"),
        mean_kyy=kyy / (m * (m - 1)) if m > 1 else float("nan"),
        mean_kxy=kxy / (n * m),
    )


# ----------------------------------------------------------------------------------------------------------
# Pairwise distances and nearest neighbours
# ----------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DistanceStats:
    """Summary of per-sample distances ‖x̂_i − p_i‖.

    ``per_sample``: (n,) float64; ``mean``, ``median``; ``std``: sample standard deviation (n − 1 in the
    denominator; 0 for n = 1), the "±" of PAPER.md Table 2.
    """

    mean: float
    std: float
    median: float
    per_sample: Tensor

    @property
    def n(self) -> int:
        return self.per_sample.shape[0]


def distance_stats(d: Tensor) -> DistanceStats:
    """:class:`DistanceStats` of a 1-D tensor of distances."""
    d = d.reshape(-1).to(torch.float64)
    if d.numel() == 0:
        raise DataError("no distances to summarise; pass at least one sample")
    std = float(d.std(correction=1)) if d.numel() > 1 else 0.0
    return DistanceStats(mean=float(d.mean()), std=std, median=float(np.median(d.numpy())), per_sample=d)


def partner_distances(x_hat: Tensor, partners: dict[str, Tensor]) -> dict[str, DistanceStats]:
    """L2 distance from each output to each of its named partners.

    ``x_hat``: (n, *shape); ``partners``: name → (n, *shape), row i the partner of x̂_i (e.g. ``{"ot": ...,
    "shuffled": ...}``). Returns name → :class:`DistanceStats` of d_i = ‖x̂_i − p_i‖₂ over the flattened
    points (computed from exact differences, not the expanded form).
    """
    if not partners:
        raise ConfigError("partners is empty; pass at least one named partner set, e.g. {'target': x1}")
    xh = as_matrix("x_hat", x_hat)
    out: dict[str, DistanceStats] = {}
    for name, p in partners.items():
        pm = as_matrix(f"partners[{name!r}]", p)
        if pm.shape != xh.shape:
            raise ShapeError(f"partners[{name!r}] has shape {tuple(pm.shape)} after flattening but x_hat has "
                             f"{tuple(xh.shape)}; pass exactly one partner per output row")
        out[name] = distance_stats((xh - pm).pow(2).sum(1).sqrt())
    return out


def nearest_neighbours(query: Tensor, ref: Tensor, k: int = 1, chunk: int = 1024) -> tuple[Tensor, Tensor]:
    """The k nearest rows of ``ref`` (M, D) to each row of ``query`` (n, D): (distances (n, k), indices (n, k)).

    Candidates are screened with the expanded ‖q‖² + ‖r‖² − 2 q·r in chunk × chunk blocks (a running
    top-k over column blocks, after centring on ref's mean), then the k distances are recomputed from exact
    differences and sorted ascending. Exact ties are broken arbitrarily. Inputs must already be float64
    (n, D) matrices (see :func:`as_matrix`).
    """
    k = check_positive_int("k", k)
    chunk = check_positive_int("chunk", chunk)
    if ref.shape[0] < k:
        raise DataError(f"need at least {k} reference points for {k} nearest neighbours, got {ref.shape[0]}")
    center = ref.mean(0)
    q, r = query - center, ref - center
    q_sq, r_sq = _row_sq_norms(q), _row_sq_norms(r)
    idx_out = torch.empty(q.shape[0], k, dtype=torch.long)
    for i in range(0, q.shape[0], chunk):
        best_d = torch.full((min(chunk, q.shape[0] - i), 0), math.inf, dtype=torch.float64)
        best_i = torch.empty(best_d.shape, dtype=torch.long)
        for j in range(0, r.shape[0], chunk):
            d2 = _block_sq_distances(q[i:i + chunk], r[j:j + chunk], q_sq[i:i + chunk], r_sq[j:j + chunk])
            cand_d = torch.cat([best_d, d2], 1)
            cand_i = torch.cat([best_i, torch.arange(j, j + d2.shape[1]).expand(d2.shape[0], -1)], 1)
            top = torch.topk(cand_d, min(k, cand_d.shape[1]), dim=1, largest=False)
            best_d, best_i = top.values, cand_i.gather(1, top.indices)
        idx_out[i:i + chunk] = best_i
    exact = torch.empty(idx_out.shape, dtype=torch.float64)
    rows = max(1, chunk // k)
    for i in range(0, q.shape[0], rows):
        exact[i:i + rows] = (query[i:i + rows, None, :] - ref[idx_out[i:i + rows]]).pow(2).sum(-1).sqrt()
    exact, order = exact.sort(1)
    return exact, idx_out.gather(1, order)


def median_nn_distance(x: Tensor, max_queries: int | None = None) -> float:
    """The spacing of a point set: median_i min_{j ≠ i} ‖x_i − x_j‖ (float64).

    ``x``: (n, *shape), n >= 2, flattened to (n, D). The queries are the first ``max_queries`` rows (None: all n),
    each against all n rows; a row's own distance 0 is skipped by taking its second-nearest row
    (:func:`nearest_neighbours` with k = 2), so a duplicated point has distance 0 to its copy. For an even number of
    queries the median is the lower of the two middle values (``torch.median``).
    """
    xm = as_matrix("x", x, min_rows=2)
    query = xm if max_queries is None else xm[:check_positive_int("max_queries", max_queries)]
    return float(nearest_neighbours(query, xm, 2)[0][:, 1].median())


@dataclass(frozen=True)
class PairingAccuracy:
    """Nearest-target pairing: ``accuracy`` = mean(``correct``); ``nearest``: (n,) index of the nearest
    candidate; ``correct``: (n,) bool, nearest == own partner. ``float(result)`` gives the accuracy."""

    accuracy: float
    nearest: Tensor
    correct: Tensor

    def __float__(self) -> float:
        return self.accuracy


def pairing_accuracy(x_hat: Tensor, targets: Tensor, partner_index: Tensor | None = None,
                     chunk: int = 1024) -> PairingAccuracy:
    """Fraction of outputs whose nearest candidate target is their own partner (PAPER.md §5 item 6).

    ``x_hat``: (n, *shape); ``targets``: (M, *shape) candidates; ``partner_index``: (n,) long in [0, M),
    default row i (then M >= n). accuracy = (1/n) Σ_i 1[argmin_j ‖x̂_i − targets_j‖ = partner_index_i].
    Searched in chunk × chunk blocks (:func:`nearest_neighbours`).
    """
    xh = as_matrix("x_hat", x_hat)
    tg = as_matrix("targets", targets)
    _same_dim("x_hat", xh, "targets", tg)
    n, M = xh.shape[0], tg.shape[0]
    if partner_index is None:
        if n > M:
            raise ShapeError(f"without partner_index, row i of targets is the partner of x_hat row i, so targets "
                             f"needs at least n={n} rows, got {M}; pass partner_index")
        partner = torch.arange(n)
    else:
        partner = torch.as_tensor(partner_index).reshape(-1).long()
        if partner.shape != (n,):
            raise ShapeError(f"partner_index must have shape ({n},), got {tuple(partner.shape)}")
        if bool(((partner < 0) | (partner >= M)).any()):
            raise DataError(f"partner_index holds values outside [0, {M}); every partner must index a row of "
                            f"targets")
    _, idx = nearest_neighbours(xh, tg, 1, chunk)
    nearest = idx[:, 0]
    correct = nearest == partner
    return PairingAccuracy(accuracy=float(correct.double().mean()), nearest=nearest, correct=correct)


@dataclass(frozen=True)
class NNRatio:
    """Nearest-neighbour distance ratio r_i = d(x̂_i, NN1) / d(x̂_i, NN2) against a training set.

    ``ratio``, ``nn1_distance``, ``nn2_distance``: (n,); ``nn1_index``: (n,) long; ``fraction_below``:
    mean of 1[r_i < ``threshold``] (the memorised fraction).
    """

    ratio: Tensor
    nn1_distance: Tensor
    nn2_distance: Tensor
    nn1_index: Tensor
    threshold: float
    fraction_below: float


def nn_distance_ratio(x_hat: Tensor, train: Tensor, threshold: float = 1.0 / 3.0, chunk: int = 1024) -> NNRatio:
    """Memorisation test of diffusion-model studies (Somepalli et al. 2023; Yoon et al. 2023).

    r_i = ‖x̂_i − NN1(x̂_i)‖ / ‖x̂_i − NN2(x̂_i)‖ with NN1, NN2 the nearest and second-nearest training
    points; a sample counts as memorised when r_i < ``threshold`` (1/3 by default). If both distances are
    0 (x̂_i equals a training point that appears twice) r_i := 0 (a copy). ``train``: (M, *shape), M >= 2.
    """
    if not (isinstance(threshold, int | float) and 0 < threshold <= 1):
        raise ConfigError(f"threshold must be in (0, 1], got {threshold!r}")
    xh = as_matrix("x_hat", x_hat)
    tr = as_matrix("train", train, min_rows=2)
    _same_dim("x_hat", xh, "train", tr)
    dist, idx = nearest_neighbours(xh, tr, 2, chunk)
    d1, d2 = dist[:, 0], dist[:, 1]
    ratio = torch.where(d2 > 0, d1 / d2.clamp_min(torch.finfo(torch.float64).tiny), torch.zeros_like(d1))
    return NNRatio(ratio=ratio, nn1_distance=d1, nn2_distance=d2, nn1_index=idx[:, 0], threshold=float(threshold),
                   fraction_below=float((ratio < threshold).double().mean()))


# ----------------------------------------------------------------------------------------------------------
# Straightness
# ----------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Straightness:
    """Straightness of saved trajectories (Liu et al. 2023, "Flow straight and fast").

    ``per_sample``: (B,) S_i; ``straightness`` = mean S_i; ``normalized`` = mean S_i / mean ‖x_T − x_0‖²/L
    (0 for straight paths); ``kinetic_energy`` = mean ∫‖v‖² dt.
    """

    straightness: float
    normalized: float
    kinetic_energy: float
    per_sample: Tensor


def path_straightness(trajectory: Tensor, times: Tensor) -> Straightness:
    """S = E ∫_{t_0}^{t_K} ‖(X_T − X_0)/L − v_t‖² dt from a saved trajectory, L = t_K − t_0.

    ``trajectory``: (K+1, B, *shape) states at ``times`` (K+1,), strictly increasing. The velocity is the
    forward finite difference v_k = (x_{k+1} − x_k)/Δt_k, constant on [t_k, t_{k+1}], so
    S_i = Σ_k Δt_k ‖(x_K − x_0)/L − v_k‖². For t ∈ [0, 1] (L = 1) this is Liu et al.'s S(Z) =
    E ∫‖(X1 − X0) − v‖² dt, and since Σ_k Δt_k v_k = x_K − x_0 it equals
    E[∫‖v‖² dt − ‖X1 − X0‖²] exactly (kinetic energy minus that of the straight path). 0 iff every path is
    a straight line at constant speed. The finite difference sees only the saved states: curvature
    between them is missed.
    """
    traj = torch.as_tensor(trajectory)
    if traj.ndim < 3:
        raise ShapeError(f"trajectory must have shape (K+1, B, *point_shape), got {tuple(traj.shape)}")
    times = torch.as_tensor(times).to(torch.float64).reshape(-1)
    if times.shape[0] != traj.shape[0] or traj.shape[0] < 2:
        raise ShapeError(f"times must have one entry per saved state (>= 2), got {times.shape[0]} times for "
                         f"{traj.shape[0]} states")
    check_finite("times", times)
    dt = times.diff()
    if bool((dt <= 0).any()):
        raise DataError("times must be strictly increasing; sort the trajectory by time")
    flat = traj.detach().to("cpu", torch.float64).reshape(traj.shape[0], traj.shape[1], -1)
    if flat.shape[1] == 0:
        raise DataError("trajectory holds no samples (B = 0)")
    check_finite("trajectory", flat)
    L = float(times[-1] - times[0])
    chord = (flat[-1] - flat[0]) / L  # (B, D)
    v = flat.diff(dim=0) / dt[:, None, None]  # (K, B, D)
    per = ((chord[None] - v).pow(2).sum(-1) * dt[:, None]).sum(0)
    energy = (v.pow(2).sum(-1) * dt[:, None]).sum(0)
    straight_energy = float((chord.pow(2).sum(-1) * L).mean())
    s = float(per.mean())
    normalized = s / straight_energy if straight_energy > 0 else (0.0 if s == 0 else math.inf)
    return Straightness(straightness=s, normalized=normalized, kinetic_energy=float(energy.mean()), per_sample=per)


# ----------------------------------------------------------------------------------------------------------
# Fitted linear maps and rotation angles
# ----------------------------------------------------------------------------------------------------------


class LinearMap(NamedTuple):
    """x1 ≈ A x0 + b. ``A``: (D, D); ``b``: (D,). Unpacks as ``A, b = fitted_linear_map(x0, x1)``."""

    A: Tensor
    b: Tensor


def fitted_linear_map(x0: Tensor, x1: Tensor) -> LinearMap:
    """Least-squares affine fit x1_i ≈ A x0_i + b over paired rows.

    ``x0``, ``x1``: (n, *shape) → A (D, D), b (D,), minimising Σ_i ‖x1_i − A x0_i − b‖² (float64, lstsq on
    [x0, 1]). Needs n >= D + 1 points in general position; raises :class:`DataError` otherwise.
    """
    a = as_matrix("x0", x0)
    c = as_matrix("x1", x1)
    if a.shape != c.shape:
        raise ShapeError(f"x0 and x1 must be paired sets of the same shape, got {tuple(a.shape)} and "
                         f"{tuple(c.shape)} after flattening")
    n, d = a.shape
    if n < d + 1:
        raise DataError(f"fitting an affine map in {d} dimensions needs at least {d + 1} pairs, got {n}; pass more")
    design = torch.cat([a, torch.ones(n, 1, dtype=torch.float64)], 1)
    sol = torch.linalg.lstsq(design, c, driver="gelsd")
    if int(sol.rank) < d + 1:
        raise DataError(f"the source points span only {int(sol.rank) - 1} of {d} dimensions, so A is not "
                        f"determined; use points in general position")
    coef = sol.solution  # (d + 1, d): x1 = [x0, 1] @ coef
    return LinearMap(A=coef[:d].T.contiguous(), b=coef[d].contiguous())


@dataclass(frozen=True)
class PolarDecomposition:
    """A = U P with U orthogonal and P symmetric positive definite.

    ``reflection``: det U < 0 (U is a rotation composed with a reflection, not a rotation);
    ``principal_angles_deg``: the angles θ_k ∈ [0°, 180°] of U's eigenvalue pairs e^{±iθ_k} (one per pair,
    sorted descending; eigenvalues +1 give 0°, a pair of −1 gives 180°); when ``reflection`` the single
    unpaired −1 eigenvalue is left out.
    """

    U: Tensor
    P: Tensor
    reflection: bool
    principal_angles_deg: tuple[float, ...]


def polar_decomposition(A: Tensor, rcond: float = 1e-12) -> PolarDecomposition:
    """Polar decomposition by SVD: A = W Σ Vᵀ, U = W Vᵀ, P = V Σ Vᵀ (float64).

    Raises :class:`DataError` if A is (numerically) singular, σ_min <= ``rcond`` · σ_max: then U is not
    unique and no rotation angle is defined.
    """
    A = torch.as_tensor(A).to(torch.float64)
    if A.ndim != 2 or A.shape[0] != A.shape[1] or A.shape[0] == 0:
        raise ShapeError(f"A must be a square (d, d) matrix, got shape {tuple(A.shape)}")
    check_finite("A", A)
    W, S, Vh = torch.linalg.svd(A)
    if float(S[-1]) <= rcond * float(S[0]):
        raise DataError(f"A is singular (singular values {float(S[0]):.3g} … {float(S[-1]):.3g}): the fitted map "
                        f"collapses a direction and has no rotation angle; check the fit's inputs")
    U = W @ Vh
    P = Vh.T @ torch.diag(S) @ Vh
    P = (P + P.T) / 2
    reflection = bool(torch.linalg.det(U) < 0)
    eig = torch.linalg.eigvals(U)
    angles = torch.atan2(eig.imag, eig.real).abs()
    angles = angles.sort(descending=True).values
    if reflection:  # drop the one unpaired eigenvalue −1 (angle π)
        angles = angles[1:]
    # eigenvalues come in conjugate pairs e^{±iθ}: keep one per pair (real ±1 pairs also duplicate)
    deg = [math.degrees(float(a)) for a in angles]
    paired = tuple(deg[k] for k in range(0, len(deg) - 1, 2))
    return PolarDecomposition(U=U, P=P, reflection=reflection, principal_angles_deg=paired)


def rotation_angle(A: Tensor, on_reflection: Literal["raise", "nan"] = "raise") -> float:
    """Rotation angle, in degrees, of the orthogonal factor U of A = U P (:func:`polar_decomposition`).

    * d = 2: the signed angle atan2(U₁₀, U₀₀) ∈ (−180°, 180°] (counter-clockwise positive).
    * d > 2: the largest principal rotation angle of U, max_k θ_k ∈ [0°, 180°] (unsigned: no sign is defined).
    * d = 1: 0° (U = +1).

    If det U < 0 (a reflection), no rotation angle exists: ``on_reflection="raise"`` raises
    :class:`DataError`, ``"nan"`` returns NaN (inspect :func:`polar_decomposition` for the details).
    """
    if on_reflection not in ("raise", "nan"):
        raise ConfigError(f"on_reflection must be 'raise' or 'nan', got {on_reflection!r}")
    pd = polar_decomposition(A)
    if pd.reflection:
        if on_reflection == "nan":
            return math.nan
        raise DataError("the orthogonal factor of A has det < 0 (a reflection, not a rotation), so no rotation "
                        "angle exists; pass on_reflection='nan' to flag it, or inspect polar_decomposition(A)")
    d = pd.U.shape[0]
    if d == 1:
        return 0.0
    if d == 2:
        return math.degrees(math.atan2(float(pd.U[1, 0]), float(pd.U[0, 0])))
    return max(pd.principal_angles_deg)


# ----------------------------------------------------------------------------------------------------------
# The 180° + μ coupling (Counter Example 1, Fig. 6): where ODE endpoints land, and one status rule
# ----------------------------------------------------------------------------------------------------------

PairingStatus = Literal["reproduces", "partial", "fails"]
PAIRING_STATUSES: tuple[str, ...] = ("reproduces", "partial", "fails", "failed")
"""The per-setting statuses: the three of :func:`rotation_pairing_status`, and "failed" for a solver that stopped."""


def rotation_pairing(x1_hat: Tensor, x0: Tensor, mu: Tensor) -> dict[str, float]:
    """Where ODE endpoints land relative to the two candidate partners of the 180° + μ coupling (PAPER.md §5.5).

    ``x1_hat``, ``x0``: (n, d); ``mu``: (d,). Rotation partner R x0 + μ = −x0 + μ (the training pair), translation
    target x0 + μ (the OT partner); their gap is ‖R x0 − x0‖ = 2‖x0‖. Returns ``fraction_nearer_rotation`` (the
    share of endpoints strictly nearer the rotation partner), the mean, median and max distance to the rotation
    partner, the mean distance to the translation target (:func:`partner_distances`), ``mean_gap`` = mean 2‖x0‖
    and ``rel_error_rotation`` = mean distance to the rotation partner / mean gap. The one implementation of this
    measurement (``counterexample1``, ``fig6``, ``solver_resolution``).
    """
    rotation, translation = -x0 + mu, x0 + mu
    d = partner_distances(x1_hat, {"rotation": rotation, "translation": translation})
    gap = 2 * x0.double().norm(dim=1)
    nearer = (d["rotation"].per_sample < d["translation"].per_sample).double()
    return {"fraction_nearer_rotation": float(nearer.mean()),
            "mean_dist_rotation": d["rotation"].mean,
            "median_dist_rotation": d["rotation"].median,
            "max_dist_rotation": float(d["rotation"].per_sample.max()),
            "mean_dist_translation": d["translation"].mean,
            "mean_gap": float(gap.mean()),
            "rel_error_rotation": d["rotation"].mean / float(gap.mean())}


def rotation_pairing_status(fraction_nearer_rotation: float, rel_error_rotation: float, mean_dist_rotation: float,
                            mean_dist_translation: float, *, reproduce_fraction: float = 0.9,
                            reproduce_rel_error: float = 0.1) -> PairingStatus:
    """The one status rule of ``fig6`` and ``solver_resolution`` for one (model, solver) setting.

    * ``"reproduces"``: ≥ ``reproduce_fraction`` of the endpoints are nearer R x0 + μ than x0 + μ **and** the mean
      distance to R x0 + μ is ≤ ``reproduce_rel_error`` × the mean gap 2‖x0‖ (PAPER.md §5.5: "much smaller than
      2‖x0‖"; the gap is the scale);
    * ``"fails"``: fewer than half are nearer R x0 + μ, or the mean distance to R x0 + μ is no smaller than to
      x0 + μ;
    * ``"partial"`` otherwise (e.g. 97 % on the rotation side but 0.25 gaps away on average): evidence neither for
      nor against, counted as neither by :func:`status_verdict`.
    """
    if not 0.5 < reproduce_fraction <= 1 or not 0 < reproduce_rel_error < 1:
        raise ConfigError(f"reproduce_fraction must be in (0.5, 1] and reproduce_rel_error in (0, 1), got "
                          f"{reproduce_fraction} and {reproduce_rel_error}")
    if fraction_nearer_rotation >= reproduce_fraction and rel_error_rotation <= reproduce_rel_error:
        return "reproduces"
    if fraction_nearer_rotation < 0.5 or mean_dist_rotation >= mean_dist_translation:
        return "fails"
    return "partial"


def status_verdict(statuses: Sequence[str], holds: Literal["reproduces", "fails"]) -> str:
    """How ``fig6`` and ``solver_resolution`` turn per-setting statuses into one verdict.

    The statement "the rotation pairs are reproduced" (``holds="reproduces"``) or "they are not" (``holds="fails"``)
    is "confirmed" when every setting has status ``holds``, "refuted" when every setting has the opposite status
    ("fails" resp. "reproduces"), and "inconclusive" otherwise: a "partial" setting or a stopped solver ("failed")
    is evidence neither way, and a mixture of both extremes is a solver-dependent answer. No settings:
    "inconclusive".
    """
    opposite = {"reproduces": "fails", "fails": "reproduces"}
    if holds not in opposite:
        raise ConfigError(f"holds must be 'reproduces' or 'fails', got {holds!r}")
    unknown = sorted(set(statuses) - set(PAIRING_STATUSES))
    if unknown:
        raise ConfigError(f"unknown pairing status(es) {unknown}; expected {list(PAIRING_STATUSES)}")
    if not statuses:
        return "inconclusive"
    if all(s == holds for s in statuses):
        return "confirmed"
    if all(s == opposite[holds] for s in statuses):
        return "refuted"
    return "inconclusive"


def rotation_pairing_on_solvers(field: object, x0: Tensor, mu: Tensor, solvers: Sequence[str], *,
                                reproduce_fraction: float = 0.9, reproduce_rel_error: float = 0.1,
                                rtol: float = 1e-6, atol: float = 1e-6, max_dopri_steps: int = 20_000
                                ) -> dict[str, dict[str, object] | str]:
    """Integrate ``field`` from ``x0`` with every named solver and measure where the endpoints land.

    ``solvers``: ``"<method>_<n>"`` for a fixed grid of n uniform steps (``euler``, ``midpoint``, ``heun``, ``rk4``)
    or ``"dopri5"`` (adaptive, ``rtol``/``atol``, at most ``max_dopri_steps`` steps). Per solver:
    :func:`rotation_pairing` plus ``status`` (:func:`rotation_pairing_status`) and ``nfe``; a solver that stops
    (:class:`flowvar.errors.SolverError`, e.g. the exact σ = 0 field evaluated at t = ½) gives the string
    ``"failed: <reason>"``. The grid evaluation of ``fig6`` and ``solver_resolution``.
    """
    from flowvar.errors import SolverError
    from flowvar.sampling import integrate

    out: dict[str, dict[str, object] | str] = {}
    for name in solvers:
        try:
            if name == "dopri5":
                sol = integrate(field, x0, method="dopri5", steps=100, rtol=rtol, atol=atol,  # type: ignore[arg-type]
                                options={"max_num_steps": max_dopri_steps})
            else:
                method, _, steps = name.partition("_")
                if not steps.isdigit():
                    raise ConfigError(f"solver {name!r}: expected '<method>_<steps>' (e.g. 'euler_101') or 'dopri5'")
                sol = integrate(field, x0, method=method, steps=int(steps))  # type: ignore[arg-type]
        except SolverError as e:
            out[name] = f"failed: {str(e).split(';')[0]}"
            continue
        res: dict[str, object] = dict(rotation_pairing(sol.x1, x0, mu))
        res["status"] = rotation_pairing_status(
            res["fraction_nearer_rotation"], res["rel_error_rotation"],  # type: ignore[arg-type]
            res["mean_dist_rotation"], res["mean_dist_translation"],  # type: ignore[arg-type]
            reproduce_fraction=reproduce_fraction, reproduce_rel_error=reproduce_rel_error)
        res["nfe"] = sol.nfe
        out[name] = res
    return out


def counterexample_min_loss(sigma: float, dim: int = 2) -> float:
    """The minimum CFM loss on the 180° + μ coupling at constant interpolant noise σ (target x1 − x0).

    x_t = tμ + s x0 + σz with s = 1 − 2t and u = x1 − x0 = μ − 2x0, so per coordinate
    Var(u | x_t) = 4σ²/(s² + σ²); averaged over t ~ U(0, 1) (s ~ U(−1, 1)): L_min(σ) = 4 d σ arctan(1/σ)
    (our derivation; 0 at σ = 0, where the exact field is defined off t = ½). The loss of the best constant field
    v = μ is 4d, the scale: L_min(0.05)/4d = 0.076 in any d.
    """
    if not math.isfinite(sigma) or sigma < 0:
        raise ConfigError(f"sigma must be a finite number >= 0, got {sigma}")
    check_positive_int("dim", dim)
    return 0.0 if sigma == 0 else 4.0 * dim * sigma * math.atan(1.0 / sigma)


def line_spacing(x0: Tensor, x1: Tensor, chunk: int = 512) -> Tensor:
    """Per pair, the nearest simultaneous approach of another training line: (N,) float64.

    s_i = min_{j ≠ i} min_{t ∈ [0, 1]} ‖μ_i(t) − μ_j(t)‖ with μ_i(t) = (1 − t) x0_i + t x1_i. For a pair (i, j),
    Δ(t) = a + t b with a = x0_i − x0_j and b = u_i − u_j (u = x1 − x0), minimised at t* = clip(−a·b / ‖b‖², 0, 1).
    ‖a‖², a·b and ‖b‖² come from the Gram matrices of x0 and u (so memory is chunk × N, never N² × d);
    float64, squared distances clamped at 0 against rounding. ``x0``, ``x1``: (N, d) with N >= 2.
    """
    if x0.ndim != 2 or x0.shape != x1.shape or x0.shape[0] < 2:
        raise ShapeError(f"line_spacing needs x0 and x1 of the same shape (N, d) with N >= 2, got "
                         f"{tuple(x0.shape)} and {tuple(x1.shape)}")
    chunk = check_positive_int("chunk", chunk)
    p = x0.detach().double()
    u = x1.detach().double() - p
    pp, uu, pu = (p * p).sum(1), (u * u).sum(1), (p * u).sum(1)  # ‖x0_j‖², ‖u_j‖², x0_j·u_j
    n = p.shape[0]
    out = torch.empty(n, dtype=torch.float64)
    for lo in range(0, n, chunk):
        hi = min(n, lo + chunk)
        g_pp, g_uu = p[lo:hi] @ p.T, u[lo:hi] @ u.T
        g_pu, g_up = p[lo:hi] @ u.T, u[lo:hi] @ p.T  # x0_i·u_j and u_i·x0_j
        aa = pp[lo:hi, None] + pp[None, :] - 2 * g_pp
        bb = uu[lo:hi, None] + uu[None, :] - 2 * g_uu
        ab = pu[lo:hi, None] - g_pu - g_up + pu[None, :]
        t_star = torch.where(bb > 0, -ab / bb.clamp_min(torch.finfo(torch.float64).tiny),
                             torch.zeros_like(bb)).clamp(0.0, 1.0)
        d2 = (aa + 2 * t_star * ab + t_star * t_star * bb).clamp_min(0.0)
        d2[torch.arange(hi - lo), torch.arange(lo, hi)] = math.inf  # j ≠ i
        out[lo:hi] = d2.min(1).values.sqrt()
    return out


# ----------------------------------------------------------------------------------------------------------
# Memorisation and generalisation of one trained model (the σ advisor's scores, flowvar.advisor)
# ----------------------------------------------------------------------------------------------------------

#: The keys of :func:`evaluate_outputs` that the σ rule (:func:`flowvar.advisor.recommend_sigma`) reads: the
#: generalisation score G (lower is better) and the memorisation score M (0 = chance, 1 = perfect pairing).
GEN_KEY = "generalisation"
MEM_KEY = "memorisation"


def memorisation_score(accuracy: float, n: int) -> float:
    """(a − 1/N) / (1 − 1/N): pairing accuracy ``accuracy`` on N pairs mapped to 0 = chance, 1 = perfect."""
    if n < 2:
        raise DataError(f"the memorisation score needs N >= 2 training pairs, got {n}")
    chance = 1.0 / n
    return (accuracy - chance) / (1.0 - chance)


@dataclass(frozen=True)
class Reference:
    """What every σ is measured against (built once per data set and seed).

    * ``x1_train``: (N, *shape) the training targets (row i the partner of training source i);
    * ``heldout``: (H, *shape) real data never trained on;
    * ``bandwidth``: the RBF bandwidth (median heuristic of ``heldout``) shared by every σ;
    * ``nn_train``, ``nn_heldout``: (m, *shape) equally large subsets (m = min(N, H)) of the training targets and of
      the held-out data, for the nearest-neighbour ratio (NN distances depend on the reference set's size);
    * ``copy_threshold``: the nearest/second-nearest distance ratio below which an output counts as a copy.
    """

    x1_train: Tensor
    heldout: Tensor
    bandwidth: float
    nn_train: Tensor
    nn_heldout: Tensor
    copy_threshold: float

    @classmethod
    def build(cls, x1_train: Tensor, heldout: Tensor, copy_threshold: float, generator: torch.Generator
              ) -> Reference:
        m = min(x1_train.shape[0], heldout.shape[0])
        tr = torch.randperm(x1_train.shape[0], generator=generator)[:m]
        ho = torch.randperm(heldout.shape[0], generator=generator)[:m]
        return cls(x1_train, heldout, median_heuristic(heldout), x1_train[tr], heldout[ho], copy_threshold)


def nn_train_over_heldout(x: Tensor, train: Tensor, heldout: Tensor) -> float:
    """median_i d(x_i, train) / median_i d(x_i, heldout), d = distance to the nearest row; ``train`` and ``heldout``
    (m, *shape) of equal size. ≈ 1 when the outputs are as close to unseen data as to the training data, → 0 when
    they copy training points."""
    xm = as_matrix("outputs", x)
    d_tr = nearest_neighbours(xm, as_matrix("train", train), 1)[0][:, 0]
    d_ho = nearest_neighbours(xm, as_matrix("heldout", heldout), 1)[0][:, 0]
    den = float(d_ho.median())
    return float(d_tr.median()) / den if den > 0 else math.nan


def evaluate_outputs(x_train_out: Tensor, x_fresh_out: Tensor, ref: Reference) -> dict[str, float]:
    """The per-σ metrics of one trained model (flat, sweep-friendly keys; the σ advisor's scores).

    ``x_train_out``: (N, *shape) Euler outputs from the N training sources (row i from source i);
    ``x_fresh_out``: (n, *shape) outputs from fresh sources. Memorisation: ``pairing_accuracy`` (nearest training
    target is the own partner), ``memorisation`` (:func:`memorisation_score`), ``l2_partner.mean`` / ``.median``
    (‖x̂_i − x1_i‖), ``fresh_copy_fraction`` (share of fresh outputs with NN1/NN2 distance ratio to the training
    targets < ``copy_threshold``), ``fresh_nn_ratio.median``, ``nn_train_over_heldout`` (:func:`nn_train_over_heldout`
    of the fresh outputs). Generalisation: ``gen_mmd2.unbiased`` (= ``generalisation``, the rule's score) and
    ``gen_mmd2.biased`` between the fresh outputs and the held-out data at ``ref.bandwidth``. Raises DataError if an
    output is non-finite (a diverged model).
    """
    n = ref.x1_train.shape[0]
    acc = pairing_accuracy(x_train_out, ref.x1_train).accuracy
    dist = partner_distances(x_train_out, {"partner": ref.x1_train})["partner"]
    ratio = nn_distance_ratio(x_fresh_out, ref.x1_train, ref.copy_threshold)
    out = {"pairing_accuracy": acc, MEM_KEY: memorisation_score(acc, n), "l2_partner.mean": dist.mean,
           "l2_partner.median": dist.median, "fresh_copy_fraction": ratio.fraction_below,
           "fresh_nn_ratio.median": float(ratio.ratio.median()),
           "nn_train_over_heldout": nn_train_over_heldout(x_fresh_out, ref.nn_train, ref.nn_heldout)}
    for est in ("unbiased", "biased"):
        out[f"gen_mmd2.{est}"] = mmd2(x_fresh_out, ref.heldout, bandwidth=ref.bandwidth, estimator=est).mmd2
    out[GEN_KEY] = out["gen_mmd2.unbiased"]
    return out


def null_generalisation(pairs: Sequence[tuple[Tensor, Tensor]], bandwidth: float) -> dict[str, Any]:
    """The generalisation score of real data against real data: unbiased MMD² of each (a, b) pair of independent real
    samples at ``bandwidth``; returns the values, their RMS (≈ the estimator's sd, since the mean is 0 under the null)
    and ``floor`` = 2 × RMS, the rule's absolute noise floor."""
    values = [mmd2(a, b, bandwidth=bandwidth, estimator="unbiased").mmd2 for a, b in pairs]
    rms = float(np.sqrt(np.mean(np.square(values)))) if values else 0.0
    return {"values": values, "rms": rms, "floor": 2.0 * rms}
