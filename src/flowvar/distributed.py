"""Data-parallel helpers over ``torch.distributed`` (launched with ``torchrun``; PAPER.md §4 "Images").

The trainer (:func:`flowvar.train.train`) becomes data-parallel by itself whenever a process group with more
than one rank is initialised: every rank draws the *same* global batch from the same seeded generator, keeps
its contiguous slice of rows (:func:`shard_bounds`), back-propagates (1/B)·Σ_{i in its slice} ℓ_i, and the
gradients are summed across ranks (:func:`all_reduce_sum_`), so each rank holds the gradient of the global
mean loss (1/B) Σ_{i=1..B} ℓ_i — the single-process gradient up to the order of floating-point additions.
Only rank 0 writes checkpoints and results (:func:`is_main_process`).

Launch (one machine, 2 processes; CPU runs use the gloo backend, CUDA runs NCCL)::

    torchrun --standalone --nproc_per_node=2 -m flowvar run table2 --quick --out results

Several machines: the same command on every node with ``--nnodes=N --node_rank=K
--rdzv_backend=c10d --rdzv_endpoint=HOST:PORT`` in place of ``--standalone`` (HOST is node 0).
:func:`init_from_env` reads the variables torchrun sets (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``MASTER_ADDR``, ``MASTER_PORT``).
"""

from __future__ import annotations

import atexit
import datetime
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor, nn

from flowvar.errors import ConfigError, check_positive_int

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class World:
    """This process's place in the process group: ``rank`` in [0, ``size``), ``local_rank`` on its machine."""

    rank: int
    size: int
    local_rank: int

    @property
    def is_main(self) -> bool:
        """True on rank 0, the only rank that writes files."""
        return self.rank == 0


def world() -> World:
    """The current :class:`World`; ``World(0, 1, 0)`` when no process group is initialised."""
    if dist.is_available() and dist.is_initialized():
        return World(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))
    return World(0, 1, 0)


def is_distributed() -> bool:
    """Whether an initialised process group has more than one rank."""
    return world().size > 1


def is_main_process() -> bool:
    """Rank 0 (or no process group at all)."""
    return world().is_main


def env_world_size() -> int:
    """``WORLD_SIZE`` as set by torchrun (1 when unset); a malformed value is a :class:`ConfigError`."""
    raw = os.environ.get("WORLD_SIZE", "1")
    try:
        return check_positive_int("WORLD_SIZE", int(raw))
    except (ValueError, ConfigError):
        raise ConfigError(f"the environment variable WORLD_SIZE={raw!r} is not a positive integer; launch with "
                          f"torchrun (which sets it) or unset it") from None


def init_from_env(backend: str | None = None, timeout_s: float = 1800.0) -> World:
    """Initialise the default process group from torchrun's environment when ``WORLD_SIZE`` > 1.

    Does nothing (returns the current :class:`World`) when a group is already initialised or ``WORLD_SIZE`` is
    1/unset. ``backend``: ``"gloo"`` or ``"nccl"``; None picks NCCL when every process of this node can have a GPU
    of its own (torchrun's LOCAL_WORLD_SIZE ≤ the visible GPUs), else gloo on the CPU (logged when GPUs are there
    but too few). With NCCL the process's CUDA device is set to ``cuda:LOCAL_RANK``.
    """
    if dist.is_available() and dist.is_initialized():
        return world()
    if env_world_size() == 1:
        return World(0, 1, 0)
    if not dist.is_available():
        raise ConfigError("WORLD_SIZE > 1 but this PyTorch build has no torch.distributed; run a single process")
    missing = [k for k in ("RANK", "MASTER_ADDR", "MASTER_PORT") if k not in os.environ]
    if missing:
        raise ConfigError(f"WORLD_SIZE > 1 but {', '.join(missing)} not set; launch with torchrun "
                          f"(e.g. torchrun --standalone --nproc_per_node=2 -m flowvar run ...)")
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    # every rank must reach the same choice, so it rests on the node's process count, never on this rank's index;
    # without torchrun's LOCAL_WORLD_SIZE, assume one process per GPU (NCCL whenever there is a GPU): a rank without
    # one then gets the ConfigError below rather than a different backend from its peers
    per_node = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    if backend is None:
        backend = "nccl" if 0 < per_node <= gpus else "gloo"
        if backend == "gloo" and gpus:
            log.warning("%d processes on this node but %d visible GPU(s): using gloo on the CPU (launch at most %d "
                        "processes per node for NCCL)", per_node, gpus, gpus)
    if backend not in ("gloo", "nccl"):
        raise ConfigError(f"unknown distributed backend {backend!r}; use 'gloo' (CPU) or 'nccl' (CUDA)")
    if backend == "nccl":
        if local_rank >= gpus:
            raise ConfigError(f"NCCL needs a GPU per process, but LOCAL_RANK={local_rank} and {gpus} GPU(s) are "
                              f"visible; launch at most {gpus} processes per node or use backend='gloo'")
        torch.cuda.set_device(local_rank)
    dist.init_process_group(backend=backend, timeout=datetime.timedelta(seconds=timeout_s))
    atexit.register(_destroy_at_exit)
    return world()


