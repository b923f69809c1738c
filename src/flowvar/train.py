"""The training loop: Adam on the CFM loss, deterministic, resumable, with a general per-step hook.

One step (numbered 1, 2, …, ``config.steps``):

1. ``path = loss.draw(coupling, batch_size, generator)`` — all data randomness (pairs, t, z) comes from
   one ``torch.Generator`` seeded with ``config.seed``;
2. ``l = loss(model, path)``, the minibatch CFM loss L_MC = (1/B) Σ_i ‖u_t,i − v_θ(x_t,i, t_i)‖²; a NaN/Inf
   value stops training with :class:`TrainingError` before any update (naming the batch's non-finite x0/x1 when the
   coupling produced them: a data fault, not a learning-rate one);
3. ``l.backward()``;
4. **callbacks**: ``callback.on_step(step, model, path, loss_value)`` for each callback, in order. They run
   *after* ``backward`` and *before* gradient clipping and the optimizer step, so ``p.grad`` holds the raw
   (unclipped) gradient of this batch's loss at the parameters that produced it — what a gradient-variance
   monitor needs. A callback must leave parameters and ``.grad`` as it found them, and must draw its own
   randomness from its own generator (drawing from the global RNG is fine too: the trainer forks and
   checkpoints it), otherwise a resumed run is no longer identical; a callback with state of its own (its
   generator) defines ``state_dict()`` / ``load_state_dict(state)``, which checkpoints save and resumes
   restore. A returned dict is logged as
   ``{"step": step, **dict}`` in :attr:`TrainResult.history`; an exception raised by a callback stops
   training and leaves the last checkpoint on disk (this is how tests simulate an interruption);
5. if ``grad_clip``: ``clip_grad_norm_(params, grad_clip)``; with or without it, a non-finite gradient (a NaN/Inf
   value under a finite loss: sqrt at 0, half-precision overflow) stops training with :class:`TrainingError` naming
   this step, before its update (the model keeps the previous step's weights);
6. Adam step with learning rate lr · min(1, step / warmup_steps) (linear warmup; TorchCFM's schedule
   starts at 0, ours at lr / warmup_steps so that no step is wasted). The optimizer is :func:`make_adam`:
   torch's fused Adam kernel where it has one (the same update to rounding, one kernel for all parameters);
7. EMA update (if ``ema_decay``): θ_ema ← decay · θ_ema + (1 − decay) · θ;
8. checkpoint when ``step % checkpoint_every == 0``.

**Checkpoints** (``checkpoint_dir/checkpoint.pt``) hold the model, optimizer and EMA states, the data
generator's state, the global CPU RNG state (for dropout-like model randomness), the step, the losses and
history so far, and the config. They are written atomically (temporary file in the same folder, fsync,
``os.replace``), refused if any parameter is non-finite, and written at every ``checkpoint_every`` steps
and once at the end of a run whenever ``checkpoint_dir`` is given. Each carries the SHA-256 of its contents,
checked on load together with the finiteness of every tensor: a damaged or altered checkpoint is a one-line
:class:`DataError` naming the file, never a silently different model; temporary files of killed writes are
removed on the next start (a checkpoint without the checksum, written by an earlier flowvar, still loads, with a
warning that it cannot be verified). If the folder already holds a
checkpoint, :func:`train` resumes from it, with a :class:`ResumeWarning` (a finished run is returned without
training): a resumed run ends bit-identical to an uninterrupted one (on CPU). Only ``steps``,
``checkpoint_every``, ``log_every`` and ``progress`` may differ between the saved and the new config, so a finished
run can be extended by raising ``steps``. Each checkpoint also carries the run's *signature*, checked on resume:
the model's construction (its ``config``, e.g. MLPField's width and activation, else a digest of its ``repr``) and
its initial weights (a rounding-tolerant fingerprint: another init seed or scheme resumes the checkpoint's run with
a :class:`ResumeWarning` saying so; the same object re-called after a crash or holding the checkpoint's weights
resumes quietly; :func:`_check_init_weights`), the
interpolant, the time sampler (its parameters and a fingerprint of its draws) and a fingerprint of the training
data (every pair of a :class:`~flowvar.couplings.FixedPairs`, else one batch drawn from a fixed generator of its
own and every item of each :class:`~flowvar.distributions.Empirical` source or target, e.g. an image set; tolerant
to last-bit differences of data recomputed elsewhere). Anything that differs is a
:class:`ConfigError` naming it — never the old model returned for other data. Computing the signature draws from
its own generators inside a fork of the global RNG: trained numbers are those of a run without a checkpoint_dir.
Before the first step, the process that writes checkpoints creates ``checkpoint_dir`` and writes and removes a
temporary file in it: a folder that is a file, lies under one, or cannot be written is a one-line
:class:`~flowvar.errors.WriteError` then, not after the training (whose EMA weights and losses live only in the
TrainResult that a failed write never returns). Returning a finished run writes nothing and probes nothing.

**Interrupts.** With a ``checkpoint_dir``, in a single process, on the main thread: a SIGINT or SIGTERM whose
handler is Python code (Ctrl-C's ``KeyboardInterrupt``; :func:`flowvar.runner.sigterm_as_interrupt`, which the CLI
installs) is deferred to the end of the current step — at most the rest of one step and its checkpoint write. That
step's checkpoint is then written (atomically, as always) and the signal's own handler runs, raising the
``KeyboardInterrupt``: the same call resumes from that step, bit-identical to an uninterrupted run, where an
interrupt used to lose every step since the last ``checkpoint_every``. A second signal while one waits is handled at
once (a step that hangs can still be stopped; its step is then lost, as before). Ignored or default-action signals
(the runner's pool workers: SIGINT ignored, SIGTERM kills) are left alone, and the handlers are restored when
:func:`train` returns or raises. A ``KeyboardInterrupt`` raised by other code (a callback) is a crash at an unknown
point of a step: the last regular checkpoint is kept. Under ``torchrun`` (W > 1) the ranks would have to agree on
the step to stop at, so interrupts act at once there, as before.

**Data-parallel training** (``torchrun``; see :mod:`flowvar.distributed`). When a ``torch.distributed`` process
group with W > 1 ranks is initialised, the same call trains data-parallel with the same config:

* every rank builds the same model; rank 0's parameters and buffers are broadcast at the start;
* ``batch_size`` is the *global* batch B (B >= W). Every rank draws the full global batch from the same seeded
  generator (so the generator's state, and the checkpoint, do not depend on W) and keeps rows
  [⌊B·r/W⌋, ⌊B·(r+1)/W⌋) — the union of the shards is exactly the single-process batch. Drawing is replicated;
  the model's forward and backward passes, the expensive part, are split;
* rank r back-propagates (n_r / B) · mean_{its rows} ℓ_i = (1/B) Σ_{its rows} ℓ_i and the gradients and this
  value are summed over ranks in one all-reduce, so every rank holds ∇ (1/B) Σ_{i=1..B} ℓ_i and the logged loss
  is the global mean: the single-process run up to the order of floating-point additions (the 2-process gloo
  run reproduces the 1-process loss curve to ~1e-15 relative in float64; tests/test_ddp.py allows 1e-9).
  Clipping, warmup, Adam and the EMA then act on identical gradients, so the replicas stay identical;
* callbacks run after the all-reduce: ``p.grad`` is the global-batch gradient and ``path`` is the rank's shard;
* only rank 0 writes checkpoints (after gathering every rank's global RNG state, which only models with their
  own randomness — dropout — use; such models draw different masks per rank, seeded ``seed + rank``). Every rank
  resumes from ``checkpoint_dir`` on start, so on several machines that folder must be on a shared filesystem
  (every rank must find the same step, or a :class:`ConfigError` says so). A checkpoint resumes under any W,
  bit-identically (on CPU) under the same W;
* the non-finite-loss check uses the all-reduced loss, so every rank stops together. An exception raised on one
  rank only (e.g. by a callback) ends the job under torchrun within seconds (its agent stops the other ranks); a
  launcher of one's own (``mp.spawn``) leaves the others waiting in the next collective until the process group's
  timeout (``init_from_env(timeout_s=1800)``).
* Normalisation layers that mix rows of a batch (BatchNorm) see only their rank's shard; flowvar's models
  (GroupNorm, MLPs) do not mix rows.

**The experiments' recipe.** :func:`train_cfm` is :func:`train` on CFM(σ) (constant noise σ, target x1 − x0) with
the experiments' conventions (no loss logging); :func:`train_mlp_field` builds a seeded
:class:`~flowvar.models.MLPField` and trains it that way.

Why this module is long: the loop, its checkpoint format (checksum, finiteness, atomic write) and resume are one
contract — bit-identical resume depends on all three agreeing — and the experiments' recipes are thin wrappers of
it.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import math
import os
import re
import signal
import sys
import tempfile
import threading
import time
import warnings
import weakref
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from flowvar import distributed
from flowvar.couplings import Coupling, FixedPairs
from flowvar.distributions import Empirical
from flowvar.errors import ConfigError, DataError, FlowvarError, TrainingError, WriteError
from flowvar.files import atomic_write_bytes, check_writable_folder
from flowvar.interpolants import Interpolant, PathSample
from flowvar.loss import CFMLoss, check_loss_and_coupling
from flowvar.models import MLPField
from flowvar.models.base import first_call
from flowvar.seeding import forked_global_rng, seeded_global_rng

log = logging.getLogger(__name__)

CHECKPOINT_NAME = "checkpoint.pt"
CHECKPOINT_FORMAT = 1
#: Config fields that may change when a run resumes from a checkpoint; every other field must match.
RESUMABLE_FIELDS = frozenset({"steps", "checkpoint_every", "log_every", "progress"})


class Callback(Protocol):
    """A per-step hook; see the module docstring for when it runs and what it may touch."""

    def on_step(self, step: int, model: nn.Module, path: PathSample, loss_value: float) -> dict[str, Any] | None:
        """Called after ``backward`` and before the optimizer step; a returned dict goes to the history."""


def _int_at_least(name: str, value: object, lo: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float) or int(value) != value or value < lo:
        raise ConfigError(f"{name} must be an integer >= {lo}, got {value!r}")
    return int(value)


def _positive_float(name: str, value: object, allow_zero: bool = False) -> float:
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ConfigError(f"{name} must be a finite number {bound}, got {value!r}")
    return float(value)


@dataclass
class TrainConfig:
    """Hyperparameters of :func:`train` (validated on construction; every error is a :class:`ConfigError`).

    * ``steps``: total optimizer updates of the run (including any done before a resume).
    * ``batch_size``: pairs per step. ``lr``: Adam learning rate. ``weight_decay``: Adam's L2 penalty.
    * ``grad_clip``: max global gradient norm (None: no clipping).
    * ``warmup_steps``: linear learning-rate warmup length (0: none).
    * ``seed``: seeds the data generator and the forked global RNG; an integer in [0, 2**63). Experiments pass a
      seed derived from their run's seed by name (:func:`flowvar.seeding.derive_seed`, e.g. the "batches" stream).
    * ``checkpoint_every``: write a checkpoint every this many steps (0: only at the end of the run, and only
      when a ``checkpoint_dir`` is given).
    * ``log_every``: log the mean loss of the last ``log_every`` steps (logger ``flowvar.train`` and the
      progress bar); 0: never.
    * ``ema_decay``: keep an exponential moving average of the weights with this decay in (0, 1); None: off.
    * ``progress``: show a tqdm progress bar.
    """

    steps: int = 1000
    batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 0.0
    grad_clip: float | None = None
    warmup_steps: int = 0
    seed: int = 0
    checkpoint_every: int = 0
    log_every: int = 100
    ema_decay: float | None = None
    progress: bool = False

    def __post_init__(self) -> None:
        self.steps = _int_at_least("steps", self.steps, 1)
        self.batch_size = _int_at_least("batch_size", self.batch_size, 1)
        self.lr = _positive_float("lr", self.lr)
        self.weight_decay = _positive_float("weight_decay", self.weight_decay, allow_zero=True)
        if self.grad_clip is not None:
            self.grad_clip = _positive_float("grad_clip", self.grad_clip)
        self.warmup_steps = _int_at_least("warmup_steps", self.warmup_steps, 0)
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or not 0 <= self.seed < 2**63:
            raise ConfigError(f"seed must be an integer in [0, 2**63), got {self.seed!r}")
        self.checkpoint_every = _int_at_least("checkpoint_every", self.checkpoint_every, 0)
        self.log_every = _int_at_least("log_every", self.log_every, 0)
        if self.ema_decay is not None:
            d = self.ema_decay
            if isinstance(d, bool) or not isinstance(d, int | float) or not 0 < d < 1:
                raise ConfigError(f"ema_decay must be a number in (0, 1) (e.g. 0.999) or None, got {d!r}")
            self.ema_decay = float(d)
        if not isinstance(self.progress, bool):
            raise ConfigError(f"progress must be True or False, got {self.progress!r}")

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        """Build from a plain mapping (e.g. a YAML section); unknown keys are a :class:`ConfigError`."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"unknown training option(s) {unknown}; valid options are {sorted(known)}")
        return cls(**values)


