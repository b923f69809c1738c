"""Memorisation and generalisation scores of one trained model (the σ advisor's, :mod:`flowvar.advisor`)."""

from __future__ import annotations

import math
import numbers
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from flowvar.errors import DataError, describe
from flowvar.metrics.core import as_points, real_tensor, same_dim, same_point_shape
from flowvar.metrics.distances import (
    nearest_neighbours,
    nn_distance_ratio,
    pairing_accuracy,
    partner_distances,
)
from flowvar.metrics.mmd import median_heuristic, mmd2

# ----------------------------------------------------------------------------------------------------------
# Memorisation and generalisation of one trained model (the σ advisor's scores, flowvar.advisor)
# ----------------------------------------------------------------------------------------------------------

#: The keys of :func:`evaluate_outputs` that the σ rule (:func:`flowvar.advisor.advise_over_seeds`) reads: the
#: generalisation score G (lower is better) and the memorisation score M (0 = chance, 1 = perfect pairing).
GEN_KEY = "generalisation"
MEM_KEY = "memorisation"


def memorisation_score(accuracy: float, n: int) -> float:
    """(a − 1/N) / (1 − 1/N): pairing accuracy ``accuracy`` ∈ [0, 1] on N pairs mapped to 0 = chance, 1 = perfect
    (−1/(N − 1) at a = 0). Raises :class:`DataError` for an accuracy outside [0, 1] (NaN included: drop diverged
    seeds first, as the σ rule does) and for N < 2."""
    # a fraction outside [0, 1] (a percentage, a count of hits) gave a score above 1 silently: 2.0 on N = 10 gave 2.11
    if isinstance(accuracy, bool) or not isinstance(accuracy, numbers.Real) or not 0.0 <= accuracy <= 1.0:
        raise DataError(f"the pairing accuracy must be a number in [0, 1], got {describe(accuracy)}; pass the "
                        f"fraction of outputs whose nearest target is their own (PairingAccuracy.accuracy)")
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
        """The reference of ``x1_train`` (N, *shape) and ``heldout`` (H, *shape) (tensors, arrays or lists; kept as
        tensors in their own dtype): both checked as every metric checks a point set
        (:func:`~flowvar.metrics.core.as_points`: shape, NaN/Inf, one space) here, not at the first σ's scores."""
        x1_train = real_tensor("x1_train", x1_train, "shape (N, *point_shape)")
        heldout = real_tensor("heldout", heldout, "shape (H, *point_shape)")
        (tr_m, tr_shape), (ho_m, ho_shape) = as_points("x1_train", x1_train), as_points("heldout", heldout, 2)
        same_dim("x1_train", tr_m, "heldout", ho_m, tr_shape, ho_shape)
        del tr_m, ho_m  # the checks' float64 copies; the reference keeps the caller's tensors
        m = min(x1_train.shape[0], heldout.shape[0])
        tr = torch.randperm(x1_train.shape[0], generator=generator)[:m]
        ho = torch.randperm(heldout.shape[0], generator=generator)[:m]
        return cls(x1_train, heldout, median_heuristic(heldout), x1_train[tr], heldout[ho], copy_threshold)


def nn_train_over_heldout(x: Tensor, train: Tensor, heldout: Tensor) -> float:
    """median_i d(x_i, train) / median_i d(x_i, heldout), d = distance to the nearest row; ``train`` and ``heldout``
    (m, *shape) of equal size. ≈ 1 when the outputs are as close to unseen data as to the training data, → 0 when
    they copy training points. NaN, with a warning, when the held-out median is 0 (at least half the outputs coincide
    with held-out items): the ratio is undefined there, and NaN is what its readers take for "no answer" (the
    audit's gap verdict reads it as inconclusive, the σ advisor's table shows it as such)."""
    xm, shape_x = as_points("outputs", x)
    (tr, shape_t), (ho, shape_h) = as_points("train", train), as_points("heldout", heldout)
    same_point_shape("outputs", shape_x, "train", shape_t)
    same_point_shape("outputs", shape_x, "heldout", shape_h)
    d_tr = nearest_neighbours(xm, tr, 1)[0][:, 0]
    d_ho = nearest_neighbours(xm, ho, 1)[0][:, 0]
    den = float(d_ho.median())
    if den > 0:
        return float(d_tr.median()) / den
    warnings.warn("nn_train_over_heldout: at least half the outputs coincide with a held-out item (median distance "
                  "to the nearest held-out item 0), so the ratio is undefined and NaN is returned; check that the "
                  "held-out data share no items with the training data", UserWarning, stacklevel=2)
    return math.nan


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


def null_generalisation(pairs: Sequence[tuple[Tensor, Tensor]], bandwidth: float,
                        scored_sizes: tuple[int, int] | None = None) -> dict[str, Any]:
    """The generalisation score of real data against real data: unbiased MMD² of each (a, b) pair of independent real
    samples at ``bandwidth``; returns the values, their RMS (the estimator's sd at MMD² = 0, where its mean is 0) and
    ``floor`` = 2 × RMS, the σ rule's smallest generalisation margin. It is a margin, not G's noise level: it holds
    no training noise (the rule's seed-level test carries that), and the estimator's sd grows with MMD² away from 0.

    ``scored_sizes`` = (m, n): the sample sizes of the score the floor is a margin for (G: m generated outputs against
    n held-out items), when the real pairs are of other sizes (file data: two disjoint halves of the held-out set).
    At MMD = 0 the unbiased MMD² of samples of sizes (p, q) is (1/p + 1/q) times a weighted sum of centred χ²
    variables whose law does not depend on the sizes (Gretton et al. 2012, JMLR, Thm 12 and its unequal-size form),
    so each value is rescaled by (1/m + 1/n) / (1/p + 1/q) (``size_scale``; 1 when the sizes agree). Without it
    the halves' floor is wider by that factor's inverse — about 2.3× for G of 2000 vs 1541 items against halves of
    770 — and the rule would call a larger loss of generalisation non-inferior."""
    if scored_sizes is not None and (len(scored_sizes) != 2 or min(scored_sizes) < 2):
        raise DataError(f"scored_sizes must be two sample sizes >= 2 (the generalisation score's), "
                        f"got {scored_sizes!r}")
    pairs = list(pairs)
    if not pairs:  # the RMS of no values read 0.0: a zero margin for the σ rule, silently
        raise DataError("null_generalisation got no pairs of real samples, so it has no null values to take the RMS "
                        "of; pass at least one (a, b) pair (sigma_tradeoff: null_repeats >= 1)")
    values, scales = [], []
    for a, b in pairs:
        p, q = a.shape[0], b.shape[0]
        scale = 1.0 if scored_sizes is None else (1 / scored_sizes[0] + 1 / scored_sizes[1]) / (1 / p + 1 / q)
        values.append(scale * mmd2(a, b, bandwidth=bandwidth, estimator="unbiased").mmd2)
        scales.append(scale)
    rms = float(np.sqrt(np.mean(np.square(values))))
    out: dict[str, Any] = {"values": values, "rms": rms, "floor": 2.0 * rms}
    if scored_sizes is not None:
        out["scored_sizes"] = list(scored_sizes)
        out["sample_sizes"] = sorted({(a.shape[0], b.shape[0]) for a, b in pairs})
        out["size_scale"] = float(np.mean(scales))
    return out


__all__ = ["GEN_KEY", "MEM_KEY", "Reference", "evaluate_outputs", "memorisation_score", "nn_train_over_heldout",
           "null_generalisation"]
