"""MMD²: the kernel two-sample statistic with an RBF kernel, three estimators, in chunk × chunk blocks."""

from __future__ import annotations

import math
import numbers
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from torch import Tensor

from flowvar.errors import ConfigError, DataError, ShapeError, check_positive_int, describe
from flowvar.metrics.core import FINITE_CHECK_BLOCK, as_points, block_sq_distances, row_sq_norms, same_dim

Estimator = Literal["unbiased", "biased", "paired"]
ESTIMATORS: tuple[str, ...] = ("unbiased", "biased", "paired")
MULTI_BANDWIDTH_FACTORS: tuple[float, ...] = (0.25, 0.5, 1.0, 2.0, 4.0)
GIB = 1024**3
KERNEL_VANISHES_BELOW = 1e-12
"""When every mean kernel value (within x, within y, across) is below this, :func:`mmd2` warns and records it."""
KERNEL_SATURATES_WITHIN = 1e-8
"""When every mean kernel value (within x, within y, across) is within this of 1, :func:`mmd2` warns and records it.
Why 1e-8: with r = ‖a − b‖²/(2h²) ≲ 1e-8 the kernel e^{−r} = 1 − r + r²/2 − … has its second-order term r²/2 ≲ 5e-17
below float64's resolution at 1 (2.2e-16), so the estimate is exactly the first-order statistic ‖x̄ − ȳ‖²/h² (the
difference of the means, in units of h²): nothing of the samples' shapes is left. The median heuristic cannot reach
it: h² = median d²/2 puts half the pooled pairs (of the subsample, for large sets) at k <= e^{−1}, so the pooled mean
kernel, an average of the three means, is below 0.69; with "multi" the widest kernel, 4h, is at most e^{−1/16} there
(pooled mean below 0.97)."""


class BandwidthWarning(UserWarning):
    """The RBF bandwidth is far from the distances between the points: so far below them that the kernel is 0 off
    the diagonal (``kernel_vanishes``), or so far above them that it is 1 everywhere to within
    :data:`KERNEL_SATURATES_WITHIN` (``kernel_saturates``). The MMD² estimate then says nothing about how the samples
    differ (vanishing), or only how their means differ (saturated)."""


# ----------------------------------------------------------------------------------------------------------
# MMD
# ----------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MMDResult:
    """An MMD² estimate.

    ``mmd2``: the estimate (the unbiased and paired ones can be negative); ``mmd`` = √max(mmd2, 0);
    ``estimator``: "unbiased" | "biased" | "paired"; ``bandwidths``: the RBF bandwidths h used (the kernel
    is their average); ``n``, ``m``: sample sizes; ``mean_kxx``, ``mean_kyy``: mean kernel over distinct
    index pairs i ≠ j within x and within y; ``mean_kxy``: mean kernel over all (i, j) across the sets;
    ``kernel_vanishes``: every one of those means (the defined ones) is below ``KERNEL_VANISHES_BELOW`` = 1e-12,
    i.e. the bandwidth is far below the data's scale and the estimate is uninformative (a :class:`BandwidthWarning`
    was issued); ``kernel_saturates``: every one of them is within ``KERNEL_SATURATES_WITHIN`` = 1e-8 of 1, i.e.
    the bandwidth is far above the data's scale and the estimate compares only the means (a
    :class:`BandwidthWarning` was issued).
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
    kernel_vanishes: bool = False
    kernel_saturates: bool = False


def _check_seed(seed: object) -> int:
    """The median heuristic's subsample seed: an integer >= 0 (a bool, float or string is a mistake, not a seed)."""
    if isinstance(seed, bool | np.bool_) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise ConfigError(f"seed must be an integer >= 0 (it seeds the median heuristic's subsample), got "
                          f"{describe(seed)}; pass e.g. seed=0")
    return int(seed)