@dataclass
class TrainResult:
    """What :func:`train` returns.

    * ``losses``: the minibatch loss of every step 1..steps_done (including steps before a resume).
    * ``final_loss``: ``losses[-1]`` (NaN when no step was ever run).
    * ``steps_done``: optimizer updates applied to the model in total.
    * ``resumed_from``: the step of the checkpoint this run resumed from, or None.
    * ``runtime_s``: wall-clock seconds of the training: this call's, plus, after a resume, what the calls before it
      spent up to the checkpoint it resumed from (work lost after that checkpoint is not counted). A resumed run's
      runtime is then its compute, not the minutes after its last interruption.
    * ``history``: the dicts returned by callbacks, each with its ``"step"``.
    * ``ema_state``: the EMA ``state_dict`` (load it with ``model.load_state_dict``) or None.
    * ``checkpoint_path``: the checkpoint file, or None when no ``checkpoint_dir`` was given.
    """

    losses: list[float]
    final_loss: float
    steps_done: int
    resumed_from: int | None
    runtime_s: float
    history: list[dict[str, Any]] = field(default_factory=list)
    ema_state: dict[str, Tensor] | None = None
    checkpoint_path: Path | None = None


def _plain(value: Any) -> Any:
    """Callback values made checkpoint-safe: one-element tensors/numpy values → numbers, numpy arrays → tensors."""
    if isinstance(value, Tensor) and value.numel() == 1:
        return value.item()
    if type(value).__module__ == "numpy" and hasattr(value, "item"):  # numpy scalars and arrays
        return value.item() if getattr(value, "size", 0) == 1 else torch.as_tensor(value)
    return value


_FINGERPRINT_SEED = 20251018
"""Seeds the generator (and the forked global RNG) of the batch a coupling draws for its fingerprint: a fixed
stream of its own, so the fingerprint is the same in every run and the training's streams are never touched."""
_FINGERPRINT_DIRECTIONS = 8
_FINGERPRINT_TOLERANCE = 1e-3
"""Fingerprints of the same data computed on two machines agree to rounding; see :func:`_fingerprint`."""
_TIME_DRAWS = 1024


def _fingerprint(tensors: Sequence[Tensor]) -> dict[str, list[float]]:
    """A rounding-tolerant fingerprint of some (N, ...) tensors: for each, K = 8 weighted projections
    s_k = Σ_i v_i ⟨x_i, w_k⟩ with fixed directions w_k ~ N(0, I) (seeded by the item size) and row weights
    v_i = 1 + cos(2.4 i)/2 (so the row order counts), and their noise scales q_k = (Σ_i Σ_j (v_i x_ij w_kj)²)^½.

    Two fingerprints match when every |s_k − s'_k| <= 1e-3 · max(q_k, q'_k) (:func:`_same_fingerprint`). Why not
    a SHA-256 of the bytes: data recomputed on another machine or GPU (a matmul, an ODE solve, a resume in a cluster
    sharing a cache) can differ in their last bits, and an exact hash would then refuse a legitimate resume. Data
    independent per-value rounding of relative size ε moves s_k by about ε·q_k, far below the tolerance; changing
    one of N rows by its own size moves it by about q_k/√N, far above it (N < 10⁶), as does any rescaling, shift,
    other data set or reordering. Computed in float64 on the CPU, 4096 rows at a time.
    """
    out: dict[str, list[float]] = {"s": [], "q": []}
    for x in tensors:
        rows = x.detach().reshape(x.shape[0], -1)
        directions = torch.randn(rows.shape[1], _FINGERPRINT_DIRECTIONS, dtype=torch.float64,
                                 generator=torch.Generator().manual_seed(rows.shape[1]))
        s = torch.zeros(_FINGERPRINT_DIRECTIONS, dtype=torch.float64)
        q2 = torch.zeros_like(s)
        for start in range(0, rows.shape[0], 4096):
            part = torch.nan_to_num(rows[start:start + 4096].to("cpu", torch.float64))
            weights = 1 + 0.5 * torch.cos(2.4 * torch.arange(start, start + part.shape[0], dtype=torch.float64))
            s += weights @ (part @ directions)
            q2 += weights.square() @ (part.square() @ directions.square())
        out["s"] += s.tolist()
        out["q"] += q2.sqrt().tolist()
    return out


def _same_fingerprint(a: Any, b: Any) -> bool:
    if not (isinstance(a, dict) and isinstance(b, dict)):
        return False
    sa, qa, sb, qb = a.get("s"), a.get("q"), b.get("s"), b.get("q")
    if not all(isinstance(v, list) for v in (sa, qa, sb, qb)) or not len(sa) == len(qa) == len(sb) == len(qb):
        return False
    return all(abs(x - y) <= _FINGERPRINT_TOLERANCE * max(p, r) for x, p, y, r in zip(sa, qa, sb, qb, strict=True))


