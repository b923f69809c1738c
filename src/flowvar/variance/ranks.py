"""Per-sample gradient statistics of a data-parallel step, reduced over its ranks (the monitor under DDP).

Setting. W ranks (``torch.distributed``, e.g. torchrun with DistributedDataParallel or flowvar's trainer) each
measure their shard of the global batch with the one-pass engine: rank r holds, for its n_r samples, the
per-sample squared norms ‖g_{i,p}‖² (per parameter p), Σ_{i∈r} g_i and, with t-bins, its segments. The global
batch of B = Σ_r n_r samples has

    tr Cov(g) = (1/B) Σ_r Σ_{i∈r} ‖g_i‖² − ‖ḡ‖²,   ḡ = (1/B) Σ_r Σ_{i∈r} g_i,

so the trace over the global batch needs the per-sample squared norms of every rank (all-gathered: B numbers
per parameter tensor, which also give the per-layer traces and the per-bin counts, losses and ‖g_i‖²) and the
*global* mean gradient (one all-reduce of Σ_{i∈r} g_i in float64). The mean gradient is reduced here, not read
off ``.grad``: DDP's all-reduced ``.grad`` is the global mean only with equal shards and no accumulation, while
the all-reduced sum is exact for any shard sizes and any reduction. The result equals a single process's
statistics of the concatenated batch up to the order of floating-point additions.

One thing does not decompose: the per-bin conditional trace needs ‖Σ_{i∈k} g_i‖² over the whole bin, and the
engine keeps each rank's per-bin squared norm, not its per-bin gradient sum. Under W > 1 ranks the per-bin
traces are therefore the *pooled within-rank* estimate

    tr Cov(g | k) ≈ Σ_r (n_{k,r} − 1) T_{k,r} / Σ_r (n_{k,r} − 1)   (ranks with n_{k,r} ≥ 2),

T_{k,r} rank r's unbiased per-bin trace: unbiased for the same quantity (the shards are i.i.d. draws), and
equal to the single-process value when W = 1, but not the same number as one process on the concatenated
batch. Everything else is exact.

The reduction is a collective on the default process group, so every rank must take part in it on the same steps.
A rank that does not — the monitor built or called on rank 0 only, the usual ``if rank == 0:`` of logging code —
would pair it with another collective (DDP's own gradient all-reduce in its next backward pass): a hang until the
group's timeout (30 min by default) or an abort deep inside gloo/NCCL. :func:`meet_ranks` therefore first meets the
ranks through the group's key-value store, which is no collective, and raises a :class:`ConfigError` naming the rule
and the fix (``reduce_ranks=False``) after ``timeout_s`` (:data:`RANK_TIMEOUT_S`) when a rank does not come.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
import torch
from torch import Tensor

from flowvar import distributed
from flowvar.errors import ConfigError
from flowvar.variance.moments import BatchGradStats
from flowvar.variance.records import F64
from flowvar.variance.report import BinStats

__all__ = ["RANK_TIMEOUT_S", "RankReducedStats", "meet_ranks", "pooled_bin_trace", "rank_timeout_s",
           "reduce_across_ranks"]

#: How long (seconds) a rank waits at a logged step for the others before :func:`meet_ranks` gives up (capped at half
#: the process group's own timeout, :func:`rank_timeout_s`). The ranks of a data-parallel loop reach a logged step
#: within about one training step of each other, since DDP's gradient all-reduce lines them up at every backward pass
#: (and the measurement itself costs about the same on every rank); what separates them more is work one rank does
#: alone between the backward pass and step() — rank 0 writing a checkpoint, running an evaluation or a plot — which
#: takes seconds to minutes. 5 minutes covers that and still says "a rank is not coming" 6× sooner than torch's
#: default collective timeout of 30 minutes; the cap keeps the message ahead of a group built with a shorter timeout,
#: whose collective would otherwise fail first on the rank that is waiting there.
RANK_TIMEOUT_S = 300.0


@dataclass
class RankReducedStats(BatchGradStats):
    """:class:`BatchGradStats` of a global batch assembled from W ranks (module docstring).

    ``ranks``: W. ``pooled_trace``: (n_bins,) pooled within-rank per-bin traces, or None without t-bins; they
    replace the per-bin traces (``seg_sq_norms`` is None: the per-bin gradient sums do not decompose).
    """

    ranks: int = 1
    pooled_trace: np.ndarray | None = None

    def _bin_stats(self, values: list[float]) -> BinStats:
        out = super()._bin_stats(values)
        return out if self.pooled_trace is None else replace(out, trace=self.pooled_trace.copy())


def pooled_bin_trace(counts: Tensor, traces: Tensor) -> np.ndarray:
    """Pooled within-rank per-bin traces from (W, n_bins) per-rank counts n_{k,r} and unbiased traces T_{k,r}.

    Σ_r (n_{k,r} − 1) T_{k,r} / Σ_r (n_{k,r} − 1) over the ranks with n_{k,r} ≥ 2 (NaN when none has, or when a
    contributing rank's trace is NaN: it skipped the conditional traces on this step).
    """
    weight = (counts.to(F64) - 1).clamp_min(0)
    used = counts >= 2
    num = torch.where(used, weight * traces.to(F64), torch.zeros((), dtype=F64)).sum(0)
    den = weight.sum(0)
    return torch.where(den > 0, num / den.clamp_min(1), torch.full_like(den, math.nan)).numpy()


def rank_timeout_s(timeout_s: float | None = None) -> float:
    """The wait of :func:`meet_ranks`: ``timeout_s`` when given, else :data:`RANK_TIMEOUT_S` capped at half the
    process group's store timeout (its ``init_process_group`` timeout)."""
    if timeout_s is not None:
        return float(timeout_s)
    group = distributed.store_timeout_s()
    return RANK_TIMEOUT_S if group is None else min(RANK_TIMEOUT_S, 0.5 * group)


def meet_ranks(step: int, timeout_s: float | None = None) -> None:
    """Wait for every rank to reach this logged ``step``'s reduction, before any collective of it (module
    docstring): a no-op without a process group of W > 1 ranks. Raises :class:`ConfigError` naming the ranks
    that did not come within ``timeout_s`` seconds (None: :func:`rank_timeout_s`), the rule and the fix.

    Through the default group's key-value store (:func:`flowvar.distributed.rendezvous`), on logged steps only: three
    round trips to the store, ~0.5 ms (docs/gradient_variance.md, "Data-parallel"). Under NCCL as under gloo: the
    store is the rendezvous's TCP store, not the backend.
    """
    wait = rank_timeout_s(timeout_s)
    missing = distributed.rendezvous("gradvar", wait)
    if not missing:
        return
    w = distributed.world()
    which = ", ".join(map(str, missing))
    raise ConfigError(
        f"step {step}: rank {w.rank} of {w.size} waited {wait:g} s at the gradient-variance monitor's reduction over "
        f"the ranks and rank(s) {which} never reached it: every rank must build the monitor and call it on the same "
        f"steps (it reduces every rank's statistics to the global batch's, a collective). For a monitor on some "
        f"ranks only (e.g. built under `if rank == 0:`), build it with GradientVarianceMonitor(..., "
        f"reduce_ranks=False): it then measures its own rank's shard, with no collective. A rank that is only slower "
        f"than {wait:g} s to reach a logged step: raise rank_timeout_s")


def reduce_across_ranks(stats: BatchGradStats, *, scale: float = 1.0, across_ranks: bool = True,
                        step: int | None = None) -> BatchGradStats:
    """The statistics of the global batch from this rank's ``stats`` (a collective: every rank must call it).

    ``stats``: this rank's shard as the engine returned it; ``scale``: c such that this rank's true per-sample
    gradients are c × those ``stats`` describe (flowvar's trainer back-propagates (1/B) Σ_{i∈r} ℓ_i: measured
    with ``reduction="sum"`` its per-sample gradients are g_i/B, so c = B). Returns ``stats`` itself when there
    is one rank and c = 1, else a :class:`RankReducedStats` with n = B, the per-sample norms of every rank in
    rank order (c² ×), ḡ = (1/B) Σ_r c Σ_{i∈r} g_i (float64), Σ_i g_i ⊙ g_i summed over ranks when kept, the
    concatenated losses and segments, and pooled per-bin traces (module docstring). ``across_ranks=False``:
    no collective, this rank's statistics rescaled by c only. ``step``: this rank's step number, which every rank
    must share (a :class:`ConfigError` on every rank otherwise). Call :func:`meet_ranks` first: a rank that never
    comes leaves the others inside this function's collectives.
    """
    size = distributed.world().size if across_ranks else 1
    if size == 1 and scale == 1.0:
        return stats
    c2 = scale * scale
    names = list(stats.mean_grad)
    # One float64 all-reduce: Σ_{i∈r} c·g_i for every parameter, then Σ_{i∈r} c²·g_i ⊙ g_i when kept.
    sums = [stats.mean_grad[n].to(F64) * (stats.n * scale) for n in names]
    squares = [] if stats.sq_sum is None else [stats.sq_sum[n] * c2 for n in names]
    parts = sums + squares
    device = parts[0].device if parts else torch.device("cpu")
    flat = torch.cat([x.reshape(-1) for x in parts]).to(distributed.collective_device()) if parts else None
    if flat is not None and size > 1:
        distributed.all_reduce_sum_([flat])
    # The per-sample numbers (B per parameter tensor), losses, segments and per-rank bin statistics: gathered.
    local_bins = stats.bins() if stats.segments is not None else None
    mine = {
        "step": step,
        "n": stats.n,
        "param_sq": torch.stack([stats.param_sq_norms[n] for n in names]).cpu() * c2 if names else None,
        "losses": None if stats.losses is None else stats.losses.cpu(),
        "segments": None if stats.segments is None else stats.segments.cpu(),
        "bin_counts": None if local_bins is None else torch.from_numpy(local_bins.counts),
        "bin_trace": None if local_bins is None else torch.from_numpy(local_bins.trace) * c2,
    }
    ranks: list[dict] = distributed.gather_objects(mine) if size > 1 else [mine]  # type: ignore[assignment]
    # the same answer on every rank (all raise together rather than leave the others in the next collective)
    if len({r["segments"] is None for r in ranks}) != 1 or \
            len({0 if r["param_sq"] is None else r["param_sq"].shape[0] for r in ranks}) != 1:
        raise ConfigError("the ranks measured different parameters or t-bins on the same step; every rank must "
                          "build the monitor with the same model and options and call it on the same steps")
    if len({r["step"] for r in ranks}) != 1:
        steps = ", ".join(f"rank {q}: {r['step']}" for q, r in enumerate(ranks))
        raise ConfigError(f"the ranks reduced their gradient statistics at different steps ({steps}); every rank must "
                          f"build the monitor and call it on the same steps, with the same step numbers")
    B = sum(int(r["n"]) for r in ranks)
    sq_device = stats.sq_norms.device
    param_sq_all = torch.cat([r["param_sq"] for r in ranks], dim=1).to(sq_device) if names else \
        torch.zeros(0, B, dtype=F64, device=sq_device)
    mean_grad: dict[str, Tensor] = {}
    sq_sum: dict[str, Tensor] | None = None if stats.sq_sum is None else {}
    offset = 0
    if flat is not None:
        flat = flat.to(device)
        for n in names:
            k = stats.mean_grad[n].numel()
            mean_grad[n] = flat[offset:offset + k].view(stats.mean_grad[n].shape) / B
            offset += k
        if sq_sum is not None:
            for n in names:
                k = stats.mean_grad[n].numel()
                sq_sum[n] = flat[offset:offset + k].view(stats.mean_grad[n].shape)
                offset += k
    losses = None if any(r["losses"] is None for r in ranks) else \
        torch.cat([r["losses"] for r in ranks]).to(sq_device)
    segments = None if stats.segments is None else torch.cat([r["segments"] for r in ranks]).to(stats.segments.device)
    pooled = None
    if local_bins is not None:
        pooled = pooled_bin_trace(torch.stack([r["bin_counts"] for r in ranks]),
                                  torch.stack([r["bin_trace"] for r in ranks]))
    return RankReducedStats(
        n=B, sq_norms=param_sq_all.sum(0), param_sq_norms={n: param_sq_all[k] for k, n in enumerate(names)},
        mean_grad=mean_grad, sq_sum=sq_sum, seg_sq_norms=None, segments=segments, n_segments=stats.n_segments,
        losses=losses, rules=dict(stats.rules), fallback=dict(stats.fallback), edges=stats.edges, probe=stats.probe,
        ranks=size, pooled_trace=pooled)