def _destroy_at_exit() -> None:
    """Release the process group before the interpreter tears down: left to the C++ runtime, gloo's threads can
    abort the process at exit ("terminate called without an active exception") after all the work succeeded."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def shard_bounds(total: int, rank: int, size: int) -> tuple[int, int]:
    """Rows [start, stop) of a global batch of ``total`` rows owned by ``rank`` of ``size``.

    start = ⌊total·rank/size⌋, stop = ⌊total·(rank+1)/size⌋: contiguous, disjoint, their union is [0, total),
    and sizes differ by at most one. Raises :class:`ConfigError` when ``total`` < ``size`` (an empty shard).
    """
    total, size = check_positive_int("total", total), check_positive_int("size", size)
    if not 0 <= rank < size:
        raise ConfigError(f"rank must be in [0, {size}), got {rank}")
    if total < size:
        raise ConfigError(f"a batch of {total} rows cannot be split over {size} ranks; raise batch_size to at "
                          f"least {size} or launch fewer processes")
    return total * rank // size, total * (rank + 1) // size


def all_reduce_sum_(tensors: Sequence[Tensor]) -> None:
    """Sum ``tensors`` across ranks in place, with one collective on a flat buffer (no-op for one rank).

    All tensors must share a dtype and device (the device the backend supports: CPU for gloo, CUDA for NCCL).
    """
    if not is_distributed() or not tensors:
        return
    flat = torch.cat([t.reshape(-1) for t in tensors])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    offset = 0
    for t in tensors:
        n = t.numel()
        t.copy_(flat[offset:offset + n].view_as(t))
        offset += n


def broadcast_module_(module: nn.Module, src: int = 0) -> None:
    """Copy ``src``'s parameters and buffers to every rank (same initialisation everywhere); no-op for one rank."""
    if not is_distributed():
        return
    with torch.no_grad():
        for tensor in [*module.parameters(), *module.buffers()]:
            dist.broadcast(tensor.data, src=src)


def collective_device() -> torch.device:
    """Where small tensors for collectives must live: the current CUDA device under NCCL, else the CPU."""
    if dist.is_available() and dist.is_initialized() and dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def agree(value: int) -> tuple[int, int]:
    """(min, max) of an integer over all ranks (e.g. to check that every rank resumed from the same step)."""
    if not is_distributed():
        return value, value
    t = torch.tensor([value, -value], dtype=torch.int64, device=collective_device())
    dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return int(t[0]), int(-t[1])


def gather_objects(obj: object) -> list[object]:
    """Every rank's ``obj`` as a list indexed by rank (``[obj]`` for one rank)."""
    if not is_distributed():
        return [obj]
    out: list[object] = [None] * world().size
    dist.all_gather_object(out, obj)
    return out


#: How many :func:`rendezvous` of each name this process has taken part in: the number of the next one. Every rank
#: counts the same rendezvous in the same order (they precede collectives, which must match across ranks anyway).
_ROUNDS: dict[str, int] = {}