def _weights_fingerprint(state: dict[str, Tensor]) -> dict[str, list[float]]:
    """:func:`_fingerprint` of a model's floating-point ``state_dict`` tensors, each as rows along its first axis
    (a Linear's (out, in) weight: ``out`` rows of ``in`` values): rounding-tolerant like the data's (an init through
    a QR or a GPU kernel can differ in its last bits between machines), while another init seed or scheme moves
    every row. Recorded in a checkpoint's signature as the run's initial weights."""
    tensors = [t.reshape(t.shape[0], -1) if t.dim() else t.reshape(1, 1) for t in state.values()
               if t.is_floating_point() and t.numel()]
    return _fingerprint(tensors)


_TRAINED: weakref.WeakKeyDictionary[nn.Module, tuple[Any, Any]] = weakref.WeakKeyDictionary()
"""model object → (fingerprint of its run's initial weights, fingerprint of the weights :func:`train` left it with),
for the models :func:`train` trained with a checkpoint_dir in this process. A call on the same object, untouched
since (the second fingerprint matches), resumes as that run, even when its weights are those of a step between
checkpoints (a crash inside a notebook cell, re-run); one re-initialised since is compared by its new weights."""


def _describe_model(model: nn.Module) -> str:
    """The model's construction: ``Type(key=value, ...)`` from its ``config`` dict when it has one (MLPField,
    UNetField), else its type and a digest of its ``repr`` (every submodule and layer size of any nn.Module)."""
    config = getattr(model, "config", None)
    if isinstance(config, dict) and config and all(isinstance(k, str) for k in config):
        return f"{type(model).__name__}({', '.join(f'{k}={_plain_repr(v)}' for k, v in config.items())})"
    return f"{type(model).__name__} (architecture {hashlib.sha256(repr(model).encode()).hexdigest()[:12]})"


def _plain_repr(value: Any) -> str:
    """``repr`` without a memory address: a function or class by its qualified name (its default repr holds
    ``at 0x…``, another value in every process, so a rebuilt model would never resume)."""
    if callable(value) and hasattr(value, "__qualname__"):
        return f"{getattr(value, '__module__', '?')}.{value.__qualname__}"
    return repr(value)


def _describe_time_sampler(sampler: Any) -> str:
    """``Type(lo=0.0, hi=1.0)``: the sampler's plain attributes (numbers, strings); the draws in the signature
    cover any others."""
    plain = {k: v for k, v in getattr(sampler, "__dict__", {}).items() if not k.startswith("_")
             and isinstance(v, int | float | str | bool | None)}
    return f"{type(sampler).__name__}({', '.join(f'{k}={v!r}' for k, v in plain.items())})"


_DATA_SET_ROLES = ("source", "target")
"""The attributes of a coupling that may hold a finite data set (an :class:`~flowvar.distributions.Empirical`,
e.g. an :class:`~flowvar.data.ImageDistribution`): IndependentCoupling's and ExactOTCoupling's source and target,
MapCoupling's and ReflowCoupling's source, and those of any user coupling that names them so."""


def _data_sets(coupling: Coupling) -> dict[str, Empirical]:
    """The finite data sets a coupling draws from, by role (``"source"``, ``"target"``)."""
    return {role: dist for role in _DATA_SET_ROLES if isinstance(dist := getattr(coupling, role, None), Empirical)}


def _data_signature(coupling: Coupling, batch_size: int, device: torch.device) -> dict[str, Any]:
    """What the coupling trains on: every pair of a :class:`FixedPairs`; for any other coupling, one batch of
    ``batch_size`` pairs drawn from a generator of its own (:data:`_FINGERPRINT_SEED`) inside a fork of the global
    RNG seeded the same way, plus (``"data_sets"``) every item of each :class:`~flowvar.distributions.Empirical`
    source or target (:func:`_data_sets`). The batch alone samples only B of an Empirical's N items, so an edit to
    the others went unnoticed (a 10 % edit of 1000 items at B = 16: 0.9^16 ≈ 19 % of resumes silent); the continuous
    distributions' parameters are covered by the batch. Cost: one pass over the data, 0.5–0.65 s for 60 000 × 784
    float32 items on one CPU thread, once per :func:`train` call with a checkpoint_dir. The training's generator and
    the caller's global streams are untouched, so trained numbers are what they were without it (a coupling whose
    ``sample`` keeps state of its own, e.g. an iterator over a loader, is advanced by one batch)."""
    if isinstance(coupling, FixedPairs):
        x0, x1 = coupling.x0, coupling.x1
        summary = f"{type(coupling).__name__}: {len(coupling)} pairs of {tuple(x0.shape[1:])} {x0.dtype}"
        return {"summary": summary, "fingerprint": _fingerprint([x0, x1])}
    with forked_global_rng(device):
        _seed_global_rng(_FINGERPRINT_SEED, device)
        pairs = coupling.sample(batch_size, torch.Generator().manual_seed(_FINGERPRINT_SEED))
    x0, x1 = pairs.x0, pairs.x1
    summary = f"{type(coupling).__name__}: pairs of {tuple(x0.shape[1:])} {x0.dtype}"
    data_sets = {role: {"summary": f"{type(d).__name__}: {d.data.shape[0]} items of {tuple(d.data.shape[1:])} "
                                   f"{d.data.dtype}", "fingerprint": _fingerprint([d.data])}
                 for role, d in _data_sets(coupling).items()}
    # "data_sets" is always written (empty for continuous distributions): its absence marks a checkpoint of the
    # earlier one-batch signature (_signature_differences)
    return {"summary": summary, "fingerprint": _fingerprint([x0, x1]), "data_sets": data_sets}


def _signature(model: nn.Module, loss: CFMLoss, coupling: Coupling, batch_size: int,
               device: torch.device) -> dict[str, Any]:
    """What must match for a checkpoint to belong to this run, besides the config: the model's construction
    (:func:`_describe_model`), the interpolant, the time sampler (its parameters and the fingerprint of 1024 draws
    from a fixed generator) and the training data (:func:`_data_signature`). Computed only when the run has a
    checkpoint_dir."""
    with forked_global_rng(device):
        _seed_global_rng(_FINGERPRINT_SEED, device)
        times = loss.time_sampler.sample(_TIME_DRAWS, torch.Generator().manual_seed(_FINGERPRINT_SEED),
                                         dtype=torch.float64)
    return {"model": _describe_model(model), "init_weights": _weights_fingerprint(model.state_dict()),
            "interpolant": repr(loss.interpolant),
            "time_sampler": {"summary": _describe_time_sampler(loss.time_sampler),
                             "fingerprint": _fingerprint([times.reshape(-1, 1)])},
            "data": _data_signature(coupling, batch_size, device)}


_LEGACY_SIGNATURE = ("model", "coupling", "interpolant", "time_sampler")
"""The signature of checkpoints written before the data and the model's construction were recorded: type names."""


def _signature_differences(saved: dict[str, Any], signature: dict[str, Any], model: nn.Module, loss: CFMLoss,
                           coupling: Coupling) -> tuple[list[str], bool, list[str]]:
    """``(differences, legacy, unverified)``: what differs between a checkpoint's signature and this run's, each as
    one phrase; ``legacy`` when the checkpoint has the earliest signature (type names only), compared as such;
    ``unverified``: the roles of this run's data sets (``"source"``, ``"target"``) that the checkpoint's signature,
    written before every item of a data set was fingerprinted, covers only through its one batch (compared the way
    it was written: the batch; :func:`_check_compatible` warns)."""
    if "data" not in saved:
        now = {"model": type(model).__name__, "coupling": type(coupling).__name__,
               "interpolant": repr(loss.interpolant), "time_sampler": type(loss.time_sampler).__name__}
        return [f"{k}: checkpoint {saved.get(k)!r} vs now {now[k]!r}" for k in _LEGACY_SIGNATURE
                if saved.get(k) != now[k]], True, []
    diffs: list[str] = []
    unverified: list[str] = []
    for key, value in signature.items():
        if key == "init_weights":  # compared by _check_init_weights, which knows the legitimate differences
            continue
        old = saved.get(key)
        if not isinstance(value, dict):
            if old != value:
                diffs.append(f"{key}: checkpoint {old!r} vs now {value!r}")
            continue
        old = old if isinstance(old, dict) else {}
        set_diffs: list[str] = []
        if "data_sets" in value:
            if "data_sets" in old:
                set_diffs = [f"{key}: {d}" for d in _data_set_differences(old["data_sets"], value["data_sets"])]
            else:  # a checkpoint of the one-batch signature
                unverified = list(value["data_sets"])
        if old.get("summary") != value["summary"]:
            diffs.append(f"{key}: checkpoint {old.get('summary')!r} vs now {value['summary']!r}")
        elif not set_diffs and not _same_fingerprint(old.get("fingerprint"), value["fingerprint"]):
            # (an edited data set explains a differing batch: it alone is named, without the hint below)
            what = "the training data" if key == "data" else "its draws"
            hint = ("" if key != "data" or value["summary"].startswith("FixedPairs") else
                    " (a coupling drawing from a random source other than the generator it is given, e.g. numpy's, "
                    "draws other pairs at every call and cannot resume: draw from the given torch.Generator)")
            diffs.append(f"{key}: {value['summary']} in both, but {what} differ{hint}")
        diffs += set_diffs
    return diffs, False, unverified


