"""Shared helpers of the metrics: point sets as float64 matrices and blockwise squared distances."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from flowvar.errors import DataError, ShapeError, describe, nonfinite_error, printable

# ----------------------------------------------------------------------------------------------------------
# Input handling
# ----------------------------------------------------------------------------------------------------------


def real_tensor(name: str, x: object, expected: str) -> Tensor:
    """``x`` as a tensor of real numbers (a tensor as it is, no copy): the input check shared by :func:`as_points` and
    the metrics that take other shapes (a matrix, a trajectory, times, distances). ``expected`` words the shape asked
    for, e.g. "shape (n, *point_shape)". Raises :class:`DataError` for None, data that do not convert to numbers
    (strings, ragged lists) and complex or bool dtypes (``.to(float64)`` would drop the imaginary part with only a
    torch warning, or read flags as 0/1)."""
    if x is None:  # torch's own message is "Could not infer dtype of NoneType"
        raise DataError(f"{name} is None; pass a tensor or array of {expected}")
    try:
        t = torch.as_tensor(x)
    except (TypeError, ValueError, RuntimeError) as e:
        raise DataError(f"{name} must be a tensor or array of numbers of {expected}, got {describe(x)} "
                        f"({printable(str(e))})") from None
    if t.is_complex() or t.dtype == torch.bool:
        raise DataError(f"{name} must hold real numbers, got dtype {t.dtype}; pass real values (the real part, if "
                        f"the imaginary part is known to be 0)")
    return t


def as_points(name: str, x: Tensor, min_rows: int = 1) -> tuple[Tensor, tuple[int, ...]]:
    """Validate a point set and return it as a float64 (n, D) matrix, with the shape of one point.

    ``x``: (n, *shape) with n >= ``min_rows`` and at least one coordinate per point; a 1-D tensor is
    rejected (it is ambiguous between n scalars and one point). Returns (the (n, D) matrix, ``shape``), D =
    prod(shape); the point shape is what :func:`same_dim` compares beyond D (a (3, 8, 8) and an (8, 8, 3) image
    have the same D). Raises :class:`ShapeError` or :class:`DataError` (None, not numeric, empty, non-finite, or
    so large that squared distances overflow: :func:`check_magnitude`).
    """
    x = real_tensor(name, x, "shape (n, *point_shape)")
    if x.ndim < 2:
        raise ShapeError(f"{name} must have shape (n, *point_shape), got {tuple(x.shape)}; reshape n scalars "
                         f"to (n, 1) or one point to (1, d)")
    if x.shape[0] < min_rows:
        raise DataError(f"{name} has {x.shape[0]} point(s) but at least {min_rows} are needed; pass more samples")
    flat = x.reshape(x.shape[0], -1)
    if flat.shape[1] == 0:
        raise ShapeError(f"{name} has points with zero coordinates (shape {tuple(x.shape)})")
    flat = flat.detach().to("cpu", torch.float64)
    check_finite_lowmem(name, flat)
    check_magnitude(name, flat)
    return flat, tuple(x.shape[1:])


def as_matrix(name: str, x: Tensor, min_rows: int = 1) -> Tensor:
    """:func:`as_points` without the point shape: a validated float64 (n, D) matrix of the point set ``x``."""
    return as_points(name, x, min_rows)[0]


FINITE_CHECK_BLOCK = 1 << 17
"""Entries per block of :func:`check_finite_lowmem`'s exact count (its temporaries are ~11 bytes per entry)."""


