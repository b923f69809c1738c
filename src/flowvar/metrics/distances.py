"""Per-pair and nearest-neighbour distances: partner distances, pairing accuracy, the NN-distance ratio, the
median nearest-neighbour spacing of a point set (Table 2, PAPER.md §5 item 6)."""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from flowvar.errors import ConfigError, DataError, ShapeError, check_finite, check_positive_int, describe
from flowvar.metrics.core import (
    as_matrix,
    as_points,
    block_sq_distances,
    real_tensor,
    row_sq_norms,
    same_dim,
    same_point_shape,
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
    """:class:`DistanceStats` of distances ``d`` (a tensor, array or list of any shape, flattened to (n,) float64).

    Raises :class:`DataError` for input :func:`~flowvar.metrics.core.real_tensor` refuses (None, not numeric,
    complex, bool), for no distances and for NaN/Inf (a NaN made mean, std and median NaN silently).
    """
    d = real_tensor("d", d, "distances").detach().reshape(-1).to("cpu", torch.float64)
    if d.numel() == 0:
        raise DataError("no distances to summarise; pass at least one sample")
    check_finite("d", d)
    std = float(d.std(correction=1)) if d.numel() > 1 else 0.0
    return DistanceStats(mean=float(d.mean()), std=std, median=float(np.median(d.numpy())), per_sample=d)


def partner_distances(x_hat: Tensor, partners: dict[str, Tensor]) -> dict[str, DistanceStats]:
    """L2 distance from each output to each of its named partners.

    ``x_hat``: (n, *shape); ``partners``: name → (n, *shape), row i the partner of x̂_i (e.g. ``{"ot": ...,
    "shuffled": ...}``). Returns name → :class:`DistanceStats` of d_i = ‖x̂_i − p_i‖₂ over the flattened
    points (computed from exact differences, not the expanded form).
    """
    if not isinstance(partners, Mapping):  # a tensor here failed with "Boolean value of Tensor ... is ambiguous"
        raise ConfigError(f"partners must be a dict of named partner sets, e.g. {{'target': x1}}, got "
                          f"{describe(partners)}; pass partner_distances(x_hat, {{'target': x1}})")
    if not partners:
        raise ConfigError("partners is empty; pass at least one named partner set, e.g. {'target': x1}")
    xh, shape_x = as_points("x_hat", x_hat)
    out: dict[str, DistanceStats] = {}
    for name, p in partners.items():
        pm, shape_p = as_points(f"partners[{name!r}]", p)
        same_point_shape("x_hat", shape_x, f"partners[{name!r}]", shape_p)
        if pm.shape != xh.shape:
            raise ShapeError(f"partners[{name!r}] has shape {tuple(pm.shape)} after flattening but x_hat has "
                             f"{tuple(xh.shape)}; pass exactly one partner per output row")
        out[name] = distance_stats((xh - pm).pow(2).sum(1).sqrt())
    return out


def nearest_neighbours(query: Tensor, ref: Tensor, k: int = 1, chunk: int = 1024) -> tuple[Tensor, Tensor]:
    """The k nearest rows of ``ref`` (M, D) to each row of ``query`` (n, D): (distances (n, k), indices (n, k)).

    Candidates are screened with the expanded ‖q‖² + ‖r‖² − 2 q·r in chunk × chunk blocks (a running
    top-k over column blocks, after centring on ref's mean), then the k distances are recomputed from exact
    differences and sorted ascending. Exact ties are broken arbitrarily. Inputs are (n, *shape) and (M, *shape) point
    sets, run through :func:`as_matrix` like every metric's (flattened to float64 (n, D) matrices on the CPU; a float64
    CPU matrix passes unchanged, numbers included).
    """
    (query, shape_q), (ref, shape_r) = as_points("query", query), as_points("ref", ref)
    same_dim("query", query, "ref", ref, shape_q, shape_r)
    k = check_positive_int("k", k)
    chunk = check_positive_int("chunk", chunk)
    if ref.shape[0] < k:
        raise DataError(f"need at least {k} reference points for {k} nearest neighbours, got {ref.shape[0]}")
    center = ref.mean(0)
    q, r = query - center, ref - center
    q_sq, r_sq = row_sq_norms(q), row_sq_norms(r)
    idx_out = torch.empty(q.shape[0], k, dtype=torch.long)
    for i in range(0, q.shape[0], chunk):
        best_d = torch.full((min(chunk, q.shape[0] - i), 0), math.inf, dtype=torch.float64)
        best_i = torch.empty(best_d.shape, dtype=torch.long)
        for j in range(0, r.shape[0], chunk):
            d2 = block_sq_distances(q[i:i + chunk], r[j:j + chunk], q_sq[i:i + chunk], r_sq[j:j + chunk])
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


def _integer_indices(name: str, index: object) -> Tensor:
    """``index`` as a flat long tensor; floats are accepted only when every value is a whole number (``.long()``
    would silently truncate 1.5 to 1 and score against the wrong partner)."""
    try:
        t = torch.as_tensor(index)
    except (TypeError, ValueError, RuntimeError):
        raise DataError(f"{name} must be integer row indices, got {describe(index)}") from None
    t = t.detach().reshape(-1).cpu()
    if t.dtype == torch.bool or t.is_complex():
        raise DataError(f"{name} must be integer row indices, got dtype {t.dtype}")
    if t.is_floating_point():
        bad = ~torch.isfinite(t) | (t != t.round())
        if bool(bad.any()):
            k = int(torch.nonzero(bad)[0])
            raise DataError(f"{name} must hold whole numbers (row indices), but {name}[{k}] = {float(t[k])!r}; "
                            f"pass integer indices (e.g. a long tensor)")
    return t.long()


def pairing_accuracy(x_hat: Tensor, targets: Tensor, partner_index: Tensor | None = None,
                     chunk: int = 1024) -> PairingAccuracy:
    """Fraction of outputs whose nearest candidate target is their own partner (PAPER.md §5 item 6).

    ``x_hat``: (n, *shape); ``targets``: (M, *shape) candidates; ``partner_index``: (n,) long in [0, M),
    default row i (then M >= n). accuracy = (1/n) Σ_i 1[targets_{argmin_j ‖x̂_i − targets_j‖} = targets_{partner_i}]:
    the nearest target is the partner, or an exact duplicate of it (a data set with repeated items has one target
    per value, whichever copy the search meets first). An exact tie between the partner and a different target (an
    output exactly midway between them) is broken arbitrarily, as in :func:`nearest_neighbours`, so such an output
    may count either way; with continuous data ties have probability 0. Searched in chunk × chunk blocks
    (:func:`nearest_neighbours`).
    """
    xh, shape_x = as_points("x_hat", x_hat)
    tg, shape_t = as_points("targets", targets)
    same_dim("x_hat", xh, "targets", tg, shape_x, shape_t)
    n, M = xh.shape[0], tg.shape[0]
    if partner_index is None:
        if n > M:
            raise ShapeError(f"without partner_index, row i of targets is the partner of x_hat row i, so targets "
                             f"needs at least n={n} rows, got {M}; pass partner_index")
        partner = torch.arange(n)
    else:
        partner = _integer_indices("partner_index", partner_index)
        if partner.shape != (n,):
            raise ShapeError(f"partner_index must have shape ({n},), got {tuple(partner.shape)}")
        if bool(((partner < 0) | (partner >= M)).any()):
            raise DataError(f"partner_index holds values outside [0, {M}); every partner must index a row of "
                            f"targets")
    _, idx = nearest_neighbours(xh, tg, 1, chunk)
    nearest = idx[:, 0]
    correct = nearest == partner
    miss = ~correct
    if bool(miss.any()):  # a duplicate of the partner met first is the same target
        correct[miss] = (tg[nearest[miss]] == tg[partner[miss]]).all(1)
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
    """Memorisation test of diffusion-model studies: the NN1/NN2 < 1/3 ratio of Yoon et al. 2023 ("Diffusion
    probabilistic models generalize when they fail to memorize"), also used by Gu et al. 2023 ("On memorization in
    diffusion models"). (Somepalli et al. 2023 score copying by SSCD feature similarity instead.)

    r_i = ‖x̂_i − NN1(x̂_i)‖ / ‖x̂_i − NN2(x̂_i)‖ with NN1, NN2 the nearest and second-nearest training
    points; a sample counts as memorised when r_i < ``threshold`` (1/3 by default). If both distances are
    0 (x̂_i equals a training point that appears twice) r_i := 0 (a copy). ``train``: (M, *shape), M >= 2.
    """
    # numbers.Real takes numpy scalars (np.float32(0.3)); a bool is a Real too but a mistake here, not 1.0
    if isinstance(threshold, bool | np.bool_) or not isinstance(threshold, numbers.Real) or not 0 < threshold <= 1:
        raise ConfigError(f"threshold must be a number in (0, 1], got {describe(threshold)}; the usual test is "
                          f"threshold=1/3")
    xh, shape_x = as_points("x_hat", x_hat)
    tr, shape_t = as_points("train", train, min_rows=2)
    same_dim("x_hat", xh, "train", tr, shape_x, shape_t)
    dist, idx = nearest_neighbours(xh, tr, 2, chunk)
    d1, d2 = dist[:, 0], dist[:, 1]
    ratio = torch.where(d2 > 0, d1 / d2.clamp_min(torch.finfo(torch.float64).tiny), torch.zeros_like(d1))
    return NNRatio(ratio=ratio, nn1_distance=d1, nn2_distance=d2, nn1_index=idx[:, 0], threshold=float(threshold),
                   fraction_below=float((ratio < threshold).double().mean()))


__all__ = ["DistanceStats", "NNRatio", "PairingAccuracy", "distance_stats", "median_nn_distance",
           "nearest_neighbours", "nn_distance_ratio", "pairing_accuracy", "partner_distances"]