def _data_set_differences(saved: Any, now: dict[str, Any]) -> list[str]:
    """How a checkpoint's data sets (:func:`_data_signature`'s ``"data_sets"``) differ from this run's, by role: one
    that is a data set on one side only, another size/shape/dtype, or the same summary with other values."""
    saved = saved if isinstance(saved, dict) else {}
    diffs = []
    for role in [r for r in _DATA_SET_ROLES if r in saved or r in now]:
        old, new = saved.get(role), now.get(role)
        old_summary = old.get("summary", "?") if isinstance(old, dict) else "no data set"
        new_summary = new["summary"] if new is not None else "no data set"
        if old_summary != new_summary:
            diffs.append(f"the {role}: checkpoint {old_summary!r} vs now {new_summary!r}")
        elif not _same_fingerprint(old.get("fingerprint"), new["fingerprint"]):  # type: ignore[union-attr,index]
            diffs.append(f"the {role} {new_summary} in both, but their values differ")
    return diffs


def _restore_callbacks(callbacks: Sequence[Callback], saved: Any, path: Path) -> None:
    """Give each callback that keeps state (``state_dict``/``load_state_dict``, e.g. its own random generator) the
    state it had at the checkpoint, so that a resumed run calls it exactly as the uninterrupted one did. Stateful
    callbacks are matched in order (stateless ones — a progress printer, a stopper — may come and go); a checkpoint
    without callback states (written before they were saved) restores none; stateful callbacks that differ from the
    saved ones in number or type are a ConfigError naming the file."""
    stateful = [cb for cb in callbacks if hasattr(cb, "load_state_dict")]
    if saved is None:
        return
    kinds = [type(cb).__qualname__ for cb in stateful]
    if not isinstance(saved, list) or [e.get("type") for e in saved] != kinds:
        had = [e.get("type") for e in saved] if isinstance(saved, list) else "?"
        raise ConfigError(f"{path} was saved with the stateful callbacks {had}, this run has {kinds}: resume with the "
                          f"same callbacks, or start a fresh checkpoint_dir")
    for cb, entry in zip(stateful, saved):
        cb.load_state_dict(entry["state"])


CHECKPOINT_MAGIC = b"FLOWVAR-CHECKPOINT sha256\n"
"""The first bytes of a checkpoint file; the SHA-256 digest (32 bytes) of the payload follows, then the payload
(``torch.save`` of the state). Files without it are the earlier unsigned format, still read (without the
checksum)."""
_TORCH_SAVE_STARTS = (b"PK\x03\x04", b"\x80")
"""How a ``torch.save`` file starts: a zip archive (torch's format since 1.6) or a pickle (protocol 2 and later)."""
_REQUIRED_KEYS = ("format", "step", "config", "signature", "model", "optimizer", "generator", "global_rng", "ema",
                  "losses", "history")


def save_checkpoint(state: dict[str, Any], directory: Path) -> Path:
    """Write ``state`` to ``directory/checkpoint.pt`` atomically: temp file in the same folder, fsync, replace.

    The file is :data:`CHECKPOINT_MAGIC`, the SHA-256 of the payload and the payload (``torch.save`` of
    ``state``), so :func:`load_checkpoint` detects any later change to it. A crash at any moment leaves either
    the previous checkpoint or the new one, never a partial file; a write that fails (disk full, read-only
    folder) is a one-line :class:`DataError` naming the folder, and the previous checkpoint (if any) is kept.
    """
    buffer = io.BytesIO()
    torch.save(state, buffer)
    payload = buffer.getvalue()
    final = directory / CHECKPOINT_NAME
    kept = "the previous checkpoint is kept" if final.is_file() else "no checkpoint was written"  # say only what is so
    atomic_write_bytes(final, CHECKPOINT_MAGIC + hashlib.sha256(payload).digest() + payload, what="the checkpoint",
                       remedy=f"{kept}; free space, make the folder writable or choose another checkpoint_dir")
    return final


def remove_stale_temporaries(directory: Path) -> list[Path]:
    """Delete the temporary files that killed checkpoint writes left in ``directory`` (``.checkpoint.pt.*.tmp``
    of :func:`flowvar.files.atomic_write_bytes`; ``.checkpoint-*.tmp`` of earlier versions).

    Only the process that writes checkpoints may call it (rank 0): a live write's temporary file would go too.
    """
    removed = []
    for tmp in [*directory.glob(f".{CHECKPOINT_NAME}.*.tmp"), *directory.glob(".checkpoint-*.tmp")]:
        with contextlib.suppress(OSError):
            tmp.unlink()
            removed.append(tmp)
    if removed:
        log.info("removed %d temporary file(s) left by interrupted checkpoint writes in %s", len(removed), directory)
    return removed


def _checkpoint_error(kind: type[FlowvarError], path: Path, problem: str, remedy: str) -> FlowvarError:
    """``kind("the checkpoint PATH PROBLEM; REMEDY")`` carrying ``checkpoint_path`` and ``problem``, so that a
    caller that owns the folder (:func:`flowvar.cache.run_cached`, whose users have no checkpoint_dir to change)
    can name its own remedy."""
    error = kind(f"the checkpoint {path} {problem}; {remedy}")
    error.checkpoint_path, error.problem = path, problem  # type: ignore[attr-defined]
    return error


def _corrupt(path: Path, what: str) -> FlowvarError:
    return _checkpoint_error(DataError, path, f"is corrupt: {what}", "delete it to start afresh (or restore a copy), "
                             "or point checkpoint_dir at another folder")


def _non_finite(value: Any, where: str) -> str | None:
    """The first place in a nested state holding a non-finite floating-point tensor, or None."""
    if isinstance(value, Tensor):
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            return where
        return None
    if isinstance(value, dict):
        for k, v in value.items():
            found = _non_finite(v, f"{where}.{k}")
            if found:
                return found
    if isinstance(value, list | tuple):
        for i, v in enumerate(value):
            found = _non_finite(v, f"{where}[{i}]")
            if found:
                return found
    return None


def load_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a checkpoint written by :func:`train` (tensors and plain Python values only) and check it.

    Checks, each failure a one-line :class:`DataError` naming the file: the SHA-256 checksum of the payload
    (any flipped bit); for a file without flowvar's header, that it is not empty, not cut off inside the header and
    starts like a ``torch.save`` file (a zip or a pickle); that it unpickles, that it is a flowvar checkpoint with
    every entry :func:`train` writes, and that every floating-point tensor in it (weights, optimizer moments, EMA) is
    finite. Only a file that passes all of them and has no header (the earlier unsigned format) is warned about: it
    cannot be verified further.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as err:
        raise DataError(f"cannot read the checkpoint {path}: {err.strerror or err}") from None
    signed = data.startswith(CHECKPOINT_MAGIC)
    if signed:
        start = len(CHECKPOINT_MAGIC)
        digest, payload = data[start:start + 32], data[start + 32:]
        if len(digest) < 32 or hashlib.sha256(payload).digest() != digest:
            raise _corrupt(path, "its SHA-256 checksum does not match its contents (the file was truncated or "
                                 "changed after it was written)")
    else:  # the earlier unsigned format (nothing in flowvar writes it any more), or no checkpoint at all
        payload = data
        if not data:
            raise _corrupt(path, "it is empty (0 bytes: its write never happened, or a copy or a full disk cut it "
                                 "off)")
        if CHECKPOINT_MAGIC.startswith(data):
            raise _corrupt(path, f"it is {len(data)} bytes long, cut off inside its {len(CHECKPOINT_MAGIC)}-byte "
                                 f"header")
        if not data.startswith(_TORCH_SAVE_STARTS):
            raise _corrupt(path, "it is not a checkpoint (it starts with neither flowvar's header nor torch.save's "
                                 "zip or pickle)")
    try:
        with warnings.catch_warnings():  # torch's remark on a foreign pickle protocol: the error below says it all
            warnings.filterwarnings("ignore", message="Detected pickle protocol", category=UserWarning)
            state = torch.load(io.BytesIO(payload), map_location="cpu", weights_only=True)
    except Exception as err:  # any unpickling failure of a damaged file
        raise _corrupt(path, f"it cannot be unpickled ({_load_failure(err)})") from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise _checkpoint_error(DataError, path, f"is not a flowvar training checkpoint (format {CHECKPOINT_FORMAT})",
                                "delete it or use another checkpoint_dir")
    missing = [k for k in _REQUIRED_KEYS if k not in state]
    if missing:
        raise _corrupt(path, f"it lacks {', '.join(missing)}")
    bad = _non_finite({k: state[k] for k in ("model", "optimizer", "ema")}, "state")
    if bad:
        raise _corrupt(path, f"{bad.removeprefix('state.')} holds non-finite values")
    if isinstance(state["step"], bool) or not isinstance(state["step"], int) or state["step"] < 0:
        raise _corrupt(path, f"its step is {state['step']!r}")
    if not signed:  # said only of a file that is an intact flowvar checkpoint in every checkable way
        warnings.warn(f"the checkpoint {path} has no checksum (written by an earlier flowvar): a damaged file "
                      f"cannot be told from a good one beyond its structure and finiteness; delete it to retrain if "
                      f"in doubt", stacklevel=2)
    return state