def store_timeout_s() -> float | None:
    """The timeout of the default process group's key-value store in seconds (``init_process_group``'s ``timeout``,
    which its rendezvous store is created with), or None without a process group or a readable store."""
    store = _default_store()
    return None if store is None else store.timeout.total_seconds()


def _default_store() -> dist.Store | None:
    """The default process group's c10d key-value store (the TCPStore of torchrun's rendezvous, behind a
    PrefixStore); None without a process group, or where this torch keeps it elsewhere (a private accessor)."""
    if not (dist.is_available() and dist.is_initialized()):
        return None
    getter = getattr(dist.distributed_c10d, "_get_default_store", None)
    return None if getter is None else getter()


def rendezvous(name: str, timeout_s: float) -> list[int] | None:
    """Meet every rank of the default process group at the next rendezvous called ``name``, through the group's
    key-value store (not a collective: a rank that never comes cannot leave the others inside one). Returns the
    ranks that had not arrived after ``timeout_s`` seconds ([] when all did; None: no process group of W > 1 ranks,
    or no store to meet through, so nothing was checked).

    Rendezvous k of ``name`` (k counted per process, :data:`_ROUNDS`): rank r sets the key ``flowvar/name/k/r``, waits
    for the W keys of round k, then deletes its key of round k − 1, which no rank waits for any more (each set its
    round-k key after its round-(k − 1) wait): the store holds at most 2W keys of ``name`` at a time. Three round
    trips to the store (~0.5 ms on one loaded 2-core machine, docs/gradient_variance.md "Data-parallel").
    """
    w = world()
    store = _default_store() if w.size > 1 else None
    if store is None:
        return None
    k = _ROUNDS.get(name, 0)
    _ROUNDS[name] = k + 1
    keys = [f"flowvar/{name}/{k}/{q}" for q in range(w.size)]
    store.set(keys[w.rank], "1")
    try:
        store.wait(keys, datetime.timedelta(seconds=timeout_s))
    except RuntimeError:  # DistStoreError "wait timeout" (a lost store raises again from check, as it should)
        missing = [q for q, key in enumerate(keys) if not store.check([key])]
        if missing:
            return missing
    if k > 0:
        store.delete_key(f"flowvar/{name}/{k - 1}/{w.rank}")
    return []


def barrier() -> None:
    """Wait for every rank (no-op for one rank)."""
    if is_distributed():
        dist.barrier()


def map_sharded(fn: Callable[[Tensor], Tensor], x: Tensor) -> Tensor:
    """Apply ``fn`` row-wise to ``x`` (N, ...) with each rank handling its :func:`shard_bounds` slice.

    Every rank gets the full result (N, ...) in row order (an all-gather of the slices, padded to equal length).
    ``fn`` must map (n, ...) to (n, ...) rows independently (e.g. ODE integration of each source); the gather
    runs on :func:`collective_device` and the result is returned on the device of ``fn``'s output. Without a
    process group this is ``fn(x)``.
    """
    w = world()
    if w.size == 1 or x.shape[0] < w.size:
        return fn(x)
    n = x.shape[0]
    lo, hi = shard_bounds(n, w.rank, w.size)
    part = fn(x[lo:hi])
    longest = max(b - a for a, b in (shard_bounds(n, r, w.size) for r in range(w.size)))
    padded = torch.zeros((longest, *part.shape[1:]), dtype=part.dtype, device=collective_device())
    padded[:part.shape[0]] = part
    chunks = [torch.empty_like(padded) for _ in range(w.size)]
    dist.all_gather(chunks, padded)
    return torch.cat([chunks[r][:b - a] for r, (a, b) in
                      enumerate(shard_bounds(n, r, w.size) for r in range(w.size))]).to(part.device)


__all__ = ["World", "agree", "all_reduce_sum_", "barrier", "broadcast_module_", "collective_device", "env_world_size",
           "gather_objects", "init_from_env", "is_distributed", "is_main_process", "map_sharded", "rendezvous",
           "shard_bounds", "store_timeout_s", "world"]