def _check_points(name: str, value: object) -> int:
    """A subsample size of the median heuristic: an integer >= 2 (one point has no pair to take a distance of)."""
    whole = isinstance(value, numbers.Integral) or (isinstance(value, float) and value.is_integer())
    if isinstance(value, bool | np.bool_) or not whole or value < 2:  # type: ignore[operator]
        raise ConfigError(f"{name} must be an integer >= 2 (the median heuristic needs at least one pair of points), "
                          f"got {describe(value)}; the default is 2000")
    return int(value)  # type: ignore[call-overload]


def _check_memory_limit(value: object) -> int:
    """``max_memory_bytes``: a whole number of bytes >= 1 (8e9 is accepted, "1G" and True are not)."""
    if (isinstance(value, bool | np.bool_) or not isinstance(value, numbers.Real) or not math.isfinite(value)
            or value != int(value) or value < 1):
        raise ConfigError(f"max_memory_bytes must be a positive integer number of bytes, got {describe(value)}; pass "
                          f"e.g. max_memory_bytes=8 * 1024**3 (8 GiB)")
    return int(value)


def _pooled_rows(x: Tensor, y: Tensor | None, idx: Tensor) -> Tensor:
    """Rows ``idx`` of the pooled sample [x; y], in that order, without forming the (n + m, D) concatenation."""
    if y is None:
        return x[idx]
    n = x.shape[0]
    out = x.new_empty((idx.shape[0], x.shape[1]))
    from_x = idx < n
    out[from_x] = x[idx[from_x]]
    out[~from_x] = y[idx[~from_x] - n]
    return out