def _load_failure(err: Exception) -> str:
    """``Type: reason`` for a failed ``torch.load``, on one line: torch's first line, except for its weights-only
    unpickler, whose first line is a preamble about the weights_only default of PyTorch 2.6 (nothing to do with a
    damaged file): there the reason after ``WeightsUnpickler error:`` (e.g. ``Unsupported operand 21``)."""
    text = str(err)
    reason = (text.splitlines() or [""])[0]
    if reason.startswith("Weights only load failed"):
        found = re.search(r"WeightsUnpickler error:\s*(.*?)\s*(?:\n\s*\n|Check the documentation|$)", text, re.S)
        reason = " ".join(found.group(1).split()) if found else "torch's weights-only unpickler refused it"
    if not reason and isinstance(err, EOFError):
        reason = "its data end early"
    return f"{type(err).__name__}: {reason[:160]}" if reason else type(err).__name__


class ResumeWarning(UserWarning):
    """:func:`train` resumed a run from its checkpoint_dir (or returned a finished one without training).

    Shown by default, so that a notebook re-running a cell sees that its model came from disk. flowvar's own
    callers — the experiments, whose resumes are intended (an interrupted run's trainings, solver_resolution's
    training segments) — do not raise it (:func:`_user_caller`): a cached run says once that it resumes
    (:func:`flowvar.cache.run_cached`), and every resume is logged at INFO by the ``flowvar.train`` logger."""


def _user_caller() -> int | None:
    """For a ``warnings.warn`` in :func:`train` (which calls this): the ``stacklevel`` of the first frame outside
    this module when that frame is user code; None when it is flowvar's own (a module named ``flowvar.*``), whose
    resumes are intended."""
    frame, level = sys._getframe(1), 1
    while frame is not None and frame.f_globals.get("__name__") == __name__:
        frame, level = frame.f_back, level + 1
    if frame is None or str(frame.f_globals.get("__name__", "")).startswith("flowvar."):
        return None
    return level


def _check_compatible(saved: dict[str, Any], config: TrainConfig, signature: dict[str, Any], path: Path,
                      model: nn.Module, loss: CFMLoss, coupling: Coupling) -> None:
    old = saved["config"]
    diffs = [f"{k}: checkpoint {old.get(k)!r} vs now {v!r}" for k, v in asdict(config).items()
             if k not in RESUMABLE_FIELDS and old.get(k) != v]
    signature_diffs, legacy, unverified = _signature_differences(saved["signature"], signature, model, loss,
                                                                 coupling)
    diffs += signature_diffs
    if diffs:
        raise _checkpoint_error(ConfigError, path, f"was written by a different run ({'; '.join(diffs)})",
                                "use the same settings and data to resume, or another checkpoint_dir (or delete "
                                "that folder) to train afresh")
    if saved["step"] > config.steps:
        raise _checkpoint_error(ConfigError, path, f"is at step {saved['step']}, beyond steps={config.steps}",
                                f"raise steps to at least {saved['step']} or use another checkpoint_dir")
    if legacy:
        warnings.warn(f"the checkpoint {path} was written by an earlier flowvar that recorded neither the training "
                      f"data nor the model's construction and time range: it is resumed with only its config and "
                      f"type names checked. If the data, the architecture or the time sampler changed since, "
                      f"delete {path.parent} (or use another checkpoint_dir) to train afresh", stacklevel=3)
    elif unverified:
        what = " and ".join(f"the {role}" for role in unverified) + (" data sets" if len(unverified) > 1 else
                                                                       " data set")
        warnings.warn(f"the checkpoint {path} was written by an earlier flowvar that fingerprinted one batch of the "
                      f"training data, not every item of {what}: it is resumed with that batch checked (it matches). "
                      f"If you edited rows of the data since, delete {path.parent} (or use another checkpoint_dir) "
                      f"to train afresh; the checkpoints this run writes fingerprint every item", stacklevel=3)


def _check_init_weights(saved: dict[str, Any], signature: dict[str, Any], model: nn.Module, path: Path) -> None:
    """Warn (:class:`ResumeWarning`) when the run about to be resumed started from other initial weights than
    ``model`` (another init seed or init scheme): the old run's weights are returned, not a new replicate's. A warning,
    not a refusal: a notebook's unseeded model rebuilt after a kernel restart is the same run, which resumes.

    Accepted: the same initial weights (a model rebuilt with the same seed, in any process); ``model`` untouched since
    this process's last :func:`train` of it with this run (:data:`_TRAINED`: a notebook re-running a cell after a
    crash or an interrupt); ``model`` already holding the checkpoint's weights (a finished run re-called on its
    trained object, the next training segment of solver_resolution, weights loaded by hand); a checkpoint written
    before the initial weights were recorded (resumed as before, noted in the log)."""
    recorded = saved["signature"].get("init_weights")
    now = signature["init_weights"]
    if recorded is None:
        log.info("%s records no initial weights (written by an earlier flowvar): resumed without comparing them", path)
        return
    seen = _TRAINED.get(model)
    if _same_fingerprint(recorded, now) or (seen is not None and _same_fingerprint(seen[1], now)
                                            and _same_fingerprint(recorded, seen[0])):
        return
    if _same_fingerprint(_weights_fingerprint(saved["model"]), now):
        return
    warnings.warn(f"the checkpoint {path} was written by a run whose model started from other initial weights than "
                  f"the model passed now (another init seed or init scheme): that run is resumed and its weights "
                  f"replace the model's; to train this initialisation as a new run (a new replicate), use another "
                  f"checkpoint_dir or delete that folder (a model built without a fixed seed always differs: resuming "
                  f"its run is then what was meant)", ResumeWarning, stacklevel=4)


def _restore(saved: dict[str, Any], model: nn.Module, optimizer: torch.optim.Optimizer,
             generator: torch.Generator, ema: dict[str, Tensor] | None, path: Path) -> None:
    try:
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
    except (RuntimeError, ValueError, KeyError, IndexError, TypeError) as err:
        raise _checkpoint_error(ConfigError, path, f"does not fit this model ({str(err).splitlines()[0]})",
                                "build the same architecture to resume, or use another checkpoint_dir") from None
    if int(saved["step"]) > 0:  # after a step every parameter has the same complete optimizer state, shaped like it
        params = [p for group in optimizer.param_groups for p in group["params"]]
        keys = set().union(*(optimizer.state.get(p, {}).keys() for p in params))
        for i, p in enumerate(params):
            state = optimizer.state.get(p, {})
            if set(state) != keys:
                raise _corrupt(path, f"the optimizer state of parameter {i} lacks {sorted(keys - set(state))}")
            for key, value in state.items():
                if isinstance(value, Tensor) and value.dim() > 0 and value.shape != p.shape:
                    raise _corrupt(path, f"the optimizer's {key} of parameter {i} has shape {tuple(value.shape)}, "
                                         f"the parameter {tuple(p.shape)}")
    try:
        generator.set_state(saved["generator"])
        torch.set_rng_state(saved["global_rng"])
        if ema is not None:
            for name, value in saved["ema"].items():
                ema[name].copy_(value)
    except (RuntimeError, ValueError, KeyError, IndexError, TypeError, AttributeError) as err:
        raise _corrupt(path, f"its random-number or EMA state cannot be restored ({str(err).splitlines()[0]})"
                       ) from None


def _first_call(loss: CFMLoss, model: nn.Module, path: PathSample) -> Tensor:
    """``loss(model, path)`` on the run's first step, where an error raised inside the user's model (not one of
    flowvar's own) is re-raised as a :class:`ConfigError` naming the calling convention
    (:func:`~flowvar.models.base.first_call`, shared with the variance estimators and the ODE sampler): flowvar calls
    ``model(x, t)`` with x: (B, *shape) and t: (B,), and a model written for ``(t, x)`` (torchcfm's order) fails
    with a bare IndexError or shape error deep in its forward."""
    return first_call(lambda: loss(model, path), model, path.xt, path.t)


def _check_dtype(model: nn.Module, path: PathSample) -> None:
    p = next(model.parameters())
    if path.xt.dtype != p.dtype:
        raise ConfigError(f"the coupling produces {path.xt.dtype} data but the model's parameters are {p.dtype}; "
                          f"build the data in {p.dtype} (e.g. GaussianProblem(..., dtype={p.dtype}) or "
                          f"RotatedOTCoupling(..., dtype={p.dtype}); train_mlp_field builds its model in "
                          f"torch.float32) or convert the model with model.to({path.xt.dtype})")