def check_finite_lowmem(name: str, x: Tensor) -> None:
    """:func:`flowvar.errors.check_finite` for a float64 matrix without its n × D temporaries.

    ``torch.isfinite`` holds |x| and three boolean masks, about 11 bytes per entry: 1.4 times a float64 copy of the
    data. A NaN or Inf always makes the total sum non-finite, so one reduction (no temporary) clears finite data; only
    when the sum is not finite (a NaN/Inf, or finite values whose sum overflows) are the non-finite entries counted,
    ``FINITE_CHECK_BLOCK`` entries at a time, for the same :class:`DataError` as check_finite's.
    """
    if math.isfinite(float(x.sum())):
        return
    rows = max(1, FINITE_CHECK_BLOCK // max(1, x.shape[1]))
    bad = sum(int((~torch.isfinite(x[i:i + rows])).sum()) for i in range(0, x.shape[0], rows))
    if bad:
        raise nonfinite_error(name, bad, x.numel())


def _channels_last(shape: tuple[int, ...]) -> bool:
    """An image point shape (H, W, C) with C <= 4 channels last, as numpy and PIL give them (flowvar's are
    (C, H, W))."""
    return len(shape) == 3 and shape[-1] <= 4 < min(shape[0], shape[1])


def _permute_text(name: str, src: tuple[int, ...], dst: tuple[int, ...]) -> str:
    """``name.permute(0, …)`` that takes points of shape ``src`` to ``dst`` (a permutation of it): each axis of
    ``dst`` from the first unused axis of ``src`` of that size."""
    used: list[int] = []
    for size in dst:
        used.append(next(j for j in range(len(src)) if src[j] == size and j not in used))
    return f"{name}.permute(0, {', '.join(str(j + 1) for j in used)})"


MAX_POINT_NORM = 1e150
"""The largest norm a point may have, bounded by √D · max |x_ij| (:func:`check_magnitude`). Below it every ‖x_i‖² is
at most 1e300, so a squared distance ‖a − b‖² ≤ 4e300, and the sums the metrics build from such terms (the expanded
‖a‖² + ‖b‖² − 2 a·b of :func:`block_sq_distances`, line_spacing's Gram terms, up to 16e300 for the directions
x1 − x0) stay below float64's largest value 1.8e308 with a margin of 1e6. Above it they can overflow to inf (and
inf − inf to NaN): the median heuristic then read "most points coincide", partner distances were inf and
pairing_accuracy(x, x) was 0.1. No real data come near it (float32 ends at 3.4e38)."""


def check_magnitude(name: str, x: Tensor) -> None:
    """Raise :class:`DataError` when the float64 (n, D) matrix ``x`` holds entries so large that √D · max |x_ij|
    exceeds :data:`MAX_POINT_NORM`, saying to rescale the data. One min/max reduction, no n × D temporary."""
    if x.numel() == 0:
        return
    lo, hi = torch.aminmax(x)
    big = max(-float(lo), float(hi))
    if big * math.sqrt(x.shape[1]) > MAX_POINT_NORM:
        raise DataError(f"{name} holds entries up to {big:.3g} in magnitude with {x.shape[1]} coordinates per point, "
                        f"so squared distances between points (up to 4·D·{big:.1e}²) can overflow float64 (limit: "
                        f"√D · max |entry| <= {MAX_POINT_NORM:.0e}); rescale the data, e.g. divide it by {big:.1e} "
                        f"(distances scale with it; pairing accuracies and median-heuristic MMD² do not change)")


def same_point_shape(name_a: str, shape_a: tuple[int, ...], name_b: str, shape_b: tuple[int, ...]) -> None:
    """Raise :class:`ShapeError` when two point sets are both un-flattened (points of two or more axes) and their
    point shapes differ, naming both shapes and a fix.

    The metrics flatten each point to D = prod(shape) coordinates, so (3, 8, 8) images beside the same images
    channels-last (8, 8, 3) would compare coordinate k of one layout with coordinate k of the other: a plausible
    MMD², L2 or pairing accuracy of two different vectorisations, with no error. A flat (n, D) set beside an
    (n, *shape) one is accepted (only D is compared, by :func:`same_dim`): internal callers flatten one side
    themselves, and a flat set has no layout to disagree with.
    """
    shape_a, shape_b = tuple(shape_a), tuple(shape_b)
    if len(shape_a) < 2 or len(shape_b) < 2 or shape_a == shape_b:
        return
    if sorted(shape_a) == sorted(shape_b):
        # flowvar's images are channels-first: move the channels-last set, else the second one to the first's
        if _channels_last(shape_a) and not _channels_last(shape_b):
            fix = _permute_text(name_a, shape_a, shape_b)
        else:
            fix = _permute_text(name_b, shape_b, shape_a)
        fix = f"pass both in the same layout, e.g. {fix},"
    else:
        fix = "reshape one to the other's layout,"
    raise ShapeError(f"{name_a} has points of shape {shape_a} but {name_b} has points of shape {shape_b}; {fix} or "
                     f"flatten both with .flatten(1) if their coordinates already correspond")


def same_dim(name_a: str, a: Tensor, name_b: str, b: Tensor, shape_a: tuple[int, ...] | None = None,
             shape_b: tuple[int, ...] | None = None) -> None:
    """Raise :class:`ShapeError` unless the (n, D) matrices ``a`` and ``b`` (from :func:`as_matrix`) have the same
    D and, when both point shapes (from :func:`as_points`) are given, :func:`same_point_shape` accepts them: the one
    check of every metric that compares two point sets."""
    if shape_a is not None and shape_b is not None:
        same_point_shape(name_a, shape_a, name_b, shape_b)
    if a.shape[1] != b.shape[1]:
        raise ShapeError(f"{name_a} has points of {a.shape[1]} coordinates but {name_b} has {b.shape[1]}; both "
                         f"sets must live in the same space (flattened sizes must match)")


def row_sq_norms(x: Tensor, rows: int | None = None) -> Tensor:
    """‖x_i‖² per row, (n, D) → (n,). With ``rows``, computed ``rows`` rows at a time, so the squares are a
    rows × D temporary instead of an n × D one (the same numbers: each row's sum is the same reduction)."""
    if rows is None or rows >= x.shape[0]:
        return (x * x).sum(1)
    out = x.new_empty(x.shape[0])
    for i in range(0, x.shape[0], rows):
        blk = x[i:i + rows]
        out[i:i + rows] = (blk * blk).sum(1)
    return out


def block_sq_distances(a: Tensor, b: Tensor, a_sq: Tensor, b_sq: Tensor) -> Tensor:
    """‖a_i − b_j‖² = ‖a_i‖² + ‖b_j‖² − 2 a_i·b_j for one block, clamped at 0. (ra, D), (rb, D) → (ra, rb)."""
    return torch.addmm(b_sq[None, :], a, b.T, alpha=-2.0).add_(a_sq[:, None]).clamp_min_(0.0)


__all__ = ["FINITE_CHECK_BLOCK", "MAX_POINT_NORM", "as_matrix", "as_points", "block_sq_distances",
           "check_finite_lowmem", "check_magnitude", "real_tensor", "row_sq_norms", "same_dim", "same_point_shape"]