def median_heuristic(x: Tensor, y: Tensor | None = None, max_points: int = 2000, seed: int = 0) -> float:
    """Median-heuristic RBF bandwidth h of the pooled sample z = [x; y].

    h² = median{‖z_i − z_j‖² : i < j} / 2, so that k(a, b) = exp(−‖a − b‖² / (2h²)) = exp(−‖a − b‖² / med).
    The median is the usual one (mean of the two middle values for an even count). When the pooled sample
    has more than ``max_points`` points, the median is taken over a uniformly random subset of
    ``max_points`` (>= 2) pooled points drawn with a ``torch.Generator`` seeded by ``seed`` (an integer >= 0;
    reproducible). With P = min(max_points, pooled size) this holds a P × P float64 distance matrix, its upper
    triangle's values and the two P × D copies: 16·P·D + 12·P² bytes at most (48 MB at the default P = 2000),
    besides the float64 copies of x and y that :func:`~flowvar.metrics.core.as_matrix` makes of non-float64 input.
    Raises :class:`DataError` if all (sub)sampled points coincide (h = 0), :class:`ConfigError` for a bad
    ``max_points`` or ``seed``.
    """
    max_points = _check_points("max_points", max_points)
    seed = _check_seed(seed)
    z, shape_x = as_points("x", x)
    yy = None
    if y is not None:
        yy, shape_y = as_points("y", y)
        same_dim("x", z, "y", yy, shape_x, shape_y)
    total = z.shape[0] + (0 if yy is None else yy.shape[0])
    if total < 2:
        raise DataError("the median heuristic needs at least 2 pooled points; pass more samples or an explicit "
                        "bandwidth")
    if total > max_points:
        gen = torch.Generator().manual_seed(seed)
        z = _pooled_rows(z, yy, torch.randperm(total, generator=gen)[:max_points])
    elif yy is not None:
        z = torch.cat([z, yy])
    z = z - z.mean(0)
    sq = row_sq_norms(z)
    d2 = block_sq_distances(z, z, sq, sq)
    del z, sq
    # the strict upper triangle row by row: triu_indices or a bool mask would add 8·P² bytes of int64 indices
    p = d2.shape[0]
    upper = d2.new_empty(p * (p - 1) // 2)
    start = 0
    for i in range(p - 1):
        upper[start:start + p - 1 - i] = d2[i, i + 1:]
        start += p - 1 - i
    del d2
    med = float(np.median(upper.numpy(), overwrite_input=True))  # ``upper`` is ours: partition it in place
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
    # numpy and torch scalars (np.float32(1.0), torch.tensor(1.0), a 0-d array) are single bandwidths, not lists
    if isinstance(bandwidth, Tensor | np.ndarray):
        values = bandwidth.reshape(-1).tolist() if bandwidth.ndim <= 1 else None
        if values is None:
            raise ConfigError(f"bandwidth must be a number > 0 or a 1-D list of them, got {describe(bandwidth)}")
    elif isinstance(bandwidth, numbers.Real):
        values = [bandwidth]
    else:
        try:
            values = list(bandwidth)
        except TypeError:
            raise ConfigError(f"bandwidth must be 'median', 'multi', a number > 0 or a list of numbers > 0, got "
                              f"{describe(bandwidth)}") from None
    if not values:
        raise ConfigError("bandwidth list is empty; pass at least one bandwidth h > 0")
    out = []
    for h in values:
        if isinstance(h, Tensor | np.ndarray) and h.ndim == 0:
            h = h.item()
        if isinstance(h, bool | np.bool_) or not isinstance(h, numbers.Real) or not math.isfinite(h) or h <= 0:
            raise ConfigError(f"every RBF bandwidth must be a finite number > 0, got {describe(h)}")
        out.append(float(h))
    return tuple(out)


def mmd_memory_bytes(n: int, m: int, dim: int, chunk: int, median_points: int = 0) -> int:
    """Peak working memory of :func:`mmd2` in bytes, excluding the caller's own tensors.

    The float64 copies of both sets that mmd2 centres in place, 8·(n + m)·D, plus the largest of what lives
    beside them in turn:

    * input checks: the non-finite count's blocks, 11·max(FINITE_CHECK_BLOCK, D) (only for data whose sum is not
      finite: :func:`~flowvar.metrics.core.check_finite_lowmem`);
    * the median heuristic (``median_points`` = its ``median_points`` for ``bandwidth="median"``/``"multi"``,
      0 for a fixed bandwidth), with P = min(median_points, n + m): 16·P·D + 12·P² (:func:`median_heuristic`);
    * the kernel sums: at most three live chunk × chunk float64 blocks (squared distances, one kernel term, the
      running mixture), one chunk × D difference or square, and the row norms: 8·(3·chunk² + chunk·D + 2(n + m)).

    Measured against the peak RSS of a call in tests/test_metrics_review_m.py.
    """
    p = min(median_points, n + m)
    checks = 11 * max(FINITE_CHECK_BLOCK, dim)
    median = 16 * p * dim + 12 * p * p if p >= 2 else 0
    kernel = 8 * (3 * chunk * chunk + chunk * dim + 2 * (n + m))
    return 8 * (n + m) * dim + max(checks, median, kernel)


def _kernel_block(a: Tensor, b: Tensor, a_sq: Tensor, b_sq: Tensor, gammas: Sequence[float]) -> Tensor:
    """Mixture RBF kernel on one block: (1/|γ|) Σ_γ exp(−γ ‖a_i − b_j‖²), γ = 1/(2h²). Shape (ra, rb)."""
    d2 = block_sq_distances(a, b, a_sq, b_sq)
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
    sq = row_sq_norms(x, chunk)
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
    x_sq, y_sq = row_sq_norms(x, chunk), row_sq_norms(y, chunk)
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
        d2 = (x[i:min(i + chunk, r)] - y[i:min(i + chunk, r)]).pow_(2).sum(1)  # one chunk × D temporary
        diag += float(sum(torch.exp(-g * d2) for g in gammas).sum()) / len(gammas)
    return off, diag


def _owned(matrix: Tensor, original: object) -> Tensor:
    """``matrix`` (from :func:`as_matrix`) if it is a copy of ``original``, else a copy of it: mmd2 centres its
    matrices in place and must never write into the caller's tensor or array (as_matrix passes a float64 CPU matrix,
    or a view of one, unchanged)."""
    if isinstance(original, list | tuple):  # a Python sequence is always copied into a new tensor
        return matrix
    if matrix.untyped_storage().data_ptr() == torch.as_tensor(original).untyped_storage().data_ptr():
        return matrix.clone()
    return matrix


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

    Computation: float64, points centred on the pooled mean (n·x̄ + m·ȳ)/(n + m) in place on mmd2's own copies
    (the caller's tensors are never modified), kernel sums accumulated over ``chunk`` × ``chunk`` blocks (never an
    n × m matrix); symmetric within-set sums use upper blocks only. Peak memory: :func:`mmd_memory_bytes`.
    Cost ~ (n² + m² + 2nm)/2 · (D multiply-adds + |H| exponentials): 20 000 × 20 000 points in D = 50 took
    about 2 minutes with ``"multi"`` on 2 CPU cores (about 0.75 GB peak RSS, torch included).

    When every mean kernel value is below 1e-12 (a fixed bandwidth far below the distances between the points) the
    estimate is uninformative: the result records ``kernel_vanishes=True`` and a :class:`BandwidthWarning` says so.
    When every mean kernel value is within 1e-8 of 1 (a fixed bandwidth far above the distances, e.g. in the wrong
    units) the estimate is only the difference of the means (:data:`KERNEL_SATURATES_WITHIN`): the result records
    ``kernel_saturates=True`` and a :class:`BandwidthWarning` says so. The median heuristic triggers neither.

    Raises :class:`DataError` when :func:`mmd_memory_bytes` exceeds ``max_memory_bytes`` or n·m exceeds
    ``max_pairs`` (subsample, or lower ``chunk``), or for a missing (None) or non-numeric sample,
    :class:`ShapeError` for mismatched point shapes (:func:`~flowvar.metrics.core.same_dim`: sets of different D,
    or two un-flattened sets of different layouts such as (3, 8, 8) and (8, 8, 3) images; a flat (n, D) set beside
    an (n, *shape) one with prod(shape) = D is accepted) or an unpaired "paired" call, :class:`ConfigError` for
    unknown options, a bandwidth whose 2h² under- or overflows, ``median_points`` < 2, a ``seed`` that is not an
    integer >= 0 and a ``max_memory_bytes`` that is not a positive integer.
    """
    if kernel != "rbf":
        raise ConfigError(f"unknown kernel {kernel!r}; only 'rbf' is implemented")
    if estimator not in ESTIMATORS:
        raise ConfigError(f"unknown MMD estimator {estimator!r}; choose one of {list(ESTIMATORS)}")
    chunk = check_positive_int("chunk", chunk)
    median_points = _check_points("median_points", median_points)
    seed = _check_seed(seed)
    max_memory_bytes = _check_memory_limit(max_memory_bytes)
    min_rows = 1 if estimator == "biased" else 2
    xm, shape_x = as_points("x", x, min_rows)
    ym, shape_y = as_points("y", y, min_rows)
    same_dim("x", xm, "y", ym, shape_x, shape_y)
    n, m, dim = xm.shape[0], ym.shape[0], xm.shape[1]
    if estimator == "paired" and n != m:
        raise ShapeError(f"the paired MMD estimator pairs row i of x with row i of y and needs n == m, got n={n}, "
                         f"m={m}; use estimator='unbiased' for unpaired samples")
    uses_median = isinstance(bandwidth, str)  # "median"/"multi"; any other string is refused below
    need = mmd_memory_bytes(n, m, dim, min(chunk, max(n, m)), median_points if uses_median else 0)
    if need > max_memory_bytes:
        raise DataError(f"mmd2 on n={n}, m={m} points of {dim} coordinates with chunk={chunk} needs about "
                        f"{need / GIB:.1f} GiB (limit {max_memory_bytes / GIB:.1f} GiB; mmd_memory_bytes gives the "
                        f"parts); subsample the sets, lower chunk (the blocks take 24·chunk² bytes) or, with the "
                        f"median heuristic, median_points (its P × P matrix takes about 12·P² bytes)")
    if float(n) * float(m) > max_pairs:
        raise DataError(f"mmd2 on n={n}, m={m} points would evaluate {float(n) * m:.2e} kernel pairs (limit "
                        f"{max_pairs:.0e}); subsample both sets (MMD error shrinks like 1/sqrt(n)) or raise max_pairs")
    hs = _resolve_bandwidths(bandwidth, xm, ym, median_points, seed)
    gammas = []
    for h in hs:
        two_h2 = 2.0 * h * h
        gamma = 1.0 / two_h2 if two_h2 > 0 else math.inf  # 1/(2h²) for a subnormal 2h² is inf, not an error
        if not 0 < gamma < math.inf:
            raise ConfigError(f"the RBF bandwidth h={h!r} is out of float64 range: 2h² {'under' if h < 1 else 'over'}"
                              f"flows, so the kernel exp(-d²/(2h²)) is undefined; pass a bandwidth in the data's "
                              f"units or bandwidth='median' (the median heuristic)")
        gammas.append(gamma)
    # centre on the pooled mean without a (n + m, D) concatenation, in place on copies that belong to this call
    xm, ym = _owned(xm, x), _owned(ym, y)
    center = (xm.sum(0) + ym.sum(0)) / (n + m)
    xm.sub_(center)
    ym.sub_(center)

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
    mean_kxx = kxx / (n * (n - 1)) if n > 1 else float("nan")
    mean_kyy = kyy / (m * (m - 1)) if m > 1 else float("nan")
    mean_kxy = kxy / (n * m)
    defined = [k for k in (mean_kxx, mean_kyy, mean_kxy) if not math.isnan(k)]
    vanishes = max(defined) < KERNEL_VANISHES_BELOW
    saturates = 1.0 - min(defined) < KERNEL_SATURATES_WITHIN
    if vanishes:  # the unbiased and paired estimates read ~0 ("no difference") even for disjoint samples
        warnings.warn(f"mmd2: every mean kernel value is below {KERNEL_VANISHES_BELOW:g} (within x {mean_kxx:.1e}, "
                      f"within y {mean_kyy:.1e}, across {mean_kxy:.1e}) with bandwidth(s) "
                      f"{', '.join(f'{h:.3g}' for h in hs)}: the bandwidth is far below the distances between the "
                      f"points, so the estimate {value:.3g} says nothing about how the samples differ; use "
                      f"bandwidth='median' (the median heuristic) or a bandwidth in the data's units, e.g. "
                      f"median_heuristic(y)", BandwidthWarning, stacklevel=2)
    if saturates:  # the kernel is 1 − d²/(2h²) to float64 precision: MMD² = ‖x̄ − ȳ‖²/h², the means alone
        warnings.warn(f"mmd2: every mean kernel value is within {KERNEL_SATURATES_WITHIN:g} of 1 (within x "
                      f"{1 - mean_kxx:.1e}, within y {1 - mean_kyy:.1e}, across {1 - mean_kxy:.1e} below 1) with "
                      f"bandwidth(s) {', '.join(f'{h:.3g}' for h in hs)}: the bandwidth is far above the distances "
                      f"between the points, so the estimate {value:.3g} compares only the samples' means; use "
                      f"bandwidth='median' (the median heuristic) or a bandwidth in the data's units, e.g. "
                      f"median_heuristic(y)", BandwidthWarning, stacklevel=2)
    return MMDResult(
        mmd2=value, mmd=math.sqrt(max(value, 0.0)), estimator=estimator, bandwidths=hs, n=n, m=m,
        mean_kxx=mean_kxx, mean_kyy=mean_kyy, mean_kxy=mean_kxy, kernel_vanishes=vanishes, kernel_saturates=saturates,
    )


__all__ = [
    "ESTIMATORS",
    "GIB",
    "KERNEL_SATURATES_WITHIN",
    "KERNEL_VANISHES_BELOW",
    "MULTI_BANDWIDTH_FACTORS",
    "BandwidthWarning",
    "Estimator",
    "MMDResult",
    "median_heuristic",
    "mmd2",
    "mmd_memory_bytes",
]