def _shard(path: PathSample, start: int, stop: int) -> PathSample:
    """Rows [start, stop) of every field of a path sample (all fields are (B, ...))."""
    return replace(path, **{f.name: getattr(path, f.name)[start:stop] for f in fields(path)})


def _reduce_step(params: Sequence[nn.Parameter], scaled_loss: Tensor) -> float:
    """Sum gradients and the scaled loss over ranks in one all-reduce; returns the global mean loss.

    Parameters without a gradient (unused in this step) contribute zeros, so every rank reduces the same buffer.
    """
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    value = scaled_loss.detach().reshape(1).to(params[0].grad.dtype)  # type: ignore[union-attr]
    tensors = [p.grad for p in params] + [value]
    distributed.all_reduce_sum_(tensors)  # type: ignore[arg-type]
    return float(value)


def make_adam(params: Sequence[nn.Parameter], lr: float, weight_decay: float = 0.0) -> torch.optim.Adam:
    """``torch.optim.Adam(params, lr, weight_decay=…)``, fused into one kernel per step where torch has one.

    Adam: m ← β₁m + (1 − β₁)g, v ← β₂v + (1 − β₂)g², θ ← θ − lr · m̂ / (√v̂ + ε) with the bias-corrected m̂, v̂
    (and g ← g + weight_decay · θ first). torch's default on CPU is a Python loop of about ten small kernels per
    parameter tensor; ``fused=True`` does the same update in one pass over all tensors (equal to rounding:
    ~1e-7 relative after 300 float32 steps, ~1e-16 in float64), about 3× faster on the MLP (0.09 vs 0.26 ms
    per step at 133k parameters). Parameters on devices or with dtypes the fused kernel does not take fall back to
    the default implementation.
    """
    params = list(params)
    fusable = bool(params) and all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in params)
    if fusable:
        try:
            return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay, fused=True)
        except (RuntimeError, ValueError):  # a torch build without the fused kernel for this device/dtype
            pass
    return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)


def _seed_global_rng(seed: int, device: torch.device) -> None:
    """Seed the RNGs :func:`~flowvar.seeding.forked_global_rng` forked. Not ``torch.manual_seed``: that also seeds every
    accelerator backend torch knows (CUDA, XPU, MTIA) lazily, formatting a Python stack trace for each (≈ 0.4 ms
    a call, paid by every short run), and would change the state of devices outside the fork for good."""
    torch.default_generator.manual_seed(seed)
    if device.type == "cuda":
        with torch.cuda.device(device):
            torch.cuda.manual_seed(seed)


def _probe_checkpoint_dir(directory: Path) -> None:
    """Make sure checkpoints can be written to ``directory`` before training: create it, then create and remove a
    temporary file in it (named like a killed write's, ``.checkpoint.pt.XXXX.tmp``, which the next start removes).

    Raises:
        WriteError: ``directory`` (or a folder above it) is a file, or the folder cannot be created or written —
            one line naming the folder and the fix. Found only at the first checkpoint write, this used to cost
            the whole training: its EMA weights and losses live only in the TrainResult a failed write never returns.
    """
    found = check_writable_folder(directory)
    reason = str(found) if found is not None else None
    if reason is None:
        try:
            directory.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{CHECKPOINT_NAME}.", suffix=".tmp")
            os.close(fd)
            os.unlink(tmp)
        except OSError as err:
            reason = f"{directory} cannot be created or written ({err.strerror or err})"
    if reason is not None:
        raise WriteError(directory, f"cannot write checkpoints to checkpoint_dir={str(directory)!r}: {reason}",
                         "nothing was trained; point checkpoint_dir at a folder this process can create and write "
                         "(every part of its path a folder, not a file)")


class _StepEndInterrupts:
    """Defers SIGINT and SIGTERM to the end of a training step, so that an interrupted run keeps that step.

    On entering (:meth:`__init__` with ``enabled``; main thread only, where Python runs signal handlers) each of
    the two signals whose current handler is Python code — Ctrl-C's ``default_int_handler``, the CLI's
    :func:`flowvar.runner.sigterm_as_interrupt`, a user's own — gets a handler that only records it. The trainer
    checks :attr:`pending` after each step, writes that step's checkpoint and calls :meth:`deliver`, which runs
    the recorded signal's own handler (raising its KeyboardInterrupt). Ignored and default-action signals are left
    as they are: the runner's pool workers (SIGINT ignored, SIGTERM kills) end exactly as before. A second signal
    while one is pending runs its handler at once, so a stuck step can still be interrupted. :meth:`close`
    restores the handlers and delivers a signal still pending (one that arrived after the last step): an interrupt
    is never swallowed."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self, enabled: bool) -> None:
        self.pending: tuple[int, Any] | None = None  # (signum, frame) of the deferred signal
        self._previous: dict[int, Any] = {}
        if not enabled or threading.current_thread() is not threading.main_thread():
            return
        for signum in self.SIGNALS:
            handler = signal.getsignal(signum)
            if callable(handler):  # SIG_IGN, SIG_DFL (ints) and None (set outside Python) are left alone
                self._previous[signum] = handler
                signal.signal(signum, self._defer)

    def _defer(self, signum: int, frame: Any) -> None:
        if self.pending is not None:  # the second interrupt: act now
            self.deliver()
        self.pending = (signum, frame)

    def deliver(self, note: str | None = None) -> None:
        """Run the pending signal's own handler (Ctrl-C's and sigterm_as_interrupt's raise KeyboardInterrupt; its
        ``note`` is added to that exception). A handler that returns lets training go on, still deferring."""
        if self.pending is None:
            return
        (signum, frame), self.pending = self.pending, None
        try:
            self._previous[signum](signum, frame)
        except KeyboardInterrupt as err:
            if note:
                err.add_note(note)
            raise

    def close(self) -> None:
        """Restore the handlers found on entering, then deliver a signal still pending."""
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self.deliver()


def _kept(last_saved: int | None) -> str:
    """What a failed run leaves on disk, in the words of every failure message."""
    return f"the checkpoint of step {last_saved} is kept" if last_saved else "no checkpoint was written"


def _lr_advice(config: TrainConfig) -> str:
    """The advice for a loss or weights that diverged on finite data: a smaller step (clipping, when off)."""
    clip = "set grad_clip (e.g. 1.0)" if config.grad_clip is None else f"grad_clip (now {config.grad_clip})"
    return f"Lower the learning rate (lr={config.lr}) or {clip}"


def _data_fault(path: PathSample, step: int, coupling: Coupling) -> str | None:
    """On the failure path only (no cost per step): the advice when the step's batch itself holds NaN/Inf values —
    a data fault no learning rate can fix (FixedPairs and Empirical check their data once; a user's coupling over a
    loader, a MapCoupling of a diverging map do not). None when the batch is finite."""
    bad = [name for name in ("x0", "x1") if not bool(torch.isfinite(getattr(path, name)).all())]
    if bad:
        return (f"The batch drawn at step {step} holds non-finite {' and '.join(bad)} values from the coupling "
                f"({type(coupling).__name__}): clean the data it draws from (or fix the coupling)")
    bad = [name for name in ("t", "xt") if not bool(torch.isfinite(getattr(path, name)).all())]
    if bad:
        return (f"The batch drawn at step {step} holds non-finite {' and '.join(bad)} values while its x0 and x1 "
                f"are finite: check the time sampler and the interpolant's noise schedule")
    return None


def _gradient_failure(grads: Sequence[Tensor], value: float, step: int, path: PathSample, coupling: Coupling,
                      config: TrainConfig, last_saved: int | None) -> str:
    """The message of a non-finite gradient norm under a finite loss, raised before that step's update. Two causes:
    a gradient value that is NaN/Inf itself (after clip_grad_norm_'s rescaling by 0 too: inf · 0 = NaN), or finite
    gradients whose norm overflows (beyond ~1e19 in float32: a diverging run)."""
    norm = float(torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads))))  # get_total_norm: torch >= 2.6
    done = (f"at step {step} while the loss was finite ({value:.6g}); that step's update was not applied (the model "
            f"holds the weights of step {step - 1}); {_kept(last_saved)}. ")
    if all(bool(torch.isfinite(g).all()) for g in grads):
        return f"the gradient norm overflowed ({norm}) {done}The gradients are finite but huge: {_lr_advice(config)}"
    advice = _data_fault(path, step, coupling) or (
        "A finite loss with a non-finite gradient comes from the model's backward pass: an operation whose derivative "
        "is infinite where it was evaluated (sqrt, log, pow or a division at 0) or an overflow in half precision; "
        "clipping cannot repair it (grad_clip rescales finite gradients only) and a lower lr does not change it: "
        "fix the model's forward (e.g. sqrt(x + eps)) or train in float32")
    return f"the gradient became non-finite ({norm}) {done}{advice}"


def train(model: nn.Module, loss: CFMLoss, coupling: Coupling, config: TrainConfig,
          checkpoint_dir: str | os.PathLike[str] | None = None, callbacks: Sequence[Callback] = ()) -> TrainResult:
    """Train ``model`` with Adam on ``loss`` over batches from ``coupling`` (see the module docstring).

    The model is updated in place and left in training mode. Resumes from ``checkpoint_dir/checkpoint.pt``
    when that file exists and belongs to this run (same config but for ``steps``/``checkpoint_every``/``log_every``/
    ``progress``, same model construction, interpolant, time sampler and data), warning with a
    :class:`ResumeWarning` when called from user code (``warnings.simplefilter("ignore", ResumeWarning)`` silences
    it; flowvar's experiments, which resume on purpose, do not raise it).

    Raises:
        ConfigError: an invalid config, a model without trainable parameters or on the meta device, a data/model
            dtype mismatch,
            or a checkpoint from another run (other settings, architecture, time sampler or data: each named).
        TrainingError: a non-finite loss or gradient (the step is named, before its update; the last good
            checkpoint is kept), or non-finite parameters at checkpoint time (the checkpoint is not overwritten) or
            at the end of a run without checkpoint_dir (no model with NaN/Inf weights is returned).
        WriteError: ``checkpoint_dir`` is a file, lies under one or cannot be written — raised before step 1 — or a
            checkpoint write failed (disk full).
        KeyboardInterrupt: an interrupt (SIGINT, or SIGTERM under ``sigterm_as_interrupt``), with a checkpoint_dir
            raised at the end of the step it arrived in, after that step's checkpoint (module docstring).
    """
    check_loss_and_coupling(loss, coupling, "train(model, loss, coupling, config)")
    if not isinstance(config, TrainConfig):
        raise ConfigError(f"config must be a TrainConfig, got {type(config).__name__}; build one with "
                          f"TrainConfig(...) or TrainConfig.from_dict(...)")
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ConfigError(f"{type(model).__name__} has no trainable parameters; closed-form fields cannot be "
                          f"trained")
    if params[0].device.type == "meta":  # shapes without values: the first loss.item() would fail inside torch
        raise ConfigError(f"{type(model).__name__}'s parameters are on the meta device (shapes without values); load "
                          f"or materialise the weights first (model.to_empty(device=...) and initialise them, or "
                          f"load_state_dict(..., assign=True))")
    for cb in callbacks:
        if not callable(getattr(cb, "on_step", None)):
            raise ConfigError(f"callback {cb!r} has no on_step(step, model, path, loss_value) method")
    start_time = time.perf_counter()
    world = distributed.world()
    if world.size > 1:
        if config.batch_size < world.size:
            raise ConfigError(f"batch_size={config.batch_size} is the global batch and must be at least the number "
                              f"of processes ({world.size}); raise batch_size or launch fewer processes")
        distributed.broadcast_module_(model)
        shard_lo, shard_hi = distributed.shard_bounds(config.batch_size, world.rank, world.size)
    device = params[0].device
    optimizer = make_adam(params, lr=config.lr, weight_decay=config.weight_decay)
    generator = torch.Generator().manual_seed(config.seed)
    ema: dict[str, Tensor] | None = None
    if config.ema_decay is not None:
        ema = {k: v.detach().clone() for k, v in model.state_dict().items()}
    directory = Path(checkpoint_dir) if checkpoint_dir is not None else None
    signature = _signature(model, loss, coupling, config.batch_size, device) if directory is not None else {}
    ckpt_path = directory / CHECKPOINT_NAME if directory is not None else None

    losses: list[float] = []
    history: list[dict[str, Any]] = []
    step = 0
    resumed_from: int | None = None
    last_saved: int | None = None
    before_s = 0.0  # the training time of the calls before a resume, up to their checkpoint
    model.train()

    def check_parameters() -> None:
        """TrainingError when a parameter is non-finite: a model with NaN/Inf weights is never checkpointed or
        returned (Adam can overflow them with finite gradients, e.g. at a huge lr)."""
        bad = [n for n, p in model.named_parameters() if not bool(torch.isfinite(p).all())]
        if bad:
            kept = "no checkpoint_dir was given" if directory is None else \
                f"the checkpoint was not overwritten: {_kept(last_saved)}"
            raise TrainingError(f"parameters {bad[:3]} became non-finite by step {step}; {kept}. "
                                f"{_lr_advice(config)}")

    def checkpoint() -> None:
        nonlocal last_saved
        assert directory is not None
        check_parameters()
        rng_states = distributed.gather_objects(torch.get_rng_state())
        if world.is_main:
            state = {"format": CHECKPOINT_FORMAT, "step": step, "config": asdict(config), "signature": signature,
                     "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                     "generator": generator.get_state(), "global_rng": torch.get_rng_state(),
                     "ema": ema, "losses": list(losses), "history": list(history),
                     "elapsed_s": before_s + time.perf_counter() - start_time,
                     "callbacks": [{"type": type(cb).__qualname__, "state": cb.state_dict()} for cb in callbacks
                                   if hasattr(cb, "state_dict")]}
            if world.size > 1:
                state["global_rng_ranks"] = rng_states
            save_checkpoint(state, directory)
        last_saved = step

    with forked_global_rng(device):
        _seed_global_rng(config.seed + world.rank, device)
        if directory is not None and world.is_main and directory.is_dir():
            remove_stale_temporaries(directory)
        if ckpt_path is not None and ckpt_path.exists():
            saved = load_checkpoint(ckpt_path)
            _check_compatible(saved, config, signature, ckpt_path, model, loss, coupling)
            _check_init_weights(saved, signature, model, ckpt_path)
            # the run's own initial weights go on into its later checkpoints (none when its first did not record them)
            if saved["signature"].get("init_weights") is None:
                signature.pop("init_weights")
            else:
                signature["init_weights"] = saved["signature"]["init_weights"]
            _restore(saved, model, optimizer, generator, ema, ckpt_path)
            ranks_rng = saved.get("global_rng_ranks")
            if world.size > 1 and isinstance(ranks_rng, list) and len(ranks_rng) == world.size:
                torch.set_rng_state(ranks_rng[world.rank])
            elif world.rank > 0:
                _seed_global_rng(config.seed + world.rank + int(saved["step"]), device)
            step = resumed_from = last_saved = int(saved["step"])
            before_s = float(saved.get("elapsed_s", 0.0))  # checkpoints written before it was recorded: 0
            losses, history = list(saved["losses"]), list(saved["history"])
            _restore_callbacks(callbacks, saved.get("callbacks"), ckpt_path)
            user_level = _user_caller()
            if world.is_main:
                log.info("resumed from %s at step %d", ckpt_path, step)
            if world.is_main and user_level is not None:
                done = "the finished run: returned without training" if step >= config.steps else \
                    f"resuming at step {step} of {config.steps}"
                warnings.warn(f"{ckpt_path} holds this run up to step {step}: {done}. Pass another checkpoint_dir "
                              f"(or delete {directory}) to train afresh", ResumeWarning, stacklevel=user_level)
        if directory is not None and world.is_main and step < config.steps:
            # before step 1, not at the first checkpoint write; a finished run read from a read-only folder writes none
            _probe_checkpoint_dir(directory)
        if world.size > 1:
            lowest, highest = distributed.agree(step)
            if lowest != highest:
                raise ConfigError(f"the ranks found checkpoints at different steps ({lowest} to {highest}) in "
                                  f"checkpoint_dir={directory}; on several machines put checkpoint_dir on a shared "
                                  f"filesystem (or copy the checkpoint to every node) before resuming")

        bar = tqdm(total=config.steps, initial=step, disable=not (config.progress and world.is_main), desc="train",
                   leave=False)
        interrupts = _StepEndInterrupts(enabled=directory is not None and world.size == 1)
        try:
            while step < config.steps:
                step += 1
                path = loss.draw(coupling, config.batch_size, generator).to(device)
                first = step == (resumed_from or 0) + 1  # this call's first step: the checks of the first call
                if first:
                    _check_dtype(model, path)
                optimizer.zero_grad(set_to_none=True)
                if world.size == 1:
                    value_t = _first_call(loss, model, path) if first else loss(model, path)
                    value = float(value_t.detach())
                else:
                    path = _shard(path, shard_lo, shard_hi)
                    value_t = _first_call(loss, model, path) if first else loss(model, path)
                    scaled = value_t * ((shard_hi - shard_lo) / config.batch_size)
                    if math.isfinite(float(scaled.detach())):
                        scaled.backward()
                    value = _reduce_step(params, scaled)
                if not math.isfinite(value):
                    raise TrainingError(f"the loss became non-finite ({value}) at step {step}; {_kept(last_saved)}. "
                                        f"{_data_fault(path, step, coupling) or _lr_advice(config)}")
                if world.size == 1:
                    value_t.backward()
                for cb in callbacks:
                    out = cb.on_step(step, model, path, value)
                    if out:
                        history.append({"step": step, **{k: _plain(v) for k, v in out.items()}})
                # the gradient checked before the update: a finite loss can have a NaN/Inf gradient (sqrt at 0,
                # half-precision overflow), which Adam would write into every weight. With grad_clip the global norm
                # clip_grad_norm_ returns; without, the per-tensor norms of one foreach kernel (what torch's
                # get_total_norm, from 2.6 only, computes before combining them): ~0.1 ms a step on the 133k-parameter
                # MLP at B = 256 on one CPU thread, <1 % of its ~10 ms step (get_total_norm itself: ~0.2 ms)
                grads = [p.grad for p in params if p.grad is not None]
                if config.grad_clip is not None:
                    finite = bool(torch.isfinite(torch.nn.utils.clip_grad_norm_(params, config.grad_clip)))
                else:
                    finite = not grads or bool(torch.isfinite(torch.stack(torch._foreach_norm(grads))).all())
                if not finite:
                    raise TrainingError(_gradient_failure(grads, value, step, path, coupling, config, last_saved))
                if config.warmup_steps:
                    for group in optimizer.param_groups:
                        group["lr"] = config.lr * min(1.0, step / config.warmup_steps)
                optimizer.step()
                if ema is not None:
                    with torch.no_grad():
                        for k, v in model.state_dict().items():
                            if torch.is_floating_point(v):
                                ema[k].lerp_(v, 1 - config.ema_decay)  # type: ignore[operator]
                            else:
                                ema[k].copy_(v)
                losses.append(value)
                bar.update(1)
                if config.log_every and step % config.log_every == 0:
                    recent = sum(losses[-config.log_every:]) / len(losses[-config.log_every:])
                    bar.set_postfix(loss=f"{recent:.4g}")
                    if world.is_main:
                        log.info("step %d/%d: mean loss of the last %d steps %.6g", step, config.steps,
                                 config.log_every, recent)
                if directory is not None and config.checkpoint_every and step % config.checkpoint_every == 0:
                    checkpoint()
                if interrupts.pending:  # an interrupt arrived during this step: keep it, then let it act
                    note = f"flowvar.train: interrupted during step {step} of {config.steps}; "
                    try:
                        if last_saved != step:
                            checkpoint()
                        note += f"{ckpt_path} holds step {step}: the same call resumes from it"
                        log.info("interrupted at step %d of %d: %s holds it, the same call resumes from it", step,
                                 config.steps, ckpt_path)
                    except FlowvarError as err:  # the interrupt still stops the run; say what was kept
                        note += f"its checkpoint could not be written ({err})"
                        log.warning("interrupted at step %d, but its checkpoint could not be written: %s", step, err)
                    interrupts.deliver(note)
            if directory is not None and last_saved != step:
                checkpoint()
            elif directory is None and step > (resumed_from or 0):
                check_parameters()  # once, before returning: never a TrainResult whose model holds NaN/Inf weights
            distributed.barrier()
        finally:
            if directory is not None:  # this object's run, and the weights it leaves the object with
                _TRAINED[model] = (signature.get("init_weights"), _weights_fingerprint(model.state_dict()))
            bar.close()
            interrupts.close()  # the handlers back; a signal that arrived after the last step acts now
    if world.is_main and step > (resumed_from or 0):
        # one line per finished training: `flowvar run` prints it when stderr is no terminal, reproduce.log keeps it
        tail = losses[-max(1, len(losses) // 10):]
        log.info("trained %d steps%s in %.1f s; mean loss of the last %d steps %.4g", step,
                 f" (resumed at step {resumed_from})" if resumed_from else "", time.perf_counter() - start_time,
                 len(tail), sum(tail) / len(tail))

    return TrainResult(losses=losses, final_loss=losses[-1] if losses else math.nan, steps_done=step,
                       resumed_from=resumed_from, runtime_s=before_s + time.perf_counter() - start_time,
                       history=history,
                       ema_state={k: v.clone() for k, v in ema.items()} if ema is not None else None,
                       checkpoint_path=ckpt_path if directory is not None else None)


# --------------------------------------------------------------------------------------------- the experiments' recipe


def train_cfm(model: nn.Module, coupling: Coupling, sigma: float, *, steps: int, batch_size: int, lr: float,
              seed: int, progress: bool = False, callbacks: Sequence[Callback] = (),
              checkpoint_dir: str | os.PathLike[str] | None = None, **options: Any) -> TrainResult:
    """Train ``model`` in place on CFM(σ) over batches from ``coupling``: the training call of every experiment.

    CFM(σ) is the loss (1/B) Σ_i ‖(x1_i − x0_i) − v_θ(x_t,i, t_i)‖² on x_t = (1 − t) x0 + t x1 + σ z with constant
    noise σ and t ~ U(0, 1) (:class:`~flowvar.interpolants.Interpolant`, :class:`~flowvar.loss.CFMLoss`); σ = 0 is
    the deterministic loss of Prop 2. The run is :func:`train` with ``TrainConfig(steps, batch_size, lr, seed=seed,
    progress=progress, log_every=0)``: Adam, no loss logging, every batch drawn from a generator seeded with
    ``seed``. ``options``: any other :class:`TrainConfig` field (``warmup_steps``, ``grad_clip``, ``ema_decay``,
    ``checkpoint_every``, ``weight_decay``, ``log_every``); an unknown one is a ConfigError. ``callbacks`` and
    ``checkpoint_dir`` (resumed when it holds a checkpoint) as in :func:`train`.
    """
    config = TrainConfig.from_dict({"steps": steps, "batch_size": batch_size, "lr": lr, "seed": seed,
                                    "progress": progress, "log_every": 0, **options})
    return train(model, CFMLoss(Interpolant(sigma)), coupling, config, checkpoint_dir=checkpoint_dir,
                 callbacks=callbacks)


def train_mlp_field(coupling: Coupling, sigma: float, dim: int, *, width: int, depth: int, activation: str,
                    init_seed: int, steps: int, batch_size: int, lr: float, seed: int, progress: bool = False,
                    callbacks: Sequence[Callback] = (), checkpoint_dir: str | os.PathLike[str] | None = None,
                    checkpoint_every: int = 0) -> tuple[MLPField, TrainResult]:
    """A fresh :class:`~flowvar.models.MLPField` trained on CFM(σ): returns (the trained model, the run's result).

    The model, MLPField(``dim``, ``width``, ``depth``, ``activation``) on (B, dim) float32 points, is built with
    torch's global generator seeded by ``init_seed`` (:func:`flowvar.seeding.seeded_global_rng`: seeded for the
    build only, the caller's global state restored), so equal ``init_seed`` gives equal initial weights — the
    experiments compare σ = 0 with σ > 0 from the same initialisation and the same ``seed`` to pair the comparison:
    the two runs share the initial weights and the first batch's pairs and times, but later batches differ, because
    σ > 0 draws its noise z from the same generator as the data. Then :func:`train_cfm` with ``steps``,
    ``batch_size``, ``lr``, ``seed``, ``progress`` and ``callbacks``. Experiments pass seeds derived from their run's
    seed (``ctx.derive_seed("init", ...)``).
    With ``checkpoint_dir`` the run writes checkpoints there (every ``checkpoint_every`` steps and at the end) and
    resumes from one it finds, ending bit-identical to an uninterrupted run; a finished run of the same settings and
    data is loaded, not retrained, and one of other settings or data is a ConfigError (experiments pass
    ``ctx.checkpoint_dir(...)``, so an interrupted experiment keeps its finished trainings).
    """
    with seeded_global_rng(init_seed):
        model = MLPField(dim, width, depth, activation)
    result = train_cfm(model, coupling, sigma, steps=steps, batch_size=batch_size, lr=lr, seed=seed,
                       progress=progress, callbacks=callbacks, checkpoint_dir=checkpoint_dir,
                       checkpoint_every=checkpoint_every)
    return model, result


def late_over_previous_quarter(losses: Sequence[float], *, min_per_quarter: int = 1) -> float:
    """Is a loss record still falling? k = ⌊len / 4⌋; the mean of the last k values over the mean of the k before:

        r = mean(losses[−k:]) / mean(losses[−2k:−k])   (< 1: still falling; ≈ 1: levelled off; > 1: rising)

    ``losses``: one value per step (:attr:`TrainResult.losses`, single batches: ask ``min_per_quarter`` ≥ 2 to
    average their noise) or per logged evaluation (history). NaN when k < ``min_per_quarter`` (too short to tell) or
    the earlier mean is not positive. The one definition behind prop2's "levelled off" and the σ advisor's "still
    falling"."""
    k = len(losses) // 4
    if k < max(1, min_per_quarter):
        return math.nan
    before = math.fsum(losses[-2 * k:-k]) / k
    late = math.fsum(losses[-k:]) / k
    return late / before if before > 0 else math.nan


__all__ = [
    "CHECKPOINT_FORMAT",
    "CHECKPOINT_MAGIC",
    "CHECKPOINT_NAME",
    "RESUMABLE_FIELDS",
    "Callback",
    "ResumeWarning",
    "TrainConfig",
    "TrainResult",
    "late_over_previous_quarter",
    "load_checkpoint",
    "make_adam",
    "remove_stale_temporaries",
    "save_checkpoint",
    "train",
    "train_cfm",
    "train_mlp_field",
]
